//! A tour of sluice: scripted upstreams end in every way a real one can, and for each
//! the tour prints the verdict the worker's circuit breaker would hear.
//!
//! Run it with `cargo run --example tour`.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;

use futures_executor::block_on;
use futures_util::{StreamExt, stream};
use sluice::sse::{SseRules, SseScanner};
use sluice::{Cause, Outcome, TrackedStream};

/// What the upstream sends: an SSE chunk, or a transport error.
#[derive(Clone, Copy)]
enum Up {
    Sse(&'static str),
    Broken,
}

const TOKENS: [Up; 3] = [
    Up::Sse("data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n"),
    Up::Sse("data: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\n\n"),
    Up::Sse("data: {\"choices\":[{\"delta\":{\"content\":\"!\"}}]}\n\n"),
];
const DONE: Up = Up::Sse("data: [DONE]\n\n");

/// How the client (or the gateway) treats the stream.
enum Client {
    /// Reads everything, to the upstream's end.
    ReadsToEnd,
    /// Reads this many chunks, then disconnects.
    LeavesAfter(usize),
    /// Reads this many chunks, then the gateway's idle timer fires.
    TimesOutAfter(usize),
}

/// Runs one scripted stream and returns what its recorder heard, and how often.
fn run(
    upstream: Vec<Up>,
    rules: SseRules,
    client: Client,
    panic_at_end: bool,
) -> (Vec<Outcome>, usize) {
    let (tx, rx) = mpsc::channel();
    let items = stream::iter(upstream).map(|up| match up {
        Up::Sse(text) => Ok(text.as_bytes()),
        Up::Broken => Err("connection reset by peer"),
    });
    let items = items.chain(stream::poll_fn(move |_| {
        assert!(!panic_at_end, "decoder bug in the upstream body");
        std::task::Poll::Ready(None::<Result<&[u8], &str>>)
    }));
    let mut tracked =
        TrackedStream::new(items, move |o: Outcome| tx.send(o).unwrap_or(())).with_sse(rules);
    let mut forwarded = 0;
    let _ = catch_unwind(AssertUnwindSafe(|| {
        block_on(async {
            loop {
                match client {
                    Client::LeavesAfter(n) if forwarded == n => break,
                    Client::TimesOutAfter(n) if forwarded == n => {
                        // What `forward`'s idle timer does when it fires.
                        tracked.mark_errored_with(Cause::IdleTimeout);
                        break;
                    }
                    _ => {}
                }
                match tracked.next().await {
                    Some(_) => forwarded += 1,
                    None => break,
                }
            }
        });
        drop(tracked); // the client is gone, or the stream is over: the verdict goes out
    }));
    (rx.try_iter().collect(), forwarded)
}

fn main() {
    std::panic::set_hook(Box::new(|_| {})); // the panic case below is expected

    println!("sluice tour: how a stream ends -> what the breaker hears\n");
    println!(
        "{:<58} {:>9} {:>10} {:<20} {:>7}",
        "scenario", "forwarded", "verdict", "cause", "records"
    );
    let chat = SseRules::openai_chat;
    let full = || [&TOKENS[..], &[DONE]].concat();
    let cases: Vec<(&str, Vec<Up>, SseRules, Client, bool)> = vec![
        (
            "client reads to the end",
            full(),
            chat(),
            Client::ReadsToEnd,
            false,
        ),
        (
            "[DONE] seen, client leaves before the upstream EOF",
            full(),
            chat(),
            Client::LeavesAfter(4),
            false,
        ),
        (
            "client disconnects mid-stream",
            full(),
            chat(),
            Client::LeavesAfter(2),
            false,
        ),
        (
            "client disconnects before the first token",
            full(),
            chat(),
            Client::LeavesAfter(0),
            false,
        ),
        (
            "upstream breaks mid-stream (error item)",
            vec![TOKENS[0], Up::Broken],
            chat(),
            Client::ReadsToEnd,
            false,
        ),
        (
            "error after [DONE] (still a failure)",
            [full(), vec![Up::Broken]].concat(),
            chat(),
            Client::ReadsToEnd,
            false,
        ),
        (
            "Anthropic in-band `event: error`",
            vec![Up::Sse(
                "event: error\ndata: {\"type\":\"overloaded_error\"}\n\n",
            )],
            SseRules::anthropic(),
            Client::LeavesAfter(1),
            false,
        ),
        (
            "worker stalls, gateway idle timeout fires",
            TOKENS.to_vec(),
            chat(),
            Client::TimesOutAfter(1),
            false,
        ),
        (
            "upstream body decoder panics",
            TOKENS.to_vec(),
            chat(),
            Client::ReadsToEnd,
            true,
        ),
        (
            "upstream ends without [DONE] (cut short)",
            TOKENS.to_vec(),
            chat(),
            Client::ReadsToEnd,
            false,
        ),
        (
            "vLLM: an error object mid-stream, then [DONE]",
            vec![
                TOKENS[0],
                Up::Sse("data: {\"error\": {\"message\": \"engine died\", \"code\": 500}}\n\n"),
                DONE,
            ],
            chat(),
            Client::ReadsToEnd,
            false,
        ),
    ];
    for (name, upstream, rules, client, panics) in cases {
        let (records, forwarded) = run(upstream, rules, client, panics);
        let (verdict, cause) = match records.as_slice() {
            [one] => (one.verdict.as_str(), one.cause.as_str()),
            _ => ("LOST/DOUBLED", "-"),
        };
        println!(
            "{name:<58} {forwarded:>9} {verdict:>10} {cause:<20} {:>7}",
            records.len()
        );
        assert_eq!(records.len(), 1, "exactly one verdict per stream");
    }

    println!("\nAbandoned means: the client left first. The breaker counts nothing and frees");
    println!("the permit; in a gateway the upstream is dropped at once, so the engine stops.\n");

    println!("The scanner finds `data: [DONE]` split across chunks, and only as a whole event:");
    let mut scanner = SseScanner::new(SseRules::openai_chat());
    for chunk in [
        "data: {\"text\":\"data: [DONE]\"}\n\n",
        "da",
        "ta: [DO",
        "NE]\r",
        "\n",
        "\r\n",
    ] {
        println!(
            "  feed {:<36} -> {:?}",
            format!("{chunk:?}"),
            scanner.feed(chunk.as_bytes())
        );
    }
}
