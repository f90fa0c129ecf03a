//! `lmrs pull`, `lmrs models`, `lmrs rm` against a fake Hugging Face hub on 127.0.0.1 that this
//! test runs itself (no internet): full downloads (plain and through the hub's LFS redirect),
//! interrupted downloads resumed from the `.part` file, sha256 mismatches, missing files and
//! refused access; then the binary end to end; then the language server's advice for a missing
//! model file.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use lmrs_lsp::pull::download::{
    hex, part_path, DownloadError, DownloadRequest, Hub, Progress, Verification,
};
use sha2::{Digest, Sha256};

/// A file the fake hub serves.
#[derive(Clone)]
struct Served {
    bytes: Arc<Vec<u8>>,
    /// The sha256 the hub announces (the real one unless a test makes it lie).
    announced_sha256: String,
    /// Answer 401 GatedRepo.
    gated: bool,
}

#[derive(Default)]
struct HubState {
    /// `owner/repo/path` → file.
    files: HashMap<String, Served>,
    /// Answer `resolve` with a 302 to `/lfs/...` carrying `X-Linked-ETag`/`X-Linked-Size`, as
    /// huggingface.co does for LFS files.
    redirect: bool,
    /// For each of the next GETs of a file body: close the connection after this many bytes.
    cuts: Vec<usize>,
    /// `METHOD PATH [Range]` of each request.
    log: Vec<String>,
}

/// A Hugging Face-like file server on 127.0.0.1 (one connection at a time, `Connection: close`).
struct FakeHub {
    addr: SocketAddr,
    state: Arc<Mutex<HubState>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeHub {
    fn start() -> FakeHub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(HubState::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(stream) = stream {
                        let _ = serve_connection(stream, &state);
                    }
                }
            })
        };
        FakeHub {
            addr,
            state,
            stop,
            thread: Some(thread),
        }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn add(&self, key: &str, bytes: Vec<u8>) -> String {
        let sha = hex(&Sha256::digest(&bytes));
        self.state.lock().unwrap().files.insert(
            key.to_string(),
            Served {
                bytes: Arc::new(bytes),
                announced_sha256: sha.clone(),
                gated: false,
            },
        );
        sha
    }

    fn edit(&self, key: &str, change: impl FnOnce(&mut Served)) {
        change(self.state.lock().unwrap().files.get_mut(key).unwrap());
    }

    fn log(&self) -> Vec<String> {
        self.state.lock().unwrap().log.clone()
    }
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wakes the accept loop
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve_connection(stream: TcpStream, state: &Mutex<HubState>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut range = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("range") {
                range = Some(value.trim().to_string());
            }
        }
    }
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let mut state = state.lock().unwrap();
    state.log.push(match &range {
        Some(range) => format!("{method} {path} {range}"),
        None => format!("{method} {path}"),
    });
    let mut out = stream;
    let head = method == "HEAD";
    if let Some(key) = path.strip_prefix("/lfs/") {
        let file = state.files.get(key).cloned();
        return match file {
            Some(file) => send_file(&mut out, &file, range.as_deref(), head, &mut state),
            None => respond(&mut out, "404 Not Found", &[], b""),
        };
    }
    let Some((repo, file_path)) = path.trim_start_matches('/').split_once("/resolve/main/") else {
        return respond(&mut out, "404 Not Found", &[], b"");
    };
    let key = format!("{repo}/{file_path}");
    let repo_known = state
        .files
        .keys()
        .any(|k| k.starts_with(&format!("{repo}/")));
    match state.files.get(&key).cloned() {
        _ if !repo_known => respond(
            &mut out,
            "401 Unauthorized",
            &[("X-Error-Code", "RepoNotFound")],
            b"",
        ),
        None => respond(
            &mut out,
            "404 Not Found",
            &[("X-Error-Code", "EntryNotFound")],
            b"",
        ),
        Some(file) if file.gated => respond(
            &mut out,
            "401 Unauthorized",
            &[("X-Error-Code", "GatedRepo")],
            b"",
        ),
        Some(file) if state.redirect => {
            let location = format!("/lfs/{key}");
            let etag = format!("\"{}\"", file.announced_sha256);
            let size = file.bytes.len().to_string();
            respond(
                &mut out,
                "302 Found",
                &[
                    ("Location", &location),
                    ("X-Linked-Etag", &etag),
                    ("X-Linked-Size", &size),
                ],
                b"",
            )
        }
        Some(file) => send_file(&mut out, &file, range.as_deref(), head, &mut state),
    }
}

