//! What `TrackedBody` costs per data frame and per body, beside `TrackedStream` over an
//! equivalent stream, in the same run.
//!
//! `cargo bench -p sluice-http --bench body`. Every contender is drained by a manual
//! poll loop with a no-op waker (no runtime):
//!
//! * `body_raw`: an `http_body::Body` over pre-cut chunks (`Frame<&[u8]>`,
//!   allocation-free; `is_end_stream()` turns true after the last frame);
//! * `body_tracked`, `body_tracked_sse`: the same body in a `TrackedBody` with a
//!   closure recorder, without and with `SseRules::openai_chat()`;
//! * `body_counting_baseline`: the least any body wrapper with the same duties does: a
//!   hand-written wrapper that counts data frames and bytes, asks `is_end_stream()`
//!   after each data frame, fuses at the end and reports once (no verdict machine);
//!   what it costs over `body_raw` is the price of wrapping an `http_body::Body` (a
//!   `Frame` is about a hundred bytes, a stream item sixteen);
//! * `stream_raw`, `stream_tracked`, `stream_tracked_sse`: the same chunks as a
//!   `Stream<Item = Result<&[u8], Infallible>>`, bare and in a `TrackedStream`;
//! * `body_raw_polled`, `stream_raw_polled`, `body_tracked_polled`,
//!   `stream_tracked_polled`: the raw and tracked contenders with each poll made by a
//!   function that is not inlined, as a server polls a body. The loops above inline
//!   the wrapper into the loop (the stream's whole drain loop is inlined into the
//!   bench, where the compiler sees that no SSE rules are set, drops that code and
//!   keeps the wrapper's state in registers); these show the per-poll cost where the
//!   state lives in memory and the rules are not known, as in a server.
//!
//! The chunks are a real Chat Completions stream cut into pieces. Groups: 10,000
//! chunks of 64 bytes and 256 chunks of 1 KiB (figures per chunk), and 4-chunk bodies
//! of 64 bytes, each iteration creating, draining and dropping one (figures per body).

use std::convert::Infallible;
use std::hint::black_box;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures_core::Stream;
use http_body::{Body, Frame};
use sluice::sse::SseRules;
use sluice::{Cause, Outcome, TrackedStream, Verdict};
use sluice_http::TrackedBody;

/// The inner body: yields pre-cut chunks as data frames, then `None`.
struct RawBody<'a> {
    chunks: &'a [&'a [u8]],
}

impl<'a> Body for RawBody<'a> {
    type Data = &'a [u8];
    type Error = Infallible;

    #[inline]
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<&'a [u8]>, Infallible>>> {
        match self.chunks.split_first() {
            Some((first, rest)) => {
                self.chunks = rest;
                Poll::Ready(Some(Ok(Frame::data(*first))))
            }
            None => Poll::Ready(None),
        }
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
    }
}

pin_project_lite::pin_project! {
    /// The baseline wrapper: counts, checks for the end, fuses, reports once.
    struct Counting<'s, B> {
        #[pin]
        inner: B,
        chunks: u64,
        bytes: u64,
        ended: bool,
        sink: &'s AtomicU64,
    }
}

impl<'s, B> Counting<'s, B> {
    fn new(inner: B, sink: &'s AtomicU64) -> Self {
        Self {
            inner,
            chunks: 0,
            bytes: 0,
            ended: false,
            sink,
        }
    }
}

impl<'s, 'a, B: Body<Data = &'a [u8]>> Body for Counting<'s, B> {
    type Data = &'a [u8];
    type Error = B::Error;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<&'a [u8]>, B::Error>>> {
        let mut this = self.project();
        if *this.ended {
            return Poll::Ready(None);
        }
        let poll = this.inner.as_mut().poll_frame(cx);
        let end = match &poll {
            Poll::Ready(Some(Ok(frame))) => match frame.data_ref() {
                Some(data) => {
                    *this.chunks += 1;
                    *this.bytes += data.len() as u64;
                    this.inner.is_end_stream()
                }
                None => true,
            },
            Poll::Ready(None) => true,
            _ => false,
        };
        if end {
            *this.ended = true;
            this.sink.fetch_add(*this.chunks, Ordering::Relaxed);
        }
        poll
    }
}

