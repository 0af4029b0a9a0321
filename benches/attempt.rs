//! What the hold-back of `sluice::attempt` costs once the attempt has committed: the
//! per-chunk cost of polling a committed `Attempt` against the same `TrackedStream`
//! alone, in the same run (issue 17: within 1 ns per chunk).
//!
//! `cargo bench --bench attempt`. Every contender is drained by the same manual poll
//! loop with a no-op waker (no runtime), over an OpenAI Chat Completions stream (the
//! role chunk, then one `chat.completion.chunk` per token, then `data: [DONE]`) cut
//! into 10,000 chunks of 64 bytes:
//!
//! * `tracked_sse`: a `TrackedStream` with `SseRules::openai_chat()`, polled out of
//!   line (see `*_polled` below);
//! * `attempt_sse`: the same stream in an `Attempt` (64 KiB bound): `commit()` reads
//!   past the preamble to the first token (a few chunks held), then the drain yields
//!   the held chunks and the rest, polled out of line;
//! * `tracked` and `attempt`: the same without SSE rules (every chunk is progress:
//!   the attempt commits on the first chunk);
//! * `tracked_polled` and `attempt_polled`: the same as those two, every poll made
//!   through a function that is not inlined (`poll_once`), as a server polls a
//!   response body. In the inlined loop the compiler may fold the tracked stream's
//!   unused SSE code away where it sees the stream built, which it cannot do across the
//!   attempt's out-of-line commit (see the body wrapper's section of BENCHMARKS.md):
//!   the polled pair is the shape a gateway runs.
//!
//! Each iteration creates, commits, drains and drops one stream; the figures are per
//! chunk (`Throughput::Elements` is the chunk count), so the commit and the one
//! allocation of the held queue are spread over 10,000 chunks.

use std::convert::Infallible;
use std::hint::black_box;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures_core::Stream;
use sluice::attempt::{Attempt, Commit};
use sluice::sse::SseRules;
use sluice::{Cause, Outcome, TrackedStream, Verdict};

type Item<'a> = Result<&'a [u8], Infallible>;

/// The inner stream: yields pre-cut chunks, then `None`.
struct Raw<'a> {
    chunks: &'a [&'a [u8]],
}

impl<'a> Stream for Raw<'a> {
    type Item = Item<'a>;

    #[inline]
    fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Item<'a>>> {
        match self.chunks.split_first() {
            Some((first, rest)) => {
                self.chunks = rest;
                Poll::Ready(Some(Ok(*first)))
            }
            None => Poll::Ready(None),
        }
    }
}

/// Polls to the end with a no-op waker; returns the bytes seen.
#[inline]
fn drain<'a, S: Stream<Item = Item<'a>>>(mut stream: Pin<&mut S>) -> usize {
    let mut cx = Context::from_waker(Waker::noop());
    let mut bytes = 0;
    loop {
        match stream.as_mut().poll_next(&mut cx) {
            Poll::Ready(Some(Ok(chunk))) => bytes += black_box(chunk).len(),
            Poll::Ready(None) => return bytes,
            Poll::Ready(Some(Err(e))) => match e {},
            Poll::Pending => unreachable!("always ready"),
        }
    }
}

/// One iteration, out of line, so that a profiler counts iterations by its calls
/// (`valgrind --tool=callgrind`); what `run` does is inlined in it as it would be in
/// the bench's closure.
#[inline(never)]
fn one<T>(run: impl FnOnce() -> T) -> T {
    run()
}

/// One poll of `s`, out of line: as a server polls a response body.
#[inline(never)]
fn poll_once<'a, S: Stream<Item = Item<'a>>>(
    s: Pin<&mut S>,
    cx: &mut Context<'_>,
) -> Poll<Option<Item<'a>>> {
    s.poll_next(cx)
}

/// `drain`, every poll through `poll_once`.
#[inline]
fn drain_polled<'a, S: Stream<Item = Item<'a>>>(mut stream: Pin<&mut S>) -> usize {
    let mut cx = Context::from_waker(Waker::noop());
    let mut bytes = 0;
    loop {
        match poll_once(stream.as_mut(), &mut cx) {
            Poll::Ready(Some(Ok(chunk))) => bytes += black_box(chunk).len(),
            Poll::Ready(None) => return bytes,
            Poll::Ready(Some(Err(e))) => match e {},
            Poll::Pending => unreachable!("always ready"),
        }
    }
}

/// Commits `attempt` (always ready), then drains it with `drain`; returns the bytes
/// seen.
#[inline]
fn commit_and<'a, S, R>(
    mut attempt: Pin<&mut Attempt<S, R>>,
    drain: impl FnOnce(Pin<&mut Attempt<S, R>>) -> usize,
) -> (Commit, usize)
where
    S: Stream<Item = Item<'a>>,
    R: sluice::Recorder,
{
    let mut cx = Context::from_waker(Waker::noop());
    let commit = match attempt.as_mut().poll_commit(&mut cx) {
        Poll::Ready(Ok(commit)) => commit,
        Poll::Ready(Err(failed)) => panic!("the attempt failed: {failed:?}"),
        Poll::Pending => unreachable!("always ready"),
    };
    (commit, drain(attempt))
}

