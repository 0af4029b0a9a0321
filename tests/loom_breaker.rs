//! Model-checked concurrency of `SharedBreaker` and `SharedBreakerSet` (loom): no lost
//! counts (also on the failure-rate rule's lock-free path), the probe limit held, the
//! ejection cap never exceeded, and only outcomes some sequential history of the
//! sans-io breaker could give.
//!
//! `RUSTFLAGS="--cfg sluice_loom" LOOM_MAX_PREEMPTIONS=2 CARGO_TARGET_DIR=target/loom cargo test --release --test loom_breaker`
#![cfg(sluice_loom)]

use std::time::Duration;

use loom::thread;
use sluice::Verdict;
use sluice::breaker::{
    Config, ManualClock, Pick, Reason, Recorded, SharedBreaker, SharedBreakerSet, State, Window,
    WindowCounts,
};

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

// The failure-rate rule's lock-free path: successes counted in the word.

fn rated(window: Window, minimum_calls: u32) -> Config {
    Config::default()
        .failure_threshold(100)
        .failure_rate(0.5, window, minimum_calls)
}

#[test]
fn rate_rule_successes_are_all_counted() {
    loom::model(|| {
        // Three calls so far (one failure): successes may be counted in the word.
        let (b, _) = breaker(rated(Window::Calls(8), 4));
        for v in [Verdict::Success, Verdict::Failure, Verdict::Success] {
            let _ = b.try_acquire().expect("closed").report(v);
        }
        let got = race(&b, &[Verdict::Success, Verdict::Success]);
        assert_eq!(got, [Recorded::Counted(None); 2]);
        assert_eq!(b.state(), State::Closed);
        assert_eq!(
            b.snapshot().window_counts(),
            Some(WindowCounts {
                calls: 5,
                failures: 1
            }),
            "a success was lost"
        );
    });
}

#[test]
fn rate_rule_success_and_failure_give_a_sequential_outcome() {
    loom::model(|| {
        // Window of 4, minimum 4, rate 1/2: F S S, then a success and a failure at
        // once. Either order fills the window with 2 failures of 4: the second record
        // opens it, whichever it is; nothing is lost or counted twice.
        let (b, _) = breaker(rated(Window::Calls(4), 4));
        for v in [Verdict::Failure, Verdict::Success, Verdict::Success] {
            let _ = b.try_acquire().expect("closed").report(v);
        }
        let got = race(&b, &[Verdict::Success, Verdict::Failure]);
        let opened: Vec<_> = got.iter().filter_map(Recorded::transition).collect();
        let state = b.state();
        if opened.is_empty() {
            // Both counted in Closed: then the window is S S S F or S S F S.
            assert_eq!(state, State::Closed, "{got:?}");
            assert_eq!(
                b.snapshot().window_counts(),
                Some(WindowCounts {
                    calls: 4,
                    failures: 1
                }),
                "{got:?}"
            );
        } else {
            assert_eq!(opened.len(), 1, "{got:?}");
            assert_eq!(opened[0].reason, Reason::FailureRate);
            assert!(matches!(state, State::Open { .. }));
        }
    });
}

#[test]
fn rate_rule_time_window_successes_are_not_lost() {
    loom::model(|| {
        // 16 s window (1 s buckets): one success at 0.5 s, then the clock moves to
        // 1.5 s while two threads record successes. Each is counted, lock-free or
        // not, at a reading the breaker saw; none is lost.
        let (b, clock) = breaker(rated(Window::Time(Duration::from_secs(16)), 4));
        clock.set(Duration::from_millis(500));
        let _ = b.try_acquire().expect("closed").report(Verdict::Success);
        let c2 = clock.clone();
        let mover = thread::spawn(move || c2.set(Duration::from_millis(1500)));
        let got = race(&b, &[Verdict::Success, Verdict::Success]);
        mover.join().expect("no panic");
        assert_eq!(got, [Recorded::Counted(None); 2]);
        assert_eq!(
            b.snapshot().window_counts(),
            Some(WindowCounts {
                calls: 3,
                failures: 0
            })
        );
    });
}

// The set: the ejection cap under concurrent trips, and the in-flight counts.

#[test]
fn concurrent_trips_never_exceed_the_cap() {
    loom::model(|| {
        // Two workers at 50 %: one may be out. Both trip at once.
        let clock = ManualClock::new();
        let set = SharedBreakerSet::with_clock(2, Config::default().failure_threshold(1), clock)
            .with_max_ejected_percent(50);
        let handles: Vec<_> = (0..2)
            .map(|worker| {
                let set = set.clone();
                thread::spawn(move || {
                    let permit = set.try_acquire(worker).expect("closed");
                    let recorded = permit.report(Verdict::Failure);
                    assert!(set.ejected() <= 1, "cap exceeded");
                    recorded.transition().expect("opened or held in")
                })
            })
            .collect();
        let got: Vec<_> = handles
            .into_iter()
            .map(|h| h.join().expect("no panic"))
            .collect();
        let capped = got
            .iter()
            .filter(|t| t.reason == Reason::EjectionCapped)
            .count();
        assert_eq!(capped, 1, "{got:?}");
        assert_eq!(set.ejected(), 1);
        let open = (0..2)
            .filter(|w| matches!(set.state(*w), State::Open { .. }))
            .count();
        assert_eq!(open, 1);
    });
}

#[test]
fn a_close_and_a_trip_race_within_the_cap() {
    loom::model(|| {
        // Worker 0 is HalfOpen (ejected, the cap of one is full); its probe succeeds
        // while worker 1 trips. Worker 1 is ejected if and only if its trip came after
        // the close; the cap holds either way.
        let clock = ManualClock::new();
        let config = Config::default().failure_threshold(1).success_threshold(1);
        let set =
            SharedBreakerSet::with_clock(2, config, clock.clone()).with_max_ejected_percent(50);
        let _ = set.try_acquire(0).expect("closed").report(Verdict::Failure);
        clock.advance(Duration::from_secs(30));
        let probe = set.try_acquire(0).expect("probe");
        let s2 = set.clone();
        let tripper = thread::spawn(move || {
            let permit = s2.try_acquire(1).expect("closed");
            permit
                .report(Verdict::Failure)
                .transition()
                .expect("a transition")
        });
        let closed = probe.report(Verdict::Success).transition().expect("closes");
        assert_eq!(closed.to, State::Closed);
        let t = tripper.join().expect("no panic");
        assert!(set.ejected() <= 1);
        match t.reason {
            Reason::EjectionCapped => assert_eq!(set.ejected(), 0),
            _ => assert!(matches!(set.state(1), State::Open { .. }) && set.ejected() == 1),
        }
        assert_eq!(set.in_flight(0) + set.in_flight(1), 0);
    });
}

#[test]
fn set_in_flight_counts_return_to_zero() {
    loom::model(|| {
        let set = SharedBreakerSet::with_clock(2, Config::default(), ManualClock::new());
        let handles: Vec<_> = (0..2)
            .map(|i| {
                let set = set.clone();
                thread::spawn(move || {
                    let permit = set.pick(Pick::LeastInFlight).expect("closed");
                    if i == 0 {
                        drop(permit);
                    } else {
                        let _ = permit.report(Verdict::Success);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("no panic");
        }
        assert_eq!(set.in_flight(0) + set.in_flight(1), 0);
    });
}
