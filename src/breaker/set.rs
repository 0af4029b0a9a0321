//! One shared breaker per worker, with a cap on how many are ejected at once.

use alloc::boxed::Box;
use core::fmt;
use core::time::Duration;

use super::cap::Cap;
use super::cell::BreakerCell;
use super::clock::{Clock, StdClock};
use super::lease::{Handle, Lease};
use super::sync::{Arc, AtomicUsize, Ordering};
use super::{Config, ConfigError, Recorded, Rejected, State, Transition};
use crate::{Outcome, Recorder, Verdict};

/// The default `max_ejected_percent`: Envoy's default for outlier detection.
pub const DEFAULT_MAX_EJECTED_PERCENT: u8 = 10;

/// How [`SharedBreakerSet::pick`] chooses a worker among those that admit a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Pick {
    /// The next worker after the last one picked, in index order.
    #[default]
    RoundRobin,
    /// The worker with the fewest calls in flight (permits issued and not yet
    /// recorded or dropped); ties go in round-robin order.
    LeastInFlight,
}

/// What every worker of a set shares: the clock and the cap.
struct Pool {
    clock: Box<dyn Clock>,
    /// Workers ejected (Open or HalfOpen) plus trips reserved and not yet published:
    /// never above `max_ejected`.
    ejected: AtomicUsize,
    max_ejected: AtomicUsize,
}

impl Pool {
    fn cap(&self) -> Cap<'_> {
        Cap {
            ejected: &self.ejected,
            max: &self.max_ejected,
        }
    }
}

/// One worker: its breaker, and the pool it belongs to. The set holds one `Arc` of
/// it and each of its permits another, so the permits in flight are its strong
/// count less one: a permit costs one reference count up and one down, nothing more.
struct Worker {
    cell: BreakerCell,
    pool: Arc<Pool>,
}

impl Handle for Worker {
    #[inline]
    fn record(&self, generation: u32, probe: bool, verdict: Verdict) -> Recorded {
        let cap = self.pool.cap();
        self.cell
            .record(&*self.pool.clock, Some(&cap), generation, probe, verdict)
    }
}

struct SetInner {
    /// Cloned only into permits (see [`Worker`]).
    workers: Box<[Arc<Worker>]>,
    pool: Arc<Pool>,
    /// Where the next round-robin scan starts. Loaded and stored, not incremented
    /// atomically: concurrent picks may start at the same worker (no RMW on the hot
    /// path); alone, the order is exact.
    cursor: AtomicUsize,
}

impl SetInner {
    /// `worker`, if the set has it.
    fn worker(&self, worker: usize) -> Option<&Worker> {
        self.workers.get(worker).map(|w| &**w)
    }

    /// Permits of `worker` in flight.
    fn in_flight(&self, worker: usize) -> usize {
        Arc::strong_count(&self.workers[worker]) - 1
    }

    /// Tries `worker`; on success, its permit (counted in flight).
    #[inline]
    fn acquire(&self, worker: usize) -> Result<SetPermit, Rejected> {
        let w = &self.workers[worker];
        let permit = w.cell.acquire(&*self.pool.clock)?;
        Ok(SetPermit {
            lease: Lease::new(Arc::clone(w), permit),
            index: worker,
        })
    }
}

