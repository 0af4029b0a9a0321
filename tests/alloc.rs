//! SPEC section 1: "no heap allocation per stream in the core beyond what the caller
//! hands in". Counted, not assumed.
//!
//! The counter is the `allocation-counter` crate: linking it installs a counting
//! `#[global_allocator]` over `System`, and `measure` counts the allocations made *on
//! the calling thread* while a closure runs. Per-thread counting keeps the figures
//! exact under the parallel test harness (other tests, the harness's own threads). A
//! hand-written allocator is not possible here: it needs `unsafe impl GlobalAlloc`,
//! and the workspace lints `forbid` unsafe code in every target, tests included.
//!
//! Each case creates a tracked stream over an allocation-free inner stream with an
//! allocation-free recorder, polls it (to the end, or part way), drops or finishes it,
//! a hundred times over, and expects zero allocations; a deliberately allocating
//! recorder shows the counter counts in exactly this setting.

use std::cell::Cell;
use std::hint::black_box;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use allocation_counter::measure;
use futures_core::Stream;
use sluice::eventstream::EventStreamRules;
use sluice::ndjson::NdjsonRules;
use sluice::sse::SseRules;
use sluice::{Cause, Outcome, TrackedStream, Usage, Verdict};

// The frame encoder of the event-stream fuzz target.
#[allow(unreachable_pub, dead_code)]
#[path = "../fuzz/replay/eventstream_splits.rs"]
mod eventstream_splits;

/// An inner stream over borrowed chunks: yields them, then `None`. Allocates nothing.
struct Chunks<'a> {
    items: &'a [Result<&'static [u8], u8>],
}

impl Stream for Chunks<'_> {
    type Item = Result<&'static [u8], u8>;

    fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let (first, rest) = match self.items.split_first() {
            Some((first, rest)) => (Some(*first), rest),
            None => (None, self.items),
        };
        self.items = rest;
        Poll::Ready(first)
    }
}

const STREAMS: usize = 100;

const PLAIN: &[Result<&[u8], u8>] = &[Ok(b"hello"), Ok(b", "), Ok(b""), Ok(b"world")];

const CHAT: &[Result<&[u8], u8>] = &[
    Ok(b"data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n"),
    Ok(b": keep-alive\r\n\r\ndata: {\"text\":\"data: [DONE]\"}\n"),
    Ok(b"\ndata: [DO"),
    Ok(b"NE]\r"),
    Ok(b"\n\r\n"),
];

const ANTHROPIC: &[Result<&[u8], u8>] = &[
    Ok(b"event: message_start\ndata: {\"type\":\"message_start\"}\n\n"),
    Ok(b"event: content_block_delta\ndata: {\"delta\":{\"text\":\"Hi\"}}\n\n"),
    Ok(b"event: message_st"),
    Ok(b"op\ndata: {\"type\":\"message_stop\"}\n\n"),
];

const FAILED: &[Result<&[u8], u8>] = &[Ok(b"partial"), Err(3)];

/// How a stream is left.
#[derive(Debug, Clone, Copy)]
enum Leave {
    /// Polled to `None`, then dropped.
    DrainDrop,
    /// Polled to `None`, then finished.
    DrainFinish,
    /// Polled twice, then dropped (the client left).
    DropEarly,
}

