//! Token usage: the counts a stream reports, read in constant memory.
//!
//! The error-object walk ([`json`](super::json)) stops at the top-level members a
//! dialect reports usage under (its **roots**: `usage` for OpenAI Chat Completions,
//! `message` and `usage` for Anthropic, `response` for Responses) and hands the
//! member's value to a [`Value`] walk, one byte at a time, which follows the
//! dialect's [`Path`]s below the root and reads the count at the end of each.
//!
//! # The rule
//!
//! A count is read where a path's keys name object members, one inside the other,
//! below a root member of the top-level object; members nested elsewhere, and text
//! inside strings, never count. A key spelled with escapes is not recognised (as in
//! the error-object walk). The value is a **count** when it is a JSON integer from 0
//! to `u64::MAX`: digits with no sign, fraction or exponent (what
//! `serde_json::Value::as_u64` returns `Some` for). Anything else (`null`, a
//! string, `1.5`, `1e3`, `-1`, or more digits than fit in a `u64`) is **no count**:
//! it is ignored, and the count stands as it was (so a huge number is never
//! saturated and never wraps: it reads as not reported). Within one event a member
//! given twice is read twice, the last count winning; the event's counts are kept
//! only if its data is one complete JSON object (the walk saw it close), and then
//! each replaces the stream's count so far (the last value reported wins).
//!
//! # The walk
//!
//! The state is a few words whatever the value's length: the depth of brackets
//! inside the value, how many of the open objects are on a path (at most three),
//! which paths still match at each of those levels (a bit mask each), where the walk
//! stands among a matched object's members ([`At`]), the string state of what it
//! skips, and the number read so far (with a flag once it is no count). One byte at
//! a time, so every split of the input gives the same state.

use crate::Usage;

/// Which count a path reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Count {
    Input,
    Output,
}

/// The keys below a root member, each inside the one before, and the count at the
/// end (at most [`MAX_KEYS`] keys).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Path {
    keys: &'static [&'static [u8]],
    count: Count,
}

/// A top-level member that holds usage, and the paths below it (at most eight).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Root {
    pub(super) key: &'static [u8],
    paths: &'static [Path],
}

/// Where a dialect reports usage.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct UsageRules {
    pub(super) roots: &'static [Root],
    /// Only the rules' done and failed events report it (Responses: the usage of
    /// `response.created` is not final).
    pub(super) final_only: bool,
}

/// The most keys a path has below its root.
const MAX_KEYS: usize = 2;

/// OpenAI Chat Completions with `stream_options.include_usage` (and vLLM, SGLang,
/// llama.cpp): `usage.prompt_tokens`, `usage.completion_tokens`.
pub(super) const OPENAI_CHAT: UsageRules = UsageRules {
    roots: &[Root {
        key: b"usage",
        paths: &[
            Path {
                keys: &[b"prompt_tokens"],
                count: Count::Input,
            },
            Path {
                keys: &[b"completion_tokens"],
                count: Count::Output,
            },
        ],
    }],
    final_only: false,
};

/// Anthropic Messages: `message_start`'s `message.usage.input_tokens`, and
/// `message_delta`'s `usage.output_tokens` (cumulative; its `usage.input_tokens`
/// too, where it is given).
pub(super) const ANTHROPIC: UsageRules = UsageRules {
    roots: &[
        Root {
            key: b"message",
            paths: &[Path {
                keys: &[b"usage", b"input_tokens"],
                count: Count::Input,
            }],
        },
        Root {
            key: b"usage",
            paths: &[
                Path {
                    keys: &[b"input_tokens"],
                    count: Count::Input,
                },
                Path {
                    keys: &[b"output_tokens"],
                    count: Count::Output,
                },
            ],
        },
    ],
    final_only: false,
};

