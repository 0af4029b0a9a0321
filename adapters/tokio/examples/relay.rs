//! A gateway's relay, every piece in place: a breaker permit per request, held in a
//! `RecordGuard` while the worker's response head is awaited; the status line judged
//! by the `StatusPolicy` before a byte is tracked (a 429 or a 5xx goes to the client as
//! it came); a 2xx tracked and handed to the client by a task running
//! `sluice_tokio::forward_with` with the worker's progress timers.
//!
//! Self-contained on 127.0.0.1: a mock worker, the gateway and a client, in one
//! process. The client makes six requests; each line shows what the client saw and
//! the verdict the worker's breaker heard. It exits by itself in about two seconds.
//! Run with `cargo run -p sluice-tokio --example relay`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures_util::{StreamExt, stream};
use sluice::breaker::{Classified, Config, SharedBreaker, StatusPolicy};
use sluice::forward::ForwardOptions;
use sluice::sse::SseRules;
use sluice::{Cause, Outcome, RecordGuard, Recorder, TrackedStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// What the gateway shares between requests.
#[derive(Clone)]
struct Gateway {
    client: reqwest::Client,
    /// The worker's breaker: two failures in a row open it.
    breaker: SharedBreaker,
    worker: String,
    /// The worker's timers; short, so that the example runs in two seconds.
    options: ForwardOptions,
    /// Where this example's recorder reports each verdict, for the client to print.
    verdicts: mpsc::UnboundedSender<Outcome>,
}

/// Relays one streaming request to the worker; its breaker hears exactly one verdict.
async fn relay(State(gateway): State<Gateway>, body: String) -> Response {
    let permit = match gateway.breaker.try_acquire_owned() {
        Ok(permit) => permit,
        Err(rejected) => {
            let secs = rejected.retry_after.map_or(1, |d| d.as_secs().max(1));
            let mut response = StatusCode::SERVICE_UNAVAILABLE.into_response();
            let retry_after = HeaderValue::from(secs);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, retry_after);
            return response;
        }
    };
    // The recorder: the permit (which tells the breaker), and this example's log.
    let verdicts = gateway.verdicts.clone();
    let recorder = move |outcome: Outcome| {
        permit.record(outcome);
        let _ = verdicts.send(outcome);
    };
    // Held across the wait for the worker's response head: if the client leaves now,
    // hyper drops this future, and the guard records Abandoned (the breaker counts
    // nothing, and a half-open probe slot is given back).
    let guard = RecordGuard::new(recorder);
    let request = gateway.client.post(&gateway.worker).body(body);
    let upstream = match request.send().await {
        Ok(upstream) => upstream,
        Err(_) => {
            let failed = StatusPolicy::default().classify_send_failure(); // Failure
            guard.record(Outcome::new(failed, Cause::SendFailed, 0, 0));
            return StatusCode::BAD_GATEWAY.into_response();
        }
    };
    let status = upstream.status();
    if let Classified::Settle(verdict) = StatusPolicy::default().classify(status.as_u16()) {
        // 5xx: Failure; 429 and other 4xx: Abandoned (the client's doing). The client
        // gets the worker's answer as it came: status, content type and body.
        guard.record(Outcome::new(verdict, Cause::Status, 0, 0));
        let content_type = upstream.headers().get(header::CONTENT_TYPE).cloned();
        let mut response = (status, Body::from_stream(upstream.bytes_stream())).into_response();
        if let Some(content_type) = content_type {
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, content_type);
        }
        return response;
    }
    // 2xx: the stream decides, with the guard as its recorder. A timer that fails the
    // stream reaches the client as the API's error event, not as a clean end.
    let tracked = TrackedStream::new(upstream.bytes_stream(), guard)
        .with_sse(SseRules::openai_chat())
        .with_failure_event();
    let (tx, rx) = mpsc::channel(16);
    let options = gateway.options;
    tokio::spawn(async move {
        // Returns when the stream ended, a timer fired, or the client left (its
        // receiver dropped: the worker's connection is closed at once).
        sluice_tokio::forward_with(tracked, &tx, options).await;
    });
    let mut response = Body::from_stream(ReceiverStream::new(rx)).into_response();
    let event_stream = HeaderValue::from_static("text/event-stream");
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, event_stream);
    response
}

