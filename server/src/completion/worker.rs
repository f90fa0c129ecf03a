//! The model worker: one thread owns the model and its warm session; jobs arrive over a channel.
//!
//! Every job gets a reply: an empty one when it was cancelled or superseded before or while it ran,
//! when no model is loaded, or when the engine failed (even by panicking).
//!
//! While no message waits, the worker finishes a prompt that a request's prompt deadline cut, or
//! the prompt of a prefill (the editor's next request after an edit), one micro-batch at a time; a new message stops that at once (it sets the idle work's cancel flag),
//! and the work done stays in the KV cache for the requests that follow.
//!
//! With a remote engine ([`Worker::connect`]) the worker holds its client instead of a model: jobs
//! run [`run_remote_completion`] (the HTTP exchange itself on a thread of its own, so a cancel
//! returns at once), there is no idle prompt work, and changes of the remote's availability are
//! sent to the events channel given to [`Worker::spawn_with_events`].
//!
//! A speculative job (the suggestion after the one just shown, as if it were accepted) is queued
//! like any job but yields to every other message: sending one cancels it, so it never delays a
//! request by more than the engine's reaction to a cancel flag (GGML aborts its graph).

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use lmrs::CancelFlag;
use tokio::sync::oneshot;
use tracing::{debug, error, info, info_span, warn};

use super::model::{CompletionModel, LoadParams, ModelError};
use super::pipeline::{
    prefill_prompt, run_completion, run_remote_completion, Completion, CompletionInput,
};
use super::remote::{RemoteError, RemoteEvent, RemoteModel, RemoteParams};
use crate::config::Config;

/// A queued completion.
pub(crate) struct Job {
    /// What to complete.
    pub(crate) input: CompletionInput,
    /// The configuration in force when the request arrived.
    pub(crate) config: Arc<Config>,
    /// Set when the request is cancelled or superseded.
    pub(crate) cancel: CancelFlag,
    /// Request id for logs.
    pub(crate) id: String,
    /// A prefetch no one waits for yet (see [`Worker::submit_speculative`]).
    pub(crate) speculative: bool,
}

enum Msg {
    Load(LoadParams, oneshot::Sender<Result<String, ModelError>>),
    Connect(RemoteParams, oneshot::Sender<Result<String, RemoteError>>),
    Job(Job, oneshot::Sender<Completion>),
    /// Evaluate this job's prompt while no message waits (nothing is generated, no reply).
    Prefill(Job),
}

/// Handle to the worker thread.
#[derive(Clone)]
pub(crate) struct Worker {
    tx: mpsc::Sender<Msg>,
    /// The cancel flag of the worker's idle work, set whenever a message is sent.
    idle_work: IdleWork,
    /// The cancel flag of the latest speculative job, set whenever another message is sent.
    speculation: Arc<Mutex<CancelFlag>>,
}

/// The cancel flag of the work the worker does while no message waits. A sender sets it after
/// sending; the worker installs a fresh one before it looks for messages, so a message sent
/// after that look always stops the idle work.
#[derive(Clone, Default)]
struct IdleWork(Arc<Mutex<CancelFlag>>);

impl IdleWork {
    /// A fresh, unset flag for the next piece of idle work.
    fn renew(&self) -> CancelFlag {
        let flag = CancelFlag::new();
        *self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = flag.clone();
        flag
    }

    /// Stops the idle work now running, if any.
    fn interrupt(&self) {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .cancel();
    }
}

impl Worker {
    /// Starts the worker thread.
    #[cfg(test)]
    pub(crate) fn spawn() -> std::io::Result<Self> {
        Self::spawn_with_events(None)
    }

