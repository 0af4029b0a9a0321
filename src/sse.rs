//! In-band completion: a split-safe, constant-memory Server-Sent Events classifier.
//!
//! An upstream that streams SSE says in-band when it is done (`data: [DONE]` for
//! OpenAI Chat Completions, `event: message_stop` for Anthropic Messages) or failed
//! (`event: error`, or an error object in the data: `data: {"error": {...}}`). The
//! [`SseScanner`] reads the raw bytes in whatever chunks the network hands over and
//! reports those [`Signal`]s as they are dispatched, following the WHATWG event-stream
//! rules that matter:
//!
//! * one optional UTF-8 byte order mark at the very start is skipped;
//! * lines end in CRLF, LF or CR, and a CRLF split across two chunks is one line end;
//! * a line starting with `:` is a comment; `field:value` loses one leading space of
//!   the value; a line with no colon is a field with an empty value;
//! * `data` lines join with LF; a blank line dispatches the event; an event without
//!   `data` is not dispatched; an event without an `event` name is a `message`.
//!
//! [`SseRules`] match a dispatched event **as a whole**: its exact data, or its exact
//! event name, never a substring, so `data: {"text":"data: [DONE]"}` is not done.
//! Matching is on the raw bytes (invalid UTF-8 matches no rule). The
//! [`openai_chat`](SseRules::openai_chat) preset also finds **error objects**: data that
//! is a JSON object with a top-level `error` member (not `null`), wherever it stands
//! among the members, or with `"object": "error"`. That is a structural walk of the
//! data (strings, escapes, depth), not a parser: members nested deeper and text inside
//! strings never count, and a key or value spelled with escapes is not recognised.
//!
//! **Keep-alives are not progress.** Comments never are, nor the events a rule set
//! names as keep-alives (Anthropic's `ping`), nor the preamble (below); every other
//! dispatched event is, and [`SseScanner::progress`] counts them, so a driver can
//! time a worker by its tokens rather than its bytes. The presets also **require
//! their end marker**: a stream that ends before its done event was cut short
//! ([`SseRules::requires_done`]).
//!
//! # Preamble and first progress
//!
//! The events an API sends before any output say only that a response has begun:
//! they are **preamble**, not progress, until the first progress event (the first
//! that carries output, the end marker, or a failure). So a worker that sends its
//! preamble and then hangs is timed by its first-token timer, not its idle timer, and
//! the first progress is where a response is committed to (an
//! [`attempt`](crate::attempt) commits there, and may be retried before). The
//! presets name them:
//!
//! * [`openai_chat`](SseRules::openai_chat): the **role-only chunk**, data that is a
//!   JSON object whose `choices[].delta` objects carry a `role` and nothing but empty
//!   values (`null`, `""`, `[]`, `{}`: no text, reasoning, tool call or refusal, nor
//!   any member an engine may add), with every `choices[].finish_reason` `null`
//!   (vLLM, SGLang, llama.cpp and OpenAI send it first; TGI and Ollama put the role
//!   on every chunk, next to the text, and those chunks are progress). Members
//!   outside `choices` (`id`, `usage`, ...) are not read. It is a walk like the
//!   error-object one: a key spelled with escapes, or data that is not one object,
//!   is not a role-only chunk, so in doubt an event is progress;
//! * [`anthropic`](SseRules::anthropic): events `message_start` and
//!   `content_block_start` (and `ping`, a keep-alive anyway);
//! * [`openai_responses`](SseRules::openai_responses): events `response.created` and
//!   `response.in_progress`.
//!
//! Custom rules add events with [`SseRules::preamble_on_event`]. Preamble is not the
//! same as a keep-alive: after the first progress event, preamble events are
//! progress. Anthropic sends a `content_block_start` for each content block, also
//! after text; one mid-stream is the worker moving on to its next block, and it
//! restarts the idle timer as any output does. A keep-alive never does, and the
//! role-only chunk walk only runs until the first progress event, so its per-byte
//! cost is paid on a stream's first events only.
//!
//! # Usage
//!
//! The presets read the token counts their API reports ([`SseScanner::usage`],
//! and so [`Outcome::usage`](crate::Outcome::usage)), whatever the verdict, each the
//! last value reported:
//!
//! * [`openai_chat`](SseRules::openai_chat): `usage.prompt_tokens` (input) and
//!   `usage.completion_tokens` (output) of any chunk (the last one, with
//!   `stream_options.include_usage`; vLLM, SGLang and llama.cpp send it too);
//! * [`anthropic`](SseRules::anthropic): `message.usage.input_tokens`
//!   (`message_start`), and `usage.output_tokens` and `usage.input_tokens`
//!   (`message_delta`, cumulative);
//! * [`openai_responses`](SseRules::openai_responses): `response.usage.input_tokens`
//!   and `output_tokens` of its done and failed events (`response.completed`,
//!   `response.incomplete`, `response.failed`) only;
//! * [`gemini`](SseRules::gemini): `usageMetadata.promptTokenCount` (input), and
//!   `usageMetadata.candidatesTokenCount` **plus** `thoughtsTokenCount` (output) of
//!   any chunk (each carries the counts so far). A thinking model's thoughts are
//!   billed as output, as OpenAI's `completion_tokens` and Anthropic's
//!   `output_tokens` count them: either part alone if the other is not reported, and
//!   no count if the sum exceeds `u64::MAX`;
//! * [`cohere`](SseRules::cohere): `delta.usage.tokens.input_tokens` and
//!   `output_tokens` (`message-end`): the tokens the model read and wrote, not
//!   `billed_units`, which leave out what Cohere does not bill (its own prompt
//!   template: billed input is often a fraction of the tokens read).
//!
//! Ollama's NDJSON ([`ndjson`](crate::ndjson)) and Bedrock's event stream
//! ([`eventstream`](crate::eventstream)) are read by the same walk, on a line and on
//! the `metadata` event's payload.
//!
//! The keys are members of the top-level object, one inside the other; members
//! nested elsewhere and text inside strings never count, and an event's counts are
//! kept only if its data is one complete JSON object. A count is a JSON integer
//! from 0 to `u64::MAX`, as `serde_json::Value::as_u64` reads it: anything else
//! (`null`, a fraction, an exponent, a sign, a string, **more digits than fit**) is
//! no count and leaves the count as it was, so a hostile number never saturates,
//! wraps or panics: it reads as not reported. It is the error-object walk's
//! constant-memory pass that finds them, and [`SseRules::with_usage`] sets the
//! dialect read (none for custom rules unless set).
//!
//! That pass skips, without walking it, the data of an event that is one line held
//! whole in one chunk with its blank line, when the line holds none of the quoted
//! names the walk stops at (`"error"`, the usage roots): the walk could find nothing
//! there. That is the common case on the wire, where engines write one event per
//! chunk, and a chunk that is exactly one such event (a short `data` line and its
//! blank line, at an event boundary, once the role-only chunk walk is over) is
//! dispatched at once, without the line loop: one pass of sixteen-byte blocks the
//! compiler vectorizes finds that its value holds no line end and no quote that may
//! open one of the names (by their length and last byte; a candidate is checked
//! exactly). Longer lines are searched with `memchr`'s SIMD substring search (with
//! the `std` feature its searchers are built once per process and name and shared by
//! every scanner, in static slots, so a scanner neither builds nor holds one). The
//! answer is the same however the input is split.
//!
//! The scanner never buffers event data: its memory is fixed when it is made, however
//! long a line or an event grows, and its time is linear in the bytes (line ends and
//! values are skipped with `memchr`). For every split of an input into chunks it
//! reports the same signals as for the whole input at once.
//!
//! ```
//! use sluice::sse::{Signal, SseRules, SseScanner};
//!
//! let mut scanner = SseScanner::new(SseRules::openai_chat());
//! assert_eq!(scanner.feed(b"data: {\"text\":\"data: [DONE]\"}\n\ndata: [DO"), None);
//! assert_eq!(scanner.feed(b"NE]\r"), None); // not dispatched before the blank line
//! assert_eq!(scanner.feed(b"\n\r\n"), Some(Signal::Done));
//! ```

#[cfg(feature = "alloc")]
use alloc::{boxed::Box, sync::Arc, vec::Vec};
use core::fmt;

use self::json::ErrorObject;
use self::member::{MemberWalk, Path, Test};
use self::role::RoleChunk;
use self::usage::UsageRules;
use crate::{Cause, Usage};

mod json;
pub(crate) mod member;
mod quoted;
mod role;
pub(crate) mod usage;

/// What a dispatched event says about the stream. `Failed` is stronger than `Done`
/// (`Ord` follows: `Done < Failed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Signal {
    /// The stream is complete.
    Done,
    /// The stream failed.
    Failed,
}

