//! Similar-code retrieval: finds the place elsewhere in the document whose lines look most like
//! the lines above the cursor, so the prompt can show the model what followed them there.
//!
//! Code repeats itself beyond any prompt window: test functions built alike, match arms, tables,
//! the same setup line in twenty tests. The query is the `query_lines` whole lines above the
//! cursor line (never the cursor line itself: typing on it must not change the snippet, or the
//! prompt would change at its start and the KV cache would be lost). Every window of that many
//! lines in the scanned part of the document is scored by the Jaccard similarity of its set of
//! words (identifiers and numbers of two or more characters) with the query's; the best window
//! outside the prompt's own window, with the `follow_lines` lines after it, is the snippet.
//!
//! The window shown for the previous request on the same document is kept while it is still
//! similar enough (at least `min_similarity` and [`KEEP_PREVIOUS_FRACTION`] of the best score):
//! moving the cursor to the next line then keeps the prompt's start, and the KV cache with it.
//!
//! The scan slides one window over the lines with word counts, so it is linear in the scanned
//! text; at most `max_scan_lines` lines (and `max_scan_chars` characters) around the cursor are
//! looked at, so the cost does not grow with the file.

use std::collections::{HashMap, HashSet};
use std::ops::Range;

use ropey::Rope;

/// The previous snippet is kept while its similarity is at least this fraction of the best one.
/// Moving the cursor down a line moves the best match in a repeated region down a line too, and
/// the old window scores lower against the new query. A fraction near 1 would replace it on most
/// moves and lose the KV cache each time; half the best score keeps it through a repeated region
/// (measurements: docs/prompt.md, `scripts/cursor-moves.py`).
pub(crate) const KEEP_PREVIOUS_FRACTION: f32 = 0.5;

/// Retrieval settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct SnippetParams {
    /// Lines above the cursor line that form the query (and the size of a compared window).
    pub(crate) query_lines: usize,
    /// Lines after the matching window included in the snippet.
    pub(crate) follow_lines: usize,
    /// Least Jaccard similarity (0..=1) for a window to be used.
    pub(crate) min_similarity: f32,
    /// Most lines looked at, centred on the cursor.
    pub(crate) max_scan_lines: usize,
    /// Most characters looked at, centred on the cursor (files of very long lines).
    pub(crate) max_scan_chars: usize,
}

impl Default for SnippetParams {
    fn default() -> Self {
        Self {
            query_lines: 8,
            follow_lines: 4,
            min_similarity: 0.3,
            max_scan_lines: 20_000,
            max_scan_chars: 2_000_000,
        }
    }
}

/// A retrieved piece of the document.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Snippet {
    /// Absolute (0-based) line where the snippet starts.
    pub(crate) first_line: usize,
    /// The snippet's lines, each ending in a line break.
    pub(crate) text: String,
    /// Jaccard similarity of its first `query_lines` lines with the query.
    pub(crate) similarity: f32,
}

/// The words of a line: runs of letters, digits and `_` of at least two characters.
fn words(line: &str) -> impl Iterator<Item = &str> {
    line.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| w.chars().nth(1).is_some())
}

/// Finds the snippet most similar to the lines above `cursor_line`, outside `exclude` (the lines
/// the prompt already shows), preferring the one starting at line `previous` while it is still
/// similar enough. `None` when the query has no words or nothing is similar enough.
pub(crate) fn similar_snippet(
    rope: &Rope,
    cursor_line: usize,
    exclude: Range<usize>,
    previous: Option<usize>,
    params: &SnippetParams,
) -> Option<Snippet> {
    let window = params.query_lines.max(1);
    let n_lines = rope.len_lines();
    if cursor_line < window || cursor_line >= n_lines {
        return None;
    }
    let cursor_char = rope.line_to_char(cursor_line);
    let first_char = cursor_char.saturating_sub(params.max_scan_chars / 2);
    let last_char = (cursor_char + params.max_scan_chars / 2).min(rope.len_chars());
    let scan_start = cursor_line
        .saturating_sub(params.max_scan_lines / 2)
        .max(rope.char_to_line(first_char));
    let scan_end = (scan_start + params.max_scan_lines)
        .min(n_lines)
        .min(rope.char_to_line(last_char) + 1);
    if cursor_line < scan_start + window || cursor_line >= scan_end {
        return None;
    }
    let lines: Vec<String> = (scan_start..scan_end)
        .map(|i| rope.line(i).to_string())
        .collect();
    let line_at = |abs: usize| &lines[abs - scan_start];

    // The query's distinct words.
    let query: HashSet<&str> = (cursor_line - window..cursor_line)
        .flat_map(|abs| words(line_at(abs)))
        .collect();
    if query.is_empty() {
        return None;
    }

    let (best, kept) = score_windows(
        &lines,
        scan_start,
        &query,
        window,
        window + params.follow_lines,
        &exclude,
        previous,
    );
    let best = best?;
    let (similarity, start) = match kept {
        Some(k) if k.0 >= params.min_similarity && k.0 >= KEEP_PREVIOUS_FRACTION * best.0 => k,
        _ => best,
    };
    if similarity < params.min_similarity {
        return None;
    }
    let end = (start + window + params.follow_lines).min(scan_end);
    let mut text: String = (start..end).map(|abs| line_at(abs).as_str()).collect();
    if !text.ends_with('\n') {
        text.push('\n');
    }
    Some(Snippet {
        first_line: start,
        text,
        similarity,
    })
}

