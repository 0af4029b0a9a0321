//! The commit point (`sluice::attempt`): an attempt commits on its first progress, its
//! successful end or its byte bound; one that fails first is recorded at once and
//! none of its bytes reach the client; a lost hedge is Abandoned (`hedge_lost`).
//!
//! The property drives a retry loop over scripted workers, as a gateway does, and
//! checks that the client reads bytes of at most one attempt and that every attempt's
//! worker hears exactly one verdict.

use std::cell::RefCell;
use std::pin::pin;
use std::rc::Rc;
use std::time::Duration;

use futures_executor::block_on;
use futures_util::{StreamExt, stream};
use proptest::prelude::*;
use sluice::attempt::{Attempt, Commit};
use sluice::sse::SseRules;
use sluice::timers::{Timeouts, Timer};
use sluice::{Cause, Outcome, TrackedStream, Verdict};
use sluice_test_support::commit::{Expect, Mode, Piece, expect};

/// A piece as the tracked stream's item.
fn item(piece: Piece) -> Result<&'static [u8], &'static str> {
    match piece {
        Piece::ErrorItem => Err("reset"),
        piece => Ok(piece.bytes()),
    }
}

fn piece() -> impl Strategy<Value = Piece> {
    prop_oneof![
        3 => Just(Piece::Role),
        2 => Just(Piece::Ping),
        3 => Just(Piece::Token),
        1 => Just(Piece::ErrorObject),
        1 => Just(Piece::ErrorItem),
        1 => Just(Piece::Done),
    ]
}

type Heard = Rc<RefCell<Vec<(usize, Outcome)>>>;

/// Attempt `n` over `script`, its outcomes going to `heard`.
fn attempt(
    n: usize,
    script: &[Piece],
    heard: &Heard,
    limit: usize,
) -> Attempt<
    impl futures_core::Stream<Item = Result<&'static [u8], &'static str>> + use<>,
    impl sluice::Recorder + use<>,
> {
    let heard = heard.clone();
    let upstream = stream::iter(script.iter().map(|&p| item(p)).collect::<Vec<_>>());
    let tracked = TrackedStream::new(upstream, move |o: Outcome| heard.borrow_mut().push((n, o)))
        .with_sse(SseRules::openai_chat());
    Attempt::new(tracked, limit)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// A retry loop: each failed attempt is replaced by the next; the client reads
    /// `read` items of the committed one, then leaves.
    #[test]
    fn the_client_reads_at_most_one_attempt_and_every_worker_hears_once(
        scripts in prop::collection::vec(prop::collection::vec(piece(), 0..8), 1..5),
        limit in prop_oneof![Just(0usize), 1usize..200, Just(usize::MAX)],
        read in 0usize..12,
    ) {
        let heard: Heard = Rc::default();
        let mut client: Vec<u8> = Vec::new();
        let mut committed = None;
        for (n, script) in scripts.iter().enumerate() {
            let mut attempt = pin!(attempt(n, script, &heard, limit));
            let commit = block_on(attempt.as_mut().commit());
            match (commit, expect(Mode::Sse, script, limit)) {
                (Ok(commit), Expect::Commit(want)) => prop_assert_eq!(commit, want),
                (Err(failed), Expect::Fail(cause)) => {
                    prop_assert_eq!((failed.outcome.verdict, failed.outcome.cause), (Verdict::Failure, cause));
                    // Recorded at once, before the next attempt starts.
                    prop_assert_eq!(heard.borrow().last().copied(), Some((n, failed.outcome)));
                    if n + 1 < scripts.len() {
                        continue;
                    }
                    // No attempt left: this one's answer stands, and the client reads
                    // what failed it, none of what it held before.
                    let items: Vec<_> = block_on(attempt.as_mut().collect());
                    let told: Vec<u8> = items.iter().flat_map(|i| i.unwrap_or_default()).copied().collect();
                    // From the piece that failed it on: the rest passes through
                    // (an error item does not end a stream).
                    let from = script.iter().position(|p| matches!(p, Piece::ErrorObject | Piece::ErrorItem));
                    let rest = from.map_or(&[][..], |i| &script[i..]);
                    let want: Vec<u8> = rest.iter().flat_map(|p| p.bytes()).copied().collect();
                    prop_assert_eq!(told, want);
                    prop_assert_eq!(items.iter().any(Result::is_err), rest.contains(&Piece::ErrorItem));
                    break;
                }
                (got, want) => prop_assert!(false, "attempt {n}: got {got:?}, the rules say {want:?}"),
            }
            let items: Vec<_> = block_on(attempt.as_mut().take(read).collect());
            for item in items {
                client.extend_from_slice(item.unwrap_or_default());
            }
            committed = Some(n);
            break;
        }
        // Dropped: every attempt has recorded.
        let heard = heard.borrow();
        let tried = committed.map_or(scripts.len(), |n| n + 1);
        let mut who: Vec<usize> = heard.iter().map(|(n, _)| *n).collect();
        who.sort_unstable();
        prop_assert_eq!(who, (0..tried).collect::<Vec<_>>(), "one verdict per attempt");
        match committed {
            None => prop_assert!(client.is_empty()),
            Some(n) => {
                // A prefix of that attempt's bytes, from its first item on.
                let all: Vec<u8> = scripts[n].iter().flat_map(|p| p.bytes()).copied().collect();
                prop_assert!(all.starts_with(&client), "the client got bytes that attempt {n} did not send");
            }
        }
        for (n, outcome) in heard.iter() {
            if Some(*n) != committed {
                prop_assert_eq!(outcome.verdict, Verdict::Failure);
            }
        }
    }
}

