#!/usr/bin/env bash
# Checks a `ggml-sys/dispatch` build of lmrs on emulated older CPUs (qemu-user, TCG):
#   - under `-cpu Nehalem` (x86-64-v2: SSE4.2, no AVX) it picks x86-64-v2 by itself and generates
#     the same greedy tokens as this machine forced to that variant (LMRS_CPU_VARIANT=x86-64-v2);
#   - under `-cpu Haswell` (x86-64-v3: AVX2/FMA, no AVX-512) likewise with x86-64-v3;
#   - forcing a variant the emulated CPU lacks warns and falls back instead of SIGILL;
#   - under `-cpu core2duo` (below x86-64-v2) it exits with a clear error instead of SIGILL.
# Running end to end under Nehalem is the proof that nothing outside the x86-64-v2 variant (Rust
# code, ggml-base, the dispatch itself) executes an instruction above the baseline on that path:
# TCG raises SIGILL for any instruction the emulated CPU does not have. qemu's TCG cannot run
# AVX-512, so the v4 variants are covered by the same-numbers tests on real hardware
# (ggml/tests/variants.rs, server/tests/cpu_variants.rs), not here.
#
# usage: scripts/test-cpu-variants.sh [LMRS_BIN]
#   LMRS_BIN defaults to target/dispatch/release/lmrs, built with
#   CARGO_TARGET_DIR=target/dispatch cargo build --release --features ggml-sys/dispatch
# env:   LMRS_MODEL_DIR  where SmolLM2-135M-Instruct.Q4_1.gguf is (default: models/)
# needs: qemu-x86_64 (Debian: apt-get install qemu-user); x86-64 Linux host.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$root/target/dispatch/release/lmrs}
model=${LMRS_MODEL_DIR:-$root/models}/SmolLM2-135M-Instruct.Q4_1.gguf
qemu=${QEMU:-qemu-x86_64}
n=${N_TOKENS:-8}
prompt='def add(a, b):
    """Return the sum of a and b."""
'
[ -x "$bin" ] || { echo "no lmrs binary at $bin" >&2; exit 1; }
[ -f "$model" ] || { echo "model missing: $model" >&2; exit 1; }
command -v "$qemu" >/dev/null || { echo "$qemu not found (apt-get install qemu-user)" >&2; exit 1; }
[ "$(uname -m)" = x86_64 ] || { echo "x86-64 hosts only" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0

# Prints the greedy token ids; stderr goes to $tmp/$1.err. Usage: tokens NAME [qemu args...]
tokens() {
  local name=$1
  shift
  "$@" "$bin" infer --model "$model" --prompt "$prompt" -n "$n" --temp 0 --json \
    --threads 2 --ctx-size 256 2>"$tmp/$name.err" | grep -o '"id":[0-9]*' | tr -d '"id:' | tr '\n' ' '
}

# The variant a run used, from the stats line `infer` ends with ("... | cpu: x86-64-v2").
used() { grep -o 'cpu: [A-Za-z0-9.-]*$' "$tmp/$1.err" | cut -d' ' -f2; }

check() {
  local what=$1 want=$2 got=$3
  if [ "$want" = "$got" ]; then
    echo "ok    $what"
  else
    echo "FAIL  $what: want '$want', got '$got'"
    fail=1
  fi
}

for level in "Nehalem x86-64-v2" "Haswell x86-64-v3"; do
  set -- $level
  cpu=$1 variant=$2
  native=$(LMRS_CPU_VARIANT=$variant tokens "native-$variant")
  check "native forced $variant used $variant" "$variant" "$(used "native-$variant")"
  start=$(date +%s)
  emulated=$(unset LMRS_CPU_VARIANT; tokens "qemu-$cpu" "$qemu" -cpu "$cpu")
  secs=$(( $(date +%s) - start ))
  check "qemu -cpu $cpu picked $variant" "$variant" "$(used "qemu-$cpu")"
  check "qemu -cpu $cpu tokens = native $variant tokens [$native] (${secs}s)" "$native" "$emulated"
done

# A variant the emulated CPU lacks: warning and fallback, not SIGILL.
LMRS_CPU_VARIANT=x86-64-v4-vnni tokens forced-high "$qemu" -cpu Haswell >/dev/null || true
if grep -q "warning: LMRS_CPU_VARIANT=x86-64-v4-vnni needs CPU feature" "$tmp/forced-high.err" \
   && [ "$(used forced-high)" = x86-64-v3 ]; then
  echo "ok    qemu -cpu Haswell with LMRS_CPU_VARIANT=x86-64-v4-vnni warns and runs x86-64-v3"
else
  echo "FAIL  forced x86-64-v4-vnni under Haswell:"; cat "$tmp/forced-high.err"; fail=1
fi

# Below the lowest variant: a clear error and exit status 2, not SIGILL (132).
set +e
"$qemu" -cpu core2duo "$bin" infer --model "$model" --prompt x -n 1 >/dev/null 2>"$tmp/core2.err"
status=$?
set -e
if [ "$status" = 2 ] && grep -q "cannot run any CPU backend" "$tmp/core2.err"; then
  echo "ok    qemu -cpu core2duo (pre-v2): exit 2, $(head -c 160 "$tmp/core2.err")"
else
  echo "FAIL  qemu -cpu core2duo: exit $status"; cat "$tmp/core2.err"; fail=1
fi

exit $fail
