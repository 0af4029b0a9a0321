//! Replays a script of upstream items and caller actions through a real
//! `TrackedStream` and checks it against the reference model of SPEC section 1
//! (`sluice_test_support::model`). Shared by the
//! `tracker_events` fuzz target and `cargo test` (tests/fuzz_replay.rs).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use arbitrary::Arbitrary;
use futures_core::Stream;
use sluice::sse::{Signal, SseRules, SseScanner};
use sluice::{Cause, Outcome, TrackedStream};

use sluice_test_support::model::{Input, Model};

/// One step: the upstream's next answer (then one poll), or a caller action.
#[derive(Arbitrary, Debug, Clone)]
pub enum Step {
    Chunk(Vec<u8>),
    Error,
    End,
    Pending,
    Panic,
    MarkCompleted,
    MarkErrored,
    Finish,
    Drop,
}

/// A script and whether the chunks are scanned as OpenAI chat SSE.
#[derive(Arbitrary, Debug)]
pub struct Script {
    pub sse: bool,
    pub steps: Vec<Step>,
}

/// What the inner stream answers on its next poll.
enum Answer {
    Item(Result<Vec<u8>, ()>),
    End,
    Pending,
    Panic,
}

/// An upstream that answers what the script queued, and counts polls after its end.
struct Upstream {
    queue: Rc<RefCell<VecDeque<Answer>>>,
    ended: bool,
    polls_after_end: Rc<Cell<u32>>,
}

impl Stream for Upstream {
    type Item = Result<Vec<u8>, ()>;

    fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            self.polls_after_end.set(self.polls_after_end.get() + 1);
            return Poll::Ready(None);
        }
        let answer = self
            .queue
            .borrow_mut()
            .pop_front()
            .unwrap_or(Answer::Pending);
        match answer {
            Answer::Item(item) => Poll::Ready(Some(item)),
            Answer::End => {
                self.ended = true;
                Poll::Ready(None)
            }
            Answer::Pending => Poll::Pending,
            Answer::Panic => panic!("scripted panic"),
        }
    }
}

/// The model's outcome, with the progress and usage of a scanner fed the same
/// chunks when the stream is scanned (the model tracks the verdict only).
fn expect(model: &Model, scanner: &SseScanner, sse: bool) -> Outcome {
    if sse {
        let outcome = model.outcome().with_progress(scanner.progress());
        outcome.with_usage(scanner.usage())
    } else {
        model.outcome()
    }
}

/// Panics if the wrapper disagrees with the model. Scripted panics are replayed only
/// when `panics` is set (and are skipped otherwise).
pub fn replay(script: &Script, panics: bool) {
    let queue = Rc::new(RefCell::new(VecDeque::new()));
    let polls_after_end = Rc::new(Cell::new(0));
    let records = Rc::new(RefCell::new(Vec::new()));
    let upstream = Upstream {
        queue: queue.clone(),
        ended: false,
        polls_after_end: polls_after_end.clone(),
    };
    let sink = records.clone();
    let recorder = move |o: Outcome| sink.borrow_mut().push(o);
    let tracked = TrackedStream::new(upstream, recorder);
    let mut tracked = if script.sse {
        tracked.with_sse(SseRules::openai_chat())
    } else {
        tracked
    };
    let mut scanner = SseScanner::new(SseRules::openai_chat());

    let mut cx = Context::from_waker(Waker::noop());
    let mut model = Model::new(script.sse);
    let mut ended = false;
    let mut finish = false;
    for step in &script.steps {
        let answer = match step {
            Step::Chunk(b) => Answer::Item(Ok(b.clone())),
            Step::Error => Answer::Item(Err(())),
            Step::End => Answer::End,
            Step::Pending => Answer::Pending,
            Step::Panic if panics => Answer::Panic,
            Step::Panic => continue,
            Step::MarkCompleted => {
                tracked.mark_completed();
                model.feed(Input::Done(Cause::Marked));
                assert_eq!(tracked.outcome(), expect(&model, &scanner, script.sse));
                continue;
            }
            Step::MarkErrored => {
                tracked.mark_errored();
                model.feed(Input::Failed(Cause::Marked));
                assert_eq!(tracked.outcome(), expect(&model, &scanner, script.sse));
                continue;
            }
            Step::Finish => {
                finish = true;
                break;
            }
            Step::Drop => break,
        };
        let panicked = matches!(answer, Answer::Panic);
        queue.borrow_mut().push_back(answer);
        let polled = catch_unwind(AssertUnwindSafe(|| {
            Pin::new(&mut tracked).poll_next(&mut cx)
        }));
        let Ok(poll) = polled else {
            assert!(panicked && !ended, "only a scripted panic unwinds");
            queue.borrow_mut().clear();
            model.feed(Input::Panic);
            ended = true;
            assert_eq!(tracked.outcome(), expect(&model, &scanner, script.sse));
            continue;
        };
        if ended {
            queue.borrow_mut().clear();
            assert!(matches!(poll, Poll::Ready(None)), "fused after the end");
            continue;
        }
        match (step, poll) {
            (Step::Chunk(b), Poll::Ready(Some(Ok(item)))) => {
                assert_eq!(&item, b, "items pass through unchanged");
                model.feed(Input::Chunk(b.len()));
                match scanner.feed(b) {
                    Some(Signal::Done) if script.sse => model.feed(Input::Done(Cause::Done)),
                    Some(Signal::Failed) if script.sse => {
                        model.feed(Input::Failed(Cause::ErrorEvent))
                    }
                    _ => {}
                }
            }
            (Step::Error, Poll::Ready(Some(Err(())))) => model.feed(Input::Error),
            (Step::End, Poll::Ready(None)) => {
                model.feed(Input::End);
                ended = true;
            }
            (Step::Pending, Poll::Pending) => {}
            (step, poll) => panic!("{step:?} polled as {poll:?}"),
        }
        assert_eq!(tracked.outcome(), expect(&model, &scanner, script.sse));
    }
    let expected: Outcome = expect(&model, &scanner, script.sse);
    if finish {
        assert!(
            records.borrow().is_empty(),
            "nothing recorded before finish"
        );
        assert_eq!(tracked.finish(), expected, "finish returns what it records");
    } else {
        assert!(
            records.borrow().is_empty(),
            "nothing recorded before the end"
        );
        drop(tracked);
    }
    assert_eq!(*records.borrow(), [expected], "exactly one record");
    assert_eq!(polls_after_end.get(), 0, "never polled after the end");
}
