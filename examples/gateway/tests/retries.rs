//! Retries and hedging before the first token, through `serve` and real workers on
//! loopback: an attempt that fails before its commit is replaced on another worker
//! and the client sees none of its bytes; one that fails after its first token is
//! not; a slow worker is hedged and its attempt dropped (Abandoned, `hedge_lost`,
//! with one engine abort under the SGLang profile); a pool in outage gets no more
//! retries than the budget allows; a worker's 503 is read at once, so its connection
//! is not held while the next worker is tried.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use common::{
    metrics_until, post as post_chat, read_all, read_request, scrape, series, serve_router,
    verdicts,
};
use futures_util::{StreamExt, stream};
use sluice_gateway::engine::Engine;
use sluice_gateway::serve::{self, ServeArgs};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

const ROLE: &str = "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\n";
const DONE: &str = "data: [DONE]\n\n";

fn token(text: &str) -> String {
    format!("data: {{\"choices\":[{{\"delta\":{{\"content\":\"{text}\"}}}}]}}\n\n")
}

/// How a mock worker answers every request.
#[derive(Clone, Copy, Debug)]
enum Behaviour {
    /// A clean stream: role, two tokens naming the worker, `[DONE]`.
    Good,
    /// 500, before any byte of a stream.
    Status(u16),
    /// Its preamble, then an error object.
    ErrorAfterPreamble,
    /// Its preamble, then the connection is cut.
    CutAfterPreamble,
    /// Three tokens, then an error object.
    ErrorAfterThreeTokens,
    /// Its preamble, then nothing (its first token never comes).
    Slow,
    /// A non-streaming JSON answer cut in its middle.
    CutJson,
    /// A non-streaming JSON answer.
    Json,
}

/// What a mock worker saw.
#[derive(Default)]
struct Seen {
    requests: AtomicUsize,
    /// Answers whose body was dropped before its end: the gateway closed them.
    closed: AtomicUsize,
    /// The `rid` of each request, and of each `/abort_request`.
    rids: Mutex<Vec<String>>,
    aborts: Mutex<Vec<String>>,
}

/// Counts its body's drop before the end as a closed connection.
struct OnDrop(Arc<Seen>, bool);

impl Drop for OnDrop {
    fn drop(&mut self) {
        if !self.1 {
            self.0.closed.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn sse(parts: Vec<String>, then: Then, seen: Arc<Seen>) -> Response {
    let items = stream::iter(
        parts
            .into_iter()
            .map(|p| Ok::<_, std::io::Error>(Bytes::from(p))),
    );
    let tail = stream::once(async move {
        match then {
            Then::End => None,
            Then::Hang => std::future::pending().await,
        }
    })
    .filter_map(std::future::ready);
    let body = Watched {
        inner: Box::pin(items.chain(tail)),
        guard: OnDrop(seen, false),
    };
    let mut response = Body::from_stream(body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        "text/event-stream".parse().expect("ct"),
    );
    response
}

/// How a mock stream goes on after its parts.
#[derive(Clone, Copy, Debug)]
enum Then {
    End,
    Hang,
}

/// A body stream whose drop before its end (or its own cut) counts as closed by
/// the gateway.
struct Watched<S> {
    inner: std::pin::Pin<Box<S>>,
    guard: OnDrop,
}

impl<S: futures_util::Stream<Item = Result<Bytes, std::io::Error>>> futures_util::Stream
    for Watched<S>
{
    type Item = S::Item;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<S::Item>> {
        let poll = self.inner.as_mut().poll_next(cx);
        if matches!(poll, std::task::Poll::Ready(None | Some(Err(_)))) {
            self.guard.1 = true; // its own end, or its own cut
        }
        poll
    }
}

/// A worker that writes `answer` (a response head and part of its body) to every
/// request, then closes the connection: a cut the gateway sees after the head.
async fn cutting_worker(answer: &'static [u8]) -> (SocketAddr, Arc<Seen>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Seen::default());
    let counted = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            counted.requests.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                read_request(&mut socket).await;
                let _ = socket.write_all(answer).await;
                let _ = socket.flush().await;
                // Dropped: closed before the body's end.
            });
        }
    });
    (addr, seen)
}

const CUT_AFTER_PREAMBLE: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
transfer-encoding: chunked\r\n\r\n34\r\ndata: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\n\r\n";

