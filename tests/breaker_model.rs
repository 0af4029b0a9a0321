//! The breaker against a reference model written from SPEC section 3, on random
//! histories of acquire / record / advance-time / force / disable / reset / timeout
//! (proptest-state-machine). The sans-io `CircuitBreaker` and a `SharedBreaker` on a
//! `ManualClock` run the same history side by side and must give the model's answer at
//! every step; invariants are checked after every step.

use std::collections::VecDeque;
use std::time::Duration;

use proptest::prelude::*;
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest, prop_state_machine};
use sluice::Verdict;
use sluice::breaker::{
    CircuitBreaker, Config, ManualClock, OwnedSharedPermit, Permit, Pick, Reason, Recorded,
    SetPermit, SharedBreaker, SharedBreakerSet, State, Transition, Window,
};

/// A transition as the model writes it (`Transition` is `#[non_exhaustive]`).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Tr {
    from: State,
    to: State,
    at: Duration,
    reason: Reason,
    generation: u32,
}

fn tr(t: Transition) -> Tr {
    Tr {
        from: t.from,
        to: t.to,
        at: t.at,
        reason: t.reason,
        generation: t.generation,
    }
}

/// `Recorded`, with the model's transitions.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Rec {
    Counted(Option<Tr>),
    Stale,
}

fn rec(r: Recorded) -> Rec {
    match r {
        Recorded::Stale => Rec::Stale,
        other => Rec::Counted(other.transition().map(tr)),
    }
}

/// The parameters the model draws.
#[derive(Debug, Clone, Copy)]
struct Params {
    failure_threshold: u32,
    success_threshold: u32,
    probes: u32,
    open: Duration,
    /// (factor, cap)
    backoff: Option<(u32, Duration)>,
    /// (window length, minimum calls, rate in quarters)
    rate: Option<(u32, u32, u32)>,
    /// (max, seed)
    jitter: Option<(Duration, u64)>,
}

impl Params {
    fn config(&self) -> Config {
        let mut c = Config::default()
            .failure_threshold(self.failure_threshold)
            .success_threshold(self.success_threshold)
            .half_open_max_probes(self.probes)
            .open_duration(self.open);
        if let Some((factor, cap)) = self.backoff {
            c = c.backoff(factor, cap);
        }
        if let Some((len, min, quarters)) = self.rate {
            c = c.failure_rate(f64::from(quarters) / 4.0, Window::Calls(len), min);
        }
        if let Some((max, seed)) = self.jitter {
            c = c.jitter(max, seed);
        }
        c
    }
}

/// The model's state, straight from SPEC section 3.
#[derive(Debug, Clone, PartialEq)]
enum Phase {
    Closed {
        failures: u32,
        window: VecDeque<bool>,
    },
    Open {
        until: Duration,
    },
    HalfOpen {
        in_flight: u32,
        successes: u32,
    },
    ForcedOpen,
    Disabled,
}

/// What the model says the last step must answer.
#[derive(Debug, Clone, PartialEq)]
enum Expect {
    Nothing,
    Acquired {
        generation: u32,
        probe: bool,
        transition: Option<Tr>,
    },
    Rejected {
        retry_after: Option<Duration>,
    },
    Recorded(Rec),
    Changed(Option<Tr>),
}

#[derive(Debug, Clone)]
struct Model {
    p: Params,
    now: Duration,
    phase: Phase,
    generation: u32,
    openings: u32,
    /// Outstanding permits: (generation, probe).
    permits: Vec<(u32, bool)>,
    expect: Expect,
}

