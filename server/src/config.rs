//! Typed configuration with documented defaults.
//!
//! Precedence: built-in defaults < command-line flags of `lmrs lsp` < `initializationOptions` <
//! `workspace/didChangeConfiguration` (either the settings object itself or its `lmrs` member).
//! Overrides are partial JSON objects in camelCase, deep-merged into the current configuration.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// File name of the default model inside the model directory.
/// Qwen2.5-Coder 1.5B: on HumanEval single-line infilling it passes 0.83 against the 0.5B's 0.57,
/// for about a quarter more latency per suggestion (docs/prompt.md); the default is the one that is
/// right. The 0.5B stays the model of the demo, the tests and the benchmarks (`--model`).
pub(crate) const DEFAULT_MODEL_FILE: &str = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf";

/// Errors from applying a configuration override.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    /// The override is not an object or has a field of the wrong type.
    #[error("invalid lmrs configuration: {0}")]
    Invalid(#[from] serde_json::Error),
}

/// Order of the FIM parts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum FimOrder {
    /// `<|fim_prefix|>P<|fim_suffix|>S<|fim_middle|>L` where P ends at the start of the cursor line
    /// and L is the cursor line before the cursor: the order the model was trained on (the hole just
    /// starts at the line start), and typing within a line only appends to the end of the prompt.
    #[default]
    #[serde(alias = "linepsm", alias = "line_psm")]
    LinePsm,
    /// `<|fim_suffix|>S<|fim_prefix|>P<|fim_middle|>`: typing only appends to the end of the prompt,
    /// but Qwen2.5-Coder was not trained on this order and completes worse in it (measurements:
    /// docs/prompt.md).
    Spm,
    /// `<|fim_prefix|>P<|fim_suffix|>S<|fim_middle|>`: P ends at the cursor, so every keystroke
    /// changes P and the whole suffix is evaluated again.
    Psm,
}

/// The protocol of a remote engine (see `Config::backend`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum BackendKind {
    /// `lmrs serve`: llama.cpp's protocol (`/completion`, `/tokenize`).
    #[default]
    #[serde(rename = "lmrs")]
    Lmrs,
    /// llama.cpp's `llama-server`: `POST /completion` with `cache_prompt`, `POST /tokenize`.
    #[serde(rename = "llama.cpp", alias = "llamacpp", alias = "llama-cpp")]
    LlamaCpp,
    /// An OpenAI-compatible `POST /v1/completions` (vLLM, SGLang, TGI, Ollama).
    #[serde(rename = "openai")]
    OpenAi,
}

impl BackendKind {
    /// The name used in the configuration and in messages.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Lmrs => "lmrs",
            Self::LlamaCpp => "llama.cpp",
            Self::OpenAi => "openai",
        }
    }

    /// The kind called `name` in the configuration.
    pub(crate) fn parse(name: &str) -> Option<Self> {
        match name {
            "lmrs" => Some(Self::Lmrs),
            "llama.cpp" | "llamacpp" | "llama-cpp" => Some(Self::LlamaCpp),
            "openai" => Some(Self::OpenAi),
            _ => None,
        }
    }
}

