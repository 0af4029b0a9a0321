//! The body wrapper: feeds a [`Ledger`] and reports exactly once.

use core::pin::Pin;
use core::task::{Context, Poll};
use std::io::IoSlice;

use bytes::Buf;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use sluice::failure::{FailureTail, NoFailureEvent, WithFailureEvent};
use sluice::sse::{FailureEvent, SseRules};
use sluice::timers::{NoTimers, ProgressTimers, ProgressWatch, Timeouts, Timer};
use sluice::wrap::Ledger;
use sluice::{Cause, Outcome, Recorder, Terminal, Verdict};

use crate::{BodyError, GrpcPolicy};

/// How many slices of a non-contiguous data frame are scanned.
const SLICES: usize = 32;

pin_project! {
    /// An [`http_body::Body`] that knows how it ended and says so exactly once: the body
    /// counterpart of [`TrackedStream`](sluice::TrackedStream), on the same
    /// [`Ledger`]: the same machine, the same causes, the same verdicts.
    ///
    /// Frames pass through unchanged and in order (`Data` and `Error` are the inner
    /// body's). For the machine:
    ///
    /// * a data frame is a chunk, scanned with [`with_sse`](Self::with_sse) for an
    ///   in-band done or failure, in place (a non-contiguous [`Buf`] through its
    ///   [`chunks_vectored`], up to 32 slices; a `Buf` that shows fewer bytes than it
    ///   holds is counted and scanned in what it shows);
    /// * an error frame is an error. One that comes right behind a data frame is
    ///   returned a poll later, after one `Pending` (the task woken at once), and so
    ///   is a timer's error: a server writes out what it buffered while the body is
    ///   pending, and hyper's HTTP/1.1 server drops it when the body fails, so the
    ///   worker's last bytes would not reach the client. (Over HTTP/2, `h2` may still
    ///   drop frames of the reset stream that its connection task had not written.)
    /// * the inner body's end is the end: `None`, a trailers frame (the last frame a
    ///   body sends), or the data frame after which [`is_end_stream`] turns true
    ///   (reported at once, without waiting for another poll). A body that reports
    ///   `is_end_stream()` when it is finished or dropped unpolled (an empty body, which servers never poll) ended
    ///   too. After the end the inner body is never polled again;
    /// * dropped before any end, the body is [`Abandoned`](Verdict::Abandoned) (cause
    ///   [`ClientLeft`](Cause::ClientLeft)): the client went away;
    /// * a panic out of the inner `poll_frame` is a [`Failure`](Verdict::Failure)
    ///   (cause [`Panic`](Cause::Panic)), recorded while unwinding.
    ///
    /// [`http_body::Body`]: https://docs.rs/http-body/1/http_body/trait.Body.html
    /// [`Buf`]: https://docs.rs/bytes/1/bytes/buf/trait.Buf.html
    /// [`chunks_vectored`]: https://docs.rs/bytes/1/bytes/buf/trait.Buf.html#method.chunks_vectored
    /// [`is_end_stream`]: https://docs.rs/http-body/1/http_body/trait.Body.html#method.is_end_stream
    ///
    /// With [`with_grpc`](Self::with_grpc), the `grpc-status` trailer judges the
    /// stream instead of the end (see [`GrpcPolicy`]): `0` is a `Success`, each other
    /// code a `Failure` or an `Abandoned` (cause [`GrpcStatus`](Cause::GrpcStatus));
    /// a body that ends without trailers was cut short: `Failure`, cause
    /// [`Truncated`](Cause::Truncated).
    ///
    /// A body made by [`settled`](Self::settled) is passed through untracked: its
    /// verdict was recorded before it existed (a status the breaker's policy settled),
    /// and [`finish`](Self::finish) returns that outcome.
    ///
    /// `size_hint` and `is_end_stream` are the inner body's (until the end, after which
    /// they say the body is over). The wrapper allocates nothing.
    ///
    /// **Progress timers** ([`with_timers`](Self::with_timers)): the third type
    /// parameter `W` is then a [`ProgressWatch`] (by default [`NoTimers`], which costs
    /// nothing). **The failure event** ([`with_failure_event`](Self::with_failure_event)):
    /// the fourth, `F`, is then the core's [`WithFailureEvent`] (by default
    /// [`NoFailureEvent`], which costs nothing either).
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http_body_util::{BodyExt, Full};
    /// use sluice::sse::SseRules;
    /// use sluice::{Cause, Outcome, Verdict};
    /// use sluice_http::TrackedBody;
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let upstream = Full::new(Bytes::from_static(b"data: {\"text\":\"hi\"}\n\ndata: [DONE]\n\n"));
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// // A recorder must not panic: it may run in `Drop`.
    /// let body = TrackedBody::new(upstream, move |o: Outcome| { let _ = tx.send(o); })
    ///     .with_sse(SseRules::openai_chat());
    /// let bytes = body.collect().await.unwrap().to_bytes();
    /// assert!(bytes.ends_with(b"[DONE]\n\n"));
    /// let outcome = rx.recv().unwrap();
    /// assert_eq!((outcome.verdict, outcome.cause), (Verdict::Success, Cause::Done));
    /// # });
    /// ```
    pub struct TrackedBody<B: Body, R: Recorder, W = NoTimers, F = NoFailureEvent> {
        #[pin]
        tracked: Tracked<B, R>,
        // The progress timers: `NoTimers` (nothing, compiled away) or a
        // `ProgressWatch`. Beside, not inside, the part with a drop, so that
        // `with_timers` can move that part into a body of another type.
        #[pin]
        watch: W,
        // What the body sends after a failure: `NoFailureEvent` (nothing, compiled
        // away) or the failure event, then the error frame that failed the body.
        tail: Tail<F>,
    }
}

