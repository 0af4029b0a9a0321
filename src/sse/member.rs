//! A member at a path: a constant-memory structural walk of one JSON value.
//!
//! The dialects beyond OpenAI's say their end or their failure in a member of the
//! event's JSON, not in the event's name: Gemini's `candidates[].finishReason`,
//! Cohere's `delta.finish_reason`, Ollama's top-level `done` and `error`. A
//! [`MemberWalk`] tells, without buffering the value and without parsing it, whether
//! the value is a JSON object holding a member at a [`Path`] whose value passes a
//! [`Test`].
//!
//! # The rule
//!
//! A path is a list of keys (one to [`MAX_KEYS`]). The first key is a member of the
//! top-level object; each next key a member of an object that is the value of the
//! key before it, or an element of an array that is (arrays are looked through, at
//! any depth: `candidates[].finishReason`, `candidates[][].finishReason` alike). The
//! value of the last key is tested: not `null`, `true`, or a given string, spelled
//! without escapes. The data matches when it is one object (whitespace around it)
//! and some member on the path passes (duplicate keys: any of them).
//!
//! As the error-object walk it is a walk, not a validator: brackets of either kind
//! are counted, not matched; a backslash escapes the byte after it; a key spelled
//! with escapes is not recognised; text inside strings never counts. On valid JSON
//! without duplicate keys it answers what a parser would.
//!
//! # The walk
//!
//! The state is a few words whatever the value's length: the depth, and for each
//! object on the path (the top-level one, then those reached through matching keys)
//! its depth and, in its selected member's value, how many arrays deep the walk
//! stands. No byte is kept. Strings that are not compared (every string but a key of
//! an object on the path, and the tested value) are skipped with `memchr`.

/// The most keys a path may have.
pub(crate) const MAX_KEYS: usize = 3;

/// What the value of a path's last key must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Test {
    /// Anything but the literal `null`.
    NotNull,
    /// The literal `true`.
    True,
    /// The string with exactly these bytes (no escapes).
    Str(&'static str),
}

/// Keys from the top-level object down, and the test of the last one's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Path {
    pub(crate) keys: &'static [&'static str],
    pub(crate) test: Test,
}

/// Where the walk stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Walk {
    /// Nothing but whitespace yet: the value must open an object.
    Start,
    /// Not an object, or something after it: never a match.
    Dead,
    /// Between tokens inside the object.
    Skim,
    /// Inside a string that is not compared.
    Str,
    /// Inside a key of an object on the path: `len` bytes so far, all equal to the
    /// path's key if `ok`.
    Key { len: u8, ok: bool },
    /// After a key of an object on the path, before its colon.
    Colon { matched: bool },
    /// After the last key's colon, before its value.
    Value,
    /// Inside the literal (`null` or `true`) that the last key's value began.
    Lit(u8),
    /// Inside the string that is the last key's value.
    ValueStr { len: u8, ok: bool },
    /// After the top-level object closed: only whitespace may follow.
    Closed,
}

/// The walk over one value; see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MemberWalk {
    walk: Walk,
    /// The last byte in a string was a backslash that escapes the next one.
    escape: bool,
    /// Open objects and arrays: 1 inside the top-level object. A value nested
    /// deeper than `u32::MAX` is no match.
    depth: u32,
    /// Objects on the path entered: the walk is in the object at `obj[level - 1]`
    /// or deeper.
    level: u8,
    /// The depth of each object on the path.
    obj: [u32; MAX_KEYS],
    /// For each object on the path but the innermost: the arrays deep its selected
    /// member's value stood when the next object opened.
    saved: [u32; MAX_KEYS],
    /// The innermost object's current member is selected (its key matched a key of
    /// the path that is not the last).
    sel: bool,
    /// Arrays opened directly in the selected value: the walk stands directly in
    /// it at depth `obj[level - 1] + run`.
    run: u32,
    /// A string at the innermost object's depth would be a key.
    expect_key: bool,
    /// A member on the path passed the test.
    found: bool,
}

const NULL: &[u8] = b"null";
const TRUE: &[u8] = b"true";

