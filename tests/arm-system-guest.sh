#!/bin/bash
# The checks of the full-system ARM tier (tests/arm-system.sh), run INSIDE the booted ARM
# guest by armsys-check.service at every boot (`early` by armsys-early.service, between
# tgknock and the network). Not run on the host.
#
# Its report goes to /var/log/armsys.log (read back from the image with debugfs) and to
# the console; the last line is `ARMSYS-END ok` or `ARMSYS-END failed`. Stage 1 (first
# boot) installs and judges, then reboots; stage 2 judges the boot and powers off.
#
# Telegram is the host's fake Bot API (examples/systest), reached through user networking's
# guestfwd at 10.0.2.100: the API on 8081, its line protocol (say, count, sent) on 8082.
# TCP probes of port 22 come from the network namespace `client` over a veth pair.
set -u
ARCH=$(dpkg --print-architecture)
OWNER=111111111
TOKEN="7000000001:AAF-SystemTierSecretSystemTier_x9"
FAKE=10.0.2.100
BOARD4=198.51.100.1 CLIENT4=198.51.100.2 # TEST-NET-2: outside, not a LAN
BOARD6=2001:db8:213::1 CLIENT6=2001:db8:213::2
# The rate limit's source, in a namespace of its own: no other check spends its count.
BOARD_LIM=203.0.113.1 CLIENT_LIM=203.0.113.2 # TEST-NET-3
LIMIT=20 # TGKNOCK_RATE_LIMIT ssh=20/hour: above what the other checks' probes make, and
# refilled so slowly (one every 3 min) that the slow probes of an emulated board cannot outpace it
OPEN_SECS=30 # the opening whose deadline the kernel keeps with the daemon stopped
LOG=/var/log/armsys.log
STATE=/var/lib/armsys

say() { echo "$*" | tee -a "$LOG"; }
ok() { say "  ok  $ARCH: $*"; }
measured() { say "  measured  $ARCH: $*"; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }

fail() {
    say "FAILED: $ARCH: $*"
    {
        echo "---- systemctl status tgknock"
        systemctl status tgknock --no-pager -l 2>&1
        echo "---- journalctl -u tgknock"
        journalctl -b -u tgknock --no-pager -o short-monotonic -n 150 2>&1
        echo "---- the kernel's log (last 40 lines)"
        journalctl -b -k --no-pager -n 40 2>&1
        echo "---- the firewall"
        iptables -S 2>&1
        ip6tables -S 2>&1
        nft list ruleset 2>&1
    } >> "$LOG"
    say "ARMSYS-END failed"
    sync
    systemctl poweroff
    exit 1
}

# wait_for SECS WHAT CMD…: CMD every half second until it succeeds.
wait_for() {
    local secs=$1 what=$2 end
    shift 2
    end=$(($(date +%s) + secs))
    until "$@" > /dev/null 2>&1; do
        [ "$(date +%s)" -lt "$end" ] || fail "timed out after $secs s waiting for $what"
        sleep 0.5
    done
}

# ---- the fake Bot API's control: one line out, one JSON line back.
ctl() {
    local reply
    exec 3<> "/dev/tcp/$FAKE/8082" || return 1
    printf '%s\n' "$1" >&3
    IFS= read -r -t 30 reply <&3 || { exec 3<&-; return 1; }
    exec 3<&-
    printf '%s\n' "$reply"
}
pending_zero() { [ "$(ctl pending)" = 0 ]; }
count_above() { [ "$(ctl "count $OWNER")" -gt "$1" ]; }
# chat TEXT NEEDLE: the owner sends TEXT; waits for the bot's reply, which must hold NEEDLE.
chat() {
    local n before after new
    wait_for 60 "the daemon to take the queued updates" pending_zero
    n=$(ctl "count $OWNER") || fail "the fake Bot API does not answer"
    before=$(ctl "sent $OWNER") || fail "the fake Bot API does not answer"
    ctl "say $OWNER $1" > /dev/null || fail "cannot queue '$1'"
    wait_for 60 "a reply to '$1'" count_above "$n"
    after=$(ctl "sent $OWNER")
    new=${after#"${before%]}"}
    case "$new" in
    *"$2"*) REPLY_TEXT=$(echo "$new" | sed 's/^[],"]*//; s/"\]$//' | cut -c1-120) ;;
    *) fail "the reply to '$1' does not say '$2': $new" ;;
    esac
}

