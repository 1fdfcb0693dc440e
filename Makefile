# tgknock — see README.md. `make build` builds the static binary, `make test` runs every
# test tier (the network-namespace tier needs root; in CI it must run).

CARGO  ?= cargo
TARGET ?= $(shell rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl && echo x86_64-unknown-linux-musl || rustc -vV | sed -n 's/^host: //p')
BIN    := target/$(TARGET)/release/tgknock

.PHONY: all build test lint unit integration test-arm test-packaging fuzz bench dist deb clean

all: build

build:
	@sh tests/setup.sh build
	$(MAKE) --no-print-directory _build TARGET=$(TARGET)

_build:
	$(CARGO) build --release --locked --target $(TARGET)
	@ls -l $(BIN) | awk '{ print "built $(BIN): " $$5 " bytes" }'
	@file $(BIN) 2>/dev/null | sed 's/^[^:]*: /  /' || true
	@$(BIN) --version

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

unit:
	$(CARGO) test --locked --lib

integration:
	$(CARGO) test --locked --test integration

# Static, stripped binaries for the three musl targets, as tarballs, plus SHA256SUMS.
dist:
	sh cross/dist.sh

# .deb packages for arm64, armhf and amd64 (dpkg-deb), after dist.
deb: dist
	sh packaging/deb/build.sh arm64 target/aarch64-unknown-linux-musl/release/tgknock dist
	sh packaging/deb/build.sh armhf target/armv7-unknown-linux-musleabihf/release/tgknock dist
	sh packaging/deb/build.sh amd64 target/x86_64-unknown-linux-musl/release/tgknock dist
	cd dist && sha256sum tgknock-*.tar.gz tgknock_*.deb > SHA256SUMS

# The integration tests again with the aarch64 and armv7 builds, under qemu-user.
test-arm:
	sh tests/cross.sh

# Tarballs, .deb packages, install.sh, the systemd unit.
test-packaging:
	sh tests/packaging.sh

# The contract's budgets, measured (BENCHMARKS.md); BASELINE="<command line>" compares
# another build in the same run. BENCH_IDLE_SECONDS shortens the idle window (default 60).
bench:
	@sh tests/setup.sh build
	$(CARGO) build --release --locked --target x86_64-unknown-linux-musl
	BASELINE='$(BASELINE)' $(CARGO) bench --locked --bench bench

# cargo fuzz (libFuzzer) on the chat parser and the update decoder, FUZZ_SECONDS each.
fuzz:
	sh tests/fuzz.sh

test:
	@sh tests/setup.sh test
	$(MAKE) --no-print-directory lint
	$(CARGO) test --locked
	$(MAKE) --no-print-directory test-arm
	$(MAKE) --no-print-directory test-packaging
	$(MAKE) --no-print-directory fuzz

clean:
	$(CARGO) clean
