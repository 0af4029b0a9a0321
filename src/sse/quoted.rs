//! Short lines searched in blocks the compiler vectorizes: whether a line holds a
//! line end, or one of a few names in quotes.
//!
//! A chat chunk's line is some fifty bytes. `memchr`'s searchers are fastest on long
//! input, but each call costs a few dozen instructions before its first byte, and
//! the quick reject ([`SseScanner::json_may_count`](super::SseScanner)) made a line
//! end search and then one per name. Here a block of sixteen bytes is tested with a
//! loop the compiler turns into a handful of vector instructions (SSE2, in baseline
//! x86-64; no `unsafe`, no run-time detection), for all of it at once: "may a byte
//! be a line end, or a position open a name". Only a block that answers yes is
//! looked at closer (a word at a time). The last block overlaps the one before, so
//! no byte is left to a slow tail loop.
//!
//! A name of `n` bytes in quotes is a quote at some `i`, and a quote at `i + n + 1`
//! after the name's last byte: the block test finds every such candidate for the
//! names of one length and two last bytes (the names the scanner stops at are few
//! and mostly of one length: `"error"` and `"usage"` for OpenAI Chat Completions;
//! a chat chunk's other five-letter strings, `"index"`, `"delta"`, `"model"`, end
//! in other bytes), and each candidate is checked exactly by the caller, so the
//! answer is exactly whether a name stands in quotes.

/// The bytes tested at once.
const BLOCK: usize = 16;
/// `0x01` in every byte.
const ONES: u64 = u64::from_le_bytes([0x01; 8]);
/// `0x80` in every byte.
const HIGHS: u64 = u64::from_le_bytes([0x80; 8]);

/// The most names a set holds.
pub(super) const MAX: usize = 4;

/// What the block tests look for: a few names (none of which holds a quote or a
/// line end), by length and last byte. The names themselves are the caller's: it
/// says whether a candidate is one (`is_name`, given the bytes between the quotes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Names {
    groups: [Group; MAX],
    len: u8,
}

/// Names of one length, `gap - 1` bytes, that end with one of two bytes (an empty
/// name "ends" with its opening quote): a block test looks for a quote, and a
/// quote `gap` bytes after it with one of the two before it. The byte tested is
/// the last, not the first: at an offset known only at run time, the compiler
/// loads it as a block of its own (a first byte, one after the quote, it rebuilds
/// from the quotes' block with shuffles, far slower).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Group {
    gap: u16,
    lasts: [u8; 2],
}

impl Names {
    /// The first [`MAX`] of `names`; `None` if there are more, or a name is longer
    /// than a group holds.
    pub(super) fn new<'a>(names: impl IntoIterator<Item = &'a [u8]>) -> Option<Self> {
        let mut set = Self {
            groups: [Group {
                gap: 0,
                lasts: [0; 2],
            }; MAX],
            len: 0,
        };
        for name in names {
            let gap = u16::try_from(name.len() + 1).ok()?;
            let last = name.last().copied().unwrap_or(b'"');
            let groups = &mut set.groups[..usize::from(set.len)];
            // A group of this length with the same last byte, or room for it (its
            // second byte still a copy of the first).
            let fits = groups.iter_mut().find(|group| {
                group.gap == gap
                    && (group.lasts.contains(&last) || group.lasts[0] == group.lasts[1])
            });
            match fits {
                Some(group) => {
                    group.lasts[1] = if group.lasts[0] == last {
                        group.lasts[1]
                    } else {
                        last
                    }
                }
                None => {
                    *set.groups.get_mut(usize::from(set.len))? = Group {
                        gap,
                        lasts: [last; 2],
                    };
                    set.len += 1;
                }
            }
        }
        Some(set)
    }

    #[inline]
    fn groups(&self) -> &[Group] {
        &self.groups[..usize::from(self.len)]
    }

    /// Whether `value` holds one of the names in quotes (`is_name` of the bytes
    /// between two quotes says whether they spell one).
    pub(super) fn any_in(&self, value: &[u8], is_name: impl Fn(&[u8]) -> bool) -> bool {
        self.groups()
            .iter()
            .any(|group| pairs(value, group, &is_name))
    }

    /// Whether `value` holds no CR or LF and none of the names in quotes (as
    /// [`any_in`](Self::any_in)): one pass for line ends and the names of the
    /// first group, a pass for each other group.
    #[inline]
    pub(super) fn is_plain(&self, value: &[u8], is_name: impl Fn(&[u8]) -> bool) -> bool {
        let Some((group, others)) = self.groups().split_first() else {
            return !has_line_end(value);
        };
        let gap = usize::from(group.gap);
        let n = value.len();
        if n < BLOCK + gap {
            return !has_line_end(value) && !self.any_in(value, is_name);
        }
        if !clear(value, gap, group.lasts) {
            // A line end, or a quote that may open a name: look closer.
            return !has_line_end(value) && !self.any_in(value, is_name);
        }
        !others.iter().any(|group| pairs(value, group, &is_name))
    }
}

