#!/usr/bin/env python3
"""Checks that the import graph between the modules of each crate is acyclic.

usage: scripts/check-module-graph.py [--print] [--self-test] [CRATE_SRC_ROOT ...]

With no roots it checks ggml/src/lib.rs, engine/src/lib.rs, fixtures/src/lib.rs, server/src/lib.rs and server/src/main.rs
(paths relative to the repository root), each as a separate crate. It prints one line per crate
(`engine/src/lib.rs: 25 modules, 60 edges, acyclic`), plus the sorted edges with --print; when a crate
has cycles it prints them, each edge with the file:line of one reference causing it, and exits 1.

Why: a cycle means no module of it can be read, tested or moved without the others, and layering
(gguf < tokenizer < models < model < session ...) decays one convenient import at a time.

Nodes are the crate's file modules (`foo.rs`, `foo/mod.rs`, the root). An inline `mod m { ... }` is
part of the file that holds it; a `#[cfg(test)]` module or item is left out entirely, with all it
contains (tests are leaves: their `use super::*` is no dependency of the code under test).

Module A depends on module B (edge A -> B) when A's code -- not comments, string literals or test
code -- names an item *defined* in B:
  - a `use` of an item (`crate::`, `super::`, `self::` or a name in scope such as a child module;
    `{}` groups, `as` renames), or a glob `use b::*` (an edge to b itself);
  - a qualified path in code (`crate::x::f()`, `super::Foo`, `blocks::linear(..)` after
    `use crate::models::blocks`, `crate::outln!`), also inside attributes and macro bodies.
Names are resolved through re-exports: `use crate::Model` where lib.rs has `pub use model::Model`
is an edge to `model`, not to the root (chains and `pub use x::*` globs are followed); a path that
stops at an enum, trait or struct stops there (variants and associated items live with their type).
A `use` that only binds a module (`use crate::gguf;`, `{self}`) is no edge; the paths through it
are. A `mod child;` declaration is containment, not an edge; a parent's `pub use child::X` is one.
`#[macro_export]` macros resolve at `crate::name` to the file that defines them. Paths starting with
an external crate (std, ggml_sys, lmrs_lsp, ...) or an unknown name are no edges; a path that enters
the crate but names nothing found there is reported as a warning and counted as an edge to the
deepest module it reached.

Limitations: this is a tokenizer, not rustc. Items produced by macros (other than include!) are
unknown; unqualified macro calls (textual `macro_rules!` scope) make no edge; function-local `use`s
count for their whole module; type and value namespaces are not told apart (a name both a child
module and an item resolves to the module when more segments follow).
"""
from __future__ import annotations

import argparse
import re
import sys
import tempfile
from collections import deque
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parent.parent
DEFAULT_ROOTS = [
    "ggml/src/lib.rs",
    "engine/src/lib.rs",
    "fixtures/src/lib.rs",
    "server/src/lib.rs",
    "server/src/main.rs",
]

# --------------------------------------------------------------------------------------------------
# Tokenizer: identifiers, punctuation (`::` is one token), literals (text kept for include!/#[path]),
# lifetimes. Comments (nested, doc) vanish; string, char and raw string contents never reach the scan.


class Tok(NamedTuple):
    kind: str  # 'id', 'p' (punctuation), 'lit', 'life'
    text: str
    line: int
    file: str


_RAW_STR = re.compile(r'[bc]?r(#*)"')
_STR = re.compile(r'[bc]?"((?:[^"\\]|\\.)*)"', re.S)
_CHAR = re.compile(r"b?'(?:[^'\\\n]|\\(?:x[0-9a-fA-F]{2}|u\{[0-9a-fA-F_]*\}|.))'")
_LIFETIME = re.compile(r"'(?:r#)?[^\W\d]\w*")
_IDENT = re.compile(r"(?:r#)?[^\W\d]\w*")
_NUM = re.compile(r"\d\w*(?:\.\d\w*)?")
_WS = re.compile(r"\s+")


