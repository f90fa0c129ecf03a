//! The `qwen3` architecture (Qwen3 dense models): the llama decoder without any projection biases,
//! with NeoX-style RoPE and a per-head RMS norm of queries and keys before the rotation (QK-norm).
//! Head widths come from `attention.key_length` (Qwen3 heads are wider than `n_embd / n_head`).
//!
//! The attention sub-block ([`AttentionWeights`], [`attention_sublayer`]) is shared with `qwen3moe`,
//! which differs only in its feed-forward network.

use ggml_sys::{Context, Graph, Tensor, ROPE_TYPE_NEOX};

use crate::error::LoadError;
use crate::hparams::Hyperparameters;
use crate::kv_cache::KvTensors;
use crate::models::architecture::{Architecture, BatchInputs, PositionShift};
use crate::models::blocks::{self, DecoderConfig};
use crate::weights::{WeightBinder, WeightId, WeightTensors, WeightUse};

/// Weights of a Qwen3 attention sub-block (one layer).
#[derive(Clone, Debug)]
pub(super) struct AttentionWeights {
    /// RMS-norm weight before attention, `[n_embd]`.
    pub attn_norm: WeightId,
    /// Query projection `[n_embd, n_head*head_dim]`.
    pub wq: WeightId,
    /// Key projection `[n_embd, n_head_kv*head_dim]`.
    pub wk: WeightId,
    /// Value projection `[n_embd, n_head_kv*head_dim]`.
    pub wv: WeightId,
    /// Output projection `[n_head*head_dim, n_embd]`.
    pub wo: WeightId,
    /// QK-norm of queries, `[head_dim]`.
    pub q_norm: WeightId,
    /// QK-norm of keys, `[head_dim]`.
    pub k_norm: WeightId,
}

/// Binds layer `i`'s attention weights.
pub(super) fn bind_attention(
    binder: &mut WeightBinder<'_>,
    hp: &Hyperparameters,
    i: usize,
) -> Result<AttentionWeights, LoadError> {
    let (n_embd, n_q, n_kv) = (hp.n_embd, hp.n_head * hp.head_dim, hp.n_embd_kv());
    let name = |suffix: &str| format!("blk.{i}.{suffix}");
    Ok(AttentionWeights {
        attn_norm: binder.require(&name("attn_norm.weight"), &[n_embd], WeightUse::Vector)?,
        wq: binder.require(&name("attn_q.weight"), &[n_embd, n_q], WeightUse::Matrix)?,
        wk: binder.require(&name("attn_k.weight"), &[n_embd, n_kv], WeightUse::Matrix)?,
        wv: binder.require(&name("attn_v.weight"), &[n_embd, n_kv], WeightUse::Matrix)?,
        wo: binder.require(
            &name("attn_output.weight"),
            &[n_q, n_embd],
            WeightUse::Matrix,
        )?,
        q_norm: binder.require(
            &name("attn_q_norm.weight"),
            &[hp.head_dim],
            WeightUse::Vector,
        )?,
        k_norm: binder.require(
            &name("attn_k_norm.weight"),
            &[hp.head_dim],
            WeightUse::Vector,
        )?,
    })
}

/// Binds the embeddings, the final norm and the output projection (the embeddings when tied):
/// `(token_embd, output_norm, output)`.
pub(super) fn bind_ends(
    binder: &mut WeightBinder<'_>,
    hp: &Hyperparameters,
) -> Result<(WeightId, WeightId, WeightId), LoadError> {
    let (n_embd, n_vocab) = (hp.n_embd, hp.n_vocab);
    let token_embd = binder.require(
        "token_embd.weight",
        &[n_embd, n_vocab],
        WeightUse::Embedding,
    )?;
    let output_norm = binder.require("output_norm.weight", &[n_embd], WeightUse::Vector)?;
    let output = match binder.optional("output.weight", &[n_embd, n_vocab], WeightUse::Matrix)? {
        Some(output) => output,
        // Tied embeddings: the output projection is the embedding matrix.
        None => binder.require(
            "token_embd.weight",
            &[n_embd, n_vocab],
            WeightUse::Embedding,
        )?,
    };
    Ok((token_embd, output_norm, output))
}

