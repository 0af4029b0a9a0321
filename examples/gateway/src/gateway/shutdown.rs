//! Ending the streams still in flight when the shutdown grace is over.
//!
//! The serve shell stops accepting on SIGTERM or Ctrl-C and lets the streams in flight
//! run for the grace; then it calls [`Gateway::end_streams`](super::Gateway::end_streams),
//! which flips a `watch` flag every tracked body listens to (the client's body,
//! [`body`](super::body)). A body that hears it gives its stream up with cause
//! `shutdown` (Abandoned: not the worker's fault), drops the upstream (the engine
//! stops) and ends the client's body with an error, so the client sees a cut stream,
//! not a clean end.

use std::error::Error;
use std::fmt;

use tokio::sync::watch;

/// A boxed error, as a streamed body's items carry it.
pub(super) type BoxError = Box<dyn Error + Send + Sync>;

/// What the client's body ends with when the grace is over.
#[derive(Debug, Clone, Copy)]
pub(super) struct ShutDown;

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
