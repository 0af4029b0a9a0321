//! Disconnect latency: how long from a client closing its connection to the worker
//! seeing its upstream connection close, over loopback, for the three ways sluice
//! hands a stream to a client:
//!
//! * `direct body`: axum drops the `TrackedStream` response body (tokio);
//! * `tokio forward`: a relay task running `sluice_tokio::forward` into an mpsc
//!   channel that feeds the response body;
//! * `smol forward`: the same with `sluice_smol::forward` over async-channel, on a
//!   hand-written HTTP/1.1 gateway on async-net.
//!
//! Each trial: the worker sends one token and then holds the stream open; the
//! client reads the token, notes the time and drops its connection; the worker's
//! drop guard notes when its response was dropped (its connection closed). Run with
//! `cargo run --release -p sluice-tokio --example disconnect_latency [trials]`.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../../smol/tests/common/mod.rs"]
mod smol_common;

use std::time::{Duration, Instant};

use sluice::Verdict;
use sluice::forward::ForwardOptions;

fn report(name: &str, mut samples: Vec<Duration>) {
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

async fn tokio_trials(route: &str, trials: u64) -> Vec<Duration> {
    let mut rig = common::Rig::start(ForwardOptions::default()).await;
    let mut samples = Vec::new();
    for id in 0..trials {
        let query = format!("id={id}&tokens=1000000&stall_after=1");
        let mut body = common::Reader::new(rig.get(route, &query).await);
        body.until(|b| b.tokens() >= 1).await.expect("a token");
        let closed = Instant::now();
        drop(body);
        let seen = rig.worker.wait(id, "upstream close", |p| p.dropped).await;
        let dropped = seen.dropped_at.expect("drop time");
        samples.push(dropped.saturating_duration_since(closed));
        let (_, outcome) = rig.gateway.verdict().await;
        assert_eq!(outcome.verdict, Verdict::Abandoned);
    }
    rig.shutdown().await;
    samples
}

fn smol_trials(trials: u64) -> Vec<Duration> {
    smol::block_on(async {
        let worker = smol_common::Worker::start().await;
        let gateway = smol_common::Gateway::start(worker.addr).await;
        let mut samples = Vec::new();
        for id in 0..trials {
            let query = format!("id={id}&tokens=1000000&stall_after=1");
            let mut body = smol_common::Reader::get(gateway.addr, &query).await;
            body.until(|b| b.tokens() >= 1).await.expect("a token");
            let closed = Instant::now();
            drop(body);
            let seen = worker.wait(id, "upstream close", |p| p.dropped).await;
            let dropped = seen.dropped_at.expect("drop time");
            samples.push(dropped.saturating_duration_since(closed));
            assert_eq!(gateway.verdict().await.1.verdict, Verdict::Abandoned);
        }
        samples
    })
}

fn main() {
    let trials = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "client close -> worker sees its upstream connection close, {trials} trials each, loopback"
    );
    println!();
    println!("| path | trials | p50 | p99 | max |");
    println!("|---|---|---|---|---|");
    report(
        "direct body (axum, tokio)",
        rt.block_on(tokio_trials("direct", trials)),
    );
    report(
        "`sluice_tokio::forward` (axum, tokio)",
        rt.block_on(tokio_trials("forward", trials)),
    );
    report(
        "`sluice_smol::forward` (async-net, smol)",
        smol_trials(trials),
    );
}
