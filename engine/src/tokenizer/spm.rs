//! SentencePiece (`tokenizer.ggml.model = llama`): merge adjacent symbols by vocabulary score.
//!
//! The text (spaces already turned into `▁`) starts as one symbol per character. A priority queue
//! holds every adjacent pair whose concatenation is a token, best score first and leftmost first on
//! ties; the best pair is merged until none is left. A final symbol that is not a token (a
//! character outside the vocabulary) is emitted byte by byte as `<0xXX>` tokens.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::vocab::{TokenId, Vocab};

/// Appends the tokens of `text` (already escaped: spaces are `▁`) to `out`.
///
/// `text` need not be UTF-8: like llama.cpp, a symbol is as long as its first byte says (`0xxxxxxx`
/// and continuation bytes: 1, `110xxxxx`: 2, `1110xxxx`: 3, `11110xxx`: 4, cut at the end), and a
/// symbol that is not valid UTF-8 is never a token, so it falls back to byte tokens.
///
/// `byte_tokens[b]` is the token for byte `b` (`<0xXX>`, or else the one-byte string); `unknown`
/// stands in for a byte without one (llama.cpp would abort there).
pub(crate) fn encode(
    text: &[u8],
    vocab: &Vocab,
    byte_tokens: &[Option<TokenId>; 256],
    unknown: Option<TokenId>,
    out: &mut Vec<TokenId>,
) {
    let mut symbols: Vec<Symbol> = Vec::with_capacity(text.len());
    let mut start = 0;
    while start < text.len() {
        let end = (start + utf8_len(text[start])).min(text.len());
        let index = symbols.len();
        symbols.push(Symbol {
            start,
            len: end - start,
            prev: index.checked_sub(1),
            next: (end < text.len()).then_some(index + 1),
        });
        start = end;
    }

    let mut queue = BinaryHeap::with_capacity(symbols.len());
    let push_pair =
        |symbols: &[Symbol], queue: &mut BinaryHeap<Pair>, left: usize, right: usize| {
            let (l, r) = (symbols[left], symbols[right]);
            let Some(pair_text) = text.get(l.start..r.start + r.len) else {
                return;
            };
            if let Some(id) = token_of(vocab, pair_text) {
                queue.push(Pair {
                    score: vocab.score(id),
                    left,
                    right,
                    len: pair_text.len(),
                });
            }
        };
    for right in 1..symbols.len() {
        push_pair(&symbols, &mut queue, right - 1, right);
    }
    while let Some(pair) = queue.pop() {
        let (l, r) = (symbols[pair.left], symbols[pair.right]);
        if l.len == 0 || r.len == 0 || l.len + r.len != pair.len {
            continue; // Outdated: one side has been merged since.
        }
        symbols[pair.left].len += r.len;
        symbols[pair.left].next = r.next;
        symbols[pair.right].len = 0;
        if let Some(next) = r.next {
            symbols[next].prev = Some(pair.left);
        }
        if let Some(prev) = l.prev {
            push_pair(&symbols, &mut queue, prev, pair.left);
        }
        if let Some(next) = r.next {
            push_pair(&symbols, &mut queue, pair.left, next);
        }
    }

    let mut index = (!symbols.is_empty()).then_some(0);
    while let Some(i) = index {
        let symbol = symbols[i];
        index = symbol.next;
        let Some(symbol_text) = text.get(symbol.start..symbol.start + symbol.len) else {
            continue;
        };
        if let Some(id) = token_of(vocab, symbol_text) {
            out.push(id);
            continue;
        }
        for &b in symbol_text {
            if let Some(id) = byte_tokens[usize::from(b)].or(unknown) {
                out.push(id);
            }
        }
    }
}

/// The token spelled by `bytes`, if they are UTF-8 and a token.
fn token_of(vocab: &Vocab, bytes: &[u8]) -> Option<TokenId> {
    vocab.token_id(std::str::from_utf8(bytes).ok()?)
}

/// The length of a UTF-8 sequence as its first byte announces it (1 for a stray continuation byte).
fn utf8_len(first: u8) -> usize {
    match first >> 4 {
        0xC | 0xD => 2,
        0xE => 3,
        0xF => 4,
        _ => 1,
    }
}

/// A run of characters of the text, linked to its neighbours.
#[derive(Clone, Copy, Debug)]
struct Symbol {
    start: usize,
    /// Length in bytes; 0 once merged into the symbol on its left.
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

/// A candidate merge: higher score first, then the leftmost.
#[derive(Clone, Copy, Debug)]
struct Pair {
    score: f32,
    left: usize,
    right: usize,
    len: usize,
}

impl Ord for Pair {
    fn cmp(&self, other: &Self) -> Ordering {
        // Scores compare like floats in llama.cpp (`-0.0 == 0.0`); a NaN score ties.
        self.score
            .partial_cmp(&other.score)
            .unwrap_or(Ordering::Equal)
            .then_with(|| other.left.cmp(&self.left))
    }
}

impl PartialOrd for Pair {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Pair {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Pair {}
