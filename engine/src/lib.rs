//! lmrs: the inference engine behind the lmrs language server.
//!
//! It loads quantized GGUF code models (memory-mapped, weights used in place), tokenizes exactly like
//! llama.cpp, runs the forward pass on GGML's CPU backend through `ggml-sys`, keeps KV-cache sessions
//! that reuse the longest common prefix of successive prompts, and samples tokens.
//!
//! This crate knows nothing of LSP, tokio or JSON: the server crate adapts it to editors.
//!
//! ```no_run
//! use std::sync::Arc;
//! use lmrs::{InferenceFeedback, InferenceParameters, Model, ModelParams, SessionParams};
//!
//! let model = Arc::new(Model::load("models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", ModelParams::default())?);
//! let mut session = model.create_session(SessionParams::default())?;
//! let params = InferenceParameters::default().with_top_p(0.95).with_top_k(40);
//! session.infer("def fibonacci(n):", 32, &params, |token| {
//!     print!("{}", token.text);
//!     InferenceFeedback::Continue
//! })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod gguf;
pub mod kv_cache;
pub mod model;
pub mod models;
pub mod sampling;
pub mod session;
pub mod tiny;
pub mod tokenizer;
pub mod widen;

pub use model::{default_thread_count, LoadError, Model, ModelInfo, ModelParams};
pub use sampling::{InferenceParameters, RunnerUp, Sampler};
pub use session::{
    CancelFlag, FeedStats, GeneratedToken, InferError, InferenceFeedback, InferenceStats, Prompt,
    Session, SessionParams, StopReason,
};
pub use tokenizer::{TokenId, Tokenizer};

/// CPU features GGML was built for and detected (for `lmrs info` and bench tables).
pub fn cpu_features() -> String {
    ggml_sys::cpu_features()
}
