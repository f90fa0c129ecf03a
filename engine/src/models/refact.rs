//! The `refact` architecture (Refact-1.6B-fim): the llama decoder (RMS norm, separate q/k/v
//! projections, SwiGLU FFN) with ALiBi instead of rotary embeddings: attention scores are biased by
//! minus the distance times a per-head slope (largest bias 8, as llama.cpp sets it).

use ggml_sys::{Context, Graph, Tensor};

use crate::error::LoadError;
use crate::hparams::Hyperparameters;
use crate::kv_cache::KvTensors;
use crate::models::architecture::{Architecture, BatchInputs, PositionShift};
use crate::models::blocks::{self, DecoderConfig, DecoderWeights, Scores, ALIBI_MAX_BIAS};
use crate::weights::{WeightBinder, WeightTensors};

/// A loaded Refact decoder.
struct Refact {
    /// Sizes and norm epsilon (the RoPE part is unused).
    config: DecoderConfig,
    /// The llama decoder's weights (the output projection's bias, if any, is not used, as in
    /// llama.cpp).
    weights: DecoderWeights,
}

/// Reads `refact.*` hyperparameters and binds the weights.
pub(super) fn load(binder: &mut WeightBinder<'_>) -> Result<Box<dyn Architecture>, LoadError> {
    let config = blocks::read_decoder_config(binder.file(), "refact", 0)?;
    let weights = blocks::bind_decoder_weights(binder, &config.hp)?;
    Ok(Box::new(Refact { config, weights }))
}

impl Architecture for Refact {
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
        self.forward(ctx, graph, weights, cache, batch)
    }

    fn position_shift(&self) -> PositionShift {
        // ALiBi: cached keys carry no position, moving them is copying them.
        PositionShift::Unrotated
    }

    fn uses_alibi(&self) -> bool {
        true
    }
}

impl Refact {
    /// The forward pass of one batch; returns logits `[n_vocab, n_outputs]`.
    fn forward<'a>(
        &self,
        ctx: &'a Context,
        graph: &mut Graph<'a>,
        w: &WeightTensors<'a>,
        cache: &KvTensors<'a>,
        batch: &BatchInputs<'a>,
    ) -> Tensor<'a> {
        let (hp, eps, ids) = (&self.config.hp, self.config.rms_eps, &self.weights);
        let n_tokens = batch.n_tokens as i64;
        let (head_dim, n_head, n_head_kv) =
            (hp.head_dim as i64, hp.n_head as i64, hp.n_head_kv as i64);
        let kq_scale = 1.0 / (hp.head_dim as f32).sqrt();

        // Look up the token embeddings: [n_embd, n_tokens].
        let mut x = ctx.get_rows(w.get(ids.token_embd), batch.tokens);

        for (layer_index, layer) in ids.layers.iter().enumerate() {
            let l = layer.tensors(w);

            // Attention sub-block, pre-norm: h = rms_norm(x) * attn_norm.
            let h = blocks::rms_norm(ctx, x, l.attn_norm, eps); // [n_embd, n_tokens]

            // Project to queries, keys and values, split into heads (no rotation: ALiBi).
            let q = blocks::linear(ctx, l.wq, h, l.bq); // [n_head*head_dim, n_tokens]
            let k = blocks::linear(ctx, l.wk, h, l.bk); // [n_head_kv*head_dim, n_tokens]
            let v = blocks::linear(ctx, l.wv, h, l.bv); // [n_head_kv*head_dim, n_tokens]
            let q = ctx.reshape_3d(q, head_dim, n_head, n_tokens);
            let k = ctx.reshape_3d(k, head_dim, n_head_kv, n_tokens);

            // Cache update and causal attention biased by ALiBi.
            let attended = blocks::attention_with(
                ctx,
                graph,
                hp,
                cache,
                layer_index,
                batch,
                batch.mask,
                q,
                k,
                v,
                Scores {
                    max_bias: ALIBI_MAX_BIAS,
                    ..Scores::scaled(kq_scale)
                },
            ); // [n_head*head_dim, n_tokens]

            // Output projection (no bias) and residual connection.
            let mut projected = blocks::linear(ctx, l.wo, attended, None); // [n_embd, n_tokens]
            if layer_index + 1 == ids.layers.len() {
                // Last layer: only the rows whose logits are wanted go on. [n_embd, n_outputs]
                projected = ctx.get_rows(projected, batch.output_rows);
                x = ctx.get_rows(x, batch.output_rows);
            }
            let x_attn = ctx.add(projected, x);

            // Feed-forward sub-block, pre-norm, SwiGLU, residual.
            let h = blocks::rms_norm(ctx, x_attn, l.ffn_norm, eps);
            let ffn = blocks::swiglu_ffn(ctx, h, l.ffn_gate, l.ffn_up, l.ffn_down);
            x = ctx.add(ffn, x_attn); // [n_embd, n_tokens]
        }

        // Final norm and output projection of the selected rows.
        let normalized = blocks::rms_norm(ctx, x, w.get(ids.output_norm), eps);
        ctx.mul_mat(w.get(ids.output), normalized) // [n_vocab, n_outputs]
    }
}
