//! The bookkeeping of one tracked stream, shared by every wrapper.

use crate::eventstream::{EventStreamRules, EventStreamScanner};
use crate::ndjson::{NdjsonRules, NdjsonScanner};
use crate::scanner::Scanner;
use crate::sse::{FailureEvent, Signal, SseRules, SseScanner};
use crate::{Cause, Event, Outcome, Recorder, Terminal, Tracker, Usage, Verdict};

/// Everything a wrapper around a stream or a body needs besides the inner value: the
/// [`Tracker`], the cause of its state, the counts, the SSE scanner, the guard against
/// a panicking inner poll, and the recorder that hears the [`Outcome`] exactly once.
///
/// [`TrackedStream`](crate::TrackedStream) is a `Ledger` beside a `Stream`, and
/// `sluice-http`'s `TrackedBody` one beside an `http_body::Body`; write another wrapper
/// the same way. The driving order, for each poll of the inner value:
///
/// 1. If [`is_ended`](Self::is_ended), do not poll again: the wrapper is fused.
/// 2. Poll inside [`guard`](Self::guard), so a panic out of the inner poll counts as an
///    error (cause [`Panic`](Cause::Panic)), settled while unwinding.
/// 3. Feed what came out: [`on_chunk`](Self::on_chunk) (or
///    [`on_chunk_parts`](Self::on_chunk_parts)) for data, [`on_error`](Self::on_error)
///    for an error item, [`on_end`](Self::on_end) for the end.
///
/// The ledger records when it is dropped, or earlier at [`record`](Self::record);
/// never twice.
///
/// ```
/// use sluice::sse::SseRules;
/// use sluice::wrap::Ledger;
/// use sluice::{Cause, Outcome, Verdict};
///
/// let mut ledger = Ledger::new(|o: Outcome| {
///     assert_eq!((o.verdict, o.cause, o.chunks), (Verdict::Failure, Cause::Truncated, 1));
/// })
/// .with_sse(SseRules::openai_chat());
/// ledger.on_chunk(b"data: {\"choices\":[]}\n\n");
/// ledger.on_end(); // no `[DONE]`: cut short
/// assert!(ledger.is_ended());
/// ```
pub struct Ledger<R: Recorder> {
    tracker: Tracker,
    /// What settled the tracker's state; while `Active`, the cause of abandoning it.
    cause: Cause,
    polling: Polling,
    scanner: Option<Scanner>,
    recorder: Option<R>,
    chunks: u64,
    bytes: u64,
    /// The progress and usage of an outcome handed in whole ([`Ledger::recorded`]).
    reported: Option<(u64, Usage)>,
}

/// Whether the inner value may be polled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Polling {
    /// Between polls.
    Open,
    /// The inner poll unwound, and nothing has settled that yet.
    Panicked,
    /// The inner value ended (or panicked): never poll it again.
    Ended,
}

impl<R: Recorder> Ledger<R> {
    /// A ledger for a stream in flight, reporting to `recorder`. No SSE rules: only
    /// the end, an error item or a mark decides.
    pub const fn new(recorder: R) -> Self {
        Self {
            tracker: Tracker::new(),
            cause: Cause::ClientLeft,
            polling: Polling::Open,
            scanner: None,
            recorder: Some(recorder),
            chunks: 0,
            bytes: 0,
            reported: None,
        }
    }

    /// A ledger for a stream whose outcome was recorded before it was wrapped (a
    /// status that settled the verdict, say): it is [ended](Self::is_ended) and
    /// [recorded](Self::is_recorded) from the start, records nothing, and its
    /// [`outcome`](Self::outcome) is `outcome`.
    ///
    /// ```
    /// use sluice::wrap::Ledger;
    /// use sluice::{Cause, Outcome, Terminal, Verdict};
    ///
    /// let outcome = Outcome::new(Verdict::Failure, Cause::Status, 0, 0);
    /// let mut ledger = Ledger::<fn(Outcome)>::recorded(outcome);
    /// assert!(ledger.is_ended() && ledger.is_recorded());
    /// assert_eq!(ledger.terminal(), Terminal::Errored);
    /// assert_eq!(ledger.record(), outcome);
    /// ```
    pub const fn recorded(outcome: Outcome) -> Self {
        Self {
            tracker: Tracker::with_verdict(outcome.verdict),
            cause: outcome.cause,
            polling: Polling::Ended,
            scanner: None,
            recorder: None,
            chunks: outcome.chunks,
            bytes: outcome.bytes,
            reported: Some((outcome.progress, outcome.usage)),
        }
    }

