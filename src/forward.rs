//! Runtime-agnostic forwarding from a tracked upstream to a client.
//!
//! A gateway that hands a worker's stream to a client through a task boundary (a
//! channel) must stop reading the worker the moment the client leaves: every token
//! the worker generates after that is wasted compute. [`forward`] is that loop,
//! written once over two small traits that the runtime adapters implement:
//! [`Downstream`] (where items go, and the signal that the client is gone) and
//! [`Timer`] (a sleep). `sluice-tokio` and `sluice-smol` are thin shells around it.
//!
//! # Driving order
//!
//! Each time the loop is woken it polls, in this order:
//!
//! 1. **The client's close** ([`Downstream::closed`]). Close wins over everything
//!    that is ready at the same time. Under [`OnClose::Cancel`] (the default) the
//!    loop returns at once and the upstream [`TrackedStream`] is dropped before it
//!    is polled again: its recorder hears [`Abandoned`](crate::Verdict::Abandoned)
//!    unless it already saw an end (a `[DONE]`, say), and dropping it closes the
//!    upstream connection so the worker stops generating. Under
//!    [`OnClose::Drain`] the loop keeps reading the upstream and discards the items,
//!    bounded by the drain limit, so the verdict is the upstream's.
//! 2. **While waiting for the upstream**: the worker's timers (first token or idle,
//!    then the deadline), then the upstream's next item. A timer that is due wins
//!    over an upstream that is always ready: an endless run of tokens or `: ping`
//!    keep-alives cannot hold a deadline off.
//! 3. **While an item is being handed over**: the send ([`Downstream::send`]); once
//!    the client has kept the item waiting, the deadline; then the send timeout
//!    ([`ForwardOptions::send_timeout`]). A deadline that passes while the client is
//!    slow to take an item is the client's doing, not the worker's: the loop gives
//!    up as the send timeout would (an item the client takes in that same instant
//!    still reaches it).
//!
//! Every item goes to the client in order, an error item too; after an error item
//! the loop stops. The upstream's end stops it as well. In every case the upstream is
//! dropped (and has recorded) before [`forward`] returns, and [`Forwarded`] says how
//! it went.
//!
//! # Timers judge progress
//!
//! The worker's timers count **progress**, not bytes: with SSE rules, the dispatched
//! events that are not keep-alives (a `:` comment or Anthropic's `ping` keeps no
//! timer at bay); without them, every item. The first-token timer runs from the start
//! of forwarding to the first progress; the idle timer from the first wait on the
//! upstream after each progress (the time the client takes to accept an item does not
//! count) to the next progress; the deadline from the start to the end. A timer that fires is the
//! worker's fault: the stream is marked failed with the timer as its
//! [`Cause`], and the verdict is [`Failure`](crate::Verdict::Failure).
//! Once the stream has completed in-band (its done event), no timer can blame the
//! worker: the loop waits at most the idle time (or until the deadline) for the
//! upstream's end, then stops with [`Ending::Completed`], and the verdict stays
//! [`Success`](crate::Verdict::Success).
//!
//! When a timer fails the stream and the stream carries its failure event
//! ([`TrackedStream::with_failure_event`]), the loop hands that event to the client
//! before it returns (bounded by the send timeout), so the client reads an error in
//! its API's dialect, not a clean end. A stream's own timers
//! ([`TrackedStream::with_timers`]) run beside the loop's and end it the same way
//! ([`Ending::TimedOut`]).
//!
//! A client that stops reading (the send timeout, or the deadline passing while an
//! item waits for the client) is not the worker's fault: the loop gives up without
//! marking anything, so a stream with no end yet is
//! [`Abandoned`](crate::Verdict::Abandoned), cause
//! [`ClientStalled`](crate::Cause::ClientStalled).
//!
//! The loop spawns nothing and allocates nothing; it is one future, and dropping it
//! drops the upstream (an `Abandoned` verdict if no end was seen).

use core::future::{Future, poll_fn};
use core::pin::{Pin, pin};
use core::task::Poll;

use futures_core::Stream;

use crate::failure::FailureTail;
pub use crate::timers::Timer;
use crate::timers::{ProgressTimers, ProgressWatch};
use crate::{Cause, Outcome, Recorder, Terminal, TrackedStream};

