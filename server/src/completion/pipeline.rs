//! The completion path after the document snapshot — prompt, feed, generation under the stop
//! rules — shared by the language server and `lmrs complete`.

use std::time::{Duration, Instant};

use lmrs::{CancelFlag, InferError, InferenceStats, TokenId};
use ropey::Rope;
use tracing::debug;

use super::context::{snippet_for_cursor, CursorContext};
use super::cross_file::{rank_context, similar_code, ContextChunk, Provided};
use super::model::{CompletionModel, GenRequest};
use super::prompt::{build_prompt, BuiltPrompt, FimSupport, PromptInput, PromptParams, Segment};
use super::remote::{RemoteError, RemoteModel, RemoteRequest};
use super::retrieval::Snippet;
use super::stop_rules::{branch_point, Generated, StopContext, StopRules};
use crate::config::Config;

/// Where a completion's project context comes from.
pub(crate) struct ProjectContext<'a> {
    /// The definitions of a name in the project's other files.
    pub(crate) lookup: &'a dyn Fn(&str) -> Vec<Provided>,
    /// The other open documents (path in the workspace folder, text), searched for similar code.
    pub(crate) others: &'a [(String, std::sync::Arc<str>)],
    /// The lines around recent edits in other documents, newest first.
    pub(crate) recent_edits: &'a [ContextChunk],
}

impl ProjectContext<'_> {
    /// No project context.
    #[cfg(test)]
    pub(crate) const NONE: ProjectContext<'static> = ProjectContext {
        lookup: &|_| Vec::new(),
        others: &[],
        recent_edits: &[],
    };
}

/// Everything one completion needs besides the model.
#[derive(Clone, Debug)]
pub(crate) struct CompletionInput {
    /// Text around the cursor.
    pub(crate) ctx: CursorContext,
    /// Workspace folder name (repo-level prompt header).
    pub(crate) repo_name: Option<String>,
    /// File path relative to the workspace folder.
    pub(crate) rel_path: Option<String>,
    /// Number of suggestions wanted (1 unless explicitly invoked).
    pub(crate) alternatives: usize,
    /// Similar code from elsewhere in the document, for the prompt.
    pub(crate) snippet: Option<Snippet>,
    /// Definitions from other files of the project, best first (see [`super::cross_file`]).
    pub(crate) context: Vec<ContextChunk>,
}

impl CompletionInput {
    /// Copies what a completion at `cursor` needs out of the document: the text around the cursor
    /// and, when `cfg` asks for it, similar code from elsewhere (`previous_snippet` is the first
    /// line of the snippet of the document's previous request). `workspace` is the workspace
    /// folder's name and the file's path inside it, when known; `project` looks up the
    /// definitions of a name in the project's other files and the other open documents, searched
    /// for code like the lines above the cursor (context is only gathered for a file with a path
    /// in a workspace folder, and when `cfg.context_tokens` is not 0).
    pub(crate) fn at_cursor(
        rope: &Rope,
        cursor: usize,
        cfg: &Config,
        previous_snippet: Option<usize>,
        workspace: (Option<String>, Option<String>),
        alternatives: usize,
        project: &ProjectContext<'_>,
    ) -> Self {
        let (prefix_tokens, suffix_tokens) = cfg.budgets();
        let (repo_name, rel_path) = workspace;
        let context = match &rel_path {
            Some(path) if cfg.context_tokens > 0 => {
                let cursor_line = rope.char_to_line(cursor.min(rope.len_chars()));
                let document = rope.to_string();
                // Definitions of the names around the cursor first, then similar code elsewhere,
                // then what was edited lately in other files.
                let mut chunks = rank_context(&document, path, cursor_line, project.lookup);
                chunks.extend(similar_code(&document, cursor_line, project.others));
                for edit in project.recent_edits {
                    let shown = chunks.iter().any(|c| {
                        c.path == edit.path
                            && c.line < edit.line + edit.text.lines().count()
                            && edit.line < c.line + c.text.lines().count()
                    });
                    if !shown {
                        chunks.push(edit.clone());
                    }
                }
                for chunk in &chunks {
                    debug!(name = %chunk.name, path = %chunk.path, line = chunk.line, "context candidate");
                }
                chunks
            }
            _ => Vec::new(),
        };
        Self {
            context,
            ctx: CursorContext::extract(rope, cursor, prefix_tokens, suffix_tokens),
            repo_name,
            rel_path,
            alternatives,
            snippet: snippet_for_cursor(
                rope,
                cursor,
                prefix_tokens,
                suffix_tokens,
                cfg.snippet_tokens,
                previous_snippet,
            ),
        }
    }
}

