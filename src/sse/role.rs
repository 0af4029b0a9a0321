//! The OpenAI role-only chunk: a constant-memory walk of an event's data that tells
//! the preamble of a Chat Completions stream from its first output.
//!
//! vLLM, SGLang, llama.cpp and OpenAI open a stream with a chunk that names the
//! speaker and says nothing yet:
//! `{"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}`
//! (or `"content":null`, or no `content`; OpenAI adds `"refusal":null`). It is
//! preamble, not progress (see the [`sse`](crate::sse) module docs). [`RoleChunk`] recognises it without buffering.
//!
//! # The rule
//!
//! The data is a role-only chunk when it is one JSON object (whitespace around it)
//! with a top-level `choices` member whose value is an array of objects, and
//!
//! * some `delta` member of those objects is an object with a `role` member (any
//!   value);
//! * every other member of every such `delta` is **empty**: `null`, `""`, `[]` or
//!   `{}` (so `content`, `reasoning_content`, `tool_calls`, `refusal`, and any member
//!   an engine may invent, carry nothing);
//! * every `finish_reason` member of those objects is `null`;
//! * each `delta` is an object and each element of `choices` an object.
//!
//! Every other member is not read (`id`, `model`, `usage`, `logprobs`, ...). Anything
//! the rule does not expect (a key at those places spelled with an escape, a `delta`
//! that is not an object, data that is not one object, a line feed inside a string)
//! makes the data **not** a role-only chunk: in doubt, an event is progress, as it
//! was before the rule. A role on a chunk that carries text (TGI and Ollama send the
//! role on every chunk) is output, so it is progress.
//!
//! # The walk
//!
//! One byte at a time ([`RoleChunk::step`]), so every split of the data gives the
//! same state. The state is a few words: where the walk stands ([`Walk`]), the level
//! of the innermost container it reads (1: the top object, 2: `choices`, 3: one of
//! its objects, 4: a `delta`; the level is the path, since each level is entered only
//! from the member before it), the depth of brackets inside a value it skips, the
//! string state, and whether a `role` was seen. The scanner runs it only until the
//! first progress event of a stream (the rule is about the preamble), so its
//! per-byte cost is paid on the first events only.

/// The keys the rule reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Name {
    /// `choices`, at level 1.
    Choices,
    /// `delta`, at level 3.
    Delta,
    /// `finish_reason`, at level 3.
    FinishReason,
    /// `role`, at level 4.
    Role,
    /// Any other key.
    Other,
}

impl Name {
    fn bytes(self) -> &'static [u8] {
        match self {
            Name::Choices => b"choices",
            Name::Delta => b"delta",
            Name::FinishReason => b"finish_reason",
            Name::Role => b"role",
            Name::Other => b"",
        }
    }

    /// The key a string at `level` may spell, from its first byte.
    fn candidate(level: u8, b: u8) -> Self {
        match (level, b) {
            (1, b'c') => Name::Choices,
            (3, b'd') => Name::Delta,
            (3, b'f') => Name::FinishReason,
            (4, b'r') => Name::Role,
            _ => Name::Other,
        }
    }
}

const NULL: &[u8] = b"null";

/// Where the walk stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Walk {
    /// Nothing but whitespace yet: the data must open an object.
    Start,
    /// Not a role-only chunk, whatever follows.
    Dead,
    /// In an object the walk reads (level 1, 3 or 4): a key or the close is next.
    Key,
    /// Inside a key: `len` bytes of it, all equal to the start of `name` (or
    /// `Other`).
    InKey { name: Name, len: u8 },
    /// After a key, before its colon.
    Colon(Name),
    /// After the colon, before the value.
    Value(Name),
    /// In the `choices` array (level 2): an element or the close is next.
    Element,
    /// Inside a `null` that must be one: `len` bytes of it so far.
    Null(u8),
    /// After the quote of a string value that must be empty.
    EmptyString,
    /// After the bracket of a value that must be empty: its closing bracket next.
    EmptyBrackets(u8),
    /// In or after a value the walk does not read: strings and brackets are counted
    /// until the `,` or the close of the container at `level`.
    Skip,
    /// After the top-level object closed: only whitespace may follow.
    Closed,
}

/// The role-only chunk walk over one event's data; see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RoleChunk {
    walk: Walk,
    /// The container the walk reads: 0 before the object, 1 to 4 inside it.
    level: u8,
    /// In `Skip`: open brackets inside the skipped value.
    depth: u64,
    /// In `Skip`: inside a string.
    in_str: bool,
    /// In `Skip`: the last byte was a backslash that escapes the next one.
    escape: bool,
    /// A `delta` had a `role` member.
    role: bool,
}

impl RoleChunk {
    /// A walk at the start of an event's data.
    pub(super) const fn new() -> Self {
        Self {
            walk: Walk::Start,
            level: 0,
            depth: 0,
            in_str: false,
            escape: false,
            role: false,
        }
    }

