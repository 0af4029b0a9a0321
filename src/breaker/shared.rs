//! The shared, thread-safe handle: the sans-io core behind a mutex, with the
//! Closed-state hot path on one atomic word.
//!
//! The word packs `mode` (2 bits), a Closed count (30 bits) and the generation (32
//! bits). In the modes `CLOSED`, `DISABLED` and `FORCED` the word is authoritative
//! for what the hot path needs, and acquire, record and state are decided from it
//! alone: a load, and at most one compare-and-swap. Every other operation locks the
//! core, *claims* the word by swapping it to `SLOW` (folding the word's count into the
//! core), runs the sans-io machine, and *publishes* the result as the new word before
//! it unlocks. Fast operations linearize at their load or swap on a fast word; slow
//! ones inside the lock, while the word is `SLOW` and so no fast one can take effect.
//!
//! The Closed count is one of two things:
//!
//! * Without a rate rule: the consecutive failures (the core's copy is stale while
//!   the word is Closed). A success clears it, a failure below the threshold adds
//!   one; the failure that reaches the threshold goes to the core.
//! * With a rate rule: successes counted but not yet pushed into the core's window
//!   (*pending*), and two flags the core computed when it published the word. `NOOP`:
//!   the count window is full of successes and no failure is running, so a success
//!   changes nothing (a load, no write). `SAFE`: no run of successes can fire the
//!   rule (see `RateWindow::successes_cannot_fire`), so a success adds one to pending
//!   with a compare-and-swap, without reading the clock. The next slow operation
//!   folds them into the core at its own reading, all at once, which is the same as
//!   pushing them one by one then (`SAFE` holds at any later time too: failures only
//!   leave a window). Failures, and successes without `SAFE`, go to the core.
//!
//! The guarantee: every concurrent history equals a sequential history of the sans-io
//! breaker in which each fast operation happens at its load or swap with `now` equal
//! to the core's latest time, except pending successes, which happen just before the
//! slow operation that folds them, at its reading; and each slow operation happens
//! inside the lock at its own reading (or the latest, if later). The module docs of
//! [`breaker`](super) say what that means for a time window.

use alloc::boxed::Box;
use core::fmt;
use core::time::Duration;

use super::sync::{Arc, AtomicU64, AtomicUsize, Mutex, Ordering, lock};
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

// The word: mode in bits 0..2, a Closed count in 2..32, generation in 32..64.
const SLOW: u64 = 0;
const CLOSED: u64 = 1;
const DISABLED: u64 = 2;
const FORCED: u64 = 3;
const MODE_MASK: u64 = 0b11;
const FAILS_SHIFT: u32 = 2;
/// The largest failure count the word holds; larger thresholds run on the slow path.
const FAILS_MAX: u32 = (1 << 30) - 1;
const FAILS_MASK: u64 = (FAILS_MAX as u64) << FAILS_SHIFT;

// With a rate rule, a Closed word's count is: successes counted in the word and not
// yet in the core (bits 2..30), SAFE (bit 30: no run of successes can open the
// breaker, so they may be counted here) and NOOP (bit 31: one more success leaves the
// core as it is, so it need not be counted at all).
const PENDING_MAX: u64 = (1 << 28) - 1;
const PENDING_MASK: u64 = PENDING_MAX << FAILS_SHIFT;
const SAFE: u64 = 1 << 30;
const NOOP: u64 = 1 << 31;

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
const fn pending(w: u64) -> u64 {
    (w & PENDING_MASK) >> FAILS_SHIFT
}

/// The atomic word on a cache line of its own (away from the `Arc` counts).
#[repr(align(64))]
struct Padded(AtomicU64);

/// The time to run a slow operation at: the clock's, or `None` (the core's latest)
/// while the thread is unwinding, so that no user code runs then (a clock that
/// panics while a panic unwinds would abort the process).
pub(crate) fn read_clock(clock: &dyn Clock) -> Option<Duration> {
    if std::thread::panicking() {
        None
    } else {
        Some(clock.now())
    }
}

/// A set's ejection cap, as one breaker of it sees it.
pub(crate) struct Cap<'a> {
    /// Workers ejected now (Open or HalfOpen), plus trips reserved and not yet
    /// published.
    pub(crate) ejected: &'a AtomicUsize,
    /// The most that may be ejected at once (read only when a trip asks).
    pub(crate) max: &'a AtomicUsize,
}

