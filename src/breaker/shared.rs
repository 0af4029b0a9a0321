//! The shared, thread-safe handle: [`SharedBreaker`] (an `Arc` of one
//! [`BreakerCell`], the word and the core, and the clock it reads; the guarantee is
//! in [`cell`](super::cell)) and its permits.

use alloc::boxed::Box;
use core::fmt;
use core::time::Duration;

use super::cell::BreakerCell;
use super::clock::{Clock, StdClock};
use super::lease::{Handle, Lease};
use super::sync::Arc;
use super::{CircuitBreaker, Config, ConfigError, Recorded, Rejected, State, Transition};
use crate::{Outcome, Recorder, Verdict};

/// What the handles share.
pub(crate) struct Inner {
    cell: BreakerCell,
    clock: Box<dyn Clock>,
}

impl Handle for Inner {
    #[inline]
    fn record(&self, permit_generation: u32, probe: bool, verdict: Verdict) -> Recorded {
        self.cell
            .record(&*self.clock, None, permit_generation, probe, verdict)
    }
}

/// A [`CircuitBreaker`] shared between threads and tasks: `Clone + Send + Sync`.
///
/// Same semantics as the sans-io breaker (every concurrent history of it equals some
/// sequential history of a [`CircuitBreaker`]; checked with loom), with time read from
/// a [`Clock`] ([`StdClock`] by default, [`ManualClock`](super::ManualClock) in
/// tests). While Closed, acquiring a permit and recording a success take no lock and
/// read no clock, also with a failure-rate rule (a time window counts such a success
/// at the next reading of the clock: see the module docs of [`breaker`](super));
/// without a rate rule, so does a failure below the threshold.
/// Disabled and ForcedOpen are decided without a lock too. Transitions, HalfOpen,
/// Open, and with a rate rule failures (and successes while the window is near the
/// rate at `minimum_calls`) go through a mutex around the core. The module docs of
/// [`breaker`](super) say exactly what is guaranteed.
///
/// A [`SharedPermit`] (borrowing the breaker) or an [`OwnedSharedPermit`] (from
/// [`try_acquire_owned`](Self::try_acquire_owned), for streams that move to another
/// task) is a [`Recorder`], so a [`TrackedStream`](crate::TrackedStream) can carry it
/// and report its verdict; dropped unrecorded, it records [`Verdict::Abandoned`].
///
/// ```
/// use core::time::Duration;
/// use sluice::breaker::{Config, ManualClock, SharedBreaker, State};
/// use sluice::{Outcome, Recorder, Verdict};
///
/// let clock = ManualClock::new();
/// let breaker = SharedBreaker::with_clock(Config::default().failure_threshold(2), clock.clone());
/// for _ in 0..2 {
///     let permit = breaker.try_acquire().expect("closed");
///     permit.record(Outcome::from(Verdict::Failure)); // what a TrackedStream does
/// }
/// assert_eq!(breaker.state(), State::Open { until: Duration::from_secs(30) });
/// assert!(breaker.try_acquire().is_err());
///
/// clock.advance(Duration::from_secs(30));
/// let probe = breaker.try_acquire().expect("a probe");
/// assert!(probe.is_probe());
/// drop(probe); // unrecorded: Abandoned, which frees the probe slot
/// assert_eq!(breaker.state(), State::HalfOpen);
/// ```
#[derive(Clone)]
pub struct SharedBreaker {
    inner: Arc<Inner>,
}

