//! Tokenizer behaviour beyond the reference ids: streaming decode, special-token parsing, FIM and
//! end-of-generation tokens, errors, and a speed measurement (`--ignored`).

mod common;

use std::path::PathBuf;
use std::time::Instant;

use lmrs::gguf::GgufFile;
use lmrs::{TokenId, Tokenizer, TokenizerError};

fn vocab_path(name: &str) -> PathBuf {
    common::reference_dir()
        .join("vocab")
        .join(format!("ggml-vocab-{name}.gguf"))
}

fn load(path: &std::path::Path) -> Tokenizer {
    let file =
        GgufFile::open(path).unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    Tokenizer::from_gguf(&file)
        .unwrap_or_else(|e| panic!("cannot build tokenizer from {}: {e}", path.display()))
}

fn qwen_vocab() -> Tokenizer {
    load(&vocab_path("qwen2"))
}

#[test]
fn stream_decoder_holds_back_split_characters() {
    for name in ["qwen2", "llama-spm", "llama-bpe"] {
        let tokenizer = load(&vocab_path(name));
        let text = "héllo 🦙 wörld ✅ ничего 你好";
        let ids = tokenizer.encode(text, false);
        let mut decoder = tokenizer.decoder();
        let mut streamed = String::new();
        let mut held_back = 0;
        for &id in &ids {
            let piece = decoder.push(id);
            if piece.is_empty() && !decoder.pending_bytes().is_empty() {
                held_back += 1;
            }
            assert!(
                !piece.contains('\u{FFFD}'),
                "{name}: split character leaked as U+FFFD"
            );
            streamed.push_str(&piece);
        }
        streamed.push_str(&decoder.flush());
        let expected = tokenizer.decode(&ids);
        assert_eq!(streamed, expected, "{name}");
        assert!(expected.ends_with(text), "{name}: {expected:?}");
        assert!(
            held_back > 0,
            "{name}: expected some token to end inside a character"
        );
    }
}

#[test]
fn stream_decoder_replaces_invalid_bytes_and_flushes_incomplete_ones() {
    let tokenizer = qwen_vocab();
    // Byte-level single-byte tokens: `ð` is byte 0xF0 (starts a 4-byte sequence), `ÿ` is 0xFF (never valid).
    let lead = tokenizer.token_id("ð").expect("byte token");
    let invalid = tokenizer.token_id("ÿ").expect("byte token");
    let mut decoder = tokenizer.decoder();
    assert_eq!(decoder.push(lead), "");
    assert_eq!(decoder.pending_bytes(), &[0xF0]);
    assert_eq!(decoder.flush(), "\u{FFFD}");
    assert_eq!(decoder.push(tokenizer.encode("a", false)[0]), "a");
    assert_eq!(decoder.push(lead), "");
    // 0xF0 0xFF can never complete: both come out replaced, nothing is held back.
    assert_eq!(decoder.push(invalid), "\u{FFFD}\u{FFFD}");
    assert!(decoder.pending_bytes().is_empty());
    // Through BPE, a stray byte in the input is read as U+FFFD, as llama.cpp does.
    assert_eq!(
        tokenizer.decode(&tokenizer.encode_bytes(&[b'x', 0xFF], false)),
        "x\u{FFFD}"
    );
}

#[test]
fn special_tokens_are_parsed_only_when_asked() {
    let tokenizer = qwen_vocab();
    let im_start = tokenizer
        .token_id("<|im_start|>")
        .expect("qwen has <|im_start|>");
    let end = tokenizer
        .token_id("<|endoftext|>")
        .expect("qwen has <|endoftext|>");
    let text = "<|im_start|>def f():<|endoftext|>";

    let parsed = tokenizer.encode(text, true);
    assert_eq!(parsed.first(), Some(&im_start));
    assert_eq!(parsed.last(), Some(&end));
    assert_eq!(tokenizer.decode(&parsed[1..parsed.len() - 1]), "def f():");

    let plain = tokenizer.encode(text, false);
    assert!(!plain.contains(&im_start) && !plain.contains(&end));
    assert!(plain.iter().all(|&id| !tokenizer.is_control(id)));
    assert_eq!(tokenizer.decode(&plain), text);
}

#[test]
fn fim_prompt_with_special_tokens_on_qwen_coder() {
    let Some(path) = common::model_path("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf") else {
        return;
    };
    let tokenizer = load(&path);
    let fim = *tokenizer.fim();
    let prompt = "<|fim_prefix|>def add(a, b):\n    <|fim_suffix|>\n<|fim_middle|>";
    let ids = tokenizer.encode(prompt, true);
    assert_eq!(ids.first().copied(), fim.prefix);
    assert_eq!(ids.last().copied(), fim.middle);
    assert!(ids.contains(&fim.suffix.expect("suffix")));
    let plain = tokenizer.encode(prompt, false);
    assert!(fim.prefix.is_some_and(|p| !plain.contains(&p)));
    assert_eq!(tokenizer.decode(&plain), prompt);
}

