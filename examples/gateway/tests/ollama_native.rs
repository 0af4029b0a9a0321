//! Ollama's native API through `serve` on loopback: `/api/chat` and `/api/generate`
//! answered with `application/x-ndjson` are judged by the NDJSON rules, from the
//! response's content type: a clean stream is Success (`done`), an `{"error": ...}`
//! line on the 200 and a stream cut before its done line are the worker's Failure.
//! The token counts of the done lines (`prompt_eval_count`, `eval_count`) reach
//! `gen_ai_client_token_usage`.

mod common;

use std::net::SocketAddr;

use common::{
    assert_token_usage, client, metrics_until, named_streams_worker, read_all, token_usage,
    verdicts, within,
};
use sluice_gateway::serve::{self, ServeArgs};

const CHAT_CLEAN: &str = concat!(
    "{\"model\":\"llama3.2\",\"message\":{\"role\":\"assistant\",\"content\":\"Hi\"},\"done\":false}\n",
    "{\"model\":\"llama3.2\",\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done_reason\":\"stop\",",
    "\"done\":true,\"prompt_eval_count\":26,\"eval_count\":1}\n",
);

const CHAT_ERROR: &str = concat!(
    "{\"model\":\"llama3.2\",\"message\":{\"role\":\"assistant\",\"content\":\"Hi\"},\"done\":false}\n",
    "{\"error\":\"an error was encountered while running the model: unexpected EOF\"}\n",
);

const GENERATE_CUT: &str = concat!(
    "{\"model\":\"llama3.2\",\"response\":\"Why\",\"done\":false}\n",
    "{\"model\":\"llama3.2\",\"response\":\" not\",\"done\":false}\n",
);

const GENERATE_CLEAN: &str = concat!(
    "{\"model\":\"llama3.2\",\"response\":\"Why\",\"done\":false}\n",
    "{\"model\":\"llama3.2\",\"response\":\"\",\"done\":true,\"prompt_eval_count\":4,\"eval_count\":2}\n",
);

/// A worker that answers each request with the NDJSON stream its body names.
async fn worker() -> SocketAddr {
    const STREAMS: &[(&str, &str)] = &[
        ("chat-clean", CHAT_CLEAN),
        ("chat-error", CHAT_ERROR),
        ("generate-cut", GENERATE_CUT),
        ("generate-clean", GENERATE_CLEAN),
    ];
    named_streams_worker(
        "application/x-ndjson",
        &["/api/chat", "/api/generate"],
        STREAMS,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ollama_native_streams_get_their_verdicts() {
    let worker = worker().await;
    let args = ServeArgs {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        // One failure must not open the breaker for the next requests.
        ..ServeArgs::new(vec![format!("w=http://{worker}")])
    };
    let serving = serve::start(&args).await.expect("serve");
    let gateway = serving.addr;
    for (path, which, stream) in [
        ("/api/chat", "chat-clean", CHAT_CLEAN),
        ("/api/chat", "chat-error", CHAT_ERROR),
        ("/api/generate", "generate-cut", GENERATE_CUT),
        ("/api/generate", "generate-clean", GENERATE_CLEAN),
    ] {
        let body = format!("{{\"model\":\"llama3.2\",\"note\":\"{which}\"}}");
        let send = client()
            .post(format!("http://{gateway}{path}"))
            .header("content-type", "application/json")
            .body(body)
            .send();
        let response = within("response", send)
            .await
            .unwrap_or_else(|e| panic!("{which}: {e}"));
        assert_eq!(response.status(), 200, "{which}");
        let ndjson = response
            .headers()
            .get("content-type")
            .is_some_and(|v| v == "application/x-ndjson");
        assert!(ndjson, "{which}: the worker's content type is passed on");
        let (text, clean) = read_all(response).await;
        // The worker's lines reach the client as they were (its own error line
        // too), and the body ends cleanly: a cut stream ends in Ollama's own error
        // line, never in a done line of the gateway's making.
        assert!(text.starts_with(stream), "{which}: {text:?}");
        assert!(clean, "{which}: {text:?}");
        let added = &text[stream.len()..];
        if which.ends_with("cut") {
            let line: serde_json::Value = serde_json::from_str(added.trim_start_matches('\n'))
                .unwrap_or_else(|e| panic!("{which}: {e}: {added:?}"));
            assert_eq!(line["error"], "upstream w failed: truncated", "{which}");
        } else {
            assert_eq!(added, "", "{which}: nothing added");
        }
    }
    let text = metrics_until(gateway, "the four verdicts and their token usage", |text| {
        verdicts(text, "w", "success", "done") == Some(2.0)
            && verdicts(text, "w", "failure", "error_event") == Some(1.0)
            && verdicts(text, "w", "failure", "truncated") == Some(1.0)
            && token_usage(text, "w", "count", "success", "output") == Some(2.0)
    })
    .await;
    // The done lines' counts: prompts 26 and 4, outputs 1 and 2. The failed streams
    // reported none (their lines stand in for output).
    assert_token_usage(
        &text,
        "w",
        &[
            ("count", "success", "input", Some(2.0)),
            ("sum", "success", "input", Some(30.0)),
            ("sum", "success", "output", Some(3.0)),
            ("count", "failure", "input", None),
        ],
    );
}
