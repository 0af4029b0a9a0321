//! In-band error objects: a constant-memory structural walk of an event's data.
//!
//! OpenAI-compatible engines report a failure mid-stream as an ordinary event whose
//! data is a JSON object with a top-level `error` member (vLLM, SGLang, llama.cpp,
//! TGI, OpenRouter, where it may follow other members), or with `"object": "error"`
//! (older vLLM). [`ErrorObject`] tells such data apart from a chunk that merely
//! mentions an error, without buffering it and without parsing it.
//!
//! # The rule
//!
//! It is a walk, not a validator. The data is an error object when it starts with `{`
//! (after whitespace), the object closes with only whitespace after it, and a string
//! that opens at depth 1 (directly in the top-level object), reads exactly `error`,
//! and is followed by a colon, has a value other than `null`; or one that reads
//! `object` and is followed by a colon and the string `"error"`. Brackets of either
//! kind are counted, not matched; a backslash escapes the byte after it; a key or
//! value spelled with escapes (`"\u0065rror"`) is not recognised; the line feed that
//! joins two `data` lines is whitespace, but inside a string the data is not JSON.
//!
//! # Usage
//!
//! The same walk finds the top-level members a dialect reports token usage under
//! (its roots: `usage`, `message`, `response`, see [`usage`](super::usage)): a
//! depth-1 key that reads a root's name, followed by a colon, hands its value to the
//! usage walk ([`Walk::Usage`]), byte by byte, and the walk goes on in `Skim` after
//! the value. So a root is one more candidate for `skim` to stop at, and the counts
//! (kept in [`ErrorObject::usage`] once the object closed) cost no second pass over
//! the data.
//!
//! # The walk
//!
//! The state is a few words whatever the data's length: where the walk stands
//! ([`Walk`]), the depth (a `u64` count of open brackets), whether it is inside a
//! string, whether the last byte was an unescaped backslash, and whether an `error`
//! member was found. No byte is kept.
//!
//! [`ErrorObject::step`] walks one byte and is the definition. Nearly every byte is
//! in [`Walk::Skim`], where only the depth and the string state change, so
//! [`ErrorObject::skim`] fast-forwards that state eight bytes at a time (SWAR on a
//! `u64`, no `unsafe`): exact per-byte masks of the quotes and brackets (`| 0x20`
//! maps `[`/`]` to `{`/`}`), a prefix XOR of the quotes for the bytes inside
//! strings, and counts of the brackets outside them for the depth (a multiply, not
//! `popcnt`, which baseline x86-64 lacks). A word whose depth may reach 1 has its
//! brackets walked in order. `skim` stops, with the state exactly as `step` would
//! leave it before that byte, where `step` must decide:
//!
//! * a quote that opens a string at depth 1 whose bytes, as far as the input shows
//!   so far, may spell `error"` or `object"` (a candidate: `"error"` is needed to
//!   fail, as a key or as the value of `object`), or a usage root and its quote. `step` walks the key through
//!   [`Walk::Key`], [`Walk::Colon`], [`Walk::Value`], [`Walk::Null`] and
//!   [`Walk::ObjectValue`], which carry a candidate across chunks and `data` lines,
//!   then hands back to `Skim`. Any other string `step` would walk exactly as `skim`
//!   does, so `skim` does not stop for it;
//! * the bracket that closes the top-level object (then [`Walk::Closed`]);
//! * a word with a backslash (`step` walks its eight bytes; escapes are rare).
//!
//! So where the input is split changes nothing: after each chunk the state is the
//! one `step` leaves after the same bytes one at a time (the unit tests check this
//! on every split). The time is linear: `skim` reads each byte once, `step` at most
//! twice (a byte that ends a key or value state is handed back to `Skim`).

use super::usage::{Root, Step, UsageRules, Value};
use crate::Usage;

/// The bytes of a top-level key or value that can decide.
const ERROR: &[u8] = b"error";
const OBJECT: &[u8] = b"object";
const NULL: &[u8] = b"null";