/// Whether one of the names of `group` stands in quotes in `value`.
fn pairs(value: &[u8], group: &Group, is_name: &impl Fn(&[u8]) -> bool) -> bool {
    let gap = usize::from(group.gap);
    // The quotes that may open a name: those with room for it and its close.
    let Some(starts) = value.len().checked_sub(gap) else {
        return false;
    };
    if starts < BLOCK {
        return (0..starts).any(|i| spelled_at(value, i, gap, is_name));
    }
    let lasts = group.lasts.map(|b| [b; BLOCK]);
    let mut at = 0;
    loop {
        // The last block overlaps the one before: a few starts tested twice.
        let i = at.min(starts - BLOCK);
        if let (Some(a), Some(b), Some(c)) = (
            block(value, i),
            block(value, i + gap),
            block(value, i + gap - 1),
        ) {
            if any_candidate(a, b, c, &lasts) && spelled_in(value, i, a, b, gap, is_name) {
                return true;
            }
        }
        if i == starts - BLOCK {
            return false;
        }
        at += BLOCK;
    }
}

/// Whether a name opens in the block `a` at `at`, `b` being the block `gap` bytes
/// later: its positions with a quote in both are found a word at a time (the
/// lowest exactly, others maybe falsely) and checked.
fn spelled_in(
    value: &[u8],
    at: usize,
    a: &[u8; BLOCK],
    b: &[u8; BLOCK],
    gap: usize,
    is_name: &impl Fn(&[u8]) -> bool,
) -> bool {
    const QUOTES: u64 = u64::from_le_bytes([b'"'; 8]);
    let words = |block: &[u8; BLOCK]| {
        let (low, high) = block.split_at(8);
        [low, high].map(|half| <[u8; 8]>::try_from(half).map_or(0, u64::from_le_bytes))
    };
    let (a, b) = (words(a), words(b));
    (0..2).any(|half| {
        let mut flags = zero_bytes((a[half] ^ QUOTES) | (b[half] ^ QUOTES));
        while flags != 0 {
            let i = at + 8 * half + flags.trailing_zeros() as usize / 8;
            if spelled_at(value, i, gap, is_name) {
                return true;
            }
            flags &= flags - 1;
        }
        false
    })
}

/// Whether a quote at `i` in `value`, and one `gap` bytes later, enclose a name.
fn spelled_at(value: &[u8], i: usize, gap: usize, is_name: &impl Fn(&[u8]) -> bool) -> bool {
    match (value.get(i), value.get(i + gap), value.get(i + 1..i + gap)) {
        (Some(b'"'), Some(b'"'), Some(inside)) => is_name(inside),
        _ => false,
    }
}

/// The sixteen bytes at `i`, if `bytes` holds them.
#[inline]
fn block(bytes: &[u8], i: usize) -> Option<&[u8; BLOCK]> {
    bytes.get(i..)?.first_chunk::<BLOCK>()
}

/// Whether at some place the byte of `a` is a quote, the byte of `b` too, and the
/// byte of `c` one of `lasts`. Written for the compiler to vectorize (a compare
/// per block and byte, ands and ors, a mask).
#[inline(always)]
fn any_candidate(
    a: &[u8; BLOCK],
    b: &[u8; BLOCK],
    c: &[u8; BLOCK],
    lasts: &[[u8; BLOCK]; 2],
) -> bool {
    let mut any = 0;
    for k in 0..BLOCK {
        let last = u8::from(c[k] == lasts[0][k]) | u8::from(c[k] == lasts[1][k]);
        any |= u8::from(a[k] == b'"') & u8::from(b[k] == b'"') & last;
    }
    any != 0
}

