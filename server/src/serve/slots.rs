//! Slots: N engine sessions of the one loaded model, each with its own KV cache and its own
//! blocking thread, and the bounded queue in front of them.
//!
//! A request becomes a [`GenerationJob`]. [`SlotPool::submit`] hands it to a free slot at once —
//! the one its client asked for (`id_slot`) when that one is free, otherwise the free slot whose
//! cached tokens share the longest prefix with the prompt (ties: the emptiest cache), so that a
//! client's next request finds its prompt already evaluated. With every slot busy the job waits
//! in a FIFO queue of `--queue` places; past that, `503`. A slot that finishes takes the oldest
//! waiting job.
//!
//! The [`JobHandle`] that `submit` returns is the client's end: generated text arrives on its
//! channel, and dropping it (the client went away, so axum dropped the response future or the
//! stream) takes the job out of the queue or cancels its generation. The slot thread checks the
//! cancel flag at every token and the engine between graph computations, so a cancelled
//! generation stops within one token and the slot takes the next job.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use lmrs::{
    CancelFlag, InferError, InferenceFeedback, InferenceParameters, InferenceStats, Model, Session,
    SessionParams, StopReason, TokenId,
};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tracing::{debug, error, warn};

use super::error::ApiError;
use super::metrics::{Metrics, PoolGauges};
use super::stops::{StopType, TextRules, TextStop};
use crate::completion::stop_rules::{branch_point, Generated, StopContext, StopRules};

/// One generation to run on a slot.
#[derive(Clone, Debug)]
pub(crate) struct GenerationJob {
    /// Prompt tokens (not empty, shorter than the context).
    pub(crate) prompt: Vec<TokenId>,
    /// Most tokens to generate.
    pub(crate) max_tokens: usize,
    /// Sampling (stop strings are in `rules`, not here).
    pub(crate) sampling: InferenceParameters,
    /// Stop strings and `n_indent`.
    pub(crate) rules: TextRules,
    /// The language server's stop rules, for `/infill` in the `lmrs` layout: the text goes out
    /// once they have finished it (they may take text back).
    pub(crate) editor: Option<EditorRules>,
    /// Most time for evaluating the prompt, from when a slot starts it (`t_max_prompt_ms`).
    pub(crate) max_prompt_time: Option<Duration>,
    /// After the first line, most time for generating (`t_max_predict_ms`).
    pub(crate) max_predict_time: Option<Duration>,
    /// The slot the client asked for (`id_slot`), honoured when it is free.
    pub(crate) preferred_slot: Option<usize>,
    /// Whether the prompt may reuse the slot's cached tokens (`cache_prompt`, on by default).
    pub(crate) reuse_cache: bool,
}

/// The language server's stop rules for one job (see [`crate::completion::stop_rules`]).
#[derive(Clone, Debug)]
pub(crate) struct EditorRules {
    /// The cursor line and what follows it.
    pub(crate) stop: StopContext,
    /// Healed text the generation must start with; it is not part of the answer.
    pub(crate) heal: String,
    /// Most generation time from the first token; past it the answer ends (an unfinished last
    /// name on the first line is dropped, an unfinished later line too).
    pub(crate) time_budget: Duration,
}

/// A generated token with its top log-probabilities (when asked for).
#[derive(Clone, Debug)]
pub(crate) struct TokenProbs {
    /// The token.
    pub(crate) id: TokenId,
    /// The most likely tokens before sampling, with their log-probabilities.
    pub(crate) top: Vec<(TokenId, f32)>,
}

/// What a slot sends about a job.
#[derive(Debug)]
pub(crate) enum SlotEvent {
    /// Text no stop rule can take back any more, and the tokens generated since the last chunk.
    Text {
        /// The text.
        text: String,
        /// The tokens.
        tokens: Vec<TokenProbs>,
    },
    /// The end: the whole result, or why there is none.
    Done(Result<Outcome, ApiError>),
}

