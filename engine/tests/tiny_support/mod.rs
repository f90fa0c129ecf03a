//! Helpers shared by the hermetic engine tests: tiny random-weight models written to a temporary
//! directory (see [`lmrs::tiny`]), sessions on them, and logit comparisons.
//!
//! Use from a test file with `mod tiny_support;`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use lmrs::{Model, ModelParams, Session, SessionParams, TokenId};
use lmrs_fixtures::tiny::{write_tiny_model, TinyArch};

/// Seed of the tiny models the tests use unless they need another.
pub const SEED: u64 = 42;

/// Largest difference allowed between logits of the same tokens evaluated with different batch
/// shapes (all at once, in small batches, token by token).
///
/// The math is the same, but the results are not bit-identical, and not within 1e-4 either:
/// - GGML's CPU flash attention accumulates `softmax(QK) V` in F16 when the cache is F16 and fewer
///   than a tile of queries (64) is evaluated, and in F32 with tiles of 64 queries or more. On an
///   all-F32 tiny model this alone moves logits by up to ~3e-2 between a batch of 64+ tokens and
///   token-by-token evaluation (and rounding flips of the F16 keys and values by up to ~1e-3).
/// - Activations feeding Q8_0 weights are quantized to 8 bits per row block; a summation-order
///   difference of 1e-7 can flip one rounding, which moves that row by 1/127 of its block maximum.
///   On the mixed F32/F16/Q8_0 tiny models, logits (spread ~30 between the smallest and largest)
///   moved by up to 0.19 over all 300 prefixes of a prompt (worst case of one batch vs token by
///   token vs batches of 7), and the greedy token flipped in 3 of 300 near-ties.
///
/// Real models behave alike (llama.cpp too). This tolerance only catches gross errors (on these
/// models, changing the second-to-last prompt token moves the last logits by ~1.4, an early token by
/// ~0.7): cache reuse is checked by the exact comparisons, made where the same batches are evaluated
/// (the cache reused with the same chunk boundaries as a fresh feed, forks, threads).
pub const BATCH_SHAPE_TOLERANCE: f32 = 0.5;

/// Code used as a prompt: tokenizes into the multi-byte tokens the tiny vocabulary learned.
pub const CODE_PROMPT: &str = "def quick_sort(items):\n    if len(items) <= 1:\n        return items\n    pivot = items[0]\n    left = [x for x in items if x < pivot]\n";

/// A directory under the system's temporary directory, removed (with its content) when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new, empty directory whose name contains `label`, the process id and a counter.
    pub fn new(label: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("lmrs-test-{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("creating a temporary directory");
        TempDir(path)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// `name` inside the directory.
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Model parameters for tests: one thread (a tiny graph takes microseconds; a second thread only
/// adds synchronisation, and waits for a descheduled thread on a loaded machine), repacking as in
/// production.
pub fn model_params() -> ModelParams {
    ModelParams {
        n_threads: 1,
        repack: true,
        ..ModelParams::default()
    }
}

/// A tiny model file and the model loaded from it (the directory lives as long as the model).
pub struct TinyModel {
    /// Keeps the file.
    pub dir: TempDir,
    /// Path of the file.
    pub path: PathBuf,
    /// The loaded model.
    pub model: Arc<Model>,
}

/// Writes the tiny model of `arch` (seed [`SEED`]) and loads it.
pub fn load_tiny(arch: TinyArch) -> TinyModel {
    load_tiny_with(arch, SEED, model_params())
}

/// Writes the tiny model of `arch` with `seed` and loads it with `params`.
pub fn load_tiny_with(arch: TinyArch, seed: u64, params: ModelParams) -> TinyModel {
    let dir = TempDir::new(&format!("tiny-{arch}"));
    let path = dir.join(&format!("tiny-{arch}-{seed}.gguf"));
    write_tiny_model(&path, arch, seed).expect("writing the tiny model");
    let model =
        Model::load(&path, params).unwrap_or_else(|e| panic!("loading the tiny {arch} model: {e}"));
    TinyModel {
        dir,
        path,
        model: Arc::new(model),
    }
}

/// A session with `n_ctx` positions and batches of at most `n_batch` tokens.
pub fn session(model: &Arc<Model>, n_ctx: usize, n_batch: usize) -> Session {
    Session::new(
        Arc::clone(model),
        SessionParams {
            n_ctx,
            n_batch,
            n_threads: 1,
            cache_reuse_min_tokens: 0,
            cache_reuse_fence: None,
        },
    )
    .expect("creating a session")
}

/// The tokens of [`CODE_PROMPT`] (with BOS where the model wants one).
pub fn code_tokens(model: &Model) -> Vec<TokenId> {
    model.tokenizer().encode_prompt(CODE_PROMPT, false)
}

/// Largest absolute difference between two logit vectors of the same length.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "logit vectors of different lengths");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Asserts that `actual` is within [`BATCH_SHAPE_TOLERANCE`] of `expected`, naming `what` on
/// failure; returns the largest difference.
pub fn assert_logits_close(actual: &[f32], expected: &[f32], what: &str) -> f32 {
    assert!(
        actual.iter().all(|v| v.is_finite()),
        "{what}: non-finite logits"
    );
    let diff = max_abs_diff(actual, expected);
    assert!(
        diff <= BATCH_SHAPE_TOLERANCE,
        "{what}: logits differ by up to {diff:e} (tolerance {BATCH_SHAPE_TOLERANCE:e})"
    );
    diff
}

/// Asserts that `actual` and `expected` are bit-identical (the same computation was done).
pub fn assert_logits_equal(actual: &[f32], expected: &[f32], what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: lengths");
    let identical = actual
        .iter()
        .zip(expected)
        .all(|(a, b)| a.to_bits() == b.to_bits());
    let diff = max_abs_diff(actual, expected);
    assert!(
        identical,
        "{what}: logits differ by up to {diff:e}, expected identical results"
    );
}
