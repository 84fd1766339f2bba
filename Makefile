# sidepool — the two commands of the README, and a few helpers.
#   make demo   install what is missing, start a throwaway PostgreSQL, run sidepool in front of it
#               with a short workload, and say where to look
#   make test   install what is missing and run everything: import cycles and size limits, fmt, clippy (warnings
#               denied), tests
#   make bench  PostgreSQL directly vs sidepool vs PgBouncer, measured by sidepool-loadtest;
#               writes bench/results.md, bench/results.json and bench/chart.svg (~10 min)
#   make fuzz   every cargo-fuzz target in protocol/fuzz for FUZZ_SECONDS (default 30) each

CARGO ?= cargo
export CARGO_TERM_COLOR ?= never
FUZZ_SECONDS ?= 30

.PHONY: all deps test cycles fmt-check clippy unit demo bench fuzz build release clean

all: test

deps:
	@bash scripts/install-deps.sh

# No import cycle among the modules of proxy/src, and its size limits (see the scripts' docstrings).
cycles:
	python3 scripts/module-cycles.py
	python3 scripts/size-limits.py

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

unit:
	$(CARGO) test --workspace --locked --no-fail-fast

test: deps cycles fmt-check clippy unit

build:
	$(CARGO) build --workspace --locked

release:
	$(CARGO) build --release --locked -p sidepool -p sidepool-loadtest

demo: deps release
	@bash scripts/demo.sh

bench: deps
	@bash scripts/bench.sh

fuzz:
	@FUZZ_SECONDS=$(FUZZ_SECONDS) bash scripts/fuzz.sh

clean:
	$(CARGO) clean
