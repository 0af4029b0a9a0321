//! The stream wrapper: feeds the machine and reports exactly once.

use core::pin::Pin;
use core::task::{Context, Poll};

use futures_core::{FusedStream, Stream};
use pin_project_lite::pin_project;

#[cfg(feature = "alloc")]
use crate::failure::WithFailureEvent;
use crate::failure::{FailureTail, NoFailureEvent};
use crate::ledger::Ledger;
use crate::sse::{FailureEvent, SseRules};
use crate::timers::{NoTimers, ProgressTimers, ProgressWatch, Timeouts, Timer};
use crate::{Cause, Outcome, Recorder, Terminal};

pin_project! {
    /// A stream of byte chunks that knows how it ended and says so exactly once.
    ///
    /// Items pass through unchanged and in order. Each `Ok` item is a
    /// [`Event::Chunk`](crate::Event::Chunk) (and, with [`with_sse`](Self::with_sse),
    /// is scanned for an in-band done or failure), each `Err` item an
    /// [`Event::Error`](crate::Event::Error), and the inner stream's end an
    /// [`Event::End`](crate::Event::End) (or, when the SSE rules require a done event
    /// that has not come, a failure: the stream was cut short); after the end the
    /// inner stream is never polled again. The [`Outcome`] goes to the recorder once:
    /// at [`finish`](Self::finish), or when the wrapper is dropped, also while
    /// unwinding from a panic in the inner stream (whose verdict is then
    /// [`Failure`](crate::Verdict::Failure)). A stream dropped before any end is
    /// [`Abandoned`](crate::Verdict::Abandoned): the client left, and the worker is
    /// not to blame. Every outcome says why ([`Outcome::cause`]).
    ///
    /// The wrapper allocates nothing; it is as generic as its parts. Its bookkeeping is
    /// a [`Ledger`](crate::wrap::Ledger), which other wrappers share.
    ///
    /// **Progress timers** ([`with_timers`](Self::with_timers)): first token, idle and
    /// a deadline, on any runtime's [`Timer`]; the third type parameter `W` is then a
    /// [`ProgressWatch`] (by default [`NoTimers`], which costs nothing).
    ///
    /// ```
    /// use futures_util::{StreamExt, stream};
    /// use sluice::{Cause, Outcome, Terminal, TrackedStream, Verdict};
    /// # futures_executor::block_on(async {
    /// let upstream = stream::iter([b"token"; 3]).map(Ok::<_, std::io::Error>);
    /// let mut tracked = TrackedStream::new(upstream, |o: Outcome| {
    ///     assert_eq!((o.verdict, o.cause, o.chunks, o.bytes), (Verdict::Success, Cause::End, 3, 15));
    /// });
    /// while let Some(item) = tracked.next().await {
    ///     assert_eq!(item.unwrap(), b"token");
    /// }
    /// assert_eq!(tracked.terminal(), Terminal::Completed);
    /// tracked.finish(); // or drop it: the recorder hears once either way
    /// # });
    /// ```
    pub struct TrackedStream<S, R: Recorder, W = NoTimers, F = NoFailureEvent> {
        #[pin]
        inner: S,
        #[pin]
        watch: W,
        tail: F,
        ledger: Ledger<R>,
        // With timers, the ledger's progress count for the watch, read once per data
        // item rather than at every poll (only a data item moves it).
        progress: u64,
    }
}

impl<S, R: Recorder> TrackedStream<S, R> {
    /// Tracks `inner`, reporting to `recorder`. No SSE rules: only the end of the
    /// stream, an error item or a `mark_*` call decides. No timers.
    pub const fn new(inner: S, recorder: R) -> Self {
        Self {
            inner,
            watch: NoTimers,
            tail: NoFailureEvent,
            ledger: Ledger::new(recorder),
            progress: 0,
        }
    }
}

