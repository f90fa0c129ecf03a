#!/usr/bin/env bash
# Speed against llama.cpp in one sitting: alternates `lmrs bench` and `llama-bench` (2 threads,
# -p 512 -n 64 -r 3) ROUNDS times per model, so drift on a shared machine hits both alike, and
# prints each round and the mean per test. Keep the machine otherwise idle while it runs.
#
# usage: scripts/bench-vs-llama.sh LLAMA_BIN_DIR ROUNDS MODEL.gguf...
#        (LLAMA_BIN_DIR from ../shared/build-llama-cpp.sh DIR, i.e. DIR/bin)
set -euo pipefail
LLAMA=${1:?usage: bench-vs-llama.sh LLAMA_BIN_DIR ROUNDS MODEL...}; ROUNDS=${2:?rounds}; shift 2
LMRS=${LMRS:-target/release/lmrs}
for model in "$@"; do
  for round in $(seq "$ROUNDS"); do
    "$LMRS" bench -m "$model" -t 2 -p 512 -n 64 -r 3 --json \
      | python3 -c 'import json,sys; [print("lmrs", r["test"], round(r["t_s"], 2)) for r in json.load(sys.stdin)]'
    "$LLAMA/llama-bench" -m "$model" -t 2 -p 512 -n 64 -r 3 -o json 2>/dev/null \
      | python3 -c 'import json,sys; [print("llama.cpp", ("pp%d" % r["n_prompt"]) if r["n_prompt"] else ("tg%d" % r["n_gen"]), round(r["avg_ts"], 2)) for r in json.load(sys.stdin)]'
  done | python3 -c '
import sys, collections
rates = collections.defaultdict(list)
for line in sys.stdin:
    print(line.rstrip(), file=sys.stderr)
    engine, test, rate = line.split()
    rates[(engine, test)].append(float(rate))
name = sys.argv[1]
for test in ("pp512", "tg64"):
    ours, theirs = (sum(rates[(e, test)]) / len(rates[(e, test)]) for e in ("lmrs", "llama.cpp"))
    print(f"| {name} | {test} | {theirs:.2f} | {ours:.2f} | {ours / theirs:.3f} |")
' "$(basename "$model")"
done
