//! The `tower-lsp-server` language server: lifecycle, document sync and the completion handlers.
//!
//! Handlers never block on the model: document notifications apply their edits synchronously under
//! a short lock, and completion requests either answer from the cache at once or await a reply from
//! the [`Worker`] thread. A newer request cancels the flags of all older ones, for any document
//! (the engine stops within one token), and they answer empty; `$/cancelRequest` drops the
//! handler future, whose guard sets the flag too. Every request gets an answer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use lmrs::CancelFlag;
use ropey::Rope;
use tower_lsp_server::gen_lsp_types::*;
use tower_lsp_server::jsonrpc::Result as RpcResult;
use tower_lsp_server::{
    Client, LanguageServer, LspService, NotCancellable, OngoingProgress, Server, Unbounded,
};
use tracing::{debug, info, warn};

use super::cache::{CompletionCache, Hit, AFTER_WINDOW, BEFORE_WINDOW};
use super::documents::{ChangeOutcome, DocumentStore, Edit};
use super::position::{char_to_position, position_to_char, PositionEncoding};
use super::transport::Transport;
use super::workspace::Workspace;
use crate::completion::cross_file::ContextChunk;
use crate::completion::definitions::{definitions, Definition};
use crate::completion::model::{LoadParams, PROMPT_BATCH_TOKENS};
use crate::completion::pipeline::{Completion, CompletionInput, ProjectContext};
use crate::completion::project::{ProjectIndex, WalkParams};
use crate::completion::recent_edits::{chunk_around, RecentEdits};
use crate::completion::remote::{RemoteEvent, RemoteParams};
use crate::completion::worker::{Job, Worker};
use crate::config::{Config, DEFAULT_MODEL_FILE};
use crate::report;

/// An open document's version, definitions and text, as last read.
type OpenDocument = (i32, Vec<Definition>, Arc<str>);

/// The other open documents' definitions and texts, each with its path in the workspace folder.
type OpenDocuments = (Vec<(String, Vec<Definition>)>, Vec<(String, Arc<str>)>);

/// Chunks around recent edits in other documents offered to a prompt.
const MAX_RECENT_EDIT_CHUNKS: usize = 2;

/// Characters that typing-through may skip over.
const MAX_TYPED: usize = 64;

/// Where the model is.
#[derive(Clone, Debug, PartialEq, Eq)]
enum ModelState {
    NotLoaded,
    /// Being downloaded (`autoPull`), then loaded.
    Pulling,
    Loading,
    Ready(String),
    Failed(String),
}

struct Shared {
    docs: Mutex<DocumentStore>,
    encoding: Mutex<PositionEncoding>,
    config: Mutex<Arc<Config>>,
    model: Mutex<ModelState>,
    cache: Mutex<CompletionCache>,
    inflight: Mutex<HashMap<String, (u64, CancelFlag)>>,
    /// First line of the last retrieved snippet per document (kept while still similar).
    snippet_lines: Mutex<HashMap<String, usize>>,
    workspace: Mutex<Workspace>,
    /// Definitions in the workspace folders' files on disk, indexed in the background.
    project: Arc<RwLock<ProjectIndex>>,
    /// Definitions and text of each open document, at the version they were read from.
    open_definitions: Mutex<HashMap<String, OpenDocument>>,
    /// Where the person edited lately, across documents.
    recent_edits: Mutex<RecentEdits>,
    /// Set at shutdown: a running workspace walk stops.
    stop_indexing: Arc<AtomicBool>,
    progress_supported: Mutex<bool>,
    /// Model files being downloaded (`autoPull`); each is loaded when it arrives if the
    /// configuration still names it.
    pulling: Mutex<std::collections::HashSet<std::path::PathBuf>>,
    next_id: AtomicU64,
    load_seq: AtomicU64,
    worker: Worker,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The language server.
struct Backend {
    client: Client,
    shared: Arc<Shared>,
}

/// Sets a request's cancel flag when its handler future is dropped (`$/cancelRequest`) or done.
struct CancelOnDrop(CancelFlag);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// One answer to a completion request.
struct Suggestions {
    items: Vec<String>,
    /// The (clamped) cursor position.
    position: Position,
    /// The identifier characters right before the cursor, and where they start.
    word: String,
    word_start: Position,
}

impl Backend {
    fn new(client: Client, config: Config, worker: Worker) -> Self {
        let cache = CompletionCache::new(config.cache_size, MAX_TYPED);
        let shared = Shared {
            docs: Mutex::default(),
            encoding: Mutex::default(),
            config: Mutex::new(Arc::new(config)),
            model: Mutex::new(ModelState::NotLoaded),
            cache: Mutex::new(cache),
            inflight: Mutex::default(),
            snippet_lines: Mutex::default(),
            workspace: Mutex::default(),
            project: Arc::default(),
            open_definitions: Mutex::default(),
            recent_edits: Mutex::default(),
            stop_indexing: Arc::default(),
            progress_supported: Mutex::new(false),
            pulling: Mutex::default(),
            next_id: AtomicU64::new(1),
            load_seq: AtomicU64::new(0),
            worker,
        };
        Self {
            client,
            shared: Arc::new(shared),
        }
    }

