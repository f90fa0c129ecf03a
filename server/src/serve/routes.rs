//! The HTTP layer of `lmrs serve`: the shared state, the router, the API-key and metrics
//! middleware, the JSON body extractor (its errors in the server's JSON shape), and one handler
//! per endpoint. Handlers tokenize on the blocking pool, hand the job to the slot pool and wait
//! for its outcome, or stream its text as server-sent events.

use std::convert::Infallible;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::{self, BoxStream, StreamExt};
use lmrs::{Model, TokenId};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use super::api::{self, Limits};
use super::error::{from_rejection, ApiError};
use super::infill::{EditorBudgets, InfillLayout};
use super::metrics::Metrics;
use super::response_fields::select_response_fields;
use super::slots::{JobHandle, Outcome, SlotEvent, SlotPool};
use super::stops::StopType;
use crate::lsp::cache::{CompletionCache, Hit};

/// What exists once the model is loaded.
pub(crate) struct Ready {
    /// The model.
    pub(crate) model: Arc<Model>,
    /// Its slots.
    pub(crate) pool: Arc<SlotPool>,
    /// Each slot's context size.
    pub(crate) n_ctx: usize,
    /// The prompt layout of `/infill`.
    pub(crate) infill_layout: InfillLayout,
    /// The budgets of its `lmrs` layout.
    pub(crate) editor_budgets: EditorBudgets,
    /// Recent `/infill` answers by the text around the cursor (`None`: `--infill-cache 0`).
    pub(crate) infill_cache: Option<Mutex<CompletionCache>>,
}

/// Everything the handlers share.
pub(crate) struct AppState {
    /// Set once the model is loaded; until then most endpoints answer `503`.
    pub(crate) ready: OnceLock<Ready>,
    /// The key every endpoint but `/health` requires, if any.
    pub(crate) api_key: Option<String>,
    /// The counters.
    pub(crate) metrics: Arc<Metrics>,
    /// The model file.
    pub(crate) model_path: PathBuf,
    /// The model's name in responses (`model`, `/v1/models`).
    pub(crate) model_alias: String,
}

impl AppState {
    fn ready(&self) -> Result<&Ready, ApiError> {
        self.ready.get().ok_or_else(ApiError::loading)
    }

    fn limits(ready: &Ready) -> Limits {
        Limits {
            n_ctx: ready.n_ctx,
            slots: ready.pool.slot_count(),
            infill_layout: ready.infill_layout,
            editor_budgets: ready.editor_budgets,
        }
    }
}

type Shared = Arc<AppState>;

/// A JSON body whose errors (too large, unreadable, not JSON, wrong fields) are [`ApiError`]s.
pub(crate) struct ApiJson<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| from_rejection(rejection.status(), rejection.body_text()))?;
        serde_json::from_slice(&bytes)
            .map(ApiJson)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
    }
}

/// The router with every endpoint and the middleware; `body_limit` bytes per request body.
pub(crate) fn router(state: Shared, body_limit: usize, cors: Option<HeaderValue>) -> Router {
    let mut app = Router::new()
        .route("/", get(playground))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/props", get(props))
        .route("/completion", post(completion))
        .route("/completions", post(completion))
        .route("/infill", post(infill))
        .route("/v1/completions", post(openai_completions))
        .route("/v1/models", get(openai_models))
        .route("/models", get(openai_models))
        .route("/tokenize", post(tokenize))
        .route("/detokenize", post(detokenize))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            require_api_key,
        ));
    if let Some(origin) = cors {
        app = app.layer(
            tower_http::cors::CorsLayer::new()
                .allow_origin(origin)
                .allow_methods([Method::GET, Method::POST])
                .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION]),
        );
    }
    app.layer(middleware::from_fn_with_state(
        Arc::clone(&state),
        count_request,
    ))
    .with_state(state)
}

/// The metrics label of a path: one of our routes, or `other`.
fn endpoint_label(path: &str) -> &'static str {
    const ROUTES: [&str; 12] = [
        "/health",
        "/metrics",
        "/props",
        "/completion",
        "/completions",
        "/infill",
        "/v1/completions",
        "/v1/models",
        "/models",
        "/tokenize",
        "/detokenize",
        "/",
    ];
    ROUTES.into_iter().find(|&r| r == path).unwrap_or("other")
}

