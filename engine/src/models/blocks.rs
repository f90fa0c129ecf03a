//! Building blocks shared by the decoder-only architectures: RMS norm, linear layers, rotary
//! embeddings, attention over the KV cache, and the gated feed-forward network.
//!
//! Shapes are written GGML-style, fastest dimension first: `[n_embd, n_tokens]` is `n_tokens` rows of
//! `n_embd` floats.

use ggml_sys::{Context, Graph, RopeParams, Tensor};

use crate::error::LoadError;
use crate::gguf::GgufFile;
use crate::hparams::{invalid, read_f32_or, read_size, read_size_opt, Hyperparameters, MAX_SIZE};
use crate::kv_cache::KvTensors;
use crate::models::architecture::BatchInputs;
use crate::weights::{WeightBinder, WeightId, WeightTensors, WeightUse};

/// Weights of one transformer layer. Biases are optional (Qwen2 has them on q, k and v).
#[derive(Clone, Debug)]
pub(super) struct LayerWeights {
    /// RMS-norm weight before attention, `[n_embd]`.
    pub attn_norm: WeightId,
    /// Query projection `[n_embd, n_head*head_dim]` and optional bias.
    pub wq: WeightId,
    /// Query bias.
    pub bq: Option<WeightId>,
    /// Key projection `[n_embd, n_head_kv*head_dim]`.
    pub wk: WeightId,
    /// Key bias.
    pub bk: Option<WeightId>,
    /// Value projection `[n_embd, n_head_kv*head_dim]`.
    pub wv: WeightId,
    /// Value bias.
    pub bv: Option<WeightId>,
    /// Attention output projection `[n_head*head_dim, n_embd]`.
    pub wo: WeightId,
    /// Output bias.
    pub bo: Option<WeightId>,
    /// RMS-norm weight before the feed-forward network, `[n_embd]`.
    pub ffn_norm: WeightId,
    /// Gate projection `[n_embd, n_ff]`.
    pub ffn_gate: WeightId,
    /// Up projection `[n_embd, n_ff]`.
    pub ffn_up: WeightId,
    /// Down projection `[n_ff, n_embd]`.
    pub ffn_down: WeightId,
}

/// Everything a llama-style decoder needs besides its weights.
#[derive(Clone, Debug)]
pub(super) struct DecoderConfig {
    /// Sizes.
    pub hp: Hyperparameters,
    /// Epsilon of the RMS norms.
    pub rms_eps: f32,
    /// Rotary embedding parameters.
    pub rope: RopeParams,
}

/// Weights of a llama-style decoder.
#[derive(Clone, Debug)]
pub(super) struct DecoderWeights {
    /// Token embeddings `[n_embd, n_vocab]`.
    pub token_embd: WeightId,
    /// Layers, first to last.
    pub layers: Vec<LayerWeights>,
    /// Final RMS-norm weight `[n_embd]`.
    pub output_norm: WeightId,
    /// Output projection `[n_embd, n_vocab]` (the token embeddings when tied).
    pub output: WeightId,
}

/// Most layers a model may have: far beyond every real model; a batch's graph grows with them.
const MAX_LAYERS: usize = 1 << 16;

