//! The gateway under test, runtime-neutral parts: what it does with the worker's
//! answer, and how its verdicts and forwarding reports reach the test.
//!
//! Every request's verdict goes to one channel; every relay task reports its
//! [`Forwarded`] (or `None` when it ended before forwarding) to another, after the
//! upstream was dropped.

use core::marker::PhantomData;

use async_channel::{Receiver, Sender};
use sluice::breaker::{Classified, StatusPolicy};
use sluice::forward::{ClientGone, Forwarded};
use sluice::sse::SseRules;
use sluice::{Outcome, Recorder, TrackedStream, Verdict};

use crate::{Clock, within};

/// The gateway's ends of the verdict and report channels.
#[derive(Debug, Clone)]
pub struct Sink {
    verdicts: Sender<(u64, Outcome)>,
    reports: Sender<(u64, Option<Forwarded>)>,
}

impl Sink {
    /// Request `id` recorded `outcome`.
    pub fn verdict(&self, id: u64, outcome: Outcome) {
        let _ = self.verdicts.try_send((id, outcome));
    }

    /// Request `id`'s relay ended, after forwarding (`Some`) or before.
    pub fn report(&self, id: u64, forwarded: Option<Forwarded>) {
        let _ = self.reports.try_send((id, forwarded));
    }
}

/// The test's ends of the verdict and report channels.
#[derive(Debug)]
pub struct Outcomes<C> {
    /// Every recorded verdict, by request id.
    pub verdicts: Receiver<(u64, Outcome)>,
    /// Every finished relay, by request id.
    pub reports: Receiver<(u64, Option<Forwarded>)>,
    clock: PhantomData<fn() -> C>,
}

/// A pair of unbounded channels: the gateway's [`Sink`] and the test's [`Outcomes`].
pub fn outcomes<C>() -> (Sink, Outcomes<C>) {
    let (verdicts, verdicts_rx) = async_channel::unbounded();
    let (reports, reports_rx) = async_channel::unbounded();
    let outcomes = Outcomes {
        verdicts: verdicts_rx,
        reports: reports_rx,
        clock: PhantomData,
    };
    (Sink { verdicts, reports }, outcomes)
}

impl<C: Clock> Outcomes<C> {
    /// The next verdict.
    pub async fn verdict(&self) -> (u64, Outcome) {
        within::<C, _>("verdict", self.verdicts.recv())
            .await
            .expect("verdict channel")
    }

    /// The next report of a finished relay.
    pub async fn report(&self) -> (u64, Option<Forwarded>) {
        within::<C, _>("report", self.reports.recv())
            .await
            .expect("report channel")
    }

    /// No verdict is waiting (none doubled so far).
    pub fn no_more_verdicts(&self) {
        if let Ok(extra) = self.verdicts.try_recv() {
            panic!("an extra verdict: {extra:?}");
        }
    }
}

/// The verdict for the start of a response that will not be streamed (default
/// status policy); `None` for a 2xx, whose stream decides.
pub fn status_verdict(status: u16) -> Option<Verdict> {
    match StatusPolicy::default().classify(status) {
        Classified::Settle(verdict) => Some(verdict),
        // Track, and whatever a later policy adds: the stream decides.
        _ => None,
    }
}

/// What the gateway does with the worker's answer, `until_closed` around the
/// upstream request: `(status, body)`, a send error, or the client gone.
///
/// Records the verdict of an answer that is not streamed and tells `head` the status
/// for the client (not when the client left); for a 2xx, tells `head` 200 and returns
/// the body, tracked with the OpenAI chat rules, recording to `rec`.
pub fn relay<S, E, R: Recorder>(
    answer: Result<Result<(u16, S), E>, ClientGone>,
    rec: R,
    head: impl FnOnce(u16),
) -> Option<TrackedStream<S, R>> {
    let (status, body) = match answer {
        Err(ClientGone) => {
            rec.record(Verdict::Abandoned.into());
            return None;
        }
        Ok(Err(_unreachable)) => {
            rec.record(Verdict::Failure.into());
            head(502);
            return None;
        }
        Ok(Ok(answer)) => answer,
    };
    if let Some(verdict) = status_verdict(status) {
        rec.record(verdict.into());
        head(status);
        return None;
    }
    head(200);
    Some(TrackedStream::new(body, rec).with_sse(SseRules::openai_chat()))
}
