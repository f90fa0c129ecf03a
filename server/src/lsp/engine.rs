//! The narrow interface between the server and an inference engine, and its implementations.
//!
//! Everything model-specific the server needs is here: tokenizing prompt segments, which FIM tokens
//! exist, and one generation call on a warm session that reuses the KV cache's common prefix. The
//! implementation adapts the `lmrs` engine crate (`lmrs_engine.rs`). There is no mock engine: tests
//! run the real engine on tiny random-weight models written by `lmrs::tiny`.

use std::path::Path;
use std::time::Duration;

use super::generation::Step;
use super::prompt::{FimSupport, FimToken, Segment};

/// Token id, as in the engine.
pub type TokenId = u32;

/// Cancellation shared between the LSP side and the worker. It wraps the engine's own flag, so the
/// engine stops between tokens and inside a prompt evaluation too.
#[derive(Clone, Debug, Default)]
pub struct Cancel(lmrs::CancelFlag);

impl Cancel {
    /// A fresh, not cancelled flag.
    pub fn new() -> Self {
        Self::default()
    }
    /// Requests cancellation.
    pub fn cancel(&self) {
        self.0.cancel();
    }
    /// Whether cancellation was requested.
    pub fn is_cancelled(&self) -> bool {
        self.0.is_cancelled()
    }
    /// The underlying engine flag.
    pub(crate) fn flag(&self) -> &lmrs::CancelFlag {
        &self.0
    }
}

/// Errors from loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The model file does not exist.
    #[error("model file not found: {0}")]
    NotFound(String),
    /// The file exists but cannot be used.
    #[error("cannot load model {path}: {message}")]
    Load {
        /// The model path.
        path: String,
        /// Why.
        message: String,
    },
    /// Inference failed.
    #[error("inference failed: {0}")]
    Infer(String),
}

/// One generation request.
#[derive(Clone, Debug)]
pub struct GenRequest<'a> {
    /// Prompt token ids.
    pub prompt: &'a [TokenId],
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// 0 = greedy.
    pub temperature: f32,
    /// Sampling seed.
    pub seed: u64,
    /// Bytes the generation must start with (token healing).
    pub required_prefix: &'a str,
    /// Most wall time for generating, counted from the first generated token (a long prompt
    /// evaluation is not wasted by a budget it used up).
    pub time_budget: Duration,
}

/// One generated token, as passed to [`CompletionEngine::generate`]'s callback.
#[derive(Clone, Debug)]
pub struct GenToken<'a> {
    /// Token id.
    pub id: TokenId,
    /// Its complete UTF-8 text (empty while a character is split across tokens).
    pub text: &'a str,
    /// The most likely other token at this step, if its text is whole UTF-8.
    pub runner_up: Option<Alternative>,
}

/// A token the model could have chosen instead.
#[derive(Clone, Debug, PartialEq)]
pub struct Alternative {
    /// Token id.
    pub id: TokenId,
    /// Its text.
    pub text: String,
    /// How many nats less likely than the chosen token it was (`exp(-gap)` is the ratio of their
    /// probabilities).
    pub gap: f32,
}

/// What one generation cost.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct GenStats {
    /// Prompt tokens found in the KV cache.
    pub reused: usize,
    /// Prompt tokens evaluated.
    pub evaluated: usize,
    /// Tokens generated.
    pub generated: usize,
    /// Milliseconds spent on the prompt.
    pub prompt_ms: f64,
    /// Milliseconds spent generating.
    pub gen_ms: f64,
    /// The token, time or context budget ended the generation (not a stop rule or end-of-text).
    pub budget_cut: bool,
}

impl GenStats {
    /// Adds the work of a later generation of the same request (tokens evaluated and generated,
    /// milliseconds). Its reused tokens are left out: they are the request's own earlier tokens.
    pub fn add_work(&mut self, later: &GenStats) {
        self.evaluated += later.evaluated;
        self.generated += later.generated;
        self.prompt_ms += later.prompt_ms;
        self.gen_ms += later.gen_ms;
    }
}

/// A loaded model with its warm session. Lives on the worker thread.
pub trait CompletionEngine: Send {
    /// Token ids of `text`, special tokens not parsed.
    fn encode(&self, text: &str) -> Vec<TokenId>;
    /// Number of tokens of `text` (budgets).
    fn count(&self, text: &str) -> usize {
        self.encode(text).len()
    }
    /// The id of a FIM token, if the model has it.
    fn fim_token(&self, token: FimToken) -> Option<TokenId>;
    /// Generates after `req.prompt`, calling `on_token` with each token (id, complete UTF-8 text,
    /// runner-up); stops when it returns [`Step::Stop`], at end-of-generation or any special token,
    /// at the token or time budget, or when `cancel` is set (within one token).
    fn generate(
        &mut self,
        req: &GenRequest<'_>,
        cancel: &Cancel,
        on_token: &mut dyn FnMut(&GenToken<'_>) -> Step,
    ) -> Result<GenStats, EngineError>;
    /// A one-line description for logs and messages.
    fn describe(&self) -> String;

    /// Which FIM features the model supports.
    fn fim_support(&self) -> FimSupport {
        let has = |t| self.fim_token(t).is_some();
        FimSupport {
            fim: has(FimToken::Prefix) && has(FimToken::Suffix) && has(FimToken::Middle),
            repo: has(FimToken::RepoName) && has(FimToken::FileSep),
        }
    }

    /// Prompt segments → token ids.
    fn segments_to_tokens(&self, segments: &[Segment]) -> Vec<TokenId> {
        let mut out = Vec::new();
        for seg in segments {
            match seg {
                Segment::Text(t) => out.extend(self.encode(t)),
                Segment::Token(t) => out.extend(self.fim_token(*t)),
            }
        }
        out
    }
}

/// What to load.
#[derive(Clone, Debug)]
pub struct LoadParams {
    /// Model file.
    pub path: std::path::PathBuf,
    /// Engine threads.
    pub threads: usize,
    /// KV-cache size.
    pub context_size: usize,
}

/// Loads the engine for `params.path`.
pub fn load(params: &LoadParams) -> Result<Box<dyn CompletionEngine>, EngineError> {
    if !Path::new(&params.path).is_file() {
        return Err(EngineError::NotFound(params.path.display().to_string()));
    }
    Ok(Box::new(super::lmrs_engine::LmrsEngine::load(params)?))
}
