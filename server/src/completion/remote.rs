//! A remote engine in place of the local model: llama.cpp's `llama-server` (and `lmrs serve`, which
//! speaks its protocol) through `POST /completion`, or any OpenAI-compatible server (vLLM, SGLang,
//! TGI, Ollama) through `POST /v1/completions`.
//!
//! The prompt is built as for the local model and sent as raw text with the FIM tokens spelled out
//! (the server parses them as special tokens); the answer streams back as server-sent events
//! through the same stop rules. What differs from the local model:
//! - FIM token texts: configured (`fimPrefix`/`fimSuffix`/`fimMiddle`), else for llama.cpp / lmrs
//!   those `GET /props` names (`lmrs serve`'s `fim_tokens`; llama-server's names none), else the
//!   first spelling of [`FIM_FAMILIES`] that the remote's `POST /tokenize` turns into one token
//!   each (the remote's own vocabulary decides); for OpenAI the family whose name the model's name
//!   contains (the configured model, else the first of the remote's `GET /v1/models`). Without FIM texts the prompt is the prefix alone.
//! - Token counts (prompt budgets): for llama.cpp / lmrs the remote's tokenizer, asked once per
//!   request for the lines it has not counted yet (one `POST /tokenize` of those lines together;
//!   each token is counted on the line where it starts); for OpenAI, and for text that is not whole
//!   lines, an estimate of one token per [`ESTIMATE_BYTES_PER_TOKEN`] bytes, rounded up.
//! - Token healing without the constraint: the healed tail is left out of the prompt as for the
//!   local model, but the remote cannot be made to start with it, so the stop rules' check decides
//!   (an answer that does not start with it is empty). Leaving it in the prompt instead is worse:
//!   Qwen2.5-Coder 0.5B on llama-server answered nothing at all after a prompt ending in a line's
//!   whole indentation. No second try from a runner-up (the remote does not say what it was).
//!
//! The HTTP exchange runs on a thread of its own (blocking `ureq`) that hands the stream's pieces to
//! the worker over a channel; the worker checks the request's cancel flag between pieces and at
//! least every [`POLL`], so a cancelled or superseded request returns at once. The thread then
//! drops the response, which closes the connection, as soon as its next line arrives (llama.cpp
//! stops a generation whose client is gone).
//!
//! Robustness: connection errors, timeouts and 5xx answers are retried [`RETRIES`] times with
//! exponential back-off (4xx are not: the request is wrong). When they persist, or the remote
//! refuses the API key (401, 403), the remote is *down*: one
//! [`RemoteEvent::Down`] (the server shows it once), empty answers, and one probe at a time at
//! growing intervals (at most [`MAX_PROBE_INTERVAL`]); the first success is [`RemoteEvent::Up`].

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use lmrs::{CancelFlag, InferenceFeedback};
use serde_json::{json, Value};
use tracing::{debug, warn};

use super::prompt::{FimSupport, FimToken, Segment};
use crate::config::{BackendKind, Config};

/// Connection attempts after the first, for connection errors and 5xx answers.
pub(crate) const RETRIES: u32 = 2;
/// The first retry's delay; each next one doubles it.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// While the remote is down, the first probe comes this long after the failure; each failed
/// probe doubles the interval up to [`MAX_PROBE_INTERVAL`].
const FIRST_PROBE_INTERVAL: Duration = Duration::from_millis(500);
/// The longest interval between probes of a remote that is down.
pub(crate) const MAX_PROBE_INTERVAL: Duration = Duration::from_secs(4);
/// The longest the worker waits for a piece before it looks at the cancel flag again.
const POLL: Duration = Duration::from_millis(10);
/// The estimate of token counts where the remote's tokenizer is not used: code in BPE vocabularies
/// averages 3.5 to 4.5 bytes per token, so 3 over-counts by 15-50% and the prompt stays within
/// the budget the configuration sets (a shorter prompt is the cost).
pub(crate) const ESTIMATE_BYTES_PER_TOKEN: usize = 3;
/// Most distinct lines whose token count is remembered.
const MAX_COUNTED_LINES: usize = 50_000;
/// Most bytes of an error answer kept for the message.
const MAX_ERROR_BYTES: u64 = 4096;

/// FIM token texts of known model families, from their tokenizer configurations:
/// (family, name fragments (lower case) for OpenAI model names, prefix, suffix, middle, repository
/// name and file separator tokens when the family has both).
#[allow(clippy::type_complexity)]
pub(crate) const FIM_FAMILIES: &[(&str, &[&str], [&str; 3], Option<[&str; 2]>)] = &[
    // Qwen2.5-Coder; CodeGemma spells the three the same way (its file separator differs, so
    // the repository format is only used when the remote confirms Qwen's tokens, see `discover`).
    (
        "Qwen2.5-Coder / CodeGemma",
        &["qwen", "codegemma"],
        ["<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"],
        Some(["<|repo_name|>", "<|file_sep|>"]),
    ),
    // StarCoder, StarCoder2, SantaCoder.
    (
        "StarCoder",
        &["starcoder", "santacoder"],
        ["<fim_prefix>", "<fim_suffix>", "<fim_middle>"],
        Some(["<reponame>", "<file_sep>"]),
    ),
    // DeepSeek-Coder (full-width bars and U+2581 as in its tokenizer).
    (
        "DeepSeek-Coder",
        &["deepseek"],
        [
            "<\u{ff5c}fim\u{2581}begin\u{ff5c}>",
            "<\u{ff5c}fim\u{2581}hole\u{ff5c}>",
            "<\u{ff5c}fim\u{2581}end\u{ff5c}>",
        ],
        None,
    ),
    // CodeLlama's infilling format `<PRE> {prefix} <SUF>{suffix} <MID>`.
    (
        "CodeLlama",
        &["codellama", "code-llama", "code_llama"],
        ["<PRE> ", " <SUF>", " <MID>"],
        None,
    ),
];

/// Where the remote is and how to talk to it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct RemoteParams {
    /// Base URL, e.g. `http://gpu-box:8080` (without `/completion` or `/v1`).
    pub(crate) url: String,
    /// Its protocol.
    pub(crate) kind: BackendKind,
    /// Sent as `Authorization: Bearer KEY`.
    pub(crate) api_key: Option<String>,
    /// The `model` field of OpenAI requests (also picks the FIM family).
    pub(crate) model: Option<String>,
    /// Configured FIM token texts (prefix, suffix, middle): used as they are when all are set.
    pub(crate) fim: [Option<String>; 3],
    /// Connection timeout, and the longest wait for the first piece of an answer and between
    /// pieces.
    pub(crate) timeout: Duration,
}

