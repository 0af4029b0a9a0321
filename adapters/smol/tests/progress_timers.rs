//! The worker's timers judge progress, not bytes, on smol's real timers (`async-io`
//! has no paused clock): keep-alives satisfy neither the first-token nor the idle
//! timeout, a timer after the done event blames nobody, and the deadline fires however
//! busy the worker is. Each scenario has one possible outcome whatever the machine's
//! speed (pings and tokens never stop coming), so nothing here races the clock.

mod common;

use std::time::Duration;

use common::Smol;
use futures_lite::stream::Stream;
use sluice::forward::{Ending, ForwardOptions, Forwarded};
use sluice::sse::SseRules;
use sluice::{Cause, Outcome, TrackedStream, Verdict};
use sluice_test_support::upstream::{ANTHROPIC_PING, DONE, Item, PING, TOKEN, summary, upstream};

const MS: Duration = Duration::from_millis(1);

/// Forwards `upstream` under `rules` and `options` to a client that reads everything.
fn run(upstream: impl Stream<Item = Item>, rules: SseRules, options: ForwardOptions) -> Forwarded {
    smol::block_on(async {
        let (tx, rx) = async_channel::bounded(4);
        let reader = smol::spawn(async move { while rx.recv().await.is_ok() {} });
        let (record, recorded) = async_channel::bounded(1);
        let recorder = move |o: Outcome| {
            let _ = record.try_send(o); // the test reads it below
        };
        let tracked = TrackedStream::new(upstream, recorder).with_sse(rules);
        let forwarded = sluice_smol::forward_with(tracked, &tx, options).await;
        drop(tx);
        reader.await;
        assert_eq!(recorded.recv().await.ok(), Some(forwarded.outcome));
        forwarded
    })
}

#[test]
fn comment_pings_do_not_satisfy_the_first_token_timeout() {
    let options = ForwardOptions::default().first_token_timeout(MS * 40);
    let forwarded = run(
        upstream::<Smol>(&[], PING, MS * 2),
        SseRules::openai_chat(),
        options,
    );
    assert_eq!(
        summary(&forwarded),
        (Ending::TimedOut, Verdict::Failure, Cause::FirstTokenTimeout)
    );
}

#[test]
fn anthropic_pings_do_not_reset_the_idle_timeout() {
    // `message_start` is preamble, not progress: the first token starts the idle timer.
    const START: &[&str] = &[
        "event: message_start\ndata: {}\n\n",
        "event: content_block_delta\ndata: {\"delta\":{\"text\":\"hi\"}}\n\n",
    ];
    let options = ForwardOptions::default().idle_timeout(MS * 40);
    let pings = upstream::<Smol>(START, ANTHROPIC_PING, MS * 2);
    let forwarded = run(pings, SseRules::anthropic(), options);
    assert_eq!(
        summary(&forwarded),
        (Ending::TimedOut, Verdict::Failure, Cause::IdleTimeout)
    );
}

#[test]
fn a_timeout_after_done_keeps_the_success() {
    const ANSWER: &[&str] = &[TOKEN, DONE];
    let options = ForwardOptions::default().idle_timeout(MS * 40);
    let forwarded = run(
        upstream::<Smol>(ANSWER, PING, MS * 2),
        SseRules::openai_chat(),
        options,
    );
    assert_eq!(
        summary(&forwarded),
        (Ending::Completed, Verdict::Success, Cause::Done)
    );
}

#[test]
fn the_deadline_fires_however_busy_the_worker_is() {
    let options = ForwardOptions::default()
        .idle_timeout(Duration::from_secs(60))
        .deadline(MS * 50);
    let forwarded = run(
        upstream::<Smol>(&[], TOKEN, MS),
        SseRules::openai_chat(),
        options,
    );
    assert_eq!(
        summary(&forwarded),
        (Ending::TimedOut, Verdict::Failure, Cause::Deadline)
    );
}
