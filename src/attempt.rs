//! The commit point: an attempt holds back what it reads until its first progress
//! event, so that an attempt that fails before it can be replaced invisibly.
//!
//! A request may be sent to several workers in turn, an **attempt** each, and the
//! client must see exactly one of them. Engines send a preamble before the first
//! token (the OpenAI role chunk, Anthropic's `message_start`, Responses'
//! `response.created`), and many failures come right after it: a gateway that
//! forwards the preamble at once has committed to that worker and can no longer
//! retry. An [`Attempt`] reads its [`TrackedStream`] and keeps what it read, up to a
//! byte bound, until it **commits**:
//!
//! * on the first progress event (a token: not a keep-alive, not the preamble),
//! * on the stream's successful end (its done event, or a clean end where none is
//!   required),
//! * or when the held bytes reach the bound.
//!
//! If the stream fails first (an error item, an in-band error, a cut, a timer), the
//! attempt has **failed**: its verdict is recorded to its worker at once, as usual,
//! the held bytes are dropped, and nothing of it has reached the client. The caller
//! may then start another attempt on another worker. After the commit, the attempt
//! is the client's answer and is never replaced.
//!
//! The driving loop (a gateway with retries):
//!
//! 1. admit a worker, send the request, classify the response head;
//! 2. wrap the body in a [`TrackedStream`] (its recorder is the worker's permit, its
//!    timers the worker's first-token timer), then in an `Attempt`, and pin it;
//! 3. await [`commit`](Attempt::commit): on `Err` go back to 1 with another worker
//!    (the failed one has heard its verdict); on `Ok` send the response head to the
//!    client, then the attempt itself as the body (it is a `Stream`: the held items
//!    come first).
//!
//! To hedge, run two attempts' `commit` at once; the first to commit wins, and the
//! other is given up with [`abandon`](Attempt::abandon)`(Cause::HedgeLost)` and
//! dropped: its worker hears Abandoned, not Failure (a slow worker is not a failed
//! one).
//!
//! ```
//! use core::pin::pin;
//! use futures_util::{StreamExt, stream};
//! use sluice::attempt::{Attempt, Commit};
//! use sluice::sse::SseRules;
//! use sluice::{Cause, Outcome, TrackedStream, Verdict};
//!
//! # futures_executor::block_on(async {
//! let (tx, rx) = std::sync::mpsc::channel();
//! let attempt = |body: Vec<&'static [u8]>| {
//!     let tx = tx.clone();
//!     let upstream = stream::iter(body.into_iter().map(Ok::<_, std::io::Error>));
//!     let tracked = TrackedStream::new(upstream, move |o: Outcome| drop(tx.send(o)))
//!         .with_sse(SseRules::openai_chat());
//!     Attempt::new(tracked, 64 * 1024)
//! };
//! let role = &b"data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\n"[..];
//!
//! // The first worker sends its preamble, then an error object.
//! let mut first = pin!(attempt(vec![role, b"data: {\"error\":{\"message\":\"oom\"}}\n\n"]));
//! let failed = first.as_mut().commit().await.unwrap_err();
//! assert_eq!((failed.outcome.verdict, failed.outcome.cause), (Verdict::Failure, Cause::ErrorEvent));
//! assert_eq!(rx.try_recv().unwrap(), failed.outcome); // recorded at once
//!
//! // The second one answers: the client reads only its bytes, the preamble first.
//! let token = &b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n"[..];
//! let mut second = Box::pin(attempt(vec![role, token, b"data: [DONE]\n\n"]));
//! assert_eq!(second.as_mut().commit().await.unwrap(), Commit::Progress);
//! let sent: Vec<_> = second.as_mut().map(Result::unwrap).collect().await;
//! assert_eq!(sent, [role, token, b"data: [DONE]\n\n"]);
//! drop(second); // records
//! assert_eq!(rx.try_recv().unwrap().verdict, Verdict::Success);
//! # });
//! ```
#![cfg(feature = "alloc")]

use alloc::collections::VecDeque;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll, ready};

use futures_core::{FusedStream, Stream};
use pin_project_lite::pin_project;

