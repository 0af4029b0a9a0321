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
use core::time::Duration;

use futures_core::Stream;

use crate::failure::FailureTail;
pub use crate::timers::Timer;
use crate::timers::{ProgressWatch, Timeouts, Watch};
use crate::{Cause, Outcome, Recorder, Terminal, TrackedStream};

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

/// What to do with the upstream when the client leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum OnClose {
    /// Drop the upstream at once, before polling it again (the default). The
    /// worker's connection closes and it stops generating.
    #[default]
    Cancel,
    /// Keep reading the upstream and discard its items, for at most `limit`, so the
    /// answer runs to its end and the verdict is the upstream's. When the limit
    /// passes first, the upstream is dropped as under `Cancel`.
    Drain {
        /// How long to keep reading after the client left.
        limit: Duration,
    },
}

/// How [`forward`] behaves: the worker's timers, the client's send timeout, and the
/// policy on client close. All timeouts are off by default.
///
/// ```
/// use core::time::Duration;
/// use sluice::forward::{ForwardOptions, OnClose};
///
/// let options = ForwardOptions::default()
///     .first_token_timeout(Duration::from_secs(30))
///     .idle_timeout(Duration::from_secs(10))
///     .deadline(Duration::from_secs(600))
///     .send_timeout(Duration::from_secs(5))
///     .drain_on_close(Duration::from_secs(60));
/// assert_eq!(options.on_close(), OnClose::Drain { limit: Duration::from_secs(60) });
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ForwardOptions {
    timeouts: Timeouts,
    send: Option<Duration>,
    on_close: OnClose,
}

impl ForwardOptions {
    /// The upstream must make its first progress (with SSE rules, an event that is
    /// not a keep-alive: the first token; without, any item) within `timeout` of the
    /// start of forwarding (prefill), or the stream fails with cause
    /// [`FirstTokenTimeout`](Cause::FirstTokenTimeout).
    #[must_use]
    pub const fn first_token_timeout(mut self, timeout: Duration) -> Self {
        self.timeouts = self.timeouts.first_token(timeout);
        self
    }

