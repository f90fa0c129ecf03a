//! `lmrs serve` end to end: the real binary on a free loopback port with a tiny random-weight
//! model (and, when the file is there, the real Qwen2.5-Coder 0.5B), spoken to over real HTTP.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// A running `lmrs serve`, killed on drop.
struct Server {
    child: Child,
    base: String,
    agent: ureq::Agent,
    api_key: Option<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tiny Qwen-flavoured model (with FIM tokens) in a temporary folder.
fn tiny_model(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lmrs-serve-test-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tiny-qwen2.gguf");
    lmrs_fixtures::tiny::write_tiny_model(&path, lmrs_fixtures::tiny::TinyArch::Qwen2, 7).unwrap();
    path
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into()
}

impl Server {
    /// Starts `lmrs serve --model MODEL --port 0 ARGS` and waits until it answers `/health` 200.
    fn start(model: &Path, args: &[&str]) -> Server {
        let server = Self::spawn(model, args);
        server.wait_ready();
        server
    }

    /// Starts it and returns once it listens (the model may still be loading).
    fn spawn(model: &Path, args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_lmrs"))
            .arg("serve")
            .arg("--model")
            .arg(model)
            .args(["--port", "0", "--threads", "1"])
            .args(args)
            .env("LMRS_LOG", "warn")
            .env_remove("LMRS_API_KEY")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn lmrs serve");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).expect("the listening line");
        let base = line
            .trim()
            .strip_prefix("lmrs serve: listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        let api_key = args
            .iter()
            .position(|&a| a == "--api-key")
            .map(|i| args[i + 1].to_string());
        Server {
            child,
            base,
            agent: agent(),
            api_key,
        }
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (status, _) = self.get("/health");
            if status == 200 {
                return;
            }
            assert_eq!(status, 503, "/health while loading");
            assert!(Instant::now() < deadline, "the model did not load in time");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn address(&self) -> String {
        self.base.trim_start_matches("http://").to_string()
    }

    fn get(&self, path: &str) -> (u16, String) {
        let mut request = self.agent.get(format!("{}{path}", self.base));
        if let Some(key) = &self.api_key {
            request = request.header("Authorization", format!("Bearer {key}"));
        }
        let response = request.call().expect("GET");
        let status = response.status().as_u16();
        (status, response.into_body().read_to_string().unwrap())
    }

    fn get_json(&self, path: &str) -> (u16, Value) {
        let (status, body) = self.get(path);
        (
            status,
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}")),
        )
    }

    /// POSTs `body` (raw text) and returns the status, the headers we look at and the body.
    fn post_raw(&self, path: &str, body: &str, key: Option<&str>) -> (u16, Option<String>, String) {
        let mut request = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("Content-Type", "application/json");
        if let Some(key) = key.or(self.api_key.as_deref()) {
            request = request.header("Authorization", format!("Bearer {key}"));
        }
        let response = request.send(body).expect("POST");
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string());
        (
            status,
            retry_after,
            response.into_body().read_to_string().unwrap(),
        )
    }

    fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let (status, _, text) = self.post_raw(path, &body.to_string(), None);
        (
            status,
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}")),
        )
    }

    /// POSTs and reads the server-sent events' `data:` payloads until the stream ends.
    fn post_stream(&self, path: &str, body: Value) -> Vec<String> {
        let response = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("Content-Type", "application/json")
            .send(body.to_string())
            .expect("POST");
        assert_eq!(response.status().as_u16(), 200);
        let content_type = response
            .headers()
            .get("content-type")
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            content_type.starts_with("text/event-stream"),
            "{content_type}"
        );
        let reader = BufReader::new(response.into_body().into_reader());
        reader
            .lines()
            .map(|l| l.unwrap())
            .filter_map(|l| l.strip_prefix("data: ").map(str::to_string))
            .collect()
    }

    /// A gauge or counter from `/metrics` (the first sample of that name).
    fn metric(&self, name: &str) -> f64 {
        let (_, text) = self.get("/metrics");
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
    }

    /// Waits until `metric` has `value`.
    fn wait_metric(&self, name: &str, value: f64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.metric(name) != value {
            assert!(Instant::now() < deadline, "{name} never became {value}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// The JSON error shape every failure has.
fn assert_error(body: &Value, code: u16, words: &str) {
    let error = &body["error"];
    assert_eq!(error["code"], code, "{body}");
    assert!(error["type"].is_string(), "{body}");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains(words), "{message:?} should say {words:?}");
}

/// Starts a raw HTTP POST and returns the open connection (dropping it disconnects).
fn open_request(address: &str, path: &str, body: &Value) -> TcpStream {
    let mut stream = TcpStream::connect(address).unwrap();
    let body = body.to_string();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    stream.flush().unwrap();
    stream
}

#[test]
fn llama_cpp_endpoints_answer_with_their_fields() {
    let server = Server::start(&tiny_model("llama"), &["--slots", "2"]);

    let (status, health) = server.get_json("/health");
    assert_eq!((status, &health), (200, &json!({"status": "ok"})));

    let (status, props) = server.get_json("/props");
    assert_eq!(status, 200);
    assert_eq!(props["total_slots"], 2);
    assert!(props["n_ctx"].as_u64().unwrap() >= 256);
    assert_eq!(props["fim_tokens"]["prefix"]["text"], "<|fim_prefix|>");
    assert_eq!(props["fim_tokens"]["middle"]["text"], "<|fim_middle|>");
    assert_eq!(
        props["fim_tokens"]["file_separator"]["text"],
        "<|file_sep|>"
    );
    assert!(props["fim_tokens"]["suffix"]["id"].is_u64());

    // Tokenize and back; special tokens are parsed only with add_special.
    let (status, tokens) = server.post("/tokenize", json!({"content": "fn main() {}"}));
    assert_eq!(status, 200);
    let ids = tokens["tokens"].as_array().unwrap().clone();
    assert!(!ids.is_empty());
    let (status, text) = server.post("/detokenize", json!({"tokens": ids}));
    assert_eq!(
        (status, text["content"].as_str().unwrap()),
        (200, "fn main() {}")
    );
    let (_, special) = server.post(
        "/tokenize",
        json!({"content": "<|fim_prefix|>", "add_special": true}),
    );
    assert_eq!(
        special["tokens"],
        json!([props["fim_tokens"]["prefix"]["id"]])
    );
    let (_, pieces) = server.post("/tokenize", json!({"content": "ab", "with_pieces": true}));
    assert!(pieces["tokens"][0]["piece"].is_string(), "{pieces}");

    // /completion, whole.
    let (status, done) = server.post(
        "/completion",
        json!({"prompt": "def add(a, b):", "n_predict": 8, "temperature": 0, "ignore_eos": true, "n_probs": 2}),
    );
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["stop"], true);
    assert_eq!(done["tokens_predicted"], 8);
    assert_eq!(done["stop_type"], "limit");
    assert_eq!(done["stopped_limit"], true);
    assert!(done["tokens_evaluated"].as_u64().unwrap() > 0);
    assert_eq!(
        done["tokens_cached"].as_u64().unwrap(),
        done["tokens_evaluated"].as_u64().unwrap() + 7,
        "the cache holds the prompt and all generated tokens but the last: {done}"
    );
    let timings = &done["timings"];
    for field in [
        "prompt_n",
        "prompt_ms",
        "predicted_n",
        "predicted_ms",
        "cache_n",
        "predicted_per_second",
    ] {
        assert!(timings[field].is_number(), "timings.{field}: {done}");
    }
    assert_eq!(timings["predicted_n"], 8);
    let content = done["content"].as_str().unwrap();
    let (_, detok) = server.post("/detokenize", json!({"tokens": done["tokens"]}));
    assert_eq!(detok["content"].as_str().unwrap(), content);

    // The same, streamed: the chunks spell the same text (greedy), the last has the figures.
    let events = server.post_stream(
        "/completion",
        json!({"prompt": "def add(a, b):", "n_predict": 8, "temperature": 0, "ignore_eos": true, "stream": true}),
    );
    let chunks: Vec<Value> = events
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let (last, pieces) = chunks.split_last().unwrap();
    assert_eq!(last["stop"], true);
    assert_eq!(last["tokens_predicted"], 8);
    assert!(pieces.iter().all(|c| c["stop"] == false));
    let streamed: String = pieces
        .iter()
        .map(|c| c["content"].as_str().unwrap())
        .collect();
    assert_eq!(streamed, content);
    // The second request found the whole prompt in the slot's cache.
    assert!(last["timings"]["cache_n"].as_u64().unwrap() > 0, "{last}");

    // A token-id prompt.
    let (status, by_ids) = server.post(
        "/completion",
        json!({"prompt": ids, "n_predict": 2, "temperature": 0}),
    );
    assert_eq!(status, 200, "{by_ids}");
    assert_eq!(
        by_ids["tokens_evaluated"].as_u64().unwrap() as usize,
        ids.len()
    );

    // A stop string cuts the text before it.
    let first_char: String = content.chars().take(1).collect();
    if !first_char.is_empty() && content.len() > first_char.len() {
        let cut_at: String = content.chars().skip(1).take(1).collect();
        let (_, stopped) = server.post(
            "/completion",
            json!({"prompt": "def add(a, b):", "n_predict": 8, "temperature": 0, "ignore_eos": true, "stop": [cut_at.clone()]}),
        );
        assert_eq!(stopped["stop_type"], "word", "{stopped}");
        assert_eq!(stopped["stopping_word"], cut_at.as_str());
        let expected = &content[..content.find(cut_at.as_str()).unwrap()];
        assert_eq!(stopped["content"].as_str().unwrap(), expected);
    }
}

#[test]
fn infill_in_llama_cpp_layout_builds_a_repo_level_prompt_from_input_extra() {
    let server = Server::start(&tiny_model("infill"), &["--infill-prompt", "llama.cpp"]);
    let request = |extra: Value| {
        json!({
            "input_prefix": "def add(a, b):\n",
            "input_suffix": "\n\nprint(add(1, 2))\n",
            "prompt": "    ",
            "input_extra": extra,
            "n_predict": 4,
            "n_indent": 4,
            "t_max_prompt_ms": 5000,
            "t_max_predict_ms": 5000,
            "samplers": ["top_k", "top_p", "infill"],
            "top_k": 40,
            "top_p": 0.99,
            "temperature": 0,
            "cache_prompt": true,
            "id_slot": -1,
        })
    };
    let (status, plain) = server.post("/infill", request(json!([])));
    assert_eq!(status, 200, "{plain}");
    for field in [
        "content",
        "tokens_predicted",
        "tokens_evaluated",
        "tokens_cached",
        "stop",
        "stop_type",
        "timings",
    ] {
        assert!(!plain[field].is_null(), "{field} missing: {plain}");
    }
    let extra_text = "def sub(a, b):\n    return a - b\n";
    let (status, with_extra) = server.post(
        "/infill",
        request(json!([{"filename": "ops.py", "text": extra_text}])),
    );
    assert_eq!(status, 200, "{with_extra}");
    // The chunk adds its file separator, its name line and its text before the FIM prefix.
    let count = |text: &str| {
        server.post("/tokenize", json!({"content": text})).1["tokens"]
            .as_array()
            .unwrap()
            .len() as u64
    };
    let added = with_extra["tokens_evaluated"].as_u64().unwrap()
        - plain["tokens_evaluated"].as_u64().unwrap();
    assert_eq!(
        added,
        1 + count("ops.py\n") + count(extra_text),
        "{plain}\n{with_extra}"
    );
    // The repository header comes first, so the second prompt shares it with the first (and with
    // the slot's cache) only up to the first file separator.
    assert!(
        with_extra["timings"]["cache_n"].as_u64().unwrap() > 0,
        "{with_extra}"
    );

    // The same request again reuses the whole prompt.
    let (_, again) = server.post(
        "/infill",
        request(json!([{"filename": "ops.py", "text": extra_text}])),
    );
    assert_eq!(
        again["timings"]["cache_n"].as_u64().unwrap()
            + again["timings"]["prompt_n"].as_u64().unwrap(),
        again["tokens_evaluated"].as_u64().unwrap()
    );
    assert!(
        again["timings"]["prompt_n"].as_u64().unwrap() <= 1,
        "{again}"
    );
    assert_eq!(again["content"], with_extra["content"]);

    // A model-less field error is a 400 that names the field.
    let (status, error) = server.post("/infill", json!({"input_prefix": 5}));
    assert_eq!(status, 400);
    assert_error(&error, 400, "invalid JSON body");
}

/// A document whose cursor is at the end of `    x = 1` (line 6, column 10): the tiny model has
/// a suggestion there.
const DEMO_BEFORE: &str = "def add(a, b):\n    return a + b\n\n\ndef main():\n";
const DEMO_LINE: &str = "    x = 1";
const DEMO_AFTER: &str = "\n    print(add(x, 2))\n";

/// llama.vim's request at the demo cursor with `typed` typed after it.
fn demo_infill(typed: &str) -> Value {
    json!({
        "input_prefix": DEMO_BEFORE,
        "input_suffix": DEMO_AFTER,
        "prompt": format!("{DEMO_LINE}{typed}"),
        "input_extra": [],
        "n_predict": 64,
        "n_indent": 4,
        "top_k": 40,
        "top_p": 0.9,
        "samplers": ["top_k", "top_p", "infill"],
        "stream": false,
        "cache_prompt": true,
        "t_max_prompt_ms": 500,
        "t_max_predict_ms": 5000,
        "id_slot": 0,
    })
}

#[test]
fn infill_in_the_lmrs_layout_answers_as_the_language_server_and_types_through() {
    let model = tiny_model("editor");
    // The language server's completion path on the same text, once, from the command line.
    let file = model.with_file_name("demo.py");
    std::fs::write(&file, format!("{DEMO_BEFORE}{DEMO_LINE}{DEMO_AFTER}")).unwrap();
    let complete = Command::new(env!("CARGO_BIN_EXE_lmrs"))
        .args(["complete", &format!("{}:6:10", file.display())])
        .arg("--model")
        .arg(&model)
        .args(["--threads", "1", "--timeout-ms", "5000"])
        .output()
        .unwrap();
    assert!(complete.status.success(), "{complete:?}");
    let expected = String::from_utf8(complete.stdout).unwrap();
    let expected = expected.strip_suffix('\n').unwrap();
    assert!(
        !expected.is_empty(),
        "the tiny model suggests something here"
    );

    let server = Server::start(&model, &[]);
    let (status, first) = server.post("/infill", demo_infill(""));
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["content"], expected, "{first}");
    assert!(first["cache_hit"].is_null(), "{first}");
    assert!(first["timings"]["predicted_n"].as_u64().unwrap() > 0);

    // Typing the suggestion's first characters: the rest comes from the cache, no model call.
    let typed: String = expected.chars().take(2).collect();
    let (status, through) = server.post("/infill", demo_infill(&typed));
    assert_eq!(status, 200, "{through}");
    assert_eq!(through["cache_hit"], true, "{through}");
    assert_eq!(through["content"], expected[typed.len()..], "{through}");
    assert_eq!(through["timings"]["predicted_n"], 0);
    assert_eq!(server.metric("lmrs_infill_cache_hits_total"), 1.0);
    // Something else typed asks the model again, which reuses the slot's cached prompt: the
    // changed text is at the very end of the prompt in this layout.
    let (status, other) = server.post("/infill", demo_infill("0"));
    assert_eq!(status, 200, "{other}");
    assert!(other["cache_hit"].is_null(), "{other}");
    let evaluated = other["timings"]["prompt_n"].as_u64().unwrap();
    let cached = other["timings"]["cache_n"].as_u64().unwrap();
    assert!(evaluated <= 2 && cached > 20, "{other}");
    // A sampled request is never answered from the cache.
    let mut sampled = demo_infill(&typed);
    sampled["temperature"] = json!(0.7);
    let (status, sampled) = server.post("/infill", sampled);
    assert_eq!(status, 200, "{sampled}");
    assert!(sampled["cache_hit"].is_null(), "{sampled}");
    assert_eq!(server.metric("lmrs_infill_cache_hits_total"), 1.0);
}

