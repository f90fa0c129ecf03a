#!/usr/bin/env bash
# Runs every test of lmrs: builds the workspace, fetches the real models the tests use (cached),
# runs the Rust tests in release mode (real models are slow in debug builds), then the editor tests.
#
# usage: scripts/test.sh
# env:   LMRS_SHARED_DIR  the shared data/tools folder (default: ../shared next to the checkout)
#        LMRS_MODEL_DIR   where models are cached (default: models/ in the checkout)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export LMRS_SHARED_DIR=${LMRS_SHARED_DIR:-$(cd "$root/.." && pwd)/shared}
export LMRS_MODEL_DIR=${LMRS_MODEL_DIR:-$root/models}
export LMRS_REQUIRE_MODELS=1

echo "== fetching models into $LMRS_MODEL_DIR"
"$LMRS_SHARED_DIR/fetch-models.sh" "$LMRS_MODEL_DIR" qwen05 smollm2 gemma3

echo "== module graph (each crate's modules import each other without cycles)"
python3 scripts/check-module-graph.py --self-test
python3 scripts/check-module-graph.py

echo "== cargo fmt / clippy"
cargo fmt --all -- --check
cargo clippy --release --workspace --all-targets -- -D warnings

echo "== cargo test (release)"
cargo test --release --workspace

# Run-time CPU dispatch: ggml-sys alone, with three of its variants, in the same target dir (its
# artifacts for other features sit beside the native ones, and no lmrs binary is rebuilt): the
# selection tests and every variant this CPU supports computing the same numbers as the lowest.
# The model-level and qemu checks need a whole dispatch build of lmrs; see scripts/test-cpu-variants.sh.
echo "== ggml-sys with run-time CPU dispatch"
variants=x86-64-v2,x86-64-v3,x86-64-v4-vnni
[ "$(uname -m)" = x86_64 ] || variants= # elsewhere: that target's default set
GGML_SYS_VARIANTS=${GGML_SYS_VARIANTS:-$variants} cargo test --release -p ggml-sys --features dispatch

if [ -x editors/test.sh ]; then
  echo "== editor tests"
  LMRS_BIN="$root/target/release/lmrs" LMRS_MODEL="$LMRS_MODEL_DIR/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf" editors/test.sh
fi
