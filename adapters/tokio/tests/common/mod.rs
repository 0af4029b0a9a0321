//! The test rig: a mock inference worker and a gateway under test, both axum servers
//! on 127.0.0.1, with reqwest in between.
//!
//! The worker streams SSE tokens as its query string says (`tokens`, `pace_ms`,
//! `fail_after`, `stall_after`, `status`, `hold_headers`, `hold_prefill`,
//! `linger`) and records, per request id, what it produced and when its response
//! (the handler, then the body stream) was dropped: that is the upstream connection
//! closing as the worker sees it.
//!
//! The gateway has two routes: `/forward` (a task per request, `until_closed` around
//! the upstream request, then `sluice_tokio::forward_with` into an mpsc channel that
//! feeds the response body) and `/direct` (the `TrackedStream` is the response body).
//! Every request's verdict goes to one channel; every `/forward` task reports its
//! [`Forwarded`] (or `None` when it ended before forwarding) to another, after the
//! upstream was dropped.
#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::future::{Future, pending};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use futures_util::{StreamExt, stream};
use sluice::breaker::{Classified, StatusPolicy};
use sluice::forward::{ClientGone, ForwardOptions, Forwarded};
use sluice::sse::SseRules;
use sluice::{Outcome, Recorder, TrackedStream, Verdict};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;

/// How long a test waits for an effect before it fails.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Awaits `fut`, failing the test if it takes longer than [`DEADLINE`].
pub async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(DEADLINE, fut).await {
        Ok(out) => out,
        Err(_) => panic!("no {what} within {DEADLINE:?}"),
    }
}

/// Parses `a=1&b=2`.
fn params(query: Option<&str>) -> HashMap<String, String> {
    query
        .unwrap_or_default()
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (kv.to_owned(), String::new()),
        })
        .collect()
}

fn num(p: &HashMap<String, String>, key: &str) -> Option<u64> {
    p.get(key).and_then(|v| v.parse().ok())
}

// ---------------------------------------------------------------- the worker

/// What the worker did for one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// The request reached the handler.
    pub arrived: bool,
    /// The handler returned a streaming response.
    pub headers: bool,
    /// Tokens produced so far.
    pub tokens: u64,
    /// The body stream ended by itself (after `[DONE]`).
    pub finished: bool,
    /// The handler or the body stream was dropped.
    pub dropped: bool,
    /// When it was dropped.
    pub dropped_at: Option<Instant>,
}

#[derive(Default)]
struct Logs(Mutex<HashMap<u64, watch::Sender<Progress>>>);

impl Logs {
    fn get(&self, id: u64) -> watch::Sender<Progress> {
        let mut map = self.0.lock().expect("log lock");
        map.entry(id)
            .or_insert_with(|| watch::channel(Progress::default()).0)
            .clone()
    }
}

/// Marks the request dropped when the handler future or the body stream goes away.
struct DropGuard(watch::Sender<Progress>);

impl Drop for DropGuard {
    fn drop(&mut self) {
        let now = Instant::now();
        self.0.send_modify(|p| {
            p.dropped = true;
            p.dropped_at = Some(now);
        });
    }
}

/// A server on 127.0.0.1 that stops on [`Server::shutdown`].
pub struct Server {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Server {
    async fn start(router: Router) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
                .expect("serve");
        });
        Self {
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops accepting, waits for open connections to finish.
    pub async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            within("server shutdown", task).await.expect("server task");
        }
    }
}

/// The mock inference worker.
pub struct Worker {
    pub server: Server,
    logs: Arc<Logs>,
}

impl Worker {
    pub async fn start() -> Self {
        let logs = Arc::new(Logs::default());
        let router = Router::new()
            .route("/v1/stream", get(worker_handler))
            .with_state(logs.clone());
        Self {
            server: Server::start(router).await,
            logs,
        }
    }

    /// Watches what the worker does for request `id` (also before it arrives).
    pub fn progress(&self, id: u64) -> watch::Receiver<Progress> {
        self.logs.get(id).subscribe()
    }

    /// Waits until request `id` satisfies `pred`.
    pub async fn wait(&self, id: u64, what: &str, pred: impl FnMut(&Progress) -> bool) -> Progress {
        let mut rx = self.progress(id);
        let seen = within(what, rx.wait_for(pred)).await.expect("worker log");
        seen.clone()
    }
}

/// What the body stream does next.
enum Stage {
    Tokens,
    Linger,
    End,
}

