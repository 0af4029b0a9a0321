//! The gateway's metrics, kept with `prometheus-client` and rendered in the
//! OpenMetrics text format (which Prometheus scrapes) at `GET /metrics`.
//!
//! * `sluice_breaker_state{worker,state}`: 1 for the state each worker's breaker is
//!   in, 0 for the others (read at scrape time);
//! * `sluice_verdicts_total{worker,verdict,cause}`: one per request that reached a
//!   worker, labelled by the verdict's cause (`done`, `error_event`, `truncated`, ...);
//! * `sluice_streams_cancelled_total{worker}`: requests whose client left before the
//!   upstream ended (the upstream was dropped, so the engine stopped generating);
//! * `sluice_breaker_transitions_total{worker,from,to,reason}`: each breaker's state
//!   changes, and the ejections the cap refused
//!   (`from="closed",to="closed",reason="ejection_capped"`);
//! * `sluice_unavailable_total`: requests answered 503 because no worker was admitted;
//! * `sluice_aborts_total{worker,result}`: explicit aborts sent to an engine (profile
//!   `sglang`), by how they went: `ok`, `rejected` (non-2xx), `failed`, `timeout`;
//! * `sluice_health_checks_total{worker,result}`: active health checks (`serve
//!   --health-check`), by result: `passed` or `failed`;
//! * `sluice_ejected_workers` and `sluice_max_ejected_workers`: how many workers are
//!   ejected now, and the cap.
//!
//! And the OpenTelemetry GenAI model-server measures, in Prometheus spelling, as
//! histograms with the explicit buckets the semantic conventions recommend:
//!
//! * `gen_ai_server_request_duration_seconds{worker,gen_ai_operation_name,verdict[,error_type]}`:
//!   from the request's arrival at the gateway to its verdict, for every request
//!   that reached a worker; `error_type` (OpenTelemetry's `error.type`) is the
//!   verdict's cause, on failures only;
//! * `gen_ai_server_time_to_first_token_seconds{worker,gen_ai_operation_name}`:
//!   from the request's arrival to the stream's first progress event (keep-alives
//!   and the API's preamble do not count; a body without SSE rules: its first
//!   chunk), for successful responses (as OpenTelemetry defines it);
//! * `gen_ai_server_time_per_output_token_seconds{worker,gen_ai_operation_name}`:
//!   the time from the first to the last progress event over the events after the
//!   first, for successful responses with at least two (progress events stand in
//!   for output tokens; the done event is one);
//! * `gen_ai_client_token_usage{worker,verdict,gen_ai_token_type}`: the tokens of
//!   each request, whatever its verdict, as the stream reported them (`Outcome::usage`):
//!   `gen_ai_token_type="input"` when it reported its input tokens, `"output"` its
//!   output tokens, or else, for a stream that reported none (the client left
//!   before the usage came, say), its progress events, if any.
//!
//! `gen_ai_operation_name` is `chat` (Chat Completions, Messages, Responses) or
//! `text_completion` (legacy completions). OpenTelemetry's `gen_ai.provider.name`
//! and the model names are left out: the gateway does not know the provider behind a
//! worker, and does not read the model from bodies.
//!
//! In prefill/decode mode ([`Metrics::with_roles`]) the per-worker series of
//! verdicts, breaker states, transitions, aborts, the three GenAI histograms and the
//! token usage carry the worker's `role` too (`prefill` or `decode`), after `worker`.
//!
//! Every label value is typed (a verdict, a cause, a breaker state, a transition
//! reason, an abort or health-check result, an operation), never a free string but
//! the worker's name.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{
    EncodeLabel, EncodeLabelSet, EncodeLabelValue, LabelSetEncoder, LabelValueEncoder,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use sluice::breaker::{Reason, State, Transition};
