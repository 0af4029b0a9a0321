//! Disconnect latency through `sluice-http`: how long from a client dropping its
//! response body to the worker seeing its upstream response dropped (its connection
//! closed, or its HTTP/2 stream reset), over loopback, HTTP/1.1 and HTTP/2 on every
//! hop.
//!
//! The rig is the loopback tests' (`tests/common`): a hyper worker, a hyper gateway
//! whose upstream client is hyper-util's legacy client behind a `BreakerLayer`, the
//! `TrackedBody` relayed as the gateway's response body, and a hyper-util client.
//! Each trial: the worker sends one SSE token and holds the stream open; the client
//! reads the token, notes the time and drops the body; the worker's drop guard notes
//! when its response was dropped. Run with
//! `cargo run --release -p sluice-http --example http_disconnect_latency [trials]`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{Mode, PROTOS, Proto, Reader, Rig};
use sluice::Verdict;
use sluice::breaker::Config;
use sluice_test_support::latency;

async fn trials(proto: Proto, trials: u64) -> Vec<Duration> {
    let mut rig = Rig::start(proto, Mode::Sse, Config::default()).await;
    let mut samples = Vec::new();
    for id in 0..trials {
        let query = format!("id={id}&tokens=1000000&stall_after=1");
        let mut body = Reader::new(rig.get(&query).await);
        body.until(|b| b.tokens() >= 1).await.expect("a token");
        let closed = Instant::now();
        drop(body);
        let seen = rig.worker.wait(id, "upstream close", |p| p.dropped).await;
        let dropped = seen.dropped_at.expect("drop time");
        samples.push(dropped.saturating_duration_since(closed));
        assert_eq!(rig.gateway.outcome().await.verdict, Verdict::Abandoned);
    }
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
    for proto in PROTOS {
        let name = match proto {
            Proto::H1 => "`BreakerLayer` + `TrackedBody`, HTTP/1.1 (hyper)",
            Proto::H2 => "`BreakerLayer` + `TrackedBody`, HTTP/2 (hyper)",
        };
        latency::print_row(name, rt.block_on(trials(proto, n)));
    }
}
