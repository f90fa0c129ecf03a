//! The stdio transport in front of `tower-lsp-server`: no message content ends the session.
//!
//! `tower-lsp-server` stops reading after the first message it cannot decode, so every later
//! request of the editor would be lost. Here a thread reads stdin with `Content-Length` framing
//! and checks each message before `tower-lsp-server` sees it:
//!
//! - not UTF-8, or not JSON: answered with a parse error (-32700);
//! - JSON that is not one JSON-RPC 2.0 message (a batch array, `"jsonrpc":"1.0"`, an id that is
//!   neither an integer nor a string, a method that is not a string, a malformed response):
//!   answered with an invalid-request error (-32600);
//! - an escaped UTF-16 surrogate that is not half of a pair (`\ud800`, which editors send while a
//!   surrogate pair is being typed) is rewritten in place to `\ufffd` first, so the document text
//!   keeps its length in UTF-16 code units and the message decodes.
//!
//! Good messages go, re-framed but otherwise unchanged, to `tower-lsp-server` through an
//! in-memory pipe; its output comes back through a second pipe, is cut into whole messages and
//! goes to the one writer of stdout, which also writes the error answers, so two messages'
//! bytes never mix. Only lost framing (a bad or missing `Content-Length`, the end of input) ends
//! the session.
//!
//! Two lifecycle rules are kept here because `tower-lsp-server` cannot keep them:
//! - messages after an `initialize` request wait until it is answered. `tower-lsp-server` marks
//!   the server initialized only when the `initialize` handler returns and drops notifications
//!   that arrive before (an `initialized` sent in the same write as `initialize` was lost, and
//!   with it the model load);
//! - `exit` without a `shutdown` request before it ends the process with status 1, as the LSP
//!   specification says ([`Transport::finish`] returns an error).

use std::fmt;
use std::io::{BufRead, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, DuplexStream};
use tokio::sync::mpsc as tokio_mpsc;
use tracing::{debug, warn};

/// Bytes buffered in each in-memory pipe.
const PIPE_BYTES: usize = 1 << 16;
/// Longest header line accepted; a longer one means the framing is lost.
const MAX_HEADER_LINE: u64 = 8 << 10;
/// Largest message body read; a larger one is skipped and answered with an error.
const MAX_BODY: usize = 1 << 30;
/// Whole framed messages queued for stdout.
const OUTPUT_QUEUE: usize = 64;

/// JSON-RPC's parse error.
pub(super) const PARSE_ERROR: i64 = -32700;
/// JSON-RPC's invalid request.
pub(super) const INVALID_REQUEST: i64 = -32600;

/// How the client's input ended.
#[derive(Debug)]
enum Ending {
    /// An `exit` notification, with or without a `shutdown` request before it.
    Exit { after_shutdown: bool },
    /// The end of input between two messages.
    Eof,
    /// The framing is lost: no more messages can be found.
    Framing(String),
}

/// A request id as the server can answer it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Id {
    Int(i64),
    Str(String),
}

impl Id {
    fn to_json(id: Option<&Id>) -> serde_json::Value {
        match id {
            Some(Id::Int(n)) => (*n).into(),
            Some(Id::Str(s)) => s.as_str().into(),
            None => serde_json::Value::Null,
        }
    }
}

/// The `initialize` request whose answer the input waits for.
type Gate = Arc<Mutex<Option<(Id, mpsc::Sender<()>)>>>;

/// The running transport; [`Transport::finish`] ends it.
pub(crate) struct Transport {
    pump: tokio::task::JoinHandle<()>,
    output: tokio_mpsc::Sender<Option<Vec<u8>>>,
    writer: std::thread::JoinHandle<()>,
    ending: Arc<Mutex<Option<Ending>>>,
    /// Signalled when the client's input ends without `exit` (end of input, lost framing).
    input_ended: Arc<tokio::sync::Notify>,
}

/// The ends of the pipes that `tower-lsp-server` reads and writes.
pub(crate) struct ServerSide {
    pub(crate) input: DuplexStream,
    pub(crate) output: DuplexStream,
}