use sluice::{Cause, Outcome, Verdict};

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `gen_ai_server_time_to_first_token_seconds` buckets: the explicit boundaries
/// OpenTelemetry's GenAI semantic conventions give for `gen_ai.server.time_to_first_token`.
pub const TIME_TO_FIRST_TOKEN_BUCKETS: [f64; 16] = [
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// `gen_ai_server_time_per_output_token_seconds` buckets (OpenTelemetry's, for
/// `gen_ai.server.time_per_output_token`).
pub const TIME_PER_OUTPUT_TOKEN_BUCKETS: [f64; 13] = [
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
];

/// `gen_ai_client_token_usage` buckets (OpenTelemetry's, for
/// `gen_ai.client.token.usage`).
pub const TOKEN_USAGE_BUCKETS: [f64; 14] = [
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];

/// `gen_ai_server_request_duration_seconds` buckets (OpenTelemetry's, for
/// `gen_ai.server.request.duration`).
pub const REQUEST_DURATION_BUCKETS: [f64; 14] = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];

/// The GenAI operation of a request (OpenTelemetry's `gen_ai.operation.name`, a
/// label `gen_ai_operation_name` here).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Operation {
    /// `chat`: OpenAI Chat Completions, Anthropic Messages, OpenAI Responses.
    Chat,
    /// `text_completion`: OpenAI's legacy completions.
    TextCompletion,
}

impl Operation {
    /// Its label value, as OpenTelemetry spells it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::TextCompletion => "text_completion",
        }
    }
}

impl EncodeLabelValue for Operation {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

/// How long one request took, as the OpenTelemetry GenAI histograms measure it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Latency {
    /// The request's operation.
    pub operation: Operation,
    /// From the request's arrival at the gateway to its verdict.
    pub duration: Duration,
    /// From the request's arrival to the stream's first progress event (the first
    /// event that is not a keep-alive or preamble; without SSE rules, the first
    /// chunk), if one came.
    pub first_token: Option<Duration>,
    /// The time between the first and the last progress event divided by the
    /// progress events after the first, for a stream with at least two.
    pub per_token: Option<Duration>,
}

/// A verdict as a label value: `success`, `failure`, `abandoned`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct VerdictLabel(Verdict);

impl EncodeLabelValue for VerdictLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
        EncodeLabelValue::encode(&self.0.as_str(), encoder)
    }
}

/// A cause as a label value ([`Cause::as_str`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct CauseLabel(Cause);

impl EncodeLabelValue for CauseLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
        EncodeLabelValue::encode(&self.0.as_str(), encoder)
    }
}

/// A breaker state as a label value ([`State::as_str`]); an Open state's `until`
/// is left out, so every Open is one series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct StateLabel(State);

impl From<State> for StateLabel {
    fn from(state: State) -> Self {
        match state {
            State::Open { .. } => Self(State::Open {
                until: Duration::ZERO,
            }),
            other => Self(other),
        }
    }
}

impl EncodeLabelValue for StateLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
        EncodeLabelValue::encode(&self.0.as_str(), encoder)
    }
}

/// A transition reason as a label value ([`Reason::as_str`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ReasonLabel(Reason);

impl EncodeLabelValue for ReasonLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
        EncodeLabelValue::encode(&self.0.as_str(), encoder)
    }
}

/// How an explicit abort sent to an engine went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AbortResult {
    /// The engine answered 2xx.
    Ok,
    /// The engine answered, not 2xx.
    Rejected,
    /// The call failed (connect error, no runtime).
    Failed,
    /// No answer within the abort's time limit.
    Timeout,
}

impl AbortResult {
    /// Its label value: `ok`, `rejected`, `failed`, `timeout`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Rejected => "rejected",
            Self::Failed => "failed",
            Self::Timeout => "timeout",
        }
    }
}

impl EncodeLabelValue for AbortResult {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

/// Which attempt of a request: its first, a retry after a failure, or a hedge
/// started while another was slow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AttemptKind {
    /// The request's first attempt.
    First,
    /// An attempt after one that failed before its commit.
    Retry,
    /// An attempt started while another had made no progress yet.
    Hedge,
}

impl AttemptKind {
    /// Its label value: `first`, `retry`, `hedge`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::First => "first",
            Self::Retry => "retry",
            Self::Hedge => "hedge",
        }
    }
}

