//! Compiles GGML's CPU backend (ggml-base, the CPU backend with its x86/ARM kernels, llamafile sgemm and
//! the weight-repacking code) with the `cc` crate. No cmake.
//!
//! The C sources are a pinned build-time input, never committed: the ggml tree that ships inside the
//! crates.io package `llama-cpp-sys-2 = "=0.1.161"` (ggml 0.26.0). We locate it without building that
//! crate: a throw-away manifest depending on it is written into `OUT_DIR` and `cargo metadata` reports
//! where cargo unpacked it. That goes through the user's normal registry configuration, vendoring and
//! offline mode. `GGML_SRC_DIR` overrides all of this with a local ggml checkout (the directory holding
//! `include/ggml.h` and `src/ggml.c`).

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const PINNED_CRATE: &str = "llama-cpp-sys-2";
const PINNED_VERSION: &str = "0.1.161";
const GGML_VERSION: &str = "0.26.0";

fn main() {
    println!("cargo:rerun-if-env-changed=GGML_SRC_DIR");
    println!("cargo:rerun-if-changed=build.rs");
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let ggml_dir = match env::var_os("GGML_SRC_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => locate_pinned_ggml(&out_dir),
    };
    if !ggml_dir.join("include/ggml.h").is_file() || !ggml_dir.join("src/ggml.c").is_file() {
        panic!(
            "ggml sources not found in {} (expected include/ggml.h and src/ggml.c); \
             set GGML_SRC_DIR to a ggml checkout",
            ggml_dir.display()
        );
    }
    write_version_header(&out_dir);
    compile(&ggml_dir, &out_dir);
    println!("cargo:include={}", ggml_dir.join("include").display());
}

/// Finds the ggml tree inside the pinned `llama-cpp-sys-2` package, downloading the package through
/// cargo itself when it is not in the local registry cache yet.
fn locate_pinned_ggml(out_dir: &Path) -> PathBuf {
    let probe = out_dir.join("locate-ggml");
    fs::create_dir_all(probe.join("src")).expect("create probe dir");
    fs::write(
        probe.join("Cargo.toml"),
        format!(
            "[package]\nname = \"locate-ggml\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\
             [dependencies]\n{PINNED_CRATE} = {{ version = \"={PINNED_VERSION}\", default-features = false }}\n\
             [workspace]\n"
        ),
    )
    .expect("write probe manifest");
    fs::write(probe.join("src/lib.rs"), "").expect("write probe lib");
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut command = Command::new(cargo);
    command
        .args(["metadata", "--format-version", "1", "--manifest-path"])
        .arg(probe.join("Cargo.toml"))
        .env_remove("CARGO_TARGET_DIR")
        .env("CARGO_TARGET_DIR", probe.join("target"));
    if env::var_os("CARGO_NET_OFFLINE").is_some_and(|v| v == "true") {
        command.arg("--offline");
    }
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("running cargo metadata: {e}"));
    if !output.status.success() {
        panic!(
            "cargo metadata could not resolve {PINNED_CRATE} ={PINNED_VERSION} (the pinned ggml sources); \
             set GGML_SRC_DIR to a ggml checkout to build without it.\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON");
    let manifest = metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == PINNED_CRATE && p["version"] == PINNED_VERSION)
        .and_then(|p| p["manifest_path"].as_str())
        .unwrap_or_else(|| panic!("cargo metadata did not list {PINNED_CRATE} {PINNED_VERSION}"));
    Path::new(manifest)
        .parent()
        .expect("manifest has a parent")
        .join("llama.cpp/ggml")
}

fn write_version_header(out_dir: &Path) {
    fs::write(
        out_dir.join("ggml-version.h"),
        format!(
            "#pragma once\n#define GGML_VERSION \"{GGML_VERSION}\"\n#define GGML_COMMIT \"{PINNED_CRATE}-{PINNED_VERSION}\"\n"
        ),
    )
    .expect("write ggml-version.h");
}

