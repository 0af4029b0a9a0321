//! A failure after the response head reaches the client in the stream's own dialect
//! (SPEC section 8): with `with_failure_event`, a stream that fails without the
//! worker's own error event (cut short, or an error item) yields its API's failure
//! event as one last `Ok` item, never a clean end; the worker's own error is left as
//! it is.

use bytes::Bytes;
use futures_util::{StreamExt, stream};
use sluice::ndjson::{NdjsonRules, NdjsonScanner};
use sluice::sse::{Dialect, Signal, SseRules, SseScanner};
use sluice::{Cause, Outcome, TrackedStream, Verdict};

type Item = Result<Bytes, &'static str>;

const TOKEN: &str = "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n";

/// Reads `items` tracked under `rules` with the failure event on; returns what the
/// client got (the `Ok` bytes joined, and the error items) and the outcome.
fn relay(items: Vec<Item>, rules: SseRules) -> (String, Vec<&'static str>, Outcome) {
    let (record, recorded) = std::sync::mpsc::channel();
    let tracked = TrackedStream::new(stream::iter(items), move |o: Outcome| {
        let _ = record.send(o); // the test reads it below
    })
    .with_sse(rules)
    .with_failure_event();
    drain(tracked, &recorded)
}

/// Reads `tracked` to its end as a client would: the `Ok` bytes joined, the error
/// items, and the outcome it recorded.
fn drain(
    tracked: impl futures_util::Stream<Item = Item>,
    recorded: &std::sync::mpsc::Receiver<Outcome>,
) -> (String, Vec<&'static str>, Outcome) {
    let got: Vec<Item> = futures_executor::block_on(tracked.collect());
    let mut text = String::new();
    let mut errors = Vec::new();
    for item in got {
        match item {
            Ok(bytes) => text.push_str(std::str::from_utf8(&bytes).expect("utf-8")),
            Err(e) => errors.push(e),
        }
    }
    (text, errors, recorded.recv().expect("recorded once"))
}

fn ok(text: &'static str) -> Item {
    Ok(Bytes::from_static(text.as_bytes()))
}

fn why(o: &Outcome) -> (Verdict, Cause) {
    (o.verdict, o.cause)
}

#[test]
fn a_truncated_openai_stream_ends_with_an_error_object_and_no_done() {
    let (text, errors, outcome) = relay(vec![ok(TOKEN), ok(TOKEN)], SseRules::openai_chat());
    assert_eq!(why(&outcome), (Verdict::Failure, Cause::Truncated));
    let event = "data: {\"error\":{\"message\":\"upstream failed: truncated\",\
                 \"type\":\"upstream_error\",\"code\":\"truncated\"}}\n\n";
    assert_eq!(text, format!("{TOKEN}{TOKEN}{event}"));
    assert!(!text.contains("[DONE]"));
    assert!(errors.is_empty());
    assert_eq!(
        outcome.chunks, 2,
        "the event is not counted as the worker's"
    );
}

#[test]
fn a_truncated_anthropic_stream_ends_with_an_error_event() {
    const DELTA: &str = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\"}\n\n";
    let (text, _, outcome) = relay(vec![ok(DELTA)], SseRules::anthropic());
    assert_eq!(why(&outcome), (Verdict::Failure, Cause::Truncated));
    let event = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\
                 \"message\":\"upstream failed: truncated\"}}\n\n";
    assert_eq!(text, format!("{DELTA}{event}"));
}

#[test]
fn a_truncated_responses_stream_ends_with_response_failed() {
    const DELTA: &str = "event: response.output_text.delta\ndata: {\"delta\":\"hi\"}\n\n";
    let (text, _, outcome) = relay(vec![ok(DELTA)], SseRules::openai_responses());
    assert_eq!(why(&outcome), (Verdict::Failure, Cause::Truncated));
    let event = "event: response.failed\ndata: {\"type\":\"response.failed\",\"response\":\
                 {\"status\":\"failed\",\"error\":{\"code\":\"server_error\",\
                 \"message\":\"upstream failed: truncated\"}}}\n\n";
    assert_eq!(text, format!("{DELTA}{event}"));
}