mod options;

pub use options::{ForwardOptions, OnClose};

/// Where forwarded items go: the client's side of a channel, or any sink that can
/// tell when its reader has gone.
///
/// Both methods take `&self`, so the loop can wait for the close while a send is
/// pending.
pub trait Downstream<T> {
    /// Hands one item to the client. Resolves once the item is accepted (a bounded
    /// channel may wait for room), or with [`ClientGone`] if the reader has gone;
    /// the item is then dropped.
    fn send(&self, item: T) -> impl Future<Output = Result<(), ClientGone>>;

    /// Resolves when the reader has gone (the receiver was dropped).
    fn closed(&self) -> impl Future<Output = ()>;
}

/// The client has gone: its receiver was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, thiserror::Error)]
#[error("the client has gone")]
pub struct ClientGone;

/// Why forwarding stopped. The verdict, and its cause, are in [`Forwarded::outcome`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Ending {
    /// The upstream ended and every item reached the client; or it completed in-band
    /// and then did not end within the idle time (or the deadline), and the loop
    /// stopped waiting.
    Completed,
    /// The upstream yielded an error item; it was passed on, then forwarding
    /// stopped.
    UpstreamError,
    /// The client left. Under [`OnClose::Drain`] the upstream was read on (the
    /// outcome tells how that went).
    ClientGone,
    /// A timeout passed: a worker's timer (the stream is marked failed), or the
    /// client stopped reading (nothing marked).
    TimedOut,
}

/// What [`forward`] returns once the upstream is dropped and has recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Forwarded {
    /// What the upstream's recorder was given, with its [`Cause`].
    pub outcome: Outcome,
    /// Why forwarding stopped.
    pub ending: Ending,
}

impl Forwarded {
    /// A result with these parts.
    pub const fn new(outcome: Outcome, ending: Ending) -> Self {
        Self { outcome, ending }
    }
}

/// Forwards `upstream` to `downstream` until it ends, errs, times out or the client
/// leaves; see the [module docs](self) for the order. The upstream is dropped, and
/// has recorded, before this returns.
///
/// Adapters call this with their channel and timer; most code calls
/// `sluice_tokio::forward` or `sluice_smol::forward` instead.
///
/// ```
/// use core::future::{Future, pending, ready};
/// use core::time::Duration;
/// use std::cell::RefCell;
/// use futures_util::stream;
/// use sluice::forward::{self, ClientGone, Downstream, Ending, ForwardOptions, Timer};
/// use sluice::{Cause, Outcome, TrackedStream, Verdict};
///
/// /// A client that keeps everything and never leaves.
/// struct Keep(RefCell<Vec<&'static [u8]>>);
/// impl Downstream<Result<&'static [u8], ()>> for Keep {
///     fn send(&self, item: Result<&'static [u8], ()>) -> impl Future<Output = Result<(), ClientGone>> {
///         self.0.borrow_mut().extend(item);
///         ready(Ok(()))
///     }
///     fn closed(&self) -> impl Future<Output = ()> {
///         pending()
///     }
/// }
/// /// A timer that never fires (no timeouts are set anyway).
/// struct Never;
/// impl Timer for Never {
///     type Sleep = core::future::Pending<()>;
///     fn sleep(&self, _: Duration) -> Self::Sleep {
///         pending()
///     }
/// }
///
/// let upstream = stream::iter([Ok(&b"data: hi\n\n"[..]), Ok(&b"data: [DONE]\n\n"[..])]);
/// let tracked = TrackedStream::new(upstream, |_: Outcome| {})
///     .with_sse(sluice::sse::SseRules::openai_chat());
/// let client = Keep(RefCell::new(Vec::new()));
/// let out = futures_executor::block_on(forward::forward(
///     tracked,
///     &client,
///     &Never,
///     ForwardOptions::default(),
/// ));
/// assert_eq!((out.ending, out.outcome.verdict), (Ending::Completed, Verdict::Success));
/// assert_eq!(out.outcome.cause, Cause::Done);
/// assert_eq!(client.0.borrow().len(), 2);
/// ```
pub async fn forward<S, B, E, R, W, X, D, T>(
    upstream: TrackedStream<S, R, W, X>,
    downstream: &D,
    timer: &T,
    options: ForwardOptions,
) -> Forwarded
where
    S: Stream<Item = Result<B, E>>,
    B: AsRef<[u8]>,
    R: Recorder,
    W: ProgressTimers,
    X: FailureTail<B, E>,
    D: Downstream<Result<B, E>> + ?Sized,
    T: Timer + ?Sized,
{
    let (ending, outcome) = {
        let mut upstream = pin!(upstream);
        let mut watch = pin!(ProgressWatch::new(timer, options.timeouts()));
        // The deadline runs from the start of forwarding.
        watch.as_mut().start();
        let ending = drive(
            upstream.as_mut(),
            downstream,
            timer,
            watch.as_mut(),
            &options,
        )
        .await;
        (ending, upstream.outcome())
        // The upstream is dropped here and records the outcome just read.
    };
    Forwarded { outcome, ending }
}

