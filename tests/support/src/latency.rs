//! The disconnect-latency harness: how long from a client closing its connection to
//! the worker seeing its upstream connection close, over loopback.
//!
//! Each trial: the worker sends one token and then holds the stream open; the client
//! reads the token, notes the time and drops its connection; the worker's drop guard
//! notes when its response was dropped (its connection closed). Every trial's verdict
//! must be `Abandoned`.

use core::future::Future;
use std::time::{Duration, Instant};

use sluice::{Outcome, Verdict};

use crate::Clock;
use crate::client::Reader;
use crate::worker::WorkerLog;

/// The number of trials: the first command-line argument, 1,000 by default.
pub fn trials_from_args() -> u64 {
    std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000)
}

/// Runs `trials` trials against one rig: `open` sends a query through the gateway
/// and returns the client's reader, `worker` is the worker's ledger, `verdict`
/// awaits the gateway's next verdict. Returns each trial's latency.
pub async fn measure<C, Open, Opened, Next, Judged>(
    trials: u64,
    worker: &WorkerLog<C>,
    mut open: Open,
    mut verdict: Next,
) -> Vec<Duration>
where
    C: Clock,
    Open: FnMut(String) -> Opened,
    Opened: Future<Output = Reader<C>>,
    Next: FnMut() -> Judged,
    Judged: Future<Output = (u64, Outcome)>,
{
    let mut samples = Vec::new();
    for id in 0..trials {
        let mut body = open(format!("id={id}&tokens=1000000&stall_after=1")).await;
        body.until(|b| b.tokens() >= 1).await.expect("a token");
        let closed = Instant::now();
        drop(body);
        let seen = worker.wait(id, "upstream close", |p| p.dropped).await;
        let dropped = seen.dropped_at.expect("drop time");
        samples.push(dropped.saturating_duration_since(closed));
        assert_eq!(verdict().await.1.verdict, Verdict::Abandoned);
    }
    samples
}

/// Prints the table's title and head.
pub fn print_head(trials: u64) {
    println!(
        "client close -> worker sees its upstream connection close, {trials} trials each, loopback"
    );
    println!();
    println!("| path | trials | p50 | p99 | max |");
    println!("|---|---|---|---|---|");
}

/// Prints one path's row: the trials, p50, p99 and max.
pub fn print_row(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "| {name} | {} | {:.0} µs | {:.0} µs | {:.0} µs |",
        samples.len(),
        us(at(0.50)),
        us(at(0.99)),
        us(samples[samples.len() - 1]),
    );
}
