//! The `qwen2` architecture (Qwen2, Qwen2.5, Qwen2.5-Coder): the llama decoder with biases on the
//! query, key and value projections and NeoX-style rotary embeddings (rotating the two halves of each
//! head rather than adjacent pairs). It differs from llama only in what it loads, so it runs as a
//! [`Llama`] with this configuration.

use ggml_sys::ROPE_TYPE_NEOX;

use crate::error::LoadError;
use crate::models::architecture::Architecture;
use crate::models::blocks;
use crate::models::llama::Llama;
use crate::weights::WeightBinder;

/// Reads `qwen2.*` hyperparameters and binds the weights (q/k/v biases required).
pub(super) fn load(binder: &mut WeightBinder<'_>) -> Result<Box<dyn Architecture>, LoadError> {
    let config = blocks::read_decoder_config(binder.file(), "qwen2", ROPE_TYPE_NEOX)?;
    let weights = blocks::bind_decoder_weights(binder, &config.hp)?;
    for (i, layer) in weights.layers.iter().enumerate() {
        for (bias, name) in [
            (layer.bq, "attn_q.bias"),
            (layer.bk, "attn_k.bias"),
            (layer.bv, "attn_v.bias"),
        ] {
            if bias.is_none() {
                return Err(LoadError::MissingTensor {
                    name: format!("blk.{i}.{name}"),
                });
            }
        }
    }
    Ok(Box::new(Llama { config, weights }))
}
