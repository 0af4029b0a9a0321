//! Token usage: the counts a stream reports, read in constant memory.
//!
//! The error-object walk ([`json`](super::json)) stops at the top-level members a
//! dialect reports usage under (its **roots**: `usage` for OpenAI Chat Completions,
//! `message` and `usage` for Anthropic, `response` for Responses, `usageMetadata`
//! for Gemini, `delta` for Cohere, `prompt_eval_count` and `eval_count` for Ollama's
//! NDJSON lines, `usage` for Bedrock's `metadata` payload) and hands the member's
//! value to a [`Value`] walk, one byte at a time, which follows the dialect's
//! [`Path`]s below the root and reads the count at the end of each (a path with no
//! keys reads the root's value itself: Ollama's counts are top-level members).
//! The NDJSON and event-stream scanners use the same walk on a line or a payload
//! ([`ObjectUsage`]).
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
//! A dialect may report its output in two parts that add up ([`Count::Thoughts`]:
//! Gemini's `candidatesTokenCount` and `thoughtsTokenCount`, both billed as output).
//! Then the output of a root's value is the sum of the parts read in it, either
//! alone if the other is not (or is no count), and no count if the sum exceeds
//! `u64::MAX`.
//!
//! # The walk
//!
//! The state is a few words whatever the value's length: the depth of brackets
//! inside the value, how many of the open objects are on a path (at most four),
//! which paths still match at each of those levels (a bit mask each), where the walk
//! stands among a matched object's members ([`At`]), the string state of what it
//! skips, the number read so far (with a flag once it is no count), and the output
//! parts read in this value. One byte at a time, so every split of the input gives
//! the same state.

use super::json::ErrorObject;
use crate::Usage;

/// Which count a path reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Count {
    Input,
    Output,
    /// Output too, added to [`Output`](Count::Output) read in the same root value
    /// (Gemini's thinking tokens).
    Thoughts,
}

/// The keys below a root member, each inside the one before, and the count at the
/// end (at most [`MAX_KEYS`] keys; none: the root's value is the count, and then it
/// is the root's only path).
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
pub(crate) struct UsageRules {
    pub(super) roots: &'static [Root],
    /// Only the rules' done and failed events report it (Responses: the usage of
    /// `response.created` is not final).
    pub(super) final_only: bool,
}

/// The most keys a path has below its root (Cohere's `usage.tokens.input_tokens`).
const MAX_KEYS: usize = 3;

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

/// Google Gemini: `usageMetadata.promptTokenCount` (input), and
/// `usageMetadata.candidatesTokenCount` plus `thoughtsTokenCount` (output: a
/// thinking model's thoughts are billed as output, and OpenAI's
/// `completion_tokens` and Anthropic's `output_tokens` count them too). Every chunk
/// carries the counts so far; the last chunk's are the totals.
pub(super) const GEMINI: UsageRules = UsageRules {
    roots: &[Root {
        key: b"usageMetadata",
        paths: &[
            Path {
                keys: &[b"promptTokenCount"],
                count: Count::Input,
            },
            Path {
                keys: &[b"candidatesTokenCount"],
                count: Count::Output,
            },
            Path {
                keys: &[b"thoughtsTokenCount"],
                count: Count::Thoughts,
            },
        ],
    }],
    final_only: false,
};

/// Cohere v2 chat: `message-end`'s `delta.usage.tokens.input_tokens` and
/// `output_tokens`, the tokens the model read and wrote (not `billed_units`, which
/// leave out what Cohere does not bill, such as its own prompt template).
pub(super) const COHERE: UsageRules = UsageRules {
    roots: &[Root {
        key: b"delta",
        paths: &[
            Path {
                keys: &[b"usage", b"tokens", b"input_tokens"],
                count: Count::Input,
            },
            Path {
                keys: &[b"usage", b"tokens", b"output_tokens"],
                count: Count::Output,
            },
        ],
    }],
    final_only: false,
};

/// Ollama's native API (NDJSON): the done line's top-level `prompt_eval_count`
/// (input) and `eval_count` (output).
pub(crate) const OLLAMA: UsageRules = UsageRules {
    roots: &[
        Root {
            key: b"prompt_eval_count",
            paths: &[Path {
                keys: &[],
                count: Count::Input,
            }],
        },
        Root {
            key: b"eval_count",
            paths: &[Path {
                keys: &[],
                count: Count::Output,
            }],
        },
    ],
    final_only: false,
};

/// Amazon Bedrock ConverseStream: the `metadata` event's payload,
/// `usage.inputTokens` and `usage.outputTokens`.
pub(crate) const BEDROCK: UsageRules = UsageRules {
    roots: &[Root {
        key: b"usage",
        paths: &[
            Path {
                keys: &[b"inputTokens"],
                count: Count::Input,
            },
            Path {
                keys: &[b"outputTokens"],
                count: Count::Output,
            },
        ],
    }],
    final_only: false,
};

/// The usage one JSON object reports (an NDJSON line, an event-stream payload):
/// the error-object walk, looking for no error, only for the rules' roots. Fed the
/// object's bytes in any pieces; its counts are kept once the object closed, with
/// nothing but whitespace after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ObjectUsage(ErrorObject);

