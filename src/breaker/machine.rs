//! The sans-io breaker: states, counts and transitions, with time as an input.

use core::time::Duration;

use super::config::{Config, ConfigError};
use super::window::RateWindow;
use crate::Verdict;

/// Where a breaker stands, as seen at some `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum State {
    /// Admits every call and counts the verdicts.
    Closed,
    /// Rejects every call until `until`; from then on it is [`HalfOpen`](State::HalfOpen).
    Open {
        /// When probes may start (same origin as the `now` the caller passes).
        until: Duration,
    },
    /// Admits up to `half_open_max_probes` calls at once, to probe the worker.
    HalfOpen,
    /// Opened by hand ([`CircuitBreaker::force_open`]): rejects everything until a
    /// [`reset`](CircuitBreaker::reset) or [`disable`](CircuitBreaker::disable).
    ForcedOpen,
    /// Switched off by hand ([`CircuitBreaker::disable`]): admits everything, counts
    /// nothing.
    Disabled,
}

impl State {
    /// A stable snake_case label, for metrics and logs: `closed`, `open`, `half_open`,
    /// `forced_open`, `disabled` (Open's `until` is left out).
    ///
    /// ```
    /// use core::time::Duration;
    /// use sluice::breaker::State;
    ///
    /// assert_eq!(State::Open { until: Duration::ZERO }.as_str(), "open");
    /// assert_eq!(State::HalfOpen.as_str(), "half_open");
    /// ```
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open { .. } => "open",
            Self::HalfOpen => "half_open",
            Self::ForcedOpen => "forced_open",
            Self::Disabled => "disabled",
        }
    }
}

/// Why a [`Transition`] happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// Closed to Open: `failure_threshold` failures in a row.
    ConsecutiveFailures,
    /// Closed to Open: the failure-rate rule fired.
    FailureRate,
    /// Open to HalfOpen: the open duration has elapsed.
    OpenElapsed,
    /// HalfOpen to Open: a probe failed.
    ProbeFailed,
    /// HalfOpen to Closed: `success_threshold` probes in a row succeeded.
    ProbesSucceeded,
    /// To ForcedOpen, by [`CircuitBreaker::force_open`].
    Forced,
    /// To Disabled, by [`CircuitBreaker::disable`].
    Disabled,
    /// To Closed, by [`CircuitBreaker::reset`].
    Reset,
    /// No change of state: the breaker would have opened (by consecutive failures or
    /// the failure rate), but its [`SharedBreakerSet`](super::SharedBreakerSet)
    /// already ejects as many workers as its cap allows, so this one stays Closed
    /// and admitted (`from == to == Closed`, and no new generation). Reported at every
    /// record that would have opened it (every failure of the run; with a rate rule,
    /// also a success while the window stays at the rate), until the cap has room.
    EjectionCapped,
}

impl Reason {
    /// A stable snake_case label, for metrics and logs: `consecutive_failures`,
    /// `failure_rate`, `open_elapsed`, `probe_failed`, `probes_succeeded`, `forced`,
    /// `disabled`, `reset`, `ejection_capped`.
    ///
    /// ```
    /// use sluice::breaker::Reason;
    ///
    /// assert_eq!(Reason::ProbesSucceeded.as_str(), "probes_succeeded");
    /// assert_eq!(Reason::EjectionCapped.as_str(), "ejection_capped");
    /// ```
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::ConsecutiveFailures => "consecutive_failures",
            Self::FailureRate => "failure_rate",
            Self::OpenElapsed => "open_elapsed",
            Self::ProbeFailed => "probe_failed",
            Self::ProbesSucceeded => "probes_succeeded",
            Self::Forced => "forced",
            Self::Disabled => "disabled",
            Self::Reset => "reset",
            Self::EjectionCapped => "ejection_capped",
        }
    }
}

