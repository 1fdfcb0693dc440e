#!/bin/sh
# Installs what `make build` / `make test` need on a fresh Debian machine, when it can
# (root for apt-get; rustup for Rust targets). Idempotent: installs only what is missing.
#   tests/setup.sh build   - the x86_64 musl target (and musl-tools) for the static binary
#   tests/setup.sh test    - rustfmt/clippy, and as root iptables + iproute2 for the netns tier
set -eu

need_apt=""
have() { command -v "$1" >/dev/null 2>&1; }
pkg() { # pkg COMMAND PACKAGE: queue PACKAGE when COMMAND is missing
    if ! have "$1" && ! [ -x "/usr/sbin/$1" ]; then need_apt="$need_apt $2"; fi
}

case "${1:-test}" in
build)
    if have rustup && ! rustup target list --installed | grep -qx x86_64-unknown-linux-musl; then
        rustup target add x86_64-unknown-linux-musl || echo "setup: could not add the x86_64 musl target; building for the host instead" >&2
    fi
    pkg musl-gcc musl-tools
    ;;
test)
    if have rustup; then
        rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
        rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
    fi
    pkg iptables-legacy iptables
    pkg nft nftables
    pkg ip iproute2
    pkg setpriv util-linux
    # The ARM tier: cross linkers and qemu-user; the packaging tier: dpkg-deb, file,
    # systemd-analyze.
    pkg aarch64-linux-gnu-gcc gcc-aarch64-linux-gnu
    pkg arm-linux-gnueabihf-gcc gcc-arm-linux-gnueabihf
    pkg qemu-aarch64-static qemu-user-static
    pkg file file
    pkg dpkg-deb dpkg
    pkg systemd-analyze systemd
    if have rustup; then
        rustup target list --installed | grep -qx aarch64-unknown-linux-musl || rustup target add aarch64-unknown-linux-musl || true
        rustup target list --installed | grep -qx x86_64-unknown-linux-musl || rustup target add x86_64-unknown-linux-musl || true
        # armv7's std may not be downloadable (cross/build.sh then uses nightly build-std).
        if ! rustup target list --installed | grep -qx armv7-unknown-linux-musleabihf \
            && ! rustup target add armv7-unknown-linux-musleabihf >/dev/null 2>&1; then
            rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal || true
            rustup +nightly component list --installed 2>/dev/null | grep -q '^rust-src' \
                || rustup component add rust-src --toolchain nightly || true
            if ! have arm-linux-musleabihf-gcc && [ "$(id -u)" = 0 ] && have dpkg; then
                dpkg --print-foreign-architectures | grep -qx armhf || dpkg --add-architecture armhf
                need_apt="$need_apt musl-dev:armhf"
            fi
        fi
    fi
    ;;
*)
    echo "usage: $0 build|test" >&2
    exit 2
    ;;
esac

if [ -n "$need_apt" ]; then
    if [ "$(id -u)" = 0 ] && have apt-get; then
        echo "setup: installing$need_apt"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq || echo "setup: apt-get update reported errors; trying the install anyway" >&2
        # shellcheck disable=SC2086
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need_apt >/dev/null
    else
        echo "setup: missing$need_apt (install them as root; the tests that need them will say SKIPPED)" >&2
    fi
fi