/// Makes, drives and leaves `STREAMS` tracked streams inside `measure`; returns the
/// allocations counted and the last outcome recorded.
fn per_stream(
    items: &[Result<&'static [u8], u8>],
    rules: Option<&SseRules>,
    leave: Leave,
) -> (u64, Option<Outcome>) {
    let last = Cell::new(None);
    let records = Cell::new(0_usize);
    let info = measure(|| {
        for _ in 0..STREAMS {
            let recorder = |o: Outcome| {
                last.set(Some(o));
                records.set(records.get() + 1);
            };
            let mut tracked = TrackedStream::new(Chunks { items }, recorder);
            if let Some(rules) = rules {
                tracked = tracked.with_sse(rules.clone());
            }
            drive(&mut tracked, leave);
        }
    });
    assert_eq!(records.get(), STREAMS, "one record per stream");
    (info.count_total, last.get())
}

fn drive<S, R>(tracked: &mut TrackedStream<S, R>, leave: Leave)
where
    S: Stream<Item = Result<&'static [u8], u8>> + Unpin,
    R: sluice::Recorder + Unpin,
{
    let mut cx = Context::from_waker(Waker::noop());
    let polls = match leave {
        Leave::DrainDrop | Leave::DrainFinish => usize::MAX,
        Leave::DropEarly => 2,
    };
    for _ in 0..polls {
        match Pin::new(&mut *tracked).poll_next(&mut cx) {
            Poll::Ready(Some(item)) => drop(black_box(item)),
            Poll::Ready(None) => break,
            Poll::Pending => unreachable!("the inner stream is always ready"),
        }
    }
}

/// Runs `per_stream` and leaves the stream by value (drop or finish).
fn case(
    items: &[Result<&'static [u8], u8>],
    rules: Option<&SseRules>,
    leave: Leave,
) -> (u64, Option<Outcome>) {
    match leave {
        Leave::DrainDrop | Leave::DropEarly => per_stream(items, rules, leave),
        Leave::DrainFinish => {
            let last = Cell::new(None);
            let info = measure(|| {
                for _ in 0..STREAMS {
                    let mut tracked =
                        TrackedStream::new(Chunks { items }, |o: Outcome| last.set(Some(o)));
                    if let Some(rules) = rules {
                        tracked = tracked.with_sse(rules.clone());
                    }
                    drive(&mut tracked, leave);
                    black_box(tracked.finish());
                }
            });
            (info.count_total, last.get())
        }
    }
}

#[test]
fn the_counter_is_installed_and_counts_this_thread() {
    let info = measure(|| drop(black_box(Box::new(7_u64))));
    assert_eq!(info.count_total, 1);
    let info = measure(|| drop(black_box(vec![0_u8; 100])));
    assert_eq!((info.count_total, info.bytes_total), (1, 100));
}

#[test]
fn a_plain_tracked_stream_allocates_nothing() {
    for leave in [Leave::DrainDrop, Leave::DrainFinish, Leave::DropEarly] {
        let (allocs, last) = case(PLAIN, None, leave);
        assert_eq!(allocs, 0, "{leave:?}");
        let verdict = match leave {
            Leave::DropEarly => Verdict::Abandoned,
            Leave::DrainDrop | Leave::DrainFinish => Verdict::Success,
        };
        assert_eq!(last.map(|o| o.verdict), Some(verdict), "{leave:?}");
    }
    let (allocs, last) = case(FAILED, None, Leave::DrainDrop);
    assert_eq!(allocs, 0);
    assert_eq!(
        last,
        Some(Outcome::new(Verdict::Failure, Cause::ErrorItem, 1, 7))
    );
}

#[test]
fn sse_presets_allocate_nothing() {
    let presets = [
        ("openai_chat", SseRules::openai_chat(), CHAT),
        ("anthropic", SseRules::anthropic(), ANTHROPIC),
    ];
    for (name, rules, items) in &presets {
        for leave in [Leave::DrainDrop, Leave::DrainFinish, Leave::DropEarly] {
            let (allocs, last) = case(items, Some(rules), leave);
            assert_eq!(allocs, 0, "{name} {leave:?}");
            assert!(last.is_some(), "{name} {leave:?}");
        }
        // Drained or not, the in-band done decided: dropped after the last chunk
        // but before `None`, the stream is a success.
        let (allocs, last) = {
            let last = Cell::new(None);
            let info = measure(|| {
                for _ in 0..STREAMS {
                    let mut tracked =
                        TrackedStream::new(Chunks { items }, |o: Outcome| last.set(Some(o)))
                            .with_sse(rules.clone());
                    let mut cx = Context::from_waker(Waker::noop());
                    for _ in 0..items.len() {
                        let _ = Pin::new(&mut tracked).poll_next(&mut cx);
                    }
                }
            });
            (info.count_total, last.get())
        };
        assert_eq!(allocs, 0, "{name}");
        assert_eq!(last.map(|o| o.verdict), Some(Verdict::Success), "{name}");
    }
}

#[test]
fn custom_rules_allocate_once_not_per_stream() {
    let built = measure(|| {
        black_box(SseRules::openai_chat().done_on_event("finished"));
    });
    assert!(
        built.count_total > 0,
        "custom rules are expected to allocate"
    );
    let rules = SseRules::openai_chat().done_on_event("finished");
    let (allocs, last) = case(CHAT, Some(&rules), Leave::DrainDrop);
    assert_eq!(allocs, 0, "cloning shared rules per stream allocates");
    assert_eq!(last.map(|o| o.verdict), Some(Verdict::Success));
}

#[test]
fn an_allocating_recorder_is_counted() {
    let kept = std::cell::RefCell::new(Vec::with_capacity(STREAMS));
    let info = measure(|| {
        for _ in 0..STREAMS {
            // One `Box` per stream, handed to the outer vector (already sized).
            let recorder = |o: Outcome| kept.borrow_mut().push(Box::new(o));
            let mut tracked = TrackedStream::new(Chunks { items: CHAT }, recorder)
                .with_sse(SseRules::openai_chat());
            drive(&mut tracked, Leave::DrainDrop);
        }
    });
    assert_eq!(info.count_total, STREAMS as u64);
    assert_eq!(kept.borrow().len(), STREAMS);
}

const GEMINI: &[Result<&[u8], u8>] = &[
    Ok(b"data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hi\"}]}}],\"usageMeta"),
    Ok(b"data\":{\"promptTokenCount\":3,\"candidatesTokenCount\":1,\"thoughtsTokenCount\":4}}\r\n\r\n"),
    Ok(b"data: {\"candidates\":[{\"finishReason\":\"STOP\"}],\"usageMetadata\":{\"promptTokenCount\":3,\"candidatesTokenCount\":2,\"thoughtsTokenCount\":4}}\r\n\r\n"),
];

const COHERE: &[Result<&[u8], u8>] = &[
    Ok(b"event: content-delta\ndata: {\"type\":\"content-delta\",\"delta\":{\"message\":{\"content\":{\"text\":\"Hi\"}}}}\n\n"),
    Ok(b"event: message-end\ndata: {\"type\":\"message-end\",\"delta\":{\"finish_reason\":\"COMPLETE\",\"usage\":"),
    Ok(b"{\"billed_units\":{\"input_tokens\":1,\"output_tokens\":2},\"tokens\":{\"input_tokens\":3,\"output_tokens\":6}}}}\n\n"),
];

const OLLAMA: &[Result<&[u8], u8>] = &[
    Ok(b"{\"message\":{\"content\":\"Hi\"},\"done\":false}\n{\"done\":true,\"prompt_eval"),
    Ok(b"_count\":3,\"eval_count\":6}\n"),
];

/// The framing a usage case is tracked with.
#[derive(Debug, Clone)]
enum Framing {
    Sse(SseRules),
    Ndjson,
    EventStream,
}

/// Usage is read, by every framing, without allocating: per stream, a few words in
/// the scanner.
#[test]
fn usage_is_read_without_allocating() {
    // Bedrock frames (encoded once, here, outside the count), split inside the
    // metadata frame.
    let frames = [
        eventstream_splits::bedrock("event", "contentBlockDelta", r#"{"delta":{"text":"Hi"}}"#),
        eventstream_splits::bedrock("event", "messageStop", r#"{"stopReason":"end_turn"}"#),
        eventstream_splits::bedrock(
            "event",
            "metadata",
            r#"{"usage":{"inputTokens":3,"outputTokens":6},"metrics":{"latencyMs":5}}"#,
        ),
    ]
    .concat();
    let bytes: &'static [u8] = frames.leak();
    let (head, tail) = bytes.split_at(bytes.len() - 20);
    let bedrock: &[Result<&'static [u8], u8>] = &[Ok(head), Ok(tail)];
    let cases = [
        ("gemini", Framing::Sse(SseRules::gemini()), GEMINI),
        ("cohere", Framing::Sse(SseRules::cohere()), COHERE),
        ("ollama", Framing::Ndjson, OLLAMA),
        ("bedrock", Framing::EventStream, bedrock),
    ];
    for (name, framing, items) in &cases {
        let last = Cell::new(None);
        let info = measure(|| {
            for _ in 0..STREAMS {
                let tracked = TrackedStream::new(Chunks { items }, |o: Outcome| last.set(Some(o)));
                let mut tracked = match framing {
                    Framing::Sse(rules) => tracked.with_sse(rules.clone()),
                    Framing::Ndjson => tracked.with_ndjson(NdjsonRules::ollama()),
                    Framing::EventStream => tracked.with_eventstream(EventStreamRules::bedrock()),
                };
                drive(&mut tracked, Leave::DrainDrop);
            }
        });
        assert_eq!(info.count_total, 0, "{name}");
        let outcome = last.get().expect("recorded");
        assert_eq!(outcome.verdict, Verdict::Success, "{name}");
        assert_eq!(outcome.usage, Usage::new(Some(3), Some(6)), "{name}");
    }
}
