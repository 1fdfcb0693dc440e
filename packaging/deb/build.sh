#!/bin/sh
# Builds a .deb of tgknock with dpkg-deb (no cargo-deb needed).
#   packaging/deb/build.sh DEB_ARCH BINARY OUTDIR     e.g. arm64 target/aarch64-…/tgknock dist
# Contents: /usr/bin/tgknock, the systemd unit, tmpfiles.d entry for /run/xtables.lock,
# /etc/tgknock/tgknock.conf (a conffile), the cron line (commented: systemd restarts the
# service itself), docs. The maintainer scripts create the tgknock system user and
# /var/lib/tgknock; the service is enabled but only started once `tgknock check` passes.
set -eu
arch=${1:?usage: build.sh DEB_ARCH BINARY OUTDIR}
binary=${2:?usage: build.sh DEB_ARCH BINARY OUTDIR}
outdir=${3:?usage: build.sh DEB_ARCH BINARY OUTDIR}
top=$(cd "$(dirname "$0")/../.." && pwd)
pkg="$top/packaging"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$top/Cargo.toml" | head -n 1)
command -v dpkg-deb >/dev/null || { echo "build.sh: dpkg-deb is missing: apt-get install dpkg" >&2; exit 1; }

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root="$stage/root"
mkdir -p "$root/DEBIAN" "$root/usr/bin" "$root/lib/systemd/system" "$root/usr/lib/tmpfiles.d" \
    "$root/etc/tgknock" "$root/usr/share/doc/tgknock/examples" "$root/var/lib/tgknock"
install -m 0755 "$binary" "$root/usr/bin/tgknock"
install -m 0644 "$pkg/systemd/tgknock.service" "$root/lib/systemd/system/tgknock.service"
install -m 0644 "$pkg/tmpfiles.d/tgknock.conf" "$root/usr/lib/tmpfiles.d/tgknock.conf"
install -m 0640 "$pkg/tgknock.conf.example" "$root/etc/tgknock/tgknock.conf"
install -m 0644 "$pkg/cron/tgknock" "$root/usr/share/doc/tgknock/examples/cron.d-tgknock"
install -m 0644 "$top/README.md" "$top/CHANGELOG.md" "$root/usr/share/doc/tgknock/"
cat > "$root/usr/share/doc/tgknock/copyright" <<EOT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: tgknock
Files: *
License: MIT or Apache-2.0
EOT
size=$(du -sk "$root" | cut -f1)
cat > "$root/DEBIAN/control" <<EOT
Package: tgknock
Version: $version
Architecture: $arch
Maintainer: tgknock developers <tgknock@users.noreply.github.com>
Depends: iptables
Recommends: systemd | cron
Installed-Size: $size
Section: net
Priority: optional
Homepage: https://github.com/tgknock/tgknock
Description: open and close firewall ports (SSH first) from a Telegram chat
 tgknock keeps SSH and other port sets closed with its own iptables chain, and
 opens them for a while, to everyone or one address, when an allowed Telegram
 user asks its bot. One static binary; a systemd unit running it as an
 unprivileged user with CAP_NET_ADMIN and CAP_NET_RAW.
EOT
echo "/etc/tgknock/tgknock.conf" > "$root/DEBIAN/conffiles"
cat > "$root/DEBIAN/postinst" <<'EOT'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
    if ! getent passwd tgknock >/dev/null; then
        adduser --system --group --no-create-home --home /var/lib/tgknock --shell /usr/sbin/nologin tgknock >/dev/null 2>&1 \
            || useradd --system --user-group --no-create-home --home-dir /var/lib/tgknock --shell /usr/sbin/nologin tgknock
    fi
    chown root:tgknock /etc/tgknock /etc/tgknock/tgknock.conf
    chmod 0750 /etc/tgknock
    chmod 0640 /etc/tgknock/tgknock.conf
    if [ ! -e /etc/tgknock/token ]; then
        (umask 077; : > /etc/tgknock/token)
    fi
    chown tgknock:tgknock /etc/tgknock/token
    chmod 0600 /etc/tgknock/token
    chown tgknock:tgknock /var/lib/tgknock
    chmod 0750 /var/lib/tgknock
    if [ -d /run/systemd/system ]; then
        systemd-tmpfiles --create /usr/lib/tmpfiles.d/tgknock.conf || true
        systemctl daemon-reload || true
        systemctl enable tgknock.service >/dev/null 2>&1 || true
        if /usr/bin/tgknock check --config /etc/tgknock/tgknock.conf >/dev/null 2>&1; then
            systemctl restart tgknock.service || true
        else
            echo "tgknock: put the bot token in /etc/tgknock/token and your user id in /etc/tgknock/tgknock.conf,"
            echo "tgknock: check with 'tgknock check', then: systemctl start tgknock"
        fi
    fi
fi
exit 0
EOT
cat > "$root/DEBIAN/prerm" <<'EOT'
#!/bin/sh
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
    systemctl stop tgknock.service || true
    systemctl disable tgknock.service >/dev/null 2>&1 || true
    /usr/bin/tgknock teardown --config /etc/tgknock/tgknock.conf || true
fi
exit 0
EOT
cat > "$root/DEBIAN/postrm" <<'EOT'
#!/bin/sh
set -e
if [ "$1" = purge ]; then
    rm -rf /var/lib/tgknock /etc/tgknock/token
    if getent passwd tgknock >/dev/null; then
        deluser --system tgknock >/dev/null 2>&1 || userdel tgknock || true
    fi
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
fi
exit 0
EOT
chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm" "$root/DEBIAN/postrm"
mkdir -p "$outdir"
out="$outdir/tgknock_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$out" >/dev/null
echo "$out"
