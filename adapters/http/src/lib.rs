//! sluice for `http` bodies and tower services: honest verdicts for streamed HTTP and
//! gRPC responses, and a circuit breaker in front of each worker.
//!
//! * [`TrackedBody`] wraps any [`http_body::Body`] as
//!   [`TrackedStream`](sluice::TrackedStream) wraps a stream: data frames are chunks
//!   (scanned for SSE end markers with [`with_sse`](TrackedBody::with_sse)), an error
//!   frame is an error, the end (or the trailers) is the end, a drop before the end is
//!   Abandoned; exactly one [`Outcome`](sluice::Outcome) goes to its recorder.
//! * [`GrpcPolicy`] judges a gRPC stream by its `grpc-status` trailer
//!   ([`with_grpc`](TrackedBody::with_grpc)).
//! * [`BreakerLayer`] is a tower layer around a client service for one worker: it
//!   takes a permit per call, rejects at once when the breaker is open, classifies the
//!   status line and hands back the body as a `TrackedBody` carrying the permit.
//! * [`PoolLayer`] is the same for a pool of workers behind one client service (a
//!   [`SharedBreakerSet`](sluice::breaker::SharedBreakerSet)): it picks a worker per
//!   call, hands the [`PickedWorker`] to the inner service to route by, and records
//!   the call's verdict to that worker's breaker.
//!
//! No runtime and no HTTP implementation: any `http` 1 / `http-body` 1 stack fits
//! (hyper, hyper-util, axum, tonic's transport).
//!
//! [`http_body::Body`]: https://docs.rs/http-body/1/http_body/trait.Body.html
//!
//! # gRPC
//!
//! A gRPC client behind the layer: the `grpc-status` trailer decides (0 Success;
//! `UNAVAILABLE`, `INTERNAL`, `UNKNOWN`, `DATA_LOSS`, `DEADLINE_EXCEEDED` Failure; the
//! caller's codes Abandoned), a stream cut before its trailers is a Failure, and a
//! trailers-only response is judged from its headers.
//!
//! ```
//! use std::convert::Infallible;
//! use bytes::Bytes;
//! use http::{HeaderMap, HeaderValue, Request, Response};
//! use http_body_util::{BodyExt, Full, StreamBody};
//! use http_body::Frame;
//! use sluice::breaker::{Config, SharedBreaker};
//! use sluice::{Cause, Verdict};
//! use sluice_http::{BreakerLayer, GrpcPolicy};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! // A worker answering one gRPC message, then `grpc-status: 14` (UNAVAILABLE).
//! let worker = service_fn(|_req: Request<Full<Bytes>>| async {
//!     let mut trailers = HeaderMap::new();
//!     trailers.insert("grpc-status", HeaderValue::from_static("14"));
//!     let frames = [
//!         Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"\0\0\0\0\x02hi"))),
//!         Ok(Frame::trailers(trailers)),
//!     ];
//!     let body = StreamBody::new(futures_util::stream::iter(frames));
//!     Ok::<_, Infallible>(Response::new(body))
//! });
//! let (tx, rx) = std::sync::mpsc::channel();
//! let client = ServiceBuilder::new()
//!     .layer(
//!         BreakerLayer::new(SharedBreaker::new(Config::default()))
//!             .with_grpc(GrpcPolicy::default())
//!             .with_observer(move |outcome, _| { let _ = tx.send(outcome); }),
//!     )
//!     .service(worker);
//! let response = client.oneshot(Request::new(Full::default())).await.unwrap();
//! let collected = response.into_body().collect().await.unwrap();
//! assert_eq!(collected.trailers().unwrap()["grpc-status"], "14");
//! let outcome = rx.recv().unwrap();
//! assert_eq!((outcome.verdict, outcome.cause), (Verdict::Failure, Cause::GrpcStatus));
//! # });
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod attempt_body;
mod body;
mod breaker_layer;
mod error;
mod grpc;
mod judge;
mod layer_failure_event;
mod layer_permit;
mod layer_timers;
mod permit_recorder;
mod pool_layer;
mod response_future;
mod settings;

pub use attempt_body::AttemptBody;
pub use body::TrackedBody;
pub use breaker_layer::{BreakerLayer, BreakerService};
pub use error::{BodyError, BreakerError};
pub use grpc::GrpcPolicy;
pub use layer_failure_event::{FailureEvents, LayerFailureEvent};
pub use layer_permit::LayerPermit;
pub use layer_timers::{BodyTimers, LayerTimers};
pub use permit_recorder::PermitRecorder;
pub use pool_layer::{PickedWorker, PoolLayer, PoolService};
pub use response_future::ResponseFuture;

#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
