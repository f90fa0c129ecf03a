#!/usr/bin/env python3
"""How long the suggestion after an accepted one takes: the request an editor sends right after
the person presses Tab.

At fimbench's positions (same files, same seed), through a language server on stdio: ask at the
position (the first suggestion), wait `--read-ms` as a person reading it would, accept it (the
document gets the suggestion inserted, the cursor moves to its end) and ask again. Prints the
latency of both requests (p50/p95) and how many post-accept requests were answered with a
suggestion. Run it twice, with and without the server's prefetch (`lmrs lsp ... --no-prefetch`).

usage: scripts/accept-latency.py --files-from ../shared/eval/files.txt --n 40 [--read-ms 1000] \
           -- target/release/lmrs lsp --model M --threads 2 [--no-prefetch]
"""
import argparse, json, os, statistics, sys, time

here = os.path.dirname(os.path.abspath(__file__))
shared = os.environ.get("LMRS_SHARED_DIR", os.path.join(here, "..", "..", "shared"))
sys.path.insert(0, os.path.join(shared, "eval"))
import fimbench  # noqa: E402  (pick_positions, resolve, the LSP client)


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))] if values else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--files-from", required=True)
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--read-ms", type=int, default=1000, help="time between seeing and accepting")
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.cmd[1:] if a.cmd and a.cmd[0] == "--" else a.cmd
    files = [fimbench.resolve(l.strip()) for l in open(a.files_from) if l.strip() and not l.startswith("#")]
    positions = fimbench.pick_positions(files, a.n, a.seed)
    server = fimbench.Lsp(cmd)
    first_ms, after_ms, answered, accepted = [], [], 0, 0
    for pos in positions:
        lines = open(pos["file"], encoding="utf-8").read().split("\n")
        li, col = pos["line"], pos["col"]
        shown, ms, _ = server.complete(pos["file"], lines, li, col, "")
        first_ms.append(ms)
        if not shown:
            continue
        accepted += 1
        time.sleep(a.read_ms / 1000)
        # The document with the suggestion accepted: it goes where the rest of the line was.
        before, cur, after = fimbench.split_doc(lines, li, col)
        new_cur = cur + shown
        new_lines = lines[:li] + new_cur.split("\n") + lines[li + 1:]
        new_li = li + new_cur.count("\n")
        new_col = len(new_cur.split("\n")[-1])
        text_lines = new_lines[:new_li] + [new_lines[new_li][:new_col]] + new_lines[new_li + 1:]
        # complete() deletes the rest of line new_li after new_col, which is empty here.
        nxt, ms, _ = server.complete(pos["file"], text_lines, new_li, new_col, "")
        after_ms.append(ms)
        answered += bool(nxt)
    summary = {
        "n": len(positions), "accepted": accepted, "read_ms": a.read_ms,
        "first_ms_p50": percentile(first_ms, 0.5), "first_ms_p95": percentile(first_ms, 0.95),
        "after_accept_ms_p50": percentile(after_ms, 0.5), "after_accept_ms_p95": percentile(after_ms, 0.95),
        "after_accept_mean_ms": round(statistics.mean(after_ms), 1) if after_ms else None,
        "after_accept_with_suggestion": answered,
    }
    print(json.dumps({k: (round(v, 1) if isinstance(v, float) else v) for k, v in summary.items()}))
    server.p.stdin.close()
    server.p.wait(timeout=30)


if __name__ == "__main__":
    main()
