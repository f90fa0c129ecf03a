//! End-to-end tests of `lmrs lsp --backend`: the language server over stdio with its model on a
//! remote engine.
//!
//! Each behaviour is checked against two remotes, both started by the test on a free loopback
//! port with the tiny random-weight Qwen2 model the test writes (`lmrs_fixtures::tiny`), one
//! thread, one slot (see [`Engine`] and [`Remote`]):
//! - `lmrs serve`, this build's own binary: always run, so the remote path is tested end to end
//!   wherever the tests run;
//! - the real llama.cpp `llama-server`: `$LMRS_LLAMA_SERVER`, else `llama/bin/llama-server` beside
//!   the repository (the layout of `../shared/build-llama-cpp.sh`), else `llama-server` on `PATH`;
//!   without one its tests print why and pass without checking.
//!
//! The behaviours: greedy suggestions through the remote, for each backend kind it answers
//! (`lmrs`, `llama.cpp`, `openai`), equal the local engine's on the same file; the API key reaches
//! the remote and a refused one is said without showing it; a remote killed mid-session gives
//! empty answers, is said to be down once, and is said to answer again when it is back on the same
//! port; a superseded request makes the remote cancel its generation (seen in `lmrs serve`'s
//! `/metrics`, in llama-server's log).
//!
//! One more cancellation test runs against a small HTTP server inside the test that streams
//! llama.cpp's server-sent events: it is a protocol test of our client (does a superseded request
//! close its stream, and is the next one served?).

mod common;

use std::fs::File;
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

/// The model's name on both remotes (`--alias`): OpenAI clients find the FIM tokens from it.
const MODEL_ALIAS: &str = "qwen2.5-coder-tiny";

/// Context size of the remotes, in tokens (the tiny model's training context).
const REMOTE_CONTEXT: usize = 4096;

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

/// The engine a [`Remote`] runs.
#[derive(Clone, Debug)]
enum Engine {
    /// `lmrs serve`, this build's binary.
    LmrsServe,
    /// llama.cpp's `llama-server`, this binary.
    LlamaServer(PathBuf),
}

impl Engine {
    /// llama-server, or `None` (with the reason printed) when there is none.
    fn llama_server() -> Option<Self> {
        llama_server_binary().map(Self::LlamaServer)
    }

    fn name(&self) -> &'static str {
        match self {
            Self::LmrsServe => "lmrs serve",
            Self::LlamaServer(_) => "llama-server",
        }
    }

    /// The command serving the tiny model on `127.0.0.1:port` with one thread and one slot,
    /// then `more` arguments (both engines spell `--api-key` the same way).
    fn command(&self, port: u16, more: &[String]) -> Command {
        let port = port.to_string();
        let context = REMOTE_CONTEXT.to_string();
        let mut command = match self {
            Self::LmrsServe => {
                let mut command = Command::new(env!("CARGO_BIN_EXE_lmrs"));
                command
                    .args(["serve", "--model", tiny_model(), "--host", "127.0.0.1"])
                    .args(["--port", &port, "--threads", "1", "--slots", "1"])
                    .args(["--ctx-size", &context, "--alias", MODEL_ALIAS])
                    // Sizes and timings of each request (never its text) for the log.
                    .env("LMRS_LOG", "debug")
                    .env_remove("LMRS_API_KEY");
                command
            }
            Self::LlamaServer(binary) => {
                let mut command = Command::new(binary);
                command
                    .args(["-m", tiny_model(), "--host", "127.0.0.1", "--port", &port])
                    .args([
                        "-t",
                        "1",
                        "-np",
                        "1",
                        "-c",
                        &context,
                        "--alias",
                        MODEL_ALIAS,
                    ]);
                command
            }
        };
        command.args(more);
        command
    }
}

/// A remote engine process on a fixed port, killed when dropped. Its output goes to a log file
/// (appended to across restarts) that is printed when the test fails.
struct Remote {
    engine: Engine,
    port: u16,
    more: Vec<String>,
    child: Option<Child>,
    log: PathBuf,
}