#[derive(Debug, Clone)]
enum Op {
    Acquire,
    Record { pick: usize, verdict: Verdict },
    Advance(Duration),
    HandleTimeout,
    ForceOpen,
    Disable,
    Reset,
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Model {
    fn state(&self) -> State {
        match &self.phase {
            Phase::Closed { .. } => State::Closed,
            Phase::Open { until } if self.now < *until => State::Open { until: *until },
            Phase::Open { .. } | Phase::HalfOpen { .. } => State::HalfOpen,
            Phase::ForcedOpen => State::ForcedOpen,
            Phase::Disabled => State::Disabled,
        }
    }

    fn raw_state(phase: &Phase) -> State {
        match phase {
            Phase::Closed { .. } => State::Closed,
            Phase::Open { until } => State::Open { until: *until },
            Phase::HalfOpen { .. } => State::HalfOpen,
            Phase::ForcedOpen => State::ForcedOpen,
            Phase::Disabled => State::Disabled,
        }
    }

    /// Every transition starts a new generation.
    fn go(&mut self, phase: Phase, reason: Reason) -> Tr {
        let from = Self::raw_state(&self.phase);
        self.phase = phase;
        self.generation = self.generation.wrapping_add(1);
        Tr {
            from,
            to: Self::raw_state(&self.phase),
            at: self.now,
            reason,
            generation: self.generation,
        }
    }

    fn open(&mut self, reason: Reason) -> Tr {
        self.openings += 1;
        let mut d = self.p.open;
        if let Some((factor, cap)) = self.p.backoff {
            for _ in 1..self.openings {
                d = (d * factor).min(cap);
            }
        }
        if let Some((max, seed)) = self.p.jitter {
            let g = u64::from(self.generation.wrapping_add(1));
            let draw = splitmix64(seed ^ g.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            d += Duration::from_nanos(((max.as_nanos() * u128::from(draw)) >> 64) as u64);
        }
        let until = self.now + d;
        self.go(Phase::Open { until }, reason)
    }

    fn timeout(&mut self) -> Option<Tr> {
        match self.phase {
            Phase::Open { until } if self.now >= until => Some(self.go(
                Phase::HalfOpen {
                    in_flight: 0,
                    successes: 0,
                },
                Reason::OpenElapsed,
            )),
            _ => None,
        }
    }

    fn acquire(&mut self) -> Expect {
        let transition = self.timeout();
        let generation = self.generation;
        let probe = match &mut self.phase {
            Phase::Closed { .. } | Phase::Disabled => false,
            Phase::Open { until } => {
                return Expect::Rejected {
                    retry_after: Some(*until - self.now),
                };
            }
            Phase::ForcedOpen => return Expect::Rejected { retry_after: None },
            Phase::HalfOpen { in_flight, .. } if *in_flight >= self.p.probes => {
                return Expect::Rejected { retry_after: None };
            }
            Phase::HalfOpen { in_flight, .. } => {
                *in_flight += 1;
                true
            }
        };
        self.permits.push((generation, probe));
        Expect::Acquired {
            generation,
            probe,
            transition,
        }
    }

    fn record(&mut self, pick: usize, verdict: Verdict) -> Expect {
        let (generation, probe) = self.permits.remove(pick);
        Expect::Recorded(self.record_permit(generation, probe, verdict, true))
    }

    /// Records a permit of `generation`; `may_open` false holds a Closed breaker in
    /// (the set's cap), reported as Closed to Closed with `EjectionCapped`.
    fn record_permit(
        &mut self,
        generation: u32,
        probe: bool,
        verdict: Verdict,
        may_open: bool,
    ) -> Rec {
        if generation != self.generation {
            return Rec::Stale;
        }
        let p = self.p;
        let t = match (&mut self.phase, verdict) {
            (_, Verdict::Abandoned) => {
                if let Phase::HalfOpen { in_flight, .. } = &mut self.phase {
                    assert!(probe);
                    *in_flight -= 1;
                }
                None
            }
            (Phase::Disabled, _) => None,
            (Phase::Closed { failures, window }, v) => {
                let failed = v == Verdict::Failure;
                *failures = if failed { *failures + 1 } else { 0 };
                let consecutive = *failures >= p.failure_threshold;
                let mut rate = false;
                if let Some((len, min, quarters)) = p.rate {
                    window.push_back(failed);
                    if window.len() > len as usize {
                        window.pop_front();
                    }
                    let calls = window.len() as u32;
                    let fails = window.iter().filter(|f| **f).count() as u32;
                    rate = calls >= min && fails * 4 >= quarters * calls;
                }
                if (consecutive || rate) && !may_open {
                    Some(Tr {
                        from: State::Closed,
                        to: State::Closed,
                        at: self.now,
                        reason: Reason::EjectionCapped,
                        generation: self.generation,
                    })
                } else if consecutive {
                    Some(self.open(Reason::ConsecutiveFailures))
                } else if rate {
                    Some(self.open(Reason::FailureRate))
                } else {
                    None
                }
            }
            (
                Phase::HalfOpen {
                    in_flight,
                    successes,
                },
                v,
            ) => {
                *in_flight -= 1;
                if v == Verdict::Failure {
                    Some(self.open(Reason::ProbeFailed))
                } else {
                    *successes += 1;
                    if *successes >= p.success_threshold {
                        self.openings = 0;
                        Some(self.go(
                            Phase::Closed {
                                failures: 0,
                                window: VecDeque::new(),
                            },
                            Reason::ProbesSucceeded,
                        ))
                    } else {
                        None
                    }
                }
            }
            (Phase::Open { .. } | Phase::ForcedOpen, _) => {
                unreachable!("no permit of an open generation")
            }
        };
        Rec::Counted(t)
    }
}

struct Reference;

impl ReferenceStateMachine for Reference {
    type State = Model;
    type Transition = Op;

    fn init_state() -> BoxedStrategy<Model> {
        let backoff = prop::option::of((1u32..4, 0u64..200).prop_map(|(f, extra)| (f, extra)));
        let rate = prop::option::of((1u32..9, 1u32..9, 1u32..=4));
        let jitter = prop::option::of((0u64..5_000, any::<u64>()));
        (1u32..5, 1u32..4, 1u32..4, 0u64..20, backoff, rate, jitter)
            .prop_map(|(ft, st, probes, open_s, backoff, rate, jitter)| {
                let open = Duration::from_secs(open_s);
                let p = Params {
                    failure_threshold: ft,
                    success_threshold: st,
                    probes,
                    open,
                    backoff: backoff.map(|(f, extra)| (f, open + Duration::from_secs(extra))),
                    rate: rate.map(|(len, min, q)| (len, min.min(len), q)),
                    jitter: jitter.map(|(ms, seed)| (Duration::from_millis(ms), seed)),
                };
                Model {
                    p,
                    now: Duration::ZERO,
                    phase: Phase::Closed {
                        failures: 0,
                        window: VecDeque::new(),
                    },
                    generation: 0,
                    openings: 0,
                    permits: Vec::new(),
                    expect: Expect::Nothing,
                }
            })
            .boxed()
    }

    fn transitions(state: &Model) -> BoxedStrategy<Op> {
        let verdict = prop_oneof![
            3 => Just(Verdict::Failure),
            2 => Just(Verdict::Success),
            1 => Just(Verdict::Abandoned),
        ];
        let n = state.permits.len().max(1);
        prop_oneof![
            6 => Just(Op::Acquire),
            6 => (0..n, verdict).prop_map(|(pick, verdict)| Op::Record { pick, verdict }),
            3 => prop_oneof![0u64..2_000, 0u64..60_000].prop_map(|ms| Op::Advance(Duration::from_millis(ms))),
            1 => Just(Op::HandleTimeout),
            1 => Just(Op::ForceOpen),
            1 => Just(Op::Disable),
            1 => Just(Op::Reset),
        ]
        .boxed()
    }

    fn preconditions(state: &Model, op: &Op) -> bool {
        match op {
            Op::Record { pick, .. } => *pick < state.permits.len(),
            _ => true,
        }
    }

    fn apply(mut m: Model, op: &Op) -> Model {
        m.expect = match op {
            Op::Acquire => m.acquire(),
            Op::Record { pick, verdict } => m.record(*pick, *verdict),
            Op::Advance(by) => {
                m.now += *by;
                Expect::Nothing
            }
            Op::HandleTimeout => Expect::Changed(m.timeout()),
            Op::ForceOpen => Expect::Changed(
                (m.phase != Phase::ForcedOpen).then(|| m.go(Phase::ForcedOpen, Reason::Forced)),
            ),
            Op::Disable => Expect::Changed(
                (m.phase != Phase::Disabled).then(|| m.go(Phase::Disabled, Reason::Disabled)),
            ),
            Op::Reset => {
                m.openings = 0;
                Expect::Changed(match &mut m.phase {
                    Phase::Closed { failures, window } => {
                        *failures = 0;
                        window.clear();
                        None
                    }
                    _ => Some(m.go(
                        Phase::Closed {
                            failures: 0,
                            window: VecDeque::new(),
                        },
                        Reason::Reset,
                    )),
                })
            }
        };
        m
    }
}

/// The sans-io breaker and the shared one, side by side, with their outstanding
/// permits in the model's order.
struct Real {
    core: CircuitBreaker,
    permits: Vec<Permit>,
    clock: ManualClock,
    shared: SharedBreaker,
    shared_permits: Vec<OwnedSharedPermit>,
    now: Duration,
}

struct BreakerTest;

impl StateMachineTest for BreakerTest {
    type SystemUnderTest = Real;
    type Reference = Reference;

    fn init_test(m: &Model) -> Real {
        let config = m.p.config();
        assert_eq!(config.validate(), Ok(()));
        let clock = ManualClock::new();
        Real {
            core: CircuitBreaker::try_new(config).expect("valid"),
            permits: Vec::new(),
            shared: SharedBreaker::try_with_clock(config, clock.clone()).expect("valid"),
            clock,
            shared_permits: Vec::new(),
            now: Duration::ZERO,
        }
    }

    fn apply(mut r: Real, m: &Model, op: Op) -> Real {
        let before = (
            r.core.state(r.now),
            r.core.generation(),
            r.core.consecutive_failures(),
            r.core.probes_in_flight(),
        );
        match op {
            Op::Acquire => {
                let got = r.core.try_acquire(r.now);
                let shared = r.shared.try_acquire_owned();
                match (&m.expect, got, shared) {
                    (
                        Expect::Acquired {
                            generation,
                            probe,
                            transition,
                        },
                        Ok(p),
                        Ok(sp),
                    ) => {
                        assert_eq!(
                            (p.generation(), p.is_probe(), p.transition().map(tr)),
                            (*generation, *probe, *transition)
                        );
                        assert_eq!(
                            (sp.generation(), sp.is_probe(), sp.transition().map(tr)),
                            (*generation, *probe, *transition)
                        );
                        if let State::Open { until } = before.0 {
                            assert!(r.now >= until, "admitted before until");
                        }
                        r.permits.push(p);
                        r.shared_permits.push(sp);
                    }
                    (Expect::Rejected { retry_after }, Err(e), Err(se)) => {
                        assert_eq!(e.retry_after, *retry_after);
                        assert_eq!(se.retry_after, *retry_after);
                    }
                    (want, got, shared) => {
                        panic!("model {want:?}, core {got:?}, shared {shared:?}")
                    }
                }
            }
            Op::Record { pick, verdict } => {
                let permit = r.permits.remove(pick);
                let shared_permit = r.shared_permits.remove(pick);
                let got = r.core.record(permit, verdict, r.now);
                assert_eq!(Expect::Recorded(rec(got)), m.expect);
                assert_eq!(shared_permit.report(verdict), got, "shared");
                let after = (
                    r.core.state(r.now),
                    r.core.generation(),
                    r.core.consecutive_failures(),
                    r.core.probes_in_flight(),
                );
                if got == Recorded::Stale {
                    assert_eq!(after, before, "a stale record changed the breaker");
                }
                if verdict == Verdict::Abandoned {
                    assert_eq!(after.1, before.1, "abandoned made a transition");
                    assert_eq!(after.2, before.2, "abandoned moved the failure count");
                }
            }
            Op::Advance(by) => {
                r.now += by;
                r.clock.advance(by);
            }
            Op::HandleTimeout => {
                let t = r.core.handle_timeout(r.now);
                assert_eq!(Expect::Changed(t.map(tr)), m.expect);
                assert_eq!(r.shared.handle_timeout(), t, "shared");
            }
            Op::ForceOpen => {
                let t = r.core.force_open(r.now);
                assert_eq!(Expect::Changed(t.map(tr)), m.expect);
                assert_eq!(r.shared.force_open(), t, "shared");
            }
            Op::Disable => {
                let t = r.core.disable(r.now);
                assert_eq!(Expect::Changed(t.map(tr)), m.expect);
                assert_eq!(r.shared.disable(), t, "shared");
            }
            Op::Reset => {
                let t = r.core.reset(r.now);
                assert_eq!(Expect::Changed(t.map(tr)), m.expect);
                assert_eq!(r.shared.reset(), t, "shared");
            }
        }
        r
    }

    fn check_invariants(r: &Real, m: &Model) {
        assert_eq!(r.now, m.now);
        assert_eq!(r.core.state(r.now), m.state(), "core state");
        assert_eq!(r.shared.state(), m.state(), "shared state");
        assert_eq!(r.core.generation(), m.generation);
        assert!(
            r.core.probes_in_flight() <= m.p.probes,
            "probes above the limit"
        );
        if let Phase::HalfOpen { in_flight, .. } = m.phase {
            assert_eq!(r.core.probes_in_flight(), in_flight);
        }
        if let Phase::Closed { failures, .. } = m.phase {
            assert_eq!(r.core.consecutive_failures(), failures);
        }
        assert_eq!(
            r.core.poll_timeout(),
            match m.phase {
                Phase::Open { until } => Some(until),
                _ => None,
            }
        );
        // The shared core, folded, is the sans-io breaker.
        let snap = r.shared.snapshot();
        assert_eq!(
            (
                snap.generation(),
                snap.consecutive_failures(),
                snap.probes_in_flight()
            ),
            (
                r.core.generation(),
                r.core.consecutive_failures(),
                r.core.probes_in_flight()
            )
        );
    }
}

prop_state_machine! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]
    #[test]
    fn breaker_agrees_with_the_spec_model(sequential 1..80 => BreakerTest);
}