/// Server configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Config {
    /// GGUF model file. Default: `qwen2.5-coder-1.5b-instruct-q4_k_m.gguf` in [`models_dir`]
    /// (`$LMRS_MODEL_DIR`, else `$XDG_DATA_HOME/lmrs/models`, else `~/.local/share/lmrs/models`).
    pub(crate) model_path: Option<PathBuf>,
    /// Threads for the engine. Default: the physical cores, at most 8 (GGML's workers spin at
    /// barriers: a second thread on a core's other hyper-thread only adds contention). More than
    /// the logical CPUs are capped to them, with a warning.
    pub(crate) threads: usize,
    /// KV-cache size in tokens. Default 2048.
    pub(crate) context_size: usize,
    /// Most generated tokens per suggestion. Default 64.
    pub(crate) max_tokens: usize,
    /// Sampling temperature; 0 is greedy. Default 0.
    pub(crate) temperature: f32,
    /// Tokens of text before the cursor in the prompt. Default 384 (3× the suffix).
    pub(crate) prefix_tokens: usize,
    /// Tokens of text after the cursor in the prompt. Default 128.
    pub(crate) suffix_tokens: usize,
    /// FIM order: `line-psm`, `spm` or `psm`. Default `line-psm`: prefix up to the cursor line's
    /// start, suffix, then the cursor line before the cursor after `<|fim_middle|>` (trained order,
    /// and typing within a line keeps the KV cache; see docs/prompt.md).
    pub(crate) fim_order: FimOrder,
    /// Put Qwen's repo-level header (`<|repo_name|>` workspace folder name, `<|file_sep|>` relative
    /// path) before the FIM part. Default false: with suffix-first order the header can lead the
    /// model to complete the wrong function (measurements: docs/prompt.md).
    pub(crate) repo_header: bool,
    /// The prefix window starts on a multiple of this many lines. Default 16.
    pub(crate) block_lines: usize,
    /// Tokens of similar code retrieved from elsewhere in the document (the lines most like those
    /// above the cursor and what followed them), shown before the prefix; 0 turns retrieval off.
    /// Default 0: the snippet lengthens every new prompt, and one that changes with the cursor's
    /// line costs a full prompt evaluation, for a small gain in suggestions (measurements:
    /// docs/prompt.md).
    pub(crate) snippet_tokens: usize,
    /// Prompt tokens of definitions from other files of the project (the names the file imports
    /// and uses around the cursor), labelled with their paths at the start of the prompt; they are
    /// taken from the prefix's budget, so the prompt does not grow. 0 (the default) turns project
    /// context off: it measured no better yet (docs/prompt.md).
    pub(crate) context_tokens: usize,
    /// Look up definitions in the other open documents (their current text). Default true.
    pub(crate) context_open_documents: bool,
    /// Show the lines around the latest edits in other open documents (newest first, after the
    /// definitions and similar code). Default true.
    pub(crate) context_recent_edits: bool,
    /// Index the workspace folders on disk in the background (respecting `.gitignore`) and look up
    /// definitions there. Default true.
    pub(crate) context_workspace: bool,
    /// Workspace files larger than this many bytes are not indexed. Default 512 KiB.
    pub(crate) index_max_file_bytes: u64,
    /// At most this many workspace files are indexed. Default 20,000.
    pub(crate) index_max_files: usize,
    /// The index stops after reading this many bytes. Default 128 MiB.
    pub(crate) index_max_total_bytes: u64,
    /// Globs (gitignore syntax, relative to a workspace folder) of files never indexed, e.g.
    /// `["vendor/**", "*.generated.ts"]`.
    pub(crate) index_exclude: Vec<String>,
    /// Multi-line suggestions when nothing stands right of the cursor. Default true.
    pub(crate) multiline: bool,
    /// Most lines of a multi-line suggestion. Default 8.
    pub(crate) max_lines: usize,
    /// Time budget of one request in milliseconds, counted from its start; generation always gets
    /// at least half of it, and alternatives are only tried within it. Default 800, so a keystroke
    /// is answered within about a second.
    pub(crate) timeout_ms: u64,
    /// Most milliseconds of prompt evaluation per request (checked between micro-batches); 0 = no
    /// limit. A prompt cut by it answers with no suggestion, keeps what it evaluated in the KV
    /// cache, and is finished in the background while no request waits, so the next keystroke
    /// finds it ready. Default 3000.
    pub(crate) prompt_timeout_ms: u64,
    /// Suggestions for an explicitly invoked inline completion (sampled after the greedy one). Default 3.
    pub(crate) alternatives: usize,
    /// Per-language enable by LSP language id, e.g. `{"markdown": false}`; unlisted languages are on.
    pub(crate) languages: BTreeMap<String, bool>,
    /// Suggestions kept in the LRU cache. Default 256.
    pub(crate) cache_size: usize,
    /// Work ahead of the editor's requests: after a suggestion is shown, compute the next one as
    /// if it were accepted (on a second session, whose KV cache costs memory: 24 MiB for Qwen
    /// 0.5B at 2048 tokens), so accepting is answered from the cache; after an edit, evaluate the
    /// prompt at its end while the editor debounces its request. Both only use time no request
    /// needs (a request stops them at once). Default true.
    pub(crate) prefetch_next: bool,
    /// Shortest run of prompt tokens, already evaluated at another position, that is moved there
    /// in the KV cache instead of evaluated again when the prompt changes before it (a context
    /// chunk swapped, a line finished before an unchanged suffix); 0 turns this off. The moved
    /// tokens keep what they attended to before the change, so suggestions can differ slightly
    /// from a fresh evaluation's. Default 64 (measurements: docs/performance.md).
    pub(crate) cache_reuse_tokens: usize,
    /// When the model file to load does not exist and is the default model or a catalogue model's
    /// file in [`models_dir`], download it (as `lmrs pull` would, with `$/progress` in the editor)
    /// and then load it. Default false: the server says which `lmrs pull` to run instead.
    pub(crate) auto_pull: bool,
    /// Base URL of a remote engine (e.g. `http://gpu-box:8080`) that runs the model instead of
    /// this process: prompts, caches and stop rules stay here, only the model call goes there.
    /// Default none (the local model).
    pub(crate) backend: Option<String>,
    /// The remote engine's protocol: `lmrs` (`lmrs serve`), `llama.cpp` (`llama-server`'s
    /// `/completion`) or `openai` (`/v1/completions` of vLLM, SGLang, TGI, Ollama). Default `lmrs`.
    pub(crate) backend_kind: BackendKind,
    /// Sent to the remote engine as `Authorization: Bearer KEY`. Default none.
    pub(crate) backend_api_key: Option<String>,
    /// The `model` field of OpenAI requests; its name also picks the FIM tokens when they are not
    /// configured. Default none.
    pub(crate) backend_model: Option<String>,
    /// Remote engine: connection timeout and the longest wait for an answer's first piece or the
    /// next one, in milliseconds. Default 10000.
    pub(crate) backend_timeout_ms: u64,
    /// Remote engine: the FIM prefix token's text (e.g. `<|fim_prefix|>`); with `fimSuffix` and
    /// `fimMiddle` it replaces what is found from the remote or the model's name. Default none.
    pub(crate) fim_prefix: Option<String>,
    /// Remote engine: the FIM suffix token's text. Default none.
    pub(crate) fim_suffix: Option<String>,
    /// Remote engine: the FIM middle token's text. Default none.
    pub(crate) fim_middle: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            model_path: None,
            threads: default_threads(),
            context_size: 2048,
            cache_reuse_tokens: 64,
            max_tokens: 64,
            temperature: 0.0,
            prefix_tokens: 384,
            suffix_tokens: 128,
            fim_order: FimOrder::LinePsm,
            repo_header: false,
            block_lines: 16,
            snippet_tokens: 0,
            context_tokens: 0,
            context_open_documents: true,
            context_recent_edits: true,
            context_workspace: true,
            index_max_file_bytes: 512 * 1024,
            index_max_files: 20_000,
            index_max_total_bytes: 128 << 20,
            index_exclude: Vec::new(),
            multiline: true,
            max_lines: 8,
            timeout_ms: 800,
            prompt_timeout_ms: 3000,
            alternatives: 3,
            languages: BTreeMap::new(),
            cache_size: 256,
            prefetch_next: true,
            auto_pull: false,
            backend: None,
            backend_kind: BackendKind::Lmrs,
            backend_api_key: None,
            backend_model: None,
            backend_timeout_ms: 10_000,
            fim_prefix: None,
            fim_suffix: None,
            fim_middle: None,
        }
    }
}

