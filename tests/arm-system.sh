#!/usr/bin/env bash
# The full-system ARM tier: tgknock on a real ARM kernel with systemd as PID 1.
#
#   tests/arm-system.sh [armhf|arm64]…   (as root; `make test-arm-system`; both by default)
#
# Each architecture boots Debian bookworm under full-system emulation (TCG, no KVM):
#   armhf  qemu-system-arm -M virt -cpu cortex-a7, Debian's linux-image-armmp-lpae; the armhf
#          package holds the ARMv6 build, so this runs it on a real 32-bit ARM kernel (musl's
#          time64 system calls under the unit's SystemCallFilter)
#   arm64  qemu-system-aarch64 -M virt -cpu cortex-a53, Debian's linux-image-arm64
# The root is debootstrapped (--foreign, its second stage in a chroot under qemu-user-static
# through binfmt_misc), with the kernel and its initrd from the archive; it is cached as
# target/arm-system/<arch>-<recipe hash>/ (root.tar, vmlinuz, initrd.img) and rebuilt when
# its recipe below changes. Every run makes a fresh ext4 image of it (mkfs.ext4 -d: no loop
# mount) holding the package (dist/tgknock_<version>_<arch>.deb, `make dist`) and the check
# script (tests/arm-system-guest.sh), which a unit runs at boot and which powers the guest
# off at the end; its report is read back from the image with debugfs.
#
# Telegram is played by examples/systest (the fake Bot API of the integration tests) on the
# host's 127.0.0.1; the guest's user networking is restricted (restrict=on: no way out) and
# reaches it only through two guestfwd addresses (10.0.2.100:8081 the API, :8082 its
# control) that socat relays to the host's loopback. TCP probes of port 22 come from a
# network namespace the guest script makes in the guest, over a veth pair: they enter
# through the INPUT chain on an interface that is not lo, as from outside.
#
# Inside each guest (tests/arm-system-guest.sh says it check by check): the .deb installed
# the README's way; the service up as the service user under the shipped unit (its
# SystemCallFilter included, no restart); port 22 closed by the rules and by TCP; /open,
# then closed by the kernel at its deadline with the daemon stopped (nft timeouts, xt_time);
# a rate limit and a ban on nft and on iptables; a reboot, and the rules in place before the
# network. Printed: boot to READY, the daemon's idle RSS and CPU, the time of one change.
#
# Needs root, qemu-system-arm (with qemu-system-aarch64), qemu-user-static, binfmt_misc,
# debootstrap, e2fsprogs, socat, and the network once to build the cached roots. Without
# them it says SKIPPED; in CI (CI=true) it fails.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$(pwd)
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
started=$(date +%s)

TOKEN="7000000001:AAF-SystemTierSecretSystemTier_x9"
# How long one guest may take, all of it (two boots, the checks); a hang guard.
GUEST_TIMEOUT=${TGKNOCK_ARM_SYSTEM_TIMEOUT:-1200}

note() { echo "arm-system tier: $*"; }
elapsed() { echo "$(($(date +%s) - started)) s"; }

QEMU_PID="" API_PID="" BUILD="" RUN="" BINFMT_ADDED=""

fail() {
    echo "tests/arm-system.sh: FAILED: $*" >&2
    exit 1
}

skip() {
    if [ "${CI:-}" = true ]; then
        fail "$* (CI=true: this tier must run)"
    fi
    echo "SKIPPED: $*" >&2
    exit 0
}
have() { command -v "$1" > /dev/null 2>&1; }

# Removes a scratch directory; first what debootstrap's second stage mounted in it (/proc),
# should it have been stopped halfway.
remove() {
    local m
    awk -v d="$1/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r | while read -r m; do
        umount -l "$m" || true
    done
    rm -rf --one-file-system "$1"
}

cleanup() {
    local rc=$? f
    if [ -n "$QEMU_PID" ]; then kill "$QEMU_PID" 2> /dev/null || true; fi
    if [ -n "$API_PID" ]; then kill "$API_PID" 2> /dev/null || true; fi
    if [ -n "$RUN" ]; then rm -rf "$RUN"; fi
    if [ -n "$BUILD" ]; then remove "$BUILD"; fi
    # The binfmt_misc entries this run registered (a systemd host registers them at boot).
    for f in $BINFMT_ADDED; do echo -1 > "/proc/sys/fs/binfmt_misc/$f" 2> /dev/null || true; done
    [ "$rc" = 0 ] || echo "arm-system tier: failed after $(elapsed)" >&2
}
trap cleanup EXIT