impl RemoteParams {
    /// The remote engine `config` names, when `backend` is set.
    pub(crate) fn from_config(config: &Config) -> Option<Self> {
        let url = config.backend.as_ref().filter(|u| !u.trim().is_empty())?;
        Some(Self {
            url: url.clone(),
            kind: config.backend_kind,
            api_key: config.backend_api_key.clone().filter(|k| !k.is_empty()),
            model: config.backend_model.clone().filter(|m| !m.is_empty()),
            fim: [
                config.fim_prefix.clone(),
                config.fim_suffix.clone(),
                config.fim_middle.clone(),
            ],
            // At most a day: deadlines are computed from it.
            timeout: Duration::from_millis(config.backend_timeout_ms.clamp(1, 86_400_000)),
        })
    }
}

/// Errors talking to the remote engine.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RemoteError {
    /// The configured URL is not an http(s) URL.
    #[error("invalid backend URL {url:?}: it must start with http:// or https://")]
    BadUrl {
        /// As configured.
        url: String,
    },
    /// No connection (refused, unreachable, name not found, TLS, connect timeout).
    #[error("cannot reach the remote engine at {url}")]
    Unreachable {
        /// The endpoint.
        url: String,
        /// Why.
        #[source]
        source: Box<ureq::Error>,
    },
    /// The remote answered with an error status.
    #[error("the remote engine at {url} answered {status}: {message}")]
    Status {
        /// The endpoint.
        url: String,
        /// HTTP status.
        status: u16,
        /// The start of its answer.
        message: String,
    },
    /// Nothing arrived for longer than the timeout.
    #[error("the remote engine at {url} sent nothing for {} ms", .waited.as_millis())]
    Timeout {
        /// The endpoint.
        url: String,
        /// How long.
        waited: Duration,
    },
    /// The answer is not what the protocol says.
    #[error("unexpected answer from the remote engine at {url}: {reason}")]
    Protocol {
        /// The endpoint.
        url: String,
        /// What was wrong.
        reason: String,
    },
    /// The request was cancelled.
    #[error("cancelled")]
    Cancelled,
}

impl RemoteError {
    /// Whether trying again may help: no connection, no answer in time, or a 5xx answer (not a
    /// 4xx: the request itself is wrong).
    fn retryable(&self) -> bool {
        match self {
            Self::Unreachable { .. } | Self::Timeout { .. } => true,
            Self::Status { status, .. } => *status >= 500,
            Self::BadUrl { .. } | Self::Protocol { .. } | Self::Cancelled => false,
        }
    }

    /// Whether the error says the remote does not serve us (as opposed to a bad request or
    /// answer): what is retryable, and a refused API key (401, 403), which no request gets past.
    fn means_down(&self) -> bool {
        self.retryable()
            || matches!(
                self,
                Self::Status {
                    status: 401 | 403,
                    ..
                }
            )
    }
}

/// A change of the remote's availability, for the editor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RemoteEvent {
    /// It stopped answering (the message says why and what happens now).
    Down(String),
    /// It answers again.
    Up(String),
}

/// The FIM token texts in use.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct FimTexts {
    /// Prefix, suffix, middle.
    fim: Option<[String; 3]>,
    /// Repository name, file separator.
    repo: Option<[String; 2]>,
}

/// Whether the remote is serving.
#[derive(Clone, Copy, Debug)]
enum Health {
    Up,
    Down {
        next_probe: Instant,
        interval: Duration,
    },
}

/// One generation request to the remote.
#[derive(Clone, Debug)]
pub(crate) struct RemoteRequest<'a> {
    /// The prompt text, FIM tokens spelled out.
    pub(crate) prompt: &'a str,
    /// Most tokens to generate.
    pub(crate) max_tokens: usize,
    /// 0 = greedy.
    pub(crate) temperature: f32,
    /// Sampling seed.
    pub(crate) seed: u64,
    /// Most wall time for generating, counted from the first piece.
    pub(crate) time_budget: Duration,
}

/// What one remote generation did.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RemoteGeneration {
    /// Pieces received (tokens, for llama.cpp).
    pub(crate) generated: usize,
    /// The time budget ended it.
    pub(crate) late: bool,
    /// The remote stopped at its token limit.
    pub(crate) at_limit: bool,
    /// The remote's figures, when it sent them (llama.cpp's `timings`; not when stopped early).
    pub(crate) timings: Option<RemoteTimings>,
}

impl RemoteGeneration {
    /// Whether the token or time budget ended the generation.
    pub(crate) fn budget_cut(&self) -> bool {
        self.late || self.at_limit
    }
}

/// llama.cpp's figures of one generation.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct RemoteTimings {
    /// Prompt tokens found in its cache.
    pub(crate) cached: usize,
    /// Prompt tokens evaluated.
    pub(crate) evaluated: usize,
    /// Tokens generated.
    pub(crate) generated: usize,
    /// Milliseconds on the prompt.
    pub(crate) prompt_ms: f64,
    /// Milliseconds generating.
    pub(crate) gen_ms: f64,
}

/// What the streaming thread hands the worker.
enum StreamItem {
    /// Generated text.
    Piece(String),
    /// The end of the stream.
    Done {
        at_limit: bool,
        timings: Option<RemoteTimings>,
    },
    /// It failed (after the retries).
    Failed(RemoteError),
}

/// The remote engine, owned by the worker thread.
pub(crate) struct RemoteModel {
    params: RemoteParams,
    /// The base URL without a trailing slash.
    base: String,
    agent: ureq::Agent,
    /// `None` until discovered (the first request that reaches the remote).
    fim: Option<FimTexts>,
    health: Health,
    /// Token counts of whole lines, from the remote's tokenizer.
    line_counts: HashMap<String, usize>,
    /// Availability changes not yet reported.
    events: Vec<RemoteEvent>,
    /// The remote answered `/tokenize` with a client error: token counts are estimated.
    tokenize_unavailable: bool,
    /// [`prepare`](Self::prepare) succeeded.
    prepared: bool,
}

