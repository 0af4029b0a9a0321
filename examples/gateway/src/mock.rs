//! A mock inference worker pool: servers on 127.0.0.1 that speak the OpenAI Chat
//! Completions (`POST /v1/chat/completions`, `/v1/completions`), Anthropic Messages
//! (`/v1/messages`) and OpenAI Responses (`/v1/responses`) stream formats, stream
//! one SSE token per `pace`, and log, per request id (the `x-request-id` header), how
//! many tokens they produced and when the response was dropped (the upstream
//! connection closing, as an engine sees it when it aborts generation).
//!
//! The request body says what to do, beside the usual `max_tokens` (how many tokens,
//! default 6) and `stream` (SSE or one JSON answer):
//! `mock_hold_prefill: true` sends the headers and then never a token (a long prefill);
//! `mock_plain: true` answers a streaming request with JSON, not an event stream;
//! `mock_status: 500` answers with that status; `mock_pace_ms: 50` sets the time
//! between two tokens; `mock_error_event: true` sends the API's in-band error event
//! after two tokens (and, for the chat format, `[DONE]` after it, as vLLM does);
//! `mock_cut: true` ends the body cleanly after two tokens, without the done event;
//! `mock_hold_headers: true` never answers (a mock SGLang generates all the same).
//! A worker set [`failing`](MockWorker::set_failing) answers 200, streams two tokens
//! and then breaks the connection mid-stream; one given a
//! [`status`](MockWorker::set_status) answers every request with it. `GET /health`
//! answers 200, or 503 once the worker is set
//! [`unhealthy`](MockWorker::set_healthy).
//!
//! A worker started with [`MockWorker::start_sglang`] behaves as SGLang does when it
//! fails to notice a disconnect: each request's generation runs in a task of its
//! own that goes on after the client's connection closed, until it reaches
//! `max_tokens` or `POST /abort_request {"rid": ...}` names the request's `rid` (from
//! its JSON body). [`RequestProgress::aborts`] counts the aborts per request.

use std::collections::{HashMap, VecDeque};
use std::future::pending;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::stream;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// How many tokens a failing worker streams before it breaks the connection.
pub const TOKENS_BEFORE_FAILING: u64 = 2;

/// What a worker did for one request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestProgress {
    /// The request reached the handler.
    pub arrived: bool,
    /// Tokens produced so far.
    pub tokens: u64,
    /// The body stream ended by itself (after `[DONE]`, or the mid-stream break).
    pub finished: bool,
    /// The handler or its body stream was dropped: the connection is gone.
    pub dropped: bool,
    /// `POST /abort_request` calls that named this request's `rid`.
    pub aborts: u32,
    /// The generation stopped because it was aborted (SGLang mode).
    pub aborted: bool,
}

/// One worker's shared state.
#[derive(Debug, Default)]
struct WorkerState {
    /// Break every stream after [`TOKENS_BEFORE_FAILING`] tokens.
    failing: AtomicBool,
    /// The time between two tokens.
    pace: Duration,
    /// Answer every request with this status.
    status: Mutex<Option<u16>>,
    /// Generate in a task of its own, until done or aborted by rid.
    sglang: bool,
    /// What happened per request id.
    log: Mutex<HashMap<String, watch::Sender<RequestProgress>>>,
    /// Request id per rid (SGLang mode).
    rids: Mutex<HashMap<String, String>>,
    /// Aborts that named no known rid.
    unknown_aborts: AtomicU32,
    /// `GET /health` answers 503.
    unhealthy: AtomicBool,
}

impl WorkerState {
    fn progress(&self, id: &str) -> watch::Sender<RequestProgress> {
        let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        log.entry(id.to_owned())
            .or_insert_with(|| watch::channel(RequestProgress::default()).0)
            .clone()
    }
}

/// One mock worker, serving until dropped.
#[derive(Debug)]
pub struct MockWorker {
    /// Its name in the timeline.
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<WorkerState>,
    task: JoinHandle<()>,
}

impl Drop for MockWorker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MockWorker {
    /// Starts a worker on a free port of 127.0.0.1, one token per `pace`.
    pub async fn start(name: &str, pace: Duration) -> std::io::Result<Self> {
        Self::start_with(name, pace, false).await
    }

