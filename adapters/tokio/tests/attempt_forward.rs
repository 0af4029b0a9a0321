//! A retry with `forward`: each attempt is held back to its commit
//! (`sluice::attempt::Attempt`), the one that fails before it is replaced, and the
//! committed one is taken apart: its held items go to the channel first, then
//! `forward_with` relays the rest with its own timers. The client reads the second
//! worker's bytes only; each worker hears one verdict.

use std::pin::Pin;
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use sluice::attempt::{Attempt, Commit};
use sluice::forward::{Ending, ForwardOptions};
use sluice::sse::SseRules;
use sluice::{Cause, Outcome, TrackedStream, Verdict};
use sluice_test_support::upstream::{DONE, Item, PING, TOKEN};
use tokio::sync::mpsc;

const ROLE: &str = "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\n";
const ERROR: &str = "data: {\"error\":{\"message\":\"oom\"}}\n\n";

#[tokio::test(start_paused = true)]
async fn a_failed_attempt_is_replaced_and_the_committed_one_is_forwarded() {
    let (verdicts, mut heard) = mpsc::unbounded_channel::<(usize, Outcome)>();
    let workers: [Vec<&'static str>; 2] = [
        vec![ROLE, PING, ERROR],
        vec![ROLE, PING, TOKEN, TOKEN, DONE],
    ];
    let (tx, mut rx) = mpsc::channel::<Item>(16);
    let client = tokio::spawn(async move {
        let mut read = String::new();
        while let Some(item) = rx.recv().await {
            read.push_str(item.expect("no error item"));
        }
        read
    });
    let mut forwarded = None;
    for (n, body) in workers.into_iter().enumerate() {
        let verdicts = verdicts.clone();
        let upstream = Box::pin(stream::iter(body).map(Ok));
        let tracked = TrackedStream::new(upstream, move |o: Outcome| {
            let _ = verdicts.send((n, o)); // read below
        })
        .with_sse(SseRules::openai_chat());
        let mut attempt = Attempt::new(tracked, 64 * 1024);
        let commit = tokio::time::timeout(Duration::from_secs(30), Pin::new(&mut attempt).commit())
            .await
            .expect("no first-token timeout here");
        match commit {
            Err(failed) => {
                assert_eq!((n, failed.outcome.cause), (0, Cause::ErrorEvent));
                continue;
            }
            Ok(commit) => assert_eq!((n, commit), (1, Commit::Progress)),
        }
        let (held, tracked) = attempt.into_parts();
        for item in held {
            tx.send(item).await.expect("the client reads");
        }
        forwarded = Some(sluice_tokio::forward_with(tracked, &tx, ForwardOptions::default()).await);
        break;
    }
    drop(tx);
    let forwarded = forwarded.expect("the second attempt committed");
    assert_eq!(
        (forwarded.ending, forwarded.outcome.verdict),
        (Ending::Completed, Verdict::Success)
    );
    assert_eq!(
        client.await.expect("client"),
        [ROLE, PING, TOKEN, TOKEN, DONE].concat()
    );
    drop(verdicts);
    let mut all = Vec::new();
    while let Some((n, o)) = heard.recv().await {
        all.push((n, o.verdict, o.cause));
    }
    assert_eq!(
        all,
        [
            (0, Verdict::Failure, Cause::ErrorEvent),
            (1, Verdict::Success, Cause::Done)
        ]
    );
}
