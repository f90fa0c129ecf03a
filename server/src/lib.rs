//! lmrs-lsp: the lmrs language server (`lmrs lsp`), the one-shot `lmrs complete` command and the
//! engine subcommands of the `lmrs` binary.
//!
//! Layers, each using only those before it: [`config`]; [`pull`] (getting models by name: catalogue,
//! download, models folder); `completion` (what to suggest: the pure
//! prompt, retrieval and stop rules, then the model, the pipeline and its worker thread); [`lsp`]
//! (documents, positions, cache, handlers); `serve` (the HTTP server: slots, llama.cpp- and
//! OpenAI-compatible endpoints); [`cli`] (the command line). [`report`] shows errors.

pub mod cli;
pub(crate) mod completion;
pub(crate) mod config;
pub mod lsp;
pub mod pull;
pub mod report;
pub(crate) mod serve;

/// `println!` that returns the write error instead of panicking, so `lmrs info MODEL | head`
/// ends quietly when the reader goes away (`main` treats a broken pipe as a normal end).
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
    }};
}
