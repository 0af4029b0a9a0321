//! What a layer gives each body it tracks to send after a failure.

use sluice::failure::{NoFailureEvent, WithFailureEvent};

mod sealed {
    /// Keeps [`LayerFailureEvent`](super::LayerFailureEvent) to
    /// [`NoFailureEvent`](sluice::failure::NoFailureEvent) and
    /// [`FailureEvents`](super::FailureEvents).
    #[allow(unreachable_pub)] // public in name, so that `LayerFailureEvent` may require it
    pub trait Sealed {}

    impl Sealed for sluice::failure::NoFailureEvent {}
    impl Sealed for super::FailureEvents {}
}

/// What a layer gives each body it tracks to send after a failure:
/// [`NoFailureEvent`] (the default: nothing) or [`FailureEvents`] (set by the layers'
/// `with_failure_event`: the route's failure event). Sealed.
pub trait LayerFailureEvent: sealed::Sealed + Clone {
    /// What one body sends after a failure, its error type being `E`: the fourth
    /// type parameter of its [`TrackedBody`](crate::TrackedBody).
    type Tail<E>;

    /// A new tail, for one body.
    fn tail<E>(&self) -> Self::Tail<E>;
}

impl LayerFailureEvent for NoFailureEvent {
    type Tail<E> = NoFailureEvent;

    #[inline(always)]
    fn tail<E>(&self) -> NoFailureEvent {
        NoFailureEvent
    }
}

/// Every body a layer tracks sends its SSE dialect's failure event when it fails
/// after the response head (see
/// [`TrackedBody::with_failure_event`](crate::TrackedBody::with_failure_event) and
/// [`BreakerLayer::with_failure_event`](crate::BreakerLayer::with_failure_event)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FailureEvents;

impl LayerFailureEvent for FailureEvents {
    type Tail<E> = WithFailureEvent<E>;

    fn tail<E>(&self) -> WithFailureEvent<E> {
        WithFailureEvent::new()
    }
}
