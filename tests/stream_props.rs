//! Properties of `TrackedStream` over generated inner streams that also return
//! `Pending` and panic, and over SSE bytes split at random.
//!
//! The inner stream follows a generated script: chunks, error items, `Pending` (waking
//! the caller's waker at once, or keeping it for the test to wake later), a panic, and
//! the end (also when the script runs out). The caller's side is generated too: polls,
//! `mark_completed`, `mark_errored`, waking a kept waker, then a drop or a `finish`.
//! A panic is either caught around each poll (the caller keeps the wrapper, polls it
//! again, drops or finishes it) or unwinds out of a closure that owns the wrapper (which
//! is then dropped while unwinding).
//!
//! Checked against a small reference model of SPEC section 1 (not `Tracker`): exactly
//! one outcome is recorded, with the model's verdict and counts; items pass through
//! unchanged (the same bytes) and in order; `Pending` passes through with its wakeup;
//! the inner stream is never polled after it ended or panicked; after a panic the
//! verdict is `Failure`.

use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Once};
use std::task::{Context, Poll, Wake, Waker};

use bytes::Bytes;
use futures_core::Stream;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use sluice::sse::SseRules;
use sluice::{Cause, Outcome, Terminal, TrackedStream, Verdict};

use sluice_test_support::model as spec;
use spec::Input;

/// What the inner stream does when polled.
#[derive(Debug, Clone)]
enum Inner {
    Chunk(Bytes),
    Error(u8),
    /// `Pending`, after waking the caller's waker.
    PendingWakeNow,
    /// `Pending`, keeping the caller's waker for the test to wake later.
    PendingWakeLater,
    Panic,
    End,
}

/// What the caller does.
#[derive(Debug, Clone, Copy)]
enum Act {
    Poll,
    MarkCompleted,
    MarkErrored,
    /// Wakes the waker the inner stream kept, if any.
    WakeKept,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exit {
    Drop,
    Finish,
}

/// Where a scripted panic is caught.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Catch {
    /// Around each poll: the caller keeps the wrapper.
    EachPoll,
    /// Around a closure that owns the wrapper: it is dropped while unwinding.
    Owner,
}

/// The payload of the scripted panics, so the panic hook can keep them quiet.
#[derive(Debug)]
struct ScriptedPanic;

/// Installs (once) a panic hook that stays silent for [`ScriptedPanic`] and defers
/// to the previous hook for anything else.
fn quiet_scripted_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !info.payload().is::<ScriptedPanic>() {
                previous(info);
            }
        }));
    });
}

/// A waker that counts its wakeups.
#[derive(Debug, Default)]
struct CountingWaker(AtomicUsize);

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// What the inner stream and the test both see.
#[derive(Debug, Default)]
struct Shared {
    polls_after_end: Cell<u32>,
    kept: RefCell<Option<Waker>>,
}

/// The inner stream: plays its script, then ends.
struct Scripted {
    script: std::vec::IntoIter<Inner>,
    ended: bool,
    shared: Rc<Shared>,
}

impl Stream for Scripted {
    type Item = Result<Bytes, u8>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            let n = &self.shared.polls_after_end;
            n.set(n.get() + 1);
            return Poll::Ready(None);
        }
        match self.script.next().unwrap_or(Inner::End) {
            Inner::Chunk(bytes) => Poll::Ready(Some(Ok(bytes))),
            Inner::Error(e) => Poll::Ready(Some(Err(e))),
            Inner::PendingWakeNow => {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Inner::PendingWakeLater => {
                *self.shared.kept.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
            Inner::Panic => {
                self.ended = true;
                std::panic::panic_any(ScriptedPanic)
            }
            Inner::End => {
                self.ended = true;
                Poll::Ready(None)
            }
        }
    }
}

/// The reference: what the wrapper should have done so far.
#[derive(Debug)]
struct Model {
    script: std::vec::IntoIter<Inner>,
    spec: spec::Model,
    /// The inner stream ended or panicked: polls give `None` and reach nobody.
    ended: bool,
    /// The inner stream panicked.
    panicked: bool,
}

impl Model {
    fn outcome(&self) -> Outcome {
        self.spec.outcome()
    }
}

type Tracked<R> = TrackedStream<Scripted, R>;

/// Plays the caller's acts on the wrapper, checking each against the model.
struct Driver {
    model: Model,
    shared: Rc<Shared>,
    waker: Arc<CountingWaker>,
    catch: Catch,
}