#[test]
fn an_error_item_is_preceded_by_the_event_and_ends_the_stream() {
    let items = vec![ok(TOKEN), Err("connection reset"), ok(TOKEN)];
    let (text, errors, outcome) = relay(items, SseRules::openai_chat());
    assert_eq!(why(&outcome), (Verdict::Failure, Cause::ErrorItem));
    assert!(text.starts_with(TOKEN));
    assert!(text.ends_with("\"code\":\"error_item\"}}\n\n"), "{text}");
    assert_eq!(errors, ["connection reset"], "the error item still follows");
    assert_eq!(outcome.chunks, 1, "nothing read after the error item");
}

#[test]
fn the_worker_s_own_error_gets_no_second_one() {
    const ERROR: &str = "data: {\"error\":{\"message\":\"out of memory\",\"code\":500}}\n\n";
    for items in [
        vec![ok(TOKEN), ok(ERROR)], // llama.cpp, TGI: then close
        vec![ok(TOKEN), ok(ERROR), ok("data: [DONE]\n\n")], // vLLM, SGLang: then [DONE]
        vec![ok(TOKEN), ok(ERROR), Err("reset")],
    ] {
        let expected: String = items
            .iter()
            .filter_map(|i| i.as_ref().ok())
            .map(|b| std::str::from_utf8(b).expect("utf-8"))
            .collect();
        let (text, _, outcome) = relay(items, SseRules::openai_chat());
        assert_eq!(why(&outcome), (Verdict::Failure, Cause::ErrorEvent));
        assert_eq!(text, expected, "nothing added");
    }
    const ANTHROPIC_ERROR: &str =
        "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\"}}\n\n";
    let (text, _, outcome) = relay(vec![ok(ANTHROPIC_ERROR)], SseRules::anthropic());
    assert_eq!(why(&outcome), (Verdict::Failure, Cause::ErrorEvent));
    assert_eq!(text, ANTHROPIC_ERROR);
}

#[test]
fn a_clean_end_gets_nothing() {
    let items = vec![ok(TOKEN), ok("data: [DONE]\n\n")];
    let (text, errors, outcome) = relay(items, SseRules::openai_chat());
    assert_eq!(why(&outcome), (Verdict::Success, Cause::Done));
    assert_eq!(text, format!("{TOKEN}data: [DONE]\n\n"));
    assert!(errors.is_empty());
}

#[test]
fn custom_rules_have_no_dialect_unless_given_one() {
    let custom = SseRules::empty().done_on_data("[END]").require_done(true);
    assert_eq!(custom.dialect(), None);
    let (text, _, outcome) = relay(vec![ok(TOKEN)], custom.clone());
    assert_eq!(why(&outcome), (Verdict::Failure, Cause::Truncated));
    assert_eq!(text, TOKEN, "no dialect, no event");

    let custom = custom.with_dialect(Some(Dialect::OpenAiChat));
    let (text, _, _) = relay(vec![ok(TOKEN)], custom);
    assert!(text.ends_with("\"code\":\"truncated\"}}\n\n"), "{text}");
}

#[test]
fn presets_extended_keep_their_dialect() {
    let rules = SseRules::anthropic().failed_on_event("overloaded");
    assert_eq!(rules.dialect(), Some(Dialect::Anthropic));
    assert_ne!(
        SseRules::anthropic(),
        SseRules::anthropic().with_dialect(None),
        "the dialect is part of the rules"
    );
}

/// Each dialect's failure event is a failure under its own rules: a client library
/// (or a gateway in front of this one) sees an error, never a clean end.
#[test]
fn every_failure_event_is_a_failure_under_its_own_rules() {
    for rules in [
        SseRules::openai_chat(),
        SseRules::openai_responses(),
        SseRules::anthropic(),
    ] {
        for cause in [Cause::Truncated, Cause::IdleTimeout, Cause::Deadline] {
            let event = rules.failure_event(cause).expect("a preset has a dialect");
            assert_eq!(event.cause(), cause);
            let mut scanner = SseScanner::new(rules.clone());
            let text = event.to_string();
            assert_eq!(
                scanner.feed(text.as_bytes()),
                Some(Signal::Failed),
                "{text}"
            );
            let json = text.split("data: ").nth(1).expect("data").trim_end();
            let parsed: serde_json::Value = serde_json::from_str(json).expect("valid JSON");
            assert!(parsed.is_object());
        }
    }
}