pin_project! {
    /// The inner body and its bookkeeping: what a `TrackedBody` is without timers.
    struct Tracked<B: Body, R: Recorder> {
        #[pin]
        inner: B,
        // A settled body's ledger is `Ledger::recorded`: ended and recorded before the
        // body existed. So the data path asks one question, `is_ended`, of both kinds.
        ledger: Ledger<R>,
        grpc: Option<GrpcPolicy>,
        // Whether the body was made `settled` (passed through untracked). Not the
        // ledger's `is_recorded`: an attempt records a tracked body early
        // (`record_pinned`), and that body stays tracked, and fused at its end.
        settled: bool,
        // A data frame went out since the body last returned `Pending`: the server may
        // still hold it in its write buffer.
        unflushed: bool,
        // The inner body's error, read right after a data frame and held for one
        // `Pending`, so that the server writes that frame out before the error aborts
        // the response (hyper's HTTP/1.1 server drops what it buffered when a body
        // fails). The next poll takes it as the inner body's next frame.
        held: Option<B::Error>,
    }

    impl<B: Body, R: Recorder> PinnedDrop for Tracked<B, R> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if this.held.is_some() && !this.ledger.is_ended() {
                // Dropped before the held error went out: the body failed all the same.
                this.ledger.on_error();
            }
            // Skipped while unwinding: the inner body may be what panicked.
            if !this.ledger.is_ended() && !std::thread::panicking() {
                end_if_over(this.ledger, &*this.inner, this.grpc);
            }
            // The ledger records as it is dropped, after this.
        }
    }
}

impl<B: Body, R: Recorder> TrackedBody<B, R> {
    /// Tracks `inner`, reporting to `recorder`. No SSE rules, no gRPC, no timers: only
    /// the end of the body, an error frame or the drop decides.
    pub const fn new(inner: B, recorder: R) -> Self {
        Self {
            tracked: Tracked {
                inner,
                ledger: Ledger::new(recorder),
                grpc: None,
                settled: false,
                unflushed: false,
                held: None,
            },
            watch: NoTimers,
            tail: Tail::new(NoFailureEvent),
        }
    }

    /// Passes `inner` through untracked: `outcome` was recorded already (the status
    /// line decided, say). Nothing is recorded by this body; [`finish`](Self::finish)
    /// returns `outcome` and [`terminal`](Self::terminal) reads its verdict.
    pub const fn settled(inner: B, outcome: Outcome) -> Self {
        Self {
            tracked: Tracked {
                inner,
                ledger: Ledger::recorded(outcome),
                grpc: None,
                settled: true,
                unflushed: false,
                held: None,
            },
            watch: NoTimers,
            tail: Tail::new(NoFailureEvent),
        }
    }
}

