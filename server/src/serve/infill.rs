//! The prompt of `POST /infill` (and of `/v1/completions` with a `suffix`), in one of two layouts
//! (`lmrs serve --infill-prompt`):
//!
//! - **`lmrs`** (the default): the language server's own prompt and stop rules (see
//!   [`crate::completion::prompt`] and [`crate::completion::stop_rules`]), built from the request's
//!   fields as if they were a document: `input_prefix` + `prompt` is the text before the cursor,
//!   `input_suffix` the text after it, and `input_extra` chunks are other files' code, labelled with
//!   their names. Its budgets (384 tokens before the cursor, 128 after, by default) and its
//!   line-anchored order keep a CPU's prompt short, and a keystroke evaluates only the typed tokens:
//!   the same answers and latencies as `lmrs lsp` give an editor.
//! - **`llama.cpp`**: llama.cpp's server's layout, so that llama.vim and llama.vscode get the
//!   prompt they were tuned on:
//!
//! ```text
//! <|repo_name|>myproject\n                 (when the model has the token)
//! <|file_sep|>FILENAME\nTEXT ...            (one per input_extra chunk; "\n\n--- snippet ---\n\n"
//!                                           before TEXT when the model has no file separator)
//! <|file_sep|>filename\n                    (the current file, under a fixed name)
//! <|fim_prefix|>PREFIX PROMPT<|fim_suffix|>SUFFIX<|fim_middle|>
//! ```
//!
//!   Budgets, in tokens, with `n_batch` the prompt batch (2048 as in llama.cpp, at most half the
//!   context): the last `3/4 n_batch` tokens of the prefix, the first `n_batch/4 - 2 - len(PROMPT)`
//!   of the suffix, and the last `n_ctx - n_batch - 2 n_predict` tokens of the extra chunks.
//!
//! In both, the prefix and suffix are tokenized without special tokens: code that spells
//! `<|fim_middle|>` cannot inject it.

use lmrs::{TokenId, Tokenizer};
use ropey::Rope;

use crate::completion::context::CursorContext;
use crate::completion::cross_file::ContextChunk;
use crate::completion::model::{fim_support_of, segments_to_tokens};
use crate::completion::prompt::{build_prompt, PromptInput, PromptParams};
use crate::completion::stop_rules::StopContext;
use crate::config::FimOrder;

/// llama.cpp's default prompt batch, which its infill budgets are fractions of.
pub(crate) const INFILL_BATCH_TOKENS: usize = 2048;

/// One `input_extra` chunk: another file (or part of one) the client thinks is relevant.
#[derive(Clone, Debug, Default, serde::Deserialize)]
pub(crate) struct ExtraChunk {
    /// The file's name (`tmp` when absent, as llama.cpp).
    #[serde(default)]
    pub(crate) filename: Option<String>,
    /// Its text.
    #[serde(default)]
    pub(crate) text: String,
}

/// What an infill prompt is made of.
#[derive(Clone, Debug, Default)]
pub(crate) struct InfillInput<'a> {
    /// Code before the cursor (or before the cursor line, with `prompt`).
    pub(crate) prefix: &'a str,
    /// Code after the cursor.
    pub(crate) suffix: &'a str,
    /// Text after the prefix that the model continues (llama.vim: the cursor line so far).
    pub(crate) prompt: &'a str,
    /// Other files.
    pub(crate) extra: &'a [ExtraChunk],
    /// Tokens the request may generate (the extra chunks leave room for twice that).
    pub(crate) n_predict: usize,
    /// The slot's context size.
    pub(crate) n_ctx: usize,
}

/// Why a model cannot take an infill prompt.
#[derive(Debug, thiserror::Error)]
pub(crate) enum InfillError {
    /// The vocabulary lacks a FIM token.
    #[error("this model has no fill-in-the-middle tokens (prefix, suffix and middle are needed); use /completion with a plain prompt")]
    NoFimTokens,
}