    fn config(&self) -> Arc<Config> {
        lock(&self.shared.config).clone()
    }

    /// Loads the model in the background, reporting `$/progress` and failures to the user; a
    /// missing model that `autoPull` may fetch is downloaded first ([`Self::pull_then_load`]).
    fn spawn_load(&self) {
        Self::start_load(self.client.clone(), self.shared.clone());
    }

    fn start_load(client: Client, shared: Arc<Shared>) {
        let seq = shared.load_seq.fetch_add(1, Ordering::SeqCst) + 1;
        let cfg = lock(&shared.config).clone();
        let path = cfg.resolved_model_path();
        if cfg.auto_pull && !path.exists() {
            if let Some(entry) = crate::pull::auto_pull_entry(&path) {
                Self::pull_then_load(client, shared, entry, path);
                return;
            }
        }
        if let Some(remote) = RemoteParams::from_config(&cfg) {
            Self::start_connect(client, shared, remote, seq);
            return;
        }
        // Queue the load now, so that completion jobs queued after this wait for the new model
        // instead of racing it.
        *lock(&shared.model) = ModelState::Loading;
        let params = LoadParams {
            path: path.clone(),
            threads: cfg.threads,
            context_size: cfg.context_size,
            batch_tokens: PROMPT_BATCH_TOKENS,
            cache_reuse_tokens: cfg.cache_reuse_tokens,
        };
        let loaded = shared.worker.load(params);
        tokio::spawn(async move {
            let progress = begin_load_progress(
                &client,
                &shared,
                seq,
                "lmrs: loading model",
                Some(path.display().to_string()),
            )
            .await;
            let result = loaded.await;
            if shared.load_seq.load(Ordering::SeqCst) != seq {
                return; // a newer load superseded this one
            }
            let (state, message) = match result {
                Ok(Ok(desc)) => (
                    ModelState::Ready(desc.clone()),
                    format!("lmrs: model ready ({desc})"),
                ),
                Ok(Err(e)) => {
                    let reason = report::describe(&e, ": ");
                    let fix = if path.exists() {
                        format!("put {DEFAULT_MODEL_FILE} there")
                    } else {
                        crate::pull::missing_model_hint(&path)
                    };
                    let msg = format!(
                        "lmrs: {reason}. Inline completions are off until a model loads: {fix}, or point \
                         `--model` / initializationOptions `modelPath` at a GGUF code model (Qwen2.5-Coder recommended)."
                    );
                    (ModelState::Failed(reason), msg)
                }
                Err(_) => (
                    ModelState::Failed("worker stopped".into()),
                    "lmrs: the model worker stopped".into(),
                ),
            };
            settle_load(&client, &shared, progress, state, message).await;
        });
    }

    /// Switches the worker to the remote engine `remote` (nothing is sent to it yet: whether it
    /// answers shows with the first request, and is said once when it does not).
    fn start_connect(client: Client, shared: Arc<Shared>, remote: RemoteParams, seq: u64) {
        *lock(&shared.model) = ModelState::Loading;
        let connected = shared.worker.connect(remote);
        tokio::spawn(async move {
            // The same progress as a model load, so that editors show the same states.
            let progress = begin_load_progress(
                &client,
                &shared,
                seq,
                "lmrs: connecting to the remote engine",
                None,
            )
            .await;
            let result = connected.await;
            if shared.load_seq.load(Ordering::SeqCst) != seq {
                return; // a newer load superseded this one
            }
            let (state, message) = match result {
                Ok(Ok(desc)) => (
                    ModelState::Ready(desc.clone()),
                    format!("lmrs: model ready ({desc})"),
                ),
                Ok(Err(e)) => {
                    let reason = report::describe(&e, ": ");
                    let message = format!(
                        "lmrs: {reason}. Inline completions are off until `--backend` / \
                         initializationOptions `backend` names a remote engine's URL."
                    );
                    (ModelState::Failed(reason), message)
                }
                Err(_) => (
                    ModelState::Failed("worker stopped".into()),
                    "lmrs: the model worker stopped".into(),
                ),
            };
            settle_load(&client, &shared, progress, state, message).await;
        });
    }