impl Transport {
    /// Starts reading stdin and writing stdout; call from inside the tokio runtime.
    pub(crate) fn stdio() -> std::io::Result<(Transport, ServerSide)> {
        let (input_ours, input_theirs) = tokio::io::duplex(PIPE_BYTES);
        let (output_theirs, output_ours) = tokio::io::duplex(PIPE_BYTES);
        let (output, queue) = tokio_mpsc::channel(OUTPUT_QUEUE);
        let writer = std::thread::Builder::new()
            .name("lmrs-stdout".into())
            .spawn(move || write_stdout(queue))?;
        let gate: Gate = Arc::default();
        let armed = Arc::new(AtomicBool::new(false));
        let ending = Arc::new(Mutex::new(None));
        let input_ended = Arc::new(tokio::sync::Notify::new());
        let reader = Reader {
            input_ended: input_ended.clone(),
            runtime: tokio::runtime::Handle::current(),
            server: input_ours,
            output: output.clone(),
            gate: gate.clone(),
            armed: armed.clone(),
            ending: ending.clone(),
        };
        std::thread::Builder::new()
            .name("lmrs-stdin".into())
            .spawn(move || reader.run())?;
        let pump = tokio::spawn(pump(output_ours, output.clone(), gate, armed));
        let transport = Transport {
            pump,
            output,
            writer,
            ending,
            input_ended,
        };
        let server = ServerSide {
            input: input_theirs,
            output: output_theirs,
        };
        Ok((transport, server))
    }

    /// Resolves when the client's input has ended without `exit` (the editor is gone): the caller
    /// then stops waiting for requests in flight, whose work is cancelled when they are dropped.
    pub(crate) async fn input_ended(&self) {
        self.input_ended.notified().await;
    }

    /// Writes out what the server wrote, then says how the session ended: an error for lost
    /// framing and for `exit` without `shutdown` (the process then exits with status 1).
    pub(crate) async fn finish(self) -> anyhow::Result<()> {
        let _ = self.pump.await;
        let _ = self.output.send(None).await;
        let writer = self.writer;
        let _ = tokio::task::spawn_blocking(move || writer.join()).await;
        let ending = self
            .ending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        match ending {
            Some(Ending::Exit {
                after_shutdown: false,
            }) => anyhow::bail!("the client sent `exit` without a `shutdown` request before it"),
            Some(Ending::Framing(why)) => {
                anyhow::bail!("lost the LSP message framing on stdin: {why}")
            }
            Some(Ending::Exit { .. } | Ending::Eof) | None => Ok(()),
        }
    }
}

/// Writes whole framed messages to stdout until told to stop (`None`).
fn write_stdout(mut queue: tokio_mpsc::Receiver<Option<Vec<u8>>>) {
    let stdout = std::io::stdout();
    let mut broken = false;
    while let Some(Some(frame)) = queue.blocking_recv() {
        if broken {
            continue; // keep draining, so that nobody waits on a full queue
        }
        let mut out = stdout.lock();
        let mut result = out.write_all(&frame);
        if result.is_ok() && queue.is_empty() {
            result = out.flush();
        }
        if let Err(e) = result {
            debug!("stdout closed: {e}");
            broken = true;
        }
    }
    let _ = stdout.lock().flush();
}

/// Cuts the server's output into whole messages for the stdout writer, and opens the gate when
/// the `initialize` request it waits for is answered.
async fn pump(
    from_server: DuplexStream,
    output: tokio_mpsc::Sender<Option<Vec<u8>>>,
    gate: Gate,
    armed: Arc<AtomicBool>,
) {
    let mut from_server = BufReader::new(from_server);
    let mut line = Vec::new();
    'messages: loop {
        let mut length = None;
        loop {
            line.clear();
            match from_server.read_until(b'\n', &mut line).await {
                Ok(0) | Err(_) => break 'messages,
                Ok(_) => {}
            }
            let text = String::from_utf8_lossy(&line);
            let text = text.trim();
            if text.is_empty() {
                if length.is_some() {
                    break;
                }
                continue;
            }
            if let Some((name, value)) = text.split_once(':') {
                if name.trim().eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse::<usize>().ok();
                }
            }
        }
        let Some(length) = length else { break };
        let header = format!("Content-Length: {length}\r\n\r\n");
        let mut frame = Vec::with_capacity(header.len() + length);
        frame.extend_from_slice(header.as_bytes());
        frame.resize(header.len() + length, 0);
        if from_server
            .read_exact(&mut frame[header.len()..])
            .await
            .is_err()
        {
            break;
        }
        if armed.load(Ordering::Acquire) {
            open_gate_if_answered(&frame[header.len()..], &gate, &armed);
        }
        if output.send(Some(frame)).await.is_err() {
            break;
        }
    }
    // Nothing more will be answered: never leave the input waiting.
    armed.store(false, Ordering::Release);
    gate.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
}

