//! LSP positions ↔ rope character indices, for each negotiated position encoding.
//!
//! One pure function per encoding and direction (as in Helix). Lines end at `\n`, `\r\n` or a lone
//! `\r`, exactly as LSP defines them (ropey is built with `cr_lines` only, so Unicode line separators
//! are ordinary characters). Every conversion clamps: a line past the end maps to the end of the
//! document, a column past the end of its line maps to the end of that line (before the line
//! terminator), and a UTF-16 column in the middle of a surrogate pair or a UTF-8 column inside a
//! multi-byte character rounds down to the start of that character. No client input can panic here.

use ropey::{Rope, RopeSlice};
use tower_lsp_server::gen_lsp_types::{Position, PositionEncodingKind};

/// How the `character` of an LSP `Position` counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PositionEncoding {
    /// UTF-8 code units (bytes).
    Utf8,
    /// UTF-16 code units: the LSP default.
    #[default]
    Utf16,
    /// Unicode scalar values.
    Utf32,
}

impl PositionEncoding {
    /// Picks the encoding from the client's preference list: UTF-8 if offered (cheapest for a rope),
    /// then UTF-32, else the mandatory UTF-16.
    pub(crate) fn negotiate(offered: Option<&[PositionEncodingKind]>) -> Self {
        let offered = offered.unwrap_or(&[]);
        if offered.contains(&PositionEncodingKind::UTF8) {
            Self::Utf8
        } else if offered.contains(&PositionEncodingKind::UTF32) {
            Self::Utf32
        } else {
            Self::Utf16
        }
    }

    /// The LSP name of this encoding.
    pub(crate) fn kind(self) -> PositionEncodingKind {
        match self {
            Self::Utf8 => PositionEncodingKind::UTF8,
            Self::Utf16 => PositionEncodingKind::UTF16,
            Self::Utf32 => PositionEncodingKind::UTF32,
        }
    }
}

/// The chars of line `line` without its terminator; empty when the line does not exist.
pub(crate) fn line_content(rope: &Rope, line: usize) -> RopeSlice<'_> {
    if line >= rope.len_lines() {
        return rope.slice(rope.len_chars()..);
    }
    let slice = rope.line(line);
    let mut end = slice.len_chars();
    if end > 0 && slice.char(end - 1) == '\n' {
        end -= 1;
    }
    if end > 0 && slice.char(end - 1) == '\r' {
        end -= 1;
    }
    slice.slice(..end)
}

/// UTF-8 column → char index within `line` (clamped; inside a character rounds down).
fn utf8_col_to_char(line: RopeSlice<'_>, col: u32) -> usize {
    let col = (col as usize).min(line.len_bytes());
    line.byte_to_char(col)
}

/// UTF-16 column → char index within `line` (clamped; mid-surrogate rounds down).
fn utf16_col_to_char(line: RopeSlice<'_>, col: u32) -> usize {
    let col = (col as usize).min(line.len_utf16_cu());
    let idx = line.utf16_cu_to_char(col);
    // ropey maps the second half of a surrogate pair to the char after the pair; round down.
    if idx > 0 && line.char_to_utf16_cu(idx) > col {
        idx - 1
    } else {
        idx
    }
}

/// UTF-32 column → char index within `line` (clamped).
fn utf32_col_to_char(line: RopeSlice<'_>, col: u32) -> usize {
    (col as usize).min(line.len_chars())
}

/// Char index within `line` → UTF-8 column.
fn char_to_utf8_col(line: RopeSlice<'_>, ch: usize) -> u32 {
    saturate(line.char_to_byte(ch.min(line.len_chars())))
}

/// Char index within `line` → UTF-16 column.
fn char_to_utf16_col(line: RopeSlice<'_>, ch: usize) -> u32 {
    saturate(line.char_to_utf16_cu(ch.min(line.len_chars())))
}

/// Char index within `line` → UTF-32 column.
fn char_to_utf32_col(line: RopeSlice<'_>, ch: usize) -> u32 {
    saturate(ch.min(line.len_chars()))
}

