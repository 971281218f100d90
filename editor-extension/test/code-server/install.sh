#!/usr/bin/env bash
# Installs code-server 4.100.3 here, offline from GitHub: its install scripts would download ripgrep
# and refuse root, so they are skipped and the native modules rebuilt against the system's Node
# (../../../shared/CLIENTS.md). Needs: build-essential python3 pkg-config libkrb5-dev ripgrep.
set -euo pipefail
cd "$(dirname "$0")"
stamp=node_modules/.zhiyin-installed
[ -f "$stamp" ] && [ "$stamp" -nt package-lock.json ] && exit 0
command -v rg >/dev/null || { echo "ripgrep is missing: sudo apt-get install ripgrep libkrb5-dev build-essential pkg-config" >&2; exit 1; }
export npm_config_nodedir=/usr npm_config_audit=false npm_config_fund=false
npm ci --ignore-scripts --silent
cs=node_modules/code-server
npm rebuild argon2 --silent  # hoisted beside code-server
(cd "$cs/lib/vscode" && npm install --omit=dev --ignore-scripts --silent \
  && { npm rebuild kerberos node-pty @parcel/watcher @vscode/deviceid @vscode/spdlog native-watchdog --silent || true; } \
  && test -f node_modules/node-pty/build/Release/pty.node \
  && mkdir -p node_modules/@vscode/ripgrep/bin && ln -sf "$(command -v rg)" node_modules/@vscode/ripgrep/bin/rg \
  && ln -sfn node_modules node_modules.asar \
  && ln -sf code-linux.sh bin/remote-cli/code-server \
  && ln -sf browser-linux.sh bin/helpers/browser.sh \
  && cd extensions && npm install --omit=dev --silent)
touch "$stamp"
