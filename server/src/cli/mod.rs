//! The `lmrs` command line: its subcommands and what each runs. `lsp` serves the language server,
//! `complete` runs its completion path once, the engine subcommands drive the engine directly.

mod complete;
mod engine_commands;
mod lsp_flags;

use clap::{Parser, Subcommand};

use self::complete::CompleteArgs;
use self::engine_commands::EngineCommand;
use self::lsp_flags::ConfigArgs;

/// The `lmrs` command line.
#[derive(Debug, Parser)]
#[command(
    name = "lmrs",
    version,
    about = "Local code completions from GGUF models"
)]
pub struct Cli {
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
    Engine(EngineCommand),
}

impl Cli {
    /// The log filter for the command when `LMRS_LOG` sets none, or `None` when it logs nothing.
    pub fn default_log_filter(&self) -> Option<&'static str> {
        match self.command {
            Command::Lsp(_) => Some("info"),
            Command::Complete(_) => Some("warn"),
            Command::Engine(_) => None,
        }
    }

    /// Runs the command.
    pub fn run(self) -> anyhow::Result<()> {
        match self.command {
            Command::Lsp(args) => {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()?;
                runtime.block_on(crate::lsp::server::serve(args.to_config()))
            }
            Command::Complete(args) => complete::run(&args),
            Command::Engine(command) => engine_commands::run(command),
        }
    }
}
