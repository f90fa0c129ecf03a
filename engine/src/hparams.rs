//! Hyperparameters: the sizes every decoder-only transformer has, and the readers of the
//! `{arch}.*` GGUF metadata keys they come from, which reject values no model can have.

use crate::error::LoadError;
use crate::gguf::GgufFile;

/// Sizes every decoder-only transformer has; what sessions need to size KV caches and buffers.
#[derive(Clone, Debug)]
pub struct Hyperparameters {
    /// Vocabulary size (rows of the embedding and of the output matrix).
    pub n_vocab: usize,
    /// Training context length.
    pub n_ctx_train: usize,
    /// Embedding width.
    pub n_embd: usize,
    /// Number of layers.
    pub n_layer: usize,
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads (grouped-query attention when fewer than `n_head`).
    pub n_head_kv: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Hidden width of the feed-forward network.
    pub n_ff: usize,
}

impl Hyperparameters {
    /// Width of the keys (or values) of all KV heads together.
    pub fn n_embd_kv(&self) -> usize {
        self.n_head_kv * self.head_dim
    }
}

/// Largest size any hyperparameter (and any width made of them, such as heads times head width)
/// may have: far beyond every real model, and small enough that products of a few sizes and a
/// context length stay far from overflowing GGML's `int64_t` element counts.
pub(crate) const MAX_SIZE: u64 = 1 << 24;

/// The error for `key` holding `value`, unusable for `reason`.
pub(crate) fn invalid(key: &str, value: impl ToString, reason: impl Into<String>) -> LoadError {
    LoadError::InvalidHyperparameter {
        key: key.to_string(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// Reads `{arch}.{key}` as a size between 1 and [`MAX_SIZE`].
pub(crate) fn read_size(file: &GgufFile, arch: &str, key: &str) -> Result<usize, LoadError> {
    let full = format!("{arch}.{key}");
    let value = file.get_u64(&full).ok_or(LoadError::MissingMetadata {
        key: full.clone(),
        expected: "a non-negative integer",
    })?;
    if value == 0 || value > MAX_SIZE {
        return Err(invalid(&full, value, "must be between 1 and 2^24"));
    }
    Ok(value as usize)
}

/// Reads `{arch}.{key}` as a size (see [`read_size`]) when present.
pub(crate) fn read_size_opt(
    file: &GgufFile,
    arch: &str,
    key: &str,
) -> Result<Option<usize>, LoadError> {
    match file.get(&format!("{arch}.{key}")) {
        None => Ok(None),
        Some(_) => read_size(file, arch, key).map(Some),
    }
}

/// Reads `{arch}.{key}` as a finite float, with a default when absent.
pub(crate) fn read_f32_or(
    file: &GgufFile,
    arch: &str,
    key: &str,
    default: f32,
) -> Result<f32, LoadError> {
    let full = format!("{arch}.{key}");
    match file.get(&full) {
        None => Ok(default),
        Some(_) => {
            let value = file.get_f32(&full).ok_or(LoadError::MissingMetadata {
                key: full.clone(),
                expected: "a float",
            })?;
            if !value.is_finite() {
                return Err(invalid(&full, value, "must be finite"));
            }
            Ok(value)
        }
    }
}
