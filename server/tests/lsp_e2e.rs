//! End-to-end tests over stdio against the real `lmrs lsp` binary running the real engine on a tiny
//! random-weight Qwen2 model that the test writes itself (`lmrs::tiny`), so protocol, cancellation,
//! supersession, caching and memory are tested without downloaded model files and without mocks.
//! The tiny model's text is arbitrary (but deterministic), so the tests check behaviour: where
//! suggestions go, that they are stable, which requests are cancelled or superseded, and that every
//! request is answered.

mod common;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use common::{items_of, LspClient};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(60);

/// The tiny model, written once per test process.
fn tiny_model() -> &'static str {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("lmrs-e2e-tiny-{}.gguf", std::process::id()));
        lmrs_fixtures::tiny::write_tiny_model(&path, lmrs_fixtures::tiny::TinyArch::Qwen2, 7)
            .unwrap();
        path
    })
    .to_str()
    .unwrap()
}

fn start(options: serde_json::Value) -> LspClient {
    let mut c = LspClient::spawn(&["--model", tiny_model(), "--threads", "1"]);
    c.initialize(&["utf-16"], options);
    c.wait_model_ready(T);
    c
}

/// Options that make a completion at indent 0 with nothing after it run for thousands of tokens
/// (multi-line, no dedent can end it), so that it is still running when later messages arrive.
fn long_options() -> serde_json::Value {
    json!({"maxTokens": 4000, "maxLines": 100000, "timeoutMs": 600000, "contextSize": 4096})
}

const PY: &str = "def add(a, b):\n    \n\nprint(add(1, 2))\n";

#[test]
fn initialize_advertises_inline_completion_and_negotiates_encoding() {
    let mut c = LspClient::spawn(&["--model", tiny_model()]);
    let r = c.initialize(&["utf-8", "utf-16"], json!(null));
    assert_eq!(r["capabilities"]["positionEncoding"], "utf-8");
    assert_eq!(r["capabilities"]["inlineCompletionProvider"], true);
    assert_eq!(r["capabilities"]["textDocumentSync"]["change"], 2);
    assert!(r["capabilities"]["completionProvider"].is_object());
    c.shutdown();
}

#[test]
fn inline_completion_returns_item_at_cursor() {
    let mut c = start(json!(null));
    c.open("file:///work/demo/a.py", "python", PY);
    let id = c.inline("file:///work/demo/a.py", 1, 4, false);
    let m = c.response(id, T);
    let greedy = items_of(&m);
    assert_eq!(greedy.len(), 1, "{m}");
    assert!(!greedy[0].is_empty());
    let item = &m["result"]["items"][0];
    assert_eq!(
        item["range"],
        json!({"start": {"line": 1, "character": 4}, "end": {"line": 1, "character": 4}})
    );
    // Invoked: the greedy suggestion first, then distinct sampled alternatives.
    let id = c.inline("file:///work/demo/a.py", 1, 4, true);
    let all = items_of(&c.response(id, T));
    assert_eq!(all[0], greedy[0]);
    assert!((1..=3).contains(&all.len()), "{all:?}");
    for (i, a) in all.iter().enumerate() {
        assert!(!a.is_empty() && !all[..i].contains(a), "{all:?}");
    }
    c.shutdown();
}

#[test]
fn greedy_suggestions_are_deterministic_across_servers() {
    let run = || {
        let mut c = start(json!(null));
        c.open("file:///work/demo/det.py", "python", PY);
        let got = c.inline_texts("file:///work/demo/det.py", 1, 4);
        c.shutdown();
        got
    };
    let a = run();
    assert_eq!(a.len(), 1);
    assert_eq!(a, run());
}