# ---------------------------------------------------------------------------------------
# Per architecture.
# ---------------------------------------------------------------------------------------
arch_vars() {
    case "$1" in
    armhf)
        QEMU=qemu-system-arm CPU=cortex-a7 KERNEL_PKG=linux-image-armmp-lpae
        QEMU_USER=arm CONSOLE=ttyAMA0
        ;;
    arm64)
        QEMU=qemu-system-aarch64 CPU=cortex-a53 KERNEL_PKG=linux-image-arm64
        QEMU_USER=aarch64 CONSOLE=ttyAMA0
        ;;
    *) fail "unknown architecture '$1' (armhf or arm64)" ;;
    esac
}

# binfmt_misc runs the root's ARM programs under qemu-user-static in the chroot: the entries
# Debian's qemu-user-static ships (/usr/lib/binfmt.d, with F: the interpreter is opened now,
# so it works inside the chroot), registered unless they are, and removed again at exit.
binfmt() {
    local q=$1 conf
    conf=/usr/lib/binfmt.d/qemu-$q.conf
    [ -f "$conf" ] || skip "no $conf (apt-get install qemu-user-static)"
    if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2> /dev/null \
            || skip "binfmt_misc cannot be mounted (needed for debootstrap's second stage)"
    fi
    [ -e "/proc/sys/fs/binfmt_misc/qemu-$q" ] && return 0
    grep -v '^#' "$conf" > /proc/sys/fs/binfmt_misc/register || skip "cannot register $conf with binfmt_misc"
    BINFMT_ADDED="$BINFMT_ADDED qemu-$q"
}

