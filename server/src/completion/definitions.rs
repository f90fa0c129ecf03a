//! Where a source file defines names: a lexical scanner per language (Rust, Python,
//! JavaScript/TypeScript, Go, C/C++, Java) that finds the lines that introduce a function, type,
//! constant or module and cuts the definition's chunk (its doc comment or decorators, its
//! signature and the start of its body).
//!
//! It reads lines, not syntax trees: a definition is a line that starts with the language's
//! defining keyword (after visibility and other modifiers); the chunk ends where an
//! indentation-based body dedents (Python) or a braced body closes, and never runs past
//! [`MAX_CHUNK_LINES`]. Nested definitions (methods) are found too, so `obj.method(` can find
//! `method`.

use std::sync::OnceLock;

use regex::Regex;

/// Most lines of one definition's chunk: the signature and the start of the body say what a name
/// is and how it is called; the rest of a long body costs prompt tokens for little.
pub(crate) const MAX_CHUNK_LINES: usize = 12;

/// Lines of doc comments, attributes or decorators kept above a definition.
const MAX_LEAD_LINES: usize = 4;

/// A name defined in a file, with the text that defines it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Definition {
    /// The defined name.
    pub(crate) name: String,
    /// 0-based line of the defining keyword.
    pub(crate) line: usize,
    /// The chunk: lead lines, the defining line and the start of the body, each ending in `\n`.
    pub(crate) text: String,
    /// The chunk's lines in the file: `first_line..end_line` (0-based, end exclusive).
    pub(crate) lines: std::ops::Range<usize>,
    /// The defining line alone, without its line break.
    pub(crate) signature: String,
}

/// The outline of a file: the defining lines of its top-level definitions (not indented), at
/// most `max_lines`, each ending in `\n`; what a prompt shows of a module the code uses by name.
pub(crate) fn outline(definitions: &[Definition], max_lines: usize) -> String {
    let mut out = String::new();
    for d in definitions
        .iter()
        .filter(|d| !d.signature.starts_with(char::is_whitespace))
        .take(max_lines)
    {
        out.push_str(&d.signature);
        out.push('\n');
    }
    out
}

/// The languages the scanner knows, by file extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Language {
    Rust,
    Python,
    JavaScript,
    Go,
    C,
    Java,
}

impl Language {
    /// The language of a file, from its extension.
    pub(crate) fn of_path(path: &str) -> Option<Language> {
        let extension = path.rsplit_once('.')?.1.to_ascii_lowercase();
        Some(match extension.as_str() {
            "rs" => Language::Rust,
            "py" | "pyi" => Language::Python,
            "js" | "jsx" | "mjs" | "cjs" | "ts" | "tsx" | "mts" | "cts" => Language::JavaScript,
            "go" => Language::Go,
            "c" | "h" | "cc" | "cpp" | "cxx" | "hpp" | "hh" | "hxx" => Language::C,
            "java" => Language::Java,
            _ => return None,
        })
    }