    /// Starts a mock SGLang: generation goes on after a disconnect, until
    /// `POST /abort_request` names the request's `rid` (or `max_tokens` is reached).
    pub async fn start_sglang(name: &str, pace: Duration) -> std::io::Result<Self> {
        Self::start_with(name, pace, true).await
    }

    async fn start_with(name: &str, pace: Duration, sglang: bool) -> std::io::Result<Self> {
        let state = Arc::new(WorkerState {
            pace,
            sglang,
            ..WorkerState::default()
        });
        let router = Router::new()
            .route("/v1/chat/completions", post(handle))
            .route("/v1/completions", post(handle))
            .route("/v1/messages", post(handle))
            .route("/v1/responses", post(handle))
            .route("/abort_request", post(abort))
            .route("/health", get(health))
            .with_state(state.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            // Only an accept loop error ends it; the demo notices through its requests.
            let _ = axum::serve(listener, router).await;
        });
        Ok(Self {
            name: name.to_owned(),
            addr,
            state,
            task,
        })
    }

    /// The base URL a gateway forwards to.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// From now on, break every stream mid-way (`true`) or serve well (`false`).
    pub fn set_failing(&self, failing: bool) {
        self.state.failing.store(failing, Ordering::SeqCst);
    }

    /// From now on, answer every request with `status` (`None`: serve).
    pub fn set_status(&self, status: Option<u16>) {
        *self
            .state
            .status
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = status;
    }

    /// From now on, `GET /health` answers 200 (`true`) or 503 (`false`).
    pub fn set_healthy(&self, healthy: bool) {
        self.state.unhealthy.store(!healthy, Ordering::SeqCst);
    }

    /// `POST /abort_request` calls that named no request this worker knows.
    pub fn unknown_aborts(&self) -> u32 {
        self.state.unknown_aborts.load(Ordering::SeqCst)
    }

    /// The `rid` request `id` arrived with (SGLang mode), if any.
    pub fn rid_of(&self, id: &str) -> Option<String> {
        let rids = self
            .state
            .rids
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        rids.iter().find(|(_, v)| *v == id).map(|(k, _)| k.clone())
    }

    /// Watches what this worker does for request `id` (also before it arrives).
    pub fn progress(&self, id: &str) -> watch::Receiver<RequestProgress> {
        self.state.progress(id).subscribe()
    }
}

/// The mock pool: three workers, `bravo` the flaky one.
#[derive(Debug)]
pub struct Pool {
    /// `alpha`, `bravo`, `charlie`.
    pub workers: Vec<MockWorker>,
}

impl Pool {
    /// The index of the flaky worker.
    pub const FLAKY: usize = 1;

    /// Starts the three workers.
    pub async fn start(pace: Duration) -> std::io::Result<Self> {
        let mut workers = Vec::new();
        for name in ["alpha", "bravo", "charlie"] {
            workers.push(MockWorker::start(name, pace).await?);
        }
        Ok(Self { workers })
    }
}

/// Marks the request dropped when the handler or its body stream goes away.
struct DropMarker(watch::Sender<RequestProgress>);

impl Drop for DropMarker {
    fn drop(&mut self) {
        self.0.send_modify(|p| p.dropped = true);
    }
}

/// What the request body asks for.
#[derive(Debug, Clone)]
struct Ask {
    tokens: u64,
    stream: bool,
    hold_prefill: bool,
    plain: bool,
    status: Option<u16>,
    pace: Option<Duration>,
    error_event: bool,
    cut: bool,
    hold_headers: bool,
    rid: Option<String>,
}

impl Ask {
    fn parse(body: &[u8]) -> Self {
        let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        let flag = |key: &str| v.get(key).and_then(serde_json::Value::as_bool) == Some(true);
        Self {
            tokens: v
                .get("max_tokens")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(6),
            stream: flag("stream"),
            hold_prefill: flag("mock_hold_prefill"),
            plain: flag("mock_plain"),
            status: v
                .get("mock_status")
                .and_then(serde_json::Value::as_u64)
                .and_then(|s| u16::try_from(s).ok()),
            pace: v
                .get("mock_pace_ms")
                .and_then(serde_json::Value::as_u64)
                .map(Duration::from_millis),
            error_event: flag("mock_error_event"),
            cut: flag("mock_cut"),
            hold_headers: flag("mock_hold_headers"),
            rid: v
                .get("rid")
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned),
        }
    }
}

