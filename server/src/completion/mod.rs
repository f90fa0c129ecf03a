//! What to suggest, independent of LSP: the text around the cursor, the prompt, the model and its
//! worker thread, and the stop rules that end a generation.
//!
//! Data flow of one completion: the caller copies a [`pipeline::CompletionInput`] out of the
//! document ([`context`], with similar code found by [`retrieval`]); [`pipeline::run_completion`]
//! builds the prompt ([`prompt`]), feeds it to the warm session ([`model`], reusing the KV cache's
//! common prefix) and streams tokens through the stop rules ([`stop_rules`]) until a rule, a budget
//! or a cancellation ends the generation. The language server runs it on the [`worker`] thread.
//! With a remote engine configured, [`remote`] takes the place of [`model`]: the same prompt goes
//! there as text and the streamed answer goes through the same stop rules.
//!
//! The pure parts (context, prompt, retrieval, stop rules) are tested without a model; the rest
//! runs the real engine on tiny random-weight models.

pub(crate) mod context;
pub(crate) mod cross_file;
pub(crate) mod definitions;
pub(crate) mod model;
pub(crate) mod pipeline;
pub(crate) mod project;
pub(crate) mod prompt;
pub(crate) mod recent_edits;
pub(crate) mod remote;
pub(crate) mod retrieval;
pub(crate) mod stop_rules;
pub(crate) mod worker;
