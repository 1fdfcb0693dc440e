# tgknock — see README.md. `make build` builds the static binary, `make test` runs every
# test tier (the network-namespace tier needs root; in CI it must run).

CARGO  ?= cargo
TARGET ?= $(shell rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl && echo x86_64-unknown-linux-musl || rustc -vV | sed -n 's/^host: //p')
BIN    := target/$(TARGET)/release/tgknock

.PHONY: all build test lint unit integration clean

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

test:
	@sh tests/setup.sh test
	$(MAKE) --no-print-directory lint
	$(CARGO) test --locked

clean:
	$(CARGO) clean
