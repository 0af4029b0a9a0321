//! The in-band scanner of a tracked stream: one of the framings, behind one
//! [`Signal`] and one progress count.

use crate::eventstream::EventStreamScanner;
use crate::ndjson::NdjsonScanner;
use crate::sse::{FailureEvent, Signal, SseScanner};
use crate::{Cause, Usage};

/// The scanner a [`Ledger`](crate::wrap::Ledger) feeds its chunks to.
#[derive(Debug, Clone)]
pub(crate) enum Scanner {
    Sse(SseScanner),
    Ndjson(NdjsonScanner),
    EventStream(EventStreamScanner),
}

impl Scanner {
    /// The strongest signal in `bytes`.
    #[inline]
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Option<Signal> {
        match self {
            Self::Sse(s) => s.feed(bytes),
            Self::Ndjson(s) => s.feed(bytes),
            Self::EventStream(s) => s.feed(bytes),
        }
    }

    /// Progress events (SSE events, NDJSON lines, frames) so far.
    pub(crate) fn progress(&self) -> u64 {
        match self {
            Self::Sse(s) => s.progress(),
            Self::Ndjson(s) => s.progress(),
            Self::EventStream(s) => s.progress(),
        }
    }

    /// The token usage the stream reported so far, as the scanner's rules read it.
    pub(crate) fn usage(&self) -> Usage {
        match self {
            Self::Sse(s) => s.usage(),
            Self::Ndjson(s) => s.usage(),
            Self::EventStream(s) => s.usage(),
        }
    }

    /// Whether an end of the stream now is a cut: while `active` (no done or failed
    /// signal yet) if the rules require a done signal; whatever came before if the
    /// bytes end inside an event-stream frame.
    pub(crate) fn cut_short(&self, active: bool) -> bool {
        active && self.requires_done()
            || matches!(self, Self::EventStream(s) if s.is_inside_frame())
    }

    /// Whether the rules require an in-band end (a done event or line, `messageStop`).
    pub(crate) fn requires_done(&self) -> bool {
        match self {
            Self::Sse(s) => s.rules().requires_done(),
            Self::Ndjson(s) => s.rules().requires_done(),
            Self::EventStream(s) => s.rules().requires_done(),
        }
    }

    /// The failure event of the rules' dialect for `cause`, written after the bytes
    /// fed so far (none for the binary event stream).
    pub(crate) fn failure_event(&self, cause: Cause) -> Option<FailureEvent> {
        match self {
            Self::Sse(s) => s.failure_event(cause),
            Self::Ndjson(s) => s.failure_event(cause),
            Self::EventStream(_) => None,
        }
    }

    /// The SSE scanner, if this is one.
    pub(crate) fn sse(&self) -> Option<&SseScanner> {
        match self {
            Self::Sse(s) => Some(s),
            _ => None,
        }
    }
}