/// Which dispatched events are done, failed, keep-alives or preamble, and whether the
/// stream must end with a done event.
///
/// Presets cost nothing to make or clone; custom rules (feature `alloc`) are built
/// once and shared by clones without copying. Where a data value or an event name is
/// given twice, the stronger wins (`Failed` over `Done` over preamble over a
/// keep-alive).
///
/// ```
/// use sluice::sse::{Signal, SseRules, SseScanner};
///
/// let rules = SseRules::openai_chat().failed_on_event("error").done_on_data("[END]");
/// assert!(rules.requires_done()); // a preset, extended: still requires its end
/// let mut scanner = SseScanner::new(rules);
/// assert_eq!(scanner.feed(b"event: error\ndata: {}\n\n"), Some(Signal::Failed));
/// assert_eq!(scanner.feed(b"data: [END]\n\n"), Some(Signal::Done));
/// assert_eq!(scanner.feed(b"data: {\"error\": {\"code\": 500}}\n\n"), Some(Signal::Failed));
/// ```
#[derive(Clone)]
pub struct SseRules {
    data: Table,
    event: Table,
    /// Data that is a JSON object with a top-level error member failed.
    error_objects: bool,
    /// An OpenAI role-only chunk is preamble.
    role_chunks: bool,
    /// The stream must end with a done event.
    require_done: bool,
    /// The API whose failure event a gateway writes to the client.
    dialect: Option<Dialect>,
    /// A member of the data's JSON that gives the event a meaning.
    member: Option<MemberRule>,
    /// The API whose token usage is read.
    usage: Option<Dialect>,
}

/// A rule on a member of an event's JSON data (Gemini's `candidates[].finishReason`,
/// Cohere's `delta.finish_reason`): data that is an object with that member, passing
/// its test, means `meaning`; if `when` is set, only for an event that the other
/// rules give that meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MemberRule {
    path: Path,
    meaning: Meaning,
    when: Option<Meaning>,
}

impl SseRules {
    /// No rules: the scanner reports nothing, every event is progress, and no end
    /// marker is required. The start of a custom rule set.
    pub const fn empty() -> Self {
        Self {
            data: Table::Static(&[]),
            event: Table::Static(&[]),
            error_objects: false,
            role_chunks: false,
            require_done: false,
            dialect: None,
            usage: None,
            member: None,
        }
    }

    /// OpenAI Chat Completions, and every OpenAI-compatible engine (vLLM, SGLang,
    /// llama.cpp server, TGI, Ollama, OpenRouter): data exactly `[DONE]` is done; data
    /// that is an error object (a top-level `error` member that is not `null`, or
    /// `"object": "error"`) failed; the role-only chunk that opens a stream is
    /// preamble ([`preamble_on_role_chunk`](Self::preamble_on_role_chunk)). Requires
    /// `[DONE]`. The default.
    pub const fn openai_chat() -> Self {
        Self {
            data: Table::Static(&[("[DONE]", Meaning::Done)]),
            event: Table::Static(&[]),
            error_objects: true,
            role_chunks: true,
            require_done: true,
            dialect: Some(Dialect::OpenAiChat),
            usage: Some(Dialect::OpenAiChat),
            member: None,
        }
    }

    /// OpenAI Responses: events `response.completed` and `response.incomplete` are
    /// done; `response.failed` and `error` failed; `response.created` and
    /// `response.in_progress` are preamble. Requires a done event.
    pub const fn openai_responses() -> Self {
        Self {
            data: Table::Static(&[]),
            // Sorted by bytes: the matcher relies on it (a test checks every preset).
            event: Table::Static(&[
                ("error", Meaning::Failed),
                ("response.completed", Meaning::Done),
                ("response.created", Meaning::Preamble),
                ("response.failed", Meaning::Failed),
                ("response.in_progress", Meaning::Preamble),
                ("response.incomplete", Meaning::Done),
            ]),
            error_objects: false,
            role_chunks: false,
            require_done: true,
            dialect: Some(Dialect::OpenAiResponses),
            usage: Some(Dialect::OpenAiResponses),
            member: None,
        }
    }

    /// Anthropic Messages: event `message_stop` is done; event `error` failed; event
    /// `ping` is a keep-alive; `message_start` and `content_block_start` are preamble.
    /// Requires `message_stop`.
    pub const fn anthropic() -> Self {
        Self {
            data: Table::Static(&[]),
            event: Table::Static(&[
                ("content_block_start", Meaning::Preamble),
                ("error", Meaning::Failed),
                ("message_start", Meaning::Preamble),
                ("message_stop", Meaning::Done),
                ("ping", Meaning::KeepAlive),
            ]),
            error_objects: false,
            role_chunks: false,
            require_done: true,
            dialect: Some(Dialect::Anthropic),
            usage: Some(Dialect::Anthropic),
            member: None,
        }
    }

    /// Google Gemini `streamGenerateContent?alt=sse`, which has no `[DONE]`: data
    /// whose JSON has a `candidates[].finishReason` that is not `null` (the last
    /// chunk, `"STOP"`, `"MAX_TOKENS"`, `"SAFETY"`, ...) is done; data that is an
    /// error object (a top-level `error`, as Gemini sends on a 200) failed. Requires
    /// the finishing chunk: a stream cut before it is truncated. Every event with
    /// data is progress. Its failure event is Gemini's error object
    /// ([`Dialect::Gemini`]). Reads the usage of `usageMetadata`, thinking tokens
    /// counted as output (see the [module docs](crate::sse#usage)).
    ///
    /// ```
    /// use sluice::sse::{Signal, SseRules, SseScanner};
    ///
    /// let mut scanner = SseScanner::new(SseRules::gemini());
    /// let text = b"data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"Hi\"}]}}]}\r\n\r\n";
    /// assert_eq!(scanner.feed(text), None);
    /// let last = b"data: {\"candidates\": [{\"finishReason\": \"STOP\"}]}\r\n\r\n";
    /// assert_eq!(scanner.feed(last), Some(Signal::Done));
    /// let error = b"data: {\"error\": {\"code\": 500, \"status\": \"INTERNAL\"}}\r\n\r\n";
    /// assert_eq!(scanner.feed(error), Some(Signal::Failed));
    /// ```
    pub const fn gemini() -> Self {
        Self {
            data: Table::Static(&[]),
            event: Table::Static(&[]),
            error_objects: true,
            role_chunks: false,
            require_done: true,
            dialect: Some(Dialect::Gemini),
            usage: Some(Dialect::Gemini),
            member: Some(MemberRule {
                path: Path {
                    keys: &["candidates", "finishReason"],
                    test: Test::NotNull,
                },
                meaning: Meaning::Done,
                when: None,
            }),
        }
    }

    /// Cohere v2 chat: event `message-end` is done, unless its data's
    /// `delta.finish_reason` is `"ERROR"` (a failed generation): then it failed;
    /// event `error` failed; `message-start` and `content-start` are preamble.
    /// Requires `message-end`. No failure event of its own
    /// ([`dialect`](Self::dialect) is `None`). Reads the usage of `message-end`'s
    /// `delta.usage.tokens` ([`Dialect::Cohere`], see the
    /// [module docs](crate::sse#usage)).
    ///
    /// ```
    /// use sluice::sse::{Signal, SseRules, SseScanner};
    ///
    /// let mut scanner = SseScanner::new(SseRules::cohere());
    /// let end = b"event: message-end\ndata: {\"type\":\"message-end\",\"delta\":{\"finish_reason\":\"ERROR\"}}\n\n";
    /// assert_eq!(scanner.feed(end), Some(Signal::Failed));
    /// ```
    pub const fn cohere() -> Self {
        Self {
            data: Table::Static(&[]),
            event: Table::Static(&[
                ("content-start", Meaning::Preamble),
                ("error", Meaning::Failed),
                ("message-end", Meaning::Done),
                ("message-start", Meaning::Preamble),
            ]),
            error_objects: false,
            role_chunks: false,
            require_done: true,
            dialect: None,
            usage: Some(Dialect::Cohere),
            member: Some(MemberRule {
                path: Path {
                    keys: &["delta", "finish_reason"],
                    test: Test::Str("ERROR"),
                },
                meaning: Meaning::Failed,
                when: Some(Meaning::Done),
            }),
        }
    }

    /// Whether a stream that ends (EOF) before its done event was cut short: a
    /// [`Failure`](crate::Verdict::Failure) with cause
    /// [`Truncated`](crate::Cause::Truncated). On for the presets, off for
    /// [`empty`](Self::empty).
    pub const fn requires_done(&self) -> bool {
        self.require_done
    }

    /// Sets whether the stream must end with a done event; turn it off for an API
    /// without an end marker.
    #[must_use]
    pub const fn require_done(mut self, required: bool) -> Self {
        self.require_done = required;
        self
    }

    /// Sets whether data that is a JSON error object (a top-level `error` member that
    /// is not `null`, or `"object": "error"`) failed. On for
    /// [`openai_chat`](Self::openai_chat).
    #[must_use]
    pub const fn failed_on_error_object(mut self, on: bool) -> Self {
        self.error_objects = on;
        self
    }

    /// Sets whether data that is an OpenAI role-only chunk is preamble, not progress,
    /// before the first progress event: a JSON object whose `choices[].delta` objects
    /// carry a `role` and nothing else but empty values (`null`, `""`, `[]`, `{}`),
    /// with every `finish_reason` `null` (the rule in full is in the
    /// [module docs](crate::sse#preamble-and-first-progress)). On for
    /// [`openai_chat`](Self::openai_chat).
    ///
    /// ```
    /// use sluice::sse::{SseRules, SseScanner};
    ///
    /// let role = b"data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n";
    /// let mut scanner = SseScanner::new(SseRules::openai_chat());
    /// scanner.feed(role);
    /// assert_eq!(scanner.progress(), 0);
    /// let mut scanner = SseScanner::new(SseRules::openai_chat().preamble_on_role_chunk(false));
    /// scanner.feed(role);
    /// assert_eq!(scanner.progress(), 1);
    /// ```
    #[must_use]
    pub const fn preamble_on_role_chunk(mut self, on: bool) -> Self {
        self.role_chunks = on;
        self
    }

