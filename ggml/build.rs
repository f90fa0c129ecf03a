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

fn compile(ggml: &Path, out_dir: &Path) {
    let target_arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let target_os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let portable = env::var_os("CARGO_FEATURE_PORTABLE").is_some();
    let native = env::var_os("CARGO_FEATURE_NATIVE").is_some() && !portable;

    let src = ggml.join("src");
    let cpu = src.join("ggml-cpu");

    let base_c = ["ggml.c", "ggml-alloc.c", "ggml-quants.c"].map(|f| src.join(f));
    let base_cpp = [
        "ggml.cpp",
        "ggml-backend.cpp",
        "ggml-backend-meta.cpp",
        "ggml-backend-reg.cpp",
        "ggml-threading.cpp",
        "ggml-opt.cpp",
    ]
    .map(|f| src.join(f));
    let mut cpu_c = vec![cpu.join("ggml-cpu.c"), cpu.join("quants.c")];
    let mut cpu_cpp = vec![
        cpu.join("ggml-cpu.cpp"),
        cpu.join("repack.cpp"),
        cpu.join("hbm.cpp"),
        cpu.join("traits.cpp"),
        cpu.join("amx/amx.cpp"),
        cpu.join("amx/mmq.cpp"),
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
    let openmp = use_openmp(&target_os);
    let mut arch_flags: Vec<&str> = Vec::new();
    match target_arch.as_str() {
        "x86_64" => {
            cpu_c.push(cpu.join("arch/x86/quants.c"));
            cpu_cpp.push(cpu.join("arch/x86/repack.cpp"));
            arch_flags.push(if native {
                "-march=native"
            } else {
                "-march=x86-64-v3"
            });
        }
        "aarch64" => {
            cpu_c.push(cpu.join("arch/arm/quants.c"));
            cpu_cpp.push(cpu.join("arch/arm/repack.cpp"));
            arch_flags.push(if native {
                "-mcpu=native"
            } else {
                "-march=armv8.2-a+dotprod+fp16"
            });
        }
        other => {
            println!("cargo:warning=ggml-sys: no SIMD kernels for {other}; using generic C code");
        }
    }

    let configure = |build: &mut cc::Build, cpp: bool| {
        build
            .include(ggml.join("include"))
            .include(&src)
            .include(&cpu)
            .include(out_dir)
            .opt_level(3)
            .debug(false)
            .warnings(false)
            .define("NDEBUG", None)
            .define("GGML_USE_CPU", None)
            .define("GGML_USE_LLAMAFILE", None)
            .define("GGML_USE_CPU_REPACK", None)
            .define("GGML_SCHED_MAX_COPIES", "4");
        if target_os == "linux" {
            build.define("_GNU_SOURCE", None);
        }
        if cpp {
            build.cpp(true).std("c++17");
        } else {
            build.std("c11");
        }
        for flag in &arch_flags {
            build.flag(flag);
        }
        if !matches!(target_arch.as_str(), "x86_64" | "aarch64") {
            build.define("GGML_CPU_GENERIC", None);
        }
        if openmp {
            build.define("GGML_USE_OPENMP", None).flag("-fopenmp");
        }
    };

    let mut c = cc::Build::new();
    configure(&mut c, false);
    c.files(base_c.iter().chain(cpu_c.iter()));
    let mut cpp = cc::Build::new();
    configure(&mut cpp, true);
    cpp.files(base_cpp.iter().chain(cpu_cpp.iter()));

    for f in base_c.iter().chain(&cpu_c).chain(&base_cpp).chain(&cpu_cpp) {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    c.compile("ggml_c");
    cpp.compile("ggml_cpp");
    if target_os == "linux" {
        println!("cargo:rustc-link-lib=dylib=pthread");
        if openmp {
            println!("cargo:rustc-link-lib=dylib=gomp");
        }
        println!("cargo:rustc-link-lib=dylib=m");
    }
}
