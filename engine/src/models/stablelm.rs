//! The `stablelm` architecture (StableLM 2 1.6B, StableLM-3B-4E1T, Stable Code 3B): LayerNorm with
//! bias, q/k/v projections with optional biases, NeoX-style rotary embeddings on the first
//! `rope.dimension_count` dimensions of each head (partial rotary), an unbiased output projection
//! and a SwiGLU FFN. StableLM 2 12B's layers add per-head layer norms of queries and keys
//! (`attn_q_norm`, `attn_k_norm`) and have no `ffn_norm`: attention and FFN then run in parallel on
//! the same normed input. Both are optional per layer, as llama.cpp reads them.

use ggml_sys::ROPE_TYPE_NEOX;

use crate::error::LoadError;
use crate::models::architecture::Architecture;
use crate::models::blocks::Need;
use crate::models::gpt2::{LayerNormDecoder, TensorNeeds};
use crate::weights::WeightBinder;

/// Reads `stablelm.*` hyperparameters and binds the weights.
pub(super) fn load(binder: &mut WeightBinder<'_>) -> Result<Box<dyn Architecture>, LoadError> {
    let needs = TensorNeeds {
        qkv_bias: Need::Optional,
        // llama.cpp's StableLM graph adds no output bias even when the file has one.
        output_bias: Need::Absent,
        ffn_norm: Need::Optional,
        swiglu: true,
        tied_output: false,
        qk_norm: true,
        ..TensorNeeds::ALL_BIASES
    };
    LayerNormDecoder::load(binder, "stablelm", Some(ROPE_TYPE_NEOX), needs, |config| {
        config
    })
}
