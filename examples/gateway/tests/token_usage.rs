//! The OpenTelemetry GenAI token-usage histogram, `gen_ai_client_token_usage`, on
//! loopback (`serve::start` in front of a worker that reports usage): each request's
//! input and output tokens as its stream reported them, by worker and verdict; a
//! stream that reported none counts its progress events as output.

mod common;

use std::net::SocketAddr;

use common::{
    assert_token_usage, metrics_until, named_streams_worker, post_to, read_all, series, token_usage,
};
use sluice_gateway::serve::{self, ServeArgs};

const CHAT_USAGE_1: &str = concat!(
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}],\"usage\":null}\n\n",
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\n",
    "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":5,\"total_tokens\":17}}\n\n",
    "data: [DONE]\n\n",
);

const CHAT_USAGE_2: &str = concat!(
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"usage\"}}]}\n\n",
    "data: {\"choices\":[],\"usage\":{\"completion_tokens\":70,\"prompt_tokens\":1000}}\n\n",
    "data: [DONE]\n\n",
);

/// No usage: three tokens, then `[DONE]` (four progress events).
const CHAT_NO_USAGE: &str = concat!(
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\n",
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"b\"}}]}\n\n",
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"c\"}}]}\n\n",
    "data: [DONE]\n\n",
);

/// Anthropic Messages: 16 input tokens at the start, 38 output at the end; an
/// in-band error after them: the usage counts under the Failure verdict.
const ANTHROPIC_FAILED: &str = concat!(
    "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"content\":[],",
    "\"usage\":{\"input_tokens\":16,\"output_tokens\":1}}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"x\"}}\n\n",
    "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":38}}\n\n",
    "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\"}}\n\n",
);

/// A worker that answers each request with the stream its body names.
async fn worker() -> SocketAddr {
    const STREAMS: &[(&str, &str)] = &[
        ("usage-1", CHAT_USAGE_1),
        ("usage-2", CHAT_USAGE_2),
        ("no-usage", CHAT_NO_USAGE),
        ("anthropic", ANTHROPIC_FAILED),
    ];
    let paths = ["/v1/chat/completions", "/v1/messages"];
    named_streams_worker("text/event-stream", &paths, STREAMS).await
}

const NAME: &str = "gen_ai_client_token_usage";

/// `gen_ai_client_token_usage_{stat}` of worker `w`.
fn usage(text: &str, stat: &str, verdict: &str, kind: &str) -> Option<f64> {
    token_usage(text, "w", stat, verdict, kind)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_usage_histogram_counts_what_the_streams_reported() {
    let worker = worker().await;
    let args = ServeArgs {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..ServeArgs::new(vec![format!("w=http://{worker}")])
    };
    let serving = serve::start(&args).await.expect("serve");
    let gateway = serving.addr;
    for (path, which) in [
        ("/v1/chat/completions", "usage-1"),
        ("/v1/chat/completions", "usage-2"),
        ("/v1/chat/completions", "no-usage"),
        ("/v1/messages", "anthropic"),
    ] {
        let body = format!("{{\"stream\":true,\"model\":\"m\",\"note\":\"{which}\"}}");
        let response = post_to(gateway, path, Some(which), body).await;
        assert_eq!(response.status(), 200, "{which}");
        read_all(response).await;
    }
    let text = metrics_until(gateway, "four verdicts' token usage", |t| {
        usage(t, "count", "success", "output") == Some(3.0)
            && usage(t, "count", "failure", "output") == Some(1.0)
    })
    .await;
    // Successes: inputs 12 and 1000 (the stream without usage reported none);
    // outputs 5, 70, and 4 progress events for the one without usage. The failed
    // Anthropic stream: its usage all the same.
    assert_token_usage(
        &text,
        "w",
        &[
            ("count", "success", "input", Some(2.0)),
            ("sum", "success", "input", Some(1012.0)),
            ("sum", "success", "output", Some(79.0)),
            ("count", "failure", "input", Some(1.0)),
            ("sum", "failure", "input", Some(16.0)),
            ("sum", "failure", "output", Some(38.0)),
        ],
    );
    // OpenTelemetry's buckets: 12 and 1000 fall at or below 16 and 1024.
    let bucket = |le: &str| {
        series(
            &text,
            &format!(
                "{NAME}_bucket{{le=\"{le}\",worker=\"w\",verdict=\"success\",gen_ai_token_type=\"input\"}}"
            ),
        )
    };
    assert_eq!(
        (bucket("4.0"), bucket("16.0"), bucket("1024.0")),
        (Some(0.0), Some(1.0), Some(2.0)),
        "{text}"
    );
    assert!(text.contains("# HELP gen_ai_client_token_usage "), "{text}");
    assert!(
        text.contains("progress events"),
        "the help says output falls back to progress"
    );
}
