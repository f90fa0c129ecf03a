//! Open documents: ropes updated by full or incremental sync, strictly in version order.
//!
//! tower-lsp may run notification handlers concurrently, so a `didChange` can in principle be seen
//! before the one it follows. Each document therefore applies a change only when its version is the
//! next one; later versions wait in a small buffer, and stale or duplicate versions are dropped.
//! A client may skip versions (the spec only asks them to increase), so buffered changes are also
//! applied, in ascending version order, when a request reads the document (`flush`) or when the
//! buffer grows past [`MAX_PENDING`]. `didClose` drops the rope and its buffer.

use std::collections::{BTreeMap, HashMap};

use ropey::Rope;
use tower_lsp_server::gen_lsp_types::{Range, TextDocumentContentChangeEvent};

use super::position::{position_to_char, PositionEncoding};

/// Out-of-order changes kept per document before they are applied regardless of gaps.
pub(crate) const MAX_PENDING: usize = 64;

/// One content change: `range: None` replaces the whole text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Edit {
    /// The replaced range, in the session's position encoding; `None` for full sync.
    pub range: Option<Range>,
    /// The new text.
    pub text: String,
}

impl From<TextDocumentContentChangeEvent> for Edit {
    fn from(change: TextDocumentContentChangeEvent) -> Self {
        match change {
            TextDocumentContentChangeEvent::TextDocumentContentChangePartial(p) => Edit {
                range: Some(p.range),
                text: p.text,
            },
            TextDocumentContentChangeEvent::TextDocumentContentChangeWholeDocument(w) => Edit {
                range: None,
                text: w.text,
            },
        }
    }
}

/// An open document.
#[derive(Debug)]
pub struct Document {
    /// The current text.
    pub rope: Rope,
    /// The version of `rope`.
    pub(crate) version: i32,
    /// The client's language id (`rust`, `python`, ...).
    pub(crate) language_id: String,
    pending: BTreeMap<i32, Vec<Edit>>,
}

/// What happened to a `didChange`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeOutcome {
    /// Applied (with any buffered successors).
    Applied,
    /// Kept until its predecessor arrives.
    Buffered,
    /// A version at or below the current one: ignored.
    Stale,
    /// No such open document: ignored.
    UnknownDocument,
}

/// Applies one edit to a rope (positions clamped, a reversed range is normalised).
fn apply_edit(rope: &mut Rope, edit: &Edit, enc: PositionEncoding) {
    match edit.range {
        None => *rope = Rope::from_str(&edit.text),
        Some(range) => {
            let a = position_to_char(rope, range.start, enc);
            let b = position_to_char(rope, range.end, enc);
            let (start, end) = if a <= b { (a, b) } else { (b, a) };
            rope.remove(start..end);
            rope.insert(start, &edit.text);
        }
    }
}

impl Document {
    /// Changes buffered until the versions before them arrive.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn pending_changes(&self) -> usize {
        self.pending.len()
    }

    fn apply_all(&mut self, edits: &[Edit], enc: PositionEncoding) {
        for edit in edits {
            apply_edit(&mut self.rope, edit, enc);
        }
    }

    fn drain_contiguous(&mut self, enc: PositionEncoding) {
        while let Some(edits) = self.pending.remove(&(self.version.wrapping_add(1))) {
            self.version += 1;
            self.apply_all(&edits, enc);
        }
    }

    fn flush(&mut self, enc: PositionEncoding) {
        let pending = std::mem::take(&mut self.pending);
        for (version, edits) in pending {
            self.apply_all(&edits, enc);
            self.version = version;
        }
    }
}

/// All open documents, keyed by URI string.
#[derive(Debug, Default)]
pub struct DocumentStore {
    docs: HashMap<String, Document>,
}

impl DocumentStore {
    /// `didOpen`: (re)places the document.
    pub fn open(&mut self, uri: &str, language_id: &str, version: i32, text: &str) {
        let doc = Document {
            rope: Rope::from_str(text),
            version,
            language_id: language_id.to_owned(),
            pending: BTreeMap::new(),
        };
        self.docs.insert(uri.to_owned(), doc);
    }

