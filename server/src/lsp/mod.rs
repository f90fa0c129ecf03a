//! The language server: documents, prompt building, generation control, caches and the model worker.
//!
//! Data flow of one completion: the handler in [`server`] snapshots the document rope (an O(1)
//! clone), answers at once from [`cache`] when it can (typing-through or an LRU hit), and otherwise
//! queues a job for the single [`worker`] thread that owns the warm engine session. The worker builds
//! the prompt ([`prompt`]), feeds it (reusing the KV cache's common prefix), and streams tokens through
//! the stop rules ([`generation`]) until a rule, a budget or a cancellation ends the generation.

pub mod cache;
pub mod config;
pub mod documents;
pub mod engine;
pub mod generation;
pub mod lmrs_engine;
pub mod position;
pub mod prompt;
pub mod retrieval;
pub mod server;
pub mod worker;
