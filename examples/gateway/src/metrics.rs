//! The gateway's metrics, kept with `prometheus-client` and rendered in the
//! OpenMetrics text format (which Prometheus scrapes) at `GET /metrics`.
//!
//! * `sluice_breaker_state{worker,state}`: 1 for the state each worker's breaker is
//!   in, 0 for the others (read at scrape time);
//! * `sluice_verdicts_total{worker,verdict,cause}`: one per request that reached a
//!   worker, labelled by the verdict's cause (`done`, `error_event`, `truncated`, ...);
//! * `sluice_streams_cancelled_total{worker}`: requests whose client left before the
//!   upstream ended (the upstream was dropped, so the engine stopped generating);
//! * `sluice_breaker_transitions_total{worker,from,to,reason}`;
//! * `sluice_breaker_transitions_total{worker,from,to,reason}` also counts the
//!   ejections the cap refused (`from="closed",to="closed",reason="ejection_capped"`);
//! * `sluice_unavailable_total`: requests answered 503 because no worker was admitted;
//! * `sluice_aborts_total{worker,result}`: explicit aborts sent to an engine (profile
//!   `sglang`), by how they went: `ok`, `rejected` (non-2xx), `failed`, `timeout`;
//! * `sluice_health_checks_total{worker,result}`: active health checks (`serve
//!   --health-check`), by result: `passed` or `failed`;
//! * `sluice_ejected_workers` and `sluice_max_ejected_workers`: how many workers are
//!   ejected now, and the cap.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use sluice::Outcome;
use sluice::breaker::{Reason, State, Transition};

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The states a breaker can be in, as label values.
const STATES: [&str; 5] = ["closed", "open", "half_open", "forced_open", "disabled"];

/// Labels of a per-worker series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabels {
    worker: String,
}

/// Labels of `sluice_aborts_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AbortLabels {
    worker: String,
    result: String,
}

/// Labels of `sluice_health_checks_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HealthLabels {
    worker: String,
    result: String,
}

/// Labels of `sluice_breaker_state`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    worker: String,
    state: String,
}

/// Labels of `sluice_verdicts_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabels {
    worker: String,
    verdict: String,
    cause: String,
}

/// Labels of `sluice_breaker_transitions_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransitionLabels {
    worker: String,
    from: String,
    to: String,
    reason: String,
}

/// The registry and its metric families.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    workers: Vec<String>,
    state: Family<StateLabels, Gauge>,
    verdicts: Family<VerdictLabels, Counter>,
    cancelled: Family<WorkerLabels, Counter>,
    transitions: Family<TransitionLabels, Counter>,
    unavailable: Counter,
    aborts: Family<AbortLabels, Counter>,
    health: Family<HealthLabels, Counter>,
    ejected: Gauge,
    max_ejected: Gauge,
}

/// A breaker state's label value.
pub fn state_name(state: State) -> &'static str {
    match state {
        State::Closed => "closed",
        State::Open { .. } => "open",
        State::HalfOpen => "half_open",
        State::ForcedOpen => "forced_open",
        State::Disabled => "disabled",
        _ => "other",
    }
}

/// A transition reason's label value.
pub fn reason_name(reason: Reason) -> &'static str {
    match reason {
        Reason::ConsecutiveFailures => "consecutive_failures",
        Reason::FailureRate => "failure_rate",
        Reason::OpenElapsed => "open_elapsed",
        Reason::ProbeFailed => "probe_failed",
        Reason::ProbesSucceeded => "probes_succeeded",
        Reason::Forced => "forced",
        Reason::Disabled => "disabled",
        Reason::Reset => "reset",
        Reason::EjectionCapped => "ejection_capped",
        _ => "other",
    }
}

