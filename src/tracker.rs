//! The Terminal machine: events in, one verdict out.

/// Where a stream stands. See [`Tracker`] for the transitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Terminal {
    /// In flight: no end seen yet.
    #[default]
    Active,
    /// Ended cleanly (end of stream or an in-band done), and no error since.
    Completed,
    /// Failed. Absorbing: nothing leaves this state.
    Errored,
}

/// What a worker's circuit breaker is told about one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// The stream completed: the worker did its job.
    Success,
    /// The stream failed: count it against the worker.
    Failure,
    /// Nobody saw an end: the client left or the caller gave up. Not the worker's
    /// fault; a breaker counts nothing but frees the permit.
    Abandoned,
}

impl Verdict {
    /// A stable snake_case label, for metrics and logs.
    ///
    /// ```
    /// assert_eq!(sluice::Verdict::Abandoned.as_str(), "abandoned");
    /// ```
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Abandoned => "abandoned",
        }
    }
}

impl core::fmt::Display for Verdict {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An input to the [`Tracker`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Event {
    /// An item of data passed through.
    Chunk,
    /// The upstream yielded an error item.
    Error,
    /// The upstream ended (the inner stream returned `None`).
    End,
    /// The stream is known complete: an in-band done sentinel, or the caller's
    /// `mark_completed`.
    Done,
    /// The stream is known failed: an in-band error event, or the caller's
    /// `mark_errored` (a timeout, say).
    Failed,
}

/// The pure Terminal machine: no clock, no I/O, no allocation.
///
/// | state \ event | `Chunk` | `Error` | `End` | `Done` | `Failed` |
/// |---|---|---|---|---|---|
/// | `Active` | Active | Errored | Completed | Completed | Errored |
/// | `Completed` | Completed | **Errored** | Completed | Completed | Errored |
/// | `Errored` | Errored | Errored | Errored | Errored | Errored |
///
/// `Completed` is not absorbing: an error after an in-band done is still a failure.
/// The verdict reads the state: `Completed` is [`Verdict::Success`], `Errored` is
/// [`Verdict::Failure`], and `Active` is [`Verdict::Abandoned`].
///
/// Drive it with [`handle`](Self::handle) for every event, then read
/// [`verdict`](Self::verdict) once, when the stream is finished or dropped:
///
/// ```
/// use sluice::{Event, Terminal, Tracker, Verdict};
///
/// let mut tracker = Tracker::new();
/// tracker.handle(Event::Chunk);
/// assert_eq!(tracker.verdict(), Verdict::Abandoned); // nobody saw an end yet
/// assert_eq!(tracker.handle(Event::Done), Terminal::Completed);
/// tracker.handle(Event::Error); // an error after done still counts
/// assert_eq!(tracker.verdict(), Verdict::Failure);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tracker {
    terminal: Terminal,
}

impl Tracker {
    /// A machine in [`Terminal::Active`].
    pub const fn new() -> Self {
        Self {
            terminal: Terminal::Active,
        }
    }

    /// A machine in the state that gives `verdict`.
    pub(crate) const fn with_verdict(verdict: Verdict) -> Self {
        let terminal = match verdict {
            Verdict::Abandoned => Terminal::Active,
            Verdict::Success => Terminal::Completed,
            Verdict::Failure => Terminal::Errored,
        };
        Self { terminal }
    }

    /// Feeds one event and returns the state it leads to.
    pub fn handle(&mut self, event: Event) -> Terminal {
        use {Event as E, Terminal as T};
        self.terminal = match (self.terminal, event) {
            (T::Errored, _) | (_, E::Error | E::Failed) => T::Errored,
            (_, E::End | E::Done) => T::Completed,
            (state, E::Chunk) => state,
        };
        self.terminal
    }

    /// The current state.
    pub const fn terminal(&self) -> Terminal {
        self.terminal
    }

