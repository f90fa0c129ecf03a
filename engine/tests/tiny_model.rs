//! Hermetic loading tests on the tiny random-weight models of [`lmrs::tiny`]: sizes reported by
//! `info()`, the byte-level BPE vocabulary, and the errors `Model::load` gives for unsupported
//! architectures, wrong or missing tensors, bad hyperparameters and corrupted or truncated files
//! (errors, never panics).

mod tiny_support;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::Arc;

use lmrs::gguf::GgufFile;
use lmrs::{LoadError, Model, ModelParams, Session, SessionParams};
use lmrs_fixtures::tiny::{self, tiny_model_bytes, tiny_model_writer, TinyArch, TinyShape};
use tiny_support::{load_tiny, model_params, TempDir, CODE_PROMPT, SEED};

/// `Model` is shared between threads as `Arc<Model>`; sessions move between threads.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    const fn assert_send<T: Send>() {}
    assert_send_sync::<Model>();
    assert_send_sync::<Arc<Model>>();
    assert_send::<lmrs::Session>();
};

fn load_bytes(dir: &TempDir, name: &str, bytes: &[u8]) -> Result<Model, LoadError> {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("writing a test model");
    Model::load(&path, model_params())
}

/// Offset of the tensor-info entry of `name`: its length-prefixed name in the header.
fn tensor_info_offset(bytes: &[u8], name: &str) -> usize {
    let mut needle = (name.len() as u64).to_le_bytes().to_vec();
    needle.extend_from_slice(name.as_bytes());
    bytes
        .windows(needle.len())
        .position(|w| w == needle.as_slice())
        .unwrap_or_else(|| panic!("tensor {name} not in the header"))
}

/// Renames tensor `name` in place to a name of the same length (so the file stays valid).
fn rename_tensor(bytes: &mut [u8], name: &str) {
    let at = tensor_info_offset(bytes, name) + 8 + name.len() - 1;
    bytes[at] = b'X';
}

/// Rewrites the dimensions of 2-D tensor `name` in place.
fn set_tensor_dims(bytes: &mut [u8], name: &str, dims: [u64; 2]) {
    let at = tensor_info_offset(bytes, name) + 8 + name.len();
    assert_eq!(
        u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()),
        2,
        "{name} is not 2-D"
    );
    bytes[at + 4..at + 12].copy_from_slice(&dims[0].to_le_bytes());
    bytes[at + 12..at + 20].copy_from_slice(&dims[1].to_le_bytes());
}

