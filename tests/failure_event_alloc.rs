//! The failure event costs one allocation, at the failure: its text is written into a
//! `String` of its exact length, which `Bytes` takes over without a second one; a
//! stream that does not fail allocates nothing for it. Counted with
//! `allocation-counter` (see `tests/alloc.rs`), on this thread only.

use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use allocation_counter::measure;
use bytes::Bytes;
use futures_util::{Stream, stream};
use sluice::sse::SseRules;
use sluice::{Cause, Outcome, TrackedStream, Verdict};

const TOKEN: &[u8] = b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n";
const CUT: &[u8] = b"data: {\"choices\":[{\"del";

/// Polls `stream` to its end (it is always ready); returns the `Ok` items' bytes.
fn drain<S: Stream<Item = Result<Bytes, ()>> + Unpin>(mut stream: S) -> Vec<Bytes> {
    let mut cx = Context::from_waker(Waker::noop());
    let mut out = Vec::with_capacity(4);
    loop {
        match std::pin::Pin::new(&mut stream).poll_next(&mut cx) {
            Poll::Ready(Some(item)) => out.push(item.expect("no error items here")),
            Poll::Ready(None) => return out,
            Poll::Pending => unreachable!("always ready"),
        }
    }
}

fn items(cut: bool) -> impl Stream<Item = Result<Bytes, ()>> + Unpin {
    let last: &'static [u8] = if cut { CUT } else { b"data: [DONE]\n\n" };
    stream::iter([Ok(Bytes::from_static(TOKEN)), Ok(Bytes::from_static(last))])
}

#[test]
fn the_failure_event_is_one_allocation_of_its_exact_length() {
    let name: Arc<str> = Arc::from("gpu-7");
    for named in [false, true] {
        let mut sent = Vec::new();
        let verdict = std::cell::Cell::new(None);
        let record = |o: Outcome| verdict.set(Some((o.verdict, o.cause)));
        let info = measure(|| {
            let tracked = TrackedStream::new(items(true), record).with_sse(SseRules::anthropic());
            sent = if named {
                drain(tracked.with_failure_event_named(name.clone()))
            } else {
                drain(tracked.with_failure_event())
            };
        });
        assert_eq!(verdict.get(), Some((Verdict::Failure, Cause::Truncated)));
        // The output vector, and the event.
        assert_eq!(info.count_total, 2, "named: {named}");
        let event = sent.last().expect("the event");
        assert!(event.starts_with(b"\n\nevent: error\ndata: "), "{event:?}");
        let text = std::str::from_utf8(event).expect("utf-8");
        assert_eq!(
            text.contains("upstream gpu-7 failed"),
            named,
            "named: {named}: {text}"
        );
        assert_eq!(
            info.bytes_total as usize,
            4 * size_of::<Bytes>() + event.len(),
            "the event's allocation is its exact length"
        );
    }
}

#[test]
fn a_stream_that_does_not_fail_allocates_nothing_for_it() {
    let name: Arc<str> = Arc::from("gpu-7");
    let info = measure(|| {
        let tracked = TrackedStream::new(items(false), |o: Outcome| {
            assert_eq!(o.verdict, Verdict::Success);
        })
        .with_sse(SseRules::openai_chat())
        .with_failure_event_named(name.clone());
        let sent = drain(tracked);
        assert_eq!(sent.len(), 2);
    });
    assert_eq!(info.count_total, 1, "the output vector only");
}
