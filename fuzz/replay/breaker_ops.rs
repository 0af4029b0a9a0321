//! Replays a list of breaker operations against the sans-io `CircuitBreaker`, a
//! `SharedBreaker` and a one-worker `SharedBreakerSet` (whose cap always lets its one
//! worker out) on a `ManualClock`, under three configurations, and panics on any
//! broken invariant of SPEC section 3 or any disagreement between them. Shared by
//! the `breaker_ops` fuzz target and `cargo test` (tests/fuzz_breaker_ops.rs).

use std::time::Duration;

use arbitrary::Arbitrary;
use sluice::Verdict;
use sluice::breaker::{
    CircuitBreaker, Config, ManualClock, OwnedSharedPermit, Permit, Pick, Recorded, SetPermit,
    SharedBreaker, SharedBreakerSet, State, Transition, Window,
};

/// A verdict, as the input spells it.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub(crate) enum V {
    Success,
    Failure,
    Abandoned,
}

/// One operation. Time only moves forward, by what the input says.
#[derive(Arbitrary, Debug, Clone)]
pub(crate) enum Op {
    Acquire,
    Record { pick: u8, verdict: V },
    Advance { millis: u16 },
    HandleTimeout,
    ForceOpen,
    Disable,
    Reset,
}

fn configs() -> [Config; 3] {
    let s = Duration::from_secs;
    [
        Config::default().failure_threshold(3).open_duration(s(5)),
        Config::default()
            .failure_threshold(2)
            .success_threshold(1)
            .open_duration(s(2))
            .backoff(2, s(20))
            .jitter(Duration::from_millis(1500), 7)
            .failure_rate(0.5, Window::Calls(6), 4),
        Config::default()
            .failure_threshold(4)
            .success_threshold(3)
            .half_open_max_probes(2)
            .open_duration(s(1))
            .failure_rate(0.75, Window::Time(s(8)), 3),
    ]
}

/// Runs `ops` under every configuration.
pub(crate) fn replay(ops: &[Op]) {
    for config in configs() {
        run(config, ops);
    }
}

/// What a caller can see of the sans-io breaker.
fn seen(b: &CircuitBreaker, now: Duration) -> (State, u32, u32, u32) {
    (
        b.state(now),
        b.generation(),
        b.consecutive_failures(),
        b.probes_in_flight(),
    )
}

fn check_transition(
    t: &Transition,
    before: (State, u32, u32, u32),
    b: &CircuitBreaker,
    now: Duration,
) {
    assert_eq!(
        t.generation,
        before.1.wrapping_add(1),
        "a transition is one generation"
    );
    assert_eq!(t.generation, b.generation());
    assert_eq!(t.at, now);
    assert_ne!(t.from, t.to, "a transition changes the state");
    match t.to {
        State::Open { until } => assert!(until >= now, "open until the past"),
        to => assert_eq!(to, b.state(now)),
    }
}

