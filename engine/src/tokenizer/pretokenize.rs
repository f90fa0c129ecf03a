//! Pre-tokenizers: split text into words before byte-level BPE merges them, exactly where llama.cpp does.
//!
//! llama.cpp describes each pre-tokenizer as a list of regexes applied one after the other: each regex
//! splits every piece left by the previous ones into its matches and the gaps between them. The
//! regexes use look-ahead (`\s+(?!\S)`), which the `regex` crate lacks, so each one is written here
//! as a small hand-made scanner over the code points of the text. That is also what llama.cpp
//! itself does for the GPT-2, Llama 3 and Qwen 2 regexes, including two quirks we must keep: those
//! scanners treat the end of a piece as "no character" (so `\s+(?!\S)` takes all trailing spaces),
//! and the GPT-2 one also matches a final `\s+`. The remaining regexes (the `\p{N}` of StarCoder,
//! the DeepSeek and Falcon lists) llama.cpp runs through `std::regex` with ECMAScript (leftmost,
//! first-alternative) semantics, after mapping every non-ASCII white-space character to `\x0B`;
//! the scanners below reproduce that, which is why non-ASCII white space never counts as CJK or
//! punctuation here.
//!
//! Hand-written scanners cost one pass per regex with no backtracking, which matters because a
//! prompt is re-tokenized on every keystroke.

use super::error::TokenizerError;
use super::unicode::{char_class, is_whitespace, CharClass};

/// The pre-tokenizers lmrs implements, named after llama.cpp's `tokenizer.ggml.pre` families.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PreTokenizer {
    /// GPT-2's regex (`gpt-2`, `mpt`, `olmo`, `phi-2`, ...).
    Gpt2,
    /// Each digit alone, then GPT-2's regex (`starcoder`, `refact`, `smollm`, ...).
    Starcoder,
    /// Llama 3's regex: digits in groups of up to three (`llama-bpe`, `llama3`, `dbrx`, ...).
    Llama3,
    /// Qwen 2's regex: Llama 3's with single digits (`qwen2`, `stablelm2`, ...).
    Qwen2,
    /// `deepseek-coder`.
    DeepseekCoder,
    /// `deepseek-llm`.
    DeepseekLlm,
    /// `falcon`.
    Falcon,
    /// `bloom`, `gpt3-finnish`: ` ?[^(\s|.,!?…。，、।۔،)]+`.
    Bloom,
    /// `default`, also used when `tokenizer.ggml.pre` is absent.
    Default,
}

/// Values of `tokenizer.ggml.pre` accepted for byte-level BPE vocabularies.
pub(crate) const SUPPORTED_PRE_TOKENIZERS: &str = "default, gpt-2, phi-2, mpt, olmo, jais, exaone4, \
mellum, gigachat, a.x-4.0, trillion, granite-docling, starcoder, refact, smollm, command-r, codeshell, \
exaone, minerva-7b, mellum2, llama3, llama-v3, llama-bpe, falcon3, falcon-h1, pixtral, midm-2.0, lfm2, \
dbrx, smaug-bpe, chatglm-bpe, qwen2, deepseek-r1-qwen, stablelm2, megrez, kormo, f2llmv2, \
deepseek-coder, deepseek-llm, falcon, bloom, gpt3-finnish";

/// How a `tokenizer.ggml.pre` value configures BPE.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PreTokenizerConfig {
    pub(crate) pre_tokenizer: PreTokenizer,
    /// A word that is itself a token is emitted whole, without merging (llama.cpp's `ignore_merges`).
    pub(crate) ignore_merges: bool,
    /// The default of `add_bos` before `tokenizer.ggml.add_bos_token` overrides it.
    pub(crate) add_bos_default: bool,
}