    /// The API dialect whose failure event [`failure_event`](Self::failure_event)
    /// renders: the presets' own, none for [`empty`](Self::empty) (and so for custom
    /// rules built from it) unless set with [`with_dialect`](Self::with_dialect).
    pub const fn dialect(&self) -> Option<Dialect> {
        self.dialect
    }

    /// Sets the dialect of the failure event (`None`: write none).
    #[must_use]
    pub const fn with_dialect(mut self, dialect: Option<Dialect>) -> Self {
        self.dialect = dialect;
        self
    }

    /// The API whose token usage the scanner reads ([`SseScanner::usage`]): each
    /// preset's own, none for [`empty`](Self::empty) unless set with
    /// [`with_usage`](Self::with_usage).
    pub const fn usage(&self) -> Option<Dialect> {
        self.usage
    }

    /// Sets the API whose token usage is read (`None`: read none). Where each
    /// dialect reports it is in the [module docs](crate::sse#usage).
    ///
    /// ```
    /// use sluice::Usage;
    /// use sluice::sse::{Dialect, SseRules, SseScanner};
    ///
    /// let rules = SseRules::empty().with_usage(Some(Dialect::OpenAiChat));
    /// let mut scanner = SseScanner::new(rules);
    /// scanner.feed(b"data: {\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2}}\n\n");
    /// assert_eq!(scanner.usage(), Usage::new(Some(9), Some(2)));
    /// ```
    #[must_use]
    pub const fn with_usage(mut self, dialect: Option<Dialect>) -> Self {
        self.usage = dialect;
        self
    }

    /// The names the error-object and usage walk stops at, in quotes: `error` (for
    /// the key and for `"object": "error"`) when error objects are looked for, then
    /// the usage roots' keys.
    fn walk_names(&self) -> impl Iterator<Item = &'static [u8]> {
        let error: Option<&'static [u8]> = self.error_objects.then_some(b"error");
        let roots = match self.usage_rules() {
            Some(rules) => rules.roots,
            None => &[],
        };
        error.into_iter().chain(roots.iter().map(|root| root.key))
    }

    /// Where the usage of [`usage`](Self::usage)'s dialect stands.
    const fn usage_rules(&self) -> Option<&'static UsageRules> {
        match self.usage {
            Some(Dialect::OpenAiChat) => Some(&usage::OPENAI_CHAT),
            Some(Dialect::OpenAiResponses) => Some(&usage::OPENAI_RESPONSES),
            Some(Dialect::Anthropic) => Some(&usage::ANTHROPIC),
            Some(Dialect::Gemini) => Some(&usage::GEMINI),
            Some(Dialect::Cohere) => Some(&usage::COHERE),
            Some(Dialect::Ollama) => Some(&usage::OLLAMA),
            None => None,
        }
    }

    /// The event that tells a client, in this API's own words, that the stream failed
    /// for `cause` after its response head was sent (a timer fired, the upstream was
    /// cut short or broke): never a clean end, so a client library raises an error
    /// instead of returning a short answer. `None` without a [dialect](Self::dialect).
    /// Written with [`Display`](fmt::Display), without allocating.
    ///
    /// ```
    /// use sluice::Cause;
    /// use sluice::sse::SseRules;
    ///
    /// let event = SseRules::openai_chat().failure_event(Cause::IdleTimeout).unwrap();
    /// assert_eq!(
    ///     event.to_string(),
    ///     "data: {\"error\":{\"message\":\"upstream failed: idle_timeout\",\
    ///      \"type\":\"upstream_error\",\"code\":\"idle_timeout\"}}\n\n",
    /// );
    /// assert!(SseRules::empty().failure_event(Cause::Truncated).is_none());
    /// ```
    pub const fn failure_event(&self, cause: Cause) -> Option<FailureEvent> {
        match self.dialect {
            Some(dialect) => FailureEvent::new(dialect, cause, ""),
            None => None,
        }
    }

    /// Adds a rule: an event whose data is exactly `data` is done.
    #[cfg(feature = "alloc")]
    #[must_use]
    pub fn done_on_data(self, data: &str) -> Self {
        self.with_data(data, Meaning::Done)
    }

    /// Adds a rule: an event named exactly `event` is done.
    #[cfg(feature = "alloc")]
    #[must_use]
    pub fn done_on_event(self, event: &str) -> Self {
        self.with_event(event, Meaning::Done)
    }

    /// Adds a rule: an event whose data is exactly `data` failed.
    #[cfg(feature = "alloc")]
    #[must_use]
    pub fn failed_on_data(self, data: &str) -> Self {
        self.with_data(data, Meaning::Failed)
    }

    /// Adds a rule: an event named exactly `event` failed.
    #[cfg(feature = "alloc")]
    #[must_use]
    pub fn failed_on_event(self, event: &str) -> Self {
        self.with_event(event, Meaning::Failed)
    }

    /// Adds a rule: an event named exactly `event` is a keep-alive, never progress.
    #[cfg(feature = "alloc")]
    #[must_use]
    pub fn keep_alive_on_event(self, event: &str) -> Self {
        self.with_event(event, Meaning::KeepAlive)
    }

    /// Adds a rule: an event named exactly `event` is preamble: not progress before
    /// the first progress event, progress after it (see the
    /// [module docs](crate::sse#preamble-and-first-progress)). A keep-alive rule for the
    /// same name is weaker; a done or failed rule stronger.
    ///
    /// ```
    /// use sluice::sse::{SseRules, SseScanner};
    ///
    /// let rules = SseRules::empty().preamble_on_event("start");
    /// let mut scanner = SseScanner::new(rules);
    /// scanner.feed(b"event: start\ndata: {}\n\n");
    /// assert_eq!(scanner.progress(), 0);
    /// scanner.feed(b"data: token\n\nevent: start\ndata: {}\n\n");
    /// assert_eq!(scanner.progress(), 2); // after the first token, progress
    /// ```
    #[cfg(feature = "alloc")]
    #[must_use]
    pub fn preamble_on_event(self, event: &str) -> Self {
        self.with_event(event, Meaning::Preamble)
    }

    #[cfg(feature = "alloc")]
    fn with_data(mut self, data: &str, meaning: Meaning) -> Self {
        self.data = self.data.with(data, meaning);
        self
    }

    #[cfg(feature = "alloc")]
    fn with_event(mut self, event: &str, meaning: Meaning) -> Self {
        self.event = self.event.with(event, meaning);
        self
    }
}

impl Default for SseRules {
    fn default() -> Self {
        Self::openai_chat()
    }
}

impl PartialEq for SseRules {
    fn eq(&self, other: &Self) -> bool {
        self.data.iter().eq(other.data.iter())
            && self.event.iter().eq(other.event.iter())
            && self.error_objects == other.error_objects
            && self.role_chunks == other.role_chunks
            && self.require_done == other.require_done
            && self.dialect == other.dialect
            && self.member == other.member
            && self.usage == other.usage
    }
}

impl Eq for SseRules {}

impl fmt::Debug for SseRules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Rules<'a>(&'a Table);
        impl fmt::Debug for Rules<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_map().entries(self.0.iter()).finish()
            }
        }
        f.debug_struct("SseRules")
            .field("data", &Rules(&self.data))
            .field("event", &Rules(&self.event))
            .field("error_objects", &self.error_objects)
            .field("role_chunks", &self.role_chunks)
            .field("require_done", &self.require_done)
            .field("dialect", &self.dialect)
            .field("member", &self.member)
            .field("usage", &self.usage)
            .finish()
    }
}

/// An API's way of saying, in-band, that a stream failed: which failure event
/// [`SseRules::failure_event`] and
/// [`NdjsonRules::failure_event`](crate::ndjson::NdjsonRules::failure_event) write;
/// and where it reports token usage ([`SseRules::with_usage`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Dialect {
    /// OpenAI Chat Completions and the compatible engines: an error object,
    /// `data: {"error": {...}}`, and no `[DONE]`.
    OpenAiChat,
    /// OpenAI Responses: a `response.failed` event.
    OpenAiResponses,
    /// Anthropic Messages: an `error` event.
    Anthropic,
    /// Google Gemini: an error object as Gemini sends it on a 200,
    /// `data: {"error": {"code": 502, "message": ..., "status": "UNAVAILABLE"}}`.
    Gemini,
    /// Cohere v2 chat: where it reports usage ([`SseRules::with_usage`]). It writes
    /// no failure event: [`SseRules::failure_event`] is `None` with this dialect.
    Cohere,
    /// Ollama's native API, newline-delimited JSON ([`crate::ndjson`]): a bare error
    /// line, `{"error": "..."}`, as Ollama writes one on a 200
    /// ([`NdjsonRules::failure_event`](crate::ndjson::NdjsonRules::failure_event));
    /// its usage is the top-level `prompt_eval_count` and `eval_count`.
    Ollama,
}

