//! Model architectures: one file each, over the shared blocks in [`blocks`], and the registry that
//! names each of them once.
//!
//! An architecture reads its hyperparameters from GGUF metadata, binds its weights by GGUF name (with
//! shapes checked, so graph building never trips a GGML assertion), and builds the forward graph for a
//! batch of tokens ([`Architecture`]). Adding one is one file plus one line in [`REGISTRY`].

pub(crate) mod architecture;
mod blocks;

mod bloom;
mod gemma;
mod gemma2;
mod gemma3;
mod gpt2;
mod gptneox;
mod granite;
mod llama;
mod mpt;
mod phi3;
mod qwen2;
mod qwen3;
mod qwen3moe;
mod refact;
mod stablelm;
mod starcoder;
mod starcoder2;

pub(crate) use architecture::{Architecture, BatchInputs, PositionShift};

use crate::error::LoadError;
use crate::weights::WeightBinder;

/// Reads hyperparameters and binds weights for one architecture.
pub(crate) type LoadFn = fn(&mut WeightBinder<'_>) -> Result<Box<dyn Architecture>, LoadError>;

/// Architectures lmrs runs, by their `general.architecture` name.
const REGISTRY: &[(&str, LoadFn)] = &[
    ("qwen2", qwen2::load),
    ("llama", llama::load),
    ("gemma3", gemma3::load),
    ("gpt2", gpt2::load),
    ("starcoder", starcoder::load),
    ("gptneox", gptneox::load),
    ("bloom", bloom::load),
    ("mpt", mpt::load),
    ("starcoder2", starcoder2::load),
    ("stablelm", stablelm::load),
    ("refact", refact::load),
    ("qwen3", qwen3::load),
    ("qwen3moe", qwen3moe::load),
    ("gemma", gemma::load),
    ("gemma2", gemma2::load),
    ("phi3", phi3::load),
    ("granite", granite::load),
];

/// The loader of the architecture called `name` (`general.architecture`), if lmrs runs it.
pub(crate) fn find(name: &str) -> Option<LoadFn> {
    REGISTRY
        .iter()
        .find(|(registered, _)| *registered == name)
        .map(|&(_, load)| load)
}

/// Names of the architectures lmrs runs, for error messages.
pub(crate) fn supported() -> Vec<&'static str> {
    REGISTRY.iter().map(|&(name, _)| name).collect()
}
