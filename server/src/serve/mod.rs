//! `lmrs serve`: the engine behind an HTTP API that llama.cpp's and OpenAI's clients already speak
//! (llama.vim, llama.vscode, Continue, anything that calls `/v1/completions`).
//!
//! - `POST /infill` (llama.cpp: `input_prefix`, `input_suffix`, `input_extra`, `prompt`,
//!   `n_predict`, `n_indent`, `t_max_prompt_ms`, `t_max_predict_ms`, sampling fields) and
//!   `POST /completion` (a raw prompt, text with special tokens or token ids), both answering
//!   llama.cpp's fields (`content`, `tokens_cached`, `stop_type`, `timings`, ...), streamed as
//!   server-sent events with `"stream": true`. `/infill` builds the language server's prompt by
//!   default (`--infill-prompt lmrs`: its budgets, line-anchored order, token healing and stop
//!   rules, greedy), or llama.cpp's (`--infill-prompt llama.cpp`); its greedy answers are kept in
//!   the language server's suggestion cache, so a request per keystroke that types through an
//!   earlier answer is answered with no model call;
//! - `POST /v1/completions` (OpenAI; fill-in-the-middle when `suffix` is given; `n` choices; SSE
//!   ending with `data: [DONE]`), `GET /v1/models`;
//! - `GET /health`, `GET /metrics` (Prometheus), `GET /props` (model, context, FIM tokens),
//!   `POST /tokenize`, `POST /detokenize`;
//! - `GET /`: the playground, one static page (`playground.html`, compiled in): a code editor
//!   with ghost text from `/infill` as you type (Tab accepts, Esc dismisses), each suggestion's
//!   timings and cache reuse, and the model's `/props`.
//!
//! Layers, each using only those before it: [`error`] (the JSON error shape) → [`stops`] (stop
//! strings, `n_indent`) → [`infill`] (the FIM prompt) → [`metrics`] → [`slots`] (sessions on their
//! threads, the queue, cancellation) → [`api`] (request fields → jobs, response bodies) →
//! [`response_fields`] (llama.cpp's selection of answer fields) → [`routes`] (axum) → this file
//! (options, binding, loading, shutdown).
//!
//! Safe by default: it binds loopback; another address needs `--api-key`, which every endpoint
//! but `/health` and the static page `/` then requires as `Authorization: Bearer KEY`; bodies
//! over `--max-body-bytes` are refused with `413`; no CORS header unless `--cors ORIGIN`; prompt
//! and code text is never logged (only sizes and timings, at debug level).

mod api;
mod error;
mod infill;
mod metrics;
mod response_fields;
mod routes;
mod slots;
mod stops;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::{bail, Context as _};
use axum::http::HeaderValue;
use lmrs::{Model, ModelParams, SessionParams};
use tracing::{error, info};

use self::infill::{EditorBudgets, InfillLayout};
use self::metrics::Metrics;
use self::routes::{AppState, Ready};
use self::slots::SlotPool;
use crate::completion::model::PROMPT_BATCH_TOKENS;
use crate::lsp::cache::CompletionCache;

/// Everything `lmrs serve` is told on its command line.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// The model file.
    pub model: PathBuf,
    /// Address to bind (loopback by default).
    pub host: String,
    /// Port (0 = any free one; the address is printed).
    pub port: u16,
    /// Sessions (slots) of the model, each with its own KV cache.
    pub slots: usize,
    /// Requests that may wait for a slot before `503`.
    pub queue: usize,
    /// The key clients must send as `Authorization: Bearer KEY`.
    pub api_key: Option<String>,
    /// Engine threads per slot (`None`: the machine's default divided among the slots).
    pub threads: Option<usize>,
    /// Context size of each slot, in tokens.
    pub ctx_size: usize,
    /// Shortest cached run moved instead of evaluated again (llama.cpp's `--cache-reuse`; 0 = off).
    pub cache_reuse: usize,
    /// Largest request body in bytes.
    pub max_body_bytes: usize,
    /// The origin allowed by CORS, if any.
    pub cors: Option<String>,
    /// The model's name in responses (default: the file name).
    pub alias: Option<String>,
    /// `/infill`'s prompt layout: the language server's (`true`, the default) or llama.cpp's.
    pub infill_lmrs_layout: bool,
    /// Tokens before the cursor in the `lmrs` layout.
    pub prefix_tokens: usize,
    /// Tokens after the cursor in the `lmrs` layout.
    pub suffix_tokens: usize,
    /// Tokens of `input_extra` chunks in the `lmrs` layout.
    pub context_tokens: usize,
    /// `/infill` answers kept for repeated and typed-through requests (0: no cache).
    pub infill_cache: usize,
}

/// Characters typed through a cached `/infill` answer before the model is asked again (the
/// language server's default).
const INFILL_CACHE_MAX_TYPED: usize = 32;

/// Most slots a server may have.
const MAX_SLOTS: usize = 256;

/// Whether every address `host` names is a loopback address.
fn is_loopback(host: &str, port: u16) -> anyhow::Result<bool> {
    let addresses: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve --host {host}"))?
        .collect();
    Ok(!addresses.is_empty() && addresses.iter().all(|a| a.ip().is_loopback()))
}

