//! `sluice_smol::forward_with` passes the stream's failure event to the client when a
//! worker's timer fires: the client reads an OpenAI error object, and no `[DONE]`.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::Smol;
use futures_lite::stream::StreamExt;
use sluice::forward::{Ending, ForwardOptions};
use sluice::sse::SseRules;
use sluice::{Cause, Outcome, TrackedStream, Verdict};
use sluice_test_support::upstream::{PING, TOKEN, summary, upstream};

const MS: Duration = Duration::from_millis(1);

#[test]
fn an_idle_timeout_reaches_the_client_as_an_error_object() {
    const FIRST: &[&str] = &[TOKEN];
    let worker = upstream::<Smol>(FIRST, PING, MS * 2)
        .map(|item| item.map(|text| Bytes::from_static(text.as_bytes())));
    let tracked = TrackedStream::new(worker, |_: Outcome| {})
        .with_sse(SseRules::openai_chat())
        .with_failure_event();
    let options = ForwardOptions::default().idle_timeout(MS * 40);
    let (forwarded, text) = smol::block_on(async {
        let (tx, rx) = async_channel::bounded::<Result<Bytes, std::io::Error>>(16);
        let reader = smol::spawn(async move {
            let mut text = String::new();
            while let Ok(item) = rx.recv().await {
                let bytes = item.expect("no error items here");
                text.push_str(std::str::from_utf8(&bytes).expect("utf-8"));
            }
            text
        });
        let forwarded = sluice_smol::forward_with(tracked, &tx, options).await;
        drop(tx);
        (forwarded, reader.await)
    });
    assert_eq!(
        summary(&forwarded),
        (Ending::TimedOut, Verdict::Failure, Cause::IdleTimeout)
    );
    assert!(text.starts_with(TOKEN));
    let event = "data: {\"error\":{\"message\":\"upstream failed: idle_timeout\",\
                 \"type\":\"upstream_error\",\"code\":\"idle_timeout\"}}\n\n";
    assert!(text.ends_with(event), "{text}");
    assert!(!text.contains("[DONE]"));
}