// The shared set against the same model: one model breaker per worker, the ejection
// cap of SPEC section 3 (at most max(1, floor(n * percent / 100)) workers Open or
// HalfOpen at once; ForcedOpen neither counted nor capped), and picking.

#[derive(Debug, Clone)]
enum SetOp {
    Pick(Pick),
    Acquire(usize),
    Record { pick: usize, verdict: Verdict },
    Drop { pick: usize },
    Advance(Duration),
    HandleTimeout(usize),
    ForceOpen(usize),
    Disable(usize),
    Reset(usize),
}

#[derive(Debug, Clone, PartialEq)]
enum SetExpect {
    Nothing,
    Acquired {
        worker: usize,
        generation: u32,
        probe: bool,
        transition: Option<Tr>,
    },
    Rejected(Option<Duration>),
    Recorded(Rec),
    Changed(Option<Tr>),
}

#[derive(Debug, Clone)]
struct SetModel {
    workers: Vec<Model>,
    max_ejected: usize,
    cursor: usize,
    /// Outstanding permits: (worker, generation, probe).
    permits: Vec<(usize, u32, bool)>,
    expect: SetExpect,
}

impl SetModel {
    fn ejected(&self) -> usize {
        self.workers
            .iter()
            .filter(|w| matches!(w.phase, Phase::Open { .. } | Phase::HalfOpen { .. }))
            .count()
    }

