//! The `phi3` architecture (Phi-3 / Phi-3.5 mini and medium, Phi-4 mini): a pre-norm RMS-norm
//! decoder with one fused query/key/value projection (`attn_qkv`, queries then keys then values;
//! separate `attn_q`/`attn_k`/`attn_v` are accepted too), NeoX-style RoPE, queries scaled by
//! `1/sqrt(head_dim)`, and one fused gate/up projection (`ffn_up`, `2 * n_ff` rows: the gate's,
//! then the up projection's) feeding a SwiGLU.
//!
//! LongRoPE (the 128k-context models): `rope_factors_short` / `rope_factors_long` divide the
//! rotation frequencies, and `rope.scaling.attn_factor` scales the rotated values. llama.cpp picks
//! the long factors only when a sequence's context exceeds `rope.scaling.original_context_length`;
//! lmrs always uses the short ones, which is the same for contexts up to that length (4096 on the
//! Phi-3 models), and longer contexts are not LongRoPE's. Rotations with factors or an attention
//! factor cannot move cached keys ([`PositionShift::Unsupported`]).
//!
//! `attention.sliding_window` is ignored, as llama.cpp ignores it for Phi-3 (its conversion does
//! not say which layers slide).

use ggml_sys::{Context, Graph, Tensor, ROPE_TYPE_NEOX};

use crate::error::LoadError;
use crate::hparams::{invalid, read_f32_or, Hyperparameters};
use crate::kv_cache::KvTensors;
use crate::models::architecture::{Architecture, BatchInputs, PositionShift};
use crate::models::blocks::{self, DecoderConfig};
use crate::weights::{WeightBinder, WeightId, WeightTensors, WeightUse};

/// Metadata prefix and `general.architecture` name.
const ARCH: &str = "phi3";

/// How a layer projects to queries, keys and values.
#[derive(Clone, Debug)]
enum QkvWeights {
    /// One `[n_embd, n_q + 2 * n_kv]` projection.
    Fused(WeightId),
    /// Separate projections `(q, k, v)`.
    Separate(WeightId, WeightId, WeightId),
}

/// One Phi-3 layer.
#[derive(Clone, Debug)]
struct Phi3Layer {
    /// RMS-norm weight before attention, `[n_embd]`.
    attn_norm: WeightId,
    qkv: QkvWeights,
    /// Output projection `[n_q, n_embd]`.
    wo: WeightId,
    /// RMS-norm weight before the FFN, `[n_embd]`.
    ffn_norm: WeightId,
    /// Fused gate and up projections `[n_embd, 2 * n_ff]`.
    ffn_gate_up: WeightId,
    /// Down projection `[n_ff, n_embd]`.
    ffn_down: WeightId,
}

/// A loaded Phi-3 decoder.
struct Phi3 {
    config: DecoderConfig,
    token_embd: WeightId,
    layers: Vec<Phi3Layer>,
    output_norm: WeightId,
    output: WeightId,
    /// LongRoPE's short frequency factors, `[rope_dims / 2]`, when the model has them.
    rope_factors: Option<WeightId>,
}

/// Reads `phi3.*` hyperparameters and binds the weights.
pub(super) fn load(binder: &mut WeightBinder<'_>) -> Result<Box<dyn Architecture>, LoadError> {
    let file = binder.file();
    let mut config = blocks::read_decoder_config(file, ARCH, ROPE_TYPE_NEOX)?;
    let attn_factor = read_f32_or(file, ARCH, "rope.scaling.attn_factor", 1.0)?;
    if !(attn_factor > 0.0 && attn_factor.is_normal()) {
        return Err(invalid(
            "phi3.rope.scaling.attn_factor",
            attn_factor,
            "must be positive",
        ));
    }
    config.rope.attn_factor = attn_factor;
    let hp = &config.hp;
    let (n_embd, n_ff, n_vocab) = (hp.n_embd, hp.n_ff, hp.n_vocab);
    let (n_q, n_kv) = (hp.n_head * hp.head_dim, hp.n_embd_kv());

    let token_embd = binder.require(
        "token_embd.weight",
        &[n_embd, n_vocab],
        WeightUse::Embedding,
    )?;
    let mut layers = Vec::with_capacity(hp.n_layer);
    for i in 0..hp.n_layer {
        let name = |suffix: &str| format!("blk.{i}.{suffix}");
        let qkv = match binder.optional(
            &name("attn_qkv.weight"),
            &[n_embd, n_q + 2 * n_kv],
            WeightUse::Matrix,
        )? {
            Some(fused) => QkvWeights::Fused(fused),
            None => QkvWeights::Separate(
                binder.require(&name("attn_q.weight"), &[n_embd, n_q], WeightUse::Matrix)?,
                binder.require(&name("attn_k.weight"), &[n_embd, n_kv], WeightUse::Matrix)?,
                binder.require(&name("attn_v.weight"), &[n_embd, n_kv], WeightUse::Matrix)?,
            ),
        };
        layers.push(Phi3Layer {
            attn_norm: binder.require(&name("attn_norm.weight"), &[n_embd], WeightUse::Vector)?,
            qkv,
            wo: binder.require(
                &name("attn_output.weight"),
                &[n_q, n_embd],
                WeightUse::Matrix,
            )?,
            ffn_norm: binder.require(&name("ffn_norm.weight"), &[n_embd], WeightUse::Vector)?,
            ffn_gate_up: binder.require(
                &name("ffn_up.weight"),
                &[n_embd, 2 * n_ff],
                WeightUse::Matrix,
            )?,
            ffn_down: binder.require(
                &name("ffn_down.weight"),
                &[n_ff, n_embd],
                WeightUse::Matrix,
            )?,
        });
    }
    let output_norm = binder.require("output_norm.weight", &[n_embd], WeightUse::Vector)?;
    let output = match binder.optional("output.weight", &[n_embd, n_vocab], WeightUse::Matrix)? {
        Some(output) => output,
        // Tied embeddings (Phi-4 mini): the output projection is the embedding matrix.
        None => binder.require(
            "token_embd.weight",
            &[n_embd, n_vocab],
            WeightUse::Embedding,
        )?,
    };
    let n_pairs = config.rope.n_dims as usize / 2;
    let rope_factors =
        binder.optional("rope_factors_short.weight", &[n_pairs], WeightUse::Vector)?;
    Ok(Box::new(Phi3 {
        config,
        token_embd,
        layers,
        output_norm,
        output,
        rope_factors,
    }))
}