fn send_file(
    out: &mut TcpStream,
    file: &Served,
    range: Option<&str>,
    head: bool,
    state: &mut HubState,
) -> std::io::Result<()> {
    let len = file.bytes.len();
    let etag = format!("\"{}\"", file.announced_sha256);
    let start = range
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|r| r.parse::<usize>().ok())
        .unwrap_or(0);
    if start > 0 && start >= len {
        let content_range = format!("bytes */{len}");
        return respond(
            out,
            "416 Range Not Satisfiable",
            &[("Content-Range", &content_range)],
            b"",
        );
    }
    let body = &file.bytes[start..];
    let content_range = format!("bytes {start}-{}/{len}", len - 1);
    let mut headers = vec![("ETag", etag.as_str()), ("Accept-Ranges", "bytes")];
    let status = if range.is_some() {
        headers.push(("Content-Range", &content_range));
        "206 Partial Content"
    } else {
        "200 OK"
    };
    let content_length = body.len().to_string();
    headers.push(("Content-Length", &content_length));
    if head {
        return write_head(out, status, &headers);
    }
    let cut = if state.cuts.is_empty() {
        None
    } else {
        Some(state.cuts.remove(0))
    };
    write_head(out, status, &headers)?;
    match cut {
        Some(n) => {
            out.write_all(&body[..n.min(body.len())])?;
            out.flush()?;
            out.shutdown(std::net::Shutdown::Both)
        }
        None => out.write_all(body),
    }
}

fn write_head(out: &mut TcpStream, status: &str, headers: &[(&str, &str)]) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())
}

fn respond(
    out: &mut TcpStream,
    status: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<()> {
    let length = body.len().to_string();
    let mut all = headers.to_vec();
    all.push(("Content-Length", &length));
    write_head(out, status, &all)?;
    out.write_all(body)
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lmrs-pull-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn tiny_gguf(seed: u64) -> Vec<u8> {
    lmrs_fixtures::tiny::tiny_model_bytes(lmrs_fixtures::tiny::TinyArch::Qwen2, seed)
}

fn request<'a>(repo: &'a str, path: &'a str, dest: &'a Path) -> DownloadRequest<'a> {
    DownloadRequest {
        retry_delay: Duration::ZERO,
        ..DownloadRequest::new(repo, path, dest)
    }
}

fn download(hub: &Hub, request: &DownloadRequest<'_>) -> Result<Vec<Progress>, DownloadError> {
    let mut seen = Vec::new();
    hub.download(request, &mut |p| seen.push(p)).map(|done| {
        assert_eq!(done.path, request.dest);
        seen
    })
}