impl RemoteModel {
    /// A client of the remote engine; nothing is sent yet.
    pub(crate) fn new(params: RemoteParams) -> Result<Self, RemoteError> {
        let base = params.url.trim().trim_end_matches('/').to_owned();
        let scheme_ok = base
            .split_once("://")
            .is_some_and(|(scheme, rest)| matches!(scheme, "http" | "https") && !rest.is_empty());
        if !scheme_ok {
            return Err(RemoteError::BadUrl { url: params.url });
        }
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .user_agent(concat!("lmrs/", env!("CARGO_PKG_VERSION")))
            .timeout_connect(Some(params.timeout))
            .timeout_recv_response(Some(params.timeout))
            .timeout_per_read(Some(params.timeout))
            .build()
            .into();
        let fim = configured_fim(&params);
        Ok(Self {
            base,
            agent,
            fim,
            health: Health::Up,
            line_counts: HashMap::new(),
            events: Vec::new(),
            tokenize_unavailable: false,
            prepared: false,
            params,
        })
    }

    /// A one-line description for logs and messages.
    pub(crate) fn describe(&self) -> String {
        let model = self
            .params
            .model
            .as_deref()
            .map(|m| format!(", model {m}"))
            .unwrap_or_default();
        format!(
            "remote {} engine at {}{model}",
            self.params.kind.name(),
            self.base
        )
    }

    /// The availability changes since the last call.
    pub(crate) fn take_events(&mut self) -> Vec<RemoteEvent> {
        std::mem::take(&mut self.events)
    }

    /// Whether the remote is down (its last exchange failed for a reason that says so).
    pub(crate) fn is_down(&self) -> bool {
        matches!(self.health, Health::Down { .. })
    }

    /// Whether a request should go out now: always while the remote is up; while it is down, only
    /// when the next probe is due.
    pub(crate) fn should_try(&self) -> bool {
        match self.health {
            Health::Up => true,
            Health::Down { next_probe, .. } => Instant::now() >= next_probe,
        }
    }

    /// Records the outcome of an exchange with the remote.
    fn note<T>(&mut self, result: &Result<T, RemoteError>) {
        match (result, self.health) {
            (Ok(_), Health::Down { .. }) => {
                self.health = Health::Up;
                self.events.push(RemoteEvent::Up(format!(
                    "lmrs: the remote engine at {} answers again",
                    self.base
                )));
            }
            (Err(e), Health::Up) if e.means_down() => {
                self.health = Health::Down {
                    next_probe: Instant::now() + FIRST_PROBE_INTERVAL,
                    interval: FIRST_PROBE_INTERVAL,
                };
                self.events.push(RemoteEvent::Down(format!(
                    "lmrs: {}. Inline completions are empty until it answers again (tried every \
                     few seconds).",
                    crate::report::describe(e, ": ")
                )));
            }
            (Err(e), Health::Down { interval, .. }) if e.means_down() => {
                let interval = (interval * 2).min(MAX_PROBE_INTERVAL);
                self.health = Health::Down {
                    next_probe: Instant::now() + interval,
                    interval,
                };
            }
            _ => {}
        }
    }

    /// Makes sure the FIM texts are known (asking the remote's tokenizer when needed). An error
    /// when the remote cannot be asked.
    pub(crate) fn prepare(&mut self, cancel: &CancelFlag) -> Result<(), RemoteError> {
        if self.prepared {
            return Ok(());
        }
        let fim = match self.params.kind {
            BackendKind::OpenAi => {
                if self.params.model.is_none() {
                    // The served model's name, for the requests and the FIM family.
                    let models = self.get_json("/v1/models", cancel);
                    self.note(&models);
                    match models {
                        Ok(models) => {
                            self.params.model = models
                                .pointer("/data/0/id")
                                .and_then(Value::as_str)
                                .map(str::to_owned);
                            debug!(model = ?self.params.model, "model named by the remote's /v1/models");
                        }
                        Err(e) if e.means_down() || matches!(e, RemoteError::Cancelled) => {
                            return Err(e)
                        }
                        Err(e) => debug!(error = %e, "no /v1/models"),
                    }
                }
                match self.fim.take() {
                    Some(configured) => configured,
                    None => fim_by_model_name(self.params.model.as_deref()),
                }
            }
            // Configured FIM texts are used as they are.
            BackendKind::Lmrs | BackendKind::LlamaCpp if self.fim.is_some() => {
                self.fim.take().unwrap_or_default()
            }
            BackendKind::Lmrs | BackendKind::LlamaCpp => {
                let found = self.discover_fim(cancel);
                self.note(&found);
                match found {
                    Ok(fim) => fim,
                    Err(e) if e.means_down() || matches!(e, RemoteError::Cancelled) => {
                        return Err(e)
                    }
                    // A remote without a usable `/tokenize`: the model's name, if configured.
                    Err(e) => {
                        warn!(
                            error = %crate::report::describe(&e, ": "),
                            "cannot ask the remote's tokenizer for its FIM tokens"
                        );
                        self.tokenize_unavailable = true;
                        fim_by_model_name(self.params.model.as_deref())
                    }
                }
            }
        };
        match &fim.fim {
            Some([p, s, m]) => debug!(prefix = %p, suffix = %s, middle = %m, "remote FIM tokens"),
            None => warn!(
                "no FIM tokens known for the remote engine: prompts are the text before the cursor \
                 alone (set fimPrefix, fimSuffix and fimMiddle)"
            ),
        }
        self.fim = Some(fim);
        self.prepared = true;
        Ok(())
    }

    /// The remote's FIM texts: those `GET /props` names (`lmrs serve`'s `fim_tokens`; llama-server
    /// names none), else the first family of [`FIM_FAMILIES`] whose three FIM texts the remote's
    /// tokenizer turns into one token each, with its repository tokens if those are single
    /// tokens too.
    fn discover_fim(&self, cancel: &CancelFlag) -> Result<FimTexts, RemoteError> {
        match self.get_json("/props", cancel) {
            Ok(props) => {
                if let Some(fim) = fim_from_props(&props) {
                    debug!("FIM tokens from the remote's /props");
                    return Ok(fim);
                }
            }
            Err(e) if e.means_down() || matches!(e, RemoteError::Cancelled) => return Err(e),
            Err(e) => debug!(error = %e, "no /props"),
        }
        self.probe_fim(cancel)
    }

