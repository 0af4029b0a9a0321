//! The breaker scenarios of the adapters issue (7, 9, 10, and a permit dropped
//! unrecorded), over real loopback sockets: a client, the test gateway of `common/`
//! admitting through a real [`SharedBreaker`], and the mock worker. The breaker's
//! time comes only from a [`ManualClock`]; effects are awaited on channels and
//! watches with a deadline, never with sleeps.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{RawQuery, State as AxumState};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use common::{Admit, Gateway, Rig, Worker, http_client, reader, within};
use sluice::Verdict;
use sluice::breaker::{
    Classified, Config, ManualClock, OwnedSharedPermit, Rejected, SharedBreaker, SharedPermit,
    State, StatusPolicy,
};
use sluice::forward::ForwardOptions;
use sluice_test_support::client::BodyEnd;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Where the tests start the breaker's clock (any origin will do; not zero, so a
/// `retry_after` computed from the wrong origin shows).
const T0: Duration = Duration::from_secs(1_000);

/// Admission through a real [`SharedBreaker`]: its owned permit travels with the
/// request (and its stream) into the gateway's relay task or response body.
#[derive(Clone)]
struct BreakerAdmit(SharedBreaker);

impl Admit for BreakerAdmit {
    type Permit = OwnedSharedPermit;

    fn admit(&self) -> Result<OwnedSharedPermit, u64> {
        self.0
            .try_acquire_owned()
            .map_err(|Rejected { retry_after }| retry_after.map_or(0, whole_secs_up))
    }
}

/// A `Retry-After` in whole seconds, rounded up: a client that waits that long is
/// not turned away again by the same opening.
fn whole_secs_up(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// A worker, the common gateway in front of it admitting through `breaker`, and the
/// breaker's clock.
struct Bed {
    rig: Rig,
    breaker: SharedBreaker,
    clock: ManualClock,
}

impl Bed {
    async fn start(config: Config) -> Self {
        let clock = ManualClock::new();
        clock.set(T0);
        let breaker = SharedBreaker::try_with_clock(config, clock.clone()).expect("valid config");
        let worker = Worker::start().await;
        let gateway = Gateway::start(
            worker.server.addr,
            ForwardOptions::default(),
            BreakerAdmit(breaker.clone()),
        )
        .await;
        Self {
            rig: Rig {
                worker,
                gateway,
                client: http_client(),
            },
            breaker,
            clock,
        }
    }

    /// The next verdict, which must be `id`'s. The gateway records into the permit
    /// before it reports, so the breaker has counted it by then.
    async fn verdict(&mut self, id: u64) -> Verdict {
        let (got, outcome) = self.rig.gateway.verdict().await;
        assert_eq!(got, id, "a verdict for another request");
        outcome.verdict
    }

    /// A request the breaker admits and the worker answers with 200.
    async fn admitted(&self, route: &str, query: &str) -> reqwest::Response {
        let response = self.rig.get(route, query).await;
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "{route}?{query} not admitted (breaker {:?})",
            self.breaker.state()
        );
        response
    }

    /// A stream that the worker breaks mid-stream: Failure.
    async fn fail_mid_stream(&mut self, route: &str, id: u64) {
        let query = format!("id={id}&tokens=10&fail_after=2&pace_ms=1");
        let mut body = reader(self.admitted(route, &query).await);
        assert_eq!(body.read_to_end().await, BodyEnd::Error, "request {id}");
        assert_eq!(body.tokens(), 2);
        assert_eq!(self.verdict(id).await, Verdict::Failure, "request {id}");
    }

    /// A stream read to its end: Success.
    async fn succeed(&mut self, route: &str, id: u64) {
        let mut body = reader(self.admitted(route, &format!("id={id}&tokens=3")).await);
        assert_eq!(body.read_to_end().await, BodyEnd::Clean, "request {id}");
        assert!(body.done());
        assert_eq!(self.verdict(id).await, Verdict::Success, "request {id}");
    }

    /// A request the breaker turns away: 503 with the retry-after (whole seconds,
    /// 0 when unknown), which it returns. The worker never hears of it and nothing is
    /// recorded.
    async fn rejected(&mut self, route: &str, id: u64) -> u64 {
        let response = self.rig.get(route, &format!("id={id}&tokens=3")).await;
        assert_eq!(
            response.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "request {id} was not rejected (breaker {:?})",
            self.breaker.state()
        );
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .expect("a Retry-After")
            .to_str()
            .expect("ascii")
            .parse()
            .expect("whole seconds");
        assert_eq!(
            within("rejection body", response.text())
                .await
                .expect("body"),
            "breaker open"
        );
        // Admitted, the gateway would have answered only after the worker's headers.
        assert!(
            !self.rig.worker.progress(id).arrived,
            "a rejected request reached the worker"
        );
        self.rig.gateway.no_more_verdicts();
        retry_after
    }

    /// The client leaves in one of the ways of [`Leave`]; the gateway records
    /// Abandoned and the worker's response is dropped.
    async fn disconnect(&mut self, leave: Leave, id: u64) {
        let route = leave.route();
        match leave {
            Leave::ForwardMidStream | Leave::DirectMidStream => {
                let query = format!("id={id}&tokens=100000&pace_ms=2");
                let mut body = reader(self.admitted(route, &query).await);
                body.until(|b| b.tokens() >= 2).await.expect("two tokens");
                drop(body);
            }
            Leave::ForwardPrefill | Leave::DirectPrefill => {
                let response = self.admitted(route, &format!("id={id}&hold_prefill")).await;
                drop(response);
            }
            Leave::ForwardHeaders | Leave::DirectHeaders => {
                let url = self
                    .rig
                    .gateway
                    .url(route, &format!("id={id}&hold_headers"));
                let request = self.rig.client.get(url).send();
                tokio::select! {
                    _ = self.rig.worker.wait(id, "request at the worker", |p| p.arrived) => {}
                    r = request => panic!("the gateway answered request {id}: {r:?}"),
                }
                // `request` is dropped: the client's connection closes.
            }
        }
        self.rig
            .worker
            .wait(id, "upstream dropped", |p| p.dropped)
            .await;
        assert_eq!(
            self.verdict(id).await,
            Verdict::Abandoned,
            "{leave:?} ({id})"
        );
    }

    async fn shutdown(self) {
        self.rig.shutdown().await;
    }
}

