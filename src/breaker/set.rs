//! One breaker per worker, with a cap on how many are ejected at once.

use alloc::vec::Vec;
use core::time::Duration;

use super::{CircuitBreaker, Config, ConfigError, Permit, Recorded, Rejected, State, Transition};
use crate::Verdict;

/// Why a [`BreakerSet`] call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum SetError {
    /// The breaker configuration is invalid.
    #[error("invalid breaker configuration: {0}")]
    Config(#[from] ConfigError),
    /// A set needs at least one worker.
    #[error("a breaker set needs at least one worker")]
    NoWorkers,
    /// `max_ejected_percent` is above 100.
    #[error("max_ejected_percent must be at most 100, not {0}")]
    Percent(u8),
    /// The worker index is not in the set.
    #[error("no worker {worker} in a set of {workers}")]
    UnknownWorker {
        /// The index asked for.
        worker: usize,
        /// How many workers the set has.
        workers: usize,
    },
    /// The worker's breaker rejected the call.
    #[error(transparent)]
    Rejected(#[from] Rejected),
}

/// A [`Permit`] of one worker of a [`BreakerSet`].
#[must_use = "a permit must be recorded, or a half-open probe slot stays taken"]
#[derive(Debug, PartialEq, Eq)]
pub struct WorkerPermit {
    worker: usize,
    permit: Permit,
}

impl WorkerPermit {
    /// The worker it admits a call to.
    pub const fn worker(&self) -> usize {
        self.worker
    }

    /// The worker breaker's permit.
    pub const fn permit(&self) -> &Permit {
        &self.permit
    }
}

/// One sans-io [`CircuitBreaker`] per worker, with a cap on ejections.
///
/// A worker is *ejected* while its breaker is Open, HalfOpen or ForcedOpen. With
/// `max_ejected_percent` p, at most `floor(workers * p / 100)` workers are ejected
/// at once, and never all of them: at least one stays admitted. When a Closed breaker
/// would open and that would exceed the cap, it stays Closed, and
/// [`record`](Self::record) reports the refusal as a transition from Closed to Closed
/// with [`Reason::EjectionCapped`](super::Reason::EjectionCapped). (A manual
/// [`force_open`](Self::force_open) is not capped.)
///
/// ```
/// use core::time::Duration;
/// use sluice::Verdict;
/// use sluice::breaker::{BreakerSet, Config, Reason, State};
///
/// let now = Duration::ZERO;
/// let mut set = BreakerSet::new(2, Config::default().failure_threshold(1))?;
/// // Worker 0 fails and is ejected.
/// let permit = set.try_acquire(0, now)?;
/// let t = set.record(permit, Verdict::Failure, now)?.transition().unwrap();
/// assert!(matches!(t.to, State::Open { .. }));
/// // Worker 1 fails too, but it is the last admitted worker: it stays.
/// let permit = set.try_acquire(1, now)?;
/// let t = set.record(permit, Verdict::Failure, now)?.transition().unwrap();
/// assert_eq!((t.to, t.reason), (State::Closed, Reason::EjectionCapped));
/// assert_eq!(set.admitted(now).collect::<Vec<_>>(), [1]);
/// # Ok::<(), sluice::breaker::SetError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerSet {
    breakers: Vec<CircuitBreaker>,
    max_ejected: usize,
}

impl BreakerSet {
    /// `workers` Closed breakers with `config`, ejecting at most all but one.
    pub fn new(workers: usize, config: Config) -> Result<Self, SetError> {
        Self::with_max_ejected_percent(workers, config, 100)
    }

    /// `workers` Closed breakers with `config`, ejecting at most
    /// `floor(workers * percent / 100)` of them (and never the last admitted one).
    pub fn with_max_ejected_percent(
        workers: usize,
        config: Config,
        percent: u8,
    ) -> Result<Self, SetError> {
        config.validate()?;
        if workers == 0 {
            return Err(SetError::NoWorkers);
        }
        if percent > 100 {
            return Err(SetError::Percent(percent));
        }
        let by_percent = workers.saturating_mul(usize::from(percent)) / 100;
        Ok(Self {
            breakers: (0..workers).map(|_| CircuitBreaker::new(config)).collect(),
            max_ejected: by_percent.min(workers - 1),
        })
    }

