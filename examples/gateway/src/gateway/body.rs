//! The client's body: the tracked stream of a worker's 2xx answer, with what the
//! gateway adds around it.
//!
//! * **Progress times.** After each poll it reads the stream's progress count
//!   ([`Ledger::progress`](sluice::Ledger::progress)) and marks when it grew, for the
//!   time to first token and the time per output token ([`Timing`]).
//! * **A failure after the head reaches the client as one.** When the worker breaks
//!   the connection, stops short of its done event, or a progress timer fires, an
//!   event stream ends with the route's error event
//!   ([`Api::failure_event`](super::Api::failure_event): no `[DONE]`, no
//!   `message_stop`), then a clean end of the body, so the client's SSE parser reads
//!   it. A body without SSE rules is cut (the body ends with an error), never ended
//!   cleanly. An error the worker sent in-band already went through as it came.
//! * **The end of the shutdown grace** ends the stream: Abandoned with cause
//!   `shutdown` (an end already seen stands), the upstream dropped, and the client's
//!   body cut with an error.
//! * **The verdict at the end.** When the tracked stream ends, the body drops it at
//!   once, so its verdict is recorded when the stream ends, not when the server gets
//!   round to dropping the body.

use std::error::Error;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use sluice::timers::Watch;
use sluice::{Cause, Outcome, Recorder, TrackedStream, Verdict};
use tokio::sync::watch;

use super::Api;
use super::shutdown::{BoxError, ShutDown, grace_over};
use super::ticket::Timing;

/// What a body without SSE rules ends with when its worker failed after the head.
#[derive(Debug, Clone, Copy)]
struct WorkerFailed(Cause);

impl fmt::Display for WorkerFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the worker failed mid-stream ({})", self.0.as_str())
    }
}

impl Error for WorkerFailed {}

/// The client's body over a tracked stream.
pub(super) struct ClientBody<S, R: Recorder, W> {
    /// `None` once ended: dropping it recorded the verdict and closed the upstream.
    tracked: Option<Pin<Box<TrackedStream<S, R, W>>>>,
    grace_over: Pin<Box<dyn Future<Output = ()> + Send>>,
    timing: Arc<Timing>,
    /// The progress count at the last poll.
    seen: u64,
    /// The route's API when the body is an event stream (its failure event is the
    /// client's); `None`: a failure cuts the body.
    dialect: Option<Api>,
    /// The worker's name, for the failure event's message.
    worker: Arc<str>,
    /// The last bytes passed on, to tell whether they end an event.
    tail: Tail,
}

impl<S, R: Recorder, W> ClientBody<S, R, W> {
    /// The body over `tracked`, ended when `over` turns true; its progress marked in
    /// `timing`; a failure told in `dialect`'s error event, naming `worker`.
    pub(super) fn new(
        tracked: TrackedStream<S, R, W>,
        over: watch::Receiver<bool>,
        timing: Arc<Timing>,
        dialect: Option<Api>,
        worker: Arc<str>,
    ) -> Self {
        Self {
            tracked: Some(Box::pin(tracked)),
            grace_over: Box::pin(grace_over(over)),
            timing,
            seen: 0,
            dialect,
            worker,
            tail: Tail::default(),
        }
    }

    /// The stream ended with `outcome` (already recorded): what the client gets last.
    fn ending(&self, outcome: Outcome) -> Option<Result<Bytes, BoxError>> {
        // A failure the worker told in-band went to the client as it came.
        if outcome.verdict != Verdict::Failure || outcome.cause == Cause::ErrorEvent {
            return None;
        }
        let Some(api) = self.dialect else {
            return Some(Err(Box::new(WorkerFailed(outcome.cause))));
        };
        let message = format!(
            "upstream {} failed mid-stream: {}",
            self.worker,
            what_happened(outcome.cause)
        );
        let event = api.failure_event(&message, outcome.cause);
        // A worker cut off inside an event: end that event first, or the error's
        // lines would join it.
        Some(Ok(if self.tail.ends_event() {
            event
        } else {
            let mut bytes = b"\n\n".to_vec();
            bytes.extend_from_slice(&event);
            Bytes::from(bytes)
        }))
    }
}

