//! The loaded model and its warm session: one `Arc<lmrs::Model>` and one `lmrs::Session` whose KV
//! cache keeps the longest common token prefix between requests.
//!
//! Everything model-specific the completion pipeline needs is here: tokenizing prompt segments,
//! which FIM tokens exist, and one generation call. There is no mock: tests run the real engine on
//! tiny random-weight models written by `lmrs_fixtures::tiny`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lmrs::{
    CancelFlag, GeneratedToken, InferError, InferenceFeedback, InferenceParameters, InferenceStats,
    LoadError, Model, ModelParams, RunnerUp, Session, SessionParams, StopReason, TokenId,
    Tokenizer,
};

use tracing::warn;

use super::prompt::{FimSupport, FimToken, Segment};
use crate::config::logical_cpus;

/// What to load.
#[derive(Clone, Debug)]
pub(crate) struct LoadParams {
    /// Model file.
    pub(crate) path: PathBuf,
    /// Engine threads.
    pub(crate) threads: usize,
    /// KV-cache size.
    pub(crate) context_size: usize,
    /// Prompt tokens evaluated per micro-batch: the prompt deadline is checked between them.
    pub(crate) batch_tokens: usize,
    /// Shortest cached run moved instead of evaluated again (0 = off; see
    /// `Config::cache_reuse_tokens`).
    pub(crate) cache_reuse_tokens: usize,
}

/// Prompt tokens per micro-batch: as fast as longer batches (Qwen 0.5B, 2 threads: pp128 262,
/// pp256 285, pp512 280 tok/s) and short enough (under a second there) for the prompt deadline
/// and idle prompt work to stop soon after they should.
pub(crate) const PROMPT_BATCH_TOKENS: usize = 256;

/// Errors from loading a model and creating its session.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ModelError {
    /// The model file does not exist.
    #[error("model file not found: {}", .0.display())]
    NotFound(PathBuf),
    /// The model path names a directory.
    #[error("model path is a directory: {} (expected a .gguf file)", .0.display())]
    IsDirectory(PathBuf),
    /// The model path names something other than a file or a directory (a device, a pipe).
    #[error("model path is not a regular file: {} (expected a .gguf file)", .0.display())]
    NotAFile(PathBuf),
    /// The file exists but the engine cannot load it.
    #[error("cannot load model {}", path.display())]
    Load {
        /// The model file.
        path: PathBuf,
        /// Why.
        #[source]
        source: LoadError,
    },
    /// The model loaded but its session cannot be created. To the user this is one more reason a
    /// model cannot be loaded; the cause tells them apart.
    #[error("cannot load model {}", path.display())]
    Session {
        /// The model file.
        path: PathBuf,
        /// Why.
        #[source]
        source: InferError,
    },
    /// The engine panicked while loading.
    #[error("cannot load model {}: engine panicked", .0.display())]
    Panicked(PathBuf),
}

/// One generation request.
#[derive(Clone, Debug)]
pub(crate) struct GenRequest<'a> {
    /// Prompt token ids (not empty).
    pub(crate) prompt: &'a [TokenId],
    /// Most tokens to generate.
    pub(crate) max_tokens: usize,
    /// 0 = greedy.
    pub(crate) temperature: f32,
    /// Sampling seed.
    pub(crate) seed: u64,
    /// Bytes the generation must start with (token healing).
    pub(crate) required_prefix: &'a str,
    /// Most wall time for generating, counted from the first generated token (a long prompt
    /// evaluation is not wasted by a budget it used up).
    pub(crate) time_budget: Duration,
    /// Prompt evaluation stops between micro-batches once this has passed (`None`: no limit); the
    /// generation is then [`InferError::PromptDeadline`] and the model keeps the prompt to finish
    /// with [`CompletionModel::continue_prompt`].
    pub(crate) prompt_deadline: Option<Instant>,
}

/// What one generation did.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Generation {
    /// The engine's figures.
    pub(crate) stats: InferenceStats,
    /// The time budget halted it.
    late: bool,
}

impl Generation {
    /// Whether the time budget ended the generation.
    pub(crate) fn late(&self) -> bool {
        self.late
    }

