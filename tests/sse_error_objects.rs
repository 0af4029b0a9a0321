//! The scanner's error-object rule against a reference that buffers each event's data
//! and parses it with `serde_json`: on generated JSON (objects with `error`, `object`,
//! nested errors, strings full of quotes, backslashes and markers, any whitespace,
//! pretty-printed over several `data:` lines), truncated and trailing-garbage data, and
//! every split of the stream into chunks.

mod sse_json;

use proptest::prelude::*;
use serde_json::{Map, Value};
use sluice::sse::{Signal, SseRules, SseScanner};
use sse_json::{Ending, frame};

/// The reference: SPEC section 2's rule for one event's data, by a real JSON parser.
fn reference(data: &str) -> Option<Signal> {
    if data == "[DONE]" {
        return Some(Signal::Done);
    }
    let Ok(Value::Object(members)) = serde_json::from_str::<Value>(data) else {
        return None;
    };
    let error = members.get("error").is_some_and(|v| !v.is_null());
    let object = members.get("object").and_then(Value::as_str) == Some("error");
    (error || object).then_some(Signal::Failed)
}

/// Strings that make a naive matcher stumble.
fn tricky_string() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("error".to_owned()),
        Just("\"error\": 1".to_owned()),
        Just("{\"error\":{\"message\":\"x\"}}".to_owned()),
        Just("[DONE]".to_owned()),
        Just("data: [DONE]".to_owned()),
        Just("\\\"error\\\"".to_owned()),
        Just("back\\slash\\".to_owned()),
        Just("}]{[,:".to_owned()),
        "[a-z \"\\\\{}\\[\\]:,]{0,12}",
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => Just("error".to_owned()),
        2 => Just("object".to_owned()),
        1 => Just("errors".to_owned()),
        1 => Just("err".to_owned()),
        1 => Just("choices".to_owned()),
        1 => Just("id".to_owned()),
        1 => tricky_string(),
    ]
}

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        2 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::Bool),
        1 => any::<i32>().prop_map(Value::from),
        2 => Just(Value::from("error")),
        3 => tricky_string().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..5)
                .prop_map(|members| Value::Object(members.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Data for one event: a top-level object (mostly), written with any whitespace, and
/// sometimes cut short or followed by something.
fn data() -> impl Strategy<Value = String> {
    let top = prop_oneof![
        4 => prop::collection::vec((key(), json()), 0..5)
            .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        1 => json(),
    ];
    sse_json::data(
        top,
        &["", "", " ", "\t", "\n", "  \n "],
        &[Ending::Cut, Ending::Garbage, Ending::Whole, Ending::Whole],
    )
}

/// The signal of each event in turn, from a scanner fed `chunks`.
fn scanned(chunks: &[&[u8]]) -> Option<Signal> {
    let mut scanner = SseScanner::new(SseRules::openai_chat());
    chunks.iter().map(|c| scanner.feed(c)).max().flatten()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3_000))]

    #[test]
    fn the_scanner_agrees_with_serde_json(
        events in prop::collection::vec(data(), 1..4),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        // Event by event, whole.
        for data in &events {
            let bytes = frame(std::slice::from_ref(data));
            prop_assert_eq!(scanned(&[&bytes]), reference(data), "data {:?}", data);
        }
        // All of them, split anywhere.
        let bytes = frame(&events);
        let expected = events.iter().map(|d| reference(d)).max().flatten();
        let mut at: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
        at.extend([0, bytes.len()]);
        at.sort_unstable();
        let chunks: Vec<&[u8]> = at.windows(2).map(|w| &bytes[w[0]..w[1]]).collect();
        prop_assert_eq!(scanned(&chunks), expected);
        let bytewise: Vec<&[u8]> = bytes.chunks(1).collect();
        prop_assert_eq!(scanned(&bytewise), expected);
    }
}

/// The generator reaches both answers often, so the property is not vacuous.
#[test]
fn the_generator_makes_errors_and_non_errors() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let (mut failed, mut other) = (0, 0);
    for _ in 0..2_000 {
        let data = data().new_tree(&mut runner).expect("tree").current();
        match reference(&data) {
            Some(Signal::Failed) => failed += 1,
            _ => other += 1,
        }
    }
    assert!(
        failed > 200 && other > 200,
        "{failed} errors, {other} others"
    );
}
