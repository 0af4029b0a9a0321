//! A `TrackedStream`'s own progress timers on smol's real timers (`SmolTimer`):
//! keep-alives do not reset the idle timer, and a deadline fires over an inner stream
//! that is always ready. Each scenario has one possible outcome whatever the machine's
//! speed.

mod common;

use std::pin::pin;
use std::time::Duration;

use common::Smol;
use futures_lite::stream::{self, Stream, StreamExt};
use sluice::sse::SseRules;
use sluice::timers::Timeouts;
use sluice::{Cause, Outcome, TrackedStream, Verdict};
use sluice_smol::SmolTimer;
use sluice_test_support::upstream::{Item, PING, TOKEN, upstream};

const MS: Duration = Duration::from_millis(1);

/// Reads `inner`, tracked with OpenAI chat rules and `timeouts`, to its end; returns
/// the items read and the outcome recorded.
fn read(inner: impl Stream<Item = Item>, timeouts: Timeouts) -> (usize, Outcome) {
    smol::block_on(async {
        let (record, recorded) = async_channel::bounded(1);
        let recorder = move |o: Outcome| {
            let _ = record.try_send(o); // the test reads it below
        };
        let items = {
            let tracked = TrackedStream::new(inner, recorder)
                .with_sse(SseRules::openai_chat())
                .with_timers(SmolTimer, timeouts);
            let mut tracked = pin!(tracked);
            let mut items = 0;
            while let Some(item) = tracked.next().await {
                item.expect("no error items here");
                items += 1;
            }
            items
            // The stream is dropped here, and records.
        };
        (items, recorded.recv().await.expect("recorded once"))
    })
}

#[test]
fn one_token_then_pings_forever_is_an_idle_timeout() {
    const FIRST: &[&str] = &[TOKEN];
    let worker = upstream::<Smol>(FIRST, PING, MS * 2);
    let (items, outcome) = read(worker, Timeouts::new().idle(MS * 40));
    assert_eq!(
        (outcome.verdict, outcome.cause),
        (Verdict::Failure, Cause::IdleTimeout)
    );
    assert!(items > 1, "the pings passed through");
}

#[test]
fn the_deadline_fires_over_an_inner_stream_that_is_always_ready() {
    let pings = stream::repeat(PING).map(Ok);
    let (_, outcome) = read(pings, Timeouts::new().deadline(MS * 30));
    assert_eq!(
        (outcome.verdict, outcome.cause),
        (Verdict::Failure, Cause::Deadline)
    );
}
