//! Disaggregated pairs: one request served by a prefill worker P and a decode worker
//! D, each judged on its own (SPEC section 7).
//!
//! A pair needs what a single stream does not: two permits from two pools (a
//! [`SharedBreakerSet`](crate::breaker::SharedBreakerSet) each, with its own cap), one
//! client-facing stream (D's), and one rule that ties the two verdicts together:
//! **a P that fails before D has committed (handed its first byte to the client) or
//! ended drops D, and D is then
//! [`Abandoned`](Verdict::Abandoned) with cause [`PeerFailed`](Cause::PeerFailed)**,
//! not Failure: it did nothing wrong. Everything else is each worker's own verdict,
//! from its own response, recorded exactly once (a [`Recorder`] consumes itself).
//!
//! This module is that rule and nothing more, sans-io and runtime-free: a
//! [`PairLink`] shared by the two sides (one atomic byte), and two recorder
//! combinators, [`PrefillRecorder`] and [`DecodeRecorder`], that wrap each worker's
//! recorder (its permit, or a gateway's ticket around it). The link decides, the
//! driver acts: it is told *what* to drop, and drops it.
//!
//! # The driving pattern
//!
//! ```text
//! link = PairLink::new()
//! p = link.prefill(p_permit)        d = link.decode(d_permit)
//! send the same request to P and to D at once (P's recorder and D's each held in a
//!   RecordGuard until their response heads, then as their tracked stream's recorder)
//! P's body: read to its end, never forwarded; its tracked stream records P's verdict
//!   (4xx: neutral, a StatusPolicy matter, as for any worker)
//!   -> when P's verdict is a Failure and link.peer_failed(): drop D now (whatever
//!      stage it is at); D records Abandoned, peer_failed. The client gets an error.
//! D's body: the client's stream. Before handing it its first byte:
//!   if !link.commit_decode() { drop D: P failed first }   // D: Abandoned, peer_failed
//! the client leaves: drop both (each records Abandoned, client_left, unless it had
//!   already ended: an ended verdict stands). link.client_left() tells the side that
//!   is not the client's stream (P) to stop.
//! D fails: D's Failure. P's own verdict stands: keep reading P to its own end.
//! ```
//!
//! What the link guarantees, whatever the order the two sides end in (each
//! operation is one atomic read-modify-write, so a P failing while D commits is
//! decided one way, and both sides see the same way):
//!
//! * each recorder records exactly once (it is consumed), P's verdict unchanged;
//! * D's verdict is Abandoned `peer_failed` if and only if P failed before D
//!   committed or ended; then D's commit is refused;
//! * otherwise D's verdict is its own; a client that leaves is never either
//!   worker's Failure (that is the tracked streams' rule; the link adds nothing that
//!   could blame one).
//!
//! ```
//! use sluice::pair::PairLink;
//! use sluice::{Cause, Outcome, Recorder, RecordGuard, Verdict};
//!
//! let (tx, rx) = std::sync::mpsc::channel();
//! let (p_tx, d_tx) = (tx.clone(), tx);
//! let link = PairLink::new();
//! let p = link.prefill(move |o: Outcome| drop(p_tx.send(("P", o))));
//! let d = RecordGuard::new(link.decode(move |o: Outcome| drop(d_tx.send(("D", o)))));
//! // P answers 500 while D is still waiting for its response head.
//! p.record(Outcome::new(Verdict::Failure, Cause::Status, 0, 0));
//! assert!(link.peer_failed()); // the driver drops D now
//! drop(d);
//! let got: Vec<_> = rx.iter().map(|(who, o)| (who, o.verdict, o.cause)).collect();
//! assert_eq!(got, [
//!     ("P", Verdict::Failure, Cause::Status),
//!     ("D", Verdict::Abandoned, Cause::PeerFailed),
//! ]);
//! ```

