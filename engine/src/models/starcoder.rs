//! The `starcoder` architecture (StarCoder, StarCoderBase, SantaCoder: Hugging Face's
//! `gpt_bigcode`): GPT-2's layout with multi-query attention (one key/value head shared by every
//! query head). It differs from GPT-2 only in its head count of keys and values, which the
//! hyperparameters carry, so it runs as a [`LayerNormDecoder`] like GPT-2.

use crate::error::LoadError;
use crate::models::architecture::Architecture;
use crate::models::blocks::Need;
use crate::models::gpt2::{LayerNormDecoder, TensorNeeds};
use crate::weights::WeightBinder;

/// Reads `starcoder.*` hyperparameters and binds the weights.
pub(super) fn load(binder: &mut WeightBinder<'_>) -> Result<Box<dyn Architecture>, LoadError> {
    let needs = TensorNeeds {
        position_embeddings: Need::Required,
        ..TensorNeeds::ALL_BIASES
    };
    LayerNormDecoder::load(binder, "starcoder", None, needs, |config| config)
}
