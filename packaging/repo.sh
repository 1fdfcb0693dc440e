#!/bin/sh
# A signed apt repository of the .deb packages, built with reprepro (`make repo`):
#   packaging/repo.sh [OUTDIR [DEB...]]     default: target/repo and dist/tgknock_*.deb
# OUTDIR is what gets published, as it is, on a static web server: dists/stable/InRelease
# (and Release, Release.gpg), dists/stable/main/binary-{amd64,arm64,armhf}/Packages, pool/,
# and tgknock-archive-keyring.asc, the public key a board names in `Signed-By:`. The
# Release files say Origin: tgknock and Label: tgknock (unattended-upgrades matches them).
# reprepro's own configuration and database live beside it in OUTDIR.state/ (never
# published): running it again adds the newer packages to the same repository, and
# reprepro keeps one version of each package per architecture (the newest added).
#
# The signing key:
#   TGKNOCK_REPO_KEY=<key id or fingerprint>   sign with this key of the gpg keyring in
#                                              GNUPGHOME (default ~/.gnupg): a release
#   (unset)                                    a THROWAWAY key, made once in
#                                              OUTDIR.state/gnupg and reused: for tests only
# Needs reprepro and gpg (tests/setup.sh test installs them); checks the signature it made
# with gpgv, and with sqv when it is there, against the published key.
set -eu
cd "$(dirname "$0")/.."
die() { echo "packaging/repo.sh: $*" >&2; exit 1; }
say() { echo "packaging/repo.sh: $*" >&2; }

out=${1:-target/repo}
[ "$#" -gt 0 ] && shift
if [ "$#" -eq 0 ]; then
    set -- dist/tgknock_*.deb
    [ -f "$1" ] || die "no package in dist/: build them first (make dist)"
fi
for deb in "$@"; do
    [ -f "$deb" ] || die "$deb: no such package"
done
for tool in reprepro gpg gpgv; do
    command -v "$tool" > /dev/null 2>&1 || die "$tool is missing (apt-get install reprepro gnupg gpgv; tests/setup.sh test installs them)"
done
out=${out%/}
state=$out.state
mkdir -p "$out" "$state/conf"
out=$(cd "$out" && pwd)
state=$(cd "$state" && pwd)

throwaway=false
if [ -n "${TGKNOCK_REPO_KEY:-}" ]; then
    key=$TGKNOCK_REPO_KEY
    gpg --batch --list-secret-keys "$key" > /dev/null 2>&1 \
        || die "TGKNOCK_REPO_KEY=$key: no such secret key in ${GNUPGHOME:-~/.gnupg} (set GNUPGHOME to the keyring that holds it)"
else
    GNUPGHOME=$state/gnupg
    export GNUPGHOME
    throwaway=true
    if ! [ -d "$GNUPGHOME" ]; then
        (umask 077 && mkdir -p "$GNUPGHOME")
        gpg --batch --quiet --passphrase '' --quick-generate-key \
            "tgknock THROWAWAY test key (not for release) <tgknock@users.noreply.github.com>" \
            ed25519 sign 1y 2> /dev/null || die "gpg could not make the throwaway key"
    fi
    key=$(gpg --batch --with-colons --list-secret-keys 2> /dev/null | sed -n 's/^fpr:*\([0-9A-F]*\):*$/\1/p' | head -n 1)
    [ -n "$key" ] || die "no throwaway key in $GNUPGHOME"
    cat >&2 << EOF
packaging/repo.sh: ********************************************************************
packaging/repo.sh: * WARNING: TGKNOCK_REPO_KEY is not set: signing with a THROWAWAY key *
packaging/repo.sh: * ($key)
packaging/repo.sh: * kept in $GNUPGHOME.
packaging/repo.sh: * Fine for tests; never publish this repository. For a release:     *
packaging/repo.sh: *   TGKNOCK_REPO_KEY=<fingerprint> [GNUPGHOME=<keyring>] make repo    *
packaging/repo.sh: ********************************************************************
EOF
fi

# The repository's description: the fields a board's apt and unattended-upgrades see.
cat > "$state/conf/distributions" << EOF
Origin: tgknock
Label: tgknock
Suite: stable
Codename: stable
Architectures: amd64 arm64 armhf
Components: main
Description: tgknock, Telegram-operated firewall gates (static builds for every Debian release)
SignWith: $key
EOF
cat > "$state/conf/options" << EOF
outdir $out
dbdir $state/db
EOF

for deb in "$@"; do
    reprepro --silent -b "$state" includedeb stable "$deb" \
        || die "reprepro could not add $deb (a package of the same version with other contents is already in $out? then bump the version, or remove $out and $state to start over)"
done
# Signs again with the key of this run, even when nothing was added.
reprepro --silent -b "$state" export stable || die "reprepro could not write and sign the indexes"

gpg --batch --armor --export "$key" > "$out/tgknock-archive-keyring.asc"
[ -s "$out/tgknock-archive-keyring.asc" ] || die "gpg exported no public key for $key"
check=$(mktemp -d)
# The gpg-agent this run may have started for the throwaway keyring does not outlive it.
trap 'rm -rf "$check"; if $throwaway; then gpgconf --kill gpg-agent 2> /dev/null || true; fi' EXIT
gpg --batch --dearmor < "$out/tgknock-archive-keyring.asc" > "$check/keyring.gpg"
gpgv --keyring "$check/keyring.gpg" "$out/dists/stable/InRelease" > /dev/null 2>&1 \
    || die "gpgv does not verify $out/dists/stable/InRelease with the published key"
if command -v sqv > /dev/null 2>&1; then
    sqv --keyring "$out/tgknock-archive-keyring.asc" "$out/dists/stable/Release.gpg" "$out/dists/stable/Release" > /dev/null \
        || die "sqv does not verify $out/dists/stable/Release.gpg with the published key"
fi
echo "$out: signed by $key, verified; it holds:"
reprepro -b "$state" list stable | sed 's/^/  /'
