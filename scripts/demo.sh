#!/usr/bin/env bash
# Builds lmrs, fetches the demo model (Qwen 0.5B) when it is absent, and prints a completion of a small
# Python file at its cursor, with timings: the same path the language server takes per keystroke.
#
# usage: scripts/demo.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
shared=${LMRS_SHARED_DIR:-$(cd "$root/.." && pwd)/shared}
models=${LMRS_MODEL_DIR:-$root/models}
model="$models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
if [ ! -f "$model" ]; then
  echo "== fetching the demo model (Qwen2.5-Coder-0.5B Q4_K_M, 491 MB) into $models"
  "$shared/fetch-models.sh" "$models" qwen05
fi
echo "== building (release)"
cargo build --release -p lmrs-lsp
echo "== completing scripts/demo/fib.py at line 3, column 5 (1-based)"
target/release/lmrs complete --model "$model" scripts/demo/fib.py:3:5
