//! Active health checks (`serve --health-check PATH --health-interval DURATION`).
//!
//! Every interval, every worker gets `GET {base}{path}` (bounded by the interval;
//! redirects are not followed). A check passes on a 2xx answer. A worker that fails
//! [`HealthCheck::failures`] checks in a row is forced open
//! ([`SharedBreakerSet::force_open`](sluice::breaker::SharedBreakerSet::force_open)):
//! it gets no user traffic, whatever its breaker said. Forcing is an operator's
//! override: it is not limited by the ejection cap (a pool whose every worker fails
//! its checks answers 503 at once, which is the truth).
//!
//! The first check that passes releases a worker this checker forced open with
//! [`reset`](sluice::breaker::SharedBreakerSet::reset): back to Closed, its counts
//! cleared, so user traffic judges it from scratch with the usual failure threshold.
//! (The set has no way from ForcedOpen to HalfOpen; a passing check is the probe.)
//! A worker the checker did not force open is never reset by it: a breaker opened by
//! user traffic keeps its open time.
//!
//! Transitions are logged and counted like every other
//! (`sluice_breaker_transitions_total{reason="forced"|"reset"}`), checks in
//! `sluice_health_checks_total{worker,result}`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use sluice::breaker::State;
use tokio::time::MissedTickBehavior;

use super::{Gateway, GatewayEvent, Inner, error_chain};

/// Failed checks in a row that force a worker open, by default.
pub const DEFAULT_HEALTH_FAILURES: u32 = 3;

/// What to check, and how often.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// The path appended to each worker's base URL (`/health`).
    pub path: String,
    /// The time between two rounds of checks; also each check's time limit.
    pub interval: Duration,
    /// Failed checks in a row that force a worker open.
    pub failures: u32,
}

impl HealthCheck {
    /// Checks `path` every `interval`; [`DEFAULT_HEALTH_FAILURES`] in a row force a
    /// worker open.
    pub fn new(path: impl Into<String>, interval: Duration) -> Self {
        Self {
            path: path.into(),
            interval,
            failures: DEFAULT_HEALTH_FAILURES,
        }
    }
}

/// One worker's standing with the checker.
#[derive(Debug, Clone, Copy, Default)]
struct Standing {
    failed_in_a_row: u32,
    /// This checker forced the worker open (and so may release it).
    forced: bool,
}

impl Gateway {
    /// The health checker: runs until dropped (spawn it, abort it at shutdown). An
    /// interval of zero is taken as a millisecond.
    pub fn health_checks(&self, check: HealthCheck) -> impl Future<Output = ()> + Send + 'static {
        let gw = Arc::clone(&self.inner);
        async move {
            let interval = check.interval.max(Duration::from_millis(1));
            let mut standing = vec![Standing::default(); gw.workers.len()];
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let checks = (0..gw.workers.len()).map(|w| probe(&gw, w, &check.path, interval));
                let results = join_all(checks).await;
                for (worker, passed) in results.into_iter().enumerate() {
                    gw.checked(worker, passed, &mut standing[worker], check.failures);
                }
            }
        }
    }
}

/// One check of `worker`: whether it answered 2xx in time.
async fn probe(gw: &Inner, worker: usize, path: &str, limit: Duration) -> bool {
    let url = format!("{}{path}", gw.workers[worker].base.trim_end_matches('/'));
    let failed = match tokio::time::timeout(limit, gw.send(gw.client.get(url))).await {
        Ok(Ok(response)) if response.status().is_success() => return true,
        Ok(Ok(response)) => format!("status {}", response.status().as_u16()),
        Ok(Err(err)) => error_chain(&err),
        Err(_) => format!("no answer within {limit:?}"),
    };
    tracing::debug!(
        worker = gw.name(worker),
        error = failed,
        "health check failed"
    );
    false
}

impl Inner {
    /// Takes one check's result: counts it, forces the worker open or releases it.
    fn checked(&self, worker: usize, passed: bool, standing: &mut Standing, failures: u32) {
        self.metrics.health_check(worker, passed);
        self.emit(GatewayEvent::HealthCheck { worker, passed });
        if passed {
            standing.failed_in_a_row = 0;
            if standing.forced {
                standing.forced = false;
                tracing::info!(
                    worker = self.name(worker),
                    "health check passed: releasing the worker"
                );
                if let Some(t) = self.set.reset(worker) {
                    self.transition(worker, t);
                }
            }
            return;
        }
        standing.failed_in_a_row = standing.failed_in_a_row.saturating_add(1);
        if standing.failed_in_a_row >= failures.max(1)
            && !standing.forced
            && self.set.state(worker) != State::ForcedOpen
        {
            standing.forced = true;
            tracing::warn!(
                worker = self.name(worker),
                failed_in_a_row = standing.failed_in_a_row,
                "health checks failing: forcing the worker open"
            );
            if let Some(t) = self.set.force_open(worker) {
                self.transition(worker, t);
            }
        }
    }
}
