//! The client's body: the tracked stream of a worker's 2xx answer, as an
//! [`Attempt`] (what it held back before its commit comes first), with what the
//! gateway adds around it.
//!
//! * **Progress times.** After each poll it reads the stream's progress count
//!   ([`TrackedStream::progress`]) and notes when it grew (the clock reading that
//!   restarted the worker's idle timer in that poll, else its own), for the time to
//!   first token and the time per output token; the first and the last go to
//!   [`Timing`] just before the verdict is recorded.
//! * **A failure after the head reaches the client as one.** The tracked stream
//!   carries the failure event of its SSE dialect
//!   ([`TrackedStream::with_failure_event_named`], naming the worker): when the
//!   worker breaks the connection, stops short of its done event, or a progress timer
//!   fires, an event stream ends with the route's error event (no `[DONE]`, no
//!   `message_stop`; a worker cut off inside an event has that event ended first),
//!   and the body then ends cleanly, so the client's SSE parser reads it: the error
//!   item that follows the event is not passed on. Ollama's NDJSON ends the same way
//!   with Ollama's error line. A body without in-band rules gets no
//!   event: it is cut (the body ends with an error), never ended cleanly. An error the
//!   worker sent in-band already went through as it came.
//! * **A cut loses no bytes.** The server (hyper) drops what it holds in its write
//!   buffer with the connection when the body fails, and writes it out when the body
//!   is `Pending`: a cut that comes right after a chunk waits one `Pending` (the task
//!   woken at once), so the bytes the worker sent before it reach the client.
//! * **The end of the shutdown grace** ends the stream: Abandoned with cause
//!   `shutdown` (an end already seen stands), the upstream dropped, and the client's
//!   body cut with an error.
//! * **The verdict at the end.** When the tracked stream ends, the body drops it at
//!   once, so its verdict is recorded when the stream ends, not when the server gets
//!   round to dropping the body.

use std::error::Error;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use futures_util::Stream;
#[cfg(doc)]
use sluice::TrackedStream;
use sluice::attempt::Attempt;
use sluice::failure::FailureTail;
use sluice::timers::{NoTimers, ProgressTimers, ProgressWatch};
use sluice::{Cause, Outcome, Recorder, Verdict};
use sluice_tokio::TokioTimer;
use tokio::sync::watch;
use tokio::time::Instant;

use super::shutdown::{BoxError, ShutDown, grace_over};
use super::ticket::Timing;

/// What a body that got no failure event (one without SSE rules) ends with when its
/// worker failed after the head.
#[derive(Debug, Clone, Copy)]
struct WorkerFailed(Cause);

impl fmt::Display for WorkerFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the worker failed mid-stream ({})", self.0.as_str())
    }
}

impl Error for WorkerFailed {}

/// The attempt, pinned where the body can drop it early.
pub(super) type Pinned<S, R, W, F> = Pin<Box<Attempt<S, R, W, F>>>;

/// The client's body over an attempt's tracked stream.
pub(super) struct ClientBody<S: Stream, R: Recorder, W, F> {
    /// `None` once ended: dropping it recorded the verdict and closed the upstream.
    tracked: Option<Pinned<S, R, W, F>>,
    grace_over: Pin<Box<dyn Future<Output = ()> + Send>>,
    /// The flag behind `grace_over`, read without a lock: the future is polled again
    /// only when the flag changed or the body is polled with another waker (it has
    /// the last one registered), not on every poll.
    over: watch::Receiver<bool>,
    waker: Option<Waker>,
    timing: Arc<Timing>,
    /// The progress count at the last poll.
    seen: u64,
    /// When the first and the last progress were seen: handed to `timing` just before
    /// the verdict is recorded (the stream given up or dropped), not at every token.
    first_at: Option<Instant>,
    last_at: Option<Instant>,
    /// The stream yielded its failure event: the client has been told.
    told: bool,
    /// A chunk went out since the body last returned `Pending`: the server may still
    /// hold it in its write buffer.
    unflushed: bool,
    /// The error the body is cut with, held for one `Pending` so that the server
    /// writes what it holds first.
    held_cut: Option<BoxError>,
}

