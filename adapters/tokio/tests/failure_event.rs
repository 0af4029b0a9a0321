//! `forward_with` passes the stream's failure event (`with_failure_event`) to the
//! client when a worker's timer fires, forward's own or the stream's: the client reads
//! an error in its API's dialect, and no `[DONE]`. On tokio's paused clock.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::Tokio;
use futures_util::stream::{Stream, StreamExt};
use sluice::forward::{Ending, ForwardOptions, Forwarded};
use sluice::sse::SseRules;
use sluice::timers::Timeouts;
use sluice::{Cause, Outcome, TrackedStream, Verdict};
use sluice_test_support::upstream::{PING, TOKEN, summary, upstream};
use sluice_tokio::TokioTimer;

const SEC: Duration = Duration::from_secs(1);

/// The worker: one token, then comments every 5 s, as `Bytes`.
fn worker() -> impl Stream<Item = Result<Bytes, std::io::Error>> {
    const FIRST: &[&str] = &[TOKEN];
    upstream::<Tokio>(FIRST, PING, SEC * 5)
        .map(|item| item.map(|text| Bytes::from_static(text.as_bytes())))
}

/// Forwards `tracked` with `options` to a client that reads everything; returns what
/// forwarding said and the client's text.
async fn run<S, W, X>(
    tracked: TrackedStream<S, fn(Outcome), W, X>,
    options: ForwardOptions,
) -> (Forwarded, String)
where
    S: Stream<Item = Result<Bytes, std::io::Error>>,
    W: sluice::timers::ProgressTimers,
    X: sluice::failure::FailureTail<Bytes, std::io::Error>,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    let reader = tokio::spawn(async move {
        let mut text = String::new();
        while let Some(item) = rx.recv().await {
            let bytes: Bytes = item.expect("no error items here");
            text.push_str(std::str::from_utf8(&bytes).expect("utf-8"));
        }
        text
    });
    let forwarded = sluice_tokio::forward_with(tracked, &tx, options).await;
    drop(tx);
    (forwarded, reader.await.expect("reader"))
}

const IDLE_EVENT: &str = "data: {\"error\":{\"message\":\"upstream failed: idle_timeout\",\
                          \"type\":\"upstream_error\",\"code\":\"idle_timeout\"}}\n\n";

#[tokio::test(start_paused = true)]
async fn forward_s_idle_timeout_reaches_the_client_as_an_error_object() {
    let tracked = TrackedStream::new(worker(), (|_| {}) as fn(Outcome))
        .with_sse(SseRules::openai_chat())
        .with_failure_event();
    let options = ForwardOptions::default().idle_timeout(SEC * 12);
    let (forwarded, text) = run(tracked, options).await;
    assert_eq!(
        summary(&forwarded),
        (Ending::TimedOut, Verdict::Failure, Cause::IdleTimeout)
    );
    // The token at 5 s, pings at 10 and 15 s, the timer at 17 s.
    assert_eq!(text, format!("{TOKEN}{PING}{PING}{IDLE_EVENT}"));
    assert!(!text.contains("[DONE]"));
}

#[tokio::test(start_paused = true)]
async fn the_stream_s_own_idle_timeout_reaches_the_client_too() {
    let tracked = TrackedStream::new(worker(), (|_| {}) as fn(Outcome))
        .with_sse(SseRules::openai_chat())
        .with_timers(TokioTimer, Timeouts::new().idle(SEC * 12))
        .with_failure_event();
    let (forwarded, text) = run(tracked, ForwardOptions::default()).await;
    assert_eq!(
        summary(&forwarded),
        (Ending::TimedOut, Verdict::Failure, Cause::IdleTimeout)
    );
    assert_eq!(text, format!("{TOKEN}{PING}{PING}{IDLE_EVENT}"));
}

#[tokio::test(start_paused = true)]
async fn without_the_option_the_client_gets_no_event() {
    let tracked =
        TrackedStream::new(worker(), (|_| {}) as fn(Outcome)).with_sse(SseRules::openai_chat());
    let options = ForwardOptions::default().idle_timeout(SEC * 12);
    let (forwarded, text) = run(tracked, options).await;
    assert_eq!(forwarded.outcome.cause, Cause::IdleTimeout);
    assert_eq!(text, format!("{TOKEN}{PING}{PING}"));
}
