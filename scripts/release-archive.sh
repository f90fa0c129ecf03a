#!/usr/bin/env bash
# Makes the release archive of lmrs for this machine's target, in the layout the README describes:
#
#   scripts/release-archive.sh [OUT_DIR]      (default: dist/)
#
# Builds `lmrs` with run-time CPU dispatch (cargo build --release --locked -p lmrs-lsp
# --features ggml-sys/dispatch: one binary that picks GGML's kernels for the CPU it runs on), strips
# its debug information, and writes OUT_DIR/lmrs-VERSION-TARGET.tar.gz holding the folder
# lmrs-VERSION-TARGET/ with lmrs, README.md, LICENSE-MIT and LICENSE-APACHE, plus the archive's
# .sha256 beside it. CARGO_TARGET_DIR (default target/dispatch) keeps this build apart from the
# default -march=native one.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
out=${1:-dist}
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
triple=$(rustc -vV | sed -n 's/^host: //p')
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target/dispatch}

echo "== building lmrs $version for $triple with run-time CPU dispatch"
cargo build --release --locked -p lmrs-lsp --features ggml-sys/dispatch

name="lmrs-$version-$triple"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/$name" "$out"
binary="$CARGO_TARGET_DIR/release/lmrs"
if command -v strip >/dev/null; then
  strip --strip-debug -o "$stage/$name/lmrs" "$binary"
else
  cp "$binary" "$stage/$name/lmrs"
fi
cp README.md LICENSE-MIT LICENSE-APACHE "$stage/$name/"
# The binary runs here (with whatever CPU level this machine picks) before it is packed.
"$stage/$name/lmrs" --version >/dev/null
tar -C "$stage" -czf "$out/$name.tar.gz" "$name"
(cd "$out" && sha256sum "$name.tar.gz" >"$name.tar.gz.sha256")
echo "== $out/$name.tar.gz ($(du -h "$out/$name.tar.gz" | cut -f1); lmrs $(du -h "$stage/$name/lmrs" | cut -f1))"
