//! The `gemma2` architecture (Gemma 2 2B / 9B / 27B): Gemma's decoder (embeddings scaled by
//! `sqrt(n_embd)`, NeoX RoPE, GELU-gated FFN, tied output) with sandwich norms (RMS norms after
//! attention and after the FFN too), soft-capped attention scores (`cap * tanh(score / cap)`,
//! `attn_logit_softcapping`, default 50) and logits (`final_logit_softcapping`, default 30), and
//! sliding-window attention on every other layer (the first included; window
//! `attention.sliding_window`, default 4096).
//!
//! Queries are scaled by `1/sqrt(head_dim)`, except on the 27B model (46 layers) whose
//! `query_pre_attn_scalar` is `n_embd / n_head` (as llama.cpp decides it; the GGUF does not carry it).

use ggml_sys::{Context, Graph, RopeParams, Tensor, ROPE_TYPE_NEOX};

use crate::error::LoadError;
use crate::hparams::{invalid, read_f32_or, Hyperparameters};
use crate::kv_cache::KvTensors;
use crate::models::architecture::{Architecture, BatchInputs, PositionShift};
use crate::models::blocks::{self, DecoderConfig, DecoderWeights, Scores};
use crate::models::gemma3::read_sliding_window;
use crate::weights::{WeightBinder, WeightId, WeightTensors, WeightUse};

/// Metadata prefix and `general.architecture` name.
const ARCH: &str = "gemma2";

/// Window of the local layers without `attention.sliding_window` (llama.cpp's Gemma 2 default).
const DEFAULT_WINDOW: u64 = 4096;
/// Every second layer is global unless `attention.sliding_window_pattern` says otherwise.
const DEFAULT_PATTERN: u64 = 2;
/// Attention soft-cap without `attn_logit_softcapping`.
const DEFAULT_ATTN_SOFTCAP: f32 = 50.0;
/// Logit soft-cap without `final_logit_softcapping`.
const DEFAULT_FINAL_SOFTCAP: f32 = 30.0;

/// A loaded Gemma 2 decoder.
struct Gemma2 {
    /// Sizes, norm epsilon and the global layers' RoPE.
    config: DecoderConfig,
    /// RoPE of the local (sliding-window) layers.
    rope_local: RopeParams,
    /// Window of the local layers; `None` when the model has none.
    sliding_window: Option<usize>,
    /// Per layer: whether it is a local (sliding-window) layer.
    is_local: Vec<bool>,
    /// Queries are multiplied by this before attention.
    query_scale: f32,
    /// Cap of the attention scores.
    attn_softcap: f32,
    /// Cap of the output logits.
    final_softcap: f32,
    /// The weights every llama-style decoder has.
    weights: DecoderWeights,
    /// Per layer: `(post_attention_norm, post_ffw_norm)`, `[n_embd]` each.
    post_norms: Vec<(WeightId, WeightId)>,
}

/// Reads a soft-cap `{ARCH}.{key}`: positive (llama.cpp divides by it).
fn read_softcap(file: &crate::gguf::GgufFile, key: &str, default: f32) -> Result<f32, LoadError> {
    let cap = read_f32_or(file, ARCH, key, default)?;
    if cap > 0.0 && cap.is_normal() {
        Ok(cap)
    } else {
        Err(invalid(&format!("{ARCH}.{key}"), cap, "must be positive"))
    }
}

/// Reads `gemma2.*` hyperparameters and binds the weights.
pub(super) fn load(binder: &mut WeightBinder<'_>) -> Result<Box<dyn Architecture>, LoadError> {
    let file = binder.file();
    let config = blocks::read_decoder_config(file, ARCH, ROPE_TYPE_NEOX)?;
    let hp = &config.hp;
    let (sliding_window, is_local) =
        read_sliding_window(file, ARCH, hp.n_layer, DEFAULT_WINDOW, DEFAULT_PATTERN)?;

    // Local layers rotate with `rope.freq_base_swa` when given, else like the global ones.
    let local_base = read_f32_or(file, ARCH, "rope.freq_base_swa", config.rope.freq_base)?;
    if local_base <= 1.0 {
        return Err(invalid(
            "gemma2.rope.freq_base_swa",
            local_base,
            "must be greater than 1",
        ));
    }
    let rope_local = RopeParams {
        freq_base: local_base,
        ..config.rope
    };

    let query_scale = if hp.n_layer == 46 {
        1.0 / ((hp.n_embd / hp.n_head) as f32).sqrt()
    } else {
        1.0 / (hp.head_dim as f32).sqrt()
    };
    let attn_softcap = read_softcap(file, "attn_logit_softcapping", DEFAULT_ATTN_SOFTCAP)?;
    let final_softcap = read_softcap(file, "final_logit_softcapping", DEFAULT_FINAL_SOFTCAP)?;

    let mut weights = blocks::bind_decoder_weights(binder, hp)?;
    // The output projection is always the embedding matrix.
    weights.output = weights.token_embd;
    let mut post_norms = Vec::with_capacity(hp.n_layer);
    for i in 0..hp.n_layer {
        let mut norm = |suffix: &str| {
            binder.require(
                &format!("blk.{i}.{suffix}"),
                &[hp.n_embd],
                WeightUse::Vector,
            )
        };
        post_norms.push((
            norm("post_attention_norm.weight")?,
            norm("post_ffw_norm.weight")?,
        ));
    }

    Ok(Box::new(Gemma2 {
        config,
        rope_local,
        sliding_window,
        is_local,
        query_scale,
        attn_softcap,
        final_softcap,
        weights,
        post_norms,
    }))
}

