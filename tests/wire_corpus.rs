//! The wire corpus: complete SSE transcripts as the engines put them on the wire
//! (`tests/wire/<name>.sse`, raw bytes), each with the verdict and cause it must get
//! (`tests/wire/cases.txt`, which also says what each was written from). The other
//! framings the same way: newline-delimited JSON in `<name>.ndjson` (raw bytes), and
//! AWS event streams in `<name>.eventstream`, a readable description of the frames
//! that [`eventstream_bytes`] encodes (binary files would hide what they hold).
//!
//! Every transcript is fed through a real `TrackedStream` whole, byte by byte, one
//! event per chunk, and in every 2-way split, and then either ends (the upstream's
//! EOF) or is dropped before the end is seen (the client left); each run must record
//! exactly the expected outcome, with every byte passed through, and, where
//! `cases.txt` gives it, the
//! token usage the transcript reported (whatever the verdict: a stream cut short or
//! left keeps the usage reported before its end).

use std::cell::RefCell;
use std::path::Path;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use futures_core::Stream;
use sluice::eventstream::EventStreamRules;
use sluice::ndjson::NdjsonRules;
use sluice::sse::SseRules;
use sluice::{Cause, Outcome, TrackedStream, Usage, Verdict};

/// One line of `cases.txt`.
#[derive(Debug)]
struct Case {
    name: String,
    rules: Rules,
    eof: (Verdict, Cause),
    leave: (Verdict, Cause),
    /// The usage the outcome reports (column 7, `usage=IN/OUT`, `-` for none).
    usage: Option<Usage>,
}

/// A `usage=IN/OUT` column: each count a number, or `-` for not reported.
fn usage(word: &str) -> Usage {
    let counts = word
        .strip_prefix("usage=")
        .unwrap_or_else(|| panic!("{word:?}"));
    let (input, output) = counts.split_once('/').unwrap_or_else(|| panic!("{word:?}"));
    let count = |n: &str| (n != "-").then(|| n.parse().unwrap_or_else(|e| panic!("{n:?}: {e}")));
    Usage::new(count(input), count(output))
}

fn verdict(word: &str) -> Verdict {
    match word {
        "success" => Verdict::Success,
        "failure" => Verdict::Failure,
        "abandoned" => Verdict::Abandoned,
        other => panic!("unknown verdict {other:?}"),
    }
}

fn cause(word: &str) -> Cause {
    let causes = [
        Cause::Done,
        Cause::End,
        Cause::ErrorEvent,
        Cause::ErrorItem,
        Cause::Truncated,
        Cause::ClientLeft,
    ];
    causes
        .into_iter()
        .find(|c| c.as_str() == word)
        .unwrap_or_else(|| panic!("unknown cause {word:?}"))
}

/// The rules of a transcript, and so its framing.
#[derive(Debug, Clone)]
enum Rules {
    Sse(SseRules),
    Ndjson(NdjsonRules),
    EventStream(EventStreamRules),
}

fn rules(word: &str) -> Rules {
    match word {
        "openai_chat" => Rules::Sse(SseRules::openai_chat()),
        "openai_responses" => Rules::Sse(SseRules::openai_responses()),
        "anthropic" => Rules::Sse(SseRules::anthropic()),
        "gemini" => Rules::Sse(SseRules::gemini()),
        "cohere" => Rules::Sse(SseRules::cohere()),
        "ollama_ndjson" => Rules::Ndjson(NdjsonRules::ollama()),
        "bedrock" => Rules::EventStream(EventStreamRules::bedrock()),
        other => panic!("unknown rules {other:?}"),
    }
}

// The frame encoder of the event-stream fuzz target.
#[allow(unreachable_pub, dead_code)]
#[path = "../fuzz/replay/eventstream_splits.rs"]
mod eventstream_splits;

/// Encodes a `.eventstream` description: one frame per line, `<message-type>
/// <event-or-exception-type> <JSON payload>` (Bedrock's three headers and the
/// payload, CRCs right), or `!corrupt` (flip a bit of the last byte so far: the
/// message CRC of the frame before) or `!cut <n>` (keep only the first `n` bytes of
/// the frame before); `#` starts a comment.
fn eventstream_bytes(description: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut last = 0;
    for line in description.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.splitn(3, ' ');
        match (words.next(), words.next(), words.next()) {
            (Some("!corrupt"), None, None) => *out.last_mut().expect("a frame before") ^= 1,
            (Some("!cut"), Some(n), None) => out.truncate(last + n.parse::<usize>().expect("n")),
            (Some(kind), Some(event), Some(payload)) => {
                last = out.len();
                out.extend(eventstream_splits::bedrock(kind, event, payload));
            }
            _ => panic!("bad frame line {line:?}"),
        }
    }
    out
}

