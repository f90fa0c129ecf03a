//! The vocabulary: token texts, types, scores, and the text -> id map, as read from GGUF metadata.

use rustc_hash::FxHashMap as HashMap;

use crate::gguf::{GgufFile, MetadataArray};

use super::error::TokenizerError;

/// A token id: an index into the vocabulary.
pub type TokenId = u32;

/// Token attribute bits, as llama.cpp derives them from `tokenizer.ggml.token_type`.
pub(crate) mod attr {
    pub(crate) const UNKNOWN: u16 = 1;
    pub(crate) const UNUSED: u16 = 1 << 1;
    pub(crate) const NORMAL: u16 = 1 << 2;
    pub(crate) const CONTROL: u16 = 1 << 3;
    pub(crate) const USER_DEFINED: u16 = 1 << 4;
    pub(crate) const BYTE: u16 = 1 << 5;
    pub(crate) const LSTRIP: u16 = 1 << 7;
    pub(crate) const RSTRIP: u16 = 1 << 8;
}

pub(crate) const KEY_TOKENS: &str = "tokenizer.ggml.tokens";
const KEY_SCORES: &str = "tokenizer.ggml.scores";
const KEY_TOKEN_TYPE: &str = "tokenizer.ggml.token_type";

/// Token texts and what is known about each token.
pub(crate) struct Vocab {
    texts: Vec<String>,
    attrs: Vec<u16>,
    scores: Vec<f32>,
    ids_by_text: HashMap<String, TokenId>,
}

impl Vocab {
    /// Reads tokens, scores and token types.
    pub(crate) fn from_gguf(file: &GgufFile) -> Result<Vocab, TokenizerError> {
        let tokens = string_array(file, KEY_TOKENS)?
            .ok_or(TokenizerError::MissingKey { key: KEY_TOKENS })?;
        if tokens.is_empty() {
            return Err(TokenizerError::EmptyVocabulary);
        }
        if u32::try_from(tokens.len()).is_err() {
            return Err(TokenizerError::VocabularyTooLarge(tokens.len()));
        }
        let n = tokens.len();

        let scores = match file.get(KEY_SCORES) {
            None => vec![0.0; n],
            Some(value) => {
                let array = value
                    .as_array()
                    .ok_or_else(|| wrong_type(KEY_SCORES, "array of f32", value.type_name()))?;
                check_len(KEY_SCORES, array, n)?;
                match array {
                    MetadataArray::F32(v) => v[..n].to_vec(),
                    MetadataArray::I32(v) => v[..n].iter().map(|&s| s as f32).collect(),
                    other => {
                        return Err(wrong_type(
                            KEY_SCORES,
                            "array of f32",
                            other.element_type_name(),
                        ))
                    }
                }
            }
        };

        let attrs = match file.get(KEY_TOKEN_TYPE) {
            None => vec![attr::NORMAL; n],
            Some(value) => {
                let array = value
                    .as_array()
                    .ok_or_else(|| wrong_type(KEY_TOKEN_TYPE, "array of i32", value.type_name()))?;
                check_len(KEY_TOKEN_TYPE, array, n)?;
                (0..n)
                    .map(|i| {
                        array.integer_at(i).map(attr_of_type).ok_or_else(|| {
                            wrong_type(KEY_TOKEN_TYPE, "array of i32", array.element_type_name())
                        })
                    })
                    .collect::<Result<_, _>>()?
            }
        };

        let mut texts = Vec::with_capacity(n);
        let mut ids_by_text = HashMap::with_capacity_and_hasher(n, Default::default());
        for (i, text) in tokens.iter().enumerate() {
            // llama.cpp renames empty tokens so that every text is distinct and non-empty.
            let text = if text.is_empty() {
                format!("[EMPTY_{i}]")
            } else {
                text.clone()
            };
            // When two tokens share a text, the later id wins, as in llama.cpp.
            ids_by_text.insert(text.clone(), i as TokenId);
            texts.push(text);
        }
        Ok(Vocab {
            texts,
            attrs,
            scores,
            ids_by_text,
        })
    }

    /// Number of tokens.
    pub(crate) fn len(&self) -> usize {
        self.texts.len()
    }

    /// The id of the token spelled exactly `text`.
    pub(crate) fn token_id(&self, text: &str) -> Option<TokenId> {
        self.ids_by_text.get(text).copied()
    }

    /// The token's text as stored in the vocabulary.
    pub(crate) fn text(&self, id: TokenId) -> Option<&str> {
        self.texts.get(id as usize).map(String::as_str)
    }

    /// The token's attribute bits (0 for an id out of range).
    pub(crate) fn attrs(&self, id: TokenId) -> u16 {
        self.attrs.get(id as usize).copied().unwrap_or(0)
    }

    /// Whether the token has any of the attribute bits in `mask`.
    pub(crate) fn has_attr(&self, id: TokenId, mask: u16) -> bool {
        self.attrs(id) & mask != 0
    }

    pub(crate) fn set_attrs(&mut self, id: TokenId, attrs: u16) {
        if let Some(a) = self.attrs.get_mut(id as usize) {
            *a = attrs;
        }
    }

    pub(crate) fn add_attrs(&mut self, id: TokenId, attrs: u16) {
        if let Some(a) = self.attrs.get_mut(id as usize) {
            *a |= attrs;
        }
    }

    pub(crate) fn remove_attrs(&mut self, id: TokenId, attrs: u16) {
        if let Some(a) = self.attrs.get_mut(id as usize) {
            *a &= !attrs;
        }
    }

    /// The token's SentencePiece score (0 for an id out of range).
    pub(crate) fn score(&self, id: TokenId) -> f32 {
        self.scores.get(id as usize).copied().unwrap_or(0.0)
    }

    /// All token ids.
    pub(crate) fn ids(&self) -> impl Iterator<Item = TokenId> {
        0..self.texts.len() as TokenId
    }
}

/// llama.cpp's mapping of `llama_token_type` to attributes.
fn attr_of_type(token_type: i64) -> u16 {
    match token_type {
        1 => attr::NORMAL,
        2 => attr::UNKNOWN,
        3 => attr::CONTROL,
        4 => attr::USER_DEFINED,
        5 => attr::UNUSED,
        6 => attr::BYTE,
        _ => 0,
    }
}

fn wrong_type(key: &'static str, expected: &'static str, found: &str) -> TokenizerError {
    TokenizerError::WrongType {
        key,
        expected,
        found: found.to_owned(),
    }
}

fn check_len(
    key: &'static str,
    array: &MetadataArray,
    expected: usize,
) -> Result<(), TokenizerError> {
    if array.len() < expected {
        return Err(TokenizerError::LengthMismatch {
            key,
            expected,
            found: array.len(),
        });
    }
    Ok(())
}

/// The string array under `key`: `None` when absent, an error when it is not an array of strings.
pub(crate) fn string_array<'f>(
    file: &'f GgufFile,
    key: &'static str,
) -> Result<Option<&'f [String]>, TokenizerError> {
    let Some(value) = file.get(key) else {
        return Ok(None);
    };
    let array = value
        .as_array()
        .ok_or_else(|| wrong_type(key, "array of strings", value.type_name()))?;
    array
        .as_strings()
        .map(Some)
        .ok_or_else(|| wrong_type(key, "array of strings", array.element_type_name()))
}
