//! Disconnect latency on tokio: how long from a client closing its connection to the
//! worker seeing its upstream connection close, over loopback, for the two tokio ways
//! sluice hands a stream to a client:
//!
//! * `direct body`: axum drops the `TrackedStream` response body;
//! * `tokio forward`: a relay task running `sluice_tokio::forward` into an mpsc
//!   channel that feeds the response body.
//!
//! (`sluice_smol::forward` has its own: `cargo run --release -p sluice-smol --example
//! smol_disconnect_latency`.) The trial and the table are `sluice-test-support`'s
//! `latency` harness; the rig is this crate's test rig. Run with
//! `cargo run --release -p sluice-tokio --example tokio_disconnect_latency [trials]`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Duration;

use sluice::forward::ForwardOptions;
use sluice_test_support::latency;

async fn trials(route: &str, trials: u64) -> Vec<Duration> {
    let rig = common::Rig::start(ForwardOptions::default()).await;
    let open = |query: String| {
        let rig = &rig;
        async move { common::reader(rig.get(route, &query).await) }
    };
    let samples = latency::measure(trials, &rig.worker, open, || rig.gateway.verdict()).await;
    rig.shutdown().await;
    samples
}

fn main() {
    let n = latency::trials_from_args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    latency::print_head(n);
    let direct = rt.block_on(trials("direct", n));
    latency::print_row("direct body (axum, tokio)", direct);
    let forward = rt.block_on(trials("forward", n));
    latency::print_row("`sluice_tokio::forward` (axum, tokio)", forward);
}