impl Architecture for Phi3 {
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
        let cfg = &self.config;
        let (hp, eps) = (&cfg.hp, cfg.rms_eps);
        let n_tokens = batch.n_tokens as i64;
        let (head_dim, n_head, n_head_kv) =
            (hp.head_dim as i64, hp.n_head as i64, hp.n_head_kv as i64);
        let (n_q, n_kv) = (n_head * head_dim, n_head_kv * head_dim);
        let rope_factors = self.rope_factors.map(|id| w.get(id));

        // Look up the token embeddings: [n_embd, n_tokens].
        let mut x = ctx.get_rows(w.get(self.token_embd), batch.tokens);

        for (layer_index, layer) in self.layers.iter().enumerate() {
            // Attention sub-block, pre-norm: h = rms_norm(x) * attn_norm. [n_embd, n_tokens]
            let h = blocks::rms_norm(ctx, x, w.get(layer.attn_norm), eps);

            // Project to queries, keys and values, split into heads.
            let (q, k, v) = match layer.qkv {
                QkvWeights::Fused(wqkv) => split_qkv(ctx, ctx.mul_mat(w.get(wqkv), h), n_q, n_kv),
                QkvWeights::Separate(wq, wk, wv) => (
                    ctx.mul_mat(w.get(wq), h),
                    ctx.mul_mat(w.get(wk), h),
                    ctx.mul_mat(w.get(wv), h),
                ),
            }; // [n_q, n_tokens], [n_kv, n_tokens], [n_kv, n_tokens]
            let q = ctx.reshape_3d(q, head_dim, n_head, n_tokens);
            let k = ctx.reshape_3d(k, head_dim, n_head_kv, n_tokens);

            // Rotate by position (with LongRoPE's factors when present), then scale the queries.
            let q = ctx.rope_ext_with_factors(q, batch.positions, rope_factors, &cfg.rope);
            let k = ctx.rope_ext_with_factors(k, batch.positions, rope_factors, &cfg.rope);
            let q = ctx.scale(q, 1.0 / (hp.head_dim as f32).sqrt()); // [head_dim, n_head, n_tokens]

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
            ); // [n_q, n_tokens]

            // Output projection and residual connection.
            let mut projected = ctx.mul_mat(w.get(layer.wo), attended); // [n_embd, n_tokens]
            if layer_index + 1 == self.layers.len() {
                // Last layer: only the rows whose logits are wanted go on. [n_embd, n_outputs]
                projected = ctx.get_rows(projected, batch.output_rows);
                x = ctx.get_rows(x, batch.output_rows);
            }
            let x_attn = ctx.add(projected, x);

            // Feed-forward sub-block: pre-norm, fused gate/up projection, SwiGLU, down, residual.
            let h = blocks::rms_norm(ctx, x_attn, w.get(layer.ffn_norm), eps);
            let gate_up = ctx.mul_mat(w.get(layer.ffn_gate_up), h); // [2*n_ff, n]
            let activated = ctx.swiglu(gate_up); // [n_ff, n]
            let ffn = ctx.mul_mat(w.get(layer.ffn_down), activated); // [n_embd, n]
            x = ctx.add(x_attn, ffn); // [n_embd, n_tokens]
        }

        // Final norm and output projection of the selected rows. [n_vocab, n_outputs]
        let normalized = blocks::rms_norm(ctx, x, w.get(self.output_norm), eps);
        ctx.mul_mat(w.get(self.output), normalized)
    }

    fn position_shift(&self) -> PositionShift {
        if self.rope_factors.is_some() {
            // Moving a key would need the factors in the shift's rotation too.
            return PositionShift::Unsupported;
        }
        PositionShift::for_rope(&self.config.rope, self.config.hp.n_layer)
    }
}

/// Splits the fused projection `[n_q + 2 * n_kv, n]` into queries `[n_q, n]`, keys `[n_kv, n]` and
/// values `[n_kv, n]` (contiguous copies of row ranges).
fn split_qkv<'a>(
    ctx: &'a Context,
    qkv: Tensor<'a>,
    n_q: i64,
    n_kv: i64,
) -> (Tensor<'a>, Tensor<'a>, Tensor<'a>) {
    let n = qkv.ne()[1];
    let [element, row, ..] = qkv.nb();
    let part =
        |rows: i64, first: i64| ctx.cont(ctx.view_2d(qkv, rows, n, row, first as usize * element));
    (part(n_q, 0), part(n_kv, n_q), part(n_kv, n_q + n_kv))
}
