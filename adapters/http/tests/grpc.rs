//! gRPC over real HTTP/2 on loopback: a hyper worker writes gRPC-framed messages
//! (5-byte prefix) and then `grpc-status` trailers, by hand (no protoc); the gateway's
//! `BreakerLayer` judges the stream by its status; the client reads through it.

mod common;

use common::{Mode, Proto, RawClient, Reader, Rig};
use http::StatusCode;
use sluice::breaker::Config;
use sluice::{Cause, Verdict};

async fn rig() -> Rig {
    Rig::start(Proto::H2, Mode::Grpc, Config::default()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_trailer_decides() {
    let mut rig = rig().await;
    for (id, code, want) in [
        (1, "0", Verdict::Success),
        (2, "14", Verdict::Failure),
        (3, "3", Verdict::Abandoned),
        (4, "13", Verdict::Failure),
        (5, "8", Verdict::Abandoned),
    ] {
        let response = rig.get(&format!("id={id}&grpc={code}&tokens=3")).await;
        assert_eq!(response.status(), StatusCode::OK);
        let mut body = Reader::new(response);
        assert!(body.read_to_end().await, "status {code}: a clean end");
        assert_eq!(body.messages(), 3, "status {code}");
        let trailers = body.trailers.as_ref().expect("trailers relayed");
        assert_eq!(trailers["grpc-status"], code);
        let o = rig.gateway.outcome().await;
        assert_eq!(
            (o.verdict, o.cause),
            (want, Cause::GrpcStatus),
            "status {code}"
        );
        assert_eq!(o.chunks, 3, "status {code}: one data frame per message");
        rig.gateway.no_more_outcomes();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_trailers_is_truncated() {
    let mut rig = rig().await;
    let mut body = Reader::new(rig.get("id=1&grpc=none&tokens=2").await);
    assert!(body.read_to_end().await);
    assert_eq!(body.messages(), 2);
    assert!(body.trailers.is_none());
    let o = rig.gateway.outcome().await;
    assert_eq!((o.verdict, o.cause), (Verdict::Failure, Cause::Truncated));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailers_only_is_judged_from_the_headers() {
    let mut rig = rig().await;
    for (id, code, want) in [
        (1, "0", Verdict::Success),
        (2, "14", Verdict::Failure),
        (3, "5", Verdict::Abandoned),
    ] {
        let response = rig.get(&format!("id={id}&grpc_only={code}")).await;
        assert_eq!(response.headers()["grpc-status"], code);
        let o = rig.gateway.outcome().await;
        assert_eq!(
            (o.verdict, o.cause),
            (want, Cause::GrpcStatus),
            "status {code}"
        );
        assert!(Reader::new(response).read_to_end().await);
        rig.gateway.no_more_outcomes();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cancel_is_abandoned_and_closes_the_upstream() {
    let mut rig = rig().await;
    // Dropping the body resets the stream; the connection stays up.
    let mut body = Reader::new(rig.get("id=1&grpc=0&tokens=5&stall_after=1").await);
    body.until(|b| b.messages() >= 1).await.expect("a message");
    drop(body);
    let seen = rig.worker.wait(1, "upstream close", |p| p.dropped).await;
    assert!(!seen.finished);
    let o = rig.gateway.outcome().await;
    assert_eq!(
        (o.verdict, o.cause),
        (Verdict::Abandoned, Cause::ClientLeft)
    );
    assert_eq!(o.chunks, 1);

    // The same when the client's connection goes away.
    let mut client = RawClient::connect(Proto::H2, rig.gateway.server.addr).await;
    let response = client
        .send(rig.request("id=2&grpc=0&tokens=5&stall_after=1"))
        .await;
    let mut body = Reader::new(response.expect("response"));
    body.until(|b| b.messages() >= 1).await.expect("a message");
    client.close();
    rig.worker.wait(2, "upstream close", |p| p.dropped).await;
    let o = rig.gateway.outcome().await;
    assert_eq!(
        (o.verdict, o.cause),
        (Verdict::Abandoned, Cause::ClientLeft)
    );
}
