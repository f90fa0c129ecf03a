//! lmrs-lsp: the lmrs language server (`lmrs lsp`) and the one-shot `lmrs complete` command.
//!
//! The LSP plumbing lives in [`lsp`]; everything that decides *what* to suggest (positions, prompt
//! building, stop rules, caches) is written as pure functions there and tested without a model.

pub mod complete_cli;
pub mod lsp;

/// `println!` that returns the write error instead of panicking, so `lmrs info MODEL | head`
/// ends quietly when the reader goes away (`main` treats a broken pipe as a normal end).
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
    }};
}
