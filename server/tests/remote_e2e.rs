//! End-to-end tests of `lmrs lsp --backend`: the language server over stdio with its model on a
//! remote engine.
//!
//! The remote is the real llama.cpp `llama-server`, started by the test on a free port with the
//! tiny random-weight Qwen2 model the test writes (`lmrs_fixtures::tiny`); its greedy suggestions
//! must equal the local engine's on the same file. The binary is `$LMRS_LLAMA_SERVER`, else
//! `llama/bin/llama-server` beside the repository (the layout of `../shared/build-llama-cpp.sh`),
//! else `llama-server` on `PATH`; without one those tests print why and pass without checking.
//!
//! One cancellation test runs against a small HTTP server inside the test that streams llama.cpp's
//! server-sent events: it is a protocol test of our client (does a superseded request close its
//! stream, and is the next one served?). Another checks the same against llama-server, whose log
//! must show the superseded generation cancelled.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{items_of, LspClient};
use serde_json::{json, Value};

/// The tiny model, written once per test process.
fn tiny_model() -> &'static str {
    static PATH: OnceLock<String> = OnceLock::new();
    PATH.get_or_init(|| {
        let path =
            std::env::temp_dir().join(format!("lmrs-remote-tiny-{}.gguf", std::process::id()));
        lmrs_fixtures::tiny::write_tiny_model(&path, lmrs_fixtures::tiny::TinyArch::Qwen2, 7)
            .unwrap();
        path.to_string_lossy().into_owned()
    })
}

/// The llama-server binary, or `None` (with the reason printed).
fn llama_server_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("LMRS_LLAMA_SERVER").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        if path.is_file() {
            return Some(path);
        }
        eprintln!(
            "skipped: LMRS_LLAMA_SERVER={} is not a file",
            path.display()
        );
        return None;
    }
    let beside = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../llama/bin/llama-server");
    if beside.is_file() {
        return Some(beside);
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("llama-server"))
            .find(|p| p.is_file())
    });
    if on_path.is_none() {
        eprintln!(
            "skipped: no llama-server (set LMRS_LLAMA_SERVER, or build it with \
             ../shared/build-llama-cpp.sh into llama/ beside the repository)"
        );
    }
    on_path
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A llama-server process, killed when dropped.
struct LlamaServer {
    child: Child,
    log: PathBuf,
}

impl LlamaServer {
    /// Starts `binary` on the tiny model at `port` and waits until it is ready.
    fn start(binary: &std::path::Path, port: u16) -> Self {
        Self::start_with(binary, port, &[])
    }

