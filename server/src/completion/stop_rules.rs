//! Generation control: pure stop rules applied to the decoded text as it streams in.
//!
//! - The healed tail (see [`super::prompt::heal_start`]) must come first; it is checked and removed.
//! - Single-line mode (always when text stands right of the cursor) stops at the first line break.
//! - Multi-line mode stops when a new line is indented less than the cursor line, and after
//!   `max_lines` lines.
//! - A completed line equal to the next non-blank line after the cursor (for the first line: with
//!   the text before the cursor) means the model started repeating the suffix: stop and drop that
//!   line. In single-line mode a line ending with the text
//!   right of the cursor has that overlap trimmed.
//! - The result never ends with blank lines or trailing whitespace.
//! - A first line dropped for repeating the next line leaves the suggestion empty; [`branch_point`]
//!   says from which generated token the caller may try the model's second choice instead.
//!
//! Token and time budgets and end-of-generation / special tokens are enforced by the caller, which
//! then calls [`StopRules::finish`].

use lmrs::{GeneratedToken, InferenceFeedback, RunnerUp, TokenId};

/// How much less likely than the token it replaces a runner-up may be for [`branch_point`], in nats:
/// `exp(-1.1)` ≈ 1/3 of its probability.
pub(crate) const BRANCH_MAX_GAP: f32 = 1.1;

/// A generated token, kept with the model's second choice at that step.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Generated {
    /// Token id.
    pub(crate) id: TokenId,
    /// Its text.
    pub(crate) text: String,
    /// The most likely other token, with its text (kept only when that is whole UTF-8).
    pub(crate) runner_up: Option<(RunnerUp, String)>,
}

impl Generated {
    /// Keeps a generated token and its runner-up with the runner-up's text.
    pub(crate) fn new(token: &GeneratedToken<'_>, runner_up: Option<(RunnerUp, &str)>) -> Self {
        Self {
            id: token.id,
            text: token.text.to_owned(),
            runner_up: runner_up.map(|(runner_up, text)| (runner_up, text.to_owned())),
        }
    }
}

/// Where to leave a first line that only repeated the next line (the model copying the suffix,
/// e.g. writing the `map.insert("qux", 30);` that stands below the cursor instead of the
/// `map.insert("baz", 20);` that belongs above it): the index of the **latest** token of that line
/// whose runner-up is at most [`BRANCH_MAX_GAP`] less likely and spells a different line. The
/// latest, because the start of the copied line is usually right too and the copy goes wrong where
/// the new line's content differs; an earlier branch would throw away what the model was sure of.
/// `generated` starts with the healed text `heal`; `ctx` is the stop rules' context.
pub(crate) fn branch_point(
    generated: &[Generated],
    heal: &str,
    ctx: &StopContext,
) -> Option<usize> {
    let mut text = String::new();
    let mut found = None;
    for (index, token) in generated.iter().enumerate() {
        if let Some((runner_up, runner_up_text)) = &token.runner_up {
            let candidate = format!("{text}{runner_up_text}");
            if runner_up.gap <= BRANCH_MAX_GAP && spells_another_line(&candidate, heal, ctx) {
                found = Some(index);
            }
        }
        text.push_str(&token.text);
        if text.strip_prefix(heal).is_some_and(|t| t.contains('\n')) {
            break;
        }
    }
    found
}

/// Whether generated text `candidate` (heal included) can only continue into a first line other
/// than the next line: its finished first line differs and is not blank, or its unfinished first
/// line can no longer become the next line (a mere re-spelling in other tokens could).
fn spells_another_line(candidate: &str, heal: &str, ctx: &StopContext) -> bool {
    let Some(after_heal) = candidate.strip_prefix(heal) else {
        return false;
    };
    match after_heal.split_once('\n') {
        Some((line, _)) => !line.trim().is_empty() && !ctx.repeats_next_line(line, true),
        None => !after_heal.trim().is_empty() && !ctx.may_repeat_next_line(after_heal),
    }
}

