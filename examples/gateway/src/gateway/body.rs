//! The client's body: the tracked stream of a worker's 2xx answer, with what the
//! gateway adds around it.
//!
//! * **Progress times.** After each poll it reads the stream's progress count
//!   ([`Ledger::progress`](sluice::Ledger::progress)) and marks when it grew, for the
//!   time to first token and the time per output token ([`Timing`]).
//! * **The end of the shutdown grace** ends the stream: Abandoned with cause
//!   `shutdown` (an end already seen stands), the upstream dropped, and the client's
//!   body cut with an error.
//! * **The verdict at the end.** When the tracked stream ends, the body drops it at
//!   once, so its verdict is recorded when the stream ends, not when the server gets
//!   round to dropping the body.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use sluice::{Cause, Recorder, TrackedStream};
use tokio::sync::watch;

use super::shutdown::{BoxError, ShutDown, grace_over};
use super::ticket::Timing;

/// The client's body over a tracked stream.
pub(super) struct ClientBody<S, R: Recorder> {
    /// `None` once ended: dropping it recorded the verdict and closed the upstream.
    tracked: Option<Pin<Box<TrackedStream<S, R>>>>,
    grace_over: Pin<Box<dyn Future<Output = ()> + Send>>,
    timing: Arc<Timing>,
    /// The progress count at the last poll.
    seen: u64,
}

impl<S, R: Recorder> ClientBody<S, R> {
    /// The body over `tracked`, ended when `over` turns true; its progress marked in
    /// `timing`.
    pub(super) fn new(
        tracked: TrackedStream<S, R>,
        over: watch::Receiver<bool>,
        timing: Arc<Timing>,
    ) -> Self {
        Self {
            tracked: Some(Box::pin(tracked)),
            grace_over: Box::pin(grace_over(over)),
            timing,
            seen: 0,
        }
    }
}

impl<S, E, R> Stream for ClientBody<S, R>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: Into<BoxError>,
    R: Recorder,
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
            Poll::Ready(Some(item)) => Poll::Ready(Some(item.map_err(Into::into))),
            Poll::Ready(None) => {
                // Records the verdict now.
                this.tracked = None;
                Poll::Ready(None)
            }
        }
    }
}
