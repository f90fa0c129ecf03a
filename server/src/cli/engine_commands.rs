//! Engine subcommands of `lmrs`: `infer`, `tokenize`, `bench`, `info`.
//!
//! They drive the engine directly (no LSP) for demos, debugging and benchmarking.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crate::outln;
use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};
use lmrs::{
    InferenceFeedback, InferenceParameters, Model, ModelParams, Session, SessionParams, TokenId,
};

/// Subcommands that talk to the engine directly.
#[derive(Debug, Subcommand)]
pub(crate) enum EngineCommand {
    /// Generate text from a prompt, streaming it to stdout.
    Infer(InferArgs),
    /// Print the token ids of a text as a JSON array (no BOS added).
    Tokenize(TokenizeArgs),
    /// Measure prompt-processing and generation speed, like llama-bench.
    Bench(BenchArgs),
    /// Print a model's architecture, sizes, quantization types, tokenizer and FIM tokens.
    Info(InfoArgs),
}

/// Arguments of `lmrs infer`.
#[derive(Debug, Args)]
pub(crate) struct InferArgs {
    /// GGUF model file.
    #[arg(short, long)]
    model: PathBuf,
    /// The prompt.
    #[arg(short, long)]
    prompt: String,
    /// Tokens to generate.
    #[arg(short = 'n', long, default_value_t = 128)]
    n_predict: usize,
    /// Temperature (0 = greedy).
    #[arg(long, default_value_t = 0.8)]
    temp: f32,
    /// Top-k (0 = off).
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    /// Top-p (1 = off).
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    /// Min-p (0 = off).
    #[arg(long, default_value_t = 0.05)]
    min_p: f32,
    /// Repetition penalty (1 = off).
    #[arg(long, default_value_t = 1.0)]
    repeat_penalty: f32,
    /// Random seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Worker threads (default: the machine's cores, at most 8).
    #[arg(short, long)]
    threads: Option<usize>,
    /// Context size.
    #[arg(short, long, default_value_t = 4096)]
    ctx_size: usize,
    /// Parse special tokens (like `<|fim_prefix|>`) written in the prompt.
    #[arg(long)]
    special: bool,
    /// Print one JSON object per generated token instead of text.
    #[arg(long)]
    json: bool,
    /// With --json: include the top K log-probabilities before sampling.
    #[arg(long, default_value_t = 0)]
    logprobs: usize,
}

/// Arguments of `lmrs tokenize`.
#[derive(Debug, Args)]
pub(crate) struct TokenizeArgs {
    /// GGUF model file.
    #[arg(short, long)]
    model: PathBuf,
    /// Text to tokenize.
    #[arg(short, long, conflicts_with = "file")]
    prompt: Option<String>,
    /// File whose content to tokenize.
    #[arg(short, long)]
    file: Option<PathBuf>,
    /// Parse special tokens written in the text.
    #[arg(long)]
    special: bool,
}

/// Arguments of `lmrs bench`.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// GGUF model file.
    #[arg(short, long)]
    model: PathBuf,
    /// Prompt tokens evaluated in one batch (0 = skip the prompt test).
    #[arg(short = 'p', long, default_value_t = 512)]
    n_prompt: usize,
    /// Tokens generated one at a time (0 = skip the generation test).
    #[arg(short = 'n', long, default_value_t = 64)]
    n_gen: usize,
    /// Worker threads.
    #[arg(short, long, default_value_t = 2)]
    threads: usize,
    /// Repetitions of each test.
    #[arg(short, long, default_value_t = 3)]
    repetitions: usize,
    /// Do not repack weights into GGML's interleaved layout.
    #[arg(long)]
    no_repack: bool,
    /// Unfused attention instead of flash attention (compare with `llama-bench -fa 0`).
    #[arg(long)]
    no_flash_attn: bool,
    /// Keep Q5_0 matrices as Q5_0 instead of widening them to Q8_0 (compare with llama-bench).
    #[arg(long)]
    no_widen: bool,
    /// Run prompts on the repacked matrices too, instead of their in-place twins (compare with
    /// llama-bench).
    #[arg(long)]
    no_dual_layout: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Arguments of `lmrs info`.
#[derive(Debug, Args)]
pub(crate) struct InfoArgs {
    /// GGUF model file.
    model: PathBuf,
    /// Context size of the session whose memory is reported.
    #[arg(short, long, default_value_t = 4096)]
    ctx_size: usize,
}

