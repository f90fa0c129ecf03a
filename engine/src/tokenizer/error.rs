//! Errors raised while building a [`Tokenizer`](super::Tokenizer) from GGUF metadata.

/// Why a tokenizer could not be built from a GGUF file's metadata.
///
/// Encoding and decoding never fail: every error is raised once, when the tokenizer is built.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// A metadata key the tokenizer needs is absent.
    #[error("GGUF metadata has no `{key}`, which the tokenizer needs")]
    MissingKey {
        /// The absent key, e.g. `tokenizer.ggml.tokens`.
        key: &'static str,
    },

    /// A metadata key holds a value of the wrong type.
    #[error("GGUF metadata `{key}` should be {expected}, found {found}")]
    WrongType {
        /// The key.
        key: &'static str,
        /// What the tokenizer expects, e.g. `"array of strings"`.
        expected: &'static str,
        /// What the file holds, e.g. `"u32"`.
        found: String,
    },

    /// A per-token array (`scores`, `token_type`) has fewer entries than the vocabulary.
    #[error("GGUF metadata `{key}` has {found} entries but the vocabulary has {expected} tokens")]
    LengthMismatch {
        /// The key of the short array.
        key: &'static str,
        /// The number of tokens.
        expected: usize,
        /// The number of entries found.
        found: usize,
    },

    /// The vocabulary has no tokens.
    #[error("GGUF metadata `tokenizer.ggml.tokens` is empty")]
    EmptyVocabulary,

    /// More tokens than fit in a [`TokenId`](super::TokenId).
    #[error("the vocabulary has {0} tokens, more than a u32 token id can address")]
    VocabularyTooLarge(usize),

    /// `tokenizer.ggml.model` names a tokenizer lmrs does not implement.
    #[error("unsupported tokenizer model `{model}` (supported: {supported})")]
    UnsupportedModel {
        /// The value of `tokenizer.ggml.model`.
        model: String,
        /// The supported values, comma-separated.
        supported: &'static str,
    },

    /// `tokenizer.ggml.pre` names a pre-tokenizer lmrs does not implement.
    #[error("unsupported pre-tokenizer `{pre}` for a byte-level BPE vocabulary (supported: {supported})")]
    UnsupportedPreTokenizer {
        /// The value of `tokenizer.ggml.pre`.
        pre: String,
        /// The supported values, comma-separated.
        supported: &'static str,
    },
}