/// Counts each request by endpoint and status, with its time to the response head; a request
/// whose client went away before its answer counts as status 499 (nginx's "client closed").
async fn count_request(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let mut pending = PendingRequest {
        state,
        endpoint: endpoint_label(request.uri().path()),
        started: Instant::now(),
        answered: false,
    };
    let response = next.run(request).await;
    pending.answered = true;
    let elapsed = pending.started.elapsed();
    pending
        .state
        .metrics
        .record_request(pending.endpoint, response.status().as_u16(), elapsed);
    tracing::debug!(
        endpoint = pending.endpoint,
        status = response.status().as_u16(),
        ms = elapsed.as_secs_f64() * 1e3,
        "request"
    );
    response
}

/// A request being answered; dropped unanswered (the client went away), it is counted as 499.
struct PendingRequest {
    state: Shared,
    endpoint: &'static str,
    started: Instant,
    answered: bool,
}

impl Drop for PendingRequest {
    fn drop(&mut self) {
        if !self.answered {
            self.state
                .metrics
                .record_request(self.endpoint, 499, self.started.elapsed());
        }
    }
}

/// With `--api-key`, every endpoint but `/health` needs `Authorization: Bearer KEY`.
async fn require_api_key(State(state): State<Shared>, request: Request, next: Next) -> Response {
    if let Some(key) = &state.api_key {
        // The health check and the playground page (static, no data; it asks for the key) are open.
        if !matches!(request.uri().path(), "/health" | "/") {
            let given = request
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            if !given.is_some_and(|given| constant_time_eq(given.as_bytes(), key.as_bytes())) {
                return ApiError::unauthorized(
                    "missing or wrong API key: send the header `Authorization: Bearer KEY` with the server's --api-key",
                )
                .into_response();
            }
        }
    }
    next.run(request).await
}

/// Compares without stopping at the first difference, so timing tells nothing of the key.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn not_found(request: Request) -> ApiError {
    ApiError::not_found(format!(
        "no endpoint {} {}: see the README's list (POST /infill, /completion, /v1/completions, /tokenize, /detokenize; GET /health, /metrics, /props, /v1/models)",
        request.method(),
        request.uri().path()
    ))
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::method_not_allowed(format!(
        "{} does not answer {}",
        request.uri().path(),
        request.method()
    ))
}

/// `GET /`: the playground, one static page (see `playground.html`).
async fn playground() -> axum::response::Html<&'static str> {
    axum::response::Html(include_str!("playground.html"))
}

/// `GET /health`: `200 {"status":"ok"}` once the model is loaded, `503 {"status":"loading"}`
/// before.
async fn health(State(state): State<Shared>) -> Response {
    match state.ready.get() {
        Some(_) => Json(json!({"status": "ok"})).into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "loading", "error": {"code": 503, "message": "the model is still loading", "type": "unavailable_error"}})),
        )
            .into_response(),
    }
}

/// `GET /metrics`: Prometheus text.
async fn metrics(State(state): State<Shared>) -> Response {
    let gauges = state
        .ready
        .get()
        .map(|ready| ready.pool.gauges())
        .unwrap_or_default();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(gauges),
    )
        .into_response()
}

/// `GET /props`: the model, the context, the slots and the model's FIM tokens.
async fn props(State(state): State<Shared>) -> Result<Json<Value>, ApiError> {
    let ready = state.ready()?;
    let tokenizer = ready.model.tokenizer();
    let fim = tokenizer.fim();
    let token = |id: Option<TokenId>| match id {
        Some(id) => json!({"id": id, "text": tokenizer.token_text(id)}),
        None => Value::Null,
    };
    let info = ready.model.info();
    Ok(Json(json!({
        "model_path": state.model_path.display().to_string(),
        "model_alias": state.model_alias,
        "n_ctx": ready.n_ctx,
        "total_slots": ready.pool.slot_count(),
        "default_generation_settings": {"n_ctx": ready.n_ctx},
        "build_info": format!("lmrs {}", env!("CARGO_PKG_VERSION")),
        "architecture": info.architecture,
        "n_ctx_train": info.hyperparameters.n_ctx_train,
        "n_vocab": tokenizer.vocab_size(),
        "add_bos_token": tokenizer.add_bos(),
        "bos_token": token(tokenizer.bos()),
        "eos_token": token(tokenizer.eos()),
        "fim_tokens": {
            "prefix": token(fim.prefix),
            "suffix": token(fim.suffix),
            "middle": token(fim.middle),
            "pad": token(fim.pad),
            "repo_name": token(fim.repo_name),
            "file_separator": token(fim.file_separator),
        },
    })))
}