    fn in_flight(&self, worker: usize) -> usize {
        self.permits.iter().filter(|p| p.0 == worker).count()
    }

    fn acquire(&mut self, worker: usize) -> Result<SetExpect, Option<Duration>> {
        match self.workers[worker].acquire() {
            Expect::Acquired {
                generation,
                probe,
                transition,
            } => {
                // The worker model keeps its own list; the set's is the one used.
                self.workers[worker].permits.pop();
                self.permits.push((worker, generation, probe));
                Ok(SetExpect::Acquired {
                    worker,
                    generation,
                    probe,
                    transition,
                })
            }
            Expect::Rejected { retry_after } => Err(retry_after),
            other => unreachable!("{other:?}"),
        }
    }

    fn pick(&mut self, how: Pick) -> SetExpect {
        let n = self.workers.len();
        let start = self.cursor % n;
        let mut order: Vec<usize> = (0..n).map(|i| (start + i) % n).collect();
        if how == Pick::LeastInFlight {
            let loads: Vec<usize> = (0..n).map(|w| self.in_flight(w)).collect();
            order.sort_by_key(|w| (loads[*w], (*w + n - start) % n));
        }
        let mut soonest: Option<Duration> = None;
        for worker in order {
            match self.acquire(worker) {
                Ok(got) => {
                    self.cursor = worker + 1;
                    return got;
                }
                Err(Some(after)) => soonest = Some(soonest.map_or(after, |s| s.min(after))),
                Err(None) => {}
            }
        }
        SetExpect::Rejected(soonest)
    }