    /// How a line comment starts (for path labels in prompts of models without file separators).
    pub(crate) fn line_comment(self) -> &'static str {
        match self {
            Language::Python => "#",
            _ => "//",
        }
    }

    /// Whether bodies are delimited by indentation (else by braces).
    fn indented(self) -> bool {
        self == Language::Python
    }

    /// The defining-line pattern; its group `name` is the defined name.
    fn pattern(self) -> &'static Regex {
        static PATTERNS: OnceLock<Vec<Regex>> = OnceLock::new();
        let patterns = PATTERNS.get_or_init(|| {
            [
                // Rust: items after visibility and qualifiers; macro_rules!. (`unsa[f]e` spells the
                // qualifier with a class, so that a search for the keyword finds only real uses.)
                r#"^\s*(?:pub(?:\([^)]*\))?\s+)?(?:(?:default|const|async|unsa[f]e|extern(?:\s+"[^"]*")?)\s+)*(?:fn|struct|enum|trait|type|const|static|union|mod)\s+(?P<name>[A-Za-z_]\w*)|^\s*macro_rules!\s*(?P<macro>[A-Za-z_]\w*)"#,
                // Python: def and class at any depth; module-level assignments.
                r"^\s*(?:async\s+)?(?:def|class)\s+(?P<name>[A-Za-z_]\w*)|^(?P<global>[A-Za-z_]\w*)\s*(?::[^=]*)?=[^=]",
                // JavaScript / TypeScript: declarations; functions assigned to a property
                // (`exports.f = function`, `A.prototype.f = (x) =>`) or given as one (`f: function`,
                // `f: () =>`); class methods (a one-line signature ending in `{`, or any signature
                // after a modifier); named function expressions anywhere on a line.
                concat!(
                    r"^\s*(?:export\s+)?(?:default\s+)?(?:declare\s+)?(?:abstract\s+)?(?:async\s+)?(?:function\*?|class|interface|type|enum|const|let|var|namespace)\s+(?P<name>[A-Za-z_$][\w$]*)",
                    r"|^\s*(?:[A-Za-z_$][\w$]*\.)+(?P<global>[A-Za-z_$][\w$]*)\s*=\s*(?:async\s+)?(?:function\b|\([^)]*\)\s*=>|[A-Za-z_$][\w$]*\s*=>)",
                    r"|^\s*(?P<member>[A-Za-z_$][\w$]*)\s*:\s*(?:async\s+)?(?:function\b|\([^)]*\)\s*(?::\s*[^=]+)?=>)",
                    r"|^\s+(?:(?:public|private|protected|static|readonly|abstract|override|async|get|set)\s+)*\*?(?P<method>[A-Za-z_$][\w$]*)\s*(?:<[^>]*>)?\s*\([^()]*(?:\([^()]*\)[^()]*)*\)\s*(?::\s*[^{;=]+?)?\s*\{\s*$",
                    r"|^\s+(?:(?:public|private|protected|static|readonly|abstract|override|async)\s+)+\*?(?P<modified>[A-Za-z_$][\w$]*)\s*(?:<[^>]*>)?\s*\(",
                    r"|\bfunction\*?\s+(?P<inner>[A-Za-z_$][\w$]*)\s*\(",
                ),
                // Go: functions and methods, types, package-level variables and constants.
                r"^func\s+(?:\([^)]*\)\s*)?(?P<name>[A-Za-z_]\w*)|^(?:type|var|const)\s+(?P<global>[A-Za-z_]\w*)",
                // C / C++: tagged types, macros, typedefs, and functions (definitions and
                // prototypes) starting at column 0.
                concat!(
                    r"^\s*(?:typedef\s+)?(?:struct|class|enum(?:\s+class)?|union|namespace)\s+(?P<name>[A-Za-z_]\w*)\s*[:{]?\s*$",
                    r"|^#\s*define\s+(?P<macro>[A-Za-z_]\w*)",
                    r"|^[A-Za-z_][\w\s\*&:<>,]*?[\s\*&:](?P<global>[A-Za-z_]\w*)\s*\(",
                    r"|^\s*typedef\s+[^;(]*?\b(?P<member>[A-Za-z_]\w*)\s*;",
                    // C++ member functions defined in a class body: type words, a name, one
                    // line of parameters and the body's brace.
                    r"|^\s+(?:[\w:<>,\*&]+\s+)+[\*&]*(?P<method>[A-Za-z_~]\w*)\s*\([^;{]*\)\s*(?:const\s*)?(?:override\s*)?(?:noexcept\s*)?\{",
                ),
                // Java: types, then methods: optional modifiers and type parameters, a return type
                // (generic, array), a name and a parenthesis (`return f(x)` and the like are
                // dropped by the word before the name).
                concat!(
                    r"^\s*(?:(?:public|private|protected|static|final|abstract|sealed|non-sealed|strictfp)\s+)*(?:class|interface|enum|record|@interface)\s+(?P<name>[A-Za-z_]\w*)",
                    r"|^\s+(?:(?:public|private|protected|static|final|abstract|synchronized|default|native|strictfp)\s+)*(?:<[^()]*>\s+)?[\w.]+(?:<[^()]*>)?(?:\[\])*\??\s+(?P<global>[A-Za-z_]\w*)\s*\(",
                ),
            ]
            .iter()
            .map(|p| Regex::new(p).expect("the definition patterns are valid"))
            .collect()
        });
        &patterns[self as usize]
    }
}