/// A window's similarity and first line, if one was scored.
type ScoredWindow = Option<(f32, usize)>;

/// Slides a window of `window` lines over `lines` (the first of which is line `first`): the
/// Jaccard similarity of each window's distinct words with `query`. Returns the best window
/// whose `shown` lines stay clear of `exclude`, and the window starting at `previous` (both as
/// similarity and first line), if scored.
fn score_windows<L: AsRef<str>>(
    lines: &[L],
    first: usize,
    query: &HashSet<&str>,
    window: usize,
    shown: usize,
    exclude: &Range<usize>,
    previous: Option<usize>,
) -> (ScoredWindow, ScoredWindow) {
    let end_line = first + lines.len();
    let line_at = |abs: usize| lines[abs - first].as_ref();
    // Word counts, distinct words and words shared with the query, of the current window.
    let mut counts: HashMap<&str, usize> = HashMap::new();
    let mut distinct = 0usize;
    let mut shared = 0usize;
    let mut best: Option<(f32, usize)> = None;
    let mut kept: Option<(f32, usize)> = None;
    for end in first..end_line {
        for w in words(line_at(end)) {
            let c = counts.entry(w).or_insert(0);
            if *c == 0 {
                distinct += 1;
                shared += usize::from(query.contains(w));
            }
            *c += 1;
        }
        if end + 1 < first + window {
            continue;
        }
        let start = end + 1 - window;
        if start > first {
            for w in words(line_at(start - 1)) {
                // Every word leaving the window was counted when its line entered it.
                if let Some(c) = counts.get_mut(w) {
                    *c -= 1;
                    if *c == 0 {
                        distinct -= 1;
                        shared -= usize::from(query.contains(w));
                    }
                }
            }
        }
        let shown_end = (start + shown).min(end_line);
        let overlaps = start < exclude.end && exclude.start < shown_end;
        if overlaps || distinct == 0 {
            continue;
        }
        let similarity = shared as f32 / (query.len() + distinct - shared) as f32;
        if best.is_none_or(|(s, _)| similarity > s) {
            best = Some((similarity, start));
        }
        if previous == Some(start) {
            kept = Some((similarity, start));
        }
    }
    (best, kept)
}

