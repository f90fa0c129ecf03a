//! `lmrs complete FILE:LINE:COL`.
//!
//! `complete` runs the language server's completion path once (same prompt builder, model wrapper,
//! stop rules) on a file from disk and prints the suggestion on stdout and its timings on stderr.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use clap::Args;
use lmrs::CancelFlag;
use ropey::Rope;

use super::lsp_flags::ConfigArgs;
use crate::completion::model::{CompletionModel, LoadParams, PROMPT_BATCH_TOKENS};
use crate::completion::pipeline::{
    run_completion, run_remote_completion, CompletionInput, ProjectContext,
};
use crate::completion::project::{ProjectIndex, WalkParams};
use crate::completion::remote::{RemoteEvent, RemoteModel, RemoteParams};
use crate::lsp::position::line_content;

/// Arguments of `lmrs complete`.
#[derive(Debug, Clone, Args)]
pub(crate) struct CompleteArgs {
    /// FILE:LINE:COL, 1-based, COL in characters
    location: String,
    /// Run the completion this many times (shows the warm-session latency after the first)
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Workspace folder (its name and the file's path inside it go into the prompt, as the server
    /// does with the client's workspace folder) [default: none]
    #[arg(long, value_name = "DIR")]
    workspace: Option<PathBuf>,
    #[command(flatten)]
    config: ConfigArgs,
}

/// Splits `FILE:LINE:COL` (the file name may itself contain colons).
fn parse_location(s: &str) -> anyhow::Result<(PathBuf, usize, usize)> {
    let mut parts = s.rsplitn(3, ':');
    let (Some(col), Some(line), Some(file)) = (parts.next(), parts.next(), parts.next()) else {
        bail!("expected FILE:LINE:COL, got {s:?}");
    };
    let line: usize = line.parse().with_context(|| format!("bad line in {s:?}"))?;
    let col: usize = col
        .parse()
        .with_context(|| format!("bad column in {s:?}"))?;
    if line == 0 || col == 0 {
        bail!("LINE and COL are 1-based");
    }
    Ok((PathBuf::from(file), line - 1, col - 1))
}

/// Runs `lmrs complete`.
/// What runs the completion.
enum Engine {
    Local(Box<CompletionModel>),
    Remote(Box<RemoteModel>),
}

pub(crate) fn run(args: &CompleteArgs) -> anyhow::Result<()> {
    let (file, line, col) = parse_location(&args.location)?;
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    let rope = Rope::from_str(&text);
    let content = line_content(&rope, line);
    let cursor = rope.line_to_char(line.min(rope.len_lines().saturating_sub(1)))
        + col.min(content.len_chars());
    let cfg = args.config.to_config();
    // With `--backend` the remote engine runs the model; nothing is loaded here.
    let mut engine = match RemoteParams::from_config(&cfg) {
        Some(remote) => {
            let remote = RemoteModel::new(remote)?;
            eprintln!("lmrs: using the {}", remote.describe());
            Engine::Remote(Box::new(remote))
        }
        None => {
            let params = LoadParams {
                path: cfg.resolved_model_path(),
                threads: cfg.threads,
                context_size: cfg.context_size,
                batch_tokens: PROMPT_BATCH_TOKENS,
                cache_reuse_tokens: cfg.cache_reuse_tokens,
            };
            let t0 = std::time::Instant::now();
            let model = CompletionModel::load(&params)
                .with_context(|| format!("loading {}", params.path.display()))?;
            eprintln!(
                "lmrs: loaded {} in {} ms",
                model.describe(),
                t0.elapsed().as_millis()
            );
            Engine::Local(Box::new(model))
        }
    };
    let workspace = match &args.workspace {
        Some(ws) => workspace_file(ws, &file)?,
        None => (None, None),
    };
    // The project's definitions: the workspace folder indexed here and now (the server does it
    // in the background).
    let mut index = ProjectIndex::default();
    if let (Some(folder), true) = (
        &args.workspace,
        cfg.context_tokens > 0 && cfg.context_workspace,
    ) {
        let stats = index.index_folder(folder, &WalkParams::from_config(&cfg), &|_| true);
        eprintln!(
            "lmrs: indexed {} files ({} definitions) of {} in {} ms{}",
            stats.files,
            stats.definitions,
            folder.display(),
            stats.millis,
            if stats.capped {
                ", stopped at a cap"
            } else {
                ""
            }
        );
    }
    let current = workspace.1.clone().unwrap_or_default();
    let project = |name: &str| index.provided(name, &[], &current);
    let project = ProjectContext {
        lookup: &project,
        others: &[],
        recent_edits: &[],
    };
    let input = CompletionInput::at_cursor(&rope, cursor, &cfg, None, workspace, 1, &project);
    for _ in 0..args.repeat.max(1) {
        let c = match &mut engine {
            Engine::Local(model) => run_completion(model, &input, &cfg, &CancelFlag::new())?,
            Engine::Remote(remote) => {
                let c = run_remote_completion(remote, &input, &cfg, &CancelFlag::new());
                for event in remote.take_events() {
                    if let RemoteEvent::Down(message) = event {
                        eprintln!("{message}");
                    }
                }
                c?
            }
        };
        crate::outln!("{}", c.items.first().map_or("", String::as_str))?;
        eprintln!(
            "lmrs: prompt {} tokens (reused {}, of them moved {}; evaluated {}) {:.0} ms; generated {} tokens {:.0} ms; total {:.0} ms",
            c.prompt_tokens, c.stats.reused, c.stats.moved, c.stats.evaluated, c.stats.prompt_ms, c.stats.generated, c.stats.gen_ms, c.total_ms
        );
        if let Some(left) = c.prompt_cut {
            eprintln!(
                "lmrs: no suggestion: prompt evaluation reached --prompt-timeout-ms ({} ms) with {left} \
                 of {} tokens left (the server finishes such a prompt in the background for the next \
                 request; --repeat goes on from what was evaluated)",
                cfg.prompt_timeout_ms, c.prompt_tokens
            );
        }
    }
    Ok(())
}

/// The workspace folder's name and `file`'s path inside it (`None` when it is outside).
fn workspace_file(
    workspace: &Path,
    file: &Path,
) -> anyhow::Result<(Option<String>, Option<String>)> {
    let workspace = workspace
        .canonicalize()
        .with_context(|| format!("workspace {}", workspace.display()))?;
    let abs = file.canonicalize()?;
    let rel = abs
        .strip_prefix(&workspace)
        .ok()
        .map(|p| p.to_string_lossy().into_owned());
    let name = workspace
        .file_name()
        .map(|n| n.to_string_lossy().into_owned());
    Ok((name, rel))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        assert_eq!(
            parse_location("a/b.rs:3:5").unwrap(),
            (PathBuf::from("a/b.rs"), 2, 4)
        );
        assert_eq!(
            parse_location("C:/x.py:1:1").unwrap(),
            (PathBuf::from("C:/x.py"), 0, 0)
        );
        assert!(parse_location("x.rs:0:1").is_err());
        assert!(parse_location("x.rs:1").is_err());
    }
}