/// What a failure's cause means, for the client.
fn what_happened(cause: Cause) -> &'static str {
    match cause {
        Cause::FirstTokenTimeout => "no token within the first-token timeout",
        Cause::IdleTimeout => "no token within the idle timeout",
        Cause::Deadline => "the answer did not end within the deadline",
        Cause::Truncated => "the stream ended before its end event",
        Cause::ErrorItem => "the connection broke",
        _ => "the stream failed",
    }
}

impl<S, E, R, W> Stream for ClientBody<S, R, W>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: Into<BoxError>,
    R: Recorder,
    W: Watch,
{
    type Item = Result<Bytes, BoxError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let Some(tracked) = this.tracked.as_mut() else {
            return Poll::Ready(None);
        };
        if this.grace_over.as_mut().poll(cx).is_ready() {
            // No end was seen: the verdict is Abandoned (shutdown); an end already
            // seen stands. Dropping the stream records it now and closes the upstream.
            tracked.as_mut().abandon_pinned(Cause::Shutdown);
            this.tracked = None;
            return Poll::Ready(Some(Err(Box::new(ShutDown))));
        }
        let poll = tracked.as_mut().poll_next(cx);
        let progress = tracked.ledger().progress();
        if progress != this.seen {
            this.seen = progress;
            this.timing.progressed(progress);
        }
        match poll {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(chunk))) => {
                this.tail.push(&chunk);
                Poll::Ready(Some(Ok(chunk)))
            }
            // The stream has failed (an error item); it ends here, so the client gets
            // the failure as its API says it, not a cut connection.
            Poll::Ready(Some(Err(err))) => {
                let outcome = tracked.outcome();
                // Records the verdict now and closes the upstream.
                this.tracked = None;
                let ending = this.ending(outcome);
                Poll::Ready(Some(ending.unwrap_or_else(|| Err(err.into()))))
            }
            Poll::Ready(None) => {
                let outcome = tracked.outcome();
                // Records the verdict now.
                this.tracked = None;
                Poll::Ready(this.ending(outcome))
            }
        }
    }
}

/// The last bytes of a stream, enough to tell whether they end an event (a blank
/// line: LF LF, CR CR, or CRLF CRLF).
#[derive(Debug, Clone, Copy)]
struct Tail {
    last: [u8; 4],
}

impl Default for Tail {
    /// Nothing sent yet: at an event boundary.
    fn default() -> Self {
        Self { last: *b"\n\n\n\n" }
    }
}

impl Tail {
    fn push(&mut self, bytes: &[u8]) {
        for &b in bytes.iter().rev().take(4).rev() {
            self.last.rotate_left(1);
            self.last[3] = b;
        }
    }

    fn ends_event(&self) -> bool {
        let [_, _, a, b] = self.last;
        matches!((a, b), (b'\n', b'\n') | (b'\r', b'\r')) || self.last == *b"\r\n\r\n"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blank_line_ends_an_event_across_chunks() {
        let ends = |chunks: &[&[u8]]| {
            let mut tail = Tail::default();
            for chunk in chunks {
                tail.push(chunk);
            }
            tail.ends_event()
        };
        assert!(ends(&[]));
        assert!(ends(&[b"data: x\n\n"]));
        assert!(ends(&[b"data: x\n", b"\n"]));
        assert!(ends(&[b"data: x\r\n\r", b"\n"]));
        assert!(ends(&[b"data: x\r\r"]));
        assert!(!ends(&[b"data: x\n"]));
        assert!(!ends(&[b"data: {\"choi"]));
        assert!(!ends(&[b"data: x\n\n", b"data"]));
        assert!(!ends(&[b"data: x\r\n"]));
    }
}
