//! The `gptneox` architecture (GPT-NeoX, Pythia, StableLM-alpha, RedPajama-INCITE): LayerNorm with
//! bias, a fused QKV projection with bias, NeoX-style rotary embeddings on the first
//! `rope.dimension_count` dimensions of each head (partial rotary), a GELU FFN with biases, and by
//! default parallel residuals: `x + attn(ln1(x)) + ffn(ln2(x))` (`use_parallel_residual`).

use ggml_sys::ROPE_TYPE_NEOX;

use crate::error::LoadError;
use crate::models::architecture::Architecture;
use crate::models::gpt2::{LayerNormConfig, LayerNormDecoder, Residual, TensorNeeds};
use crate::weights::WeightBinder;

/// Reads `gptneox.*` hyperparameters and binds the weights (the output matrix is never tied).
pub(super) fn load(binder: &mut WeightBinder<'_>) -> Result<Box<dyn Architecture>, LoadError> {
    let parallel = binder
        .file()
        .get_bool("gptneox.use_parallel_residual")
        .unwrap_or(false);
    let needs = TensorNeeds {
        tied_output: false,
        ..TensorNeeds::ALL_BIASES
    };
    LayerNormDecoder::load(binder, "gptneox", Some(ROPE_TYPE_NEOX), needs, |config| {
        LayerNormConfig {
            residual: if parallel {
                Residual::Parallel
            } else {
                Residual::Sequential
            },
            ..config
        }
    })
}
