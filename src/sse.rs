//! In-band completion: a split-safe, constant-memory Server-Sent Events classifier.
//!
//! An upstream that streams SSE says in-band when it is done (`data: [DONE]` for
//! OpenAI Chat Completions, `event: message_stop` for Anthropic Messages) or failed
//! (`event: error`). The [`SseScanner`] reads the raw bytes in whatever chunks the
//! network hands over and reports those [`Signal`]s as they are dispatched, following
//! the WHATWG event-stream rules that matter:
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
//! Matching is on the raw bytes (invalid UTF-8 matches no rule).
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

/// What a dispatched event says about the stream. `Failed` is stronger than `Done`
/// (`Ord` follows: `Done < Failed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Signal {
    /// The stream is complete.
    Done,
    /// The stream failed.
    Failed,
}

/// Which dispatched events are done and which failed.
///
/// Presets cost nothing to make or clone; custom rules (feature `alloc`) are built
/// once and shared by clones without copying. Where a data value or an event name is
/// given twice, `Failed` wins.
///
/// ```
/// use sluice::sse::{Signal, SseRules, SseScanner};
///
/// let rules = SseRules::openai_chat().failed_on_event("error").done_on_data("[END]");
/// let mut scanner = SseScanner::new(rules);
/// assert_eq!(scanner.feed(b"event: error\ndata: {}\n\n"), Some(Signal::Failed));
/// assert_eq!(scanner.feed(b"data: [END]\n\n"), Some(Signal::Done));
/// ```
#[derive(Clone)]
pub struct SseRules {
    data: Table,
    event: Table,
}

impl SseRules {
    /// No rules: the scanner reports nothing.
    pub const fn empty() -> Self {
        Self {
            data: Table::Static(&[]),
            event: Table::Static(&[]),
        }
    }

    /// OpenAI Chat Completions (and compatible engines: vLLM, SGLang, llama.cpp
    /// server): data exactly `[DONE]` is done. The default.
    pub const fn openai_chat() -> Self {
        Self {
            data: Table::Static(&[("[DONE]", Signal::Done)]),
            event: Table::Static(&[]),
        }
    }

    /// OpenAI Responses: events `response.completed` and `response.incomplete` are
    /// done; `response.failed` and `error` failed.
    pub const fn openai_responses() -> Self {
        Self {
            data: Table::Static(&[]),
            // Sorted by bytes: the matcher relies on it.
            event: Table::Static(&[
                ("error", Signal::Failed),
                ("response.completed", Signal::Done),
                ("response.failed", Signal::Failed),
                ("response.incomplete", Signal::Done),
            ]),
        }
    }

    /// Anthropic Messages: event `message_stop` is done; event `error` failed.
    pub const fn anthropic() -> Self {
        Self {
            data: Table::Static(&[]),
            event: Table::Static(&[("error", Signal::Failed), ("message_stop", Signal::Done)]),
        }
    }

    /// Adds a rule: an event whose data is exactly `data` is done.
    #[cfg(feature = "alloc")]
    #[must_use]
    pub fn done_on_data(self, data: &str) -> Self {
        self.with_data(data, Signal::Done)
    }

    /// Adds a rule: an event named exactly `event` is done.
    #[cfg(feature = "alloc")]
    #[must_use]
    pub fn done_on_event(self, event: &str) -> Self {
        self.with_event(event, Signal::Done)
    }

    /// Adds a rule: an event whose data is exactly `data` failed.
    #[cfg(feature = "alloc")]
    #[must_use]
    pub fn failed_on_data(self, data: &str) -> Self {
        self.with_data(data, Signal::Failed)
    }

    /// Adds a rule: an event named exactly `event` failed.
    #[cfg(feature = "alloc")]
    #[must_use]
    pub fn failed_on_event(self, event: &str) -> Self {
        self.with_event(event, Signal::Failed)
    }

    #[cfg(feature = "alloc")]
    fn with_data(mut self, data: &str, signal: Signal) -> Self {
        self.data = self.data.with(data, signal);
        self
    }

    #[cfg(feature = "alloc")]
    fn with_event(mut self, event: &str, signal: Signal) -> Self {
        self.event = self.event.with(event, signal);
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
        self.data.iter().eq(other.data.iter()) && self.event.iter().eq(other.event.iter())
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
            .finish()
    }
}

/// Patterns sorted by their bytes, each at most once.
#[derive(Clone)]
enum Table {
    Static(&'static [(&'static str, Signal)]),
    #[cfg(feature = "alloc")]
    Shared(Arc<[(Box<str>, Signal)]>),
}

impl Table {
    fn len(&self) -> usize {
        match self {
            Self::Static(t) => t.len(),
            #[cfg(feature = "alloc")]
            Self::Shared(t) => t.len(),
        }
    }

