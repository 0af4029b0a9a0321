//! The worker's progress timers, without a clock: first token, idle, and a deadline.
//!
//! The core reads no clock. A [`Timer`] is the runtime's sleep (`sluice_tokio::TokioTimer`,
//! `sluice_smol::SmolTimer`, or a test's manual clock), and [`ProgressWatch`] is the
//! small state that races those sleeps against a stream's **progress**: the count a
//! [`Ledger`](crate::wrap::Ledger) keeps in [`progress`](crate::wrap::Ledger::progress) (with SSE
//! rules the events that are not keep-alives, without them every data item).
//!
//! [`TrackedStream::with_timers`](crate::TrackedStream::with_timers) puts one inside a
//! tracked stream; [`forward`](crate::forward::forward) runs one beside it; a body
//! wrapper holds one beside its [`Ledger`](crate::wrap::Ledger) and calls
//! [`ProgressWatch::poll_expired`] from its `poll_frame`.
//!
//! # The rules
//!
//! * **First token**: from the start of the watch (its first poll, or
//!   [`start`](ProgressWatch::start)) to the first progress. Keep-alives do not count.
//! * **Idle**: from the poll that first sees new progress to the next progress.
//! * **Deadline**: from the start to the end, whatever the traffic.
//! * **A due timer wins.** A driver polls the watch before the inner stream, so an
//!   inner stream that is always ready cannot keep a timer from firing.
//! * A timer that fires is the worker's fault (causes
//!   [`FirstTokenTimeout`](Cause::FirstTokenTimeout), [`IdleTimeout`](Cause::IdleTimeout),
//!   [`Deadline`](Cause::Deadline)) unless the stream already completed in-band (its
//!   done event, itself progress, so only the idle time or the deadline is left to
//!   run): then the driver only stops waiting for the upstream's end, and the verdict
//!   stays [`Success`](crate::Verdict::Success). [`Ledger::expire`](crate::wrap::Ledger::expire)
//!   applies that rule.

use core::future::{Future, Pending, pending};
use core::pin::Pin;
use core::task::{Context, Poll, Waker};
use core::time::Duration;

use pin_project_lite::pin_project;

use crate::Cause;

/// A source of sleeps: the runtime's timer.
pub trait Timer {
    /// A sleep: a future that resolves once its time has come.
    type Sleep: Future<Output = ()>;

    /// Resolves `duration` after this call (the deadline is set when `sleep` is
    /// called, not when the future is first polled).
    fn sleep(&self, duration: Duration) -> Self::Sleep;

    /// Makes `sleep` resolve `duration` after this call instead, as a new
    /// [`sleep`](Self::sleep) would. The idle timer is restarted at every token, so a
    /// runtime whose sleeps can move in place (tokio's `Sleep::reset`, which only
    /// pushes a later deadline forward) should say so here; the default replaces the
    /// sleep.
    fn reset(&self, mut sleep: Pin<&mut Self::Sleep>, duration: Duration) {
        sleep.set(self.sleep(duration));
    }

    /// Whether a sleep moved by [`reset`](Self::reset) still wakes the task that last
    /// polled it, without being polled again (tokio's timer entry keeps its waker
    /// when its deadline moves). Then a watch polled again by the same task does not
    /// poll its sleeps after the idle timer is restarted, only asks
    /// [`is_elapsed`](Self::is_elapsed). `false` (the default, right for the default
    /// `reset`, which makes a new sleep) polls them after every reset.
    const RESET_KEEPS_WAKER: bool = false;

    /// Whether `sleep` has resolved, if the runtime can tell without polling it
    /// (tokio can: `Sleep::is_elapsed`, one atomic load). A watch polled again by the
    /// task its sleeps already woke asks this instead of polling them each time;
    /// `None` (the default) means the runtime cannot tell, and the sleep is polled.
    fn is_elapsed(&self, sleep: &Self::Sleep) -> Option<bool> {
        let _ = sleep;
        None
    }
}

impl<T: Timer + ?Sized> Timer for &T {
    type Sleep = T::Sleep;

    fn sleep(&self, duration: Duration) -> T::Sleep {
        (**self).sleep(duration)
    }

