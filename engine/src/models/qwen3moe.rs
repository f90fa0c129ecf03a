//! The `qwen3moe` architecture (Qwen3 mixture-of-experts models, e.g. Qwen3-30B-A3B and
//! Qwen3-Coder-30B-A3B): Qwen3's attention (QK-norm, NeoX RoPE, no biases) and, in place of the
//! dense feed-forward network, `expert_count` SwiGLU experts of which a router picks
//! `expert_used_count` per token.
//!
//! Routing, as llama.cpp does it: router logits `ffn_gate_inp @ x`, a softmax over all experts, the
//! top-k experts by probability, their probabilities renormalized to sum to 1 (unless
//! `expert_weights_norm` is false) and optionally scaled (`expert_weights_scale`); the experts' 3-D
//! weight tensors `[n_in, n_out, n_expert]` are applied with GGML's indirect matrix product
//! (`mul_mat_id`), and the weighted expert outputs are summed.

use ggml_sys::{Context, Graph, Tensor, ROPE_TYPE_NEOX};

use crate::error::LoadError;
use crate::hparams::{invalid, read_f32_or, read_size, read_size_opt, Hyperparameters};
use crate::kv_cache::KvTensors;
use crate::models::architecture::{Architecture, BatchInputs, PositionShift};
use crate::models::blocks::{self, DecoderConfig};
use crate::models::qwen3::{self, AttentionWeights};
use crate::weights::{WeightBinder, WeightId, WeightTensors, WeightUse};

/// Metadata prefix and `general.architecture` name.
const ARCH: &str = "qwen3moe";

/// Most experts a layer may have (llama.cpp's `LLAMA_MAX_EXPERTS`).
const MAX_EXPERTS: usize = 512;

/// Smallest sum of the routing weights that renormalization divides by (the smallest normal F16,
/// as in llama.cpp), so that all-zero weights never divide by zero.
const MIN_WEIGHT_SUM: f32 = 6.103_515_6e-5;

/// How tokens are routed to experts.
#[derive(Clone, Copy, Debug)]
struct Routing {
    /// Experts per layer.
    n_expert: usize,
    /// Experts each token goes through.
    n_expert_used: usize,
    /// Whether the chosen experts' probabilities are renormalized to sum to 1.
    normalize: bool,
    /// Multiplier of the routing weights (1 = none).
    scale: f32,
}

/// One layer: attention, and the routed experts.
#[derive(Clone, Debug)]
struct MoeLayer {
    attention: AttentionWeights,
    /// RMS-norm weight before the experts, `[n_embd]`.
    ffn_norm: WeightId,
    /// Router `[n_embd, n_expert]`.
    gate_inp: WeightId,
    /// Experts' gate projections `[n_embd, n_ff_expert, n_expert]`.
    gate_exps: WeightId,
    /// Experts' up projections `[n_embd, n_ff_expert, n_expert]`.
    up_exps: WeightId,
    /// Experts' down projections `[n_ff_expert, n_embd, n_expert]`.
    down_exps: WeightId,
}

/// A loaded Qwen3-MoE decoder.
struct Qwen3Moe {
    config: DecoderConfig,
    routing: Routing,
    token_embd: WeightId,
    layers: Vec<MoeLayer>,
    output_norm: WeightId,
    output: WeightId,
}

/// Reads `qwen3moe.*` hyperparameters (with the expert counts) and binds the weights.
pub(super) fn load(binder: &mut WeightBinder<'_>) -> Result<Box<dyn Architecture>, LoadError> {
    let file = binder.file();
    let config = blocks::read_decoder_config(file, ARCH, ROPE_TYPE_NEOX)?;
    let hp = &config.hp;

    let n_expert = read_size(file, ARCH, "expert_count")?;
    if n_expert > MAX_EXPERTS {
        return Err(invalid(
            &format!("{ARCH}.expert_count"),
            n_expert,
            format!("must be at most {MAX_EXPERTS}"),
        ));
    }
    let n_expert_used = read_size(file, ARCH, "expert_used_count")?;
    if n_expert_used > n_expert {
        return Err(invalid(
            &format!("{ARCH}.expert_used_count"),
            n_expert_used,
            format!("must be at most the expert count {n_expert}"),
        ));
    }
    // As llama.cpp: without its own key, an expert is n_ff / n_expert_used wide.
    let n_ff_expert =
        match read_size_opt(file, ARCH, "expert_feed_forward_length")? {
            Some(width) => width,
            None if hp.n_ff / n_expert_used > 0 => hp.n_ff / n_expert_used,
            None => return Err(invalid(
                &format!("{ARCH}.feed_forward_length"),
                hp.n_ff,
                "must be at least the used expert count when expert_feed_forward_length is absent",
            )),
        };
    let normalize_key = format!("{ARCH}.expert_weights_norm");
    let normalize = match file.get(&normalize_key) {
        None => true,
        Some(_) => file
            .get_bool(&normalize_key)
            .ok_or(LoadError::MissingMetadata {
                key: normalize_key.clone(),
                expected: "a boolean",
            })?,
    };
    let scale = match read_f32_or(file, ARCH, "expert_weights_scale", 0.0)? {
        // 0 (absent) means none, as in llama.cpp.
        0.0 => 1.0,
        scale => scale,
    };
    let routing = Routing {
        n_expert,
        n_expert_used,
        normalize,
        scale,
    };

    let (token_embd, output_norm, output) = qwen3::bind_ends(binder, hp)?;
    let n_embd = hp.n_embd;
    let mut layers = Vec::with_capacity(hp.n_layer);
    for i in 0..hp.n_layer {
        let name = |suffix: &str| format!("blk.{i}.{suffix}");
        let mut experts = |suffix: &str, n_in: usize, n_out: usize| {
            binder.require(&name(suffix), &[n_in, n_out, n_expert], WeightUse::Matrix)
        };
        let gate_exps = experts("ffn_gate_exps.weight", n_embd, n_ff_expert)?;
        let up_exps = experts("ffn_up_exps.weight", n_embd, n_ff_expert)?;
        let down_exps = experts("ffn_down_exps.weight", n_ff_expert, n_embd)?;
        layers.push(MoeLayer {
            attention: qwen3::bind_attention(binder, hp, i)?,
            ffn_norm: binder.require(&name("ffn_norm.weight"), &[n_embd], WeightUse::Vector)?,
            gate_inp: binder.require(
                &name("ffn_gate_inp.weight"),
                &[n_embd, n_expert],
                WeightUse::Matrix,
            )?,
            gate_exps,
            up_exps,
            down_exps,
        });
    }
    Ok(Box::new(Qwen3Moe {
        config,
        routing,
        token_embd,
        layers,
        output_norm,
        output,
    }))
}