struct WorkerBody {
    guard: DropGuard,
    p: HashMap<String, String>,
    next: u64,
    stage: Stage,
}

async fn worker_handler(State(logs): State<Arc<Logs>>, RawQuery(q): RawQuery) -> Response {
    let p = params(q.as_deref());
    let id = num(&p, "id").unwrap_or(0);
    let log = logs.get(id);
    log.send_modify(|pr| pr.arrived = true);
    let guard = DropGuard(log.clone());
    if let Some(status) = num(&p, "status") {
        let status = StatusCode::from_u16(status as u16).expect("status");
        return (status, "worker says no").into_response();
    }
    if p.contains_key("hold_headers") {
        pending::<()>().await;
    }
    log.send_modify(|pr| pr.headers = true);
    let body = WorkerBody {
        guard,
        p,
        next: 0,
        stage: Stage::Tokens,
    };
    let stream = stream::unfold(body, |mut b| async move {
        let pace = Duration::from_millis(num(&b.p, "pace_ms").unwrap_or(0));
        let tokens = num(&b.p, "tokens").unwrap_or(5);
        match b.stage {
            Stage::End => {
                b.guard.0.send_modify(|pr| pr.finished = true);
                return None;
            }
            Stage::Linger => pending::<()>().await,
            Stage::Tokens => {}
        }
        if b.next == 0 && b.p.contains_key("hold_prefill") {
            pending::<()>().await;
        }
        if b.next > 0 && !pace.is_zero() {
            tokio::time::sleep(pace).await;
        }
        if num(&b.p, "stall_after") == Some(b.next) {
            pending::<()>().await;
        }
        if num(&b.p, "fail_after") == Some(b.next) {
            b.stage = Stage::End;
            let err = std::io::Error::other("worker failed mid-stream");
            return Some((Err(err), b));
        }
        if b.next == tokens {
            b.stage = match b.p.contains_key("linger") {
                true => Stage::Linger,
                false => Stage::End,
            };
            return Some((Ok(Bytes::from_static(b"data: [DONE]\n\n")), b));
        }
        let token = Bytes::from(format!("data: {{\"token\":{}}}\n\n", b.next));
        b.next += 1;
        b.guard.0.send_modify(|pr| pr.tokens += 1);
        Some((Ok(token), b))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(Body::from_stream(stream))
        .expect("response")
}

// ---------------------------------------------------------------- the gateway

/// The gateway's recorder: the verdict goes to the test's channel (and to a breaker
/// permit, where the gateway has a breaker).
pub struct Rec<P: Recorder> {
    id: u64,
    verdicts: mpsc::UnboundedSender<(u64, Outcome)>,
    permit: Option<P>,
}

impl<P: Recorder> Recorder for Rec<P> {
    fn record(self, outcome: Outcome) {
        if let Some(permit) = self.permit {
            permit.record(outcome);
        }
        let _ = self.verdicts.send((self.id, outcome));
    }
}

/// Admission for one upstream request: a breaker's permit, or nothing.
pub trait Admit: Clone + Send + Sync + 'static {
    /// What records the verdict besides the test's channel.
    type Permit: Recorder + Send + 'static;
    /// A permit, or the retry-after in whole seconds (0 when unknown).
    fn admit(&self) -> Result<Self::Permit, u64>;
}

/// No breaker.
#[derive(Clone)]
pub struct Open;

/// Records nothing.
pub struct NoPermit;

impl Recorder for NoPermit {
    fn record(self, _: Outcome) {}
}

impl Admit for Open {
    type Permit = NoPermit;
    fn admit(&self) -> Result<NoPermit, u64> {
        Ok(NoPermit)
    }
}

struct Gw<A> {
    upstream: String,
    client: reqwest::Client,
    options: ForwardOptions,
    admit: A,
    verdicts: mpsc::UnboundedSender<(u64, Outcome)>,
    reports: mpsc::UnboundedSender<(u64, Option<Forwarded>)>,
}

/// The gateway under test.
pub struct Gateway {
    pub server: Server,
    pub verdicts: mpsc::UnboundedReceiver<(u64, Outcome)>,
    pub reports: mpsc::UnboundedReceiver<(u64, Option<Forwarded>)>,
}

/// A reqwest client that never uses a proxy.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
}