impl Driver {
    fn wakes(&self) -> usize {
        self.waker.0.load(Ordering::SeqCst)
    }

    fn act<R: sluice::Recorder>(
        &mut self,
        tracked: &mut Tracked<R>,
        act: Act,
    ) -> Result<(), TestCaseError> {
        match act {
            Act::MarkCompleted => {
                tracked.mark_completed();
                self.model.spec.feed(Input::Done(Cause::Marked));
            }
            Act::MarkErrored => {
                tracked.mark_errored();
                self.model.spec.feed(Input::Failed(Cause::Marked));
            }
            Act::WakeKept => {
                let kept = self.shared.kept.borrow_mut().take();
                if let Some(kept) = kept {
                    let ours = Waker::from(self.waker.clone());
                    prop_assert!(kept.will_wake(&ours), "the kept waker is not the caller's");
                    let before = self.wakes();
                    kept.wake();
                    prop_assert_eq!(self.wakes(), before + 1);
                }
            }
            Act::Poll => self.poll(tracked)?,
        }
        prop_assert_eq!(tracked.terminal(), self.model.spec.state);
        prop_assert_eq!(tracked.outcome(), self.model.outcome());
        Ok(())
    }

    fn poll<R: sluice::Recorder>(&mut self, tracked: &mut Tracked<R>) -> Result<(), TestCaseError> {
        let waker = Waker::from(self.waker.clone());
        let mut cx = Context::from_waker(&waker);
        let expected = if self.model.ended {
            Inner::End
        } else {
            self.model.script.next().unwrap_or(Inner::End)
        };
        if matches!(expected, Inner::Panic) {
            self.model.ended = true;
            self.model.spec.feed(Input::Panic);
            self.model.panicked = true;
        }
        let wakes = self.wakes();
        let got = match self.catch {
            Catch::EachPoll => {
                match catch_unwind(AssertUnwindSafe(|| {
                    Pin::new(&mut *tracked).poll_next(&mut cx)
                })) {
                    Ok(poll) => Some(poll),
                    Err(payload) => {
                        prop_assert!(payload.is::<ScriptedPanic>(), "an unscripted panic");
                        None
                    }
                }
            }
            // A panic unwinds out of here and drops the wrapper on its way.
            Catch::Owner => Some(Pin::new(&mut *tracked).poll_next(&mut cx)),
        };
        match (expected, got) {
            (Inner::Panic, None) => return Ok(()),
            (Inner::Chunk(e), Some(Poll::Ready(Some(Ok(g))))) => {
                prop_assert_eq!(&g, &e);
                prop_assert_eq!(g.as_ptr(), e.as_ptr(), "the chunk was copied");
                self.model.spec.feed(Input::Chunk(e.len()));
            }
            (Inner::Error(e), Some(Poll::Ready(Some(Err(g))))) => {
                prop_assert_eq!(g, e);
                self.model.spec.feed(Input::Error);
            }
            (Inner::PendingWakeNow, Some(Poll::Pending)) => {
                prop_assert_eq!(self.wakes(), wakes + 1, "the inner wakeup was lost");
            }
            (Inner::PendingWakeLater, Some(Poll::Pending)) => {
                prop_assert_eq!(self.wakes(), wakes);
                prop_assert!(self.shared.kept.borrow().is_some());
            }
            (Inner::End, Some(Poll::Ready(None))) => {
                if !self.model.ended {
                    self.model.ended = true;
                    self.model.spec.feed(Input::End);
                }
            }
            (expected, got) => {
                return Err(TestCaseError::fail(format!(
                    "expected {expected:?}, got {got:?}"
                )));
            }
        }
        Ok(())
    }
}

fn inner_strategy() -> impl Strategy<Value = Inner> {
    prop_oneof![
        6 => prop::collection::vec(any::<u8>(), 0..16).prop_map(|v| Inner::Chunk(Bytes::from(v))),
        1 => any::<u8>().prop_map(Inner::Error),
        2 => Just(Inner::PendingWakeNow),
        2 => Just(Inner::PendingWakeLater),
        1 => Just(Inner::Panic),
        1 => Just(Inner::End),
    ]
}

fn act_strategy() -> impl Strategy<Value = Act> {
    prop_oneof![
        8 => Just(Act::Poll),
        1 => Just(Act::MarkCompleted),
        1 => Just(Act::MarkErrored),
        2 => Just(Act::WakeKept),
    ]
}

