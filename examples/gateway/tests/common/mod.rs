//! What the gateway's tests share: a bound on every wait ([`within`]), a client and
//! its requests, a router on a free port, readers of what comes back (a streamed
//! body, the metrics exposition, the gateway's events), and a raw worker's reader of
//! a request ([`read_request`]).
#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use sluice_gateway::gateway::GatewayEvent;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::sync::mpsc::UnboundedReceiver;

/// A worker on a free port that answers a POST to any of `paths` with the first of
/// `streams` whose name the request body contains (an empty body if none), as
/// `content_type`, whole.
pub async fn named_streams_worker(
    content_type: &'static str,
    paths: &[&str],
    streams: &'static [(&'static str, &'static str)],
) -> SocketAddr {
    let answer = move |body: axum::body::Bytes| async move {
        let text = String::from_utf8_lossy(&body);
        let stream = streams
            .iter()
            .find(|(name, _)| text.contains(name))
            .map_or("", |(_, stream)| stream);
        axum::response::Response::builder()
            .header(axum::http::header::CONTENT_TYPE, content_type)
            .body(axum::body::Body::from(stream))
            .expect("response")
    };
    let router = paths.iter().fold(Router::new(), |router, path| {
        router.route(path, axum::routing::post(answer))
    });
    serve_router(router).await
}

/// How long a test waits for an effect before it fails (a bound, not a sleep).
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Awaits `fut`, failing the test if it takes longer than [`DEADLINE`].
pub async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    within_for(DEADLINE, what, fut).await
}

/// Awaits `fut`, failing the test if it takes longer than `limit`.
pub async fn within_for<F: Future>(limit: Duration, what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(limit, fut).await {
        Ok(out) => out,
        Err(_) => panic!("no {what} within {limit:?}"),
    }
}

/// A client that ignores proxy settings and follows no redirect (a worker's redirect
/// must reach the gateway as it is).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// Serves `router` on a free port of 127.0.0.1.
pub async fn serve_router(router: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// Posts a JSON `body` to the gateway's `path`, with `id` as its `x-request-id`.
pub async fn post_to(
    gateway: SocketAddr,
    path: &str,
    id: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    let mut call = client()
        .post(format!("http://{gateway}{path}"))
        .header("content-type", "application/json")
        .body(body);
    if let Some(id) = id {
        call = call.header("x-request-id", id);
    }
    within("response", call.send())
        .await
        .expect("gateway answers")
}

/// Posts a JSON `body` to the gateway's chat route, with `id` as its `x-request-id`.
pub async fn post(
    gateway: SocketAddr,
    id: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    post_to(gateway, "/v1/chat/completions", id, body).await
}

/// Reads a body to its end; returns the text and whether it ended cleanly.
pub async fn read_all(mut response: reqwest::Response) -> (String, bool) {
    let mut text = Vec::new();
    loop {
        match within("chunk", response.chunk()).await {
            Ok(Some(bytes)) => text.extend_from_slice(&bytes),
            Ok(None) => return (String::from_utf8_lossy(&text).into_owned(), true),
            Err(_) => return (String::from_utf8_lossy(&text).into_owned(), false),
        }
    }
}

/// The gateway's metrics exposition.
pub async fn scrape(gateway: SocketAddr) -> String {
    let get = client().get(format!("http://{gateway}/metrics")).send();
    let response = within("scrape", get).await.expect("metrics");
    within("metrics text", response.text()).await.expect("text")
}

/// Scrapes until `pred` holds (a stream's verdict is counted when the gateway drops
/// its body, just after the client saw its end).
pub async fn metrics_until(gateway: SocketAddr, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let text = scrape(gateway).await;
        if pred(&text) {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {what} within {DEADLINE:?}:\n{text}"
        );
        tokio::task::yield_now().await;
    }
}

/// `gen_ai_client_token_usage_{stat}` (`count`, `sum`) of `worker`, `verdict` and
/// token `kind` (`input`, `output`), if present.
pub fn token_usage(text: &str, worker: &str, stat: &str, verdict: &str, kind: &str) -> Option<f64> {
    series(
        text,
        &format!(
            "gen_ai_client_token_usage_{stat}{{worker=\"{worker}\",verdict=\"{verdict}\",gen_ai_token_type=\"{kind}\"}}"
        ),
    )
}

/// Checks each `(stat, verdict, kind, expected)` of `worker`'s token usage.
pub fn assert_token_usage(text: &str, worker: &str, expected: &[(&str, &str, &str, Option<f64>)]) {
    for &(stat, verdict, kind, value) in expected {
        assert_eq!(
            token_usage(text, worker, stat, verdict, kind),
            value,
            "{stat} of {verdict} {kind}:\n{text}"
        );
    }
}

/// The value of the series `name{labels}` in an exposition, if present.
pub fn series(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}

/// The count of `worker`'s verdicts `verdict` with cause `cause`, if present.
pub fn verdicts(text: &str, worker: &str, verdict: &str, cause: &str) -> Option<f64> {
    series(
        text,
        &format!(
            "sluice_verdicts_total{{worker=\"{worker}\",verdict=\"{verdict}\",cause=\"{cause}\"}}"
        ),
    )
}

/// Waits for an event that `pred` picks.
pub async fn event(
    events: &mut UnboundedReceiver<GatewayEvent>,
    what: &str,
    pred: impl Fn(&GatewayEvent) -> bool,
) -> GatewayEvent {
    within(what, async {
        loop {
            match events.recv().await {
                Some(e) if pred(&e) => return e,
                Some(_) => {}
                None => panic!("the gateway is gone"),
            }
        }
    })
    .await
}

/// Reads one request (its head and a `Content-Length` body) from `socket`: `false` if
/// the connection ended first.
pub async fn read_request(socket: &mut tokio::net::TcpStream) -> bool {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().expect("content-length"));
            if buf.len() >= end + 4 + length {
                return true;
            }
        }
        match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}
