//! The loopback rig: a worker (a hyper server streaming SSE tokens or gRPC-framed
//! messages) and a gateway (a hyper server whose upstream client is hyper-util's
//! legacy client behind a `BreakerLayer`, relaying the `TrackedBody` as its response
//! body), both on 127.0.0.1, over HTTP/1.1 or HTTP/2 (prior knowledge), with a
//! hyper-util client in front.
//!
//! The worker reads its query string (`id`, `tokens`, `stall_after`, `status`,
//! `hold_headers`, `empty`, `json` (a whole `application/json` answer), `cut` (an SSE
//! stream that ends cleanly without `data: [DONE]`), `grpc` = a status code or `none`,
//! `grpc_only` = a status code for a trailers-only answer) and records, per request id, what it did and when its
//! response was dropped (its connection or stream closed, as it sees it). Every
//! outcome the layer records goes to one channel.
#![allow(dead_code, unreachable_pub)]

mod fed;

#[allow(unused_imports)] // each test file uses its part
pub use fed::{FedWorker, Route, gateway, get};

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::{Future, pending};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::stream;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body::Frame;
use http_body_util::{BodyExt, Either, Empty, Full, StreamBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use sluice::breaker::{Config, ManualClock, SharedBreaker};
use sluice::sse::SseRules;
use sluice::{Outcome, Recorder};
use sluice_http::{
    BreakerError, BreakerLayer, BreakerService, GrpcPolicy, PermitRecorder, PickedWorker,
    TrackedBody,
};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tower::{ServiceBuilder, ServiceExt};

/// How long a test waits for an effect before it fails (a bound, not a sleep).
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Awaits `fut`, failing the test if it takes longer than [`DEADLINE`].
pub async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(DEADLINE, fut).await {
        Ok(out) => out,
        Err(_) => panic!("no {what} within {DEADLINE:?}"),
    }
}

/// The HTTP version on every hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    H1,
    H2,
}

pub const PROTOS: [Proto; 2] = [Proto::H1, Proto::H2];

/// A hyper-util client speaking `proto` (HTTP/2 by prior knowledge).
pub fn client(proto: Proto) -> Client<HttpConnector, Empty<Bytes>> {
    let mut builder = Client::builder(TokioExecutor::new());
    if proto == Proto::H2 {
        builder.http2_only(true);
    }
    builder.build_http()
}

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

/// Serves `svc` on 127.0.0.1 (HTTP/1.1 and HTTP/2) until dropped.
pub struct Server {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    /// Stops accepting, and closes the listener (connections already made go on).
    pub async fn stop(&mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }

    pub async fn start<S, B>(svc: S) -> Self
    where
        S: hyper::service::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let _ = stream.set_nodelay(true);
                let svc = svc.clone();
                tokio::spawn(async move {
                    let builder = auto::Builder::new(TokioExecutor::new());
                    let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        });
        Self { addr, task }
    }
}

// ---------------------------------------------------------------- the worker

/// What the worker did for one request: the shared rigs' record.
pub use sluice_test_support::worker::RequestRecord;

#[derive(Default)]
struct Logs {
    map: Mutex<HashMap<u64, watch::Sender<RequestRecord>>>,
    arrivals: AtomicU64,
}

impl Logs {
    fn get(&self, id: u64) -> watch::Sender<RequestRecord> {
        let mut map = self.map.lock().expect("log lock");
        map.entry(id)
            .or_insert_with(|| watch::channel(RequestRecord::default()).0)
            .clone()
    }
}

/// Marks the request dropped when the handler future or the body goes away.
struct DropMarker(watch::Sender<RequestRecord>);

impl Drop for DropMarker {
    fn drop(&mut self) {
        let now = Instant::now();
        self.0.send_modify(|p| {
            p.dropped = true;
            p.dropped_at = Some(now);
        });
    }
}

/// The mock worker.
pub struct Worker {
    pub server: Server,
    logs: Arc<Logs>,
}

