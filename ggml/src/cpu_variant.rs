//! Which build of GGML's CPU backend this process runs.
//!
//! GGML picks its kernels at compile time (`#if defined(__AVX2__)` ...), so a binary built for one
//! ISA level raises SIGILL on a CPU below it. With the `dispatch` feature, `build.rs` compiles the
//! CPU backend once per level (x86-64-v2, v3, v3+AVX-VNNI, v4, v4+AVX512-VNNI; armv8.0,
//! armv8.2+dotprod+fp16, +i8mm), renames each copy's symbols to a prefix of its own and generates
//! [`VARIANTS`], a table of the entry points the safe layer calls. ggml-base (graphs, allocation,
//! backend plumbing) exists once, at the target's baseline. A `native` or `portable` build holds
//! exactly one variant (`"native"` / `"portable"`) under GGML's own names; the API is the same.
//!
//! [`selected`] decides once per process, before the first GGML call:
//! - `LMRS_CPU_VARIANT` unset or `auto`: the highest variant whose features the CPU (and OS) has;
//! - a built variant the CPU supports: that one;
//! - a built variant the CPU does not support: a warning on stderr, then the `auto` choice (never
//!   SIGILL);
//! - a name this binary was not built with: an error listing the built variants, and exit.
//!
//! A process must keep one variant: the weight-repacking layouts (`CPU_REPACK`) differ between
//! variants, so weights repacked by one copy cannot be computed by another.

use std::ffi::{c_int, c_void};
use std::sync::OnceLock;

use crate::sys::{
    ggml_abort_callback, ggml_backend_reg_t, ggml_backend_t, ggml_threadpool,
    ggml_threadpool_params, ggml_threadpool_t,
};

/// The environment variable that forces a variant.
pub const ENV_VAR: &str = "LMRS_CPU_VARIANT";

/// One variant's copies of the CPU-backend entry points the safe layer calls.
pub struct CpuApi {
    pub(crate) cpu_init: unsafe extern "C" fn(),
    pub(crate) backend_cpu_init: unsafe extern "C" fn() -> ggml_backend_t,
    pub(crate) backend_cpu_reg: unsafe extern "C" fn() -> ggml_backend_reg_t,
    pub(crate) set_n_threads: unsafe extern "C" fn(ggml_backend_t, c_int),
    pub(crate) set_threadpool: unsafe extern "C" fn(ggml_backend_t, ggml_threadpool_t),
    pub(crate) set_abort_callback:
        unsafe extern "C" fn(ggml_backend_t, ggml_abort_callback, *mut c_void),
    pub(crate) threadpool_new:
        unsafe extern "C" fn(*mut ggml_threadpool_params) -> *mut ggml_threadpool,
    pub(crate) threadpool_free: unsafe extern "C" fn(*mut ggml_threadpool),
    /// `ggml_cpu_has_*` probes: (label, function). They report what the variant was compiled for.
    pub(crate) has: &'static [(&'static str, unsafe extern "C" fn() -> c_int)],
}

/// One build of the CPU backend held by this binary.
pub struct CpuVariant {
    /// Its name, as `LMRS_CPU_VARIANT` takes it.
    pub name: &'static str,
    /// CPU features it needs, spelled as `is_x86_feature_detected!` / `is_aarch64_feature_detected!`
    /// take them.
    pub requires: &'static [&'static str],
    pub(crate) api: &'static CpuApi,
}

impl std::fmt::Debug for CpuVariant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuVariant")
            .field("name", &self.name)
            .field("requires", &self.requires)
            .finish_non_exhaustive()
    }
}

mod generated {
    use super::{CpuApi, CpuVariant};
    include!(concat!(env!("OUT_DIR"), "/cpu_variants.rs"));
}
use generated::VARIANTS;

/// Whether this is a `dispatch` build (several variants chosen at run time).
pub fn is_dispatch_build() -> bool {
    generated::DISPATCH
}

/// The variants this binary holds, lowest first.
pub fn compiled() -> &'static [CpuVariant] {
    VARIANTS
}

