//! The gateway's `serve` mode, in-process on loopback: `serve::start` (what `serve`
//! runs) in front of the mock workers, driven with reqwest; the numbers checked on
//! `GET /metrics`; the ejection cap, fail-fast 503s and 4xx storms on a pool of three;
//! the Anthropic and Responses routes; and the answers to bad input.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{DEADLINE, client, read_all, within};
use sluice_gateway::mock::MockWorker;
use sluice_gateway::serve::{self, ServeArgs, ServeError, Serving};

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn args(upstreams: Vec<String>) -> ServeArgs {
    ServeArgs {
        listen: local(0),
        failure_threshold: 2,
        success_threshold: 1,
        open_secs: 3600,
        ..ServeArgs::new(upstreams)
    }
}

/// A chat request; `extra` adds or overrides fields.
fn chat(stream: bool, extra: serde_json::Value) -> String {
    let mut body = serde_json::json!({
        "model": "mock",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": stream,
        "max_tokens": 4,
    });
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    body.to_string()
}

struct Rig {
    workers: Vec<MockWorker>,
    serving: Serving,
    client: reqwest::Client,
}

impl Rig {
    /// One mock worker behind the gateway.
    async fn start() -> Self {
        Self::pool(1, |_| {}).await
    }

    /// `n` mock workers behind the gateway, its flags changed by `tweak`.
    async fn pool(n: usize, tweak: impl FnOnce(&mut ServeArgs)) -> Self {
        let mut workers = Vec::new();
        for i in 0..n {
            let worker = MockWorker::start(&format!("w{i}"), Duration::from_millis(5))
                .await
                .expect("mock worker");
            workers.push(worker);
        }
        let mut a = args(workers.iter().map(MockWorker::url).collect());
        tweak(&mut a);
        let serving = serve::start(&a).await.expect("serve");
        Self {
            workers,
            serving,
            client: client(),
        }
    }

    fn worker(&self) -> &MockWorker {
        &self.workers[0]
    }

    async fn post(&self, path: &str, id: &str, body: String) -> reqwest::Response {
        let url = format!("http://{}{path}", self.serving.addr);
        let send = self
            .client
            .post(url)
            .header("x-request-id", id)
            .header("content-type", "application/json")
            .body(body)
            .send();
        within("response", send).await.expect("gateway answers")
    }

    async fn scrape(&self) -> String {
        let url = format!("http://{}/metrics", self.serving.addr);
        let response = within("scrape", self.client.get(url).send())
            .await
            .expect("metrics");
        assert_eq!(response.status(), 200);
        let ct = response.headers()["content-type"].to_str().expect("ascii");
        assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
        response.text().await.expect("metrics text")
    }

    /// Scrapes until `pred` holds of the text (the verdict of a stream is counted
    /// when the gateway drops it, just after the client saw its end).
    async fn metrics_until(&self, what: &str, pred: impl Fn(&Metrics) -> bool) -> Metrics {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let m = Metrics(self.scrape().await);
            if pred(&m) {
                return m;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {what} within {DEADLINE:?}:\n{}",
                m.0
            );
            tokio::task::yield_now().await;
        }
    }

    /// The worker's name: `host:port` of its URL, as `serve` names it by default.
    fn name(&self) -> String {
        self.worker().addr.to_string()
    }
}

/// A scraped exposition.
struct Metrics(String);

impl Metrics {
    /// The value of the series `name{labels}`, if present.
    fn get(&self, series: &str) -> Option<f64> {
        self.0.lines().find_map(|line| {
            let value = line.strip_prefix(series)?.strip_prefix(' ')?;
            value.trim().parse().ok()
        })
    }

    /// The verdicts of `worker` with this verdict and cause, if any were counted.
    fn verdicts(&self, worker: &str, verdict: &str, cause: &str) -> Option<f64> {
        self.get(&format!(
            "sluice_verdicts_total{{worker=\"{worker}\",verdict=\"{verdict}\",cause=\"{cause}\"}}"
        ))
    }