    /// Scans the data as Server-Sent Events: the rules' done and failed events become
    /// [`Event::Done`] and [`Event::Failed`], and an end before a required done event
    /// is a failure (cause [`Truncated`](Cause::Truncated)).
    #[must_use]
    pub fn with_sse(mut self, rules: SseRules) -> Self {
        self.scanner = Some(Scanner::Sse(SseScanner::new(rules)));
        self
    }

    /// Scans the data as newline-delimited JSON (see [`ndjson`](crate::ndjson)): the
    /// rules' done and failed lines become [`Event::Done`] and [`Event::Failed`], and
    /// an end before a required done line is a failure (cause
    /// [`Truncated`](Cause::Truncated)). Replaces rules given before.
    #[must_use]
    pub fn with_ndjson(mut self, rules: NdjsonRules) -> Self {
        self.scanner = Some(Scanner::Ndjson(NdjsonScanner::new(rules)));
        self
    }

    /// Scans the data as an AWS event stream (see [`eventstream`](crate::eventstream)):
    /// the done frame becomes [`Event::Done`], an exception, an error or a corrupt
    /// frame [`Event::Failed`], and an end inside a frame, or before a required done
    /// frame, is a failure (cause [`Truncated`](Cause::Truncated)). Replaces rules
    /// given before.
    #[must_use]
    pub fn with_eventstream(mut self, rules: EventStreamRules) -> Self {
        self.scanner = Some(Scanner::EventStream(EventStreamScanner::new(rules)));
        self
    }

    /// Polls the inner value through `poll`. If `poll` unwinds, the ledger counts an
    /// error (cause [`Panic`](Cause::Panic)) and [`is_ended`](Self::is_ended) turns
    /// true: even when the ledger is dropped during that unwinding, it records a
    /// [`Failure`](crate::Verdict::Failure).
    #[inline(always)]
    pub fn guard<T>(&mut self, poll: impl FnOnce() -> T) -> T {
        // Marks the poll as panicked only if `poll` unwinds; the normal path forgets
        // the guard and pays nothing.
        let unwinding = Unwinding(&mut self.polling);
        let out = poll();
        core::mem::forget(unwinding);
        out
    }

    /// One data item of `bytes`: counted, and scanned when SSE rules are set.
    #[inline(always)]
    pub fn on_chunk(&mut self, bytes: &[u8]) {
        self.count(bytes.len());
        if let Some(scanner) = &mut self.scanner {
            let signal = scan(scanner, bytes);
            self.signal(signal);
        }
    }

