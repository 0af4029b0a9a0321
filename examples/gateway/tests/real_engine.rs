//! The gateway's `serve` mode in front of a real inference engine: llama.cpp's
//! `llama-server` with a small model, built by `../shared/engines/llama-server.sh`.
//!
//! Skipped, with the reason printed, when the engine has not been built (building it
//! takes ~15 minutes, so CI does not), or when `SLUICE_SKIP_REAL_ENGINE` is set (as
//! `.ci/run` does, so CI never depends on an engine left on the machine). Otherwise: a streamed answer read to its end
//! on each of the three routes (chat, Anthropic messages, Responses) is a Success
//! with cause `done`; a client that leaves mid-stream is Abandoned with cause
//! `client_left`, and the engine's own `/metrics` shows it stopped decoding.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{client, within_for};
use sluice_gateway::serve::{self, ServeArgs};

const DEADLINE: Duration = Duration::from_secs(60);

/// The engine script and whether its build is there.
fn engine() -> Result<PathBuf, String> {
    if std::env::var_os("SLUICE_SKIP_REAL_ENGINE").is_some() {
        return Err("SLUICE_SKIP_REAL_ENGINE is set (CI does not depend on the engine)".into());
    }
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/engines/llama-server.sh");
    if !script.exists() {
        return Err(format!("no engine script at {}", script.display()));
    }
    let cache = std::env::var_os("SLUICE_ENGINE_CACHE")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CACHE_HOME").map(|c| PathBuf::from(c).join("sluice-engines"))
        })
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/sluice-engines"))
        })
        .ok_or("no cache directory")?;
    let bin = cache.join("build/bin/llama-server");
    if !bin.exists() {
        return Err(format!(
            "llama-server is not built ({}); run `{} build` once",
            bin.display(),
            script.display()
        ));
    }
    Ok(script)
}

/// A running engine, stopped when dropped.
struct Engine {
    script: PathBuf,
    port: u16,
}

impl Engine {
    fn start(script: PathBuf) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let status = Command::new("bash")
            .arg(&script)
            .args(["start", &port.to_string()])
            .status()
            .expect("run the engine script");
        assert!(status.success(), "the engine did not start");
        Self { script, port }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(&self.script)
            .args(["stop", &self.port.to_string()])
            .status();
    }
}

/// The value of the first series of `text` that starts with `series`.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.rsplit(' ').next()?;
        value.parse().ok()
    })
}

async fn get(client: &reqwest::Client, url: String) -> String {
    let response = within_for(DEADLINE, "scrape", client.get(url).send())
        .await
        .expect("scrape");
    response.text().await.expect("text")
}

/// A streamed request body for `path`'s API, asking for `max_tokens` tokens. Greedy
/// (temperature 0), with a prompt this model answers at length: llama-server's
/// `/v1/messages` drops `ignore_eos`, and a sampled answer to a short prompt ended
/// after four tokens now and then, before the client-leaves leg had read its eight.
fn body(path: &str, max_tokens: u32) -> String {
    let prompt = "Write a long story about a cat.";
    let body = match path {
        "/v1/responses" => serde_json::json!({
            "model": "smollm2",
            "input": prompt,
            "stream": true,
            "max_output_tokens": max_tokens,
            "ignore_eos": true,
            "temperature": 0,
        }),
        _ => serde_json::json!({
            "model": "smollm2",
            "messages": [{"role": "user", "content": prompt}],
            "stream": true,
            "max_tokens": max_tokens,
            "ignore_eos": true,
            "temperature": 0,
        }),
    };
    body.to_string()
}

