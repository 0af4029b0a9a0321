//! Every ordering of up to 5 frames through a real `TrackedBody`, against the shared
//! reference model of SPEC section 1 (`sluice_test_support::model`), plain and as gRPC.
//!
//! The inner body yields, one per poll of the wrapper: a data frame (held in two
//! slices, so the non-contiguous path is scanned), a data frame after which
//! `is_end_stream()` turns true, a trailers frame (`grpc-status` 0, 14 or 3), an error
//! frame, the end (`None`), or a panic. After each sequence the wrapper is dropped or
//! `finish`ed. Checked: the outcome (verdict, cause, counts) equals the model's,
//! exactly one outcome is recorded, frames pass through unchanged (the same bytes,
//! not a copy), the inner body is never polled after its end, and the wrapper
//! reports the end (`is_end_stream`, `None`) without another inner poll. A panic is
//! caught either around the poll (the wrapper lives on) or around the whole sequence
//! (the wrapper is dropped while unwinding).

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Once;
use std::task::{Context, Poll, Waker};

use bytes::buf::Chain;
use bytes::{Buf, Bytes};
use http::{HeaderMap, HeaderValue};
use http_body::{Body, Frame, SizeHint};
use sluice::{Cause, Outcome, Recorder, Verdict};
use sluice_http::{GrpcPolicy, TrackedBody};

use sluice_test_support::model::{Input, Model};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Data,
    DataLast,
    Trailers(u8),
    Error,
    End,
    Panic,
}

const STEPS: [Step; 8] = [
    Step::Data,
    Step::DataLast,
    Step::Trailers(0),
    Step::Trailers(14),
    Step::Trailers(3),
    Step::Error,
    Step::End,
    Step::Panic,
];
const MAX_LEN: usize = 5;
const PAYLOADS: [&[u8]; MAX_LEN] = [b"", b"a", b"bc", b"def", b"ghijk"];
const PANIC: &str = "scripted panic";

type Data = Chain<Bytes, Bytes>;

fn payload(i: usize) -> Data {
    let p = PAYLOADS[i];
    Bytes::from_static(&p[..p.len() / 2]).chain(Bytes::from_static(&p[p.len() / 2..]))
}

/// The inner body: one scripted frame per poll; counts polls after its end.
struct Scripted<'a> {
    script: &'a [Step],
    at: usize,
    ended: bool,
    polls_after_end: &'a Cell<u32>,
}

impl Body for Scripted<'_> {
    type Data = Data;
    type Error = usize;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Data>, usize>>> {
        if self.ended {
            self.polls_after_end.set(self.polls_after_end.get() + 1);
            return Poll::Ready(None);
        }
        let i = self.at;
        self.at += 1;
        let step = self.script[i];
        Poll::Ready(match step {
            Step::Data | Step::DataLast => {
                self.ended = step == Step::DataLast;
                Some(Ok(Frame::data(payload(i))))
            }
            Step::Trailers(code) => {
                self.ended = true;
                let mut trailers = HeaderMap::new();
                let value = HeaderValue::from_str(&code.to_string()).expect("value");
                trailers.insert("grpc-status", value);
                Some(Ok(Frame::trailers(trailers)))
            }
            Step::Error => Some(Err(i)),
            Step::End => {
                self.ended = true;
                None
            }
            Step::Panic => std::panic::panic_any(PANIC),
        })
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(7)
    }
}

struct Count<'a>(&'a Cell<u32>, &'a Cell<Option<Outcome>>);

impl Recorder for Count<'_> {
    fn record(self, outcome: Outcome) {
        self.0.set(self.0.get() + 1);
        self.1.set(Some(outcome));
    }
}

/// The model's view of a step; `true` when the step ends the body.
fn feed(model: &mut Model, grpc: bool, i: usize, step: Step) -> bool {
    let policy = GrpcPolicy::default();
    let end = |model: &mut Model| match grpc {
        true => model.feed(Input::Failed(Cause::Truncated)),
        false => model.feed(Input::End),
    };
    match step {
        Step::Data => model.feed(Input::Chunk(PAYLOADS[i].len())),
        Step::DataLast => {
            model.feed(Input::Chunk(PAYLOADS[i].len()));
            end(model);
        }
        Step::Trailers(code) if grpc => match policy.classify(code.into()) {
            Verdict::Success => model.feed(Input::Done(Cause::GrpcStatus)),
            Verdict::Failure => model.feed(Input::Failed(Cause::GrpcStatus)),
            Verdict::Abandoned => {
                if model.verdict() == Verdict::Abandoned {
                    model.cause = Cause::GrpcStatus;
                }
            }
        },
        Step::Trailers(_) => model.feed(Input::End),
        Step::Error => model.feed(Input::Error),
        Step::End => end(model),
        Step::Panic => model.feed(Input::Panic),
    }
    !matches!(step, Step::Data | Step::Error)
}

/// How the panic is caught.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Catch {
    /// Around each poll; the wrapper is dropped (or finished) later.
    Poll,
    /// Around the whole run; the wrapper is dropped while unwinding.
    Run,
}