/// Runs one generated case.
fn check(
    script: Vec<Inner>,
    acts: Vec<Act>,
    exit: Exit,
    catch: Catch,
) -> Result<(), TestCaseError> {
    quiet_scripted_panics();
    let shared = Rc::new(Shared::default());
    let records: Rc<RefCell<Vec<Outcome>>> = Rc::default();
    let sink = records.clone();
    let mut tracked = TrackedStream::new(
        Scripted {
            script: script.clone().into_iter(),
            ended: false,
            shared: shared.clone(),
        },
        move |o: Outcome| sink.borrow_mut().push(o),
    );
    let mut driver = Driver {
        model: Model {
            script: script.into_iter(),
            spec: spec::Model::new(false),
            ended: false,
            panicked: false,
        },
        shared: shared.clone(),
        waker: Arc::default(),
        catch,
    };
    let mut finished = None;
    let run = catch_unwind(AssertUnwindSafe(|| -> Result<(), TestCaseError> {
        for act in acts {
            driver.act(&mut tracked, act)?;
            prop_assert!(records.borrow().is_empty(), "recorded before the end");
        }
        match exit {
            Exit::Drop => drop(tracked),
            Exit::Finish => finished = Some(tracked.finish()),
        }
        Ok(())
    }));
    match run {
        Ok(result) => result?,
        Err(payload) => {
            prop_assert!(payload.is::<ScriptedPanic>(), "an unscripted panic");
            prop_assert_eq!(catch, Catch::Owner, "a panic escaped the per-poll catch");
        }
    }
    let model = &driver.model;
    prop_assert_eq!(
        shared.polls_after_end.get(),
        0,
        "inner polled after its end"
    );
    prop_assert_eq!(
        &*records.borrow(),
        &[model.outcome()],
        "one record, as modelled"
    );
    if let Some(returned) = finished {
        prop_assert_eq!(returned, model.outcome());
    }
    if model.panicked {
        prop_assert_eq!(records.borrow()[0].verdict, Verdict::Failure);
    }
    Ok(())
}

/// `data: [DONE]` (with the given line end) after some events that are not done.
fn sse_case() -> impl Strategy<Value = (Vec<u8>, usize)> {
    const EOLS: &[&[u8]] = &[b"\n", b"\r\n", b"\r"];
    const NOISE: &[&[u8]] = &[
        b"data: {\"text\":\"data: [DONE]\"}\n\n",
        b": [DONE]\n",
        b"event: x\ndata: y\n\n",
        b"data: [DONE]x\n\n",
        b"data:  [DONE]\r\n\r\n",
        b"data\n\n",
        b"id: [DONE]\rretry: 1\r\r",
    ];
    (
        prop::collection::vec(prop::sample::select(NOISE), 0..5),
        prop::sample::select(EOLS),
    )
        .prop_map(|(noise, eol)| {
            let mut bytes = noise.concat();
            bytes.extend_from_slice(b"data: [DONE]");
            bytes.extend_from_slice(eol);
            // The blank line's first byte dispatches the event.
            let dispatch = bytes.len();
            bytes.extend_from_slice(eol);
            (bytes, dispatch)
        })
}

/// Splits `bytes` at the given cut points (any order, repeats allowed).
fn split(bytes: &[u8], mut cuts: Vec<usize>) -> Vec<Bytes> {
    cuts.iter_mut().for_each(|c| *c %= bytes.len() + 1);
    cuts.extend([0, bytes.len()]);
    cuts.sort_unstable();
    cuts.dedup();
    cuts.windows(2)
        .map(|w| Bytes::copy_from_slice(&bytes[w[0]..w[1]]))
        .collect()
}