/// Reads `items` tracked under NDJSON `rules` with the failure event on, naming the
/// upstream `w`; returns what the client got and the outcome.
fn relay_ndjson(items: Vec<Item>, rules: NdjsonRules) -> (String, Vec<&'static str>, Outcome) {
    let (record, recorded) = std::sync::mpsc::channel();
    let tracked = TrackedStream::new(stream::iter(items), move |o: Outcome| {
        let _ = record.send(o); // the test reads it below
    })
    .with_ndjson(rules)
    .with_failure_event_named("w");
    drain(tracked, &recorded)
}

const OLLAMA_LINE: &str = "{\"message\":{\"content\":\"hi\"},\"done\":false}\n";

/// Ollama's native API (NDJSON) hears a failure as Ollama writes one: a bare error
/// line, which its client libraries raise, and no done line; a line the worker was
/// cut off inside is ended first.
#[test]
fn a_failed_ollama_stream_ends_with_an_error_line() {
    let (text, errors, outcome) = relay_ndjson(vec![ok(OLLAMA_LINE)], NdjsonRules::ollama());
    assert_eq!(why(&outcome), (Verdict::Failure, Cause::Truncated));
    assert_eq!(
        text,
        format!("{OLLAMA_LINE}{{\"error\":\"upstream w failed: truncated\"}}\n")
    );
    assert!(errors.is_empty());
    assert_eq!(outcome.chunks, 1, "the line is not counted as the worker's");

    let cut = "{\"message\":{\"content\":\"h";
    let (text, _, outcome) = relay_ndjson(vec![ok(OLLAMA_LINE), ok(cut)], NdjsonRules::ollama());
    assert_eq!(why(&outcome), (Verdict::Failure, Cause::Truncated));
    assert_eq!(
        text,
        format!("{OLLAMA_LINE}{cut}\n{{\"error\":\"upstream w failed: truncated\"}}\n")
    );

    let items = vec![ok(OLLAMA_LINE), Err("connection reset")];
    let (text, errors, outcome) = relay_ndjson(items, NdjsonRules::ollama());
    assert_eq!(why(&outcome), (Verdict::Failure, Cause::ErrorItem));
    assert!(
        text.ends_with("{\"error\":\"upstream w failed: error_item\"}\n"),
        "{text}"
    );
    assert_eq!(errors, ["connection reset"], "the error item still follows");
}

#[test]
fn an_ollama_stream_s_own_end_or_error_gets_nothing_added() {
    for (last, cause) in [
        ("{\"done\":true,\"eval_count\":3}\n", Cause::Done),
        ("{\"error\":\"model runner crashed\"}\n", Cause::ErrorEvent),
    ] {
        let (text, _, outcome) =
            relay_ndjson(vec![ok(OLLAMA_LINE), ok(last)], NdjsonRules::ollama());
        assert_eq!(outcome.cause, cause);
        assert_eq!(text, format!("{OLLAMA_LINE}{last}"), "nothing added");
    }
    let rules = NdjsonRules::ollama().with_dialect(None);
    let (text, _, outcome) = relay_ndjson(vec![ok(OLLAMA_LINE)], rules);
    assert_eq!(why(&outcome), (Verdict::Failure, Cause::Truncated));
    assert_eq!(text, OLLAMA_LINE, "no dialect, no line");
}

