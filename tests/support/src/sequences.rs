//! Every sequence of tokens up to a length, for the exhaustive split tests.

/// Every concatenation of up to `max_len` tokens from `tokens` (repeats allowed),
/// depth first, the empty input first: `sum(tokens.len()^n for n in 0..=max_len)`
/// inputs in all.
pub fn token_sequences<'a>(
    tokens: &'a [&'a [u8]],
    max_len: usize,
) -> impl Iterator<Item = Vec<u8>> + 'a {
    // The indices of the next sequence's tokens; `None` once every one was given.
    let mut next = Some(Vec::<usize>::new());
    core::iter::from_fn(move || {
        let stack = next.take()?;
        let input = stack
            .iter()
            .flat_map(|&t| tokens[t].iter().copied())
            .collect();
        next = successor(stack, tokens.len(), max_len);
        Some(input)
    })
}

/// The sequence after `stack`, depth first: one token longer while it may grow, else
/// the last token that can be raised is raised and what follows it dropped.
fn successor(mut stack: Vec<usize>, tokens: usize, max_len: usize) -> Option<Vec<usize>> {
    if stack.len() < max_len && tokens > 0 {
        stack.push(0);
        return Some(stack);
    }
    while let Some(last) = stack.pop() {
        if last + 1 < tokens {
            stack.push(last + 1);
            return Some(stack);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sequence_once() {
        let tokens: &[&[u8]] = &[b"a", b"bc"];
        let all: Vec<Vec<u8>> = token_sequences(tokens, 2).collect();
        let expected: Vec<&[u8]> = vec![b"", b"a", b"aa", b"abc", b"bc", b"bca", b"bcbc"];
        assert_eq!(all, expected);
        assert_eq!(token_sequences(tokens, 3).count(), 1 + 2 + 4 + 8);
        assert_eq!(token_sequences(&[], 3).count(), 1);
    }
}