/// Feeds the chunks (then, if `error_after`, an error item) without ever reaching the
/// end; checks the terminal after each chunk, then drops. Returns the one record.
fn sse_run(chunks: &[Bytes], dispatch: usize, error_after: bool) -> Result<Outcome, TestCaseError> {
    let records: Rc<RefCell<Vec<Outcome>>> = Rc::default();
    let sink = records.clone();
    let mut script: Vec<Inner> = chunks.iter().cloned().map(Inner::Chunk).collect();
    if error_after {
        script.push(Inner::Error(7));
    }
    let polls = script.len();
    // Never played: the client leaves before the end.
    script.push(Inner::End);
    let mut tracked = TrackedStream::new(
        Scripted {
            script: script.into_iter(),
            ended: false,
            shared: Rc::default(),
        },
        move |o: Outcome| sink.borrow_mut().push(o),
    )
    .with_sse(SseRules::openai_chat());
    let mut cx = Context::from_waker(Waker::noop());
    let mut seen = 0;
    for i in 0..polls {
        let poll = Pin::new(&mut tracked).poll_next(&mut cx);
        if let Some(chunk) = chunks.get(i) {
            prop_assert!(matches!(&poll, Poll::Ready(Some(Ok(c))) if c == chunk));
            seen += chunk.len();
            let expected = if seen > dispatch {
                Terminal::Completed
            } else {
                Terminal::Active
            };
            prop_assert_eq!(tracked.terminal(), expected, "after {} bytes", seen);
        } else {
            prop_assert!(matches!(poll, Poll::Ready(Some(Err(7)))));
        }
    }
    drop(tracked);
    let records = records.borrow();
    prop_assert_eq!(records.len(), 1);
    Ok(records[0])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4_000))]

    #[test]
    fn one_record_items_in_order_and_failure_after_a_panic(
        script in prop::collection::vec(inner_strategy(), 0..12),
        acts in prop::collection::vec(act_strategy(), 0..24),
        exit in prop_oneof![Just(Exit::Drop), Just(Exit::Finish)],
        catch in prop_oneof![Just(Catch::EachPoll), Just(Catch::Owner)],
    ) {
        check(script, acts, exit, catch)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1_000))]

    #[test]
    fn sse_done_split_anywhere_then_dropped_is_success(
        (bytes, dispatch) in sse_case(),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let chunks = split(&bytes, cuts);
        // The progress events of the whole input at once: the same however split.
        let mut whole = sluice::sse::SseScanner::new(SseRules::openai_chat());
        whole.feed(&bytes);
        let progress = whole.progress();
        let outcome = sse_run(&chunks, dispatch, false)?;
        prop_assert_eq!(outcome, Outcome::new(Verdict::Success, Cause::Done, chunks.len() as u64, bytes.len() as u64).with_progress(progress));
        let outcome = sse_run(&chunks, dispatch, true)?;
        prop_assert_eq!(outcome, Outcome::new(Verdict::Failure, Cause::ErrorItem, chunks.len() as u64, bytes.len() as u64).with_progress(progress));
    }
}

/// A panic, caught by the caller, then the wrapper dropped without another poll:
/// Failure (the verdict is settled in `Drop`).
#[test]
fn a_caught_panic_then_drop_is_failure() {
    quiet_scripted_panics();
    for then_mark_completed in [false, true] {
        let record = Rc::new(Cell::new(None));
        let sink = record.clone();
        let mut tracked = TrackedStream::new(
            Scripted {
                script: vec![Inner::Chunk(Bytes::from_static(b"x")), Inner::Panic].into_iter(),
                ended: false,
                shared: Rc::default(),
            },
            move |o: Outcome| sink.set(Some(o)),
        );
        let mut cx = Context::from_waker(Waker::noop());
        assert!(matches!(
            Pin::new(&mut tracked).poll_next(&mut cx),
            Poll::Ready(Some(Ok(_)))
        ));
        let caught = catch_unwind(AssertUnwindSafe(|| {
            Pin::new(&mut tracked).poll_next(&mut cx)
        }));
        assert!(caught.is_err());
        if then_mark_completed {
            tracked.mark_completed();
        }
        drop(tracked);
        assert_eq!(
            record.get(),
            Some(Outcome::new(Verdict::Failure, Cause::Panic, 1, 1))
        );
    }
}

/// After a caught panic, what the wrapper says about itself should match what it
/// will record.
#[test]
fn terminal_after_a_caught_panic_is_errored() {
    quiet_scripted_panics();
    let record = Rc::new(Cell::new(None));
    let sink = record.clone();
    let mut tracked = TrackedStream::new(
        Scripted {
            script: vec![Inner::Panic].into_iter(),
            ended: false,
            shared: Rc::default(),
        },
        move |o: Outcome| sink.set(Some(o)),
    );
    let mut cx = Context::from_waker(Waker::noop());
    let caught = catch_unwind(AssertUnwindSafe(|| {
        Pin::new(&mut tracked).poll_next(&mut cx)
    }));
    assert!(caught.is_err());
    let said = (tracked.terminal(), tracked.outcome());
    drop(tracked);
    let recorded = record.get().expect("recorded at drop");
    assert_eq!(recorded.verdict, Verdict::Failure);
    assert_eq!(said, (Terminal::Errored, recorded));
}