#[test]
fn openai_completions_and_models() {
    let server = Server::start(&tiny_model("openai"), &["--slots", "2"]);
    let (status, models) = server.get_json("/v1/models");
    assert_eq!(status, 200);
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], "tiny-qwen2.gguf");

    let (status, done) = server.post(
        "/v1/completions",
        json!({"model": "anything", "prompt": "import os\n", "max_tokens": 5, "temperature": 0, "n": 2}),
    );
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["object"], "text_completion");
    let choices = done["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 2);
    assert_eq!(choices[1]["index"], 1);
    // Greedy: both choices are the same text.
    assert_eq!(choices[0]["text"], choices[1]["text"]);
    assert!(["stop", "length"].contains(&choices[0]["finish_reason"].as_str().unwrap()));
    let usage = &done["usage"];
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
    );

    // With a suffix the prompt is fill-in-the-middle: more tokens than the prefix alone.
    let (_, plain) = server.post(
        "/v1/completions",
        json!({"prompt": "x = ", "max_tokens": 1}),
    );
    let (status, fim) = server.post(
        "/v1/completions",
        json!({"prompt": "x = ", "suffix": "\nprint(x)\n", "max_tokens": 1}),
    );
    assert_eq!(status, 200, "{fim}");
    assert!(fim["usage"]["prompt_tokens"].as_u64() > plain["usage"]["prompt_tokens"].as_u64());

    // Streamed: chunks, a last chunk with the finish reason, then [DONE].
    let events = server.post_stream(
        "/v1/completions",
        json!({"prompt": "import os\n", "max_tokens": 5, "temperature": 0, "stream": true, "ignore_eos": true}),
    );
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "length"
    );
    let streamed: String = chunks
        .iter()
        .map(|c| c["choices"][0]["text"].as_str().unwrap())
        .collect();
    let (_, whole) = server.post(
        "/v1/completions",
        json!({"prompt": "import os\n", "max_tokens": 5, "temperature": 0, "ignore_eos": true}),
    );
    assert_eq!(streamed, whole["choices"][0]["text"].as_str().unwrap());

    // Bad requests: clear 400s, and the server keeps serving.
    let (status, error) = server.post("/v1/completions", json!({"prompt": "x", "n": 0}));
    assert_eq!(status, 400);
    assert_error(&error, 400, "n = 0");
    let (status, error) = server.post("/v1/completions", json!({"prompt": ["a", "b"]}));
    assert_eq!(status, 400);
    assert_error(&error, 400, "batched prompts");
    let (status, _) = server.get("/health");
    assert_eq!(status, 200);
}