/// Reads the hyperparameters every llama-style GGUF has under `{arch}.`, and rejects every value the
/// graph would hand to GGML in a form GGML asserts on (which aborts the process) or computes
/// nonsense from (NaN, infinities).
pub(super) fn read_decoder_config(
    file: &GgufFile,
    arch: &str,
    rope_mode: i32,
) -> Result<DecoderConfig, LoadError> {
    let key = |name: &str| format!("{arch}.{name}");
    let n_embd = read_size(file, arch, "embedding_length")?;
    let n_layer = read_size(file, arch, "block_count")?;
    if n_layer > MAX_LAYERS {
        return Err(invalid(
            &key("block_count"),
            n_layer,
            "must be at most 2^16",
        ));
    }
    let n_head = read_size(file, arch, "attention.head_count")?;
    let n_head_kv = read_size_opt(file, arch, "attention.head_count_kv")?.unwrap_or(n_head);
    if n_head % n_head_kv != 0 {
        // Grouped-query attention broadcasts each KV head over a whole number of query heads
        // (GGML asserts it in the attention product).
        return Err(invalid(
            &key("attention.head_count_kv"),
            n_head_kv,
            format!("must divide the head count {n_head}"),
        ));
    }
    let n_ff = read_size(file, arch, "feed_forward_length")?;
    let n_ctx_train = read_size(file, arch, "context_length")?;
    let head_dim = match read_size_opt(file, arch, "attention.key_length")? {
        Some(head_dim) => head_dim,
        None if n_embd % n_head == 0 => n_embd / n_head,
        None => {
            return Err(invalid(
                &key("attention.head_count"),
                n_head,
                format!(
                    "must divide the embedding length {n_embd} when {} is absent",
                    key("attention.key_length")
                ),
            ))
        }
    };
    if head_dim % 2 != 0 {
        // RoPE rotates pairs of values within a head.
        return Err(invalid(
            &key("attention.key_length"),
            head_dim,
            "heads must have an even width",
        ));
    }
    if let Some(value_dim) = read_size_opt(file, arch, "attention.value_length")? {
        if value_dim != head_dim {
            return Err(invalid(
                &key("attention.value_length"),
                value_dim,
                format!("must equal the key length {head_dim}"),
            ));
        }
    }
    for (name, heads) in [
        ("attention.head_count", n_head),
        ("attention.head_count_kv", n_head_kv),
    ] {
        if (heads as u64) * (head_dim as u64) > MAX_SIZE {
            return Err(invalid(
                &key(name),
                heads,
                format!("heads of width {head_dim} must be at most 2^24 wide together"),
            ));
        }
    }
    let n_vocab =
        file.tensor("token_embd.weight")
            .map(|t| t.dim(1))
            .ok_or(LoadError::MissingTensor {
                name: "token_embd.weight".into(),
            })?;
    // Token ids reach GGML as `int32_t` row indices; the output has one logit per row.
    if n_vocab == 0 || n_vocab > i32::MAX as u64 {
        return Err(invalid(
            "token_embd.weight rows",
            n_vocab,
            "the vocabulary must have between 1 and 2^31 - 1 tokens",
        ));
    }
    let n_vocab = n_vocab as usize;
    let rope_dims = read_size_opt(file, arch, "rope.dimension_count")?.unwrap_or(head_dim);
    if rope_dims > head_dim || rope_dims % 2 != 0 {
        // GGML asserts both when it computes RoPE.
        return Err(invalid(
            &key("rope.dimension_count"),
            rope_dims,
            format!("must be even and at most the head width {head_dim}"),
        ));
    }
    let freq_base = read_f32_or(file, arch, "rope.freq_base", 10_000.0)?;
    if freq_base <= 1.0 {
        // The rotation frequencies are base^(-2i/d): at a base of 1 or less they do not fall along
        // the head (and GGML's YaRN correction divides by ln(base)); NaN or infinite angles follow.
        return Err(invalid(
            &key("rope.freq_base"),
            freq_base,
            "must be greater than 1",
        ));
    }
    let mut freq_scale = 1.0;
    match file.get_str(&key("rope.scaling.type")) {
        None | Some("none") => {}
        Some("linear") => {
            let factor = read_f32_or(file, arch, "rope.scaling.factor", 1.0)?;
            // Positions are divided by the factor: it must be positive, and its inverse finite.
            if factor <= 0.0 || !(1.0 / factor).is_normal() {
                return Err(invalid(
                    &key("rope.scaling.factor"),
                    factor,
                    "must be positive with a finite, non-zero inverse",
                ));
            }
            freq_scale = 1.0 / factor;
        }
        Some(other) => {
            return Err(invalid(
                &key("rope.scaling.type"),
                other,
                "only linear RoPE scaling is supported",
            ))
        }
    }
    let rms_eps = read_f32_or(file, arch, "attention.layer_norm_rms_epsilon", 1e-5)?;
    if !rms_eps.is_normal() || rms_eps < 0.0 {
        // GGML asserts eps >= 0 when it computes the norm (a negative epsilon aborts the process);
        // a zero (or subnormal, flushed to zero) epsilon divides an all-zero row by zero, NaN.
        return Err(invalid(
            &key("attention.layer_norm_rms_epsilon"),
            rms_eps,
            "must be positive (zero divides an all-zero row by zero) and not subnormal",
        ));
    }
    let hp = Hyperparameters {
        n_vocab,
        n_ctx_train,
        n_embd,
        n_layer,
        n_head,
        n_head_kv,
        head_dim,
        n_ff,
    };
    let rope = RopeParams {
        n_dims: rope_dims as i32,
        mode: rope_mode,
        n_ctx_orig: n_ctx_train as i32,
        freq_base,
        freq_scale,
        ext_factor: 0.0,
        attn_factor: 1.0,
        beta_fast: 32.0,
        beta_slow: 1.0,
    };
    Ok(DecoderConfig { hp, rms_eps, rope })
}

