//! Disconnect latency on smol: how long from a client closing its connection to the
//! worker seeing its upstream connection close, over loopback, for
//! `sluice_smol::forward` over async-channel, on a hand-written HTTP/1.1 gateway on
//! async-net.
//!
//! (The tokio paths have their own: `cargo run --release -p sluice-tokio --example
//! tokio_disconnect_latency`.) The trial and the table are `sluice-test-support`'s
//! `latency` harness; the rig is this crate's test rig. Run with
//! `cargo run --release -p sluice-smol --example smol_disconnect_latency [trials]`.

#[path = "../tests/common/mod.rs"]
mod common;

use sluice_test_support::latency;

fn main() {
    let n = latency::trials_from_args();
    let samples = smol::block_on(async {
        let worker = common::Worker::start().await;
        let gateway = common::Gateway::start(worker.addr).await;
        let open = |query: String| async move { common::get(gateway.addr, &query).await };
        latency::measure(n, &worker, open, || gateway.verdict()).await
    });
    latency::print_head(n);
    latency::print_row("`sluice_smol::forward` (async-net, smol)", samples);
}