/// What one completion cost, summed over its generations.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct CompletionStats {
    /// Prompt tokens found in the KV cache, summed over the alternatives (not a branch's: those
    /// are the request's own tokens).
    pub(crate) reused: usize,
    /// Of the reused tokens, those whose cache entries moved to a new position (the prompt
    /// changed before them).
    pub(crate) moved: usize,
    /// Prompt tokens evaluated.
    pub(crate) evaluated: usize,
    /// Tokens generated.
    pub(crate) generated: usize,
    /// Milliseconds spent on prompts.
    pub(crate) prompt_ms: f64,
    /// Milliseconds spent generating.
    pub(crate) gen_ms: f64,
}

impl CompletionStats {
    /// Adds the work of a generation of the request (tokens evaluated and generated,
    /// milliseconds). Its reused tokens are left out: after the first generation they are the
    /// request's own earlier tokens.
    fn add_work(&mut self, generation: &InferenceStats) {
        self.evaluated += generation.prompt.evaluated;
        self.generated += generation.generated;
        self.prompt_ms += generation.prompt.millis;
        self.gen_ms += generation.generation_millis;
    }
}

/// The result of one completion.
#[derive(Clone, Debug, Default)]
pub(crate) struct Completion {
    /// Suggestions, best first, non-empty and distinct.
    pub(crate) items: Vec<String>,
    /// Engine statistics, summed over alternatives.
    pub(crate) stats: CompletionStats,
    /// Prompt length in tokens.
    pub(crate) prompt_tokens: usize,
    /// Whether cancellation cut the work short.
    pub(crate) cancelled: bool,
    /// The engine failed (or a remote engine is down), so the empty answer says nothing about
    /// the text: it is not cached.
    pub(crate) failed: bool,
    /// The prompt's deadline stopped its evaluation with this many tokens left (so there is no
    /// suggestion).
    pub(crate) prompt_cut: Option<usize>,
    /// Wall time of the whole completion in milliseconds.
    pub(crate) total_ms: f64,
}

/// The prompt of a completion of `input` for a model with the FIM features `fim`, whose tokens
/// `count` counts.
fn build_for(
    input: &CompletionInput,
    cfg: &Config,
    fim: FimSupport,
    count: &dyn Fn(&str) -> usize,
) -> BuiltPrompt {
    let (prefix_tokens, suffix_tokens) = cfg.budgets();
    // The repository format labels other files' chunks with paths, so context brings it along.
    let show_repo = cfg.repo_header || (cfg.context_tokens > 0 && !input.context.is_empty());
    let prompt_input = PromptInput {
        prefix: &input.ctx.prefix,
        prefix_first_line: input.ctx.prefix_first_line,
        suffix: &input.ctx.suffix,
        repo_name: input.repo_name.as_deref().filter(|_| show_repo),
        file_path: input.rel_path.as_deref().filter(|_| show_repo),
        snippet: input.snippet.as_ref().map(|s| s.text.as_str()),
        context: &input.context,
    };
    let params = PromptParams {
        prefix_tokens,
        suffix_tokens,
        order: cfg.fim_order,
        block_lines: cfg.block_lines,
        snippet_tokens: cfg.snippet_tokens,
        context_tokens: cfg.context_tokens,
    };
    build_prompt(&prompt_input, fim, &params, count)
}

/// The prompt of a completion of `input` and its tokens.
fn prompt_for(
    model: &CompletionModel,
    input: &CompletionInput,
    cfg: &Config,
) -> (BuiltPrompt, Vec<TokenId>) {
    let prompt = build_for(input, cfg, model.fim_support(), &|t| model.count(t));
    debug!(prompt = %prompt.render(), "prompt");
    let tokens = model.segments_to_tokens(&prompt.segments);
    (prompt, tokens)
}

/// Builds the prompt a completion of `input` would evaluate and leaves it to the model to
/// evaluate while no request waits (a prefill: the request expected next finds it cached).
pub(crate) fn prefill_prompt(model: &mut CompletionModel, input: &CompletionInput, cfg: &Config) {
    let (_, tokens) = prompt_for(model, input, cfg);
    debug!(tokens = tokens.len(), "prefill queued");
    model.prefill_later(&tokens, cfg.max_tokens);
}