/// The attention sub-block of layer `layer_index` on the residual stream `x` `[n_embd, n_tokens]`:
/// pre-norm, projections, QK-norm, RoPE, attention over the cache and the output projection.
/// Returns the projection `[n_embd, n_tokens]` (before the residual connection).
#[allow(clippy::too_many_arguments)]
pub(super) fn attention_sublayer<'a>(
    ctx: &'a Context,
    graph: &mut Graph<'a>,
    cfg: &DecoderConfig,
    ids: &AttentionWeights,
    w: &WeightTensors<'a>,
    cache: &KvTensors<'a>,
    batch: &BatchInputs<'a>,
    layer_index: usize,
    x: Tensor<'a>,
) -> Tensor<'a> {
    let (hp, eps) = (&cfg.hp, cfg.rms_eps);
    let n_tokens = batch.n_tokens as i64;
    let (head_dim, n_head, n_head_kv) = (hp.head_dim as i64, hp.n_head as i64, hp.n_head_kv as i64);

    // Pre-norm: h = rms_norm(x) * attn_norm. [n_embd, n_tokens]
    let h = blocks::rms_norm(ctx, x, w.get(ids.attn_norm), eps);

    // Project to queries, keys and values, split into heads.
    let q = ctx.mul_mat(w.get(ids.wq), h); // [n_head*head_dim, n_tokens]
    let k = ctx.mul_mat(w.get(ids.wk), h); // [n_head_kv*head_dim, n_tokens]
    let v = ctx.mul_mat(w.get(ids.wv), h); // [n_head_kv*head_dim, n_tokens]
    let q = ctx.reshape_3d(q, head_dim, n_head, n_tokens);
    let k = ctx.reshape_3d(k, head_dim, n_head_kv, n_tokens);

    // QK-norm: every query and key head RMS-normed on its own.
    let q = blocks::per_head_rms_norm(ctx, q, w.get(ids.q_norm), eps); // [head_dim, n_head, n_tokens]
    let k = blocks::per_head_rms_norm(ctx, k, w.get(ids.k_norm), eps); // [head_dim, n_head_kv, n_tokens]

    // Rotate queries and keys by their positions.
    let q = ctx.rope_ext(q, batch.positions, &cfg.rope);
    let k = ctx.rope_ext(k, batch.positions, &cfg.rope);

    // Cache update and causal attention, scores scaled by 1/sqrt(head_dim).
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
        1.0 / (hp.head_dim as f32).sqrt(),
    ); // [n_head*head_dim, n_tokens]

    // Output projection. [n_embd, n_tokens]
    ctx.mul_mat(w.get(ids.wo), attended)
}

/// One Qwen3 layer: attention and a SwiGLU feed-forward network.
#[derive(Clone, Debug)]
struct Qwen3Layer {
    attention: AttentionWeights,
    /// RMS-norm weight before the FFN, `[n_embd]`.
    ffn_norm: WeightId,
    /// Gate projection `[n_embd, n_ff]`.
    ffn_gate: WeightId,
    /// Up projection `[n_embd, n_ff]`.
    ffn_up: WeightId,
    /// Down projection `[n_ff, n_embd]`.
    ffn_down: WeightId,
}

/// A loaded Qwen3 decoder.
struct Qwen3 {
    config: DecoderConfig,
    token_embd: WeightId,
    layers: Vec<Qwen3Layer>,
    output_norm: WeightId,
    output: WeightId,
}

/// Reads `qwen3.*` hyperparameters and binds the weights.
pub(super) fn load(binder: &mut WeightBinder<'_>) -> Result<Box<dyn Architecture>, LoadError> {
    let config = blocks::read_decoder_config(binder.file(), "qwen3", ROPE_TYPE_NEOX)?;
    let hp = &config.hp;
    let (n_embd, n_ff) = (hp.n_embd, hp.n_ff);
    let (token_embd, output_norm, output) = bind_ends(binder, hp)?;
    let mut layers = Vec::with_capacity(hp.n_layer);
    for i in 0..hp.n_layer {
        let name = |suffix: &str| format!("blk.{i}.{suffix}");
        layers.push(Qwen3Layer {
            attention: bind_attention(binder, hp, i)?,
            ffn_norm: binder.require(&name("ffn_norm.weight"), &[n_embd], WeightUse::Vector)?,
            ffn_gate: binder.require(
                &name("ffn_gate.weight"),
                &[n_embd, n_ff],
                WeightUse::Matrix,
            )?,
            ffn_up: binder.require(&name("ffn_up.weight"), &[n_embd, n_ff], WeightUse::Matrix)?,
            ffn_down: binder.require(
                &name("ffn_down.weight"),
                &[n_ff, n_embd],
                WeightUse::Matrix,
            )?,
        });
    }
    Ok(Box::new(Qwen3 {
        config,
        token_embd,
        layers,
        output_norm,
        output,
    }))
}

impl Architecture for Qwen3 {
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
        let eps = self.config.rms_eps;

        // Look up the token embeddings: [n_embd, n_tokens].
        let mut x = ctx.get_rows(w.get(self.token_embd), batch.tokens);

        for (layer_index, layer) in self.layers.iter().enumerate() {
            // Attention sub-block (pre-norm, QK-norm, RoPE). [n_embd, n_tokens]
            let mut projected = attention_sublayer(
                ctx,
                graph,
                &self.config,
                &layer.attention,
                w,
                cache,
                batch,
                layer_index,
                x,
            );
            if layer_index + 1 == self.layers.len() {
                // Last layer: only the rows whose logits are wanted go on. [n_embd, n_outputs]
                projected = ctx.get_rows(projected, batch.output_rows);
                x = ctx.get_rows(x, batch.output_rows);
            }
            // Residual connection.
            let x_attn = ctx.add(x, projected);

            // Feed-forward sub-block: pre-norm, SwiGLU, residual.
            let h = blocks::rms_norm(ctx, x_attn, w.get(layer.ffn_norm), eps);
            let ffn = blocks::swiglu_ffn(
                ctx,
                h,
                w.get(layer.ffn_gate),
                w.get(layer.ffn_up),
                w.get(layer.ffn_down),
            );
            x = ctx.add(x_attn, ffn); // [n_embd, n_tokens]
        }

        // Final norm and output projection of the selected rows. [n_vocab, n_outputs]
        let normalized = blocks::rms_norm(ctx, x, w.get(self.output_norm), eps);
        ctx.mul_mat(w.get(self.output), normalized)
    }

    fn position_shift(&self) -> PositionShift {
        PositionShift::for_rope(&self.config.rope, self.config.hp.n_layer)
    }
}