impl PreTokenizer {
    /// The configuration for `tokenizer.ggml.pre` (`None` when absent).
    pub(crate) fn from_name(name: Option<&str>) -> Result<PreTokenizerConfig, TokenizerError> {
        let config = |pre_tokenizer, ignore_merges, add_bos_default| PreTokenizerConfig {
            pre_tokenizer,
            ignore_merges,
            add_bos_default,
        };
        let Some(name) = name.filter(|n| !n.is_empty()) else {
            return Ok(config(PreTokenizer::Default, false, false));
        };
        Ok(match name {
            "default" => config(PreTokenizer::Default, false, false),
            "gpt-2" | "phi-2" | "mpt" | "olmo" | "jais" | "exaone4" | "mellum" | "gigachat"
            | "a.x-4.0" | "trillion" | "granite-docling" => {
                config(PreTokenizer::Gpt2, false, false)
            }
            "starcoder" | "refact" | "smollm" | "command-r" | "codeshell" | "exaone"
            | "minerva-7b" | "mellum2" => config(PreTokenizer::Starcoder, false, false),
            "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral"
            | "midm-2.0" | "lfm2" => config(PreTokenizer::Llama3, true, true),
            "dbrx" | "smaug-bpe" | "chatglm-bpe" => config(PreTokenizer::Llama3, false, false),
            "qwen2" | "deepseek-r1-qwen" | "stablelm2" | "megrez" | "kormo" | "f2llmv2" => {
                config(PreTokenizer::Qwen2, false, false)
            }
            "deepseek-coder" => config(PreTokenizer::DeepseekCoder, false, false),
            "deepseek-llm" => config(PreTokenizer::DeepseekLlm, false, false),
            "falcon" => config(PreTokenizer::Falcon, false, false),
            "bloom" | "gpt3-finnish" => config(PreTokenizer::Bloom, false, false),
            other => {
                return Err(TokenizerError::UnsupportedPreTokenizer {
                    pre: other.to_owned(),
                    supported: SUPPORTED_PRE_TOKENIZERS,
                })
            }
        })
    }

    /// The stages this pre-tokenizer applies, in order.
    fn stages(self) -> &'static [Stage] {
        use CharSet::*;
        use Stage::*;
        match self {
            PreTokenizer::Gpt2 => &[Gpt2],
            PreTokenizer::Starcoder => &[EachNumber, Gpt2],
            PreTokenizer::Llama3 => &[Llama3],
            PreTokenizer::Qwen2 => &[Qwen2],
            PreTokenizer::DeepseekCoder => &[
                EachNewline,
                SpaceThenRun(Letter),
                SpaceThenRun(Punctuation),
                Run(Cjk),
                EachNumber,
            ],
            PreTokenizer::DeepseekLlm => &[
                EachNewline,
                SpaceThenRun(DeepseekLatin),
                SpaceThenRun(DeepseekPunctuation),
                TrailingWhitespace,
                Run(Cjk),
                Run(Number),
            ],
            PreTokenizer::Falcon => &[Run(PunctuationOrAsciiSymbol), Gpt2, AsciiDigitTriples],
            PreTokenizer::Bloom => &[LiteralSpaceThenRun(BloomWord)],
            PreTokenizer::Default => &[
                Run(PunctuationOrAsciiSymbolNoBacktick),
                Gpt2,
                Run(Number),
                AsciiDigitTriples,
            ],
        }
    }

    /// Appends the words of `text` to `words`, in order; together they spell `text`.
    pub(crate) fn split<'t>(self, text: &'t str, words: &mut Vec<&'t str>) {
        if text.is_empty() {
            return;
        }
        let chars = Chars::new(text);
        let mut pieces = vec![(0, chars.len())];
        let mut next = Vec::with_capacity(pieces.len());
        for stage in self.stages() {
            next.clear();
            for &(start, end) in &pieces {
                stage.split(&chars, start, end, &mut next);
            }
            std::mem::swap(&mut pieces, &mut next);
        }
        for (start, end) in pieces {
            if let Some(word) = text.get(chars.offsets[start]..chars.offsets[end]) {
                words.push(word);
            }
        }
    }
}

/// Flag bits describing a code point.
const LETTER: u8 = 1;
const NUMBER: u8 = 1 << 1;
const WHITESPACE: u8 = 1 << 2;
const PUNCTUATION: u8 = 1 << 3;
const SYMBOL: u8 = 1 << 4;
/// Set for every code point inside the piece; a position outside it has no flags at all.
const PRESENT: u8 = 1 << 7;