const CUT_JSON: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
content-length: 100\r\n\r\n{\"choices\":[{\"message\":";

/// A mock worker on loopback behaving as `behaviour`; what it saw.
async fn worker(behaviour: Behaviour) -> (SocketAddr, Arc<Seen>) {
    match behaviour {
        Behaviour::CutAfterPreamble => return cutting_worker(CUT_AFTER_PREAMBLE).await,
        Behaviour::CutJson => return cutting_worker(CUT_JSON).await,
        _ => {}
    }
    let seen = Arc::new(Seen::default());
    let answer = {
        let seen = seen.clone();
        move |body: Bytes| {
            let seen = seen.clone();
            async move { answer(behaviour, &body, seen) }
        }
    };
    let aborts = {
        let seen = seen.clone();
        move |body: Bytes| {
            let seen = seen.clone();
            async move {
                let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                let rid = json["rid"].as_str().unwrap_or_default().to_owned();
                seen.aborts
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(rid);
                StatusCode::OK
            }
        }
    };
    let router = Router::new()
        .route("/v1/chat/completions", post(answer))
        .route("/abort_request", post(aborts));
    (serve_router(router).await, seen)
}

fn answer(behaviour: Behaviour, body: &[u8], seen: Arc<Seen>) -> Response {
    seen.requests.fetch_add(1, Ordering::SeqCst);
    let json: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    if let Some(rid) = json["rid"].as_str() {
        seen.rids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(rid.to_owned());
    }
    let error = "data: {\"error\":{\"message\":\"worker broke\"}}\n\n".to_owned();
    match behaviour {
        Behaviour::Good => sse(
            vec![ROLE.into(), token("good-1"), token("good-2"), DONE.into()],
            Then::End,
            seen,
        ),
        Behaviour::Status(code) => (
            StatusCode::from_u16(code).expect("status"),
            [(header::CONTENT_TYPE, "application/json")],
            "{\"error\":{\"message\":\"bad worker\"}}",
        )
            .into_response(),
        Behaviour::ErrorAfterPreamble => sse(vec![ROLE.into(), error], Then::End, seen),
        Behaviour::CutAfterPreamble | Behaviour::CutJson => unreachable!("a raw worker"),
        Behaviour::ErrorAfterThreeTokens => sse(
            vec![ROLE.into(), token("t1"), token("t2"), token("t3"), error],
            Then::End,
            seen,
        ),
        Behaviour::Slow => sse(vec![ROLE.into()], Then::Hang, seen),
        Behaviour::Json => json_body(),
    }
}

fn json_body() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        "{\"choices\":[{\"message\":{\"content\":\"whole\"}}]}",
    )
        .into_response()
}

fn args(upstreams: Vec<String>, retries: u32) -> ServeArgs {
    ServeArgs {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        failure_threshold: 10_000,
        success_threshold: 1,
        open_secs: 3600,
        retries,
        ..ServeArgs::new(upstreams)
    }
}

/// `serve` with `--retries retries` in front of two mock workers, named and
/// behaving as given (the first is the first picked); what each saw.
async fn two_workers(
    first: (&str, Behaviour),
    second: (&str, Behaviour),
    retries: u32,
) -> (serve::Serving, Arc<Seen>, Arc<Seen>) {
    let (a, a_seen) = worker(first.1).await;
    let (b, b_seen) = worker(second.1).await;
    let upstreams = vec![
        format!("{}=http://{a}", first.0),
        format!("{}=http://{b}", second.0),
    ];
    let serving = serve::start(&args(upstreams, retries))
        .await
        .expect("serve");
    (serving, a_seen, b_seen)
}