    fn reset(&self, sleep: Pin<&mut T::Sleep>, duration: Duration) {
        (**self).reset(sleep, duration);
    }

    const RESET_KEEPS_WAKER: bool = T::RESET_KEEPS_WAKER;

    fn is_elapsed(&self, sleep: &T::Sleep) -> Option<bool> {
        (**self).is_elapsed(sleep)
    }
}

/// A timer whose sleeps never end: for code that is generic over a [`Timer`] and has
/// no timeouts to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct NeverTimer;

impl Timer for NeverTimer {
    type Sleep = Pending<()>;

    fn sleep(&self, _: Duration) -> Pending<()> {
        pending()
    }
}

/// The worker's timeouts, all off by default: first progress, idle between progress,
/// and the total deadline. See the [module docs](self) for what each one measures.
///
/// ```
/// use core::time::Duration;
/// use sluice::timers::Timeouts;
///
/// const TIMEOUTS: Timeouts = Timeouts::new()
///     .first_token(Duration::from_secs(60))
///     .idle(Duration::from_secs(20))
///     .deadline(Duration::from_secs(600));
/// assert_eq!(TIMEOUTS.idle_timeout(), Some(Duration::from_secs(20)));
/// assert!(!Timeouts::default().is_set());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Timeouts {
    pub(crate) first_token: Option<Duration>,
    pub(crate) idle: Option<Duration>,
    pub(crate) deadline: Option<Duration>,
}

impl Timeouts {
    /// No timeouts.
    pub const fn new() -> Self {
        Self {
            first_token: None,
            idle: None,
            deadline: None,
        }
    }

    /// The first progress (the first token) must come within `timeout` of the start.
    #[must_use]
    pub const fn first_token(mut self, timeout: Duration) -> Self {
        self.first_token = Some(timeout);
        self
    }

    /// Each progress must come within `timeout` of the one before; after the done
    /// event, it bounds the wait for the upstream's end (which then blames nobody).
    #[must_use]
    pub const fn idle(mut self, timeout: Duration) -> Self {
        self.idle = Some(timeout);
        self
    }

    /// The whole stream must end within `deadline` of the start.
    #[must_use]
    pub const fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// The first-token timeout, if set.
    pub const fn first_token_timeout(&self) -> Option<Duration> {
        self.first_token
    }

    /// The idle timeout, if set.
    pub const fn idle_timeout(&self) -> Option<Duration> {
        self.idle
    }

    /// The deadline, if set.
    pub const fn deadline_after(&self) -> Option<Duration> {
        self.deadline
    }

    /// Whether any timeout is set.
    pub const fn is_set(&self) -> bool {
        self.first_token.is_some() || self.idle.is_some() || self.deadline.is_some()
    }
}

/// The progress timers a wrapper polls to learn whether a worker's timer has fired
/// (not to be confused with a [`Timer`], the runtime's sleep they run on).
///
/// [`ProgressWatch`] is the one that runs timers; [`NoTimers`] never fires, and is
/// what a [`TrackedStream`](crate::TrackedStream) holds until
/// [`with_timers`](crate::TrackedStream::with_timers) (its code compiles away).
pub trait ProgressTimers {
    /// Whether these timers can ever fire; `false` lets a wrapper skip them entirely.
    const ACTIVE: bool;