/// The code points of a text, with their flags and byte offsets.
struct Chars {
    chars: Vec<char>,
    flags: Vec<u8>,
    /// Byte offset of each code point, plus the text length at the end.
    offsets: Vec<usize>,
}

impl Chars {
    fn new(text: &str) -> Chars {
        let mut chars = Vec::with_capacity(text.len());
        let mut flags = Vec::with_capacity(text.len());
        let mut offsets = Vec::with_capacity(text.len() + 1);
        for (offset, c) in text.char_indices() {
            chars.push(c);
            offsets.push(offset);
            flags.push(flags_of(c));
        }
        offsets.push(text.len());
        Chars {
            chars,
            flags,
            offsets,
        }
    }

    fn len(&self) -> usize {
        self.chars.len()
    }

    /// The character at `pos` if it lies in the piece ending at `end`.
    fn char_at(&self, pos: usize, end: usize) -> Option<char> {
        if pos < end {
            self.chars.get(pos).copied()
        } else {
            None
        }
    }

    /// The flags at `pos`, or 0 outside the piece ending at `end`.
    fn flags_at(&self, pos: usize, end: usize) -> u8 {
        if pos < end {
            self.flags.get(pos).copied().unwrap_or(0)
        } else {
            0
        }
    }
}

fn flags_of(c: char) -> u8 {
    let class = match char_class(c) {
        CharClass::Letter => LETTER,
        CharClass::Number => NUMBER,
        CharClass::Punctuation => PUNCTUATION,
        CharClass::Symbol => SYMBOL,
        _ => 0,
    };
    let space = if is_whitespace(c) { WHITESPACE } else { 0 };
    PRESENT | class | space
}

/// Character classes used by the regex-like stages.
#[derive(Clone, Copy, Debug)]
enum CharSet {
    /// `\p{L}`.
    Letter,
    /// `\p{N}`.
    Number,
    /// `\p{P}`.
    Punctuation,
    /// `[\p{P}\$\+<=>\^~\|`]` (Falcon).
    PunctuationOrAsciiSymbol,
    /// `[\p{P}\$\+<=>\^~\|]` (default).
    PunctuationOrAsciiSymbolNoBacktick,
    /// `[一-龥ࠀ-一가-퟿]`: U+4E00..U+9FA5, U+0800..U+4E00, U+AC00..U+D7FF.
    Cjk,
    /// DeepSeek LLM's list of cased letters.
    DeepseekLatin,
    /// `[!-/:-~！-／：-～‘-‟　-。]`.
    DeepseekPunctuation,
    /// `[^(\s|.,!?…。，、।۔،)]`: BLOOM's word characters, anything but white space and these
    /// separators (the parentheses and the bar are in the set too).
    BloomWord,
}