#[test]
fn completion_fallback_item_is_not_filtered_away() {
    let mut c = start(json!(null));
    c.open("file:///work/demo/b.py", "python", "def f():\n    ret\n");
    let r = c.request(
        "textDocument/completion",
        json!({"textDocument": {"uri": "file:///work/demo/b.py"}, "position": {"line": 1, "character": 7}}),
    );
    assert_eq!(r["isIncomplete"], true);
    let item = &r["items"][0];
    // the healed word " ret" is part of the replacement: the item replaces "ret" with "ret…"
    let new_text = item["textEdit"]["newText"].as_str().unwrap();
    assert!(new_text.starts_with("ret") && new_text.len() > 3, "{r}");
    assert_eq!(
        item["textEdit"]["range"]["start"],
        json!({"line": 1, "character": 4})
    );
    assert_eq!(
        item["textEdit"]["range"]["end"],
        json!({"line": 1, "character": 7})
    );
    assert!(item["filterText"].as_str().unwrap().starts_with("ret"));
    let label = item["label"].as_str().unwrap();
    assert!(
        label.starts_with("ret") && new_text.starts_with(label),
        "{r}"
    );
    c.shutdown();
}

#[test]
fn cancel_request_answers_and_stops_generation() {
    let mut c = start(long_options());
    c.open("file:///work/demo/c.py", "python", "x = 1\n\n");
    c.open("file:///work/demo/c2.py", "python", "y = 2\n\n");
    c.open("file:///work/demo/d.py", "python", PY);
    // a long generation keeps the worker busy; the request behind it is cancelled at once
    let long = c.inline("file:///work/demo/c.py", 1, 0, false);
    let queued = c.inline("file:///work/demo/c2.py", 1, 0, false);
    c.notify("$/cancelRequest", json!({"id": queued}));
    c.notify("$/cancelRequest", json!({"id": long}));
    let m = c.response(queued, T);
    assert_eq!(m["error"]["code"], -32800, "RequestCancelled: {m}");
    // The long one was superseded by the queued one as soon as that arrived (an empty answer, by
    // design); its own cancel may come in before or after that answer.
    let m = c.response(long, T);
    assert!(
        m["error"]["code"] == -32800 || (m.get("error").is_none() && items_of(&m).is_empty()),
        "RequestCancelled or superseded: {m}"
    );
    // the worker is free again: a later completion is answered normally
    c.notify(
        "workspace/didChangeConfiguration",
        json!({"settings": {"maxTokens": 16}}),
    );
    let short = c.inline("file:///work/demo/d.py", 1, 4, false);
    let m = c.response(short, T);
    assert!(m.get("error").is_none(), "{m}");
    assert_eq!(items_of(&m).len(), 1, "{m}");
    c.shutdown();
}

#[test]
fn a_newer_request_supersedes_every_older_one_whatever_its_document() {
    let mut c = start(long_options());
    c.open("file:///work/demo/busy.py", "python", "x = 1\n\n");
    c.open(
        "file:///work/demo/e.py",
        "python",
        "x = 1\n\ndef add(a, b):\n    \n",
    );
    // A long generation in one document, then two requests in another: each newer request
    // cancels the older ones, so the worker is free for the newest at once.
    let busy = c.inline("file:///work/demo/busy.py", 1, 0, false);
    let old = c.inline("file:///work/demo/e.py", 1, 0, false);
    let new = c.inline("file:///work/demo/e.py", 3, 4, false);
    for (id, what) in [(busy, "the other document's"), (old, "the same document's")] {
        let m = c.response(id, T);
        assert!(
            m.get("error").is_none(),
            "superseded requests answer normally: {m}"
        );
        assert_eq!(
            items_of(&m),
            Vec::<String>::new(),
            "{what} older request: {m}"
        );
    }
    let m_new = c.response(new, T);
    assert!(m_new.get("error").is_none(), "{m_new}");
    assert_eq!(items_of(&m_new).len(), 1, "{m_new}");
    c.shutdown();
}

#[test]
fn typing_through_answers_from_the_previous_suggestion() {
    let mut c = start(json!(null));
    let uri = "file:///work/demo/f.py";
    c.open(uri, "python", PY);
    let first = c.inline_texts(uri, 1, 4);
    assert_eq!(first.len(), 1);
    let s = first[0].clone();
    let typed: Vec<char> = s.chars().take(3).collect();
    assert!(
        typed.len() == 3 && typed.iter().all(|ch| ch.is_ascii() && *ch != '\n'),
        "the tiny model's suggestion starts with 3 characters on the line: {s:?}"
    );
    for (v, ch) in typed.iter().enumerate() {
        let col = 4 + v as u32;
        c.notify(
            "textDocument/didChange",
            json!({"textDocument": {"uri": uri, "version": v + 2},
                   "contentChanges": [{"range": {"start": {"line": 1, "character": col}, "end": {"line": 1, "character": col}}, "text": ch.to_string()}]}),
        );
        let got = c.inline_texts(uri, 1, col + 1);
        let rest = &s[v + 1..];
        if rest.is_empty() {
            assert!(got.is_empty() || !got[0].is_empty(), "{got:?}");
        } else {
            assert_eq!(got, vec![rest.to_string()]);
        }
    }
    c.shutdown();
}

