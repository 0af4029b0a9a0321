//! A recorder that cannot be forgotten.

use crate::{Cause, Outcome, Recorder, Verdict};

/// Holds a [`Recorder`] through the gap between taking a permit and having a stream to
/// wrap (the wait for the worker's response headers, say), and records
/// [`Abandoned`](Verdict::Abandoned) with cause
/// [`ClientLeftBeforeHead`](Cause::ClientLeftBeforeHead) if it is dropped before
/// anything was recorded: a handler future dropped because the client left still
/// tells the breaker, and frees a half-open probe slot. (Once the recorder is handed
/// to a tracked stream, a client that leaves is [`ClientLeft`](Cause::ClientLeft).)
///
/// It is a `Recorder` itself: record through it (a status that settles the verdict),
/// or hand it to a [`TrackedStream`](crate::TrackedStream) as its recorder, or take the
/// recorder back with [`disarm`](Self::disarm). Like the recorders it holds, recording
/// from `Drop` while the thread unwinds catches a panicking recorder (with `std`) so
/// that a second panic cannot abort the process.
///
/// ```
/// use sluice::{Cause, Outcome, RecordGuard, Verdict};
///
/// let (tx, rx) = std::sync::mpsc::channel();
/// let guard = RecordGuard::new(move |o: Outcome| drop(tx.send(o)));
/// drop(guard); // the request future was dropped while waiting for headers
/// let outcome = rx.recv().expect("recorded");
/// assert_eq!(
///     (outcome.verdict, outcome.cause),
///     (Verdict::Abandoned, Cause::ClientLeftBeforeHead),
/// );
/// ```
#[derive(Debug)]
pub struct RecordGuard<R: Recorder> {
    recorder: Option<R>,
}

impl<R: Recorder> RecordGuard<R> {
    /// Guards `recorder`.
    pub const fn new(recorder: R) -> Self {
        Self {
            recorder: Some(recorder),
        }
    }

    /// Takes the recorder back; the guard then records nothing.
    pub fn disarm(mut self) -> R {
        match self.recorder.take() {
            Some(recorder) => recorder,
            // Only `record` and `Drop` take it, and both consume the guard.
            None => unreachable!("a guard is armed until consumed"),
        }
    }
}

impl<R: Recorder> Recorder for RecordGuard<R> {
    fn record(mut self, outcome: Outcome) {
        if let Some(recorder) = self.recorder.take() {
            recorder.record(outcome);
        }
    }
}

impl<R: Recorder> Drop for RecordGuard<R> {
    fn drop(&mut self) {
        if let Some(recorder) = self.recorder.take() {
            let left = Outcome::new(Verdict::Abandoned, Cause::ClientLeftBeforeHead, 0, 0);
            crate::ledger::deliver(recorder, left);
        }
    }
}
