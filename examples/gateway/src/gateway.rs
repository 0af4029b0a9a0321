//! The gateway, built only from sluice's public API: axum in front, reqwest behind,
//! a [`SharedBreakerSet`] (one breaker per worker, a cap on how many are ejected at
//! once) choosing the worker.
//!
//! Per request ([`proxy`]): [`pick`](SharedBreakerSet::pick) a worker (round-robin
//! or least in flight, among those whose breaker admits the call), send the request
//! upstream (its body exactly as it came, but for an engine profile's `rid`), wait
//! for the response head at most the header timeout, classify it with the
//! [`StatusPolicy`] (a redirect is not followed: a 3xx is the worker's Failure and
//! the client's 502; another non-2xx is passed on with at most
//! [`ERROR_BODY_CAP`](proxy::ERROR_BODY_CAP) of its body), and hand a 2xx body to
//! the client as a [`TrackedStream`](sluice::TrackedStream) straight in
//! `Body::from_stream` (the direct-body path: no task, no channel). The rules come
//! from the response: a `text/event-stream` body gets the SSE rules of the route's
//! API ([`Api`]); any other body is tracked without rules. The [`SetPermit`] rides
//! inside a ticket, the stream's recorder, which [`report`](SetPermit::report)s the
//! verdict and logs what the breaker did with it (a transition, an ejection the cap
//! refused, a stale permit), counts it in the [`metrics`], and emits one `tracing`
//! event per verdict and per transition.
//!
//! Client-facing errors name a worker by its name only; the detail (reqwest's error
//! chain, which holds the URL) goes to the logs. [`health`] has the active health
//! checks, [`Gateway::end_streams`] the end of the shutdown grace.
//!
//! When the client leaves, hyper drops the body, which drops the upstream response
//! (closing the worker's connection, so the engine stops) and records `Abandoned`. A
//! client that leaves while the gateway still waits for the worker's headers drops
//! the handler future, and with it the upstream request and the ticket's
//! [`RecordGuard`](sluice::RecordGuard), which records `Abandoned`
//! (`client_left_before_head`). With an engine
//! profile that aborts explicitly ([`Engine`]), an abandoned request that reached the
//! engine is also aborted by id, from a spawned task.

mod body;
pub mod health;
pub mod pd;
pub mod proxy;
mod shutdown;
mod ticket;
mod traced;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State as AxumState;
use axum::http::{HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use sluice::Outcome;
use sluice::breaker::{
    Clock, Config, ConfigError, Pick, Reason, SetPermit, SharedBreakerSet, State, StatusPolicy,
    Transition,
};
use sluice::ndjson::NdjsonRules;
use sluice::retry::{RetryBudgetConfig, RetryBudgetConfigError, SharedRetryBudget};
use sluice::sse::SseRules;
use sluice::timers::Timeouts;
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::watch;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use tower_layer::Layer;

pub use self::health::HealthCheck;
use self::traced::{KeepBody, TakeBody};
use crate::engine::{self, ABORT_TIMEOUT, Engine, RidMinter};
use crate::metrics::{self, AbortResult, Metrics, Operation};

/// How long the gateway waits for a worker's response head, by default.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a worker may take from the start of its answer's body to its first
/// progress event, by default.
pub const DEFAULT_FIRST_TOKEN_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a worker may go without progress once it has made some, by default.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a worker's answer may take from the start of its body to its end, by
/// default.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(600);

/// The worker's progress timers a gateway runs by default: [`DEFAULT_FIRST_TOKEN_TIMEOUT`],
/// [`DEFAULT_IDLE_TIMEOUT`], [`DEFAULT_DEADLINE`].
pub const DEFAULT_TIMEOUTS: Timeouts = Timeouts::new()
    .first_token(DEFAULT_FIRST_TOKEN_TIMEOUT)
    .idle(DEFAULT_IDLE_TIMEOUT)
    .deadline(DEFAULT_DEADLINE);

/// The header that carries a request's id to the worker and back to the client (and
/// into the timeline).
pub const REQUEST_ID: &str = "x-request-id";

/// [`REQUEST_ID`] as a header name.
const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static(REQUEST_ID);

/// One worker the gateway forwards to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerSpec {
    /// Its name in the timeline, the logs and the metrics.
    pub name: String,
    /// Its base URL (`http://host:port`, optionally with a path prefix); the
    /// request's path is appended.
    pub base: String,
}

