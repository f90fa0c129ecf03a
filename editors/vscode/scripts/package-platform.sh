#!/usr/bin/env bash
# Packages a platform-specific .vsix with the lmrs server binary inside (as rust-analyzer does):
#
#   scripts/package-platform.sh TARGET [BINARY [OUT.vsix]]
#
# TARGET is a VS Code target (linux-x64, linux-arm64, darwin-x64, darwin-arm64, win32-x64) or the
# Rust target triple it corresponds to (x86_64-unknown-linux-gnu, aarch64-apple-darwin, ...);
# BINARY is a release build of `lmrs` for it. Without BINARY (or with `build`), the script builds
# it: cargo build --release --features ggml-sys/dispatch --target TRIPLE in the workspace root, with
# run-time CPU dispatch, since a package runs on CPUs other than the builder's. The binary goes to
# server/lmrs (server/lmrs.exe on Windows), where the extension looks first when lmrs.serverPath is
# empty; VS Code's marketplace then serves each platform its own .vsix. Default output:
# lmrs-TARGET.vsix. The copied binary is removed afterwards, so the plain `npm run package` stays
# binary-free.
set -euo pipefail

if [[ $# -lt 1 || $# -gt 3 ]]; then
  sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
target=$1 binary=${2:-build}
case $target in
  linux-x64 | x86_64-unknown-linux-gnu | x86_64-unknown-linux-musl) vscode=linux-x64 triple=x86_64-unknown-linux-gnu ;;
  linux-arm64 | aarch64-unknown-linux-gnu | aarch64-unknown-linux-musl) vscode=linux-arm64 triple=aarch64-unknown-linux-gnu ;;
  darwin-x64 | x86_64-apple-darwin) vscode=darwin-x64 triple=x86_64-apple-darwin ;;
  darwin-arm64 | aarch64-apple-darwin) vscode=darwin-arm64 triple=aarch64-apple-darwin ;;
  win32-x64 | x86_64-pc-windows-msvc | x86_64-pc-windows-gnu) vscode=win32-x64 triple=x86_64-pc-windows-msvc ;;
  *)
    echo "unknown target $target (linux-x64, linux-arm64, darwin-x64, darwin-arm64, win32-x64 or their Rust triples)" >&2
    exit 2
    ;;
esac
[[ $target == *-* && $target != *-x64 && $target != *-arm64 ]] && triple=$target
if [[ $binary == build ]]; then
  repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
  # dispatch: GGML's CPU kernels once per ISA level, the best one picked at start-up (README, Install).
  # Untested on macOS and Windows so far (the symbol renaming needs ELF binutils); build those with
  # --features ggml-sys/portable and pass the binary instead.
  (cd "$repo" && cargo build --release --locked --features ggml-sys/dispatch --target "$triple")
  binary=$repo/target/$triple/release/lmrs
  [[ $vscode == win32-* ]] && binary=$binary.exe
fi
[[ -f $binary ]] || { echo "no binary at $binary (build it with cargo build --release --features ggml-sys/dispatch --target ... in the workspace root)" >&2; exit 1; }
name=lmrs
[[ $vscode == win32-* ]] && name=lmrs.exe

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${3:-$here/lmrs-$vscode.vsix}
[[ $out == /* ]] || out=$PWD/$out
binary=$(cd "$(dirname "$binary")" && pwd)/$(basename "$binary")

cd "$here"
[[ -d node_modules ]] || npm install --no-audit --no-fund --loglevel=error
rm -rf server
mkdir server
trap 'rm -rf "$here/server"' EXIT
cp "$binary" "server/$name"
chmod 755 "server/$name"
# Debug information is not needed in the editor: strip it when it can be done for this binary.
if [[ $name == lmrs ]] && command -v strip >/dev/null && strip "server/$name" 2>/dev/null; then :; fi
npx --no-install vsce package --target "$vscode" --allow-missing-repository --out "$out" </dev/null
echo "$out"
