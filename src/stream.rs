//! The stream wrapper: feeds the machine and reports exactly once.

use core::pin::Pin;
use core::task::{Context, Poll};

use futures_core::{FusedStream, Stream};
use pin_project_lite::pin_project;

use crate::sse::{Signal, SseRules, SseScanner};
use crate::{Event, Outcome, Recorder, Terminal, Tracker};

pin_project! {
    /// A stream of byte chunks that knows how it ended and says so exactly once.
    ///
    /// Items pass through unchanged and in order. Each `Ok` item is a
    /// [`Event::Chunk`] (and, with [`with_sse`](Self::with_sse), is scanned for an
    /// in-band done or failure), each `Err` item an [`Event::Error`], and the inner
    /// stream's end an [`Event::End`]; after the end the inner stream is never polled
    /// again. The [`Outcome`] goes to the recorder once: at [`finish`](Self::finish),
    /// or when the wrapper is dropped, also while unwinding from a panic in the inner
    /// stream (whose verdict is then [`Failure`](crate::Verdict::Failure)). A stream
    /// dropped before any end is [`Abandoned`](crate::Verdict::Abandoned): the client
    /// left, and the worker is not to blame.
    ///
    /// The wrapper allocates nothing; it is as generic as its parts.
    ///
    /// ```
    /// use futures_util::{StreamExt, stream};
    /// use sluice::{Outcome, Terminal, TrackedStream, Verdict};
    /// # futures_executor::block_on(async {
    /// let upstream = stream::iter([b"token"; 3]).map(Ok::<_, std::io::Error>);
    /// let mut tracked = TrackedStream::new(upstream, |o: Outcome| {
    ///     assert_eq!((o.verdict, o.chunks, o.bytes), (Verdict::Success, 3, 15));
    /// });
    /// while let Some(item) = tracked.next().await {
    ///     assert_eq!(item.unwrap(), b"token");
    /// }
    /// assert_eq!(tracked.terminal(), Terminal::Completed);
    /// tracked.finish(); // or drop it: the recorder hears once either way
    /// # });
    /// ```
    pub struct TrackedStream<S, R: Recorder> {
        #[pin]
        inner: S,
        ledger: Ledger<R>,
    }

    impl<S, R: Recorder> PinnedDrop for TrackedStream<S, R> {
        fn drop(this: Pin<&mut Self>) {
            this.project().ledger.report();
        }
    }
}

/// Everything but the inner stream: the machine, the counts and the recorder.
struct Ledger<R> {
    tracker: Tracker,
    scanner: Option<SseScanner>,
    recorder: Option<R>,
    chunks: u64,
    bytes: u64,
    state: Polling,
}

/// Whether the inner stream may be polled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Polling {
    /// Between polls.
    Idle,
    /// The inner `poll_next` panicked, and nobody has settled that yet.
    Inside,
    /// The inner stream ended (or panicked): never poll it again.
    Ended,
}

impl<S, R: Recorder> TrackedStream<S, R> {
    /// Tracks `inner`, reporting to `recorder`. No SSE rules: only the end of the
    /// stream, an error item or a `mark_*` call decides.
    pub fn new(inner: S, recorder: R) -> Self {
        Self {
            inner,
            ledger: Ledger {
                tracker: Tracker::new(),
                scanner: None,
                recorder: Some(recorder),
                chunks: 0,
                bytes: 0,
                state: Polling::Idle,
            },
        }
    }

    /// Scans the chunks as Server-Sent Events, turning the rules' done and failed
    /// events into [`Event::Done`] and [`Event::Failed`].
    #[must_use]
    pub fn with_sse(mut self, rules: SseRules) -> Self {
        self.ledger.scanner = Some(SseScanner::new(rules));
        self
    }

    /// Marks the stream complete (the caller knows it is done), as [`Event::Done`].
    pub fn mark_completed(&mut self) {
        self.ledger.handle(Event::Done);
    }

    /// Marks the stream failed (a timeout, a bad payload), as [`Event::Failed`].
    pub fn mark_errored(&mut self) {
        self.ledger.handle(Event::Failed);
    }

    /// Feeds an event to the machine through a pin, for a driver that holds the
    /// stream pinned: [`Event::Done`] and [`Event::Failed`] are the pinned
    /// `mark_completed` and `mark_errored`.
    pub fn handle(self: Pin<&mut Self>, event: Event) -> Terminal {
        self.project().ledger.handle(event)
    }

    /// Where the stream stands now.
    pub fn terminal(&self) -> Terminal {
        self.ledger.tracker().terminal()
    }

