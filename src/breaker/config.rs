//! The breaker's configuration and its validation.

use core::fmt;
use core::time::Duration;

/// The largest count window ([`Window::Calls`]): the window lives inline, in
/// `MAX_WINDOW_CALLS` bits, so the breaker needs no allocator.
pub const MAX_WINDOW_CALLS: u32 = 1024;

/// How many buckets a [`Window::Time`] is cut into: the window slides in steps of
/// a sixteenth of its span.
pub const TIME_WINDOW_BUCKETS: usize = 16;

/// The window a failure-rate rule looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Window {
    /// The last `n` calls counted in Closed (at most [`MAX_WINDOW_CALLS`]).
    Calls(u32),
    /// The calls counted in Closed during the last `span`, kept in
    /// [`TIME_WINDOW_BUCKETS`] buckets (so the oldest bucket may be partly older).
    Time(Duration),
}

/// The optional failure-rate rule: open when, over the window, at least
/// `minimum_calls` calls were counted and the failed share reaches the rate.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct RateRule {
    pub(crate) window: Window,
    pub(crate) minimum_calls: u32,
    /// The rate as given, as `f64` bits (so the config stays `Eq`).
    rate_bits: u64,
}

impl RateRule {
    pub(crate) fn rate(&self) -> f64 {
        f64::from_bits(self.rate_bits)
    }

    /// The rate in parts per million, for integer comparison. Only for a valid rate.
    pub(crate) fn rate_ppm(&self) -> u64 {
        // `as` saturates; a valid rate is in (0, 1], so this is in 1..=1_000_000.
        let ppm = (self.rate() * 1_000_000.0) as u64;
        ppm.clamp(1, 1_000_000)
    }
}

impl fmt::Debug for RateRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateRule")
            .field("window", &self.window)
            .field("minimum_calls", &self.minimum_calls)
            .field("failure_rate", &self.rate())
            .finish()
    }
}

/// The optional exponential backoff of the open duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Backoff {
    pub(crate) factor: u32,
    pub(crate) cap: Duration,
}

/// The optional jitter added to every open duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Jitter {
    pub(crate) max: Duration,
    pub(crate) seed: u64,
}

/// What a breaker is told to do: thresholds, the open duration and its backoff, and the
/// optional failure-rate rule.
///
/// Build it from [`Config::default()`] with the consuming builder methods; they store
/// what they are given, and [`validate`](Config::validate) (or
/// [`CircuitBreaker::try_new`](super::CircuitBreaker::try_new)) says what is wrong
/// with it.
///
/// ```
/// use core::time::Duration;
/// use sluice::breaker::{Config, ConfigError, Window};
///
/// let config = Config::default()
///     .failure_threshold(3)
///     .success_threshold(2)
///     .open_duration(Duration::from_secs(10))
///     .half_open_max_probes(1)
///     .failure_rate(0.5, Window::Calls(20), 10)
///     .backoff(2, Duration::from_secs(300))
///     .jitter(Duration::from_secs(1), 0x5eed);
/// assert_eq!(config.validate(), Ok(()));
/// assert_eq!(Config::default().failure_threshold(0).validate(), Err(ConfigError::ZeroFailureThreshold));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Config {
    pub(crate) failure_threshold: u32,
    pub(crate) success_threshold: u32,
    pub(crate) open_duration: Duration,
    pub(crate) half_open_max_probes: u32,
    pub(crate) rate: Option<RateRule>,
    pub(crate) backoff: Option<Backoff>,
    pub(crate) jitter: Option<Jitter>,
}

impl Default for Config {
    /// Five consecutive failures open the breaker for 30 s; one probe at a time in
    /// HalfOpen; two successes in a row close it. No rate rule, no backoff, no jitter.
    fn default() -> Self {
        Self::new()
    }
}