/// The infill prompt's tokens.
pub(crate) fn build_infill_prompt(
    tokenizer: &Tokenizer,
    input: &InfillInput<'_>,
) -> Result<Vec<TokenId>, InfillError> {
    let fim = tokenizer.fim();
    let (Some(prefix_token), Some(suffix_token), Some(middle_token)) =
        (fim.prefix, fim.suffix, fim.middle)
    else {
        return Err(InfillError::NoFimTokens);
    };
    let encode = |text: &str| tokenizer.encode(text, false);

    // The repository header and the extra chunks, each after its file separator.
    let mut extra = Vec::new();
    if let Some(repo_name) = fim.repo_name {
        extra.push(repo_name);
        extra.extend(encode("myproject\n"));
    }
    for chunk in input.extra {
        let filename = chunk.filename.as_deref().unwrap_or("tmp");
        match fim.file_separator {
            Some(separator) => {
                extra.push(separator);
                extra.extend(encode(&format!("{filename}\n")));
            }
            None => extra.extend(encode("\n\n--- snippet ---\n\n")),
        }
        extra.extend(encode(&chunk.text));
    }
    if let Some(separator) = fim.file_separator {
        extra.push(separator);
        extra.extend(encode("filename\n"));
    }

    // Budgets: the prefix's end, the suffix's start, the extra chunks' end.
    // llama.cpp's 2048 is half its default context; a smaller context gets half of itself, so
    // that prefix and suffix never fill it (llama.cpp's batch is always below its context).
    let n_batch = INFILL_BATCH_TOKENS.min(input.n_ctx / 2);
    let prompt = encode(input.prompt);
    let prefix = encode(input.prefix);
    let suffix = encode(input.suffix);
    let prefix_take = prefix.len().min(3 * (n_batch / 4));
    let suffix_take = suffix
        .len()
        .min((n_batch / 4).saturating_sub(2 + prompt.len()));
    let extra_take = extra
        .len()
        .min(input.n_ctx.saturating_sub(n_batch + 2 * input.n_predict));

    let mut tokens = Vec::with_capacity(extra_take + prefix_take + suffix_take + prompt.len() + 4);
    if tokenizer.add_bos() {
        tokens.extend(tokenizer.bos());
    }
    tokens.extend_from_slice(&extra[extra.len() - extra_take..]);
    tokens.push(prefix_token);
    tokens.extend_from_slice(&prefix[prefix.len() - prefix_take..]);
    tokens.extend_from_slice(&prompt);
    tokens.push(suffix_token);
    tokens.extend_from_slice(&suffix[..suffix_take]);
    tokens.push(middle_token);
    Ok(tokens)
}

/// Which prompt layout `/infill` uses (`lmrs serve --infill-prompt`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum InfillLayout {
    /// The language server's prompt, budgets and stop rules.
    #[default]
    Lmrs,
    /// llama.cpp's server's prompt and budgets.
    LlamaCpp,
}

/// Budgets of the `lmrs` layout, in tokens (the language server's defaults).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct EditorBudgets {
    /// Most tokens of text before the cursor.
    pub(crate) prefix_tokens: usize,
    /// Most tokens of text after the cursor.
    pub(crate) suffix_tokens: usize,
    /// Most tokens of `input_extra` chunks (taken from the prefix's budget).
    pub(crate) context_tokens: usize,
}

impl Default for EditorBudgets {
    fn default() -> Self {
        Self {
            prefix_tokens: 384,
            suffix_tokens: 128,
            context_tokens: 256,
        }
    }
}

/// The prefix window starts on a multiple of this many lines, as the language server's does
/// (typing within a block keeps the prompt's start, and so its cached tokens).
const EDITOR_BLOCK_LINES: usize = 16;

/// Most lines of a multi-line suggestion, as the language server's default.
const EDITOR_MAX_LINES: usize = 8;

/// An infill prompt in the `lmrs` layout, with what its stop rules need.
#[derive(Clone, Debug)]
pub(crate) struct EditorPrompt {
    /// The prompt's tokens.
    pub(crate) tokens: Vec<TokenId>,
    /// Text removed from the end of the cursor line that the generation must start with (token
    /// healing); it is not part of the answer.
    pub(crate) heal: String,
    /// The cursor line and what follows it, for the stop rules.
    pub(crate) stop: StopContext,
}

