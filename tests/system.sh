#!/usr/bin/env bash
# The system tier: tgknock on a booted Debian with systemd as PID 1, installed and used the
# way the README tells a new user, and judged from inside by the kernel's rules and by TCP.
#
#   tests/system.sh          (as root; `make test-system`)
#
# The Debian is a debootstrapped bookworm (minbase plus systemd, iptables, nftables, sshd…),
# cached as target/system/root-<recipe hash>.tar and rebuilt when its recipe below changes.
# Every container starts from a pristine copy of it, is booted with
# `systemd-nspawn --boot --private-network` and entered with `nsenter -t <its systemd> -a`.
# It has only loopback, so Telegram is played inside it by examples/systest.rs (the fake Bot
# API of the integration tests) on 127.0.0.1; TCP probes to sshd come from a network
# namespace made inside the container, over a veth pair: from 198.51.100.2 (not a private
# network, so `tgknock setup` does not take it for the LAN) and from 192.168.1.2 (the LAN).
#
# Container 1, the .deb (dist/tgknock_<version>_amd64.deb from `make deb`):
#   dpkg -i, token, whoami, config, `tgknock check` as root, `systemctl restart tgknock`;
#   active, user tgknock with two capabilities, port 22 closed (rules and TCP), the LAN
#   exempt, /open and /close from chat, `systemd-analyze security` ≤ 2.5, the heartbeat in
#   /run/tgknock and no write to /var/lib/tgknock over three idle polls, `iptables -F;
#   iptables -X` repaired and told once; exit 2 and 3 not restarted, exit 1 restarted;
#   root at the console (umask 027) then the service closing root's opening at its
#   deadline; iptables-legacy under the unit's system call filter, with a cleared
#   environment for the tools, its flush repaired; nft, `systemctl reload nftables`
#   repaired; a reboot: rules before network-pre.target, networking and sshd, after
#   nftables.service; the sysvinit script's stop kills the daemon and never a stale pid,
#   and insserv orders it before networking.
# Container 2, the tarball (dist/tgknock-<version>-x86_64-unknown-linux-musl.tar.gz):
#   install.sh, configure, check, enable; port closed; install.sh --uninstall stops the
#   daemon, then removes its rules, then its files.
#   install.sh says what is left to do: `sudo tgknock setup`.
# Container 3, the .deb the guided way (`sudo tgknock setup` after installing):
#   dpkg -i says to run setup; the README's piped setup with the fake's token, the owner's
#   hello sent once setup asked: exit 0, "all checks passed", token file tgknock 0600, config root:tgknock
#   0640 without the token, with the owner and the LAN it found; the command it prints
#   (`systemctl enable --now tgknock`) run as it is: active, logged in, polls for button
#   presses; /status, a press on its Open ssh button: answered, then the message edited to
#   the verified state, and the kernel's rules and TCP agree; /run of declared actions as
#   the tgknock user without capabilities; the PAM line of the package's example in
#   /etc/pam.d/sshd: an ssh login tells the owner, and with Telegram hung it still
#   completes (the time is printed).
# Container 4, upgrades from a signed apt repository (packaging/repo.sh, reprepro, signed
#   with a key the test makes with gpg) served over HTTP inside the container (the host's
#   python3 -m http.server in the container's network namespace, on its 127.0.0.1):
#   the README's key and .sources lines, apt-get install; configured, an opening to one
#   address and a ban with their deadlines; then, with the rules (iptables -S, nft) sampled
#   every 10 ms and TCP SYNs to port 22 sent every 10 ms from the client namespace
#   (systest watch-rules, watch-tcp): apt-get upgrade to a newer build put in the
#   repository (the same package repacked with dpkg-deb and a higher version: a test
#   stand-in), a downgrade with dpkg -i, an upgrade with dpkg -i on the nft backend: port 22
#   never closed-off for a sample, never reached, the daemon restarted once (one start in
#   the journal, a new MainPID), the opening and the ban kept as they were (the same rules,
#   deadlines included); apt-get remove: the daemon stops, then its rules go (the samples'
#   order), and stay gone; purge: no file, rule, process left; apt-get install after the
#   purge starts clean (not started without a token, no state; started, nothing of the
#   old opening or ban).
# Container 5, approve-login: sshd's PAM stack with the account line of the package's
#   example; key and password logins approved by a press on the fake Telegram (the
#   press-to-shell time is printed), denied, unanswered (its cost to sshd printed), with the
#   daemon stopped (refused), from an exempt address (let in); the login notice's Ban
#   button cutting a live ssh session.
# Before all: install.sh --root installs exactly one supervisor per init system.
#
# TGKNOCK_SYSTEM_CONTAINERS="4" runs only the containers named (default: 1 2 3 4 5).
# Needs root, debootstrap, systemd-nspawn (systemd-container), nsenter, and the network
# once to build the cached root. Without them it says SKIPPED; in CI (CI=true) it fails.
# A failed check prints the container's `journalctl -u tgknock` and stops.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$(pwd)
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
started=$(date +%s)
# The containers to run (all by default; for working on one of them).
CONTAINERS=${TGKNOCK_SYSTEM_CONTAINERS:-1 2 3 4 5}

