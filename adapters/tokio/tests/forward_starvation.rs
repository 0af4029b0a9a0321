//! A due timer wins (SPEC section 4): a deadline or an idle timer fires on time over an
//! upstream that is always ready, and a deadline that passes while a slow client keeps
//! an item waiting ends forwarding without blaming the worker. On tokio's paused clock.

use std::future::Future;
use std::pin::{Pin, pin};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::stream::Stream;
use sluice::forward::{Ending, ForwardOptions, Forwarded};
use sluice::sse::SseRules;
use sluice::{Cause, Outcome, TrackedStream, Verdict};
use tokio::time::Instant;

const MS: Duration = Duration::from_millis(1);
const TOKEN: &str = "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n";
const PING: &str = ": ping\n\n";

type Item = Result<&'static str, std::io::Error>;

/// An upstream that is ready on every poll: `first` once, then `every` forever, each
/// poll moving tokio's paused clock by `tick` as it answers (the worker is fast, the
/// network is never idle: the runtime never parks, so it would never move the clock
/// itself).
struct AlwaysReady {
    first: Option<&'static str>,
    every: &'static str,
    tick: Duration,
}

impl Stream for AlwaysReady {
    type Item = Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        if !self.tick.is_zero() {
            // `advance` moves the clock at its first poll, then only yields.
            let _ = pin!(tokio::time::advance(self.tick)).poll(cx);
        }
        let item = self.first.take().unwrap_or(self.every);
        Poll::Ready(Some(Ok(item)))
    }
}

fn always_ready(first: Option<&'static str>, every: &'static str) -> AlwaysReady {
    AlwaysReady {
        first,
        every,
        tick: MS,
    }
}

/// Forwards `upstream` (OpenAI chat rules) to a channel of `capacity` read by
/// `reader`, within a guard that fails the test rather than hang; returns what
/// forwarding said, checked against what was recorded.
async fn run<U, F>(
    upstream: U,
    options: ForwardOptions,
    capacity: usize,
    reader: impl FnOnce(tokio::sync::mpsc::Receiver<Item>) -> F,
) -> Forwarded
where
    U: Stream<Item = Item>,
    F: Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(capacity);
    let reader = tokio::spawn(reader(rx));
    let (record, recorded) = tokio::sync::oneshot::channel();
    let recorder = move |o: Outcome| {
        let _ = record.send(o); // the test reads it below
    };
    let tracked = TrackedStream::new(upstream, recorder).with_sse(SseRules::openai_chat());
    let forwarding = sluice_tokio::forward_with(tracked, &tx, options);
    let forwarded = tokio::time::timeout(Duration::from_secs(3600), forwarding)
        .await
        .expect("forwarding never ended: the timer was starved");
    drop(tx);
    reader.abort();
    assert_eq!(recorded.await.ok(), Some(forwarded.outcome));
    forwarded
}

/// A client that reads everything at once.
async fn read_all(mut rx: tokio::sync::mpsc::Receiver<Item>) {
    while rx.recv().await.is_some() {}
}

fn summary(f: &Forwarded) -> (Ending, Verdict, Cause) {
    (f.ending, f.outcome.verdict, f.outcome.cause)
}

#[tokio::test(start_paused = true)]
async fn the_deadline_fires_over_an_always_ready_upstream() {
    let start = Instant::now();
    let options = ForwardOptions::default().deadline(MS * 200);
    // Room for every item: the client never keeps one waiting (a deadline found due
    // while it does would be the client's).
    let forwarded = run(always_ready(None, TOKEN), options, 1024, read_all).await;
    assert_eq!(
        summary(&forwarded),
        (Ending::TimedOut, Verdict::Failure, Cause::Deadline)
    );
    // One millisecond per item; tokio fires its timers when its driver runs, at
    // worst a few scheduler ticks late.
    let chunks = forwarded.outcome.chunks;
    assert!((200..=400).contains(&chunks), "{chunks} items");
    assert!(start.elapsed() <= MS * 400, "{:?}", start.elapsed());
}

#[tokio::test(start_paused = true)]
async fn the_idle_timer_fires_over_always_ready_keep_alives() {
    let options = ForwardOptions::default()
        .idle_timeout(MS * 100)
        .deadline(Duration::from_secs(60));
    let forwarded = run(always_ready(Some(TOKEN), PING), options, 1024, read_all).await;
    assert_eq!(
        summary(&forwarded),
        (Ending::TimedOut, Verdict::Failure, Cause::IdleTimeout)
    );
    let chunks = forwarded.outcome.chunks;
    assert!((100..=300).contains(&chunks), "{chunks} items");
}

#[tokio::test(start_paused = true)]
async fn the_first_token_timer_fires_over_always_ready_keep_alives() {
    let options = ForwardOptions::default().first_token_timeout(MS * 100);
    let forwarded = run(always_ready(None, PING), options, 1024, read_all).await;
    assert_eq!(
        summary(&forwarded),
        (Ending::TimedOut, Verdict::Failure, Cause::FirstTokenTimeout)
    );
}

#[tokio::test(start_paused = true)]
async fn a_deadline_that_passes_on_a_client_that_never_reads_blames_the_client() {
    let start = Instant::now();
    let options = ForwardOptions::default().deadline(MS * 200);
    // The client keeps its receiver and never reads; the worker always has data.
    let never_reads = |rx| async move {
        let _rx = rx;
        std::future::pending::<()>().await
    };
    let tokens = AlwaysReady {
        first: None,
        every: TOKEN,
        tick: Duration::ZERO,
    };
    let forwarded = run(tokens, options, 1, never_reads).await;
    assert_eq!(
        summary(&forwarded),
        (Ending::TimedOut, Verdict::Abandoned, Cause::ClientStalled)
    );
    assert_eq!(start.elapsed(), MS * 200, "on time");
    assert_eq!(
        forwarded.outcome.chunks, 2,
        "one in the channel, one waiting"
    );
}

#[tokio::test(start_paused = true)]
async fn a_deadline_that_passes_on_a_slow_reader_blames_the_client() {
    let start = Instant::now();
    let options = ForwardOptions::default().deadline(MS * 1000);
    // One item every 300 ms, while the worker always has the next one ready.
    let slow = |mut rx: tokio::sync::mpsc::Receiver<Item>| async move {
        loop {
            tokio::time::sleep(MS * 300).await;
            if rx.recv().await.is_none() {
                return;
            }
        }
    };
    let tokens = AlwaysReady {
        first: None,
        every: TOKEN,
        tick: Duration::ZERO,
    };
    let forwarded = run(tokens, options, 1, slow).await;
    assert_eq!(
        summary(&forwarded),
        (Ending::TimedOut, Verdict::Abandoned, Cause::ClientStalled)
    );
    assert_eq!(start.elapsed(), MS * 1000, "on time");
    // Read at 300, 600 and 900 ms; one more in the channel, one waiting.
    assert_eq!(forwarded.outcome.chunks, 5);
}