/// Binds the weights of a llama-style decoder by their GGUF names. `biases` binds q/k/v/o biases when
/// present.
pub(super) fn bind_decoder_weights(
    binder: &mut WeightBinder<'_>,
    hp: &Hyperparameters,
) -> Result<DecoderWeights, LoadError> {
    let (n_embd, n_ff, n_vocab) = (hp.n_embd, hp.n_ff, hp.n_vocab);
    let n_q = hp.n_head * hp.head_dim;
    let n_kv = hp.n_embd_kv();
    let token_embd = binder.require(
        "token_embd.weight",
        &[n_embd, n_vocab],
        WeightUse::Embedding,
    )?;
    let mut layers = Vec::with_capacity(hp.n_layer);
    for i in 0..hp.n_layer {
        let name = |suffix: &str| format!("blk.{i}.{suffix}");
        layers.push(LayerWeights {
            attn_norm: binder.require(&name("attn_norm.weight"), &[n_embd], WeightUse::Vector)?,
            wq: binder.require(&name("attn_q.weight"), &[n_embd, n_q], WeightUse::Matrix)?,
            bq: binder.optional(&name("attn_q.bias"), &[n_q], WeightUse::Vector)?,
            wk: binder.require(&name("attn_k.weight"), &[n_embd, n_kv], WeightUse::Matrix)?,
            bk: binder.optional(&name("attn_k.bias"), &[n_kv], WeightUse::Vector)?,
            wv: binder.require(&name("attn_v.weight"), &[n_embd, n_kv], WeightUse::Matrix)?,
            bv: binder.optional(&name("attn_v.bias"), &[n_kv], WeightUse::Vector)?,
            wo: binder.require(
                &name("attn_output.weight"),
                &[n_q, n_embd],
                WeightUse::Matrix,
            )?,
            bo: binder.optional(&name("attn_output.bias"), &[n_embd], WeightUse::Vector)?,
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
    Ok(DecoderWeights {
        token_embd,
        layers,
        output_norm,
        output,
    })
}

/// `x / rms(x) * weight` over the embedding dimension.
pub(super) fn rms_norm<'a>(
    ctx: &'a Context,
    x: Tensor<'a>,
    weight: Tensor<'a>,
    eps: f32,
) -> Tensor<'a> {
    let normalized = ctx.rms_norm(x, eps);
    ctx.mul(normalized, weight)
}

/// `weight @ x (+ bias)`: `[n_in, n_tokens]` to `[n_out, n_tokens]`.
pub(super) fn linear<'a>(
    ctx: &'a Context,
    weight: Tensor<'a>,
    x: Tensor<'a>,
    bias: Option<Tensor<'a>>,
) -> Tensor<'a> {
    let product = ctx.mul_mat(weight, x);
    match bias {
        Some(bias) => ctx.add(product, bias),
        None => product,
    }
}

/// The gated feed-forward network: `down @ (silu(gate @ x) * (up @ x))`.
pub(super) fn swiglu_ffn<'a>(
    ctx: &'a Context,
    x: Tensor<'a>,
    gate: Tensor<'a>,
    up: Tensor<'a>,
    down: Tensor<'a>,
) -> Tensor<'a> {
    let gated = ctx.mul_mat(gate, x); // [n_ff, n_tokens]
    let lifted = ctx.mul_mat(up, x); // [n_ff, n_tokens]
    let activated = ctx.swiglu_split(gated, lifted); // [n_ff, n_tokens]
    ctx.mul_mat(down, activated) // [n_embd, n_tokens]
}

/// The GELU-gated feed-forward network (Gemma): `down @ (gelu(gate @ x) * (up @ x))`, GELU with the
/// tanh approximation.
pub(super) fn geglu_ffn<'a>(
    ctx: &'a Context,
    x: Tensor<'a>,
    gate: Tensor<'a>,
    up: Tensor<'a>,
    down: Tensor<'a>,
) -> Tensor<'a> {
    let gated = ctx.mul_mat(gate, x); // [n_ff, n_tokens]
    let lifted = ctx.mul_mat(up, x); // [n_ff, n_tokens]
    let activated = ctx.geglu_split(gated, lifted); // [n_ff, n_tokens]
    ctx.mul_mat(down, activated) // [n_embd, n_tokens]
}

