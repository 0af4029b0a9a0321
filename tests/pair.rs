//! `sluice::pair`: a property over every order in which a prefill worker P and a
//! decode worker D can end, commit, and lose their client, driven by the pattern the
//! module documents: each side records exactly once; D is Abandoned `peer_failed` if
//! and only if P failed before D committed or ended; otherwise each verdict is the
//! worker's own; a client that leaves blames neither.

use std::cell::RefCell;
use std::rc::Rc;

use proptest::prelude::*;
use sluice::pair::{DecodeRecorder, PairLink, PrefillRecorder};
use sluice::{Cause, Outcome, RecordGuard, Recorder, Verdict};

/// One thing that happens to a pair.
#[derive(Debug, Clone, Copy)]
enum Op {
    /// P's response ends with its own outcome.
    PrefillEnds(Verdict),
    /// D's response head comes: its recorder moves from the guard to its stream.
    DecodeHead,
    /// D is about to hand its first byte to the client.
    DecodeCommits,
    /// D's response ends with its own outcome.
    DecodeEnds(Verdict),
    /// The client leaves.
    ClientLeaves,
}

fn own(verdict: Verdict) -> Outcome {
    let cause = match verdict {
        Verdict::Success => Cause::Done,
        Verdict::Failure => Cause::Status,
        _ => Cause::ClientLeft,
    };
    Outcome::new(verdict, cause, 1, 10)
}

fn verdict() -> impl Strategy<Value = Verdict> {
    prop_oneof![
        Just(Verdict::Success),
        Just(Verdict::Failure),
        Just(Verdict::Abandoned)
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        verdict().prop_map(Op::PrefillEnds),
        Just(Op::DecodeHead),
        Just(Op::DecodeCommits),
        verdict().prop_map(Op::DecodeEnds),
        Just(Op::ClientLeaves),
    ]
}