    /// `autoPull`: downloads the catalogue model `entry` to `path` on a thread of its own (as
    /// `lmrs pull` does), with its percentage as `$/progress`, then loads it if the configuration
    /// still names it. A failed download is shown with its reason and the `lmrs pull` to run.
    /// Completions answer empty meanwhile. One download per file at a time: a load asked for while
    /// the file is coming waits for that download.
    fn pull_then_load(
        client: Client,
        shared: Arc<Shared>,
        entry: &'static crate::pull::catalogue::CatalogueEntry,
        path: std::path::PathBuf,
    ) {
        *lock(&shared.model) = ModelState::Pulling;
        if !lock(&shared.pulling).insert(path.clone()) {
            return;
        }
        let seq = shared.load_seq.load(Ordering::SeqCst);
        info!(model = entry.name, path = %path.display(), "autoPull: downloading the model");
        // Whole percents (or megabytes when the size is unknown) as they change.
        let (report, mut reports) = tokio::sync::mpsc::unbounded_channel::<(u32, String)>();
        // A thread of its own, not `spawn_blocking`: the runtime's end waits for its blocking
        // tasks, so the server would outlive the editor until the download is over. When the
        // server exits, what arrived stays in `FILE.part` for the next try to resume.
        let (done, download) = tokio::sync::oneshot::channel();
        let spawned = {
            let path = path.clone();
            std::thread::Builder::new()
                .name("lmrs-pull".into())
                .spawn(move || {
                    const MB: u64 = 1_000_000;
                    let mut last = None;
                    let result = crate::pull::pull_entry(entry, &path, &mut |p| {
                        let (step, percent, message) = match p.total {
                            Some(total) if total > 0 => {
                                let percent = p.done.min(total) * 100 / total;
                                let of = format!("{} of {} MB", p.done / MB, total / MB);
                                (percent, percent as u32, of)
                            }
                            _ => (p.done / MB, 0, format!("{} MB", p.done / MB)),
                        };
                        if last != Some(step) {
                            last = Some(step);
                            let _ = report.send((percent, message));
                        }
                    });
                    let _ = done.send(result);
                })
        };
        if let Err(e) = spawned {
            warn!(error = %e, "cannot start the download thread");
        }
        tokio::spawn(async move {
            let progress = if *lock(&shared.progress_supported) {
                let token = ProgressToken::String(format!("lmrs/pull/{seq}"));
                match client.create_work_done_progress(token.clone()).await {
                    Ok(()) => Some(
                        client
                            .progress(token, format!("lmrs: downloading {}", entry.name))
                            .with_message(path.display().to_string())
                            .with_percentage(0)
                            .begin()
                            .await,
                    ),
                    Err(_) => None,
                }
            } else {
                None
            };
            while let Some((percent, message)) = reports.recv().await {
                if let Some(p) = &progress {
                    p.report_with_message(message, percent).await;
                }
            }
            let result = download.await;
            lock(&shared.pulling).remove(&path);
            let failure = match result {
                Ok(Ok(done)) => {
                    info!(sha256 = %done.sha256, "autoPull: {} downloaded", path.display());
                    None
                }
                Ok(Err(e)) => Some(report::describe(&e, ": ")),
                Err(_) => Some("the download thread stopped".to_string()),
            };
            let message = match &failure {
                None => format!("lmrs: {} downloaded", entry.name),
                Some(reason) => format!(
                    "lmrs: downloading {} failed: {reason}. Inline completions are off until a \
                     model loads: run `lmrs pull {}` to download it.",
                    entry.name, entry.name
                ),
            };
            if let Some(p) = progress {
                p.finish_with_message(message.clone()).await;
            }
            let current = lock(&shared.config).resolved_model_path() == path;
            match failure {
                None if current => Self::start_load(client, shared),
                None => {}
                Some(reason) => {
                    warn!("{message}");
                    if current {
                        *lock(&shared.model) = ModelState::Failed(reason);
                    }
                    client.show_message(MessageType::Error, message).await;
                }
            }
        });
    }

    /// The document's rope and the cursor in it (clamped), and whether completions are on for
    /// its language. Pending edits are applied first; the rope clone is O(1).
    fn snapshot(&self, uri: &str, position: Position, cfg: &Config) -> Option<Snapshot> {
        let enc = *lock(&self.shared.encoding);
        let mut docs = lock(&self.shared.docs);
        docs.flush(uri, enc);
        docs.get(uri).map(|doc| {
            let rope = doc.rope.clone();
            let cursor = position_to_char(&rope, position, enc);
            Snapshot {
                rope,
                cursor,
                enabled: cfg.language_enabled(&doc.language_id),
            }
        })
    }

