//! The shared, thread-safe handle: the sans-io core behind a mutex, with the
//! Closed-state hot path on one atomic word.
//!
//! The word packs `mode` (2 bits), the Closed consecutive-failure count (30 bits)
//! and the generation (32 bits). In the modes `CLOSED`, `DISABLED` and `FORCED` the
//! word is authoritative for what the hot path needs (a Closed breaker's failure count
//! lives only there), and acquire, record and state are decided from it alone: a
//! load, and at most one compare-and-swap. Every other operation locks the core,
//! *claims* the word by swapping it to `SLOW` (folding the failure count into the
//! core), runs the sans-io machine, and *publishes* the result as the new word before
//! it unlocks. Fast operations linearize at their load or swap on a fast word; slow
//! ones inside the lock, while the word is `SLOW` and so no fast one can take effect.

use alloc::boxed::Box;
use core::fmt;
use core::time::Duration;

use super::sync::{Arc, AtomicU64, Mutex, Ordering, lock};
use super::{CircuitBreaker, Config, ConfigError, Permit, Recorded, Rejected, State, Transition};
use crate::{Outcome, Recorder, Verdict};

/// A source of monotonic time for a [`SharedBreaker`]: a [`Duration`] since an origin
/// of its choosing, never decreasing.
pub trait Clock: Send + Sync + 'static {
    /// The time now.
    fn now(&self) -> Duration;
}

/// The system's monotonic clock: time since the clock was made, from
/// [`std::time::Instant`]. The default clock of a [`SharedBreaker`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StdClock {
    origin: std::time::Instant,
}

impl StdClock {
    /// A clock at zero now.
    pub fn new() -> Self {
        Self {
            origin: std::time::Instant::now(),
        }
    }
}