/// One change of state, for the caller to log or export.
///
/// Its fields are public to read; it is `#[non_exhaustive]` (more may follow), so
/// only the breaker makes one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Transition {
    /// The state left (Open as it was set, with its `until`).
    pub from: State,
    /// The state entered.
    pub to: State,
    /// The `now` of the call that made the change.
    pub at: Duration,
    /// Why.
    pub reason: Reason,
    /// The generation the breaker is in after the change.
    pub generation: u32,
}

/// Leave to make one call. Give it back with [`CircuitBreaker::record`].
///
/// A token: it cannot be cloned, so each permit is recorded at most once. It knows its
/// generation (a permit from before the breaker's last transition is stale) and
/// whether it holds one of HalfOpen's probe slots. A permit that is never recorded
/// keeps its probe slot until the breaker's next transition, so record
/// [`Verdict::Abandoned`] when the call is given up.
#[must_use = "a permit must be recorded, or a half-open probe slot stays taken"]
#[derive(Debug, PartialEq, Eq)]
pub struct Permit {
    generation: u32,
    probe: bool,
    transition: Option<Transition>,
}

impl Permit {
    pub(crate) const fn new(generation: u32, probe: bool) -> Self {
        Self {
            generation,
            probe,
            transition: None,
        }
    }

    /// The breaker generation this permit was issued in.
    pub const fn generation(&self) -> u32 {
        self.generation
    }

    /// Whether it holds a HalfOpen probe slot.
    pub const fn is_probe(&self) -> bool {
        self.probe
    }

    /// The transition [`try_acquire`](CircuitBreaker::try_acquire) made before issuing
    /// this permit: Open to HalfOpen when the open duration had elapsed.
    pub const fn transition(&self) -> Option<Transition> {
        self.transition
    }
}

/// The breaker said no. `retry_after` is how long until it lets a probe through, when
/// that is known (Open); `None` in ForcedOpen, or in HalfOpen with every probe slot
/// taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[error("circuit breaker rejected the call (retry after {retry_after:?})")]
pub struct Rejected {
    /// How long until the breaker admits a probe, if known.
    pub retry_after: Option<Duration>,
}

/// What [`CircuitBreaker::record`] did with a verdict.
///
/// `Counted` means the permit was **current**, so its verdict was taken into
/// account, and that is all: it does not say a count changed. A
/// [`Success`](Verdict::Success) or a [`Failure`](Verdict::Failure) is counted; an
/// [`Abandoned`](Verdict::Abandoned) verdict changes no count and only frees the
/// permit's probe slot, and a Disabled breaker counts nothing, yet both answer
/// `Counted(None)` (current, no transition). Read `Counted(None)` as "taken, no state
/// change", whatever the verdict; only `Counted(Some(_))` changed the state.
///
/// ```
/// use core::time::Duration;
/// use sluice::Verdict;
/// use sluice::breaker::{CircuitBreaker, Config, Recorded};
///
/// let mut breaker = CircuitBreaker::new(Config::default().failure_threshold(1));
/// let now = Duration::ZERO;
/// let permit = breaker.try_acquire(now).expect("closed");
/// // The client left: current, counted nowhere, no transition.
/// assert_eq!(breaker.record(permit, Verdict::Abandoned, now), Recorded::Counted(None));
/// assert_eq!(breaker.consecutive_failures(), 0);
/// let permit = breaker.try_acquire(now).expect("still closed");
/// assert!(breaker.record(permit, Verdict::Failure, now).transition().is_some()); // opens
/// ```
#[must_use = "a record may have changed the state: log or export its transition"]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Recorded {
    /// The permit was current: its verdict was taken (a Success or Failure counted;
    /// an Abandoned one, or any in Disabled, changed no count), with the transition
    /// it caused, if any.
    Counted(Option<Transition>),
    /// The permit was from an older generation: nothing counted, nothing freed.
    Stale,
}

impl Recorded {
    /// The transition this record caused, if any.
    pub const fn transition(&self) -> Option<Transition> {
        match self {
            Self::Counted(t) => *t,
            Self::Stale => None,
        }
    }
}

