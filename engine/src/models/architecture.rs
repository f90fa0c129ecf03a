//! What every architecture provides to a session: the [`Architecture`] trait (hyperparameters and
//! the forward graph of one batch) and the graph inputs of a batch ([`BatchInputs`]).

use ggml_sys::{Context, Graph, RopeParams, Tensor};

use crate::hparams::Hyperparameters;
use crate::kv_cache::KvTensors;
use crate::weights::WeightTensors;

/// The graph inputs of one batch: tokens at consecutive positions after `n_past` cached ones.
pub(crate) struct BatchInputs<'a> {
    /// Token ids, I32 `[n_tokens]`.
    pub tokens: Tensor<'a>,
    /// Positions, I32 `[n_tokens]`.
    pub positions: Tensor<'a>,
    /// Causal mask, F16 `[n_kv, n_tokens]`: 0 where a token may attend, -inf elsewhere (also on
    /// the cache rows past the batch that padding brings in). With ALiBi
    /// ([`Architecture::uses_alibi`]) the visible entries hold minus the distance instead of 0.
    pub mask: Tensor<'a>,
    /// The causal mask of sliding-window layers, same shape: also -inf on the rows a window or more
    /// positions before the token. Present when the architecture has a window
    /// ([`Architecture::sliding_window`]).
    pub mask_swa: Option<Tensor<'a>>,
    /// Rows whose logits are wanted, I32 `[n_outputs]`.
    pub output_rows: Tensor<'a>,
    /// Cache rows (positions) the batch's keys and values are written to, I64 `[n_tokens]`.
    pub cache_rows: Tensor<'a>,
    /// Tokens in this batch.
    pub n_tokens: usize,
    /// Cache rows attention looks at, from row 0: at least everything cached plus this batch; with
    /// flash attention rounded up so one graph serves many consecutive tokens.
    pub n_kv: usize,
    /// Tokens already in the KV cache before this batch. Only the unfused attention's transposed
    /// value cache needs it in the graph (its column writes are views at this offset).
    pub n_past: usize,
    /// Use GGML's fused flash attention (else scores, softmax and weighted sum as separate ops).
    pub flash_attention: bool,
}

/// A model architecture: hyperparameters, bound weights and the forward pass.
pub(crate) trait Architecture: Send + Sync {
    /// The model's sizes.
    fn hyperparameters(&self) -> &Hyperparameters;

    /// Builds the forward pass of one batch and returns the logits `[n_vocab, n_outputs]`. Writes the
    /// batch's keys and values into the cache (those copies are expanded into `graph` first).
    fn build<'a>(
        &self,
        ctx: &'a Context,
        graph: &mut Graph<'a>,
        weights: &WeightTensors<'a>,
        cache: &KvTensors<'a>,
        batch: &BatchInputs<'a>,
    ) -> Tensor<'a>;

    /// How cached keys follow their tokens to other positions (see [`PositionShift`]).
    fn position_shift(&self) -> PositionShift;

    /// The window of the sliding-window attention layers, if the model has some: a token at
    /// position `p` sees the positions `p - window + 1..=p` there ([`BatchInputs::mask_swa`]).
    fn sliding_window(&self) -> Option<usize> {
        None
    }

    /// Whether attention is biased by ALiBi (BLOOM, MPT, Refact): then the masks hold, where a token
    /// may attend, minus its distance to the cached position instead of 0, which the attention
    /// multiplies by each head's slope (as llama.cpp fills its KQ mask for such models).
    fn uses_alibi(&self) -> bool {
        false
    }

    /// The most positions the model can encode, when it has a limit: models with learned absolute
    /// position embeddings (GPT-2, StarCoder) have one row per position, so a session's context may
    /// not be longer.
    fn max_positions(&self) -> Option<usize> {
        None
    }
}

/// How the keys and values cached for a token can be moved to another position, which is what
/// reusing cached chunks at new positions needs ([`crate::cache_reuse`]).
#[derive(Clone, Debug)]
pub(crate) enum PositionShift {
    /// Keys carry rotary embeddings whose angles are linear in the position: moving a key by `d`
    /// positions is rotating it by `d` with the same parameters. One set of parameters per layer,
    /// first to last (layers of one model may rotate with different bases).
    Rope(Vec<RopeParams>),
    /// Cached keys and values carry no position at all (ALiBi models: the positional bias comes
    /// from the mask, computed from the rows' positions at attention time): moving them is copying
    /// them.
    Unrotated,
    /// Cached entries cannot be moved (absolute position embeddings, rotations that also scale).
    Unsupported,
}

impl PositionShift {
    /// The shift for `n_layer` layers whose keys are all rotated with `rope`.
    pub(crate) fn for_rope(rope: &RopeParams, n_layer: usize) -> PositionShift {
        PositionShift::for_layers(vec![*rope; n_layer])
    }

    /// The shift for keys rotated with `ropes[layer]` in each layer: supported while every rotation
    /// composes over positions, i.e. without YaRN's magnitude scaling (which a second rotation
    /// would apply twice).
    pub(crate) fn for_layers(ropes: Vec<RopeParams>) -> PositionShift {
        if ropes
            .iter()
            .all(|rope| rope.ext_factor == 0.0 && rope.attn_factor == 1.0)
        {
            PositionShift::Rope(ropes)
        } else {
            PositionShift::Unsupported
        }
    }
}