/// DeepSeek LLM's cased-letter ranges (inclusive), from its tokenizer's regex.
const DEEPSEEK_LATIN: &[(u32, u32)] = &[
    (0x41, 0x5A),
    (0x61, 0x7A),
    (0xB5, 0xB5),
    (0xC0, 0xD6),
    (0xD8, 0xF6),
    (0xF8, 0x1BA),
    (0x1BC, 0x1BF),
    (0x1C4, 0x293),
    (0x295, 0x2AF),
    (0x370, 0x373),
    (0x376, 0x377),
    (0x37B, 0x37D),
    (0x37F, 0x37F),
    (0x386, 0x386),
    (0x388, 0x38A),
    (0x38C, 0x38C),
    (0x38E, 0x3A1),
    (0x3A3, 0x3F5),
    (0x3F7, 0x481),
    (0x48A, 0x52F),
    (0x531, 0x556),
    (0x10A0, 0x10C5),
    (0x13A0, 0x13F5),
    (0x13F8, 0x13FD),
    (0x1C90, 0x1CBA),
    (0x1CBD, 0x1CBF),
    (0x1D00, 0x1D2B),
    (0x1D6B, 0x1D77),
    (0x1D79, 0x1D9A),
    (0x1E00, 0x1F15),
    (0x1F18, 0x1F1D),
    (0x1F20, 0x1F45),
    (0x1F48, 0x1F4D),
    (0x1F50, 0x1F57),
    (0x1F59, 0x1F59),
    (0x1F5B, 0x1F5B),
    (0x1F5D, 0x1F5D),
    (0x1F5F, 0x1F7D),
    (0x1F80, 0x1FB4),
    (0x1FB6, 0x1FBC),
    (0x1FBE, 0x1FBE),
    (0x1FC2, 0x1FC4),
    (0x1FC6, 0x1FCC),
    (0x1FD0, 0x1FD3),
    (0x1FD6, 0x1FDB),
    (0x1FE0, 0x1FEC),
    (0x1FF2, 0x1FF4),
    (0x1FF6, 0x1FFC),
    (0x2102, 0x2102),
    (0x2107, 0x2107),
    (0x210A, 0x2113),
    (0x2115, 0x2115),
    (0x2119, 0x211D),
    (0x2124, 0x2124),
    (0x2126, 0x2126),
    (0x2128, 0x2128),
    (0x212A, 0x212D),
    (0x212F, 0x2134),
    (0x2139, 0x2139),
    (0x213C, 0x213F),
    (0x2145, 0x2149),
    (0x214E, 0x214E),
    (0x2183, 0x2184),
    (0x2C00, 0x2C7B),
    (0x2C7E, 0x2CE4),
    (0x2CEB, 0x2CEE),
    (0x2CF2, 0x2CF3),
    (0xA640, 0xA66D),
    (0xA680, 0xA69B),
    (0xA722, 0xA76F),
    (0xA771, 0xA787),
    (0xA78B, 0xA78E),
    (0xAB70, 0xABBF),
    (0xFB00, 0xFB06),
    (0xFB13, 0xFB17),
    (0xFF21, 0xFF3A),
    (0xFF41, 0xFF5A),
    (0x10400, 0x1044F),
    (0x104B0, 0x104D3),
    (0x104D8, 0x104FB),
    (0x10C80, 0x10CB2),
    (0x10CC0, 0x10CF2),
    (0x118A0, 0x118DF),
    (0x1E900, 0x1E943),
];

const DEEPSEEK_PUNCTUATION: &[(u32, u32)] = &[
    (0x21, 0x2F),
    (0x3A, 0x7E),
    (0xFF01, 0xFF0F),
    (0xFF1A, 0xFF5E),
    (0x2018, 0x201F),
    (0x3000, 0x3002),
];

const CJK: &[(u32, u32)] = &[(0x4E00, 0x9FA5), (0x800, 0x4E00), (0xAC00, 0xD7FF)];

fn in_ranges(ranges: &[(u32, u32)], cp: u32) -> bool {
    ranges.iter().any(|&(lo, hi)| lo <= cp && cp <= hi)
}

impl CharSet {
    fn contains(self, c: char, flags: u8) -> bool {
        // llama.cpp hands these regexes a copy of the text where non-ASCII white space is `\x0B`.
        if flags & WHITESPACE != 0 && !c.is_ascii() {
            return false;
        }
        let cp = u32::from(c);
        match self {
            CharSet::Letter => flags & LETTER != 0,
            CharSet::Number => flags & NUMBER != 0,
            CharSet::Punctuation => flags & PUNCTUATION != 0,
            CharSet::PunctuationOrAsciiSymbol => {
                flags & PUNCTUATION != 0
                    || matches!(c, '$' | '+' | '<' | '=' | '>' | '^' | '~' | '|' | '`')
            }
            CharSet::PunctuationOrAsciiSymbolNoBacktick => {
                flags & PUNCTUATION != 0
                    || matches!(c, '$' | '+' | '<' | '=' | '>' | '^' | '~' | '|')
            }
            CharSet::Cjk => in_ranges(CJK, cp),
            CharSet::DeepseekLatin => in_ranges(DEEPSEEK_LATIN, cp),
            CharSet::DeepseekPunctuation => in_ranges(DEEPSEEK_PUNCTUATION, cp),
            CharSet::BloomWord => {
                flags & WHITESPACE == 0
                    && !matches!(
                        c,
                        '(' | '|'
                            | '.'
                            | ','
                            | '!'
                            | '?'
                            | ')'
                            | '…'
                            | '。'
                            | '，'
                            | '、'
                            | '।'
                            | '۔'
                            | '،'
                    )
            }
        }
    }
}

