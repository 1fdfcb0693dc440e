#!/bin/sh
# Builds a stripped, static release binary of tgknock for one target and prints its path.
#   cross/build.sh TARGET
#   TARGET: x86_64-unknown-linux-musl, aarch64-unknown-linux-musl,
#           armv7-unknown-linux-musleabihf, arm-unknown-linux-musleabihf (ARMv6: Pi 1, Zero)
#
# Every target is built the same way, for size: the standard library is rebuilt with the
# program (-Z build-std, optimize_for_size), a panic aborts at once without formatting a
# message (-C panic=immediate-abort, no panic locations), no unwind tables, and the
# executable is not position independent (no run-time relocations to carry). These are
# unstable options: the installed toolchain (stable is enough) accepts them under
# RUSTC_BOOTSTRAP=1, so no nightly is needed and the bytes do not depend on which nightly.
#
# Ways, in this order:
#   1. `cross` (Cross.toml) with the same flags, when it is installed and Docker answers
#      (TGKNOCK_NO_CROSS=1 skips it);
#   2. cargo with Debian's cross compilers as C compiler and linker:
#      x86_64, aarch64  rustup's musl for the target (crt objects and libc), musl-gcc /
#                       aarch64-linux-gnu-gcc;
#      armv7, arm       musl built here from Debian's source (cross/musl.sh) for ARMv7-A,
#                       and for the ARM1176 with -C target-cpu=arm1176jzf-s (ARMv6: Debian's
#                       armhf musl is ARMv7 Thumb-2 code, which an ARMv6 core cannot run),
#                       linked by arm-linux-gnueabihf-gcc with musl's start files.
# A missing tool is named, with the command that installs it; any failure exits non-zero.
#
# Reproducible: the same source gives the same bytes wherever it is checked out.
# SOURCE_DATE_EPOCH defaults to the time of the last commit, and the source directory,
# CARGO_HOME and the toolchain's sysroot are remapped in paths the compilers record.
set -eu

target=${1:?usage: cross/build.sh TARGET}
cd "$(dirname "$0")/.."
top=$(pwd)
CARGO=${CARGO:-cargo}
out="target/$target/release/tgknock"

say() { echo "cross/build.sh: $*" >&2; }
die() { say "$*"; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }
need() { # need COMMAND "how to install it"
    have "$1" || die "$1 is missing: $2"
}

case "$target" in
x86_64-unknown-linux-musl) cc="musl-gcc"; cc_deb="musl-tools" ;;
aarch64-unknown-linux-musl) cc="aarch64-linux-gnu-gcc"; cc_deb="gcc-aarch64-linux-gnu libc6-dev-arm64-cross" ;;
armv7-unknown-linux-musleabihf) cc="arm-linux-gnueabihf-gcc"; cc_deb="gcc-arm-linux-gnueabihf libc6-dev-armhf-cross" ;;
arm-unknown-linux-musleabihf) cc="arm-linux-gnueabihf-gcc"; cc_deb="gcc-arm-linux-gnueabihf libc6-dev-armhf-cross" ;;
*) die "unknown target '$target' (x86_64-unknown-linux-musl, aarch64-unknown-linux-musl, armv7-unknown-linux-musleabihf, arm-unknown-linux-musleabihf)" ;;
esac
upper=$(echo "$target" | tr 'a-z-' 'A-Z_')
lower=$(echo "$target" | tr '-' '_')

need "$CARGO" "install Rust with rustup (https://rustup.rs)"
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
    SOURCE_DATE_EPOCH=$(git -C "$top" log -1 --format=%ct 2>/dev/null || stat -c %Y Cargo.toml)
fi
export SOURCE_DATE_EPOCH
export RUSTC_BOOTSTRAP=1
sysroot=$(rustc --print sysroot)
cargo_home=${CARGO_HOME:-$HOME/.cargo}
remap="--remap-path-prefix=$top=/tgknock --remap-path-prefix=$cargo_home=/cargo --remap-path-prefix=$sysroot=/rustc"
flags="-Z unstable-options -C panic=immediate-abort -Z location-detail=none -C force-unwind-tables=no -C relocation-model=static -C target-feature=+crt-static"
# LLVM's machine outliner folds repeated instruction sequences into calls (24 kB on x86_64).
flags="$flags -C llvm-args=-enable-machine-outliner"
# A derived Debug prints the type or variant name only, not its fields (about 34 kB on
# x86_64 and 37 kB on ARMv6): no user-facing text of tgknock is a derived Debug; a few
# log lines (an update's kind, a refused code's reason) show the variant alone.
flags="$flags -Z fmt-debug=shallow"
[ "$target" = arm-unknown-linux-musleabihf ] && flags="$flags -C target-cpu=arm1176jzf-s"
flags="$flags ${TGKNOCK_EXTRA_RUSTFLAGS:-}"
build_std="-Z build-std=std,panic_abort -Z build-std-features=optimize_for_size"