#[test]
fn a_full_download_lands_verified_at_the_final_name() {
    for redirect in [false, true] {
        let fake = FakeHub::start();
        fake.state.lock().unwrap().redirect = redirect;
        let bytes = tiny_gguf(1);
        let sha = fake.add("owner/repo/sub/tiny.gguf", bytes.clone());
        let dir = temp_dir(&format!("full-{redirect}"));
        let dest = dir.join("tiny.gguf");
        let hub = Hub::new(&fake.endpoint(), Some("secret".into()), false);
        let mut last = None;
        let done = hub
            .download(&request("owner/repo", "sub/tiny.gguf", &dest), &mut |p| {
                last = Some(p)
            })
            .unwrap();
        assert_eq!(done.verification, Verification::Hub);
        assert_eq!(done.sha256, sha);
        assert_eq!(done.size, bytes.len() as u64);
        assert_eq!(std::fs::read(&dest).unwrap(), bytes);
        assert!(!part_path(&dest).exists());
        let last = last.unwrap();
        assert_eq!(
            (last.done, last.total),
            (bytes.len() as u64, Some(bytes.len() as u64))
        );
        let log = fake.log();
        assert!(
            log[0].starts_with("HEAD /owner/repo/resolve/main/sub/tiny.gguf"),
            "{log:?}"
        );
        if redirect {
            assert!(log.iter().any(|l| l.starts_with("GET /lfs/")), "{log:?}");
        }

        // Pinned: the same file checked against the pin.
        std::fs::remove_file(&dest).unwrap();
        let pinned = DownloadRequest {
            pinned_sha256: Some(&sha),
            ..request("owner/repo", "sub/tiny.gguf", &dest)
        };
        assert_eq!(
            hub.download(&pinned, &mut |_| {}).unwrap().verification,
            Verification::Pinned
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn an_interrupted_download_resumes_from_the_part_file() {
    let fake = FakeHub::start();
    let bytes = tiny_gguf(2);
    fake.add("owner/repo/tiny.gguf", bytes.clone());
    let dir = temp_dir("resume");
    let dest = dir.join("tiny.gguf");
    let hub = Hub::new(&fake.endpoint(), None, false);
    let cut = bytes.len() / 3;

    // One try only: the broken transfer is an error, its bytes stay in the .part file.
    fake.state.lock().unwrap().cuts = vec![cut];
    let once = DownloadRequest {
        attempts: 1,
        ..request("owner/repo", "tiny.gguf", &dest)
    };
    let err = download(&hub, &once).unwrap_err();
    assert!(matches!(err, DownloadError::Interrupted { .. }), "{err}");
    assert!(err.to_string().contains("again to resume"), "{err}");
    assert!(!dest.exists());
    assert_eq!(std::fs::read(part_path(&dest)).unwrap(), bytes[..cut]);

    // The next run asks only for the rest.
    let seen = download(&hub, &once).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), bytes);
    assert!(!part_path(&dest).exists());
    assert_eq!(seen[0].resumed_from, cut as u64);
    let range = format!("GET /owner/repo/resolve/main/tiny.gguf bytes={cut}-");
    assert!(fake.log().contains(&range), "{:?}", fake.log());

    // With retries, one run gets over two broken transfers by itself.
    std::fs::remove_file(&dest).unwrap();
    fake.state.lock().unwrap().cuts = vec![cut, 10];
    let done = download(&hub, &request("owner/repo", "tiny.gguf", &dest)).unwrap();
    assert_eq!(done.last().unwrap().done, bytes.len() as u64);
    assert_eq!(std::fs::read(&dest).unwrap(), bytes);
    let second = format!("GET /owner/repo/resolve/main/tiny.gguf bytes={}-", cut + 10);
    assert!(fake.log().contains(&second), "{:?}", fake.log());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_sha256_mismatch_is_an_error_and_leaves_no_file() {
    let fake = FakeHub::start();
    let bytes = tiny_gguf(3);
    let real = fake.add("owner/repo/tiny.gguf", bytes);
    let dir = temp_dir("sha");
    let dest = dir.join("tiny.gguf");
    let hub = Hub::new(&fake.endpoint(), None, false);

    // The hub announces another sha256 than the bytes it sends.
    let wrong = "ab".repeat(32);
    fake.edit("owner/repo/tiny.gguf", |f| {
        f.announced_sha256 = wrong.clone()
    });
    let err = download(&hub, &request("owner/repo", "tiny.gguf", &dest)).unwrap_err();
    assert!(matches!(err, DownloadError::Sha256Mismatch { .. }), "{err}");
    assert!(
        err.to_string().contains(&wrong) && err.to_string().contains(&real),
        "{err}"
    );
    assert!(!dest.exists() && !part_path(&dest).exists());

    // The catalogue pins another file than the hub has: nothing is downloaded.
    fake.edit("owner/repo/tiny.gguf", |f| {
        f.announced_sha256 = real.clone()
    });
    let pinned = DownloadRequest {
        pinned_sha256: Some(&wrong),
        ..request("owner/repo", "tiny.gguf", &dest)
    };
    let gets_before = fake.log().iter().filter(|l| l.starts_with("GET")).count();
    let err = download(&hub, &pinned).unwrap_err();
    assert!(matches!(err, DownloadError::PinMismatch { .. }), "{err}");
    assert_eq!(
        fake.log().iter().filter(|l| l.starts_with("GET")).count(),
        gets_before
    );
    assert!(!dest.exists() && !part_path(&dest).exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn missing_files_and_refused_access_are_clear_errors() {
    let fake = FakeHub::start();
    fake.add("owner/repo/tiny.gguf", tiny_gguf(4));
    fake.add("owner/gated/tiny.gguf", tiny_gguf(4));
    fake.edit("owner/gated/tiny.gguf", |f| f.gated = true);
    let dir = temp_dir("errors");
    let dest = dir.join("x.gguf");
    let hub = Hub::new(&fake.endpoint(), None, false);

    let err = download(&hub, &request("owner/repo", "nope.gguf", &dest)).unwrap_err();
    assert!(matches!(err, DownloadError::NoSuchFile { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("no file nope.gguf in repo owner/repo"),
        "{err}"
    );

    let err = download(&hub, &request("owner/missing", "tiny.gguf", &dest)).unwrap_err();
    assert!(
        err.to_string().contains("no repo owner/missing") && err.to_string().contains("HF_TOKEN"),
        "{err}"
    );

    let err = download(&hub, &request("owner/gated", "tiny.gguf", &dest)).unwrap_err();
    assert!(
        err.to_string().contains("gated") && err.to_string().contains("HF_TOKEN"),
        "{err}"
    );
    assert!(!dest.exists() && !part_path(&dest).exists());

    // Nothing listens: the error names the URL.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead = Hub::new(&format!("http://127.0.0.1:{port}"), None, false);
    let err = download(&dead, &request("owner/repo", "tiny.gguf", &dest)).unwrap_err();
    assert!(matches!(err, DownloadError::Network { .. }), "{err}");
    assert!(
        err.to_string().contains(&format!(
            "127.0.0.1:{port}/owner/repo/resolve/main/tiny.gguf"
        )),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Removes the proxy and token variables, so the fake hub on 127.0.0.1 is reached directly.
fn without_network_env(command: &mut Command) {
    for var in [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
        "HF_TOKEN",
    ] {
        command.env_remove(var);
    }
}

/// The binary, with the models folder and the hub given through the environment (and no proxy).
fn lmrs(models: &Path, hub: &FakeHub, args: &[&str]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_lmrs"));
    without_network_env(&mut command);
    command
        .args(args)
        .env("LMRS_MODEL_DIR", models)
        .env("HF_ENDPOINT", hub.endpoint())
        .output()
        .unwrap()
}

#[test]
fn pull_models_rm_end_to_end() {
    let fake = FakeHub::start();
    fake.state.lock().unwrap().redirect = true;
    let bytes = tiny_gguf(5);
    fake.add("someone/tiny-GGUF/tiny-q8.gguf", bytes.clone());
    let mut other = lmrs_fixtures::GgufWriter::new();
    other.add_string("general.architecture", "gptj");
    fake.add("someone/tiny-GGUF/sc2.gguf", other.to_bytes());
    let models = temp_dir("e2e").join("models"); // created by pull

    let out = lmrs(&models, &fake, &["pull", "someone/tiny-GGUF/tiny-q8.gguf"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let path = models.join("tiny-q8.gguf");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        path.display().to_string()
    );
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    assert!(
        stderr.contains("100%") && stderr.contains("matches the hub's"),
        "{stderr}"
    );
    assert!(stderr.contains("lmrs lsp --model"), "{stderr}");

    // Again: already there, nothing fetched.
    let gets = fake.log().len();
    let out = lmrs(&models, &fake, &["pull", "someone/tiny-GGUF/tiny-q8.gguf"]);
    assert!(out.status.success() && String::from_utf8_lossy(&out.stderr).contains("already there"));
    assert_eq!(fake.log().len(), gets);

    let out = lmrs(&models, &fake, &["pull", "someone/tiny-GGUF/sc2.gguf"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("`gptj` model, which this lmrs cannot run yet"),
        "{stderr}"
    );

    let out = lmrs(&models, &fake, &["models"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("tiny-q8.gguf"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(line.contains("qwen2"), "{stdout}");
    assert!(stdout.contains("gptj (cannot run yet)"), "{stdout}");

    let out = lmrs(&models, &fake, &["pull", "someone/tiny-GGUF/absent.gguf"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no file absent.gguf in repo someone/tiny-GGUF"),
        "{stderr}"
    );
    assert!(!models.join("absent.gguf").exists() && !models.join("absent.gguf.part").exists());

    let out = lmrs(&models, &fake, &["rm", "tiny-q8.gguf"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!path.exists());
    let out = lmrs(&models, &fake, &["rm", "tiny-q8.gguf"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no model `tiny-q8.gguf`"));
    let out = lmrs(&models, &fake, &["models"]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("tiny-q8.gguf"));
    std::fs::remove_dir_all(models.parent().unwrap()).unwrap();
}

#[test]
fn the_server_says_what_to_pull_when_the_model_file_is_missing() {
    let missing = "/nonexistent/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf";
    let mut c = common::LspClient::spawn(&["--model", missing]);
    c.initialize(&[], serde_json::json!(null));
    let msg = c.notification("window/showMessage", Duration::from_secs(20));
    let text = msg["params"]["message"].as_str().unwrap();
    assert!(
        text.contains("run `lmrs pull qwen2.5-coder:1.5b`"),
        "{text}"
    );
    assert!(text.contains("modelPath"), "{text}");
    c.shutdown();
}

/// `lmrs lsp ARGS` with the models folder and the hub given through the environment (no proxy).
fn lsp_with_hub(models: &Path, hub: &FakeHub, args: &[&str]) -> common::LspClient {
    let (models, endpoint) = (models.to_path_buf(), hub.endpoint());
    common::LspClient::spawn_with(
        args,
        "warn",
        std::process::Stdio::inherit(),
        move |command| {
            without_network_env(command);
            command
                .env("LMRS_MODEL_DIR", models)
                .env("HF_ENDPOINT", endpoint);
        },
    )
}

fn is_progress(m: &serde_json::Value, token_prefix: &str, kind: &str) -> bool {
    m["method"] == "$/progress"
        && m["params"]["token"]
            .as_str()
            .is_some_and(|t| t.starts_with(token_prefix))
        && m["params"]["value"]["kind"] == kind
}

#[test]
fn with_auto_pull_the_server_downloads_a_missing_catalogue_model_then_completes() {
    // An entry the catalogue does not pin, so the fake hub can serve a tiny model under its name.
    let entry = lmrs_lsp::pull::catalogue::by_name("qwen2.5-coder:3b").unwrap();
    assert!(entry.sha256.is_none() && entry.loadable());
    let fake = FakeHub::start();
    fake.state.lock().unwrap().redirect = true;
    let bytes = tiny_gguf(6);
    fake.add(&format!("{}/{}", entry.repo, entry.file), bytes.clone());
    let models = temp_dir("auto-pull").join("models");
    let path = models.join(entry.file);

    let mut c = lsp_with_hub(&models, &fake, &["--threads", "1"]);
    let options = serde_json::json!({"autoPull": true, "modelPath": path, "maxTokens": 4});
    c.initialize(&["utf-16"], options);
    let t = Duration::from_secs(60);
    let begin = c.message(|m| is_progress(m, "lmrs/pull/", "begin"), t);
    let title = begin["params"]["value"]["title"].as_str().unwrap();
    assert!(title.contains("qwen2.5-coder:3b"), "{begin}");
    assert_eq!(begin["params"]["value"]["percentage"], 0, "{begin}");
    let end = c.wait_progress_end("lmrs/pull/", t);
    assert!(
        end["params"]["value"]["message"]
            .as_str()
            .unwrap()
            .contains("downloaded"),
        "{end}"
    );
    let last_report = c
        .backlog
        .iter()
        .rfind(|m| is_progress(m, "lmrs/pull/", "report"))
        .cloned()
        .expect("a progress report");
    assert_eq!(
        last_report["params"]["value"]["percentage"], 100,
        "{last_report}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    c.wait_model_ready(t);
    let uri = "file:///work/demo/auto.py";
    c.open(uri, "python", "def add(a, b):\n    \n\nprint(add(1, 2))\n");
    let items = c.inline_texts(uri, 1, 4);
    assert_eq!(items.len(), 1, "a completion from the pulled model");
    c.shutdown();
    assert!(
        fake.log().iter().any(|l| l.starts_with("GET /lfs/")),
        "{:?}",
        fake.log()
    );
    std::fs::remove_dir_all(models.parent().unwrap()).unwrap();
}

#[test]
fn without_auto_pull_nothing_is_downloaded_and_the_message_names_the_command() {
    let fake = FakeHub::start();
    let models = temp_dir("no-auto-pull").join("models");
    let mut c = lsp_with_hub(&models, &fake, &[]);
    c.initialize(&[], serde_json::json!(null));
    let msg = c.notification("window/showMessage", Duration::from_secs(20));
    let text = msg["params"]["message"].as_str().unwrap();
    assert!(
        text.contains("run `lmrs pull qwen2.5-coder:1.5b` to download it"),
        "{text}"
    );
    c.shutdown();
    assert!(fake.log().is_empty(), "{:?}", fake.log());
    assert!(!models.exists());
    std::fs::remove_dir_all(models.parent().unwrap()).unwrap();
}

#[test]
fn a_failed_auto_pull_is_shown_with_its_reason_and_the_command() {
    // The default model's name on the hub, but another file than the catalogue pins.
    let entry = lmrs_lsp::pull::catalogue::default_entry();
    let fake = FakeHub::start();
    fake.add(&format!("{}/{}", entry.repo, entry.file), tiny_gguf(7));
    let models = temp_dir("auto-pull-fails").join("models");
    let mut c = lsp_with_hub(&models, &fake, &["--auto-pull"]);
    c.initialize(&[], serde_json::json!(null));
    let msg = c.notification("window/showMessage", Duration::from_secs(20));
    let text = msg["params"]["message"].as_str().unwrap();
    assert!(
        text.contains("downloading qwen2.5-coder:1.5b failed")
            && text.contains("the catalogue pins")
            && text.contains("run `lmrs pull qwen2.5-coder:1.5b`"),
        "{text}"
    );
    let end = c.wait_progress_end("lmrs/pull/", Duration::from_secs(5));
    assert!(end["params"]["value"]["message"]
        .as_str()
        .unwrap()
        .contains("failed"));
    c.shutdown();
    assert!(!models.join(entry.file).exists());
    assert!(!part_path(&models.join(entry.file)).exists());
    std::fs::remove_dir_all(models.parent().unwrap()).unwrap();
}

/// A hub whose file (any path) never finishes arriving: HEAD announces 10 MB with the default
/// model's sha256, GET sends 1000 bytes and then holds the connection open until the returned
/// sender is dropped.
fn stalling_hub() -> (String, std::sync::mpsc::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let (release, released) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            let _ = reader.read_line(&mut request_line);
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                    break;
                }
            }
            // The default model's pinned sha256, so the download goes ahead.
            let pinned = lmrs_lsp::pull::catalogue::default_entry().sha256.unwrap();
            let etag = format!("\"{pinned}\"");
            let headers = [("ETag", etag.as_str()), ("Content-Length", "10000000")];
            let _ = write_head(&mut stream, "200 OK", &headers);
            if request_line.starts_with("GET") {
                let _ = stream.write_all(&[0u8; 1000]);
                let _ = stream.flush();
                held.push(stream);
                // Until the test is over: the download waits for the rest.
                let _ = released.recv();
                break;
            }
        }
    });
    (endpoint, release)
}

#[test]
fn the_server_exits_at_once_while_an_auto_pull_is_still_downloading() {
    let (endpoint, _release) = stalling_hub();
    let models = temp_dir("auto-pull-exit").join("models");
    let mut c = common::LspClient::spawn_with(
        &["--auto-pull"],
        "warn",
        std::process::Stdio::inherit(),
        |command| {
            command
                .env("LMRS_MODEL_DIR", &models)
                .env("HF_ENDPOINT", &endpoint)
                .env_remove("HF_TOKEN");
            for var in ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"] {
                command.env_remove(var);
            }
        },
    );
    c.initialize(&[], serde_json::json!(null));
    c.message(
        |m| is_progress(m, "lmrs/pull/", "begin"),
        Duration::from_secs(20),
    );
    // Some bytes arrived: the download is under way.
    let part = part_path(&models.join(lmrs_lsp::pull::catalogue::default_entry().file));
    let started = std::time::Instant::now();
    while !part.exists() && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(part.exists(), "the download started");
    let before_exit = std::time::Instant::now();
    c.shutdown();
    assert!(
        before_exit.elapsed() < Duration::from_secs(5),
        "exit waited {:?} for the download",
        before_exit.elapsed()
    );
    // What arrived stays for `lmrs pull` (or the next start) to resume.
    assert!(part.exists());
    std::fs::remove_dir_all(models.parent().unwrap()).unwrap();
}
