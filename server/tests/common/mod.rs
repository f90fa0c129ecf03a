//! A minimal LSP client over the real `lmrs lsp` binary's stdio, for end-to-end tests.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub struct LspClient {
    pub child: Child,
    stdin: Arc<Mutex<ChildStdin>>,
    rx: Receiver<Value>,
    next_id: i64,
    /// Messages seen while waiting for something else (notifications, other responses).
    pub backlog: Vec<Value>,
}

/// `body` with its `Content-Length` header.
pub fn frame(body: &[u8]) -> Vec<u8> {
    let mut framed = format!("Content-Length: {}\r\n\r\n", body.len()).into_bytes();
    framed.extend_from_slice(body);
    framed
}

fn write_msg(w: &mut impl Write, msg: &Value) {
    let body = serde_json::to_vec(msg).unwrap();
    let _ = write!(w, "Content-Length: {}\r\n\r\n", body.len());
    let _ = w.write_all(&body);
    let _ = w.flush();
}

impl LspClient {
    pub fn spawn(args: &[&str]) -> Self {
        let level = std::env::var("LMRS_LOG").unwrap_or_else(|_| "warn".into());
        Self::spawn_with_log(args, &level, Stdio::inherit())
    }

    /// Spawns `lmrs lsp ARGS` with `LMRS_LOG=level`, its log going to `stderr`.
    pub fn spawn_with_log(args: &[&str], level: &str, stderr: Stdio) -> Self {
        Self::spawn_with(args, level, stderr, |_| {})
    }