/// Runs `make` (tokenizing, prompt building) on the blocking pool: long prompts never stall the
/// async workers.
async fn on_blocking_pool<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::internal(format!("request preparation failed: {e}")))?
}

/// Waits for a job's outcome (the text arrives with it).
async fn outcome(mut handle: JobHandle) -> Result<Outcome, ApiError> {
    while let Some(event) = handle.events.recv().await {
        if let SlotEvent::Done(result) = event {
            return result;
        }
    }
    Err(ApiError::internal("the generation ended without a result"))
}

/// `POST /completion`.
async fn completion(
    State(state): State<Shared>,
    ApiJson(mut request): ApiJson<api::CompletionRequest>,
) -> Result<Response, ApiError> {
    let ready = state.ready()?;
    let model = Arc::clone(&ready.model);
    let limits = AppState::limits(ready);
    let stream = request.fields.stream;
    let fields = std::mem::take(&mut request.fields.response_fields);
    let job = on_blocking_pool(move || api::completion_job(&model, &request, limits)).await?;
    let handle = ready.pool.submit(job)?;
    llama_response(&state, handle, stream, &fields).await
}

/// `POST /infill`. A deterministic request (greedy, whole answer at once, no probabilities) is
/// first looked up in the suggestion cache, as the language server does: the same context again,
/// or the user typed the first characters of an earlier answer on the cursor line (llama.vim sends
/// a request per keystroke), is answered at once with what is left, with no model call.
async fn infill(
    State(state): State<Shared>,
    ApiJson(mut request): ApiJson<api::InfillRequest>,
) -> Result<Response, ApiError> {
    let ready = state.ready()?;
    let model = Arc::clone(&ready.model);
    let limits = AppState::limits(ready);
    let stream = request.fields.stream;
    // Taken out before the cache key is made: which fields are sent does not change the answer.
    let fields = std::mem::take(&mut request.fields.response_fields);
    let cache = ready
        .infill_cache
        .as_ref()
        .filter(|_| infill_is_cacheable(&request, limits.infill_layout))
        .map(|cache| (cache, InfillCacheKey::of(&request)));
    if let Some((cache, key)) = &cache {
        let hit = lock_cache(cache).lookup(&key.before, &key.after);
        if let Some(hit) = hit {
            state.metrics.record_infill_cache_hit();
            let answer = cached_infill_json(&hit, &state.model_alias);
            return Ok(Json(select_response_fields(answer, &fields)).into_response());
        }
    }
    let job = on_blocking_pool(move || api::infill_job(&model, &request, limits)).await?;
    let handle = ready.pool.submit(job)?;
    let Some((cache, key)) = cache else {
        return llama_response(&state, handle, stream, &fields).await;
    };
    let outcome = outcome(handle).await?;
    lock_cache(cache).insert(&key.before, &key.after, &outcome.content);
    let answer = api::final_json(&outcome, &state.model_alias, &outcome.content);
    Ok(Json(select_response_fields(answer, &fields)).into_response())
}

/// Whether an `/infill` answer may come from (and go to) the suggestion cache: it is what the
/// model would say again (greedy), whole (not streamed), without per-token data, and the client
/// did not turn caching off.
fn infill_is_cacheable(request: &api::InfillRequest, layout: InfillLayout) -> bool {
    let fields = &request.fields;
    let greedy = match fields.temperature {
        Some(t) => t <= 0.0,
        // The `lmrs` layout is greedy by default (see `api::infill_job`).
        None => layout == InfillLayout::Lmrs,
    };
    greedy
        && !fields.stream
        && fields.n_probs.unwrap_or(0) == 0
        && fields.cache_prompt != Some(false)
}

/// The suggestion cache's view of an `/infill` request: the text before the cursor, and the text
/// after it behind a digest of everything else that shapes the answer (other files, budgets,
/// sampling, stop rules), so that only a request that would be answered the same way matches.
struct InfillCacheKey {
    before: String,
    after: String,
}