#[test]
fn bad_requests_get_clear_json_errors_and_the_server_keeps_serving() {
    let server = Server::start(&tiny_model("errors"), &["--slots", "2"]);
    let (status, _, body) = server.post_raw("/completion", "{not json", None);
    assert_eq!(status, 400);
    assert_error(
        &serde_json::from_str(&body).unwrap(),
        400,
        "invalid JSON body",
    );

    let (status, error) = server.post("/completion", json!({"prompt": "x", "n_predict": -7}));
    assert_eq!(status, 400);
    assert_error(&error, 400, "n_predict = -7 is out of range");
    // More tokens than the context holds: generation ends where it is full (llama.cpp's answer).
    let (status, long) = server.post(
        "/completion",
        json!({"prompt": "x", "n_predict": 100000000, "temperature": 0}),
    );
    assert_eq!(status, 200, "{long}");
    let n_ctx = server.get_json("/props").1["n_ctx"].as_u64().unwrap();
    assert!(long["tokens_predicted"].as_u64().unwrap() < n_ctx, "{long}");

    // A prompt longer than the context.
    let n_ctx = server.get_json("/props").1["n_ctx"].as_u64().unwrap();
    let long: Vec<u64> = (0..n_ctx + 10).map(|i| 10 + i % 50).collect();
    let (status, error) = server.post("/completion", json!({"prompt": long, "n_predict": 1}));
    assert_eq!(status, 400);
    assert_error(&error, 400, "longer than the context");

    let (status, error) = server.post("/completion", json!({"prompt": [99999999], "n_predict": 1}));
    assert_eq!(status, 400);
    assert_error(&error, 400, "out of range");
    let (status, error) = server.post("/completion", json!({"prompt": "", "n_predict": 1}));
    assert_eq!(status, 400);
    assert_error(&error, 400, "empty");
    let (status, error) = server.post("/completion", json!({"prompt": "x", "id_slot": 9}));
    assert_eq!(status, 400);
    assert_error(&error, 400, "id_slot = 9");
    let (status, error) = server.post("/completion", json!({"prompt": "x", "top_p": 3.0}));
    assert_eq!(status, 400);
    assert_error(&error, 400, "top_p");

    let (status, body) = server.get("/no/such/endpoint");
    assert_eq!(status, 404);
    assert_error(&serde_json::from_str(&body).unwrap(), 404, "no endpoint");
    let (status, body) = server.get("/infill");
    assert_eq!(status, 405);
    assert_error(
        &serde_json::from_str(&body).unwrap(),
        405,
        "does not answer GET",
    );

    let (status, done) = server.post("/completion", json!({"prompt": "x", "n_predict": 2}));
    assert_eq!(status, 200, "{done}");
    assert!(server.metric("lmrs_requests_total") >= 1.0);
}

