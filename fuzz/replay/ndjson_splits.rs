//! Replays one split input against the NDJSON scanner: shared by the `ndjson_splits`
//! fuzz target and `cargo test` (tests/fuzz_new_scanners.rs).

use arbitrary::Arbitrary;
use sluice::Usage;
use sluice::ndjson::{NdjsonRules, NdjsonScanner};
use sluice::sse::Signal;

/// Lines (built from JSON-ish tokens, so that the walk gets past the first byte),
/// raw bytes after them, and where to cut the whole.
#[derive(Arbitrary, Debug)]
pub struct Input {
    pub rules: u8,
    pub lines: Vec<Vec<u8>>,
    pub raw: Vec<u8>,
    pub cuts: Vec<u16>,
}

const TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b"\\",
    b":",
    b",",
    b" ",
    b"\r",
    b"\n",
    b"\t",
    b"\"done\"",
    b"\"error\"",
    b"true",
    b"false",
    b"null",
    b"\"done\":true",
    b"\"error\":\"x\"",
    b"\"error\":null",
    b"\"message\":{\"content\":\"hi\"}",
    b"\"x\\\"done\\\":true\"",
    b"12",
    b"tru",
    b"nul",
    b"e",
    b"\"eval_count\":7",
    b"\"prompt_eval_count\":3",
    b"\"eval_count\"",
    b"18446744073709551616",
];

fn rules(pick: u8) -> NdjsonRules {
    match pick % 3 {
        0 => NdjsonRules::ollama(),
        1 => NdjsonRules::ollama().require_done(false),
        _ => NdjsonRules::empty(),
    }
}

/// The bytes: each line's tokens (a byte picks one), joined by LF, then `raw`.
pub fn bytes(input: &Input) -> Vec<u8> {
    let mut out = Vec::new();
    for line in &input.lines {
        for &t in line {
            out.extend_from_slice(TOKENS[usize::from(t) % TOKENS.len()]);
        }
        out.push(b'\n');
    }
    out.extend_from_slice(&input.raw);
    out
}

/// The strongest signal over a sequence of chunks, the progress counted and the
/// usage read.
fn scan<'a>(
    rules: NdjsonRules,
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> (Option<Signal>, u64, Usage) {
    let mut scanner = NdjsonScanner::new(rules);
    let signal = chunks.into_iter().map(|c| scanner.feed(c)).max().flatten();
    (signal, scanner.progress(), scanner.usage())
}

/// Panics unless every way of cutting the input gives the whole input's answer, and
/// that answer is what a line-by-line reading with `serde_json` gives on the lines
/// that are valid JSON objects.
pub fn replay(input: &Input) {
    let rules = rules(input.rules);
    let data = bytes(input);
    let data = &data[..];
    let whole = scan(rules, [data]);

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

    // Lines that end, each read on its own.
    let mut progress = 0;
    for line in data
        .split(|&b| b == b'\n')
        .take(data.split(|&b| b == b'\n').count() - 1)
    {
        if line.iter().all(|b| matches!(b, b' ' | b'\t' | b'\r')) {
            continue;
        }
        progress += 1;
        let mut one = NdjsonScanner::new(rules);
        let signal = one.feed(line).max(one.feed(b"\n"));
        if let Ok(serde_json::Value::Object(map)) =
            serde_json::from_slice::<serde_json::Value>(line)
        {
            if rules == NdjsonRules::empty() {
                assert_eq!((signal, one.usage()), (None, Usage::default()));
                continue;
            }
            // The counts, top-level integers in 0..=u64::MAX (a key given twice or
            // spelled with escapes is beyond the rule).
            let count = |key: &str| map.get(key).and_then(serde_json::Value::as_u64);
            let keys = ["\"prompt_eval_count\"", "\"eval_count\""];
            let plain = !line.windows(2).any(|w| w == b"\\u")
                && keys
                    .iter()
                    .all(|k| line.windows(k.len()).filter(|w| w == &k.as_bytes()).count() <= 1);
            if plain {
                let usage = Usage::new(count("prompt_eval_count"), count("eval_count"));
                assert_eq!(one.usage(), usage, "{:?}", String::from_utf8_lossy(line));
            }
            let failed = map.get("error").is_some_and(|e| !e.is_null());
            let done = map.get("done") == Some(&serde_json::Value::Bool(true));
            let expected = if failed {
                Some(Signal::Failed)
            } else if done {
                Some(Signal::Done)
            } else {
                None
            };
            // A key given twice is beyond the rule (serde_json keeps the last).
            let dupes = ["\"done\"", "\"error\""]
                .iter()
                .any(|k| line.windows(k.len()).filter(|w| w == &k.as_bytes()).count() > 1);
            if !dupes {
                assert_eq!(signal, expected, "{:?}", String::from_utf8_lossy(line));
            }
        }
    }
    assert_eq!(whole.1, progress, "progress");
}
