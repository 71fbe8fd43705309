#!/usr/bin/env bash
# Installs what the Kotlin execution checks need, into the project (no sudo for the compiler):
#   .tools/kotlinc/       the npm package `kotlin-compiler` (JetBrains' full JVM compiler distribution,
#                         Apache-2.0), pinned by version and checked against its registry integrity hash
#   java (JRE 17+)        Debian's default-jre-headless, only where `java` is missing
#   bwrap                 Debian's bubblewrap (the sandbox for generated programs), only where missing
# Idempotent: a second run with the same version does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=2.4.20
# `npm view kotlin-compiler@2.4.20 dist.integrity`
INTEGRITY='sha512-IF5IVM7LpPhA/ntHQQpaVt1yxpaaQovtEVYLyqWMuaLr0XelLPPm7/sM6HLhtcRjjjoSsK7I7lP2kzYJkMy73w=='
DEST=.tools/kotlinc

SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
apt_install() {
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}
missing=()
command -v java >/dev/null 2>&1 || missing+=(default-jre-headless)
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
[ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"

if [ -f "$DEST/.version" ] && [ "$(cat "$DEST/.version")" = "$VERSION" ]; then
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "kotlin-compiler@$VERSION" >/dev/null)
tgz="$tmp/kotlin-compiler-$VERSION.tgz"
got="sha512-$(openssl dgst -sha512 -binary "$tgz" | base64 -w0)"
if [ "$got" != "$INTEGRITY" ]; then
  echo "install-kotlin: integrity mismatch for kotlin-compiler@$VERSION: got $got" >&2
  exit 1
fi
mkdir -p "$tmp/x" && tar xzf "$tgz" -C "$tmp/x"
chmod +x "$tmp/x/package/bin/"*
echo "$VERSION" > "$tmp/x/package/.version"
rm -rf "$DEST.new" && mkdir -p .tools && mv "$tmp/x/package" "$DEST.new"
rm -rf "$DEST" && mv "$DEST.new" "$DEST"
echo "install-kotlin: kotlinc $VERSION in $DEST"