# ---------------------------------------------------------------------------------------
# The cached roots.
# ---------------------------------------------------------------------------------------
SUITE=bookworm
PACKAGES=systemd,systemd-sysv,udev,kmod,iptables,nftables,iproute2,ifupdown,openssh-server,adduser,procps
MIRROR=${TGKNOCK_SYSTEM_MIRROR:-http://deb.debian.org/debian}

# Between debootstrap's stages (part of the recipe): the initrd holds what -M virt boots
# from and nothing more (MODULES=list; MODULES=most takes minutes under qemu-user and
# makes a slower boot).
prepare_second_stage() {
    local r=$1
    mkdir -p "$r/etc/initramfs-tools/conf.d" "$r/etc/initramfs-tools/hooks"
    printf 'MODULES=list\nCOMPRESS=gzip\n' > "$r/etc/initramfs-tools/conf.d/armsys"
    cat > "$r/etc/initramfs-tools/hooks/armsys" << 'HOOK'
#!/bin/sh
[ "$1" = prereqs ] && exit 0
. /usr/share/initramfs-tools/hook-functions
for m in virtio_mmio virtio_blk ext4; do
    manual_add_modules "$m"
    echo "$m" >> "$DESTDIR/conf/modules"
done
HOOK
    chmod 0755 "$r/etc/initramfs-tools/hooks/armsys"
}

# Only while the second stage runs (customize_root takes it out; not part of the recipe, the
# root is the same): dpkg without an fsync per file, which costs minutes on a busy disk.
unsafe_io() {
    mkdir -p "$1/etc/dpkg/dpkg.cfg.d"
    echo force-unsafe-io > "$1/etc/dpkg/dpkg.cfg.d/armsys-unsafe-io"
}

# Turns a fresh debootstrap into the cached root (part of the recipe: a change rebuilds).
customize_root() {
    local r=$1
    echo board > "$r/etc/hostname"
    printf '127.0.0.1 localhost\n127.0.1.1 board\n::1 localhost ip6-localhost ip6-loopback\n' > "$r/etc/hosts"
    printf '/dev/vda / ext4 defaults,noatime 0 1\n' > "$r/etc/fstab"
    # User networking's fixed address; no DHCP client, the gateway leads nowhere (restrict=on).
    printf 'auto lo\niface lo inet loopback\n\nauto eth0\niface eth0 inet static\n    address 10.0.2.15/24\n' \
        > "$r/etc/network/interfaces"
    # What a TCG boot need not spend minutes on.
    local u
    for u in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service \
        fstrim.timer systemd-timesyncd.service getty@tty1.service; do
        ln -sf /dev/null "$r/etc/systemd/system/$u"
    done
    # Host keys were made under qemu-user once; the guest needs no entropy wait for them.
    rm -rf "$r"/var/cache/apt/archives/*.deb "$r"/var/lib/apt/lists/*
}

# Sets CACHE to the cached root of $ARCH (root.tar, vmlinuz, initrd.img), building it first.
cached_root() {
    local dir hash t0 k i
    dir=$top/target/arm-system
    mkdir -p "$dir"
    hash=$({ echo "$SUITE minbase $ARCH $PACKAGES $KERNEL_PKG"; declare -f prepare_second_stage customize_root; } | sha256sum | cut -c1-12)
    CACHE=$dir/$ARCH-$hash
    if [ ! -f "$CACHE/root.tar" ]; then
        t0=$(date +%s)
        binfmt "$QEMU_USER"
        note "$ARCH: building the cached Debian root (debootstrap $SUITE --arch=$ARCH, once per recipe; log in $dir/$ARCH-debootstrap.log)"
        BUILD=$(mktemp -d "$dir/build.XXXXXX")
        if ! debootstrap --foreign --arch="$ARCH" --variant=minbase --include="$PACKAGES,$KERNEL_PKG" \
            "$SUITE" "$BUILD/root" "$MIRROR" > "$dir/$ARCH-debootstrap.log" 2>&1; then
            tail -n 20 "$dir/$ARCH-debootstrap.log" >&2
            fail "$ARCH: debootstrap (first stage) failed (network? see $dir/$ARCH-debootstrap.log)"
        fi
        prepare_second_stage "$BUILD/root"
        unsafe_io "$BUILD/root"
        if ! chroot "$BUILD/root" /debootstrap/debootstrap --second-stage >> "$dir/$ARCH-debootstrap.log" 2>&1; then
            tail -n 20 "$dir/$ARCH-debootstrap.log" >&2
            fail "$ARCH: debootstrap's second stage under qemu-$QEMU_USER-static failed (see $dir/$ARCH-debootstrap.log)"
        fi
        rm -f "$BUILD/root/etc/dpkg/dpkg.cfg.d/armsys-unsafe-io"
        customize_root "$BUILD/root"
        k=$(find "$BUILD/root/boot" -name 'vmlinuz-*' | sort | tail -n 1)
        i=$(find "$BUILD/root/boot" -name 'initrd.img-*' | sort | tail -n 1)
        { [ -n "$k" ] && [ -n "$i" ]; } || fail "$ARCH: $KERNEL_PKG left no vmlinuz or initrd.img in /boot"
        mkdir -p "$BUILD/out"
        cp "$k" "$BUILD/out/vmlinuz"
        cp "$i" "$BUILD/out/initrd.img"
        tar -C "$BUILD/root" --numeric-owner -cf "$BUILD/out/root.tar" .
        remove "$BUILD/root"
        find "$dir" -maxdepth 1 -name "$ARCH-*" -type d ! -name "$ARCH-$hash" -exec rm -rf {} +
        rm -rf "$CACHE"
        mv "$BUILD/out" "$CACHE"
        rm -rf "$BUILD"
        BUILD=""
        note "$ARCH: cached root $CACHE built in $(($(date +%s) - t0)) s ($(basename "$k"))"
    fi
}

# ---------------------------------------------------------------------------------------
# A guest.
# ---------------------------------------------------------------------------------------
# The units that run tests/arm-system-guest.sh at boot: the checks once the system is up,
# and a look at the board between tgknock's READY and the network.
guest_units() {
    local r=$1
    install -m 0755 tests/arm-system-guest.sh "$r/usr/local/sbin/armsys-check"
    cat > "$r/etc/systemd/system/armsys-check.service" << 'UNIT'
[Unit]
Description=the full-system ARM tier's checks (tests/arm-system-guest.sh)
After=multi-user.target tgknock.service ssh.service networking.service

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/armsys-check
StandardOutput=journal+console
StandardError=journal+console
TimeoutStartSec=infinity

[Install]
WantedBy=multi-user.target
UNIT
    cat > "$r/etc/systemd/system/armsys-early.service" << 'UNIT'
[Unit]
Description=the full-system ARM tier: the board between tgknock and the network
DefaultDependencies=no
Wants=network-pre.target
After=local-fs.target tgknock.service network-pre.target
Before=networking.service network.target ssh.service

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/armsys-check early

[Install]
WantedBy=multi-user.target
UNIT
    mkdir -p "$r/etc/systemd/system/multi-user.target.wants"
    ln -sf ../armsys-check.service "$r/etc/systemd/system/multi-user.target.wants/armsys-check.service"
    ln -sf ../armsys-early.service "$r/etc/systemd/system/multi-user.target.wants/armsys-early.service"
}

# The fake Bot API on the host's loopback, on two free ports; sets API_PORT, CTL_PORT.
start_api() {
    local i
    for _ in 1 2 3 4 5; do
        API_PORT=$((20000 + RANDOM % 20000))
        CTL_PORT=$((API_PORT + 1))
        "$SYSTEST" api "127.0.0.1:$API_PORT" "127.0.0.1:$CTL_PORT" "$TOKEN" >> "$RUN/api.log" 2>&1 &
        API_PID=$!
        for i in $(seq 1 50); do
            "$SYSTEST" pending "127.0.0.1:$CTL_PORT" > /dev/null 2>&1 && return 0
            kill -0 "$API_PID" 2> /dev/null || break
            sleep 0.1
        done
        kill "$API_PID" 2> /dev/null || true
        wait "$API_PID" 2> /dev/null || true
        API_PID=""
    done
    fail "$ARCH: the fake Bot API did not start (see $RUN/api.log)"
}

# run_guest ARCH: a fresh image of the cached root, booted until the checks power it off.
run_guest() {
    local deb t0 img report rc=0 size
    ARCH=$1
    arch_vars "$ARCH"
    cached_root
    deb=$top/dist/tgknock_${version}_$ARCH.deb
    RUN=$(mktemp -d "$top/target/arm-system/run-$ARCH.XXXXXX")
    mkdir "$RUN/root"
    tar -C "$RUN/root" --numeric-owner -xf "$CACHE/root.tar"
    cp "$deb" "$RUN/root/root/tgknock.deb"
    basename "$deb" > "$RUN/root/root/tgknock.deb.name"
    guest_units "$RUN/root"
    img=$RUN/disk.img
    size=$(($(du -sm "$RUN/root" | cut -f1) + 512))
    mkfs.ext4 -q -F -L root -d "$RUN/root" "$img" "${size}M" > /dev/null || fail "$ARCH: mkfs.ext4 -d failed"
    rm -rf "$RUN/root"
    start_api
    t0=$(date +%s)
    note "$ARCH: booting $QEMU -M virt -cpu $CPU, 2 CPUs (TCG), $(basename "$deb") ($(elapsed))"
    # restrict=on: the guest reaches nothing outside; the guestfwd relays are its only way
    # out, each to the fake on the host's loopback.
    "$QEMU" -M virt -cpu "$CPU" -smp 2 -m 1024 -accel tcg,thread=multi \
        -kernel "$CACHE/vmlinuz" -initrd "$CACHE/initrd.img" \
        -append "root=/dev/vda rw console=$CONSOLE net.ifnames=0 panic=-1 quiet" \
        -drive "if=none,id=hd0,file=$img,format=raw" -device virtio-blk-device,drive=hd0 \
        -netdev "user,id=net0,restrict=on,ipv6=off,guestfwd=tcp:10.0.2.100:8081-cmd:socat STDIO TCP:127.0.0.1:$API_PORT,guestfwd=tcp:10.0.2.100:8082-cmd:socat STDIO TCP:127.0.0.1:$CTL_PORT" \
        -device virtio-net-device,netdev=net0 -device virtio-rng-device \
        -display none -monitor none -serial "file:$RUN/console.log" \
        < /dev/null > "$RUN/qemu.log" 2>&1 &
    QEMU_PID=$!
    while kill -0 "$QEMU_PID" 2> /dev/null; do
        if [ $(($(date +%s) - t0)) -gt "$GUEST_TIMEOUT" ]; then
            kill "$QEMU_PID" 2> /dev/null || true
            rc=1
            echo "$ARCH: the guest did not power off within $GUEST_TIMEOUT s" >&2
            break
        fi
        sleep 2
    done
    wait "$QEMU_PID" 2> /dev/null || true
    QEMU_PID=""
    kill "$API_PID" 2> /dev/null || true
    wait "$API_PID" 2> /dev/null || true
    API_PID=""
    report=$(debugfs -R "cat /var/log/armsys.log" "$img" 2> /dev/null || true)
    echo "$report"
    note "$ARCH: guest ran $(($(date +%s) - t0)) s (two boots and the checks)"
    if [ "$rc" != 0 ] || [ "$(echo "$report" | tail -n 1)" != "ARMSYS-END ok" ]; then
        echo "---- $ARCH: the guest's console (last 60 lines; whole: $RUN/console.log)" >&2
        tail -n 60 "$RUN/console.log" >&2
        cat "$RUN/qemu.log" >&2
        RUN="" # kept for a look
        fail "$ARCH: the checks in the guest did not pass"
    fi
}

# Runs FUNCTION ARCH for every architecture at once (TCG on two cores: a guest mostly
# waits, for deadlines and probes), each in its own subshell with its own cleanup, its
# output in OUT/ARCH; prints them in order and fails if one did.
each_arch() {
    local fn=$1 a pids="" status=0
    for a in $ARCHES; do
        (
            QEMU_PID="" API_PID="" BUILD="" RUN="" BINFMT_ADDED=""
            trap cleanup EXIT
            "$fn" "$a"
        ) > "$OUT/$fn-$a.log" 2>&1 &
        pids="$pids $!"
    done
    for a in $pids; do wait "$a" || status=1; done
    for a in $ARCHES; do cat "$OUT/$fn-$a.log"; done
    return $status
}

# ---------------------------------------------------------------------------------------
main() {
    local t
    ARCHES=${*:-armhf arm64}
    note "Debian $SUITE booted under full-system emulation: $ARCHES"
    trap 'exit 130' INT TERM
    [ "$(id -u)" = 0 ] || skip "the ARM system tier needs root (debootstrap, binfmt_misc)"
    for t in qemu-system-arm:qemu-system-arm qemu-system-aarch64:qemu-system-arm \
        qemu-arm-static:qemu-user-static qemu-aarch64-static:qemu-user-static \
        debootstrap:debootstrap mkfs.ext4:e2fsprogs debugfs:e2fsprogs socat:socat; do
        have "${t%%:*}" || skip "${t%%:*} is missing (apt-get install ${t#*:}; tests/setup.sh test)"
    done
    mkdir -p target/arm-system
    OUT=$(mktemp -d "$top/target/arm-system/out.XXXXXX")
    # The packages of `make dist` (made by the packaging and system tiers before this one in
    # `make test`), made again unless they are newer than every source they come from.
    if [ ! -f dist/SHA256SUMS ] || [ -n "$(find src packaging cross Cargo.toml Cargo.lock build.rs \
        -newer dist/SHA256SUMS -print -quit)" ]; then
        note "make dist"
        if ! make --no-print-directory dist > target/arm-system/build.log 2>&1; then
            tail -n 20 target/arm-system/build.log >&2
            skip "make dist failed (see target/arm-system/build.log)"
        fi
    fi
    for t in $ARCHES; do
        [ -f "dist/tgknock_${version}_$t.deb" ] || fail "make dist made no dist/tgknock_${version}_$t.deb"
    done
    if ! cargo build --release --locked --example systest --target x86_64-unknown-linux-musl \
        >> target/arm-system/build.log 2>&1; then
        tail -n 20 target/arm-system/build.log >&2
        fail "cannot build examples/systest.rs for x86_64-unknown-linux-musl"
    fi
    SYSTEST=$top/target/x86_64-unknown-linux-musl/release/examples/systest

    build_root() { arch_vars "$1"; ARCH=$1; cached_root; }
    each_arch build_root || { rm -rf "$OUT"; fail "a cached root could not be built"; }
    note "cached roots ready ($(elapsed))"
    each_arch run_guest || { rm -rf "$OUT"; fail "a guest failed"; }
    rm -rf "$OUT"
    note "all checks passed in $(elapsed)"
}

main "$@"
