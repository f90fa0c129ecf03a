//! Prompt building: a pure function from the text around the cursor to FIM prompt segments.
//!
//! Layout (see `docs/prompt.md` for the measurements behind it):
//! - Qwen's repo-level header `<|repo_name|>NAME\n<|file_sep|>PATH\n` when the model has those
//!   tokens and the workspace folder / relative path are known;
//! - then, by default, line-anchored prefix-suffix-middle
//!   (`<|fim_prefix|>P<|fim_suffix|>S<|fim_middle|>L`): P is the text up to the start of the cursor
//!   line, S the text after the cursor and L the cursor line before the cursor, so the model
//!   continues L. This is the order Qwen2.5-Coder was trained on (the hole simply starts at the line
//!   start), and the text that changes while the user types within a line (the end of L) is at the
//!   very end of the prompt: the session's KV cache keeps everything before it and a keystroke only
//!   evaluates the typed tokens. Suffix-first (SPM) and plain PSM orders are available too;
//! - models without FIM tokens get the prefix alone;
//! - a snippet of similar code from elsewhere in the file (see [`super::retrieval`]), when there is
//!   one, opens the prefix: the lines like those above the cursor and what followed them there.
//!
//! Budgets are in model tokens (counted by the caller's tokenizer) and cuts fall on line boundaries.
//! The prefix window's first line is rounded *up* to a multiple of `block_lines`, so successive
//! requests (typing, moving the cursor a few lines) start the prefix at the same line and share the
//! longest token prefix with the session.
//!
//! The prompt never ends in the middle of what the tokenizer would merge with the next characters
//! (indentation, a partial word): the last pre-token of the cursor line is removed from the prompt
//! and returned as `heal`; generation must start with it (token healing) and it is stripped from the
//! suggestion afterwards.

use std::fmt::Write as _;

use super::cross_file::ContextChunk;
use super::definitions::Language;

use crate::config::FimOrder;

/// FIM special tokens, named after Qwen2.5-Coder's spelling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FimToken {
    /// `<|fim_prefix|>`
    Prefix,
    /// `<|fim_suffix|>`
    Suffix,
    /// `<|fim_middle|>`
    Middle,
    /// `<|repo_name|>`
    RepoName,
    /// `<|file_sep|>`
    FileSep,
}

impl FimToken {
    /// Qwen's literal spelling, used when rendering prompts for tests and logs.
    pub(crate) fn literal(self) -> &'static str {
        match self {
            Self::Prefix => "<|fim_prefix|>",
            Self::Suffix => "<|fim_suffix|>",
            Self::Middle => "<|fim_middle|>",
            Self::RepoName => "<|repo_name|>",
            Self::FileSep => "<|file_sep|>",
        }
    }
}

/// A piece of a prompt: text to tokenize (special tokens not parsed) or one special token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Segment {
    /// Plain text.
    Text(String),
    /// A FIM control token.
    Token(FimToken),
}

/// Which FIM tokens the model has.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct FimSupport {
    /// prefix, suffix and middle all exist.
    pub(crate) fim: bool,
    /// `<|repo_name|>` and `<|file_sep|>` exist.
    pub(crate) repo: bool,
}

/// Budgets and layout choices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PromptParams {
    /// Most tokens of text before the cursor.
    pub(crate) prefix_tokens: usize,
    /// Most tokens of text after the cursor.
    pub(crate) suffix_tokens: usize,
    /// FIM order.
    pub(crate) order: FimOrder,
    /// The prefix window starts on a multiple of this many lines (1 = no quantization).
    pub(crate) block_lines: usize,
    /// Most tokens of the retrieved snippet (whole lines, kept from its end).
    pub(crate) snippet_tokens: usize,
    /// Most tokens of definitions from other files (taken from the prefix's budget).
    pub(crate) context_tokens: usize,
}