#[test]
fn tiny_models_load_with_the_right_sizes() {
    for arch in TinyArch::ALL {
        let tiny = load_tiny(arch);
        let info = tiny.model.info();
        assert_eq!(info.architecture, arch.name());
        assert_eq!(info.name.as_deref(), Some(format!("tiny-{arch}").as_str()));
        assert_eq!(info.path, tiny.path);
        assert_eq!(info.file_size, std::fs::metadata(&tiny.path).unwrap().len());
        assert_eq!(info.hyperparameters.n_ctx_train, tiny::N_CTX_TRAIN);
        assert_eq!(info.hyperparameters.n_embd, tiny::N_EMBD);
        assert_eq!(info.hyperparameters.n_layer, tiny::N_LAYER);
        assert_eq!(info.hyperparameters.n_head, tiny::N_HEAD);
        assert_eq!(
            info.hyperparameters.n_head_kv,
            arch.kv_heads(&TinyShape::default()),
            "{arch}"
        );
        assert_eq!(info.hyperparameters.head_dim, tiny::HEAD_DIM);
        assert_eq!(
            info.hyperparameters.n_vocab,
            tiny.model.tokenizer().vocab_size()
        );
        assert!(
            info.hyperparameters.n_vocab > 256 + 200,
            "{arch}: vocabulary of {}",
            info.hyperparameters.n_vocab
        );

        // Parameters: embeddings (+ output for llama), 7 matrices, 2 norms (+ 3 biases for qwen2,
        // + QK-norms and post-norms for gemma3) per layer; the LayerNorm family's as its layout
        // says (below).
        let (n_embd, n_ff, n_vocab) = (
            tiny::N_EMBD as u64,
            tiny::N_FF as u64,
            info.hyperparameters.n_vocab as u64,
        );
        let expected = match arch {
            TinyArch::Gpt2
            | TinyArch::Starcoder
            | TinyArch::Gptneox
            | TinyArch::Bloom
            | TinyArch::Mpt
            | TinyArch::Starcoder2
            | TinyArch::Stablelm
            | TinyArch::Refact => layer_norm_family_params(arch, n_vocab),
            _ => {
                let n_kv = (tiny::N_HEAD_KV * tiny::HEAD_DIM) as u64;
                let per_layer =
                    2 * n_embd * n_embd + 2 * n_embd * n_kv + 3 * n_embd * n_ff + 2 * n_embd;
                let head_dim = tiny::HEAD_DIM as u64;
                let (n_expert, n_ff_expert) = (tiny::MOE_EXPERTS as u64, n_ff / 2);
                // What a layer has beyond the llama layer (signed: the MoE layer has no dense FFN).
                let biases: i64 = match arch {
                    TinyArch::Qwen2 => (n_embd + 2 * n_kv) as i64,
                    TinyArch::Gemma3 => (2 * head_dim + 2 * n_embd) as i64,
                    TinyArch::Qwen3 => (2 * head_dim) as i64,
                    // QK-norms, the router and the experts in place of the dense FFN.
                    TinyArch::Qwen3Moe => {
                        (2 * head_dim + n_embd * n_expert + 3 * n_embd * n_ff_expert * n_expert)
                            as i64
                            - (3 * n_embd * n_ff) as i64
                    }
                    TinyArch::Gemma2 => (2 * n_embd) as i64,
                    // Phi-3's fused projections hold as many values as the separate ones.
                    _ => 0,
                };
                // Separate output matrix (all but qwen2 and the Gemmas), and phi3's two LongRoPE factor
                // vectors.
                let output = match arch {
                    TinyArch::Qwen2 | TinyArch::Gemma | TinyArch::Gemma2 | TinyArch::Gemma3 => 0,
                    TinyArch::Phi3 => n_embd * n_vocab + head_dim,
                    _ => n_embd * n_vocab,
                };
                n_embd * n_vocab
                    + output
                    + n_embd
                    + tiny::N_LAYER as u64 * (per_layer as i64 + biases) as u64
            }
        };
        assert_eq!(info.n_params, expected, "{arch}");

        let types: Vec<&str> = info.tensor_types.iter().map(|(t, _)| t.as_str()).collect();
        for expected in ["f16", "f32", "q8_0"] {
            assert!(types.contains(&expected), "{arch}: tensor types {types:?}");
        }
    }
}

