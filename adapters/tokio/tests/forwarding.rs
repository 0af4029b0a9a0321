//! The adapter over real loopback sockets: a client, a gateway (axum + reqwest) and a
//! mock worker, each scenario checked from the worker's side (was its response
//! dropped, how many tokens did it make) and from the gateway's (the verdict and how
//! forwarding ended).

mod common;

use std::time::Duration;

use common::{Rig, reader};
use sluice::Verdict;
use sluice::forward::{Ending, ForwardOptions};
use sluice_test_support::client::BodyEnd;

/// Scenario 1: The client leaves mid-stream: the upstream is dropped at once.
#[tokio::test]
async fn client_leaves_mid_stream() {
    let rig = Rig::start(ForwardOptions::default()).await;
    let mut body = reader(rig.get("forward", "id=1&tokens=100000&pace_ms=10").await);
    body.until(|b| b.tokens() >= 3).await.expect("three tokens");
    let at_close = rig.worker.progress(1).tokens;
    drop(body);
    let seen = rig.worker.wait(1, "upstream drop", |p| p.dropped).await;
    assert!(
        seen.tokens <= at_close + 1,
        "{} tokens produced after the client left",
        seen.tokens - at_close
    );
    let (id, outcome) = rig.gateway.verdict().await;
    assert_eq!((id, outcome.verdict), (1, Verdict::Abandoned));
    let (_, report) = rig.gateway.report().await;
    assert_eq!(report.expect("forwarded").ending, Ending::ClientGone);
    rig.gateway.no_more_verdicts();
    rig.shutdown().await;
}

/// Scenario 2: The client leaves after the headers, while the worker is still in prefill.
#[tokio::test]
async fn client_leaves_during_prefill() {
    let rig = Rig::start(ForwardOptions::default()).await;
    let response = rig.get("forward", "id=2&hold_prefill").await;
    assert_eq!(response.status(), 200);
    drop(response);
    let seen = rig.worker.wait(2, "upstream drop", |p| p.dropped).await;
    assert_eq!((seen.headers, seen.tokens), (true, 0));
    let (_, outcome) = rig.gateway.verdict().await;
    assert_eq!((outcome.verdict, outcome.chunks), (Verdict::Abandoned, 0));
    let (_, report) = rig.gateway.report().await;
    assert_eq!(report.expect("forwarded").ending, Ending::ClientGone);
    rig.shutdown().await;
}

/// Scenario 3: The client leaves while the gateway waits for the worker's response headers:
/// `until_closed` drops the upstream request.
#[tokio::test]
async fn client_leaves_while_waiting_for_headers() {
    let rig = Rig::start(ForwardOptions::default()).await;
    let url = rig.gateway.url("forward", "id=3&hold_headers");
    let request = rig.client.get(url).send();
    tokio::select! {
        _ = rig.worker.wait(3, "request at the worker", |p| p.arrived) => {}
        r = request => panic!("the gateway answered: {r:?}"),
    }
    // `request` is dropped: the client's connection closes.
    let seen = rig
        .worker
        .wait(3, "upstream request dropped", |p| p.dropped)
        .await;
    assert!(!seen.headers);
    let (_, outcome) = rig.gateway.verdict().await;
    assert_eq!(outcome.verdict, Verdict::Abandoned);
    assert_eq!(
        rig.gateway.report().await,
        (3, None),
        "forwarding never started"
    );
    rig.shutdown().await;
}

/// Scenario 4: The client reads to the end: one Success.
#[tokio::test]
async fn client_reads_to_the_end() {
    let rig = Rig::start(ForwardOptions::default()).await;
    let mut body = reader(rig.get("forward", "id=4&tokens=20").await);
    assert_eq!(body.read_to_end().await, BodyEnd::Clean);
    assert_eq!((body.tokens(), body.done()), (20, true));
    let (_, outcome) = rig.gateway.verdict().await;
    assert_eq!(
        (outcome.verdict, outcome.chunks > 0),
        (Verdict::Success, true)
    );
    let (_, report) = rig.gateway.report().await;
    assert_eq!(report.expect("forwarded").ending, Ending::Completed);
    // The task reported after the upstream was dropped: any second verdict is in.
    rig.gateway.no_more_verdicts();
    assert!(
        rig.worker
            .wait(4, "worker end", |p| p.dropped)
            .await
            .finished
    );
    rig.shutdown().await;
}

/// Scenario 5: The worker fails mid-stream: the error reaches the client, and the verdict is
/// a Failure, not an abandoned stream.
#[tokio::test]
async fn worker_errors_mid_stream() {
    let rig = Rig::start(ForwardOptions::default()).await;
    let mut body = reader(
        rig.get("forward", "id=5&tokens=10&fail_after=3&pace_ms=5")
            .await,
    );
    assert_eq!(
        body.read_to_end().await,
        BodyEnd::Error,
        "the client must see the failure"
    );
    assert_eq!(body.tokens(), 3);
    let (_, outcome) = rig.gateway.verdict().await;
    assert_eq!(outcome.verdict, Verdict::Failure);
    let (_, report) = rig.gateway.report().await;
    assert_eq!(report.expect("forwarded").ending, Ending::UpstreamError);
    rig.shutdown().await;
}