use crate::failure::{FailureTail, NoFailureEvent};
use crate::timers::{NoTimers, ProgressTimers};
use crate::{Cause, Outcome, Recorder, Terminal, TrackedStream};

/// Why an attempt committed: from here on its bytes go to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Commit {
    /// Its first progress event: a token, not a keep-alive or the preamble.
    Progress,
    /// It ended well before any other progress: its done event, or a clean end
    /// where no done event is required (an empty answer, a non-streaming body).
    End,
    /// What it held reached the byte bound before either.
    Bound,
}

/// An attempt that failed before its commit: nothing of it reached the client, and
/// its worker has heard the verdict.
///
/// What failed it (the worker's error event or error item, or the failure event of
/// [`with_failure_event`](TrackedStream::with_failure_event) in their place) stays in
/// the attempt: a caller that cannot replace it (no worker left, no retry budget)
/// sends the attempt on as its answer, and the client reads that failure, none of
/// the held bytes before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Failed {
    /// The outcome recorded to the worker: a [`Failure`](crate::Verdict::Failure)
    /// with its cause.
    pub outcome: Outcome,
}

impl Failed {
    /// The failure of an attempt whose recorded outcome is `outcome`: for an adapter's
    /// own attempt type (`sluice_http::AttemptBody`), which answers with this one.
    pub const fn new(outcome: Outcome) -> Self {
        Self { outcome }
    }
}

/// The rule that says when an attempt commits, for a wrapper that holds its
/// upstream back ([`Attempt`] over a stream, `sluice_http::AttemptBody` over a body):
/// on its successful end, on its first progress event (unless it is held
/// [`whole`](Self::whole)), or once the bytes held reach the bound.
///
/// ```
/// use sluice::attempt::{Commit, CommitPoint};
///
/// let point = CommitPoint::new(1024);
/// assert_eq!(point.check(false, 0, 100), None); // the preamble: held
/// assert_eq!(point.check(false, 1, 200), Some(Commit::Progress));
/// assert_eq!(point.check(false, 0, 1024), Some(Commit::Bound));
/// assert_eq!(CommitPoint::whole(1024).check(false, 5, 200), None);
/// assert_eq!(CommitPoint::whole(1024).check(true, 5, 200), Some(Commit::End));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CommitPoint {
    limit: usize,
    on_progress: bool,
}

impl CommitPoint {
    /// Commits on the first progress event, the successful end, or `limit` bytes held.
    pub const fn new(limit: usize) -> Self {
        Self {
            limit,
            on_progress: true,
        }
    }

    /// Commits on the successful end or `limit` bytes held, whatever progress came.
    pub const fn whole(limit: usize) -> Self {
        Self {
            limit,
            on_progress: false,
        }
    }

    /// Whether to commit now, and why, after an item was held: `ended_well` when the
    /// upstream completed (its done event, or a clean end where none is required),
    /// `progress` the progress events seen, `held_bytes` what is held.
    pub const fn check(
        &self,
        ended_well: bool,
        progress: u64,
        held_bytes: usize,
    ) -> Option<Commit> {
        if ended_well {
            Some(Commit::End)
        } else if self.on_progress && progress > 0 {
            Some(Commit::Progress)
        } else if held_bytes >= self.limit {
            Some(Commit::Bound)
        } else {
            None
        }
    }
}

/// Where an attempt stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Holding,
    Committed(Commit),
    Failed,
}

pin_project! {
    /// A [`TrackedStream`] that holds back what it reads until its commit point; see
    /// the [module docs](self).
    ///
    /// [`commit`](Self::commit) (or [`poll_commit`](Self::poll_commit)) reads until
    /// the attempt commits or fails. As a `Stream`, an attempt yields what it held,
    /// then the rest of the tracked stream; polled before its commit it first reads
    /// up to it, and if the attempt fails there, it yields none of the held items,
    /// only what the tracked stream has left (its error item, or the failure event
    /// of [`with_failure_event`](TrackedStream::with_failure_event)).
    ///
    /// Holding costs one `VecDeque` of the held items; after the commit, a poll is
    /// the tracked stream's poll plus one branch.
    pub struct Attempt<S: Stream, R: Recorder, W = NoTimers, F = NoFailureEvent> {
        #[pin]
        stream: TrackedStream<S, R, W, F>,
        held: VecDeque<S::Item>,
        held_bytes: usize,
        point: CommitPoint,
        phase: Phase,
    }
}