    /// The first family of [`FIM_FAMILIES`] whose three FIM texts the remote's tokenizer turns
    /// into one token each, with its repository tokens if those are single tokens too.
    fn probe_fim(&self, cancel: &CancelFlag) -> Result<FimTexts, RemoteError> {
        let single = |text: &str| -> Result<bool, RemoteError> {
            let answer = self.post_json(
                "/tokenize",
                &json!({"content": text, "add_special": false, "parse_special": true}),
                cancel,
            )?;
            let tokens = answer
                .get("tokens")
                .and_then(Value::as_array)
                .ok_or_else(|| {
                    self.protocol("/tokenize", "no \"tokens\" array in its answer".into())
                })?;
            Ok(tokens.len() == 1)
        };
        for (family, _, fim, repo) in FIM_FAMILIES {
            let mut all = true;
            for text in fim {
                if !single(text.trim())? {
                    all = false;
                    break;
                }
            }
            if !all {
                continue;
            }
            let mut repo_texts = None;
            if let Some(repo) = repo {
                if single(repo[0])? && single(repo[1])? {
                    repo_texts = Some(repo.map(str::to_owned));
                }
            }
            debug!(family, "FIM tokens found in the remote's vocabulary");
            return Ok(FimTexts {
                fim: Some(fim.map(str::to_owned)),
                repo: repo_texts,
            });
        }
        Ok(FimTexts::default())
    }

    /// Which FIM features the prompt may use (none until [`prepare`](Self::prepare) succeeded).
    pub(crate) fn fim_support(&self) -> FimSupport {
        let fim = self.fim.as_ref();
        FimSupport {
            fim: fim.is_some_and(|f| f.fim.is_some()),
            repo: fim.is_some_and(|f| f.fim.is_some() && f.repo.is_some()),
        }
    }

    /// The prompt as the text sent to the remote.
    pub(crate) fn render(&self, segments: &[Segment]) -> String {
        let fim = self.fim.clone().unwrap_or_default();
        let mut out = String::new();
        for segment in segments {
            match segment {
                Segment::Text(text) => out.push_str(text),
                Segment::Token(token) => {
                    let text = match (token, &fim.fim, &fim.repo) {
                        (FimToken::Prefix, Some(f), _) => f[0].as_str(),
                        (FimToken::Suffix, Some(f), _) => f[1].as_str(),
                        (FimToken::Middle, Some(f), _) => f[2].as_str(),
                        (FimToken::RepoName, _, Some(r)) => r[0].as_str(),
                        (FimToken::FileSep, _, Some(r)) => r[1].as_str(),
                        // The builder only uses what `fim_support` offers.
                        _ => "",
                    };
                    out.push_str(text);
                }
            }
        }
        out
    }

    /// The spellings of the FIM tokens, sent as stop strings: a remote that writes special tokens
    /// as text stops at them instead of writing the next part of the prompt.
    fn stop_strings(&self) -> Vec<String> {
        let fim = self.fim.clone().unwrap_or_default();
        let mut stops: Vec<String> = fim.fim.into_iter().flatten().collect();
        stops.extend(fim.repo.into_iter().flatten().skip(1));
        stops.retain(|s| !s.trim().is_empty());
        for s in &mut stops {
            *s = s.trim().to_owned();
        }
        stops.truncate(4); // OpenAI's limit
        stops
    }

    /// Tokens of `text` for the prompt budgets: the remote's counts of its whole lines where
    /// known ([`count_lines`](Self::count_lines)), else the estimate.
    pub(crate) fn count(&self, text: &str) -> usize {
        text.split_inclusive('\n')
            .map(|line| {
                self.line_counts
                    .get(line)
                    .copied()
                    .unwrap_or_else(|| estimate_tokens(line))
            })
            .sum()
    }

    /// Asks the remote's tokenizer (llama.cpp / lmrs) for the token counts of the lines of `texts`
    /// not counted yet, in one request. Nothing for OpenAI (estimates), while the remote is down,
    /// or when cancelled; a failure leaves the estimates in place (and one that says the remote
    /// is down marks it so).
    pub(crate) fn count_lines(&mut self, texts: &[&str], cancel: &CancelFlag) {
        if self.params.kind == BackendKind::OpenAi
            || self.tokenize_unavailable
            || !self.should_try()
        {
            return;
        }
        let mut missing: Vec<&str> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for text in texts {
            for line in text.split_inclusive('\n') {
                if !self.line_counts.contains_key(line) && seen.insert(line) {
                    missing.push(line);
                }
            }
        }
        if missing.is_empty() {
            return;
        }
        let joined = missing.concat();
        let answer = self.post_json(
            "/tokenize",
            &json!({"content": joined, "add_special": false, "parse_special": false, "with_pieces": true}),
            cancel,
        );
        self.note(&answer);
        let counts = answer.and_then(|answer| {
            counts_per_line(&answer, &missing)
                .ok_or_else(|| self.protocol("/tokenize", "no pieces in its answer".into()))
        });
        match counts {
            Ok(counts) => {
                if self.line_counts.len() + missing.len() > MAX_COUNTED_LINES {
                    self.line_counts.clear();
                }
                for (line, n) in missing.iter().zip(counts) {
                    self.line_counts.insert((*line).to_owned(), n);
                }
            }
            Err(RemoteError::Cancelled) => {}
            Err(e @ (RemoteError::Status { .. } | RemoteError::Protocol { .. }))
                if !e.means_down() =>
            {
                warn!(
                    error = %crate::report::describe(&e, ": "),
                    "the remote's /tokenize cannot count tokens; estimating from now on"
                );
                self.tokenize_unavailable = true;
            }
            Err(e) => {
                debug!(error = %e, "token counts from the remote failed; estimating");
            }
        }
    }

