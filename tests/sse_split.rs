//! The SSE scanner against a plain reference parser, on generated inputs and splits.
//!
//! The reference below is the textbook reading of SPEC section 2 (the WHATWG
//! event-stream rules): it buffers the whole input, splits it into lines, builds the
//! data and event-name strings and matches the rules by equality. It knows nothing of
//! the scanner's state machine, so agreeing with it is evidence, not a tautology.
//!
//! * Fed byte by byte, the scanner reports, at every byte, exactly the signal of the
//!   event the reference dispatches at that byte (the byte that ends the blank line).
//! * Fed in random chunks, every `feed` reports the strongest signal the reference
//!   dispatches within that chunk; so the strongest over all chunks equals the result
//!   for the whole input at once.

use Signal::{Done, Failed};
use proptest::prelude::*;
use proptest::sample::Index;
use sluice::sse::{Signal, SseRules, SseScanner};

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// The rules as the reference sees them: exact byte strings with their signals.
#[derive(Debug, Clone, Default)]
struct RefRules {
    data: Vec<(Vec<u8>, Signal)>,
    event: Vec<(Vec<u8>, Signal)>,
}

impl RefRules {
    fn data(mut self, pattern: &str, signal: Signal) -> Self {
        self.data.push((pattern.as_bytes().to_vec(), signal));
        self
    }

    fn event(mut self, pattern: &str, signal: Signal) -> Self {
        self.event.push((pattern.as_bytes().to_vec(), signal));
        self
    }
}

/// The rule sets under test, each built twice: for the scanner and for the reference
/// (the presets written out from SPEC section 2, not read from the scanner).
fn rule_sets() -> Vec<(&'static str, SseRules, RefRules)> {
    let none = RefRules::default;
    vec![
        ("empty", SseRules::empty(), none()),
        (
            "openai_chat",
            SseRules::openai_chat(),
            none().data("[DONE]", Done),
        ),
        (
            "openai_responses",
            SseRules::openai_responses(),
            none()
                .event("response.completed", Done)
                .event("response.incomplete", Done)
                .event("response.failed", Failed)
                .event("error", Failed),
        ),
        (
            "anthropic",
            SseRules::anthropic(),
            none().event("message_stop", Done).event("error", Failed),
        ),
        (
            "custom data",
            SseRules::openai_chat()
                .failed_on_event("error")
                .done_on_data("a\nb")
                .failed_on_data("")
                .done_on_data("[DONE")
                .failed_on_data("[DONE]\n[DONE]")
                .done_on_data("x")
                .failed_on_data("x"),
            none()
                .data("[DONE]", Done)
                .event("error", Failed)
                .data("a\nb", Done)
                .data("", Failed)
                .data("[DONE", Done)
                .data("[DONE]\n[DONE]", Failed)
                .data("x", Done)
                .data("x", Failed),
        ),
        (
            "custom events",
            SseRules::empty()
                .done_on_event("message")
                .failed_on_event("message_stop")
                .done_on_event("message_sto")
                .done_on_event("error")
                .failed_on_event("e")
                .failed_on_data(" [DONE]"),
            none()
                .event("message", Done)
                .event("message_stop", Failed)
                .event("message_sto", Done)
                .event("error", Done)
                .event("e", Failed)
                .data(" [DONE]", Failed),
        ),
    ]
}

