//! Replays one split input against the AWS event-stream scanner: shared by the
//! `eventstream_splits` fuzz target and `cargo test` (tests/fuzz_new_scanners.rs and,
//! for its frame encoder, tests/wire_corpus.rs).

use arbitrary::Arbitrary;
use sluice::Usage;
use sluice::eventstream::{EventStreamRules, EventStreamScanner};
use sluice::sse::Signal;

/// Frames to encode, then a byte to corrupt and raw bytes to append, and where to
/// cut the whole.
#[derive(Arbitrary, Debug)]
pub struct Input {
    pub frames: Vec<FrameSpec>,
    /// Flip the bits of `xor` in byte `at % len` (when `xor != 0`).
    pub corrupt: Option<(u16, u8)>,
    pub raw: Vec<u8>,
    pub cuts: Vec<u16>,
    pub require_done: bool,
}

/// One frame: its message type, its event (or exception) type, other headers, and
/// its payload.
#[derive(Arbitrary, Debug)]
pub struct FrameSpec {
    pub message_type: u8,
    pub event_type: u8,
    pub extra: Vec<(u8, u8, Vec<u8>)>,
    pub payload: Vec<u8>,
}

const MESSAGE_TYPES: &[&str] = &["event", "exception", "error", "eventx", "even", ""];
const EVENT_TYPES: &[&str] = &[
    "messageStart",
    "contentBlockDelta",
    "messageStop",
    "metadata",
    "messageStopx",
    "messageSto",
    "throttlingException",
];
const NAMES: &[&str] = &[
    ":content-type",
    ":message-type",
    ":event-type",
    ":exception-type",
    "x",
];