#[test]
fn a_request_goes_to_the_slot_holding_its_prefix() {
    let server = Server::start(&tiny_model("prefix"), &["--slots", "3"]);
    let body = |prompt: &str| json!({"prompt": prompt, "n_predict": 1, "temperature": 0});
    let long_a = "fn alpha() { let x = 1; let y = 2; let z = x + y; }\n".repeat(4);
    let long_b = "class Beta:\n    def run(self):\n        return 42\n".repeat(4);
    let (_, a1) = server.post("/completion", body(&long_a));
    let (_, b1) = server.post("/completion", body(&long_b));
    assert_eq!(a1["timings"]["cache_n"], 0);
    assert_eq!(b1["timings"]["cache_n"], 0);
    assert_ne!(
        a1["id_slot"], b1["id_slot"],
        "an empty slot is taken before a warm one"
    );
    // Same prefixes, new endings: each goes back to its slot and reuses its prompt.
    let (_, a2) = server.post("/completion", body(&format!("{long_a}fn gamma() {{")));
    let (_, b2) = server.post("/completion", body(&format!("{long_b}    def stop(self):")));
    assert_eq!(a2["id_slot"], a1["id_slot"]);
    assert_eq!(b2["id_slot"], b1["id_slot"]);
    assert!(
        a2["timings"]["cache_n"].as_u64().unwrap() >= a1["tokens_evaluated"].as_u64().unwrap() - 1,
        "{a2}"
    );
    assert!(b2["timings"]["cache_n"].as_u64().unwrap() > 0, "{b2}");
    // id_slot is honoured when that slot is free (even without a shared prefix).
    let wanted = a1["id_slot"].as_u64().unwrap();
    let mut request = body(&long_b);
    request["id_slot"] = json!(wanted);
    let (_, pinned) = server.post("/completion", request);
    assert_eq!(pinned["id_slot"].as_u64().unwrap(), wanted);
    // cache_prompt: false evaluates everything again.
    let mut request = body(&long_b);
    request["cache_prompt"] = json!(false);
    let (_, fresh) = server.post("/completion", request);
    assert_eq!(fresh["timings"]["cache_n"], 0, "{fresh}");
    assert!(server.metric("lmrs_prompt_tokens_cached_total") > 0.0);
}