/// Which top-level member a value belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Member {
    /// `error`: any value but `null` makes the data an error.
    Error,
    /// `object`: the value `"error"` makes the data an error.
    Object,
    /// A root of the usage rules (its index): its value holds usage.
    Root(u8),
}

/// The top-level keys the walk stops at: bit 0 `error`, bit 1 `object` (while
/// error members are looked for), bit `2 + i` the usage rules' root `i`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Names {
    errors: bool,
    roots: &'static [Root],
}

impl Names {
    /// The bits of every name looked for.
    fn mask(self) -> u8 {
        let roots = self.roots.len().min(6);
        (if self.errors { 0b11 } else { 0 }) | (((1u8 << roots) - 1) << 2)
    }

    /// Name `i`.
    fn get(self, i: usize) -> Option<&'static [u8]> {
        match i {
            0 => Some(ERROR),
            1 => Some(OBJECT),
            _ => self.roots.get(i - 2).map(|r| r.key),
        }
    }

    /// The names among `mask` for which `test(name)`.
    fn matching(self, mask: u8, test: impl Fn(&[u8]) -> bool) -> u8 {
        let mut out = 0;
        for i in 0..8 {
            if mask & (1 << i) != 0 && self.get(i).is_some_and(&test) {
                out |= 1 << i;
            }
        }
        out
    }

    /// Whether `after`, the bytes after a quote as far as the input shows, may
    /// spell a name looked for and its closing quote.
    fn may_be(self, after: &[u8]) -> bool {
        let n = after.len();
        let spells = |name: &[u8]| match after.get(name.len()) {
            // The quote may follow in a later chunk.
            None => name.starts_with(after),
            Some(&quote) => quote == b'"' && after.starts_with(name),
        };
        n == 0 || self.matching(self.mask(), spells) != 0
    }
}

/// Where the walk stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Walk {
    /// Nothing but whitespace yet: the data must open an object.
    Start,
    /// Not an object, or something after it: never an error object.
    Dead,
    /// Inside the object: only the depth and the string state change.
    Skim,
    /// Inside a string opened at depth 1 whose `len` bytes so far begin the names
    /// in `mask` (see [`Names`]).
    Key { mask: u8, len: u8 },
    /// After a depth-1 string naming `member`, before its colon.
    Colon(Member),
    /// After the colon, before the value.
    Value(Member),
    /// Inside a `null` (so far) that is the value of `error`.
    Null(u8),
    /// Inside the string value of `object`, `len` bytes equal to `ERROR` so far.
    ObjectValue(u8),
    /// Inside the value of a usage root (see [`usage`](super::usage)).
    Usage(Value),
    /// After the top-level object closed: only whitespace may follow.
    Closed,
}

/// The error-object walk over one event's data; see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ErrorObject {
    /// Top-level `error` members are looked for.
    errors: bool,
    /// Where usage is read, if it is.
    usage: Option<&'static UsageRules>,
    /// The counts read in this data so far.
    counts: Usage,
    walk: Walk,
    /// Open objects and arrays: 1 inside the top-level object.
    depth: u64,
    /// In `Skim`: inside a string.
    in_str: bool,
    /// In `Skim`: the last byte was a backslash that escapes the next one.
    escape: bool,
    /// A top-level member said "error".
    found: bool,
}

impl ErrorObject {
    /// A walk at the start of an event's data, looking for top-level `error`
    /// members if `errors`, reading usage where `usage` says.
    pub(super) const fn new(errors: bool, usage: Option<&'static UsageRules>) -> Self {
        Self {
            errors,
            usage,
            counts: Usage {
                input_tokens: None,
                output_tokens: None,
            },
            walk: Walk::Start,
            depth: 0,
            in_str: false,
            escape: false,
            found: false,
        }
    }

    /// The same walk at the start of the next event's data.
    pub(super) fn reset(&mut self) {
        *self = Self::new(self.errors, self.usage);
    }