impl<B: Body, R: Recorder, W> TrackedBody<B, R, W> {
    /// Runs the worker's progress timers on `timer` (the runtime's sleep:
    /// `sluice_tokio::TokioTimer`, `sluice_smol::SmolTimer`, or the caller's own
    /// [`Timer`]), as `forward` and
    /// [`TrackedStream::with_timers`](sluice::TrackedStream::with_timers) do (see
    /// [`sluice::timers`]):
    ///
    /// * they count progress: with [`with_sse`](Self::with_sse) the events that are
    ///   not keep-alives (`:` comments, Anthropic's `ping`), without SSE rules every
    ///   data frame;
    /// * the first-token timer and the deadline start at the **first poll** of the
    ///   body (not here); the idle timer runs from the poll that first sees each
    ///   progress;
    /// * a due timer wins over an inner body that is always ready: it is checked
    ///   before each poll of the inner body;
    /// * a timer that fires fails the body with its cause
    ///   ([`FirstTokenTimeout`](Cause::FirstTokenTimeout),
    ///   [`IdleTimeout`](Cause::IdleTimeout), [`Deadline`](Cause::Deadline)): the inner
    ///   body is dropped unpolled from then on, and the body yields one error frame,
    ///   [`BodyError::TimedOut`], never a clean end (a server then aborts the
    ///   response, so the client cannot take the cut answer for a whole one);
    /// * once the stream completed in-band (its done event came), a timer blames no
    ///   one: it only ends the wait for the inner body's end (the idle time bounds
    ///   it), the body ends cleanly, and the verdict stays
    ///   [`Success`](Verdict::Success).
    ///
    /// The body's error type becomes [`BodyError<B::Error>`](BodyError) (the inner
    /// body's errors are [`BodyError::Inner`]). No effect on a
    /// [`settled`](Self::settled) body, which is never timed. Replaces timers given
    /// before.
    ///
    /// ```
    /// use std::time::Duration;
    /// use bytes::Bytes;
    /// use futures_util::{StreamExt, stream};
    /// use http_body::Frame;
    /// use http_body_util::{BodyExt, StreamBody};
    /// use sluice::sse::SseRules;
    /// use sluice::timers::{Timeouts, Timer};
    /// use sluice::{Cause, Outcome, Verdict};
    /// use sluice_http::{BodyError, TrackedBody};
    ///
    /// /// Sleeps on tokio's clock (what `sluice_tokio::TokioTimer` does).
    /// #[derive(Clone)]
    /// struct Tokio;
    /// impl Timer for Tokio {
    ///     type Sleep = tokio::time::Sleep;
    ///     fn sleep(&self, duration: Duration) -> tokio::time::Sleep {
    ///         tokio::time::sleep(duration)
    ///     }
    /// }
    /// # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
    /// // A worker that sends a keep-alive every 5 s, and never a token.
    /// let pings = stream::repeat(()).then(|()| async {
    ///     tokio::time::sleep(Duration::from_secs(5)).await;
    ///     Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(b": ping\n\n")))
    /// });
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// let body = TrackedBody::new(StreamBody::new(pings), move |o: Outcome| { let _ = tx.send(o); })
    ///     .with_sse(SseRules::openai_chat())
    ///     .with_timers(Tokio, Timeouts::new().first_token(Duration::from_secs(30)));
    /// let err = body.collect().await.unwrap_err(); // after 30 s: an error, not a clean end
    /// assert!(matches!(err, BodyError::TimedOut { cause: Cause::FirstTokenTimeout }));
    /// let outcome = rx.recv().unwrap();
    /// assert_eq!((outcome.verdict, outcome.cause), (Verdict::Failure, Cause::FirstTokenTimeout));
    /// # });
    /// ```
    pub fn with_timers<T: Timer>(
        self,
        timer: T,
        timeouts: Timeouts,
    ) -> TrackedBody<B, R, ProgressWatch<T>> {
        self.with_watch(ProgressWatch::new(timer, timeouts))
    }

    /// When the body fails without the worker's own in-band error event (a timer
    /// fired, the inner body ended before the rules' done event, or it sent an error
    /// frame), it sends its dialect's failure event ([`SseRules::failure_event`];
    /// for Ollama's NDJSON, [`NdjsonRules::failure_event`](sluice::ndjson::NdjsonRules::failure_event))
    /// as one last data frame, then the error frame if
    /// there is one (the inner body's, or [`BodyError::TimedOut`] with
    /// [`with_timers`](Self::with_timers)), as
    /// [`TrackedStream::with_failure_event`](sluice::TrackedStream::with_failure_event)
    /// does for a stream. So a client that already has the response head hears the
    /// failure in its API's words (`data: {"error": ...}` and no `[DONE]`,
    /// Anthropic's `event: error`, a `response.failed` event, Ollama's
    /// `{"error": ...}` line), not a clean end. A
    /// worker cut off inside an event has that event ended first
    /// ([`SseScanner::failure_event`](sluice::sse::SseScanner::failure_event)), so the
    /// failure is an event of its own.
    ///
    /// Nothing is added after the worker's own error event or error object, after the
    /// done event, after a trailers frame (nothing may follow it), or without SSE
    /// rules with a [dialect](SseRules::dialect) ([`with_sse`](Self::with_sse)); a
    /// [`settled`](Self::settled) body is never added to. The verdict is unchanged.
    /// While the event (or the error behind it) is left to send,
    /// [`is_end_stream`](https://docs.rs/http-body/1/http_body/trait.Body.html#method.is_end_stream)
    /// is `false`, also for an inner body that says it is over before the done event came (an empty one). The event's
    /// bytes are made once, at the failure, in one `String` of its exact length
    /// (`B::Data: From<String>`: [`Bytes`](https://docs.rs/bytes/1/bytes/struct.Bytes.html)).
    ///
    /// Call it after [`with_timers`](Self::with_timers): the error it holds is the
    /// body's error, which the timers make a [`BodyError`].
    ///
    /// ```
    /// use bytes::Bytes;
    /// use futures_util::stream;
    /// use http_body::Frame;
    /// use http_body_util::{BodyExt, StreamBody};
    /// use sluice::sse::SseRules;
    /// use sluice::{Cause, Outcome, Verdict};
    /// use sluice_http::TrackedBody;
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// // The worker's connection ends before `[DONE]`.
    /// let frames = [Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(b"data: {\"choices\":[]}\n\n")))];
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// let body = TrackedBody::new(StreamBody::new(stream::iter(frames)), move |o: Outcome| { let _ = tx.send(o); })
    ///     .with_sse(SseRules::openai_chat())
    ///     .with_failure_event();
    /// let bytes = body.collect().await.unwrap().to_bytes();
    /// assert!(bytes.ends_with(b"\"code\":\"truncated\"}}\n\n"));
    /// let outcome = rx.recv().unwrap();
    /// assert_eq!((outcome.verdict, outcome.cause), (Verdict::Failure, Cause::Truncated));
    /// # });
    /// ```
    pub fn with_failure_event(self) -> TrackedBody<B, R, W, WithFailureEvent<<Self as Body>::Error>>
    where
        Self: Body,
        B::Data: From<String>,
    {
        self.with_tail(WithFailureEvent::new())
    }