/// QK-norm: RMS norm of every head on its own, `x` `[head_dim, n_heads, n_tokens]` and `weight`
/// `[head_dim]` (shared by the heads). Returns the same shape.
pub(super) fn per_head_rms_norm<'a>(
    ctx: &'a Context,
    x: Tensor<'a>,
    weight: Tensor<'a>,
    eps: f32,
) -> Tensor<'a> {
    // GGML normalises over ne0, which is one head here.
    rms_norm(ctx, x, weight, eps)
}

/// The residual connection of a sandwich-norm block (Gemma 2 and 3): the sub-block's output is
/// RMS-normed again before it is added, `residual + rms_norm(output) * post_norm`, `[n_embd, n]`.
pub(super) fn post_norm_residual<'a>(
    ctx: &'a Context,
    residual: Tensor<'a>,
    output: Tensor<'a>,
    post_norm: Tensor<'a>,
    eps: f32,
) -> Tensor<'a> {
    let normalized = rms_norm(ctx, output, post_norm, eps);
    ctx.add(normalized, residual)
}

/// How attention scores are made from `q k^T`: scaled by `kq_scale`, optionally soft-capped
/// (Gemma 2: `cap * tanh(scores / cap)` before the scale, as llama.cpp does), and optionally
/// biased per head by ALiBi slopes (BLOOM, MPT, Refact: head `h` adds `slope_h * mask`, the
/// slopes GGML's geometric sequence from `max_bias`; the mask then holds minus the distances,
/// [`Architecture::uses_alibi`](super::Architecture::uses_alibi)).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Scores {
    /// Factor of `q k^T`.
    pub(super) kq_scale: f32,
    /// ALiBi's maximum bias (0: no bias).
    pub(super) max_bias: f32,
    /// Soft cap of the scores (None: not capped).
    pub(super) softcap: Option<f32>,
}

impl Scores {
    /// `q k^T * kq_scale`, no bias, no cap.
    pub(super) fn scaled(kq_scale: f32) -> Self {
        Self {
            kq_scale,
            max_bias: 0.0,
            softcap: None,
        }
    }
}

/// Self-attention of the batch over the KV cache of layer `layer`, with plain scaled scores
/// ([`attention_with`] and [`Scores::scaled`]).
#[allow(clippy::too_many_arguments)]
pub(super) fn attention<'a>(
    ctx: &'a Context,
    graph: &mut Graph<'a>,
    hp: &Hyperparameters,
    cache: &KvTensors<'a>,
    layer: usize,
    batch: &BatchInputs<'a>,
    mask: Tensor<'a>,
    q: Tensor<'a>,
    k: Tensor<'a>,
    v: Tensor<'a>,
    kq_scale: f32,
) -> Tensor<'a> {
    attention_with(
        ctx,
        graph,
        hp,
        cache,
        layer,
        batch,
        mask,
        q,
        k,
        v,
        Scores::scaled(kq_scale),
    )
}

