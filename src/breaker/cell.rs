//! One breaker's shared state: the sans-io core behind a mutex, with the Closed-state
//! hot path on one atomic word (its layout: [`word`](super::word)).
//!
//! In the modes `CLOSED`, `DISABLED` and `FORCED`, acquire, record and state are
//! decided from the word alone: a load, and at most one compare-and-swap. Every
//! other operation locks the core, *claims* the word by swapping it to `SLOW`
//! (folding the word's count into the core), runs the sans-io machine, and
//! *publishes* the result as the new word before it unlocks. Fast operations
//! linearize at their load or swap on a fast word; slow ones inside the lock, while
//! the word is `SLOW` and so no fast one can take effect.
//!
//! The guarantee: every concurrent history equals a sequential history of the sans-io
//! breaker in which each fast operation happens at its load or swap with `now` equal
//! to the core's latest time, except pending successes, which happen just before the
//! slow operation that folds them, at its reading; and each slow operation happens
//! inside the lock at its own reading (or the latest, if later). The module docs of
//! [`breaker`](super) say what that means for a time window.

use core::time::Duration;

use super::cap::{Cap, is_ejected};
use super::clock::{Clock, read_clock};
use super::sync::{AtomicU64, Mutex, Ordering, lock};
use super::word::{
    CLOSED, DISABLED, FAILS_MAX, FAILS_SHIFT, FORCED, NOOP, PENDING_MAX, SAFE, SLOW, failures,
    generation, mode, pending, word,
};
use super::{CircuitBreaker, Config, Permit, Recorded, Rejected, State, Transition};
use crate::Verdict;

/// The atomic word on a cache line of its own (away from the `Arc` counts).
#[repr(align(64))]
struct Padded(AtomicU64);

/// One breaker's shared state: the word and the core (the sans-io [`CircuitBreaker`],
/// under the mutex). The clock is the owner's.
pub(super) struct BreakerCell {
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

impl BreakerCell {
    pub(super) fn new(config: Config) -> Self {
        let core = CircuitBreaker::new(config);
        let threshold = core.config().failure_threshold;
        let rate = core.has_rate_window();
        let window = core.config().rate.map(|r| r.window);
        let noop_after = match window {
            Some(super::Window::Calls(len)) => u64::from(len),
            _ => 0,
        };
        let cell = Self {
            word: Padded(AtomicU64::new(0)),
            fast_threshold: if threshold > FAILS_MAX { 0 } else { threshold },
            rate,
            noop_after,
            core: Mutex::new(core),
        };
        let first = cell.publish(&lock(&cell.core));
        cell.word.0.store(first, Ordering::Release);
        cell
    }

    /// The word that mirrors `core`.
    fn publish(&self, core: &CircuitBreaker) -> u64 {
        let generation = core.generation();
        match core.state(core.latest()) {
            State::Closed if self.rate => {
                let shortcuts = core.success_shortcuts();
                let noop = if shortcuts.changes_nothing { NOOP } else { 0 };
                let flags = noop | if shortcuts.cannot_open { SAFE } else { 0 };
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
    pub(super) fn record(
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
    pub(super) fn acquire(&self, clock: &dyn Clock) -> Result<Permit, Rejected> {
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
    pub(super) fn state(&self, clock: &dyn Clock) -> State {
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

    pub(super) fn config(&self) -> Config {
        *lock(&self.core).config()
    }

    pub(super) fn handle_timeout(
        &self,
        clock: &dyn Clock,
        cap: Option<&Cap<'_>>,
    ) -> Option<Transition> {
        if mode(self.word.0.load(Ordering::Acquire)) != SLOW {
            return None;
        }
        self.slow(read_clock(clock), cap, |core, now| core.handle_timeout(now))
    }

    pub(super) fn poll_timeout(&self) -> Option<Duration> {
        lock(&self.core).poll_timeout()
    }

    pub(super) fn force_open(
        &self,
        clock: &dyn Clock,
        cap: Option<&Cap<'_>>,
    ) -> Option<Transition> {
        self.slow(read_clock(clock), cap, |core, now| core.force_open(now))
    }

    pub(super) fn disable(&self, clock: &dyn Clock, cap: Option<&Cap<'_>>) -> Option<Transition> {
        self.slow(read_clock(clock), cap, |core, now| core.disable(now))
    }

    pub(super) fn reset(&self, clock: &dyn Clock, cap: Option<&Cap<'_>>) -> Option<Transition> {
        self.slow(read_clock(clock), cap, |core, now| core.reset(now))
    }

    /// A copy of the core with what the word counted handed over (pending successes
    /// counted at the clock's time, as the next reading would), leaving both as they
    /// are.
    pub(super) fn snapshot(&self, clock: &dyn Clock) -> CircuitBreaker {
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
