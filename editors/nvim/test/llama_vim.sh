#!/usr/bin/env bash
# llama.vim (ggml-org's plugin for llama.cpp's server), unchanged, in headless Neovim against a
# real `lmrs serve`:
#
#   LMRS_BIN=target/release/lmrs LMRS_MODEL=models/....gguf editors/nvim/test/llama_vim.sh LLAMA_VIM_DIR
#
# Starts `lmrs serve --port 0` (debug log), waits for /health, runs llama_vim.lua (type, ghost text,
# <Tab>), then reads /metrics: the test passes only when the plugin's /infill requests reached lmrs
# and were answered 200, and none was refused (4xx/5xx). Stops the server on every exit.

set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LLAMA_VIM=${1:?usage: llama_vim.sh LLAMA_VIM_DIR}
: "${LMRS_BIN:?LMRS_BIN not set}" "${LMRS_MODEL:?LMRS_MODEL not set}"
WORK=$(mktemp -d /tmp/lmrs-llama-vim.XXXXXX)

say() { echo "[llama-vim] $*"; }

LMRS_LOG=${LMRS_LOG:-debug} "$LMRS_BIN" serve --model "$LMRS_MODEL" --port 0 --threads 2 \
  >"$WORK/serve.out" 2>"$WORK/serve.log" &
SERVER=$!
stop_server() {
  kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null
  say "server log: $WORK/serve.log"
}
trap stop_server EXIT

# `--port 0` prints `lmrs serve: listening on http://ADDRESS` on stdout.
URL=
for _ in $(seq 200); do
  URL=$(sed -n 's/^lmrs serve: listening on \(http:[^ ]*\).*/\1/p' "$WORK/serve.out" 2>/dev/null)
  [[ -n $URL ]] && break
  kill -0 "$SERVER" 2>/dev/null || { say "lmrs serve exited:"; tail -n 20 "$WORK/serve.log"; exit 1; }
  sleep 0.1
done
[[ -n $URL ]] || { say "lmrs serve printed no address in 20 s"; exit 1; }
say "server at $URL"

# /health answers 503 while the model loads, 200 once it is ready.
for _ in $(seq 240); do
  [[ $(curl -s -o /dev/null -w '%{http_code}' "$URL/health") == 200 ]] && break
  kill -0 "$SERVER" 2>/dev/null || { say "lmrs serve exited:"; tail -n 20 "$WORK/serve.log"; exit 1; }
  sleep 0.5
done
[[ $(curl -s -o /dev/null -w '%{http_code}' "$URL/health") == 200 ]] || { say "/health not 200 after 120 s"; exit 1; }
say "model ready"

XDG_STATE_HOME="$WORK/nvim-state" XDG_CACHE_HOME="$WORK/nvim-cache" LMRS_SERVE_URL=$URL \
  "${LMRS_NVIM:-nvim}" --headless -u NONE -i NONE --cmd "set rtp^=$LLAMA_VIM" -c 'filetype on' \
  -c "luafile $HERE/llama_vim.lua"
nvim_rc=$?
echo # Neovim's own messages (e.g. a curl job ended at exit) do not end with a newline.

# The requests went to lmrs: /infill answered 200 at least once, and nothing was refused.
curl -s "$URL/metrics" >"$WORK/metrics.txt"
grep '^lmrs_requests_total{endpoint="/infill"' "$WORK/metrics.txt" | sed 's/^/[llama-vim] metrics: /'
ok_count=$(sed -n 's/^lmrs_requests_total{endpoint="\/infill",status="200"} \([0-9]*\)$/\1/p' "$WORK/metrics.txt")
# (499: a request still running when Neovim quit, its curl ended; not a refusal.)
refused=$(grep -E '^lmrs_requests_total\{endpoint="/infill",status="[45][0-9][0-9]"\}' "$WORK/metrics.txt" \
  | grep -v 'status="499"' || true)
[[ $nvim_rc == 0 ]] || { say "FAIL: the Neovim script failed (exit $nvim_rc)"; exit 1; }
[[ ${ok_count:-0} -gt 0 ]] || { say "FAIL: lmrs serve answered no /infill request with 200"; exit 1; }
[[ -z $refused ]] || { say "FAIL: lmrs serve refused requests: $refused"; grep -E 'endpoint="/infill" status=[45]' "$WORK/serve.log" | tail -n 5; exit 1; }
say "PASS: /infill answered 200 x $ok_count"