/// A Chat Completions stream of `size` bytes: the role chunk (the preamble), tokens,
/// `data: [DONE]` at the end.
fn chat_stream(size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size + 256);
    out.extend_from_slice(
        b"data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1741569952,\
          \"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
    );
    let mut i = 0_u64;
    while out.len() < size {
        out.extend_from_slice(
            format!(
                "data: {{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":{},\
                 \"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"tok{i}\"}}}}]}}\n\n",
                1_741_569_952 + i / 40
            )
            .as_bytes(),
        );
        i += 1;
    }
    // End whatever event was cut, then the done event.
    const TAIL: &[u8] = b"\n\ndata: [DONE]\n\n";
    out.truncate(size - TAIL.len());
    out.extend_from_slice(TAIL);
    out
}

/// One group: the four contenders drain `count` chunks of `size` bytes.
fn chunks_group(c: &mut Criterion, name: &str, count: usize, size: usize) {
    const LIMIT: usize = 64 * 1024;
    let input = chat_stream(count * size);
    let chunks: Vec<&[u8]> = input.chunks(size).collect();
    assert_eq!(chunks.len(), count);
    let sink = AtomicU64::new(0);
    let record = |o: Outcome| {
        sink.fetch_add(o.chunks, Ordering::Relaxed);
    };

    // Each contender gives the expected answer before it is timed: the same bytes,
    // the same verdict, and the attempts commit where the rules say.
    let expected = Outcome::new(
        Verdict::Success,
        Cause::Done,
        count as u64,
        input.len() as u64,
    );
    for sse in [false, true] {
        let seen = std::sync::Mutex::new(Vec::new());
        let rec = |o: Outcome| seen.lock().expect("unpoisoned").push(o);
        let tracked = |sse: bool| {
            let s = TrackedStream::new(Raw { chunks: &chunks }, rec);
            if sse {
                s.with_sse(SseRules::openai_chat())
            } else {
                s
            }
        };
        assert_eq!(drain(pin!(tracked(sse))), input.len());
        let (commit, bytes) = commit_and(pin!(Attempt::new(tracked(sse), LIMIT)), drain);
        assert_eq!((commit, bytes), (Commit::Progress, input.len()));
        let seen = seen.lock().expect("unpoisoned");
        let want = if sse {
            // The progress events, as a scanner alone counts them.
            let mut scanner = sluice::sse::SseScanner::new(SseRules::openai_chat());
            for chunk in &chunks {
                scanner.feed(chunk);
            }
            expected.with_progress(scanner.progress())
        } else {
            Outcome::new(
                Verdict::Success,
                Cause::End,
                expected.chunks,
                expected.bytes,
            )
        };
        assert_eq!(seen.as_slice(), [want, want]);
    }

    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(count as u64));
    group.bench_function("tracked", |b| {
        b.iter(|| one(|| drain(pin!(TrackedStream::new(Raw { chunks: &chunks }, record)))))
    });
    group.bench_function("attempt", |b| {
        b.iter(|| {
            one(|| {
                let tracked = TrackedStream::new(Raw { chunks: &chunks }, record);
                commit_and(pin!(Attempt::new(tracked, LIMIT)), drain)
            })
        })
    });
    group.bench_function("tracked_polled", |b| {
        b.iter(|| one(|| drain_polled(pin!(TrackedStream::new(Raw { chunks: &chunks }, record)))))
    });
    group.bench_function("attempt_polled", |b| {
        b.iter(|| {
            one(|| {
                let tracked = TrackedStream::new(Raw { chunks: &chunks }, record);
                commit_and(pin!(Attempt::new(tracked, LIMIT)), drain_polled)
            })
        })
    });
    group.bench_function("tracked_sse", |b| {
        b.iter(|| {
            one(|| {
                let tracked = TrackedStream::new(Raw { chunks: &chunks }, record)
                    .with_sse(SseRules::openai_chat());
                drain_polled(pin!(tracked))
            })
        })
    });
    group.bench_function("attempt_sse", |b| {
        b.iter(|| {
            one(|| {
                let tracked = TrackedStream::new(Raw { chunks: &chunks }, record)
                    .with_sse(SseRules::openai_chat());
                commit_and(pin!(Attempt::new(tracked, LIMIT)), drain_polled)
            })
        })
    });
    group.finish();
    assert!(sink.load(Ordering::Relaxed) > 0);
}

fn per_chunk(c: &mut Criterion) {
    chunks_group(c, "attempt_10000x64B", 10_000, 64);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = per_chunk
}
criterion_main!(benches);
