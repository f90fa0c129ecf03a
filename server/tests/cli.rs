//! The `lmrs` command line at its edges: a reader that closes the pipe early, and bad model files.
//! Each test runs the real binary on a tiny random-weight model the test writes itself.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn tiny_model(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("lmrs-cli-{name}-{}.gguf", std::process::id()));
    lmrs::tiny::write_tiny_model(&path, lmrs::tiny::TinyArch::Qwen2, 3).unwrap();
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
