//! Replays one split input against the SSE scanner: shared by the `sse_splits` fuzz
//! target and `cargo test` (tests/fuzz_replay.rs).

use arbitrary::Arbitrary;
use sluice::sse::{Signal, SseRules, SseScanner};

/// Bytes, where to cut them, and which rules to scan with.
#[derive(Arbitrary, Debug)]
pub struct Input {
    pub rules: u8,
    pub cuts: Vec<u16>,
    pub data: Vec<u8>,
}

fn rules(pick: u8) -> SseRules {
    match pick % 6 {
        0 => SseRules::openai_chat(),
        1 => SseRules::openai_responses(),
        2 => SseRules::anthropic(),
        3 => SseRules::empty(),
        4 => SseRules::openai_chat()
            .keep_alive_on_event("ping")
            .failed_on_event("error"),
        _ => SseRules::anthropic()
            .done_on_data("[DONE]")
            .failed_on_data("[DONE]x")
            .done_on_data("a\nb")
            .done_on_event("message")
            .failed_on_event("")
            .failed_on_error_object(true),
    }
}

/// The strongest signal over a sequence of chunks, and the progress counted.
fn scan<'a>(
    rules: &SseRules,
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> (Option<Signal>, u64) {
    let mut scanner = SseScanner::new(rules.clone());
    let signal = chunks.into_iter().map(|c| scanner.feed(c)).max().flatten();
    (signal, scanner.progress())
}

/// Panics unless every way of cutting the input gives the whole input's answer: the
/// same signal and the same progress.
pub fn replay(input: &Input) {
    let rules = rules(input.rules);
    let data = &input.data[..];
    let whole = scan(&rules, [data]);

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
    assert_eq!(scan(&rules, pieces), whole, "cut at {cuts:?}");
    assert_eq!(scan(&rules, data.chunks(1)), whole, "byte by byte");
}