/// The reference: for every input byte, the signal of the event that byte dispatches.
fn reference(rules: &RefRules, input: &[u8]) -> Vec<Option<Signal>> {
    let mut out = vec![None; input.len()];
    let mut data: Vec<u8> = Vec::new();
    let mut event: Vec<u8> = Vec::new();
    let mut i = if input.starts_with(BOM) { BOM.len() } else { 0 };
    let mut line_start = i;
    while i < input.len() {
        let b = input[i];
        if b == b'\r' || b == b'\n' {
            let line = &input[line_start..i];
            if line.is_empty() {
                // Dispatch.
                if !data.is_empty() {
                    data.pop(); // the last LF
                    let name: &[u8] = if event.is_empty() { b"message" } else { &event };
                    let by_data = rules.data.iter().filter(|(p, _)| *p == data);
                    let by_event = rules.event.iter().filter(|(p, _)| p == name);
                    out[i] = by_data.chain(by_event).map(|(_, s)| *s).max();
                }
                data.clear();
                event.clear();
            } else if line[0] != b':' {
                let (field, value) = match line.iter().position(|&c| c == b':') {
                    Some(colon) => {
                        let value = &line[colon + 1..];
                        (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
                    }
                    None => (line, &b""[..]),
                };
                match field {
                    b"data" => {
                        data.extend_from_slice(value);
                        data.push(b'\n');
                    }
                    b"event" => event = value.to_vec(),
                    _ => {}
                }
            }
            if b == b'\r' && input.get(i + 1) == Some(&b'\n') {
                i += 1;
            }
            line_start = i + 1;
        }
        i += 1;
    }
    out
}

/// Pieces an SSE-ish input is built from.
fn fragment() -> impl Strategy<Value = Vec<u8>> {
    const PIECES: &[&[u8]] = &[
        b"data: [DONE]",
        b"data:[DONE]",
        b"data:  [DONE]",
        b"data: {\"id\":\"chatcmpl-9\",\"choices\":[{\"delta\":{\"content\":\"[DONE]\"}}]}",
        b"data: {}",
        b"data: a",
        b"data: b",
        b"data: x",
        b"data:",
        b"data",
        b"data: [DO",
        b"data: NE]",
        b"data: [DONE]x",
        b"dataX: [DONE]",
        b"event: message_stop",
        b"event: message_sto",
        b"event: message",
        b"event: error",
        b"event: e",
        b"event:",
        b"event",
        b"event: response.completed",
        b"event: response.incomplete",
        b"event: response.failed",
        b"event: response.completedX",
        b"event: message_delta",
        b"id: 1",
        b"retry: 1000",
        b": [DONE]",
        b": keep-alive",
        b":",
        b"[DONE]",
        b"error",
        b"data: \xFF[DONE]",
        b" ",
        b"\xEF\xBB",
    ];
    const LINE_ENDS: &[&[u8]] = &[b"\n", b"\r", b"\r\n", b"\n\n", b"\r\n\r\n", b"\r\r"];
    let alphabet: Vec<u8> = b":\r\n \xEF\xBB\xBFdatevnr[DONE]x\xFF".to_vec();
    // Whole events, so that dispatches with a signal are common.
    const EVENTS: &[&[u8]] = &[
        b"data: [DONE]\n\n",
        b"data: [DONE]\r\n\r\n",
        b"data: a\ndata: b\r\r",
        b"data\n\n",
        b"event: error\ndata: {}\n\n",
        b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        b"event: response.completed\r\ndata: {}\r\n\r\n",
        b"event: response.failed\rdata: {}\r\r",
        b"event: response.incomplete\ndata: {}\n\n",
        b"event: message_sto\ndata: x\n\n",
        b"data: x\n\n",
    ];
    prop_oneof![
        3 => proptest::sample::select(EVENTS).prop_map(<[u8]>::to_vec),
        6 => proptest::sample::select(PIECES).prop_map(<[u8]>::to_vec),
        8 => proptest::sample::select(LINE_ENDS).prop_map(<[u8]>::to_vec),
        1 => Just(BOM.to_vec()),
        1 => proptest::collection::vec(any::<u8>(), 0..4),
        2 => proptest::collection::vec(proptest::sample::select(alphabet), 0..6),
    ]
}

/// An SSE-ish input: maybe a BOM (or part of one) first, then fragments.
fn input() -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::sample::select(&[0usize, 0, 0, 1, 2, 3, 3][..]),
        proptest::collection::vec(fragment(), 0..40),
    )
        .prop_map(|(bom, fragments)| {
            let mut bytes = BOM[..bom].to_vec();
            for f in fragments {
                bytes.extend_from_slice(&f);
            }
            bytes
        })
}

/// Sorted, distinct split points in `0..=len`.
fn split_points(points: &[Index], len: usize) -> Vec<usize> {
    let mut at: Vec<usize> = points.iter().map(|p| p.index(len + 1)).collect();
    at.sort_unstable();
    at.dedup();
    at
}