/// What a finished job did (llama.cpp's response fields).
#[derive(Clone, Debug)]
pub(crate) struct Outcome {
    /// The slot that ran it.
    pub(crate) slot: usize,
    /// The generated text, cut by the stop rules.
    pub(crate) content: String,
    /// Generated token ids.
    pub(crate) tokens: Vec<TokenId>,
    /// Why it stopped.
    pub(crate) stop_type: StopType,
    /// The stop string that ended it, if one did.
    pub(crate) stopping_word: String,
    /// Prompt tokens.
    pub(crate) prompt_tokens: usize,
    /// Prompt tokens found in the slot's cache.
    pub(crate) prompt_cached: usize,
    /// Prompt tokens evaluated.
    pub(crate) prompt_evaluated: usize,
    /// Prompt evaluation time.
    pub(crate) prompt_ms: f64,
    /// Tokens generated.
    pub(crate) predicted: usize,
    /// Generation time.
    pub(crate) predicted_ms: f64,
    /// Tokens the slot's cache holds afterwards.
    pub(crate) tokens_cached: usize,
}

/// A job on its way to a slot.
struct Assignment {
    job: GenerationJob,
    cancel: CancelFlag,
    events: UnboundedSender<SlotEvent>,
}

/// A job waiting for a slot.
struct Queued {
    id: u64,
    assignment: Assignment,
}

/// What the scheduler knows, under one lock.
struct PoolState {
    /// Per slot: whether it runs a job.
    busy: Vec<bool>,
    /// Per slot: the tokens its cache held after its last job.
    cached: Vec<Vec<TokenId>>,
    /// Jobs waiting for a slot, oldest first.
    queue: VecDeque<Queued>,
}

/// The slots and their queue.
pub(crate) struct SlotPool {
    state: Mutex<PoolState>,
    senders: Vec<mpsc::Sender<Assignment>>,
    queue_capacity: usize,
    next_id: AtomicU64,
    metrics: Arc<Metrics>,
}

/// The client's end of a submitted job; dropping it cancels the job.
pub(crate) struct JobHandle {
    id: u64,
    pool: Arc<SlotPool>,
    cancel: CancelFlag,
    /// Text chunks, then one [`SlotEvent::Done`].
    pub(crate) events: UnboundedReceiver<SlotEvent>,
}

impl Drop for JobHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
        self.pool.withdraw(self.id);
    }
}

/// Creates `slots` sessions of `model`.
pub(crate) fn create_sessions(
    model: &Arc<Model>,
    params: &SessionParams,
    slots: usize,
) -> Result<Vec<Session>, InferError> {
    (0..slots)
        .map(|_| Session::new(Arc::clone(model), params.clone()))
        .collect()
}