fn saturate(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// LSP position → char index in `rope`, clamped as described in the module docs.
pub(crate) fn position_to_char(rope: &Rope, pos: Position, enc: PositionEncoding) -> usize {
    let line = pos.line as usize;
    if line >= rope.len_lines() {
        return rope.len_chars();
    }
    let content = line_content(rope, line);
    let col = match enc {
        PositionEncoding::Utf8 => utf8_col_to_char(content, pos.character),
        PositionEncoding::Utf16 => utf16_col_to_char(content, pos.character),
        PositionEncoding::Utf32 => utf32_col_to_char(content, pos.character),
    };
    rope.line_to_char(line) + col
}

/// Char index in `rope` → LSP position (an index inside a line terminator maps to the line's end).
pub(crate) fn char_to_position(rope: &Rope, ch: usize, enc: PositionEncoding) -> Position {
    let ch = ch.min(rope.len_chars());
    let line = rope.char_to_line(ch);
    let content = line_content(rope, line);
    let in_line = ch - rope.line_to_char(line);
    let character = match enc {
        PositionEncoding::Utf8 => char_to_utf8_col(content, in_line),
        PositionEncoding::Utf16 => char_to_utf16_col(content, in_line),
        PositionEncoding::Utf32 => char_to_utf32_col(content, in_line),
    };
    Position::new(saturate(line), character)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(line: u32, character: u32) -> Position {
        Position::new(line, character)
    }

    #[test]
    fn surrogate_pairs_and_multibyte() {
        let rope = Rope::from_str("a😀b\néx");
        // 😀 is 2 UTF-16 units, 4 UTF-8 bytes, 1 char.
        assert_eq!(
            position_to_char(&rope, pos(0, 3), PositionEncoding::Utf16),
            2
        );
        assert_eq!(
            position_to_char(&rope, pos(0, 2), PositionEncoding::Utf16),
            1,
            "mid-surrogate rounds down"
        );
        assert_eq!(
            position_to_char(&rope, pos(0, 5), PositionEncoding::Utf8),
            2
        );
        assert_eq!(
            position_to_char(&rope, pos(0, 3), PositionEncoding::Utf8),
            1,
            "mid-char rounds down"
        );
        assert_eq!(
            position_to_char(&rope, pos(0, 2), PositionEncoding::Utf32),
            2
        );
        assert_eq!(
            position_to_char(&rope, pos(1, 2), PositionEncoding::Utf8),
            5
        );
        assert_eq!(
            char_to_position(&rope, 2, PositionEncoding::Utf16),
            pos(0, 3)
        );
        assert_eq!(
            char_to_position(&rope, 2, PositionEncoding::Utf8),
            pos(0, 5)
        );
        assert_eq!(
            char_to_position(&rope, 6, PositionEncoding::Utf8),
            pos(1, 3)
        );
    }

    #[test]
    fn crlf_and_lone_cr_are_line_breaks_and_clamping() {
        let rope = Rope::from_str("ab\r\ncd\ref\u{2028}g");
        assert_eq!(rope.len_lines(), 3);
        assert_eq!(
            position_to_char(&rope, pos(0, 99), PositionEncoding::Utf16),
            2,
            "clamped before \\r\\n"
        );
        assert_eq!(
            position_to_char(&rope, pos(1, 1), PositionEncoding::Utf16),
            5
        );
        assert_eq!(
            position_to_char(&rope, pos(2, 3), PositionEncoding::Utf32),
            10,
            "U+2028 is not a break"
        );
        assert_eq!(
            position_to_char(&rope, pos(7, 0), PositionEncoding::Utf16),
            rope.len_chars()
        );
        assert_eq!(
            position_to_char(&rope, pos(u32::MAX, u32::MAX), PositionEncoding::Utf8),
            rope.len_chars()
        );
        // the char between \r and \n maps to the end of line 0
        assert_eq!(
            char_to_position(&rope, 3, PositionEncoding::Utf16),
            pos(0, 2)
        );
        assert_eq!(
            char_to_position(&rope, 999, PositionEncoding::Utf16),
            pos(2, 4)
        );
    }

    #[test]
    fn negotiation_prefers_utf8_then_utf32() {
        use PositionEncodingKind as K;
        assert_eq!(PositionEncoding::negotiate(None), PositionEncoding::Utf16);
        assert_eq!(
            PositionEncoding::negotiate(Some(&[K::UTF16, K::UTF8])),
            PositionEncoding::Utf8
        );
        assert_eq!(
            PositionEncoding::negotiate(Some(&[K::UTF32, K::UTF16])),
            PositionEncoding::Utf32
        );
    }
}
