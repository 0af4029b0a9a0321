//! Scripted upstreams for the forwarding loop's unit scenarios: SSE events from a
//! worker, on a runtime's clock, with no sockets.

use core::time::Duration;
use std::io;

use bytes::Bytes;
use futures_lite::stream::{self, Stream, StreamExt};
use sluice::forward::{Ending, Forwarded};
use sluice::{Cause, Outcome, TrackedStream, Verdict};

use crate::Clock;

/// One upstream item.
pub type Item = Result<&'static str, io::Error>;

/// An SSE comment: a keep-alive.
pub const PING: &str = ":\n\n";
/// Anthropic's keep-alive event.
pub const ANTHROPIC_PING: &str = "event: ping\ndata: {\"type\": \"ping\"}\n\n";
/// An OpenAI chat token.
pub const TOKEN: &str = "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n";
/// OpenAI's end of stream.
pub const DONE: &str = "data: [DONE]\n\n";

/// `first`, then `every` forever, one item per `gap` on `C`'s clock.
pub fn upstream<C: Clock>(
    first: &'static [&'static str],
    every: &'static str,
    gap: Duration,
) -> impl Stream<Item = Item> {
    stream::iter(first.iter().copied())
        .chain(stream::repeat(every))
        .then(move |item| async move {
            C::sleep(gap).await;
            Ok(item)
        })
}

/// How forwarding ended, and the verdict and its cause.
pub fn summary(f: &Forwarded) -> (Ending, Verdict, Cause) {
    (f.ending, f.outcome.verdict, f.outcome.cause)
}

/// An upstream that ends at once, tracked, recording nothing.
pub type Empty = TrackedStream<stream::Empty<Result<Bytes, io::Error>>, fn(Outcome)>;

/// A tracked upstream that ends at once and records nothing, for `Send` checks.
pub fn empty() -> Empty {
    TrackedStream::new(stream::empty(), |_: Outcome| {})
}

/// Compiles only if `T` is `Send`.
pub fn assert_send<T: Send>(_: &T) {}
