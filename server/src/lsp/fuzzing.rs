//! The message and document layer as one function of arbitrary bytes, for `cargo fuzz`
//! (`fuzz/fuzz_targets/message_layer.rs`) and for a short randomized run in the tests.
//!
//! [`message_layer`] does what the server does with its input, minus the model: cut the bytes
//! into `Content-Length` frames ([`transport`]'s reader), check and repair each body (the
//! transport's decoder), hand `didOpen` and `didChange` to a [`DocumentStore`] with the position
//! encoding picked by the first byte, and convert positions both ways. It asserts what must hold
//! for any input, so a violation is a crash the fuzzer reports:
//! - nothing panics, and framing stops only at the end of input or with a reason;
//! - an accepted body is UTF-8 JSON with a string method or a response shape, and a repaired
//!   body keeps its length; a rejected one gets the parse-error or invalid-request code;
//! - every position maps into the document, and mapping a character index to a position and back
//!   returns it (or, inside a `\r\n`, the line's end);
//! - a document's text equals what the edits make of it on a `String` (a model of the rope).

use std::io::BufReader;

use ropey::Rope;
use tower_lsp_server::gen_lsp_types::{
    DidChangeTextDocumentParams, DidOpenTextDocumentParams, Position,
};

use super::documents::{ChangeOutcome, DocumentStore, Edit};
use super::position::{char_to_position, position_to_char, PositionEncoding};
use super::transport::{self, Frame, INVALID_REQUEST, PARSE_ERROR};

/// What [`message_layer`] saw, so tests can tell that an input reached the checks it meant to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Messages accepted by the transport's checks.
    pub accepted: usize,
    /// Messages answered with an error.
    pub rejected: usize,
    /// Documents opened or changed whose text was compared with the String model.
    pub compared_with_model: usize,
}

/// Frames, checks and applies `data` as the server would; panics when an invariant breaks.
pub fn message_layer(data: &[u8]) -> Summary {
    let mut summary = Summary::default();
    let Some((&first, stream)) = data.split_first() else {
        return summary;
    };
    let enc = match first % 3 {
        0 => PositionEncoding::Utf16,
        1 => PositionEncoding::Utf8,
        _ => PositionEncoding::Utf32,
    };
    let mut input = BufReader::new(stream);
    let mut line = Vec::new();
    let mut store = DocumentStore::default();
    // A plain-String model of each document, for documents whose edits arrive in order.
    let mut model: std::collections::HashMap<String, String> = Default::default();
    for _ in 0..10_000 {
        let body = match transport::read_frame(&mut input, &mut line) {
            Ok(Frame::Body(body)) => body,
            Ok(Frame::TooLarge(_)) => continue,
            Ok(Frame::End) => break,
            Err(reason) => {
                assert!(!reason.is_empty());
                break;
            }
        };
        let length = body.len();
        let message = match transport::check(body) {
            Ok(message) => message,
            Err((rejection, _)) => {
                summary.rejected += 1;
                assert!(
                    rejection.code == PARSE_ERROR || rejection.code == INVALID_REQUEST,
                    "code {}",
                    rejection.code
                );
                continue;
            }
        };
        summary.accepted += 1;
        assert_eq!(message.body.len(), length, "a repair changed the length");
        let value: serde_json::Value = serde_json::from_slice(&message.body)
            .expect("an accepted message is JSON after its repair");
        let Some(params) = value.get("params").cloned() else {
            continue;
        };
        match message.method.as_deref() {
            Some("textDocument/didOpen") => {
                let Ok(open) = serde_json::from_value::<DidOpenTextDocumentParams>(params) else {
                    continue;
                };
                let d = open.text_document;
                let language: String = d.language_id.into();
                store.open(d.uri.0.as_str(), &language, d.version, &d.text);
                model.insert(d.uri.0.as_str().to_owned(), d.text.clone());
                let model_text = model.get(d.uri.0.as_str());
                summary.compared_with_model += usize::from(model_text.is_some());
                check_document(&store, d.uri.0.as_str(), enc, model_text);
            }
            Some("textDocument/didChange") => {
                let Ok(change) = serde_json::from_value::<DidChangeTextDocumentParams>(params)
                else {
                    continue;
                };
                let uri = change.text_document.text_document_identifier.uri;
                let edits: Vec<Edit> = change.content_changes.into_iter().map(Edit::from).collect();
                let before = store
                    .get(uri.0.as_str())
                    .filter(|d| d.pending_changes() == 0)
                    .map(|d| d.rope.to_string());
                let version = change.text_document.version;
                let outcome = store.change(uri.0.as_str(), version, edits.clone(), enc);
                let in_order =
                    outcome == ChangeOutcome::Applied && pending_is_empty(&store, uri.0.as_str());
                match before {
                    // Applied alone, in order: the model applies the same edits to a String.
                    Some(before) if in_order => {
                        let mut text = before;
                        for edit in &edits {
                            apply_to_string(&mut text, edit, enc);
                        }
                        model.insert(uri.0.as_str().to_owned(), text);
                    }
                    _ => {
                        model.remove(uri.0.as_str());
                    }
                }
                let model_text = model.get(uri.0.as_str());
                summary.compared_with_model += usize::from(model_text.is_some());
                check_document(&store, uri.0.as_str(), enc, model_text);
            }
            _ => {}
        }
    }
    summary
}

