//! lmrs-lsp: the lmrs language server (`lmrs lsp`) and the one-shot `lmrs complete` command.
//!
//! The LSP plumbing lives in [`lsp`]; everything that decides *what* to suggest (positions, prompt
//! building, stop rules, caches) is written as pure functions there and tested without a model.

pub mod complete_cli;
pub mod lsp;