#[test]
fn user_defined_tokens_are_always_matched() {
    // Qwen 2.5's `<tool_call>` is user-defined: llama.cpp matches it even without `parse_special`.
    let Some(path) = common::model_path("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf") else {
        return;
    };
    let tokenizer = load(&path);
    let tool_call = tokenizer
        .token_id("<tool_call>")
        .expect("qwen has <tool_call>");
    assert!(tokenizer.is_special(tool_call) && !tokenizer.is_control(tool_call));
    let ids = tokenizer.encode("x<tool_call>y", false);
    assert!(ids.contains(&tool_call), "{ids:?}");
    assert_eq!(tokenizer.decode(&ids), "x<tool_call>y");
}

#[test]
fn control_tokens_decode_to_nothing() {
    let tokenizer = qwen_vocab();
    let end = tokenizer.token_id("<|endoftext|>").expect("token");
    assert_eq!(tokenizer.token_bytes(end), b"");
    assert_eq!(tokenizer.token_bytes(TokenId::MAX), b"");
    assert_eq!(tokenizer.decode(&[end, TokenId::MAX]), "");
}

#[test]
fn sentencepiece_adds_a_space_prefix_after_special_tokens() {
    let tokenizer = load(&vocab_path("llama-spm"));
    assert_eq!(tokenizer.bos(), Some(1));
    assert_eq!(tokenizer.eos(), Some(2));
    assert!(tokenizer.add_bos());
    let ids = tokenizer.encode("Hello</s>world", true);
    assert_eq!(tokenizer.decode(&ids), " Hello world");
    assert!(ids.contains(&2));
    assert!(tokenizer.is_end_of_generation(2));
}

#[test]
fn fim_tokens_of_qwen_coder() {
    let Some(path) = common::model_path("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf") else {
        return;
    };
    let tokenizer = load(&path);
    let fim = tokenizer.fim();
    let id = |text: &str| {
        tokenizer
            .token_id(text)
            .unwrap_or_else(|| panic!("no {text}"))
    };
    assert_eq!(fim.prefix, Some(id("<|fim_prefix|>")));
    assert_eq!(fim.suffix, Some(id("<|fim_suffix|>")));
    assert_eq!(fim.middle, Some(id("<|fim_middle|>")));
    assert_eq!(fim.pad, Some(id("<|fim_pad|>")));
    assert_eq!(fim.repo_name, Some(id("<|repo_name|>")));
    assert_eq!(fim.file_separator, Some(id("<|file_sep|>")));
    assert_eq!(
        (fim.prefix, fim.suffix, fim.middle),
        (Some(151659), Some(151661), Some(151660))
    );
    for text in [
        "<|endoftext|>",
        "<|im_end|>",
        "<|fim_pad|>",
        "<|repo_name|>",
        "<|file_sep|>",
    ] {
        assert!(
            tokenizer.is_end_of_generation(id(text)),
            "{text} should end generation"
        );
    }
    for text in ["<|fim_prefix|>", "<|fim_middle|>", "<|im_start|>"] {
        assert!(
            !tokenizer.is_end_of_generation(id(text)),
            "{text} should not end generation"
        );
    }
    assert_eq!(tokenizer.eos(), Some(id("<|im_end|>")));
    assert!(!tokenizer.add_bos());
    assert_eq!(tokenizer.vocab_size(), 151936);
}

#[test]
fn fim_tokens_of_smollm2() {
    let Some(path) = common::model_path("SmolLM2-135M-Instruct.Q4_1.gguf") else {
        return;
    };
    let tokenizer = load(&path);
    let fim = tokenizer.fim();
    assert_eq!(fim.prefix, None);
    assert_eq!(fim.repo_name, tokenizer.token_id("<reponame>"));
    assert_eq!(fim.file_separator, tokenizer.token_id("<file_sep>"));
    assert!(tokenizer.is_end_of_generation(tokenizer.token_id("<|im_end|>").expect("token")));
}

/// The FIM tokens found in a vocabulary and whether each ends generation, one line per kind.
fn fim_summary(tokenizer: &Tokenizer) -> String {
    let fim = tokenizer.fim();
    let show = |kind: &str, id: Option<TokenId>| match id {
        Some(id) => format!(
            "{kind}: {:?}{}\n",
            tokenizer.token_text(id).unwrap_or(""),
            if tokenizer.is_end_of_generation(id) {
                " (ends generation)"
            } else {
                ""
            }
        ),
        None => format!("{kind}: -\n"),
    };
    [
        show("prefix", fim.prefix),
        show("suffix", fim.suffix),
        show("middle", fim.middle),
        show("pad", fim.pad),
        show("repo", fim.repo_name),
        show("file sep", fim.file_separator),
    ]
    .concat()
}

