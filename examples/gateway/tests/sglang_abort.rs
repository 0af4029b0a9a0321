//! `serve --engine sglang` in front of a mock SGLang, whose generation goes on after
//! the client's connection closes until `POST /abort_request` names its `rid`: each
//! abandoned request (mid-stream, or before the headers) gets exactly one abort,
//! finished ones none, and the gateway's
//! metrics count them. The generic profile, in front of the same engine, leaves the
//! zombie decoding: that is what the profile is for.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{DEADLINE, client, scrape, series, within};
use sluice_gateway::engine::Engine;
use sluice_gateway::mock::MockWorker;
use sluice_gateway::serve::{self, ServeArgs, Serving};

struct Rig {
    engine: MockWorker,
    serving: Serving,
    client: reqwest::Client,
}

impl Rig {
    async fn start(profile: Engine) -> Self {
        let engine = MockWorker::start_sglang("sglang", Duration::from_millis(2))
            .await
            .expect("mock sglang");
        let args = ServeArgs {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            engine: profile,
            ..ServeArgs::new(vec![engine.url()])
        };
        let serving = serve::start(&args).await.expect("serve");
        let client = client();
        Self {
            engine,
            serving,
            client,
        }
    }

    async fn post(&self, id: &str, body: serde_json::Value) -> reqwest::Response {
        let send = self
            .client
            .post(format!("http://{}/v1/chat/completions", self.serving.addr))
            .header("x-request-id", id)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send();
        within("response", send).await.expect("gateway answers")
    }

    /// A streamed request the client reads to its end.
    async fn finished(&self, id: &str) {
        let body = serde_json::json!({"stream": true, "max_tokens": 4});
        let text = within("body", self.post(id, body).await.text())
            .await
            .expect("body");
        assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    }

    /// A long streamed request the client leaves after two events.
    async fn abandoned(&self, id: &str, extra: serde_json::Value) {
        let mut body = serde_json::json!({"stream": true, "max_tokens": 100_000});
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        let mut response = self.post(id, body).await;
        let mut seen = Vec::new();
        while seen.windows(2).filter(|w| w == b"\n\n").count() < 2 {
            let bytes = within("event", response.chunk())
                .await
                .expect("stream")
                .expect("more events");
            seen.extend_from_slice(&bytes);
        }
        drop(response);
    }

    async fn scrape(&self) -> String {
        scrape(self.serving.addr).await
    }