/// Runs one engine subcommand.
pub(crate) fn run(command: EngineCommand) -> anyhow::Result<()> {
    match command {
        EngineCommand::Infer(args) => infer(args),
        EngineCommand::Tokenize(args) => tokenize(args),
        EngineCommand::Bench(args) => bench(args),
        EngineCommand::Info(args) => info(args),
    }
}

fn load(path: &PathBuf, threads: Option<usize>, repack: bool) -> anyhow::Result<Arc<Model>> {
    load_with(
        path,
        threads,
        ModelParams {
            repack,
            ..ModelParams::default()
        },
    )
}

fn load_with(
    path: &PathBuf,
    threads: Option<usize>,
    mut params: ModelParams,
) -> anyhow::Result<Arc<Model>> {
    if let Some(threads) = threads {
        params.n_threads = threads.max(1);
    }
    let model = Model::load(path, params).with_context(|| format!("loading {}", path.display()))?;
    Ok(Arc::new(model))
}

/// A session of `n_ctx` tokens with the default batch and threads.
fn new_session(model: &Arc<Model>, n_ctx: usize) -> anyhow::Result<Session> {
    let params = SessionParams {
        n_ctx,
        ..SessionParams::default()
    };
    Ok(Session::new(Arc::clone(model), params)?)
}