    async fn suggest(&self, uri: &Uri, position: Position, alternatives: usize) -> Suggestions {
        let uri = uri.0.as_str();
        let cfg = self.config();
        let Some(Snapshot {
            rope,
            cursor,
            enabled,
        }) = self.snapshot(uri, position, &cfg)
        else {
            return Suggestions::none(position);
        };
        let mut out = Suggestions::at(&rope, cursor, *lock(&self.shared.encoding));
        if !enabled {
            return out;
        }
        let crlf = uses_crlf(&rope);
        let (before, after) = cache_windows(&rope, cursor);
        if alternatives <= 1 {
            if let Some(cached) = self.cached(&before, &after) {
                out.items.extend(cached.map(|text| fix_eol(&text, crlf)));
                return out;
            }
        }
        // While loading, jobs queue behind the load on the worker; without a model, answer empty.
        if matches!(
            *lock(&self.shared.model),
            ModelState::NotLoaded | ModelState::Pulling | ModelState::Failed(_)
        ) {
            return out;
        }
        let input = self.completion_input(uri, &rope, cursor, &cfg, alternatives, true);
        // Kept only to prefetch the next suggestion (the clone shares the rope's nodes).
        let kept = (cfg.prefetch_next && alternatives <= 1).then(|| rope.clone());
        drop(rope);
        let completion = self.complete(uri, input, cfg.clone()).await;
        // A cut prompt's empty answer is not cached: the same request soon finds the prompt
        // finished and gets a real one. Nor is a failure's (a remote engine down).
        if completion.cancelled || completion.failed || completion.prompt_cut.is_some() {
            return out;
        }
        let first = completion.items.first().map_or("", String::as_str);
        lock(&self.shared.cache).insert(&before, &after, first);
        out.items = completion.items.iter().map(|s| fix_eol(s, crlf)).collect();
        if let (Some(rope), Some(shown)) = (kept, out.items.first()) {
            self.prefetch_next(uri, rope, cursor, shown, cfg);
        }
        out
    }