fn run(config: Config, ops: &[Op]) {
    let mut b = CircuitBreaker::try_new(config).expect("valid config");
    let clock = ManualClock::new();
    let shared = SharedBreaker::with_clock(config, clock.clone());
    let set = SharedBreakerSet::with_clock(1, config, clock.clone());
    let max_probes = config_probes(&config);
    let mut permits: Vec<(Permit, OwnedSharedPermit, SetPermit)> = Vec::new();
    let mut now = Duration::ZERO;
    for op in ops {
        let before = seen(&b, now);
        match *op {
            Op::Acquire => {
                let got = b.try_acquire(now);
                let other = shared.try_acquire_owned();
                let in_set = set.pick(Pick::LeastInFlight);
                match (got, other, in_set) {
                    (Ok(p), Ok(sp), Ok(setp)) => {
                        assert_eq!(
                            (p.generation(), p.is_probe(), p.transition()),
                            (sp.generation(), sp.is_probe(), sp.transition())
                        );
                        assert_eq!(
                            (p.generation(), p.is_probe(), p.transition()),
                            (setp.generation(), setp.is_probe(), setp.transition())
                        );
                        if let State::Open { until } = before.0 {
                            panic!("admitted at {now:?}, open until {until:?}");
                        }
                        assert!(
                            !matches!(before.0, State::ForcedOpen),
                            "forced open admitted"
                        );
                        match p.transition() {
                            Some(t) => check_transition(&t, before, &b, now),
                            None => assert_eq!(b.generation(), before.1),
                        }
                        assert_eq!(p.generation(), b.generation());
                        permits.push((p, sp, setp));
                    }
                    (Err(e), Err(se), Err(sete)) => {
                        assert_eq!(e, se);
                        assert_eq!(e, sete, "set");
                        match before.0 {
                            State::Open { until } => assert_eq!(e.retry_after, Some(until - now)),
                            State::Closed | State::Disabled => panic!("{:?} rejected", before.0),
                            _ => assert_eq!(e.retry_after, None),
                        }
                        assert_eq!(
                            seen(&b, now).1,
                            before.1,
                            "a rejection changed the generation"
                        );
                    }
                    (got, other, in_set) => {
                        panic!("core {got:?}, shared {other:?}, set {in_set:?}")
                    }
                }
            }
            Op::Record { pick, verdict } => {
                if permits.is_empty() {
                    continue;
                }
                let (p, sp, setp) = permits.remove(usize::from(pick) % permits.len());
                let verdict = match verdict {
                    V::Success => Verdict::Success,
                    V::Failure => Verdict::Failure,
                    V::Abandoned => Verdict::Abandoned,
                };
                let stale = p.generation() != b.generation();
                let got = b.record(p, verdict, now);
                assert_eq!(sp.report(verdict), got, "shared disagrees");
                if verdict == Verdict::Abandoned {
                    drop(setp);
                } else {
                    assert_eq!(setp.report(verdict), got, "set disagrees");
                }
                let after = seen(&b, now);
                match got {
                    Recorded::Stale => {
                        assert!(stale);
                        assert_eq!(after, before, "a stale record changed the breaker");
                    }
                    Recorded::Counted(t) => {
                        assert!(!stale);
                        if verdict == Verdict::Abandoned {
                            assert_eq!(t, None, "abandoned made a transition");
                            assert_eq!((after.0, after.1, after.2), (before.0, before.1, before.2));
                        }
                        match t {
                            Some(t) => check_transition(&t, before, &b, now),
                            None => assert_eq!(after.1, before.1, "silent generation change"),
                        }
                        if before.0 == State::Closed && t.is_none() {
                            let want = match verdict {
                                Verdict::Success => 0,
                                Verdict::Failure => before.2 + 1,
                                _ => before.2,
                            };
                            assert_eq!(after.2, want, "consecutive failures");
                        }
                    }
                    _ => unreachable!("no other outcome"),
                }
            }
            Op::Advance { millis } => {
                let by = Duration::from_millis(u64::from(millis));
                now += by;
                clock.advance(by);
            }
            Op::HandleTimeout => {
                let t = b.handle_timeout(now);
                assert_eq!(shared.handle_timeout(), t);
                assert_eq!(set.handle_timeout(0), Ok(t));
                if let Some(t) = t {
                    check_transition(&t, before, &b, now);
                }
            }
            Op::ForceOpen | Op::Disable | Op::Reset => {
                let (t, st, sett) = match op {
                    Op::ForceOpen => (b.force_open(now), shared.force_open(), set.force_open(0)),
                    Op::Disable => (b.disable(now), shared.disable(), set.disable(0)),
                    _ => (b.reset(now), shared.reset(), set.reset(0)),
                };
                assert_eq!(t, st, "shared disagrees");
                assert_eq!(Ok(t), sett, "set disagrees");
                if let Some(t) = t {
                    check_transition(&t, before, &b, now);
                }
            }
        }
        assert!(b.probes_in_flight() <= max_probes, "probes above the limit");
        assert_eq!(shared.state(), b.state(now), "shared state");
        assert_eq!(set.state(0), b.state(now), "set state");
        assert_eq!(set.in_flight(0), permits.len(), "set in flight");
        let ejected = matches!(b.state(now), State::Open { .. } | State::HalfOpen);
        assert_eq!(set.ejected(), usize::from(ejected), "set ejected");
        if let Some(until) = b.poll_timeout() {
            assert!(matches!(b.state(now), State::Open { .. } | State::HalfOpen));
            assert_eq!(b.state(until), State::HalfOpen);
        }
    }
}

fn config_probes(config: &Config) -> u32 {
    // The config hides its fields; probe the limit through a fresh breaker.
    let mut b = CircuitBreaker::new(*config);
    let mut now = Duration::ZERO;
    while b.state(now) == State::Closed {
        let p = b.try_acquire(now).expect("closed");
        let _ = b.record(p, Verdict::Failure, now);
    }
    now = b.poll_timeout().expect("open");
    let mut n = 0;
    let mut held = Vec::new();
    while let Ok(p) = b.try_acquire(now) {
        held.push(p);
        n += 1;
    }
    n
}