impl Remote {
    /// Starts `engine` on a free port and waits until it is ready.
    fn start(engine: &Engine) -> Self {
        Self::start_with(engine, &[])
    }

    /// [`Self::start`] with more arguments.
    fn start_with(engine: &Engine, more: &[&str]) -> Self {
        let port = free_port();
        let log = std::env::temp_dir().join(format!(
            "lmrs-remote-{}-{}-{port}.log",
            engine.name().replace(' ', "-"),
            std::process::id()
        ));
        let _ = std::fs::remove_file(&log);
        let mut remote = Remote {
            engine: engine.clone(),
            port,
            more: more.iter().map(|&a| a.to_owned()).collect(),
            child: None,
            log,
        };
        remote.restart();
        remote
    }

    /// Starts the engine again (on the same port, with the same arguments) and waits until its
    /// `/health` answers 200.
    fn restart(&mut self) {
        self.stop();
        let out = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = self
            .engine
            .command(self.port, &self.more)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.engine.name()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        let health = format!("{}/health", self.url());
        loop {
            if let Ok(response) = ureq::get(&health).call() {
                if response.status() == 200 {
                    return;
                }
            }
            let exited = self.child.as_mut().unwrap().try_wait().unwrap();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "{} did not start (exit: {exited:?})",
                self.engine.name()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the engine (the port is free again once this returns).
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `GET path` without a key: its body, if it answered 200.
    fn get(&self, path: &str) -> Option<String> {
        let mut response = ureq::get(format!("{}{path}", self.url())).call().ok()?;
        response.body_mut().read_to_string().ok()
    }

    /// The value of the counter or gauge `name` in `lmrs serve`'s `/metrics`.
    fn metric(&self, name: &str) -> Option<f64> {
        let text = self.get("/metrics")?;
        text.lines()
            .filter_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .find_map(|value| value.trim().parse().ok())
    }

    /// Whether the remote's one slot is generating now.
    fn generating(&self) -> bool {
        match self.engine {
            Engine::LmrsServe => self
                .metric("lmrs_slots_busy")
                .is_some_and(|busy| busy >= 1.0),
            Engine::LlamaServer(_) => self
                .get("/slots")
                .and_then(|text| serde_json::from_str::<Value>(&text).ok())
                .is_some_and(|v| v[0]["is_processing"] == true),
        }
    }

    /// Whether the remote says it cancelled a generation because its client went away:
    /// `lmrs serve` counts them in `/metrics`, llama-server logs `cancel task`.
    fn cancelled_a_generation(&self) -> bool {
        match self.engine {
            Engine::LmrsServe => self
                .metric("lmrs_generations_cancelled_total")
                .is_some_and(|cancelled| cancelled >= 1.0),
            Engine::LlamaServer(_) => self.log_text().contains("cancel task"),
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!(
                "--- {} log ({}) ---\n{}--- end of the log ---",
                self.engine.name(),
                self.log.display(),
                self.log_text()
            );
        } else {
            let _ = std::fs::remove_file(&self.log);
        }
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

/// The local engine's suggestions on [`SOURCE`], found once per test process.
fn local_suggestions() -> &'static [String] {
    static SUGGESTIONS: OnceLock<Vec<String>> = OnceLock::new();
    SUGGESTIONS.get_or_init(|| {
        let mut local = start_lsp(&["--model", tiny_model(), "--threads", "1"], json!({}));
        let expected = suggest(&mut local, "a", SOURCE);
        local.shutdown();
        assert_eq!(expected.len(), 1, "one local suggestion: {expected:?}");
        expected
    })
}

/// The first `window/showMessage` whose text contains `fragment`.
fn shown_message(c: &mut LspClient, fragment: &str) -> Value {
    c.message(
        |m| {
            m["method"] == "window/showMessage"
                && m["params"]["message"]
                    .as_str()
                    .is_some_and(|t| t.contains(fragment))
        },
        Duration::from_secs(30),
    )
}

/// Greedy suggestions through `engine` equal the local engine's, for each backend kind.
fn suggestions_equal_the_local_engines(engine: &Engine) {
    let expected = local_suggestions();
    let remote = Remote::start(engine);
    let url = remote.url();
    // `/completion` with the FIM tokens found through `/props` or `/tokenize` (the `lmrs` and
    // `llama.cpp` kinds speak the same protocol), and the OpenAI-compatible `/v1/completions`
    // with the FIM tokens from the model's name: configured, else the remote's `/v1/models`.
    for args in [
        vec!["--backend", &url, "--backend-kind", "llama.cpp"],
        vec!["--backend", &url, "--backend-kind", "lmrs"],
        vec![
            "--backend",
            &url,
            "--backend-kind",
            "openai",
            "--backend-model",
            "qwen2.5-coder-other-name",
        ],
        vec!["--backend", &url, "--backend-kind", "openai"],
    ] {
        let mut c = start_lsp(&args, json!({}));
        assert_eq!(
            suggest(&mut c, "a", SOURCE),
            expected,
            "{}: {args:?}",
            engine.name()
        );
        c.shutdown();
    }
    // The same through initializationOptions, with the FIM tokens configured.
    let mut c = start_lsp(
        &[],
        json!({"backend": url, "backendKind": "openai", "fimPrefix": "<|fim_prefix|>",
               "fimSuffix": "<|fim_suffix|>", "fimMiddle": "<|fim_middle|>"}),
    );
    assert_eq!(suggest(&mut c, "a", SOURCE), expected, "{}", engine.name());
    c.shutdown();
}

#[test]
fn suggestions_through_lmrs_serve_equal_the_local_engines_for_each_remote_kind() {
    suggestions_equal_the_local_engines(&Engine::LmrsServe);
}

#[test]
fn suggestions_through_llama_server_equal_the_local_engines_for_each_remote_kind() {
    if let Some(engine) = Engine::llama_server() {
        suggestions_equal_the_local_engines(&engine);
    }
}

/// The right API key is served, given as a flag or in initializationOptions; a wrong one is
/// refused, and the message says so without showing either key.
fn the_api_key_reaches_the_remote_and_a_refused_one_is_said(engine: &Engine) {
    let right = "sesame-4417";
    let wrong = "barley-9023";
    let remote = Remote::start_with(engine, &["--api-key", right]);
    let url = remote.url();
    let mut c = start_lsp(
        &[
            "--backend",
            &url,
            "--backend-kind",
            "llama.cpp",
            "--backend-api-key",
            right,
        ],
        json!({}),
    );
    assert!(
        !suggest(&mut c, "a", SOURCE).is_empty(),
        "{}",
        engine.name()
    );
    c.shutdown();
    let mut c = start_lsp(
        &[],
        json!({"backend": url, "backendKind": "openai", "backendApiKey": right}),
    );
    assert!(
        !suggest(&mut c, "a", SOURCE).is_empty(),
        "{}",
        engine.name()
    );
    c.shutdown();

    let mut c = start_lsp(
        &[
            "--backend",
            &url,
            "--backend-kind",
            "llama.cpp",
            "--backend-api-key",
            wrong,
        ],
        json!({}),
    );
    assert!(suggest(&mut c, "a", SOURCE).is_empty(), "{}", engine.name());
    let refused = shown_message(&mut c, "401");
    let text = refused["params"]["message"].as_str().unwrap();
    assert!(
        text.contains(&url) && text.to_ascii_lowercase().contains("api key"),
        "the message says which remote refused which key: {text}"
    );
    assert!(
        !text.contains(wrong) && !text.contains(right),
        "no key is shown: {text}"
    );
    c.shutdown();
}

#[test]
fn the_api_key_reaches_lmrs_serve_and_a_refused_one_is_said() {
    the_api_key_reaches_the_remote_and_a_refused_one_is_said(&Engine::LmrsServe);
}

#[test]
fn the_api_key_reaches_llama_server_and_a_refused_one_is_said() {
    if let Some(engine) = Engine::llama_server() {
        the_api_key_reaches_the_remote_and_a_refused_one_is_said(&engine);
    }
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

/// With `engine` killed mid-session the language server answers empty, says so once, and
/// recovers when it is started again on the same port.
fn a_remote_killed_mid_session_answers_empty_says_so_once_and_recovers(engine: &Engine) {
    let mut remote = Remote::start(engine);
    let url = remote.url();
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

    remote.stop();
    assert!(request(&mut c, 1).is_empty(), "empty while down");
    let down = shown_message(&mut c, "cannot reach");
    assert_eq!(down["params"]["type"], 2, "a warning: {down}");
    let text = down["params"]["message"].as_str().unwrap();
    assert!(text.contains(&url) && text.contains("empty"), "{text}");
    // More requests while it is down: still empty, and nothing more is said.
    for i in 2..5 {
        assert!(request(&mut c, i).is_empty());
        std::thread::sleep(Duration::from_millis(300));
    }

    remote.restart();
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
    let up = shown_message(&mut c, "answers again");
    assert_eq!(up["params"]["type"], 3, "information: {up}");
    assert!(
        up["params"]["message"].as_str().unwrap().contains(&url),
        "{up}"
    );
    // Messages are sent in order, so any second "down" message would be in the backlog now.
    let said = shown(&c.backlog);
    assert!(
        !said.iter().any(|t| t.contains("cannot reach")),
        "the outage is said once: {said:?}"
    );
    c.shutdown();
}

#[test]
fn lmrs_serve_killed_mid_session_answers_empty_says_so_once_and_recovers() {
    a_remote_killed_mid_session_answers_empty_says_so_once_and_recovers(&Engine::LmrsServe);
}

#[test]
fn llama_server_killed_mid_session_answers_empty_says_so_once_and_recovers() {
    if let Some(engine) = Engine::llama_server() {
        a_remote_killed_mid_session_answers_empty_says_so_once_and_recovers(&engine);
    }
}

/// A superseded request makes `engine` cancel its generation, and the next one is served.
fn a_superseded_request_makes_the_remote_cancel_its_generation(engine: &Engine) {
    let remote = Remote::start(engine);
    let url = remote.url();
    // The tiny model writes no line break here, so nothing but a cancel ends the first request
    // before it has its thousands of tokens (fewer than the context, which `lmrs serve` requires
    // of `n_predict`).
    let max_tokens = REMOTE_CONTEXT - 512;
    let mut c = start_lsp(
        &["--backend", &url, "--backend-kind", "llama.cpp"],
        json!({"maxTokens": max_tokens, "timeoutMs": 600000, "prefetchNext": false}),
    );
    let uri = "file:///work/demo/a.py";
    c.open(uri, "python", SOURCE);
    let first = c.inline(uri, 5, 9, false);
    // Wait until the remote's one slot is generating it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !remote.generating() {
        assert!(Instant::now() < deadline, "the first request never ran");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(!remote.cancelled_a_generation(), "nothing cancelled yet");
    // The next request (in another document) supersedes it: with one slot, it is only served
    // because the first one's stream was closed and the remote cancelled that generation.
    c.open("file:///work/demo/b.py", "python", SOURCE);
    let second = c.inline("file:///work/demo/b.py", 1, 16, false);
    let superseded = c.response(first, Duration::from_secs(60));
    assert!(items_of(&superseded).is_empty(), "{superseded}");
    let served = c.response(second, Duration::from_secs(120));
    assert!(served.get("error").is_none(), "{served}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !remote.cancelled_a_generation() {
        assert!(
            Instant::now() < deadline,
            "{} did not see the first request go",
            engine.name()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    c.shutdown();
}

#[test]
fn a_superseded_request_makes_lmrs_serve_cancel_its_generation() {
    a_superseded_request_makes_the_remote_cancel_its_generation(&Engine::LmrsServe);
}

#[test]
fn a_superseded_request_makes_llama_server_cancel_its_generation() {
    if let Some(engine) = Engine::llama_server() {
        a_superseded_request_makes_the_remote_cancel_its_generation(&engine);
    }
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
