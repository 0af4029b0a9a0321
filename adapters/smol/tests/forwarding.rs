//! The smol adapter over real loopback sockets: scenarios 1-5 of the tokio suite
//! with a hand-written HTTP/1.1 worker, gateway and client on `async-net`.

mod common;

use async_net::TcpStream;
use common::{Gateway, Worker, get, within};
use futures_lite::AsyncWriteExt;
use sluice::Verdict;
use sluice::forward::Ending;
use sluice_test_support::client::BodyEnd;

async fn rig() -> (Worker, Gateway) {
    let worker = Worker::start().await;
    let gateway = Gateway::start(worker.addr).await;
    (worker, gateway)
}

/// Scenario 1: The client leaves mid-stream: the upstream is dropped at once.
#[test]
fn client_leaves_mid_stream() {
    smol::block_on(async {
        let (worker, gateway) = rig().await;
        let mut body = get(gateway.addr, "id=1&tokens=100000&pace_ms=10").await;
        body.until(|b| b.tokens() >= 3).await.expect("three tokens");
        let at_close = worker.progress(1).tokens;
        drop(body);
        let seen = worker.wait(1, "upstream close", |p| p.dropped).await;
        assert!(seen.tokens <= at_close + 1, "tokens after the client left");
        assert_eq!(gateway.verdict().await.1.verdict, Verdict::Abandoned);
        let (_, report) = gateway.report().await;
        assert_eq!(report.expect("forwarded").ending, Ending::ClientGone);
        assert!(gateway.verdicts.is_empty());
    });
}

/// Scenario 2: The client leaves after the headers, during prefill.
#[test]
fn client_leaves_during_prefill() {
    smol::block_on(async {
        let (worker, gateway) = rig().await;
        let body = get(gateway.addr, "id=2&hold_prefill").await;
        assert_eq!(body.status, 200);
        drop(body);
        let seen = worker.wait(2, "upstream close", |p| p.dropped).await;
        assert_eq!((seen.headers, seen.tokens), (true, 0));
        let (_, outcome) = gateway.verdict().await;
        assert_eq!((outcome.verdict, outcome.chunks), (Verdict::Abandoned, 0));
    });
}

/// Scenario 3: The client leaves while the gateway waits for the worker's headers.
#[test]
fn client_leaves_while_waiting_for_headers() {
    smol::block_on(async {
        let (worker, gateway) = rig().await;
        let mut conn = TcpStream::connect(gateway.addr).await.expect("connect");
        let request = "GET /forward?id=3&hold_headers HTTP/1.1\r\nHost: gw\r\n\r\n";
        conn.write_all(request.as_bytes()).await.expect("write");
        worker.wait(3, "request at the worker", |p| p.arrived).await;
        drop(conn); // the only handle: the socket closes
        let seen = worker.wait(3, "upstream close", |p| p.dropped).await;
        assert!(!seen.headers);
        assert_eq!(gateway.verdict().await.1.verdict, Verdict::Abandoned);
        assert_eq!(gateway.report().await, (3, None));
    });
}

/// Scenario 4: The client reads to the end: one Success.
#[test]
fn client_reads_to_the_end() {
    smol::block_on(async {
        let (worker, gateway) = rig().await;
        let mut body = get(gateway.addr, "id=4&tokens=20").await;
        assert_eq!(body.read_to_end().await, BodyEnd::Clean);
        assert_eq!((body.tokens(), body.done()), (20, true));
        assert_eq!(gateway.verdict().await.1.verdict, Verdict::Success);
        let (_, report) = gateway.report().await;
        assert_eq!(report.expect("forwarded").ending, Ending::Completed);
        assert!(gateway.verdicts.is_empty(), "exactly one verdict");
        assert!(
            within("worker end", worker.wait(4, "end", |p| p.dropped))
                .await
                .finished
        );
    });
}

/// Scenario 5: The worker breaks its body mid-stream: the client sees the error, and the
/// verdict is a Failure.
#[test]
fn worker_errors_mid_stream() {
    smol::block_on(async {
        let (_worker, gateway) = rig().await;
        let mut body = get(gateway.addr, "id=5&tokens=10&fail_after=3&pace_ms=5").await;
        assert_eq!(body.read_to_end().await, BodyEnd::Error);
        assert_eq!(body.tokens(), 3);
        assert_eq!(gateway.verdict().await.1.verdict, Verdict::Failure);
        let (_, report) = gateway.report().await;
        assert_eq!(report.expect("forwarded").ending, Ending::UpstreamError);
    });
}