/// Parameters of a LayerNorm-family (or Refact) tiny model, from what llama.cpp's conversion of each
/// architecture writes: (norm biases, q/k/v biases, output-projection bias, FFN biases, SwiGLU gate,
/// learned positions, embedding norm, separate output matrix).
fn layer_norm_family_params(arch: TinyArch, n_vocab: u64) -> u64 {
    let (norm_bias, qkv_bias, out_bias, ffn_bias, gate, positions, embd_norm, output) = match arch {
        TinyArch::Gpt2 => (true, true, true, true, false, true, false, false),
        TinyArch::Starcoder => (true, true, true, true, false, true, false, true),
        TinyArch::Gptneox => (true, true, true, true, false, false, false, true),
        TinyArch::Bloom => (true, true, true, true, false, false, true, false),
        TinyArch::Mpt => (false, false, false, false, false, false, false, false),
        TinyArch::Starcoder2 => (true, true, true, true, false, false, false, false),
        TinyArch::Stablelm => (true, true, false, false, true, false, false, true),
        TinyArch::Refact => (false, false, false, false, true, false, false, true),
        other => panic!("{other} is not of the LayerNorm family"),
    };
    let (e, f) = (tiny::N_EMBD as u64, tiny::N_FF as u64);
    let q = (tiny::N_HEAD * tiny::HEAD_DIM) as u64;
    let kv = (arch.kv_heads(&TinyShape::default()) * tiny::HEAD_DIM) as u64;
    let on = |present: bool, n: u64| if present { n } else { 0 };
    let norm = e + on(norm_bias, e);
    let per_layer = 2 * norm
        + e * (q + 2 * kv)
        + on(qkv_bias, q + 2 * kv)
        + q * e
        + on(out_bias, e)
        + on(gate, e * f)
        + 2 * e * f
        + on(ffn_bias, f + e);
    let total = e * n_vocab
        + on(output, e * n_vocab)
        + on(positions, e * tiny::N_CTX_TRAIN as u64)
        + on(embd_norm, norm)
        + norm
        + tiny::N_LAYER as u64 * per_layer;
    if arch == TinyArch::Stablelm {
        // The tiny StableLM's second layer is laid out like StableLM 2 12B's: per-head QK norms
        // (one weight per query and key dimension), no FFN norm.
        total + q + kv - norm
    } else {
        total
    }
}

#[test]
fn tiny_models_are_reproducible_per_seed() {
    for arch in TinyArch::ALL {
        assert_eq!(tiny_model_bytes(arch, SEED), tiny_model_bytes(arch, SEED));
        assert_ne!(
            tiny_model_bytes(arch, SEED),
            tiny_model_bytes(arch, SEED + 1)
        );
    }
}

#[test]
fn tiny_vocabulary_is_a_working_byte_level_bpe() {
    for arch in TinyArch::ALL {
        let tiny = load_tiny(arch);
        let tokenizer = tiny.model.tokenizer();
        let ids = tokenizer.encode(CODE_PROMPT, false);
        assert_eq!(tokenizer.decode(&ids), CODE_PROMPT, "{arch}: round trip");
        assert!(
            ids.len() * 2 < CODE_PROMPT.len(),
            "{arch}: {} tokens for {} bytes: merges do not apply",
            ids.len(),
            CODE_PROMPT.len()
        );
        // Whole keywords and indentation are single tokens.
        for (text, expected_pieces) in
            [("def", vec!["def"]), ("    return", vec!["ĠĠĠ", "Ġreturn"])]
        {
            let pieces: Vec<&str> = tokenizer
                .encode(text, false)
                .into_iter()
                .map(|id| tokenizer.token_text(id).unwrap())
                .collect();
            assert_eq!(pieces, expected_pieces, "{arch}: {text:?}");
        }
        // Arbitrary bytes (non-ASCII, control characters) still round-trip through byte tokens.
        let odd = "naïve → 🦀\t\u{1}é";
        assert_eq!(
            tokenizer.decode(&tokenizer.encode(odd, false)),
            odd,
            "{arch}"
        );

        // Control tokens: parsed only when asked, decoded to nothing, ending generation where due.
        let fim = tokenizer.fim();
        let (prefix, suffix, middle, pad) = (
            fim.prefix.expect("fim prefix"),
            fim.suffix.expect("fim suffix"),
            fim.middle.expect("fim middle"),
            fim.pad.expect("fim pad"),
        );
        let prefix_text = tokenizer.token_text(prefix).unwrap().to_string();
        assert_eq!(tokenizer.encode(&prefix_text, true), vec![prefix], "{arch}");
        assert!(tokenizer.encode(&prefix_text, false).len() > 1, "{arch}");
        assert!(tokenizer.is_control(prefix) && tokenizer.is_control(suffix));
        assert!(tokenizer.is_control(middle));
        assert_eq!(tokenizer.token_bytes(prefix), b"");
        let eos = tokenizer.eos().expect("eos");
        assert_eq!(tokenizer.token_text(eos), Some("<|endoftext|>"));
        assert!(tokenizer.is_end_of_generation(eos));
        assert!(tokenizer.is_end_of_generation(pad));
        assert!(!tokenizer.is_end_of_generation(prefix));
        assert!(fim.file_separator.is_some(), "{arch}");
        match arch {
            _ if arch.qwen_vocabulary() => {
                assert_eq!(prefix_text, "<|fim_prefix|>");
                assert!(fim.repo_name.is_some());
                assert!(!tokenizer.add_bos());
                let text = tokenizer.encode("def f():", false);
                assert_eq!(tokenizer.encode_prompt("def f():", false), text);
            }
            TinyArch::Gpt2
            | TinyArch::Starcoder
            | TinyArch::Gptneox
            | TinyArch::Bloom
            | TinyArch::Mpt
            | TinyArch::Starcoder2
            | TinyArch::Stablelm
            | TinyArch::Refact => {
                assert_eq!(prefix_text, "<fim_prefix>");
                assert!(!tokenizer.add_bos(), "{arch}");
                let text = tokenizer.encode("def f():", false);
                assert_eq!(tokenizer.encode_prompt("def f():", false), text);
            }
            _ => {
                assert_eq!(prefix_text, "<fim_prefix>");
                assert!(tokenizer.add_bos());
                assert_eq!(tokenizer.bos(), Some(0));
                let text = tokenizer.encode("def f():", false);
                let prompt = tokenizer.encode_prompt("def f():", false);
                assert_eq!((prompt[0], &prompt[1..]), (0, &text[..]));
            }
        }
    }
}

