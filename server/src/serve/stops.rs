//! llama.cpp's stop rules for generated text, as a pure function of the text so far: stop strings
//! (the text is cut before the first one), `n_indent` (after the first line, a line that starts
//! with less indentation than asked ends the suggestion, cut at that line's start), and how much of
//! the text is safe to stream (not the start of a stop string, not a line whose indentation is
//! still undecided).

/// Why a generation stopped, as llama.cpp's `stop_type` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StopType {
    /// An end-of-generation token.
    Eos,
    /// A budget: tokens, time, context, or the `n_indent` rule.
    Limit,
    /// A stop string.
    Word,
}

impl StopType {
    /// llama.cpp's spelling.
    pub(crate) fn name(self) -> &'static str {
        match self {
            StopType::Eos => "eos",
            StopType::Limit => "limit",
            StopType::Word => "word",
        }
    }
}

/// A rule that fired: keep `text[..cut]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TextStop {
    /// Bytes of the text to keep.
    pub(crate) cut: usize,
    /// Why.
    pub(crate) stop_type: StopType,
    /// The stop string, for [`StopType::Word`].
    pub(crate) word: String,
}

/// The text rules of one request.
#[derive(Clone, Debug, Default)]
pub(crate) struct TextRules {
    /// Stop strings (empty ones are ignored).
    pub(crate) stop: Vec<String>,
    /// Least indentation of lines after the first (0 = off).
    pub(crate) n_indent: usize,
}

impl TextRules {
    /// The first rule that fires on `text`, if any.
    pub(crate) fn check(&self, text: &str) -> Option<TextStop> {
        let word = self
            .stop
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| text.find(s.as_str()).map(|at| (at, s)))
            .min_by_key(|&(at, _)| at);
        let indent = self.indent_cut(text);
        match (word, indent) {
            (Some((at, _)), Some(line)) if line <= at => Some(TextStop {
                cut: line,
                stop_type: StopType::Limit,
                word: String::new(),
            }),
            (Some((at, s)), _) => Some(TextStop {
                cut: at,
                stop_type: StopType::Word,
                word: s.clone(),
            }),
            (None, Some(line)) => Some(TextStop {
                cut: line,
                stop_type: StopType::Limit,
                word: String::new(),
            }),
            (None, None) => None,
        }
    }

    /// The start of the first line after the first one that has a non-blank character and less
    /// indentation (spaces and tabs) than `n_indent`.
    fn indent_cut(&self, text: &str) -> Option<usize> {
        if self.n_indent == 0 {
            return None;
        }
        let mut line_start = text.find('\n')? + 1;
        loop {
            let rest = &text[line_start..];
            let line_end = rest.find('\n').map_or(text.len(), |i| line_start + i);
            let line = &text[line_start..line_end];
            let indent = line.len() - line.trim_start_matches([' ', '\t']).len();
            if indent < line.len() && indent < self.n_indent {
                return Some(line_start);
            }
            if line_end == text.len() {
                return None;
            }
            line_start = line_end + 1;
        }
    }

    /// How many bytes of `text` (on which no rule fired) can be sent now: everything but a tail
    /// that may still become a stop string, and, with `n_indent`, a last line (after the first)
    /// that is still blank and so may yet be cut.
    pub(crate) fn safe_len(&self, text: &str) -> usize {
        let mut safe = text.len();
        for stop in self.stop.iter().filter(|s| !s.is_empty()) {
            // The longest tail of `text` that is a proper start of `stop`.
            let longest = (1..stop.len().min(text.len() + 1))
                .rev()
                .find(|&n| stop.is_char_boundary(n) && text.ends_with(&stop[..n]));
            if let Some(n) = longest {
                safe = safe.min(text.len() - n);
            }
        }
        if self.n_indent > 0 {
            if let Some(last_newline) = text.rfind('\n') {
                if text[last_newline + 1..]
                    .trim_start_matches([' ', '\t'])
                    .is_empty()
                {
                    safe = safe.min(last_newline + 1);
                }
            }
        }
        safe
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(stop: &[&str], n_indent: usize) -> TextRules {
        TextRules {
            stop: stop.iter().map(|s| s.to_string()).collect(),
            n_indent,
        }
    }

    #[test]
    fn stop_string_cuts_before_the_first_one() {
        let r = rules(&["\n\n", "END"], 0);
        assert_eq!(r.check("abc"), None);
        let stop = r.check("a END b\n\nc").unwrap();
        assert_eq!(stop.cut, 2);
        assert_eq!(stop.stop_type, StopType::Word);
        assert_eq!(stop.word, "END");
    }

    #[test]
    fn safe_len_holds_back_a_possible_stop_string() {
        let r = rules(&["END"], 0);
        assert_eq!(r.safe_len("abcEN"), 3);
        assert_eq!(r.safe_len("abcE"), 3);
        assert_eq!(r.safe_len("abcX"), 4);
    }

    #[test]
    fn n_indent_cuts_a_less_indented_line_after_the_first() {
        let r = rules(&[], 4);
        // The first line is never cut, even unindented.
        assert_eq!(r.check("x = 1"), None);
        assert_eq!(r.check("x = 1\n    y = 2\n"), None);
        // A blank line is undecided; a less indented one with text ends the suggestion.
        assert_eq!(r.check("x = 1\n\n"), None);
        let stop = r.check("x = 1\n    y = 2\nz").unwrap();
        assert_eq!(stop.cut, "x = 1\n    y = 2\n".len());
        assert_eq!(stop.stop_type, StopType::Limit);
        // A blank last line is held back until it is decided.
        assert_eq!(r.safe_len("x = 1\n  "), "x = 1\n".len());
        assert_eq!(r.safe_len("x = 1\n    y"), "x = 1\n    y".len());
    }
}
