//! The tokio adapter for [sluice](https://docs.rs/sluice): forward a tracked
//! upstream (the stream of a worker's answer) to a client over a
//! `tokio::sync::mpsc` channel, and drop it the moment the client leaves.
//!
//! # Two ways to hand a stream to a client
//!
//! **The direct body.** With axum (or any hyper server), give the
//! [`TrackedStream`] straight to the response: `axum::body::Body::from_stream(tracked)`.
//! No task and no channel: when the client closes its connection, hyper drops the
//! body, which drops the `TrackedStream`, which drops the upstream (closing the
//! worker's connection) and records [`Abandoned`](sluice::Verdict::Abandoned)
//! unless an end was seen. This is the shortest path and the one to prefer when the
//! handler can return the upstream as it is; [`TokioTimer`] runs its progress timers.
//!
//! **[`forward()`].** Use it when there is a task boundary between the upstream and the
//! client (a channel feeding a response body, a websocket writer, a non-hyper
//! server), when the client may stop reading (a full channel for longer than
//! [`send_timeout`](sluice::forward::ForwardOptions::send_timeout) is a client that
//! stalled, not a worker that failed), or when the answer must be read to its end
//! after the client left ([`OnClose::Drain`](sluice::forward::OnClose)). The worker's
//! timers ([`forward_with`]) count progress: the first token, the time between
//! tokens and a total deadline, where a token is an event that is neither a
//! keep-alive (a `:` comment, Anthropic's `ping`) nor the API's preamble (OpenAI's
//! role-only first chunk, Anthropic's `message_start`). The loop (in
//! [`sluice::forward`]) waits on
//! [`Sender::closed`](https://docs.rs/tokio/1/tokio/sync/mpsc/struct.Sender.html#method.closed)
//! and reserves room with
//! [`Sender::reserve`](https://docs.rs/tokio/1/tokio/sync/mpsc/struct.Sender.html#method.reserve)
//! (a full channel is a client that stopped reading); the client leaving, i.e. the
//! receiver being dropped, ends it at once. Wrap the wait for the worker's response
//! head in [`until_closed`] so a client that leaves before it cancels the request
//! too.
//!
//! Either way, a gateway:
//!
//! 1. takes a permit from the worker's breaker
//!    ([`SharedBreaker::try_acquire_owned`](sluice::breaker::SharedBreaker::try_acquire_owned)),
//!    and holds it in a [`RecordGuard`](sluice::RecordGuard) while it waits for the
//!    response head: a handler dropped there (the client left) records
//!    `Abandoned` instead of nothing, and gives back a half-open probe slot;
//! 2. judges the status line with
//!    [`StatusPolicy::classify`](sluice::breaker::StatusPolicy::classify) before it
//!    tracks a byte: a 5xx is the worker's Failure, a 429 or other 4xx is Abandoned
//!    (the client's doing), and either goes to the client as it came, status and
//!    body; a send error is a Failure
//!    ([`classify_send_failure`](sluice::breaker::StatusPolicy::classify_send_failure));
//! 3. tracks a 2xx upstream ([`TrackedStream::new`] with the guard as its recorder)
//!    and hands it on: the stream's end (or the client leaving) is the verdict.
//!
//! The crate's `relay` example does all three with [`forward_with`]'s timers, on
//! 127.0.0.1 against an in-process mock worker:
//! `cargo run -p sluice-tokio --example relay`.
//!
//! Nothing here spawns a task: the futures run where the caller awaits them.
//!
//! ```
//! use futures_util::stream;
//! use sluice::forward::Ending;
//! use sluice::{Outcome, TrackedStream, Verdict};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! let (tx, mut rx) = tokio::sync::mpsc::channel(8);
//! let upstream = stream::iter([Ok::<_, std::io::Error>("data: hi\n\n"), Ok("data: [DONE]\n\n")]);
//! let tracked = TrackedStream::new(upstream, |o: Outcome| assert_eq!(o.verdict, Verdict::Success))
//!     .with_sse(sluice::sse::SseRules::openai_chat());
//! let forwarded = sluice_tokio::forward(tracked, &tx).await;
//! assert_eq!(forwarded.ending, Ending::Completed);
//! assert_eq!(rx.recv().await.unwrap().unwrap(), "data: hi\n\n");
//! # });
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll, ready};
use core::time::Duration;

use futures_core::Stream;
use sluice::failure::FailureTail;
use sluice::forward::{self, ClientGone, Downstream, ForwardOptions, Forwarded};
use sluice::timers::{ProgressTimers, Timer};
use sluice::{Recorder, TrackedStream};
use tokio::sync::mpsc::Sender;

