//! The smol adapter for [sluice](https://docs.rs/sluice): forward a tracked
//! upstream (the stream of a worker's answer) to a client over an
//! [`async-channel`](https://docs.rs/async-channel/2), and drop it the moment the
//! client leaves.
//!
//! The loop lives in [`sluice::forward`]; this crate only supplies the channel and
//! the timer. A client leaving is every receiver being dropped
//! ([`Sender::closed`](https://docs.rs/async-channel/2/async_channel/struct.Sender.html#method.closed));
//! with a bounded channel, a full channel is a client that stopped reading, bounded
//! by [`ForwardOptions::send_timeout`]. The worker's timers ([`forward_with`]) count
//! progress: the first token, the time between tokens and a total deadline, where a
//! token is an event that is neither a keep-alive (a `:` comment, Anthropic's
//! `ping`) nor the API's preamble (OpenAI's role-only first chunk, Anthropic's
//! `message_start`); they sleep on
//! [`async_io::Timer`](https://docs.rs/async-io/2/async_io/struct.Timer.html). Wrap
//! the wait for the worker's response head in [`until_closed`] so a client that
//! leaves before it cancels the request too. Judge the status line first
//! ([`StatusPolicy::classify`](sluice::breaker::StatusPolicy::classify)) and track
//! only a 2xx upstream: a 429 or a 5xx goes to the client as it came.
//!
//! Nothing here spawns a task: the futures run where the caller awaits them.
//!
//! ```
//! use futures_lite::stream;
//! use sluice::forward::Ending;
//! use sluice::{Outcome, TrackedStream, Verdict};
//!
//! # smol::block_on(async {
//! let (tx, rx) = async_channel::bounded(8);
//! let upstream = stream::iter([Ok::<_, std::io::Error>("data: hi\n\n"), Ok("data: [DONE]\n\n")]);
//! let tracked = TrackedStream::new(upstream, |o: Outcome| assert_eq!(o.verdict, Verdict::Success))
//!     .with_sse(sluice::sse::SseRules::openai_chat());
//! let forwarded = sluice_smol::forward(tracked, &tx).await;
//! assert_eq!(forwarded.ending, Ending::Completed);
//! assert_eq!(rx.recv().await.unwrap().unwrap(), "data: hi\n\n");
//! # });
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};
use core::time::Duration;

use async_channel::Sender;
use futures_core::Stream;
use sluice::failure::FailureTail;
use sluice::forward::{self, ClientGone, Downstream, ForwardOptions, Forwarded};
use sluice::timers::{ProgressTimers, Timer};
use sluice::{Recorder, TrackedStream};

/// Forwards `upstream` to `tx` with the default [`ForwardOptions`] (no timeouts,
/// cancel on close). Returns once the upstream ended, erred, or every receiver was
/// dropped; the upstream is dropped, and has recorded, by then.
///
/// See the [crate docs](crate) for an example.
pub async fn forward<S, B, E, R, W, X>(
    upstream: TrackedStream<S, R, W, X>,
    tx: &Sender<S::Item>,
) -> Forwarded
where
    S: Stream<Item = Result<B, E>>,
    B: AsRef<[u8]>,
    R: Recorder,
    W: ProgressTimers,
    X: FailureTail<B, E>,
{
    forward_with(upstream, tx, ForwardOptions::default()).await
}