/// Starts the server with `--model MODEL`, a path that does not load, and waits for the
/// `window/showMessage` that reports it.
fn start_without_model(model: &str) -> (LspClient, Value) {
    let mut c = LspClient::spawn(&["--model", model]);
    c.initialize(&[], json!(null));
    let msg = c.notification("window/showMessage", T);
    (c, msg)
}

#[test]
fn missing_model_shows_message_and_keeps_answering() {
    let (mut c, msg) = start_without_model("/nonexistent/model.gguf");
    let text = msg["params"]["message"].as_str().unwrap();
    assert!(
        text.contains("not found") && text.contains("modelPath"),
        "{text}"
    );
    assert_eq!(msg["params"]["type"], 1);
    c.open("file:///work/demo/g.py", "python", PY);
    assert_eq!(
        c.inline_texts("file:///work/demo/g.py", 1, 4),
        Vec::<String>::new()
    );
    c.shutdown();
}

#[test]
fn fake_model_paths_are_not_accepted() {
    let (c, msg) = start_without_model("fake:0");
    let text = msg["params"]["message"].as_str().unwrap();
    assert!(text.contains("not found"), "{text}");
    c.shutdown();
}

#[test]
fn configuration_disables_languages_and_reloads() {
    let mut c = start(json!({"languages": {"markdown": false}}));
    c.open("file:///work/demo/r.md", "markdown", "# Title\n\n");
    assert_eq!(
        c.inline_texts("file:///work/demo/r.md", 1, 0),
        Vec::<String>::new()
    );
    c.notify(
        "workspace/didChangeConfiguration",
        json!({"settings": {"lmrs": {"languages": {"markdown": true}}}}),
    );
    let got = c.inline_texts("file:///work/demo/r.md", 1, 0);
    assert_eq!(got.len(), 1, "{got:?}");
    // a model path change reloads: a missing file is reported and completions stop
    c.notify(
        "workspace/didChangeConfiguration",
        json!({"settings": {"modelPath": "/nonexistent.gguf"}}),
    );
    let msg = c.notification("window/showMessage", T);
    assert!(msg["params"]["message"]
        .as_str()
        .unwrap()
        .contains("/nonexistent.gguf"));
    c.open("file:///work/demo/s.md", "markdown", "# Other\n\n");
    assert_eq!(
        c.inline_texts("file:///work/demo/s.md", 1, 0),
        Vec::<String>::new()
    );
    c.shutdown();
}

#[test]
fn out_of_range_and_mid_surrogate_positions_are_clamped() {
    let mut c = start(json!(null));
    let uri = "file:///work/demo/h.txt";
    c.open(uri, "plaintext", "a😀b\r\nxy");
    for (line, ch, clamped) in [
        (0, 2, (0, 1)),
        (0, 99, (0, 4)),
        (7, 3, (1, 2)),
        (u32::MAX, u32::MAX, (1, 2)),
        (1, 1000, (1, 2)),
    ] {
        let id = c.inline(uri, line, ch, false);
        let m = c.response(id, T);
        assert!(m.get("error").is_none(), "{m}");
        for item in m["result"]["items"].as_array().unwrap() {
            assert_eq!(
                item["range"]["start"],
                json!({"line": clamped.0, "character": clamped.1}),
                "{m}"
            );
        }
    }
    // an edit with a mid-surrogate, reversed and out-of-range range never crashes the server
    c.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": uri, "version": 2},
               "contentChanges": [{"range": {"start": {"line": 9, "character": 9}, "end": {"line": 0, "character": 2}}, "text": "Z"}]}),
    );
    let id = c.inline(uri, 0, 99, false);
    let m = c.response(id, T);
    assert!(m.get("error").is_none(), "{m}");
    for item in m["result"]["items"].as_array().unwrap() {
        assert_eq!(
            item["range"]["start"],
            json!({"line": 0, "character": 2}),
            "text is now \"aZ\": {m}"
        );
    }
    // CRLF documents get CRLF suggestions (never a bare LF)
    c.open("file:///work/demo/crlf.py", "python", "x = 1\r\n\r\n");
    let got = c.inline_texts("file:///work/demo/crlf.py", 1, 0);
    for s in &got {
        assert!(!s.replace("\r\n", "").contains('\n'), "{got:?}");
    }
    c.shutdown();
}

