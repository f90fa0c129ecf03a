//! `lmrs`: the command-line entry point. Engine subcommands live in `engine_cli`.

mod engine_cli;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(name = "lmrs", version, about = "Local code completions from GGUF models")]
struct Cli {
    #[command(subcommand)]
    command: engine_cli::EngineCommand,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    engine_cli::run(cli.command)
}