#[test]
fn a_full_queue_answers_503_and_a_disconnect_frees_the_slot() {
    let server = Server::start(&tiny_model("queue"), &["--slots", "1", "--queue", "1"]);
    let endless =
        json!({"prompt": "loop {", "n_predict": -1, "ignore_eos": true, "temperature": 0});
    let short = json!({"prompt": "x", "n_predict": 2});

    // Occupy the only slot with a generation that runs to the end of the context, on a raw
    // connection we can drop.
    let running = open_request(&server.address(), "/completion", &endless);
    server.wait_metric("lmrs_slots_busy", 1.0);
    // One request waits in the queue ...
    let queued = open_request(&server.address(), "/completion", &short);
    server.wait_metric("lmrs_queue_length", 1.0);
    // ... and the next is turned away at once, with Retry-After.
    let (status, retry_after, body) = server.post_raw("/completion", &short.to_string(), None);
    assert_eq!(status, 503, "{body}");
    assert_eq!(retry_after.as_deref(), Some("1"));
    assert_error(&serde_json::from_str(&body).unwrap(), 503, "queue");
    assert_eq!(
        server.metric("lmrs_requests_rejected_queue_full_total"),
        1.0
    );

    // The client of the running generation goes away: it is cancelled and the queued request is
    // served.
    drop(running);
    let mut queued = queued;
    let mut answer = String::new();
    queued.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"stop\":true"), "{answer}");
    assert_eq!(server.metric("lmrs_generations_cancelled_total"), 1.0);
    server.wait_metric("lmrs_slots_busy", 0.0);
    let (_, metrics) = server.get("/metrics");
    assert!(
        metrics.contains("lmrs_requests_total{endpoint=\"/completion\",status=\"499\"} 1"),
        "the abandoned request counts as 499:\n{metrics}"
    );

    // A queued request whose client goes away leaves the queue.
    let running = open_request(&server.address(), "/completion", &endless);
    server.wait_metric("lmrs_slots_busy", 1.0);
    let queued = open_request(&server.address(), "/completion", &short);
    server.wait_metric("lmrs_queue_length", 1.0);
    drop(queued);
    server.wait_metric("lmrs_queue_length", 0.0);
    drop(running);
    server.wait_metric("lmrs_slots_busy", 0.0);

    // A stream whose client goes away stops too.
    let mut streaming = endless.clone();
    streaming["stream"] = json!(true);
    let mut stream = open_request(&server.address(), "/completion", &streaming);
    let mut first = [0u8; 64];
    let n = stream.read(&mut first).unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    server.wait_metric("lmrs_slots_busy", 1.0);
    drop(stream);
    server.wait_metric("lmrs_slots_busy", 0.0);
    assert_eq!(server.metric("lmrs_generations_cancelled_total"), 3.0);

    // And the slot serves the next request.
    let (status, done) = server.post("/completion", short);
    assert_eq!(status, 200, "{done}");
}