#[test]
fn memory_stays_bounded_over_1000_documents() {
    let mut c = start(json!({"maxTokens": 8}));
    let body = "fn f(x: u32) -> u32 {\n    x + 1\n}\n".repeat(2000); // ~70 KB per document
    let mut rss = Vec::new();
    for i in 0..1000 {
        let uri = format!("file:///work/demo/m{i}.rs");
        c.open(&uri, "rust", &body);
        for v in 2..5 {
            c.notify(
                "textDocument/didChange",
                json!({"textDocument": {"uri": uri, "version": v},
                       "contentChanges": [{"range": {"start": {"line": 1, "character": 4}, "end": {"line": 1, "character": 5}}, "text": "y"}]}),
            );
        }
        if i % 10 == 0 {
            c.inline_texts(&uri, 1, 4);
        }
        c.notify(
            "textDocument/didClose",
            json!({"textDocument": {"uri": uri}}),
        );
        if i % 100 == 99 {
            // a round-trip, so that all earlier notifications have been handled
            c.request(
                "textDocument/completion",
                json!({"textDocument": {"uri": uri}, "position": {"line": 0, "character": 0}}),
            );
            rss.push(c.rss_kb());
        }
    }
    eprintln!("RSS (kB) every 100 documents: {rss:?}");
    let (first, last) = (rss[1], *rss.last().unwrap());
    // 1000 leaked documents would be ~70 MB; allow allocator noise.
    assert!(
        last < first + 20_000,
        "RSS grew from {first} kB to {last} kB"
    );
}

#[test]
fn retrieved_snippet_reaches_the_prompt_and_stays_when_the_cursor_moves_down() {
    let log = std::env::temp_dir().join(format!("lmrs-e2e-snippet-{}.log", std::process::id()));
    let file = std::fs::File::create(&log).unwrap();
    let mut c = LspClient::spawn_with_log(
        &[
            "--model",
            tiny_model(),
            "--threads",
            "1",
            "--snippet-tokens",
            "200",
            // One snippet per request in the log: no work ahead of requests.
            "--no-prefetch",
        ],
        "debug",
        file.into(),
    );
    c.initialize(
        &["utf-16"],
        json!({"prefixTokens": 48, "suffixTokens": 16, "maxTokens": 2}),
    );
    c.wait_model_ready(T);
    // Two tests far above the cursor among unrelated lines, then the start of a test like them.
    // Test A (line 0) is the most similar to the lines above the first request; test B (line 40)
    // also has `unique`, so after the user types a line using it B scores a little higher
    // (10/24 against 9/23 for A), and A is kept as it stays within half of the best.
    let mut text = String::from(
        "#[test]\nfn check_seed_round_trip() {\n    let seed = from_le_bytes(testseed);\n    let unique_marker_line = seed + 42;\n}\n",
    );
    for i in 0..80 {
        if i == 35 {
            text.push_str("#[test]\nfn check_seed_round_trip() {\n    let seed = from_le_bytes(testseed);\n    let unique = seed;\n}\n");
        }
        text.push_str(&format!("const VALUE_{i}: usize = {i};\n"));
    }
    text.push_str(
        "#[test]\nfn check_seed_round_trip() {\n    let seed = from_le_bytes(testseed);\n    \n",
    );
    let uri = "file:///work/demo/seeds.rs";
    c.open(uri, "rust", &text);
    c.inline_texts(uri, 93, 4);
    // Enter: the cursor goes down a line; the first snippet is still similar enough to be kept.
    c.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": uri, "version": 2},
               "contentChanges": [{"range": {"start": {"line": 93, "character": 4}, "end": {"line": 93, "character": 4}}, "text": "let unique = seed;\n    "}]}),
    );
    c.inline_texts(uri, 94, 4);
    c.shutdown();
    let log_text = std::fs::read_to_string(&log).unwrap();
    std::fs::remove_file(&log).ok();
    let first_lines: Vec<&str> = log_text
        .lines()
        .filter_map(|l| l.split("snippet first_line=").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .collect();
    assert_eq!(first_lines.len(), 2, "one snippet per request: {log_text}");
    assert_eq!(first_lines[0], "0", "test A first: {log_text}");
    assert_eq!(
        first_lines[0], first_lines[1],
        "kept across the move: {log_text}"
    );
    let prompts = log_text.matches("unique_marker_line").count();
    assert!(prompts >= 2, "both prompts show the far test: {log_text}");
}