type WorkerBody = StreamBody<
    std::pin::Pin<Box<dyn futures_core::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send>>,
>;

impl Worker {
    pub async fn start() -> Self {
        let logs = Arc::new(Logs::default());
        let l = logs.clone();
        let svc = service_fn(move |req: Request<Incoming>| {
            let logs = l.clone();
            async move { Ok::<_, Infallible>(worker(logs, req).await) }
        });
        Self {
            server: Server::start(svc).await,
            logs,
        }
    }

    pub fn progress(&self, id: u64) -> watch::Receiver<RequestRecord> {
        self.logs.get(id).subscribe()
    }

    /// Requests that reached the worker so far.
    pub fn arrivals(&self) -> u64 {
        self.logs.arrivals.load(Ordering::SeqCst)
    }

    pub async fn wait(
        &self,
        id: u64,
        what: &str,
        pred: impl FnMut(&RequestRecord) -> bool,
    ) -> RequestRecord {
        let mut rx = self.progress(id);
        let seen = within(what, rx.wait_for(pred)).await.expect("worker log");
        seen.clone()
    }
}

/// One gRPC message: the 5-byte prefix (not compressed, big-endian length), then it.
pub fn grpc_message(payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + payload.len());
    b.put_u8(0);
    b.put_u32(payload.len() as u32);
    b.put_slice(payload);
    b.freeze()
}

async fn worker(
    logs: Arc<Logs>,
    req: Request<Incoming>,
) -> Response<Either<WorkerBody, Full<Bytes>>> {
    let p = params(req.uri().query());
    let id = num(&p, "id").unwrap_or(0);
    logs.arrivals.fetch_add(1, Ordering::SeqCst);
    let log = logs.get(id);
    log.send_modify(|pr| pr.arrived = true);
    let guard = DropMarker(log.clone());
    if let Some(status) = num(&p, "status") {
        let mut r = Response::new(Either::Right(Full::new(Bytes::from_static(
            b"worker says no",
        ))));
        *r.status_mut() = StatusCode::from_u16(status as u16).expect("status");
        return r;
    }
    if p.contains_key("hold_headers") {
        pending::<()>().await;
    }
    log.send_modify(|pr| pr.headers = true);
    if p.contains_key("empty") {
        // A 200 with an empty body: `content-length: 0`, nothing to poll.
        return Response::new(Either::Right(Full::default()));
    }
    if p.contains_key("json") {
        let mut r = Response::new(Either::Right(Full::new(Bytes::from_static(
            b"{\"text\":\"hi\"}",
        ))));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        return r;
    }
    if let Some(code) = p.get("grpc_only") {
        let mut r = Response::new(Either::Right(Full::default()));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        r.headers_mut()
            .insert("grpc-status", HeaderValue::from_str(code).expect("code"));
        return r;
    }
    let grpc = p.get("grpc").cloned();
    let tokens = num(&p, "tokens").unwrap_or(3);
    let stall_after = num(&p, "stall_after");
    let cut = p.contains_key("cut");
    let state = (guard, 0u64, false);
    let frames = stream::unfold(state, move |(guard, next, over)| {
        let grpc = grpc.clone();
        async move {
            if over {
                guard.0.send_modify(|pr| pr.finished = true);
                return None;
            }
            if stall_after == Some(next) {
                pending::<()>().await;
            }
            if next == tokens {
                if cut && grpc.is_none() {
                    guard.0.send_modify(|pr| pr.finished = true);
                    return None;
                }
                let last = match grpc.as_deref() {
                    None => Frame::data(Bytes::from_static(b"data: [DONE]\n\n")),
                    Some("none") => {
                        guard.0.send_modify(|pr| pr.finished = true);
                        return None;
                    }
                    Some(code) => {
                        let mut t = HeaderMap::new();
                        t.insert("grpc-status", HeaderValue::from_str(code).expect("code"));
                        Frame::trailers(t)
                    }
                };
                return Some((Ok(last), (guard, next, true)));
            }
            let frame = match grpc {
                None => Bytes::from(format!("data: {{\"token\":{next}}}\n\n")),
                Some(_) => grpc_message(format!("token {next}").as_bytes()),
            };
            guard.0.send_modify(|pr| pr.tokens += 1);
            Some((Ok(Frame::data(frame)), (guard, next + 1, false)))
        }
    });
    let body: WorkerBody = StreamBody::new(Box::pin(frames));
    let content_type = match p.contains_key("grpc") {
        true => "application/grpc",
        false => "text/event-stream",
    };
    let mut r = Response::new(Either::Left(body));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

// ---------------------------------------------------------------- the gateway

type Upstream = BreakerService<Client<HttpConnector, Empty<Bytes>>>;
pub type GatewayBody = Either<TrackedBody<Incoming, PermitRecorder>, Full<Bytes>>;

/// The gateway under test.
pub struct Gateway {
    pub server: Server,
    pub breaker: SharedBreaker,
    pub clock: ManualClock,
    outcomes: mpsc::UnboundedReceiver<Outcome>,
}

/// What the gateway's layer is set up with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// No SSE rules, no gRPC: the end decides.
    Plain,
    Sse,
    Grpc,
}

