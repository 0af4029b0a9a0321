//! The wire corpus: complete SSE transcripts as the engines put them on the wire
//! (`tests/wire/<name>.sse`, raw bytes), each with the verdict and cause it must get
//! (`tests/wire/cases.txt`, which also says what each was written from).
//!
//! Every transcript is fed through a real `TrackedStream` whole, byte by byte, and in
//! every 2-way split, and then either ends (the upstream's EOF) or is dropped before
//! the end is seen (the client left); each run must record exactly the expected
//! outcome, with every byte passed through.

use std::cell::RefCell;
use std::path::Path;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use futures_core::Stream;
use sluice::sse::SseRules;
use sluice::{Cause, Outcome, TrackedStream, Verdict};

/// One line of `cases.txt`.
#[derive(Debug)]
struct Case {
    name: String,
    rules: SseRules,
    eof: (Verdict, Cause),
    leave: (Verdict, Cause),
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

fn rules(word: &str) -> SseRules {
    match word {
        "openai_chat" => SseRules::openai_chat(),
        "openai_responses" => SseRules::openai_responses(),
        "anthropic" => SseRules::anthropic(),
        other => panic!("unknown rules {other:?}"),
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
            let [name, rule, ev, ec, lv, lc] = words[..] else {
                panic!("cases.txt: six columns expected in {line:?}");
            };
            Case {
                name: name.to_owned(),
                rules: rules(rule),
                eof: (verdict(ev), cause(ec)),
                leave: (verdict(lv), cause(lc)),
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
fn run(rules: &SseRules, chunks: &[&[u8]], eof: bool) -> Outcome {
    let records = Rc::new(RefCell::new(Vec::new()));
    let sink = records.clone();
    let mut tracked = TrackedStream::new(Chunks(chunks.iter()), move |o: Outcome| {
        sink.borrow_mut().push(o)
    })
    .with_sse(rules.clone());
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

/// Every way of feeding `bytes` this test uses: whole, byte by byte, and each 2-way
/// split.
fn feeds(bytes: &[u8]) -> impl Iterator<Item = Vec<&[u8]>> {
    let whole = std::iter::once(vec![bytes]);
    let bytewise = std::iter::once(bytes.chunks(1).collect());
    let halves = (1..bytes.len()).map(move |at| {
        let (a, b) = bytes.split_at(at);
        vec![a, b]
    });
    whole.chain(bytewise).chain(halves)
}

#[test]
fn every_transcript_gets_its_verdict_and_cause_however_it_is_split() {
    let cases = cases();
    assert!(cases.len() >= 40, "only {} transcripts", cases.len());
    let mut runs = 0;
    for case in &cases {
        let path = dir().join(format!("{}.sse", case.name));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for chunks in feeds(&bytes) {
            for (eof, (verdict, cause)) in [(true, case.eof), (false, case.leave)] {
                let outcome = run(&case.rules, &chunks, eof);
                assert_eq!(
                    (outcome.verdict, outcome.cause),
                    (verdict, cause),
                    "{} ({} chunks, {})",
                    case.name,
                    chunks.len(),
                    if eof { "at EOF" } else { "client left" },
                );
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
