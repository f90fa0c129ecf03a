//! The request and response bodies of `lmrs serve`, in llama.cpp's server's and OpenAI's field
//! names, and the checks that turn a request into a [`GenerationJob`]: every field that can be
//! wrong gets a `400` that names it, never a panic.
//!
//! Fields llama.vim and llama.vscode send that lmrs does not act on are accepted and ignored:
//! `samplers` (the sampler order is the engine's: penalty, top-k, top-p, min-p, temperature;
//! llama.cpp's `infill` sampler is not implemented), `cache_prompt: true` (always on), `model`.

use std::time::Duration;

use lmrs::{InferenceParameters, Model, TokenId, Tokenizer};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::infill::{
    build_editor_prompt, build_infill_prompt, EditorBudgets, ExtraChunk, InfillInput, InfillLayout,
};
use super::slots::{EditorRules, GenerationJob, Outcome, TokenProbs};
use super::stops::{StopType, TextRules};

/// Most log-probabilities per token a request may ask for.
const MAX_N_PROBS: usize = 100;
/// Most choices (`n`) one OpenAI request may ask for.
pub(crate) const MAX_CHOICES: usize = 16;

/// `stop`: one string or a list.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum StopField {
    /// One stop string.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl StopField {
    fn into_vec(self) -> Vec<String> {
        match self {
            StopField::One(s) => vec![s],
            StopField::Many(v) => v,
        }
    }
}

/// The sampling and budget fields shared by every generation endpoint (llama.cpp's names).
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct GenerationFields {
    /// Most tokens to generate; `-1` = until the context is full.
    pub(crate) n_predict: Option<i64>,
    /// OpenAI's name for `n_predict`.
    pub(crate) max_tokens: Option<i64>,
    /// Softmax temperature (`0` = greedy).
    pub(crate) temperature: Option<f32>,
    /// Top-k (`0` = off).
    pub(crate) top_k: Option<i64>,
    /// Top-p (`1` = off).
    pub(crate) top_p: Option<f32>,
    /// Min-p (`0` = off).
    pub(crate) min_p: Option<f32>,
    /// Repetition penalty (`1` = off).
    pub(crate) repeat_penalty: Option<f32>,
    /// Tokens the repetition penalty looks back at.
    pub(crate) repeat_last_n: Option<i64>,
    /// Seed (`-1` or absent = random).
    pub(crate) seed: Option<i64>,
    /// Stop strings.
    pub(crate) stop: Option<StopField>,
    /// Top log-probabilities to report per token.
    pub(crate) n_probs: Option<i64>,
    /// Never stop at end-of-generation tokens.
    #[serde(default)]
    pub(crate) ignore_eos: bool,
    /// Least indentation of lines after the first (0 = off).
    pub(crate) n_indent: Option<i64>,
    /// Most prompt evaluation time in milliseconds (0 = no limit).
    pub(crate) t_max_prompt_ms: Option<i64>,
    /// Most generation time after the first line in milliseconds (0 = no limit).
    pub(crate) t_max_predict_ms: Option<i64>,
    /// The slot to run on when it is free (`-1` = any).
    pub(crate) id_slot: Option<i64>,
    /// Whether to reuse the slot's cached prompt (default true).
    pub(crate) cache_prompt: Option<bool>,
    /// Stream the text as server-sent events.
    #[serde(default)]
    pub(crate) stream: bool,
    /// The only fields of a whole (not streamed) answer to send, as paths (`timings/prompt_n`);
    /// empty = all (see `super::response_fields`).
    #[serde(default)]
    pub(crate) response_fields: Vec<String>,
}

/// `POST /completion`.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct CompletionRequest {
    /// A string (special tokens parsed, BOS added if the model wants one), token ids, or a mix.
    pub(crate) prompt: Value,
    /// The rest.
    #[serde(flatten)]
    pub(crate) fields: GenerationFields,
}

/// `POST /infill`.
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct InfillRequest {
    /// Code before the cursor.
    #[serde(default)]
    pub(crate) input_prefix: String,
    /// Code after the cursor.
    #[serde(default)]
    pub(crate) input_suffix: String,
    /// Other files.
    #[serde(default)]
    pub(crate) input_extra: Vec<ExtraChunk>,
    /// Text after the prefix that the model continues.
    #[serde(default)]
    pub(crate) prompt: String,
    /// The rest.
    #[serde(flatten)]
    pub(crate) fields: GenerationFields,
}

