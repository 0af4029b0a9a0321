//! The tower layer: a circuit breaker around a client service for one worker.

use core::task::{Context, Poll};
use std::sync::Arc;

use http::{Request, Response};
use http_body::Body;
use sluice::Outcome;
use sluice::breaker::{OwnedSharedPermit, Recorded, SharedBreaker};
use sluice::failure::NoFailureEvent;
use sluice::timers::{NoTimers, Timeouts, Timer};
use tower_layer::Layer;
use tower_service::Service;

use crate::response_future::LayerTail;
use crate::settings::{Settings, layer_builders};
use crate::{
    BodyTimers, BreakerError, FailureEvents, LayerFailureEvent, LayerTimers, PermitRecorder,
    ResponseFuture, TrackedBody,
};

/// A [`tower_layer::Layer`] that puts one worker's [`SharedBreaker`] in front of a
/// client `Service<http::Request<_>>` (hyper-util's client, say).
///
/// Each call of the [`BreakerService`] asks the breaker for a permit first
/// ([`SharedBreaker::try_acquire_owned`]): when the breaker rejects, the call fails
/// at once with [`BreakerError::Rejected`] (carrying `retry_after`), and the inner
/// service is not called. Otherwise:
///
/// * the inner service's error (connect error, send timeout) is a
///   [`Failure`](sluice::Verdict::Failure) (by the status policy's
///   [`classify_send_failure`](sluice::breaker::StatusPolicy::classify_send_failure); cause
///   [`SendFailed`](sluice::Cause::SendFailed)), recorded at once and returned as
///   [`BreakerError::Inner`];
/// * a status the [`StatusPolicy`](sluice::breaker::StatusPolicy) settles (5xx:
///   `Failure`; 429 and other 4xx: `Abandoned`) is recorded at once with cause
///   [`Status`](sluice::Cause::Status), and the body is passed through untracked
///   ([`TrackedBody::settled`]);
/// * with [`with_grpc`](Self::with_grpc), a 2xx that carries `grpc-status` in its
///   headers (a trailers-only response) is settled the same way by the
///   [`GrpcPolicy`](crate::GrpcPolicy), with cause
///   [`GrpcStatus`](sluice::Cause::GrpcStatus);
/// * any other 2xx body is returned as a [`TrackedBody`] carrying the permit, with
///   the layer's SSE rules (every body with [`with_sse`](Self::with_sse), only
///   `text/event-stream` ones with
///   [`with_sse_for_event_streams`](Self::with_sse_for_event_streams)) and gRPC
///   policy: its end (or drop) records the verdict;
/// * a response future dropped before the headers is
///   [`Abandoned`](sluice::Verdict::Abandoned) (cause
///   [`ClientLeftBeforeHead`](sluice::Cause::ClientLeftBeforeHead)).
///
/// Every call is recorded exactly once. [`with_observer`](Self::with_observer) hears
/// each outcome with what the breaker did ([`Recorded`], so the transitions can be
/// logged and exported). For a pool of workers behind one client service, see
/// [`PoolLayer`](crate::PoolLayer).
///
/// [`tower_layer::Layer`]: https://docs.rs/tower-layer/0.3/tower_layer/trait.Layer.html
///
/// ```
/// use std::convert::Infallible;
/// use bytes::Bytes;
/// use http::{Request, Response, StatusCode};
/// use http_body_util::Full;
/// use sluice::breaker::{Config, SharedBreaker, State};
/// use sluice_http::{BreakerError, BreakerLayer};
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let breaker = SharedBreaker::new(Config::default().failure_threshold(1));
/// let worker = service_fn(|_req: Request<()>| async {
///     let mut response = Response::new(Full::new(Bytes::from_static(b"overloaded")));
///     *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
///     Ok::<_, Infallible>(response)
/// });
/// let client = ServiceBuilder::new()
///     .layer(BreakerLayer::new(breaker.clone()))
///     .service(worker);
///
/// let response = client.clone().oneshot(Request::new(())).await.unwrap();
/// assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE); // recorded: Failure
/// assert!(matches!(breaker.state(), State::Open { .. }));
///
/// let err = client.oneshot(Request::new(())).await.unwrap_err();
/// assert!(matches!(err, BreakerError::Rejected { .. }));
/// assert!(err.retry_after().is_some());
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct BreakerLayer<M = NoTimers, V = NoFailureEvent> {
    breaker: SharedBreaker,
    settings: Settings<(), M, V>,
}

impl BreakerLayer {
    /// A layer recording into `breaker`, with the default
    /// [`StatusPolicy`](sluice::breaker::StatusPolicy), no SSE rules, no gRPC and no
    /// timers.
    pub const fn new(breaker: SharedBreaker) -> Self {
        Self {
            breaker,
            settings: Settings::new(),
        }
    }
}

