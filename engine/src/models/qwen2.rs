//! The `qwen2` architecture (Qwen2, Qwen2.5, Qwen2.5-Coder): the llama decoder with biases on the
//! query, key and value projections and NeoX-style rotary embeddings (rotating the two halves of each
//! head rather than adjacent pairs).

use ggml_sys::{Context, Graph, Tensor, ROPE_TYPE_NEOX};

use crate::kv_cache::KvTensors;
use crate::model::{LoadError, WeightBinder, WeightTensors};
use crate::models::blocks::{self, DecoderConfig, DecoderWeights};
use crate::models::{llama, Architecture, BatchInputs, Hyperparameters};

/// A loaded Qwen2 model.
pub struct Qwen2 {
    config: DecoderConfig,
    weights: DecoderWeights,
}

/// Reads `qwen2.*` hyperparameters and binds the weights (q/k/v biases required).
pub fn load(binder: &mut WeightBinder<'_>) -> Result<Box<dyn Architecture>, LoadError> {
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
    Ok(Box::new(Qwen2 { config, weights }))
}

impl Architecture for Qwen2 {
    fn hyperparameters(&self) -> &Hyperparameters {
        &self.config.hp
    }

    fn build<'a>(
        &self,
        ctx: &'a Context,
        graph: &mut Graph<'a>,
        weights: &WeightTensors<'a>,
        cache: &KvTensors<'a>,
        batch: &BatchInputs<'a>,
    ) -> Tensor<'a> {
        llama::forward(
            ctx,
            graph,
            &self.config,
            &self.weights,
            weights,
            cache,
            batch,
        )
    }
}
