//! A `TrackedStream`'s own progress timers (`with_timers`), on tokio's paused clock:
//! the same rules as `forward`'s, wherever the stream is read (a response body, say).
//! Keep-alives neither satisfy the first-token timer nor reset the idle timer, the
//! deadline fires however busy the worker is, a due timer wins over a ready inner
//! stream, and after the done event a timer only ends the stream (Success).

mod common;

use std::future::Future;
use std::pin::{Pin, pin};
use std::task::{Context, Poll};
use std::time::Duration;

use common::Tokio;
use futures_util::stream::{self, Stream, StreamExt};
use sluice::forward::{Ending, ForwardOptions};
use sluice::sse::SseRules;
use sluice::timers::Timeouts;
use sluice::{Cause, Outcome, TrackedStream, Verdict};
use sluice_test_support::upstream::{ANTHROPIC_PING, DONE, Item, PING, TOKEN, summary, upstream};
use sluice_tokio::TokioTimer;
use tokio::time::Instant;

const SEC: Duration = Duration::from_secs(1);

/// Reads `inner`, tracked under `rules` with `timeouts` on tokio's timer, to its end;
/// returns the items read, the outcome recorded, and the time it took.
async fn read(
    inner: impl Stream<Item = Item>,
    rules: SseRules,
    timeouts: Timeouts,
) -> (Vec<&'static str>, Outcome, Duration) {
    let start = Instant::now();
    let (record, recorded) = tokio::sync::oneshot::channel();
    let recorder = move |o: Outcome| {
        let _ = record.send(o); // the test reads it below
    };
    let (items, elapsed) = {
        let tracked = TrackedStream::new(inner, recorder)
            .with_sse(rules)
            .with_timers(TokioTimer, timeouts);
        let mut tracked = pin!(tracked);
        let mut items = Vec::new();
        while let Some(item) = tracked.next().await {
            items.push(item.expect("no error items here"));
        }
        let elapsed = start.elapsed();
        assert!(tracked.next().await.is_none(), "fused");
        (items, elapsed)
        // The stream is dropped here, and records.
    };
    (items, recorded.await.expect("recorded once"), elapsed)
}

fn why(o: &Outcome) -> (Verdict, Cause) {
    (o.verdict, o.cause)
}

#[tokio::test(start_paused = true)]
async fn one_token_then_pings_forever_is_an_idle_timeout() {
    const FIRST: &[&str] = &[TOKEN];
    // A token at 1 s, then a comment every 5 s: 6, 11, 16, 21 s...
    let worker = upstream::<Tokio>(FIRST, PING, SEC);
    let worker = worker.enumerate().then(|(i, item)| async move {
        if i > 0 {
            tokio::time::sleep(SEC * 4).await;
        }
        item
    });
    let timeouts = Timeouts::new().idle(SEC * 20);
    let (items, outcome, elapsed) = read(worker, SseRules::openai_chat(), timeouts).await;
    assert_eq!(why(&outcome), (Verdict::Failure, Cause::IdleTimeout));
    // The pings at 6, 11 and 16 s passed and did not reset the timer; the one due at
    // 21 s with it did not: a due timer wins.
    assert_eq!(items, [TOKEN, PING, PING, PING]);
    assert_eq!(elapsed, SEC * 21);
}

#[tokio::test(start_paused = true)]
async fn anthropic_pings_do_not_reset_the_idle_timer() {
    const START: &[&str] = &["event: content_block_delta\ndata: {}\n\n"];
    let worker = upstream::<Tokio>(START, ANTHROPIC_PING, SEC * 3);
    let timeouts = Timeouts::new().idle(SEC * 10);
    let (items, outcome, elapsed) = read(worker, SseRules::anthropic(), timeouts).await;
    assert_eq!(why(&outcome), (Verdict::Failure, Cause::IdleTimeout));
    assert_eq!(elapsed, SEC * 13);
    assert_eq!(items.len(), 4, "the delta at 3 s, pings at 6, 9 and 12 s");
}

#[tokio::test(start_paused = true)]
async fn keep_alives_do_not_satisfy_the_first_token_timer() {
    let pings = upstream::<Tokio>(&[], PING, SEC * 5);
    let timeouts = Timeouts::new()
        .first_token(SEC * 30)
        .idle(SEC)
        .deadline(SEC * 600);
    let (items, outcome, elapsed) = read(pings, SseRules::openai_chat(), timeouts).await;
    assert_eq!(why(&outcome), (Verdict::Failure, Cause::FirstTokenTimeout));
    assert_eq!(elapsed, SEC * 30);
    assert_eq!(items.len(), 5, "pings at 5 to 25 s");
    assert_eq!(outcome.chunks, 5);
}

#[tokio::test(start_paused = true)]
async fn the_deadline_fires_however_busy_the_worker_is() {
    let tokens = upstream::<Tokio>(&[], TOKEN, SEC);
    let timeouts = Timeouts::new().idle(SEC * 5).deadline(SEC * 10);
    let (items, outcome, elapsed) = read(tokens, SseRules::openai_chat(), timeouts).await;
    assert_eq!(why(&outcome), (Verdict::Failure, Cause::Deadline));
    assert_eq!(elapsed, SEC * 10);
    assert_eq!(
        items.len(),
        9,
        "one a second; the one due with the deadline is late"
    );
}