impl SlotPool {
    /// Starts one thread per session and returns the pool.
    pub(crate) fn start(
        sessions: Vec<Session>,
        session_params: SessionParams,
        queue_capacity: usize,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Arc<SlotPool>> {
        let n = sessions.len();
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..n).map(|_| mpsc::channel()).unzip();
        let pool = Arc::new(SlotPool {
            state: Mutex::new(PoolState {
                busy: vec![false; n],
                cached: vec![Vec::new(); n],
                queue: VecDeque::new(),
            }),
            senders,
            queue_capacity,
            next_id: AtomicU64::new(0),
            metrics,
        });
        for (slot, (session, receiver)) in sessions.into_iter().zip(receivers).enumerate() {
            let pool = Arc::clone(&pool);
            let params = session_params.clone();
            std::thread::Builder::new()
                .name(format!("lmrs-slot-{slot}"))
                .spawn(move || pool.slot_loop(slot, session, params, receiver))?;
        }
        Ok(pool)
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        // A panic never happens while the lock is held (no engine work under it); recover anyway.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Slots in all.
    pub(crate) fn slot_count(&self) -> usize {
        self.senders.len()
    }

    /// Busy slots and queue length now.
    pub(crate) fn gauges(&self) -> PoolGauges {
        let state = self.lock();
        PoolGauges {
            slots: state.busy.len(),
            busy: state.busy.iter().filter(|&&b| b).count(),
            queued: state.queue.len(),
        }
    }

    /// Starts `job` on a free slot or queues it; `503` when the queue is full.
    pub(crate) fn submit(self: &Arc<Self>, job: GenerationJob) -> Result<JobHandle, ApiError> {
        let (events_sender, events) = unbounded_channel();
        let cancel = CancelFlag::new();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let assignment = Assignment {
            job,
            cancel: cancel.clone(),
            events: events_sender,
        };
        let mut state = self.lock();
        match choose_slot(&state, &assignment.job) {
            Some(slot) => {
                state.busy[slot] = true;
                drop(state);
                debug!(slot, "request assigned to a free slot");
                if self.senders[slot].send(assignment).is_err() {
                    self.lock().busy[slot] = false;
                    return Err(ApiError::internal(format!("slot {slot} has stopped")));
                }
            }
            None if state.queue.len() < self.queue_capacity => {
                state.queue.push_back(Queued { id, assignment });
            }
            None => {
                drop(state);
                self.metrics.record_queue_full();
                return Err(ApiError::queue_full(self.queue_capacity));
            }
        }
        Ok(JobHandle {
            id,
            pool: Arc::clone(self),
            cancel,
            events,
        })
    }

    /// Takes job `id` out of the queue if it is still waiting.
    fn withdraw(&self, id: u64) {
        let mut state = self.lock();
        state.queue.retain(|queued| queued.id != id);
    }

    /// Records what slot `slot` now caches and gives it the oldest waiting job, or marks it free.
    fn next_job(&self, slot: usize, cached: &[TokenId]) -> Option<Assignment> {
        let mut state = self.lock();
        state.cached[slot].clear();
        state.cached[slot].extend_from_slice(cached);
        while let Some(queued) = state.queue.pop_front() {
            if !queued.assignment.cancel.is_cancelled() {
                return Some(queued.assignment);
            }
        }
        state.busy[slot] = false;
        None
    }

    /// A slot's thread: runs the jobs it is given, then the queued ones, until the server ends.
    fn slot_loop(
        self: Arc<Self>,
        slot: usize,
        mut session: Session,
        params: SessionParams,
        receiver: mpsc::Receiver<Assignment>,
    ) {
        while let Ok(first) = receiver.recv() {
            let mut next = Some(first);
            while let Some(assignment) = next.take() {
                let answer = self.run_assignment(slot, &mut session, &params, assignment);
                // The slot is free (or has its next job) and its cache recorded before the client
                // hears the answer: a client's next request then finds its prompt's slot.
                next = self.next_job(slot, session.tokens());
                if let Some((events, event)) = answer {
                    let _ = events.send(event);
                }
            }
        }
    }

    /// Runs one job and counts it; returns its last event to send (none when cancelled).
    fn run_assignment(
        &self,
        slot: usize,
        session: &mut Session,
        params: &SessionParams,
        assignment: Assignment,
    ) -> Option<(UnboundedSender<SlotEvent>, SlotEvent)> {
        let Assignment {
            job,
            cancel,
            events,
        } = assignment;
        if cancel.is_cancelled() {
            // The client went away between the assignment and the start.
            self.metrics.record_cancelled();
            return None;
        }
        let ran = std::panic::catch_unwind(AssertUnwindSafe(|| {
            run_job(slot, session, &job, &cancel, &events)
        }));
        let result = match ran {
            Ok(result) => result,
            Err(_) => {
                error!(slot, "the engine panicked; the slot starts a new session");
                match Session::new(Arc::clone(session.model()), params.clone()) {
                    Ok(fresh) => *session = fresh,
                    Err(e) => {
                        warn!(slot, error = %e, "cannot create a new session; keeping the old one, emptied");
                        session.truncate(0);
                    }
                }
                Err(JobFailure::Api(ApiError::internal(
                    "the engine failed on this request (see the server log)",
                )))
            }
        };
        match result {
            Ok(outcome) => {
                self.metrics.record_generation(
                    outcome.prompt_tokens,
                    outcome.prompt_evaluated,
                    outcome.prompt_cached,
                    outcome.predicted,
                );
                Some((events, SlotEvent::Done(Ok(outcome))))
            }
            Err(JobFailure::Cancelled) => {
                debug!(slot, "generation cancelled: the client went away");
                self.metrics.record_cancelled();
                None
            }
            Err(JobFailure::Api(e)) => Some((events, SlotEvent::Done(Err(e)))),
            Err(JobFailure::PromptCut) => Some((
                events,
                SlotEvent::Done(Err(ApiError::internal(
                    "the prompt's deadline passed before it was evaluated",
                ))),
            )),
        }
    }
}

/// Why a job has no outcome.
enum JobFailure {
    /// The client went away.
    Cancelled,
    /// An error to answer with.
    Api(ApiError),
    /// The prompt's deadline (`t_max_prompt_ms`) passed before it was evaluated (editor jobs; the
    /// caller answers empty).
    PromptCut,
}

/// The free slot for `job`: its preferred one if free, otherwise the longest cached prefix (ties:
/// the shortest cache); `None` when every slot is busy.
fn choose_slot(state: &PoolState, job: &GenerationJob) -> Option<usize> {
    if let Some(preferred) = job.preferred_slot {
        if state.busy.get(preferred) == Some(&false) {
            return Some(preferred);
        }
    }
    (0..state.busy.len())
        .filter(|&slot| !state.busy[slot])
        .max_by_key(|&slot| {
            let cached = &state.cached[slot];
            let common = common_prefix_len(cached, &job.prompt);
            (
                common,
                std::cmp::Reverse(cached.len()),
                std::cmp::Reverse(slot),
            )
        })
}

/// Length of the longest common prefix of two token sequences.
pub(crate) fn common_prefix_len(a: &[TokenId], b: &[TokenId]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Runs `job` on `session`, streaming settled text to `events`.
fn run_job(
    slot: usize,
    session: &mut Session,
    job: &GenerationJob,
    cancel: &CancelFlag,
    events: &UnboundedSender<SlotEvent>,
) -> Result<Outcome, JobFailure> {
    session.set_cancel_flag(cancel.clone());
    if !job.reuse_cache {
        session.truncate(0);
    }
    let mut sampling = job.sampling.clone();
    sampling.prompt_deadline = job.max_prompt_time.map(|budget| Instant::now() + budget);
    let want_probs = sampling.logprobs > 0;
    if let Some(editor) = &job.editor {
        return run_editor_job(slot, session, job, editor, sampling, cancel, events);
    }

    let mut text = String::new();
    let mut sent = 0;
    let mut generated_ids = Vec::new();
    let mut pending_tokens = Vec::new();
    let mut text_stop = None;
    let mut late = false;
    let mut generation_started: Option<Instant> = None;
    let result = session.infer(&job.prompt[..], job.max_tokens, &sampling, |token| {
        if cancel.is_cancelled() || events.is_closed() {
            return InferenceFeedback::Halt;
        }
        let started = *generation_started.get_or_insert_with(Instant::now);
        generated_ids.push(token.id);
        if want_probs {
            pending_tokens.push(TokenProbs {
                id: token.id,
                top: token.logprobs.to_vec(),
            });
        }
        text.push_str(token.text);
        // A stop rule cuts the text; what is left of it goes out with the outcome.
        if let Some(stop) = job.rules.check(&text) {
            text.truncate(stop.cut.max(sent));
            text_stop = Some(stop);
            return InferenceFeedback::Halt;
        }
        let safe = job.rules.safe_len(&text);
        if safe > sent {
            let _ = events.send(SlotEvent::Text {
                text: text[sent..safe].to_string(),
                tokens: std::mem::take(&mut pending_tokens),
            });
            sent = safe;
        }
        if let Some(limit) = job.max_predict_time {
            if text.contains('\n') && started.elapsed() > limit {
                late = true;
                return InferenceFeedback::Halt;
            }
        }
        InferenceFeedback::Continue
    });
    if cancel.is_cancelled() || events.is_closed() {
        return Err(JobFailure::Cancelled);
    }
    let stats = match result {
        Ok(stats) => stats,
        Err(InferError::Cancelled) => return Err(JobFailure::Cancelled),
        Err(InferError::PromptDeadline { .. }) => {
            // The prompt took longer than `t_max_prompt_ms`: an empty suggestion, as a budget.
            return Ok(prompt_cut_outcome(slot, session, job));
        }
        Err(other) => {
            return Err(JobFailure::Api(ApiError::internal(format!(
                "generation failed: {other}"
            ))))
        }
    };
    if text.len() > sent {
        let _ = events.send(SlotEvent::Text {
            text: text[sent..].to_string(),
            tokens: std::mem::take(&mut pending_tokens),
        });
    }
    let (stop_type, stopping_word) = match text_stop {
        Some(stop) => (stop.stop_type, stop.word),
        None if late => (StopType::Limit, String::new()),
        None => match stats.stop {
            StopReason::EndOfGeneration => (StopType::Eos, String::new()),
            StopReason::StopString => (StopType::Word, String::new()),
            StopReason::MaxTokens | StopReason::ContextFull | StopReason::Halted => {
                (StopType::Limit, String::new())
            }
        },
    };
    Ok(Outcome {
        slot,
        content: text,
        tokens: generated_ids,
        stop_type,
        stopping_word,
        prompt_tokens: job.prompt.len(),
        prompt_cached: stats.prompt.reused,
        prompt_evaluated: stats.prompt.evaluated,
        prompt_ms: stats.prompt.millis,
        predicted: stats.generated,
        predicted_ms: stats.generation_millis,
        tokens_cached: session.tokens().len(),
    })
}

/// [`run_job`] under the language server's stop rules (`/infill` in the `lmrs` layout): the
/// generation must start with the healed text, special tokens are never sampled, and the
/// finished text goes out in one piece. A first line that only repeated the line below the
/// cursor gets one more try from the model's runner-up at the latest plausible token, as the
/// language server's completions do ([`branch_point`]).
fn run_editor_job(
    slot: usize,
    session: &mut Session,
    job: &GenerationJob,
    editor: &EditorRules,
    mut sampling: InferenceParameters,
    cancel: &CancelFlag,
    events: &UnboundedSender<SlotEvent>,
) -> Result<Outcome, JobFailure> {
    sampling.suppress_special = true;
    sampling.runner_up = true;
    if sampling.temperature <= 0.0 {
        sampling.top_k = 1;
    }
    let first = EditorStep {
        prompt: &job.prompt,
        max_tokens: job.max_tokens,
        heal: &editor.heal,
        rules: StopRules::new(editor.stop.clone(), &editor.heal),
    };
    let mut done = match first.run(session, job, editor, &sampling, cancel, events) {
        Err(JobFailure::PromptCut) => return Ok(prompt_cut_outcome(slot, session, job)),
        result => result?,
    };
    let prompt_stats = done.stats.prompt;
    let mut predicted = done.stats.generated;
    let mut predicted_ms = done.stats.generation_millis;
    let mut tokens: Vec<TokenId> = done.generated.iter().map(|g| g.id).collect();
    let repeated_first_line = done.rules.repeated_first_line();
    let generated = std::mem::take(&mut done.generated);
    let (mut text, mut budget_cut, mut text_stop, probs) = done.into_text();
    if text.is_empty() && repeated_first_line && text_stop.is_none() {
        match branch_step(&job.prompt, &generated, editor, job.max_tokens) {
            None => {}
            Some(Branch::Finished(forced)) => text = forced,
            Some(Branch::Generate {
                prompt,
                max_tokens,
                heal_left,
                rules,
            }) => {
                let step = EditorStep {
                    prompt: &prompt,
                    max_tokens,
                    heal: &heal_left,
                    rules,
                };
                match step.run(session, job, editor, &sampling, cancel, events) {
                    // The first answer stands (empty) when the second try cannot run.
                    Err(JobFailure::PromptCut) => {}
                    Err(failure) => return Err(failure),
                    Ok(again) => {
                        predicted += again.stats.generated;
                        predicted_ms += again.stats.generation_millis;
                        tokens.extend(again.generated.iter().map(|g| g.id));
                        debug!(slot, "branched away from a repeated line");
                        (text, budget_cut, text_stop, _) = again.into_text();
                    }
                }
            }
        }
    }
    let (stop_type, stopping_word) = match text_stop {
        Some(stop) => {
            let mut cut = stop.cut.min(text.len());
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            (stop.stop_type, stop.word)
        }
        None if budget_cut => (StopType::Limit, String::new()),
        None => (StopType::Eos, String::new()),
    };
    if !text.is_empty() {
        let _ = events.send(SlotEvent::Text {
            text: text.clone(),
            tokens: probs,
        });
    }
    Ok(Outcome {
        slot,
        content: text,
        tokens,
        stop_type,
        stopping_word,
        prompt_tokens: job.prompt.len(),
        prompt_cached: prompt_stats.reused,
        prompt_evaluated: prompt_stats.evaluated,
        prompt_ms: prompt_stats.millis,
        predicted,
        predicted_ms,
        tokens_cached: session.tokens().len(),
    })
}

/// One generation of an editor job.
struct EditorStep<'a> {
    prompt: &'a [TokenId],
    max_tokens: usize,
    /// Healed text this generation must start with.
    heal: &'a str,
    rules: StopRules,
}

/// What an [`EditorStep`] did.
struct EditorDone {
    rules: StopRules,
    generated: Vec<Generated>,
    token_probs: Vec<TokenProbs>,
    text_stop: Option<TextStop>,
    stats: InferenceStats,
    late: bool,
}

impl EditorDone {
    /// The finished text, whether a budget (tokens, time) ended it, the client's stop string that
    /// did, and the tokens' probabilities.
    fn into_text(self) -> (String, bool, Option<TextStop>, Vec<TokenProbs>) {
        let budget_cut = self.late
            || matches!(
                self.stats.stop,
                StopReason::MaxTokens | StopReason::ContextFull
            );
        let mut rules = self.rules;
        if self.late {
            rules.end_before_unfinished_name();
        }
        (
            rules.finish(budget_cut),
            budget_cut,
            self.text_stop,
            self.token_probs,
        )
    }
}

impl EditorStep<'_> {
    fn run(
        mut self,
        session: &mut Session,
        job: &GenerationJob,
        editor: &EditorRules,
        sampling: &InferenceParameters,
        cancel: &CancelFlag,
        events: &UnboundedSender<SlotEvent>,
    ) -> Result<EditorDone, JobFailure> {
        let mut sampling = sampling.clone();
        sampling.required_prefix = self.heal.as_bytes().to_vec();
        let want_probs = sampling.logprobs > 0;
        let model = Arc::clone(session.model());
        let tokenizer = model.tokenizer();
        let mut generated = Vec::new();
        let mut token_probs = Vec::new();
        let mut text_stop = None;
        let mut deadline: Option<Instant> = None;
        let mut late = false;
        let rules = &mut self.rules;
        let result = session.infer(self.prompt, self.max_tokens, &sampling, |token| {
            if cancel.is_cancelled() || events.is_closed() || tokenizer.is_special(token.id) {
                return InferenceFeedback::Halt;
            }
            let now = Instant::now();
            if now >= *deadline.get_or_insert(now + editor.time_budget) {
                late = true;
                return InferenceFeedback::Halt;
            }
            let runner_up = token.runner_up.and_then(|r| {
                let text = std::str::from_utf8(tokenizer.token_bytes(r.id)).ok()?;
                Some((r, text))
            });
            generated.push(Generated::new(token, runner_up));
            if want_probs {
                token_probs.push(TokenProbs {
                    id: token.id,
                    top: token.logprobs.to_vec(),
                });
            }
            let feedback = rules.push(token.text);
            // The client's stop strings and `n_indent` apply too.
            if let Some(stop) = job.rules.check(rules.text()) {
                text_stop = Some(stop);
                return InferenceFeedback::Halt;
            }
            feedback
        });
        if cancel.is_cancelled() || events.is_closed() {
            return Err(JobFailure::Cancelled);
        }
        let stats = match result {
            Ok(stats) => stats,
            Err(InferError::Cancelled) => return Err(JobFailure::Cancelled),
            Err(InferError::PromptDeadline { .. }) => return Err(JobFailure::PromptCut),
            Err(other) => {
                return Err(JobFailure::Api(ApiError::internal(format!(
                    "generation failed: {other}"
                ))))
            }
        };
        Ok(EditorDone {
            rules: self.rules,
            generated,
            token_probs,
            text_stop,
            stats,
            late,
        })
    }
}

