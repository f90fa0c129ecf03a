//! Sessions: a KV cache, compute buffers and a thread pool on a shared [`Model`].
//!
//! A session remembers which tokens its cache holds. Feeding a new prompt keeps the longest common
//! prefix with them and evaluates only the rest, in batches — this is what makes successive editor
//! requests cheap. Cancellation is checked between batches, between generated tokens, and inside a
//! graph computation (GGML's abort callback).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use ggml_sys::{Context, CpuBackend, GgmlError, Graph, GraphAllocator, Tensor, TensorType};

use crate::kv_cache::KvCache;
use crate::model::Model;
use crate::models::BatchInputs;
use crate::sampling::{top_logprobs, InferenceParameters, Sampler};
use crate::tokenizer::TokenId;

/// Options for a session.
#[derive(Clone, Debug)]
pub struct SessionParams {
    /// Positions the KV cache holds (prompt plus generated tokens).
    pub n_ctx: usize,
    /// Most tokens evaluated in one graph.
    pub n_batch: usize,
    /// Worker threads; `0` takes the model's default.
    pub n_threads: usize,
}

impl Default for SessionParams {
    fn default() -> Self {
        SessionParams {
            n_ctx: 4096,
            n_batch: 512,
            n_threads: 0,
        }
    }
}

/// Errors while evaluating or generating.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    /// The prompt has no tokens.
    #[error("the prompt is empty")]
    EmptyPrompt,
    /// The prompt does not fit the context.
    #[error("the prompt has {n_tokens} tokens but the context holds {n_ctx}")]
    PromptTooLong {
        /// Prompt length.
        n_tokens: usize,
        /// Context size.
        n_ctx: usize,
    },
    /// A token id is outside the vocabulary.
    #[error("token id {id} is outside the vocabulary of {n_vocab}")]
    InvalidToken {
        /// The id.
        id: TokenId,
        /// Vocabulary size.
        n_vocab: usize,
    },
    /// Session parameters are unusable.
    #[error("invalid session parameters: {0}")]
    InvalidParams(String),
    /// The cancel flag was set.
    #[error("cancelled")]
    Cancelled,
    /// GGML failed.
    #[error("GGML: {0}")]
    Ggml(#[from] GgmlError),
}

/// A shared flag that stops work in progress. Cloning shares the flag.
#[derive(Clone, Debug, Default)]
pub struct CancelFlag(Arc<AtomicBool>);

impl CancelFlag {
    /// A new, unset flag.
    pub fn new() -> Self {
        Self::default()
    }
    /// Asks the work using this flag to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
    /// Whether [`cancel`](Self::cancel) was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// What to evaluate: text (tokenized without parsing special tokens, BOS added if the model wants
/// one) or tokens as they are.
#[derive(Clone, Copy, Debug)]
pub enum Prompt<'a> {
    /// Plain text.
    Text(&'a str),
    /// Token ids.
    Tokens(&'a [TokenId]),
}

impl<'a> From<&'a str> for Prompt<'a> {
    fn from(text: &'a str) -> Self {
        Prompt::Text(text)
    }
}

impl<'a> From<&'a String> for Prompt<'a> {
    fn from(text: &'a String) -> Self {
        Prompt::Text(text)
    }
}

impl<'a> From<&'a [TokenId]> for Prompt<'a> {
    fn from(tokens: &'a [TokenId]) -> Self {
        Prompt::Tokens(tokens)
    }
}

impl<'a> From<&'a Vec<TokenId>> for Prompt<'a> {
    fn from(tokens: &'a Vec<TokenId>) -> Self {
        Prompt::Tokens(tokens)
    }
}

/// What feeding a prompt cost.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FeedStats {
    /// Prompt tokens whose cache entries were kept.
    pub reused: usize,
    /// Prompt tokens evaluated now.
    pub evaluated: usize,
    /// Wall time in milliseconds.
    pub millis: f64,
}

/// One generated token, as passed to the streaming callback.
#[derive(Debug)]
pub struct GeneratedToken<'a> {
    /// Token id.
    pub id: TokenId,
    /// Text completed by this token (complete UTF-8 only; may be empty while a character is split).
    pub text: &'a str,
    /// Top log-probabilities before sampling, if asked for.
    pub logprobs: &'a [(TokenId, f32)],
}

/// The callback's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InferenceFeedback {
    /// Keep generating.
    Continue,
    /// Stop now.
    Halt,
}

