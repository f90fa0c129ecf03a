//! Engine subcommands of the `lmrs` binary: `infer`, `tokenize`, `bench`, `info`.
//!
//! They drive the engine directly (no LSP) and exist for demos, debugging and benchmarking.

use clap::Subcommand;

/// Subcommands that talk to the engine directly.
#[derive(Debug, Subcommand)]
pub enum EngineCommand {
    /// Generate text from a prompt (being written).
    Infer,
}

/// Runs one engine subcommand.
pub fn run(command: EngineCommand) -> anyhow::Result<()> {
    match command {
        EngineCommand::Infer => anyhow::bail!("not written yet"),
    }
}