/// The internal state, with its counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Closed { failures: u32 },
    Open { until: Duration },
    HalfOpen { in_flight: u32, successes: u32 },
    ForcedOpen,
    Disabled,
}

/// A circuit breaker for one worker: sans-io, deterministic, `no_std`.
///
/// It reads no clock and no random source: every call that depends on time takes
/// `now`, a [`Duration`] since an origin the caller chooses (monotonic: a `now` earlier
/// than one already seen is taken as the latest seen). Every change of state comes
/// back as a [`Transition`]; nothing is logged inside.
///
/// # States
///
/// Closed counts verdicts and opens after `failure_threshold` failures in a row (a
/// success resets the run) or when the optional failure-rate rule fires. Open rejects
/// until its `until`; the first [`try_acquire`](Self::try_acquire) at or after it
/// moves to HalfOpen, which admits up to `half_open_max_probes` probes at once;
/// `success_threshold` successes in a row close it, one failure opens it again (for
/// longer, with [`Config::backoff`]). [`Verdict::Abandoned`] counts nothing and only
/// frees the probe slot. [`force_open`](Self::force_open), [`disable`](Self::disable)
/// and [`reset`](Self::reset) are the manual overrides.
///
/// Every transition starts a new generation; a [`Permit`] from an older one is stale:
/// [`record`](Self::record) counts it nowhere and returns [`Recorded::Stale`].
///
/// # Methods
///
/// * Inputs: [`try_acquire`](Self::try_acquire) before a call, [`record`](Self::record)
///   after it, [`handle_timeout`](Self::handle_timeout) when the timer fires, and the
///   overrides.
/// * Outputs: the [`Transition`]s those return, and
///   [`poll_timeout`](Self::poll_timeout), when time alone would next change the state.
/// * Getters: [`state`](Self::state), [`generation`](Self::generation),
///   [`consecutive_failures`](Self::consecutive_failures),
///   [`probes_in_flight`](Self::probes_in_flight).
///
/// # Driving it
///
/// ```
/// use core::time::Duration;
/// use sluice::Verdict;
/// use sluice::breaker::{CircuitBreaker, Config, Recorded, State};
///
/// let mut breaker = CircuitBreaker::new(Config::default().failure_threshold(2));
/// let mut log = Vec::new();
/// // The driver's loop: one iteration per request, `now` from the driver's clock.
/// for (secs, verdict) in [(0, Verdict::Failure), (1, Verdict::Failure), (2, Verdict::Success)] {
///     let now = Duration::from_secs(secs);
///     // 1. When the timer from poll_timeout fires, tell the breaker.
///     if breaker.poll_timeout().is_some_and(|at| at <= now) {
///         log.extend(breaker.handle_timeout(now));
///     }
///     // 2. Ask for leave before sending.
///     let permit = match breaker.try_acquire(now) {
///         Ok(permit) => permit,
///         Err(rejected) => {
///             // Fail fast; `rejected.retry_after` says when to come back.
///             assert_eq!(rejected.retry_after, Some(Duration::from_secs(29)));
///             continue;
///         }
///     };
///     log.extend(permit.transition());
///     // 3. Send, stream, and record the verdict (Abandoned if the client left).
///     if let Recorded::Counted(Some(transition)) = breaker.record(permit, verdict, now) {
///         log.push(transition);
///     }
/// }
/// assert_eq!(breaker.state(Duration::from_secs(2)), State::Open { until: Duration::from_secs(31) });
/// assert_eq!(log.len(), 1);
/// assert_eq!(breaker.state(Duration::from_secs(31)), State::HalfOpen);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CircuitBreaker {
    config: Config,
    phase: Phase,
    generation: u32,
    /// Openings since the last close, for the backoff.
    openings: u32,
    window: Option<RateWindow>,
    /// The latest `now` seen.
    latest: Duration,
}