/// The APIs the gateway serves, by route; each has its SSE rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Api {
    /// `POST /v1/chat/completions` (OpenAI Chat Completions).
    Chat,
    /// `POST /v1/completions` (OpenAI legacy completions; same stream format).
    Completions,
    /// `POST /v1/messages` (Anthropic Messages).
    Messages,
    /// `POST /v1/responses` (OpenAI Responses).
    Responses,
    /// `POST /generate` (SGLang's native API; its stream ends with `data: [DONE]`).
    Generate,
    /// `POST /api/chat` (Ollama's native chat: newline-delimited JSON, see
    /// [`Api::ndjson_rules`]).
    OllamaChat,
    /// `POST /api/generate` (Ollama's native completion, the same framing).
    OllamaGenerate,
    /// `POST /v1beta/models/{model}:streamGenerateContent` (Gemini; with `?alt=sse`
    /// it streams Server-Sent Events, judged by [`SseRules::gemini`]).
    GeminiStream,
    /// `POST /v1beta/models/{model}:generateContent` (Gemini, not streamed).
    GeminiGenerate,
}

/// The route of both Gemini APIs: the model and the method are in the path's last
/// segment (`gemini-2.0-flash:streamGenerateContent`).
pub const GEMINI_ROUTE: &str = "/v1beta/models/{*call}";

impl Api {
    /// Every API, in route order.
    pub const ALL: [Self; 9] = [
        Self::Chat,
        Self::Completions,
        Self::Messages,
        Self::Responses,
        Self::Generate,
        Self::OllamaChat,
        Self::OllamaGenerate,
        Self::GeminiStream,
        Self::GeminiGenerate,
    ];

    /// Its route, as an axum path pattern (the Gemini APIs share
    /// [`GEMINI_ROUTE`]).
    pub const fn path(self) -> &'static str {
        match self {
            Self::Chat => "/v1/chat/completions",
            Self::Completions => "/v1/completions",
            Self::Messages => "/v1/messages",
            Self::Responses => "/v1/responses",
            Self::Generate => "/generate",
            Self::OllamaChat => "/api/chat",
            Self::OllamaGenerate => "/api/generate",
            Self::GeminiStream | Self::GeminiGenerate => GEMINI_ROUTE,
        }
    }

    /// The API of a request's path.
    pub fn from_path(path: &str) -> Option<Self> {
        if let Some(call) = path.strip_prefix("/v1beta/models/") {
            let (model, method) = call.rsplit_once(':')?;
            if model.is_empty() || model.contains('/') {
                return None;
            }
            return match method {
                "streamGenerateContent" => Some(Self::GeminiStream),
                "generateContent" => Some(Self::GeminiGenerate),
                _ => None,
            };
        }
        Self::ALL
            .into_iter()
            .find(|api| api.path() == path && api.path() != GEMINI_ROUTE)
    }

    /// Its GenAI operation, for the OpenTelemetry measures.
    pub const fn operation(self) -> Operation {
        match self {
            Self::Completions | Self::Generate | Self::OllamaGenerate => Operation::TextCompletion,
            Self::Chat
            | Self::Messages
            | Self::Responses
            | Self::OllamaChat
            | Self::GeminiStream
            | Self::GeminiGenerate => Operation::Chat,
        }
    }

    /// The SSE rules of its streams: each requires its done event, and has its API's
    /// failure event ([`SseRules::failure_event`]: OpenAI-style `data: {"error": ...}`
    /// and no `[DONE]`, Anthropic's `event: error`, the Responses API's
    /// `response.failed`), which a client gets when its stream fails after the head.
    pub fn rules(self) -> SseRules {
        match self {
            // Ollama's native API streams NDJSON; an SSE answer there is read as
            // the OpenAI-compatible one.
            Self::Chat
            | Self::Completions
            | Self::Generate
            | Self::OllamaChat
            | Self::OllamaGenerate => SseRules::openai_chat(),
            Self::Messages => SseRules::anthropic(),
            Self::Responses => SseRules::openai_responses(),
            Self::GeminiStream | Self::GeminiGenerate => SseRules::gemini(),
        }
    }

    /// The NDJSON rules of an `application/x-ndjson` answer (Ollama's native API:
    /// a `"done": true` line ends it, an `{"error": ...}` line fails it, a stream cut
    /// before the done line is truncated), whatever the route.
    pub const fn ndjson_rules(self) -> NdjsonRules {
        NdjsonRules::ollama()
    }
}