    /// Computes, on the worker's spare time, the suggestion that will be asked for if the person
    /// accepts `shown` at `cursor`, and caches it under the text the editor will then have, so
    /// the request after an accept is answered at once. Any request cancels it.
    fn prefetch_next(
        &self,
        uri: &str,
        mut rope: Rope,
        cursor: usize,
        shown: &str,
        cfg: Arc<Config>,
    ) {
        rope.insert(cursor, shown);
        let cursor = cursor + shown.chars().count();
        let (before, after) = cache_windows(&rope, cursor);
        if lock(&self.shared.cache).lookup(&before, &after).is_some() {
            return;
        }
        let input = self.completion_input(uri, &rope, cursor, &cfg, 1, false);
        drop(rope);
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let job = Job {
            input,
            config: cfg,
            cancel: CancelFlag::new(),
            id: format!("{id}-prefetch"),
            speculative: true,
        };
        let reply = self.shared.worker.submit_speculative(job);
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let Ok(completion) = reply.await else {
                return;
            };
            if completion.cancelled || completion.failed || completion.prompt_cut.is_some() {
                return;
            }
            let first = completion.items.first().map_or("", String::as_str);
            lock(&shared.cache).insert(&before, &after, first);
            debug!(
                ms = completion.total_ms.round() as u64,
                "next suggestion prefetched"
            );
        });
    }

    /// After an edit that inserted `inserted` characters at `start`, has the worker evaluate the
    /// prompt at the end of the insert while it waits for the editor's request (which editors send
    /// after a debounce), unless the cache will answer that request. The prefill only runs while
    /// no request waits, and a request stops it at once, keeping what it evaluated.
    fn prefill_after_edit(&self, uri: &str, start: Position, inserted: usize) {
        let cfg = self.config();
        if !cfg.prefetch_next || !matches!(*lock(&self.shared.model), ModelState::Ready(_)) {
            return;
        }
        let enc = *lock(&self.shared.encoding);
        let Some((rope, enabled)) = lock(&self.shared.docs)
            .get(uri)
            .map(|doc| (doc.rope.clone(), cfg.language_enabled(&doc.language_id)))
        else {
            return;
        };
        // The text before the edit's start did not change, so its position still holds.
        let cursor = (position_to_char(&rope, start, enc) + inserted).min(rope.len_chars());
        let (before, after) = cache_windows(&rope, cursor);
        if !enabled || lock(&self.shared.cache).lookup(&before, &after).is_some() {
            return;
        }
        let input = self.completion_input(uri, &rope, cursor, &cfg, 1, false);
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        self.shared.worker.prefill(Job {
            input,
            config: cfg,
            cancel: CancelFlag::new(),
            id: format!("{id}-prefill"),
            speculative: true,
        });
    }

    /// The cached suggestion for these windows around the cursor, if any (`Some(None)`: the cached
    /// answer is no suggestion).
    fn cached(&self, before: &str, after: &str) -> Option<Option<String>> {
        let hit = lock(&self.shared.cache).lookup(before, after)?;
        debug!(
            kind = if matches!(hit, Hit::Exact(_)) {
                "exact"
            } else {
                "typed-through"
            },
            "cache hit"
        );
        Some(Some(hit.text().to_owned()).filter(|text| !text.is_empty()))
    }

    /// What the worker needs for a completion at `cursor`; with `remember`, remembers the
    /// retrieved snippet's line, so the document's next request keeps it while it is still similar.
    fn completion_input(
        &self,
        uri: &str,
        rope: &Rope,
        cursor: usize,
        cfg: &Config,
        alternatives: usize,
        remember: bool,
    ) -> CompletionInput {
        let previous = lock(&self.shared.snippet_lines).get(uri).copied();
        let workspace = lock(&self.shared.workspace).file(uri);
        let (open, open_texts) = if cfg.context_tokens > 0 && cfg.context_open_documents {
            self.open_documents(uri)
        } else {
            (Vec::new(), Vec::new())
        };
        let recent_edits = if cfg.context_tokens > 0 && cfg.context_recent_edits {
            self.recent_edit_chunks(uri)
        } else {
            Vec::new()
        };
        let project = self
            .shared
            .project
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let current = workspace.1.clone().unwrap_or_default();
        let lookup = |name: &str| project.provided(name, &open, &current);
        let mut open_texts = open_texts;
        if cfg.context_tokens > 0 && cfg.context_workspace && !current.is_empty() {
            // Similar code may also be in files of the project nobody opened: those near this one.
            open_texts.extend(nearby_file_texts(&project, &current, &open_texts, cfg));
        }
        let input = CompletionInput::at_cursor(
            rope,
            cursor,
            cfg,
            previous,
            workspace,
            alternatives,
            &ProjectContext {
                lookup: &lookup,
                others: &open_texts,
                recent_edits: &recent_edits,
            },
        );
        if let Some(s) = input.snippet.as_ref().filter(|_| remember) {
            lock(&self.shared.snippet_lines).insert(uri.to_owned(), s.first_line);
        }
        input
    }

    /// The lines around the latest edits in the other open documents of the workspace folders,
    /// newest first (at most [`MAX_RECENT_EDIT_CHUNKS`]), read from their current text.
    fn recent_edit_chunks(&self, current: &str) -> Vec<ContextChunk> {
        let workspace = lock(&self.shared.workspace).clone();
        let places: Vec<(String, usize)> = lock(&self.shared.recent_edits)
            .elsewhere(current)
            .map(|(uri, line)| (uri.to_owned(), line))
            .collect();
        let docs = lock(&self.shared.docs);
        places
            .into_iter()
            .filter_map(|(uri, line)| {
                let (_, Some(path)) = workspace.file(&uri) else {
                    return None;
                };
                let (first, text) = chunk_around(&docs.get(&uri)?.rope, line)?;
                Some(ContextChunk {
                    path,
                    line: first,
                    text,
                    name: String::new(),
                })
            })
            .take(MAX_RECENT_EDIT_CHUNKS)
            .collect()
    }

    /// The definitions and the texts of the open documents in the workspace folders other than
    /// `current`, with their paths; each document is scanned again only when its version changed.
    fn open_documents(&self, current: &str) -> OpenDocuments {
        let workspace = lock(&self.shared.workspace).clone();
        let docs = lock(&self.shared.docs);
        let mut cache = lock(&self.shared.open_definitions);
        let (mut found_definitions, mut texts) = (Vec::new(), Vec::new());
        for (uri, doc) in docs.iter() {
            if uri == current {
                continue;
            }
            let (_, Some(path)) = workspace.file(uri) else {
                continue;
            };
            let fresh = cache.get(uri).is_some_and(|(v, _, _)| *v == doc.version);
            if !fresh {
                let text: Arc<str> = Arc::from(doc.rope.to_string());
                let found = definitions(&path, &text);
                cache.insert(uri.to_owned(), (doc.version, found, text));
            }
            if let Some((_, found, text)) = cache.get(uri) {
                found_definitions.push((path.clone(), found.clone()));
                texts.push((path, Arc::clone(text)));
            }
        }
        (found_definitions, texts)
    }

    /// Indexes the workspace folders on disk on a thread of its own, then swaps the new index in;
    /// `$/progress` shows the files indexed so far when the client supports it.
    fn spawn_indexing(&self) {
        let cfg = self.config();
        if cfg.context_tokens == 0 || !cfg.context_workspace {
            return;
        }
        let folders = lock(&self.shared.workspace).folder_paths();
        if folders.is_empty() {
            return;
        }
        let project = Arc::clone(&self.shared.project);
        let stop = Arc::clone(&self.shared.stop_indexing);
        let walk = WalkParams::from_config(&cfg);
        // Files indexed so far, at most every PROGRESS_EVERY; `None` when the walk is over.
        let (report, mut reports) = tokio::sync::mpsc::unbounded_channel::<Option<String>>();
        if *lock(&self.shared.progress_supported) {
            let client = self.client.clone();
            tokio::spawn(async move {
                let token = ProgressToken::String("lmrs/index".into());
                if client
                    .create_work_done_progress(token.clone())
                    .await
                    .is_err()
                {
                    return;
                }
                let progress = client
                    .progress(token, "lmrs: indexing the workspace")
                    .begin()
                    .await;
                let mut last = String::new();
                while let Some(Some(message)) = reports.recv().await {
                    progress.report(message.clone()).await;
                    last = message;
                }
                progress.finish_with_message(last).await;
            });
        }
        let spawned = std::thread::Builder::new()
            .name("lmrs-index".into())
            .spawn(move || {
                const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_millis(250);
                let mut index = ProjectIndex::default();
                let mut files = 0;
                let reported = std::cell::Cell::new(std::time::Instant::now());
                for folder in &folders {
                    let before = files;
                    let stats = index.index_folder(folder, &walk, &|stats| {
                        if reported.get().elapsed() >= PROGRESS_EVERY {
                            reported.set(std::time::Instant::now());
                            let _ = report.send(Some(format!("{} files", before + stats.files)));
                        }
                        !stop.load(Ordering::Relaxed)
                    });
                    files += stats.files;
                    info!(
                        files = stats.files,
                        definitions = stats.definitions,
                        mb = stats.bytes / (1 << 20),
                        ms = stats.millis,
                        capped = stats.capped,
                        "workspace indexed"
                    );
                }
                *project
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = index;
                let _ = report.send(Some(format!("{files} files indexed")));
                let _ = report.send(None);
            });
        if let Err(e) = spawned {
            warn!(error = %e, "cannot start the workspace indexer");
        }
    }

    /// Runs a completion on the worker, superseding the document's request in flight; dropping
    /// the future (`$/cancelRequest`) cancels it.
    async fn complete(&self, uri: &str, input: CompletionInput, config: Arc<Config>) -> Completion {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let cancel = CancelFlag::new();
        {
            // Supersede every request in flight, whatever its document: the worker serves one at
            // a time, and the newest is the one the person is waiting for (a long prompt in a
            // document left behind must not hold up the one being typed in).
            let mut inflight = lock(&self.shared.inflight);
            for (_, (_, older)) in inflight.drain() {
                older.cancel();
            }
            inflight.insert(uri.to_owned(), (id, cancel.clone()));
        }
        let guard = CancelOnDrop(cancel.clone());
        let job = Job {
            input,
            config,
            cancel,
            id: id.to_string(),
            speculative: false,
        };
        let completion = self.shared.worker.submit(job).await.unwrap_or_default();
        {
            let mut inflight = lock(&self.shared.inflight);
            if inflight.get(uri).is_some_and(|(i, _)| *i == id) {
                inflight.remove(uri);
            }
        }
        drop(guard);
        completion
    }
}

