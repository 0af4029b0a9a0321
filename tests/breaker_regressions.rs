//! Named regressions: each one is a way a breaker has gone wrong somewhere, written so
//! that it fails if ours does the same.

use std::time::Duration;

use futures_util::{StreamExt, stream};
use sluice::breaker::{
    CircuitBreaker, Classified, Clock, Config, ConfigError, ManualClock, Pick, Reason, Recorded,
    SetPermit, SharedBreaker, SharedBreakerSet, State, StatusPolicy, Window, WindowCounts,
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

/// A set of `n` workers on a manual clock, at `percent`.
fn set(n: usize, config: Config, percent: u8) -> (SharedBreakerSet, ManualClock) {
    let clock = ManualClock::new();
    let set = SharedBreakerSet::try_with_clock(n, config, clock.clone())
        .expect("valid")
        .with_max_ejected_percent(percent);
    (set, clock)
}

/// Records `verdict` on a fresh permit of `worker`; the transition, if any.
fn fail_once(
    set: &SharedBreakerSet,
    worker: usize,
    verdict: Verdict,
) -> Option<sluice::breaker::Transition> {
    set.try_acquire(worker)
        .expect("admitted")
        .report(verdict)
        .transition()
}

#[test]
fn client_errors_do_not_eject_every_worker() {
    // The bug: a client sending bad requests (4xx) to every worker in turn makes every
    // breaker open, until no worker is left.
    let policy = StatusPolicy::default();
    let (set, clock) = set(3, Config::default().failure_threshold(2), 100);
    for round in 0..10u16 {
        for _ in 0..3 {
            let permit = set.pick(Pick::RoundRobin).expect("admitted");
            let Classified::Settle(verdict) = policy.classify(400 + round % 30) else {
                panic!("4xx is settled at once");
            };
            assert_eq!(verdict, Verdict::Abandoned);
            assert_eq!(permit.report(verdict), Recorded::Counted(None));
            let permit = set.pick(Pick::LeastInFlight).expect("admitted");
            let Classified::Settle(verdict) = policy.classify(429) else {
                panic!()
            };
            assert_eq!(permit.report(verdict), Recorded::Counted(None));
        }
        clock.advance(secs(1));
    }
    assert_eq!(set.ejected(), 0);
    assert!((0..3).all(|w| set.state(w) == State::Closed));
}

#[test]
fn a_4xx_storm_ejects_nobody() {
    // Named regression: a storm of client errors (Abandoned verdicts, as the default
    // policy classifies them) on every worker, some dropped unrecorded, ejects no one,
    // even at a 100 % cap and a threshold of one.
    let policy = StatusPolicy::default();
    let (set, _) = set(4, Config::default().failure_threshold(1), 100);
    for i in 0..400u16 {
        let permit = set.pick(Pick::RoundRobin).expect("nobody ejected");
        let Classified::Settle(verdict) = policy.classify(400 + i % 100) else {
            panic!("4xx is settled at once");
        };
        if i % 3 == 0 {
            drop(permit);
        } else {
            assert_eq!(permit.report(verdict), Recorded::Counted(None));
        }
    }
    assert_eq!(set.ejected(), 0);
    assert!((0..4).all(|w| set.state(w) == State::Closed));
    // The same storm counted as failures (a policy that blames the worker) does eject.
    let permit = set.try_acquire(2).expect("closed");
    let t = permit.report(Verdict::Failure).transition().expect("opens");
    assert!(matches!(t.to, State::Open { .. }));
    assert_eq!(set.ejected(), 1);
}

#[test]
fn five_workers_at_ten_percent_eject_exactly_one() {
    // max(1, floor(5 * 10 / 100)) = 1: the first worker to trip is ejected; every
    // other trip is held in and reported, however many failures.
    let (set, clock) = set(5, Config::default().failure_threshold(2), 10);
    assert_eq!(set.max_ejected(), 1);
    let mut capped = 0;
    for _ in 0..6 {
        for worker in 0..5 {
            let Ok(permit) = set.try_acquire(worker) else {
                continue;
            };
            if let Some(t) = permit.report(Verdict::Failure).transition() {
                if t.reason == Reason::EjectionCapped {
                    assert_eq!((t.from, t.to), (State::Closed, State::Closed));
                    capped += 1;
                }
            }
        }
    }
    assert_eq!(set.ejected(), 1);
    assert!(matches!(set.state(0), State::Open { .. }));
    assert!((1..5).all(|w| set.state(w) == State::Closed));
    assert!(capped >= 4 * 5, "each held-in trip is reported ({capped})");
    // Worker 0 comes back (probe succeeds twice): the slot is free for the next trip.
    clock.advance(secs(30));
    for _ in 0..2 {
        let probe = set.try_acquire(0).expect("probe");
        let _ = probe.report(Verdict::Success);
    }
    assert_eq!((set.state(0), set.ejected()), (State::Closed, 0));
    let t = fail_once(&set, 3, Verdict::Failure).expect("trips now");
    assert!(matches!(t.to, State::Open { .. }), "{t:?}");
    assert_eq!(set.ejected(), 1);
    // An operator may still force any worker open: not capped, not counted.
    assert!(set.force_open(1).is_some());
    assert_eq!((set.state(1), set.ejected()), (State::ForcedOpen, 1));
}

#[test]
fn a_one_worker_pool_ejects_its_worker_and_pick_says_when_to_retry() {
    // At any percent, one worker may be ejected: a lone dead worker fails fast (the
    // gateway answers 503 with Retry-After) instead of taking every request.
    for percent in [0, 10, 100] {
        let (set, clock) = set(1, Config::default().failure_threshold(1), percent);
        let t = fail_once(&set, 0, Verdict::Failure).expect("opens");
        assert_eq!(t.reason, Reason::ConsecutiveFailures);
        assert_eq!(set.ejected(), 1);
        clock.advance(secs(10));
        for how in [Pick::RoundRobin, Pick::LeastInFlight] {
            let rejected = set.pick(how).expect_err("no worker admitted");
            assert_eq!(rejected.retry_after, Some(secs(20)), "{percent}% {how:?}");
        }
    }
    // The soonest retry_after of several ejected workers.
    let (set, clock) = set(3, Config::default().failure_threshold(1), 100);
    for worker in 0..3 {
        let _ = fail_once(&set, worker, Verdict::Failure);
        clock.advance(secs(5));
    }
    assert_eq!(
        set.pick(Pick::RoundRobin).expect_err("all out").retry_after,
        Some(secs(15))
    );
    // Zero workers: nothing admitted, nothing to wait for; an unknown index likewise.
    let empty = SharedBreakerSet::new(0, Config::default());
    assert!(empty.is_empty());
    assert_eq!(
        empty.pick(Pick::RoundRobin).expect_err("empty").retry_after,
        None
    );
    // An unknown index is a worker forced open for good: no override changes it.
    assert_eq!(set.try_acquire(9).expect_err("unknown").retry_after, None);
    assert_eq!(set.state(9), State::ForcedOpen);
    assert_eq!(set.reset(9), None);
    assert_eq!(set.disable(9), None);
    assert_eq!(set.handle_timeout(9), None);
    assert_eq!(set.state(9), State::ForcedOpen);
    assert_eq!(set.in_flight(9), 0);
    assert!(set.snapshot(9).is_none());
}

#[test]
fn in_flight_counts_return_to_zero() {
    let (set, clock) = set(3, Config::default().failure_threshold(3), 100);
    let mut held: Vec<SetPermit> = Vec::new();
    for _ in 0..9 {
        held.push(set.pick(Pick::LeastInFlight).expect("admitted"));
    }
    assert_eq!(
        [set.in_flight(0), set.in_flight(1), set.in_flight(2)],
        [3, 3, 3]
    );
    // LeastInFlight goes where fewest are in flight.
    let w1: Vec<SetPermit> = held.drain(..).filter(|p| p.worker() != 1).collect();
    assert_eq!(set.in_flight(1), 0);
    let next = set.pick(Pick::LeastInFlight).expect("admitted");
    assert_eq!(next.worker(), 1);
    // Recorded, dropped, stale, in a breaker that opened meanwhile: all come back.
    let mut verdicts = [Verdict::Success, Verdict::Failure, Verdict::Abandoned]
        .into_iter()
        .cycle();
    for (i, p) in w1.into_iter().enumerate() {
        if i % 2 == 0 {
            drop(p);
        } else {
            let _ = p.report(verdicts.next().expect("cycle"));
        }
    }
    drop(next);
    let a = set.try_acquire(2).expect("closed");
    while set.state(2) == State::Closed {
        let _ = fail_once(&set, 2, Verdict::Failure);
    }
    assert!(matches!(set.state(2), State::Open { .. }));
    assert_eq!(a.report(Verdict::Success), Recorded::Stale);
    clock.advance(secs(30));
    let probe = set.try_acquire(2).expect("probe");
    assert_eq!(set.in_flight(2), 1);
    drop(probe);
    assert_eq!(
        [set.in_flight(0), set.in_flight(1), set.in_flight(2)],
        [0, 0, 0]
    );
    assert_eq!(set.snapshot(2).expect("known").probes_in_flight(), 0);
}

/// A clock that panics when read while armed.
#[derive(Clone)]
struct PanickyClock {
    inner: ManualClock,
    armed: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Clock for PanickyClock {
    fn now(&self) -> Duration {
        if self.armed.load(std::sync::atomic::Ordering::SeqCst) {
            panic!("clock read while armed");
        }
        self.inner.now()
    }
}

#[test]
fn a_panicking_clock_is_not_read_by_a_permit_dropped_while_unwinding() {
    // The bug: a permit dropped while the thread unwinds reads a user clock from
    // `Drop`; if that clock panics too, the process aborts. Our permits never read
    // the clock when abandoned, nor when recording while unwinding, and still free
    // their slots.
    let clock = PanickyClock {
        inner: ManualClock::new(),
        armed: Default::default(),
    };
    let config = Config::default().failure_threshold(1).success_threshold(2);
    let shared = SharedBreaker::with_clock(config, clock.clone());
    let set = SharedBreakerSet::with_clock(2, config, clock.clone()).with_max_ejected_percent(100);
    let _ = shared
        .try_acquire()
        .expect("closed")
        .report(Verdict::Failure);
    let _ = fail_once(&set, 0, Verdict::Failure);
    clock.inner.advance(secs(30));
    let probe = shared.try_acquire_owned().expect("probe");
    let set_probe = set.try_acquire(0).expect("probe");
    let failing = set.try_acquire(1).expect("closed");
    clock.armed.store(true, std::sync::atomic::Ordering::SeqCst);
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let _held = (probe, set_probe);
        // A stream's recorder reporting a failure while unwinding (its inner stream
        // panicked): counted at the breaker's latest time, without the clock.
        struct OnUnwind(Option<SetPermit>);
        impl Drop for OnUnwind {
            fn drop(&mut self) {
                if let Some(p) = self.0.take() {
                    sluice::Recorder::record(p, sluice::Outcome::from(Verdict::Failure));
                }
            }
        }
        let _record = OnUnwind(Some(failing));
        panic!("the stream panicked");
    }));
    assert!(caught.is_err(), "the panic came through");
    clock
        .armed
        .store(false, std::sync::atomic::Ordering::SeqCst);
    // The probe slots were freed; worker 1's failure was counted (it opened), at the
    // latest time its breaker had seen (zero, so it is Open until 30 s).
    assert_eq!(shared.snapshot().probes_in_flight(), 0);
    assert_eq!(set.snapshot(0).expect("known").probes_in_flight(), 0);
    assert_eq!(set.in_flight(0) + set.in_flight(1), 0);
    assert!(shared.try_acquire().expect("probe slot free").is_probe());
    assert_eq!(
        set.snapshot(1).expect("known").poll_timeout(),
        Some(secs(30))
    );
    assert_eq!(set.ejected(), 2);
}