    fn record(&mut self, pick: usize, verdict: Verdict) -> SetExpect {
        let (worker, generation, probe) = self.permits.remove(pick);
        let may_open = self.ejected() < self.max_ejected;
        SetExpect::Recorded(
            self.workers[worker].record_permit(generation, probe, verdict, may_open),
        )
    }
}

struct SetReference;

impl ReferenceStateMachine for SetReference {
    type State = SetModel;
    type Transition = SetOp;

    fn init_state() -> BoxedStrategy<SetModel> {
        (Reference::init_state(), 1usize..6, 0u8..=100)
            .prop_map(|(one, n, percent)| SetModel {
                max_ejected: (n * usize::from(percent) / 100).max(1),
                workers: vec![one; n],
                cursor: 0,
                permits: Vec::new(),
                expect: SetExpect::Nothing,
            })
            .boxed()
    }

    fn transitions(state: &SetModel) -> BoxedStrategy<SetOp> {
        let verdict = prop_oneof![
            3 => Just(Verdict::Failure),
            2 => Just(Verdict::Success),
            1 => Just(Verdict::Abandoned),
        ];
        let n = state.workers.len();
        let held = state.permits.len().max(1);
        prop_oneof![
            4 => prop_oneof![Just(Pick::RoundRobin), Just(Pick::LeastInFlight)].prop_map(SetOp::Pick),
            2 => (0..n + 1).prop_map(SetOp::Acquire),
            6 => (0..held, verdict).prop_map(|(pick, verdict)| SetOp::Record { pick, verdict }),
            1 => (0..held).prop_map(|pick| SetOp::Drop { pick }),
            3 => prop_oneof![0u64..2_000, 0u64..60_000].prop_map(|ms| SetOp::Advance(Duration::from_millis(ms))),
            1 => (0..n).prop_map(SetOp::HandleTimeout),
            1 => (0..n).prop_map(SetOp::ForceOpen),
            1 => (0..n).prop_map(SetOp::Disable),
            1 => (0..n).prop_map(SetOp::Reset),
        ]
        .boxed()
    }