fn pending_is_empty(store: &DocumentStore, uri: &str) -> bool {
    store.get(uri).is_some_and(|d| d.pending_changes() == 0)
}

/// Position conversion invariants on a document, and its text against the model's.
fn check_document(store: &DocumentStore, uri: &str, enc: PositionEncoding, model: Option<&String>) {
    let Some(doc) = store.get(uri) else {
        return;
    };
    let rope = &doc.rope;
    if let Some(text) = model {
        assert_eq!(
            &rope.to_string(),
            text,
            "the rope and the String model differ"
        );
    }
    let len = rope.len_chars();
    // Every index of short documents, a spread of them in long ones.
    let step = (len / 512).max(1);
    for ch in (0..=len).step_by(step).chain([len]) {
        let position = char_to_position(rope, ch, enc);
        let back = position_to_char(rope, position, enc);
        assert!(back <= ch, "{ch} → {position:?} → {back}");
        if back < ch {
            let between = rope.slice(back..ch);
            assert!(
                between.chars().all(|c| c == '\r' || c == '\n') && between.len_chars() == 1,
                "{ch} → {position:?} → {back}: {between:?} between"
            );
        }
    }
    for position in [
        Position::new(0, u32::MAX),
        Position::new(u32::MAX, 0),
        Position::new(rope.len_lines() as u32, 1),
    ] {
        assert!(position_to_char(rope, position, enc) <= len);
    }
}

/// The model of an edit: the same clamped, normalised range, on a String.
fn apply_to_string(text: &mut String, edit: &Edit, enc: PositionEncoding) {
    let Some(range) = edit.range else {
        *text = edit.text.clone();
        return;
    };
    // Positions are resolved on the text as it is, like the rope's; char indices → byte offsets.
    let rope = Rope::from_str(text);
    let a = position_to_char(&rope, range.start, enc);
    let b = position_to_char(&rope, range.end, enc);
    let (start, end) = (a.min(b), a.max(b));
    let byte = |ch: usize| text.char_indices().nth(ch).map_or(text.len(), |(i, _)| i);
    let (start, end) = (byte(start), byte(end));
    text.replace_range(start..end, &edit.text);
}