/// What the gateway did, in order, for the demo's timeline and the tests.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum GatewayEvent {
    /// A worker was out (its breaker open) when the request was routed.
    Skipped {
        /// The request id.
        request: String,
        /// The worker that was out.
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
    /// A worker's breaker changed state, or the ejection cap held it in (a
    /// transition from Closed to Closed, reason `EjectionCapped`).
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
        /// The verdict, its cause (what settled it: the stream's end, a status, the
        /// client leaving before the response head...) and how much went through.
        outcome: Outcome,
    },
    /// An explicit abort was sent to the engine (engine profile `sglang`).
    Abort {
        /// The request id.
        request: String,
        /// The worker.
        worker: usize,
        /// The id the engine knows the request by.
        rid: String,
        /// How it went: `ok`, `rejected` (a non-2xx answer), `failed`, `timeout`.
        result: &'static str,
    },
    /// A health check of `worker` ran ([`health`]).
    HealthCheck {
        /// The worker.
        worker: usize,
        /// It answered 2xx in time.
        passed: bool,
    },
}

/// Why a gateway cannot be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// There is no worker to forward to.
    #[error("no upstream worker given")]
    NoWorkers,
    /// The breaker settings are unusable.
    #[error("invalid breaker settings: {0}")]
    Config(#[from] ConfigError),
    /// The retry budget's settings are unusable.
    #[error("invalid retry budget: {0}")]
    RetryBudget(#[from] RetryBudgetConfigError),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// How the gateway routes and what it tells the engines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Every worker's breaker settings.
    pub config: Config,
    /// At most `max(1, floor(workers * percent / 100))` workers ejected at once.
    pub max_ejected_percent: u8,
    /// How a worker is chosen among those that admit the call.
    pub pick: Pick,
    /// The engine profile.
    pub engine: Engine,
    /// How long to wait for a worker's response head (status line and headers);
    /// past it the request is the worker's Failure (cause `header_timeout`) and the
    /// client gets a 504.
    pub header_timeout: Duration,
    /// The worker's progress timers on every 2xx body, from its first poll: first
    /// token, idle between tokens, and a deadline (with SSE rules they count
    /// progress events, keep-alives excluded; without, chunks). An expiry is the
    /// worker's Failure with the timer's cause; the client gets the route's error
    /// event (a body without SSE rules is cut).
    pub timeouts: Timeouts,
    /// Attempts after the first, each on a worker the request has not tried, when
    /// an attempt fails before its commit (a connect error, a 5xx, a 429 or 503, a
    /// redirect, a timeout to the head or the first token, an error event or a cut
    /// before the first token). Never after the commit, never on another 4xx. With
    /// none and no hedging, a stream is not held back: its head goes to the client
    /// with the worker's.
    pub retries: u32,
    /// What retries and hedges may add to the requests ([`SharedRetryBudget`]).
    pub retry_budget: RetryBudgetConfig,
    /// Start one more attempt on another worker when the first has made no
    /// progress after this long; the first to commit is the answer, the other is
    /// dropped (Abandoned, `hedge_lost`). `None`: no hedging.
    pub hedge_after: Option<Duration>,
}

impl Options {
    /// `config`, the set's default cap, round-robin, the generic engine profile,
    /// [`DEFAULT_HEADER_TIMEOUT`], [`DEFAULT_TIMEOUTS`].
    pub fn new(config: Config) -> Self {
        Self {
            config,
            max_ejected_percent: sluice::breaker::DEFAULT_MAX_EJECTED_PERCENT,
            pick: Pick::RoundRobin,
            engine: Engine::Generic,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            timeouts: DEFAULT_TIMEOUTS,
            retries: 0,
            retry_budget: RetryBudgetConfig::new(),
            hedge_after: None,
        }
    }
}

/// What the handlers share.
struct Inner {
    workers: Vec<WorkerSpec>,
    /// The workers' names, shared by every stream's failure event.
    names: Vec<Arc<str>>,
    set: SharedBreakerSet,
    pick: Pick,
    engine: Engine,
    rids: RidMinter,
    /// The workers' client: idle connections kept for up to `UPSTREAM_IDLE`.
    client: reqwest::Client,
    /// The same, keeping no idle connection: a request sent again after a kept
    /// connection was closed under it goes out on a new one ([`Inner::send`]).
    fresh: reqwest::Client,
    policy: StatusPolicy,
    metrics: Metrics,
    events: Option<UnboundedSender<GatewayEvent>>,
    header_timeout: Duration,
    timeouts: Timeouts,
    retries: u32,
    budget: SharedRetryBudget,
    hedge_after: Option<Duration>,
    /// True once the shutdown grace is over: every tracked body ends.
    shutdown: watch::Sender<bool>,
    /// PD mode's two pools ([`pd`]): then `workers` are the prefill workers and the
    /// decode workers, in that order, and `set` is the decode pool.
    pd: Option<pd::Pools>,
}

/// The gateway: cheap to clone, every clone the same gateway.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

impl fmt::Debug for Gateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gateway")
            .field("workers", &self.names())
            .field("states", &self.states())
            .field("set", &self.inner.set)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// A gateway in front of `workers`: one breaker each in a [`SharedBreakerSet`]
    /// with `options`, and a retry budget, both reading time from `clock`; what it
    /// does goes to `events` when given.
    pub fn new(
        workers: Vec<WorkerSpec>,
        options: Options,
        clock: impl Clock + Clone,
        events: Option<UnboundedSender<GatewayEvent>>,
    ) -> Result<Self, GatewayError> {
        if workers.is_empty() {
            return Err(GatewayError::NoWorkers);
        }
        let budget = SharedRetryBudget::try_with_clock(options.retry_budget, clock.clone())?;
        let set = SharedBreakerSet::try_with_clock(workers.len(), options.config, clock)?
            .with_max_ejected_percent(options.max_ejected_percent);
        let names: Vec<String> = workers.iter().map(|w| w.name.clone()).collect();
        let client = upstream_client(Some(UPSTREAM_IDLE))?;
        let fresh = upstream_client(None)?;
        Ok(Self {
            inner: Arc::new(Inner {
                names: names.iter().map(|name| Arc::from(name.as_str())).collect(),
                workers,
                set,
                pick: options.pick,
                engine: options.engine,
                rids: RidMinter::new(),
                client,
                fresh,
                policy: StatusPolicy::default(),
                metrics: Metrics::new(&names),
                events,
                header_timeout: options.header_timeout,
                timeouts: options.timeouts,
                retries: options.retries,
                budget,
                hedge_after: options.hedge_after,
                shutdown: watch::channel(false).0,
                pd: None,
            }),
        })
    }

    /// The routes: the four model APIs ([`Api`]) and `GET /metrics`.
    ///
    /// Every request has an id in `x-request-id` (`tower-http`'s request-id layers):
    /// the client's, kept as it came, or a random UUID (v4) the gateway makes; it
    /// goes to the worker and back to the client in the response. Each request runs
    /// in a `request` span (`tower-http`'s `TraceLayer`) with fields `request_id`,
    /// `route` and, once one is picked, `worker`; its verdict is logged inside it.
    /// The response body is not polled inside the span: it goes around the trace
    /// layer, so that a streamed token costs no clock read there.
    pub fn router(&self) -> Router {
        let mut router = Router::new();
        let mut routes: Vec<&str> = Vec::new();
        for api in Api::ALL {
            if !routes.contains(&api.path()) {
                routes.push(api.path());
                router = router.route(api.path(), post(proxy::proxy));
            }
        }
        let trace = TraceLayer::new_for_http().make_span_with(request_span);
        // The outermost runs first: the id is set, then the span opened, then the id
        // copied to the response.
        let router = router
            .route("/metrics", get(scrape))
            .with_state(self.inner.clone());
        // Around the whole router once, not around each route (`Router::layer`
        // would: axum clones every route's stack for each connection). The response
        // body goes around the trace layer, not through it (`traced`): the span
        // covers the handling and the verdict, not each chunk.
        let inner = KeepBody(PropagateRequestIdLayer::new(REQUEST_ID_HEADER).layer(router));
        let service = SetRequestIdLayer::new(REQUEST_ID_HEADER, MakeRequestUuid)
            .layer(TakeBody(trace.layer(inner)));
        Router::new().fallback_service(service)
    }

    /// Applies what time alone changes to every breaker (Open to HalfOpen once the
    /// open duration has passed) and logs the transitions. Without it the change
    /// happens anyway, lazily, at the next request that asks the breaker.
    pub fn tick(&self) {
        if let Some(pools) = &self.inner.pd {
            for (worker, t) in pools.handle_timeouts() {
                self.inner.transition(worker, t);
            }
            return;
        }
        for worker in 0..self.inner.set.len() {
            if let Some(t) = self.inner.set.handle_timeout(worker) {
                self.inner.transition(worker, t);
            }
        }
    }

    /// The workers' names, in order.
    pub fn names(&self) -> Vec<String> {
        self.inner.workers.iter().map(|w| w.name.clone()).collect()
    }

    /// Each worker's breaker state now.
    pub fn states(&self) -> Vec<State> {
        self.inner.states()
    }

    /// The breaker set (to read its cap and how many workers are ejected).
    pub fn set(&self) -> &SharedBreakerSet {
        &self.inner.set
    }

    /// The metrics as `GET /metrics` renders them (also after the server stopped).
    pub fn metrics_text(&self) -> Result<String, fmt::Error> {
        self.inner.render_metrics()
    }

    /// The shutdown grace is over: every stream in flight ends now (Abandoned, cause
    /// `shutdown`, unless it already ended: its verdict stands), its upstream is
    /// closed and its client sees a cut body; a request still waiting for its
    /// worker's head is given up the same way (503), and new requests get a 503.
    /// Returns how many requests were in flight.
    pub fn end_streams(&self) -> usize {
        let in_flight = match &self.inner.pd {
            Some(pools) => pools.in_flight(),
            None => (0..self.inner.set.len())
                .map(|w| self.inner.set.in_flight(w))
                .sum(),
        };
        self.inner.shutdown.send_replace(true);
        in_flight
    }
}

