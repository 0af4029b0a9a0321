//! In-band completion for the AWS event stream: Amazon Bedrock's ConverseStream.
//!
//! Bedrock streams `application/vnd.amazon.eventstream`: binary frames, each
//!
//! ```text
//! total length (u32 BE) | headers length (u32 BE) | CRC32 of those 8 bytes (u32 BE)
//! headers | payload | CRC32 of everything before it (u32 BE)
//! ```
//!
//! where a header is a name (a length byte, then the name), a type byte and a value
//! (strings: a u16 BE length, then the bytes). The [`EventStreamScanner`] reads the
//! raw bytes in whatever chunks the network hands over and judges each frame when
//! its last byte (the message CRC) comes:
//!
//! * `:message-type` `event` with `:event-type` `messageStop` is **done**;
//!   `messageStart` is preamble (not progress before the first progress frame);
//!   every other event (`contentBlockDelta`, `contentBlockStart`, `metadata`, ...)
//!   is progress;
//! * `:message-type` `exception` (`:exception-type` `modelStreamErrorException`,
//!   `throttlingException`, `internalServerException`,
//!   `serviceUnavailableException`, ...) or `error` **failed**;
//! * a **CRC mismatch** (prelude or message) or an **impossible length** (a frame
//!   shorter than its prelude and CRCs, headers longer than the frame, a frame over
//!   16 MiB or headers over 128 KiB, the limits of the format, or a header that runs
//!   past the headers' end or has an unknown type) **failed**: the worker sent
//!   garbage. The scanner reads nothing after it, as no frame boundary can be
//!   trusted any more;
//! * [`EventStreamRules::bedrock`] reads the **token usage**
//!   ([`EventStreamScanner::usage`], and so
//!   [`Outcome::usage`](crate::Outcome::usage)) of the `metadata` event that follows
//!   `messageStop`: its JSON payload's `usage.inputTokens` (input) and
//!   `usage.outputTokens` (output), once the frame is complete and its CRC right,
//!   whatever the verdict (the last value reported wins). It is the SSE scanner's
//!   walk (see [`sse`](crate::sse#usage) for what is a count), run on that payload
//!   as it passes, never stored; a `metadata` frame cut short reports nothing;
//! * [`EventStreamRules::bedrock`] **requires `messageStop`**, and a stream that ends
//!   inside a frame was cut short whatever the rules
//!   ([`EventStreamScanner::is_inside_frame`]): either is a
//!   [`Failure`](crate::Verdict::Failure) with cause
//!   [`Truncated`](crate::Cause::Truncated) when tracked (before any done frame).
//!
//! The scanner never buffers a frame: it keeps the 12 bytes of a prelude or the 4 of
//! a CRC while they arrive, computes the CRC32 as the bytes pass (a table-driven
//! CRC-32/ISO-HDLC, as zlib's, in safe code), and walks the headers with a fixed
//! state (names and values are compared as they pass, never stored). For every split
//! of an input into chunks it reports the same signals and progress as for the whole
//! input at once.
//!
//! ```
//! use sluice::eventstream::{EventStreamRules, EventStreamScanner};
//! use sluice::sse::Signal;
//!
//! let mut scanner = EventStreamScanner::new(EventStreamRules::bedrock());
//! // Text where a prelude should be: the prelude's CRC cannot match.
//! assert_eq!(scanner.feed(b"HTTP/1.1 200 OK\r\n"), Some(Signal::Failed));
//! assert!(scanner.is_failed());
//! ```

use core::fmt;

use crate::Usage;
use crate::sse::Signal;
use crate::sse::usage::{BEDROCK, ObjectUsage, UsageRules};

/// The longest frame the format allows (16 MiB).
const MAX_FRAME: u32 = 16 * 1024 * 1024;
/// The longest headers the format allows (128 KiB).
const MAX_HEADERS: u32 = 128 * 1024;
/// A prelude (12 bytes) and the message CRC (4).
const OVERHEAD: u32 = 16;

