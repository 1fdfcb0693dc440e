#!/bin/sh
# The packaging tier: the release tarballs, the .deb packages, install.sh, and the init
# files. Needs `make dist deb` first (the Makefile's test-packaging target does it).
# Checks, and fails loudly on the first problem:
#  - each tarball holds the binary, docs, example config, install.sh and init files; the
#    binary is static and runs (under qemu for ARM); armv7 ≤ 1.5 MB; SHA256SUMS verifies
#  - each .deb: dpkg-deb --info/--contents show Depends: iptables, the binary, the unit,
#    the tmpfiles entry, the conffile, maintainer scripts
#  - systemd-analyze verify accepts the unit
#  - install.sh --root: installs with the right modes, is idempotent (keeps the config),
#    --uninstall removes what it installed and keeps the config, --purge removes it
#  - the init scripts parse (sh -n)
set -eu
cd "$(dirname "$0")/.."
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
fail() { echo "tests/packaging.sh: FAILED: $*" >&2; exit 1; }
ok() { echo "  ok  $*"; }
skip() {
    if [ "${CI:-}" = true ]; then fail "$*"; fi
    echo "SKIPPED: $*" >&2
}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "packaging tier: make deb (dist tarballs for three targets, then .deb packages)"
mkdir -p target
if ! make --no-print-directory deb > target/packaging-build.log 2>&1; then
    tail -n 20 target/packaging-build.log >&2
    skip "make deb failed (a cross toolchain missing? see target/packaging-build.log)"
    exit 0
fi
grep '^dist/' target/packaging-build.log | sed 's/^/  /'
(cd dist && sha256sum -c --quiet SHA256SUMS) || fail "dist/SHA256SUMS does not verify"
ok "dist/SHA256SUMS verifies"
for t in x86_64-unknown-linux-musl aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf; do
    tgz="dist/tgknock-$version-$t.tar.gz"
    [ -f "$tgz" ] || fail "$tgz is missing"
    tar -C "$work" -xzf "$tgz"
    d="$work/tgknock-$version-$t"
    for f in tgknock README.md CHANGELOG.md tgknock.conf.example install.sh systemd/tgknock.service \
        tmpfiles.d/tgknock.conf openrc/tgknock sysvinit/tgknock cron/tgknock; do
        [ -e "$d/$f" ] || fail "$tgz lacks $f"
    done
    desc=$(file "$d/tgknock")
    case "$desc" in
    *"statically linked"* | *"static-pie linked"*) ;;
    *) fail "$t binary is not static: $desc" ;;
    esac
    size=$(wc -c < "$d/tgknock")
    case "$t" in
    x86_64-*) runner="" ;;
    aarch64-*) runner=qemu-aarch64-static ;;
    armv7-*) runner=qemu-arm-static
        [ "$size" -le 1572864 ] || fail "armv7 binary is $size bytes, over 1.5 MB" ;;
    esac
    if [ -z "$runner" ] || command -v "$runner" >/dev/null 2>&1; then
        v=$($runner "$d/tgknock" --version) || fail "$t binary does not run"
        [ "$v" = "tgknock $version ($t)" ] || fail "$t --version says '$v'"
    else
        skip "$runner missing: cannot run the $t binary"
    fi
    ok "$tgz: complete, static ($size bytes), --version '$v'"
done

if command -v dpkg-deb >/dev/null 2>&1; then
    for arch in arm64 armhf amd64; do
        deb="dist/tgknock_${version}_$arch.deb"
        [ -f "$deb" ] || fail "$deb is missing"
        info=$(dpkg-deb --info "$deb")
        contents=$(dpkg-deb --contents "$deb")
        echo "$info" | grep -q "Architecture: $arch" || fail "$deb: wrong architecture"
        echo "$info" | grep -q "Depends: iptables" || fail "$deb: does not depend on iptables"
        for s in postinst prerm postrm conffiles; do
            echo "$info" | grep -q " $s" || fail "$deb: no $s"
        done
        for f in ./usr/bin/tgknock ./lib/systemd/system/tgknock.service ./usr/lib/tmpfiles.d/tgknock.conf \
            ./etc/tgknock/tgknock.conf ./var/lib/tgknock/ ./usr/share/doc/tgknock/README.md; do
            echo "$contents" | grep -q " $f\$" || fail "$deb lacks $f"
        done
        echo "$contents" | grep -q -- "-rw-r----- root/root .* ./etc/tgknock/tgknock.conf" || fail "$deb: config mode is not 0640"
        dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles | grep -qx /etc/tgknock/tgknock.conf \
            || fail "$deb: the config is not a conffile"
        dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./postinst | grep -q "useradd\|adduser" \
            || fail "$deb: postinst creates no service user"
        ok "$deb: Depends iptables, binary, unit, tmpfiles, conffile, maintainer scripts"
    done
