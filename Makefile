# tgknock — see README.md. On a fresh Debian machine, as root: `make build` builds the
# static binary, `make test` installs what the tiers need (tests/setup.sh) and runs them all.

CARGO  ?= cargo
TARGET := x86_64-unknown-linux-musl
BIN    := target/$(TARGET)/release/tgknock

.PHONY: all build test lint unit integration coverage test-arm test-packaging test-system test-arm-system fuzz fresh bench dist deb repo man clean

all: build

# The static, stripped x86_64 musl binary, built the way every release target is
# (cross/build.sh): never a dynamically linked host build.
build:
	@sh tests/setup.sh build || echo "make build: going on; cross/build.sh names what is missing"
	@sh cross/build.sh $(TARGET) >/dev/null
	@ls -l $(BIN) | awk '{ print "built $(BIN): " $$5 " bytes" }'
	@file $(BIN) | sed 's/^[^:]*: /  /'
	@$(BIN) --version

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --locked --all-targets -- -D warnings
	shellcheck cross/*.sh tests/*.sh packaging/deb/build.sh packaging/deb/scripts/* packaging/repo.sh .ci/run

unit:
	$(CARGO) test --locked --lib

integration:
	$(CARGO) test --locked --test integration

# Line coverage of src/ by the unit and integration tiers together (cargo-llvm-cov), the
# binary the integration tests run instrumented too: a line per file and the total, also
# in target/coverage/summary.txt (tests/coverage.sh says how). Not part of `make test`: it
# builds everything again instrumented and runs both tiers once more, as long again as
# the `cargo test` tier.
coverage:
	@sh tests/setup.sh coverage || [ "$${CI:-}" != true ]
	sh tests/coverage.sh

# Every target's static binary as a tarball, the .deb packages (amd64, arm64, armhf with
# the ARMv6 build), and dist/SHA256SUMS over them all.
dist:
	sh cross/dist.sh

deb: dist

# A signed apt repository of dist/'s packages in target/repo/ (reprepro; publish that
# directory as it is): TGKNOCK_REPO_KEY=<fingerprint> signs with that key of GNUPGHOME's
# keyring; without it, a throwaway key (tests only: it says so).
repo: dist
	sh packaging/repo.sh target/repo

# packaging/man/ from `tgknock --help` and src/store/config.rs (tests/manpages.rs checks them).
man:
	TGKNOCK_UPDATE_MAN=1 $(CARGO) test --locked --test integration manpages

# The integration tests again with the aarch64, armv7 and ARMv6 builds, under qemu-user.
test-arm:
	sh tests/cross.sh

# Tarballs, .deb packages (lintian), install.sh, the systemd unit.
test-packaging:
	sh tests/packaging.sh

# A booted Debian (debootstrap + systemd-nspawn --boot, systemd as PID 1): the .deb and the
# tarball installed and used the README's way, `tgknock setup` then the command it prints,
# buttons, actions, login notices through sshd's PAM stack; judged by the kernel and TCP.
test-system:
	bash tests/system.sh

# Debian booted on real ARM kernels under full-system emulation (qemu-system-arm -M virt
# -cpu cortex-a7 with the armhf .deb, qemu-system-aarch64 -cpu cortex-a53 with the arm64
# one; Debian's kernels, debootstrapped roots cached under target/arm-system/): the package
# installed the README's way and judged inside by the kernel's rules and TCP; deadlines kept
# by the kernel with the daemon stopped, rate limits and bans on nft and iptables, a reboot.
test-arm-system:
	bash tests/arm-system.sh

# A debootstrapped Debian in systemd-nspawn runs tests/setup.sh and `make dist`: every
# package the build needs is installed by name, and the release it builds is byte for
# byte the host's (reproducible builds).
fresh: dist
	sh tests/fresh.sh

# The contract's budgets, measured (BENCHMARKS.md); BASELINE="<command line>" compares
# another build in the same run. BENCH_IDLE_SECONDS shortens the idle window (default 60).
bench:
	@sh tests/setup.sh test || true
	sh cross/dist.sh >/dev/null
	BASELINE='$(BASELINE)' $(CARGO) bench --locked --bench bench

# cargo fuzz (libFuzzer) on the chat parser and the update decoder, FUZZ_SECONDS each.
fuzz:
	sh tests/fuzz.sh

# Runs one tier and says how long it took: CI's 90 minutes are shared by all of them.
tier = @start=$$(date +%s); $(2); rc=$$?; echo "make test: tier $(1): $$(($$(date +%s) - start)) s, exit $$rc"; exit $$rc

# In CI (CI=true) nothing may be missing; elsewhere the tiers that need it say SKIPPED.
test:
	$(call tier,setup,sh tests/setup.sh test || [ "$${CI:-}" != true ])
	$(call tier,lint,$(MAKE) --no-print-directory lint)
	$(call tier,cargo test,$(CARGO) test --locked)
	$(call tier,arm,$(MAKE) --no-print-directory test-arm)
	$(call tier,packaging,$(MAKE) --no-print-directory test-packaging)
	$(call tier,system,$(MAKE) --no-print-directory test-system)
	$(call tier,arm system,$(MAKE) --no-print-directory test-arm-system)
	$(call tier,fresh,$(MAKE) --no-print-directory fresh)
	$(call tier,fuzz,$(MAKE) --no-print-directory fuzz)

clean:
	$(CARGO) clean
	rm -rf dist
