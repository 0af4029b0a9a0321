//! Circuit breaking: a sans-io breaker, a shared handle and a per-worker set.
//!
//! * [`CircuitBreaker`] is the machine of SPEC section 3: `no_std`, no clock, no
//!   random source. Time is an input (`now`, a [`Duration`](core::time::Duration)
//!   since an origin the caller picks), and every state change comes back as a
//!   [`Transition`] value.
//! * [`SharedBreaker`] (feature `std`) is the same machine behind a `Clone + Send +
//!   Sync` handle, reading time from a [`Clock`]; its Closed-state hot path takes no
//!   lock. Its [`SharedPermit`] is a [`Recorder`](crate::Recorder), so a
//!   [`TrackedStream`](crate::TrackedStream) reports straight to it.
//! * [`BreakerSet`] (feature `alloc`) keeps one breaker per worker and caps how many
//!   are ejected at once.
//! * [`StatusPolicy`] says what the start of a response (its status, or a failed send)
//!   means for the breaker.

mod config;
mod machine;
mod policy;
mod window;

#[cfg(feature = "alloc")]
mod set;
#[cfg(feature = "std")]
mod shared;
#[cfg(feature = "std")]
mod sync;

pub use self::config::{Config, ConfigError, MAX_WINDOW_CALLS, TIME_WINDOW_BUCKETS, Window};
pub use self::machine::{CircuitBreaker, Permit, Reason, Recorded, Rejected, State, Transition};
pub use self::policy::{Classified, StatusPolicy};
#[cfg(feature = "alloc")]
pub use self::set::{BreakerSet, SetError, WorkerPermit};
#[cfg(feature = "std")]
pub use self::shared::{
    Clock, ManualClock, OwnedSharedPermit, SharedBreaker, SharedPermit, StdClock,
};