/// One splitmix64 step.
const fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl CircuitBreaker {
    /// A Closed breaker. An invalid `config` does not panic: each invalid field is
    /// replaced by the nearest valid value (a zero threshold counts as 1, an invalid
    /// rate rule is left out, a zero backoff factor is 1, a backoff cap below the
    /// open duration is raised to it). Use
    /// [`try_new`](Self::try_new) to be told instead.
    pub fn new(config: Config) -> Self {
        let config = config.sanitized();
        Self {
            window: config.rate.as_ref().map(RateWindow::new),
            config,
            phase: Phase::Closed { failures: 0 },
            generation: 0,
            openings: 0,
            latest: Duration::ZERO,
        }
    }

    /// A Closed breaker, or what is wrong with `config` (see [`Config::validate`]).
    pub fn try_new(config: Config) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self::new(config))
    }

    /// The configuration in force (after [`new`](Self::new)'s corrections).
    pub const fn config(&self) -> &Config {
        &self.config
    }

    /// The current generation; it changes at every transition.
    pub const fn generation(&self) -> u32 {
        self.generation
    }

    /// Failures in a row counted in Closed (0 in any other state).
    pub const fn consecutive_failures(&self) -> u32 {
        match self.phase {
            Phase::Closed { failures } => failures,
            _ => 0,
        }
    }

    /// Probe permits issued in this HalfOpen generation and not yet recorded.
    pub const fn probes_in_flight(&self) -> u32 {
        match self.phase {
            Phase::HalfOpen { in_flight, .. } => in_flight,
            _ => 0,
        }
    }

    /// The state at `now`: an Open breaker whose `until` has come is HalfOpen.
    pub fn state(&self, now: Duration) -> State {
        let now = now.max(self.latest);
        match self.phase {
            Phase::Closed { .. } => State::Closed,
            Phase::Open { until } if !elapsed(until, now) => State::Open { until },
            Phase::Open { .. } | Phase::HalfOpen { .. } => State::HalfOpen,
            Phase::ForcedOpen => State::ForcedOpen,
            Phase::Disabled => State::Disabled,
        }
    }

    /// When time alone would next change the state (Open's `until`), if ever.
    pub const fn poll_timeout(&self) -> Option<Duration> {
        match self.phase {
            Phase::Open { until } => Some(until),
            _ => None,
        }
    }

    /// Applies what time alone changes: Open becomes HalfOpen at `until`. Calling it is
    /// optional ([`try_acquire`](Self::try_acquire) does the same lazily), but a
    /// driver that calls it when [`poll_timeout`](Self::poll_timeout) fires reports the
    /// transition on time.
    #[inline]
    #[must_use = "a transition to log or export"]
    pub fn handle_timeout(&mut self, now: Duration) -> Option<Transition> {
        let now = self.observe(now);
        match self.phase {
            Phase::Open { until } if elapsed(until, now) => Some(self.enter(
                Phase::HalfOpen {
                    in_flight: 0,
                    successes: 0,
                },
                now,
                Reason::OpenElapsed,
            )),
            _ => None,
        }
    }

    /// Asks leave to make one call at `now`.
    ///
    /// Closed and Disabled admit; Open rejects until `until` and then turns HalfOpen
    /// (the permit carries that [`transition`](Permit::transition)); HalfOpen admits
    /// while fewer than `half_open_max_probes` probes are in flight; ForcedOpen
    /// rejects.
    #[inline]
    pub fn try_acquire(&mut self, now: Duration) -> Result<Permit, Rejected> {
        let transition = self.handle_timeout(now);
        let now = self.latest;
        let permit = match &mut self.phase {
            Phase::Closed { .. } | Phase::Disabled => Permit::new(self.generation, false),
            Phase::Open { until } => {
                return Err(Rejected {
                    retry_after: Some(until.saturating_sub(now)),
                });
            }
            Phase::ForcedOpen => return Err(Rejected { retry_after: None }),
            Phase::HalfOpen { in_flight, .. } => {
                if *in_flight >= self.config.half_open_max_probes {
                    return Err(Rejected { retry_after: None });
                }
                *in_flight += 1;
                Permit::new(self.generation, true)
            }
        };
        Ok(Permit {
            transition,
            ..permit
        })
    }

    /// Takes back a permit with the verdict of its call, at `now`.
    ///
    /// A permit from an older generation is [`Recorded::Stale`] and changes nothing.
    /// Otherwise the verdict is counted (see the type's docs) and any transition it
    /// causes is returned.
    #[inline]
    pub fn record(&mut self, permit: Permit, verdict: Verdict, now: Duration) -> Recorded {
        self.record_capped(permit, verdict, now, || true)
    }

    /// [`record`](Self::record) for a breaker in a pool with an ejection cap: a Closed
    /// breaker that would open first calls `may_open` (at most once, and only then).
    /// `false` keeps it Closed (its counts as they are after this verdict, so the
    /// next failure asks again), and the refusal comes back as a same-state
    /// transition, Closed to Closed, with [`Reason::EjectionCapped`] and no new
    /// generation. [`SharedBreakerSet`](super::SharedBreakerSet) is built on it; a
    /// sans-io pool can be too.
    ///
    /// ```
    /// use core::time::Duration;
    /// use sluice::Verdict;
    /// use sluice::breaker::{CircuitBreaker, Config, Reason, State};
    ///
    /// let mut b = CircuitBreaker::new(Config::default().failure_threshold(1));
    /// let permit = b.try_acquire(Duration::ZERO).expect("closed");
    /// let t = b.record_capped(permit, Verdict::Failure, Duration::ZERO, || false);
    /// let t = t.transition().expect("reported");
    /// assert_eq!((t.to, t.reason), (State::Closed, Reason::EjectionCapped));
    /// ```
    pub fn record_capped(
        &mut self,
        permit: Permit,
        verdict: Verdict,
        now: Duration,
        may_open: impl FnOnce() -> bool,
    ) -> Recorded {
        let now = self.observe(now);
        if permit.generation != self.generation {
            return Recorded::Stale;
        }
        let transition = match &mut self.phase {
            Phase::Disabled | Phase::Open { .. } | Phase::ForcedOpen => None,
            Phase::Closed { failures } => {
                let failed = match verdict {
                    Verdict::Abandoned => return Recorded::Counted(None),
                    Verdict::Success => {
                        *failures = 0;
                        false
                    }
                    Verdict::Failure => {
                        *failures = failures.saturating_add(1);
                        true
                    }
                };
                let consecutive = *failures >= self.config.failure_threshold;
                let rate = self.window.as_mut().is_some_and(|w| w.push(failed, now));
                let reason = match (consecutive, rate) {
                    (true, _) => Reason::ConsecutiveFailures,
                    (false, true) => Reason::FailureRate,
                    (false, false) => return Recorded::Counted(None),
                };
                Some(if may_open() {
                    self.open(now, reason)
                } else {
                    Transition {
                        from: State::Closed,
                        to: State::Closed,
                        at: now,
                        reason: Reason::EjectionCapped,
                        generation: self.generation,
                    }
                })
            }
            Phase::HalfOpen {
                in_flight,
                successes,
            } => {
                if permit.probe {
                    *in_flight = in_flight.saturating_sub(1);
                }
                match verdict {
                    Verdict::Abandoned => None,
                    Verdict::Failure => Some(self.open(now, Reason::ProbeFailed)),
                    Verdict::Success => {
                        *successes += 1;
                        if *successes >= self.config.success_threshold {
                            self.openings = 0;
                            Some(self.enter(
                                Phase::Closed { failures: 0 },
                                now,
                                Reason::ProbesSucceeded,
                            ))
                        } else {
                            None
                        }
                    }
                }
            }
        };
        Recorded::Counted(transition)
    }

    /// Opens by hand until [`reset`](Self::reset) or [`disable`](Self::disable).
    /// Returns the transition, or `None` if already ForcedOpen.
    #[must_use = "a transition to log or export"]
    pub fn force_open(&mut self, now: Duration) -> Option<Transition> {
        let now = self.observe(now);
        (self.phase != Phase::ForcedOpen)
            .then(|| self.enter(Phase::ForcedOpen, now, Reason::Forced))
    }

    /// Switches the breaker off: it admits everything and counts nothing until
    /// [`reset`](Self::reset) or [`force_open`](Self::force_open). Returns the
    /// transition, or `None` if already Disabled.
    #[must_use = "a transition to log or export"]
    pub fn disable(&mut self, now: Duration) -> Option<Transition> {
        let now = self.observe(now);
        (self.phase != Phase::Disabled).then(|| self.enter(Phase::Disabled, now, Reason::Disabled))
    }

    /// Back to Closed with every count, the rate window and the backoff cleared.
    /// Returns the transition, or `None` if it was Closed already (the counts are
    /// cleared all the same, and the generation stays).
    #[must_use = "a transition to log or export"]
    pub fn reset(&mut self, now: Duration) -> Option<Transition> {
        let now = self.observe(now);
        self.openings = 0;
        if let Phase::Closed { failures } = &mut self.phase {
            *failures = 0;
            if let Some(window) = &mut self.window {
                window.clear();
            }
            return None;
        }
        Some(self.enter(Phase::Closed { failures: 0 }, now, Reason::Reset))
    }

    /// Takes `now` into account and returns the time to use: never before the latest.
    #[inline]
    fn observe(&mut self, now: Duration) -> Duration {
        self.latest = self.latest.max(now);
        self.latest
    }

    /// Opens for the (backed-off, jittered) open duration.
    #[cold]
    fn open(&mut self, now: Duration, reason: Reason) -> Transition {
        self.openings = self.openings.saturating_add(1);
        let duration = self.open_duration(self.openings, self.generation.wrapping_add(1));
        let until = now.checked_add(duration).unwrap_or(Duration::MAX);
        self.enter(Phase::Open { until }, now, reason)
    }

    /// The open duration of the `opening`-th consecutive opening, entering
    /// `generation`.
    fn open_duration(&self, opening: u32, generation: u32) -> Duration {
        let base = self.config.open_duration;
        let mut duration = match self.config.backoff {
            // A zero base stays zero: no loop over every past opening.
            Some(backoff) if backoff.factor > 1 && !base.is_zero() => {
                let mut d = base;
                for _ in 1..opening {
                    d = d.checked_mul(backoff.factor).unwrap_or(backoff.cap);
                    if d >= backoff.cap {
                        d = backoff.cap;
                        break;
                    }
                }
                d
            }
            _ => base,
        };
        if let Some(jitter) = self.config.jitter {
            let draw =
                splitmix64(jitter.seed ^ u64::from(generation).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            // At most u64::MAX ns (584 years), so the product fits in a u128.
            let max = u64::try_from(jitter.max.as_nanos()).unwrap_or(u64::MAX);
            let extra = (u128::from(max) * u128::from(draw)) >> 64;
            let extra = Duration::from_nanos(u64::try_from(extra).unwrap_or(u64::MAX));
            duration = duration.checked_add(extra).unwrap_or(Duration::MAX);
        }
        duration
    }

    /// Moves to `phase`, starting a new generation.
    fn enter(&mut self, phase: Phase, now: Duration, reason: Reason) -> Transition {
        let from = Self::state_of(self.phase);
        self.phase = phase;
        self.generation = self.generation.wrapping_add(1);
        if let Some(window) = &mut self.window {
            window.clear();
        }
        Transition {
            from,
            to: Self::state_of(phase),
            at: now,
            reason,
            generation: self.generation,
        }
    }

    const fn state_of(phase: Phase) -> State {
        match phase {
            Phase::Closed { .. } => State::Closed,
            Phase::Open { until } => State::Open { until },
            Phase::HalfOpen { .. } => State::HalfOpen,
            Phase::ForcedOpen => State::ForcedOpen,
            Phase::Disabled => State::Disabled,
        }
    }

    /// The calls counted in the failure-rate window and how many of them failed, as
    /// of the latest `now` seen; `None` without a rate rule.
    pub fn window_counts(&self) -> Option<WindowCounts> {
        self.window.as_ref().map(|w| {
            let (calls, failures) = w.counts(self.latest);
            WindowCounts { calls, failures }
        })
    }

    // What the shared handle needs to mirror the Closed state in its atomic word.

    /// Whether a failure-rate rule is configured (then the shared handle counts
    /// Closed successes in its word and the rest in the core).
    #[cfg(feature = "std")]
    pub(crate) const fn has_rate_window(&self) -> bool {
        self.window.is_some()
    }

    /// In Closed, counts `count` successes at `now` (never before the latest), all at
    /// once: the shared handle's pending successes, which it counts without reading
    /// the clock and hands over at its next reading. The caller has made sure that no
    /// run of successes can open the breaker, then or later.
    #[cfg(feature = "std")]
    pub(crate) fn fold_successes(&mut self, count: u64, now: Duration) {
        if count == 0 {
            return;
        }
        let now = self.observe(now);
        if let Phase::Closed { failures } = &mut self.phase {
            *failures = 0;
            if let Some(window) = &mut self.window {
                let fired = window.push_successes(count, now);
                debug_assert!(!fired, "a folded success opened the breaker");
            }
        }
    }

    /// With a rate rule, in Closed: which successes the shared handle may count
    /// without the lock (both `false` otherwise).
    #[cfg(feature = "std")]
    pub(crate) fn success_shortcuts(&self) -> SuccessShortcuts {
        match (&self.window, self.phase) {
            (Some(w), Phase::Closed { failures }) => SuccessShortcuts {
                changes_nothing: failures == 0 && w.successes_change_nothing(),
                cannot_open: w.successes_cannot_fire(self.latest),
            },
            _ => SuccessShortcuts::default(),
        }
    }

    /// In Closed, sets the consecutive-failure count (the shared word's copy).
    #[cfg(feature = "std")]
    pub(crate) fn set_consecutive_failures(&mut self, count: u32) {
        if let Phase::Closed { failures } = &mut self.phase {
            *failures = count;
        }
    }

    /// The latest `now` seen.
    #[cfg(feature = "std")]
    pub(crate) const fn latest(&self) -> Duration {
        self.latest
    }
}

