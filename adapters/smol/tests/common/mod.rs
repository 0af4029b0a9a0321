//! The smol shell of the loopback rig (the shared parts are in `sluice-test-support`),
//! over real sockets: a mock worker speaking HTTP/1.1 with a chunked SSE body, a
//! gateway that forwards it with `sluice_smol`, and a small client for both hops,
//! all on `async-net`.
//!
//! The worker follows the same [`Plan`] and [`Script`] as the tokio rig's; it notes
//! in its ledger when it saw the connection close.
#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use async_channel::Receiver;
use async_net::{TcpListener, TcpStream};
use bytes::Bytes;
use futures_core::Stream;
use futures_lite::io::BufReader;
use futures_lite::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, future, stream};
use sluice::Outcome;
use sluice_test_support::gateway::{Outcomes, Sink, outcomes, relay};
use sluice_test_support::worker::{Action, DONE, Plan, Query, WorkerLog};
use sluice_test_support::{Clock, client};

/// smol's clock: `async-io` timers.
#[derive(Debug)]
pub struct Smol;

impl Clock for Smol {
    fn sleep(duration: Duration) -> impl Future<Output = ()> + Send + 'static {
        let timer = async_io::Timer::after(duration);
        async move {
            timer.await;
        }
    }
}

/// Awaits `fut`, failing the test if it takes longer than
/// [`DEADLINE`](sluice_test_support::DEADLINE).
pub async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    sluice_test_support::within::<Smol, F>(what, fut).await
}

/// A client's view of one gateway response.
pub type Reader = client::Reader<Smol>;

/// Sends `GET /forward?{query}` to the gateway; a reader of its response.
pub async fn get(gateway: SocketAddr, query: &str) -> Reader {
    let (status, body) = within("gateway head", request(gateway, "forward", query))
        .await
        .expect("gateway request");
    Reader::new(status, body)
}

// ---------------------------------------------------------------- HTTP/1.1

type Item = io::Result<Bytes>;

/// The head of a streaming answer.
const SSE_HEAD: &str = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\
                        Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n";

/// The head of a refusal, without a body.
fn refusal(status: u16) -> String {
    format!("HTTP/1.1 {status} No\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
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

/// One `GET /{path}?{query}` to `addr`: the status and the chunked body.
pub async fn request(
    addr: SocketAddr,
    path: &str,
    query: &str,
) -> io::Result<(u16, impl Stream<Item = Item> + Send + 'static)> {
    let mut conn = TcpStream::connect(addr).await?;
    let request =
        format!("GET /{path}?{query} HTTP/1.1\r\nHost: sluice\r\nConnection: close\r\n\r\n");
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

// ---------------------------------------------------------------- the worker

/// The mock inference worker; its [`WorkerLog`] (through `Deref`) says what it did.
pub struct Worker {
    pub addr: SocketAddr,
    ledger: Arc<WorkerLog<Smol>>,
    _accept: smol::Task<()>,
}

impl Worker {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let ledger = Arc::new(WorkerLog::default());
        let l = ledger.clone();
        let accept = smol::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                smol::spawn(serve_worker(conn, l.clone())).detach();
            }
        });
        Self {
            addr,
            ledger,
            _accept: accept,
        }
    }
}

impl Deref for Worker {
    type Target = WorkerLog<Smol>;

    fn deref(&self) -> &WorkerLog<Smol> {
        &self.ledger
    }
}

async fn serve_worker(conn: TcpStream, ledger: Arc<WorkerLog<Smol>>) {
    let mut reader = BufReader::new(conn.clone());
    let Ok(line) = read_head(&mut reader).await else {
        return;
    };
    let plan = Plan::parse(&query_of(&line));
    let guard = ledger.arrived(plan.id);
    // Everything below races the client closing the connection.
    let work = async {
        let mut w = conn.clone();
        if let Some(status) = plan.status {
            let _ = w.write_all(refusal(status).as_bytes()).await;
            return;
        }
        if plan.hold_headers {
            future::pending::<()>().await;
        }
        if w.write_all(SSE_HEAD.as_bytes()).await.is_err() {
            return;
        }
        guard.update(|p| p.headers = true);
        let mut script = plan.script::<Smol>();
        loop {
            match script.next().await {
                Action::Token(event) => {
                    if w.write_all(&chunk(&event)).await.is_err() {
                        return;
                    }
                    guard.update(|p| p.tokens += 1);
                }
                Action::Done => {
                    let _ = w.write_all(&chunk(DONE)).await;
                }
                Action::Fail => return, // closes without the last chunk: a broken body
                Action::End => break,
            }
        }
        let _ = w.write_all(b"0\r\n\r\n").await;
        guard.update(|p| p.finished = true);
    };
    future::or(work, peer_closed(conn.clone())).await;
}

// ---------------------------------------------------------------- the gateway

/// The gateway under test: one task per client connection, the upstream read
/// through `sluice_smol::forward` into a bounded channel that a writer drains. Its
/// [`Outcomes`] (through `Deref`) are the verdicts and reports.
pub struct Gateway {
    pub addr: SocketAddr,
    outcomes: Outcomes<Smol>,
    _accept: smol::Task<()>,
}

impl Gateway {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (sink, outcomes) = outcomes();
        let accept = smol::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                smol::spawn(serve_gateway(conn, upstream, sink.clone())).detach();
            }
        });
        Self {
            addr,
            outcomes,
            _accept: accept,
        }
    }
}

impl Deref for Gateway {
    type Target = Outcomes<Smol>;

    fn deref(&self) -> &Outcomes<Smol> {
        &self.outcomes
    }
}

async fn serve_gateway(conn: TcpStream, upstream: SocketAddr, sink: Sink) {
    let mut reader = BufReader::new(conn.clone());
    let Ok(line) = read_head(&mut reader).await else {
        return;
    };
    let query = query_of(&line);
    let id = Query::parse(&query).id();
    let (tx, rx) = async_channel::bounded::<Item>(16);
    let (head_tx, head_rx) = async_channel::bounded::<u16>(1);
    let verdicts = sink.clone();
    let record = move |o: Outcome| verdicts.verdict(id, o);
    let relay = async move {
        let answer = sluice_smol::until_closed(&tx, request(upstream, "v1/stream", &query)).await;
        let tracked = relay(answer, record, |status| {
            let _ = head_tx.try_send(status);
        })?;
        Some(sluice_smol::forward(tracked, &tx).await)
        // `tx` drops here: the writer ends the body.
    };
    let writer = future::or(write_client(conn.clone(), rx, head_rx), peer_closed(conn));
    let (forwarded, ()) = future::zip(relay, writer).await;
    sink.report(id, forwarded);
}

/// Writes the response for the client; returning drops `rx`.
async fn write_client(mut w: TcpStream, rx: Receiver<Item>, head: Receiver<u16>) {
    let status = head.recv().await.unwrap_or(502);
    if status != 200 {
        let _ = w.write_all(refusal(status).as_bytes()).await;
        return;
    }
    if w.write_all(SSE_HEAD.as_bytes()).await.is_err() {
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