/// The failure event of a [`Dialect`] for a [`Cause`], written by its
/// [`Display`](fmt::Display) as one whole SSE event (ending in a blank line), or, for
/// [`Dialect::Ollama`], one whole NDJSON line; see [`SseRules::failure_event`] and
/// [`NdjsonRules::failure_event`](crate::ndjson::NdjsonRules::failure_event). The message is `upstream failed: <cause>`, or, for an
/// upstream given a name ([`named`](Self::named)), `upstream <name> failed: <cause>`;
/// the error's code (OpenAI) is the cause ([`Cause::as_str`]).
///
/// Made by a scanner ([`SseScanner::failure_event`]) after a stream that was cut off
/// inside an event, it first ends that event: a line end, then the blank line that
/// dispatches it (or only the blank line, if the line had ended), so that the failure
/// event is an event of its own, not more data lines of the cut one.
///
/// ```
/// use sluice::Cause;
/// use sluice::sse::SseRules;
///
/// let anthropic = SseRules::anthropic().failure_event(Cause::Deadline).unwrap();
/// assert_eq!(
///     anthropic.to_string(),
///     "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\
///      \"message\":\"upstream failed: deadline\"}}\n\n",
/// );
/// let responses = SseRules::openai_responses().failure_event(Cause::Truncated).unwrap();
/// assert_eq!(
///     responses.to_string(),
///     "event: response.failed\ndata: {\"type\":\"response.failed\",\"response\":\
///      {\"status\":\"failed\",\"error\":{\"code\":\"server_error\",\
///      \"message\":\"upstream failed: truncated\"}}}\n\n",
/// );
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FailureEvent {
    dialect: Dialect,
    cause: Cause,
    /// What ends the event the stream was cut off inside: `""` at an event boundary,
    /// `"\n"` after a line end, `"\n\n"` inside a line.
    close: &'static str,
}

impl FailureEvent {
    /// The event of `dialect` for `cause`, after `close` (what ends the line or event
    /// the stream was cut off inside); none for a dialect without one.
    pub(crate) const fn new(dialect: Dialect, cause: Cause, close: &'static str) -> Option<Self> {
        match dialect {
            // Usage only: Cohere has no failure event of its own here.
            Dialect::Cohere => None,
            _ => Some(Self {
                dialect,
                cause,
                close,
            }),
        }
    }

    /// Its dialect.
    pub const fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The cause it reports.
    pub const fn cause(&self) -> Cause {
        self.cause
    }

    /// The same event, its message naming the upstream that failed:
    /// `upstream <name> failed: <cause>`. The name is written with its
    /// [`Display`](fmt::Display) and escaped as a JSON string needs (quotes,
    /// backslashes, control characters), so any text is safe in it; it is the
    /// caller's to choose one that a client may read (a worker's name, never its URL).
    ///
    /// ```
    /// use sluice::Cause;
    /// use sluice::sse::SseRules;
    ///
    /// let event = SseRules::openai_chat().failure_event(Cause::IdleTimeout).unwrap();
    /// assert_eq!(
    ///     event.named("gpu-\"7\"").to_string(),
    ///     "data: {\"error\":{\"message\":\"upstream gpu-\\\"7\\\" failed: idle_timeout\",\
    ///      \"type\":\"upstream_error\",\"code\":\"idle_timeout\"}}\n\n",
    /// );
    /// ```
    pub const fn named<'a, N: fmt::Display + ?Sized>(
        &self,
        upstream: &'a N,
    ) -> NamedFailureEvent<'a, N> {
        NamedFailureEvent {
            event: *self,
            upstream,
        }
    }

    /// Writes the event, its message naming `upstream` if given.
    fn write(
        &self,
        f: &mut fmt::Formatter<'_>,
        upstream: Option<&dyn fmt::Display>,
    ) -> fmt::Result {
        let message = Message {
            upstream,
            cause: self.cause,
        };
        // Causes are snake_case labels: nothing in them needs escaping in JSON.
        let cause = self.cause.as_str();
        f.write_str(self.close)?;
        match self.dialect {
            Dialect::OpenAiChat => write!(
                f,
                "data: {{\"error\":{{\"message\":\"{message}\",\
                 \"type\":\"upstream_error\",\"code\":\"{cause}\"}}}}\n\n"
            ),
            Dialect::OpenAiResponses => write!(
                f,
                "event: response.failed\ndata: {{\"type\":\"response.failed\",\
                 \"response\":{{\"status\":\"failed\",\"error\":{{\"code\":\"server_error\",\
                 \"message\":\"{message}\"}}}}}}\n\n"
            ),
            Dialect::Anthropic => write!(
                f,
                "event: error\ndata: {{\"type\":\"error\",\"error\":{{\"type\":\"api_error\",\
                 \"message\":\"{message}\"}}}}\n\n"
            ),
            Dialect::Gemini => write!(
                f,
                "data: {{\"error\":{{\"code\":502,\"message\":\"{message}\",\
                 \"status\":\"UNAVAILABLE\"}}}}\n\n"
            ),
            Dialect::Ollama => writeln!(f, "{{\"error\":\"{message}\"}}"),
            // Never made (`failure_event` gives none): nothing to write.
            Dialect::Cohere => Ok(()),
        }
    }
}

impl fmt::Display for FailureEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f, None)
    }
}

/// A [`FailureEvent`] whose message names the upstream that failed; see
/// [`FailureEvent::named`]. Written by its [`Display`](fmt::Display).
#[derive(Debug, Clone, Copy)]
pub struct NamedFailureEvent<'a, N: ?Sized> {
    event: FailureEvent,
    upstream: &'a N,
}

impl<N: fmt::Display + ?Sized> fmt::Display for NamedFailureEvent<'_, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.event.write(f, Some(&self.upstream))
    }
}

/// A failure event's message, as the inside of a JSON string.
struct Message<'a> {
    upstream: Option<&'a dyn fmt::Display>,
    cause: Cause,
}

impl fmt::Display for Message<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("upstream ")?;
        if let Some(upstream) = self.upstream {
            fmt::write(&mut JsonString(f), format_args!("{upstream}"))?;
            f.write_str(" ")?;
        }
        write!(f, "failed: {}", self.cause.as_str())
    }
}

/// Writes text into a JSON string: escapes quotes, backslashes and control
/// characters (RFC 8259, section 7), and passes everything else as it is.
struct JsonString<'a, W: ?Sized>(&'a mut W);

impl<W: fmt::Write + ?Sized> fmt::Write for JsonString<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut plain = 0;
        for (i, b) in s.bytes().enumerate() {
            let escape = match b {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0x08 => "\\b",
                0x0c => "\\f",
                0x00..=0x1f => "",
                _ => continue,
            };
            // Only ASCII bytes are escaped: `i` is on a char boundary.
            self.0.write_str(&s[plain..i])?;
            if escape.is_empty() {
                write!(self.0, "\\u{b:04x}")?;
            } else {
                self.0.write_str(escape)?;
            }
            plain = i + 1;
        }
        self.0.write_str(&s[plain..])
    }
}

/// What a rule makes of the events it matches; the stronger wins (`Ord`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Meaning {
    /// Not progress: the worker is only saying it is alive.
    KeepAlive,
    /// Not progress before the first progress event: the worker says it has begun,
    /// but no output yet.
    Preamble,
    Done,
    Failed,
}

impl Meaning {
    fn signal(meaning: Option<Self>) -> Option<Signal> {
        match meaning? {
            Meaning::KeepAlive | Meaning::Preamble => None,
            Meaning::Done => Some(Signal::Done),
            Meaning::Failed => Some(Signal::Failed),
        }
    }
}

/// Patterns sorted by their bytes, each at most once.
#[derive(Clone)]
enum Table {
    Static(&'static [(&'static str, Meaning)]),
    #[cfg(feature = "alloc")]
    Shared(Arc<[(Box<str>, Meaning)]>),
}

impl Table {
    fn len(&self) -> usize {
        match self {
            Self::Static(t) => t.len(),
            #[cfg(feature = "alloc")]
            Self::Shared(t) => t.len(),
        }
    }

    fn get(&self, i: usize) -> (&str, Meaning) {
        match self {
            Self::Static(t) => t[i],
            #[cfg(feature = "alloc")]
            Self::Shared(t) => (&t[i].0, t[i].1),
        }
    }

    fn iter(&self) -> impl Iterator<Item = (&str, Meaning)> {
        (0..self.len()).map(|i| self.get(i))
    }

    #[cfg(feature = "alloc")]
    fn with(self, pattern: &str, meaning: Meaning) -> Self {
        let mut rules: Vec<(Box<str>, Meaning)> = self.iter().map(|(p, k)| (p.into(), k)).collect();
        match rules.binary_search_by(|(p, _)| (**p).cmp(pattern)) {
            Ok(i) => rules[i].1 = rules[i].1.max(meaning),
            Err(i) => rules.insert(i, (pattern.into(), meaning)),
        }
        Self::Shared(rules.into())
    }

    /// Whether the patterns are sorted and distinct, as the matcher needs.
    #[cfg(test)]
    fn is_sorted(&self) -> bool {
        (1..self.len()).all(|i| self.get(i - 1).0 < self.get(i).0)
    }

