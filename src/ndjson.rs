//! In-band completion for newline-delimited JSON: Ollama's native API.
//!
//! Ollama's `/api/chat` and `/api/generate` stream `application/x-ndjson`, not
//! Server-Sent Events: one JSON object per line. The last line says
//! `"done": true` (with the token counts); a failure mid-stream is a bare
//! `{"error": "..."}` line, on a response whose status was 200 long before. The
//! [`NdjsonScanner`] reads the raw bytes in whatever chunks the network hands over and
//! reports those [`Signal`]s line by line:
//!
//! * a line ends in LF (a CR before it is whitespace, so CRLF works too); a line of
//!   nothing but whitespace is ignored;
//! * a line that is a JSON object with a **top-level** `done` member whose value is
//!   `true` is done; one with a top-level `error` member that is not `null` failed
//!   (the stronger, if a line says both). Members nested deeper, and text inside
//!   strings, never count; a key spelled with escapes is not recognised. The line
//!   must be one object, whitespace around it: the same structural walk as the SSE
//!   scanner's error objects, never a parser;
//! * a line is read when its LF comes: a last line cut before its LF says nothing;
//! * every line with content is **progress** ([`NdjsonScanner::progress`]): Ollama
//!   sends no keep-alives and no preamble;
//! * [`NdjsonRules::ollama`] reads the **token usage** ([`NdjsonScanner::usage`],
//!   and so [`Outcome::usage`](crate::Outcome::usage)) that Ollama reports on its
//!   done line: the top-level `prompt_eval_count` (input) and `eval_count`
//!   (output), of any line that is one complete JSON object, the last value
//!   reported winning, whatever the verdict. It is the SSE scanner's walk (see
//!   [`sse`](crate::sse#usage) for what is a count: an integer from 0 to
//!   `u64::MAX`, anything else leaves the count as it was);
//! * [`NdjsonRules::ollama`] **requires the done line**: a stream that ends before it
//!   was cut short (a [`Failure`](crate::Verdict::Failure) with cause
//!   [`Truncated`](crate::Cause::Truncated) when tracked).
//!
//! The scanner never buffers a line: its memory is fixed when it is made, however
//! long a line grows, and its time is linear in the bytes (line ends and strings are
//! found with `memchr`). For every split of an input into chunks it reports the same
//! signals and the same progress as for the whole input at once.
//!
//! ```
//! use sluice::ndjson::{NdjsonRules, NdjsonScanner};
//! use sluice::sse::Signal;
//!
//! let mut scanner = NdjsonScanner::new(NdjsonRules::ollama());
//! assert_eq!(scanner.feed(b"{\"message\":{\"content\":\"\\\"done\\\":true\"},\"done\":false}\n"), None);
//! assert_eq!(scanner.feed(b"{\"done\":tr"), None);
//! assert_eq!(scanner.feed(b"ue,\"eval_count\":12}\n"), Some(Signal::Done));
//! assert_eq!(scanner.progress(), 2);
//! assert_eq!(scanner.usage(), sluice::Usage::new(None, Some(12)));
//! assert_eq!(scanner.feed(b"{\"error\":\"model runner crashed\"}\n"), Some(Signal::Failed));
//! ```

use core::fmt;

use crate::sse::member::{MemberWalk, Path, Test};
use crate::sse::usage::{OLLAMA, ObjectUsage, UsageRules};
use crate::sse::{Dialect, FailureEvent, Signal};
use crate::{Cause, Usage};

/// Which lines are done or failed, and whether the stream must end with a done line.
/// Costs nothing to make or copy.
///
/// ```
/// use sluice::ndjson::NdjsonRules;
///
/// assert!(NdjsonRules::ollama().requires_done());
/// assert!(!NdjsonRules::ollama().require_done(false).requires_done());
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct NdjsonRules {
    /// A line with this member is done.
    done: Option<Path>,
    /// A line with this member failed.
    failed: Option<Path>,
    /// Where a line reports token usage.
    usage: Option<&'static UsageRules>,
    require_done: bool,
    /// The dialect of the failure line.
    dialect: Option<Dialect>,
}

impl NdjsonRules {
    /// No rules: the scanner reports nothing, every line with content is progress,
    /// and no end is required.
    pub const fn empty() -> Self {
        Self {
            done: None,
            failed: None,
            usage: None,
            require_done: false,
            dialect: None,
        }
    }