/// What the shared handle may do with a success without the lock, under a rate rule
/// in Closed ([`CircuitBreaker::success_shortcuts`]).
#[cfg(feature = "std")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct SuccessShortcuts {
    /// One more success changes nothing (no failure to reset, a full count window
    /// with no failure in it): the handle need not even write.
    pub(crate) changes_nothing: bool,
    /// No run of successes, counted now or later, can open the breaker: the handle
    /// may count them in its word and hand them over later.
    pub(crate) cannot_open: bool,
}

/// What a failure-rate window holds ([`CircuitBreaker::window_counts`]).
///
/// ```
/// use core::time::Duration;
/// use sluice::Verdict;
/// use sluice::breaker::{CircuitBreaker, Config, Window, WindowCounts};
///
/// let config = Config::default().failure_rate(0.5, Window::Calls(10), 4);
/// let mut breaker = CircuitBreaker::new(config);
/// let permit = breaker.try_acquire(Duration::ZERO).expect("closed");
/// let _ = breaker.record(permit, Verdict::Failure, Duration::ZERO);
/// assert_eq!(breaker.window_counts(), Some(WindowCounts { calls: 1, failures: 1 }));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct WindowCounts {
    /// Calls counted (successes and failures; abandoned calls are not calls).
    pub calls: u64,
    /// How many of them failed.
    pub failures: u64,
}

/// Whether an Open breaker's `until` has come at `now`. An `until` that saturated at
/// `Duration::MAX` (a clock near its end, or a huge backoff) never comes.
fn elapsed(until: Duration, now: Duration) -> bool {
    now >= until && until != Duration::MAX
}
