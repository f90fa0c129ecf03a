//! The `tower-lsp-server` language server: lifecycle, document sync and the completion handlers.
//!
//! Handlers never block on the model: document notifications apply their edits synchronously under
//! a short lock, and completion requests either answer from the cache at once or await a reply from
//! the [`Worker`] thread. A newer request for the same document cancels the older one's flag (the
//! engine stops within one token) and the older one answers empty; `$/cancelRequest` drops the
//! handler future, whose guard sets the flag too. Every request gets an answer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tower_lsp_server::gen_lsp_types::*;
use tower_lsp_server::jsonrpc::Result as RpcResult;
use tower_lsp_server::{Client, LanguageServer, LspService, Server};
use tracing::{debug, info, warn};

use super::cache::{CompletionCache, Hit, AFTER_WINDOW, BEFORE_WINDOW};
use super::config::Config;
use super::documents::{DocumentStore, Edit};
use super::engine::{Cancel, LoadParams};
use super::position::{char_to_position, position_to_char, PositionEncoding};
use super::worker::{snippet_for_cursor, CursorContext, Job, JobInput, Worker};

/// Characters that typing-through may skip over.
const MAX_TYPED: usize = 64;

/// Where the model is.
#[derive(Clone, Debug, PartialEq, Eq)]
enum ModelState {
    NotLoaded,
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
    inflight: Mutex<HashMap<String, (u64, Cancel)>>,
    /// First line of the last retrieved snippet per document (kept while still similar).
    snippet_lines: Mutex<HashMap<String, usize>>,
    workspace: Mutex<Vec<(String, String)>>, // (folder uri with trailing '/', name)
    progress_supported: Mutex<bool>,
    next_id: AtomicU64,
    load_seq: AtomicU64,
    worker: Worker,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The language server.
pub struct Backend {
    client: Client,
    shared: Arc<Shared>,
}

/// Sets a request's cancel flag when its handler future is dropped (`$/cancelRequest`) or done.
struct CancelOnDrop(Cancel);

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
            progress_supported: Mutex::new(false),
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

    /// Loads the model in the background, reporting `$/progress` and failures to the user.
    fn spawn_load(&self) {
        let client = self.client.clone();
        let shared = self.shared.clone();
        let seq = shared.load_seq.fetch_add(1, Ordering::SeqCst) + 1;
        // Queue the load now, so that completion jobs queued after this wait for the new model
        // instead of racing it.
        let cfg = lock(&shared.config).clone();
        let path = cfg.resolved_model_path();
        *lock(&shared.model) = ModelState::Loading;
        let params = LoadParams {
            path: path.clone(),
            threads: cfg.threads,
            context_size: cfg.context_size,
        };
        let loaded = shared.worker.load(params);
        tokio::spawn(async move {
            let progress = if *lock(&shared.progress_supported) {
                let token = ProgressToken::String(format!("lmrs/load/{seq}"));
                match client.create_work_done_progress(token.clone()).await {
                    Ok(()) => Some(
                        client
                            .progress(token, "lmrs: loading model")
                            .with_message(path.display().to_string())
                            .begin()
                            .await,
                    ),
                    Err(_) => None,
                }
            } else {
                None
            };
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
                    let msg = format!(
                        "lmrs: {e}. Inline completions are off until a model loads: put {} there, or point \
                         `--model` / initializationOptions `modelPath` at a GGUF code model (Qwen2.5-Coder recommended).",
                        super::config::DEFAULT_MODEL_FILE
                    );
                    (ModelState::Failed(e.to_string()), msg)
                }
                Err(_) => (
                    ModelState::Failed("worker stopped".into()),
                    "lmrs: the model worker stopped".into(),
                ),
            };
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
        });
    }

    fn workspace_of(&self, uri: &str) -> (Option<String>, Option<String>) {
        let ws = lock(&self.shared.workspace);
        for (root, name) in ws.iter() {
            if let Some(rel) = uri.strip_prefix(root.as_str()) {
                return (Some(name.clone()), Some(percent_decode(rel)));
            }
        }
        (None, None)
    }

    async fn suggest(&self, uri: &Uri, position: Position, alternatives: usize) -> Suggestions {
        let uri = uri.0.as_str();
        let enc = *lock(&self.shared.encoding);
        let cfg = self.config();
        // Snapshot under the lock: O(1) rope clone plus the small windows the cache needs.
        let snapshot = {
            let mut docs = lock(&self.shared.docs);
            docs.flush(uri, enc);
            docs.get(uri).map(|doc| {
                let rope = doc.rope.clone();
                let cursor = position_to_char(&rope, position, enc);
                let enabled = cfg.language_enabled(&doc.language_id);
                (rope, cursor, enabled)
            })
        };
        let Some((rope, cursor, enabled)) = snapshot else {
            return Suggestions {
                items: vec![],
                position,
                word: String::new(),
                word_start: position,
            };
        };
        let clamped = char_to_position(&rope, cursor, enc);
        let line_start = rope.line_to_char(rope.char_to_line(cursor));
        let mut word_at = cursor;
        while word_at > line_start
            && matches!(rope.char(word_at - 1), c if c.is_alphanumeric() || c == '_')
        {
            word_at -= 1;
        }
        let word: String = rope.slice(word_at..cursor).to_string();
        let word_start = char_to_position(&rope, word_at, enc);
        let mut out = Suggestions {
            items: vec![],
            position: clamped,
            word,
            word_start,
        };
        if !enabled {
            return out;
        }
        let crlf = rope
            .lines()
            .next()
            .is_some_and(|l| l.len_chars() >= 2 && l.char(l.len_chars() - 2) == '\r');
        let before = rope
            .slice(cursor.saturating_sub(BEFORE_WINDOW + MAX_TYPED)..cursor)
            .to_string();
        let after = rope
            .slice(cursor..(cursor + AFTER_WINDOW).min(rope.len_chars()))
            .to_string();
        if alternatives <= 1 {
            if let Some(hit) = lock(&self.shared.cache).lookup(&before, &after) {
                debug!(
                    kind = if matches!(hit, Hit::Exact(_)) {
                        "exact"
                    } else {
                        "typed-through"
                    },
                    "cache hit"
                );
                if !hit.text().is_empty() {
                    out.items.push(fix_eol(hit.text(), crlf));
                }
                return out;
            }
        }
        // While loading, jobs queue behind the load on the worker; without a model, answer empty.
        if matches!(
            *lock(&self.shared.model),
            ModelState::NotLoaded | ModelState::Failed(_)
        ) {
            return out;
        }
        let (prefix_tokens, suffix_tokens) = cfg.budgets();
        let ctx = CursorContext::extract(&rope, cursor, prefix_tokens, suffix_tokens);
        let previous = lock(&self.shared.snippet_lines).get(uri).copied();
        let snippet = snippet_for_cursor(
            &rope,
            cursor,
            prefix_tokens,
            suffix_tokens,
            cfg.snippet_tokens,
            previous,
        );
        if let Some(s) = &snippet {
            lock(&self.shared.snippet_lines).insert(uri.to_owned(), s.first_line);
        }
        let snippet = snippet.map(|s| s.text);
        drop(rope);
        let (repo_name, rel_path) = self.workspace_of(uri);
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let cancel = Cancel::new();
        if let Some((_, older)) =
            lock(&self.shared.inflight).insert(uri.to_owned(), (id, cancel.clone()))
        {
            older.cancel(); // supersede
        }
        let guard = CancelOnDrop(cancel.clone());
        let job = Job {
            input: JobInput {
                ctx,
                repo_name,
                rel_path,
                alternatives,
                snippet,
            },
            config: cfg,
            cancel: cancel.clone(),
            reply: tokio::sync::oneshot::channel().0,
            id: id.to_string(),
        };
        let completion = self.shared.worker.submit(job).await.unwrap_or_default();
        {
            let mut inflight = lock(&self.shared.inflight);
            if inflight.get(uri).is_some_and(|(i, _)| *i == id) {
                inflight.remove(uri);
            }
        }
        drop(guard);
        if completion.cancelled {
            return out;
        }
        let first = completion.items.first().map_or("", String::as_str);
        lock(&self.shared.cache).insert(&before, &after, first);
        out.items = completion.items.iter().map(|s| fix_eol(s, crlf)).collect();
        out
    }
}

