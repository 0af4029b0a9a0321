//! The smol test rig over real loopback sockets: a mock worker speaking HTTP/1.1
//! with a chunked SSE body, a gateway that forwards it with `sluice_smol`, and a
//! small client for both hops, all on `async-net`.
//!
//! The worker takes the same query string as the tokio rig (`id`, `tokens`,
//! `pace_ms`, `fail_after`, `status`, `hold_headers`, `hold_prefill`, `linger`) and
//! records per request what it produced and when it saw the connection close.
#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_channel::{Receiver, Sender};
use async_io::Timer;
use async_net::{TcpListener, TcpStream};
use bytes::Bytes;
use event_listener::Event;
use futures_core::Stream;
use futures_lite::io::BufReader;
use futures_lite::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, future, stream};
use sluice::forward::{ClientGone, Forwarded};
use sluice::sse::SseRules;
use sluice::{Outcome, TrackedStream, Verdict};

/// How long a test waits for an effect before it fails.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Awaits `fut`, failing the test if it takes longer than [`DEADLINE`].
pub async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    future::or(fut, async {
        Timer::after(DEADLINE).await;
        panic!("no {what} within {DEADLINE:?}")
    })
    .await
}

fn params(query: &str) -> HashMap<String, String> {
    query
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

/// Reads a request or response head; returns the first line.
async fn read_head<R: futures_lite::AsyncBufRead + Unpin>(r: &mut R) -> io::Result<String> {
    let mut first = String::new();
    if r.read_line(&mut first).await? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if line == "\r\n" {
            return Ok(first.trim_end().to_owned());
        }
    }
}

/// The query string of a request line `GET /path?query HTTP/1.1`.
fn query_of(request_line: &str) -> String {
    let target = request_line.split(' ').nth(1).unwrap_or_default();
    target
        .split_once('?')
        .map(|(_, q)| q.to_owned())
        .unwrap_or_default()
}

/// Resolves when the peer closes its side (or the connection fails).
async fn peer_closed(mut conn: TcpStream) {
    let mut buf = [0u8; 256];
    while let Ok(n @ 1..) = conn.read(&mut buf).await {
        let _ = n;
    }
}

fn chunk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

/// A chunked body as a stream of chunks; an early end is an error item.
pub fn chunked_body(
    reader: BufReader<TcpStream>,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    stream::unfold(Some(reader), |reader| async move {
        let mut r = reader?;
        match read_chunk(&mut r).await {
            Ok(Some(data)) => Some((Ok(data), Some(r))),
            Ok(None) => None,
            Err(e) => Some((Err(e), None)),
        }
    })
}

async fn read_chunk(r: &mut BufReader<TcpStream>) -> io::Result<Option<Bytes>> {
    let mut size = String::new();
    if r.read_line(&mut size).await? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    let size = usize::from_str_radix(size.trim_end(), 16)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "chunk size"))?;
    let mut data = vec![0u8; size + 2];
    r.read_exact(&mut data).await?;
    data.truncate(size);
    Ok((size > 0).then(|| Bytes::from(data)))
}

// ---------------------------------------------------------------- the worker

/// What the worker did for one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    pub arrived: bool,
    pub headers: bool,
    pub tokens: u64,
    pub finished: bool,
    /// The worker saw the connection close, or ended it.
    pub dropped: bool,
    pub dropped_at: Option<Instant>,
}

#[derive(Default)]
struct Logs {
    map: Mutex<HashMap<u64, Progress>>,
    changed: Event,
}

impl Logs {
    fn update(&self, id: u64, f: impl FnOnce(&mut Progress)) {
        f(self.map.lock().expect("log lock").entry(id).or_default());
        self.changed.notify(usize::MAX);
    }

    fn get(&self, id: u64) -> Progress {
        self.map
            .lock()
            .expect("log lock")
            .get(&id)
            .cloned()
            .unwrap_or_default()
    }
}

/// Marks the request dropped when the connection task ends.
struct DropGuard(Arc<Logs>, u64);

impl Drop for DropGuard {
    fn drop(&mut self) {
        let now = Instant::now();
        self.0.update(self.1, |p| {
            p.dropped = true;
            p.dropped_at = Some(now);
        });
    }
}