impl<S, R: Recorder, W, F> TrackedStream<S, R, W, F> {
    /// Runs the worker's progress timers on `timer` (the runtime's sleep:
    /// `sluice_tokio::TokioTimer`, `sluice_smol::SmolTimer`), as `forward` does:
    ///
    /// * they count progress: with SSE rules the events that are neither keep-alives
    ///   (comments, Anthropic's `ping`) nor the API's preamble before its first
    ///   content (OpenAI's role-only chunk, Anthropic's `message_start`, the Responses
    ///   API's `response.created`), without them every data item;
    /// * the first-token timer and the deadline start at the **first poll** of the
    ///   stream (not here); the idle timer runs from the poll that first sees each
    ///   progress;
    /// * a timer that fires fails the stream with its cause
    ///   ([`FirstTokenTimeout`](Cause::FirstTokenTimeout),
    ///   [`IdleTimeout`](Cause::IdleTimeout), [`Deadline`](Cause::Deadline)) and the
    ///   stream ends (the inner stream is not polled again); once the stream completed
    ///   in-band (its done event), a timer only ends it, and the verdict stays
    ///   [`Success`](crate::Verdict::Success);
    /// * a due timer wins over an inner stream that is always ready: the timers are
    ///   polled first, and every 64th poll returns `Pending` once (the task woken at
    ///   once) so that a runtime whose timers fire only when its executor runs
    ///   (tokio) gets to fire them.
    ///
    /// Replaces timers given before.
    ///
    /// ```
    /// use core::time::Duration;
    /// use futures_util::{StreamExt, stream};
    /// use sluice::sse::SseRules;
    /// use sluice::timers::{Timeouts, Timer};
    /// use sluice::{Cause, Outcome, TrackedStream, Verdict};
    ///
    /// /// A timer whose sleeps are all due at once (a test's clock, far ahead).
    /// struct Late;
    /// impl Timer for Late {
    ///     type Sleep = core::future::Ready<()>;
    ///     fn sleep(&self, _: Duration) -> Self::Sleep {
    ///         core::future::ready(())
    ///     }
    /// }
    /// # futures_executor::block_on(async {
    /// // A worker that sends keep-alives forever.
    /// let pings = stream::repeat(b": ping\n\n").map(Ok::<_, std::io::Error>);
    /// let timeouts = Timeouts::new().first_token(Duration::from_secs(30));
    /// let mut tracked = TrackedStream::new(pings, |o: Outcome| {
    ///     assert_eq!((o.verdict, o.cause), (Verdict::Failure, Cause::FirstTokenTimeout));
    /// })
    /// .with_sse(SseRules::openai_chat())
    /// .with_timers(Late, timeouts);
    /// assert!(tracked.next().await.is_none()); // the timer wins over the ready ping
    /// # });
    /// ```
    pub fn with_timers<T: Timer>(
        self,
        timer: T,
        timeouts: Timeouts,
    ) -> TrackedStream<S, R, ProgressWatch<T>, F> {
        TrackedStream {
            inner: self.inner,
            watch: ProgressWatch::new(timer, timeouts),
            tail: self.tail,
            ledger: self.ledger,
            progress: self.progress,
        }
    }

    /// When the stream fails without the worker's own error event (a timer fired, the
    /// upstream ended before its done event, or it yielded an error item), it yields
    /// its dialect's failure event
    /// ([`SseRules::failure_event`](crate::sse::SseRules::failure_event),
    /// [`NdjsonRules::failure_event`](crate::ndjson::NdjsonRules::failure_event)) as
    /// one last `Ok` item, then the error item if one failed it, and then ends. So a
    /// client that already has the response head hears the failure in its API's words
    /// (`data: {"error": ...}` and no `[DONE]`, Anthropic's `event: error`, a
    /// `response.failed` event, Ollama's `{"error": ...}` line), never a clean end.
    /// When the worker sent its own error object, event or line, nothing is added;
    /// without rules with a dialect (and for the binary event stream), neither. A worker cut off inside an event has that event ended first (a line
    /// end and the blank line: [`SseScanner::failure_event`](crate::sse::SseScanner::failure_event)),
    /// so the failure is an event of its own. The event's bytes are made once, at the
    /// failure, in one allocation (feature `alloc`).
    ///
    /// ```
    /// use futures_util::{StreamExt, stream};
    /// use sluice::sse::SseRules;
    /// use sluice::{Cause, Outcome, TrackedStream, Verdict};
    /// # futures_executor::block_on(async {
    /// // The worker's connection drops before `[DONE]`.
    /// let upstream = stream::iter([Ok::<_, std::io::Error>(String::from("data: {\"choices\":[]}\n\n"))]);
    /// let tracked = TrackedStream::new(upstream, |o: Outcome| {
    ///     assert_eq!((o.verdict, o.cause), (Verdict::Failure, Cause::Truncated));
    /// })
    /// .with_sse(SseRules::openai_chat())
    /// .with_failure_event();
    /// let sent: Vec<String> = tracked.map(Result::unwrap).collect().await;
    /// assert_eq!(sent.len(), 2);
    /// assert!(sent[1].starts_with("data: {\"error\":"));
    /// # });
    /// ```
    #[cfg(feature = "alloc")]
    pub fn with_failure_event<B, E>(self) -> TrackedStream<S, R, W, WithFailureEvent<E>>
    where
        S: Stream<Item = Result<B, E>>,
        B: From<alloc::string::String>,
    {
        TrackedStream {
            inner: self.inner,
            watch: self.watch,
            tail: WithFailureEvent::new(),
            ledger: self.ledger,
            progress: self.progress,
        }
    }

