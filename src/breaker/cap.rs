//! A set's ejection cap, as each of its breakers sees it.

use super::sync::{AtomicUsize, Ordering};
use super::{CircuitBreaker, State};

/// A set's ejection cap, as one breaker of it sees it.
pub(super) struct Cap<'a> {
    /// Workers ejected now (Open or HalfOpen), plus trips reserved and not yet
    /// published.
    pub(super) ejected: &'a AtomicUsize,
    /// The most that may be ejected at once (read only when a trip asks).
    pub(super) max: &'a AtomicUsize,
}

impl Cap<'_> {
    /// Takes one ejection slot if there is one.
    pub(super) fn try_reserve(&self) -> bool {
        let max = self.max.load(Ordering::Relaxed);
        self.ejected
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |e| {
                (e < max).then_some(e + 1)
            })
            .is_ok()
    }

    /// Gives a slot back (its breaker stopped being ejected).
    pub(super) fn release(&self) {
        self.ejected.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Whether a breaker counts as ejected: Open or HalfOpen (a HalfOpen worker only takes
/// probes, and a failed probe opens it again without asking the cap).
pub(super) fn is_ejected(core: &CircuitBreaker) -> bool {
    matches!(
        core.state(core.latest()),
        State::Open { .. } | State::HalfOpen
    )
}