    /// [`with_failure_event`](Self::with_failure_event), the event's message naming
    /// the upstream that failed: `upstream <name> failed: <cause>` (see
    /// [`FailureEvent::named`]: the name is written with its `Display` and escaped for
    /// JSON; choose one a client may read, a worker's name, never its URL).
    ///
    /// ```
    /// use bytes::Bytes;
    /// use futures_util::stream;
    /// use http_body::Frame;
    /// use http_body_util::{BodyExt, StreamBody};
    /// use sluice::sse::SseRules;
    /// use sluice::Outcome;
    /// use sluice_http::TrackedBody;
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// // The worker is cut off inside an Anthropic event.
    /// let frames = [Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(b"event: content_block_delta\ndata: {\"ty")))];
    /// let body = TrackedBody::new(StreamBody::new(stream::iter(frames)), |_: Outcome| {})
    ///     .with_sse(SseRules::anthropic())
    ///     .with_failure_event_named("gpu-7");
    /// let bytes = body.collect().await.unwrap().to_bytes();
    /// assert!(bytes.ends_with(
    ///     b"{\"ty\n\nevent: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\
    ///       \"message\":\"upstream gpu-7 failed: truncated\"}}\n\n"
    /// ));
    /// # });
    /// ```
    pub fn with_failure_event_named<N: core::fmt::Display>(
        self,
        upstream: N,
    ) -> TrackedBody<B, R, W, WithFailureEvent<<Self as Body>::Error, N>>
    where
        Self: Body,
        B::Data: From<String>,
    {
        self.with_tail(WithFailureEvent::named(upstream))
    }
}

impl<B: Body, R: Recorder, W, F> TrackedBody<B, R, W, F> {
    /// The same body with `watch` in place of its timers.
    pub(crate) fn with_watch<V>(self, watch: V) -> TrackedBody<B, R, V, F> {
        TrackedBody {
            tracked: self.tracked,
            watch,
            tail: self.tail,
        }
    }

    /// The same body with `tail` in place of what it sends after a failure.
    pub(crate) fn with_tail<G>(self, tail: G) -> TrackedBody<B, R, W, G> {
        TrackedBody {
            tracked: self.tracked,
            watch: self.watch,
            tail: Tail::new(tail),
        }
    }

    /// Scans the data frames as Server-Sent Events: the rules' done and failed events
    /// become [`Event::Done`](sluice::Event::Done) and
    /// [`Event::Failed`](sluice::Event::Failed), and an end before a required done
    /// event is a failure with cause [`Truncated`](Cause::Truncated). No effect on a
    /// [`settled`](Self::settled) body.
    #[must_use]
    pub fn with_sse(mut self, rules: SseRules) -> Self {
        if self.is_tracked() {
            // Out and back in: the placeholder records nothing.
            let placeholder = Ledger::recorded(Outcome::from(Verdict::Abandoned));
            let ledger = core::mem::replace(&mut self.tracked.ledger, placeholder);
            self.tracked.ledger = ledger.with_sse(rules);
        }
        self
    }