# ---- the board as a client sees it: a veth pair to the namespace `client`.
client_net() {
    ip link add tk-board type veth peer name tk-client &&
        ip netns add client && ip link set tk-client netns client &&
        ip addr add "$BOARD4/24" dev tk-board && ip -6 addr add "$BOARD6/64" dev tk-board nodad &&
        ip link set tk-board up &&
        ip -n client addr add "$CLIENT4/24" dev tk-client &&
        ip -n client -6 addr add "$CLIENT6/64" dev tk-client nodad &&
        ip -n client link set tk-client up && ip -n client link set lo up &&
        ip link add tk-board2 type veth peer name tk-lim &&
        ip netns add lim && ip link set tk-lim netns lim &&
        ip addr add "$BOARD_LIM/24" dev tk-board2 && ip link set tk-board2 up &&
        ip -n lim addr add "$CLIENT_LIM/24" dev tk-lim &&
        ip -n lim link set tk-lim up && ip -n lim link set lo up
}
# probe ADDR [NAMESPACE]: a TCP connection to port 22 from the client (a SYN, and one
# retransmission when it is dropped): open, refused or dropped.
probe() {
    local rc
    ip netns exec "${2:-client}" timeout 2 bash -c "exec 3<>/dev/tcp/$1/22" 2> /dev/null
    rc=$?
    case $rc in 0) echo open ;; 124) echo dropped ;; *) echo refused ;; esac
}
expect_probe() {
    local got
    got=$(probe "$1")
    [ "$got" = "$2" ] || fail "TCP to $1 port 22 is $got, expected $2 ($3)"
}
ssh_closed() { expect_probe "$BOARD4" dropped "$1" && expect_probe "$BOARD6" dropped "$1"; }
ssh_open() { expect_probe "$BOARD4" open "$1" && expect_probe "$BOARD6" open "$1"; }

# The rules as the kernel lists them (as tests/system.sh reads them): closed, open, absent.
rules_state() {
    case "$1" in
    iptables)
        local t
        for t in iptables ip6tables; do
            $t -S INPUT 2> /dev/null | grep -qx -- '-A INPUT -j TGKNOCK' || { echo absent; return; }
            $t -S TGKNOCK 2> /dev/null | grep -q -- '--dport 22 .*-j DROP' || { echo open; return; }
            $t -S TGKNOCK 2> /dev/null | grep -q -- '--dport 22 .*-j RETURN' && { echo open; return; }
        done
        echo closed
        ;;
    nft)
        nft list table inet tgknock 2> /dev/null | awk '
            /tcp dport 22 / && / return/ { ret = 1 }
            /tcp dport 22 / && / drop/ { if (/ipv4/) d4 = 1; else if (/ipv6/) d6 = 1; else { d4 = 1; d6 = 1 } }
            { table = 1 }
            END { print !table ? "absent" : (ret || !d4 || !d6) ? "open" : "closed" }'
        ;;
    esac
}
expect_rules() {
    local got
    got=$(rules_state "$1")
    [ "$got" = "$2" ] || fail "the $1 rules show port 22 $got, expected $2 ($3)"
}
test_rules() { [ "$(rules_state "$1")" = "$2" ]; }
# The opening's rule with its deadline in the kernel (nft `meta time <`, iptables `-m time`).
deadline_rule() {
    case "$1" in
    nft) nft list table inet tgknock | grep 'tcp dport 22' | grep 'meta time <' | grep -q return ;;
    iptables) iptables -S TGKNOCK | grep -- '--dport 22' | grep -- '--datestop' | grep -q RETURN ;;
    esac
}

active() { [ "$(systemctl is-active tgknock)" = active ]; }
prop() { systemctl show -p "$2" --value "$1"; }
main_pid() { prop tgknock MainPID; }

# The daemon runs as tgknock, with two capabilities, under the unit's seccomp filter, and
# was never killed or restarted (a system call the filter lacks kills it with SIGSYS).
service_user() {
    local pid st
    pid=$(main_pid)
    [ "${pid:-0}" -gt 0 ] || fail "tgknock has no main process ($1)"
    st=$(tr -s '\t ' ' ' < "/proc/$pid/status")
    echo "$st" | grep -qx "Uid: $(id -u tgknock) $(id -u tgknock) $(id -u tgknock) $(id -u tgknock)" \
        || fail "tgknock does not run as the user tgknock ($1): $(echo "$st" | grep Uid)"
    echo "$st" | grep -qx 'CapEff: 0000000000003000' || fail "tgknock's capabilities ($1): $(echo "$st" | grep CapEff)"
    echo "$st" | grep -qx 'Seccomp: 2' || fail "tgknock runs without the unit's system call filter ($1)"
    [ -n "$(prop tgknock SystemCallFilter)" ] || fail "the unit has no SystemCallFilter ($1)"
    never_killed "$1"
}
never_killed() {
    local bad
    bad=$(journalctl -b -u tgknock --no-pager | grep -E 'status=31/SYS|code=(killed|dumped)|Failed with result|Scheduled restart' || true)
    [ -z "$bad" ] || fail "tgknock was killed or restarted ($1): $bad"
    [ "$(prop tgknock NRestarts)" = 0 ] || fail "tgknock restarted $(prop tgknock NRestarts) times ($1)"
}