/// Which frames are done or preamble, and whether the stream must end with a done
/// frame. Costs nothing to make or copy.
///
/// ```
/// use sluice::eventstream::EventStreamRules;
///
/// assert!(EventStreamRules::bedrock().requires_done());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventStreamRules {
    /// The `:event-type` of the done frame.
    done: &'static str,
    /// The `:event-type` of the preamble frame.
    preamble: &'static str,
    /// The `:event-type` of the frame whose payload reports token usage, and where.
    usage: Option<(&'static str, &'static UsageRules)>,
    require_done: bool,
}

impl EventStreamRules {
    /// Amazon Bedrock ConverseStream (and InvokeModelWithResponseStream's framing):
    /// `messageStop` is done, `messageStart` is preamble, exceptions and errors
    /// failed. Requires `messageStop`. Reads the usage of the `metadata` event
    /// (`usage.inputTokens`, `usage.outputTokens`).
    pub const fn bedrock() -> Self {
        Self {
            done: "messageStop",
            preamble: "messageStart",
            usage: Some(("metadata", &BEDROCK)),
            require_done: true,
        }
    }

    /// The `:event-type`s the scanner tells apart: done, preamble, usage.
    fn event_types(&self) -> [&'static [u8]; 3] {
        let usage = match self.usage {
            Some((event, _)) => event.as_bytes(),
            None => b"",
        };
        [self.done.as_bytes(), self.preamble.as_bytes(), usage]
    }

    /// Whether a stream that ends before its done frame was cut short. On for
    /// [`bedrock`](Self::bedrock). A stream that ends inside a frame was cut short
    /// either way.
    pub const fn requires_done(&self) -> bool {
        self.require_done
    }

    /// Sets whether the stream must end with a done frame.
    #[must_use]
    pub const fn require_done(mut self, required: bool) -> Self {
        self.require_done = required;
        self
    }
}

impl Default for EventStreamRules {
    fn default() -> Self {
        Self::bedrock()
    }
}

/// Which part of a frame the scanner is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// The 12 bytes of the prelude, `got` of them in `buf`.
    Prelude,
    /// The headers, `left` bytes of them to come.
    Headers,
    /// The payload, `left` bytes of it to come.
    Payload,
    /// The message CRC, `got` of its 4 bytes in `buf`.
    Crc,
    /// After garbage: nothing more is read.
    Failed,
}

/// The headers this scanner reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Name {
    MessageType,
    EventType,
    /// Any other: its value is skipped.
    Other,
}

const NAMES: [&[u8]; 2] = [b":message-type", b":event-type"];
const MESSAGE_TYPES: [&[u8]; 3] = [b"event", b"exception", b"error"];

/// Where in a header the walk stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Header {
    /// Before a header: its name's length byte.
    NameLen,
    /// Inside the name: `left` bytes to come, `pos` seen; `mask` the names of
    /// [`NAMES`] it may still be.
    Name { left: u8, pos: u8, mask: u8 },
    /// The type byte of a header named `name`.
    Type(Name),
    /// A fixed-size value: `left` bytes to skip.
    Skip(u16),
    /// The first byte of a string's (or byte array's) length.
    Len1 { name: Name, string: bool },
    /// Its second byte; `hi` is the first.
    Len2 { name: Name, string: bool, hi: u8 },
    /// Inside a string value of `name`: `left` bytes to come, `pos` seen, `mask` the
    /// values it may still be.
    Value {
        name: Name,
        left: u16,
        pos: u16,
        mask: u8,
    },
}

/// What the frame's `:message-type` said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Unknown,
    Event,
    Failure,
}

/// What the frame's `:event-type` said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EventType {
    Other,
    Done,
    Preamble,
    /// Its payload reports token usage.
    Usage,
}