    /// Ready with the timer's cause once a timer is due, given the stream's
    /// `progress` so far; see [`ProgressWatch::poll_expired`].
    fn poll_expired(self: Pin<&mut Self>, cx: &mut Context<'_>, progress: u64) -> Poll<Cause>;

    /// Call before each poll of the inner value: `Pending` (the task woken at once)
    /// once every so many calls, so that an inner value that is always ready still
    /// lets the executor run, and with it a runtime's timer driver (tokio fires its
    /// sleeps only then). See [`ProgressWatch::poll_turn`].
    fn poll_turn(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()>;

    /// Call after a poll of the inner value that yielded data, with the `progress`
    /// count then: a count that grew restarts the idle timer in that poll, the one
    /// that first saw it, rather than at the next [`poll_expired`](Self::poll_expired)
    /// (which restarts it otherwise). See [`ProgressWatch::note_progress`]. The
    /// default does nothing.
    #[inline(always)]
    fn note_progress(self: Pin<&mut Self>, progress: u64) {
        let _ = progress;
    }
}

/// No timers: never fires, costs nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct NoTimers;

impl ProgressTimers for NoTimers {
    const ACTIVE: bool = false;

    #[inline(always)]
    fn poll_expired(self: Pin<&mut Self>, _: &mut Context<'_>, _: u64) -> Poll<Cause> {
        Poll::Pending
    }

    #[inline(always)]
    fn poll_turn(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        Poll::Ready(())
    }
}

/// Polls of the inner value between two turns given to the executor (see
/// [`ProgressTimers::poll_turn`]): the same as `forward`'s.
const TURN_EVERY: u8 = 64;

/// Whether the watch's clock has started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Not polled yet: no sleep made.
    Idle,
    /// Running.
    Started,
}

pin_project! {
    /// The state that drives a stream's progress timers over a [`Timer`]: the
    /// first-token or idle sleep, restarted by progress, and the deadline. No
    /// allocation; two sleeps at most.
    ///
    /// The driving order, for a wrapper around an inner stream or body (each poll):
    ///
    /// 1. If the wrapper's [`Ledger`](crate::wrap::Ledger) is ended, do not poll anything.
    /// 2. [`poll_expired`](Self::poll_expired) with the ledger's
    ///    [`progress`](crate::wrap::Ledger::progress). If it is ready, hand the cause to
    ///    [`Ledger::expire`](crate::wrap::Ledger::expire) (a failure, unless the stream
    ///    already completed in-band) and end the stream: the inner value is not
    ///    polled. A due timer wins over an inner value that is always ready.
    /// 3. [`poll_turn`](Self::poll_turn): if it is pending, return `Pending` (the
    ///    task is already woken), so the executor, and its timers, get to run.
    /// 4. Otherwise poll the inner value, as the [`Ledger`](crate::wrap::Ledger) says.
    ///
    /// ```
    /// use core::pin::pin;
    /// use core::task::{Context, Poll, Waker};
    /// use core::time::Duration;
    /// use sluice::Cause;
    /// use sluice::timers::{NeverTimer, ProgressWatch, Timeouts, Timer};
    ///
    /// /// A timer whose sleeps are all due at once.
    /// struct Due;
    /// impl Timer for Due {
    ///     type Sleep = core::future::Ready<()>;
    ///     fn sleep(&self, _: Duration) -> Self::Sleep {
    ///         core::future::ready(())
    ///     }
    /// }
    ///
    /// let mut cx = Context::from_waker(Waker::noop());
    /// let timeouts = Timeouts::new().first_token(Duration::from_secs(1));
    /// let mut watch = pin!(ProgressWatch::new(Due, timeouts));
    /// assert_eq!(watch.as_mut().poll_expired(&mut cx, 0), Poll::Ready(Cause::FirstTokenTimeout));
    ///
    /// let mut quiet = pin!(ProgressWatch::new(NeverTimer, timeouts));
    /// assert_eq!(quiet.as_mut().poll_expired(&mut cx, 0), Poll::Pending);
    /// ```
    pub struct ProgressWatch<T: Timer> {
        timer: T,
        timeouts: Timeouts,
        phase: Phase,
        // The progress count `wait` was armed for; `None` before the first poll and
        // once a timer fired.
        armed_at: Option<u64>,
        // A sleep that fired is dropped, and this says which fired.
        fired: Option<Cause>,
        // Polls since the last turn given to the executor.
        polls: u8,
        // The waker the sleeps were last polled with: while the same task polls and
        // nothing was re-armed, a sleep the timer says has not resolved is not polled.
        waker: Option<Waker>,
        #[pin]
        wait: Option<T::Sleep>,
        #[pin]
        deadline: Option<T::Sleep>,
    }
}

impl<T: Timer> ProgressWatch<T> {
    /// A watch over `timer` with `timeouts`; its clock starts at the first poll (or
    /// at [`start`](Self::start)).
    pub const fn new(timer: T, timeouts: Timeouts) -> Self {
        Self {
            timer,
            timeouts,
            phase: Phase::Idle,
            armed_at: None,
            fired: None,
            polls: 0,
            waker: None,
            wait: None,
            deadline: None,
        }
    }

