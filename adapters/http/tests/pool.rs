//! The `PoolLayer` over real loopback HTTP/1.1 and HTTP/2: two hyper workers, one
//! hyper-util client behind the layer that routes each call by the `PickedWorker` in
//! its extensions, a hyper gateway relaying the `TrackedBody`, and a hyper-util client.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{PROTOS, Proto, RawClient, Reader, Route, Server, Worker, client, gateway, within};
use http::{Request, Response, StatusCode, header};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use sluice::breaker::{Config, ManualClock, Pick, SharedBreakerSet, State};
use sluice::sse::SseRules;
use sluice::{Cause, Outcome, Verdict};
use sluice_http::{BreakerError, PoolLayer, PoolService};
use tokio::sync::mpsc;
use tower::ServiceExt;

/// How the layer scans bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sse {
    /// `with_sse`: every tracked body.
    Always,
    /// `with_sse_for_event_streams`: `text/event-stream` bodies only.
    EventStreams,
}

/// Two workers, a gateway whose upstream is a `PoolService` over them, and a client.
struct Pool {
    workers: [Worker; 2],
    set: SharedBreakerSet,
    clock: ManualClock,
    /// The gateway's upstream, to call it directly.
    service: PoolService<Route>,
    gateway: Server,
    client: Client<HttpConnector, Empty<Bytes>>,
    outcomes: mpsc::UnboundedReceiver<(usize, Outcome)>,
}

impl Pool {
    async fn start(proto: Proto, pick: Pick, config: Config, max_ejected: u8, sse: Sse) -> Self {
        let workers = [Worker::start().await, Worker::start().await];
        let clock = ManualClock::new();
        let set = SharedBreakerSet::with_clock(2, config, clock.clone())
            .with_max_ejected_percent(max_ejected);
        let (tx, outcomes) = mpsc::unbounded_channel();
        let layer = PoolLayer::new(set.clone(), pick).with_observer(move |worker, o, _| {
            let _ = tx.send((worker.index, o));
        });
        let layer = match sse {
            Sse::Always => layer.with_sse(SseRules::openai_chat()),
            Sse::EventStreams => layer.with_sse_for_event_streams(SseRules::openai_chat()),
        };
        let route = Route::new(proto, workers.iter().map(|w| w.server.addr));
        let service = tower::Layer::layer(&layer, route);
        let gateway = gateway(service.clone()).await;
        Self {
            workers,
            set,
            clock,
            service,
            gateway,
            client: client(proto),
            outcomes,
        }
    }

    /// The default pool: round robin, both workers may be ejected at once, SSE rules
    /// on every body.
    async fn round_robin(proto: Proto, config: Config) -> Self {
        Self::start(proto, Pick::RoundRobin, config, 100, Sse::Always).await
    }

    fn request(&self, query: &str) -> Request<Empty<Bytes>> {
        let uri = format!("http://{}/v1/stream?{query}", self.gateway.addr);
        Request::get(uri).body(Empty::new()).expect("request")
    }

    async fn get(&self, query: &str) -> Response<Incoming> {
        within("gateway response", self.client.request(self.request(query)))
            .await
            .expect("gateway request")
    }

    /// Reads a whole answer: the worker that gave it (from the `x-worker` header the
    /// gateway sets from the response's extensions) and its body.
    async fn read(&self, query: &str) -> (usize, StatusCode, Reader) {
        let response = self.get(query).await;
        let status = response.status();
        let worker = worker_of(&response);
        let mut body = Reader::new(response);
        assert!(body.read_to_end().await, "{query}: a clean end");
        (worker, status, body)
    }

    /// The next outcome the layer recorded, and its worker.
    async fn outcome(&mut self) -> (usize, Verdict, Cause) {
        let (worker, o) = within("outcome", self.outcomes.recv())
            .await
            .expect("outcome channel");
        (worker, o.verdict, o.cause)
    }

    fn no_more_outcomes(&mut self) {
        if let Ok(extra) = self.outcomes.try_recv() {
            panic!("an extra outcome: {extra:?}");
        }
    }
}