impl fmt::Debug for SharedBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedBreaker")
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl SharedBreaker {
    /// A Closed breaker on the system clock. An invalid `config` does not panic: it is
    /// corrected as in [`CircuitBreaker::new`]; [`try_new`](Self::try_new) refuses it.
    pub fn new(config: Config) -> Self {
        Self::with_clock(config, StdClock::new())
    }

    /// A Closed breaker reading time from `clock`; an invalid `config` is corrected as
    /// in [`CircuitBreaker::new`] ([`try_with_clock`](Self::try_with_clock) refuses it).
    pub fn with_clock(config: Config, clock: impl Clock) -> Self {
        Self {
            inner: Arc::new(Inner {
                cell: BreakerCell::new(config),
                clock: Box::new(clock),
            }),
        }
    }

    /// A Closed breaker on the system clock, or what is wrong with `config`.
    pub fn try_new(config: Config) -> Result<Self, ConfigError> {
        Self::try_with_clock(config, StdClock::new())
    }

    /// A Closed breaker reading `clock`, or what is wrong with `config`.
    pub fn try_with_clock(config: Config, clock: impl Clock) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self::with_clock(config, clock))
    }

    /// Asks leave to make one call now. See [`CircuitBreaker::try_acquire`]. The
    /// permit borrows the breaker; see [`try_acquire_owned`](Self::try_acquire_owned)
    /// for one that does not.
    #[inline]
    pub fn try_acquire(&self) -> Result<SharedPermit<'_>, Rejected> {
        let permit = self.inner.cell.acquire(&*self.inner.clock)?;
        Ok(SharedPermit {
            lease: Lease::new(&*self.inner, permit),
        })
    }

    /// [`try_acquire`](Self::try_acquire), for a permit that holds its own handle to
    /// the breaker (`'static`, `Send`).
    #[inline]
    pub fn try_acquire_owned(&self) -> Result<OwnedSharedPermit, Rejected> {
        let permit = self.inner.cell.acquire(&*self.inner.clock)?;
        Ok(OwnedSharedPermit {
            lease: Lease::new(Arc::clone(&self.inner), permit),
        })
    }

    /// The state now.
    pub fn state(&self) -> State {
        self.inner.cell.state(&*self.inner.clock)
    }

    /// The time on this breaker's clock.
    pub fn now(&self) -> Duration {
        self.inner.clock.now()
    }

    /// The configuration in force.
    pub fn config(&self) -> Config {
        self.inner.cell.config()
    }

    /// Applies what time alone changes now. See [`CircuitBreaker::handle_timeout`].
    #[must_use = "a transition to log or export"]
    pub fn handle_timeout(&self) -> Option<Transition> {
        self.inner.cell.handle_timeout(&*self.inner.clock, None)
    }

    /// When time alone would next change the state. See
    /// [`CircuitBreaker::poll_timeout`].
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.inner.cell.poll_timeout()
    }

    /// Opens by hand. See [`CircuitBreaker::force_open`].
    #[must_use = "a transition to log or export"]
    pub fn force_open(&self) -> Option<Transition> {
        self.inner.cell.force_open(&*self.inner.clock, None)
    }

    /// Switches the breaker off. See [`CircuitBreaker::disable`].
    #[must_use = "a transition to log or export"]
    pub fn disable(&self) -> Option<Transition> {
        self.inner.cell.disable(&*self.inner.clock, None)
    }

    /// Back to Closed with every count cleared. See [`CircuitBreaker::reset`].
    #[must_use = "a transition to log or export"]
    pub fn reset(&self) -> Option<Transition> {
        self.inner.cell.reset(&*self.inner.clock, None)
    }

    /// A copy of the sans-io breaker as it stands, with the counts the handle kept
    /// outside it folded in (successes of a time window at the clock's time, as the
    /// handle's next reading will count them). Reads the clock; changes nothing.
    ///
    /// The one way to read what the handle counts but [`state`](Self::state) does
    /// not say: the consecutive failures, the probes in flight, the generation, the
    /// rate window's calls and failures ([`CircuitBreaker`]'s getters), for an admin
    /// page or a test that compares the handle with a sans-io breaker fed the same
    /// calls.
    ///
    /// ```
    /// use sluice::breaker::{Config, SharedBreaker};
    /// use sluice::Verdict;
    ///
    /// let breaker = SharedBreaker::new(Config::default());
    /// let _ = breaker.try_acquire().expect("closed").report(Verdict::Failure);
    /// assert_eq!(breaker.snapshot().consecutive_failures(), 1);
    /// ```
    pub fn snapshot(&self) -> CircuitBreaker {
        self.inner.cell.snapshot(&*self.inner.clock)
    }
}