/// A document at the moment of a request.
struct Snapshot {
    rope: Rope,
    /// The cursor, in characters, clamped to the document.
    cursor: usize,
    /// Whether completions are on for the document's language.
    enabled: bool,
}

impl Suggestions {
    /// No suggestions at `position` (unknown document).
    fn none(position: Position) -> Self {
        Self {
            items: vec![],
            position,
            word: String::new(),
            word_start: position,
        }
    }

    /// No suggestions yet at `cursor`, with the identifier characters before it.
    fn at(rope: &Rope, cursor: usize, enc: PositionEncoding) -> Self {
        let line_start = rope.line_to_char(rope.char_to_line(cursor));
        let mut word_at = cursor;
        while word_at > line_start
            && matches!(rope.char(word_at - 1), c if c.is_alphanumeric() || c == '_')
        {
            word_at -= 1;
        }
        Self {
            items: vec![],
            position: char_to_position(rope, cursor, enc),
            word: rope.slice(word_at..cursor).to_string(),
            word_start: char_to_position(rope, word_at, enc),
        }
    }
}

/// Whether the document's first line ends in CRLF (suggestions then use CRLF line breaks too).
fn uses_crlf(rope: &Rope) -> bool {
    rope.lines()
        .next()
        .is_some_and(|l| l.len_chars() >= 2 && l.char(l.len_chars() - 2) == '\r')
}

/// The text before and after the cursor that the cache keys on.
fn cache_windows(rope: &Rope, cursor: usize) -> (String, String) {
    let before = rope
        .slice(cursor.saturating_sub(BEFORE_WINDOW + MAX_TYPED)..cursor)
        .to_string();
    let after = rope
        .slice(cursor..(cursor + AFTER_WINDOW).min(rope.len_chars()))
        .to_string();
    (before, after)
}

fn fix_eol(s: &str, crlf: bool) -> String {
    if crlf {
        s.replace('\n', "\r\n")
    } else {
        s.to_owned()
    }
}

impl LanguageServer for Backend {
    async fn initialize(&self, params: InitializeParams) -> RpcResult<InitializeResult> {
        let enc = PositionEncoding::negotiate(
            params
                .capabilities
                .general
                .as_ref()
                .and_then(|g| g.position_encodings.as_deref()),
        );
        *lock(&self.shared.encoding) = enc;
        *lock(&self.shared.progress_supported) = params
            .capabilities
            .window
            .as_ref()
            .and_then(|w| w.work_done_progress)
            .unwrap_or(false);
        if let Some(opts) = &params.initialization_options {
            let merged = self.config().merged(opts);
            match merged {
                Ok(c) => *lock(&self.shared.config) = Arc::new(c),
                Err(e) => {
                    self.client
                        .show_message(MessageType::Warning, format!("lmrs: {e}"))
                        .await
                }
            }
        }
        *lock(&self.shared.workspace) = Workspace::from_initialize(&params);
        info!(encoding = ?enc, "initialize");
        let capabilities = ServerCapabilities {
            position_encoding: Some(enc.kind()),
            text_document_sync: Some(TextDocumentSync::Options(TextDocumentSyncOptions {
                open_close: Some(true),
                change: Some(TextDocumentSyncKind::Incremental),
                save: Some(true.into()),
                ..Default::default()
            })),
            completion_provider: Some(CompletionOptions::default()),
            inline_completion_provider: Some(true.into()),
            ..Default::default()
        };
        Ok(InitializeResult {
            capabilities,
            server_info: Some(ServerInfo {
                name: "lmrs".into(),
                version: Some(env!("CARGO_PKG_VERSION").into()),
            }),
        })
    }

