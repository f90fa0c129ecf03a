//! The transport and lifecycle against the real `lmrs lsp` binary on a tiny random-weight model:
//! a message that cannot be decoded gets the JSON-RPC error the specification names and the
//! session goes on; lone surrogates in document text are accepted; `initialize` and
//! `initialized` in one write still load the model; `exit` gives status 0 after `shutdown` and 1
//! without; lost framing ends the session; a model path that is a directory is named.

mod common;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use common::{frame, items_of, LspClient};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(60);

/// The tiny model, written once per test process.
fn tiny_model() -> &'static str {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let path =
            std::env::temp_dir().join(format!("lmrs-transport-tiny-{}.gguf", std::process::id()));
        lmrs_fixtures::tiny::write_tiny_model(&path, lmrs_fixtures::tiny::TinyArch::Qwen2, 7)
            .unwrap();
        path
    })
    .to_str()
    .unwrap()
}

fn start() -> LspClient {
    let mut c = LspClient::spawn(&["--model", tiny_model(), "--threads", "1"]);
    c.initialize(&["utf-16"], json!({"maxTokens": 8}));
    c.wait_model_ready(T);
    c
}

const PY: &str = "def add(a, b):\n    \n\nprint(add(1, 2))\n";

/// Asserts that an ordinary completion request is still answered, with a suggestion.
fn assert_still_answers(c: &mut LspClient, uri: &str) {
    let id = c.inline(uri, 1, 4, false);
    let m = c.response(id, T);
    assert!(m.get("error").is_none(), "{m}");
    assert_eq!(items_of(&m).len(), 1, "{m}");
}

/// Waits for the error response with `id` (`null` included).
fn error_response(c: &mut LspClient, id: &Value) -> Value {
    let id = id.clone();
    c.message(
        move |m| m.get("method").is_none() && m.get("error").is_some() && m["id"] == id,
        T,
    )
}

#[test]
fn undecodable_messages_are_answered_and_the_session_goes_on() {
    let mut c = start();
    let uri = "file:///work/demo/t.py";
    c.open(uri, "python", PY);
    let cases: [(&[u8], i64, Value); 9] = [
        (
            br#"{"jsonrpc":"2.0","id":900,"method":"#,
            -32700,
            Value::Null,
        ),
        (
            b"{\"jsonrpc\":\"2.0\",\"id\":901,\"method\":\"x\",\"params\":\"\xff\xfe\"}",
            -32700,
            json!(901),
        ),
        (
            br#"{"jsonrpc":"2.0","id":1.5,"method":"shutdown"}"#,
            -32600,
            Value::Null,
        ),
        (
            br#"{"jsonrpc":"2.0","id":true,"method":"shutdown"}"#,
            -32600,
            Value::Null,
        ),
        (
            br#"[{"jsonrpc":"2.0","id":902,"method":"shutdown"}]"#,
            -32600,
            Value::Null,
        ),
        (
            br#"{"jsonrpc":"1.0","id":903,"method":"shutdown"}"#,
            -32600,
            json!(903),
        ),
        (
            br#"{"jsonrpc":"2.0","id":904,"method":7}"#,
            -32600,
            json!(904),
        ),
        (b"", -32700, Value::Null),
        // A `\u` escape, then a backslash as the last byte: the surrogate repair once read past
        // the end and killed the reader thread (found by the message_layer fuzz target).
        (
            br#"{"jsonrpc":"2.0","id":905,"method":"x","params":"\ud800\"#,
            -32700,
            Value::Null,
        ),
    ];
    for (body, code, id) in cases {
        c.send_raw(&frame(body));
        let m = error_response(&mut c, &id);
        assert_eq!(
            m["error"]["code"],
            code,
            "{}: {m}",
            String::from_utf8_lossy(body)
        );
        assert_still_answers(&mut c, uri);
    }
    c.shutdown();
}

#[test]
fn documents_with_lone_surrogates_are_accepted_and_completed() {
    let mut c = start();
    let uri = "file:///work/demo/s.py";
    // A high surrogate alone (a pair half typed), then a low one alone; `\\ud800` is a backslash
    // and `ud800`, not an escape, and stays as it is.
    let open = format!(
        r#"{{"jsonrpc":"2.0","method":"textDocument/didOpen","params":{{"textDocument":{{"uri":"{uri}","languageId":"python","version":1,"text":"s = '\ud800 \\ud800'\n    \n"}}}}}}"#
    );
    c.send_raw(&frame(open.as_bytes()));
    let id = c.inline(uri, 1, 4, false);
    let m = c.response(id, T);
    assert!(m.get("error").is_none(), "{m}");
    assert_eq!(items_of(&m).len(), 1, "{m}");
    // The lone surrogate counts as one UTF-16 unit, as U+FFFD does: the edit lands after it.
    let change = format!(
        r#"{{"jsonrpc":"2.0","method":"textDocument/didChange","params":{{"textDocument":{{"uri":"{uri}","version":2}},"contentChanges":[{{"range":{{"start":{{"line":0,"character":6}},"end":{{"line":0,"character":6}}}},"text":"\udc00x"}}]}}}}"#
    );
    c.send_raw(&frame(change.as_bytes()));
    let id = c.inline(uri, 0, 8, false);
    let m = c.response(id, T);
    assert!(m.get("error").is_none(), "{m}");
    for item in m["result"]["items"].as_array().unwrap() {
        assert_eq!(
            item["range"]["start"],
            json!({"line": 0, "character": 8}),
            "{m}"
        );
    }
    let id = c.inline(uri, 1, 4, false);
    let m = c.response(id, T);
    assert!(m.get("error").is_none(), "{m}");
    assert!(
        !c.backlog.iter().any(|m| m.get("error").is_some()),
        "no error answers: {:?}",
        c.backlog
    );
    c.shutdown();
}