def tokenize(src: str, file: str) -> list[Tok]:
    toks: list[Tok] = []
    i, n, line = 0, len(src), 1
    while i < n:
        c = src[i]
        if c.isspace():
            end = _WS.match(src, i).end()
            line += src.count("\n", i, end)
            i = end
            continue
        if src.startswith("//", i):
            end = src.find("\n", i)
            i = n if end < 0 else end
            continue
        if src.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if src.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif src.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            line += src.count("\n", i, j)
            i = j
            continue
        start_line = line
        if c in "bcr" and (m := _RAW_STR.match(src, i)):
            close = src.find('"' + m.group(1), m.end())
            end = n if close < 0 else close + 1 + len(m.group(1))
            tok = Tok("lit", src[m.end() : max(close, m.end())], start_line, file)
        elif c in 'bc"' and (m := _STR.match(src, i)):
            end, tok = m.end(), Tok("lit", m.group(1), start_line, file)
        elif c in "b'" and (m := _CHAR.match(src, i)):
            end, tok = m.end(), Tok("lit", m.group(0), start_line, file)
        elif c == "'" and (m := _LIFETIME.match(src, i)):
            end, tok = m.end(), Tok("life", m.group(0), start_line, file)
        elif m := _IDENT.match(src, i):
            end, tok = m.end(), Tok("id", m.group(0).removeprefix("r#"), start_line, file)
        elif m := _NUM.match(src, i):
            end, tok = m.end(), Tok("lit", m.group(0), start_line, file)
        elif src.startswith("::", i):
            end, tok = i + 2, Tok("p", "::", start_line, file)
        else:
            end, tok = i + 1, Tok("p", c, start_line, file)
        line += src.count("\n", i, end)
        toks.append(tok)
        i = end
    return toks


# --------------------------------------------------------------------------------------------------
# Items: walking a token range one item at a time (attributes, visibility, qualifiers, keyword, name,
# extent). Only module-level items are definitions; bodies are scanned as code.

OPEN, CLOSE = "([{", ")]}"
DEFINING = {"fn", "struct", "enum", "union", "trait", "type", "const", "static", "mod", "macro"}
SEMI_ONLY = {"const", "static", "type", "use", "crate", "let"}  # items that end only at `;`
# Keywords that can stand before `::` without starting a path (`*const ::std::ffi::c_void`).
KEYWORDS = set("as const dyn else extern fn for if impl in let match mut pub ref return static "
               "type unsafe use where while".split())


def is_p(tok: Tok, text: str) -> bool:
    return tok.kind == "p" and tok.text == text


def close_of(t: list[Tok], i: int, hi: int) -> int:
    """Index just past the bracket matching the opener at t[i]."""
    depth = 0
    for j in range(i, hi):
        if t[j].kind == "p" and t[j].text in OPEN:
            depth += 1
        elif t[j].kind == "p" and t[j].text in CLOSE:
            depth -= 1
            if depth == 0:
                return j + 1
    return hi


class Item(NamedTuple):
    kind: str
    name: str | None
    attrs: list[list[Tok]]
    start: int
    end: int
    body: tuple[int, int] | None  # inside of the first top-level `{ }` (inline modules)
    line: int