impl EncodeLabelValue for AttemptKind {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

/// How an attempt ended for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AttemptResult {
    /// It is the client's answer (committed, or an answer that is not retried).
    Answered,
    /// It failed before its commit (its worker has its verdict); another attempt
    /// replaced it, or, with none left, its failure is the answer.
    Failed,
    /// Another attempt reached its first token first: dropped, Abandoned.
    HedgeLost,
    /// The client left, or the gateway shut down, before it settled.
    Cancelled,
}

impl AttemptResult {
    /// Its label value: `answered`, `failed`, `hedge_lost`, `cancelled`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Answered => "answered",
            Self::Failed => "failed",
            Self::HedgeLost => "hedge_lost",
            Self::Cancelled => "cancelled",
        }
    }
}

impl EncodeLabelValue for AttemptResult {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

/// Why a retry or a hedge the rules allowed was not made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Refusal {
    /// The retry budget had nothing left.
    Budget,
    /// No worker the request had not tried admitted it.
    NoWorker,
    /// The request had used its `--retries`.
    Limit,
}

impl Refusal {
    /// Its label value: `budget`, `no_worker`, `limit`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Budget => "budget",
            Self::NoWorker => "no_worker",
            Self::Limit => "limit",
        }
    }
}

impl EncodeLabelValue for Refusal {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

/// A health check's result as a label value: `passed` or `failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum HealthResult {
    Passed,
    Failed,
}

impl EncodeLabelValue for HealthResult {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
        let value = match self {
            Self::Passed => "passed",
            Self::Failed => "failed",
        };
        EncodeLabelValue::encode(&value, encoder)
    }
}

/// The states a breaker can be in, as label values.
const STATES: [State; 5] = [
    State::Closed,
    State::Open {
        until: Duration::ZERO,
    },
    State::HalfOpen,
    State::ForcedOpen,
    State::Disabled,
];

/// A worker's name as a label value: shared, so a label set takes it by a reference
/// count, not by copying the string.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct WorkerName(Arc<str>);

impl WorkerName {
    fn as_str(&self) -> &str {
        &self.0
    }
}

impl EncodeLabelValue for WorkerName {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

/// Labels of a per-worker series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabels {
    worker: WorkerName,
}

/// A worker as labels: its name (`worker`) and, in prefill/decode mode, its role
/// (`role`: `prefill` or `decode`); without a role the label is left out.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct Who {
    worker: WorkerName,
    role: Option<&'static str>,
}

impl EncodeLabelSet for Who {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> fmt::Result {
        EncodeLabel::encode(&("worker", self.worker.as_str()), encoder.encode_label())?;
        if let Some(role) = self.role {
            EncodeLabel::encode(&("role", role), encoder.encode_label())?;
        }
        Ok(())
    }
}

/// Labels of `sluice_aborts_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AbortLabels {
    #[prometheus(flatten)]
    who: Who,
    result: AbortResult,
}

/// Labels of `sluice_attempts_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    worker: WorkerName,
    kind: AttemptKind,
    result: AttemptResult,
}

/// Labels of `sluice_retries_refused_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabels {
    kind: AttemptKind,
    reason: Refusal,
}

/// Labels of `sluice_health_checks_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HealthLabels {
    worker: WorkerName,
    result: HealthResult,
}

/// Labels of `sluice_breaker_state`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    #[prometheus(flatten)]
    who: Who,
    state: StateLabel,
}

/// Labels of `sluice_verdicts_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabels {
    #[prometheus(flatten)]
    who: Who,
    verdict: VerdictLabel,
    cause: CauseLabel,
}

/// Labels of `sluice_breaker_transitions_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransitionLabels {
    #[prometheus(flatten)]
    who: Who,
    from: StateLabel,
    to: StateLabel,
    reason: ReasonLabel,
}

/// Labels of the time-to-first-token and time-per-output-token histograms.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    #[prometheus(flatten)]
    who: Who,
    gen_ai_operation_name: Operation,
}