#[test]
fn the_rate_rule_counts_successes_without_the_core_and_loses_none() {
    // The lock-free success path of a rate rule: successes counted in the word are
    // all in the window when a failure comes, in order.
    let config = Config::default()
        .failure_threshold(100)
        .failure_rate(0.5, Window::Calls(10), 10);
    let shared = SharedBreaker::with_clock(config, ManualClock::new());
    let mut core = CircuitBreaker::new(config);
    let mut trace = Vec::new();
    for i in 0..40 {
        let verdict = if i % 7 < 3 && i > 20 {
            Verdict::Failure
        } else {
            Verdict::Success
        };
        let a = shared.try_acquire().map(|p| p.report(verdict));
        let b = core.try_acquire(T0).map(|p| core.record(p, verdict, T0));
        assert_eq!(a, b, "call {i}");
        trace.push(shared.snapshot().window_counts());
        assert_eq!(
            shared.snapshot().window_counts(),
            core.window_counts(),
            "call {i}"
        );
    }
    assert!(matches!(shared.state(), State::Open { .. }), "{trace:?}");
    // A time window: the handle counts successes without reading the clock, and the
    // core counts them at the handle's next reading (here each failure; a snapshot
    // counts them at the clock's time without keeping them). The reference is the
    // sans-io core fed them then. The minimum is out of reach, so every success
    // takes the lock-free path; the calls cross bucket and window ends.
    let clock = ManualClock::new();
    let config = Config::default().failure_rate(0.5, Window::Time(secs(16)), 1000);
    let shared = SharedBreaker::with_clock(config, clock.clone());
    let mut core = CircuitBreaker::new(config);
    let mut pending = 0;
    let successes = |core: &mut CircuitBreaker, count: u32, now: Duration| {
        for _ in 0..count {
            let permit = core.try_acquire(now).expect("closed");
            let _ = core.record(permit, Verdict::Success, now);
        }
    };
    for i in 0..64u64 {
        let now = Duration::from_millis(i * 700);
        clock.set(now);
        if i % 5 == 4 {
            successes(&mut core, pending, now);
            pending = 0;
            let a = shared.try_acquire().map(|p| p.report(Verdict::Failure));
            let b = core
                .try_acquire(now)
                .map(|p| core.record(p, Verdict::Failure, now));
            assert_eq!(a, b, "call {i}");
        } else {
            let a = shared.try_acquire().map(|p| p.report(Verdict::Success));
            assert_eq!(a, Ok(Recorded::Counted(None)), "call {i}");
            pending += 1;
        }
        let mut seen = core.clone();
        successes(&mut seen, pending, now);
        assert_eq!(
            shared.snapshot().window_counts(),
            seen.window_counts(),
            "call {i}"
        );
    }
    // Nothing was lost: 13 failures and 51 successes, the oldest of them aged out.
    let WindowCounts { calls, failures } = shared.snapshot().window_counts().expect("a rate rule");
    assert!(
        failures > 0 && calls > failures,
        "{calls} calls, {failures} failed"
    );
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
        .record(permit, policy.classify_send_failure(), T0)
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
    assert_eq!(
        SharedBreakerSet::try_new(2, bad).map(|s| s.len()),
        Err(ConfigError::ZeroFailureThreshold)
    );
    // `new` corrects instead: a zero threshold counts as one, on all three.
    let mut breaker = CircuitBreaker::new(bad);
    let permit = breaker.try_acquire(T0).expect("closed");
    assert!(
        breaker
            .record(permit, Verdict::Failure, T0)
            .transition()
            .is_some()
    );
    let set = SharedBreakerSet::new(2, bad).with_max_ejected_percent(250);
    assert_eq!(set.max_ejected(), 2, "a percent above 100 counts as 100");
    assert!(fail_once(&set, 1, Verdict::Failure).is_some());
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