#[test]
fn api_key_cors_and_body_limit() {
    let server = Server::start(
        &tiny_model("key"),
        &[
            "--api-key",
            "sekret",
            "--max-body-bytes",
            "2048",
            "--cors",
            "http://editor.example",
        ],
    );
    // /health needs no key; everything else does.
    let unauthenticated = agent();
    let response = unauthenticated
        .get(format!("{}/health", server.base))
        .call()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    // So does the playground page (static; the page asks for the key).
    let response = unauthenticated
        .get(format!("{}/", server.base))
        .call()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let page = response.into_body().read_to_string().unwrap();
    assert!(page.contains("lmrs playground") && page.contains("/infill"));
    let response = unauthenticated
        .get(format!("{}/props", server.base))
        .call()
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    let body: Value =
        serde_json::from_str(&response.into_body().read_to_string().unwrap()).unwrap();
    assert_error(&body, 401, "Authorization: Bearer");
    let (status, _, body) = server.post_raw(
        "/completion",
        r#"{"prompt":"x","n_predict":1}"#,
        Some("wrong"),
    );
    assert_eq!(status, 401, "{body}");
    let (status, _, body) = server.post_raw("/completion", r#"{"prompt":"x","n_predict":1}"#, None);
    assert_eq!(status, 200, "{body}");

    // CORS headers for the allowed origin only.
    let response = server
        .agent
        .get(format!("{}/props", server.base))
        .header("Authorization", "Bearer sekret")
        .header("Origin", "http://editor.example")
        .call()
        .unwrap();
    assert_eq!(
        response
            .headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap()),
        Some("http://editor.example")
    );

    // Bodies over the limit: 413 as JSON.
    let big = json!({"prompt": "x".repeat(4096)}).to_string();
    let (status, _, body) = server.post_raw("/completion", &big, None);
    assert_eq!(status, 413, "{body}");
    assert_error(&serde_json::from_str(&body).unwrap(), 413, "too large");
}

#[test]
fn no_cors_headers_unless_asked() {
    let server = Server::start(&tiny_model("nocors"), &[]);
    let response = server
        .agent
        .get(format!("{}/props", server.base))
        .header("Origin", "http://evil.example")
        .call()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert!(response
        .headers()
        .get("access-control-allow-origin")
        .is_none());
}

#[test]
fn unsafe_or_impossible_options_are_refused_with_a_clear_error() {
    let model = tiny_model("refuse");
    let run = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_lmrs"))
            .arg("serve")
            .args(args)
            .env_remove("LMRS_API_KEY")
            .output()
            .unwrap();
        assert!(!output.status.success(), "{args:?} should fail");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let model_arg = model.to_str().unwrap();
    let stderr = run(&["--model", model_arg, "--host", "0.0.0.0", "--port", "0"]);
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0 without --api-key"),
        "{stderr}"
    );
    let stderr = run(&["--model", "/no/such/model.gguf", "--port", "0"]);
    assert!(
        stderr.contains("model file not found: /no/such/model.gguf"),
        "{stderr}"
    );
    let stderr = run(&["--model", model_arg, "--port", "0", "--slots", "0"]);
    assert!(stderr.contains("--slots 0 is out of range"), "{stderr}");

    // A file that is not a model: the server listens, fails to load, and exits with the reason.
    let junk = model.with_file_name("junk.gguf");
    std::fs::write(&junk, b"not a gguf file at all").unwrap();
    let stderr = run(&["--model", junk.to_str().unwrap(), "--port", "0"]);
    assert!(stderr.contains("cannot load model"), "{stderr}");

    // With a key a non-loopback address is allowed (bind to all interfaces on a free port).
    let server = Server::start(&model, &["--host", "0.0.0.0", "--api-key", "k"]);
    let (status, _) = server.get("/props");
    assert_eq!(status, 200);
}

