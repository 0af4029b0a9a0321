//! What operators read off the gateway, on loopback (`serve::start` in front of a
//! mock worker): the OpenTelemetry GenAI histograms on `GET /metrics`, request ids
//! (the client's kept, else one made; both reach the worker and come back), and the
//! verdict logged inside the request's span.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use common::{client, post, scrape, series, within};
use sluice_gateway::mock::MockWorker;
use sluice_gateway::serve::{self, ServeArgs, Serving};

/// The logs of this test binary, as text (every test's: filter by request id).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
    }
}

/// Installs (once) a subscriber that keeps every log line with its spans.
fn logs() -> Logs {
    static LOGS: OnceLock<Logs> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Logs::default();
        let writer = logs.clone();
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || writer.clone())
            .init();
        logs
    })
    .clone()
}

async fn start(worker: &MockWorker) -> Serving {
    let args = ServeArgs {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..ServeArgs::new(vec![format!("w=http://{}", worker.addr)])
    };
    serve::start(&args).await.expect("serve")
}

/// `name_{suffix}{labels}`: a histogram's `count` or `sum`.
fn histogram(text: &str, name: &str, suffix: &str, labels: &str) -> Option<f64> {
    series(text, &format!("{name}_{suffix}{{{labels}}}"))
}

const TTFT: &str = "gen_ai_server_time_to_first_token_seconds";
const TPOT: &str = "gen_ai_server_time_per_output_token_seconds";
const DURATION: &str = "gen_ai_server_request_duration_seconds";
const CHAT: &str = "worker=\"w\",gen_ai_operation_name=\"chat\"";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_request_shows_in_the_three_genai_histograms() {
    let worker = MockWorker::start("w", Duration::from_millis(10))
        .await
        .expect("mock");
    let serving = start(&worker).await;
    let response = post(
        serving.addr,
        Some("m1"),
        r#"{"stream":true,"max_tokens":3}"#,
    )
    .await;
    assert_eq!(response.status(), 200);
    let text = within("body", response.text()).await.expect("body");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    // The verdict is recorded when the stream ends, before the client sees its end.
    let m = scrape(serving.addr).await;
    let success = format!("{CHAT},verdict=\"success\"");
    assert_eq!(histogram(&m, TTFT, "count", CHAT), Some(1.0), "{m}");
    assert_eq!(histogram(&m, TPOT, "count", CHAT), Some(1.0), "{m}");
    assert_eq!(histogram(&m, DURATION, "count", &success), Some(1.0), "{m}");
    let ttft = histogram(&m, TTFT, "sum", CHAT).expect("ttft");
    let tpot = histogram(&m, TPOT, "sum", CHAT).expect("tpot");
    let duration = histogram(&m, DURATION, "sum", &success).expect("duration");
    assert!(
        ttft > 0.0 && ttft <= duration,
        "ttft {ttft} duration {duration}"
    );
    // Three tokens and `[DONE]`: four progress events, three gaps, all between the
    // first token and the verdict.
    assert!(
        tpot * 3.0 <= duration - ttft + 1e-6,
        "tpot {tpot} ttft {ttft} duration {duration}"
    );
    // OpenTelemetry's explicit buckets.
    for (name, le) in [(TTFT, "0.001"), (TTFT, "10.0"), (TPOT, "2.5")] {
        let bucket = format!("{name}_bucket{{le=\"{le}\",{CHAT}}}");
        assert!(series(&m, &bucket).is_some(), "{bucket}:\n{m}");
    }
    let bucket = format!("{DURATION}_bucket{{le=\"81.92\",{success}}}");
    assert_eq!(series(&m, &bucket), Some(1.0), "{m}");
    assert!(
        m.contains("# UNIT gen_ai_server_request_duration_seconds seconds"),
        "{m}"
    );

    // A failure: its duration, labelled with the cause as error_type; no time to
    // first token (OpenTelemetry measures that for successful responses only).
    let response = post(
        serving.addr,
        Some("m2"),
        r#"{"stream":true,"mock_status":500}"#,
    )
    .await;
    assert_eq!(response.status(), 500);
    drop(within("body", response.bytes()).await);
    let m = scrape(serving.addr).await;
    let failed = format!("{CHAT},verdict=\"failure\",error_type=\"status\"");
    assert_eq!(histogram(&m, DURATION, "count", &failed), Some(1.0), "{m}");
    assert_eq!(histogram(&m, TTFT, "count", CHAT), Some(1.0), "{m}");
    assert_eq!(histogram(&m, DURATION, "count", &success), Some(1.0), "{m}");
}

/// Whether `id` is a random (version 4) UUID in its text form.
fn is_uuid_v4(id: &str) -> bool {
    let groups: Vec<&str> = id.split('-').collect();
    let lengths: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    lengths == [8, 4, 4, 4, 12]
        && id.chars().all(|c| c == '-' || c.is_ascii_hexdigit())
        && groups[2].starts_with('4')
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_kept_or_made_and_reach_the_worker_and_the_verdict_log() {
    let logs = logs();
    let worker = MockWorker::start("w", Duration::from_millis(1))
        .await
        .expect("mock");
    let serving = start(&worker).await;

    // The client's id comes back as it was, and the worker got it.
    let response = post(
        serving.addr,
        Some("client-id-7"),
        r#"{"stream":true,"max_tokens":2}"#,
    )
    .await;
    assert_eq!(response.headers()["x-request-id"], "client-id-7");
    drop(within("body", response.text()).await);
    assert!(worker.progress("client-id-7").borrow().finished);

    // Without one, the gateway makes one (a random UUID) and hands it to both.
    let mut made = Vec::new();
    for _ in 0..2 {
        let response = post(serving.addr, None, r#"{"stream":true,"max_tokens":2}"#).await;
        let id = response.headers()["x-request-id"]
            .to_str()
            .expect("ascii")
            .to_owned();
        assert!(is_uuid_v4(&id), "{id}");
        drop(within("body", response.text()).await);
        assert!(worker.progress(&id).borrow().finished, "{id}");
        made.push(id);
    }
    assert_ne!(made[0], made[1]);

    // Every id's verdict is logged inside its request's span, which names the
    // route and the worker.
    let text = logs.text();
    for id in ["client-id-7", made[0].as_str(), made[1].as_str()] {
        let line = text
            .lines()
            .find(|l| l.contains(id) && l.contains(" verdict"))
            .unwrap_or_else(|| panic!("no verdict line for {id}:\n{text}"));
        assert!(
            line.contains("request{") && line.contains("/v1/chat/completions"),
            "{line}"
        );
        // The span's fields, then the event's.
        assert!(line.contains(" worker=\"w\"}: "), "{line}");
        assert!(line.contains("verdict=\"success\""), "{line}");
    }

    // An answer the gateway makes itself carries an id too.
    let response = client()
        .get(format!("http://{}/metrics", serving.addr))
        .send()
        .await
        .expect("metrics");
    assert!(is_uuid_v4(
        response.headers()["x-request-id"].to_str().expect("ascii")
    ));
}
