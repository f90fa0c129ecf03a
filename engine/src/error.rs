//! The engine's error types: [`LoadError`] for loading a model, [`InferError`] for evaluating and
//! generating. Each variant says what failed and where; wrapped errors stay reachable through
//! `std::error::Error::source`.

use std::path::PathBuf;

use ggml_sys::GgmlError;

use crate::gguf::GgufError;
use crate::tokenizer::{TokenId, TokenizerError};

/// Errors while loading a model.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read or is not a valid GGUF file.
    #[error("{path}: {source}")]
    Gguf {
        /// The model file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: GgufError,
    },
    /// The architecture named in `general.architecture` is not one lmrs runs.
    #[error("{path}: unsupported architecture {architecture:?}; supported: {}", supported.join(", "))]
    UnsupportedArchitecture {
        /// The model file.
        path: PathBuf,
        /// The architecture found.
        architecture: String,
        /// The architectures lmrs runs.
        supported: Vec<&'static str>,
    },
    /// A required metadata key is missing or has the wrong type.
    #[error("metadata key {key:?} is missing or not {expected}")]
    MissingMetadata {
        /// The key.
        key: String,
        /// The expected type.
        expected: &'static str,
    },
    /// A hyperparameter has a value lmrs cannot use.
    #[error("hyperparameter {key} = {value} is invalid: {reason}")]
    InvalidHyperparameter {
        /// The metadata key.
        key: String,
        /// Its value.
        value: String,
        /// Why it is unusable.
        reason: String,
    },
    /// A weight tensor the architecture needs is missing.
    #[error("tensor {name:?} is missing")]
    MissingTensor {
        /// The tensor name.
        name: String,
    },
    /// A weight tensor has the wrong shape.
    #[error("tensor {name:?} has shape {actual:?}, expected {expected:?}")]
    WrongShape {
        /// The tensor name.
        name: String,
        /// Shape in the file.
        actual: Vec<u64>,
        /// Shape the hyperparameters imply.
        expected: Vec<u64>,
    },
    /// A weight tensor has a type GGML cannot use for this role.
    #[error("tensor {name:?} has type {tensor_type} which cannot be used here")]
    UnsupportedTensorType {
        /// The tensor name.
        name: String,
        /// The type's name.
        tensor_type: &'static str,
    },
    /// A weight tensor's data cannot be what its type says.
    #[error("tensor {name:?} has {reason}")]
    BadTensorData {
        /// The tensor name.
        name: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The tokenizer described by the metadata could not be built.
    #[error("tokenizer: {0}")]
    Tokenizer(#[from] TokenizerError),
    /// GGML could not allocate memory for the weights.
    #[error("GGML: {0}")]
    Ggml(#[from] GgmlError),
    /// Reading weights from the file failed.
    #[error("reading {path}: {source}")]
    Io {
        /// The model file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Errors while evaluating or generating.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    /// The prompt has no tokens.
    #[error("the prompt is empty")]
    EmptyPrompt,
    /// The prompt does not fit the context.
    #[error("the prompt has {n_tokens} tokens but the context holds {n_ctx}")]
    PromptTooLong {
        /// Prompt length.
        n_tokens: usize,
        /// Context size.
        n_ctx: usize,
    },
    /// A token id is outside the vocabulary.
    #[error("token id {id} is outside the vocabulary of {n_vocab}")]
    InvalidToken {
        /// The id.
        id: TokenId,
        /// Vocabulary size.
        n_vocab: usize,
    },
    /// Session parameters are unusable.
    #[error("invalid session parameters: {0}")]
    InvalidParams(String),
    /// The cancel flag was set.
    #[error("cancelled")]
    Cancelled,
    /// Prompt evaluation reached its deadline (see
    /// [`InferenceParameters::prompt_deadline`](crate::InferenceParameters::prompt_deadline)) before
    /// the whole prompt was evaluated. The tokens evaluated so far stay in the cache, so feeding the
    /// same prompt again goes on where this stopped.
    #[error("prompt evaluation reached its deadline with {remaining} of {n_tokens} tokens left (the rest stay cached)")]
    PromptDeadline {
        /// Prompt length.
        n_tokens: usize,
        /// Prompt tokens not yet evaluated.
        remaining: usize,
    },
    /// GGML failed.
    #[error("GGML: {0}")]
    Ggml(#[from] GgmlError),
}