    /// `didChange`: applies the edits in version order (see the module docs).
    pub fn change(
        &mut self,
        uri: &str,
        version: i32,
        edits: Vec<Edit>,
        enc: PositionEncoding,
    ) -> ChangeOutcome {
        let Some(doc) = self.docs.get_mut(uri) else {
            return ChangeOutcome::UnknownDocument;
        };
        if version <= doc.version || doc.pending.contains_key(&version) {
            return ChangeOutcome::Stale;
        }
        if version == doc.version.wrapping_add(1) {
            doc.version = version;
            doc.apply_all(&edits, enc);
            doc.drain_contiguous(enc);
            return ChangeOutcome::Applied;
        }
        doc.pending.insert(version, edits);
        if doc.pending.len() > MAX_PENDING {
            doc.flush(enc);
            return ChangeOutcome::Applied;
        }
        ChangeOutcome::Buffered
    }

    /// Applies every buffered change of `uri` in ascending version order, gaps or not.
    pub(crate) fn flush(&mut self, uri: &str, enc: PositionEncoding) {
        if let Some(doc) = self.docs.get_mut(uri) {
            doc.flush(enc);
        }
    }

    /// `didClose`: frees the document.
    pub(crate) fn close(&mut self, uri: &str) -> bool {
        self.docs.remove(uri).is_some()
    }

    /// The open document at `uri`.
    pub fn get(&self, uri: &str) -> Option<&Document> {
        self.docs.get(uri)
    }

    /// Every open document with its URI.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &Document)> {
        self.docs.iter().map(|(uri, doc)| (uri.as_str(), doc))
    }

    /// Whether no document is open.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower_lsp_server::gen_lsp_types::Position;

    fn edit(l0: u32, c0: u32, l1: u32, c1: u32, text: &str) -> Edit {
        Edit {
            range: Some(Range::new(Position::new(l0, c0), Position::new(l1, c1))),
            text: text.into(),
        }
    }

    #[test]
    fn changes_apply_in_version_order() {
        let enc = PositionEncoding::Utf16;
        let mut store = DocumentStore::default();
        store.open("file:///a", "rust", 1, "abc");
        assert_eq!(
            store.change("file:///a", 3, vec![edit(0, 0, 0, 0, "Y")], enc),
            ChangeOutcome::Buffered
        );
        assert_eq!(store.get("file:///a").unwrap().rope.to_string(), "abc");
        assert_eq!(
            store.change("file:///a", 2, vec![edit(0, 3, 0, 3, "X")], enc),
            ChangeOutcome::Applied
        );
        assert_eq!(store.get("file:///a").unwrap().rope.to_string(), "YabcX");
        assert_eq!(store.get("file:///a").unwrap().version, 3);
        assert_eq!(
            store.change("file:///a", 3, vec![edit(0, 0, 0, 0, "Z")], enc),
            ChangeOutcome::Stale
        );
        // a gap is resolved by a flush
        assert_eq!(
            store.change("file:///a", 7, vec![edit(0, 0, 0, 1, "")], enc),
            ChangeOutcome::Buffered
        );
        store.flush("file:///a", enc);
        assert_eq!(store.get("file:///a").unwrap().rope.to_string(), "abcX");
        assert_eq!(store.get("file:///a").unwrap().version, 7);
        assert_eq!(
            store.change("file:///b", 2, vec![], enc),
            ChangeOutcome::UnknownDocument
        );
        assert!(store.close("file:///a"));
        assert!(store.is_empty());
    }

    #[test]
    fn full_sync_and_reversed_ranges() {
        let enc = PositionEncoding::Utf8;
        let mut rope = Rope::from_str("hello\r\nworld");
        apply_edit(&mut rope, &edit(1, 5, 0, 5, "!"), enc);
        assert_eq!(rope.to_string(), "hello!");
        apply_edit(
            &mut rope,
            &Edit {
                range: None,
                text: "new".into(),
            },
            enc,
        );
        assert_eq!(rope.to_string(), "new");
    }
}
