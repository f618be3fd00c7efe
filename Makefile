# website-monitor: the local stack, the connectors, tests and benchmarks.
# `make run` and `make test` work on a fresh machine (see README.md).

SHELL := /bin/bash
CARGO ?= cargo
CONFIG ?= connector.toml

.PHONY: help up down status build run test lint fmt toolchain bench clean-stack

help:
	@echo "make run     local stack + both connectors with $(CONFIG) (Ctrl-C stops both)"
	@echo "make test    stack up, fmt check, clippy -D warnings, every test"
	@echo "make bench   benchmarks against the local stack"
	@echo "make up / make down / make status   the local Kafka + PostgreSQL"
	@echo "make build / make lint / make fmt"

up:
	@scripts/stack.sh up

down:
	@scripts/stack.sh down

status:
	@scripts/stack.sh status

toolchain:
	@scripts/toolchain.sh

build: toolchain
	$(CARGO) build --workspace --bins

run: up build
	@scripts/run.sh $(CONFIG)

lint: toolchain
	@if $(CARGO) fmt --version >/dev/null 2>&1; then $(CARGO) fmt --all -- --check; \
	  else echo "WARNING: rustfmt is not installed and could not be installed; skipping the format check" >&2; fi
	@if $(CARGO) clippy --version >/dev/null 2>&1; then $(CARGO) clippy --workspace --all-targets -- -D warnings; \
	  else echo "WARNING: clippy is not installed and could not be installed; skipping lints" >&2; fi
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps --quiet

fmt:
	$(CARGO) fmt --all

# The stack first: it also installs the C toolchain pieces rdkafka needs.
test: up lint
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace

bench: up
	@scripts/bench.sh

clean-stack: down
	rm -rf .stack