/// OpenTelemetry's `gen_ai.token.type`: which tokens a usage count is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum TokenType {
    Input,
    Output,
}

impl EncodeLabelValue for TokenType {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
        let value = match self {
            Self::Input => "input",
            Self::Output => "output",
        };
        EncodeLabelValue::encode(&value, encoder)
    }
}

/// Labels of `gen_ai_client_token_usage`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UsageLabels {
    #[prometheus(flatten)]
    who: Who,
    verdict: VerdictLabel,
    gen_ai_token_type: TokenType,
}

/// Labels of `gen_ai_server_request_duration_seconds`: OpenTelemetry's
/// `error.type` (here `error_type`, the cause) is set on failures only, and left
/// out of the other series.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct DurationLabels {
    who: Who,
    gen_ai_operation_name: Operation,
    verdict: VerdictLabel,
    error_type: Option<CauseLabel>,
}

impl EncodeLabelSet for DurationLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> fmt::Result {
        self.who.encode(encoder)?;
        EncodeLabel::encode(
            &("gen_ai_operation_name", self.gen_ai_operation_name),
            encoder.encode_label(),
        )?;
        EncodeLabel::encode(&("verdict", self.verdict), encoder.encode_label())?;
        if let Some(cause) = self.error_type {
            EncodeLabel::encode(&("error_type", cause), encoder.encode_label())?;
        }
        Ok(())
    }
}

/// Makes the histograms of a family.
type Buckets = fn() -> Histogram;

fn time_to_first_token() -> Histogram {
    Histogram::new(TIME_TO_FIRST_TOKEN_BUCKETS)
}

fn time_per_output_token() -> Histogram {
    Histogram::new(TIME_PER_OUTPUT_TOKEN_BUCKETS)
}

fn request_duration() -> Histogram {
    Histogram::new(REQUEST_DURATION_BUCKETS)
}

fn token_usage() -> Histogram {
    Histogram::new(TOKEN_USAGE_BUCKETS)
}

/// The series of one family for one worker, a slot per label set it can have (by
/// index). A slot's series is made by the family's `get_or_create` the first time it
/// is used, so a scrape shows it from then on, exactly as without the slot; then it is
/// kept. A family's series are shared handles (an `Arc`), so the kept clone counts into
/// the series the family renders, and later uses build, hash and look up no label set.
#[derive(Debug)]
struct Slots<M>(Box<[OnceLock<M>]>);

impl<M: Clone> Slots<M> {
    fn new(len: usize) -> Self {
        Self((0..len).map(|_| OnceLock::new()).collect())
    }

    /// Applies `f` to `family`'s series labelled `labels()`: the one in slot `i`, made
    /// on first use; without a slot, the one looked up in the family.
    fn with<L, C>(
        &self,
        i: Option<usize>,
        family: &Family<L, M, C>,
        labels: impl FnOnce() -> L,
        f: impl FnOnce(&M),
    ) where
        L: Clone + std::hash::Hash + Eq,
        C: MetricConstructor<M>,
    {
        match i.and_then(|i| self.0.get(i)) {
            Some(slot) => f(slot.get_or_init(|| family.get_or_create_owned(&labels()))),
            None => f(&family.get_or_create(&labels())),
        }
    }
}

/// How many verdicts there are, for [`verdict_index`].
const VERDICTS: usize = 3;

/// A verdict's slot index.
const fn verdict_index(verdict: Verdict) -> usize {
    match verdict {
        Verdict::Success => 0,
        Verdict::Failure => 1,
        Verdict::Abandoned => 2,
    }
}

/// The causes with slots of their own ([`cause_index`]); a cause not listed (one
/// added to sluice later) is looked up in its family each time.
const CAUSES: [Cause; 20] = [
    Cause::Done,
    Cause::End,
    Cause::ErrorItem,
    Cause::ErrorEvent,
    Cause::Truncated,
    Cause::FirstTokenTimeout,
    Cause::IdleTimeout,
    Cause::Deadline,
    Cause::Panic,
    Cause::ClientLeft,
    Cause::ClientLeftBeforeHead,
    Cause::ClientStalled,
    Cause::Status,
    Cause::SendFailed,
    Cause::Marked,
    Cause::GrpcStatus,
    Cause::HeaderTimeout,
    Cause::Shutdown,
    Cause::HedgeLost,
    Cause::PeerFailed,
];

