#!/usr/bin/env bash
# Validates every Kubernetes manifest in deploy/kubernetes (and the rules ConfigMap
# generated from the built rules) strictly, offline, with kubernetes-validate (PyPI),
# installed once into target/tools/kubernetes-validate.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=1.37.0
VENV=target/tools/kubernetes-validate
if ! "$VENV/bin/kubernetes-validate" --version 2>/dev/null | grep -q "$VERSION"; then
  rm -rf "$VENV"
  if ! python3 -m venv "$VENV" 2>/dev/null; then
    # A Debian python3 without its venv module.
    rm -rf "$VENV"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
    python3 -m venv "$VENV"
  fi
  "$VENV/bin/pip" install -q "kubernetes-validate==$VERSION"
fi
generated=target/image/rules-configmap.yaml
mkdir -p "$(dirname "$generated")"
bash deploy/kubernetes/rules-configmap.sh target/rules/*.wasm > "$generated"
size=$(wc -c < "$generated")
if [ "$size" -gt 1048576 ]; then
  echo "the rules ConfigMap is $size bytes: over Kubernetes' 1 MiB" >&2
  exit 1
fi
"$VENV/bin/kubernetes-validate" --strict --quiet deploy/kubernetes/*.yaml "$generated"
echo "manifests valid (deploy/kubernetes, rules ConfigMap of $size bytes)"