def item_at(t: list[Tok], i: int, hi: int) -> Item:
    start, attrs = i, []
    while i + 1 < hi and is_p(t[i], "#"):
        j = i + 2 if is_p(t[i + 1], "!") else i + 1
        if j >= hi or not is_p(t[j], "["):
            break
        end = close_of(t, j, hi)
        if j == i + 1:  # outer attribute; inner ones apply to the enclosing module
            attrs.append(t[j + 1 : end - 1])
        i = end
    if i < hi and t[i].text == "pub" and t[i].kind == "id":
        i = close_of(t, i + 1, hi) if i + 1 < hi and is_p(t[i + 1], "(") else i + 1
    j = i
    while j + 1 < hi:
        w, nxt = t[j], t[j + 1]
        if w.kind == "id" and w.text in ("unsafe", "async", "default", "auto"):
            j += 1
        elif w.text == "const" and nxt.text in ("fn", "unsafe", "async", "extern"):
            j += 1
        elif w.text == "extern" and (nxt.kind == "lit" or nxt.text in ("fn", "crate", "{")):
            j += 2 if nxt.kind == "lit" else 1
        else:
            break
    if j >= hi:
        return Item("eof", None, attrs, start, hi, None, t[start].line)
    kw, name, kind = t[j], None, "other"
    if is_p(kw, "{") and j > i and (t[j - 1].kind == "lit" or t[j - 1].text == "extern"):
        kind = "extern_block"  # its fns and statics are items of the enclosing module
    nxt = t[j + 1] if j + 1 < hi else kw
    if kw.kind == "id":
        kind = kw.text
        if kw.text in DEFINING - {"macro"} and nxt.kind == "id":
            k = j + 2 if nxt.text == "mut" else j + 1
            name = t[k].text if k < hi and t[k].kind == "id" else None
        elif kw.text == "macro_rules" and is_p(nxt, "!") and j + 2 < hi:
            kind, name = "macro", t[j + 2].text
        elif is_p(nxt, "!"):
            kind = "macro_call"
        if kw.text == "union" and not (j + 2 < hi and t[j + 2].text in ("{", "<")):
            kind, name = "other", None  # `union` is only a keyword before a name and a body
    depth, k, body_open, body = 0, j, None, None
    while k < hi:
        tk = t[k]
        if tk.kind == "p":
            if tk.text in OPEN:
                if depth == 0 and tk.text == "{" and body_open is None:
                    body_open = k
                depth += 1
            elif tk.text in CLOSE:
                depth -= 1
                if depth < 0:
                    break  # the closer of the enclosing block
                if depth == 0 and tk.text == "}" and kind not in SEMI_ONLY:
                    body = (body_open + 1, k) if body_open is not None else None
                    k += 1
                    break
            elif tk.text == ";" and depth == 0:
                k += 1
                break
        k += 1
    return Item(kind, name, attrs, start, max(k, start + 1), body, kw.line)


def is_test(attrs: list[list[Tok]]) -> bool:
    """`#[cfg(test)]`, `#[cfg(all(test, ...))]` -- any cfg naming `test` outside a `not(...)`."""
    for a in attrs:
        words = {x.text for x in a if x.kind == "id"}
        if a and a[0].text == "cfg" and "test" in words and "not" not in words:
            return True
    return False


def attr_value(attrs: list[list[Tok]], name: str) -> str | None:
    for a in attrs:
        if len(a) == 3 and a[0].text == name and is_p(a[1], "=") and a[2].kind == "lit":
            return a[2].text
    return None


def parse_use_tree(t: list[Tok], i: int, prefix: list[str], out: list) -> int:
    """Parses one use tree at t[i] into (binding, segments) pairs ('*' for globs); returns the end."""
    segs = list(prefix)
    if is_p(t[i], "::"):
        i += 1
    while True:
        tk = t[i]
        if is_p(tk, "*"):
            out.append(("*", segs))
            return i + 1
        if is_p(tk, "{"):
            i += 1
            while not is_p(t[i], "}"):
                i = parse_use_tree(t, i, segs, out)
                if is_p(t[i], ","):
                    i += 1
            return i + 1
        if tk.kind != "id":
            return i + 1
        segs.append(tk.text)
        i += 1
        if is_p(t[i], "::"):
            i += 1
            continue
        if tk.text == "self":  # `a::b::{self}` binds b
            segs.pop()
        binding = segs[-1] if segs else "self"
        if t[i].text == "as":
            binding, i = t[i + 1].text, i + 2
        out.append((binding, segs))
        return i


# --------------------------------------------------------------------------------------------------
# Crate model: scopes (file modules and the inline modules in them), their definitions, imports and
# the qualified paths their code uses; then resolution and the edges between file modules.


class Ref(NamedTuple):
    segs: list[str]
    line: int
    file: str
    binding: str | None  # for imports: the bound name ('*' for a glob); None for paths in code


class Scope:
    def __init__(self, name, parent, file, file_dir, child_dir, owner=None):
        self.name, self.parent, self.file = name, parent, file
        self.file_dir, self.child_dir = file_dir, child_dir
        self.owner = owner or self  # the file module this scope belongs to
        self.path = parent.path + (name,) if parent else ()
        self.children: dict[str, Scope] = {}
        self.items: dict[str, Scope] = {}  # name -> scope defining it (#[macro_export] at the root)
        self.imports: list[Ref] = []
        self.paths: list[Ref] = []

    @property
    def display(self) -> str:
        return "::".join(("crate",) + self.path)


