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

/// Reads `{arch}.{key}` as a positive size.
pub(crate) fn read_size(file: &GgufFile, arch: &str, key: &str) -> Result<usize, LoadError> {
    let full = format!("{arch}.{key}");
    let value = file.get_u64(&full).ok_or(LoadError::MissingMetadata {
        key: full.clone(),
        expected: "a non-negative integer",
    })?;
    if value == 0 || value > (1 << 24) {
        return Err(LoadError::InvalidHyperparameter {
            key: full,
            value: value.to_string(),
            reason: "must be between 1 and 2^24".into(),
        });
    }
    Ok(value as usize)
}

/// Reads `{arch}.{key}` as a float, with a default when absent.
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
                return Err(LoadError::InvalidHyperparameter {
                    key: full,
                    value: value.to_string(),
                    reason: "must be finite".into(),
                });
            }
            Ok(value)
        }
    }
}