/// Whether this CPU can run `variant`: `Err` names the first feature it lacks.
pub fn supported(variant: &CpuVariant) -> Result<(), &'static str> {
    missing(variant, has_feature)
}

/// The variants this CPU can run, lowest first.
pub fn supported_variants() -> Vec<&'static CpuVariant> {
    VARIANTS.iter().filter(|v| supported(v).is_ok()).collect()
}

fn missing(variant: &CpuVariant, has: impl Fn(&str) -> bool) -> Result<(), &'static str> {
    match variant.requires.iter().find(|feature| !has(feature)) {
        Some(feature) => Err(feature),
        None => Ok(()),
    }
}

/// How the variant was picked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum How {
    /// `LMRS_CPU_VARIANT` unset or `auto`: the best supported.
    Auto,
    /// Named by `LMRS_CPU_VARIANT` and supported.
    Forced,
    /// Named by `LMRS_CPU_VARIANT` but the CPU lacks `missing`; the best supported runs instead.
    Fallback {
        /// The requested variant.
        requested: String,
        /// The first feature the CPU lacks.
        missing: &'static str,
    },
}

/// The outcome of [`choose`].
#[derive(Debug)]
pub struct Choice<'a> {
    /// The variant to run.
    pub variant: &'a CpuVariant,
    /// Why.
    pub how: How,
}

/// Picks a variant from `compiled` (lowest first) for a CPU whose features `has` reports.
/// `requested` is `LMRS_CPU_VARIANT`'s value. `Err` when the name is not one of `compiled` or when
/// the CPU supports none of them; the message says which variants exist.
pub fn choose<'a>(
    requested: Option<&str>,
    compiled: &'a [CpuVariant],
    has: impl Fn(&str) -> bool,
) -> Result<Choice<'a>, String> {
    let names = || {
        compiled
            .iter()
            .map(|v| v.name)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let best = || {
        compiled
            .iter()
            .rev()
            .find(|v| missing(v, &has).is_ok())
            .ok_or_else(|| {
                let lowest = compiled.first().map(|v| v.name).unwrap_or("none");
                let lacks = compiled
                    .first()
                    .and_then(|v| missing(v, &has).err())
                    .unwrap_or("?");
                format!(
                    "this CPU cannot run any CPU backend of this build: the lowest, {lowest}, needs {lacks} \
                     (built: {})",
                    names()
                )
            })
    };
    let requested = requested.map(str::trim).filter(|r| !r.is_empty());
    match requested {
        None | Some("auto") => Ok(Choice {
            variant: best()?,
            how: How::Auto,
        }),
        Some(name) => {
            let Some(variant) = compiled.iter().find(|v| v.name == name) else {
                return Err(format!(
                    "{ENV_VAR}={name:?} is not a CPU variant of this build; built: {} (or auto)",
                    names()
                ));
            };
            match missing(variant, &has) {
                Ok(()) => Ok(Choice {
                    variant,
                    how: How::Forced,
                }),
                Err(lacks) => Ok(Choice {
                    variant: best()?,
                    how: How::Fallback {
                        requested: name.to_string(),
                        missing: lacks,
                    },
                }),
            }
        }
    }
}