    /// Scans the data frames as newline-delimited JSON (Ollama's native API, see
    /// [`sluice::ndjson`]): a done line is [`Event::Done`](sluice::Event::Done), an
    /// error line [`Event::Failed`](sluice::Event::Failed), and an end before a
    /// required done line a failure with cause [`Truncated`](Cause::Truncated).
    /// Replaces rules given before ([`with_sse`](Self::with_sse),
    /// [`with_eventstream`](Self::with_eventstream)): the last one given wins. No
    /// effect on a [`settled`](Self::settled) body.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http_body_util::{BodyExt, Full};
    /// use sluice::ndjson::NdjsonRules;
    /// use sluice::{Cause, Outcome, Verdict};
    /// use sluice_http::TrackedBody;
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let upstream = Full::new(Bytes::from_static(b"{\"response\":\"Hi\",\"done\":false}\n"));
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// let body = TrackedBody::new(upstream, move |o: Outcome| { let _ = tx.send(o); })
    ///     .with_ndjson(NdjsonRules::ollama());
    /// body.collect().await.unwrap();
    /// let outcome = rx.recv().unwrap();
    /// assert_eq!((outcome.verdict, outcome.cause), (Verdict::Failure, Cause::Truncated));
    /// # });
    /// ```
    #[must_use]
    pub fn with_ndjson(mut self, rules: sluice::ndjson::NdjsonRules) -> Self {
        if self.is_tracked() {
            // Out and back in, as in `with_sse`.
            let placeholder = Ledger::recorded(Outcome::from(Verdict::Abandoned));
            let ledger = core::mem::replace(&mut self.tracked.ledger, placeholder);
            self.tracked.ledger = ledger.with_ndjson(rules);
        }
        self
    }

    /// Scans the data frames as an AWS event stream (Amazon Bedrock's
    /// ConverseStream, see [`sluice::eventstream`]): the done frame is
    /// [`Event::Done`](sluice::Event::Done); an exception, an error or a corrupt
    /// frame [`Event::Failed`](sluice::Event::Failed); an end inside a frame or before
    /// a required done frame a failure with cause [`Truncated`](Cause::Truncated).
    /// Replaces rules given before: the last one given wins. No effect on a
    /// [`settled`](Self::settled) body.
    #[must_use]
    pub fn with_eventstream(mut self, rules: sluice::eventstream::EventStreamRules) -> Self {
        if self.is_tracked() {
            let placeholder = Ledger::recorded(Outcome::from(Verdict::Abandoned));
            let ledger = core::mem::replace(&mut self.tracked.ledger, placeholder);
            self.tracked.ledger = ledger.with_eventstream(rules);
        }
        self
    }

    /// Judges the body as a gRPC response: by its `grpc-status` trailer, classified by
    /// `policy`; an end without trailers is a failure (cause
    /// [`Truncated`](Cause::Truncated)). A trailer with no `grpc-status`, or one that
    /// is not a number, is read as `UNKNOWN`. A trailers-only response (the status in
    /// the headers, no body) is judged from its headers, before any body: see
    /// [`GrpcPolicy::classify_headers`] (which [`BreakerLayer`](crate::BreakerLayer)
    /// does).
    #[must_use]
    pub fn with_grpc(mut self, policy: GrpcPolicy) -> Self {
        self.tracked.grpc = Some(policy);
        self
    }

    /// Where the stream stands now. A [`settled`](Self::settled) body reads its
    /// verdict: `Success` is `Completed`, `Failure` is `Errored`, `Abandoned` is
    /// `Active`.
    pub fn terminal(&self) -> Terminal {
        self.tracked.ledger.terminal()
    }

    /// The outcome that would be recorded now (or was, for a settled body).
    pub fn outcome(&self) -> Outcome {
        self.tracked.ledger.outcome()
    }

    /// Whether this body tracks its stream (`false` for a [`settled`](Self::settled)
    /// body).
    pub fn is_tracked(&self) -> bool {
        !self.tracked.settled
    }

    /// Progress so far, as [`TrackedStream::progress`](sluice::TrackedStream::progress):
    /// with [`with_sse`](Self::with_sse) the events that are neither keep-alives nor
    /// the API's preamble, without SSE rules the data frames. What an
    /// [`AttemptBody`](crate::AttemptBody) commits on.
    pub fn progress(&self) -> u64 {
        self.tracked.ledger.progress()
    }

    /// The inner body.
    pub fn get_ref(&self) -> &B {
        &self.tracked.inner
    }

    /// The timers' state: [`NoTimers`] unless [`with_timers`](Self::with_timers).
    pub fn watch(&self) -> &W {
        &self.watch
    }

    /// Records the outcome now through a pin (an [`AttemptBody`](crate::AttemptBody)
    /// that failed before its commit, or a lost hedge), after giving the body up for
    /// `abandon` if that is set and no end was seen; the drop that follows records
    /// nothing. The body stays tracked: it goes on yielding what it has left (its
    /// failure tail, the rest of a stream that failed in-band) and never polls an
    /// inner body that ended.
    pub(crate) fn record_pinned(self: Pin<&mut Self>, abandon: Option<Cause>) -> Outcome {
        let ledger = self.project().tracked.project().ledger;
        if let Some(cause) = abandon {
            ledger.abandon(cause);
        }
        ledger.record()
    }

    /// Records the outcome now and returns it; the drop that follows records nothing.
    pub fn finish(mut self) -> Outcome {
        let tracked = &mut self.tracked;
        end_if_over(&mut tracked.ledger, &tracked.inner, &tracked.grpc);
        tracked.ledger.record()
    }
}

