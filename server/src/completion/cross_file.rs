//! Context from other files: which definitions elsewhere in the project the code at the cursor
//! most likely needs, ranked (a pure function of the document and the definitions it can look up).
//!
//! Ranking, best first:
//! 1. names the file imports but does not use yet (outside the cursor line): code usually imports
//!    what it is about to use;
//! 2. names used on the lines around the cursor (closest first) that the file does not define,
//!    qualifiers (`errors.` / `age::`: modules and objects whose members the code reaches for)
//!    a step above plain names;
//! 3. the file's other imported names.
//!
//! The cursor line itself is left out of the query, so typing on a line keeps the ranking, the
//! prompt's context block and with it the KV cache. Names defined in the current file, short
//! names and names with many definitions (ambiguous) are skipped.

use std::collections::HashSet;
use std::sync::OnceLock;

use regex::Regex;

use super::definitions::definitions;
use super::retrieval::{similar_snippet_in, SnippetParams};

/// Lines above the cursor whose names count as "used around the cursor".
const LINES_ABOVE: usize = 24;
/// Lines below the cursor whose names count too.
const LINES_BELOW: usize = 6;
/// A name defined in more places than this is too ambiguous to show.
const MAX_DEFINITIONS_PER_NAME: usize = 3;
/// Chunks offered to the prompt builder, which keeps what fits its budget.
pub(crate) const MAX_CANDIDATES: usize = 16;
/// Similar-code chunks from other files offered after the definitions.
pub(crate) const MAX_SIMILAR: usize = 2;

/// A chunk of another file for the prompt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ContextChunk {
    /// The file, relative to the workspace folder.
    pub(crate) path: String,
    /// 0-based first line of the chunk's definition in that file.
    pub(crate) line: usize,
    /// The chunk, ending in `\n`.
    pub(crate) text: String,
    /// The name it defines.
    pub(crate) name: String,
}

/// A definition another file provides (a lookup result).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Provided {
    /// The file, relative to the workspace folder.
    pub(crate) path: String,
    /// 0-based line of the definition.
    pub(crate) line: usize,
    /// Its chunk.
    pub(crate) text: String,
}

/// The chunks of other files that the code at line `cursor_line` of `document` (the file at
/// `path`) most likely needs, best first, at most [`MAX_CANDIDATES`]. `lookup` gives the
/// definitions of a name in the project.
pub(crate) fn rank_context(
    document: &str,
    path: &str,
    cursor_line: usize,
    lookup: &dyn Fn(&str) -> Vec<Provided>,
) -> Vec<ContextChunk> {
    let lines: Vec<&str> = document.lines().collect();
    let defined_here: HashSet<String> = definitions(path, document)
        .into_iter()
        .map(|d| d.name)
        .collect();
    let mut imported: Vec<&str> = Vec::new();
    let mut aliased: Vec<(&str, &str)> = Vec::new();
    let mut used_outside_imports: HashSet<&str> = HashSet::new();
    for (index, line) in lines.iter().enumerate() {
        if index == cursor_line {
            continue;
        }
        if is_import_line(line) {
            for name in identifiers(line) {
                if !imported.contains(&name) {
                    imported.push(name);
                }
            }
            // `import x as y` / `use a::x as y;`: using `y` uses `x`.
            for (name, alias) in aliases(line) {
                aliased.push((name, alias));
            }
        } else {
            used_outside_imports.extend(identifiers(line));
        }
    }
    // (name, score): higher is better; equal scores keep the order names were met.
    let mut ranked: Vec<(String, f32)> = Vec::new();
    let mut push = |name: &str, score: f32| {
        if let Some(entry) = ranked.iter_mut().find(|(n, _)| n == name) {
            entry.1 = entry.1.max(score);
        } else {
            ranked.push((name.to_owned(), score));
        }
    };
    for &(name, alias) in &aliased {
        if used_outside_imports.contains(alias) {
            used_outside_imports.insert(name);
        }
    }
    for name in &imported {
        let score = if used_outside_imports.contains(name) {
            0.5
        } else {
            3.0
        };
        push(name, score);
    }
    let above = cursor_line.saturating_sub(LINES_ABOVE)..cursor_line.min(lines.len());
    let below =
        (cursor_line + 1).min(lines.len())..(cursor_line + 1 + LINES_BELOW).min(lines.len());
    for index in above.chain(below) {
        if is_import_line(lines[index]) {
            continue;
        }
        let distance = index.abs_diff(cursor_line) as f32;
        let line = lines[index];
        for name in identifiers(line) {
            // A qualifier (`errors.` / `age::`) names a module or object whose members the code
            // reaches for: its outline ranks above a plain name at the same distance.
            let qualifier = [".", "::"].iter().any(|sep| {
                line.match_indices(name).any(|(at, _)| {
                    line[at + name.len()..].starts_with(sep)
                        && !line[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_')
                })
            });
            let bonus = if qualifier { 1.0 } else { 0.0 };
            push(name, 2.0 + bonus - distance / (LINES_ABOVE as f32 + 1.0));
        }
    }
    // Stable sort: equal scores keep the order names were met.
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));

    let mut chunks: Vec<ContextChunk> = Vec::new();
    for (name, _) in ranked {
        if chunks.len() >= MAX_CANDIDATES {
            break;
        }
        if name.len() < 3 || defined_here.contains(&name) {
            continue;
        }
        let provided: Vec<Provided> = lookup(&name)
            .into_iter()
            .filter(|p| p.path != path)
            .collect();
        if provided.is_empty() || provided.len() > MAX_DEFINITIONS_PER_NAME {
            continue;
        }
        for p in provided {
            let duplicate = chunks.iter().any(|c| c.path == p.path && c.line == p.line);
            if !duplicate && chunks.len() < MAX_CANDIDATES {
                chunks.push(ContextChunk {
                    path: p.path,
                    line: p.line,
                    text: p.text,
                    name: name.clone(),
                });
            }
        }
    }
    chunks
}

