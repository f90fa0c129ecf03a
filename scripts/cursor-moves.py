#!/usr/bin/env python3
"""Latency of moving the cursor down line by line, the case fimbench does not measure.

Opens the files of ../shared/eval's first N fimbench positions (seed 1) in `lmrs lsp`, requests an
inline completion at a position, then at the indentation of each of the next 5 lines (the file
unchanged), and prints the first-request p50 and the per-move p50 / mean / p90 in milliseconds.
A setting that changes the start of the prompt when the cursor's line changes shows up here.

Usage (from the repository root, after `cargo build --release -p lmrs-lsp`):
  scripts/cursor-moves.py [--n 12] [-- extra lmrs lsp flags, e.g. --snippet-tokens 64]
"""
import argparse, importlib.util, json, os, statistics, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(ROOT, "..", "shared", "eval")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=12)
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"))
    ap.add_argument("extra", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    extra = a.extra[1:] if a.extra[:1] == ["--"] else a.extra
    spec = importlib.util.spec_from_file_location("fimbench", os.path.join(SHARED, "fimbench.py"))
    fb = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fb)
    files = [fb.resolve(l.strip()) for l in open(os.path.join(SHARED, "files.txt")) if l.strip() and not l.startswith("#")]
    lsp = fb.Lsp([os.path.join(ROOT, "target", "release", "lmrs"), "lsp", "--model", a.model, "--threads", "2"] + extra)
    first, moves = [], []
    for p in fb.pick_positions(files, a.n, 1):
        lines = open(p["file"], encoding="utf-8").read().split("\n")
        uri = "file://" + os.path.abspath(p["file"])
        if uri not in lsp.versions:
            lsp.versions[uri] = 1
            lsp.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": fb.lang(p["file"]), "version": 1, "text": "\n".join(lines)}})
        for k in range(6):
            li = p["line"] + k
            line = lines[li] if li < len(lines) else ""
            col = len(line.encode("utf-16-le")) // 2 - len(line.lstrip().encode("utf-16-le")) // 2
            t0 = time.perf_counter()
            lsp.req("textDocument/inlineCompletion", {"textDocument": {"uri": uri}, "position": {"line": li, "character": col}, "context": {"triggerKind": 2}})
            (first if k == 0 else moves).append((time.perf_counter() - t0) * 1000)
    print(json.dumps({"flags": extra, "first_ms_p50": round(statistics.median(first)), "move_ms_p50": round(statistics.median(moves)),
                      "move_ms_mean": round(statistics.mean(moves)), "move_ms_p90": round(statistics.quantiles(moves, n=10)[8])}))


if __name__ == "__main__":
    sys.exit(main())