    async fn initialized(&self, _: InitializedParams) {
        self.spawn_load();
        self.spawn_indexing();
    }

    async fn shutdown(&self) -> RpcResult<()> {
        self.shared.stop_indexing.store(true, Ordering::Relaxed);
        for (_, (_, c)) in lock(&self.shared.inflight).drain() {
            c.cancel();
        }
        Ok(())
    }

    async fn did_open(&self, params: DidOpenTextDocumentParams) {
        let d = params.text_document;
        let language: String = d.language_id.into();
        lock(&self.shared.docs).open(&d.uri.0, &language, d.version, &d.text);
    }

    async fn did_change(&self, params: DidChangeTextDocumentParams) {
        let enc = *lock(&self.shared.encoding);
        let edits: Vec<Edit> = params.content_changes.into_iter().map(Edit::from).collect();
        // Where the last edit's text ends: the cursor, for the prefill below.
        let typed = edits
            .last()
            .and_then(|e| Some((e.range?.start, e.text.chars().count())));
        let id = params.text_document.text_document_identifier.uri.0;
        let outcome = lock(&self.shared.docs).change(&id, params.text_document.version, edits, enc);
        debug!(
            ?outcome,
            version = params.text_document.version,
            "didChange"
        );
        if let (Some((start, _)), ChangeOutcome::Applied) = (typed, outcome) {
            lock(&self.shared.recent_edits).record(id.as_str(), start.line as usize);
        }
        // Only for an edit applied in order (a buffered one is not the document's text yet).
        if let (Some((start, inserted)), ChangeOutcome::Applied) = (typed, outcome) {
            self.prefill_after_edit(id.as_str(), start, inserted);
        }
    }

    async fn did_save(&self, params: DidSaveTextDocumentParams) {
        // The saved file's definitions replace its old ones in the project index (read from disk:
        // the index holds what is saved; the open text is looked up separately).
        let uri = params.text_document.uri.0.as_str();
        let workspace = lock(&self.shared.workspace).clone();
        let (_, Some(path)) = workspace.file(uri) else {
            return;
        };
        let Some(file) = uri
            .strip_prefix("file://")
            .map(|p| std::path::PathBuf::from(crate::lsp::workspace::decode_path(p)))
        else {
            return;
        };
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let count = self
            .shared
            .project
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .update_file_on_disk(&path, &file, &text);
        debug!(definitions = count, "didSave: re-indexed");
    }

    async fn did_close(&self, params: DidCloseTextDocumentParams) {
        let uri = params.text_document.uri.0;
        lock(&self.shared.open_definitions).remove(&uri);
        lock(&self.shared.recent_edits).forget(&uri);
        lock(&self.shared.docs).close(&uri);
        lock(&self.shared.snippet_lines).remove(&uri);
        if let Some((_, c)) = lock(&self.shared.inflight).remove(&uri) {
            c.cancel();
        }
    }

    async fn did_change_configuration(&self, params: DidChangeConfigurationParams) {
        let old = self.config();
        match old.merged(&params.settings) {
            Ok(new) => {
                // Turning autoPull on retries a model that is missing.
                let reload = old.needs_reload(&new)
                    || (new.auto_pull
                        && !old.auto_pull
                        && matches!(*lock(&self.shared.model), ModelState::Failed(_)));
                *lock(&self.shared.cache) = CompletionCache::new(new.cache_size, MAX_TYPED);
                *lock(&self.shared.config) = Arc::new(new);
                if reload {
                    self.spawn_load();
                }
            }
            Err(e) => {
                self.client
                    .show_message(MessageType::Warning, format!("lmrs: {e}"))
                    .await
            }
        }
    }

    async fn inline_completion(
        &self,
        params: InlineCompletionParams,
    ) -> RpcResult<Option<InlineCompletionResponse>> {
        let tdp = params.text_document_position_params;
        let alternatives = match params.context.trigger_kind {
            InlineCompletionTriggerKind::Invoked => self.config().alternatives.max(1),
            _ => 1,
        };
        let s = self
            .suggest(&tdp.text_document.uri, tdp.position, alternatives)
            .await;
        let items = s
            .items
            .into_iter()
            .map(|text| InlineCompletionItem {
                insert_text: InsertText::String(text),
                filter_text: None,
                range: Some(Range::new(s.position, s.position)),
                command: None,
            })
            .collect();
        Ok(Some(InlineCompletionResponse::InlineCompletionList(
            InlineCompletionList { items },
        )))
    }

