//! The configuration flags of `lmrs lsp` (and `lmrs complete`): defaults that
//! `initializationOptions` and `workspace/didChangeConfiguration` override in the server.

use std::path::PathBuf;

use clap::Args;

use crate::config::{BackendKind, Config, FimOrder};

/// Command-line flags that set configuration defaults (`initializationOptions` and
/// `workspace/didChangeConfiguration` override them in the server).
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct ConfigArgs {
    /// GGUF model file [default: $LMRS_MODEL_DIR/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf]
    #[arg(long, value_name = "PATH")]
    model: Option<PathBuf>,
    /// Engine threads, at most the CPUs [default: physical cores, at most 8]
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// KV-cache size in tokens [default: 2048]
    #[arg(long, value_name = "TOKENS")]
    context_size: Option<usize>,
    /// Shortest run of cached prompt tokens moved to its new position instead of evaluated again
    /// when the prompt changes before it, 0 = off [default: 64]
    #[arg(long, value_name = "TOKENS")]
    cache_reuse_tokens: Option<usize>,
    /// Most generated tokens per suggestion [default: 64]
    #[arg(long, value_name = "TOKENS")]
    max_tokens: Option<usize>,
    /// Sampling temperature, 0 = greedy [default: 0]
    #[arg(long)]
    temperature: Option<f32>,
    /// Prompt tokens before the cursor [default: 384]
    #[arg(long, value_name = "TOKENS")]
    prefix_tokens: Option<usize>,
    /// Prompt tokens after the cursor [default: 128]
    #[arg(long, value_name = "TOKENS")]
    suffix_tokens: Option<usize>,
    /// FIM order: line-psm (prefix to the cursor line's start, suffix, then the cursor line),
    /// spm (suffix first) or psm (plain prefix-suffix-middle) [default: line-psm]
    #[arg(long, value_parser = parse_order)]
    fim_order: Option<FimOrder>,
    /// Single-line suggestions only
    #[arg(long)]
    single_line: bool,
    /// Time budget per completion in milliseconds [default: 800]
    #[arg(long, value_name = "MS")]
    timeout_ms: Option<u64>,
    /// Most milliseconds of prompt evaluation per request, 0 = no limit; a cut prompt is finished
    /// in the background for the next request [default: 3000]
    #[arg(long, value_name = "MS")]
    prompt_timeout_ms: Option<u64>,
    /// The prefix window starts on a multiple of this many lines (1 = no rounding) [default: 16]
    #[arg(long, value_name = "LINES")]
    block_lines: Option<usize>,
    /// Start the prompt with Qwen's repo-level header (workspace folder name, file path)
    #[arg(long)]
    repo_header: bool,
    /// Prompt tokens of similar code retrieved from elsewhere in the file, 0 = off, e.g. 64 [default: 0]
    #[arg(long, value_name = "TOKENS")]
    snippet_tokens: Option<usize>,
    /// Prompt tokens of definitions from other files of the project (taken from the prefix's),
    /// 0 = off, e.g. 256 [default: 0]
    #[arg(long, value_name = "TOKENS")]
    context_tokens: Option<usize>,
    /// Do not index the workspace folders on disk (other open documents are still looked up)
    #[arg(long)]
    no_workspace_index: bool,
    /// Do not work ahead of requests (the suggestion after an accept, the prompt after an edit)
    #[arg(long)]
    no_prefetch: bool,
    /// Language server: download a missing default (or catalogue) model into the models folder,
    /// then load it
    #[arg(long)]
    auto_pull: bool,
    /// Run the model on a remote engine at this base URL (e.g. http://gpu-box:8080) instead of
    /// loading one here
    #[arg(long, value_name = "URL")]
    backend: Option<String>,
    /// The remote engine's protocol: lmrs (`lmrs serve`), llama.cpp (llama-server's /completion)
    /// or openai (/v1/completions: vLLM, SGLang, TGI, Ollama) [default: lmrs]
    #[arg(long, value_name = "KIND", value_parser = parse_backend_kind)]
    backend_kind: Option<BackendKind>,
    /// Sent to the remote engine as a Bearer token
    #[arg(long, value_name = "KEY")]
    backend_api_key: Option<String>,
    /// The model name for an OpenAI-compatible remote (also picks its FIM tokens)
    #[arg(long, value_name = "NAME")]
    backend_model: Option<String>,
    /// Remote engine: connection timeout and longest wait for each piece of an answer
    /// [default: 10000]
    #[arg(long, value_name = "MS")]
    backend_timeout_ms: Option<u64>,
    /// Remote engine: the FIM prefix token's text, e.g. '<|fim_prefix|>' (with --fim-suffix and
    /// --fim-middle; default: found from the remote or the model's name)
    #[arg(long, value_name = "TEXT")]
    fim_prefix: Option<String>,
    /// Remote engine: the FIM suffix token's text
    #[arg(long, value_name = "TEXT")]
    fim_suffix: Option<String>,
    /// Remote engine: the FIM middle token's text
    #[arg(long, value_name = "TEXT")]
    fim_middle: Option<String>,
}

fn parse_backend_kind(s: &str) -> Result<BackendKind, String> {
    BackendKind::parse(s)
        .ok_or_else(|| format!("unknown backend kind {s:?} (lmrs, llama.cpp or openai)"))
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
    pub(crate) fn to_config(&self) -> Config {
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
            cache_reuse_tokens,
            max_tokens,
            temperature,
            prefix_tokens,
            suffix_tokens,
            fim_order,
            timeout_ms,
            prompt_timeout_ms,
            block_lines,
            snippet_tokens,
            context_tokens
        );
        for (field, value) in [
            (&mut c.backend, &self.backend),
            (&mut c.backend_api_key, &self.backend_api_key),
            (&mut c.backend_model, &self.backend_model),
            (&mut c.fim_prefix, &self.fim_prefix),
            (&mut c.fim_suffix, &self.fim_suffix),
            (&mut c.fim_middle, &self.fim_middle),
        ] {
            if value.is_some() {
                field.clone_from(value);
            }
        }
        if let Some(kind) = self.backend_kind {
            c.backend_kind = kind;
        }
        if let Some(ms) = self.backend_timeout_ms {
            c.backend_timeout_ms = ms;
        }
        if self.no_workspace_index {
            c.context_workspace = false;
        }
        if self.no_prefetch {
            c.prefetch_next = false;
        }
        if self.single_line {
            c.multiline = false;
        }
        if self.auto_pull {
            c.auto_pull = true;
        }
        if self.repo_header {
            c.repo_header = true;
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(!c.auto_pull);
        assert_eq!(c.context_size, Config::default().context_size);
        assert_eq!(c.backend, None);
        let remote = ConfigArgs {
            backend: Some("http://gpu:8080".into()),
            backend_kind: Some(BackendKind::OpenAi),
            backend_model: Some("qwen".into()),
            ..ConfigArgs::default()
        }
        .to_config();
        assert_eq!(remote.backend.as_deref(), Some("http://gpu:8080"));
        assert_eq!(remote.backend_kind, BackendKind::OpenAi);
        assert_eq!(remote.backend_model.as_deref(), Some("qwen"));
        assert!(parse_backend_kind("vllm").is_err());
    }
}
