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
    pkg ip iproute2
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