/// The inner stream: the same chunks.
struct RawStream<'a> {
    chunks: &'a [&'a [u8]],
}

impl<'a> Stream for RawStream<'a> {
    type Item = Result<&'a [u8], Infallible>;

    #[inline]
    fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.chunks.split_first() {
            Some((first, rest)) => {
                self.chunks = rest;
                Poll::Ready(Some(Ok(*first)))
            }
            None => Poll::Ready(None),
        }
    }
}

/// What a poll of one of the bench's bodies gives.
type FramePoll<'a> = Poll<Option<Result<Frame<&'a [u8]>, Infallible>>>;

/// Polls `body` to its end with `poll` and a no-op waker; returns the bytes seen.
#[inline]
fn drain_body_with<'a, B, P>(mut body: Pin<&mut B>, mut poll: P) -> usize
where
    B: Body<Data = &'a [u8], Error = Infallible>,
    P: FnMut(Pin<&mut B>, &mut Context<'_>) -> FramePoll<'a>,
{
    let mut cx = Context::from_waker(Waker::noop());
    let mut bytes = 0;
    loop {
        match poll(body.as_mut(), &mut cx) {
            // As hyper's encoder does: take the data out of the frame (dropping a
            // `Frame` whose kind the optimizer cannot see calls its drop glue, a
            // `HeaderMap`'s, out of line).
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => bytes += black_box(data).len(),
                Err(other) => drop(black_box(other)),
            },
            Poll::Ready(None) => return bytes,
            Poll::Ready(Some(Err(e))) => match e {},
            Poll::Pending => unreachable!("always ready"),
        }
    }
}

/// Polls `s` to its end with `poll`, as `drain_body_with`.
#[inline]
fn drain_stream_with<'a, S, P>(mut s: Pin<&mut S>, mut poll: P) -> usize
where
    S: Stream<Item = Result<&'a [u8], Infallible>>,
    P: FnMut(Pin<&mut S>, &mut Context<'_>) -> Poll<Option<S::Item>>,
{
    let mut cx = Context::from_waker(Waker::noop());
    let mut bytes = 0;
    loop {
        match poll(s.as_mut(), &mut cx) {
            Poll::Ready(Some(Ok(chunk))) => bytes += black_box(chunk).len(),
            Poll::Ready(None) => return bytes,
            Poll::Ready(Some(Err(e))) => match e {},
            Poll::Pending => unreachable!("always ready"),
        }
    }
}

#[inline]
fn drain_body<'a, B: Body<Data = &'a [u8], Error = Infallible>>(body: Pin<&mut B>) -> usize {
    drain_body_with(body, |b, cx| b.poll_frame(cx))
}

#[inline]
fn drain_stream<'a, S: Stream<Item = Result<&'a [u8], Infallible>>>(s: Pin<&mut S>) -> usize {
    drain_stream_with(s, |s, cx| s.poll_next(cx))
}

/// One poll of `body`, out of line: as a server polls a response body (hyper's encoder
/// calls `poll_frame` from its own code, which inlines neither the body nor the loop).
#[inline(never)]
fn poll_body_once<'a, B: Body<Data = &'a [u8], Error = Infallible>>(
    body: Pin<&mut B>,
    cx: &mut Context<'_>,
) -> FramePoll<'a> {
    body.poll_frame(cx)
}

/// One poll of `s`, out of line, as `poll_body_once`.
#[inline(never)]
fn poll_stream_once<'a, S: Stream<Item = Result<&'a [u8], Infallible>>>(
    s: Pin<&mut S>,
    cx: &mut Context<'_>,
) -> Poll<Option<S::Item>> {
    s.poll_next(cx)
}