impl MemberWalk {
    /// A walk at the start of a value. Every call after this one must be given the
    /// same `path` (one to [`MAX_KEYS`] keys).
    pub(crate) const fn new() -> Self {
        Self {
            walk: Walk::Start,
            escape: false,
            depth: 0,
            level: 0,
            obj: [0; MAX_KEYS],
            saved: [0; MAX_KEYS],
            sel: false,
            run: 0,
            expect_key: false,
            found: false,
        }
    }

    /// Whether the value so far is a complete object with a passing member.
    pub(crate) fn is_match(&self) -> bool {
        self.found && self.walk == Walk::Closed
    }

    /// Whether the value can no longer match.
    pub(crate) fn is_dead(&self) -> bool {
        self.walk == Walk::Dead
    }

    /// The line feed that joins two SSE `data` lines: whitespace between tokens,
    /// a control character inside a string (not JSON).
    pub(crate) fn line_feed(&mut self, path: &Path) {
        match self.walk {
            Walk::Str | Walk::Key { .. } | Walk::ValueStr { .. } => self.walk = Walk::Dead,
            _ => self.step(path, b'\n'),
        }
    }

    /// Walks more of the value.
    pub(crate) fn feed(&mut self, path: &Path, bytes: &[u8]) {
        let mut at = 0;
        while at < bytes.len() {
            match self.walk {
                Walk::Dead => return,
                Walk::Str if !self.escape => {
                    // Skip to the quote or backslash that matters.
                    match memchr::memchr2(b'"', b'\\', &bytes[at..]) {
                        Some(i) => {
                            if bytes[at + i] == b'"' {
                                self.walk = Walk::Skim;
                            } else {
                                self.escape = true;
                            }
                            at += i + 1;
                        }
                        None => return,
                    }
                }
                _ => {
                    self.step(path, bytes[at]);
                    at += 1;
                }
            }
        }
    }

    /// One byte; the definition of the walk.
    fn step(&mut self, path: &Path, b: u8) {
        let ws = matches!(b, b' ' | b'\t' | b'\n' | b'\r');
        self.walk = match self.walk {
            Walk::Dead => Walk::Dead,
            Walk::Start if ws => Walk::Start,
            Walk::Start if b == b'{' => {
                self.depth = 1;
                self.level = 1;
                self.obj[0] = 1;
                self.expect_key = true;
                Walk::Skim
            }
            Walk::Start => Walk::Dead,
            Walk::Closed if ws => Walk::Closed,
            Walk::Closed => Walk::Dead,
            Walk::Skim => return self.skim_byte(b),
            Walk::Str => {
                if self.escape {
                    self.escape = false;
                    Walk::Str
                } else if b == b'\\' {
                    self.escape = true;
                    Walk::Str
                } else if b == b'"' {
                    Walk::Skim
                } else {
                    Walk::Str
                }
            }
            Walk::Key { len, ok } => {
                let key = path.keys[usize::from(self.level) - 1].as_bytes();
                if self.escape {
                    self.escape = false;
                    Walk::Key { len, ok: false }
                } else if b == b'\\' {
                    self.escape = true;
                    Walk::Key { len, ok: false }
                } else if b == b'"' {
                    Walk::Colon {
                        matched: ok && usize::from(len) == key.len(),
                    }
                } else {
                    Walk::Key {
                        len: len.saturating_add(1),
                        ok: ok && key.get(usize::from(len)) == Some(&b),
                    }
                }
            }
            Walk::Colon { matched } if ws => Walk::Colon { matched },
            Walk::Colon { matched } if b == b':' => {
                self.expect_key = false;
                if !matched {
                    Walk::Skim
                } else if usize::from(self.level) == path.keys.len() {
                    Walk::Value
                } else {
                    self.sel = true;
                    self.run = 0;
                    Walk::Skim
                }
            }
            Walk::Colon { .. } => Walk::Dead,
            Walk::Value if ws => Walk::Value,
            Walk::Value => match (path.test, b) {
                (Test::NotNull, b'n') | (Test::True, b't') => Walk::Lit(1),
                (Test::Str(_), b'"') => Walk::ValueStr { len: 0, ok: true },
                (test, _) => {
                    self.found |= test == Test::NotNull;
                    return self.reenter(b);
                }
            },
            Walk::Lit(len) => {
                let (lit, not_null) = match path.test {
                    Test::True => (TRUE, false),
                    _ => (NULL, true),
                };
                if usize::from(len) < lit.len() {
                    if lit[usize::from(len)] == b {
                        Walk::Lit(len + 1)
                    } else {
                        // Not the literal: for `NotNull`, some other value.
                        self.found |= not_null;
                        return self.reenter(b);
                    }
                } else {
                    let delimited = ws || matches!(b, b',' | b'}' | b']');
                    // `null` / `true` exactly, or followed by more (another value).
                    self.found |= delimited != not_null;
                    return self.reenter(b);
                }
            }
            Walk::ValueStr { len, ok } => {
                let Test::Str(want) = path.test else {
                    return self.reenter(b);
                };
                if self.escape {
                    self.escape = false;
                    Walk::ValueStr { len, ok: false }
                } else if b == b'\\' {
                    self.escape = true;
                    Walk::ValueStr { len, ok: false }
                } else if b == b'"' {
                    self.found |= ok && usize::from(len) == want.len();
                    Walk::Skim
                } else {
                    Walk::ValueStr {
                        len: len.saturating_add(1),
                        ok: ok && want.as_bytes().get(usize::from(len)) == Some(&b),
                    }
                }
            }
        };
    }

