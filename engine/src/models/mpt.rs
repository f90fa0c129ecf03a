//! The `mpt` architecture (MosaicML's MPT, e.g. MPT-7B; Replit Code): ALiBi instead of position
//! embeddings (its largest bias in `attention.max_alibi_bias`), LayerNorm without bias, a fused
//! QKV projection optionally clamped (`attention.clamp_kqv`), a GELU FFN, no biases (all optional
//! here, as llama.cpp reads them) and a tied output.

use crate::error::LoadError;
use crate::hparams::{invalid, read_f32_or};
use crate::models::architecture::Architecture;
use crate::models::blocks::{self, Need};
use crate::models::gpt2::{LayerNormConfig, LayerNormDecoder, TensorNeeds};
use crate::weights::WeightBinder;

/// Reads `mpt.*` hyperparameters and binds the weights.
pub(super) fn load(binder: &mut WeightBinder<'_>) -> Result<Box<dyn Architecture>, LoadError> {
    let file = binder.file();
    // 0 (or absent): no ALiBi, as in llama.cpp.
    let max_bias = read_f32_or(file, "mpt", "attention.max_alibi_bias", 0.0)?;
    if max_bias < 0.0 {
        return Err(invalid(
            "mpt.attention.max_alibi_bias",
            max_bias,
            "must not be negative",
        ));
    }
    let clamp = read_f32_or(file, "mpt", "attention.clamp_kqv", 0.0)?;
    if clamp < 0.0 {
        return Err(invalid(
            "mpt.attention.clamp_kqv",
            clamp,
            "must not be negative (0: no clamp)",
        ));
    }
    // MPT's optional QK layer norms are not implemented: refuse such a file rather than ignore them.
    blocks::refuse_tensor(
        file,
        "blk.0.attn_q_norm.weight",
        "a QK-norm, which lmrs does not run for mpt",
    )?;
    let needs = TensorNeeds {
        position_embeddings: Need::Optional,
        norm_bias: Need::Optional,
        qkv_bias: Need::Optional,
        output_bias: Need::Optional,
        ffn_bias: Need::Optional,
        ..TensorNeeds::ALL_BIASES
    };
    LayerNormDecoder::load(binder, "mpt", None, needs, |config| LayerNormConfig {
        alibi_max_bias: (max_bias > 0.0).then_some(max_bias),
        clamp_kqv: (clamp > 0.0).then_some(clamp),
        ..config
    })
}
