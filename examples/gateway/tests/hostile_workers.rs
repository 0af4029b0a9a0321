//! `serve` in front of workers that misbehave, each a real server on loopback: one
//! that redirects, one that streams an error object whatever the request says, one
//! that accepts and never answers, one that closes a kept-alive connection under the
//! next request, one that closes every connection under its request, one whose
//! health endpoint fails; and the graceful shutdown with a stream in flight.

mod common;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{self, any};
use common::{
    event, metrics_until, post, read_all, read_request, scrape, series, serve_router, verdicts,
    within,
};
use sluice::breaker::{Config, Reason, State as BreakerState, StdClock};
use sluice_gateway::gateway::{Gateway, GatewayEvent, HealthCheck, Options, WorkerSpec};
use sluice_gateway::mock::MockWorker;
use sluice_gateway::serve::{self, ServeArgs};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

fn args(upstreams: Vec<String>) -> ServeArgs {
    ServeArgs {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        failure_threshold: 10,
        success_threshold: 1,
        open_secs: 3600,
        ..ServeArgs::new(upstreams)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_is_not_followed_it_is_the_workers_failure() {
    // Where the worker points: it must hear nothing.
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let target = serve_router(Router::new().fallback(any(move || {
        counted.fetch_add(1, Ordering::SeqCst);
        async { "followed" }
    })))
    .await;
    let location = format!("http://{target}/v1/chat/completions");
    let worker = serve_router(Router::new().route(
        "/v1/chat/completions",
        routing::post(move || async move {
            (
                StatusCode::TEMPORARY_REDIRECT,
                [(header::LOCATION, location)],
            )
        }),
    ))
    .await;
    let serving = serve::start(&args(vec![format!("redirector=http://{worker}")]))
        .await
        .expect("serve");
    let response = post(serving.addr, Some("r1"), r#"{"stream":true}"#).await;
    assert_eq!(response.status(), 502);
    let ct = response.headers()[header::CONTENT_TYPE].clone();
    assert_eq!(ct, "application/json");
    let text = within("body", response.text()).await.expect("body");
    let body: serde_json::Value = serde_json::from_str(&text).expect("JSON error");
    let message = body["error"]["message"].as_str().expect("message");
    assert!(message.contains("redirector"), "{message}");
    assert!(message.contains("307"), "{message}");
    assert!(
        !text.contains(&target.to_string()) && !text.contains(&worker.to_string()),
        "no worker URL in the body: {text}"
    );
    let m = scrape(serving.addr).await;
    assert_eq!(
        verdicts(&m, "redirector", "failure", "status"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 0, "the redirect was followed");
}

/// What the always-streaming worker received, per request id.
type Received = Arc<Mutex<Vec<(String, Bytes)>>>;

/// A worker that streams whatever the request says: for a request id starting with
/// `err`, one token, an error object and the end (no `[DONE]`, as llama.cpp and TGI
/// end); for `good`, two tokens and `[DONE]` with `Content-Type: Text/Event-Stream;
/// charset=utf-8`.
async fn streaming_worker(received: Received) -> SocketAddr {
    async fn handle(State(received): State<Received>, headers: HeaderMap, body: Bytes) -> Response {
        let id = headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned();
        received
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((id.clone(), body));
        let token = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n";
        if id.starts_with("good") {
            let text = format!("{token}{token}data: [DONE]\n\n");
            return (
                [(header::CONTENT_TYPE, "Text/Event-Stream; charset=utf-8")],
                text,
            )
                .into_response();
        }
        let text = format!("{token}data: {{\"error\":{{\"message\":\"engine died\"}}}}\n\n");
        ([(header::CONTENT_TYPE, "text/event-stream")], text).into_response()
    }
    serve_router(
        Router::new()
            .route("/v1/chat/completions", routing::post(handle))
            .with_state(received),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verdict_rules_come_from_the_response_not_the_request_body() {
    let received = Received::default();
    let worker = streaming_worker(received.clone()).await;
    let name = worker.to_string();
    let serving = serve::start(&args(vec![format!("http://{worker}")]))
        .await
        .expect("serve");
    // Bodies that the old `"stream": true` sniffing read as non-streaming.
    let bodies: [(&str, &[u8]); 3] = [
        ("err-number", br#"{"stream":1}"#),
        ("err-string", br#"{"stream":"true"}"#),
        ("err-bom", b"\xEF\xBB\xBF{\"stream\":true}"),
    ];
    for (id, body) in bodies {
        let response = post(serving.addr, Some(id), Bytes::from_static(body)).await;
        assert_eq!(response.status(), 200, "{id}");
        let (text, _) = read_all(response).await;
        assert!(text.contains("engine died"), "{id}: {text}");
    }
    let m = metrics_until(serving.addr, "three failures", |m| {
        verdicts(m, &name, "failure", "error_event") == Some(3.0)
    })
    .await;
    assert_eq!(verdicts(&m, &name, "success", "end"), None, "{m}");

    // A media type in another case, with a parameter: still an event stream.
    let response = post(serving.addr, Some("good-1"), r#"{"stream":true}"#).await;
    assert_eq!(response.status(), 200);
    let (text, clean) = read_all(response).await;
    assert!(clean && text.ends_with("data: [DONE]\n\n"), "{text}");
    metrics_until(serving.addr, "a success", |m| {
        verdicts(m, &name, "success", "done") == Some(1.0)
    })
    .await;

    // Each body reached the worker exactly as it came (the BOM too).
    let received = received.lock().unwrap_or_else(PoisonError::into_inner);
    for (id, body) in bodies {
        let got = received.iter().find(|(r, _)| r == id).expect("received");
        assert_eq!(got.1.as_ref(), body, "{id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_never_sends_its_head_times_out_and_opens_its_breaker() {
    // Accepts connections and never writes a byte (it holds them open).
    let silent = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let worker = silent.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(socket);
        }
    });
    let mut a = args(vec![format!("mute=http://{worker}")]);
    a.failure_threshold = 2;
    a.header_timeout = Duration::from_millis(200);
    let serving = serve::start(&a).await.expect("serve");
    for id in ["h1", "h2"] {
        let response = post(serving.addr, Some(id), r#"{"stream":true}"#).await;
        assert_eq!(response.status(), 504, "{id}");
        let text = within("body", response.text()).await.expect("body");
        let body: serde_json::Value = serde_json::from_str(&text).expect("JSON error");
        let message = body["error"]["message"].as_str().expect("message");
        assert!(message.contains("mute") && message.contains("no response head"));
        assert!(!text.contains(&worker.to_string()), "{text}");
    }
    let m = scrape(serving.addr).await;
    assert_eq!(
        verdicts(&m, "mute", "failure", "header_timeout"),
        Some(2.0),
        "{m}"
    );
    assert_eq!(
        series(&m, "sluice_breaker_state{worker=\"mute\",state=\"open\"}"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    // Open: the next request is refused at once, without trying the worker.
    let response = post(serving.addr, Some("h3"), r#"{"stream":true}"#).await;
    assert_eq!(response.status(), 503);
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

/// Posts a short non-streamed request to the gateway at `addr`; returns its status.
async fn short(addr: SocketAddr, id: &str) -> u16 {
    let response = post(addr, Some(id), r#"{"stream":false,"max_tokens":1}"#).await;
    let status = response.status().as_u16();
    let _ = within("body", response.bytes()).await;
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_failing_its_health_checks_gets_no_traffic_until_it_passes() {
    let mut workers = Vec::new();
    for name in ["sick", "well"] {
        workers.push(
            MockWorker::start(name, Duration::from_millis(1))
                .await
                .expect("mock"),
        );
    }
    let specs = workers
        .iter()
        .map(|w| WorkerSpec {
            name: w.name.clone(),
            base: w.url(),
        })
        .collect();
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let options = Options {
        max_ejected_percent: 50,
        ..Options::new(Config::default())
    };
    let gateway = Gateway::new(specs, options, StdClock::new(), Some(tx)).expect("gateway");
    let addr = serve_router(gateway.router()).await;
    let checks =
        tokio::spawn(gateway.health_checks(HealthCheck::new("/health", Duration::from_millis(20))));

    workers[0].set_healthy(false);
    let forced = event(&mut events, "the sick worker forced open", |e| {
        matches!(e, GatewayEvent::Transition { worker: 0, transition }
            if transition.to == BreakerState::ForcedOpen && transition.reason == Reason::Forced)
    })
    .await;
    drop(forced);
    // Over a few more intervals, every request goes to the healthy worker.
    for round in 0..3 {
        for n in 0..2 {
            let id = format!("out-{round}-{n}");
            assert_eq!(short(addr, &id).await, 200);
            assert!(workers[1].progress(&id).borrow().arrived, "{id}");
            assert!(!workers[0].progress(&id).borrow().arrived, "{id}");
        }
        event(&mut events, "another failed check", |e| {
            matches!(
                e,
                GatewayEvent::HealthCheck {
                    worker: 0,
                    passed: false
                }
            )
        })
        .await;
    }
    assert_eq!(gateway.states()[0], BreakerState::ForcedOpen);

    workers[0].set_healthy(true);
    event(&mut events, "the worker released", |e| {
        matches!(e, GatewayEvent::Transition { worker: 0, transition }
            if transition.to == BreakerState::Closed && transition.reason == Reason::Reset)
    })
    .await;
    let mut to_sick = 0;
    for n in 0..4 {
        let id = format!("back-{n}");
        assert_eq!(short(addr, &id).await, 200);
        to_sick += usize::from(workers[0].progress(&id).borrow().arrived);
    }
    assert_eq!(to_sick, 2, "round-robin over both workers again");
    let m = gateway.metrics_text().expect("metrics");
    assert!(
        series(
            &m,
            "sluice_health_checks_total{worker=\"sick\",result=\"failed\"}"
        )
        .is_some_and(|n| n >= 5.0),
        "{m}"
    );
    assert_eq!(
        series(
            &m,
            "sluice_breaker_transitions_total{worker=\"sick\",from=\"closed\",to=\"forced_open\",reason=\"forced\"}"
        ),
        Some(1.0),
        "{m}"
    );
    checks.abort();
}

/// A trigger for `start_until`.
fn trigger() -> (
    tokio::sync::oneshot::Sender<()>,
    impl Future<Output = ()> + Send + 'static,
) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    (tx, async move {
        let _ = rx.await;
    })
}

/// Reads until the first event of a stream has come.
async fn first_event(response: &mut reqwest::Response) -> Vec<u8> {
    let mut seen = Vec::new();
    while !seen.windows(2).any(|w| w == b"\n\n") {
        let bytes = within("first event", response.chunk())
            .await
            .expect("stream")
            .expect("an event");
        seen.extend_from_slice(&bytes);
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_in_flight_at_shutdown_finishes_within_the_grace() {
    let worker = MockWorker::start("w", Duration::from_millis(20))
        .await
        .expect("mock");
    let (stop, shutdown) = trigger();
    let mut a = args(vec![format!("w=http://{}", worker.addr)]);
    a.shutdown_grace = Duration::from_secs(30);
    let serving = serve::start_until(&a, shutdown).await.expect("serve");
    let (addr, gateway) = (serving.addr, serving.gateway().clone());
    let mut response = post(addr, Some("s1"), r#"{"stream":true,"max_tokens":10}"#).await;
    let mut text = first_event(&mut response).await;
    stop.send(()).expect("trigger");
    let (rest, clean) = read_all(response).await;
    text.extend_from_slice(rest.as_bytes());
    let text = String::from_utf8_lossy(&text);
    assert!(clean && text.ends_with("data: [DONE]\n\n"), "{text}");
    within("the server to stop", serving.wait())
        .await
        .expect("a clean stop");
    let m = gateway.metrics_text().expect("metrics");
    assert_eq!(verdicts(&m, "w", "success", "done"), Some(1.0), "{m}");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting after the shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_outlasts_the_grace_is_abandoned_with_cause_shutdown() {
    let worker = MockWorker::start("w", Duration::from_millis(20))
        .await
        .expect("mock");
    let (stop, shutdown) = trigger();
    let mut a = args(vec![format!("w=http://{}", worker.addr)]);
    a.shutdown_grace = Duration::from_millis(100);
    let serving = serve::start_until(&a, shutdown).await.expect("serve");
    let gateway = serving.gateway().clone();
    let mut response = post(
        serving.addr,
        Some("long"),
        r#"{"stream":true,"max_tokens":100000}"#,
    )
    .await;
    first_event(&mut response).await;
    stop.send(()).expect("trigger");
    let (text, clean) = read_all(response).await;
    assert!(!clean, "a cut stream, not a clean end: {text}");
    assert!(!text.contains("[DONE]"), "{text}");
    within("the server to stop", serving.wait())
        .await
        .expect("a clean stop");
    let mut progress = worker.progress("long");
    within(
        "the worker's connection to close",
        progress.wait_for(|p| p.dropped),
    )
    .await
    .expect("worker log");
    let m = gateway.metrics_text().expect("metrics");
    assert_eq!(verdicts(&m, "w", "abandoned", "shutdown"), Some(1.0), "{m}");
    assert_eq!(verdicts(&m, "w", "abandoned", "client_left"), None, "{m}");
}

/// A worker that speaks raw TCP on a free loopback port: `each` runs on every
/// connection it accepts, in a task of its own.
async fn raw_worker<F, Fut>(each: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(each(socket));
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_on_a_connection_the_worker_closed_is_sent_again_not_failed() {
    // Like llama-server after a streamed answer, but every time: each connection
    // answers one streamed request (its head says keep-alive), then reads the next
    // request on it, if one comes, and closes without a word. That request never
    // reached a handler: not the worker's failure.
    let unanswered = Arc::new(AtomicUsize::new(0));
    let counted = unanswered.clone();
    let worker = raw_worker(move |mut socket| {
        let counted = counted.clone();
        async move {
            if !read_request(&mut socket).await {
                return;
            }
            let event =
                "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: [DONE]\n\n";
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\
                 Transfer-Encoding: chunked\r\nKeep-Alive: timeout=5, max=100\r\n\r\n\
                 {:x}\r\n{event}\r\n0\r\n\r\n",
                event.len()
            );
            socket.write_all(answer.as_bytes()).await.expect("answer");
            if read_request(&mut socket).await {
                counted.fetch_add(1, Ordering::SeqCst);
            }
            // Dropped: closed under the request, unanswered.
        }
    })
    .await;
    let serving = serve::start(&args(vec![format!("closer=http://{worker}")]))
        .await
        .expect("serve");
    // Whether the next request finds the connection back in the pool is the pool's
    // timing: requests go on until two of them were closed under (each then sent
    // again), and every one is answered.
    let mut sent = 0;
    while unanswered.load(Ordering::SeqCst) < 2 {
        assert!(
            sent < 20,
            "the gateway reused no connection in {sent} requests"
        );
        sent += 1;
        let id = format!("k{sent}");
        let response = post(serving.addr, Some(&id), r#"{"stream":true}"#).await;
        assert_eq!(response.status(), 200, "{id}");
        let (text, clean) = read_all(response).await;
        assert!(clean && text.ends_with("data: [DONE]\n\n"), "{id}: {text}");
    }
    let want = f64::from(sent);
    let m = metrics_until(serving.addr, "a verdict per request", |m| {
        verdicts(m, "closer", "success", "done") == Some(want)
    })
    .await;
    assert_eq!(
        verdicts(&m, "closer", "failure", "send_failed"),
        None,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_closes_every_connection_under_its_request_is_tried_twice_and_failed() {
    // Reads each request and closes without a word, on every connection: the resend
    // meets the same, and that second close is the worker's failure.
    let requests = Arc::new(AtomicUsize::new(0));
    let counted = requests.clone();
    let worker = raw_worker(move |mut socket| {
        let counted = counted.clone();
        async move {
            if read_request(&mut socket).await {
                counted.fetch_add(1, Ordering::SeqCst);
            }
        }
    })
    .await;
    let serving = serve::start(&args(vec![format!("slammer=http://{worker}")]))
        .await
        .expect("serve");
    for (n, id) in ["s1", "s2"].into_iter().enumerate() {
        let response = post(serving.addr, Some(id), r#"{"stream":true}"#).await;
        assert_eq!(response.status(), 502, "{id}");
        let text = within("body", response.text()).await.expect("body");
        assert!(!text.contains(&worker.to_string()), "{text}");
        // Sent once more, not again and again.
        assert_eq!(requests.load(Ordering::SeqCst), 2 * (n + 1), "{id}");
    }
    let m = scrape(serving.addr).await;
    assert_eq!(
        verdicts(&m, "slammer", "failure", "send_failed"),
        Some(2.0),
        "{m}"
    );
}
