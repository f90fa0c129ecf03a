//! The `lmrs` command line at its edges: a reader that closes the pipe early, and bad model files.
//! Each test runs the real binary on a tiny random-weight model the test writes itself.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn tiny_model(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("lmrs-cli-{name}-{}.gguf", std::process::id()));
    lmrs_fixtures::tiny::write_tiny_model(&path, lmrs_fixtures::tiny::TinyArch::Qwen2, 3).unwrap();
    path
}

#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    let model = tiny_model("pipe");
    let mut child = Command::new(env!("CARGO_BIN_EXE_lmrs"))
        .arg("info")
        .arg(&model)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The reader goes away before the command has written anything (like `lmrs info M | head -0`).
    drop(child.stdout.take());
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    std::fs::remove_file(&model).ok();
    assert!(status.success(), "exit status {status}, stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
}

#[test]
fn a_truncated_model_file_is_one_clear_error() {
    let model = tiny_model("truncated");
    let bytes = std::fs::read(&model).unwrap();
    std::fs::write(&model, &bytes[..100]).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_lmrs"))
        .arg("info")
        .arg(&model)
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    std::fs::remove_file(&model).ok();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "stderr: {stderr}");
    let first_line = stderr.lines().next().unwrap_or_default();
    assert!(
        first_line.starts_with("Error: loading ") && first_line.contains("lmrs-cli-truncated"),
        "stderr: {stderr}"
    );
    assert!(stderr.contains("truncated"), "stderr: {stderr}");
    assert!(stderr.contains("byte"), "names the offset: {stderr}");
    // A user error, not a crash: no panic message and no backtrace even with RUST_BACKTRACE set.
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
    assert!(!stderr.contains("backtrace"), "stderr: {stderr}");
    assert!(output.stdout.is_empty());
}

#[test]
fn complete_shows_similar_code_from_far_above_only_when_asked() {
    let model = tiny_model("snippet");
    let dir = std::env::temp_dir().join(format!("lmrs-cli-snippet-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("seeds.rs");
    // A test far above the cursor, 80 unrelated lines, then the start of a test just like it.
    let mut text = String::from(
        "#[test]\nfn check_seed_round_trip() {\n    let seed = from_le_bytes(testseed);\n    let unique_marker_line = seed + 42;\n}\n",
    );
    for i in 0..80 {
        text.push_str(&format!("const VALUE_{i}: usize = {i};\n"));
    }
    text.push_str(
        "#[test]\nfn check_seed_round_trip() {\n    let seed = from_le_bytes(testseed);\n    \n",
    );
    std::fs::write(&file, &text).unwrap();
    let location = format!("{}:89:5", file.display());
    let prompt_log = |extra: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_lmrs"))
            .args(["complete", "--model"])
            .arg(&model)
            .args([
                "--threads",
                "1",
                "--max-tokens",
                "2",
                "--prefix-tokens",
                "48",
            ])
            .args(["--suffix-tokens", "16"])
            .args(extra)
            .arg(&location)
            .env("LMRS_LOG", "debug")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "stderr: {stderr}");
        stderr
    };
    let without = prompt_log(&[]);
    let with = prompt_log(&["--snippet-tokens", "200"]);
    std::fs::remove_dir_all(&dir).ok();
    std::fs::remove_file(&model).ok();
    assert!(
        without.contains("prompt"),
        "the prompt is logged at debug: {without}"
    );
    assert!(!without.contains("unique_marker_line"), "{without}");
    assert!(with.contains("unique_marker_line"), "{with}");
}

#[test]
fn index_prints_what_the_project_index_holds() {
    let dir = std::env::temp_dir().join(format!("lmrs-cli-index-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("pkg")).unwrap();
    std::fs::write(
        dir.join("pkg/shapes.py"),
        "class Circle:\n    def area(self):\n        return 3.14\n",
    )
    .unwrap();
    std::fs::write(dir.join("notes.txt"), "def not_code(): pass\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lmrs"))
        .args(["index", "--definitions"])
        .arg(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{stdout}");
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["files"], 1, "{stdout}");
    assert_eq!(lines[0]["definitions"], 2, "{stdout}");
    assert_eq!(
        lines[1..],
        [
            serde_json::json!({"path": "pkg/shapes.py", "line": 0, "name": "Circle"}),
            serde_json::json!({"path": "pkg/shapes.py", "line": 1, "name": "area"}),
        ]
    );
    // A folder that does not exist is one clear error.
    let missing = Command::new(env!("CARGO_BIN_EXE_lmrs"))
        .args(["index"])
        .arg(dir.join("no-such-folder"))
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot open folder"));
    std::fs::remove_dir_all(&dir).ok();
}