/// Builds the prompt, runs the model and applies the stop rules. A cancelled completion is empty.
pub(crate) fn run_completion(
    model: &mut CompletionModel,
    input: &CompletionInput,
    cfg: &Config,
    cancel: &CancelFlag,
) -> Result<Completion, InferError> {
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_millis(cfg.timeout_ms);
    let (prompt, tokens) = prompt_for(model, input, cfg);
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
        // An empty prompt (no FIM tokens, nothing before the cursor) has nothing to continue.
        if tokens.is_empty() || cancel.is_cancelled() || (k > 0 && Instant::now() >= deadline) {
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
            prompt_deadline: (cfg.prompt_timeout_ms > 0)
                .then(|| t0 + Duration::from_millis(cfg.prompt_timeout_ms)),
        };
        let mut rules = StopRules::new(stop_ctx.clone(), &prompt.heal);
        let mut generated: Vec<Generated> = Vec::new();
        let generation = model.generate(&req, cancel, |token, runner_up| {
            tracing::trace!(piece = token.text, "piece");
            generated.push(Generated::new(token, runner_up));
            rules.push(token.text)
        });
        let generation = match generation {
            Err(InferError::Cancelled) => break,
            Err(InferError::PromptDeadline {
                n_tokens,
                remaining,
            }) => {
                // No suggestion this time; the worker finishes the prompt before the next request.
                debug!(n_tokens, remaining, "prompt cut by its deadline");
                out.prompt_cut = Some(remaining);
                break;
            }
            result => result?,
        };
        out.stats.reused += generation.stats.prompt.reused;
        out.stats.moved += generation.stats.prompt.moved;
        out.stats.add_work(&generation.stats);
        debug!(
            generated = ?rules.text(),
            diverged = rules.diverged(),
            budget_cut = generation.budget_cut(),
            "generation"
        );
        let repeated_first_line = rules.repeated_first_line();
        if generation.late() {
            rules.end_before_unfinished_name();
        }
        let mut text = rules.finish(generation.budget_cut());
        if text.is_empty() && repeated_first_line && !cancel.is_cancelled() {
            // The second generation gets what the first left of the time budget (at least a
            // quarter of the request budget), so a request costs at most about one budget more.
            let used = Duration::from_secs_f64(generation.stats.generation_millis.max(0.0) / 1e3);
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
            text = branch_away_from_repeat(model, &branch, cancel, &mut out.stats)?;
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

/// [`run_completion`] on a remote engine: the same prompt as text, the same stop rules over the
/// streamed pieces. The remote cannot be made to start with the healed tail, so the stop rules'
/// check of it decides (an answer that does not start with it is empty). No second try from a
/// runner-up. Empty at once while the remote is down and no probe is due (see
/// [`super::remote`]).
pub(crate) fn run_remote_completion(
    remote: &mut RemoteModel,
    input: &CompletionInput,
    cfg: &Config,
    cancel: &CancelFlag,
) -> Result<Completion, RemoteError> {
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_millis(cfg.timeout_ms);
    let mut out = Completion::default();
    if !remote.should_try() {
        out.failed = true;
        return Ok(out);
    }
    match remote.prepare(cancel) {
        Err(RemoteError::Cancelled) => {
            out.cancelled = true;
            return Ok(out);
        }
        result => result?,
    }
    // The budgets count the lines of the windows with the remote's tokenizer (one request for the
    // lines it has not counted before).
    let mut texts = vec![input.ctx.prefix.as_str(), input.ctx.suffix.as_str()];
    texts.extend(input.context.iter().map(|c| c.text.as_str()));
    texts.extend(input.snippet.as_ref().map(|s| s.text.as_str()));
    remote.count_lines(&texts, cancel);
    if !remote.should_try() {
        // It went down just now (the event says so).
        out.failed = true;
        return Ok(out);
    }
    let prompt = build_for(input, cfg, remote.fim_support(), &|t| remote.count(t));
    let text = remote.render(&prompt.segments);
    debug!(prompt = %text, "remote prompt");
    out.prompt_tokens = prompt
        .segments
        .iter()
        .map(|segment| match segment {
            Segment::Text(text) => remote.count(text),
            Segment::Token(_) => 1,
        })
        .sum();
    let stop_ctx = StopContext::new(
        input.ctx.line_before_cursor(),
        &input.ctx.suffix,
        cfg.multiline,
        cfg.max_lines,
    );
    for k in 0..input.alternatives.max(1) {
        if text.is_empty() || cancel.is_cancelled() || (k > 0 && Instant::now() >= deadline) {
            break;
        }
        let (temperature, seed) = if k == 0 {
            (cfg.temperature, 0)
        } else {
            (cfg.temperature.max(0.8), k as u64)
        };
        let request = RemoteRequest {
            prompt: &text,
            max_tokens: cfg.max_tokens,
            temperature,
            seed,
            time_budget: deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(cfg.timeout_ms / 2)),
        };
        let mut rules = StopRules::new(stop_ctx.clone(), &prompt.heal);
        let generation = match remote.generate(&request, cancel, |piece| {
            tracing::trace!(piece, "piece");
            rules.push(piece)
        }) {
            Err(RemoteError::Cancelled) => break,
            result => result?,
        };
        match generation.timings {
            Some(t) => {
                out.stats.reused += t.cached;
                out.stats.evaluated += t.evaluated;
                out.stats.generated += t.generated;
                out.stats.prompt_ms += t.prompt_ms;
                out.stats.gen_ms += t.gen_ms;
            }
            None => out.stats.generated += generation.generated,
        }
        debug!(generated = ?rules.text(), budget_cut = generation.budget_cut(), "remote generation");
        if generation.late {
            rules.end_before_unfinished_name();
        }
        let suggestion = rules.finish(generation.budget_cut());
        if !suggestion.is_empty() && !out.items.contains(&suggestion) {
            out.items.push(suggestion);
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
/// tokens. Empty when no runner-up is likely enough, or when cancelled.
fn branch_away_from_repeat(
    model: &mut CompletionModel,
    branch: &Branch<'_>,
    cancel: &CancelFlag,
    stats: &mut CompletionStats,
) -> Result<String, InferError> {
    let Some(at) = branch_point(branch.generated, branch.heal, branch.stop_ctx) else {
        return Ok(String::new());
    };
    let Some((runner_up, runner_up_text)) = branch.generated[at].runner_up.as_ref() else {
        return Ok(String::new());
    };
    let mut rules = StopRules::new(branch.stop_ctx.clone(), branch.heal);
    let mut prompt = branch.prompt.to_vec();
    let forced = branch.generated[..at]
        .iter()
        .map(|token| (token.id, token.text.as_str()))
        .chain(std::iter::once((runner_up.id, runner_up_text.as_str())));
    for (id, text) in forced {
        prompt.push(id);
        if rules.push(text) == lmrs::InferenceFeedback::Halt {
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
    let generation = model.generate(&request, cancel, |token, _| rules.push(token.text));
    let generation = match generation {
        Err(InferError::Cancelled | InferError::PromptDeadline { .. }) => return Ok(String::new()),
        result => result?,
    };
    stats.add_work(&generation.stats);
    debug!(
        at,
        gap = runner_up.gap,
        generated = ?rules.text(),
        "branched away from a repeated line"
    );
    if generation.late() {
        rules.end_before_unfinished_name();
    }
    Ok(rules.finish(generation.budget_cut()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::completion::model::test_support::tiny_model;
    use lmrs::RunnerUp;

    #[test]
    fn context_is_definitions_then_similar_code_then_recent_edits_not_shown_twice() {
        let cfg = Config {
            context_tokens: 256,
            ..Config::default()
        };
        let text = "from .shapes import area\n\ndef total(items):\n    s = 0\n    for r in items:\n        \n";
        let rope = Rope::from_str(text);
        let cursor = rope.line_to_char(5) + 8;
        let lookup = |name: &str| {
            (name == "area")
                .then(|| Provided {
                    path: "pkg/shapes.py".into(),
                    line: 0,
                    text: "def area(r):\n    return 3.14 * r * r\n".into(),
                })
                .into_iter()
                .collect()
        };
        let others: Vec<(String, std::sync::Arc<str>)> = vec![(
            "pkg/report.py".into(),
            "def report(items):\n    s = 0\n    for r in items:\n        s += area(r)\n    return s\n"
                .into(),
        )];
        let edit = |path: &str, line: usize, text: &str| ContextChunk {
            path: path.into(),
            line,
            text: text.into(),
            name: String::new(),
        };
        let recent_edits = [
            // Inside the similar chunk already shown: left out.
            edit("pkg/report.py", 2, "    for r in items:\n"),
            edit("pkg/main.py", 10, "print(total([1, 2]))\n"),
        ];
        let project = ProjectContext {
            lookup: &lookup,
            others: &others,
            recent_edits: &recent_edits,
        };
        let input = CompletionInput::at_cursor(
            &rope,
            cursor,
            &cfg,
            None,
            (Some("shop".into()), Some("pkg/total.py".into())),
            1,
            &project,
        );
        let shown: Vec<String> = input
            .context
            .iter()
            .map(|c| format!("{}:{} {:?}", c.path, c.line, c.name))
            .collect();
        assert_eq!(
            shown,
            [
                "pkg/shapes.py:0 \"area\"",
                "pkg/report.py:0 \"\"",
                "pkg/main.py:10 \"\""
            ]
        );
    }

    #[test]
    fn a_repeated_first_line_is_generated_again_from_its_runner_up() {
        let mut model = tiny_model();
        let prompt = model.encode("def main():\n    x = 1\n   ");
        let request = GenRequest {
            prompt: &prompt,
            max_tokens: 6,
            temperature: 0.0,
            seed: 0,
            required_prefix: " ",
            time_budget: Duration::from_secs(60),
            prompt_deadline: None,
        };
        // The first generation wrote " print(x)\n", the line below the cursor; at "(x" the model's
        // second choice was "(y".
        let stop_ctx = StopContext::new("    ", "\n    print(x)\n", true, 8);
        let token = |text: &str, runner_up: Option<(&str, f32)>| Generated {
            id: model.encode(text)[0],
            text: text.to_owned(),
            runner_up: runner_up.map(|(text, gap)| {
                let id = model.encode(text)[0];
                (RunnerUp { id, gap }, text.to_owned())
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
        model
            .generate(&request, &CancelFlag::new(), |_, _| {
                lmrs::InferenceFeedback::Halt
            })
            .unwrap();
        let branch = Branch {
            prompt: &prompt,
            generated: &generated,
            stop_ctx: &stop_ctx,
            heal: " ",
            request: &request,
        };
        let mut stats = CompletionStats::default();
        let text =
            branch_away_from_repeat(&mut model, &branch, &CancelFlag::new(), &mut stats).unwrap();
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
            branch_away_from_repeat(&mut model, &branch, &CancelFlag::new(), &mut stats).unwrap();
        assert_eq!(text, "");
    }

    #[test]
    fn typing_within_a_line_reuses_the_kv_prefix() {
        let mut model = tiny_model();
        let cfg = Config {
            max_tokens: 8,
            ..Config::default()
        };
        let mut run = |text: &str| {
            let (before, after) = text.split_once("$0").unwrap();
            let rope = Rope::from_str(&format!("{before}{after}"));
            let input = CompletionInput {
                ctx: CursorContext::extract(&rope, before.chars().count(), 768, 256),
                repo_name: None,
                rel_path: None,
                alternatives: 1,
                snippet: None,
                context: Vec::new(),
            };
            run_completion(&mut model, &input, &cfg, &CancelFlag::new()).unwrap()
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
    fn a_swapped_context_chunk_is_evaluated_and_the_file_after_it_is_moved() {
        let mut model = tiny_model();
        let cfg = Config {
            max_tokens: 4,
            context_tokens: 256,
            ..Config::default()
        };
        let chunk = |name: &str, body: &str| ContextChunk {
            path: format!("lib/{name}.py"),
            line: 0,
            text: format!("def {name}(value):\n    {body}\n"),
            name: name.to_owned(),
        };
        let body = "import lib\n\n\ndef main():\n    x = 1\n    y = lib.scale(x, 3)\n    z = lib.shift(y)\n    return z\n\n\n";
        let mut run = |context: Vec<ContextChunk>| {
            let text = format!("{body}    total = ");
            let rope = Rope::from_str(&text);
            let input = CompletionInput {
                ctx: CursorContext::extract(&rope, text.chars().count(), 768, 256),
                repo_name: Some("demo".into()),
                rel_path: Some("app/main.py".into()),
                alternatives: 1,
                snippet: None,
                context,
            };
            run_completion(&mut model, &input, &cfg, &CancelFlag::new()).unwrap()
        };
        let shift = chunk(
            "shift",
            "return [v + 1 for v in value]  # moves every element one up",
        );
        let scale = chunk(
            "scale",
            "return [v * 2 for v in value]  # doubles every element of the list",
        );
        let other = chunk("other", "return value");
        let first = run(vec![scale.clone(), shift.clone()]);
        assert!(first.stats.evaluated > 60, "{:?}", first.stats);
        // The first chunk is replaced by a shorter one: the second chunk and the whole file move back.
        let second = run(vec![other, shift]);
        assert!(
            second.stats.moved > 40,
            "the file after the swapped chunk moves: {:?}",
            second.stats
        );
        assert!(
            second.stats.evaluated < 30,
            "only the new chunk and the end of the prompt are evaluated: {:?}",
            second.stats
        );
    }

    #[test]
    fn cancelled_completion_is_empty() {
        let mut model = tiny_model();
        let cancel = CancelFlag::new();
        cancel.cancel();
        let input = CompletionInput {
            ctx: CursorContext {
                prefix: "def f():\n    ".into(),
                ..CursorContext::default()
            },
            repo_name: None,
            rel_path: None,
            alternatives: 3,
            snippet: None,
            context: Vec::new(),
        };
        let c = run_completion(&mut model, &input, &Config::default(), &cancel).unwrap();
        assert!(c.items.is_empty());
        assert!(c.cancelled);
    }
}
