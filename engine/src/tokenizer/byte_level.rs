//! GPT-2's byte-level alphabet: every byte is spelled by one printable character in BPE vocabularies.
//!
//! Printable Latin-1 bytes (`!`..=`~`, `¡`..=`¬`, `®`..=`ÿ`) stand for themselves; the other 68
//! bytes are given the code points U+0100, U+0101, ... in increasing byte order (so a space is `Ġ`
//! and a newline is `Ċ`).

/// Whether byte `b` is spelled by the character with the same code point.
fn is_self_spelled(b: u8) -> bool {
    matches!(b, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF)
}

/// The character that spells byte `b`.
pub(crate) fn byte_to_char(b: u8) -> char {
    if is_self_spelled(b) {
        return char::from(b);
    }
    let rank = (0..b).filter(|&x| !is_self_spelled(x)).count() as u32;
    char::from_u32(0x100 + rank).unwrap_or(char::REPLACEMENT_CHARACTER)
}

/// The byte spelled by `c`, if `c` is in the alphabet.
pub(crate) fn char_to_byte(c: char) -> Option<u8> {
    let cp = u32::from(c);
    if let Ok(b) = u8::try_from(cp) {
        return is_self_spelled(b).then_some(b);
    }
    let rank = cp.checked_sub(0x100)?;
    (0..=255u8)
        .filter(|&x| !is_self_spelled(x))
        .nth(usize::try_from(rank).ok()?)
}

/// `byte_to_char` for all 256 bytes, as UTF-8 strings.
pub(crate) fn byte_spellings() -> [String; 256] {
    std::array::from_fn(|b| byte_to_char(b as u8).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alphabet_round_trips() {
        assert_eq!(byte_to_char(b' '), 'Ġ');
        assert_eq!(byte_to_char(b'\n'), 'Ċ');
        assert_eq!(byte_to_char(b'a'), 'a');
        for b in 0..=255u8 {
            assert_eq!(char_to_byte(byte_to_char(b)), Some(b));
        }
        assert_eq!(char_to_byte('€'), None);
    }
}
