//! The `gpt2` architecture (GPT-2, and the LayerNorm decoders built like it): learned absolute
//! position embeddings added to the token embeddings, pre-norm layers with LayerNorm (weight and
//! bias), a fused QKV projection with bias, and a plain GELU feed-forward network with biases.
//!
//! The other LayerNorm architectures (StarCoder, GPT-NeoX, BLOOM, MPT, StarCoder2, StableLM) differ
//! from it only in what they load: how positions enter (learned rows, RoPE, ALiBi), which biases
//! and norms exist, and whether attention and FFN run in parallel on the residual stream. They run
//! as a [`LayerNormDecoder`] with their own [`LayerNormConfig`], through [`forward`].

use ggml_sys::{Context, Graph, RopeParams, Tensor};

use crate::error::LoadError;
use crate::hparams::Hyperparameters;
use crate::kv_cache::KvTensors;
use crate::models::architecture::{Architecture, BatchInputs, PositionShift};
use crate::models::blocks::{self, LayerNormWeights, Need, QkvWeights, Scores};
use crate::weights::{WeightBinder, WeightId, WeightTensors, WeightUse};

/// Reads `gpt2.*` hyperparameters and binds the weights.
pub(super) fn load(binder: &mut WeightBinder<'_>) -> Result<Box<dyn Architecture>, LoadError> {
    let needs = TensorNeeds {
        position_embeddings: Need::Required,
        ..TensorNeeds::ALL_BIASES
    };
    LayerNormDecoder::load(binder, "gpt2", None, needs, |config| config)
}

/// How the attention and feed-forward sub-blocks meet the residual stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Residual {
    /// `x = x + attn(norm1(x)); x = x + ffn(norm2(x))` (GPT-2).
    Sequential,
    /// Both sub-blocks read the same input: `x + attn(norm1(x)) + ffn(norm2(x))`, summed as
    /// `(ffn + x) + attn` (GPT-NeoX's `use_parallel_residual`).
    Parallel,
}

// A layer without `ffn_norm` (StableLM 2 12B) is parallel in either mode: its FFN reads the
// attention's normed input, `x + attn(norm1(x)) + ffn(norm1(x))`, summed as `(attn + x) + ffn`.

/// Everything a LayerNorm decoder needs besides its weights.
#[derive(Clone, Debug)]
pub(super) struct LayerNormConfig {
    /// Sizes.
    pub hp: Hyperparameters,
    /// Epsilon of the layer norms.
    pub eps: f32,
    /// Rotary embeddings of queries and keys (possibly on the first dimensions of each head only),
    /// when the model has them.
    pub rope: Option<RopeParams>,
    /// ALiBi's largest bias, when attention is biased by distance.
    pub alibi_max_bias: Option<f32>,
    /// Clamp of the q/k/v projections (MPT's `clamp_kqv`).
    pub clamp_kqv: Option<f32>,
    /// How the sub-blocks are summed.
    pub residual: Residual,
}

/// Which tensors an architecture's files have (see llama.cpp's loader of each).
#[derive(Clone, Copy, Debug)]
pub(super) struct TensorNeeds {
    /// `position_embd.weight` `[n_embd, n_ctx_train]`.
    pub position_embeddings: Need,
    /// `token_embd_norm.{weight,bias}` (BLOOM's norm of the embeddings).
    pub token_norm: bool,
    /// Biases of the layer norms.
    pub norm_bias: Need,
    /// Biases of the q/k/v projections.
    pub qkv_bias: Need,
    /// Bias of the attention output projection.
    pub output_bias: Need,
    /// Biases of the FFN's up and down projections.
    pub ffn_bias: Need,
    /// The norm before the FFN (`Optional`: StableLM files without it run [`Residual::ParallelSharedNorm`]).
    pub ffn_norm: Need,
    /// A SwiGLU FFN (`ffn_gate`, `ffn_up`, `ffn_down`, no biases) instead of the GELU one.
    pub swiglu: bool,
    /// Whether `output.weight` may be absent (tied to the token embeddings).
    pub tied_output: bool,
    /// Per-head layer norms of queries and keys (`attn_q_norm`, `attn_k_norm`, weights
    /// `[head_dim, n_head]` and `[head_dim, n_head_kv]`, no bias), optional per layer (StableLM 2
    /// 12B).
    pub qk_norm: bool,
}