/// Whether to run graphs on OpenMP threads, as llama.cpp's default build does, instead of GGML's
/// own thread pool: opt-in with `GGML_SYS_OPENMP=1` (GCC on Linux: `-fopenmp`, libgomp). It was
/// not faster on the whole (`docs/performance.md`), so the thread pool, which needs nothing from
/// the system, stays the default.
fn use_openmp(target_os: &str) -> bool {
    println!("cargo:rerun-if-env-changed=GGML_SYS_OPENMP");
    let wanted = env::var("GGML_SYS_OPENMP").is_ok_and(|v| v == "1");
    if wanted && target_os != "linux" {
        println!("cargo:warning=ggml-sys: GGML_SYS_OPENMP=1 is only supported on Linux; ignored");
        return false;
    }
    wanted
}

/// How the CPU backend is built, from the crate features: `dispatch` > `portable` > `native`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `-march=native`: tuned for the building CPU (dev builds, CI).
    Native,
    /// One fixed baseline (x86-64-v3 / armv8.2-a+dotprod+fp16).
    Portable,
    /// The CPU backend once per ISA level, chosen at run time (`src/cpu_variant.rs`).
    Dispatch,
}

/// One build of GGML's CPU backend.
struct Variant {
    /// The name `LMRS_CPU_VARIANT` takes and `lmrs info` prints.
    name: &'static str,
    /// Prefix given to every global symbol of the variant's objects ("" when there is one variant
    /// and nothing is renamed).
    prefix: &'static str,
    /// Compiler flags selecting the ISA level.
    flags: &'static [&'static str],
    /// Feature names (as `is_x86_feature_detected!` / `is_aarch64_feature_detected!` spell them)
    /// the CPU must have to run this variant; `src/cpu_variant.rs` checks them.
    requires: &'static [&'static str],
    /// Built by `dispatch` when `GGML_SYS_VARIANTS` is unset.
    default: bool,
}

const X86_V2: &[&str] = &["sse3", "ssse3", "sse4.1", "sse4.2", "popcnt"];
const X86_V3: &[&str] = &[
    "sse3", "ssse3", "sse4.1", "sse4.2", "popcnt", "avx", "avx2", "bmi1", "bmi2", "fma", "f16c",
    "lzcnt", "movbe",
];
const X86_V3_VNNI: &[&str] = &[
    "sse3", "ssse3", "sse4.1", "sse4.2", "popcnt", "avx", "avx2", "bmi1", "bmi2", "fma", "f16c",
    "lzcnt", "movbe", "avxvnni",
];
const X86_V4: &[&str] = &[
    "sse3", "ssse3", "sse4.1", "sse4.2", "popcnt", "avx", "avx2", "bmi1", "bmi2", "fma", "f16c",
    "lzcnt", "movbe", "avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl",
];
const X86_V4_VNNI: &[&str] = &[
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
    "avx512f",
    "avx512bw",
    "avx512cd",
    "avx512dq",
    "avx512vl",
    "avx512vnni",
];
const X86_V4_BF16: &[&str] = &[
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
    "avx512f",
    "avx512bw",
    "avx512cd",
    "avx512dq",
    "avx512vl",
    "avx512vnni",
    "avx512bf16",
];