/// The mock inference worker.
pub struct Worker {
    pub addr: SocketAddr,
    logs: Arc<Logs>,
    _accept: smol::Task<()>,
}

impl Worker {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let logs = Arc::new(Logs::default());
        let l = logs.clone();
        let accept = smol::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                smol::spawn(serve_worker(conn, l.clone())).detach();
            }
        });
        Self {
            addr,
            logs,
            _accept: accept,
        }
    }

    pub fn progress(&self, id: u64) -> Progress {
        self.logs.get(id)
    }

    /// Waits until request `id` satisfies `pred`.
    pub async fn wait(
        &self,
        id: u64,
        what: &str,
        mut pred: impl FnMut(&Progress) -> bool,
    ) -> Progress {
        within(what, async {
            loop {
                let listener = self.logs.changed.listen();
                let now = self.logs.get(id);
                if pred(&now) {
                    return now;
                }
                listener.await;
            }
        })
        .await
    }
}

async fn serve_worker(conn: TcpStream, logs: Arc<Logs>) {
    let mut reader = BufReader::new(conn.clone());
    let Ok(line) = read_head(&mut reader).await else {
        return;
    };
    let p = params(&query_of(&line));
    let id = num(&p, "id").unwrap_or(0);
    logs.update(id, |pr| pr.arrived = true);
    let _guard = DropGuard(logs.clone(), id);
    // Everything below races the client closing the connection.
    let work = async {
        let mut w = conn.clone();
        if let Some(status) = num(&p, "status") {
            let head =
                format!("HTTP/1.1 {status} No\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            let _ = w.write_all(head.as_bytes()).await;
            return;
        }
        if p.contains_key("hold_headers") {
            future::pending::<()>().await;
        }
        let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\
                    Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
        if w.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        logs.update(id, |pr| pr.headers = true);
        if p.contains_key("hold_prefill") {
            future::pending::<()>().await;
        }
        let pace = Duration::from_millis(num(&p, "pace_ms").unwrap_or(0));
        let tokens = num(&p, "tokens").unwrap_or(5);
        for i in 0..tokens {
            if i > 0 && !pace.is_zero() {
                Timer::after(pace).await;
            }
            if num(&p, "stall_after") == Some(i) {
                future::pending::<()>().await;
            }
            if num(&p, "fail_after") == Some(i) {
                return; // closes without the last chunk: a broken body
            }
            let token = format!("data: {{\"token\":{i}}}\n\n");
            if w.write_all(&chunk(token.as_bytes())).await.is_err() {
                return;
            }
            logs.update(id, |pr| pr.tokens += 1);
        }
        let _ = w.write_all(&chunk(b"data: [DONE]\n\n")).await;
        if p.contains_key("linger") {
            future::pending::<()>().await;
        }
        let _ = w.write_all(b"0\r\n\r\n").await;
        logs.update(id, |pr| pr.finished = true);
    };
    future::or(work, peer_closed(conn.clone())).await;
}

// ---------------------------------------------------------------- the gateway

/// The gateway under test: one task per client connection, the upstream read
/// through `sluice_smol::forward` into a bounded channel that a writer drains.
pub struct Gateway {
    pub addr: SocketAddr,
    pub verdicts: Receiver<(u64, Outcome)>,
    pub reports: Receiver<(u64, Option<Forwarded>)>,
    _accept: smol::Task<()>,
}

impl Gateway {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (vtx, verdicts) = async_channel::unbounded();
        let (rtx, reports) = async_channel::unbounded();
        let accept = smol::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                smol::spawn(serve_gateway(conn, upstream, vtx.clone(), rtx.clone())).detach();
            }
        });
        Self {
            addr,
            verdicts,
            reports,
            _accept: accept,
        }
    }

    pub async fn verdict(&self) -> (u64, Outcome) {
        within("verdict", self.verdicts.recv())
            .await
            .expect("verdicts")
    }

    pub async fn report(&self) -> (u64, Option<Forwarded>) {
        within("report", self.reports.recv())
            .await
            .expect("reports")
    }
}

type Item = io::Result<Bytes>;