impl Inner {
    /// Whether the shutdown grace is over.
    fn grace_is_over(&self) -> bool {
        *self.shutdown.borrow()
    }

    fn render_metrics(&self) -> Result<String, fmt::Error> {
        let (ejected, max_ejected) = match &self.pd {
            Some(pools) => pools.ejected(),
            None => (self.set.ejected(), self.set.max_ejected()),
        };
        self.metrics.render(&self.states(), ejected, max_ejected)
    }

    fn emit(&self, event: GatewayEvent) {
        if let Some(events) = &self.events {
            let _ = events.send(event);
        }
    }

    fn name(&self, worker: usize) -> &str {
        self.workers.get(worker).map_or("?", |w| w.name.as_str())
    }

    /// Sends `request` (made with `client`) to a worker; if the kept-alive connection
    /// it went out on turned out closed before any byte of the answer came, sends it
    /// once more, on a new connection (`fresh`).
    ///
    /// A worker may close an idle connection just as the gateway writes the next
    /// request to it: llama-server closes every connection right after a streamed
    /// answer, and an idle timeout can close one too. That request never reached the
    /// worker's handler, and is not the worker's failure. A worker that closes the new
    /// connection without an answer fails the second send the same way, and that one
    /// is its Failure.
    pub(crate) async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> reqwest::Result<reqwest::Response> {
        let again = request.try_clone();
        self.resend(request, move || again).await
    }

