#!/usr/bin/env bash
# Installs code-server (VS Code in the browser) and playwright-core from npm for the e2e test,
# without network access beyond the npm registry.
#
# code-server's own postinstall cannot run here: it downloads ripgrep from GitHub (@vscode/ripgrep)
# and refuses to run as root without unsafe-perm. So this does its steps by hand: install with
# scripts off, use Debian's ripgrep, build the native modules from source (node headers from
# /usr/include/node via npm's nodedir), and make the symlinks its postinstall makes.
# Needs: build-essential pkg-config python3 libkrb5-dev libx11-dev libxkbfile-dev libsecret-1-dev ripgrep.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
stamp=node_modules/.lmrs-installed
if [[ -f $stamp && $stamp -nt package.json && $stamp -nt install.sh ]]; then exit 0; fi
export npm_config_yes=true npm_config_unsafe_perm=true npm_config_audit=false npm_config_fund=false
npm install --ignore-scripts --loglevel=error
npm rebuild argon2 --loglevel=error                 # code-server's password hashing (built from source)
vs=node_modules/code-server/lib/vscode
(cd "$vs" && npm install --omit=dev --ignore-scripts --loglevel=error)
mkdir -p "$vs/node_modules/@vscode/ripgrep/bin"
ln -sfn "$(command -v rg)" "$vs/node_modules/@vscode/ripgrep/bin/rg"
(cd "$vs" && npm rebuild @vscode/deviceid @vscode/spdlog kerberos native-watchdog node-pty @parcel/watcher --loglevel=error)
ln -sfn node_modules "$vs/node_modules.asar"
(cd "$vs/bin/remote-cli" && ln -sfn code-linux.sh code-server)
(cd "$vs/bin/helpers" && ln -sfn browser-linux.sh browser.sh)
(cd "$vs/extensions" && npm install --omit=dev --loglevel=error)
node_modules/.bin/code-server --version >/dev/null
touch "$stamp"