    /// Whether the data so far is a role-only chunk, complete.
    pub(super) fn is_role_only(&self) -> bool {
        self.role && matches!(self.walk, Walk::Closed)
    }

    /// Whether the data can no longer be a role-only chunk.
    pub(super) fn is_dead(&self) -> bool {
        matches!(self.walk, Walk::Dead)
    }

    /// The line feed that joins two `data` lines: whitespace between tokens, but a
    /// control character inside a string (invalid JSON).
    pub(super) fn line_feed(&mut self) {
        match self.walk {
            Walk::Skip if self.in_str => self.walk = Walk::Dead,
            Walk::InKey { .. } | Walk::EmptyString => self.walk = Walk::Dead,
            _ => self.step(b'\n'),
        }
    }

    /// Walks more of the data (a value without its line end).
    pub(super) fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if matches!(self.walk, Walk::Dead) {
                return;
            }
            self.step(b);
        }
    }

    /// One byte; the definition of the walk.
    fn step(&mut self, b: u8) {
        let ws = matches!(b, b' ' | b'\t' | b'\n' | b'\r');
        self.walk = match self.walk {
            Walk::Start if ws => Walk::Start,
            Walk::Start if b == b'{' => {
                self.level = 1;
                Walk::Key
            }
            Walk::Key if ws => Walk::Key,
            Walk::Key if b == b'"' => Walk::InKey {
                name: Name::Other,
                len: 0,
            },
            Walk::Key if b == b'}' => return self.close(b),
            Walk::InKey { name, len } => match b {
                b'"' => {
                    let whole = name.bytes().len() == usize::from(len);
                    Walk::Colon(if whole { name } else { Name::Other })
                }
                // A key spelled with an escape may be any key: in doubt, progress.
                b'\\' => Walk::Dead,
                _ => {
                    let name = if len == 0 {
                        Name::candidate(self.level, b)
                    } else if name.bytes().get(usize::from(len)) == Some(&b) {
                        name
                    } else {
                        Name::Other
                    };
                    Walk::InKey {
                        name,
                        len: len.saturating_add(1),
                    }
                }
            },
            Walk::Colon(name) if ws => Walk::Colon(name),
            Walk::Colon(name) if b == b':' => Walk::Value(name),
            Walk::Value(name) if ws => Walk::Value(name),
            Walk::Value(name) => return self.value(name, b),
            Walk::Element if ws => Walk::Element,
            Walk::Element if b == b'{' => {
                self.level = 3;
                Walk::Key
            }
            Walk::Element if b == b']' => return self.close(b),
            Walk::Null(len) if usize::from(len) < NULL.len() => {
                if NULL[usize::from(len)] == b {
                    Walk::Null(len + 1)
                } else {
                    Walk::Dead
                }
            }
            Walk::Null(_) if ws || matches!(b, b',' | b'}' | b']') => return self.skip(b),
            Walk::EmptyString if b == b'"' => Walk::Skip,
            Walk::EmptyBrackets(close) if ws => Walk::EmptyBrackets(close),
            Walk::EmptyBrackets(close) if b == close => Walk::Skip,
            Walk::Skip => return self.skip(b),
            Walk::Closed if ws => Walk::Closed,
            // Anything else is not what the rule reads.
            _ => Walk::Dead,
        };
    }

    /// The first byte `b` of the value of key `name` at the current level.
    fn value(&mut self, name: Name, b: u8) {
        self.walk = match (self.level, name, b) {
            (1, Name::Choices, b'[') => {
                self.level = 2;
                Walk::Element
            }
            (3, Name::Delta, b'{') => {
                self.level = 4;
                Walk::Key
            }
            (3, Name::FinishReason, b'n') | (4, Name::Other, b'n') => Walk::Null(1),
            (4, Name::Other, b'"') => Walk::EmptyString,
            (4, Name::Other, b'[') => Walk::EmptyBrackets(b']'),
            (4, Name::Other, b'{') => Walk::EmptyBrackets(b'}'),
            (4, Name::Role, _) => {
                self.role = true;
                return self.skip(b);
            }
            (1 | 3, Name::Other, _) => return self.skip(b),
            _ => Walk::Dead,
        };
    }

    /// Byte `b` in `Skip`: strings and brackets inside the value, then the `,` or the
    /// close of the container at `level`.
    fn skip(&mut self, b: u8) {
        self.walk = Walk::Skip;
        if self.in_str {
            if self.escape {
                self.escape = false;
            } else if b == b'\\' {
                self.escape = true;
            } else if b == b'"' {
                self.in_str = false;
            }
            return;
        }
        match b {
            b'"' => self.in_str = true,
            b'{' | b'[' => self.depth += 1,
            b'}' | b']' if self.depth > 0 => self.depth -= 1,
            b'}' | b']' => self.close(b),
            b',' if self.depth == 0 => {
                self.walk = if self.level == 2 {
                    Walk::Element
                } else {
                    Walk::Key
                };
            }
            _ => {}
        }
    }

    /// Bracket `b` closes the container at `level`: the walk goes on after it, in
    /// the container around it.
    fn close(&mut self, b: u8) {
        let expected = if self.level == 2 { b']' } else { b'}' };
        self.walk = if b != expected {
            Walk::Dead
        } else if self.level == 1 {
            Walk::Closed
        } else {
            Walk::Skip
        };
        self.level -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role_only(data: &str) -> bool {
        let mut whole = RoleChunk::new();
        whole.feed(data.as_bytes());
        whole.is_role_only()
    }

    #[test]
    fn role_chunks_of_real_engines() {
        for data in [
            // vLLM
            r#"{"id":"chatcmpl-3b9e","object":"chat.completion.chunk","created":1757312405,"model":"Qwen/Qwen3-8B","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],"prompt_token_ids":null}"#,
            // llama.cpp
            r#"{"choices":[{"finish_reason":null,"index":0,"delta":{"role":"assistant","content":null}}],"created":1761672364,"id":"chatcmpl-5P1d","object":"chat.completion.chunk"}"#,
            // OpenAI
            r#"{"id":"chatcmpl-CRdy","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null,"obfuscation":"dW8L"}"#,
            // no content member, n = 2, odd whitespace, usage with no output
            r#" { "choices" : [ { "delta" : { "role" : "assistant" } } , {"delta":{"role":"assistant","tool_calls":[ ],"x":{ }}}] , "usage":{"completion_tokens":0} } "#,
        ] {
            assert!(role_only(data), "{data}");
        }
    }

    #[test]
    fn chunks_that_carry_something() {
        for data in [
            r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":"Deep"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"The"}}]}"#,
            r#"{"choices":[{"delta":{"role":"assistant","reasoning_content":"Hm"}}]}"#,
            r#"{"choices":[{"delta":{"role":"assistant","tool_calls":[{"index":0}]}}]}"#,
            r#"{"choices":[{"delta":{"role":"assistant","refusal":"no"}}]}"#,
            r#"{"choices":[{"delta":{"role":"assistant","audio":{"id":"a"}}}]}"#,
            r#"{"choices":[{"delta":{"role":"assistant","content":0}}]}"#,
            r#"{"choices":[{"delta":{"role":"assistant"},"finish_reason":"stop"}]}"#,
            r#"{"choices":[{"delta":{"role":"assistant"}},{"delta":{"content":"x"}}]}"#,
            r#"{"choices":[{"delta":{"role":"assistant","content":nullx}}]}"#,
            r#"{"choices":[{"delta":{}}]}"#,
            r#"{"choices":[],"usage":{"completion_tokens":3}}"#,
            r#"{"choices":[{"delta":{"\u0072ole":"assistant"}}]}"#,
            r#"{"choices":[{"delta":{"role":"assistant","\u0063ontent":"x"}}]}"#,
            r#"{"choices":[{"delta":null}],"role":"assistant"}"#,
            r#"{"choices":["x",{"delta":{"role":"assistant"}}]}"#,
            r#"{"choices":[{"delta":{"role":"assistant"}}]}x"#,
            r#"{"choices":[{"delta":{"role":"assistant"}}]"#,
            r#"{"choices":[{"delta":{"role":"assistant"}}}}"#,
            r#"{"choices":{"delta":{"role":"assistant"}}}"#,
            r#"{"x":{"choices":[{"delta":{"role":"assistant"}}]}}"#,
            r#"{"choice":[{"delta":{"role":"assistant"}}]}"#,
            r#"{"choices":[{"deltas":{"role":"assistant"}}]}"#,
            r#"{"choices":[{"delta":{"roles":"assistant"}}]}"#,
            "[DONE]",
            "",
        ] {
            assert!(!role_only(data), "{data}");
        }
    }

    #[test]
    fn skipped_values_may_hold_anything() {
        let data = r#"{"id":"a\"}],{[","m":[{"choices":[{"delta":{"content":"x"}}]}],"choices":[{"logprobs":{"content":[{"t":"}"}]},"delta":{"role":"a\\\"b","content":""},"finish_reason":null}]}"#;
        assert!(role_only(data));
    }

    #[test]
    fn a_line_feed_joins_data_lines() {
        let mut walk = RoleChunk::new();
        walk.feed(br#"{"choices":["#);
        walk.line_feed();
        walk.feed(br#"{"delta":{"role":"assistant"}}]}"#);
        assert!(walk.is_role_only());
        for (first, second) in [
            (r#"{"choices":[{"delta":{"ro"#, r#"le":"assistant"}}]}"#),
            (r#"{"choices":[{"delta":{"role":"assi"#, r#"stant"}}]}"#),
            (
                r#"{"choices":[{"delta":{"role":"a","content":""#,
                r#""}}]}"#,
            ),
        ] {
            let mut walk = RoleChunk::new();
            walk.feed(first.as_bytes());
            walk.line_feed();
            walk.feed(second.as_bytes());
            assert!(walk.is_dead(), "{first} | {second}");
        }
    }
}
