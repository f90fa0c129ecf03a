#!/usr/bin/env python3
"""Does the lexical definition scanner (server/src/completion/definitions.rs) find what tree-sitter's
tags find? Per language, over real code: the definitions each grammar's own `queries/tags.scm`
captures (`@definition.*` with `@name`), and how many of them `lmrs index DIR --definitions` has
(same file, same name, within one line). Also, for repobench's positions, whether the name each
one needs is defined in the index of its project (the reach that matters for project context).

Needs tree-sitter's Python bindings and the grammars (PyPI):
  python3 -m venv /tmp/ts && /tmp/ts/bin/pip install tree-sitter tree-sitter-python tree-sitter-rust \\
      tree-sitter-javascript tree-sitter-typescript tree-sitter-go tree-sitter-c tree-sitter-cpp tree-sitter-java
usage: /tmp/ts/bin/python scripts/definitions-vs-tree-sitter.py --lmrs target/release/lmrs \\
           [--repobench N] LANG:DIR ...      (LANG: python rust javascript typescript go c cpp java)
"""
import argparse, collections, importlib, json, os, subprocess, sys

from tree_sitter import Language, Parser, Query, QueryCursor

GRAMMARS = {
    "python": ("tree_sitter_python", "language", (".py",)),
    "rust": ("tree_sitter_rust", "language", (".rs",)),
    "javascript": ("tree_sitter_javascript", "language", (".js", ".mjs", ".cjs", ".jsx")),
    "typescript": ("tree_sitter_typescript", "language_typescript", (".ts",)),
    "go": ("tree_sitter_go", "language", (".go",)),
    "c": ("tree_sitter_c", "language", (".c", ".h")),
    "cpp": ("tree_sitter_cpp", "language", (".cpp", ".cc", ".hpp", ".cxx")),
    "java": ("tree_sitter_java", "language", (".java",)),
}
MAX_FILE_BYTES = 512 * 1024  # the index's default cap


def tags(lang):
    module, function, exts = GRAMMARS[lang]
    mod = importlib.import_module(module)
    language = Language(getattr(mod, function)())
    query_dir = os.path.join(os.path.dirname(mod.__file__), "queries")
    source = open(os.path.join(query_dir, "tags.scm")).read()
    if lang == "typescript":  # TypeScript's tags extend JavaScript's
        js = importlib.import_module("tree_sitter_javascript")
        source = open(os.path.join(os.path.dirname(js.__file__), "queries", "tags.scm")).read() + "\n" + source
    try:
        query = Query(language, source)
    except Exception:
        # A pattern for a node this grammar version lacks: keep the patterns that compile.
        kept = []
        for block in source.split("\n\n"):
            try:
                Query(language, "\n".join(kept + [block]))
                kept.append(block)
            except Exception:
                pass
        query = Query(language, "\n".join(kept))
    return Parser(language), query, exts


def tree_sitter_definitions(root, lang):
    parser, query, exts = tags(lang)
    found = set()
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for f in files:
            if not f.endswith(exts):
                continue
            path = os.path.join(folder, f)
            if os.path.getsize(path) > MAX_FILE_BYTES:
                continue
            data = open(path, "rb").read()
            rel = os.path.relpath(path, root).replace(os.sep, "/")
            tree = parser.parse(data)
            for _, captures in QueryCursor(query).matches(tree.root_node):
                if not any(k.startswith("definition.") for k in captures):
                    continue
                for node in captures.get("name", []):
                    found.add((rel, node.start_point[0], node.text.decode("utf-8", "replace")))
    return found


def lmrs_definitions(lmrs, root):
    out = subprocess.run([lmrs, "index", root, "--definitions"], capture_output=True, text=True, check=True).stdout
    lines = out.splitlines()
    summary = json.loads(lines[0])
    defs = set()
    for l in lines[1:]:
        d = json.loads(l)
        defs.add((d["path"], d["line"], d["name"]))
    return summary, defs


def compare(ts, ours):
    by_name = collections.defaultdict(set)
    for path, line, name in ours:
        by_name[(path, name)].add(line)
    matched = sum(1 for path, line, name in ts if any(abs(line - l) <= 1 for l in by_name.get((path, name), ())))
    names_ts = {(p, n) for p, _, n in ts}
    names_ours = {(p, n) for p, _, n in ours}
    return {
        "tree_sitter": len(ts), "lmrs": len(ours), "matched": matched,
        "recall": round(matched / len(ts), 3) if ts else None,
        "name_recall": round(len(names_ts & names_ours) / len(names_ts), 3) if names_ts else None,
        "lmrs_only_names": len(names_ours - names_ts),
    }


def repobench_reach(lmrs, n):
    here = os.path.dirname(os.path.abspath(__file__))
    shared = os.environ.get("LMRS_SHARED_DIR", os.path.join(here, "..", "..", "shared"))
    sys.path.insert(0, os.path.join(shared, "eval"))
    import repobench
    repos = [repobench.resolve(l.strip()) for l in open(os.path.join(shared, "eval", "repos.txt")) if l.strip() and not l.startswith("#")]
    positions = repobench.pick_positions(repos, n, 1)
    cache = {}
    hit_ours = hit_ts = 0
    for p in positions:
        root = p["repo"]
        lang = "python" if p["file"].endswith(".py") else "rust"
        if root not in cache:
            cache[root] = (lmrs_definitions(lmrs, root)[1], tree_sitter_definitions(root, lang))
        ours, ts = cache[root]
        current = os.path.relpath(p["file"], root).replace(os.sep, "/")
        hit_ours += any(name == p["name"] and path != current for path, _, name in ours)
        hit_ts += any(name == p["name"] and path != current for path, _, name in ts)
    return {"positions": len(positions), "needed_name_defined_lmrs": hit_ours, "needed_name_defined_tree_sitter": hit_ts}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lmrs", default="target/release/lmrs")
    ap.add_argument("--repobench", type=int, default=0, help="also check repobench's first N positions (seed 1)")
    ap.add_argument("folders", nargs="*", help="LANG:DIR")
    a = ap.parse_args()
    for spec in a.folders:
        lang, root = spec.split(":", 1)
        summary, ours = lmrs_definitions(a.lmrs, root)
        ts = tree_sitter_definitions(root, lang)
        exts = GRAMMARS[lang][2]
        ours = {d for d in ours if d[0].endswith(exts)}
        print(json.dumps({"language": lang, "folder": root, "files": summary["files"], "index_ms": summary["ms"], **compare(ts, ours)}))
    if a.repobench:
        print(json.dumps(repobench_reach(a.lmrs, a.repobench)))


if __name__ == "__main__":
    main()
