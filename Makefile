# Thin entry points. `make demo` runs the pipeline end to end; `make test` runs every test.
# Both install what they need (apt packages, the patched tansu broker, built once per
# machine into ~/.cache/shardflow, and for the tests the API fuzzer) and start the services.
#
# One profile for everything: `make test` after `make demo` reuses the demo's build instead
# of compiling the workspace again in another profile.

CARGO ?= cargo
PROFILE ?= release
export PATH := $(HOME)/.cargo/bin:$(PATH)

.PHONY: demo test lint bench scale services-up services-down services-status cluster-up build pytools

build:
	$(CARGO) build --profile $(PROFILE) --bins

services-up:
	scripts/services.sh up

services-down:
	scripts/services.sh down

services-status:
	scripts/services.sh status

cluster-up:
	scripts/services.sh cluster-up

demo: services-up build
	scripts/demo.sh

pytools:
	scripts/pytools.sh

# Clippy in the build's profile: the build scripts (librdkafka's cmake, zstd) and the
# proc macros it compiles are the ones `build` then reuses, instead of a second set in dev.
lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --profile $(PROFILE) --workspace --all-targets -- -D warnings

# The end-to-end tests start the binaries: build them first (cargo test builds only test
# harnesses of binary targets).
# The cluster test (tests/tests/e2e/cluster.rs) needs ZooKeeper and two more ClickHouse nodes.
test: lint services-up cluster-up pytools build
	$(CARGO) test --profile $(PROFILE) --workspace --all-targets --no-fail-fast

bench:
	$(CARGO) bench -p shardflow-model

# The whole pipeline at scale on the real services (bench/scale.py; docs/benchmarks.md).
ROWS ?= 10000000
CONSUMERS ?= 2
scale: services-up build
	bench/scale.py --rows $(ROWS) --consumers $(CONSUMERS)
