//! Named regressions: each one is a way a breaker has gone wrong somewhere, written so
//! that it fails if ours does the same.

use std::time::Duration;

use futures_util::{StreamExt, stream};
use sluice::breaker::{
    BreakerSet, CircuitBreaker, Classified, Config, ManualClock, Reason, Recorded, SharedBreaker,
    State, StatusPolicy,
};
use sluice::{TrackedStream, Verdict};

const T0: Duration = Duration::ZERO;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Drives `breaker` from Closed to HalfOpen (threshold-many failures, then the open
/// duration) and returns the time at which it is HalfOpen.
fn trip_and_wait(breaker: &mut CircuitBreaker, now: Duration) -> Duration {
    while breaker.state(now) == State::Closed {
        let permit = breaker.try_acquire(now).expect("closed admits");
        let _ = breaker.record(permit, Verdict::Failure, now);
    }
    let State::Open { until } = breaker.state(now) else {
        panic!("not open: {:?}", breaker.state(now));
    };
    assert_eq!(breaker.state(until), State::HalfOpen);
    until
}

#[test]
fn abandoned_half_open_probe_frees_its_slot() {
    // The bug: a probe whose client went away is never recorded as anything, its slot
    // stays taken, and the breaker is stuck HalfOpen, rejecting forever.
    let mut breaker = CircuitBreaker::new(Config::default());
    let now = trip_and_wait(&mut breaker, T0);
    let probe = breaker.try_acquire(now).expect("the first probe");
    assert!(probe.is_probe());
    assert_eq!(
        breaker.try_acquire(now),
        Err(sluice::breaker::Rejected { retry_after: None })
    );
    assert_eq!(
        breaker.record(probe, Verdict::Abandoned, now),
        Recorded::Counted(None)
    );
    assert_eq!(
        breaker.state(now),
        State::HalfOpen,
        "abandoned decides nothing"
    );
    let probe = breaker.try_acquire(now).expect("the slot is free again");
    assert_eq!(
        breaker.record(probe, Verdict::Success, now),
        Recorded::Counted(None)
    );

    // The shared handle: a probe permit dropped unrecorded (or carried by a stream the
    // client dropped) frees its slot too.
    let clock = ManualClock::new();
    let shared = SharedBreaker::with_clock(Config::default().failure_threshold(1), clock.clone());
    let _ = shared
        .try_acquire()
        .expect("closed")
        .report(Verdict::Failure);
    clock.advance(secs(30));
    for _ in 0..3 {
        let probe = shared.try_acquire().expect("the slot was freed");
        assert!(shared.try_acquire().is_err(), "one probe at a time");
        let upstream = stream::iter([Ok::<_, ()>(&b"data: {}\n\n"[..])]);
        let mut tracked = TrackedStream::new(upstream, probe);
        futures_executor::block_on(tracked.next());
        drop(tracked); // the client left before the end: Abandoned
    }
    assert_eq!(shared.state(), State::HalfOpen);

    // Also when the thread holding the permit panics.
    let probe = shared.try_acquire_owned().expect("a probe");
    let result = std::thread::spawn(move || {
        let _probe = probe;
        panic!("worker thread dies holding a probe");
    })
    .join();
    assert!(result.is_err());
    let probe = shared.try_acquire().expect("freed while unwinding");
    assert_eq!(probe.report(Verdict::Success), Recorded::Counted(None));
    let probe = shared.try_acquire().expect("second probe");
    let closed = probe.report(Verdict::Success).transition().expect("closes");
    assert_eq!(
        (closed.to, closed.reason),
        (State::Closed, Reason::ProbesSucceeded)
    );
}

#[test]
fn late_result_from_a_previous_generation_does_not_close_the_breaker() {
    // The bug: a slow call admitted while Closed finishes after the breaker opened and
    // went HalfOpen; its success is taken as a probe's and closes the breaker.
    let config = Config::default()
        .success_threshold(1)
        .half_open_max_probes(2);
    let mut breaker = CircuitBreaker::new(config);
    let slow_call = breaker.try_acquire(T0).expect("closed");
    let now = trip_and_wait(&mut breaker, T0);
    breaker.handle_timeout(now).expect("open to half-open");
    assert_eq!(
        breaker.record(slow_call, Verdict::Success, now),
        Recorded::Stale
    );
    assert_eq!(breaker.state(now), State::HalfOpen);

    // The same with a probe of an earlier HalfOpen generation: it outlives a failed
    // probe, a second opening and a new HalfOpen.
    let old_probe = breaker.try_acquire(now).expect("probe 1");
    let failing = breaker.try_acquire(now).expect("probe 2");
    let t = breaker
        .record(failing, Verdict::Failure, now)
        .transition()
        .expect("reopens");
    let State::Open { until } = t.to else {
        panic!("{t:?}")
    };
    let probe = breaker.try_acquire(until).expect("new half-open");
    assert_eq!(
        breaker.record(old_probe, Verdict::Success, until),
        Recorded::Stale
    );
    assert_eq!(
        breaker.state(until),
        State::HalfOpen,
        "a stale success closed it"
    );
    assert_eq!(
        breaker.probes_in_flight(),
        1,
        "a stale record freed a current slot"
    );
    let t = breaker
        .record(probe, Verdict::Success, until)
        .transition()
        .expect("closes");
    assert_eq!(t.to, State::Closed);

    // And through the shared handle.
    let clock = ManualClock::new();
    let shared = SharedBreaker::with_clock(config.failure_threshold(1), clock.clone());
    let slow_call = shared.try_acquire_owned().expect("closed");
    let _ = shared
        .try_acquire()
        .expect("closed")
        .report(Verdict::Failure);
    clock.advance(secs(30));
    assert!(shared.try_acquire().expect("probe").is_probe());
    assert_eq!(slow_call.report(Verdict::Success), Recorded::Stale);
    assert_eq!(shared.state(), State::HalfOpen);
}

#[test]
fn client_errors_do_not_eject_every_worker() {
    // The bug: a client sending bad requests (4xx) to every worker in turn makes every
    // breaker open, until no worker is left.
    let policy = StatusPolicy::default();
    let mut set = BreakerSet::new(3, Config::default().failure_threshold(2)).expect("valid");
    for round in 0..10 {
        for worker in 0..3 {
            let now = secs(round);
            let permit = set.try_acquire(worker, now).expect("admitted");
            let Classified::Settle(verdict) = policy.classify(400 + round as u16 % 30) else {
                panic!("4xx is settled at once");
            };
            assert_eq!(verdict, Verdict::Abandoned);
            assert_eq!(
                set.record(permit, verdict, now).expect("known worker"),
                Recorded::Counted(None)
            );
            let permit = set.try_acquire(worker, now).expect("admitted");
            let Classified::Settle(verdict) = policy.classify(429) else {
                panic!()
            };
            set.record(permit, verdict, now).expect("known worker");
        }
    }
    assert_eq!(set.admitted(secs(10)).count(), 3);

    // Even a policy that does count 4xx (or a real outage) leaves one worker admitted,
    // and the set says why the last one was kept.
    let mut set =
        BreakerSet::with_max_ejected_percent(3, Config::default().failure_threshold(2), 100)
            .expect("valid");
    let counting = policy.client_errors(Verdict::Failure);
    let mut capped = Vec::new();
    for _ in 0..4 {
        for worker in 0..3 {
            let Ok(permit) = set.try_acquire(worker, T0) else {
                continue;
            };
            let Classified::Settle(verdict) = counting.classify(400) else {
                panic!()
            };
            if let Some(t) = set.record(permit, verdict, T0).expect("known").transition() {
                if t.reason == Reason::EjectionCapped {
                    capped.push(worker);
                }
            }
        }
    }
    assert_eq!(set.ejected(), 2);
    assert_eq!(set.admitted(T0).collect::<Vec<_>>(), [2]);
    assert!(
        !capped.is_empty() && capped.iter().all(|w| *w == 2),
        "{capped:?}"
    );
    assert!(
        set.try_acquire(2, T0).is_ok(),
        "the last worker still admits"
    );

    // A 50 % cap on 4 workers ejects two at most.
    let mut set =
        BreakerSet::with_max_ejected_percent(4, Config::default().failure_threshold(1), 50)
            .expect("valid");
    for worker in 0..4 {
        let permit = set.try_acquire(worker, T0).expect("admitted");
        set.record(permit, Verdict::Failure, T0).expect("known");
    }
    assert_eq!((set.max_ejected(), set.ejected()), (2, 2));
}

#[test]
fn a_recorded_400_does_not_reset_the_failure_count() {
    // The bug: a client error recorded as a success resets the run of failures, so a
    // worker that fails every real request never trips while clients send bad ones.
    let policy = StatusPolicy::default();
    let mut breaker = CircuitBreaker::new(Config::default());
    for _ in 0..4 {
        let permit = breaker.try_acquire(T0).expect("closed");
        let Classified::Settle(verdict) = policy.classify(502) else {
            panic!()
        };
        let _ = breaker.record(permit, verdict, T0);
    }
    assert_eq!(breaker.consecutive_failures(), 4);
    let permit = breaker.try_acquire(T0).expect("closed");
    let Classified::Settle(verdict) = policy.classify(400) else {
        panic!()
    };
    assert_eq!(breaker.record(permit, verdict, T0), Recorded::Counted(None));
    assert_eq!(breaker.consecutive_failures(), 4, "the 400 moved the count");
    let permit = breaker.try_acquire(T0).expect("closed");
    let t = breaker
        .record(permit, policy.send_failed(), T0)
        .transition()
        .expect("trips");
    assert_eq!(t.reason, Reason::ConsecutiveFailures);

    // The same on the shared handle's lock-free path.
    let shared = SharedBreaker::with_clock(Config::default(), ManualClock::new());
    for status in [500, 503, 504, 400, 404, 429] {
        let Classified::Settle(verdict) = policy.classify(status) else {
            panic!()
        };
        let _ = shared.try_acquire().expect("closed").report(verdict);
    }
    assert_eq!(shared.snapshot().consecutive_failures(), 3);
    assert_eq!(shared.state(), State::Closed);
    let _ = shared
        .try_acquire()
        .expect("closed")
        .report(Verdict::Failure);
    let t = shared
        .try_acquire()
        .expect("closed")
        .report(Verdict::Failure)
        .transition();
    assert_eq!(t.map(|t| t.reason), Some(Reason::ConsecutiveFailures));
}

#[test]
fn backoff_grows_per_opening_and_a_close_resets_it() {
    let config = Config::default()
        .failure_threshold(1)
        .success_threshold(1)
        .open_duration(secs(10))
        .backoff(3, secs(60));
    let mut breaker = CircuitBreaker::new(config);
    let mut now = T0;
    let permit = breaker.try_acquire(now).expect("closed");
    let mut t = breaker
        .record(permit, Verdict::Failure, now)
        .transition()
        .expect("opens");
    let mut durations = Vec::new();
    for _ in 0..4 {
        let State::Open { until } = t.to else {
            panic!("{t:?}")
        };
        durations.push(until - now);
        now = until;
        let probe = breaker.try_acquire(now).expect("probe");
        t = breaker
            .record(probe, Verdict::Failure, now)
            .transition()
            .expect("reopens");
    }
    assert_eq!(durations, [secs(10), secs(30), secs(60), secs(60)]);
    let State::Open { until } = t.to else {
        panic!()
    };
    let probe = breaker.try_acquire(until).expect("probe");
    assert_eq!(
        breaker
            .record(probe, Verdict::Success, until)
            .transition()
            .map(|t| t.to),
        Some(State::Closed)
    );
    let permit = breaker.try_acquire(until).expect("closed");
    let t = breaker
        .record(permit, Verdict::Failure, until)
        .transition()
        .expect("opens");
    assert_eq!(
        t.to,
        State::Open {
            until: until + secs(10)
        },
        "backoff not reset by the close"
    );
}

#[test]
fn jitter_is_deterministic_bounded_and_seeded() {
    let open = |seed: u64| {
        let config = Config::default().failure_threshold(1).jitter(secs(5), seed);
        let mut breaker = CircuitBreaker::new(config);
        let permit = breaker.try_acquire(T0).expect("closed");
        match breaker
            .record(permit, Verdict::Failure, T0)
            .transition()
            .expect("opens")
            .to
        {
            State::Open { until } => until,
            other => panic!("{other:?}"),
        }
    };
    let untils: Vec<_> = (0..16).map(open).collect();
    assert_eq!(
        untils,
        (0..16).map(open).collect::<Vec<_>>(),
        "same seed, same duration"
    );
    assert!(
        untils.iter().all(|u| (secs(30)..=secs(35)).contains(u)),
        "{untils:?}"
    );
    let mut distinct = untils.clone();
    distinct.sort();
    distinct.dedup();
    assert!(
        distinct.len() > 12,
        "seeds barely change the jitter: {untils:?}"
    );
}

#[test]
fn time_window_rate_rule_trips_and_forgets() {
    let config = Config::default().failure_threshold(100).failure_rate(
        0.5,
        sluice::breaker::Window::Time(secs(16)),
        4,
    );
    let mut breaker = CircuitBreaker::try_new(config).expect("valid");
    let mut record = |at: u64, verdict| {
        let permit = breaker.try_acquire(secs(at)).expect("closed");
        breaker.record(permit, verdict, secs(at)).transition()
    };
    // Three failures, then they age out of the window.
    for at in 0..3 {
        assert_eq!(record(at, Verdict::Failure), None);
    }
    for at in 40..43 {
        assert_eq!(record(at, Verdict::Success), None);
    }
    // 1 failure of 4 in the window: below half.
    assert_eq!(record(43, Verdict::Failure), None);
    // 2 of 5, then 3 of 6: the rate is reached.
    assert_eq!(record(44, Verdict::Failure), None);
    let t = record(45, Verdict::Failure).expect("opens");
    assert_eq!(t.reason, Reason::FailureRate);
}

#[test]
fn invalid_configs_are_errors_not_panics() {
    let bad = Config::default().failure_threshold(0);
    assert!(CircuitBreaker::try_new(bad).is_err());
    assert!(SharedBreaker::try_new(bad).is_err());
    assert!(BreakerSet::new(2, bad).is_err());
    assert!(BreakerSet::new(0, Config::default()).is_err());
    assert!(BreakerSet::with_max_ejected_percent(2, Config::default(), 101).is_err());
    // `new` corrects instead: a zero threshold counts as one.
    let mut breaker = CircuitBreaker::new(bad);
    let permit = breaker.try_acquire(T0).expect("closed");
    assert!(
        breaker
            .record(permit, Verdict::Failure, T0)
            .transition()
            .is_some()
    );
    let mut set = BreakerSet::new(1, Config::default()).expect("valid");
    assert!(matches!(
        set.try_acquire(7, T0),
        Err(sluice::breaker::SetError::UnknownWorker {
            worker: 7,
            workers: 1
        })
    ));
}

#[test]
fn a_jitter_beyond_u64_nanoseconds_neither_panics_nor_wedges() {
    // Review finding: `max * draw` overflowed a u128 for max >= 2^64 ns, panicking
    // (also inside a permit's Drop) and leaving the counts half-updated.
    let config = Config::default()
        .failure_threshold(1)
        .jitter(Duration::MAX, 7);
    let mut breaker = CircuitBreaker::new(config);
    let permit = breaker.try_acquire(T0).expect("closed admits");
    let Recorded::Counted(Some(t)) = breaker.record(permit, Verdict::Failure, T0) else {
        panic!("one failure at threshold 1 opens");
    };
    assert_eq!(t.to, breaker.state(T0));
    assert!(matches!(t.to, State::Open { until } if until > T0));

    let shared = SharedBreaker::with_clock(config, ManualClock::new());
    drop(shared.try_acquire().expect("closed admits")); // Abandoned: counts nothing
    let permit = shared.try_acquire().expect("still closed");
    assert!(matches!(
        permit.report(Verdict::Failure),
        Recorded::Counted(Some(_))
    ));
    assert!(matches!(shared.state(), State::Open { .. }));
}

#[test]
fn an_open_until_that_saturated_stays_open() {
    // Review finding: at `now` near Duration::MAX, `until` saturates to MAX and the
    // breaker used to be HalfOpen at once, so every failed probe flipped it back.
    let near_end = Duration::MAX - secs(1);
    let mut breaker = CircuitBreaker::new(Config::default().failure_threshold(1));
    let permit = breaker.try_acquire(near_end).expect("closed admits");
    let _ = breaker.record(permit, Verdict::Failure, near_end);
    assert_eq!(
        breaker.state(Duration::MAX),
        State::Open {
            until: Duration::MAX
        }
    );
    assert!(breaker.try_acquire(Duration::MAX).is_err());
    assert_eq!(breaker.handle_timeout(Duration::MAX), None);
}

#[test]
fn backoff_from_a_zero_open_duration_stays_zero() {
    // A zero base stays zero however many openings back off from it. (Review finding:
    // the loop used to run once per past opening on every opening, quadratic time
    // under the shared breaker's lock; that cost is measured, not asserted, here.)
    let config = Config::default()
        .failure_threshold(1)
        .open_duration(Duration::ZERO)
        .backoff(2, secs(60));
    let mut breaker = CircuitBreaker::new(config);
    let mut now = T0;
    for _ in 0..1_000 {
        let permit = breaker.try_acquire(now).expect("admits at once");
        let _ = breaker.record(permit, Verdict::Failure, now);
        assert_eq!(breaker.state(now), State::HalfOpen, "open for zero time");
        now += Duration::from_nanos(1);
    }
}