/// Whether the running CPU (and OS, for register state) has `feature`. Unknown names are false.
#[cfg(target_arch = "x86_64")]
pub fn has_feature(feature: &str) -> bool {
    match feature {
        "sse3" => is_x86_feature_detected!("sse3"),
        "ssse3" => is_x86_feature_detected!("ssse3"),
        "sse4.1" => is_x86_feature_detected!("sse4.1"),
        "sse4.2" => is_x86_feature_detected!("sse4.2"),
        "popcnt" => is_x86_feature_detected!("popcnt"),
        "avx" => is_x86_feature_detected!("avx"),
        "avx2" => is_x86_feature_detected!("avx2"),
        "bmi1" => is_x86_feature_detected!("bmi1"),
        "bmi2" => is_x86_feature_detected!("bmi2"),
        "fma" => is_x86_feature_detected!("fma"),
        "f16c" => is_x86_feature_detected!("f16c"),
        "lzcnt" => is_x86_feature_detected!("lzcnt"),
        "movbe" => is_x86_feature_detected!("movbe"),
        "avxvnni" => is_x86_feature_detected!("avxvnni"),
        "avx512f" => is_x86_feature_detected!("avx512f"),
        "avx512bw" => is_x86_feature_detected!("avx512bw"),
        "avx512cd" => is_x86_feature_detected!("avx512cd"),
        "avx512dq" => is_x86_feature_detected!("avx512dq"),
        "avx512vl" => is_x86_feature_detected!("avx512vl"),
        "avx512vnni" => is_x86_feature_detected!("avx512vnni"),
        "avx512bf16" => is_x86_feature_detected!("avx512bf16"),
        _ => false,
    }
}

/// Whether the running CPU has `feature`. Unknown names are false.
#[cfg(target_arch = "aarch64")]
pub fn has_feature(feature: &str) -> bool {
    match feature {
        "dotprod" => std::arch::is_aarch64_feature_detected!("dotprod"),
        "fp16" => std::arch::is_aarch64_feature_detected!("fp16"),
        "i8mm" => std::arch::is_aarch64_feature_detected!("i8mm"),
        _ => false,
    }
}

/// Other targets have a single generic variant that requires nothing.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub fn has_feature(_feature: &str) -> bool {
    false
}

static SELECTED: OnceLock<Result<Choice<'static>, String>> = OnceLock::new();

fn selection() -> &'static Result<Choice<'static>, String> {
    SELECTED.get_or_init(|| {
        let requested = std::env::var(ENV_VAR).ok();
        let choice = choose(requested.as_deref(), VARIANTS, has_feature);
        if let Ok(Choice {
            variant,
            how: How::Fallback { requested, missing },
        }) = &choice
        {
            eprintln!(
                "lmrs: warning: {ENV_VAR}={requested} needs CPU feature {missing}, which this CPU \
                 lacks; running {} instead",
                variant.name
            );
        }
        choice
    })
}

/// The variant this process runs, chosen on the first call (see the module documentation).
/// When no variant can run (an unknown `LMRS_CPU_VARIANT`, or a CPU below the lowest variant) it
/// prints why on stderr and exits with status 2: running on would mean an illegal instruction.
pub fn selected() -> &'static CpuVariant {
    match selection() {
        Ok(choice) => choice.variant,
        Err(message) => {
            eprintln!("lmrs: error: {message}");
            std::process::exit(2);
        }
    }
}

/// The selection's outcome without exiting: `Err` is the message [`selected`] would print.
pub fn selected_checked() -> Result<&'static CpuVariant, &'static str> {
    match selection() {
        Ok(choice) => Ok(choice.variant),
        Err(message) => Err(message),
    }
}