/// Whether a tracked body is over (a settled body's ledger is ended from the start).
fn is_over<B: Body, R: Recorder>(tracked: &Tracked<B, R>) -> bool {
    tracked.ledger.is_ended() && !tracked.settled
}

/// Counts the end of a body that says it is over but was not polled to its end.
#[inline]
fn end_if_over<B: Body, R: Recorder>(ledger: &mut Ledger<R>, inner: &B, grpc: &Option<GrpcPolicy>) {
    if !ledger.is_ended() && inner.is_end_stream() {
        on_end(ledger, grpc);
    }
}

/// The end of the body, without trailers.
#[cold]
#[inline(never)]
fn on_end<R: Recorder>(ledger: &mut Ledger<R>, grpc: &Option<GrpcPolicy>) {
    match grpc {
        None => ledger.on_end(),
        Some(_) => ledger.on_end_with(Verdict::Failure, Cause::Truncated),
    }
}

/// The trailers frame: the end, judged by its `grpc-status` with gRPC.
#[cold]
#[inline(never)]
fn on_trailers<R: Recorder>(
    ledger: &mut Ledger<R>,
    grpc: Option<GrpcPolicy>,
    trailers: &HeaderMap,
) {
    match grpc {
        None => ledger.on_end(),
        Some(policy) => ledger.on_end_with(grpc_verdict(policy, trailers), Cause::GrpcStatus),
    }
}

/// The verdict of a `grpc-status` trailer (out of line: it holds no reference to the
/// ledger).
#[inline(never)]
fn grpc_verdict(policy: GrpcPolicy, trailers: &HeaderMap) -> Verdict {
    policy
        .classify_headers(trailers)
        .unwrap_or_else(|| policy.classify_value(b""))
}

/// One data frame, scanned in place.
#[inline(always)]
fn on_data<R: Recorder, D: Buf>(ledger: &mut Ledger<R>, data: &D) {
    let first = data.chunk();
    if first.len() == data.remaining() {
        ledger.on_chunk(first);
    } else {
        on_parts(ledger, data);
    }
}

/// The last data frame: scanned, then the end is now, not at a next poll that may
/// never come. (`data` goes through by value, and `grpc` by reference, so that the
/// common path stores nothing for this call.)
#[cold]
#[inline(never)]
fn on_last_data<R: Recorder, D: Buf>(
    ledger: &mut Ledger<R>,
    grpc: &Option<GrpcPolicy>,
    data: D,
) -> D {
    on_data(ledger, &data);
    on_end(ledger, grpc);
    data
}

fn on_parts<R: Recorder, D: Buf>(ledger: &mut Ledger<R>, data: &D) {
    let mut slices = [IoSlice::new(&[]); SLICES];
    let n = data.chunks_vectored(&mut slices);
    ledger.on_chunk_parts(slices[..n].iter().map(|s| &**s));
}

impl<B, R, F> Body for TrackedBody<B, R, NoTimers, F>
where
    B: Body,
    R: Recorder,
    F: FailureTail<B::Data, B::Error>,
{
    type Data = B::Data;
    type Error = B::Error;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        // No timers: `NoTimers` never fires, so the second closure is never called.
        poll_tracked(self, cx, |e| e, |_| None)
    }

    fn is_end_stream(&self) -> bool {
        is_end_stream(self)
    }

    fn size_hint(&self) -> SizeHint {
        size_hint(self)
    }
}

/// With timers (see [`with_timers`](TrackedBody::with_timers)): the same frames, and
/// one [`BodyError::TimedOut`] when a timer fails the body.
impl<B, R, T, F> Body for TrackedBody<B, R, ProgressWatch<T>, F>
where
    B: Body,
    R: Recorder,
    T: Timer,
    F: FailureTail<B::Data, BodyError<B::Error>>,
{
    type Data = B::Data;
    type Error = BodyError<B::Error>;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, Self::Error>>> {
        poll_tracked(self, cx, BodyError::Inner, |cause| {
            Some(BodyError::TimedOut { cause })
        })
    }

    fn is_end_stream(&self) -> bool {
        is_end_stream(self)
    }

    fn size_hint(&self) -> SizeHint {
        size_hint(self)
    }
}

/// Whether the body is over: the inner body's answer, or, after the end, yes; but
/// never while its failure event (or the error behind it) is left to send.
#[inline(always)]
fn is_end_stream<B: Body, R: Recorder, W, D, E, F: FailureTail<D, E>>(
    body: &TrackedBody<B, R, W, F>,
) -> bool {
    if F::ACTIVE && tail_pending(body) {
        return false;
    }
    body.tracked.is_end_stream()
}

/// The inner body's hint, or, after the end, nothing more; unknown while the failure
/// event is left to send.
#[inline(always)]
fn size_hint<B: Body, R: Recorder, W, D, E, F: FailureTail<D, E>>(
    body: &TrackedBody<B, R, W, F>,
) -> SizeHint {
    if F::ACTIVE && tail_pending(body) {
        return SizeHint::default();
    }
    body.tracked.size_hint()
}

