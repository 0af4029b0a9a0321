//! Zero allocations per body: a `TrackedBody` over an allocation-free inner body with
//! an allocation-free recorder, created, drained (or dropped part way) and dropped a
//! hundred times, allocates nothing; also with SSE rules, with gRPC trailers, and with
//! non-contiguous frames (`Chain`), which are scanned through a stack array of
//! `IoSlice`s. Counted with `allocation-counter` (per thread, exact under the parallel
//! harness); a deliberately allocating recorder shows the counter counts here.

use std::cell::Cell;
use std::convert::Infallible;
use std::hint::black_box;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use allocation_counter::measure;
use bytes::Buf;
use bytes::buf::Chain;
use http::HeaderMap;
use http_body::{Body, Frame};
use sluice::sse::SseRules;
use sluice::{Cause, Outcome, Verdict};
use sluice_http::{GrpcPolicy, TrackedBody};

/// Yields each chunk as a frame of two slices (split in the middle), then the
/// trailers if any (moved out once), then `None`.
struct Split<'a> {
    chunks: &'a [&'static [u8]],
    trailers: Option<HeaderMap>,
}

impl Body for Split<'_> {
    type Data = Chain<&'static [u8], &'static [u8]>;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Infallible>>> {
        if let Some((first, rest)) = self.chunks.split_first() {
            self.chunks = rest;
            let (a, b) = first.split_at(first.len() / 2);
            return Poll::Ready(Some(Ok(Frame::data(a.chain(b)))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }
}

const CHAT: &[&[u8]] = &[
    b"data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n",
    b": keep-alive\r\n\r\ndata: {\"text\":\"data: [DONE]\"}\n",
    b"\ndata: [DO",
    b"NE]\r",
    b"\n\r\n",
];

const BODIES: usize = 100;

/// Runs `BODIES` bodies inside `measure`; returns the allocations and the last outcome.
fn per_body(
    sse: bool,
    grpc: Option<&HeaderMap>,
    polls: usize,
    alloc_in_recorder: bool,
) -> (u64, Option<Outcome>) {
    let rules = SseRules::openai_chat();
    let last = Cell::new(None);
    let mut trailers: Vec<Option<HeaderMap>> = (0..BODIES).map(|_| grpc.cloned()).collect();
    let info = measure(|| {
        for t in trailers.iter_mut() {
            let inner = Split {
                chunks: CHAT,
                trailers: t.take(),
            };
            let recorder = |o: Outcome| {
                if alloc_in_recorder {
                    black_box(Box::new(o));
                }
                last.set(Some(o));
            };
            let mut body = TrackedBody::new(inner, recorder);
            if sse {
                body = body.with_sse(rules.clone());
            }
            if grpc.is_some() {
                body = body.with_grpc(GrpcPolicy::default());
            }
            let mut body = std::pin::pin!(body);
            let mut cx = Context::from_waker(Waker::noop());
            for _ in 0..polls {
                if let Poll::Ready(Some(frame)) = body.as_mut().poll_frame(&mut cx) {
                    black_box(frame.ok());
                }
            }
        }
    });
    (info.count_total, last.get())
}

#[test]
fn no_allocation_per_body() {
    let mut ok = HeaderMap::new();
    ok.insert("grpc-status", http::HeaderValue::from_static("0"));
    let all: u64 = CHAT.iter().map(|c| c.len() as u64).sum();
    let two = (CHAT[0].len() + CHAT[1].len()) as u64;
    for (sse, grpc, polls, want) in [
        (
            false,
            None,
            10,
            Outcome::new(Verdict::Success, Cause::End, 5, all),
        ),
        (
            true,
            None,
            10,
            // Three progress events: the two chunks and `[DONE]`.
            Outcome::new(Verdict::Success, Cause::Done, 5, all).with_progress(3),
        ),
        (
            true,
            None,
            2,
            // One: the second event is not dispatched before the blank line.
            Outcome::new(Verdict::Abandoned, Cause::ClientLeft, 2, two).with_progress(1),
        ),
        (
            false,
            Some(&ok),
            10,
            Outcome::new(Verdict::Success, Cause::GrpcStatus, 5, all),
        ),
    ] {
        let (allocs, last) = per_body(sse, grpc, polls, false);
        assert_eq!(
            last,
            Some(want),
            "sse={sse} grpc={} polls={polls}",
            grpc.is_some()
        );
        assert_eq!(allocs, 0, "sse={sse} grpc={} polls={polls}", grpc.is_some());
    }
}

#[test]
fn the_counter_counts_here() {
    let (allocs, last) = per_body(true, None, 10, true);
    assert!(last.is_some());
    assert_eq!(allocs, BODIES as u64);
}