    /// Whether the data so far is an error object, complete.
    pub(super) fn is_error(&self) -> bool {
        self.found && matches!(self.walk, Walk::Closed)
    }

    /// Whether the data can no longer be an error object, nor report usage.
    pub(super) fn is_dead(&self) -> bool {
        matches!(self.walk, Walk::Dead)
    }

    /// Whether nothing but whitespace was walked yet.
    pub(super) fn is_fresh(&self) -> bool {
        matches!(self.walk, Walk::Start)
    }

    /// Ends the walk: the data is no error object and reports no usage (the caller
    /// knows the rest of the data cannot make it one).
    pub(super) fn give_up(&mut self) {
        self.walk = Walk::Dead;
    }

    /// The usage counts the data reported, once it is a complete object.
    pub(super) fn usage(&self) -> Option<Usage> {
        matches!(self.walk, Walk::Closed).then_some(self.counts)
    }

    /// The names the walk stops at, now.
    fn names(&self) -> Names {
        Names {
            errors: self.errors && !self.found,
            roots: match self.usage {
                Some(rules) => rules.roots,
                None => &[],
            },
        }
    }

    /// The line feed that joins two `data` lines: whitespace between tokens, but a
    /// control character inside a string (invalid JSON).
    pub(super) fn line_feed(&mut self) {
        match self.walk {
            Walk::Skim if self.in_str => self.walk = Walk::Dead,
            Walk::Key { .. } | Walk::ObjectValue(_) => self.walk = Walk::Dead,
            Walk::Usage(mut value) => match value.line_feed(&mut self.counts) {
                None => self.walk = Walk::Dead,
                Some(Step::More) => self.walk = Walk::Usage(value),
                Some(Step::Done) => self.reenter(b'\n'),
            },
            _ => self.step(b'\n'),
        }
    }

    /// Walks more of the data (a value without its line end).
    pub(super) fn feed(&mut self, bytes: &[u8]) {
        let mut at = 0;
        while at < bytes.len() {
            match self.walk {
                Walk::Dead => return,
                Walk::Skim if !self.escape => {
                    let (skipped, hard) = self.skim(&bytes[at..]);
                    at += skipped;
                    let rest = &bytes[at..];
                    let errors = self.names().errors;
                    if hard == 1 && errors && rest.starts_with(b"\"object\"") {
                        // What `step` would walk to, at once.
                        self.walk = Walk::Colon(Member::Object);
                        at += OBJECT.len() + 2;
                    } else if hard == 1 && errors && rest.starts_with(b"\"error\"") {
                        self.walk = Walk::Colon(Member::Error);
                        at += ERROR.len() + 2;
                    } else {
                        for &b in &rest[..hard] {
                            self.step(b);
                        }
                        at += hard;
                    }
                }
                _ => {
                    self.step(bytes[at]);
                    at += 1;
                }
            }
        }
    }

    /// Moves the `Skim` state (no escape pending) over `bytes`, a word at a time.
    /// Returns how many bytes it walked, and how many after those `step` must walk:
    /// none at the end, one at a byte that may leave `Skim`, a word with a backslash.
    fn skim(&mut self, bytes: &[u8]) -> (usize, usize) {
        let mut skim = Skim {
            depth: self.depth,
            carry: if self.in_str { HIGH } else { 0 },
            names: self.names(),
        };
        let mut rest = bytes;
        let mut at = 0;
        let mut stop = None;
        while let Some((word, next)) = rest.split_first_chunk::<8>() {
            if let Some(s) = skim.word(u64::from_le_bytes(*word), bytes, at) {
                stop = Some(s);
                break;
            }
            rest = next;
            at += 8;
        }
        let len = rest.len();
        if stop.is_none() && len > 0 {
            stop = skim.word(tail(bytes, len), bytes, at);
            if stop.is_none() {
                at += len;
            }
        }
        self.depth = skim.depth;
        self.in_str = skim.carry != 0;
        match stop {
            Some((i, hard)) => (at + i, hard),
            None => (at, 0),
        }
    }

