//! Generation control: pure stop rules applied to the decoded text as it streams in.
//!
//! - The healed tail (see [`super::prompt::heal_start`]) must come first; it is checked and removed.
//! - Single-line mode (always when text stands right of the cursor) stops at the first line break.
//! - Multi-line mode stops when a new line is indented less than the cursor line, and after
//!   `max_lines` lines.
//! - A completed line equal to the next non-blank line after the cursor means the model started
//!   repeating the suffix: stop and drop that line. In single-line mode a line ending with the text
//!   right of the cursor has that overlap trimmed.
//! - The result never ends with blank lines or trailing whitespace.
//!
//! Token and time budgets and end-of-generation / special tokens are enforced by the caller, which
//! then calls [`StopRules::finish`].

/// Whether a suggestion may span several lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineMode {
    /// Stop at the first line break.
    Single,
    /// Several lines, bounded by indentation and `max_lines`.
    Multi,
}

/// The context the stop rules need, taken from the document around the cursor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StopContext {
    /// Line mode in effect.
    pub mode: LineMode,
    /// Leading whitespace characters of the cursor line.
    pub cursor_indent: usize,
    /// Text right of the cursor on its line, trimmed (empty if none).
    pub right_of_cursor: String,
    /// The first non-blank line after the cursor line, trimmed.
    pub next_line: Option<String>,
    /// Most lines in multi-line mode.
    pub max_lines: usize,
}

impl StopContext {
    /// Derives the context from the cursor line and the text after the cursor.
    /// Single-line mode is forced when non-blank text stands right of the cursor.
    pub fn new(
        line_before_cursor: &str,
        after_cursor: &str,
        multiline: bool,
        max_lines: usize,
    ) -> Self {
        let (rest_of_line, after_line) = match after_cursor.find('\n') {
            Some(i) => (&after_cursor[..i], &after_cursor[i + 1..]),
            None => (after_cursor, ""),
        };
        let right_of_cursor = rest_of_line.trim().to_owned();
        let mode = if multiline && right_of_cursor.is_empty() {
            LineMode::Multi
        } else {
            LineMode::Single
        };
        let cursor_indent = line_before_cursor
            .chars()
            .take_while(|c| c.is_whitespace())
            .count();
        let next_line = after_line
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .map(str::to_owned);
        Self {
            mode,
            cursor_indent,
            right_of_cursor,
            next_line,
            max_lines: max_lines.max(1),
        }
    }
}

/// What the caller should do after a piece of text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Keep generating.
    Continue,
    /// A rule ended the completion.
    Stop,
}

/// Streaming stop-rule state for one generation.
#[derive(Debug)]
pub struct StopRules {
    ctx: StopContext,
    heal_left: String,
    text: String,
    /// Byte index in `text` where the first unchecked line starts.
    line_start: usize,
    lines: usize,
    stopped: bool,
    diverged: bool,
}

impl StopRules {
    /// Starts a generation that must begin with `heal`.
    pub fn new(ctx: StopContext, heal: &str) -> Self {
        Self {
            ctx,
            heal_left: heal.to_owned(),
            text: String::new(),
            line_start: 0,
            lines: 0,
            stopped: false,
            diverged: false,
        }
    }

    /// Whether the generation did not start with the healed text (the suggestion is then empty).
    pub fn diverged(&self) -> bool {
        self.diverged
    }

    /// The text accepted so far (heal removed, rules not yet finalised).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Feeds decoded text.
    pub fn push(&mut self, piece: &str) -> Step {
        if self.stopped {
            return Step::Stop;
        }
        let mut piece = piece;
        if !self.heal_left.is_empty() {
            if self.heal_left.starts_with(piece) {
                self.heal_left.drain(..piece.len());
                return Step::Continue;
            } else if let Some(rest) = piece.strip_prefix(self.heal_left.as_str()) {
                self.heal_left.clear();
                piece = rest;
            } else {
                self.diverged = true;
                self.text.clear();
                return self.stop();
            }
        }
        self.text.push_str(piece);
        self.check()
    }

    fn stop(&mut self) -> Step {
        self.stopped = true;
        Step::Stop
    }

    /// Cuts the text at byte `at` (dropping the line break before it) and stops.
    fn cut(&mut self, at: usize) -> Step {
        self.text.truncate(at);
        if self.text.ends_with('\n') {
            self.text.pop();
            if self.text.ends_with('\r') {
                self.text.pop();
            }
        }
        self.stop()
    }

    fn check(&mut self) -> Step {
        loop {
            let rest = &self.text[self.line_start..];
            let newline = rest.find('\n');
            let line = &rest[..newline.unwrap_or(rest.len())];
            let first = self.lines == 0;
            if first && self.ctx.mode == LineMode::Single && newline.is_some() {
                let at = self.line_start + line.len();
                return self.cut(at);
            }
            if !first && self.ctx.mode == LineMode::Multi {
                if let Some(indent) = indent_if_nonblank(line) {
                    if indent < self.ctx.cursor_indent {
                        let at = self.line_start;
                        return self.cut(at);
                    }
                }
            }
            let Some(nl) = newline else {
                return Step::Continue;
            };
            if self.repeats_suffix(line) {
                let at = self.line_start;
                return self.cut(at);
            }
            self.lines += 1;
            self.line_start += nl + 1;
            if self.lines >= self.ctx.max_lines {
                let at = self.line_start;
                return self.cut(at);
            }
        }
    }

