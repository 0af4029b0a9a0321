//! The worker's progress timers and the failure event, on loopback: `serve` (or a
//! gateway on a manual breaker clock) in front of workers that answer 200 and then
//! misbehave: keep-alives and no tokens, a role chunk and silence, a stall mid-stream,
//! tokens past the deadline, a half-open probe that hangs, a connection broken after
//! the first token, a stream cut inside an event, a JSON body that stalls. The timeouts are tens of milliseconds, set by the flags; every
//! wait in a test is on the gateway's answer, never a sleep.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing;
use common::{event, post, post_to, read_all, serve_router, verdicts, within};
use futures_util::{StreamExt, stream};
use sluice::breaker::{Config, ManualClock, Reason, State as BreakerState};
use sluice::timers::Timeouts;
use sluice_gateway::gateway::{Gateway, GatewayEvent, Options, WorkerSpec};
use sluice_gateway::mock::MockWorker;
use sluice_gateway::serve::{self, ServeArgs, Serving};
use tokio::sync::mpsc::UnboundedReceiver;

const TOKEN: &str = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n";

/// Tells when it is dropped: the gateway closed the worker's connection.
struct Closed(tokio::sync::mpsc::UnboundedSender<()>);

impl Drop for Closed {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

/// A worker whose chat route answers 200 `text/event-stream` with the body
/// `events` makes, per request; each body's drop is sent on the returned channel.
async fn sse_worker<S>(
    events: impl Fn() -> S + Clone + Send + Sync + 'static,
) -> (SocketAddr, UnboundedReceiver<()>)
where
    S: futures_util::Stream<Item = Bytes> + Send + 'static,
{
    let (closed, closes) = tokio::sync::mpsc::unbounded_channel();
    let handle = move || {
        let events = events.clone();
        let closed = closed.clone();
        async move {
            let guard = Closed(closed);
            let body = events().map(move |event| {
                let _held = &guard;
                Ok::<_, std::io::Error>(event)
            });
            (
                [(header::CONTENT_TYPE, "text/event-stream")],
                Body::from_stream(body),
            )
                .into_response()
        }
    };
    let router = Router::new().route("/v1/chat/completions", routing::post(handle));
    (serve_router(router).await, closes)
}

/// One token, then only keep-alive comments every 10 ms, forever.
fn token_then_pings() -> impl futures_util::Stream<Item = Bytes> + Send {
    let pings = stream::unfold((), |()| async {
        tokio::time::sleep(Duration::from_millis(10)).await;
        Some((Bytes::from_static(b": ping\n\n"), ()))
    });
    stream::iter([Bytes::from_static(TOKEN.as_bytes())]).chain(pings)
}

/// `events`, then nothing more, with the connection held open.
fn then_silence(
    events: Vec<&'static str>,
) -> impl futures_util::Stream<Item = Bytes> + Send + 'static {
    stream::iter(events.into_iter().map(|e| Bytes::from_static(e.as_bytes())))
        .chain(stream::pending())
}

fn args(worker: SocketAddr, tweak: impl FnOnce(&mut ServeArgs)) -> ServeArgs {
    let mut args = ServeArgs {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        failure_threshold: 10,
        success_threshold: 1,
        open_secs: 3600,
        first_token_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(10),
        deadline: Duration::ZERO,
        ..ServeArgs::new(vec![format!("w=http://{worker}")])
    };
    tweak(&mut args);
    args
}

