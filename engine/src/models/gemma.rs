//! The `gemma` architecture (Gemma 1 and CodeGemma 2B / 7B): the llama decoder with embeddings
//! scaled by `sqrt(n_embd)`, NeoX-style RoPE, queries scaled by `1/sqrt(head_dim)` before attention,
//! a GELU-gated feed-forward network (tanh approximation) and the output tied to the embeddings
//! (llama.cpp uses `token_embd` even if a file has an `output.weight`; so does lmrs).
//!
//! Gemma's RMS norms multiply by `(1 + w)`; the GGUF conversion stores `1 + w`, so every norm is
//! a plain [`blocks::rms_norm`].

use ggml_sys::{Context, Graph, Tensor, ROPE_TYPE_NEOX};

use crate::error::LoadError;
use crate::hparams::Hyperparameters;
use crate::kv_cache::KvTensors;
use crate::models::architecture::{Architecture, BatchInputs, PositionShift};
use crate::models::blocks::{self, DecoderConfig, DecoderWeights};
use crate::weights::{WeightBinder, WeightTensors};

/// A loaded Gemma decoder.
struct Gemma {
    config: DecoderConfig,
    weights: DecoderWeights,
}

/// Reads `gemma.*` hyperparameters and binds the weights.
pub(super) fn load(binder: &mut WeightBinder<'_>) -> Result<Box<dyn Architecture>, LoadError> {
    let config = blocks::read_decoder_config(binder.file(), "gemma", ROPE_TYPE_NEOX)?;
    let mut weights = blocks::bind_decoder_weights(binder, &config.hp)?;
    // The output projection is always the embedding matrix.
    weights.output = weights.token_embd;
    Ok(Box::new(Gemma { config, weights }))
}

impl Architecture for Gemma {
    fn hyperparameters(&self) -> &Hyperparameters {
        &self.config.hp
    }

    fn build<'a>(
        &self,
        ctx: &'a Context,
        graph: &mut Graph<'a>,
        w: &WeightTensors<'a>,
        cache: &KvTensors<'a>,
        batch: &BatchInputs<'a>,
    ) -> Tensor<'a> {
        let (cfg, ids) = (&self.config, &self.weights);
        let (hp, eps) = (&cfg.hp, cfg.rms_eps);
        let n_tokens = batch.n_tokens as i64;
        let (head_dim, n_head, n_head_kv) =
            (hp.head_dim as i64, hp.n_head as i64, hp.n_head_kv as i64);

        // Look up the token embeddings and scale them by sqrt(n_embd): [n_embd, n_tokens].
        let embedded = ctx.get_rows(w.get(ids.token_embd), batch.tokens);
        let mut x = ctx.scale(embedded, (hp.n_embd as f32).sqrt());

        for (layer_index, layer) in ids.layers.iter().enumerate() {
            let l = layer.tensors(w);

            // Attention sub-block, pre-norm: h = rms_norm(x) * attn_norm. [n_embd, n_tokens]
            let h = blocks::rms_norm(ctx, x, l.attn_norm, eps);

            // Project to queries, keys and values, split into heads.
            let q = blocks::linear(ctx, l.wq, h, l.bq); // [n_head*head_dim, n_tokens]
            let k = blocks::linear(ctx, l.wk, h, l.bk); // [n_head_kv*head_dim, n_tokens]
            let v = blocks::linear(ctx, l.wv, h, l.bv); // [n_head_kv*head_dim, n_tokens]
            let q = ctx.reshape_3d(q, head_dim, n_head, n_tokens);
            let k = ctx.reshape_3d(k, head_dim, n_head_kv, n_tokens);

            // Rotate by position, then scale the queries by 1/sqrt(head_dim).
            let q = ctx.rope_ext(q, batch.positions, &cfg.rope); // [head_dim, n_head, n_tokens]
            let k = ctx.rope_ext(k, batch.positions, &cfg.rope); // [head_dim, n_head_kv, n_tokens]
            let q = ctx.scale(q, 1.0 / (hp.head_dim as f32).sqrt());

            // Cache update and causal attention (the queries carry the scale).
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
                1.0,
            ); // [n_head*head_dim, n_tokens]

            // Output projection and residual connection.
            let mut projected = blocks::linear(ctx, l.wo, attended, l.bo); // [n_embd, n_tokens]
            if layer_index + 1 == ids.layers.len() {
                // Last layer: only the rows whose logits are wanted go on. [n_embd, n_outputs]
                projected = ctx.get_rows(projected, batch.output_rows);
                x = ctx.get_rows(x, batch.output_rows);
            }
            let x_attn = ctx.add(projected, x);

            // Feed-forward sub-block: pre-norm, GELU-gated FFN, residual.
            let h = blocks::rms_norm(ctx, x_attn, l.ffn_norm, eps);
            let ffn = blocks::geglu_ffn(ctx, h, l.ffn_gate, l.ffn_up, l.ffn_down);
            x = ctx.add(ffn, x_attn); // [n_embd, n_tokens]
        }

        // Final norm and output projection (the tied embeddings) of the selected rows.
        let normalized = blocks::rms_norm(ctx, x, w.get(ids.output_norm), eps);
        ctx.mul_mat(w.get(ids.output), normalized) // [n_vocab, n_outputs]
    }

    fn position_shift(&self) -> PositionShift {
        PositionShift::for_rope(&self.config.rope, self.config.hp.n_layer)
    }
}