    /// One byte; the definition of the walk (see the module docs).
    fn step(&mut self, b: u8) {
        let ws = matches!(b, b' ' | b'\t' | b'\n' | b'\r');
        if let Walk::Usage(mut value) = self.walk {
            match value.step(b, &mut self.counts) {
                Step::More => self.walk = Walk::Usage(value),
                Step::Done => self.reenter(b),
            }
            return;
        }
        self.walk = match self.walk {
            Walk::Start if ws => Walk::Start,
            Walk::Start if b == b'{' => {
                self.depth = 1;
                Walk::Skim
            }
            Walk::Skim => return self.skim_byte(b),
            Walk::Key { mask, len } => {
                let names = self.names();
                let at = usize::from(len);
                match b {
                    b'"' => match names.matching(mask, |name| name.len() == at) {
                        0 => Walk::Skim,
                        1 => Walk::Colon(Member::Error),
                        2 => Walk::Colon(Member::Object),
                        exact => Walk::Colon(Member::Root(exact.trailing_zeros() as u8 - 2)),
                    },
                    _ => match names.matching(mask, |name| name.get(at) == Some(&b)) {
                        0 => return self.in_string(b),
                        mask => Walk::Key {
                            mask,
                            len: len.saturating_add(1),
                        },
                    },
                }
            }
            Walk::Colon(member) if ws => Walk::Colon(member),
            Walk::Colon(Member::Root(i)) if b == b':' => {
                match self.usage.and_then(|rules| rules.roots.get(usize::from(i))) {
                    Some(root) => Walk::Usage(Value::new(root)),
                    None => Walk::Value(Member::Root(i)),
                }
            }
            Walk::Colon(member) if b == b':' => Walk::Value(member),
            Walk::Value(member) if ws => Walk::Value(member),
            Walk::Value(Member::Error) if b == b'n' => Walk::Null(1),
            Walk::Value(Member::Object) if b == b'"' => Walk::ObjectValue(0),
            Walk::Value(member) => {
                self.found |= member == Member::Error;
                return self.reenter(b);
            }
            Walk::Null(len) if usize::from(len) < NULL.len() => {
                if NULL[usize::from(len)] == b {
                    Walk::Null(len + 1)
                } else {
                    self.found = true; // not `null`: some other value
                    return self.reenter(b);
                }
            }
            Walk::Null(_) => {
                if !(ws || b == b',' || b == b'}') {
                    self.found = true; // `null` followed by more: not `null`
                }
                return self.reenter(b);
            }
            Walk::ObjectValue(len) => match b {
                b'"' => {
                    self.found |= usize::from(len) == ERROR.len();
                    Walk::Skim
                }
                _ if ERROR.get(usize::from(len)) == Some(&b) => Walk::ObjectValue(len + 1),
                _ => return self.in_string(b),
            },
            // A string that was not a key after all (`Colon`) is walked on as a value.
            Walk::Colon(_) => return self.reenter(b),
            Walk::Closed if ws => Walk::Closed,
            // Anything else is not the start or the end of an object.
            _ => Walk::Dead,
        };
    }

    /// Byte `b` in `Skim`.
    fn skim_byte(&mut self, b: u8) {
        if self.escape {
            self.escape = false;
            return;
        }
        match b {
            b'\\' => self.escape = true,
            b'"' if self.in_str => self.in_str = false,
            _ if self.in_str => {}
            b'"' if self.depth == 1 && self.names().mask() != 0 => {
                self.walk = Walk::Key {
                    mask: self.names().mask(),
                    len: 0,
                };
            }
            b'"' => self.in_str = true,
            b'{' | b'[' => self.depth += 1,
            b'}' | b']' => {
                self.depth -= 1;
                if self.depth == 0 {
                    self.walk = Walk::Closed;
                }
            }
            _ => {}
        }
    }