TOKEN="7000000001:AAF-SystemTierSecretSystemTier_x9"
SECRET=${TOKEN#*:}
OWNER=111111111
API=127.0.0.1:8081
CTL=127.0.0.1:8082
POLL=5 # TGKNOCK_POLL_TIMEOUT in seconds: three idle polls, drift repairs, all take a few
# The addresses of the veth pair: the board (probed) and a client namespace inside it.
BOARD4=198.51.100.1 CLIENT4=198.51.100.2 # TEST-NET-2: not a LAN setup would exempt
BOARD6=2001:db8:213::1 CLIENT6=2001:db8:213::2
LAN_BOARD=192.168.1.1 LAN_CLIENT=192.168.1.2 # inside the README's TGKNOCK_ALWAYS_ALLOW
LAN_BOARD_NET=192.168.1.0/24

ok() { echo "  ok  $*"; }
note() { echo "system tier: $*"; }
elapsed() { echo "$(($(date +%s) - started)) s"; }

NSPAWN_PID="" LEADER="" RUN="" BUILD="" HTTP_PID=""

fail() {
    echo "tests/system.sh: FAILED: $*" >&2
    if [ -n "$LEADER" ] && kill -0 "$LEADER" 2>/dev/null; then
        {
            echo "---- systemctl status tgknock (in the container)"
            in_c systemctl status tgknock --no-pager -l 2>&1 || true
            echo "---- journalctl -u tgknock (in the container)"
            in_c journalctl -b -u tgknock --no-pager -o short-monotonic -n 200 2>&1 || true
            echo "---- journalctl -u fake-telegram"
            in_c journalctl -b -u fake-telegram --no-pager -n 20 2>&1 || true
            echo "---- the firewall"
            in_c sh -c 'iptables -S; ip6tables -S; iptables-legacy -S 2>/dev/null; nft list ruleset' 2>&1 || true
            echo "---- messages the bot sent"
            in_c systest show "$CTL" "$OWNER" 0 2>&1 || true
        } >&2
    elif [ -n "$RUN" ] && [ -f "$RUN/console.log" ]; then
        echo "---- the container's console" >&2
        tail -n 40 "$RUN/console.log" >&2
    fi
    exit 1
}

skip() {
    if [ "${CI:-}" = true ]; then
        fail "$* (CI=true: this tier must run)"
    fi
    echo "SKIPPED: $*" >&2
    exit 0
}

# ---------------------------------------------------------------------------------------
# install.sh --root: one supervisor per init system (no root needed).
# ---------------------------------------------------------------------------------------
host_checks() {
    local t bin
    t=$(mktemp -d)
    bin=$1
    sh packaging/install.sh --root "$t/systemd" --binary "$bin" > /dev/null || fail "install.sh --root (systemd)"
    [ -f "$t/systemd/etc/systemd/system/tgknock.service" ] || fail "install.sh with systemd: no unit"
    { [ ! -e "$t/systemd/etc/cron.d/tgknock" ] && [ ! -e "$t/systemd/etc/init.d/tgknock" ]; } \
        || fail "install.sh with systemd also installed a cron line or an init script"
    mkdir -p "$t/openrc/sbin"
    printf '#!/bin/sh\n' > "$t/openrc/sbin/openrc-run"
    chmod 0755 "$t/openrc/sbin/openrc-run"
    TGKNOCK_INSTALL_SYSTEMD=0 sh packaging/install.sh --root "$t/openrc" --binary "$bin" > /dev/null \
        || fail "install.sh --root (OpenRC)"
    grep -q '^supervisor="supervise-daemon"' "$t/openrc/etc/init.d/tgknock" 2>/dev/null \
        || fail "install.sh with OpenRC: no supervise-daemon script"
    { [ ! -e "$t/openrc/etc/cron.d/tgknock" ] && [ ! -e "$t/openrc/etc/systemd/system/tgknock.service" ]; } \
        || fail "install.sh with OpenRC also installed the cron watchdog or the unit: two supervisors"
    TGKNOCK_INSTALL_SYSTEMD=0 sh packaging/install.sh --root "$t/sysv" --binary "$bin" > /dev/null \
        || fail "install.sh --root (sysvinit)"
    grep -q "^# X-Start-Before: *[$]network" "$t/sysv/etc/init.d/tgknock" 2>/dev/null \
        || fail "install.sh with sysvinit: no init script that starts before the network"
    grep -q '/etc/init.d/tgknock watchdog' "$t/sysv/etc/cron.d/tgknock" 2>/dev/null \
        || fail "install.sh with sysvinit: no cron watchdog"
    [ ! -e "$t/sysv/etc/systemd/system/tgknock.service" ] || fail "install.sh with sysvinit also installed the unit"
    rm -rf "$t"
    ok "install.sh installs one supervisor: systemd; OpenRC (supervise-daemon, no cron); sysvinit + cron"
}

# ---------------------------------------------------------------------------------------
# The cached root.
# ---------------------------------------------------------------------------------------
SUITE=bookworm
PACKAGES=systemd,systemd-sysv,dbus,iptables,nftables,iproute2,ifupdown,openssh-server,adduser,insserv
MIRROR=${TGKNOCK_SYSTEM_MIRROR:-http://deb.debian.org/debian}

# Turns a fresh debootstrap into the cached root (part of the recipe: a change rebuilds).
customize_root() {
    local r=$1
    echo systest > "$r/etc/hostname"
    printf '127.0.0.1 localhost\n127.0.1.1 systest\n::1 localhost ip6-localhost ip6-loopback\n' > "$r/etc/hosts"
    # Nothing may reach the network from the container; apt's lists are not needed.
    rm -rf "$r"/var/cache/apt/archives/*.deb "$r"/var/lib/apt/lists/*
}

# Sets ROOT_TAR to the cached root, building it first if its recipe changed.
cached_root() {
    local dir hash cache t0
    dir=$top/target/system
    mkdir -p "$dir"
    hash=$({ echo "$SUITE minbase $PACKAGES"; declare -f customize_root; } | sha256sum | cut -c1-12)
    cache=$dir/root-$hash.tar
    if [ ! -f "$cache" ]; then
        t0=$(date +%s)
        note "building the cached Debian root (debootstrap $SUITE, once per recipe; log in $dir/debootstrap.log)"
        BUILD=$(mktemp -d "$dir/build.XXXXXX")
        if ! debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$BUILD/root" "$MIRROR" \
            > "$dir/debootstrap.log" 2>&1; then
            tail -n 20 "$dir/debootstrap.log" >&2
            fail "debootstrap failed (network? see $dir/debootstrap.log)"
        fi
        customize_root "$BUILD/root"
        tar -C "$BUILD/root" --numeric-owner -cf "$cache.tmp" .
        rm -rf "$BUILD"
        BUILD=""
        find "$dir" -maxdepth 1 -name 'root-*.tar' ! -name "root-$hash.tar" -delete
        mv "$cache.tmp" "$cache"
        note "cached root $cache built in $(($(date +%s) - t0)) s"
    fi
    ROOT_TAR=$cache
}

# ---------------------------------------------------------------------------------------
# Containers.
# ---------------------------------------------------------------------------------------
# Runs a command in the container, as root, with a clean environment.
in_c() {
    nsenter -t "$LEADER" -a -- env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root LANG=C.UTF-8 "$@"
}
sh_c() { in_c sh -c "$1"; }

# A fresh container directory from the cached root, with the fake Telegram in it.
new_container() {
    RUN=$(mktemp -d "$top/target/system/run.XXXXXX")
    mkdir "$RUN/root"
    tar -C "$RUN/root" --numeric-owner -xf "$ROOT_TAR"
    install -m 0755 "$SYSTEST" "$RUN/root/usr/local/sbin/systest"
    cat > "$RUN/root/etc/systemd/system/fake-telegram.service" <<EOF
[Unit]
Description=fake Telegram Bot API for the system tier (127.0.0.1 only)

[Service]
ExecStart=/usr/local/sbin/systest api $API $CTL $TOKEN
DynamicUser=yes

[Install]
WantedBy=multi-user.target
EOF
    mkdir -p "$RUN/root/etc/systemd/system/multi-user.target.wants"
    ln -sf ../fake-telegram.service "$RUN/root/etc/systemd/system/multi-user.target.wants/fake-telegram.service"
}

boot() {
    local i state
    systemd-nspawn -D "$RUN/root" --boot --private-network --register=no --keep-unit \
        --machine=systest < /dev/null >> "$RUN/console.log" 2>&1 &
    NSPAWN_PID=$!
    LEADER=""
    for i in $(seq 1 600); do
        LEADER=$(pgrep -P "$NSPAWN_PID" -x systemd || true)
        [ -n "$LEADER" ] && break
        kill -0 "$NSPAWN_PID" 2>/dev/null || fail "systemd-nspawn exited at once"
        sleep 0.1
    done
    [ -n "$LEADER" ] || fail "no systemd in the container after 60 s (i=$i)"
    # Until its systemd answers on its bus and has finished starting up.
    for i in $(seq 1 240); do
        state=$(in_c systemctl is-system-running 2>/dev/null || true)
        case "$state" in running | degraded) break ;; esac
        kill -0 "$NSPAWN_PID" 2>/dev/null || fail "systemd-nspawn exited while booting"
        sleep 0.5
    done
    case "$state" in
    running) ;;
    degraded) note "the container booted degraded: $(in_c systemctl --failed --no-legend --plain | awk '{print $1}' | tr '\n' ' ')" ;;
    *) fail "the container did not finish booting in 120 s: '$state'" ;;
    esac
    # The client namespace and the veth pair to the board (gone at every boot).
    sh_c "ip link add tk-board type veth peer name tk-client &&
        ip netns add client && ip link set tk-client netns client &&
        ip addr add $BOARD4/24 dev tk-board && ip addr add $LAN_BOARD/24 dev tk-board &&
        ip -6 addr add $BOARD6/64 dev tk-board nodad && ip link set tk-board up &&
        ip -n client addr add $CLIENT4/24 dev tk-client && ip -n client addr add $LAN_CLIENT/24 dev tk-client &&
        ip -n client -6 addr add $CLIENT6/64 dev tk-client nodad &&
        ip -n client link set tk-client up && ip -n client link set lo up" \
        || fail "cannot set up the veth pair in the container"
    wait_for 30 "the fake Telegram to answer" sh_c "systest pending $CTL >/dev/null 2>&1"
}

# Stops the container and waits for systemd-nspawn to exit.
halt() {
    local i
    [ -n "$NSPAWN_PID" ] || return 0
    kill -TERM "$NSPAWN_PID" 2>/dev/null || true
    for i in $(seq 1 600); do
        kill -0 "$NSPAWN_PID" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$NSPAWN_PID" 2>/dev/null; then
        echo "system tier: the container did not stop in 60 s (i=$i); killing it" >&2
        kill -KILL "$NSPAWN_PID" 2>/dev/null || true
    fi
    wait "$NSPAWN_PID" 2>/dev/null || true
    NSPAWN_PID="" LEADER=""
}

cleanup() {
    local rc=$?
    # The samplers of container 4 end when this file appears (they run in the container).
    if [ -n "$LEADER" ]; then sh_c "touch /run/systest.stop" 2> /dev/null || true; fi
    stop_http
    halt
    if [ -n "$RUN" ]; then rm -rf "$RUN"; fi
    if [ -n "$BUILD" ]; then rm -rf "$BUILD"; fi
    [ "$rc" = 0 ] || echo "system tier: failed after $(elapsed)" >&2
}

# wait_for SECS WHAT CMD…: runs CMD every half second until it succeeds; a hang guard.
wait_for() {
    local secs=$1 what=$2 end
    shift 2
    end=$(($(date +%s) + secs))
    until "$@" > /dev/null 2>&1; do
        [ "$(date +%s)" -lt "$end" ] || fail "timed out after $secs s waiting for $what"
        sleep 0.5
    done
}

# ---------------------------------------------------------------------------------------
# What the board shows.
# ---------------------------------------------------------------------------------------
# probe ADDR: a TCP connection to sshd from the client namespace: open, dropped or refused.
probe() { in_c ip netns exec client systest probe "$1" 22 4; }
expect_probe() {
    local got
    got=$(probe "$1") || fail "probe $1 failed"
    [ "$got" = "$2" ] || fail "TCP to $1 port 22 is $got, expected $2 ($3)"
}
ssh_closed() { # both families, by TCP
    expect_probe "$BOARD4" dropped "$1"
    expect_probe "$BOARD6" dropped "$1"
}
ssh_open() {
    expect_probe "$BOARD4" open "$1"
    expect_probe "$BOARD6" open "$1"
}

# The rules as the kernel lists them: "closed" when tgknock's chain (or table) is in place
# and drops SYNs to port 22 in IPv4 and IPv6 with no RETURN before that lets them through.
# BACKEND: iptables (the system's iptables, nft-based on Debian), legacy, nft.
rules_state() {
    case "$1" in
    iptables | legacy)
        local s=""
        [ "$1" = legacy ] && s=-legacy
        sh_c "for t in iptables$s ip6tables$s; do
                \$t -S INPUT 2>/dev/null | sed -n 2p | grep -qx -- '-A INPUT -j TGKNOCK' || { echo absent; exit; }
                \$t -S TGKNOCK 2>/dev/null | grep -q -- '--dport 22 .*-j DROP' || { echo open; exit; }
                \$t -S TGKNOCK 2>/dev/null | grep -q -- '--dport 22 .*-j RETURN' && { echo open; exit; }
            done; echo closed"
        ;;
    nft)
        # A drop rule naming no family covers both.
        sh_c "nft list table inet tgknock 2>/dev/null | awk '
                /tcp dport 22 / && / return/ { ret = 1 }
                /tcp dport 22 / && / drop/ {
                    if (/ipv4/) d4 = 1; else if (/ipv6/) d6 = 1; else { d4 = 1; d6 = 1 }
                }
                { table = 1 }
                END { print !table ? \"absent\" : (ret || !d4 || !d6) ? \"open\" : \"closed\" }'"
        ;;
    esac
}
expect_rules() {
    local got
    got=$(rules_state "$1")
    [ "$got" = "$2" ] || fail "the $1 rules show port 22 $got, expected $2 ($3)"
}

active() { [ "$(in_c systemctl is-active tgknock 2>/dev/null)" = active ]; }
prop() { in_c systemctl show -p "$2" --value "$1"; }

# chat TEXT NEEDLE: the owner sends TEXT; prints the bot's reply containing NEEDLE.
sent() { in_c systest count "$CTL" "$OWNER"; }
# Waits until the daemon has taken every queued update (and so answered it).
drain() { wait_for 60 "the daemon to take the queued updates" test_pending_zero; }
chat() {
    local n
    drain
    n=$(sent)
    in_c systest say "$CTL" "$OWNER" "$1" || fail "cannot queue '$1'"
    in_c systest wait "$CTL" "$OWNER" "$n" "$2" 60 || fail "no reply to '$1' containing '$2'"
}

# drift BACKEND WHAT CMD: another program removes tgknock's rules; within a poll (60 s at
# most) they are back, the port is closed, and the owner is told once.
drift() {
    local backend=$1 what=$2 cmd=$3 n t0 took msg gone watch
    case "$backend" in
    iptables) gone="! iptables -S TGKNOCK" ;;
    legacy) gone="! iptables-legacy -S TGKNOCK" ;;
    nft) gone="! nft list table inet tgknock" ;;
    esac
    # Under the unit's sandbox (SystemCallFilter, RestrictAddressFamilies, capabilities)
    # the daemon hears of changes from the kernel, instead of looking after each poll.
    watch=$(in_c journalctl -b -u tgknock --no-pager -o cat | { grep 'drift: ' || true; } | tail -n 1)
    case "$watch" in
    *"noticed through"*) ;;
    *) fail "the daemon does not watch the kernel for changes to its rules under the unit: '$watch'" ;;
    esac
    drain
    n=$(sent)
    t0=$(date +%s)
    sh_c "$cmd && $gone >/dev/null 2>&1" || fail "'$cmd' failed, or did not remove tgknock's rules"
    wait_for 90 "tgknock to repair its rules after '$cmd'" test_rules "$backend" closed
    took=$(($(date +%s) - t0))
    ssh_closed "after '$cmd' and the repair"
    wait_for 60 "a message to the owner about '$cmd'" test_sent_above "$n"
    sleep $((2 * POLL + 1))
    [ "$(sent)" = $((n + 1)) ] || fail "after '$cmd' the owner got $(($(sent) - n)) messages, not one"
    msg=$(in_c systest show "$CTL" "$OWNER" "$n")
    ok "$what repaired within $took s, port 22 closed again (rules, TCP); the owner told once: '$(echo "$msg" | head -n 1)'; watched: '${watch#*through }'"
}
test_rules() { [ "$(rules_state "$1")" = "$2" ]; }
test_sent_above() { [ "$(sent)" -gt "$1" ]; }

# The state directory belongs to the service user, every file in it too.
files_usable() {
    local bad
    bad=$(sh_c "find /var/lib/tgknock \\( ! -user tgknock -o ! -group tgknock \\) -printf '%u:%g %m %p\n'")
    [ -z "$bad" ] || fail "files in /var/lib/tgknock the service user does not own ($1): $bad"
}

# ---------------------------------------------------------------------------------------
# Container 1: the Debian package, the README's way.
# ---------------------------------------------------------------------------------------
deb_container() {
    local deb=dist/tgknock_${version}_amd64.deb id out score n deadline t now
    note "container 1: $deb on a booted $SUITE ($(elapsed))"
    new_container
    cp "$deb" "$RUN/root/root/"
    cp "$TARBALL" "$RUN/root/root/"
    boot
    ssh_open "sshd answers before tgknock is installed"
    ok "booted; without tgknock sshd answers on $BOARD4 and $BOARD6 port 22"

    in_c dpkg -i "/root/${deb#dist/}" > "$RUN/dpkg.log" 2>&1 || fail "dpkg -i: $(cat "$RUN/dpkg.log")"
    ok "dpkg -i $(basename "$deb")"
    sh_c "echo '$TOKEN' > /etc/tgknock/token" || fail "cannot write the token"
    in_c systest say "$CTL" "$OWNER" "hello bot" > /dev/null
    out=$(in_c env TGKNOCK_TOKEN_FILE=/etc/tgknock/token TGKNOCK_API_URL="http://$API" tgknock whoami 2>&1) \
        || fail "tgknock whoami: $out"
    id=$(echo "$out" | grep -o "$OWNER" | head -n 1)
    [ "$id" = "$OWNER" ] || fail "tgknock whoami did not show the sender's id: $out"
    ok "README: token written; tgknock whoami shows the sender's id $id"
    sh_c "cat > /etc/tgknock/tgknock.conf <<EOF
TGKNOCK_TOKEN_FILE=/etc/tgknock/token
TGKNOCK_ALLOWED_USERS=$id
TGKNOCK_GATES=\"ssh=22/tcp\"
# your LAN, so a mistake cannot lock you out at home:
TGKNOCK_ALWAYS_ALLOW=192.168.1.0/24,fd00::/8
# the test's Telegram, and short polls
TGKNOCK_API_URL=http://$API
TGKNOCK_POLL_TIMEOUT=${POLL}s
EOF" || fail "cannot write the config"
    out=$(in_c tgknock check 2>&1) || fail "tgknock check (as root): $out"
    ok "README: config written; tgknock check passes as root"
    in_c systemctl restart tgknock || fail "systemctl restart tgknock failed"
    active || fail "tgknock is not active after systemctl restart"
    local pid
    pid=$(prop tgknock MainPID)
    [ "$(sh_c "stat -c %U /proc/$pid")" = tgknock ] || fail "the daemon runs as $(sh_c "stat -c %U /proc/$pid"), not tgknock"
    sh_c "grep -qx 'CapEff:[[:space:]]*0000000000003000' /proc/$pid/status" \
        || fail "the daemon's capabilities: $(sh_c "grep Cap /proc/$pid/status")"
    ok "systemctl restart tgknock: active, user tgknock, capabilities CAP_NET_ADMIN and CAP_NET_RAW only"
    expect_rules iptables closed "after the first start"
    ssh_closed "after the first start"
    expect_probe "$LAN_BOARD" open "from the LAN in TGKNOCK_ALWAYS_ALLOW"
    ok "port 22 closed: iptables -S and ip6tables -S show the chain, TCP SYNs dropped (IPv4, IPv6); the LAN still gets in"

    out=$(in_c systemd-analyze security tgknock.service 2>&1) || true
    score=$(echo "$out" | sed -n 's/.*Overall exposure level for tgknock.service: \([0-9.]*\).*/\1/p')
    [ -n "$score" ] || fail "systemd-analyze security said: $out"
    awk -v s="$score" 'BEGIN { exit !(s <= 2.5) }' \
        || fail "systemd-analyze security: exposure $score > 2.5: $(echo "$out" | grep '✗')"
    ok "systemd-analyze security tgknock.service: exposure $score (≤ 2.5)"

    out=$(chat /open " open") || exit 1
    ssh_open "after /open"
    ok "/open: the bot says '$(echo "$out" | head -n 1)'; TCP gets through (IPv4, IPv6)"
    out=$(chat /close "closed") || exit 1
    expect_rules iptables closed "after /close"
    ssh_closed "after /close"
    ok "/close: the bot says '$(echo "$out" | head -n 1)'; rules and TCP agree"
    in_c journalctl -u tgknock --no-pager | grep -q -- "$SECRET" && fail "the token is in the journal"
    ok "the token never appears in the journal"

    # Idle: the heartbeat goes to /run/tgknock (tmpfs), nothing to the SD card.
    drain
    sleep 1
    sh_c "touch /run/systest.mark"
    sleep $((3 * POLL + 2))
    out=$(sh_c "find /var/lib/tgknock -newer /run/systest.mark")
    [ -z "$out" ] || fail "the idle daemon wrote to the state directory over three polls: $out"
    sh_c "test /run/tgknock/heartbeat -nt /run/systest.mark" \
        || fail "no fresh heartbeat in /run/tgknock: $(sh_c 'ls -la --time-style=+%T /run/tgknock /var/lib/tgknock')"
    ok "idle for three polls: heartbeat in /run/tgknock, no write to /var/lib/tgknock"

    drift iptables "iptables -F; iptables -X:" "iptables -F && iptables -X"

    # Exit codes: 2 and 3 are not restarted, 1 is.
    sh_c "echo TGKNOCK_NO_SUCH_KEY=1 >> /etc/tgknock/tgknock.conf"
    in_c systemctl restart tgknock 2>/dev/null && fail "tgknock started with an unknown key in its config"
    n=$(prop tgknock NRestarts)
    sleep 12
    [ "$(prop tgknock ExecMainStatus)" = 2 ] || fail "a config error exited with $(prop tgknock ExecMainStatus), not 2"
    { [ "$(prop tgknock ActiveState)" = failed ] && [ "$(prop tgknock NRestarts)" = "$n" ]; } \
        || fail "exit 2 was restarted: $(prop tgknock ActiveState), NRestarts $(prop tgknock NRestarts)"
    expect_rules iptables closed "after a config error"
    ssh_closed "after a config error"
    sh_c "sed -i '/^TGKNOCK_NO_SUCH_KEY=/d' /etc/tgknock/tgknock.conf"
    ok "exit 2 (a config error) is not restarted; port 22 stays closed"
    sh_c "echo '7000000001:AAF-NotTheTokenNotTheTokenNotThe_x9' > /etc/tgknock/token"
    in_c systemctl restart tgknock || true
    wait_for 60 "tgknock to exit on the rejected token" test_prop tgknock ExecMainStatus 3
    n=$(prop tgknock NRestarts)
    sleep 12
    { [ "$(prop tgknock ActiveState)" = failed ] && [ "$(prop tgknock NRestarts)" = "$n" ]; } \
        || fail "exit 3 was restarted: $(prop tgknock ActiveState), NRestarts $(prop tgknock NRestarts)"
    sh_c "echo '$TOKEN' > /etc/tgknock/token"
    ok "exit 3 (Telegram rejected the token) is not restarted"
    sh_c "echo TGKNOCK_IPTABLES=/usr/bin/false >> /etc/tgknock/tgknock.conf"
    n=$(prop tgknock NRestarts)
    in_c systemctl restart tgknock 2>/dev/null && fail "tgknock started with /usr/bin/false as iptables"
    wait_for 30 "systemd to restart tgknock after exit 1" test_prop_above tgknock NRestarts "$n"
    sh_c "sed -i '/^TGKNOCK_IPTABLES=/d' /etc/tgknock/tgknock.conf"
    wait_for 60 "the restarted tgknock to become active on its own" active
    ok "exit 1 (a firewall failure) is restarted until it works, without anyone's help"

    # Root at the console (umask 027), then the service.
    in_c systemctl stop tgknock
    sh_c "umask 027 && tgknock check >/dev/null && tgknock open --for 20s && tgknock close && tgknock teardown" \
        > "$RUN/console-cmds.log" 2>&1 || fail "root at the console: $(cat "$RUN/console-cmds.log")"
    sh_c "umask 027; tgknock status; [ \$? -le 1 ]" > "$RUN/status.log" 2>&1 \
        || fail "tgknock status as root: $(cat "$RUN/status.log")"
    t=$(date +%s)
    deadline=$((t + 20))
    sh_c "umask 027 && tgknock open --for 20s" > "$RUN/open.log" 2>&1 || fail "tgknock open --for 20s: $(cat "$RUN/open.log")"
    files_usable "after root ran check, open, close, teardown, status, open with umask 027"
    ok "root ran check, open, close, teardown, status, open --for 20s (umask 027): every file is the service's"
    in_c systemctl start tgknock || fail "the service does not start after root's console commands"
    active || fail "tgknock is not active after root's console commands"
    now=$(date +%s)
    if [ "$now" -lt $((deadline - 5)) ]; then
        ssh_open "root's opening, before its deadline"
    fi
    ok "the service starts after root's commands and keeps root's opening"
    wait_for 30 "the daemon to close root's opening at its deadline" test_rules iptables closed
    [ "$(date +%s)" -ge "$deadline" ] || fail "root's opening closed before its deadline"
    ssh_closed "after root's opening's deadline"
    active || fail "tgknock died after closing root's opening"
    ok "the service closed root's opening at its deadline (rules and TCP)"

    # iptables-legacy under the unit's filters; the tools get a cleared environment.
    in_c systemctl stop tgknock
    in_c tgknock teardown > /dev/null || fail "tgknock teardown"
    mkdir -p "$RUN/root/usr/local/lib/systest" "$RUN/root/etc/systemd/system/tgknock.service.d"
    cat > "$RUN/root/usr/local/lib/systest/iptables" <<'EOF'
#!/bin/sh
# Records the environment the daemon gives its firewall tools, then runs the legacy tool.
[ -e /run/tgknock/child.env ] || env > /run/tgknock/child.env 2>/dev/null
exec "/usr/sbin/$(basename "$0" | sed 's/^\(ip6\{0,1\}tables\)/\1-legacy/')" "$@"
EOF
    chmod 0755 "$RUN/root/usr/local/lib/systest/iptables"
    for t in iptables-restore ip6tables ip6tables-restore; do
        ln -sf iptables "$RUN/root/usr/local/lib/systest/$t"
    done
    # Through the environment, so a tool that inherited it would show TGKNOCK_* keys.
    printf '[Service]\nEnvironment=TGKNOCK_IPTABLES=/usr/local/lib/systest/iptables TGKNOCK_IP6TABLES=/usr/local/lib/systest/ip6tables\n' \
        > "$RUN/root/etc/systemd/system/tgknock.service.d/legacy.conf"
    in_c systemctl daemon-reload
    in_c systemctl start tgknock || fail "tgknock does not start with iptables-legacy"
    expect_rules legacy closed "on iptables-legacy"
    [ "$(rules_state iptables)" = absent ] || fail "rules left in iptables-nft after teardown"
    ssh_closed "on iptables-legacy"
    out=$(chat /open " open") || exit 1
    ssh_open "after /open on iptables-legacy"
    chat /close closed > /dev/null || exit 1
    expect_rules legacy closed "after /close on iptables-legacy"
    ssh_closed "after /close on iptables-legacy"
    ok "iptables-legacy under SystemCallFilter=@system-service: closed, /open, /close (rules and TCP)"
    out=$(sh_c "cat /run/tgknock/child.env") || fail "the legacy wrapper recorded no environment"
    if echo "$out" | grep -qE '^(TGKNOCK_|NOTIFY_SOCKET=|WATCHDOG_)' || echo "$out" | grep -qF "$SECRET"; then
        fail "the firewall tools inherit the daemon's environment: $(echo "$out" | tr '\n' ' ')"
    fi
    ok "the firewall tools run with a cleared environment (no TGKNOCK_*, NOTIFY_SOCKET, WATCHDOG_*)"
    drift legacy "iptables-legacy -F; iptables-legacy -X:" "iptables-legacy -F && iptables-legacy -X"
    in_c systemctl stop tgknock
    sh_c "rm -r /etc/systemd/system/tgknock.service.d && systemctl daemon-reload"
    in_c env TGKNOCK_IPTABLES=/usr/sbin/iptables-legacy TGKNOCK_IP6TABLES=/usr/sbin/ip6tables-legacy \
        tgknock teardown > /dev/null || fail "teardown on iptables-legacy"

    # nftables, and nftables.service's own reload (its config starts with flush ruleset).
    sh_c "echo TGKNOCK_FIREWALL=nft >> /etc/tgknock/tgknock.conf && systemctl enable --now nftables" \
        > /dev/null 2>&1 || fail "cannot enable nftables.service"
    in_c systemctl start tgknock || fail "tgknock does not start with TGKNOCK_FIREWALL=nft"
    expect_rules nft closed "with TGKNOCK_FIREWALL=nft"
    ssh_closed "with TGKNOCK_FIREWALL=nft"
    out=$(chat /open " open") || exit 1
    ssh_open "after /open on nft"
    chat /close closed > /dev/null || exit 1
    expect_rules nft closed "after /close on nft"
    ssh_closed "after /close on nft"
    ok "nft under SystemCallFilter=@system-service: table inet tgknock, /open, /close (rules and TCP)"
    drift nft "systemctl reload nftables (flush ruleset):" "systemctl reload nftables"

    # A reboot: the rules are in before the network, after the ruleset loaders.
    note "rebooting container 1 ($(elapsed))"
    in_c systemctl reboot || true
    wait_exit 90
    boot
    active || fail "tgknock is not active after the reboot"
    expect_rules nft closed "right after the reboot"
    ssh_closed "right after the reboot"
    out=$(prop tgknock Before)
    echo "$out" | grep -qw network-pre.target || fail "tgknock is not Before=network-pre.target: $out"
    out=$(prop tgknock Wants)
    echo "$out" | grep -qw network-pre.target || fail "tgknock does not want network-pre.target: $out"
    out=$(prop tgknock After)
    echo "$out" | grep -qw network-online.target && fail "tgknock waits for network-online.target: $out"
    echo "$out" | grep -qw nftables.service || fail "tgknock is not After=nftables.service: $out"
    in_c journalctl -b --no-pager | grep -i 'ordering cycle' && fail "systemd found an ordering cycle at boot"
    # When each was reached, in µs since the container's systemd started.
    local zero ready pre net sshd nft v
    zero=$(in_c systemctl show -p UserspaceTimestampMonotonic --value)
    ready=$(prop tgknock ActiveEnterTimestampMonotonic)
    pre=$(prop network-pre.target ActiveEnterTimestampMonotonic)
    net=$(prop networking.service InactiveExitTimestampMonotonic)
    sshd=$(prop ssh.service InactiveExitTimestampMonotonic)
    nft=$(prop nftables.service ActiveEnterTimestampMonotonic)
    for v in "$zero" "$ready" "$pre" "$net" "$sshd" "$nft"; do
        [ "${v:-0}" -gt 0 ] || fail "a boot timestamp is missing: tgknock $ready, network-pre $pre, networking $net, ssh $sshd, nftables $nft"
    done
    ready=$((ready - zero)) pre=$((pre - zero)) net=$((net - zero)) sshd=$((sshd - zero)) nft=$((nft - zero))
    { [ "$ready" -le "$pre" ] && [ "$ready" -le "$net" ] && [ "$ready" -le "$sshd" ]; } \
        || fail "at boot tgknock was ready at ${ready} µs, network-pre.target at $pre, networking at $net, sshd at $sshd"
    [ "$nft" -le $(($(prop tgknock InactiveExitTimestampMonotonic) - zero)) ] \
        || fail "tgknock started before nftables.service finished loading its ruleset"
    ok "reboot: tgknock ready $((ready / 1000)) ms into the boot, before network-pre.target ($((pre / 1000)) ms), networking ($((net / 1000)) ms), sshd ($((sshd / 1000)) ms); after nftables.service ($((nft / 1000)) ms)"
    ok "systemctl show tgknock: Before= and Wants= network-pre.target, After= nftables.service, no network-online.target"
    ok "after the reboot port 22 is closed (table inet tgknock, TCP)"
    out=$(chat /status "ssh") || exit 1
    ok "after the reboot the bot answers /status once the API is up: '$(echo "$out" | head -n 1)'"

    # The sysvinit script: stop kills the daemon, and never a stale pid from the file.
    in_c systemctl stop tgknock
    sh_c "tar -C /root -xzf /root/$(basename "$TARBALL")" || fail "cannot unpack the tarball"
    local initd=/root/tgknock-$version-x86_64-unknown-linux-musl/sysvinit/tgknock
    out=$(in_c sh "$initd" start 2>&1) || fail "sysvinit start: $out"
    in_c tgknock status > /dev/null 2>&1 || fail "after sysvinit start the rules are not in place: $(in_c tgknock status 2>&1)"
    pid=$(sh_c "cat /var/lib/tgknock/tgknock.pid")
    sh_c "kill -0 $pid" || fail "sysvinit start: no daemon (pid file says $pid)"
    ok "sysvinit start: the daemon runs (pid $pid), rules in place when the script returns"
    # As the service user with CAP_NET_ADMIN and CAP_NET_RAW only, as under systemd.
    local who uid
    uid=$(sh_c "id -u tgknock")
    who=$(sh_c "grep -E '^(Uid|CapEff|CapAmb|CapBnd):' /proc/$pid/status" | tr -s '\t ' ' ' | tr '\n' ';')
    [ "$who" = "Uid: $uid $uid $uid $uid;CapEff: 0000000000003000;CapBnd: 0000000000003000;CapAmb: 0000000000003000;" ] \
        || fail "sysvinit start: the daemon is not the service user with CAP_NET_ADMIN and CAP_NET_RAW only: $who"
    ok "sysvinit start: the daemon runs as tgknock (uid $uid) with CAP_NET_ADMIN and CAP_NET_RAW only"
    out=$(in_c sh "$initd" stop 2>&1) || fail "sysvinit stop: $out"
    sh_c "kill -0 $pid" 2>/dev/null && fail "sysvinit stop did not stop the daemon (pid $pid): $out"
    local sleeper
    sleeper=$(sh_c 'sleep 600 > /dev/null 2>&1 & echo $!')
    sh_c "echo $sleeper > /var/lib/tgknock/tgknock.pid"
    out=$(in_c sh "$initd" stop 2>&1) || fail "sysvinit stop with a stale pid file: $out"
    sh_c "kill -0 $sleeper" || fail "sysvinit stop killed pid $sleeper, which held no lock: $out"
    sh_c "kill $sleeper"
    ok "sysvinit stop: stops the daemon; with a stale pid file it says '$out' and kills nothing"
    sh_c "install -m 0755 $initd /etc/init.d/tgknock && update-rc.d tgknock defaults" > /dev/null 2>&1 \
        || fail "update-rc.d tgknock defaults failed"
    out=$(sh_c "ls /etc/rcS.d")
    local s_tgknock s_networking
    s_tgknock=$(echo "$out" | sed -n 's/^S\([0-9]*\)tgknock$/\1/p')
    s_networking=$(echo "$out" | sed -n 's/^S\([0-9]*\)networking$/\1/p')
    { [ -n "$s_tgknock" ] && [ -n "$s_networking" ] && [ "$s_tgknock" -lt "$s_networking" ]; } \
        || fail "insserv does not start tgknock before networking: /etc/rcS.d holds $(echo "$out" | tr '\n' ' ')"
    sh_c "update-rc.d -f tgknock remove && rm /etc/init.d/tgknock" > /dev/null 2>&1
    ok "sysvinit: update-rc.d (insserv) starts tgknock before networking (rcS.d/S${s_tgknock}tgknock, S${s_networking}networking)"

    halt
    rm -rf "$RUN"
    RUN=""
}

test_pending_zero() { [ "$(in_c systest pending "$CTL")" = 0 ]; }
test_prop() { [ "$(prop "$1" "$2")" = "$3" ]; }
test_prop_above() { [ "$(prop "$1" "$2")" -gt "$3" ]; }
wait_exit() {
    local i
    for i in $(seq 1 $(($1 * 10))); do
        kill -0 "$NSPAWN_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$NSPAWN_PID" 2>/dev/null && fail "the container did not go down in $1 s (i=$i)"
    wait "$NSPAWN_PID" 2>/dev/null || true
    NSPAWN_PID="" LEADER=""
}

# ---------------------------------------------------------------------------------------
# Container 2: the tarball and install.sh.
# ---------------------------------------------------------------------------------------
tarball_container() {
    local name=tgknock-$version-x86_64-unknown-linux-musl out trace
    note "container 2: $(basename "$TARBALL") and install.sh ($(elapsed))"
    new_container
    cp "$TARBALL" "$RUN/root/root/"
    boot
    out=$(sh_c "cd /root && tar xzf $name.tar.gz && cd $name && ./install.sh" 2>&1) || fail "install.sh: $out"
    echo "$out" | grep -q "not started yet" || fail "install.sh started tgknock without a token: $out"
    echo "$out" | grep -qx "    sudo tgknock setup" || fail "install.sh does not point to 'sudo tgknock setup': $out"
    sh_c "cmp /root/$name/man/tgknock.1 /usr/local/share/man/man1/tgknock.1 &&
        cmp /root/$name/man/tgknock.conf.5 /usr/local/share/man/man5/tgknock.conf.5" \
        || fail "install.sh did not install the man pages under /usr/local/share/man"
    ok "install.sh: installed, man pages too; not started without a token; it says what is left: sudo tgknock setup"
    sh_c "echo '$TOKEN' > /etc/tgknock/token &&
        sed -i 's/^TGKNOCK_ALLOWED_USERS=.*/TGKNOCK_ALLOWED_USERS=$OWNER/' /etc/tgknock/tgknock.conf &&
        printf 'TGKNOCK_API_URL=http://$API\nTGKNOCK_POLL_TIMEOUT=${POLL}s\n' >> /etc/tgknock/tgknock.conf" \
        || fail "cannot configure"
    out=$(in_c /usr/local/bin/tgknock check 2>&1) || fail "tgknock check (as root): $out"
    in_c systemctl enable --now tgknock > /dev/null 2>&1 || fail "systemctl enable --now tgknock"
    active || fail "tgknock is not active"
    expect_rules iptables closed "installed with install.sh"
    ssh_closed "installed with install.sh"
    ok "configured, tgknock check as root, systemctl enable --now: active, port 22 closed (rules and TCP)"
    out=$(chat /open " open") || exit 1
    ssh_open "after /open"
    chat /close closed > /dev/null || exit 1
    ssh_closed "after /close"
    ok "/open and /close from chat"
    trace=$(sh_c "cd /root/$name && sh -x ./install.sh --uninstall" 2>&1) || fail "install.sh --uninstall: $trace"
    local stop teardown remove
    stop=$(echo "$trace" | grep -n '^+ systemctl disable --now tgknock' | head -n 1 | cut -d: -f1)
    teardown=$(echo "$trace" | grep -n '^+ /usr/local/bin/tgknock teardown' | head -n 1 | cut -d: -f1)
    remove=$(echo "$trace" | grep -n '^+ rm -f .*/usr/local/bin/tgknock' | head -n 1 | cut -d: -f1)
    { [ -n "$stop" ] && [ -n "$teardown" ] && [ -n "$remove" ] && [ "$stop" -lt "$teardown" ] && [ "$teardown" -lt "$remove" ]; } \
        || fail "install.sh --uninstall does not stop, then tear down, then remove: $trace"
    [ "$(in_c systemctl is-active tgknock 2>/dev/null)" != active ] || fail "tgknock still runs after --uninstall"
    [ "$(rules_state iptables)" = absent ] || fail "rules left after --uninstall: $(rules_state iptables)"
    ssh_open "after install.sh --uninstall"
    sh_c "test ! -e /usr/local/bin/tgknock && test ! -e /etc/systemd/system/tgknock.service &&
        test ! -e /usr/local/share/man/man1/tgknock.1 && test ! -e /usr/local/share/man/man5/tgknock.conf.5 &&
        test -f /etc/tgknock/tgknock.conf" \
        || fail "--uninstall left the binary, the unit or the man pages, or removed the config"
    ok "install.sh --uninstall: stopped the daemon, then removed its rules (sshd answers again), then its files and man pages; config kept"
    halt
    rm -rf "$RUN"
    RUN=""
}

# ---------------------------------------------------------------------------------------
# Container 3: the .deb, the guided way: `tgknock setup`, then the command it prints.
# ---------------------------------------------------------------------------------------
# The bot's requests as the fake saw them, in order: "METHOD BODY" lines.
requests() { in_c systest requests "$CTL" "$@"; }
# requests_match PATTERN: a request line matches the extended regular expression.
requests_match() { requests | grep -qE -- "$1"; }
# The bot's long polls, its own (setup polls with timeouts of 1 and 0 s).
test_daemon_polls() { requests getUpdates | grep -q "\"timeout\":${POLL}[,}]"; }
test_journal() { in_c journalctl -b -u tgknock --no-pager -o cat | grep -qF -- "$1"; }

setup_container() {
    local deb=dist/tgknock_${version}_amd64.deb out cmd msg id data query line answered edited
    local t0 ms n ssh_login sayer
    note "container 3: $deb and tgknock setup ($(elapsed))"
    new_container
    cp "$deb" "$RUN/root/root/"
    boot
    out=$(in_c dpkg -i "/root/${deb#dist/}" 2>&1) || fail "dpkg -i: $out"
    echo "$out" | grep -q "sudo tgknock setup" || fail "dpkg -i does not point to 'sudo tgknock setup': $out"
    [ "$(in_c systemctl is-active tgknock 2>/dev/null)" != active ] || fail "the package started tgknock without a token"
    ok "dpkg -i: not started without a token; it says: '$(echo "$out" | grep -m1 'sudo tgknock setup' | sed 's/^tgknock: *//')'"

    # The test's Telegram and short polls: lines of the config setup keeps.
    sh_c "printf '# the test Telegram, and short polls\nTGKNOCK_API_URL=http://$API\nTGKNOCK_POLL_TIMEOUT=${POLL}s\n' \
        >> /etc/tgknock/tgknock.conf" || fail "cannot add the test's API to the config"
    # The owner writes once setup has asked (its first getUpdates): setup never proposes a
    # message that was waiting before it asked.
    n=$(requests getUpdates | wc -l)
    (
        i=0
        while [ "$(requests getUpdates | wc -l)" -le "$n" ] && [ "$i" -lt 600 ]; do
            sleep 0.1
            i=$((i + 1))
        done
        in_c systest say "$CTL" "$OWNER" "hello" > /dev/null
    ) &
    sayer=$!
    # The README's command, word for word (as root, so without sudo).
    t0=$(date +%s)
    # shellcheck disable=SC2016 # expanded in the container
    out=$(in_c env TOKEN="$TOKEN" sh -c 'printf "%s\n" "$TOKEN" "" "" "" | tgknock setup' 2>&1) \
        || fail "tgknock setup exited $?: $out"
    wait "$sayer" || fail "cannot send the owner's hello"
    echo "$out" | grep -qF -- "$SECRET" && fail "tgknock setup printed the token: $out"
    echo "$out" | grep -q "Got \"hello\" from .*: user id $OWNER" || fail "setup did not propose the owner's id: $out"
    echo "$out" | grep -qx "all checks passed" || fail "setup's check did not pass: $out"
    cmd=$(echo "$out" | sed -n '/^One command left, to start the service:$/{n;s/^ *//;p;}')
    [ "$cmd" = "systemctl enable --now tgknock" ] || fail "setup's last words are not 'systemctl enable --now tgknock': $out"
    ok "printf '%s\\n' \"\$TOKEN\" '' '' '' | tgknock setup: exit 0 in $(($(date +%s) - t0)) s, proposed user id $OWNER, \"all checks passed\", then '$cmd'"
    [ "$(sh_c "stat -c '%U:%G %a' /etc/tgknock/token")" = "tgknock:tgknock 600" ] \
        || fail "the token file is $(sh_c "stat -c '%U:%G %a' /etc/tgknock/token"), not tgknock:tgknock 600"
    [ "$(sh_c "cat /etc/tgknock/token")" = "$TOKEN" ] || fail "the token file does not hold the token"
    [ "$(sh_c "stat -c '%U:%G %a' /etc/tgknock/tgknock.conf")" = "root:tgknock 640" ] \
        || fail "the config is $(sh_c "stat -c '%U:%G %a' /etc/tgknock/tgknock.conf"), not root:tgknock 640"
    sh_c "grep -qF -- '$SECRET' /etc/tgknock/tgknock.conf" && fail "the token is in the config"
    sh_c "grep -qx 'TGKNOCK_ALLOWED_USERS=$OWNER' /etc/tgknock/tgknock.conf &&
        grep -qx 'TGKNOCK_TOKEN_FILE=/etc/tgknock/token' /etc/tgknock/tgknock.conf &&
        grep -qx 'TGKNOCK_API_URL=http://$API' /etc/tgknock/tgknock.conf" \
        || fail "the config lacks the owner, the token file or the kept API line: $(sh_c 'cat /etc/tgknock/tgknock.conf')"
    # The board's private network is the veth's 192.168.1.0/24 (198.51.100.0/24 is not one).
    echo "$out" | grep -q "This board is on $LAN_BOARD_NET\. Never block it" \
        || fail "setup did not propose the LAN $LAN_BOARD_NET: $out"
    sh_c "grep -qx 'TGKNOCK_ALWAYS_ALLOW=$LAN_BOARD_NET' /etc/tgknock/tgknock.conf" \
        || fail "the config does not exempt the LAN setup proposed: $(sh_c 'cat /etc/tgknock/tgknock.conf')"
    [ "$(in_c systest pending "$CTL")" = 0 ] || fail "setup left the owner's hello unconfirmed for the daemon"
    ok "token file tgknock:tgknock 0600; config root:tgknock 0640 without the token, TGKNOCK_ALLOWED_USERS=$OWNER, TGKNOCK_ALWAYS_ALLOW=$LAN_BOARD_NET, the API line kept; the hello confirmed"

    # The command setup printed, as it is.
    out=$(sh_c "$cmd" 2>&1) || fail "'$cmd': $out"
    active || fail "tgknock is not active after '$cmd'"
    [ "$(prop tgknock UnitFileState)" = enabled ] || fail "'$cmd' did not enable tgknock"
    wait_for 30 "'logged in as' in the journal" test_journal "logged in as @"
    wait_for 30 "the daemon's first long poll" test_daemon_polls
    requests getUpdates | grep "\"timeout\":${POLL}[,}]" | tail -n 1 | grep -q '"allowed_updates":\[[^]]*"callback_query"' \
        || fail "the daemon's getUpdates does not ask for callback_query: $(requests getUpdates | tail -n 1)"
    expect_rules iptables closed "after '$cmd'"
    ssh_closed "after '$cmd'"
    expect_probe "$LAN_BOARD" open "from the LAN setup exempted"
    ok "$cmd: enabled, active, '$(in_c journalctl -b -u tgknock --no-pager -o cat | grep -m1 -o 'logged in as .*')'; getUpdates asks for callback_query; port 22 closed (rules, TCP), the LAN gets in"

    # /status, then a press on its Open button.
    msg=$(chat /status "ssh (22/tcp)") || exit 1
    out=$(in_c systest keyboard "$CTL" "$OWNER" "ssh (22/tcp)") || fail "no keyboard on the reply to /status: $out"
    id=$(echo "$out" | head -n 1)
    data=$(echo "$out" | tail -n +2 | cut -f2 | grep -x '/open ssh') \
        || fail "the reply to /status (message $id) has no button with data '/open ssh': $(echo "$out" | tail -n +2 | tr '\t\n' '= ')"
    ok "/status: '$(echo "$msg" | head -n 1)', buttons: $(echo "$out" | tail -n +2 | cut -f1 | paste -sd, -)"
    query=$(in_c systest press "$CTL" "$OWNER" "$OWNER" "$id" "$data") || fail "cannot queue the press"
    wait_for 30 "answerCallbackQuery for press $query" requests_match "^answerCallbackQuery .*\"callback_query_id\":\"$query\""
    wait_for 30 "an edit of message $id to 'ssh (22/tcp) open'" \
        requests_match "^editMessageText .*\"message_id\":$id,.*\"text\":\"ssh \(22/tcp\) open"
    out=$(requests)
    answered=$(echo "$out" | grep -n "^answerCallbackQuery .*\"callback_query_id\":\"$query\"" | head -n 1 | cut -d: -f1)
    edited=$(echo "$out" | grep -n "^editMessageText .*\"message_id\":$id," | head -n 1 | cut -d: -f1)
    [ "$answered" -lt "$edited" ] || fail "the press was carried out (edit, request $edited) before it was answered (request $answered)"
    # The body's keys are sorted: the message's text comes after its keyboard's.
    line=$(echo "$out" | sed -n "${edited}p")
    echo "$line" | grep -q '"callback_data":"/close ssh"' || fail "the edited message offers no Close ssh button: $line"
    msg=$(echo "$line" | sed 's/.*"text":"//; s/\\n.*//; s/"}$//')
    expect_rules iptables open "after the press on Open ssh"
    ssh_open "after the press on Open ssh"
    ok "press on '$data' (message $id): answered, then the message edited to '$msg' with a Close ssh button; iptables and TCP show port 22 open"

    # Actions: as the service's user, without its capabilities.
    sh_c "printf '%s\n' 'TGKNOCK_ACTION_ID=/usr/bin/id' \"TGKNOCK_ACTION_CAPS='/bin/grep Cap /proc/self/status'\" \
        >> /etc/tgknock/tgknock.conf && systemctl restart tgknock" || fail "cannot declare the actions and restart"
    active || fail "tgknock is not active after declaring the actions"
    out=$(chat "/run id" "id: exit status 0") || exit 1
    echo "$out" | grep -qE 'uid=[0-9]+\(tgknock\) gid=[0-9]+\(tgknock\)' || fail "/run id did not run as tgknock: $out"
    line=$(echo "$out" | grep -oE 'uid=.*')
    out=$(chat "/run caps" "caps: exit status 0") || exit 1
    echo "$out" | grep -qE 'CapAmb:[[:space:]]*0{16}$' || fail "the action has ambient capabilities: $out"
    echo "$out" | grep -qE 'CapEff:[[:space:]]*0{16}$' || fail "the action has effective capabilities: $out"
    ok "/run id: '$line'; /run caps: $(echo "$out" | grep -oE 'Cap(Eff|Amb):[[:space:]]*[0-9a-f]+' | tr -s '\t ' ' ' | paste -sd, -)"

    # Login notices: the package's example line in sshd's PAM stack, a real ssh login.
    line=$(sh_c "grep '^session' /usr/share/doc/tgknock/examples/tgknock-notify-login") \
        || fail "the package ships no PAM example line"
    sh_c "echo '$line' >> /etc/pam.d/sshd &&
        mkdir -p -m 0700 /root/.ssh && ssh-keygen -q -t ed25519 -N '' -f /root/.ssh/id_ed25519 &&
        cp /root/.ssh/id_ed25519.pub /root/.ssh/authorized_keys" || fail "cannot set up the ssh login"
    ssh_login="ip netns exec client ssh -q -i /root/.ssh/id_ed25519 -o BatchMode=yes"
    ssh_login="$ssh_login -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null root@$LAN_BOARD true"
    drain
    n=$(sent)
    out=$(sh_c "timeout 60 $ssh_login" 2>&1) || fail "ssh login from the LAN failed: $out"
    out=$(in_c systest wait "$CTL" "$OWNER" "$n" "login: root from $LAN_CLIENT (sshd) on systest at " 30) \
        || fail "no login notice after the ssh login"
    ok "'$line' in /etc/pam.d/sshd; ssh root@$LAN_BOARD: the owner gets '$out'"
    in_c systest hang "$CTL" sendMessage 120 > /dev/null || fail "cannot make the fake hang"
    n=$(requests sendMessage | grep -c '"text":"login: ')
    t0=$(date +%s%N)
    # A hang guard, not a speed test: notify-login gives up after 4.5 s.
    out=$(sh_c "timeout 20 $ssh_login" 2>&1) || fail "with Telegram hung, the ssh login failed or took over 20 s: $out"
    ms=$((($(date +%s%N) - t0) / 1000000))
    [ "$(requests sendMessage | grep -c '"text":"login: ')" -gt "$n" ] || fail "the hung login sent no notice to Telegram"
    ok "with Telegram hung (sendMessage held 120 s), the ssh login completed in $ms ms (the notice was tried)"
    halt
    rm -rf "$RUN"
    RUN=""
}

# ---------------------------------------------------------------------------------------
# Container 4: upgrades, a downgrade, remove, purge, from a signed apt repository.
# ---------------------------------------------------------------------------------------
REPO_PORT=8000
OPEN_TO=198.51.100.200 # an opening to an address that never probes: every prober is a stranger
BANNED=192.0.2.9

stop_http() {
    if [ -n "$HTTP_PID" ]; then
        kill "$HTTP_PID" 2> /dev/null || true
        wait "$HTTP_PID" 2> /dev/null || true
        HTTP_PID=""
    fi
}

# tgknock's rules as the kernel lists them, for BACKEND (iptables: both families).
our_rules() {
    case "$1" in
    iptables) sh_c "iptables -S TGKNOCK && ip6tables -S TGKNOCK && iptables -S INPUT | sed -n 2p && ip6tables -S INPUT | sed -n 2p" ;;
    # A set element's timeout and expiry tick; its comment holds its deadline.
    nft) sh_c "nft list table inet tgknock" | sed 's/ timeout [0-9a-z]*//; s/ expires [0-9a-z]*//' ;;
    esac
}

# judged BACKEND WHAT CMD VERSION: runs CMD (a package change over the running daemon) with
# both samplers on; then the package is at VERSION, no sample saw port 22 anything but
# closed to strangers or reached it by TCP, the daemon was started once, and the rules
# (the opening and the ban, their deadlines) are what they were.
judged() {
    local backend=$1 what=$2 cmd=$3 want=$4 pid0 pid1 before after out starts tcp_pid rules_pid t0 took line
    pid0=$(prop tgknock MainPID)
    before=$(our_rules "$backend") || fail "no rules before $what"
    line=$(in_c journalctl -u tgknock --no-pager -o cat | wc -l)
    sh_c "rm -f /run/systest.stop"
    in_c ip netns exec client systest watch-tcp 22 /run/systest.stop "$BOARD4" "$BOARD6" > "$RUN/tcp.log" 2>&1 &
    tcp_pid=$!
    in_c systest watch-rules "$backend" 22 /run/systest.stop > "$RUN/rules.log" 2>&1 &
    rules_pid=$!
    sleep 1
    t0=$(date +%s%N)
    out=$(sh_c "$cmd" 2>&1) || fail "$what: '$cmd' failed: $out"
    took=$((($(date +%s%N) - t0) / 1000000))
    wait_for 60 "tgknock to be active again after $what" active
    pid1=$(prop tgknock MainPID)
    wait_for 30 "the rules after $what to be those before it" test_our_rules "$backend" "$before"
    sleep 1
    sh_c "touch /run/systest.stop"
    wait "$tcp_pid" || fail "systest watch-tcp failed: $(cat "$RUN/tcp.log")"
    wait "$rules_pid" || fail "systest watch-rules failed: $(cat "$RUN/rules.log")"
    [ "$(pkg_version)" = "$want" ] || fail "$what: tgknock is at $(pkg_version), not $want"
    [ "$(grep -c ': samples [0-9]* through 0 errors 0 ' "$RUN/tcp.log")" = 2 ] \
        || fail "$what: port 22 was reached by TCP during the change: $(head -n 20 "$RUN/tcp.log")"
    grep -q '^rules: samples [0-9]* not-closed 0 ' "$RUN/rules.log" \
        || fail "$what: port 22 was not closed to strangers for some samples: $(head -n 40 "$RUN/rules.log")"
    [ "$pid1" != "$pid0" ] || fail "$what: the daemon was not restarted (MainPID $pid0)"
    starts=$(in_c journalctl -u tgknock --no-pager -o cat | tail -n +$((line + 1)) | grep -c '^Started ') || true
    [ "$starts" = 1 ] || fail "$what: the daemon was started $starts times, not once: $(in_c journalctl -u tgknock --no-pager -o cat | tail -n +$((line + 1)))"
    after=$(our_rules "$backend")
    [ "$after" = "$before" ] || fail "$what: the rules changed: before: $before; after: $after"
    ok "$what ($took ms): $want; TCP SYNs to port 22 $(grep -h ': samples' "$RUN/tcp.log" | sed 's/ errors 0 / /' | paste -sd, - | sed 's/,/, /'): none got through; rules $(sed -n 's/^rules: //p' "$RUN/rules.log"); restarted once (MainPID $pid0 -> $pid1); the opening and the ban kept, deadlines too"
}
test_our_rules() { [ "$(our_rules "$1")" = "$2" ]; }
# shellcheck disable=SC2016 # dpkg-query's format
pkg_version() { in_c dpkg-query -W -f '${Version}' tgknock; }

upgrade_container() {
    local deb=dist/tgknock_${version}_amd64.deb work newer newdeb fpr out line state t0
    note "container 4: upgrades from a signed apt repository over HTTP ($(elapsed))"
    work=$(mktemp -d "$top/target/system/upgrade.XXXXXX")
    # The newer build: this package repacked with a higher version (a test stand-in).
    newer=$version+systest1
    dpkg-deb -R "$deb" "$work/pkg"
    sed -i "s/^Version: .*/Version: $newer/" "$work/pkg/DEBIAN/control"
    newdeb=$work/tgknock_${newer}_amd64.deb
    dpkg-deb -b "$work/pkg" "$newdeb" > /dev/null || fail "cannot repack $deb as $newer"
    # The test's signing key, made by gpg in batch mode, and the repository with $version.
    (umask 077 && mkdir "$work/gnupg")
    GNUPGHOME=$work/gnupg gpg --batch --quiet --passphrase '' --quick-generate-key \
        "tgknock system tier <systest@invalid>" ed25519 sign 1d 2> /dev/null || fail "gpg cannot make the test's key"
    fpr=$(GNUPGHOME=$work/gnupg gpg --batch --with-colons --list-secret-keys 2> /dev/null | sed -n 's/^fpr:*\([0-9A-F]*\):*$/\1/p' | head -n 1)
    out=$(TGKNOCK_REPO_KEY=$fpr GNUPGHOME=$work/gnupg sh packaging/repo.sh "$work/repo" "$deb" 2>&1) \
        || fail "packaging/repo.sh with the test's key: $out"
    echo "$out" | grep -q THROWAWAY && fail "packaging/repo.sh used a throwaway key with TGKNOCK_REPO_KEY set: $out"
    sqv --keyring "$work/repo/tgknock-archive-keyring.asc" "$work/repo/dists/stable/Release.gpg" "$work/repo/dists/stable/Release" > /dev/null \
        || fail "sqv does not verify the repository's Release.gpg"
    gpg --batch --dearmor < "$work/repo/tgknock-archive-keyring.asc" > "$work/key.gpg"
    gpgv --keyring "$work/key.gpg" "$work/repo/dists/stable/InRelease" 2> /dev/null \
        || fail "gpgv does not verify the repository's InRelease"
    for f in dists/stable/InRelease dists/stable/main/binary-amd64/Packages "pool/main/t/tgknock/tgknock_${version}_amd64.deb"; do
        [ -f "$work/repo/$f" ] || fail "packaging/repo.sh made no $f"
    done
    sed -n 's/^\(Origin\|Label\|Suite\): /&/p' "$work/repo/dists/stable/Release" | paste -sd, - | grep -qx 'Origin: tgknock,Label: tgknock,Suite: stable' \
        || fail "the Release file does not say Origin: tgknock, Label: tgknock, Suite: stable: $(head -n 4 "$work/repo/dists/stable/Release")"
    # Without a key it says so, loudly, and signs with a throwaway one.
    out=$(sh packaging/repo.sh "$work/repo-throwaway" "$deb" 2>&1) || fail "packaging/repo.sh without a key: $out"
    echo "$out" | grep -q 'WARNING: TGKNOCK_REPO_KEY is not set: signing with a THROWAWAY key' \
        || fail "packaging/repo.sh without TGKNOCK_REPO_KEY does not warn of its throwaway key: $out"
    ok "packaging/repo.sh: dists/stable/InRelease (gpgv) and Release.gpg (sqv) signed by the test's key, pool/, Origin and Label tgknock; without TGKNOCK_REPO_KEY a loud warning and a throwaway key"

    new_container
    cp "$deb" "$newdeb" "$RUN/root/root/"
    # The README's first line fetches the key with curl, which the container lacks: apt's
    # own downloader stands in (over the same HTTP). No sudo either: the test is root.
    # shellcheck disable=SC2016 # the stand-in's own arguments
    printf '#!/bin/sh\n# curl -fsSLo FILE URL, for the test\nexec /usr/lib/apt/apt-helper download-file "$3" "$2"\n' \
        > "$RUN/root/usr/local/bin/curl"
    printf '#!/bin/sh\nexec "$@"\n' > "$RUN/root/usr/local/bin/sudo"
    chmod 0755 "$RUN/root/usr/local/bin/curl" "$RUN/root/usr/local/bin/sudo"
    # The container's only network is its own: no Debian mirror.
    mv "$RUN/root/etc/apt/sources.list" "$RUN/root/etc/apt/sources.list.disabled"
    boot
    nsenter -t "$LEADER" -n -- /usr/bin/python3 -m http.server --bind 127.0.0.1 --directory "$work/repo" "$REPO_PORT" \
        > "$RUN/http.log" 2>&1 &
    HTTP_PID=$!
    wait_for 30 "the repository's web server" sh_c "/usr/lib/apt/apt-helper download-file http://127.0.0.1:$REPO_PORT/dists/stable/Release /tmp/Release"
    # The README's two lines, the repository's address put in.
    # shellcheck disable=SC2016 # sed's addresses
    out=$(sed -n '/^<!-- apt-repository-setup -->$/,/^```$/{/^<!--/d;/^```/d;p}' README.md | sed "s|https://REPO|http://127.0.0.1:$REPO_PORT|g")
    { [ "$(echo "$out" | wc -l)" = 2 ] && echo "$out" | grep -q 'Signed-By: /etc/apt/keyrings/tgknock.asc.*/etc/apt/sources.list.d/tgknock.sources'; } \
        || fail "the README's two repository set-up lines are not found: $out"
    sh_c "$out" > "$RUN/setup-lines.log" 2>&1 || fail "the README's repository lines failed: $(cat "$RUN/setup-lines.log")"
    # The README's unattended-upgrades line, as apt's configuration reads it.
    line=$(sed -n "s/^echo '\(Unattended-Upgrade::Origins-Pattern:: .*\)' | sudo tee .*/\1/p" README.md)
    [ -n "$line" ] || fail "the README has no unattended-upgrades line"
    sh_c "echo '$line' > /etc/apt/apt.conf.d/51tgknock"
    in_c apt-config dump Unattended-Upgrade::Origins-Pattern | grep -qF '"origin=tgknock,label=tgknock"' \
        || fail "apt-config does not read the README's Origins-Pattern line: $(in_c apt-config dump Unattended-Upgrade)"
    out=$(in_c apt-get update 2>&1) || fail "apt-get update: $out"
    echo "$out" | grep -qi 'NO_PUBKEY\|not signed\|W: ' && fail "apt-get update warns: $out"
    out=$(in_c env DEBIAN_FRONTEND=noninteractive apt-get install -y tgknock 2>&1) || fail "apt-get install tgknock: $out"
    [ "$(pkg_version)" = "$version" ] || fail "apt-get install did not install $version"
    ok "the README's key and .sources lines, apt-get update (signed, no warning), apt-get install tgknock: $version over HTTP"

    sh_c "echo '$TOKEN' > /etc/tgknock/token && cat > /etc/tgknock/tgknock.conf <<EOF
TGKNOCK_TOKEN_FILE=/etc/tgknock/token
TGKNOCK_ALLOWED_USERS=$OWNER
TGKNOCK_GATES=\"ssh=22/tcp\"
TGKNOCK_ALWAYS_ALLOW=$LAN_BOARD_NET
TGKNOCK_API_URL=http://$API
TGKNOCK_POLL_TIMEOUT=${POLL}s
EOF" || fail "cannot configure"
    in_c systemctl restart tgknock || fail "systemctl restart tgknock"
    active || fail "tgknock is not active"
    chat "/open ssh 2h $OPEN_TO" " open" > /dev/null || exit 1
    chat "/ban $BANNED 3h" "$BANNED" > /dev/null || exit 1
    out=$(our_rules iptables)
    echo "$out" | grep -q -- "-s $OPEN_TO/32 .*--datestop .*-j RETURN" || fail "no opening to $OPEN_TO: $out"
    echo "$out" | grep -q -- "-s $BANNED/32 .*--datestop " || fail "no ban of $BANNED: $out"
    ssh_closed "with an opening to $OPEN_TO only"
    ok "configured, started; /open ssh 2h $OPEN_TO and /ban $BANNED 3h: in the rules with their deadlines; port 22 closed to the probes"

    # A newer build in the repository; apt upgrades the running daemon.
    out=$(TGKNOCK_REPO_KEY=$fpr GNUPGHOME=$work/gnupg sh packaging/repo.sh "$work/repo" "$newdeb" 2>&1) \
        || fail "packaging/repo.sh with the newer build: $out"
    in_c apt-get update > /dev/null 2>&1 || fail "apt-get update (newer build)"
    judged iptables "apt-get upgrade to $newer" "DEBIAN_FRONTEND=noninteractive apt-get upgrade -y" "$newer"
    judged iptables "dpkg -i $version (a downgrade)" "dpkg -i /root/$(basename "$deb")" "$version"
    # The nft backend, the opening and the ban carried over from the saved state.
    sh_c "systemctl stop tgknock && tgknock teardown >/dev/null && echo TGKNOCK_FIREWALL=nft >> /etc/tgknock/tgknock.conf && systemctl start tgknock" \
        || fail "cannot move to the nft backend"
    out=$(our_rules nft)
    echo "$out" | grep -q "saddr $OPEN_TO .* return" || fail "nft: no opening to $OPEN_TO: $out"
    judged nft "dpkg -i $newer (nft)" "dpkg -i /root/$(basename "$newdeb")" "$newer"
    ssh_closed "after the upgrades"
    expect_probe "$LAN_BOARD" open "from the LAN, after the upgrades"

    # Remove: the daemon stops, then its rules go, and nothing puts them back.
    sh_c "rm -f /run/systest.stop"
    in_c systest watch-rules nft 22 /run/systest.stop > "$RUN/rules.log" 2>&1 &
    local rules_pid=$!
    sleep 1
    out=$(in_c apt-get remove -y tgknock 2>&1) || fail "apt-get remove tgknock: $out"
    sleep 2
    sh_c "touch /run/systest.stop"
    wait "$rules_pid" || fail "systest watch-rules failed: $(cat "$RUN/rules.log")"
    state=$(sed -n 's/^[0-9]* state //p' "$RUN/rules.log" | paste -sd'>' -)
    [ "$state" = "rules=closed daemon=yes>rules=closed daemon=no>rules=absent daemon=no" ] \
        || fail "apt-get remove: the samples went $state, not: the daemon stops, then the rules go"
    { [ "$(rules_state nft)" = absent ] && [ "$(rules_state iptables)" = absent ]; } || fail "rules left after apt-get remove"
    ssh_open "after apt-get remove"
    ok "apt-get remove: ${state//>/, then } (10 ms samples); sshd answers again"

    # Purge: nothing left.
    out=$(in_c apt-get purge -y tgknock 2>&1) || fail "apt-get purge tgknock: $out"
    out=$(sh_c "find / /run -xdev \\( -path /root -o -path /proc -o -path /var/cache/apt -o -path /var/lib/apt/lists -o -path /etc/apt \\) -prune -o \\( -name '*tgknock*' -o -user tgknock \\) -print")
    [ -z "$out" ] || fail "apt-get purge left: $out"
    sh_c "pgrep -u tgknock || pgrep -x tgknock" > /dev/null && fail "a tgknock process is left after purge: $(sh_c 'pgrep -a tgknock')"
    { [ "$(rules_state nft)" = absent ] && [ "$(rules_state iptables)" = absent ] && [ "$(rules_state legacy)" = absent ]; } \
        || fail "rules left after purge"
    [ "$(in_c systemctl show -p LoadState --value tgknock)" = not-found ] || fail "systemd still knows tgknock.service after purge"
    ok "apt-get purge: no file named tgknock or owned by its user, no rule (iptables, legacy, nft), no process, no unit"

    # Reinstall: a clean start.
    out=$(in_c env DEBIAN_FRONTEND=noninteractive apt-get install -y tgknock 2>&1) || fail "apt-get install after purge: $out"
    echo "$out" | grep -q "sudo tgknock setup" || fail "the reinstall does not point to 'sudo tgknock setup': $out"
    [ "$(in_c systemctl is-active tgknock 2>/dev/null)" != active ] || fail "the reinstall started tgknock without a token"
    sh_c "test ! -s /etc/tgknock/token && test ! -e /var/lib/tgknock/state.json && ! grep -q '^TGKNOCK_API_URL' /etc/tgknock/tgknock.conf" \
        || fail "the reinstall found old files: $(sh_c 'ls -la /etc/tgknock /var/lib/tgknock')"
    { [ "$(rules_state iptables)" = absent ] && [ "$(rules_state nft)" = absent ]; } || fail "rules in place before the reinstall was configured"
    sh_c "echo '$TOKEN' > /etc/tgknock/token && sed -i 's/^TGKNOCK_ALLOWED_USERS=.*/TGKNOCK_ALLOWED_USERS=$OWNER/' /etc/tgknock/tgknock.conf &&
        printf 'TGKNOCK_API_URL=http://$API\nTGKNOCK_POLL_TIMEOUT=${POLL}s\n' >> /etc/tgknock/tgknock.conf && systemctl restart tgknock" \
        || fail "cannot configure the reinstall"
    active || fail "the reinstall is not active"
    expect_rules iptables closed "the reinstall, started"
    out=$(our_rules iptables)
    echo "$out" | grep -qE -- "$OPEN_TO|$BANNED" && fail "the reinstall brought back the old opening or ban: $out"
    ssh_closed "the reinstall, started"
    ok "apt-get install after purge: not started without a token, empty token, no state, the packaged config; configured: port 22 closed, no old opening or ban"
    stop_http
    halt
    rm -rf "$RUN" "$work"
    RUN=""
}

# ---------------------------------------------------------------------------------------
# Container 5: approve-login. sshd's PAM stack with the account line (and the notice's
# session line); key and password logins approved by a press on the fake Telegram, denied,
# unanswered, with the daemon stopped, from an exempt address; the notice's Ban button
# cutting a live session. From 192.168.1.3 (inside TGKNOCK_ALWAYS_ALLOW, so the firewall
# lets it in, but not in TGKNOCK_APPROVE_EXEMPT) and 192.168.1.2 (exempt).
# ---------------------------------------------------------------------------------------
APPROVE_CLIENT=192.168.1.3
questions() { requests sendMessage | grep -c '"text":"allow login: ' || true; }
test_questions_above() { [ "$(questions)" -gt "$1" ]; }
# approve_ssh FROM USER OPTIONS: an ssh login from the client namespace to the board's LAN
# address, in the background; its output in $RUN/ssh.out, its exit status in $RUN/ssh.rc.
approve_ssh() {
    local from=$1 user=$2 opts=$3
    rm -f "$RUN/ssh.out" "$RUN/ssh.rc"
    (
        rc=0
        sh_c "timeout 90 ip netns exec client env SSH_ASKPASS=/root/askpass SSH_ASKPASS_REQUIRE=force \
            ssh -q -b $from -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
            -o ConnectTimeout=10 $opts $user@$LAN_BOARD 'date +%s%N'" > "$RUN/ssh.out" 2>&1 < /dev/null || rc=$?
        echo "$rc" > "$RUN/ssh.rc"
    ) &
}
ssh_done() { [ -f "$RUN/ssh.rc" ]; }
# press_question N WORD: waits for a question after the Nth, presses its WORD button;
# prints the time of the press (ns).
press_question() {
    local n=$1 word=$2 out id data t
    wait_for 60 "a new login question" test_questions_above "$n"
    out=$(in_c systest keyboard "$CTL" "$OWNER" "allow login: ") || fail "no question: $out"
    id=$(echo "$out" | head -n 1)
    data=$(echo "$out" | tail -n +2 | grep "^$word"$'\t' | cut -f2) || fail "no $word button: $out"
    t=$(date +%s%N)
    in_c systest press "$CTL" "$OWNER" "$OWNER" "$id" "$data" > /dev/null || fail "cannot press $word"
    echo "$t"
}
approve_config() {
    sh_c "echo '$TOKEN' > /etc/tgknock/token && chown tgknock:tgknock /etc/tgknock/token && chmod 600 /etc/tgknock/token"
    sh_c "printf '%s\n' TGKNOCK_TOKEN_FILE=/etc/tgknock/token TGKNOCK_ALLOWED_USERS=$OWNER \
        TGKNOCK_ALWAYS_ALLOW=$LAN_BOARD_NET TGKNOCK_APPROVE_EXEMPT=$LAN_CLIENT TGKNOCK_APPROVE_TIMEOUT=10s \
        TGKNOCK_API_URL=http://$API TGKNOCK_POLL_TIMEOUT=${POLL}s > /etc/tgknock/tgknock.conf &&
        chown root:tgknock /etc/tgknock/tgknock.conf && chmod 640 /etc/tgknock/tgknock.conf"
}
approve_sshd() {
    sh_c "ip -n client addr add $APPROVE_CLIENT/24 dev tk-client &&
        sed -i '/^@include common-account/a account required pam_exec.so quiet /usr/bin/tgknock approve-login' /etc/pam.d/sshd &&
        echo 'session optional pam_exec.so quiet /usr/bin/tgknock notify-login' >> /etc/pam.d/sshd &&
        mkdir -p -m 0700 /root/.ssh && ssh-keygen -q -t ed25519 -N '' -f /root/.ssh/id_ed25519 &&
        cp /root/.ssh/id_ed25519.pub /root/.ssh/authorized_keys &&
        useradd -m -s /bin/sh ada && echo 'ada:correct horse' | chpasswd &&
        printf '#!/bin/sh\necho \"correct horse\"\n' > /root/askpass && chmod 755 /root/askpass &&
        grep -q '^account required pam_exec.so quiet /usr/bin/tgknock approve-login' /etc/pam.d/sshd"
}

approve_container() {
    local deb=dist/tgknock_${version}_amd64.deb out n t0 i lat lats procs rss ms
    local key="-i /root/.ssh/id_ed25519 -o BatchMode=yes"
    local pw="-o PubkeyAuthentication=no -o PreferredAuthentications=password"
    note "container 5: approve-login with a real sshd ($(elapsed))"
    new_container
    cp "$deb" "$RUN/root/root/"
    boot
    in_c dpkg -i "/root/${deb#dist/}" > "$RUN/dpkg.log" 2>&1 || fail "dpkg -i: $(cat "$RUN/dpkg.log")"
    approve_config || fail "cannot write the config"
    in_c systemctl restart tgknock || fail "systemctl restart tgknock failed"
    active || fail "tgknock is not active"
    wait_for 30 "the daemon's first long poll" test_daemon_polls
    wait_for 30 "the approval socket" sh_c "test -S /run/tgknock/approve.sock"
    out=$(sh_c "stat -c '%U %a' /run/tgknock/approve.sock")
    [ "$out" = "tgknock 600" ] || fail "approve.sock is $out, not tgknock 600"
    approve_sshd || fail "cannot set up sshd's PAM stack and the logins"
    ok "approve.sock tgknock 0600 in /run/tgknock; 'account required pam_exec.so quiet /usr/bin/tgknock approve-login' in /etc/pam.d/sshd"

    # A key login, approved, ten times: press-to-shell latency (the shell prints its start).
    lats=""
    for i in $(seq 1 10); do
        n=$(questions)
        approve_ssh "$APPROVE_CLIENT" root "$key"
        t0=$(press_question "$n" Allow) || exit 1
        wait_for 60 "the approved key login to end" ssh_done
        [ "$(cat "$RUN/ssh.rc")" = 0 ] || fail "approved key login $i failed ($(cat "$RUN/ssh.rc")): $(cat "$RUN/ssh.out")"
        lat=$((($(tail -n 1 "$RUN/ssh.out") - t0) / 1000000))
        lats="$lats $lat"
    done
    wait_for 30 "the question edited to 'allowed by'" \
        requests_match "^editMessageText .*\"text\":\"login: root from $APPROVE_CLIENT \\(sshd\\) on systest: allowed by "
    out=$(echo "$lats" | tr ' ' '\n' | grep . | sort -n)
    ok "key login as root from $APPROVE_CLIENT approved by a press, 10 times: press-to-shell median $(echo "$out" | sed -n 5p)-$(echo "$out" | sed -n 6p) ms, worst $(echo "$out" | tail -n 1) ms (ms:$lats)"
    # The whole list is read (a reader that stops early would break systest's pipe).
    out=$(in_c systest show "$CTL" "$OWNER" 0)
    ok "the chat: '$(echo "$out" | grep 'allow login: root' | head -n 1)', edited to '$(requests editMessageText | grep -o '"text":"login: root[^"]*allowed by[^"]*"' | tail -n 1)'; then '$(echo "$out" | grep '^login: root' | head -n 1)'"

    # A password login, approved.
    n=$(questions)
    approve_ssh "$APPROVE_CLIENT" ada "$pw"
    press_question "$n" Allow > /dev/null || exit 1
    wait_for 60 "the approved password login to end" ssh_done
    [ "$(cat "$RUN/ssh.rc")" = 0 ] || fail "the approved password login failed: $(cat "$RUN/ssh.out")"
    ok "password login as ada approved by a press"

    # Denied.
    n=$(questions)
    approve_ssh "$APPROVE_CLIENT" root "$key"
    press_question "$n" Deny > /dev/null || exit 1
    wait_for 60 "the denied login to end" ssh_done
    [ "$(cat "$RUN/ssh.rc")" != 0 ] || fail "a denied login got in: $(cat "$RUN/ssh.out")"
    wait_for 30 "the question edited to 'denied by'" requests_match '^editMessageText .*"text":"login: root.*: denied by '
    ok "a key login denied by a press: refused (ssh exit $(cat "$RUN/ssh.rc")), the question edited to 'denied by'"

    # Unanswered: what it costs sshd meanwhile, and the refusal after TGKNOCK_APPROVE_TIMEOUT.
    n=$(questions)
    t0=$(date +%s%N)
    approve_ssh "$APPROVE_CLIENT" root "$key"
    wait_for 60 "a new login question" test_questions_above "$n"
    # shellcheck disable=SC2016 # expanded in the container
    procs=$(sh_c 'for p in /proc/[0-9]*; do
            c=$(tr "\0" " " < $p/cmdline 2>/dev/null) || continue
            case "$c" in "sh -c"*) ;; "sshd: root"* | *approve-login*) echo "${p#/proc/} $(sed -n "s/^VmRSS:[^0-9]*\([0-9]*\).*/\1/p" $p/status) $c" ;; esac
        done')
    rss=$(echo "$procs" | awk '{ s += $2 } END { print s }')
    wait_for 60 "the unanswered login to end" ssh_done
    [ "$(cat "$RUN/ssh.rc")" != 0 ] || fail "an unanswered login got in"
    wait_for 30 "the question edited to 'expired'" requests_match '^editMessageText .*"text":"login: root.*: expired'
    ok "unanswered: refused after $((($(date +%s%N) - t0) / 1000000)) ms (TGKNOCK_APPROVE_TIMEOUT=10s); meanwhile $(echo "$procs" | wc -l) processes, $rss KiB RSS: $(echo "$procs" | awk '{ $1 = ""; print }' | paste -sd';' -)"

    # With the daemon stopped: refused at once; from the exempt address: let in.
    in_c systemctl stop tgknock || fail "systemctl stop tgknock"
    t0=$(date +%s%N)
    approve_ssh "$APPROVE_CLIENT" root "$key"
    wait_for 60 "the login with the daemon stopped to end" ssh_done
    [ "$(cat "$RUN/ssh.rc")" != 0 ] || fail "a login got in with the daemon stopped"
    ms=$((($(date +%s%N) - t0) / 1000000))
    approve_ssh "$LAN_CLIENT" root "$key"
    wait_for 60 "the exempt login to end" ssh_done
    [ "$(cat "$RUN/ssh.rc")" = 0 ] || fail "a login from the exempt $LAN_CLIENT failed with the daemon stopped: $(cat "$RUN/ssh.out")"
    ok "daemon stopped: a login from $APPROVE_CLIENT refused in $ms ms; from the exempt $LAN_CLIENT let in"
    in_c systemctl start tgknock || fail "systemctl start tgknock"
    wait_for 30 "the approval socket again" sh_c "test -S /run/tgknock/approve.sock"
    wait_for 30 "the daemon's long poll" test_daemon_polls

    approve_ban
    halt
    rm -rf "$RUN"
    RUN=""
}

