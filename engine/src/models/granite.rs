//! The `granite` architecture (IBM Granite 3.x dense models, e.g. granite-3.1-2b, and Granite
//! Code): the llama decoder with four multipliers from the metadata: the embeddings are multiplied
//! by `embedding_scale`, each sub-block's output by `residual_scale` before its residual connection,
//! attention scores by `attention.scale` (in place of `1/sqrt(head_dim)`), and the logits divided by
//! `logit_scale`. A multiplier that is absent or 0 is no multiplier, as in llama.cpp, except
//! `logit_scale`, which llama.cpp requires.

use ggml_sys::{Context, Graph, Tensor, ROPE_TYPE_NORMAL};

use crate::error::LoadError;
use crate::hparams::{invalid, read_f32_or, Hyperparameters};
use crate::kv_cache::KvTensors;
use crate::models::architecture::{Architecture, BatchInputs, PositionShift};
use crate::models::blocks::{self, DecoderConfig, DecoderWeights};
use crate::weights::{WeightBinder, WeightTensors};

/// Metadata prefix and `general.architecture` name.
const ARCH: &str = "granite";

/// A loaded Granite decoder.
struct Granite {
    config: DecoderConfig,
    weights: DecoderWeights,
    /// Multiplier of the embeddings (1 = none).
    embedding_scale: f32,
    /// Multiplier of the attention and FFN outputs before the residual connections (1 = none).
    residual_scale: f32,
    /// Multiplier of the attention scores.
    attention_scale: f32,
    /// The logits are divided by this.
    logit_scale: f32,
}

/// Reads `{ARCH}.{key}` as a multiplier: absent or 0 means `default`; otherwise finite and non-zero.
fn read_multiplier(
    file: &crate::gguf::GgufFile,
    key: &str,
    default: f32,
) -> Result<f32, LoadError> {
    match read_f32_or(file, ARCH, key, 0.0)? {
        0.0 => Ok(default),
        value if value.is_normal() => Ok(value),
        value => Err(invalid(
            &format!("{ARCH}.{key}"),
            value,
            "must be a normal float (or 0 for none)",
        )),
    }
}

/// Reads `granite.*` hyperparameters and multipliers and binds the weights.
pub(super) fn load(binder: &mut WeightBinder<'_>) -> Result<Box<dyn Architecture>, LoadError> {
    let file = binder.file();
    let config = blocks::read_decoder_config(file, ARCH, ROPE_TYPE_NORMAL)?;
    if file.get_u64(&format!("{ARCH}.expert_count")).unwrap_or(0) > 0 {
        return Err(invalid(
            &format!("{ARCH}.expert_count"),
            file.get_u64(&format!("{ARCH}.expert_count")).unwrap_or(0),
            "Granite mixture-of-experts models are not supported",
        ));
    }
    if file.tensor("rope_freqs.weight").is_some() {
        return Err(LoadError::InvalidHyperparameter {
            key: "rope_freqs.weight".into(),
            value: "present".into(),
            reason: "RoPE frequency factors are not supported for granite".into(),
        });
    }
    let logit_key = format!("{ARCH}.logit_scale");
    if file.get(&logit_key).is_none() {
        return Err(LoadError::MissingMetadata {
            key: logit_key,
            expected: "a float",
        });
    }
    let embedding_scale = read_multiplier(file, "embedding_scale", 1.0)?;
    let residual_scale = read_multiplier(file, "residual_scale", 1.0)?;
    let attention_scale = read_multiplier(
        file,
        "attention.scale",
        1.0 / (config.hp.head_dim as f32).sqrt(),
    )?;
    let logit_scale = read_multiplier(file, "logit_scale", 1.0)?;
    let weights = blocks::bind_decoder_weights(binder, &config.hp)?;
    Ok(Box::new(Granite {
        config,
        weights,
        embedding_scale,
        residual_scale,
        attention_scale,
        logit_scale,
    }))
}

impl Granite {
    /// A sub-block's output times the residual multiplier.
    fn residual<'a>(&self, ctx: &'a Context, output: Tensor<'a>) -> Tensor<'a> {
        if self.residual_scale == 1.0 {
            output
        } else {
            ctx.scale(output, self.residual_scale)
        }
    }
}

impl Architecture for Granite {
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

        // Look up the token embeddings and apply the embedding multiplier: [n_embd, n_tokens].
        let mut x = ctx.get_rows(w.get(ids.token_embd), batch.tokens);
        if self.embedding_scale != 1.0 {
            x = ctx.scale(x, self.embedding_scale);
        }

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

            // Rotate queries and keys by their positions.
            let q = ctx.rope_ext(q, batch.positions, &cfg.rope); // [head_dim, n_head, n_tokens]
            let k = ctx.rope_ext(k, batch.positions, &cfg.rope); // [head_dim, n_head_kv, n_tokens]

            // Cache update and causal attention, scores scaled by the attention multiplier.
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
                self.attention_scale,
            ); // [n_head*head_dim, n_tokens]

            // Output projection, residual multiplier, residual connection.
            let mut projected = blocks::linear(ctx, l.wo, attended, l.bo); // [n_embd, n_tokens]
            if layer_index + 1 == ids.layers.len() {
                // Last layer: only the rows whose logits are wanted go on. [n_embd, n_outputs]
                projected = ctx.get_rows(projected, batch.output_rows);
                x = ctx.get_rows(x, batch.output_rows);
            }
            let x_attn = ctx.add(self.residual(ctx, projected), x);

            // Feed-forward sub-block: pre-norm, SwiGLU, residual multiplier, residual.
            let h = blocks::rms_norm(ctx, x_attn, l.ffn_norm, eps);
            let ffn = blocks::swiglu_ffn(ctx, h, l.ffn_gate, l.ffn_up, l.ffn_down);
            x = ctx.add(self.residual(ctx, ffn), x_attn); // [n_embd, n_tokens]
        }

        // Final norm, output projection of the selected rows, logits divided by logit_scale.
        let normalized = blocks::rms_norm(ctx, x, w.get(ids.output_norm), eps);
        let logits = ctx.mul_mat(w.get(ids.output), normalized); // [n_vocab, n_outputs]
        ctx.scale(logits, 1.0 / self.logit_scale)
    }

    fn position_shift(&self) -> PositionShift {
        PositionShift::for_rope(&self.config.rope, self.config.hp.n_layer)
    }
}
