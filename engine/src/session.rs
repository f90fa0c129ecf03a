//! Sessions: a KV cache, compute buffers and a thread pool on a shared [`Model`].
//!
//! A session remembers which tokens its cache holds. Feeding a new prompt keeps the longest common
//! prefix with them and evaluates only the rest, in batches — this is what makes successive editor
//! requests cheap. Cancellation is checked between batches, between generated tokens, and inside a
//! graph computation (GGML's abort callback).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use ggml_sys::{
    Context, CpuBackend, GgmlError, GraphAllocator, OwnedGraph, RopeParams, Tensor, TensorType,
};

use crate::cache_reuse::{self, ReusedRun, Segment};
use crate::error::InferError;
use crate::hparams::Hyperparameters;
use crate::kv_cache::KvCache;
use crate::model::Model;
use crate::models::{BatchInputs, PositionShift};
use crate::sampling::{runner_up, top_logprobs, InferenceParameters, RunnerUp, Sampler};
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
    /// Shortest run of cached tokens that [`Session::feed`] moves to a new position instead of
    /// evaluating again, when a prompt changes before it (see the `cache_reuse` module); `0`
    /// (the default) evaluates everything after the common prefix, as a fresh session would.
    pub cache_reuse_min_tokens: usize,
    /// With reuse on, cached runs are only reused before the first occurrence of this token in a
    /// prompt; what follows it is evaluated again after any change before it. Meant for a FIM
    /// prompt's suffix marker: the suffix's cached entries attended to the line that is now being
    /// completed, and moved to the new prompt they make the model skip that line.
    pub cache_reuse_fence: Option<TokenId>,
}

impl Default for SessionParams {
    fn default() -> Self {
        SessionParams {
            n_ctx: 4096,
            n_batch: 512,
            n_threads: 0,
            cache_reuse_min_tokens: 0,
            cache_reuse_fence: None,
        }
    }
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
    /// Prompt tokens whose cache entries were kept (the common prefix and any runs moved).
    pub reused: usize,
    /// Of those, tokens whose cache entries were moved to another position.
    pub moved: usize,
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
    /// The most likely other token, if asked for ([`InferenceParameters::runner_up`]).
    pub runner_up: Option<RunnerUp>,
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
    /// The KV cache while no graph holds it.
    cache: Option<KvCache>,
    /// The graph of the last evaluation, reused while the batch shape stays the same; it owns the
    /// KV cache, whose tensors it writes. It is always the last graph given to `allocator`, so its
    /// tensors' memory is still its own.
    graph: Option<BatchGraph>,
    tokens: Vec<TokenId>,
    logits: Vec<f32>,
    logits_valid: bool,
    params: SessionParams,
    cancel: CancelFlag,
}

