#!/usr/bin/env bash
# Builds the rulehost image from the static binary `make image` compiled: stages the
# context (binary, shipped rules, Dockerfile) under target/image, builds it offline
# (FROM scratch, classic builder) as rulehost:<version> and rulehost:dev, and saves it
# to target/image/rulehost.tar for machines and tests that load it elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=$1
BINARY=$2
CONTEXT=target/image/context
rm -rf "$CONTEXT"
mkdir -p "$CONTEXT/rules"
cp "$BINARY" "$CONTEXT/rulehost"
bash scripts/shipped-rules.sh | xargs -I{} cp {} "$CONTEXT/rules/"
cp deploy/image/Dockerfile "$CONTEXT/"
bash scripts/dockerd.sh
DOCKER_BUILDKIT=0 docker build -q -t "rulehost:$VERSION" -t rulehost:dev "$CONTEXT" >/dev/null
docker save -o target/image/rulehost.tar "rulehost:$VERSION" rulehost:dev
size=$(docker image inspect --format '{{.Size}}' rulehost:dev)
echo "built rulehost:$VERSION (rulehost:dev), $((size / 1024)) KiB; saved target/image/rulehost.tar"