    /// One data item held in several slices (a non-contiguous buffer), in order.
    pub fn on_chunk_parts<'a>(&mut self, parts: impl IntoIterator<Item = &'a [u8]>) {
        let mut len = 0;
        let mut signal = None;
        for part in parts {
            len += part.len();
            if let Some(scanner) = &mut self.scanner {
                signal = signal.max(scan(scanner, part));
            }
        }
        self.count(len);
        self.signal(signal);
    }

    /// The inner value yielded an error: [`Event::Error`], cause
    /// [`ErrorItem`](Cause::ErrorItem).
    pub fn on_error(&mut self) {
        self.handle(Event::Error, Cause::ErrorItem);
    }

    /// The inner value ended: [`Event::End`] (cause [`End`](Cause::End)), or, when the
    /// rules require a done event that has not come (or an event-stream frame was cut
    /// in the middle, whatever came before), [`Event::Failed`] (cause
    /// [`Truncated`](Cause::Truncated)). The ledger is ended after this.
    pub fn on_end(&mut self) {
        self.settle();
        self.polling = Polling::Ended;
        let active = self.tracker.terminal() == Terminal::Active;
        let cut = self.scanner.as_ref().is_some_and(|s| s.cut_short(active));
        if cut {
            self.handle(Event::Failed, Cause::Truncated);
        } else {
            self.handle(Event::End, Cause::End);
        }
    }

    /// The inner value ended, and its end itself says how the stream went (a gRPC
    /// status trailer, say): `Success` is [`Event::Done`] and `Failure` is
    /// [`Event::Failed`], each with `cause`; `Abandoned` changes no state and is
    /// [`abandon(cause)`](Self::abandon). The end-marker rule of the SSE rules is not
    /// applied: `verdict` judges instead. The ledger is ended after this, as after
    /// [`on_end`](Self::on_end).
    ///
    /// ```
    /// use sluice::wrap::Ledger;
    /// use sluice::{Cause, Outcome, Verdict};
    ///
    /// let mut ledger = Ledger::new(|o: Outcome| {
    ///     assert_eq!((o.verdict, o.cause), (Verdict::Abandoned, Cause::GrpcStatus));
    /// });
    /// ledger.on_chunk(b"\0\0\0\0\0");
    /// ledger.on_end_with(Verdict::Abandoned, Cause::GrpcStatus); // INVALID_ARGUMENT
    /// assert!(ledger.is_ended());
    /// ```
    pub fn on_end_with(&mut self, verdict: Verdict, cause: Cause) {
        self.settle();
        self.polling = Polling::Ended;
        match verdict {
            Verdict::Success => self.handle(Event::Done, cause),
            Verdict::Failure => self.handle(Event::Failed, cause),
            Verdict::Abandoned => self.abandon(cause),
        }
    }

    /// The caller knows the stream is complete: [`Event::Done`], cause
    /// [`Marked`](Cause::Marked).
    pub fn mark_completed(&mut self) {
        self.handle(Event::Done, Cause::Marked);
    }

    /// The stream failed for `cause` (a timeout, a bad payload): [`Event::Failed`].
    pub fn fail(&mut self, cause: Cause) {
        self.handle(Event::Failed, cause);
    }

    /// A worker's timer fired for `cause` (see [`timers`](crate::timers)): the stream
    /// fails for `cause` ([`Event::Failed`]), unless it already completed in-band (its
    /// done event came: the timer only ended the wait for the upstream's end, and the
    /// verdict stays [`Success`](crate::Verdict::Success)). Either way the wrapper stops
    /// polling the inner value: the ledger is [ended](Self::is_ended) after this.
    ///
    /// ```
    /// use sluice::sse::SseRules;
    /// use sluice::wrap::Ledger;
    /// use sluice::{Cause, Outcome, Verdict};
    ///
    /// let mut ledger = Ledger::new(|o: Outcome| {
    ///     assert_eq!((o.verdict, o.cause), (Verdict::Success, Cause::Done));
    /// })
    /// .with_sse(SseRules::openai_chat());
    /// ledger.on_chunk(b"data: [DONE]\n\n");
    /// ledger.expire(Cause::IdleTimeout); // the worker kept the connection open
    /// assert!(ledger.is_ended());
    /// ```
    pub fn expire(&mut self, cause: Cause) {
        self.close();
        if self.tracker.terminal() != Terminal::Completed {
            self.handle(Event::Failed, cause);
        }
    }

    /// The wrapper gives up on the inner value: it is not polled again (the ledger is
    /// ended); the state is unchanged.
    pub(crate) fn close(&mut self) {
        self.settle();
        self.polling = Polling::Ended;
    }

    /// The stream is given up for `cause` without blaming the worker (the client
    /// stopped reading, say): if no end was seen, the verdict will be
    /// [`Abandoned`](crate::Verdict::Abandoned) with this cause (by default
    /// [`ClientLeft`](Cause::ClientLeft)). Changes nothing once the stream ended.
    pub fn abandon(&mut self, cause: Cause) {
        self.settle();
        if self.tracker.terminal() == Terminal::Active {
            self.cause = cause;
        }
    }

    /// Where the stream stands now.
    pub fn terminal(&self) -> Terminal {
        self.settled().0.terminal()
    }

    /// Whether the inner value ended (or panicked): the wrapper must not poll it again.
    pub fn is_ended(&self) -> bool {
        self.polling != Polling::Open
    }

    /// Progress so far: with SSE rules the events that are neither keep-alives nor
    /// the preamble before the first progress (see [`SseScanner::progress`]), the
    /// data items without.
    pub fn progress(&self) -> u64 {
        match &self.scanner {
            Some(scanner) => scanner.progress(),
            None => self.chunks,
        }
    }

    /// The token usage the stream reported so far (see [`SseScanner::usage`], and the
    /// NDJSON and event-stream scanners' `usage`); none without rules.
    pub fn usage(&self) -> Usage {
        match &self.scanner {
            Some(scanner) => scanner.usage(),
            None => Usage::default(),
        }
    }

    /// The SSE scanner, if rules are set.
    pub fn scanner(&self) -> Option<&SseScanner> {
        self.scanner.as_ref().and_then(Scanner::sse)
    }

    /// Whether the in-band rules (SSE, NDJSON or event stream) require an end marker:
    /// then an end of the stream before it is a cut ([`Cause::Truncated`]).
    pub fn requires_done(&self) -> bool {
        self.scanner.as_ref().is_some_and(Scanner::requires_done)
    }

    /// The failure event of the rules' dialect for `cause`, as it would follow the
    /// bytes seen so far: it first ends an event or line the worker was cut off
    /// inside ([`SseScanner::failure_event`],
    /// [`NdjsonScanner::failure_event`](crate::ndjson::NdjsonScanner::failure_event)).
    /// `None` without rules or without a dialect.
    pub fn failure_event(&self, cause: Cause) -> Option<FailureEvent> {
        self.scanner.as_ref()?.failure_event(cause)
    }

    /// The outcome that would be recorded now.
    pub fn outcome(&self) -> Outcome {
        let (tracker, cause) = self.settled();
        // Progress events are the scanner's: without SSE rules, none are seen.
        let (progress, usage) = self.reported.unwrap_or_else(|| match &self.scanner {
            Some(scanner) => (scanner.progress(), scanner.usage()),
            None => (0, Usage::default()),
        });
        Outcome::new(tracker.verdict(), cause, self.chunks, self.bytes)
            .with_progress(progress)
            .with_usage(usage)
    }

    /// Whether the recorder has heard the outcome.
    pub fn is_recorded(&self) -> bool {
        self.recorder.is_none()
    }

    /// Records the outcome now, once: the first call hands it over, later calls (and
    /// the drop) record nothing. Returns the outcome as recorded, or as it stands.
    pub fn record(&mut self) -> Outcome {
        self.settle();
        let outcome = self.outcome();
        if let Some(recorder) = self.recorder.take() {
            deliver(recorder, outcome);
        }
        outcome
    }

    #[inline(always)]
    fn count(&mut self, len: usize) {
        self.chunks += 1;
        self.bytes += len as u64;
    }

    #[inline(always)]
    fn signal(&mut self, signal: Option<Signal>) {
        // One `handle` to inline, not one per signal.
        let (event, cause) = match signal {
            None => return,
            Some(Signal::Done) => (Event::Done, Cause::Done),
            Some(Signal::Failed) => (Event::Failed, Cause::ErrorEvent),
        };
        self.handle(event, cause);
    }

    /// Feeds `event`; if it changes the state, `cause` is why.
    fn handle(&mut self, event: Event, cause: Cause) {
        self.settle();
        let before = self.tracker.terminal();
        if self.tracker.handle(event) != before {
            self.cause = cause;
        }
    }

    /// The machine and cause as they stand, counting a panic out of the inner poll
    /// (seen as `Panicked` from anywhere but that poll) as an error.
    fn settled(&self) -> (Tracker, Cause) {
        let mut tracker = self.tracker;
        let mut cause = self.cause;
        if self.polling == Polling::Panicked && tracker.terminal() != Terminal::Errored {
            tracker.handle(Event::Error);
            cause = Cause::Panic;
        }
        (tracker, cause)
    }

    /// Makes a panic out of the inner poll final: it ended, in an error.
    fn settle(&mut self) {
        if self.polling == Polling::Panicked {
            (self.tracker, self.cause) = self.settled();
            self.polling = Polling::Ended;
        }
    }
}

