//! `Ledger::on_end_with`: an end that judges itself (a gRPC status trailer), from every
//! state, against the reference model of SPEC section 1.

use std::cell::Cell;

use sluice::sse::SseRules;
use sluice::wrap::Ledger;
use sluice::{Cause, Outcome, Verdict};

use sluice_test_support::model::{Input, Model};

/// What comes before the end: nothing, a chunk, an in-band done, an error item.
const BEFORE: [&[u8]; 3] = [b"", b"data: {}\n\n", b"data: [DONE]\n\n"];

#[test]
fn every_verdict_from_every_state() {
    let verdicts = [Verdict::Success, Verdict::Failure, Verdict::Abandoned];
    for sse in [false, true] {
        for before in 0..4 {
            for verdict in verdicts {
                let seen = Cell::new(None);
                let mut ledger = Ledger::new(|o: Outcome| seen.set(Some(o)));
                let mut model = Model::new(false);
                if sse {
                    // The rules require `[DONE]`; `on_end_with` judges instead.
                    ledger = ledger.with_sse(SseRules::openai_chat());
                }
                match before {
                    0 => {}
                    3 => {
                        ledger.on_error();
                        model.feed(Input::Error);
                    }
                    i => {
                        ledger.on_chunk(BEFORE[i]);
                        model.feed(Input::Chunk(BEFORE[i].len()));
                        if sse && i == 2 {
                            model.feed(Input::Done(Cause::Done));
                        }
                    }
                }
                ledger.on_end_with(verdict, Cause::GrpcStatus);
                match verdict {
                    Verdict::Success => model.feed(Input::Done(Cause::GrpcStatus)),
                    Verdict::Failure => model.feed(Input::Failed(Cause::GrpcStatus)),
                    // No event: the machine stays where it is, with this cause if Active.
                    Verdict::Abandoned => {
                        if model.verdict() == Verdict::Abandoned {
                            model.cause = Cause::GrpcStatus;
                        }
                    }
                }
                assert!(ledger.is_ended());
                assert_eq!(seen.get(), None, "recorded before the drop");
                drop(ledger);
                let case = (sse, before, verdict);
                // Progress events are the scanner's: the one event before, if any.
                let progress = u64::from(sse && matches!(before, 1 | 2));
                let want = model.outcome().with_progress(progress);
                assert_eq!(seen.get(), Some(want), "{case:?}");
            }
        }
    }
}

#[test]
fn grpc_status_label() {
    assert_eq!(Cause::GrpcStatus.as_str(), "grpc_status");
}