    /// Starts the worker thread; a remote engine's availability changes go to `events`.
    pub(crate) fn spawn_with_events(
        events: Option<tokio::sync::mpsc::UnboundedSender<RemoteEvent>>,
    ) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel();
        let idle_work = IdleWork::default();
        let worker_idle_work = idle_work.clone();
        std::thread::Builder::new()
            .name("lmrs-model".into())
            .spawn(move || worker_loop(rx, worker_idle_work, events))?;
        Ok(Self {
            tx,
            idle_work,
            speculation: Arc::default(),
        })
    }

    /// Cancels the speculative job queued or running, if any.
    fn cancel_speculation(&self) {
        self.speculation
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .cancel();
    }

    /// Loads (or replaces) the model; the answer is its description.
    pub(crate) fn load(&self, params: LoadParams) -> oneshot::Receiver<Result<String, ModelError>> {
        let (tx, rx) = oneshot::channel();
        self.cancel_speculation();
        let _ = self.tx.send(Msg::Load(params, tx));
        self.idle_work.interrupt();
        rx
    }

    /// Replaces the model (or an earlier remote engine) with a client of the remote engine
    /// `params`; the answer is its description (nothing is sent to it yet).
    pub(crate) fn connect(
        &self,
        params: RemoteParams,
    ) -> oneshot::Receiver<Result<String, RemoteError>> {
        let (tx, rx) = oneshot::channel();
        self.cancel_speculation();
        let _ = self.tx.send(Msg::Connect(params, tx));
        self.idle_work.interrupt();
        rx
    }

    /// Queues a job; the receiver always resolves (to an empty completion if all else fails).
    pub(crate) fn submit(&self, job: Job) -> oneshot::Receiver<Completion> {
        self.cancel_speculation();
        self.send_job(job)
    }

    /// Queues a speculative job: the next message sent (or the next speculation) cancels it, so
    /// it only uses time no request needs. Its receiver resolves like [`submit`](Self::submit)'s.
    pub(crate) fn submit_speculative(&self, job: Job) -> oneshot::Receiver<Completion> {
        {
            let mut current = self
                .speculation
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            current.cancel();
            *current = job.cancel.clone();
        }
        self.send_job(job)
    }

    /// Has the prompt of `job` evaluated while no message waits, replacing any earlier prefill or
    /// unfinished prompt, so that a request expected soon (the editor's next one after an edit)
    /// finds it cached. Cancels a queued or running speculative job: the person moved on.
    pub(crate) fn prefill(&self, job: Job) {
        self.cancel_speculation();
        let _ = self.tx.send(Msg::Prefill(job));
        self.idle_work.interrupt();
    }

    fn send_job(&self, job: Job) -> oneshot::Receiver<Completion> {
        let (tx, rx) = oneshot::channel();
        if let Err(mpsc::SendError(Msg::Job(_, reply))) = self.tx.send(Msg::Job(job, tx)) {
            let _ = reply.send(Completion::default());
        }
        self.idle_work.interrupt();
        rx
    }
}

/// The next message; while none waits, finishes the model's cut prompt (one micro-batch at a
/// time). `None` when every sender is gone.
fn next_message(
    rx: &mpsc::Receiver<Msg>,
    engine: &mut Option<Engine>,
    idle_work: &IdleWork,
) -> Option<Msg> {
    loop {
        let local = match engine {
            Some(Engine::Local(m)) => Some(m),
            _ => None,
        };
        let Some(m) = local.filter(|m| m.has_unfinished_prompt()) else {
            return rx.recv().ok();
        };
        let cancel = idle_work.renew();
        match rx.try_recv() {
            Ok(msg) => return Some(msg),
            Err(mpsc::TryRecvError::Disconnected) => return None,
            Err(mpsc::TryRecvError::Empty) => {
                let step =
                    std::panic::catch_unwind(AssertUnwindSafe(|| m.continue_prompt(&cancel)));
                // The prompt was taken before the engine ran, so a panic does not repeat.
                if step.is_err() {
                    error!("engine panicked while finishing a cut prompt");
                }
            }
        }
    }
}

/// What runs the completions.
enum Engine {
    /// The model in this process.
    Local(Box<CompletionModel>),
    /// A remote engine's client.
    Remote(Box<RemoteModel>),
}