    /// Whether the token, time or context budget ended the generation (not a stop rule or
    /// end-of-text).
    pub(crate) fn budget_cut(&self) -> bool {
        self.late
            || matches!(
                self.stats.stop,
                StopReason::MaxTokens | StopReason::ContextFull
            )
    }
}

/// A loaded model with its warm session. Lives on the worker thread.
pub(crate) struct CompletionModel {
    model: Arc<Model>,
    session: Session,
    /// A second session for speculative work (created on first use), so that it leaves the
    /// main session's KV cache, and the prompt the next request needs, as it was.
    spare: Option<Session>,
    /// The parameters both sessions are created with.
    session_params: SessionParams,
    /// The configured engine threads (the most a generation uses).
    threads: usize,
    /// A prompt whose evaluation its deadline cut, to be finished while no request waits.
    unfinished_prompt: Option<Vec<TokenId>>,
    /// The model file.
    path: PathBuf,
    /// Its size and modification time when it was loaded (or last reported changed).
    stamp: Option<FileStamp>,
}

/// What tells a changed file from the one loaded: its size and modification time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    modified: Option<std::time::SystemTime>,
}

impl FileStamp {
    fn of(path: &std::path::Path) -> Option<FileStamp> {
        let metadata = std::fs::metadata(path).ok()?;
        Some(FileStamp {
            len: metadata.len(),
            modified: metadata.modified().ok(),
        })
    }
}

