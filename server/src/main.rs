//! `lmrs`: the command-line entry point. `lsp` and `complete` live in the `lmrs_lsp` library;
//! the engine subcommands live in `engine_cli`.

mod engine_cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lmrs_lsp::complete_cli::{CompleteArgs, ConfigArgs};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(
    name = "lmrs",
    version,
    about = "Local code completions from GGUF models"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the language server on stdin/stdout (inline completions; logs go to stderr, `LMRS_LOG`
    /// sets the filter, e.g. `LMRS_LOG=debug`)
    Lsp(ConfigArgs),
    /// Complete once at FILE:LINE:COL with the server's completion path and print the suggestion
    /// and its timings
    Complete(CompleteArgs),
    #[command(flatten)]
    Engine(engine_cli::EngineCommand),
}

fn init_tracing(default: &str) {
    let filter = EnvFilter::try_from_env("LMRS_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of our stdout went away (`lmrs info MODEL | head`): a normal end, as for
        // any Unix filter.
        Err(error) if is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{}", describe_error(&error));
            ExitCode::FAILURE
        }
    }
}

/// `Error: what failed`, then one `caused by:` line per cause that the line before does not
/// already spell out (library errors often include their source's message in their own).
fn describe_error(error: &anyhow::Error) -> String {
    let mut out = format!("Error: {error}");
    let mut previous = error.to_string();
    for cause in error.chain().skip(1) {
        let text = cause.to_string();
        if !previous.contains(&text) {
            out.push_str("\n  caused by: ");
            out.push_str(&text);
        }
        previous = text;
    }
    out
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Lsp(args) => {
            init_tracing("info");
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            runtime.block_on(lmrs_lsp::lsp::server::serve(args.to_config()))
        }
        Command::Complete(args) => {
            init_tracing("warn");
            lmrs_lsp::complete_cli::run(&args)
        }
        Command::Engine(cmd) => engine_cli::run(cmd),
    }
}
