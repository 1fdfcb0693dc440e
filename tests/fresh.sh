#!/bin/sh
# The fresh-machine tier: what a new user's Debian does with the README's commands.
#  1. A minimal Debian (debootstrap --variant=minbase, the host's release), made once and
#     kept as a tarball under target/fresh/; every run starts from a pristine copy of it.
#  2. In it, with systemd-nspawn (the network shared, so apt works; the host's rustup
#     toolchain bound read-only and CARGO_HOME bound, so only Debian's side is fresh, and
#     cargo offline: the crates, the pinned cargo-deb and cargo-fuzz come from the host's
#     CARGO_HOME, which the host's `make dist` has just used): a clone of the commit,
#     make (the README's prerequisite), `make build` (the static binary on the first run),
#     `tests/setup.sh test` (every Debian package by name: a missing one fails here, not
#     on a user's machine), then `cross/dist.sh` (every target, every package).
#  3. In it again, in a network namespace of its own: `dpkg -i` the amd64 package, check
#     the service user, modes and files; configure it and let `tgknock close` install its
#     rules; `dpkg -r` must take them out and keep the config; `dpkg -P`.
#  4. Reproducibility: the release built in the container (another directory, another root
#     file system) must be byte for byte the host's dist/ (`make fresh` builds it first):
#     dist/SHA256SUMS compared. The host's tree must be the commit (in CI it is).
# Needs root, debootstrap and systemd-nspawn (tests/setup.sh test installs them). Outside
# CI, a run that cannot happen prints SKIPPED; in CI (CI=true) it fails.
set -eu
cd "$(dirname "$0")/.."
top=$(pwd)
ci() { [ "${CI:-}" = true ]; }
fail() { echo "tests/fresh.sh: FAILED: $*" >&2; exit 1; }
skip() {
    ci && fail "$* (CI=true: this tier may not be skipped)"
    echo "SKIPPED: fresh-machine tier: $*"
    exit 0
}
have() { command -v "$1" >/dev/null 2>&1; }
now() { date +%s; }
t0=$(now)

[ "$(id -u)" = 0 ] || skip "needs root (debootstrap, systemd-nspawn)"
have debootstrap || skip "debootstrap is missing (apt-get install debootstrap)"
have systemd-nspawn || skip "systemd-nspawn is missing (apt-get install systemd-container)"
if ! have git || ! git rev-parse HEAD >/dev/null 2>&1; then
    skip "not a git checkout: the container builds a clone of the commit"
fi
rustup_home=${RUSTUP_HOME:-$HOME/.rustup}
cargo_home=${CARGO_HOME:-$HOME/.cargo}
if ! [ -d "$rustup_home" ] || ! [ -d "$cargo_home" ]; then
    skip "no rustup toolchain in $rustup_home / $cargo_home to lend the container"
fi
# shellcheck source=/dev/null
suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
[ -n "$suite" ] || skip "cannot tell the Debian release from /etc/os-release"
rev=$(git rev-parse HEAD)

base="$top/target/fresh"
cache="$base/$suite-minbase.tar"
root="$base/root"
log="$base/run.log"
mkdir -p "$base"

# 1. The pristine root, made once.
if [ ! -f "$cache" ]; then
    echo "fresh: debootstrap --variant=minbase $suite (once; kept as $cache)"
    rm -rf "$base/pristine"
    debootstrap --variant=minbase "$suite" "$base/pristine" > "$base/debootstrap.log" 2>&1 \
        || { tail -n 20 "$base/debootstrap.log" >&2; fail "debootstrap failed (see $base/debootstrap.log)"; }
    tar -C "$base/pristine" --numeric-owner -cf "$cache.part" .
    mv "$cache.part" "$cache"
    rm -rf "$base/pristine"
fi
t1=$(now)
rm -rf "$root"
mkdir -p "$root"
tar -C "$root" --numeric-owner -xf "$cache"
packages() { dpkg-query --admindir="$root/var/lib/dpkg" -W | wc -l; }
before=$(packages)

# 2. The commit's clone; setup and the release, as a new user would.
mkdir -p "$root/build"
git clone -q --no-hardlinks "$top" "$root/build/tgknock"
git -C "$root/build/tgknock" checkout -q --detach "$rev"
nspawn() {
    systemd-nspawn --quiet --register=no --keep-unit -D "$root" \
        --bind-ro="$rustup_home:/root/.rustup" --bind="$cargo_home:/root/.cargo" \
        --setenv=HOME=/root --setenv=CI="${CI:-}" --setenv=CARGO_NET_OFFLINE=true \
        --setenv=PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --chdir=/build/tgknock "$@"
}
echo "fresh: $suite minbase ($before packages) + commit $(git rev-parse --short HEAD): make (the README's one prerequisite besides Rust), make build, tests/setup.sh test, then cross/dist.sh"
nspawn sh -ec '
    DEBIAN_FRONTEND=noninteractive apt-get update -qq || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends make >/dev/null
    make build
    sh tests/setup.sh test' > "$log" 2>&1 \
    || { tail -n 30 "$log" >&2; fail "make build or tests/setup.sh test failed in a fresh $suite (see $log)"; }