/// Code in other files most like the lines above `cursor_line` of `document` (Jaccard similarity of
/// their words, see [`similar_snippet_in`]), with what followed it there: at most [`MAX_SIMILAR`]
/// chunks, most similar first, each from a different file of `others` (path, text). The query
/// leaves the cursor line out, so typing on it keeps these chunks and the KV cache.
pub(crate) fn similar_code(
    document: &str,
    cursor_line: usize,
    others: &[(String, std::sync::Arc<str>)],
) -> Vec<ContextChunk> {
    let params = SnippetParams::default();
    let lines: Vec<&str> = document.split_inclusive('\n').collect();
    let end = cursor_line.min(lines.len());
    let query = &lines[end.saturating_sub(params.query_lines)..end];
    let mut found: Vec<(f32, ContextChunk)> = others
        .iter()
        .filter_map(|(path, text)| {
            let snippet = similar_snippet_in(query, text, &params)?;
            Some((
                snippet.similarity,
                ContextChunk {
                    path: path.clone(),
                    line: snippet.first_line,
                    text: snippet.text,
                    name: String::new(),
                },
            ))
        })
        .collect();
    // Stable: equally similar files keep their order.
    found.sort_by(|a, b| b.0.total_cmp(&a.0));
    found
        .into_iter()
        .take(MAX_SIMILAR)
        .map(|(_, c)| c)
        .collect()
}

/// Whether `line` imports names (Python `import`/`from`, Rust `use`, JS/TS `import`, Go and Java
/// `import`, C/C++ `#include`, `require(`).
fn is_import_line(line: &str) -> bool {
    static IMPORT: OnceLock<Regex> = OnceLock::new();
    IMPORT
        .get_or_init(|| {
            Regex::new(
                r#"^\s*(?:import\s|from\s+\S+\s+import\s|(?:pub(?:\([^)]*\))?\s+)?use\s|#\s*include|export\s+\{[^}]*\}\s+from|(?:const|let|var)\s+[^=]+=\s*require\()"#,
            )
            .expect("the import pattern is valid")
        })
        .is_match(line)
}

/// The `(name, alias)` pairs of an import line's `name as alias` clauses.
fn aliases(line: &str) -> impl Iterator<Item = (&str, &str)> {
    static ALIAS: OnceLock<Regex> = OnceLock::new();
    ALIAS
        .get_or_init(|| {
            Regex::new(r"([A-Za-z_]\w*)\s+as\s+([A-Za-z_]\w*)").expect("the alias pattern is valid")
        })
        .captures_iter(line)
        .filter_map(|c| Some((c.get(1)?.as_str(), c.get(2)?.as_str())))
}

/// The identifiers of a line of code, outside line comments and string literals.
fn identifiers(line: &str) -> impl Iterator<Item = &str> {
    static IDENT: OnceLock<Regex> = OnceLock::new();
    let code = strip_comment_and_strings(line);
    IDENT
        .get_or_init(|| Regex::new(r"[A-Za-z_]\w*").expect("the identifier pattern is valid"))
        .find_iter(code)
        .map(|m| m.as_str())
        .filter(move |name| !in_string(line, name))
}

/// `line` up to its line comment (`#` or `//`), approximately.
fn strip_comment_and_strings(line: &str) -> &str {
    let end = [line.find("//"), line.find(" #"), line.find("\t#")]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(line.len());
    let trimmed = line.trim_start();
    if trimmed.starts_with('#') && !trimmed.starts_with("#include") && !trimmed.starts_with("#[") {
        return "";
    }
    &line[..end]
}

