#!/bin/sh
# The release: every target's static binary (cross/build.sh) as
# dist/tgknock-<version>-<target>.tar.gz (binary, README, CHANGELOG, man pages, example
# config, install.sh, the init files and the PAM line of login notices), the .deb packages for amd64, arm64 and armhf
# (packaging/deb/build.sh; armhf holds the ARMv6 build, which runs on every board Raspberry
# Pi OS armhf runs on), and dist/SHA256SUMS over all of them.
#   cross/dist.sh
# Any target or package that fails fails the whole: a release never lacks one quietly.
# Same source, same bytes: times are SOURCE_DATE_EPOCH (default: the last commit's), owners
# and modes are fixed, entries sorted, gzip without names or times.
set -eu
cd "$(dirname "$0")/.."
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
targets="x86_64-unknown-linux-musl aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf arm-unknown-linux-musleabihf"
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
    SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || stat -c %Y Cargo.toml)
fi
export SOURCE_DATE_EPOCH
mkdir -p dist
rm -f dist/tgknock-*.tar.gz dist/tgknock_*.deb dist/SHA256SUMS

for t in $targets; do
    start=$(date +%s)
    bin=$(sh cross/build.sh "$t")
    took=$(($(date +%s) - start))
    name="tgknock-$version-$t"
    stage="target/dist/$name"
    rm -rf "$stage"
    mkdir -p "$stage/man"
    cp "$bin" "$stage/tgknock"
    cp README.md CHANGELOG.md "$stage/"
    cp packaging/man/tgknock.1 packaging/man/tgknock.conf.5 "$stage/man/"
    cp packaging/tgknock.conf.example packaging/install.sh "$stage/"
    cp -r packaging/systemd packaging/tmpfiles.d packaging/openrc packaging/sysvinit packaging/cron packaging/pam "$stage/"
    find "$stage" -type d -exec chmod 0755 {} +
    find "$stage" -type f -perm -u+x -exec chmod 0755 {} +
    find "$stage" -type f ! -perm -u+x -exec chmod 0644 {} +
    chmod 0755 "$stage/tgknock" "$stage/install.sh"
    tar -C target/dist --sort=name --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner \
        -cf - "$name" | gzip -9n > "dist/$name.tar.gz"
    echo "dist/$name.tar.gz: binary $(wc -c < "$bin") bytes, built in ${took} s"
done

# The packages: armhf from the ARMv6 build.
for t in x86_64-unknown-linux-musl aarch64-unknown-linux-musl arm-unknown-linux-musleabihf; do
    deb=$(sh packaging/deb/build.sh "$t" dist)
    echo "$deb: $(wc -c < "$deb") bytes ($t)"
done

(cd dist && sha256sum tgknock-*.tar.gz tgknock_*.deb > SHA256SUMS)
echo "dist/SHA256SUMS:"
sed 's/^/  /' dist/SHA256SUMS
