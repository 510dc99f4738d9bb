#!/usr/bin/env bash
# `make test-kernels`: boots each Debian kernel of tests/kernels/kernels.list with
# virtme-ng (this machine's root shared, QEMU's TCG: KVM guests hang at boot on this
# machine kind, so KVM is used only when a quick probe boots) and runs inside it the
# tests that touch the kernel: tests/tests/sensor.rs (every exec program, the env walk,
# connects of each family, cgroup events, wake-ups and drops), tests/tests/kernels.rs
# (TRC-1013 and its evasions through each connect hook, lineage, the sweep, the /proc
# env fallback), tests/tests/connect_filter.rs (the kernel's connect filter) and
# tests/tests/daemonset.rs (the DaemonSet's pod under containerd; the old-kernels overlay
# on kernels before 5.11); then
# `rulehost run --check` for the verifier figures. Prints one summary line per kernel
# and writes target/kernels/report/<release>/{tests,check}.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
bash scripts/kernels.sh
export PATH="$ROOT/target/tools/vng/bin:$PATH"
VNG=vng
REPORT="$ROOT/target/kernels/report"
KERNELS="${RULEHOST_KERNELS:-/var/cache/rulehost-test-kernels}"
mkdir -p "$REPORT"

# The test executables, built once on the host (the guests share this filesystem).
tests=()
while read -r path; do tests+=("$path"); done < <(
  cargo test --release -p rulehost-tests --test sensor --test kernels --test connect_filter --test daemonset --no-run 2>&1 \
    | sed -n 's/.*Executable tests\/[a-z_]*\.rs (\(.*\))$/\1/p')
[ ${#tests[@]} -eq 4 ] || { echo "test-kernels: expected 4 test executables, found ${#tests[@]}" >&2; exit 1; }

# KVM only when a guest boots with it here (nested virtualisation can hang at boot).
# Under TCG one vCPU: with two, the guest kernel patching its own text (static keys
# flipped as probes attach and as runc sets a pod's CPU limit) raced QEMU's
# multi-threaded TCG and died on an int3 oops in the scheduler in 2 of 7 runs on 6.12;
# the runs take as long with one.
accel=(--disable-kvm --cpus 1)
if [ -e /dev/kvm ] && timeout 20 "$VNG" --run "$(ls -d "$KERNELS"/6.1*/vmlinuz | head -n1)" \
    --user root --exec true >/dev/null 2>&1; then
  accel=()
fi

failed=0
while read -r suite release; do
  case "$suite" in ''|'#'*) continue ;; esac
  out="$REPORT/$release"
  rm -rf "$out" && mkdir -p "$out"
  script="cd $ROOT && export RUST_BACKTRACE=1"
  # Under TCG a rule call is tens of times slower: the tests widen the rules' CPU budgets.
  [ ${#accel[@]} -gt 0 ] && script+=" && export RULEHOST_TEST_EMULATED=1"
  for t in "${tests[@]}"; do
    script+=" && $ROOT/$t --test-threads=1 >> $out/tests.txt 2>&1"
  done
  script+="; echo \$? > $out/rc; $ROOT/target/release/rulehost run --check > $out/check.txt 2>&1; echo \$? > $out/check-rc"
  started=$(date +%s)
  timeout 900 "$VNG" "${accel[@]}" --run "$KERNELS/$release/vmlinuz" --user root \
    --memory 2G --rwdir "$out" --exec "$script" > "$out/vng.txt" 2>&1 || echo "vng exit $?" >> "$out/vng.txt"
  took=$(( $(date +%s) - started ))
  rc=$(cat "$out/rc" 2>/dev/null || echo "no result")
  passed=$( { grep -ho "[0-9]* passed" "$out/tests.txt" 2>/dev/null || true; } | awk "{s+=\$1} END {print s+0}")
  if [ "$rc" = 0 ] && [ "$(cat "$out/check-rc" 2>/dev/null)" = 0 ]; then
    echo "kernel $release ($suite): ok, $passed tests passed, check passed, ${took}s"
  else
    failed=1
    echo "kernel $release ($suite): FAILED (tests exit $rc, check exit $(cat "$out/check-rc" 2>/dev/null || echo none), ${took}s)"
    tail -n 40 "$out/tests.txt" 2>/dev/null || tail -n 40 "$out/vng.txt"
    tail -n 5 "$out/check.txt" 2>/dev/null || true
  fi
  grep -h '^program \|^hooks: \|^env capture: ' "$out/check.txt" 2>/dev/null | sed 's/^/  /' || true
done < tests/kernels/kernels.list
exit $failed