    /// What the pattern equal to `bytes` means, if there is one: a binary search
    /// of the sorted patterns, what a [`Matcher`] fed `bytes` ends with.
    fn lookup(&self, bytes: &[u8]) -> Option<Meaning> {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let (pattern, meaning) = self.get(mid);
            let pattern = pattern.as_bytes();
            // The first bytes decide most comparisons (`[DONE]` against a JSON
            // object): compared first, without a call.
            match pattern
                .first()
                .cmp(&bytes.first())
                .then_with(|| pattern.cmp(bytes))
            {
                core::cmp::Ordering::Less => lo = mid + 1,
                core::cmp::Ordering::Greater => hi = mid,
                core::cmp::Ordering::Equal => return Some(meaning),
            }
        }
        None
    }
}

/// Which patterns of a sorted [`Table`] still equal the bytes seen so far.
///
/// Those patterns are the contiguous range `lo..hi` (sorting groups a prefix's
/// extensions together), so two indices and a length are all the state there is, and
/// each byte narrows the range by binary search. Once the range is empty the rest of
/// the value is skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Matcher {
    lo: usize,
    hi: usize,
    /// Bytes pushed, up to and including the one that left the range empty: zero
    /// means an empty value (an event without a name is a `message`).
    len: usize,
}

impl Matcher {
    fn new(table: &Table) -> Self {
        Self {
            lo: 0,
            hi: table.len(),
            len: 0,
        }
    }

    fn is_alive(&self) -> bool {
        self.lo < self.hi
    }

    fn push(&mut self, table: &Table, bytes: &[u8]) {
        for &b in bytes {
            if !self.push_byte(table, b) {
                return;
            }
        }
    }

    /// Narrows the range by one byte; says whether any pattern is left.
    fn push_byte(&mut self, table: &Table, b: u8) -> bool {
        if !self.is_alive() {
            return false;
        }
        if self.hi - self.lo == 1 {
            // One candidate left (the usual case after the first byte): compare.
            if table.get(self.lo).0.as_bytes().get(self.len) != Some(&b) {
                self.hi = self.lo;
            }
            self.len += 1;
            return self.is_alive();
        }
        let at = |i: usize| table.get(i).0.as_bytes().get(self.len).copied();
        // Within the range, patterns that end here sort first, then by this byte.
        self.lo = partition_point(self.lo, self.hi, |i| at(i).is_none_or(|c| c < b));
        self.hi = partition_point(self.lo, self.hi, |i| at(i) == Some(b));
        self.len += 1;
        self.is_alive()
    }

    fn matched(&self, table: &Table) -> Option<Meaning> {
        if !self.is_alive() {
            return None;
        }
        let (pattern, meaning) = table.get(self.lo);
        (pattern.len() == self.len).then_some(meaning)
    }
}

/// The first index in `lo..hi` for which `pred` is false (`pred` must hold on a
/// prefix of the range).
fn partition_point(mut lo: usize, mut hi: usize, pred: impl Fn(usize) -> bool) -> usize {
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// The fields a rule can look at; every other field is skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Data,
    Event,
}

/// Where in a line the scanner stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// Nothing of this line seen yet.
    Start,
    /// Inside the field name; its first bytes are in `SseScanner::name`.
    Name,
    /// In a comment, an unknown field, or a value no rule can match any more: the
    /// rest of the line is skipped.
    Skip,
    /// Just after the colon: one space may be dropped.
    ValueStart(Field),
    /// Inside the value.
    Value(Field),
}

/// Reads an event stream's bytes in any chunks and reports [`Signal`]s.
///
/// Feed every chunk, in order, to [`feed`](Self::feed); it returns the strongest
/// signal among the events that chunk dispatched. An event is dispatched by the blank
/// line that ends it, so a signal is reported with the chunk that holds that line end.
/// An event left undispatched when the stream ends reports nothing (as in a browser).
/// [`progress`](Self::progress) counts the dispatched events that are not keep-alives.
///
/// ```
/// use sluice::sse::{Signal, SseRules, SseScanner};
///
/// let mut scanner = SseScanner::new(SseRules::anthropic());
/// assert_eq!(scanner.feed(b"event: ping\ndata: {\"type\": \"ping\"}\n\n: hi\n\n"), None);
/// assert_eq!(scanner.progress(), 0); // a keep-alive and a comment: no progress
/// scanner.feed(b"event: content_block_delta\ndata: {}\n\n");
/// assert_eq!(scanner.progress(), 1);
/// assert_eq!(scanner.feed(b"event: message_stop\ndata: {}\n\n"), Some(Signal::Done));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct SseScanner {
    rules: SseRules,
    /// The meaning of an event without an `event` field (a `message`).
    message: Option<Meaning>,
    /// How many bytes of the BOM have been seen at the start; past the start, 3.
    bom: u8,
    /// The last byte was a CR: an LF right after it ends no second line.
    cr: bool,
    line: Line,
    /// A line of the current event has ended (the blank line that dispatches it has
    /// not come).
    open: bool,
    /// The field name so far: a longer one is no field a rule reads.
    name: [u8; 5],
    name_len: u8,
    /// The current event has at least one `data` field.
    has_data: bool,
    data: Matcher,
    event: Matcher,
    /// The data's error-object walk, when the rules look for one.
    json: ErrorObject,
    /// The quick reject's searchers for the names that walk stops at.
    needles: Needles,
    /// The data's role-only chunk walk, when the rules look for one and no progress
    /// was dispatched yet.
    role: RoleChunk,
    /// The data's member walk, when the rules have a member rule.
    member: MemberWalk,
    /// Dispatched events that are not keep-alives.
    progress: u64,
    /// The token usage reported so far.
    usage: Usage,
    /// The lengths of the data rules' patterns (bit `n` for `n` bytes; bit 63 for
    /// 63 and more): data of another length matches none.
    data_lens: u64,
}

impl SseScanner {
    /// A scanner at the start of a stream.
    pub fn new(rules: SseRules) -> Self {
        Self {
            message: rules.event.lookup(b"message"),
            bom: 0,
            cr: false,
            line: Line::Start,
            open: false,
            name: [0; 5],
            name_len: 0,
            has_data: false,
            data: Matcher::new(&rules.data),
            event: Matcher::new(&rules.event),
            json: ErrorObject::new(rules.error_objects, rules.usage_rules()),
            needles: Needles::new(&rules),
            role: RoleChunk::new(),
            member: MemberWalk::new(),
            progress: 0,
            usage: Usage {
                input_tokens: None,
                output_tokens: None,
            },
            data_lens: rules
                .data
                .iter()
                .fold(0, |lens, (p, _)| lens | len_bit(p.len())),
            rules,
        }
    }

    /// The rules this scanner applies.
    pub fn rules(&self) -> &SseRules {
        &self.rules
    }

    /// How many events were dispatched so far that are progress: every event with
    /// data but the rules' keep-alives, and but the preamble before the first
    /// progress event. Comments are never progress.
    pub const fn progress(&self) -> u64 {
        self.progress
    }

    /// The token usage the stream reported so far, as the rules read it
    /// ([`SseRules::usage`]): each count the last value reported, `None` until one
    /// is (see the [module docs](crate::sse#usage)).
    ///
    /// ```
    /// use sluice::Usage;
    /// use sluice::sse::{SseRules, SseScanner};
    ///
    /// let mut scanner = SseScanner::new(SseRules::anthropic());
    /// scanner.feed(b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":");
    /// scanner.feed(b"{\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n");
    /// assert_eq!(scanner.usage(), Usage::new(Some(25), None));
    /// scanner.feed(b"event: message_delta\ndata: {\"usage\":{\"output_tokens\":15}}\n\n");
    /// assert_eq!(scanner.usage(), Usage::new(Some(25), Some(15)));
    /// ```
    pub const fn usage(&self) -> Usage {
        self.usage
    }

    /// The rules' failure event for `cause` ([`SseRules::failure_event`]), to be
    /// written right after the bytes this scanner has read: if the stream was cut off
    /// inside an event, the event first ends it (`\n\n` inside a line, `\n` after
    /// one), so exactly one blank line comes before it and a client's parser reads it
    /// as an event of its own (the cut event before it is dispatched as it stands,
    /// truncated). `None` without a [dialect](SseRules::dialect).
    ///
    /// ```
    /// use sluice::Cause;
    /// use sluice::sse::{SseRules, SseScanner};
    ///
    /// let mut scanner = SseScanner::new(SseRules::openai_chat());
    /// scanner.feed(b"data: {\"choices\":[{\"delta\":");
    /// let event = scanner.failure_event(Cause::Truncated).unwrap();
    /// assert!(event.to_string().starts_with("\n\ndata: {\"error\":"));
    /// scanner.feed(b"{}}]}\n\n");
    /// let event = scanner.failure_event(Cause::Truncated).unwrap();
    /// assert!(event.to_string().starts_with("data: {\"error\":"));
    /// ```
    pub fn failure_event(&self, cause: Cause) -> Option<FailureEvent> {
        let mut event = self.rules.failure_event(cause)?;
        let in_bom = self.bom > 0 && usize::from(self.bom) < BOM.len();
        event.close = if self.line != Line::Start || in_bom {
            // Inside a line (a BOM cut short is one): end it, then the event.
            "\n\n"
        } else if self.open {
            // A line of the event ended; after a CR, an LF would only complete it.
            if self.cr { "\n\n" } else { "\n" }
        } else {
            ""
        };
        Some(event)
    }