/// Self-attention of the batch over the KV cache of layer `layer`.
///
/// `q` is `[head_dim, n_head, n_tokens]`, `k` `[head_dim, n_head_kv, n_tokens]` (both already
/// rotated), `v` `[n_head_kv*head_dim, n_tokens]`. Writes the batch's keys and values into the cache
/// rows `batch.cache_rows` (the transposed values: columns `n_past..n_past+n_tokens`), then attends
/// over rows `0..n_kv` with `scores` (see [`Scores`]), `mask` (`[n_kv, n_tokens]`, one of the
/// batch's masks) hiding rows a token may not see. Returns `[n_head*head_dim, n_tokens]`.
#[allow(clippy::too_many_arguments)]
pub(super) fn attention_with<'a>(
    ctx: &'a Context,
    graph: &mut Graph<'a>,
    hp: &Hyperparameters,
    cache: &KvTensors<'a>,
    layer: usize,
    batch: &BatchInputs<'a>,
    mask: Tensor<'a>,
    q: Tensor<'a>,
    k: Tensor<'a>,
    v: Tensor<'a>,
    scores: Scores,
) -> Tensor<'a> {
    let Scores {
        kq_scale,
        max_bias,
        softcap,
    } = scores;
    let (n_tokens, n_past, n_kv) = (batch.n_tokens as i64, batch.n_past, batch.n_kv as i64);
    let (head_dim, n_head_kv, n_embd_kv) = (
        hp.head_dim as i64,
        hp.n_head_kv as i64,
        hp.n_embd_kv() as i64,
    );

    // Write this batch's keys into the cache rows of their positions: row p holds position p.
    let (k_cache, v_cache) = (cache.keys(layer), cache.values(layer));
    let k_row_bytes = k_cache.nb()[1]; // keys (and flash-attention values): [n_embd_kv, n_ctx]
    let k = ctx.reshape_2d(k, n_embd_kv, n_tokens);
    graph.build_forward(ctx.set_rows(cache.writable(k_cache), k, batch.cache_rows));

    // The first n_kv rows of a cache matrix [n_embd_kv, n_ctx], per head: [head_dim, n_kv, n_head_kv].
    let element_bytes = k_cache.nb()[0];
    let head_bytes = element_bytes * head_dim as usize;
    let rows_per_head = |matrix| {
        let rows = ctx.view_3d(
            matrix,
            head_dim,
            n_head_kv,
            n_kv,
            head_bytes,
            k_row_bytes,
            0,
        );
        ctx.permute(rows, [0, 2, 1, 3])
    };
    let keys = rows_per_head(k_cache);
    let queries = ctx.permute(q, [0, 2, 1, 3]); // [head_dim, n_tokens, n_head]

    if batch.flash_attention {
        // Values stored like keys, [n_embd_kv, n_ctx]; fused softmax(q k^T * kq_scale + mask) v.
        graph.build_forward(ctx.set_rows(cache.writable(v_cache), v, batch.cache_rows));
        let values = rows_per_head(v_cache); // [head_dim, n_kv, n_head_kv]
        let attended = ctx.flash_attn_ext_with(
            queries,
            keys,
            values,
            mask,
            kq_scale,
            max_bias,
            softcap.unwrap_or(0.0),
        ); // [head_dim, n_head, n_tokens]
        return ctx.reshape_2d(attended, head_dim * hp.n_head as i64, n_tokens);
    }

    // Values stored transposed, [n_ctx, n_embd_kv]: column p holds position p, so the weighted sum
    // over positions is a plain matrix product.
    let v_column_bytes = v_cache.nb()[1];
    let v_columns = ctx.view_2d(
        v_cache,
        n_tokens,
        n_embd_kv,
        v_column_bytes,
        n_past * element_bytes,
    );
    graph.build_forward(ctx.cpy(ctx.transpose(v), cache.writable(v_columns)));
    let values = ctx.view_3d(
        v_cache,
        n_kv,
        head_dim,
        n_head_kv,
        v_column_bytes,
        v_column_bytes * head_dim as usize,
        0,
    ); // [n_kv, head_dim, n_head_kv]

    // Scores [n_kv, n_tokens, n_head] (query heads broadcast over KV heads), masked softmax, then
    // the weighted sum of values [head_dim, n_tokens, n_head], heads merged per token.
    let mut scores = ctx.mul_mat(keys, queries);
    if let Some(cap) = softcap {
        scores = ctx.scale(ctx.tanh(ctx.scale(scores, 1.0 / cap)), cap);
    }
    let weights = if max_bias > 0.0 {
        ctx.soft_max_ext_alibi(scores, mask, kq_scale, max_bias)
    } else {
        ctx.soft_max_ext(scores, Some(mask), kq_scale)
    };
    let mixed = ctx.mul_mat(values, weights);
    let merged = ctx.cont(ctx.permute(mixed, [0, 2, 1, 3])); // [head_dim, n_head, n_tokens]
    ctx.reshape_2d(merged, head_dim * hp.n_head as i64, n_tokens)
}

/// Convenience: the weights of `layer` as tensors.
pub(super) struct LayerTensors<'a> {
    /// See [`LayerWeights`].
    pub attn_norm: Tensor<'a>,
    /// Query projection.
    pub wq: Tensor<'a>,
    /// Query bias.
    pub bq: Option<Tensor<'a>>,
    /// Key projection.
    pub wk: Tensor<'a>,
    /// Key bias.
    pub bk: Option<Tensor<'a>>,
    /// Value projection.
    pub wv: Tensor<'a>,
    /// Value bias.
    pub bv: Option<Tensor<'a>>,
    /// Output projection.
    pub wo: Tensor<'a>,
    /// Output bias.
    pub bo: Option<Tensor<'a>>,
    /// Norm before the FFN.
    pub ffn_norm: Tensor<'a>,
    /// Gate projection.
    pub ffn_gate: Tensor<'a>,
    /// Up projection.
    pub ffn_up: Tensor<'a>,
    /// Down projection.
    pub ffn_down: Tensor<'a>,
}

