//! The tower layer: a circuit breaker around a client service for one worker.

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};
use core::time::Duration;
use std::sync::Arc;

use http::{Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use sluice::breaker::{Classified, OwnedSharedPermit, Recorded, SharedBreaker, StatusPolicy};
use sluice::sse::SseRules;
use sluice::{Cause, Outcome, Recorder, Verdict};
use tower_layer::Layer;
use tower_service::Service;

use crate::{GrpcPolicy, TrackedBody};

/// What an observer is told: the outcome of one call, and what the breaker did.
type Observer = Arc<dyn Fn(Outcome, Recorded) + Send + Sync>;

/// The settings shared by a layer and its services.
#[derive(Clone)]
struct Settings {
    breaker: SharedBreaker,
    status: StatusPolicy,
    sse: Option<SseRules>,
    grpc: Option<GrpcPolicy>,
    observer: Option<Observer>,
}

impl core::fmt::Debug for Settings {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Settings")
            .field("breaker", &self.breaker)
            .field("status", &self.status)
            .field("sse", &self.sse)
            .field("grpc", &self.grpc)
            .field("observer", &self.observer.is_some())
            .finish()
    }
}

/// A [`tower_layer::Layer`] that puts one worker's [`SharedBreaker`] in front of a
/// client `Service<http::Request<_>>` (hyper-util's client, say).
///
/// Each call of the [`BreakerService`] asks the breaker for a permit first
/// ([`SharedBreaker::try_acquire_owned`]): when the breaker rejects, the call fails
/// at once with [`BreakerError::Rejected`] (carrying `retry_after`), and the inner
/// service is not called. Otherwise:
///
/// * the inner service's error (connect error, send timeout) is a
///   [`Failure`](Verdict::Failure) (by the status policy's
///   [`send_failed`](StatusPolicy::send_failed); cause [`SendFailed`](Cause::SendFailed)),
///   recorded at once and returned as [`BreakerError::Inner`];
/// * a status the [`StatusPolicy`] settles (5xx: `Failure`; 429 and other 4xx:
///   `Abandoned`) is recorded at once with cause [`Status`](Cause::Status), and the
///   body is passed through untracked ([`TrackedBody::settled`]);
/// * with [`with_grpc`](Self::with_grpc), a 2xx that carries `grpc-status` in its
///   headers (a trailers-only response) is settled the same way by the
///   [`GrpcPolicy`], with cause [`GrpcStatus`](Cause::GrpcStatus);
/// * any other 2xx body is returned as a [`TrackedBody`] carrying the permit, with
///   the layer's SSE rules and gRPC policy: its end (or drop) records the verdict;
/// * a response future dropped before the headers is
///   [`Abandoned`](Verdict::Abandoned) (cause [`ClientLeft`](Cause::ClientLeft)).
///
/// Every call is recorded exactly once. [`with_observer`](Self::with_observer) hears
/// each outcome with what the breaker did ([`Recorded`], so the transitions can be
/// logged and exported).
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
pub struct BreakerLayer {
    settings: Settings,
}

impl BreakerLayer {
    /// A layer recording into `breaker`, with the default [`StatusPolicy`], no SSE
    /// rules and no gRPC.
    pub fn new(breaker: SharedBreaker) -> Self {
        Self {
            settings: Settings {
                breaker,
                status: StatusPolicy::default(),
                sse: None,
                grpc: None,
                observer: None,
            },
        }
    }

    /// Classifies the status line with `policy`.
    #[must_use]
    pub fn with_status_policy(mut self, policy: StatusPolicy) -> Self {
        self.settings.status = policy;
        self
    }

    /// Scans tracked bodies with `rules` (see [`TrackedBody::with_sse`]).
    #[must_use]
    pub fn with_sse(mut self, rules: SseRules) -> Self {
        self.settings.sse = Some(rules);
        self
    }

    /// Judges responses as gRPC (see [`TrackedBody::with_grpc`]), trailers-only
    /// responses included.
    #[must_use]
    pub fn with_grpc(mut self, policy: GrpcPolicy) -> Self {
        self.settings.grpc = Some(policy);
        self
    }

    /// Calls `observer` with every outcome recorded, and what the breaker did with it.
    /// It runs where the verdict is recorded (possibly in `Drop`, possibly on another
    /// thread), so it must be quick and must not panic. Not called for rejected calls
    /// (nothing is recorded), nor for a permit dropped while the thread is panicking.
    #[must_use]
    pub fn with_observer(
        mut self,
        observer: impl Fn(Outcome, Recorded) + Send + Sync + 'static,
    ) -> Self {
        self.settings.observer = Some(Arc::new(observer));
        self
    }
}

impl<S> Layer<S> for BreakerLayer {
    type Service = BreakerService<S>;

    fn layer(&self, inner: S) -> BreakerService<S> {
        BreakerService {
            inner,
            settings: self.settings.clone(),
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
pub struct BreakerService<S> {
    inner: S,
    settings: Settings,
}

impl<S> BreakerService<S> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The breaker this service records into.
    pub fn breaker(&self) -> &SharedBreaker {
        &self.settings.breaker
    }
}

/// The error of a [`BreakerService`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BreakerError<E> {
    /// The breaker is open: the inner service was not called.
    #[error("circuit breaker open")]
    Rejected {
        /// When the breaker may admit again, if it knows.
        retry_after: Option<Duration>,
    },
    /// The inner service failed (recorded as a failed send).
    #[error("the inner service failed")]
    Inner(#[source] E),
}

impl<E> BreakerError<E> {
    /// When the breaker may admit again: `Some` only for a rejection that knows.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Rejected { retry_after } => *retry_after,
            Self::Inner(_) => None,
        }
    }

