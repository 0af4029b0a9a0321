//! The test rigs that sluice's crates share, written once and runtime-neutral: the
//! loopback rigs of `sluice-tokio` and `sluice-smol` (each adapter's `tests/common`
//! keeps only its runtime's shell: the TCP servers, the HTTP client, the sleep), and
//! the reference model that the core's tests and the fuzz targets check against.
//!
//! * [`worker`]: the mock inference worker's protocol: the query string a test sends
//!   ([`worker::Plan`]), what the worker writes and when ([`worker::Script`]), and
//!   the [`worker::WorkerLog`] of what it did per request, which tests wait on.
//! * [`gateway`]: what the gateway under test does with the worker's answer
//!   ([`gateway::relay`]) and the channels its verdicts and reports reach the test by.
//! * [`client`]: a client's [`client::Reader`] of an SSE body.
//! * [`latency`]: the disconnect-latency harness and its table.
//! * [`upstream`]: scripted upstreams (pings, tokens) for the timer scenarios.
//! * [`sequences`]: every token sequence up to a length, for the exhaustive split
//!   tests.
//! * [`commit`]: the reference model of the commit point (SPEC section 6), which the
//!   attempt tests of the core and of `sluice-http` check against.
//! * [`model`]: the reference model of SPEC section 1 (the Terminal table), which the
//!   core's tests, the adapters' tests and the fuzz targets check `TrackedStream`
//!   against.
//!
//! Nothing here spawns a task or reads a runtime's clock: waits go through a [`Clock`]
//! that each shell implements with its runtime's timer (tokio's follows a paused test
//! clock).
#![forbid(unsafe_code)]

pub mod client;
pub mod commit;
pub mod gateway;
pub mod latency;
pub mod model;
pub mod sequences;
pub mod upstream;
pub mod worker;

use core::future::Future;
use core::time::Duration;

/// How long a test waits for an effect before it fails.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// A runtime's timer, which the rigs sleep and time out on.
pub trait Clock: 'static {
    /// Resolves `duration` after it is called (the deadline is set by the call, not by
    /// the first poll).
    fn sleep(duration: Duration) -> impl Future<Output = ()> + Send + 'static;
}

/// Awaits `fut`, failing the test if it takes longer than [`DEADLINE`] on `C`'s clock.
pub async fn within<C: Clock, F: Future>(what: &str, fut: F) -> F::Output {
    let deadline = C::sleep(DEADLINE);
    futures_lite::future::or(fut, async {
        deadline.await;
        panic!("no {what} within {DEADLINE:?}")
    })
    .await
}