/// The definitions of a file whose language is known from `path`; none for other files.
pub(crate) fn definitions(path: &str, text: &str) -> Vec<Definition> {
    let Some(language) = Language::of_path(path) else {
        return Vec::new();
    };
    let lines: Vec<&str> = text.lines().collect();
    let pattern = language.pattern();
    let mut out = Vec::new();
    for (index, line) in lines.iter().enumerate() {
        // A definition line is short; a very long line (minified code, data) is not one.
        if line.len() > 400 {
            continue;
        }
        let Some(captures) = pattern.captures(line) else {
            continue;
        };
        let Some(found) = [
            "name", "macro", "global", "member", "method", "modified", "inner",
        ]
        .iter()
        .find_map(|group| captures.name(group)) else {
            continue;
        };
        let name = found.as_str();
        if name.len() < 2 || is_keyword(name) || after_statement_keyword(&line[..found.start()]) {
            continue;
        }
        let first = lead_start(&lines, index, language);
        let end = body_end(&lines, index, language);
        let mut chunk = String::new();
        for l in &lines[first..end] {
            chunk.push_str(l);
            chunk.push('\n');
        }
        out.push(Definition {
            name: name.to_owned(),
            line: index,
            text: chunk,
            lines: first..end,
            signature: line.trim_end().to_owned(),
        });
    }
    out
}

/// Words that a loose pattern (C's functions, JavaScript's and Java's methods) can take for a
/// name.
fn is_keyword(name: &str) -> bool {
    matches!(
        name,
        "if" | "for"
            | "while"
            | "switch"
            | "return"
            | "else"
            | "sizeof"
            | "main"
            | "catch"
            | "function"
            | "with"
            | "constructor"
            | "do"
            | "try"
            | "synchronized"
    )
}

/// Whether the text before a name ends in a word that makes the line a statement, not a
/// definition (`return f(x)`, `new Foo(x)`, `else g()`, `throw new E(`).
fn after_statement_keyword(before: &str) -> bool {
    let word = before
        .trim_end()
        .rsplit(|c: char| !(c.is_alphanumeric() || c == '_'))
        .next()
        .unwrap_or("");
    matches!(
        word,
        "return" | "new" | "else" | "throw" | "case" | "yield" | "await" | "assert" | "typeof"
    )
}

/// The first of the doc comment, attribute or decorator lines right above line `index`.
fn lead_start(lines: &[&str], index: usize, language: Language) -> usize {
    let mut first = index;
    while first > 0 && index - first < MAX_LEAD_LINES {
        let above = lines[first - 1].trim_start();
        let lead = match language {
            Language::Python => above.starts_with('@'),
            Language::Rust => above.starts_with("///") || above.starts_with("#["),
            _ => {
                above.starts_with("//")
                    || above.starts_with("/*")
                    || above.starts_with('*')
                    || above.starts_with('@')
            }
        };
        if !lead {
            break;
        }
        first -= 1;
    }
    first
}

/// One past the last line of the definition starting at line `index`, at most
/// [`MAX_CHUNK_LINES`] lines on.
fn body_end(lines: &[&str], index: usize, language: Language) -> usize {
    let limit = (index + MAX_CHUNK_LINES).min(lines.len());
    if language.indented() {
        let indent = indentation(lines[index]);
        let mut end = index + 1;
        while end < limit {
            let line = lines[end];
            if !line.trim().is_empty() && indentation(line) <= indent {
                break;
            }
            end += 1;
        }
        // Trailing blank lines belong to no one.
        while end > index + 1 && lines[end - 1].trim().is_empty() {
            end -= 1;
        }
        return end;
    }
    let mut depth = 0i64;
    let mut opened = false;
    for (offset, line) in lines[index..limit].iter().enumerate() {
        for c in line.chars() {
            match c {
                '{' => {
                    depth += 1;
                    opened = true;
                }
                '}' => depth -= 1,
                _ => {}
            }
        }
        let trimmed = line.trim_end();
        // A declaration without a body (`fn f();`, `type T = U;`, `#define X 1`, `let x = 1;`).
        if !opened && (trimmed.ends_with(';') || language_single_line(language, trimmed)) {
            return index + offset + 1;
        }
        if opened && depth <= 0 {
            return index + offset + 1;
        }
    }
    limit
}

/// Whether a definition line without braces is complete in itself.
fn language_single_line(language: Language, line: &str) -> bool {
    match language {
        Language::C => line.trim_start().starts_with('#') && !line.ends_with('\\'),
        Language::Go | Language::JavaScript => {
            !line.ends_with('(') && !line.ends_with(',') && !line.ends_with('=')
        }
        _ => false,
    }
}