    /// [`with_failure_event`](Self::with_failure_event), the event's message naming
    /// the upstream that failed: `upstream <name> failed: <cause>` (see
    /// [`FailureEvent::named`]: the name is written with its `Display` and escaped for
    /// JSON; choose one a client may read, a worker's name, never its URL). The name
    /// is kept in the stream and written only at a failure.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use futures_util::{StreamExt, stream};
    /// use sluice::sse::SseRules;
    /// use sluice::{Outcome, TrackedStream};
    /// # futures_executor::block_on(async {
    /// // The worker is cut off inside an event.
    /// let upstream = stream::iter([Ok::<_, std::io::Error>(String::from("data: {\"choi"))]);
    /// let worker: Arc<str> = Arc::from("gpu-7");
    /// let tracked = TrackedStream::new(upstream, |_: Outcome| {})
    ///     .with_sse(SseRules::openai_chat())
    ///     .with_failure_event_named(worker);
    /// let sent: Vec<String> = tracked.map(Result::unwrap).collect().await;
    /// assert_eq!(
    ///     sent[1],
    ///     "\n\ndata: {\"error\":{\"message\":\"upstream gpu-7 failed: truncated\",\
    ///      \"type\":\"upstream_error\",\"code\":\"truncated\"}}\n\n",
    /// );
    /// # });
    /// ```
    #[cfg(feature = "alloc")]
    pub fn with_failure_event_named<B, E, N>(
        self,
        upstream: N,
    ) -> TrackedStream<S, R, W, WithFailureEvent<E, N>>
    where
        S: Stream<Item = Result<B, E>>,
        B: From<alloc::string::String>,
        N: core::fmt::Display,
    {
        TrackedStream {
            inner: self.inner,
            watch: self.watch,
            tail: WithFailureEvent::named(upstream),
            ledger: self.ledger,
            progress: self.progress,
        }
    }

    /// Scans the chunks as Server-Sent Events: the rules' done and failed events (an
    /// error object, say) become [`Event::Done`](crate::Event::Done) and
    /// [`Event::Failed`](crate::Event::Failed), and an end before a required done
    /// event is a failure with cause [`Truncated`](Cause::Truncated).
    #[must_use]
    pub fn with_sse(self, rules: SseRules) -> Self {
        Self {
            inner: self.inner,
            watch: self.watch,
            tail: self.tail,
            ledger: self.ledger.with_sse(rules),
            progress: self.progress,
        }
    }