async fn post_stream(gateway: SocketAddr) -> reqwest::Response {
    post(gateway, None, r#"{"stream":true}"#).await
}

/// The OpenAI-style error event's data, parsed, from the end of a stream: the last
/// event, and no `[DONE]` anywhere.
fn openai_error(text: &str) -> serde_json::Value {
    assert!(!text.contains("[DONE]"), "{text}");
    let last = text.trim_end().rsplit("\n\n").next().expect("an event");
    let data = last
        .strip_prefix("data: ")
        .unwrap_or_else(|| panic!("not a data event: {last:?}"));
    let value: serde_json::Value = serde_json::from_str(data).expect("JSON");
    assert!(value["error"]["message"].is_string(), "{value}");
    value
}

/// Posts one chat request and reads it to its end: a clean end of the body whose
/// last event is the error event, with this cause as its code.
async fn fails_with(serving: &Serving, cause: &str) -> String {
    let response = post_stream(serving.addr).await;
    assert_eq!(response.status(), 200);
    let (text, clean) = read_all(response).await;
    assert!(clean, "the body ends after the error event: {text}");
    let error = openai_error(&text);
    assert_eq!(error["error"]["code"], cause, "{text}");
    let message = error["error"]["message"].as_str().expect("message");
    assert!(message.contains("upstream w "), "{message}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alives_after_a_token_are_an_idle_timeout_that_opens_the_breaker() {
    let (worker, mut closes) = sse_worker(token_then_pings).await;
    let serving = serve::start(&args(worker, |a| {
        a.idle_timeout = Duration::from_millis(100);
        a.failure_threshold = 2;
    }))
    .await
    .expect("serve");
    for _ in 0..2 {
        let text = fails_with(&serving, "idle_timeout").await;
        assert!(text.starts_with(TOKEN) && text.contains(": ping"), "{text}");
        within("the worker's connection closed", closes.recv()).await;
    }
    let m = serving.gateway().metrics_text().expect("metrics");
    assert_eq!(
        verdicts(&m, "w", "failure", "idle_timeout"),
        Some(2.0),
        "{m}"
    );
    assert!(
        matches!(serving.gateway().states()[0], BreakerState::Open { .. }),
        "{m}"
    );
    // Open: the third request is refused at once.
    let response = post_stream(serving.addr).await;
    assert_eq!(response.status(), 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alives_and_no_token_are_a_first_token_timeout() {
    let pings =
        || stream::iter([Bytes::from_static(b": ping\n\n")]).chain(token_then_pings().skip(1));
    let (worker, _closes) = sse_worker(pings).await;
    let serving = serve::start(&args(worker, |a| {
        a.first_token_timeout = Duration::from_millis(100);
        a.idle_timeout = Duration::from_millis(30);
    }))
    .await
    .expect("serve");
    fails_with(&serving, "first_token_timeout").await;
    let m = serving.gateway().metrics_text().expect("metrics");
    assert_eq!(
        verdicts(&m, "w", "failure", "first_token_timeout"),
        Some(1.0),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_chunk_then_silence_is_a_first_token_timeout() {
    // The OpenAI preamble: the role, no content. SPEC section 2 says it is not
    // progress, and the core's scanner does not count it, so the first-token timer,
    // not the idle timer, fires.
    let role = "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\"}}]}\n\n";
    let (worker, mut closes) = sse_worker(move || then_silence(vec![role])).await;
    let serving = serve::start(&args(worker, |a| {
        a.first_token_timeout = Duration::from_millis(100);
        a.idle_timeout = Duration::from_millis(150);
    }))
    .await
    .expect("serve");
    let text = fails_with(&serving, "first_token_timeout").await;
    assert!(text.starts_with(role), "{text}");
    within("the worker's connection closed", closes.recv()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_mid_stream_is_an_idle_timeout() {
    let (worker, mut closes) = sse_worker(|| then_silence(vec![TOKEN, TOKEN, TOKEN])).await;
    let serving = serve::start(&args(worker, |a| {
        a.idle_timeout = Duration::from_millis(100);
    }))
    .await
    .expect("serve");
    let text = fails_with(&serving, "idle_timeout").await;
    assert_eq!(text.matches("\"hi\"").count(), 3, "{text}");
    within("the worker's connection closed", closes.recv()).await;
    let m = serving.gateway().metrics_text().expect("metrics");
    assert_eq!(
        verdicts(&m, "w", "failure", "idle_timeout"),
        Some(1.0),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_past_the_deadline_are_a_deadline_failure() {
    // A token every 10 ms, forever: neither the first-token nor the idle timer fires.
    let endless = || {
        stream::unfold((), |()| async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            Some((Bytes::from_static(TOKEN.as_bytes()), ()))
        })
    };
    let (worker, mut closes) = sse_worker(endless).await;
    let serving = serve::start(&args(worker, |a| {
        a.first_token_timeout = Duration::from_secs(5);
        a.idle_timeout = Duration::from_secs(5);
        a.deadline = Duration::from_millis(150);
    }))
    .await
    .expect("serve");
    let text = fails_with(&serving, "deadline").await;
    assert!(text.matches("\"hi\"").count() >= 2, "{text}");
    within("the worker's connection closed", closes.recv()).await;
    let m = serving.gateway().metrics_text().expect("metrics");
    assert_eq!(verdicts(&m, "w", "failure", "deadline"), Some(1.0), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_open_probe_that_hangs_is_failed_by_its_timer_and_the_breaker_reopens() {
    // The worker fails its first request (500), then answers 200 and hangs.
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = calls.clone();
    let handle = move || {
        let n = counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async move {
            if n == 0 {
                return StatusCode::INTERNAL_SERVER_ERROR.into_response();
            }
            let hang = stream::pending::<Result<Bytes, std::io::Error>>();
            (
                [(header::CONTENT_TYPE, "text/event-stream")],
                Body::from_stream(hang),
            )
                .into_response()
        }
    };
    let worker =
        serve_router(Router::new().route("/v1/chat/completions", routing::post(handle))).await;
    let clock = ManualClock::new();
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let options = Options {
        timeouts: Timeouts::new()
            .first_token(Duration::from_millis(100))
            .idle(Duration::from_millis(100)),
        ..Options::new(
            Config::default()
                .failure_threshold(1)
                .open_duration(Duration::from_secs(30)),
        )
    };
    let spec = WorkerSpec {
        name: "w".to_owned(),
        base: format!("http://{worker}"),
    };
    let gateway = Gateway::new(vec![spec], options, clock.clone(), Some(tx)).expect("gateway");
    let addr = serve_router(gateway.router()).await;

    let response = post_stream(addr).await;
    assert_eq!(response.status(), 500);
    drop(within("body", response.bytes()).await);
    assert!(matches!(gateway.states()[0], BreakerState::Open { .. }));

    // The open time passes: the next request is the probe, and the worker hangs.
    clock.advance(Duration::from_secs(31));
    let response = post_stream(addr).await;
    assert_eq!(response.status(), 200);
    let (text, clean) = read_all(response).await;
    assert!(clean, "{text}");
    assert_eq!(openai_error(&text)["error"]["code"], "first_token_timeout");
    event(
        &mut events,
        "the probe's failure reopening the breaker",
        |e| {
            matches!(e, GatewayEvent::Transition { worker: 0, transition }
            if transition.reason == Reason::ProbeFailed
                && matches!(transition.to, BreakerState::Open { .. }))
        },
    )
    .await;
    // The probe slot is free again, and the breaker open: refused at once.
    let response = post_stream(addr).await;
    assert_eq!(response.status(), 503);
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_broken_after_the_first_tokens_reaches_the_client_in_its_dialect() {
    let worker = MockWorker::start("w", Duration::from_millis(1))
        .await
        .expect("mock");
    worker.set_failing(true);
    let serving = serve::start(&args(worker.addr, |_| {}))
        .await
        .expect("serve");
    let body = r#"{"stream":true,"max_tokens":10}"#;

    let (text, clean) =
        read_all(post_to(serving.addr, "/v1/chat/completions", None, body).await).await;
    assert!(clean && text.contains("tok1"), "{text}");
    assert_eq!(openai_error(&text)["error"]["code"], "error_item");

    let (text, clean) = read_all(post_to(serving.addr, "/v1/messages", None, body).await).await;
    assert!(clean && text.contains("tok1"), "{text}");
    assert!(!text.contains("message_stop"), "{text}");
    let last = text.trim_end().rsplit("\n\n").next().expect("an event");
    let data = last
        .strip_prefix("event: error\ndata: ")
        .unwrap_or_else(|| panic!("not an Anthropic error event: {last:?}"));
    let error: serde_json::Value = serde_json::from_str(data).expect("JSON");
    assert_eq!(error["type"], "error", "{error}");
    assert!(error["error"]["message"].is_string(), "{error}");

    let (text, clean) = read_all(post_to(serving.addr, "/v1/responses", None, body).await).await;
    assert!(clean && text.contains("tok1"), "{text}");
    assert!(!text.contains("response.completed"), "{text}");
    let last = text.trim_end().rsplit("\n\n").next().expect("an event");
    let data = last
        .strip_prefix("event: response.failed\ndata: ")
        .unwrap_or_else(|| panic!("not a response.failed event: {last:?}"));
    let failed: serde_json::Value = serde_json::from_str(data).expect("JSON");
    assert_eq!(failed["response"]["status"], "failed", "{failed}");

    // A worker that ends its body cleanly before `[DONE]` is told the same way.
    worker.set_failing(false);
    let cut = r#"{"stream":true,"max_tokens":10,"mock_cut":true}"#;
    let (text, clean) =
        read_all(post_to(serving.addr, "/v1/chat/completions", None, cut).await).await;
    assert!(clean, "{text}");
    assert_eq!(openai_error(&text)["error"]["code"], "truncated");

    let m = serving.gateway().metrics_text().expect("metrics");
    assert_eq!(verdicts(&m, "w", "failure", "error_item"), Some(3.0), "{m}");
    assert_eq!(verdicts(&m, "w", "failure", "truncated"), Some(1.0), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_cut_inside_an_event_has_it_ended_before_the_error_event() {
    // The worker's body ends in the middle of a data line.
    const CUT: &str = "data: {\"choices\":[{\"index\":0,\"del";
    let (worker, _closes) =
        sse_worker(|| stream::iter([TOKEN, CUT].map(|e| Bytes::from_static(e.as_bytes())))).await;
    let serving = serve::start(&args(worker, |_| {})).await.expect("serve");
    let text = fails_with(&serving, "truncated").await;
    // One blank line ends the cut event; the error event is one of its own.
    assert!(
        text.starts_with(&format!("{TOKEN}{CUT}\n\ndata: {{\"error\":")),
        "{text}"
    );
    let error = openai_error(&text);
    assert_eq!(error["error"]["message"], "upstream w failed: truncated");
    let m = serving.gateway().metrics_text().expect("metrics");
    assert_eq!(verdicts(&m, "w", "failure", "truncated"), Some(1.0), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_without_sse_rules_that_stalls_is_cut_not_ended() {
    // A JSON answer whose worker sends half of it and then nothing.
    let handle = || async {
        let half = stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(
            b"{\"choices\":[",
        ))])
        .chain(stream::pending());
        (
            [(header::CONTENT_TYPE, "application/json")],
            Body::from_stream(half),
        )
            .into_response()
    };
    let worker =
        serve_router(Router::new().route("/v1/chat/completions", routing::post(handle))).await;
    let serving = serve::start(&args(worker, |a| {
        a.idle_timeout = Duration::from_millis(100);
    }))
    .await
    .expect("serve");
    let response = post_to(
        serving.addr,
        "/v1/chat/completions",
        None,
        r#"{"stream":false}"#,
    )
    .await;
    assert_eq!(response.status(), 200);
    let (text, clean) = read_all(response).await;
    assert!(!clean, "a cut body, not a clean end: {text}");
    assert_eq!(text, "{\"choices\":[");
    let m = serving.gateway().metrics_text().expect("metrics");
    assert_eq!(
        verdicts(&m, "w", "failure", "idle_timeout"),
        Some(1.0),
        "{m}"
    );
}

/// A worker whose Ollama chat route answers 200 `application/x-ndjson` with `lines`
/// and then, if `hold`, nothing more with the connection held open.
async fn ndjson_worker(lines: &'static [&'static str], hold: bool) -> SocketAddr {
    let handle = move || async move {
        let lines = stream::iter(lines.iter().map(|l| Bytes::from_static(l.as_bytes())));
        let body = if hold {
            lines.chain(stream::pending()).boxed()
        } else {
            lines.boxed()
        };
        (
            [(header::CONTENT_TYPE, "application/x-ndjson")],
            Body::from_stream(body.map(Ok::<_, std::io::Error>)),
        )
            .into_response()
    };
    serve_router(Router::new().route("/api/chat", routing::post(handle))).await
}

/// Checks that the gateway recorded exactly one Failure of worker `w` for `cause`.
fn failed_once(serving: &Serving, cause: &str) {
    let m = serving.gateway().metrics_text().expect("metrics");
    assert_eq!(verdicts(&m, "w", "failure", cause), Some(1.0), "{m}");
}

/// The last line of an NDJSON body, parsed, after checking that no line says done.
fn ollama_error(text: &str) -> serde_json::Value {
    let lines: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(lines.iter().all(|l| l["done"] != true), "{text}");
    assert!(text.ends_with('\n'), "{text:?}");
    let last = text.trim_end().rsplit('\n').next().expect("a line");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {last:?}"))
}

const OLLAMA_LINE: &str =
    "{\"message\":{\"role\":\"assistant\",\"content\":\"hi\"},\"done\":false}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ollama_stream_cut_inside_a_line_ends_in_ollama_s_error_line() {
    const CUT: &str = "{\"message\":{\"role\":\"assis";
    let worker = ndjson_worker(&[OLLAMA_LINE, CUT], false).await;
    let serving = serve::start(&args(worker, |_| {})).await.expect("serve");
    let body = r#"{"model":"m","messages":[]}"#;
    let response = post_to(serving.addr, "/api/chat", None, body).await;
    assert_eq!(response.status(), 200);
    let (text, clean) = read_all(response).await;
    assert!(clean, "{text}");
    // The cut line is ended; the error line is a line of its own.
    assert!(
        text.starts_with(&format!("{OLLAMA_LINE}{CUT}\n{{\"error\":")),
        "{text:?}"
    );
    let error = ollama_error(&text);
    assert_eq!(error["error"], "upstream w failed: truncated", "{text}");
    failed_once(&serving, "truncated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ollama_stream_that_stalls_ends_in_an_idle_timeout_error_line() {
    let worker = ndjson_worker(&[OLLAMA_LINE], true).await;
    let serving = serve::start(&args(worker, |a| {
        a.idle_timeout = Duration::from_millis(50);
    }))
    .await
    .expect("serve");
    let response = post_to(serving.addr, "/api/chat", None, r#"{"model":"m"}"#).await;
    assert_eq!(response.status(), 200);
    let (text, clean) = read_all(response).await;
    assert!(clean, "{text}");
    assert!(text.starts_with(OLLAMA_LINE), "{text:?}");
    let error = ollama_error(&text);
    assert_eq!(error["error"], "upstream w failed: idle_timeout", "{text}");
    failed_once(&serving, "idle_timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ollama_worker_s_own_error_line_gets_no_second_one() {
    const OWN: &str = "{\"error\":\"model runner crashed\"}\n";
    let worker = ndjson_worker(&[OLLAMA_LINE, OWN], false).await;
    let serving = serve::start(&args(worker, |_| {})).await.expect("serve");
    let response = post_to(serving.addr, "/api/chat", None, r#"{"model":"m"}"#).await;
    let (text, clean) = read_all(response).await;
    assert!(clean, "{text}");
    assert_eq!(text, format!("{OLLAMA_LINE}{OWN}"));
    failed_once(&serving, "error_event");
}
