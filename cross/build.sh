#!/bin/sh
# Builds a stripped, static release binary of tgknock for one target and prints its path.
#   cross/build.sh TARGET      TARGET: x86_64-unknown-linux-musl, aarch64-unknown-linux-musl,
#                                      armv7-unknown-linux-musleabihf
# It picks the best way available here, in this order:
#   1. `cross` (Cross.toml), when it is installed and Docker answers;
#   2. cargo with the rustup target and a Debian cross compiler as linker;
#   3. for a target whose std rustup cannot download (armv7 on some mirrors): nightly
#      `-Z build-std` with Debian's musl-dev for that architecture.
# A missing tool is named, with the command that installs it.
set -eu

target=${1:?usage: cross/build.sh TARGET}
cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}
out="target/$target/release/tgknock"

say() { echo "cross/build.sh: $*" >&2; }
die() { say "$*"; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }
need() { # need COMMAND "how to install it"
    have "$1" || die "$1 is missing: $2"
}

case "$target" in
x86_64-unknown-linux-musl)      cc="" ; deb_cc="" ;;
aarch64-unknown-linux-musl)     cc=aarch64-linux-gnu-gcc ; deb_cc=gcc-aarch64-linux-gnu ;;
armv7-unknown-linux-musleabihf) cc=arm-linux-gnueabihf-gcc ; deb_cc=gcc-arm-linux-gnueabihf ;;
*) die "unknown target '$target' (x86_64-unknown-linux-musl, aarch64-unknown-linux-musl, armv7-unknown-linux-musleabihf)" ;;
esac
upper=$(echo "$target" | tr 'a-z-' 'A-Z_')
lower=$(echo "$target" | tr '-' '_')

# 1. cross, with Docker.
if [ "${TGKNOCK_NO_CROSS:-}" != 1 ] && have cross && have docker && docker info >/dev/null 2>&1; then
    say "building $target with cross (Docker)"
    cross build --release --locked --target "$target" >&2
    echo "$out"
    exit 0
fi

# 2. The rustup target and a cross linker.
installed() { rustup target list --installed 2>/dev/null | grep -qx "$target"; }
if have rustup && ! installed; then
    rustup target add "$target" >&2 2>/dev/null || say "rustup cannot download the $target standard library here"
fi
if ! have rustup || installed; then
    if [ -n "$cc" ]; then
        need "$cc" "apt-get install $deb_cc"
        export "CARGO_TARGET_${upper}_LINKER=$cc" "CC_${lower}=$cc"
    fi
    say "building $target with cargo and the rustup target${cc:+ (linker $cc)}"
    $CARGO build --release --locked --target "$target" >&2
    echo "$out"
    exit 0
fi

# 3. Nightly build-std with Debian's musl for the architecture.
case "$target" in
armv7-unknown-linux-musleabihf)
    musl_cc=arm-linux-musleabihf-gcc
    musl_deb="dpkg --add-architecture armhf && apt-get update && apt-get install musl-dev:armhf"
    libgcc_eh=$(ls /usr/lib/gcc-cross/arm-linux-gnueabihf/*/libgcc_eh.a 2>/dev/null | sort -V | tail -n 1)
    ;;
aarch64-unknown-linux-musl)
    musl_cc=aarch64-linux-musl-gcc
    musl_deb="dpkg --add-architecture arm64 && apt-get update && apt-get install musl-dev:arm64"
    libgcc_eh=$(ls /usr/lib/gcc-cross/aarch64-linux-gnu/*/libgcc_eh.a 2>/dev/null | sort -V | tail -n 1)
    ;;
*) die "rustup has no $target standard library and there is no fallback for it" ;;
esac
need rustup "see https://rustup.rs"
# Nightly when there is one; otherwise the stable compiler with its own std sources, which
# accepts -Z flags under RUSTC_BOOTSTRAP=1 (the same std, built from source).
tc_opt=""
if rustup toolchain list | grep -q '^nightly'; then
    toolchain=+nightly
    tc_opt="--toolchain nightly"
else
    toolchain=
    export RUSTC_BOOTSTRAP=1
    say "no nightly toolchain: using stable with RUSTC_BOOTSTRAP=1 for -Z build-std"
fi
# shellcheck disable=SC2086
rustup component list --installed $tc_opt 2>/dev/null | grep -q '^rust-src' \
    || rustup component add rust-src $tc_opt >&2 \
    || die "rust-src is missing: rustup component add rust-src $tc_opt"
need "$musl_cc" "$musl_deb"
need "$cc" "apt-get install $deb_cc"
[ -n "$libgcc_eh" ] || die "libgcc_eh.a of $deb_cc is missing: apt-get install $deb_cc"
# Rust's std links -lunwind; Debian's libgcc_eh provides the same symbols.
unwind="target/cross-unwind/$target"
mkdir -p "$unwind"
ln -sf "$libgcc_eh" "$unwind/libunwind.a"
export "CARGO_TARGET_${upper}_LINKER=$musl_cc" "CC_${lower}=$musl_cc"
# Since std is rebuilt anyway, rebuild it for size, and drop panic locations: the armv7
# binary must stay under 1.5 MB (1.25 MB this way, 1.49 MB without).
export "CARGO_TARGET_${upper}_RUSTFLAGS=-C link-self-contained=no -L $(pwd)/$unwind -Z location-detail=none"
say "building $target with ${toolchain:-stable} -Z build-std (linker $musl_cc)"
$CARGO $toolchain build --release --locked -Z build-std=std,panic_abort \
    -Z build-std-features=optimize_for_size --target "$target" >&2
echo "$out"