impl<S: Stream, R: Recorder, W, F> ClientBody<S, R, W, F> {
    /// The body over `attempt` (its stream with its failure event, if it is to have
    /// one), ended when `over` turns true; its progress marked in `timing`.
    pub(super) fn new(
        attempt: Pinned<S, R, W, F>,
        over: watch::Receiver<bool>,
        timing: Arc<Timing>,
    ) -> Self {
        Self {
            tracked: Some(attempt),
            grace_over: Box::pin(grace_over(over.clone())),
            over,
            waker: None,
            timing,
            seen: 0,
            first_at: None,
            last_at: None,
            told: false,
            unflushed: false,
            held_cut: None,
        }
    }

    /// Hands the progress times to `timing`: call before the stream is given up or
    /// dropped, which records its verdict (and the ticket reads them then).
    fn mark(&self) {
        if let (Some(first), Some(last)) = (self.first_at, self.last_at) {
            self.timing.progressed(self.seen, first, last);
        }
    }

    /// Cuts the body with `err`: at once if no chunk went out since the last
    /// `Pending`, or else after one `Pending` (the task woken at once). A server drops
    /// its write buffer with the connection when the body fails (hyper does), and it
    /// writes that buffer out when the body is `Pending`: so the bytes the worker sent
    /// before the cut reach the client, however fast the cut follows them.
    fn cut_with(
        &mut self,
        err: BoxError,
        cx: &Context<'_>,
    ) -> Poll<Option<Result<Bytes, BoxError>>> {
        if !self.unflushed {
            return Poll::Ready(Some(Err(err)));
        }
        self.unflushed = false;
        self.held_cut = Some(err);
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Drops the stream now: its verdict is recorded, with the progress times.
    fn end(&mut self) {
        self.mark();
        self.tracked = None;
    }
}

impl<S: Stream, R: Recorder, W, F> Drop for ClientBody<S, R, W, F> {
    fn drop(&mut self) {
        // The stream's drop (after this) records its verdict.
        if self.tracked.is_some() {
            self.mark();
        }
    }
}

/// The stream ended with `outcome` (already recorded), the client `told` of a
/// failure or not: an error to cut the body with, if it is not to end cleanly.
fn cut(outcome: Outcome, told: bool) -> Option<BoxError> {
    // A failure the worker told in-band went to the client as it came.
    let untold = outcome.verdict == Verdict::Failure && outcome.cause != Cause::ErrorEvent;
    (untold && !told).then(|| Box::new(WorkerFailed(outcome.cause)) as BoxError)
}

/// Progress timers that may know when the last progress was seen, from the clock
/// reading that restarted the idle timer.
pub(super) trait ProgressClock: ProgressTimers {
    /// When the stream's progress count became `progress`, if these timers read the
    /// clock then; `None` asks the caller to read it.
    fn progressed_at(&self, progress: u64) -> Option<Instant>;
}

impl ProgressClock for ProgressWatch<TokioTimer> {
    #[inline]
    fn progressed_at(&self, progress: u64) -> Option<Instant> {
        // The watch re-arms its idle sleep in the poll that yields new progress; a
        // sleep armed for another count (or none: no idle timeout) says nothing.
        match self.wait() {
            Some((armed, sleep)) if armed == progress => Some(sleep.since()),
            _ => None,
        }
    }
}

impl ProgressClock for NoTimers {
    #[inline(always)]
    fn progressed_at(&self, _: u64) -> Option<Instant> {
        None
    }
}

impl<S, E, R, W, F> Stream for ClientBody<S, R, W, F>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: Into<BoxError>,
    R: Recorder,
    W: ProgressClock,
    F: FailureTail<Bytes, E>,
{
    type Item = Result<Bytes, BoxError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(err) = this.held_cut.take() {
            return Poll::Ready(Some(Err(err)));
        }
        let Some(tracked) = this.tracked.as_mut() else {
            return Poll::Ready(None);
        };
        let registered = this.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker()));
        let changed = this.over.has_changed().unwrap_or(true);
        if (!registered || changed) && this.grace_over.as_mut().poll(cx).is_ready() {
            // No end was seen: the verdict is Abandoned (shutdown); an end already
            // seen stands. Giving the stream up records it now (with the progress
            // times), and dropping it closes the upstream.
            this.mark();
            if let Some(tracked) = this.tracked.as_mut() {
                tracked.as_mut().abandon(Cause::Shutdown);
            }
            this.tracked = None;
            return this.cut_with(Box::new(ShutDown), cx);
        }
        if !registered {
            this.waker = Some(cx.waker().clone());
        }
        let poll = tracked.as_mut().poll_next(cx);
        let stream = tracked.get_ref();
        let progress = stream.progress();
        if progress != this.seen {
            this.seen = progress;
            // The instant the idle timer was restarted from for this progress, in
            // this poll: one clock reading for both.
            let at = stream.watch().progressed_at(progress);
            let at = at.unwrap_or_else(Instant::now);
            this.first_at.get_or_insert(at);
            this.last_at = Some(at);
        }
        match poll {
            Poll::Pending => {
                this.unflushed = false;
                Poll::Pending
            }
            Poll::Ready(Some(Ok(chunk))) => {
                // The worker's chunks come before its end; an item after it is the
                // stream's failure event.
                this.told |= tracked.get_ref().is_inner_ended();
                this.unflushed = true;
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(err))) => {
                // Records the verdict now and closes the upstream.
                this.end();
                // After the failure event, the error item that failed the stream: the
                // client has the failure in its API's words, and the body ends
                // cleanly so that its parser reads them. Otherwise, a cut.
                if this.told {
                    return Poll::Ready(None);
                }
                this.cut_with(err.into(), cx)
            }
            Poll::Ready(None) => {
                let outcome = tracked.outcome();
                // Records the verdict now.
                this.end();
                match cut(outcome, this.told) {
                    Some(err) => this.cut_with(err, cx),
                    None => Poll::Ready(None),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::{StreamExt, stream};
    use sluice::TrackedStream;
    use sluice::sse::SseRules;

    use super::*;

    const TOKEN: &str = "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n";

    type Item = Result<Bytes, std::io::Error>;

    /// What a client reads from the body over `items` (tracked with `rules`, the
    /// failure event naming worker `w`): the text, whether the body ended cleanly,
    /// and the verdict recorded.
    async fn client_reads(items: Vec<Item>, rules: Option<SseRules>) -> (String, bool, Outcome) {
        let (record, recorded) = std::sync::mpsc::channel();
        let tracked = TrackedStream::new(stream::iter(items), move |o: Outcome| {
            let _ = record.send(o); // read below
        });
        let tracked = match rules {
            Some(rules) => tracked.with_sse(rules),
            None => tracked,
        };
        let tracked = tracked.with_failure_event_named(Arc::<str>::from("w"));
        let (_over, over) = watch::channel(false);
        // Nothing held back (a bound of 0): as the gateway runs without retries.
        let attempt = Box::pin(Attempt::new(tracked, 0));
        let mut body = ClientBody::new(attempt, over, Timing::start());
        let mut text = Vec::new();
        let mut clean = true;
        while let Some(item) = body.next().await {
            match item {
                Ok(bytes) => text.extend_from_slice(&bytes),
                Err(_) => {
                    clean = false;
                    assert!(body.next().await.is_none(), "nothing after the cut");
                    break;
                }
            }
        }
        let outcome = recorded.try_recv().expect("recorded when the stream ended");
        (String::from_utf8(text).expect("utf-8"), clean, outcome)
    }

    fn ok(text: &'static str) -> Item {
        Ok(Bytes::from_static(text.as_bytes()))
    }

    /// The last event of an OpenAI stream, parsed: its data must be an error object.
    fn last_error(text: &str) -> serde_json::Value {
        let last = text.trim_end().rsplit("\n\n").next().expect("an event");
        let data = last.strip_prefix("data: ").expect("a data event");
        serde_json::from_str(data).expect("JSON")
    }

    #[tokio::test]
    async fn a_worker_cut_inside_an_event_gets_it_ended_then_the_error_and_a_clean_end() {
        let cut = "data: {\"choices\":[{\"del";
        let (text, clean, outcome) =
            client_reads(vec![ok(TOKEN), ok(cut)], Some(SseRules::openai_chat())).await;
        assert!(clean, "{text}");
        assert_eq!(outcome.cause, Cause::Truncated);
        assert!(
            text.starts_with(&format!("{TOKEN}{cut}\n\ndata: {{\"error\"")),
            "{text}"
        );
        let error = last_error(&text);
        assert_eq!(error["error"]["code"], "truncated");
        assert_eq!(error["error"]["message"], "upstream w failed: truncated");
    }

    #[tokio::test]
    async fn a_broken_connection_is_told_and_the_body_ends_cleanly() {
        let items = vec![ok(TOKEN), Err(std::io::Error::other("reset")), ok(TOKEN)];
        let (text, clean, outcome) = client_reads(items, Some(SseRules::anthropic())).await;
        assert!(
            clean,
            "the error item after the event is not passed on: {text}"
        );
        assert_eq!(outcome.cause, Cause::ErrorItem);
        assert!(text.starts_with(TOKEN), "{text}");
        assert!(
            text.ends_with("\"message\":\"upstream w failed: error_item\"}}\n\n"),
            "{text}"
        );
        assert_eq!(
            text.matches("hi").count(),
            1,
            "nothing read after the error"
        );
    }

    #[tokio::test]
    async fn without_sse_rules_a_failure_cuts_the_body() {
        let items = vec![ok("{\"choices\":["), Err(std::io::Error::other("reset"))];
        let (text, clean, outcome) = client_reads(items, None).await;
        assert!(!clean, "{text}");
        assert_eq!(text, "{\"choices\":[");
        assert_eq!(outcome.cause, Cause::ErrorItem);
    }

    /// A waker that counts its wakes.
    struct Wakes(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    #[test]
    fn a_cut_right_after_a_chunk_waits_one_pending_so_the_server_writes_the_chunk_first() {
        let items = vec![ok("{\"choices\":["), Err(std::io::Error::other("reset"))];
        let tracked = TrackedStream::new(stream::iter(items), |_: Outcome| {});
        let attempt = Box::pin(Attempt::new(
            tracked.with_failure_event_named(Arc::<str>::from("w")),
            0,
        ));
        let (_over, over) = watch::channel(false);
        let mut body = ClientBody::new(attempt, over, Timing::start());
        let wakes = Arc::new(Wakes(std::sync::atomic::AtomicUsize::new(0)));
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let mut poll = || Pin::new(&mut body).poll_next(&mut cx);
        assert!(matches!(poll(), Poll::Ready(Some(Ok(_)))), "the chunk");
        // The server writes out what it holds while the body is pending; it would
        // drop it with the connection on the error.
        assert!(poll().is_pending(), "one pending before the cut");
        assert_eq!(
            wakes.0.load(std::sync::atomic::Ordering::Relaxed),
            1,
            "woken at once"
        );
        assert!(matches!(poll(), Poll::Ready(Some(Err(_)))), "then the cut");
        assert!(matches!(poll(), Poll::Ready(None)));
        // A cut with no chunk before it since the last pending comes at once.
        let items: Vec<Item> = vec![Err(std::io::Error::other("reset"))];
        let tracked = TrackedStream::new(stream::iter(items), |_: Outcome| {});
        let attempt = Box::pin(Attempt::new(
            tracked.with_failure_event_named(Arc::<str>::from("w")),
            0,
        ));
        let (_over, over) = watch::channel(false);
        let mut body = ClientBody::new(attempt, over, Timing::start());
        let poll = Pin::new(&mut body).poll_next(&mut cx);
        assert!(matches!(poll, Poll::Ready(Some(Err(_)))), "the cut at once");
        assert_eq!(
            wakes.0.load(std::sync::atomic::Ordering::Relaxed),
            1,
            "no wake"
        );
    }

    #[tokio::test]
    async fn the_worker_s_own_error_goes_through_and_nothing_is_added() {
        let error = "data: {\"error\":{\"message\":\"out of memory\"}}\n\n";
        let items = vec![ok(TOKEN), ok(error)];
        let (text, clean, outcome) = client_reads(items, Some(SseRules::openai_chat())).await;
        assert!(clean, "{text}");
        assert_eq!(outcome.cause, Cause::ErrorEvent);
        assert_eq!(text, format!("{TOKEN}{error}"));
        // Then a broken connection: a cut, as the worker left it.
        let items = vec![ok(error), Err(std::io::Error::other("reset"))];
        let (text, clean, _) = client_reads(items, Some(SseRules::openai_chat())).await;
        assert!(!clean, "{text}");
        assert_eq!(text, error);
    }

    #[tokio::test]
    async fn a_clean_end_is_a_clean_end() {
        let items = vec![ok(TOKEN), ok("data: [DONE]\n\n")];
        let (text, clean, outcome) = client_reads(items, Some(SseRules::openai_chat())).await;
        assert!(clean);
        assert_eq!(outcome.verdict, Verdict::Success);
        assert_eq!(text, format!("{TOKEN}data: [DONE]\n\n"));
    }
}