    /// After progress was handed to the client, the upstream must make progress
    /// again within `timeout`, or the stream fails with cause
    /// [`IdleTimeout`](Cause::IdleTimeout). Keep-alives do not reset it; the time
    /// the client takes to accept an item does not count. After the done event, it
    /// bounds the wait for the upstream's end (which then blames nobody).
    #[must_use]
    pub const fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.timeouts = self.timeouts.idle(timeout);
        self
    }

    /// The whole stream must end within `deadline` of the start of forwarding, or it
    /// fails with cause [`Deadline`](Cause::Deadline). It fires on time however busy
    /// the worker is. If it passes while an item waits for a slow client, the client
    /// is to blame, not the worker: forwarding ends with [`Ending::TimedOut`] and
    /// nothing marked (cause [`ClientStalled`](Cause::ClientStalled) if no end was
    /// seen), as after the [`send_timeout`](Self::send_timeout).
    #[must_use]
    pub const fn deadline(mut self, deadline: Duration) -> Self {
        self.timeouts = self.timeouts.deadline(deadline);
        self
    }

    /// The client must accept each item within `timeout` (a full bounded channel
    /// means it stopped reading), or forwarding ends with [`Ending::TimedOut`]. The
    /// worker is not blamed: nothing is marked (cause
    /// [`ClientStalled`](Cause::ClientStalled) if no end was seen).
    #[must_use]
    pub const fn send_timeout(mut self, timeout: Duration) -> Self {
        self.send = Some(timeout);
        self
    }

    /// Sets the policy when the client leaves.
    #[must_use]
    pub const fn with_on_close(mut self, on_close: OnClose) -> Self {
        self.on_close = on_close;
        self
    }

    /// Shorthand for [`OnClose::Drain`] with `limit`.
    #[must_use]
    pub const fn drain_on_close(self, limit: Duration) -> Self {
        self.with_on_close(OnClose::Drain { limit })
    }

    /// The policy when the client leaves.
    pub const fn on_close(&self) -> OnClose {
        self.on_close
    }

    /// The worker's timers (first token, idle, deadline) as [`Timeouts`], for a
    /// [`ProgressWatch`] or
    /// [`TrackedStream::with_timers`](crate::TrackedStream::with_timers).
    pub const fn timeouts(&self) -> Timeouts {
        self.timeouts
    }
}

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
    W: Watch,
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
    W: Watch,
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
    W: Watch,
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
    W: Watch,
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
    W: Watch,
    X: FailureTail<B, E>,
    T: Timer + ?Sized,
{
    let OnClose::Drain { limit } = options.on_close else {
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
mod tests {
    //! The loop under a scripted upstream, client and clock, driven by hand: every
    //! poll is explicit, so each ordering is exact and nothing depends on time.
    extern crate std;

    use super::*;
    use crate::Verdict;
    use crate::sse::SseRules;
    use core::cell::{Cell, RefCell};
    use core::task::{Context, Waker};
    use std::collections::VecDeque;
    use std::rc::Rc;
    use std::vec::Vec;

    type Item = Result<&'static [u8], ()>;

    /// One step of the scripted upstream; an empty script is pending.
    enum Step {
        Item(Item),
        Pending,
        End,
    }

    #[derive(Default)]
    struct Script {
        steps: VecDeque<Step>,
        polls: usize,
        dropped: bool,
        ticking: Option<Ticking>,
    }

    /// Once the steps run out: `item` is always ready, each poll moving `now` by `gap`.
    struct Ticking {
        item: &'static [u8],
        now: Rc<Cell<Duration>>,
        gap: Duration,
    }

    struct Upstream(Rc<RefCell<Script>>);

    impl Stream for Upstream {
        type Item = Item;
        fn poll_next(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Item>> {
            let mut script = self.0.borrow_mut();
            script.polls += 1;
            match script.steps.pop_front() {
                Some(Step::Item(item)) => Poll::Ready(Some(item)),
                Some(Step::End) => Poll::Ready(None),
                Some(Step::Pending) => Poll::Pending,
                None => match &script.ticking {
                    Some(t) => {
                        t.now.set(t.now.get() + t.gap);
                        Poll::Ready(Some(Ok(t.item)))
                    }
                    None => Poll::Pending,
                },
            }
        }
    }

    impl Drop for Upstream {
        fn drop(&mut self) {
            self.0.borrow_mut().dropped = true;
        }
    }

    /// A client with room for `room` items.
    #[derive(Default)]
    struct Client {
        closed: Cell<bool>,
        room: Cell<usize>,
        got: RefCell<Vec<Item>>,
    }

    impl Downstream<Item> for Client {
        fn send(&self, item: Item) -> impl Future<Output = Result<(), ClientGone>> {
            let mut item = Some(item);
            poll_fn(move |_| {
                if self.closed.get() {
                    return Poll::Ready(Err(ClientGone));
                }
                if self.room.get() == 0 {
                    return Poll::Pending;
                }
                self.room.set(self.room.get() - 1);
                self.got.borrow_mut().extend(item.take());
                Poll::Ready(Ok(()))
            })
        }

        fn closed(&self) -> impl Future<Output = ()> {
            poll_fn(|_| match self.closed.get() {
                true => Poll::Ready(()),
                false => Poll::Pending,
            })
        }
    }

    /// A clock moved by hand; its sleeps share its time.
    #[derive(Default)]
    struct Clock(Rc<Cell<Duration>>);

    impl Clock {
        fn advance(&self, by: Duration) {
            self.0.set(self.0.get() + by);
        }
    }

    struct Sleep {
        now: Rc<Cell<Duration>>,
        end: Duration,
    }

    impl Future for Sleep {
        type Output = ();
        fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
            match self.now.get() >= self.end {
                true => Poll::Ready(()),
                false => Poll::Pending,
            }
        }
    }

    impl Timer for Clock {
        type Sleep = Sleep;
        fn sleep(&self, duration: Duration) -> Sleep {
            Sleep {
                now: self.0.clone(),
                end: self.0.get() + duration,
            }
        }
    }

    /// One scripted run: the upstream, what it recorded, the client and the clock.
    struct Rig {
        script: Rc<RefCell<Script>>,
        records: Rc<RefCell<Vec<Outcome>>>,
        client: Client,
        clock: Clock,
    }

    const SEC: Duration = Duration::from_secs(1);

    impl Rig {
        fn new(steps: impl IntoIterator<Item = Step>) -> Self {
            let script = Script {
                steps: steps.into_iter().collect(),
                ..Script::default()
            };
            let client = Client::default();
            client.room.set(usize::MAX);
            Self {
                script: Rc::new(RefCell::new(script)),
                records: Rc::default(),
                client,
                clock: Clock::default(),
            }
        }

        fn tracked(&self) -> TrackedStream<Upstream, impl Recorder + use<>> {
            let records = self.records.clone();
            TrackedStream::new(Upstream(self.script.clone()), move |o: Outcome| {
                records.borrow_mut().push(o)
            })
        }

        /// `forward` over this rig's upstream, client and clock.
        fn forward(&self, options: ForwardOptions) -> impl Future<Output = Forwarded> + '_ {
            forward(self.tracked(), &self.client, &self.clock, options)
        }

        /// The same with the upstream scanned as SSE under `rules`.
        fn forward_sse(
            &self,
            rules: SseRules,
            options: ForwardOptions,
        ) -> impl Future<Output = Forwarded> + '_ {
            forward(
                self.tracked().with_sse(rules),
                &self.client,
                &self.clock,
                options,
            )
        }

        /// After its steps, the upstream is always ready with `item`, and each poll
        /// moves the clock by `gap`.
        fn ticking(&self, item: &'static [u8], gap: Duration) {
            let now = self.clock.0.clone();
            self.script.borrow_mut().ticking = Some(Ticking { item, now, gap });
        }

        fn push(&self, step: Step) {
            self.script.borrow_mut().steps.push_back(step);
        }

        /// The upstream sends `item` every `gap`, `times` times; the loop is still
        /// waiting after each.
        fn trickle<F: Future>(
            &self,
            mut fut: Pin<&mut F>,
            item: &'static [u8],
            gap: Duration,
            times: usize,
        ) {
            for _ in 0..times {
                self.clock.advance(gap);
                self.push(Step::Item(Ok(item)));
                assert!(poll(fut.as_mut()).is_pending());
            }
        }

        fn polls(&self) -> usize {
            self.script.borrow().polls
        }

        fn dropped(&self) -> bool {
            self.script.borrow().dropped
        }

        fn recorded(&self) -> Vec<Verdict> {
            self.records.borrow().iter().map(|o| o.verdict).collect()
        }
    }

    /// How forwarding ended, with the verdict and its cause.
    fn summary(out: &Forwarded) -> (Ending, Verdict, Cause) {
        (out.ending, out.outcome.verdict, out.outcome.cause)
    }

    /// The tiny executor: one poll with a no-op waker.
    fn poll<F: Future>(fut: Pin<&mut F>) -> Poll<F::Output> {
        fut.poll(&mut Context::from_waker(Waker::noop()))
    }

    fn done<F: Future>(fut: Pin<&mut F>) -> F::Output {
        match poll(fut) {
            Poll::Ready(out) => out,
            Poll::Pending => panic!("still pending"),
        }
    }

    const A: &[u8] = b"data: a\n\n";
    const B: &[u8] = b"data: b\n\n";

    #[test]
    fn forwards_in_order_and_records_before_returning() {
        let rig = Rig::new([Step::Item(Ok(A)), Step::Pending, Step::Item(Ok(B))]);
        let mut fut = pin!(rig.forward(ForwardOptions::default()));
        assert!(poll(fut.as_mut()).is_pending());
        assert_eq!(*rig.client.got.borrow(), [Ok(A)]);
        assert!(poll(fut.as_mut()).is_pending());
        rig.push(Step::End);
        let out = done(fut.as_mut());
        assert_eq!(out.ending, Ending::Completed);
        assert_eq!(
            out.outcome,
            Outcome::new(Verdict::Success, Cause::End, 2, 18)
        );
        assert_eq!(*rig.client.got.borrow(), [Ok(A), Ok(B)]);
        assert!(rig.dropped());
        assert_eq!(rig.recorded(), [Verdict::Success]);
    }

    #[test]
    fn close_wins_over_a_ready_item_and_drops_the_upstream_unpolled() {
        let rig = Rig::new([Step::Item(Ok(A))]);
        let mut fut = pin!(rig.forward(ForwardOptions::default()));
        assert!(poll(fut.as_mut()).is_pending()); // A sent, upstream pending
        let polls = rig.polls();
        rig.push(Step::Item(Ok(B)));
        rig.client.closed.set(true);
        let out = done(fut.as_mut());
        assert_eq!(out.ending, Ending::ClientGone);
        assert_eq!(out.outcome.verdict, Verdict::Abandoned);
        assert_eq!(
            rig.polls(),
            polls,
            "the upstream was polled after the close"
        );
        assert!(rig.dropped());
        assert_eq!(rig.recorded(), [Verdict::Abandoned]);
        assert_eq!(*rig.client.got.borrow(), [Ok(A)]);
    }

    #[test]
    fn client_gone_before_start_never_polls_the_upstream() {
        let rig = Rig::new([Step::Item(Ok(A))]);
        rig.client.closed.set(true);
        let fut = pin!(rig.forward(ForwardOptions::default()));
        assert_eq!(done(fut).ending, Ending::ClientGone);
        assert_eq!(
            (rig.polls(), rig.recorded()),
            (0, [Verdict::Abandoned].into())
        );
    }

    #[test]
    fn close_while_a_send_waits_for_room() {
        let rig = Rig::new([Step::Item(Ok(A))]);
        rig.client.room.set(0);
        let mut fut = pin!(rig.forward(ForwardOptions::default()));
        assert!(poll(fut.as_mut()).is_pending());
        rig.client.closed.set(true);
        let out = done(fut.as_mut());
        assert_eq!(
            (out.ending, out.outcome.verdict),
            (Ending::ClientGone, Verdict::Abandoned)
        );
        assert!(rig.dropped());
    }

    #[test]
    fn an_error_item_is_passed_on_then_forwarding_stops() {
        let rig = Rig::new([Step::Item(Ok(A)), Step::Item(Err(())), Step::Item(Ok(B))]);
        let fut = pin!(rig.forward(ForwardOptions::default()));
        let out = done(fut);
        assert_eq!(
            (out.ending, out.outcome.verdict),
            (Ending::UpstreamError, Verdict::Failure)
        );
        assert_eq!(*rig.client.got.borrow(), [Ok(A), Err(())]);
        assert_eq!(rig.polls(), 2);
        assert_eq!(rig.recorded(), [Verdict::Failure]);
    }

    #[test]
    fn done_then_close_is_a_success() {
        let rig = Rig::new([Step::Item(Ok(b"data: [DONE]\n\n"))]);
        let tracked = rig.tracked().with_sse(crate::sse::SseRules::openai_chat());
        let mut fut = pin!(forward(
            tracked,
            &rig.client,
            &rig.clock,
            ForwardOptions::default()
        ));
        assert!(poll(fut.as_mut()).is_pending());
        rig.client.closed.set(true);
        let out = done(fut.as_mut());
        assert_eq!(
            (out.ending, out.outcome.verdict),
            (Ending::ClientGone, Verdict::Success)
        );
    }

    #[test]
    fn first_token_timeout_marks_a_failure() {
        let rig = Rig::new([]);
        let options = ForwardOptions::default()
            .first_token_timeout(SEC)
            .idle_timeout(SEC * 10);
        let mut fut = pin!(rig.forward(options));
        assert!(poll(fut.as_mut()).is_pending());
        rig.clock.advance(SEC - Duration::from_nanos(1));
        assert!(poll(fut.as_mut()).is_pending());
        rig.clock.advance(Duration::from_nanos(1));
        let out = done(fut.as_mut());
        assert_eq!(
            (out.ending, out.outcome.verdict),
            (Ending::TimedOut, Verdict::Failure)
        );
        assert!(rig.dropped());
    }

    #[test]
    fn idle_timeout_restarts_after_each_item_and_marks_a_failure() {
        let rig = Rig::new([]);
        let options = ForwardOptions::default()
            .first_token_timeout(SEC * 10)
            .idle_timeout(SEC);
        let mut fut = pin!(rig.forward(options));
        assert!(poll(fut.as_mut()).is_pending());
        rig.clock.advance(SEC * 9); // prefill: within the first-chunk timeout
        rig.push(Step::Item(Ok(A)));
        assert!(poll(fut.as_mut()).is_pending());
        rig.clock.advance(SEC / 2);
        rig.push(Step::Item(Ok(B)));
        assert!(poll(fut.as_mut()).is_pending());
        rig.clock.advance(SEC / 2); // one second since A, half since B
        assert!(poll(fut.as_mut()).is_pending());
        rig.clock.advance(SEC / 2);
        let out = done(fut.as_mut());
        assert_eq!(
            (out.ending, out.outcome.verdict),
            (Ending::TimedOut, Verdict::Failure)
        );
        assert_eq!(out.outcome.chunks, 2);
    }

    #[test]
    fn a_due_timer_wins_over_a_ready_item() {
        let rig = Rig::new([]);
        let options = ForwardOptions::default().first_token_timeout(SEC);
        let mut fut = pin!(rig.forward(options));
        assert!(poll(fut.as_mut()).is_pending());
        let polls = rig.polls();
        rig.clock.advance(SEC);
        rig.push(Step::Item(Ok(A)));
        rig.push(Step::End);
        let out = done(fut.as_mut());
        assert_eq!(
            summary(&out),
            (Ending::TimedOut, Verdict::Failure, Cause::FirstTokenTimeout)
        );
        assert_eq!(rig.polls(), polls, "the upstream was polled past its timer");
        assert!(rig.client.got.borrow().is_empty());
    }

    /// An upstream that is always ready and moves the clock on each poll: the
    /// deadline fires after as many items as fit in it, not never.
    #[test]
    fn the_deadline_fires_over_an_always_ready_upstream() {
        for item in [PING, TOKEN] {
            let rig = Rig::new([]);
            rig.ticking(item, SEC / 10);
            let options = ForwardOptions::default().deadline(SEC);
            let mut fut = pin!(rig.forward_sse(SseRules::openai_chat(), options));
            let mut polls = 0;
            let out = loop {
                polls += 1;
                assert!(polls < 100, "the deadline never fired");
                if let Poll::Ready(out) = poll(fut.as_mut()) {
                    break out;
                }
            };
            assert_eq!(
                summary(&out),
                (Ending::TimedOut, Verdict::Failure, Cause::Deadline)
            );
            assert_eq!(
                out.outcome.chunks, 10,
                "one item per tick, up to the deadline"
            );
        }
    }

    #[test]
    fn the_idle_timer_fires_over_always_ready_keep_alives() {
        let rig = Rig::new([Step::Item(Ok(TOKEN))]);
        rig.ticking(PING, SEC / 10);
        let options = ForwardOptions::default().idle_timeout(SEC);
        let mut fut = pin!(rig.forward_sse(SseRules::openai_chat(), options));
        let out = loop {
            if let Poll::Ready(out) = poll(fut.as_mut()) {
                break out;
            }
            assert!(rig.polls() < 100, "the idle timer never fired");
        };
        assert_eq!(
            summary(&out),
            (Ending::TimedOut, Verdict::Failure, Cause::IdleTimeout)
        );
        assert_eq!(out.outcome.chunks, 11, "a token, then pings for a second");
    }

    #[test]
    fn a_deadline_that_passes_while_the_client_is_slow_blames_the_client() {
        let rig = Rig::new([Step::Item(Ok(TOKEN)), Step::Item(Ok(TOKEN))]);
        rig.client.room.set(1);
        let options = ForwardOptions::default().deadline(SEC);
        let mut fut = pin!(rig.forward_sse(SseRules::openai_chat(), options));
        assert!(poll(fut.as_mut()).is_pending()); // the second token waits for room
        rig.clock.advance(SEC);
        let out = done(fut.as_mut());
        assert_eq!(
            summary(&out),
            (Ending::TimedOut, Verdict::Abandoned, Cause::ClientStalled)
        );
        assert_eq!(rig.recorded(), [Verdict::Abandoned]);
    }

    #[test]
    fn a_deadline_while_the_client_is_slow_after_done_keeps_the_success() {
        let rig = Rig::new([Step::Item(Ok(DONE)), Step::Item(Ok(PING))]);
        rig.client.room.set(1);
        let options = ForwardOptions::default().deadline(SEC);
        let mut fut = pin!(rig.forward_sse(SseRules::openai_chat(), options));
        assert!(poll(fut.as_mut()).is_pending());
        rig.clock.advance(SEC);
        let out = done(fut.as_mut());
        assert_eq!(
            summary(&out),
            (Ending::TimedOut, Verdict::Success, Cause::Done)
        );
    }

    #[test]
    fn a_client_that_stops_reading_times_out_without_blaming_the_worker() {
        let rig = Rig::new([Step::Item(Ok(A)), Step::Item(Ok(B))]);
        rig.client.room.set(1);
        let options = ForwardOptions::default().send_timeout(SEC);
        let mut fut = pin!(rig.forward(options));
        assert!(poll(fut.as_mut()).is_pending());
        rig.clock.advance(SEC);
        let out = done(fut.as_mut());
        assert_eq!(
            (out.ending, out.outcome.verdict),
            (Ending::TimedOut, Verdict::Abandoned)
        );
        assert_eq!(*rig.client.got.borrow(), [Ok(A)]);
    }

    #[test]
    fn drain_reads_the_rest_and_takes_the_upstream_verdict() {
        for (last, verdict) in [
            (Step::End, Verdict::Success),
            (Step::Item(Err(())), Verdict::Failure),
        ] {
            let rig = Rig::new([Step::Item(Ok(A))]);
            let options = ForwardOptions::default().drain_on_close(SEC);
            let mut fut = pin!(rig.forward(options));
            assert!(poll(fut.as_mut()).is_pending());
            rig.client.closed.set(true);
            assert!(poll(fut.as_mut()).is_pending());
            assert!(!rig.dropped());
            rig.push(Step::Item(Ok(B)));
            rig.push(last);
            let out = done(fut.as_mut());
            assert_eq!(
                (out.ending, out.outcome.verdict),
                (Ending::ClientGone, verdict)
            );
            assert_eq!(
                *rig.client.got.borrow(),
                [Ok(A)],
                "drained items are discarded"
            );
            assert_eq!(rig.recorded(), [verdict]);
        }
    }

    #[test]
    fn the_drain_limit_gives_up_as_cancel_would() {
        let rig = Rig::new([Step::Item(Ok(A))]);
        let options = ForwardOptions::default().drain_on_close(SEC);
        let mut fut = pin!(rig.forward(options));
        assert!(poll(fut.as_mut()).is_pending());
        rig.client.closed.set(true);
        assert!(poll(fut.as_mut()).is_pending());
        rig.clock.advance(SEC);
        let out = done(fut.as_mut());
        assert_eq!(
            (out.ending, out.outcome.verdict),
            (Ending::ClientGone, Verdict::Abandoned)
        );
        assert!(rig.dropped());
    }

    #[test]
    fn the_drain_limit_holds_against_an_always_ready_upstream() {
        let rig = Rig::new([Step::Item(Ok(A))]);
        let options = ForwardOptions::default().drain_on_close(SEC);
        let mut fut = pin!(rig.forward(options));
        assert!(poll(fut.as_mut()).is_pending());
        rig.client.closed.set(true);
        assert!(poll(fut.as_mut()).is_pending());
        let polls = rig.polls();
        for _ in 0..1_000 {
            rig.push(Step::Item(Ok(B)));
        }
        rig.clock.advance(SEC);
        let out = done(fut.as_mut());
        assert_eq!(
            (out.ending, out.outcome.verdict),
            (Ending::ClientGone, Verdict::Abandoned)
        );
        assert_eq!(rig.polls(), polls, "nothing read past the limit");
    }

    #[test]
    fn an_always_ready_upstream_yields_to_the_executor() {
        for options in [
            ForwardOptions::default(),
            ForwardOptions::default().drain_on_close(SEC),
        ] {
            let rig = Rig::new((0..200).map(|_| Step::Item(Ok(A))).chain([Step::End]));
            let mut fut = pin!(rig.forward(options));
            if options.on_close() != OnClose::Cancel {
                rig.client.closed.set(true);
            }
            let mut polls = 0;
            let out = loop {
                polls += 1;
                assert!(polls < 1_000, "never finished");
                if let Poll::Ready(out) = poll(fut.as_mut()) {
                    break out;
                }
            };
            assert!(polls > 200 / YIELD_EVERY as usize, "{polls} polls");
            assert_eq!(out.outcome.verdict, Verdict::Success);
        }
    }

    #[test]
    fn a_stalled_drain_hits_the_idle_timeout() {
        let rig = Rig::new([Step::Item(Ok(A))]);
        let options = ForwardOptions::default()
            .drain_on_close(SEC * 10)
            .idle_timeout(SEC);
        let mut fut = pin!(rig.forward(options));
        assert!(poll(fut.as_mut()).is_pending());
        rig.client.closed.set(true);
        assert!(poll(fut.as_mut()).is_pending());
        rig.clock.advance(SEC);
        let out = done(fut.as_mut());
        assert_eq!(
            (out.ending, out.outcome.verdict),
            (Ending::ClientGone, Verdict::Failure)
        );
    }

    const PING: &[u8] = b":\n\n";
    const TOKEN: &[u8] = b"data: {\"choices\":[]}\n\n";
    const DONE: &[u8] = b"data: [DONE]\n\n";

    #[test]
    fn keep_alives_do_not_satisfy_the_first_token_timeout() {
        let rig = Rig::new([Step::Item(Ok(PING))]);
        let options = ForwardOptions::default().first_token_timeout(SEC);
        let mut fut = pin!(rig.forward_sse(SseRules::openai_chat(), options));
        assert!(poll(fut.as_mut()).is_pending());
        rig.clock.advance(SEC / 2);
        rig.push(Step::Item(Ok(PING)));
        assert!(poll(fut.as_mut()).is_pending());
        rig.clock.advance(SEC / 2);
        let out = done(fut.as_mut());
        assert_eq!(
            summary(&out),
            (Ending::TimedOut, Verdict::Failure, Cause::FirstTokenTimeout)
        );
        assert_eq!(
            *rig.client.got.borrow(),
            [Ok(PING), Ok(PING)],
            "pings still pass"
        );
    }

    #[test]
    fn anthropic_pings_do_not_reset_the_idle_timer() {
        const EVENT: &[u8] = b"event: content_block_delta\ndata: {}\n\n";
        const PING: &[u8] = b"event: ping\ndata: {\"type\": \"ping\"}\n\n";
        let rig = Rig::new([Step::Item(Ok(EVENT))]);
        let options = ForwardOptions::default().idle_timeout(SEC);
        let mut fut = pin!(rig.forward_sse(SseRules::anthropic(), options));
        assert!(poll(fut.as_mut()).is_pending());
        rig.trickle(fut.as_mut(), PING, SEC / 4, 3);
        rig.clock.advance(SEC / 4);
        let out = done(fut.as_mut());
        assert_eq!(
            summary(&out),
            (Ending::TimedOut, Verdict::Failure, Cause::IdleTimeout)
        );
    }

    #[test]
    fn progress_resets_the_idle_timer() {
        let rig = Rig::new([Step::Item(Ok(TOKEN))]);
        let options = ForwardOptions::default().idle_timeout(SEC);
        let mut fut = pin!(rig.forward_sse(SseRules::openai_chat(), options));
        assert!(poll(fut.as_mut()).is_pending());
        rig.trickle(fut.as_mut(), TOKEN, SEC * 3 / 4, 5);
        rig.push(Step::Item(Ok(DONE)));
        rig.push(Step::End);
        let out = done(fut.as_mut());
        assert_eq!(
            summary(&out),
            (Ending::Completed, Verdict::Success, Cause::Done)
        );
    }

    #[test]
    fn a_timer_after_the_done_event_blames_nobody() {
        let rig = Rig::new([Step::Item(Ok(TOKEN)), Step::Item(Ok(DONE))]);
        let options = ForwardOptions::default()
            .idle_timeout(SEC)
            .deadline(SEC * 60);
        let mut fut = pin!(rig.forward_sse(SseRules::openai_chat(), options));
        // The worker said `[DONE]` and keeps the connection open.
        assert!(poll(fut.as_mut()).is_pending());
        rig.clock.advance(SEC);
        let out = done(fut.as_mut());
        assert_eq!(
            summary(&out),
            (Ending::Completed, Verdict::Success, Cause::Done)
        );
        assert!(rig.dropped());
        assert_eq!(rig.recorded(), [Verdict::Success]);
    }

    #[test]
    fn the_deadline_fires_however_busy_the_worker_is() {
        let rig = Rig::new([Step::Item(Ok(TOKEN))]);
        let options = ForwardOptions::default()
            .idle_timeout(SEC)
            .deadline(SEC * 3);
        let mut fut = pin!(rig.forward_sse(SseRules::openai_chat(), options));
        assert!(poll(fut.as_mut()).is_pending());
        rig.trickle(fut.as_mut(), TOKEN, SEC / 2, 5);
        rig.clock.advance(SEC / 2);
        let out = done(fut.as_mut());
        assert_eq!(
            summary(&out),
            (Ending::TimedOut, Verdict::Failure, Cause::Deadline)
        );
        assert_eq!(out.outcome.chunks, 6);
    }

    #[test]
    fn an_error_object_is_a_failure_even_when_done_follows() {
        const ERROR: &[u8] = b"data: {\"error\": {\"message\": \"boom\", \"code\": 500}}\n\n";
        let rig = Rig::new([
            Step::Item(Ok(TOKEN)),
            Step::Item(Ok(ERROR)),
            Step::Item(Ok(DONE)),
            Step::End,
        ]);
        let fut = pin!(rig.forward_sse(SseRules::openai_chat(), ForwardOptions::default()));
        let out = done(fut);
        assert_eq!(
            summary(&out),
            (Ending::Completed, Verdict::Failure, Cause::ErrorEvent)
        );
        assert_eq!(
            rig.client.got.borrow().len(),
            3,
            "every item reached the client"
        );
    }

    #[test]
    fn an_end_before_done_is_truncated() {
        let rig = Rig::new([Step::Item(Ok(TOKEN)), Step::End]);
        let fut = pin!(rig.forward_sse(SseRules::openai_chat(), ForwardOptions::default()));
        let out = done(fut);
        assert_eq!(
            summary(&out),
            (Ending::Completed, Verdict::Failure, Cause::Truncated)
        );
    }

    #[test]
    fn a_stalled_client_is_abandoned_with_its_own_cause() {
        let rig = Rig::new([Step::Item(Ok(TOKEN)), Step::Item(Ok(TOKEN))]);
        rig.client.room.set(1);
        let options = ForwardOptions::default().send_timeout(SEC);
        let mut fut = pin!(rig.forward_sse(SseRules::openai_chat(), options));
        assert!(poll(fut.as_mut()).is_pending());
        rig.clock.advance(SEC);
        let out = done(fut.as_mut());
        assert_eq!(
            summary(&out),
            (Ending::TimedOut, Verdict::Abandoned, Cause::ClientStalled)
        );
    }

    #[test]
    fn dropping_the_forward_future_drops_the_upstream() {
        let rig = Rig::new([Step::Item(Ok(A))]);
        {
            let mut fut = pin!(rig.forward(ForwardOptions::default()));
            assert!(poll(fut.as_mut()).is_pending());
            assert!(!rig.dropped());
        }
        assert!(rig.dropped());
        assert_eq!(rig.recorded(), [Verdict::Abandoned]);
    }

    #[test]
    fn until_closed_runs_the_future_or_drops_it_when_the_client_leaves() {
        let rig = Rig::new([]);
        let ok = pin!(until_closed(&rig.client, async { 7 }));
        assert_eq!(done(ok), Ok(7));

        let dropped = Rc::new(Cell::new(false));
        struct Flag(Rc<Cell<bool>>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.set(true);
            }
        }
        let flag = Flag(dropped.clone());
        let mut fut = pin!(until_closed(&rig.client, async move {
            let _flag = flag;
            core::future::pending::<()>().await
        }));
        assert!(poll(fut.as_mut()).is_pending());
        assert!(!dropped.get());
        rig.client.closed.set(true);
        assert_eq!(done(fut.as_mut()), Err(ClientGone));
        assert!(dropped.get());
    }
}