/// Opens the gate if `body` (a message from the server) answers the awaited `initialize`.
fn open_gate_if_answered(body: &[u8], gate: &Gate, armed: &AtomicBool) {
    #[derive(Deserialize)]
    struct Probe {
        #[serde(default, deserialize_with = "present")]
        id: Option<Shape>,
        #[serde(default, deserialize_with = "present")]
        method: Option<IgnoredAny>,
    }
    let Ok(Probe { id, method: None }) = serde_json::from_slice::<Probe>(body) else {
        return;
    };
    let answered = match id {
        Some(Shape::Int(n)) => Some(Id::Int(n)),
        Some(Shape::Str(s)) => Some(Id::Str(s)),
        _ => None,
    };
    let mut gate = gate
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if gate
        .as_ref()
        .is_some_and(|(id, _)| Some(id) == answered.as_ref())
    {
        if let Some((_, open)) = gate.take() {
            let _ = open.send(());
        }
        armed.store(false, Ordering::Release);
    }
}

/// The thread that reads the client's messages.
struct Reader {
    runtime: tokio::runtime::Handle,
    server: DuplexStream,
    output: tokio_mpsc::Sender<Option<Vec<u8>>>,
    gate: Gate,
    armed: Arc<AtomicBool>,
    ending: Arc<Mutex<Option<Ending>>>,
    input_ended: Arc<tokio::sync::Notify>,
}

impl Reader {
    fn run(mut self) {
        let stdin = std::io::stdin();
        let mut input = stdin.lock();
        let mut shutdown_requested = false;
        let mut line = Vec::new();
        let ending = loop {
            let body = match read_frame(&mut input, &mut line) {
                Ok(Frame::Body(body)) => body,
                Ok(Frame::TooLarge(length)) => {
                    let reason = format!("message of {length} bytes is too large");
                    self.reject(&Rejection::new(INVALID_REQUEST, None, reason), &[]);
                    continue;
                }
                Ok(Frame::End) => break Ending::Eof,
                Err(why) => break Ending::Framing(why),
            };
            let message = match check(body) {
                Ok(message) => message,
                Err((rejection, body)) => {
                    self.reject(&rejection, &body);
                    continue;
                }
            };
            if message.repaired > 0 {
                debug!(
                    count = message.repaired,
                    "replaced lone UTF-16 surrogate escapes with U+FFFD"
                );
            }
            let request = message.id.is_some();
            match message.method.as_deref() {
                Some("shutdown") if request => shutdown_requested = true,
                Some("exit") => {
                    // Recorded before the server sees `exit` and ends the session.
                    self.set_ending(Ending::Exit {
                        after_shutdown: shutdown_requested,
                    });
                    let _ = self.forward(&message.body);
                    return;
                }
                _ => {}
            }
            let waits = match (&message.method, &message.id) {
                (Some(m), Some(id)) if m == "initialize" => Some(self.arm(id.clone())),
                _ => None,
            };
            if self.forward(&message.body).is_err() {
                break Ending::Eof; // the server is gone
            }
            if let Some(answered) = waits {
                let _ = answered.recv();
            }
        };
        if let Ending::Framing(why) = &ending {
            warn!("lost the LSP message framing on stdin: {why}");
        }
        self.set_ending(ending);
        self.input_ended.notify_one();
        // Dropping `self.server` ends the server's input.
    }

    fn set_ending(&self, ending: Ending) {
        *self
            .ending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(ending);
    }

    /// Makes the pump signal when the server answers request `id`.
    fn arm(&self, id: Id) -> mpsc::Receiver<()> {
        let (open, answered) = mpsc::channel();
        *self
            .gate
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((id, open));
        self.armed.store(true, Ordering::Release);
        answered
    }

    /// Hands one message to the server, framed.
    fn forward(&mut self, body: &[u8]) -> std::io::Result<()> {
        let header = format!("Content-Length: {}\r\n\r\n", body.len());
        let server = &mut self.server;
        self.runtime.block_on(async {
            server.write_all(header.as_bytes()).await?;
            server.write_all(body).await
        })
    }

