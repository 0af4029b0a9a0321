//! In-band error objects: a constant-memory structural walk of an event's data.
//!
//! OpenAI-compatible engines report a failure mid-stream as an ordinary event whose
//! data is a JSON object with a top-level `error` member (vLLM, SGLang, llama.cpp,
//! TGI, OpenRouter, where it may follow other members), or with `"object": "error"`
//! (older vLLM). [`ErrorObject`] tells such data apart from a chunk that merely
//! mentions an error, without buffering it and without parsing it: it follows
//! strings (and their escapes) and the nesting depth, and looks at the keys of the
//! top-level object only.
//!
//! It is a walk, not a validator: brackets are counted, not matched by kind. The data
//! is an error object when it starts with `{` (after whitespace), the object closes
//! with only whitespace after it, and a top-level member is `error` with a value
//! other than `null`, or `object` with the value `"error"`. A key or value spelled
//! with escapes (`"\u0065rror"`) is not recognised.

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
    /// Any other key.
    Other,
}

/// Where the walk stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Walk {
    /// Nothing but whitespace yet: the data must open an object.
    Start,
    /// Not an object, or something after it: never an error object.
    Dead,
    /// In the top-level object where a key (or its end) comes next.
    Key,
    /// Inside a top-level key: `len` bytes so far, which still equal `ERROR` (or
    /// `OBJECT`) when `candidate` says so.
    KeyText { candidate: Member, len: u8 },
    /// After a backslash in a top-level key: the key matches nothing.
    KeyEscape,
    /// After a top-level key, before its colon.
    Colon(Member),
    /// After the colon, before the value.
    Value(Member),
    /// Inside a `null` (so far) that is the value of `error`.
    Null(u8),
    /// Inside the string value of `object`, `len` bytes equal to `ERROR` so far.
    ObjectValue(u8),
    /// Inside a value, outside strings.
    Code,
    /// Inside a string within a value.
    Str,
    /// After a backslash inside a string within a value.
    StrEscape,
    /// After the top-level object closed: only whitespace may follow.
    Closed,
}

/// The error-object walk over one event's data; see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ErrorObject {
    walk: Walk,
    /// Open objects and arrays: 1 inside the top-level object.
    depth: u32,
    /// A top-level member said "error".
    found: bool,
}

impl ErrorObject {
    /// A walk at the start of an event's data.
    pub(super) const fn new() -> Self {
        Self {
            walk: Walk::Start,
            depth: 0,
            found: false,
        }
    }

    /// Whether the data so far is an error object, complete.
    pub(super) fn is_error(&self) -> bool {
        self.found && self.walk == Walk::Closed
    }

    /// Whether the data can no longer be an error object.
    pub(super) fn is_dead(&self) -> bool {
        self.walk == Walk::Dead
    }

    /// The line feed that joins two `data` lines: whitespace between tokens, but a
    /// control character inside a string (invalid JSON).
    pub(super) fn line_feed(&mut self) {
        match self.walk {
            Walk::Start | Walk::Dead | Walk::Key | Walk::Colon(_) | Walk::Value(_) => {}
            Walk::Code | Walk::Closed => {}
            Walk::Null(_) => self.feed(b"\n"),
            _ => self.walk = Walk::Dead,
        }
    }

    /// Walks more of the data (a value without its line end).
    pub(super) fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let used = match self.walk {
                Walk::Dead => return,
                Walk::Str => match memchr::memchr2(b'"', b'\\', bytes) {
                    Some(i) => {
                        self.walk = match bytes[i] {
                            b'"' => Walk::Code,
                            _ => Walk::StrEscape,
                        };
                        i + 1
                    }
                    None => return,
                },
                Walk::Code => self.code(bytes),
                _ => {
                    self.step(bytes[0]);
                    1
                }
            };
            bytes = &bytes[used..];
        }
    }

    /// Walks bytes outside strings, inside a value; returns how many it used.
    fn code(&mut self, bytes: &[u8]) -> usize {
        for (i, &b) in bytes.iter().enumerate() {
            match b {
                b'"' => {
                    self.walk = Walk::Str;
                    return i + 1;
                }
                b'{' | b'[' => self.depth = self.depth.saturating_add(1),
                b'}' | b']' => {
                    self.depth -= 1;
                    if self.depth == 0 {
                        self.walk = Walk::Closed;
                        return i + 1;
                    }
                }
                b',' if self.depth == 1 => {
                    self.walk = Walk::Key;
                    return i + 1;
                }
                _ => {}
            }
        }
        bytes.len()
    }

    /// One byte in a state that looks at every byte.
    fn step(&mut self, b: u8) {
        let ws = matches!(b, b' ' | b'\t' | b'\n' | b'\r');
        self.walk = match self.walk {
            Walk::Start if ws => Walk::Start,
            Walk::Start if b == b'{' => {
                self.depth = 1;
                Walk::Key
            }
            Walk::Key if ws || b == b',' => Walk::Key,
            Walk::Key if b == b'"' => Walk::KeyText {
                candidate: match self.found {
                    // Decided already: no key can change it.
                    true => Member::Other,
                    false => Member::Error,
                },
                len: 0,
            },
            Walk::Key if b == b'}' => {
                self.depth = 0;
                Walk::Closed
            }
            Walk::KeyText { candidate, len } => match b {
                b'"' => Walk::Colon(match (candidate, usize::from(len)) {
                    (Member::Error, 5) => Member::Error,
                    (Member::Object, 6) => Member::Object,
                    _ => Member::Other,
                }),
                b'\\' => Walk::KeyEscape,
                _ => Walk::KeyText {
                    candidate: key_byte(candidate, len, b),
                    len: len.saturating_add(1),
                },
            },
            Walk::KeyEscape => Walk::KeyText {
                candidate: Member::Other,
                len: u8::MAX,
            },
            Walk::Colon(member) if ws => Walk::Colon(member),
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
                    Walk::Code
                }
                b'\\' => Walk::StrEscape,
                _ if ERROR.get(usize::from(len)) == Some(&b) => Walk::ObjectValue(len + 1),
                _ => Walk::Str,
            },
            Walk::StrEscape => Walk::Str,
            Walk::Closed if ws => Walk::Closed,
            // Anything else is not the start, shape or end of an object.
            _ => Walk::Dead,
        };
    }

    /// Hands byte `b` (the first of a value, or the one after `null`) to the value
    /// walk.
    fn reenter(&mut self, b: u8) {
        self.walk = Walk::Code;
        self.code(&[b]);
    }
}

/// The candidate after byte `b` at position `len` of a top-level key.
fn key_byte(candidate: Member, len: u8, b: u8) -> Member {
    let len = usize::from(len);
    match candidate {
        Member::Error if len == 0 && b == OBJECT[0] => Member::Object,
        Member::Error if ERROR.get(len) == Some(&b) => Member::Error,
        Member::Object if OBJECT.get(len) == Some(&b) => Member::Object,
        _ => Member::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_error(data: &str) -> bool {
        let mut whole = ErrorObject::new();
        whole.feed(data.as_bytes());
        // Every byte on its own gives the same answer.
        let mut bytewise = ErrorObject::new();
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
        let mut walk = ErrorObject::new();
        walk.feed(br#"{"error":"#);
        walk.line_feed();
        walk.feed(br#"{"message":"x"}}"#);
        assert!(walk.is_error());

        let mut walk = ErrorObject::new();
        walk.feed(br#"{"error":"a"#);
        walk.line_feed(); // inside a string: not JSON
        walk.feed(br#"b"}"#);
        assert!(!walk.is_error());
    }
}