    /// Ollama's `/api/chat` and `/api/generate`: a line with a top-level `"done":
    /// true` is done, a line with a top-level `error` that is not `null` failed.
    /// Requires the done line. Reads the usage of the done line
    /// (`prompt_eval_count`, `eval_count`). Its failure line is Ollama's own error
    /// line ([`Dialect::Ollama`]).
    pub const fn ollama() -> Self {
        Self {
            done: Some(Path {
                keys: &["done"],
                test: Test::True,
            }),
            failed: Some(Path {
                keys: &["error"],
                test: Test::NotNull,
            }),
            usage: Some(&OLLAMA),
            require_done: true,
            dialect: Some(Dialect::Ollama),
        }
    }

    /// Whether a stream that ends before its done line was cut short. On for
    /// [`ollama`](Self::ollama), off for [`empty`](Self::empty).
    pub const fn requires_done(&self) -> bool {
        self.require_done
    }

    /// Sets whether the stream must end with a done line.
    #[must_use]
    pub const fn require_done(mut self, required: bool) -> Self {
        self.require_done = required;
        self
    }

    /// The dialect whose failure line [`failure_event`](Self::failure_event) writes:
    /// [`Dialect::Ollama`] for [`ollama`](Self::ollama), none for
    /// [`empty`](Self::empty) unless set with [`with_dialect`](Self::with_dialect).
    pub const fn dialect(&self) -> Option<Dialect> {
        self.dialect
    }

    /// Sets the dialect of the failure line (`None`: write none).
    #[must_use]
    pub const fn with_dialect(mut self, dialect: Option<Dialect>) -> Self {
        self.dialect = dialect;
        self
    }

    /// The line that tells a client, in its API's own words, that the stream failed
    /// for `cause` after its response head was sent (a timer fired, the upstream was
    /// cut short or broke): for Ollama a bare error line, which Ollama's client
    /// libraries raise, never a clean end. `None` without a
    /// [dialect](Self::dialect). Written with [`Display`](core::fmt::Display),
    /// without allocating; [`NdjsonScanner::failure_event`] first ends a line the
    /// worker was cut off inside.
    ///
    /// ```
    /// use sluice::Cause;
    /// use sluice::ndjson::NdjsonRules;
    ///
    /// let line = NdjsonRules::ollama().failure_event(Cause::IdleTimeout).unwrap();
    /// assert_eq!(line.to_string(), "{\"error\":\"upstream failed: idle_timeout\"}\n");
    /// assert_eq!(
    ///     line.named("gpu-7").to_string(),
    ///     "{\"error\":\"upstream gpu-7 failed: idle_timeout\"}\n",
    /// );
    /// assert!(NdjsonRules::empty().failure_event(Cause::Truncated).is_none());
    /// ```
    pub const fn failure_event(&self, cause: Cause) -> Option<FailureEvent> {
        match self.dialect {
            Some(dialect) => FailureEvent::new(dialect, cause, ""),
            None => None,
        }
    }
}

impl Default for NdjsonRules {
    fn default() -> Self {
        Self::ollama()
    }
}

impl fmt::Debug for NdjsonRules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = |path: &Option<Path>| path.map(|p| p.keys);
        f.debug_struct("NdjsonRules")
            .field("done", &keys(&self.done))
            .field("failed", &keys(&self.failed))
            .field("usage", &self.usage.is_some())
            .field("require_done", &self.require_done)
            .field("dialect", &self.dialect)
            .finish()
    }
}

/// Reads a newline-delimited JSON stream's bytes in any chunks and reports
/// [`Signal`]s; see the [module docs](self).
///
/// Feed every chunk, in order, to [`feed`](Self::feed); it returns the strongest
/// signal (`Failed` over `Done`) among the lines that chunk ended.
/// [`progress`](Self::progress) counts the lines with content.
///
/// ```
/// use sluice::ndjson::{NdjsonRules, NdjsonScanner};
/// use sluice::sse::Signal;
///
/// let mut scanner = NdjsonScanner::new(NdjsonRules::ollama());
/// assert_eq!(scanner.feed(b"{\"response\":\"Hi\",\"done\":false}\r\n\n"), None);
/// assert_eq!(scanner.progress(), 1); // the blank line is not a line
/// assert_eq!(scanner.feed(b"{\"done\":true}"), None); // not ended yet
/// assert_eq!(scanner.feed(b"\n"), Some(Signal::Done));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct NdjsonScanner {
    rules: NdjsonRules,
    /// The current line has a byte that is not whitespace.
    content: bool,
    done: MemberWalk,
    failed: MemberWalk,
    /// The usage walk of the current line.
    line_usage: Option<ObjectUsage>,
    /// Lines with content so far.
    progress: u64,
    /// The token usage reported so far.
    usage: Usage,
}