/// Whether the body has a failure event (or the error behind it) to send, or will
/// have one at its next poll: its inner body says it is over, though the rules'
/// done event has not come and the rules have a dialect.
fn tail_pending<B: Body, R: Recorder, W, D, E, F: FailureTail<D, E>>(
    body: &TrackedBody<B, R, W, F>,
) -> bool {
    let tracked = &body.tracked;
    let ledger = &tracked.ledger;
    !body.tail.items.is_empty()
        || (!ledger.is_ended()
            && tracked.grpc.is_none()
            && ledger.terminal() == Terminal::Active
            && ledger.requires_done()
            && ledger.failure_event(Cause::Truncated).is_some()
            && tracked.inner.is_end_stream())
}

impl<B: Body, R: Recorder> Tracked<B, R> {
    fn is_end_stream(&self) -> bool {
        is_over(self) || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match is_over(self) {
            true => SizeHint::with_exact(0),
            false => self.inner.size_hint(),
        }
    }
}

/// A timer fired: the stream fails for `cause` unless it completed in-band, and the
/// inner body is given up. A failure is an error frame (`timed_out`), after the
/// failure event if the body sends one; a completed stream a clean end.
#[cold]
#[inline(never)]
fn on_expired<R: Recorder, F: FailureTail<D, E>, D, E>(
    ledger: &mut Ledger<R>,
    tail: &mut Tail<F>,
    cause: Cause,
    timed_out: impl FnOnce(Cause) -> Option<E>,
) -> Option<Result<Frame<D>, E>> {
    ledger.expire(cause);
    match ledger.terminal() {
        Terminal::Completed => None,
        _ if F::ACTIVE => fail(ledger, tail, cause, timed_out(cause)),
        _ => timed_out(cause).map(Err),
    }
}

/// The body just failed for `cause` (the error frame that did it, if one did, is
/// `error`): queues the failure event if there is one to send, and returns the next
/// frame: the event, else the error.
#[cold]
#[inline(never)]
fn fail<R: Recorder, F: FailureTail<D, E>, D, E>(
    ledger: &Ledger<R>,
    tail: &mut Tail<F>,
    cause: Cause,
    error: Option<E>,
) -> Option<Result<Frame<D>, E>> {
    if let Some(event) = failure_event(ledger, cause) {
        tail.items.push_event(event);
    }
    if let Some(error) = error {
        if let Some(error) = tail.items.hold_error(error) {
            return Some(Err(error));
        }
    }
    tail.pop()
}

/// The failure tail of a body, and whether the error frame behind the event waits a
/// turn.
#[derive(Debug)]
struct Tail<F> {
    items: F,
    /// The event went out and an error frame is behind it: the next poll returns
    /// `Pending` once (the task woken at once), so that a server flushes the event
    /// before the error makes it abort the response (hyper's HTTP/1.1 server drops
    /// the bytes it buffered when a body fails).
    turn: bool,
}

impl<F> Tail<F> {
    const fn new(items: F) -> Self {
        Self { items, turn: false }
    }

    /// The next frame of the tail, if any.
    fn pop<D, E>(&mut self) -> Option<Result<Frame<D>, E>>
    where
        F: FailureTail<D, E>,
    {
        let item = self.items.pop();
        self.turn = matches!(item, Some(Ok(_))) && !self.items.is_empty();
        item.map(|item| item.map(Frame::data))
    }