    /// Scrapes until `series` reads `value` or more.
    async fn metric_reaches(&self, name: &str, value: f64) -> String {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let text = self.scrape().await;
            if series(&text, name).is_some_and(|v| v >= value) {
                return text;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} did not reach {value} within {DEADLINE:?}:\n{text}"
            );
            tokio::task::yield_now().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_abort_per_abandoned_request_and_none_for_finished_ones() {
    let rig = Rig::start(Engine::Sglang).await;
    let w = rig.engine.addr.to_string();
    let aborts_ok = format!("sluice_aborts_total{{worker=\"{w}\",result=\"ok\"}}");

    rig.finished("f1").await;
    rig.abandoned("a1", serde_json::json!({})).await;
    rig.finished("f2").await;
    rig.abandoned("a2", serde_json::json!({})).await;
    // Not streamed, read whole: finished too.
    let whole = rig
        .post("f3", serde_json::json!({"stream": false, "max_tokens": 3}))
        .await;
    assert_eq!(whole.status(), 200);
    let _ = within("body", whole.text()).await;

    // The engine stops the abandoned generations because it was asked to.
    for id in ["a1", "a2"] {
        let mut progress = rig.engine.progress(id);
        let p = *within("the abort", progress.wait_for(|p| p.aborted))
            .await
            .expect("engine log");
        assert!(p.dropped, "{id}: the connection was closed as well");
        assert!(!p.finished && p.tokens < 100_000, "{id}: {p:?}");
        let rid = rig.engine.rid_of(id).expect("a minted rid");
        assert_eq!(rid.len(), 32, "{rid}");
    }
    let text = rig.metric_reaches(&aborts_ok, 2.0).await;
    assert_eq!(series(&text, &aborts_ok), Some(2.0), "{text}");
    // The abort count is final once the gateway counted both (the mock counts an
    // abort before it answers it, and the gateway sends one per abandoned request).
    for id in ["a1", "a2"] {
        assert_eq!(rig.engine.progress(id).borrow().aborts, 1, "{id}");
    }
    for id in ["f1", "f2", "f3"] {
        let p = *rig.engine.progress(id).borrow();
        assert!(p.finished, "{id}: {p:?}");
        assert_eq!(p.aborts, 0, "{id}: no abort for a finished request");
    }
    assert_eq!(rig.engine.unknown_aborts(), 0);
    let verdict = |v: &str, c: &str| {
        series(
            &text,
            &format!("sluice_verdicts_total{{worker=\"{w}\",verdict=\"{v}\",cause=\"{c}\"}}"),
        )
    };
    assert_eq!(verdict("abandoned", "client_left"), Some(2.0), "{text}");
    assert_eq!(verdict("success", "done"), Some(2.0));
    assert_eq!(verdict("success", "end"), Some(1.0));
    assert!(
        text.lines()
            .filter(|l| l.starts_with("sluice_aborts_total{"))
            .all(|l| l.starts_with(&aborts_ok)),
        "no failed abort:\n{text}"
    );
    // Aborts never touch the breaker.
    assert_eq!(
        series(
            &text,
            &format!("sluice_breaker_state{{worker=\"{w}\",state=\"closed\"}}")
        ),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_own_rid_is_kept_and_never_aborted_by() {
    let rig = Rig::start(Engine::Sglang).await;
    // SGLang matches aborts by prefix: the gateway aborts only by ids it minted.
    rig.abandoned(
        "own",
        serde_json::json!({"rid": "client-1", "max_tokens": 40}),
    )
    .await;
    let mut progress = rig.engine.progress("own");
    let p = *within("the zombie to finish", progress.wait_for(|p| p.finished))
        .await
        .expect("engine log");
    assert_eq!((p.aborts, p.aborted, p.tokens), (0, false, 40));
    assert_eq!(rig.engine.rid_of("own").as_deref(), Some("client-1"));
    let text = rig.scrape().await;
    assert!(!text.contains("sluice_aborts_total{"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generic_profile_leaves_the_zombie_decoding() {
    let rig = Rig::start(Engine::Generic).await;
    rig.abandoned("z", serde_json::json!({"max_tokens": 40, "rid": "z-rid"}))
        .await;
    let mut progress = rig.engine.progress("z");
    // The connection closed at once, but this engine decodes on to max_tokens.
    let p = *within("the zombie to finish", progress.wait_for(|p| p.finished))
        .await
        .expect("engine log");
    assert!(p.dropped);
    assert_eq!((p.aborts, p.tokens), (0, 40));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_before_the_headers_gets_its_request_aborted() {
    let rig = Rig::start(Engine::Sglang).await;
    let w = rig.engine.addr.to_string();
    let send = rig
        .client
        .post(format!("http://{}/v1/chat/completions", rig.serving.addr))
        .header("x-request-id", "p1")
        .header("content-type", "application/json")
        .body(
            serde_json::json!({"stream": true, "max_tokens": 100_000, "mock_hold_headers": true})
                .to_string(),
        )
        .send();
    let client = tokio::spawn(send);
    let mut progress = rig.engine.progress("p1");
    // The engine has the request and generates; no header has come back.
    let _ = within("generation", progress.wait_for(|p| p.tokens > 0)).await;
    client.abort(); // the client leaves while the gateway waits for the headers
    let p = *within("the abort", progress.wait_for(|p| p.aborted))
        .await
        .expect("engine log");
    assert_eq!(p.aborts, 1);
    let text = rig
        .metric_reaches(
            &format!("sluice_aborts_total{{worker=\"{w}\",result=\"ok\"}}"),
            1.0,
        )
        .await;
    assert_eq!(
        series(
            &text,
            &format!(
                "sluice_verdicts_total{{worker=\"{w}\",verdict=\"abandoned\",cause=\"client_left_before_head\"}}"
            )
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(rig.engine.progress("p1").borrow().aborts, 1);
}