/// The x86-64 variants, lowest first (the order `src/cpu_variant.rs` ranks them in). AMX is left
/// out: its kernels need the OS to grant tile state (`ARCH_REQ_XCOMP_PERM`), which GGML's CPU
/// backend does not ask for on Linux.
const X86_VARIANTS: &[Variant] = &[
    Variant {
        name: "x86-64-v2",
        prefix: "lmrs_v2_",
        flags: &["-march=x86-64-v2"],
        requires: X86_V2,
        default: true,
    },
    Variant {
        name: "x86-64-v3",
        prefix: "lmrs_v3_",
        flags: &["-march=x86-64-v3"],
        requires: X86_V3,
        default: true,
    },
    Variant {
        name: "x86-64-v3-avxvnni",
        prefix: "lmrs_v3vnni_",
        flags: &["-march=x86-64-v3", "-mavxvnni"],
        requires: X86_V3_VNNI,
        default: true,
    },
    Variant {
        name: "x86-64-v4",
        prefix: "lmrs_v4_",
        flags: &["-march=x86-64-v4"],
        requires: X86_V4,
        default: true,
    },
    Variant {
        name: "x86-64-v4-vnni",
        prefix: "lmrs_v4vnni_",
        flags: &["-march=x86-64-v4", "-mavx512vnni"],
        requires: X86_V4_VNNI,
        default: true,
    },
    // BF16 only speeds up BF16 tensors (sgemm, vec_dot_bf16); lmrs's models are Q4_K/Q6_K/Q8_0/Q4_1,
    // so it is built only when named in GGML_SYS_VARIANTS.
    Variant {
        name: "x86-64-v4-bf16",
        prefix: "lmrs_v4bf16_",
        flags: &["-march=x86-64-v4", "-mavx512vnni", "-mavx512bf16"],
        requires: X86_V4_BF16,
        default: false,
    },
];

/// The aarch64 variants, lowest first. `+i8mm` is added to armv8.2-a rather than using armv8.6-a,
/// which would also switch on bf16 and others.
const ARM_VARIANTS: &[Variant] = &[
    Variant {
        name: "armv8.0",
        prefix: "lmrs_a80_",
        flags: &["-march=armv8-a"],
        requires: &[],
        default: true,
    },
    Variant {
        name: "armv8.2-dotprod",
        prefix: "lmrs_a82_",
        flags: &["-march=armv8.2-a+dotprod+fp16"],
        requires: &["dotprod", "fp16"],
        default: true,
    },
    Variant {
        name: "armv8.2-i8mm",
        prefix: "lmrs_a82mm_",
        flags: &["-march=armv8.2-a+dotprod+fp16+i8mm"],
        requires: &["dotprod", "fp16", "i8mm"],
        default: true,
    },
];

/// CPU-backend functions the Rust side calls; each variant has its own copy of every one of them.
/// (name, Rust signature). `src/cpu_variant.rs` builds its `CpuApi` table from them.
const API: &[(&str, &str)] = &[
    ("ggml_cpu_init", "()"),
    ("ggml_backend_cpu_init", "() -> ggml_backend_t"),
    ("ggml_backend_cpu_reg", "() -> ggml_backend_reg_t"),
    (
        "ggml_backend_cpu_set_n_threads",
        "(backend_cpu: ggml_backend_t, n_threads: c_int)",
    ),
    (
        "ggml_backend_cpu_set_threadpool",
        "(backend_cpu: ggml_backend_t, threadpool: ggml_threadpool_t)",
    ),
    (
        "ggml_backend_cpu_set_abort_callback",
        "(backend_cpu: ggml_backend_t, abort_callback: ggml_abort_callback, abort_callback_data: *mut c_void)",
    ),
    (
        "ggml_threadpool_new",
        "(params: *mut ggml_threadpool_params) -> *mut ggml_threadpool",
    ),
    ("ggml_threadpool_free", "(threadpool: *mut ggml_threadpool)"),
];

/// `ggml_cpu_has_*` probes reported by `cpu_features()`: (label, function suffix).
const HAS: &[(&str, &str)] = &[
    ("SSE3", "sse3"),
    ("SSSE3", "ssse3"),
    ("AVX", "avx"),
    ("AVX2", "avx2"),
    ("AVX_VNNI", "avx_vnni"),
    ("F16C", "f16c"),
    ("FMA", "fma"),
    ("BMI2", "bmi2"),
    ("AVX512", "avx512"),
    ("AVX512_VNNI", "avx512_vnni"),
    ("AVX512_BF16", "avx512_bf16"),
    ("NEON", "neon"),
    ("ARM_FMA", "arm_fma"),
    ("FP16_VA", "fp16_va"),
    ("DOTPROD", "dotprod"),
    ("MATMUL_INT8", "matmul_int8"),
    ("SVE", "sve"),
    ("LLAMAFILE", "llamafile"),
];

