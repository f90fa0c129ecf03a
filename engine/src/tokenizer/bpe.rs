//! Byte-level BPE: merge the GPT-2 spelling of a word by merge rank, lowest rank first.
//!
//! Like llama.cpp, a word starts as one symbol per byte and a priority queue holds every adjacent
//! pair that has a merge rule, ordered by (rank, position); symbols form a linked list, so each
//! merge costs O(log n) and a long word stays fast. Strings are interned once, when the tokenizer
//! is built: every left part, right part and result of a merge rule gets a "piece" id, so the
//! merge loop looks up pairs of integers instead of concatenating strings.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rustc_hash::FxHashMap as HashMap;

use super::byte_level::byte_spellings;
use super::vocab::{TokenId, Vocab};

/// A symbol whose text is not part of any merge rule.
const NO_PIECE: u32 = u32::MAX;

/// Merge rules and the tables that make applying them cheap.
pub(crate) struct BpeModel {
    /// `(left piece, right piece)` -> `(rank, merged piece)`.
    merges: HashMap<(u32, u32), (u32, u32)>,
    /// Token id of each piece's text, if the vocabulary has it.
    piece_tokens: Vec<Option<TokenId>>,
    /// Text of each piece (GPT-2 spelling).
    piece_texts: Vec<Box<str>>,
    /// Piece of each byte's one-character spelling.
    byte_pieces: [u32; 256],
    /// GPT-2 spelling of each byte.
    byte_spellings: [String; 256],
    /// Whether a word that is itself a token skips merging.
    ignore_merges: bool,
}

impl BpeModel {
    /// Builds the model from `tokenizer.ggml.merges` entries (`"left right"`, in rank order).
    pub(crate) fn new(merge_rules: &[String], vocab: &Vocab, ignore_merges: bool) -> BpeModel {
        let mut splits: Vec<(&str, &str)> = Vec::with_capacity(merge_rules.len());
        for rule in merge_rules {
            // llama.cpp splits at the first space after the first byte; a rule without one is
            // recorded as the pair of empty strings, which never matches a symbol.
            let split = rule
                .as_bytes()
                .iter()
                .skip(1)
                .position(|&b| b == b' ')
                .and_then(|i| Some((rule.get(..i + 1)?, rule.get(i + 2..)?)));
            splits.push(split.unwrap_or(("", "")));
        }
        let mut piece_texts: Vec<Box<str>> = Vec::with_capacity(splits.len() * 2);
        for &(left, right) in &splits {
            piece_texts.push(left.into());
            piece_texts.push(right.into());
            piece_texts.push(format!("{left}{right}").into_boxed_str());
        }
        piece_texts.retain(|t| !t.is_empty());
        piece_texts.sort_unstable();
        piece_texts.dedup();
        let piece_index: HashMap<&str, u32> = piece_texts
            .iter()
            .enumerate()
            .map(|(i, t)| (&**t, i as u32))
            .collect();

        let mut merges = HashMap::with_capacity_and_hasher(splits.len(), Default::default());
        for (rank, (left, right)) in splits.iter().enumerate() {
            let (Some(&l), Some(&r)) = (piece_index.get(left), piece_index.get(right)) else {
                continue;
            };
            let merged = format!("{left}{right}");
            let Some(&m) = piece_index.get(merged.as_str()) else {
                continue;
            };
            // The first rule for a pair wins, as with llama.cpp's `emplace`.
            merges.entry((l, r)).or_insert((rank as u32, m));
        }
        let piece_tokens = piece_texts.iter().map(|t| vocab.token_id(t)).collect();
        let byte_spellings = byte_spellings();
        let byte_pieces = std::array::from_fn(|b| {
            piece_index
                .get(byte_spellings[b].as_str())
                .copied()
                .unwrap_or(NO_PIECE)
        });
        BpeModel {
            merges,
            piece_tokens,
            piece_texts,
            byte_pieces,
            byte_spellings,
            ignore_merges,
        }
    }