/// The window of `text` (another file) most like `query_lines` (the lines above the cursor in
/// the current file), with the `follow_lines` lines after it: what similar code elsewhere in the
/// project looks like and what followed it there. `None` when nothing reaches `min_similarity`.
/// At most `max_scan_lines` lines of `text` are looked at.
pub(crate) fn similar_snippet_in(
    query_lines: &[&str],
    text: &str,
    params: &SnippetParams,
) -> Option<Snippet> {
    let window = query_lines.len();
    let query: HashSet<&str> = query_lines.iter().flat_map(|l| words(l)).collect();
    if window == 0 || query.is_empty() {
        return None;
    }
    let lines: Vec<&str> = text
        .split_inclusive('\n')
        .take(params.max_scan_lines)
        .collect();
    if lines.len() < window {
        return None;
    }
    let (best, _) = score_windows(
        &lines,
        0,
        &query,
        window,
        window + params.follow_lines,
        &(0..0),
        None,
    );
    let (similarity, start) = best.filter(|(s, _)| *s >= params.min_similarity)?;
    let end = (start + window + params.follow_lines).min(lines.len());
    let mut snippet: String = lines[start..end].concat();
    if !snippet.ends_with('\n') {
        snippet.push('\n');
    }
    Some(Snippet {
        first_line: start,
        text: snippet,
        similarity,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(query_lines: usize, follow_lines: usize) -> SnippetParams {
        SnippetParams {
            query_lines,
            follow_lines,
            min_similarity: 0.3,
            max_scan_lines: 1000,
            max_scan_chars: 100_000,
        }
    }

    const TESTS: &str = "\
#[test]
fn test_alpha() {
    let seed = from_le_bytes(testseed);
    let mut rng = SmallRng::seed_from(seed);
}
fn unrelated() {
    println!(\"hello\");
}
#[test]
fn test_beta() {
";

    #[test]
    fn finds_the_window_like_the_lines_above_the_cursor_with_what_followed_it() {
        let rope = Rope::from_str(TESTS);
        // cursor on line 10 (the empty last line); query = lines 8..10
        let s = similar_snippet(&rope, 10, 8..11, None, &params(2, 2)).expect("a snippet");
        assert_eq!(s.first_line, 0);
        assert_eq!(
            s.text,
            "#[test]\nfn test_alpha() {\n    let seed = from_le_bytes(testseed);\n    let mut rng = SmallRng::seed_from(seed);\n"
        );
        assert!(
            s.similarity > 0.3 && s.similarity <= 1.0,
            "{}",
            s.similarity
        );
    }

    #[test]
    fn nothing_inside_the_prompt_window_or_below_the_threshold() {
        let rope = Rope::from_str(TESTS);
        assert_eq!(similar_snippet(&rope, 10, 0..11, None, &params(2, 2)), None);
        let strict = SnippetParams {
            min_similarity: 1.01,
            ..params(2, 2)
        };
        assert_eq!(similar_snippet(&rope, 10, 8..11, None, &strict), None);
    }

    #[test]
    fn the_previous_snippet_is_kept_while_nearly_as_similar() {
        let text = "fn a() {\n    let x = one(two);\n}\nfn b() {\n    let x = one(two, three);\n}\n\n\nfn c() {\n    let x = one(two);\n";
        let rope = Rope::from_str(text);
        let lenient = SnippetParams {
            min_similarity: 0.0,
            ..params(2, 0)
        };
        // query = lines 8..10 {fn, let, one, two}: window 0..2 has exactly those words (1.0),
        // window 3..5 one more, three (0.8), window 1..3 {let, one, two} (0.75), window 2..4
        // {fn} (0.25).
        let best = similar_snippet(&rope, 10, 8..11, None, &lenient).unwrap();
        assert_eq!((best.first_line, best.similarity), (0, 1.0));
        let kept = similar_snippet(&rope, 10, 8..11, Some(1), &lenient).unwrap();
        assert_eq!(kept.first_line, 1, "0.75 of the best: kept");
        let dropped = similar_snippet(&rope, 10, 8..11, Some(2), &lenient).unwrap();
        assert_eq!(dropped.first_line, 0, "0.25 of the best: replaced");
    }

    #[test]
    fn degenerate_inputs_give_none() {
        let rope = Rope::from_str("a\n\n\n\n");
        assert_eq!(
            similar_snippet(&rope, 3, 3..4, None, &params(2, 1)),
            None,
            "no words"
        );
        assert_eq!(
            similar_snippet(&rope, 1, 1..2, None, &params(2, 1)),
            None,
            "too few lines"
        );
        assert_eq!(
            similar_snippet(&rope, 99, 0..0, None, &params(2, 1)),
            None,
            "past the end"
        );
        let long_lines = Rope::from_str(&format!("{}\n", "word ".repeat(1000)).repeat(40));
        // Every window is alike: the earliest one scanned wins.
        let first_found = |max_scan_chars| {
            let p = SnippetParams {
                max_scan_chars,
                ..params(2, 0)
            };
            similar_snippet(&long_lines, 39, 39..40, None, &p).map(|s| s.first_line)
        };
        assert_eq!(first_found(1_000_000), Some(0));
        assert_eq!(
            first_found(12_000),
            Some(37),
            "the scan starts 6,000 characters above the cursor line: lines of 5,001 characters"
        );
        let empty = Rope::new();
        assert_eq!(similar_snippet(&empty, 0, 0..0, None, &params(8, 4)), None);
    }
}