/// Runs `fut` unless the client leaves first; then `fut` is dropped (cancelling, say,
/// an upstream request that waits for its response headers) and the result is
/// [`ClientGone`]. The close wins when both are ready.
///
/// ```
/// use core::future::{Future, pending, ready};
/// use sluice::forward::{ClientGone, Downstream, until_closed};
///
/// /// A client that has already gone.
/// struct Gone;
/// impl Downstream<()> for Gone {
///     fn send(&self, _: ()) -> impl Future<Output = Result<(), ClientGone>> {
///         ready(Err(ClientGone))
///     }
///     fn closed(&self) -> impl Future<Output = ()> {
///         ready(())
///     }
/// }
/// let headers = pending::<u16>(); // the upstream's response head, never coming
/// assert_eq!(futures_executor::block_on(until_closed(&Gone, headers)), Err(ClientGone));
/// ```
pub async fn until_closed<T, D, F>(downstream: &D, fut: F) -> Result<F::Output, ClientGone>
where
    D: Downstream<T> + ?Sized,
    F: Future,
{
    let mut closed = pin!(downstream.closed());
    let mut fut = pin!(fut);
    poll_fn(|cx| {
        if closed.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(ClientGone));
        }
        fut.as_mut().poll(cx).map(Ok)
    })
    .await
}

/// Items handled in a row before the loop yields to its executor once, so an upstream
/// that is always ready cannot hog a thread, and a runtime whose timers only advance
/// when its executor runs (tokio's driver) gets to fire them. The timers themselves
/// never wait on this: a due timer wins at the next wait, whatever the upstream.
const YIELD_EVERY: u32 = 64;

