//! Model-level check of a `dispatch` build: `lmrs infer` with each CPU variant this CPU supports
//! forced (`LMRS_CPU_VARIANT`), on SmolLM2-135M (Q4_1) and Qwen2.5-Coder-0.5B (Q4_K), against a
//! `native` build of lmrs (`$LMRS_NATIVE_BIN`, else `target/release/lmrs` of this workspace when
//! that is another binary than the one under test; without one, against the dispatch binary's own
//! automatic pick, and the test says so).
//!
//! - The variant `auto` picks (the highest this CPU supports, the one closest to `-march=native`)
//!   must give the native build's greedy tokens and top-5 log-probabilities within 0.05.
//! - Lower variants run other GGML kernels: without AVX2 or AVX-512, GGML takes other paths (no
//!   tiled or repacked kernels, other activation quantization), and because activations are
//!   quantized to 8 bits before every matmul, a last-bit difference upstream flips roundings
//!   downstream. They must give the same greedy tokens (a near tie, top-2 gap under 0.1, ends the
//!   comparison) and stay within `LOWER_LEVEL_TOLERANCE`, a loose bound: measured on an AMD Zen 5
//!   against `-march=native`, x86-64-v4 differed by 0.0000, x86-64-v3 by up to 0.64 (SmolLM2, a
//!   token at -4.1) and 0.28 (Qwen), x86-64-v2 by up to 0.40 and 0.23, all with the same 16 greedy
//!   tokens. That these are GGML's per-ISA numbers, not dispatch errors, is what the next check
//!   shows.
//! - With `$LMRS_PORTABLE_BIN` (a `ggml-sys/portable` build: -march=x86-64-v3), the x86-64-v3
//!   variant must match it within 1e-3: the same compiler flags give the same numbers, whether
//!   renamed and dispatched or not.
//!
//! Skipped (with a line on stderr) when lmrs was built without `ggml-sys/dispatch`, and when a
//! model file is absent unless `LMRS_REQUIRE_MODELS=1`. The model directory is `$LMRS_MODEL_DIR`,
//! default `<workspace root>/models`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Allowed |Δ log-probability| of the automatic pick against the native build.
const LOGPROB_TOLERANCE: f64 = 0.05;
/// Allowed |Δ log-probability| of lower variants (other kernels; see the module documentation):
/// the largest measured, 0.64, with some room.
const LOWER_LEVEL_TOLERANCE: f64 = 1.0;
/// Allowed |Δ log-probability| of x86-64-v3 against a `portable` build.
const SAME_FLAGS_TOLERANCE: f64 = 1e-3;
/// Below this top-1/top-2 gap of the reference, a different greedy token is a tie, not an error.
const TIE_MARGIN: f64 = 0.1;
const N_TOKENS: &str = "16";

fn model(file: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("LMRS_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models"));
    let path = dir.join(file);
    if path.is_file() {
        return Some(path);
    }
    if std::env::var("LMRS_REQUIRE_MODELS").as_deref() == Ok("1") {
        panic!("model missing: {} (LMRS_REQUIRE_MODELS=1)", path.display());
    }
    eprintln!(
        "skipping: model file {} not found (set LMRS_MODEL_DIR)",
        path.display()
    );
    None
}

/// The native build to compare with, if there is one.
fn native_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("LMRS_NATIVE_BIN") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "LMRS_NATIVE_BIN={} is no file",
            path.display()
        );
        return Some(path);
    }
    let candidate = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/lmrs");
    let this = Path::new(env!("CARGO_BIN_EXE_lmrs"));
    let same = match (candidate.canonicalize(), this.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => true,
    };
    (!same && candidate.is_file()).then_some(candidate)
}

/// One generated token: its id and the top log-probabilities (id, logprob), best first.
struct Step {
    id: u64,
    top: Vec<(u64, f64)>,
}

fn infer(binary: &Path, variant: Option<&str>, model: &Path, prompt: &str) -> Vec<Step> {
    let mut command = Command::new(binary);
    command
        .args(["infer", "--model"])
        .arg(model)
        .args(["--prompt", prompt, "-n", N_TOKENS, "--temp", "0"])
        .args([
            "--threads",
            "2",
            "--ctx-size",
            "512",
            "--json",
            "--logprobs",
            "5",
        ]);
    match variant {
        Some(v) => command.env("LMRS_CPU_VARIANT", v),
        None => command.env_remove("LMRS_CPU_VARIANT"),
    };
    let output = command.output().expect("run lmrs infer");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{} ({variant:?}) failed: {stderr}",
        binary.display()
    );
    assert!(
        !stderr.contains("warning: LMRS_CPU_VARIANT"),
        "{variant:?} fell back: {stderr}"
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let top = v["logprobs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| (e["id"].as_u64().unwrap(), e["logprob"].as_f64().unwrap()))
                .collect();
            Step {
                id: v["id"].as_u64().unwrap(),
                top,
            }
        })
        .collect()
}

