//! A mock inference worker pool: OpenAI-style `POST /v1/chat/completions` and
//! `/v1/completions` servers on 127.0.0.1 that stream one SSE token per `pace`, and
//! log, per request id (the `x-request-id` header), how many tokens they produced
//! and when the response was dropped (the upstream connection closing, as an engine
//! sees it when it aborts generation).
//!
//! The request body says what to do, beside the usual `max_tokens` (how many tokens,
//! default 6) and `stream` (SSE or one JSON answer):
//! `mock_hold_prefill: true` sends the headers and then never a token (a long prefill);
//! `mock_plain: true` answers a streaming request with JSON, not an event stream;
//! `mock_status: 500` answers with that status; `mock_pace_ms: 50` sets the time
//! between two tokens. A worker set [`failing`](MockWorker::set_failing)
//! answers 200, streams two tokens and then breaks the connection mid-stream.

use std::collections::HashMap;
use std::future::pending;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures_util::stream;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How many tokens a failing worker streams before it breaks the connection.
pub(crate) const TOKENS_BEFORE_FAILING: u64 = 2;

/// What a worker did for one request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Progress {
    /// The request reached the handler.
    pub(crate) arrived: bool,
    /// Tokens produced so far.
    pub(crate) tokens: u64,
    /// The body stream ended by itself (after `[DONE]`, or the mid-stream break).
    pub(crate) finished: bool,
    /// The handler or its body stream was dropped: the connection is gone.
    pub(crate) dropped: bool,
}

/// One worker's shared state.
#[derive(Debug, Default)]
struct WorkerState {
    /// Break every stream after [`TOKENS_BEFORE_FAILING`] tokens.
    failing: AtomicBool,
    /// The time between two tokens.
    pace: Duration,
    /// What happened per request id.
    log: Mutex<HashMap<String, watch::Sender<Progress>>>,
}

impl WorkerState {
    fn progress(&self, id: &str) -> watch::Sender<Progress> {
        let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        log.entry(id.to_owned())
            .or_insert_with(|| watch::channel(Progress::default()).0)
            .clone()
    }
}

/// One mock worker, serving until dropped.
#[derive(Debug)]
pub(crate) struct MockWorker {
    /// Its name in the timeline.
    pub(crate) name: String,
    /// Where it listens.
    pub(crate) addr: SocketAddr,
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
    pub(crate) async fn start(name: &str, pace: Duration) -> std::io::Result<Self> {
        let state = Arc::new(WorkerState {
            pace,
            ..WorkerState::default()
        });
        let router = Router::new()
            .route("/v1/chat/completions", post(handle))
            .route("/v1/completions", post(handle))
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
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// From now on, break every stream mid-way (`true`) or serve well (`false`).
    pub(crate) fn set_failing(&self, failing: bool) {
        self.state.failing.store(failing, Ordering::SeqCst);
    }

    /// Watches what this worker does for request `id` (also before it arrives).
    pub(crate) fn progress(&self, id: &str) -> watch::Receiver<Progress> {
        self.state.progress(id).subscribe()
    }
}

/// The mock pool: three workers, `bravo` the flaky one.
#[derive(Debug)]
pub(crate) struct Pool {
    /// `alpha`, `bravo`, `charlie`.
    pub(crate) workers: Vec<MockWorker>,
}

impl Pool {
    /// The index of the flaky worker.
    pub(crate) const FLAKY: usize = 1;

    /// Starts the three workers.
    pub(crate) async fn start(pace: Duration) -> std::io::Result<Self> {
        let mut workers = Vec::new();
        for name in ["alpha", "bravo", "charlie"] {
            workers.push(MockWorker::start(name, pace).await?);
        }
        Ok(Self { workers })
    }
}

/// Marks the request dropped when the handler or its body stream goes away.
struct DropGuard(watch::Sender<Progress>);

impl Drop for DropGuard {
    fn drop(&mut self) {
        self.0.send_modify(|p| p.dropped = true);
    }
}

/// What the request body asks for.
#[derive(Debug, Clone, Copy)]
struct Ask {
    tokens: u64,
    stream: bool,
    hold_prefill: bool,
    plain: bool,
    status: Option<u16>,
    pace: Option<Duration>,
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
        }
    }
}

/// One OpenAI-style chunk carrying token `n`.
fn chunk(n: u64) -> Bytes {
    Bytes::from(format!(
        "data: {{\"object\":\"chat.completion.chunk\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"tok{n} \"}}}}]}}\n\n"
    ))
}

async fn handle(
    State(state): State<Arc<WorkerState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    let log = state.progress(&id);
    log.send_modify(|p| p.arrived = true);
    let guard = DropGuard(log);
    let ask = Ask::parse(&body);
    if let Some(status) = ask.status {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return (status, "mock worker says no").into_response();
    }
    if !ask.stream || ask.plain {
        let text: Vec<String> = (0..ask.tokens).map(|n| format!("tok{n}")).collect();
        guard.0.send_modify(|p| {
            p.tokens = ask.tokens;
            p.finished = true;
        });
        let answer = serde_json::json!({
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text.join(" ")}}],
        });
        return (
            [(header::CONTENT_TYPE, "application/json")],
            answer.to_string(),
        )
            .into_response();
    }
    let failing = state.failing.load(Ordering::SeqCst);
    let pace = ask.pace.unwrap_or(state.pace);
    let tokens = stream::unfold((guard, 0u64, false), move |(guard, n, ended)| async move {
        if ended {
            guard.0.send_modify(|p| p.finished = true);
            return None;
        }
        if n == 0 && ask.hold_prefill {
            pending::<()>().await;
        }
        if n > 0 {
            tokio::time::sleep(pace).await;
        }
        if failing && n == TOKENS_BEFORE_FAILING {
            let err = std::io::Error::other("mock worker broke mid-stream");
            return Some((Err(err), (guard, n, true)));
        }
        if n == ask.tokens {
            return Some((
                Ok(Bytes::from_static(b"data: [DONE]\n\n")),
                (guard, n, true),
            ));
        }
        guard.0.send_modify(|p| p.tokens += 1);
        Some((Ok(chunk(n)), (guard, n + 1, false)))
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(tokens),
    )
        .into_response()
}