/// Where and when a client leaves.
#[derive(Debug, Clone, Copy)]
enum Leave {
    ForwardMidStream,
    ForwardPrefill,
    ForwardHeaders,
    DirectMidStream,
    DirectPrefill,
    DirectHeaders,
}

impl Leave {
    const ALL: [Leave; 6] = [
        Leave::ForwardMidStream,
        Leave::ForwardPrefill,
        Leave::ForwardHeaders,
        Leave::DirectMidStream,
        Leave::DirectPrefill,
        Leave::DirectHeaders,
    ];

    fn route(self) -> &'static str {
        match self {
            Leave::ForwardMidStream | Leave::ForwardPrefill | Leave::ForwardHeaders => "forward",
            Leave::DirectMidStream | Leave::DirectPrefill | Leave::DirectHeaders => "direct",
        }
    }
}

/// An address on 127.0.0.1 that nobody listens on (bound, then let go).
async fn refused_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr")
}

/// Scenario 7: the start of a response, as `StatusPolicy::default()` reads it: 5xx is
/// a Failure; 429 and 400 are neutral (Abandoned: no count moves, nor is the run of
/// failures reset); a refused connection is a Failure. Enough failures open the
/// breaker, and the 4xx between them did not hold it back.
#[tokio::test]
async fn scenario_7_status_classes_and_refused_connections() {
    let threshold = 6;
    let mut bed = Bed::start(Config::default().failure_threshold(threshold)).await;
    let policy = StatusPolicy::default();
    let mut failures = 0;
    let mut id = 700;
    for route in ["forward", "direct"] {
        for (status, expected) in [
            (500, Verdict::Failure),
            (429, Verdict::Abandoned),
            (400, Verdict::Abandoned),
            (503, Verdict::Failure),
        ] {
            assert_eq!(policy.classify(status), Classified::Settle(expected));
            id += 1;
            let before = bed.breaker.snapshot();
            let response = bed
                .rig
                .get(route, &format!("id={id}&status={status}"))
                .await;
            assert_eq!(response.status().as_u16(), status, "{route} {status}");
            assert_eq!(bed.verdict(id).await, expected, "{route} {status}");
            let after = bed.breaker.snapshot();
            if expected == Verdict::Failure {
                failures += 1;
            } else {
                assert_eq!(after, before, "{route} {status} moved the breaker");
            }
            assert_eq!(after.consecutive_failures(), failures, "{route} {status}");
            assert_eq!(bed.breaker.state(), State::Closed);
        }
    }
    assert_eq!(failures, threshold - 2);

    // A gateway whose worker refuses connections, on the same breaker.
    assert_eq!(policy.classify_send_failure(), Verdict::Failure);
    let mut dead = Gateway::start(
        refused_addr().await,
        ForwardOptions::default(),
        BreakerAdmit(bed.breaker.clone()),
    )
    .await;
    for route in ["forward", "direct"] {
        id += 1;
        let url = dead.url(route, &format!("id={id}"));
        let response = within("gateway response", bed.rig.client.get(url).send())
            .await
            .expect("gateway request");
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY, "{route}");
        let (got, outcome) = dead.verdict().await;
        assert_eq!((got, outcome.verdict), (id, Verdict::Failure), "{route}");
    }
    // The sixth failure in a row (the 4xx in between did not reset the run) opened it.
    // The default open duration (SPEC section 3): 30 s.
    assert_eq!(
        bed.breaker.state(),
        State::Open {
            until: T0 + Duration::from_secs(30)
        }
    );
    assert_eq!(bed.rejected("forward", id + 1).await, 30);
    dead.no_more_verdicts();
    dead.server.shutdown().await;
    bed.shutdown().await;
}