/// A Chat Completions stream of exactly `size` bytes, `data: [DONE]` at the end.
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
    const TAIL: &[u8] = b"\n\ndata: [DONE]\n\n";
    out.truncate(size - TAIL.len());
    out.extend_from_slice(TAIL);
    out
}

fn contenders(c: &mut Criterion, name: &str, chunks: &[&[u8]], elements: u64) {
    let sink = AtomicU64::new(0);
    let record = |o: Outcome| {
        sink.fetch_add(o.chunks, Ordering::Relaxed);
    };
    let total: usize = chunks.iter().map(|c| c.len()).sum();

    // The body gives the expected answer before it is timed.
    let seen = std::cell::Cell::new(None);
    {
        let mut body = TrackedBody::new(RawBody { chunks }, |o: Outcome| seen.set(Some(o)))
            .with_sse(SseRules::openai_chat());
        assert_eq!(drain_body(Pin::new(&mut body)), total);
    }
    let want = Outcome::new(
        Verdict::Success,
        Cause::Done,
        chunks.len() as u64,
        total as u64,
    )
    .with_progress(progress(chunks));
    assert_eq!(seen.get(), Some(want));

    // Each iteration builds its contender from the same chunks (hidden from the
    // compiler) and drains it.
    let body = || RawBody {
        chunks: black_box(chunks),
    };
    let stream = || RawStream {
        chunks: black_box(chunks),
    };
    let sse = SseRules::openai_chat;
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(elements));
    group.bench_function("body_raw", |b| b.iter(|| drain_body(pin!(body()))));
    group.bench_function("body_tracked", |b| {
        b.iter(|| drain_body(pin!(TrackedBody::new(body(), record))))
    });
    group.bench_function("body_tracked_sse", |b| {
        b.iter(|| drain_body(pin!(TrackedBody::new(body(), record).with_sse(sse()))))
    });
    group.bench_function("body_counting_baseline", |b| {
        b.iter(|| drain_body(pin!(Counting::new(body(), &sink))))
    });
    group.bench_function("stream_raw", |b| b.iter(|| drain_stream(pin!(stream()))));
    group.bench_function("stream_tracked", |b| {
        b.iter(|| drain_stream(pin!(TrackedStream::new(stream(), record))))
    });
    group.bench_function("stream_tracked_sse", |b| {
        b.iter(|| drain_stream(pin!(TrackedStream::new(stream(), record).with_sse(sse()))))
    });
    group.bench_function("body_raw_polled", |b| {
        b.iter(|| drain_body_with(pin!(body()), poll_body_once))
    });
    group.bench_function("stream_raw_polled", |b| {
        b.iter(|| drain_stream_with(pin!(stream()), poll_stream_once))
    });
    group.bench_function("body_tracked_polled", |b| {
        b.iter(|| drain_body_with(pin!(TrackedBody::new(body(), record)), poll_body_once))
    });
    group.bench_function("stream_tracked_polled", |b| {
        b.iter(|| drain_stream_with(pin!(TrackedStream::new(stream(), record)), poll_stream_once))
    });
    group.finish();
}

fn per_frame(c: &mut Criterion) {
    for (name, count, size) in [("body_10000x64B", 10_000, 64), ("body_256x1KiB", 256, 1024)] {
        let input = chat_stream(count * size);
        let chunks: Vec<&[u8]> = input.chunks(size).collect();
        assert_eq!(chunks.len(), count);
        contenders(c, name, &chunks, count as u64);
    }
}

fn per_body(c: &mut Criterion) {
    let input = chat_stream(4 * 64);
    let chunks: Vec<&[u8]> = input.chunks(64).collect();
    contenders(c, "body_4x64B_per_body", &chunks, 1);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = per_frame, per_body
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