    /// The depth of the innermost object on the path.
    fn inner(&self) -> u32 {
        self.obj[usize::from(self.level) - 1]
    }

    /// Byte `b` between tokens.
    fn skim_byte(&mut self, b: u8) {
        let inner = self.inner();
        match b {
            b'"' if self.expect_key && self.depth == inner => {
                self.expect_key = false;
                self.walk = Walk::Key { len: 0, ok: true };
            }
            b'"' => self.walk = Walk::Str,
            b'{' | b'[' if self.depth == u32::MAX => self.walk = Walk::Dead,
            b'{' => {
                if self.sel && self.depth == inner + self.run {
                    // An object of the selected value: the next key is looked up in it.
                    let at = usize::from(self.level);
                    self.saved[at - 1] = self.run;
                    self.obj[at] = self.depth + 1;
                    self.level += 1;
                    self.sel = false;
                    self.run = 0;
                    self.expect_key = true;
                }
                self.depth += 1;
            }
            b'[' => {
                if self.sel && self.depth == inner + self.run {
                    self.run += 1;
                }
                self.depth += 1;
            }
            b'}' | b']' => {
                if self.depth == inner {
                    if self.level == 1 {
                        self.depth = 0;
                        self.walk = Walk::Closed;
                        return;
                    }
                    // Back in the selected value of the object around it.
                    self.level -= 1;
                    self.run = self.saved[usize::from(self.level) - 1];
                    self.sel = true;
                    self.expect_key = false;
                } else if self.sel && self.run > 0 && self.depth == inner + self.run {
                    self.run -= 1;
                }
                self.depth -= 1;
            }
            b',' if self.depth == inner => {
                self.expect_key = true;
                self.sel = false;
            }
            _ => {}
        }
    }

