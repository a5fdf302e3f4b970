#!/usr/bin/env bash
# The real OpenClaw, from the npm registry, pinned, for the tests only:
# installed once into target/openclaw-host (about 30 s and 650 MB cold) and
# run with the Node 24 that openclaw/build.sh installs. Prints the path of
# openclaw.mjs last.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OPENCLAW_VERSION=2026.9.6
DIR=$ROOT/target/openclaw-host
NODE_BIN=$(dirname "$(ls "$ROOT"/target/node-tools/node_modules/node-linux-*/bin/node)")
export PATH="$NODE_BIN:$PATH"
ENTRY=$DIR/node_modules/openclaw/openclaw.mjs
if [ "$(node "$ENTRY" --version 2>/dev/null | awk '{print $2}')" != "$OPENCLAW_VERSION" ]; then
  printf '[openclaw/install] installing openclaw %s into target/openclaw-host (about 30 s)\n' "$OPENCLAW_VERSION" >&2
  mkdir -p "$DIR"
  [ -f "$DIR/package.json" ] || printf '{"name":"openclaw-host","private":true}\n' > "$DIR/package.json"
  npm install --prefix "$DIR" --no-audit --no-fund --loglevel=error "openclaw@$OPENCLAW_VERSION" >&2
fi
printf '%s\n' "$ENTRY"
