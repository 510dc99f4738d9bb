#!/usr/bin/env bash
# The rule's replay test: events.jsonl holds a container's connect elsewhere and one to
# the cloud metadata service; exactly one finding, for the second, must come out.
set -euo pipefail
cd "$(dirname "$0")"
RULEHOST=${RULEHOST:-rulehost}
findings=$("$RULEHOST" replay --rule {{FILE}}.wasm {{GRANTS}}events.jsonl)
count=$(printf '%s\n' "$findings" | grep -c '"ip":"169.254.169.254"' || true)
total=$(printf '%s\n' "$findings" | grep -c . || true)
if [ "$count" != 1 ] || [ "$total" != 1 ]; then
  echo "test: expected 1 finding for 169.254.169.254, got $count of $total" >&2
  exit 1
fi
echo "test: ok (1 finding)"