impl InfillCacheKey {
    fn of(request: &api::InfillRequest) -> Self {
        let mut fields = request.fields.clone();
        // Where and how the answer is made or sent does not change it.
        fields.id_slot = None;
        fields.t_max_prompt_ms = None;
        fields.cache_prompt = None;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        format!("{fields:?}").hash(&mut hasher);
        for chunk in &request.input_extra {
            chunk.filename.hash(&mut hasher);
            chunk.text.hash(&mut hasher);
        }
        Self {
            before: format!("{}{}", request.input_prefix, request.prompt),
            after: format!("{:016x}\n{}", hasher.finish(), request.input_suffix),
        }
    }
}

fn lock_cache(cache: &Mutex<CompletionCache>) -> std::sync::MutexGuard<'_, CompletionCache> {
    // Nothing panics while the lock is held; recover anyway.
    cache
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The answer of an `/infill` found in the cache: llama.cpp's fields, no slot, nothing evaluated.
fn cached_infill_json(hit: &Hit, model_alias: &str) -> Value {
    let content = hit.text();
    let outcome = Outcome {
        slot: 0,
        content: content.to_owned(),
        tokens: Vec::new(),
        stop_type: StopType::Eos,
        stopping_word: String::new(),
        prompt_tokens: 0,
        prompt_cached: 0,
        prompt_evaluated: 0,
        prompt_ms: 0.0,
        predicted: 0,
        predicted_ms: 0.0,
        tokens_cached: 0,
    };
    let mut answer = api::final_json(&outcome, model_alias, content);
    answer["id_slot"] = json!(-1);
    answer["cache_hit"] = json!(true);
    answer
}

/// llama.cpp's answer: one JSON object (only `response_fields` when some are named), or a stream
/// of `data: {...}` events whose last one has `"stop": true` and the figures.
async fn llama_response(
    state: &Shared,
    handle: JobHandle,
    stream: bool,
    response_fields: &[String],
) -> Result<Response, ApiError> {
    let alias = state.model_alias.clone();
    let tokenizer_model = Arc::clone(&state.ready()?.model);
    if !stream {
        let outcome = outcome(handle).await?;
        let answer = api::final_json(&outcome, &alias, &outcome.content);
        return Ok(Json(select_response_fields(answer, response_fields)).into_response());
    }
    let events = stream::unfold(Some(handle), move |handle| {
        let alias = alias.clone();
        let model = Arc::clone(&tokenizer_model);
        async move {
            let mut handle = handle?;
            let event = match handle.events.recv().await? {
                SlotEvent::Text { text, tokens } => {
                    let mut chunk = json!({
                        "index": 0,
                        "content": text,
                        "tokens": tokens.iter().map(|t| t.id).collect::<Vec<_>>(),
                        "stop": false,
                    });
                    if tokens.iter().any(|t| !t.top.is_empty()) {
                        chunk["completion_probabilities"] =
                            api::probabilities_json(model.tokenizer(), &tokens);
                    }
                    return Some((data_event(&chunk), Some(handle)));
                }
                SlotEvent::Done(Ok(outcome)) => data_event(&api::final_json(&outcome, &alias, "")),
                SlotEvent::Done(Err(error)) => data_event(&error_json(&error)),
            };
            // The last event: the handle is dropped after it goes out.
            Some((event, None))
        }
    });
    Ok(sse(events.boxed()))
}

/// An SSE `data:` event of `value`.
fn data_event(value: &Value) -> Result<Event, Infallible> {
    Ok(Event::default().data(value.to_string()))
}

/// The error body, for errors inside a stream.
fn error_json(error: &ApiError) -> Value {
    json!({"error": {"code": error.status.as_u16(), "message": error.message, "type": "server_error"}})
}