fn frame(body: &str) -> Vec<u8> {
    format!("Content-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
}

/// Framed messages for seeds: an open, edits in every shape and order, hostile bodies.
pub fn seed_messages() -> Vec<Vec<u8>> {
    let open = r#"{"jsonrpc":"2.0","method":"textDocument/didOpen","params":{"textDocument":{"uri":"file:///a.py","languageId":"python","version":1,"text":"def f(x):\r\n    return x 😀 é\n\tpass\r"}}}"#;
    let change = |version: i32, range: &str, text: &str| {
        format!(
            r#"{{"jsonrpc":"2.0","method":"textDocument/didChange","params":{{"textDocument":{{"uri":"file:///a.py","version":{version}}},"contentChanges":[{{"range":{range},"text":{text}}}]}}}}"#
        )
    };
    let r = |l0: u32, c0: u32, l1: u32, c1: u32| {
        format!(
            r#"{{"start":{{"line":{l0},"character":{c0}}},"end":{{"line":{l1},"character":{c1}}}}}"#
        )
    };
    vec![
        frame(open),
        frame(&change(2, &r(0, 4, 0, 5), r#""g""#)),
        frame(&change(3, &r(1, 14, 1, 16), r#""\ud83d\ude00x""#)),
        frame(&change(4, &r(1, 15, 0, 2), r#""\ud800""#)),
        frame(&change(6, &r(9, 9, 99, 99), r#""\r\n""#)),
        frame(&change(5, &r(0, 0, 0, 0), r#""é\r""#)),
        frame(r#"{"jsonrpc":"2.0","id":1.5,"method":"x"}"#),
        frame(r#"[{"jsonrpc":"2.0"}]"#),
        frame("{\"jsonrpc\":\"2.0\",\"method\":\"\u{0}\"}"),
        b"Content-Length: 3\r\n\r\n\xff\xfe{".to_vec(),
    ]
}

/// Seed inputs for the fuzzer: the seed messages together, once per position encoding, and
/// each alone after an open.
pub fn seed_inputs() -> Vec<Vec<u8>> {
    let messages = seed_messages();
    let mut inputs: Vec<Vec<u8>> = (0..3u8)
        .map(|first| std::iter::once(first).chain(messages.concat()).collect())
        .collect();
    for message in &messages[1..] {
        inputs.push([&[0u8][..], &messages[0], message].concat());
    }
    inputs
}

#[cfg(test)]
mod tests {
    use super::*;
    use lmrs_fixtures::SplitMix64;

    #[test]
    fn the_seed_messages_keep_the_invariants() {
        let inputs = seed_inputs();
        for input in &inputs[..3] {
            // All seed messages in one stream: the open and versions 2-4 compared with the model
            // (6 comes before 5 and waits for it; 5 then applies both), four hostile bodies.
            let summary = message_layer(input);
            assert_eq!(
                summary,
                Summary {
                    accepted: 6,
                    rejected: 4,
                    compared_with_model: 4
                }
            );
        }
        for input in &inputs[3..] {
            message_layer(input);
        }
    }

    #[test]
    fn random_mutations_of_the_seeds_keep_the_invariants() {
        // A short stand-in for the fuzzer: byte flips, insertions and cuts of the seed stream.
        let mut rng = SplitMix64::new(14);
        let seed = seed_inputs().swap_remove(0);
        let mut compared = 0;
        let alphabet = b"{}[]\":,\\u0123456789abcdefDd\r\n \x80\xff";
        for _ in 0..3000 {
            let mut data = seed.clone();
            for _ in 0..1 + rng.next_u64() % 8 {
                let at = (rng.next_u64() as usize) % data.len();
                let byte = alphabet[(rng.next_u64() as usize) % alphabet.len()];
                match rng.next_u64() % 3 {
                    0 => data[at] = byte,
                    1 => data.insert(at, byte),
                    _ => data.truncate(at.max(1)),
                }
            }
            compared += message_layer(&data).compared_with_model;
        }
        // Mutated streams still reach the model comparison: 2,759 comparisons over the 3,000
        // inputs when this was written.
        assert!(compared > 2000, "{compared} comparisons");
    }
}