impl Gateway {
    pub async fn start(upstream: SocketAddr, proto: Proto, mode: Mode, config: Config) -> Self {
        let clock = ManualClock::new();
        let breaker = SharedBreaker::with_clock(config, clock.clone());
        let (tx, outcomes) = mpsc::unbounded_channel();
        let mut layer = BreakerLayer::new(breaker.clone()).with_observer(move |o, _| {
            let _ = tx.send(o);
        });
        layer = match mode {
            Mode::Plain => layer,
            Mode::Sse => layer.with_sse(SseRules::openai_chat()),
            Mode::Grpc => layer.with_grpc(GrpcPolicy::default()),
        };
        let upstream_svc: Upstream = ServiceBuilder::new().layer(layer).service(client(proto));
        let base = format!("http://{upstream}");
        let svc = service_fn(move |req: Request<Incoming>| {
            let svc = upstream_svc.clone();
            let uri = format!(
                "{base}{}",
                req.uri().path_and_query().map_or("/", |pq| pq.as_str())
            );
            async move {
                let request = Request::get(uri).body(Empty::new()).expect("request");
                Ok::<_, Infallible>(relay(svc, request).await)
            }
        });
        Self {
            server: Server::start(svc).await,
            breaker,
            clock,
            outcomes,
        }
    }

    /// The next outcome the layer recorded.
    pub async fn outcome(&mut self) -> Outcome {
        within("outcome", self.outcomes.recv())
            .await
            .expect("outcome channel")
    }

    /// No outcome is waiting.
    pub fn no_more_outcomes(&mut self) {
        if let Ok(extra) = self.outcomes.try_recv() {
            panic!("an extra outcome: {extra:?}");
        }
    }
}

/// Relays `request` through a layer's service: the tracked body as the response body
/// (with the picked worker, if any, in an `x-worker` header), a rejection as a 503 with
/// `Retry-After`, an inner error as a 502.
pub async fn relay<S, B, E>(
    svc: S,
    request: Request<Empty<Bytes>>,
) -> Response<Either<B, Full<Bytes>>>
where
    S: tower::Service<Request<Empty<Bytes>>, Response = Response<B>, Error = BreakerError<E>>,
{
    match svc.oneshot(request).await {
        Ok(response) => {
            let (mut parts, body) = response.into_parts();
            for hop in [header::CONNECTION, header::TRANSFER_ENCODING] {
                parts.headers.remove(hop);
            }
            if let Some(worker) = parts.extensions.get::<PickedWorker>() {
                parts
                    .headers
                    .insert("x-worker", HeaderValue::from(worker.index));
            }
            Response::from_parts(parts, Either::Left(body))
        }
        Err(BreakerError::Rejected { retry_after }) => {
            let mut r = Response::new(Either::Right(Full::new(Bytes::from_static(
                b"breaker open",
            ))));
            *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            let secs = retry_after.map_or(0, |d| d.as_secs());
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            r
        }
        Err(_) => {
            let mut r = Response::new(Either::Right(Full::default()));
            *r.status_mut() = StatusCode::BAD_GATEWAY;
            r
        }
    }
}