    fn repeats_suffix(&self, line: &str) -> bool {
        let trimmed = line.trim();
        !trimmed.is_empty() && self.ctx.next_line.as_deref() == Some(trimmed)
    }

    /// Final suggestion: the last line's rules applied, trailing blank lines and whitespace removed.
    /// `budget_cut` says the token or time budget ended the generation: an unfinished last line of
    /// a multi-line suggestion is then dropped rather than shown half-written.
    pub fn finish(mut self, budget_cut: bool) -> String {
        if budget_cut && !self.stopped && self.lines > 0 {
            self.text.truncate(self.line_start);
        }
        if !self.stopped {
            let line = &self.text[self.line_start..];
            if self.lines > 0 && self.repeats_suffix(line) {
                self.text.truncate(self.line_start);
            }
        }
        let mut out = self.text.trim_end().to_owned();
        let right = self.ctx.right_of_cursor.as_str();
        if !right.is_empty() && !out.contains('\n') {
            if let Some(stripped) = out.strip_suffix(right) {
                out = stripped.trim_end().to_owned();
            }
        }
        out
    }
}

fn indent_if_nonblank(line: &str) -> Option<usize> {
    let trimmed = line.trim_start();
    (!trimmed.is_empty()).then(|| line.chars().count() - trimmed.chars().count())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(
        before_line: &str,
        after: &str,
        multiline: bool,
        heal: &str,
        pieces: &[&str],
    ) -> (String, usize) {
        let mut rules = StopRules::new(StopContext::new(before_line, after, multiline, 8), heal);
        let mut used = 0;
        for p in pieces {
            used += 1;
            if rules.push(p) == Step::Stop {
                break;
            }
        }
        (rules.finish(false), used)
    }

    #[test]
    fn multi_line_stops_at_dedent_and_trims_blank_lines() {
        let (s, used) = run(
            "    ",
            "\n",
            true,
            "    ",
            &[
                "    return",
                " a + b\n",
                "\n",
                "\n",
                "def",
                " g():\n",
                "never",
            ],
        );
        assert_eq!(s, "return a + b");
        assert_eq!(used, 5, "stops on the token that starts the dedented line");
    }

    #[test]
    fn single_line_when_text_right_of_cursor_and_overlap_trimmed() {
        assert_eq!(
            run("x = f(", ")\nnext", true, "", &["a, b)", "\n", "y"]).0,
            "a, b"
        );
        assert_eq!(run("x = ", "", false, "", &["1\n", "y = 2"]).0, "1");
    }

    #[test]
    fn stops_when_repeating_the_next_line() {
        let (s, used) = run(
            "    x = 1",
            "\n    return x\n",
            true,
            "",
            &["\n    y = 2\n", "    return x\n", "more"],
        );
        assert_eq!(s, "\n    y = 2");
        assert_eq!(used, 2);
        // also at the very end of generation, without a final line break
        assert_eq!(
            run(
                "    x = 1",
                "\n    return x\n",
                true,
                "",
                &["\n    y = 2\n    return x"]
            )
            .0,
            "\n    y = 2"
        );
    }

    #[test]
    fn heal_is_required_and_stripped() {
        assert_eq!(
            run("let v = vec.it", "", true, ".it", &[".", "iter", "()"]).0,
            "er()"
        );
        let mut rules = StopRules::new(StopContext::new("a", "", true, 8), " fo");
        assert_eq!(rules.push(" bar"), Step::Stop);
        assert!(rules.diverged());
        assert_eq!(rules.finish(false), "");
    }

    #[test]
    fn max_lines_bounds_multi_line() {
        let mut rules = StopRules::new(StopContext::new("", "", true, 2), "");
        assert_eq!(rules.push("a\n"), Step::Continue);
        assert_eq!(rules.push("b\nc\n"), Step::Stop);
        assert_eq!(rules.finish(false), "a\nb");
    }

    #[test]
    fn budget_cut_drops_the_unfinished_last_line() {
        let mut rules = StopRules::new(StopContext::new("    ", "", true, 8), "");
        rules.push("if n <= 1:\n        return n\n    el");
        assert_eq!(rules.finish(true), "if n <= 1:\n        return n");
        let mut rules = StopRules::new(StopContext::new("    ", "", true, 8), "");
        rules.push("return fibon");
        assert_eq!(rules.finish(true), "return fibon", "a single line is kept");
    }

    #[test]
    fn whitespace_only_completion_is_empty() {
        assert_eq!(run("", "", true, "", &["   \n\n  "]).0, "");
    }
}
