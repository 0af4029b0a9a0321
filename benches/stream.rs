//! What `TrackedStream` costs, per chunk and per stream, with its baselines measured in
//! the same run.
//!
//! `cargo bench --bench stream`. Every contender is drained by the same manual poll
//! loop with a no-op waker (no runtime):
//!
//! * `raw`: the inner stream alone (a cursor over pre-cut chunks, allocation-free);
//! * `tracked`: the same stream in a `TrackedStream` with a closure recorder;
//! * `tracked_sse`: the same, with `SseRules::openai_chat()` scanning every chunk
//!   (the chunks are a real Chat Completions stream cut into pieces);
//! * `boxed_baseline`: shaped like the reference gateway's wrapper: the inner stream
//!   as `Pin<Box<dyn Stream + Send>>`, an `Arc<dyn Trait>` recorder and a `String`
//!   worker id per stream, the same counting and end tracking, recording on `Drop`.
//!
//! Both recorders do the same work (one relaxed atomic add), so what differs is the
//! wrapper. Three groups: 10,000 chunks of 64 bytes and 256 chunks of 1 KiB (figures
//! per chunk: `Throughput::Elements` is the chunk count), and 4-chunk streams of 64
//! bytes, where each iteration creates, drains and drops one stream (figures per
//! stream).

use std::convert::Infallible;
use std::hint::black_box;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures_core::Stream;
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

/// The reference gateway's recorder: a shared trait object keyed by worker id.
trait RecordSink: Send + Sync {
    fn record(&self, worker: &str, verdict: Verdict, chunks: u64, bytes: u64);
}

struct Counter(AtomicU64);

impl RecordSink for Counter {
    fn record(&self, worker: &str, _: Verdict, chunks: u64, _: u64) {
        black_box(worker);
        self.0.fetch_add(chunks, Ordering::Relaxed);
    }
}

/// The baseline wrapper: boxed inner stream, `Arc<dyn _>` recorder, owned worker id.
struct Boxed<'a> {
    inner: Pin<Box<dyn Stream<Item = Item<'a>> + Send + 'a>>,
    recorder: Arc<dyn RecordSink>,
    worker: String,
    ended: bool,
    errored: bool,
    chunks: u64,
    bytes: u64,
}

impl<'a> Boxed<'a> {
    fn new(inner: Raw<'a>, recorder: &Arc<dyn RecordSink>, worker: &str) -> Self {
        Self {
            inner: Box::pin(inner),
            recorder: Arc::clone(recorder),
            worker: worker.to_string(),
            ended: false,
            errored: false,
            chunks: 0,
            bytes: 0,
        }
    }
}

impl<'a> Stream for Boxed<'a> {
    type Item = Item<'a>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item<'a>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let poll = self.inner.as_mut().poll_next(cx);
        match &poll {
            Poll::Ready(Some(Ok(chunk))) => {
                self.chunks += 1;
                self.bytes += chunk.len() as u64;
            }
            Poll::Ready(Some(Err(_))) => self.errored = true,
            Poll::Ready(None) => self.ended = true,
            Poll::Pending => {}
        }
        poll
    }
}

impl Drop for Boxed<'_> {
    fn drop(&mut self) {
        let verdict = match (self.errored, self.ended) {
            (true, _) => Verdict::Failure,
            (false, true) => Verdict::Success,
            (false, false) => Verdict::Abandoned,
        };
        self.recorder
            .record(&self.worker, verdict, self.chunks, self.bytes);
    }
}

/// A Chat Completions stream of at least `size` bytes, `data: [DONE]` at the end.
fn chat_stream(size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size + 64);
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

