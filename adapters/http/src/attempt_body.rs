//! The commit point for a body: a [`TrackedBody`] held back until its first progress,
//! so that a worker that fails before it can be replaced before the client has the
//! response head.

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll, ready};
use std::collections::VecDeque;

use bytes::Buf;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use sluice::attempt::{Commit, CommitPoint, Failed};
use sluice::failure::NoFailureEvent;
use sluice::timers::NoTimers;
use sluice::{Cause, Outcome, Recorder, Terminal};

use crate::TrackedBody;

/// One frame of the tracked body, as it polled it.
type Held<B, R, W, F> = Result<Frame<<B as Body>::Data>, <TrackedBody<B, R, W, F> as Body>::Error>;

/// Where an attempt stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Holding,
    Committed(Commit),
    Failed,
}

pin_project! {
    /// A [`TrackedBody`] held back until its commit point: the body counterpart of the
    /// core's [`Attempt`](sluice::attempt::Attempt), with the same rules and names
    /// ([`Commit`], [`Failed`]), and no runtime. A gateway awaits it up to its commit
    /// **before** it sends the response head, so that an attempt that fails first can
    /// be replaced by another worker's and the client never learns of it.
    ///
    /// It reads the tracked body and keeps its frames, up to a byte bound of data, until
    /// it commits:
    ///
    /// * on the first progress event ([`TrackedBody::progress`]: with
    ///   [`with_sse`](TrackedBody::with_sse) a token, not a keep-alive nor the
    ///   preamble; without SSE rules, a data frame);
    /// * on the body's successful end (its done event, a clean end where none is
    ///   required, trailers that say it went well, or an end that blames no one, such
    ///   as a gRPC status of the caller's);
    /// * or when the data held reaches the bound.
    ///
    /// If the body fails first (an error frame, an in-band error event, a cut, a
    /// timer, a failing `grpc-status` trailer), the attempt has **failed**: its
    /// outcome is recorded to its worker at once, the frames held are dropped, and
    /// [`commit`](Self::commit) answers `Err`. What failed it stays (the error frame,
    /// the worker's error event, the trailers, or the failure event of
    /// [`with_failure_event`](TrackedBody::with_failure_event) in their place): a
    /// caller with no retry left sends the attempt on as its answer, and the client
    /// reads that failure and none of the frames held before it.
    ///
    /// The driving loop: for each worker, send the request, classify the status, wrap
    /// the body in a `TrackedBody` and then in an `AttemptBody` (pinned), and await
    /// [`commit`](Self::commit). On `Err`, try the next worker (this one has heard its
    /// verdict). On `Ok`, send the response head, and the attempt as the body: as an
    /// [`http_body::Body`] it yields the frames it held, in order, then the rest of the
    /// tracked body. To hedge, await two attempts' `commit` at once, and give the
    /// loser up with [`abandon`](Self::abandon)`(Cause::HedgeLost)`.
    ///
    /// **Trailers** are held like data frames (they count nothing toward the bound):
    /// a trailers frame is the body's end, so a gRPC stream commits on its first
    /// message ([`Commit::Progress`]) or, with no message, on trailers that do not
    /// fail it. A unary gRPC call or any non-streaming answer, which a client cannot
    /// use in part, is held to its end with [`whole`](Self::whole): its trailers decide
    /// before the client sees a byte, and a failing `grpc-status` is retried like a cut.
    ///
    /// Holding costs one `VecDeque` of the held frames; after the commit, a poll is
    /// the tracked body's poll and one branch.
    ///
    /// [`http_body::Body`]: https://docs.rs/http-body/1/http_body/trait.Body.html
    ///
    /// ```
    /// use std::pin::pin;
    /// use bytes::Bytes;
    /// use futures_util::stream;
    /// use http_body::Frame;
    /// use http_body_util::{BodyExt, StreamBody};
    /// use sluice::attempt::Commit;
    /// use sluice::sse::SseRules;
    /// use sluice::{Cause, Outcome, Verdict};
    /// use sluice_http::{AttemptBody, TrackedBody};
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// let attempt = |events: Vec<&'static str>| {
    ///     let tx = tx.clone();
    ///     let frames = events.into_iter().map(|e| Ok::<_, std::io::Error>(Frame::data(Bytes::from(e))));
    ///     let body = TrackedBody::new(StreamBody::new(stream::iter(frames)), move |o: Outcome| {
    ///         let _ = tx.send(o);
    ///     })
    ///     .with_sse(SseRules::openai_chat());
    ///     AttemptBody::new(body, 64 * 1024)
    /// };
    /// let role = "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\n";
    ///
    /// // The first worker sends its preamble, then an error object: failed before the
    /// // commit, recorded at once; the response head was not sent, so try another.
    /// let mut first = pin!(attempt(vec![role, "data: {\"error\":{\"message\":\"oom\"}}\n\n"]));
    /// let failed = first.as_mut().commit().await.unwrap_err();
    /// assert_eq!((failed.outcome.verdict, failed.outcome.cause), (Verdict::Failure, Cause::ErrorEvent));
    /// assert_eq!(rx.try_recv().unwrap(), failed.outcome);
    ///
    /// // The second one makes progress: commit, send the head, then the attempt as the body.
    /// let token = "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n";
    /// let mut second = pin!(attempt(vec![role, token, "data: [DONE]\n\n"]));
    /// assert_eq!(second.as_mut().commit().await.unwrap(), Commit::Progress);
    /// let sent = second.as_mut().collect().await.unwrap().to_bytes();
    /// assert_eq!(sent, [role, token, "data: [DONE]\n\n"].concat());
    /// # });
    /// ```
    pub struct AttemptBody<B, R, W = NoTimers, F = NoFailureEvent>
    where
        B: Body,
        R: Recorder,
        TrackedBody<B, R, W, F>: Body,
    {
        #[pin]
        body: TrackedBody<B, R, W, F>,
        held: VecDeque<Held<B, R, W, F>>,
        held_bytes: usize,
        point: CommitPoint,
        phase: Phase,
    }
}

