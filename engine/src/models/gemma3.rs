//! The `gemma3` architecture (Gemma 3 text models, e.g. Gemma 3 270M): the llama decoder with
//! embeddings scaled by `sqrt(n_embd)`, sandwich norms (RMS norms before and after both attention and
//! the feed-forward network), per-head RMS norms of queries and keys before NeoX-style RoPE (QK-norm),
//! a GELU-gated feed-forward network, and local layers with sliding-window attention interleaved
//! with global ones. Local and global layers rotate with different RoPE bases.
//!
//! The GGUF conversion already stores Gemma's `(1 + w)` norm weights as plain multipliers, so every
//! norm is [`blocks::rms_norm`]. The KV cache keeps every position in every layer; the window is
//! only a second causal mask ([`BatchInputs::mask_swa`]).

use ggml_sys::{Context, Graph, RopeParams, Tensor, ROPE_TYPE_NEOX};

use crate::error::LoadError;
use crate::gguf::{GgufFile, MetadataArray, MetadataValue};
use crate::hparams::{invalid, read_f32_or, Hyperparameters};
use crate::kv_cache::KvTensors;
use crate::models::architecture::{Architecture, BatchInputs, PositionShift};
use crate::models::blocks::{self, DecoderConfig, DecoderWeights};
use crate::weights::{WeightBinder, WeightId, WeightTensors, WeightUse};

/// Metadata prefix and `general.architecture` name.
const ARCH: &str = "gemma3";

/// Without `sliding_window_pattern`, every sixth layer is global (llama.cpp's default for gemma3).
const DEFAULT_PATTERN: u64 = 6;

/// RoPE base of the local layers unless `rope.freq_base_swa` says otherwise (llama.cpp's default).
const DEFAULT_LOCAL_FREQ_BASE: f32 = 10_000.0;

/// A loaded Gemma 3 decoder.
struct Gemma3 {
    /// Sizes, norm epsilon and the global layers' RoPE.
    config: DecoderConfig,
    /// RoPE of the local (sliding-window) layers.
    rope_local: RopeParams,
    /// Window of the local layers; `None` when the model has none (every layer global).
    sliding_window: Option<usize>,
    /// Per layer, first to last: whether it is a local (sliding-window) layer.
    is_local: Vec<bool>,
    /// Queries are multiplied by this before attention (which then scales scores by 1).
    query_scale: f32,
    /// Embeddings are multiplied by this: `sqrt(n_embd)`.
    embedding_scale: f32,
    /// `cap * tanh(logits / cap)` on the output when set (`final_logit_softcapping`).
    final_logit_softcap: Option<f32>,
    /// The weights every llama-style decoder has.
    weights: DecoderWeights,
    /// Gemma's extra per-layer norms.
    norms: Vec<Gemma3Norms>,
}

/// The per-layer norms Gemma 3 adds to the llama decoder.
#[derive(Clone, Debug)]
struct Gemma3Norms {
    /// QK-norm of queries, `[head_dim]`.
    attn_q_norm: WeightId,
    /// QK-norm of keys, `[head_dim]`.
    attn_k_norm: WeightId,
    /// Norm of the attention output before the residual, `[n_embd]`.
    attn_post_norm: WeightId,
    /// Norm of the feed-forward output before the residual, `[n_embd]`.
    ffn_post_norm: WeightId,
}