grep -A2 '^built ' "$log" | sed 's/^/  /'
t2=$(now)
after=$(packages)
grep '^setup: ' "$log" | sed 's/^/  /'
echo "fresh: make build and setup installed $((after - before)) packages and built the x86_64 binary in $((t2 - t1)) s"
nspawn sh -c 'sh cross/dist.sh' >> "$log" 2>&1 \
    || { tail -n 30 "$log" >&2; fail "cross/dist.sh failed in a fresh $suite (see $log)"; }
t3=$(now)
grep '^dist/.*: ' "$log" | sed 's/^/  /'
echo "fresh: every target and package built in $((t3 - t2)) s"

# 3. The amd64 package into the fresh system, without network: install, remove, purge.
deb=$(cd "$root/build/tgknock" && ls dist/tgknock_*_amd64.deb)
# shellcheck disable=SC2016 # expanded in the container
nspawn --private-network sh -ec '
    deb=$1
    fail() { echo "package: $*" >&2; exit 1; }
    dpkg -i "$deb"
    getent passwd tgknock >/dev/null || fail "no tgknock user"
    [ "$(stat -c "%a %U:%G" /etc/tgknock)" = "750 root:tgknock" ] || fail "/etc/tgknock: $(stat -c "%a %U:%G" /etc/tgknock)"
    [ "$(stat -c "%a %U:%G" /etc/tgknock/tgknock.conf)" = "640 root:tgknock" ] || fail "tgknock.conf: $(stat -c "%a %U:%G" /etc/tgknock/tgknock.conf)"
    [ "$(stat -c "%a %U:%G %s" /etc/tgknock/token)" = "600 tgknock:tgknock 0" ] || fail "token: $(stat -c "%a %U:%G %s" /etc/tgknock/token)"
    [ "$(stat -c "%a %U:%G" /var/lib/tgknock)" = "750 tgknock:tgknock" ] || fail "/var/lib/tgknock: $(stat -c "%a %U:%G" /var/lib/tgknock)"
    [ -f /lib/systemd/system/tgknock.service ] || fail "no unit"
    [ -L /etc/systemd/system/multi-user.target.wants/tgknock.service ] || fail "the unit is not enabled"
    tgknock --version
    # Configured, with its rules in place (this namespace'"'"'s own firewall), as a board is.
    echo "TGKNOCK_ALLOWED_USERS=42" >> /etc/tgknock/tgknock.conf
    echo "7000000001:AAF-FreshTierSecretFreshTierSecr_x9" > /etc/tgknock/token
    tgknock close
    iptables -w -S TGKNOCK | grep -q "tgknock-gate:ssh" || fail "tgknock close installed no rules"
    dpkg -r tgknock
    [ ! -e /usr/bin/tgknock ] || fail "dpkg -r left the binary"
    if iptables -w -S TGKNOCK >/dev/null 2>&1 || iptables -w -S INPUT | grep -q TGKNOCK; then
        fail "dpkg -r left the rules: $(iptables -w -S)"
    fi
    grep -q "TGKNOCK_ALLOWED_USERS=42" /etc/tgknock/tgknock.conf || fail "dpkg -r removed the edited config"
    dpkg -P tgknock
    if [ -e /etc/tgknock ] || [ -e /var/lib/tgknock ]; then fail "dpkg -P left /etc/tgknock or /var/lib/tgknock"; fi
    echo "package: installed, removed, purged"
' sh "$deb" >> "$log" 2>&1 || { tail -n 30 "$log" >&2; fail "installing $deb in a fresh $suite failed (see $log)"; }
t4=$(now)
echo "fresh: $deb: dpkg -i (user, modes 750/640/600/750, unit enabled), -r (rules taken out, config kept), -P in $((t4 - t3)) s"

# 4. Reproducible: the container's release is the host's, byte for byte.
if [ -n "$(git status --porcelain)" ]; then
    ci && fail "the working tree differs from HEAD: cannot compare the builds"
    echo "SKIPPED: reproducibility: the working tree differs from HEAD (commit, then make fresh)"
elif ! [ -f dist/SHA256SUMS ]; then
    fail "no dist/SHA256SUMS on the host to compare with (make fresh builds it first)"
elif cmp -s dist/SHA256SUMS "$root/build/tgknock/dist/SHA256SUMS"; then
    echo "fresh: reproducible: the fresh container's release is byte for byte the host's:"
    sed 's/^/  /' dist/SHA256SUMS
else
    echo "host ($top):" >&2
    cat dist/SHA256SUMS >&2
    echo "fresh container (/build/tgknock):" >&2
    cat "$root/build/tgknock/dist/SHA256SUMS" >&2
    fail "the release is not reproducible: the fresh container built other bytes"
fi
echo "fresh-machine tier: passed in $(($(now) - t0)) s (root $((t1 - t0)) s, setup $((t2 - t1)) s, build $((t3 - t2)) s, package $((t4 - t3)) s)"