/// Why generation stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The model produced an end-of-generation token.
    EndOfGeneration,
    /// `max_tokens` were generated.
    MaxTokens,
    /// The callback returned [`InferenceFeedback::Halt`].
    Halted,
    /// A stop string appeared.
    StopString,
    /// The context is full.
    ContextFull,
}

/// What a generation did.
#[derive(Clone, Copy, Debug)]
pub struct InferenceStats {
    /// Prompt evaluation.
    pub prompt: FeedStats,
    /// Tokens generated (passed to the callback).
    pub generated: usize,
    /// Milliseconds spent generating (sampling and evaluating generated tokens).
    pub generation_millis: f64,
    /// Why it stopped.
    pub stop: StopReason,
}

/// A KV cache and compute resources on a model.
pub struct Session {
    model: Arc<Model>,
    backend: CpuBackend,
    allocator: GraphAllocator,
    cache: KvCache,
    tokens: Vec<TokenId>,
    logits: Vec<f32>,
    logits_valid: bool,
    params: SessionParams,
    cancel: CancelFlag,
}

impl Session {
    pub(crate) fn new(model: Arc<Model>, mut params: SessionParams) -> Result<Session, InferError> {
        if params.n_ctx == 0 || params.n_ctx > (1 << 20) {
            return Err(InferError::InvalidParams(format!(
                "n_ctx = {} must be between 1 and 2^20",
                params.n_ctx
            )));
        }
        params.n_batch = params.n_batch.clamp(1, params.n_ctx);
        if params.n_threads == 0 {
            params.n_threads = model.params().n_threads;
        }
        let hp = model.architecture().hyperparameters();
        let cache = KvCache::new(hp, params.n_ctx, !model.params().flash_attention)?;
        let backend = CpuBackend::new(params.n_threads)?;
        let allocator = GraphAllocator::new()?;
        let cancel = CancelFlag::new();
        let mut session = Session {
            model,
            backend,
            allocator,
            cache,
            tokens: Vec::new(),
            logits: Vec::new(),
            logits_valid: false,
            params,
            cancel,
        };
        session.backend.set_abort_flag(session.cancel.0.clone());
        session.reserve_compute_buffer()?;
        Ok(session)
    }

    /// The model.
    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    /// Tokens whose keys and values the cache holds, in order.
    pub fn tokens(&self) -> &[TokenId] {
        &self.tokens
    }

    /// Context size.
    pub fn n_ctx(&self) -> usize {
        self.params.n_ctx
    }

    /// Bytes of the KV cache.
    pub fn kv_cache_bytes(&self) -> usize {
        self.cache.size_bytes()
    }

    /// Bytes of the compute buffer.
    pub fn compute_buffer_bytes(&self) -> usize {
        self.allocator.buffer_size()
    }

    /// Uses `flag` for cancellation from now on.
    pub fn set_cancel_flag(&mut self, flag: CancelFlag) {
        self.backend.set_abort_flag(flag.0.clone());
        self.cancel = flag;
    }

    /// Logits after the last evaluated token, if the last call left them.
    pub fn logits(&self) -> Option<&[f32]> {
        self.logits_valid.then_some(&self.logits[..])
    }

    /// Forgets everything after the first `n_tokens` tokens.
    pub fn truncate(&mut self, n_tokens: usize) {
        if n_tokens < self.tokens.len() {
            self.tokens.truncate(n_tokens);
            self.logits_valid = false;
        }
    }

    /// Makes the cache hold exactly `prompt`, evaluating only what follows its longest common prefix
    /// with the cached tokens. Leaves the logits of the last prompt token.
    pub fn feed(&mut self, prompt: &[TokenId]) -> Result<FeedStats, InferError> {
        let started = Instant::now();
        if prompt.is_empty() {
            return Err(InferError::EmptyPrompt);
        }
        if prompt.len() > self.params.n_ctx {
            return Err(InferError::PromptTooLong {
                n_tokens: prompt.len(),
                n_ctx: self.params.n_ctx,
            });
        }
        let n_vocab = self.model.architecture().hyperparameters().n_vocab;
        if let Some(&id) = prompt.iter().find(|&&id| id as usize >= n_vocab) {
            return Err(InferError::InvalidToken { id, n_vocab });
        }
        let common = self
            .tokens
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count();
        if common == prompt.len() && self.tokens.len() == prompt.len() && self.logits_valid {
            return Ok(FeedStats {
                reused: common,
                evaluated: 0,
                millis: elapsed_ms(started),
            });
        }
        // Always evaluate at least the last prompt token: its logits predict what comes next.
        let keep = common.min(prompt.len() - 1);
        self.truncate(keep);
        self.logits_valid = false;
        for chunk in prompt[keep..].chunks(self.params.n_batch) {
            if self.cancel.is_cancelled() {
                // The cache keeps the batches already evaluated; the prompt's logits do not exist.
                self.logits_valid = false;
                return Err(InferError::Cancelled);
            }
            self.evaluate(chunk)?;
        }
        Ok(FeedStats {
            reused: keep,
            evaluated: prompt.len() - keep,
            millis: elapsed_ms(started),
        })
    }

