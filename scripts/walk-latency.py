#!/usr/bin/env python3
"""How long a suggestion takes when the cursor moves on through a file: the requests an editor sends
as a person works down the lines of one file, each line a new position.

At fimbench's positions (same files, same seed), through a language server on stdio: ask at the
start (after the indentation) of the position's line, then of each of the next `--steps` code lines
below it, each with the rest of its line deleted (as fimbench does). The first request of a walk
meets a new file; the later ones a prompt that changed a little: one more line before the cursor,
one line less after it. Prints p50/p95 of both kinds and the share of exact first lines. Run it
with and without the server's KV cache reuse (`lmrs lsp ... --cache-reuse-tokens 0`).

usage: scripts/walk-latency.py --files-from ../shared/eval/files.txt --n 20 [--steps 5] \
           -- target/release/lmrs lsp --model M --threads 2 [--cache-reuse-tokens 0]
"""
import argparse, json, os, statistics, sys

here = os.path.dirname(os.path.abspath(__file__))
shared = os.environ.get("LMRS_SHARED_DIR", os.path.join(here, "..", "..", "shared"))
sys.path.insert(0, os.path.join(shared, "eval"))
import fimbench  # noqa: E402  (pick_positions, resolve, score, the LSP client)


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))] if values else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--files-from", required=True)
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--steps", type=int, default=5, help="lines walked after the first")
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.cmd[1:] if a.cmd and a.cmd[0] == "--" else a.cmd
    files = [fimbench.resolve(l.strip()) for l in open(a.files_from) if l.strip() and not l.startswith("#")]
    positions = fimbench.pick_positions(files, a.n, a.seed)
    server = fimbench.Lsp(cmd)
    first_ms, moved_ms, exact, total = [], [], 0, 0
    for pos in positions:
        lines = open(pos["file"], encoding="utf-8").read().split("\n")
        li, steps = pos["line"], 0
        while li < len(lines) and steps <= a.steps:
            line = lines[li]
            if len(line.strip()) < 4:
                li += 1
                continue
            col = len(line) - len(line.lstrip())
            shown, ms, _ = server.complete(pos["file"], lines, li, col, "")
            (first_ms if steps == 0 else moved_ms).append(ms)
            ok, _ = fimbench.score(shown, line[col:])
            exact += ok
            total += 1
            steps += 1
            li += 1
    summary = {
        "walks": len(positions),
        "first_ms_p50": round(statistics.median(first_ms), 1),
        "first_ms_p95": round(percentile(first_ms, 0.95), 1),
        "next_line_ms_p50": round(statistics.median(moved_ms), 1),
        "next_line_ms_p95": round(percentile(moved_ms, 0.95), 1),
        "next_line_requests": len(moved_ms),
        "line_exact_match": round(exact / max(total, 1), 3),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