#[test]
fn unsupported_architecture_lists_the_supported_ones() {
    let dir = TempDir::new("unsupported");
    let mut writer = tiny_model_writer(TinyArch::Qwen2, SEED);
    writer.add_string("general.architecture", "mamba");
    let error = load_bytes(&dir, "mamba.gguf", &writer.to_bytes()).unwrap_err();
    match &error {
        LoadError::UnsupportedArchitecture {
            path,
            architecture,
            supported,
        } => {
            assert_eq!(architecture, "mamba");
            // Every architecture the fixtures write is supported, and only those.
            let mut supported = supported.clone();
            supported.sort_unstable();
            let mut written: Vec<&str> = TinyArch::ALL.iter().map(|arch| arch.name()).collect();
            written.sort_unstable();
            assert_eq!(supported, written);
            assert_eq!(path, &dir.join("mamba.gguf"));
        }
        other => panic!("expected UnsupportedArchitecture, got {other:?}"),
    }
    let message = error.to_string();
    assert!(
        message.contains("mamba") && message.contains("qwen2") && message.contains("llama"),
        "{message}"
    );

    let mut writer = tiny_model_writer(TinyArch::Llama, SEED);
    writer.add_string("general.architecture", "");
    let error = load_bytes(&dir, "empty.gguf", &writer.to_bytes()).unwrap_err();
    assert!(
        matches!(error, LoadError::UnsupportedArchitecture { .. }),
        "{error:?}"
    );
}