/// Scenario 6: `[DONE]` arrived, then the client left before the upstream's end: Success.
#[tokio::test]
async fn done_then_client_leaves() {
    let rig = Rig::start(ForwardOptions::default()).await;
    let mut body = reader(rig.get("forward", "id=6&tokens=4&linger").await);
    body.until(|b| b.done()).await.expect("[DONE]");
    drop(body);
    let seen = rig.worker.wait(6, "upstream drop", |p| p.dropped).await;
    assert!(!seen.finished, "the worker had not ended its stream");
    let (_, outcome) = rig.gateway.verdict().await;
    assert_eq!(outcome.verdict, Verdict::Success);
    let (_, report) = rig.gateway.report().await;
    assert_eq!(report.expect("forwarded").ending, Ending::ClientGone);
    rig.shutdown().await;
}

/// Scenario 8: One client leaving does not disturb the streams around it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_leaving_leaves_the_others_alone() {
    let rig = Rig::start(ForwardOptions::default()).await;
    let mut readers = Vec::new();
    for id in 80..86 {
        let q = format!("id={id}&tokens=30&pace_ms=2");
        readers.push((id, reader(rig.get("forward", &q).await)));
    }
    let (leaver_id, mut leaver) = readers.remove(2);
    leaver.until(|b| b.tokens() >= 2).await.expect("two tokens");
    drop(leaver);
    rig.worker
        .wait(leaver_id, "upstream drop", |p| p.dropped)
        .await;
    for (_, body) in &mut readers {
        assert_eq!(body.read_to_end().await, BodyEnd::Clean);
        assert_eq!((body.tokens(), body.done()), (30, true));
    }
    let mut verdicts = Vec::new();
    for _ in 0..6 {
        verdicts.push(rig.gateway.verdict().await);
    }
    verdicts.sort_by_key(|(id, _)| *id);
    for (id, outcome) in verdicts {
        let expected = if id == leaver_id {
            Verdict::Abandoned
        } else {
            Verdict::Success
        };
        assert_eq!(outcome.verdict, expected, "stream {id}");
    }
    rig.shutdown().await;
}

/// Scenario 11: Drain: after the client left, the full answer is still read, and the verdict
/// is the upstream's.
#[tokio::test]
async fn drain_reads_the_answer_after_the_client_left() {
    let options = ForwardOptions::default().drain_on_close(Duration::from_secs(60));
    let rig = Rig::start(options).await;
    let mut body = reader(rig.get("forward", "id=11&tokens=50&pace_ms=1").await);
    body.until(|b| b.tokens() >= 2).await.expect("two tokens");
    drop(body);
    let seen = rig.worker.wait(11, "worker end", |p| p.dropped).await;
    assert_eq!(
        (seen.finished, seen.tokens),
        (true, 50),
        "the answer was read to its end"
    );
    let (_, outcome) = rig.gateway.verdict().await;
    assert_eq!(outcome.verdict, Verdict::Success);
    let (_, report) = rig.gateway.report().await;
    assert_eq!(report.expect("forwarded").ending, Ending::ClientGone);

    // The same with a worker that fails while being drained.
    let mut body = reader(
        rig.get("forward", "id=12&tokens=50&pace_ms=1&fail_after=20")
            .await,
    );
    body.until(|b| b.tokens() >= 2).await.expect("two tokens");
    drop(body);
    let seen = rig.worker.wait(12, "worker end", |p| p.dropped).await;
    assert_eq!(seen.tokens, 20);
    assert_eq!(rig.gateway.verdict().await.1.verdict, Verdict::Failure);
    rig.shutdown().await;
}

/// Scenario 12: A worker that stalls mid-stream hits the idle timeout: Failure, and the
/// upstream is dropped. Paused time: the clock jumps when everything waits.
#[tokio::test(start_paused = true)]
async fn idle_timeout_on_a_stalled_worker() {
    let options = ForwardOptions::default().idle_timeout(Duration::from_secs(5));
    let rig = Rig::start(options).await;
    let mut body = reader(rig.get("forward", "id=120&tokens=10&stall_after=2").await);
    let start = tokio::time::Instant::now();
    rig.worker.wait(120, "upstream drop", |p| p.dropped).await;
    assert!(
        start.elapsed() >= Duration::from_secs(5),
        "dropped before the timeout"
    );
    let (_, outcome) = rig.gateway.verdict().await;
    assert_eq!(outcome.verdict, Verdict::Failure);
    let (_, report) = rig.gateway.report().await;
    assert_eq!(report.expect("forwarded").ending, Ending::TimedOut);
    body.read_to_end().await;
    assert_eq!(body.tokens(), 2);
    rig.shutdown().await;
}

/// Scenario 13: The direct-body path: axum drops the body when the client closes, which
/// drops the `TrackedStream` and the upstream.
#[tokio::test]
async fn direct_body_drops_the_upstream_on_client_close() {
    let rig = Rig::start(ForwardOptions::default()).await;
    let mut body = reader(rig.get("direct", "id=13&tokens=100000&pace_ms=10").await);
    body.until(|b| b.tokens() >= 3).await.expect("three tokens");
    let at_close = rig.worker.progress(13).tokens;
    drop(body);
    let seen = rig.worker.wait(13, "upstream drop", |p| p.dropped).await;
    assert!(seen.tokens <= at_close + 1);
    let (_, outcome) = rig.gateway.verdict().await;
    assert_eq!(outcome.verdict, Verdict::Abandoned);

    // And read to the end, the same path says Success once.
    let mut body = reader(rig.get("direct", "id=14&tokens=5").await);
    assert_eq!(body.read_to_end().await, BodyEnd::Clean);
    let (id, outcome) = rig.gateway.verdict().await;
    assert_eq!((id, outcome.verdict), (14, Verdict::Success));
    rig.gateway.no_more_verdicts();
    rig.shutdown().await;
}