    /// Whether the breaker rejected the call.
    pub fn is_rejected(&self) -> bool {
        matches!(self, Self::Rejected { .. })
    }

    /// The inner service's error, if that is what this is.
    pub fn into_inner(self) -> Option<E> {
        match self {
            Self::Inner(e) => Some(e),
            Self::Rejected { .. } => None,
        }
    }
}

/// The recorder of a [`BreakerService`]'s calls: the breaker's permit, and the
/// layer's observer. Dropped unrecorded (a response future dropped before the
/// headers), it records [`Abandoned`](Verdict::Abandoned) with cause
/// [`ClientLeft`](Cause::ClientLeft).
pub struct PermitRecorder {
    permit: Option<OwnedSharedPermit>,
    observer: Option<Observer>,
}

impl PermitRecorder {
    /// The permit it holds (`None` once recorded).
    pub fn permit(&self) -> Option<&OwnedSharedPermit> {
        self.permit.as_ref()
    }
}

impl core::fmt::Debug for PermitRecorder {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PermitRecorder")
            .field("permit", &self.permit)
            .field("observer", &self.observer.is_some())
            .finish()
    }
}

impl Recorder for PermitRecorder {
    /// Records `outcome.verdict` into the breaker, then tells the observer.
    fn record(mut self, outcome: Outcome) {
        self.deliver(outcome);
    }
}

impl PermitRecorder {
    fn deliver(&mut self, outcome: Outcome) {
        if let Some(permit) = self.permit.take() {
            let recorded = permit.report(outcome.verdict);
            if let Some(observer) = self.observer.take() {
                observer(outcome, recorded);
            }
        }
    }
}

impl Drop for PermitRecorder {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The permit's own drop records Abandoned; the observer is not risked.
            self.observer = None;
        }
        self.deliver(Outcome::new(Verdict::Abandoned, Cause::ClientLeft, 0, 0));
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for BreakerService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body,
{
    type Response = Response<TrackedBody<ResBody, PermitRecorder>>;
    type Error = BreakerError<S::Error>;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(BreakerError::Inner)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        match self.settings.breaker.try_acquire_owned() {
            Err(rejected) => ResponseFuture {
                kind: Kind::Rejected {
                    retry_after: rejected.retry_after,
                },
            },
            Ok(permit) => ResponseFuture {
                kind: Kind::Waiting {
                    future: self.inner.call(request),
                    call: Some(Call {
                        recorder: PermitRecorder {
                            permit: Some(permit),
                            observer: self.settings.observer.clone(),
                        },
                        status: self.settings.status,
                        sse: self.settings.sse.clone(),
                        grpc: self.settings.grpc,
                    }),
                },
            },
        }
    }
}

/// One admitted call, waiting for its response.
struct Call {
    recorder: PermitRecorder,
    status: StatusPolicy,
    sse: Option<SseRules>,
    grpc: Option<GrpcPolicy>,
}

impl Call {
    /// The response's body, tracked or settled.
    fn body<B: Body>(
        self,
        response: &http::response::Parts,
        body: B,
    ) -> TrackedBody<B, PermitRecorder> {
        fn settled<B: Body>(
            body: B,
            recorder: PermitRecorder,
            verdict: Verdict,
            cause: Cause,
        ) -> TrackedBody<B, PermitRecorder> {
            let outcome = Outcome::new(verdict, cause, 0, 0);
            recorder.record(outcome);
            TrackedBody::settled(body, outcome)
        }
        match self.status.classify(response.status.as_u16()) {
            Classified::Settle(verdict) => {
                return settled(body, self.recorder, verdict, Cause::Status);
            }
            Classified::Track => {}
            // `Classified` may grow: anything else is tracked.
            _ => {}
        }
        if let Some(grpc) = self.grpc {
            if let Some(verdict) = grpc.classify_headers(&response.headers) {
                return settled(body, self.recorder, verdict, Cause::GrpcStatus);
            }
        }
        let mut tracked = TrackedBody::new(body, self.recorder);
        if let Some(rules) = self.sse {
            tracked = tracked.with_sse(rules);
        }
        if let Some(policy) = self.grpc {
            tracked = tracked.with_grpc(policy);
        }
        tracked
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Waiting { #[pin] future: F, call: Option<Call> },
        Rejected { retry_after: Option<Duration> },
    }
}

pin_project! {
    /// The response future of a [`BreakerService`]. Dropped before the response, the
    /// call is [`Abandoned`](Verdict::Abandoned).
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

impl<F> core::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body,
{
    type Output = Result<Response<TrackedBody<B, PermitRecorder>>, BreakerError<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Rejected { retry_after } => Poll::Ready(Err(BreakerError::Rejected {
                retry_after: *retry_after,
            })),
            KindProj::Waiting { future, call } => {
                let result = match future.poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(result) => result,
                };
                // Polled again after it completed: the inner future's contract says
                // what that does; there is nothing left to record.
                let Some(call) = call.take() else {
                    return Poll::Ready(result.map_err(BreakerError::Inner).map(|r| {
                        r.map(|b| TrackedBody::settled(b, Outcome::from(Verdict::Abandoned)))
                    }));
                };
                Poll::Ready(match result {
                    Err(e) => {
                        let verdict = call.status.classify_send_failure();
                        call.recorder
                            .record(Outcome::new(verdict, Cause::SendFailed, 0, 0));
                        Err(BreakerError::Inner(e))
                    }
                    Ok(response) => {
                        let (parts, body) = response.into_parts();
                        let body = call.body(&parts, body);
                        Ok(Response::from_parts(parts, body))
                    }
                })
            }
        }
    }
}