fn infer(args: InferArgs) -> anyhow::Result<()> {
    let model = load(&args.model, args.threads, true)?;
    let tokenizer = model.tokenizer();
    let prompt = tokenizer.encode_prompt(&args.prompt, args.special);
    let mut session = new_session(&model, args.ctx_size)?;
    let mut params = InferenceParameters::default()
        .with_temperature(args.temp)
        .with_top_k(args.top_k)
        .with_top_p(args.top_p)
        .with_min_p(args.min_p)
        .with_repeat_penalty(args.repeat_penalty, 64)
        .with_logprobs(if args.json { args.logprobs } else { 0 });
    if let Some(seed) = args.seed {
        params = params.with_seed(seed);
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut write_error = None;
    let stats = session.infer(&prompt, args.n_predict, &params, |token| {
        let result = if args.json {
            let logprobs: Vec<serde_json::Value> = token
                .logprobs
                .iter()
                .map(|(id, logprob)| {
                    serde_json::json!({"id": id, "text": String::from_utf8_lossy(tokenizer.token_bytes(*id)), "logprob": logprob})
                })
                .collect();
            let mut object = serde_json::json!({"id": token.id, "text": token.text});
            if args.logprobs > 0 {
                object["logprobs"] = serde_json::Value::Array(logprobs);
            }
            writeln!(out, "{object}")
        } else {
            write!(out, "{}", token.text).and_then(|_| out.flush())
        };
        match result {
            Ok(()) => InferenceFeedback::Continue,
            Err(error) => {
                write_error = Some(error);
                InferenceFeedback::Halt
            }
        }
    })?;
    if let Some(error) = write_error {
        // A closed stdout (`lmrs infer ... | head`) ends here too; `main` treats it as a normal end.
        return Err(error.into());
    }
    if !args.json {
        writeln!(out)?;
    }
    let generation_rate = if stats.generation_millis > 0.0 {
        stats.generated as f64 * 1000.0 / stats.generation_millis
    } else {
        0.0
    };
    eprintln!(
        "prompt: {} tokens ({} reused) in {:.0} ms | generated: {} tokens in {:.0} ms ({:.1} tok/s) | stop: {:?} | cpu: {}",
        prompt.len(),
        stats.prompt.reused,
        stats.prompt.millis,
        stats.generated,
        stats.generation_millis,
        generation_rate,
        stats.stop,
        lmrs::cpu_variant_name()
    );
    Ok(())
}

fn tokenize(args: TokenizeArgs) -> anyhow::Result<()> {
    let file = lmrs::gguf::GgufFile::open(&args.model)
        .with_context(|| format!("opening {}", args.model.display()))?;
    let tokenizer = lmrs::Tokenizer::from_gguf(&file).context("building the tokenizer")?;
    match (&args.prompt, &args.file) {
        (Some(text), None) => {
            let ids = tokenizer.encode(text, args.special);
            outln!("{}", serde_json::to_string(&ids)?)?;
        }
        (None, Some(path)) => {
            let streams = file.get_str("tokenizer.ggml.model") == Some("gpt2")
                && !special_token_spans_a_cut(&tokenizer);
            if streams {
                tokenize_file_in_chunks(&tokenizer, path, args.special)?;
            } else {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let ids = tokenizer.encode(&text, args.special);
                outln!("{}", serde_json::to_string(&ids)?)?;
            }
        }
        _ => bail!("give either --prompt TEXT or --file FILE"),
    }
    Ok(())
}

/// Bytes read from the file at a time by `lmrs tokenize -f`.
const TOKENIZE_READ: usize = 1 << 20;

/// Where a file may be cut into separately tokenized chunks: right after a `\n` that has a visible
/// ASCII character (`!`..`~`) on each side, as in `}\nfn`.
///
/// Why the ids are those of the whole text: byte-level BPE merges only inside a pre-tokenizer
/// word, so a cut changes nothing when no word (and no special token) spans it. At such a newline
/// the white-space run is exactly that one `\n`: every pre-tokenizer regex ends a word there
/// (GPT-2's `\s+` takes the lone newline whether the next character is visible or the text ends;
/// Llama 3 / Qwen 2's `?[^\s\p{L}\p{N}]+[\r\n]*` and `\s*[\r\n]+` take the newline with what is
/// before it and stop at the visible character or the end alike; `[^\r\n\p{L}\p{N}]?\p{L}+` never
/// starts with a newline; DeepSeek's stages isolate each newline), and no regex looks behind, so
/// the next word starts at the cut in both cases. A cut next to other white space would not be
/// safe: at the end of a text `\s+(?!\S)` takes a whole run of spaces that a following word would
/// have shortened by one. SentencePiece does not split into words and adds a space at the start
/// of each text, so `tokenize` reads those models' files whole.
fn safe_cut(bytes: &[u8]) -> Option<usize> {
    (1..bytes.len().saturating_sub(1))
        .rev()
        .find(|&i| {
            bytes[i] == b'\n' && bytes[i - 1].is_ascii_graphic() && bytes[i + 1].is_ascii_graphic()
        })
        .map(|i| i + 1)
}

/// Whether a special or user-defined token contains a newline followed by a visible ASCII
/// character, so that it could match across a [`safe_cut`] (byte-level vocabularies spell an
/// ordinary newline `Ċ`; only tokens matched verbatim hold a raw one).
fn special_token_spans_a_cut(tokenizer: &lmrs::Tokenizer) -> bool {
    (0..tokenizer.vocab_size()).any(|id| {
        let text = TokenId::try_from(id)
            .ok()
            .and_then(|id| tokenizer.token_text(id))
            .unwrap_or("");
        text.as_bytes()
            .windows(2)
            .any(|w| w[0] == b'\n' && w[1].is_ascii_graphic())
    })
}

/// `lmrs tokenize -f` for byte-level BPE: reads the file a block at a time, tokenizes it up to the
/// last [`safe_cut`] and writes those ids at once, so memory stays bounded by the block size (plus
/// the longest stretch without a cut) and not by the file. The output is the JSON array the
/// whole text gives.
fn tokenize_file_in_chunks(
    tokenizer: &lmrs::Tokenizer,
    path: &std::path::Path,
    special: bool,
) -> anyhow::Result<()> {
    use std::io::Read as _;
    let reading = || format!("reading {}", path.display());
    let mut input = std::fs::File::open(path).with_context(reading)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut pending: Vec<u8> = Vec::new();
    let mut first = true;
    let mut ids_text = String::new();
    let mut write_ids = |out: &mut std::io::BufWriter<_>, text: &[u8]| -> anyhow::Result<()> {
        let text = std::str::from_utf8(text)
            .map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "stream did not contain valid UTF-8",
                )
            })
            .with_context(reading)?;
        ids_text.clear();
        for id in tokenizer.encode(text, special) {
            ids_text.push_str(if first { "[" } else { "," });
            first = false;
            std::fmt::Write::write_fmt(&mut ids_text, format_args!("{id}"))?;
        }
        out.write_all(ids_text.as_bytes())?;
        Ok(())
    };
    loop {
        let start = pending.len();
        pending.resize(start + TOKENIZE_READ, 0);
        let n = input.read(&mut pending[start..]).with_context(reading)?;
        pending.truncate(start + n);
        if n == 0 {
            write_ids(&mut out, &pending)?;
            break;
        }
        // Look for a cut in the part just read and the two bytes before it (a newline that was
        // the last byte could not be judged before): earlier bytes had none.
        let from = start.saturating_sub(2);
        if let Some(cut) = safe_cut(&pending[from..]) {
            let cut = from + cut;
            write_ids(&mut out, &pending[..cut])?;
            pending.drain(..cut);
        }
    }
    out.write_all(if first { b"[]\n" } else { b"]\n" })?;
    out.flush()?;
    Ok(())
}