    /// Appends the tokens of one pre-tokenized word to `out`.
    pub(crate) fn encode_word(
        &self,
        word: &str,
        vocab: &Vocab,
        scratch: &mut BpeScratch,
        out: &mut Vec<TokenId>,
    ) {
        if word.is_empty() {
            return;
        }
        if self.ignore_merges {
            scratch.spelled.clear();
            for &b in word.as_bytes() {
                scratch
                    .spelled
                    .push_str(&self.byte_spellings[usize::from(b)]);
            }
            if let Some(id) = vocab.token_id(&scratch.spelled) {
                out.push(id);
                return;
            }
        }

        let symbols = &mut scratch.symbols;
        symbols.clear();
        let n = word.len();
        for (i, &b) in word.as_bytes().iter().enumerate() {
            symbols.push(Symbol {
                len: 1,
                piece: self.byte_pieces[usize::from(b)],
                prev: i.checked_sub(1),
                next: (i + 1 < n).then_some(i + 1),
            });
        }
        let queue = &mut scratch.queue;
        queue.clear();
        for left in 1..n {
            self.push_pair(symbols, queue, left - 1, left);
        }
        while let Some(Reverse(pair)) = queue.pop() {
            let (left_len, right_len) = match (symbols.get(pair.left), symbols.get(pair.right)) {
                (Some(l), Some(r)) => (l.len, r.len),
                _ => continue,
            };
            if left_len == 0
                || right_len == 0
                || left_len != pair.left_len
                || right_len != pair.right_len
            {
                continue; // Outdated: one side has been merged since.
            }
            let right_next = symbols[pair.right].next;
            {
                let left = &mut symbols[pair.left];
                left.len += right_len;
                left.piece = pair.merged;
                left.next = right_next;
            }
            symbols[pair.right].len = 0;
            if let Some(next) = right_next {
                symbols[next].prev = Some(pair.left);
            }
            if let Some(prev) = symbols[pair.left].prev {
                self.push_pair(symbols, queue, prev, pair.left);
            }
            if let Some(next) = right_next {
                self.push_pair(symbols, queue, pair.left, next);
            }
        }

        let mut start = 0;
        let mut index = Some(0);
        while let Some(i) = index {
            let symbol = symbols[i];
            let bytes = word
                .as_bytes()
                .get(start..start + symbol.len)
                .unwrap_or_default();
            start += symbol.len;
            index = symbol.next;
            let piece = usize::try_from(symbol.piece).ok();
            let token = match piece.and_then(|p| self.piece_tokens.get(p)) {
                Some(&token) => token,
                None => bytes
                    .first()
                    .filter(|_| bytes.len() == 1)
                    .and_then(|&b| vocab.token_id(&self.byte_spellings[usize::from(b)])),
            };
            if let Some(token) = token {
                out.push(token);
                continue;
            }
            // No token spells this symbol: llama.cpp then looks up each byte of its spelling alone,
            // which only ever finds ASCII characters.
            let spelling: String = match piece.and_then(|p| self.piece_texts.get(p)) {
                Some(text) => text.to_string(),
                None => bytes
                    .iter()
                    .map(|&b| self.byte_spellings[usize::from(b)].as_str())
                    .collect(),
            };
            for b in spelling.bytes().filter(u8::is_ascii) {
                if let Some(id) = vocab.token_id(char::from(b).encode_utf8(&mut [0; 4])) {
                    out.push(id);
                }
            }
        }
    }

    fn push_pair(
        &self,
        symbols: &[Symbol],
        queue: &mut BinaryHeap<Reverse<Pair>>,
        left: usize,
        right: usize,
    ) {
        let (l, r) = (symbols[left], symbols[right]);
        if l.piece == NO_PIECE || r.piece == NO_PIECE {
            return;
        }
        if let Some(&(rank, merged)) = self.merges.get(&(l.piece, r.piece)) {
            queue.push(Reverse(Pair {
                rank,
                left,
                right,
                left_len: l.len,
                right_len: r.len,
                merged,
            }));
        }
    }
}

/// Buffers reused across the words of one encode call.
#[derive(Default)]
pub(crate) struct BpeScratch {
    symbols: Vec<Symbol>,
    queue: BinaryHeap<Reverse<Pair>>,
    spelled: String,
}

/// A run of bytes of the word, linked to its neighbours.
#[derive(Clone, Copy, Debug)]
struct Symbol {
    /// Length in bytes; 0 once merged into the symbol on its left.
    len: usize,
    piece: u32,
    prev: Option<usize>,
    next: Option<usize>,
}

/// A candidate merge of two adjacent symbols; ordered by rank, then by position.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Pair {
    rank: u32,
    left: usize,
    right: usize,
    left_len: usize,
    right_len: usize,
    merged: u32,
}