impl Default for StdClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for StdClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// A clock that moves only when told: for tests. Clones share one time.
///
/// ```
/// use core::time::Duration;
/// use sluice::breaker::{Clock, ManualClock};
///
/// let clock = ManualClock::new();
/// let same = clock.clone();
/// clock.advance(Duration::from_secs(2));
/// assert_eq!(same.now(), Duration::from_secs(2));
/// same.set(Duration::from_millis(500));
/// assert_eq!(clock.now(), Duration::from_millis(500));
/// ```
#[derive(Clone)]
pub struct ManualClock {
    nanos: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock at zero.
    pub fn new() -> Self {
        Self {
            nanos: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Moves the time forward by `by` (saturating at about 584 years).
    pub fn advance(&self, by: Duration) {
        let by = nanos(by);
        let mut current = self.nanos.load(Ordering::Acquire);
        while let Err(actual) = self.nanos.compare_exchange_weak(
            current,
            current.saturating_add(by),
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            current = actual;
        }
    }

    /// Sets the time (a time before the breaker's latest is taken as the latest).
    pub fn set(&self, to: Duration) {
        self.nanos.store(nanos(to), Ordering::Release);
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualClock")
            .field("now", &self.now())
            .finish()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::Acquire))
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

// The word: mode in bits 0..2, failures in 2..32, generation in 32..64.
const SLOW: u64 = 0;
const CLOSED: u64 = 1;
const DISABLED: u64 = 2;
const FORCED: u64 = 3;
const MODE_MASK: u64 = 0b11;
const FAILS_SHIFT: u32 = 2;
/// The largest failure count the word holds; larger thresholds run on the slow path.
const FAILS_MAX: u32 = (1 << 30) - 1;
const FAILS_MASK: u64 = (FAILS_MAX as u64) << FAILS_SHIFT;

const fn word(mode: u64, generation: u32, failures: u32) -> u64 {
    ((generation as u64) << 32) | ((failures as u64) << FAILS_SHIFT) | mode
}
const fn mode(w: u64) -> u64 {
    w & MODE_MASK
}
const fn generation(w: u64) -> u32 {
    (w >> 32) as u32
}
const fn failures(w: u64) -> u32 {
    ((w & FAILS_MASK) >> FAILS_SHIFT) as u32
}

/// The atomic word on a cache line of its own (away from the `Arc` counts).
#[repr(align(64))]
struct Padded(AtomicU64);

/// What the handles share.
pub(crate) struct Inner {
    word: Padded,
    /// The failure threshold if a Closed breaker may run on the word; 0 if it may not
    /// (a rate window, which needs the core on every record, or a huge threshold).
    fast_threshold: u32,
    core: Mutex<CircuitBreaker>,
    clock: Box<dyn Clock>,
}

impl Inner {
    /// The word that mirrors `core`.
    fn publish(&self, core: &CircuitBreaker) -> u64 {
        let generation = core.generation();
        match core.state(core.latest()) {
            State::Closed if self.fast_threshold > 0 => {
                word(CLOSED, generation, core.consecutive_failures())
            }
            State::Disabled => word(DISABLED, generation, 0),
            State::ForcedOpen => word(FORCED, generation, 0),
            _ => word(SLOW, generation, 0),
        }
    }

    /// Runs `op` on the core, under the lock, with the word claimed.
    fn slow<R>(&self, op: impl FnOnce(&mut CircuitBreaker, Duration) -> R) -> R {
        // The caller's clock runs before the lock is taken: no user code under it (the
        // core keeps time monotonic if another thread's reading was later).
        let now = self.clock.now();
        let mut core = lock(&self.core);
        let mut w = self.word.0.load(Ordering::Acquire);
        while mode(w) != SLOW {
            let claimed = word(SLOW, generation(w), 0);
            match self
                .word
                .0
                .compare_exchange_weak(w, claimed, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    if mode(w) == CLOSED {
                        core.set_consecutive_failures(failures(w));
                    }
                    break;
                }
                Err(actual) => w = actual,
            }
        }
        let out = op(&mut core, now);
        self.word.0.store(self.publish(&core), Ordering::Release);
        out
    }

    #[inline]
    fn record(&self, permit_generation: u32, probe: bool, verdict: Verdict) -> Recorded {
        let mut w = self.word.0.load(Ordering::Acquire);
        loop {
            match mode(w) {
                CLOSED => {
                    if generation(w) != permit_generation {
                        return Recorded::Stale;
                    }
                    let count = failures(w);
                    let next = match verdict {
                        Verdict::Abandoned => return Recorded::Counted(None),
                        Verdict::Success if count == 0 => return Recorded::Counted(None),
                        Verdict::Success => word(CLOSED, permit_generation, 0),
                        Verdict::Failure if count + 1 < self.fast_threshold => {
                            word(CLOSED, permit_generation, count + 1)
                        }
                        // This failure opens the breaker: a transition, on the slow path.
                        Verdict::Failure => break,
                    };
                    match self.word.0.compare_exchange_weak(
                        w,
                        next,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    ) {
                        Ok(_) => return Recorded::Counted(None),
                        Err(actual) => w = actual,
                    }
                }
                DISABLED if generation(w) == permit_generation => return Recorded::Counted(None),
                // No permit is issued in ForcedOpen, so none is of its generation.
                DISABLED | FORCED => return Recorded::Stale,
                _ => break,
            }
        }
        self.record_slow(permit_generation, probe, verdict)
    }

    #[cold]
    #[inline(never)]
    fn record_slow(&self, permit_generation: u32, probe: bool, verdict: Verdict) -> Recorded {
        self.slow(|core, now| core.record(Permit::new(permit_generation, probe), verdict, now))
    }

    #[inline]
    fn acquire(&self) -> Result<Permit, Rejected> {
        let w = self.word.0.load(Ordering::Acquire);
        match mode(w) {
            CLOSED | DISABLED => Ok(Permit::new(generation(w), false)),
            FORCED => Err(Rejected { retry_after: None }),
            _ => self.acquire_slow(),
        }
    }

    #[cold]
    #[inline(never)]
    fn acquire_slow(&self) -> Result<Permit, Rejected> {
        self.slow(|core, now| core.try_acquire(now))
    }
}

/// A [`CircuitBreaker`] shared between threads and tasks: `Clone + Send + Sync`.
///
/// Same semantics as the sans-io breaker (every concurrent history of it equals some
/// sequential history of a [`CircuitBreaker`]; checked with loom), with time read from
/// a [`Clock`] ([`StdClock`] by default, [`ManualClock`] in tests). While Closed (and
/// without a failure-rate rule), acquiring a permit and recording a success or a
/// failure below the threshold take no lock and read no clock; Disabled and
/// ForcedOpen are decided without a lock too. Transitions, HalfOpen, Open and the rate
/// window go through a mutex around the core.
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
    /// A Closed breaker on the system clock; an invalid `config` is corrected as in
    /// [`CircuitBreaker::new`].
    pub fn new(config: Config) -> Self {
        Self::with_clock(config, StdClock::new())
    }

