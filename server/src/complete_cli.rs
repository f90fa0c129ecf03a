//! `lmrs complete FILE:LINE:COL` and the configuration flags shared with `lmrs lsp`.
//!
//! `complete` runs the language server's completion path once (same prompt builder, engine adapter,
//! stop rules) on a file from disk and prints the suggestion on stdout and its timings on stderr.

use std::path::PathBuf;

use anyhow::{bail, Context as _};
use clap::Args;
use ropey::Rope;

use crate::lsp::config::Config;
use crate::lsp::engine::{self, Cancel, LoadParams};
use crate::lsp::prompt::FimOrder;
use crate::lsp::worker::{run_completion, snippet_for_cursor, CursorContext, JobInput};

/// Command-line flags that set configuration defaults (`initializationOptions` and
/// `workspace/didChangeConfiguration` override them in the server).
#[derive(Debug, Clone, Default, Args)]
pub struct ConfigArgs {
    /// GGUF model file [default: $LMRS_MODEL_DIR/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf]
    #[arg(long, value_name = "PATH")]
    pub model: Option<PathBuf>,
    /// Engine threads [default: CPUs, at most 8]
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// KV-cache size in tokens [default: 2048]
    #[arg(long, value_name = "TOKENS")]
    pub context_size: Option<usize>,
    /// Most generated tokens per suggestion [default: 64]
    #[arg(long, value_name = "TOKENS")]
    pub max_tokens: Option<usize>,
    /// Sampling temperature, 0 = greedy [default: 0]
    #[arg(long)]
    pub temperature: Option<f32>,
    /// Prompt tokens before the cursor [default: 384]
    #[arg(long, value_name = "TOKENS")]
    pub prefix_tokens: Option<usize>,
    /// Prompt tokens after the cursor [default: 128]
    #[arg(long, value_name = "TOKENS")]
    pub suffix_tokens: Option<usize>,
    /// FIM order: line-psm (prefix to the cursor line's start, suffix, then the cursor line),
    /// spm (suffix first) or psm (plain prefix-suffix-middle) [default: line-psm]
    #[arg(long, value_parser = parse_order)]
    pub fim_order: Option<FimOrder>,
    /// Single-line suggestions only
    #[arg(long)]
    pub single_line: bool,
    /// Time budget per completion in milliseconds [default: 800]
    #[arg(long, value_name = "MS")]
    pub timeout_ms: Option<u64>,
    /// The prefix window starts on a multiple of this many lines (1 = no rounding) [default: 16]
    #[arg(long, value_name = "LINES")]
    pub block_lines: Option<usize>,
    /// Start the prompt with Qwen's repo-level header (workspace folder name, file path)
    #[arg(long)]
    pub repo_header: bool,
    /// Prompt tokens of similar code retrieved from elsewhere in the file, 0 = off, e.g. 64 [default: 0]
    #[arg(long, value_name = "TOKENS")]
    pub snippet_tokens: Option<usize>,
}

fn parse_order(s: &str) -> Result<FimOrder, String> {
    match s {
        "line-psm" | "linepsm" => Ok(FimOrder::LinePsm),
        "spm" => Ok(FimOrder::Spm),
        "psm" => Ok(FimOrder::Psm),
        _ => Err(format!("unknown FIM order {s:?} (line-psm, spm or psm)")),
    }
}

impl ConfigArgs {
    /// The defaults with these flags applied.
    pub fn to_config(&self) -> Config {
        let mut c = Config::default();
        if let Some(v) = &self.model {
            c.model_path = Some(v.clone());
        }
        macro_rules! set {
            ($($f:ident),*) => { $(if let Some(v) = self.$f { c.$f = v; })* };
        }
        set!(
            threads,
            context_size,
            max_tokens,
            temperature,
            prefix_tokens,
            suffix_tokens,
            fim_order,
            timeout_ms,
            block_lines,
            snippet_tokens
        );
        if self.single_line {
            c.multiline = false;
        }
        if self.repo_header {
            c.repo_header = true;
        }
        c
    }
}

/// Arguments of `lmrs complete`.
#[derive(Debug, Clone, Args)]
pub struct CompleteArgs {
    /// FILE:LINE:COL, 1-based, COL in characters
    pub location: String,
    /// Run the completion this many times (shows the warm-session latency after the first)
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
    /// Workspace folder (its name and the file's path inside it go into the prompt, as the server
    /// does with the client's workspace folder) [default: none]
    #[arg(long, value_name = "DIR")]
    pub workspace: Option<PathBuf>,
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// Splits `FILE:LINE:COL` (the file name may itself contain colons).
pub fn parse_location(s: &str) -> anyhow::Result<(PathBuf, usize, usize)> {
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
pub fn run(args: &CompleteArgs) -> anyhow::Result<()> {
    let (file, line, col) = parse_location(&args.location)?;
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    let rope = Rope::from_str(&text);
    let content = crate::lsp::position::line_content(&rope, line);
    let cursor = rope.line_to_char(line.min(rope.len_lines().saturating_sub(1)))
        + col.min(content.len_chars());
    let cfg = args.config.to_config();
    let params = LoadParams {
        path: cfg.resolved_model_path(),
        threads: cfg.threads,
        context_size: cfg.context_size,
    };
    let t0 = std::time::Instant::now();
    let mut engine =
        engine::load(&params).with_context(|| format!("loading {}", params.path.display()))?;
    eprintln!(
        "lmrs: loaded {} in {} ms",
        engine.describe(),
        t0.elapsed().as_millis()
    );
    let (prefix_tokens, suffix_tokens) = cfg.budgets();
    let (repo_name, rel_path) = match &args.workspace {
        Some(ws) => {
            let ws = ws
                .canonicalize()
                .with_context(|| format!("workspace {}", ws.display()))?;
            let abs = file.canonicalize()?;
            let rel = abs
                .strip_prefix(&ws)
                .ok()
                .map(|p| p.to_string_lossy().into_owned());
            (
                ws.file_name().map(|n| n.to_string_lossy().into_owned()),
                rel,
            )
        }
        None => (None, None),
    };
    let ctx = CursorContext::extract(&rope, cursor, prefix_tokens, suffix_tokens);
    let input = JobInput {
        snippet: snippet_for_cursor(
            &rope,
            cursor,
            prefix_tokens,
            suffix_tokens,
            cfg.snippet_tokens,
            None,
        )
        .map(|s| s.text),
        ctx,
        repo_name,
        rel_path,
        alternatives: 1,
    };
    for _ in 0..args.repeat.max(1) {
        let c = run_completion(engine.as_mut(), &input, &cfg, &Cancel::new())?;
        crate::outln!("{}", c.items.first().map_or("", String::as_str))?;
        eprintln!(
            "lmrs: prompt {} tokens (reused {}, evaluated {}) {:.0} ms; generated {} tokens {:.0} ms; total {:.0} ms",
            c.prompt_tokens, c.stats.reused, c.stats.evaluated, c.stats.prompt_ms, c.stats.generated, c.stats.gen_ms, c.total_ms
        );
    }
    Ok(())
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

    #[test]
    fn flags_override_defaults() {
        let a = ConfigArgs {
            max_tokens: Some(9),
            single_line: true,
            ..ConfigArgs::default()
        };
        let c = a.to_config();
        assert_eq!(c.max_tokens, 9);
        assert!(!c.multiline);
        assert_eq!(c.context_size, Config::default().context_size);
    }
}