impl<S, B, E, R, W, F> Attempt<S, R, W, F>
where
    S: Stream<Item = Result<B, E>>,
    B: AsRef<[u8]>,
    R: Recorder,
    W: ProgressTimers,
    F: FailureTail<B, E>,
{
    /// Holds `stream` back until its commit, keeping at most about `limit` bytes
    /// (the item that crosses the bound is kept, and commits). A `limit` of zero
    /// commits on the first item.
    pub fn new(stream: TrackedStream<S, R, W, F>, limit: usize) -> Self {
        Self {
            stream,
            held: VecDeque::new(),
            held_bytes: 0,
            point: CommitPoint::new(limit),
            phase: Phase::Holding,
        }
    }

    /// Holds `stream` back until its successful end or `limit`, whatever progress it
    /// makes: for a non-streaming answer, which a client cannot use in part, so that
    /// a failure anywhere before its end can still be retried. It never commits with
    /// [`Commit::Progress`].
    pub fn whole(stream: TrackedStream<S, R, W, F>, limit: usize) -> Self {
        Self {
            point: CommitPoint::whole(limit),
            ..Self::new(stream, limit)
        }
    }

    /// Reads until the attempt commits or fails; see [`poll_commit`](Self::poll_commit).
    pub fn commit(self: Pin<&mut Self>) -> impl Future<Output = Result<Commit, Failed>> + '_ {
        let mut this = self;
        core::future::poll_fn(move |cx| this.as_mut().poll_commit(cx))
    }

    /// Reads the tracked stream, holding each item back, until the attempt commits
    /// (`Ok`, with why) or fails (`Err`: the outcome has just been recorded, and the
    /// held items are dropped but the one that failed it). Once settled, it answers
    /// the same again without reading.
    pub fn poll_commit(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Commit, Failed>> {
        let mut this = self.project();
        loop {
            match *this.phase {
                Phase::Holding => {}
                Phase::Committed(commit) => return Poll::Ready(Ok(commit)),
                Phase::Failed => {
                    let outcome = this.stream.outcome();
                    return Poll::Ready(Err(Failed { outcome }));
                }
            }
            let item = ready!(this.stream.as_mut().poll_next(cx));
            if this.stream.terminal() == Terminal::Errored {
                // Failed before the commit: recorded now, and nothing held is sent.
                let outcome = this.stream.as_mut().record_pinned(None);
                this.held.clear();
                *this.held_bytes = 0;
                *this.phase = Phase::Failed;
                // What failed it stays, for a caller that sends the attempt on.
                this.held.extend(item);
                return Poll::Ready(Err(Failed { outcome }));
            }
            let commit = match item {
                None => Commit::End,
                Some(item) => {
                    if let Ok(chunk) = &item {
                        *this.held_bytes = this.held_bytes.saturating_add(chunk.as_ref().len());
                    }
                    this.held.push_back(item);
                    let ended_well = this.stream.terminal() == Terminal::Completed;
                    match this
                        .point
                        .check(ended_well, this.stream.progress(), *this.held_bytes)
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
    /// records now: Abandoned with that cause, unless the stream had already ended
    /// (then its own verdict). The held items are dropped; drop the attempt after
    /// this (its drop records nothing more).
    pub fn abandon(self: Pin<&mut Self>, cause: Cause) -> Outcome {
        let this = self.project();
        this.held.clear();
        *this.held_bytes = 0;
        this.stream.record_pinned(Some(cause))
    }
}

impl<S: Stream, R: Recorder, W, F> Attempt<S, R, W, F> {
    /// What it holds and the tracked stream, apart: for a driver that sends the held
    /// items itself and then hands the stream on (to `sluice_tokio::forward`, say,
    /// which takes a [`TrackedStream`] and runs its own timers). Only an attempt that
    /// was never pinned can be taken apart: track `Box::pin(upstream)`, without
    /// [`with_timers`](TrackedStream::with_timers), and the attempt is `Unpin`
    /// (bound its wait for the commit with the runtime's timeout instead).
    ///
    /// ```
    /// use core::pin::Pin;
    /// use futures_util::stream;
    /// use sluice::attempt::{Attempt, Commit};
    /// use sluice::{Outcome, TrackedStream};
    ///
    /// # futures_executor::block_on(async {
    /// let upstream = Box::pin(stream::iter([Ok::<_, ()>(&b": ping\n\n"[..]), Ok(b"data: 1\n\n")]));
    /// let tracked = TrackedStream::new(upstream, |_: Outcome| {}).with_sse(Default::default());
    /// let mut attempt = Attempt::new(tracked, 1024);
    /// assert_eq!(Pin::new(&mut attempt).commit().await, Ok(Commit::Progress));
    /// let (held, tracked) = attempt.into_parts();
    /// assert_eq!(held.len(), 2); // send these first, then forward `tracked`
    /// assert_eq!(tracked.progress(), 1);
    /// # });
    /// ```
    pub fn into_parts(self) -> (VecDeque<S::Item>, TrackedStream<S, R, W, F>) {
        (self.held, self.stream)
    }

    /// Whether the attempt has committed.
    pub fn is_committed(&self) -> bool {
        matches!(self.phase, Phase::Committed(_))
    }

    /// Bytes held back now (none once they are handed on, or dropped).
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    /// The tracked stream.
    pub fn get_ref(&self) -> &TrackedStream<S, R, W, F> {
        &self.stream
    }

    /// The outcome that would be recorded now.
    pub fn outcome(&self) -> Outcome {
        self.stream.outcome()
    }
}

impl<S, B, E, R, W, F> Stream for Attempt<S, R, W, F>
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
        // Settled and nothing left held: the tracked stream's poll, behind one
        // predictable branch; the rest is out of line.
        if self.held.is_empty() && self.phase != Phase::Holding {
            return self.project().stream.poll_next(cx);
        }
        held_or_next(self, cx)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let (low, high) = self.stream.size_hint();
        let held = self.held.len();
        (
            low.saturating_add(held),
            high.and_then(|h| h.checked_add(held)),
        )
    }
}

/// Before the commit, and while items are held: reads up to the commit (after a
/// failure, what failed it and the rest of the stream follow), then hands the held
/// items on in order.
#[cold]
#[inline(never)]
fn held_or_next<S, B, E, R, W, F>(
    mut attempt: Pin<&mut Attempt<S, R, W, F>>,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<B, E>>>
where
    S: Stream<Item = Result<B, E>>,
    B: AsRef<[u8]>,
    R: Recorder,
    W: ProgressTimers,
    F: FailureTail<B, E>,
{
    if attempt.phase == Phase::Holding {
        let _ = ready!(attempt.as_mut().poll_commit(cx));
    }
    let this = attempt.project();
    if let Some(item) = this.held.pop_front() {
        if let Ok(chunk) = &item {
            *this.held_bytes = this.held_bytes.saturating_sub(chunk.as_ref().len());
        }
        return Poll::Ready(Some(item));
    }
    this.stream.poll_next(cx)
}

impl<S, B, E, R, W, F> FusedStream for Attempt<S, R, W, F>
where
    S: Stream<Item = Result<B, E>>,
    B: AsRef<[u8]>,
    R: Recorder,
    W: ProgressTimers,
    F: FailureTail<B, E>,
{
    fn is_terminated(&self) -> bool {
        self.held.is_empty() && self.stream.is_terminated()
    }
}

impl<S: Stream, R: Recorder, W: core::fmt::Debug, F> core::fmt::Debug for Attempt<S, R, W, F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Attempt")
            .field("phase", &self.phase)
            .field("held", &self.held.len())
            .field("held_bytes", &self.held_bytes)
            .field("point", &self.point)
            .field("stream", &self.stream)
            .finish()
    }
}
