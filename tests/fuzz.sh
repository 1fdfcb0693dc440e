#!/bin/sh
# Runs tgknock's cargo-fuzz targets (fuzz/) for a bounded time each and prints how many
# inputs each ran. Exits non-zero when a target crashes (the input is kept under
# fuzz/artifacts/TARGET/), or hangs past FUZZ_TIMEOUT seconds on one input.
#
#   FUZZ_SECONDS    seconds per target (default 30)
#   FUZZ_TARGETS    targets to run (default: parse_command decode_updates)
#   FUZZ_SANITIZER  cargo-fuzz sanitizer (default none: tgknock forbids unsafe code, and
#                   without ASan a run gets several times the executions; `address` works)
#   FUZZ_TIMEOUT    seconds one input may take (default 10)
#
# Needs cargo-fuzz, which it installs from crates.io if missing, and a nightly toolchain
# (`cargo +nightly`), or else the installed one with RUSTC_BOOTSTRAP=1. When they cannot
# be had it prints "SKIPPED: reason" and exits 0, unless CI=true, where that is a failure.
#
# The seed corpora in fuzz/corpus/TARGET/ are only read; what the fuzzer finds goes to
# fuzz/target/corpus/TARGET/ (ignored by git), which later runs start from.
set -eu

cd "$(dirname "$0")/../fuzz"
SECONDS_EACH=${FUZZ_SECONDS:-30}
TARGETS=${FUZZ_TARGETS:-parse_command decode_updates}
SANITIZER=${FUZZ_SANITIZER:-none}
TIMEOUT=${FUZZ_TIMEOUT:-10}

skip() {
    if [ "${CI:-}" = "true" ]; then
        echo "FAILED: $1 (CI=true: fuzzing may not be skipped)" >&2
        exit 1
    fi
    echo "SKIPPED: $1"
    exit 0
}

command -v cargo >/dev/null 2>&1 || skip "cargo is not installed"
# cargo-fuzz passes nightly-only flags. Without a nightly toolchain, the installed one
# is told to accept them (RUSTC_BOOTSTRAP=1), as builds of Rust itself do.
if cargo +nightly --version >/dev/null 2>&1; then
    set -- cargo +nightly
    toolchain=$(cargo +nightly --version)
elif RUSTC_BOOTSTRAP=1 cargo --version >/dev/null 2>&1; then
    export RUSTC_BOOTSTRAP=1
    set -- cargo
    toolchain="$(cargo --version) with RUSTC_BOOTSTRAP=1 (no nightly toolchain)"
else
    skip "no usable Rust toolchain for cargo-fuzz"
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz from crates.io"
    cargo install cargo-fuzz --locked >/dev/null 2>&1 || skip "cargo install cargo-fuzz failed"
    cargo fuzz --version >/dev/null 2>&1 || skip "cargo-fuzz does not run after installing"
fi
echo "fuzz: $(cargo fuzz --version), $toolchain; ${SECONDS_EACH} s per target, sanitizer $SANITIZER"

if ! "$@" fuzz build -s "$SANITIZER" -a; then
    echo "FAILED: the fuzz targets do not build" >&2
    exit 1
fi

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
status=0
total=0
for t in $TARGETS; do
    [ -d "corpus/$t" ] || { echo "fuzz: no seed corpus fuzz/corpus/$t" >&2; exit 2; }
    work="target/corpus/$t"
    mkdir -p "$work"
    log="$logs/$t.log"
    start=$(date +%s)
    if "$@" fuzz run -s "$SANITIZER" -a "$t" "$work" "corpus/$t" -- \
        -max_total_time="$SECONDS_EACH" -max_len=4096 -timeout="$TIMEOUT" \
        -print_final_stats=1 >"$log" 2>&1; then
        result=ok
    else
        result=FAILED
        status=1
    fi
    took=$(($(date +%s) - start))
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    if [ -z "$runs" ]; then
        runs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$log" | tail -n 1)
    fi
    runs=${runs:-0}
    total=$((total + runs))
    corpus=$(find "$work" -type f | wc -l)
    echo "fuzz: $t: $result, $runs executions in ${took} s, working corpus $corpus inputs"
    if [ "$result" != ok ]; then
        echo "---- $t: last lines of the fuzzer's output ----" >&2
        tail -n 40 "$log" >&2
        find "artifacts/$t" -type f 2>/dev/null | sed "s|^artifacts/|fuzz: kept fuzz/artifacts/|" >&2 || true
    fi
done
echo "fuzz: $total executions in all"
exit $status
