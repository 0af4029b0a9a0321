//! sluice: honest verdicts for streamed responses.
//!
//! A model gateway forwards a worker's streamed answer (Server-Sent Events) to a
//! client. sluice answers two questions about every such stream, without owning a
//! runtime:
//!
//! * **How did it end?** The [`Tracker`] is a pure state machine fed [`Event`]s (a
//!   chunk, an error item, the end, an in-band done or failure) that yields exactly one
//!   [`Verdict`]: [`Success`](Verdict::Success), [`Failure`](Verdict::Failure), or
//!   [`Abandoned`](Verdict::Abandoned) when the client left first (not the worker's
//!   fault).
//! * **Was it done?** The [`sse::SseScanner`] finds `data: [DONE]` and the other APIs'
//!   end markers in-band, split-safe and in constant memory.
//!
//! [`TrackedStream`] wraps any `futures-core` stream of byte chunks, feeds both, and
//! hands one [`Outcome`] to a [`Recorder`] when it is finished or dropped. It can also
//! run the worker's progress timers ([`timers`]: first token, idle, deadline, on any
//! runtime's [`Timer`](timers::Timer)) and, when the stream fails after the client has
//! its response head, end it with the failure event of its API's dialect
//! ([`TrackedStream::with_failure_event`]) rather than a clean end.
//!
//! ```
//! use sluice::{Outcome, TrackedStream, Verdict};
//! use futures_util::{StreamExt, stream};
//! # futures_executor::block_on(async {
//! let upstream = stream::iter([
//!     Ok::<_, std::io::Error>(&b"data: {\"text\":\"hi\"}\n\n"[..]),
//!     Ok(&b"data: [DONE]\n\n"[..]),
//! ]);
//! let (tx, rx) = std::sync::mpsc::channel();
//! // A recorder must not panic: it may run in `Drop`. A closed channel is ignored.
//! let mut tracked = TrackedStream::new(upstream, move |o: Outcome| drop(tx.send(o)))
//!     .with_sse(sluice::sse::SseRules::openai_chat());
//! // The client reads the first chunk, then walks away after `[DONE]`.
//! tracked.next().await;
//! tracked.next().await;
//! drop(tracked);
//! assert_eq!(rx.recv().unwrap().verdict, Verdict::Success);
//! # });
//! ```
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

mod guard;
mod ledger;
mod stream;
mod tracker;

pub mod attempt;
pub mod breaker;
pub mod failure;
pub mod forward;
pub mod retry;
pub mod sse;
pub mod timers;
pub mod wrap;

pub use guard::RecordGuard;
pub use stream::TrackedStream;
pub use tracker::{Cause, Event, Outcome, Recorder, Terminal, Tracker, Verdict};