fn worker_loop(
    rx: mpsc::Receiver<Msg>,
    idle_work: IdleWork,
    events: Option<tokio::sync::mpsc::UnboundedSender<RemoteEvent>>,
) {
    let mut engine: Option<Engine> = None;
    while let Some(msg) = next_message(&rx, &mut engine, &idle_work) {
        match msg {
            Msg::Connect(params, reply) => {
                engine = None; // free a model first
                let answer = RemoteModel::new(params).map(|remote| {
                    let description = remote.describe();
                    info!(engine = %description, "remote engine configured");
                    engine = Some(Engine::Remote(Box::new(remote)));
                    description
                });
                let _ = reply.send(answer);
            }
            Msg::Load(params, reply) => {
                engine = None; // free the old model first
                let t0 = Instant::now();
                let result = std::panic::catch_unwind(|| CompletionModel::load(&params))
                    .unwrap_or_else(|_| Err(ModelError::Panicked(params.path.clone())));
                let answer = result.map(|m| {
                    let d = m.describe();
                    info!(model = %d, ms = t0.elapsed().as_millis() as u64, "model loaded");
                    engine = Some(Engine::Local(Box::new(m)));
                    d
                });
                let _ = reply.send(answer);
            }
            Msg::Prefill(job) => {
                // A remote engine keeps its own cache; there is nothing to evaluate here.
                if let Some(Engine::Local(m)) = engine.as_mut() {
                    let queued = std::panic::catch_unwind(AssertUnwindSafe(|| {
                        prefill_prompt(m, &job.input, &job.config)
                    }));
                    if queued.is_err() {
                        error!("panicked while building a prefill prompt");
                    }
                }
            }
            Msg::Job(job, reply) => {
                let completion = match engine.as_mut() {
                    _ if job.cancel.is_cancelled() => Completion {
                        cancelled: true,
                        ..Completion::default()
                    },
                    None => Completion::default(),
                    Some(Engine::Local(m)) => {
                        m.note_file_change();
                        run_job(m, &job)
                    }
                    Some(Engine::Remote(remote)) => {
                        let completion = run_remote_job(remote, &job);
                        for event in remote.take_events() {
                            match &event {
                                RemoteEvent::Down(message) => warn!("{message}"),
                                RemoteEvent::Up(message) => info!("{message}"),
                            }
                            if let Some(events) = &events {
                                let _ = events.send(event);
                            }
                        }
                        completion
                    }
                };
                let _ = reply.send(completion);
            }
        }
    }
}

fn run_job(model: &mut CompletionModel, job: &Job) -> Completion {
    let span = info_span!(
        "completion",
        id = %job.id,
        reused = tracing::field::Empty,
        moved = tracing::field::Empty,
        evaluated = tracing::field::Empty,
        generated = tracing::field::Empty,
        prompt_ms = tracing::field::Empty,
        gen_ms = tracing::field::Empty,
        total_ms = tracing::field::Empty,
    );
    let _enter = span.enter();
    let run = |model: &mut CompletionModel| {
        std::panic::catch_unwind(AssertUnwindSafe(|| {
            run_completion(model, &job.input, &job.config, &job.cancel)
        }))
    };
    // A speculative job runs on the spare session: the main one keeps the prompt the person's
    // next keystroke needs. Without a spare session it is dropped (answered empty, cancelled).
    let result = if job.speculative {
        model.on_spare_session(run).unwrap_or_else(|| {
            Ok(Ok(Completion {
                cancelled: true,
                ..Completion::default()
            }))
        })
    } else {
        run(model)
    };
    match result {
        Ok(Ok(c)) => {
            span.record("reused", c.stats.reused);
            span.record("moved", c.stats.moved);
            span.record("evaluated", c.stats.evaluated);
            span.record("generated", c.stats.generated);
            span.record("prompt_ms", c.stats.prompt_ms.round() as u64);
            span.record("gen_ms", c.stats.gen_ms.round() as u64);
            span.record("total_ms", c.total_ms.round() as u64);
            if job.speculative {
                info!(
                    items = c.items.len(),
                    cancelled = c.cancelled,
                    "prefetch done"
                );
            } else {
                info!(
                    items = c.items.len(),
                    cancelled = c.cancelled,
                    prompt_tokens_left = c.prompt_cut.unwrap_or(0),
                    "completion done"
                );
            }
            c
        }
        Ok(Err(e)) => {
            error!(error = %e, "completion failed");
            Completion {
                failed: true,
                ..Completion::default()
            }
        }
        Err(_) => {
            error!("engine panicked during completion");
            Completion {
                failed: true,
                ..Completion::default()
            }
        }
    }
}