/// The models folder: where the server looks for its default model and `lmrs pull` puts models.
/// `$LMRS_MODEL_DIR`, else `$XDG_DATA_HOME/lmrs/models` (when `XDG_DATA_HOME` is an absolute path),
/// else `~/.local/share/lmrs/models` (XDG's default, so unchanged for those who set nothing).
pub(crate) fn models_dir() -> PathBuf {
    models_dir_from(|key| std::env::var_os(key))
}

/// [`models_dir`] with the environment given as a lookup (empty values count as unset).
fn models_dir_from(var: impl Fn(&str) -> Option<std::ffi::OsString>) -> PathBuf {
    let set = |key| {
        var(key)
            .filter(|value| !value.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = set("LMRS_MODEL_DIR") {
        return dir;
    }
    if let Some(data) = set("XDG_DATA_HOME").filter(|p| p.is_absolute()) {
        return data.join("lmrs/models");
    }
    set("HOME")
        .unwrap_or_default()
        .join(".local/share/lmrs/models")
}

/// The machine's logical CPUs.
pub(crate) fn logical_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The default engine thread count: physical cores (Linux: distinct core ids per package in
/// `/proc/cpuinfo`; elsewhere the logical CPUs), at most 8.
fn default_threads() -> usize {
    let physical = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .map(|info| physical_cores(&info))
        .filter(|&n| n > 0)
        .unwrap_or_else(logical_cpus);
    physical.min(logical_cpus()).clamp(1, 8)
}

/// Distinct (`physical id`, `core id`) pairs of a `/proc/cpuinfo`; 0 when it names none.
fn physical_cores(cpuinfo: &str) -> usize {
    let mut cores = std::collections::HashSet::new();
    let mut package = "";
    for line in cpuinfo.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        match key.trim() {
            "physical id" => package = value.trim(),
            "core id" => {
                cores.insert((package.to_owned(), value.trim().to_owned()));
            }
            _ => {}
        }
    }
    cores.len()
}

fn merge(base: &mut serde_json::Value, patch: &serde_json::Value) {
    match (base, patch) {
        (serde_json::Value::Object(b), serde_json::Value::Object(p)) => {
            for (k, v) in p {
                merge(b.entry(k.clone()).or_insert(serde_json::Value::Null), v);
            }
        }
        (b, p) => *b = p.clone(),
    }
}

impl Config {
    /// This configuration with a partial JSON override applied (`null` or a non-object is ignored;
    /// an `lmrs` member is used when present, so both `{"lmrs": {...}}` and `{...}` work).
    pub(crate) fn merged(&self, patch: &serde_json::Value) -> Result<Config, ConfigError> {
        let patch = patch.get("lmrs").unwrap_or(patch);
        if !patch.is_object() {
            return Ok(self.clone());
        }
        let mut value = serde_json::to_value(self)?;
        merge(&mut value, patch);
        Ok(serde_json::from_value(value)?)
    }

    /// The model file to load: `model_path`, else the default model in [`models_dir`].
    pub(crate) fn resolved_model_path(&self) -> PathBuf {
        if let Some(p) = &self.model_path {
            return p.clone();
        }
        models_dir().join(DEFAULT_MODEL_FILE)
    }

    /// Whether completions are on for a language id.
    pub(crate) fn language_enabled(&self, language_id: &str) -> bool {
        self.languages.get(language_id).copied().unwrap_or(true)
    }

    /// Prefix and suffix budgets shrunk (proportionally) so that they, the generation budget and a
    /// small allowance for special tokens and the header fit the context.
    pub(crate) fn budgets(&self) -> (usize, usize) {
        let room = self.context_size.saturating_sub(self.max_tokens + 64);
        let want = self.prefix_tokens + self.suffix_tokens;
        if want <= room || want == 0 {
            return (self.prefix_tokens, self.suffix_tokens);
        }
        let prefix = self.prefix_tokens * room / want;
        (prefix, room - prefix)
    }

    /// Whether a change from `self` to `other` needs the model reloaded.
    pub(crate) fn needs_reload(&self, other: &Config) -> bool {
        self.resolved_model_path() != other.resolved_model_path()
            || self.threads != other.threads
            || self.context_size != other.context_size
            || self.cache_reuse_tokens != other.cache_reuse_tokens
            || self.backend != other.backend
            || self.backend_kind != other.backend_kind
            || self.backend_api_key != other.backend_api_key
            || self.backend_model != other.backend_model
            || self.backend_timeout_ms != other.backend_timeout_ms
            || (&self.fim_prefix, &self.fim_suffix, &self.fim_middle)
                != (&other.fim_prefix, &other.fim_suffix, &other.fim_middle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn physical_cores_count_distinct_cores_per_package() {
        let two_cores_four_threads = "processor : 0\nphysical id : 0\ncore id : 0\n\nprocessor : 1\nphysical id : 0\ncore id : 1\n\nprocessor : 2\nphysical id : 0\ncore id : 0\n\nprocessor : 3\nphysical id : 0\ncore id : 1\n";
        assert_eq!(physical_cores(two_cores_four_threads), 2);
        let two_packages = "physical id : 0\ncore id : 0\nphysical id : 1\ncore id : 0\n";
        assert_eq!(physical_cores(two_packages), 2);
        assert_eq!(physical_cores("processor : 0\n"), 0);
        assert!((1..=8).contains(&default_threads()));
    }
    use serde_json::json;

    #[test]
    fn overrides_merge_over_defaults() {
        let base = Config::default();
        let c = base
            .merged(&json!({"lmrs": {"maxTokens": 12, "languages": {"markdown": false}}}))
            .unwrap();
        assert_eq!(c.max_tokens, 12);
        assert!(!c.language_enabled("markdown"));
        assert!(c.language_enabled("rust"));
        let c = c
            .merged(&json!({"fimOrder": "psm", "languages": {"rust": false}}))
            .unwrap();
        assert_eq!(c.fim_order, FimOrder::Psm);
        assert_eq!(Config::default().fim_order, FimOrder::LinePsm);
        let c = c.merged(&json!({"fimOrder": "line-psm"})).unwrap();
        assert_eq!(c.fim_order, FimOrder::LinePsm);
        assert_eq!(c.max_tokens, 12, "earlier overrides stay");
        assert!(!c.language_enabled("markdown") && !c.language_enabled("rust"));
        assert_eq!(c.merged(&json!(null)).unwrap(), c);
        assert!(c.merged(&json!({"maxTokens": "many"})).is_err());
        assert!(c.merged(&json!({"noSuchOption": 1})).is_err());
        assert!(!c.auto_pull);
        assert!(c.merged(&json!({"autoPull": true})).unwrap().auto_pull);
        let remote = c
            .merged(&json!({"backend": "http://h:1", "backendKind": "llama.cpp"}))
            .unwrap();
        assert_eq!(remote.backend_kind, BackendKind::LlamaCpp);
        assert!(c.needs_reload(&remote), "a new backend is loaded");
        assert!(c.merged(&json!({"backendKind": "grpc"})).is_err());
        for kind in ["lmrs", "llama.cpp", "openai"] {
            let parsed = BackendKind::parse(kind).unwrap();
            assert_eq!(parsed.name(), kind);
            assert_eq!(
                c.merged(&json!({"backendKind": kind}))
                    .unwrap()
                    .backend_kind,
                parsed
            );
        }
    }

    #[test]
    fn models_dir_follows_lmrs_model_dir_then_xdg_then_home() {
        fn env<'a>(
            pairs: &'a [(&'a str, &'a str)],
        ) -> impl Fn(&str) -> Option<std::ffi::OsString> + 'a {
            move |key| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, v)| std::ffi::OsString::from(v))
            }
        }
        let all = [
            ("LMRS_MODEL_DIR", "/m"),
            ("XDG_DATA_HOME", "/x"),
            ("HOME", "/h"),
        ];
        assert_eq!(models_dir_from(env(&all)), PathBuf::from("/m"));
        assert_eq!(
            models_dir_from(env(&[
                ("LMRS_MODEL_DIR", ""),
                ("XDG_DATA_HOME", "/x"),
                ("HOME", "/h")
            ])),
            PathBuf::from("/x/lmrs/models")
        );
        // A relative XDG_DATA_HOME is invalid per the spec and ignored.
        assert_eq!(
            models_dir_from(env(&[("XDG_DATA_HOME", "rel"), ("HOME", "/h")])),
            PathBuf::from("/h/.local/share/lmrs/models")
        );
        assert_eq!(
            models_dir_from(env(&[("HOME", "/h")])),
            PathBuf::from("/h/.local/share/lmrs/models")
        );
    }

    #[test]
    fn budgets_fit_the_context() {
        let c = Config {
            context_size: 512,
            max_tokens: 64,
            prefix_tokens: 384,
            suffix_tokens: 128,
            ..Config::default()
        };
        let (p, s) = c.budgets();
        assert!(p + s + 64 + 64 <= 512);
        assert_eq!(p, 3 * s);
        assert_eq!(Config::default().budgets(), (384, 128));
    }
}