/// `POST /v1/completions`.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct OpenAiCompletionRequest {
    /// A string, a list of one string, or token ids.
    pub(crate) prompt: Value,
    /// Text after the completion: the request becomes fill-in-the-middle when it is not empty.
    #[serde(default)]
    pub(crate) suffix: Option<String>,
    /// Choices to generate.
    pub(crate) n: Option<i64>,
    /// The rest.
    #[serde(flatten)]
    pub(crate) fields: GenerationFields,
}

/// `POST /tokenize`.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct TokenizeRequest {
    /// The text.
    pub(crate) content: String,
    /// Add BOS if the model wants one, and parse special tokens in the text.
    #[serde(default)]
    pub(crate) add_special: bool,
    /// Answer `{id, piece}` pairs instead of ids.
    #[serde(default)]
    pub(crate) with_pieces: bool,
}

/// `POST /detokenize`.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct DetokenizeRequest {
    /// Token ids.
    pub(crate) tokens: Vec<i64>,
}

/// The slot's context size and count, which requests are checked against, and the server's
/// `/infill` settings.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// Context size of each slot.
    pub(crate) n_ctx: usize,
    /// Slots in all.
    pub(crate) slots: usize,
    /// The prompt layout of `/infill`.
    pub(crate) infill_layout: InfillLayout,
    /// The budgets of its `lmrs` layout.
    pub(crate) editor_budgets: EditorBudgets,
}

/// Generation time from the first token of an `/infill` answer in the `lmrs` layout when the
/// request sets no `t_max_predict_ms` (the language server's default budget).
const EDITOR_TIME_BUDGET: Duration = Duration::from_millis(800);

/// A checked token id.
fn token_id(tokenizer: &Tokenizer, value: i64) -> Result<TokenId, ApiError> {
    if value < 0 || value as usize >= tokenizer.vocab_size() {
        return Err(ApiError::bad_request(format!(
            "token id {value} is out of range: the vocabulary has {} tokens",
            tokenizer.vocab_size()
        )));
    }
    Ok(value as TokenId)
}

/// Token ids from a JSON array of ids.
pub(crate) fn token_ids(tokenizer: &Tokenizer, values: &[i64]) -> Result<Vec<TokenId>, ApiError> {
    values.iter().map(|&v| token_id(tokenizer, v)).collect()
}

/// llama.cpp's `prompt`: a string (BOS added when the model wants one, special tokens parsed), an
/// array of token ids, or an array mixing strings and ids (only the first piece gets the BOS).
pub(crate) fn prompt_tokens(
    tokenizer: &Tokenizer,
    prompt: &Value,
) -> Result<Vec<TokenId>, ApiError> {
    match prompt {
        Value::String(text) => Ok(tokenizer.encode_prompt(text, true)),
        Value::Array(items) => {
            let mut tokens = Vec::new();
            for (i, item) in items.iter().enumerate() {
                match item {
                    Value::Number(n) => {
                        let id = n.as_i64().ok_or_else(|| {
                            ApiError::bad_request(format!("prompt[{i}] is not an integer token id"))
                        })?;
                        tokens.push(token_id(tokenizer, id)?);
                    }
                    Value::String(text) if i == 0 => {
                        tokens.extend(tokenizer.encode_prompt(text, true))
                    }
                    Value::String(text) => tokens.extend(tokenizer.encode(text, true)),
                    _ => {
                        return Err(ApiError::bad_request(format!(
                            "prompt[{i}] must be a string or a token id"
                        )))
                    }
                }
            }
            Ok(tokens)
        }
        _ => Err(ApiError::bad_request(
            "`prompt` must be a string or an array of token ids",
        )),
    }
}

/// OpenAI's `prompt`: a string, a list holding one string, or token ids.
pub(crate) fn openai_prompt_text(prompt: &Value) -> Result<Option<&str>, ApiError> {
    match prompt {
        Value::String(text) => Ok(Some(text)),
        Value::Array(items) if items.len() == 1 && items[0].is_string() => Ok(items[0].as_str()),
        Value::Array(items) if items.iter().all(Value::is_number) => Ok(None),
        Value::Array(_) => Err(ApiError::bad_request(
            "`prompt` must be one string or one array of token ids: batched prompts are not supported",
        )),
        _ => Err(ApiError::bad_request("`prompt` must be a string")),
    }
}