/// One regex of a pre-tokenizer.
#[derive(Clone, Copy, Debug)]
enum Stage {
    /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)` (and a final `\s+`).
    Gpt2,
    /// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`.
    Llama3,
    /// As `Llama3` with `\p{N}` instead of `\p{N}{1,3}`.
    Qwen2,
    /// `\p{N}`.
    EachNumber,
    /// `[\r\n]`.
    EachNewline,
    /// `\s?[set]+`.
    SpaceThenRun(CharSet),
    /// `[set]+`.
    Run(CharSet),
    /// ` ?[set]+`: an optional space (U+0020 only), then a run.
    LiteralSpaceThenRun(CharSet),
    /// `[0-9][0-9][0-9]`.
    AsciiDigitTriples,
    /// `\s+$`.
    TrailingWhitespace,
}

impl Stage {
    /// Splits the piece `start..end` (code point indices), appending the sub-pieces to `out`.
    fn split(self, chars: &Chars, start: usize, end: usize, out: &mut Vec<(usize, usize)>) {
        match self {
            Stage::Gpt2 => split_gpt2(chars, start, end, out),
            Stage::Llama3 => split_llama3(chars, start, end, out, Some(3)),
            Stage::Qwen2 => split_llama3(chars, start, end, out, None),
            _ => split_by_matches(start, end, out, |from| self.find(chars, from, end)),
        }
    }

    /// The leftmost match at or after `from` in the piece ending at `end`.
    fn find(self, chars: &Chars, from: usize, end: usize) -> Option<(usize, usize)> {
        let in_set = |set: CharSet, pos: usize| {
            chars
                .char_at(pos, end)
                .is_some_and(|c| set.contains(c, chars.flags_at(pos, end)))
        };
        let run_end = |set: CharSet, mut pos: usize| {
            while in_set(set, pos) {
                pos += 1;
            }
            pos
        };
        let is_space = |pos: usize| chars.flags_at(pos, end) & WHITESPACE != 0;
        match self {
            Stage::EachNumber => (from..end)
                .find(|&p| in_set(CharSet::Number, p))
                .map(|p| (p, p + 1)),
            Stage::EachNewline => (from..end)
                .find(|&p| matches!(chars.char_at(p, end), Some('\r' | '\n')))
                .map(|p| (p, p + 1)),
            Stage::SpaceThenRun(set) => (from..end).find_map(|p| {
                if is_space(p) && in_set(set, p + 1) {
                    Some((p, run_end(set, p + 1)))
                } else if in_set(set, p) {
                    Some((p, run_end(set, p)))
                } else {
                    None
                }
            }),
            Stage::LiteralSpaceThenRun(set) => (from..end).find_map(|p| {
                if chars.char_at(p, end) == Some(' ') && in_set(set, p + 1) {
                    Some((p, run_end(set, p + 1)))
                } else if in_set(set, p) {
                    Some((p, run_end(set, p)))
                } else {
                    None
                }
            }),
            Stage::Run(set) => (from..end)
                .find(|&p| in_set(set, p))
                .map(|p| (p, run_end(set, p))),
            Stage::AsciiDigitTriples => {
                let digit = |p: usize| chars.char_at(p, end).is_some_and(|c| c.is_ascii_digit());
                (from..end)
                    .find(|&p| digit(p) && digit(p + 1) && digit(p + 2))
                    .map(|p| (p, p + 3))
            }
            Stage::TrailingWhitespace => {
                let mut p = end;
                while p > from && is_space(p - 1) {
                    p -= 1;
                }
                (p < end).then_some((p, end))
            }
            Stage::Gpt2 | Stage::Llama3 | Stage::Qwen2 => None,
        }
    }
}