    /// The timeouts it runs.
    pub const fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// The timer it sleeps on.
    pub const fn timer(&self) -> &T {
        &self.timer
    }

    /// Starts the clock now, if it has not started: the deadline runs from here. The
    /// first-token (or idle) sleep starts at the first poll.
    pub fn start(self: Pin<&mut Self>) {
        let mut this = self.project();
        if *this.phase == Phase::Idle {
            *this.phase = Phase::Started;
            let deadline = this.timeouts.deadline.map(|d| this.timer.sleep(d));
            this.deadline.set(deadline);
        }
    }

    /// Ready with the cause once a timer is due: the first-token timer (while
    /// `progress` is 0) or the idle timer (restarted whenever `progress` differs
    /// from the last poll), checked before the deadline. Starts the clock on the first
    /// call. Once ready, it stays ready with the same cause.
    ///
    /// The caller decides what the cause means: a failure, unless the stream already
    /// completed in-band ([`Ledger::expire`](crate::wrap::Ledger::expire)).
    #[inline]
    pub fn poll_expired(self: Pin<&mut Self>, cx: &mut Context<'_>, progress: u64) -> Poll<Cause> {
        // The common poll, inline: armed for this progress, polled by the same task,
        // and the timer says neither sleep resolved (each is registered with this
        // task's waker already, and wakes it when due). `armed_at` is `None` once a
        // timer fired.
        if self.armed_at == Some(progress) && self.is_quiet(cx.waker()) {
            return Poll::Pending;
        }
        self.poll_expired_slow(cx, progress)
    }

    /// Whether the sleeps can be left unpolled: last polled with a waker that wakes
    /// the same task as `waker`, none made or reset since (unless the timer's reset
    /// keeps the waker), and the timer says neither resolved.
    #[inline(always)]
    fn is_quiet(&self, waker: &Waker) -> bool {
        let pending = |sleep: &Option<T::Sleep>| {
            sleep
                .as_ref()
                .is_none_or(|s| self.timer.is_elapsed(s) == Some(false))
        };
        self.waker.as_ref().is_some_and(|w| w.will_wake(waker))
            && pending(&self.wait)
            && pending(&self.deadline)
    }

    /// The rest of [`poll_expired`](Self::poll_expired): out of line.
    #[inline(never)]
    fn poll_expired_slow(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        progress: u64,
    ) -> Poll<Cause> {
        if let Some(cause) = self.fired {
            return Poll::Ready(cause);
        }
        self.as_mut().start();
        if self.armed_at != Some(progress) {
            self.as_mut().arm(progress);
        }
        if self.is_quiet(cx.waker()) {
            return Poll::Pending;
        }
        let mut this = self.project();
        if !this.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            *this.waker = Some(cx.waker().clone());
        }
        let waited = match this.wait.as_mut().as_pin_mut() {
            Some(wait) => wait.poll(cx).is_ready(),
            None => false,
        };
        if waited {
            this.wait.set(None);
            let cause = match progress {
                0 => Cause::FirstTokenTimeout,
                _ => Cause::IdleTimeout,
            };
            *this.fired = Some(cause);
            *this.armed_at = None;
            return Poll::Ready(cause);
        }
        if poll_once(this.deadline, cx) {
            *this.fired = Some(Cause::Deadline);
            *this.armed_at = None;
            return Poll::Ready(Cause::Deadline);
        }
        Poll::Pending
    }

    /// The stream's progress count is `progress` after a poll of the inner value
    /// that yielded data: if it grew, the idle timer restarts now, in the poll that
    /// first saw it (not at the next [`poll_expired`](Self::poll_expired)). A
    /// wrapper that calls this after each data item times each progress from the
    /// poll that yielded it; one that does not gets the same timers a poll later.
    /// Does nothing before the first poll or once a timer fired.
    #[inline]
    pub fn note_progress(self: Pin<&mut Self>, progress: u64) {
        if self.armed_at.is_some_and(|armed| armed != progress) {
            self.arm(progress);
        }
    }