class Crate:
    def __init__(self, root_file: Path, base: Path):
        self.base, self.scopes, self.modules = base, [], []
        self.warnings: list[str] = []
        self.edges: dict[tuple[str, str], tuple[str, int, str]] = {}
        self.root = self.load_file(root_file, None, None, mod_rs=True)
        for scope in self.scopes:
            for ref in scope.imports + scope.paths:
                self.add_edge(scope, ref)

    def rel(self, path: Path) -> str:
        try:
            return str(path.resolve().relative_to(self.base.resolve()))
        except ValueError:
            return str(path)

    def load_file(self, path: Path, name, parent, mod_rs: bool):
        rel = self.rel(path)
        toks = tokenize(path.read_text(encoding="utf-8"), rel)
        i = 0
        while i + 2 < len(toks) and is_p(toks[i], "#") and is_p(toks[i + 1], "!"):
            end = close_of(toks, i + 2, len(toks))
            if is_test([toks[i + 3 : end - 1]]):  # a #![cfg(test)] file
                return None
            i = end
        toks = self.splice_includes(toks, path.parent)
        child_dir = path.parent if mod_rs else path.parent / path.stem
        scope = Scope(name, parent, rel, path.parent, child_dir)
        self.scopes.append(scope)
        self.modules.append(scope)
        self.build(scope, toks, 0, len(toks))
        return scope

    def splice_includes(self, t: list[Tok], dir: Path) -> list[Tok]:
        """Replaces `include!("file")` with the file's tokens (ggml's bindgen output)."""
        out, i = [], 0
        while i < len(t):
            if (t[i].text == "include" and i + 4 < len(t) and is_p(t[i + 1], "!")
                    and t[i + 3].kind == "lit" and (dir / t[i + 3].text).is_file()):
                inc = dir / t[i + 3].text
                out += self.splice_includes(tokenize(inc.read_text(encoding="utf-8"), self.rel(inc)), inc.parent)
                i += 6 if i + 5 < len(t) and is_p(t[i + 5], ";") else 5
                continue
            out.append(t[i])
            i += 1
        return out

    def build(self, scope: Scope, t: list[Tok], lo: int, hi: int) -> None:
        i = lo
        while i < hi:
            it = item_at(t, i, hi)
            i = it.end
            if it.kind == "eof" or is_test(it.attrs):
                continue
            if it.kind == "mod" and it.name:
                base_dir = scope.file_dir if scope.owner is scope else scope.child_dir
                given = attr_value(it.attrs, "path")
                if it.body:  # inline: part of this file's module
                    child_dir = base_dir / given if given else scope.child_dir / it.name
                    child = Scope(it.name, scope, scope.file, scope.file_dir, child_dir, scope.owner)
                    self.scopes.append(child)
                    scope.children[it.name] = child
                    self.build(child, t, *it.body)
                    continue
                if given:
                    found, mod_rs = base_dir / given, True
                else:
                    found = next((c for c in (scope.child_dir / f"{it.name}.rs",
                                              scope.child_dir / it.name / "mod.rs") if c.is_file()), None)
                    mod_rs = found is not None and found.name == "mod.rs"
                if found is None or not found.is_file():
                    self.warn(f"{scope.file}:{it.line}: no file for `mod {it.name};`")
                    continue
                child = self.load_file(found, it.name, scope, mod_rs)
                if child:
                    scope.children[it.name] = child
                continue
            if it.kind == "extern_block" and it.body:
                self.build(scope, t, *it.body)
                continue
            if it.name and it.name != "_" and it.kind in DEFINING:
                scope.items.setdefault(it.name, scope)
                if it.kind == "macro" and any(a and a[0].text == "macro_export" for a in it.attrs):
                    self.root_scope(scope).items.setdefault(it.name, scope)
            self.scan_code(scope, t, it.start, it.end)

    @staticmethod
    def root_scope(scope: Scope) -> Scope:
        while scope.parent:
            scope = scope.parent
        return scope

    def scan_code(self, scope: Scope, t: list[Tok], lo: int, hi: int) -> None:
        """Collects the `use` trees and qualified paths of t[lo:hi], skipping cfg(test) items."""
        i = lo
        while i < hi:
            tk = t[i]
            if is_p(tk, "#") and i + 1 < hi and is_p(t[i + 1], "["):
                end = close_of(t, i + 1, hi)
                if is_test([t[i + 2 : end - 1]]):
                    i = item_at(t, i, hi).end
                    continue
            elif tk.kind == "id" and tk.text == "pub" and i + 1 < hi and is_p(t[i + 1], "("):
                i = close_of(t, i + 1, hi)  # pub(in crate::x) names no dependency
                continue
            elif tk.kind == "id" and tk.text == "use":
                trees: list = []
                try:
                    parse_use_tree(t, i + 1, [], trees)
                except IndexError:
                    self.warn(f"{tk.file}:{tk.line}: could not parse this use")
                scope.imports += [Ref(segs, tk.line, tk.file, b) for b, segs in trees if segs]
                while i < hi and not is_p(t[i], ";"):
                    i += 1
                continue
            elif (tk.kind == "id" and tk.text not in KEYWORDS and i + 2 < hi and is_p(t[i + 1], "::")
                    and t[i + 2].kind == "id"
                    and not (i > 0 and is_p(t[i - 1], "::"))
                    and not (i > 0 and is_p(t[i - 1], "$") and tk.text != "crate")):
                segs, k = [tk.text], i + 1
                while k + 1 < hi and is_p(t[k], "::") and t[k + 1].kind == "id":
                    segs.append(t[k + 1].text)
                    k += 2
                scope.paths.append(Ref(segs, tk.line, tk.file, None))
                i = k
                continue
            i += 1

    # -- resolution: ('mod', scope) | ('item', defining scope) | ('ext', None) | ('unres', scope, name)

    def lookup(self, scope: Scope, name: str, want_module: bool, seen: frozenset):
        """What `name` means inside `scope` (its definitions, children, imports, globs), or None."""
        if (id(scope), name) in seen:
            return None
        seen = seen | {(id(scope), name)}
        if name in scope.children and (want_module or name not in scope.items):
            return ("mod", scope.children[name])
        if name in scope.items:
            return ("item", scope.items[name])
        fallback = None  # an import of that name that does not resolve (kept for its warning)
        for ref in scope.imports:
            if ref.binding == name:
                res = self.resolve(scope, ref.segs, seen)
                if res[0] != "unres":
                    return res
                fallback = fallback or res
        for ref in scope.imports:
            if ref.binding == "*":
                target = self.resolve(scope, ref.segs, seen)
                if target[0] == "mod" and (res := self.lookup(target[1], name, want_module, seen)):
                    return res
        return fallback

    def resolve(self, scope: Scope, segs: list[str], seen: frozenset = frozenset()):
        cur = scope
        for k, seg in enumerate(segs):
            more = k + 1 < len(segs)
            if seg in ("crate", "$crate") and k == 0:
                cur = self.root_scope(scope)
            elif seg == "self":
                pass
            elif seg == "super":
                if cur.parent is None:
                    return ("unres", cur, "super")
                cur = cur.parent
            else:
                res = self.lookup(cur, seg, more, seen)
                if res is None:
                    return ("ext", None) if k == 0 else ("unres", cur, seg)
                if res[0] != "mod":
                    return res  # an item (or external): the rest are variants or associated items
                cur = res[1]
        return ("mod", cur)

    def add_edge(self, scope: Scope, ref: Ref) -> None:
        res = self.resolve(scope, ref.segs)
        if res[0] == "ext" or (res[0] == "mod" and ref.binding not in (None, "*")):
            return  # external, or an import that only binds a module name
        if res[0] == "unres":
            self.warn(f"{ref.file}:{ref.line}: cannot resolve `{'::'.join(ref.segs)}`: "
                      f"no `{res[2]}` in {res[1].display}")
        a, b = scope.owner.display, res[1].owner.display
        where = (ref.file, ref.line, "::".join(ref.segs) + ("::*" if ref.binding == "*" else ""))
        if a != b and ((a, b) not in self.edges or where[:2] < self.edges[(a, b)][:2]):
            self.edges[(a, b)] = where

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)

    # -- cycles

    def cycles(self) -> list[tuple[list[str], list[list[str]]]]:
        """Each strongly connected group of modules, with, for every edge inside it, the shortest
        cycle through that edge (so every edge that must go to break the group is shown)."""
        graph: dict[str, list[str]] = {m.display: [] for m in self.modules}
        for a, b in sorted(self.edges):
            graph[a].append(b)
        groups = []
        for comp in strongly_connected(graph):
            if len(comp) < 2:
                continue
            found: set[tuple[str, ...]] = set()
            for a in sorted(comp):
                for b in graph[a]:
                    if b in comp and (back := shortest_path(graph, b, a, comp)):
                        cyc = [a] + back  # rotated to start at its smallest name, for dedup
                        m = cyc[:-1].index(min(cyc[:-1]))
                        found.add(tuple(cyc[m:-1] + cyc[:m + 1]))
            groups.append((sorted(comp), [list(c) for c in sorted(found, key=lambda c: (len(c), c))]))
        return sorted(groups)


