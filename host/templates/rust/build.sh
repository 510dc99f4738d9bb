#!/usr/bin/env bash
# Builds {{FILE}}.wasm: the rule for wasm32-unknown-unknown (it imports nothing but the
# rule world), then wrapped into a component by wasm-tools (or jco, which carries it).
set -euo pipefail
cd "$(dirname "$0")"
cargo build --release --target wasm32-unknown-unknown
core=target/wasm32-unknown-unknown/release/{{FILE}}.wasm
if command -v wasm-tools >/dev/null; then
  wasm-tools component new "$core" -o {{FILE}}.wasm
else
  JCO=${RULEHOST_TOOLS:+$RULEHOST_TOOLS/js/node_modules/.bin/}jco
  "$JCO" new "$core" -o {{FILE}}.wasm
fi
echo "built {{FILE}}.wasm"