/// Whether no byte of `value` (`BLOCK + gap` bytes at least) may be a line end
/// and no quote in it may open a name `gap - 1` bytes long that ends in one of
/// `lasts` ([`may_end`], [`any_candidate`]): the test that clears a chat chunk,
/// with no branch but the loop's. The blocks of starts (a name's close must be in
/// `value`) are tested for line ends too; the last of them overlaps the one before,
/// and so does the last block of line ends (past the last start). `false`: look
/// closer.
fn clear(value: &[u8], gap: usize, lasts: [u8; 2]) -> bool {
    let n = value.len();
    if gap == 0 || n < gap + BLOCK {
        return false;
    }
    let starts = n - gap;
    let lasts = lasts.map(|b| [b; BLOCK]);
    // What each place of a block has seen: a line end, or a candidate.
    let mut seen = [0u8; BLOCK];
    let mut test = |a: &[u8], ends: &[u8], closes: &[u8], more: &[u8]| {
        let (Ok(a), Ok(ends), Ok(closes), Ok(more)) = (
            <&[u8; BLOCK]>::try_from(a),
            <&[u8; BLOCK]>::try_from(ends),
            <&[u8; BLOCK]>::try_from(closes),
            <&[u8; BLOCK]>::try_from(more),
        ) else {
            seen[0] = 1; // never (each is a block): look closer
            return;
        };
        for k in 0..BLOCK {
            let last = u8::from(ends[k] == lasts[0][k]) | u8::from(ends[k] == lasts[1][k]);
            let candidate = u8::from(a[k] == b'"') & u8::from(closes[k] == b'"') & last;
            let line_end = u8::from(a[k].wrapping_sub(b'\n') <= b'\r' - b'\n')
                | u8::from(more[k].wrapping_sub(b'\n') <= b'\r' - b'\n');
            seen[k] |= candidate | line_end;
        }
    };
    // The bytes at each start, before each close, and at each close.
    let (opens, ends, closes) = (&value[..starts], &value[gap - 1..n - 1], &value[gap..]);
    let blocks = opens.chunks_exact(BLOCK);
    for ((a, e), c) in blocks
        .zip(ends.chunks_exact(BLOCK))
        .zip(closes.chunks_exact(BLOCK))
    {
        test(a, e, c, a);
    }
    // The last starts, and the last line ends: all of them if the name's close is
    // at most a block away (the last block of starts and the last of the value
    // meet), else by blocks.
    let (Some(a), Some(e), Some(c), Some(tail)) = (
        opens.last_chunk::<BLOCK>(),
        ends.last_chunk::<BLOCK>(),
        closes.last_chunk::<BLOCK>(),
        value.last_chunk::<BLOCK>(),
    ) else {
        return false; // never (`starts >= BLOCK`): look closer
    };
    test(a, e, c, tail);
    seen.iter().all(|&s| s == 0) && (gap <= BLOCK || !may_end_in(&value[starts..]))
}

/// Whether a block of `bytes` (sixteen at least) may hold a line end ([`may_end`]).
fn may_end_in(bytes: &[u8]) -> bool {
    let last = bytes.len().saturating_sub(BLOCK);
    let mut at = 0;
    loop {
        // The last block overlaps the one before.
        let i = at.min(last);
        if block(bytes, i).is_none_or(may_end) {
            return true;
        }
        if i == last {
            return false;
        }
        at += BLOCK;
    }
}

/// Whether `bytes` holds a CR or LF.
fn has_line_end(bytes: &[u8]) -> bool {
    if bytes.len() < BLOCK {
        return bytes.iter().any(|&b| b == b'\r' || b == b'\n');
    }
    let last = bytes.len() - BLOCK;
    let mut at = 0;
    loop {
        // The last block overlaps the one before.
        let i = at.min(last);
        if block(bytes, i).is_none_or(any_line_end) {
            return true;
        }
        if i == last {
            return false;
        }
        at += BLOCK;
    }
}

/// Whether `block` holds a CR or LF, vectorized as [`any_candidate`].
#[inline(always)]
fn any_line_end(block: &[u8; BLOCK]) -> bool {
    let mut any = 0;
    for &b in block {
        any |= u8::from(b == b'\r') | u8::from(b == b'\n');
    }
    any != 0
}

/// Whether `block` holds a byte from LF to CR (LF, VT, FF, CR: a line end, or
/// one of two control bytes JSON never holds raw): one compare of a range, where
/// the two line ends are two compares and, as compiled, shuffles.
#[inline(always)]
fn may_end(block: &[u8; BLOCK]) -> bool {
    let mut any = 0;
    for &b in block {
        any |= u8::from(b.wrapping_sub(b'\n') <= b'\r' - b'\n');
    }
    any != 0
}