# 1. cross, with Docker: the images' own compilers, linker and musl.
if [ "${TGKNOCK_NO_CROSS:-}" != 1 ] && have cross && have docker && docker info >/dev/null 2>&1; then
    say "building $target with cross (Docker)"
    export "CARGO_TARGET_${upper}_RUSTFLAGS=$flags"
    # shellcheck disable=SC2086
    cross build --release --locked --target "$target" $build_std >&2
    echo "$out"
    exit 0
fi

# The toolchain's lld folds identical functions (--icf=all: 11 kB more on x86_64). It is
# handed to the C compiler driver by hand: -C link-self-contained=no, which the ARM builds
# need for their start files, would also turn off rustc's own switch to lld.
host=$(rustc -vV | sed -n 's/^host: //p')
flags="$flags -C link-arg=-fuse-ld=lld -C link-arg=-B$sysroot/lib/rustlib/$host/bin/gcc-ld -C link-arg=-Wl,--icf=all"
# Nothing unwinds (panics abort at once), so no unwind tables anywhere: none from the C
# compiler (ring's C parts, CFLAGS below), those of ring's assembly dropped at the link
# (cross/no-eh-frame.ld), and no .eh_frame_hdr index (together 9.7 kB on x86_64). lld's
# -O2 merges strings that end another string (4 kB).
flags="$flags -C link-arg=-Wl,--no-eh-frame-hdr -C link-arg=-Wl,-T,$top/cross/no-eh-frame.ld -C link-arg=-Wl,-O2"

# 2. cargo and Debian's cross compilers. -Z build-std needs the standard library's source.
if have rustup; then
    rustup component list --installed 2>/dev/null | grep -q '^rust-src' \
        || rustup component add rust-src >&2 \
        || die "rust-src is missing: rustup component add rust-src"
fi
[ -d "$sysroot/lib/rustlib/src/rust/library" ] || die "the standard library's source is missing: rustup component add rust-src"
case "$cc" in
musl-gcc) need musl-gcc "apt-get install musl-tools" ;;
*) need "$cc" "apt-get install $cc_deb" ;;
esac

# Rust's std links -lunwind for musl targets. With panics aborting at once nothing calls
# the unwinder; an empty archive satisfies the flag, and a real reference would fail the
# link (so an unwinder of the wrong architecture can never slip in).
empty_unwind() {
    d="target/cross-unwind/$target"
    mkdir -p "$d"
    [ -f "$d/libunwind.a" ] || printf '!<arch>\n' > "$d/libunwind.a"
    echo "$top/$d"
}

case "$target" in
x86_64-unknown-linux-musl | aarch64-unknown-linux-musl)
    # rustup's musl: crt objects and libc.a for the target, self-contained.
    if have rustup && ! rustup target list --installed | grep -qx "$target"; then
        rustup target add "$target" >&2 || die "rustup cannot add $target: rustup target add $target"
    fi
    linker=$cc
    [ "$cc" = musl-gcc ] && linker=cc
    ;;
armv7-unknown-linux-musleabihf | arm-unknown-linux-musleabihf)
    cpu=armv7-a
    [ "$target" = arm-unknown-linux-musleabihf ] && cpu=arm1176jzf-s
    musl=$(sh cross/musl.sh "$cpu") || die "could not build musl for $cpu (see above)"
    linker="$musl/bin/musl-gcc"
    cc=$linker
    flags="$flags -C link-self-contained=no -L $(empty_unwind)"
    ;;
esac

export "CARGO_TARGET_${upper}_LINKER=$linker" "CC_${lower}=$cc"
export "CFLAGS_${lower}=-ffile-prefix-map=$top=/tgknock -ffile-prefix-map=$cargo_home=/cargo -fno-asynchronous-unwind-tables -fno-unwind-tables"
export "CARGO_TARGET_${upper}_RUSTFLAGS=$flags $remap"
say "building $target: cargo -Z build-std, linker $linker, SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH"
# shellcheck disable=SC2086
$CARGO build --release --locked --target "$target" $build_std >&2
echo "$out"