impl CompletionModel {
    /// Loads the model for `params.path` and creates its session.
    pub(crate) fn load(params: &LoadParams) -> Result<Self, ModelError> {
        let path = &params.path;
        let stamp = FileStamp::of(path);
        match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => return Err(ModelError::IsDirectory(path.clone())),
            Ok(m) if !m.is_file() => return Err(ModelError::NotAFile(path.clone())),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ModelError::NotFound(path.clone()))
            }
            // Unreadable metadata (permissions): opening the file reports why.
            Err(_) => {}
        }
        // More threads than CPUs only make GGML's workers wait for each other at every barrier.
        let cpus = logical_cpus();
        let threads = params.threads.clamp(1, cpus);
        if threads < params.threads {
            warn!(
                asked = params.threads,
                cpus, "more engine threads than CPUs asked for: using one per CPU"
            );
        }
        let model_params = ModelParams {
            n_threads: threads,
            ..ModelParams::default()
        };
        let model = Model::load(path, model_params).map_err(|source| ModelError::Load {
            path: path.clone(),
            source,
        })?;
        let model = Arc::new(model);
        let n_ctx = params
            .context_size
            .min(model.info().hyperparameters.n_ctx_train.max(256));
        let session_params = SessionParams {
            n_ctx,
            n_batch: params.batch_tokens.clamp(1, n_ctx),
            n_threads: threads,
            cache_reuse_min_tokens: params.cache_reuse_tokens,
            // A FIM prompt's suffix is evaluated again after a change before it (see the field).
            cache_reuse_fence: model.tokenizer().fim().suffix,
        };
        let session =
            Session::new(Arc::clone(&model), session_params.clone()).map_err(|source| {
                ModelError::Session {
                    path: path.clone(),
                    source,
                }
            })?;
        Ok(Self {
            model,
            session,
            spare: None,
            session_params,
            threads,
            unfinished_prompt: None,
            path: path.clone(),
            stamp,
        })
    }

    /// Runs `work` with the spare session in place of the main one (created on first use; `None`
    /// when it cannot be), then puts the main session and any prompt it had left to finish back:
    /// speculative work then costs the next request nothing of its cached prompt. `work` must not
    /// unwind (the worker catches panics inside it).
    pub(crate) fn on_spare_session<T>(&mut self, work: impl FnOnce(&mut Self) -> T) -> Option<T> {
        let spare = match self.spare.take() {
            Some(spare) => spare,
            None => match Session::new(Arc::clone(&self.model), self.session_params.clone()) {
                Ok(spare) => spare,
                Err(e) => {
                    warn!(error = %e, "cannot create a second session for prefetching");
                    return None;
                }
            },
        };
        let mut spare = spare;
        // The spare starts from the main session's prompt (a copy of its cache's memory: a few
        // milliseconds), so the speculative work evaluates only what it adds.
        if let Err(e) = spare.copy_state_from(&self.session) {
            warn!(error = %e, "cannot copy the session for prefetching");
        }
        let main = std::mem::replace(&mut self.session, spare);
        let unfinished = self.unfinished_prompt.take();
        let out = work(self);
        self.spare = Some(std::mem::replace(&mut self.session, main));
        self.unfinished_prompt = unfinished;
        Some(out)
    }

    /// Token ids of `text`, special tokens not parsed.
    pub(crate) fn encode(&self, text: &str) -> Vec<TokenId> {
        self.model.tokenizer().encode(text, false)
    }

    /// Number of tokens of `text` (budgets).
    pub(crate) fn count(&self, text: &str) -> usize {
        self.encode(text).len()
    }

    /// Which FIM features the model supports.
    pub(crate) fn fim_support(&self) -> FimSupport {
        fim_support_of(self.model.tokenizer())
    }

    /// Prompt segments → token ids (BOS first when the model wants it).
    pub(crate) fn segments_to_tokens(&self, segments: &[Segment]) -> Vec<TokenId> {
        segments_to_tokens(self.model.tokenizer(), segments)
    }

    /// Generates after `req.prompt`, calling `on_token` with each token and its runner-up with
    /// the runner-up's text (when that text is whole UTF-8); stops when it returns
    /// [`InferenceFeedback::Halt`], at end-of-generation or any special token, at the token or time
    /// budget, or when `cancel` is set (within one token), which is the error
    /// [`InferError::Cancelled`].
    pub(crate) fn generate<F>(
        &mut self,
        req: &GenRequest<'_>,
        cancel: &CancelFlag,
        mut on_token: F,
    ) -> Result<Generation, InferError>
    where
        F: FnMut(&GeneratedToken<'_>, Option<(RunnerUp, &str)>) -> InferenceFeedback,
    {
        let prompt = self.fitted(req.prompt, req.max_tokens);
        self.session.set_cancel_flag(cancel.clone());
        self.adapt_threads();
        let mut params = InferenceParameters::default()
            .with_temperature(req.temperature)
            .with_seed(req.seed)
            .with_required_prefix(req.required_prefix.as_bytes().to_vec())
            .with_suppress_special(true)
            .with_runner_up(true)
            .with_prompt_deadline(req.prompt_deadline);
        if req.temperature <= 0.0 {
            params = params.with_top_k(1);
        }
        let tokenizer = self.model.tokenizer();
        let budget = req.time_budget;
        let mut deadline = None;
        let mut late = false;
        self.unfinished_prompt = None;
        let stats = self.session.infer(prompt, req.max_tokens, &params, |t| {
            if tokenizer.is_special(t.id) {
                return InferenceFeedback::Halt;
            }
            let now = Instant::now();
            if now >= *deadline.get_or_insert(now + budget) {
                late = true;
                return InferenceFeedback::Halt;
            }
            let runner_up = t.runner_up.and_then(|r| {
                let text = std::str::from_utf8(tokenizer.token_bytes(r.id)).ok()?;
                Some((r, text))
            });
            on_token(t, runner_up)
        });
        match stats {
            Ok(stats) => Ok(Generation { stats, late }),
            Err(e @ InferError::PromptDeadline { .. }) => {
                self.unfinished_prompt = Some(prompt.to_vec());
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// Logs (once per change) when the model file on disk is no longer the file that was loaded:
    /// the weights were copied into memory, so serving goes on with what was loaded. Returns
    /// whether it changed since the last look.
    pub(crate) fn note_file_change(&mut self) -> bool {
        let now = FileStamp::of(&self.path);
        if now == self.stamp {
            return false;
        }
        if self.model.params().map_weights {
            // LMRS_MAP_WEIGHTS=1: weights are read from the file's mapping, so the change can
            // reach them (or fault); say so rather than promise a copy that does not exist.
            warn!(
                path = %self.path.display(),
                "the model file changed on disk while its weights are used from a mapping \
                 (LMRS_MAP_WEIGHTS=1): suggestions may be wrong and a truncated file can end the \
                 server; restart it or load the model again"
            );
        } else if let Some(FileStamp { len, .. }) = now {
            warn!(
                path = %self.path.display(),
                bytes = len,
                "the model file changed on disk after it was loaded; still serving the model as \
                 loaded (its weights are in memory); change the model setting or restart to load \
                 the new file"
            );
        } else {
            warn!(
                path = %self.path.display(),
                "the model file is gone from disk; still serving the model as loaded (its weights \
                 are in memory)"
            );
        }
        self.stamp = now;
        true
    }

    /// The end of `prompt` that leaves room for `max_tokens` generated tokens in the context:
    /// the start of an over-long prompt is dropped (the builder's budgets make this rare).
    fn fitted<'p>(&self, prompt: &'p [TokenId], max_tokens: usize) -> &'p [TokenId] {
        let room = self
            .session
            .n_ctx()
            .saturating_sub(max_tokens.min(self.session.n_ctx() / 2))
            .max(1);
        &prompt[prompt.len().saturating_sub(room)..]
    }

    /// Makes `prompt` (for a generation of up to `max_tokens`) the prompt to evaluate while no
    /// request waits (see [`continue_prompt`](Self::continue_prompt)), in place of any other: a
    /// prefill for a request expected soon. Nothing is evaluated now.
    pub(crate) fn prefill_later(&mut self, prompt: &[TokenId], max_tokens: usize) {
        self.unfinished_prompt =
            (!prompt.is_empty()).then(|| self.fitted(prompt, max_tokens).to_vec());
    }

    /// Whether a prompt cut by its deadline (or a prefill) waits to be finished.
    pub(crate) fn has_unfinished_prompt(&self) -> bool {
        self.unfinished_prompt.is_some()
    }

    /// Evaluates the next micro-batch of the prompt the last generation's deadline cut, so that a
    /// request with the same prompt (the next keystroke) finds it cached. Returns whether more
    /// remains. Stops, keeping the rest for later, when `cancel` is set; forgets it on an engine
    /// error.
    pub(crate) fn continue_prompt(&mut self, cancel: &CancelFlag) -> bool {
        let Some(prompt) = self.unfinished_prompt.take() else {
            return false;
        };
        self.session.set_cancel_flag(cancel.clone());
        self.adapt_threads();
        match self.session.feed_until(&prompt, Some(Instant::now())) {
            Ok(stats) => {
                tracing::debug!(evaluated = stats.evaluated, "cut prompt finished");
                false
            }
            Err(InferError::PromptDeadline { .. } | InferError::Cancelled) => {
                self.unfinished_prompt = Some(prompt);
                true
            }
            Err(e) => {
                warn!(error = %e, "finishing a cut prompt failed");
                false
            }
        }
    }

    /// Computes with the configured threads less those other processes keep busy.
    fn adapt_threads(&mut self) {
        self.session.set_active_threads(threads_beside_others(
            self.threads,
            logical_cpus(),
            busy_elsewhere(),
        ));
    }

    /// A one-line description for logs and messages.
    pub(crate) fn describe(&self) -> String {
        let info = self.model.info();
        format!(
            "{} ({}, {} layers, {} MB), context {}",
            info.name.as_deref().unwrap_or("model"),
            info.architecture,
            info.hyperparameters.n_layer,
            info.file_size / 1_000_000,
            self.session.n_ctx()
        )
    }
}

/// Threads to compute with when `others` threads of other processes are running on `cpus` CPUs:
/// the configured count, but no more than the CPUs the others leave free, and at least one.
fn threads_beside_others(configured: usize, cpus: usize, others: usize) -> usize {
    configured.min(cpus.saturating_sub(others)).max(1)
}

/// Threads of other processes running right now (Linux: `procs_running` of `/proc/stat` less this
/// process's running threads; the least of three looks a millisecond apart, as it flickers); 0
/// where that cannot be read.
fn busy_elsewhere() -> usize {
    (0..3)
        .map(|i| {
            if i > 0 {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            running_everywhere().saturating_sub(running_here())
        })
        .min()
        .unwrap_or(0)
}

fn running_everywhere() -> usize {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|stat| {
            stat.lines()
                .find_map(|line| line.strip_prefix("procs_running "))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}

fn running_here() -> usize {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("stat")).ok())
        .filter(|stat| {
            // The state follows the command name, which ends at the last ')'.
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                == Some("R")
        })
        .count()
}

/// The id of a FIM token in `tokenizer`'s vocabulary, if it has it.
pub(crate) fn fim_token_id(tokenizer: &Tokenizer, token: FimToken) -> Option<TokenId> {
    let fim = tokenizer.fim();
    match token {
        FimToken::Prefix => fim.prefix,
        FimToken::Suffix => fim.suffix,
        FimToken::Middle => fim.middle,
        FimToken::RepoName => fim.repo_name,
        FimToken::FileSep => fim.file_separator,
    }
}

/// Which FIM features `tokenizer`'s vocabulary supports.
pub(crate) fn fim_support_of(tokenizer: &Tokenizer) -> FimSupport {
    let has = |t| fim_token_id(tokenizer, t).is_some();
    FimSupport {
        fim: has(FimToken::Prefix) && has(FimToken::Suffix) && has(FimToken::Middle),
        repo: has(FimToken::RepoName) && has(FimToken::FileSep),
    }
}

/// Prompt segments → token ids (text tokenized without parsing special tokens), after the BOS
/// token when the model wants one (as llama.cpp adds it to every prompt of such a model:
/// CodeGemma, CodeLlama, DeepSeek-Coder were trained with it).
pub(crate) fn segments_to_tokens(tokenizer: &Tokenizer, segments: &[Segment]) -> Vec<TokenId> {
    let mut out = Vec::new();
    if tokenizer.add_bos() {
        out.extend(tokenizer.bos());
    }
    for seg in segments {
        match seg {
            Segment::Text(t) => out.extend(tokenizer.encode(t, false)),
            Segment::Token(t) => out.extend(fim_token_id(tokenizer, *t)),
        }
    }
    out
}

#[cfg(test)]
mod prompt_token_tests {
    use super::*;

    #[test]
    fn prompts_start_with_bos_exactly_when_the_model_wants_it() {
        use lmrs_fixtures::tiny::{write_tiny_model, TinyArch};
        let segments = [
            Segment::Token(FimToken::Prefix),
            Segment::Text("x = ".into()),
            Segment::Token(FimToken::Suffix),
            Segment::Token(FimToken::Middle),
        ];
        for arch in [TinyArch::Llama, TinyArch::Qwen2] {
            let path = std::env::temp_dir().join(format!(
                "lmrs-bos-{}-{}.gguf",
                arch.name(),
                std::process::id()
            ));
            write_tiny_model(&path, arch, 3).unwrap();
            let model = Model::load(&path, ModelParams::default()).unwrap();
            let tokenizer = model.tokenizer();
            let tokens = segments_to_tokens(tokenizer, &segments);
            let fim = tokenizer.fim();
            let mut expected: Vec<TokenId> = Vec::new();
            if arch.adds_bos() {
                expected.extend(tokenizer.bos());
            }
            expected.extend(fim.prefix);
            expected.extend(tokenizer.encode("x = ", false));
            expected.extend(fim.suffix);
            expected.extend(fim.middle);
            assert_eq!(tokens, expected, "{}", arch.name());
            assert_eq!(
                tokens.first() == tokenizer.bos().as_ref(),
                arch.adds_bos(),
                "{}",
                arch.name()
            );
            let _ = std::fs::remove_file(&path);
        }
    }
}

#[cfg(test)]
mod thread_tests {
    use super::*;

    #[test]
    fn threads_leave_the_cpus_other_processes_use() {
        assert_eq!(threads_beside_others(2, 2, 0), 2);
        assert_eq!(threads_beside_others(2, 2, 1), 1);
        assert_eq!(threads_beside_others(2, 2, 5), 1);
        assert_eq!(threads_beside_others(4, 8, 2), 4);
        assert_eq!(threads_beside_others(8, 8, 3), 5);
        // This process's own running threads are not "elsewhere".
        assert!(running_here() >= 1, "the test thread itself is running");
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// The real engine on a tiny random-weight Qwen2 model (written once per test process).
    pub(crate) fn tiny_model() -> CompletionModel {
        tiny_model_with_batch(PROMPT_BATCH_TOKENS)
    }

    /// The tiny random-weight Qwen2 model's file (written once per test process).
    pub(crate) fn tiny_model_path() -> &'static std::path::Path {
        static PATH: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
        PATH.get_or_init(|| {
            let p =
                std::env::temp_dir().join(format!("lmrs-model-tiny-{}.gguf", std::process::id()));
            lmrs_fixtures::tiny::write_tiny_model(&p, lmrs_fixtures::tiny::TinyArch::Qwen2, 7)
                .unwrap();
            p
        })
    }

    /// [`tiny_model`] evaluating prompts in micro-batches of `batch_tokens`.
    pub(crate) fn tiny_model_with_batch(batch_tokens: usize) -> CompletionModel {
        CompletionModel::load(&LoadParams {
            path: tiny_model_path().to_owned(),
            threads: 1,
            context_size: 1024,
            batch_tokens,
            cache_reuse_tokens: crate::config::Config::default().cache_reuse_tokens,
        })
        .unwrap()
    }
}

#[cfg(test)]
mod prompt_deadline_tests {
    use super::test_support::tiny_model_with_batch;
    use super::*;

    fn request(prompt: &[TokenId], prompt_deadline: Option<Instant>) -> GenRequest<'_> {
        GenRequest {
            prompt,
            max_tokens: 6,
            temperature: 0.0,
            seed: 0,
            required_prefix: "",
            time_budget: Duration::from_secs(60),
            prompt_deadline,
        }
    }

    fn text_of(model: &mut CompletionModel, req: &GenRequest<'_>) -> (String, InferenceStats) {
        let mut text = String::new();
        let generation = model
            .generate(req, &CancelFlag::new(), |token, _| {
                text.push_str(token.text);
                InferenceFeedback::Continue
            })
            .unwrap();
        (text, generation.stats)
    }

    #[test]
    fn a_cut_prompt_is_finished_while_idle_and_the_next_request_reuses_it() {
        let mut model = tiny_model_with_batch(8);
        let source = "def add(a, b):\n    return a + b\n\n".repeat(6) + "def main():\n    x =";
        let prompt = model.encode(&source);
        assert!(prompt.len() > 40, "{} tokens", prompt.len());

        // A deadline already past: one micro-batch, then the prompt waits to be finished.
        let past = Some(Instant::now());
        let cut = model.generate(&request(&prompt, past), &CancelFlag::new(), |_, _| {
            panic!("nothing is generated from a cut prompt")
        });
        assert!(
            matches!(cut, Err(InferError::PromptDeadline { .. })),
            "{cut:?}"
        );
        assert!(model.has_unfinished_prompt());

        // Idle work stopped by its cancel flag keeps the prompt for later.
        let stopped = CancelFlag::new();
        stopped.cancel();
        assert!(model.continue_prompt(&stopped));
        assert!(model.has_unfinished_prompt());

        // Idle work goes one micro-batch per call until the prompt is evaluated.
        let mut steps = 0;
        while model.continue_prompt(&CancelFlag::new()) {
            steps += 1;
            assert!(steps < prompt.len(), "no progress");
        }
        assert!(steps >= 2, "{steps} steps for {} tokens", prompt.len());
        assert!(!model.has_unfinished_prompt());

        // The same prompt now costs nothing to evaluate, and generates what a model that was never
        // cut generates (same micro-batches, so the same logits).
        let (text, stats) = text_of(&mut model, &request(&prompt, past));
        assert_eq!(stats.prompt.evaluated, 0, "{stats:?}");
        let mut fresh = tiny_model_with_batch(8);
        let (expected, _) = text_of(&mut fresh, &request(&prompt, None));
        assert_eq!(text, expected);
    }

    #[test]
    fn a_request_that_finishes_its_prompt_leaves_no_idle_work() {
        let mut model = tiny_model_with_batch(8);
        let prompt = model.encode("def main():\n    x =");
        let past = Some(Instant::now());
        let cut = model.generate(&request(&prompt, past), &CancelFlag::new(), |_, _| {
            InferenceFeedback::Continue
        });
        // One micro-batch holds it all, so the deadline never interrupts it.
        assert!(prompt.len() <= 8 && cut.is_ok(), "{cut:?}");
        assert!(!model.has_unfinished_prompt());
        assert!(!model.continue_prompt(&CancelFlag::new()));
    }
}
