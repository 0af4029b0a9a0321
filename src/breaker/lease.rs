//! What every permit of a shared breaker or set is: a [`Lease`] on one breaker, which
//! records its verdict once, by [`report`](Lease::report) or, unrecorded, as
//! Abandoned when dropped. The public permits wrap one and add only their docs (and
//! a set's permit, its worker).

use core::fmt;

use super::sync::Arc;
use super::{Permit, Recorded, Transition};
use crate::Verdict;

/// What a lease records through: one breaker, borrowed or counted. Crate-private, so
/// sealed: implemented by the breaker's shared state and a set's worker, and through
/// `&` and `Arc` of them.
pub(super) trait Handle {
    /// Records `verdict` for a permit of `generation` (`probe`: it holds a probe
    /// slot). Never panics; reads the clock only for a verdict other than Abandoned.
    fn record(&self, generation: u32, probe: bool, verdict: Verdict) -> Recorded;
}

impl<T: Handle + ?Sized> Handle for &T {
    #[inline]
    fn record(&self, generation: u32, probe: bool, verdict: Verdict) -> Recorded {
        (**self).record(generation, probe, verdict)
    }
}

impl<T: Handle + ?Sized> Handle for Arc<T> {
    #[inline]
    fn record(&self, generation: u32, probe: bool, verdict: Verdict) -> Recorded {
        (**self).record(generation, probe, verdict)
    }
}

/// Leave for one call through `H`, recorded at most once: the handle is taken when
/// it records (the `Option` and `take` of tokio-util's `DropGuard`).
pub(super) struct Lease<H: Handle> {
    /// `None` once recorded.
    handle: Option<H>,
    generation: u32,
    probe: bool,
    transition: Option<Transition>,
}

impl<H: Handle> Lease<H> {
    /// The lease for `permit`, acquired through `handle`.
    #[inline]
    pub(super) fn new(handle: H, permit: Permit) -> Self {
        Self {
            handle: Some(handle),
            generation: permit.generation(),
            probe: permit.is_probe(),
            transition: permit.transition(),
        }
    }

    /// The breaker generation it was issued in.
    #[inline]
    pub(super) const fn generation(&self) -> u32 {
        self.generation
    }

    /// Whether it holds a HalfOpen probe slot.
    #[inline]
    pub(super) const fn is_probe(&self) -> bool {
        self.probe
    }

    /// The transition acquiring it made (Open to HalfOpen), if any.
    #[inline]
    pub(super) const fn transition(&self) -> Option<Transition> {
        self.transition
    }

    /// Records `verdict` and says what the breaker did with it.
    #[inline]
    pub(super) fn report(mut self, verdict: Verdict) -> Recorded {
        match self.handle.take() {
            Some(handle) => handle.record(self.generation, self.probe, verdict),
            None => Recorded::Stale,
        }
    }

    /// Adds its fields to a permit's `Debug`.
    pub(super) fn debug_fields(&self, d: &mut fmt::DebugStruct<'_, '_>) {
        d.field("generation", &self.generation)
            .field("probe", &self.probe);
    }
}

impl<H: Handle> Drop for Lease<H> {
    /// Records [`Verdict::Abandoned`] if the lease was not recorded, which frees its
    /// probe slot (and a set's slot in flight). Never panics (a poisoned lock is taken
    /// as it is) and runs no user code: an abandoned call does not need the clock.
    #[inline]
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            let _ = handle.record(self.generation, self.probe, Verdict::Abandoned);
        }
    }
}