fn attempts(text: &str, worker: &str, kind: &str, result: &str) -> f64 {
    series(
        text,
        &format!(
            "sluice_attempts_total{{worker=\"{worker}\",kind=\"{kind}\",result=\"{result}\"}}"
        ),
    )
    .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_before_the_first_token_is_replaced_and_the_client_sees_none_of_it() {
    let cases = [
        (Behaviour::Status(500), "status"),
        (Behaviour::ErrorAfterPreamble, "error_event"),
        (Behaviour::CutAfterPreamble, "error_item"),
    ];
    for (behaviour, cause) in cases {
        let (serving, bad_seen, good_seen) =
            two_workers(("bad", behaviour), ("good", Behaviour::Good), 1).await;
        let response = post_chat(serving.addr, Some("r1"), r#"{"stream":true}"#).await;
        assert_eq!(response.status(), 200, "{behaviour:?}");
        let (text, clean) = read_all(response).await;
        let want = format!("{ROLE}{}{}{DONE}", token("good-1"), token("good-2"));
        assert_eq!(
            (text.as_str(), clean),
            (want.as_str(), true),
            "{behaviour:?}: only the good worker's bytes"
        );
        assert_eq!(bad_seen.requests.load(Ordering::SeqCst), 1, "{behaviour:?}");
        assert_eq!(
            good_seen.requests.load(Ordering::SeqCst),
            1,
            "{behaviour:?}"
        );
        let text = metrics_until(serving.addr, "both verdicts", |t| {
            verdicts(t, "good", "success", "done") == Some(1.0)
                && verdicts(t, "bad", "failure", cause) == Some(1.0)
        })
        .await;
        assert_eq!(
            attempts(&text, "bad", "first", "failed"),
            1.0,
            "{behaviour:?}\n{text}"
        );
        assert_eq!(
            attempts(&text, "good", "retry", "answered"),
            1.0,
            "{behaviour:?}\n{text}"
        );
        drop(serving);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_is_retried_elsewhere_and_another_4xx_is_passed_on() {
    let (serving, _, good_seen) = two_workers(
        ("busy", Behaviour::Status(429)),
        ("good", Behaviour::Good),
        1,
    )
    .await;
    let response = post_chat(serving.addr, Some("r1"), r#"{"stream":true}"#).await;
    assert_eq!(response.status(), 200);
    assert!(read_all(response).await.0.ends_with(DONE));
    assert_eq!(good_seen.requests.load(Ordering::SeqCst), 1);
    drop(serving);

    let (serving, _, other_seen) = two_workers(
        ("strict", Behaviour::Status(400)),
        ("good", Behaviour::Good),
        1,
    )
    .await;
    let response = post_chat(serving.addr, Some("r2"), r#"{"stream":true}"#).await;
    assert_eq!(
        response.status(),
        400,
        "the client's mistake is not retried"
    );
    assert_eq!(other_seen.requests.load(Ordering::SeqCst), 0);
    drop(serving);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_after_the_first_token_is_not_retried() {
    let (serving, _, good_seen) = two_workers(
        ("bad", Behaviour::ErrorAfterThreeTokens),
        ("good", Behaviour::Good),
        3,
    )
    .await;
    let response = post_chat(serving.addr, Some("r1"), r#"{"stream":true}"#).await;
    assert_eq!(response.status(), 200);
    let (text, _) = read_all(response).await;
    assert!(
        text.contains("t3") && text.contains("worker broke"),
        "{text}"
    );
    assert!(!text.contains(DONE), "{text}");
    let metrics = metrics_until(serving.addr, "the verdict", |t| {
        verdicts(t, "bad", "failure", "error_event") == Some(1.0)
    })
    .await;
    assert_eq!(
        good_seen.requests.load(Ordering::SeqCst),
        0,
        "committed: never replaced"
    );
    assert_eq!(
        attempts(&metrics, "bad", "first", "answered"),
        1.0,
        "{metrics}"
    );
    drop(serving);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_streaming_answer_cut_before_its_end_is_retried_whole() {
    let (serving, _, _) =
        two_workers(("cut", Behaviour::CutJson), ("good", Behaviour::Json), 1).await;
    let response = post_chat(serving.addr, Some("r1"), r#"{"stream":false}"#).await;
    assert_eq!(response.status(), 200);
    let (text, clean) = read_all(response).await;
    assert_eq!(
        (text.as_str(), clean),
        (
            "{\"choices\":[{\"message\":{\"content\":\"whole\"}}]}",
            true
        )
    );
    metrics_until(serving.addr, "both verdicts", |t| {
        verdicts(t, "cut", "failure", "error_item") == Some(1.0)
            && verdicts(t, "good", "success", "end") == Some(1.0)
    })
    .await;
    drop(serving);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_worker_is_hedged_and_its_attempt_dropped_with_one_abort() {
    let (slow, slow_seen) = worker(Behaviour::Slow).await;
    let (fast, fast_seen) = worker(Behaviour::Good).await;
    let serving = serve::start(&ServeArgs {
        hedge_after: Duration::from_millis(300),
        engine: Engine::Sglang,
        ..args(
            vec![format!("slow=http://{slow}"), format!("fast=http://{fast}")],
            0,
        )
    })
    .await
    .expect("serve");
    let started = tokio::time::Instant::now();
    let response = post_chat(serving.addr, Some("r1"), r#"{"stream":true}"#).await;
    assert_eq!(response.status(), 200);
    let (text, clean) = read_all(response).await;
    // The slow worker never sends a token: only the hedge can have answered.
    assert!(
        clean && text.contains("good-1") && text.ends_with(DONE),
        "{text}"
    );
    println!(
        "time to the whole answer with hedging after 300 ms: {:?}",
        started.elapsed()
    );
    assert_eq!(fast_seen.requests.load(Ordering::SeqCst), 1);
    let metrics = metrics_until(serving.addr, "the lost hedge", |t| {
        verdicts(t, "slow", "abandoned", "hedge_lost") == Some(1.0)
            && verdicts(t, "fast", "success", "done") == Some(1.0)
    })
    .await;
    assert_eq!(
        attempts(&metrics, "slow", "first", "hedge_lost"),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        attempts(&metrics, "fast", "hedge", "answered"),
        1.0,
        "{metrics}"
    );
    // Its connection closed, and its engine told once, by the rid it was sent.
    let (closed_tx, closed_rx) = oneshot::channel::<()>();
    let seen = slow_seen.clone();
    tokio::spawn(async move {
        while seen.closed.load(Ordering::SeqCst) == 0
            || seen
                .aborts
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_empty()
        {
            tokio::task::yield_now().await;
        }
        let _ = closed_tx.send(());
    });
    common::within("the slow worker's close and abort", closed_rx)
        .await
        .expect("closed");
    let rids = slow_seen
        .rids
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let aborts = slow_seen
        .aborts
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    assert_eq!(rids.len(), 1);
    assert_eq!(
        aborts, rids,
        "one abort, by the rid of the request it was sent"
    );
    assert!(
        fast_seen
            .aborts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    );
    drop(serving);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_full_outage_the_workers_get_no_more_retries_than_the_budget() {
    let mut upstreams = Vec::new();
    let mut seen = Vec::new();
    for i in 0..4 {
        let (addr, s) = worker(Behaviour::Status(500)).await;
        upstreams.push(format!("w{i}=http://{addr}"));
        seen.push(s);
    }
    let serving = serve::start(&ServeArgs {
        retry_budget: 20,
        ..args(upstreams, 3)
    })
    .await
    .expect("serve");
    let requests = 200;
    let addr = serving.addr;
    let calls = stream::iter(0..requests)
        .map(|i| async move {
            let response = post_chat(addr, Some(&format!("r{i}")), r#"{"stream":true}"#).await;
            assert_eq!(response.status(), 500, "the last failure stands");
        })
        .buffer_unordered(8)
        .collect::<Vec<()>>();
    common::within("200 requests", calls).await;
    let hits: usize = seen.iter().map(|s| s.requests.load(Ordering::SeqCst)).sum();
    let retries = hits - requests;
    // The budget: 20 % of the window's 200 requests plus its reserve (10 per second
    // over a 10 s window); without it, 3 retries each would make 600.
    let bound = requests / 5 + 100;
    println!(
        "full outage, {requests} requests with --retries 3: {retries} retries at the workers (bound {bound})"
    );
    assert!(
        retries <= bound,
        "{retries} retries, more than the budget's {bound}"
    );
    assert!(retries >= 100, "the reserve is used: {retries}");
    let metrics = scrape(serving.addr).await;
    let refused = series(
        &metrics,
        "sluice_retries_refused_total{kind=\"retry\",reason=\"budget\"}",
    );
    assert!(refused.is_some_and(|r| r > 0.0), "{metrics}");
    drop(serving);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_s_connection_is_freed_before_the_next_worker_answers() {
    // A busy worker answers 503 with `connection: close` and a body larger than the
    // client's buffers (but under the gateway's cap): its connection ends once the
    // gateway has read that body, and the worker tells when it sees the end.
    let (freed, was_freed) = oneshot::channel::<()>();
    let busy = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let busy_addr = busy.local_addr().expect("addr");
    tokio::spawn(async move {
        let (mut socket, _) = busy.accept().await.expect("accept");
        read_request(&mut socket).await;
        let body = format!(
            "{{\"error\":{{\"message\":\"busy{}\"}}}}",
            " ".repeat(48 * 1024)
        );
        let head = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        socket.write_all(head.as_bytes()).await.expect("write");
        let mut rest = [0u8; 64];
        while matches!(socket.read(&mut rest).await, Ok(n) if n > 0) {}
        let _ = freed.send(());
    });
    // The next worker sends its head only once the busy worker's connection ended:
    // a gateway that holds the 503 unread until then waits for itself, and the next
    // worker gives up after a while with a 500.
    let was_freed = Arc::new(Mutex::new(Some(was_freed)));
    let answer = move || {
        let was_freed = was_freed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        async move {
            let Some(was_freed) = was_freed else {
                return StatusCode::CONFLICT.into_response();
            };
            match tokio::time::timeout(Duration::from_secs(10), was_freed).await {
                Ok(Ok(())) => sse(
                    vec![ROLE.into(), token("good-1"), DONE.into()],
                    Then::End,
                    Arc::default(),
                ),
                _ => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
            }
        }
    };
    let good = serve_router(Router::new().route("/v1/chat/completions", post(answer))).await;
    let upstreams = vec![
        format!("busy=http://{busy_addr}"),
        format!("good=http://{good}"),
    ];
    let serving = serve::start(&args(upstreams, 1)).await.expect("serve");
    let response = post_chat(serving.addr, Some("r1"), r#"{"stream":true}"#).await;
    assert_eq!(response.status(), 200, "the next worker answered");
    assert!(read_all(response).await.0.ends_with(DONE));
    drop(serving);
}