fn compile(ggml: &Path, out_dir: &Path) {
    let target_arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let target_os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let mode = if env::var_os("CARGO_FEATURE_DISPATCH").is_some() {
        Mode::Dispatch
    } else if env::var_os("CARGO_FEATURE_PORTABLE").is_some() {
        Mode::Portable
    } else if env::var_os("CARGO_FEATURE_NATIVE").is_some() {
        Mode::Native
    } else {
        Mode::Portable
    };

    let src = ggml.join("src");
    let cpu = src.join("ggml-cpu");

    let base_c: Vec<PathBuf> = ["ggml.c", "ggml-alloc.c", "ggml-quants.c"]
        .iter()
        .map(|f| src.join(f))
        .collect();
    let base_cpp: Vec<PathBuf> = [
        "ggml.cpp",
        "ggml-backend.cpp",
        "ggml-backend-meta.cpp",
        "ggml-backend-reg.cpp",
        "ggml-threading.cpp",
        "ggml-opt.cpp",
    ]
    .iter()
    .map(|f| src.join(f))
    .collect();
    let mut cpu_c = vec![cpu.join("ggml-cpu.c"), cpu.join("quants.c")];
    // amx/amx.cpp and amx/mmq.cpp are left out: AMX is excluded (see X86_VARIANTS).
    let mut cpu_cpp = vec![
        cpu.join("ggml-cpu.cpp"),
        cpu.join("repack.cpp"),
        cpu.join("hbm.cpp"),
        cpu.join("traits.cpp"),
        cpu.join("binary-ops.cpp"),
        cpu.join("unary-ops.cpp"),
        cpu.join("vec.cpp"),
        cpu.join("ops.cpp"),
        cpu.join("llamafile/sgemm.cpp"),
    ];
    for optional in ["tiled/tiled.cpp", "tiled/tiled-kernel.cpp"] {
        if cpu.join(optional).is_file() {
            cpu_cpp.push(cpu.join(optional));
        }
    }
    match target_arch.as_str() {
        "x86_64" => {
            cpu_c.push(cpu.join("arch/x86/quants.c"));
            cpu_cpp.push(cpu.join("arch/x86/repack.cpp"));
        }
        "aarch64" => {
            cpu_c.push(cpu.join("arch/arm/quants.c"));
            cpu_cpp.push(cpu.join("arch/arm/repack.cpp"));
        }
        other => {
            println!("cargo:warning=ggml-sys: no SIMD kernels for {other}; using generic C code");
        }
    }
    for f in base_c.iter().chain(&cpu_c).chain(&base_cpp).chain(&cpu_cpp) {
        println!("cargo:rerun-if-changed={}", f.display());
    }

    let common = Common {
        ggml: ggml.to_path_buf(),
        out_dir: out_dir.to_path_buf(),
        target_arch: target_arch.clone(),
        target_os: target_os.clone(),
        openmp: use_openmp(&target_os),
    };

    if mode == Mode::Dispatch && !matches!(target_os.as_str(), "linux" | "android" | "freebsd") {
        // The renaming reads symbols and COMDAT groups with ELF binutils; Mach-O and COFF objects
        // would need llvm-objcopy and other readers (untested).
        panic!(
            "ggml-sys: the `dispatch` feature supports ELF targets (Linux) only so far; \
             build for {target_os} with `portable` instead"
        );
    }
    let variants: Vec<Variant> = match mode {
        Mode::Dispatch => dispatch_variants(&target_arch),
        Mode::Native | Mode::Portable => vec![single_variant(mode, &target_arch)],
    };
    if mode == Mode::Dispatch {
        // Base once, at the target's own baseline (plain x86-64 / armv8-a), the level the Rust
        // code is compiled for: ggml.cpp has a static constructor that runs before `main`, and the
        // binary has to get as far as printing "this CPU is below x86-64-v2" on any x86-64 CPU.
        // It is built without GGML_USE_CPU: GGML's registry then does not reference the CPU
        // backend, which `src/lib.rs` registers itself (the selected variant's).
        let baseline: &[&str] = match target_arch.as_str() {
            "x86_64" => &["-march=x86-64"],
            "aarch64" => &["-march=armv8-a"],
            _ => &[],
        };
        // Base and the variants in parallel threads: cc's jobserver keeps the total to cargo's -j.
        let archives: Vec<String> = std::thread::scope(|scope| {
            let base = scope.spawn(|| {
                let mut c = common.build(false, baseline, false);
                c.files(&base_c).cargo_metadata(false);
                c.compile("ggml_base_c");
                let mut cpp = common.build(true, baseline, false);
                cpp.files(&base_cpp).cargo_metadata(false);
                cpp.compile("ggml_base_cpp");
            });
            let handles: Vec<_> = variants
                .iter()
                .map(|v| {
                    let common = &common;
                    let (cpu_c, cpu_cpp) = (&cpu_c, &cpu_cpp);
                    scope.spawn(move || common.build_variant(v, cpu_c, cpu_cpp))
                })
                .collect();
            base.join().expect("base build thread");
            handles
                .into_iter()
                .map(|h| h.join().expect("variant build thread"))
                .collect()
        });
        println!("cargo:rustc-link-search=native={}", out_dir.display());
        for lib in &archives {
            println!("cargo:rustc-link-lib=static={lib}");
        }
        println!("cargo:rustc-link-lib=static=ggml_base_c");
        println!("cargo:rustc-link-lib=static=ggml_base_cpp");
        // cc adds the C++ runtime itself when it emits metadata; here it does not.
        println!("cargo:rerun-if-env-changed=CXXSTDLIB");
        let stdlib = env::var("CXXSTDLIB").unwrap_or_else(|_| {
            let target = env::var("TARGET").unwrap_or_default();
            if target.contains("apple") || target.contains("freebsd") || target.contains("openbsd")
            {
                "c++".to_string()
            } else {
                "stdc++".to_string()
            }
        });
        if !stdlib.is_empty() {
            println!("cargo:rustc-link-lib={stdlib}");
        }
    } else {
        let v = &variants[0];
        let mut c = common.build(false, v.flags, true);
        c.files(base_c.iter().chain(&cpu_c));
        c.compile("ggml_c");
        let mut cpp = common.build(true, v.flags, true);
        cpp.files(base_cpp.iter().chain(&cpu_cpp));
        cpp.compile("ggml_cpp");
    }
    write_variant_table(out_dir, mode, &variants);
    if target_os == "linux" {
        println!("cargo:rustc-link-lib=dylib=pthread");
        if common.openmp {
            println!("cargo:rustc-link-lib=dylib=gomp");
        }
        println!("cargo:rustc-link-lib=dylib=m");
    }
}