    /// Feeds `prompt`, then generates up to `max_tokens` tokens, streaming each to `callback`.
    /// End-of-generation tokens end the generation and are not passed on.
    pub fn infer<'p>(
        &mut self,
        prompt: impl Into<Prompt<'p>>,
        max_tokens: usize,
        params: &InferenceParameters,
        mut callback: impl FnMut(&GeneratedToken<'_>) -> InferenceFeedback,
    ) -> Result<InferenceStats, InferError> {
        let model = Arc::clone(&self.model);
        let tokenizer = model.tokenizer();
        let prompt_tokens: Vec<TokenId> = match prompt.into() {
            Prompt::Tokens(tokens) => tokens.to_vec(),
            Prompt::Text(text) => {
                let mut tokens = Vec::new();
                if tokenizer.add_bos() {
                    tokens.extend(tokenizer.bos());
                }
                tokens.extend(tokenizer.encode(text, false));
                tokens
            }
        };
        let prompt_stats = self.feed(&prompt_tokens)?;
        let started = Instant::now();
        let mut sampler = Sampler::new(params);
        let mut decoder = tokenizer.decoder();
        let mut text = String::new();
        let mut generated = 0;
        let stop = loop {
            if generated >= max_tokens {
                break StopReason::MaxTokens;
            }
            if self.cancel.is_cancelled() {
                return Err(InferError::Cancelled);
            }
            let logprobs = top_logprobs(&self.logits, params.logprobs);
            let id = sampler.sample(&self.logits, &self.tokens, tokenizer);
            if tokenizer.is_end_of_generation(id) {
                break StopReason::EndOfGeneration;
            }
            let piece = decoder.push(id);
            generated += 1;
            let feedback = callback(&GeneratedToken {
                id,
                text: &piece,
                logprobs: &logprobs,
            });
            text.push_str(&piece);
            if params
                .stop_strings
                .iter()
                .any(|s| !s.is_empty() && text.contains(s.as_str()))
            {
                break StopReason::StopString;
            }
            if feedback == InferenceFeedback::Halt {
                break StopReason::Halted;
            }
            if generated >= max_tokens {
                break StopReason::MaxTokens;
            }
            if self.tokens.len() >= self.params.n_ctx {
                break StopReason::ContextFull;
            }
            self.evaluate(&[id])?;
        };
        Ok(InferenceStats {
            prompt: prompt_stats,
            generated,
            generation_millis: elapsed_ms(started),
            stop,
        })
    }

    /// Evaluates `batch` after the cached tokens, appends it to them and keeps the last logits.
    fn evaluate(&mut self, batch: &[TokenId]) -> Result<(), InferError> {
        let n_past = self.tokens.len();
        debug_assert!(!batch.is_empty() && n_past + batch.len() <= self.params.n_ctx);
        self.logits_valid = false;
        let model = Arc::clone(&self.model);
        let n_tokens = batch.len();
        let n_kv = n_past + n_tokens;
        let ctx = graph_context(&model)?;
        let (inputs, graph, logits) =
            build_batch_graph(&model, &self.cache, &ctx, n_tokens, n_past);
        self.allocator.allocate(&graph)?;

        // Inputs: ids, positions, the causal mask and which row to project to logits.
        let ids: Vec<i32> = batch.iter().map(|&t| t as i32).collect();
        inputs.tokens.set_data(as_bytes_i32(&ids))?;
        let positions: Vec<i32> = (n_past..n_kv).map(|p| p as i32).collect();
        inputs.positions.set_data(as_bytes_i32(&positions))?;
        inputs.mask.set_data(&causal_mask(n_past, n_tokens))?;
        inputs
            .output_rows
            .set_data(as_bytes_i32(&[n_tokens as i32 - 1]))?;

        match self.backend.compute(&graph) {
            Ok(()) => {}
            Err(GgmlError::Aborted) => return Err(InferError::Cancelled),
            Err(other) => return Err(other.into()),
        }
        self.logits = logits.to_f32_vec()?;
        self.tokens.extend_from_slice(batch);
        self.logits_valid = true;
        Ok(())
    }

