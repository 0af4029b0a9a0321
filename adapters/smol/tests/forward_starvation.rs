//! A due timer wins (SPEC section 4), on smol's real timers: a deadline or an idle
//! timer fires over an upstream that is always ready, and a deadline that passes while
//! a client that never reads keeps an item waiting ends forwarding without blaming the
//! worker. Each scenario has one possible outcome whatever the machine's speed; a
//! guard fails the test (rather than hang) if a timer is starved.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_lite::future;
use futures_lite::stream::Stream;
use sluice::forward::{Ending, ForwardOptions, Forwarded};
use sluice::sse::SseRules;
use sluice::{Cause, Outcome, TrackedStream, Verdict};

const MS: Duration = Duration::from_millis(1);
const TOKEN: &str = "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n";
const PING: &str = ": ping\n\n";

type Item = Result<&'static str, std::io::Error>;

/// Ready on every poll: `first` once, then `every` forever.
struct AlwaysReady {
    first: Option<&'static str>,
    every: &'static str,
}

impl Stream for AlwaysReady {
    type Item = Item;

    fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Item>> {
        let item = self.first.take().unwrap_or(self.every);
        Poll::Ready(Some(Ok(item)))
    }
}

/// Forwards `upstream` (OpenAI chat rules) to a channel of `capacity` (unbounded if
/// `None`: the client never keeps an item waiting), read to the end unless `read` is
/// false (the receiver is kept, never read).
fn run(
    upstream: AlwaysReady,
    options: ForwardOptions,
    capacity: Option<usize>,
    read: bool,
) -> Forwarded {
    smol::block_on(async {
        let (tx, rx) = match capacity {
            Some(capacity) => async_channel::bounded::<Item>(capacity),
            None => async_channel::unbounded(),
        };
        let reader = smol::spawn(async move {
            while read && rx.recv().await.is_ok() {}
            if !read {
                future::pending::<()>().await;
            }
        });
        let (record, recorded) = async_channel::bounded(1);
        let recorder = move |o: Outcome| {
            let _ = record.try_send(o); // the test reads it below
        };
        let tracked = TrackedStream::new(upstream, recorder).with_sse(SseRules::openai_chat());
        let forwarding = async { Some(sluice_smol::forward_with(tracked, &tx, options).await) };
        let guard = async {
            async_io::Timer::after(Duration::from_secs(30)).await;
            None
        };
        let forwarded = future::or(forwarding, guard)
            .await
            .expect("forwarding never ended: the timer was starved");
        drop(tx);
        reader.cancel().await;
        assert_eq!(recorded.recv().await.ok(), Some(forwarded.outcome));
        forwarded
    })
}

fn summary(f: &Forwarded) -> (Ending, Verdict, Cause) {
    (f.ending, f.outcome.verdict, f.outcome.cause)
}

#[test]
fn the_deadline_fires_over_an_always_ready_upstream() {
    let tokens = AlwaysReady {
        first: None,
        every: TOKEN,
    };
    let options = ForwardOptions::default().deadline(MS * 50);
    let forwarded = run(tokens, options, None, true);
    assert_eq!(
        summary(&forwarded),
        (Ending::TimedOut, Verdict::Failure, Cause::Deadline)
    );
}

#[test]
fn the_idle_timer_fires_over_always_ready_keep_alives() {
    let pings = AlwaysReady {
        first: Some(TOKEN),
        every: PING,
    };
    let options = ForwardOptions::default().idle_timeout(MS * 50);
    let forwarded = run(pings, options, None, true);
    assert_eq!(
        summary(&forwarded),
        (Ending::TimedOut, Verdict::Failure, Cause::IdleTimeout)
    );
}

#[test]
fn a_deadline_that_passes_on_a_client_that_never_reads_blames_the_client() {
    let tokens = AlwaysReady {
        first: None,
        every: TOKEN,
    };
    let options = ForwardOptions::default().deadline(MS * 50);
    let forwarded = run(tokens, options, Some(1), false);
    assert_eq!(
        summary(&forwarded),
        (Ending::TimedOut, Verdict::Abandoned, Cause::ClientStalled)
    );
    assert_eq!(
        forwarded.outcome.chunks, 2,
        "one in the channel, one waiting"
    );
}