/// A header value of one of the format's types.
#[derive(Debug, Clone, Copy)]
pub enum Value<'a> {
    /// Types 0 and 1.
    Bool(bool),
    /// Types 2 (1 byte), 3 (2), 4 (4), 5 (8), 8 (timestamp, 8), 9 (uuid, 16): the type
    /// and its bytes.
    Fixed(u8, &'a [u8]),
    /// Type 6.
    Bytes(&'a [u8]),
    /// Type 7.
    Str(&'a [u8]),
}

/// CRC-32 (zlib's), bit by bit: independent of the scanner's table.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// One frame with these headers and payload, its prelude and CRCs right.
pub fn frame(headers: &[(&[u8], Value<'_>)], payload: &[u8]) -> Vec<u8> {
    let mut head = Vec::new();
    for (name, value) in headers {
        head.push(name.len() as u8);
        head.extend_from_slice(name);
        match *value {
            Value::Bool(b) => head.push(if b { 0 } else { 1 }),
            Value::Fixed(t, bytes) => {
                head.push(t);
                head.extend_from_slice(bytes);
            }
            Value::Bytes(bytes) | Value::Str(bytes) => {
                head.push(if matches!(value, Value::Str(_)) { 7 } else { 6 });
                head.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
                head.extend_from_slice(bytes);
            }
        }
    }
    let total = (16 + head.len() + payload.len()) as u32;
    let mut out = Vec::with_capacity(total as usize);
    out.extend_from_slice(&total.to_be_bytes());
    out.extend_from_slice(&(head.len() as u32).to_be_bytes());
    let prelude_crc = crc32(&out);
    out.extend_from_slice(&prelude_crc.to_be_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(payload);
    let crc = crc32(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

/// A Bedrock frame as the service sends it: `:event-type` (or `:exception-type`),
/// `:content-type`, `:message-type`, and the JSON payload.
#[allow(dead_code)] // used by tests/wire_corpus.rs, not by the fuzz target
pub fn bedrock(message_type: &str, event_type: &str, payload: &str) -> Vec<u8> {
    let kind: &[u8] = if message_type == "event" {
        b":event-type"
    } else {
        b":exception-type"
    };
    frame(
        &[
            (kind, Value::Str(event_type.as_bytes())),
            (b":content-type", Value::Str(b"application/json")),
            (b":message-type", Value::Str(message_type.as_bytes())),
        ],
        payload.as_bytes(),
    )
}

/// What a frame must say, by the rule: its signal, and whether it is preamble.
fn meaning(spec: &FrameSpec) -> (Option<Signal>, bool) {
    let mt = MESSAGE_TYPES[usize::from(spec.message_type) % MESSAGE_TYPES.len()];
    let et = EVENT_TYPES[usize::from(spec.event_type) % EVENT_TYPES.len()];
    match mt {
        "exception" | "error" => (Some(Signal::Failed), false),
        "event" if et == "messageStop" => (Some(Signal::Done), false),
        "event" => (None, et == "messageStart"),
        _ => (None, false),
    }
}

/// The frame's payload: a payload starting with `U` stands for Bedrock's usage, its
/// next bytes picking the numbers and the layout; any other is as it is.
fn payload(spec: &FrameSpec) -> Vec<u8> {
    let raw = &spec.payload[..spec.payload.len().min(2000)];
    let Some((b'U', rest)) = raw.split_first() else {
        return raw.to_vec();
    };
    let byte = |i: usize| rest.get(i).copied().unwrap_or(0);
    let number = |b: u8| match b % 8 {
        0 => "18446744073709551616".to_owned(),
        1 => "18446744073709551615".to_owned(),
        2 => "1.5".to_owned(),
        3 => "null".to_owned(),
        _ => (u64::from(b) * 37).to_string(),
    };
    let (input, output) = (number(byte(0)), number(byte(1)));
    let usage = match byte(2) % 4 {
        0 => format!(r#"{{"inputTokens":{input},"outputTokens":{output},"totalTokens":1}}"#),
        1 => format!(r#"{{ "outputTokens" : {output} }}"#),
        2 => format!(r#"{{"x":{{"outputTokens":{output}}},"inputTokens":{input}}}"#),
        _ => format!(r#"{{"inputTokens":{input}}}"#),
    };
    let json = match byte(3) % 4 {
        0 => format!(r#"{{"metrics":{{"latencyMs":5}},"usage":{usage},"p":"abc"}}"#),
        1 => format!(r#"{{"usage":{usage}}}"#),
        // Nested: not the payload's own.
        2 => format!(r#"{{"trace":{{"usage":{usage}}}}}"#),
        // Not one object.
        _ => format!(r#"{{"usage":{usage}}}x"#),
    };
    json.into_bytes()
}

/// The usage serde_json reads from a frame, by the rule, or `None` if it cannot
/// tell (the payload is JSON the walk is not held to: a key given twice, escapes).
fn usage_of(spec: &FrameSpec, payload: &[u8]) -> Option<Usage> {
    let mt = MESSAGE_TYPES[usize::from(spec.message_type) % MESSAGE_TYPES.len()];
    let et = EVENT_TYPES[usize::from(spec.event_type) % EVENT_TYPES.len()];
    if (mt, et) != ("event", "metadata") {
        return Some(Usage::default());
    }
    let Ok(serde_json::Value::Object(map)) = serde_json::from_slice(payload) else {
        // Not JSON: the walk reads nothing unless it could be (a walk, not a parser).
        return (!payload.windows(7).any(|w| w == b"\"usage\"")).then_some(Usage::default());
    };
    let keys = ["\"usage\"", "\"inputTokens\"", "\"outputTokens\""];
    let dupes = keys.iter().any(|k| {
        payload
            .windows(k.len())
            .filter(|w| w == &k.as_bytes())
            .count()
            > 1
    });
    if dupes || payload.contains(&b'\\') {
        return None;
    }
    let count = |key: &str| {
        map.get("usage")
            .and_then(|u| u.get(key))
            .and_then(serde_json::Value::as_u64)
    };
    Some(Usage::new(count("inputTokens"), count("outputTokens")))
}

fn encode(spec: &FrameSpec) -> Vec<u8> {
    let mt = MESSAGE_TYPES[usize::from(spec.message_type) % MESSAGE_TYPES.len()];
    let et = EVENT_TYPES[usize::from(spec.event_type) % EVENT_TYPES.len()];
    let mut headers: Vec<(&[u8], Value<'_>)> = Vec::new();
    // Other headers first, so the ones that count come last (a repeat wins).
    for (name, kind, value) in spec.extra.iter().take(50) {
        let name = NAMES[usize::from(*name) % NAMES.len()].as_bytes();
        if name == b":message-type" || name == b":event-type" {
            continue;
        }
        let value = &value[..value.len().min(300)];
        let v = match kind % 10 {
            0 => Value::Bool(true),
            1 => Value::Bool(false),
            2 => Value::Fixed(2, &[7]),
            3 => Value::Fixed(3, &[0, 7]),
            4 => Value::Fixed(4, &[0, 0, 0, 7]),
            5 => Value::Fixed(5, &[0; 8]),
            6 => Value::Bytes(value),
            8 => Value::Fixed(8, &[1; 8]),
            9 => Value::Fixed(9, &[2; 16]),
            _ => Value::Str(value),
        };
        headers.push((name, v));
    }
    headers.push((b":event-type", Value::Str(et.as_bytes())));
    if !mt.is_empty() {
        headers.push((b":message-type", Value::Str(mt.as_bytes())));
    }
    frame(&headers, &payload(spec))
}

/// What the scanner says after some chunks: the strongest signal, the progress,
/// whether it stands inside a frame, whether it failed, the usage.
type Answer = (Option<Signal>, u64, bool, bool, Usage);

fn scan<'a>(rules: EventStreamRules, chunks: impl IntoIterator<Item = &'a [u8]>) -> Answer {
    let mut scanner = EventStreamScanner::new(rules);
    let signal = chunks.into_iter().map(|c| scanner.feed(c)).max().flatten();
    (
        signal,
        scanner.progress(),
        scanner.is_inside_frame(),
        scanner.is_failed(),
        scanner.usage(),
    )
}

/// Panics unless every way of cutting the input gives the whole input's answer, and,
/// for well-formed frames, that answer is the frames' by the rule.
pub fn replay(input: &Input) {
    let rules = EventStreamRules::bedrock().require_done(input.require_done);
    let mut data = Vec::new();
    let mut expected = (None, 0u64);
    // The usage of the frames, while serde_json can tell it.
    let mut usage = Some(Usage::default());
    for spec in input.frames.iter().take(20) {
        data.extend_from_slice(&encode(spec));
        let (signal, preamble) = meaning(spec);
        expected.0 = expected.0.max(signal);
        if !(preamble && expected.1 == 0) {
            expected.1 += 1;
        }
        usage = usage
            .zip(usage_of(spec, &payload(spec)))
            .map(|(u, f)| u.updated(f));
    }
    let clean = data.len();
    let mut corrupted = false;
    if let Some((at, xor)) = input.corrupt {
        if xor != 0 && !data.is_empty() {
            let at = usize::from(at) % data.len();
            data[at] ^= xor;
            corrupted = true;
        }
    }
    data.extend_from_slice(&input.raw);
    let data = &data[..];
    let whole = scan(rules, [data]);

    if !corrupted {
        // The frames alone are read by the rule, whole and complete.
        let frames = scan(rules, [&data[..clean]]);
        let usage = usage.unwrap_or(frames.4);
        assert_eq!(
            frames,
            (expected.0, expected.1, false, false, usage),
            "frames"
        );
    } else {
        // A flipped bit anywhere in a frame is caught by a CRC (or a length).
        assert!(whole.3 || whole.2, "corruption not seen: {whole:?}");
    }

    let mut cuts: Vec<usize> = input
        .cuts
        .iter()
        .map(|&c| usize::from(c) % (data.len() + 1))
        .collect();
    cuts.sort_unstable();
    let pieces = cuts
        .iter()
        .copied()
        .chain([data.len()])
        .scan(0, |start, end| {
            Some(&data[core::mem::replace(start, end)..end])
        });
    assert_eq!(scan(rules, pieces), whole, "cut at {cuts:?}");
    assert_eq!(scan(rules, data.chunks(1)), whole, "byte by byte");
}
