#!/usr/bin/env bash
# Installs every toolchain piece the build needs, idempotently: the Debian packages the
# build and tests use, the pinned stable toolchain (host + guest), the wasm target, the
# dated nightly with rust-src (eBPF only) and bpf-linker built against that nightly's
# LLVM. Fast when everything is present.
set -euo pipefail
cd "$(dirname "$0")/.."

# protoc: the CRI bindings (k8s-cri) are generated at build time. containerd and
# docker.io and busybox-static: the runtime tests start a real containerd and Docker
# Engine and build their one image.
# musl-tools: the image's static binary (its C parts, mimalloc, compile with musl-gcc).
# docker-registry: the local OCI registry the rule push/pull tests start; openssl: an
# independent ECDSA implementation the signature tests check interoperability with;
# apache2-utils: htpasswd, which writes the bcrypt file the registry-credential tests use.
source scripts/debs.sh
ensure_debs protobuf-compiler containerd docker.io busybox-static musl-tools docker-registry openssl \
  apache2-utils

STABLE=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)
NIGHTLY=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' ebpf/rust-toolchain.toml)
BPF_LINKER_VERSION=0.13.0
TOOLS="$PWD/target/tools"

have_toolchain() { rustup toolchain list | grep -q "^$1"; }

if ! have_toolchain "$STABLE"; then
  rustup toolchain install "$STABLE" --profile minimal -c rustfmt,clippy -t wasm32-unknown-unknown
fi
rustup target list --toolchain "$STABLE" --installed | grep -q wasm32-unknown-unknown \
  || rustup target add --toolchain "$STABLE" wasm32-unknown-unknown
rustup target list --toolchain "$STABLE" --installed | grep -q x86_64-unknown-linux-musl \
  || rustup target add --toolchain "$STABLE" x86_64-unknown-linux-musl
rustup component list --toolchain "$STABLE" --installed | grep -q '^clippy' \
  || rustup component add --toolchain "$STABLE" rustfmt clippy

if ! have_toolchain "$NIGHTLY"; then
  rustup toolchain install "$NIGHTLY" --profile minimal -c rust-src
fi
rustup component list --toolchain "$NIGHTLY" --installed | grep -q '^rust-src' \
  || rustup component add --toolchain "$NIGHTLY" rust-src

# bpf-linker links the nightly's own LLVM so bitcode versions always agree.
NIGHTLY_LIB="$(rustc +"$NIGHTLY" --print sysroot)/lib"
LIBLLVM=$(cd "$NIGHTLY_LIB" && ls libLLVM.so.* | head -n1)
LLVM_PREFIX="$TOOLS/llvm"
mkdir -p "$LLVM_PREFIX/lib"
ln -sf "$NIGHTLY_LIB/$LIBLLVM" "$LLVM_PREFIX/lib/$LIBLLVM"
ln -sf "$NIGHTLY_LIB/$LIBLLVM" "$LLVM_PREFIX/lib/libLLVM.so"
LLVM_MAJOR=$(echo "$LIBLLVM" | sed 's/^libLLVM\.so\.\([0-9]*\).*/\1/')

if ! "$TOOLS/bin/bpf-linker" --version 2>/dev/null | grep -q "$BPF_LINKER_VERSION"; then
  LLVM_PREFIX="$LLVM_PREFIX" RUSTFLAGS="-C link-arg=-Wl,-rpath,$NIGHTLY_LIB" \
    cargo +"$STABLE" install bpf-linker --locked --version "$BPF_LINKER_VERSION" \
      --no-default-features --features "llvm-$LLVM_MAJOR" --root "$TOOLS"
fi

# cosign and kustomize from Debian trixie (the signature interoperability tests, `make
# manifests`).
bash scripts/trixie-tools.sh