    /// [`send`](Self::send), the second request made by `again` only if it is needed.
    pub(crate) async fn resend(
        &self,
        request: reqwest::RequestBuilder,
        again: impl FnOnce() -> Option<reqwest::RequestBuilder>,
    ) -> reqwest::Result<reqwest::Response> {
        match request.send().await {
            Err(err) if closed_under(&err) => match again().map(reqwest::RequestBuilder::build) {
                Some(Ok(again)) => {
                    tracing::debug!(
                        error = error_chain(&err),
                        "the worker closed a kept-alive connection under the request: sent again"
                    );
                    self.fresh.execute(again).await
                }
                _ => Err(err),
            },
            sent => sent,
        }
    }

    /// [`name`](Self::name), shared.
    fn shared_name(&self, worker: usize) -> Arc<str> {
        self.names
            .get(worker)
            .map_or_else(|| Arc::from("?"), Arc::clone)
    }

    fn states(&self) -> Vec<State> {
        if let Some(pools) = &self.pd {
            return pools.states();
        }
        (0..self.set.len()).map(|w| self.set.state(w)).collect()
    }

    fn transition(&self, worker: usize, t: Transition) {
        self.metrics.transition(worker, &t);
        let (from, to, reason) = (t.from.as_str(), t.to.as_str(), t.reason.as_str());
        let at_ms = t.at.as_millis() as u64;
        let worker_name = self.name(worker);
        if matches!(t.to, State::Open { .. }) || t.reason == Reason::EjectionCapped {
            tracing::warn!(
                worker = worker_name,
                from,
                to,
                reason,
                at_ms,
                "breaker transition"
            );
        } else {
            tracing::info!(
                worker = worker_name,
                from,
                to,
                reason,
                at_ms,
                "breaker transition"
            );
        }
        self.emit(GatewayEvent::Transition {
            worker,
            transition: t,
        });
    }

