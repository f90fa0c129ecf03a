//! `lmrs index DIR`: walks a folder as the language server indexes a workspace folder (same caps,
//! `.gitignore`, scanner) and prints what the index holds: a summary, and with `--definitions`
//! every definition as a JSON line (`{"path", "line", "name"}`), to check the scanner against
//! another tool (`scripts/definitions-vs-tree-sitter.py`).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use crate::completion::project::{ProjectIndex, WalkParams};
use crate::config::Config;

/// Arguments of `lmrs index`.
#[derive(Debug, Args)]
pub(crate) struct IndexArgs {
    /// The folder to index (a workspace folder)
    dir: PathBuf,
    /// Print every definition as a JSON line after the summary
    #[arg(long)]
    definitions: bool,
}

/// Runs `lmrs index`.
pub(crate) fn run(args: &IndexArgs) -> anyhow::Result<()> {
    let root = args
        .dir
        .canonicalize()
        .with_context(|| format!("cannot open folder {}", args.dir.display()))?;
    anyhow::ensure!(root.is_dir(), "{} is not a folder", root.display());
    let walk = WalkParams::from_config(&Config::default());
    let mut index = ProjectIndex::default();
    let stats = index.index_folder(&root, &walk, &|_| true);
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{}",
        serde_json::json!({
            "folder": root.display().to_string(),
            "files": stats.files,
            "bytes": stats.bytes,
            "definitions": stats.definitions,
            "capped": stats.capped,
            "ms": stats.millis,
        })
    )?;
    if args.definitions {
        let mut all: Vec<(&str, usize, &str)> = index
            .definitions()
            .map(|(name, d)| (&*d.path, d.line, name))
            .collect();
        all.sort_unstable();
        for (path, line, name) in all {
            writeln!(
                out,
                "{}",
                serde_json::json!({"path": path, "line": line, "name": name})
            )?;
        }
    }
    Ok(())
}