/// The text around the cursor, as the caller extracted it from the document.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PromptInput<'a> {
    /// Text from the start of line `prefix_first_line` to the cursor.
    pub(crate) prefix: &'a str,
    /// Absolute (0-based) line number of the first line of `prefix`.
    pub(crate) prefix_first_line: usize,
    /// Text from the cursor on (the caller may have cut it).
    pub(crate) suffix: &'a str,
    /// Workspace folder name, for the repo-level header.
    pub(crate) repo_name: Option<&'a str>,
    /// Path of the file relative to the workspace folder.
    pub(crate) file_path: Option<&'a str>,
    /// Similar code from elsewhere in the file (see [`super::retrieval`]), shown before the prefix.
    pub(crate) snippet: Option<&'a str>,
    /// Definitions from other files (see [`super::cross_file`]), best first; those that fit
    /// `PromptParams::context_tokens` open the prompt, each labelled with its path.
    pub(crate) context: &'a [ContextChunk],
}

/// A built prompt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BuiltPrompt {
    /// The prompt, in order.
    pub(crate) segments: Vec<Segment>,
    /// Text removed from the end of the prefix that the generation must start with.
    pub(crate) heal: String,
    /// Absolute line where the prefix window starts.
    pub(crate) prefix_start_line: usize,
}

impl BuiltPrompt {
    /// The prompt as one string with FIM tokens spelled out (tests, debug logs).
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        for seg in &self.segments {
            match seg {
                Segment::Text(t) => out.push_str(t),
                Segment::Token(t) => out.push_str(t.literal()),
            }
        }
        if !self.heal.is_empty() {
            let _ = write!(out, "\n[heal {:?}]", self.heal);
        }
        out
    }
}

/// Most bytes of a healed tail; a longer last pre-token is left in the prompt.
const MAX_HEAL_BYTES: usize = 32;

fn is_word(c: char) -> bool {
    c.is_alphabetic()
}

/// Byte index in `line` (the cursor line up to the cursor) where the healed tail starts.
///
/// The tail is the last pre-token the way Qwen/GPT-4-style pre-tokenizers split text: the last
/// character of trailing whitespace (which merges with the next word: `"    return"` is split
/// `"   "` + `" return"`), or a letter run with one optional leading non-letter (` foo`, `.foo`,
/// `_foo`), or a punctuation run with an optional leading space. Digits are single tokens and need
/// no healing.
///
/// Indentation keeps all but its last character in the prompt, as the model saw indentation in
/// training. Healing the whole indentation instead lets a first token of *more* spaces satisfy the
/// constraint: Qwen2.5-Coder then indents one level deeper than the cursor and writes the line
/// after it, repeating the next line (measurements: docs/prompt.md).
pub(crate) fn heal_start(line: &str) -> usize {
    let trimmed = line.trim_end();
    let start = if trimmed.len() < line.len() {
        let last = line.chars().next_back().map_or(0, char::len_utf8);
        line.len() - last
    } else {
        let last = line.chars().next_back().unwrap_or(' ');
        if last.is_numeric() {
            line.len()
        } else if is_word(last) {
            let word_start = line.trim_end_matches(is_word).len();
            match line[..word_start].chars().next_back() {
                Some(c) if !c.is_alphanumeric() && c != '\n' && c != '\r' => {
                    word_start - c.len_utf8()
                }
                _ => word_start,
            }
        } else {
            let punct_start = line
                .trim_end_matches(|c: char| !c.is_alphanumeric() && !c.is_whitespace())
                .len();
            if line[..punct_start].ends_with(' ') {
                punct_start - 1
            } else {
                punct_start
            }
        }
    };
    if line.len() - start > MAX_HEAL_BYTES {
        line.len()
    } else {
        start
    }
}

/// Index of the first of the trailing `lines` that together cost at most `budget` tokens.
fn last_lines_within(lines: &[&str], budget: usize, count: &dyn Fn(&str) -> usize) -> usize {
    let mut used = 0;
    let mut first = lines.len();
    while first > 0 {
        let t = count(lines[first - 1]);
        if used + t > budget {
            break;
        }
        used += t;
        first -= 1;
    }
    first
}

