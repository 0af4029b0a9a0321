//! What the layers have in common: a permit that records a verdict and may name its
//! worker.

use http::Extensions;
use sluice::Verdict;
use sluice::breaker::{OwnedSharedPermit, Recorded, SetPermit};

use crate::PickedWorker;

mod sealed {
    /// Keeps [`LayerPermit`](super::LayerPermit) to the permits of this crate's layers.
    #[allow(unreachable_pub)] // public in name, so that `LayerPermit` may require it
    pub trait Sealed {}

    impl Sealed for sluice::breaker::OwnedSharedPermit {}
    impl Sealed for sluice::breaker::SetPermit {}
}

/// The permit one call of a layer holds: an [`OwnedSharedPermit`] (a
/// [`BreakerLayer`](crate::BreakerLayer)'s, from its one breaker) or a [`SetPermit`]
/// (a [`PoolLayer`](crate::PoolLayer)'s, from the worker it picked). Sealed: the
/// layers make their permits, and this trait is how their shared code reports them.
pub trait LayerPermit: sealed::Sealed + Send + 'static {
    /// What an observer is told besides the outcome: `()` for a single breaker, the
    /// [`PickedWorker`] for a pool.
    type Label: Copy + Send + Sync + 'static;

    /// Which worker this permit admits a call to.
    fn label(&self) -> Self::Label;

    /// Puts what routes the call (the [`PickedWorker`], for a pool) in a request's
    /// or a response's extensions. Nothing for a single breaker.
    fn tag(&self, extensions: &mut Extensions);

    /// Records `verdict` into the permit's breaker, and says what the breaker did.
    fn report(self, verdict: Verdict) -> Recorded;
}

impl LayerPermit for OwnedSharedPermit {
    type Label = ();

    fn label(&self) {}

    fn tag(&self, _: &mut Extensions) {}

    #[inline]
    fn report(self, verdict: Verdict) -> Recorded {
        OwnedSharedPermit::report(self, verdict)
    }
}

impl LayerPermit for SetPermit {
    type Label = PickedWorker;

    fn label(&self) -> PickedWorker {
        PickedWorker {
            index: self.worker(),
        }
    }

    fn tag(&self, extensions: &mut Extensions) {
        extensions.insert(self.label());
    }

    #[inline]
    fn report(self, verdict: Verdict) -> Recorded {
        SetPermit::report(self, verdict)
    }
}