/// Whether a suggestion may span several lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LineMode {
    /// Stop at the first line break.
    Single,
    /// Several lines, bounded by indentation and `max_lines`.
    Multi,
}

/// The context the stop rules need, taken from the document around the cursor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StopContext {
    /// Line mode in effect.
    pub(crate) mode: LineMode,
    /// Leading whitespace characters of the cursor line.
    pub(crate) cursor_indent: usize,
    /// The cursor line's text before the cursor, without its indentation.
    pub(crate) before_cursor: String,
    /// Text right of the cursor on its line, trimmed (empty if none).
    pub(crate) right_of_cursor: String,
    /// The first non-blank line after the cursor line, trimmed.
    pub(crate) next_line: Option<String>,
    /// Most lines in multi-line mode.
    pub(crate) max_lines: usize,
}

impl StopContext {
    /// Derives the context from the cursor line and the text after the cursor.
    /// Single-line mode is forced when non-blank text stands right of the cursor.
    pub(crate) fn new(
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
            before_cursor: line_before_cursor.trim_start().to_owned(),
            right_of_cursor,
            next_line,
            max_lines: max_lines.max(1),
        }
    }
}

impl StopContext {
    /// Whether the generated `line` is the next line again: the first line of a suggestion together
    /// with the text before the cursor. A blank generated line repeats nothing.
    fn repeats_next_line(&self, line: &str, first: bool) -> bool {
        let Some(next_line) = self.next_line.as_deref() else {
            return false;
        };
        if line.trim().is_empty() {
            return false;
        }
        if first {
            let whole = format!("{}{line}", self.before_cursor);
            whole.trim() == next_line
        } else {
            line.trim() == next_line
        }
    }

    /// Whether unfinished first-line text (generated, heal removed) is still on its way to the next
    /// line.
    fn may_repeat_next_line(&self, unfinished: &str) -> bool {
        let whole = format!("{}{unfinished}", self.before_cursor);
        self.next_line
            .as_deref()
            .is_some_and(|next_line| next_line.starts_with(whole.trim_start()))
    }
}

/// Streaming stop-rule state for one generation.
#[derive(Debug)]
pub(crate) struct StopRules {
    ctx: StopContext,
    heal_left: String,
    text: String,
    /// Byte index in `text` where the first unchecked line starts.
    line_start: usize,
    lines: usize,
    stopped: bool,
    diverged: bool,
    repeated_first_line: bool,
}

impl StopRules {
    /// Starts a generation that must begin with `heal`.
    pub(crate) fn new(ctx: StopContext, heal: &str) -> Self {
        Self {
            ctx,
            heal_left: heal.to_owned(),
            text: String::new(),
            line_start: 0,
            lines: 0,
            stopped: false,
            diverged: false,
            repeated_first_line: false,
        }
    }

    /// Whether the first line was dropped for repeating the next line (the suggestion is then
    /// empty; see [`branch_point`]).
    pub(crate) fn repeated_first_line(&self) -> bool {
        self.repeated_first_line
    }

    /// The healed text not yet generated.
    pub(crate) fn pending_heal(&self) -> &str {
        &self.heal_left
    }

    /// Whether the generation did not start with the healed text (the suggestion is then empty).
    pub(crate) fn diverged(&self) -> bool {
        self.diverged
    }

    /// The text accepted so far (heal removed, rules not yet finalised).
    pub(crate) fn text(&self) -> &str {
        &self.text
    }