# Another backend: the daemon stopped, the old backend's rules taken out (`tgknock teardown`
# with the old config, as tests/system.sh switches), the config changed, the daemon started.
set_firewall() {
    systemctl stop tgknock || fail "systemctl stop tgknock"
    tgknock teardown > /dev/null 2>&1 || fail "tgknock teardown before TGKNOCK_FIREWALL=$1"
    sed -i "s/^TGKNOCK_FIREWALL=.*/TGKNOCK_FIREWALL=$1/" /etc/tgknock/tgknock.conf
    systemctl start tgknock || fail "systemctl start tgknock with TGKNOCK_FIREWALL=$1"
    active || fail "tgknock is not active with TGKNOCK_FIREWALL=$1"
    wait_for 60 "the daemon's first poll" pending_zero
}

# One change, as the console makes it (the whole process, as BENCHMARKS.md measures it):
# the median of three `tgknock open ssh --for 1h` and three `tgknock close ssh`.
time_of_change() {
    local t0 opens="" closes=""
    for _ in 1 2 3; do
        t0=$(now_ms)
        tgknock open ssh --for 1h > /dev/null 2>&1 || fail "tgknock open ssh --for 1h ($1)"
        opens="$opens $(($(now_ms) - t0))"
        test_rules "$1" open || fail "tgknock open ssh did not open the $1 rules"
        t0=$(now_ms)
        tgknock close ssh > /dev/null 2>&1 || fail "tgknock close ssh ($1)"
        closes="$closes $(($(now_ms) - t0))"
        test_rules "$1" closed || fail "tgknock close ssh did not close the $1 rules"
    done
    median() { printf '%s\n' "$@" | sort -n | sed -n 2p; }
    # shellcheck disable=SC2086 # the words are the three times
    measured "time of one change, $1: open $(median $opens) ms, close $(median $closes) ms (median of 3, the whole \`tgknock\` console process; each:$opens /$closes ms)"
}

# The daemon idle (a poll held by the fake API): its RSS and CPU over SECS.
idle() {
    local secs=$1 pid t0 t1 tick rss
    pid=$(main_pid)
    tick=$(getconf CLK_TCK)
    wait_for 60 "the daemon to take the queued updates" pending_zero
    sleep 2
    t0=$(awk '{ print $14 + $15 }' "/proc/$pid/stat")
    sleep "$secs"
    t1=$(awk '{ print $14 + $15 }' "/proc/$pid/stat")
    rss=$(awk '/^VmRSS/ { print $2 " " $3 }' "/proc/$pid/status")
    measured "idle ($2): RSS $rss, CPU $((t1 - t0)) ticks of 1/$tick s in $secs s ($(awk -v t=$((t1 - t0)) -v h="$tick" -v s="$secs" 'BEGIN { printf "%.2f", 100 * t / h / s }') % of one CPU)"
}

# The kernel keeps the deadline: /open for OPEN_SECS from chat, the daemon stopped, and at
# the deadline TCP is dropped again, with the rule still listed (no one removed it).
deadline_with_daemon_stopped() {
    local fw=$1 t0 left
    chat "/open ssh ${OPEN_SECS}s" " open"
    t0=$(date +%s) # the deadline is at most OPEN_SECS from now
    ok "$fw: /open ssh ${OPEN_SECS}s from the fake Bot API: '$REPLY_TEXT'"
    deadline_rule "$fw" || fail "no $fw rule with the opening's deadline in the kernel"
    expect_rules "$fw" open "after /open"
    ssh_open "after /open ($fw)"
    systemctl stop tgknock || fail "systemctl stop tgknock"
    deadline_rule "$fw" || fail "stopping tgknock took the opening's rule out ($fw)"
    expect_probe "$BOARD4" open "the daemon stopped, before the deadline ($fw)"
    left=$((t0 + OPEN_SECS + 3 - $(date +%s)))
    [ "$left" -le 0 ] || sleep "$left"
    [ "$(systemctl is-active tgknock)" != active ] || fail "tgknock runs again"
    deadline_rule "$fw" || fail "the opening's rule went away with the daemon stopped ($fw)"
    ssh_closed "at the deadline with the daemon stopped ($fw)"
    ok "$fw: open to TCP, the daemon stopped, at its deadline the kernel drops port 22 again (IPv4, IPv6) while the rule is still listed"
    systemctl start tgknock || fail "systemctl start tgknock"
    wait_for 60 "the daemon to close the expired opening" test_rules "$fw" closed
    ssh_closed "after the restart ($fw)"
    ok "$fw: started again, the daemon takes the expired opening out"
}

