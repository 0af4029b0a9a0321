//! The gateway, built only from sluice's public API: axum in front, reqwest behind,
//! one [`SharedBreaker`] per worker, round-robin among the admitted workers.
//!
//! Per request: pick a worker whose breaker gives a permit (an [`OwnedSharedPermit`],
//! so it can travel with the response body), send the request upstream, classify the
//! start of the answer with the [`StatusPolicy`], and hand the upstream's body to the
//! client as a [`TrackedStream`] straight in `Body::from_stream` (the direct-body
//! path: no task, no channel). The permit rides inside a [`Ticket`], the stream's
//! recorder, which reports the verdict to the breaker and logs what the breaker did
//! with it (a transition, or a stale permit).
//!
//! When the client leaves, hyper drops the body, which drops the upstream response
//! (closing the worker's connection, so the engine stops) and records `Abandoned`. A
//! client that leaves while the gateway still waits for the worker's headers drops
//! the handler future, and with it the upstream request and the ticket, which
//! records `Abandoned` from its `Drop`.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State as AxumState;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use sluice::breaker::{
    Classified, Clock, Config, ConfigError, OwnedSharedPermit, Recorded, SharedBreaker, State,
    StatusPolicy, Transition,
};
use sluice::sse::SseRules;
use sluice::{Cause, Outcome, Recorder, TrackedStream, Verdict};
use tokio::sync::mpsc::UnboundedSender;

use crate::metrics::{self, Metrics};

/// The header that carries a request's id to the worker (and into the timeline).
pub(crate) const REQUEST_ID: &str = "x-request-id";

/// One worker the gateway forwards to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WorkerSpec {
    /// Its name in the timeline and the metrics.
    pub(crate) name: String,
    /// Its base URL (`http://host:port`, optionally with a path prefix); the
    /// request's path is appended.
    pub(crate) base: String,
}

/// How a verdict was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum How {
    /// The tracked stream ended, failed, or was dropped by the client.
    Stream,
    /// The worker answered with this non-2xx status (the status policy decided).
    Status(u16),
    /// The request never got an answer (connect error).
    SendFailed,
    /// A streaming request was answered with something other than an event stream.
    NotSse,
    /// The client left while the gateway waited for the worker's headers.
    ClientLeft,
}

impl How {
    /// Whether the client leaving ended it (the upstream was dropped early).
    fn cancelled(self, verdict: Verdict) -> bool {
        verdict == Verdict::Abandoned && matches!(self, Self::Stream | Self::ClientLeft)
    }
}

/// What the gateway did, in order, for the demo's timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    /// A worker's breaker said no; the gateway tried the next worker.
    Skipped {
        /// The request id.
        request: String,
        /// The worker that was skipped.
        worker: usize,
        /// When its breaker lets a probe through, if known.
        retry_after: Option<Duration>,
    },
    /// The request went to `worker`.
    Routed {
        /// The request id.
        request: String,
        /// The worker it went to.
        worker: usize,
        /// The permit is a HalfOpen probe.
        probe: bool,
    },
    /// No worker admitted the request: 503.
    Unavailable {
        /// The request id.
        request: String,
        /// The Retry-After sent.
        retry_after: Duration,
    },
    /// A worker's breaker changed state.
    Transition {
        /// The worker.
        worker: usize,
        /// What changed, when and why.
        transition: Transition,
    },
    /// A verdict came from an older breaker generation and counted nowhere.
    Stale {
        /// The request id.
        request: String,
        /// The worker.
        worker: usize,
    },
    /// The verdict for one request, told to the worker's breaker.
    Verdict {
        /// The request id.
        request: String,
        /// The worker.
        worker: usize,
        /// The verdict and how much went through.
        outcome: Outcome,
        /// How it was reached.
        how: How,
    },
}