    /// The outcome that would be recorded now.
    pub fn outcome(&self) -> Outcome {
        self.ledger.outcome()
    }

    /// The inner stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Records the outcome now and returns it; the drop that follows records nothing.
    pub fn finish(mut self) -> Outcome {
        self.ledger.report();
        self.ledger.outcome()
    }
}

/// The scanner, kept out of line: inlined, it would weigh on the wrapper's hot path
/// even for streams that scan nothing.
#[inline(never)]
fn scan(scanner: &mut SseScanner, chunk: &[u8]) -> Option<Signal> {
    scanner.feed(chunk)
}

/// Set on the stack around the inner `poll_next`; dropped only while unwinding.
struct Unwinding<'a>(&'a mut Polling);

impl Drop for Unwinding<'_> {
    fn drop(&mut self) {
        *self.0 = Polling::Inside;
    }
}

impl<R: Recorder> Ledger<R> {
    /// The machine as it stands, counting a panic out of the inner stream's
    /// `poll_next` (seen as `Inside` from anywhere but that poll) as an error.
    fn tracker(&self) -> Tracker {
        let mut tracker = self.tracker;
        if self.state == Polling::Inside {
            tracker.handle(Event::Error);
        }
        tracker
    }

    /// Makes a panic out of the inner stream final: it ended, in an error.
    fn settle(&mut self) {
        if self.state == Polling::Inside {
            self.state = Polling::Ended;
            self.tracker.handle(Event::Error);
        }
    }

    fn handle(&mut self, event: Event) -> Terminal {
        self.settle();
        self.tracker.handle(event)
    }

    fn outcome(&self) -> Outcome {
        Outcome::new(self.tracker().verdict(), self.chunks, self.bytes)
    }

    /// Records once: the first call hands the outcome over, later calls do nothing.
    /// Also called from `Drop` while unwinding out of the inner stream.
    fn report(&mut self) {
        self.settle();
        if let Some(recorder) = self.recorder.take() {
            recorder.record(self.outcome());
        }
    }

    /// Feeds what one poll of the inner stream gave.
    fn observe<B: AsRef<[u8]>, E>(&mut self, poll: &Poll<Option<Result<B, E>>>) {
        match poll {
            Poll::Pending => {}
            Poll::Ready(Some(Ok(chunk))) => {
                let chunk = chunk.as_ref();
                self.chunks += 1;
                self.bytes += chunk.len() as u64;
                self.tracker.handle(Event::Chunk);
                match self.scanner.as_mut().and_then(|s| scan(s, chunk)) {
                    Some(Signal::Done) => self.tracker.handle(Event::Done),
                    Some(Signal::Failed) => self.tracker.handle(Event::Failed),
                    None => self.tracker.terminal(),
                };
            }
            Poll::Ready(Some(Err(_))) => {
                self.tracker.handle(Event::Error);
            }
            Poll::Ready(None) => {
                self.state = Polling::Ended;
                self.tracker.handle(Event::End);
            }
        }
    }
}

impl<S, B, E, R> Stream for TrackedStream<S, R>
where
    S: Stream<Item = Result<B, E>>,
    B: AsRef<[u8]>,
    R: Recorder,
{
    type Item = Result<B, E>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.project();
        let ledger = this.ledger;
        match ledger.state {
            Polling::Idle => {}
            Polling::Ended => return Poll::Ready(None),
            Polling::Inside => {
                // The last poll panicked and the caller caught it: that is the end.
                ledger.settle();
                return Poll::Ready(None);
            }
        }
        // Marks the stream as panicked only if `poll_next` unwinds; the normal path
        // forgets the guard and pays nothing.
        let unwinding = Unwinding(&mut ledger.state);
        let poll = this.inner.poll_next(cx);
        core::mem::forget(unwinding);
        ledger.observe(&poll);
        poll
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match self.ledger.state {
            Polling::Idle => self.inner.size_hint(),
            Polling::Inside | Polling::Ended => (0, Some(0)),
        }
    }
}

impl<S, B, E, R> FusedStream for TrackedStream<S, R>
where
    S: Stream<Item = Result<B, E>>,
    B: AsRef<[u8]>,
    R: Recorder,
{
    fn is_terminated(&self) -> bool {
        self.ledger.state != Polling::Idle
    }
}

impl<S, R: Recorder> core::fmt::Debug for TrackedStream<S, R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TrackedStream")
            .field("terminal", &self.terminal())
            .field("chunks", &self.ledger.chunks)
            .field("bytes", &self.ledger.bytes)
            .field("sse", &self.ledger.scanner)
            .field("recorded", &self.ledger.recorder.is_none())
            .finish_non_exhaustive()
    }
}
