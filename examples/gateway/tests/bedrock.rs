//! A worker that answers in AWS Bedrock's binary event stream
//! (`application/vnd.amazon.eventstream`, `ConverseStream`) is judged by the Bedrock
//! rules whatever the route: the verdict rules come from the response's content type
//! (SPEC section 8). Frames shaped as the wire corpus's
//! (`tests/wire/bedrock-*.eventstream`), encoded with their CRCs by the fuzz target's
//! encoder, go through `serve` on loopback in 7-byte chunks. The client gets the
//! worker's bytes as they were sent (the binary stream has no failure event to add, so
//! a stream that did not end in-band is cut), and the worker gets the corpus's
//! verdict: `messageStop` is Success, an exception frame or a corrupt CRC a Failure
//! (`error_event`), a stream cut before `messageStop` or inside a frame a Failure
//! (`truncated`).

mod common;

use std::net::SocketAddr;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::Response;
use axum::routing::post;
use common::{metrics_until, post_to, series, serve_router, within};
use sluice_gateway::serve::{self, ServeArgs};

// The frame encoder of the event-stream fuzz target (CRCs right).
#[allow(unreachable_pub, dead_code)]
#[path = "../../../fuzz/replay/eventstream_splits.rs"]
mod eventstream_splits;

const START: (&str, &str, &str) = ("event", "messageStart", r#"{"role":"assistant"}"#);
const DELTA: (&str, &str, &str) = (
    "event",
    "contentBlockDelta",
    r#"{"contentBlockIndex":0,"delta":{"text":"The sky"}}"#,
);
const STOP: (&str, &str, &str) = ("event", "messageStop", r#"{"stopReason":"end_turn"}"#);
const METADATA: (&str, &str, &str) = (
    "event",
    "metadata",
    r#"{"usage":{"inputTokens":14,"outputTokens":6,"totalTokens":20}}"#,
);
const EXCEPTION: (&str, &str, &str) = (
    "exception",
    "modelStreamErrorException",
    r#"{"message":"Model stream error","originalStatusCode":500}"#,
);

fn frames(frames: &[(&str, &str, &str)]) -> Vec<u8> {
    frames
        .iter()
        .flat_map(|(kind, event, payload)| eventstream_splits::bedrock(kind, event, payload))
        .collect()
}

/// The answer a request body names (the shapes of the wire corpus's transcripts).
fn transcript(name: &str) -> Vec<u8> {
    match name {
        "normal" => frames(&[START, DELTA, DELTA, STOP, METADATA]),
        "exception" => frames(&[START, DELTA, EXCEPTION]),
        "truncated" => frames(&[START, DELTA]),
        "cut-inside-frame" => {
            let mut bytes = frames(&[START, DELTA, DELTA]);
            bytes.truncate(bytes.len() - 9);
            bytes
        }
        "corrupt-crc" => {
            let mut bytes = frames(&[START, DELTA, STOP]);
            let last = bytes.len() - 1;
            bytes[last] ^= 1;
            bytes
        }
        _ => panic!("no transcript {name}"),
    }
}

/// A worker whose chat route answers the transcript the request body names, in
/// 7-byte chunks (frames and their preludes split across chunks).
async fn worker() -> SocketAddr {
    let answer = |body: Bytes| async move {
        let name = String::from_utf8_lossy(&body).into_owned();
        let bytes = Bytes::from(transcript(&name));
        let chunks: Vec<_> = (0..bytes.len())
            .step_by(7)
            .map(|at| Ok::<_, std::io::Error>(bytes.slice(at..bytes.len().min(at + 7))))
            .collect();
        Response::builder()
            .header(header::CONTENT_TYPE, "application/vnd.amazon.eventstream")
            .body(Body::from_stream(futures_util::stream::iter(chunks)))
            .expect("response")
    };
    serve_router(Router::new().route("/v1/chat/completions", post(answer))).await
}

/// Reads a response body to its end: its bytes, and whether it ended cleanly.
async fn read_bytes(mut response: reqwest::Response) -> (Vec<u8>, bool) {
    let mut bytes = Vec::new();
    loop {
        match within("chunk", response.chunk()).await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            Ok(None) => return (bytes, true),
            Err(_) => return (bytes, false),
        }
    }
}

fn verdict_count(metrics: &str, verdict: &str, cause: &str) -> f64 {
    series(
        metrics,
        &format!("sluice_verdicts_total{{worker=\"w\",verdict=\"{verdict}\",cause=\"{cause}\"}}"),
    )
    .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bedrock_event_streams_get_the_bedrock_verdicts_whatever_the_route() {
    let worker = worker().await;
    let args = ServeArgs {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        failure_threshold: 100,
        ..ServeArgs::new(vec![format!("w=http://{worker}")])
    };
    let serving = serve::start(&args).await.expect("serve");
    let cases = [
        ("normal", "success", "done"),
        ("exception", "failure", "error_event"),
        ("truncated", "failure", "truncated"),
        ("cut-inside-frame", "failure", "truncated"),
        ("corrupt-crc", "failure", "error_event"),
    ];
    for (n, (name, verdict, cause)) in cases.into_iter().enumerate() {
        let response = post_to(serving.addr, "/v1/chat/completions", None, name).await;
        assert_eq!(response.status(), 200, "{name}");
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/vnd.amazon.eventstream"
        );
        let (bytes, clean) = read_bytes(response).await;
        assert_eq!(
            bytes,
            transcript(name),
            "{name}: the worker's bytes as sent"
        );
        // The binary stream has no failure event to add: a stream that did not end
        // in-band is cut, never ended cleanly.
        assert_eq!(clean, cause != "truncated", "{name}");
        // This verdict is recorded once more than the cases before it gave it.
        let before = cases[..n]
            .iter()
            .filter(|(_, v, c)| (*v, *c) == (verdict, cause))
            .count() as f64;
        metrics_until(serving.addr, name, |m| {
            verdict_count(m, verdict, cause) == before + 1.0
        })
        .await;
    }
    let metrics = metrics_until(serving.addr, "every verdict", |_| true).await;
    assert_eq!(verdict_count(&metrics, "success", "done"), 1.0, "{metrics}");
    assert_eq!(
        verdict_count(&metrics, "failure", "error_event"),
        2.0,
        "{metrics}"
    );
    assert_eq!(
        verdict_count(&metrics, "failure", "truncated"),
        2.0,
        "{metrics}"
    );
}