impl Session {
    /// Starts a session (its own KV cache, compute buffers and threads) on `model`.
    pub fn new(model: Arc<Model>, mut params: SessionParams) -> Result<Session, InferError> {
        if params.n_ctx == 0 || params.n_ctx > (1 << 20) {
            return Err(InferError::InvalidParams(format!(
                "n_ctx = {} must be between 1 and 2^20",
                params.n_ctx
            )));
        }
        if let Some(max) = model.architecture().max_positions() {
            // Learned position embeddings have one row per position: none past the last.
            if params.n_ctx > max {
                return Err(InferError::InvalidParams(format!(
                    "n_ctx = {} is longer than the {max} positions this model's position \
                     embeddings cover",
                    params.n_ctx
                )));
            }
        }
        params.n_batch = params.n_batch.clamp(1, params.n_ctx);
        if params.n_threads == 0 {
            params.n_threads = model.params().n_threads;
        }
        let hp = model.architecture().hyperparameters();
        check_memory_sizes(
            hp,
            params.n_ctx,
            params.n_batch,
            model.params().flash_attention,
        )?;
        let cache = KvCache::new(hp, params.n_ctx, !model.params().flash_attention)?;
        let backend = CpuBackend::new(params.n_threads)?;
        let allocator = GraphAllocator::new()?;
        let cancel = CancelFlag::new();
        let mut session = Session {
            model,
            backend,
            allocator,
            cache: Some(cache),
            graph: None,
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
        self.cache().map_or(0, KvCache::size_bytes)
    }

    /// The KV cache, wherever it is.
    fn cache(&self) -> Option<&KvCache> {
        match &self.graph {
            Some(graph) => Some(graph.cache()),
            None => self.cache.as_ref(),
        }
    }

    /// Takes the KV cache out of the last graph (dropping it) or its own slot, to build a graph on.
    /// Only a panic between taking and giving it back can lose it: then a fresh cache replaces it
    /// and the session forgets its tokens.
    fn take_cache(&mut self) -> Result<KvCache, InferError> {
        if let Some(graph) = self.graph.take() {
            return Ok(graph.into_cache());
        }
        if let Some(cache) = self.cache.take() {
            return Ok(cache);
        }
        self.tokens.clear();
        self.logits_valid = false;
        let hp = self.model.architecture().hyperparameters();
        let transposed_values = !self.model.params().flash_attention;
        Ok(KvCache::new(hp, self.params.n_ctx, transposed_values)?)
    }

    /// Builds the graph of a batch of `shape` on the KV cache (the last graph is dropped first: the
    /// allocator is about to hand its memory to the new one) and allocates or reserves its memory.
    /// On failure the cache goes back to its own slot.
    fn build_graph(&mut self, shape: BatchShape, reserve_only: bool) -> Result<(), InferError> {
        let cache = self.take_cache()?;
        let graph = match BatchGraph::build(&self.model, cache, shape) {
            Ok(graph) => graph,
            Err((error, cache)) => {
                self.cache = Some(cache);
                return Err(error);
            }
        };
        let allocated = if reserve_only {
            self.allocator.reserve(&graph.graph.graph())
        } else {
            self.allocator.allocate(&graph.graph.graph())
        };
        match allocated {
            Ok(()) if !reserve_only => self.graph = Some(graph),
            _ => self.cache = Some(graph.into_cache()),
        }
        Ok(allocated?)
    }

    /// Bytes of the compute buffer.
    pub fn compute_buffer_bytes(&self) -> usize {
        self.allocator.buffer_size()
    }

    /// Computes with `n_threads` threads from now on, at most [`SessionParams::n_threads`]. Fewer
    /// help when other processes keep cores busy: GGML's threads wait for each other at every step
    /// of a graph, so one thread that the system deschedules stalls them all.
    pub fn set_active_threads(&mut self, n_threads: usize) {
        self.backend
            .set_n_threads(n_threads.min(self.params.n_threads));
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
        self.feed_until(prompt, None)
    }

    /// [`feed`](Self::feed), but once `deadline` has passed it stops between micro-batches (after
    /// evaluating at least one, so that feeding the same prompt again always gets further) with
    /// [`InferError::PromptDeadline`]. What was evaluated stays cached.
    pub fn feed_until(
        &mut self,
        prompt: &[TokenId],
        deadline: Option<Instant>,
    ) -> Result<FeedStats, InferError> {
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
                moved: 0,
                evaluated: 0,
                millis: elapsed_ms(started),
            });
        }
        // Always evaluate at least the last prompt token: its logits predict what comes next.
        let keep = common.min(prompt.len() - 1);
        let runs = self.plan_reuse(prompt, keep);
        self.truncate(keep);
        self.logits_valid = false;
        if !runs.is_empty() {
            if let Err(error) = self.move_cache_rows(&runs) {
                // The rows past the kept prefix may be half moved: forget them.
                self.truncate(keep);
                return Err(error);
            }
        }
        let mut batches = 0;
        let (mut reused, mut moved) = (keep, 0);
        for segment in cache_reuse::segments(keep, prompt.len(), &runs) {
            let range = match segment {
                Segment::Reused(range) => {
                    // The rows were moved into place above; the tokens before them are cached.
                    debug_assert_eq!(self.tokens.len(), range.start);
                    reused += range.len();
                    self.tokens.extend_from_slice(&prompt[range]);
                    continue;
                }
                Segment::Evaluate(range) => range,
            };
            for chunk in prompt[range].chunks(self.params.n_batch) {
                // The cache keeps the batches already evaluated; the prompt's logits do not exist.
                if self.cancel.is_cancelled() {
                    self.logits_valid = false;
                    return Err(InferError::Cancelled);
                }
                if batches > 0 && deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                    self.logits_valid = false;
                    return Err(InferError::PromptDeadline {
                        n_tokens: prompt.len(),
                        remaining: prompt.len() - self.tokens.len(),
                    });
                }
                self.evaluate(chunk)?;
                batches += 1;
            }
        }
        for run in runs.iter().filter(|run| run.moves()) {
            moved += run.len;
        }
        Ok(FeedStats {
            reused,
            moved,
            evaluated: prompt.len() - reused,
            millis: elapsed_ms(started),
        })
    }

    /// The cached runs after the first `keep` tokens that `prompt` holds again, when reuse is on
    /// and the architecture can move cached keys.
    fn plan_reuse(&self, prompt: &[TokenId], keep: usize) -> Vec<ReusedRun> {
        let min_len = self.params.cache_reuse_min_tokens;
        if min_len == 0 {
            return Vec::new();
        }
        match self.model.architecture().position_shift() {
            PositionShift::Rope(_) | PositionShift::Unrotated => {
                let limit = self
                    .params
                    .cache_reuse_fence
                    .and_then(|fence| prompt.iter().position(|&t| t == fence))
                    .unwrap_or(prompt.len());
                cache_reuse::plan_reuse(&self.tokens, prompt, keep, min_len, limit)
            }
            PositionShift::Unsupported => Vec::new(),
        }
    }

    /// Moves the cache rows of each run from `run.from` to `run.to` in every layer, re-rotating the
    /// keys by the distance where they carry RoPE (ALiBi models' keys are copied as they are), in
    /// one graph: per layer every run is first copied out (keys rotated on the way), then written
    /// to its new rows, so runs may overlap each other's old rows in any
    /// order. The batch graph is dropped (the allocator's memory goes to this graph).
    fn move_cache_rows(&mut self, runs: &[ReusedRun]) -> Result<(), InferError> {
        let runs: Vec<ReusedRun> = runs.iter().copied().filter(ReusedRun::moves).collect();
        if runs.is_empty() {
            return Ok(());
        }
        let hp = self.model.architecture().hyperparameters().clone();
        // Per layer: the rotation that moves its keys, or none (keys without positions are copied).
        let ropes: Vec<Option<RopeParams>> = match self.model.architecture().position_shift() {
            PositionShift::Rope(ropes) => ropes.into_iter().map(Some).collect(),
            PositionShift::Unrotated => vec![None; hp.n_layer],
            PositionShift::Unsupported => {
                return Err(InferError::InvalidParams(
                    "this architecture's cached keys cannot move to other positions".into(),
                ))
            }
        };
        let rotated = ropes.iter().any(Option::is_some);
        if ropes.len() != hp.n_layer {
            return Err(InferError::InvalidParams(format!(
                "the architecture gives RoPE parameters for {} of {} layers",
                ropes.len(),
                hp.n_layer
            )));
        }
        let flash_attention = self.model.params().flash_attention;
        let cache = self.take_cache()?;
        let n_nodes = hp.n_layer * runs.len() * 8 + 16;
        let context = match Context::new(n_nodes + runs.len() + 8, n_nodes) {
            Ok(context) => context,
            Err(error) => {
                self.cache = Some(cache);
                return Err(error.into());
            }
        };
        let built = OwnedGraph::build(context, cache, |ctx, cache| {
            let cache = cache.tensors();
            let (head_dim, n_head_kv, n_embd_kv) = (
                hp.head_dim as i64,
                hp.n_head_kv as i64,
                hp.n_embd_kv() as i64,
            );
            // One input per run: the distance it moves, once per token (RoPE rotates by position);
            // none when no layer rotates.
            let mut distances = Vec::with_capacity(runs.len());
            for (i, run) in runs.iter().enumerate().filter(|_| rotated) {
                let distance =
                    ctx.new_tensor(&format!("shift_{i}"), TensorType::I32, &[run.len as i64]);
                distances.push(ctx.mark_input(distance)?);
            }
            let mut graph = ctx.new_graph(n_nodes);
            for (layer, rope) in ropes.iter().enumerate() {
                let (k_cache, v_cache) = (cache.keys(layer), cache.values(layer));
                let element_bytes = k_cache.nb()[0];
                let row_bytes = k_cache.nb()[1]; // keys: [n_embd_kv, n_ctx], row p = position p
                let head_bytes = element_bytes * hp.head_dim;
                // Rows `first..first + n` of a [n_embd_kv, n_ctx] matrix, per head.
                let rows = |matrix, first: usize, n: usize| {
                    ctx.view_3d(
                        matrix,
                        head_dim,
                        n_head_kv,
                        n as i64,
                        head_bytes,
                        row_bytes,
                        first * row_bytes,
                    )
                };
                // Columns `first..first + n` of the transposed values [n_ctx, n_embd_kv].
                let columns = |first: usize, n: usize| {
                    ctx.view_2d(
                        v_cache,
                        n as i64,
                        n_embd_kv,
                        v_cache.nb()[1],
                        first * element_bytes,
                    )
                };
                // Copy every run out first (keys rotated by the distance moved, if they rotate)...
                let mut copies = Vec::with_capacity(runs.len());
                for (index, run) in runs.iter().enumerate() {
                    let old_keys = rows(k_cache, run.from, run.len);
                    let keys = match (rope, distances.get(index)) {
                        (Some(rope), Some(&distance)) => ctx.rope_ext(old_keys, distance, rope),
                        _ => ctx.cont(old_keys),
                    }; // [head_dim, n_head_kv, len]
                    graph.build_forward(keys);
                    let values = if flash_attention {
                        ctx.cont(rows(v_cache, run.from, run.len)) // [head_dim, n_head_kv, len]
                    } else {
                        ctx.cont(columns(run.from, run.len)) // [len, n_embd_kv]
                    };
                    graph.build_forward(values);
                    copies.push((keys, values));
                }
                // ...then write them to their new rows.
                for (run, (keys, values)) in runs.iter().zip(copies) {
                    let key_rows = cache.writable(rows(k_cache, run.to, run.len));
                    graph.build_forward(ctx.cpy(keys, key_rows));
                    let value_rows = if flash_attention {
                        cache.writable(rows(v_cache, run.to, run.len))
                    } else {
                        cache.writable(columns(run.to, run.len))
                    };
                    graph.build_forward(ctx.cpy(values, value_rows));
                }
            }
            Ok((graph, distances))
        });
        let shift_graph = match built {
            Ok(graph) => graph,
            Err((error, cache)) => {
                self.cache = Some(cache);
                return Err(error.into());
            }
        };
        let computed = (|| -> Result<(), InferError> {
            self.allocator.allocate(&shift_graph.graph())?;
            for (i, run) in runs.iter().enumerate().filter(|_| rotated) {
                let distance = run.to as i64 - run.from as i64;
                let distance = vec![distance as i32; run.len];
                shift_graph.set_data(i, as_bytes_i32(&distance))?;
            }
            match self.backend.compute(&shift_graph.graph()) {
                Ok(()) => Ok(()),
                Err(GgmlError::Aborted) => Err(InferError::Cancelled),
                Err(other) => Err(other.into()),
            }
        })();
        self.cache = Some(shift_graph.into_owners());
        computed
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
            Prompt::Text(text) => tokenizer.encode_prompt(text, false),
        };
        let prompt_stats = self.feed_until(&prompt_tokens, params.prompt_deadline)?;
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
            let runner_up = params
                .runner_up
                .then(|| runner_up(&self.logits, id, tokenizer, params.suppress_special))
                .flatten();
            let piece = decoder.push(id);
            generated += 1;
            let feedback = callback(&GeneratedToken {
                id,
                text: &piece,
                logprobs: &logprobs,
                runner_up,
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
        let n_tokens = batch.len();
        let shape = self.batch_shape(n_tokens, n_past);
        if self.graph.as_ref().is_none_or(|g| g.shape != shape) {
            self.build_graph(shape, false)?;
        }
        let Some(graph) = self.graph.as_ref() else {
            unreachable!("build_graph keeps the graph it built or fails");
        };

        // Inputs: ids, positions, the cache rows they go to, the causal mask and the row whose
        // logits are wanted.
        let ids: Vec<i32> = batch.iter().map(|&t| t as i32).collect();
        let positions: Vec<i32> = (n_past..n_past + n_tokens).map(|p| p as i32).collect();
        let rows: Vec<i64> = (n_past..n_past + n_tokens).map(|p| p as i64).collect();
        graph.set_input(BatchGraph::TOKENS, as_bytes_i32(&ids))?;
        // Models without rotary or learned positions (ALiBi) have no node reading the positions.
        if graph.tensor(BatchGraph::POSITIONS).has_data() {
            graph.set_input(BatchGraph::POSITIONS, as_bytes_i32(&positions))?;
        }
        graph.set_input(BatchGraph::CACHE_ROWS, bytemuck::cast_slice(&rows))?;
        // The masks the graph uses: the causal mask, and the sliding-window one of models with a
        // window (where every layer is local, or none, one of the two is in no node and has no
        // memory).
        let alibi = self.model.architecture().uses_alibi();
        if graph.tensor(BatchGraph::MASK).has_data() {
            let mask = causal_mask(n_past, n_tokens, shape.n_kv, None, alibi);
            graph.set_input(BatchGraph::MASK, &mask)?;
        }
        if let Some(window) = self.model.architecture().sliding_window() {
            if graph.tensor(BatchGraph::MASK_SWA).has_data() {
                let mask = causal_mask(n_past, n_tokens, shape.n_kv, Some(window), alibi);
                graph.set_input(BatchGraph::MASK_SWA, &mask)?;
            }
        }
        graph.set_input(
            BatchGraph::OUTPUT_ROWS,
            as_bytes_i32(&[n_tokens as i32 - 1]),
        )?;

        match self.backend.compute(&graph.graph.graph()) {
            Ok(()) => {}
            Err(GgmlError::Aborted) => return Err(InferError::Cancelled),
            Err(other) => return Err(other.into()),
        }
        graph
            .tensor(BatchGraph::LOGITS)
            .read_f32_into(&mut self.logits)?;
        self.tokens.extend_from_slice(batch);
        self.logits_valid = true;
        Ok(())
    }

    /// The graph shape for a batch of `n_tokens` after `n_past` cached tokens. With flash attention
    /// the graph does not depend on `n_past`: attention spans the cache rounded up to
    /// [`KV_PADDING`] rows (the mask hides the rest), so one graph serves 256 consecutive tokens.
    fn batch_shape(&self, n_tokens: usize, n_past: usize) -> BatchShape {
        let n_used = n_past + n_tokens;
        if self.model.params().flash_attention {
            BatchShape {
                n_tokens,
                n_kv: n_used.div_ceil(KV_PADDING) * KV_PADDING,
                n_past: None,
            }
            .clamped(self.params.n_ctx)
        } else {
            BatchShape {
                n_tokens,
                n_kv: n_used,
                n_past: Some(n_past),
            }
        }
    }

    /// Sizes the compute buffer for the largest batch at a full context, so it never grows later.
    fn reserve_compute_buffer(&mut self) -> Result<(), InferError> {
        let n_tokens = self.params.n_batch;
        let n_past = self.params.n_ctx - n_tokens;
        let shape = self.batch_shape(n_tokens, n_past);
        self.build_graph(shape, true)
    }

    /// Makes this session hold what `other` holds (its cached tokens with their keys and values,
    /// its last logits) by copying the cache's memory, keeping this session's own compute
    /// resources: a second session can work on from the first one's prompt without touching it
    /// and without a fork's set-up. Both must be sessions of the same model with the same context
    /// size ([`InferError`] otherwise, and this session is then left empty).
    pub fn copy_state_from(&mut self, other: &Session) -> Result<(), InferError> {
        let mut cache = self.take_cache()?;
        let copied = match other.cache() {
            Some(source) if Arc::ptr_eq(&self.model, &other.model) => {
                cache.copy_from(source).map_err(InferError::from)
            }
            // Another model's cache, or the other session lost its own to a panic: copy nothing.
            _ => Ok(()),
        };
        self.cache = Some(cache);
        let same =
            copied.is_ok() && other.cache().is_some() && Arc::ptr_eq(&self.model, &other.model);
        if same {
            self.tokens.clone_from(&other.tokens);
            self.logits.clone_from(&other.logits);
            self.logits_valid = other.logits_valid;
        } else {
            self.tokens.clear();
            self.logits_valid = false;
        }
        copied
    }

    /// An independent copy: same cached tokens, own cache and compute resources.
    pub fn fork(&self) -> Result<Session, InferError> {
        let hp = self.model.architecture().hyperparameters();
        let (cache, tokens) = match self.cache() {
            Some(cache) => (cache.try_clone(hp)?, self.tokens.clone()),
            // Lost to a panic (see `take_cache`): the copy starts empty.
            None => (
                KvCache::new(hp, self.params.n_ctx, !self.model.params().flash_attention)?,
                Vec::new(),
            ),
        };
        let backend = CpuBackend::new(self.params.n_threads)?;
        let allocator = GraphAllocator::new()?;
        let mut session = Session {
            model: Arc::clone(&self.model),
            backend,
            allocator,
            cache: Some(cache),
            graph: None,
            logits_valid: self.logits_valid && !tokens.is_empty(),
            tokens,
            logits: self.logits.clone(),
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

/// Attention spans the cache in multiples of this many rows when flash attention is on (as llama.cpp
/// pads it), so the graph of a generated token is reused for up to this many tokens.
const KV_PADDING: usize = 256;

/// What a batch's graph depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct BatchShape {
    n_tokens: usize,
    /// Cache rows attention spans.
    n_kv: usize,
    /// Set when the graph writes at a fixed offset (the unfused attention's transposed values).
    n_past: Option<usize>,
}

impl BatchShape {
    fn clamped(mut self, n_ctx: usize) -> BatchShape {
        self.n_kv = self.n_kv.min(n_ctx);
        self
    }
}

/// A batch's forward graph with its inputs and logits, owning what it refers to: the model (its
/// weights) and the session's KV cache (which the graph writes).
struct BatchGraph {
    shape: BatchShape,
    graph: OwnedGraph<(Arc<Model>, KvCache)>,
}

impl BatchGraph {
    const TOKENS: usize = 0;
    const POSITIONS: usize = 1;
    const MASK: usize = 2;
    const OUTPUT_ROWS: usize = 3;
    const CACHE_ROWS: usize = 4;
    const LOGITS: usize = 5;
    /// Kept only for architectures with a sliding window.
    const MASK_SWA: usize = 6;

    /// Declares the inputs of a batch of this shape and builds its forward graph on `cache`; on
    /// failure the cache comes back with the error.
    fn build(
        model: &Arc<Model>,
        cache: KvCache,
        shape: BatchShape,
    ) -> Result<BatchGraph, (InferError, KvCache)> {
        let n_nodes = graph_size(model.architecture().hyperparameters().n_layer);
        let context = match Context::new(n_nodes + 8, n_nodes) {
            Ok(context) => context,
            Err(error) => return Err((error.into(), cache)),
        };
        let owners = (Arc::clone(model), cache);
        let graph = OwnedGraph::build(context, owners, |ctx, (model, cache)| {
            let (n_tokens, n_kv) = (shape.n_tokens as i64, shape.n_kv as i64);
            let input = |name, tensor_type, dims: &[i64]| {
                ctx.mark_input(ctx.new_tensor(name, tensor_type, dims))
            };
            let inputs = BatchInputs {
                tokens: input("tokens", TensorType::I32, &[n_tokens])?,
                positions: input("positions", TensorType::I32, &[n_tokens])?,
                mask: input("mask", TensorType::F16, &[n_kv, n_tokens])?,
                mask_swa: match model.architecture().sliding_window() {
                    Some(_) => Some(input("mask_swa", TensorType::F16, &[n_kv, n_tokens])?),
                    None => None,
                },
                output_rows: input("output_rows", TensorType::I32, &[1])?,
                cache_rows: input("cache_rows", TensorType::I64, &[n_tokens])?,
                n_tokens: shape.n_tokens,
                n_kv: shape.n_kv,
                n_past: shape.n_past.unwrap_or(0),
                flash_attention: model.params().flash_attention,
            };
            let weights = model.weights().tensors_for_batch(shape.n_tokens);
            let cache = cache.tensors();
            let mut graph = ctx.new_graph(n_nodes);
            let logits = ctx.mark_output(
                model
                    .architecture()
                    .build(ctx, &mut graph, &weights, &cache, &inputs),
            )?;
            graph.build_forward(logits);
            let mut kept = vec![
                inputs.tokens,
                inputs.positions,
                inputs.mask,
                inputs.output_rows,
                inputs.cache_rows,
                logits,
            ];
            kept.extend(inputs.mask_swa);
            Ok((graph, kept))
        });
        match graph {
            Ok(graph) => Ok(BatchGraph { shape, graph }),
            Err((error, (_, cache))) => Err((error.into(), cache)),
        }
    }

    /// One of the kept tensors ([`BatchGraph::TOKENS`], ...).
    fn tensor(&self, index: usize) -> Tensor<'_> {
        self.graph.tensor(index)
    }

    /// Writes the data of the input [`BatchGraph::TOKENS`], ....
    fn set_input(&self, index: usize, bytes: &[u8]) -> Result<(), GgmlError> {
        self.graph.set_data(index, bytes)
    }

    /// The KV cache the graph writes.
    fn cache(&self) -> &KvCache {
        &self.graph.owners().1
    }

    /// Drops the graph and gives its KV cache back.
    fn into_cache(self) -> KvCache {
        self.graph.into_owners().1
    }
}

/// Most bytes the KV cache, or the tensors of one batch's graph together, may take: more memory than
/// any machine has, and far enough from 2^63 that GGML's `int64_t` element counts and `size_t` byte
/// sums cannot overflow on the way to an allocation that fails cleanly.
const MAX_SESSION_BYTES: u128 = 1 << 56;

/// Refuses a context and batch size whose KV cache or batch graph would be larger than
/// [`MAX_SESSION_BYTES`], before GGML computes (and asserts on) any of their sizes.
fn check_memory_sizes(
    hp: &Hyperparameters,
    n_ctx: usize,
    n_batch: usize,
    flash_attention: bool,
) -> Result<(), InferError> {
    let [n_ctx, n_batch] = [n_ctx as u128, n_batch as u128];
    let size = |value: usize| value as u128;
    // Per layer, keys and values, F16.
    let kv_bytes = size(hp.n_layer) * 2 * size(hp.n_embd_kv()) * n_ctx * 2;
    // The largest tensors of a batch (F32): the mask, the attention scores (unfused attention
    // only), the queries, the feed-forward activations, the logits.
    let scores = if flash_attention {
        0
    } else {
        n_ctx * n_batch * size(hp.n_head)
    };
    let largest = [
        n_ctx * n_batch,
        scores,
        size(hp.n_head) * size(hp.head_dim) * n_batch,
        size(hp.n_ff) * n_batch,
        size(hp.n_embd) * n_batch,
        size(hp.n_vocab),
    ]
    .into_iter()
    .max()
    .unwrap_or(0)
        * 4;
    let graph_bytes = largest * size(graph_size(hp.n_layer));
    if kv_bytes > MAX_SESSION_BYTES || graph_bytes > MAX_SESSION_BYTES {
        return Err(InferError::InvalidParams(format!(
            "n_ctx = {n_ctx} with batches of {n_batch} tokens needs more memory than can be allocated \
             for this model"
        )));
    }
    Ok(())
}

/// Nodes of a batch's graph: a layer takes about 40 (Gemma 3's sandwich norms and QK-norm, without
/// flash attention, about 50), with room to spare.
fn graph_size(n_layer: usize) -> usize {
    (n_layer * 64 + 256).max(1024)
}

fn elapsed_ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

fn as_bytes_i32(values: &[i32]) -> &[u8] {
    bytemuck::cast_slice(values)
}

/// F16 mask `[n_kv, n_tokens]`: token `i` (at position `p = n_past + i`) sees positions `0..=p`, or
/// with a sliding `window` only the last `window` of them, `p + 1 - window..=p` (llama.cpp's
/// standard window: hidden where `p - j >= window`); rows past the batch (padding) are hidden from
/// every token. With `alibi`, a visible entry holds minus the distance `p - j` (in F16, as llama.cpp
/// writes it) instead of 0.
fn causal_mask(
    n_past: usize,
    n_tokens: usize,
    n_kv: usize,
    window: Option<usize>,
    alibi: bool,
) -> Vec<u8> {
    const ZERO: [u8; 2] = 0x0000u16.to_le_bytes();
    const MINUS_INFINITY: [u8; 2] = 0xFC00u16.to_le_bytes();
    let mut mask = Vec::with_capacity(n_kv * n_tokens * 2);
    for i in 0..n_tokens {
        for j in 0..n_kv {
            let p = n_past + i;
            let visible = j <= p && window.is_none_or(|window| p - j < window);
            if !visible {
                mask.extend_from_slice(&MINUS_INFINITY);
            } else if alibi {
                // ALiBi: minus the distance, which the attention scales by each head's slope.
                // (0.0 - d, so that distance 0 is +0 as llama.cpp writes it).
                let value = 0.0 - (p - j) as f32;
                mask.extend_from_slice(&ggml_sys::f32_to_f16_bits(value).to_le_bytes());
            } else {
                mask.extend_from_slice(&ZERO);
            }
        }
    }
    mask
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_too_large_for_any_memory_are_refused_before_ggml_sizes_them() {
        let hp = Hyperparameters {
            n_vocab: 1000,
            n_ctx_train: 4096,
            n_embd: 64,
            n_layer: 2,
            n_head: 1 << 23,
            n_head_kv: 1,
            head_dim: 2,
            n_ff: 128,
        };
        // Unfused attention scores [n_ctx, n_batch, n_head]: more elements than int64_t holds.
        assert!(check_memory_sizes(&hp, 1 << 20, 1 << 20, false).is_err());
        assert!(check_memory_sizes(&hp, 4096, 512, false).is_ok());
        // A KV cache wider than any memory.
        let wide = Hyperparameters {
            n_layer: 1 << 16,
            n_head_kv: 1 << 23,
            ..hp.clone()
        };
        assert!(check_memory_sizes(&wide, 1 << 20, 1, true).is_err());
    }

    #[test]
    fn causal_mask_hides_the_future() {
        let mask = causal_mask(1, 2, 4, None, false);
        let values: Vec<u16> = mask
            .chunks(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .collect();
        let hidden = 0xFC00;
        assert_eq!(values, vec![0, 0, hidden, hidden, 0, 0, 0, hidden]);
    }

    #[test]
    fn alibi_mask_holds_minus_the_distance() {
        // Tokens at positions 1 and 2 over 4 rows: distances 1, 0 then 2, 1, 0; the future hidden.
        let mask = causal_mask(1, 2, 4, None, true);
        let values: Vec<u16> = mask
            .chunks(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .collect();
        let (h, zero, m1, m2) = (0xFC00, 0x0000, 0xBC00, 0xC000);
        assert_eq!(values, vec![m1, zero, h, h, m2, m1, zero, h]);
    }

    #[test]
    fn sliding_window_mask_hides_the_distant_past_too() {
        // Tokens at positions 2 and 3 with a window of 2: each sees itself and the one before.
        let mask = causal_mask(2, 2, 5, Some(2), false);
        let values: Vec<u16> = mask
            .chunks(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .collect();
        let h = 0xFC00;
        assert_eq!(values, vec![h, 0, 0, h, h, h, h, 0, 0, h]);
    }

    /// Writes and loads the tiny model of `arch`; the file is removed when the model is loaded.
    fn tiny_model(arch: lmrs_fixtures::tiny::TinyArch, flash_attention: bool) -> Arc<Model> {
        tiny_model_from(
            lmrs_fixtures::tiny::tiny_model_writer(arch, 7),
            flash_attention,
        )
    }

    /// Writes and loads the model `writer` holds; the file is removed when the model is loaded.
    fn tiny_model_from(writer: lmrs_fixtures::GgufWriter, flash_attention: bool) -> Arc<Model> {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "lmrs-session-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("tiny.gguf");
        writer.write_to(&path).expect("writing the tiny model");
        let params = crate::ModelParams {
            n_threads: 1,
            flash_attention,
            repack: false,
            ..crate::ModelParams::default()
        };
        let model = Model::load(&path, params).expect("loading the tiny model");
        let _ = std::fs::remove_dir_all(&dir);
        Arc::new(model)
    }

    fn reuse_session(model: &Arc<Model>, min_tokens: usize) -> Session {
        let params = SessionParams {
            n_ctx: 128,
            n_batch: 16,
            n_threads: 1,
            cache_reuse_min_tokens: min_tokens,
            cache_reuse_fence: None,
        };
        Session::new(Arc::clone(model), params).expect("session")
    }

    /// The first layer's keys and values depend on the token and its position only (nothing has
    /// attended yet), so there a moved run must hold exactly what evaluating it at its new position
    /// writes: the values bit for bit, the keys up to the rounding of rotating F16 numbers twice.
    /// Checked for a deletion (runs move back), an insertion (they move on) and a swap, with
    /// flash attention (values stored like keys) and without (values transposed), on every tiny
    /// architecture; for gemma3 (whose local and global layers rotate with different bases) both
    /// with its first layer local and, by a per-layer pattern, global. Architectures whose cached
    /// entries cannot move ([`PositionShift::Unsupported`]) must reuse the common prefix only.
    #[test]
    fn moved_cache_rows_hold_what_evaluating_them_at_their_new_position_writes() {
        use lmrs_fixtures::tiny::{tiny_model_writer, TinyArch};
        let mut variants: Vec<(String, lmrs_fixtures::GgufWriter)> = TinyArch::ALL
            .iter()
            .map(|&arch| (arch.to_string(), tiny_model_writer(arch, 7)))
            .collect();
        let mut global_first = tiny_model_writer(TinyArch::Gemma3, 7);
        global_first.add_bool_array("gemma3.attention.sliding_window_pattern", &[false, true]);
        variants.push(("gemma3 (layer 0 global)".into(), global_first));
        for (arch, writer) in variants {
            for flash_attention in [true, false] {
                let model = tiny_model_from(writer.clone(), flash_attention);
                let hp = model.architecture().hyperparameters().clone();
                let n_vocab = hp.n_vocab as TokenId;
                let tokens: Vec<TokenId> = (0..60).map(|i| (i * 7 + 3) % n_vocab).collect();
                let deleted: Vec<TokenId> = [&tokens[..10], &tokens[20..]].concat();
                let inserted: Vec<TokenId> =
                    [&tokens[..10], &[5, 6, 7][..], &tokens[10..]].concat();
                let swapped: Vec<TokenId> = [
                    &tokens[..10],
                    &tokens[35..59],
                    &tokens[10..35],
                    &tokens[59..],
                ]
                .concat();
                for (what, prompt, expect_moved) in [
                    ("deletion", &deleted, 39),
                    ("insertion", &inserted, 49),
                    ("swap", &swapped, 49),
                ] {
                    let case = format!("{arch} flash={flash_attention} {what}");
                    let mut reusing = reuse_session(&model, 4);
                    reusing.feed(&tokens).expect("first prompt");
                    let stats = reusing.feed(prompt).expect("second prompt");
                    if let PositionShift::Unsupported = model.architecture().position_shift() {
                        // Learned positions: only the common prefix is reused, nothing moves,
                        // the rest is evaluated again.
                        assert_eq!((stats.reused, stats.moved), (10, 0), "{case}: {stats:?}");
                        assert_eq!(stats.evaluated, prompt.len() - 10, "{case}");
                        continue;
                    }
                    assert_eq!(stats.moved, expect_moved, "{case}: {stats:?}");
                    assert_eq!(stats.reused, 10 + expect_moved, "{case}: {stats:?}");
                    assert_eq!(stats.evaluated, prompt.len() - stats.reused, "{case}");
                    assert_eq!(reusing.tokens(), &prompt[..], "{case}");
                    let mut fresh = reuse_session(&model, 0);
                    fresh.feed(prompt).expect("fresh prompt");
                    let n = prompt.len();
                    let (keys, values) = reusing.cache().unwrap().read_rows(&hp, 0, 0, n);
                    let (fresh_keys, fresh_values) = fresh.cache().unwrap().read_rows(&hp, 0, 0, n);
                    assert_eq!(values, fresh_values, "{case}: values of layer 0");
                    let worst = keys
                        .iter()
                        .zip(&fresh_keys)
                        .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
                        .fold(0.0f32, f32::max);
                    assert!(worst < 4e-3, "{case}: keys of layer 0 differ by {worst}");
                    // The session works on: feeding its own prompt again costs nothing.
                    let again = reusing.feed(prompt).expect("same prompt");
                    assert_eq!(again.evaluated, 0, "{case}");
                }
            }
        }
    }

    #[test]
    fn without_reuse_nothing_moves() {
        let model = tiny_model(lmrs_fixtures::tiny::TinyArch::Qwen2, true);
        let tokens: Vec<TokenId> = (0..40).collect();
        let deleted: Vec<TokenId> = [&tokens[..10], &tokens[20..]].concat();
        let mut session = reuse_session(&model, 0);
        session.feed(&tokens).unwrap();
        let stats = session.feed(&deleted).unwrap();
        assert_eq!((stats.reused, stats.moved, stats.evaluated), (10, 0, 20));
    }
}