/// Scenario 9: mid-stream errors in a row open the breaker; it then turns requests
/// away with the time left (from the config and the clock); once the open duration
/// has passed, a failed probe opens it again, and `success_threshold` successful
/// probes close it. While the one probe slot is taken, requests are turned away with
/// no retry-after.
#[tokio::test]
async fn scenario_9_mid_stream_errors_open_probes_close() {
    let open_for = Duration::from_secs(10);
    let config = Config::default()
        .failure_threshold(3)
        .success_threshold(2)
        .open_duration(open_for)
        .half_open_max_probes(1);
    let mut bed = Bed::start(config).await;

    bed.fail_mid_stream("forward", 901).await;
    bed.succeed("forward", 902).await; // resets the run
    bed.fail_mid_stream("forward", 903).await;
    bed.fail_mid_stream("direct", 904).await;
    assert_eq!(bed.breaker.state(), State::Closed);
    assert_eq!(bed.breaker.snapshot().consecutive_failures(), 2);
    // The opening is timed from the failure that trips it.
    bed.clock.advance(Duration::from_millis(1_250));
    bed.fail_mid_stream("forward", 905).await;
    let until = T0 + Duration::from_millis(1_250) + open_for;
    assert_eq!(bed.breaker.state(), State::Open { until });

    // Turned away with the time left, rounded up to whole seconds.
    assert_eq!(bed.rejected("forward", 906).await, 10);
    bed.clock.advance(Duration::from_millis(2_500));
    assert_eq!(bed.rejected("direct", 907).await, 8);
    assert_eq!(
        bed.breaker.try_acquire().err(),
        Some(Rejected {
            retry_after: Some(Duration::from_millis(7_500))
        })
    );
    bed.clock.set(until - Duration::from_millis(1));
    assert_eq!(bed.rejected("forward", 908).await, 1);

    // At `until`, a probe goes through; it fails mid-stream: open again, for the
    // whole duration from now.
    bed.clock.set(until);
    bed.fail_mid_stream("forward", 909).await;
    let until = until + open_for;
    assert_eq!(bed.breaker.state(), State::Open { until });
    assert_eq!(bed.rejected("direct", 910).await, 10);

    bed.clock.advance(open_for);
    // A probe that keeps its slot: `[DONE]` came, but the worker lingers.
    let mut probe = reader(bed.admitted("forward", "id=911&tokens=3&linger").await);
    probe.until(|b| b.done()).await.expect("[DONE]");
    assert_eq!(bed.breaker.snapshot().probes_in_flight(), 1);
    assert_eq!(
        bed.rejected("direct", 912).await,
        0,
        "no slot: no retry-after"
    );
    drop(probe);
    assert_eq!(bed.verdict(911).await, Verdict::Success);
    assert_eq!(bed.breaker.state(), State::HalfOpen, "one success of two");
    bed.succeed("direct", 913).await;
    assert_eq!(bed.breaker.state(), State::Closed);
    // Closed -> Open -> HalfOpen -> Open -> HalfOpen -> Closed.
    assert_eq!(bed.breaker.snapshot().generation(), 5);
    bed.succeed("forward", 914).await;
    bed.rig.gateway.no_more_verdicts();
    bed.shutdown().await;
}