impl Metrics {
    /// Metrics for these workers, every per-worker series present from the start
    /// (at zero), so a scrape shows each worker before its first request.
    pub fn new(workers: &[String]) -> Self {
        let mut registry = Registry::default();
        let state = Family::<StateLabels, Gauge>::default();
        let verdicts = Family::<VerdictLabels, Counter>::default();
        let cancelled = Family::<WorkerLabels, Counter>::default();
        let transitions = Family::<TransitionLabels, Counter>::default();
        let unavailable = Counter::default();
        let aborts = Family::<AbortLabels, Counter>::default();
        let health = Family::<HealthLabels, Counter>::default();
        let ejected = Gauge::default();
        let max_ejected = Gauge::default();
        registry.register(
            "sluice_breaker_state",
            "Whether each worker's circuit breaker is in this state (1) or not (0)",
            state.clone(),
        );
        registry.register(
            "sluice_verdicts",
            "Verdicts told to the worker's breaker, one per request that reached a worker",
            verdicts.clone(),
        );
        registry.register(
            "sluice_streams_cancelled",
            "Requests whose client left before the upstream ended; the upstream was dropped",
            cancelled.clone(),
        );
        registry.register(
            "sluice_breaker_transitions",
            "Circuit breaker state changes, by reason",
            transitions.clone(),
        );
        registry.register(
            "sluice_unavailable",
            "Requests answered 503 because no worker's breaker admitted them",
            unavailable.clone(),
        );
        registry.register(
            "sluice_aborts",
            "Explicit aborts sent to an engine for abandoned requests, by result",
            aborts.clone(),
        );
        registry.register(
            "sluice_health_checks",
            "Active health checks of the workers, by result",
            health.clone(),
        );
        registry.register(
            "sluice_ejected_workers",
            "Workers ejected now (breaker open or half-open)",
            ejected.clone(),
        );
        registry.register(
            "sluice_max_ejected_workers",
            "How many workers may be ejected at once (the ejection cap)",
            max_ejected.clone(),
        );
        for worker in workers {
            drop(cancelled.get_or_create(&WorkerLabels {
                worker: worker.clone(),
            }));
        }
        Self {
            registry,
            workers: workers.to_vec(),
            state,
            verdicts,
            cancelled,
            transitions,
            unavailable,
            aborts,
            health,
            ejected,
            max_ejected,
        }
    }

    /// Counts one verdict of `worker`, by its cause; `cancelled` when the client left
    /// first.
    pub fn verdict(&self, worker: usize, outcome: Outcome, cancelled: bool) {
        let Some(name) = self.workers.get(worker) else {
            return;
        };
        self.verdicts
            .get_or_create(&VerdictLabels {
                worker: name.clone(),
                verdict: outcome.verdict.as_str().to_owned(),
                cause: outcome.cause.as_str().to_owned(),
            })
            .inc();
        if cancelled {
            self.cancelled
                .get_or_create(&WorkerLabels {
                    worker: name.clone(),
                })
                .inc();
        }
    }

    /// Counts one transition of `worker`'s breaker.
    pub fn transition(&self, worker: usize, t: &Transition) {
        let Some(name) = self.workers.get(worker) else {
            return;
        };
        self.transitions
            .get_or_create(&TransitionLabels {
                worker: name.clone(),
                from: state_name(t.from).to_owned(),
                to: state_name(t.to).to_owned(),
                reason: reason_name(t.reason).to_owned(),
            })
            .inc();
    }

    /// Counts one request refused for want of an admitted worker.
    pub fn unavailable(&self) {
        self.unavailable.inc();
    }

    /// Counts one explicit abort sent to `worker`'s engine, by `result`.
    pub fn abort(&self, worker: usize, result: &str) {
        let Some(name) = self.workers.get(worker) else {
            return;
        };
        self.aborts
            .get_or_create(&AbortLabels {
                worker: name.clone(),
                result: result.to_owned(),
            })
            .inc();
    }

    /// Counts one health check of `worker`.
    pub fn health_check(&self, worker: usize, passed: bool) {
        let Some(name) = self.workers.get(worker) else {
            return;
        };
        self.health
            .get_or_create(&HealthLabels {
                worker: name.clone(),
                result: if passed { "passed" } else { "failed" }.to_owned(),
            })
            .inc();
    }

    /// The text exposition, with the breaker states (`states[i]` of worker `i`) and
    /// the ejections (`ejected` of at most `max_ejected`) as they are now.
    pub fn render(
        &self,
        states: &[State],
        ejected: usize,
        max_ejected: usize,
    ) -> Result<String, std::fmt::Error> {
        self.ejected.set(i64::try_from(ejected).unwrap_or(i64::MAX));
        self.max_ejected
            .set(i64::try_from(max_ejected).unwrap_or(i64::MAX));
        for (worker, state) in self.workers.iter().zip(states) {
            let now = state_name(*state);
            for s in STATES {
                self.state
                    .get_or_create(&StateLabels {
                        worker: worker.clone(),
                        state: s.to_owned(),
                    })
                    .set(i64::from(s == now));
            }
        }
        let mut out = String::new();
        encode(&mut out, &self.registry)?;
        Ok(out)
    }
}
