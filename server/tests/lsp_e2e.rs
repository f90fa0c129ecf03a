//! End-to-end tests over stdio against the real `lmrs lsp` binary, with the built-in fake engine
//! (`--model fake:MS`: a scripted completion, one character every MS milliseconds), so protocol,
//! cancellation, supersession, caching and memory are tested without model files.

mod common;

use std::time::{Duration, Instant};

use common::{items_of, LspClient};
use serde_json::json;

const T: Duration = Duration::from_secs(30);

fn start(delay_ms: u32, options: serde_json::Value) -> LspClient {
    let model = format!("fake:{delay_ms}");
    let mut c = LspClient::spawn(&["--model", &model]);
    c.initialize(&["utf-16"], options);
    let end = c.wait_model(T);
    assert!(
        end["params"]["value"]["message"]
            .as_str()
            .unwrap()
            .contains("ready"),
        "{end}"
    );
    c
}

const PY: &str = "def add(a, b):\n    \n\nprint(add(1, 2))\n";

#[test]
fn initialize_advertises_inline_completion_and_negotiates_encoding() {
    let mut c = LspClient::spawn(&["--model", "fake:0"]);
    let r = c.initialize(&["utf-8", "utf-16"], json!(null));
    assert_eq!(r["capabilities"]["positionEncoding"], "utf-8");
    assert_eq!(r["capabilities"]["inlineCompletionProvider"], true);
    assert_eq!(r["capabilities"]["textDocumentSync"]["change"], 2);
    assert!(r["capabilities"]["completionProvider"].is_object());
    c.shutdown();
}

#[test]
fn inline_completion_returns_item_at_cursor() {
    let mut c = start(0, json!(null));
    c.open("file:///work/demo/a.py", "python", PY);
    let id = c.inline("file:///work/demo/a.py", 1, 4, false);
    let m = c.response(id, T);
    assert_eq!(items_of(&m), vec!["fake_completion(0)"]);
    let item = &m["result"]["items"][0];
    assert_eq!(
        item["range"],
        json!({"start": {"line": 1, "character": 4}, "end": {"line": 1, "character": 4}})
    );
    // Invoked: alternatives (the fake engine's seed shows in its text), best first, distinct.
    let id = c.inline("file:///work/demo/a.py", 1, 4, true);
    assert_eq!(
        items_of(&c.response(id, T)),
        vec![
            "fake_completion(0)",
            "fake_completion(1)",
            "fake_completion(2)"
        ]
    );
    c.shutdown();
}

#[test]
fn completion_fallback_item_is_not_filtered_away() {
    let mut c = start(0, json!(null));
    c.open("file:///work/demo/b.py", "python", "def f():\n    ret\n");
    let r = c.request(
        "textDocument/completion",
        json!({"textDocument": {"uri": "file:///work/demo/b.py"}, "position": {"line": 1, "character": 7}}),
    );
    assert_eq!(r["isIncomplete"], true);
    let item = &r["items"][0];
    // the fake engine's text after the healed " ret"
    assert_eq!(item["textEdit"]["newText"], "retfake_completion(0)");
    assert_eq!(
        item["textEdit"]["range"]["start"],
        json!({"line": 1, "character": 4})
    );
    assert_eq!(
        item["textEdit"]["range"]["end"],
        json!({"line": 1, "character": 7})
    );
    assert!(item["filterText"].as_str().unwrap().starts_with("ret"));
    assert_eq!(item["label"], "retfake_completion(0)");
    c.shutdown();
}

#[test]
fn cancel_request_answers_and_stops_generation() {
    // 30 ms per token, up to 400 tokens at indent 0: ~12 s unless cancelled.
    let mut c = start(
        30,
        json!({"maxTokens": 400, "maxLines": 1000, "timeoutMs": 60000}),
    );
    c.open("file:///work/demo/c.py", "python", "x = 1\n\n");
    c.open("file:///work/demo/d.py", "python", PY);
    let long = c.inline("file:///work/demo/c.py", 1, 0, false);
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    c.notify("$/cancelRequest", json!({"id": long}));
    let m = c.response(long, T);
    assert_eq!(m["error"]["code"], -32800, "RequestCancelled: {m}");
    // the worker is free again: a short completion (~20 tokens) is not stuck behind the long one
    let short = c.inline("file:///work/demo/d.py", 1, 4, false);
    assert_eq!(items_of(&c.response(short, T)), vec!["fake_completion(0)"]);
    assert!(
        t0.elapsed() < Duration::from_secs(4),
        "took {:?}",
        t0.elapsed()
    );
    c.shutdown();
}

