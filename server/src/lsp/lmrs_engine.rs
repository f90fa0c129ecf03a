//! [`CompletionEngine`] on the `lmrs` engine crate: one `Arc<Model>` and one warm `Session` whose
//! KV cache keeps the longest common token prefix between requests.

use std::sync::Arc;

use lmrs::{
    InferError, InferenceFeedback, InferenceParameters, Model, ModelParams, Session, SessionParams,
    StopReason,
};

use super::engine::{
    Alternative, Cancel, CompletionEngine, EngineError, GenRequest, GenStats, GenToken, LoadParams,
    TokenId,
};
use super::generation::Step;
use super::prompt::FimToken;

/// The real engine.
pub struct LmrsEngine {
    model: Arc<Model>,
    session: Session,
}

impl LmrsEngine {
    /// Loads the model and creates its session.
    pub fn load(params: &LoadParams) -> Result<Self, EngineError> {
        let path = params.path.display().to_string();
        let load_err = |message: String| EngineError::Load {
            path: path.clone(),
            message,
        };
        let model_params = ModelParams {
            n_threads: params.threads.max(1),
            ..ModelParams::default()
        };
        let model =
            Arc::new(Model::load(&params.path, model_params).map_err(|e| load_err(e.to_string()))?);
        let n_ctx = params
            .context_size
            .min(model.info().hyperparameters.n_ctx_train.max(256));
        let session = Session::new(
            Arc::clone(&model),
            SessionParams {
                n_ctx,
                n_batch: 512.min(n_ctx),
                n_threads: params.threads.max(1),
            },
        )
        .map_err(|e| load_err(e.to_string()))?;
        Ok(Self { model, session })
    }
}

impl CompletionEngine for LmrsEngine {
    fn encode(&self, text: &str) -> Vec<TokenId> {
        self.model.tokenizer().encode(text, false)
    }

    fn fim_token(&self, token: FimToken) -> Option<TokenId> {
        let fim = self.model.tokenizer().fim();
        match token {
            FimToken::Prefix => fim.prefix,
            FimToken::Suffix => fim.suffix,
            FimToken::Middle => fim.middle,
            FimToken::RepoName => fim.repo_name,
            FimToken::FileSep => fim.file_separator,
        }
    }

    fn generate(
        &mut self,
        req: &GenRequest<'_>,
        cancel: &Cancel,
        on_token: &mut dyn FnMut(&GenToken<'_>) -> Step,
    ) -> Result<GenStats, EngineError> {
        if req.prompt.is_empty() {
            return Ok(GenStats::default());
        }
        // Leave room for the generation: drop the start of an over-long prompt (the builder's
        // budgets make this rare).
        let room = self
            .session
            .n_ctx()
            .saturating_sub(req.max_tokens.min(self.session.n_ctx() / 2))
            .max(1);
        let prompt = &req.prompt[req.prompt.len().saturating_sub(room)..];
        self.session.set_cancel_flag(cancel.flag().clone());
        let mut params = InferenceParameters::default()
            .with_temperature(req.temperature)
            .with_seed(req.seed)
            .with_required_prefix(req.required_prefix.as_bytes().to_vec())
            .with_suppress_special(true)
            .with_runner_up(true);
        if req.temperature <= 0.0 {
            params = params.with_top_k(1);
        }
        let tokenizer = self.model.tokenizer();
        let budget = req.time_budget;
        let mut deadline = None;
        let mut late = false;
        let result = self.session.infer(prompt, req.max_tokens, &params, |t| {
            if tokenizer.is_special(t.id) {
                return InferenceFeedback::Halt;
            }
            let now = std::time::Instant::now();
            if now >= *deadline.get_or_insert(now + budget) {
                late = true;
                return InferenceFeedback::Halt;
            }
            let runner_up = t.runner_up.and_then(|r| {
                let text = std::str::from_utf8(tokenizer.token_bytes(r.id)).ok()?;
                Some(Alternative {
                    id: r.id,
                    text: text.to_owned(),
                    gap: r.gap,
                })
            });
            let token = GenToken {
                id: t.id,
                text: t.text,
                runner_up,
            };
            match on_token(&token) {
                Step::Continue => InferenceFeedback::Continue,
                Step::Stop => InferenceFeedback::Halt,
            }
        });
        match result {
            Ok(s) => Ok(GenStats {
                reused: s.prompt.reused,
                evaluated: s.prompt.evaluated,
                generated: s.generated,
                prompt_ms: s.prompt.millis,
                gen_ms: s.generation_millis,
                budget_cut: late
                    || matches!(s.stop, StopReason::MaxTokens | StopReason::ContextFull),
            }),
            Err(InferError::Cancelled) => Ok(GenStats::default()),
            Err(e) => Err(EngineError::Infer(e.to_string())),
        }
    }

    fn describe(&self) -> String {
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
