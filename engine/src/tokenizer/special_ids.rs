//! Special token ids (BOS, EOS, FIM, ...) and the end-of-generation set, resolved like llama.cpp.
//!
//! Ids come from `tokenizer.ggml.*_token_id` metadata; llama.cpp then looks up well-known token
//! texts for what the metadata leaves out (EOT, EOM and the FIM tokens), forces every such token
//! to the control type, and builds the set of tokens that end generation from the FIM pad /
//! repository / file-separator tokens, a list of well-known texts, and EOS/EOT/EOM.

use crate::gguf::GgufFile;

use super::vocab::{attr, TokenId, Vocab};

/// The fill-in-the-middle tokens of a code model (`None` where the vocabulary has none).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FimTokens {
    /// Starts the code before the cursor (`<|fim_prefix|>`, `<fim_prefix>`, `<PRE>`, DeepSeek's `<｜fim▁begin｜>`).
    pub prefix: Option<TokenId>,
    /// Starts the code after the cursor (`<|fim_suffix|>`, `<SUF>`, DeepSeek's `<｜fim▁hole｜>`).
    pub suffix: Option<TokenId>,
    /// Asks for the missing middle (`<|fim_middle|>`, `<MID>`, DeepSeek's `<｜fim▁end｜>`).
    pub middle: Option<TokenId>,
    /// Padding (`<|fim_pad|>`); ends generation.
    pub pad: Option<TokenId>,
    /// Starts the repository name (`<|repo_name|>`, `<reponame>`); ends generation.
    pub repo_name: Option<TokenId>,
    /// Separates files of a repository-level prompt (`<|file_sep|>`, `<file_sep>`).
    pub file_separator: Option<TokenId>,
}

/// Everything special about a vocabulary's ids.
#[derive(Clone, Debug, Default)]
pub(crate) struct SpecialIds {
    pub(crate) bos: Option<TokenId>,
    pub(crate) eos: Option<TokenId>,
    pub(crate) eot: Option<TokenId>,
    pub(crate) eom: Option<TokenId>,
    pub(crate) unknown: Option<TokenId>,
    pub(crate) padding: Option<TokenId>,
    pub(crate) fim: FimTokens,
    /// Sorted, without duplicates.
    pub(crate) end_of_generation: Vec<TokenId>,
}

/// Which tokenizer family the defaults are for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Family {
    SentencePiece,
    BytePairs,
}

const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];
const EOM_TEXTS: &[&str] = &["<|eom_id|>"];
const FIM_PREFIX_TEXTS: &[&str] = &[
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<fim_prefix>",
    "<｜fim▁begin｜>",
    "<PRE>",
    "▁<PRE>",
    "<|code_prefix|>",
    "<|prefix|>",
];
const FIM_SUFFIX_TEXTS: &[&str] = &[
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<fim_suffix>",
    "<｜fim▁hole｜>",
    "<SUF>",
    "▁<SUF>",
    "<|code_suffix|>",
    "<|suffix|>",
];
const FIM_MIDDLE_TEXTS: &[&str] = &[
    "<|fim_middle|>",
    "<fim-middle>",
    "<fim_middle>",
    "<｜fim▁end｜>",
    "<MID>",
    "▁<MID>",
    "<|code_middle|>",
    "<|middle|>",
];
const FIM_PAD_TEXTS: &[&str] = &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"];
const FIM_REPO_TEXTS: &[&str] = &[
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
];
const FIM_SEP_TEXTS: &[&str] = &["<|file_sep|>"];
/// Extra file-separator spellings lmrs accepts for [`FimTokens`] (StarCoder 2 and SmolLM's
/// `<file_sep>`, CodeGemma's `<|file_separator|>`); llama.cpp does not know them, so they are not
/// end-of-generation tokens (completion stops at them anyway: they are control tokens).
const EXTRA_FILE_SEP_TEXTS: &[&str] = &["<file_sep>", "<|file_separator|>"];
/// Texts that end generation whatever the metadata says.
const END_OF_GENERATION_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];