fn sse(events: BoxStream<'static, Result<Event, Infallible>>) -> Response {
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// `POST /v1/completions`.
async fn openai_completions(
    State(state): State<Shared>,
    ApiJson(request): ApiJson<api::OpenAiCompletionRequest>,
) -> Result<Response, ApiError> {
    let ready = state.ready()?;
    let model = Arc::clone(&ready.model);
    let limits = AppState::limits(ready);
    let stream = request.fields.stream;
    let jobs = on_blocking_pool(move || api::openai_jobs(&model, &request, limits)).await?;
    // Every choice is submitted before any is awaited, so they run on free slots side by side;
    // if one is refused the others are dropped, which cancels them.
    let handles = jobs
        .into_iter()
        .map(|job| ready.pool.submit(job))
        .collect::<Result<Vec<_>, _>>()?;
    let id = format!("cmpl-{}", unix_time_nanos());
    let created = unix_time_nanos() / 1_000_000_000;
    let alias = state.model_alias.clone();
    if !stream {
        let mut choices = Vec::new();
        let (mut prompt_tokens, mut completion_tokens) = (0, 0);
        for (index, handle) in handles.into_iter().enumerate() {
            let outcome = outcome(handle).await?;
            prompt_tokens = outcome.prompt_tokens;
            completion_tokens += outcome.predicted;
            choices.push(json!({
                "text": outcome.content,
                "index": index,
                "logprobs": null,
                "finish_reason": api::finish_reason(outcome.stop_type),
            }));
        }
        return Ok(Json(json!({
            "id": id,
            "object": "text_completion",
            "created": created,
            "model": alias,
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }))
        .into_response());
    }
    let chunk = move |index: usize, text: &str, finish: Option<&str>| {
        json!({
            "id": id,
            "object": "text_completion",
            "created": created,
            "model": alias,
            "choices": [{"text": text, "index": index, "logprobs": null, "finish_reason": finish}],
        })
    };
    let chunk = Arc::new(chunk);
    let choice_streams = handles.into_iter().enumerate().map(|(index, handle)| {
        let chunk = Arc::clone(&chunk);
        stream::unfold(Some(handle), move |handle| {
            let chunk = Arc::clone(&chunk);
            async move {
                let mut handle = handle?;
                let event = match handle.events.recv().await? {
                    SlotEvent::Text { text, .. } => {
                        return Some((data_event(&chunk(index, &text, None)), Some(handle)))
                    }
                    SlotEvent::Done(Ok(outcome)) => data_event(&chunk(
                        index,
                        "",
                        Some(api::finish_reason(outcome.stop_type)),
                    )),
                    SlotEvent::Done(Err(error)) => data_event(&error_json(&error)),
                };
                Some((event, None))
            }
        })
        .boxed()
    });
    let done = stream::once(async { Ok(Event::default().data("[DONE]")) });
    Ok(sse(stream::select_all(choice_streams).chain(done).boxed()))
}

fn unix_time_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// `GET /v1/models`.
async fn openai_models(State(state): State<Shared>) -> Result<Json<Value>, ApiError> {
    let ready = state.ready()?;
    let info = ready.model.info();
    Ok(Json(json!({
        "object": "list",
        "data": [{
            "id": state.model_alias,
            "object": "model",
            "created": unix_time_nanos() / 1_000_000_000,
            "owned_by": "lmrs",
            "meta": {
                "architecture": info.architecture,
                "n_ctx": ready.n_ctx,
                "n_ctx_train": info.hyperparameters.n_ctx_train,
                "n_vocab": ready.model.tokenizer().vocab_size(),
            },
        }],
    })))
}

/// `POST /tokenize`.
async fn tokenize(
    State(state): State<Shared>,
    ApiJson(request): ApiJson<api::TokenizeRequest>,
) -> Result<Json<Value>, ApiError> {
    let model = Arc::clone(&state.ready()?.model);
    on_blocking_pool(move || {
        let tokenizer = model.tokenizer();
        let tokens = if request.add_special {
            tokenizer.encode_prompt(&request.content, true)
        } else {
            tokenizer.encode(&request.content, false)
        };
        let tokens: Vec<Value> = if request.with_pieces {
            tokens
                .iter()
                .map(|&id| {
                    let bytes = tokenizer.token_bytes(id);
                    match std::str::from_utf8(bytes) {
                        Ok(piece) => json!({"id": id, "piece": piece}),
                        Err(_) => json!({"id": id, "piece": bytes}),
                    }
                })
                .collect()
        } else {
            tokens.iter().map(|&id| json!(id)).collect()
        };
        Ok(Json(json!({ "tokens": tokens })))
    })
    .await
}

/// `POST /detokenize`.
async fn detokenize(
    State(state): State<Shared>,
    ApiJson(request): ApiJson<api::DetokenizeRequest>,
) -> Result<Json<Value>, ApiError> {
    let model = Arc::clone(&state.ready()?.model);
    on_blocking_pool(move || {
        let tokens = api::token_ids(model.tokenizer(), &request.tokens)?;
        Ok(Json(
            json!({ "content": model.tokenizer().decode(&tokens) }),
        ))
    })
    .await
}