impl Gateway {
    /// A gateway in front of `upstream` (`127.0.0.1:port`, or an address nobody
    /// listens on).
    pub async fn start<A: Admit>(upstream: SocketAddr, options: ForwardOptions, admit: A) -> Self {
        let (vtx, verdicts) = mpsc::unbounded_channel();
        let (rtx, reports) = mpsc::unbounded_channel();
        let state = Arc::new(Gw {
            upstream: format!("http://{upstream}/v1/stream"),
            client: http_client(),
            options,
            admit,
            verdicts: vtx,
            reports: rtx,
        });
        let router = Router::new()
            .route("/forward", get(forward_handler::<A>))
            .route("/direct", get(direct_handler::<A>))
            .with_state(state);
        Self {
            server: Server::start(router).await,
            verdicts,
            reports,
        }
    }

    /// The next verdict.
    pub async fn verdict(&mut self) -> (u64, Outcome) {
        within("verdict", self.verdicts.recv())
            .await
            .expect("verdict channel")
    }

    /// The next report of a finished `/forward` task.
    pub async fn report(&mut self) -> (u64, Option<Forwarded>) {
        within("report", self.reports.recv())
            .await
            .expect("report channel")
    }

    /// No verdict is waiting (none doubled so far).
    pub fn no_more_verdicts(&mut self) {
        if let Ok(extra) = self.verdicts.try_recv() {
            panic!("an extra verdict: {extra:?}");
        }
    }

    pub fn url(&self, route: &str, query: &str) -> String {
        format!("http://{}/{route}?{query}", self.server.addr)
    }
}

/// The status a gateway answers for the upstream's status.
fn rejected(retry_after: u64) -> Response {
    let mut r = (StatusCode::SERVICE_UNAVAILABLE, "breaker open").into_response();
    r.headers_mut().insert(
        header::RETRY_AFTER,
        retry_after.to_string().parse().expect("header"),
    );
    r
}

/// The verdict for a response that will not be streamed (default status policy).
fn status_verdict(status: StatusCode) -> Verdict {
    // Called for non-2xx statuses only, which the default policy settles at once.
    match StatusPolicy::default().classify(status.as_u16()) {
        Classified::Settle(verdict) => verdict,
        other => unreachable!("{status} classified as {other:?}"),
    }
}

async fn forward_handler<A: Admit>(
    State(gw): State<Arc<Gw<A>>>,
    RawQuery(q): RawQuery,
) -> Response {
    let q = q.unwrap_or_default();
    let id = num(&params(Some(&q)), "id").unwrap_or(0);
    let permit = match gw.admit.admit() {
        Ok(permit) => permit,
        Err(retry_after) => return rejected(retry_after),
    };
    let rec = Rec {
        id,
        verdicts: gw.verdicts.clone(),
        permit: Some(permit),
    };
    let (tx, rx) = mpsc::channel(16);
    let (head_tx, head_rx) = oneshot::channel();
    // The relay task: the task boundary that `forward` is for. It ends with its
    // stream (or with the client).
    tokio::spawn(relay(gw.clone(), q, id, rec, tx, head_tx));
    match head_rx.await {
        Ok(status) if status == StatusCode::OK => Response::builder()
            .header(header::CONTENT_TYPE, "text/event-stream")
            .body(Body::from_stream(ReceiverStream::new(rx)))
            .expect("response"),
        Ok(status) => (status, format!("upstream said no: {status}")).into_response(),
        Err(_) => StatusCode::BAD_GATEWAY.into_response(),
    }
}

async fn relay<A: Admit>(
    gw: Arc<Gw<A>>,
    q: String,
    id: u64,
    rec: Rec<A::Permit>,
    tx: mpsc::Sender<Result<Bytes, reqwest::Error>>,
    head: oneshot::Sender<StatusCode>,
) {
    let request = gw.client.get(format!("{}?{q}", gw.upstream)).send();
    let response = match sluice_tokio::until_closed(&tx, request).await {
        Err(ClientGone) => {
            rec.record(Verdict::Abandoned.into());
            let _ = gw.reports.send((id, None));
            return;
        }
        Ok(Err(_connect)) => {
            rec.record(Verdict::Failure.into());
            let _ = head.send(StatusCode::BAD_GATEWAY);
            let _ = gw.reports.send((id, None));
            return;
        }
        Ok(Ok(response)) => response,
    };
    let status = response.status();
    if !status.is_success() {
        rec.record(status_verdict(status).into());
        let _ = head.send(status);
        let _ = gw.reports.send((id, None));
        return;
    }
    let _ = head.send(StatusCode::OK);
    let tracked =
        TrackedStream::new(response.bytes_stream(), rec).with_sse(SseRules::openai_chat());
    let forwarded = sluice_tokio::forward_with(tracked, &tx, gw.options).await;
    drop(tx);
    let _ = gw.reports.send((id, Some(forwarded)));
}

