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
