//! Hyperparameters straight from the file never reach GGML in a form it asserts on (a failed GGML
//! assertion aborts the process): tiny models of random shapes with random and adversarial metadata
//! (negative, zero, NaN and huge epsilons; head counts that are zero, huge or do not divide; odd or
//! oversized RoPE dimensions; bad RoPE bases and scaling; zero and huge context lengths) and
//! sessions of extreme sizes either fail with an error or load and generate.
//!
//! An abort would kill the test process, so the sweep runs in a child: this test binary, re-executed
//! for the one test with an environment variable set. The child names each case on stderr before it
//! runs it, so the parent's failure message shows the case that killed it.

mod tiny_support;

use std::sync::Arc;

use lmrs::{
    InferenceFeedback, InferenceParameters, LoadError, Model, ModelParams, Session, SessionParams,
};
use lmrs_fixtures::tiny::{tiny_model_writer_with_shape, TinyArch, TinyShape};
use lmrs_fixtures::{GgufWriter, SplitMix64 as Rng};
use tiny_support::{model_params, TempDir};

/// Set in the child process that runs the sweep.
const CHILD_ENV: &str = "LMRS_HPARAMS_SWEEP_CHILD";

/// Random cases after the fixed ones.
const RANDOM_CASES: usize = 500;

/// A metadata value to write over a key.
#[derive(Clone, Debug)]
enum Value {
    U32(u32),
    U64(u64),
    I32(i32),
    F32(f32),
    F64(f64),
    Str(&'static str),
}

/// One model and session to try.
#[derive(Clone, Debug)]
struct Case {
    arch: TinyArch,
    shape: TinyShape,
    /// Keys (without the `{arch}.` prefix) and the values written over them.
    overrides: Vec<(&'static str, Value)>,
    flash_attention: bool,
    repack: bool,
    n_ctx: usize,
    n_batch: usize,
}

/// Adversarial values of one key, for a model of `shape`.
fn adversarial(rng: &mut Rng, key: &'static str, shape: &TinyShape) -> Value {
    let huge_sizes = [
        0,
        1,
        3,
        5,
        1 << 16,
        (1 << 16) + 1,
        1 << 24,
        (1 << 24) + 1,
        u32::MAX,
    ];
    match key {
        "attention.layer_norm_rms_epsilon" | "attention.layer_norm_epsilon" => match rng.below(8) {
            0 => Value::F64(rng.pick(&[1e300, -1e-300, f64::NAN, 1e-6])),
            1 => Value::Str("1e-5"),
            _ => Value::F32(rng.pick(&[
                -1e-5,
                0.0,
                -0.0,
                f32::NAN,
                f32::INFINITY,
                f32::NEG_INFINITY,
                1e-45,
                1e-38,
                1e30,
                f32::MAX,
                1e-6,
                1.0,
            ])),
        },
        "rope.freq_base" => Value::F32(rng.pick(&[
            0.0,
            -1.0,
            f32::NAN,
            f32::INFINITY,
            1.0,
            0.5,
            1e-30,
            1e38,
            1.0001,
            10_000.0,
        ])),
        "rope.scaling.factor" => {
            Value::F32(rng.pick(&[0.0, -2.0, f32::NAN, 1e-40, 1e38, 4.0, 0.25]))
        }
        "rope.scaling.type" => Value::Str(rng.pick(&["linear", "yarn", "none", ""])),
        "rope.dimension_count" => Value::U32(rng.pick(&[
            0,
            1,
            2,
            3,
            shape.head_dim as u32,
            shape.head_dim as u32 + 1,
            shape.head_dim as u32 + 2,
            u32::MAX,
        ])),
        "attention.key_length" | "attention.value_length" => Value::U32(rng.pick(&[
            0,
            1,
            3,
            shape.head_dim as u32,
            shape.head_dim as u32 + 1,
            shape.head_dim as u32 + 2,
            1 << 24,
            u32::MAX,
        ])),
        "context_length" => match rng.below(4) {
            0 => Value::I32(-5),
            1 => Value::U64(rng.pick(&[1 << 32, u64::MAX])),
            _ => Value::U32(rng.pick(&[0, 1, 2, 1 << 24, (1 << 24) + 1, u32::MAX])),
        },
        "embedding_length" => {
            Value::U32(rng.pick(&[0, shape.n_embd as u32 + 32, 1 << 24, u32::MAX]))
        }
        "feed_forward_length" => Value::U32(rng.pick(&[0, 2 * shape.n_ff as u32, u32::MAX])),
        "attention.head_count" | "attention.head_count_kv" | "block_count" => {
            if rng.chance(10) {
                Value::I32(-1)
            } else {
                Value::U32(rng.pick(&huge_sizes))
            }
        }
        // Gemma 3's (other architectures ignore them).
        "attention.sliding_window" => match rng.below(4) {
            0 => Value::I32(-1),
            1 => Value::U64(u64::MAX),
            _ => Value::U32(rng.pick(&[0, 1, 2, 7, 1 << 24, u32::MAX])),
        },
        "attention.sliding_window_pattern" => match rng.below(4) {
            0 => Value::Str("6"),
            _ => Value::U32(rng.pick(&[0, 1, 2, 3, 6, u32::MAX])),
        },
        "rope.freq_base_swa" => Value::F32(rng.pick(&[0.0, 1.0, f32::NAN, 1e38, 10_000.0])),
        // MPT's (other architectures ignore them).
        "attention.max_alibi_bias" | "attention.clamp_kqv" => {
            Value::F32(rng.pick(&[0.0, -1.0, f32::NAN, f32::INFINITY, 1e-45, 1e38, 8.0]))
        }
        other => unreachable!("no adversarial values for {other}"),
    }
}

const KEYS: [&str; 20] = [
    "attention.layer_norm_rms_epsilon",
    // The LayerNorm architectures' epsilon, and MPT's ALiBi bias and clamp.
    "attention.layer_norm_epsilon",
    "attention.max_alibi_bias",
    "attention.clamp_kqv",
    "rope.freq_base",
    "rope.scaling.factor",
    "rope.scaling.type",
    "rope.dimension_count",
    "attention.key_length",
    "attention.value_length",
    "context_length",
    "embedding_length",
    "feed_forward_length",
    "attention.head_count",
    "attention.head_count_kv",
    "block_count",
    "attention.sliding_window",
    "attention.sliding_window_pattern",
    "rope.freq_base_swa",
    // Twice as likely: the failure this test was written for.
    "attention.layer_norm_rms_epsilon",
];

/// A random case: a random small shape (heads that may not divide, odd head widths, embedding widths
/// that are not heads × width), up to three keys overwritten, random session sizes.
fn random_case(rng: &mut Rng) -> Case {
    let n_head = 1 + rng.below(4);
    let n_head_kv = if rng.chance(75) {
        let divisors: Vec<usize> = (1..=n_head).filter(|&d| n_head.is_multiple_of(d)).collect();
        rng.pick(&divisors)
    } else {
        1 + rng.below(4)
    };
    let head_dim = rng.pick(&[2, 4, 6, 8, 16, 3, 5]);
    let n_embd = if rng.chance(60) {
        n_head * head_dim
    } else {
        rng.pick(&[16, 32, 64])
    };
    let shape = TinyShape {
        n_embd,
        n_layer: 1 + rng.below(2),
        n_head,
        n_head_kv,
        head_dim,
        n_ff: rng.pick(&[16, 32, 48, 64]),
    };
    let mut overrides = Vec::new();
    for _ in 0..rng.below(4) {
        let key = rng.pick(&KEYS);
        if key == "rope.scaling.factor" && rng.chance(70) {
            overrides.push(("rope.scaling.type", Value::Str("linear")));
        }
        overrides.push((key, adversarial(rng, key, &shape)));
    }
    Case {
        arch: rng.pick(&TinyArch::ALL),
        shape,
        overrides,
        flash_attention: rng.chance(50),
        repack: rng.chance(50),
        n_ctx: if rng.chance(85) {
            rng.pick(&[16, 64, 200, 300])
        } else {
            rng.pick(&[0, 1, 2, (1 << 20) + 1, usize::MAX])
        },
        n_batch: rng.pick(&[0, 1, 7, 64, 512, usize::MAX]),
    }
}

/// Cases that must be in every sweep: the reported failure (a negative epsilon) and its neighbours,
/// and the largest session on the smallest model.
fn fixed_cases() -> Vec<Case> {
    let base = |arch, overrides: Vec<(&'static str, Value)>| Case {
        arch,
        shape: TinyShape::default(),
        overrides,
        flash_attention: true,
        repack: true,
        n_ctx: 64,
        n_batch: 16,
    };
    let mut cases = Vec::new();
    for arch in TinyArch::ALL {
        for eps in [-1e-5, 0.0, f32::NAN, 1e-45] {
            cases.push(base(
                arch,
                vec![("attention.layer_norm_rms_epsilon", Value::F32(eps))],
            ));
        }
        cases.push(base(arch, vec![("rope.freq_base", Value::F32(0.0))]));
        cases.push(base(arch, vec![("rope.dimension_count", Value::U32(3))]));
        // The largest context, in one batch; on a model with a two-value-wide KV cache.
        let mut largest = base(arch, vec![]);
        largest.shape = TinyShape {
            n_embd: 32,
            n_layer: 1,
            n_head: 1,
            n_head_kv: 1,
            head_dim: 2,
            n_ff: 32,
        };
        largest.n_ctx = 1 << 20;
        largest.n_batch = 1 << 20;
        cases.push(largest.clone());
        largest.flash_attention = false;
        cases.push(largest);
    }
    cases
}

fn write_case(case: &Case, seed: u64) -> GgufWriter {
    let mut writer = tiny_model_writer_with_shape(case.arch, seed, case.shape);
    let name = case.arch.name();
    for (key, value) in &case.overrides {
        let key = format!("{name}.{key}");
        match *value {
            Value::U32(v) => writer.add_u32(key, v),
            Value::U64(v) => writer.add_u64(key, v),
            Value::I32(v) => writer.add_i32(key, v),
            Value::F32(v) => writer.add_f32(key, v),
            Value::F64(v) => writer.add_f64(key, v),
            Value::Str(v) => writer.add_string(key, v),
        };
    }
    writer
}

/// What a case came to.
#[derive(Debug, Default)]
struct Tally {
    rejected_at_load: usize,
    rejected_hyperparameter: usize,
    session_refused: usize,
    generation_failed: usize,
    generated: usize,
}

fn run_case(dir: &TempDir, index: usize, case: &Case, tally: &mut Tally) {
    let path = dir.join(&format!("case-{index}.gguf"));
    write_case(case, index as u64)
        .write_to(&path)
        .expect("writing a case");
    let params = ModelParams {
        flash_attention: case.flash_attention,
        repack: case.repack,
        ..model_params()
    };
    let loaded = Model::load(&path, params);
    let _ = std::fs::remove_file(&path);
    let model = match loaded {
        Ok(model) => Arc::new(model),
        Err(error) => {
            tally.rejected_at_load += 1;
            if matches!(error, LoadError::InvalidHyperparameter { .. }) {
                tally.rejected_hyperparameter += 1;
            }
            eprintln!("  load error: {error}");
            return;
        }
    };
    let session_params = SessionParams {
        n_ctx: case.n_ctx,
        n_batch: case.n_batch,
        n_threads: 1,
        cache_reuse_min_tokens: 0,
        cache_reuse_fence: None,
    };
    let mut session = match Session::new(model, session_params) {
        Ok(session) => session,
        Err(error) => {
            tally.session_refused += 1;
            eprintln!("  session error: {error}");
            return;
        }
    };
    let params = InferenceParameters::greedy();
    match session.infer("def add(a, b):\n    return", 4, &params, |_| {
        InferenceFeedback::Continue
    }) {
        Ok(_) => tally.generated += 1,
        Err(error) => {
            tally.generation_failed += 1;
            eprintln!("  generation error: {error}");
        }
    }
}

/// The sweep itself, in the child.
fn sweep() {
    let dir = TempDir::new("hparams-sweep");
    let mut rng = Rng::new(0x0068_7061_7261_6d73);
    let mut cases = fixed_cases();
    cases.extend((0..RANDOM_CASES).map(|_| random_case(&mut rng)));
    let mut tally = Tally::default();
    for (index, case) in cases.iter().enumerate() {
        eprintln!("case {index}: {case:?}");
        run_case(&dir, index, case, &mut tally);
    }
    println!("sweep: {} cases, {tally:?}", cases.len());
    // The sweep reaches both sides: errors at load, and models that load and generate.
    assert!(
        tally.rejected_hyperparameter > cases.len() / 10,
        "{tally:?}"
    );
    assert!(tally.generated > cases.len() / 10, "{tally:?}");
}

#[cfg(unix)]
#[test]
fn adversarial_hyperparameters_never_abort() {
    use std::os::unix::process::ExitStatusExt;

    if std::env::var_os(CHILD_ENV).is_some() {
        sweep();
        return;
    }
    let started = std::time::Instant::now();
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "adversarial_hyperparameters_never_abort",
            "--test-threads=1",
            "--nocapture",
        ])
        .env(CHILD_ENV, "1")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last_case = stderr
        .lines()
        .rev()
        .find(|line| line.starts_with("case "))
        .unwrap_or("(none)");
    assert!(
        output.status.success(),
        "the sweep died: status {:?} (signal {:?}); last case started: {last_case}\n\
         stdout:\n{stdout}\nstderr (tail):\n{}",
        output.status,
        output.status.signal(),
        stderr
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n"),
    );
    // The harness's "test ... " announcement may share the summary's line.
    let summary = stdout
        .lines()
        .find_map(|line| line.find("sweep: ").map(|at| &line[at..]))
        .unwrap_or("(no summary)");
    println!("{summary} in {:.1} s", started.elapsed().as_secs_f64());
}