fn worker_of(response: &Response<Incoming>) -> usize {
    let value = response.headers().get("x-worker").expect("x-worker");
    value.to_str().expect("ascii").parse().expect("an index")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_alternates_and_routes_by_the_picked_worker() {
    for proto in PROTOS {
        let mut pool = Pool::round_robin(proto, Config::default()).await;
        for id in 1..=4u64 {
            let (worker, status, body) = pool.read(&format!("id={id}&tokens=2")).await;
            let want = (id as usize - 1) % 2;
            assert_eq!((worker, status), (want, StatusCode::OK), "{proto:?} {id}");
            assert_eq!(body.tokens(), 2);
            assert_eq!(
                pool.outcome().await,
                (want, Verdict::Success, Cause::Done),
                "{proto:?} {id}"
            );
            // The request reached the picked worker, and only it.
            assert!(pool.workers[want].progress(id).borrow().arrived);
            assert!(!pool.workers[1 - want].progress(id).borrow().arrived);
        }
        assert_eq!(
            (pool.workers[0].arrivals(), pool.workers[1].arrivals()),
            (2, 2)
        );
        pool.no_more_outcomes();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5xx_or_3xx_is_its_workers_failure_and_opens_its_breaker_only() {
    for proto in PROTOS {
        let config = Config::default().failure_threshold(2);
        let mut pool = Pool::start(proto, Pick::RoundRobin, config, 50, Sse::Always).await;
        // Worker 0 answers 500, then 302; worker 1 serves in between.
        for (id, code, want) in [
            (1, 500, (0, Verdict::Failure, Cause::Status)),
            (2, 200, (1, Verdict::Success, Cause::Done)),
            (3, 302, (0, Verdict::Failure, Cause::Status)),
        ] {
            let query = match code {
                200 => format!("id={id}&tokens=1"),
                _ => format!("id={id}&status={code}"),
            };
            let (worker, status, body) = pool.read(&query).await;
            assert_eq!((worker, status.as_u16()), (want.0, code), "{proto:?} {id}");
            if code != 200 {
                // Settled at once; the worker's answer passed through untracked.
                assert_eq!(body.data, b"worker says no");
            }
            assert_eq!(pool.outcome().await, want, "{proto:?} {id}");
        }
        assert!(matches!(pool.set.state(0), State::Open { .. }), "{proto:?}");
        assert_eq!(pool.set.state(1), State::Closed, "{proto:?}");
        // Worker 1 takes every call while worker 0 is out.
        for id in 4..=6 {
            let (worker, status, _) = pool.read(&format!("id={id}&tokens=1")).await;
            assert_eq!((worker, status), (1, StatusCode::OK), "{proto:?} {id}");
            assert_eq!(pool.outcome().await, (1, Verdict::Success, Cause::Done));
        }
        assert_eq!(pool.workers[0].arrivals(), 2, "{proto:?}");
        assert_eq!(pool.set.state(1), State::Closed);
        pool.no_more_outcomes();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_is_abandoned_and_counts_against_no_worker() {
    for proto in PROTOS {
        // One counted failure would open a breaker.
        let mut pool = Pool::round_robin(proto, Config::default().failure_threshold(1)).await;
        for id in 1..=4u64 {
            let (worker, status, _) = pool.read(&format!("id={id}&status=429")).await;
            assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
            let want = (id as usize - 1) % 2;
            assert_eq!(worker, want, "{proto:?} {id}");
            assert_eq!(
                pool.outcome().await,
                (want, Verdict::Abandoned, Cause::Status),
                "{proto:?} {id}"
            );
        }
        assert_eq!(
            (pool.set.state(0), pool.set.state(1)),
            (State::Closed, State::Closed),
            "{proto:?}"
        );
        pool.no_more_outcomes();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_before_done_is_its_workers_failure() {
    for proto in PROTOS {
        let mut pool = Pool::round_robin(proto, Config::default().failure_threshold(1)).await;
        // A clean end of the HTTP body, but no `data: [DONE]`.
        let (worker, status, body) = pool.read("id=1&tokens=2&cut").await;
        assert_eq!((worker, status), (0, StatusCode::OK), "{proto:?}");
        assert_eq!(body.tokens(), 2);
        assert!(!body.data.ends_with(b"[DONE]\n\n"));
        assert_eq!(
            pool.outcome().await,
            (0, Verdict::Failure, Cause::Truncated),
            "{proto:?}"
        );
        assert!(matches!(pool.set.state(0), State::Open { .. }));
        assert_eq!(pool.set.state(1), State::Closed);
        // The next two calls go to worker 1: worker 0 is out.
        for id in 2..=3 {
            let (worker, _, _) = pool.read(&format!("id={id}")).await;
            assert_eq!(worker, 1, "{proto:?} {id}");
            assert_eq!(pool.outcome().await, (1, Verdict::Success, Cause::Done));
        }
        pool.no_more_outcomes();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_mid_stream_is_abandoned_and_closes_the_upstream() {
    for proto in PROTOS {
        let mut pool = Pool::round_robin(proto, Config::default().failure_threshold(1)).await;
        let response = pool.get("id=1&tokens=100&stall_after=1").await;
        assert_eq!(worker_of(&response), 0);
        let mut body = Reader::new(response);
        body.until(|b| b.tokens() >= 1).await.expect("a token");
        drop(body);
        let seen = pool.workers[0]
            .wait(1, "upstream close", |p| p.dropped)
            .await;
        assert!(!seen.finished, "{proto:?}");
        assert_eq!(
            pool.outcome().await,
            (0, Verdict::Abandoned, Cause::ClientLeft),
            "{proto:?}"
        );
        assert_eq!(pool.set.state(0), State::Closed, "{proto:?}");
        assert_eq!(pool.set.in_flight(0), 0, "{proto:?}: the permit was freed");
        pool.no_more_outcomes();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_worker_is_its_failure() {
    for proto in PROTOS {
        let mut pool = Pool::round_robin(proto, Config::default().failure_threshold(1)).await;
        pool.workers[1].server.stop().await;
        for (id, want) in [
            (1, (0, Verdict::Success, Cause::Done)),
            (2, (1, Verdict::Failure, Cause::SendFailed)),
            (3, (0, Verdict::Success, Cause::Done)),
            (4, (0, Verdict::Success, Cause::Done)),
        ] {
            let response = pool.get(&format!("id={id}&tokens=1")).await;
            let status = match want.2 {
                Cause::SendFailed => StatusCode::BAD_GATEWAY,
                _ => StatusCode::OK,
            };
            assert_eq!(response.status(), status, "{proto:?} {id}");
            assert!(Reader::new(response).read_to_end().await);
            assert_eq!(pool.outcome().await, want, "{proto:?} {id}");
        }
        assert!(matches!(pool.set.state(1), State::Open { .. }), "{proto:?}");
        pool.no_more_outcomes();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_worker_admitted_rejects_with_the_soonest_retry_after() {
    for proto in PROTOS {
        // Open for 30 s after one failure; both workers may be out at once.
        let mut pool = Pool::round_robin(proto, Config::default().failure_threshold(1)).await;
        let (worker, _, _) = pool.read("id=1&status=500").await;
        assert_eq!(
            pool.outcome().await,
            (worker, Verdict::Failure, Cause::Status)
        );
        pool.clock.advance(Duration::from_secs(10));
        let (other, _, _) = pool.read("id=2&status=503").await;
        assert_eq!((worker, other), (0, 1), "{proto:?}");
        assert_eq!(pool.outcome().await, (1, Verdict::Failure, Cause::Status));
        pool.clock.advance(Duration::from_secs(5));
        // Worker 0 is open until 30 s, worker 1 until 40 s; it is 15 s.
        let request = Request::get("/v1/stream?id=3")
            .body(Empty::new())
            .expect("request");
        let err = within("rejection", pool.service.clone().oneshot(request))
            .await
            .expect_err("no worker admits");
        assert!(matches!(err, BreakerError::Rejected { .. }), "{err:?}");
        assert_eq!(
            err.retry_after(),
            Some(Duration::from_secs(15)),
            "{proto:?}"
        );
        // Through the gateway, the same: a 503 with `Retry-After`.
        let response = pool.get("id=4").await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "15");
        assert_eq!(
            (pool.workers[0].arrivals(), pool.workers[1].arrivals()),
            (1, 1),
            "{proto:?}: no worker was called"
        );
        pool.no_more_outcomes();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_future_dropped_before_the_head_is_abandoned() {
    for proto in PROTOS {
        let mut pool = Pool::round_robin(proto, Config::default().failure_threshold(1)).await;
        let mut raw = RawClient::connect(proto, pool.gateway.addr).await;
        let mut request = Box::pin(raw.send(pool.request("id=1&hold_headers")));
        tokio::select! {
            _ = &mut request => panic!("{proto:?}: headers while the worker holds them"),
            _ = pool.workers[0].wait(1, "arrival", |p| p.arrived) => {}
        }
        // The client gives up; the gateway drops its response future in turn.
        drop(request);
        assert_eq!(
            pool.outcome().await,
            (0, Verdict::Abandoned, Cause::ClientLeftBeforeHead),
            "{proto:?}"
        );
        let seen = pool.workers[0]
            .wait(1, "upstream close", |p| p.dropped)
            .await;
        assert!(!seen.headers, "{proto:?}");
        assert_eq!(
            (pool.set.state(0), pool.set.in_flight(0)),
            (State::Closed, 0)
        );
        pool.no_more_outcomes();
        raw.close();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_rules_for_event_streams_leave_other_bodies_to_their_end() {
    for proto in PROTOS {
        for (sse, json) in [
            (Sse::EventStreams, (Verdict::Success, Cause::End)),
            (Sse::Always, (Verdict::Failure, Cause::Truncated)),
        ] {
            let config = Config::default();
            let mut pool = Pool::start(proto, Pick::RoundRobin, config, 100, sse).await;
            let (worker, status, body) = pool.read("id=1&json").await;
            assert_eq!((worker, status), (0, StatusCode::OK));
            assert_eq!(body.data, br#"{"text":"hi"}"#);
            assert_eq!(
                pool.outcome().await,
                (0, json.0, json.1),
                "{proto:?} {sse:?}: a JSON answer"
            );
            // An event stream is scanned either way.
            let _ = pool.read("id=2&tokens=1&cut").await;
            assert_eq!(
                pool.outcome().await,
                (1, Verdict::Failure, Cause::Truncated),
                "{proto:?} {sse:?}: an event stream cut short"
            );
            let _ = pool.read("id=3&tokens=1").await;
            assert_eq!(pool.outcome().await, (0, Verdict::Success, Cause::Done));
            pool.no_more_outcomes();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_in_flight_sends_calls_past_a_busy_worker() {
    for proto in PROTOS {
        let config = Config::default();
        let mut pool = Pool::start(proto, Pick::LeastInFlight, config, 100, Sse::Always).await;
        // A stream held open on worker 0.
        let held = pool.get("id=1&tokens=100&stall_after=1").await;
        assert_eq!(worker_of(&held), 0);
        assert_eq!(pool.set.in_flight(0), 1);
        // Each next call goes to worker 1, idle once its last call was recorded.
        for id in 2..=4 {
            let (worker, _, _) = pool.read(&format!("id={id}&tokens=1")).await;
            assert_eq!(worker, 1, "{proto:?} {id}");
            assert_eq!(pool.outcome().await, (1, Verdict::Success, Cause::Done));
        }
        drop(held);
        assert_eq!(
            pool.outcome().await,
            (0, Verdict::Abandoned, Cause::ClientLeft)
        );
        assert_eq!(pool.workers[0].arrivals(), 1, "{proto:?}");
        pool.no_more_outcomes();
    }
}
