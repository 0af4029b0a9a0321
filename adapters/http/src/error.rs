//! The error of the layers' services.

use core::time::Duration;

use sluice::Cause;

/// The error of a [`BreakerService`](crate::BreakerService) and of a
/// [`PoolService`](crate::PoolService).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BreakerError<E> {
    /// The breaker is open (for a pool: no worker admits a call): the inner service
    /// was not called.
    #[error("circuit breaker open")]
    Rejected {
        /// When the breaker may admit again, if it knows (for a pool: the soonest
        /// any worker may).
        retry_after: Option<Duration>,
    },
    /// The inner service failed (recorded as a failed send).
    #[error("the inner service failed")]
    Inner(#[source] E),
}

impl<E> BreakerError<E> {
    /// When the breaker may admit again: `Some` only for a rejection that knows.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Rejected { retry_after } => *retry_after,
            Self::Inner(_) => None,
        }
    }

    /// Whether the breaker rejected the call.
    pub fn is_rejected(&self) -> bool {
        matches!(self, Self::Rejected { .. })
    }

    /// The inner service's error, if that is what this is.
    pub fn into_inner(self) -> Option<E> {
        match self {
            Self::Inner(e) => Some(e),
            Self::Rejected { .. } => None,
        }
    }
}

/// The error of a [`TrackedBody`](crate::TrackedBody) that runs the worker's timers
/// ([`with_timers`](crate::TrackedBody::with_timers)): the inner body's error, or a
/// timer that failed the body.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError<E> {
    /// The inner body's error frame, passed through (its message and source are the
    /// inner error's).
    #[error(transparent)]
    Inner(E),
    /// A worker's timer fired before the stream completed: the body was failed with
    /// `cause` ([`FirstTokenTimeout`](Cause::FirstTokenTimeout),
    /// [`IdleTimeout`](Cause::IdleTimeout) or [`Deadline`](Cause::Deadline)), which is
    /// also the recorded outcome's cause unless the stream had failed already.
    #[error("the worker timed out ({cause})")]
    TimedOut {
        /// The timer that fired.
        cause: Cause,
    },
}

impl<E> BodyError<E> {
    /// The cause of the timer that fired, for [`TimedOut`](Self::TimedOut).
    pub fn timeout(&self) -> Option<Cause> {
        match self {
            Self::TimedOut { cause } => Some(*cause),
            Self::Inner(_) => None,
        }
    }

    /// Whether a timer failed the body.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::TimedOut { .. })
    }

    /// The inner body's error, if that is what this is.
    pub fn into_inner(self) -> Option<E> {
        match self {
            Self::Inner(e) => Some(e),
            Self::TimedOut { .. } => None,
        }
    }
}
