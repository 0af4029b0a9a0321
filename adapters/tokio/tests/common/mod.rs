//! The tokio shell of the loopback rig (the shared parts are in `sluice-test-support`):
//! a mock inference worker and a gateway under test, both axum servers on 127.0.0.1,
//! with reqwest in between.
//!
//! The worker follows [`Plan`] (the query string) and [`Script`]; its response (the
//! handler, then the body stream) holds the request's drop guard, so the ledger
//! notes when the upstream connection closed as the worker sees it.
//!
//! The gateway has two routes: `/forward` (a task per request, `until_closed` around
//! the upstream request, then `sluice_tokio::forward_with` into an mpsc channel that
//! feeds the response body) and `/direct` (the `TrackedStream` is the response body).
//! Verdicts and reports reach the test through [`Outcomes`].
#![allow(dead_code, unreachable_pub)]

use std::future::{Future, pending};
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use futures_util::stream;
use sluice::forward::ForwardOptions;
use sluice::sse::SseRules;
use sluice::{Cause, Outcome, RecordGuard, Recorder, TrackedStream, Verdict};
use sluice_test_support::gateway::{Outcomes, Sink, outcomes, relay, status_verdict};
use sluice_test_support::worker::{Action, DONE, Plan, Query, WorkerLog};
use sluice_test_support::{Clock, client};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;

/// tokio's clock: follows a paused test clock.
#[derive(Debug)]
pub struct Tokio;

impl Clock for Tokio {
    fn sleep(duration: Duration) -> impl Future<Output = ()> + Send + 'static {
        tokio::time::sleep(duration)
    }
}

/// Awaits `fut`, failing the test if it takes longer than
/// [`DEADLINE`](sluice_test_support::DEADLINE).
pub async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    sluice_test_support::within::<Tokio, F>(what, fut).await
}

/// Reads a client's body as SSE text.
pub type Reader = client::Reader<Tokio>;

