//! Special tokens in the input text: split the text into plain-text fragments and special tokens.
//!
//! llama.cpp takes the special tokens (control, user-defined and unknown types) longest first and,
//! for each one in turn, cuts every remaining plain-text fragment at its leftmost non-overlapping
//! occurrences. Control and unknown tokens take part only when `parse_special` is set;
//! user-defined tokens always do (Hugging Face's "added tokens" behave the same way). A token
//! marked `RSTRIP`/`LSTRIP` also swallows the ASCII white space after/before it (llama.cpp sets
//! these marks only for Phi-3 models, by model name).
//!
//! Searching for thousands of tokens one by one would scan the text thousands of times, so all
//! occurrences of all tokens are found in one Aho-Corasick pass, then replayed in llama.cpp's
//! order: a token's occurrence is taken when it starts after the previous one taken for the same
//! token and lies entirely in text not yet claimed. That gives the same fragments.

use aho_corasick::{AhoCorasick, MatchKind};

use super::vocab::{attr, TokenId, Vocab};

/// A piece of the input: plain text to tokenize, or a special token found in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fragment<'t> {
    Text(&'t [u8]),
    Token(TokenId),
}

/// Finds special tokens in text.
pub(crate) struct SpecialMatcher {
    /// Every special token; used when `parse_special` is set.
    all: Option<Searcher>,
    /// Only user-defined tokens; used otherwise.
    user_defined: Option<Searcher>,
}

/// An automaton over some special tokens; pattern `i` is `ids[i]`, in priority order.
struct Searcher {
    automaton: AhoCorasick,
    ids: Vec<TokenId>,
}

impl Searcher {
    /// `None` when there is no token to look for.
    fn new(vocab: &Vocab, mut ids: Vec<TokenId>) -> Option<Searcher> {
        if ids.is_empty() {
            return None;
        }
        // Longest first; llama.cpp leaves the order of equal lengths unspecified, we take id order.
        ids.sort_by_key(|&id| (std::cmp::Reverse(vocab.text(id).map_or(0, str::len)), id));
        let patterns: Vec<&str> = ids
            .iter()
            .map(|&id| vocab.text(id).unwrap_or_default())
            .collect();
        match AhoCorasick::builder()
            .match_kind(MatchKind::Standard)
            .build(&patterns)
        {
            Ok(automaton) => Some(Searcher { automaton, ids }),
            Err(error) => {
                tracing::warn!(%error, "cannot search for special tokens; they will be read as plain text");
                None
            }
        }
    }
}

impl SpecialMatcher {
    pub(crate) fn new(vocab: &Vocab) -> SpecialMatcher {
        let special = |mask: u16| vocab.ids().filter(|&id| vocab.has_attr(id, mask)).collect();
        SpecialMatcher {
            all: Searcher::new(
                vocab,
                special(attr::CONTROL | attr::USER_DEFINED | attr::UNKNOWN),
            ),
            user_defined: Searcher::new(vocab, special(attr::USER_DEFINED)),
        }
    }

    /// Splits `text` into fragments, in order.
    pub(crate) fn partition<'t>(
        &self,
        text: &'t [u8],
        parse_special: bool,
        vocab: &Vocab,
    ) -> Vec<Fragment<'t>> {
        if text.is_empty() {
            return Vec::new();
        }
        let searcher = if parse_special {
            &self.all
        } else {
            &self.user_defined
        };
        let Some(searcher) = searcher else {
            return vec![Fragment::Text(text)];
        };

        let mut found: Vec<(usize, usize, usize)> = searcher
            .automaton
            .find_overlapping_iter(text)
            .map(|m| (m.pattern().as_usize(), m.start(), m.end()))
            .collect();
        if found.is_empty() {
            return vec![Fragment::Text(text)];
        }
        found.sort_unstable();

        let bytes = text;
        let mut state = vec![ByteState::Free; bytes.len()];
        let mut taken: Vec<(usize, usize, TokenId)> = Vec::new();
        let mut current_pattern = usize::MAX;
        let mut cursor = 0;
        for (pattern, start, end) in found {
            if pattern != current_pattern {
                current_pattern = pattern;
                cursor = 0;
            }
            let Some(&id) = searcher.ids.get(pattern) else {
                continue;
            };
            if start < cursor || state[start..end].iter().any(|&s| s != ByteState::Free) {
                continue;
            }
            state[start..end].fill(ByteState::Token);
            taken.push((start, end, id));
            cursor = end;
            let attrs = vocab.attrs(id);
            if attrs & attr::LSTRIP != 0 {
                let mut k = start;
                while k > 0 && state[k - 1] == ByteState::Free && is_c_space(bytes[k - 1]) {
                    state[k - 1] = ByteState::Stripped;
                    k -= 1;
                }
            }
            if attrs & attr::RSTRIP != 0 {
                let mut k = end;
                while k < bytes.len() && state[k] == ByteState::Free && is_c_space(bytes[k]) {
                    state[k] = ByteState::Stripped;
                    k += 1;
                }
                cursor = k;
            }
        }
        taken.sort_unstable();

        let mut fragments = Vec::with_capacity(taken.len() * 2 + 1);
        let push_text = |from: usize, to: usize, fragments: &mut Vec<Fragment<'t>>| {
            // Free bytes between two claimed spans, minus stripped white space at either end.
            let (mut from, mut to) = (from, to);
            while from < to && state[from] == ByteState::Stripped {
                from += 1;
            }
            while to > from && state[to - 1] == ByteState::Stripped {
                to -= 1;
            }
            if let Some(piece) = text.get(from..to).filter(|p| !p.is_empty()) {
                fragments.push(Fragment::Text(piece));
            }
        };
        let mut pos = 0;
        for (start, end, id) in taken {
            push_text(pos, start, &mut fragments);
            fragments.push(Fragment::Token(id));
            pos = end;
        }
        push_text(pos, bytes.len(), &mut fragments);
        fragments
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ByteState {
    Free,
    Token,
    Stripped,
}

/// C's `isspace` in the "C" locale.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r')
}