    /// Hands byte `b` (the first of a value, or the one after a literal) back to
    /// the walk between tokens.
    fn reenter(&mut self, b: u8) {
        self.walk = Walk::Skim;
        self.skim_byte(b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    extern crate std;
    use std::string::String;

    const FINISH: Path = Path {
        keys: &["candidates", "finishReason"],
        test: Test::NotNull,
    };
    const DONE: Path = Path {
        keys: &["done"],
        test: Test::True,
    };
    const ERROR: Path = Path {
        keys: &["delta", "finish_reason"],
        test: Test::Str("ERROR"),
    };

    /// The answer for `data` fed whole, byte by byte and split in two at every byte:
    /// the same state every time.
    fn matches(path: Path, data: &str) -> bool {
        let data = data.as_bytes();
        let mut whole = MemberWalk::new();
        whole.feed(&path, data);
        let mut bytewise = MemberWalk::new();
        for b in data {
            bytewise.feed(&path, core::slice::from_ref(b));
        }
        assert_eq!(whole, bytewise, "{:?}", String::from_utf8_lossy(data));
        for at in 0..=data.len() {
            let mut split = MemberWalk::new();
            split.feed(&path, &data[..at]);
            split.feed(&path, &data[at..]);
            assert_eq!(split, whole, "{:?} at {at}", String::from_utf8_lossy(data));
        }
        whole.is_match()
    }

    #[test]
    fn gemini_finish_reason() {
        for data in [
            r#"{"candidates": [{"content": {"parts": [{"text": "x"}],"role": "model"},"finishReason": "STOP","index": 0}]}"#,
            r#"{"usageMetadata":{"a":1},"candidates":[{"index":0},{"finishReason":"MAX_TOKENS"}]}"#,
            r#"{"candidates":[[{"finishReason":1}]]}"#,
            r#" {"candidates" : [ { "finishReason" : "SAFETY" } ] } "#,
        ] {
            assert!(matches(FINISH, data), "{data}");
        }
        for data in [
            r#"{"candidates": [{"content": {"parts": [{"text": "finishReason"}]},"index": 0}]}"#,
            r#"{"candidates":[{"finishReason":null}]}"#,
            r#"{"candidates":[{"content":{"finishReason":"STOP"}}]}"#,
            r#"{"finishReason":"STOP"}"#,
            r#"{"other":[{"finishReason":"STOP"}]}"#,
            r#"{"candidates":[{"x":1}],"y":{"finishReason":"STOP"}}"#,
            r#"{"candidates":[{"f\u0069nishReason":"STOP"}]}"#,
            r#"{"candidates":[{"finishReason":"STOP"}]"#,
            r#"{"candidates":[{"finishReason":"STOP"}]}x"#,
            r#"[{"candidates":[{"finishReason":"STOP"}]}]"#,
            r#"{"candidates":[{"finishReason":"STOP"}]}}"#,
        ] {
            assert!(!matches(FINISH, data), "{data}");
        }
    }

    #[test]
    fn ollama_done_true() {
        for data in [
            r#"{"model":"x","done":true}"#,
            r#"{"done" : true , "eval_count": 3}"#,
            r#"{"message":{"content":"\"done\":true"},"done":true,"total_duration":1}"#,
        ] {
            assert!(matches(DONE, data), "{data}");
        }
        for data in [
            r#"{"model":"x","done":false}"#,
            r#"{"done":"true"}"#,
            r#"{"done":truex}"#,
            r#"{"done":tru}"#,
            r#"{"message":{"done":true}}"#,
            r#"{"content":"\"done\":true"}"#,
            r#"{"done":true"#,
        ] {
            assert!(!matches(DONE, data), "{data}");
        }
    }

    #[test]
    fn cohere_finish_reason_error() {
        assert!(matches(
            ERROR,
            r#"{"type":"message-end","delta":{"finish_reason":"ERROR","usage":{}}}"#
        ));
        for data in [
            r#"{"type":"message-end","delta":{"finish_reason":"COMPLETE"}}"#,
            r#"{"delta":{"finish_reason":"ERRORS"}}"#,
            r#"{"delta":{"finish_reason":"ERR"}}"#,
            r#"{"delta":{"finish_reason":"\u0045RROR"}}"#,
            r#"{"delta":{"x":{"finish_reason":"ERROR"}}}"#,
            r#"{"finish_reason":"ERROR"}"#,
        ] {
            assert!(!matches(ERROR, data), "{data}");
        }
    }

    #[test]
    fn not_null_values() {
        let error = Path {
            keys: &["error"],
            test: Test::NotNull,
        };
        for (data, want) in [
            (r#"{"error":"boom"}"#, true),
            (r#"{"error":{"a":null}}"#, true),
            (r#"{"error":0}"#, true),
            (r#"{"error":nul}"#, true),
            (r#"{"error":nullx}"#, true),
            (r#"{"error":null}"#, false),
            (r#"{"error":null,"x":1}"#, false),
            (r#"{"x":{"error":1}}"#, false),
        ] {
            assert_eq!(matches(error, data), want, "{data}");
        }
    }
}
