//! The tokenizer against llama.cpp: identical ids on every reference case, and decode round trips.
//!
//! Reference data lives in the shared directory (`LMRS_SHARED_DIR`, default `../shared`):
//! - `reference/vocab/ggml-vocab-*.gguf` with llama.cpp's own test vectors (`.inp`: strings
//!   separated by `\n__ggml_vocab_test__\n`, the file ending with one; `.out`: one line of ids per
//!   string);
//! - `reference/tokenize/*.json`: source files tokenized by llama.cpp's `llama-tokenize` (no BOS,
//!   special tokens not parsed), against a `ggml-vocab-*` file or a real model in `LMRS_MODEL_DIR`.
//!   `llama-tokenize` replaces escape sequences (`\n`, `\t`, `\x41`, ...) in its input before
//!   tokenizing, so the ids are those of the text after that replacement; the test does the same.
//!   One file (`regex-syntax/src/utf8.rs`) then contains bytes such as `\xFF` and is no longer
//!   UTF-8: it is tokenized with `encode_bytes`, and left out of the round trip, which llama.cpp
//!   cannot do either for text that is not UTF-8.
//!
//! Round trip: `decode(encode(text)) == text`, except that SentencePiece vocabularies with
//! `add_space_prefix` give the text back with the space `encode` put in front of it.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use lmrs::gguf::GgufFile;
use lmrs::{TokenId, Tokenizer};

/// Separator between the strings of a `.inp` file.
const INP_SEPARATOR: &str = "\n__ggml_vocab_test__\n";

struct Case {
    name: String,
    text: Vec<u8>,
    ids: Vec<TokenId>,
}

struct Summary {
    cases: usize,
    identical: usize,
    round_trip: usize,
    /// Cases that are not UTF-8, where a round trip is not defined.
    not_utf8: usize,
    failures: Vec<String>,
}

fn vocab_dir() -> PathBuf {
    let dir = common::reference_dir().join("vocab");
    assert!(
        dir.is_dir(),
        "reference vocabularies not found at {} (set LMRS_SHARED_DIR)",
        dir.display()
    );
    dir
}

fn load_tokenizer(path: &Path) -> Tokenizer {
    let file =
        GgufFile::open(path).unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    Tokenizer::from_gguf(&file)
        .unwrap_or_else(|e| panic!("cannot build tokenizer from {}: {e}", path.display()))
}

/// Whether this tokenizer puts a space in front of the text it encodes (SentencePiece default).
fn adds_space_prefix(tokenizer: &Tokenizer) -> bool {
    tokenizer.encode("a", false) != tokenizer.encode(" a", false)
        && tokenizer
            .decode(&tokenizer.encode("a", false))
            .starts_with(' ')
}