    /// Byte `b` of a depth-1 string that no longer matches: the rest of the string
    /// is skimmed.
    fn in_string(&mut self, b: u8) {
        self.walk = Walk::Skim;
        self.in_str = true;
        self.skim_byte(b);
    }

    /// Hands byte `b` (the first of a value, or the one after `null`) back to `Skim`,
    /// outside strings at depth 1.
    fn reenter(&mut self, b: u8) {
        self.walk = Walk::Skim;
        self.skim_byte(b);
    }

    /// Test only: walks `bytes` with `step` alone, never `skim`.
    #[cfg(test)]
    fn feed_bytewise(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.walk != Walk::Dead {
                self.step(b);
            }
        }
    }
}

/// The `Skim` state in registers, for [`ErrorObject::skim`].
struct Skim {
    depth: u64,
    /// Bits 7 set while inside a string at the end of the last word.
    carry: u64,
    /// The names whose candidates matter (none: no candidate does).
    names: Names,
}

impl Skim {
    /// Walks the word at `bytes[at..]` (its first eight bytes, zero-padded). Returns
    /// `None` if it walked the whole word, or where `step` must take over: the byte
    /// `i` of the word and how many bytes `step` must walk there.
    #[inline(always)]
    fn word(&mut self, word: u64, bytes: &[u8], at: usize) -> Option<(usize, usize)> {
        let bytes7 = Bytes7::new(word);
        if bytes7.eq(b'\\') != 0 {
            return Some((0, (bytes.len() - at).min(8)));
        }
        let quotes = bytes7.eq(b'"');
        // Bit 7 of each byte: inside a string after that byte.
        let inside = prefix_xor(quotes) ^ self.carry;
        let folded = bytes7.fold();
        let opens = folded.eq(b'{') & !inside;
        let closes = folded.eq(b'}') & !inside;
        let opening = quotes & inside;
        if opens | closes == 0 {
            if self.depth == 1 && opening != 0 && self.names.mask() != 0 {
                if let Some(i) = candidate(opening, &bytes[at..], self.names) {
                    self.carry = 0; // before an opening quote
                    return Some((i, 1));
                }
            }
        } else if self.depth > count(closes) + 1 {
            // The depth stays above 1 throughout the word.
            self.depth = self.depth + count(opens) - count(closes);
        } else {
            match brackets(self.depth, self.names, opens, closes, opening, &bytes[at..]) {
                Ok(depth) => self.depth = depth,
                Err((i, depth)) => {
                    // Stopped before byte `i` of this word, outside strings.
                    self.depth = depth;
                    self.carry = 0;
                    return Some((i, 1));
                }
            }
        }
        self.carry = ((inside as i64) >> 63) as u64 & HIGH;
        None
    }
}

/// A word whose depth may reach 1 or 0 (bits 7 of its brackets outside strings,
/// `opens` and `closes`, and of its opening quotes): walks its brackets in order.
/// Returns the depth after it, or the byte where `step` must take over (a candidate
/// at depth 1 for one of `names`, or the bracket that closes the object) with the
/// depth before it.
#[inline(never)]
fn brackets(
    mut depth: u64,
    names: Names,
    opens: u64,
    closes: u64,
    opening: u64,
    rest: &[u8],
) -> Result<u64, (usize, u64)> {
    let mut brackets = opens | closes;
    let mut done = 0; // the bits up to the last bracket walked
    loop {
        let next = brackets & brackets.wrapping_neg();
        let before = next.wrapping_sub(1) & !done;
        if depth == 1 && names.mask() != 0 {
            if let Some(i) = candidate(opening & before, rest, names) {
                return Err((i, depth));
            }
        }
        if next == 0 {
            return Ok(depth);
        }
        if next & opens != 0 {
            depth += 1;
        } else if depth == 1 {
            return Err((next.trailing_zeros() as usize / 8, depth));
        } else {
            depth -= 1;
        }
        done |= next | (next - 1);
        brackets &= brackets - 1;
    }
}

