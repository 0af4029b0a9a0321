//! A worker that answers 500 with a 256 MiB body (generated as a stream, never
//! allocated): the client gets the 500 with at most 64 KiB of it, the gateway's
//! memory does not grow with the body, and the verdict is failure/status. Alone in
//! its own test binary, so that no other test moves the process' memory figures.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use futures_util::stream;
use sluice_gateway::gateway::proxy::ERROR_BODY_CAP;
use sluice_gateway::serve::{self, ServeArgs};
use tokio::net::TcpListener;

const DEADLINE: Duration = Duration::from_secs(20);

/// The body the worker would send: 256 MiB.
const HUGE: u64 = 256 * 1024 * 1024;

/// A figure of `/proc/self/status` in KiB (`VmRSS`, `VmHWM`), where there is one.
fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_error_body_is_capped_not_buffered() {
    // One 64 KiB chunk, shared by every item: the worker allocates nothing per item.
    let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
    let sent = Arc::new(AtomicU64::new(0));
    let counted = sent.clone();
    let worker = Router::new().route(
        "/v1/chat/completions",
        post(move || {
            let chunk = chunk.clone();
            let sent = counted.clone();
            async move {
                let items = HUGE / chunk.len() as u64;
                let body = stream::iter((0..items).map(move |_| {
                    sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    Ok::<_, std::io::Error>(chunk.clone())
                }));
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    [(header::CONTENT_TYPE, "text/plain")],
                    Body::from_stream(body),
                )
                    .into_response()
            }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, worker).await });
    let args = ServeArgs {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..ServeArgs::new(vec![format!("big=http://{addr}")])
    };
    let serving = serve::start(&args).await.expect("serve");
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");

    let (rss_before, hwm_before) = (status_kib("VmRSS:"), status_kib("VmHWM:"));
    let send = client
        .post(format!("http://{}/v1/chat/completions", serving.addr))
        .header("content-type", "application/json")
        .body(r#"{"stream":true}"#)
        .send();
    let response = tokio::time::timeout(DEADLINE, send)
        .await
        .expect("an answer in time")
        .expect("an answer");
    assert_eq!(response.status(), 500);
    let body = tokio::time::timeout(DEADLINE, response.bytes())
        .await
        .expect("the body in time")
        .expect("the body");
    assert!(
        !body.is_empty() && body.len() <= ERROR_BODY_CAP,
        "{} bytes",
        body.len()
    );
    assert!(body.iter().all(|b| *b == b'x'));
    let (rss_after, hwm_after) = (status_kib("VmRSS:"), status_kib("VmHWM:"));
    // Where /proc is (Linux), the process grew by less than 16 MiB.
    for (what, before, after) in [
        ("VmRSS", rss_before, rss_after),
        ("VmHWM", hwm_before, hwm_after),
    ] {
        if let (Some(before), Some(after)) = (before, after) {
            let grown = after.saturating_sub(before);
            assert!(grown < 16 * 1024, "{what} grew by {grown} KiB");
        }
    }
    // The worker was stopped well before its end (the gateway closed the connection).
    assert!(
        sent.load(Ordering::Relaxed) < HUGE / 4,
        "the worker sent {} bytes",
        sent.load(Ordering::Relaxed)
    );
    let metrics = serving.gateway().metrics_text().expect("metrics");
    let series = "sluice_verdicts_total{worker=\"big\",verdict=\"failure\",cause=\"status\"} 1";
    assert!(metrics.lines().any(|l| l == series), "{metrics}");
}