/// The real Qwen2.5-Coder 0.5B: `/health` says loading first, then `/infill` completes a function.
#[test]
fn real_model_infill_completes_plausibly() {
    let model = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf");
    if !model.exists() {
        eprintln!("skipped: {} is absent", model.display());
        return;
    }
    let server = Server::spawn(&model, &[]);
    let (status, health) = server.get_json("/health");
    // The first answer may already be "ok" on a fast machine; it is never anything else.
    assert!(
        (status == 503 && health["status"] == "loading")
            || (status == 200 && health["status"] == "ok"),
        "{status} {health}"
    );
    server.wait_ready();
    let (status, done) = server.post(
        "/infill",
        json!({
            "input_prefix": "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
            "input_suffix": "\n\nprint(fibonacci(10))\n",
            "prompt": "    if n",
            "input_extra": [{"filename": "util.py", "text": "def square(x):\n    return x * x\n"}],
            "n_predict": 24,
            "temperature": 0,
            "n_indent": 4,
        }),
    );
    assert_eq!(status, 200, "{done}");
    let content = done["content"].as_str().unwrap();
    assert!(content.contains("return"), "{content:?}");
    assert!(
        content.contains('1') || content.contains('2'),
        "{content:?}"
    );
    println!(
        "real model /infill: {content:?} timings {}",
        done["timings"]
    );
}

/// llama.vim names the answer fields it reads (`response_fields`, paths such as
/// `timings/prompt_n`) and reads them from flat keys, as llama-server sends them: the model's
/// answer and one typed through from the suggestion cache both come back that way.
#[test]
fn infill_answers_only_the_response_fields_asked_for() {
    let server = Server::start(&tiny_model("response-fields"), &[]);
    let fields = json!([
        "content",
        "timings/prompt_n",
        "timings/predicted_n",
        "timings/not_a_field",
        "tokens_cached",
        "truncated",
    ]);
    let asked = |typed: &str| {
        let mut request = demo_infill(typed);
        request["response_fields"] = fields.clone();
        request
    };
    let keys = |answer: &Value| -> Vec<String> {
        let mut keys: Vec<String> = answer.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        keys
    };
    let expected_keys = [
        "content",
        "timings/predicted_n",
        "timings/prompt_n",
        "tokens_cached",
        "truncated",
    ];

    let (status, first) = server.post("/infill", asked(""));
    assert_eq!(status, 200, "{first}");
    assert_eq!(keys(&first), expected_keys, "{first}");
    assert!(
        first["timings/predicted_n"].as_u64().unwrap() > 0,
        "{first}"
    );
    let content = first["content"].as_str().unwrap().to_owned();
    assert!(
        !content.is_empty(),
        "the tiny model suggests something here"
    );

    // Typed through: answered from the cache, in the same shape.
    let typed: String = content.chars().take(2).collect();
    let (status, through) = server.post("/infill", asked(&typed));
    assert_eq!(status, 200, "{through}");
    assert_eq!(keys(&through), expected_keys, "{through}");
    assert_eq!(through["content"], content[typed.len()..], "{through}");
    assert_eq!(through["timings/predicted_n"], 0, "{through}");
    assert_eq!(server.metric("lmrs_infill_cache_hits_total"), 1.0);

    // llama.vim's background context requests ask for `[""]`: an empty object. No field named:
    // the whole answer.
    let mut nothing = demo_infill("0");
    nothing["response_fields"] = json!([""]);
    assert_eq!(server.post("/infill", nothing), (200, json!({})));
    let (status, whole) = server.post("/infill", demo_infill("1"));
    assert_eq!(status, 200, "{whole}");
    assert!(
        whole["timings"]["prompt_n"].is_u64() && whole["tokens"].is_array(),
        "{whole}"
    );
}