/// One line describing the pick, e.g. `x86-64-v4-vnni (auto; built: x86-64-v2, ..., x86-64-v4-vnni)`.
pub fn describe() -> String {
    let built = VARIANTS
        .iter()
        .map(|v| v.name)
        .collect::<Vec<_>>()
        .join(", ");
    match selection() {
        Ok(Choice { variant, how }) => {
            let how = match how {
                How::Auto => "auto".to_string(),
                How::Forced => ENV_VAR.to_string(),
                How::Fallback { requested, missing } => {
                    format!("{ENV_VAR}={requested} lacks {missing}, fell back")
                }
            };
            format!("{} ({how}; built: {built})", variant.name)
        }
        Err(message) => format!("none ({message})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(name: &'static str, requires: &'static [&'static str]) -> CpuVariant {
        CpuVariant {
            name,
            requires,
            api: VARIANTS[0].api,
        }
    }

    fn table() -> Vec<CpuVariant> {
        vec![
            fake("low", &["a"]),
            fake("mid", &["a", "b"]),
            fake("mid-x", &["a", "b", "x"]),
            fake("high", &["a", "b", "c"]),
        ]
    }

    fn cpu(features: &'static [&'static str]) -> impl Fn(&str) -> bool {
        move |f| features.contains(&f)
    }

    #[test]
    fn choose_auto_takes_the_best_supported() {
        let t = table();
        let c = choose(None, &t, cpu(&["a", "b"])).unwrap();
        assert_eq!((c.variant.name, c.how), ("mid", How::Auto));
        let c = choose(Some("auto"), &t, cpu(&["a", "b", "c", "x"])).unwrap();
        assert_eq!(c.variant.name, "high");
        // a later entry wins over an earlier one when both are supported
        let c = choose(Some(" "), &t, cpu(&["a", "b", "x"])).unwrap();
        assert_eq!(c.variant.name, "mid-x");
    }

    #[test]
    fn choose_forced_lower_variant_is_honoured() {
        let t = table();
        let c = choose(Some("low"), &t, cpu(&["a", "b", "c"])).unwrap();
        assert_eq!((c.variant.name, c.how), ("low", How::Forced));
    }

    #[test]
    fn choose_forced_unsupported_falls_back_with_the_missing_feature() {
        let t = table();
        let c = choose(Some("high"), &t, cpu(&["a", "b"])).unwrap();
        assert_eq!(c.variant.name, "mid");
        assert_eq!(
            c.how,
            How::Fallback {
                requested: "high".into(),
                missing: "c"
            }
        );
    }

    #[test]
    fn choose_unknown_name_lists_the_built_variants() {
        let t = table();
        let e = choose(Some("x86-64-v9"), &t, cpu(&["a"])).unwrap_err();
        assert!(e.contains("x86-64-v9"), "{e}");
        assert!(e.contains("low, mid, mid-x, high"), "{e}");
    }

    #[test]
    fn choose_cpu_below_the_lowest_variant_is_an_error() {
        let t = table();
        let e = choose(None, &t, cpu(&[])).unwrap_err();
        assert!(e.contains("low") && e.contains("needs a"), "{e}");
        // a forced name on such a CPU fails the same way rather than falling back to nothing
        assert!(choose(Some("mid"), &t, cpu(&[])).is_err());
    }

    #[test]
    fn choose_single_native_variant() {
        let t = vec![fake("native", &[])];
        assert_eq!(choose(None, &t, cpu(&[])).unwrap().variant.name, "native");
        assert_eq!(
            choose(Some("native"), &t, cpu(&[])).unwrap().how,
            How::Forced
        );
        assert!(choose(Some("x86-64-v2"), &t, cpu(&[])).is_err());
    }

    #[test]
    fn this_cpu_runs_the_selected_variant() {
        let v = selected_checked().expect("a variant for this CPU");
        assert!(supported(v).is_ok());
        assert!(describe().starts_with(v.name), "{}", describe());
        if std::env::var(ENV_VAR).is_err() {
            // auto: nothing better was built
            let best = supported_variants().pop().expect("one supported");
            assert_eq!(best.name, v.name);
        }
    }

    #[test]
    fn every_required_feature_name_is_one_detection_knows() {
        // has_feature answers false for names it does not know, which would silently make a
        // variant unreachable; every name the build table uses must be spelled as detection does.
        let known_on_this_cpu_or_not = |f: &str| {
            let known = [
                "sse3",
                "ssse3",
                "sse4.1",
                "sse4.2",
                "popcnt",
                "avx",
                "avx2",
                "bmi1",
                "bmi2",
                "fma",
                "f16c",
                "lzcnt",
                "movbe",
                "avxvnni",
                "avx512f",
                "avx512bw",
                "avx512cd",
                "avx512dq",
                "avx512vl",
                "avx512vnni",
                "avx512bf16",
                "dotprod",
                "fp16",
                "i8mm",
            ];
            known.contains(&f)
        };
        for v in compiled() {
            for f in v.requires {
                assert!(known_on_this_cpu_or_not(f), "{}: {f}", v.name);
            }
        }
    }
}