    async fn completion(&self, params: CompletionParams) -> RpcResult<Option<CompletionResponse>> {
        let tdp = params.text_document_position_params;
        let s = self.suggest(&tdp.text_document.uri, tdp.position, 1).await;
        let items = s
            .items
            .into_iter()
            .map(|text| {
                let full = format!("{}{}", s.word, text);
                let first_line = full
                    .lines()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("")
                    .trim();
                let label: String = first_line.chars().take(80).collect();
                CompletionItem {
                    label,
                    kind: Some(CompletionItemKind::Text),
                    detail: Some("lmrs".into()),
                    filter_text: Some(full.clone()),
                    sort_text: Some("0".into()),
                    preselect: Some(true),
                    insert_text_format: Some(InsertTextFormat::PlainText),
                    text_edit: Some(CompletionItemTextEdit::TextEdit(TextEdit::new(
                        Range::new(s.word_start, s.position),
                        full,
                    ))),
                    ..Default::default()
                }
            })
            .collect();
        Ok(Some(CompletionResponse::CompletionList(CompletionList {
            is_incomplete: true,
            items,
            ..Default::default()
        })))
    }
}

/// Runs the server on stdin/stdout until the client exits. An error when the framing of the input
/// is lost or the client sent `exit` without `shutdown` (see [`Transport::finish`]).
pub(crate) async fn serve(config: Config) -> anyhow::Result<()> {
    let (events, mut remote_events) = tokio::sync::mpsc::unbounded_channel();
    let worker = Worker::spawn_with_events(Some(events))?;
    let (service, socket) = LspService::new(move |client| {
        // A remote engine going down or coming back is shown in the editor (once per change).
        let shown = client.clone();
        tokio::spawn(async move {
            while let Some(event) = remote_events.recv().await {
                let (kind, message) = match event {
                    RemoteEvent::Down(message) => (MessageType::Warning, message),
                    RemoteEvent::Up(message) => (MessageType::Info, message),
                };
                shown.show_message(kind, message).await;
            }
        });
        Backend::new(client, config, worker)
    });
    let (transport, pipes) = Transport::stdio()?;
    let server = Server::new(pipes.input, pipes.output, socket)
        .concurrency_level(64)
        .serve(service);
    tokio::select! {
        () = server => {}
        // The editor is gone: requests in flight are dropped (their guards cancel the work within
        // one token) instead of being waited for.
        () = transport.input_ended() => {}
    }
    transport.finish().await
}

/// Files the workspace index holds near `current` that are not open (at most
/// [`MAX_NEARBY_FILES`], each at most the index's file size cap), read from disk, to search for
/// code like the code at the cursor.
fn nearby_file_texts(
    project: &ProjectIndex,
    current: &str,
    open: &[(String, Arc<str>)],
    cfg: &Config,
) -> Vec<(String, Arc<str>)> {
    project
        .nearby_files(current, MAX_NEARBY_FILES + open.len())
        .into_iter()
        .filter(|(path, _)| !open.iter().any(|(p, _)| p == path))
        .filter_map(|(path, file)| {
            let size = std::fs::metadata(&file).ok()?.len();
            if size > cfg.index_max_file_bytes {
                return None;
            }
            let bytes = std::fs::read(&file).ok()?;
            let text = crate::completion::project::source_text(&bytes)?;
            Some((path, Arc::from(text)))
        })
        .take(MAX_NEARBY_FILES)
        .collect()
}

/// Files near the current one, besides the open documents, searched for similar code.
const MAX_NEARBY_FILES: usize = 4;

/// The `$/progress` of a model load or a remote connection (token `lmrs/load/SEQ`), begun when
/// the client supports progress and accepts the token.
async fn begin_load_progress(
    client: &Client,
    shared: &Shared,
    seq: u64,
    title: &str,
    message: Option<String>,
) -> Option<OngoingProgress<Unbounded, NotCancellable>> {
    if !*lock(&shared.progress_supported) {
        return None;
    }
    let token = ProgressToken::String(format!("lmrs/load/{seq}"));
    client.create_work_done_progress(token.clone()).await.ok()?;
    let progress = client.progress(token, title.to_owned());
    Some(match message {
        Some(message) => progress.with_message(message).begin().await,
        None => progress.begin().await,
    })
}

/// Ends a model load or remote connection: finishes its progress with `message`, logs it (and
/// shows a failure to the user), and records the model's new state.
async fn settle_load(
    client: &Client,
    shared: &Shared,
    progress: Option<OngoingProgress<Unbounded, NotCancellable>>,
    state: ModelState,
    message: String,
) {
    if let Some(p) = progress {
        p.finish_with_message(message.clone()).await;
    }
    match &state {
        ModelState::Ready(_) => info!("{message}"),
        _ => {
            warn!("{message}");
            client.show_message(MessageType::Error, message).await;
        }
    }
    *lock(&shared.model) = state;
}
