#!/usr/bin/env bash
# Fetches what `make test-kernels` boots, idempotently: QEMU (Debian's qemu-system-x86),
# virtme-ng (PyPI, in target/tools/vng) and the Debian kernels pinned in
# tests/kernels/kernels.list, their images kept in $RULEHOST_KERNELS (default
# /var/cache/rulehost-test-kernels, outside any clone, so a new clone does not fetch them
# again) with their modules installed into /lib/modules/<release> (virtme-ng boots them with this machine's root,
# so their modules must be where its init looks). The machine's own apt setup is left
# untouched: the kernels come through a private sources list and lists directory that
# reuse the archive addresses this machine's apt already uses, with other suites.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TOOLS="$ROOT/target/tools"
KERNELS="${RULEHOST_KERNELS:-/var/cache/rulehost-test-kernels}"
VIRTME_NG_VERSION=1.42

# kmod: depmod, for the kernels' modules.
source scripts/debs.sh
ensure_debs qemu-system-x86 python3-venv kmod

if ! "$TOOLS/vng/bin/vng" --version 2>/dev/null | grep -q "$VIRTME_NG_VERSION"; then
  python3 -m venv "$TOOLS/vng"
  "$TOOLS/vng/bin/pip" install -q "virtme-ng==$VIRTME_NG_VERSION"
fi

need=()
while read -r suite release; do
  case "$suite" in ''|'#'*) continue ;; esac
  [ -f "$KERNELS/$release/vmlinuz" ] && [ -d "/lib/modules/$release/kernel" ] || need+=("$suite $release")
done < tests/kernels/kernels.list
[ ${#need[@]} -eq 0 ] && exit 0

APT="$ROOT/target/kernels/apt"
mkdir -p "$KERNELS"
suites=()
for entry in "${need[@]}"; do suites+=("${entry%% *}"); done
private_apt "$APT" "${suites[@]}"
for entry in "${need[@]}"; do
  release=${entry#* }
  (cd "$APT" && apt-get "${APT_PRIVATE[@]}" -o APT::Sandbox::User=root download -qq "linux-image-$release-unsigned")
  # One package at a time here (each is removed once unpacked); apt may escape the '+'.
  deb=$(find "$APT" -maxdepth 1 -name 'linux-image-*-unsigned_*.deb' | head -n1)
  rm -rf "$KERNELS/$release.tmp"
  dpkg-deb -x "$deb" "$KERNELS/$release.tmp"
  mkdir -p /lib/modules
  rm -rf "/lib/modules/$release"
  # trixie's packages ship modules under usr/lib (merged /usr), older ones under lib.
  modules=$(find "$KERNELS/$release.tmp" -maxdepth 4 -type d -path "*/lib/modules/$release" | head -n1)
  cp -a "$modules" "/lib/modules/$release"
  depmod "$release"
  mkdir -p "$KERNELS/$release"
  cp "$KERNELS/$release.tmp/boot/vmlinuz-$release" "$KERNELS/$release/vmlinuz"
  rm -rf "$KERNELS/$release.tmp" "$deb"
  echo "kernel $release ready"
done