    /// Sizes the compute buffer for the largest batch at a full context, so it never grows later.
    fn reserve_compute_buffer(&mut self) -> Result<(), InferError> {
        let model = Arc::clone(&self.model);
        let ctx = graph_context(&model)?;
        let n_tokens = self.params.n_batch;
        let n_past = self.params.n_ctx - n_tokens;
        let (_, graph, _) = build_batch_graph(&model, &self.cache, &ctx, n_tokens, n_past);
        self.allocator.reserve(&graph)?;
        Ok(())
    }

    /// An independent copy: same cached tokens, own cache and compute resources.
    pub fn fork(&self) -> Result<Session, InferError> {
        let hp = self.model.architecture().hyperparameters();
        let cache = self.cache.try_clone(hp)?;
        let backend = CpuBackend::new(self.params.n_threads)?;
        let allocator = GraphAllocator::new()?;
        let mut session = Session {
            model: Arc::clone(&self.model),
            backend,
            allocator,
            cache,
            tokens: self.tokens.clone(),
            logits: self.logits.clone(),
            logits_valid: self.logits_valid,
            params: self.params.clone(),
            cancel: CancelFlag::new(),
        };
        session.backend.set_abort_flag(session.cancel.0.clone());
        session.reserve_compute_buffer()?;
        Ok(session)
    }
}

impl Clone for Session {
    /// Forks the session (see [`Session::fork`]). Panics only if memory for the copy cannot be had.
    fn clone(&self) -> Self {
        self.fork().expect("forking a session: out of memory")
    }
}

/// A metadata context big enough for one forward graph of `model`.
fn graph_context(model: &Model) -> Result<Context, GgmlError> {
    let size = graph_size(model.architecture().hyperparameters().n_layer);
    Context::new(size + 8, size)
}

/// Declares the inputs of a batch of `n_tokens` after `n_past` cached ones and builds its forward
/// graph; returns the inputs, the graph and the logits tensor.
fn build_batch_graph<'a>(
    model: &'a Model,
    cache: &'a KvCache,
    ctx: &'a Context,
    n_tokens: usize,
    n_past: usize,
) -> (BatchInputs<'a>, Graph<'a>, Tensor<'a>) {
    let n_kv = n_past + n_tokens;
    let input = |tensor_type, dims: &[i64], name| {
        ctx.new_tensor(tensor_type, dims)
            .set_name(name)
            .mark_input()
    };
    let inputs = BatchInputs {
        tokens: input(TensorType::I32, &[n_tokens as i64], "tokens"),
        positions: input(TensorType::I32, &[n_tokens as i64], "positions"),
        mask: input(TensorType::F16, &[n_kv as i64, n_tokens as i64], "mask"),
        output_rows: input(TensorType::I32, &[1], "output_rows"),
        n_tokens,
        n_past,
        flash_attention: model.params().flash_attention,
    };
    let architecture = model.architecture();
    let graph_nodes = graph_size(architecture.hyperparameters().n_layer);
    let weights = model.weights().tensors();
    let cache = cache.tensors();
    let mut graph = ctx.new_graph(graph_nodes);
    let logits = architecture
        .build(ctx, &mut graph, &weights, &cache, &inputs)
        .mark_output();
    graph.build_forward(logits);
    (inputs, graph, logits)
}

fn graph_size(n_layer: usize) -> usize {
    (n_layer * 48 + 256).max(1024)
}

fn elapsed_ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

fn as_bytes_i32(values: &[i32]) -> &[u8] {
    bytemuck::cast_slice(values)
}

/// F16 mask `[n_kv, n_tokens]`: token `i` (at position `n_past + i`) sees positions `0..=n_past + i`.
fn causal_mask(n_past: usize, n_tokens: usize) -> Vec<u8> {
    const ZERO: [u8; 2] = 0x0000u16.to_le_bytes();
    const MINUS_INFINITY: [u8; 2] = 0xFC00u16.to_le_bytes();
    let n_kv = n_past + n_tokens;
    let mut mask = Vec::with_capacity(n_kv * n_tokens * 2);
    for i in 0..n_tokens {
        for j in 0..n_kv {
            mask.extend_from_slice(if j <= n_past + i {
                &ZERO
            } else {
                &MINUS_INFINITY
            });
        }
    }
    mask
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causal_mask_hides_the_future() {
        let mask = causal_mask(1, 2);
        let values: Vec<u16> = mask
            .chunks(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .collect();
        assert_eq!(values, vec![0, 0, 0xFC00, 0, 0, 0]);
    }
}
