//! The `starcoder2` architecture (StarCoder2 3B/7B/15B): LayerNorm with bias, grouped-query
//! attention with biased q/k/v projections, NeoX-style rotary embeddings, and a GELU FFN with
//! biases (no gate).

use ggml_sys::ROPE_TYPE_NEOX;

use crate::error::LoadError;
use crate::models::architecture::Architecture;
use crate::models::gpt2::{LayerNormDecoder, TensorNeeds};
use crate::weights::WeightBinder;

/// Reads `starcoder2.*` hyperparameters and binds the weights.
pub(super) fn load(binder: &mut WeightBinder<'_>) -> Result<Box<dyn Architecture>, LoadError> {
    LayerNormDecoder::load(
        binder,
        "starcoder2",
        Some(ROPE_TYPE_NEOX),
        TensorNeeds::ALL_BIASES,
        |config| config,
    )
}