#[cfg(not(sluice_loom))]
use alloc::sync::Arc;
#[cfg(not(sluice_loom))]
use core::sync::atomic::{AtomicU8, Ordering};
// Under the `sluice_loom` cfg, loom's: tests/loom_pair.rs checks every interleaving.
#[cfg(sluice_loom)]
use loom::sync::Arc;
#[cfg(sluice_loom)]
use loom::sync::atomic::{AtomicU8, Ordering};

use crate::{Cause, Outcome, Recorder, Verdict};

/// P's verdict was a Failure.
const P_FAILED: u8 = 1;
/// D handed its first byte to the client.
const D_COMMITTED: u8 = 1 << 1;
/// D recorded its verdict.
const D_ENDED: u8 = 1 << 2;
/// P failed while D had neither committed nor ended: D is to be dropped.
const PEER_FAILED: u8 = 1 << 3;
/// D was abandoned by its client: P is to be dropped.
const CLIENT_LEFT: u8 = 1 << 4;
/// P recorded its verdict.
const P_ENDED: u8 = 1 << 5;

/// What the two sides of one pair share: who ended how, in the order it happened.
///
/// Cheap to clone (an `Arc` around one atomic byte); every clone is the same link.
/// Make one per request, wrap P's recorder with [`prefill`](Self::prefill) and D's
/// with [`decode`](Self::decode), and ask it what to drop:
/// [`peer_failed`](Self::peer_failed) (drop D), [`client_left`](Self::client_left)
/// (drop P), and, before D's first byte goes to the client,
/// [`commit_decode`](Self::commit_decode).
#[derive(Debug, Clone)]
pub struct PairLink {
    state: Arc<AtomicU8>,
}

impl Default for PairLink {
    fn default() -> Self {
        Self::new()
    }
}

impl PairLink {
    /// A link for one request, nothing ended yet.
    pub fn new() -> Self {
        Self {
            state: Arc::new(AtomicU8::new(0)),
        }
    }

    /// Wraps P's recorder: a Failure it records marks the pair, and, if D has not
    /// committed or ended by then, makes [`peer_failed`](Self::peer_failed) true.
    /// P's outcome is passed on unchanged.
    pub fn prefill<R: Recorder>(&self, recorder: R) -> PrefillRecorder<R> {
        PrefillRecorder {
            link: self.clone(),
            inner: recorder,
        }
    }

    /// Wraps D's recorder: if P failed before D committed or ended, D's outcome
    /// becomes Abandoned with cause [`PeerFailed`](Cause::PeerFailed) (its counts
    /// kept); otherwise it is passed on unchanged. An Abandoned outcome with a
    /// client's cause ([`ClientLeft`](Cause::ClientLeft),
    /// [`ClientLeftBeforeHead`](Cause::ClientLeftBeforeHead)) makes
    /// [`client_left`](Self::client_left) true.
    pub fn decode<R: Recorder>(&self, recorder: R) -> DecodeRecorder<R> {
        DecodeRecorder {
            link: self.clone(),
            inner: recorder,
        }
    }

