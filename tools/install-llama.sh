#!/usr/bin/env bash
# Installs a real llama.cpp runtime into the project (no sudo, no compiler): the npm package
# `node-llama-cpp` (MIT) pinned by version, with only its prebuilt CPU binaries for linux-x64
# (`@node-llama-cpp/linux-x64`), into .tools/llama/. The CUDA and Vulkan binaries, optional
# dependencies of several hundred MB, are left out (--omit=optional), and npm runs no install
# scripts (--ignore-scripts): node-llama-cpp's postinstall would only try to build llama.cpp from
# source when no prebuilt binary fits. codelora drives it through tools/llama-run.mjs.
# Idempotent: a second run with the same version does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=3.21.1
DEST=.tools/llama

if [ -f "$DEST/.version" ] && [ "$(cat "$DEST/.version")" = "$VERSION" ]; then
  exit 0
fi
command -v npm >/dev/null 2>&1 || { echo "install-llama: npm is missing (Debian: apt-get install npm)" >&2; exit 1; }
case "$(uname -s)-$(uname -m)" in
  Linux-x86_64) binaries=linux-x64 ;;
  Linux-aarch64) binaries=linux-arm64 ;;
  Darwin-arm64) binaries=mac-arm64-metal ;;
  Darwin-x86_64) binaries=mac-x64 ;;
  *) echo "install-llama: no prebuilt node-llama-cpp binaries for $(uname -s)-$(uname -m)" >&2; exit 1 ;;
esac
rm -rf "$DEST.new" && mkdir -p "$DEST.new"
echo '{"name": "codelora-llama-runtime", "private": true}' > "$DEST.new/package.json"
# -E: exact versions in package.json; the lockfile npm writes pins the whole tree.
(cd "$DEST.new" && npm install -E --omit=optional --ignore-scripts --no-audit --no-fund --loglevel=error \
  "node-llama-cpp@$VERSION" "@node-llama-cpp/$binaries@$VERSION")
echo "$VERSION" > "$DEST.new/.version"
rm -rf "$DEST" && mv "$DEST.new" "$DEST"
echo "install-llama: node-llama-cpp $VERSION ($binaries) in $DEST"