/// Forwards `upstream` to `tx` with the default [`ForwardOptions`] (no timeouts,
/// cancel on close). Returns once the upstream ended, erred, or the client dropped
/// its receiver; the upstream is dropped, and has recorded, by then.
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

/// Forwards `upstream` to `tx` with `options`: timeouts run on `tokio::time`, so
/// they follow a paused test clock.
///
/// ```
/// use std::time::Duration;
/// use futures_util::stream;
/// use sluice::forward::{Ending, ForwardOptions};
/// use sluice::{Outcome, TrackedStream, Verdict};
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
/// let (tx, _rx) = tokio::sync::mpsc::channel::<Result<&str, ()>>(8);
/// // A worker that never answers.
/// let tracked = TrackedStream::new(stream::pending(), |_: Outcome| {});
/// let options = ForwardOptions::default().first_token_timeout(Duration::from_secs(30));
/// let forwarded = sluice_tokio::forward_with(tracked, &tx, options).await;
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
    forward::forward(upstream, &Tx(tx), &TokioTimer, options).await
}

/// Runs `fut` unless the receiver of `tx` is dropped first; then `fut` is dropped
/// and the result is [`ClientGone`]. Wrap the worker request's `send()` (the wait
/// for the response head) in it, so a client that leaves before the head cancels the
/// request.
///
/// ```
/// use std::future::pending;
/// use sluice::forward::ClientGone;
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let (tx, rx) = tokio::sync::mpsc::channel::<u8>(1);
/// assert_eq!(sluice_tokio::until_closed(&tx, async { 200 }).await, Ok(200));
/// drop(rx); // the client leaves
/// let headers = pending::<u16>(); // e.g. `client.get(url).send()`
/// assert_eq!(sluice_tokio::until_closed(&tx, headers).await, Err(ClientGone));
/// # });
/// ```
pub async fn until_closed<T, F: Future>(tx: &Sender<T>, fut: F) -> Result<F::Output, ClientGone> {
    forward::until_closed(&Tx(tx), fut).await
}

/// The client's side of the channel.
struct Tx<'a, T>(&'a Sender<T>);

impl<T> Downstream<T> for Tx<'_, T> {
    async fn send(&self, item: T) -> Result<(), ClientGone> {
        let permit = self.0.reserve().await.map_err(|_| ClientGone)?;
        permit.send(item);
        Ok(())
    }

    fn closed(&self) -> impl Future<Output = ()> {
        self.0.closed()
    }
}

/// The core's [`Timer`] on `tokio::time`: sleeps follow a paused test clock. What
/// [`forward_with`] sleeps on, and what runs a tracked stream's own progress timers
/// ([`TrackedStream::with_timers`]), for a stream handed straight to a response body.
///
/// ```
/// use std::time::Duration;
/// use futures_util::{StreamExt, stream};
/// use sluice::sse::SseRules;
/// use sluice::timers::Timeouts;
/// use sluice::{Cause, Outcome, TrackedStream, Verdict};
/// use sluice_tokio::TokioTimer;
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
/// // A worker that says one token, then only keep-alives.
/// let worker = stream::iter([Ok::<_, std::io::Error>("data: {\"choices\":[]}\n\n")])
///     .chain(stream::repeat(": ping\n\n").then(|ping| async move {
///         tokio::time::sleep(Duration::from_secs(5)).await;
///         Ok(ping)
///     }));
/// let tracked = TrackedStream::new(worker, |o: Outcome| {
///     assert_eq!((o.verdict, o.cause), (Verdict::Failure, Cause::IdleTimeout));
/// })
/// .with_sse(SseRules::openai_chat())
/// .with_timers(TokioTimer, Timeouts::new().idle(Duration::from_secs(20)));
/// let mut tracked = std::pin::pin!(tracked);
/// while let Some(item) = tracked.next().await {
///     item.unwrap(); // the token, then four pings; then the idle timer ends it
/// }
/// # });
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct TokioTimer;

impl Timer for TokioTimer {
    type Sleep = TokioSleep;

    #[inline]
    fn sleep(&self, duration: Duration) -> TokioSleep {
        let since = tokio::time::Instant::now();
        let sleep = match since.checked_add(duration) {
            Some(due) => tokio::time::sleep_until(due),
            // Past what an instant holds: where tokio's own sleep puts it.
            None => tokio::time::sleep(duration),
        };
        TokioSleep {
            due: sleep.deadline(),
            since,
            sleep,
        }
    }