impl SpecialIds {
    /// Resolves the ids and adjusts token attributes the way llama.cpp does.
    pub(crate) fn resolve(file: &GgufFile, vocab: &mut Vocab, family: Family) -> SpecialIds {
        let n = vocab.len();
        let in_range = |id: TokenId| (id as usize) < n;
        let (default_bos, default_eos, default_unk) = match family {
            Family::SentencePiece => (Some(1), Some(2), Some(0)),
            Family::BytePairs => (Some(11), Some(11), None),
        };
        let mut ids = SpecialIds {
            bos: default_bos.filter(|&id| in_range(id)),
            eos: default_eos.filter(|&id| in_range(id)),
            unknown: default_unk.filter(|&id| in_range(id)),
            ..SpecialIds::default()
        };
        let mut fim_pre = None;
        let mut fim_suf = None;
        let mut fim_mid = None;
        let mut fim_pad = None;
        let mut fim_rep = None;
        let mut fim_sep = None;
        let from_metadata = |key: &str, slot: &mut Option<TokenId>| {
            if let Some(id) = file.get_u32(key).filter(|&id| in_range(id)) {
                *slot = Some(id);
            }
        };
        from_metadata("tokenizer.ggml.bos_token_id", &mut ids.bos);
        from_metadata("tokenizer.ggml.eos_token_id", &mut ids.eos);
        from_metadata("tokenizer.ggml.eot_token_id", &mut ids.eot);
        from_metadata("tokenizer.ggml.eom_token_id", &mut ids.eom);
        from_metadata("tokenizer.ggml.unknown_token_id", &mut ids.unknown);
        from_metadata("tokenizer.ggml.padding_token_id", &mut ids.padding);
        from_metadata("tokenizer.ggml.fim_pre_token_id", &mut fim_pre);
        from_metadata("tokenizer.ggml.fim_suf_token_id", &mut fim_suf);
        from_metadata("tokenizer.ggml.fim_mid_token_id", &mut fim_mid);
        from_metadata("tokenizer.ggml.fim_pad_token_id", &mut fim_pad);
        from_metadata("tokenizer.ggml.fim_rep_token_id", &mut fim_rep);
        from_metadata("tokenizer.ggml.fim_sep_token_id", &mut fim_sep);
        // The deprecated keys are read last, so (as in llama.cpp) they win when both are present.
        from_metadata("tokenizer.ggml.prefix_token_id", &mut fim_pre);
        from_metadata("tokenizer.ggml.suffix_token_id", &mut fim_suf);
        from_metadata("tokenizer.ggml.middle_token_id", &mut fim_mid);

        // Fill the gaps from well-known texts; whatever is found becomes a control token.
        let find = |slot: &mut Option<TokenId>, texts: &[&str], vocab: &mut Vocab| {
            if slot.is_some() {
                return;
            }
            if let Some(id) = texts.iter().find_map(|t| vocab.token_id(t)) {
                *slot = Some(id);
                vocab.add_attrs(id, attr::CONTROL);
            }
        };
        find(&mut ids.eot, EOT_TEXTS, vocab);
        find(&mut ids.eom, EOM_TEXTS, vocab);
        find(&mut fim_pre, FIM_PREFIX_TEXTS, vocab);
        find(&mut fim_suf, FIM_SUFFIX_TEXTS, vocab);
        find(&mut fim_mid, FIM_MIDDLE_TEXTS, vocab);
        find(&mut fim_pad, FIM_PAD_TEXTS, vocab);
        find(&mut fim_rep, FIM_REPO_TEXTS, vocab);
        find(&mut fim_sep, FIM_SEP_TEXTS, vocab);

        let mut eog: Vec<TokenId> = [fim_pad, fim_rep, fim_sep].into_iter().flatten().collect();
        for text in END_OF_GENERATION_TEXTS {
            if let Some(id) = vocab.token_id(text) {
                eog.push(id);
                vocab.add_attrs(id, attr::CONTROL);
            }
        }
        // gpt-oss: these are always rendered, as user-defined tokens.
        for text in ["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"] {
            if let Some(id) = vocab.token_id(text) {
                vocab.set_attrs(id, attr::USER_DEFINED);
            }
        }
        eog.extend([ids.eos, ids.eot, ids.eom].into_iter().flatten());
        eog.sort_unstable();
        eog.dedup();

        let eog_with_text = |eog: &[TokenId], vocab: &Vocab, text: &str| {
            eog.iter().copied().find(|&id| vocab.text(id) == Some(text))
        };
        let has =
            |eog: &[TokenId], vocab: &Vocab, text: &str| eog_with_text(eog, vocab, text).is_some();
        // o200k_harmony / solar-open: `<|end|>` separates messages there, it does not end generation.
        if let Some(end) = eog_with_text(&eog, vocab, "<|end|>") {
            let has_call = has(&eog, vocab, "<|call|>") || has(&eog, vocab, "<|calls|>");
            if has_call && (has(&eog, vocab, "<|return|>") || has(&eog, vocab, "<|flush|>")) {
                eog.retain(|&id| id != end);
                vocab.set_attrs(end, attr::USER_DEFINED);
            }
        }
        // Gemma 4 and PLaMo have an ordinary `</s>`.
        if let Some(s) = eog_with_text(&eog, vocab, "</s>") {
            if has(&eog, vocab, "<|tool_response>") || has(&eog, vocab, "<|plamo:eos|>") {
                eog.retain(|&id| id != s);
                vocab.set_attrs(s, attr::NORMAL);
            }
        }

        let extra_sep = || EXTRA_FILE_SEP_TEXTS.iter().find_map(|t| vocab.token_id(t));
        ids.fim = FimTokens {
            prefix: fim_pre,
            suffix: fim_suf,
            middle: fim_mid,
            pad: fim_pad,
            repo_name: fim_rep,
            file_separator: fim_sep.or_else(extra_sep),
        };
        ids.end_of_generation = eog;
        ids
    }
}

/// Phi-3 models: llama.cpp strips white space after their special tokens (by model name).
pub(crate) fn apply_model_quirks(file: &GgufFile, vocab: &mut Vocab) {
    let name = file
        .get_str("general.name")
        .unwrap_or_default()
        .to_ascii_lowercase();
    if !(name.contains("phi-3") || name.contains("phi3")) {
        return;
    }
    let special: Vec<TokenId> = vocab
        .ids()
        .filter(|&id| vocab.has_attr(id, attr::CONTROL | attr::USER_DEFINED | attr::UNKNOWN))
        .collect();
    for id in special {
        vocab.add_attrs(id, attr::RSTRIP);
    }
    if let Some(id) = vocab.token_id("</s>") {
        vocab.add_attrs(id, attr::RSTRIP);
    }
    for text in ["<unk>", "<s>", "<|endoftext|>"] {
        if let Some(id) = vocab.token_id(text) {
            vocab.remove_attrs(id, attr::RSTRIP);
        }
    }
}
