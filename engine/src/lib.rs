//! lmrs: the inference engine behind the lmrs language server.
//!
//! It loads quantized GGUF code models (memory-mapped, weights used in place), tokenizes exactly like
//! llama.cpp, runs the forward pass on GGML's CPU backend through `ggml-sys`, keeps KV-cache sessions
//! that reuse the longest common prefix of successive prompts, and samples tokens.
//!
//! This crate knows nothing of LSP, tokio or JSON: the server crate adapts it to editors.

pub mod gguf;
pub mod tokenizer;