    /// Scans the next chunk of the stream. Returns the strongest signal (`Failed` over
    /// `Done`) of the events this chunk dispatched, or `None`.
    #[inline]
    pub fn feed(&mut self, mut bytes: &[u8]) -> Option<Signal> {
        if let Some(signal) = self.whole_event(bytes) {
            return signal;
        }
        let mut signal = None;
        while usize::from(self.bom) < BOM.len() {
            let (&b, rest) = bytes.split_first()?;
            if b == BOM[usize::from(self.bom)] {
                self.bom += 1;
                bytes = rest;
            } else {
                // Not a BOM after all: what looked like one is ordinary input.
                let seen = usize::from(self.bom);
                self.bom = BOM.len() as u8;
                signal = self.scan(&BOM[..seen]);
            }
        }
        signal.max(self.scan(bytes))
    }

    /// The common case on the wire, at once: a chunk that is one whole event, one
    /// short `data` line and the blank line after it, fed at an event boundary, that
    /// no walk needs to read ([`settle`](Self::settle); its value holds no line end
    /// and none of the names the error-object and usage walk stops at, found in one
    /// pass, [`quoted::Names::is_plain`]). Leaves the scanner as [`scan`](Self::scan)
    /// would and returns the event's signal; `None` if the chunk is not one such
    /// event (then nothing changed).
    #[inline]
    fn whole_event(&mut self, bytes: &[u8]) -> Option<Option<Signal>> {
        // Longer chunks go the line loop's way, where long values are searched
        // with `memchr` (faster than the blocks past some hundreds of bytes). An
        // OpenAI chunk with its id, model and fingerprint is some 260 bytes.
        const LONGEST: usize = 512;
        let at_boundary = self.line == Line::Start && !self.open && !self.cr;
        if !at_boundary || usize::from(self.bom) != BOM.len() || bytes.len() > LONGEST {
            return None;
        }
        let line = bytes.strip_prefix(b"data:")?;
        let line = (line.strip_suffix(b"\n\n")).or_else(|| line.strip_suffix(b"\r\n\r\n"))?;
        let value = line.strip_prefix(b" ").unwrap_or(line);
        if self.walks_role_or_member() {
            return None;
        }
        if !(self.needles.names.as_ref()?).is_plain(value, |inside| self.is_walk_name(inside)) {
            return None;
        }
        self.name[..4].copy_from_slice(b"data");
        self.name_len = 4;
        Some(self.dispatch_settled(self.data_meaning(value)))
    }

    fn scan(&mut self, mut bytes: &[u8]) -> Option<Signal> {
        let mut signal = None;
        if self.cr && !bytes.is_empty() {
            self.cr = false;
            if bytes[0] == b'\n' {
                bytes = &bytes[1..];
            }
        }
        while let Some(&first) = bytes.first() {
            // Each arm stops at a line end or consumes something, so the loop is
            // linear; the line end itself is handled below.
            let consumed = match self.line {
                Line::Start => match first {
                    b'\r' | b'\n' => 0,
                    b':' => {
                        self.line = Line::Skip;
                        1
                    }
                    b'd' if bytes.starts_with(b"data:") => {
                        let (taken, event) = self.data_line(bytes);
                        signal = signal.max(event);
                        taken
                    }
                    _ => {
                        self.line = Line::Name;
                        self.name_len = 0;
                        0
                    }
                },
                Line::Name => self.scan_name(bytes),
                Line::Skip => line_end(bytes),
                Line::ValueStart(field) => {
                    self.line = Line::Value(field);
                    usize::from(first == b' ')
                }
                Line::Value(field) => self.scan_value(field, bytes),
            };
            bytes = &bytes[consumed..];
            if let Some((&b, rest)) = bytes.split_first() {
                if b == b'\r' || b == b'\n' {
                    signal = signal.max(self.end_line());
                    bytes = rest;
                    if b == b'\r' {
                        match bytes.first() {
                            Some(b'\n') => bytes = &bytes[1..],
                            Some(_) => {}
                            None => self.cr = true,
                        }
                    }
                }
            }
        }
        signal
    }

    /// Reads field name bytes; returns how many it consumed (the colon too).
    fn scan_name(&mut self, bytes: &[u8]) -> usize {
        for (i, &b) in bytes.iter().enumerate() {
            match b {
                b'\r' | b'\n' => return i,
                b':' => {
                    self.line = match self.start_field() {
                        Some(field) => Line::ValueStart(field),
                        None => Line::Skip,
                    };
                    return i + 1;
                }
                _ if usize::from(self.name_len) == self.name.len() => {
                    // Longer than any field a rule reads: skip the line.
                    self.line = Line::Skip;
                    return i;
                }
                _ => {
                    self.name[usize::from(self.name_len)] = b;
                    self.name_len += 1;
                }
            }
        }
        bytes.len()
    }

    /// Feeds value bytes to the field's matcher until the line ends or no pattern is
    /// left; returns how many it consumed.
    fn scan_value(&mut self, field: Field, bytes: &[u8]) -> usize {
        if field == Field::Data && self.data_walks() {
            return self.scan_data(bytes);
        }
        let (matcher, table) = match field {
            Field::Data => (&mut self.data, &self.rules.data),
            Field::Event => (&mut self.event, &self.rules.event),
        };
        for (i, &b) in bytes.iter().enumerate() {
            if b == b'\r' || b == b'\n' {
                return i;
            }
            if !matcher.push_byte(table, b) {
                self.line = Line::Skip;
                return i + 1;
            }
        }
        bytes.len()
    }

    /// Whether the data goes to the role-only chunk walk: the rules say so and no
    /// progress was dispatched yet (the same for the whole event).
    #[inline]
    fn reads_role(&self) -> bool {
        self.rules.role_chunks && self.progress == 0
    }

    /// Whether `value` holds, in quotes, a name the error-object and usage walk
    /// stops at (`"error"`, for the key and for `"object": "error"`; a usage root's
    /// key): else the walk can find nothing in it (a name spelled with escapes is
    /// not recognised, and a string never spans lines). A quick reject: a value up
    /// to [`Needles::SHORT`] bytes is searched in blocks, for all the names of a
    /// length at once ([`quoted::Names::any_in`]), a longer one with `memmem`, its
    /// searchers built once per process (with `std`).
    fn json_may_count(&self, value: &[u8]) -> bool {
        if let Some(names) = self.needles.names.filter(|_| value.len() <= Needles::SHORT) {
            return names.any_in(value, |inside| self.is_walk_name(inside));
        }
        let slots = self
            .needles
            .slots
            .iter()
            .map(|&slot| slot.and_then(finders::get));
        let finders = slots.chain(core::iter::repeat(None));
        (self.rules.walk_names().zip(finders)).any(|(name, needle)| match needle {
            Some(needle) => needle.is_quoted_in(value),
            None => quoted_in(value, name),
        })
    }

    /// Whether `bytes` are one of the names the error-object and usage walk stops at.
    #[inline]
    fn is_walk_name(&self, bytes: &[u8]) -> bool {
        self.rules.walk_names().any(|name| name == bytes)
    }

    /// Whether the data goes to the error-object and usage walk.
    fn walks_json(&self) -> bool {
        self.rules.error_objects || self.rules.usage.is_some()
    }

    /// Whether a JSON walk may still decide something about this event's data.
    fn json_alive(&self) -> bool {
        self.walks_json() && !self.json.is_dead()
            || self.reads_role() && !self.role.is_dead()
            || self.rules.member.is_some() && !self.member.is_dead()
    }

    /// A data value, when the rules look for error objects or role-only chunks: up
    /// to the line end, it goes to the matcher and the JSON walks; returns how many
    /// bytes it consumed. Once none can match, the rest of the line is skipped.
    fn scan_data(&mut self, bytes: &[u8]) -> usize {
        let end = line_end(bytes);
        self.data_value(&bytes[..end], event_end(&bytes[end..]).is_some());
        end
    }

    /// Whether a data value goes to [`scan_data`](Self::scan_data): to the JSON
    /// walks as well as the matcher.
    fn data_walks(&self) -> bool {
        self.walks_json() || self.walks_role_or_member()
    }

    /// Whether a data value goes to the role-only chunk walk or the member walk:
    /// then no quick reject can settle its event.
    #[inline]
    fn walks_role_or_member(&self) -> bool {
        self.reads_role() || self.rules.member.is_some()
    }

    /// A data value (up to its line end, or the end of the chunk) for the matcher
    /// and the JSON walks; `whole` if its line end and the blank line after it were
    /// seen (the event's data is this one value).
    fn data_value(&mut self, value: &[u8], whole: bool) {
        self.data.push(&self.rules.data, value);
        if self.walks_json() {
            if self.json.is_fresh() && whole && !self.json_may_count(value) {
                // The event's data is this one line, whole, and none of the names the
                // walk stops at is in it: the walk could find nothing (no error object,
                // no usage), whatever its structure. Settled without walking it.
                self.json.give_up();
            } else {
                self.json.feed(value);
            }
        }
        if self.reads_role() {
            self.role.feed(value);
        }
        if let Some(rule) = &self.rules.member {
            self.member.feed(&rule.path, value);
        }
        if !self.data.is_alive() && !self.json_alive() {
            self.line = Line::Skip;
        }
    }