#[test]
fn bad_hyperparameters_of_the_newer_architectures_are_clear_errors() {
    let dir = TempDir::new("newer-hparams");
    let invalid = |arch: TinyArch, edit: &dyn Fn(&mut lmrs_fixtures::GgufWriter)| {
        let mut writer = tiny_model_writer(arch, SEED);
        edit(&mut writer);
        load_bytes(&dir, &format!("{arch}.gguf"), &writer.to_bytes()).unwrap_err()
    };
    let is_invalid = |error: &LoadError, expected_key: &str| matches!(error, LoadError::InvalidHyperparameter { key, .. } if key == expected_key);
    // More experts used than there are, no experts, and another expert count than the tensors.
    let error = invalid(TinyArch::Qwen3Moe, &|w| {
        w.add_u32("qwen3moe.expert_used_count", 5);
    });
    assert!(
        is_invalid(&error, "qwen3moe.expert_used_count"),
        "{error:?}"
    );
    let error = invalid(TinyArch::Qwen3Moe, &|w| {
        w.add_u32("qwen3moe.expert_count", 0);
    });
    assert!(is_invalid(&error, "qwen3moe.expert_count"), "{error:?}");
    let error = invalid(TinyArch::Qwen3Moe, &|w| {
        w.add_u32("qwen3moe.expert_count", 8);
    });
    assert!(
        matches!(&error, LoadError::WrongShape { name, .. } if name == "blk.0.ffn_gate_exps.weight"),
        "{error:?}"
    );
    // Soft-caps are divided by.
    let error = invalid(TinyArch::Gemma2, &|w| {
        w.add_f32("gemma2.attn_logit_softcapping", 0.0);
    });
    assert!(
        is_invalid(&error, "gemma2.attn_logit_softcapping"),
        "{error:?}"
    );
    // Granite: a logit scale that is not a number, and experts it does not run.
    let error = invalid(TinyArch::Granite, &|w| {
        w.add_f32("granite.logit_scale", f32::NAN);
    });
    assert!(is_invalid(&error, "granite.logit_scale"), "{error:?}");
    let error = invalid(TinyArch::Granite, &|w| {
        w.add_string("granite.logit_scale", "8");
    });
    assert!(
        matches!(&error, LoadError::MissingMetadata { key, .. } if key == "granite.logit_scale"),
        "{error:?}"
    );
    let error = invalid(TinyArch::Granite, &|w| {
        w.add_u32("granite.expert_count", 4);
    });
    assert!(is_invalid(&error, "granite.expert_count"), "{error:?}");
    // LongRoPE's attention factor scales the rotation: it must be positive.
    let error = invalid(TinyArch::Phi3, &|w| {
        w.add_f32("phi3.rope.scaling.attn_factor", -1.0);
    });
    assert!(
        is_invalid(&error, "phi3.rope.scaling.attn_factor"),
        "{error:?}"
    );
}

#[test]
fn wrong_shape_names_the_tensor() {
    let dir = TempDir::new("shape");
    for arch in TinyArch::ALL {
        let mut bytes = tiny_model_bytes(arch, SEED);
        // Same element count and byte size, transposed: the file is valid, the shape is not.
        let (n_embd, n_ff) = (tiny::N_EMBD as u64, tiny::N_FF as u64);
        let (tensor, right) = match arch {
            TinyArch::Qwen3Moe => (
                "blk.1.ffn_gate_inp.weight",
                [n_embd, tiny::MOE_EXPERTS as u64],
            ),
            TinyArch::Phi3 => ("blk.1.ffn_up.weight", [n_embd, 2 * n_ff]),
            _ => ("blk.1.ffn_up.weight", [n_embd, n_ff]),
        };
        set_tensor_dims(&mut bytes, tensor, [right[1], right[0]]);
        let error = load_bytes(&dir, &format!("{arch}-shape.gguf"), &bytes).unwrap_err();
        match &error {
            LoadError::WrongShape {
                name,
                actual,
                expected,
            } => {
                assert_eq!(name, tensor);
                assert_eq!(actual, &vec![right[1], right[0]]);
                assert_eq!(expected, &right.to_vec());
            }
            other => panic!("{arch}: expected WrongShape, got {other:?}"),
        }
        assert!(error.to_string().contains(tensor), "{error}");
    }
}

