#!/usr/bin/env bash
# Builds the JavaScript and Python rules (componentize-js, componentize-py against
# wit/rule.wit's `rule` world) into target/rules/, and the hostile fixtures written in
# those languages into target/fixtures/; each only when its sources changed. Each
# component's producers section names its language and runtime, for `rulehost inspect`.
#
#   scripts/build-rules.sh                 # everything
#   scripts/build-rules.sh js SRC OUT      # one JavaScript rule (the entry module)
#   scripts/build-rules.sh python DIR OUT  # one Python rule (DIR holds app.py)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TOOLS="$ROOT/target/tools"
JS_VERSION=$(sed -n 's/.*"@bytecodealliance\/componentize-js": "\(.*\)".*/\1/p' "$ROOT/sdk-js/package.json")
PY_VERSION=$(sed -n 's/^componentize-py==//p' "$ROOT/sdk-python/requirements.txt")

# Whether OUT is missing or older than any file under the given paths.
stale() {
  local out=$1; shift
  [ ! -f "$out" ] && return 0
  [ -n "$(find "$@" "$ROOT/wit" -newer "$out" -type f -print -quit)" ]
}

build_js() {
  local src=$1 out=$2
  stale "$out" "$src" "$ROOT/sdk-js/rulehost-rule.js" || return 0
  mkdir -p "$(dirname "$out")"
  # componentize-js resolves relative imports from the working directory.
  (cd "$ROOT" && "$TOOLS/js/node_modules/.bin/componentize-js" "$src" --wit wit --world-name rule \
    --disable http fetch-event -o "$out.tmp" >/dev/null)
  mv "$out.tmp" "$out"
  echo "built $out (JavaScript, componentize-js $JS_VERSION)"
}

build_python() {
  local dir=$1 out=$2
  stale "$out" "$dir" "$ROOT/sdk-python" || return 0
  mkdir -p "$(dirname "$out")"
  PYTHONDONTWRITEBYTECODE=1 "$TOOLS/py/bin/componentize-py" -d "$ROOT/wit" -w rule componentize \
    -p "$dir" -p "$ROOT/sdk-python" app -o "$out.tmp" >/dev/null
  # CPython's own producers say Rust and C: name the language and its runtime.
  "$TOOLS/js/node_modules/.bin/jco" metadata-add "$out.tmp" \
    -m language=Python "processed-by=componentize-py@$PY_VERSION" -o "$out.tmp2" >/dev/null
  rm "$out.tmp"
  mv "$out.tmp2" "$out"
  echo "built $out (Python, componentize-py $PY_VERSION)"
}

case "${1:-all}" in
  js) build_js "$(realpath --relative-to="$ROOT" "$2")" "$(realpath "$3")" ;;
  python) build_python "$(realpath "$2")" "$(realpath "$3")" ;;
  all)
    bash "$ROOT/scripts/guest-tools.sh"
    build_js guest-k8s-api-connection-js/rule.js "$ROOT/target/rules/k8s_api_connection_js.wasm"
    build_python "$ROOT/guest-k8s-api-connection-python" "$ROOT/target/rules/k8s_api_connection_python.wasm"
    for fixture in "$ROOT"/tests/fixtures-js/*.js; do
      build_js "tests/fixtures-js/$(basename "$fixture")" \
        "$ROOT/target/fixtures/$(basename "$fixture" .js)-js.wasm"
    done
    for fixture in "$ROOT"/tests/fixtures-python/*/; do
      build_python "$fixture" "$ROOT/target/fixtures/$(basename "$fixture")-python.wasm"
    done
    ;;
  *) echo "usage: $0 [js SRC OUT | python DIR OUT]" >&2; exit 2 ;;
esac