    /// How many workers.
    pub fn len(&self) -> usize {
        self.breakers.len()
    }

    /// Always `false`: a set has at least one worker.
    pub fn is_empty(&self) -> bool {
        self.breakers.is_empty()
    }

    /// How many workers may be ejected at once.
    pub const fn max_ejected(&self) -> usize {
        self.max_ejected
    }

    /// The breaker of `worker`.
    pub fn breaker(&self, worker: usize) -> Option<&CircuitBreaker> {
        self.breakers.get(worker)
    }

    /// The state of `worker` at `now`.
    pub fn state(&self, worker: usize, now: Duration) -> Result<State, SetError> {
        Ok(self.get(worker)?.state(now))
    }

    /// How many workers are ejected (Open, HalfOpen or ForcedOpen).
    pub fn ejected(&self) -> usize {
        self.breakers.iter().filter(|b| Self::is_ejected(b)).count()
    }

    /// The workers whose breakers are Closed or Disabled at `now`.
    pub fn admitted(&self, now: Duration) -> impl Iterator<Item = usize> + '_ {
        self.breakers
            .iter()
            .enumerate()
            .filter(move |(_, b)| matches!(b.state(now), State::Closed | State::Disabled))
            .map(|(i, _)| i)
    }

    /// Asks leave to call `worker` at `now` (see [`CircuitBreaker::try_acquire`]).
    pub fn try_acquire(&mut self, worker: usize, now: Duration) -> Result<WorkerPermit, SetError> {
        let permit = self.get_mut(worker)?.try_acquire(now)?;
        Ok(WorkerPermit { worker, permit })
    }

    /// Records the verdict of a call made with `permit` (see
    /// [`CircuitBreaker::record`]), holding the worker Closed if opening it would
    /// exceed the ejection cap.
    pub fn record(
        &mut self,
        permit: WorkerPermit,
        verdict: Verdict,
        now: Duration,
    ) -> Result<Recorded, SetError> {
        let may_open = self.ejected() < self.max_ejected;
        let breaker = self.get_mut(permit.worker)?;
        Ok(breaker.record_capped(permit.permit, verdict, now, may_open))
    }

    /// Applies what time alone changes to every worker; returns the transitions.
    pub fn handle_timeout(&mut self, now: Duration) -> Vec<(usize, Transition)> {
        let mut out = Vec::new();
        for (i, b) in self.breakers.iter_mut().enumerate() {
            out.extend(b.handle_timeout(now).map(|t| (i, t)));
        }
        out
    }

    /// The earliest time at which time alone changes some worker's state.
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.breakers
            .iter()
            .filter_map(CircuitBreaker::poll_timeout)
            .min()
    }

    /// Forces `worker` open (not capped). See [`CircuitBreaker::force_open`].
    pub fn force_open(
        &mut self,
        worker: usize,
        now: Duration,
    ) -> Result<Option<Transition>, SetError> {
        Ok(self.get_mut(worker)?.force_open(now))
    }

    /// Disables `worker`'s breaker. See [`CircuitBreaker::disable`].
    pub fn disable(
        &mut self,
        worker: usize,
        now: Duration,
    ) -> Result<Option<Transition>, SetError> {
        Ok(self.get_mut(worker)?.disable(now))
    }

    /// Resets `worker`'s breaker. See [`CircuitBreaker::reset`].
    pub fn reset(&mut self, worker: usize, now: Duration) -> Result<Option<Transition>, SetError> {
        Ok(self.get_mut(worker)?.reset(now))
    }

    fn is_ejected(b: &CircuitBreaker) -> bool {
        // Open, HalfOpen and ForcedOpen, whatever the time: HalfOpen admits probes only.
        !matches!(b.state(Duration::ZERO), State::Closed | State::Disabled)
    }

    fn get(&self, worker: usize) -> Result<&CircuitBreaker, SetError> {
        let workers = self.breakers.len();
        self.breakers
            .get(worker)
            .ok_or(SetError::UnknownWorker { worker, workers })
    }

    fn get_mut(&mut self, worker: usize) -> Result<&mut CircuitBreaker, SetError> {
        let workers = self.breakers.len();
        self.breakers
            .get_mut(worker)
            .ok_or(SetError::UnknownWorker { worker, workers })
    }
}