/// One [`SharedBreaker`](super::SharedBreaker) per worker of a pool, with a cap on
/// how many are ejected at once: `Clone + Send + Sync`, lock-free on the Closed path
/// like the single breaker.
///
/// A worker is *ejected* while its breaker is Open or HalfOpen (as in Envoy's
/// outlier detection, where a host is out of the load balancing until its ejection
/// ends: a HalfOpen worker takes probes only, and a failed probe opens it again
/// without asking the cap, so it must already hold its slot). At most
/// `max(1, floor(workers * percent / 100))` workers are ejected at once (default
/// percent: [`DEFAULT_MAX_EJECTED_PERCENT`], Envoy's 10): one may always be ejected,
/// so a one-worker pool still fails fast. A Closed worker that would open while the
/// cap is full stays Closed, and the record that would have opened it reports a
/// transition from Closed to Closed with [`Reason::EjectionCapped`](super::Reason).
/// [`force_open`](Self::force_open) (an operator's decision) is never capped and
/// does not count towards the cap; [`ejected`](Self::ejected) counts what the cap
/// limits.
///
/// [`pick`](Self::pick) chooses a worker ([`Pick`]), [`try_acquire`](Self::try_acquire)
/// asks one worker. Either gives a [`SetPermit`]: a [`Recorder`] that is `Send +
/// 'static`, counted *in flight* until it is recorded or dropped (dropped unrecorded,
/// it records [`Verdict::Abandoned`]).
///
/// **A worker index the set does not have** is, for every method, a worker forced
/// open for good: it admits nothing (`Rejected { retry_after: None }`, and
/// [`pick`](Self::pick) never chooses it), its [`state`](Self::state) is
/// [`State::ForcedOpen`], it has nothing [in flight](Self::in_flight), and the
/// overrides ([`force_open`](Self::force_open), [`disable`](Self::disable),
/// [`reset`](Self::reset), [`handle_timeout`](Self::handle_timeout)) change nothing
/// and return `None`, no transition. So a stale index (a worker removed from a
/// caller's list) can never route a call, and no method panics or fails on it.
/// [`len`](Self::len) says which indexes are workers.
///
/// ```
/// use sluice::breaker::{Config, SharedBreakerSet, State};
///
/// let set = SharedBreakerSet::new(2, Config::default());
/// assert_eq!(set.try_acquire(7).expect_err("unknown").retry_after, None);
/// assert_eq!(set.state(7), State::ForcedOpen);
/// assert_eq!((set.reset(7), set.disable(7), set.force_open(7)), (None, None, None));
/// assert_eq!(set.state(7), State::ForcedOpen); // no override changes it
/// assert_eq!(set.in_flight(7), 0);
/// assert!(set.snapshot(7).is_none());
/// ```
///
/// ```
/// use core::time::Duration;
/// use sluice::breaker::{Config, ManualClock, Pick, Reason, SharedBreakerSet, State};
/// use sluice::Verdict;
///
/// let clock = ManualClock::new();
/// let config = Config::default().failure_threshold(1);
/// // Two workers at 50 %: at most one ejected at once.
/// let set = SharedBreakerSet::with_clock(2, config, clock.clone()).with_max_ejected_percent(50);
///
/// let permit = set.try_acquire(0)?;
/// let t = permit.report(Verdict::Failure).transition().expect("worker 0 opens");
/// assert!(matches!(t.to, State::Open { .. }));
///
/// // Worker 1 fails too, but the cap is full: it stays in, and says so.
/// let permit = set.pick(Pick::RoundRobin)?;
/// assert_eq!(permit.worker(), 1);
/// let t = permit.report(Verdict::Failure).transition().expect("capped");
/// assert_eq!((t.from, t.to, t.reason), (State::Closed, State::Closed, Reason::EjectionCapped));
/// assert_eq!(set.ejected(), 1);
///
/// // Streams hold their permits; `LeastInFlight` sends the next call elsewhere.
/// let held = set.pick(Pick::LeastInFlight)?;
/// assert_eq!((held.worker(), set.in_flight(1)), (1, 1));
/// drop(held); // unrecorded: Abandoned
/// assert_eq!(set.in_flight(1), 0);
/// # Ok::<(), sluice::breaker::Rejected>(())
/// ```
#[derive(Clone)]
pub struct SharedBreakerSet {
    inner: Arc<SetInner>,
}

impl fmt::Debug for SharedBreakerSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedBreakerSet")
            .field("workers", &self.len())
            .field("ejected", &self.ejected())
            .field("max_ejected", &self.max_ejected())
            .finish_non_exhaustive()
    }
}

impl SharedBreakerSet {
    /// `workers` Closed breakers on the system clock. An invalid `config` does not
    /// panic: it is corrected as in [`CircuitBreaker::new`](super::CircuitBreaker::new)
    /// ([`try_new`](Self::try_new) refuses it). Zero workers make a set that admits
    /// nothing.
    pub fn new(workers: usize, config: Config) -> Self {
        Self::with_clock(workers, config, StdClock::new())
    }