/// Scenario 10: clients leaving never move the breaker, however many: 60 of them (mid-
/// stream, during prefill, while waiting for headers; both routes) after four
/// failures with a threshold of five leave it Closed with its run of four, which
/// the next failure completes. HalfOpen, a probe whose client leaves gives its slot
/// back every time, and does not break a run of probe successes.
#[tokio::test]
async fn scenario_10_disconnects_never_move_the_breaker() {
    let open_for = Duration::from_secs(10);
    let config = Config::default()
        .failure_threshold(5)
        .success_threshold(2)
        .open_duration(open_for)
        .half_open_max_probes(1);
    let mut bed = Bed::start(config).await;

    for id in 1001..=1004 {
        let route = if id % 2 == 0 { "forward" } else { "direct" };
        bed.fail_mid_stream(route, id).await;
    }
    let before = bed.breaker.snapshot();
    assert_eq!(before.consecutive_failures(), 4);
    for (n, id) in (1100..1160).enumerate() {
        let leave = Leave::ALL[n % Leave::ALL.len()];
        bed.disconnect(leave, id).await;
        assert_eq!(bed.breaker.state(), State::Closed, "after {leave:?} ({id})");
    }
    assert_eq!(
        bed.breaker.snapshot(),
        before,
        "60 disconnects moved the breaker"
    );
    // Neither counted nor reset: the next failure is the fifth in a row.
    bed.fail_mid_stream("forward", 1200).await;
    let until = T0 + open_for;
    assert_eq!(bed.breaker.state(), State::Open { until });

    bed.clock.set(until);
    let mut generation = None;
    for (n, id) in (1300..1318).enumerate() {
        let leave = Leave::ALL[n % Leave::ALL.len()];
        // A taken slot would turn this one away (a 503, or an answer before the
        // worker's headers).
        bed.disconnect(leave, id).await;
        let core = bed.breaker.snapshot();
        assert_eq!(
            (bed.breaker.state(), core.probes_in_flight()),
            (State::HalfOpen, 0),
            "after the probe's {leave:?} ({id})"
        );
        assert_eq!(
            *generation.get_or_insert(core.generation()),
            core.generation()
        );
    }
    // Success, a probe abandoned, success: the two successes close it.
    bed.succeed("forward", 1400).await;
    bed.disconnect(Leave::DirectMidStream, 1401).await;
    assert_eq!(bed.breaker.state(), State::HalfOpen);
    bed.succeed("direct", 1402).await;
    assert_eq!(bed.breaker.state(), State::Closed);
    bed.rig.gateway.no_more_verdicts();
    bed.shutdown().await;
}

/// A bare gateway route: it takes a permit (borrowed, or owned with `owned` in the
/// query) and waits for the worker's headers with nothing around the permit. If the
/// client leaves meanwhile, hyper drops the handler's future and the permit with it,
/// unrecorded; the [`Tell`] declared before the permit (so dropped after it) tells
/// the test. It streams nothing: an answer gives the permit back as Abandoned.
struct Bare {
    breaker: SharedBreaker,
    upstream: String,
    client: reqwest::Client,
    dropped: mpsc::UnboundedSender<u64>,
}

/// Sends its id when dropped.
struct Tell(mpsc::UnboundedSender<u64>, u64);

impl Drop for Tell {
    fn drop(&mut self) {
        let _ = self.0.send(self.1);
    }
}

enum Held<'a> {
    Borrowed(SharedPermit<'a>),
    Owned(OwnedSharedPermit),
}