    /// Feeds decoded text.
    pub(crate) fn push(&mut self, piece: &str) -> InferenceFeedback {
        if self.stopped {
            return InferenceFeedback::Halt;
        }
        let mut piece = piece;
        if !self.heal_left.is_empty() {
            if self.heal_left.starts_with(piece) {
                self.heal_left.drain(..piece.len());
                return InferenceFeedback::Continue;
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

    fn stop(&mut self) -> InferenceFeedback {
        self.stopped = true;
        InferenceFeedback::Halt
    }

    /// Cuts the text at byte `at` (dropping the line break before it) and stops.
    fn cut(&mut self, at: usize) -> InferenceFeedback {
        self.text.truncate(at);
        if self.text.ends_with('\n') {
            self.text.pop();
            if self.text.ends_with('\r') {
                self.text.pop();
            }
        }
        self.stop()
    }

    fn check(&mut self) -> InferenceFeedback {
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
                return InferenceFeedback::Continue;
            };
            if self.ctx.repeats_next_line(line, first) {
                self.repeated_first_line = first;
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

    /// For a generation the time budget stopped: a first line that may end in the middle of a name
    /// loses that name (`hm.insert(Dro` → `hm.insert(`), so that a slow machine shows less, never a
    /// name that does not exist. (Later lines cut by a budget are dropped whole by
    /// [`finish`](Self::finish).)
    pub(crate) fn end_before_unfinished_name(&mut self) {
        if !self.stopped && self.lines == 0 {
            let kept = self
                .text
                .trim_end_matches(|c: char| c.is_alphanumeric() || c == '_')
                .len();
            self.text.truncate(kept);
        }
    }

    /// Final suggestion: the last line's rules applied, trailing blank lines and whitespace removed.
    /// `budget_cut` says the token or time budget ended the generation: an unfinished last line of
    /// a multi-line suggestion is then dropped rather than shown half-written.
    pub(crate) fn finish(mut self, budget_cut: bool) -> String {
        if budget_cut && !self.stopped && self.lines > 0 {
            self.text.truncate(self.line_start);
        }
        if !self.stopped {
            let line = &self.text[self.line_start..];
            if self.lines > 0 && self.ctx.repeats_next_line(line, false) {
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
            if rules.push(p) == InferenceFeedback::Halt {
                break;
            }
        }
        (rules.finish(false), used)
    }

    #[test]
    fn a_line_cut_by_the_budget_ends_before_an_unfinished_name() {
        let cut = |pieces: &[&str]| {
            let mut rules = StopRules::new(StopContext::new("        ", "\n", true, 8), "");
            for p in pieces {
                rules.push(p);
            }
            rules.end_before_unfinished_name();
            rules.finish(true)
        };
        assert_eq!(
            cut(&["hm", ".insert", "(Dro", "ppable", "::new(i), Dro"]),
            "hm.insert(Droppable::new(i),"
        );
        assert_eq!(cut(&["x = ", "compute_", "digest"]), "x =");
        assert_eq!(cut(&["return (a, ", "b)"]), "return (a, b)");
        assert_eq!(cut(&["été_à"]), "");
        // A later line is not touched (finish drops it whole when a budget cut it).
        let mut rules = StopRules::new(StopContext::new("    ", "\n", true, 8), "");
        rules.push("if done:\n        return tot");
        rules.end_before_unfinished_name();
        assert_eq!(rules.finish(false), "if done:\n        return tot");
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
        assert_eq!(rules.push(" bar"), InferenceFeedback::Halt);
        assert!(rules.diverged());
        assert_eq!(rules.finish(false), "");
    }

    #[test]
    fn max_lines_bounds_multi_line() {
        let mut rules = StopRules::new(StopContext::new("", "", true, 2), "");
        assert_eq!(rules.push("a\n"), InferenceFeedback::Continue);
        assert_eq!(rules.push("b\nc\n"), InferenceFeedback::Halt);
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

    fn token(text: &str, runner_up: Option<(&str, f32)>) -> Generated {
        Generated {
            id: 0,
            text: text.to_owned(),
            runner_up: runner_up.map(|(text, gap)| (RunnerUp { id: 1, gap }, text.to_owned())),
        }
    }

    /// `map.insert("qux".to_owned(), 30);` copied from the line below, as Qwen 0.5B writes it.
    fn copied_line(qux_gap: f32) -> Vec<Generated> {
        vec![
            token(" map", Some((" assert", 0.19))),
            token(".insert", Some((".remove", 3.4))),
            token("(\"", Some(("(", 6.8))),
            token("qu", Some(("baz", qux_gap))),
            token("x", Some(("z", 6.5))),
            token("\".", Some(("\",", 7.8))),
            token("to_owned(), 30", Some(("to_owned(), 3", 0.5))),
            token(");\n\n", Some((");\n", 1.8))),
            token("        let", Some(("        assert", 0.1))),
        ]
    }

    fn ctx_before(line_before_cursor: &str) -> StopContext {
        let after = "\n        map.insert(\"qux\".to_owned(), 30);\n    }\n";
        StopContext::new(line_before_cursor, after, true, 8)
    }

    #[test]
    fn branch_point_is_the_latest_likely_runner_up() {
        assert_eq!(
            branch_point(&copied_line(0.42), " ", &ctx_before("        ")),
            Some(3)
        );
        // A runner-up much less likely than its token is no branch point.
        assert_eq!(
            branch_point(&copied_line(3.0), " ", &ctx_before("        ")),
            Some(0)
        );
        let mut tokens = copied_line(3.0);
        tokens[0].runner_up = None;
        assert_eq!(branch_point(&tokens, " ", &ctx_before("        ")), None);
    }

    #[test]
    fn branch_point_skips_respellings_and_what_follows_the_line() {
        // "to_owned(), 3" and ");\n" (gaps 0.5, 1.8 above) spell the same line; so would "q" for "qu".
        let mut tokens = copied_line(3.0);
        tokens[3].runner_up = Some((RunnerUp { id: 1, gap: 0.1 }, "q".to_owned()));
        assert_eq!(branch_point(&tokens, " ", &ctx_before("        ")), Some(0));
        // The token after the line break (gap 0.1) is not part of the repeated line.
        tokens[0].runner_up = None;
        assert_eq!(branch_point(&tokens, " ", &ctx_before("        ")), None);
        // A runner-up ending the line differently counts; a blank line does not.
        tokens[7].runner_up = Some((RunnerUp { id: 1, gap: 1.0 }, "); // qux\n".to_owned()));
        assert_eq!(branch_point(&tokens, " ", &ctx_before("        ")), Some(7));
        tokens[0].runner_up = Some((RunnerUp { id: 1, gap: 0.0 }, "\n".to_owned()));
        tokens[7].runner_up = None;
        assert_eq!(branch_point(&tokens, "", &ctx_before("        ")), None);
    }

    #[test]
    fn branch_point_keeps_the_healed_text() {
        // The prompt ended two spaces short of the cursor: the generation must spell them first.
        let tokens = vec![
            token("  map", Some((" ", 0.1))),
            token(".insert", Some(("_insert", 0.5))),
            token("(\"qux\".to_owned(), 30);\n", None),
        ];
        // " " is still inside the healed text; "map_insert" leaves the repeated line.
        assert_eq!(
            branch_point(&tokens, "  ", &ctx_before("        ")),
            Some(1)
        );
        let tokens = vec![
            token("  map", Some(("\tmap", 0.1))),
            token(".insert(\"qux\".to_owned(), 30);\n", None),
        ];
        let ctx = ctx_before("        ");
        assert_eq!(
            branch_point(&tokens, "  ", &ctx),
            None,
            "a tab breaks the heal"
        );
    }

    #[test]
    fn branch_point_and_repeats_count_the_text_before_the_cursor() {
        // Cursor after `map.insert("`: the first line repeats the next one together with it.
        let ctx = ctx_before("        map.insert(\"");
        let mut rules = StopRules::new(ctx.clone(), "");
        assert_eq!(
            rules.push("qux\".to_owned(), 30);\n"),
            InferenceFeedback::Halt
        );
        assert!(rules.repeated_first_line());
        assert_eq!(rules.finish(false), "");
        let tokens = vec![
            token("qu", Some(("baz", 0.4))),
            token("x\".to_owned(), 30);\n", None),
        ];
        assert_eq!(branch_point(&tokens, "", &ctx), Some(0));
        // "qux" alone after another start is no repeat.
        let mut rules = StopRules::new(ctx_before("        map.remove(\""), "");
        assert_eq!(
            rules.push("qux\".to_owned(), 30);\n"),
            InferenceFeedback::Continue
        );
        assert!(!rules.repeated_first_line());
    }
}