    /// Scans the chunks as newline-delimited JSON (Ollama's native API, see
    /// [`ndjson`](crate::ndjson)): a done line is [`Event::Done`](crate::Event::Done),
    /// an error line [`Event::Failed`](crate::Event::Failed), and an end before a
    /// required done line a failure with cause [`Truncated`](Cause::Truncated).
    /// Replaces the rules given before ([`with_sse`](Self::with_sse) or
    /// [`with_eventstream`](Self::with_eventstream)): the last one given wins.
    ///
    /// ```
    /// use futures_util::{StreamExt, stream};
    /// use sluice::ndjson::NdjsonRules;
    /// use sluice::{Cause, Outcome, TrackedStream, Verdict};
    /// # futures_executor::block_on(async {
    /// let lines = [&b"{\"response\":\"Hi\",\"done\":false}\n"[..], b"{\"error\":\"out of memory\"}\n"];
    /// let upstream = stream::iter(lines).map(Ok::<_, std::io::Error>);
    /// let tracked = TrackedStream::new(upstream, |o: Outcome| {
    ///     assert_eq!((o.verdict, o.cause, o.progress), (Verdict::Failure, Cause::ErrorEvent, 2));
    /// })
    /// .with_ndjson(NdjsonRules::ollama());
    /// tracked.for_each(|_| async {}).await;
    /// # });
    /// ```
    #[must_use]
    pub fn with_ndjson(self, rules: crate::ndjson::NdjsonRules) -> Self {
        Self {
            inner: self.inner,
            watch: self.watch,
            tail: self.tail,
            ledger: self.ledger.with_ndjson(rules),
            progress: self.progress,
        }
    }

    /// Scans the chunks as an AWS event stream (Amazon Bedrock's ConverseStream, see
    /// [`eventstream`](crate::eventstream)): the done frame is
    /// [`Event::Done`](crate::Event::Done); an exception, an error or a corrupt frame
    /// [`Event::Failed`](crate::Event::Failed); an end inside a frame or before a
    /// required done frame a failure with cause [`Truncated`](Cause::Truncated).
    /// Replaces the rules given before: the last one given wins.
    ///
    /// ```
    /// use futures_util::{StreamExt, stream};
    /// use sluice::eventstream::EventStreamRules;
    /// use sluice::{Cause, Outcome, TrackedStream, Verdict};
    /// # futures_executor::block_on(async {
    /// // The worker's connection drops in the middle of a frame's prelude.
    /// let upstream = stream::iter([Ok::<_, std::io::Error>(&[0u8, 0, 0, 100][..])]);
    /// let tracked = TrackedStream::new(upstream, |o: Outcome| {
    ///     assert_eq!((o.verdict, o.cause), (Verdict::Failure, Cause::Truncated));
    /// })
    /// .with_eventstream(EventStreamRules::bedrock());
    /// tracked.for_each(|_| async {}).await;
    /// # });
    /// ```
    #[must_use]
    pub fn with_eventstream(self, rules: crate::eventstream::EventStreamRules) -> Self {
        Self {
            inner: self.inner,
            watch: self.watch,
            tail: self.tail,
            ledger: self.ledger.with_eventstream(rules),
            progress: self.progress,
        }
    }

    /// Marks the stream complete (the caller knows it is done), as
    /// [`Event::Done`](crate::Event::Done) with cause [`Marked`](Cause::Marked).
    pub fn mark_completed(&mut self) {
        self.ledger.mark_completed();
    }

    /// Marks the stream failed (a bad payload, say), as
    /// [`Event::Failed`](crate::Event::Failed) with cause [`Marked`](Cause::Marked).
    pub fn mark_errored(&mut self) {
        self.ledger.fail(Cause::Marked);
    }

    /// Marks the stream failed for `cause`: what a driver's own timer or check found
    /// (an idle timeout, say), so metrics and logs say why. As
    /// [`mark_errored`](Self::mark_errored) otherwise.
    ///
    /// ```
    /// use futures_util::stream;
    /// use sluice::{Cause, Outcome, TrackedStream, Verdict};
    ///
    /// let upstream = stream::iter([Ok::<_, std::io::Error>(&b"data: hi\n\n"[..])]);
    /// let mut tracked = TrackedStream::new(upstream, |o: Outcome| {
    ///     assert_eq!((o.verdict, o.cause), (Verdict::Failure, Cause::IdleTimeout));
    /// });
    /// tracked.mark_errored_with(Cause::IdleTimeout);
    /// tracked.finish();
    /// ```
    pub fn mark_errored_with(&mut self, cause: Cause) {
        self.ledger.fail(cause);
    }