    /// [`Self::spawn_with_log`] with the command adjusted by `configure` first (its environment).
    pub fn spawn_with(
        args: &[&str],
        level: &str,
        stderr: Stdio,
        configure: impl FnOnce(&mut Command),
    ) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_lmrs"));
        configure(&mut command);
        let mut child = command
            .arg("lsp")
            .args(args)
            .env("LMRS_LOG", level)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn lmrs lsp");
        let stdin = Arc::new(Mutex::new(child.stdin.take().unwrap()));
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let answer = stdin.clone();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            loop {
                let mut len = None;
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let line = line.trim();
                    if line.is_empty() {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse::<usize>().ok();
                    }
                }
                let mut buf = vec![0; len.expect("content-length")];
                if r.read_exact(&mut buf).is_err() {
                    return;
                }
                let msg: Value = serde_json::from_slice(&buf).unwrap();
                if msg.get("method").is_some() && msg.get("id").is_some() {
                    // server -> client request (progress creation, ...): answer null
                    write_msg(
                        &mut *answer.lock().unwrap(),
                        &json!({"jsonrpc": "2.0", "id": msg["id"], "result": null}),
                    );
                }
                if tx.send(msg).is_err() {
                    return;
                }
            }
        });
        Self {
            child,
            stdin,
            rx,
            next_id: 0,
            backlog: Vec::new(),
        }
    }

    pub fn send(&mut self, msg: Value) {
        write_msg(&mut *self.stdin.lock().unwrap(), &msg);
    }

    /// Writes `bytes` to the server's stdin as they are (no framing added).
    pub fn send_raw(&mut self, bytes: &[u8]) {
        let mut stdin = self.stdin.lock().unwrap();
        let _ = stdin.write_all(bytes);
        let _ = stdin.flush();
    }

    /// Waits for the first message (backlog first) that `wanted` accepts.
    pub fn message(&mut self, wanted: impl Fn(&Value) -> bool, timeout: Duration) -> Value {
        if let Some(i) = self.backlog.iter().position(&wanted) {
            return self.backlog.remove(i);
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(m) if wanted(&m) => return m,
                Ok(m) => self.backlog.push(m),
                Err(_) => panic!(
                    "no such message within {timeout:?}; seen: {:?}",
                    self.backlog
                ),
            }
        }
    }

    /// Waits for the process to end and returns its exit code.
    pub fn exit_code(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the server did not exit within {timeout:?}");
    }

    pub fn notify(&mut self, method: &str, params: Value) {
        self.send(json!({"jsonrpc": "2.0", "method": method, "params": params}));
    }

    /// Sends a request and returns its id without waiting.
    pub fn request_async(&mut self, method: &str, params: Value) -> i64 {
        self.next_id += 1;
        let id = self.next_id;
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        id
    }

    /// Waits for the response to `id` (the whole message, with `result` or `error`).
    pub fn response(&mut self, id: i64, timeout: Duration) -> Value {
        if let Some(i) = self
            .backlog
            .iter()
            .position(|m| m.get("id") == Some(&json!(id)) && m.get("method").is_none())
        {
            return self.backlog.remove(i);
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(m) if m.get("id") == Some(&json!(id)) && m.get("method").is_none() => return m,
                Ok(m) => self.backlog.push(m),
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no response to request {id} within {timeout:?}")
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("server closed stdout before answering {id}")
                }
            }
        }
    }

    pub fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.request_async(method, params);
        let m = self.response(id, Duration::from_secs(120));
        assert!(m.get("error").is_none(), "{method} failed: {m}");
        m["result"].clone()
    }

    /// Waits for a notification with `method` (looking at the backlog first).
    pub fn notification(&mut self, method: &str, timeout: Duration) -> Value {
        if let Some(i) = self.backlog.iter().position(|m| m["method"] == method) {
            return self.backlog.remove(i);
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(m) if m["method"] == method => return m,
                Ok(m) => self.backlog.push(m),
                Err(_) => panic!("no {method} within {timeout:?}; seen: {:?}", self.backlog),
            }
        }
    }

    pub fn initialize(&mut self, encodings: &[&str], options: Value) -> Value {
        let r = self.request(
            "initialize",
            json!({
                "processId": null,
                "rootUri": "file:///work/demo",
                "capabilities": {
                    "general": {"positionEncodings": encodings},
                    "window": {"workDoneProgress": true},
                    "textDocument": {"inlineCompletion": {"dynamicRegistration": false}, "synchronization": {}}
                },
                "initializationOptions": options,
            }),
        );
        self.notify("initialized", json!({}));
        r
    }

    /// Waits for the model-loading progress to end and asserts that it ended with the model ready.
    pub fn wait_model_ready(&mut self, timeout: Duration) {
        let end = self.wait_model(timeout);
        assert!(
            end["params"]["value"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("ready"),
            "{end}"
        );
    }

    /// Waits until the model finished loading (the `$/progress` end), or `timeout`.
    pub fn wait_model(&mut self, timeout: Duration) -> Value {
        self.wait_progress_end("lmrs/load/", timeout)
    }

    /// Waits for the `$/progress` end of a token starting with `token_prefix`, or `timeout`.
    pub fn wait_progress_end(&mut self, token_prefix: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        let mut others = Vec::new();
        let end = loop {
            let m = self.notification(
                "$/progress",
                deadline.saturating_duration_since(Instant::now()),
            );
            let token = m["params"]["token"].as_str().unwrap_or_default();
            if token.starts_with(token_prefix) && m["params"]["value"]["kind"] == "end" {
                break m;
            }
            others.push(m);
        };
        // Other tokens' progress stays for whoever waits for it.
        self.backlog.extend(others);
        end
    }

    pub fn open(&mut self, uri: &str, language: &str, text: &str) {
        self.notify("textDocument/didOpen", json!({"textDocument": {"uri": uri, "languageId": language, "version": 1, "text": text}}));
    }

    pub fn inline(&mut self, uri: &str, line: u32, character: u32, invoked: bool) -> i64 {
        self.request_async(
            "textDocument/inlineCompletion",
            json!({"textDocument": {"uri": uri}, "position": {"line": line, "character": character},
                   "context": {"triggerKind": if invoked { 1 } else { 2 }}}),
        )
    }

    pub fn inline_texts(&mut self, uri: &str, line: u32, character: u32) -> Vec<String> {
        let id = self.inline(uri, line, character, false);
        let m = self.response(id, Duration::from_secs(120));
        items_of(&m)
    }

    pub fn shutdown(mut self) {
        let _ = self.request("shutdown", Value::Null);
        self.notify("exit", Value::Null);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        panic!("server did not exit after shutdown/exit");
    }

    /// Open file descriptors of the server process.
    pub fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .map(|dir| dir.count())
            .unwrap_or(0)
    }

    pub fn rss_kb(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        s.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for LspClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `insertText`s of an inlineCompletion response message.
pub fn items_of(m: &Value) -> Vec<String> {
    let r = &m["result"];
    let items = if r.is_array() {
        r.clone()
    } else {
        r["items"].clone()
    };
    items
        .as_array()
        .map(|a| {
            a.iter()
                .map(|i| i["insertText"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}