/// Splits `start..end` into the matches `find` reports and the gaps between them.
fn split_by_matches(
    start: usize,
    end: usize,
    out: &mut Vec<(usize, usize)>,
    mut find: impl FnMut(usize) -> Option<(usize, usize)>,
) {
    let mut pos = start;
    while pos < end {
        let Some((match_start, match_end)) = find(pos) else {
            break;
        };
        if match_start > pos {
            out.push((pos, match_start));
        }
        // Every match here is non-empty, so this always advances.
        out.push((match_start, match_end));
        pos = match_end.max(pos + 1);
    }
    if pos < end {
        out.push((pos, end));
    }
}

/// Collects consecutive pieces: each cut ends the current piece.
struct Cutter<'a> {
    previous: usize,
    out: &'a mut Vec<(usize, usize)>,
}

impl Cutter<'_> {
    /// Ends the current piece at `end` (if non-empty) and returns `end`.
    fn cut(&mut self, end: usize) -> usize {
        if end > self.previous {
            self.out.push((self.previous, end));
        }
        self.previous = end;
        end
    }
}

/// `'s|'t|'re|'ve|'m|'ll|'d` (case-sensitive or not): the length of the contraction at `pos`, if any.
fn contraction_len(chars: &Chars, pos: usize, end: usize, ignore_case: bool) -> Option<usize> {
    if chars.char_at(pos, end) != Some('\'') || pos + 1 >= end {
        return None;
    }
    let fold = |c: Option<char>| {
        let c = c?;
        Some(if ignore_case {
            c.to_ascii_lowercase()
        } else {
            c
        })
    };
    let next = fold(chars.char_at(pos + 1, end))?;
    if matches!(next, 's' | 't' | 'm' | 'd') {
        return Some(2);
    }
    if pos + 2 < end {
        let after = fold(chars.char_at(pos + 2, end))?;
        if matches!((next, after), ('r', 'e') | ('v', 'e') | ('l', 'l')) {
            return Some(3);
        }
    }
    None
}

fn split_gpt2(chars: &Chars, start: usize, end: usize, out: &mut Vec<(usize, usize)>) {
    let mut pieces = Cutter {
        previous: start,
        out,
    };
    let flags = |pos: usize| chars.flags_at(pos, end);
    let mut pos = start;
    while pos < end {
        if let Some(len) = contraction_len(chars, pos, end, false) {
            pos = pieces.cut(pos + len);
            continue;
        }
        let is_space = chars.char_at(pos, end) == Some(' ');
        let first = if is_space { flags(pos + 1) } else { flags(pos) };
        let skip_space = usize::from(is_space);
        // ` ?\p{L}+`, ` ?\p{N}+`
        if let Some(class) = [LETTER, NUMBER].into_iter().find(|&c| first & c != 0) {
            pos += skip_space;
            while flags(pos) & class != 0 {
                pos += 1;
            }
            pieces.cut(pos);
            continue;
        }
        // ` ?[^\s\p{L}\p{N}]+`
        let is_other = |f: u8| f & (WHITESPACE | LETTER | NUMBER) == 0 && f != 0;
        if is_other(first) {
            pos += skip_space;
            while is_other(flags(pos)) {
                pos += 1;
            }
            pieces.cut(pos);
            continue;
        }
        let mut spaces = 0;
        while flags(pos + spaces) & WHITESPACE != 0 {
            spaces += 1;
        }
        if spaces > 1 && pos + spaces < end {
            // `\s+(?!\S)`: leave the last space to prefix the next word.
            pos = pieces.cut(pos + spaces - 1);
        } else if spaces > 0 {
            pos = pieces.cut(pos + spaces);
        } else {
            pos = pieces.cut(pos + 1);
        }
    }
}

