//! The model worker: one thread owns the engine and its warm session; jobs arrive over a channel.
//!
//! [`run_completion`] is the whole completion path after the document snapshot — prompt, feed,
//! generation under the stop rules — shared by the language server and `lmrs complete`. Every job
//! gets a reply: an empty one when it was cancelled or superseded before or while it ran, when no
//! model is loaded, or when the engine failed (even by panicking).

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ropey::Rope;
use tokio::sync::oneshot;
use tracing::{debug, error, info, info_span};

use super::config::Config;
use super::engine::{
    self, Cancel, CompletionEngine, EngineError, GenRequest, GenStats, LoadParams, TokenId,
};
use super::generation::{branch_point, Generated, Step, StopContext, StopRules};
use super::prompt::{build_prompt, PromptInput, PromptParams};
use super::retrieval::{similar_snippet, Snippet, SnippetParams};

/// Characters of text the prompt builder may look at per prompt token of budget.
const CHARS_PER_TOKEN_WINDOW: usize = 8;

/// The text around the cursor, copied out of the document.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CursorContext {
    /// From the start of line `prefix_first_line` to the cursor.
    pub prefix: String,
    /// Absolute line number of the first line of `prefix`.
    pub prefix_first_line: usize,
    /// From the cursor on.
    pub suffix: String,
}

impl CursorContext {
    /// Copies the windows the prompt needs (line-aligned prefix start) out of a rope.
    pub fn extract(rope: &Rope, cursor: usize, prefix_tokens: usize, suffix_tokens: usize) -> Self {
        let cursor = cursor.min(rope.len_chars());
        let cursor_line = rope.char_to_line(cursor);
        let start = cursor.saturating_sub(prefix_tokens.saturating_mul(CHARS_PER_TOKEN_WINDOW));
        let mut first_line = rope.char_to_line(start);
        if rope.line_to_char(first_line) < start && first_line < cursor_line {
            first_line += 1;
        }
        let mut end = cursor
            .saturating_add(suffix_tokens.saturating_mul(CHARS_PER_TOKEN_WINDOW))
            .min(rope.len_chars());
        if end < rope.len_chars() {
            // Cut at a line start (but keep the cursor line), so the suffix window does not move
            // with the cursor while typing: the prompt keeps its KV-cached prefix.
            let end_line = rope.char_to_line(end);
            end = if end_line > cursor_line {
                rope.line_to_char(end_line)
            } else {
                rope.line_to_char((cursor_line + 1).min(rope.len_lines()))
                    .min(rope.len_chars())
            };
        }
        Self {
            prefix: rope
                .slice(rope.line_to_char(first_line)..cursor)
                .to_string(),
            prefix_first_line: first_line,
            suffix: rope.slice(cursor..end).to_string(),
        }
    }

    /// Absolute lines this context covers (the most the prompt can show), end exclusive.
    pub fn lines(&self) -> std::ops::Range<usize> {
        let before = self.prefix.matches('\n').count();
        let after = self.suffix.matches('\n').count();
        self.prefix_first_line..self.prefix_first_line + before + after + 1
    }

    /// The cursor line up to the cursor.
    pub fn line_before_cursor(&self) -> &str {
        self.prefix.rsplit('\n').next().unwrap_or("")
    }
}

/// Similar code from elsewhere in the document for a completion at `cursor` (see
/// [`super::retrieval`]), or `None` when `snippet_tokens` is 0 or nothing is similar enough;
/// `previous` is the first line of the snippet of the document's previous request.
///
/// The query and the lines left out (those the prompt may already show) depend on the cursor's
/// line only, not its column: typing on a line keeps the snippet, so the prompt keeps its start
/// and the KV cache stays valid.
pub fn snippet_for_cursor(
    rope: &Rope,
    cursor: usize,
    prefix_tokens: usize,
    suffix_tokens: usize,
    snippet_tokens: usize,
    previous: Option<usize>,
) -> Option<Snippet> {
    if snippet_tokens == 0 {
        return None;
    }
    let cursor_line = rope.char_to_line(cursor.min(rope.len_chars()));
    let line_start = rope.line_to_char(cursor_line);
    let shown = CursorContext::extract(rope, line_start, prefix_tokens, suffix_tokens).lines();
    let params = SnippetParams::default();
    let snippet = similar_snippet(rope, cursor_line, shown, previous, &params)?;
    debug!(
        first_line = snippet.first_line,
        similarity = snippet.similarity,
        "snippet"
    );
    Some(snippet)
}