/// How many tokens a request may generate after `prompt_len` prompt tokens.
fn max_tokens(
    requested: Option<i64>,
    default: i64,
    prompt_len: usize,
    n_ctx: usize,
) -> Result<usize, ApiError> {
    let room = n_ctx - prompt_len;
    match requested.unwrap_or(default) {
        -1 => Ok(room),
        n if n < -1 => Err(ApiError::bad_request(format!(
            "n_predict = {n} is out of range: use -1 (until the context is full) or a number of tokens"
        ))),
        // More than the context holds ends where it is full, as llama.cpp's server does (clients
        // configured for a bigger context keep working).
        n => Ok(usize::try_from(n).unwrap_or(usize::MAX).min(room)),
    }
}

/// A millisecond budget field: absent or 0 = none.
fn millis(name: &str, value: Option<i64>) -> Result<Option<Duration>, ApiError> {
    match value {
        None | Some(0) => Ok(None),
        Some(ms) if ms < 0 => Err(ApiError::bad_request(format!(
            "{name} must not be negative"
        ))),
        Some(ms) => Ok(Some(Duration::from_millis(ms as u64))),
    }
}

/// Checks the prompt's length and the fields, and makes the job.
pub(crate) fn make_job(
    prompt: Vec<TokenId>,
    fields: &GenerationFields,
    default_n_predict: i64,
    limits: Limits,
) -> Result<GenerationJob, ApiError> {
    if prompt.is_empty() {
        return Err(ApiError::bad_request(
            "the prompt is empty: send at least one token of text",
        ));
    }
    if prompt.len() >= limits.n_ctx {
        return Err(ApiError::bad_request(format!(
            "the prompt is {} tokens, longer than the context allows ({} tokens per slot, --ctx-size): shorten it",
            prompt.len(),
            limits.n_ctx
        )));
    }
    let requested = fields.n_predict.or(fields.max_tokens);
    let max_tokens = max_tokens(requested, default_n_predict, prompt.len(), limits.n_ctx)?;

    let defaults = InferenceParameters::default();
    let temperature = fields.temperature.unwrap_or(defaults.temperature);
    if !temperature.is_finite() {
        return Err(ApiError::bad_request("temperature must be a number"));
    }
    let top_k = match fields.top_k {
        None => defaults.top_k,
        Some(k) if k <= 0 => 0,
        Some(k) => k as usize,
    };
    let top_p = fields.top_p.unwrap_or(defaults.top_p);
    if !(top_p.is_finite() && (0.0..=1.0).contains(&top_p)) {
        return Err(ApiError::bad_request("top_p must be between 0 and 1"));
    }
    let min_p = fields.min_p.unwrap_or(defaults.min_p);
    if !(min_p.is_finite() && (0.0..=1.0).contains(&min_p)) {
        return Err(ApiError::bad_request("min_p must be between 0 and 1"));
    }
    let repeat_penalty = fields.repeat_penalty.unwrap_or(defaults.repeat_penalty);
    if !(repeat_penalty.is_finite() && repeat_penalty > 0.0) {
        return Err(ApiError::bad_request(
            "repeat_penalty must be a positive number",
        ));
    }
    let repeat_last_n = match fields.repeat_last_n {
        None => defaults.repeat_last_n,
        Some(-1) => limits.n_ctx,
        Some(n) if n < 0 => {
            return Err(ApiError::bad_request("repeat_last_n must be -1 or more"));
        }
        Some(n) => n as usize,
    };
    let n_probs = match fields.n_probs {
        None => 0,
        Some(n) if (0..=MAX_N_PROBS as i64).contains(&n) => n as usize,
        Some(n) => {
            return Err(ApiError::bad_request(format!(
                "n_probs = {n} is out of range (0 to {MAX_N_PROBS})"
            )))
        }
    };
    let n_indent = match fields.n_indent {
        None => 0,
        Some(n) if n < 0 => return Err(ApiError::bad_request("n_indent must not be negative")),
        Some(n) => n as usize,
    };
    let preferred_slot = match fields.id_slot {
        None | Some(-1) => None,
        Some(id) if id >= 0 && (id as usize) < limits.slots => Some(id as usize),
        Some(id) => {
            return Err(ApiError::bad_request(format!(
                "id_slot = {id} does not exist: the server has {} slots (0 to {}), or -1 for any",
                limits.slots,
                limits.slots - 1
            )))
        }
    };
    let mut sampling = InferenceParameters {
        temperature,
        top_k,
        top_p,
        min_p,
        repeat_penalty,
        repeat_last_n,
        logprobs: n_probs,
        ignore_end_of_generation: fields.ignore_eos,
        ..InferenceParameters::default()
    };
    if let Some(seed) = fields.seed.filter(|&s| s >= 0) {
        sampling.seed = Some(seed as u64);
    }
    Ok(GenerationJob {
        prompt,
        max_tokens,
        sampling,
        rules: TextRules {
            stop: fields
                .stop
                .clone()
                .map(StopField::into_vec)
                .unwrap_or_default(),
            n_indent,
        },
        editor: None,
        // Checked, then not applied: llama-server accepts `t_max_prompt_ms` and ignores it (a
        // TODO there), and llama.vim sends 500 ms expecting whole prompts evaluated. Applied, it
        // emptied every fimbench answer (its files' prompts take 1-3 s): EM 0.000 against 0.325.
        max_prompt_time: millis("t_max_prompt_ms", fields.t_max_prompt_ms)?.and(None),
        max_predict_time: millis("t_max_predict_ms", fields.t_max_predict_ms)?,
        preferred_slot,
        reuse_cache: fields.cache_prompt.unwrap_or(true),
    })
}