    /// Gives the stream up for `cause` without blaming the worker, through a pin: for
    /// a driver that holds the stream pinned and stops reading it for a reason of its
    /// own (the client stopped reading, the gateway is shutting down). If no end was
    /// seen, the verdict is [`Abandoned`](crate::Verdict::Abandoned) with this cause
    /// (instead of [`ClientLeft`](Cause::ClientLeft)); an end already seen stands. The
    /// outcome is recorded when the stream is dropped or finished, as always.
    ///
    /// ```
    /// use core::pin::pin;
    /// use futures_util::stream;
    /// use sluice::{Cause, Outcome, TrackedStream, Verdict};
    ///
    /// let upstream = stream::pending::<Result<&[u8], std::io::Error>>();
    /// let mut tracked = pin!(TrackedStream::new(upstream, |o: Outcome| {
    ///     assert_eq!((o.verdict, o.cause), (Verdict::Abandoned, Cause::Shutdown));
    /// }));
    /// tracked.as_mut().abandon_pinned(Cause::Shutdown);
    /// ```
    pub fn abandon_pinned(self: Pin<&mut Self>, cause: Cause) {
        self.project().ledger.abandon(cause);
    }

    /// Where the stream stands now.
    pub fn terminal(&self) -> Terminal {
        self.ledger.terminal()
    }

    /// The outcome that would be recorded now.
    pub fn outcome(&self) -> Outcome {
        self.ledger.outcome()
    }

    /// Progress so far: with SSE rules the events that carry output (neither
    /// keep-alives nor the API's preamble), without them the data items. It is what
    /// the progress timers count, and what a caller reads after each poll to time the
    /// first token and the tokens after it.
    #[inline]
    pub fn progress(&self) -> u64 {
        self.ledger.progress()
    }

    /// Whether the inner stream is done with: it ended, yielded the error that
    /// failed it, panicked, or a timer ended it. It is not polled again; what this
    /// stream still yields is its failure event and then that error item (see
    /// [`with_failure_event`](Self::with_failure_event)), so an `Ok` item yielded
    /// while this is true is the failure event, not the worker's.
    pub fn is_inner_ended(&self) -> bool {
        self.ledger.is_ended()
    }

    /// The bookkeeping, for the drivers in this crate.
    pub(crate) fn ledger(&self) -> &Ledger<R> {
        &self.ledger
    }

    /// The inner stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The timers' state ([`NoTimers`] unless [`with_timers`](Self::with_timers)).
    pub fn watch(&self) -> &W {
        &self.watch
    }

    /// Records the outcome now and returns it; the drop that follows records nothing.
    pub fn finish(mut self) -> Outcome {
        self.ledger.record()
    }

    /// Records the outcome now through a pin (an attempt that failed before its
    /// commit, say), after giving the stream up for `abandon` if that is set and no
    /// end was seen; the drop that follows records nothing.
    #[cfg(feature = "alloc")] // for `attempt`, which needs `alloc`
    pub(crate) fn record_pinned(self: Pin<&mut Self>, abandon: Option<Cause>) -> Outcome {
        let ledger = self.project().ledger;
        if let Some(cause) = abandon {
            ledger.abandon(cause);
        }
        ledger.record()
    }
}

impl<S, B, E, R, W, F> TrackedStream<S, R, W, F>
where
    S: Stream<Item = Result<B, E>>,
    R: Recorder,
    F: FailureTail<B, E>,
{
    /// A worker's timer (a driver's, like `forward`'s) fired for `cause`, through a
    /// pin: the stream fails for it unless it already completed in-band (its done
    /// event came: then the timer only ended the wait for the upstream's end, and the
    /// verdict stays [`Success`](crate::Verdict::Success)), and ends either way; the
    /// inner stream is not polled again.
    /// With [`with_failure_event`](Self::with_failure_event), the stream then yields
    /// the failure event before its end.
    pub fn expire_pinned(self: Pin<&mut Self>, cause: Cause) {
        let this = self.project();
        this.ledger.expire(cause);
        if F::ACTIVE {
            if let Some(event) = failure_event(this.ledger, cause) {
                this.tail.push_event(event);
            }
        }
    }
}