// ---------------------------------------------------------------- the client side

/// A worker, a gateway in front of it, and a client, all speaking `proto`.
pub struct Rig {
    pub proto: Proto,
    pub worker: Worker,
    pub gateway: Gateway,
    pub client: Client<HttpConnector, Empty<Bytes>>,
}

impl Rig {
    pub async fn start(proto: Proto, mode: Mode, config: Config) -> Self {
        let worker = Worker::start().await;
        let gateway = Gateway::start(worker.server.addr, proto, mode, config).await;
        Self {
            proto,
            worker,
            gateway,
            client: client(proto),
        }
    }

    pub fn request(&self, query: &str) -> Request<Empty<Bytes>> {
        let uri = format!("http://{}/v1/stream?{query}", self.gateway.server.addr);
        Request::get(uri).body(Empty::new()).expect("request")
    }

    pub async fn get(&self, query: &str) -> Response<Incoming> {
        within("gateway response", self.client.request(self.request(query)))
            .await
            .expect("gateway request")
    }
}

/// Reads a client's response body frame by frame.
pub struct Reader {
    pub body: Incoming,
    pub data: Vec<u8>,
    pub trailers: Option<HeaderMap>,
}

impl Reader {
    pub fn new(response: Response<Incoming>) -> Self {
        Self {
            body: response.into_body(),
            data: Vec::new(),
            trailers: None,
        }
    }

    /// SSE tokens (not `[DONE]`) read so far.
    pub fn tokens(&self) -> usize {
        String::from_utf8_lossy(&self.data)
            .matches("data: {")
            .count()
    }

    /// Data frames' bytes read so far hold at least `n` gRPC messages.
    pub fn messages(&self) -> usize {
        let mut at = 0;
        let mut n = 0;
        while self.data.len() >= at + 5 {
            let len = u32::from_be_bytes([
                self.data[at + 1],
                self.data[at + 2],
                self.data[at + 3],
                self.data[at + 4],
            ]);
            at += 5 + len as usize;
            if at <= self.data.len() {
                n += 1;
            }
        }
        n
    }

    /// Reads until `pred` holds; `Err(true)` if the body ended cleanly first, `Err(false)`
    /// on an error.
    pub async fn until(&mut self, mut pred: impl FnMut(&Self) -> bool) -> Result<(), bool> {
        while !pred(self) {
            match within("body frame", self.body.frame()).await {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => self.data.extend_from_slice(&data),
                    Err(frame) => self.trailers = frame.into_trailers().ok(),
                },
                Some(Err(_)) => return Err(false),
                None => return Err(true),
            }
        }
        Ok(())
    }

    /// Reads to the end: `true` for a clean end.
    pub async fn read_to_end(&mut self) -> bool {
        match self.until(|_| false).await {
            Err(clean) => clean,
            Ok(()) => unreachable!(),
        }
    }
}

/// A recorder that does nothing, for tests that need one.
pub struct NoRecord;

impl Recorder for NoRecord {
    fn record(self, _: Outcome) {}
}

/// One client connection made with hyper's low-level API, to close it at will.
pub struct RawClient {
    task: JoinHandle<()>,
    /// A second handle on the socket, to shut it down under the connection.
    socket: std::net::TcpStream,
    h1: Option<hyper::client::conn::http1::SendRequest<Empty<Bytes>>>,
    h2: Option<hyper::client::conn::http2::SendRequest<Empty<Bytes>>>,
}