    fn get(&self, i: usize) -> (&str, Signal) {
        match self {
            Self::Static(t) => t[i],
            #[cfg(feature = "alloc")]
            Self::Shared(t) => (&t[i].0, t[i].1),
        }
    }

    fn iter(&self) -> impl Iterator<Item = (&str, Signal)> {
        (0..self.len()).map(|i| self.get(i))
    }

    #[cfg(feature = "alloc")]
    fn with(self, pattern: &str, signal: Signal) -> Self {
        let mut rules: Vec<(Box<str>, Signal)> = self.iter().map(|(p, s)| (p.into(), s)).collect();
        match rules.binary_search_by(|(p, _)| (**p).cmp(pattern)) {
            Ok(i) => rules[i].1 = rules[i].1.max(signal),
            Err(i) => rules.insert(i, (pattern.into(), signal)),
        }
        Self::Shared(rules.into())
    }

    /// The signal of the pattern equal to `bytes`, if any.
    fn lookup(&self, bytes: &[u8]) -> Option<Signal> {
        let mut m = Matcher::new(self);
        m.push(self, bytes);
        m.matched(self)
    }
}

/// Which patterns of a sorted [`Table`] still equal the bytes seen so far.
///
/// Those patterns are the contiguous range `lo..hi` (sorting groups a prefix's
/// extensions together), so two indices and a length are all the state there is, and
/// each byte narrows the range by binary search. Once the range is empty the rest of
/// the value is skipped.
#[derive(Debug, Clone, Copy)]
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

    fn matched(&self, table: &Table) -> Option<Signal> {
        if !self.is_alive() {
            return None;
        }
        let (pattern, signal) = table.get(self.lo);
        (pattern.len() == self.len).then_some(signal)
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
#[derive(Clone)]
pub struct SseScanner {
    rules: SseRules,
    /// The signal of an event without an `event` field (a `message`).
    message: Option<Signal>,
    /// How many bytes of the BOM have been seen at the start; past the start, 3.
    bom: u8,
    /// The last byte was a CR: an LF right after it ends no second line.
    cr: bool,
    line: Line,
    /// The field name so far: a longer one is no field a rule reads.
    name: [u8; 5],
    name_len: u8,
    /// The current event has at least one `data` field.
    has_data: bool,
    data: Matcher,
    event: Matcher,
}

impl SseScanner {
    /// A scanner at the start of a stream.
    pub fn new(rules: SseRules) -> Self {
        Self {
            message: rules.event.lookup(b"message"),
            bom: 0,
            cr: false,
            line: Line::Start,
            name: [0; 5],
            name_len: 0,
            has_data: false,
            data: Matcher::new(&rules.data),
            event: Matcher::new(&rules.event),
            rules,
        }
    }

    /// The rules this scanner applies.
    pub fn rules(&self) -> &SseRules {
        &self.rules
    }

    /// Scans the next chunk of the stream. Returns the strongest signal (`Failed` over
    /// `Done`) of the events this chunk dispatched, or `None`.
    #[inline]
    pub fn feed(&mut self, mut bytes: &[u8]) -> Option<Signal> {
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

    /// The field name is complete: classify it and open its value. Returns the field
    /// if its value can still match a rule.
    fn start_field(&mut self) -> Option<Field> {
        let (field, matcher) = match (self.name_len, self.name) {
            (4, [b'd', b'a', b't', b'a', _]) => {
                if self.has_data {
                    self.data.push(&self.rules.data, b"\n");
                }
                self.has_data = true;
                (Field::Data, &self.data)
            }
            (5, [b'e', b'v', b'e', b'n', b't']) => {
                self.event = Matcher::new(&self.rules.event);
                (Field::Event, &self.event)
            }
            _ => return None,
        };
        matcher.is_alive().then_some(field)
    }

    fn end_line(&mut self) -> Option<Signal> {
        let line = core::mem::replace(&mut self.line, Line::Start);
        match line {
            Line::Start => self.dispatch(),
            Line::Name => {
                self.start_field();
                None
            }
            Line::Skip | Line::ValueStart(_) | Line::Value(_) => None,
        }
    }

    fn dispatch(&mut self) -> Option<Signal> {
        let signal = if self.has_data {
            let event = if self.event.len == 0 {
                self.message
            } else {
                self.event.matched(&self.rules.event)
            };
            self.data.matched(&self.rules.data).max(event)
        } else {
            None
        };
        self.has_data = false;
        self.data = Matcher::new(&self.rules.data);
        self.event = Matcher::new(&self.rules.event);
        signal
    }
}

impl fmt::Debug for SseScanner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SseScanner")
            .field("rules", &self.rules)
            .field("line", &self.line)
            .field("has_data", &self.has_data)
            .finish_non_exhaustive()
    }
}

/// The index of the first CR or LF, or the length.
fn line_end(bytes: &[u8]) -> usize {
    memchr::memchr2(b'\r', b'\n', bytes).unwrap_or(bytes.len())
}