/// The job of `POST /completion`.
pub(crate) fn completion_job(
    model: &Model,
    request: &CompletionRequest,
    limits: Limits,
) -> Result<GenerationJob, ApiError> {
    let prompt = prompt_tokens(model.tokenizer(), &request.prompt)?;
    make_job(prompt, &request.fields, -1, limits)
}

/// The job of `POST /infill`. In the `lmrs` layout it is greedy unless the request sends a
/// `temperature` (llama.vim's `samplers` leave temperature out, and code completion wants the
/// model's best guess), and `t_max_predict_ms` bounds the whole generation from its first token.
pub(crate) fn infill_job(
    model: &Model,
    request: &InfillRequest,
    limits: Limits,
) -> Result<GenerationJob, ApiError> {
    let requested = request
        .fields
        .n_predict
        .or(request.fields.max_tokens)
        .unwrap_or(-1);
    let n_predict = usize::try_from(requested).unwrap_or(0);
    let input = InfillInput {
        prefix: &request.input_prefix,
        suffix: &request.input_suffix,
        prompt: &request.prompt,
        extra: &request.input_extra,
        n_predict,
        n_ctx: limits.n_ctx,
    };
    match limits.infill_layout {
        InfillLayout::LlamaCpp => {
            let prompt = build_infill_prompt(model.tokenizer(), &input)
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
            make_job(prompt, &request.fields, -1, limits)
        }
        InfillLayout::Lmrs => {
            let prompt = build_editor_prompt(model.tokenizer(), &input, &limits.editor_budgets)
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
            let mut fields = request.fields.clone();
            fields.temperature = Some(fields.temperature.unwrap_or(0.0));
            let time_budget =
                millis("t_max_predict_ms", fields.t_max_predict_ms)?.unwrap_or(EDITOR_TIME_BUDGET);
            fields.t_max_predict_ms = None;
            let mut job = make_job(prompt.tokens, &fields, -1, limits)?;
            job.editor = Some(EditorRules {
                stop: prompt.stop,
                heal: prompt.heal,
                time_budget,
            });
            Ok(job)
        }
    }
}

