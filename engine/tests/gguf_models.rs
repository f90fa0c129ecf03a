//! Opens the real model files and the shared vocabulary-only GGUF files with the GGUF reader.
//!
//! Models are found through `tests/common` (`LMRS_MODEL_DIR`); missing ones are skipped unless
//! `LMRS_REQUIRE_MODELS=1`.

mod common;

use std::collections::HashSet;

use lmrs::gguf::{GgmlType, GgufFile};

/// Checks what every well-formed model file must satisfy and returns it for model-specific checks.
fn open_and_check(file_name: &str) -> Option<GgufFile> {
    let path = common::model_path(file_name)?;
    let file = GgufFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(file.is_mapped());
    assert_eq!(file.version(), 3);
    assert_eq!(file.data_offset() % file.alignment(), 0);
    let file_len = file.bytes().len() as u64;
    let mut names = HashSet::new();
    let mut previous_end = file.data_offset();
    let mut sorted: Vec<_> = file.tensors().iter().collect();
    sorted.sort_by_key(|t| t.offset);
    for info in sorted {
        assert!(names.insert(info.name.as_str()), "duplicate {}", info.name);
        assert!(info.offset >= previous_end, "{} overlaps", info.name);
        assert!(
            info.offset + info.size <= file_len,
            "{} past the end",
            info.name
        );
        assert_eq!(file.tensor_data(info).len() as u64, info.size);
        assert_eq!(file.tensor(&info.name), Some(info));
        previous_end = info.offset + info.size;
    }
    Some(file)
}

fn count_blocks(file: &GgufFile, arch: &str) -> usize {
    let n_layer = file
        .get_u32(&format!("{arch}.block_count"))
        .expect("block_count") as usize;
    let layers: HashSet<usize> = file
        .tensors()
        .iter()
        .filter_map(|t| t.name.strip_prefix("blk.")?.split('.').next()?.parse().ok())
        .collect();
    assert_eq!(layers.len(), n_layer);
    n_layer
}

#[test]
fn qwen2_5_coder_0_5b_q4_k_m() {
    let Some(file) = open_and_check("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf") else {
        return;
    };
    assert_eq!(file.architecture(), Some("qwen2"));
    let n_layer = count_blocks(&file, "qwen2");
    assert_eq!(n_layer, 24);
    // 12 tensors per block (q/k/v with biases, o, two norms, three ffn) + token_embd, output_norm
    // and output.
    let mut non_block: Vec<&str> = file
        .tensors()
        .iter()
        .map(|t| t.name.as_str())
        .filter(|n| !n.starts_with("blk."))
        .collect();
    non_block.sort_unstable();
    assert_eq!(
        non_block,
        ["output.weight", "output_norm.weight", "token_embd.weight"]
    );
    assert_eq!(file.tensors().len(), 12 * n_layer + 3);
    assert_eq!(file.get_u32("qwen2.embedding_length"), Some(896));
    assert_eq!(file.get_u32("qwen2.context_length"), Some(32768));
    let tokens = file.get_string_array("tokenizer.ggml.tokens").unwrap();
    assert_eq!(tokens.len(), 151936);
    assert_eq!(file.get_str("tokenizer.ggml.model"), Some("gpt2"));
    assert!(
        file.get_string_array("tokenizer.ggml.merges")
            .unwrap()
            .len()
            > 100_000
    );
    let embd = file.tensor("token_embd.weight").unwrap();
    assert_eq!(embd.dims, vec![896, 151936]);
    let types: HashSet<GgmlType> = file.tensors().iter().map(|t| t.ggml_type).collect();
    assert!(types.contains(&GgmlType::Q4_K), "{types:?}");
    assert!(types.contains(&GgmlType::F32));
}

#[test]
fn smollm2_135m_q4_1() {
    let Some(file) = open_and_check("SmolLM2-135M-Instruct.Q4_1.gguf") else {
        return;
    };
    assert_eq!(file.architecture(), Some("llama"));
    let n_layer = count_blocks(&file, "llama");
    assert_eq!(n_layer, 30);
    assert_eq!(file.get_u32("llama.embedding_length"), Some(576));
    assert_eq!(
        file.get_string_array("tokenizer.ggml.tokens")
            .unwrap()
            .len(),
        49152
    );
    let types: HashSet<GgmlType> = file.tensors().iter().map(|t| t.ggml_type).collect();
    assert!(types.contains(&GgmlType::Q4_1), "{types:?}");
    // 9 tensors per block + token_embd + output_norm (output shares token_embd).
    assert!(file.tensors().len() >= 9 * n_layer + 2);
}

#[test]
fn shared_vocab_files_all_open() {
    let dir = common::reference_dir().join("vocab");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        eprintln!(
            "skipping: {} not found (set LMRS_SHARED_DIR)",
            dir.display()
        );
        return;
    };
    let mut opened = 0;
    for entry in entries {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "gguf") {
            let file = GgufFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let tokens = file.get_string_array("tokenizer.ggml.tokens");
            assert!(tokens.is_some_and(|t| !t.is_empty()), "{}", path.display());
            assert!(
                file.get_str("tokenizer.ggml.model").is_some(),
                "{}",
                path.display()
            );
            opened += 1;
        }
    }
    assert!(
        opened >= 10,
        "only {opened} vocab files in {}",
        dir.display()
    );
}