#[test]
fn a_committed_attempt_yields_what_it_held_then_the_rest_in_order() {
    let heard: Heard = Rc::default();
    let script = [
        Piece::Role,
        Piece::Ping,
        Piece::Token,
        Piece::Token,
        Piece::Done,
    ];
    {
        let mut attempt = pin!(attempt(0, &script, &heard, usize::MAX));
        assert_eq!(block_on(attempt.as_mut().commit()), Ok(Commit::Progress));
        assert!(attempt.is_committed());
        assert_eq!(
            attempt.held_bytes(),
            [Piece::Role, Piece::Ping, Piece::Token]
                .iter()
                .map(|p| p.bytes().len())
                .sum::<usize>()
        );
        let sent: Vec<_> = block_on(attempt.as_mut().map(Result::unwrap).collect());
        assert_eq!(sent, script.map(Piece::bytes));
        assert_eq!(attempt.held_bytes(), 0);
        assert!(
            heard.borrow().is_empty(),
            "recorded only when dropped or finished"
        );
    }
    // Dropped: it records now.
    assert_eq!(heard.borrow()[0].1.verdict, Verdict::Success);
}

#[test]
fn the_bound_commits_a_worker_that_only_sends_preamble_and_pings() {
    let heard: Heard = Rc::default();
    let script = [Piece::Role, Piece::Ping, Piece::Ping, Piece::Ping];
    let limit = Piece::Role.bytes().len() + Piece::Ping.bytes().len();
    let mut attempt = pin!(attempt(0, &script, &heard, limit));
    assert_eq!(block_on(attempt.as_mut().commit()), Ok(Commit::Bound));
    assert_eq!(attempt.held_bytes(), limit);
}

#[test]
fn a_lost_hedge_is_abandoned_with_its_cause_and_records_once() {
    let heard: Heard = Rc::default();
    // A slow worker: its preamble, and nothing more yet.
    let upstream = stream::iter([Ok::<_, &str>(Piece::Role.bytes())]).chain(stream::pending());
    let rec = heard.clone();
    let tracked = TrackedStream::new(upstream, move |o: Outcome| rec.borrow_mut().push((0, o)))
        .with_sse(SseRules::openai_chat());
    let mut slow = Box::pin(Attempt::new(tracked, usize::MAX));
    let waker = futures_util::task::noop_waker();
    let mut cx = std::task::Context::from_waker(&waker);
    assert!(slow.as_mut().poll_commit(&mut cx).is_pending());
    assert_eq!(slow.held_bytes(), Piece::Role.bytes().len());
    let outcome = slow.as_mut().abandon(Cause::HedgeLost);
    assert_eq!(
        (outcome.verdict, outcome.cause),
        (Verdict::Abandoned, Cause::HedgeLost)
    );
    assert_eq!(slow.held_bytes(), 0);
    drop(slow);
    assert_eq!(
        heard.borrow().as_slice(),
        [(0, outcome)],
        "the drop records nothing more"
    );
}

#[test]
fn abandoning_an_attempt_that_already_ended_keeps_its_verdict() {
    let heard: Heard = Rc::default();
    let mut attempt = Box::pin(attempt(0, &[Piece::Token, Piece::Done], &heard, usize::MAX));
    let _ = block_on(attempt.as_mut().map(Result::unwrap).collect::<Vec<_>>());
    let outcome = attempt.as_mut().abandon(Cause::HedgeLost);
    assert_eq!(
        (outcome.verdict, outcome.cause),
        (Verdict::Success, Cause::Done)
    );
    drop(attempt);
    assert_eq!(heard.borrow().len(), 1);
}

