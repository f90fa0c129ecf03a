//! A bounded, randomized session against the real `lmrs lsp` binary on a tiny random-weight
//! model: typing, cursor jumps, cancels, documents opened and closed, configuration changes and
//! hostile messages, mixed by a seeded generator. After every request the server must answer;
//! every 50 steps its resident memory and open file descriptors must stay within bounds.
//!
//! `LMRS_SOAK_SECONDS` (default 30, at most 1800) bounds the run; `LMRS_SOAK_SEED` picks the mix.
//! The figures (steps, requests, error answers, max RSS, max fds) go to stderr.

mod common;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{frame, LspClient};
use lmrs_fixtures::SplitMix64 as Rng;
use serde_json::json;

const T: Duration = Duration::from_secs(60);

fn tiny_model() -> &'static str {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("lmrs-soak-tiny-{}.gguf", std::process::id()));
        lmrs_fixtures::tiny::write_tiny_model(&path, lmrs_fixtures::tiny::TinyArch::Qwen2, 7)
            .unwrap();
        path
    })
    .to_str()
    .unwrap()
}

const SNIPPETS: &[&str] = &[
    "def ",
    "return x",
    "\n",
    "    ",
    "(a, b)",
    "import os\n",
    "é",
    "😀",
    "\t",
    "}",
    "x = [1, 2, 3]\n",
    "class Point:\n    pass\n",
];

const HOSTILE: &[&[u8]] = &[
    b"{not json",
    b"\xff\xfe\xfd",
    br#"{"jsonrpc":"2.0","id":1.5,"method":"textDocument/inlineCompletion","params":{}}"#,
    br#"{"jsonrpc":"2.0","id":true,"method":"shutdown"}"#,
    br#"[{"jsonrpc":"2.0","id":7,"method":"shutdown"}]"#,
    br#"{"jsonrpc":"1.0","id":8,"method":"shutdown"}"#,
    br#"{"jsonrpc":"2.0","method":"textDocument/didChange","params":{"textDocument":{"uri":"file:///soak/0.py","version":-5},"contentChanges":[{"text":"\ud800"}]}}"#,
    br#"{"jsonrpc":"2.0","id":9,"method":"no/such/method","params":null}"#,
];

#[test]
fn a_randomized_session_keeps_being_served_with_bounded_memory_and_descriptors() {
    let seconds: u64 = std::env::var("LMRS_SOAK_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30)
        .min(1800);
    let seed: u64 = std::env::var("LMRS_SOAK_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let mut rng = Rng::new(seed);
    let mut c = LspClient::spawn(&["--model", tiny_model(), "--threads", "1"]);
    c.initialize(&["utf-16"], json!({"maxTokens": 6, "timeoutMs": 200}));
    c.wait_model_ready(T);

    // Open documents: uri -> (version, text).
    let mut docs: Vec<(String, i32, String)> = Vec::new();
    let end = Instant::now() + Duration::from_secs(seconds);
    let (mut steps, mut requests, mut error_answers) = (0u64, 0u64, 0u64);
    let (mut max_rss, mut max_fds) = (0u64, 0usize);
    let mut first_rss = None;
    let mut pending: Vec<i64> = Vec::new();
    while Instant::now() < end {
        steps += 1;
        match rng.below(100) {
            // Open a document (at most 24 open).
            0..=7 if docs.len() < 24 => {
                let uri = format!("file:///soak/{}.py", rng.below(40));
                if !docs.iter().any(|(u, _, _)| *u == uri) {
                    let text = "def f(a, b):\n    return a\n\nprint(f(1, 2))\n".to_owned();
                    c.open(&uri, "python", &text);
                    docs.push((uri, 1, text));
                }
            }
            // Close one.
            8..=11 if !docs.is_empty() => {
                let (uri, _, _) = docs.remove(rng.below(docs.len()));
                c.notify(
                    "textDocument/didClose",
                    json!({"textDocument": {"uri": uri}}),
                );
            }
            // Type: an insertion at the end of a random line (whole-document sync keeps the
            // client's copy exact), or an out-of-range edit the server must refuse quietly.
            12..=54 if !docs.is_empty() => {
                let i = rng.below(docs.len());
                let snippet = rng.pick(SNIPPETS);
                let (uri, version, text) = &mut docs[i];
                *version += 1;
                if rng.below(10) == 0 {
                    c.notify(
                        "textDocument/didChange",
                        json!({"textDocument": {"uri": uri, "version": *version},
                               "contentChanges": [{"range": {"start": {"line": 9999, "character": 3}, "end": {"line": 9999, "character": 1}}, "text": snippet}]}),
                    );
                } else {
                    let lines: Vec<&str> = text.split('\n').collect();
                    let line = rng.below(lines.len());
                    let mut new_lines: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
                    new_lines[line].push_str(snippet);
                    *text = new_lines.join("\n");
                    c.notify(
                        "textDocument/didChange",
                        json!({"textDocument": {"uri": uri, "version": *version},
                               "contentChanges": [{"text": text.clone()}]}),
                    );
                }
            }
            // Ask for a completion somewhere (some past the end of the document).
            55..=84 if !docs.is_empty() => {
                let (uri, _, text) = rng.pick(&docs);
                let lines = text.split('\n').count();
                let id = c.inline(
                    &uri,
                    rng.below(lines + 2) as u32,
                    rng.below(40) as u32,
                    rng.below(8) == 0,
                );
                requests += 1;
                pending.push(id);
            }
            // Cancel a pending request.
            85..=89 if !pending.is_empty() => {
                let id = pending[rng.below(pending.len())];
                c.notify("$/cancelRequest", json!({"id": id}));
            }
            // Change the configuration.
            90..=93 => {
                let settings = json!({"lmrs": {"maxTokens": 1 + rng.below(8), "multiline": rng.below(2) == 0,
                                               "snippetTokens": rng.below(2) * 32, "contextTokens": rng.below(2) * 64}});
                c.notify(
                    "workspace/didChangeConfiguration",
                    json!({"settings": settings}),
                );
            }
            // Something hostile.
            _ => {
                let message: &[u8] = HOSTILE[rng.below(HOSTILE.len())];
                c.send_raw(&frame(message));
            }
        }
        // Every request gets an answer; collect them a few at a time.
        if pending.len() >= 4 || (rng.below(4) == 0 && !pending.is_empty()) {
            for id in pending.drain(..) {
                let answer = c.response(id, T);
                if answer.get("error").is_some() {
                    error_answers += 1;
                }
            }
        }
        if steps % 50 == 0 {
            let (rss, fds) = (c.rss_kb(), c.fd_count());
            let first = *first_rss.get_or_insert(rss);
            max_rss = max_rss.max(rss);
            max_fds = max_fds.max(fds);
            assert!(
                rss < first + 64 * 1024,
                "step {steps}: RSS grew from {first} kB to {rss} kB"
            );
            assert!(fds < 64, "step {steps}: {fds} open file descriptors");
        }
    }
    for id in pending.drain(..) {
        c.response(id, T);
    }
    // Still serving: a fresh document gets a completion.
    c.open(
        "file:///soak/final.py",
        "python",
        "def add(a, b):\n    return ",
    );
    let id = c.inline("file:///soak/final.py", 1, 11, false);
    let answer = c.response(id, T);
    assert!(answer.get("result").is_some(), "{answer}");
    eprintln!(
        "soak: seed {seed}, {seconds} s, {steps} steps, {requests} completion requests ({error_answers} error answers), max RSS {max_rss} kB, max fds {max_fds}"
    );
    c.shutdown();
}
