//! The verdict ticket: the recorder of one request from the moment it is sent
//! upstream.

use std::sync::Arc;

use sluice::breaker::{Recorded, SetPermit};
use sluice::{Cause, Outcome, Recorder, Verdict};

use super::{Event, How, Inner};

/// The recorder of one request from the moment it is sent upstream: holds the
/// worker's permit until the verdict is in, then reports it and logs what the
/// breaker did. Guarded by a `RecordGuard` until the response head is in, it
/// records `Abandoned` if the handler is dropped before the stream starts (the
/// client left while waiting for headers).
///
/// Once the gateway's shutdown grace is over, an `Abandoned` verdict with cause
/// `client_left` is told as cause `shutdown`: the gateway dropped the request, not
/// the client.
pub(super) struct Ticket {
    pub(super) gw: Arc<Inner>,
    pub(super) request: String,
    pub(super) permit: Option<SetPermit>,
    /// The id to abort the request by at the engine, if the profile aborts.
    pub(super) rid: Option<String>,
    /// The stream has started (a verdict through the recorder is the stream's).
    pub(super) streaming: bool,
}

impl Ticket {
    /// Reports `outcome` to the worker's breaker (once), counts and logs it.
    pub(super) fn settle(&mut self, mut outcome: Outcome, how: How) {
        let Some(permit) = self.permit.take() else {
            return;
        };
        let gw = &self.gw;
        if outcome.verdict == Verdict::Abandoned
            && outcome.cause == Cause::ClientLeft
            && gw.grace_is_over()
        {
            outcome.cause = Cause::Shutdown;
        }
        let worker = permit.worker();
        match permit.report(outcome.verdict) {
            Recorded::Counted(Some(t)) => gw.transition(worker, t),
            Recorded::Stale => gw.emit(Event::Stale {
                request: self.request.clone(),
                worker,
            }),
            _ => {}
        }
        gw.metrics
            .verdict(worker, outcome, how.cancelled(outcome.verdict));
        tracing::info!(
            request = self.request,
            worker = gw.name(worker),
            verdict = outcome.verdict.as_str(),
            cause = outcome.cause.as_str(),
            chunks = outcome.chunks,
            bytes = outcome.bytes,
            how = how.as_str(),
            "verdict"
        );
        gw.emit(Event::Verdict {
            request: self.request.clone(),
            worker,
            outcome,
            how,
        });
        // The request reached the engine (a ticket exists from the send on) and the
        // gateway stopped waiting for it: ask the engine to stop, if its profile says
        // so.
        if how.abort_engine(outcome.verdict) {
            if let Some(rid) = self.rid.take() {
                gw.abort(self.request.clone(), worker, rid);
            }
        }
    }
}

impl Recorder for Ticket {
    fn record(mut self, outcome: Outcome) {
        let how = if self.streaming {
            How::Stream
        } else {
            How::ClientLeft
        };
        self.settle(outcome, how);
    }
}