    /// Logs a message that cannot be decoded and answers it.
    fn reject(&self, rejection: &Rejection, body: &[u8]) {
        warn!(
            code = rejection.code,
            id = %Id::to_json(rejection.id.as_ref()),
            bytes = body.len(),
            "cannot decode a message from the client: {}",
            rejection.reason
        );
        debug!(
            "the message began with {:?}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        );
        let answer = serde_json::json!({
            "jsonrpc": "2.0",
            "id": Id::to_json(rejection.id.as_ref()),
            "error": {"code": rejection.code, "message": rejection.message()},
        });
        let answer = answer.to_string();
        let frame = format!("Content-Length: {}\r\n\r\n{answer}", answer.len());
        let _ = self.output.blocking_send(Some(frame.into_bytes()));
    }
}

/// One read from the input.
pub(super) enum Frame {
    Body(Vec<u8>),
    /// A body over [`MAX_BODY`], skipped.
    TooLarge(usize),
    /// The end of input before any header of a next message.
    End,
}

/// Reads one `Content-Length`-framed message. `Err` says why the framing is lost.
pub(super) fn read_frame(input: &mut impl BufRead, line: &mut Vec<u8>) -> Result<Frame, String> {
    let mut length = None;
    let mut headers = 0;
    loop {
        line.clear();
        let n = input
            .by_ref()
            .take(MAX_HEADER_LINE)
            .read_until(b'\n', line)
            .map_err(|e| format!("reading a header: {e}"))?;
        if n == 0 {
            return match headers {
                0 => Ok(Frame::End),
                _ => Err("the input ended inside a message's headers".into()),
            };
        }
        if line.last() != Some(&b'\n') {
            return Err(match n as u64 {
                MAX_HEADER_LINE => "a header line is too long".into(),
                _ => "the input ended inside a message's headers".into(),
            });
        }
        let text = std::str::from_utf8(line)
            .map_err(|_| "a header line is not UTF-8".to_owned())?
            .trim();
        if text.is_empty() {
            if headers == 0 {
                continue; // a stray line break between messages
            }
            break;
        }
        headers += 1;
        let Some((name, value)) = text.split_once(':') else {
            return Err(format!("a header line has no `:` ({} bytes)", text.len()));
        };
        if name.trim().eq_ignore_ascii_case("content-length") {
            let value = value.trim();
            length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| format!("bad Content-Length {value:?}"))?,
            );
        }
    }
    let length = length.ok_or("a message has no Content-Length header")?;
    if length > MAX_BODY {
        let skipped = std::io::copy(&mut input.take(length as u64), &mut std::io::sink())
            .map_err(|e| format!("reading a message: {e}"))?;
        if skipped < length as u64 {
            return Err(format!(
                "the input ended inside a message ({skipped} of {length} bytes)"
            ));
        }
        return Ok(Frame::TooLarge(length));
    }
    let mut body = Vec::with_capacity(length.min(PIPE_BYTES * 16));
    input
        .take(length as u64)
        .read_to_end(&mut body)
        .map_err(|e| format!("reading a message: {e}"))?;
    if body.len() < length {
        return Err(format!(
            "the input ended inside a message ({} of {length} bytes)",
            body.len()
        ));
    }
    Ok(Frame::Body(body))
}

/// A message that may go to the server.
#[derive(Debug)]
pub(super) struct Checked {
    pub(super) body: Vec<u8>,
    pub(super) method: Option<String>,
    /// Set for requests (and responses).
    id: Option<Id>,
    /// Lone surrogate escapes replaced.
    pub(super) repaired: usize,
}

/// Why a message is answered with an error instead of going to the server.
#[derive(Debug)]
pub(super) struct Rejection {
    pub(super) code: i64,
    id: Option<Id>,
    reason: String,
}

impl Rejection {
    fn new(code: i64, id: Option<Id>, reason: impl Into<String>) -> Self {
        Self {
            code,
            id,
            reason: reason.into(),
        }
    }

    fn message(&self) -> String {
        let kind = match self.code {
            PARSE_ERROR => "Parse error",
            _ => "Invalid request",
        };
        format!("{kind}: {}", self.reason)
    }
}

/// Checks one message body and repairs its lone surrogate escapes; the rejection comes with the
/// body (for the log).
pub(super) fn check(mut body: Vec<u8>) -> Result<Checked, (Rejection, Vec<u8>)> {
    let escapes = match std::str::from_utf8(&body) {
        // Most messages have no `\u` escape at all: one fast search skips the repair.
        Ok(text) => text.contains("\\u"),
        Err(e) => {
            let id = recover_id(String::from_utf8_lossy(&body).as_bytes());
            let reason = format!("not UTF-8 (bad byte at offset {})", e.valid_up_to());
            return Err((Rejection::new(PARSE_ERROR, id, reason), body));
        }
    };
    let repaired = if escapes {
        repair_lone_surrogates(&mut body)
    } else {
        0
    };
    match classify(&body) {
        Ok((method, id)) => Ok(Checked {
            body,
            method,
            id,
            repaired,
        }),
        Err(rejection) => Err((rejection, body)),
    }
}

