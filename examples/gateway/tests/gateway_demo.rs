//! The gateway's scripted run (`cargo run -p sluice-gateway`), played in-process: its
//! ledger must show the verdicts, the breaker transitions (in order, with their
//! reasons) and the cancellations the README promises, routed by the breaker set
//! under its ejection cap.

use std::time::Duration;

use sluice::Verdict::{Abandoned, Failure, Success};
use sluice::breaker::{Reason, State};
use sluice_gateway::mock;
use sluice_gateway::scenarios::{self, Read, RunLog, Scenario};

async fn ledger() -> RunLog {
    let mut lines = Vec::new();
    let ledger = scenarios::run(|line| lines.push(line.to_string()))
        .await
        .expect("the scripted run");
    assert!(
        lines.iter().any(|l| l.contains("breaker bravo")),
        "the timeline shows the transitions"
    );
    ledger
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripted_run_ledger() {
    let ledger = ledger().await;
    let flaky = mock::Pool::FLAKY;

    // Whole answers are successes; clients that leave are nobody's fault.
    assert_eq!(
        ledger.verdicts(Scenario::FullRead),
        [Some(Success), Some(Success), Some(Success)]
    );
    for scenario in [Scenario::LeaveMidStream, Scenario::LeaveInPrefill] {
        let left: Vec<_> = ledger.of(scenario).collect();
        assert_eq!(left.len(), 1, "{scenario:?}");
        assert_eq!(left[0].verdict, Some(Abandoned), "{scenario:?}");
        let after = left[0].tokens_after_leave.expect("measured");
        assert!(
            after <= 1,
            "{scenario:?}: {after} tokens after the client left"
        );
    }
    let mid = ledger.of(Scenario::LeaveMidStream).next().expect("one");
    assert_eq!(mid.read, Read::Left(3));
    let prefill = ledger.of(Scenario::LeaveInPrefill).next().expect("one");
    assert_eq!((prefill.read, prefill.tokens_read), (Read::Left(0), 0));

    // bravo's broken streams fail (although they started with 200) until it opens;
    // the others keep succeeding.
    let flaky_run: Vec<_> = ledger
        .of(Scenario::FlakyWorker)
        .filter(|r| r.worker.as_deref() == Some("bravo"))
        .map(|r| (r.verdict, r.read))
        .collect();
    let broken = (Some(Failure), Read::Broken);
    assert_eq!(flaky_run, [broken, broken, broken]);
    assert!(
        ledger
            .of(Scenario::FlakyWorker)
            .filter(|r| r.worker.as_deref() != Some("bravo"))
            .all(|r| r.verdict == Some(Success))
    );

    // While it is open nothing goes to bravo, and it is seen skipped.
    let around: Vec<_> = ledger.of(Scenario::RoutedAround).collect();
    assert_eq!(around.len(), 3);
    assert!(around.iter().all(|r| r.verdict == Some(Success)));
    assert!(around.iter().all(|r| r.worker.as_deref() != Some("bravo")));
    assert!(
        around
            .iter()
            .any(|r| r.skipped.iter().any(|(w, _)| w == "bravo"))
    );

    // The half-open probe fails (bravo is still broken); after healing two probes
    // succeed.
    let probes = |s: Scenario| -> Vec<_> {
        ledger
            .of(s)
            .filter(|r| r.probe)
            .map(|r| (r.worker.clone(), r.verdict))
            .collect()
    };
    let bravo = || Some("bravo".to_owned());
    assert_eq!(probes(Scenario::HalfOpenProbe), [(bravo(), Some(Failure))]);
    assert_eq!(
        probes(Scenario::Recovery),
        [(bravo(), Some(Success)), (bravo(), Some(Success))]
    );
    let recovery: Vec<_> = ledger.of(Scenario::Recovery).collect();
    let last = &recovery[recovery.len().saturating_sub(3)..];
    assert!(last.iter().all(|r| r.verdict == Some(Success) && !r.probe));
    assert!(
        last.iter().any(|r| r.worker == bravo()),
        "bravo serves again"
    );

    // The breaker transitions, in order, with their reasons and clock times.
    let open = |s| State::Open {
        until: Duration::from_secs(s),
    };
    let path: Vec<_> = ledger
        .transitions
        .iter()
        .map(|t| (t.worker, t.from, t.to, t.reason, t.at.as_secs()))
        .collect();
    assert_eq!(
        path,
        [
            (
                flaky,
                State::Closed,
                open(30),
                Reason::ConsecutiveFailures,
                0
            ),
            (flaky, open(30), State::HalfOpen, Reason::OpenElapsed, 30),
            (flaky, State::HalfOpen, open(60), Reason::ProbeFailed, 30),
            (flaky, open(60), State::HalfOpen, Reason::OpenElapsed, 60),
            (
                flaky,
                State::HalfOpen,
                State::Closed,
                Reason::ProbesSucceeded,
                60
            ),
        ]
    );
    assert_eq!(ledger.final_states, [State::Closed; 3]);
    // The set's default cap (10 %) still lets one of three workers out: bravo alone
    // was ejected, so the cap never held anyone in.
    assert_eq!(ledger.max_ejected, 1);
    assert!(
        ledger
            .transitions
            .iter()
            .all(|t| t.reason != Reason::EjectionCapped)
    );

    // Every request that reached a worker got exactly one verdict.
    assert!(ledger.requests.iter().all(|r| r.verdict.is_some()));
    assert_eq!(ledger.count("bravo", Failure), 4);
    assert_eq!(
        ledger.count("alpha", Failure) + ledger.count("charlie", Failure),
        0
    );

    // Each verdict says why, and the printed ledger sums them up: broken streams are
    // error items, clients that left are not the workers' fault.
    let printed = ledger.to_string();
    assert!(
        printed.contains(
            "verdicts by cause: success (done) 22, abandoned (client_left) 2, failure (error_item) 4"
        ),
        "{printed}"
    );
}
