# Thin entry points. `make demo` runs the pipeline end to end; `make test` runs every test.
# Both install what they need (apt packages, the tansu broker, the API fuzzer) and start
# the services.

CARGO ?= cargo
export PATH := $(HOME)/.cargo/bin:$(PATH)

.PHONY: demo test bench services-up services-down services-status build pytools

build:
	$(CARGO) build --release --bins

services-up:
	scripts/services.sh up

services-down:
	scripts/services.sh down

services-status:
	scripts/services.sh status

demo: services-up build
	scripts/demo.sh

pytools:
	scripts/pytools.sh

test: services-up pytools
	$(CARGO) test --workspace --all-targets --no-fail-fast

bench:
	$(CARGO) bench -p shardflow-model