#[test]
fn missing_tensors_are_named() {
    let dir = TempDir::new("missing");
    let cases: &[(TinyArch, &str)] = &[
        (TinyArch::Qwen2, "blk.1.ffn_up.weight"),
        (TinyArch::Qwen2, "blk.0.attn_k.bias"),
        (TinyArch::Qwen2, "output_norm.weight"),
        (TinyArch::Llama, "blk.0.attn_q.weight"),
        (TinyArch::Llama, "token_embd.weight"),
        (TinyArch::Gemma3, "blk.0.attn_q_norm.weight"),
        (TinyArch::Gemma3, "blk.1.attn_k_norm.weight"),
        (TinyArch::Gemma3, "blk.1.post_attention_norm.weight"),
        (TinyArch::Gemma3, "blk.0.post_ffw_norm.weight"),
        (TinyArch::Qwen3, "blk.1.attn_k_norm.weight"),
        (TinyArch::Qwen3Moe, "blk.0.ffn_down_exps.weight"),
        (TinyArch::Qwen3Moe, "blk.1.ffn_gate_inp.weight"),
        (TinyArch::Gemma, "blk.0.ffn_gate.weight"),
        (TinyArch::Gemma2, "blk.1.post_ffw_norm.weight"),
        // Without the fused projection, phi3 looks for separate ones.
        (TinyArch::Phi3, "blk.0.attn_qkv.weight"),
        (TinyArch::Granite, "blk.1.attn_v.weight"),
    ];
    for (i, &(arch, name)) in cases.iter().enumerate() {
        let mut bytes = tiny_model_bytes(arch, SEED);
        rename_tensor(&mut bytes, name);
        let error = load_bytes(&dir, &format!("missing-{i}.gguf"), &bytes).unwrap_err();
        let name = match name {
            "blk.0.attn_qkv.weight" => "blk.0.attn_q.weight",
            other => other,
        };
        match &error {
            LoadError::MissingTensor { name: missing } => assert_eq!(missing, name, "{arch}"),
            other => panic!("{arch} without {name}: expected MissingTensor, got {other:?}"),
        }
    }
    // Llama without `output.weight` falls back to tied embeddings and still loads.
    let mut bytes = tiny_model_bytes(TinyArch::Llama, SEED);
    rename_tensor(&mut bytes, "output.weight");
    load_bytes(&dir, "tied.gguf", &bytes).expect("tied embeddings");
}

#[test]
fn bad_hyperparameters_are_errors() {
    let dir = TempDir::new("hparams");
    // A layer more than the file has: its tensors are missing.
    let mut writer = tiny_model_writer(TinyArch::Qwen2, SEED);
    writer.add_u32("qwen2.block_count", 3);
    let error = load_bytes(&dir, "layers.gguf", &writer.to_bytes()).unwrap_err();
    assert!(
        matches!(&error, LoadError::MissingTensor { name } if name.starts_with("blk.2.")),
        "{error:?}"
    );
    // KV heads that do not divide the heads.
    let mut writer = tiny_model_writer(TinyArch::Llama, SEED);
    writer.add_u32("llama.attention.head_count_kv", 3);
    let error = load_bytes(&dir, "heads.gguf", &writer.to_bytes()).unwrap_err();
    assert!(
        matches!(error, LoadError::InvalidHyperparameter { .. }),
        "{error:?}"
    );
    // A size of the wrong type.
    let mut writer = tiny_model_writer(TinyArch::Llama, SEED);
    writer.add_string("llama.embedding_length", "64");
    let error = load_bytes(&dir, "type.gguf", &writer.to_bytes()).unwrap_err();
    assert!(
        matches!(&error, LoadError::MissingMetadata { key, .. } if key == "llama.embedding_length"),
        "{error:?}"
    );
    // Another feed-forward width than the tensors have.
    let mut writer = tiny_model_writer(TinyArch::Qwen2, SEED);
    writer.add_u32("qwen2.feed_forward_length", 256);
    let error = load_bytes(&dir, "width.gguf", &writer.to_bytes()).unwrap_err();
    assert!(
        matches!(&error, LoadError::WrongShape { name, .. } if name == "blk.0.ffn_gate.weight"),
        "{error:?}"
    );
    // An unknown tokenizer.
    let mut writer = tiny_model_writer(TinyArch::Qwen2, SEED);
    writer.add_string("tokenizer.ggml.pre", "no-such-pre-tokenizer");
    let error = load_bytes(&dir, "pre.gguf", &writer.to_bytes()).unwrap_err();
    assert!(matches!(error, LoadError::Tokenizer(_)), "{error:?}");
}