/// Forwards `upstream` to `tx` with `options`; timeouts sleep on
/// [`async_io::Timer`](https://docs.rs/async-io/2/async_io/struct.Timer.html).
///
/// ```
/// use std::time::Duration;
/// use futures_lite::stream;
/// use sluice::forward::{Ending, ForwardOptions};
/// use sluice::{Outcome, TrackedStream, Verdict};
///
/// # smol::block_on(async {
/// let (tx, _rx) = async_channel::bounded::<Result<&str, ()>>(8);
/// // A worker that never answers.
/// let tracked = TrackedStream::new(stream::pending(), |_: Outcome| {});
/// let options = ForwardOptions::default().first_token_timeout(Duration::from_millis(10));
/// let forwarded = sluice_smol::forward_with(tracked, &tx, options).await;
/// assert_eq!(forwarded.ending, Ending::TimedOut);
/// assert_eq!(forwarded.outcome.verdict, Verdict::Failure);
/// # });
/// ```
pub async fn forward_with<S, B, E, R, W, X>(
    upstream: TrackedStream<S, R, W, X>,
    tx: &Sender<S::Item>,
    options: ForwardOptions,
) -> Forwarded
where
    S: Stream<Item = Result<B, E>>,
    B: AsRef<[u8]>,
    R: Recorder,
    W: ProgressTimers,
    X: FailureTail<B, E>,
{
    forward::forward(upstream, &Tx(tx), &SmolTimer, options).await
}

/// Runs `fut` unless every receiver of `tx` is dropped first; then `fut` is dropped
/// and the result is [`ClientGone`]. Wrap the worker request's wait for the response
/// head in it, so a client that leaves before the head cancels the request.
///
/// ```
/// use std::future::pending;
/// use sluice::forward::ClientGone;
///
/// # smol::block_on(async {
/// let (tx, rx) = async_channel::bounded::<u8>(1);
/// assert_eq!(sluice_smol::until_closed(&tx, async { 200 }).await, Ok(200));
/// drop(rx); // the client leaves
/// let headers = pending::<u16>(); // the worker's response head
/// assert_eq!(sluice_smol::until_closed(&tx, headers).await, Err(ClientGone));
/// # });
/// ```
pub async fn until_closed<T, F: Future>(tx: &Sender<T>, fut: F) -> Result<F::Output, ClientGone> {
    forward::until_closed(&Tx(tx), fut).await
}

/// The client's side of the channel.
struct Tx<'a, T>(&'a Sender<T>);

impl<T> Downstream<T> for Tx<'_, T> {
    async fn send(&self, item: T) -> Result<(), ClientGone> {
        self.0.send(item).await.map_err(|_| ClientGone)
    }

    fn closed(&self) -> impl Future<Output = ()> {
        self.0.closed()
    }
}

/// The core's [`Timer`] on `async-io`'s reactor (smol's timers). What
/// [`forward_with`] sleeps on, and what runs a tracked stream's own progress timers
/// ([`TrackedStream::with_timers`]).
///
/// ```
/// use std::time::Duration;
/// use futures_lite::{StreamExt, stream};
/// use sluice::sse::SseRules;
/// use sluice::timers::Timeouts;
/// use sluice::{Cause, Outcome, TrackedStream, Verdict};
/// use sluice_smol::SmolTimer;
///
/// # smol::block_on(async {
/// // A worker that never says its first token.
/// let mut tracked = TrackedStream::new(stream::pending::<Result<&str, ()>>(), |o: Outcome| {
///     assert_eq!((o.verdict, o.cause), (Verdict::Failure, Cause::FirstTokenTimeout));
/// })
/// .with_sse(SseRules::openai_chat())
/// .with_timers(SmolTimer, Timeouts::new().first_token(Duration::from_millis(10)));
/// assert!(tracked.next().await.is_none());
/// # });
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct SmolTimer;

impl Timer for SmolTimer {
    type Sleep = Sleep;

    fn sleep(&self, duration: Duration) -> Sleep {
        // The deadline is set now, not at the first poll.
        Sleep(async_io::Timer::after(duration))
    }

    /// Moves the timer in place (`async_io::Timer::set_after`).
    fn reset(&self, sleep: Pin<&mut Sleep>, duration: Duration) {
        sleep.get_mut().0.set_after(duration);
    }
}

/// A [`SmolTimer`] sleep: an `async-io` timer that resolves to `()`.
#[derive(Debug)]
pub struct Sleep(async_io::Timer);

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx).map(drop)
    }
}

/// This crate's README example (which the workspace README repeats), compiled and run
/// as a doc test of this crate, whose dev-dependencies it uses.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