/// The method and id of a valid message, or why it is not one.
#[allow(clippy::type_complexity)]
fn classify(body: &[u8]) -> Result<(Option<String>, Option<Id>), Rejection> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        let reason = match (first, is_json(body)) {
            (_, Err(e)) => return Err(Rejection::new(PARSE_ERROR, None, e)),
            (Some(b'['), Ok(())) => "batch requests are not supported",
            _ => "not a JSON object",
        };
        return Err(Rejection::new(INVALID_REQUEST, None, reason));
    }
    let envelope = match serde_json::from_slice::<Envelope>(body) {
        Ok(envelope) => envelope,
        Err(e) if e.is_syntax() || e.is_eof() => {
            return Err(Rejection::new(PARSE_ERROR, None, e.to_string()))
        }
        Err(e) => {
            return Err(match is_json(body) {
                Err(syntax) => Rejection::new(PARSE_ERROR, None, syntax),
                Ok(()) => Rejection::new(INVALID_REQUEST, recover_id(body), e.to_string()),
            })
        }
    };
    let id = match &envelope.id {
        Some(Shape::Int(n)) => Some(Id::Int(*n)),
        Some(Shape::Str(s)) => Some(Id::Str(s.clone())),
        _ => None,
    };
    let invalid = |reason: &str| Err(Rejection::new(INVALID_REQUEST, id.clone(), reason));
    if !matches!(&envelope.jsonrpc, Some(Shape::Str(v)) if v == "2.0") {
        return invalid("\"jsonrpc\" must be \"2.0\"");
    }
    match envelope.method {
        Some(Shape::Str(_)) if envelope.id.is_some() && id.is_none() => {
            invalid("\"id\" must be an integer or a string")
        }
        Some(Shape::Str(method)) => {
            if envelope.result || envelope.error.is_some() {
                return invalid("a request has no \"result\" or \"error\"");
            }
            Ok((Some(method), id))
        }
        Some(_) => invalid("\"method\" must be a string"),
        None => {
            // A response to one of the server's requests.
            if id.is_none() && !matches!(envelope.id, Some(Shape::Null)) {
                return invalid("a message needs a \"method\" or an \"id\"");
            }
            match (envelope.result, &envelope.error) {
                (true, None) => Ok((None, id)),
                (false, Some(ErrorShape { valid: true })) => Ok((None, id)),
                (false, Some(_)) => invalid(
                    "\"error\" must be an object with an integer \"code\" and a string \"message\"",
                ),
                _ => invalid("a response has either a \"result\" or an \"error\""),
            }
        }
    }
}