impl Architecture for Qwen3Moe {
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
            let mut projected = qwen3::attention_sublayer(
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

            // Routed experts: pre-norm, mixture, residual.
            let h = blocks::rms_norm(ctx, x_attn, w.get(layer.ffn_norm), eps);
            let moe = self.experts(ctx, layer, w, h);
            x = ctx.add(moe, x_attn); // [n_embd, n_tokens]
        }

        // Final norm and output projection of the selected rows. [n_vocab, n_outputs]
        let normalized = blocks::rms_norm(ctx, x, w.get(self.output_norm), eps);
        ctx.mul_mat(w.get(self.output), normalized)
    }

    fn position_shift(&self) -> PositionShift {
        PositionShift::for_rope(&self.config.rope, self.config.hp.n_layer)
    }
}

impl Qwen3Moe {
    /// The mixture of experts on `h` `[n_embd, n]`: returns `[n_embd, n]`.
    fn experts<'a>(
        &self,
        ctx: &'a Context,
        layer: &MoeLayer,
        w: &WeightTensors<'a>,
        h: Tensor<'a>,
    ) -> Tensor<'a> {
        let routing = &self.routing;
        let n_embd = self.config.hp.n_embd as i64;
        let n = h.ne()[1];
        let (n_expert, n_used) = (routing.n_expert as i64, routing.n_expert_used as i64);

        // Router: expert probabilities per token. [n_expert, n]
        let logits = ctx.mul_mat(w.get(layer.gate_inp), h);
        let probs = ctx.soft_max(logits);

        // The top-k experts of each token, most probable first (I32). [n_used, n]
        let selected = ctx.argsort_top_k(probs, n_used as i32);

        // Their probabilities: rows of [1, n_expert, n] picked per token. [1, n_used, n]
        let mut weights = ctx.get_rows(ctx.reshape_3d(probs, 1, n_expert, n), selected);
        if routing.normalize {
            // Renormalize over the chosen experts (the sum clamped away from zero).
            let flat = ctx.reshape_2d(weights, n_used, n); // [n_used, n]
            let sum = ctx.clamp(ctx.sum_rows(flat), MIN_WEIGHT_SUM, f32::INFINITY); // [1, n]
            weights = ctx.reshape_3d(ctx.div(flat, sum), 1, n_used, n);
        }
        if routing.scale != 1.0 {
            weights = ctx.scale(weights, routing.scale);
        }

        // Every chosen expert's SwiGLU on the token: x as [n_embd, 1, n] broadcast over the
        // chosen experts. [n_ff_expert, n_used, n]
        let x = ctx.reshape_3d(h, n_embd, 1, n);
        let up = ctx.mul_mat_id(w.get(layer.up_exps), x, selected);
        let gate = ctx.mul_mat_id(w.get(layer.gate_exps), x, selected);
        let activated = ctx.swiglu_split(gate, up);
        let down = ctx.mul_mat_id(w.get(layer.down_exps), activated, selected); // [n_embd, n_used, n]

        // Weight each expert's output and sum over the chosen experts. [n_embd, n]
        let weighted = ctx.mul(down, weights);
        let nb = weighted.nb();
        let expert_output =
            |slot: i64| ctx.view_2d(weighted, n_embd, n, nb[2], slot as usize * nb[1]);
        let mut sum = expert_output(0);
        for slot in 1..n_used {
            sum = ctx.add(sum, expert_output(slot));
        }
        if n_used == 1 {
            // A view of one expert is not contiguous; the residual add wants whole rows.
            sum = ctx.cont(sum);
        }
        sum
    }
}