/// Bit 7 of every byte.
const HIGH: u64 = 0x8080_8080_8080_8080;

/// Byte `b` in every byte of a word.
const fn splat(b: u8) -> u64 {
    b as u64 * 0x0101_0101_0101_0101
}

/// The last `len` (1 to 7) bytes of `bytes` as a little-endian word, zero-padded
/// (zero is no byte the walk looks for).
fn tail(bytes: &[u8], len: usize) -> u64 {
    match bytes.last_chunk::<8>() {
        // Load the last eight and shift out those already walked.
        Some(word) => u64::from_le_bytes(*word) >> (8 * (8 - len)),
        None => {
            let mut word = [0; 8];
            word[..len].copy_from_slice(&bytes[bytes.len() - len..]);
            u64::from_le_bytes(word)
        }
    }
}

/// A word split for byte compares without carries between bytes: its bytes' low
/// seven bits, and bit 7 set where a byte's bit 7 is clear.
#[derive(Clone, Copy)]
struct Bytes7 {
    low: u64,
    ascii: u64,
}

impl Bytes7 {
    fn new(word: u64) -> Self {
        Self {
            low: word & !HIGH,
            ascii: !word & HIGH,
        }
    }

    /// The same bytes with bit 5 set: `[` and `]` read as `{` and `}`.
    fn fold(self) -> Self {
        Self {
            low: self.low | splat(0x20),
            ..self
        }
    }

    /// Bit 7 set in exactly the bytes equal to `b` (ASCII): those whose low seven
    /// bits XOR `b` are zero (adding 0x7F sets bit 7 of the others) and bit 7 clear.
    fn eq(self, b: u8) -> u64 {
        !((self.low ^ splat(b)) + !HIGH) & self.ascii
    }
}

/// How many bytes have bit 7 set in a mask of bits 7 (no `popcnt` instruction needed).
fn count(mask: u64) -> u64 {
    ((mask >> 7).wrapping_mul(splat(1))) >> 56
}

/// Bit 7 of each byte: the parity of the bits 7 of it and the bytes before it.
fn prefix_xor(mut mask: u64) -> u64 {
    mask ^= mask << 8;
    mask ^= mask << 16;
    mask ^ (mask << 32)
}