/// Mean and sample standard deviation.
fn mean_and_deviation(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let variance = if values.len() > 1 {
        values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, variance.sqrt())
}

fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let mut params = ModelParams {
        repack: !args.no_repack,
        ..ModelParams::default()
    };
    if args.no_flash_attn {
        params.flash_attention = false;
    }
    if args.no_widen {
        params.widen_q5_0 = false;
    }
    if args.no_dual_layout {
        params.dual_layout = false;
    }
    let model = load_with(&args.model, Some(args.threads), params)?;
    eprintln!("cpu variant: {}", lmrs::cpu_variant());
    let info = model.info().clone();
    let n_vocab = info.hyperparameters.n_vocab as u64;
    let n_ctx = (args.n_prompt + args.n_gen + 16).max(64);
    let mut session = Session::new(
        Arc::clone(&model),
        SessionParams {
            n_ctx,
            n_batch: args.n_prompt.max(1),
            n_threads: args.threads,
            cache_reuse_min_tokens: 0,
            cache_reuse_fence: None,
        },
    )?;
    // Deterministic pseudo-random tokens (as llama-bench uses random tokens).
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next_token = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n_vocab) as TokenId
    };
    let repetitions = args.repetitions.max(1);
    let mut results = Vec::new();
    if args.n_prompt > 0 {
        let prompt: Vec<TokenId> = (0..args.n_prompt).map(|_| next_token()).collect();
        session.truncate(0);
        session.feed(&prompt)?; // warm-up
        let mut rates = Vec::new();
        for _ in 0..repetitions {
            session.truncate(0);
            let started = Instant::now();
            session.feed(&prompt)?;
            rates.push(args.n_prompt as f64 / started.elapsed().as_secs_f64());
        }
        results.push((format!("pp{}", args.n_prompt), rates));
    }
    if args.n_gen > 0 {
        let tokens: Vec<TokenId> = (0..args.n_gen).map(|_| next_token()).collect();
        session.truncate(0);
        session.feed(&tokens[..1])?; // warm-up
        let mut rates = Vec::new();
        for _ in 0..repetitions {
            session.truncate(0);
            let started = Instant::now();
            for n in 1..=args.n_gen {
                session.feed(&tokens[..n])?;
            }
            rates.push(args.n_gen as f64 / started.elapsed().as_secs_f64());
        }
        results.push((format!("tg{}", args.n_gen), rates));
    }
    let model_name = info
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let size_mib = info.file_size as f64 / (1024.0 * 1024.0);
    if args.json {
        let rows: Vec<serde_json::Value> = results
            .iter()
            .map(|(test, rates)| {
                let (mean, deviation) = mean_and_deviation(rates);
                serde_json::json!({
                    "model": model_name, "size_mib": size_mib, "params": info.n_params,
                    "threads": args.threads, "cpu_variant": lmrs::cpu_variant_name(), "test": test, "t_s": mean, "t_s_stddev": deviation, "samples": rates,
                    "repacked_mib": info.repacked_bytes as f64 / (1024.0 * 1024.0),
                    "widened_mib": info.widened_bytes as f64 / (1024.0 * 1024.0),
                })
            })
            .collect();
        outln!("{}", serde_json::to_string_pretty(&rows)?)?;
    } else {
        outln!("| model | size | params | backend | threads | test | t/s |")?;
        outln!("| --- | ---: | ---: | --- | ---: | ---: | ---: |")?;
        for (test, rates) in &results {
            let (mean, deviation) = mean_and_deviation(rates);
            outln!(
                "| {model_name} | {size_mib:.2} MiB | {:.2} M | CPU ({}) | {} | {test} | {mean:.2} ± {deviation:.2} |",
                info.n_params as f64 / 1e6,
                ggml_sys_features(),
                args.threads
            )?;
        }
    }
    Ok(())
}

/// The backend column of the bench table: the CPU variant that ran, then its features.
fn ggml_sys_features() -> String {
    format!("{} {}", lmrs::cpu_variant_name(), lmrs::cpu_features())
}

