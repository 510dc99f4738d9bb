#!/usr/bin/env bash
# Builds {{FILE}}.wasm with componentize-py against wit/rule.wit's `rule` world (a venv
# with the pinned componentize-py is made the first time).
set -euo pipefail
cd "$(dirname "$0")"
if [ -n "${RULEHOST_TOOLS:-}" ]; then
  BIN=$RULEHOST_TOOLS/py/bin
else
  [ -d .venv ] || { python3 -m venv .venv && .venv/bin/pip install -q -r requirements.txt; }
  BIN=.venv/bin
fi
PYTHONDONTWRITEBYTECODE=1 "$BIN/componentize-py" -d wit -w rule componentize -p . app \
  -o {{FILE}}.wasm
echo "built {{FILE}}.wasm"