    /// The verdict if the stream ended now.
    pub const fn verdict(&self) -> Verdict {
        match self.terminal {
            Terminal::Active => Verdict::Abandoned,
            Terminal::Completed => Verdict::Success,
            Terminal::Errored => Verdict::Failure,
        }
    }
}

/// Why a stream got its verdict: the event that settled it.
///
/// Metrics and logs label verdicts by it ([`as_str`](Self::as_str) is a stable
/// snake_case label); breakers ignore it. More causes may follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Cause {
    /// The rules' done event (`data: [DONE]`, `message_stop`, `response.completed`).
    Done,
    /// The upstream ended cleanly, and nothing required an end marker (no SSE rules,
    /// or rules that opted out with [`require_done(false)`](crate::sse::SseRules::require_done)).
    End,
    /// The upstream yielded an error item (a broken connection, a decode error).
    ErrorItem,
    /// An in-band error event: an error object in the data, or an `error` event.
    ErrorEvent,
    /// The upstream ended before the done event its rules require.
    Truncated,
    /// The worker sent no progress (a token, not a keep-alive) in time after the start.
    FirstTokenTimeout,
    /// The worker sent no progress in time after the last one.
    IdleTimeout,
    /// The stream's total deadline passed.
    Deadline,
    /// The inner stream panicked while being polled.
    Panic,
    /// The client left before any end: the tracked stream or body was dropped
    /// unfinished. Not the worker's fault, Abandoned.
    ClientLeft,
    /// The client left before the worker's response head came (while the request was
    /// sent, or its status and headers awaited): not the worker's fault, Abandoned.
    /// What a [`RecordGuard`](crate::RecordGuard) records when it is dropped.
    ClientLeftBeforeHead,
    /// The client stopped reading (a send timeout): not the worker's fault.
    ClientStalled,
    /// The start of the response decided (see `breaker::StatusPolicy`).
    Status,
    /// The request never got a response: connect error, send timeout.
    SendFailed,
    /// The caller said so: `mark_completed`, `mark_errored`, or a verdict handed in
    /// whole (`Outcome::from(Verdict)`).
    Marked,
    /// A gRPC status settled it: the `grpc-status` trailer (or the header of a
    /// trailers-only response), judged by `sluice_http::GrpcPolicy`.
    GrpcStatus,
    /// The worker sent no response head (status line and headers) in time: a
    /// Failure.
    HeaderTimeout,
    /// The gateway shut down (its grace period ended) before the stream did: not the
    /// worker's fault, Abandoned.
    Shutdown,
    /// Another attempt at the same request reached its first token first, and this
    /// one was dropped (a hedge that lost): a slow worker, not a failed one, so
    /// Abandoned.
    HedgeLost,
    /// The other half of a pair failed (a prefill worker, for its decode worker), and
    /// this one was dropped: not its fault, Abandoned.
    PeerFailed,
}

impl Cause {
    /// A stable snake_case label, for metrics and logs.
    ///
    /// ```
    /// assert_eq!(sluice::Cause::FirstTokenTimeout.as_str(), "first_token_timeout");
    /// ```
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Done => "done",
            Self::End => "end",
            Self::ErrorItem => "error_item",
            Self::ErrorEvent => "error_event",
            Self::Truncated => "truncated",
            Self::FirstTokenTimeout => "first_token_timeout",
            Self::IdleTimeout => "idle_timeout",
            Self::Deadline => "deadline",
            Self::Panic => "panic",
            Self::ClientLeft => "client_left",
            Self::ClientLeftBeforeHead => "client_left_before_head",
            Self::ClientStalled => "client_stalled",
            Self::Status => "status",
            Self::SendFailed => "send_failed",
            Self::Marked => "marked",
            Self::GrpcStatus => "grpc_status",
            Self::HeaderTimeout => "header_timeout",
            Self::Shutdown => "shutdown",
            Self::HedgeLost => "hedge_lost",
            Self::PeerFailed => "peer_failed",
        }
    }
}

impl core::fmt::Display for Cause {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The tokens a stream used, as the stream itself reported them (see the
/// [`sse`](crate::sse#usage) module docs for where each preset reads them, and the
/// [`ndjson`](crate::ndjson) and [`eventstream`](crate::eventstream) ones).
///
/// `None` is "not reported": the stream never said, or what it said was no count
/// (see the module docs for the rule on hostile numbers). The default is both `None`.
///
/// ```
/// let usage = sluice::Usage::default();
/// assert_eq!((usage.input_tokens, usage.output_tokens), (None, None));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Usage {
    /// Tokens of the prompt (OpenAI `prompt_tokens`, Anthropic, Responses and Cohere
    /// `input_tokens`, Gemini `promptTokenCount`, Ollama `prompt_eval_count`,
    /// Bedrock `inputTokens`).
    pub input_tokens: Option<u64>,
    /// Tokens generated (OpenAI `completion_tokens`, Anthropic, Responses and Cohere
    /// `output_tokens`, Gemini `candidatesTokenCount` plus `thoughtsTokenCount`,
    /// Ollama `eval_count`, Bedrock `outputTokens`).
    pub output_tokens: Option<u64>,
}

impl Usage {
    /// Usage with both counts given.
    pub const fn new(input_tokens: Option<u64>, output_tokens: Option<u64>) -> Self {
        Self {
            input_tokens,
            output_tokens,
        }
    }