    /// Generates after `req.prompt`, calling `on_piece` with each piece of text; stops when it
    /// returns [`InferenceFeedback::Halt`], at the remote's end of generation, at the time budget,
    /// or when `cancel` is set ([`RemoteError::Cancelled`], at once). Ending early closes the
    /// stream.
    pub(crate) fn generate(
        &mut self,
        req: &RemoteRequest<'_>,
        cancel: &CancelFlag,
        mut on_piece: impl FnMut(&str) -> InferenceFeedback,
    ) -> Result<RemoteGeneration, RemoteError> {
        let (path, body) = self.completion_body(req);
        let url = format!("{}{path}", self.base);
        // The stream's own stop flag: set when the worker stops listening for any reason.
        let stop = CancelFlag::new();
        let _stop_on_return = StopOnDrop(stop.clone());
        let items = self.spawn_stream(url.clone(), body, cancel.clone(), stop.clone());
        let mut out = RemoteGeneration::default();
        let mut deadline: Option<Instant> = None;
        let mut waited_since = Instant::now();
        let result = loop {
            if cancel.is_cancelled() {
                break Err(RemoteError::Cancelled);
            }
            let item = match items.recv_timeout(POLL) {
                Ok(item) => item,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    // The stream thread enforces the remote's timeouts; this is only the
                    // cancel check and the generation's time budget.
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        out.late = true;
                        break Ok(out);
                    }
                    if waited_since.elapsed()
                        > self.params.timeout.saturating_mul((RETRIES + 2) * 2)
                    {
                        break Err(RemoteError::Timeout {
                            url: url.clone(),
                            waited: waited_since.elapsed(),
                        });
                    }
                    continue;
                }
                // The thread also stops, silently, when the request is cancelled.
                Err(mpsc::RecvTimeoutError::Disconnected) if cancel.is_cancelled() => {
                    break Err(RemoteError::Cancelled)
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    break Err(self.protocol(path, "the stream ended without its last event".into()))
                }
            };
            waited_since = Instant::now();
            match item {
                StreamItem::Piece(text) => {
                    let now = Instant::now();
                    if now >= *deadline.get_or_insert(now + req.time_budget) {
                        out.late = true;
                        break Ok(out);
                    }
                    out.generated += 1;
                    if on_piece(&text) == InferenceFeedback::Halt {
                        break Ok(out);
                    }
                }
                StreamItem::Done { at_limit, timings } => {
                    out.at_limit = at_limit;
                    out.timings = timings;
                    break Ok(out);
                }
                StreamItem::Failed(e) => break Err(e),
            }
        };
        self.note(&result);
        result
    }

    /// The endpoint and JSON body of a streamed completion request.
    fn completion_body(&self, req: &RemoteRequest<'_>) -> (&'static str, Vec<u8>) {
        let stop = self.stop_strings();
        let body = match self.params.kind {
            BackendKind::Lmrs | BackendKind::LlamaCpp => {
                let mut body = json!({
                    "prompt": req.prompt,
                    "n_predict": req.max_tokens,
                    "temperature": req.temperature,
                    "seed": req.seed,
                    "cache_prompt": true,
                    "stream": true,
                    "stop": stop,
                });
                if req.temperature <= 0.0 {
                    body["top_k"] = json!(1);
                }
                ("/completion", body)
            }
            BackendKind::OpenAi => {
                let mut body = json!({
                    "prompt": req.prompt,
                    "max_tokens": req.max_tokens,
                    "temperature": req.temperature,
                    "seed": req.seed,
                    "stream": true,
                });
                if !stop.is_empty() {
                    body["stop"] = json!(stop);
                }
                if let Some(model) = &self.params.model {
                    body["model"] = json!(model);
                }
                ("/v1/completions", body)
            }
        };
        (body.0, body.1.to_string().into_bytes())
    }

    /// Starts the exchange on a thread of its own; its items arrive on the returned channel.
    fn spawn_stream(
        &self,
        url: String,
        body: Vec<u8>,
        cancel: CancelFlag,
        stop: CancelFlag,
    ) -> mpsc::Receiver<StreamItem> {
        let (tx, rx) = mpsc::channel();
        let agent = self.agent.clone();
        let api_key = self.params.api_key.clone();
        let kind = self.params.kind;
        let spawned = std::thread::Builder::new()
            .name("lmrs-remote".into())
            .spawn(move || {
                let halted = || cancel.is_cancelled() || stop.is_cancelled();
                let response =
                    match send_with_retries(&agent, &url, api_key.as_deref(), Some(&body), &halted)
                    {
                        Ok(response) => response,
                        Err(e) => {
                            let _ = tx.send(StreamItem::Failed(e));
                            return;
                        }
                    };
                let reader = BufReader::new(response.into_body().into_reader());
                read_events(reader, kind, &url, &tx, &halted);
                // Dropping the reader here closes the connection when the stream was not over.
            });
        if let Err(e) = spawned {
            warn!(error = %e, "cannot start a thread for the remote request");
        }
        rx
    }

    /// POSTs `body` to `path` (with retries) and reads the whole JSON answer.
    fn post_json(
        &self,
        path: &str,
        body: &Value,
        cancel: &CancelFlag,
    ) -> Result<Value, RemoteError> {
        self.exchange_json(path, Some(body), cancel)
    }

    /// GETs `path` and reads the whole JSON answer.
    fn get_json(&self, path: &str, cancel: &CancelFlag) -> Result<Value, RemoteError> {
        self.exchange_json(path, None, cancel)
    }

    /// POSTs `body` to `path` (GETs it without one), with retries, and reads the JSON answer.
    fn exchange_json(
        &self,
        path: &str,
        body: Option<&Value>,
        cancel: &CancelFlag,
    ) -> Result<Value, RemoteError> {
        let url = format!("{}{path}", self.base);
        let agent = self.agent.clone();
        let api_key = self.params.api_key.clone();
        let body = body.map(|body| body.to_string().into_bytes());
        let (tx, rx) = mpsc::channel();
        let thread_cancel = cancel.clone();
        let thread_url = url.clone();
        // On a thread of its own, like a completion's stream: a cancelled request returns at
        // once instead of waiting for a remote that hangs.
        let spawned = std::thread::Builder::new()
            .name("lmrs-remote".into())
            .spawn(move || {
                let halted = || thread_cancel.is_cancelled();
                let answer = send_with_retries(
                    &agent,
                    &thread_url,
                    api_key.as_deref(),
                    body.as_deref(),
                    &halted,
                )
                .and_then(|response| {
                    let mut text = String::new();
                    response
                        .into_body()
                        .into_reader()
                        .take(64 << 20)
                        .read_to_string(&mut text)
                        .map_err(|e| RemoteError::Unreachable {
                            url: thread_url.clone(),
                            source: Box::new(ureq::Error::Io(e)),
                        })?;
                    Ok(text)
                });
                let _ = tx.send(answer);
            });
        if let Err(e) = spawned {
            return Err(RemoteError::Unreachable {
                url,
                source: Box::new(ureq::Error::Io(e)),
            });
        }
        let text = loop {
            if cancel.is_cancelled() {
                return Err(RemoteError::Cancelled);
            }
            match rx.recv_timeout(POLL) {
                Ok(answer) => break answer?,
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(self.protocol(path, "no answer".into()))
                }
            }
        };
        serde_json::from_str(&text).map_err(|e| RemoteError::Protocol {
            url,
            reason: format!("not JSON: {e}"),
        })
    }

    fn protocol(&self, path: &str, reason: String) -> RemoteError {
        RemoteError::Protocol {
            url: format!("{}{path}", self.base),
            reason,
        }
    }
}