impl<R: Recorder> Drop for Ledger<R> {
    fn drop(&mut self) {
        self.record();
    }
}

impl<R: Recorder> core::fmt::Debug for Ledger<R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Ledger")
            .field("outcome", &self.outcome())
            .field("sse", &self.scanner)
            .field("recorded", &self.is_recorded())
            .finish_non_exhaustive()
    }
}

/// The scanner, kept out of line: inlined, it would weigh on the wrappers' hot path
/// even for streams that scan nothing. By reference: the scanner is a few hundred
/// bytes, and moving it in and out by value copied it four times per chunk.
#[inline(never)]
fn scan(scanner: &mut Scanner, chunk: &[u8]) -> Option<Signal> {
    scanner.feed(chunk)
}

/// Hands `outcome` to `recorder`. With `std`, a recorder that panics while the thread
/// is already unwinding is caught there: a second panic would abort the process.
pub(crate) fn deliver<R: Recorder>(recorder: R, outcome: Outcome) {
    #[cfg(feature = "std")]
    if std::thread::panicking() {
        let record = core::panic::AssertUnwindSafe(|| recorder.record(outcome));
        // The recorder's panic has been reported by the panic hook; the first panic
        // goes on unwinding.
        let _ = std::panic::catch_unwind(record);
        return;
    }
    recorder.record(outcome);
}

/// Set on the stack around the inner poll; dropped only while unwinding.
struct Unwinding<'a>(&'a mut Polling);

impl Drop for Unwinding<'_> {
    fn drop(&mut self) {
        *self.0 = Polling::Panicked;
    }
}