/// The mock worker: the request body says how it answers.
async fn worker(body: String) -> Response {
    const PREAMBLE: &str = "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\n";
    const TOKEN: &str = "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n";
    let paced = |events: Vec<&'static str>| {
        stream::iter(events).then(|event| async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            Ok::<_, Infallible>(event)
        })
    };
    let sse = |body: Body| {
        let mut response = body.into_response();
        let event_stream = HeaderValue::from_static("text/event-stream");
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, event_stream);
        response
    };
    match body.as_str() {
        // A whole answer: the preamble, three tokens, `[DONE]`.
        "answer" => sse(Body::from_stream(paced(vec![
            PREAMBLE,
            TOKEN,
            TOKEN,
            TOKEN,
            "data: [DONE]\n\n",
        ]))),
        // Too many requests, with a JSON body.
        "busy" => {
            let mut response =
                (StatusCode::TOO_MANY_REQUESTS, r#"{"error":"busy"}"#).into_response();
            let json = HeaderValue::from_static("application/json");
            response.headers_mut().insert(header::CONTENT_TYPE, json);
            response
        }
        // The head, the preamble, then only keep-alives: no token ever comes.
        "pings" => {
            let pings = stream::repeat(": ping\n\n").then(|ping| async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                Ok::<_, Infallible>(ping)
            });
            sse(Body::from_stream(paced(vec![PREAMBLE]).chain(pings)))
        }
        // No response head at all (dropped when the gateway lets go of the request).
        _ => std::future::pending().await,
    }
}

async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(async move { axum::serve(listener, router).await.expect("serve") });
    addr
}

#[tokio::main]
async fn main() {
    let worker = serve(Router::new().route("/v1/chat/completions", post(worker))).await;
    let (verdicts, mut heard) = mpsc::unbounded_channel();
    let gateway = Gateway {
        client: reqwest::Client::new(),
        breaker: SharedBreaker::new(
            Config::default()
                .failure_threshold(2)
                .open_duration(Duration::from_secs(30)),
        ),
        worker: format!("http://{worker}/v1/chat/completions"),
        options: ForwardOptions::default()
            .first_token_timeout(Duration::from_millis(500)) // prefill: no token yet
            .idle_timeout(Duration::from_millis(500)) // between tokens
            .deadline(Duration::from_secs(10)), // the whole answer
        verdicts,
    };
    let breaker = gateway.breaker.clone();
    let gateway = serve(
        Router::new()
            .route("/v1/chat/completions", post(relay))
            .with_state(gateway),
    )
    .await;
    let url = format!("http://{gateway}/v1/chat/completions");
    let client = reqwest::Client::new();

    let requests = [
        ("a whole answer", "answer", None),
        ("the worker is busy", "busy", None),
        (
            "the client leaves before the head",
            "no_head",
            Some(Duration::from_millis(300)),
        ),
        ("keep-alives, no token", "pings", None),
        ("keep-alives again", "pings", None),
        ("the breaker is open", "answer", None),
    ];
    for (what, ask, give_up_after) in requests {
        println!("{what}:");
        let mut request = client.post(&url).body(ask);
        if let Some(after) = give_up_after {
            request = request.timeout(after);
        }
        match request.send().await {
            Ok(response) => {
                let status = response.status();
                let retry_after = response.headers().get(header::RETRY_AFTER).cloned();
                let body = response.text().await.unwrap_or_else(|e| format!("<{e}>"));
                println!("  client: {status}, retry-after {retry_after:?}");
                for line in body.lines().filter(|l| !l.is_empty()) {
                    println!("  client:   {line}");
                }
            }
            Err(e) => println!("  client: gave up ({e})"),
        }
        if what == "the breaker is open" {
            // Rejected before the worker was asked: nothing to record.
            println!("  breaker: {:?}", breaker.state());
            continue;
        }
        let heard = tokio::time::timeout(Duration::from_secs(5), heard.recv())
            .await
            .expect("a verdict within five seconds")
            .expect("the gateway is up");
        // `chunks` counts what the worker sent: keep-alives and the preamble too.
        println!(
            "  verdict: {} ({}), after {} chunks from the worker; breaker: {:?}",
            heard.verdict,
            heard.cause,
            heard.chunks,
            breaker.state()
        );
    }
}
