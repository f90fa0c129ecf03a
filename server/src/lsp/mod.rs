//! The language server: documents, positions, the completion cache and the LSP handlers.
//!
//! Data flow of one completion: the handler in [`server`] snapshots the document rope (an O(1)
//! clone), answers at once from [`cache`] when it can (typing-through or an LRU hit), and otherwise
//! queues a job for the model worker ([`crate::completion::worker`]) and awaits its answer.

pub(crate) mod cache;
pub mod documents;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod position;
pub(crate) mod server;
pub(crate) mod transport;
pub(crate) mod workspace;
