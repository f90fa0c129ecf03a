//! Completion caches above the KV cache: an LRU of recent suggestions keyed by the text around the
//! cursor, and typing-through.
//!
//! Typing-through: when the user types characters that match the start of a suggestion made a few
//! characters earlier, the rest of that suggestion is the answer, with no model call. It needs no
//! per-document state: the cache looks the context up again with the last `k` typed characters
//! removed from the text before the cursor (same line only, up to `max_typed`), and checks that the
//! cached suggestion starts with those characters. A backspace is an exact hit of an older key.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::num::NonZeroUsize;

use lru::LruCache;

/// Bytes of text before the cursor that identify a context.
pub(crate) const BEFORE_WINDOW: usize = 2048;
/// Bytes of text after the cursor that identify a context.
pub(crate) const AFTER_WINDOW: usize = 512;

/// Where a cached answer came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Hit {
    /// Same context as an earlier request.
    Exact(String),
    /// The user typed the first `typed` bytes of an earlier suggestion; this is the rest.
    TypedThrough { rest: String, typed: usize },
}

impl Hit {
    /// The suggestion to show.
    pub(crate) fn text(&self) -> &str {
        match self {
            Self::Exact(s) => s,
            Self::TypedThrough { rest, .. } => rest,
        }
    }
}

/// LRU of suggestions keyed by the text around the cursor.
#[derive(Debug)]
pub(crate) struct CompletionCache {
    lru: LruCache<u64, String>,
    max_typed: usize,
}

fn tail(s: &str, n: usize) -> &str {
    let mut i = s.len().saturating_sub(n);
    while !s.is_char_boundary(i) {
        i += 1;
    }
    &s[i..]
}

fn head(s: &str, n: usize) -> &str {
    let mut i = n.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    &s[..i]
}

/// The cache key of a context: a hash of the windows before and after the cursor.
pub(crate) fn context_key(before: &str, after: &str) -> u64 {
    let mut h = DefaultHasher::new();
    tail(before, BEFORE_WINDOW).hash(&mut h);
    head(after, AFTER_WINDOW).hash(&mut h);
    h.finish()
}

impl CompletionCache {
    /// A cache of `capacity` suggestions that types through up to `max_typed` characters.
    pub(crate) fn new(capacity: usize, max_typed: usize) -> Self {
        let cap = NonZeroUsize::new(capacity.max(1)).unwrap_or(NonZeroUsize::MIN);
        Self {
            lru: LruCache::new(cap),
            max_typed,
        }
    }

    /// Remembers the suggestion for a context (empty suggestions too: they are answers).
    pub(crate) fn insert(&mut self, before: &str, after: &str, suggestion: &str) {
        self.lru
            .put(context_key(before, after), suggestion.to_owned());
    }

    /// Number of cached suggestions.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lru.len()
    }

    /// Looks up `before`/`after` (the text before and after the cursor; `before` should reach at least
    /// `BEFORE_WINDOW + max_typed` bytes back when the document has them).
    pub(crate) fn lookup(&mut self, before: &str, after: &str) -> Option<Hit> {
        if let Some(s) = self.lru.get(&context_key(before, after)) {
            return Some(Hit::Exact(s.clone()));
        }
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        for (n, (i, _)) in before[line_start..].char_indices().rev().enumerate() {
            if n >= self.max_typed {
                break;
            }
            let cut = line_start + i;
            let typed = &before[cut..];
            if let Some(s) = self.lru.get(&context_key(&before[..cut], after)) {
                if s.len() > typed.len() && s.starts_with(typed) {
                    return Some(Hit::TypedThrough {
                        rest: s[typed.len()..].to_owned(),
                        typed: typed.len(),
                    });
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_and_typed_through_hits() {
        let mut c = CompletionCache::new(8, 32);
        c.insert("fn f() {\n    ", "\n}", "return 1;");
        assert_eq!(
            c.lookup("fn f() {\n    ", "\n}"),
            Some(Hit::Exact("return 1;".into()))
        );
        assert_eq!(
            c.lookup("fn f() {\n    ret", "\n}"),
            Some(Hit::TypedThrough {
                rest: "urn 1;".into(),
                typed: 3
            })
        );
        assert_eq!(
            c.lookup("fn f() {\n    rex", "\n}"),
            None,
            "diverged from the suggestion"
        );
        assert_eq!(
            c.lookup("fn f() {\n    return 1;", "\n}"),
            None,
            "nothing left to suggest"
        );
        assert_eq!(
            c.lookup("fn f() {\n    ret", "\n}\n"),
            None,
            "text after the cursor changed"
        );
    }

    #[test]
    fn typing_through_stays_on_the_line_and_is_bounded() {
        let mut c = CompletionCache::new(8, 2);
        c.insert("a", "", "\nbcd");
        assert_eq!(c.lookup("a\nb", ""), None, "does not cross a line start");
        c.insert("x", "", "yzw");
        assert_eq!(
            c.lookup("xyz", ""),
            Some(Hit::TypedThrough {
                rest: "w".into(),
                typed: 2
            })
        );
        c.insert("p", "", "qrst");
        assert_eq!(c.lookup("pqrs", ""), None, "max_typed = 2");
    }

    #[test]
    fn lru_evicts_and_windows_handle_multibyte() {
        let mut c = CompletionCache::new(2, 8);
        c.insert("1", "", "a");
        c.insert("2", "", "b");
        c.insert("3", "", "c");
        assert_eq!(c.len(), 2);
        assert_eq!(c.lookup("1", ""), None);
        let long = "é".repeat(BEFORE_WINDOW);
        c.insert(&long, &"😀".repeat(AFTER_WINDOW), "z");
        assert_eq!(
            c.lookup(&long, &"😀".repeat(AFTER_WINDOW)),
            Some(Hit::Exact("z".into()))
        );
    }
}