#[test]
fn as_a_stream_a_failure_before_the_commit_yields_only_what_failed_it() {
    let heard: Heard = Rc::default();
    let script = [Piece::Role, Piece::ErrorObject];
    let first = attempt(0, &script, &heard, usize::MAX);
    let sent: Vec<_> = block_on(first.map(Result::unwrap).collect());
    assert_eq!(
        sent,
        [Piece::ErrorObject.bytes()],
        "the held preamble is dropped, the error event is not"
    );
    let script = [Piece::Role, Piece::ErrorItem];
    let second = attempt(1, &script, &heard, usize::MAX);
    let sent: Vec<_> = block_on(second.collect::<Vec<_>>());
    assert_eq!(sent, [Err("reset")]);
    let causes: Vec<_> = heard
        .borrow()
        .iter()
        .map(|(_, o)| (o.verdict, o.cause))
        .collect();
    assert_eq!(
        causes,
        [
            (Verdict::Failure, Cause::ErrorEvent),
            (Verdict::Failure, Cause::ErrorItem)
        ]
    );
}

#[test]
fn a_first_token_timeout_before_the_commit_fails_the_attempt() {
    /// A timer whose sleeps are all due at once.
    struct Late;
    impl Timer for Late {
        type Sleep = std::future::Ready<()>;
        fn sleep(&self, _: Duration) -> Self::Sleep {
            std::future::ready(())
        }
    }
    let heard: Heard = Rc::default();
    let rec = heard.clone();
    let pings = stream::repeat(Ok::<_, &str>(Piece::Ping.bytes()));
    let tracked = TrackedStream::new(pings, move |o: Outcome| rec.borrow_mut().push((0, o)))
        .with_sse(SseRules::openai_chat())
        .with_timers(Late, Timeouts::new().first_token(Duration::from_secs(1)));
    let mut attempt = pin!(Attempt::new(tracked, usize::MAX));
    let failed =
        block_on(attempt.as_mut().commit()).expect_err("the attempt fails before its commit");
    assert_eq!(failed.outcome.cause, Cause::FirstTokenTimeout);
    assert_eq!(heard.borrow().as_slice(), [(0, failed.outcome)]);
    // Settled: asking again reads nothing and answers the same.
    assert_eq!(
        block_on(attempt.as_mut().commit())
            .expect_err("the attempt fails before its commit")
            .outcome,
        failed.outcome
    );
}

#[test]
fn a_failure_event_stream_fails_before_the_commit_without_sending_it() {
    let heard: Heard = Rc::default();
    let rec = heard.clone();
    // Cut after the preamble: truncated; the failure event would follow.
    let upstream = stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from_static(
        Piece::Role.bytes(),
    ))]);
    let tracked = TrackedStream::new(upstream, move |o: Outcome| rec.borrow_mut().push((0, o)))
        .with_sse(SseRules::openai_chat())
        .with_failure_event::<bytes::Bytes, std::io::Error>();
    let mut attempt = pin!(Attempt::new(tracked, usize::MAX));
    let failed =
        block_on(attempt.as_mut().commit()).expect_err("the attempt fails before its commit");
    assert_eq!(failed.outcome.cause, Cause::Truncated);
    assert_eq!(heard.borrow().len(), 1);
}

#[test]
fn a_whole_attempt_holds_a_non_streaming_answer_to_its_end() {
    let heard: Heard = Rc::default();
    let rec = heard.clone();
    let body = [&b"{\"choices\":"[..], b"[]}"];
    let upstream = stream::iter(body.map(Ok::<_, &str>));
    let tracked = TrackedStream::new(upstream, move |o: Outcome| rec.borrow_mut().push((0, o)));
    let mut attempt = Box::pin(Attempt::whole(tracked, usize::MAX));
    assert_eq!(block_on(attempt.as_mut().commit()), Ok(Commit::End));
    assert_eq!(attempt.held_bytes(), 14, "all of it, held");
    // Cut after its first chunk: retryable, although a plain attempt would have
    // committed on that chunk.
    let rec = heard.clone();
    let upstream = stream::iter([Ok(body[0]), Err("reset")]);
    let tracked = TrackedStream::new(upstream, move |o: Outcome| rec.borrow_mut().push((1, o)));
    let mut cut = Box::pin(Attempt::whole(tracked, usize::MAX));
    let failed = block_on(cut.as_mut().commit()).expect_err("cut before its end");
    assert_eq!(failed.outcome.cause, Cause::ErrorItem);
    // Sent on as the answer: what failed it, none of the held chunk.
    let rest: Vec<_> = block_on(cut.as_mut().collect());
    assert_eq!(rest, [Err("reset")]);
}