#[test]
fn a_missing_file_is_an_error() {
    let dir = TempDir::new("nofile");
    let error = Model::load(dir.join("nothing.gguf"), ModelParams::default()).unwrap_err();
    assert!(matches!(error, LoadError::Gguf { .. }), "{error:?}");
    assert!(error.to_string().contains("nothing.gguf"), "{error}");
}

/// Loads `bytes` and, if that works, evaluates a few tokens; reports a panic as an error message.
fn load_and_run(path: &Path, bytes: &[u8]) -> Result<bool, String> {
    std::fs::write(path, bytes).unwrap();
    catch_unwind(AssertUnwindSafe(|| {
        match Model::load(path, model_params()) {
            Err(_) => false,
            Ok(model) => {
                let model = Arc::new(model);
                let params = SessionParams {
                    n_ctx: 16,
                    n_batch: 4,
                    n_threads: 1,
                    cache_reuse_min_tokens: 0,
                    cache_reuse_fence: None,
                };
                if let Ok(mut session) = Session::new(Arc::clone(&model), params) {
                    let _ = session.feed(&[1, 2, 3, 4, 5]);
                }
                true
            }
        }
    }))
    .map_err(|panic| {
        panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    })
}

#[test]
fn truncated_files_are_errors_not_panics() {
    let dir = TempDir::new("truncated");
    let path = dir.join("truncated.gguf");
    for arch in TinyArch::ALL {
        let bytes = tiny_model_bytes(arch, SEED);
        // The end of the last tensor's data: what follows is alignment padding, which may go.
        let file = GgufFile::from_bytes(bytes.clone()).unwrap();
        let data_end = file
            .tensors()
            .iter()
            .map(|t| t.offset + t.size)
            .max()
            .unwrap() as usize;
        assert_eq!(load_and_run(&path, &bytes[..data_end]), Ok(true), "{arch}");
        // Every few bytes in the header, then through the tensor data, and one byte short.
        let header_cuts = (0..file.data_offset() as usize).step_by(61);
        let data_cuts = (file.data_offset() as usize..data_end).step_by(data_end / 40);
        for cut in header_cuts.chain(data_cuts).chain([data_end - 1]) {
            match load_and_run(&path, &bytes[..cut]) {
                Ok(false) => {}
                Ok(true) => panic!("{arch}: a file cut at {cut} of {data_end} bytes loaded"),
                Err(message) => panic!("{arch}: cut at {cut}: panicked: {message}"),
            }
        }
    }
}

#[test]
fn corrupted_headers_never_panic() {
    let dir = TempDir::new("corrupted");
    let path = dir.join("corrupted.gguf");
    for arch in TinyArch::ALL {
        let bytes = tiny_model_bytes(arch, SEED);
        let header_len = tensor_info_offset(&bytes, "output_norm.weight") + 64;
        let (mut loaded, mut rejected) = (0, 0);
        // Deterministic positions all over the header: flip every bit of the byte, or set it to 0xFF.
        for (i, at) in (0..header_len).step_by(37).enumerate() {
            let mut corrupted = bytes.clone();
            corrupted[at] = if i % 2 == 0 { !corrupted[at] } else { 0xFF };
            match load_and_run(&path, &corrupted) {
                Ok(true) => loaded += 1,
                Ok(false) => rejected += 1,
                Err(message) => panic!("{arch}: byte {at} corrupted: panicked: {message}"),
            }
        }
        eprintln!("{arch}: corrupted headers: {loaded} still loaded, {rejected} rejected");
        assert!(rejected > 0, "{arch}: no corruption was detected");
    }
}