    /// A line that starts with `data:`, read at once as far as `bytes` holds it:
    /// what [`scan_name`](Self::scan_name), [`start_field`](Self::start_field) and
    /// [`scan_value`](Self::scan_value) do with it, in the same order, with one line
    /// end search. If it is the event's only line and the blank line that dispatches
    /// it follows in `bytes` (the common case on the wire: engines write one event
    /// per chunk), both line ends are taken and the event dispatched, as
    /// [`end_line`](Self::end_line) would; else the line end is left to the caller.
    /// Returns how many bytes it took, and the signal of the event it dispatched.
    fn data_line(&mut self, bytes: &[u8]) -> (usize, Option<Signal>) {
        const DATA: usize = b"data:".len();
        let first_line = !self.open;
        self.name[..4].copy_from_slice(b"data");
        self.name_len = 4;
        let Some(&first) = bytes.get(DATA) else {
            let field = self.start_data();
            // The value starts in the next chunk (a space may be dropped there).
            self.line = field.map_or(Line::Skip, Line::ValueStart);
            return (DATA, None);
        };
        let space = usize::from(first == b' ');
        let value = &bytes[DATA + space..];
        let end = line_end(value);
        let event_end = event_end(&value[end..]);
        if let Some((ends, cr)) = event_end.filter(|_| first_line) {
            if let Some(data) = self.settle(&value[..end]) {
                // What the lines below leave after dispatching, without walking.
                self.line = Line::Start;
                self.open = false;
                self.cr = cr;
                return (DATA + space + end + ends, self.dispatch_settled(data));
            }
        }
        let field = self.start_data();
        self.line = match field {
            Some(field) => Line::Value(field),
            None => Line::Skip,
        };
        if field.is_some() && end > 0 {
            // Only a value with a byte before its line end is scanned.
            if self.data_walks() {
                self.data_value(&value[..end], event_end.is_some());
            } else {
                self.data.push(&self.rules.data, &value[..end]);
                if !self.data.is_alive() {
                    self.line = Line::Skip;
                }
            }
        }
        let taken = DATA + space + end;
        match event_end {
            Some((ends, cr)) if first_line => {
                self.line = Line::Start;
                self.open = false;
                self.cr = cr;
                (taken + ends, self.dispatch())
            }
            _ => (taken, None),
        }
    }

    /// An event whose data is `value` alone, whole (its line end and blank line
    /// seen), nothing of it walked yet: what the rule on its exact data says, if no
    /// walk could say more (the common case on the wire: no role-only chunk to read,
    /// no member rule, and none of the names the error-object and usage walk stops
    /// at in the value, [`json_may_count`](Self::json_may_count)). `None` if a walk
    /// must decide.
    fn settle(&self, value: &[u8]) -> Option<Option<Meaning>> {
        debug_assert!(!self.has_data && self.json.is_fresh() && self.data.len == 0);
        if self.walks_role_or_member() {
            return None;
        }
        if self.walks_json() && self.json_may_count(value) {
            return None;
        }
        Some(self.data_meaning(value))
    }

    /// What the data rules say of an event whose data is exactly `value`.
    #[inline]
    fn data_meaning(&self, value: &[u8]) -> Option<Meaning> {
        let may_match = self.data_lens & len_bit(value.len()) != 0;
        may_match.then(|| self.rules.data.lookup(value)).flatten()
    }

    /// [`dispatch`](Self::dispatch) for an event [`settle`](Self::settle)d: its only
    /// field a `data` line meaning `data`, no walk having found anything (no error
    /// object, usage, member or role-only chunk), and nothing of it in the scanner's
    /// state to reset.
    #[inline]
    fn dispatch_settled(&mut self, data: Option<Meaning>) -> Option<Signal> {
        let meaning = data.max(self.message);
        self.count_progress(meaning);
        Meaning::signal(meaning)
    }

    /// Counts a dispatched event of this meaning as progress, unless it is a
    /// keep-alive or preamble before the first progress.
    #[inline]
    fn count_progress(&mut self, meaning: Option<Meaning>) {
        let preamble = meaning == Some(Meaning::Preamble) && self.progress == 0;
        if meaning != Some(Meaning::KeepAlive) && !preamble {
            self.progress += 1;
        }
    }

    /// The field name is complete: classify it and open its value. Returns the field
    /// if its value can still match a rule.
    fn start_field(&mut self) -> Option<Field> {
        match (self.name_len, self.name) {
            (4, [b'd', b'a', b't', b'a', _]) => self.start_data(),
            (5, [b'e', b'v', b'e', b'n', b't']) => {
                self.event = Matcher::new(&self.rules.event);
                self.event.is_alive().then_some(Field::Event)
            }
            _ => None,
        }
    }

    /// A `data` field: [`start_field`](Self::start_field) for the name `data`.
    fn start_data(&mut self) -> Option<Field> {
        if self.has_data {
            self.data.push(&self.rules.data, b"\n");
            self.json.line_feed();
            self.role.line_feed();
            if let Some(rule) = &self.rules.member {
                self.member.line_feed(&rule.path);
            }
        }
        self.has_data = true;
        let alive = self.data.is_alive() || self.json_alive();
        alive.then_some(Field::Data)
    }

    fn end_line(&mut self) -> Option<Signal> {
        let line = core::mem::replace(&mut self.line, Line::Start);
        match line {
            Line::Start => {
                self.open = false;
                self.dispatch()
            }
            Line::Name => {
                self.open = true;
                self.start_field();
                None
            }
            Line::Skip | Line::ValueStart(_) | Line::Value(_) => {
                self.open = true;
                None
            }
        }
    }

    fn dispatch(&mut self) -> Option<Signal> {
        let meaning = if self.has_data {
            let event = if self.event.len == 0 {
                self.message
            } else {
                self.event.matched(&self.rules.event)
            };
            let error =
                (self.rules.error_objects && self.json.is_error()).then_some(Meaning::Failed);
            let role = (self.reads_role() && self.role.is_role_only()).then_some(Meaning::Preamble);
            let meaning = self.data.matched(&self.rules.data).max(event);
            let member = self.rules.member.and_then(|rule| {
                let applies = rule.when.is_none_or(|when| meaning == Some(when));
                (applies && self.member.is_match()).then_some(rule.meaning)
            });
            let meaning = meaning.max(error).max(member);
            // A role-only chunk that some rule also names is what that rule says.
            let meaning = meaning.or(role);
            self.count_progress(meaning);
            if let (Some(counts), Some(rules)) = (self.json.usage(), self.rules.usage_rules()) {
                if !rules.final_only || matches!(meaning, Some(Meaning::Done | Meaning::Failed)) {
                    self.usage = self.usage.updated(counts);
                }
            }
            meaning
        } else {
            None
        };
        self.has_data = false;
        self.data = Matcher::new(&self.rules.data);
        self.event = Matcher::new(&self.rules.event);
        self.json.reset();
        self.role = RoleChunk::new();
        if self.rules.member.is_some() {
            self.member = MemberWalk::new();
        }
        Meaning::signal(meaning)
    }
}

impl fmt::Debug for SseScanner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SseScanner")
            .field("rules", &self.rules)
            .field("line", &self.line)
            .field("has_data", &self.has_data)
            .field("progress", &self.progress)
            .finish_non_exhaustive()
    }
}

/// How the quick reject ([`SseScanner::json_may_count`], [`SseScanner::whole_event`])
/// looks for [`SseRules::walk_names`]: in a short value, by the block tests of
/// [`quoted::Names`] (the names' lengths and last bytes; the names themselves are
/// the rules'); in a long one, with the process's shared searchers ([`finders`]) of
/// the first names. Building a `memmem` finder costs more than searching a chat
/// chunk with it, and one is hundreds of bytes, so they are built once per process
/// and name, not per line nor per scanner; a scanner holds their slots. Names past
/// those (none in any preset) are searched with a finder built per line, and so is
/// every long value without the `std` feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Needles {
    /// The block tests for short values; `None` if there are more names than they
    /// hold (none in any preset).
    names: Option<quoted::Names>,
    /// The slots of the first names' shared searchers, for long values.
    slots: [Option<u8>; quoted::MAX],
}

impl Needles {
    /// The longest value searched with the block tests ([`quoted::Names`]); a
    /// longer one is searched with `memmem`, one name at a time.
    const SHORT: usize = 128;

    fn new(rules: &SseRules) -> Self {
        let mut slots = [None; quoted::MAX];
        for (slot, name) in slots.iter_mut().zip(rules.walk_names()) {
            *slot = finders::slot(name);
        }
        Self {
            names: quoted::Names::new(rules.walk_names()),
            slots,
        }
    }
}

/// The searchers of the names the quick reject looks for, shared by every scanner
/// in the process: built once per name, on first use, in static slots (no
/// allocation). Only a cache: a name without a slot is searched without one.
#[cfg(feature = "std")]
mod finders {
    use std::sync::OnceLock;