fn check_cases(tokenizer: &Tokenizer, cases: &[Case]) -> Summary {
    let space_prefix = adds_space_prefix(tokenizer);
    let mut summary = Summary {
        cases: cases.len(),
        identical: 0,
        round_trip: 0,
        not_utf8: 0,
        failures: Vec::new(),
    };
    let unspellable = unspellable_ascii(tokenizer, space_prefix);
    if !unspellable.is_empty() {
        println!("    (no token for {unspellable:?}: llama.cpp drops these characters, so they are left out of the round trip)");
    }
    for case in cases {
        let ids = tokenizer.encode_bytes(&case.text, false);
        if ids == case.ids {
            summary.identical += 1;
        } else {
            let first_diff = ids
                .iter()
                .zip(&case.ids)
                .position(|(a, b)| a != b)
                .unwrap_or(ids.len().min(case.ids.len()));
            let from = first_diff.saturating_sub(3);
            summary.failures.push(format!(
                "{}: ids differ at {first_diff} (got {} ids, want {}): got {:?} want {:?} (text {:?})",
                case.name,
                ids.len(),
                case.ids.len(),
                &ids[from..(first_diff + 5).min(ids.len())],
                &case.ids[from..(first_diff + 5).min(case.ids.len())],
                tokenizer.decode(&case.ids[from..(first_diff + 5).min(case.ids.len())]),
            ));
        }
        let Ok(text) = std::str::from_utf8(&case.text) else {
            summary.not_utf8 += 1;
            continue;
        };
        // Characters the vocabulary has no token for are dropped by llama.cpp too.
        let text: String = text.chars().filter(|c| !unspellable.contains(c)).collect();
        let expected = if space_prefix && !text.is_empty() {
            format!(" {text}")
        } else {
            text
        };
        let decoded = tokenizer.decode(&ids);
        if decoded == expected {
            summary.round_trip += 1;
        } else {
            let at = decoded
                .bytes()
                .zip(expected.bytes())
                .position(|(a, b)| a != b)
                .unwrap_or(decoded.len().min(expected.len()));
            let context = |s: &str| {
                String::from_utf8_lossy(
                    &s.as_bytes()[at.saturating_sub(20)..(at + 20).min(s.len())],
                )
                .into_owned()
            };
            summary.failures.push(format!(
                "{}: round trip differs at byte {at}: got {:?} want {:?}",
                case.name,
                context(&decoded),
                context(&expected)
            ));
        }
    }
    summary
}

/// ASCII characters that encode to no token at all (a byte-level vocabulary missing a byte).
fn unspellable_ascii(tokenizer: &Tokenizer, space_prefix: bool) -> Vec<char> {
    (0u8..0x80)
        .map(char::from)
        .filter(|&c| {
            let decoded = tokenizer.decode(&tokenizer.encode(&c.to_string(), false));
            let decoded = if space_prefix {
                decoded.strip_prefix(' ').unwrap_or(&decoded).to_owned()
            } else {
                decoded
            };
            decoded != c.to_string()
        })
        .collect()
}

fn truncate(s: &str) -> String {
    s.chars().take(120).collect()
}

/// Checks `cases` with the tokenizer of the GGUF at `model` and reports them under the file name
/// of `source`.
fn check_file(model: &Path, source: &Path, cases: &[Case], failures: &mut Vec<String>) {
    let summary = check_cases(&load_tokenizer(model), cases);
    let label = source.file_name().unwrap_or_default().to_string_lossy();
    report(&label, &summary, failures);
}

fn assert_no_mismatches(failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn report(label: &str, summary: &Summary, all_failures: &mut Vec<String>) {
    let not_utf8 = if summary.not_utf8 > 0 {
        format!(" (+{} not UTF-8: no round trip)", summary.not_utf8)
    } else {
        String::new()
    };
    println!(
        "{label}: {} cases, {} identical ids ({:.1}%), {} round-trip{not_utf8}",
        summary.cases,
        summary.identical,
        100.0 * summary.identical as f64 / summary.cases.max(1) as f64,
        summary.round_trip
    );
    for failure in &summary.failures {
        println!("    {failure}");
    }
    all_failures.extend(summary.failures.iter().map(|f| format!("{label}: {f}")));
}

/// What `llama-tokenize` does to its input: `\n`, `\r`, `\t`, `\'`, `\"`, `\\` and `\xHH` become
/// the character or byte they name; any other backslash stays.
fn process_escapes(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' || i + 1 >= bytes.len() {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        i += 1;
        let escaped = match bytes[i] {
            b'n' => Some(b'\n'),
            b'r' => Some(b'\r'),
            b't' => Some(b'\t'),
            b'\'' => Some(b'\''),
            b'"' => Some(b'"'),
            b'\\' => Some(b'\\'),
            b'x' if i + 2 < bytes.len() => {
                let value = parse_hex_like_strtol(&bytes[i + 1..i + 3]);
                if value.is_some() {
                    i += 2;
                }
                value
            }
            _ => None,
        };
        match escaped {
            Some(b) => out.push(b),
            None => out.extend_from_slice(&[b'\\', bytes[i]]),
        }
        i += 1;
    }
    out
}