/// Whether the first occurrence of `name` in `line` lies inside a quoted string.
fn in_string(line: &str, name: &str) -> bool {
    match line.find(name) {
        Some(at) => {
            let before = &line[..at];
            before.matches('"').count() % 2 == 1 || before.matches('\'').count() % 2 == 1
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::{expect, Expect};

    /// A project of two files besides the current one.
    fn lookup(name: &str) -> Vec<Provided> {
        let files = [
            (
                "pkg/parser.py",
                "def parse_header(text):\n    return text.split(':')\n\nMAX_FIELDS = 64\n",
            ),
            (
                "pkg/util.py",
                "def helper(x):\n    return x\n\ndef parse_header(raw):\n    return raw\n",
            ),
        ];
        let mut out = Vec::new();
        for (path, text) in files {
            for d in definitions(path, text) {
                if d.name == name {
                    out.push(Provided {
                        path: path.to_owned(),
                        line: d.line,
                        text: d.text,
                    });
                }
            }
        }
        out
    }

    fn check(document: &str, expected: Expect) {
        let cursor_line = document
            .lines()
            .position(|l| l.contains("$0"))
            .expect("a $0 marks the cursor line");
        let document = document.replace("$0", "");
        let chunks = rank_context(&document, "pkg/main.py", cursor_line, &lookup);
        let shown: Vec<String> = chunks
            .iter()
            .map(|c| format!("{} {}:{}", c.name, c.path, c.line))
            .collect();
        expected.assert_eq(&shown.join("\n"));
    }

    #[test]
    fn similar_code_in_other_files_follows_the_lines_above_the_cursor() {
        let others: Vec<(String, std::sync::Arc<str>)> = vec![
            (
                "pkg/unrelated.py".into(),
                "def area(r):\n    return 3.14 * r * r\n".into(),
            ),
            (
                "pkg/tasks.py".into(),
                "import logging\n\ndef fail(self, exc):\n    self._loop.call_exception_handler({\n        'message': 'task failed',\n        'exception': exc,\n    })\n    self._state = FAILED\n".into(),
            ),
        ];
        let document =
            "def abort(self, exc):\n    if self._loop.is_closed():\n        return\n    \n";
        let chunks = similar_code(document, 3, &others);
        let shown: Vec<String> = chunks
            .iter()
            .map(|c| format!("{}:{}\n{}", c.path, c.line, c.text))
            .collect();
        expect![[r#"
            pkg/tasks.py:1

            def fail(self, exc):
                self._loop.call_exception_handler({
                    'message': 'task failed',
                    'exception': exc,
                })
                self._state = FAILED
        "#]]
        .assert_eq(&shown.join("---\n"));
        // Typing on the cursor line changes nothing.
        let typed = document.replace("    \n", "    self.\n");
        assert_eq!(similar_code(&typed, 3, &others), chunks);
    }

    #[test]
    fn an_imported_name_not_used_yet_comes_first() {
        check(
            "from .parser import parse_header, MAX_FIELDS\nfrom .util import helper\n\ndef main(lines):\n    n = helper(MAX_FIELDS)\n    for line in lines:\n        $0\n",
            expect![[r#"
                parse_header pkg/parser.py:0
                parse_header pkg/util.py:3
                MAX_FIELDS pkg/parser.py:3
                helper pkg/util.py:0"#]],
        );
    }

    #[test]
    fn an_import_used_through_its_alias_counts_as_used() {
        check(
            "from .parser import parse_header as ph, MAX_FIELDS\n\ndef main(text):\n    h = ph(text)\n    $0\n",
            expect![[r#"
                MAX_FIELDS pkg/parser.py:3
                parse_header pkg/parser.py:0
                parse_header pkg/util.py:3"#]],
        );
    }

    #[test]
    fn a_qualifier_near_the_cursor_ranks_above_a_plain_name_nearer() {
        check(
            "def main(lines):\n    b = MAX_FIELDS.bit_length()\n    a = helper(lines)\n    $0\n",
            expect![[r#"
                MAX_FIELDS pkg/parser.py:3
                helper pkg/util.py:0"#]],
        );
    }

    #[test]
    fn names_near_the_cursor_but_not_the_cursor_line() {
        check(
            "def main(lines):\n    x = helper(lines)\n    y = $0parse_header\n",
            expect![[r#"
                helper pkg/util.py:0"#]],
        );
    }

    #[test]
    fn names_defined_here_or_in_strings_are_skipped() {
        check(
            "def helper(x):\n    return x\n\ns = \"parse_header\"\n$0\n",
            expect![[r#""#]],
        );
    }
}
