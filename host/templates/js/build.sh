#!/usr/bin/env bash
# Builds {{FILE}}.wasm with componentize-js against wit/rule.wit's `rule` world (npm
# install fetches the pinned toolchain from package-lock.json the first time).
set -euo pipefail
cd "$(dirname "$0")"
if [ -n "${RULEHOST_TOOLS:-}" ]; then
  BIN=$RULEHOST_TOOLS/js/node_modules/.bin
else
  [ -d node_modules ] || npm ci --no-audit --no-fund
  BIN=node_modules/.bin
fi
"$BIN/componentize-js" rule.js --wit wit --world-name rule --disable http fetch-event \
  -o {{FILE}}.wasm
echo "built {{FILE}}.wasm"