/// The first quote among `opening` (bits 7 of the word at the start of `rest`)
/// that `step` must see: one whose string may read one of `names`, as far as
/// `rest` shows. Any other string `step` would walk as `skim` does.
fn candidate(mut opening: u64, rest: &[u8], names: Names) -> Option<usize> {
    while opening != 0 {
        let i = opening.trailing_zeros() as usize / 8;
        if names.may_be(&rest[i + 1..]) {
            return Some(i);
        }
        opening &= opening - 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_error(data: &str) -> bool {
        let mut whole = ErrorObject::new(true, None);
        whole.feed(data.as_bytes());
        // Every byte on its own gives the same answer.
        let mut bytewise = ErrorObject::new(true, None);
        for b in data.as_bytes() {
            bytewise.feed(core::slice::from_ref(b));
        }
        assert_eq!(whole, bytewise, "{data}");
        whole.is_error()
    }

    #[test]
    fn top_level_error_members() {
        for data in [
            r#"{"error":{"message":"boom","code":500}}"#,
            r#"{ "error" : "boom" }"#,
            r#"{"id":"x","choices":[{"delta":{}}],"error":{"message":"late"}}"#,
            r#"{"object":"error","message":"bad","code":400}"#,
            r#"{"message":"bad", "object" : "error"}"#,
            r#"{"error":0}"#,
            r#"{"error":[]}"#,
            r#"{"error":nullx}"#,
            r#"{"error":false}"#,
            "\t{\"error\":true}  ",
        ] {
            assert!(is_error(data), "{data}");
        }
    }

    #[test]
    fn not_error_objects() {
        for data in [
            r#"{"error":null}"#,
            r#"{"error" : null , "id":1}"#,
            r#"{"choices":[{"delta":{"error":"nested"}}]}"#,
            r#"{"usage":{"error":{"x":1}}}"#,
            r#"{"content":"{\"error\": \"x\"}"}"#,
            r#"{"content":"\\\"error\":1"}"#,
            r#"{"object":"chat.completion.chunk"}"#,
            r#"{"object":"errors"}"#,
            r#"{"object":"\u0065rror"}"#,
            r#"{"\u0065rror":1}"#,
            r#"{"errors":1}"#,
            r#"{"erro":1}"#,
            r#"["error"]"#,
            r#""error""#,
            "[DONE]",
            r#"{"error":1"#,
            r#"{"error":1}x"#,
            r#"{"error":1}}"#,
            "",
        ] {
            assert!(!is_error(data), "{data}");
        }
    }

    #[test]
    fn a_line_feed_joins_data_lines() {
        let mut walk = ErrorObject::new(true, None);
        walk.feed(br#"{"error":"#);
        walk.line_feed();
        walk.feed(br#"{"message":"x"}}"#);
        assert!(walk.is_error());

        let mut walk = ErrorObject::new(true, None);
        walk.feed(br#"{"error":"a"#);
        walk.line_feed(); // inside a string: not JSON
        walk.feed(br#"b"}"#);
        assert!(!walk.is_error());
    }

    extern crate std;
    use std::{format, string::String, vec::Vec};

    /// The walk of `data` fed whole, byte by byte through `step` alone (the
    /// definition), and split in two at every byte: the same state every time.
    fn walked(data: &str) -> ErrorObject {
        let data = data.as_bytes();
        let mut whole = ErrorObject::new(true, None);
        whole.feed(data);
        let mut bytewise = ErrorObject::new(true, None);
        bytewise.feed_bytewise(data);
        assert_eq!(whole, bytewise, "{:?}", String::from_utf8_lossy(data));
        for at in 0..=data.len() {
            let mut split = ErrorObject::new(true, None);
            split.feed(&data[..at]);
            split.feed(&data[at..]);
            assert_eq!(split, whole, "{:?} at {at}", String::from_utf8_lossy(data));
        }
        whole
    }

    /// Long enough that `skim` walks whole words before and after the candidate.
    const PAD: &str = r#""id":"chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT","choices":[{"delta":{}}]"#;

    #[test]
    fn candidates_split_anywhere() {
        for (data, error) in [
            (format!(r#"{{{PAD},"error":{{"message":"x"}}}}"#), true),
            (format!(r#"{{{PAD}, "error" : "boom" }}"#), true),
            (format!(r#"{{{PAD},"object":"error","m":1}}"#), true),
            (
                format!(r#"{{{PAD},"error":null,"object":"errors"}}"#),
                false,
            ),
            (format!(r#"{{"error":null,{PAD}}}"#), false),
            (format!(r#"{{"error":nul,{PAD}}}"#), true),
            (
                format!(r#"{{{PAD},"message":"error","object":"x"}}"#),
                false,
            ),
            (format!(r#"{{{PAD},"errorx":1,"objects":"error"}}"#), false),
        ] {
            assert_eq!(walked(&data).is_error(), error, "{data}");
        }
    }

    #[test]
    fn error_inside_strings_nested_or_as_a_value() {
        for data in [
            format!(r#"{{{PAD},"content":"\"error\": 1, \"object\": \"error\""}}"#),
            format!(r#"{{{PAD},"choices":[{{"delta":{{"error":"nested"}}}}]}}"#),
            format!(r#"{{{PAD},"usage":{{"object":"error"}},"x":["error",{{"error":1}}]}}"#),
            format!(r#"{{{PAD},"message":"error"}}"#),
            format!(r#"{{{PAD},"a":"[{{\"error\":1}}]","b":"}}}}}}"}}"#),
        ] {
            assert!(!walked(&data).is_error(), "{data}");
        }
        // After brackets and strings that close at depth 1 in the same word.
        for data in [
            format!(r#"{{{PAD},"a":[1],"error":1}}"#),
            format!(r#"{{{PAD},"a":{{}},"b":"}}","object":"error"}}"#),
            format!(r#"{{"a":[[{PAD}]],"error":[]}}"#),
        ] {
            assert!(walked(&data).is_error(), "{data}");
        }
    }

    #[test]
    fn backslash_runs_before_quotes() {
        for run in 1..=9 {
            let slashes = "\\".repeat(run);
            // An odd run escapes the quote: the string goes on to the next one.
            let data = format!(r#"{{{PAD},"content":"x{slashes}" ,"error":1}}"#);
            assert_eq!(walked(&data).is_error(), run % 2 == 0, "{data}");
            let data = format!(r#"{{{PAD},"content":"x{slashes}"}}","error":1}}"#);
            assert_eq!(walked(&data).is_error(), run % 2 == 1, "{data}");
        }
    }

    #[test]
    fn data_over_several_lines() {
        let lines = [
            "{",
            r#"  "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT","#,
            r#"  "object":"#,
            r#"    "error","#,
            r#"  "choices": [ { "delta": { "error": 1 } } ]"#,
            "}",
        ];
        let mut walk = ErrorObject::new(true, None);
        for (i, line) in lines.iter().enumerate() {
            if i > 0 {
                walk.line_feed();
            }
            walk.feed(line.as_bytes());
        }
        assert!(walk.is_error());
        // A line feed inside a key, a value or a nested string: not JSON.
        for (first, second) in [
            (r#"{"err"#, r#"or":1}"#),
            (r#"{"object":"err"#, r#"or"}"#),
            (r#"{"a":{"b":"x"#, r#"y"}},"error":1}"#),
        ] {
            let mut walk = ErrorObject::new(true, None);
            walk.feed(first.as_bytes());
            walk.line_feed();
            walk.feed(second.as_bytes());
            assert!(walk.is_dead(), "{first} | {second}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2_000))]

        /// `skim` is a fast-forward of `step`: on JSON-ish bytes, any split of them
        /// fed through `feed` leaves the state that `step` alone leaves.
        #[test]
        fn skim_agrees_with_step(
            tokens in proptest::collection::vec(proptest::sample::select(&[
                "{", "}", "[", "]", "\"", "\\", ":", ",", " ", "\n", "e", "o", "x",
                "\"error\"", "\"object\"", "null", "\"error\":", "\"object\":\"error\"",
                "\"abcdefgh\"", "12345678", "\\\"",
                "\"usage\":", "\"message\":", "\"response\":", "\"usage", "\"prompt_tokens\":",
                "\"input_tokens\":", "\"output_tokens\":", "7", "18446744073709551616",
            ][..]), 0..60),
            config in 0..4_usize,
            open in proptest::sample::select(&["{", " {", "{[[", "{\"a\":{\"b\":[", "x"][..]),
            cuts in proptest::collection::vec(0..1000_usize, 0..4),
        ) {
            // Mostly an open object, so that the walk lives past the first byte.
            let data: Vec<u8> = [open.as_bytes(), tokens.concat().as_bytes()].concat();
            let new = || match config {
                0 => ErrorObject::new(true, None),
                1 => ErrorObject::new(true, Some(&super::super::usage::OPENAI_CHAT)),
                2 => ErrorObject::new(false, Some(&super::super::usage::ANTHROPIC)),
                _ => ErrorObject::new(false, Some(&super::super::usage::OPENAI_RESPONSES)),
            };
            let mut reference = new();
            reference.feed_bytewise(&data);
            let mut at: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
            at.push(data.len());
            at.sort_unstable();
            let mut walk = new();
            let mut from = 0;
            for to in at {
                walk.feed(&data[from..to]);
                from = to;
            }
            proptest::prop_assert_eq!(walk, reference);
        }
    }
}
