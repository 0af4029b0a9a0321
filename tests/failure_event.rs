//! A failure after the response head reaches the client in the stream's own dialect
//! (SPEC section 8): with `with_failure_event`, a stream that fails without the
//! worker's own error event (cut short, or an error item) yields its API's failure
//! event as one last `Ok` item, never a clean end; the worker's own error is left as
//! it is.

use bytes::Bytes;
use futures_util::{StreamExt, stream};
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