/// Compares `got` with `reference` step by step up to the first different token. Returns the
/// largest |Δ log-probability| seen and how many tokens matched; Err on a real difference.
fn compare(reference: &[Step], got: &[Step], tolerance: f64) -> Result<(f64, usize), String> {
    let mut max_delta = 0f64;
    for (i, (r, g)) in reference.iter().zip(got).enumerate() {
        for (id, lp) in &r.top {
            if let Some((_, glp)) = g.top.iter().find(|(gid, _)| gid == id) {
                let delta = (lp - glp).abs();
                max_delta = max_delta.max(delta);
                if delta > tolerance {
                    return Err(format!(
                        "step {i}: token {id} log-prob {lp:.4} vs {glp:.4} (|Δ| {delta:.4} > {tolerance})"
                    ));
                }
            }
        }
        if r.id != g.id {
            let margin = match r.top.as_slice() {
                [first, second, ..] => first.1 - second.1,
                _ => f64::INFINITY,
            };
            if margin < TIE_MARGIN {
                // the two leading tokens are a near tie; what follows has different contexts
                return Ok((max_delta, i));
            }
            return Err(format!(
                "step {i}: greedy token {} vs reference {} (reference top-2 margin {margin:.3})",
                g.id, r.id
            ));
        }
    }
    if got.len() != reference.len() {
        return Err(format!(
            "{} tokens vs reference {}",
            got.len(),
            reference.len()
        ));
    }
    Ok((max_delta, reference.len()))
}

fn check_model(file: &str, prompt: &str) {
    if !lmrs::cpu_dispatch_build() {
        eprintln!(
            "skipping: lmrs was built without ggml-sys/dispatch (CPU variant: {})",
            lmrs::cpu_variant()
        );
        return;
    }
    let Some(model) = model(file) else { return };
    let this = Path::new(env!("CARGO_BIN_EXE_lmrs"));
    let (reference_name, reference) = match native_binary() {
        Some(native) => (
            format!("native build {}", native.display()),
            infer(&native, None, &model, prompt),
        ),
        None => {
            eprintln!(
                "no native lmrs to compare with (set LMRS_NATIVE_BIN); comparing with the automatic pick"
            );
            (
                "this binary's automatic pick".to_string(),
                infer(this, None, &model, prompt),
            )
        }
    };
    assert!(!reference.is_empty(), "the reference generated nothing");
    let supported = lmrs::supported_cpu_variants();
    let best = *supported.last().expect("a supported variant");
    let mut failures = Vec::new();
    for variant in &supported {
        let got = infer(this, Some(variant), &model, prompt);
        let tolerance = if *variant == best {
            LOGPROB_TOLERANCE
        } else {
            LOWER_LEVEL_TOLERANCE
        };
        match compare(&reference, &got, tolerance) {
            Ok((delta, matched)) => eprintln!(
                "{file}: {variant}: {matched}/{} greedy tokens as {reference_name}, max |Δ logprob| {delta:.4} (bound {tolerance})",
                reference.len()
            ),
            Err(e) => failures.push(format!("{file}: {variant}: {e}")),
        }
        if *variant == "x86-64-v3" {
            if let Some(portable) = std::env::var_os("LMRS_PORTABLE_BIN") {
                let portable = infer(Path::new(&portable), None, &model, prompt);
                match compare(&portable, &got, SAME_FLAGS_TOLERANCE) {
                    Ok((delta, matched)) => eprintln!(
                        "{file}: x86-64-v3: {matched}/{} greedy tokens as the portable build, max |Δ logprob| {delta:.6}",
                        portable.len()
                    ),
                    Err(e) => failures.push(format!("{file}: x86-64-v3 vs portable: {e}")),
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn smollm2_agrees_across_cpu_variants() {
    check_model(
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    );
}

#[test]
fn qwen_agrees_across_cpu_variants() {
    check_model(
        "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        "fn parse_port(text: &str) -> Option<u16> {\n",
    );
}