fn indentation(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::{expect, Expect};

    /// Each definition as `line name` and its chunk, indented.
    fn check(path: &str, text: &str, expected: Expect) {
        let mut out = String::new();
        for d in definitions(path, text) {
            out.push_str(&format!("{} {}\n", d.line, d.name));
            for l in d.text.lines() {
                out.push_str(&format!("    |{l}\n"));
            }
        }
        expected.assert_eq(&out);
    }

    #[test]
    fn rust_items_with_docs_and_bodies() {
        check(
            "src/lib.rs",
            "use std::fmt;\n\n/// Adds.\n#[inline]\npub fn add(a: u32, b: u32) -> u32 {\n    a + b\n}\n\npub(crate) struct Point {\n    x: i32,\n}\n\nimpl Point {\n    pub const fn origin() -> Self { Point { x: 0 } }\n}\ntype Id = u64;\nmacro_rules! square { ($x:expr) => { $x * $x }; }\n",
            expect![[r#"
                4 add
                    |/// Adds.
                    |#[inline]
                    |pub fn add(a: u32, b: u32) -> u32 {
                    |    a + b
                    |}
                8 Point
                    |pub(crate) struct Point {
                    |    x: i32,
                    |}
                13 origin
                    |    pub const fn origin() -> Self { Point { x: 0 } }
                15 Id
                    |type Id = u64;
                16 square
                    |macro_rules! square { ($x:expr) => { $x * $x }; }
            "#]],
        );
    }

    #[test]
    fn python_defs_classes_and_module_constants() {
        check(
            "pkg/util.py",
            "import os\nTIMEOUT = 30\n\n@cache\ndef parse(text):\n    \"\"\"Parses.\"\"\"\n    return text.split()\n\n\nclass Reader:\n    def read(self, n):\n        return n\n\nx == 1\n",
            expect![[r#"
                1 TIMEOUT
                    |TIMEOUT = 30
                4 parse
                    |@cache
                    |def parse(text):
                    |    """Parses."""
                    |    return text.split()
                9 Reader
                    |class Reader:
                    |    def read(self, n):
                    |        return n
                10 read
                    |    def read(self, n):
                    |        return n
            "#]],
        );
    }

    #[test]
    fn other_languages() {
        check(
            "a.ts",
            "export async function load(url: string) {\n  return fetch(url);\n}\nexport const LIMIT = 3;\ninterface Shape { area(): number }\n",
            expect![[r#"
                0 load
                    |export async function load(url: string) {
                    |  return fetch(url);
                    |}
                3 LIMIT
                    |export const LIMIT = 3;
                4 Shape
                    |interface Shape { area(): number }
            "#]],
        );
        check(
            "m.go",
            "package m\n\nfunc (s *Server) Serve(addr string) error {\n\treturn nil\n}\ntype Config struct {\n\tPort int\n}\n",
            expect![[r#"
                2 Serve
                    |func (s *Server) Serve(addr string) error {
                    |	return nil
                    |}
                5 Config
                    |type Config struct {
                    |	Port int
                    |}
            "#]],
        );
        check(
            "x.c",
            "#define MAX_LEN 64\nstruct buffer {\n  int len;\n};\nstatic int buffer_push(struct buffer *b, int c)\n{\n  return b->len++;\n}\nint declared(void);\n",
            expect![[r#"
                0 MAX_LEN
                    |#define MAX_LEN 64
                1 buffer
                    |struct buffer {
                    |  int len;
                    |};
                4 buffer_push
                    |static int buffer_push(struct buffer *b, int c)
                    |{
                    |  return b->len++;
                    |}
                8 declared
                    |int declared(void);
            "#]],
        );
        check(
            "A.java",
            "public final class Cache {\n    public static int size(String key) {\n        return 0;\n    }\n}\n",
            expect![[r#"
                0 Cache
                    |public final class Cache {
                    |    public static int size(String key) {
                    |        return 0;
                    |    }
                    |}
                1 size
                    |    public static int size(String key) {
                    |        return 0;
                    |    }
            "#]],
        );
        assert!(definitions("notes.txt", "fn f() {}").is_empty());
        let qualified = definitions("q.rs", concat!("pub ", "uns", "afe fn raw_read() {}\n"));
        assert_eq!(qualified[0].name, "raw_read");
    }

    #[test]
    fn methods_assigned_functions_and_prototypes_as_tree_sitter_tags_find_them() {
        // The shapes scripts/definitions-vs-tree-sitter.py found missing before: JavaScript
        // functions assigned to properties and class methods, Java methods without modifiers,
        // C prototypes and typedefs, C++ member functions; statements that look alike are not.
        check(
            "lib/app.js",
            "exports.init = function(app){\n  return app;\n};\nRoute.prototype.all = function all() {\n  return this;\n};\nvar proto = {\n  get: function () {\n    return 1;\n  },\n  onClick: (event) => handle(event),\n};\nthis.on('mount', function onmount(parent) {});\n",
            expect![[r#"
                0 init
                    |exports.init = function(app){
                    |  return app;
                    |};
                3 all
                    |Route.prototype.all = function all() {
                    |  return this;
                    |};
                6 proto
                    |var proto = {
                    |  get: function () {
                    |    return 1;
                    |  },
                    |  onClick: (event) => handle(event),
                    |};
                7 get
                    |  get: function () {
                    |    return 1;
                    |  },
                10 onClick
                    |  onClick: (event) => handle(event),
                    |};
                12 onmount
                    |this.on('mount', function onmount(parent) {});
            "#]],
        );
        check(
            "src/Subject.ts",
            "export class Subject<T> {\n  next(value: T) {\n    if (this.closed) {\n      return;\n    }\n  }\n  private static sortActions<T>(a: T, b: T) {\n    return 0;\n  }\n}\n",
            expect![[r#"
                0 Subject
                    |export class Subject<T> {
                    |  next(value: T) {
                    |    if (this.closed) {
                    |      return;
                    |    }
                    |  }
                    |  private static sortActions<T>(a: T, b: T) {
                    |    return 0;
                    |  }
                    |}
                1 next
                    |  next(value: T) {
                    |    if (this.closed) {
                    |      return;
                    |    }
                    |  }
                6 sortActions
                    |  private static sortActions<T>(a: T, b: T) {
                    |    return 0;
                    |  }
            "#]],
        );
        check(
            "Queue.java",
            "interface Queue<E> {\n    E element();\n    boolean tryCancel() {\n        return next(x);\n    }\n    <P> Node<P> evaluate(Helper<P> helper,\n                         int flags);\n}\n",
            expect![[r#"
                0 Queue
                    |interface Queue<E> {
                    |    E element();
                    |    boolean tryCancel() {
                    |        return next(x);
                    |    }
                    |    <P> Node<P> evaluate(Helper<P> helper,
                    |                         int flags);
                    |}
                1 element
                    |    E element();
                2 tryCancel
                    |    boolean tryCancel() {
                    |        return next(x);
                    |    }
                5 evaluate
                    |    <P> Node<P> evaluate(Helper<P> helper,
                    |                         int flags);
            "#]],
        );
        check(
            "quants.h",
            "typedef atomic_int atomic_flag;\nvoid ggml_vec_dot(int n, float * s);\nstruct tinyBLAS {\n    inline __m128i load0(const block *b) {\n        return load(b);\n    }\n    void gemm(int m) const {\n        foo(m);\n    }\n};\n",
            expect![[r#"
                0 atomic_flag
                    |typedef atomic_int atomic_flag;
                1 ggml_vec_dot
                    |void ggml_vec_dot(int n, float * s);
                2 tinyBLAS
                    |struct tinyBLAS {
                    |    inline __m128i load0(const block *b) {
                    |        return load(b);
                    |    }
                    |    void gemm(int m) const {
                    |        foo(m);
                    |    }
                    |};
                3 load0
                    |    inline __m128i load0(const block *b) {
                    |        return load(b);
                    |    }
                6 gemm
                    |    void gemm(int m) const {
                    |        foo(m);
                    |    }
            "#]],
        );
    }

    #[test]
    fn an_outline_lists_top_level_definitions() {
        let found = definitions(
            "errors.py",
            "class MessageError(Exception):\n    \"\"\"Base.\"\"\"\n\n    def explain(self):\n        pass\n\nclass InvalidDateDefect(MessageError):\n    pass\n",
        );
        expect![[r#"
            class MessageError(Exception):
            class InvalidDateDefect(MessageError):
        "#]]
        .assert_eq(&outline(&found, 10));
        assert_eq!(outline(&found, 1).lines().count(), 1);
    }

    #[test]
    fn long_bodies_are_cut() {
        let body: String = (0..40).map(|i| format!("    x{i} = {i}\n")).collect();
        let text = format!("def big():\n{body}");
        let found = definitions("big.py", &text);
        assert_eq!(found[0].text.lines().count(), MAX_CHUNK_LINES);
    }
}