else
    skip "dpkg-deb missing: cannot check the .deb packages"
fi

if command -v systemd-analyze >/dev/null 2>&1; then
    unit="$work/tgknock.service"
    sed "s#^ExecStart=/usr/bin/tgknock#ExecStart=$(pwd)/target/x86_64-unknown-linux-musl/release/tgknock#" \
        packaging/systemd/tgknock.service > "$unit"
    out=$(systemd-analyze verify "$unit" 2>&1) || fail "systemd-analyze verify: $out"
    [ -z "$out" ] || fail "systemd-analyze verify complains: $out"
    ok "systemd-analyze verify accepts the unit, without a warning"
else
    skip "systemd-analyze missing (apt-get install systemd): cannot verify the unit"
fi

for s in packaging/install.sh packaging/sysvinit/tgknock packaging/openrc/tgknock packaging/deb/build.sh; do
    sh -n "$s" || fail "$s does not parse"
done
ok "install.sh and the init scripts parse"

# install.sh into a scratch root, twice, then uninstall.
r="$work/root"
bin=target/x86_64-unknown-linux-musl/release/tgknock
sh packaging/install.sh --root "$r" --binary "$bin" > "$work/install1.log" || fail "install.sh: $(cat "$work/install1.log")"
mode() { stat -c '%a' "$1"; }
[ "$(mode "$r/usr/local/bin/tgknock")" = 755 ] || fail "binary mode $(mode "$r/usr/local/bin/tgknock")"
[ "$(mode "$r/etc/tgknock/tgknock.conf")" = 640 ] || fail "config mode $(mode "$r/etc/tgknock/tgknock.conf")"
[ "$(mode "$r/etc/tgknock/token")" = 600 ] || fail "token mode $(mode "$r/etc/tgknock/token")"
[ "$(mode "$r/var/lib/tgknock")" = 750 ] || fail "state dir mode"
grep -q '^ExecStart=/usr/local/bin/tgknock run' "$r/etc/systemd/system/tgknock.service" || fail "unit ExecStart not adjusted"
[ -f "$r/etc/tmpfiles.d/tgknock.conf" ] || fail "no tmpfiles entry"
echo "TGKNOCK_ALLOWED_USERS=42" >> "$r/etc/tgknock/tgknock.conf"
sh packaging/install.sh --root "$r" --binary "$bin" > "$work/install2.log" || fail "second install.sh run failed"
grep -q "TGKNOCK_ALLOWED_USERS=42" "$r/etc/tgknock/tgknock.conf" || fail "a second install overwrote the config"
ok "install.sh --root: modes 755/640/600/750, unit adjusted, idempotent, config kept"
TGKNOCK_INSTALL_SYSTEMD=0 sh packaging/install.sh --root "$work/root2" --binary "$bin" > /dev/null || fail "install.sh without systemd"
[ -x "$work/root2/etc/init.d/tgknock" ] && grep -q '/usr/local/bin/tgknock watchdog' "$work/root2/etc/cron.d/tgknock" \
    || fail "install.sh without systemd did not install the init script and cron line"
ok "install.sh without systemd: init script and cron watchdog"
sh packaging/install.sh --root "$r" --uninstall > /dev/null || fail "install.sh --uninstall"
[ ! -e "$r/usr/local/bin/tgknock" ] && [ ! -e "$r/etc/systemd/system/tgknock.service" ] || fail "--uninstall left files"
[ -f "$r/etc/tgknock/tgknock.conf" ] || fail "--uninstall removed the config"
sh packaging/install.sh --root "$r" --uninstall --purge > /dev/null || fail "install.sh --uninstall --purge"
[ ! -e "$r/etc/tgknock" ] && [ ! -e "$r/var/lib/tgknock" ] || fail "--purge left config or state"
ok "install.sh --uninstall keeps the config, --purge removes it"
echo "packaging tier: all checks passed"
