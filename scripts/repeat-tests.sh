#!/usr/bin/env bash
# Runs the whole suite (`make test`) N times in a row and says how many runs passed:
# the proof that no test depends on timing luck.
#
#   scripts/repeat-tests.sh [--fresh] N
#
# --fresh clones this checkout's HEAD into a new directory first and runs there, as CI
# does (its first run builds everything). Each run's output is kept in a log file; a
# failed run's failing tests are named.
set -uo pipefail
cd "$(dirname "$0")/.."

fresh=0
if [ "${1:-}" = "--fresh" ]; then
  fresh=1
  shift
fi
runs=${1:-10}
case "$runs" in
  '' | *[!0-9]*) echo "usage: scripts/repeat-tests.sh [--fresh] N" >&2; exit 2 ;;
esac

logs=$(mktemp -d /tmp/rulehost-repeat.XXXXXX)
if [ "$fresh" = 1 ]; then
  git clone --quiet . "$logs/clone" || exit 1
  cd "$logs/clone" || exit 1
  echo "repeat-tests: fresh clone of $(git rev-parse --short HEAD) in $PWD"
fi

passed=0
failed=0
for run in $(seq 1 "$runs"); do
  log="$logs/run-$run.log"
  started=$(date +%s)
  if make test >"$log" 2>&1; then
    passed=$((passed + 1))
    echo "run $run/$runs: passed in $(($(date +%s) - started)) s"
  else
    failed=$((failed + 1))
    echo "run $run/$runs: FAILED in $(($(date +%s) - started)) s (log: $log)"
    grep -E '^test .* FAILED$|^    [a-z_:]+$|panicked at' "$log" | head -n 10 | sed 's/^/  /'
  fi
done
echo "repeat-tests: $passed of $runs runs passed ($failed failed); logs in $logs"
[ "$failed" -eq 0 ]