impl TensorNeeds {
    /// GPT-2's: every bias and norm, a GELU FFN, no position embeddings (set them), output tied
    /// when absent.
    pub(super) const ALL_BIASES: TensorNeeds = TensorNeeds {
        position_embeddings: Need::Absent,
        token_norm: false,
        norm_bias: Need::Required,
        qkv_bias: Need::Required,
        output_bias: Need::Required,
        ffn_bias: Need::Required,
        ffn_norm: Need::Required,
        swiglu: false,
        tied_output: true,
        qk_norm: false,
    };
}

/// The feed-forward network of a layer.
#[derive(Clone, Copy, Debug)]
enum Ffn {
    /// `down @ gelu(up @ x + up_b) + down_b`.
    Gelu {
        up: WeightId,
        up_bias: Option<WeightId>,
        down: WeightId,
        down_bias: Option<WeightId>,
    },
    /// `down @ (silu(gate @ x) * (up @ x))`.
    SwiGlu {
        gate: WeightId,
        up: WeightId,
        down: WeightId,
    },
}

/// Weights of one layer.
#[derive(Clone, Debug)]
struct Layer {
    attn_norm: LayerNormWeights,
    qkv: QkvWeights,
    /// Per-head layer norms of queries and keys, when the layer has them.
    qk_norm: Option<(WeightId, WeightId)>,
    wo: WeightId,
    bo: Option<WeightId>,
    ffn_norm: Option<LayerNormWeights>,
    ffn: Ffn,
}

/// A loaded LayerNorm decoder (GPT-2 and kin).
pub(super) struct LayerNormDecoder {
    config: LayerNormConfig,
    token_embd: WeightId,
    token_norm: Option<LayerNormWeights>,
    position_embd: Option<WeightId>,
    layers: Vec<Layer>,
    output_norm: LayerNormWeights,
    output: WeightId,
}