fn check_byte_by_byte(name: &str, rules: &SseRules, expected: &[Option<Signal>], input: &[u8]) {
    let mut scanner = SseScanner::new(rules.clone());
    let got: Vec<Option<Signal>> = input.iter().map(|b| scanner.feed(&[*b])).collect();
    assert_eq!(
        got,
        expected,
        "{name}: byte by byte on {:?}",
        String::from_utf8_lossy(input)
    );
}

fn check_chunks(
    name: &str,
    rules: &SseRules,
    expected: &[Option<Signal>],
    input: &[u8],
    at: &[usize],
) {
    let mut scanner = SseScanner::new(rules.clone());
    let mut from = 0;
    let mut all = None;
    for &to in at.iter().chain([&input.len()]) {
        let got = scanner.feed(&input[from..to]);
        let want = expected[from..to].iter().copied().max().flatten();
        assert_eq!(
            got,
            want,
            "{name}: chunk {from}..{to} of {:?} split at {at:?}",
            String::from_utf8_lossy(input)
        );
        all = all.max(got);
        from = to;
    }
    let whole = SseScanner::new(rules.clone()).feed(input);
    assert_eq!(all, whole, "{name}: split at {at:?} vs whole");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn scanner_matches_reference(
        input in input(),
        points in proptest::collection::vec(any::<Index>(), 0..8),
    ) {
        let at = split_points(&points, input.len());
        for (name, rules, model) in rule_sets() {
            let expected = reference(&model, &input);
            check_byte_by_byte(name, &rules, &expected, &input);
            check_chunks(name, &rules, &expected, &input, &at);
        }
    }
}

/// Every sequence of up to five tokens from a small alphabet that holds the hard parts
/// (BOM, CR and LF apart, the colon and space, a pattern, a field name), byte by byte
/// and in every 2-way split.
#[test]
fn exhaustive_short_token_sequences() {
    const TOKENS: &[&[u8]] = &[
        b"data",
        b":",
        b" ",
        b"[DONE]",
        b"\r",
        b"\n",
        BOM,
        b"event:error",
    ];
    let sets = rule_sets();
    let (name, rules, model) = &sets[4];
    let mut count = 0;
    for input in sluice_test_support::sequences::token_sequences(TOKENS, 5) {
        let expected = reference(model, &input);
        check_byte_by_byte(name, rules, &expected, &input);
        for k in 0..=input.len() {
            check_chunks(name, rules, &expected, &input, &[k]);
        }
        count += 1;
    }
    assert_eq!(count, (0..=5).map(|n| TOKENS.len().pow(n)).sum::<usize>());
}

/// The reference itself, on cases whose answer is known from SPEC section 2.
#[test]
fn reference_agrees_with_the_spec_examples() {
    let chat = RefRules::default().data("[DONE]", Done);
    let signals =
        |input: &[u8]| -> Vec<Signal> { reference(&chat, input).into_iter().flatten().collect() };
    assert_eq!(signals(b"data: [DONE]\n\n"), [Done]);
    assert_eq!(signals(b"\xEF\xBB\xBFdata:[DONE]\r\n\r\n"), [Done]);
    assert_eq!(signals(b"data: [DONE]\r\r"), [Done]);
    assert_eq!(signals(b"data: [DONE]\r\n"), []);
    assert_eq!(signals(b"data:  [DONE]\n\n"), []);
    assert_eq!(signals(b": [DONE]\n\n"), []);
    assert_eq!(signals(b"data: {\"text\":\"data: [DONE]\"}\n\n"), []);
    assert_eq!(signals(b"data: [DO\ndata: NE]\n\n"), []);
    assert_eq!(signals(b"\n\xEF\xBB\xBFdata: [DONE]\n\n"), []);
    let anthropic = RefRules::default()
        .event("message_stop", Done)
        .event("error", Failed);
    let signals = |input: &[u8]| -> Vec<Signal> {
        reference(&anthropic, input).into_iter().flatten().collect()
    };
    assert_eq!(signals(b"event: message_stop\n\n"), []);
    assert_eq!(
        signals(b"event: message_stop\ndata: {}\n\nevent: error\ndata:\n\n"),
        [Done, Failed]
    );
    assert_eq!(signals(b"event: error\n\ndata: {}\n\n"), []);
}