impl NdjsonScanner {
    /// A scanner at the start of a stream.
    pub const fn new(rules: NdjsonRules) -> Self {
        Self {
            rules,
            content: false,
            done: MemberWalk::new(),
            failed: MemberWalk::new(),
            line_usage: Self::usage_walk(&rules),
            progress: 0,
            usage: Usage {
                input_tokens: None,
                output_tokens: None,
            },
        }
    }

    /// A usage walk at the start of a line, if the rules read usage.
    const fn usage_walk(rules: &NdjsonRules) -> Option<ObjectUsage> {
        match rules.usage {
            Some(usage) => Some(ObjectUsage::new(usage)),
            None => None,
        }
    }

    /// The rules this scanner applies.
    pub const fn rules(&self) -> &NdjsonRules {
        &self.rules
    }

    /// How many lines with content have ended so far.
    pub const fn progress(&self) -> u64 {
        self.progress
    }

    /// The rules' failure line for `cause` ([`NdjsonRules::failure_event`]), to be
    /// written after the bytes fed so far: if the worker was cut off inside a line
    /// with content, it first ends that line, so the failure line is a line of its
    /// own.
    ///
    /// ```
    /// use sluice::Cause;
    /// use sluice::ndjson::{NdjsonRules, NdjsonScanner};
    ///
    /// let mut scanner = NdjsonScanner::new(NdjsonRules::ollama());
    /// scanner.feed(b"{\"response\":\"Hi\",\"do");
    /// let line = scanner.failure_event(Cause::Truncated).unwrap();
    /// assert_eq!(line.to_string(), "\n{\"error\":\"upstream failed: truncated\"}\n");
    /// scanner.feed(b"ne\":false}\n");
    /// let line = scanner.failure_event(Cause::Truncated).unwrap();
    /// assert_eq!(line.to_string(), "{\"error\":\"upstream failed: truncated\"}\n");
    /// ```
    pub fn failure_event(&self, cause: Cause) -> Option<FailureEvent> {
        let dialect = self.rules.dialect?;
        // Whitespace alone before the line is whitespace around its object.
        let close = if self.content { "\n" } else { "" };
        FailureEvent::new(dialect, cause, close)
    }

    /// The token usage the stream reported so far, as the rules read it: each count
    /// the last value reported, `None` until one is (see the [module docs](self)).
    /// A line is read when its LF comes.
    ///
    /// ```
    /// use sluice::Usage;
    /// use sluice::ndjson::{NdjsonRules, NdjsonScanner};
    ///
    /// let mut scanner = NdjsonScanner::new(NdjsonRules::ollama());
    /// scanner.feed(b"{\"done\":true,\"prompt_eval_count\":26,\"eval_count\":5}");
    /// assert_eq!(scanner.usage(), Usage::default()); // the line has not ended
    /// scanner.feed(b"\n");
    /// assert_eq!(scanner.usage(), Usage::new(Some(26), Some(5)));
    /// ```
    pub const fn usage(&self) -> Usage {
        self.usage
    }

    /// Scans the next chunk of the stream. Returns the strongest signal (`Failed` over
    /// `Done`) of the lines this chunk ended, or `None`.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Option<Signal> {
        let mut signal = None;
        loop {
            let end = memchr::memchr(b'\n', bytes);
            let line = &bytes[..end.unwrap_or(bytes.len())];
            self.scan(line);
            match end {
                Some(i) => {
                    signal = signal.max(self.end_line());
                    bytes = &bytes[i + 1..];
                }
                None => return signal,
            }
        }
    }

    /// More of the current line (no LF in it).
    fn scan(&mut self, line: &[u8]) {
        if !self.content {
            self.content = line.iter().any(|b| !matches!(b, b' ' | b'\t' | b'\r'));
        }
        if let Some(path) = &self.rules.done {
            if !self.done.is_dead() {
                self.done.feed(path, line);
            }
        }
        if let Some(path) = &self.rules.failed {
            if !self.failed.is_dead() {
                self.failed.feed(path, line);
            }
        }
        if let Some(walk) = &mut self.line_usage {
            walk.feed(line);
        }
    }

    fn end_line(&mut self) -> Option<Signal> {
        let mut signal = None;
        if self.content {
            self.progress += 1;
            if self.rules.done.is_some() && self.done.is_match() {
                signal = Some(Signal::Done);
            }
            if self.rules.failed.is_some() && self.failed.is_match() {
                signal = Some(Signal::Failed);
            }
            if let Some(counts) = self.line_usage.and_then(|walk| walk.usage()) {
                self.usage = self.usage.updated(counts);
            }
        }
        self.content = false;
        self.done = MemberWalk::new();
        self.failed = MemberWalk::new();
        self.line_usage = Self::usage_walk(&self.rules);
        signal
    }
}