/// The stream format of a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// OpenAI Chat Completions (and legacy completions).
    Chat,
    /// Anthropic Messages.
    Messages,
    /// OpenAI Responses.
    Responses,
}

impl Format {
    fn of(path: &str) -> Self {
        match path {
            "/v1/messages" => Self::Messages,
            "/v1/responses" => Self::Responses,
            _ => Self::Chat,
        }
    }

    /// The event carrying token `n`.
    fn token(self, n: u64) -> Bytes {
        Bytes::from(match self {
            Self::Chat => format!(
                "data: {{\"object\":\"chat.completion.chunk\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"tok{n} \"}}}}]}}\n\n"
            ),
            Self::Messages => format!(
                "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"tok{n} \"}}}}\n\n"
            ),
            Self::Responses => format!(
                "event: response.output_text.delta\ndata: {{\"type\":\"response.output_text.delta\",\"delta\":\"tok{n} \"}}\n\n"
            ),
        })
    }

    /// The done event.
    fn done(self) -> Bytes {
        Bytes::from_static(match self {
            Self::Chat => b"data: [DONE]\n\n",
            Self::Messages => b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
            Self::Responses => {
                b"event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"status\":\"completed\"}}\n\n"
            }
        })
    }

    /// The in-band error, and what the engine sends after it.
    fn error_tail(self) -> VecDeque<Bytes> {
        match self {
            Self::Chat => VecDeque::from([
                Bytes::from_static(
                    b"data: {\"error\":{\"message\":\"mock engine error\",\"type\":\"server_error\"}}\n\n",
                ),
                self.done(),
            ]),
            Self::Messages => VecDeque::from([Bytes::from_static(
                b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"mock engine error\"}}\n\n",
            )]),
            Self::Responses => VecDeque::from([Bytes::from_static(
                b"event: error\ndata: {\"type\":\"error\",\"code\":\"server_error\",\"message\":\"mock engine error\"}\n\n",
            )]),
        }
    }

    /// A whole (non-streamed) answer.
    fn answer(self, text: &str) -> serde_json::Value {
        match self {
            Self::Chat => serde_json::json!({
                "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}],
            }),
            Self::Messages => serde_json::json!({
                "type": "message",
                "role": "assistant",
                "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn",
            }),
            Self::Responses => serde_json::json!({
                "object": "response",
                "status": "completed",
                "output": [{"type": "message", "content": [{"type": "output_text", "text": text}]}],
            }),
        }
    }
}

/// Where a scripted stream is.
enum Phase {
    /// Sending tokens.
    Tokens,
    /// Sending these last events, then the end.
    Tail(VecDeque<Bytes>),
    /// Over: the next poll ends the body.
    Ended,
}

