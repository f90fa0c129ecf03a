//! Property test: random incremental edits, in each position encoding, keep the server's rope
//! identical to a reference `String` edited through a naive, independent position conversion.
//! Positions are drawn past line ends, past the last line and inside surrogate pairs / multi-byte
//! characters, so the clamping rules are exercised on every run.

use lmrs_lsp::lsp::documents::{DocumentStore, Edit};
use lmrs_lsp::lsp::position::PositionEncoding;
use proptest::prelude::*;
use tower_lsp_server::gen_lsp_types::{Position, Range};

const PIECES: &[&str] = &[
    "a", "bc", "é", "😀", "中", "\n", "\r\n", "\r", " ", "\t", "x😀y", "",
];
const CASES: u32 = 100;
const EDITS_PER_CASE: usize = 100; // 100 × 100 = 10,000 edits per encoding

/// (start byte, end of content byte) of each line; breaks are `\n`, `\r\n`, lone `\r`.
fn ref_lines(s: &str) -> Vec<(usize, usize)> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let (mut start, mut i) = (0, 0);
    while i < b.len() {
        match b[i] {
            b'\n' => {
                out.push((start, i));
                i += 1;
                start = i;
            }
            b'\r' => {
                out.push((start, i));
                i += if b.get(i + 1) == Some(&b'\n') { 2 } else { 1 };
                start = i;
            }
            _ => i += 1,
        }
    }
    out.push((start, b.len()));
    out
}

fn units(c: char, enc: PositionEncoding) -> usize {
    match enc {
        PositionEncoding::Utf8 => c.len_utf8(),
        PositionEncoding::Utf16 => c.len_utf16(),
        PositionEncoding::Utf32 => 1,
    }
}

fn line_units(s: &str, (a, b): (usize, usize), enc: PositionEncoding) -> usize {
    s[a..b].chars().map(|c| units(c, enc)).sum()
}

/// Naive clamp-and-round-down conversion, written independently of `position.rs`.
fn ref_pos_to_byte(s: &str, pos: Position, enc: PositionEncoding) -> usize {
    let lines = ref_lines(s);
    let Some(&(a, b)) = lines.get(pos.line as usize) else {
        return s.len();
    };
    let mut acc = 0usize;
    for (off, c) in s[a..b].char_indices() {
        if acc + units(c, enc) > pos.character as usize {
            return a + off;
        }
        acc += units(c, enc);
    }
    b
}

fn run(
    enc: PositionEncoding,
    initial: String,
    raw: Vec<(u32, u32, u32, u32, Vec<usize>)>,
) -> Result<(), TestCaseError> {
    let uri = "file:///prop.txt";
    let mut reference = initial.clone();
    let mut store = DocumentStore::default();
    store.open(uri, "plaintext", 0, &initial);
    for (version, (l0, c0, l1, c1, pieces)) in raw.into_iter().enumerate() {
        let lines = ref_lines(&reference);
        let pick = |l: u32, c: u32| {
            let line = l as usize % (lines.len() + 2);
            let width = lines
                .get(line)
                .map_or(0, |&r| line_units(&reference, r, enc));
            Position::new(line as u32, c % (width as u32 + 3))
        };
        let (p0, p1) = (pick(l0, c0), pick(l1, c1));
        let text: String = pieces.iter().map(|&i| PIECES[i % PIECES.len()]).collect();
        let (a, b) = (
            ref_pos_to_byte(&reference, p0, enc),
            ref_pos_to_byte(&reference, p1, enc),
        );
        let (a, b) = (a.min(b), a.max(b));
        reference.replace_range(a..b, &text);
        let edit = Edit {
            range: Some(Range::new(p0, p1)),
            text,
        };
        store.change(uri, version as i32 + 1, vec![edit], enc);
        let doc = store.get(uri).unwrap();
        prop_assert_eq!(doc.rope.len_bytes(), reference.len());
    }
    prop_assert_eq!(store.get(uri).unwrap().rope.to_string(), reference);
    Ok(())
}

fn edits() -> impl Strategy<Value = Vec<(u32, u32, u32, u32, Vec<usize>)>> {
    prop::collection::vec(
        (
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            prop::collection::vec(0..PIECES.len(), 0..4),
        ),
        EDITS_PER_CASE,
    )
}

fn initial() -> impl Strategy<Value = String> {
    prop::collection::vec(0..PIECES.len(), 0..40)
        .prop_map(|v| v.into_iter().map(|i| PIECES[i]).collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn random_edits_utf16(init in initial(), e in edits()) { run(PositionEncoding::Utf16, init, e)?; }

    #[test]
    fn random_edits_utf8(init in initial(), e in edits()) { run(PositionEncoding::Utf8, init, e)?; }

    #[test]
    fn random_edits_utf32(init in initial(), e in edits()) { run(PositionEncoding::Utf32, init, e)?; }
}