impl LayerWeights {
    /// Resolves the ids to tensors of one graph.
    pub(super) fn tensors<'a>(&self, w: &WeightTensors<'a>) -> LayerTensors<'a> {
        LayerTensors {
            attn_norm: w.get(self.attn_norm),
            wq: w.get(self.wq),
            bq: self.bq.map(|id| w.get(id)),
            wk: w.get(self.wk),
            bk: self.bk.map(|id| w.get(id)),
            wv: w.get(self.wv),
            bv: self.bv.map(|id| w.get(id)),
            wo: w.get(self.wo),
            bo: self.bo.map(|id| w.get(id)),
            ffn_norm: w.get(self.ffn_norm),
            ffn_gate: w.get(self.ffn_gate),
            ffn_up: w.get(self.ffn_up),
            ffn_down: w.get(self.ffn_down),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The LayerNorm family (GPT-2, StarCoder, GPT-NeoX, BLOOM, MPT, StarCoder2, StableLM): layer norms
// with bias, fused QKV projections, plain GELU feed-forward networks with biases, learned absolute
// positions and ALiBi.
// ---------------------------------------------------------------------------------------------

/// Whether a group of tensors must be in the file, may be, or is never read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Need {
    /// Missing is an error.
    Required,
    /// Bound when present.
    Optional,
    /// Not bound (the architecture does not use it).
    Absent,
}

/// Binds `name` as `need` says.
pub(super) fn bind_as(
    binder: &mut WeightBinder<'_>,
    need: Need,
    name: &str,
    dims: &[usize],
    usage: WeightUse,
) -> Result<Option<WeightId>, LoadError> {
    match need {
        Need::Required => binder.require(name, dims, usage).map(Some),
        Need::Optional => binder.optional(name, dims, usage),
        Need::Absent => Ok(None),
    }
}

/// A layer norm's weight `[n]` and optional bias `[n]`.
#[derive(Clone, Copy, Debug)]
pub(super) struct LayerNormWeights {
    /// Multiplies the normalized values.
    pub weight: WeightId,
    /// Added after the weight.
    pub bias: Option<WeightId>,
}

impl LayerNormWeights {
    /// Binds `{prefix}.weight` (required) and `{prefix}.bias` (as `bias` says), both `[n]`.
    pub(super) fn bind(
        binder: &mut WeightBinder<'_>,
        prefix: &str,
        n: usize,
        bias: Need,
    ) -> Result<LayerNormWeights, LoadError> {
        Ok(LayerNormWeights {
            weight: binder.require(&format!("{prefix}.weight"), &[n], WeightUse::Vector)?,
            bias: bind_as(
                binder,
                bias,
                &format!("{prefix}.bias"),
                &[n],
                WeightUse::Vector,
            )?,
        })
    }

    /// `{prefix}.weight` and `{prefix}.bias` as `need` says for the pair: `None` when absent.
    pub(super) fn bind_optional(
        binder: &mut WeightBinder<'_>,
        prefix: &str,
        n: usize,
        bias: Need,
    ) -> Result<Option<LayerNormWeights>, LoadError> {
        match binder.optional(&format!("{prefix}.weight"), &[n], WeightUse::Vector)? {
            None => Ok(None),
            Some(weight) => Ok(Some(LayerNormWeights {
                weight,
                bias: bind_as(
                    binder,
                    bias,
                    &format!("{prefix}.bias"),
                    &[n],
                    WeightUse::Vector,
                )?,
            })),
        }
    }

    /// `layer_norm(x) * weight + bias` over the embedding dimension.
    pub(super) fn apply<'a>(
        &self,
        ctx: &'a Context,
        w: &WeightTensors<'a>,
        x: Tensor<'a>,
        eps: f32,
    ) -> Tensor<'a> {
        layer_norm(ctx, x, w.get(self.weight), self.bias.map(|b| w.get(b)), eps)
    }
}