/// Whether `body` is JSON at all (`Err`: the syntax error).
fn is_json(body: &[u8]) -> Result<(), String> {
    serde_json::from_slice::<Valid>(body)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// The id of a message that is JSON but not a valid message, if it is a usable one.
fn recover_id(body: &[u8]) -> Option<Id> {
    #[derive(Deserialize)]
    struct Probe {
        #[serde(default, deserialize_with = "present")]
        id: Option<Shape>,
    }
    match serde_json::from_slice::<Probe>(body).ok()?.id? {
        Shape::Int(n) => Some(Id::Int(n)),
        Shape::Str(s) => Some(Id::Str(s)),
        _ => None,
    }
}

/// Replaces, in place, each `\uXXXX` escape of a UTF-16 surrogate that is not half of a
/// high-then-low pair with `\ufffd` (the same length); returns how many. Escaped backslashes are
/// skipped whole, so the `\u` of `\\ud800` (a backslash, then `ud800`) is left alone.
fn repair_lone_surrogates(body: &mut [u8]) -> usize {
    fn surrogate_at(body: &[u8], at: usize) -> Option<u16> {
        if body.get(at..at + 2)? != b"\\u" {
            return None;
        }
        let hex = std::str::from_utf8(body.get(at + 2..at + 6)?).ok()?;
        let unit = u16::from_str_radix(hex, 16).ok()?;
        (0xD800..=0xDFFF).contains(&unit).then_some(unit)
    }
    let mut repaired = 0;
    let mut at = 0;
    // `at` can pass the end by one (a backslash as the last byte skips two), hence `get`.
    while let Some(offset) = body
        .get(at..)
        .and_then(|rest| rest.iter().position(|&b| b == b'\\'))
    {
        at += offset;
        match surrogate_at(body, at) {
            Some(0xD800..=0xDBFF)
                if matches!(surrogate_at(body, at + 6), Some(0xDC00..=0xDFFF)) =>
            {
                at += 12; // a valid pair
            }
            Some(_) => {
                body[at + 2..at + 6].copy_from_slice(b"fffd");
                repaired += 1;
                at += 6;
            }
            None => at += 2, // any other escape, `\\` included
        }
    }
    repaired
}

/// Deserializes a field that is present (even as `null`) to `Some`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// The top level of a message: the fields that decide what it is. Every other value is read in
/// full ([`Valid`]) as `tower-lsp-server` will read it, so what passes here decodes there, and a
/// repeated field is an error as it is there.
struct Envelope {
    jsonrpc: Option<Shape>,
    method: Option<Shape>,
    id: Option<Shape>,
    result: bool,
    error: Option<ErrorShape>,
}

impl<'de> Deserialize<'de> for Envelope {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct EnvelopeVisitor;
        impl<'de> Visitor<'de> for EnvelopeVisitor {
            type Value = Envelope;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON-RPC message")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Envelope, A::Error> {
                let mut envelope = Envelope {
                    jsonrpc: None,
                    method: None,
                    id: None,
                    result: false,
                    error: None,
                };
                let mut params = false;
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    let duplicate = match key.as_ref() {
                        "jsonrpc" => envelope.jsonrpc.replace(map.next_value()?).is_some(),
                        "method" => envelope.method.replace(map.next_value()?).is_some(),
                        "id" => envelope.id.replace(map.next_value()?).is_some(),
                        "error" => envelope.error.replace(map.next_value()?).is_some(),
                        "result" => {
                            map.next_value::<Valid>()?;
                            std::mem::replace(&mut envelope.result, true)
                        }
                        "params" => {
                            map.next_value::<Valid>()?;
                            std::mem::replace(&mut params, true)
                        }
                        _ => {
                            map.next_value::<Valid>()?;
                            false
                        }
                    };
                    if duplicate {
                        return Err(de::Error::custom(format_args!("duplicate field `{key}`")));
                    }
                }
                Ok(envelope)
            }
        }
        d.deserialize_map(EnvelopeVisitor)
    }
}

/// A response's `error`; `valid` when it has an integer `code` and a string `message`.
struct ErrorShape {
    valid: bool,
}

impl<'de> Deserialize<'de> for ErrorShape {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ErrorVisitor;
        impl<'de> Visitor<'de> for ErrorVisitor {
            type Value = ErrorShape;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an error object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ErrorShape, A::Error> {
                let (mut code, mut message, mut data) = (None, None, false);
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    let duplicate = match key.as_ref() {
                        "code" => code.replace(map.next_value::<Shape>()?).is_some(),
                        "message" => message.replace(map.next_value::<Shape>()?).is_some(),
                        "data" => {
                            map.next_value::<Valid>()?;
                            std::mem::replace(&mut data, true)
                        }
                        _ => {
                            map.next_value::<Valid>()?;
                            false
                        }
                    };
                    if duplicate {
                        return Err(de::Error::custom(format_args!("duplicate field `{key}`")));
                    }
                }
                let valid =
                    matches!(code, Some(Shape::Int(_))) && matches!(message, Some(Shape::Str(_)));
                Ok(ErrorShape { valid })
            }
            fn visit_unit<E>(self) -> Result<ErrorShape, E> {
                Ok(ErrorShape { valid: false })
            }
        }
        // Anything but an object is read in full and marked invalid.
        d.deserialize_any(ShapeOr(ErrorVisitor))
    }
}

/// Runs `V` on maps and reads any other value in full as not valid.
struct ShapeOr<V>(V);