    /// All verdicts of `worker`, whatever their verdict and cause.
    fn all_verdicts(&self, worker: &str) -> f64 {
        let prefix = format!("sluice_verdicts_total{{worker=\"{worker}\",");
        self.0
            .lines()
            .filter_map(|line| {
                line.strip_prefix(&prefix)?
                    .rsplit(' ')
                    .next()?
                    .parse::<f64>()
                    .ok()
            })
            .sum()
    }

    fn cancelled(&self, worker: &str) -> Option<f64> {
        self.get(&format!(
            "sluice_streams_cancelled_total{{worker=\"{worker}\"}}"
        ))
    }

    fn transitions(&self, worker: &str, from: &str, to: &str, reason: &str) -> Option<f64> {
        self.get(&format!(
            "sluice_breaker_transitions_total{{worker=\"{worker}\",from=\"{from}\",to=\"{to}\",reason=\"{reason}\"}}"
        ))
    }

    fn state(&self, worker: &str, state: &str) -> Option<f64> {
        self.get(&format!(
            "sluice_breaker_state{{worker=\"{worker}\",state=\"{state}\"}}"
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_disconnects_and_metrics() {
    let rig = Rig::start().await;
    let w = rig.name();
    let m = rig.scrape().await;
    let m = Metrics(m);
    assert_eq!(m.state(&w, "closed"), Some(1.0));
    assert_eq!(m.all_verdicts(&w), 0.0);

    // A streamed chat answer, read to its end.
    let response = rig
        .post(
            "/v1/chat/completions",
            "s1",
            chat(true, serde_json::json!({})),
        )
        .await;
    assert_eq!(response.status(), 200);
    let ct = response.headers()["content-type"].to_str().expect("ascii");
    assert!(ct.starts_with("text/event-stream"), "{ct}");
    let (text, clean) = read_all(response).await;
    assert!(clean);
    assert_eq!(text.matches("\"delta\"").count(), 4);
    assert!(text.ends_with("data: [DONE]\n\n"));

    // A plain completion, not streamed.
    let response = rig
        .post("/v1/completions", "s2", chat(false, serde_json::json!({})))
        .await;
    assert_eq!(response.status(), 200);
    let answer: serde_json::Value = response.json_body().await;
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "tok0 tok1 tok2 tok3"
    );

    // The client leaves mid-stream: the worker's connection closes at once.
    let slow = serde_json::json!({"max_tokens": 100_000, "mock_pace_ms": 50});
    let mut response = rig
        .post("/v1/chat/completions", "s3", chat(true, slow))
        .await;
    let mut seen = Vec::new();
    while seen.windows(2).filter(|w| w == b"\n\n").count() < 2 {
        let bytes = within("token", response.chunk())
            .await
            .expect("stream")
            .expect("more tokens");
        seen.extend_from_slice(&bytes);
    }
    let mut progress = rig.worker().progress("s3");
    let at_leave = progress.borrow().tokens;
    drop(response);
    let after = within("upstream close", progress.wait_for(|p| p.dropped))
        .await
        .expect("worker log")
        .tokens;
    assert!(
        after <= at_leave + 1,
        "{} tokens after the client left",
        after - at_leave
    );

    let m = rig
        .metrics_until("three verdicts", |m| {
            m.verdicts(&w, "success", "done") == Some(1.0)
                && m.verdicts(&w, "success", "end") == Some(1.0)
                && m.verdicts(&w, "abandoned", "client_left") == Some(1.0)
        })
        .await;
    assert_eq!(m.all_verdicts(&w), 3.0, "nothing else was counted");
    assert_eq!(m.cancelled(&w), Some(1.0));
    assert_eq!(m.state(&w, "closed"), Some(1.0));
    assert_eq!(m.state(&w, "open"), Some(0.0));
    assert_eq!(m.get("sluice_unavailable_total"), Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_worker_opens_its_breaker_then_503_with_retry_after() {
    let rig = Rig::start().await;
    let w = rig.name();
    for id in ["f1", "f2"] {
        let broken = serde_json::json!({"mock_status": 500});
        let response = rig
            .post("/v1/chat/completions", id, chat(true, broken))
            .await;
        assert_eq!(response.status(), 500, "the worker's status is passed on");
    }
    let m = Metrics(rig.scrape().await);
    assert_eq!(m.verdicts(&w, "failure", "status"), Some(2.0));
    assert_eq!(m.state(&w, "open"), Some(1.0));
    assert_eq!(m.state(&w, "closed"), Some(0.0));
    let transition = format!(
        "sluice_breaker_transitions_total{{worker=\"{w}\",from=\"closed\",to=\"open\",reason=\"consecutive_failures\"}}"
    );
    assert_eq!(m.get(&transition), Some(1.0));

    // No worker is admitted now.
    let response = rig
        .post(
            "/v1/chat/completions",
            "f3",
            chat(true, serde_json::json!({})),
        )
        .await;
    assert_eq!(response.status(), 503);
    let retry: u64 = response.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=3600).contains(&retry), "{retry}");
    let body: serde_json::Value = response.json_body().await;
    assert_eq!(body["error"]["type"], "unavailable");
    assert!(
        !rig.worker().progress("f3").borrow().arrived,
        "nothing reached the worker"
    );
    let m = Metrics(rig.scrape().await);
    assert_eq!(m.get("sluice_unavailable_total"), Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_answer_to_a_streaming_request_is_judged_by_its_end() {
    // The rules come from the response, not the request: a JSON answer is passed on
    // and tracked as non-streaming (its clean end is its success).
    let rig = Rig::start().await;
    let plain = serde_json::json!({"mock_plain": true});
    let response = rig
        .post("/v1/chat/completions", "p1", chat(true, plain))
        .await;
    assert_eq!(response.status(), 200);
    let ct = response.headers()["content-type"].to_str().expect("ascii");
    assert_eq!(ct, "application/json");
    let body: serde_json::Value = response.json_body().await;
    assert_eq!(body["object"], "chat.completion");
    let w = rig.name();
    rig.metrics_until("its verdict", |m| {
        m.verdicts(&w, "success", "end") == Some(1.0)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_upstream_is_502_json() {
    // A port nobody listens on: bound, then closed.
    let port = {
        let listener = std::net::TcpListener::bind(local(0)).expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let upstream = format!("http://127.0.0.1:{port}");
    let serving = serve::start(&args(vec![upstream.clone()]))
        .await
        .expect("serve starts: unreachable is found per request");
    let url = format!("http://{}/v1/chat/completions", serving.addr);
    let send = client()
        .post(url)
        .body(chat(true, serde_json::json!({})))
        .send();
    let response = within("response", send).await.expect("gateway answers");
    assert_eq!(response.status(), 502);
    let ct = response.headers()["content-type"].to_str().expect("ascii");
    assert_eq!(ct, "application/json");
    let body: serde_json::Value = response.json_body().await;
    let message = body["error"]["message"].as_str().expect("message");
    assert!(message.contains("unreachable"), "{message}");
    // Named by its name; its URL (and reqwest's error chain) stays in the logs.
    assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
    assert!(!message.contains("http://"), "{message}");
}

#[tokio::test]
async fn malformed_upstream_urls_are_refused_at_start() {
    for (url, why) in [
        ("not a url", "no scheme"),
        ("127.0.0.1:8000", "did you mean http://127.0.0.1:8000"),
        ("http://", "empty host"),
        ("ftp://127.0.0.1:8000", "scheme must be http"),
        ("https://127.0.0.1:8000", "https"),
        ("http://127.0.0.1:8000/?x=1", "query"),
    ] {
        let err = serve::start(&args(vec![url.to_owned()]))
            .await
            .expect_err(url);
        assert!(matches!(err, ServeError::Upstream { .. }), "{url}: {err:?}");
        let message = err.to_string();
        assert!(message.contains(url), "{message}");
        assert!(message.contains(why), "{url}: {message}");
    }
    let err = serve::start(&args(Vec::new())).await.expect_err("none");
    assert!(matches!(err, ServeError::NoUpstream), "{err:?}");
}

#[tokio::test]
async fn port_in_use_is_refused_at_start() {
    let taken = tokio::net::TcpListener::bind(local(0)).await.expect("bind");
    let addr = taken.local_addr().expect("addr");
    let mut a = args(vec!["http://127.0.0.1:9".to_owned()]);
    a.listen = addr;
    let err = serve::start(&a).await.expect_err("the port is taken");
    assert!(matches!(err, ServeError::Bind { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains(&addr.port().to_string()), "{message}");
    assert!(message.starts_with("cannot listen on"), "{message}");
}

/// Posts a non-streamed chat request with `extra` and returns the status.
async fn status_of(rig: &Rig, id: &str, extra: serde_json::Value) -> u16 {
    let response = rig
        .post("/v1/chat/completions", id, chat(false, extra))
        .await;
    let status = response.status().as_u16();
    let _ = within("body", response.bytes()).await;
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cap_ejects_one_of_two_failing_workers_and_says_it_held_the_other_in() {
    // Three workers, a cap of 34 %: max(1, floor(3 * 34 / 100)) = 1 ejected at once.
    let rig = Rig::pool(3, |a| {
        a.failure_threshold = 1;
        a.max_ejected_percent = 34;
    })
    .await;
    let names: Vec<String> = rig.workers.iter().map(|w| w.addr.to_string()).collect();
    rig.workers[0].set_status(Some(500));
    rig.workers[1].set_status(Some(500));
    // Round-robin from w0: w0 fails and is ejected; w1 fails and is held in; w2
    // serves; then w0 is skipped (open) and w1 takes its turns, still failing.
    let mut statuses = Vec::new();
    for i in 0..6 {
        statuses.push(status_of(&rig, &format!("c{i}"), serde_json::json!({})).await);
    }
    assert_eq!(statuses, [500, 500, 200, 500, 200, 500]);
    let m = Metrics(rig.scrape().await);
    let (w0, w1, w2) = (&names[0], &names[1], &names[2]);
    assert_eq!(m.state(w0, "open"), Some(1.0), "{}", m.0);
    assert_eq!(m.state(w1, "closed"), Some(1.0), "held in by the cap");
    assert_eq!(m.state(w2, "closed"), Some(1.0));
    assert_eq!(
        m.transitions(w0, "closed", "open", "consecutive_failures"),
        Some(1.0)
    );
    assert_eq!(
        m.transitions(w1, "closed", "closed", "ejection_capped"),
        Some(3.0),
        "each failure that would have opened w1 says the cap held it in:\n{}",
        m.0
    );
    assert_eq!(
        m.transitions(w1, "closed", "open", "consecutive_failures"),
        None
    );
    assert_eq!(m.get("sluice_ejected_workers"), Some(1.0));
    assert_eq!(m.get("sluice_max_ejected_workers"), Some(1.0));
    assert_eq!(
        m.all_verdicts(w0),
        1.0,
        "nothing went to the ejected worker"
    );
    assert_eq!(m.verdicts(w1, "failure", "status"), Some(3.0));
    assert_eq!(m.verdicts(w2, "success", "end"), Some(2.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_worker_pool_whose_worker_is_down_answers_503_at_once() {
    // A port nobody listens on: the worker is down.
    let port = {
        let listener = std::net::TcpListener::bind(local(0)).expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let upstream = format!("http://127.0.0.1:{port}");
    let name = format!("127.0.0.1:{port}");
    let serving = serve::start(&args(vec![upstream.clone()]))
        .await
        .expect("serve");
    let client = client();
    let url = format!("http://{}/v1/chat/completions", serving.addr);
    let post = || {
        client
            .post(&url)
            .body(chat(true, serde_json::json!({})))
            .send()
    };
    // Two failed sends open its breaker (threshold 2): the one worker may always be
    // ejected, whatever the cap (10 % of one worker rounds down to 0, the floor is 1).
    for _ in 0..2 {
        let response = within("response", post()).await.expect("answer");
        assert_eq!(response.status(), 502);
    }
    let response = within("response", post()).await.expect("answer");
    assert_eq!(response.status(), 503);
    let retry: u64 = response.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((3590..=3600).contains(&retry), "{retry}");
    let text = within(
        "scrape",
        client
            .get(format!("http://{}/metrics", serving.addr))
            .send(),
    )
    .await
    .expect("metrics")
    .text()
    .await
    .expect("text");
    let m = Metrics(text);
    assert_eq!(
        m.verdicts(&name, "failure", "send_failed"),
        Some(2.0),
        "the 503 did not try the worker:\n{}",
        m.0
    );
    assert_eq!(m.get("sluice_unavailable_total"), Some(1.0));
    assert_eq!(m.state(&name, "open"), Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_4xx_storm_ejects_nobody() {
    let rig = Rig::pool(3, |a| {
        a.failure_threshold = 1;
        a.max_ejected_percent = 100;
    })
    .await;
    let names: Vec<String> = rig.workers.iter().map(|w| w.addr.to_string()).collect();
    for i in 0..30u16 {
        let status = [400u16, 404, 422, 429][usize::from(i % 4)];
        let got = status_of(
            &rig,
            &format!("b{i}"),
            serde_json::json!({"mock_status": status}),
        )
        .await;
        assert_eq!(got, status, "the worker's answer is passed on");
    }
    let m = Metrics(rig.scrape().await);
    for w in &names {
        assert_eq!(m.state(w, "closed"), Some(1.0), "{w}:\n{}", m.0);
        assert_eq!(m.verdicts(w, "abandoned", "status"), Some(10.0), "{w}");
        assert_eq!(m.all_verdicts(w), 10.0);
    }
    assert!(
        !m.0.lines()
            .any(|l| l.starts_with("sluice_breaker_transitions_total{")),
        "no transition at all:\n{}",
        m.0
    );
    assert_eq!(m.get("sluice_ejected_workers"), Some(0.0));
    assert_eq!(m.get("sluice_unavailable_total"), Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_in_flight_sends_work_away_from_a_busy_worker() {
    let rig = Rig::pool(2, |a| a.pick = serve::PickArg::LeastInFlight).await;
    let (w0, w1) = (&rig.workers[0], &rig.workers[1]);
    // A long stream holds w0 (the first in order among equals).
    let slow = serde_json::json!({"max_tokens": 100_000, "mock_pace_ms": 50});
    let mut held = rig
        .post("/v1/chat/completions", "l1", chat(true, slow))
        .await;
    let _ = within("first event", held.chunk()).await;
    assert!(w0.progress("l1").borrow().arrived);
    // Two short requests in turn both go to w1: round-robin would have sent the
    // second to w0.
    for (n, id) in ["l2", "l3"].into_iter().enumerate() {
        assert_eq!(status_of(&rig, id, serde_json::json!({})).await, 200);
        assert!(w1.progress(id).borrow().arrived, "{id} went to w1");
        assert!(!w0.progress(id).borrow().arrived, "{id} not to the busy w0");
        let w = w1.addr.to_string();
        rig.metrics_until("its verdict", |m| {
            m.verdicts(&w, "success", "end") == Some(n as f64 + 1.0)
        })
        .await;
    }
    drop(held);
}

/// Streams one request per ending on `path` and checks the verdicts' causes.
async fn classify_route(path: &str, done_marker: &str, in_band_error: &str) {
    // Two failures must not open the breaker before the fourth request.
    let rig = Rig::pool(1, |a| a.failure_threshold = 10).await;
    let w = rig.name();
    // Done: success/done, the body passed on whole.
    let response = rig
        .post(path, "done", chat(true, serde_json::json!({})))
        .await;
    assert_eq!(response.status(), 200);
    let (text, clean) = read_all(response).await;
    assert!(clean);
    assert!(text.contains(done_marker), "{text}");
    assert_eq!(text.matches("tok").count(), 4, "{text}");
    // The in-band error event: failure/error_event.
    let response = rig
        .post(
            path,
            "err",
            chat(true, serde_json::json!({"mock_error_event": true})),
        )
        .await;
    let (text, _) = read_all(response).await;
    assert!(text.contains(in_band_error), "{text}");
    // Cut short (a clean end before the done event): failure/truncated.
    let response = rig
        .post(
            path,
            "cut",
            chat(true, serde_json::json!({"mock_cut": true})),
        )
        .await;
    let (text, clean) = read_all(response).await;
    assert!(clean && !text.contains(done_marker), "{text}");
    // Not streamed: its end is its success.
    let response = rig
        .post(path, "whole", chat(false, serde_json::json!({})))
        .await;
    assert_eq!(response.status(), 200);
    let _ = read_all(response).await;
    let m = rig
        .metrics_until("four verdicts", |m| m.all_verdicts(&w) == 4.0)
        .await;
    assert_eq!(
        m.verdicts(&w, "success", "done"),
        Some(1.0),
        "{path}:\n{}",
        m.0
    );
    assert_eq!(
        m.verdicts(&w, "failure", "error_event"),
        Some(1.0),
        "{path}"
    );
    assert_eq!(m.verdicts(&w, "failure", "truncated"), Some(1.0), "{path}");
    assert_eq!(m.verdicts(&w, "success", "end"), Some(1.0), "{path}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_messages_streams_are_classified() {
    classify_route("/v1/messages", "event: message_stop", "event: error").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_streams_are_classified() {
    classify_route("/v1/responses", "event: response.completed", "event: error").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_streams_are_classified() {
    // The chat error object is followed by `[DONE]` (as vLLM and SGLang send it):
    // still a failure.
    classify_route("/v1/chat/completions", "data: [DONE]", "\"error\"").await;
}

/// `response.json()` needs reqwest's `json` feature; parse the text instead.
trait JsonBody {
    async fn json_body(self) -> serde_json::Value;
}

impl JsonBody for reqwest::Response {
    async fn json_body(self) -> serde_json::Value {
        let text = within("body", self.text()).await.expect("body");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    }
}

#[tokio::test]
async fn unusable_flags_and_credentials_are_refused_at_start() {
    let upstream = || vec!["http://127.0.0.1:9".to_owned()];
    let mut a = args(upstream());
    a.header_timeout = Duration::ZERO;
    let err = serve::start(&a).await.expect_err("zero header timeout");
    assert!(
        matches!(
            err,
            ServeError::Flag {
                flag: "header-timeout",
                ..
            }
        ),
        "{err:?}"
    );
    for path in ["health", "/he alth"] {
        let mut a = args(upstream());
        a.health_check = Some(path.to_owned());
        let err = serve::start(&a).await.expect_err(path);
        assert!(
            matches!(
                err,
                ServeError::Flag {
                    flag: "health-check",
                    ..
                }
            ),
            "{err:?}"
        );
    }
    let mut a = args(upstream());
    a.health_check = Some("/health".to_owned());
    a.health_interval = Duration::ZERO;
    let err = serve::start(&a).await.expect_err("zero interval");
    assert!(
        matches!(
            err,
            ServeError::Flag {
                flag: "health-interval",
                ..
            }
        ),
        "{err:?}"
    );
    let err = serve::start(&args(vec!["http://me:secret@127.0.0.1:9".to_owned()]))
        .await
        .expect_err("credentials");
    assert!(matches!(err, ServeError::Credentials { .. }), "{err:?}");
    assert!(!err.to_string().contains("secret"), "{err}");
}