    /// The workers that are out now (Open or forced open), but `except`.
    fn skipped(&self, request: &str, except: Option<usize>) {
        let now = self.set.now();
        for worker in (0..self.set.len()).filter(|w| Some(*w) != except) {
            let retry_after = match self.set.state(worker) {
                State::Open { until } => Some(until.saturating_sub(now)),
                State::ForcedOpen => None,
                _ => continue,
            };
            self.emit(GatewayEvent::Skipped {
                request: request.to_owned(),
                worker,
                retry_after,
            });
        }
    }

    /// A permit from the worker the set picks among those not `tried`; or how long
    /// until one may admit a call (the soonest known wait, at least a second).
    fn admit(&self, request: &str, tried: &[usize]) -> Result<SetPermit, Duration> {
        match self.set.pick_excluding(self.pick, tried) {
            Ok(permit) => {
                let worker = permit.worker();
                if let Some(t) = permit.transition() {
                    self.transition(worker, t);
                }
                if self.events.is_some() {
                    self.skipped(request, Some(worker));
                }
                self.emit(GatewayEvent::Routed {
                    request: request.to_owned(),
                    worker,
                    probe: permit.is_probe(),
                });
                Ok(permit)
            }
            Err(rejected) => {
                if self.events.is_some() {
                    self.skipped(request, None);
                }
                Err(rejected
                    .retry_after
                    .unwrap_or_default()
                    .max(Duration::from_secs(1)))
            }
        }
    }

