//! The verdict ticket: the recorder of one request from the moment it is sent
//! upstream.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use sluice::breaker::{Recorded, SetPermit};
use sluice::{Cause, Outcome, Recorder, Verdict};
use tokio::time::Instant;

use super::{Api, GatewayEvent, Inner};
use crate::metrics::Latency;

/// When a request arrived, and when its stream made progress: written by the
/// client's body once, just before the tracked stream's verdict is recorded, read by
/// the ticket at the verdict.
///
/// The marks are atomics (nanoseconds since the arrival), not a lock. The client's
/// body is their only writer (it notes the progress times as it polls, from the
/// clock reading that restarted the idle timer, and writes the first and the last
/// here), and its ticket reads them when its verdict is recorded: in the body's poll
/// or drop, after the body's write, on the task that owns the body, so relaxed
/// accesses see every mark. (Another attempt's ticket, settled while the body runs,
/// sees no marks, or the three at different points: it reads a latency the client
/// never got.)
#[derive(Debug)]
pub(super) struct Timing {
    started: Instant,
    /// The first progress, in nanoseconds since `started`; [`NONE`] until then.
    first: AtomicU64,
    /// The last progress, in nanoseconds since `started`; [`NONE`] until then.
    last: AtomicU64,
    /// The progress count at `last`.
    progress: AtomicU64,
}

/// No mark yet.
const NONE: u64 = u64::MAX;

impl Timing {
    /// A request that arrived now.
    pub(super) fn start() -> Arc<Self> {
        Arc::new(Self {
            started: Instant::now(),
            first: AtomicU64::new(NONE),
            last: AtomicU64::new(NONE),
            progress: AtomicU64::new(0),
        })
    }

    /// The stream made `progress` progress events, the first at `first` and the last
    /// at `last`: marked once, just before its verdict is recorded.
    pub(super) fn progressed(&self, progress: u64, first: Instant, last: Instant) {
        // Below NONE for 584 years.
        let since = |at: Instant| {
            u64::try_from(at.saturating_duration_since(self.started).as_nanos()).unwrap_or(NONE - 1)
        };
        self.first.store(since(first), Ordering::Relaxed);
        self.last.store(since(last), Ordering::Relaxed);
        self.progress.store(progress, Ordering::Relaxed);
    }

    /// The request's latency for `api`, its verdict given now.
    pub(super) fn latency(&self, api: Api) -> Latency {
        let mark = |at: &AtomicU64| match at.load(Ordering::Relaxed) {
            NONE => None,
            nanos => Some(Duration::from_nanos(nanos)),
        };
        let (first, last) = (mark(&self.first), mark(&self.last));
        let progress = self.progress.load(Ordering::Relaxed);
        let per_token = match (first, last) {
            (Some(first), Some(last)) if progress >= 2 => {
                let after_first = u32::try_from(progress - 1).unwrap_or(u32::MAX);
                Some(last.saturating_sub(first) / after_first)
            }
            _ => None,
        };
        Latency {
            operation: api.operation(),
            duration: self.started.elapsed(),
            first_token: first,
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