/// Reads an AWS event stream's bytes in any chunks and reports [`Signal`]s; see the
/// [module docs](self).
///
/// Feed every chunk, in order, to [`feed`](Self::feed); it returns the strongest
/// signal (`Failed` over `Done`) among the frames that chunk completed, or `Failed`
/// at the first byte that cannot be a frame's. [`progress`](Self::progress) counts
/// the frames that are not preamble.
///
/// ```
/// use sluice::eventstream::{EventStreamRules, EventStreamScanner};
///
/// let mut scanner = EventStreamScanner::new(EventStreamRules::bedrock());
/// assert_eq!(scanner.feed(&[0, 0, 0, 42, 0, 0]), None); // the start of a prelude
/// assert!(scanner.is_inside_frame()); // an end here would be a cut
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct EventStreamScanner {
    rules: EventStreamRules,
    part: Part,
    /// The prelude or the message CRC as it arrives.
    buf: [u8; 12],
    got: u8,
    /// Bytes left in the headers or the payload.
    left: u32,
    /// The payload's length, known from the prelude.
    payload: u32,
    /// The CRC32 register over the frame so far (not yet inverted at the end).
    crc: u32,
    header: Header,
    kind: Kind,
    event: EventType,
    progress: u64,
    /// The usage walk of the payload, in a frame that reports usage.
    payload_usage: Option<ObjectUsage>,
    /// The token usage reported so far.
    usage: Usage,
}

impl EventStreamScanner {
    /// A scanner at the start of a stream.
    pub const fn new(rules: EventStreamRules) -> Self {
        Self {
            rules,
            part: Part::Prelude,
            buf: [0; 12],
            got: 0,
            left: 0,
            payload: 0,
            crc: !0,
            header: Header::NameLen,
            kind: Kind::Unknown,
            event: EventType::Other,
            progress: 0,
            payload_usage: None,
            usage: Usage {
                input_tokens: None,
                output_tokens: None,
            },
        }
    }

    /// The rules this scanner applies.
    pub const fn rules(&self) -> &EventStreamRules {
        &self.rules
    }

    /// How many frames were complete so far that are progress: all but the preamble
    /// before the first progress frame.
    pub const fn progress(&self) -> u64 {
        self.progress
    }

    /// The token usage the stream reported so far, as the rules read it (see the
    /// [module docs](self)): each count the last value reported, `None` until one is.
    pub const fn usage(&self) -> Usage {
        self.usage
    }

    /// Whether the bytes so far end inside a frame: an end of the stream here is a
    /// cut.
    pub fn is_inside_frame(&self) -> bool {
        match self.part {
            Part::Prelude => self.got > 0,
            Part::Failed => false,
            _ => true,
        }
    }

    /// Whether the stream was garbage (a CRC mismatch, an impossible length): the
    /// scanner reported [`Signal::Failed`] and reads nothing more.
    pub fn is_failed(&self) -> bool {
        self.part == Part::Failed
    }