    /// The next frame of the tail, after the turn the error waits.
    #[cold]
    #[inline(never)]
    fn poll_next<D, E>(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<D>, E>>>
    where
        F: FailureTail<D, E>,
    {
        if self.turn {
            self.turn = false;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Poll::Ready(self.pop())
    }
}

/// The failure event to send when the body just failed for `cause`: only if that is
/// what settled it (not the worker's own error event, nor anything after its done
/// event) and the rules have a dialect.
fn failure_event<R: Recorder>(ledger: &Ledger<R>, cause: Cause) -> Option<FailureEvent> {
    let outcome = ledger.outcome();
    if outcome.verdict != Verdict::Failure || outcome.cause != cause {
        return None;
    }
    // The scanner's, so that it first ends an event the worker was cut off inside.
    ledger.failure_event(cause)
}

/// An error frame from the inner body (`error`, wrapped): the body fails, and with a
/// failure tail sends the event first, unless the stream had completed in-band (its
/// done event came: the client has its whole answer, and the error only follows it).
#[cold]
#[inline(never)]
fn on_error<R: Recorder, F: FailureTail<D, E>, D, E>(
    ledger: &mut Ledger<R>,
    tail: &mut Tail<F>,
    error: E,
) -> Option<Result<Frame<D>, E>> {
    let completed = ledger.terminal() == Terminal::Completed;
    ledger.on_error();
    match completed {
        false => fail(ledger, tail, Cause::ErrorItem, Some(error)),
        true => Some(Err(error)),
    }
}

/// `Pending` once, the task woken at once: a server writes out what it buffered (the
/// data frame that just went out) while the body is pending, before the error that
/// comes next makes it drop the response.
#[cold]
#[inline(never)]
fn flush_turn<T>(unflushed: &mut bool, cx: &mut Context<'_>) -> Poll<T> {
    *unflushed = false;
    cx.waker().wake_by_ref();
    Poll::Pending
}

/// One poll of a tracked body, whatever its timers: `inner_error` wraps the inner
/// body's error, `timed_out` makes the error frame of a timer that failed the body.
#[inline(always)]
fn poll_tracked<B: Body, R: Recorder, W: ProgressTimers, F: FailureTail<B::Data, E>, E>(
    body: Pin<&mut TrackedBody<B, R, W, F>>,
    cx: &mut Context<'_>,
    inner_error: impl FnOnce(B::Error) -> E,
    timed_out: impl FnOnce(Cause) -> Option<E>,
) -> Poll<Option<Result<Frame<B::Data>, E>>> {
    let body = body.project();
    let tail = body.tail;
    // The failure event, then the error frame behind it.
    if F::ACTIVE && !tail.items.is_empty() {
        return tail.poll_next(cx);
    }
    let this = body.tracked.project();
    let mut inner = this.inner;
    let ledger = this.ledger;
    if ledger.is_ended() {
        // Settled: passed through. Tracked: over.
        return match *this.settled {
            true => inner
                .poll_frame(cx)
                .map(|frame| frame.map(|frame| frame.map_err(inner_error))),
            false => Poll::Ready(None),
        };
    }
    // A due timer wins over an inner body that is ready (not over its error already
    // read); it fails the body a turn later if a data frame just went out (it stays
    // due).
    if W::ACTIVE && this.held.is_none() {
        if let Poll::Ready(cause) = body.watch.poll_expired(cx, ledger.progress()) {
            if *this.unflushed {
                return flush_turn(this.unflushed, cx);
            }
            return Poll::Ready(on_expired(ledger, tail, cause, timed_out));
        }
    }
    // Whether a data frame is the last one: asked under the same guard.
    let mut last = false;
    let poll = match this.held.take() {
        Some(e) => Poll::Ready(Some(Err(e))),
        None => ledger.guard(|| {
            let poll = inner.as_mut().poll_frame(cx);
            if let Poll::Ready(Some(Ok(frame))) = &poll {
                last = frame.is_data() && inner.is_end_stream();
            }
            poll
        }),
    };
    let frame = match poll {
        Poll::Ready(Some(Ok(frame))) => frame,
        Poll::Pending => {
            *this.unflushed = false;
            return Poll::Pending;
        }
        Poll::Ready(Some(Err(e))) if *this.unflushed => {
            *this.held = Some(e);
            return flush_turn(this.unflushed, cx);
        }
        Poll::Ready(Some(Err(e))) => {
            let error = inner_error(e);
            if F::ACTIVE {
                return Poll::Ready(on_error(ledger, tail, error));
            }
            ledger.on_error();
            return Poll::Ready(Some(Err(error)));
        }
        Poll::Ready(None) => {
            on_end(ledger, this.grpc);
            if F::ACTIVE {
                return Poll::Ready(fail(ledger, tail, Cause::Truncated, None));
            }
            return Poll::Ready(None);
        }
    };
    // The data taken out and put back in a new frame: across the ledger's calls
    // only `data` is alive, not a `Frame` (large, for its trailers) that the
    // unwinding path would have to drop, so nothing is copied through the stack.
    // The rare paths are out of line.
    match frame.into_data() {
        Ok(data) => {
            let data = match last {
                false => {
                    on_data(ledger, &data);
                    data
                }
                true => {
                    let data = on_last_data(ledger, this.grpc, data);
                    if F::ACTIVE {
                        // Sent at the next poll: `is_end_stream` says `false` till then.
                        if let Some(event) = failure_event(ledger, Cause::Truncated) {
                            tail.items.push_event(event);
                        }
                    }
                    data
                }
            };
            *this.unflushed = true;
            Poll::Ready(Some(Ok(Frame::data(data))))
        }
        Err(frame) => {
            if let Some(trailers) = frame.trailers_ref() {
                on_trailers(ledger, *this.grpc, trailers);
            }
            Poll::Ready(Some(Ok(frame)))
        }
    }
}

impl<B: Body, R: Recorder, W: core::fmt::Debug, F> core::fmt::Debug for TrackedBody<B, R, W, F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let mut d = f.debug_struct("TrackedBody");
        let ledger = &self.tracked.ledger;
        match self.is_tracked() {
            true => d.field("ledger", ledger),
            false => d.field("settled", &ledger.outcome()),
        };
        d.field("grpc", &self.tracked.grpc)
            .field("timers", &self.watch)
            .finish_non_exhaustive()
    }
}