/// C's `strtol(s, &end, 16)` on two characters, when it consumes both: optional leading white
/// space, optional sign, hex digits. The value is truncated to a byte like `char(val)`.
fn parse_hex_like_strtol(two: &[u8]) -> Option<u8> {
    let text = std::str::from_utf8(two).ok()?;
    let trimmed = text.trim_start_matches([' ', '\t', '\n', '\x0B', '\x0C', '\r']);
    let (negative, digits) = match trimmed.as_bytes().first() {
        Some(b'-') => (true, &trimmed[1..]),
        Some(b'+') => (false, &trimmed[1..]),
        _ => (false, trimmed),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let value = i64::from_str_radix(digits, 16).ok()?;
    Some((if negative { -value } else { value }) as u8)
}

fn parse_ids(line: &str) -> Vec<TokenId> {
    line.split_whitespace()
        .map(|id| id.parse().unwrap_or_else(|e| panic!("bad id {id:?}: {e}")))
        .collect()
}

/// llama.cpp's `tests/test-tokenizer-0` vectors.
#[test]
fn llama_cpp_vocab_test_vectors() {
    let dir = vocab_dir();
    let mut inputs: Vec<PathBuf> = fs::read_dir(&dir)
        .expect("read vocab dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "inp"))
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "no .inp files in {}", dir.display());

    let mut failures = Vec::new();
    for inp in &inputs {
        let gguf = inp.with_extension(""); // ggml-vocab-x.gguf.inp -> ggml-vocab-x.gguf
        let out = inp.with_extension("out");
        let inp_text = fs::read_to_string(inp).expect("read .inp");
        let out_text = fs::read_to_string(&out).expect("read .out");
        // Every string, the last one included, is followed by the separator.
        let mut strings: Vec<&str> = inp_text.split(INP_SEPARATOR).collect();
        assert_eq!(
            strings.pop(),
            Some(""),
            "{} does not end with the separator",
            inp.display()
        );
        let lines: Vec<&str> = out_text.lines().collect();
        assert_eq!(
            strings.len(),
            lines.len(),
            "{}: strings and id lines differ in number",
            inp.display()
        );
        let cases: Vec<Case> = strings
            .iter()
            .zip(&lines)
            .enumerate()
            .map(|(i, (text, line))| Case {
                name: format!("#{i} {:?}", truncate(text)),
                text: text.as_bytes().to_vec(),
                ids: parse_ids(line),
            })
            .collect();
        check_file(&gguf, &gguf, &cases, &mut failures);
    }
    assert_no_mismatches(&failures);
}

/// Source files tokenized by `llama-tokenize`.
#[test]
fn llama_tokenize_reference_files() {
    let dir = common::reference_dir().join("tokenize");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e} (set LMRS_SHARED_DIR)", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no reference files in {}", dir.display());

    let mut failures = Vec::new();
    for file in &files {
        let json: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(file).expect("read json"))
                .expect("parse json");
        let vocab = json["vocab"].as_str().expect("vocab name");
        let gguf_name = format!("{vocab}.gguf");
        let path = if vocab.starts_with("ggml-vocab-") {
            vocab_dir().join(&gguf_name)
        } else {
            match common::model_path(&gguf_name) {
                Some(path) => path,
                None => continue,
            }
        };
        let cases: Vec<Case> = json["cases"]
            .as_array()
            .expect("cases")
            .iter()
            .map(|c| Case {
                name: c["name"].as_str().expect("name").to_owned(),
                text: process_escapes(c["text"].as_str().expect("text")),
                ids: c["ids"]
                    .as_array()
                    .expect("ids")
                    .iter()
                    .map(|id| id.as_u64().expect("id") as TokenId)
                    .collect(),
            })
            .collect();
        check_file(&path, file, &cases, &mut failures);
    }
    assert_no_mismatches(&failures);
}