fn sse(body: Body) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn handle(
    State(state): State<Arc<WorkerState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    let format = Format::of(uri.path());
    let log = state.progress(&id);
    log.send_modify(|p| p.arrived = true);
    let guard = DropMarker(log);
    let ask = Ask::parse(&body);
    let forced = *state.status.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(status) = forced.or(ask.status) {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return (status, "mock worker says no").into_response();
    }
    if let (true, Some(rid)) = (state.sglang, &ask.rid) {
        let mut rids = state.rids.lock().unwrap_or_else(PoisonError::into_inner);
        rids.insert(rid.clone(), id.clone());
    }
    if !ask.stream || ask.plain {
        let text: Vec<String> = (0..ask.tokens).map(|n| format!("tok{n}")).collect();
        guard.0.send_modify(|p| {
            p.tokens = ask.tokens;
            p.finished = true;
        });
        let answer = format.answer(&text.join(" "));
        return (
            [(header::CONTENT_TYPE, "application/json")],
            answer.to_string(),
        )
            .into_response();
    }
    let pace = ask.pace.unwrap_or(state.pace);
    if ask.hold_headers {
        // Never answer; a mock SGLang generates all the same (its long prefill).
        let _generation = state
            .sglang
            .then(|| sglang_stream(format, &ask, pace, guard));
        return pending().await;
    }
    if state.sglang {
        return sse(sglang_stream(format, &ask, pace, guard));
    }
    let failing = state.failing.load(Ordering::SeqCst);
    let tokens = stream::unfold(
        (guard, 0u64, Phase::Tokens),
        move |(guard, n, phase)| async move {
            match phase {
                Phase::Tokens => {}
                Phase::Tail(mut rest) => {
                    return match rest.pop_front() {
                        Some(event) => Some((Ok(event), (guard, n, Phase::Tail(rest)))),
                        None => {
                            guard.0.send_modify(|p| p.finished = true);
                            None
                        }
                    };
                }
                Phase::Ended => {
                    guard.0.send_modify(|p| p.finished = true);
                    return None;
                }
            }
            if n == 0 && ask.hold_prefill {
                pending::<()>().await;
            }
            if n > 0 {
                tokio::time::sleep(pace).await;
            }
            if failing && n == TOKENS_BEFORE_FAILING {
                // Pending once first, so that hyper flushes the tokens it holds: an
                // error polled in the same write loop would drop them unsent (under
                // load the pace's sleep is often over before the next poll).
                tokio::task::yield_now().await;
                let err = std::io::Error::other("mock worker broke mid-stream");
                return Some((Err(err), (guard, n, Phase::Ended)));
            }
            let mut tail = if ask.error_event && n == TOKENS_BEFORE_FAILING {
                Some(format.error_tail())
            } else if ask.cut && n == TOKENS_BEFORE_FAILING {
                Some(VecDeque::new())
            } else if n == ask.tokens {
                Some(VecDeque::from([format.done()]))
            } else {
                None
            };
            if let Some(rest) = tail.as_mut() {
                return match rest.pop_front() {
                    Some(event) => Some((
                        Ok::<_, std::io::Error>(event),
                        (guard, n, Phase::Tail(std::mem::take(rest))),
                    )),
                    None => {
                        guard.0.send_modify(|p| p.finished = true);
                        None
                    }
                };
            }
            guard.0.send_modify(|p| p.tokens += 1);
            Some((Ok(format.token(n)), (guard, n + 1, Phase::Tokens)))
        },
    );
    sse(Body::from_stream(tokens))
}

/// SGLang mode: the generation runs in a task of its own and goes on when the body
/// is dropped (the client's connection closed), until `max_tokens` or an abort.
fn sglang_stream(format: Format, ask: &Ask, pace: Duration, guard: DropMarker) -> Body {
    let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
    let log = guard.0.clone();
    let tokens = ask.tokens;
    tokio::spawn(async move {
        let mut aborts = log.subscribe();
        for n in 0..=tokens {
            if n > 0 {
                tokio::select! {
                    () = tokio::time::sleep(pace) => {}
                    // The `Ref` that `wait_for` returns holds the watch's read lock:
                    // drop it before `send_modify` below takes the write lock.
                    () = async { drop(aborts.wait_for(|p| p.aborts > 0).await) } => {
                        log.send_modify(|p| p.aborted = true);
                        return;
                    }
                }
            }
            if n == tokens {
                let _ = tx.send(format.done());
                log.send_modify(|p| p.finished = true);
                return;
            }
            log.send_modify(|p| p.tokens += 1);
            // A closed connection does not stop this engine: the zombie decodes on.
            let _ = tx.send(format.token(n));
        }
    });
    let events = stream::unfold((guard, rx), |(guard, mut rx)| async move {
        let event = rx.recv().await?;
        Some((Ok::<_, std::io::Error>(event), (guard, rx)))
    });
    Body::from_stream(events)
}

/// `GET /health`: 200, or 503 when set unhealthy.
async fn health(State(state): State<Arc<WorkerState>>) -> StatusCode {
    if state.unhealthy.load(Ordering::SeqCst) {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    }
}

/// `POST /abort_request {"rid": ...}`, as SGLang takes it.
async fn abort(State(state): State<Arc<WorkerState>>, body: Bytes) -> Response {
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let rid = v
        .get("rid")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("");
    let id = {
        let rids = state.rids.lock().unwrap_or_else(PoisonError::into_inner);
        rids.get(rid).cloned()
    };
    match id {
        Some(id) => state.progress(&id).send_modify(|p| p.aborts += 1),
        None => {
            state.unknown_aborts.fetch_add(1, Ordering::SeqCst);
        }
    }
    (
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"success":true}"#,
    )
        .into_response()
}
