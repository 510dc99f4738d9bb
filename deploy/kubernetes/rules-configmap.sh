#!/usr/bin/env bash
# Writes the `rulehost-rules` ConfigMap (the DaemonSet mounts it as the rules
# directory, so editing it hot-reloads rules on every node) holding the given rule
# files, and the signature beside each (`RULE.wasm.sig`, from `rulehost rule sign` or
# `cosign sign-blob`) when there is one, to stdout:
#
#   deploy/kubernetes/rules-configmap.sh $(scripts/shipped-rules.sh) | kubectl apply -f -
#
# (`kubectl create configmap rulehost-rules -n rulehost --from-file=...` makes the same.)
set -euo pipefail
[ $# -gt 0 ] || { echo "usage: $0 RULE.wasm..." >&2; exit 2; }
cat <<YAML
apiVersion: v1
kind: ConfigMap
metadata:
  name: rulehost-rules
  namespace: rulehost
  labels:
    app.kubernetes.io/name: rulehost
binaryData:
YAML
for rule in "$@"; do
  echo "  $(basename "$rule"): $(base64 -w0 "$rule")"
  if [ -f "$rule.sig" ]; then
    echo "  $(basename "$rule").sig: $(base64 -w0 "$rule.sig")"
  fi
done
