#!/bin/sh
# Installs what `make build` and `make test` need on a fresh Debian machine (bookworm),
# every package by name (nothing left to Recommends), and the Rust pieces with rustup and
# cargo. Idempotent: installs only what is missing.
#   tests/setup.sh build   the static x86_64 binary: rust-src, rustup's x86_64 musl target,
#                          gcc, musl-tools, git (the build's SOURCE_DATE_EPOCH), certificates
#   tests/setup.sh test    every tier: the above, clippy/rustfmt, the cross compilers for
#                          aarch64/armv7/ARMv6 (musl for ARM: cross/musl.sh), qemu-user, iptables/nftables/iproute2,
#                          lintian, shellcheck, debootstrap + systemd-nspawn, nsenter and
#                          pgrep (the fresh and system tiers), pamtester (the PAM test),
#                          reprepro, gnupg, gpgv, sqv and python3 (the system tier's
#                          signed apt repository, served over HTTP; `make repo`),
#                          qemu-system-arm (also qemu-system-aarch64), e2fsprogs (mkfs.ext4 -d,
#                          debugfs) and socat (the ARM system tier),
#                          cargo-deb, cargo-fuzz (and g++ for libFuzzer)
#   tests/setup.sh coverage what `make coverage` needs: the above, and rustup's llvm-tools
#                          with cargo-llvm-cov
# As root it runs apt-get; otherwise it names what is missing and the command that installs
# it, and exits 1 (the tiers that need it then fail in CI, or say SKIPPED outside it).
set -eu

what=${1:-test}
# Versions of the cargo tools, so every machine builds the same packages.
CARGO_DEB_VERSION=3.8.0
CARGO_FUZZ_VERSION=0.13.1
CARGO_LLVM_COV_VERSION=0.9.1

build_debs="gcc libc6-dev make git ca-certificates musl-tools file"
test_debs="$build_debs g++ procps util-linux iproute2 iptables nftables
    gcc-aarch64-linux-gnu libc6-dev-arm64-cross
    gcc-arm-linux-gnueabihf libc6-dev-armhf-cross binutils-arm-linux-gnueabihf
    qemu-user-static systemd lintian shellcheck debootstrap systemd-container debian-archive-keyring
    pamtester reprepro gnupg gpgv sqv python3 qemu-system-arm e2fsprogs socat"

have() { command -v "$1" >/dev/null 2>&1; }
say() { echo "setup: $*" >&2; }
missing_debs() {
    for p in "$@"; do
        dpkg-query -W -f='${db:Status-Status}\n' "$p" 2>/dev/null | grep -qx installed || echo "$p"
    done
}

case "$what" in
build) debs=$build_debs ;;
test | coverage) debs=$test_debs ;;
*) echo "usage: $0 build|test|coverage" >&2; exit 2 ;;
esac

status=0
root=false
[ "$(id -u)" = 0 ] && root=true

# Debian packages.
if ! have dpkg-query; then
    say "not a Debian system: install the equivalents of: $debs"
    status=1
else
    # shellcheck disable=SC2086
    need=$(missing_debs $debs | tr '\n' ' ')
    if [ -n "$need" ]; then
        if $root && have apt-get; then
            say "installing $need"
            tries=0
            until {
                # An index of a mirror in sync can fail; the install may still work.
                DEBIAN_FRONTEND=noninteractive apt-get update -qq || say "apt-get update reported errors; trying the install anyway"
                # shellcheck disable=SC2086
                DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need >/dev/null
            }; do
                tries=$((tries + 1))
                [ "$tries" -lt 3 ] || { say "apt-get install failed: $need"; exit 1; }
                sleep 10
            done
            # shellcheck disable=SC2086
            still=$(missing_debs $debs | tr '\n' ' ')
            [ -z "$still" ] || { say "still missing after apt-get install: $still"; exit 1; }
        else
            say "missing: $need (as root: apt-get install --no-install-recommends $need)"
            status=1
        fi
    fi
fi

# Rust: the standard library's source (every release build rebuilds std), the musl targets
# whose crt objects and libc the x86_64 and aarch64 builds use, the lint components.
if ! have cargo || ! have rustup; then
    say "missing: Rust with rustup (https://rustup.rs)"
    exit 1
fi
components="rust-src"
targets="x86_64-unknown-linux-musl"
if [ "$what" != build ]; then
    components="$components clippy rustfmt"
    targets="$targets aarch64-unknown-linux-musl"
fi
[ "$what" = coverage ] && components="$components llvm-tools"
installed_components=$(rustup component list --installed 2>/dev/null)
for c in $components; do
    echo "$installed_components" | grep -q "^$c" && continue
    rustup component add "$c" >&2 || { say "rustup component add $c failed"; status=1; }
done
installed_targets=$(rustup target list --installed 2>/dev/null)
for t in $targets; do
    echo "$installed_targets" | grep -qx "$t" && continue
    rustup target add "$t" >&2 || { say "rustup target add $t failed"; status=1; }
done

# Cargo tools, pinned.
cargo_tool() { # cargo_tool SUBCOMMAND CRATE VERSION
    if cargo "$1" --version 2>/dev/null | grep -q " $3\$\| $3 "; then return 0; fi
    say "cargo install $2 --version $3 --locked"
    cargo install "$2" --version "$3" --locked >&2 || { say "cargo install $2 failed"; status=1; }
}
if [ "$what" != build ]; then
    cargo_tool deb cargo-deb "$CARGO_DEB_VERSION"
    cargo_tool fuzz cargo-fuzz "$CARGO_FUZZ_VERSION"
fi
if [ "$what" = coverage ]; then
    cargo_tool llvm-cov cargo-llvm-cov "$CARGO_LLVM_COV_VERSION"
fi
exit $status