/// The second try of an editor job whose first line repeated the next line.
enum Branch {
    /// The forced tokens alone finished the answer.
    Finished(String),
    /// Generate after `prompt` (the job's prompt, the tokens before the branch point and the
    /// runner-up there).
    Generate {
        prompt: Vec<TokenId>,
        max_tokens: usize,
        heal_left: String,
        rules: StopRules,
    },
}

/// Where and how to try again after a first line that repeated the next one; `None` when no
/// runner-up is plausible enough ([`branch_point`]).
fn branch_step(
    prompt: &[TokenId],
    generated: &[Generated],
    editor: &EditorRules,
    max_tokens: usize,
) -> Option<Branch> {
    let at = branch_point(generated, &editor.heal, &editor.stop)?;
    let (runner_up, runner_up_text) = generated[at].runner_up.as_ref()?;
    let mut rules = StopRules::new(editor.stop.clone(), &editor.heal);
    let mut prompt = prompt.to_vec();
    let forced = generated[..at]
        .iter()
        .map(|token| (token.id, token.text.as_str()))
        .chain(std::iter::once((runner_up.id, runner_up_text.as_str())));
    for (id, text) in forced {
        prompt.push(id);
        if rules.push(text) == InferenceFeedback::Halt {
            return Some(Branch::Finished(rules.finish(false)));
        }
    }
    let max_tokens = max_tokens.saturating_sub(at + 1);
    if max_tokens == 0 {
        return Some(Branch::Finished(rules.finish(true)));
    }
    Some(Branch::Generate {
        prompt,
        max_tokens,
        heal_left: rules.pending_heal().to_owned(),
        rules,
    })
}