impl LayerNormDecoder {
    /// Reads the `{arch}.*` hyperparameters (RoPE with `rope_mode` when given), lets `adjust`
    /// complete the configuration (ALiBi, residual, clamp), and binds the tensors `needs` lists.
    pub(super) fn load(
        binder: &mut WeightBinder<'_>,
        arch: &str,
        rope_mode: Option<i32>,
        needs: TensorNeeds,
        adjust: impl FnOnce(LayerNormConfig) -> LayerNormConfig,
    ) -> Result<Box<dyn Architecture>, LoadError> {
        let file = binder.file();
        let decoder = blocks::read_decoder_config(file, arch, rope_mode.unwrap_or(0))?;
        let eps = blocks::read_layer_norm_eps(file, arch)?;
        let config = adjust(LayerNormConfig {
            hp: decoder.hp,
            eps,
            rope: rope_mode.map(|_| decoder.rope),
            alibi_max_bias: None,
            clamp_kqv: None,
            residual: Residual::Sequential,
        });
        let hp = config.hp.clone();
        let (n_embd, n_ff, n_vocab) = (hp.n_embd, hp.n_ff, hp.n_vocab);
        let n_q = hp.n_head * hp.head_dim;

        let token_embd = binder.require(
            "token_embd.weight",
            &[n_embd, n_vocab],
            WeightUse::Embedding,
        )?;
        let token_norm = if needs.token_norm {
            Some(LayerNormWeights::bind(
                binder,
                "token_embd_norm",
                n_embd,
                needs.norm_bias,
            )?)
        } else {
            None
        };
        let position_embd = blocks::bind_as(
            binder,
            needs.position_embeddings,
            "position_embd.weight",
            &[n_embd, hp.n_ctx_train],
            WeightUse::Embedding,
        )?;

        let mut layers = Vec::with_capacity(hp.n_layer);
        for i in 0..hp.n_layer {
            let name = |suffix: &str| format!("blk.{i}.{suffix}");
            let attn_norm =
                LayerNormWeights::bind(binder, &name("attn_norm"), n_embd, needs.norm_bias)?;
            let qkv = QkvWeights::bind(binder, &hp, i, needs.qkv_bias)?;
            let qk_norm = if needs.qk_norm {
                let q_norm = binder.optional(
                    &name("attn_q_norm.weight"),
                    &[hp.head_dim, hp.n_head],
                    WeightUse::Vector,
                )?;
                match q_norm {
                    Some(q_norm) => Some((
                        q_norm,
                        binder.require(
                            &name("attn_k_norm.weight"),
                            &[hp.head_dim, hp.n_head_kv],
                            WeightUse::Vector,
                        )?,
                    )),
                    None => None,
                }
            } else {
                None
            };
            let wo = binder.require(
                &name("attn_output.weight"),
                &[n_q, n_embd],
                WeightUse::Matrix,
            )?;
            let bo = blocks::bind_as(
                binder,
                needs.output_bias,
                &name("attn_output.bias"),
                &[n_embd],
                WeightUse::Vector,
            )?;
            let ffn_norm = match needs.ffn_norm {
                Need::Absent => None,
                Need::Required => Some(LayerNormWeights::bind(
                    binder,
                    &name("ffn_norm"),
                    n_embd,
                    needs.norm_bias,
                )?),
                Need::Optional => LayerNormWeights::bind_optional(
                    binder,
                    &name("ffn_norm"),
                    n_embd,
                    needs.norm_bias,
                )?,
            };
            let mut matrix = |suffix: &str, dims: &[usize]| {
                binder.require(&name(suffix), dims, WeightUse::Matrix)
            };
            let ffn = if needs.swiglu {
                Ffn::SwiGlu {
                    gate: matrix("ffn_gate.weight", &[n_embd, n_ff])?,
                    up: matrix("ffn_up.weight", &[n_embd, n_ff])?,
                    down: matrix("ffn_down.weight", &[n_ff, n_embd])?,
                }
            } else {
                let up = matrix("ffn_up.weight", &[n_embd, n_ff])?;
                let down = matrix("ffn_down.weight", &[n_ff, n_embd])?;
                Ffn::Gelu {
                    up,
                    up_bias: blocks::bind_as(
                        binder,
                        needs.ffn_bias,
                        &name("ffn_up.bias"),
                        &[n_ff],
                        WeightUse::Vector,
                    )?,
                    down,
                    down_bias: blocks::bind_as(
                        binder,
                        needs.ffn_bias,
                        &name("ffn_down.bias"),
                        &[n_embd],
                        WeightUse::Vector,
                    )?,
                }
            };
            layers.push(Layer {
                attn_norm,
                qkv,
                qk_norm,
                wo,
                bo,
                ffn_norm,
                ffn,
            });
        }
        let output_norm = LayerNormWeights::bind(binder, "output_norm", n_embd, needs.norm_bias)?;
        let output =
            match binder.optional("output.weight", &[n_embd, n_vocab], WeightUse::Matrix)? {
                Some(output) => output,
                None if needs.tied_output => binder.require(
                    "token_embd.weight",
                    &[n_embd, n_vocab],
                    WeightUse::Embedding,
                )?,
                None => {
                    return Err(LoadError::MissingTensor {
                        name: "output.weight".into(),
                    })
                }
            };
        Ok(Box::new(LayerNormDecoder {
            config,
            token_embd,
            token_norm,
            position_embd,
            layers,
            output_norm,
            output,
        }))
    }
}

impl Architecture for LayerNormDecoder {
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
        match (&self.config.rope, self.position_embd) {
            // Learned positions are in the cached keys and values themselves: they cannot move.
            (_, Some(_)) => PositionShift::Unsupported,
            // Keys rotated by position: moving is re-rotating.
            (Some(rope), None) => PositionShift::for_rope(rope, self.config.hp.n_layer),
            // ALiBi (or no positions at all): the cache holds no position, moving is copying.
            (None, None) => PositionShift::Unrotated,
        }
    }

    fn uses_alibi(&self) -> bool {
        self.config.alibi_max_bias.is_some()
    }

    fn max_positions(&self) -> Option<usize> {
        self.position_embd.map(|_| self.config.hp.n_ctx_train)
    }
}