fn fix_eol(s: &str, crlf: bool) -> String {
    if crlf {
        s.replace('\n', "\r\n")
    } else {
        s.to_owned()
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && b[i + 1].is_ascii_hexdigit()
            && b[i + 2].is_ascii_hexdigit()
        {
            let hex = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
            out.push(hex(b[i + 1]) * 16 + hex(b[i + 2]));
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn folder_name(uri: &str) -> String {
    percent_decode(uri.trim_end_matches('/').rsplit('/').next().unwrap_or(""))
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
        let mut folders = Vec::new();
        if let Some(WorkspaceFolders::WorkspaceFolderList(list)) =
            &params.workspace_folders_initialize_params.workspace_folders
        {
            for f in list {
                folders.push((
                    format!("{}/", f.uri.0.trim_end_matches('/')),
                    f.name.clone(),
                ));
            }
        }
        #[allow(deprecated)]
        if folders.is_empty() {
            if let Some(root) = &params.root_uri {
                folders.push((
                    format!("{}/", root.0.trim_end_matches('/')),
                    folder_name(&root.0),
                ));
            }
        }
        *lock(&self.shared.workspace) = folders;
        info!(encoding = ?enc, "initialize");
        let capabilities = ServerCapabilities {
            position_encoding: Some(enc.kind()),
            text_document_sync: Some(TextDocumentSync::Options(TextDocumentSyncOptions {
                open_close: Some(true),
                change: Some(TextDocumentSyncKind::Incremental),
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
    }

    async fn shutdown(&self) -> RpcResult<()> {
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
        let edits = params
            .content_changes
            .into_iter()
            .map(|c| match c {
                TextDocumentContentChangeEvent::TextDocumentContentChangePartial(p) => Edit {
                    range: Some(p.range),
                    text: p.text,
                },
                TextDocumentContentChangeEvent::TextDocumentContentChangeWholeDocument(w) => Edit {
                    range: None,
                    text: w.text,
                },
            })
            .collect();
        let id = params.text_document.text_document_identifier.uri.0;
        let outcome = lock(&self.shared.docs).change(&id, params.text_document.version, edits, enc);
        debug!(
            ?outcome,
            version = params.text_document.version,
            "didChange"
        );
    }

    async fn did_close(&self, params: DidCloseTextDocumentParams) {
        let uri = params.text_document.uri.0;
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
                let reload = old.needs_reload(&new);
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

/// Runs the server on stdin/stdout until the client exits.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let worker = Worker::spawn()?;
    let (service, socket) = LspService::new(move |client| Backend::new(client, config, worker));
    Server::new(tokio::io::stdin(), tokio::io::stdout(), socket)
        .concurrency_level(64)
        .serve(service)
        .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_helpers() {
        assert_eq!(percent_decode("a%20b/c%C3%A9.rs"), "a b/cé.rs");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(folder_name("file:///home/u/my%20proj/"), "my proj");
    }
}