/// The high bit of each zero byte of `x`, the lowest exact (bytes above a zero may
/// be flagged too).
#[inline]
fn zero_bytes(x: u64) -> u64 {
    x.wrapping_sub(ONES) & !x & HIGHS
}

#[cfg(all(test, feature = "alloc"))]
mod tests {
    use alloc::{vec, vec::Vec};

    use super::*;

    /// `names` as a set and its test.
    fn set<'a>(names: &'a [&'a [u8]]) -> (Names, impl Fn(&[u8]) -> bool + 'a) {
        let set = Names::new(names.iter().copied()).expect("at most four short names");
        (set, |inside: &[u8]| names.contains(&inside))
    }

    /// Every word over `alphabet` of at most `longest` bytes, the empty one first.
    fn words(alphabet: &[u8], longest: usize) -> Vec<Vec<u8>> {
        let mut words = vec![Vec::new()];
        let mut level = vec![Vec::new()];
        for _ in 0..longest {
            level = (level.iter())
                .flat_map(|word: &Vec<u8>| {
                    alphabet.iter().map(move |&b| [&word[..], &[b]].concat())
                })
                .collect();
            words.extend(level.iter().cloned());
        }
        words
    }

    fn naive(value: &[u8], names: &[&[u8]]) -> bool {
        names.iter().any(|name| {
            (0..value.len()).any(|i| {
                value[i..].starts_with(b"\"")
                    && value[i + 1..].starts_with(name)
                    && value.get(i + 1 + name.len()) == Some(&b'"')
            })
        })
    }

    /// Every value up to 7 bytes over a small alphabet, then those spread over
    /// longer values at every offset, against a naive search.
    #[test]
    fn finds_exactly_the_quoted_names() {
        const ALPHABET: &[u8] = b"\"ab";
        let name_sets: &[&[&[u8]]] = &[
            &[b"a"],
            &[b"ab", b"ba"],
            &[b"ab", b"b", b"aab"],
            &[b""],
            &[b"error", b"usage"],
        ];
        for value in &words(ALPHABET, 7) {
            for pad in [0, 3, 9, 17, 30] {
                let mut long = vec![b'x'; pad];
                long.extend_from_slice(value);
                long.extend(core::iter::repeat_n(b'"', pad % 4));
                long.extend(core::iter::repeat_n(b'y', pad / 2));
                for names in name_sets {
                    assert_eq!(
                        set(names).0.any_in(&long, set(names).1),
                        naive(&long, names),
                        "{long:?} {names:?}"
                    );
                }
            }
        }
        let chunk = br#"{"choices":[{"index":0,"delta":{"content":"token 5 "}}]}"#;
        let any_in = |names: &[&[u8]], value: &[u8]| {
            let (set, is_name) = set(names);
            set.any_in(value, is_name)
        };
        assert!(!any_in(&[b"error", b"usage"], chunk));
        assert!(any_in(&[b"error", b"delta"], chunk));
        assert!(any_in(&[b"error", b"usage"], br#"{"x":1,"usage":{}}"#));
        let long = br#"{"x":"a very long string value here","error":1}"#;
        assert!(any_in(&[b"error"], long));
        assert!(any_in(
            &[b"usageMetadata", b"x"],
            br#"{"a":"b","usageMetadata":{}}"#
        ));
    }

    /// `is_plain` is "no line end and no name": every value up to 6 bytes over an
    /// alphabet with quotes, letters of the names and line ends, at every offset of
    /// longer values.
    #[test]
    fn plain_is_no_line_end_and_no_name() {
        const ALPHABET: &[u8] = b"\"ab\r\n";
        let name_sets: &[&[&[u8]]] = &[
            &[],
            &[b"a"],
            &[b"ab", b"ba", b"bb"],
            &[b"ab", b"b", b"aab", b"ba"],
            &[b""],
            // Longer than a block: its close is past the last block of starts.
            &[b"abababababababababab", b"b"],
        ];
        for value in &words(ALPHABET, 6) {
            for pad in [0, 3, 9, 16, 17, 30] {
                let mut long = vec![b'x'; pad];
                long.extend_from_slice(value);
                long.extend(core::iter::repeat_n(b'y', pad / 2));
                for names in name_sets {
                    let ends = long.iter().any(|&b| b == b'\r' || b == b'\n');
                    let plain = !ends && !naive(&long, names);
                    let (set, is_name) = set(names);
                    assert_eq!(set.is_plain(&long, is_name), plain, "{long:?} {names:?}");
                }
            }
        }
    }
}