impl<'de, V: Visitor<'de, Value = ErrorShape>> Visitor<'de> for ShapeOr<V> {
    type Value = ErrorShape;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.0.expecting(f)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ErrorShape, A::Error> {
        self.0.visit_map(map)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<ErrorShape, A::Error> {
        ValidVisitor.visit_seq(seq)?;
        Ok(ErrorShape { valid: false })
    }
    fn visit_bool<E>(self, _: bool) -> Result<ErrorShape, E> {
        Ok(ErrorShape { valid: false })
    }
    fn visit_i64<E>(self, _: i64) -> Result<ErrorShape, E> {
        Ok(ErrorShape { valid: false })
    }
    fn visit_u64<E>(self, _: u64) -> Result<ErrorShape, E> {
        Ok(ErrorShape { valid: false })
    }
    fn visit_f64<E>(self, _: f64) -> Result<ErrorShape, E> {
        Ok(ErrorShape { valid: false })
    }
    fn visit_str<E>(self, _: &str) -> Result<ErrorShape, E> {
        Ok(ErrorShape { valid: false })
    }
    fn visit_unit<E>(self) -> Result<ErrorShape, E> {
        Ok(ErrorShape { valid: false })
    }
}

/// What kind of JSON value a field holds (strings and integers kept).
#[derive(Debug)]
enum Shape {
    Null,
    Int(i64),
    Str(String),
    /// Anything else: a float, an integer beyond `i64`, a boolean, an object, an array.
    Other,
}