    /// `workers` Closed breakers reading time from `clock` (one clock for all); an
    /// invalid `config` is corrected as in [`new`](Self::new).
    pub fn with_clock(workers: usize, config: Config, clock: impl Clock) -> Self {
        let pool = Arc::new(Pool {
            clock: Box::new(clock),
            ejected: AtomicUsize::new(0),
            max_ejected: AtomicUsize::new(0),
        });
        let set = Self {
            inner: Arc::new(SetInner {
                workers: (0..workers)
                    .map(|_| {
                        Arc::new(Worker {
                            cell: BreakerCell::new(config),
                            pool: Arc::clone(&pool),
                        })
                    })
                    .collect(),
                pool,
                cursor: AtomicUsize::new(0),
            }),
        };
        set.with_max_ejected_percent(DEFAULT_MAX_EJECTED_PERCENT)
    }

    /// `workers` Closed breakers on the system clock, or what is wrong with `config`.
    pub fn try_new(workers: usize, config: Config) -> Result<Self, ConfigError> {
        Self::try_with_clock(workers, config, StdClock::new())
    }

    /// `workers` Closed breakers reading `clock`, or what is wrong with `config`.
    pub fn try_with_clock(
        workers: usize,
        config: Config,
        clock: impl Clock,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self::with_clock(workers, config, clock))
    }

    /// Caps ejections at `max(1, floor(workers * percent / 100))` workers at once; a
    /// `percent` above 100 counts as 100. Meant for a new set: it applies to every
    /// clone, and does not eject or re-admit anyone by itself.
    #[must_use]
    pub fn with_max_ejected_percent(self, percent: u8) -> Self {
        let percent = usize::from(percent.min(100));
        let by_percent = self.len().saturating_mul(percent) / 100;
        self.inner
            .pool
            .max_ejected
            .store(by_percent.max(1), Ordering::Relaxed);
        self
    }

    /// How many workers.
    pub fn len(&self) -> usize {
        self.inner.workers.len()
    }

    /// Whether the set has no worker (it then admits nothing).
    pub fn is_empty(&self) -> bool {
        self.inner.workers.is_empty()
    }

    /// How many workers may be ejected at once.
    pub fn max_ejected(&self) -> usize {
        self.inner.pool.max_ejected.load(Ordering::Relaxed)
    }

    /// How many workers are ejected now (Open or HalfOpen; ForcedOpen is not
    /// counted). Never above [`max_ejected`](Self::max_ejected).
    pub fn ejected(&self) -> usize {
        self.inner.pool.ejected.load(Ordering::Acquire)
    }

    /// The state of `worker` now ([`State::ForcedOpen`] for a worker the set does not
    /// have).
    pub fn state(&self, worker: usize) -> State {
        match self.inner.worker(worker) {
            Some(w) => w.cell.state(&*self.inner.pool.clock),
            None => State::ForcedOpen,
        }
    }

    /// Permits of `worker` issued and not yet recorded or dropped (0 for a worker the
    /// set does not have).
    pub fn in_flight(&self, worker: usize) -> usize {
        if worker < self.len() {
            self.inner.in_flight(worker)
        } else {
            0
        }
    }

    /// The time on the set's clock.
    pub fn now(&self) -> Duration {
        self.inner.pool.clock.now()
    }

    /// Asks `worker`'s breaker for leave to make one call now (see
    /// [`CircuitBreaker::try_acquire`](super::CircuitBreaker::try_acquire)); a worker
    /// the set does not have rejects it, with no `retry_after`.
    #[inline]
    pub fn try_acquire(&self, worker: usize) -> Result<SetPermit, Rejected> {
        if worker >= self.len() {
            return Err(Rejected { retry_after: None });
        }
        self.inner.acquire(worker)
    }

    /// Picks a worker that admits a call now, by `how`, and takes its permit. Workers
    /// are asked in the order `how` gives until one admits (asking an Open worker
    /// whose time has come makes it HalfOpen, as [`try_acquire`](Self::try_acquire)
    /// does). When none admits: [`Rejected`] with the soonest `retry_after` any
    /// worker gave (`None` if none gave one).
    #[inline]
    pub fn pick(&self, how: Pick) -> Result<SetPermit, Rejected> {
        self.pick_excluding(how, &[])
    }

    /// [`pick`](Self::pick), never choosing a worker in `excluded`: for a retry or a
    /// hedge, which must go to a worker the request has not tried yet. When every
    /// other worker is excluded or rejects: [`Rejected`], as `pick`.
    ///
    /// ```
    /// use sluice::breaker::{Config, Pick, SharedBreakerSet};
    ///
    /// let set = SharedBreakerSet::new(3, Config::default());
    /// let first = set.pick(Pick::RoundRobin).unwrap();
    /// let retry = set.pick_excluding(Pick::RoundRobin, &[first.worker()]).unwrap();
    /// assert_ne!(retry.worker(), first.worker());
    /// assert!(set.pick_excluding(Pick::LeastInFlight, &[0, 1, 2]).is_err());
    /// ```
    pub fn pick_excluding(&self, how: Pick, excluded: &[usize]) -> Result<SetPermit, Rejected> {
        let n = self.len();
        if n == 0 {
            return Err(Rejected { retry_after: None });
        }
        // The cursor holds the last pick plus one: at most `n`.
        let start = match self.inner.cursor.load(Ordering::Relaxed) {
            c if c < n => c,
            _ => 0,
        };
        let mut soonest: Option<Duration> = None;
        let mut note = |rejected: Rejected| {
            if let Some(after) = rejected.retry_after {
                soonest = Some(soonest.map_or(after, |s| s.min(after)));
            }
        };
        match how {
            Pick::RoundRobin => {
                for i in 0..n {
                    let worker = wrap(start + i, n);
                    if excluded.contains(&worker) {
                        continue;
                    }
                    match self.inner.acquire(worker) {
                        Ok(permit) => {
                            self.inner.cursor.store(worker + 1, Ordering::Relaxed);
                            return Ok(permit);
                        }
                        Err(rejected) => note(rejected),
                    }
                }
            }
            Pick::LeastInFlight => {
                // Ask the least loaded untried worker first; on a rejection, the next.
                let mut tried = Tried::new(n);
                for &worker in excluded.iter().filter(|&&w| w < n) {
                    tried.mark(worker);
                }
                while let Some(worker) = self.least_in_flight(start, &tried) {
                    tried.mark(worker);
                    match self.inner.acquire(worker) {
                        Ok(permit) => {
                            self.inner.cursor.store(worker + 1, Ordering::Relaxed);
                            return Ok(permit);
                        }
                        Err(rejected) => note(rejected),
                    }
                }
            }
        }
        Err(Rejected {
            retry_after: soonest,
        })
    }

    /// The untried worker with the fewest in flight, first in round-robin order from
    /// `start` among equals.
    fn least_in_flight(&self, start: usize, tried: &Tried) -> Option<usize> {
        let n = self.len();
        let mut best: Option<(usize, usize)> = None;
        for i in 0..n {
            let worker = wrap(start + i, n);
            if tried.has(worker) {
                continue;
            }
            let load = self.inner.in_flight(worker);
            if best.is_none_or(|(_, least)| load < least) {
                best = Some((worker, load));
                if load == 0 {
                    break; // none can have fewer, and it is first in order
                }
            }
        }
        best.map(|(worker, _)| worker)
    }

    /// Applies what time alone changes to `worker` now. See
    /// [`CircuitBreaker::handle_timeout`](super::CircuitBreaker::handle_timeout).
    /// `None` for a worker the set does not have.
    #[must_use = "a transition to log or export"]
    pub fn handle_timeout(&self, worker: usize) -> Option<Transition> {
        let cap = self.inner.pool.cap();
        self.inner
            .worker(worker)?
            .cell
            .handle_timeout(&*self.inner.pool.clock, Some(&cap))
    }

    /// The earliest time at which time alone changes some worker's state.
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.inner
            .workers
            .iter()
            .filter_map(|w| w.cell.poll_timeout())
            .min()
    }

    /// Forces `worker` open (never capped, not counted). See
    /// [`CircuitBreaker::force_open`](super::CircuitBreaker::force_open). `None` for a
    /// worker the set does not have (it is forced open already).
    #[must_use = "a transition to log or export"]
    pub fn force_open(&self, worker: usize) -> Option<Transition> {
        let cap = self.inner.pool.cap();
        self.inner
            .worker(worker)?
            .cell
            .force_open(&*self.inner.pool.clock, Some(&cap))
    }

    /// Switches `worker`'s breaker off. See
    /// [`CircuitBreaker::disable`](super::CircuitBreaker::disable). `None`, no change,
    /// for a worker the set does not have.
    #[must_use = "a transition to log or export"]
    pub fn disable(&self, worker: usize) -> Option<Transition> {
        let cap = self.inner.pool.cap();
        self.inner
            .worker(worker)?
            .cell
            .disable(&*self.inner.pool.clock, Some(&cap))
    }

    /// Resets `worker`'s breaker to Closed. See
    /// [`CircuitBreaker::reset`](super::CircuitBreaker::reset). `None`, no change, for
    /// a worker the set does not have.
    #[must_use = "a transition to log or export"]
    pub fn reset(&self, worker: usize) -> Option<Transition> {
        let cap = self.inner.pool.cap();
        self.inner
            .worker(worker)?
            .cell
            .reset(&*self.inner.pool.clock, Some(&cap))
    }

    /// A copy of `worker`'s sans-io breaker as it stands, with the counts the set kept
    /// outside it folded in (see [`SharedBreaker::snapshot`](super::SharedBreaker::snapshot));
    /// `None` for a worker the set does not have, which has no breaker to copy.
    pub fn snapshot(&self, worker: usize) -> Option<super::CircuitBreaker> {
        Some(
            self.inner
                .worker(worker)?
                .cell
                .snapshot(&*self.inner.pool.clock),
        )
    }
}

