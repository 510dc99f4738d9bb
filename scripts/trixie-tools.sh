#!/usr/bin/env bash
# Fetches the Go tools the tests use from Debian trixie, idempotently, into target/tools
# (this machine's apt setup untouched, see debs.sh): cosign (the signature
# interoperability tests) and kustomize (`make manifests` builds deploy/kubernetes with
# it). Pinned: a different version in the archive is an error, not a silent upgrade.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TOOLS="$ROOT/target/tools"
source scripts/debs.sh

# package  upstream version  binary
PINNED="cosign 2.5.0 cosign
kustomize 5.6.0 kustomize"

while read -r package version binary; do
  dest="$TOOLS/debs/$package"
  if [ -x "$TOOLS/bin/$binary" ] && grep -q "^$version[-+]" "$dest/.version" 2>/dev/null; then
    continue
  fi
  unpack_deb "$TOOLS/apt" trixie "$package" "$dest"
  grep -q "^$version[-+]" "$dest/.version" || {
    echo "trixie-tools.sh: $package in trixie is $(cat "$dest/.version"), not $version" >&2
    exit 1
  }
  found=$(find "$dest" -type f -name "$binary" -perm -u+x | head -n1)
  [ -n "$found" ] || { echo "trixie-tools.sh: $package has no $binary" >&2; exit 1; }
  mkdir -p "$TOOLS/bin"
  ln -sf "$found" "$TOOLS/bin/$binary"
  echo "$binary $(cat "$dest/.version") ready"
done <<< "$PINNED"