async fn direct_handler<A: Admit>(State(gw): State<Arc<Gw<A>>>, RawQuery(q): RawQuery) -> Response {
    let q = q.unwrap_or_default();
    let id = num(&params(Some(&q)), "id").unwrap_or(0);
    let permit = match gw.admit.admit() {
        Ok(permit) => permit,
        Err(retry_after) => return rejected(retry_after),
    };
    let rec = Rec {
        id,
        verdicts: gw.verdicts.clone(),
        permit: Some(permit),
    };
    // If the client leaves here, hyper drops this future, and `rec` records
    // nothing: record Abandoned through a guard instead.
    let mut rec = RecordOnDrop(Some(rec));
    let response = match gw.client.get(format!("{}?{q}", gw.upstream)).send().await {
        Ok(response) => response,
        Err(_) => {
            rec.record(Verdict::Failure);
            return StatusCode::BAD_GATEWAY.into_response();
        }
    };
    let status = response.status();
    if !status.is_success() {
        rec.record(status_verdict(status));
        return (status, "upstream said no").into_response();
    }
    let Some(rec) = rec.0.take() else {
        unreachable!("recorded twice");
    };
    let tracked =
        TrackedStream::new(response.bytes_stream(), rec).with_sse(SseRules::openai_chat());
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(Body::from_stream(tracked))
        .expect("response")
}

/// Records `Abandoned` if dropped before anything else was recorded.
struct RecordOnDrop<R: Recorder>(Option<R>);

impl<R: Recorder> RecordOnDrop<R> {
    fn record(&mut self, verdict: Verdict) {
        if let Some(rec) = self.0.take() {
            rec.record(verdict.into());
        }
    }
}

impl<R: Recorder> Drop for RecordOnDrop<R> {
    fn drop(&mut self) {
        self.record(Verdict::Abandoned);
    }
}

// ---------------------------------------------------------------- the client side

/// A worker and a gateway in front of it, without a breaker.
pub struct Rig {
    pub worker: Worker,
    pub gateway: Gateway,
    pub client: reqwest::Client,
}

impl Rig {
    pub async fn start(options: ForwardOptions) -> Self {
        let worker = Worker::start().await;
        let gateway = Gateway::start(worker.server.addr, options, Open).await;
        Self {
            worker,
            gateway,
            client: http_client(),
        }
    }

    pub async fn get(&self, route: &str, query: &str) -> reqwest::Response {
        self.try_get(route, query).await.expect("gateway request")
    }

    pub async fn try_get(&self, route: &str, query: &str) -> reqwest::Result<reqwest::Response> {
        let url = self.gateway.url(route, query);
        within("gateway response", self.client.get(url).send()).await
    }

    pub async fn shutdown(mut self) {
        drop(self.client);
        self.gateway.server.shutdown().await;
        self.worker.server.shutdown().await;
    }
}

/// Reads a client's body as SSE text.
pub struct Reader {
    body: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<Bytes>> + Send>>,
    pub text: String,
}

/// How a body read ended.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyEnd {
    /// The body ended cleanly.
    Clean,
    /// The body ended with an error (the connection was aborted).
    Error,
}

impl Reader {
    pub fn new(response: reqwest::Response) -> Self {
        Self {
            body: Box::pin(response.bytes_stream()),
            text: String::new(),
        }
    }

    /// Tokens (not `[DONE]`) read so far.
    pub fn tokens(&self) -> usize {
        self.text.matches("data: {").count()
    }

    pub fn done(&self) -> bool {
        self.text.contains("data: [DONE]\n\n")
    }

    /// Reads until `pred` holds; `Err` if the body ends first.
    pub async fn until(&mut self, mut pred: impl FnMut(&Self) -> bool) -> Result<(), BodyEnd> {
        while !pred(self) {
            match within("body chunk", self.body.next()).await {
                Some(Ok(chunk)) => self
                    .text
                    .push_str(std::str::from_utf8(&chunk).expect("utf-8")),
                Some(Err(_)) => return Err(BodyEnd::Error),
                None => return Err(BodyEnd::Clean),
            }
        }
        Ok(())
    }

    /// Reads to the end of the body.
    pub async fn read_to_end(&mut self) -> BodyEnd {
        match self.until(|_| false).await {
            Err(end) => end,
            Ok(()) => unreachable!(),
        }
    }
}
