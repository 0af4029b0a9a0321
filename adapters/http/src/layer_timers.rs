//! The timers a layer puts on each body it tracks.

use sluice::timers::{NoTimers, ProgressTimers, ProgressWatch, Timeouts, Timer};

mod sealed {
    /// Keeps [`LayerTimers`](super::LayerTimers) to [`NoTimers`](sluice::timers::NoTimers)
    /// and [`BodyTimers`](super::BodyTimers).
    #[allow(unreachable_pub)] // public in name, so that `LayerTimers` may require it
    pub trait Sealed {}

    impl Sealed for sluice::timers::NoTimers {}
    impl<T> Sealed for super::BodyTimers<T> {}
}

/// What a layer gives each body it tracks to time it: [`NoTimers`] (the default:
/// nothing) or [`BodyTimers`] (set by the layers' `with_timers`). Sealed.
pub trait LayerTimers: sealed::Sealed + Clone {
    /// What times one body: the third type parameter of its
    /// [`TrackedBody`](crate::TrackedBody).
    type Watch: ProgressTimers;

    /// The error type of a body this times whose inner body's error is `E`: `E`
    /// without timers, [`BodyError<E>`](crate::BodyError) with them.
    type Error<E>;

    /// A new watch, for one body.
    fn watch(&self) -> Self::Watch;
}

impl LayerTimers for NoTimers {
    type Watch = NoTimers;
    type Error<E> = E;

    #[inline(always)]
    fn watch(&self) -> NoTimers {
        NoTimers
    }
}

/// A [`Timer`] and the [`Timeouts`] to run on it, for each body a layer tracks (see
/// [`BreakerLayer::with_timers`](crate::BreakerLayer::with_timers)): each body gets its
/// own [`ProgressWatch`] over a clone of the timer.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct BodyTimers<T> {
    timer: T,
    timeouts: Timeouts,
}

impl<T> BodyTimers<T> {
    /// `timeouts` on `timer`.
    pub const fn new(timer: T, timeouts: Timeouts) -> Self {
        Self { timer, timeouts }
    }

    /// The timer.
    pub const fn timer(&self) -> &T {
        &self.timer
    }

    /// The timeouts.
    pub const fn timeouts(&self) -> Timeouts {
        self.timeouts
    }
}

impl<T> core::fmt::Debug for BodyTimers<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("BodyTimers")
            .field("timeouts", &self.timeouts)
            .finish_non_exhaustive()
    }
}

impl<T: Timer + Clone> LayerTimers for BodyTimers<T> {
    type Watch = ProgressWatch<T>;
    type Error<E> = crate::BodyError<E>;

    fn watch(&self) -> ProgressWatch<T> {
        ProgressWatch::new(self.timer.clone(), self.timeouts)
    }
}