/// Why a gateway cannot be built.
#[derive(Debug, thiserror::Error)]
pub(crate) enum GatewayError {
    /// There is no worker to forward to.
    #[error("no upstream worker given")]
    NoWorkers,
    /// The breaker settings are unusable.
    #[error("invalid breaker settings: {0}")]
    Config(#[from] ConfigError),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// One worker and its breaker.
struct Upstream {
    spec: WorkerSpec,
    breaker: SharedBreaker,
}

/// What the handlers share.
struct Inner {
    workers: Vec<Upstream>,
    next: AtomicUsize,
    next_id: AtomicUsize,
    client: reqwest::Client,
    policy: StatusPolicy,
    metrics: Metrics,
    events: Option<UnboundedSender<Event>>,
}

/// The gateway: cheap to clone, every clone the same gateway.
#[derive(Clone)]
pub(crate) struct Gateway {
    inner: Arc<Inner>,
}

impl fmt::Debug for Gateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gateway")
            .field("workers", &self.names())
            .field("states", &self.states())
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// A gateway in front of `workers`, one breaker each with `config`, reading time
    /// from (a clone of) `clock`; what it does goes to `events` when given.
    pub(crate) fn new<C: Clock + Clone>(
        workers: Vec<WorkerSpec>,
        config: Config,
        clock: C,
        events: Option<UnboundedSender<Event>>,
    ) -> Result<Self, GatewayError> {
        if workers.is_empty() {
            return Err(GatewayError::NoWorkers);
        }
        let mut upstreams = Vec::with_capacity(workers.len());
        for spec in workers {
            let breaker = SharedBreaker::try_with_clock(config, clock.clone())?;
            upstreams.push(Upstream { spec, breaker });
        }
        let names: Vec<String> = upstreams.iter().map(|u| u.spec.name.clone()).collect();
        let client = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            .build()?;
        Ok(Self {
            inner: Arc::new(Inner {
                workers: upstreams,
                next: AtomicUsize::new(0),
                next_id: AtomicUsize::new(0),
                client,
                policy: StatusPolicy::default(),
                metrics: Metrics::new(&names),
                events,
            }),
        })
    }

    /// The routes: the two OpenAI endpoints and `GET /metrics`.
    pub(crate) fn router(&self) -> Router {
        Router::new()
            .route("/v1/chat/completions", post(proxy))
            .route("/v1/completions", post(proxy))
            .route("/metrics", get(scrape))
            .with_state(self.inner.clone())
    }

    /// Applies what time alone changes to every breaker (Open to HalfOpen once the
    /// open duration has passed) and logs the transitions. Without it the change
    /// happens anyway, lazily, at the next request that asks the breaker.
    pub(crate) fn tick(&self) {
        for (worker, upstream) in self.inner.workers.iter().enumerate() {
            if let Some(t) = upstream.breaker.handle_timeout() {
                self.inner.transition(worker, t);
            }
        }
    }

    /// The workers' names, in order.
    pub(crate) fn names(&self) -> Vec<String> {
        self.inner
            .workers
            .iter()
            .map(|u| u.spec.name.clone())
            .collect()
    }

    /// Each worker's breaker state now.
    pub(crate) fn states(&self) -> Vec<State> {
        self.inner.states()
    }
}

impl Inner {
    fn emit(&self, event: Event) {
        if let Some(events) = &self.events {
            let _ = events.send(event);
        }
    }

    fn states(&self) -> Vec<State> {
        self.workers.iter().map(|u| u.breaker.state()).collect()
    }

    fn transition(&self, worker: usize, transition: Transition) {
        self.metrics.transition(worker, &transition);
        self.emit(Event::Transition { worker, transition });
    }

