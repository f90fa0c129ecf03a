//! lmrs: the inference engine behind the lmrs language server.
//!
//! It loads quantized GGUF code models (memory-mapped, weights used in place), tokenizes exactly like
//! llama.cpp, runs the forward pass on GGML's CPU backend through `ggml-sys`, keeps KV-cache sessions
//! that reuse the longest common prefix of successive prompts, and samples tokens.
//!
//! This crate knows nothing of LSP, tokio or JSON: the server crate adapts it to editors. Its API is
//! what this file re-exports, plus the [`gguf`] reader; every other module is private.
//!
//! ```no_run
//! use std::sync::Arc;
//! use lmrs::{InferenceFeedback, InferenceParameters, Model, ModelParams, Session, SessionParams};
//!
//! let model = Arc::new(Model::load("models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", ModelParams::default())?);
//! let mut session = Session::new(Arc::clone(&model), SessionParams::default())?;
//! let params = InferenceParameters::default().with_top_p(0.95).with_top_k(40);
//! session.infer("def fibonacci(n):", 32, &params, |token| {
//!     print!("{}", token.text);
//!     InferenceFeedback::Continue
//! })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(unreachable_pub)]

mod cache_reuse;
mod error;
pub mod gguf;
mod hparams;
mod kv_cache;
mod model;
mod models;
mod sampling;
mod session;
mod tokenizer;
mod weights;

pub use error::{InferError, LoadError};
pub use hparams::Hyperparameters;
pub use model::{default_thread_count, Model, ModelInfo, ModelParams};
pub use sampling::{InferenceParameters, RunnerUp};
pub use session::{
    CancelFlag, FeedStats, GeneratedToken, InferenceFeedback, InferenceStats, Prompt, Session,
    SessionParams, StopReason,
};
pub use tokenizer::{FimTokens, StreamDecoder, TokenId, Tokenizer, TokenizerError};
pub use weights::IN_PLACE_MIN_BATCH;

/// CPU features GGML was built for and detected (for `lmrs info` and bench tables).
pub fn cpu_features() -> String {
    ggml_sys::cpu_features()
}

/// Which build of GGML's CPU backend runs and why, e.g. `x86-64-v4-vnni (auto; built: ...)`.
/// A `dispatch` build holds several and picks the best the CPU supports (`LMRS_CPU_VARIANT`
/// overrides); other builds hold one, `native` or `portable`.
pub fn cpu_variant() -> String {
    ggml_sys::cpu_variant()
}

/// The name of the CPU variant that runs (`x86-64-v3`, `native`, ...).
pub fn cpu_variant_name() -> &'static str {
    ggml_sys::cpu_variant::selected().name
}

/// Names of the CPU variants this binary holds that this CPU can run, lowest first.
pub fn supported_cpu_variants() -> Vec<&'static str> {
    ggml_sys::cpu_variant::supported_variants()
        .iter()
        .map(|v| v.name)
        .collect()
}

/// The architectures (`general.architecture` names) this engine runs, in registry order.
pub fn supported_architectures() -> Vec<&'static str> {
    models::supported()
}

/// Whether this binary holds several CPU variants chosen at run time (`ggml-sys/dispatch`).
pub fn cpu_dispatch_build() -> bool {
    ggml_sys::cpu_variant::is_dispatch_build()
}
