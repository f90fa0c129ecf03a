//! The `lmrs` command line: its subcommands and what each runs. `lsp` serves the language server,
//! `complete` runs its completion path once, `serve` answers HTTP requests, the engine subcommands drive the engine directly,
//! `pull`, `models` and `rm` manage the models folder.

mod complete;
mod engine_commands;
mod index;
mod lsp_flags;
mod models;
mod pull;
mod serve;

use clap::{Parser, Subcommand};

use self::complete::CompleteArgs;
use self::engine_commands::EngineCommand;
use self::index::IndexArgs;
use self::lsp_flags::ConfigArgs;
use self::models::RmArgs;
use self::pull::PullArgs;
use self::serve::ServeArgs;

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
    /// Serve the model over HTTP: llama.cpp's /infill and /completion, OpenAI's /v1/completions,
    /// /health, /metrics, /props, /tokenize, /detokenize (loopback only unless --api-key)
    Serve(ServeArgs),
    #[command(flatten)]
    Engine(EngineCommand),
    /// Download a model by name (`lmrs pull qwen2.5-coder:0.5b`, `--list` shows the catalogue) or
    /// Hugging Face path (`owner/repo/file.gguf`) into the models folder
    Pull(PullArgs),
    /// List the models folder's GGUF files with size, architecture and catalogue name
    Models,
    /// Remove a model from the models folder (by catalogue name or file name)
    Rm(RmArgs),
    /// Index a folder as the language server indexes a workspace folder and print what it holds
    /// (`--definitions`: every definition as a JSON line)
    Index(IndexArgs),
}

impl Cli {
    /// The log filter for the command when `LMRS_LOG` sets none, or `None` when it logs nothing.
    pub fn default_log_filter(&self) -> Option<&'static str> {
        match self.command {
            Command::Lsp(_) => Some("info"),
            Command::Complete(_) => Some("warn"),
            Command::Serve(_) => Some("info"),
            Command::Pull(_) => Some("warn"),
            Command::Engine(_) | Command::Models | Command::Rm(_) | Command::Index(_) => None,
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
            Command::Serve(args) => {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()?;
                runtime.block_on(crate::serve::serve(args.to_options()))
            }
            Command::Complete(args) => complete::run(&args),
            Command::Engine(command) => engine_commands::run(command),
            Command::Pull(args) => pull::run(&args),
            Command::Index(args) => index::run(&args),
            Command::Models => models::list(),
            Command::Rm(args) => models::remove(&args),
        }
    }
}