impl fmt::Debug for NdjsonScanner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NdjsonScanner")
            .field("rules", &self.rules)
            .field("in_line", &self.content)
            .field("progress", &self.progress)
            .field("usage", &self.usage)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(data: &[u8]) -> (Option<Signal>, u64) {
        let (signal, progress, _) = with_usage(data);
        (signal, progress)
    }

    fn with_usage(data: &[u8]) -> (Option<Signal>, u64, Usage) {
        let mut scanner = NdjsonScanner::new(NdjsonRules::ollama());
        let signal = scanner.feed(data);
        let answer = (signal, scanner.progress(), scanner.usage());
        // Every 2-way split and byte by byte agree.
        for at in 0..=data.len() {
            let mut split = NdjsonScanner::new(NdjsonRules::ollama());
            let s = split.feed(&data[..at]).max(split.feed(&data[at..]));
            assert_eq!((s, split.progress(), split.usage()), answer, "at {at}");
        }
        let mut bytewise = NdjsonScanner::new(NdjsonRules::ollama());
        let s = data
            .iter()
            .map(|b| bytewise.feed(core::slice::from_ref(b)))
            .max()
            .flatten();
        assert_eq!((s, bytewise.progress(), bytewise.usage()), answer);
        answer
    }

    #[test]
    fn lines() {
        assert_eq!(whole(b"{\"done\":true}\n"), (Some(Signal::Done), 1));
        assert_eq!(whole(b"{\"done\":true}\r\n"), (Some(Signal::Done), 1));
        assert_eq!(whole(b"  {\"done\" : true }  \n"), (Some(Signal::Done), 1));
        assert_eq!(whole(b"{\"done\":true}"), (None, 0));
        assert_eq!(whole(b"{\"done\":false}\n\n \r\n"), (None, 1));
        assert_eq!(whole(b"{\"error\":\"x\"}\n"), (Some(Signal::Failed), 1));
        assert_eq!(whole(b"{\"error\":null}\n"), (None, 1));
        assert_eq!(
            whole(b"{\"error\":\"x\",\"done\":true}\n"),
            (Some(Signal::Failed), 1)
        );
        assert_eq!(whole(b"{\"done\":true}x\n"), (None, 1));
        assert_eq!(whole(b"{\"message\":{\"done\":true}}\n"), (None, 1));
        assert_eq!(whole(b"{\"a\":\"\\\"done\\\":true\"}\n"), (None, 1));
        assert_eq!(whole(b"{\"done\":\ntrue}\n"), (None, 2));
    }

    #[test]
    fn usage() {
        let usage = |data: &[u8]| with_usage(data).2;
        assert_eq!(
            usage(b"{\"done\":true,\"prompt_eval_count\":26,\"eval_count\":5}\r\n"),
            Usage::new(Some(26), Some(5))
        );
        // The last value reported wins; a line is read when it ends.
        assert_eq!(
            usage(b"{\"eval_count\":1}\n{\"eval_count\":2}\n{\"eval_count\":3}"),
            Usage::new(None, Some(2))
        );
        // Nested, inside strings, not a count, not one object: not read.
        for line in [
            &b"{\"message\":{\"eval_count\":1}}\n"[..],
            b"{\"a\":\"\\\"eval_count\\\":1\"}\n",
            b"{\"eval_count\":1.5,\"prompt_eval_count\":-1}\n",
            b"{\"eval_count\":1}x\n",
            b"{\"eval_count\":1\n",
            b"[{\"eval_count\":1}]\n",
        ] {
            assert_eq!(usage(line), Usage::default(), "{line:?}");
        }
        // Empty rules read none.
        let mut scanner = NdjsonScanner::new(NdjsonRules::empty());
        scanner.feed(b"{\"eval_count\":1}\n");
        assert_eq!(scanner.usage(), Usage::default());
    }
}
