#!/usr/bin/env bash
# Fuzzes rulehost's parsers of untrusted input for a bounded time (tests/fuzz: cargo-fuzz,
# libFuzzer and AddressSanitizer): the ring-buffer record decoder, the replay line parser
# (Tracee v0.24 and rulehost JSON), the cgroup-path parser and rule metadata validation.
# Each target runs for FUZZ_SECONDS (default 30) on a scratch copy of its committed seed
# corpus, so nothing under version control changes. Exits non-zero if any target crashes (a panic, a broken
# invariant, a sanitizer report, a timeout or running out of memory); the input that did
# it is saved in tests/fuzz/crashes/<target>/.
#
#   scripts/fuzz.sh                      # every target (`make fuzz` builds its inputs first)
#   FUZZ_SECONDS=600 scripts/fuzz.sh replay_line
#
# host/build.rs embeds target/bpf/rulehost-probes.o and the guest wasm modules, which
# `make ebpf guest` build; it finds them in CARGO_TARGET_DIR (or ./target) while the
# fuzz build itself goes to tests/fuzz/target.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
FUZZ_DIR=tests/fuzz
FUZZ_SECONDS=${FUZZ_SECONDS:-30}
CARGO_FUZZ_VERSION=0.13.2
# The workspace's pinned toolchain: the host crate needs rustc >= 1.99 (its
# rust-version), which the pinned eBPF nightly (ebpf/rust-toolchain.toml) is older than.
# RUSTC_BOOTSTRAP lets this stable compiler take -Zsanitizer=address; cargo-fuzz
# recognises it. FUZZ_TOOLCHAIN picks another toolchain.
TOOLCHAIN=${FUZZ_TOOLCHAIN:-$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)}
export RUSTC_BOOTSTRAP=1
if [ $# -gt 0 ]; then TARGETS=("$@"); else TARGETS=(ring_decoder replay_line cgroup_path metadata packed_findings); fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo "+$TOOLCHAIN" install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
fi

FUZZ=(cargo "+$TOOLCHAIN" fuzz)
OPTS=(--fuzz-dir "$FUZZ_DIR" --target-dir "$FUZZ_DIR/target")
if [ $# -gt 0 ]; then
  for target in "${TARGETS[@]}"; do "${FUZZ[@]}" build "${OPTS[@]}" "$target"; done
else
  "${FUZZ[@]}" build "${OPTS[@]}"
fi

# Panics print where they happened; anyhow errors (the parsers' normal result) must not
# capture a backtrace each, which would slow the fuzzers down several times.
export RUST_BACKTRACE=1 RUST_LIB_BACKTRACE=0
WORK=$FUZZ_DIR/work
rm -rf "$WORK"
mkdir -p "$WORK"
failed=()
summary=()
for target in "${TARGETS[@]}"; do
  [ -d "$FUZZ_DIR/corpus/$target" ] || { echo "fuzz: no seed corpus $FUZZ_DIR/corpus/$target" >&2; exit 2; }
  cp -r "$FUZZ_DIR/corpus/$target" "$WORK/$target"
  mkdir -p "$FUZZ_DIR/crashes/$target"
  log=$WORK/$target.log
  echo "fuzz: running $target for ${FUZZ_SECONDS}s (log: $log)"
  status=0
  "${FUZZ[@]}" run "${OPTS[@]}" "$target" "$WORK/$target" -- \
    -max_total_time="$FUZZ_SECONDS" -timeout=10 -print_final_stats=1 \
    -artifact_prefix="$ROOT/$FUZZ_DIR/crashes/$target/" >"$log" 2>&1 || status=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  inputs=$(find "$WORK/$target" -type f | wc -l)
  if [ "$status" -eq 0 ]; then
    summary+=("fuzz: $target: ok, ${runs:-?} runs in ${FUZZ_SECONDS}s, corpus grew to $inputs inputs, no crashes")
  else
    failed+=("$target")
    tail -n 80 "$log"
    crash=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
    summary+=("fuzz: $target: FAILED (exit $status) after ${runs:-?} runs; input: ${crash:-see $log}; reproduce: RUSTC_BOOTSTRAP=1 cargo +$TOOLCHAIN fuzz run ${OPTS[*]} $target ${crash:-<input>}")
  fi
done

printf '%s\n' "${summary[@]}"
# The plain closing line CI reads: one "test" per fuzz target.
echo "fuzz: $(( ${#TARGETS[@]} - ${#failed[@]} )) passed, ${#failed[@]} failed"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: ${#failed[@]} of ${#TARGETS[@]} target(s) crashed: ${failed[*]}" >&2
  exit 1
fi