impl<B, R, W, F> AttemptBody<B, R, W, F>
where
    B: Body,
    R: Recorder,
    TrackedBody<B, R, W, F>: Body<Data = B::Data>,
{
    /// Holds `body` back until its commit, keeping at most about `limit` bytes of data
    /// (the frame that crosses the bound is kept, and commits). A `limit` of zero
    /// commits on the first data frame.
    pub fn new(body: TrackedBody<B, R, W, F>, limit: usize) -> Self {
        Self {
            body,
            held: VecDeque::new(),
            held_bytes: 0,
            point: CommitPoint::new(limit),
            phase: Phase::Holding,
        }
    }

    /// Holds `body` back until its successful end (its trailers, for gRPC) or `limit`,
    /// whatever progress it makes: for a non-streaming answer (a JSON completion, a
    /// unary gRPC call), which a client cannot use in part, so that a failure anywhere
    /// before its end can still be retried. It never commits with
    /// [`Commit::Progress`].
    pub fn whole(body: TrackedBody<B, R, W, F>, limit: usize) -> Self {
        Self {
            point: CommitPoint::whole(limit),
            ..Self::new(body, limit)
        }
    }

    /// Reads until the attempt commits or fails; see [`poll_commit`](Self::poll_commit).
    pub fn commit(self: Pin<&mut Self>) -> impl Future<Output = Result<Commit, Failed>> + '_ {
        let mut this = self;
        core::future::poll_fn(move |cx| this.as_mut().poll_commit(cx))
    }

    /// Reads the tracked body, holding each frame back, until the attempt commits
    /// (`Ok`, with why) or fails (`Err`: the outcome has just been recorded, and the
    /// frames held are dropped but the one that failed it). Once settled, it answers
    /// the same again without reading.
    pub fn poll_commit(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Commit, Failed>> {
        let mut this = self.project();
        loop {
            match *this.phase {
                Phase::Holding => {}
                Phase::Committed(commit) => return Poll::Ready(Ok(commit)),
                Phase::Failed => {
                    let outcome = this.body.outcome();
                    return Poll::Ready(Err(Failed::new(outcome)));
                }
            }
            let frame = ready!(this.body.as_mut().poll_frame(cx));
            if this.body.terminal() == Terminal::Errored {
                // Failed before the commit: recorded now, and nothing held is sent.
                let outcome = this.body.as_mut().record_pinned(None);
                this.held.clear();
                *this.held_bytes = 0;
                *this.phase = Phase::Failed;
                // What failed it stays, for a caller that sends the attempt on.
                this.held.extend(frame);
                return Poll::Ready(Err(Failed::new(outcome)));
            }
            let commit = match frame {
                None => Commit::End,
                Some(frame) => {
                    *this.held_bytes = this.held_bytes.saturating_add(data_len(&frame));
                    // Trailers are the last frame: the end, whatever they say.
                    let trailers = frame.as_ref().is_ok_and(Frame::is_trailers);
                    this.held.push_back(frame);
                    let ended_well = trailers || this.body.terminal() == Terminal::Completed;
                    match this
                        .point
                        .check(ended_well, this.body.progress(), *this.held_bytes)
                    {
                        Some(commit) => commit,
                        None => continue,
                    }
                }
            };
            *this.phase = Phase::Committed(commit);
            return Poll::Ready(Ok(commit));
        }
    }

    /// Gives the attempt up for `cause` (a hedge that lost: [`Cause::HedgeLost`]) and
    /// records now: Abandoned with that cause, unless the body had already ended
    /// (then its own verdict). The frames held are dropped; drop the attempt after
    /// this (its drop records nothing more, and closes the worker's body).
    pub fn abandon(self: Pin<&mut Self>, cause: Cause) -> Outcome {
        let this = self.project();
        this.held.clear();
        *this.held_bytes = 0;
        this.body.record_pinned(Some(cause))
    }

    /// Whether the attempt has committed.
    pub fn is_committed(&self) -> bool {
        matches!(self.phase, Phase::Committed(_))
    }

    /// Bytes of data held back now (none once they are handed on, or dropped).
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    /// The tracked body.
    pub fn get_ref(&self) -> &TrackedBody<B, R, W, F> {
        &self.body
    }

    /// The outcome that would be recorded now (or was, for a failed attempt).
    pub fn outcome(&self) -> Outcome {
        self.body.outcome()
    }
}