/// `(x - mean(x)) / sqrt(var(x) + eps) * weight (+ bias)` over `ne0`.
pub(super) fn layer_norm<'a>(
    ctx: &'a Context,
    x: Tensor<'a>,
    weight: Tensor<'a>,
    bias: Option<Tensor<'a>>,
    eps: f32,
) -> Tensor<'a> {
    let normalized = ctx.mul(ctx.norm(x, eps), weight);
    match bias {
        Some(bias) => ctx.add(normalized, bias),
        None => normalized,
    }
}

/// Reads `{arch}.attention.layer_norm_epsilon` (required, as llama.cpp reads it for the LayerNorm
/// architectures) and rejects what GGML would assert on or divide by zero with.
pub(super) fn read_layer_norm_eps(file: &GgufFile, arch: &str) -> Result<f32, LoadError> {
    let key = format!("{arch}.attention.layer_norm_epsilon");
    if file.get(&key).is_none() {
        return Err(LoadError::MissingMetadata {
            key,
            expected: "a float",
        });
    }
    let eps = read_f32_or(file, arch, "attention.layer_norm_epsilon", 1e-5)?;
    if !eps.is_normal() || eps < 0.0 {
        return Err(invalid(
            &key,
            eps,
            "must be positive (zero divides a constant row by zero) and not subnormal",
        ));
    }
    Ok(eps)
}

/// The feed-forward network of GPT-2 and its kin: `down @ gelu(up @ x + up_b) + down_b`, GELU with
/// the tanh approximation, biases optional.
pub(super) fn gelu_ffn<'a>(
    ctx: &'a Context,
    x: Tensor<'a>,
    up: Tensor<'a>,
    up_bias: Option<Tensor<'a>>,
    down: Tensor<'a>,
    down_bias: Option<Tensor<'a>>,
) -> Tensor<'a> {
    let lifted = linear(ctx, up, x, up_bias); // [n_ff, n_tokens]
    let activated = ctx.gelu(lifted); // [n_ff, n_tokens]
    linear(ctx, down, activated, down_bias) // [n_embd, n_tokens]
}

/// The query, key and value projections of a layer: one fused matrix (`attn_qkv`, the queries'
/// rows then the keys' then the values') or three, biases optional.
#[derive(Clone, Copy, Debug)]
pub(super) enum QkvWeights {
    /// `attn_qkv.weight` `[n_embd, n_q + 2 n_kv]` and its bias.
    Fused {
        /// The fused matrix.
        wqkv: WeightId,
        /// The fused bias.
        bqkv: Option<WeightId>,
    },
    /// `attn_q`, `attn_k`, `attn_v` and their biases.
    Separate {
        /// Query projection `[n_embd, n_q]`.
        wq: WeightId,
        /// Query bias.
        bq: Option<WeightId>,
        /// Key projection `[n_embd, n_kv]`.
        wk: WeightId,
        /// Key bias.
        bk: Option<WeightId>,
        /// Value projection `[n_embd, n_kv]`.
        wv: WeightId,
        /// Value bias.
        bv: Option<WeightId>,
    },
}

impl QkvWeights {
    /// Binds layer `layer`'s projections: the fused matrix when the file has `attn_qkv.weight`,
    /// else the three; biases as `bias` says.
    pub(super) fn bind(
        binder: &mut WeightBinder<'_>,
        hp: &Hyperparameters,
        layer: usize,
        bias: Need,
    ) -> Result<QkvWeights, LoadError> {
        let name = |suffix: &str| format!("blk.{layer}.{suffix}");
        let (n_embd, n_q, n_kv) = (hp.n_embd, hp.n_head * hp.head_dim, hp.n_embd_kv());
        let n_qkv = n_q + 2 * n_kv;
        if let Some(wqkv) = binder.optional(
            &name("attn_qkv.weight"),
            &[n_embd, n_qkv],
            WeightUse::Matrix,
        )? {
            let bqkv = bind_as(
                binder,
                bias,
                &name("attn_qkv.bias"),
                &[n_qkv],
                WeightUse::Vector,
            )?;
            return Ok(QkvWeights::Fused { wqkv, bqkv });
        }
        let mut matrix = |suffix: &str, n_out: usize| {
            binder.require(&name(suffix), &[n_embd, n_out], WeightUse::Matrix)
        };
        let (wq, wk, wv) = (
            matrix("attn_q.weight", n_q)?,
            matrix("attn_k.weight", n_kv)?,
            matrix("attn_v.weight", n_kv)?,
        );
        let mut vector =
            |suffix: &str, n: usize| bind_as(binder, bias, &name(suffix), &[n], WeightUse::Vector);
        Ok(QkvWeights::Separate {
            wq,
            bq: vector("attn_q.bias", n_q)?,
            wk,
            bk: vector("attn_k.bias", n_kv)?,
            wv,
            bv: vector("attn_v.bias", n_kv)?,
        })
    }