impl Rules {
    /// The transcript's file extension.
    fn extension(&self) -> &'static str {
        match self {
            Rules::Sse(_) => "sse",
            Rules::Ndjson(_) => "ndjson",
            Rules::EventStream(_) => "eventstream",
        }
    }

    /// The bytes on the wire for the file's contents.
    fn wire(&self, file: Vec<u8>) -> Vec<u8> {
        match self {
            Rules::EventStream(_) => {
                eventstream_bytes(&String::from_utf8(file).expect("a readable description"))
            }
            _ => file,
        }
    }
}

fn dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/wire"))
}

fn cases() -> Vec<Case> {
    let list = std::fs::read_to_string(dir().join("cases.txt")).expect("tests/wire/cases.txt");
    list.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let ([name, rule, ev, ec, lv, lc], more) = match words.split_at_checked(6) {
                Some((six, more)) if more.len() <= 1 => {
                    (<[&str; 6]>::try_from(six).expect("six words"), more)
                }
                _ => panic!("cases.txt: six columns (and a usage) expected in {line:?}"),
            };
            Case {
                name: name.to_owned(),
                rules: rules(rule),
                eof: (verdict(ev), cause(ec)),
                leave: (verdict(lv), cause(lc)),
                usage: more.first().map(|word| usage(word)),
            }
        })
        .collect()
}

/// The upstream: the chunks, then the end.
struct Chunks<'a>(std::slice::Iter<'a, &'a [u8]>);

impl<'a> Stream for Chunks<'a> {
    type Item = Result<&'a [u8], ()>;

    fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Poll::Ready(self.0.next().map(|c| Ok(*c)))
    }
}

/// Feeds `chunks` through a tracked stream, then polls the end (`eof`) or drops it
/// (the client left); returns the one outcome recorded.
fn run(rules: &Rules, chunks: &[&[u8]], eof: bool) -> Outcome {
    let records = Rc::new(RefCell::new(Vec::new()));
    let sink = records.clone();
    let tracked = TrackedStream::new(Chunks(chunks.iter()), move |o: Outcome| {
        sink.borrow_mut().push(o)
    });
    let mut tracked = match rules {
        Rules::Sse(rules) => tracked.with_sse(rules.clone()),
        Rules::Ndjson(rules) => tracked.with_ndjson(*rules),
        Rules::EventStream(rules) => tracked.with_eventstream(*rules),
    };
    let mut cx = Context::from_waker(Waker::noop());
    let mut passed = 0;
    for chunk in chunks {
        match Pin::new(&mut tracked).poll_next(&mut cx) {
            Poll::Ready(Some(Ok(item))) => {
                assert!(std::ptr::eq(item, *chunk), "an item was changed or copied");
                passed += item.len();
            }
            other => panic!("expected a chunk, got {other:?}"),
        }
    }
    if eof {
        assert!(matches!(
            Pin::new(&mut tracked).poll_next(&mut cx),
            Poll::Ready(None)
        ));
    }
    drop(tracked);
    let records = records.borrow();
    assert_eq!(records.len(), 1, "exactly one record");
    assert_eq!(records[0].bytes, passed as u64);
    records[0]
}

/// Every way of feeding `bytes` this test uses: whole, byte by byte, one event per
/// chunk (as engines write them: cut after each blank line), and each 2-way split.
fn feeds(bytes: &[u8]) -> impl Iterator<Item = Vec<&[u8]>> {
    let whole = std::iter::once(vec![bytes]);
    let bytewise = std::iter::once(bytes.chunks(1).collect());
    let events = std::iter::once(events(bytes));
    let halves = (1..bytes.len()).map(move |at| {
        let (a, b) = bytes.split_at(at);
        vec![a, b]
    });
    whole.chain(bytewise).chain(events).chain(halves)
}

/// `bytes` cut after each `\n\n` and `\r\n\r\n`: one SSE event per chunk.
fn events(bytes: &[u8]) -> Vec<&[u8]> {
    let mut chunks = Vec::new();
    let mut start = 0;
    for end in 1..=bytes.len() {
        let seen = &bytes[start..end];
        if seen.ends_with(b"\n\n") || seen.ends_with(b"\r\n\r\n") {
            chunks.push(seen);
            start = end;
        }
    }
    chunks.push(&bytes[start..]);
    chunks
}