/// Ollama's failure line is a failure under Ollama's own rules, after any cut.
#[test]
fn the_ollama_failure_line_is_a_failure_under_its_own_rules() {
    let whole = format!("{OLLAMA_LINE}{{\"done\":true}}\n");
    for at in 0..whole.len() {
        let mut scanner = NdjsonScanner::new(NdjsonRules::ollama());
        scanner.feed(&whole.as_bytes()[..at]);
        let line = scanner
            .failure_event(Cause::IdleTimeout)
            .expect("a dialect");
        let text = line.named("gpu \"7\"").to_string();
        assert_eq!(
            scanner.feed(text.as_bytes()),
            Some(Signal::Failed),
            "cut at {at}: {text:?}"
        );
        let last: serde_json::Value =
            serde_json::from_str(text.trim_start_matches('\n')).expect("one JSON line");
        assert_eq!(last["error"], "upstream gpu \"7\" failed: idle_timeout");
    }
}

/// Parses a client's whole byte stream with a reference SSE parser (the
/// `eventsource-stream` crate, a WHATWG reading): the events' names and data.
fn parse(text: &str) -> Vec<(String, String)> {
    use eventsource_stream::Eventsource;
    let bytes = stream::iter([Ok::<_, std::convert::Infallible>(Bytes::from(
        text.to_owned(),
    ))]);
    let events: Vec<_> = futures_executor::block_on(bytes.eventsource().collect());
    events
        .into_iter()
        .map(|e| {
            let e = e.expect("the reference parser reads it");
            (e.event, e.data)
        })
        .collect()
}

/// The event name a client sees for each preset's failure event.
fn event_name(rules: &SseRules) -> &'static str {
    match rules.dialect() {
        Some(Dialect::OpenAiChat) => "message",
        Some(Dialect::OpenAiResponses) => "response.failed",
        Some(Dialect::Anthropic) => "error",
        other => panic!("no failure event for {other:?}"),
    }
}

/// Where a worker is cut off (after a whole token event), and what must come before
/// the failure event so that exactly one blank line ends what was cut.
const CUTS: &[(&str, &str, &str)] = &[
    ("at an event boundary", "", ""),
    ("inside a data line", "data: {\"choices\":[{\"del", "\n\n"),
    ("inside a field name", "da", "\n\n"),
    ("after one line end", "data: {\"choices\":[]}\n", "\n"),
    ("after an event line", "event: content_block_delta\n", "\n"),
    ("after a CR", "data: {\"choices\":[]}\r", "\n\n"),
    ("after a CRLF", "data: {\"choices\":[]}\r\n", "\n"),
    (
        "after a blank line of CRs",
        "data: {\"choices\":[]}\r\r",
        "",
    ),
    ("inside a comment", ": keep-al", "\n\n"),
    ("after a comment line", ": keep-alive\n", "\n"),
    ("after a comment and its blank line", ": keep-alive\n\n", ""),
];

/// A worker cut off anywhere: the failure event comes after exactly one blank line
/// (none at a boundary), so a reference SSE parser reads it as its own event with
/// valid JSON, however the worker's bytes were split into chunks.
#[test]
fn a_worker_cut_inside_an_event_has_that_event_ended_before_the_failure_event() {
    for rules in [
        SseRules::openai_chat(),
        SseRules::openai_responses(),
        SseRules::anthropic(),
    ] {
        let bare = rules
            .failure_event(Cause::Truncated)
            .expect("a preset has a dialect")
            .to_string();
        let data = bare.split("data: ").nth(1).expect("data").trim_end();
        for &(case, cut, close) in CUTS {
            let sent = format!("{TOKEN}{cut}");
            // Every split of the worker's bytes into two chunks (and the whole).
            for at in 0..=sent.len() {
                let (a, b) = sent.split_at(at);
                let items = vec![Ok(Bytes::from(a.to_owned())), Ok(Bytes::from(b.to_owned()))];
                let (text, _, outcome) = relay(items, rules.clone());
                assert_eq!(why(&outcome), (Verdict::Failure, Cause::Truncated));
                assert_eq!(
                    text,
                    format!("{sent}{close}{bare}"),
                    "{case}, split at {at}, {rules:?}"
                );
            }
            let text = format!("{sent}{close}{bare}");
            let events = parse(&text);
            let (name, last) = events.last().expect("events");
            assert_eq!(
                (name.as_str(), last.as_str()),
                (event_name(&rules), data),
                "{case}: {text:?} read as {events:?}"
            );
            let json: serde_json::Value = serde_json::from_str(last).expect("valid JSON");
            assert!(json.is_object(), "{case}");
            // The first token, maybe the cut event, then the failure: nothing else.
            let cut_has_data = cut.starts_with("data");
            assert_eq!(events.len(), 2 + usize::from(cut_has_data), "{case}");
            assert_eq!(events[0].1, TOKEN["data: ".len()..].trim_end(), "{case}");
            // The sluice scanner reads the client's stream as failed too.
            let mut scanner = SseScanner::new(rules.clone());
            assert_eq!(
                scanner.feed(text.as_bytes()),
                Some(Signal::Failed),
                "{case}"
            );
        }
    }
}