/// Llama 3's splitter; `digit_group` is `Some(3)` for `\p{N}{1,3}` and `None` for Qwen 2's `\p{N}`.
fn split_llama3(
    chars: &Chars,
    start: usize,
    end: usize,
    out: &mut Vec<(usize, usize)>,
    digit_group: Option<usize>,
) {
    let mut pieces = Cutter {
        previous: start,
        out,
    };
    let flags = |pos: usize| chars.flags_at(pos, end);
    let is_newline = |pos: usize| matches!(chars.char_at(pos, end), Some('\r' | '\n'));
    let mut pos = start;
    while pos < end {
        if let Some(len) = contraction_len(chars, pos, end, true) {
            pos = pieces.cut(pos + len);
            continue;
        }
        let here = flags(pos);
        // `[^\r\n\p{L}\p{N}]?\p{L}+`
        if !is_newline(pos)
            && here & NUMBER == 0
            && (here & LETTER != 0 || flags(pos + 1) & LETTER != 0)
        {
            pos += 1;
            while flags(pos) & LETTER != 0 {
                pos += 1;
            }
            pieces.cut(pos);
            continue;
        }
        // `\p{N}{1,3}` or `\p{N}`
        if here & NUMBER != 0 {
            match digit_group {
                Some(group) => {
                    let mut group_start = pos;
                    while flags(pos) & NUMBER != 0 {
                        pos += 1;
                        if pos - group_start >= group {
                            pieces.cut(pos);
                            group_start = pos;
                        }
                    }
                    pieces.cut(pos);
                }
                None => {
                    pos = pieces.cut(pos + 1);
                }
            }
            continue;
        }
        // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
        let is_space = chars.char_at(pos, end) == Some(' ');
        let first = if is_space { flags(pos + 1) } else { here };
        if first & (WHITESPACE | LETTER | NUMBER) == 0 && here != 0 {
            pos += usize::from(is_space);
            while flags(pos) & (WHITESPACE | LETTER | NUMBER) == 0 && flags(pos) != 0 {
                pos += 1;
            }
            while is_newline(pos) {
                pos += 1;
            }
            pieces.cut(pos);
            continue;
        }
        let mut spaces = 0;
        let mut after_last_newline = None;
        while flags(pos + spaces) & WHITESPACE != 0 {
            if is_newline(pos + spaces) {
                after_last_newline = Some(pos + spaces + 1);
            }
            spaces += 1;
        }
        if let Some(newline_end) = after_last_newline {
            // `\s*[\r\n]+`
            pos = pieces.cut(newline_end);
        } else if spaces > 1 && pos + spaces < end {
            // `\s+(?!\S)`
            pos = pieces.cut(pos + spaces - 1);
        } else if spaces > 0 {
            // `\s+`
            pos = pieces.cut(pos + spaces);
        } else {
            pos = pieces.cut(pos + 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(pre: PreTokenizer, text: &str) -> Vec<&str> {
        let mut words = Vec::new();
        pre.split(text, &mut words);
        assert_eq!(words.concat(), text);
        words
    }

    #[test]
    fn gpt2_keeps_one_space_before_words() {
        assert_eq!(
            split(PreTokenizer::Gpt2, "Hello  world's 123!!\n\n"),
            ["Hello", " ", " world", "'s", " 123", "!!", "\n\n"]
        );
    }

    #[test]
    fn llama3_groups_digits_by_three_and_newlines() {
        assert_eq!(
            split(PreTokenizer::Llama3, "x = 12345;\n    y"),
            ["x", " =", " ", "123", "45", ";\n", "   ", " y"]
        );
    }

    #[test]
    fn qwen2_splits_single_digits() {
        assert_eq!(split(PreTokenizer::Qwen2, "v12"), ["v", "1", "2"]);
    }

    #[test]
    fn starcoder_splits_digits_first() {
        assert_eq!(split(PreTokenizer::Starcoder, "a 42"), ["a", " ", "4", "2"]);
    }

    #[test]
    fn bloom_splits_at_separators_and_keeps_one_space() {
        assert_eq!(
            split(PreTokenizer::Bloom, "f(x, y)  is ok.\n    return"),
            ["f", "(", "x", ",", " y", ") ", " is", " ok", ".\n   ", " return"]
        );
    }

    #[test]
    fn empty_text_has_no_words() {
        assert!(split(PreTokenizer::DeepseekLlm, "").is_empty());
    }
}