/// OpenAI Responses: `response.usage.input_tokens` and `output_tokens` of the final
/// event (`response.completed`, `response.incomplete`, `response.failed`).
pub(super) const OPENAI_RESPONSES: UsageRules = UsageRules {
    roots: &[Root {
        key: b"response",
        paths: &[
            Path {
                keys: &[b"usage", b"input_tokens"],
                count: Count::Input,
            },
            Path {
                keys: &[b"usage", b"output_tokens"],
                count: Count::Output,
            },
        ],
    }],
    final_only: true,
};

/// What a path's key matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hit {
    /// Nothing: the value is skipped.
    Miss,
    /// The last key of a path: its value is the count.
    Leaf(Count),
    /// A key inside these paths (a bit mask): its value is an object to follow.
    Inner(u8),
}

/// Where the walk stands, outside strings, directly in a matched object (or before
/// and after the root value, at level 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// Before a member's key.
    Key,
    /// Inside a key: `len` bytes so far, which the paths in `mask` begin with.
    InKey { mask: u8, len: u8 },
    /// After a key, before its colon.
    Colon(Hit),
    /// After the colon, before the value.
    Value(Hit),
    /// Inside a count: digits so far, `ok` while they fit and nothing else came.
    Number { count: Count, n: u64, ok: bool },
    /// In or after a value that is skipped, until the `,` or the bracket that ends
    /// it.
    Rest,
    /// Deeper than the matched objects, or inside a string: only brackets and
    /// quotes matter, until the walk is back in a matched object.
    Skip,
}

/// What the walk made of one byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// The byte is part of the value.
    More,
    /// The value ended before this byte (a `,` or a closing bracket of the
    /// top-level object, or stray input): the caller walks the byte on.
    Done,
}

/// The walk of one root member's value; see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Value {
    paths: &'static [Path],
    /// Open brackets inside the value.
    depth: u64,
    /// Matched objects open: the walk is directly in one when `depth == level`.
    level: u8,
    /// The paths that match each matched object's keys so far (`masks[level]`).
    masks: [u8; MAX_KEYS + 1],
    at: At,
    /// In `Skip`: inside a string, and the last byte an escaping backslash.
    in_str: bool,
    escape: bool,
}

impl Value {
    /// A walk right after the colon of a root member whose paths are `paths`.
    pub(super) const fn new(root: &'static Root) -> Self {
        let all = match root.paths.len() {
            n @ 0..8 => (1u8 << n) - 1,
            _ => u8::MAX,
        };
        Self {
            paths: root.paths,
            depth: 0,
            level: 0,
            masks: [all, 0, 0],
            at: At::Value(Hit::Inner(all)),
            in_str: false,
            escape: false,
        }
    }

    /// The line feed that joins two `data` lines: whitespace between tokens, but a
    /// control character inside a string or a key (invalid JSON): then `false`, the
    /// data is no JSON.
    pub(super) fn line_feed(&mut self, usage: &mut Usage) -> Option<Step> {
        if self.in_str || matches!(self.at, At::InKey { .. }) {
            return None;
        }
        Some(self.step(b'\n', usage))
    }

