//! Every ordering of up to 7 steps, driven through a real `TrackedStream`.
//!
//! The steps are an `Ok` chunk, an `Err` item and the end of the inner stream (each one
//! poll of the wrapper), and the caller's `mark_completed` and `mark_errored` between
//! polls. For every sequence of up to 7 steps and every prefix of it, the wrapper is
//! driven through the prefix and then dropped (or `finish`ed). What it records (verdict,
//! cause and counts) is compared with the shared reference model written straight from
//! SPEC section 1's table (`sluice_test_support::model`); the test never asks `Tracker` what
//! the answer should be.
//!
//! Along the way: every item passes through unchanged (the very same bytes, not a
//! copy) and in order, the inner stream is never polled after it returned `None`, the
//! wrapper keeps returning `None` after the end, and exactly one outcome is recorded.

use std::cell::Cell;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use futures_core::{FusedStream, Stream};
use sluice::{Cause, Outcome, Terminal, TrackedStream, Verdict};

use sluice_test_support::model as spec;
use spec::Input;

/// One step of a sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Poll; the inner stream yields an `Ok` chunk.
    Chunk,
    /// Poll; the inner stream yields an `Err` item.
    Error,
    /// Poll; the inner stream returns `None`.
    End,
    /// Call `mark_completed` on the wrapper.
    MarkCompleted,
    /// Call `mark_errored` on the wrapper.
    MarkErrored,
}

const STEPS: [Step; 5] = [
    Step::Chunk,
    Step::Error,
    Step::End,
    Step::MarkCompleted,
    Step::MarkErrored,
];
const MAX_LEN: usize = 7;

/// The bytes of the chunk at step `i`: distinct lengths (the first one empty), so a
/// wrong count of bytes shows.
const PAYLOADS: [&[u8]; MAX_LEN] = [b"", b"a", b"bc", b"def", b"ghij", b"klmno", b"pqrstu"];

/// The inner stream: yields the scripted items in order and `None` at `End`. It
/// counts polls after it ended instead of answering them.
struct Scripted<'a> {
    script: &'a [Step],
    at: usize,
    ended: bool,
    polls_after_end: &'a Cell<u32>,
}

impl Stream for Scripted<'_> {
    type Item = Result<&'static [u8], usize>;

    fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            self.polls_after_end.set(self.polls_after_end.get() + 1);
            return Poll::Ready(None);
        }
        // Polled once per poll step of the script: `mark_*` steps are no items.
        let (i, step) = self.script[self.at..]
            .iter()
            .enumerate()
            .map(|(j, s)| (self.at + j, *s))
            .find(|(_, s)| matches!(s, Step::Chunk | Step::Error | Step::End))
            .expect("polled more often than the script has poll steps");
        self.at = i + 1;
        Poll::Ready(match step {
            Step::Chunk => Some(Ok(PAYLOADS[i])),
            Step::Error => Some(Err(i)),
            Step::End => {
                self.ended = true;
                None
            }
            Step::MarkCompleted | Step::MarkErrored => unreachable!("filtered above"),
        })
    }
}

/// The shared reference model (SPEC section 1's table), plus what the guarantees say
/// about the end: a poll step after it reaches nobody (the wrapper is fused).
#[derive(Debug, Clone, Copy)]
struct Model {
    spec: spec::Model,
    ended: bool,
}

impl Model {
    fn new() -> Self {
        Self {
            spec: spec::Model::new(false),
            ended: false,
        }
    }

    /// Applies step `i`.
    fn step(&mut self, i: usize, step: Step) {
        let input = match step {
            Step::Chunk | Step::Error | Step::End if self.ended => return,
            Step::Chunk => Input::Chunk(PAYLOADS[i].len()),
            Step::Error => Input::Error,
            Step::End => {
                self.ended = true;
                Input::End
            }
            Step::MarkCompleted => Input::Done(Cause::Marked),
            Step::MarkErrored => Input::Failed(Cause::Marked),
        };
        self.spec.feed(input);
    }

    fn terminal(&self) -> Terminal {
        self.spec.state
    }

    fn verdict(&self) -> Verdict {
        self.spec.verdict()
    }
}

/// How a run ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exit {
    Drop,
    Finish,
}