/// A cause's slot index, if it has one.
fn cause_index(cause: Cause) -> Option<usize> {
    CAUSES.iter().position(|&c| c == cause)
}

/// How many operations there are, for [`operation_index`].
const OPERATIONS: usize = 2;

/// An operation's slot index.
const fn operation_index(operation: Operation) -> usize {
    match operation {
        Operation::Chat => 0,
        Operation::TextCompletion => 1,
    }
}

/// How many attempt kinds and results there are, for [`attempt_index`].
const ATTEMPTS: usize = 3 * 4;

/// An attempt's slot index, by its kind and result.
const fn attempt_index(kind: AttemptKind, result: AttemptResult) -> usize {
    let kind = match kind {
        AttemptKind::First => 0,
        AttemptKind::Retry => 1,
        AttemptKind::Hedge => 2,
    };
    let result = match result {
        AttemptResult::Answered => 0,
        AttemptResult::Failed => 1,
        AttemptResult::HedgeLost => 2,
        AttemptResult::Cancelled => 3,
    };
    kind * 4 + result
}

/// One worker's name and its series of the families every request touches, kept so
/// that a verdict finds them without a family lookup.
#[derive(Debug)]
struct Worker {
    name: WorkerName,
    /// Its `sluice_streams_cancelled_total` (made at the start, as before).
    cancelled: Counter,
    /// `sluice_verdicts_total`, by verdict and cause.
    verdicts: Slots<Counter>,
    /// `gen_ai_server_request_duration_seconds`, by operation, verdict and, on
    /// failures, cause (the first cause's slot otherwise: no `error_type`).
    duration: Slots<Histogram>,
    /// `gen_ai_server_time_to_first_token_seconds`, by operation.
    first_token: Slots<Histogram>,
    /// `gen_ai_server_time_per_output_token_seconds`, by operation.
    per_token: Slots<Histogram>,
    /// `gen_ai_client_token_usage`, by verdict and token type.
    tokens: Slots<Histogram>,
    /// `sluice_attempts_total`, by kind and result.
    attempts: Slots<Counter>,
}

impl Worker {
    fn new(name: &str, cancelled: &Family<WorkerLabels, Counter>) -> Self {
        let name = WorkerName(Arc::from(name));
        let cancelled = cancelled.get_or_create_owned(&WorkerLabels {
            worker: name.clone(),
        });
        Self {
            name,
            cancelled,
            verdicts: Slots::new(VERDICTS * CAUSES.len()),
            duration: Slots::new(OPERATIONS * VERDICTS * CAUSES.len()),
            first_token: Slots::new(OPERATIONS),
            per_token: Slots::new(OPERATIONS),
            tokens: Slots::new(VERDICTS * 2),
            attempts: Slots::new(ATTEMPTS),
        }
    }
}

/// The registry and its metric families.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    workers: Vec<Worker>,
    /// Each worker's role, in prefill/decode mode.
    roles: Vec<&'static str>,
    state: Family<StateLabels, Gauge>,
    verdicts: Family<VerdictLabels, Counter>,
    transitions: Family<TransitionLabels, Counter>,
    unavailable: Counter,
    aborts: Family<AbortLabels, Counter>,
    health: Family<HealthLabels, Counter>,
    attempts: Family<AttemptLabels, Counter>,
    refused: Family<RefusedLabels, Counter>,
    ejected: Gauge,
    max_ejected: Gauge,
    first_token: Family<TokenLabels, Histogram, Buckets>,
    per_token: Family<TokenLabels, Histogram, Buckets>,
    duration: Family<DurationLabels, Histogram, Buckets>,
    tokens: Family<UsageLabels, Histogram, Buckets>,
}

