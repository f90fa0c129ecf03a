//! The text around the cursor, copied out of the document: the windows the prompt may show and
//! the similar code retrieved from elsewhere in it.

use ropey::Rope;
use tracing::debug;

use super::retrieval::{similar_snippet, Snippet, SnippetParams};

/// Characters of text the prompt builder may look at per prompt token of budget.
const CHARS_PER_TOKEN_WINDOW: usize = 8;

/// The rest of the cursor line is kept whole up to this many characters even when the suffix
/// window is smaller; only a longer line is cut.
const LONG_LINE_CHARS: usize = 1024;

/// The text around the cursor, copied out of the document.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct CursorContext {
    /// From the start of line `prefix_first_line` to the cursor (from within the cursor line when
    /// that line alone is longer than the window).
    pub(crate) prefix: String,
    /// Absolute line number of the first line of `prefix`.
    pub(crate) prefix_first_line: usize,
    /// From the cursor on.
    pub(crate) suffix: String,
}

impl CursorContext {
    /// Copies the windows the prompt needs (line-aligned prefix start) out of a rope. A line longer
    /// than a window is cut: the cursor line on its left, the rest of it on its right, so a huge
    /// line (minified code, data) costs no more than the budgets.
    pub(crate) fn extract(
        rope: &Rope,
        cursor: usize,
        prefix_tokens: usize,
        suffix_tokens: usize,
    ) -> Self {
        let cursor = cursor.min(rope.len_chars());
        let cursor_line = rope.char_to_line(cursor);
        let start = cursor.saturating_sub(prefix_tokens.saturating_mul(CHARS_PER_TOKEN_WINDOW));
        let mut first_line = rope.char_to_line(start);
        if rope.line_to_char(first_line) < start && first_line < cursor_line {
            first_line += 1;
        }
        let suffix_window = suffix_tokens.saturating_mul(CHARS_PER_TOKEN_WINDOW);
        let mut end = cursor.saturating_add(suffix_window).min(rope.len_chars());
        if end < rope.len_chars() {
            // Cut at a line start (but keep the cursor line), so the suffix window does not move
            // with the cursor while typing: the prompt keeps its KV-cached prefix.
            let end_line = rope.char_to_line(end);
            end = if end_line > cursor_line {
                rope.line_to_char(end_line)
            } else {
                let next_line = rope
                    .line_to_char((cursor_line + 1).min(rope.len_lines()))
                    .min(rope.len_chars());
                // The rest of a line longer than the window (and than any ordinary line) is cut
                // on its right.
                next_line.min(cursor.saturating_add(suffix_window.max(LONG_LINE_CHARS)))
            };
        }
        // A cursor line longer than the window starts the prefix within it.
        let prefix_start = rope.line_to_char(first_line).max(start);
        Self {
            prefix: rope.slice(prefix_start..cursor).to_string(),
            prefix_first_line: first_line,
            suffix: rope.slice(cursor..end).to_string(),
        }
    }

    /// Absolute lines this context covers (the most the prompt can show), end exclusive.
    pub(crate) fn lines(&self) -> std::ops::Range<usize> {
        let before = self.prefix.matches('\n').count();
        let after = self.suffix.matches('\n').count();
        self.prefix_first_line..self.prefix_first_line + before + after + 1
    }

    /// The cursor line up to the cursor.
    pub(crate) fn line_before_cursor(&self) -> &str {
        self.prefix.rsplit('\n').next().unwrap_or("")
    }
}

/// Similar code from elsewhere in the document for a completion at `cursor` (see
/// [`super::retrieval`]), or `None` when `snippet_tokens` is 0 or nothing is similar enough;
/// `previous` is the first line of the snippet of the document's previous request.
///
/// The query and the lines left out (those the prompt may already show) depend on the cursor's
/// line only, not its column: typing on a line keeps the snippet, so the prompt keeps its start
/// and the KV cache stays valid.
pub(crate) fn snippet_for_cursor(
    rope: &Rope,
    cursor: usize,
    prefix_tokens: usize,
    suffix_tokens: usize,
    snippet_tokens: usize,
    previous: Option<usize>,
) -> Option<Snippet> {
    if snippet_tokens == 0 {
        return None;
    }
    let cursor_line = rope.char_to_line(cursor.min(rope.len_chars()));
    let line_start = rope.line_to_char(cursor_line);
    let shown = CursorContext::extract(rope, line_start, prefix_tokens, suffix_tokens).lines();
    let params = SnippetParams::default();
    let snippet = similar_snippet(rope, cursor_line, shown, previous, &params)?;
    debug!(
        first_line = snippet.first_line,
        similarity = snippet.similarity,
        "snippet"
    );
    Some(snippet)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extract_is_line_aligned_and_bounded() {
        let rope = Rope::from_str("aaaa\nbbbb\ncccc\ndd|dd\neeee\n");
        let cursor = rope.to_string().find('|').unwrap();
        let ctx = CursorContext::extract(&rope, cursor, 1, 1);
        assert_eq!(ctx.prefix, "cccc\ndd");
        assert_eq!(ctx.prefix_first_line, 2);
        assert_eq!(
            ctx.suffix, "|dd\n",
            "the suffix window ends at a line start"
        );
        assert_eq!(ctx.line_before_cursor(), "dd");
        let ctx = CursorContext::extract(&rope, cursor, 1, 0);
        assert_eq!(ctx.suffix, "|dd\n", "the cursor line is always whole");
        let all = CursorContext::extract(&rope, 999, 1000, 1000);
        assert_eq!(all.prefix_first_line, 0);
        assert_eq!(all.suffix, "");
    }

    #[test]
    fn a_huge_line_is_cut_to_the_windows() {
        let line = format!(
            "x = [{}]",
            (0..3000)
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        let rope = Rope::from_str(&format!("import os\n{line}\nprint(x)\n"));
        let cursor = 10 + 4000; // column 4000 of the long line
        let ctx = CursorContext::extract(&rope, cursor, 16, 16);
        assert_eq!(
            ctx.prefix.chars().count(),
            16 * CHARS_PER_TOKEN_WINDOW,
            "cut on its left"
        );
        assert_eq!(ctx.prefix_first_line, 1);
        assert!(!ctx.prefix.contains('\n'));
        assert_eq!(
            ctx.suffix.chars().count(),
            LONG_LINE_CHARS,
            "cut on its right"
        );
    }

    #[test]
    fn snippet_depends_on_the_cursor_line_not_its_column() {
        let mut text = String::new();
        for i in 0..40 {
            text.push_str(&format!(
                "#[test]\nfn test_{i}() {{\n    let seed = u64::from_le_bytes(*b\"testseed\");\n    check_all_{i}(seed);\n}}\n"
            ));
            text.push_str(&format!(
                "fn helper_{i}(x: u32) -> u32 {{\n    x + {i}\n}}\n"
            ));
        }
        text.push_str("#[test]\nfn test_last() {\n    let seed = u64::from_le_bytes(*b\"testseed\");\n    check\n");
        let rope = Rope::from_str(&text);
        let line = rope.len_lines() - 2; // "    check"
        let at =
            |col: usize| snippet_for_cursor(&rope, rope.line_to_char(line) + col, 64, 16, 64, None);
        let snippet = at(4).expect("similar tests exist far above");
        assert!(snippet.text.contains("testseed"), "{}", snippet.text);
        assert_eq!(
            at(9),
            Some(snippet.clone()),
            "typing on the line keeps the snippet"
        );
        assert_eq!(
            snippet_for_cursor(&rope, rope.line_to_char(line) + 4, 64, 16, 0, None),
            None
        );
    }
}
