#!/bin/sh
# Builds every release target and packs dist/tgknock-<version>-<target>.tar.gz (binary,
# README, CHANGELOG, example config, install.sh and the init files) plus dist/SHA256SUMS.
#   cross/dist.sh [TARGET…]   default: the three musl targets
set -eu
cd "$(dirname "$0")/.."
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
targets=${*:-x86_64-unknown-linux-musl aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf}
mkdir -p dist
for t in $targets; do
    start=$(date +%s)
    bin=$(sh cross/build.sh "$t")
    took=$(( $(date +%s) - start ))
    name="tgknock-$version-$t"
    stage="target/dist/$name"
    rm -rf "$stage"
    mkdir -p "$stage"
    cp "$bin" "$stage/tgknock"
    cp README.md CHANGELOG.md "$stage/"
    cp packaging/tgknock.conf.example packaging/install.sh "$stage/"
    cp -r packaging/systemd packaging/tmpfiles.d packaging/openrc packaging/sysvinit packaging/cron "$stage/"
    tar -C target/dist --owner=0 --group=0 -czf "dist/$name.tar.gz" "$name"
    size=$(wc -c < "$bin")
    echo "dist/$name.tar.gz: binary $size bytes, built in ${took} s"
done
(cd dist && sha256sum tgknock-*.tar.gz tgknock_*.deb 2>/dev/null > SHA256SUMS || true)
echo "dist/SHA256SUMS"