# A rate limit (TGKNOCK_RATE_LIMIT ssh=20/hour) with the gate open, and a ban of one source.
limit_and_ban() {
    local fw=$1 got opened=0 dropped=0
    chat "/open ssh 10m" " open"
    # One source: its burst of new connections, then the kernel drops it; others still pass.
    for _ in $(seq 1 $((LIMIT + 3))); do
        got=$(probe "$BOARD_LIM" lim)
        case "$got" in open) opened=$((opened + 1)) ;; dropped) dropped=$((dropped + 1)); break ;; esac
    done
    { [ "$opened" -ge "$LIMIT" ] && [ "$opened" -le $((LIMIT + 1)) ] && [ "$dropped" = 1 ]; } \
        || fail "rate limit $LIMIT/hour on $fw: $opened connections got through, then $dropped dropped (expected $LIMIT, then a drop)"
    expect_probe "$BOARD4" open "another source is not limited by the first one's count ($fw)"
    ok "$fw: rate limit ssh=$LIMIT/hour: $opened connections from $CLIENT_LIM, then dropped; $CLIENT4 still gets through"
    chat "/ban $CLIENT6 10m" "banned"
    case "$fw" in
    nft) nft list set inet tgknock ban_v6 | grep -q "${CLIENT6}.*expires" || fail "no ban_v6 element with a timeout for $CLIENT6" ;;
    iptables) ip6tables -S TGKNOCK | grep -- "-s $CLIENT6/128" | grep -- '--datestop' | grep -q DROP || fail "no ip6tables ban rule with a deadline for $CLIENT6" ;;
    esac
    expect_probe "$BOARD6" dropped "$CLIENT6 banned, the gate open ($fw)"
    ok "$fw: /ban $CLIENT6 10m: '$REPLY_TEXT'; its TCP to the open gate is dropped (a kernel deadline on the ban)"
    chat "/unban $CLIENT6" ""
    expect_probe "$BOARD6" open "$CLIENT6 unbanned, the gate open ($fw)"
    chat "/close" "closed"
    expect_rules "$fw" closed "after /close"
    ssh_closed "after /close ($fw)"
    ok "$fw: /unban lets $CLIENT6 in again; /close closes (rules, TCP)"
}

# ---------------------------------------------------------------------------------------
stage1() {
    local t0 out
    say "== $ARCH stage 1: $(uname -srm), $(nproc) CPUs; systemd $(systemctl --version | sed -n '1s/^systemd \([0-9]*\).*/\1/p')"
    client_net || fail "cannot set up the veth pair and the client namespace"
    wait_for 120 "sshd" systemctl is-active ssh
    ssh_open "sshd answers before tgknock is installed"
    ok "booted; without tgknock sshd answers on $BOARD4 and $BOARD6 port 22"

    # The README's way: the package, then the token and the config, then the command
    # `tgknock setup` prints.
    out=$(dpkg -i /root/tgknock.deb 2>&1) || fail "dpkg -i: $out"
    ok "dpkg -i $(cat /root/tgknock.deb.name)"
    echo "$TOKEN" > /etc/tgknock/token
    cat > /etc/tgknock/tgknock.conf << EOF
TGKNOCK_TOKEN_FILE=/etc/tgknock/token
TGKNOCK_ALLOWED_USERS=$OWNER
TGKNOCK_GATES="ssh=22/tcp"
TGKNOCK_RATE_LIMIT="ssh=$LIMIT/hour"
TGKNOCK_FIREWALL=nft
TGKNOCK_POLL_TIMEOUT=20s
TGKNOCK_API_URL=http://$FAKE:8081
EOF
    out=$(tgknock check 2>&1) || fail "tgknock check: $out"
    echo "$out" | grep -qi 'meta time\|deadline' && ok "tgknock check: $(echo "$out" | grep -i 'meta time\|deadline' | head -n 1)"
    t0=$(now_ms)
    systemctl enable --now tgknock 2> /dev/null || fail "systemctl enable --now tgknock"
    measured "systemctl enable --now tgknock to READY: $(($(now_ms) - t0)) ms"
    active || fail "tgknock is not active"
    service_user "after start"
    ok "active as the user tgknock (CAP_NET_ADMIN, CAP_NET_RAW) under the unit's SystemCallFilter (Seccomp: 2)"
    expect_rules nft closed "after start"
    ssh_closed "after start"
    ok "nft: port 22 closed (table inet tgknock, TCP from $CLIENT4 and $CLIENT6 dropped)"

    deadline_with_daemon_stopped nft
    limit_and_ban nft
    time_of_change nft
    never_killed "nft"
    expect_rules nft closed "after the nft checks"

    set_firewall iptables
    service_user "iptables"
    expect_rules iptables closed "after the switch to iptables ($(iptables -V))"
    ssh_closed "iptables"
    ok "iptables ($(iptables -V)): port 22 closed (chain TGKNOCK, TCP)"
    deadline_with_daemon_stopped iptables
    limit_and_ban iptables
    time_of_change iptables
    never_killed "iptables"

    set_firewall nft
    expect_rules nft closed "back on nft"
    idle 30 "nft, after the checks"
    never_killed "before the reboot"
    echo 2 > "$STATE/stage"
    say "== $ARCH rebooting"
    sync
    systemctl reboot
}