impl<M, V> BreakerLayer<M, V> {
    layer_builders!();

    /// Runs the worker's progress timers (first token, idle between progress events,
    /// a deadline: `timeouts`) on every tracked body, each on its own clone of
    /// `timer`: see [`TrackedBody::with_timers`]. A timer that fires is the worker's
    /// failure with the timer's cause, and the client's body ends in an error frame,
    /// [`BodyError::TimedOut`](crate::BodyError::TimedOut). The bodies' clocks start
    /// at their first poll. Bodies the status settled are not timed. Replaces timers
    /// given before.
    #[must_use]
    pub fn with_timers<T: Timer + Clone>(
        self,
        timer: T,
        timeouts: Timeouts,
    ) -> BreakerLayer<BodyTimers<T>, V> {
        BreakerLayer {
            breaker: self.breaker,
            settings: self.settings.with_timers(timer, timeouts),
        }
    }

    /// Every tracked body that fails after the response head without the worker's
    /// own error event (a timer fired, the stream was cut before its done event, the
    /// connection broke) sends the client its SSE dialect's failure event as its last
    /// data frame, then its error frame if it has one: see
    /// [`TrackedBody::with_failure_event`]. So a client hears the failure in its
    /// API's words (OpenAI's `data: {"error": ...}` and no `[DONE]`, Anthropic's
    /// `event: error`, a Responses `response.failed`), not a clean end. Only bodies
    /// scanned with SSE rules that have a dialect get it: with
    /// [`with_sse_for_event_streams`](Self::with_sse_for_event_streams), the
    /// `text/event-stream` ones. The verdict (the worker's failure) is unchanged;
    /// bodies the status settled are passed through untouched.
    ///
    /// The bodies' data must be buildable from the event's text (`From<String>`, as
    /// [`Bytes`](https://docs.rs/bytes/1/bytes/struct.Bytes.html) is) for them to be
    /// [`Body`](https://docs.rs/http-body/1/http_body/trait.Body.html)s.
    #[must_use]
    pub fn with_failure_event(self) -> BreakerLayer<M, FailureEvents> {
        BreakerLayer {
            breaker: self.breaker,
            settings: self.settings.with_failure_event(),
        }
    }

    /// Calls `observer` with every outcome recorded, and what the breaker did with it.
    /// It runs where the verdict is recorded (possibly in `Drop`, possibly on another
    /// thread), so it must be quick and must not panic (a panic while the thread
    /// unwinds already is caught). Not called for rejected calls (nothing is
    /// recorded).
    #[must_use]
    pub fn with_observer(
        mut self,
        observer: impl Fn(Outcome, Recorded) + Send + Sync + 'static,
    ) -> Self {
        self.settings.observer = Some(Arc::new(move |(), outcome, recorded| {
            observer(outcome, recorded);
        }));
        self
    }
}

impl<S, M: Clone, V: Clone> Layer<S> for BreakerLayer<M, V> {
    type Service = BreakerService<S, M, V>;

    fn layer(&self, inner: S) -> BreakerService<S, M, V> {
        BreakerService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of a [`BreakerLayer`]: see there. `Clone` when the inner service is.
///
/// `poll_ready` is the inner service's readiness (its errors as
/// [`BreakerError::Inner`]). The breaker is asked in `call`: a rejected call leaves the
/// inner service's readiness unused, as any tower service that fails a call early
/// does (a `ConcurrencyLimit` slot reserved by `poll_ready` is held until the service
/// is next called or dropped).
#[derive(Debug, Clone)]
pub struct BreakerService<S, M = NoTimers, V = NoFailureEvent> {
    inner: S,
    layer: BreakerLayer<M, V>,
}

impl<S, M, V> BreakerService<S, M, V> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The breaker this service records into.
    pub fn breaker(&self) -> &SharedBreaker {
        &self.layer.breaker
    }
}

impl<S, ReqBody, ResBody, M, V> Service<Request<ReqBody>> for BreakerService<S, M, V>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body,
    M: LayerTimers,
    V: LayerFailureEvent,
{
    type Response =
        Response<TrackedBody<ResBody, PermitRecorder, M::Watch, LayerTail<V, M, ResBody>>>;
    type Error = BreakerError<S::Error>;
    type Future = ResponseFuture<S::Future, OwnedSharedPermit, M, V>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(BreakerError::Inner)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let admitted: Result<OwnedSharedPermit, _> = self.layer.breaker.try_acquire_owned();
        self.layer.settings.call(&mut self.inner, admitted, request)
    }
}