    /// Scans the next chunk of the stream. Returns the strongest signal (`Failed` over
    /// `Done`) of the frames this chunk completed, `Failed` if it holds garbage, or
    /// `None`.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Option<Signal> {
        let mut signal = None;
        while !bytes.is_empty() {
            let used = match self.part {
                Part::Failed => return signal,
                Part::Prelude => {
                    let n = self.collect(bytes, 12);
                    self.crc = crc32_update(self.crc, &bytes[..n]);
                    if self.got == 12 {
                        if let Err(failed) = self.prelude() {
                            return signal.max(Some(failed));
                        }
                    }
                    n
                }
                Part::Headers => {
                    let n = bytes.len().min(self.left as usize);
                    for &b in &bytes[..n] {
                        if self.header_byte(b).is_err() {
                            return signal.max(Some(self.fail()));
                        }
                    }
                    self.crc = crc32_update(self.crc, &bytes[..n]);
                    self.left -= n as u32;
                    if self.left == 0 {
                        if self.header != Header::NameLen {
                            // A header runs past the headers' end.
                            return signal.max(Some(self.fail()));
                        }
                        self.start_payload();
                    }
                    n
                }
                Part::Payload => {
                    let n = bytes.len().min(self.left as usize);
                    self.crc = crc32_update(self.crc, &bytes[..n]);
                    if let Some(walk) = &mut self.payload_usage {
                        walk.feed(&bytes[..n]);
                    }
                    self.left -= n as u32;
                    if self.left == 0 {
                        self.part = Part::Crc;
                    }
                    n
                }
                Part::Crc => {
                    let n = self.collect(bytes, 4);
                    if self.got == 4 {
                        let expected = u32::from_be_bytes([
                            self.buf[0],
                            self.buf[1],
                            self.buf[2],
                            self.buf[3],
                        ]);
                        if expected != !self.crc {
                            return signal.max(Some(self.fail()));
                        }
                        signal = signal.max(self.end_frame());
                    }
                    n
                }
            };
            bytes = &bytes[used..];
        }
        signal
    }

    /// Copies bytes into `buf` until it holds `want`; returns how many it took.
    fn collect(&mut self, bytes: &[u8], want: u8) -> usize {
        let got = usize::from(self.got);
        let n = bytes.len().min(usize::from(want) - got);
        self.buf[got..got + n].copy_from_slice(&bytes[..n]);
        self.got += n as u8;
        n
    }

    /// The prelude is complete: check its CRC and lengths.
    fn prelude(&mut self) -> Result<(), Signal> {
        let word = |i: usize| {
            u32::from_be_bytes([
                self.buf[i],
                self.buf[i + 1],
                self.buf[i + 2],
                self.buf[i + 3],
            ])
        };
        let (total, headers, crc) = (word(0), word(4), word(8));
        if crc32(&self.buf[..8]) != crc
            || !(OVERHEAD..=MAX_FRAME).contains(&total)
            || headers > MAX_HEADERS
            || headers > total - OVERHEAD
        {
            return Err(self.fail());
        }
        self.got = 0;
        self.payload = total - OVERHEAD - headers;
        self.left = headers;
        self.header = Header::NameLen;
        if headers == 0 {
            self.start_payload();
        } else {
            self.part = Part::Headers;
        }
        Ok(())
    }

    fn start_payload(&mut self) {
        self.payload_usage = match (self.kind, self.event, self.rules.usage) {
            (Kind::Event, EventType::Usage, Some((_, rules))) => Some(ObjectUsage::new(rules)),
            _ => None,
        };
        self.left = self.payload;
        self.part = if self.payload == 0 {
            Part::Crc
        } else {
            Part::Payload
        };
    }

    /// One byte of the headers; `Err` for a header that cannot be.
    fn header_byte(&mut self, b: u8) -> Result<(), ()> {
        self.header = match self.header {
            Header::NameLen if b == 0 => return Err(()),
            Header::NameLen => Header::Name {
                left: b,
                pos: 0,
                mask: 0b11,
            },
            Header::Name { left, pos, mask } => {
                let mask = narrow(&NAMES, mask, usize::from(pos), b);
                if left > 1 {
                    Header::Name {
                        left: left - 1,
                        pos: pos + 1,
                        mask,
                    }
                } else {
                    let name = match full(&NAMES, mask, usize::from(pos) + 1) {
                        Some(0) => Name::MessageType,
                        Some(_) => Name::EventType,
                        None => Name::Other,
                    };
                    Header::Type(name)
                }
            }
            Header::Type(name) => match b {
                0 | 1 => Header::NameLen,
                2 => Header::Skip(1),
                3 => Header::Skip(2),
                4 => Header::Skip(4),
                5 | 8 => Header::Skip(8),
                9 => Header::Skip(16),
                6 | 7 => Header::Len1 {
                    name,
                    string: b == 7,
                },
                _ => return Err(()),
            },
            Header::Skip(left) if left > 1 => Header::Skip(left - 1),
            Header::Skip(_) => Header::NameLen,
            Header::Len1 { name, string } => Header::Len2 {
                name,
                string,
                hi: b,
            },
            Header::Len2 { name, string, hi } => {
                let len = u16::from_be_bytes([hi, b]);
                let name = if string { name } else { Name::Other };
                if len == 0 {
                    self.header_value(name, 0, 0xFF);
                    Header::NameLen
                } else {
                    Header::Value {
                        name,
                        left: len,
                        pos: 0,
                        mask: 0xFF,
                    }
                }
            }
            Header::Value {
                name,
                left,
                pos,
                mask,
            } => {
                let mask = match name {
                    Name::MessageType => narrow(&MESSAGE_TYPES, mask, usize::from(pos), b),
                    Name::EventType => narrow(&self.rules.event_types(), mask, usize::from(pos), b),
                    Name::Other => 0,
                };
                if left > 1 {
                    Header::Value {
                        name,
                        left: left - 1,
                        pos: pos + 1,
                        mask,
                    }
                } else {
                    self.header_value(name, pos + 1, mask);
                    Header::NameLen
                }
            }
        };
        Ok(())
    }

    /// A string value of `len` bytes is complete; `mask` the candidates it may be.
    fn header_value(&mut self, name: Name, len: u16, mask: u8) {
        let len = usize::from(len);
        match name {
            Name::MessageType => {
                self.kind = match full(&MESSAGE_TYPES, mask, len) {
                    Some(0) => Kind::Event,
                    Some(_) => Kind::Failure,
                    None => Kind::Unknown,
                };
            }
            Name::EventType => {
                self.event = match full(&self.rules.event_types(), mask, len) {
                    Some(0) => EventType::Done,
                    Some(1) => EventType::Preamble,
                    Some(_) if self.rules.usage.is_some() => EventType::Usage,
                    _ => EventType::Other,
                };
            }
            Name::Other => {}
        }
    }

    /// The frame is complete and its CRC right: what it says.
    fn end_frame(&mut self) -> Option<Signal> {
        let signal = match (self.kind, self.event) {
            (Kind::Failure, _) => Some(Signal::Failed),
            (Kind::Event, EventType::Done) => Some(Signal::Done),
            _ => None,
        };
        let preamble = self.kind == Kind::Event && self.event == EventType::Preamble;
        if !(preamble && self.progress == 0) {
            self.progress += 1;
        }
        if let Some(counts) = self.payload_usage.take().and_then(|walk| walk.usage()) {
            self.usage = self.usage.updated(counts);
        }
        self.part = Part::Prelude;
        self.got = 0;
        self.crc = !0;
        self.kind = Kind::Unknown;
        self.event = EventType::Other;
        signal
    }

    /// Garbage: nothing more is read.
    fn fail(&mut self) -> Signal {
        self.part = Part::Failed;
        Signal::Failed
    }
}

