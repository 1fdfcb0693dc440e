#!/bin/sh
# The packaging tier: the release (cross/dist.sh: four tarballs, three .deb packages,
# SHA256SUMS), install.sh, and the init files. Fails loudly on the first problem:
#  - dist/SHA256SUMS verifies and covers every tarball and package in dist/
#  - each tarball holds the binary, docs, man pages, example config, install.sh, init
#    files and the PAM line of login notices (pam/); the binary is static, within the
#    contract's size budget, and runs (under qemu for ARM: the ARMv6 build with -cpu arm1176)
#  - each .deb: Depends adduser and iptables | nftables, the binary (armhf: the ARMv6 build),
#    the unit as it is in the tree, tmpfiles entry, the 0640 conffile, man pages, Debian
#    changelog and copyright, md5sums, maintainer scripts with debhelper's systemd snippets,
#    the PAM line as an example (the tree's file), a postinst that points to `tgknock setup`
#  - the example config names every key of tgknock.conf(5)
#  - lintian: no error and no warning (overrides carry their reason), output shown
#  - systemd-analyze verify accepts the unit
#  - install.sh --root: installs with the right modes, the man pages (from the source tree
#    and from the tarball), is idempotent (keeps the config), --uninstall removes what it
#    installed and keeps the config, --purge removes it
#  - the init and maintainer scripts parse (sh -n)
#  - the sysvinit script (its start, and the cron line's watchdog) and the OpenRC script run
#    the daemon as the service user with only CAP_NET_ADMIN and CAP_NET_RAW: as root, the
#    sysvinit script with a fake tgknock that records /proc/self/status (user nobody for
#    tgknock); the OpenRC script through OpenRC's own supervise-daemon.sh and
#    supervise-daemon (installed, or Debian's openrc package unpacked under target/).
#    `sh tests/packaging.sh --init-only` runs these checks alone, first.
# Outside CI a missing tool makes a check say SKIPPED; in CI (CI=true) it fails.
set -eu
cd "$(dirname "$0")/.."
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
fail() { echo "tests/packaging.sh: FAILED: $*" >&2; exit 1; }
ok() { echo "  ok  $*"; }
skip() {
    if [ "${CI:-}" = true ]; then fail "$*"; fi
    echo "SKIPPED: $*" >&2
}
have() { command -v "$1" >/dev/null 2>&1; }
work=$(mktemp -d)
# Processes a check started (fake daemons, a supervise-daemon), ended at exit by their pid.
started=""
cleanup() {
    # The OpenRC check's supervisor by its service name too: its pid is read through the
    # daemon's, which it may have just respawned, and a supervisor left behind respawns on.
    pkill -f '^supervise-daemon tgknock-packaging-test ' 2>/dev/null || true
    for p in $started; do kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
start=$(date +%s)

# The status lines that say who a process is: its ids, capabilities and no_new_privs.
who() { grep -E '^(Uid|Gid|CapInh|CapPrm|CapEff|CapAmb|CapBnd|NoNewPrivs):' "$1" | tr -s '\t ' ' '; }
# Fails unless the status file $2 shows user $3 with only CAP_NET_ADMIN and CAP_NET_RAW.
service_user_only() {
    what=$1 status=$2 uid=$3
    [ -s "$status" ] || fail "$what: the fake tgknock did not run"
    w=$(who "$status")
    for line in "Uid: $uid $uid $uid $uid" "CapPrm: 0000000000003000" "CapEff: 0000000000003000" \
        "CapAmb: 0000000000003000" "CapBnd: 0000000000003000" "NoNewPrivs: 1"; do
        echo "$w" | grep -qx "$line" || fail "$what: expected '$line' in /proc/PID/status, found: $(echo "$w" | tr '\n' ';')"
    done
}

echo "init scripts: the daemon runs as the service user with CAP_NET_ADMIN and CAP_NET_RAW only"
grep -q '^\* \* \* \* \* root /etc/init.d/tgknock watchdog ' packaging/cron/tgknock \
    || fail "the cron line does not run the init script's watchdog"
if grep -v '^#' packaging/cron/tgknock | grep -q 'bin/tgknock'; then
    fail "the cron line runs tgknock itself, as root"
fi
grep -q '^command="/usr/bin/setpriv"$' packaging/openrc/tgknock || fail "the OpenRC script does not run setpriv"
args=$(sed -n 's/^command_args="\(.*\)"$/\1/p' packaging/openrc/tgknock)
# shellcheck disable=SC2016 # $tgknock is the script's own variable
[ "$args" = '--reuid=tgknock --regid=tgknock --init-groups --inh-caps=-all,+net_admin,+net_raw --ambient-caps=-all,+net_admin,+net_raw --bounding-set=-all,+net_admin,+net_raw --no-new-privs -- $tgknock run --config /etc/tgknock/tgknock.conf' ] \
    || fail "the OpenRC script's command_args: $args"
ok "the cron line runs the init script's watchdog; the OpenRC script runs tgknock through setpriv as tgknock"
if [ "$(id -u)" != 0 ] || ! have setpriv || ! have unshare || ! id nobody >/dev/null 2>&1; then
    skip "the init scripts' start needs root, setpriv, unshare and the user nobody"
else
    f="$work/init"
    mkdir -p "$f/out" "$f/state"
    chmod 0755 "$work" "$f"
    nobody=$(id -u nobody)
    nogroup=$(id -gn nobody)
    chown nobody "$f/out"
    # A fake tgknock: `watchdog` records who it is, then starts `run` detached, as the real
    # one does; `run` records who it is and stays; `status` says all is well.
    cat > "$f/tgknock" <<FAKE
#!/bin/sh
case "\$1" in
watchdog)
    cat /proc/self/status > "$f/out/watchdog.status"
    setsid "\$0" run > /dev/null 2>&1 < /dev/null &
    i=0
    while [ ! -s "$f/out/run.status" ] && [ "\$i" -lt 100 ]; do sleep 0.1; i=\$((i + 1)); done
    ;;