/// Drives the wrapper through `script[..steps]`, then drops or finishes it, and checks
/// everything against the model.
fn run(script: &[Step], steps: usize, exit: Exit) {
    let recorded: Cell<Option<Outcome>> = Cell::new(None);
    let records = Cell::new(0_u32);
    let polls_after_end = Cell::new(0_u32);
    let inner = Scripted {
        script,
        at: 0,
        ended: false,
        polls_after_end: &polls_after_end,
    };
    let mut tracked = TrackedStream::new(inner, |o: Outcome| {
        recorded.set(Some(o));
        records.set(records.get() + 1);
    });
    let mut cx = Context::from_waker(Waker::noop());
    let mut model = Model::new();
    let ctx = |i: usize| format!("script {script:?}, after step {i} of {steps}");

    for (i, &step) in script[..steps].iter().enumerate() {
        match step {
            Step::Chunk | Step::Error | Step::End => {
                let got = Pin::new(&mut tracked).poll_next(&mut cx);
                let expected = match step {
                    _ if model.ended => None,
                    Step::Chunk => Some(Ok(PAYLOADS[i])),
                    Step::Error => Some(Err(i)),
                    _ => None,
                };
                match (&got, &expected) {
                    // The same bytes, not an equal copy.
                    (Poll::Ready(Some(Ok(g))), Some(Ok(e))) => {
                        assert!(std::ptr::eq(*g, *e), "{}: chunk copied", ctx(i));
                    }
                    (Poll::Ready(g), e) => assert_eq!(g, e, "{}", ctx(i)),
                    (Poll::Pending, _) => panic!("{}: Pending from a ready stream", ctx(i)),
                }
            }
            Step::MarkCompleted => tracked.mark_completed(),
            Step::MarkErrored => tracked.mark_errored(),
        }
        model.step(i, step);
        assert_eq!(tracked.terminal(), model.terminal(), "{}", ctx(i));
        assert_eq!(tracked.is_terminated(), model.ended, "{}", ctx(i));
        assert_eq!(records.get(), 0, "{}: recorded before the end", ctx(i));
    }
    if model.ended {
        // Fused: more polls give `None` and never reach the inner stream.
        for _ in 0..2 {
            let got = Pin::new(&mut tracked).poll_next(&mut cx);
            assert!(matches!(got, Poll::Ready(None)), "{}", ctx(steps));
        }
        assert_eq!(tracked.terminal(), model.terminal(), "{}", ctx(steps));
    }
    assert_eq!(
        polls_after_end.get(),
        0,
        "{}: inner polled after its end",
        ctx(steps)
    );

    let expected = model.spec.outcome();
    match exit {
        Exit::Drop => drop(tracked),
        Exit::Finish => {
            let returned = tracked.finish();
            assert_eq!(returned, expected, "{}: finish() returned", ctx(steps));
        }
    }
    assert_eq!(records.get(), 1, "{}: {exit:?} recorded", ctx(steps));
    assert_eq!(recorded.get(), Some(expected), "{}: {exit:?}", ctx(steps));
}

/// Every sequence of up to `MAX_LEN` steps, each cut at every prefix length, ended by
/// `exit`. Returns how many runs it checked.
fn every_ordering(exit: Exit) -> usize {
    let mut runs = 0;
    let mut script = [Step::Chunk; MAX_LEN];
    for len in 0..=MAX_LEN {
        for code in 0..STEPS.len().pow(len as u32) {
            let mut rest = code;
            for slot in &mut script[..len] {
                *slot = STEPS[rest % STEPS.len()];
                rest /= STEPS.len();
            }
            for steps in 0..=len {
                run(&script[..len], steps, exit);
                runs += 1;
            }
        }
    }
    runs
}

/// Sum over n = 0..=7 of 5^n sequences times (n + 1) drop positions.
const RUNS: usize = 1 + 5 * 2 + 25 * 3 + 125 * 4 + 625 * 5 + 3_125 * 6 + 15_625 * 7 + 78_125 * 8;

#[test]
fn every_ordering_dropped_at_every_position_matches_the_table() {
    assert_eq!(RUNS, 756_836);
    assert_eq!(every_ordering(Exit::Drop), RUNS);
}

#[test]
fn every_ordering_finished_at_every_position_records_once() {
    assert_eq!(every_ordering(Exit::Finish), RUNS);
}

/// The model is the table, not a copy of the implementation: spot-check the rows the
/// SPEC singles out.
#[test]
fn the_model_follows_the_spec_rows() {
    let mut m = Model::new();
    m.step(0, Step::MarkCompleted);
    assert_eq!(m.verdict(), Verdict::Success);
    m.step(1, Step::Error); // an error after done still fails
    assert_eq!(m.verdict(), Verdict::Failure);
    m.step(2, Step::MarkCompleted); // Errored absorbs
    assert_eq!(m.verdict(), Verdict::Failure);
    let mut m = Model::new();
    m.step(0, Step::Chunk);
    assert_eq!(m.verdict(), Verdict::Abandoned);
    m.step(1, Step::End);
    m.step(2, Step::Error); // after the end the inner stream is not polled
    assert_eq!(m.verdict(), Verdict::Success);
}