impl ObjectUsage {
    /// A walk at the start of an object, reading usage where `rules` say.
    pub(crate) const fn new(rules: &'static UsageRules) -> Self {
        Self(ErrorObject::new(false, Some(rules)))
    }

    /// More of the object's bytes.
    pub(crate) fn feed(&mut self, bytes: &[u8]) {
        if !self.0.is_dead() {
            self.0.feed(bytes);
        }
    }

    /// The counts the object reported, once it is complete.
    pub(crate) fn usage(&self) -> Option<Usage> {
        self.0.usage()
    }
}

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
    /// The output parts read in this value: [`Count::Output`], [`Count::Thoughts`].
    parts: [Option<u64>; 2],
}

impl Value {
    /// A walk right after the colon of a root member whose paths are `paths`.
    pub(super) const fn new(root: &'static Root) -> Self {
        let all = match root.paths.len() {
            n @ 0..8 => (1u8 << n) - 1,
            _ => u8::MAX,
        };
        let at = match root.paths {
            // The root's value is the count.
            [Path { keys: [], count }] => At::Value(Hit::Leaf(*count)),
            _ => At::Value(Hit::Inner(all)),
        };
        Self {
            paths: root.paths,
            depth: 0,
            level: 0,
            masks: [all, 0, 0, 0],
            at,
            in_str: false,
            escape: false,
            parts: [None, None],
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
                    self.count(count, n, usage);
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

    /// A count read: input as it is, output the sum of the parts read so far.
    fn count(&mut self, count: Count, n: u64, usage: &mut Usage) {
        let part = match count {
            Count::Input => {
                usage.input_tokens = Some(n);
                return;
            }
            Count::Output => 0,
            Count::Thoughts => 1,
        };
        self.parts[part] = Some(n);
        usage.output_tokens = match self.parts {
            [Some(a), Some(b)] => a.checked_add(b),
            [a, b] => a.or(b),
        };
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
        for rules in [
            &OPENAI_CHAT,
            &ANTHROPIC,
            &OPENAI_RESPONSES,
            &GEMINI,
            &COHERE,
            &OLLAMA,
            &BEDROCK,
        ] {
            // The error-object walk stops at six roots at most.
            assert!(rules.roots.len() <= 6);
            for root in rules.roots {
                assert!(root.paths.len() <= 8);
                for path in root.paths {
                    assert!(path.keys.len() <= MAX_KEYS);
                    // A path with no keys is its root's only one.
                    assert!(!path.keys.is_empty() || root.paths.len() == 1);
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

    #[test]
    fn output_parts_add_up() {
        let gemini = &GEMINI.roots[0];
        let (usage, _) = walk(
            gemini,
            r#"{"promptTokenCount":9,"thoughtsTokenCount":100,"candidatesTokenCount":21}}"#,
        );
        assert_eq!(usage, Usage::new(Some(9), Some(121)));
        // One part alone; the other no count.
        let (usage, _) = walk(gemini, r#"{"thoughtsTokenCount":7}}"#);
        assert_eq!(usage, Usage::new(None, Some(7)));
        let (usage, _) = walk(
            gemini,
            r#"{"candidatesTokenCount":5,"thoughtsTokenCount":1.5}}"#,
        );
        assert_eq!(usage, Usage::new(None, Some(5)));
        // A sum past `u64::MAX` is no count.
        let (usage, _) = walk(
            gemini,
            r#"{"candidatesTokenCount":18446744073709551615,"thoughtsTokenCount":1}}"#,
        );
        assert_eq!(usage, Usage::default());
        // Given twice: the last count of each part.
        let (usage, _) = walk(
            gemini,
            r#"{"candidatesTokenCount":5,"thoughtsTokenCount":2,"candidatesTokenCount":6}}"#,
        );
        assert_eq!(usage, Usage::new(None, Some(8)));
    }

    #[test]
    fn three_keys_deep_and_no_keys() {
        let cohere = &COHERE.roots[0];
        let (usage, _) = walk(
            cohere,
            r#"{"finish_reason":"COMPLETE","usage":{"billed_units":{"input_tokens":5,"output_tokens":14},"tokens":{"input_tokens":71,"output_tokens":14}}}}"#,
        );
        assert_eq!(usage, Usage::new(Some(71), Some(14)));
        let (usage, _) = walk(
            cohere,
            r#"{"usage":{"input_tokens":1,"tokens":[{"input_tokens":2}]}}}"#,
        );
        assert_eq!(usage, Usage::default());
        // Ollama: the root's value is the count.
        let [prompt, eval] = OLLAMA.roots else {
            panic!("two roots")
        };
        let (usage, end) = walk(prompt, " 26 ,\"eval_count\":5}");
        assert_eq!((usage, end), (Usage::new(Some(26), None), Some(4)));
        let (usage, end) = walk(eval, "5}");
        assert_eq!((usage, end), (Usage::new(None, Some(5)), Some(1)));
        for no in ["{\"eval_count\":5}", "[5]", "\"5\"", "-5", "5.0", "null"] {
            let (usage, end) = walk(eval, &format!("{no}}}"));
            assert_eq!((usage, end), (Usage::default(), Some(no.len())), "{no}");
        }
    }
}