async fn serve_gateway(
    conn: TcpStream,
    upstream: SocketAddr,
    verdicts: Sender<(u64, Outcome)>,
    reports: Sender<(u64, Option<Forwarded>)>,
) {
    let mut reader = BufReader::new(conn.clone());
    let Ok(line) = read_head(&mut reader).await else {
        return;
    };
    let query = query_of(&line);
    let id = num(&params(&query), "id").unwrap_or(0);
    let (tx, rx) = async_channel::bounded::<Item>(16);
    let (head_tx, head_rx) = async_channel::bounded::<u16>(1);
    let record = move |o: Outcome| {
        let _ = verdicts.try_send((id, o));
    };
    let relay = async move {
        let request = upstream_request(upstream, query);
        let (status, body) = match sluice_smol::until_closed(&tx, request).await {
            Err(ClientGone) => {
                record(Verdict::Abandoned.into());
                return None;
            }
            Ok(Err(_)) => {
                record(Verdict::Failure.into());
                let _ = head_tx.send(502).await;
                return None;
            }
            Ok(Ok(answer)) => answer,
        };
        if status != 200 {
            let verdict = if status >= 500 {
                Verdict::Failure
            } else {
                Verdict::Abandoned
            };
            record(verdict.into());
            let _ = head_tx.send(status).await;
            return None;
        }
        let _ = head_tx.send(200).await;
        let tracked = TrackedStream::new(body, record).with_sse(SseRules::openai_chat());
        Some(sluice_smol::forward(tracked, &tx).await)
        // `tx` drops here: the writer ends the body.
    };
    let writer = future::or(write_client(conn.clone(), rx, head_rx), peer_closed(conn));
    let (forwarded, ()) = future::zip(relay, writer).await;
    let _ = reports.try_send((id, forwarded));
}

/// Writes the response for the client; returning drops `rx`.
async fn write_client(mut w: TcpStream, rx: Receiver<Item>, head: Receiver<u16>) {
    let status = head.recv().await.unwrap_or(502);
    if status != 200 {
        let head =
            format!("HTTP/1.1 {status} No\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        let _ = w.write_all(head.as_bytes()).await;
        return;
    }
    let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\
                Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    if w.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    while let Ok(item) = rx.recv().await {
        let Ok(data) = item else {
            return; // an upstream error: break the body
        };
        if w.write_all(&chunk(&data)).await.is_err() {
            return;
        }
    }
    let _ = w.write_all(b"0\r\n\r\n").await;
}

/// One GET to the worker: the status and the chunked body.
pub async fn upstream_request(
    addr: SocketAddr,
    query: String,
) -> io::Result<(u16, impl Stream<Item = Item> + Send + 'static)> {
    let mut conn = TcpStream::connect(addr).await?;
    let request =
        format!("GET /v1/stream?{query} HTTP/1.1\r\nHost: worker\r\nConnection: close\r\n\r\n");
    conn.write_all(request.as_bytes()).await?;
    let mut reader = BufReader::new(conn);
    let line = read_head(&mut reader).await?;
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "status line"))?;
    Ok((status, chunked_body(reader)))
}

// ---------------------------------------------------------------- the client

/// A client's view of one gateway response.
pub struct Reader {
    body: std::pin::Pin<Box<dyn Stream<Item = Item> + Send>>,
    pub status: u16,
    pub text: String,
}

/// How a body read ended.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyEnd {
    Clean,
    Error,
}

impl Reader {
    pub async fn get(gateway: SocketAddr, query: &str) -> Self {
        let (status, body) = within("gateway head", upstream_request(gateway, query.to_owned()))
            .await
            .expect("gateway request");
        Self {
            body: Box::pin(body),
            status,
            text: String::new(),
        }
    }

    pub fn tokens(&self) -> usize {
        self.text.matches("data: {").count()
    }

    pub fn done(&self) -> bool {
        self.text.contains("data: [DONE]\n\n")
    }

    pub async fn until(&mut self, mut pred: impl FnMut(&Self) -> bool) -> Result<(), BodyEnd> {
        use futures_lite::StreamExt;
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

    pub async fn read_to_end(&mut self) -> BodyEnd {
        match self.until(|_| false).await {
            Err(end) => end,
            Ok(()) => unreachable!(),
        }
    }
}
