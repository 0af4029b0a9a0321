//! sluice: honest verdicts for streamed responses.
//!
//! A model gateway forwards a worker's streamed answer (Server-Sent Events, say) to a
//! client. sluice answers two questions about every such stream, without owning a
//! runtime, and acts on the answers with a circuit breaker per worker:
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
//! hands one [`Outcome`] (the verdict, its [`Cause`], the counts) to a [`Recorder`]
//! when it is finished or dropped. A breaker's permit is a recorder, so the worker's
//! breaker hears every verdict. [`RecordGuard`] covers the gap before there is a
//! stream (the wait for the response head).
//!
//! # What you can rely on
//!
//! * **One verdict per stream**, delivered when the stream is finished or dropped,
//!   never two, never none; also when the inner stream panics inside `poll_next` (a
//!   Failure, cause [`Panic`](Cause::Panic), delivered while unwinding).
//! * **The verdict reads the end**: a clean end or the API's done event is Success;
//!   an error item, an in-band error, a required done event that never came
//!   ([`Truncated`](Cause::Truncated)), a worker's timer, a panic is Failure; an
//!   error after the done event is still Failure; a stream dropped before any end is
//!   Abandoned. Every verdict carries its [`Cause`], a stable snake_case label for
//!   metrics and logs ([`Cause::as_str`]).
//! * **Items pass through unchanged**, in order, with no copy of the bytes; after its
//!   end the inner stream is never polled again. No heap allocation per stream
//!   beyond what you hand in.
//! * **Keep-alives and the preamble are not progress.** Comments, Anthropic's `ping`,
//!   and the events an API sends before any output (OpenAI's role-only chunk,
//!   Anthropic's `message_start`, Responses' `response.created`) never count as
//!   progress; the timers that judge a worker (first token, idle) count progress,
//!   not bytes.
//! * **Abandoned is neutral**: a breaker counts nothing for it, but a permit it held
//!   is freed. A client that leaves or stops reading never ejects a worker.
//! * **No clock, no runtime in the core**: time is an input (`now`) or a
//!   [`Timer`](timers::Timer) you hand in; nothing inside logs or spawns.
//!
//! # Modules
//!
//! * [`breaker`]: the circuit breaker. [`CircuitBreaker`](breaker::CircuitBreaker) is
//!   the sans-io machine (`no_std`, `now` as an input, every change returned as a
//!   [`Transition`](breaker::Transition)); [`SharedBreaker`](breaker::SharedBreaker)
//!   the same behind a thread-safe handle with a lock-free Closed path;
//!   [`SharedBreakerSet`](breaker::SharedBreakerSet) one per worker, with a pick and a
//!   cap on ejections; [`StatusPolicy`](breaker::StatusPolicy) what a response's
//!   status means for the worker.
//! * [`sse`]: the in-band rules: the scanner, the presets of each API
//!   ([`SseRules`](sse::SseRules)), and the failure event of each dialect.
//! * [`timers`]: the worker's progress timers (first token, idle, deadline) over any
//!   runtime's sleep, for [`TrackedStream::with_timers`], `forward` and body wrappers.
//! * [`failure`]: what a tracked stream yields after it failed, so a client that
//!   already has the response head hears the failure in its API's dialect
//!   ([`TrackedStream::with_failure_event`]).
//! * [`forward`]: the runtime-agnostic loop that forwards a tracked stream to a
//!   client through a channel and stops reading the worker the moment the client
//!   leaves; `sluice-tokio` and `sluice-smol` are shells around it.
//! * [`wrap`]: for wrapper authors: the [`Ledger`](wrap::Ledger) behind every tracked
//!   stream and body, to wrap another kind of value the same way.
//! * [`attempt`]: the commit point, an attempt that holds back its bytes until its
//!   first progress so that a failure before it can be retried invisibly.
//! * [`retry`]: a retry budget, so that retries and hedges cannot become a storm.
//!
//! # Three ways to drive a tracked stream
//!
//! **1. Wrap the body** (the direct path: the stream is the client's response body,
//! `Body::from_stream` in axum; no task, no channel). The permit rides in the stream
//! and hears the verdict when the stream ends or the server drops it:
//!
//! ```
//! use futures_util::{StreamExt, stream};
//! use sluice::breaker::{Config, SharedBreaker, State};
//! use sluice::sse::SseRules;
//! use sluice::{Cause, TrackedStream};
//! # futures_executor::block_on(async {
//! let breaker = SharedBreaker::new(Config::default().failure_threshold(1));
//! // Leave to call the worker (without it, answer 503 with `retry_after`).
//! let permit = breaker.try_acquire_owned().expect("closed");
//! // The worker's answer: one token, then its connection drops before `[DONE]`.
//! let upstream = stream::iter([Ok::<_, std::io::Error>(&b"data: {\"choices\":[]}\n\n"[..])]);
//! let mut body = TrackedStream::new(upstream, permit).with_sse(SseRules::openai_chat());
//! while let Some(chunk) = body.next().await {
//!     let _ = chunk; // to the client
//! }
//! assert_eq!(body.finish().cause, Cause::Truncated); // or drop it: it records either way
//! assert!(matches!(breaker.state(), State::Open { .. }));
//! # });
//! ```
//!
//! **2. Forward through a channel** ([`forward::forward`]; `sluice_tokio::forward`
//! and `sluice_smol::forward` give it their runtime's channel and timer). A task
//! reads the worker and sends to the client; the client's close wins over
//! everything, and the worker's connection is dropped at once:
//!
//! ```
//! use core::future::{Future, ready};
//! use futures_util::stream;
//! use sluice::forward::{self, ClientGone, Downstream, Ending, ForwardOptions};
//! use sluice::timers::NeverTimer;
//! use sluice::{Cause, Outcome, TrackedStream, Verdict};
//!
//! /// A client that has already gone (its receiver was dropped).
//! struct Gone;
//! impl<T> Downstream<T> for Gone {
//!     fn send(&self, _: T) -> impl Future<Output = Result<(), ClientGone>> {
//!         ready(Err(ClientGone))
//!     }
//!     fn closed(&self) -> impl Future<Output = ()> {
//!         ready(())
//!     }
//! }
//! // A worker that would generate forever.
//! let upstream = stream::repeat(Ok::<_, ()>(&b"data: token\n\n"[..]));
//! let tracked = TrackedStream::new(upstream, |_: Outcome| {});
//! let options = ForwardOptions::default();
//! let out = futures_executor::block_on(forward::forward(tracked, &Gone, &NeverTimer, options));
//! assert_eq!(out.ending, Ending::ClientGone);
//! assert_eq!((out.outcome.verdict, out.outcome.cause), (Verdict::Abandoned, Cause::ClientLeft));
//! ```
//!
//! **3. Wrap an HTTP body** (`sluice-http`'s `TrackedBody`, an `http_body::Body`, and
//! its tower `BreakerLayer`). Its `poll_frame` drives a [`Ledger`](wrap::Ledger) in
//! the order every wrapper follows: stop once ended, poll the inner body inside the
//! guard (a panic is a Failure), then feed what came: a data frame, the end, or a
//! trailer that judges the stream itself (a gRPC status). The same loop, by hand:
//!
//! ```
//! use sluice::sse::SseRules;
//! use sluice::wrap::Ledger;
//! use sluice::{Cause, Outcome, Verdict};
//!
//! let mut ledger = Ledger::new(|o: Outcome| {
//!     assert_eq!((o.verdict, o.cause), (Verdict::Success, Cause::Done));
//! })
//! .with_sse(SseRules::openai_chat());
//! let mut inner = [&b"data: hi\n\n"[..], &b"data: [DONE]\n\n"[..]].into_iter();
//! while !ledger.is_ended() {
//!     match ledger.guard(|| inner.next()) {
//!         Some(data) => ledger.on_chunk(data), // a data frame
//!         None => ledger.on_end(),             // the body's end
//!     }
//! }
//! drop(ledger); // records, once
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
mod scanner;
mod stream;
mod tracker;

pub mod attempt;
pub mod breaker;
pub mod eventstream;
pub mod failure;
pub mod forward;
pub mod ndjson;
#[cfg(feature = "alloc")]
pub mod pair;
pub mod retry;
pub mod sse;
pub mod timers;
pub mod wrap;

pub use guard::RecordGuard;
pub use stream::TrackedStream;
pub use tracker::{Cause, Event, Outcome, Recorder, Terminal, Tracker, Usage, Verdict};