    /// [`Self::start`] with more arguments.
    fn start_with(binary: &std::path::Path, port: u16, more: &[&str]) -> Self {
        let log = std::env::temp_dir().join(format!(
            "lmrs-remote-llama-{}-{port}.log",
            std::process::id()
        ));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(binary)
            .args(["-m", tiny_model(), "--host", "127.0.0.1", "--port"])
            .arg(port.to_string())
            .args(["-t", "1", "-c", "4096", "-np", "1"])
            .args(more)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .expect("start llama-server");
        let mut server = LlamaServer { child, log };
        let deadline = Instant::now() + Duration::from_secs(60);
        let health = format!("http://127.0.0.1:{port}/health");
        loop {
            if let Ok(response) = ureq::get(&health).call() {
                if response.status() == 200 {
                    return server;
                }
            }
            if Instant::now() > deadline || server.child.try_wait().unwrap().is_some() {
                let text = std::fs::read_to_string(&server.log).unwrap_or_default();
                panic!("llama-server did not start:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Source with the cursor at the end of `    x = 1` (line 5, character 9): after a digit the
/// prompt has nothing to heal, so the local engine and a remote one get the same prompt.
const SOURCE: &str =
    "def add(a, b):\n    return a + b\n\n\ndef main():\n    x = 1\n    print(add(x, 2))\n";

/// `lmrs lsp ARGS` initialized with `options`, its model (or remote) ready.
fn start_lsp(args: &[&str], options: Value) -> LspClient {
    let mut c = LspClient::spawn(args);
    c.initialize(&["utf-16"], options);
    c.wait_model_ready(Duration::from_secs(60));
    c
}

/// The suggestions at the end of `    x = 1` in a fresh document `name`.
fn suggest(c: &mut LspClient, name: &str, source: &str) -> Vec<String> {
    let uri = format!("file:///work/demo/{name}.py");
    c.open(&uri, "python", source);
    c.inline_texts(&uri, 5, 9)
}

#[test]
fn suggestions_through_llama_server_equal_the_local_engines_for_each_remote_kind() {
    let Some(binary) = llama_server_binary() else {
        return;
    };
    let mut local = start_lsp(&["--model", tiny_model(), "--threads", "1"], json!({}));
    let expected = suggest(&mut local, "a", SOURCE);
    local.shutdown();
    assert_eq!(expected.len(), 1, "{expected:?}");

    let port = free_port();
    let _server = LlamaServer::start(&binary, port);
    let url = format!("http://127.0.0.1:{port}");
    // llama-server's `/completion` (FIM tokens found with its `/tokenize`), the same protocol as
    // `lmrs serve`, and its OpenAI-compatible `/v1/completions` (FIM tokens from the model name).
    for args in [
        vec!["--backend", &url, "--backend-kind", "llama.cpp"],
        vec!["--backend", &url, "--backend-kind", "lmrs"],
        vec![
            "--backend",
            &url,
            "--backend-kind",
            "openai",
            "--backend-model",
            "qwen2.5-coder-tiny",
        ],
    ] {
        let mut remote = start_lsp(&args, json!({}));
        assert_eq!(suggest(&mut remote, "a", SOURCE), expected, "{args:?}");
        remote.shutdown();
    }
    // The same through initializationOptions, with the FIM tokens configured.
    let mut remote = start_lsp(
        &[],
        json!({"backend": url, "backendKind": "openai", "fimPrefix": "<|fim_prefix|>",
               "fimSuffix": "<|fim_suffix|>", "fimMiddle": "<|fim_middle|>"}),
    );
    assert_eq!(suggest(&mut remote, "a", SOURCE), expected);
    remote.shutdown();
}

#[test]
fn the_api_key_reaches_llama_server_and_a_refused_one_is_said() {
    let Some(binary) = llama_server_binary() else {
        return;
    };
    let port = free_port();
    let _server = LlamaServer::start_with(&binary, port, &["--api-key", "sesame"]);
    let url = format!("http://127.0.0.1:{port}");
    let mut c = start_lsp(
        &[
            "--backend",
            &url,
            "--backend-kind",
            "llama.cpp",
            "--backend-api-key",
            "sesame",
        ],
        json!({}),
    );
    assert!(!suggest(&mut c, "a", SOURCE).is_empty());
    c.shutdown();

    let mut c = start_lsp(
        &[
            "--backend",
            &url,
            "--backend-kind",
            "llama.cpp",
            "--backend-api-key",
            "wrong",
        ],
        json!({}),
    );
    assert!(suggest(&mut c, "a", SOURCE).is_empty());
    let refused = c.message(
        |m| {
            m["method"] == "window/showMessage"
                && m["params"]["message"]
                    .as_str()
                    .is_some_and(|t| t.contains("401"))
        },
        Duration::from_secs(30),
    );
    let text = refused["params"]["message"].as_str().unwrap();
    assert!(!text.contains("wrong"), "the key is not shown: {text}");
    c.shutdown();
}

/// The `window/showMessage` texts among `messages`.
fn shown(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .filter(|m| m["method"] == "window/showMessage")
        .map(|m| {
            m["params"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

#[test]
fn a_remote_killed_mid_session_answers_empty_says_so_once_and_recovers() {
    let Some(binary) = llama_server_binary() else {
        return;
    };
    let port = free_port();
    let mut server = LlamaServer::start(&binary, port);
    let url = format!("http://127.0.0.1:{port}");
    let mut c = start_lsp(
        &["--backend", &url, "--backend-kind", "llama.cpp"],
        json!({}),
    );
    // Each request is in a document of its own, so no answer comes from the cache.
    let request = |c: &mut LspClient, n: usize| {
        let uri = format!("file:///work/demo/doc{n}.py");
        // One more first line per document: the cursor is then on line 6.
        c.open(&uri, "python", &format!("# {n}\n{SOURCE}"));
        c.inline_texts(&uri, 6, 9)
    };
    assert!(!request(&mut c, 0).is_empty(), "served while up");

    server.stop();
    assert!(request(&mut c, 1).is_empty(), "empty while down");
    let down = c.message(
        |m| {
            m["method"] == "window/showMessage"
                && m["params"]["message"]
                    .as_str()
                    .is_some_and(|t| t.contains("cannot reach"))
        },
        Duration::from_secs(30),
    );
    assert_eq!(down["params"]["type"], 2, "a warning: {down}");
    let text = down["params"]["message"].as_str().unwrap();
    assert!(text.contains(&url) && text.contains("empty"), "{text}");
    // More requests while it is down: still empty, and nothing more is said.
    for i in 2..5 {
        assert!(request(&mut c, i).is_empty());
        std::thread::sleep(Duration::from_millis(300));
    }

    let _server = LlamaServer::start(&binary, port);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut i = 5;
    while request(&mut c, i).is_empty() {
        assert!(
            Instant::now() < deadline,
            "not served again after the restart"
        );
        std::thread::sleep(Duration::from_millis(250));
        i += 1;
    }
    let up = c.message(
        |m| {
            m["method"] == "window/showMessage"
                && m["params"]["message"]
                    .as_str()
                    .is_some_and(|t| t.contains("answers again"))
        },
        Duration::from_secs(30),
    );
    assert_eq!(up["params"]["type"], 3, "information: {up}");
    // Messages are sent in order, so any second "down" message would be in the backlog now.
    let said = shown(&c.backlog);
    assert!(
        !said.iter().any(|t| t.contains("cannot reach")),
        "the outage is said once: {said:?}"
    );
    c.shutdown();
}

#[test]
fn a_superseded_request_makes_llama_server_cancel_its_generation() {
    let Some(binary) = llama_server_binary() else {
        return;
    };
    let port = free_port();
    let server = LlamaServer::start(&binary, port);
    let url = format!("http://127.0.0.1:{port}");
    // The tiny model writes no line break here, so nothing but a cancel ends the first request
    // before llama-server's context is full (thousands of tokens).
    let mut c = start_lsp(
        &["--backend", &url, "--backend-kind", "llama.cpp"],
        json!({"maxTokens": 100000, "timeoutMs": 600000, "prefetchNext": false}),
    );
    let uri = "file:///work/demo/a.py";
    c.open(uri, "python", SOURCE);
    let first = c.inline(uri, 5, 9, false);
    // Wait until llama-server's one slot is generating it.
    let slots = format!("{url}/slots");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let busy = ureq::get(&slots)
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .and_then(|text| serde_json::from_str::<Value>(&text).ok())
            .is_some_and(|v| v[0]["is_processing"] == true);
        if busy {
            break;
        }
        assert!(Instant::now() < deadline, "the first request never ran");
        std::thread::sleep(Duration::from_millis(5));
    }
    // The next request (in another document) supersedes it: with one slot, it is only served
    // because the first one's stream was closed and llama-server cancelled that generation.
    c.open("file:///work/demo/b.py", "python", SOURCE);
    let second = c.inline("file:///work/demo/b.py", 1, 16, false);
    let superseded = c.response(first, Duration::from_secs(60));
    assert!(items_of(&superseded).is_empty(), "{superseded}");
    let served = c.response(second, Duration::from_secs(120));
    assert!(served.get("error").is_none(), "{served}");
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(
        log.contains("cancel task"),
        "llama-server did not see the first request go:\n{log}"
    );
    c.shutdown();
}

/// What the in-test remote saw.
#[derive(Debug)]
enum Seen {
    /// The first completion's stream started.
    Streaming,
    /// Its client closed the connection, after this many events.
    Closed(usize),
    /// It sent every event without the client closing.
    Finished,
}

/// Reads one HTTP request: its path and body.
fn read_request(stream: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let path = line.split_whitespace().nth(1)?.to_owned();
    let mut length = 0;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok()?;
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((path, body))
}

/// One HTTP/1.1 chunk.
fn chunk(data: &str) -> String {
    format!("{:x}\r\n{data}\r\n", data.len())
}

/// A remote speaking llama.cpp's streaming `/completion`: the first completion streams `a` every
/// 20 ms for 30 s, watching for its client to close; every later one answers `b` and stops.
/// `/tokenize` is not found (the client then estimates token counts).
fn streaming_remote(listener: TcpListener, seen: mpsc::Sender<Seen>) {
    let mut completions = 0;
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { return };
        let Some((path, _body)) = read_request(&mut stream) else {
            continue;
        };
        if path != "/completion" {
            let body = "{\"error\":{\"code\":404,\"message\":\"not found\"}}";
            let _ = write!(
                stream,
                "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            continue;
        }
        completions += 1;
        let first = completions == 1;
        let seen = seen.clone();
        std::thread::spawn(move || {
            let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
            if stream.write_all(head.as_bytes()).is_err() {
                return;
            }
            if !first {
                let events = chunk("data: {\"content\":\"b\",\"stop\":false}\n\n")
                    + &chunk("data: {\"content\":\"\",\"stop\":true,\"stop_type\":\"eos\"}\n\n")
                    + "0\r\n\r\n";
                let _ = stream.write_all(events.as_bytes());
                return;
            }
            let _ = seen.send(Seen::Streaming);
            let event = chunk("data: {\"content\":\"a\",\"stop\":false}\n\n");
            for sent in 0..1500 {
                // A closed connection shows as a failed write (after the peer's reset) or as
                // the end of what it sends.
                let write = stream
                    .write_all(event.as_bytes())
                    .and_then(|()| stream.flush());
                let mut probe = [0u8; 1];
                stream.set_nonblocking(true).unwrap();
                let peer_closed = matches!(stream.read(&mut probe), Ok(0));
                stream.set_nonblocking(false).unwrap();
                if write.is_err() || peer_closed {
                    let _ = seen.send(Seen::Closed(sent));
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = seen.send(Seen::Finished);
        });
    }
}

#[test]
fn a_superseded_request_closes_its_stream_and_the_next_one_is_served() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (seen_tx, seen) = mpsc::channel();
    std::thread::spawn(move || streaming_remote(listener, seen_tx));
    let mut c = start_lsp(
        &[
            "--backend",
            &format!("http://127.0.0.1:{port}"),
            "--backend-kind",
            "llama.cpp",
        ],
        // Nothing but a cancel ends the first stream: no token, time or line limit near.
        json!({"fimPrefix": "<|fim_prefix|>", "fimSuffix": "<|fim_suffix|>",
               "fimMiddle": "<|fim_middle|>", "maxTokens": 100000, "timeoutMs": 600000,
               "prefetchNext": false}),
    );
    let uri = "file:///work/demo/a.py";
    c.open(uri, "python", SOURCE);
    let first = c.inline(uri, 5, 9, false);
    assert!(matches!(
        seen.recv_timeout(Duration::from_secs(30)).unwrap(),
        Seen::Streaming
    ));
    // A request elsewhere supersedes it.
    let second = c.inline(uri, 1, 16, false);
    let answer = c.response(second, Duration::from_secs(30));
    assert_eq!(items_of(&answer), ["b"], "{answer}");
    let superseded = c.response(first, Duration::from_secs(30));
    assert!(items_of(&superseded).is_empty(), "{superseded}");
    // The remote sees the first stream's client go (long before its 30 s of events end).
    match seen.recv_timeout(Duration::from_secs(30)).unwrap() {
        Seen::Closed(events) => assert!(events > 0, "{events}"),
        other => panic!("the superseded stream stayed open: {other:?}"),
    }
    c.shutdown();
}