/// Reads `gemma3.*` hyperparameters and binds the weights.
pub(super) fn load(binder: &mut WeightBinder<'_>) -> Result<Box<dyn Architecture>, LoadError> {
    let file = binder.file();
    let config = blocks::read_decoder_config(file, ARCH, ROPE_TYPE_NEOX)?;
    let hp = &config.hp;
    let (sliding_window, is_local) =
        read_sliding_window(file, ARCH, hp.n_layer, 0, DEFAULT_PATTERN)?;

    // Local layers rotate with their own base and never scale positions (llama.cpp's
    // `rope_freq_scale_train_swa` is 1); global ones as `rope.*` says.
    let local_base = read_f32_or(file, ARCH, "rope.freq_base_swa", DEFAULT_LOCAL_FREQ_BASE)?;
    if local_base <= 1.0 {
        return Err(invalid(
            "gemma3.rope.freq_base_swa",
            local_base,
            "must be greater than 1",
        ));
    }
    let rope_local = RopeParams {
        freq_base: local_base,
        freq_scale: 1.0,
        ..config.rope
    };

    // Gemma scales queries by query_pre_attn_scalar^-1/2, which the GGUF does not carry: as in
    // llama.cpp, it is the head width except for the 27B model (62 layers), where it is
    // n_embd / n_head.
    let query_scale = if hp.n_layer == 62 {
        1.0 / ((hp.n_embd / hp.n_head) as f32).sqrt()
    } else {
        1.0 / (hp.head_dim as f32).sqrt()
    };

    let softcap = read_f32_or(file, ARCH, "final_logit_softcapping", 0.0)?;
    let final_logit_softcap = match softcap {
        0.0 => None,
        cap if cap > 0.0 && cap.is_normal() => Some(cap),
        cap => {
            return Err(invalid(
                "gemma3.final_logit_softcapping",
                cap,
                "must be positive (or 0 for none)",
            ))
        }
    };

    let weights = blocks::bind_decoder_weights(binder, hp)?;
    let mut norms = Vec::with_capacity(hp.n_layer);
    for i in 0..hp.n_layer {
        let name = |suffix: &str| format!("blk.{i}.{suffix}");
        let mut vector =
            |suffix: &str, len: usize| binder.require(&name(suffix), &[len], WeightUse::Vector);
        norms.push(Gemma3Norms {
            attn_q_norm: vector("attn_q_norm.weight", hp.head_dim)?,
            attn_k_norm: vector("attn_k_norm.weight", hp.head_dim)?,
            attn_post_norm: vector("post_attention_norm.weight", hp.n_embd)?,
            ffn_post_norm: vector("post_ffw_norm.weight", hp.n_embd)?,
        });
    }

    Ok(Box::new(Gemma3 {
        embedding_scale: (hp.n_embd as f32).sqrt(),
        config,
        rope_local,
        sliding_window,
        is_local,
        query_scale,
        final_logit_softcap,
        weights,
        norms,
    }))
}

/// The window of the local layers and which layers are local, for Gemma 2 and 3 (`arch`).
/// `attention.sliding_window` (`default_window` when absent) 0: no local layers. Otherwise
/// `attention.sliding_window_pattern` says which layers are local: either one flag per layer, or a
/// period `n` (default `default_period`) making every `n`-th layer global (layer `i` is local when
/// `i % n < n - 1`; `n = 0` makes every layer local), as llama.cpp reads it.
pub(super) fn read_sliding_window(
    file: &GgufFile,
    arch: &str,
    n_layer: usize,
    default_window: u64,
    default_period: u64,
) -> Result<(Option<usize>, Vec<bool>), LoadError> {
    let window_key = format!("{arch}.attention.sliding_window");
    let window = match file.get(&window_key) {
        None => default_window,
        Some(_) => file
            .get_u64(&window_key)
            .ok_or(LoadError::MissingMetadata {
                key: window_key.clone(),
                expected: "a non-negative integer",
            })?,
    };
    if window == 0 {
        return Ok((None, vec![false; n_layer]));
    }
    // A window wider than any context hides nothing; keep it representable.
    let window = usize::try_from(window).unwrap_or(usize::MAX);

    let pattern_key = format!("{arch}.attention.sliding_window_pattern");
    let is_local = match file.get(&pattern_key) {
        Some(MetadataValue::Array(MetadataArray::Bool(flags))) => {
            if flags.len() != n_layer {
                return Err(invalid(
                    &pattern_key,
                    format!("{} flags", flags.len()),
                    format!("must have one flag per layer ({n_layer})"),
                ));
            }
            flags.clone()
        }
        Some(MetadataValue::Array(_)) => {
            return Err(invalid(
                &pattern_key,
                "an array",
                "must be an array of booleans or an integer",
            ))
        }
        other => {
            let period = match other {
                None => default_period,
                Some(_) => file
                    .get_u64(&pattern_key)
                    .ok_or(LoadError::MissingMetadata {
                        key: pattern_key.clone(),
                        expected: "a non-negative integer or an array of booleans",
                    })?,
            };
            (0..n_layer as u64)
                .map(|i| period == 0 || i % period < period - 1)
                .collect()
        }
    };
    Ok((Some(window), is_local))
}