/// The keys that name what is wrong, for the values GGML would abort on (in-process: these are
/// errors now, and were aborts).
#[test]
fn values_ggml_asserts_on_are_invalid_hyperparameters() {
    let dir = TempDir::new("hparams-invalid");
    let cases: [(&'static str, Value, TinyShape); 5] = [
        (
            "attention.layer_norm_rms_epsilon",
            Value::F32(-1e-5),
            TinyShape::default(),
        ),
        (
            "attention.layer_norm_rms_epsilon",
            Value::F32(0.0),
            TinyShape::default(),
        ),
        ("rope.dimension_count", Value::U32(5), TinyShape::default()),
        ("rope.freq_base", Value::F32(-1.0), TinyShape::default()),
        (
            "attention.head_count_kv",
            Value::U32(3),
            TinyShape {
                n_head: 4,
                n_head_kv: 3,
                ..TinyShape::default()
            },
        ),
    ];
    for arch in TinyArch::ALL {
        for (index, (key, value, shape)) in cases.iter().enumerate() {
            let case = Case {
                arch,
                shape: *shape,
                overrides: vec![(key, value.clone())],
                flash_attention: true,
                repack: true,
                n_ctx: 64,
                n_batch: 16,
            };
            let path = dir.join(&format!("{arch}-{index}.gguf"));
            write_case(&case, 1).write_to(&path).unwrap();
            match Model::load(&path, model_params()) {
                Err(LoadError::InvalidHyperparameter { key: found, .. }) => {
                    assert_eq!(found, format!("{arch}.{key}"), "{value:?}")
                }
                other => panic!("{arch} {key} = {value:?}: {other:?}"),
            }
        }
    }
    // An odd head width (with tensors of that width).
    let case = Case {
        arch: TinyArch::Llama,
        shape: TinyShape {
            n_embd: 12,
            n_head: 4,
            n_head_kv: 2,
            head_dim: 3,
            ..TinyShape::default()
        },
        overrides: vec![],
        flash_attention: true,
        repack: true,
        n_ctx: 64,
        n_batch: 16,
    };
    let path = dir.join("odd-head.gguf");
    write_case(&case, 1).write_to(&path).unwrap();
    match Model::load(&path, model_params()) {
        Err(LoadError::InvalidHyperparameter { key, .. }) => {
            assert_eq!(key, "llama.attention.key_length")
        }
        other => panic!("odd head width: {other:?}"),
    }
    // The LayerNorm architectures' epsilon (GGML asserts eps >= 0; 0 divides a constant row by
    // zero) and MPT's ALiBi bias and clamp (negative makes no sense).
    let layer_norm_cases: [(TinyArch, &'static str, f32); 5] = [
        (TinyArch::Gpt2, "attention.layer_norm_epsilon", -1e-5),
        (TinyArch::Bloom, "attention.layer_norm_epsilon", 0.0),
        (TinyArch::Stablelm, "attention.layer_norm_epsilon", f32::NAN),
        (TinyArch::Mpt, "attention.max_alibi_bias", -8.0),
        (TinyArch::Mpt, "attention.clamp_kqv", -1.0),
    ];
    for (index, (arch, key, value)) in layer_norm_cases.into_iter().enumerate() {
        let case = Case {
            arch,
            shape: TinyShape::default(),
            overrides: vec![(key, Value::F32(value))],
            flash_attention: true,
            repack: true,
            n_ctx: 64,
            n_batch: 16,
        };
        let path = dir.join(&format!("layer-norm-{index}.gguf"));
        write_case(&case, 1).write_to(&path).unwrap();
        match Model::load(&path, model_params()) {
            Err(LoadError::InvalidHyperparameter { key: found, .. }) => {
                assert_eq!(found, format!("{arch}.{key}"), "{value}")
            }
            other => panic!("{arch} {key} = {value}: {other:?}"),
        }
    }
}
