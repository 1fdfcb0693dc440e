#!/bin/sh
# The ARM tier: builds the aarch64 and armv7 static binaries (cross/build.sh) and runs the
# integration tests (real binary + fake Bot API + recording fake iptables) with each,
# under qemu-user, through TGKNOCK_TEST_BIN / TGKNOCK_TEST_RUNNER.
#   tests/cross.sh [TARGET…]
# Outside CI a target whose toolchain or qemu is missing prints SKIPPED; in CI it fails.
set -u
cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}
targets=${*:-aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf}
status=0
summary=""
for t in $targets; do
    case "$t" in
    aarch64-*) qemu=qemu-aarch64-static ;;
    armv7-*) qemu=qemu-arm-static ;;
    *) echo "tests/cross.sh: no qemu for $t" >&2; exit 2 ;;
    esac
    if ! command -v "$qemu" >/dev/null 2>&1; then
        reason="$qemu is missing (apt-get install qemu-user-static)"
    elif ! bin=$(sh cross/build.sh "$t"); then
        reason="cross/build.sh $t failed (see above)"
    else
        reason=""
    fi
    if [ -n "$reason" ]; then
        if [ "${CI:-}" = true ]; then
            echo "tests/cross.sh: FAILED: $t: $reason" >&2
            status=1
        else
            echo "SKIPPED: ARM tier for $t: $reason" >&2
        fi
        summary="$summary\n  $t: skipped ($reason)"
        continue
    fi
    file "$bin" 2>/dev/null | grep -q "statically linked" || { echo "tests/cross.sh: $bin is not statically linked" >&2; status=1; }
    echo "tests/cross.sh: integration tests with $bin under $qemu"
    log="target/cross-test-$t.log"
    # The tiers on real firewalls in network namespaces (netns, nonroot, knock, crash) run the
    # host build; under qemu the fake tiers (chat, console, faults, hostile, flood) judge the
    # ARM build. The watchdog tests re-execute the binary, which under qemu-user needs a
    # binfmt_misc handler; without one they run on the host build only, and we say so.
    skip_watchdog=""
    if ! ls /proc/sys/fs/binfmt_misc/ 2>/dev/null | grep -q "^qemu-"; then
        skip_watchdog="--skip watchdog::"
        echo "tests/cross.sh: note: no binfmt_misc handler for qemu here; the watchdog tests (which re-execute the binary) run on the host build only"
    fi
    TGKNOCK_TEST_BIN="$(pwd)/$bin" TGKNOCK_TEST_RUNNER="$qemu" \
        $CARGO test --locked --test integration -- --skip netns:: --skip nonroot:: --skip knock:: --skip crash:: $skip_watchdog > "$log" 2>&1
    rc=$?
    cat "$log"
    result=$(grep -E '^test result:' "$log" | tail -n 1)
    [ "$rc" = 0 ] || status=1
    summary="$summary\n  $t ($qemu): $result"
done
printf "ARM tier:$summary\n"
exit $status