/// Everything one completion needs besides the engine.
#[derive(Clone, Debug)]
pub struct JobInput {
    /// Text around the cursor.
    pub ctx: CursorContext,
    /// Workspace folder name (repo-level prompt header).
    pub repo_name: Option<String>,
    /// File path relative to the workspace folder.
    pub rel_path: Option<String>,
    /// Number of suggestions wanted (1 unless explicitly invoked).
    pub alternatives: usize,
    /// Similar code from elsewhere in the document, for the prompt.
    pub snippet: Option<String>,
}

/// The result of one completion.
#[derive(Clone, Debug, Default)]
pub struct Completion {
    /// Suggestions, best first, non-empty and distinct.
    pub items: Vec<String>,
    /// Engine statistics, summed over alternatives.
    pub stats: GenStats,
    /// Prompt length in tokens.
    pub prompt_tokens: usize,
    /// Whether cancellation cut the work short.
    pub cancelled: bool,
    /// Wall time of the whole completion in milliseconds.
    pub total_ms: f64,
}

/// Builds the prompt, runs the engine and applies the stop rules.
pub fn run_completion(
    engine: &mut dyn CompletionEngine,
    input: &JobInput,
    cfg: &Config,
    cancel: &Cancel,
) -> Result<Completion, EngineError> {
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_millis(cfg.timeout_ms);
    let (prefix_tokens, suffix_tokens) = cfg.budgets();
    let prompt_input = PromptInput {
        prefix: &input.ctx.prefix,
        prefix_first_line: input.ctx.prefix_first_line,
        suffix: &input.ctx.suffix,
        repo_name: input.repo_name.as_deref().filter(|_| cfg.repo_header),
        file_path: input.rel_path.as_deref().filter(|_| cfg.repo_header),
        snippet: input.snippet.as_deref(),
    };
    let params = PromptParams {
        prefix_tokens,
        suffix_tokens,
        order: cfg.fim_order,
        block_lines: cfg.block_lines,
        snippet_tokens: cfg.snippet_tokens,
    };
    let prompt = build_prompt(&prompt_input, engine.fim_support(), &params, &|t| {
        engine.count(t)
    });
    debug!(prompt = %prompt.render(), "prompt");
    let tokens = engine.segments_to_tokens(&prompt.segments);
    let stop_ctx = StopContext::new(
        input.ctx.line_before_cursor(),
        &input.ctx.suffix,
        cfg.multiline,
        cfg.max_lines,
    );
    let mut out = Completion {
        prompt_tokens: tokens.len(),
        ..Completion::default()
    };
    for k in 0..input.alternatives.max(1) {
        if cancel.is_cancelled() || (k > 0 && Instant::now() >= deadline) {
            break;
        }
        let (temperature, seed) = if k == 0 {
            (cfg.temperature, 0)
        } else {
            (cfg.temperature.max(0.8), k as u64)
        };
        let req = GenRequest {
            prompt: &tokens,
            max_tokens: cfg.max_tokens,
            temperature,
            seed,
            required_prefix: &prompt.heal,
            time_budget: deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(cfg.timeout_ms / 2)),
        };
        let mut rules = StopRules::new(stop_ctx.clone(), &prompt.heal);
        let mut generated: Vec<Generated> = Vec::new();
        let stats = engine.generate(&req, cancel, &mut |token| {
            tracing::trace!(piece = token.text, "piece");
            generated.push(Generated::from(token));
            rules.push(token.text)
        })?;
        out.stats.reused += stats.reused;
        out.stats.add_work(&stats);
        debug!(
            generated = ?rules.text(),
            diverged = rules.diverged(),
            budget_cut = stats.budget_cut,
            "generation"
        );
        let repeated_first_line = rules.repeated_first_line();
        let mut text = rules.finish(stats.budget_cut);
        if text.is_empty() && repeated_first_line && !cancel.is_cancelled() {
            // The second generation gets what the first left of the time budget (at least a
            // quarter of the request budget), so a request costs at most about one budget more.
            let used = Duration::from_secs_f64(stats.gen_ms.max(0.0) / 1e3);
            let time_budget = req
                .time_budget
                .saturating_sub(used)
                .max(Duration::from_millis(cfg.timeout_ms / 4));
            let branch = Branch {
                prompt: &tokens,
                generated: &generated,
                stop_ctx: &stop_ctx,
                heal: &prompt.heal,
                request: &GenRequest {
                    time_budget,
                    ..req.clone()
                },
            };
            text = branch_away_from_repeat(engine, &branch, cancel, &mut out.stats)?;
        }
        if !text.is_empty() && !out.items.contains(&text) {
            out.items.push(text);
        }
    }
    out.cancelled = cancel.is_cancelled();
    if out.cancelled {
        out.items.clear();
    }
    out.total_ms = t0.elapsed().as_secs_f64() * 1e3;
    Ok(out)
}