impl Cap<'_> {
    /// Takes one ejection slot if there is one.
    fn try_reserve(&self) -> bool {
        let max = self.max.load(Ordering::Relaxed);
        self.ejected
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |e| {
                (e < max).then_some(e + 1)
            })
            .is_ok()
    }

    fn release(&self) {
        self.ejected.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Whether a breaker counts as ejected: Open or HalfOpen (a HalfOpen worker only takes
/// probes, and a failed probe opens it again without asking the cap).
fn is_ejected(core: &CircuitBreaker) -> bool {
    matches!(
        core.state(core.latest()),
        State::Open { .. } | State::HalfOpen
    )
}

/// One breaker's shared state: the word and the core. The clock is the owner's.
pub(crate) struct Core {
    word: Padded,
    /// The failure threshold if a Closed breaker without a rate rule may count
    /// failures in the word; 0 if it may not (a huge threshold).
    fast_threshold: u32,
    /// Whether a rate rule is configured (the word then counts successes; with a
    /// time window, without reading the clock: they are counted at the core's next
    /// reading).
    rate: bool,
    /// With a count window, its length: that many pending successes fill it with
    /// successes, so the one that reaches it goes to the core, which then publishes
    /// `NOOP` (0: never).
    noop_after: u64,
    core: Mutex<CircuitBreaker>,
}

impl Core {
    pub(crate) fn new(config: Config) -> Self {
        let core = CircuitBreaker::new(config);
        let threshold = core.config().failure_threshold;
        let rate = core.has_rate_window();
        let window = core.config().rate.map(|r| r.window);
        let noop_after = match window {
            Some(super::Window::Calls(len)) => u64::from(len),
            _ => 0,
        };
        let shared = Self {
            word: Padded(AtomicU64::new(0)),
            fast_threshold: if threshold > FAILS_MAX { 0 } else { threshold },
            rate,
            noop_after,
            core: Mutex::new(core),
        };
        let first = shared.publish(&lock(&shared.core));
        shared.word.0.store(first, Ordering::Release);
        shared
    }

    /// The word that mirrors `core`.
    fn publish(&self, core: &CircuitBreaker) -> u64 {
        let generation = core.generation();
        match core.state(core.latest()) {
            State::Closed if self.rate => {
                let (noop, safe) = core.success_shortcuts();
                let flags = if noop { NOOP } else { 0 } | if safe { SAFE } else { 0 };
                word(CLOSED, generation, 0) | flags
            }
            State::Closed if self.fast_threshold > 0 => {
                word(CLOSED, generation, core.consecutive_failures())
            }
            State::Disabled => word(DISABLED, generation, 0),
            State::ForcedOpen => word(FORCED, generation, 0),
            _ => word(SLOW, generation, 0),
        }
    }

    /// Runs `op` on the core at `now` (`None`: the core's latest time), under the
    /// lock, with the word claimed; keeps `cap`'s count when the breaker stops being
    /// ejected (a trip reserves its slot itself, through [`Cap`]).
    fn slow<R>(
        &self,
        now: Option<Duration>,
        cap: Option<&Cap<'_>>,
        op: impl FnOnce(&mut CircuitBreaker, Duration) -> R,
    ) -> R {
        // The caller read the clock before the lock is taken: no user code under it
        // (the core keeps time monotonic if another thread's reading was later).
        let mut core = lock(&self.core);
        let now = now.unwrap_or_else(|| core.latest());
        let mut w = self.word.0.load(Ordering::Acquire);
        while mode(w) != SLOW {
            let claimed = word(SLOW, generation(w), 0);
            match self
                .word
                .0
                .compare_exchange_weak(w, claimed, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    self.hand_over(&mut core, w, now);
                    break;
                }
                Err(actual) => w = actual,
            }
        }
        let was_ejected = cap.is_some() && is_ejected(&core);
        let out = op(&mut core, now);
        if let Some(cap) = cap {
            let ejected = is_ejected(&core);
            if was_ejected && !ejected {
                cap.release();
            }
        }
        self.word.0.store(self.publish(&core), Ordering::Release);
        out
    }

    /// Gives `core` what a Closed word `w` counted: its pending successes (counted at
    /// `now`, the first reading of the clock since) or its run of failures.
    fn hand_over(&self, core: &mut CircuitBreaker, w: u64, now: Duration) {
        if mode(w) == CLOSED {
            if self.rate {
                core.fold_successes(pending(w), now);
            } else {
                core.set_consecutive_failures(failures(w));
            }
        }
    }

    /// Records a verdict; `clock` is read only on the slow path, and never while the
    /// thread unwinds.
    #[inline]
    pub(crate) fn record(
        &self,
        clock: &dyn Clock,
        cap: Option<&Cap<'_>>,
        permit_generation: u32,
        probe: bool,
        verdict: Verdict,
    ) -> Recorded {
        let mut w = self.word.0.load(Ordering::Acquire);
        loop {
            match mode(w) {
                CLOSED => {
                    if generation(w) != permit_generation {
                        return Recorded::Stale;
                    }
                    let next = if self.rate {
                        match verdict {
                            Verdict::Abandoned => return Recorded::Counted(None),
                            Verdict::Success if w & NOOP != 0 => return Recorded::Counted(None),
                            Verdict::Success
                                if w & SAFE != 0
                                    && pending(w) < PENDING_MAX
                                    && pending(w) + 1 != self.noop_after =>
                            {
                                w + (1 << FAILS_SHIFT)
                            }
                            // A failure, or a success that might open: the core decides.
                            _ => break,
                        }
                    } else {
                        let count = failures(w);
                        match verdict {
                            Verdict::Abandoned => return Recorded::Counted(None),
                            Verdict::Success if count == 0 => return Recorded::Counted(None),
                            Verdict::Success => word(CLOSED, permit_generation, 0),
                            Verdict::Failure if count + 1 < self.fast_threshold => {
                                word(CLOSED, permit_generation, count + 1)
                            }
                            // This failure opens the breaker: a transition, on the slow path.
                            Verdict::Failure => break,
                        }
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
        self.record_slow(clock, cap, permit_generation, probe, verdict)
    }

    #[cold]
    #[inline(never)]
    fn record_slow(
        &self,
        clock: &dyn Clock,
        cap: Option<&Cap<'_>>,
        permit_generation: u32,
        probe: bool,
        verdict: Verdict,
    ) -> Recorded {
        // An abandoned call never depends on the time: it runs at the core's latest,
        // without reading the clock (so a permit's `Drop` runs no user code).
        let now = match verdict {
            Verdict::Abandoned => None,
            _ => read_clock(clock),
        };
        self.slow(now, cap, |core, now| {
            core.record_capped(Permit::new(permit_generation, probe), verdict, now, || {
                cap.is_none_or(Cap::try_reserve)
            })
        })
    }

    /// Asks leave for one call.
    #[inline]
    pub(crate) fn acquire(&self, clock: &dyn Clock) -> Result<Permit, Rejected> {
        let w = self.word.0.load(Ordering::Acquire);
        match mode(w) {
            CLOSED | DISABLED => Ok(Permit::new(generation(w), false)),
            FORCED => Err(Rejected { retry_after: None }),
            _ => self.acquire_slow(clock),
        }
    }

    #[cold]
    #[inline(never)]
    fn acquire_slow(&self, clock: &dyn Clock) -> Result<Permit, Rejected> {
        // Open to HalfOpen keeps a worker ejected: no cap to keep.
        self.slow(read_clock(clock), None, |core, now| core.try_acquire(now))
    }

    /// The state now.
    pub(crate) fn state(&self, clock: &dyn Clock) -> State {
        match mode(self.word.0.load(Ordering::Acquire)) {
            CLOSED => State::Closed,
            DISABLED => State::Disabled,
            FORCED => State::ForcedOpen,
            _ => {
                let now = clock.now();
                lock(&self.core).state(now)
            }
        }
    }

    pub(crate) fn config(&self) -> Config {
        *lock(&self.core).config()
    }

    pub(crate) fn handle_timeout(
        &self,
        clock: &dyn Clock,
        cap: Option<&Cap<'_>>,
    ) -> Option<Transition> {
        if mode(self.word.0.load(Ordering::Acquire)) != SLOW {
            return None;
        }
        self.slow(read_clock(clock), cap, |core, now| core.handle_timeout(now))
    }

    pub(crate) fn poll_timeout(&self) -> Option<Duration> {
        lock(&self.core).poll_timeout()
    }

    pub(crate) fn force_open(
        &self,
        clock: &dyn Clock,
        cap: Option<&Cap<'_>>,
    ) -> Option<Transition> {
        self.slow(read_clock(clock), cap, |core, now| core.force_open(now))
    }

    pub(crate) fn disable(&self, clock: &dyn Clock, cap: Option<&Cap<'_>>) -> Option<Transition> {
        self.slow(read_clock(clock), cap, |core, now| core.disable(now))
    }

    pub(crate) fn reset(&self, clock: &dyn Clock, cap: Option<&Cap<'_>>) -> Option<Transition> {
        self.slow(read_clock(clock), cap, |core, now| core.reset(now))
    }

    /// A copy of the core with what the word counted handed over (pending successes
    /// counted at the clock's time, as the next reading would), leaving both as they
    /// are.
    pub(crate) fn snapshot(&self, clock: &dyn Clock) -> CircuitBreaker {
        let now = read_clock(clock);
        let core = lock(&self.core);
        let w = self.word.0.load(Ordering::Acquire);
        let mut copy = core.clone();
        drop(core);
        let now = now.unwrap_or_else(|| copy.latest());
        self.hand_over(&mut copy, w, now);
        copy
    }
}

/// What the handles share.
pub(crate) struct Inner {
    core: Core,
    clock: Box<dyn Clock>,
}

impl Inner {
    #[inline]
    fn record(&self, permit_generation: u32, probe: bool, verdict: Verdict) -> Recorded {
        self.core
            .record(&*self.clock, None, permit_generation, probe, verdict)
    }
}

/// A [`CircuitBreaker`] shared between threads and tasks: `Clone + Send + Sync`.
///
/// Same semantics as the sans-io breaker (every concurrent history of it equals some
/// sequential history of a [`CircuitBreaker`]; checked with loom), with time read from
/// a [`Clock`] ([`StdClock`] by default, [`ManualClock`] in tests). While Closed,
/// acquiring a permit and recording a success take no lock and read no clock, also
/// with a failure-rate rule (a time window counts such a success at the next reading
/// of the clock: see the module docs of [`breaker`](super)); without a rate rule, so
/// does a failure below the threshold.
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
                core: Core::new(config),
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
        let permit = self.inner.core.acquire(&*self.inner.clock)?;
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
        let permit = self.inner.core.acquire(&*self.inner.clock)?;
        Ok(OwnedSharedPermit {
            breaker: Some(Arc::clone(&self.inner)),
            generation: permit.generation(),
            probe: permit.is_probe(),
            transition: permit.transition(),
        })
    }

    /// The state now.
    pub fn state(&self) -> State {
        self.inner.core.state(&*self.inner.clock)
    }

    /// The time on this breaker's clock.
    pub fn now(&self) -> Duration {
        self.inner.clock.now()
    }

    /// The configuration in force.
    pub fn config(&self) -> Config {
        self.inner.core.config()
    }

    /// Applies what time alone changes now. See [`CircuitBreaker::handle_timeout`].
    #[must_use = "a transition to log or export"]
    pub fn handle_timeout(&self) -> Option<Transition> {
        self.inner.core.handle_timeout(&*self.inner.clock, None)
    }

    /// When time alone would next change the state. See
    /// [`CircuitBreaker::poll_timeout`].
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.inner.core.poll_timeout()
    }

    /// Opens by hand. See [`CircuitBreaker::force_open`].
    #[must_use = "a transition to log or export"]
    pub fn force_open(&self) -> Option<Transition> {
        self.inner.core.force_open(&*self.inner.clock, None)
    }

    /// Switches the breaker off. See [`CircuitBreaker::disable`].
    #[must_use = "a transition to log or export"]
    pub fn disable(&self) -> Option<Transition> {
        self.inner.core.disable(&*self.inner.clock, None)
    }

    /// Back to Closed with every count cleared. See [`CircuitBreaker::reset`].
    #[must_use = "a transition to log or export"]
    pub fn reset(&self) -> Option<Transition> {
        self.inner.core.reset(&*self.inner.clock, None)
    }

    /// A copy of the sans-io core as it stands (for inspection and tests), with the
    /// counts the handle kept outside it folded in (successes of a time window at the
    /// clock's time, as the handle's next reading will count them). Reads the clock;
    /// changes nothing.
    pub fn snapshot(&self) -> CircuitBreaker {
        self.inner.core.snapshot(&*self.inner.clock)
    }
}

/// What every permit of a shared breaker or set has: its accessors, `report`, the
/// [`Recorder`] and the `Drop` that records Abandoned. The permit has the fields
/// `breaker` (an `Option` of what records, taken when it does), `generation`, `probe`
/// and `transition`.
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

        permit_impl!(@common $permit);
    };
    (@common $permit:ty) => {
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

            /// Records `verdict` and says what the breaker did with it (so the caller
            /// can log or export a [`Transition`]; for a set's permit, a
            /// [`Reason::EjectionCapped`](super::Reason::EjectionCapped) transition
            /// when the cap held its worker in).
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
            /// Records [`Verdict::Abandoned`] if the permit was not recorded, which
            /// frees its probe slot (and a set's slot in flight). Never panics (a
            /// poisoned lock is taken as it is) and runs no user code: an abandoned
            /// call does not need the clock.
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
pub(crate) use permit_impl;
