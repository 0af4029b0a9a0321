//! The one reference model of SPEC section 1 for the tests and fuzz targets: the
//! Terminal table written out from the spec (never from `Tracker`), with the cause of
//! each state, the counts, and the end-marker rule of section 2. The core's tests,
//! the adapters' tests and the fuzz crate (`fuzz/`, which depends on this crate by
//! path) all use this one copy.

use sluice::{Cause, Outcome, Terminal, Verdict};

/// An event as the model sees it; failures and completions carry their cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// A data item of this many bytes.
    Chunk(usize),
    /// An error item.
    Error,
    /// The inner stream ended.
    End,
    /// An in-band done, or `mark_completed` (cause `Marked`).
    Done(Cause),
    /// An in-band failure, a caller's mark, a timeout.
    Failed(Cause),
    /// A panic out of the inner poll.
    Panic,
}

/// A stream as the spec describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Model {
    /// Where the table has the stream now.
    pub state: Terminal,
    /// The cause of the last change of state (`ClientLeft` while still active).
    pub cause: Cause,
    /// Data items seen.
    pub chunks: u64,
    /// Bytes in those items.
    pub bytes: u64,
    /// The rules require a done event before the end.
    pub require_done: bool,
}

/// `TABLE[state][column]`, copied row by row from SPEC section 1 (columns: Chunk,
/// Error, End, Done, Failed).
const TABLE: [[Terminal; 5]; 3] = {
    use Terminal::{Active as A, Completed as C, Errored as E};
    [
        [A, E, C, C, E], // Active
        [C, E, C, C, E], // Completed
        [E, E, E, E, E], // Errored
    ]
};

impl Model {
    /// A stream in flight; `require_done` as the SSE rules say (false without rules).
    pub fn new(require_done: bool) -> Self {
        Self {
            state: Terminal::Active,
            cause: Cause::ClientLeft,
            chunks: 0,
            bytes: 0,
            require_done,
        }
    }

    /// Feeds one input.
    pub fn feed(&mut self, input: Input) {
        let (column, cause) = match input {
            Input::Chunk(len) => {
                self.chunks += 1;
                self.bytes += len as u64;
                (0, self.cause)
            }
            Input::Error => (1, Cause::ErrorItem),
            Input::Panic => (1, Cause::Panic),
            // Section 2: an end before the required done event is a failure.
            Input::End if self.require_done && self.state == Terminal::Active => {
                (4, Cause::Truncated)
            }
            Input::End => (2, Cause::End),
            Input::Done(cause) => (3, cause),
            Input::Failed(cause) => (4, cause),
        };
        let row = match self.state {
            Terminal::Active => 0,
            Terminal::Completed => 1,
            Terminal::Errored => 2,
        };
        let next = TABLE[row][column];
        if next != self.state {
            self.cause = cause;
        }
        self.state = next;
    }

    /// The verdict if the stream were dropped now.
    pub fn verdict(&self) -> Verdict {
        match self.state {
            Terminal::Active => Verdict::Abandoned,
            Terminal::Completed => Verdict::Success,
            Terminal::Errored => Verdict::Failure,
        }
    }

    /// The outcome if the stream were dropped now.
    pub fn outcome(&self) -> Outcome {
        Outcome::new(self.verdict(), self.cause, self.chunks, self.bytes)
    }
}