/// A generation whose first line only repeated the next line.
struct Branch<'a> {
    /// The prompt it followed.
    prompt: &'a [TokenId],
    /// What it generated.
    generated: &'a [Generated],
    /// Its stop rules' context.
    stop_ctx: &'a StopContext,
    /// The healed text it had to start with.
    heal: &'a str,
    /// Its request (sampling, token budget) with the time budget left for the second generation.
    request: &'a GenRequest<'a>,
}

/// Generates again from the [`branch_point`] of a first line that only repeated the next line:
/// the tokens before it, then its runner-up, then on under fresh stop rules. The KV cache still
/// holds the prompt and the first generation, so this costs one evaluated token plus the new
/// tokens. Empty when no runner-up is likely enough.
fn branch_away_from_repeat(
    engine: &mut dyn CompletionEngine,
    branch: &Branch<'_>,
    cancel: &Cancel,
    stats: &mut GenStats,
) -> Result<String, EngineError> {
    let Some(at) = branch_point(branch.generated, branch.heal, branch.stop_ctx) else {
        return Ok(String::new());
    };
    let Some(alternative) = branch.generated[at].runner_up.as_ref() else {
        return Ok(String::new());
    };
    let mut rules = StopRules::new(branch.stop_ctx.clone(), branch.heal);
    let mut prompt = branch.prompt.to_vec();
    let forced = branch.generated[..at]
        .iter()
        .map(|token| (token.id, token.text.as_str()))
        .chain(std::iter::once((alternative.id, alternative.text.as_str())));
    for (id, text) in forced {
        prompt.push(id);
        if rules.push(text) == Step::Stop {
            return Ok(rules.finish(false));
        }
    }
    let max_tokens = branch.request.max_tokens.saturating_sub(at + 1);
    if max_tokens == 0 {
        return Ok(rules.finish(true));
    }
    let heal_left = rules.pending_heal().to_owned();
    let request = GenRequest {
        prompt: &prompt,
        max_tokens,
        required_prefix: &heal_left,
        ..branch.request.clone()
    };
    let branch_stats = engine.generate(&request, cancel, &mut |token| rules.push(token.text))?;
    stats.add_work(&branch_stats);
    debug!(
        at,
        gap = alternative.gap,
        generated = ?rules.text(),
        "branched away from a repeated line"
    );
    Ok(rules.finish(branch_stats.budget_cut))
}

/// A queued completion.
pub struct Job {
    /// What to complete.
    pub input: JobInput,
    /// The configuration in force when the request arrived.
    pub config: Arc<Config>,
    /// Set when the request is cancelled or superseded.
    pub cancel: Cancel,
    /// Where the answer goes.
    pub reply: oneshot::Sender<Completion>,
    /// Request id for logs.
    pub id: String,
}

enum Msg {
    Load(LoadParams, oneshot::Sender<Result<String, EngineError>>),
    Job(Job),
}

/// Handle to the worker thread.
#[derive(Clone)]
pub struct Worker {
    tx: mpsc::Sender<Msg>,
}

impl Worker {
    /// Starts the worker thread.
    pub fn spawn() -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("lmrs-model".into())
            .spawn(move || worker_loop(rx))?;
        Ok(Self { tx })
    }

    /// Loads (or replaces) the model; the answer is its description.
    pub fn load(&self, params: LoadParams) -> oneshot::Receiver<Result<String, EngineError>> {
        let (tx, rx) = oneshot::channel();
        let _ = self.tx.send(Msg::Load(params, tx));
        rx
    }

    /// Queues a job; the receiver always resolves (to an empty completion if all else fails).
    pub fn submit(&self, job: Job) -> oneshot::Receiver<Completion> {
        let (tx, rx) = oneshot::channel();
        let job = Job { reply: tx, ..job };
        if let Err(mpsc::SendError(Msg::Job(job))) = self.tx.send(Msg::Job(job)) {
            let _ = job.reply.send(Completion::default());
        }
        rx
    }
}