run)
    echo "\$\$" > "$f/out/run.pid"
    cat /proc/self/status > "$f/out/run.tmp" && mv "$f/out/run.tmp" "$f/out/run.status"
    exec sleep 600
    ;;
esac
exit 0
FAKE
    chmod 0755 "$f/tgknock"
    echo "TGKNOCK_STATE_DIR=$f/state" > "$f/tgknock.conf"
    chmod 0644 "$f/tgknock.conf"
    # A state directory root's daemon used (an install from before the service user).
    chmod 0750 "$f/state"
    echo '{}' > "$f/state/state.json"
    sed -e "s#^BIN=.*#BIN=$f/tgknock#" -e "s#^CONF=.*#CONF=$f/tgknock.conf#" \
        -e "s#^SERVICE_USER=.*#SERVICE_USER=nobody#" -e "s#^SERVICE_GROUP=.*#SERVICE_GROUP=$nogroup#" \
        -e "s#^XTABLES_LOCK=.*#XTABLES_LOCK=$f/xtables.lock#" \
        packaging/sysvinit/tgknock > "$f/initd"
    for v in BIN CONF SERVICE_USER SERVICE_GROUP XTABLES_LOCK; do
        grep -q "^$v=$f\|^$v=nobody\|^$v=$nogroup" "$f/initd" || fail "the sysvinit script has no line $v= to point at the test's"
    done
    out=$(sh "$f/initd" start 2>&1) || fail "sysvinit start: $out"
    started="$started $(cat "$f/out/run.pid" 2>/dev/null || true)"
    service_user_only "sysvinit start: the watchdog" "$f/out/watchdog.status" "$nobody"
    service_user_only "sysvinit start: the daemon it starts" "$f/out/run.status" "$nobody"
    [ "$(stat -c %U "$f/state" "$f/state/state.json" | sort -u)" = nobody ] \
        || fail "sysvinit start: the state directory root used was not handed to the service user: $(ls -la "$f/state")"
    [ "$(stat -c '%a %G' "$f/xtables.lock")" = "640 $nogroup" ] \
        || fail "sysvinit start: the iptables lock is $(stat -c '%a %G' "$f/xtables.lock")"
    # The cron line's watchdog, with the daemon gone: the same.
    kill "$(cat "$f/out/run.pid")"
    rm -f "$f/out/run.status" "$f/out/watchdog.status" "$f/out/run.pid"
    out=$(sh "$f/initd" watchdog 2>&1) || fail "sysvinit watchdog: $out"
    started="$started $(cat "$f/out/run.pid" 2>/dev/null || true)"
    service_user_only "the cron line's watchdog" "$f/out/watchdog.status" "$nobody"
    service_user_only "the daemon the cron line's watchdog starts" "$f/out/run.status" "$nobody"
    kill "$(cat "$f/out/run.pid")"
    ok "sysvinit start and the cron line's watchdog: the watchdog and the daemon run as nobody (for tgknock), CapEff/CapAmb/CapBnd = net_admin,net_raw, no_new_privs; root's state directory handed over; xtables.lock 0640 group $nogroup"

    # OpenRC: the script's variables through OpenRC's own start function and supervise-daemon.
    rcsh=${TGKNOCK_OPENRC_SH:-/lib/rc/sh/supervise-daemon.sh}
    if ! have supervise-daemon && [ -z "${TGKNOCK_OPENRC_SH:-}" ]; then
        # Not installed here (installing it would enrol the machine's services in its
        # runlevels): Debian's own package, unpacked under target/ and used from there.
        rcroot=$(pwd)/target/openrc-root
        if [ ! -x "$rcroot/sbin/supervise-daemon" ] && have apt-get && have dpkg-deb; then
            d=$(mktemp -d)
            if (cd "$d" && apt-get download -qq openrc librc1 libeinfo1 >/dev/null 2>&1); then
                mkdir -p "$rcroot"
                for deb in "$d"/*.deb; do dpkg-deb -x "$deb" "$rcroot"; done
            fi
            rm -rf "$d"
        fi
        if [ -x "$rcroot/sbin/supervise-daemon" ]; then
            rcpath=$rcroot/sbin:$PATH
            for l in "$rcroot"/lib/*-linux-gnu; do rclib=$l; done
            rcsh=$rcroot/lib/rc/sh/supervise-daemon.sh
        fi
    fi
    if PATH=${rcpath:-$PATH} have supervise-daemon && [ -f "$rcsh" ]; then
        rm -f "$f/out/run.status" "$f/out/run.pid"
        sed -e 's/--reuid=tgknock --regid=tgknock/--reuid=nobody --regid='"$nogroup"'/' \
            -e "s#^tgknock=.*#tgknock=$f/tgknock#" packaging/openrc/tgknock > "$f/openrc"
        cat > "$f/openrc-start" <<DRIVE
set -e
# A /run of its own: supervise-daemon keeps its service state under /run/openrc.
mount -t tmpfs tmpfs /run
mkdir -p /run/openrc
export RC_SVCNAME=tgknock-packaging-test
ebegin() { :; }
eend() { return "\$1"; }
ewarn() { echo "\$*" >&2; }
eerror() { echo "\$*" >&2; }
service_set_value() { :; }
. "$f/openrc"
output_log=$f/out/openrc.log
error_log=$f/out/openrc.log
. "$rcsh"
supervise_start
DRIVE
        env PATH="${rcpath:-$PATH}" LD_LIBRARY_PATH="${rclib:-}" \
            unshare --mount --propagation private sh "$f/openrc-start" > "$f/openrc.out" 2>&1 \
            || fail "OpenRC supervise_start: $(cat "$f/openrc.out")"
        i=0
        while [ ! -s "$f/out/run.status" ] && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
        pid=$(cat "$f/out/run.pid" 2>/dev/null || true)
        # The supervisor first (it would restart the daemon), then the daemon.
        sup=$(ps -o ppid= -p "$pid" 2>/dev/null | tr -d ' ' || true)
        started="$started $sup $pid"
        service_user_only "OpenRC (supervise-daemon)" "$f/out/run.status" "$nobody"
        ok "OpenRC through supervise-daemon: the daemon runs as nobody (for tgknock), CapEff/CapAmb/CapBnd = net_admin,net_raw, no_new_privs"
    else
        skip "OpenRC's supervise-daemon and $rcsh are neither installed nor could Debian's openrc package be unpacked (apt-get download openrc): the OpenRC script was checked as text only"
    fi
fi
[ "${1:-}" = --init-only ] && exit 0

echo "packaging tier: cross/dist.sh (four targets, three .deb packages, SHA256SUMS)"
mkdir -p target
if ! sh cross/dist.sh > target/packaging-build.log 2>&1; then
    tail -n 30 target/packaging-build.log >&2
    skip "cross/dist.sh failed (a tool missing? tests/setup.sh test; see target/packaging-build.log)"
    exit 0
fi
grep '^dist/' target/packaging-build.log | sed 's/^/  /'
(cd dist && sha256sum -c --quiet SHA256SUMS) || fail "dist/SHA256SUMS does not verify"
listed=$(awk '{ print $2 }' dist/SHA256SUMS | sort | tr '\n' ' ')
present=$(cd dist && for f in tgknock-*.tar.gz tgknock_*.deb; do [ -e "$f" ] && echo "$f"; done | sort | tr '\n' ' ')
[ "$listed" = "$present" ] || fail "dist/SHA256SUMS lists '$listed', dist/ holds '$present'"
[ "$(echo "$listed" | wc -w)" = 7 ] || fail "dist/ should hold 4 tarballs and 3 packages: $listed"
ok "dist/SHA256SUMS verifies and covers all 7 files"

# run TARGET BINARY ARGS…: runs an ARM binary under qemu with the target's CPU.
run() {
    case "$1" in
    x86_64-*) shift; "$@" ;;
    aarch64-*) shift; qemu-aarch64-static "$@" ;;
    armv7-*) shift; qemu-arm-static -cpu cortex-a7 "$@" ;;
    arm-*) shift; qemu-arm-static -cpu arm1176 "$@" ;;
    esac
}
for t in x86_64-unknown-linux-musl aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf arm-unknown-linux-musleabihf; do
    tgz="dist/tgknock-$version-$t.tar.gz"
    [ -f "$tgz" ] || fail "$tgz is missing"
    tar -C "$work" -xzf "$tgz"
    d="$work/tgknock-$version-$t"
    for f in tgknock README.md CHANGELOG.md man/tgknock.1 man/tgknock.conf.5 tgknock.conf.example install.sh \
        systemd/tgknock.service tmpfiles.d/tgknock.conf openrc/tgknock sysvinit/tgknock cron/tgknock \
        pam/tgknock-notify-login pam/tgknock-approve-login; do
        [ -e "$d/$f" ] || fail "$tgz lacks $f"
    done
    for pam in tgknock-notify-login tgknock-approve-login; do
        cmp -s "$d/pam/$pam" "packaging/pam/$pam" || fail "$tgz: pam/$pam differs from the tree's"
    done
    desc=$(file "$d/tgknock")
    case "$desc" in
    *"statically linked"*) ;;
    *) fail "$t binary is not static: $desc" ;;
    esac
    size=$(wc -c < "$d/tgknock")
    case "$t" in
    arm*) budget=1300000 ;;
    x86_64-*) budget=1600000 ;;
    *) budget=1500000 ;;
    esac
    [ "$size" -le "$budget" ] || fail "$t binary is $size bytes, over the contract's $budget"
    case "$t" in
    x86_64-*) runner="" ;;
    aarch64-*) runner=qemu-aarch64-static ;;
    *) runner=qemu-arm-static ;;
    esac
    if [ -n "$runner" ] && ! have "$runner"; then
        skip "$runner missing (apt-get install qemu-user-static): cannot run the $t binary"
        continue
    fi
    v=$(run "$t" "$d/tgknock" --version) || fail "$t binary does not run"
    [ "$v" = "tgknock $version ($t)" ] || fail "$t --version says '$v'"
    ok "$tgz: complete, static, $size bytes (≤ $budget), --version '$v'"
done

if have dpkg-deb; then
    for arch in amd64 arm64 armhf; do
        deb="dist/tgknock_${version}_$arch.deb"
        [ -f "$deb" ] || fail "$deb is missing"
        info=$(dpkg-deb --info "$deb")
        contents=$(dpkg-deb --contents "$deb")
        echo "$info" | grep -qx " Architecture: $arch" || fail "$deb: wrong architecture"
        echo "$info" | grep -qx " Depends: adduser, iptables | nftables" || fail "$deb: Depends is not 'adduser, iptables | nftables'"
        for s in postinst prerm postrm conffiles md5sums; do
            echo "$info" | grep -q " $s" || fail "$deb: no $s"
        done
        for f in ./usr/bin/tgknock ./lib/systemd/system/tgknock.service ./usr/lib/tmpfiles.d/tgknock.conf \
            ./etc/tgknock/tgknock.conf ./usr/share/doc/tgknock/copyright ./usr/share/doc/tgknock/changelog.gz \
            ./usr/share/man/man1/tgknock.1.gz ./usr/share/man/man5/tgknock.conf.5.gz \
            ./usr/share/lintian/overrides/tgknock ./usr/share/doc/tgknock/README.md.gz \
            ./usr/share/doc/tgknock/examples/tgknock-notify-login \
            ./usr/share/doc/tgknock/examples/tgknock-approve-login; do
            echo "$contents" | grep -q " $f\$" || fail "$deb lacks $f"
        done
        echo "$contents" | grep -q -- "-rw-r----- root/root .* ./etc/tgknock/tgknock.conf" || fail "$deb: config mode is not 0640"
        x="$work/deb-$arch"
        dpkg-deb -x "$deb" "$x"
        dpkg-deb -e "$deb" "$x/DEBIAN"
        grep -qx /etc/tgknock/tgknock.conf "$x/DEBIAN/conffiles" || fail "$deb: the config is not a conffile"
        cmp -s "$x/lib/systemd/system/tgknock.service" packaging/systemd/tgknock.service \
            || fail "$deb: the unit differs from packaging/systemd/tgknock.service"
        (cd "$x" && md5sum --quiet -c DEBIAN/md5sums) || fail "$deb: md5sums do not verify"
        for pam in tgknock-notify-login tgknock-approve-login; do
            cmp -s "$x/usr/share/doc/tgknock/examples/$pam" "packaging/pam/$pam" \
                || fail "$deb: the PAM example differs from packaging/pam/$pam"
        done
        grep -q "sudo tgknock setup" "$x/DEBIAN/postinst" || fail "$deb: postinst does not point to 'sudo tgknock setup'"
        grep -q "adduser --system" "$x/DEBIAN/postinst" || fail "$deb: postinst creates no service user"
        grep -q "deb-systemd-helper enable 'tgknock.service'" "$x/DEBIAN/postinst" || fail "$deb: postinst does not enable the unit as debhelper does"
        # prerm: the daemon stops first, then its rules go.
        stop=$(grep -n "deb-systemd-invoke stop 'tgknock.service'" "$x/DEBIAN/prerm" | cut -d: -f1)
        down=$(grep -n "tgknock teardown" "$x/DEBIAN/prerm" | cut -d: -f1)
        if [ -z "$stop" ] || [ -z "$down" ] || [ "$stop" -ge "$down" ]; then
            fail "$deb: prerm does not stop the daemon before teardown"
        fi
        zcat "$x/usr/share/doc/tgknock/changelog.gz" | head -n 1 | grep -q "^tgknock ($version) " \
            || fail "$deb: changelog.gz does not start with tgknock ($version)"
        case "$arch" in
        armhf)
            # The ARMv6 build, for every board Raspberry Pi OS armhf runs on.
            cmp -s "$x/usr/bin/tgknock" target/arm-unknown-linux-musleabihf/release/tgknock \
                || fail "$deb does not hold the ARMv6 build"
            tag=$(arm-linux-gnueabihf-readelf -A "$x/usr/bin/tgknock" | sed -n 's/^ *Tag_CPU_arch: //p')
            [ "$tag" = v6KZ ] || fail "$deb: the binary is built for $tag, not ARMv6 (v6KZ)"
            v=$(run arm-unknown-linux-musleabihf "$x/usr/bin/tgknock" --version) || fail "$deb: the binary does not run on an ARM1176"
            ;;
        esac
        ok "$deb: Depends adduser, iptables | nftables; binary, unit, tmpfiles, 0640 conffile, man pages, changelog, copyright, md5sums, debhelper snippets, PAM example, postinst names tgknock setup"
    done
else
    skip "dpkg-deb missing: cannot check the .deb packages"
fi

# The example config shows every key the man page documents (commented out or set).
keys=$(sed -n 's/^\.B \(TGKNOCK_[A-Z0-9_]*\).*/\1/p' packaging/man/tgknock.conf.5)
[ "$(echo "$keys" | wc -w)" -ge 25 ] || fail "found only $(echo "$keys" | wc -w) keys in packaging/man/tgknock.conf.5"
for k in $keys; do
    case "$k" in
    *_) line="^#\{0,1\}${k}[A-Z0-9]" ;; # a family of keys: TGKNOCK_ACTION_<NAME>
    *) line="^#\{0,1\}$k=" ;;
    esac
    grep -q "$line" packaging/tgknock.conf.example || fail "packaging/tgknock.conf.example does not show $k"
