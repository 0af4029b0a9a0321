//! The JSON that the SSE property tests generate (`sse_error_objects.rs`,
//! `sse_preamble.rs`), written once: a value written with any whitespace between its
//! tokens, sometimes cut short or followed by something, and framed as events. Each
//! test brings its own values (the keys its rule looks at).
#![allow(dead_code, unreachable_pub)]

use proptest::prelude::*;
use serde_json::Value;

/// How one event's data ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The whole value.
    Whole,
    /// Cut short at a character boundary.
    Cut,
    /// The whole value, then ` x`.
    Garbage,
    /// Not the value: `[DONE]`.
    Done,
}

/// Data for one event: a value from `top`, written with whitespace drawn from
/// `spaces` between its tokens, ending as one of `endings` (drawn evenly: repeat an
/// ending to weigh it).
pub fn data(
    top: impl Strategy<Value = Value>,
    spaces: &'static [&'static str],
    endings: &'static [Ending],
) -> impl Strategy<Value = String> {
    let ws = prop::collection::vec(prop::sample::select(spaces), 64);
    // A `u8` range, as the tests drew it before this module: their regression seeds
    // still replay the same cases.
    let ending = (0..u8::try_from(endings.len()).expect("a few endings"))
        .prop_map(|i| endings[usize::from(i)]);
    (top, ws, ending, any::<prop::sample::Index>()).prop_map(|(value, ws, ending, cut)| {
        let mut out = String::new();
        write(&value, &mut ws.into_iter().cycle(), &mut out);
        match ending {
            Ending::Cut => {
                let at = cut.index(out.len() + 1);
                let at = (0..=at)
                    .rev()
                    .find(|&i| out.is_char_boundary(i))
                    .unwrap_or(0);
                out.truncate(at);
            }
            Ending::Garbage => out.push_str(" x"),
            Ending::Done => out = "[DONE]".to_owned(),
            Ending::Whole => {}
        }
        out
    })
}

/// Writes `value` with whitespace between tokens taken from `ws`.
pub fn write(value: &Value, ws: &mut impl Iterator<Item = &'static str>, out: &mut String) {
    fn gap(ws: &mut impl Iterator<Item = &'static str>, out: &mut String) {
        out.push_str(ws.next().unwrap_or(""));
    }
    match value {
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                gap(ws, out);
                write(item, ws, out);
                gap(ws, out);
            }
            out.push(']');
        }
        Value::Object(members) => {
            out.push('{');
            for (i, (k, v)) in members.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                gap(ws, out);
                out.push_str(&Value::from(k.as_str()).to_string());
                gap(ws, out);
                out.push(':');
                gap(ws, out);
                write(v, ws, out);
                gap(ws, out);
            }
            out.push('}');
        }
        leaf => out.push_str(&leaf.to_string()),
    }
}

/// One event per data: each line of the data its own `data:` field (so a newline in
/// the data is the LF that joins two fields), a blank line after it.
pub fn frame(events: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    for data in events {
        for line in data.split('\n') {
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(line.as_bytes());
            out.push(b'\n');
        }
        out.push(b'\n');
    }
    out
}
