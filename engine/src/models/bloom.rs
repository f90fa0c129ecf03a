//! The `bloom` architecture (BLOOM, BLOOMZ): no position embeddings but ALiBi (attention scores
//! biased by minus the distance times a per-head slope, largest bias 8 as in llama.cpp), a layer
//! norm of the token embeddings, LayerNorm with bias, a fused QKV projection with bias and a GELU
//! FFN with biases.

use crate::error::LoadError;
use crate::models::architecture::Architecture;
use crate::models::blocks::ALIBI_MAX_BIAS;
use crate::models::gpt2::{LayerNormConfig, LayerNormDecoder, TensorNeeds};
use crate::weights::WeightBinder;

/// Reads `bloom.*` hyperparameters and binds the weights.
pub(super) fn load(binder: &mut WeightBinder<'_>) -> Result<Box<dyn Architecture>, LoadError> {
    let needs = TensorNeeds {
        token_norm: true,
        ..TensorNeeds::ALL_BIASES
    };
    LayerNormDecoder::load(binder, "bloom", None, needs, |config| LayerNormConfig {
        alibi_max_bias: Some(ALIBI_MAX_BIAS),
        ..config
    })
}
