//! The prompt of `POST /infill` (and of `/v1/completions` with a `suffix`), laid out as llama.cpp's
//! server lays it, so that llama.vim and llama.vscode get the prompt they were tuned on:
//!
//! ```text
//! <|repo_name|>myproject\n                 (when the model has the token)
//! <|file_sep|>FILENAME\nTEXT ...            (one per input_extra chunk; "\n\n--- snippet ---\n\n"
//!                                           before TEXT when the model has no file separator)
//! <|file_sep|>filename\n                    (the current file, under a fixed name)
//! <|fim_prefix|>PREFIX PROMPT<|fim_suffix|>SUFFIX<|fim_middle|>
//! ```
//!
//! Budgets, in tokens, with `n_batch` the prompt batch (2048 as in llama.cpp, at most half the
//! context):
//! the last `3/4 n_batch` tokens of the prefix, the first `n_batch/4 - 2 - len(PROMPT)` of the
//! suffix, and the last `n_ctx - n_batch - 2 n_predict` tokens of the extra chunks. The prefix and
//! suffix are tokenized without special tokens: code that spells `<|fim_middle|>` cannot inject it.

use lmrs::{TokenId, Tokenizer};

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
}
