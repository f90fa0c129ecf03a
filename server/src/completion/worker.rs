//! The model worker: one thread owns the model and its warm session; jobs arrive over a channel.
//!
//! Every job gets a reply: an empty one when it was cancelled or superseded before or while it ran,
//! when no model is loaded, or when the engine failed (even by panicking).

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;

use lmrs::CancelFlag;
use tokio::sync::oneshot;
use tracing::{error, info, info_span};

use super::model::{CompletionModel, LoadParams, ModelError};
use super::pipeline::{run_completion, Completion, CompletionInput};
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
}

enum Msg {
    Load(LoadParams, oneshot::Sender<Result<String, ModelError>>),
    Job(Job, oneshot::Sender<Completion>),
}

/// Handle to the worker thread.
#[derive(Clone)]
pub(crate) struct Worker {
    tx: mpsc::Sender<Msg>,
}

impl Worker {
    /// Starts the worker thread.
    pub(crate) fn spawn() -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("lmrs-model".into())
            .spawn(move || worker_loop(rx))?;
        Ok(Self { tx })
    }

    /// Loads (or replaces) the model; the answer is its description.
    pub(crate) fn load(&self, params: LoadParams) -> oneshot::Receiver<Result<String, ModelError>> {
        let (tx, rx) = oneshot::channel();
        let _ = self.tx.send(Msg::Load(params, tx));
        rx
    }

    /// Queues a job; the receiver always resolves (to an empty completion if all else fails).
    pub(crate) fn submit(&self, job: Job) -> oneshot::Receiver<Completion> {
        let (tx, rx) = oneshot::channel();
        if let Err(mpsc::SendError(Msg::Job(_, reply))) = self.tx.send(Msg::Job(job, tx)) {
            let _ = reply.send(Completion::default());
        }
        rx
    }
}

fn worker_loop(rx: mpsc::Receiver<Msg>) {
    let mut model: Option<CompletionModel> = None;
    while let Ok(msg) = rx.recv() {
        match msg {
            Msg::Load(params, reply) => {
                model = None; // free the old model first
                let t0 = Instant::now();
                let result = std::panic::catch_unwind(|| CompletionModel::load(&params))
                    .unwrap_or_else(|_| Err(ModelError::Panicked(params.path.clone())));
                let answer = result.map(|m| {
                    let d = m.describe();
                    info!(model = %d, ms = t0.elapsed().as_millis() as u64, "model loaded");
                    model = Some(m);
                    d
                });
                let _ = reply.send(answer);
            }
            Msg::Job(job, reply) => {
                let completion = match model.as_mut() {
                    _ if job.cancel.is_cancelled() => Completion {
                        cancelled: true,
                        ..Completion::default()
                    },
                    None => Completion::default(),
                    Some(m) => run_job(m, &job),
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
        evaluated = tracing::field::Empty,
        generated = tracing::field::Empty,
        prompt_ms = tracing::field::Empty,
        gen_ms = tracing::field::Empty,
        total_ms = tracing::field::Empty,
    );
    let _enter = span.enter();
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
        run_completion(model, &job.input, &job.config, &job.cancel)
    }));
    match result {
        Ok(Ok(c)) => {
            span.record("reused", c.stats.reused);
            span.record("evaluated", c.stats.evaluated);
            span.record("generated", c.stats.generated);
            span.record("prompt_ms", c.stats.prompt_ms.round() as u64);
            span.record("gen_ms", c.stats.gen_ms.round() as u64);
            span.record("total_ms", c.total_ms.round() as u64);
            info!(
                items = c.items.len(),
                cancelled = c.cancelled,
                "completion done"
            );
            c
        }
        Ok(Err(e)) => {
            error!(error = %e, "completion failed");
            Completion::default()
        }
        Err(_) => {
            error!("engine panicked during completion");
            Completion::default()
        }
    }
}
