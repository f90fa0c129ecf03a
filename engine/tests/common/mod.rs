//! Helpers shared by the engine's integration tests: where real model files and shared reference
//! data live.
//!
//! Use from a test file with `mod common;`. Real models are looked up in `LMRS_MODEL_DIR` (default
//! `<workspace root>/models`); a missing model skips the test with a line on stderr, unless
//! `LMRS_REQUIRE_MODELS=1`, which turns the skip into a failure.

#![allow(dead_code)]

use std::path::PathBuf;

/// Path of the workspace root (the directory holding the root `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// Directory holding real model files: `LMRS_MODEL_DIR`, or `<workspace root>/models`.
pub fn model_dir() -> PathBuf {
    match std::env::var_os("LMRS_MODEL_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => workspace_root().join("models"),
    }
}

/// Whether `LMRS_REQUIRE_MODELS=1` asks for missing models to fail tests instead of skipping them.
pub fn models_required() -> bool {
    std::env::var("LMRS_REQUIRE_MODELS").is_ok_and(|v| v == "1")
}

/// The path of the model file `file_name` if it exists. Otherwise prints a skip line to stderr and
/// returns `None` so the caller can return early, or panics when `LMRS_REQUIRE_MODELS=1`.
pub fn model_path(file_name: &str) -> Option<PathBuf> {
    let path = model_dir().join(file_name);
    if path.is_file() {
        return Some(path);
    }
    if models_required() {
        panic!(
            "model file {} is missing and LMRS_REQUIRE_MODELS=1; fetch it with \
             `../shared/fetch-models.sh models` from the workspace root (or set LMRS_MODEL_DIR)",
            path.display()
        );
    }
    eprintln!(
        "skipping: model file {} not found (set LMRS_MODEL_DIR, or run ../shared/fetch-models.sh models)",
        path.display()
    );
    None
}

/// The shared data directory: `LMRS_SHARED_DIR`, or `<workspace root>/../shared`.
pub fn shared_dir() -> PathBuf {
    match std::env::var_os("LMRS_SHARED_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => workspace_root().join("../shared"),
    }
}

/// Directory of shared reference data (`<shared>/reference`).
pub fn reference_dir() -> PathBuf {
    shared_dir().join("reference")
}