    /// One byte; counts read go to `usage`.
    pub(super) fn step(&mut self, b: u8, usage: &mut Usage) -> Step {
        let ws = matches!(b, b' ' | b'\t' | b'\n' | b'\r');
        match self.at {
            At::Skip => {
                self.skip(b);
                Step::More
            }
            At::Key if ws => Step::More,
            At::Key if b == b'"' => {
                self.at = At::InKey {
                    mask: self.masks[usize::from(self.level)],
                    len: 0,
                };
                Step::More
            }
            At::InKey { mask, len } => {
                match b {
                    b'"' => self.at = At::Colon(self.hit(mask, len)),
                    b'\\' => {
                        // Spelled with an escape: not recognised, skipped as a string.
                        (self.in_str, self.escape) = (true, true);
                        self.at = At::Skip;
                    }
                    _ => {
                        let mask = self.narrow(mask, len, b);
                        self.at = match (mask, len.checked_add(1)) {
                            (0, _) | (_, None) => {
                                self.in_str = true;
                                At::Skip
                            }
                            (mask, Some(len)) => At::InKey { mask, len },
                        };
                    }
                }
                Step::More
            }
            At::Colon(_) | At::Value(_) if ws => Step::More,
            At::Colon(hit) if b == b':' => {
                self.at = At::Value(hit);
                Step::More
            }
            At::Value(Hit::Leaf(count)) if b.is_ascii_digit() => {
                self.at = At::Number {
                    count,
                    n: u64::from(b - b'0'),
                    ok: true,
                };
                Step::More
            }
            At::Value(Hit::Inner(mask)) if b == b'{' && usize::from(self.level) < MAX_KEYS => {
                self.depth += 1;
                self.level += 1;
                self.masks[usize::from(self.level)] = mask;
                self.at = At::Key;
                Step::More
            }
            At::Number { count, n, ok } if !(ws || matches!(b, b',' | b'}' | b']')) => {
                let digit = b.is_ascii_digit().then(|| u64::from(b - b'0'));
                let next = digit.and_then(|d| n.checked_mul(10)?.checked_add(d));
                self.at = At::Number {
                    count,
                    n: next.unwrap_or(0),
                    ok: ok && next.is_some(),
                };
                Step::More
            }
            At::Number { count, n, ok } => {
                if ok {
                    let slot = match count {
                        Count::Input => &mut usage.input_tokens,
                        Count::Output => &mut usage.output_tokens,
                    };
                    *slot = Some(n);
                }
                self.at = At::Rest;
                self.rest(b)
            }
            // Anything else: the value (or what stands in for one) is skipped.
            At::Key | At::Colon(_) | At::Value(_) | At::Rest => {
                self.at = At::Rest;
                self.rest(b)
            }
        }
    }

    /// Byte `b` in `Rest`: directly in a matched object (or at level 0), outside
    /// strings, in or after a value that is skipped.
    fn rest(&mut self, b: u8) -> Step {
        match b {
            b',' if self.level == 0 => return Step::Done,
            b'}' | b']' if self.depth == 0 => return Step::Done,
            b',' => self.at = At::Key,
            b'}' | b']' => {
                // `depth == level > 0` here: the matched object closes.
                self.depth = self.depth.saturating_sub(1);
                self.level = self.level.saturating_sub(1);
            }
            b'{' | b'[' => {
                self.depth += 1;
                self.at = At::Skip;
            }
            b'"' => {
                self.in_str = true;
                self.at = At::Skip;
            }
            // Scalar bytes, a stray colon: part of what is skipped.
            _ => {}
        }
        Step::More
    }

    /// Byte `b` in `Skip`: back to `Rest` once outside strings in a matched object.
    fn skip(&mut self, b: u8) {
        if self.escape {
            self.escape = false;
            return;
        }
        match b {
            b'\\' if self.in_str => self.escape = true,
            b'"' => self.in_str = !self.in_str,
            _ if self.in_str => {}
            b'{' | b'[' => self.depth += 1,
            // Never below the level: `depth > level` outside strings here.
            b'}' | b']' => self.depth = self.depth.saturating_sub(1),
            _ => {}
        }
        if !self.in_str && self.depth == u64::from(self.level) {
            self.at = At::Rest;
        }
    }

    /// The paths among `mask` whose key at this level has byte `b` at `len`.
    fn narrow(&self, mask: u8, len: u8, b: u8) -> u8 {
        self.matching(mask, |keys, key| {
            keys.get(key)
                .is_some_and(|k| k.get(usize::from(len)) == Some(&b))
        })
    }