type Log = Rc<RefCell<Vec<(&'static str, Outcome)>>>;

type Rec = Box<dyn FnOnce(Outcome)>;

fn recorder(log: &Log, who: &'static str) -> Rec {
    let log = log.clone();
    Box::new(move |o: Outcome| log.borrow_mut().push((who, o)))
}

/// D, before its head (guarded: dropping it records `client_left_before_head`) or
/// after (in a stream, which records `client_left` when dropped).
enum Decode {
    Waiting(RecordGuard<DecodeRecorder<Rec>>),
    Streaming(DecodeRecorder<Rec>),
}

impl Decode {
    fn record(self, outcome: Outcome) {
        match self {
            Self::Waiting(guard) => guard.record(outcome),
            Self::Streaming(d) => d.record(outcome),
        }
    }

    /// Dropped unended by the driver: what a tracked stream (or the guard) records.
    fn drop_unended(self) {
        match self {
            Self::Waiting(guard) => drop(guard),
            Self::Streaming(d) => {
                d.record(Outcome::new(Verdict::Abandoned, Cause::ClientLeft, 0, 0))
            }
        }
    }
}

/// What the model expects of one run.
#[derive(Debug, Default)]
struct Expect {
    prefill: Option<Outcome>,
    decode: Option<Outcome>,
    /// P failed while D had neither committed nor ended.
    peer_failed: bool,
}

fn run(ops: &[Op]) -> Result<(), TestCaseError> {
    let log: Log = Rc::default();
    let link = PairLink::new();
    let mut p: Option<PrefillRecorder<Rec>> = Some(link.prefill(recorder(&log, "P")));
    let mut d: Option<Decode> = Some(Decode::Waiting(RecordGuard::new(
        link.decode(recorder(&log, "D")),
    )));
    let mut committed = false;
    let mut expect = Expect::default();
    let mut client_steps = Vec::new();
    for (step, op) in ops.iter().copied().chain([Op::ClientLeaves]).enumerate() {
        let before = log.borrow().len();
        match op {
            Op::PrefillEnds(v) => {
                if let Some(p) = p.take() {
                    if v == Verdict::Failure && !committed && d.is_some() {
                        expect.peer_failed = true;
                    }
                    expect.prefill = Some(own(v));
                    p.record(own(v));
                    // The pattern: P failed before D committed: drop D now.
                    if link.peer_failed() {
                        if let Some(d) = d.take() {
                            d.drop_unended();
                        }
                    }
                }
            }
            Op::DecodeHead => {
                d = match d.take() {
                    Some(Decode::Waiting(guard)) => Some(Decode::Streaming(guard.disarm())),
                    other => other,
                };
            }
            Op::DecodeCommits => {
                if d.is_some() && !committed {
                    if link.commit_decode() {
                        committed = true;
                    } else if let Some(d) = d.take() {
                        d.drop_unended();
                    }
                }
            }
            Op::DecodeEnds(v) => {
                if let Some(d) = d.take() {
                    expect.decode = Some(own(v));
                    d.record(own(v));
                }
            }
            Op::ClientLeaves => {
                // The pattern: drop both; an ended side's verdict stands.
                client_steps.push(step);
                if let Some(d) = d.take() {
                    d.drop_unended();
                    // D dropped by its client tells the link: P is to go too.
                    prop_assert!(link.client_left());
                }
                if let Some(p) = p.take() {
                    expect.prefill =
                        Some(Outcome::new(Verdict::Abandoned, Cause::ClientLeft, 0, 0));
                    p.record(Outcome::new(Verdict::Abandoned, Cause::ClientLeft, 0, 0));
                }
                // Never blamed for the client.
                for (who, o) in &log.borrow()[before..] {
                    prop_assert_eq!(
                        o.verdict,
                        Verdict::Abandoned,
                        "{} blamed for the client",
                        who
                    );
                }
            }
        }
    }
    let log = log.borrow();
    // Exactly one verdict each.
    let ps: Vec<Outcome> = log
        .iter()
        .filter(|(w, _)| *w == "P")
        .map(|(_, o)| *o)
        .collect();
    let ds: Vec<Outcome> = log
        .iter()
        .filter(|(w, _)| *w == "D")
        .map(|(_, o)| *o)
        .collect();
    prop_assert_eq!(ps.len(), 1, "P: {:?}", ps);
    prop_assert_eq!(ds.len(), 1, "D: {:?}", ds);
    // P's verdict is its own, unchanged.
    prop_assert_eq!(Some(ps[0]), expect.prefill);
    // D is peer_failed iff P failed before D committed or ended.
    let d = ds[0];
    prop_assert_eq!(
        d.cause == Cause::PeerFailed,
        expect.peer_failed,
        "D: {:?}",
        d
    );
    if expect.peer_failed {
        prop_assert_eq!(d.verdict, Verdict::Abandoned);
    } else if let Some(own) = expect.decode {
        prop_assert_eq!(d, own);
    } else {
        // Dropped by the client: neutral, the client's cause.
        prop_assert_eq!(d.verdict, Verdict::Abandoned);
        prop_assert!(matches!(
            d.cause,
            Cause::ClientLeft | Cause::ClientLeftBeforeHead
        ));
    }
    // Never both failures unless each failed on its own.
    if ps[0].verdict == Verdict::Failure && d.verdict == Verdict::Failure {
        prop_assert_eq!(Some(d), expect.decode);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn each_side_one_verdict_and_peer_failed_iff_prefill_failed_first(
        ops in proptest::collection::vec(op(), 0..8),
    ) {
        run(&ops)?;
    }
}

/// Every sequence of up to four operations, not a sample.
#[test]
fn every_short_history() {
    let alphabet = [
        Op::PrefillEnds(Verdict::Success),
        Op::PrefillEnds(Verdict::Failure),
        Op::PrefillEnds(Verdict::Abandoned),
        Op::DecodeHead,
        Op::DecodeCommits,
        Op::DecodeEnds(Verdict::Success),
        Op::DecodeEnds(Verdict::Failure),
        Op::ClientLeaves,
    ];
    let mut count = 0;
    for len in 0..=4u32 {
        for mut n in 0..alphabet.len().pow(len) {
            let mut ops = Vec::new();
            for _ in 0..len {
                ops.push(alphabet[n % alphabet.len()]);
                n /= alphabet.len();
            }
            run(&ops).unwrap_or_else(|e| panic!("{ops:?}: {e}"));
            count += 1;
        }
    }
    assert_eq!(count, 1 + 8 + 64 + 512 + 4096);
}

/// The scenarios the gateway relies on, spelled out.
#[test]
fn the_pair_scenarios() {
    let verdicts = |ops: &[Op]| {
        let log: Log = Rc::default();
        let link = PairLink::new();
        let p = link.prefill(recorder(&log, "P"));
        let d = link.decode(recorder(&log, "D"));
        let (mut p, mut d) = (Some(p), Some(d));
        for op in ops {
            match op {
                Op::PrefillEnds(v) => {
                    if let Some(p) = p.take() {
                        p.record(own(*v));
                    }
                    if link.peer_failed() {
                        if let Some(d) = d.take() {
                            d.record(Outcome::new(Verdict::Abandoned, Cause::ClientLeft, 0, 0));
                        }
                    }
                }
                Op::DecodeCommits => assert!(link.commit_decode()),
                Op::DecodeEnds(v) => d.take().expect("D").record(own(*v)),
                Op::ClientLeaves => {
                    if let Some(d) = d.take() {
                        d.record(Outcome::new(Verdict::Abandoned, Cause::ClientLeft, 0, 0));
                    }
                    if let Some(p) = p.take() {
                        p.record(Outcome::new(Verdict::Abandoned, Cause::ClientLeft, 0, 0));
                    }
                }
                Op::DecodeHead => {}
            }
        }
        let out: Vec<_> = log
            .borrow()
            .iter()
            .map(|(w, o)| (*w, o.verdict, o.cause))
            .collect();
        out
    };
    use Verdict::*;
    // A clean pair.
    assert_eq!(
        verdicts(&[
            Op::PrefillEnds(Success),
            Op::DecodeCommits,
            Op::DecodeEnds(Success)
        ]),
        [("P", Success, Cause::Done), ("D", Success, Cause::Done)]
    );
    // P fails first: D dropped, peer_failed.
    assert_eq!(
        verdicts(&[Op::PrefillEnds(Failure)]),
        [
            ("P", Failure, Cause::Status),
            ("D", Abandoned, Cause::PeerFailed)
        ]
    );
    // D fails: P's own verdict stands.
    assert_eq!(
        verdicts(&[Op::DecodeEnds(Failure), Op::PrefillEnds(Success)]),
        [("D", Failure, Cause::Status), ("P", Success, Cause::Done)]
    );
    // The client leaves mid-stream: both Abandoned, client_left.
    assert_eq!(
        verdicts(&[Op::DecodeCommits, Op::ClientLeaves]),
        [
            ("D", Abandoned, Cause::ClientLeft),
            ("P", Abandoned, Cause::ClientLeft)
        ]
    );
    // P fails after D committed: D's verdict stands.
    assert_eq!(
        verdicts(&[
            Op::DecodeCommits,
            Op::PrefillEnds(Failure),
            Op::DecodeEnds(Success)
        ]),
        [("P", Failure, Cause::Status), ("D", Success, Cause::Done)]
    );
}