impl LayerNormDecoder {
    /// The forward pass of one batch; returns logits `[n_vocab, n_outputs]`.
    fn forward<'a>(
        &self,
        ctx: &'a Context,
        graph: &mut Graph<'a>,
        w: &WeightTensors<'a>,
        cache: &KvTensors<'a>,
        batch: &BatchInputs<'a>,
    ) -> Tensor<'a> {
        let cfg = &self.config;
        let (hp, eps) = (&cfg.hp, cfg.eps);
        let n_tokens = batch.n_tokens as i64;
        let kq_scale = 1.0 / (hp.head_dim as f32).sqrt();

        // Look up the token embeddings: [n_embd, n_tokens].
        let mut x = ctx.get_rows(w.get(self.token_embd), batch.tokens);
        // Learned absolute positions: add the row of each token's position.
        if let Some(position_embd) = self.position_embd {
            x = blocks::add_learned_positions(ctx, x, w.get(position_embd), batch.positions);
        }
        // BLOOM normalizes the embeddings before the first layer.
        if let Some(token_norm) = &self.token_norm {
            x = token_norm.apply(ctx, w, x, eps);
        }

        for (layer_index, layer) in self.layers.iter().enumerate() {
            let last = layer_index + 1 == self.layers.len();

            // Attention sub-block, pre-norm: h = layer_norm(x) * w + b.
            let mut h = layer.attn_norm.apply(ctx, w, x, eps); // [n_embd, n_tokens]

            // Project to queries [head_dim, n_head, n], keys [head_dim, n_head_kv, n] and values
            // [n_head_kv*head_dim, n] (fused or separate projections, clamped for MPT).
            let (q, k, v) = layer.qkv.project(ctx, w, hp, h, n_tokens, cfg.clamp_kqv);

            // Per-head layer norms of queries and keys (StableLM 2 12B), each head with its own
            // weights.
            let (q, k) = match layer.qk_norm {
                Some((q_norm, k_norm)) => (
                    blocks::layer_norm(ctx, q, w.get(q_norm), None, eps), // [head_dim, n_head, n]
                    blocks::layer_norm(ctx, k, w.get(k_norm), None, eps), // [head_dim, n_head_kv, n]
                ),
                None => (q, k),
            };

            // Rotate queries and keys by position (possibly only their first dimensions).
            let (q, k) = match &cfg.rope {
                Some(rope) => (
                    ctx.rope_ext(q, batch.positions, rope),
                    ctx.rope_ext(k, batch.positions, rope),
                ),
                None => (q, k),
            };

            // Cache update and causal attention, ALiBi-biased for BLOOM and MPT.
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
                    max_bias: cfg.alibi_max_bias.unwrap_or(0.0),
                    ..Scores::scaled(kq_scale)
                },
            ); // [n_head*head_dim, n_tokens]

            // Output projection.
            let mut projected =
                blocks::linear(ctx, w.get(layer.wo), attended, layer.bo.map(|b| w.get(b))); // [n_embd, n_tokens]
            if last {
                // Last layer: only the rows whose logits are wanted go on. [n_embd, n_outputs]
                projected = ctx.get_rows(projected, batch.output_rows);
                x = ctx.get_rows(x, batch.output_rows);
                h = ctx.get_rows(h, batch.output_rows);
            }

            // Feed-forward sub-block and the residual sums, in llama.cpp's order.
            let ffn = |input: Tensor<'a>| match layer.ffn {
                Ffn::Gelu {
                    up,
                    up_bias,
                    down,
                    down_bias,
                } => blocks::gelu_ffn(
                    ctx,
                    input,
                    w.get(up),
                    up_bias.map(|b| w.get(b)),
                    w.get(down),
                    down_bias.map(|b| w.get(b)),
                ),
                Ffn::SwiGlu { gate, up, down } => {
                    blocks::swiglu_ffn(ctx, input, w.get(gate), w.get(up), w.get(down))
                }
            };
            x = match (cfg.residual, &layer.ffn_norm) {
                (Residual::Parallel, Some(norm)) => {
                    // x + attn(norm1(x)) + ffn(norm2(x)), as (ffn + x) + attn.
                    let out = ffn(norm.apply(ctx, w, x, eps)); // [n_embd, n_tokens]
                    ctx.add(ctx.add(out, x), projected)
                }
                (Residual::Sequential, Some(norm)) => {
                    // x = x + attn; x = x + ffn(norm2(x)).
                    let x_attn = ctx.add(projected, x);
                    let out = ffn(norm.apply(ctx, w, x_attn, eps));
                    ctx.add(out, x_attn)
                }
                (_, None) => {
                    // x + attn(norm1(x)) + ffn(norm1(x)), as (attn + x) + ffn.
                    let x_attn = ctx.add(projected, x);
                    ctx.add(ffn(h), x_attn)
                }
            };
        }

        // Final norm and output projection of the selected rows.
        let normalized = self.output_norm.apply(ctx, w, x, eps);
        ctx.mul_mat(w.get(self.output), normalized) // [n_vocab, n_outputs]
    }
}