/// Why a [`Config`] is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `failure_threshold` is zero: the breaker would open before any failure.
    #[error("failure_threshold must be at least 1")]
    ZeroFailureThreshold,
    /// `success_threshold` is zero: a HalfOpen breaker would close with no probe.
    #[error("success_threshold must be at least 1")]
    ZeroSuccessThreshold,
    /// `half_open_max_probes` is zero: a HalfOpen breaker could never close.
    #[error("half_open_max_probes must be at least 1")]
    ZeroHalfOpenProbes,
    /// The failure rate is not a number in `(0, 1]`.
    #[error("failure rate must be a number greater than 0 and at most 1")]
    FailureRate,
    /// The rate window is empty (`Calls(0)` or a zero span).
    #[error("the failure-rate window must not be empty")]
    EmptyWindow,
    /// The count window is longer than [`MAX_WINDOW_CALLS`].
    #[error("a count window holds at most {max} calls, not {calls}")]
    WindowTooLong {
        /// The requested length.
        calls: u32,
        /// [`MAX_WINDOW_CALLS`].
        max: u32,
    },
    /// `minimum_calls` is zero.
    #[error("minimum_calls must be at least 1")]
    ZeroMinimumCalls,
    /// `minimum_calls` is above the count window's length: the rule could never fire.
    #[error("minimum_calls ({minimum_calls}) exceeds the window of {window} calls")]
    MinimumCallsAboveWindow {
        /// The requested minimum.
        minimum_calls: u32,
        /// The window's length.
        window: u32,
    },
    /// The backoff factor is zero.
    #[error("the backoff factor must be at least 1")]
    ZeroBackoffFactor,
    /// The backoff cap is below the open duration.
    #[error("the backoff cap must not be below the open duration")]
    BackoffCapBelowOpenDuration,
}

impl Config {
    /// The default configuration (see [`Default`]), usable in `const` context.
    pub const fn new() -> Self {
        Self {
            failure_threshold: 5,
            success_threshold: 2,
            open_duration: Duration::from_secs(30),
            half_open_max_probes: 1,
            rate: None,
            backoff: None,
            jitter: None,
        }
    }

    /// Consecutive failures in Closed that open the breaker (default 5; at least 1).
    #[must_use]
    pub const fn failure_threshold(mut self, failures: u32) -> Self {
        self.failure_threshold = failures;
        self
    }

    /// Successes in a row in HalfOpen that close the breaker (default 2; at least 1).
    #[must_use]
    pub const fn success_threshold(mut self, successes: u32) -> Self {
        self.success_threshold = successes;
        self
    }

    /// How long the breaker stays Open before it lets probes through (default 30 s).
    /// With [`backoff`](Self::backoff) this is the first opening's duration.
    #[must_use]
    pub const fn open_duration(mut self, duration: Duration) -> Self {
        self.open_duration = duration;
        self
    }

    /// Permits in flight at once in HalfOpen (default 1; at least 1).
    #[must_use]
    pub const fn half_open_max_probes(mut self, probes: u32) -> Self {
        self.half_open_max_probes = probes;
        self
    }

    /// Adds the failure-rate rule: in Closed, the breaker also opens when the
    /// `window` holds at least `minimum_calls` counted calls (successes and failures;
    /// abandoned calls are not counted) and the failed share is at least `rate`
    /// (in `(0, 1]`). The rule is checked after every counted call. The window is
    /// emptied at every transition.
    #[must_use]
    pub const fn failure_rate(mut self, rate: f64, window: Window, minimum_calls: u32) -> Self {
        self.rate = Some(RateRule {
            window,
            minimum_calls,
            rate_bits: rate.to_bits(),
        });
        self
    }

    /// Multiplies the open duration by `factor` for every consecutive opening (an
    /// opening from HalfOpen without a close in between), up to `cap`. A close resets
    /// it to [`open_duration`](Self::open_duration).
    #[must_use]
    pub const fn backoff(mut self, factor: u32, cap: Duration) -> Self {
        self.backoff = Some(Backoff { factor, cap });
        self
    }

    /// Adds up to `max` to every open duration (after the backoff cap), a different
    /// amount for every opening, drawn deterministically from `seed` and the
    /// breaker's generation (a splitmix64 step). Breakers with different seeds spread
    /// their probes apart; the same seed and history give the same durations.
    #[must_use]
    pub const fn jitter(mut self, max: Duration, seed: u64) -> Self {
        self.jitter = Some(Jitter { max, seed });
        self
    }

