#!/usr/bin/env bash
# The JavaScript and Python rule toolchains, pinned, installed idempotently beside the
# Rust ones: componentize-js and jco from npm (sdk-js/package-lock.json, with its
# integrity hashes) into target/tools/js, componentize-py from PyPI
# (sdk-python/requirements.txt) into a venv at target/tools/py. Fast when present.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS="$PWD/target/tools"

command -v npm >/dev/null || { echo "guest-tools: npm (Node.js 18+) is needed for JavaScript rules" >&2; exit 1; }

mkdir -p "$TOOLS/js"
if ! cmp -s sdk-js/package-lock.json "$TOOLS/js/package-lock.json" \
  || [ ! -x "$TOOLS/js/node_modules/.bin/componentize-js" ]; then
  cp sdk-js/package.json sdk-js/package-lock.json "$TOOLS/js/"
  (cd "$TOOLS/js" && npm ci --no-audit --no-fund --loglevel=error)
fi

if ! cmp -s sdk-python/requirements.txt "$TOOLS/py/requirements.txt" \
  || [ ! -x "$TOOLS/py/bin/componentize-py" ]; then
  source scripts/debs.sh
  make_venv "$TOOLS/py"
  "$TOOLS/py/bin/pip" install --quiet --disable-pip-version-check -r sdk-python/requirements.txt
  cp sdk-python/requirements.txt "$TOOLS/py/requirements.txt"
fi