    /// Arms the first-token sleep (`progress` 0) or the idle sleep for `progress`,
    /// restarting the one running. A sleep that is new, or reset by a timer whose
    /// reset does not keep the waker, is polled at the next
    /// [`poll_expired`](Self::poll_expired): the waker it was polled with is
    /// forgotten.
    #[inline(never)]
    fn arm(self: Pin<&mut Self>, progress: u64) {
        let mut this = self.project();
        *this.armed_at = Some(progress);
        let timeout = match progress {
            0 => this.timeouts.first_token,
            _ => this.timeouts.idle,
        };
        match (timeout, this.wait.as_mut().as_pin_mut()) {
            (Some(d), Some(wait)) => {
                this.timer.reset(wait, d);
                if !T::RESET_KEEPS_WAKER {
                    *this.waker = None;
                }
            }
            (timeout, _) => {
                this.wait.set(timeout.map(|d| this.timer.sleep(d)));
                *this.waker = None;
            }
        }
    }

    /// The first-token or idle sleep running now and the progress count it was armed
    /// for (see [`note_progress`](Self::note_progress)): `None` before the first
    /// poll, once a timer fired, or while no timeout runs for that stretch (no
    /// idle timeout after the first progress, say). For a driver that wants the
    /// instant of the last progress from the runtime's sleep (the tokio adapter's
    /// `TokioSleep::since`) instead of reading its clock a second time.
    pub fn wait(&self) -> Option<(u64, &T::Sleep)> {
        Some((self.armed_at?, self.wait.as_ref()?))
    }

    /// Call before each poll of the inner value: every 64th call is `Pending`, having
    /// woken the task, so that a wrapper around an inner value that is always ready
    /// still returns to its executor now and then. A runtime whose timers advance only
    /// when its executor runs (tokio's driver) then gets to fire them, and the next
    /// [`poll_expired`](Self::poll_expired) sees them due.
    pub fn poll_turn(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        *this.polls += 1;
        if *this.polls < TURN_EVERY {
            return Poll::Ready(());
        }
        *this.polls = 0;
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Ready once the deadline has passed (never, without one). Starts the clock on
    /// the first call. For a driver that waits on something else than the worker (a
    /// slow client, say) and must still stop at the deadline.
    pub fn poll_deadline(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.fired == Some(Cause::Deadline) {
            return Poll::Ready(());
        }
        self.as_mut().start();
        let this = self.project();
        if poll_once(this.deadline, cx) {
            *this.fired = Some(Cause::Deadline);
            *this.armed_at = None;
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

/// Polls an optional sleep; once it is ready it is dropped (some timers must not be
/// polled again after they fired).
fn poll_once<F: Future<Output = ()>>(mut sleep: Pin<&mut Option<F>>, cx: &mut Context<'_>) -> bool {
    let ready = match sleep.as_mut().as_pin_mut() {
        Some(sleep) => sleep.poll(cx).is_ready(),
        None => false,
    };
    if ready {
        sleep.set(None);
    }
    ready
}

impl<T: Timer> ProgressTimers for ProgressWatch<T> {
    const ACTIVE: bool = true;

    #[inline]
    fn poll_expired(self: Pin<&mut Self>, cx: &mut Context<'_>, progress: u64) -> Poll<Cause> {
        ProgressWatch::poll_expired(self, cx, progress)
    }

    #[inline]
    fn poll_turn(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        ProgressWatch::poll_turn(self, cx)
    }

    #[inline]
    fn note_progress(self: Pin<&mut Self>, progress: u64) {
        ProgressWatch::note_progress(self, progress);
    }
}

impl<T: Timer> core::fmt::Debug for ProgressWatch<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ProgressWatch")
            .field("timeouts", &self.timeouts)
            .field("started", &(self.phase == Phase::Started))
            .field("fired", &self.fired)
            .finish_non_exhaustive()
    }
}