    /// D is about to hand its first byte to the client. Returns `true` if it may
    /// (from now on a failing P no longer touches D), `false` if P has already
    /// failed: drop D instead (it records Abandoned, `peer_failed`) and answer the
    /// client with an error.
    #[must_use = "a refused commit means D is to be dropped"]
    pub fn commit_decode(&self) -> bool {
        self.state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                (s & PEER_FAILED == 0).then_some(s | D_COMMITTED)
            })
            .is_ok()
    }

    /// P failed before D committed or ended: D is to be dropped now (it will record
    /// Abandoned, `peer_failed`).
    pub fn peer_failed(&self) -> bool {
        self.load() & PEER_FAILED != 0
    }

    /// D was abandoned by its client (D recorded Abandoned with a client's cause):
    /// P is to be dropped too.
    pub fn client_left(&self) -> bool {
        self.load() & CLIENT_LEFT != 0
    }

    /// P has recorded its verdict.
    pub fn prefill_ended(&self) -> bool {
        self.load() & P_ENDED != 0
    }

    /// D has recorded its verdict.
    pub fn decode_ended(&self) -> bool {
        self.load() & D_ENDED != 0
    }

    fn load(&self) -> u8 {
        self.state.load(Ordering::Acquire)
    }

    /// P recorded `verdict`.
    fn prefill_recorded(&self, verdict: Verdict) {
        let _ = self
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                let mut next = s | P_ENDED;
                if verdict == Verdict::Failure {
                    next |= P_FAILED;
                    if s & (D_COMMITTED | D_ENDED) == 0 {
                        next |= PEER_FAILED;
                    }
                }
                Some(next)
            });
    }

    /// D recorded `outcome`; returns what D is to record.
    fn decode_recorded(&self, mut outcome: Outcome) -> Outcome {
        let client = outcome.verdict == Verdict::Abandoned
            && matches!(
                outcome.cause,
                Cause::ClientLeft | Cause::ClientLeftBeforeHead
            );
        let before = self
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                let mut next = s | D_ENDED;
                if client && s & PEER_FAILED == 0 {
                    next |= CLIENT_LEFT;
                }
                Some(next)
            })
            .unwrap_or_else(|s| s);
        if before & PEER_FAILED != 0 {
            outcome.verdict = Verdict::Abandoned;
            outcome.cause = Cause::PeerFailed;
        }
        outcome
    }
}

/// P's recorder, wrapped by [`PairLink::prefill`]: records P's outcome unchanged,
/// and marks a Failure on the link.
#[derive(Debug)]
pub struct PrefillRecorder<R> {
    link: PairLink,
    inner: R,
}

impl<R> PrefillRecorder<R> {
    /// The pair's link.
    pub fn link(&self) -> &PairLink {
        &self.link
    }
}

impl<R: Recorder> Recorder for PrefillRecorder<R> {
    fn record(self, outcome: Outcome) {
        // The link first: whoever the inner recorder wakes sees the pair as it is.
        self.link.prefill_recorded(outcome.verdict);
        self.inner.record(outcome);
    }
}

/// D's recorder, wrapped by [`PairLink::decode`]: records Abandoned `peer_failed`
/// if P failed before D committed or ended, D's own outcome otherwise.
#[derive(Debug)]
pub struct DecodeRecorder<R> {
    link: PairLink,
    inner: R,
}

impl<R> DecodeRecorder<R> {
    /// The pair's link.
    pub fn link(&self) -> &PairLink {
        &self.link
    }
}

impl<R: Recorder> Recorder for DecodeRecorder<R> {
    fn record(self, outcome: Outcome) {
        let outcome = self.link.decode_recorded(outcome);
        self.inner.record(outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::cell::Cell;

    #[test]
    fn a_decode_that_committed_keeps_its_verdict_when_prefill_fails_later() {
        let got = Cell::new(None);
        let link = PairLink::new();
        let d = link.decode(|o: Outcome| got.set(Some((o.verdict, o.cause))));
        assert!(link.commit_decode());
        link.prefill(|_: Outcome| {})
            .record(Outcome::new(Verdict::Failure, Cause::Status, 0, 0));
        assert!(!link.peer_failed());
        d.record(Outcome::new(Verdict::Success, Cause::Done, 3, 30));
        assert_eq!(got.get(), Some((Verdict::Success, Cause::Done)));
    }

    #[test]
    fn a_commit_after_prefill_failed_is_refused() {
        let link = PairLink::new();
        link.prefill(|_: Outcome| {}).record(Outcome::new(
            Verdict::Failure,
            Cause::SendFailed,
            0,
            0,
        ));
        assert!(link.peer_failed());
        assert!(!link.commit_decode());
        let got = Cell::new(None);
        link.decode(|o: Outcome| got.set(Some(o)))
            .record(Outcome::new(Verdict::Abandoned, Cause::ClientLeft, 2, 20));
        let o = got.get().expect("recorded");
        assert_eq!(
            (o.verdict, o.cause, o.chunks),
            (Verdict::Abandoned, Cause::PeerFailed, 2)
        );
        assert!(!link.client_left(), "the gateway dropped D, not the client");
    }
}