/// Waits until the debug log at `log` has a line containing `needle`.
fn wait_for_log(log: &std::path::Path, needle: &str) -> String {
    let end = std::time::Instant::now() + T;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(std::time::Instant::now() < end, "no {needle:?} in: {text}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn definitions_from_closed_files_of_the_workspace_reach_the_prompt_and_nothing_from_outside() {
    let dir = std::env::temp_dir().join(format!("lmrs-e2e-project-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let workspace = dir.join("shop");
    std::fs::create_dir_all(workspace.join("pkg")).unwrap();
    std::fs::create_dir_all(dir.join("outside")).unwrap();
    std::fs::write(
        workspace.join("pkg/checksums.py"),
        "def compute_checksum(data):\n    \"\"\"Adler-32 of data.\"\"\"\n    return sum(data) % 65521\n",
    )
    .unwrap();
    // Defined only outside the workspace folder: must never be read.
    std::fs::write(
        dir.join("outside/secrets.py"),
        "def reveal_secret_token():\n    return 'hunter2'\n",
    )
    .unwrap();
    let main = "from .checksums import compute_checksum\nfrom secrets import reveal_secret_token\n\n\ndef verify(data, expected):\n    ok = \n";
    std::fs::write(workspace.join("pkg/main.py"), main).unwrap();

    let log = dir.join("server.log");
    let file = std::fs::File::create(&log).unwrap();
    let mut c = LspClient::spawn_with_log(
        &["--model", tiny_model(), "--threads", "1"],
        "debug",
        file.into(),
    );
    let root = format!("file://{}", workspace.display());
    c.request(
        "initialize",
        json!({
            "processId": null,
            "rootUri": root,
            "workspaceFolders": [{"uri": root, "name": "shop"}],
            "capabilities": {
                "window": {"workDoneProgress": true},
                "textDocument": {"inlineCompletion": {"dynamicRegistration": false}}
            },
            "initializationOptions": {"maxTokens": 2, "contextTokens": 200},
        }),
    );
    c.notify("initialized", json!({}));
    c.wait_model_ready(T);
    wait_for_log(&log, "workspace indexed");
    // The editor was shown the indexing as $/progress, ending with the count.
    let end = c.wait_progress_end("lmrs/index", T);
    assert_eq!(
        end["params"]["value"]["message"], "2 files indexed",
        "{end}"
    );

    let uri = format!("{root}/pkg/main.py");
    c.open(&uri, "python", main);
    c.inline_texts(&uri, 5, 9);
    // The prompt is logged at debug level: the closed file's definition, labelled with its path,
    // comes before the current file.
    let text = wait_for_log(&log, "<|file_sep|>pkg/main.py");
    assert!(
        text.contains("<|file_sep|>pkg/checksums.py\ndef compute_checksum(data):"),
        "the closed file's definition is in the prompt: {text}"
    );
    assert!(
        !text.contains("reveal_secret_token():") && !text.contains("hunter2"),
        "nothing from outside the workspace: {text}"
    );

    // A new definition saved to disk is used after didSave.
    std::fs::write(
        workspace.join("pkg/checksums.py"),
        "def compute_checksum(data):\n    return sum(data) % 65521\n\n\ndef compute_digest_v2(data, rounds):\n    return data\n",
    )
    .unwrap();
    c.notify(
        "textDocument/didSave",
        json!({"textDocument": {"uri": format!("{root}/pkg/checksums.py")}}),
    );
    let edited = main.replace(
        "compute_checksum\n",
        "compute_checksum, compute_digest_v2\n",
    );
    c.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": uri, "version": 2}, "contentChanges": [{"text": edited}]}),
    );
    c.inline_texts(&uri, 5, 9);
    let text = wait_for_log(&log, "def compute_digest_v2(data, rounds):");
    assert!(text.contains("didSave: re-indexed"), "{text}");
    c.shutdown();
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_model_file_truncated_while_served_does_not_kill_the_server() {
    // The server's own copy of the model file, truncated after loading (as `truncate -s` or an
    // interrupted download over it would): the weights were copied into memory, so completions go on.
    let path = std::env::temp_dir().join(format!("lmrs-e2e-truncated-{}.gguf", std::process::id()));
    std::fs::copy(tiny_model(), &path).unwrap();
    let log = path.with_extension("log");
    let mut c = LspClient::spawn_with_log(
        &["--model", path.to_str().unwrap(), "--threads", "1"],
        "info",
        std::fs::File::create(&log).unwrap().into(),
    );
    c.initialize(&["utf-16"], json!({"maxTokens": 4}));
    c.wait_model_ready(T);
    let uri = "file:///work/demo/t.py";
    c.open(uri, "python", "def add(a, b):\n    return ");
    c.inline_texts(uri, 1, 11);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(16)
        .unwrap();
    c.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": uri, "version": 2}, "contentChanges": [{"text": "def sub(a, b):\n    return "}]}),
    );
    let id = c.inline(uri, 1, 11, false);
    let answer = c.response(id, T);
    assert!(
        answer.get("result").is_some(),
        "answered after truncation: {answer}"
    );
    // The log says so, once.
    let text = wait_for_log(&log, "the model file changed on disk after it was loaded");
    let id = c.inline(uri, 1, 10, false);
    c.response(id, T);
    c.shutdown();
    let text_after = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        text_after.matches("model file changed").count(),
        1,
        "{text}"
    );
    std::fs::remove_file(&path).ok();
    std::fs::remove_file(&log).ok();
}

#[test]
fn a_prompt_cut_by_its_deadline_is_finished_in_the_background_for_the_next_request() {
    let log = std::env::temp_dir().join(format!("lmrs-e2e-deadline-{}.log", std::process::id()));
    let mut c = LspClient::spawn_with_log(
        &["--model", tiny_model(), "--threads", "1"],
        "debug",
        std::fs::File::create(&log).unwrap().into(),
    );
    // A 1 ms prompt budget: any prompt longer than one micro-batch (256 tokens) is cut.
    c.initialize(&["utf-16"], json!({"maxTokens": 4, "promptTimeoutMs": 1}));
    c.wait_model_ready(T);
    let mut text: String = (0..80)
        .map(|i| format!("def f{i}(a, b):\n    return a * {i} + b\n\n"))
        .collect();
    text.push_str("def main():\n    x = ");
    let line = text.lines().count() as u32 - 1;
    let uri = "file:///work/demo/deadline.py";
    c.open(uri, "python", &text);

    // The first request's prompt is cut: no suggestion, and the log says so.
    assert_eq!(c.inline_texts(uri, line, 8), Vec::<String>::new());
    wait_for_log(&log, "prompt cut by its deadline");
    // While nothing else is asked, the worker finishes that prompt.
    wait_for_log(&log, "cut prompt finished");
    // The same request again finds the prompt evaluated: nothing left to cut.
    c.inline_texts(uri, line, 8);
    c.shutdown();
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        text.matches("prompt cut by its deadline").count(),
        1,
        "the second request was cut too: {text}"
    );
    assert_eq!(text.matches("completion done").count(), 2, "{text}");
    std::fs::remove_file(&log).ok();
}