done
ok "packaging/tgknock.conf.example shows all $(echo "$keys" | wc -w) keys of tgknock.conf(5)"

if have lintian; then
    echo "lintian (errors and warnings fail; overridden tags shown as O:, information as I:):"
    # Shown with the overrides and the information tags; judged by a run without them
    # (with --show-overrides, lintian 2.116 counts the overridden tags for --fail-on).
    out=$(lintian --display-info --show-overrides dist/tgknock_*.deb 2>&1) || true
    echo "$out" | grep -v 'running with root privileges' | sed 's/^/    /'
    if echo "$out" | grep -q '^[EW]: '; then fail "lintian: errors or warnings (above)"; fi
    lintian --fail-on error,warning dist/tgknock_*.deb >/dev/null 2>&1 \
        || fail "lintian --fail-on error,warning failed (exit $?)"
    ok "lintian: no error, no warning"
else
    skip "lintian missing (apt-get install lintian): cannot check the .deb packages"
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

for s in packaging/install.sh packaging/sysvinit/tgknock packaging/openrc/tgknock packaging/deb/build.sh packaging/deb/scripts/*; do
    sh -n "$s" || fail "$s does not parse"
done
ok "install.sh, the init scripts and the maintainer scripts parse"

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
for m in man1/tgknock.1 man5/tgknock.conf.5; do
    [ "$(mode "$r/usr/local/share/man/$m")" = 644 ] || fail "man page $m: mode $(mode "$r/usr/local/share/man/$m")"
    cmp -s "$r/usr/local/share/man/$m" "packaging/man/$(basename "$m")" || fail "man page $m differs from packaging/man/"
done
echo "TGKNOCK_ALLOWED_USERS=42" >> "$r/etc/tgknock/tgknock.conf"
sh packaging/install.sh --root "$r" --binary "$bin" > "$work/install2.log" || fail "second install.sh run failed"
grep -q "TGKNOCK_ALLOWED_USERS=42" "$r/etc/tgknock/tgknock.conf" || fail "a second install overwrote the config"
ok "install.sh --root: modes 755/640/600/750, man pages 644, unit adjusted, idempotent, config kept"
# The tarball's layout: install.sh finds the man pages in man/ beside it.
tr="$work/troot"
t=x86_64-unknown-linux-musl
sh "$work/tgknock-$version-$t/install.sh" --root "$tr" > "$work/install-tarball.log" \
    || fail "the tarball's install.sh: $(cat "$work/install-tarball.log")"
for m in man1/tgknock.1 man5/tgknock.conf.5; do
    cmp -s "$tr/usr/local/share/man/$m" "$work/tgknock-$version-$t/man/$(basename "$m")" \
        || fail "the tarball's install.sh did not install man/$(basename "$m")"
done
cmp -s "$tr/usr/local/bin/tgknock" "$work/tgknock-$version-$t/tgknock" || fail "the tarball's install.sh did not install its binary"
ok "the tarball's install.sh --root: its binary and its man pages (man/ beside it)"
TGKNOCK_INSTALL_SYSTEMD=0 sh packaging/install.sh --root "$work/root2" --binary "$bin" > /dev/null || fail "install.sh without systemd"
if ! [ -x "$work/root2/etc/init.d/tgknock" ] || ! grep -q '/etc/init.d/tgknock watchdog' "$work/root2/etc/cron.d/tgknock"; then
    fail "install.sh without systemd did not install the init script and cron line"
fi
ok "install.sh without systemd: init script and cron watchdog"
sh packaging/install.sh --root "$r" --uninstall > /dev/null || fail "install.sh --uninstall"
for f in usr/local/bin/tgknock etc/systemd/system/tgknock.service usr/local/share/man/man1/tgknock.1 usr/local/share/man/man5/tgknock.conf.5; do
    [ ! -e "$r/$f" ] || fail "--uninstall left /$f"
done
[ -f "$r/etc/tgknock/tgknock.conf" ] || fail "--uninstall removed the config"
sh packaging/install.sh --root "$r" --uninstall --purge > /dev/null || fail "install.sh --uninstall --purge"
if [ -e "$r/etc/tgknock" ] || [ -e "$r/var/lib/tgknock" ]; then fail "--purge left config or state"; fi
ok "install.sh --uninstall removes the binary, unit and man pages, keeps the config; --purge removes it"
echo "packaging tier: all checks passed in $(($(date +%s) - start)) s"