    /// What a key of `len` bytes that the paths in `mask` begin with matched.
    fn hit(&self, mask: u8, len: u8) -> Hit {
        let exact = self.matching(mask, |keys, key| {
            keys.get(key).is_some_and(|k| k.len() == usize::from(len))
        });
        let key = usize::from(self.level).saturating_sub(1);
        let mut inner = 0;
        for (i, path) in self.paths.iter().enumerate().take(8) {
            if exact & (1 << i) == 0 {
                continue;
            }
            if path.keys.len() == key + 1 {
                return Hit::Leaf(path.count);
            }
            inner |= 1 << i;
        }
        if inner == 0 {
            Hit::Miss
        } else {
            Hit::Inner(inner)
        }
    }

    /// The paths among `mask` for which `test(keys, index of this level's key)`.
    fn matching(&self, mask: u8, test: impl Fn(&[&[u8]], usize) -> bool) -> u8 {
        let key = usize::from(self.level).saturating_sub(1);
        let mut out = 0;
        for (i, path) in self.paths.iter().enumerate().take(8) {
            if mask & (1 << i) != 0 && test(path.keys, key) {
                out |= 1 << i;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::format;

    use super::*;

    #[test]
    fn paths_fit_the_walk() {
        for rules in [&OPENAI_CHAT, &ANTHROPIC, &OPENAI_RESPONSES] {
            for root in rules.roots {
                assert!(root.paths.len() <= 8);
                for path in root.paths {
                    assert!(!path.keys.is_empty() && path.keys.len() <= MAX_KEYS);
                }
            }
        }
    }

    /// Walks `value` (a root member's value and what follows it) byte by byte.
    fn walk(root: &'static Root, value: &str) -> (Usage, Option<usize>) {
        let mut usage = Usage::default();
        let mut v = Value::new(root);
        for (i, &b) in value.as_bytes().iter().enumerate() {
            if v.step(b, &mut usage) == Step::Done {
                return (usage, Some(i));
            }
        }
        (usage, None)
    }

    #[test]
    fn counts_and_no_counts() {
        let chat = &OPENAI_CHAT.roots[0];
        let value = r#"{"prompt_tokens":12,"completion_tokens":345}}"#;
        let (usage, end) = walk(chat, value);
        assert_eq!(usage, Usage::new(Some(12), Some(345)));
        assert_eq!(end, Some(value.len() - 1)); // the top-level object's bracket
        let (usage, end) = walk(chat, r#" null ,"x":1}"#);
        assert_eq!((usage, end), (Usage::default(), Some(6)));
        for no in [
            "1.5",
            "1e3",
            "-1",
            "\"7\"",
            "null",
            "18446744073709551616",
            "[1]",
            "{}",
        ] {
            let (usage, _) = walk(chat, &format!(r#"{{"prompt_tokens":{no}}}}}"#));
            assert_eq!(usage.input_tokens, None, "{no}");
        }
        let (usage, _) = walk(chat, r#"{"prompt_tokens":18446744073709551615}}"#);
        assert_eq!(usage.input_tokens, Some(u64::MAX));
        // Nested elsewhere, inside strings, spelled with escapes: not read.
        let (usage, end) = walk(
            chat,
            r#"{"x":{"prompt_tokens":1},"s":"\"prompt_tokens\":2","\u0070rompt_tokens":3}]"#,
        );
        assert_eq!((usage, end.is_some()), (Usage::default(), true));
    }

    #[test]
    fn nested_paths() {
        let message = &ANTHROPIC.roots[0];
        let (usage, _) = walk(
            message,
            r#"{"id":"m","content":[],"usage":{"input_tokens":25,"output_tokens":1}}}"#,
        );
        assert_eq!(usage, Usage::new(Some(25), None));
        let response = &OPENAI_RESPONSES.roots[0];
        let (usage, _) = walk(
            response,
            r#"{"output":[{"usage":{"input_tokens":9}}],"usage":{"output_tokens":4,"input_tokens":3}}}"#,
        );
        assert_eq!(usage, Usage::new(Some(3), Some(4)));
    }
}