async fn bare_handler(AxumState(gw): AxumState<Arc<Bare>>, RawQuery(q): RawQuery) -> Response {
    let q = q.unwrap_or_default();
    let id = q
        .split('&')
        .find_map(|kv| kv.strip_prefix("id="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let _tell = Tell(gw.dropped.clone(), id);
    let held = if q.split('&').any(|kv| kv == "owned") {
        gw.breaker.try_acquire_owned().map(Held::Owned)
    } else {
        gw.breaker.try_acquire().map(Held::Borrowed)
    };
    let Ok(held) = held else {
        return (StatusCode::SERVICE_UNAVAILABLE, "breaker open").into_response();
    };
    let _answer = gw.client.get(format!("{}?{q}", gw.upstream)).send().await;
    let _ = match held {
        Held::Borrowed(permit) => permit.report(Verdict::Abandoned),
        Held::Owned(permit) => permit.report(Verdict::Abandoned),
    };
    (StatusCode::BAD_GATEWAY, "the bare route streams nothing").into_response()
}

/// Serves [`bare_handler`] on 127.0.0.1 in front of `upstream`.
async fn start_bare(
    breaker: SharedBreaker,
    upstream: SocketAddr,
) -> (SocketAddr, mpsc::UnboundedReceiver<u64>, JoinHandle<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let state = Arc::new(Bare {
        breaker,
        upstream: format!("http://{upstream}/v1/stream"),
        client: http_client(),
        dropped: tx,
    });
    let router = Router::new()
        .route("/bare", get(bare_handler))
        .with_state(state);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        axum::serve(listener, router).await.expect("serve");
    });
    (addr, rx, task)
}

/// A `SharedPermit` (and an `OwnedSharedPermit`) dropped unrecorded, because the
/// gateway's future was cancelled while waiting for the worker's headers, records
/// Abandoned: in Closed nothing counts (the run of failures stays), and HalfOpen its
/// probe slot is freed (in the same generation), so the breaker is not wedged.
#[tokio::test]
async fn permit_dropped_unrecorded_frees_the_probe_slot() {
    let open_for = Duration::from_secs(10);
    let config = Config::default()
        .failure_threshold(2)
        .success_threshold(2)
        .open_duration(open_for)
        .half_open_max_probes(1);
    let mut bed = Bed::start(config).await;
    let (bare, mut dropped, bare_task) =
        start_bare(bed.breaker.clone(), bed.rig.worker.server.addr).await;

    bed.fail_mid_stream("forward", 1501).await;
    let mut id = 1510;
    let mut generation = None;
    for kind in [
        "borrowed", "owned", "borrowed", "owned", "borrowed", "owned",
    ] {
        id += 1;
        let before = bed.breaker.snapshot();
        let url = format!("http://{bare}/bare?id={id}&hold_headers&{kind}");
        let mut request = Box::pin(bed.rig.client.get(url).send());
        tokio::select! {
            _ = bed.rig.worker.wait(id, "request at the worker", |p| p.arrived) => {}
            r = &mut request => panic!("the bare gateway answered {id}: {r:?}"),
        }
        let half_open = bed.breaker.state() == State::HalfOpen;
        if half_open {
            // The probe holds the one slot: others are turned away meanwhile.
            assert_eq!(
                bed.breaker.snapshot().probes_in_flight(),
                1,
                "{kind} ({id})"
            );
            assert_eq!(bed.rejected("forward", id + 100).await, 0);
        }
        drop(request); // the client leaves
        assert_eq!(
            within("the handler dropped", dropped.recv()).await,
            Some(id)
        );
        bed.rig
            .worker
            .wait(id, "upstream dropped", |p| p.dropped)
            .await;
        let after = bed.breaker.snapshot();
        if half_open {
            assert_eq!(
                (bed.breaker.state(), after.probes_in_flight()),
                (State::HalfOpen, 0),
                "{kind} ({id}): the probe slot was not freed"
            );
            assert_eq!(
                *generation.get_or_insert(after.generation()),
                after.generation()
            );
        } else {
            assert_eq!(after, before, "{kind} ({id}) moved the breaker");
            assert_eq!(after.consecutive_failures(), 1);
            if kind == "owned" {
                // Closed, two dropped: open it, and go on HalfOpen.
                bed.fail_mid_stream("direct", 1502).await;
                assert_eq!(
                    bed.breaker.state(),
                    State::Open {
                        until: T0 + open_for
                    }
                );
                bed.clock.advance(open_for);
            }
        }
    }
    assert!(generation.is_some(), "no probe was dropped");
    // The slot is free: two probes succeed and close it.
    bed.succeed("forward", 1600).await;
    bed.succeed("direct", 1601).await;
    assert_eq!(bed.breaker.state(), State::Closed);
    bed.rig.gateway.no_more_verdicts();
    bare_task.abort();
    bed.shutdown().await;
}
