//! `lmrs serve`: its flags, turned into [`ServeOptions`].

use std::path::PathBuf;

use clap::Args;

use crate::serve::ServeOptions;

/// Flags of `lmrs serve`.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// The GGUF model file
    #[arg(long, short = 'm')]
    model: PathBuf,
    /// Address to listen on; anything but loopback requires --api-key
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port (0: any free port; the address is printed on stdout)
    #[arg(long, default_value_t = 8012)]
    port: u16,
    /// Sessions of the model, each with its own KV cache, serving requests side by side
    #[arg(long, default_value_t = 1)]
    slots: usize,
    /// Requests that may wait for a free slot; more get 503 with Retry-After
    #[arg(long, default_value_t = 32)]
    queue: usize,
    /// Require `Authorization: Bearer KEY` on every endpoint but /health (also LMRS_API_KEY)
    #[arg(long, env = "LMRS_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Engine threads per slot (default: the machine's default divided among the slots)
    #[arg(long, short = 't')]
    threads: Option<usize>,
    /// Context size of each slot in tokens (at most the model's training context)
    #[arg(long, short = 'c', default_value_t = 4096)]
    ctx_size: usize,
    /// Shortest run of cached tokens moved instead of evaluated again when a prompt changes before it
    /// (0: off)
    #[arg(long, default_value_t = 64)]
    cache_reuse: usize,
    /// Largest request body in bytes (413 above)
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    max_body_bytes: usize,
    /// Allow this origin to call the API from a browser (no CORS headers without it)
    #[arg(long)]
    cors: Option<String>,
    /// The model's name in responses (default: the file name)
    #[arg(long)]
    alias: Option<String>,
    /// /infill's prompt: `lmrs` (the language server's: short budgets, line-anchored order, token
    /// healing, its stop rules, greedy unless a temperature is sent) or `llama.cpp` (llama.cpp's
    /// server's layout and budgets)
    #[arg(long, default_value = "lmrs", value_parser = ["lmrs", "llama.cpp"])]
    infill_prompt: String,
    /// /infill (lmrs prompt): tokens of code before the cursor
    #[arg(long, default_value_t = 384, value_name = "TOKENS")]
    prefix_tokens: usize,
    /// /infill (lmrs prompt): tokens of code after the cursor
    #[arg(long, default_value_t = 128, value_name = "TOKENS")]
    suffix_tokens: usize,
    /// /infill (lmrs prompt): tokens of `input_extra` chunks (other files), taken from the prefix's
    #[arg(long, default_value_t = 256, value_name = "TOKENS")]
    context_tokens: usize,
    /// Greedy /infill answers kept for repeated requests and for typing through (0: no cache)
    #[arg(long, default_value_t = 256, value_name = "ANSWERS")]
    infill_cache: usize,
}

impl ServeArgs {
    /// The options.
    pub(crate) fn to_options(&self) -> ServeOptions {
        ServeOptions {
            model: self.model.clone(),
            host: self.host.clone(),
            port: self.port,
            slots: self.slots,
            queue: self.queue,
            api_key: self.api_key.clone(),
            threads: self.threads,
            ctx_size: self.ctx_size,
            cache_reuse: self.cache_reuse,
            max_body_bytes: self.max_body_bytes,
            cors: self.cors.clone(),
            alias: self.alias.clone(),
            infill_lmrs_layout: self.infill_prompt == "lmrs",
            prefix_tokens: self.prefix_tokens,
            suffix_tokens: self.suffix_tokens,
            context_tokens: self.context_tokens,
            infill_cache: self.infill_cache,
        }
    }
}
