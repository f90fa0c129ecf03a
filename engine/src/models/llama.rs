//! The `llama` architecture (Llama, CodeLlama, TinyLlama, DeepSeek-Coder, SmolLM2): pre-norm decoder
//! with RMS norm, rotary embeddings on adjacent pairs, grouped-query attention and a SwiGLU FFN.
//!
//! Other llama-style architectures (Qwen2) reuse [`forward`] with their own configuration and weights.

use ggml_sys::{Context, Graph, Tensor, ROPE_TYPE_NORMAL};

use crate::error::LoadError;
use crate::hparams::Hyperparameters;
use crate::kv_cache::KvTensors;
use crate::models::architecture::{Architecture, BatchInputs, PositionShift};
use crate::models::blocks::{self, DecoderConfig, DecoderWeights};
use crate::weights::{WeightBinder, WeightTensors};

/// A loaded llama-style decoder.
pub(super) struct Llama {
    /// Hyperparameters, norm epsilon and RoPE settings.
    pub config: DecoderConfig,
    /// Bound weights.
    pub weights: DecoderWeights,
}

/// Reads `llama.*` hyperparameters and binds the weights.
pub(super) fn load(binder: &mut WeightBinder<'_>) -> Result<Box<dyn Architecture>, LoadError> {
    let config = blocks::read_decoder_config(binder.file(), "llama", ROPE_TYPE_NORMAL)?;
    let weights = blocks::bind_decoder_weights(binder, &config.hp)?;
    Ok(Box::new(Llama { config, weights }))
}

impl Architecture for Llama {
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
        forward(
            ctx,
            graph,
            &self.config,
            &self.weights,
            weights,
            cache,
            batch,
        )
    }

    fn position_shift(&self) -> PositionShift {
        PositionShift::for_rope(&self.config.rope, self.config.hp.n_layer)
    }
}

/// The forward pass of a llama-style decoder for one batch; returns logits `[n_vocab, n_outputs]`.
pub(super) fn forward<'a>(
    ctx: &'a Context,
    graph: &mut Graph<'a>,
    cfg: &DecoderConfig,
    ids: &DecoderWeights,
    w: &WeightTensors<'a>,
    cache: &KvTensors<'a>,
    batch: &BatchInputs<'a>,
) -> Tensor<'a> {
    let hp = &cfg.hp;
    let n_tokens = batch.n_tokens as i64;
    let (head_dim, n_head, n_head_kv) = (hp.head_dim as i64, hp.n_head as i64, hp.n_head_kv as i64);
    let kq_scale = 1.0 / (hp.head_dim as f32).sqrt();

    // Look up the token embeddings: [n_embd, n_tokens].
    let mut x = ctx.get_rows(w.get(ids.token_embd), batch.tokens);

    for (layer_index, layer) in ids.layers.iter().enumerate() {
        let l = layer.tensors(w);

        // Attention sub-block, pre-norm: h = rms_norm(x) * attn_norm.
        let h = blocks::rms_norm(ctx, x, l.attn_norm, cfg.rms_eps); // [n_embd, n_tokens]

        // Project to queries, keys and values, split into heads.
        let q = blocks::linear(ctx, l.wq, h, l.bq); // [n_head*head_dim, n_tokens]
        let k = blocks::linear(ctx, l.wk, h, l.bk); // [n_head_kv*head_dim, n_tokens]
        let v = blocks::linear(ctx, l.wv, h, l.bv); // [n_head_kv*head_dim, n_tokens]
        let q = ctx.reshape_3d(q, head_dim, n_head, n_tokens);
        let k = ctx.reshape_3d(k, head_dim, n_head_kv, n_tokens);

        // Rotate queries and keys by their positions.
        let q = ctx.rope_ext(q, batch.positions, &cfg.rope); // [head_dim, n_head, n_tokens]
        let k = ctx.rope_ext(k, batch.positions, &cfg.rope); // [head_dim, n_head_kv, n_tokens]

        // Cache update and causal attention over the cache, scores scaled by 1/sqrt(head_dim).
        let attended = blocks::attention(
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
            kq_scale,
        ); // [n_head*head_dim, n_tokens]

        // Output projection and residual connection.
        let mut projected = blocks::linear(ctx, l.wo, attended, l.bo); // [n_embd, n_tokens]
        if layer_index + 1 == ids.layers.len() {
            // Last layer: only the rows whose logits are wanted go on. [n_embd, n_outputs]
            projected = ctx.get_rows(projected, batch.output_rows);
            x = ctx.get_rows(x, batch.output_rows);
        }
        let x_attn = ctx.add(x, projected);

        // Feed-forward sub-block, pre-norm, SwiGLU, residual.
        let h = blocks::rms_norm(ctx, x_attn, l.ffn_norm, cfg.rms_eps);
        let ffn = blocks::swiglu_ffn(ctx, h, l.ffn_gate, l.ffn_up, l.ffn_down);
        x = ctx.add(x_attn, ffn); // [n_embd, n_tokens]
    }

    // Final norm and output projection of the selected rows.
    let normalized = blocks::rms_norm(ctx, x, w.get(ids.output_norm), cfg.rms_eps);
    ctx.mul_mat(w.get(ids.output), normalized) // [n_vocab, n_outputs]
}
