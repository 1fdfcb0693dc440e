#!/bin/sh
# The ARM tier: builds the aarch64, armv7 and ARMv6 static binaries (cross/build.sh) and
# runs the integration tests (real binary + fake Bot API + recording fake iptables) with
# each under qemu-user, through TGKNOCK_TEST_BIN / TGKNOCK_TEST_RUNNER:
#   aarch64-unknown-linux-musl      qemu-aarch64-static
#   armv7-unknown-linux-musleabihf  qemu-arm-static -cpu cortex-a7 (Pi 2)
#   arm-unknown-linux-musleabihf    qemu-arm-static -cpu arm1176   (Pi 1, Zero: ARMv6)
# The CPU goes in QEMU_CPU, so the daemons `tgknock watchdog` starts get it too. Those
# re-execute the binary, which the kernel hands to qemu only through binfmt_misc: the
# tests run in a user and mount namespace of their own with a private binfmt_misc
# instance (Linux 6.7 and later) holding the qemu handler, so the host's is left alone.
# Where the kernel has no such instance and the host has no qemu handler, the watchdog
# tests run on the host build only (said below; a failure in CI).
# The tests that need the host's real root run with the host build (`cargo test`) only:
# those on real firewalls in network namespaces (netns, nonroot, knock, crash, defense,
# and setup's LAN proposal, which gives the board a LAN address in a namespace) judge the
# kernel's rules, the host's in any case; and root's console leaving files the service
# user can use switches users, while in this tier's user namespace only root is mapped.
# The tests that step the daemon's wall clock (clock::step_*) need the test hook only debug
# builds have; this tier runs release builds.
#   tests/cross.sh [TARGET…]
# Outside CI a target whose toolchain or qemu is missing prints SKIPPED; in CI it fails.
set -u
cd "$(dirname "$0")/.." || exit 2
CARGO=${CARGO:-cargo}
targets=${*:-aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf arm-unknown-linux-musleabihf}
status=0
summary=""
ci() { [ "${CI:-}" = true ]; }

# Can we make a private binfmt_misc instance?
private_binfmt=false
if command -v unshare >/dev/null 2>&1 \
    && unshare --user --map-root-user --mount --fork \
        sh -c 'mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc' 2>/dev/null; then
    private_binfmt=true
fi

for t in $targets; do
    case "$t" in
    aarch64-*) qemu="qemu-aarch64-static"; cpu=""; handler="qemu-aarch64"; arch_tag="" ;;
    armv7-*) qemu="qemu-arm-static"; cpu="cortex-a7"; handler="qemu-arm"; arch_tag="v7" ;;
    arm-*) qemu="qemu-arm-static"; cpu="arm1176"; handler="qemu-arm"; arch_tag="v6KZ" ;;
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
        if ci; then
            echo "tests/cross.sh: FAILED: $t: $reason" >&2
            status=1
        else
            echo "SKIPPED: ARM tier for $t: $reason" >&2
        fi
        summary="$summary\n  $t: not run ($reason)"
        continue
    fi
    file "$bin" | grep -q "statically linked" || { echo "tests/cross.sh: FAILED: $bin is not statically linked" >&2; status=1; }
    if [ -n "$arch_tag" ]; then
        # The ARM build attributes name the oldest core the code needs.
        tag=$(arm-linux-gnueabihf-readelf -A "$bin" | sed -n 's/^ *Tag_CPU_arch: //p')
        if [ "$tag" != "$arch_tag" ]; then
            echo "tests/cross.sh: FAILED: $bin is built for $tag, not $arch_tag" >&2
            status=1
        fi
    fi
    rules="/usr/lib/binfmt.d/$handler.conf"
    skip_watchdog=""
    wrap=""
    if $private_binfmt && [ -f "$rules" ]; then
        wrap=private
        where="watchdog tests included (a private binfmt_misc with $rules)"
    elif [ -e "/proc/sys/fs/binfmt_misc/$handler" ]; then
        where="watchdog tests included (the host's binfmt_misc handler $handler)"
    else
        skip_watchdog=yes
        where="watchdog tests on the host build only: no binfmt_misc for qemu here"
        if ci; then
            echo "tests/cross.sh: FAILED: $t: neither a private binfmt_misc (Linux >= 6.7) nor a $handler handler" >&2
            status=1
        fi
    fi
    echo "tests/cross.sh: integration tests with $bin under $qemu${cpu:+ -cpu $cpu}; $where"
    log="target/cross-test-$t.log"
    start=$(date +%s)
    # qemu refuses an empty QEMU_CPU: set it only for the targets that name a core.
    if [ -n "$cpu" ]; then export QEMU_CPU="$cpu"; else unset QEMU_CPU; fi
    set -- "$CARGO" test --locked --test integration -- \
        --skip netns:: --skip nonroot:: --skip knock:: --skip crash:: --skip defense:: \
        --skip setup::the_lan_of_the_board_is_proposed \
        --skip clock::step_ \
        --skip board::root_at_the_console_leaves_files_the_service_can_use \
        --skip approve::another_user_is_refused_by_its_credentials_even_through_an_open_socket \
        --skip approve::a_socket_planted_by_another_user_is_never_believed \
        --skip login::a_config_file_not_roots_is_refused \
        --skip board::root_never_hands_over_a_hard_linked_file
    [ -z "$skip_watchdog" ] || set -- "$@" --skip watchdog::
    if [ "$wrap" = private ]; then
        # shellcheck disable=SC2016 # expanded by the inner shell
        TGKNOCK_TEST_BIN="$(pwd)/$bin" TGKNOCK_TEST_RUNNER="$qemu" \
            unshare --user --map-root-user --mount --fork sh -c '
                rules=$1; shift
                mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc || exit 97
                cat "$rules" > /proc/sys/fs/binfmt_misc/register || exit 98
                exec "$@"' sh "$rules" "$@" > "$log" 2>&1
    else
        TGKNOCK_TEST_BIN="$(pwd)/$bin" TGKNOCK_TEST_RUNNER="$qemu" "$@" > "$log" 2>&1
    fi
    rc=$?
    took=$(($(date +%s) - start))
    cat "$log"
    result=$(grep -E '^test result:' "$log" | tail -n 1)
    [ "$rc" = 0 ] || status=1
    summary="$summary\n  $t ($qemu${cpu:+ -cpu $cpu}, $(wc -c < "$bin") bytes, ${took} s): ${result:-no result, exit $rc}"
done
printf 'ARM tier:%b\n' "$summary"
exit $status
