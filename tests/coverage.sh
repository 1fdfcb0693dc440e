#!/bin/sh
# `make coverage`: which lines of src/ the unit and integration tiers reach together
# (cargo-llvm-cov), the binary the integration tests run instrumented too. Writes a line
# per file and the total to target/coverage/summary.txt and prints it. A failing test
# still gets its report, then fails the run.
#
# - Continuous mode (`%c`, which needs the counter relocation on Linux): a process's
#   counters live in its profile file as it runs, so a daemon that a test ends with
#   SIGKILL (most of them) is counted too; without it only processes that exit write one.
# - A process per profile (`%p`); the profiles' directory is open to the non-root users
#   some tests run the binary as (`chmod 1777`).
# - A process killed before the profile runtime wrote its file's header leaves a file
#   llvm-profdata cannot read, which would fail the whole merge: such files are named and
#   left out.
set -eu
cd "$(dirname "$0")/.."

out=target/coverage
profiles=target/llvm-cov-target
cargo llvm-cov clean --workspace
mkdir -p "$profiles" "$out"
chmod 1777 "$profiles"

status=0
RUSTFLAGS="${RUSTFLAGS:-} -Cllvm-args=-runtime-counter-relocation" \
    LLVM_PROFILE_FILE_NAME='tgknock-%p%c.profraw' \
    cargo llvm-cov --no-report --locked --no-fail-fast --lib --test integration || status=$?

host=$(rustc -vV | sed -n 's/^host: //p')
profdata="$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata"
for f in "$profiles"/*.profraw; do
    [ -e "$f" ] || continue
    "$profdata" show "$f" >/dev/null 2>&1 && continue
    echo "coverage: $f cannot be read (its process was killed as it started): left out" >&2
    rm -f "$f"
done

cargo llvm-cov report --summary-only >"$out/summary.txt"
cat "$out/summary.txt"
echo "coverage: $out/summary.txt"
[ "$status" = 0 ] || echo "coverage: the tests failed (exit $status); the figures above are of the run as it went" >&2
exit "$status"