/// The same for the other failures: an error item and a timer (here `expire_pinned`,
/// as `forward` does) after a worker cut inside a line.
#[test]
fn every_failure_closes_the_cut_event_first() {
    const CUT: &str = "data: {\"choices\":[{\"delta\":{\"content\":\"h";
    let items = vec![ok(TOKEN), ok(CUT), Err("connection reset")];
    let (text, errors, outcome) = relay(items, SseRules::openai_chat());
    assert_eq!(why(&outcome), (Verdict::Failure, Cause::ErrorItem));
    assert_eq!(errors, ["connection reset"]);
    let bare = SseRules::openai_chat()
        .failure_event(Cause::ErrorItem)
        .expect("dialect")
        .to_string();
    assert_eq!(text, format!("{TOKEN}{CUT}\n\n{bare}"));

    let upstream = stream::iter([ok(TOKEN), ok(CUT)]).chain(stream::pending());
    let mut tracked = Box::pin(
        TrackedStream::new(upstream, |_: Outcome| {})
            .with_sse(SseRules::anthropic())
            .with_failure_event(),
    );
    let mut text = String::new();
    futures_executor::block_on(async {
        for _ in 0..2 {
            let item = tracked.next().await.expect("an item").expect("ok");
            text.push_str(std::str::from_utf8(&item).expect("utf-8"));
        }
        tracked.as_mut().expire_pinned(Cause::IdleTimeout);
        while let Some(item) = tracked.next().await {
            text.push_str(std::str::from_utf8(&item.expect("ok")).expect("utf-8"));
        }
    });
    let bare = SseRules::anthropic()
        .failure_event(Cause::IdleTimeout)
        .expect("dialect")
        .to_string();
    assert_eq!(text, format!("{TOKEN}{CUT}\n\n{bare}"));
    let events = parse(&text);
    assert_eq!(events.last().map(|e| e.0.as_str()), Some("error"));
}

#[test]
fn a_partial_byte_order_mark_is_ended_like_a_line() {
    let mut scanner = SseScanner::new(SseRules::openai_chat());
    scanner.feed(b"\xEF\xBB");
    let event = scanner.failure_event(Cause::Truncated).expect("dialect");
    assert!(event.to_string().starts_with("\n\ndata: "));
    scanner.feed(b"\xBF");
    let event = scanner.failure_event(Cause::Truncated).expect("dialect");
    assert!(
        event.to_string().starts_with("data: "),
        "a whole BOM is no content"
    );
}