fn run(script: &[Step], grpc: bool, finish: bool, catch: Catch) {
    let polls_after_end = Cell::new(0);
    let records = Cell::new(0);
    let seen = Cell::new(None);
    let mut model = Model::new(false);
    let case = format!("{script:?} grpc={grpc} finish={finish} catch={catch:?}");
    let mut ended = false;
    let outer = catch_unwind(AssertUnwindSafe(|| {
        let inner = Scripted {
            script,
            at: 0,
            ended: false,
            polls_after_end: &polls_after_end,
        };
        let mut body = TrackedBody::new(inner, Count(&records, &seen));
        if grpc {
            body = body.with_grpc(GrpcPolicy::default());
        }
        let mut body = Box::pin(body);
        let mut cx = Context::from_waker(Waker::noop());
        for (i, &step) in script.iter().enumerate() {
            let poll = match catch {
                Catch::Run => body.as_mut().poll_frame(&mut cx),
                Catch::Poll => {
                    let polled =
                        catch_unwind(AssertUnwindSafe(|| body.as_mut().poll_frame(&mut cx)));
                    match polled {
                        Ok(poll) => poll,
                        Err(_) => {
                            assert_eq!(step, Step::Panic, "{case}");
                            assert!(!ended);
                            ended = feed(&mut model, grpc, i, step);
                            continue;
                        }
                    }
                }
            };
            if ended {
                assert!(matches!(poll, Poll::Ready(None)), "{case}: after the end");
                continue;
            }
            // An error right behind a data frame waits one `Pending` (a server writes
            // the frame out then), changing nothing; then it comes.
            let poll = match step == Step::Error && i > 0 && script[i - 1] == Step::Data {
                true => {
                    assert!(
                        poll.is_pending(),
                        "{case}: step {i} gave {poll:?}, not a turn"
                    );
                    assert_eq!(body.outcome(), model.outcome(), "{case}: in the turn");
                    body.as_mut().poll_frame(&mut cx)
                }
                false => poll,
            };
            match (&poll, step) {
                (Poll::Ready(Some(Ok(frame))), Step::Data | Step::DataLast) => {
                    let data = frame.data_ref().expect("a data frame");
                    let want = payload(i);
                    assert_eq!(
                        data.first_ref().as_ptr(),
                        want.first_ref().as_ptr(),
                        "{case}"
                    );
                    assert_eq!(data.remaining(), want.remaining(), "{case}");
                }
                (Poll::Ready(Some(Ok(frame))), Step::Trailers(_)) => assert!(frame.is_trailers()),
                (Poll::Ready(Some(Err(e))), Step::Error) => assert_eq!(*e, i, "{case}"),
                (Poll::Ready(None), Step::End) => {}
                (other, _) => panic!("{case}: step {i} gave {other:?}"),
            }
            ended = feed(&mut model, grpc, i, step);
            assert_eq!(body.is_end_stream(), ended, "{case}: is_end_stream at {i}");
            if ended {
                assert_eq!(body.size_hint().exact(), Some(0), "{case}");
            } else {
                assert_eq!(body.size_hint().exact(), Some(7), "{case}");
            }
            assert_eq!(records.get(), 0, "{case}: recorded before the drop");
            assert_eq!(body.outcome(), model.outcome(), "{case}: outcome at {i}");
        }
        if ended {
            // Fused: polled again, the wrapper answers `None` itself.
            assert!(matches!(
                body.as_mut().poll_frame(&mut cx),
                Poll::Ready(None)
            ));
        }
        if finish {
            // `finish` needs the value: the test body is `Unpin`.
            let body = Pin::into_inner(body);
            assert_eq!(body.finish(), model.outcome(), "{case}");
        }
    }));
    match outer {
        Ok(()) => {}
        Err(payload) => {
            let ours = payload.downcast_ref::<&str>() == Some(&PANIC);
            if !ours || catch != Catch::Run {
                std::panic::resume_unwind(payload);
            }
            let at = script
                .iter()
                .position(|s| *s == Step::Panic)
                .expect("a panic step");
            let before_end = !script[..at]
                .iter()
                .enumerate()
                .any(|(i, s)| feed(&mut Model::new(false), grpc, i, *s));
            assert!(
                before_end,
                "{case}: the inner body was polled after its end"
            );
            // Re-run the model up to the panic.
            model = Model::new(false);
            for (i, &s) in script[..=at].iter().enumerate() {
                feed(&mut model, grpc, i, s);
            }
        }
    }
    assert_eq!(
        polls_after_end.get(),
        0,
        "{case}: inner polled after its end"
    );
    assert_eq!(records.get(), 1, "{case}: records");
    assert_eq!(seen.get(), Some(model.outcome()), "{case}");
}

fn quiet_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.payload().downcast_ref::<&str>() != Some(&PANIC) {
                default(info);
            }
        }));
    });
}

#[test]
fn every_ordering_matches_the_model() {
    quiet_panics();
    let mut runs = 0;
    let mut script = Vec::new();
    fn each(script: &mut Vec<Step>, f: &mut dyn FnMut(&[Step])) {
        f(script);
        if script.len() == MAX_LEN {
            return;
        }
        for step in STEPS {
            script.push(step);
            each(script, f);
            script.pop();
        }
    }
    each(&mut script, &mut |s| {
        for grpc in [false, true] {
            for finish in [false, true] {
                for catch in [Catch::Poll, Catch::Run] {
                    run(s, grpc, finish, catch);
                    runs += 1;
                }
            }
        }
    });
    assert_eq!(runs, 8 * (1 + 8 + 64 + 512 + 4096 + 32768));
}
