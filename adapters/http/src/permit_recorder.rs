//! The recorder of a layer's call: its permit, and the layer's observer.

use std::sync::Arc;

use sluice::breaker::{OwnedSharedPermit, Recorded};
use sluice::{Outcome, Recorder};

use crate::LayerPermit;

/// What an observer is told: the worker (`()` for a single breaker), the outcome of
/// one call, and what the breaker did.
pub(crate) type Observer<L> = Arc<dyn Fn(L, Outcome, Recorded) + Send + Sync>;

/// The recorder of a layer's calls: the call's permit ([`OwnedSharedPermit`] for a
/// [`BreakerService`](crate::BreakerService), [`SetPermit`](sluice::breaker::SetPermit)
/// for a [`PoolService`](crate::PoolService)), and the layer's observer.
///
/// It is the recorder of the [`TrackedBody`](crate::TrackedBody) a layer hands back,
/// which records it exactly once. Dropped unrecorded (which the layers never do), its
/// permit records [`Abandoned`](sluice::Verdict::Abandoned) and the observer is not
/// told.
pub struct PermitRecorder<P: LayerPermit = OwnedSharedPermit> {
    permit: P,
    observer: Option<Observer<P::Label>>,
}

impl<P: LayerPermit> PermitRecorder<P> {
    pub(crate) fn new(permit: P, observer: Option<Observer<P::Label>>) -> Self {
        Self { permit, observer }
    }

    /// The permit it holds.
    pub fn permit(&self) -> &P {
        &self.permit
    }
}

impl<P: LayerPermit + core::fmt::Debug> core::fmt::Debug for PermitRecorder<P> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PermitRecorder")
            .field("permit", &self.permit)
            .field("observer", &self.observer.is_some())
            .finish()
    }
}

impl<P: LayerPermit> Recorder for PermitRecorder<P> {
    /// Records `outcome.verdict` into the breaker, then tells the observer.
    fn record(self, outcome: Outcome) {
        let label = self.permit.label();
        let recorded = self.permit.report(outcome.verdict);
        if let Some(observer) = self.observer {
            observer(label, outcome, recorded);
        }
    }
}
