//! The error of the layers' services.

use core::time::Duration;

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