/// A reader of `response`'s body.
pub fn reader(response: reqwest::Response) -> Reader {
    Reader::new(response.status().as_u16(), response.bytes_stream())
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

// ---------------------------------------------------------------- the worker

/// The mock inference worker; its [`WorkerLog`] (through `Deref`) says what it did.
pub struct Worker {
    pub server: Server,
    ledger: Arc<WorkerLog<Tokio>>,
}

impl Worker {
    pub async fn start() -> Self {
        let ledger = Arc::new(WorkerLog::default());
        let router = Router::new()
            .route("/v1/stream", get(worker_handler))
            .with_state(ledger.clone());
        Self {
            server: Server::start(router).await,
            ledger,
        }
    }
}

impl Deref for Worker {
    type Target = WorkerLog<Tokio>;

    fn deref(&self) -> &WorkerLog<Tokio> {
        &self.ledger
    }
}

async fn worker_handler(
    State(ledger): State<Arc<WorkerLog<Tokio>>>,
    RawQuery(q): RawQuery,
) -> Response {
    let plan = Plan::parse(q.as_deref().unwrap_or_default());
    let guard = ledger.arrived(plan.id);
    if let Some(status) = plan.status {
        let status = StatusCode::from_u16(status).expect("status");
        return (status, "worker says no").into_response();
    }
    if plan.hold_headers {
        pending::<()>().await;
    }
    guard.update(|p| p.headers = true);
    let body = (guard, plan.script::<Tokio>());
    let stream = stream::unfold(body, |(guard, mut script)| async move {
        let item = match script.next().await {
            Action::Token(event) => {
                guard.update(|p| p.tokens += 1);
                Ok(event)
            }
            Action::Done => Ok(Bytes::from_static(DONE)),
            Action::Fail => Err(std::io::Error::other("worker failed mid-stream")),
            Action::End => {
                guard.update(|p| p.finished = true);
                return None;
            }
        };
        Some((item, (guard, script)))
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
    sink: Sink,
    permit: Option<P>,
}

impl<P: Recorder> Recorder for Rec<P> {
    fn record(self, outcome: Outcome) {
        if let Some(permit) = self.permit {
            permit.record(outcome);
        }
        self.sink.verdict(self.id, outcome);
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
    sink: Sink,
}

impl<A: Admit> Gw<A> {
    /// The request's id and recorder, or the retry-after when the breaker is open.
    fn admitted(&self, query: &str) -> Result<(u64, Rec<A::Permit>), u64> {
        let id = Query::parse(query).id();
        let permit = self.admit.admit()?;
        let sink = self.sink.clone();
        let permit = Some(permit);
        Ok((id, Rec { id, sink, permit }))
    }
}

/// The gateway under test; its [`Outcomes`] (through `Deref`) are the verdicts and
/// reports.
pub struct Gateway {
    pub server: Server,
    outcomes: Outcomes<Tokio>,
}

impl Deref for Gateway {
    type Target = Outcomes<Tokio>;

    fn deref(&self) -> &Outcomes<Tokio> {
        &self.outcomes
    }
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
        let (sink, outcomes) = outcomes();
        let state = Arc::new(Gw {
            upstream: format!("http://{upstream}/v1/stream"),
            client: http_client(),
            options,
            admit,
            sink,
        });
        let router = Router::new()
            .route("/forward", get(forward_handler::<A>))
            .route("/direct", get(direct_handler::<A>))
            .with_state(state);
        Self {
            server: Server::start(router).await,
            outcomes,
        }
    }

    pub fn url(&self, route: &str, query: &str) -> String {
        format!("http://{}/{route}?{query}", self.server.addr)
    }
}

/// What a gateway answers when the breaker is open.
fn rejected(retry_after: u64) -> Response {
    let mut r = (StatusCode::SERVICE_UNAVAILABLE, "breaker open").into_response();
    r.headers_mut().insert(
        header::RETRY_AFTER,
        retry_after.to_string().parse().expect("header"),
    );
    r
}

async fn forward_handler<A: Admit>(
    State(gw): State<Arc<Gw<A>>>,
    RawQuery(q): RawQuery,
) -> Response {
    let q = q.unwrap_or_default();
    let (id, rec) = match gw.admitted(&q) {
        Ok(admitted) => admitted,
        Err(retry_after) => return rejected(retry_after),
    };
    let (tx, rx) = mpsc::channel(16);
    let (head_tx, head_rx) = oneshot::channel();
    // The relay task: the task boundary that `forward` is for. It ends with its
    // stream (or with the client).
    tokio::spawn(relay_task(gw.clone(), q, id, rec, tx, head_tx));
    match head_rx.await.map(StatusCode::from_u16) {
        Ok(Ok(StatusCode::OK)) => Response::builder()
            .header(header::CONTENT_TYPE, "text/event-stream")
            .body(Body::from_stream(ReceiverStream::new(rx)))
            .expect("response"),
        Ok(Ok(status)) => (status, format!("upstream said no: {status}")).into_response(),
        _ => StatusCode::BAD_GATEWAY.into_response(),
    }
}

async fn relay_task<A: Admit>(
    gw: Arc<Gw<A>>,
    q: String,
    id: u64,
    rec: Rec<A::Permit>,
    tx: mpsc::Sender<Result<Bytes, reqwest::Error>>,
    head: oneshot::Sender<u16>,
) {
    let request = gw.client.get(format!("{}?{q}", gw.upstream)).send();
    let answer = sluice_tokio::until_closed(&tx, request).await;
    let answer = answer.map(|sent| sent.map(|r| (r.status().as_u16(), r.bytes_stream())));
    let mut forwarded = None;
    if let Some(tracked) = relay(answer, rec, |status| {
        let _ = head.send(status);
    }) {
        forwarded = Some(sluice_tokio::forward_with(tracked, &tx, gw.options).await);
    }
    drop(tx);
    gw.sink.report(id, forwarded);
}

async fn direct_handler<A: Admit>(State(gw): State<Arc<Gw<A>>>, RawQuery(q): RawQuery) -> Response {
    let q = q.unwrap_or_default();
    let rec = match gw.admitted(&q) {
        Ok((_, rec)) => rec,
        Err(retry_after) => return rejected(retry_after),
    };
    // If the client leaves here, hyper drops this future, and `rec` would record
    // nothing: the guard records Abandoned instead.
    let rec = RecordGuard::new(rec);
    let response = match gw.client.get(format!("{}?{q}", gw.upstream)).send().await {
        Ok(response) => response,
        Err(_) => {
            rec.record(Outcome::new(Verdict::Failure, Cause::SendFailed, 0, 0));
            return StatusCode::BAD_GATEWAY.into_response();
        }
    };
    let status = response.status();
    if let Some(verdict) = status_verdict(status.as_u16()) {
        rec.record(Outcome::new(verdict, Cause::Status, 0, 0));
        return (status, "upstream said no").into_response();
    }
    // The guard is a recorder: the tracked stream records through it.
    let tracked =
        TrackedStream::new(response.bytes_stream(), rec).with_sse(SseRules::openai_chat());
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(Body::from_stream(tracked))
        .expect("response")
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