/// Checks the options before anything is bound or loaded.
fn check_options(options: &ServeOptions) -> anyhow::Result<()> {
    if options.api_key.as_deref() == Some("") {
        bail!("--api-key is empty: give a key, or leave the flag out on loopback");
    }
    if options.api_key.is_none() && !is_loopback(&options.host, options.port)? {
        bail!(
            "refusing to listen on {} without --api-key: anyone who can reach that address could use the model; \
             add --api-key KEY (clients then send `Authorization: Bearer KEY`) or bind 127.0.0.1",
            options.host
        );
    }
    if options.slots == 0 || options.slots > MAX_SLOTS {
        bail!(
            "--slots {} is out of range (1 to {MAX_SLOTS})",
            options.slots
        );
    }
    if options.ctx_size < 16 {
        bail!(
            "--ctx-size {} is too small (16 tokens at least)",
            options.ctx_size
        );
    }
    if options.threads == Some(0) {
        bail!("--threads must be at least 1");
    }
    match std::fs::metadata(&options.model) {
        Ok(m) if m.is_dir() => bail!(
            "model path is a directory: {} (expected a .gguf file)",
            options.model.display()
        ),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("model file not found: {}", options.model.display())
        }
        Err(e) => {
            return Err(e).with_context(|| format!("cannot read {}", options.model.display()))
        }
    }
    Ok(())
}

/// Loads the model and its sessions (on a blocking thread) and starts the slots.
fn load(options: &ServeOptions, metrics: Arc<Metrics>) -> anyhow::Result<Ready> {
    let threads = options
        .threads
        .unwrap_or_else(|| (lmrs::default_thread_count() / options.slots).max(1));
    let model = Model::load(
        &options.model,
        ModelParams {
            n_threads: threads,
            ..ModelParams::default()
        },
    )
    .with_context(|| format!("cannot load model {}", options.model.display()))?;
    let model = Arc::new(model);
    // As the language server: no more than the model was trained on (but 256 at least).
    let n_ctx = options
        .ctx_size
        .min(model.info().hyperparameters.n_ctx_train.max(256));
    let session_params = SessionParams {
        n_ctx,
        n_batch: PROMPT_BATCH_TOKENS.min(n_ctx),
        n_threads: threads,
        cache_reuse_min_tokens: options.cache_reuse,
        cache_reuse_fence: model.tokenizer().fim().suffix,
    };
    let sessions = slots::create_sessions(&model, &session_params, options.slots)
        .with_context(|| format!("cannot create {} sessions of the model", options.slots))?;
    let pool = SlotPool::start(sessions, session_params, options.queue, metrics)
        .context("cannot start the slot threads")?;
    info!(
        slots = options.slots,
        threads_per_slot = threads,
        n_ctx,
        "model loaded"
    );
    let infill_layout = if options.infill_lmrs_layout {
        InfillLayout::Lmrs
    } else {
        InfillLayout::LlamaCpp
    };
    let editor_budgets = EditorBudgets {
        prefix_tokens: options.prefix_tokens,
        suffix_tokens: options.suffix_tokens,
        context_tokens: options.context_tokens,
    };
    let infill_cache = (options.infill_cache > 0).then(|| {
        Mutex::new(CompletionCache::new(
            options.infill_cache,
            INFILL_CACHE_MAX_TYPED,
        ))
    });
    Ok(Ready {
        model,
        pool,
        n_ctx,
        infill_layout,
        editor_budgets,
        infill_cache,
    })
}

/// Runs the server until Ctrl-C / SIGTERM, or until loading the model fails (that error).
pub async fn serve(options: ServeOptions) -> anyhow::Result<()> {
    check_options(&options)?;
    let cors = options
        .cors
        .as_deref()
        .map(|origin| {
            HeaderValue::from_str(origin)
                .with_context(|| format!("--cors {origin:?} is not a valid origin"))
        })
        .transpose()?;
    let alias = options.alias.clone().unwrap_or_else(|| {
        options
            .model
            .file_name()
            .map_or_else(|| "model".into(), |n| n.to_string_lossy().into_owned())
    });
    let metrics = Arc::new(Metrics::default());
    let state = Arc::new(AppState {
        ready: OnceLock::new(),
        api_key: options.api_key.clone(),
        metrics: Arc::clone(&metrics),
        model_path: options.model.clone(),
        model_alias: alias,
    });
    let app = routes::router(Arc::clone(&state), options.max_body_bytes, cors);

    let listener = tokio::net::TcpListener::bind((options.host.as_str(), options.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", options.host, options.port))?;
    let address = listener.local_addr()?;
    // The one line a script (or a test with --port 0) reads to find the server.
    crate::outln!("lmrs serve: listening on http://{address}")?;
    info!(%address, model = %options.model.display(), "listening; loading the model");

    // Load while /health already answers "loading".
    let (failed_sender, failed) = tokio::sync::oneshot::channel::<anyhow::Error>();
    let load_state = Arc::clone(&state);
    let load_options = options.clone();
    tokio::task::spawn_blocking(move || match load(&load_options, metrics) {
        Ok(ready) => {
            let _ = load_state.ready.set(ready);
        }
        Err(e) => {
            error!(error = %crate::report::describe(e.as_ref(), ": "), "loading failed");
            let _ = failed_sender.send(e);
        }
    });

    // Serve until a signal or a failed load; in-flight requests end with the process.
    tokio::select! {
        result = axum::serve(listener, app) => result.context("the HTTP server failed"),
        _ = shutdown_signal() => {
            info!("shutting down");
            Ok(())
        }
        Ok(e) = failed => Err(e),
    }
}

/// Ctrl-C, or SIGTERM on Unix.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