/// The `lmrs` layout's prompt of `input`: the request's text as a document with the cursor after
/// `prefix + prompt`, laid out by the language server's prompt builder.
pub(crate) fn build_editor_prompt(
    tokenizer: &Tokenizer,
    input: &InfillInput<'_>,
    budgets: &EditorBudgets,
) -> Result<EditorPrompt, InfillError> {
    let fim = fim_support_of(tokenizer);
    if !fim.fim {
        return Err(InfillError::NoFimTokens);
    }
    let count = |text: &str| tokenizer.encode(text, false).len();
    // The request's text as a document; only the windows around the cursor are copied out.
    let before = format!("{}{}", input.prefix, input.prompt);
    let mut document = Rope::from_str(&before);
    let cursor = document.len_chars();
    document.insert(cursor, input.suffix);
    let around = CursorContext::extract(
        &document,
        cursor,
        budgets.prefix_tokens,
        budgets.suffix_tokens,
    );
    let context: Vec<ContextChunk> = input
        .extra
        .iter()
        .filter(|chunk| !chunk.text.trim().is_empty())
        .map(|chunk| {
            let mut text = chunk.text.clone();
            if !text.ends_with('\n') {
                text.push('\n');
            }
            ContextChunk {
                path: chunk.filename.clone().unwrap_or_else(|| "tmp".to_owned()),
                line: 0,
                text,
                name: String::new(),
            }
        })
        .collect();
    let prompt_input = PromptInput {
        prefix: &around.prefix,
        prefix_first_line: around.prefix_first_line,
        suffix: &around.suffix,
        repo_name: None,
        // Other files' chunks are labelled with their names, the current file with a fixed one
        // (as llama.cpp's layout does): the client does not send its name.
        file_path: (!context.is_empty()).then_some("filename"),
        snippet: None,
        context: &context,
    };
    let params = PromptParams {
        prefix_tokens: budgets.prefix_tokens,
        suffix_tokens: budgets.suffix_tokens,
        order: FimOrder::LinePsm,
        block_lines: EDITOR_BLOCK_LINES,
        snippet_tokens: 0,
        context_tokens: if context.is_empty() {
            0
        } else {
            budgets.context_tokens
        },
    };
    let built = build_prompt(&prompt_input, fim, &params, &count);
    let tokens = segments_to_tokens(tokenizer, &built.segments);
    let stop = StopContext::new(
        around.line_before_cursor(),
        &around.suffix,
        true,
        EDITOR_MAX_LINES,
    );
    Ok(EditorPrompt {
        tokens,
        heal: built.heal,
        stop,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use lmrs::{Model, ModelParams};
    use lmrs_fixtures::tiny::{write_tiny_model, TinyArch};

    use super::*;

    fn tiny_model() -> Arc<Model> {
        let dir = std::env::temp_dir().join(format!("lmrs-infill-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tiny.gguf");
        write_tiny_model(&path, TinyArch::Qwen2, 5).unwrap();
        Arc::new(Model::load(&path, ModelParams::default()).unwrap())
    }

    #[test]
    fn layout_is_repo_header_chunks_current_file_then_prefix_suffix_middle() {
        let model = tiny_model();
        let tokenizer = model.tokenizer();
        let fim = tokenizer.fim();
        let encode = |text: &str| tokenizer.encode(text, false);
        let extra = [ExtraChunk {
            filename: Some("ops.py".into()),
            text: "def sub(a, b):\n    return a - b\n".into(),
        }];
        let input = InfillInput {
            prefix: "def add(a, b):\n",
            suffix: "\nprint(add(1, 2))\n",
            prompt: "    ret",
            extra: &extra,
            n_predict: 16,
            n_ctx: 4096,
        };
        let tokens = build_infill_prompt(tokenizer, &input).unwrap();
        let mut expected = vec![fim.repo_name.unwrap()];
        expected.extend(encode("myproject\n"));
        expected.push(fim.file_separator.unwrap());
        expected.extend(encode("ops.py\n"));
        expected.extend(encode(&extra[0].text));
        expected.push(fim.file_separator.unwrap());
        expected.extend(encode("filename\n"));
        expected.push(fim.prefix.unwrap());
        expected.extend(encode(input.prefix));
        expected.extend(encode(input.prompt));
        expected.push(fim.suffix.unwrap());
        expected.extend(encode(input.suffix));
        expected.push(fim.middle.unwrap());
        assert_eq!(tokens, expected);
        // Code that spells a FIM token stays text.
        let sneaky = InfillInput {
            prefix: "<|fim_middle|>",
            ..input.clone()
        };
        let tokens = build_infill_prompt(tokenizer, &sneaky).unwrap();
        assert_eq!(tokens.iter().filter(|&&t| Some(t) == fim.middle).count(), 1);
    }

    #[test]
    fn budgets_keep_the_prefix_end_the_suffix_start_and_the_extra_end() {
        let model = tiny_model();
        let tokenizer = model.tokenizer();
        let fim = tokenizer.fim();
        let prefix = "x = 1\n".repeat(400);
        let suffix = "y = 2\n".repeat(400);
        let extra = [ExtraChunk {
            filename: None,
            text: "z = 3\n".repeat(400),
        }];
        let n_ctx = 512;
        let input = InfillInput {
            prefix: &prefix,
            suffix: &suffix,
            prompt: "",
            extra: &extra,
            n_predict: 16,
            n_ctx,
        };
        let tokens = build_infill_prompt(tokenizer, &input).unwrap();
        let at = |id| tokens.iter().position(|&t| Some(t) == id).unwrap();
        let (pre, suf, mid) = (at(fim.prefix), at(fim.suffix), at(fim.middle));
        // n_batch = n_ctx / 2 here: 3/4 of it for the prefix, 1/4 - 2 for the suffix, and the
        // end of the extra chunks gets n_ctx - n_batch - 2 n_predict.
        let n_batch = n_ctx / 2;
        assert_eq!(suf - pre - 1, 3 * n_batch / 4);
        assert_eq!(mid - suf - 1, n_batch / 4 - 2);
        assert_eq!(pre, n_ctx - n_batch - 2 * 16);
        let full_prefix = tokenizer.encode(&prefix, false);
        assert_eq!(
            &tokens[pre + 1..suf],
            &full_prefix[full_prefix.len() - 3 * n_batch / 4..]
        );
        let full_suffix = tokenizer.encode(&suffix, false);
        assert_eq!(&tokens[suf + 1..mid], &full_suffix[..n_batch / 4 - 2]);
        assert!(tokens.len() < n_ctx);
        assert!(tokenizer
            .decode(&tokens[..pre])
            .ends_with("z = 3\nfilename\n"));
        // Without extra chunks the header is only the repository line and the file separator.
        let bare = InfillInput {
            extra: &[],
            ..input.clone()
        };
        let tokens = build_infill_prompt(tokenizer, &bare).unwrap();
        assert_eq!(tokens[0], fim.repo_name.unwrap());
    }

    /// The `lmrs` layout, shown with the FIM tokens spelled out.
    fn editor_prompt(input: &InfillInput<'_>) -> (String, EditorPrompt) {
        let model = tiny_model();
        let tokenizer = model.tokenizer();
        let prompt = build_editor_prompt(tokenizer, input, &EditorBudgets::default()).unwrap();
        let mut text = String::new();
        for run in prompt
            .tokens
            .chunk_by(|a, b| !tokenizer.is_special(*a) && !tokenizer.is_special(*b))
        {
            match run {
                [one] if tokenizer.is_special(*one) => {
                    text.push_str(tokenizer.token_text(*one).unwrap())
                }
                _ => text.push_str(&tokenizer.decode(run)),
            }
        }
        (text, prompt)
    }

    #[test]
    fn editor_layout_is_the_language_servers_line_anchored_prompt_with_healing() {
        let input = InfillInput {
            prefix: "def add(a, b):\n",
            suffix: "\nprint(add(1, 2))\n",
            prompt: "    ret",
            n_predict: 16,
            n_ctx: 4096,
            ..InfillInput::default()
        };
        let (text, prompt) = editor_prompt(&input);
        // The cursor line comes after the middle token, its last word healed.
        assert_eq!(
            text,
            "<|fim_prefix|>def add(a, b):\n<|fim_suffix|>\nprint(add(1, 2))\n<|fim_middle|>   "
        );
        assert_eq!(prompt.heal, " ret");
        assert_eq!(prompt.stop.cursor_indent, 4);
        assert_eq!(prompt.stop.next_line.as_deref(), Some("print(add(1, 2))"));
    }

    #[test]
    fn editor_layout_labels_extra_chunks_with_their_file_names() {
        let extra = [
            ExtraChunk {
                filename: Some("ops.py".into()),
                text: "def sub(a, b):\n    return a - b".into(),
            },
            ExtraChunk {
                filename: None,
                text: "  \n".into(),
            },
        ];
        let input = InfillInput {
            prefix: "import ops\n",
            suffix: "",
            prompt: "x = ",
            extra: &extra,
            n_predict: 16,
            n_ctx: 4096,
        };
        let (text, _) = editor_prompt(&input);
        assert_eq!(
            text,
            "<|file_sep|>ops.py\ndef sub(a, b):\n    return a - b\n<|file_sep|>filename\n\
             <|fim_prefix|>import ops\n<|fim_suffix|><|fim_middle|>x ="
        );
    }
}
