#!/usr/bin/env bash
# Builds rulehost's eBPF programs with the pinned nightly and bpf-linker (installed
# by scripts/setup.sh) and copies the object to target/bpf/rulehost-probes.o, where
# host/build.rs embeds it from.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
NIGHTLY=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' "$ROOT/ebpf/rust-toolchain.toml")
cd "$ROOT/ebpf/programs"
PATH="$ROOT/target/tools/bin:$PATH" cargo +"$NIGHTLY" build --release \
  --target bpfel-unknown-none -Z build-std=core "$@"
mkdir -p "$ROOT/target/bpf"
# Copy only on change: a fresh timestamp would rebuild the host for nothing.
cmp -s target/bpfel-unknown-none/release/rulehost-probes "$ROOT/target/bpf/rulehost-probes.o" \
  || cp target/bpfel-unknown-none/release/rulehost-probes "$ROOT/target/bpf/rulehost-probes.o"
echo "built $ROOT/target/bpf/rulehost-probes.o"
