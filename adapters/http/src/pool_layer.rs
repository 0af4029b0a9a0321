//! The tower layer for a pool: picks a worker of a breaker set for each call.

use core::task::{Context, Poll};
use std::sync::Arc;

use http::{Request, Response};
use http_body::Body;
use sluice::Outcome;
use sluice::breaker::{Pick, Recorded, SetPermit, SharedBreakerSet};
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

/// The worker a [`PoolService`] picked for a call: in the request's extensions (for
/// the inner service to route by: rewrite the URI, choose a client) and in the
/// response's (to log or label it), and told to the observer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PickedWorker {
    /// Its index in the [`SharedBreakerSet`] (as [`SetPermit::worker`]).
    pub index: usize,
}

/// A [`tower_layer::Layer`] that fronts a pool of workers, one breaker each (a
/// [`SharedBreakerSet`]), with one client `Service<http::Request<_>>` that can reach
/// them all: [`BreakerLayer`](crate::BreakerLayer) for a pool.
///
/// Each call of the [`PoolService`] first picks a worker that admits it
/// ([`SharedBreakerSet::pick`], by the layer's [`Pick`]). When none does, the call
/// fails at once with [`BreakerError::Rejected`], carrying the soonest `retry_after`
/// of any worker, and the inner service is not called. Otherwise the request goes to
/// the inner service with the [`PickedWorker`] in its extensions: the inner service
/// routes by it. From there the call is judged as a [`BreakerLayer`]'s, and its one
/// verdict goes to the picked worker's breaker only:
///
/// * the inner service's error is a [`Failure`](sluice::Verdict::Failure) (cause
///   [`SendFailed`](sluice::Cause::SendFailed)), returned as [`BreakerError::Inner`];
/// * a status the [`StatusPolicy`] settles (5xx, 3xx, 1xx: `Failure`; 429 and other
///   4xx: `Abandoned`) is recorded at once with cause [`Status`](sluice::Cause::Status),
///   the body passed through untracked; with [`with_grpc`](Self::with_grpc), a
///   trailers-only gRPC response is settled by its `grpc-status`;
/// * any other 2xx body is a [`TrackedBody`] carrying the worker's [`SetPermit`]: its
///   end (or its drop, when the client leaves: `Abandoned`,
///   [`ClientLeft`](sluice::Cause::ClientLeft)) records the verdict;
/// * a response future dropped before the head is `Abandoned`
///   ([`ClientLeftBeforeHead`](sluice::Cause::ClientLeftBeforeHead)).
///
/// The response carries the [`PickedWorker`] in its extensions too, and the observer
/// ([`with_observer`](Self::with_observer)) hears it with each outcome.
///
/// SSE: [`with_sse`](Self::with_sse) scans every tracked body, as on a
/// `BreakerLayer`; a pool whose workers also answer non-streamed requests wants
/// [`with_sse_for_event_streams`](Self::with_sse_for_event_streams), which scans only
/// `text/event-stream` bodies and lets any other end cleanly.
///
/// [`BreakerLayer`]: crate::BreakerLayer
/// [`StatusPolicy`]: sluice::breaker::StatusPolicy
/// [`tower_layer::Layer`]: https://docs.rs/tower-layer/0.3/tower_layer/trait.Layer.html
///
/// ```
/// use std::convert::Infallible;
/// use bytes::Bytes;
/// use http::{Request, Response, StatusCode, header};
/// use http_body_util::{BodyExt, Full};
/// use sluice::breaker::{Config, Pick, SharedBreakerSet, State};
/// use sluice::sse::SseRules;
/// use sluice::{Cause, Verdict};
/// use sluice_http::{PickedWorker, PoolLayer};
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// // One client for two workers, routing by the worker the layer picked (a gateway
/// // rewrites the URI). Worker 0 is overloaded; worker 1 streams.
/// let client = service_fn(|request: Request<()>| async move {
///     let worker = request.extensions().get::<PickedWorker>().expect("picked");
///     let response = match worker.index {
///         0 => Response::builder()
///             .status(StatusCode::SERVICE_UNAVAILABLE)
///             .body(Full::default()),
///         _ => Response::builder()
///             .header(header::CONTENT_TYPE, "text/event-stream")
///             .body(Full::new(Bytes::from_static(b"data: {}\n\ndata: [DONE]\n\n"))),
///     };
///     Ok::<_, Infallible>(response.expect("response"))
/// });
/// let set = SharedBreakerSet::new(2, Config::default().failure_threshold(1));
/// let (tx, rx) = std::sync::mpsc::channel();
/// let pool = ServiceBuilder::new()
///     .layer(
///         PoolLayer::new(set.clone(), Pick::RoundRobin)
///             .with_sse_for_event_streams(SseRules::openai_chat())
///             .with_observer(move |worker, outcome, _recorded| {
///                 let _ = tx.send((worker.index, outcome.verdict, outcome.cause));
///             }),
///     )
///     .service(client);
///
/// // Worker 0 first: its 503 is its Failure, and opens its breaker (threshold 1).
/// let response = pool.clone().oneshot(Request::new(())).await.unwrap();
/// assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
/// assert_eq!(response.extensions().get(), Some(&PickedWorker { index: 0 }));
/// assert_eq!(rx.recv().unwrap(), (0, Verdict::Failure, Cause::Status));
/// assert!(matches!(set.state(0), State::Open { .. }));
///
/// // Worker 1 takes every call now; each stream's end is its verdict.
/// for _ in 0..2 {
///     let response = pool.clone().oneshot(Request::new(())).await.unwrap();
///     assert_eq!(response.extensions().get(), Some(&PickedWorker { index: 1 }));
///     response.into_body().collect().await.unwrap();
///     assert_eq!(rx.recv().unwrap(), (1, Verdict::Success, Cause::Done));
/// }
/// assert_eq!(set.state(1), State::Closed);
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct PoolLayer<M = NoTimers, V = NoFailureEvent> {
    set: SharedBreakerSet,
    pick: Pick,
    settings: Settings<PickedWorker, M, V>,
}

