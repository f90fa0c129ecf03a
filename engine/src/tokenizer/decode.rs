//! Token ids back to bytes and text: the per-token byte table and the streaming UTF-8 decoder.

use super::byte_level::char_to_byte;
use super::vocab::{attr, TokenId, Vocab};

/// How token texts spell bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Spelling {
    /// GPT-2's byte-level alphabet (`Ġ` is a space).
    ByteLevel,
    /// SentencePiece: `▁` is a space, `<0xXX>` byte tokens.
    SentencePiece,
}

/// The bytes each token decodes to, laid end to end: token `i` is `bytes[offsets[i]..offsets[i + 1]]`.
pub(crate) struct TokenBytes {
    bytes: Vec<u8>,
    offsets: Vec<usize>,
}

impl TokenBytes {
    /// What llama.cpp's `token_to_piece` gives with `special = false`: control and unknown tokens
    /// decode to nothing, user-defined tokens to their text, byte tokens to their byte.
    pub(crate) fn new(vocab: &Vocab, spelling: Spelling) -> TokenBytes {
        let mut bytes = Vec::new();
        let mut offsets = Vec::with_capacity(vocab.len() + 1);
        offsets.push(0);
        for id in vocab.ids() {
            let text = vocab.text(id).unwrap_or_default();
            let attrs = vocab.attrs(id);
            if attrs & (attr::CONTROL | attr::UNKNOWN) != 0 {
                // Nothing.
            } else if attrs & attr::USER_DEFINED != 0 {
                bytes.extend_from_slice(text.as_bytes());
            } else if attrs & attr::NORMAL != 0 {
                match spelling {
                    Spelling::SentencePiece => {
                        bytes.extend_from_slice(text.replace('▁', " ").as_bytes())
                    }
                    Spelling::ByteLevel => decode_byte_level(text, &mut bytes),
                }
            } else if attrs & attr::BYTE != 0 {
                // `<0xXX>`: the hex digits parsed like C's `strtol` (0 when there are none).
                let hex = text.get(3..5).unwrap_or_default();
                let digits: String = hex.chars().take_while(char::is_ascii_hexdigit).collect();
                bytes.push(u8::from_str_radix(&digits, 16).unwrap_or(0));
            }
            offsets.push(bytes.len());
        }
        TokenBytes { bytes, offsets }
    }

    pub(crate) fn get(&self, id: TokenId) -> &[u8] {
        let i = id as usize;
        match (self.offsets.get(i), self.offsets.get(i + 1)) {
            (Some(&start), Some(&end)) => self.bytes.get(start..end).unwrap_or_default(),
            _ => &[],
        }
    }
}

/// Maps each character of a byte-level token back to its byte. A character outside the alphabet
/// yields `[UNK_BYTE_0x<its UTF-8 in hex><the token text>]`, llama.cpp's marker for a broken vocabulary.
fn decode_byte_level(text: &str, out: &mut Vec<u8>) {
    for c in text.chars() {
        match char_to_byte(c) {
            Some(b) => out.push(b),
            None => {
                out.extend_from_slice(b"[UNK_BYTE_0x");
                for b in c.encode_utf8(&mut [0; 4]).bytes() {
                    out.extend_from_slice(format!("{b:02x}").as_bytes());
                }
                out.extend_from_slice(text.as_bytes());
                out.push(b']');
            }
        }
    }
}

/// Turns generated tokens into text as they come, never splitting a UTF-8 character.
///
/// A token can end in the middle of a multi-byte character (byte-level BPE and byte-fallback tokens
/// often do); those bytes are held back until the character is complete. Bytes that can never form
/// a valid character come out as U+FFFD.
pub struct StreamDecoder<'a> {
    token_bytes: &'a TokenBytes,
    pending: Vec<u8>,
}

impl<'a> StreamDecoder<'a> {
    pub(crate) fn new(token_bytes: &'a TokenBytes) -> StreamDecoder<'a> {
        StreamDecoder {
            token_bytes,
            pending: Vec::new(),
        }
    }

    /// Adds one token; returns the text that is now complete (possibly empty).
    pub fn push(&mut self, id: TokenId) -> String {
        self.pending.extend_from_slice(self.token_bytes.get(id));
        let mut text = String::new();
        let mut consumed = 0;
        loop {
            match std::str::from_utf8(&self.pending[consumed..]) {
                Ok(valid) => {
                    text.push_str(valid);
                    consumed = self.pending.len();
                    break;
                }
                Err(error) => {
                    let valid_len = error.valid_up_to();
                    let valid = &self.pending[consumed..consumed + valid_len];
                    // `valid_up_to` guarantees these bytes are UTF-8.
                    text.push_str(&String::from_utf8_lossy(valid));
                    consumed += valid_len;
                    match error.error_len() {
                        // An invalid sequence: replace it and go on.
                        Some(bad_len) => {
                            text.push(char::REPLACEMENT_CHARACTER);
                            consumed += bad_len;
                        }
                        // An incomplete character at the end: wait for more bytes.
                        None => break,
                    }
                }
            }
        }
        self.pending.drain(..consumed);
        text
    }

    /// Bytes held back because they end in an incomplete character.
    pub fn pending_bytes(&self) -> &[u8] {
        &self.pending
    }

    /// Returns whatever is held back (an incomplete character becomes U+FFFD) and clears it.
    pub fn flush(&mut self) -> String {
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        text
    }
}