/// The position after `text` inserted at (`line`, `character`) (UTF-16 = chars for ASCII).
fn position_after(line: u32, character: u32, text: &str) -> (u32, u32) {
    match text.rfind('\n') {
        None => (line, character + text.chars().count() as u32),
        Some(at) => (
            line + text.matches('\n').count() as u32,
            text[at + 1..].chars().count() as u32,
        ),
    }
}

#[test]
fn the_suggestion_after_an_accept_is_prefetched_and_equals_a_fresh_computation() {
    let log = std::env::temp_dir().join(format!("lmrs-e2e-prefetch-{}.log", std::process::id()));
    let mut c = LspClient::spawn_with_log(
        &["--model", tiny_model(), "--threads", "1"],
        "debug",
        std::fs::File::create(&log).unwrap().into(),
    );
    // One-line suggestions, so that the accept below is one insert on the cursor line.
    c.initialize(&["utf-16"], json!({"maxTokens": 6, "multiline": false}));
    c.wait_model_ready(T);
    let uri = "file:///work/demo/prefetch.py";
    c.open(uri, "python", PY);
    let shown = c.inline_texts(uri, 1, 4);
    assert_eq!(shown.len(), 1, "the tiny model suggests something here");
    // While the person reads, the worker computes the suggestion that follows an accept.
    wait_for_log(&log, "next suggestion prefetched");
    // Accept: the editor inserts the suggestion and asks at the end of it.
    let (line, character) = position_after(1, 4, &shown[0]);
    c.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": uri, "version": 2}, "contentChanges": [
            {"range": {"start": {"line": 1, "character": 4}, "end": {"line": 1, "character": 4}},
             "text": shown[0]}]}),
    );
    let next = c.inline_texts(uri, line, character);
    c.shutdown();
    let text = std::fs::read_to_string(&log).unwrap();
    // Answered from the cache: one model completion (the first request) and one prefetch.
    assert_eq!(text.matches("completion done").count(), 1, "{text}");
    assert_eq!(text.matches("prefetch done").count(), 1, "{text}");
    assert!(text.contains("cache hit"), "{text}");

    // The same answer as a server without prefetching computes for the accepted text.
    let accepted = PY.replacen(
        "def add(a, b):\n    ",
        &format!("def add(a, b):\n    {}", shown[0]),
        1,
    );
    let mut fresh = LspClient::spawn(&["--model", tiny_model(), "--threads", "1", "--no-prefetch"]);
    fresh.initialize(&["utf-16"], json!({"maxTokens": 6, "multiline": false}));
    fresh.wait_model_ready(T);
    fresh.open(uri, "python", &accepted);
    assert_eq!(fresh.inline_texts(uri, line, character), next);
    fresh.shutdown();
    std::fs::remove_file(&log).ok();
}