stage2() {
    local ready pre net sshd early user
    say "== $ARCH stage 2: after the reboot"
    wait_for 120 "tgknock" active
    ready=$(prop tgknock ActiveEnterTimestampMonotonic)
    pre=$(prop network-pre.target ActiveEnterTimestampMonotonic)
    net=$(prop networking.service ActiveEnterTimestampMonotonic)
    sshd=$(prop ssh.service ExecMainStartTimestampMonotonic)
    for v in "$ready" "$pre" "$net" "$sshd"; do
        [ "${v:-0}" -gt 0 ] || fail "a boot timestamp is missing: tgknock $ready, network-pre $pre, networking $net, sshd $sshd"
    done
    { [ "$ready" -le "$pre" ] && [ "$pre" -le "$net" ] && [ "$ready" -lt "$sshd" ]; } \
        || fail "at boot tgknock was ready at $ready µs, network-pre.target at $pre, networking at $net, sshd at $sshd"
    early=$(cat "$STATE/early" 2> /dev/null)
    [ "$early" = "rules closed; eth0 without an address; tgknock active" ] \
        || fail "between tgknock and the network the board showed: '$early'"
    ok "reboot: tgknock READY $((ready / 1000)) ms into the boot, before network-pre.target ($((pre / 1000)) ms), networking ($((net / 1000)) ms), sshd ($((sshd / 1000)) ms)"
    ok "reboot: after tgknock and before networking.service: $early"
    user=$(systemctl show -p UserspaceTimestampMonotonic --value)
    measured "boot to READY: $((ready / 1000)) ms from the kernel's start to tgknock's READY=1 (kernel and initrd $((user / 1000)) ms, then systemd $(((ready - user) / 1000)) ms)"
    client_net || fail "cannot set up the veth pair and the client namespace"
    expect_rules nft closed "after the reboot"
    ssh_closed "after the reboot"
    ok "after the reboot port 22 is closed (table inet tgknock, TCP)"
    wait_for 60 "the daemon's first poll" pending_zero
    chat /status "ssh"
    ok "after the reboot the bot answers /status: '$REPLY_TEXT'"
    service_user "after the reboot"
    idle 30 "after the reboot"
    never_killed "at the end"
    say "ARMSYS-END ok"
    echo finished > "$STATE/stage"
    sync
    systemctl poweroff
}

# Between tgknock and the network (armsys-early.service): what the board shows.
early() {
    local r e a
    r=$(rules_state nft)
    e=$(ip -o -4 addr show dev eth0 2> /dev/null)
    if [ -z "$e" ]; then e="eth0 without an address"; else e="eth0 has $e"; fi
    a=$(systemctl is-active tgknock)
    echo "rules $r; $e; tgknock $a" > "$STATE/early"
}

mkdir -p "$STATE"
case "${1:-}" in
early) early ;;
*)
    case "$(cat "$STATE/stage" 2> /dev/null || echo 1)" in
    1) stage1 ;;
    2) stage2 ;;
    *) say "armsys: nothing to do" ;;
    esac
    ;;
esac