impl Architecture for Gemma3 {
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

impl Gemma3 {
    /// The RoPE parameters of `layer`: local layers have their own base.
    fn rope(&self, layer: usize) -> &RopeParams {
        if self.is_local[layer] {
            &self.rope_local
        } else {
            &self.config.rope
        }
    }

    /// The forward pass of one batch; returns logits `[n_vocab, n_outputs]`.
    fn forward<'a>(
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
        let mut x = ctx.scale(embedded, self.embedding_scale);

        for (layer_index, (layer, norms)) in ids.layers.iter().zip(&self.norms).enumerate() {
            let l = layer.tensors(w);
            let local = self.is_local[layer_index];
            let rope = self.rope(layer_index);
            // Local layers see only the last `window` positions.
            let mask = match batch.mask_swa {
                Some(mask_swa) if local => mask_swa,
                _ => batch.mask,
            };

            // Attention sub-block, pre-norm: h = rms_norm(x) * attn_norm.
            let h = blocks::rms_norm(ctx, x, l.attn_norm, eps); // [n_embd, n_tokens]

            // Project to queries, keys and values, split into heads.
            let q = blocks::linear(ctx, l.wq, h, l.bq); // [n_head*head_dim, n_tokens]
            let k = blocks::linear(ctx, l.wk, h, l.bk); // [n_head_kv*head_dim, n_tokens]
            let v = blocks::linear(ctx, l.wv, h, l.bv); // [n_head_kv*head_dim, n_tokens]
            let q = ctx.reshape_3d(q, head_dim, n_head, n_tokens);
            let k = ctx.reshape_3d(k, head_dim, n_head_kv, n_tokens);

            // QK-norm: every query and key head RMS-normed on its own.
            let q = blocks::per_head_rms_norm(ctx, q, w.get(norms.attn_q_norm), eps); // [head_dim, n_head, n_tokens]
            let k = blocks::per_head_rms_norm(ctx, k, w.get(norms.attn_k_norm), eps); // [head_dim, n_head_kv, n_tokens]

            // Rotate by position with this layer kind's base, then scale the queries.
            let q = ctx.rope_ext(q, batch.positions, rope); // [head_dim, n_head, n_tokens]
            let k = ctx.rope_ext(k, batch.positions, rope); // [head_dim, n_head_kv, n_tokens]
            let q = ctx.scale(q, self.query_scale);

            // Cache update and attention over the cache (the queries carry the scale).
            let attended = blocks::attention(
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
                1.0,
            ); // [n_head*head_dim, n_tokens]

            // Output projection.
            let mut projected = blocks::linear(ctx, l.wo, attended, l.bo); // [n_embd, n_tokens]
            if layer_index + 1 == ids.layers.len() {
                // Last layer: only the rows whose logits are wanted go on. [n_embd, n_outputs]
                projected = ctx.get_rows(projected, batch.output_rows);
                x = ctx.get_rows(x, batch.output_rows);
            }

            // Post-attention norm, then the residual connection.
            let x_attn =
                blocks::post_norm_residual(ctx, x, projected, w.get(norms.attn_post_norm), eps);

            // Feed-forward sub-block: pre-norm, GELU-gated FFN, post-norm, residual.
            let h = blocks::rms_norm(ctx, x_attn, l.ffn_norm, eps);
            let ffn = blocks::geglu_ffn(ctx, h, l.ffn_gate, l.ffn_up, l.ffn_down); // [n_embd, n]
            x = blocks::post_norm_residual(ctx, x_attn, ffn, w.get(norms.ffn_post_norm), eps);
        }

        // Final norm and output projection (the tied embeddings) of the selected rows.
        let normalized = blocks::rms_norm(ctx, x, w.get(ids.output_norm), eps);
        let logits = ctx.mul_mat(w.get(ids.output), normalized); // [n_vocab, n_outputs]

        // Soft-capping, when the model has it: cap * tanh(logits / cap).
        match self.final_logit_softcap {
            Some(cap) => ctx.scale(ctx.tanh(ctx.scale(logits, 1.0 / cap)), cap),
            None => logits,
        }
    }
}