#[test]
fn fim_tokens_of_code_model_vocabularies() {
    // DeepSeek-Coder's own spelling, found from the tokens' text (its GGUF has no fim_* ids).
    expect_test::expect![[r#"
        prefix: "<｜fim▁begin｜>"
        suffix: "<｜fim▁hole｜>"
        middle: "<｜fim▁end｜>"
        pad: -
        repo: -
        file sep: -
    "#]]
    .assert_eq(&fim_summary(&load(&vocab_path("deepseek-coder"))));
    // Refact's `<fim_prefix>` family (stable-code spells them the same) ...
    expect_test::expect![[r#"
        prefix: "<fim_prefix>"
        suffix: "<fim_suffix>"
        middle: "<fim_middle>"
        pad: "<fim_pad>" (ends generation)
        repo: "<reponame>" (ends generation)
        file sep: -
    "#]]
    .assert_eq(&fim_summary(&load(&vocab_path("refact"))));
    // ... and StarCoder's, with its file separator.
    expect_test::expect![[r#"
        prefix: "<fim_prefix>"
        suffix: "<fim_suffix>"
        middle: "<fim_middle>"
        pad: "<fim_pad>" (ends generation)
        repo: -
        file sep: "<file_sep>"
    "#]]
    .assert_eq(&fim_summary(&load(&vocab_path("starcoder"))));
    // CodeLlama's SentencePiece spelling; the llama vocabulary has none of them.
    expect_test::expect![[r#"
        prefix: -
        suffix: -
        middle: -
        pad: -
        repo: -
        file sep: -
    "#]]
    .assert_eq(&fim_summary(&load(&vocab_path("llama-spm"))));
}

#[test]
fn unsupported_vocabularies_are_clear_errors() {
    use lmrs::gguf::{MetadataArray, MetadataValue};
    use lmrs_fixtures::GgufWriter;

    let build = |model: &str, pre: Option<&str>| {
        let mut writer = GgufWriter::new();
        writer.add_metadata("tokenizer.ggml.model", MetadataValue::String(model.into()));
        if let Some(pre) = pre {
            writer.add_metadata("tokenizer.ggml.pre", MetadataValue::String(pre.into()));
        }
        writer.add_metadata(
            "tokenizer.ggml.tokens",
            MetadataValue::Array(MetadataArray::String(vec!["a".into(), "b".into()])),
        );
        writer.add_metadata(
            "tokenizer.ggml.merges",
            MetadataValue::Array(MetadataArray::String(vec!["a b".into()])),
        );
        let file = GgufFile::from_bytes(writer.to_bytes()).expect("valid gguf");
        Tokenizer::from_gguf(&file)
    };
    let error = build("bert", None).expect_err("bert is not supported");
    assert!(matches!(error, TokenizerError::UnsupportedModel { .. }));
    assert!(error.to_string().contains("gpt2"), "{error}");
    let error = build("gpt2", Some("tekken")).expect_err("tekken is not supported");
    assert!(matches!(
        error,
        TokenizerError::UnsupportedPreTokenizer { .. }
    ));
    assert!(error.to_string().contains("qwen2"), "{error}");
    let tokenizer = build("gpt2", Some("qwen2")).expect("tiny vocabulary");
    assert_eq!(tokenizer.encode("ab", false), vec![0, 1]);
}

/// Prints how long a ~100 KB source file takes to tokenize. Run with
/// `cargo test --release -p lmrs --test tokenizer_behaviour -- --ignored --nocapture`.
#[test]
#[ignore]
fn speed_of_a_100_kb_source_file() {
    let reference = common::reference_dir().join("tokenize/ggml-vocab-qwen2.json");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(reference).expect("read")).expect("json");
    let mut source = String::new();
    while source.len() < 100_000 {
        for case in json["cases"].as_array().expect("cases") {
            source.push_str(case["text"].as_str().expect("text"));
        }
    }
    source.truncate(source.floor_char_boundary_compat(100_000));
    let mut paths: Vec<(String, PathBuf)> = [
        "qwen2",
        "llama-bpe",
        "starcoder",
        "deepseek-coder",
        "llama-spm",
    ]
    .iter()
    .map(|n| (format!("ggml-vocab-{n}"), vocab_path(n)))
    .collect();
    if let Some(path) = common::model_path("gemma-3-270m-q4_k_m.gguf") {
        paths.push(("gemma-3-270m".into(), path));
    }
    for (name, path) in paths {
        let tokenizer = load(&path);
        for parse_special in [false, true] {
            let _ = tokenizer.encode(&source, parse_special); // warm-up
            let runs = 5;
            let start = Instant::now();
            let mut n = 0;
            for _ in 0..runs {
                n = tokenizer.encode(&source, parse_special).len();
            }
            let ms = start.elapsed().as_secs_f64() * 1000.0 / runs as f64;
            println!(
                "{name:<28} parse_special={parse_special:<5} {} bytes -> {n} tokens in {ms:.1} ms",
                source.len()
            );
        }
    }
}

trait FloorCharBoundary {
    fn floor_char_boundary_compat(&self, index: usize) -> usize;
}

impl FloorCharBoundary for String {
    fn floor_char_boundary_compat(&self, index: usize) -> usize {
        (0..=index.min(self.len()))
            .rev()
            .find(|&i| self.is_char_boundary(i))
            .unwrap_or(0)
    }
}