    /// Says whether this configuration is usable, and if not, the first thing wrong.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.failure_threshold == 0 {
            return Err(ConfigError::ZeroFailureThreshold);
        }
        if self.success_threshold == 0 {
            return Err(ConfigError::ZeroSuccessThreshold);
        }
        if self.half_open_max_probes == 0 {
            return Err(ConfigError::ZeroHalfOpenProbes);
        }
        if let Some(rule) = &self.rate {
            let rate = rule.rate();
            if !(rate > 0.0 && rate <= 1.0) {
                return Err(ConfigError::FailureRate);
            }
            if rule.minimum_calls == 0 {
                return Err(ConfigError::ZeroMinimumCalls);
            }
            match rule.window {
                Window::Calls(0) => return Err(ConfigError::EmptyWindow),
                Window::Time(span) if span.is_zero() => return Err(ConfigError::EmptyWindow),
                Window::Calls(calls) if calls > MAX_WINDOW_CALLS => {
                    return Err(ConfigError::WindowTooLong {
                        calls,
                        max: MAX_WINDOW_CALLS,
                    });
                }
                Window::Calls(window) if rule.minimum_calls > window => {
                    return Err(ConfigError::MinimumCallsAboveWindow {
                        minimum_calls: rule.minimum_calls,
                        window,
                    });
                }
                _ => {}
            }
        }
        if let Some(backoff) = &self.backoff {
            if backoff.factor == 0 {
                return Err(ConfigError::ZeroBackoffFactor);
            }
            if backoff.cap < self.open_duration {
                return Err(ConfigError::BackoffCapBelowOpenDuration);
            }
        }
        Ok(())
    }

    /// The nearest usable configuration: zero thresholds become 1, an invalid rate rule
    /// is dropped, a zero backoff factor becomes 1 and a low cap the open duration.
    /// What [`CircuitBreaker::new`](super::CircuitBreaker::new) runs on.
    pub(crate) fn sanitized(mut self) -> Self {
        self.failure_threshold = self.failure_threshold.max(1);
        self.success_threshold = self.success_threshold.max(1);
        self.half_open_max_probes = self.half_open_max_probes.max(1);
        if let Some(rule) = self.rate {
            let probe = Self {
                rate: Some(rule),
                backoff: None,
                ..Self::new()
            };
            if probe.validate().is_err() {
                self.rate = None;
            }
        }
        if let Some(backoff) = &mut self.backoff {
            backoff.factor = backoff.factor.max(1);
            backoff.cap = backoff.cap.max(self.open_duration);
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_invalid_field_has_its_error() {
        let base = Config::default();
        assert_eq!(base.validate(), Ok(()));
        let cases = [
            (base.failure_threshold(0), ConfigError::ZeroFailureThreshold),
            (base.success_threshold(0), ConfigError::ZeroSuccessThreshold),
            (
                base.half_open_max_probes(0),
                ConfigError::ZeroHalfOpenProbes,
            ),
            (
                base.failure_rate(0.0, Window::Calls(10), 5),
                ConfigError::FailureRate,
            ),
            (
                base.failure_rate(1.5, Window::Calls(10), 5),
                ConfigError::FailureRate,
            ),
            (
                base.failure_rate(f64::NAN, Window::Calls(10), 5),
                ConfigError::FailureRate,
            ),
            (
                base.failure_rate(0.5, Window::Calls(0), 1),
                ConfigError::EmptyWindow,
            ),
            (
                base.failure_rate(0.5, Window::Time(Duration::ZERO), 1),
                ConfigError::EmptyWindow,
            ),
            (
                base.failure_rate(0.5, Window::Calls(10), 0),
                ConfigError::ZeroMinimumCalls,
            ),
            (
                base.failure_rate(0.5, Window::Calls(2000), 5),
                ConfigError::WindowTooLong {
                    calls: 2000,
                    max: MAX_WINDOW_CALLS,
                },
            ),
            (
                base.failure_rate(0.5, Window::Calls(10), 11),
                ConfigError::MinimumCallsAboveWindow {
                    minimum_calls: 11,
                    window: 10,
                },
            ),
            (
                base.backoff(0, Duration::from_secs(60)),
                ConfigError::ZeroBackoffFactor,
            ),
            (
                base.backoff(2, Duration::from_secs(1)),
                ConfigError::BackoffCapBelowOpenDuration,
            ),
        ];
        for (config, error) in cases {
            assert_eq!(config.validate(), Err(error), "{config:?}");
            assert_eq!(config.sanitized().validate(), Ok(()), "{config:?}");
        }
        assert_eq!(
            base.failure_rate(1.0, Window::Time(Duration::from_secs(10)), 100)
                .validate(),
            Ok(())
        );
    }
}
