//! Code point classes as llama.cpp sees them: general category (letter, number, ...) and white space.
//!
//! The category table is generated from Unicode 15.1 data (`gen_unicode_tables.py`), the version
//! llama.cpp's own tables come from, so pre-tokenizers split text exactly where llama.cpp does.

pub(crate) use super::char_class::CharClass;
use super::unicode_tables::CLASS_RANGES;

/// The class of `c`.
pub(crate) fn char_class(c: char) -> CharClass {
    let cp = u32::from(c);
    // `CLASS_RANGES` starts at 0, so the partition point is at least 1.
    let index = CLASS_RANGES.partition_point(|&(start, _)| start <= cp);
    CLASS_RANGES
        .get(index.wrapping_sub(1))
        .map_or(CharClass::Undefined, |&(_, class)| class)
}

/// Unicode `White_Space`: what `\s` matches in llama.cpp's pre-tokenizers.
pub(crate) fn is_whitespace(c: char) -> bool {
    matches!(
        c,
        '\u{09}'..='\u{0D}'
            | ' '
            | '\u{85}'
            | '\u{A0}'
            | '\u{1680}'
            | '\u{2000}'..='\u{200A}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{202F}'
            | '\u{205F}'
            | '\u{3000}'
    )
}

/// `bytes` as text the way llama.cpp's BPE pre-tokenizer reads it: each byte that does not start a
/// well-formed sequence becomes one U+FFFD. (llama.cpp checks only the bit patterns; a sequence that
/// is well-formed by pattern but not a Unicode scalar value, such as a surrogate, also becomes U+FFFD
/// here.)
pub(crate) fn to_text_like_llama(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    if let Ok(text) = std::str::from_utf8(bytes) {
        return std::borrow::Cow::Borrowed(text);
    }
    let is_continuation = |i: usize| bytes.get(i).is_some_and(|&b| b & 0xC0 == 0x80);
    let mut text = String::with_capacity(bytes.len() + 8);
    let mut i = 0;
    while i < bytes.len() {
        let first = bytes[i];
        let (len, initial) = match first {
            0x00..=0x7F => (1, u32::from(first)),
            0xC0..=0xDF => (2, u32::from(first & 0x1F)),
            0xE0..=0xEF => (3, u32::from(first & 0x0F)),
            0xF0..=0xF7 => (4, u32::from(first & 0x07)),
            _ => (0, 0),
        };
        if len == 0 || !(1..len).all(|k| is_continuation(i + k)) {
            text.push(char::REPLACEMENT_CHARACTER);
            i += 1;
            continue;
        }
        let cp = (1..len).fold(initial, |cp, k| (cp << 6) | u32::from(bytes[i + k] & 0x3F));
        text.push(char::from_u32(cp).unwrap_or(char::REPLACEMENT_CHARACTER));
        i += len;
    }
    std::borrow::Cow::Owned(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_of_common_characters() {
        assert_eq!(char_class('a'), CharClass::Letter);
        assert_eq!(char_class('Ä'), CharClass::Letter);
        assert_eq!(char_class('7'), CharClass::Number);
        assert_eq!(char_class('½'), CharClass::Number);
        assert_eq!(char_class('!'), CharClass::Punctuation);
        assert_eq!(char_class('$'), CharClass::Symbol);
        assert_eq!(char_class(' '), CharClass::Separator);
        assert_eq!(char_class('\n'), CharClass::Control);
        assert_eq!(char_class('\u{0301}'), CharClass::Mark);
        assert_eq!(char_class('\u{1C89}'), CharClass::Undefined); // assigned only in Unicode 16
        assert_eq!(char_class('\u{10FFFF}'), CharClass::Undefined);
        assert!(is_whitespace('\u{3000}'));
        assert!(!is_whitespace('\u{1C}'));
    }

    #[test]
    fn invalid_bytes_become_one_replacement_each() {
        assert_eq!(
            to_text_like_llama(b"a\xE2\x82b\xFF"),
            "a\u{FFFD}\u{FFFD}b\u{FFFD}"
        );
        assert_eq!(to_text_like_llama("é€".as_bytes()), "é€");
    }
}