/// The routes, each with the done event its stream must end with.
const ROUTES: [(&str, &str); 3] = [
    ("/v1/chat/completions", "data: [DONE]"),
    ("/v1/messages", "event: message_stop"),
    ("/v1/responses", "event: response.completed"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_in_front_of_llama_server() {
    let script = match engine() {
        Ok(script) => script,
        Err(reason) => {
            println!("skipped: {reason}");
            return;
        }
    };
    let engine = Engine::start(script);
    let args = ServeArgs {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..ServeArgs::new(vec![engine.url()])
    };
    let serving = serve::start(&args).await.expect("serve");
    let client = client();
    let gateway = format!("http://{}", serving.addr);
    let series = |verdict: &str, cause: &str| {
        format!(
            "sluice_verdicts_total{{worker=\"127.0.0.1:{}\",verdict=\"{verdict}\",cause=\"{cause}\"}}",
            engine.port
        )
    };

    // A whole answer on each route: Success, cause `done` (the route's done event).
    for (n, (path, done)) in ROUTES.into_iter().enumerate() {
        let response = within_for(
            DEADLINE,
            "answer",
            client
                .post(format!("{gateway}{path}"))
                .header("content-type", "application/json")
                .body(body(path, 16))
                .send(),
        )
        .await
        .expect("gateway answers");
        let status = response.status();
        let text = within_for(DEADLINE, "body", response.text())
            .await
            .expect("body");
        assert_eq!(status, 200, "{path}: {text}");
        assert!(text.contains(done), "{path}: {text}");
        let m = get(&client, format!("{gateway}/metrics")).await;
        assert_eq!(
            metric(&m, &series("success", "done")),
            Some(n as f64 + 1.0),
            "{path}: {m}"
        );
    }

    // A client that leaves after a few events of a long answer, on the chat and the
    // Anthropic routes.
    for (n, path) in ["/v1/chat/completions", "/v1/messages"]
        .into_iter()
        .enumerate()
    {
        let before = metric(
            &get(&client, format!("{}/metrics", engine.url())).await,
            "llamacpp:tokens_predicted_total",
        )
        .unwrap_or(0.0);
        let mut response = within_for(
            DEADLINE,
            "answer",
            client
                .post(format!("{gateway}{path}"))
                .header("content-type", "application/json")
                .body(body(path, 2_000))
                .send(),
        )
        .await
        .expect("gateway answers");
        // Events read, and of those the ones that carry text (a token each).
        let (mut seen, mut tokens): (u32, u32) = (0, 0);
        let text_marker = if path == "/v1/messages" {
            "\"text_delta\""
        } else {
            "\"content\":\""
        };
        let mut text = String::new();
        while tokens < 8 {
            let chunk = within_for(DEADLINE, "token", response.chunk())
                .await
                .expect("stream")
                .unwrap_or_else(|| panic!("{path}: the stream ended early: {text}"));
            let chunk = String::from_utf8_lossy(&chunk);
            text.push_str(&chunk);
            seen += chunk.matches("data: ").count() as u32;
            tokens += chunk.matches(text_marker).count() as u32;
        }
        drop(response);
        // The engine's own account: it stops processing, having decoded few more
        // tokens.
        let stopped = async {
            loop {
                let m = get(&client, format!("{}/metrics", engine.url())).await;
                if metric(&m, "llamacpp:requests_processing") == Some(0.0) {
                    return m;
                }
                tokio::time::sleep(Duration::from_millis(20)).await; // poll a remote process
            }
        };
        let m = within_for(DEADLINE, "the engine to stop decoding", stopped).await;
        let decoded = metric(&m, "llamacpp:tokens_predicted_total").unwrap_or(0.0) - before;
        println!(
            "{path}: the client read {seen} events ({tokens} with text) and left; the engine \
             decoded {decoded} tokens for that request, of 2000 asked: {} after the client left",
            decoded - f64::from(tokens)
        );
        // A few tokens of slack: the engine decodes ~100 tokens/s here, so 16 is the
        // time for the close to cross the gateway and reach the engine's loop, many
        // times over; a gateway that kept reading would run on towards 2,000.
        assert!(
            decoded <= f64::from(tokens) + 16.0,
            "{path}: the engine went on decoding after the client left: {decoded} tokens for {tokens} read"
        );
        let m = get(&client, format!("{gateway}/metrics")).await;
        assert_eq!(
            metric(&m, &series("abandoned", "client_left")),
            Some(n as f64 + 1.0),
            "{m}"
        );
        assert_eq!(metric(&m, &series("failure", "truncated")), None, "{m}");
    }
}