    /// Sends the explicit abort for `rid` to `worker`, from a task of its own
    /// bounded by [`ABORT_TIMEOUT`]; counts and logs how it went. Never touches the
    /// breaker.
    fn abort(self: &Arc<Self>, request: String, worker: usize, rid: String) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.aborted(request, worker, rid, AbortResult::Failed);
            return;
        };
        let url = format!(
            "{}{}",
            self.workers[worker].base.trim_end_matches('/'),
            engine::SGLANG_ABORT_PATH
        );
        let call = self
            .client
            .post(url)
            .header(header::CONTENT_TYPE, "application/json")
            .body(serde_json::json!({ "rid": rid }).to_string());
        let gw = Arc::clone(self);
        runtime.spawn(async move {
            let result = match tokio::time::timeout(ABORT_TIMEOUT, gw.send(call)).await {
                Ok(Ok(response)) if response.status().is_success() => AbortResult::Ok,
                Ok(Ok(_)) => AbortResult::Rejected,
                Ok(Err(_)) => AbortResult::Failed,
                Err(_) => AbortResult::Timeout,
            };
            gw.aborted(request, worker, rid, result);
        });
    }

    fn aborted(&self, request: String, worker: usize, rid: String, result: AbortResult) {
        self.metrics.abort(worker, result);
        let worker_name = self.name(worker);
        let result = result.as_str();
        if result == "ok" {
            tracing::info!(request, worker = worker_name, rid, result, "engine abort");
        } else {
            tracing::warn!(request, worker = worker_name, rid, result, "engine abort");
        }
        self.emit(GatewayEvent::Abort {
            request,
            worker,
            rid,
            result,
        });
    }
}

/// The span of one request: its id (set by then), its route, and the worker once
/// one is picked.
fn request_span<B>(request: &axum::http::Request<B>) -> tracing::Span {
    let id = request
        .headers()
        .get(REQUEST_ID)
        .map(|id| String::from_utf8_lossy(id.as_bytes()).into_owned());
    // The routes have no parameters: a path is its route.
    tracing::info_span!(
        "request",
        request_id = id.as_deref().unwrap_or("-"),
        method = %request.method(),
        route = request.uri().path(),
        worker = tracing::field::Empty,
    )
}

/// An OpenAI-style JSON error.
pub fn json_error(status: StatusCode, kind: &str, message: &str) -> Response {
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

/// An error and its sources, `: `-separated (reqwest's own message says little).
/// How long an idle connection to a worker is kept for the next request: under the 5 s
/// after which the common engine servers close one (uvicorn, in front of vLLM and
/// SGLang; cpp-httplib, in llama-server), so that the gateway seldom races a close.
const UPSTREAM_IDLE: Duration = Duration::from_secs(4);

/// A client to the workers: no proxy, redirects not followed (a 3xx is the worker's
/// Failure), a 5 s connect timeout; idle connections kept for `idle`, or none.
fn upstream_client(idle: Option<Duration>) -> reqwest::Result<reqwest::Client> {
    let builder = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5));
    match idle {
        Some(idle) => builder.pool_idle_timeout(idle),
        None => builder.pool_max_idle_per_host(0),
    }
    .build()
}

/// Whether `err` says the connection closed under the request, before the response
/// head: hyper's "connection closed before message completed", or a reset or broken
/// pipe on the socket.
fn closed_under(err: &reqwest::Error) -> bool {
    use std::error::Error;
    use std::io::ErrorKind;
    let mut source: Option<&(dyn Error + 'static)> = err.source();
    while let Some(err) = source {
        if let Some(err) = err.downcast_ref::<hyper::Error>() {
            if err.is_incomplete_message() {
                return true;
            }
        }
        if let Some(err) = err.downcast_ref::<std::io::Error>() {
            return matches!(
                err.kind(),
                ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::UnexpectedEof
            );
        }
        source = err.source();
    }
    false
}

pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

async fn scrape(AxumState(gw): AxumState<Arc<Inner>>) -> Response {
    match gw.render_metrics() {
        Ok(text) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response(),
        Err(_) => json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "cannot encode the metrics",
        ),
    }
}