fn info(args: InfoArgs) -> anyhow::Result<()> {
    let model = load(&args.model, None, true)?;
    let info = model.info();
    let tokenizer = model.tokenizer();
    outln!(
        "file:          {} ({:.1} MiB)",
        info.path.display(),
        info.file_size as f64 / (1024.0 * 1024.0)
    )?;
    if let Some(name) = &info.name {
        outln!("name:          {name}")?;
    }
    outln!("architecture:  {}", info.architecture)?;
    outln!("parameters:    {:.1} M", info.n_params as f64 / 1e6)?;
    let hp = &info.hyperparameters;
    outln!(
        "layers:        {} (embedding {}, feed-forward {}, heads {} / kv {} of width {})",
        hp.n_layer,
        hp.n_embd,
        hp.n_ff,
        hp.n_head,
        hp.n_head_kv,
        hp.head_dim
    )?;
    outln!("context:       {} tokens (training)", hp.n_ctx_train)?;
    let types: Vec<String> = info
        .tensor_types
        .iter()
        .map(|(name, count)| format!("{name} x{count}"))
        .collect();
    outln!("tensor types:  {}", types.join(", "))?;
    outln!(
        "repacked:      {:.1} MiB of weights in GGML's interleaved layout",
        info.repacked_bytes as f64 / (1024.0 * 1024.0)
    )?;
    outln!(
        "widened:       {:.1} MiB of Q5_0 matrices stored as Q8_0 (same values, faster kernels)",
        info.widened_bytes as f64 / (1024.0 * 1024.0)
    )?;
    outln!(
        "dual layout:   {:.1} MiB of repacked matrices also used in place for prompts of {}+ tokens",
        info.dual_layout_bytes as f64 / (1024.0 * 1024.0),
        lmrs::IN_PLACE_MIN_BATCH
    )?;
    outln!("vocabulary:    {} tokens", tokenizer.vocab_size())?;
    let show = |id: Option<TokenId>| match id {
        Some(id) => format!("{id} {:?}", tokenizer.token_text(id).unwrap_or("")),
        None => "-".to_string(),
    };
    outln!(
        "bos / eos:     {} / {} (add bos: {})",
        show(tokenizer.bos()),
        show(tokenizer.eos()),
        tokenizer.add_bos()
    )?;
    let fim = tokenizer.fim();
    outln!("fim prefix:    {}", show(fim.prefix))?;
    outln!("fim suffix:    {}", show(fim.suffix))?;
    outln!("fim middle:    {}", show(fim.middle))?;
    outln!("fim pad:       {}", show(fim.pad))?;
    outln!("repo name:     {}", show(fim.repo_name))?;
    outln!("file sep:      {}", show(fim.file_separator))?;
    // As the completion pipeline decides (`CompletionModel::fim_support`): FIM needs all three.
    let completion = if fim.prefix.is_some() && fim.suffix.is_some() && fim.middle.is_some() {
        "fill-in-the-middle (prefix, suffix and middle tokens)"
    } else {
        "prefix only: no FIM tokens, so completion continues the text before the cursor and \
         ignores what follows it"
    };
    outln!("completion:    {completion}")?;
    outln!("cpu:           {}", lmrs::cpu_features())?;
    outln!("cpu variant:   {}", lmrs::cpu_variant())?;
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    if let Some(rss) = resident_bytes() {
        outln!("resident:      {:.1} MiB after loading", mib(rss))?;
    }
    let mut session = new_session(&model, args.ctx_size)?;
    // Evaluate a prompt batch (large enough for the dual layout's in-place twins) and then one
    // token (the repacked matrices), so every weight page in use has been touched: the honest
    // resident figure.
    let words = tokenizer.encode("fn main() {", false);
    if !words.is_empty() {
        let batch: Vec<_> = words
            .iter()
            .copied()
            .cycle()
            .take(lmrs::IN_PLACE_MIN_BATCH)
            .collect();
        session.feed(&batch)?;
        session.feed(&words[..1])?;
    }
    if let Some(rss) = resident_bytes() {
        outln!(
            "in use:        {:.1} MiB resident after evaluating a prompt with a {}-token session (KV cache {:.1} MiB, compute buffer {:.1} MiB)",
            mib(rss),
            args.ctx_size,
            mib(session.kv_cache_bytes() as u64),
            mib(session.compute_buffer_bytes() as u64)
        )?;
    }
    Ok(())
}

/// Resident memory of this process (`VmRSS` of Linux's `/proc/self/status`), if known.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