#[test]
fn after_an_edit_the_prompt_at_its_end_is_evaluated_before_the_request_arrives() {
    let log = std::env::temp_dir().join(format!("lmrs-e2e-prefill-{}.log", std::process::id()));
    let mut c = LspClient::spawn_with_log(
        &["--model", tiny_model(), "--threads", "1"],
        "debug",
        std::fs::File::create(&log).unwrap().into(),
    );
    c.initialize(&["utf-16"], json!({"maxTokens": 4}));
    c.wait_model_ready(T);
    let uri = "file:///work/demo/prefill.py";
    c.open(uri, "python", PY);
    // A request first, so the server has surely applied didOpen (notifications may be handled
    // concurrently; a change to a document not open yet is buffered, and buffered changes queue
    // no prefill).
    c.inline_texts(uri, 3, 0);
    // The person types `re` on line 1; no request yet (the editor debounces).
    c.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": uri, "version": 2}, "contentChanges": [
            {"range": {"start": {"line": 1, "character": 4}, "end": {"line": 1, "character": 4}},
             "text": "re"}]}),
    );
    wait_for_log(&log, "prefill queued");
    wait_for_log(&log, "cut prompt finished");
    // The request finds its whole prompt evaluated.
    c.inline_texts(uri, 1, 6);
    c.shutdown();
    let text = std::fs::read_to_string(&log).unwrap();
    let done: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("completion done"))
        .collect();
    assert_eq!(done.len(), 2, "{text}");
    assert!(done[1].contains("evaluated=0"), "{text}");
    std::fs::remove_file(&log).ok();
}