/// The longest end of `text` (cut at a character) of at most `budget` tokens.
fn end_within<'t>(text: &'t str, budget: usize, count: &dyn Fn(&str) -> usize) -> &'t str {
    if count(text) <= budget {
        return text;
    }
    let starts: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
    // The first start whose end fits: fewer characters never cost more tokens here.
    let (mut lo, mut hi) = (0, starts.len());
    while lo < hi {
        let mid = (lo + hi) / 2;
        if count(&text[starts[mid]..]) <= budget {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    starts.get(lo).map_or("", |&at| &text[at..])
}

/// The longest start of `text` (cut at a character) of at most `budget` tokens.
fn start_within<'t>(text: &'t str, budget: usize, count: &dyn Fn(&str) -> usize) -> &'t str {
    if count(text) <= budget {
        return text;
    }
    let ends: Vec<usize> = text.char_indices().map(|(i, c)| i + c.len_utf8()).collect();
    let (mut lo, mut hi) = (0, ends.len());
    while lo < hi {
        let mid = (lo + hi) / 2;
        if count(&text[..ends[mid]]) <= budget {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    if lo == 0 {
        ""
    } else {
        &text[..ends[lo - 1]]
    }
}

/// Builds the prompt. `count` returns the number of model tokens of a text.
pub(crate) fn build_prompt(
    input: &PromptInput<'_>,
    fim: FimSupport,
    params: &PromptParams,
    count: &dyn Fn(&str) -> usize,
) -> BuiltPrompt {
    // --- prefix: whole lines backwards from the cursor line, within budget, block-aligned start.
    let lines: Vec<&str> = input.prefix.split_inclusive('\n').collect();
    let ends_in_newline = input.prefix.is_empty() || input.prefix.ends_with('\n');
    let (full_lines, cursor_line) = if ends_in_newline {
        (&lines[..], "")
    } else {
        (&lines[..lines.len() - 1], lines[lines.len() - 1])
    };
    let heal_at = heal_start(cursor_line);
    let (cursor_kept, heal) = cursor_line.split_at(heal_at);
    // A cursor line longer than the whole prefix budget keeps only its end.
    let cursor_kept = end_within(cursor_kept, params.prefix_tokens, count);

    // --- context from other files: best first, within its own budget, which comes out of the
    // prefix's so the prompt (and the time to evaluate it) does not grow.
    let mut context_used = 0;
    let mut context: Vec<&ContextChunk> = Vec::new();
    for chunk in input.context {
        let tokens = count(&chunk.path) + count(&chunk.text) + 2;
        if context_used + tokens <= params.context_tokens {
            context_used += tokens;
            context.push(chunk);
        }
    }
    let budget = params
        .prefix_tokens
        .saturating_sub(context_used)
        .saturating_sub(count(cursor_kept));
    let mut first = last_lines_within(full_lines, budget, count);
    let abs_first = input.prefix_first_line + first;
    let block = params.block_lines.max(1);
    let aligned = abs_first.div_ceil(block) * block;
    let cursor_abs = input.prefix_first_line + full_lines.len();
    if abs_first > 0 && aligned <= cursor_abs {
        first = aligned - input.prefix_first_line;
    }
    let mut prefix = String::new();
    for l in &full_lines[first..] {
        prefix.push_str(l);
    }
    let line_anchored = fim.fim && params.order == FimOrder::LinePsm;
    if !line_anchored {
        prefix.push_str(cursor_kept);
    }

    // --- suffix: the rest of the cursor line, then whole lines within budget.
    let mut suffix = String::new();
    let mut used = 0;
    for (i, l) in input.suffix.split_inclusive('\n').enumerate() {
        // The rest of the cursor line is always shown, but only its start when it alone is over
        // the budget.
        let l = if i == 0 && params.suffix_tokens > 0 {
            start_within(l, params.suffix_tokens, count)
        } else {
            l
        };
        let t = count(l);
        if i > 0 && used + t > params.suffix_tokens {
            break;
        }
        used += t;
        suffix.push_str(l);
    }

    // --- snippet: whole lines from its end (what followed the similar lines matters most),
    // within its own budget.
    let snippet_lines: Vec<&str> = input.snippet.unwrap_or("").split_inclusive('\n').collect();
    let first_kept = last_lines_within(&snippet_lines, params.snippet_tokens, count);
    prefix.insert_str(0, &snippet_lines[first_kept..].concat());

    // Models without file separators get each chunk as a comment-labelled part of the prefix.
    let labelled = !(fim.fim && fim.repo && input.file_path.is_some());
    if labelled {
        let comment = input
            .file_path
            .and_then(Language::of_path)
            .map_or("//", Language::line_comment);
        for chunk in &context {
            prefix.insert_str(0, &format!("{comment} {}\n{}", chunk.path, chunk.text));
        }
    }

    let mut segments = Vec::new();
    if !fim.fim {
        segments.push(Segment::Text(prefix));
        return BuiltPrompt {
            segments,
            heal: heal.to_owned(),
            prefix_start_line: input.prefix_first_line + first,
        };
    }
    if let (false, Some(path)) = (labelled, input.file_path) {
        // Qwen's repository format: the repository, the other files' chunks (the best last,
        // nearest the current file), then the current file.
        if let Some(repo) = input.repo_name {
            segments.push(Segment::Token(FimToken::RepoName));
            segments.push(Segment::Text(format!("{repo}\n")));
        }
        for chunk in context.iter().rev() {
            segments.push(Segment::Token(FimToken::FileSep));
            segments.push(Segment::Text(format!("{}\n{}", chunk.path, chunk.text)));
        }
        segments.push(Segment::Token(FimToken::FileSep));
        segments.push(Segment::Text(format!("{path}\n")));
    }
    match params.order {
        FimOrder::LinePsm => {
            segments.push(Segment::Token(FimToken::Prefix));
            segments.push(Segment::Text(prefix));
            segments.push(Segment::Token(FimToken::Suffix));
            segments.push(Segment::Text(suffix));
            segments.push(Segment::Token(FimToken::Middle));
            segments.push(Segment::Text(cursor_kept.to_owned()));
        }
        FimOrder::Spm => {
            segments.push(Segment::Token(FimToken::Suffix));
            segments.push(Segment::Text(suffix));
            segments.push(Segment::Token(FimToken::Prefix));
            segments.push(Segment::Text(prefix));
        }
        FimOrder::Psm => {
            segments.push(Segment::Token(FimToken::Prefix));
            segments.push(Segment::Text(prefix));
            segments.push(Segment::Token(FimToken::Suffix));
            segments.push(Segment::Text(suffix));
        }
    }
    if params.order != FimOrder::LinePsm {
        segments.push(Segment::Token(FimToken::Middle));
    }
    segments.retain(|s| !matches!(s, Segment::Text(t) if t.is_empty()));
    BuiltPrompt {
        segments,
        heal: heal.to_owned(),
        prefix_start_line: input.prefix_first_line + first,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::{expect, Expect};

    /// A stand-in tokenizer: one token per word or punctuation run, one per line break.
    fn count(text: &str) -> usize {
        text.split_whitespace().count() + text.matches('\n').count()
    }

    const QWEN: FimSupport = FimSupport {
        fim: true,
        repo: true,
    };

    fn params(
        order: FimOrder,
        prefix_tokens: usize,
        suffix_tokens: usize,
        block_lines: usize,
    ) -> PromptParams {
        PromptParams {
            prefix_tokens,
            suffix_tokens,
            order,
            block_lines,
            snippet_tokens: 0,
            context_tokens: 0,
        }
    }

    fn build(input: &str, fim: FimSupport, p: PromptParams, repo: bool) -> BuiltPrompt {
        let (prefix, suffix) = input.split_once("$0").expect("input needs a $0 cursor");
        let input = PromptInput {
            prefix,
            prefix_first_line: 0,
            suffix,
            repo_name: repo.then_some("lmrs"),
            file_path: repo.then_some("src/lib.rs"),
            snippet: None,
            context: &[],
        };
        build_prompt(&input, fim, &p, &count)
    }

    /// Two definitions from other files, best first.
    fn context_chunks() -> Vec<ContextChunk> {
        vec![
            ContextChunk {
                path: "src/parse.rs".into(),
                line: 3,
                text: "pub fn parse_header(raw: &str) -> Header {\n".into(),
                name: "parse_header".into(),
            },
            ContextChunk {
                path: "src/limits.rs".into(),
                line: 0,
                text: "pub const MAX_FIELDS: usize = 64;\n".into(),
                name: "MAX_FIELDS".into(),
            },
        ]
    }

    fn build_with_context(fim: FimSupport, path: Option<&str>, context_tokens: usize) -> String {
        let chunks = context_chunks();
        let input = PromptInput {
            prefix: "fn main() {\n    let h = ",
            prefix_first_line: 0,
            suffix: "\n}\n",
            repo_name: path.map(|_| "lmrs"),
            file_path: path,
            snippet: None,
            context: &chunks,
        };
        let p = PromptParams {
            context_tokens,
            ..params(FimOrder::LinePsm, 100, 50, 1)
        };
        build_prompt(&input, fim, &p, &count).render()
    }

    #[test]
    fn context_opens_the_prompt_in_the_repository_format_best_last() {
        expect![[r#"
            <|repo_name|>lmrs
            <|file_sep|>src/limits.rs
            pub const MAX_FIELDS: usize = 64;
            <|file_sep|>src/parse.rs
            pub fn parse_header(raw: &str) -> Header {
            <|file_sep|>src/main.rs
            <|fim_prefix|>fn main() {
            <|fim_suffix|>
            }
            <|fim_middle|>    let h =
            [heal " "]"#]]
        .assert_eq(&build_with_context(QWEN, Some("src/main.rs"), 100));
        // Within its budget only: the first chunk costs 11 tokens, the second 8.
        expect![[r#"
            <|repo_name|>lmrs
            <|file_sep|>src/parse.rs
            pub fn parse_header(raw: &str) -> Header {
            <|file_sep|>src/main.rs
            <|fim_prefix|>fn main() {
            <|fim_suffix|>
            }
            <|fim_middle|>    let h =
            [heal " "]"#]]
        .assert_eq(&build_with_context(QWEN, Some("src/main.rs"), 18));
    }

    #[test]
    fn context_is_comment_labelled_without_file_separators() {
        let no_repo = FimSupport {
            fim: true,
            repo: false,
        };
        expect![[r#"
            <|fim_prefix|>// src/limits.rs
            pub const MAX_FIELDS: usize = 64;
            // src/parse.rs
            pub fn parse_header(raw: &str) -> Header {
            fn main() {
            <|fim_suffix|>
            }
            <|fim_middle|>    let h =
            [heal " "]"#]]
        .assert_eq(&build_with_context(no_repo, Some("src/main.rs"), 100));
        // Its budget is taken from the prefix's: with 100 tokens for both, context of 19 leaves
        // the prefix 81; with no context budget nothing changes.
        expect![[r#"
            <|fim_prefix|>fn main() {
            <|fim_suffix|>
            }
            <|fim_middle|>    let h =
            [heal " "]"#]]
        .assert_eq(&build_with_context(QWEN, None, 0));
    }

    #[test]
    fn snippet_opens_the_prefix_and_keeps_its_last_lines_within_budget() {
        let input = PromptInput {
            prefix: "fn test_b() {\n    let seed = $0",
            prefix_first_line: 40,
            suffix: "\n}\n",
            repo_name: None,
            file_path: None,
            snippet: Some("#[test]\nfn test_a() {\n    let seed = testseed();\n"),
            context: &[],
        };
        let input = PromptInput {
            prefix: input.prefix.trim_end_matches("$0"),
            ..input
        };
        let p = PromptParams {
            snippet_tokens: 9,
            ..params(FimOrder::LinePsm, 100, 50, 1)
        };
        // The last two lines cost 4 + 5 tokens; "#[test]\n" (2 more) is left out.
        expect![[r#"
            <|fim_prefix|>fn test_a() {
                let seed = testseed();
            fn test_b() {
            <|fim_suffix|>
            }
            <|fim_middle|>    let seed =
            [heal " "]"#]]
        .assert_eq(&build_prompt(&input, QWEN, &p, &count).render());
        assert_eq!(build_prompt(&input, QWEN, &p, &count).prefix_start_line, 40);
    }

    fn check(input: &str, expect: Expect) {
        let p = params(FimOrder::default(), 100, 50, 1);
        expect.assert_eq(&build(input, QWEN, p, false).render());
    }

    fn check_spm(input: &str, expect: Expect) {
        expect.assert_eq(&build(input, QWEN, params(FimOrder::Spm, 100, 50, 1), false).render());
    }

    #[test]
    fn line_anchored_psm_puts_the_cursor_line_after_middle() {
        check(
            "def add(a, b):\n    return a$0\n\nprint(add(1, 2))\n",
            expect![[r#"
                <|fim_prefix|>def add(a, b):
                <|fim_suffix|>

                print(add(1, 2))
                <|fim_middle|>    return
                [heal " a"]"#]],
        );
        check(
            "x = 1\ny = foo(x, $0)\nz = 2\n",
            expect![[r#"
                <|fim_prefix|>x = 1
                <|fim_suffix|>)
                z = 2
                <|fim_middle|>y = foo(x,
                [heal " "]"#]],
        );
    }

    #[test]
    fn a_cursor_line_over_the_budgets_is_cut_on_both_sides() {
        let numbers: Vec<String> = (0..60).map(|i| i.to_string()).collect();
        let before = format!("x = [{}, ", numbers[..30].join(", "));
        let after = format!("{}]\nprint(x)\n", numbers[30..].join(", "));
        let p = params(FimOrder::LinePsm, 8, 6, 1);
        expect![[r#"
            <|fim_prefix|><|fim_suffix|>30, 31, 32, 33, 34, 35, <|fim_middle|> 22, 23, 24, 25, 26, 27, 28, 29,
            [heal " "]"#]]
        .assert_eq(&build(&format!("{before}$0{after}"), QWEN, p, false).render());
    }

    #[test]
    fn line_anchored_psm_heals_indentation() {
        check(
            "def add(a, b):\n    $0\n\nprint(add(1, 2))\n",
            expect![[r#"
                <|fim_prefix|>def add(a, b):
                <|fim_suffix|>

                print(add(1, 2))
                <|fim_middle|>   
                [heal " "]"#]],
        );
    }

    #[test]
    fn suffix_prefix_middle_heals_indentation() {
        check_spm(
            "def add(a, b):\n    $0\n\nprint(add(1, 2))\n",
            expect![[r#"
                <|fim_suffix|>

                print(add(1, 2))
                <|fim_prefix|>def add(a, b):
                   <|fim_middle|>
                [heal " "]"#]],
        );
    }

    #[test]
    fn partial_word_is_healed_with_its_leading_space_spm() {
        check_spm(
            "let x = vec.it$0;\n",
            expect![[r#"
                <|fim_suffix|>;
                <|fim_prefix|>let x = vec<|fim_middle|>
                [heal ".it"]"#]],
        );
    }

    #[test]
    fn partial_word_is_healed_with_its_leading_space() {
        check(
            "let x = vec.it$0;\n",
            expect![[r#"
                <|fim_prefix|><|fim_suffix|>;
                <|fim_middle|>let x = vec
                [heal ".it"]"#]],
        );
        check(
            "x = foo(a,$0",
            expect![[r#"
                <|fim_prefix|><|fim_suffix|><|fim_middle|>x = foo(a
                [heal ","]"#]],
        );
        check(
            "n = 12$0",
            expect!["<|fim_prefix|><|fim_suffix|><|fim_middle|>n = 12"],
        );
        check(
            "let x = $0",
            expect![[r#"
                <|fim_prefix|><|fim_suffix|><|fim_middle|>let x =
                [heal " "]"#]],
        );
    }

    #[test]
    fn repo_level_header_and_psm_order() {
        let p = build(
            "fn main() {\n    $0\n}\n",
            QWEN,
            params(FimOrder::Psm, 100, 50, 1),
            true,
        );
        expect![[r#"
            <|repo_name|>lmrs
            <|file_sep|>src/lib.rs
            <|fim_prefix|>fn main() {
               <|fim_suffix|>
            }
            <|fim_middle|>
            [heal " "]"#]]
        .assert_eq(&p.render());
    }

    #[test]
    fn prefix_only_without_fim_tokens() {
        let p = build(
            "a\nb = $0c\n",
            FimSupport::default(),
            params(FimOrder::Spm, 100, 50, 1),
            true,
        );
        expect![[r#"
            a
            b =
            [heal " "]"#]]
        .assert_eq(&p.render());
    }

    #[test]
    fn budgets_cut_at_line_boundaries_and_prefix_start_is_block_aligned() {
        let text = "l0 x\nl1 x\nl2 x\nl3 x\nl4 x\nl5 x\nl6 x\n    ret$0urn\ns0 x\ns1 x\ns2 x\n";
        // every full line costs 3 tokens; the cursor line's kept part ("    ") costs 0.
        let p = build(text, QWEN, params(FimOrder::Spm, 10, 7, 1), false);
        expect![[r#"
            <|fim_suffix|>urn
            s0 x
            <|fim_prefix|>l4 x
            l5 x
            l6 x
               <|fim_middle|>
            [heal " ret"]"#]]
        .assert_eq(&p.render());
        assert_eq!(p.prefix_start_line, 4);
        // with blocks of 4 lines the window starts at line 4 for budgets that fit lines 1..=6
        let p = build(text, QWEN, params(FimOrder::Spm, 18, 7, 4), false);
        assert_eq!(p.prefix_start_line, 4);
        let p = build(text, QWEN, params(FimOrder::Spm, 10, 7, 4), false);
        assert_eq!(p.prefix_start_line, 4);
        let p = build(text, QWEN, params(FimOrder::Spm, 100, 7, 4), false);
        assert_eq!(p.prefix_start_line, 0, "the whole file fits: no cut");
    }

    #[test]
    fn typing_only_appends_to_the_prompt() {
        let common = |order: FimOrder, a: &str, b: &str| {
            let p = params(order, 100, 50, 8);
            let (ra, rb) = (
                build(a, QWEN, p, true).render(),
                build(b, QWEN, p, true).render(),
            );
            let n = ra
                .chars()
                .zip(rb.chars())
                .take_while(|(x, y)| x == y)
                .count();
            (ra, n)
        };
        let a = "fn f() {\n    let value = compute(x, $0\n}\n";
        let b = "fn f() {\n    let value = compute(x, y$0\n}\n";
        // line-anchored PSM: everything up to and including <|fim_middle|> and the line's start stays
        let (ra, n) = common(FimOrder::LinePsm, a, b);
        let middle_end = ra.find("<|fim_middle|>").unwrap() + "<|fim_middle|>".len();
        assert!(n >= middle_end + "    let value = compute(x,".len(), "{ra}");
        // mid-line, before a closing parenthesis: the suffix does not change either
        let (ra, n) = common(
            FimOrder::LinePsm,
            "fn f() {\n    g(a$0)\n}\n",
            "fn f() {\n    g(ab$0)\n}\n",
        );
        assert!(n >= ra.find("<|fim_middle|>").unwrap() + 14, "{ra}");
        // SPM: only the end of the prefix, right before <|fim_middle|>, changes
        let (ra, n) = common(FimOrder::Spm, a, b);
        assert!(
            ra.find("<|fim_middle|>").unwrap().saturating_sub(n) <= 2,
            "{ra}"
        );
        // plain PSM: a completed word changes the prefix before the suffix, evaluated again
        let (ra, n) = common(FimOrder::Psm, "x = foo$0\ny\n", "x = foo $0\ny\n");
        assert!(n <= ra.find("<|fim_suffix|>").unwrap(), "{ra}");
    }

    #[test]
    fn heal_start_cases() {
        for (line, tail) in [
            ("", ""),
            ("    ", " "),
            ("\t", "\t"),
            ("\t\t", "\t"),
            ("f(a,   ", " "),
            ("    foo", " foo"),
            ("foo", "foo"),
            ("a.b", ".b"),
            ("a_b", "_b"),
            ("f(x, ", " "),
            ("f(", "("),
            ("f(x) {", " {"),
            ("x1", ""),
            ("é中", "é中"),
            (
                "y = aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                "",
            ),
        ] {
            assert_eq!(&line[heal_start(line)..], tail, "{line:?}");
        }
    }
}