impl fmt::Debug for EventStreamScanner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventStreamScanner")
            .field("rules", &self.rules)
            .field("part", &self.part)
            .field("progress", &self.progress)
            .field("usage", &self.usage)
            .finish_non_exhaustive()
    }
}

/// The candidates of `mask` whose byte at `pos` is `b`.
fn narrow(names: &[&[u8]], mask: u8, pos: usize, b: u8) -> u8 {
    let mut out = 0;
    for (i, name) in names.iter().enumerate() {
        if mask & (1 << i) != 0 && name.get(pos) == Some(&b) {
            out |= 1 << i;
        }
    }
    out
}

/// The candidate of `mask` that is exactly `len` bytes long, if any.
fn full(names: &[&[u8]], mask: u8, len: usize) -> Option<usize> {
    (0..names.len()).find(|&i| mask & (1 << i) != 0 && names[i].len() == len)
}

/// The CRC-32/ISO-HDLC table (reflected polynomial 0xEDB88320), built at compile time.
const CRC_TABLE: [u32; 256] = {
    let mut table = [0; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// Runs the CRC register over `bytes` (start at `!0`, invert at the end).
fn crc32_update(mut crc: u32, bytes: &[u8]) -> u32 {
    for &b in bytes {
        crc = CRC_TABLE[((crc ^ u32::from(b)) & 0xFF) as usize] ^ (crc >> 8);
    }
    crc
}

/// The CRC32 of `bytes`, as zlib's `crc32`.
pub(crate) fn crc32(bytes: &[u8]) -> u32 {
    !crc32_update(!0, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn names_narrow_to_one() {
        let mut mask = 0b111;
        for (pos, &b) in b"error".iter().enumerate() {
            mask = narrow(&MESSAGE_TYPES, mask, pos, b);
        }
        assert_eq!(full(&MESSAGE_TYPES, mask, 5), Some(2));
        assert_eq!(full(&MESSAGE_TYPES, mask, 4), None);
    }

    extern crate std;
    use std::vec::Vec;

    /// A frame with `:message-type` and `:event-type` string headers and `payload`.
    fn frame(message_type: &str, event_type: &str, payload: &[u8]) -> Vec<u8> {
        let mut head = Vec::new();
        for (name, value) in [(":message-type", message_type), (":event-type", event_type)] {
            head.push(name.len() as u8);
            head.extend_from_slice(name.as_bytes());
            head.push(7);
            head.extend_from_slice(&(value.len() as u16).to_be_bytes());
            head.extend_from_slice(value.as_bytes());
        }
        let total = (16 + head.len() + payload.len()) as u32;
        let mut out = Vec::new();
        out.extend_from_slice(&total.to_be_bytes());
        out.extend_from_slice(&(head.len() as u32).to_be_bytes());
        out.extend_from_slice(&crc32(&out.clone()).to_be_bytes());
        out.extend_from_slice(&head);
        out.extend_from_slice(payload);
        out.extend_from_slice(&crc32(&out.clone()).to_be_bytes());
        out
    }

    /// The usage read from `data`, the same whole, in every 2-way split and byte by
    /// byte.
    fn usage(rules: EventStreamRules, data: &[u8]) -> Usage {
        let mut whole = EventStreamScanner::new(rules);
        whole.feed(data);
        for at in 0..=data.len() {
            let mut split = EventStreamScanner::new(rules);
            split.feed(&data[..at]);
            split.feed(&data[at..]);
            assert_eq!(split.usage(), whole.usage(), "at {at}");
        }
        let mut bytewise = EventStreamScanner::new(rules);
        for b in data {
            bytewise.feed(core::slice::from_ref(b));
        }
        assert_eq!(bytewise.usage(), whole.usage());
        whole.usage()
    }

    #[test]
    fn metadata_usage() {
        let rules = EventStreamRules::bedrock();
        let payload = br#"{"metrics":{"latencyMs":512},"p":"abc","usage":{"inputTokens":14,"outputTokens":6,"totalTokens":20}}"#;
        let stop = frame("event", "messageStop", br#"{"stopReason":"end_turn"}"#);
        let metadata = frame("event", "metadata", payload);
        let data = [stop.clone(), metadata.clone()].concat();
        assert_eq!(usage(rules, &data), Usage::new(Some(14), Some(6)));
        // Cut inside the metadata frame, or its CRC wrong: not reported.
        assert_eq!(usage(rules, &data[..data.len() - 1]), Usage::default());
        let mut corrupt = data.clone();
        *corrupt.last_mut().expect("a frame") ^= 1;
        assert_eq!(usage(rules, &corrupt), Usage::default());
        // Another event, an exception, or a payload that is not one object: not read.
        for (kind, event, payload) in [
            ("event", "contentBlockDelta", &payload[..]),
            ("exception", "metadata", &payload[..]),
            ("event", "metadatax", &payload[..]),
            ("event", "metadata", br#"{"usage":{"inputTokens":14}}x"#),
            (
                "event",
                "metadata",
                br#"{"x":{"usage":{"inputTokens":14}}}"#,
            ),
        ] {
            let data = frame(kind, event, payload);
            assert_eq!(usage(rules, &data), Usage::default(), "{kind} {event}");
        }
        // The last value reported wins.
        let later = frame("event", "metadata", br#"{"usage":{"outputTokens":7}}"#);
        let data = [metadata, later].concat();
        assert_eq!(usage(rules, &data), Usage::new(Some(14), Some(7)));
    }
}