/// The one variant of a `native` or `portable` build; its symbols keep GGML's names.
fn single_variant(mode: Mode, target_arch: &str) -> Variant {
    let native = mode == Mode::Native;
    let (flags, requires): (&'static [&'static str], &'static [&'static str]) =
        match (target_arch, native) {
            // AMX off even where the building CPU has it (see X86_VARIANTS).
            ("x86_64", true) => (
                &[
                    "-march=native",
                    "-mno-amx-tile",
                    "-mno-amx-int8",
                    "-mno-amx-bf16",
                ],
                &[],
            ),
            ("x86_64", false) => (&["-march=x86-64-v3"], X86_V3),
            ("aarch64", true) => (&["-mcpu=native"], &[]),
            ("aarch64", false) => (&["-march=armv8.2-a+dotprod+fp16"], &["dotprod", "fp16"]),
            _ => (&[], &[]),
        };
    Variant {
        name: if native { "native" } else { "portable" },
        prefix: "",
        flags,
        requires,
        default: true,
    }
}

/// The variants a `dispatch` build compiles: the default set, or `GGML_SYS_VARIANTS=a,b`.
fn dispatch_variants(target_arch: &str) -> Vec<Variant> {
    println!("cargo:rerun-if-env-changed=GGML_SYS_VARIANTS");
    let all: &[Variant] = match target_arch {
        "x86_64" => X86_VARIANTS,
        "aarch64" => ARM_VARIANTS,
        other => panic!(
            "ggml-sys: the `dispatch` feature has no variants for {other}; build with `native` or `portable`"
        ),
    };
    let copy = |v: &Variant| Variant {
        name: v.name,
        prefix: v.prefix,
        flags: v.flags,
        requires: v.requires,
        default: v.default,
    };
    match env::var("GGML_SYS_VARIANTS") {
        Ok(list) if !list.trim().is_empty() => {
            let wanted: Vec<&str> = list.split(',').map(str::trim).collect();
            for name in &wanted {
                if !all.iter().any(|v| v.name == *name) {
                    let known: Vec<&str> = all.iter().map(|v| v.name).collect();
                    panic!(
                        "ggml-sys: GGML_SYS_VARIANTS names {name:?}, which is not a variant for \
                         {target_arch} (known: {})",
                        known.join(", ")
                    );
                }
            }
            // Keep the table's order (lowest first), whatever order the list has.
            all.iter()
                .filter(|v| wanted.contains(&v.name))
                .map(copy)
                .collect()
        }
        _ => all.iter().filter(|v| v.default).map(copy).collect(),
    }
}