    /// A Closed breaker reading time from `clock`; an invalid `config` is corrected as
    /// in [`CircuitBreaker::new`].
    pub fn with_clock(config: Config, clock: impl Clock) -> Self {
        let core = CircuitBreaker::new(config);
        let threshold = core.config().failure_threshold;
        let fast_threshold = if core.has_rate_window() || threshold > FAILS_MAX {
            0
        } else {
            threshold
        };
        let inner = Inner {
            word: Padded(AtomicU64::new(0)),
            fast_threshold,
            core: Mutex::new(core),
            clock: Box::new(clock),
        };
        let first = inner.publish(&lock(&inner.core));
        inner.word.0.store(first, Ordering::Release);
        Self {
            inner: Arc::new(inner),
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
        let permit = self.inner.acquire()?;
        Ok(SharedPermit {
            breaker: Some(&self.inner),
            generation: permit.generation(),
            probe: permit.is_probe(),
            transition: permit.transition(),
        })
    }

    /// [`try_acquire`](Self::try_acquire), for a permit that holds its own handle to
    /// the breaker (`'static`, `Send`).
    #[inline]
    pub fn try_acquire_owned(&self) -> Result<OwnedSharedPermit, Rejected> {
        let permit = self.inner.acquire()?;
        Ok(OwnedSharedPermit {
            breaker: Some(Arc::clone(&self.inner)),
            generation: permit.generation(),
            probe: permit.is_probe(),
            transition: permit.transition(),
        })
    }

    /// The state now.
    pub fn state(&self) -> State {
        match mode(self.inner.word.0.load(Ordering::Acquire)) {
            CLOSED => State::Closed,
            DISABLED => State::Disabled,
            FORCED => State::ForcedOpen,
            _ => {
                let now = self.inner.clock.now();
                lock(&self.inner.core).state(now)
            }
        }
    }

    /// The time on this breaker's clock.
    pub fn now(&self) -> Duration {
        self.inner.clock.now()
    }

    /// The configuration in force.
    pub fn config(&self) -> Config {
        *lock(&self.inner.core).config()
    }

    /// Applies what time alone changes now. See [`CircuitBreaker::handle_timeout`].
    pub fn handle_timeout(&self) -> Option<Transition> {
        if mode(self.inner.word.0.load(Ordering::Acquire)) != SLOW {
            return None;
        }
        self.inner.slow(|core, now| core.handle_timeout(now))
    }

    /// When time alone would next change the state. See
    /// [`CircuitBreaker::poll_timeout`].
    pub fn poll_timeout(&self) -> Option<Duration> {
        lock(&self.inner.core).poll_timeout()
    }

    /// Opens by hand. See [`CircuitBreaker::force_open`].
    pub fn force_open(&self) -> Option<Transition> {
        self.inner.slow(|core, now| core.force_open(now))
    }

    /// Switches the breaker off. See [`CircuitBreaker::disable`].
    pub fn disable(&self) -> Option<Transition> {
        self.inner.slow(|core, now| core.disable(now))
    }

    /// Back to Closed with every count cleared. See [`CircuitBreaker::reset`].
    pub fn reset(&self) -> Option<Transition> {
        self.inner.slow(|core, now| core.reset(now))
    }

    /// A copy of the sans-io core as it stands (for inspection and tests).
    pub fn snapshot(&self) -> CircuitBreaker {
        self.inner.slow(|core, _| core.clone())
    }
}

macro_rules! permit_impl {
    ($permit:ty) => {
        impl fmt::Debug for $permit {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($permit))
                    .field("generation", &self.generation)
                    .field("probe", &self.probe)
                    .finish_non_exhaustive()
            }
        }

        impl $permit {
            /// The breaker generation it was issued in.
            pub const fn generation(&self) -> u32 {
                self.generation
            }

            /// Whether it holds a HalfOpen probe slot.
            pub const fn is_probe(&self) -> bool {
                self.probe
            }

            /// The transition acquiring it made (Open to HalfOpen), if any.
            pub const fn transition(&self) -> Option<Transition> {
                self.transition
            }

            /// Records `verdict` and says what the breaker did with it.
            #[inline]
            pub fn report(mut self, verdict: Verdict) -> Recorded {
                match self.breaker.take() {
                    Some(inner) => inner.record(self.generation, self.probe, verdict),
                    None => Recorded::Stale,
                }
            }
        }

        impl Recorder for $permit {
            /// Records `outcome.verdict` (what a [`TrackedStream`](crate::TrackedStream)
            /// does when its stream ends or is dropped). The [`Recorded`] answer, and
            /// so any [`Transition`] it caused, is dropped: to log or export it, give
            /// the stream a closure instead,
            /// `move |o: Outcome| log(permit.report(o.verdict))`.
            #[inline]
            fn record(self, outcome: Outcome) {
                let _ = self.report(outcome.verdict);
            }
        }

        impl Drop for $permit {
            /// Records [`Verdict::Abandoned`] if the permit was not recorded. Never
            /// panics (a poisoned lock is taken as it is).
            #[inline]
            fn drop(&mut self) {
                if let Some(inner) = self.breaker.take() {
                    let _ = inner.record(self.generation, self.probe, Verdict::Abandoned);
                }
            }
        }
    };
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
    breaker: Option<&'a Inner>,
    generation: u32,
    probe: bool,
    transition: Option<Transition>,
}

permit_impl!(SharedPermit<'_>);

/// A [`SharedPermit`] that owns a handle to its breaker (one reference count), so it
/// is `'static` and can travel with a stream into another task. Same recording rules.
#[must_use = "dropping a permit at once records it as Abandoned"]
pub struct OwnedSharedPermit {
    breaker: Option<Arc<Inner>>,
    generation: u32,
    probe: bool,
    transition: Option<Transition>,
}

permit_impl!(OwnedSharedPermit);
