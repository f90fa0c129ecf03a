//! The loader's speed-ups that change where or how weights are stored must not change what the
//! model computes. On Qwen2.5-Coder-0.5B (Q5_0 matrices, which the loader widens to Q8_0, and
//! Q4_K matrices, which it repacks and, with the dual layout, also keeps in place for prompts):
//! - widening is exact: the same logits, bit for bit;
//! - with the dual layout a prompt batch computes exactly what the in-place layout computes and a
//!   generated token exactly what the repacked layout computes.
//!
//! (GGML's repacked and in-place k-quant kernels round differently: on this prompt their logits
//! differ by up to ~0.4 on a range of ~30, the same kind of difference as between llama.cpp with and
//! without `--no-repack`.)

mod common;

use std::sync::Arc;

use lmrs::{Model, ModelParams, Session, SessionParams, TokenId};

const MODEL: &str = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf";

const CODE: &str = "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n    if n < 2:\n        return n\n    a, b = 0, 1\n    for _ in range(n - 1):\n        a, b = b, a + b\n    return b\n\n\ndef factorial(n):\n";

fn load(path: &std::path::Path, repack: bool, widen_q5_0: bool, dual_layout: bool) -> Arc<Model> {
    let params = ModelParams {
        n_threads: 2,
        repack,
        widen_q5_0,
        dual_layout,
        ..ModelParams::default()
    };
    Arc::new(Model::load(path, params).expect("loading the model"))
}

/// Logits after `prompt` fed in batches of `n_batch` (512: one batch, as a prompt; 1: one token at
/// a time, as generation).
fn logits_after(model: &Arc<Model>, prompt: &[TokenId], n_batch: usize) -> Vec<f32> {
    let mut session = Session::new(
        Arc::clone(model),
        SessionParams {
            n_ctx: 512,
            n_batch,
            n_threads: 2,
            cache_reuse_min_tokens: 0,
            cache_reuse_fence: None,
        },
    )
    .expect("session");
    session.feed(prompt).expect("prompt");
    session.logits().expect("logits").to_vec()
}

fn assert_identical(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    let differing = a
        .iter()
        .zip(b)
        .filter(|(x, y)| x.to_bits() != y.to_bits())
        .count();
    let diff = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    assert_eq!(
        differing, 0,
        "{what}: {differing} logits differ, by up to {diff}"
    );
}

#[test]
fn widening_and_the_dual_layout_compute_what_the_plain_layouts_compute() {
    let Some(path) = common::model_path(MODEL) else {
        return;
    };
    let fast = load(&path, true, true, true);
    let repacked = load(&path, true, false, false);
    let in_place = load(&path, false, false, false);
    assert!(fast.info().widened_bytes > 0, "Qwen 0.5B has Q5_0 matrices");
    assert_eq!(repacked.info().widened_bytes, 0);
    assert_eq!(repacked.info().dual_layout_bytes, 0);
    let twins = cfg!(target_arch = "x86_64") && fast.info().repacked_bytes > 0;
    assert_eq!(
        fast.info().dual_layout_bytes > 0,
        twins,
        "repacked Q4_K matrices get twins"
    );

    let prompt = fast.tokenizer().encode(CODE, false);
    assert!(
        prompt.len() >= lmrs::IN_PLACE_MIN_BATCH,
        "a batch that uses the twins"
    );

    let expected_prompt = if twins { &in_place } else { &repacked };
    assert_identical(
        &logits_after(&fast, &prompt, 512),
        &logits_after(expected_prompt, &prompt, 512),
        "a prompt batch",
    );
    assert_identical(
        &logits_after(&fast, &prompt, 1),
        &logits_after(&repacked, &prompt, 1),
        "token by token",
    );
}