/// Bytes of data in a frame (none for trailers or an error).
#[inline]
fn data_len<D: Buf, E>(frame: &Result<Frame<D>, E>) -> usize {
    match frame {
        Ok(frame) => frame.data_ref().map_or(0, Buf::remaining),
        Err(_) => 0,
    }
}

impl<B, R, W, F> Body for AttemptBody<B, R, W, F>
where
    B: Body,
    R: Recorder,
    TrackedBody<B, R, W, F>: Body<Data = B::Data>,
{
    type Data = B::Data;
    type Error = <TrackedBody<B, R, W, F> as Body>::Error;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, Self::Error>>> {
        // Committed and nothing left held: the tracked body's poll, one branch.
        if self.held.is_empty() && self.phase != Phase::Holding {
            return self.project().body.poll_frame(cx);
        }
        held_or_next(self, cx)
    }

    fn is_end_stream(&self) -> bool {
        self.phase != Phase::Holding && self.held.is_empty() && self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let hint = self.body.size_hint();
        let held = self.held_bytes as u64;
        let mut sum = SizeHint::new();
        sum.set_lower(hint.lower().saturating_add(held));
        if let Some(upper) = hint.upper().and_then(|u| u.checked_add(held)) {
            sum.set_upper(upper);
        }
        sum
    }
}

/// Before the commit, and while frames are held: reads up to the commit (after a
/// failure, what failed it and the rest of the body follow), then hands the held
/// frames on in order.
#[cold]
#[inline(never)]
fn held_or_next<B, R, W, F>(
    mut attempt: Pin<&mut AttemptBody<B, R, W, F>>,
    cx: &mut Context<'_>,
) -> Poll<Option<Held<B, R, W, F>>>
where
    B: Body,
    R: Recorder,
    TrackedBody<B, R, W, F>: Body<Data = B::Data>,
{
    if attempt.phase == Phase::Holding {
        let _ = ready!(attempt.as_mut().poll_commit(cx));
    }
    let this = attempt.project();
    if let Some(frame) = this.held.pop_front() {
        *this.held_bytes = this.held_bytes.saturating_sub(data_len(&frame));
        return Poll::Ready(Some(frame));
    }
    this.body.poll_frame(cx)
}

impl<B, R, W, F> core::fmt::Debug for AttemptBody<B, R, W, F>
where
    B: Body,
    R: Recorder,
    W: core::fmt::Debug,
    TrackedBody<B, R, W, F>: Body,
{
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("AttemptBody")
            .field("phase", &self.phase)
            .field("held", &self.held.len())
            .field("held_bytes", &self.held_bytes)
            .field("point", &self.point)
            .field("body", &self.body)
            .finish()
    }
}