# The notice's Ban button cuts a live session from 198.51.100.2 (ssh opened to everyone).
approve_ban() {
    local n out
    in_c tgknock open ssh --for 1h > /dev/null 2>&1 || fail "tgknock open ssh"
    n=$(questions)
    rm -f "$RUN/master.rc"
    (
        rc=0
        sh_c "timeout 120 ip netns exec client ssh -q -M -S /root/ctl -fN -i /root/.ssh/id_ed25519 -o BatchMode=yes \
            -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null root@$BOARD4" > "$RUN/master.out" 2>&1 < /dev/null || rc=$?
        echo "$rc" > "$RUN/master.rc"
    ) &
    press_question "$n" Allow > /dev/null || exit 1
    wait_for 60 "the session from $CLIENT4 to start" test -f "$RUN/master.rc"
    [ "$(cat "$RUN/master.rc")" = 0 ] || fail "the session from $CLIENT4 failed: $(cat "$RUN/master.out")"
    sh_c "timeout 20 ip netns exec client ssh -S /root/ctl root@$BOARD4 true" || fail "the live session does not run a command"
    wait_for 30 "the login notice" in_c systest keyboard "$CTL" "$OWNER" "login: root from $CLIENT4 (sshd)"
    out=$(in_c systest keyboard "$CTL" "$OWNER" "login: root from $CLIENT4 (sshd)")
    echo "$out" | grep -q "^Ban $CLIENT4 for a day"$'\t'"/ban $CLIENT4 1d$" || fail "the notice has no Ban button: $out"
    echo "$out" | grep -q "^Close ssh"$'\t'"/close ssh$" || fail "the notice has no Close button: $out"
    in_c systest press "$CTL" "$OWNER" "$OWNER" "$(echo "$out" | head -n 1)" "/ban $CLIENT4 1d" > /dev/null || fail "cannot press Ban"
    wait_for 30 "the ban in the kernel" sh_c "iptables -S TGKNOCK | grep -q -- '-s $CLIENT4/32 .*-j DROP'"
    if sh_c "timeout 10 ip netns exec client ssh -S /root/ctl root@$BOARD4 true" > /dev/null 2>&1; then
        fail "the banned source's live session still runs commands"
    fi
    sh_c "ip netns exec client ssh -S /root/ctl -O exit root@$BOARD4" > /dev/null 2>&1 || true
    ok "the notice's buttons: 'Ban $CLIENT4 for a day', 'Close ssh'; a press on Ban: the ban in the kernel, and the live session from $CLIENT4 runs nothing more"
}