/// One group: every contender drains `count` chunks of `size` bytes.
fn chunks_group(c: &mut Criterion, name: &str, count: usize, size: usize) {
    let input = chat_stream(count * size);
    let chunks: Vec<&[u8]> = input.chunks(size).collect();
    assert_eq!(chunks.len(), count);
    let sink = AtomicU64::new(0);
    let shared: Arc<dyn RecordSink> = Arc::new(Counter(AtomicU64::new(0)));
    let record = |o: Outcome| {
        sink.fetch_add(o.chunks, Ordering::Relaxed);
    };

    // Each contender gives the expected answer before it is timed.
    let seen = Arc::new(std::sync::Mutex::new(None));
    {
        let seen = seen.clone();
        let mut s = TrackedStream::new(Raw { chunks: &chunks }, move |o: Outcome| {
            *seen.lock().expect("unpoisoned") = Some(o);
        })
        .with_sse(SseRules::openai_chat());
        assert_eq!(drain(Pin::new(&mut s)), input.len());
    }
    let expected = Outcome::new(
        Verdict::Success,
        Cause::Done,
        count as u64,
        input.len() as u64,
    )
    .with_progress(progress(&chunks));
    assert_eq!(*seen.lock().expect("unpoisoned"), Some(expected));

    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(count as u64));
    group.bench_function("raw", |b| {
        b.iter(|| drain(Pin::new(&mut Raw { chunks: &chunks })))
    });
    group.bench_function("tracked", |b| {
        b.iter(|| {
            let mut s = TrackedStream::new(Raw { chunks: &chunks }, record);
            drain(Pin::new(&mut s))
        })
    });
    group.bench_function("tracked_sse", |b| {
        b.iter(|| {
            let mut s = TrackedStream::new(Raw { chunks: &chunks }, record)
                .with_sse(SseRules::openai_chat());
            drain(Pin::new(&mut s))
        })
    });
    group.bench_function("boxed_baseline", |b| {
        b.iter(|| {
            let mut s = Boxed::new(Raw { chunks: &chunks }, &shared, "worker-07");
            drain(Pin::new(&mut s))
        })
    });
    group.finish();
}

fn per_chunk(c: &mut Criterion) {
    chunks_group(c, "stream_10000x64B", 10_000, 64);
    chunks_group(c, "stream_256x1KiB", 256, 1024);
}

/// 4-chunk streams: creating, draining and dropping one stream per iteration.
fn per_stream(c: &mut Criterion) {
    let input = chat_stream(4 * 64);
    let chunks: Vec<&[u8]> = input.chunks(64).collect();
    assert_eq!(chunks.len(), 4);
    let sink = AtomicU64::new(0);
    let shared: Arc<dyn RecordSink> = Arc::new(Counter(AtomicU64::new(0)));
    let record = |o: Outcome| {
        sink.fetch_add(o.chunks, Ordering::Relaxed);
    };

    let mut group = c.benchmark_group("stream_4x64B_per_stream");
    group.throughput(Throughput::Elements(1));
    group.bench_function("raw", |b| {
        b.iter(|| {
            drain(Pin::new(&mut Raw {
                chunks: black_box(&chunks),
            }))
        })
    });
    group.bench_function("tracked", |b| {
        b.iter(|| {
            let mut s = TrackedStream::new(
                Raw {
                    chunks: black_box(&chunks),
                },
                record,
            );
            drain(Pin::new(&mut s))
        })
    });
    group.bench_function("tracked_sse", |b| {
        b.iter(|| {
            let mut s = TrackedStream::new(
                Raw {
                    chunks: black_box(&chunks),
                },
                record,
            )
            .with_sse(SseRules::openai_chat());
            drain(Pin::new(&mut s))
        })
    });
    group.bench_function("boxed_baseline", |b| {
        b.iter(|| {
            let mut s = Boxed::new(
                Raw {
                    chunks: black_box(&chunks),
                },
                &shared,
                "worker-07",
            );
            drain(Pin::new(&mut s))
        })
    });
    group.finish();
    assert!(sink.load(Ordering::Relaxed) > 0);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = per_chunk, per_stream
}
criterion_main!(benches);

/// The progress events of the stream, as a scanner alone counts them.
fn progress(chunks: &[&[u8]]) -> u64 {
    let mut scanner = sluice::sse::SseScanner::new(SseRules::openai_chat());
    for chunk in chunks {
        scanner.feed(chunk);
    }
    scanner.progress()
}