/// The jobs of `POST /v1/completions`, one per choice.
pub(crate) fn openai_jobs(
    model: &Model,
    request: &OpenAiCompletionRequest,
    limits: Limits,
) -> Result<Vec<GenerationJob>, ApiError> {
    let n = match request.n {
        None => 1,
        Some(n) if (1..=MAX_CHOICES as i64).contains(&n) => n as usize,
        Some(n) => {
            return Err(ApiError::bad_request(format!(
                "n = {n} is out of range (1 to {MAX_CHOICES})"
            )))
        }
    };
    let tokenizer = model.tokenizer();
    let suffix = request.suffix.as_deref().filter(|s| !s.is_empty());
    let prompt = match (openai_prompt_text(&request.prompt)?, suffix) {
        (Some(text), Some(suffix)) => {
            let requested = request
                .fields
                .max_tokens
                .or(request.fields.n_predict)
                .unwrap_or(16);
            let input = InfillInput {
                prefix: text,
                suffix,
                n_predict: usize::try_from(requested).unwrap_or(0),
                n_ctx: limits.n_ctx,
                ..InfillInput::default()
            };
            build_infill_prompt(tokenizer, &input)
                .map_err(|e| ApiError::bad_request(e.to_string()))?
        }
        (None, Some(_)) => {
            return Err(ApiError::bad_request(
                "`suffix` needs the prompt as text, not token ids",
            ))
        }
        (_, None) => prompt_tokens(tokenizer, &request.prompt)?,
    };
    let mut fields = request.fields.clone();
    // OpenAI's name wins over llama.cpp's when both are there; its default is 16 tokens.
    fields.n_predict = fields.max_tokens.or(fields.n_predict);
    let job = make_job(prompt, &fields, 16, limits)?;
    Ok((0..n)
        .map(|i| {
            let mut job = job.clone();
            // Different choices draw different samples.
            if let Some(seed) = job.sampling.seed.as_mut() {
                *seed = seed.wrapping_add(i as u64);
            }
            job
        })
        .collect())
}

/// llama.cpp's `timings` object.
pub(crate) fn timings_json(outcome: &Outcome) -> Value {
    let per = |ms: f64, n: usize| if n > 0 { ms / n as f64 } else { 0.0 };
    let rate = |ms: f64, n: usize| if ms > 0.0 { n as f64 * 1e3 / ms } else { 0.0 };
    json!({
        "cache_n": outcome.prompt_cached,
        "prompt_n": outcome.prompt_evaluated,
        "prompt_ms": outcome.prompt_ms,
        "prompt_per_token_ms": per(outcome.prompt_ms, outcome.prompt_evaluated),
        "prompt_per_second": rate(outcome.prompt_ms, outcome.prompt_evaluated),
        "predicted_n": outcome.predicted,
        "predicted_ms": outcome.predicted_ms,
        "predicted_per_token_ms": per(outcome.predicted_ms, outcome.predicted),
        "predicted_per_second": rate(outcome.predicted_ms, outcome.predicted),
    })
}

/// llama.cpp's `completion_probabilities` entries.
pub(crate) fn probabilities_json(tokenizer: &Tokenizer, tokens: &[TokenProbs]) -> Value {
    let entry = |id: TokenId, logprob: Option<f32>| {
        let bytes = tokenizer.token_bytes(id);
        json!({
            "id": id,
            "token": String::from_utf8_lossy(bytes),
            "bytes": bytes,
            "logprob": logprob,
        })
    };
    Value::Array(
        tokens
            .iter()
            .map(|t| {
                let own = t.top.iter().find(|(id, _)| *id == t.id).map(|&(_, lp)| lp);
                let mut value = entry(t.id, own);
                value["top_logprobs"] =
                    Value::Array(t.top.iter().map(|&(id, lp)| entry(id, Some(lp))).collect());
                value
            })
            .collect(),
    )
}

/// The final response of `/completion` and `/infill` (the whole content, or "" at the end of a
/// stream, whose text went out before).
pub(crate) fn final_json(outcome: &Outcome, model_alias: &str, content: &str) -> Value {
    json!({
        "index": 0,
        "content": content,
        "tokens": outcome.tokens,
        "id_slot": outcome.slot,
        "stop": true,
        "model": model_alias,
        "tokens_predicted": outcome.predicted,
        "tokens_evaluated": outcome.prompt_tokens,
        "tokens_cached": outcome.tokens_cached,
        "has_new_line": outcome.content.contains('\n'),
        "truncated": false,
        "stop_type": outcome.stop_type.name(),
        "stopped_eos": outcome.stop_type == StopType::Eos,
        "stopped_word": outcome.stop_type == StopType::Word,
        "stopped_limit": outcome.stop_type == StopType::Limit,
        "stopping_word": outcome.stopping_word,
        "timings": timings_json(outcome),
    })
}

/// OpenAI's `finish_reason`.
pub(crate) fn finish_reason(stop_type: StopType) -> &'static str {
    match stop_type {
        StopType::Limit => "length",
        StopType::Eos | StopType::Word => "stop",
    }
}