/// Sets a flag when dropped.
struct StopOnDrop(CancelFlag);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// The FIM texts of a `/props` answer with `lmrs serve`'s `fim_tokens`
/// (`{"prefix": {"id", "text"}, ...}`), when it names all three.
fn fim_from_props(props: &Value) -> Option<FimTexts> {
    let tokens = props.get("fim_tokens")?;
    let text = |name: &str| {
        tokens
            .pointer(&format!("/{name}/text"))
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
    };
    let fim = [text("prefix")?, text("suffix")?, text("middle")?];
    let repo = text("repo_name").zip(text("file_separator"));
    Some(FimTexts {
        fim: Some(fim),
        repo: repo.map(|(name, separator)| [name, separator]),
    })
}

/// The configured FIM texts, when all three are set.
fn configured_fim(params: &RemoteParams) -> Option<FimTexts> {
    match &params.fim {
        [Some(p), Some(s), Some(m)] => Some(FimTexts {
            fim: Some([p.clone(), s.clone(), m.clone()]),
            repo: None,
        }),
        _ => None,
    }
}

/// The FIM texts of the family whose name fragment the model's name contains.
fn fim_by_model_name(model: Option<&str>) -> FimTexts {
    let Some(name) = model.map(str::to_lowercase) else {
        return FimTexts::default();
    };
    FIM_FAMILIES
        .iter()
        .find(|(_, fragments, _, _)| fragments.iter().any(|f| name.contains(f)))
        .map(|(_, _, fim, repo)| FimTexts {
            fim: Some(fim.map(str::to_owned)),
            // Only Qwen's repository tokens are known to follow the layout the builder writes.
            repo: repo
                .filter(|r| r[0] == "<|repo_name|>" && name.contains("qwen"))
                .map(|r| r.map(str::to_owned)),
        })
        .unwrap_or_default()
}

/// The estimated token count of `text` (see [`ESTIMATE_BYTES_PER_TOKEN`]).
pub(crate) fn estimate_tokens(text: &str) -> usize {
    text.len().div_ceil(ESTIMATE_BYTES_PER_TOKEN)
}

/// Token counts of `lines` from the `/tokenize` answer (with pieces) of their concatenation: each
/// token counts on the line where its first byte is. `None` without pieces.
fn counts_per_line(answer: &Value, lines: &[&str]) -> Option<Vec<usize>> {
    let tokens = answer.get("tokens")?.as_array()?;
    if lines.is_empty() {
        return Some(Vec::new());
    }
    let mut ends = Vec::with_capacity(lines.len());
    let mut end = 0;
    for line in lines {
        end += line.len();
        ends.push(end);
    }
    let mut counts = vec![0; lines.len()];
    let mut offset = 0;
    let mut line = 0;
    for token in tokens {
        // A piece is a string, or its bytes when they are not valid UTF-8 on their own.
        let bytes = match token.get("piece")? {
            Value::String(s) => s.len(),
            Value::Array(a) => a.len(),
            _ => return None,
        };
        while line + 1 < lines.len() && offset >= ends[line] {
            line += 1;
        }
        counts[line] += 1;
        offset += bytes;
    }
    Some(counts)
}

/// POSTs `body` as JSON to `url` (GETs it without a body); connection errors and 5xx answers are
/// tried again
/// [`RETRIES`] times with exponential back-off, unless `halted` says to give up.
fn send_with_retries(
    agent: &ureq::Agent,
    url: &str,
    api_key: Option<&str>,
    body: Option<&[u8]>,
    halted: &dyn Fn() -> bool,
) -> Result<ureq::http::Response<ureq::Body>, RemoteError> {
    let mut backoff = FIRST_BACKOFF;
    let mut attempt = 0;
    loop {
        if halted() {
            return Err(RemoteError::Cancelled);
        }
        let bearer = api_key.map(|key| format!("Bearer {key}"));
        let sent = match body {
            Some(body) => {
                let mut request = agent
                    .post(url)
                    .header("Content-Type", "application/json")
                    .header("Accept", "text/event-stream, application/json");
                if let Some(bearer) = &bearer {
                    request = request.header("Authorization", bearer);
                }
                request.send(body)
            }
            None => {
                let mut request = agent.get(url).header("Accept", "application/json");
                if let Some(bearer) = &bearer {
                    request = request.header("Authorization", bearer);
                }
                request.call()
            }
        };
        let error = match sent {
            Ok(response) if response.status().is_success() => return Ok(response),
            Ok(response) => {
                let status = response.status().as_u16();
                let mut message = String::new();
                let _ = response
                    .into_body()
                    .into_reader()
                    .take(MAX_ERROR_BYTES)
                    .read_to_string(&mut message);
                RemoteError::Status {
                    url: url.to_owned(),
                    status,
                    message: error_message(&message),
                }
            }
            Err(e) => RemoteError::Unreachable {
                url: url.to_owned(),
                source: Box::new(e),
            },
        };
        if !error.retryable() || attempt >= RETRIES {
            return Err(error);
        }
        debug!(error = %error, attempt, "remote request failed; trying again");
        let until = Instant::now() + backoff;
        while Instant::now() < until {
            if halted() {
                return Err(RemoteError::Cancelled);
            }
            std::thread::sleep(POLL);
        }
        backoff *= 2;
        attempt += 1;
    }
}

