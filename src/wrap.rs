//! For wrapper authors: the bookkeeping behind every tracked stream and body.
//!
//! A user tracks a stream with [`TrackedStream`](crate::TrackedStream) (or a body
//! with `sluice-http`'s `TrackedBody`) and never needs this module. It is for
//! someone who wraps another kind of value (a body of another HTTP crate, a gRPC
//! message stream, a channel): hold a [`Ledger`] beside the inner value, feed it
//! what each poll yields, and it keeps the [`Tracker`](crate::Tracker), the cause,
//! the counts, the SSE scanner, the guard against a panicking inner poll, and the
//! recorder that hears the [`Outcome`](crate::Outcome) exactly once.
//!
//! The other pieces a wrapper may hold beside it:
//!
//! * a [`ProgressWatch`](crate::timers::ProgressWatch) for the worker's progress
//!   timers, polled before the inner value with the ledger's
//!   [`progress`](Ledger::progress) (the driving order is in its docs);
//! * a [`FailureTail`](crate::failure::FailureTail) for the failure event a client
//!   hears when the stream fails after its response head.
//!
//! A wrapper that follows [`Ledger`]'s driving order gets the guarantees of
//! [`TrackedStream`](crate::TrackedStream): one verdict, fused, items unchanged.

pub use crate::ledger::Ledger;