def strongly_connected(graph: dict[str, list[str]]) -> list[set[str]]:
    """Tarjan's algorithm (recursive; module graphs are small)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    comps: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            comps.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return comps


def shortest_path(graph, src: str, dst: str, within: set[str]) -> list[str] | None:
    prev, queue = {src: None}, deque([src])
    while queue:
        v = queue.popleft()
        if v == dst:
            path = []
            while v is not None:
                path.append(v)
                v = prev[v]
            return path[::-1]
        for w in graph[v]:
            if w in within and w not in prev:
                prev[w] = v
                queue.append(w)
    return None


# --------------------------------------------------------------------------------------------------


def check(root: Path, label: str, base: Path, show_edges: bool, out=sys.stdout) -> bool:
    crate = Crate(root, base)
    out.flush()
    for w in crate.warnings:
        print(f"warning: {w}", file=sys.stderr, flush=True)
    groups = crate.cycles()
    summary = f"{label}: {len(crate.modules)} modules, {len(crate.edges)} edges"
    if groups:
        n = sum(len(cycles) for _, cycles in groups)
        summary += f", {n} cycles in {len(groups)} group{'s' * (len(groups) > 1)} of mutually dependent modules"
    print(summary + ("" if groups else ", acyclic"), file=out)
    if show_edges:
        for a, b in sorted(crate.edges):
            print(f"  {a} -> {b}", file=out)
    for members, cycles in groups:
        print(f"  group: {', '.join(members)}", file=out)
        for cyc in cycles:
            print(f"    cycle: {' -> '.join(cyc)}", file=out)
            for a, b in zip(cyc, cyc[1:]):
                file, line, text = crate.edges[(a, b)]
                print(f"      {a} -> {b}: {file}:{line} `{text}`", file=out)
    return not groups


def self_test() -> int:
    results = {"passed": 0, "failed": 0}

    def expect(what: str, ok: bool) -> None:
        results["passed" if ok else "failed"] += 1
        if not ok:
            print(f"FAILED: {what}")

    tmp_root = tempfile.TemporaryDirectory(prefix="modgraph-")

    def crate(files: dict[str, str]) -> Crate:
        tmp = Path(tempfile.mkdtemp(dir=tmp_root.name))
        for name, text in files.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_text(text)
        return Crate(tmp / "lib.rs", tmp)

    c = crate({"lib.rs": "mod a; mod b;\npub use a::Thing;\npub use a::*;\n",
               "a.rs": "pub struct Thing;\npub fn helper() {}\n",
               "b.rs": "use crate::Thing;\nfn f() -> Thing { crate::helper(); Thing }\n"})
    expect("re-export resolves to the defining module",
           set(c.edges) == {("crate", "crate::a"), ("crate::b", "crate::a")} and not c.cycles())

    c = crate({"lib.rs": "pub mod a;\npub mod b;\n#[cfg(test)]\nmod tests;\n",
               "a.rs": ("pub fn x() {}\n#[cfg(test)]\nuse crate::b::y;\n#[cfg(test)]\n"
                        "mod tests {\n    use super::*;\n    use crate::b::y;\n}\n"),
               "b.rs": "use crate::a::x;\npub fn y() { x() }\n",
               "tests.rs": "use crate::b::y;\nuse crate::a::x;\n"})
    expect("cfg(test) modules make no edges and no modules",
           set(c.edges) == {("crate::b", "crate::a")} and len(c.modules) == 3 and not c.cycles())

    c = crate({"lib.rs": "mod a;\nmod b;\n",
               "a.rs": "use crate::b::B;\npub struct A;\n",
               "b.rs": "pub struct B;\npub fn f() -> crate::a::A { todo!() }\n"})
    expect("a two-module cycle is reported",
           c.cycles() == [(["crate::a", "crate::b"], [["crate::a", "crate::b", "crate::a"]])])
    expect("cycle edges carry their reference", c.edges[("crate::b", "crate::a")][1:] == (2, "crate::a::A"))

    c = crate({"lib.rs": "mod a; mod b; mod c;\n", "a.rs": "pub struct X;\n",
               "b.rs": "pub struct Y; pub struct Z;\n",
               "c.rs": "use crate::{a::X, b::{Y, Z as W}};\n"})
    expect("nested use groups", set(c.edges) == {("crate::c", "crate::a"), ("crate::c", "crate::b")})
    expect("no warnings", not c.warnings)

    c = crate({"lib.rs": "mod a; mod b;\n",
               "a.rs": ("// crate::b::B\n/* /* nested */ crate::b::B */\nconst S: &str = \"crate::b::B\";\n"
                        "const R: &str = r#\"crate::b::\"B\"#;\nconst C: char = '\"';\n"
                        "fn f<'a>(x: &'a str) -> &'a str { x }\n/// [`crate::b::B`]\npub struct A;\n"),
               "b.rs": "pub struct B;\nfn g() -> crate::a::A { todo!() }\n"})
    expect("comments, strings, chars and lifetimes are not code", set(c.edges) == {("crate::b", "crate::a")})

    c = crate({"lib.rs": "mod m; mod user;\n", "m/mod.rs": "pub mod child;\npub mod up;\npub use child::C;\npub use up::Up;\n",
               "m/child.rs": "pub struct C;\npub mod inner { pub(crate) use super::super::Up as Up2; }\n",
               "m/up.rs": "pub struct Up;\n",
               "user.rs": "use crate::m;\nuse crate::m::child::{self as ch};\n"
                          "fn f() { let _ = m::C; let _ = ch::inner::Up2; }\n"})
    expect("module aliases, inline modules, parent pub use, pub(crate) use, super::super",
           set(c.edges) == {("crate::m", "crate::m::child"), ("crate::m", "crate::m::up"),
                            ("crate::user", "crate::m::child"), ("crate::m::child", "crate::m::up"),
                            ("crate::user", "crate::m::up")}
           and not c.warnings)

    c = crate({"lib.rs": "#[path = \"other/place.rs\"]\nmod p;\nmod q;\n#[macro_export]\nmacro_rules! out { () => {} }\n",
               "other/place.rs": "pub fn f() {}\n", "q.rs": "fn g() { crate::p::f(); crate::out!(); }\n"})
    expect("#[path] and macro_export", set(c.edges) == {("crate::q", "crate::p"), ("crate::q", "crate")})

    tmp_root.cleanup()
    print(f"{results['passed']} passed, {results['failed']} failed")
    return 1 if results["failed"] else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--print", action="store_true", help="also print every edge")
    parser.add_argument("--self-test", action="store_true", help="run the checker's own tests")
    parser.add_argument("roots", nargs="*", help="crate root files, relative to the repository root")
    args = parser.parse_args()
    if args.self_test:
        return self_test()
    ok = True
    for label in args.roots or DEFAULT_ROOTS:
        root = REPO / label
        if not root.is_file():
            print(f"{label}: no such file", file=sys.stderr)
            return 2
        ok &= check(root, label, REPO, args.print)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