/// `i` in `0..2n`, wrapped into `0..n` without a division.
#[inline]
const fn wrap(i: usize, n: usize) -> usize {
    if i < n { i } else { i - n }
}

/// Which workers a [`Pick::LeastInFlight`] scan has asked: a bit per worker, inline
/// up to 128 workers (no allocation on the hot path).
enum Tried {
    Inline(u128),
    Heap(alloc::vec::Vec<bool>),
}

impl Tried {
    fn new(n: usize) -> Self {
        if n <= 128 {
            Self::Inline(0)
        } else {
            Self::Heap(alloc::vec![false; n])
        }
    }

    fn mark(&mut self, worker: usize) {
        match self {
            Self::Inline(bits) => *bits |= 1 << worker,
            Self::Heap(v) => v[worker] = true,
        }
    }

    fn has(&self, worker: usize) -> bool {
        match self {
            Self::Inline(bits) => *bits >> worker & 1 == 1,
            Self::Heap(v) => v[worker],
        }
    }
}

/// Leave to make one call to one worker of a [`SharedBreakerSet`]: `Send + 'static`,
/// a [`Recorder`].
///
/// Counted in flight for its worker until it is recorded: with
/// [`report`](Self::report) (which says what the breaker did, so a gateway can log or
/// export the [`Transition`], and which worker it was), or as a [`Recorder`] (a
/// [`TrackedStream`](crate::TrackedStream) records `outcome.verdict`). Dropped
/// unrecorded, it records [`Verdict::Abandoned`], which counts nothing and frees a
/// HalfOpen probe slot. `Drop` never panics and runs no user code (not the clock).
#[must_use = "dropping a permit at once records it as Abandoned"]
pub struct SetPermit {
    lease: Lease<Arc<Worker>>,
    index: usize,
}

impl fmt::Debug for SetPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("SetPermit");
        d.field("worker", &self.index);
        self.lease.debug_fields(&mut d);
        d.finish_non_exhaustive()
    }
}

impl SetPermit {
    /// The worker it admits a call to.
    pub const fn worker(&self) -> usize {
        self.index
    }

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

impl Recorder for SetPermit {
    /// Records `outcome.verdict` (what a [`TrackedStream`](crate::TrackedStream) does
    /// when its stream ends or is dropped). The [`Recorded`] answer, and so any
    /// [`Transition`] it caused, is dropped: to log or export it, give the stream a
    /// closure instead, `move |o: Outcome| log(permit.report(o.verdict))`.
    #[inline]
    fn record(self, outcome: Outcome) {
        let _ = self.report(outcome.verdict);
    }
}
