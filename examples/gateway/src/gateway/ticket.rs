//! The verdict ticket: the recorder of one request from the moment it is sent
//! upstream.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use sluice::breaker::{Recorded, SetPermit};
use sluice::{Cause, Outcome, Recorder, Verdict};
use tokio::time::Instant;

use super::{Api, GatewayEvent, Inner};
use crate::metrics::Latency;

/// When a request arrived, and when its stream made progress: written by the
/// client's body as it polls the tracked stream, read by the ticket at the verdict.
#[derive(Debug)]
pub(super) struct Timing {
    started: Instant,
    marks: Mutex<Marks>,
}

/// The progress seen so far.
#[derive(Debug, Clone, Copy, Default)]
struct Marks {
    first: Option<Instant>,
    last: Option<Instant>,
    progress: u64,
}

impl Timing {
    /// A request that arrived now.
    pub(super) fn start() -> Arc<Self> {
        Arc::new(Self {
            started: Instant::now(),
            marks: Mutex::new(Marks::default()),
        })
    }

    /// The stream's progress count grew to `progress`, now.
    pub(super) fn progressed(&self, progress: u64) {
        let now = Instant::now();
        let mut marks = self.marks.lock().unwrap_or_else(PoisonError::into_inner);
        if progress > 0 && marks.first.is_none() {
            marks.first = Some(now);
        }
        marks.last = Some(now);
        marks.progress = progress;
    }

    /// The request's latency for `api`, its verdict given now.
    pub(super) fn latency(&self, api: Api) -> Latency {
        let now = Instant::now();
        let marks = *self.marks.lock().unwrap_or_else(PoisonError::into_inner);
        let per_token = match (marks.first, marks.last) {
            (Some(first), Some(last)) if marks.progress >= 2 => {
                let after_first = u32::try_from(marks.progress - 1).unwrap_or(u32::MAX);
                Some(last.duration_since(first) / after_first)
            }
            _ => None,
        };
        Latency {
            operation: api.operation(),
            duration: now.duration_since(self.started),
            first_token: marks.first.map(|first| first.duration_since(self.started)),
            per_token,
        }
    }
}

/// The recorder of one request from the moment it is sent upstream: holds the
/// worker's permit until the verdict is in, then reports it and logs what the
/// breaker did. Guarded by a `RecordGuard` until the response head is in, it
/// records `Abandoned` if the handler is dropped before the stream starts (the
/// client left while waiting for headers).
///
/// Once the gateway's shutdown grace is over, an `Abandoned` verdict with cause
/// `client_left` (or `client_left_before_head`) is told as cause `shutdown`: the
/// gateway dropped the request, not the client.
pub(super) struct Ticket {
    pub(super) gw: Arc<Inner>,
    pub(super) request: String,
    pub(super) permit: Option<SetPermit>,
    /// The route's API.
    pub(super) api: Api,
    /// When the request arrived and its stream progressed.
    pub(super) timing: Arc<Timing>,
    /// The request's span (its id, route and worker): the verdict is told inside it.
    pub(super) span: tracing::Span,
    /// The id to abort the request by at the engine, if the profile aborts.
    pub(super) rid: Option<String>,
    /// Set when another attempt of the request won the race to the first token:
    /// this one, dropped unended, is Abandoned with cause `hedge_lost`.
    pub(super) hedge_lost: Arc<AtomicBool>,
}

impl Ticket {
    /// Reports `outcome` to the worker's breaker (once), counts and logs it.
    pub(super) fn settle(&mut self, mut outcome: Outcome) {
        let Some(permit) = self.permit.take() else {
            return;
        };
        let _inside = self.span.enter();
        let gw = &self.gw;
        if outcome.verdict == Verdict::Abandoned && self.hedge_lost.load(Ordering::Acquire) {
            outcome.cause = Cause::HedgeLost;
        }
        if outcome.verdict == Verdict::Abandoned
            && matches!(
                outcome.cause,
                Cause::ClientLeft | Cause::ClientLeftBeforeHead
            )
            && gw.grace_is_over()
        {
            outcome.cause = Cause::Shutdown;
        }
        let worker = permit.worker();
        match permit.report(outcome.verdict) {
            Recorded::Counted(Some(t)) => gw.transition(worker, t),
            Recorded::Stale => gw.emit(GatewayEvent::Stale {
                request: self.request.clone(),
                worker,
            }),
            _ => {}
        }
        gw.metrics.verdict(worker, outcome, cancelled(outcome));
        gw.metrics
            .latency(worker, outcome, &self.timing.latency(self.api));
        gw.metrics.token_usage(worker, outcome);
        tracing::info!(
            request = self.request,
            worker = gw.name(worker),
            verdict = outcome.verdict.as_str(),
            cause = outcome.cause.as_str(),
            chunks = outcome.chunks,
            bytes = outcome.bytes,
            progress = outcome.progress,
            input_tokens = outcome.usage.input_tokens,
            output_tokens = outcome.usage.output_tokens,
            "verdict"
        );
        gw.emit(GatewayEvent::Verdict {
            request: self.request.clone(),
            worker,
            outcome,
        });
        // The request reached the engine (a ticket exists from the send on) and the
        // gateway stopped waiting for it: ask the engine to stop, if its profile says
        // so.
        if abort_engine(outcome) {
            if let Some(rid) = self.rid.take() {
                gw.abort(self.request.clone(), worker, rid);
            }
        }
    }
}

impl Recorder for Ticket {
    /// The tracked stream's verdict, or, from the `RecordGuard` dropped with the
    /// handler, `client_left_before_head`.
    fn record(mut self, outcome: Outcome) {
        self.settle(outcome);
    }
}

/// Whether the gateway dropped the upstream before its end without blaming the
/// worker: the client left (before or after the response head), the shutdown grace
/// ended, or another attempt won the race to the first token.
fn cancelled(outcome: Outcome) -> bool {
    outcome.verdict == Verdict::Abandoned
        && matches!(
            outcome.cause,
            Cause::ClientLeft | Cause::ClientLeftBeforeHead | Cause::Shutdown | Cause::HedgeLost
        )
}

/// Whether the gateway stopped waiting for a request the engine has: cancelled, or
/// no response head in time. An engine profile that aborts by id is asked to stop
/// it.
fn abort_engine(outcome: Outcome) -> bool {
    cancelled(outcome) || outcome.cause == Cause::HeaderTimeout
}