fn run_remote_job(remote: &mut RemoteModel, job: &Job) -> Completion {
    let span = info_span!("completion", id = %job.id, remote = true);
    let _enter = span.enter();
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
        run_remote_completion(remote, &job.input, &job.config, &job.cancel)
    }));
    match result {
        Ok(Ok(c)) => {
            info!(
                items = c.items.len(),
                cancelled = c.cancelled,
                speculative = job.speculative,
                reused = c.stats.reused,
                evaluated = c.stats.evaluated,
                generated = c.stats.generated,
                total_ms = c.total_ms.round() as u64,
                "completion done"
            );
            c
        }
        // The remote being down is said once, by its event; each request need not repeat it.
        Ok(Err(e)) if remote.is_down() => {
            debug!(error = %crate::report::describe(&e, ": "), "remote completion failed");
            Completion {
                failed: true,
                ..Completion::default()
            }
        }
        Ok(Err(e)) => {
            warn!(error = %crate::report::describe(&e, ": "), "remote completion failed");
            Completion {
                failed: true,
                ..Completion::default()
            }
        }
        Err(_) => {
            error!("panicked during a remote completion");
            Completion {
                failed: true,
                ..Completion::default()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::completion::model::test_support::tiny_model_path;
    use crate::completion::model::PROMPT_BATCH_TOKENS;
    use crate::completion::pipeline::ProjectContext;

    /// A job completing `text` at its end under `config`.
    fn job(text: &str, config: &Arc<Config>, id: &str, speculative: bool) -> Job {
        let rope = ropey::Rope::from_str(text);
        let input = CompletionInput::at_cursor(
            &rope,
            rope.len_chars(),
            config,
            None,
            (None, None),
            1,
            &ProjectContext::NONE,
        );
        Job {
            input,
            config: config.clone(),
            cancel: CancelFlag::new(),
            id: id.to_owned(),
            speculative,
        }
    }

    fn loaded_worker() -> (Worker, oneshot::Receiver<Result<String, ModelError>>) {
        let worker = Worker::spawn().unwrap();
        let loaded = worker.load(LoadParams {
            path: tiny_model_path().to_owned(),
            threads: 1,
            context_size: 4096,
            batch_tokens: PROMPT_BATCH_TOKENS,
            cache_reuse_tokens: Config::default().cache_reuse_tokens,
        });
        (worker, loaded)
    }

    #[test]
    fn a_request_or_a_newer_prefetch_cancels_a_queued_prefetch_and_a_lone_one_completes() {
        // Thousands of tokens, no line or time limit: a prefetch like this would hold the worker.
        let long = Arc::new(Config {
            max_tokens: 3000,
            max_lines: 100_000,
            timeout_ms: 600_000,
            context_size: 4096,
            ..Config::default()
        });
        let short = Arc::new(Config {
            max_tokens: 4,
            ..Config::default()
        });
        // Queued behind the load, so none has started when the next message is sent.
        let (worker, loaded) = loaded_worker();
        let first = worker.submit_speculative(job("x = 1\n", &long, "s1", true));
        let second = worker.submit_speculative(job("y = 2\n", &long, "s2", true));
        let request = worker.submit(job("def f(a):\n    ", &short, "r", false));
        loaded.blocking_recv().unwrap().unwrap();
        assert!(
            first.blocking_recv().unwrap().cancelled,
            "a newer prefetch cancels it"
        );
        assert!(
            second.blocking_recv().unwrap().cancelled,
            "a request cancels it"
        );
        let answered = request.blocking_recv().unwrap();
        assert!(!answered.cancelled);

        // With nothing after it, a prefetch runs like a request and gives the same suggestion.
        let alone = worker.submit_speculative(job("def f(a):\n    ", &short, "s3", true));
        let prefetched = alone.blocking_recv().unwrap();
        assert!(!prefetched.cancelled);
        assert_eq!(prefetched.items, answered.items);

        // A prefetch of another prompt runs on the spare session: the main session keeps the
        // request's prompt, so asking again evaluates at most its last token.
        let other = worker.submit_speculative(job("class Other:\n    pass\n", &short, "s4", true));
        assert!(!other.blocking_recv().unwrap().cancelled);
        let again = worker
            .submit(job("def f(a):\n    ", &short, "r2", false))
            .blocking_recv()
            .unwrap();
        assert!(again.stats.evaluated <= 1, "{:?}", again.stats);
        assert_eq!(again.items, answered.items);
    }
}