impl RawClient {
    pub async fn connect(proto: Proto, addr: SocketAddr) -> Self {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let std = stream.into_std().expect("std socket");
        let socket = std.try_clone().expect("socket clone");
        let io = TokioIo::new(tokio::net::TcpStream::from_std(std).expect("tokio socket"));
        match proto {
            Proto::H1 => {
                let (send, conn) = hyper::client::conn::http1::handshake(io).await.expect("h1");
                let task = tokio::spawn(async move {
                    let _ = conn.await;
                });
                Self {
                    task,
                    socket,
                    h1: Some(send),
                    h2: None,
                }
            }
            Proto::H2 => {
                let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .expect("h2");
                let task = tokio::spawn(async move {
                    let _ = conn.await;
                });
                Self {
                    task,
                    socket,
                    h1: None,
                    h2: Some(send),
                }
            }
        }
    }

    /// Sends `request`; the future owns nothing of the connection.
    pub fn send(
        &mut self,
        request: Request<Empty<Bytes>>,
    ) -> impl Future<Output = hyper::Result<Response<Incoming>>> + use<> {
        let h1 = self.h1.as_mut().map(|s| s.send_request(request.clone()));
        let h2 = self.h2.as_mut().map(|s| s.send_request(request));
        async move {
            match (h1, h2) {
                (Some(f), _) => f.await,
                (_, Some(f)) => f.await,
                _ => unreachable!(),
            }
        }
    }

    /// Closes the connection at once (an HTTP/2 connection's task would otherwise
    /// close gracefully, after its streams).
    pub fn close(self) {
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
        self.task.abort();
    }
}

// ---------------------------------------------------------------- the manual timer

/// A [`Timer`](sluice::timers::Timer) on a clock only the test moves. Its clones share the clock; it counts
/// the sleeps it made, so a test can wait until a body has armed one.
#[derive(Clone)]
pub struct ManualTimer {
    clock: Arc<Mutex<ManualClockState>>,
    sleeps: Arc<watch::Sender<u64>>,
}

/// The manual timer's time and the sleeps waiting on it.
#[derive(Default)]
pub struct ManualClockState {
    now: Duration,
    wakers: Vec<Waker>,
}

impl Default for ManualTimer {
    fn default() -> Self {
        Self::new()
    }
}

impl ManualTimer {
    pub fn new() -> Self {
        Self {
            clock: Arc::default(),
            sleeps: Arc::new(watch::channel(0).0),
        }
    }

    /// Moves the clock on by `by`, waking every sleep.
    pub fn advance(&self, by: Duration) {
        let wakers = {
            let mut clock = self.clock.lock().expect("clock");
            clock.now += by;
            std::mem::take(&mut clock.wakers)
        };
        wakers.into_iter().for_each(Waker::wake);
    }

    /// The sleeps made so far.
    pub fn sleeps(&self) -> u64 {
        *self.sleeps.borrow()
    }

    /// Waits until `n` sleeps were made (bounded by the rig's deadline, in real time).
    pub async fn armed(&self, n: u64) {
        let mut rx = self.sleeps.subscribe();
        within("armed sleeps", rx.wait_for(|&made| made >= n))
            .await
            .expect("timer");
    }
}

/// One sleep of a [`ManualTimer`]: ready once the clock reaches `at`.
pub struct ManualSleep {
    clock: Arc<Mutex<ManualClockState>>,
    at: Duration,
}

impl Future for ManualSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut clock = self.clock.lock().expect("clock");
        if clock.now >= self.at {
            return Poll::Ready(());
        }
        if !clock.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            clock.wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

impl sluice::timers::Timer for ManualTimer {
    type Sleep = ManualSleep;

    fn sleep(&self, duration: Duration) -> ManualSleep {
        self.sleeps.send_modify(|n| *n += 1);
        let at = self.clock.lock().expect("clock").now + duration;
        ManualSleep {
            clock: self.clock.clone(),
            at,
        }
    }
}