    fn preconditions(state: &SetModel, op: &SetOp) -> bool {
        match op {
            SetOp::Record { pick, .. } | SetOp::Drop { pick } => *pick < state.permits.len(),
            _ => true,
        }
    }

    fn apply(mut m: SetModel, op: &SetOp) -> SetModel {
        m.expect = match *op {
            SetOp::Pick(how) => m.pick(how),
            SetOp::Acquire(worker) if worker >= m.workers.len() => SetExpect::Rejected(None),
            SetOp::Acquire(worker) => m.acquire(worker).unwrap_or_else(SetExpect::Rejected),
            SetOp::Record { pick, verdict } => m.record(pick, verdict),
            SetOp::Drop { pick } => m.record(pick, Verdict::Abandoned),
            SetOp::Advance(by) => {
                for w in &mut m.workers {
                    w.now += by;
                }
                SetExpect::Nothing
            }
            SetOp::HandleTimeout(w) => SetExpect::Changed(m.workers[w].timeout()),
            SetOp::ForceOpen(w) | SetOp::Disable(w) | SetOp::Reset(w) => {
                let one = Reference::apply(
                    m.workers[w].clone(),
                    &match op {
                        SetOp::ForceOpen(_) => Op::ForceOpen,
                        SetOp::Disable(_) => Op::Disable,
                        _ => Op::Reset,
                    },
                );
                m.workers[w] = one;
                match &m.workers[w].expect {
                    Expect::Changed(t) => SetExpect::Changed(*t),
                    other => unreachable!("{other:?}"),
                }
            }
        };
        m
    }
}

