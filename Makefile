# rulehost build entry points. Every target installs what it needs first (scripts/setup.sh
# is idempotent and fast when the pinned toolchains are present).

CARGO        ?= cargo
GUEST_TARGET := wasm32-unknown-unknown
RULES_DIR    := target/rules
# The example rules, shipped as target/rules/<name>.wasm.
RULES        := -p guest-k8s-api-connection -p guest-cloud-metadata-access
# Hostile rules the sandbox tests load (tests/fixtures/).
FIXTURES     := -p fixture-infinite-loop -p fixture-memory-bomb -p fixture-trap-every-event \
                -p fixture-fs-import -p fixture-finding-flood -p fixture-wrong-world \
                -p fixture-init-error -p fixture-stateful-panic

.PHONY: all setup ebpf guest build test lint bench fuzz run clean

all: build

setup:
	@bash scripts/setup.sh

ebpf: setup
	@bash ebpf/build.sh

# The shippable rule, and the hostile fixture rules the sandbox tests load.
guest: setup
	$(CARGO) build --release --target $(GUEST_TARGET) $(RULES) $(FIXTURES)

# Leaves target/release/rulehost and the shippable rule target/rules/k8s_api_connection.wasm.
build: ebpf guest
	$(CARGO) build --release -p rulehost
	@echo "built target/release/rulehost and $(RULES_DIR)/k8s_api_connection.wasm"

test: build
	$(CARGO) test --release --workspace --exclude guest-k8s-api-connection --exclude guest-cloud-metadata-access
	$(CARGO) test --release $(RULES) --lib

lint: build
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings
	$(CARGO) clippy --release --target $(GUEST_TARGET) $(RULES) $(FIXTURES) -- -D warnings

bench: build
	$(CARGO) bench -p rulehost --bench dispatch --bench reload
	$(CARGO) bench -p rulehost-tests --bench live

# Fuzzes the ring-buffer decoder, the replay parsers and the cgroup-path parser for
# FUZZ_SECONDS (default 30) each, on a copy of tests/fuzz/corpus; fails on any crash.
# Needs only what host/build.rs embeds (the eBPF object and the guest modules).
fuzz: ebpf guest
	@bash scripts/fuzz.sh

run: build
	./target/release/rulehost run

clean:
	$(CARGO) clean