#[test]
fn newer_request_supersedes_older_for_the_same_document() {
    let mut c = start(
        30,
        json!({"maxTokens": 400, "maxLines": 1000, "timeoutMs": 60000}),
    );
    c.open(
        "file:///work/demo/e.py",
        "python",
        "x = 1\n\ndef add(a, b):\n    \n",
    );
    let t0 = Instant::now();
    let old = c.inline("file:///work/demo/e.py", 1, 0, false);
    std::thread::sleep(Duration::from_millis(200));
    let new = c.inline("file:///work/demo/e.py", 3, 4, false);
    let m_old = c.response(old, T);
    assert!(
        m_old.get("error").is_none(),
        "superseded requests answer normally: {m_old}"
    );
    assert_eq!(items_of(&m_old), Vec::<String>::new());
    assert_eq!(items_of(&c.response(new, T)), vec!["fake_completion(0)"]);
    assert!(
        t0.elapsed() < Duration::from_secs(4),
        "took {:?}",
        t0.elapsed()
    );
    c.shutdown();
}

#[test]
fn typing_through_answers_from_the_previous_suggestion() {
    let mut c = start(20, json!(null));
    let uri = "file:///work/demo/f.py";
    c.open(uri, "python", PY);
    assert_eq!(c.inline_texts(uri, 1, 4), vec!["fake_completion(0)"]);
    for (v, typed) in ["f", "a", "k"].iter().enumerate() {
        let col = 4 + v as u32;
        c.notify(
            "textDocument/didChange",
            json!({"textDocument": {"uri": uri, "version": v + 2},
                   "contentChanges": [{"range": {"start": {"line": 1, "character": col}, "end": {"line": 1, "character": col}}, "text": typed}]}),
        );
        let t0 = Instant::now();
        let got = c.inline_texts(uri, 1, col + 1);
        assert_eq!(got, vec!["fake_completion(0)"[v + 1..].to_string()]);
        assert!(
            t0.elapsed() < Duration::from_millis(200),
            "typing-through is immediate: {:?}",
            t0.elapsed()
        );
    }
    c.shutdown();
}

#[test]
fn missing_model_shows_message_and_keeps_answering() {
    let mut c = LspClient::spawn(&["--model", "/nonexistent/model.gguf"]);
    c.initialize(&[], json!(null));
    let msg = c.notification("window/showMessage", T);
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
fn configuration_disables_languages_and_reloads() {
    let mut c = start(0, json!({"languages": {"markdown": false}}));
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
    assert!(
        got[0].starts_with("fake_completion(0)\nsecond_line()"),
        "{got:?}"
    );
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
    let mut c = start(0, json!(null));
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
        assert_eq!(
            m["result"]["items"][0]["range"]["start"],
            json!({"line": clamped.0, "character": clamped.1})
        );
    }
    // an edit with a mid-surrogate, reversed and out-of-range range never crashes the server
    c.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": uri, "version": 2},
               "contentChanges": [{"range": {"start": {"line": 9, "character": 9}, "end": {"line": 0, "character": 2}}, "text": "Z"}]}),
    );
    let id = c.inline(uri, 0, 99, false);
    let m = c.response(id, T);
    assert_eq!(
        m["result"]["items"][0]["range"]["start"],
        json!({"line": 0, "character": 2}),
        "text is now \"aZ\""
    );
    // CRLF documents get CRLF suggestions
    c.open("file:///work/demo/crlf.py", "python", "x = 1\r\n\r\n");
    let got = c.inline_texts("file:///work/demo/crlf.py", 1, 0);
    assert!(
        got[0].contains("\r\n") && !got[0].replace("\r\n", "").contains('\n'),
        "{got:?}"
    );
    c.shutdown();
}

#[test]
fn memory_stays_bounded_over_1000_documents() {
    let mut c = start(0, json!(null));
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