/// The failure event to yield when the stream just failed for `cause`: only if that
/// is what settled it (not the worker's own error event, nor a done event before),
/// and the rules have a dialect.
fn failure_event<R: Recorder>(ledger: &Ledger<R>, cause: Cause) -> Option<FailureEvent> {
    let outcome = ledger.outcome();
    if outcome.verdict != crate::Verdict::Failure || outcome.cause != cause {
        return None;
    }
    // The scanner's, so that it first ends an event the worker was cut off inside.
    ledger.failure_event(cause)
}

impl<S, B, E, R, W, F> Stream for TrackedStream<S, R, W, F>
where
    S: Stream<Item = Result<B, E>>,
    B: AsRef<[u8]>,
    R: Recorder,
    W: ProgressTimers,
    F: FailureTail<B, E>,
{
    type Item = Result<B, E>;

    #[inline]
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.project();
        let ledger = this.ledger;
        if ledger.is_ended() {
            // The failure event and the error item after it, if any.
            return Poll::Ready(if F::ACTIVE { this.tail.pop() } else { None });
        }
        // A due timer wins over an inner stream that is ready.
        let mut watch = this.watch;
        if W::ACTIVE {
            if let Poll::Ready(cause) = watch.as_mut().poll_expired(cx, *this.progress) {
                ledger.expire(cause);
                return Poll::Ready(if F::ACTIVE {
                    fail(ledger, this.tail, cause, None)
                } else {
                    None
                });
            }
            // Now and then, back to the executor: its timers may need it to fire.
            if watch.as_mut().poll_turn(cx).is_pending() {
                return Poll::Pending;
            }
        }
        let mut inner = this.inner;
        let poll = ledger.guard(|| inner.as_mut().poll_next(cx));
        match &poll {
            Poll::Pending => {}
            Poll::Ready(Some(Ok(chunk))) => {
                ledger.on_chunk(chunk.as_ref());
                if W::ACTIVE {
                    let progress = ledger.progress();
                    if progress != *this.progress {
                        *this.progress = progress;
                        // The idle timer runs from the poll that yielded the progress.
                        watch.note_progress(progress);
                    }
                }
            }
            Poll::Ready(Some(Err(_))) => ledger.on_error(),
            Poll::Ready(None) => ledger.on_end(),
        }
        if F::ACTIVE {
            match poll {
                Poll::Ready(Some(Err(error))) => {
                    return Poll::Ready(fail(ledger, this.tail, Cause::ErrorItem, Some(error)));
                }
                Poll::Ready(None) => {
                    return Poll::Ready(fail(ledger, this.tail, Cause::Truncated, None));
                }
                poll => return poll,
            }
        }
        poll
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match self.ledger.is_ended() {
            false => self.inner.size_hint(),
            true => {
                let tail = if F::ACTIVE { self.tail.len() } else { 0 };
                (tail, Some(tail))
            }
        }
    }
}

/// The stream failed for `cause` (the error item that did it is `error`): queues the
/// failure event if there is one to yield (and then ends the stream), and returns the
/// next item to yield.
#[cold]
fn fail<R, F, B, E>(
    ledger: &mut Ledger<R>,
    tail: &mut F,
    cause: Cause,
    error: Option<E>,
) -> Option<Result<B, E>>
where
    R: Recorder,
    F: FailureTail<B, E>,
{
    if let Some(event) = failure_event(ledger, cause) {
        tail.push_event(event);
        // The stream ends after its tail: an error item is its last.
        ledger.close();
    }
    if let Some(error) = error {
        if let Some(error) = tail.hold_error(error) {
            return Some(Err(error));
        }
    }
    tail.pop()
}

impl<S, B, E, R, W, F> FusedStream for TrackedStream<S, R, W, F>
where
    S: Stream<Item = Result<B, E>>,
    B: AsRef<[u8]>,
    R: Recorder,
    W: ProgressTimers,
    F: FailureTail<B, E>,
{
    fn is_terminated(&self) -> bool {
        self.ledger.is_ended() && (!F::ACTIVE || self.tail.is_empty())
    }
}

impl<S, R: Recorder, W: core::fmt::Debug, F> core::fmt::Debug for TrackedStream<S, R, W, F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TrackedStream")
            .field("ledger", &self.ledger)
            .field("timers", &self.watch)
            .finish_non_exhaustive()
    }
}
