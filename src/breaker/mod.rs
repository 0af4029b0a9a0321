//! Circuit breaking: a sans-io breaker, a shared handle and a per-worker set.
//!
//! * [`CircuitBreaker`] is the machine: `no_std`, no clock, no random source. Time
//!   is an input (`now`, a [`Duration`](core::time::Duration) since an origin the
//!   caller picks), and every state change comes back as a [`Transition`] value.
//! * [`SharedBreaker`] (feature `std`) is the same machine behind a `Clone + Send +
//!   Sync` handle, reading time from a [`Clock`]; its Closed-state hot path takes no
//!   lock. Its [`SharedPermit`] is a [`Recorder`](crate::Recorder), so a
//!   [`TrackedStream`](crate::TrackedStream) reports straight to it.
//! * [`SharedBreakerSet`] (feature `std`) keeps one shared breaker per worker, picks
//!   workers ([`Pick`]) and caps how many are ejected at once. (A sans-io pool can be
//!   built on [`CircuitBreaker::record_capped`].)
//! * [`StatusPolicy`] says what the start of a response (its status, or a failed send)
//!   means for the breaker.
//!
//! # Configuration: one policy
//!
//! Every constructor comes in two forms. `new` / `with_clock` never fail and never
//! panic: an invalid [`Config`] is corrected to the nearest valid one (a zero
//! threshold counts as 1, an invalid rate rule is left out, a zero backoff factor is
//! 1, a backoff cap below the open duration is raised to it; see
//! [`CircuitBreaker::new`]). `try_new` / `try_with_clock` refuse it with the
//! [`ConfigError`] that [`Config::validate`] gives. A set's other inputs need no
//! error: zero workers make a set that admits nothing, and a `max_ejected_percent`
//! above 100 counts as 100.
//!
//! # What the shared handle guarantees
//!
//! Every concurrent history of a [`SharedBreaker`] (or of one worker of a
//! [`SharedBreakerSet`]) equals a sequential history of the sans-io [`CircuitBreaker`]
//! (model-checked with loom over every interleaving of small concurrent histories),
//! in which:
//!
//! * an operation on the lock-free path takes effect at its atomic load or
//!   compare-and-swap, with `now` equal to the breaker's latest time;
//! * an operation that takes the lock takes effect inside it, at its own clock
//!   reading (or the latest time, if that is later or it reads none);
//! * except that a success counted lock-free under a rate rule takes effect just
//!   before the next operation that takes the lock, at that operation's time: it is
//!   counted then, never before it happened, and until then no operation depends on
//!   it.
//!
//! So no count is lost and no transition is made twice or skipped. Two things can
//! differ from a history where every call passes its own reading: the breaker's
//! latest time (the `at` of a later transition may be a little earlier); and, for a
//! time window, the bucket of a success made while no call took the lock for more
//! than a bucket's width (no failure, no transition): it lands in a later bucket, so
//! it stays in the window longer. The window then holds the same failures and at
//! least the calls it would hold with every success at its own time, so the failure
//! rate it sees is never higher than with every success counted at its own time,
//! though such a success may help reach the rule's `minimum_calls` earlier.
//!
//! In Closed the lock-free path is: acquiring; recording an abandoned call; without a
//! rate rule, recording a success or a failure below the threshold; with a rate rule,
//! recording a success while no run of successes can fire the rule. None of them
//! reads the clock, also with a time window. A success that changes nothing (a full
//! count window with no failure in it) is a load, with no write at all; any other
//! success under a rate rule is one compare-and-swap. Failures under a rate rule take
//! the lock.
//!
//! A permit dropped unrecorded (also while the thread unwinds) runs no user code: an
//! abandoned call needs no clock reading. A verdict recorded while the thread
//! unwinds (a [`TrackedStream`](crate::TrackedStream) whose inner stream panicked)
//! does not read the clock either; it is counted at the breaker's latest time.

mod config;
mod machine;
mod policy;
mod window;

#[cfg(feature = "std")]
mod cap;
#[cfg(feature = "std")]
mod cell;
#[cfg(feature = "std")]
mod clock;
#[cfg(feature = "std")]
mod lease;
#[cfg(feature = "std")]
mod set;
#[cfg(feature = "std")]
mod shared;
#[cfg(feature = "std")]
pub(crate) mod sync;
#[cfg(feature = "std")]
mod word;

#[cfg(feature = "std")]
pub use self::clock::{Clock, ManualClock, StdClock};
pub use self::config::{Config, ConfigError, MAX_WINDOW_CALLS, TIME_WINDOW_BUCKETS, Window};
pub use self::machine::{
    CircuitBreaker, Permit, Reason, Recorded, Rejected, State, Transition, WindowCounts,
};
pub use self::policy::{Classified, StatusPolicy};
#[cfg(feature = "std")]
pub use self::set::{DEFAULT_MAX_EJECTED_PERCENT, Pick, SetPermit, SharedBreakerSet};
#[cfg(feature = "std")]
pub use self::shared::{OwnedSharedPermit, SharedBreaker, SharedPermit};
