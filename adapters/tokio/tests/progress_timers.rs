//! The worker's timers judge progress, not bytes, on tokio's paused clock: keep-alives
//! satisfy neither the first-token nor the idle timeout, a timer after the done event
//! blames nobody, and the total deadline fires however busy the worker is.

mod common;

use std::time::Duration;

use common::Tokio;
use futures_util::stream::Stream;
use sluice::forward::{Ending, ForwardOptions, Forwarded};
use sluice::sse::SseRules;
use sluice::{Cause, Outcome, TrackedStream, Verdict};
use sluice_test_support::upstream::{ANTHROPIC_PING, DONE, Item, PING, TOKEN, summary, upstream};
use tokio::time::Instant;

/// Forwards `upstream` under `rules` and `options` to a client that reads everything;
/// returns what forwarding said and what was recorded.
async fn run(
    upstream: impl Stream<Item = Item>,
    rules: SseRules,
    options: ForwardOptions,
) -> (Forwarded, Outcome) {
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let reader = tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let (record, recorded) = tokio::sync::oneshot::channel();
    let recorder = move |o: Outcome| {
        let _ = record.send(o); // the test reads it below
    };
    let tracked = TrackedStream::new(upstream, recorder).with_sse(rules);
    let forwarded = sluice_tokio::forward_with(tracked, &tx, options).await;
    drop(tx);
    reader.await.expect("reader");
    (forwarded, recorded.await.expect("recorded once"))
}

#[tokio::test(start_paused = true)]
async fn comment_pings_do_not_satisfy_the_first_token_timeout() {
    let start = Instant::now();
    let options = ForwardOptions::default().first_token_timeout(Duration::from_secs(30));
    let pings = upstream::<Tokio>(&[], PING, Duration::from_secs(5));
    let (forwarded, recorded) = run(pings, SseRules::openai_chat(), options).await;
    assert_eq!(
        summary(&forwarded),
        (Ending::TimedOut, Verdict::Failure, Cause::FirstTokenTimeout)
    );
    assert_eq!(recorded, forwarded.outcome);
    assert_eq!(start.elapsed(), Duration::from_secs(30));
    // Pings at 5, 10, ..., 25 s passed through; the one due with the timer at 30 s
    // is not taken: a due timer wins.
    assert_eq!(forwarded.outcome.chunks, 5);
}

#[tokio::test(start_paused = true)]
async fn anthropic_pings_do_not_reset_the_idle_timeout() {
    // `message_start` is preamble, not progress: the first token starts the idle timer.
    const START: &[&str] = &[
        "event: message_start\ndata: {}\n\n",
        "event: content_block_delta\ndata: {\"delta\":{\"text\":\"hi\"}}\n\n",
    ];
    let options = ForwardOptions::default().idle_timeout(Duration::from_secs(10));
    let pings = upstream::<Tokio>(START, ANTHROPIC_PING, Duration::from_secs(3));
    let (forwarded, _) = run(pings, SseRules::anthropic(), options).await;
    assert_eq!(
        summary(&forwarded),
        (Ending::TimedOut, Verdict::Failure, Cause::IdleTimeout)
    );
}

#[tokio::test(start_paused = true)]
async fn without_rules_every_chunk_is_progress() {
    let options = ForwardOptions::default()
        .first_token_timeout(Duration::from_secs(30))
        .deadline(Duration::from_secs(100));
    let pings = upstream::<Tokio>(&[], PING, Duration::from_secs(5));
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let reader = tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let tracked = TrackedStream::new(pings, |_: Outcome| {});
    let forwarded = sluice_tokio::forward_with(tracked, &tx, options).await;
    drop(tx);
    reader.await.expect("reader");
    assert_eq!(
        summary(&forwarded),
        (Ending::TimedOut, Verdict::Failure, Cause::Deadline)
    );
}

#[tokio::test(start_paused = true)]
async fn a_timeout_after_done_keeps_the_success() {
    let start = Instant::now();
    const ANSWER: &[&str] = &[TOKEN, TOKEN, DONE];
    let options = ForwardOptions::default()
        .first_token_timeout(Duration::from_secs(30))
        .idle_timeout(Duration::from_secs(10));
    // After `[DONE]` the worker keeps the connection open, sending comments.
    let lingering = upstream::<Tokio>(ANSWER, PING, Duration::from_secs(4));
    let (forwarded, recorded) = run(lingering, SseRules::openai_chat(), options).await;
    assert_eq!(
        summary(&forwarded),
        (Ending::Completed, Verdict::Success, Cause::Done)
    );
    assert_eq!(recorded, forwarded.outcome);
    // Three items 4 s apart, then at most the idle time for the end.
    assert_eq!(start.elapsed(), Duration::from_secs(12 + 10));
}

#[tokio::test(start_paused = true)]
async fn the_deadline_fires_however_busy_the_worker_is() {
    let options = ForwardOptions::default()
        .idle_timeout(Duration::from_secs(5))
        .deadline(Duration::from_secs(60));
    let tokens = upstream::<Tokio>(&[], TOKEN, Duration::from_secs(1));
    let (forwarded, _) = run(tokens, SseRules::openai_chat(), options).await;
    assert_eq!(
        summary(&forwarded),
        (Ending::TimedOut, Verdict::Failure, Cause::Deadline)
    );
    assert_eq!(
        forwarded.outcome.chunks, 59,
        "one token a second; the one due with the deadline is not taken"
    );
}