fn worker_loop(rx: mpsc::Receiver<Msg>) {
    let mut engine: Option<Box<dyn CompletionEngine>> = None;
    while let Ok(msg) = rx.recv() {
        match msg {
            Msg::Load(params, reply) => {
                engine = None; // free the old model first
                let t0 = Instant::now();
                let result =
                    std::panic::catch_unwind(|| engine::load(&params)).unwrap_or_else(|_| {
                        Err(EngineError::Load {
                            path: params.path.display().to_string(),
                            message: "engine panicked".into(),
                        })
                    });
                let answer = result.map(|e| {
                    let d = e.describe();
                    info!(model = %d, ms = t0.elapsed().as_millis() as u64, "model loaded");
                    engine = Some(e);
                    d
                });
                let _ = reply.send(answer);
            }
            Msg::Job(job) => {
                let completion = match engine.as_deref_mut() {
                    _ if job.cancel.is_cancelled() => Completion {
                        cancelled: true,
                        ..Completion::default()
                    },
                    None => Completion::default(),
                    Some(e) => run_job(e, &job),
                };
                let _ = job.reply.send(completion);
            }
        }
    }
}

fn run_job(engine: &mut dyn CompletionEngine, job: &Job) -> Completion {
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
        run_completion(engine, &job.input, &job.config, &job.cancel)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lsp::engine::LoadParams;

    /// The real engine on a tiny random-weight Qwen2 model (written once per test process).
    fn tiny_engine() -> Box<dyn CompletionEngine> {
        static PATH: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
        let path = PATH.get_or_init(|| {
            let p =
                std::env::temp_dir().join(format!("lmrs-worker-tiny-{}.gguf", std::process::id()));
            lmrs_fixtures::tiny::write_tiny_model(&p, lmrs_fixtures::tiny::TinyArch::Qwen2, 7)
                .unwrap();
            p
        });
        engine::load(&LoadParams {
            path: path.clone(),
            threads: 1,
            context_size: 1024,
        })
        .unwrap()
    }

    #[test]
    fn a_repeated_first_line_is_generated_again_from_its_runner_up() {
        let mut engine = tiny_engine();
        let prompt = engine.encode("def main():\n    x = 1\n   ");
        let request = GenRequest {
            prompt: &prompt,
            max_tokens: 6,
            temperature: 0.0,
            seed: 0,
            required_prefix: " ",
            time_budget: Duration::from_secs(60),
        };
        // The first generation wrote " print(x)\n", the line below the cursor; at "(x" the model's
        // second choice was "(y".
        let stop_ctx = StopContext::new("    ", "\n    print(x)\n", true, 8);
        let token = |text: &str, runner_up: Option<(&str, f32)>| Generated {
            id: engine.encode(text)[0],
            text: text.to_owned(),
            runner_up: runner_up.map(|(text, gap)| crate::lsp::engine::Alternative {
                id: engine.encode(text)[0],
                text: text.to_owned(),
                gap,
            }),
        };
        let generated = vec![
            token(" print", Some((" return", 2.0))),
            token("(x", Some(("(y", 0.5))),
            token(")\n", None),
        ];
        let unlikely = vec![
            token(" print", Some((" return", 2.0))),
            token("(x", Some(("(y", 1.5))),
            token(")\n", None),
        ];
        // Warm the cache with the prompt, as the first generation does.
        engine
            .generate(&request, &Cancel::new(), &mut |_| Step::Stop)
            .unwrap();
        let branch = Branch {
            prompt: &prompt,
            generated: &generated,
            stop_ctx: &stop_ctx,
            heal: " ",
            request: &request,
        };
        let mut stats = GenStats::default();
        let text =
            branch_away_from_repeat(engine.as_mut(), &branch, &Cancel::new(), &mut stats).unwrap();
        assert!(text.starts_with("print(y"), "{text:?}");
        assert_eq!(
            stats.evaluated, 2,
            "the prompt stays cached; \" print\" and \"(y\" are new: {stats:?}"
        );
        assert!(
            stats.generated <= 4,
            "{stats:?}: the token budget counts the forced tokens"
        );
        // Without a likely runner-up there is nothing to show.
        let branch = Branch {
            generated: &unlikely,
            ..branch
        };
        let text =
            branch_away_from_repeat(engine.as_mut(), &branch, &Cancel::new(), &mut stats).unwrap();
        assert_eq!(text, "");
    }

    #[test]
    fn extract_is_line_aligned_and_bounded() {
        let rope = Rope::from_str("aaaa\nbbbb\ncccc\ndd|dd\neeee\n");
        let cursor = rope.to_string().find('|').unwrap();
        let ctx = CursorContext::extract(&rope, cursor, 1, 1);
        assert_eq!(ctx.prefix, "cccc\ndd");
        assert_eq!(ctx.prefix_first_line, 2);
        assert_eq!(
            ctx.suffix, "|dd\n",
            "the suffix window ends at a line start"
        );
        assert_eq!(ctx.line_before_cursor(), "dd");
        let ctx = CursorContext::extract(&rope, cursor, 1, 0);
        assert_eq!(ctx.suffix, "|dd\n", "the cursor line is always whole");
        let all = CursorContext::extract(&rope, 999, 1000, 1000);
        assert_eq!(all.prefix_first_line, 0);
        assert_eq!(all.suffix, "");
    }

    #[test]
    fn typing_within_a_line_reuses_the_kv_prefix() {
        let mut engine = tiny_engine();
        let cfg = Config {
            max_tokens: 8,
            ..Config::default()
        };
        let mut run = |text: &str| {
            let (before, after) = text.split_once("$0").unwrap();
            let rope = Rope::from_str(&format!("{before}{after}"));
            let input = JobInput {
                ctx: CursorContext::extract(&rope, before.chars().count(), 768, 256),
                repo_name: None,
                rel_path: None,
                alternatives: 1,
                snippet: None,
            };
            run_completion(engine.as_mut(), &input, &cfg, &Cancel::new()).unwrap()
        };
        let body = "def add(a, b):\n    return a + b\n\n\ndef main():\n    x = 1\n";
        let a = run(&format!("{body}    total = add(x, $0)\n    print(total)\n"));
        assert!(a.stats.evaluated > 20, "{:?}", a.stats);
        let b = run(&format!(
            "{body}    total = add(x, 2$0)\n    print(total)\n"
        ));
        assert!(
            b.stats.evaluated <= 3,
            "typing re-evaluates only the tail: {:?}",
            b.stats
        );
        assert!(b.stats.reused + 3 >= a.prompt_tokens, "{:?}", b.stats);
    }

    #[test]
    fn snippet_depends_on_the_cursor_line_not_its_column() {
        let mut text = String::new();
        for i in 0..40 {
            text.push_str(&format!(
                "#[test]\nfn test_{i}() {{\n    let seed = u64::from_le_bytes(*b\"testseed\");\n    check_all_{i}(seed);\n}}\n"
            ));
            text.push_str(&format!(
                "fn helper_{i}(x: u32) -> u32 {{\n    x + {i}\n}}\n"
            ));
        }
        text.push_str("#[test]\nfn test_last() {\n    let seed = u64::from_le_bytes(*b\"testseed\");\n    check\n");
        let rope = Rope::from_str(&text);
        let line = rope.len_lines() - 2; // "    check"
        let at =
            |col: usize| snippet_for_cursor(&rope, rope.line_to_char(line) + col, 64, 16, 64, None);
        let snippet = at(4).expect("similar tests exist far above");
        assert!(snippet.text.contains("testseed"), "{}", snippet.text);
        assert_eq!(
            at(9),
            Some(snippet.clone()),
            "typing on the line keeps the snippet"
        );
        assert_eq!(
            snippet_for_cursor(&rope, rope.line_to_char(line) + 4, 64, 16, 0, None),
            None
        );
    }

    #[test]
    fn cancelled_completion_is_empty() {
        let mut engine = tiny_engine();
        let cancel = Cancel::new();
        cancel.cancel();
        let input = JobInput {
            ctx: CursorContext {
                prefix: "def f():\n    ".into(),
                ..CursorContext::default()
            },
            repo_name: None,
            rel_path: None,
            alternatives: 3,
            snippet: None,
        };
        let c = run_completion(engine.as_mut(), &input, &Config::default(), &cancel).unwrap();
        assert!(c.items.is_empty());
        assert!(c.cancelled);
    }
}