impl Gemma2 {
    /// The RoPE parameters of `layer`.
    fn rope(&self, layer: usize) -> &RopeParams {
        if self.is_local[layer] {
            &self.rope_local
        } else {
            &self.config.rope
        }
    }
}

impl Architecture for Gemma2 {
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

        for (layer_index, (layer, &(attn_post_norm, ffn_post_norm))) in
            ids.layers.iter().zip(&self.post_norms).enumerate()
        {
            let l = layer.tensors(w);
            let rope = self.rope(layer_index);
            // Local layers see only the last `window` positions.
            let mask = match batch.mask_swa {
                Some(mask_swa) if self.is_local[layer_index] => mask_swa,
                _ => batch.mask,
            };

            // Attention sub-block, pre-norm: h = rms_norm(x) * attn_norm. [n_embd, n_tokens]
            let h = blocks::rms_norm(ctx, x, l.attn_norm, eps);

            // Project to queries, keys and values, split into heads.
            let q = blocks::linear(ctx, l.wq, h, l.bq); // [n_head*head_dim, n_tokens]
            let k = blocks::linear(ctx, l.wk, h, l.bk); // [n_head_kv*head_dim, n_tokens]
            let v = blocks::linear(ctx, l.wv, h, l.bv); // [n_head_kv*head_dim, n_tokens]
            let q = ctx.reshape_3d(q, head_dim, n_head, n_tokens);
            let k = ctx.reshape_3d(k, head_dim, n_head_kv, n_tokens);

            // Rotate by position, then scale the queries.
            let q = ctx.rope_ext(q, batch.positions, rope); // [head_dim, n_head, n_tokens]
            let k = ctx.rope_ext(k, batch.positions, rope); // [head_dim, n_head_kv, n_tokens]
            let q = ctx.scale(q, self.query_scale);

            // Cache update and attention with soft-capped scores.
            let attended = blocks::attention_with(
                ctx,
                graph,
                hp,
                cache,
                layer_index,
                batch,
                mask,
                q,
                k,
                v,
                Scores {
                    kq_scale: 1.0,
                    max_bias: 0.0,
                    softcap: Some(self.attn_softcap),
                },
            ); // [n_head*head_dim, n_tokens]

            // Output projection.
            let mut projected = blocks::linear(ctx, l.wo, attended, l.bo); // [n_embd, n_tokens]
            if layer_index + 1 == ids.layers.len() {
                // Last layer: only the rows whose logits are wanted go on. [n_embd, n_outputs]
                projected = ctx.get_rows(projected, batch.output_rows);
                x = ctx.get_rows(x, batch.output_rows);
            }

            // Post-attention norm, then the residual connection.
            let x_attn = blocks::post_norm_residual(ctx, x, projected, w.get(attn_post_norm), eps);

            // Feed-forward sub-block: pre-norm, GELU-gated FFN, post-norm, residual.
            let h = blocks::rms_norm(ctx, x_attn, l.ffn_norm, eps);
            let ffn = blocks::geglu_ffn(ctx, h, l.ffn_gate, l.ffn_up, l.ffn_down); // [n_embd, n]
            x = blocks::post_norm_residual(ctx, x_attn, ffn, w.get(ffn_post_norm), eps);
        }

        // Final norm and output projection (the tied embeddings) of the selected rows.
        let normalized = blocks::rms_norm(ctx, x, w.get(ids.output_norm), eps);
        let logits = ctx.mul_mat(w.get(ids.output), normalized); // [n_vocab, n_outputs]

        // Soft-capping: cap * tanh(logits / cap).
        let cap = self.final_softcap;
        ctx.scale(ctx.tanh(ctx.scale(logits, 1.0 / cap)), cap)
    }

    fn position_shift(&self) -> PositionShift {
        PositionShift::for_layers(
            (0..self.config.hp.n_layer)
                .map(|layer| *self.rope(layer))
                .collect(),
        )
    }

    fn sliding_window(&self) -> Option<usize> {
        self.sliding_window
    }
}