#[test]
fn initialize_and_initialized_in_one_write_load_the_model() {
    let mut c = LspClient::spawn(&["--model", tiny_model(), "--threads", "1"]);
    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "processId": null, "rootUri": "file:///work/demo",
        "capabilities": {"window": {"workDoneProgress": true}},
        "initializationOptions": {"maxTokens": 8}}});
    let initialized = json!({"jsonrpc": "2.0", "method": "initialized", "params": {}});
    let open = json!({"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {"textDocument":
        {"uri": "file:///work/demo/b.py", "languageId": "python", "version": 1, "text": PY}}});
    let mut batch = Vec::new();
    for m in [&initialize, &initialized, &open] {
        batch.extend(frame(&serde_json::to_vec(m).unwrap()));
    }
    c.send_raw(&batch);
    let r = c.response(1, T);
    assert!(r["result"]["capabilities"].is_object(), "{r}");
    c.wait_model_ready(T);
    // The didOpen sent in the same write was not dropped either.
    assert_still_answers(&mut c, "file:///work/demo/b.py");
    c.shutdown();
}

#[test]
fn exit_status_is_0_after_shutdown_and_1_without() {
    let mut c = LspClient::spawn(&["--model", tiny_model(), "--threads", "1"]);
    c.initialize(&[], json!(null));
    c.request("shutdown", Value::Null);
    c.notify("exit", Value::Null);
    assert_eq!(c.exit_code(T), Some(0));

    let mut c = LspClient::spawn(&["--model", tiny_model(), "--threads", "1"]);
    c.initialize(&[], json!(null));
    c.notify("exit", Value::Null);
    assert_eq!(c.exit_code(T), Some(1));
}

#[test]
fn lost_framing_ends_the_session_with_status_1() {
    let mut c = LspClient::spawn(&["--model", tiny_model(), "--threads", "1"]);
    c.initialize(&[], json!(null));
    c.send_raw(b"Content-Length: many\r\n\r\n{}");
    assert_eq!(c.exit_code(T), Some(1));
}

#[test]
fn a_directory_as_model_path_is_named_as_one() {
    let dir = std::env::temp_dir();
    let mut c = LspClient::spawn(&["--model", dir.to_str().unwrap()]);
    c.initialize(&[], json!(null));
    let msg = c.notification("window/showMessage", T);
    let text = msg["params"]["message"].as_str().unwrap();
    assert!(
        text.contains("is a directory") && text.contains(dir.to_str().unwrap()),
        "{text}"
    );
    c.shutdown();
}

#[test]
fn closing_stdin_mid_request_ends_the_process_at_once() {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_lmrs"))
        .args(["lsp", "--model", tiny_model(), "--threads", "1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let long =
        json!({"maxTokens": 4000, "maxLines": 100000, "timeoutMs": 600000, "contextSize": 4096});
    for message in [
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
               "params": {"processId": null, "capabilities": {}, "initializationOptions": long}}),
        json!({"jsonrpc": "2.0", "method": "initialized", "params": {}}),
        json!({"jsonrpc": "2.0", "method": "textDocument/didOpen",
               "params": {"textDocument": {"uri": "file:///w/a.py", "languageId": "python", "version": 1, "text": "x = 1\n\n"}}}),
        json!({"jsonrpc": "2.0", "id": 2, "method": "textDocument/inlineCompletion",
               "params": {"textDocument": {"uri": "file:///w/a.py"}, "position": {"line": 1, "character": 0},
                          "context": {"triggerKind": 2}}}),
    ] {
        stdin
            .write_all(&frame(&serde_json::to_vec(&message).unwrap()))
            .unwrap();
    }
    stdin.flush().unwrap();
    // Let the long generation start, then the editor goes away.
    std::thread::sleep(Duration::from_millis(300));
    let closed = std::time::Instant::now();
    drop(stdin);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if closed.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("still running 30 s after stdin closed");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let waited = closed.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(
        waited < Duration::from_millis(1500),
        "the process ended {waited:?} after stdin closed; the generation was not cut short"
    );
}
