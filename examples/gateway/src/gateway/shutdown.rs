//! Ending the streams still in flight when the shutdown grace is over.
//!
//! The serve shell stops accepting on SIGTERM or Ctrl-C and lets the streams in flight
//! run for the grace; then it calls [`Gateway::end_streams`](super::Gateway::end_streams),
//! which flips a `watch` flag every tracked body listens to ([`EndsAtShutdown`]). A body
//! that hears it gives its stream up with cause [`Cause::Shutdown`] (Abandoned: not
//! the worker's fault), drops the upstream (the engine stops) and ends the client's
//! body with an error, so the client sees a cut stream, not a clean end.

use std::error::Error;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use sluice::{Cause, Recorder, TrackedStream};
use tokio::sync::watch;

/// A boxed error, as a streamed body's items carry it.
pub(super) type BoxError = Box<dyn Error + Send + Sync>;

/// What the client's body ends with when the grace is over.
#[derive(Debug, Clone, Copy)]
struct ShutDown;

impl fmt::Display for ShutDown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the gateway shut down before the stream ended")
    }
}

impl Error for ShutDown {}

/// A future that resolves once `over` is true (never, if its sender is gone).
pub(super) async fn grace_over(mut over: watch::Receiver<bool>) {
    if over.wait_for(|over| *over).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// A tracked stream that ends, Abandoned with cause `shutdown`, when the gateway's
/// grace is over.
pub(super) struct EndsAtShutdown<S, R: Recorder> {
    /// `None` once ended: dropping it recorded the verdict and closed the upstream.
    tracked: Option<Pin<Box<TrackedStream<S, R>>>>,
    grace_over: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl<S, R: Recorder> EndsAtShutdown<S, R> {
    /// Ends `tracked` when `over` turns true.
    pub(super) fn new(tracked: TrackedStream<S, R>, over: watch::Receiver<bool>) -> Self {
        Self {
            tracked: Some(Box::pin(tracked)),
            grace_over: Box::pin(grace_over(over)),
        }
    }
}

impl<S, E, R> Stream for EndsAtShutdown<S, R>
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
        tracked
            .as_mut()
            .poll_next(cx)
            .map(|item| item.map(|chunk| chunk.map_err(Into::into)))
    }
}