    /// A permit from the first worker, round-robin, whose breaker admits the call;
    /// or how long until one may (the shortest known wait, at least a second).
    fn admit(&self, request: &str) -> Result<(usize, OwnedSharedPermit), Duration> {
        let n = self.workers.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let mut wait: Option<Duration> = None;
        for i in 0..n {
            let worker = (start + i) % n;
            match self.workers[worker].breaker.try_acquire_owned() {
                Ok(permit) => {
                    if let Some(t) = permit.transition() {
                        self.transition(worker, t);
                    }
                    self.emit(Event::Routed {
                        request: request.to_owned(),
                        worker,
                        probe: permit.is_probe(),
                    });
                    return Ok((worker, permit));
                }
                Err(rejected) => {
                    self.emit(Event::Skipped {
                        request: request.to_owned(),
                        worker,
                        retry_after: rejected.retry_after,
                    });
                    if let Some(after) = rejected.retry_after {
                        wait = Some(wait.map_or(after, |w| w.min(after)));
                    }
                }
            }
        }
        Err(wait.unwrap_or_default().max(Duration::from_secs(1)))
    }
}

/// The recorder of one request: holds the worker's permit until the verdict is in,
/// then reports it and logs what the breaker did. Dropped unrecorded (the handler
/// was dropped because the client left before the stream started) it records
/// `Abandoned`.
struct Ticket {
    gw: Arc<Inner>,
    request: String,
    worker: usize,
    permit: Option<OwnedSharedPermit>,
}

impl Ticket {
    fn settle(&mut self, outcome: Outcome, how: How) {
        let Some(permit) = self.permit.take() else {
            return;
        };
        match permit.report(outcome.verdict) {
            Recorded::Counted(Some(t)) => self.gw.transition(self.worker, t),
            Recorded::Stale => self.gw.emit(Event::Stale {
                request: self.request.clone(),
                worker: self.worker,
            }),
            _ => {}
        }
        self.gw
            .metrics
            .verdict(self.worker, outcome, how.cancelled(outcome.verdict));
        self.gw.emit(Event::Verdict {
            request: self.request.clone(),
            worker: self.worker,
            outcome,
            how,
        });
    }
}

impl Recorder for Ticket {
    fn record(mut self, outcome: Outcome) {
        self.settle(outcome, How::Stream);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let left = Outcome::new(Verdict::Abandoned, Cause::ClientLeft, 0, 0);
        self.settle(left, How::ClientLeft);
    }
}

/// An OpenAI-style JSON error.
pub(crate) fn json_error(status: StatusCode, kind: &str, message: &str) -> Response {
    let body = serde_json::json!({
        "error": {"message": message, "type": kind, "code": status.as_u16()}
    });
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Whether the request body asks for a stream (`"stream": true`).
fn wants_stream(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("stream").and_then(serde_json::Value::as_bool))
        .unwrap_or(false)
}

/// The headers passed on to the worker.
const PASSED: [header::HeaderName; 3] =
    [header::CONTENT_TYPE, header::AUTHORIZATION, header::ACCEPT];

async fn proxy(
    AxumState(gw): AxumState<Arc<Inner>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = match headers.get(REQUEST_ID).and_then(|v| v.to_str().ok()) {
        Some(id) => id.to_owned(),
        None => format!("gw-{}", gw.next_id.fetch_add(1, Ordering::Relaxed)),
    };
    let (worker, permit) = match gw.admit(&request) {
        Ok(admitted) => admitted,
        Err(wait) => {
            gw.metrics.unavailable();
            gw.emit(Event::Unavailable {
                request,
                retry_after: wait,
            });
            let mut response = json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "no worker is admitted: every worker's circuit breaker is open",
            );
            // Whole seconds, rounded up: a client that waits that long finds a probe slot.
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            return response;
        }
    };
    let mut ticket = Ticket {
        gw: gw.clone(),
        request: request.clone(),
        worker,
        permit: Some(permit),
    };
    let upstream = &gw.workers[worker].spec;
    let streaming = wants_stream(&body);
    let url = format!("{}{}", upstream.base.trim_end_matches('/'), uri.path());
    let mut call = gw.client.post(&url).header(REQUEST_ID, &request).body(body);
    for name in PASSED {
        if let Some(value) = headers.get(&name) {
            call = call.header(name, value);
        }
    }
    // If the client leaves here, hyper drops this future: the request is cancelled
    // and `ticket` records Abandoned from its Drop.
    let response = match call.send().await {
        Ok(response) => response,
        Err(err) => {
            let failed = Outcome::new(gw.policy.classify_send_failure(), Cause::SendFailed, 0, 0);
            ticket.settle(failed, How::SendFailed);
            let message = format!("upstream {} ({url}) is unreachable: {err}", upstream.name);
            return json_error(StatusCode::BAD_GATEWAY, "bad_gateway", &message);
        }
    };
    let status = response.status();
    let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
    if let Classified::Settle(verdict) = gw.policy.classify(status.as_u16()) {
        let settled = Outcome::new(verdict, Cause::Status, 0, 0);
        ticket.settle(settled, How::Status(status.as_u16()));
        // Pass the worker's answer on (a 400 explains what was wrong with the request).
        let text = response.bytes().await.unwrap_or_default();
        let mut out = (status, text).into_response();
        if let Some(ct) = content_type {
            out.headers_mut().insert(header::CONTENT_TYPE, ct);
        }
        return out;
    }
    let is_sse = content_type
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("text/event-stream"));
    if streaming && !is_sse {
        // Not what a streaming request asks for: the start of the response decides.
        ticket.settle(
            Outcome::new(Verdict::Failure, Cause::Status, 0, 0),
            How::NotSse,
        );
        let got = content_type
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .unwrap_or("no content type");
        let message = format!(
            "upstream {} answered a streaming request with `{got}`, not an event stream",
            upstream.name
        );
        return json_error(StatusCode::BAD_GATEWAY, "bad_gateway", &message);
    }
    let tracked = TrackedStream::new(response.bytes_stream(), ticket);
    let tracked = if streaming {
        tracked.with_sse(SseRules::openai_chat())
    } else {
        tracked
    };
    let mut out = Response::new(Body::from_stream(tracked));
    *out.status_mut() = status;
    if let Some(ct) = content_type {
        out.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    if streaming {
        out.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    out
}

async fn scrape(AxumState(gw): AxumState<Arc<Inner>>) -> Response {
    match gw.metrics.render(&gw.states()) {
        Ok(text) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response(),
        Err(_) => json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "cannot encode the metrics",
        ),
    }
}