#[test]
fn every_transcript_gets_its_verdict_and_cause_however_it_is_split() {
    let cases = cases();
    assert!(cases.len() >= 40, "only {} transcripts", cases.len());
    let mut runs = 0;
    for case in &cases {
        let path = dir().join(format!("{}.{}", case.name, case.rules.extension()));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let bytes = case.rules.wire(bytes);
        for chunks in feeds(&bytes) {
            for (eof, (verdict, cause)) in [(true, case.eof), (false, case.leave)] {
                let outcome = run(&case.rules, &chunks, eof);
                let how = if eof { "at EOF" } else { "client left" };
                assert_eq!(
                    (outcome.verdict, outcome.cause),
                    (verdict, cause),
                    "{} ({} chunks, {how})",
                    case.name,
                    chunks.len(),
                );
                if let Some(usage) = case.usage {
                    assert_eq!(
                        outcome.usage,
                        usage,
                        "{} ({} chunks, {how})",
                        case.name,
                        chunks.len(),
                    );
                }
                runs += 1;
            }
        }
    }
    println!("{} transcripts, {runs} runs", cases.len());
}

/// Every engine the issue names has at least one transcript, and each verdict and
/// failure mode occurs: the corpus cannot quietly shrink to the easy cases.
#[test]
fn the_corpus_covers_every_engine_and_failure_mode() {
    let cases = cases();
    for engine in [
        "vllm-",
        "sglang-",
        "llamacpp-chat",
        "llamacpp-anthropic",
        "tgi-",
        "openrouter-",
        "ollama-",
        "openai-chat",
        "anthropic-",
        "openai-responses",
        "adversarial-",
        "gemini-",
        "cohere-",
        "ollama-native-",
        "bedrock-",
    ] {
        assert!(
            cases.iter().any(|c| c.name.starts_with(engine)),
            "no transcript for {engine}"
        );
    }
    for expected in [
        (Verdict::Success, Cause::Done),
        (Verdict::Failure, Cause::ErrorEvent),
        (Verdict::Failure, Cause::Truncated),
    ] {
        assert!(
            cases.iter().any(|c| c.eof == expected),
            "no transcript ends {expected:?}"
        );
    }
    assert!(
        cases
            .iter()
            .any(|c| c.leave == (Verdict::Abandoned, Cause::ClientLeft))
    );
}

/// Each framing added after the OpenAI ones has a clean transcript, an in-band error
/// and a stream cut before its end; the event stream also a corrupt frame and a cut
/// inside a frame.
#[test]
fn each_new_dialect_has_its_failure_modes() {
    let cases = cases();
    let has = |prefix: &str, eof: (Verdict, Cause), part: &str| {
        cases
            .iter()
            .any(|c| c.name.starts_with(prefix) && c.name.contains(part) && c.eof == eof)
    };
    let done = (Verdict::Success, Cause::Done);
    let error = (Verdict::Failure, Cause::ErrorEvent);
    let cut = (Verdict::Failure, Cause::Truncated);
    for prefix in ["gemini-", "cohere-", "ollama-native-", "bedrock-"] {
        assert!(has(prefix, done, "normal"), "{prefix}: no clean transcript");
        assert!(has(prefix, error, "error"), "{prefix}: no in-band error");
        assert!(has(prefix, cut, "truncated"), "{prefix}: no cut");
    }
    assert!(has("bedrock-", error, "corrupt-crc"));
    assert!(has("bedrock-", cut, "cut-inside-frame"));
}

/// The new dialects' transcripts all say what usage they report, and among them a
/// clean stream, an in-band error and a cut stream report some: usage is checked
/// whatever the verdict.
#[test]
fn the_new_dialects_transcripts_check_usage() {
    let cases = cases();
    for prefix in ["gemini-", "cohere-", "ollama-native-", "bedrock-"] {
        let ours: Vec<&Case> = cases
            .iter()
            .filter(|c| c.name.starts_with(prefix))
            .collect();
        for case in &ours {
            assert!(case.usage.is_some(), "{}: no usage column", case.name);
        }
        let reports = |eof: (Verdict, Cause)| {
            ours.iter()
                .any(|c| c.eof == eof && c.usage.is_some_and(|u| !u.is_empty()))
        };
        assert!(reports((Verdict::Success, Cause::Done)), "{prefix}: clean");
        if !matches!(prefix, "bedrock-" | "ollama-native-") {
            // Bedrock's and Ollama's usage comes with the end (the metadata after
            // messageStop, the done line): an exception or an error line replaces it.
            assert!(
                reports((Verdict::Failure, Cause::ErrorEvent)),
                "{prefix}: error"
            );
        }
    }
    // A stream cut short keeps the usage it reported before the cut.
    let cut = cases
        .iter()
        .find(|c| c.name == "gemini-truncated")
        .expect("gemini-truncated");
    assert_eq!(cut.eof, (Verdict::Failure, Cause::Truncated));
    assert_eq!(cut.usage, Some(Usage::new(Some(9), Some(20))));
}