    /// Projects `x` `[n_embd, n_tokens]` (`n_tokens` columns) to queries `[head_dim, n_head, n_tokens]`, keys
    /// `[head_dim, n_head_kv, n_tokens]` and values `[n_head_kv*head_dim, n_tokens]`, each
    /// projection clamped into `[-clamp, clamp]` when `clamp` is set (MPT's `clamp_kqv`). The
    /// fused product is split by views (copied to contiguous tensors: exact).
    pub(super) fn project<'a>(
        &self,
        ctx: &'a Context,
        w: &WeightTensors<'a>,
        hp: &Hyperparameters,
        x: Tensor<'a>,
        n_tokens: i64,
        clamp: Option<f32>,
    ) -> (Tensor<'a>, Tensor<'a>, Tensor<'a>) {
        let (head_dim, n_head, n_head_kv) =
            (hp.head_dim as i64, hp.n_head as i64, hp.n_head_kv as i64);
        let clamped = |t: Tensor<'a>| match clamp {
            Some(limit) => ctx.clamp(t, -limit, limit),
            None => t,
        };
        match *self {
            QkvWeights::Fused { wqkv, bqkv } => {
                // One product [n_q + 2 n_kv, n_tokens], then views of its three row ranges.
                let qkv = clamped(linear(ctx, w.get(wqkv), x, bqkv.map(|b| w.get(b))));
                let row_bytes = qkv.nb()[1];
                let element_bytes = qkv.nb()[0];
                let head_bytes = element_bytes * hp.head_dim;
                let q_bytes = element_bytes * hp.n_head * hp.head_dim;
                let kv_bytes = element_bytes * hp.n_embd_kv();
                let q = ctx.view_3d(qkv, head_dim, n_head, n_tokens, head_bytes, row_bytes, 0);
                let k = ctx.view_3d(
                    qkv, head_dim, n_head_kv, n_tokens, head_bytes, row_bytes, q_bytes,
                );
                let v = ctx.view_2d(
                    qkv,
                    head_dim * n_head_kv,
                    n_tokens,
                    row_bytes,
                    q_bytes + kv_bytes,
                );
                (ctx.cont(q), ctx.cont(k), ctx.cont(v))
            }
            QkvWeights::Separate {
                wq,
                bq,
                wk,
                bk,
                wv,
                bv,
            } => {
                let project = |m: WeightId, b: Option<WeightId>| {
                    clamped(linear(ctx, w.get(m), x, b.map(|b| w.get(b))))
                };
                let q = project(wq, bq); // [n_head*head_dim, n_tokens]
                let k = project(wk, bk); // [n_head_kv*head_dim, n_tokens]
                let v = project(wv, bv); // [n_head_kv*head_dim, n_tokens]
                (
                    ctx.reshape_3d(q, head_dim, n_head, n_tokens),
                    ctx.reshape_3d(k, head_dim, n_head_kv, n_tokens),
                    v,
                )
            }
        }
    }
}

/// Learned absolute positions: `x + pos_embd[position]` for each token, `x` `[n_embd, n_tokens]`,
/// `pos_embd` `[n_embd, n_positions]`.
pub(super) fn add_learned_positions<'a>(
    ctx: &'a Context,
    x: Tensor<'a>,
    pos_embd: Tensor<'a>,
    positions: Tensor<'a>,
) -> Tensor<'a> {
    ctx.add(x, ctx.get_rows(pos_embd, positions))
}

/// The largest ALiBi bias llama.cpp uses for BLOOM and Refact (their GGUFs do not carry it).
pub(super) const ALIBI_MAX_BIAS: f32 = 8.0;

/// An error when the file has the tensor `name`, which the architecture's graph here does not use
/// (an optional feature lmrs does not run): refusing beats computing something else silently.
pub(super) fn refuse_tensor(
    file: &GgufFile,
    name: &str,
    reason: &'static str,
) -> Result<(), LoadError> {
    match file.tensor(name) {
        Some(_) => Err(LoadError::BadTensorData {
            name: name.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}
