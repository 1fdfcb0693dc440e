#!/bin/sh
# Builds the .deb of tgknock for one target with cargo-deb, from the binary cross/build.sh
# made (cargo deb --no-build), and prints its path.
#   packaging/deb/build.sh TARGET OUTDIR     e.g. arm-unknown-linux-musleabihf dist
# What goes in, and where, is [package.metadata.deb] in Cargo.toml; the maintainer scripts
# are packaging/deb/scripts/ (debhelper's own snippets for the unit and tmpfiles.d); the
# unit is packaging/systemd/tgknock.service as it is in the tree. This script prepares the
# generated files cargo-deb takes from target/deb/: the Debian changelog, the docs and the
# man pages, gzipped with -9n as dh_compress does. Same source, same bytes: the archive's
# times are SOURCE_DATE_EPOCH (default: the time of the last commit).
set -eu
target=${1:?usage: build.sh TARGET OUTDIR}
outdir=${2:?usage: build.sh TARGET OUTDIR}
cd "$(dirname "$0")/../.."
die() { echo "packaging/deb/build.sh: $*" >&2; exit 1; }
command -v cargo-deb >/dev/null 2>&1 \
    || die "cargo-deb is missing: tests/setup.sh test installs it (cargo install cargo-deb --locked)"
bin="target/$target/release/tgknock"
[ -x "$bin" ] || die "$bin is missing: build it first with cross/build.sh $target"
case "$target" in
x86_64-*) arch=amd64 ;;
aarch64-*) arch=arm64 ;;
arm-* | armv7-*) arch=armhf ;;
*) die "no Debian architecture for $target" ;;
esac
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
top=$(sed -n '1s/^tgknock (\([^)]*\)).*/\1/p' packaging/deb/changelog)
[ "$top" = "$version" ] || die "packaging/deb/changelog's last entry is $top, Cargo.toml says $version: add an entry"
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
    SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || stat -c %Y Cargo.toml)
fi
export SOURCE_DATE_EPOCH

mkdir -p target/deb "$outdir"
gz() { # gz FILE: target/deb/FILE.gz
    dest="target/deb/$(basename "$1").gz"
    gzip -9n -c "$1" > "$dest"
}
gz packaging/deb/changelog
gz README.md
gz CHANGELOG.md
gz packaging/man/tgknock.1
gz packaging/man/tgknock.conf.5
out="$outdir/tgknock_${version}_$arch.deb"
cargo deb --no-build --no-strip --target "$target" --output "$out" >&2 || die "cargo deb failed for $target"

# cargo-deb writes no md5sums; add them as dh_md5sums does (every file but the conffiles)
# and pack again with dpkg-deb: one compressor thread, so the bytes do not depend on the
# machine's core count, and times clamped to SOURCE_DATE_EPOCH.
command -v dpkg-deb >/dev/null 2>&1 || die "dpkg-deb is missing: apt-get install dpkg"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dpkg-deb -R "$out" "$work/pkg"
(
    cd "$work/pkg"
    sed 's|^/||' DEBIAN/conffiles > "$work/conffiles" 2>/dev/null || : > "$work/conffiles"
    find . -path ./DEBIAN -prune -o -type f -print | sed 's|^\./||' | LC_ALL=C sort \
        | grep -vxF -f "$work/conffiles" | xargs md5sum > DEBIAN/md5sums
)
chmod 0644 "$work/pkg/DEBIAN/md5sums"
dpkg-deb --root-owner-group --threads-max=1 -Zxz --build "$work/pkg" "$out" >/dev/null
echo "$out"