/// What every cc build shares.
struct Common {
    ggml: PathBuf,
    out_dir: PathBuf,
    target_arch: String,
    target_os: String,
    openmp: bool,
}

impl Common {
    fn build(&self, cpp: bool, arch_flags: &[&str], use_cpu: bool) -> cc::Build {
        let src = self.ggml.join("src");
        let mut build = cc::Build::new();
        build
            .include(self.ggml.join("include"))
            .include(&src)
            .include(src.join("ggml-cpu"))
            .include(&self.out_dir)
            .opt_level(3)
            .debug(false)
            .warnings(false)
            .define("NDEBUG", None)
            .define("GGML_USE_LLAMAFILE", None)
            .define("GGML_USE_CPU_REPACK", None)
            .define("GGML_SCHED_MAX_COPIES", "4");
        if use_cpu {
            build.define("GGML_USE_CPU", None);
        }
        if self.target_os == "linux" {
            build.define("_GNU_SOURCE", None);
        }
        if cpp {
            build.cpp(true).std("c++17");
        } else {
            build.std("c11");
        }
        for flag in arch_flags {
            build.flag(flag);
        }
        if !matches!(self.target_arch.as_str(), "x86_64" | "aarch64") {
            build.define("GGML_CPU_GENERIC", None);
        }
        if self.openmp {
            build.define("GGML_USE_OPENMP", None).flag("-fopenmp");
        }
        build
    }

    /// Compiles the CPU backend for `v`, renames every global symbol to carry `v.prefix`, checks
    /// the result and archives it as `lib<name>.a` in OUT_DIR. Returns the library name.
    fn build_variant(&self, v: &Variant, cpu_c: &[PathBuf], cpu_cpp: &[PathBuf]) -> String {
        let lib = format!(
            "ggml_cpu_{}",
            v.prefix.trim_start_matches("lmrs_").trim_end_matches('_')
        );
        let dir = self.out_dir.join("variants").join(v.name);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create variant dir");
        let mut objects = Vec::new();
        for (cpp, files) in [(false, cpu_c), (true, cpu_cpp)] {
            let mut build = self.build(cpp, v.flags, true);
            build
                .files(files)
                .out_dir(dir.join(if cpp { "cpp" } else { "c" }))
                .cargo_metadata(false);
            objects.extend(build.compile_intermediates());
        }
        rename_and_archive(v, &objects, &dir, &self.out_dir, &lib);
        lib
    }
}

fn tool(var: &str, default: &str) -> String {
    println!("cargo:rerun-if-env-changed={var}");
    env::var(var).unwrap_or_else(|_| default.to_string())
}

fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("ggml-sys: running {command:?}: {e}"));
    if !output.status.success() {
        panic!(
            "ggml-sys: {command:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    String::from_utf8(output.stdout).expect("tool output is UTF-8")
}

/// Names of the defined global symbols of an object file or archive (`nm -g --defined-only -P`).
fn defined_globals(nm: &str, file: &Path) -> Vec<String> {
    run(Command::new(nm)
        .args(["-g", "--defined-only", "-P"])
        .arg(file))
    .lines()
    // -P prints "name type value size"; archives add "lib.a[member.o]:" header lines.
    .filter(|line| !line.trim_end().ends_with(':'))
    .filter_map(|line| line.split_whitespace().next())
    .map(str::to_string)
    .collect()
}

/// Signatures of an object's COMDAT groups (`readelf -gW`). The linker keeps one group per
/// signature program-wide, so two variants' copies of an inline function or template must have
/// different signatures or one variant would silently run the other's code.
fn comdat_signatures(readelf: &str, file: &Path) -> Vec<String> {
    run(Command::new(readelf).arg("-gW").arg(file))
        .lines()
        .filter(|line| line.starts_with("COMDAT group section"))
        // "COMDAT group section [    4] `.group' [_ZN...C5Ev] contains 3 sections:"
        .filter_map(|line| {
            let head = &line[..line.rfind(" contains ")?];
            let start = head.rfind('[')? + 1;
            let end = start + head[start..].find(']')?;
            Some(head[start..end].to_string())
        })
        .collect()
}

/// Symbols that stay shared between variants: the personality-routine reference GCC emits in a
/// COMDAT group of its own, identical in every object.
fn shared_symbol(name: &str) -> bool {
    name.starts_with("DW.ref.")
}

fn rename_and_archive(v: &Variant, objects: &[PathBuf], dir: &Path, out_dir: &Path, lib: &str) {
    let nm = tool("NM", "nm");
    let readelf = tool("READELF", "readelf");
    let objcopy = tool("OBJCOPY", "objcopy");
    let ar = tool("AR", "ar");
    let mut names = std::collections::BTreeSet::new();
    for object in objects {
        names.extend(defined_globals(&nm, object));
        names.extend(comdat_signatures(&readelf, object));
    }
    let map: String = names
        .iter()
        .filter(|name| !shared_symbol(name))
        .map(|name| format!("{name} {}{name}\n", v.prefix))
        .collect();
    let map_file = dir.join("redefine-syms.txt");
    fs::write(&map_file, map).expect("write symbol map");
    let renamed_dir = dir.join("renamed");
    fs::create_dir_all(&renamed_dir).expect("create renamed dir");
    let mut renamed = Vec::new();
    for (i, object) in objects.iter().enumerate() {
        // cc names objects after their source file, so two variants (and quants.c of two
        // directories) would clash as archive members; the output name carries prefix and index.
        let stem = object
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("object.o");
        let output = renamed_dir.join(format!("{}{i:02}-{stem}", v.prefix));
        run(Command::new(&objcopy)
            .arg(format!("--redefine-syms={}", map_file.display()))
            .arg(object)
            .arg(&output));
        check_no_constructors(&readelf, v, &output);
        renamed.push(output);
    }
    let archive = out_dir.join(format!("lib{lib}.a"));
    let _ = fs::remove_file(&archive);
    run(Command::new(&ar).arg("crs").arg(&archive).args(&renamed));
    check_prefixed(&nm, &readelf, v, &archive, &renamed);
}

/// Guard: a variant must define nothing outside its prefix, or two variants' definitions would
/// meet in the link (and the linker could pick the wrong one).
fn check_prefixed(nm: &str, readelf: &str, v: &Variant, archive: &Path, objects: &[PathBuf]) {
    let mut stray: Vec<String> = defined_globals(nm, archive)
        .into_iter()
        .filter(|name| !name.starts_with(v.prefix) && !shared_symbol(name))
        .collect();
    for object in objects {
        stray.extend(
            comdat_signatures(readelf, object)
                .into_iter()
                .filter(|name| !name.starts_with(v.prefix) && !shared_symbol(name))
                .map(|name| format!("COMDAT {name}")),
        );
    }
    if !stray.is_empty() {
        panic!(
            "ggml-sys: variant {} still defines {} symbol(s) without its prefix {}: {}",
            v.name,
            stray.len(),
            v.prefix,
            stray
                .iter()
                .take(20)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}

/// Guard: no variant object may run code before `main` (a constructor in an AVX-512 copy would run,
/// and crash, on every CPU).
fn check_no_constructors(readelf: &str, v: &Variant, object: &Path) {
    let sections = run(Command::new(readelf).arg("-SW").arg(object));
    for bad in [".init_array", ".ctors", ".preinit_array"] {
        if sections
            .lines()
            .any(|line| line.split_whitespace().any(|word| word.starts_with(bad)))
        {
            panic!(
                "ggml-sys: {} of variant {} has a {bad} section: code that would run before main \
                 on every CPU",
                object.display(),
                v.name
            );
        }
    }
}

/// Writes `OUT_DIR/cpu_variants.rs`, included by `src/cpu_variant.rs`: an `extern` block per
/// variant binding its renamed CPU-backend entry points, and `VARIANTS`, lowest first.
fn write_variant_table(out_dir: &Path, mode: Mode, variants: &[Variant]) {
    let mut code = String::from("// Generated by ggml-sys's build.rs. Do not edit.\n\n");
    code.push_str(&format!(
        "/// Whether this build holds several variants chosen at run time.\npub(crate) const DISPATCH: bool = {};\n\n",
        mode == Mode::Dispatch
    ));
    for (i, v) in variants.iter().enumerate() {
        code.push_str(&format!(
            "#[allow(dead_code)]\nmod variant_{i} {{\n    #[allow(unused_imports)]\n    use crate::sys::*;\n    use std::ffi::{{c_int, c_void}};\n    extern \"C\" {{\n"
        ));
        for (name, signature) in API {
            code.push_str(&format!(
                "        #[link_name = \"{}{name}\"]\n        pub fn {name}{signature};\n",
                v.prefix
            ));
        }
        for (_, has) in HAS {
            code.push_str(&format!(
                "        #[link_name = \"{}ggml_cpu_has_{has}\"]\n        pub fn ggml_cpu_has_{has}() -> c_int;\n",
                v.prefix
            ));
        }
        code.push_str("    }\n    // Keeps c_void used whatever API lists.\n    pub type Unused = *mut c_void;\n}\n\n");
        code.push_str(&format!(
            "static API_{i}: CpuApi = CpuApi {{\n    cpu_init: variant_{i}::ggml_cpu_init,\n    backend_cpu_init: variant_{i}::ggml_backend_cpu_init,\n    backend_cpu_reg: variant_{i}::ggml_backend_cpu_reg,\n    set_n_threads: variant_{i}::ggml_backend_cpu_set_n_threads,\n    set_threadpool: variant_{i}::ggml_backend_cpu_set_threadpool,\n    set_abort_callback: variant_{i}::ggml_backend_cpu_set_abort_callback,\n    threadpool_new: variant_{i}::ggml_threadpool_new,\n    threadpool_free: variant_{i}::ggml_threadpool_free,\n    has: &[\n"
        ));
        for (label, has) in HAS {
            code.push_str(&format!(
                "        (\"{label}\", variant_{i}::ggml_cpu_has_{has}),\n"
            ));
        }
        code.push_str("    ],\n};\n\n");
    }
    code.push_str("/// The variants this build holds, lowest first.\npub(crate) static VARIANTS: &[CpuVariant] = &[\n");
    for (i, v) in variants.iter().enumerate() {
        code.push_str(&format!(
            "    CpuVariant {{ name: {:?}, requires: &{:?}, api: &API_{i} }},\n",
            v.name, v.requires
        ));
    }
    code.push_str("];\n");
    fs::write(out_dir.join("cpu_variants.rs"), code).expect("write cpu_variants.rs");
}
