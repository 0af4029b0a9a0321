//! Model-checked concurrency of `SharedBreaker` (loom): no lost counts, the probe limit
//! held, and only outcomes some sequential history of the sans-io breaker could give.
//!
//! `RUSTFLAGS="--cfg sluice_loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release --test loom_breaker`
#![cfg(sluice_loom)]

use std::time::Duration;

use loom::thread;
use sluice::Verdict;
use sluice::breaker::{Config, ManualClock, Reason, Recorded, SharedBreaker, State};

fn breaker(config: Config) -> (SharedBreaker, ManualClock) {
    let clock = ManualClock::new();
    (SharedBreaker::with_clock(config, clock.clone()), clock)
}

/// Each thread acquires and records one verdict; returns what each record said.
fn race(b: &SharedBreaker, verdicts: &[Verdict]) -> Vec<Recorded> {
    let handles: Vec<_> = verdicts
        .iter()
        .map(|&v| {
            let b = b.clone();
            thread::spawn(move || match b.try_acquire() {
                Ok(permit) => Some(permit.report(v)),
                Err(_) => None,
            })
        })
        .collect();
    handles
        .into_iter()
        .filter_map(|h| h.join().expect("no panic"))
        .collect()
}

#[test]
fn two_failures_are_both_counted() {
    loom::model(|| {
        let (b, _) = breaker(Config::default().failure_threshold(3));
        let got = race(&b, &[Verdict::Failure, Verdict::Failure]);
        assert_eq!(got, [Recorded::Counted(None); 2]);
        assert_eq!(b.state(), State::Closed);
        assert_eq!(b.snapshot().consecutive_failures(), 2, "a failure was lost");
    });
}

#[test]
fn the_threshold_failure_trips_exactly_once() {
    loom::model(|| {
        let (b, _) = breaker(Config::default().failure_threshold(2));
        let got = race(&b, &[Verdict::Failure, Verdict::Failure]);
        // Both permits are acquired before or after the trip: a permit acquired after
        // it is rejected; one acquired before but recorded after is stale.
        let trips = got.iter().filter(|r| r.transition().is_some()).count();
        assert_eq!(trips, 1, "{got:?}");
        let t = got.iter().find_map(Recorded::transition).expect("one trip");
        assert_eq!(
            (t.from, t.reason),
            (State::Closed, Reason::ConsecutiveFailures)
        );
        assert!(matches!(b.state(), State::Open { .. }));
        assert_eq!(b.snapshot().generation(), 1);
    });
}

#[test]
fn success_and_failure_give_a_sequential_outcome() {
    loom::model(|| {
        let (b, _) = breaker(Config::default().failure_threshold(2));
        let _ = b.try_acquire().expect("closed").report(Verdict::Failure);
        let got = race(&b, &[Verdict::Success, Verdict::Failure]);
        let state = b.state();
        let failures = b.snapshot().consecutive_failures();
        // Success first: the count goes 1 -> 0 -> 1, Closed. Failure first: it trips,
        // and the success is stale (or never admitted).
        let success_first = state == State::Closed
            && failures == 1
            && got == [Recorded::Counted(None), Recorded::Counted(None)];
        let failure_first = matches!(state, State::Open { .. })
            && got.iter().filter(|r| r.transition().is_some()).count() == 1
            && got
                .iter()
                .all(|r| r.transition().is_some() || *r == Recorded::Stale);
        assert!(
            success_first || failure_first,
            "{state:?} {failures} {got:?}"
        );
    });
}

#[test]
fn half_open_admits_at_most_the_probe_limit() {
    loom::model(|| {
        let (b, clock) = breaker(Config::default().failure_threshold(1).success_threshold(3));
        let _ = b.try_acquire().expect("closed").report(Verdict::Failure);
        clock.advance(Duration::from_secs(30));
        let got = race(&b, &[Verdict::Success, Verdict::Success]);
        // One probe at a time: the other thread is rejected, unless the first probe was
        // already recorded (its slot freed) when it asked.
        assert!(!got.is_empty());
        assert!(got.iter().all(|r| *r == Recorded::Counted(None)), "{got:?}");
        assert_eq!(b.state(), State::HalfOpen);
        assert_eq!(b.snapshot().probes_in_flight(), 0, "a probe slot leaked");
    });
}

#[test]
fn three_threads_hold_two_probes_and_close_once() {
    loom::model(|| {
        let config = Config::default()
            .failure_threshold(1)
            .success_threshold(2)
            .half_open_max_probes(2);
        let (b, clock) = breaker(config);
        let _ = b.try_acquire().expect("closed").report(Verdict::Failure);
        clock.advance(Duration::from_secs(30));
        // Three threads ask at once and hand their probes back unrecorded.
        let handles: Vec<_> = (0..3)
            .map(|_| {
                let b = b.clone();
                thread::spawn(move || b.try_acquire_owned().ok())
            })
            .collect();
        let probes: Vec<_> = handles
            .into_iter()
            .filter_map(|h| h.join().expect("no panic"))
            .collect();
        assert_eq!(probes.len(), 2, "probe limit not held");
        assert_eq!(b.snapshot().probes_in_flight(), 2);
        // The two probes succeed at once, here and on one more thread (loom allows
        // five threads in all): exactly one closes.
        let mut probes = probes.into_iter();
        let (first, second) = (probes.next().expect("two"), probes.next().expect("two"));
        let other = thread::spawn(move || second.report(Verdict::Success));
        let got = [
            first.report(Verdict::Success),
            other.join().expect("no panic"),
        ];
        let closes = got
            .iter()
            .filter(|r| r.transition().is_some_and(|t| t.to == State::Closed))
            .count();
        assert_eq!(closes, 1, "{got:?}");
        assert_eq!(b.state(), State::Closed);
    });
}

#[test]
fn force_open_races_a_closed_record() {
    loom::model(|| {
        let (b, _) = breaker(Config::default().failure_threshold(2));
        let permit = b.try_acquire_owned().expect("closed");
        let b2 = b.clone();
        let forcer = thread::spawn(move || b2.force_open());
        let recorded = permit.report(Verdict::Failure);
        let forced = forcer.join().expect("no panic").expect("a transition");
        assert_eq!(b.state(), State::ForcedOpen);
        assert_eq!(forced.from, State::Closed);
        // Before the force, the failure counted; after, the permit is stale.
        assert!(
            matches!(recorded, Recorded::Counted(None) | Recorded::Stale),
            "{recorded:?}"
        );
        assert_eq!(b.snapshot().generation(), 1);
    });
}