# ---------------------------------------------------------------------------------------
main() {
    note "a booted Debian with systemd as PID 1 (systemd-nspawn)"
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    [ "$(id -u)" = 0 ] || skip "the system tier needs root (debootstrap, systemd-nspawn)"
    local t
    for t in debootstrap systemd-nspawn nsenter pgrep; do
        command -v "$t" > /dev/null || skip "$t is missing (apt-get install debootstrap systemd-container util-linux procps)"
    done
    for t in reprepro gpg gpgv sqv /usr/bin/python3; do
        command -v "$t" > /dev/null || skip "$t is missing (apt-get install reprepro gnupg gpgv sqv python3)"
    done
    mkdir -p target/system
    if ! make --no-print-directory deb > target/system/build.log 2>&1; then
        tail -n 20 target/system/build.log >&2
        skip "make deb failed (see target/system/build.log)"
    fi
    TARBALL=$top/dist/tgknock-$version-x86_64-unknown-linux-musl.tar.gz
    { [ -f "$TARBALL" ] && [ -f "dist/tgknock_${version}_amd64.deb" ]; } || fail "make deb made no amd64 .deb or x86_64 tarball"
    host_checks "$top/target/x86_64-unknown-linux-musl/release/tgknock"
    if ! cargo build --release --locked --example systest --target x86_64-unknown-linux-musl \
        >> target/system/build.log 2>&1; then
        tail -n 20 target/system/build.log >&2
        fail "cannot build examples/systest.rs for x86_64-unknown-linux-musl"
    fi
    SYSTEST=$top/target/x86_64-unknown-linux-musl/release/examples/systest
    cached_root
    note "cached root $(basename "$ROOT_TAR") ready ($(elapsed))"

    case " $CONTAINERS " in *" 1 "*) deb_container ;; esac
    case " $CONTAINERS " in *" 2 "*) tarball_container ;; esac
    case " $CONTAINERS " in *" 3 "*) setup_container ;; esac
    t=$(date +%s)
    case " $CONTAINERS " in *" 4 "*) upgrade_container ;; esac
    note "container 4 (upgrades) took $(($(date +%s) - t)) s"
    t=$(date +%s)
    case " $CONTAINERS " in *" 5 "*) approve_container ;; esac
    note "container 5 (approve-login) took $(($(date +%s) - t)) s"
    note "all checks passed in $(elapsed)"
}

main "$@"