/// Returns `Pending` once (waking itself at once), then `Ready`.
async fn yield_now() {
    let mut yielded = false;
    poll_fn(|cx| {
        if yielded {
            return Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await;
}

/// Counts items and yields every [`YIELD_EVERY`] of them.
async fn fair(count: &mut u32) {
    *count += 1;
    if *count == YIELD_EVERY {
        *count = 0;
        yield_now().await;
    }
}

/// The worker's timers, over the adapter's timer.
type Timers<'t, T> = ProgressWatch<&'t T>;

/// What one wait for the upstream gave.
enum Next<T> {
    Item(Option<T>),
    /// The client left, or the drain limit passed.
    Stopped,
    /// A worker's timer fired.
    TimedOut(Cause),
}

/// What one hand-over to the client gave.
enum HandOver {
    Taken,
    /// Taken, but the deadline passed while the client kept the item waiting.
    TakenLate,
    Closed,
    /// The send timeout passed, or the deadline did while the client was slow.
    TimedOut,
}

/// The loop; the caller drops the upstream when it returns.
async fn drive<S, B, E, R, W, X, D, T>(
    mut upstream: Pin<&mut TrackedStream<S, R, W, X>>,
    downstream: &D,
    timer: &T,
    mut watch: Pin<&mut Timers<'_, T>>,
    options: &ForwardOptions,
) -> Ending
where
    S: Stream<Item = Result<B, E>>,
    B: AsRef<[u8]>,
    R: Recorder,
    W: ProgressTimers,
    X: FailureTail<B, E>,
    D: Downstream<Result<B, E>> + ?Sized,
    T: Timer + ?Sized,
{
    let mut closed = pin!(downstream.closed());
    let mut handled = 0;
    loop {
        let next = next_item(upstream.as_mut(), closed.as_mut(), watch.as_mut()).await;
        let item = match next {
            Next::Item(Some(item)) => item,
            Next::Item(None) => return ended(&upstream),
            Next::TimedOut(cause) => {
                let ending = timed_out(upstream.as_mut(), cause, Ending::TimedOut);
                // The stream's failure event, if it has one, still goes to the client.
                pass_tail(upstream, downstream, closed, timer, options).await;
                return ending;
            }
            Next::Stopped => return on_close(upstream, timer, watch, options).await,
        };
        let errored = item.is_err();
        let send = pin!(downstream.send(item));
        let timeout = pin!(options.send.map(|d| timer.sleep(d)));
        match hand_over(closed.as_mut(), send, timeout, Some(watch.as_mut())).await {
            HandOver::Taken if errored => return Ending::UpstreamError,
            HandOver::Taken => fair(&mut handled).await,
            // After an error item there is nothing left to drain.
            HandOver::Closed if errored => return Ending::ClientGone,
            HandOver::Closed => return on_close(upstream, timer, watch, options).await,
            HandOver::TakenLate if errored => return Ending::UpstreamError,
            HandOver::TimedOut | HandOver::TakenLate => {
                upstream.abandon_pinned(Cause::ClientStalled);
                return Ending::TimedOut;
            }
        }
    }
}

/// A worker's timer fired: the stream fails for `cause`, unless it already completed
/// in-band, in which case the loop only stops waiting for the end.
fn timed_out<S, B, E, R, W, X>(
    mut upstream: Pin<&mut TrackedStream<S, R, W, X>>,
    cause: Cause,
    ending: Ending,
) -> Ending
where
    S: Stream<Item = Result<B, E>>,
    R: Recorder,
    X: FailureTail<B, E>,
{
    upstream.as_mut().expire_pinned(cause);
    match (upstream.terminal(), ending) {
        (Terminal::Completed, Ending::TimedOut) => Ending::Completed,
        (_, ending) => ending,
    }
}

/// After the upstream's end (a timer ended it): hands over what the stream still
/// yields, its failure event ([`TrackedStream::with_failure_event`]), unless the
/// client leaves or stops reading first. The upstream is not polled again.
async fn pass_tail<S, B, E, R, W, X, D, T, C>(
    mut upstream: Pin<&mut TrackedStream<S, R, W, X>>,
    downstream: &D,
    mut closed: Pin<&mut C>,
    timer: &T,
    options: &ForwardOptions,
) where
    S: Stream<Item = Result<B, E>>,
    B: AsRef<[u8]>,
    R: Recorder,
    W: ProgressTimers,
    X: FailureTail<B, E>,
    D: Downstream<Result<B, E>> + ?Sized,
    T: Timer + ?Sized,
    C: Future<Output = ()>,
{
    while let Some(item) = poll_fn(|cx| upstream.as_mut().poll_next(cx)).await {
        let send = pin!(downstream.send(item));
        let timeout = pin!(options.send.map(|d| timer.sleep(d)));
        let handed = hand_over::<_, _, _, T>(closed.as_mut(), send, timeout, None).await;
        if !matches!(handed, HandOver::Taken) {
            return;
        }
    }
}

/// The upstream ended: completely, or because its own timers (its
/// [`with_timers`](TrackedStream::with_timers)) fired.
fn ended<S, R: Recorder, W, X>(upstream: &Pin<&mut TrackedStream<S, R, W, X>>) -> Ending {
    let outcome = upstream.outcome();
    let timer = matches!(
        outcome.cause,
        Cause::FirstTokenTimeout | Cause::IdleTimeout | Cause::Deadline
    );
    match (outcome.verdict, timer) {
        (crate::Verdict::Failure, true) => Ending::TimedOut,
        _ => Ending::Completed,
    }
}

/// Waits for the upstream's next item, unless `stop` (the client's close, or the drain
/// limit) is ready first, which it wins on a tie, or a worker's timer is due, which
/// wins over an item that is ready.
async fn next_item<S, B, E, R, W, X, T, F>(
    mut upstream: Pin<&mut TrackedStream<S, R, W, X>>,
    mut stop: Pin<&mut F>,
    mut watch: Pin<&mut Timers<'_, T>>,
) -> Next<Result<B, E>>
where
    S: Stream<Item = Result<B, E>>,
    B: AsRef<[u8]>,
    R: Recorder,
    W: ProgressTimers,
    X: FailureTail<B, E>,
    T: Timer + ?Sized,
    F: Future<Output = ()>,
{
    poll_fn(|cx| {
        if stop.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Next::Stopped);
        }
        let progress = upstream.ledger().progress();
        if let Poll::Ready(cause) = watch.as_mut().poll_expired(cx, progress) {
            return Poll::Ready(Next::TimedOut(cause));
        }
        upstream.as_mut().poll_next(cx).map(Next::Item)
    })
    .await
}

/// Waits until the client takes an item, leaves, or gives up: the send timeout
/// passes, or the deadline does (when `watch` is given) while the item waits for the
/// client.
async fn hand_over<C, F, W, T>(
    mut closed: Pin<&mut C>,
    mut send: Pin<&mut F>,
    mut timeout: Pin<&mut Option<W>>,
    mut watch: Option<Pin<&mut Timers<'_, T>>>,
) -> HandOver
where
    C: Future<Output = ()>,
    F: Future<Output = Result<(), ClientGone>>,
    W: Future<Output = ()>,
    T: Timer + ?Sized,
{
    // Whether the client has kept the item waiting.
    let mut waited = false;
    poll_fn(|cx| {
        if closed.as_mut().poll(cx).is_ready() {
            return Poll::Ready(HandOver::Closed);
        }
        let sent = send.as_mut().poll(cx);
        waited |= sent.is_pending();
        // The deadline was not due when the item came: if it is now, and the client
        // kept the item waiting, it passed on the client's time.
        let late = waited
            && watch
                .as_mut()
                .is_some_and(|watch| watch.as_mut().poll_deadline(cx).is_ready());
        match sent {
            Poll::Ready(Ok(())) if late => return Poll::Ready(HandOver::TakenLate),
            Poll::Ready(Ok(())) => return Poll::Ready(HandOver::Taken),
            Poll::Ready(Err(ClientGone)) => return Poll::Ready(HandOver::Closed),
            Poll::Pending if late => return Poll::Ready(HandOver::TimedOut),
            Poll::Pending => {}
        }
        if let Some(sleep) = timeout.as_mut().as_pin_mut() {
            if sleep.poll(cx).is_ready() {
                return Poll::Ready(HandOver::TimedOut);
            }
        }
        Poll::Pending
    })
    .await
}

/// The client left: return at once, or drain the upstream within the limit.
async fn on_close<S, B, E, R, W, X, T>(
    mut upstream: Pin<&mut TrackedStream<S, R, W, X>>,
    timer: &T,
    mut watch: Pin<&mut Timers<'_, T>>,
    options: &ForwardOptions,
) -> Ending
where
    S: Stream<Item = Result<B, E>>,
    B: AsRef<[u8]>,
    R: Recorder,
    W: ProgressTimers,
    X: FailureTail<B, E>,
    T: Timer + ?Sized,
{
    let OnClose::Drain { limit } = options.on_close() else {
        return Ending::ClientGone;
    };
    let mut limit = pin!(timer.sleep(limit));
    let mut handled = 0;
    loop {
        // Draining still waits on the worker: its timers go on. The limit is polled
        // first, so an always-ready upstream cannot outrun it.
        let next = next_item(upstream.as_mut(), limit.as_mut(), watch.as_mut()).await;
        match next {
            // The item is discarded; an error item or the end is the verdict.
            Next::Item(Some(Ok(_))) => fair(&mut handled).await,
            Next::Item(Some(Err(_)) | None) => return Ending::ClientGone,
            Next::TimedOut(cause) => return timed_out(upstream, cause, Ending::ClientGone),
            // The drain limit passed: give up as under `Cancel`.
            Next::Stopped => return Ending::ClientGone,
        }
    }
}

#[cfg(test)]
mod tests;
