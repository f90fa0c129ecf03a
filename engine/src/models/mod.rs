//! Model architectures: one file each, over the shared blocks in [`blocks`].
//!
//! An architecture reads its hyperparameters from GGUF metadata, binds its weights by GGUF name (with
//! shapes checked, so graph building never trips a GGML assertion), and builds the forward graph for a
//! batch of tokens. Adding one is one file plus one line in [`REGISTRY`].

pub mod blocks;
pub mod llama;
pub mod qwen2;

use ggml_sys::{Context, Tensor};

use crate::gguf::GgufFile;
use crate::kv_cache::KvTensors;
use crate::model::{LoadError, WeightBinder, WeightTensors};

/// Architectures lmrs runs, by their `general.architecture` name.
pub const REGISTRY: &[(&str, LoadFn)] = &[("qwen2", qwen2::load), ("llama", llama::load)];

/// Names of the supported architectures, for error messages.
pub const SUPPORTED: &[&str] = &["qwen2", "llama"];

/// Reads hyperparameters and binds weights for one architecture.
pub type LoadFn = fn(&mut WeightBinder<'_>) -> Result<Box<dyn Architecture>, LoadError>;

/// Finds `name` in the registry and loads it.
pub fn load(name: &str, binder: &mut WeightBinder<'_>) -> Result<Box<dyn Architecture>, LoadError> {
    match REGISTRY.iter().find(|(registered, _)| *registered == name) {
        Some((_, load)) => load(binder),
        None => Err(LoadError::UnsupportedArchitecture {
            path: Default::default(),
            architecture: name.to_string(),
        }),
    }
}

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

/// The graph inputs of one batch: tokens at consecutive positions after `n_past` cached ones.
pub struct BatchInputs<'a> {
    /// Token ids, I32 `[n_tokens]`.
    pub tokens: Tensor<'a>,
    /// Positions, I32 `[n_tokens]`.
    pub positions: Tensor<'a>,
    /// Causal mask, F16 `[n_kv, n_tokens]`: 0 where a token may attend, -inf elsewhere (also on
    /// the cache rows past the batch that padding brings in).
    pub mask: Tensor<'a>,
    /// Rows whose logits are wanted, I32 `[n_outputs]`.
    pub output_rows: Tensor<'a>,
    /// Cache rows (positions) the batch's keys and values are written to, I64 `[n_tokens]`.
    pub cache_rows: Tensor<'a>,
    /// Tokens in this batch.
    pub n_tokens: usize,
    /// Cache rows attention looks at, from row 0: at least everything cached plus this batch; with
    /// flash attention rounded up so one graph serves many consecutive tokens.
    pub n_kv: usize,
    /// Tokens already in the KV cache before this batch. Only the unfused attention's transposed
    /// value cache needs it in the graph (its column writes are views at this offset).
    pub n_past: usize,
    /// Use GGML's fused flash attention (else scores, softmax and weighted sum as separate ops).
    pub flash_attention: bool,
}

/// A model architecture: hyperparameters, bound weights and the forward pass.
pub trait Architecture: Send + Sync {
    /// The model's sizes.
    fn hyperparameters(&self) -> &Hyperparameters;

    /// Builds the forward pass of one batch and returns the logits `[n_vocab, n_outputs]`. Writes the
    /// batch's keys and values into the cache (those copies are expanded into `graph` first).
    fn build<'a>(
        &self,
        ctx: &'a Context,
        graph: &mut ggml_sys::Graph<'a>,
        weights: &WeightTensors<'a>,
        cache: &KvTensors<'a>,
        batch: &BatchInputs<'a>,
    ) -> Tensor<'a>;
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
