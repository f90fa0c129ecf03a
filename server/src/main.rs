//! `lmrs`: the command-line entry point. The commands live in the `lmrs_lsp` library
//! ([`lmrs_lsp::cli`]); this is the edge where their errors become a message and an exit code.

use std::process::ExitCode;

use clap::Parser;
use lmrs_lsp::cli::Cli;
use tracing_subscriber::EnvFilter;

fn init_tracing(default: &str) {
    let filter = EnvFilter::try_from_env("LMRS_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(filter) = cli.default_log_filter() {
        init_tracing(filter);
    }
    match cli.run() {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of our stdout went away (`lmrs info MODEL | head`): a normal end, as for
        // any Unix filter.
        Err(error) if is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            // `Error: what failed`, then one `caused by:` line per cause that the line before does
            // not already spell out.
            eprintln!(
                "Error: {}",
                lmrs_lsp::report::describe(error.as_ref(), "\n  caused by: ")
            );
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