    /// `later` over `self`: each count `later` reports replaces this one, the others
    /// stay (the last value reported wins).
    ///
    /// ```
    /// use sluice::Usage;
    ///
    /// let start = Usage::new(Some(12), Some(1));
    /// assert_eq!(start.updated(Usage::new(None, Some(40))), Usage::new(Some(12), Some(40)));
    /// ```
    #[must_use]
    pub const fn updated(self, later: Usage) -> Self {
        Self {
            input_tokens: match later.input_tokens {
                Some(n) => Some(n),
                None => self.input_tokens,
            },
            output_tokens: match later.output_tokens {
                Some(n) => Some(n),
                None => self.output_tokens,
            },
        }
    }

    /// Whether no count was reported.
    pub const fn is_empty(&self) -> bool {
        self.input_tokens.is_none() && self.output_tokens.is_none()
    }
}

/// What one tracked stream reports, exactly once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Outcome {
    /// How it ended, for the breaker.
    pub verdict: Verdict,
    /// Why: the event that settled the verdict, for metrics and logs.
    pub cause: Cause,
    /// Data items passed through (`Ok` items of the inner stream).
    pub chunks: u64,
    /// Bytes in those items.
    pub bytes: u64,
    /// Progress events seen: with SSE rules, the dispatched events that are neither
    /// keep-alives nor preamble ([`SseScanner::progress`](crate::sse::SseScanner::progress));
    /// without, none are seen (0: [`chunks`](Self::chunks) counts the items). It stands in for the output tokens when the stream
    /// reported no usage (the client left before the end, say).
    pub progress: u64,
    /// The tokens the stream reported, whatever the verdict (default: none).
    pub usage: Usage,
}

impl Outcome {
    /// An outcome with the given cause and counts, no progress and no usage.
    pub const fn new(verdict: Verdict, cause: Cause, chunks: u64, bytes: u64) -> Self {
        Self {
            verdict,
            cause,
            chunks,
            bytes,
            progress: 0,
            usage: Usage {
                input_tokens: None,
                output_tokens: None,
            },
        }
    }

    /// The same outcome with `progress` progress events.
    ///
    /// ```
    /// use sluice::{Cause, Outcome, Usage, Verdict};
    ///
    /// let outcome = Outcome::new(Verdict::Abandoned, Cause::ClientLeft, 7, 900)
    ///     .with_progress(5)
    ///     .with_usage(Usage::new(Some(12), None));
    /// assert_eq!((outcome.progress, outcome.usage.input_tokens), (5, Some(12)));
    /// ```
    #[must_use]
    pub const fn with_progress(mut self, progress: u64) -> Self {
        self.progress = progress;
        self
    }

    /// The same outcome with `usage`.
    #[must_use]
    pub const fn with_usage(mut self, usage: Usage) -> Self {
        self.usage = usage;
        self
    }

    /// The output tokens: as reported, or else the progress events (which stand in
    /// for them when the stream reported none).
    ///
    /// ```
    /// use sluice::{Cause, Outcome, Usage, Verdict};
    ///
    /// let cut = Outcome::new(Verdict::Abandoned, Cause::ClientLeft, 9, 900).with_progress(8);
    /// assert_eq!(cut.output_tokens_or_progress(), 8);
    /// let done = cut.with_usage(Usage::new(Some(3), Some(11)));
    /// assert_eq!(done.output_tokens_or_progress(), 11);
    /// ```
    pub const fn output_tokens_or_progress(&self) -> u64 {
        match self.usage.output_tokens {
            Some(n) => n,
            None => self.progress,
        }
    }
}

/// A verdict handed in whole, with no stream behind it: cause [`Cause::Marked`], no
/// counts.
impl From<Verdict> for Outcome {
    fn from(verdict: Verdict) -> Self {
        Self::new(verdict, Cause::Marked, 0, 0)
    }
}

/// Takes the one [`Outcome`] of a stream.
///
/// `record` consumes the recorder, so "at most once" holds by type; the
/// [`TrackedStream`](crate::TrackedStream) makes it "exactly once". Any
/// `FnOnce(Outcome)` is a recorder.
pub trait Recorder {
    /// Receives the outcome. Called once, possibly from `Drop` while unwinding: an
    /// implementation must not panic.
    fn record(self, outcome: Outcome);
}

impl<F: FnOnce(Outcome)> Recorder for F {
    fn record(self, outcome: Outcome) {
        self(outcome)
    }
}
