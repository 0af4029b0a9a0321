//! Gemini's routes through `serve` on loopback: `:streamGenerateContent?alt=sse`
//! reaches the worker with its model and query as sent and is judged by the Gemini
//! rules (the chunk with a `finishReason` ends it; an `error` object on the 200 and a
//! stream cut before its last chunk are the worker's Failure); `:generateContent` is
//! tracked as a plain answer. The token usage the clean stream reported (its
//! `usageMetadata`, thinking tokens counted as output) reaches
//! `gen_ai_client_token_usage`.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{Uri, header};
use axum::response::Response;
use axum::routing::post;
use common::{
    assert_token_usage, client, metrics_until, read_all, serve_router, token_usage, verdicts,
    within,
};
use sluice_gateway::serve::{self, ServeArgs};

const CHUNK: &str = "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hi\"}],\"role\":\"model\"},\"index\":0}]}\r\n\r\n";
const LAST: &str = "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"!\"}],\"role\":\"model\"},\"finishReason\":\"STOP\",\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":3,\"candidatesTokenCount\":2,\"totalTokenCount\":9,\"thoughtsTokenCount\":4}}\r\n\r\n";
const ERROR: &str = "data: {\"error\":{\"code\":503,\"message\":\"The model is overloaded.\",\"status\":\"UNAVAILABLE\"}}\r\n\r\n";
const WHOLE: &str =
    "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hi!\"}]},\"finishReason\":\"STOP\"}]}";

/// A Gemini worker: each request's body names the answer it gets; every path and
/// query it was sent is kept.
async fn worker(seen: Arc<Mutex<Vec<String>>>) -> SocketAddr {
    let answer = move |uri: Uri, body: Bytes| {
        let seen = seen.clone();
        async move {
            let target = uri.path_and_query().map(|pq| pq.as_str().to_owned());
            seen.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(target.unwrap_or_default());
            let text = String::from_utf8_lossy(&body);
            let (content_type, answer) = if text.contains("whole") {
                ("application/json", WHOLE.to_owned())
            } else if text.contains("error") {
                ("text/event-stream", format!("{CHUNK}{ERROR}"))
            } else if text.contains("cut") {
                ("text/event-stream", CHUNK.to_owned())
            } else {
                ("text/event-stream", format!("{CHUNK}{LAST}"))
            };
            Response::builder()
                .header(header::CONTENT_TYPE, content_type)
                .body(Body::from(answer))
                .expect("response")
        }
    };
    serve_router(Router::new().route("/v1beta/models/{*call}", post(answer))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_streams_get_their_verdicts_and_reach_the_worker_as_sent() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let worker = worker(seen.clone()).await;
    let args = ServeArgs {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..ServeArgs::new(vec![format!("g=http://{worker}")])
    };
    let serving = serve::start(&args).await.expect("serve");
    let gateway = serving.addr;
    let stream = "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse";
    let cases = [
        (stream, "clean", format!("{CHUNK}{LAST}")),
        (stream, "error", format!("{CHUNK}{ERROR}")),
        (stream, "cut", CHUNK.to_owned()),
        (
            "/v1beta/models/gemini-2.0-flash:generateContent",
            "whole",
            WHOLE.to_owned(),
        ),
    ];
    for (path, which, want) in &cases {
        let body = format!("{{\"contents\":[],\"note\":\"{which}\"}}");
        let send = client()
            .post(format!("http://{gateway}{path}"))
            .header("content-type", "application/json")
            .body(body)
            .send();
        let response = within("response", send).await.expect("answer");
        assert_eq!(response.status(), 200, "{which}");
        let (text, _) = read_all(response).await;
        assert!(text.starts_with(want.as_str()), "{which}: {text}");
    }
    let text = metrics_until(gateway, "four verdicts and their token usage", |t| {
        verdicts(t, "g", "success", "done") == Some(1.0)
            && verdicts(t, "g", "failure", "error_event") == Some(1.0)
            && verdicts(t, "g", "failure", "truncated") == Some(1.0)
            && verdicts(t, "g", "success", "end") == Some(1.0)
            && token_usage(t, "g", "count", "success", "output") == Some(1.0)
    })
    .await;
    // The clean stream's usageMetadata: 3 prompt tokens; 2 candidates' and 4
    // thoughts' tokens as output. The plain answer has no scanner, so no usage and
    // no progress; the failed streams reported none (their progress stands in for
    // output).
    assert_token_usage(
        &text,
        "g",
        &[
            ("count", "success", "input", Some(1.0)),
            ("sum", "success", "input", Some(3.0)),
            ("sum", "success", "output", Some(6.0)),
            ("count", "failure", "input", None),
        ],
    );
    let targets = seen.lock().unwrap_or_else(PoisonError::into_inner).clone();
    assert_eq!(
        targets,
        cases
            .iter()
            .map(|(path, _, _)| (*path).to_owned())
            .collect::<Vec<_>>(),
        "the model and the query reach the worker as the client sent them"
    );
    // Another method on the models route is no route.
    let other = client()
        .post(format!(
            "http://{gateway}/v1beta/models/gemini-2.0-flash:countTokens"
        ))
        .body("{}")
        .send();
    assert_eq!(
        within("response", other).await.expect("answer").status(),
        404
    );
}