/// The upstream's name goes into the message as JSON string text: quotes,
/// backslashes and control characters escaped, everything else as it is; the data
/// stays one line.
#[test]
fn a_named_upstream_is_escaped_for_json() {
    let names = [
        "w",
        "gpu-7.us-east",
        "say \"hi\"",
        "back\\slash\\",
        "line\nbreak\r\nand\ttab",
        "\u{0}\u{1}\u{8}\u{b}\u{c}\u{1f}\u{7f}",
        "é ✓ 🦀 \u{2028}",
        "",
    ];
    for rules in [
        SseRules::openai_chat(),
        SseRules::openai_responses(),
        SseRules::anthropic(),
    ] {
        for name in names {
            let event = rules.failure_event(Cause::IdleTimeout).expect("dialect");
            let text = event.named(name).to_string();
            let (head, data) = text.split_once("data: ").expect("data");
            assert!(!head.contains('"'), "{text:?}");
            let data = data.strip_suffix("\n\n").expect("ends the event");
            assert!(
                !data.bytes().any(|b| b < 0x20),
                "a control character in the data line: {data:?}"
            );
            let json: serde_json::Value = serde_json::from_str(data).expect("valid JSON");
            let message = match rules.dialect() {
                Some(Dialect::OpenAiResponses) => &json["response"]["error"]["message"],
                _ => &json["error"]["message"],
            };
            assert_eq!(
                message.as_str(),
                Some(format!("upstream {name} failed: idle_timeout").as_str()),
                "{text:?}"
            );
            let events = parse(&text);
            assert_eq!(events.len(), 1, "{text:?}");
            assert_eq!(events[0].1, data);
        }
    }
    // Spelled as JSON requires, byte for byte.
    let event = SseRules::openai_chat()
        .failure_event(Cause::Deadline)
        .expect("dialect");
    assert_eq!(
        event.named("a\"b\\c\nd\u{1}e").to_string(),
        "data: {\"error\":{\"message\":\"upstream a\\\"b\\\\c\\nd\\u0001e failed: deadline\",\
         \"type\":\"upstream_error\",\"code\":\"deadline\"}}\n\n"
    );
}

#[test]
fn a_tracked_stream_names_its_upstream_in_the_event() {
    use std::sync::Arc;
    let name: Arc<str> = Arc::from("w \"1\"");
    let (record, recorded) = std::sync::mpsc::channel();
    let tracked = TrackedStream::new(stream::iter(vec![ok(TOKEN)]), move |o: Outcome| {
        let _ = record.send(o); // the test reads it below
    })
    .with_sse(SseRules::openai_chat())
    .with_failure_event_named(name);
    let got: Vec<Item> = futures_executor::block_on(tracked.collect());
    let text: String = got
        .iter()
        .map(|i| std::str::from_utf8(i.as_ref().expect("ok")).expect("utf-8"))
        .collect();
    assert_eq!(
        text,
        format!(
            "{TOKEN}data: {{\"error\":{{\"message\":\"upstream w \\\"1\\\" failed: truncated\",\
             \"type\":\"upstream_error\",\"code\":\"truncated\"}}}}\n\n"
        )
    );
    let outcome = recorded.recv().expect("recorded");
    assert_eq!(why(&outcome), (Verdict::Failure, Cause::Truncated));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

    /// Whatever the worker sent before it was cut off, the reference parser reads the
    /// client's stream as the worker's events (the cut one dispatched as it stands),
    /// then the failure event, its own: exactly one blank line was added between.
    #[test]
    fn after_any_cut_the_failure_event_is_read_as_its_own(
        parts in proptest::collection::vec(
            proptest::sample::select(&[
                "data: ", "data:", "event: ", "event: error", "id: 1", ": ping", "retry: 5",
                "{\"a\":", "[DONE]", "x", " ", "\n", "\r", "\r\n", "\n\n",
            ][..]),
            0..24,
        ),
        preset in 0..3_usize,
    ) {
        let rules = [
            SseRules::openai_chat(),
            SseRules::openai_responses(),
            SseRules::anthropic(),
        ][preset].clone();
        let sent: String = parts.concat();
        let mut scanner = SseScanner::new(rules.clone());
        scanner.feed(sent.as_bytes());
        let event = scanner.failure_event(Cause::Truncated).expect("dialect").to_string();
        let bare = rules.failure_event(Cause::Truncated).expect("dialect").to_string();
        let close = event.strip_suffix(bare.as_str()).expect("the event, after a close");
        proptest::prop_assert!(["", "\n", "\n\n"].contains(&close), "{close:?}");
        let events = parse(&format!("{sent}{event}"));
        let (last, before) = events.split_last().expect("the failure event");
        let data = bare.split("data: ").nth(1).expect("data").trim_end();
        proptest::prop_assert_eq!((last.0.as_str(), last.1.as_str()), (event_name(&rules), data));
        // The worker's events are what they would be with a blank line after them.
        proptest::prop_assert_eq!(before, &parse(&format!("{sent}\n\n"))[..]);
    }
}