    #[cfg(target_arch = "x86_64")]
    use memchr::arch::x86_64::avx2::memchr::Two;
    #[cfg(target_arch = "x86_64")]
    use memchr::arch::x86_64::avx2::packedpair::Finder as Avx2;
    use memchr::memmem::Finder;

    /// More than the names of every dialect together.
    const SLOTS: usize = 16;

    static NAMES: [OnceLock<&'static [u8]>; SLOTS] = [const { OnceLock::new() }; SLOTS];
    static NEEDLES: [OnceLock<Needle>; SLOTS] = [const { OnceLock::new() }; SLOTS];

    /// The longest name with an AVX2 searcher (in quotes, two bytes more).
    #[cfg(target_arch = "x86_64")]
    const LONGEST: usize = 30;

    /// The searcher of one name.
    #[derive(Debug)]
    pub(super) struct Needle {
        name: &'static [u8],
        /// With AVX2 (and a name up to [`LONGEST`] bytes): the packed-pair searcher
        /// that `memmem` picks for a short needle, called directly on the name in
        /// quotes (through `memmem`'s dispatch, on the bare name with its quotes
        /// checked after, a chat chunk costs about a third more instructions).
        #[cfg(target_arch = "x86_64")]
        avx2: Option<(Avx2, [u8; LONGEST + 2])>,
        memmem: Finder<'static>,
    }

    impl Needle {
        fn new(name: &'static [u8]) -> Self {
            Self {
                name,
                #[cfg(target_arch = "x86_64")]
                avx2: if name.len() <= LONGEST {
                    let mut quoted = [b'"'; LONGEST + 2];
                    quoted[1..=name.len()].copy_from_slice(name);
                    Avx2::new(&quoted[..name.len() + 2]).map(|avx2| (avx2, quoted))
                } else {
                    None
                },
                memmem: Finder::new(name),
            }
        }

        /// Whether `haystack` holds the name in quotes.
        #[inline]
        pub(super) fn is_quoted_in(&self, haystack: &[u8]) -> bool {
            #[cfg(target_arch = "x86_64")]
            if let Some((avx2, quoted)) = &self.avx2 {
                let quoted = &quoted[..self.name.len() + 2];
                // Shorter haystacks are `memmem`'s (the packed pair would panic).
                if haystack.len() >= avx2.min_haystack_len() {
                    return avx2.find(haystack, quoted).is_some();
                }
            }
            let mut at = 0;
            while let Some(i) = self.memmem.find(&haystack[at..]) {
                if super::quoted_at(haystack, at + i, self.name.len()) {
                    return true;
                }
                at += i + 1;
            }
            false
        }
    }

    /// The line end searcher, with AVX2.
    #[cfg(target_arch = "x86_64")]
    static LINE_ENDS: OnceLock<Option<Two>> = OnceLock::new();

    /// The first CR or LF in `bytes`. With AVX2, its searcher is called directly,
    /// built once per process: through `memchr2`'s dispatch a chat chunk's line
    /// costs a few dozen instructions more.
    #[inline]
    pub(super) fn line_end(bytes: &[u8]) -> Option<usize> {
        #[cfg(target_arch = "x86_64")]
        if let Some(two) = LINE_ENDS.get_or_init(|| Two::new(b'\r', b'\n')) {
            return two.find(bytes);
        }
        memchr::memchr2(b'\r', b'\n', bytes)
    }

    /// The slot of `name`'s searcher, which is built if it was not; `None` if every
    /// slot holds another name.
    pub(super) fn slot(name: &'static [u8]) -> Option<u8> {
        let i = NAMES
            .iter()
            .position(|slot| *slot.get_or_init(|| name) == name)?;
        NEEDLES[i].get_or_init(|| Needle::new(name));
        u8::try_from(i).ok()
    }

    /// The searcher in `slot`.
    pub(super) fn get(slot: u8) -> Option<&'static Needle> {
        NEEDLES.get(usize::from(slot))?.get()
    }
}

/// Without `std` (no `OnceLock`), no searcher is shared.
#[cfg(not(feature = "std"))]
mod finders {
    /// No searcher: there is none.
    #[derive(Debug)]
    pub(super) enum Needle {}

    impl Needle {
        pub(super) fn is_quoted_in(&self, _: &[u8]) -> bool {
            match *self {}
        }
    }

    pub(super) fn slot(_: &'static [u8]) -> Option<u8> {
        None
    }

    /// The first CR or LF in `bytes`.
    pub(super) fn line_end(bytes: &[u8]) -> Option<usize> {
        memchr::memchr2(b'\r', b'\n', bytes)
    }

    pub(super) fn get(_: u8) -> Option<&'static Needle> {
        None
    }
}

/// If `rest`, which starts at a line end, shows that line end followed by a blank
/// line (the event is dispatched right there, with no more data lines): how many
/// bytes the two take, and whether the blank line is a CR that ends `rest` (an LF
/// in the next chunk would only complete it).
fn event_end(rest: &[u8]) -> Option<(usize, bool)> {
    let at = match rest {
        [b'\r', b'\n', ..] => 2,
        [b'\r' | b'\n', ..] => 1,
        _ => return None,
    };
    match &rest[at..] {
        [b'\n', ..] => Some((at + 1, false)),
        [b'\r', b'\n', ..] => Some((at + 2, false)),
        [b'\r'] => Some((at + 1, true)),
        [b'\r', ..] => Some((at + 1, false)),
        _ => None,
    }
}

/// The bit of data `len` bytes long in [`SseScanner::data_lens`].
#[inline]
fn len_bit(len: usize) -> u64 {
    1 << len.min(63)
}

/// Whether `value` holds `name` in quotes, with a `memmem` search built for it.
fn quoted_in(value: &[u8], name: &[u8]) -> bool {
    memchr::memmem::find_iter(value, name).any(|i| quoted_at(value, i, name.len()))
}

/// Whether the `len` bytes at `i` in `value` stand in quotes.
fn quoted_at(value: &[u8], i: usize, len: usize) -> bool {
    i > 0 && value[i - 1] == b'"' && value.get(i + len) == Some(&b'"')
}

/// The index of the first CR or LF, or the length.
fn line_end(bytes: &[u8]) -> usize {
    finders::line_end(bytes).unwrap_or(bytes.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preset_tables_are_sorted() {
        for rules in [
            SseRules::openai_chat(),
            SseRules::openai_responses(),
            SseRules::anthropic(),
            SseRules::gemini(),
            SseRules::cohere(),
        ] {
            assert!(
                rules.data.is_sorted() && rules.event.is_sorted(),
                "{rules:?}"
            );
        }
    }

    /// `data_line` (a `data:` line read at once, a whole event dispatched there),
    /// `whole_event` (a chunk that is one whole event) and the quick reject leave
    /// the scanner exactly as the byte loop does: every sequence of up to three
    /// tokens (a whole event is three: a blank line is one token; four took over a
    /// minute in a debug build), fed whole and split once anywhere, and fed whole
    /// after a first event, ends in the same state (verdict, progress, usage, line
    /// and walks) as fed byte by byte, where none applies.
    #[cfg(feature = "alloc")]
    #[test]
    fn data_lines_read_at_once_as_byte_by_byte() {
        const TOKENS: &[&[u8]] = &[
            b"data:",
            b"data: ",
            b"{\"error\":1}",
            b"{\"usage\":{\"prompt_tokens\":3}}",
            b"{\"choices\":[{\"delta\":{\"role\":\"x\"}}]}",
            b"[DONE]",
            b"\r",
            b"\n",
            b"\n\n",
            b"event:ping",
        ];
        let custom = SseRules::empty().done_on_data("[DONE]");
        let sets = [SseRules::openai_chat(), SseRules::anthropic(), custom];
        for input in sluice_test_support::sequences::token_sequences(TOKENS, 3) {
            for rules in &sets {
                let mut bytewise = SseScanner::new(rules.clone());
                let mut expected = None;
                for b in &input {
                    expected = expected.max(bytewise.feed(core::slice::from_ref(b)));
                }
                // The input as the one chunk after a first event (the start of the
                // stream and the preamble are behind: whole events take the fast
                // path).
                const FIRST: &[u8] = b"data: x\n\n";
                let mut after = SseScanner::new(rules.clone());
                let mut after_bytewise = SseScanner::new(rules.clone());
                after.feed(FIRST);
                after_bytewise.feed(FIRST);
                let signal = after.feed(&input);
                let expected_after = (input.iter())
                    .map(|b| after_bytewise.feed(core::slice::from_ref(b)))
                    .max()
                    .flatten();
                assert_eq!(
                    signal, expected_after,
                    "{rules:?} {input:?} after a blank line"
                );
                assert!(
                    after == after_bytewise,
                    "{rules:?} {input:?} after a blank line"
                );
                for k in 0..=input.len() {
                    let mut split = SseScanner::new(rules.clone());
                    let signal = split.feed(&input[..k]).max(split.feed(&input[k..]));
                    assert_eq!(signal, expected, "{rules:?} {input:?} at {k}");
                    assert!(split == bytewise, "{rules:?} {input:?} at {k}");
                    let cause = Cause::Truncated;
                    assert_eq!(split.failure_event(cause), bytewise.failure_event(cause));
                }
            }
        }
    }
}