impl<'de> Deserialize<'de> for Shape {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ShapeVisitor;
        impl<'de> Visitor<'de> for ShapeVisitor {
            type Value = Shape;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_bool<E>(self, _: bool) -> Result<Shape, E> {
                Ok(Shape::Other)
            }
            fn visit_i64<E>(self, n: i64) -> Result<Shape, E> {
                Ok(Shape::Int(n))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Shape, E> {
                Ok(i64::try_from(n).map_or(Shape::Other, Shape::Int))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Shape, E> {
                Ok(Shape::Other)
            }
            fn visit_str<E>(self, s: &str) -> Result<Shape, E> {
                Ok(Shape::Str(s.to_owned()))
            }
            fn visit_unit<E>(self) -> Result<Shape, E> {
                Ok(Shape::Null)
            }
            fn visit_none<E>(self) -> Result<Shape, E> {
                Ok(Shape::Null)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Shape, A::Error> {
                ValidVisitor.visit_map(map)?;
                Ok(Shape::Other)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Shape, A::Error> {
                ValidVisitor.visit_seq(seq)?;
                Ok(Shape::Other)
            }
        }
        d.deserialize_any(ShapeVisitor)
    }
}

/// Any JSON value, read in full (strings unescaped, numbers in range) but kept nowhere.
struct Valid;

struct ValidVisitor;

impl<'de> Deserialize<'de> for Valid {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValidVisitor)
    }
}

impl<'de> Visitor<'de> for ValidVisitor {
    type Value = Valid;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Valid, E> {
        Ok(Valid)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Valid, E> {
        Ok(Valid)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Valid, E> {
        Ok(Valid)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Valid, E> {
        Ok(Valid)
    }
    fn visit_str<E>(self, _: &str) -> Result<Valid, E> {
        Ok(Valid)
    }
    fn visit_unit<E>(self) -> Result<Valid, E> {
        Ok(Valid)
    }
    fn visit_none<E>(self) -> Result<Valid, E> {
        Ok(Valid)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Valid, A::Error> {
        while map.next_entry::<Valid, Valid>()?.is_some() {}
        Ok(Valid)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Valid, A::Error> {
        while seq.next_element::<Valid>()?.is_some() {}
        Ok(Valid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code_and_id(body: &str) -> Result<(), (i64, Option<Id>)> {
        check(body.as_bytes().to_vec())
            .map(drop)
            .map_err(|(r, _)| (r.code, r.id))
    }

    #[test]
    fn accepts_requests_notifications_and_responses() {
        for ok in [
            r#"{"jsonrpc":"2.0","id":1,"method":"shutdown","params":null}"#,
            r#"{"jsonrpc":"2.0","id":"a","method":"x","params":{"a":[1,2.5,"\n"]}}"#,
            r#"{"jsonrpc":"2.0","method":"initialized","params":{}}"#,
            r#"{"jsonrpc":"2.0","id":3,"result":null}"#,
            r#"{"jsonrpc":"2.0","id":null,"error":{"code":-1,"message":"m","data":[]}}"#,
            r#"  {"method":"exit","jsonrpc":"2.0","extra":true}"#,
        ] {
            assert_eq!(code_and_id(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn rejects_what_cannot_be_decoded_with_the_right_code_and_id() {
        let int = |n| Some(Id::Int(n));
        for (body, code, id) in [
            ("{not json", PARSE_ERROR, None),
            ("", PARSE_ERROR, None),
            (
                r#"{"jsonrpc":"2.0","id":1.5,"method":"x"}"#,
                INVALID_REQUEST,
                None,
            ),
            (
                r#"{"jsonrpc":"2.0","id":true,"method":"x"}"#,
                INVALID_REQUEST,
                None,
            ),
            (
                r#"{"jsonrpc":"2.0","id":null,"method":"x"}"#,
                INVALID_REQUEST,
                None,
            ),
            (
                r#"[{"jsonrpc":"2.0","id":1,"method":"x"}]"#,
                INVALID_REQUEST,
                None,
            ),
            (
                r#"{"jsonrpc":"1.0","id":7,"method":"x"}"#,
                INVALID_REQUEST,
                int(7),
            ),
            (
                r#"{"jsonrpc":"2.0","id":7,"method":3}"#,
                INVALID_REQUEST,
                int(7),
            ),
            (
                r#"{"jsonrpc":"2.0","id":7,"id":8,"method":"x"}"#,
                INVALID_REQUEST,
                None,
            ),
            (
                r#"{"jsonrpc":"2.0","id":7,"method":"x","p":1e999}"#,
                PARSE_ERROR,
                None,
            ),
            (
                r#"{"jsonrpc":"2.0","id":7,"error":{"code":"x"}}"#,
                INVALID_REQUEST,
                int(7),
            ),
            (r#"{"jsonrpc":"2.0","id":7}"#, INVALID_REQUEST, int(7)),
            (
                r#"{"jsonrpc":"2.0","id":7,"method":"x","p":"\x"}"#,
                PARSE_ERROR,
                None,
            ),
            ("42", INVALID_REQUEST, None),
        ] {
            assert_eq!(code_and_id(body), Err((code, id)), "{body}");
        }
        let mut bytes = br#"{"jsonrpc":"2.0","id":9,"method":"x","params":"#.to_vec();
        bytes.extend_from_slice(b"\"\xff\"}");
        let (rejection, _) = check(bytes).unwrap_err();
        assert_eq!(
            (rejection.code, rejection.id),
            (PARSE_ERROR, Some(Id::Int(9)))
        );
    }

    #[test]
    fn a_backslash_at_the_very_end_is_not_read_past() {
        // Found by the message_layer fuzz target: the repair ran one byte past the end of a body
        // that has a `\u` escape and ends in a backslash, and the reader thread panicked.
        let mut body = br#"{"text":"\ud800x\"#.to_vec();
        assert_eq!(repair_lone_surrogates(&mut body), 1);
        assert_eq!(body, br#"{"text":"\ufffdx\"#.to_vec());
        let mut body = b"\\".to_vec();
        assert_eq!(repair_lone_surrogates(&mut body), 0);
        let mut body = b"\\u".to_vec();
        assert_eq!(repair_lone_surrogates(&mut body), 0);
    }

    #[test]
    fn repairs_only_lone_surrogate_escapes() {
        let repair = |s: &str| {
            let mut b = s.as_bytes().to_vec();
            let n = repair_lone_surrogates(&mut b);
            (String::from_utf8(b).unwrap(), n)
        };
        assert_eq!(repair(r#""a\ud800b""#), (r#""a\ufffdb""#.into(), 1));
        assert_eq!(repair(r#""\uDC00\uD800""#), (r#""\ufffd\ufffd""#.into(), 2));
        assert_eq!(repair(r#""\ud83d\ude00""#), (r#""\ud83d\ude00""#.into(), 0));
        assert_eq!(repair(r#""\ud83d\u0041""#), (r#""\ufffd\u0041""#.into(), 1));
        assert_eq!(
            repair(r#""\ud83d\ud83d\ude00""#),
            (r#""\ufffd\ud83d\ude00""#.into(), 1)
        );
        assert_eq!(repair(r#""\\ud800""#), (r#""\\ud800""#.into(), 0));
        assert_eq!(repair(r#""\\\ud800""#), (r#""\\\ufffd""#.into(), 1));
        assert_eq!(repair(r#""\ud80"#), (r#""\ud80"#.into(), 0));
        let body = r#"{"jsonrpc":"2.0","method":"m","params":{"text":"x\ud800y"}}"#;
        let checked = check(body.as_bytes().to_vec()).unwrap();
        assert_eq!(checked.repaired, 1);
        let v: serde_json::Value = serde_json::from_slice(&checked.body).unwrap();
        assert_eq!(v["params"]["text"], "x\u{fffd}y");
    }
}
