#!/usr/bin/env bash
# Validates every Kubernetes manifest in deploy/kubernetes, what `kustomize build` makes
# of them (kustomize from Debian trixie, scripts/trixie-tools.sh) and the rules ConfigMap
# generated from the built rules, strictly, offline, with kubernetes-validate (PyPI),
# installed once into target/tools/kubernetes-validate.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=1.37.0
VENV=target/tools/kubernetes-validate
if ! "$VENV/bin/kubernetes-validate" --version 2>/dev/null | grep -q "$VERSION"; then
  source scripts/debs.sh
  make_venv "$VENV"
  "$VENV/bin/pip" install -q "kubernetes-validate==$VERSION"
fi
generated=target/image/rules-configmap.yaml
mkdir -p "$(dirname "$generated")"
mapfile -t shipped < <(bash scripts/shipped-rules.sh)
bash deploy/kubernetes/rules-configmap.sh "${shipped[@]}" > "$generated"
size=$(wc -c < "$generated")
if [ "$size" -gt 1048576 ]; then
  echo "the rules ConfigMap is $size bytes: over Kubernetes' 1 MiB" >&2
  exit 1
fi
bash scripts/trixie-tools.sh >/dev/null
built=target/image/kustomize-build.yaml
target/tools/bin/kustomize build deploy/kubernetes > "$built"
# Every manifest but the kustomization itself is in the build, once.
for manifest in deploy/kubernetes/*.yaml; do
  [ "$(basename "$manifest")" = kustomization.yaml ] && continue
  kind=$(sed -n 's/^kind: //p' "$manifest" | head -n1)
  name=$(sed -n '/^metadata:/,/^[a-z]/s/^  name: //p' "$manifest" | head -n1)
  grep -q "^kind: $kind" "$built" && grep -q "^  name: $name$" "$built" || {
    echo "kustomize build deploy/kubernetes lacks $kind $name ($manifest): add it to kustomization.yaml" >&2
    exit 1
  }
done
manifests=()
for manifest in deploy/kubernetes/*.yaml; do
  [ "$(basename "$manifest")" = kustomization.yaml ] || manifests+=("$manifest")
done
old=target/image/kustomize-build-old-kernels.yaml
target/tools/bin/kustomize build deploy/overlays/old-kernels > "$old"
grep -q SYS_RESOURCE "$old" || { echo "the old-kernels overlay does not add SYS_RESOURCE" >&2; exit 1; }
"$VENV/bin/kubernetes-validate" --strict --quiet "${manifests[@]}" "$built" "$old" "$generated"
echo "manifests valid (deploy/kubernetes, its kustomize builds, rules ConfigMap of $size bytes)"