    /// Moves the sleep's due instant to `duration` from now: one clock read. A later
    /// instant (the idle timer at every token) is only noted; the tokio sleep under
    /// it keeps its deadline, and when that comes, [`TokioSleep`] moves it to the due
    /// instant (so the idle timer is re-armed once per idle time, not per token). An
    /// earlier one moves it at once
    /// ([`Sleep::reset`](https://docs.rs/tokio/1/tokio/time/struct.Sleep.html#method.reset)).
    #[inline]
    fn reset(&self, sleep: Pin<&mut TokioSleep>, duration: Duration) {
        let now = tokio::time::Instant::now();
        let due = match now.checked_add(duration) {
            Some(due) => due,
            // Past what an instant holds: where tokio's own sleep puts it (far in the
            // future), moved in place like any later instant, so the sleep keeps its
            // waker.
            None => tokio::time::sleep(duration).deadline(),
        };
        let sleep = sleep.project();
        *sleep.since = now;
        TokioSleep::move_to(sleep, due);
    }

    /// Either sleep keeps the waker it was last polled with across a reset: tokio's
    /// timer entry keeps it when its deadline moves, and a deadline only noted wakes
    /// the task when the old one comes.
    const RESET_KEEPS_WAKER: bool = true;

    /// [`Sleep::is_elapsed`](https://docs.rs/tokio/1/tokio/time/struct.Sleep.html#method.is_elapsed):
    /// one atomic load, so a stream polled for every chunk does not poll its sleeps.
    /// `None` when the tokio sleep has elapsed before the due instant (only a poll
    /// moves it on).
    #[inline]
    fn is_elapsed(&self, sleep: &TokioSleep) -> Option<bool> {
        match sleep.sleep.is_elapsed() {
            false => Some(false),
            true => (sleep.sleep.deadline() >= sleep.due).then_some(true),
        }
    }
}

pin_project_lite::pin_project! {
    /// [`TokioTimer`]'s sleep: a `tokio::time::Sleep` and the instant it is due,
    /// which a [`reset`](Timer::reset) to a later instant only notes. It resolves
    /// at its due instant, as tokio's sleep would (rounded up to tokio's
    /// millisecond), never at the older deadline it may still have under it.
    #[derive(Debug)]
    #[project = TokioSleepProj]
    pub struct TokioSleep {
        #[pin]
        sleep: tokio::time::Sleep,
        // At or after the tokio sleep's deadline.
        due: tokio::time::Instant,
        // The clock reading `due` was counted from.
        since: tokio::time::Instant,
    }
}

impl TokioSleep {
    /// The instant it resolves at.
    pub fn due(&self) -> tokio::time::Instant {
        self.due
    }

    /// When it was made, or last moved by [`TokioTimer`]'s
    /// [`reset`](Timer::reset): the clock reading its due instant was counted from.
    /// The idle timer of a [`ProgressWatch`](sluice::timers::ProgressWatch) is reset at
    /// each progress, so this is when the last progress was seen
    /// ([`ProgressWatch::wait`](sluice::timers::ProgressWatch::wait)), without a second
    /// clock read. Unchanged by [`reset_at`](Self::reset_at), which is given an
    /// instant, not a duration.
    #[inline]
    pub fn since(&self) -> tokio::time::Instant {
        self.since
    }

    /// Makes it resolve at `due` instead. A later instant is only noted, to be taken
    /// up when the tokio sleep under it fires; an earlier one moves that sleep now.
    #[inline]
    pub fn reset_at(self: Pin<&mut Self>, due: tokio::time::Instant) {
        Self::move_to(self.project(), due);
    }

    #[inline(always)]
    fn move_to(this: TokioSleepProj<'_>, due: tokio::time::Instant) {
        *this.due = due;
        if due < this.sleep.deadline() {
            this.sleep.reset(due);
        }
    }
}

impl Future for TokioSleep {
    type Output = ();

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        loop {
            ready!(this.sleep.as_mut().poll(cx));
            if this.sleep.deadline() >= *this.due {
                return Poll::Ready(());
            }
            // It fired at a deadline that has since been pushed back: on to the due
            // instant, registered with this waker by the next turn of the loop.
            this.sleep.as_mut().reset(*this.due);
        }
    }
}

/// This crate's README examples (which the workspace README repeats), compiled as doc
/// tests of this crate, whose dev-dependencies they use.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