#[tokio::test(start_paused = true)]
async fn done_then_a_hanging_upstream_is_a_success_after_the_idle_time() {
    let answer = stream::iter([Ok(TOKEN), Ok(DONE)]).chain(stream::pending());
    let timeouts = Timeouts::new().first_token(SEC).idle(SEC * 10);
    let (items, outcome, elapsed) = read(answer, SseRules::openai_chat(), timeouts).await;
    assert_eq!(why(&outcome), (Verdict::Success, Cause::Done));
    assert_eq!(items, [TOKEN, DONE]);
    assert_eq!(
        elapsed,
        SEC * 10,
        "the idle time bounds the wait for the end"
    );
}

/// `n` tokens `gap` apart, then nothing, forever.
fn tokens_then_silence(n: usize, gap: Duration) -> impl Stream<Item = Item> {
    stream::iter(0..n)
        .then(move |_| async move {
            tokio::time::sleep(gap).await;
            Ok(TOKEN)
        })
        .chain(stream::pending())
}

#[tokio::test(start_paused = true)]
async fn the_idle_timer_blames_exactly_the_idle_time_after_the_last_token() {
    // Tokens at 3, 6, ..., 30 s: each only notes a later due instant, and the tokio
    // sleep under the timer (first set for 13 s) is moved on when it fires, at 13, 22
    // and 31 s. The blame still comes exactly 10 s after the last token.
    let timeouts = Timeouts::new().idle(SEC * 10);
    let worker = tokens_then_silence(10, SEC * 3);
    let (items, outcome, elapsed) = read(worker, SseRules::openai_chat(), timeouts).await;
    assert_eq!(why(&outcome), (Verdict::Failure, Cause::IdleTimeout));
    assert_eq!(items.len(), 10);
    assert_eq!(elapsed, SEC * 40);
}

#[tokio::test(start_paused = true)]
async fn an_idle_time_shorter_than_the_first_token_s_moves_the_timer_earlier() {
    // The first-token timer would fire at 60 s; the token at 1 s makes it the idle
    // timer, due at 6 s: earlier, so the sleep is moved at once, not at 60 s.
    let timeouts = Timeouts::new().first_token(SEC * 60).idle(SEC * 5);
    let worker = tokens_then_silence(1, SEC);
    let (items, outcome, elapsed) = read(worker, SseRules::openai_chat(), timeouts).await;
    assert_eq!(why(&outcome), (Verdict::Failure, Cause::IdleTimeout));
    assert_eq!(items, [TOKEN]);
    assert_eq!(elapsed, SEC * 6);
}

#[tokio::test(start_paused = true)]
async fn timeouts_past_what_an_instant_holds_do_not_overflow() {
    let timeouts = Timeouts::new()
        .first_token(Duration::MAX)
        .idle(Duration::MAX);
    let answer = stream::iter([Ok(TOKEN), Ok(TOKEN), Ok(DONE)]);
    let (items, outcome, _) = read(answer, SseRules::openai_chat(), timeouts).await;
    assert_eq!(why(&outcome), (Verdict::Success, Cause::Done));
    assert_eq!(items, [TOKEN, TOKEN, DONE]);
}

#[tokio::test(start_paused = true)]
async fn without_rules_every_chunk_is_progress() {
    let pings = upstream::<Tokio>(&[], PING, SEC * 5);
    let timeouts = Timeouts::new().first_token(SEC * 6).idle(SEC * 6);
    let tracked = TrackedStream::new(pings, |_: Outcome| {}).with_timers(TokioTimer, timeouts);
    let mut tracked = pin!(tracked);
    for _ in 0..10 {
        assert!(tracked.next().await.is_some());
    }
    assert_eq!(
        tracked.outcome().verdict,
        Verdict::Abandoned,
        "no timer fired"
    );
    assert_eq!(tracked.progress(), 10);
}

/// Ready on every poll with a comment, each poll moving the paused clock by 1 ms.
struct AlwaysReady;

impl Stream for AlwaysReady {
    type Item = Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        // `advance` moves the clock at its first poll, then only yields.
        let _ = pin!(tokio::time::advance(Duration::from_millis(1))).poll(cx);
        Poll::Ready(Some(Ok(PING)))
    }
}

#[tokio::test(start_paused = true)]
async fn a_due_timer_wins_over_an_inner_stream_that_is_always_ready() {
    let timeouts = Timeouts::new().deadline(Duration::from_millis(200));
    let reading = read(AlwaysReady, SseRules::openai_chat(), timeouts);
    let (items, outcome, _) = tokio::time::timeout(SEC * 3600, reading)
        .await
        .expect("the deadline was starved");
    assert_eq!(why(&outcome), (Verdict::Failure, Cause::Deadline));
    // A millisecond a ping; tokio's driver fires the timer a few ticks late at worst.
    assert!((200..=400).contains(&items.len()), "{} items", items.len());
}

#[tokio::test(start_paused = true)]
async fn forward_reports_the_stream_s_own_timer_as_timed_out() {
    let pings = upstream::<Tokio>(&[], PING, SEC);
    let timeouts = Timeouts::new().first_token(SEC * 10);
    let tracked = TrackedStream::new(pings, |_: Outcome| {})
        .with_sse(SseRules::openai_chat())
        .with_timers(TokioTimer, timeouts);
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let reader = tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let forwarded = sluice_tokio::forward_with(tracked, &tx, ForwardOptions::default()).await;
    drop(tx);
    reader.await.expect("reader");
    assert_eq!(
        summary(&forwarded),
        (Ending::TimedOut, Verdict::Failure, Cause::FirstTokenTimeout)
    );
}
