#!/usr/bin/env bash
# Prints the rule files the image and the rules ConfigMap ship: target/rules/*.wasm but
# the JavaScript and Python builds of TRC-1013 (`*_js.wasm`, `*_python.wasm`), which
# would be a second and third rule with its id, and at 12 and 18 MiB do not fit a
# ConfigMap's 1 MiB: they ship through an OCI registry (docs/writing-rules.md).
set -euo pipefail
cd "$(dirname "$0")/.."
for rule in target/rules/*.wasm; do
  case "$rule" in
    *_js.wasm | *_python.wasm) ;;
    *) echo "$rule" ;;
  esac
done