struct RealSet {
    set: SharedBreakerSet,
    clock: ManualClock,
    permits: Vec<SetPermit>,
}

struct SetTest;

impl StateMachineTest for SetTest {
    type SystemUnderTest = RealSet;
    type Reference = SetReference;

    fn init_test(m: &SetModel) -> RealSet {
        let config = m.workers[0].p.config();
        let clock = ManualClock::new();
        let n = m.workers.len();
        // Find the percent back from the model's cap: any percent giving it will do.
        let percent = (0..=100u8)
            .find(|p| (n * usize::from(*p) / 100).max(1) == m.max_ejected)
            .expect("a percent");
        let set = SharedBreakerSet::try_with_clock(n, config, clock.clone())
            .expect("valid")
            .with_max_ejected_percent(percent);
        assert_eq!(set.max_ejected(), m.max_ejected);
        RealSet {
            set,
            clock,
            permits: Vec::new(),
        }
    }

    fn apply(mut r: RealSet, m: &SetModel, op: SetOp) -> RealSet {
        let got = match op {
            SetOp::Pick(how) => acquired(r.set.pick(how), &mut r.permits),
            SetOp::Acquire(worker) => acquired(r.set.try_acquire(worker), &mut r.permits),
            SetOp::Record { pick, verdict } => {
                let permit = r.permits.remove(pick);
                SetExpect::Recorded(rec(permit.report(verdict)))
            }
            SetOp::Drop { pick } => {
                drop(r.permits.remove(pick));
                // The model records Abandoned: a current permit is Counted(None).
                m.expect.clone()
            }
            SetOp::Advance(by) => {
                r.clock.advance(by);
                SetExpect::Nothing
            }
            SetOp::HandleTimeout(w) => SetExpect::Changed(r.set.handle_timeout(w).map(tr)),
            SetOp::ForceOpen(w) => SetExpect::Changed(r.set.force_open(w).map(tr)),
            SetOp::Disable(w) => SetExpect::Changed(r.set.disable(w).map(tr)),
            SetOp::Reset(w) => SetExpect::Changed(r.set.reset(w).map(tr)),
        };
        assert_eq!(got, m.expect, "{op:?}");
        r
    }

    fn check_invariants(r: &RealSet, m: &SetModel) {
        assert_eq!(r.set.ejected(), m.ejected(), "ejected");
        assert!(r.set.ejected() <= m.max_ejected, "cap exceeded");
        for (i, w) in m.workers.iter().enumerate() {
            assert_eq!(r.set.state(i), w.state(), "worker {i} state");
            assert_eq!(r.set.in_flight(i), m.in_flight(i), "worker {i} in flight");
            let snap = r.set.snapshot(i).expect("known");
            assert_eq!(snap.generation(), w.generation, "worker {i} generation");
            if let Phase::Closed { failures, .. } = w.phase {
                assert_eq!(snap.consecutive_failures(), failures, "worker {i} failures");
            }
        }
        assert_eq!(
            r.set.state(m.workers.len()),
            State::ForcedOpen,
            "unknown worker"
        );
    }
}

fn acquired(
    got: Result<SetPermit, sluice::breaker::Rejected>,
    permits: &mut Vec<SetPermit>,
) -> SetExpect {
    match got {
        Ok(p) => {
            let e = SetExpect::Acquired {
                worker: p.worker(),
                generation: p.generation(),
                probe: p.is_probe(),
                transition: p.transition().map(tr),
            };
            permits.push(p);
            e
        }
        Err(rejected) => SetExpect::Rejected(rejected.retry_after),
    }
}

prop_state_machine! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
    #[test]
    fn breaker_set_agrees_with_the_spec_model(sequential 1..80 => SetTest);
}
