//! Replays a list of breaker operations against the sans-io `CircuitBreaker`, a
//! `SharedBreaker` and a one-worker `SharedBreakerSet` (whose cap always lets its one
//! worker out) on a `ManualClock`, under three configurations, and panics on any
//! broken invariant of SPEC section 3 or any disagreement between them. Shared by
//! the `breaker_ops` fuzz target and `cargo test` (tests/fuzz_breaker_ops.rs).
//!
//! The reference is the sequential history SPEC section 3 promises the shared handles
//! equal: under a time-window rate rule, a success the handle counts without its lock
//! (while no run of successes can fire the rule) is placed in the window at the next
//! operation that reads the clock, not at its own time. The reference core is fed
//! those successes then ([`Deferred`]); every other operation at its own time. (How
//! far that may drift from an exact window is checked in tests/rate_rule_clockless.rs:
//! never a higher failure rate.)

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

/// The time-window rule of the third configuration: its rate, in millionths, and its
/// minimum of calls.
const TIME_RULE: (u64, u64) = (750_000, 3);

fn configs() -> [(Config, Option<Deferred>); 3] {
    let s = Duration::from_secs;
    let (rate_ppm, minimum) = TIME_RULE;
    [
        (
            Config::default().failure_threshold(3).open_duration(s(5)),
            None,
        ),
        // A count window: the handle's pending successes are folded in the order
        // they happened, so the reference needs no deferral.
        (
            Config::default()
                .failure_threshold(2)
                .success_threshold(1)
                .open_duration(s(2))
                .backoff(2, s(20))
                .jitter(Duration::from_millis(1500), 7)
                .failure_rate(0.5, Window::Calls(6), 4),
            None,
        ),
        (
            Config::default()
                .failure_threshold(4)
                .success_threshold(3)
                .half_open_max_probes(2)
                .open_duration(s(1))
                .failure_rate(rate_ppm as f64 / 1e6, Window::Time(s(8)), minimum as u32),
            Some(Deferred::new(rate_ppm, minimum)),
        ),
    ]
}

/// Successes a shared handle counts in its word, without reading the clock, under a
/// time-window rate rule; the reference core gets them at the handle's next reading.
#[derive(Debug)]
struct Deferred {
    rate_ppm: u64,
    minimum: u64,
    /// What the handle published after its last operation under the lock: no run of
    /// successes can fire the rule (its window's failures are below `rate *
    /// minimum`), so a success is counted without the lock.
    safe: bool,
    /// Counted by the handle, not yet by the reference.
    permits: Vec<Permit>,
}

impl Deferred {
    fn new(rate_ppm: u64, minimum: u64) -> Self {
        Self {
            rate_ppm,
            minimum,
            safe: false,
            permits: Vec::new(),
        }
    }

    /// The handle ran an operation under its lock on `b`: it published the word anew.
    fn published(&mut self, b: &CircuitBreaker) {
        let failures = b.window_counts().map_or(u64::MAX, |w| w.failures);
        let closed = b.state(Duration::ZERO) == State::Closed;
        self.safe = closed && failures * 1_000_000 < self.rate_ppm * self.minimum;
    }

    /// The handle read the clock at `now` under its lock: the pending successes happen
    /// just before, at `now`.
    fn fold(&mut self, b: &mut CircuitBreaker, now: Duration) {
        for permit in self.permits.drain(..) {
            assert_eq!(
                b.record(permit, Verdict::Success, now),
                Recorded::Counted(None),
                "a folded success changed the breaker"
            );
        }
    }
}

/// Runs `ops` under every configuration.
pub(crate) fn replay(ops: &[Op]) {
    for (config, deferred) in configs() {
        run(config, deferred, ops);
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

/// Whether the shared handles run `op` under their lock (reading the clock, except
/// for an abandoned record), given the reference `b` before it. Only a time-window
/// rule asks: elsewhere the reference is fed every operation at its own time.
fn locks(op: &Op, b: &CircuitBreaker, permits: &[Held], now: Duration, safe: bool) -> bool {
    let ejected = matches!(b.state(now), State::Open { .. } | State::HalfOpen);
    match *op {
        Op::Acquire | Op::HandleTimeout => ejected,
        Op::Record { pick, verdict } => {
            let Some((p, _, _)) = permits.get(usize::from(pick) % permits.len().max(1)) else {
                return false;
            };
            match b.state(now) {
                State::Closed if p.generation() != b.generation() => false,
                State::Closed => match verdict {
                    V::Abandoned => false,
                    V::Success => !safe,
                    V::Failure => true,
                },
                _ => ejected,
            }
        }
        Op::ForceOpen | Op::Disable | Op::Reset => true,
        Op::Advance { .. } => false,
    }
}

/// A permit of each: the reference's, the shared breaker's and the set's.
type Held = (Permit, OwnedSharedPermit, SetPermit);

fn run(config: Config, mut deferred: Option<Deferred>, ops: &[Op]) {
    let mut b = CircuitBreaker::try_new(config).expect("valid config");
    let clock = ManualClock::new();
    let shared = SharedBreaker::with_clock(config, clock.clone());
    let set = SharedBreakerSet::with_clock(1, config, clock.clone());
    let max_probes = config_probes(&config);
    let mut permits: Vec<Held> = Vec::new();
    let mut now = Duration::ZERO;
    if let Some(d) = &mut deferred {
        d.published(&b);
    }
    for op in ops {
        // Under the lock, the handles first fold what they counted without it.
        let locked = match &mut deferred {
            Some(d) if locks(op, &b, &permits, now, d.safe) => {
                d.fold(&mut b, now);
                true
            }
            _ => false,
        };
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
                let deferring = deferred.as_mut().filter(|d| {
                    d.safe && !stale && verdict == Verdict::Success && before.0 == State::Closed
                });
                match deferring {
                    // Counted in the handles' words; the reference hears it at their next
                    // reading of the clock.
                    Some(d) => {
                        d.permits.push(p);
                        assert_eq!(sp.report(verdict), Recorded::Counted(None), "shared");
                        assert_eq!(setp.report(verdict), Recorded::Counted(None), "set");
                    }
                    None => record(&mut b, (p, sp, setp), verdict, before, now),
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
                assert_eq!(set.handle_timeout(0), t);
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
                assert_eq!(t, sett, "set disagrees");
                if let Some(t) = t {
                    check_transition(&t, before, &b, now);
                }
            }
        }
        if locked {
            if let Some(d) = &mut deferred {
                d.published(&b);
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

/// Records `verdict` on the reference and both handles, and checks what it did.
fn record(
    b: &mut CircuitBreaker,
    (p, sp, setp): Held,
    verdict: Verdict,
    before: (State, u32, u32, u32),
    now: Duration,
) {
    let stale = p.generation() != b.generation();
    let got = b.record(p, verdict, now);
    assert_eq!(sp.report(verdict), got, "shared disagrees");
    if verdict == Verdict::Abandoned {
        drop(setp);
    } else {
        assert_eq!(setp.report(verdict), got, "set disagrees");
    }
    let after = seen(b, now);
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
                Some(t) => check_transition(&t, before, b, now),
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