/// The outcome of a job whose prompt took longer than `t_max_prompt_ms`: an empty answer.
fn prompt_cut_outcome(slot: usize, session: &Session, job: &GenerationJob) -> Outcome {
    Outcome {
        slot,
        content: String::new(),
        tokens: Vec::new(),
        stop_type: StopType::Limit,
        stopping_word: String::new(),
        prompt_tokens: job.prompt.len(),
        prompt_cached: common_prefix_len(session.tokens(), &job.prompt),
        prompt_evaluated: 0,
        prompt_ms: job.max_prompt_time.map_or(0.0, |d| d.as_secs_f64() * 1e3),
        predicted: 0,
        predicted_ms: 0.0,
        tokens_cached: session.tokens().len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(busy: &[bool], cached: &[&[TokenId]]) -> PoolState {
        PoolState {
            busy: busy.to_vec(),
            cached: cached.iter().map(|c| c.to_vec()).collect(),
            queue: VecDeque::new(),
        }
    }

    fn job(prompt: &[TokenId], preferred: Option<usize>) -> GenerationJob {
        GenerationJob {
            prompt: prompt.to_vec(),
            max_tokens: 1,
            sampling: InferenceParameters::greedy(),
            rules: TextRules::default(),
            editor: None,
            max_prompt_time: None,
            max_predict_time: None,
            preferred_slot: preferred,
            reuse_cache: true,
        }
    }

    #[test]
    fn longest_cached_prefix_wins_among_free_slots() {
        let s = state(&[false, false, false], &[&[1, 2], &[1, 2, 3, 4], &[]]);
        assert_eq!(choose_slot(&s, &job(&[1, 2, 3, 9], None)), Some(1));
        // Nothing shared: the emptiest cache, so no warm prompt is overwritten.
        assert_eq!(choose_slot(&s, &job(&[7, 8], None)), Some(2));
    }

    #[test]
    fn busy_slots_are_skipped_and_a_free_preferred_slot_is_honoured() {
        let s = state(&[false, true], &[&[], &[1, 2, 3]]);
        assert_eq!(choose_slot(&s, &job(&[1, 2, 3], None)), Some(0));
        assert_eq!(choose_slot(&s, &job(&[1, 2, 3], Some(1))), Some(0));
        let s = state(&[false, false], &[&[1, 2, 3], &[]]);
        assert_eq!(choose_slot(&s, &job(&[1, 2, 3], Some(1))), Some(1));
        let s = state(&[true, true], &[&[], &[]]);
        assert_eq!(choose_slot(&s, &job(&[1], None)), None);
    }
}