/// Leave to make one call through a [`SharedBreaker`], borrowing it (like tokio's
/// `SemaphorePermit`): the cheapest permit, with no reference count. For a permit that
/// must outlive the borrow (a stream handed to a spawned task or a response body),
/// use [`SharedBreaker::try_acquire_owned`].
///
/// Record it once: with [`report`](Self::report) (which returns what the breaker did),
/// or as a [`Recorder`] (a [`TrackedStream`](crate::TrackedStream) records
/// `outcome.verdict`). Dropped unrecorded, it records [`Verdict::Abandoned`], which
/// counts nothing and frees a HalfOpen probe slot. It never panics in `Drop`.
#[must_use = "dropping a permit at once records it as Abandoned"]
pub struct SharedPermit<'a> {
    lease: Lease<&'a Inner>,
}

impl fmt::Debug for SharedPermit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("SharedPermit");
        self.lease.debug_fields(&mut d);
        d.finish_non_exhaustive()
    }
}

impl SharedPermit<'_> {
    /// The breaker generation it was issued in.
    pub const fn generation(&self) -> u32 {
        self.lease.generation()
    }

    /// Whether it holds a HalfOpen probe slot.
    pub const fn is_probe(&self) -> bool {
        self.lease.is_probe()
    }

    /// The transition acquiring it made (Open to HalfOpen), if any.
    pub const fn transition(&self) -> Option<Transition> {
        self.lease.transition()
    }

    /// Records `verdict` and says what the breaker did with it (so the caller can
    /// log or export a [`Transition`]; for a set's permit, a
    /// [`Reason::EjectionCapped`](super::Reason::EjectionCapped) transition when the
    /// cap held its worker in).
    #[inline]
    pub fn report(self, verdict: Verdict) -> Recorded {
        self.lease.report(verdict)
    }
}

impl Recorder for SharedPermit<'_> {
    /// Records `outcome.verdict` (what a [`TrackedStream`](crate::TrackedStream) does
    /// when its stream ends or is dropped). The [`Recorded`] answer, and so any
    /// [`Transition`] it caused, is dropped: to log or export it, give the stream a
    /// closure instead, `move |o: Outcome| log(permit.report(o.verdict))`.
    #[inline]
    fn record(self, outcome: Outcome) {
        let _ = self.report(outcome.verdict);
    }
}

/// A [`SharedPermit`] that owns a handle to its breaker (one reference count), so it
/// is `'static` and can travel with a stream into another task. Same recording rules.
#[must_use = "dropping a permit at once records it as Abandoned"]
pub struct OwnedSharedPermit {
    lease: Lease<Arc<Inner>>,
}

impl fmt::Debug for OwnedSharedPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("OwnedSharedPermit");
        self.lease.debug_fields(&mut d);
        d.finish_non_exhaustive()
    }
}

impl OwnedSharedPermit {
    /// The breaker generation it was issued in.
    pub const fn generation(&self) -> u32 {
        self.lease.generation()
    }

    /// Whether it holds a HalfOpen probe slot.
    pub const fn is_probe(&self) -> bool {
        self.lease.is_probe()
    }

    /// The transition acquiring it made (Open to HalfOpen), if any.
    pub const fn transition(&self) -> Option<Transition> {
        self.lease.transition()
    }

    /// Records `verdict` and says what the breaker did with it (so the caller can
    /// log or export a [`Transition`]; for a set's permit, a
    /// [`Reason::EjectionCapped`](super::Reason::EjectionCapped) transition when the
    /// cap held its worker in).
    #[inline]
    pub fn report(self, verdict: Verdict) -> Recorded {
        self.lease.report(verdict)
    }
}

impl Recorder for OwnedSharedPermit {
    /// Records `outcome.verdict` (what a [`TrackedStream`](crate::TrackedStream) does
    /// when its stream ends or is dropped). The [`Recorded`] answer, and so any
    /// [`Transition`] it caused, is dropped: to log or export it, give the stream a
    /// closure instead, `move |o: Outcome| log(permit.report(o.verdict))`.
    #[inline]
    fn record(self, outcome: Outcome) {
        let _ = self.report(outcome.verdict);
    }
}