impl PoolLayer {
    /// A layer picking workers of `set` by `pick`, with the default
    /// [`StatusPolicy`](sluice::breaker::StatusPolicy), no SSE rules, no gRPC and no
    /// timers.
    pub const fn new(set: SharedBreakerSet, pick: Pick) -> Self {
        Self {
            set,
            pick,
            settings: Settings::new(),
        }
    }
}

impl<M, V> PoolLayer<M, V> {
    layer_builders!();

    /// Runs the worker's progress timers (first token, idle between progress events,
    /// a deadline: `timeouts`) on every tracked body, each on its own clone of
    /// `timer`: see [`TrackedBody::with_timers`]. A timer that fires is the picked
    /// worker's failure with the timer's cause, and the client's body ends in an
    /// error frame, [`BodyError::TimedOut`](crate::BodyError::TimedOut). The bodies'
    /// clocks start at their first poll. Bodies the status settled are not timed.
    /// Replaces timers given before.
    #[must_use]
    pub fn with_timers<T: Timer + Clone>(
        self,
        timer: T,
        timeouts: Timeouts,
    ) -> PoolLayer<BodyTimers<T>, V> {
        PoolLayer {
            set: self.set,
            pick: self.pick,
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
    /// `text/event-stream` ones. The verdict (the picked worker's failure) is unchanged;
    /// bodies the status settled are passed through untouched.
    ///
    /// The bodies' data must be buildable from the event's text (`From<String>`, as
    /// [`Bytes`](https://docs.rs/bytes/1/bytes/struct.Bytes.html) is) for them to be
    /// [`Body`](https://docs.rs/http-body/1/http_body/trait.Body.html)s.
    #[must_use]
    pub fn with_failure_event(self) -> PoolLayer<M, FailureEvents> {
        PoolLayer {
            set: self.set,
            pick: self.pick,
            settings: self.settings.with_failure_event(),
        }
    }

    /// Calls `observer` with every outcome recorded, the worker it was recorded to,
    /// and what that worker's breaker did with it (a
    /// [`Transition`](sluice::breaker::Transition) to log or export). It runs where
    /// the verdict is recorded (possibly in `Drop`, possibly on another thread), so it
    /// must be quick and must not panic (a panic while the thread unwinds already is
    /// caught). Not called for rejected calls (nothing is recorded).
    #[must_use]
    pub fn with_observer(
        mut self,
        observer: impl Fn(PickedWorker, Outcome, Recorded) + Send + Sync + 'static,
    ) -> Self {
        self.settings.observer = Some(Arc::new(observer));
        self
    }
}

impl<S, M: Clone, V: Clone> Layer<S> for PoolLayer<M, V> {
    type Service = PoolService<S, M, V>;

    fn layer(&self, inner: S) -> PoolService<S, M, V> {
        PoolService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of a [`PoolLayer`]: see there. `Clone` when the inner service is.
///
/// `poll_ready` is the inner service's readiness (its errors as
/// [`BreakerError::Inner`]); the worker is picked in `call`, as a
/// [`BreakerService`](crate::BreakerService) asks its breaker there.
#[derive(Debug, Clone)]
pub struct PoolService<S, M = NoTimers, V = NoFailureEvent> {
    inner: S,
    layer: PoolLayer<M, V>,
}

impl<S, M, V> PoolService<S, M, V> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The breaker set this service picks from and records into.
    pub fn set(&self) -> &SharedBreakerSet {
        &self.layer.set
    }
}

impl<S, ReqBody, ResBody, M, V> Service<Request<ReqBody>> for PoolService<S, M, V>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body,
    M: LayerTimers,
    V: LayerFailureEvent,
{
    type Response = Response<
        TrackedBody<ResBody, PermitRecorder<SetPermit>, M::Watch, LayerTail<V, M, ResBody>>,
    >;
    type Error = BreakerError<S::Error>;
    type Future = ResponseFuture<S::Future, SetPermit, M, V>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(BreakerError::Inner)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let admitted = self.layer.set.pick(self.layer.pick);
        self.layer.settings.call(&mut self.inner, admitted, request)
    }
}