/// The message of an error answer: its JSON `error.message` (or `error`, or `message`), else the
/// text itself, on one line.
fn error_message(text: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(text).ok();
    let message = parsed.as_ref().and_then(|v| {
        v.pointer("/error/message")
            .or_else(|| v.get("error"))
            .or_else(|| v.get("message"))
            .map(|m| m.as_str().map_or_else(|| m.to_string(), str::to_owned))
    });
    let message = message.unwrap_or_else(|| text.trim().to_owned());
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Reads server-sent events from `reader` and hands each piece to `tx` until the stream ends,
/// `halted` says stop, or no one listens. llama.cpp: `data: {"content", "stop", "stop_type",
/// "timings"}`; OpenAI: `data: {"choices": [{"text", "finish_reason"}]}` then `data: [DONE]`.
fn read_events(
    reader: impl BufRead,
    kind: BackendKind,
    url: &str,
    tx: &mpsc::Sender<StreamItem>,
    halted: &dyn Fn() -> bool,
) {
    let protocol = |reason: String| {
        StreamItem::Failed(RemoteError::Protocol {
            url: url.to_owned(),
            reason,
        })
    };
    let mut at_limit = false;
    for line in reader.lines() {
        if halted() {
            return;
        }
        let line = match line {
            Ok(line) => line,
            Err(e) => {
                let error = if e.kind() == std::io::ErrorKind::TimedOut {
                    RemoteError::Timeout {
                        url: url.to_owned(),
                        waited: Duration::ZERO,
                    }
                } else {
                    RemoteError::Unreachable {
                        url: url.to_owned(),
                        source: Box::new(ureq::Error::Io(e)),
                    }
                };
                let _ = tx.send(StreamItem::Failed(error));
                return;
            }
        };
        // Comments, `event:` and `id:` lines and the blank lines between events carry nothing.
        let Some(data) = line.strip_prefix("data:").map(str::trim_start) else {
            if let Some(error) = line.strip_prefix("error:") {
                let _ = tx.send(protocol(error_message(error)));
                return;
            }
            continue;
        };
        if data == "[DONE]" {
            let _ = tx.send(StreamItem::Done {
                at_limit,
                timings: None,
            });
            return;
        }
        let event: Value = match serde_json::from_str(data) {
            Ok(event) => event,
            Err(e) => {
                let _ = tx.send(protocol(format!("an event is not JSON: {e}")));
                return;
            }
        };
        if let Some(error) = event.get("error") {
            let _ = tx.send(protocol(error_message(&error.to_string())));
            return;
        }
        let (piece, done) = match kind {
            BackendKind::Lmrs | BackendKind::LlamaCpp => {
                let piece = event.get("content").and_then(Value::as_str);
                let done = event.get("stop").and_then(Value::as_bool) == Some(true);
                if done {
                    at_limit = event.get("stop_type").and_then(Value::as_str) == Some("limit");
                }
                (piece, done)
            }
            BackendKind::OpenAi => {
                let choice = event.pointer("/choices/0");
                let piece = choice.and_then(|c| c.get("text")).and_then(Value::as_str);
                if let Some(reason) = choice
                    .and_then(|c| c.get("finish_reason"))
                    .and_then(Value::as_str)
                {
                    at_limit = reason == "length";
                }
                (piece, false)
            }
        };
        if let Some(piece) = piece.filter(|p| !p.is_empty()) {
            if tx.send(StreamItem::Piece(piece.to_owned())).is_err() {
                return;
            }
        }
        if done {
            let timings = event.get("timings").map(|t| {
                let n = |key| t.get(key).and_then(Value::as_u64).unwrap_or(0) as usize;
                let ms = |key| t.get(key).and_then(Value::as_f64).unwrap_or(0.0);
                RemoteTimings {
                    cached: n("cache_n"),
                    evaluated: n("prompt_n"),
                    generated: n("predicted_n"),
                    prompt_ms: ms("prompt_ms"),
                    gen_ms: ms("predicted_ms"),
                }
            });
            let _ = tx.send(StreamItem::Done { at_limit, timings });
            return;
        }
    }
    // The connection closed without a last event.
    let _ = tx.send(protocol("the stream ended without its last event".into()));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(kind: BackendKind, text: &str) -> Vec<String> {
        let (tx, rx) = mpsc::channel();
        read_events(text.as_bytes(), kind, "http://x", &tx, &|| false);
        drop(tx);
        rx.iter()
            .map(|item| match item {
                StreamItem::Piece(p) => format!("piece {p:?}"),
                StreamItem::Done { at_limit, timings } => {
                    format!("done limit={at_limit} timings={}", timings.is_some())
                }
                StreamItem::Failed(e) => format!("failed {e}"),
            })
            .collect()
    }

    #[test]
    fn llama_cpp_events_are_pieces_then_the_end_with_timings() {
        let stream = "data: {\"content\":\" re\",\"stop\":false}\n\ndata: {\"content\":\"turn\",\"stop\":false}\n\n: keep-alive\n\ndata: {\"content\":\"\",\"stop\":true,\"stop_type\":\"limit\",\"timings\":{\"cache_n\":3,\"prompt_n\":2}}\n\n";
        assert_eq!(
            events(BackendKind::LlamaCpp, stream),
            [
                "piece \" re\"",
                "piece \"turn\"",
                "done limit=true timings=true"
            ]
        );
    }

    #[test]
    fn openai_events_end_at_done_and_a_cut_stream_is_an_error() {
        let stream = "data: {\"choices\":[{\"text\":\"x\",\"finish_reason\":null}]}\n\ndata: {\"choices\":[{\"text\":\"\",\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";
        assert_eq!(
            events(BackendKind::OpenAi, stream),
            ["piece \"x\"", "done limit=false timings=false"]
        );
        let cut = "data: {\"choices\":[{\"text\":\"x\",\"finish_reason\":null}]}\n\n";
        let got = events(BackendKind::OpenAi, cut);
        assert_eq!(got[0], "piece \"x\"");
        assert!(got[1].contains("ended without its last event"), "{got:?}");
        let error = "data: {\"error\":{\"message\":\"model   not\\nfound\"}}\n\n";
        assert_eq!(
            events(BackendKind::OpenAi, error),
            ["failed unexpected answer from the remote engine at http://x: model not found"]
        );
    }

    #[test]
    fn tokens_count_on_the_line_where_they_start() {
        let lines = ["def f():\n", "    return 1\n", "\n"];
        // Qwen-like pieces: "():\n" ends line 0; "\n" + "\n" would merge into one token that
        // starts on line 1.
        let answer = json!({"tokens": [
            {"piece": "def"}, {"piece": " f"}, {"piece": "():\n"},
            {"piece": "   "}, {"piece": " return"}, {"piece": " "}, {"piece": "1"}, {"piece": "\n\n"},
        ]});
        assert_eq!(counts_per_line(&answer, &lines), Some(vec![3, 5, 0]));
        // Bytes that are not UTF-8 on their own come as a list.
        let answer =
            json!({"tokens": [{"piece": [0xe2, 0x82]}, {"piece": [0xac]}, {"piece": "\n"}]});
        assert_eq!(counts_per_line(&answer, &["\u{20ac}\n"]), Some(vec![3]));
        assert_eq!(counts_per_line(&json!({"tokens": [1, 2]}), &["x"]), None);
        assert_eq!(counts_per_line(&answer, &[]), Some(vec![]));
    }

    #[test]
    fn lmrs_serves_props_name_the_fim_tokens() {
        let props = json!({"fim_tokens": {
            "prefix": {"id": 1, "text": "<|fim_prefix|>"},
            "suffix": {"id": 2, "text": "<|fim_suffix|>"},
            "middle": {"id": 3, "text": "<|fim_middle|>"},
            "pad": null,
            "repo_name": {"id": 4, "text": "<|repo_name|>"},
            "file_separator": {"id": 5, "text": "<|file_sep|>"},
        }});
        let fim = fim_from_props(&props).unwrap();
        assert_eq!(fim.fim.unwrap()[1], "<|fim_suffix|>");
        assert_eq!(fim.repo.unwrap()[1], "<|file_sep|>");
        let no_middle = json!({"fim_tokens": {"prefix": {"text": "<p>"}, "suffix": {"text": "<s>"}, "middle": null}});
        assert_eq!(fim_from_props(&no_middle), None);
        // llama-server's /props has no FIM tokens.
        assert_eq!(
            fim_from_props(&json!({"n_ctx": 512, "bos_token": "<s>"})),
            None
        );
    }

    #[test]
    fn openai_fim_texts_come_from_the_model_name_and_configuration_wins() {
        let qwen = fim_by_model_name(Some("Qwen/Qwen2.5-Coder-7B"));
        assert_eq!(qwen.fim.as_ref().unwrap()[0], "<|fim_prefix|>");
        assert!(qwen.repo.is_some());
        let star = fim_by_model_name(Some("bigcode/starcoder2-15b"));
        assert_eq!(star.fim.as_ref().unwrap()[2], "<fim_middle>");
        assert!(star.repo.is_none());
        assert_eq!(
            fim_by_model_name(Some("deepseek-ai/deepseek-coder-6.7b-base"))
                .fim
                .unwrap()[1],
            "<\u{ff5c}fim\u{2581}hole\u{ff5c}>"
        );
        assert_eq!(
            fim_by_model_name(Some("gpt-3.5-turbo")),
            FimTexts::default()
        );
        assert_eq!(fim_by_model_name(None), FimTexts::default());

        let params = RemoteParams {
            url: "http://127.0.0.1:1/".into(),
            kind: BackendKind::OpenAi,
            api_key: None,
            model: Some("qwen2.5-coder".into()),
            fim: [Some("<A>".into()), Some("<B>".into()), Some("<C>".into())],
            timeout: Duration::from_secs(1),
        };
        let mut remote = RemoteModel::new(params).unwrap();
        remote.prepare(&CancelFlag::new()).unwrap();
        let prompt = remote.render(&[
            Segment::Token(FimToken::Prefix),
            Segment::Text("a".into()),
            Segment::Token(FimToken::Suffix),
            Segment::Token(FimToken::Middle),
        ]);
        assert_eq!(prompt, "<A>a<B><C>");
        assert_eq!(
            remote.describe(),
            "remote openai engine at http://127.0.0.1:1, model qwen2.5-coder"
        );
    }

    #[test]
    fn bad_urls_are_refused_and_estimates_round_up() {
        for url in ["", "localhost:8080", "ftp://x", "http://"] {
            let params = RemoteParams {
                url: url.into(),
                kind: BackendKind::LlamaCpp,
                api_key: None,
                model: None,
                fim: [None, None, None],
                timeout: Duration::from_secs(1),
            };
            assert!(
                matches!(RemoteModel::new(params), Err(RemoteError::BadUrl { .. })),
                "{url:?}"
            );
        }
        assert_eq!(estimate_tokens(""), 0);
        assert_eq!(estimate_tokens("abcd"), 2);
    }

    #[test]
    fn a_cancel_returns_at_once_from_a_remote_that_never_answers() {
        // Accepts connections (the kernel's backlog) and never answers.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let params = RemoteParams {
            url: format!("http://{}", listener.local_addr().unwrap()),
            kind: BackendKind::LlamaCpp,
            api_key: None,
            model: None,
            fim: [Some("<p>".into()), Some("<s>".into()), Some("<m>".into())],
            timeout: Duration::from_secs(600),
        };
        let mut remote = RemoteModel::new(params.clone()).unwrap();
        let cancel = CancelFlag::new();
        let canceller = {
            let cancel = cancel.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(100));
                cancel.cancel();
            })
        };
        let request = RemoteRequest {
            prompt: "x",
            max_tokens: 4,
            temperature: 0.0,
            seed: 0,
            time_budget: Duration::from_secs(600),
        };
        let generated = remote.generate(&request, &cancel, |_| InferenceFeedback::Continue);
        assert!(
            matches!(generated, Err(RemoteError::Cancelled)),
            "{generated:?}"
        );
        canceller.join().unwrap();
        // The tokenizer's requests too (FIM discovery).
        let mut remote = RemoteModel::new(RemoteParams {
            fim: [None, None, None],
            ..params
        })
        .unwrap();
        let cancel = CancelFlag::new();
        let canceller = {
            let cancel = cancel.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(100));
                cancel.cancel();
            })
        };
        let prepared = remote.prepare(&cancel);
        assert!(
            matches!(prepared, Err(RemoteError::Cancelled)),
            "{prepared:?}"
        );
        canceller.join().unwrap();
        assert!(!remote.is_down(), "a cancel says nothing about the remote");
        drop(listener);
    }

    #[test]
    fn an_unreachable_remote_is_down_once_then_probed_and_error_texts_are_one_line() {
        // A port nothing listens on: connection refused at once.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let params = RemoteParams {
            url: format!("http://127.0.0.1:{port}"),
            kind: BackendKind::LlamaCpp,
            api_key: None,
            model: None,
            fim: [None, None, None],
            timeout: Duration::from_secs(1),
        };
        let mut remote = RemoteModel::new(params).unwrap();
        let cancel = CancelFlag::new();
        assert!(remote.prepare(&cancel).is_err());
        let events = remote.take_events();
        assert_eq!(events.len(), 1, "{events:?}");
        assert!(
            matches!(&events[0], RemoteEvent::Down(m) if m.contains("cannot reach")),
            "{events:?}"
        );
        assert!(!remote.should_try(), "the next probe waits");
        assert!(remote.prepare(&cancel).is_err());
        assert!(remote.take_events().is_empty(), "said once");
        assert_eq!(
            error_message("{\"error\":{\"code\":400,\"message\":\"bad\\n field\"}}"),
            "bad field"
        );
        assert_eq!(error_message("plain  text\n"), "plain text");
    }
}