/// A breaker state's label value ([`State::as_str`]).
pub fn state_name(state: State) -> &'static str {
    state.as_str()
}

/// A transition reason's label value ([`Reason::as_str`]).
pub fn reason_name(reason: Reason) -> &'static str {
    reason.as_str()
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
        let attempts = Family::<AttemptLabels, Counter>::default();
        let refused = Family::<RefusedLabels, Counter>::default();
        let ejected = Gauge::default();
        let max_ejected = Gauge::default();
        let first_token = Family::new_with_constructor(time_to_first_token as Buckets);
        let per_token = Family::new_with_constructor(time_per_output_token as Buckets);
        let duration = Family::new_with_constructor(request_duration as Buckets);
        let tokens = Family::new_with_constructor(token_usage as Buckets);
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
            "sluice_attempts",
            "Attempts sent to workers, by kind (first, retry, hedge) and result",
            attempts.clone(),
        );
        registry.register(
            "sluice_retries_refused",
            "Retries and hedges the rules allowed but that were not made, by reason",
            refused.clone(),
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
        registry.register_with_unit(
            "gen_ai_server_time_to_first_token",
            "Time from a request's arrival to its stream's first progress event, for successful responses",
            Unit::Seconds,
            first_token.clone(),
        );
        registry.register_with_unit(
            "gen_ai_server_time_per_output_token",
            "Time per progress event after the first, for successful responses with two or more",
            Unit::Seconds,
            per_token.clone(),
        );
        registry.register_with_unit(
            "gen_ai_server_request_duration",
            "Time from a request's arrival to its verdict",
            Unit::Seconds,
            duration.clone(),
        );
        registry.register(
            "gen_ai_client_token_usage",
            "Tokens used per request, by type, whatever the verdict: input and output as \
             the stream reported them; output falls back to the stream's progress events \
             when it reported none (the client left before the usage came, say)",
            tokens.clone(),
        );
        let workers = workers
            .iter()
            .map(|name| Worker::new(name, &cancelled))
            .collect();
        Self {
            registry,
            workers,
            roles: Vec::new(),
            state,
            verdicts,
            transitions,
            unavailable,
            aborts,
            health,
            attempts,
            refused,
            ejected,
            max_ejected,
            first_token,
            per_token,
            duration,
            tokens,
        }
    }

    /// Metrics for prefill/decode mode: as [`new`](Self::new), and the series of
    /// verdicts, breaker states, transitions and aborts are labelled with each
    /// worker's role too (`roles[i]` of `workers[i]`: `prefill` or `decode`).
    pub fn with_roles(workers: &[String], roles: &[&'static str]) -> Self {
        Self {
            roles: roles.to_vec(),
            ..Self::new(workers)
        }
    }

    /// `worker`'s labels: its name, and its role if it has one.
    fn who(&self, worker: usize, name: &WorkerName) -> Who {
        Who {
            worker: name.clone(),
            role: self.roles.get(worker).copied(),
        }
    }

    /// Counts one verdict of `worker`, by its cause; `cancelled` when the client left
    /// first.
    pub fn verdict(&self, worker: usize, outcome: Outcome, cancelled: bool) {
        let Some(w) = self.workers.get(worker) else {
            return;
        };
        let slot = cause_index(outcome.cause)
            .map(|cause| verdict_index(outcome.verdict) * CAUSES.len() + cause);
        let labels = || VerdictLabels {
            who: self.who(worker, &w.name),
            verdict: VerdictLabel(outcome.verdict),
            cause: CauseLabel(outcome.cause),
        };
        w.verdicts.with(slot, &self.verdicts, labels, |c| {
            c.inc();
        });
        if cancelled {
            w.cancelled.inc();
        }
    }

    /// Observes how long one request to `worker` took, whose verdict is `outcome`:
    /// its duration always (labelled by the verdict, and on a failure by its cause
    /// as `error_type`); its time to first token and time per output token only for
    /// a successful response, as OpenTelemetry's conventions define them.
    pub fn latency(&self, worker: usize, outcome: Outcome, latency: &Latency) {
        let Some(w) = self.workers.get(worker) else {
            return;
        };
        let operation = operation_index(latency.operation);
        let failure = outcome.verdict == Verdict::Failure;
        let cause = if failure {
            cause_index(outcome.cause)
        } else {
            Some(0)
        };
        let slot = cause.map(|cause| {
            (operation * VERDICTS + verdict_index(outcome.verdict)) * CAUSES.len() + cause
        });
        let labels = || DurationLabels {
            who: self.who(worker, &w.name),
            gen_ai_operation_name: latency.operation,
            verdict: VerdictLabel(outcome.verdict),
            error_type: failure.then_some(CauseLabel(outcome.cause)),
        };
        w.duration.with(slot, &self.duration, labels, |h| {
            h.observe(latency.duration.as_secs_f64());
        });
        if outcome.verdict != Verdict::Success {
            return;
        }
        let labels = || TokenLabels {
            who: self.who(worker, &w.name),
            gen_ai_operation_name: latency.operation,
        };
        if let Some(first) = latency.first_token {
            w.first_token
                .with(Some(operation), &self.first_token, labels, |h| {
                    h.observe(first.as_secs_f64());
                });
        }
        if let Some(per) = latency.per_token {
            w.per_token
                .with(Some(operation), &self.per_token, labels, |h| {
                    h.observe(per.as_secs_f64());
                });
        }
    }

    /// Observes the tokens of one request to `worker`, whose verdict is `outcome`:
    /// its input tokens if the stream reported them, its output tokens if it did, or
    /// else its progress events if it saw any (they stand in for output tokens).
    pub fn token_usage(&self, worker: usize, outcome: Outcome) {
        let Some(w) = self.workers.get(worker) else {
            return;
        };
        let output = match outcome.usage.output_tokens {
            Some(tokens) => Some(tokens),
            None => (outcome.progress > 0).then_some(outcome.progress),
        };
        for (i, kind, tokens) in [
            (0, TokenType::Input, outcome.usage.input_tokens),
            (1, TokenType::Output, output),
        ] {
            if let Some(tokens) = tokens {
                let slot = verdict_index(outcome.verdict) * 2 + i;
                let labels = || UsageLabels {
                    who: self.who(worker, &w.name),
                    verdict: VerdictLabel(outcome.verdict),
                    gen_ai_token_type: kind,
                };
                w.tokens.with(Some(slot), &self.tokens, labels, |h| {
                    h.observe(tokens as f64);
                });
            }
        }
    }

    /// Counts one transition of `worker`'s breaker.
    pub fn transition(&self, worker: usize, t: &Transition) {
        let Some(w) = self.workers.get(worker) else {
            return;
        };
        self.transitions
            .get_or_create(&TransitionLabels {
                who: self.who(worker, &w.name),
                from: t.from.into(),
                to: t.to.into(),
                reason: ReasonLabel(t.reason),
            })
            .inc();
    }

    /// Counts one request refused for want of an admitted worker.
    pub fn unavailable(&self) {
        self.unavailable.inc();
    }

    /// Counts one explicit abort sent to `worker`'s engine, by `result`.
    pub fn abort(&self, worker: usize, result: AbortResult) {
        let Some(w) = self.workers.get(worker) else {
            return;
        };
        self.aborts
            .get_or_create(&AbortLabels {
                who: self.who(worker, &w.name),
                result,
            })
            .inc();
    }

    /// Counts one attempt sent to `worker`, by its kind and how it ended.
    pub fn attempt(&self, worker: usize, kind: AttemptKind, result: AttemptResult) {
        let Some(w) = self.workers.get(worker) else {
            return;
        };
        let labels = || AttemptLabels {
            worker: w.name.clone(),
            kind,
            result,
        };
        let slot = attempt_index(kind, result);
        w.attempts.with(Some(slot), &self.attempts, labels, |c| {
            c.inc();
        });
    }

    /// Counts one retry or hedge not made, and why.
    pub fn refused(&self, kind: AttemptKind, reason: Refusal) {
        self.refused
            .get_or_create(&RefusedLabels { kind, reason })
            .inc();
    }

    /// Counts one health check of `worker`.
    pub fn health_check(&self, worker: usize, passed: bool) {
        let Some(w) = self.workers.get(worker) else {
            return;
        };
        self.health
            .get_or_create(&HealthLabels {
                worker: w.name.clone(),
                result: if passed {
                    HealthResult::Passed
                } else {
                    HealthResult::Failed
                },
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
        for (i, (w, state)) in self.workers.iter().zip(states).enumerate() {
            let now = StateLabel::from(*state);
            for s in STATES {
                let s = StateLabel::from(s);
                self.state
                    .get_or_create(&StateLabels {
                        who: self.who(i, &w.name),
                        state: s,
                    })
                    .set(i64::from(s == now));
            }
        }
        let mut out = String::new();
        encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(metrics: &Metrics) -> Vec<String> {
        let out = metrics.render(&[State::Closed], 0, 1).expect("renders");
        out.lines().map(str::to_owned).collect()
    }

    #[test]
    fn every_cause_has_its_own_slot() {
        for (i, cause) in CAUSES.iter().enumerate() {
            assert_eq!(cause_index(*cause), Some(i), "{}", cause.as_str());
        }
    }

    /// A kept series is the family's: it counts into what a scrape reads, and a label
    /// set never used renders no series, as before the slots.
    #[test]
    fn kept_series_render_as_the_family_s() {
        let metrics = Metrics::new(&["w0".to_owned()]);
        let latency = Latency {
            operation: Operation::Chat,
            duration: Duration::from_millis(30),
            first_token: Some(Duration::from_millis(5)),
            per_token: None,
        };
        let done = Outcome::new(Verdict::Success, Cause::Done, 3, 30)
            .with_usage(sluice::Usage::new(Some(7), Some(2)));
        let truncated = Outcome::new(Verdict::Failure, Cause::Truncated, 1, 10);
        for outcome in [done, done, truncated] {
            metrics.verdict(0, outcome, false);
            metrics.latency(0, outcome, &latency);
            metrics.token_usage(0, outcome);
        }
        metrics.attempt(0, AttemptKind::First, AttemptResult::Answered);
        metrics.attempt(0, AttemptKind::First, AttemptResult::Answered);
        let lines = lines(&metrics);
        for want in [
            r#"sluice_verdicts_total{worker="w0",verdict="success",cause="done"} 2"#,
            r#"sluice_verdicts_total{worker="w0",verdict="failure",cause="truncated"} 1"#,
            r#"sluice_streams_cancelled_total{worker="w0"} 0"#,
            r#"sluice_attempts_total{worker="w0",kind="first",result="answered"} 2"#,
            r#"gen_ai_server_request_duration_seconds_count{worker="w0",gen_ai_operation_name="chat",verdict="success"} 2"#,
            r#"gen_ai_server_request_duration_seconds_count{worker="w0",gen_ai_operation_name="chat",verdict="failure",error_type="truncated"} 1"#,
            r#"gen_ai_server_time_to_first_token_seconds_count{worker="w0",gen_ai_operation_name="chat"} 2"#,
            r#"gen_ai_client_token_usage_count{worker="w0",verdict="success",gen_ai_token_type="input"} 2"#,
            r#"gen_ai_client_token_usage_sum{worker="w0",verdict="success",gen_ai_token_type="output"} 4.0"#,
        ] {
            assert!(lines.iter().any(|l| l == want), "no {want} in {lines:#?}");
        }
        for absent in [
            "gen_ai_server_time_per_output_token_seconds_count",
            r#"gen_ai_client_token_usage_count{worker="w0",verdict="failure""#,
            r#"verdict="abandoned""#,
        ] {
            assert!(
                !lines.iter().any(|l| l.contains(absent)),
                "{absent} in {lines:#?}"
            );
        }
    }
}
