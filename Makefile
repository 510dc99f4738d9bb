# rulehost build entry points. Every target installs what it needs first (scripts/setup.sh
# is idempotent and fast when the pinned toolchains are present). After that one-time
# setup, plain cargo works too: host/build.rs builds the eBPF programs and the example
# rules, tests/build.rs the fixture rules.

CARGO        ?= cargo
GUEST_TARGET := wasm32-unknown-unknown
RULES_DIR    := target/rules
# The example rules, shipped as target/rules/<name>.wasm.
RULES        := -p guest-k8s-api-connection -p guest-cloud-metadata-access
# Hostile rules the sandbox tests load (tests/fixtures/).
FIXTURES     := -p fixture-infinite-loop -p fixture-memory-bomb -p fixture-trap-every-event \
                -p fixture-http-import -p fixture-finding-flood -p fixture-wrong-world \
                -p fixture-init-error -p fixture-stateful-panic -p fixture-hoarder \
                -p fixture-big-minimum -p fixture-garbage-findings

# The agent image: a static musl binary (profile `image`: release, stripped).
MUSL         := x86_64-unknown-linux-musl
VERSION      := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)

.PHONY: all setup ebpf guest build image manifests docs-check test test-kernels lint bench fuzz run clean

all: build

setup:
	@bash scripts/setup.sh

ebpf: setup
	@bash ebpf/build.sh

# The example rules and the hostile fixture rules, as core modules (what build.rs does).
guest: setup
	CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=debuginfo \
	  $(CARGO) build --release --target $(GUEST_TARGET) --target-dir target/guests $(RULES) $(FIXTURES)

# Leaves target/release/rulehost and the shippable rule target/rules/k8s_api_connection.wasm
# (host/build.rs builds the eBPF object and the rules), and the same rule in JavaScript and
# Python beside it with the hostile fixtures in those languages (scripts/build-rules.sh,
# componentize-js and componentize-py, pinned in sdk-js/ and sdk-python/).
build: setup
	$(CARGO) build --release -p rulehost
	@bash scripts/build-rules.sh
	@echo "built target/release/rulehost and $(RULES_DIR)/k8s_api_connection{,_js,_python}.wasm"

# rulehost:<version> and rulehost:dev in the local Docker Engine (started if none
# answers), saved to target/image/rulehost.tar.
image: build
	$(CARGO) build --profile image --target $(MUSL) -p rulehost
	@bash scripts/image.sh $(VERSION) target/$(MUSL)/image/rulehost

# deploy/kubernetes validated strictly and offline (kubernetes-validate from PyPI).
manifests: build
	@bash scripts/validate-manifests.sh

# Every rulehost command and flag README.md and docs/ show, checked against the binary.
docs-check: build
	@bash scripts/docs-check.sh

test: build image manifests docs-check
	$(CARGO) test --release --workspace --exclude guest-k8s-api-connection --exclude guest-cloud-metadata-access
	$(CARGO) test --release $(RULES) --lib

# The kernel matrix: Debian's 5.10, 6.1 and 6.12 (tests/kernels/kernels.list) booted with
# virtme-ng and QEMU, the kernel-facing tests (the DaemonSet's pod, from the image,
# among them) and `run --check` run inside each.
test-kernels: build image
	@bash scripts/test-kernels.sh

lint: build
	$(CARGO) fmt --all -- --check
	python3 scripts/import-cycles.py
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings
	$(CARGO) clippy --release --target $(GUEST_TARGET) $(RULES) $(FIXTURES) -- -D warnings

bench: build
	$(CARGO) bench -p rulehost --bench dispatch --bench reload
	$(CARGO) bench -p rulehost-tests --bench live

# Fuzzes the ring-buffer decoder, the replay parsers and the cgroup-path parser for
# FUZZ_SECONDS (default 30) each, on a copy of tests/fuzz/corpus; fails on any crash.
# host/build.rs builds what it embeds (the eBPF object and the rules).
fuzz: setup
	@bash scripts/fuzz.sh

run: build
	./target/release/rulehost run

clean:
	$(CARGO) clean
