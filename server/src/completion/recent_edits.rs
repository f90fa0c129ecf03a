//! Where the person edited lately, across documents: a small ring of (document, line), newest
//! first. Code being written in one file is often what the next lines in another file use (a
//! function just added, a field just renamed), so chunks around recent edits in *other* documents
//! are a source of project context (llama.vim keeps a ring buffer of such chunks for the same
//! reason). The chunk's text is read from the document when a prompt is built, so it is current.

use std::collections::VecDeque;

use ropey::Rope;

/// Edits remembered.
const CAPACITY: usize = 16;
/// An edit this close to a remembered one (same document) moves that one to the front instead of
/// taking a place of its own: typing a function is one place, not forty.
const NEAR_LINES: usize = 8;
/// Lines above and below the edited line in its chunk.
pub(crate) const CHUNK_RADIUS: usize = 6;

/// The ring of recent edit places.
#[derive(Debug, Default)]
pub(crate) struct RecentEdits {
    ring: VecDeque<(String, usize)>,
}

impl RecentEdits {
    /// Remembers an edit at `line` (0-based) of document `uri`.
    pub(crate) fn record(&mut self, uri: &str, line: usize) {
        if let Some(at) = self
            .ring
            .iter()
            .position(|(u, l)| u == uri && l.abs_diff(line) <= NEAR_LINES)
        {
            self.ring.remove(at);
        }
        self.ring.push_front((uri.to_owned(), line));
        self.ring.truncate(CAPACITY);
    }

    /// Forgets a closed document's edits.
    pub(crate) fn forget(&mut self, uri: &str) {
        self.ring.retain(|(u, _)| u != uri);
    }

    /// The remembered edits outside document `current`, newest first.
    pub(crate) fn elsewhere<'a>(
        &'a self,
        current: &'a str,
    ) -> impl Iterator<Item = (&'a str, usize)> + 'a {
        self.ring
            .iter()
            .filter(move |(u, _)| u != current)
            .map(|(u, l)| (u.as_str(), *l))
    }
}

/// The lines around `line` of `rope` ([`CHUNK_RADIUS`] each side, clamped): its first line and
/// text, ending in a line break; `None` when the document has no such line any more.
pub(crate) fn chunk_around(rope: &Rope, line: usize) -> Option<(usize, String)> {
    let n_lines = rope.len_lines();
    if line >= n_lines {
        return None;
    }
    let first = line.saturating_sub(CHUNK_RADIUS);
    let end = (line + CHUNK_RADIUS + 1).min(n_lines);
    let mut text = rope
        .slice(rope.line_to_char(first)..rope.line_to_char(end))
        .to_string();
    if text.trim().is_empty() {
        return None;
    }
    if !text.ends_with('\n') {
        text.push('\n');
    }
    Some((first, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearby_edits_are_one_place_and_the_newest_comes_first() {
        let mut recent = RecentEdits::default();
        recent.record("a.py", 10);
        recent.record("b.py", 3);
        recent.record("a.py", 14); // near the first: moves it to the front
        recent.record("a.py", 40);
        let all: Vec<(&str, usize)> = recent.elsewhere("none").collect();
        assert_eq!(all, [("a.py", 40), ("a.py", 14), ("b.py", 3)]);
        let others: Vec<(&str, usize)> = recent.elsewhere("a.py").collect();
        assert_eq!(others, [("b.py", 3)]);
        recent.forget("b.py");
        assert_eq!(recent.elsewhere("a.py").count(), 0);
        for line in 0..100 {
            recent.record("c.py", line * 100);
        }
        assert_eq!(recent.elsewhere("none").count(), CAPACITY);
    }

    #[test]
    fn a_chunk_is_the_lines_around_the_edit() {
        let rope = Rope::from_str(&(0..20).map(|i| format!("line {i}\n")).collect::<String>());
        let (first, text) = chunk_around(&rope, 2).unwrap();
        assert_eq!(first, 0);
        assert_eq!(text.lines().count(), 9);
        let (first, text) = chunk_around(&rope, 10).unwrap();
        assert_eq!((first, text.lines().next()), (4, Some("line 4")));
        assert_eq!(text.lines().count(), 13);
        assert_eq!(chunk_around(&rope, 99), None);
        assert_eq!(chunk_around(&Rope::from_str("\n\n\n"), 1), None);
    }
}
