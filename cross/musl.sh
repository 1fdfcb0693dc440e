#!/bin/sh
# Builds musl's static libc for a 32-bit ARM core from Debian's musl source, and a
# musl-gcc wrapper around Debian's arm-linux-gnueabihf-gcc that compiles and links against
# it; prints the install prefix.
#   cross/musl.sh CPU     arm1176jzf-s  ARMv6 with VFP, ARM code (Pi 1, Zero, Zero W)
#                         armv7-a       ARMv7-A with VFPv3-D16, Thumb-2 (Debian armhf's baseline)
# Debian's own armhf musl (musl-dev:armhf) is ARMv7 Thumb-2 code, which the ARM1176 cannot
# run; and its musl-gcc links gcc's crtbegin/crtend, which a Rust program does not need.
# Building both from the same source keeps the two ARM builds alike.
# The source comes from the Debian archive this machine's apt already uses (apt-get source,
# checked against the archive's signed index), through a private sources list and cache
# under target/musl/, so the system's apt configuration is left alone. The result is kept
# under target/musl/CPU/ and rebuilt only when missing.
set -eu
cpu=${1:?usage: cross/musl.sh CPU}
cd "$(dirname "$0")/.."
top=$(pwd)
base="$top/target/musl"
prefix="$base/$cpu"
say() { echo "cross/musl.sh: $*" >&2; }
die() { say "$*"; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }

case "$cpu" in
arm1176jzf-s) cflags="-mcpu=arm1176jzf-s -mfpu=vfp -mfloat-abi=hard -marm" ;;
armv7-a) cflags="-march=armv7-a -mfpu=vfpv3-d16 -mfloat-abi=hard -mthumb" ;;
*) die "unknown CPU '$cpu' (arm1176jzf-s, armv7-a)" ;;
esac
gcc=arm-linux-gnueabihf-gcc

if [ -f "$prefix/lib/libc.a" ] && [ -x "$prefix/bin/musl-gcc" ]; then
    echo "$prefix"
    exit 0
fi
have "$gcc" || die "$gcc is missing: apt-get install gcc-arm-linux-gnueabihf libc6-dev-armhf-cross"
have apt-get || die "apt-get is missing: the musl source comes from the Debian archive"
have make || die "make is missing: apt-get install make"

# The source, from the archive and suite the system's apt is configured with (once; both
# CPUs build from it).
src() { for f in "$base"/src/musl_*.orig.tar.gz; do [ -f "$f" ] && echo "$f"; done | tail -n 1; }
mkdir -p "$base/src"
orig=$(src)
if [ -z "$orig" ]; then
    apt="$base/apt"
    mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial"
    # shellcheck source=/dev/null
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    [ -n "$codename" ] || die "cannot tell the Debian release from /etc/os-release"
    keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    [ -f "$keyring" ] || die "$keyring is missing: apt-get install debian-archive-keyring"
    # shellcheck disable=SC2016 # apt's own $(FIELD) syntax
    apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(IDENTIFIER)' 2>/dev/null \
        | awk -v c="$codename" -v k="$keyring" '$2 == c && $3 == "Packages" { print "deb-src [signed-by=" k "] " $1 " " $2 " main" }' \
        | sort -u > "$apt/sources.list"
    [ -s "$apt/sources.list" ] || die "no Debian archive for '$codename' in apt's sources (apt-get update first)"
    set -- -q -o "Dir::Etc::SourceList=$apt/sources.list" -o Dir::Etc::SourceParts=/nonexistent \
        -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache" -o APT::Sandbox::User=root
    say "fetching musl's source from $(cut -d' ' -f3,4 "$apt/sources.list" | head -n 1)"
    apt-get "$@" update >&2 || die "apt-get update of the source index failed"
    (cd "$base/src" && apt-get "$@" source --download-only musl >&2) || die "apt-get source musl failed"
    orig=$(src)
    [ -n "$orig" ] || die "apt-get source musl left no musl_*.orig.tar.gz in $base/src"
fi
version=$(basename "$orig" .orig.tar.gz | sed 's/^musl_//')

# Build and install libc.a, crt objects and headers.
build="$base/build-$cpu"
rm -rf "$build" "$prefix"
mkdir -p "$build"
tar -C "$build" --strip-components=1 -xzf "$orig"
say "building musl $version for $cpu"
(
    cd "$build"
    CROSS_COMPILE=arm-linux-gnueabihf- CC="$gcc" CFLAGS="$cflags -Os -ffile-prefix-map=$build=/musl" \
        ./configure --target=arm-linux-musleabihf --prefix="$prefix" --disable-shared --disable-wrapper >&2
    make -j"$(nproc 2>/dev/null || echo 2)" >/dev/null
    make install >/dev/null
) || die "building musl $version failed (in $build)"

# The wrapper: Debian's cross gcc with musl's headers, start files and libc instead of
# glibc's. No libgcc and no crtbegin/crtend: Debian builds those for ARMv7 Thumb-2 (which
# the ARM1176 cannot run), and a Rust program needs neither (compiler_builtins has the
# helpers; a missing one fails the link).
mkdir -p "$prefix/bin"
cat > "$prefix/lib/musl-gcc.specs" <<EOT
%rename cpp_options old_cpp_options

*cpp_options:
-nostdinc -isystem $prefix/include -isystem include%s %(old_cpp_options)

*cc1:
%(cc1_cpu) -nostdinc -isystem $prefix/include -isystem include%s

*link_libgcc:
-L$prefix/lib

*libgcc:


*startfile:
%{!shared: $prefix/lib/crt1.o} $prefix/lib/crti.o

*endfile:
$prefix/lib/crtn.o

*link:
-nostdlib %{shared:-shared} %{static:-static} %{rdynamic:-export-dynamic}

EOT
cat > "$prefix/bin/musl-gcc" <<EOT
#!/bin/sh
exec "$gcc" "\$@" -specs "$prefix/lib/musl-gcc.specs"
EOT
chmod 0755 "$prefix/bin/musl-gcc"
echo "$version" > "$prefix/VERSION"
echo "$prefix"
