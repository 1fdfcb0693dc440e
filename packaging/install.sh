#!/bin/sh
# Installs tgknock on this board: binary, man pages, service user, config, state
# directory, and one supervisor: the systemd unit; or, without systemd, the OpenRC script
# (supervise-daemon restarts it); or the sysvinit script plus the cron watchdog. Never two.
# Idempotent: run it again to upgrade the binary; your config and token are kept. Then
# `sudo tgknock setup` asks for the token and your Telegram user id, and checks it all.
#
#   sudo ./install.sh                     install (the binary beside this script, or --binary)
#   sudo ./install.sh --uninstall         stop the daemon, `tgknock teardown`, then remove
#                                         what was installed (config and state are kept;
#                                         add --purge to remove them)
# Options: --binary PATH   the tgknock binary to install
#          --root DIR      install under DIR instead of / (for packaging and tests: no
#                          users are created and no service is started)
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=""
binary=""
mode=install
purge=0
while [ $# -gt 0 ]; do
    case "$1" in
    --binary) binary=${2:?--binary needs a path}; shift 2 ;;
    --root) root=${2:?--root needs a directory}; shift 2 ;;
    --uninstall) mode=uninstall; shift ;;
    --purge) purge=1; shift ;;
    -h | --help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

say() { echo "install.sh: $*"; }
die() { echo "install.sh: $*" >&2; exit 1; }
live() { [ -z "$root" ]; }
have() { command -v "$1" >/dev/null 2>&1; }

if live && [ "$(id -u)" != 0 ]; then
    die "run me as root (sudo $0)"
fi

BIN="$root/usr/local/bin/tgknock"
ETC="$root/etc/tgknock"
CONF="$ETC/tgknock.conf"
TOKEN="$ETC/token"
STATE="$root/var/lib/tgknock"
UNIT="$root/etc/systemd/system/tgknock.service"
TMPFILES="$root/etc/tmpfiles.d/tgknock.conf"
CRON="$root/etc/cron.d/tgknock"
INITD="$root/etc/init.d/tgknock"
MAN1="$root/usr/local/share/man/man1/tgknock.1"
MAN5="$root/usr/local/share/man/man5/tgknock.conf.5"

# The one supervisor: systemd when it runs, else OpenRC when installed, else sysvinit and
# cron. Under --root: systemd unless TGKNOCK_INSTALL_SYSTEMD=0, then OpenRC if DIR has it.
if live; then
    if [ -d /run/systemd/system ]; then init=systemd
    elif [ -x /sbin/openrc-run ]; then init=openrc
    else init=sysvinit; fi
else
    if [ "${TGKNOCK_INSTALL_SYSTEMD:-1}" = 1 ]; then init=systemd
    elif [ -x "$root/sbin/openrc-run" ]; then init=openrc
    else init=sysvinit; fi
fi
systemd=0
[ "$init" = systemd ] && systemd=1

user_exists() { live && id tgknock >/dev/null 2>&1; }

if [ "$mode" = uninstall ]; then
    # Stop the daemon first (and whatever would restart it), then remove its rules: a
    # daemon still running would put them back.
    if live; then
        if [ -f "$UNIT" ]; then
            systemctl disable --now tgknock.service 2>/dev/null || true
        fi
        rm -f "$CRON"
        if [ -x "$INITD" ]; then
            "$INITD" stop || true
            if have rc-update; then
                rc-update del tgknock boot >/dev/null 2>&1 || true
            elif have update-rc.d; then
                update-rc.d -f tgknock remove >/dev/null 2>&1 || true
            fi
        fi
        if [ -x "$BIN" ]; then
            "$BIN" teardown --config "$CONF" || say "teardown reported a problem (see above)"
        fi
    fi
    rm -f "$UNIT" "$TMPFILES" "$CRON" "$INITD" "$BIN" "$MAN1" "$MAN5"
    live && [ "$systemd" = 1 ] && systemctl daemon-reload
    if [ "$purge" = 1 ]; then
        rm -rf "$ETC" "$STATE"
        user_exists && { userdel tgknock 2>/dev/null || deluser tgknock 2>/dev/null || true; }
        say "removed tgknock, its config and its state"
    else
        say "removed tgknock; kept $ETC and $STATE (--purge removes them)"
    fi
    exit 0
fi

# The binary: --binary, or the one shipped beside this script (tarball layout), or the
# build tree's.
if [ -z "$binary" ]; then
    for c in "$here/tgknock" "$here/../tgknock" "$here/../target/release/tgknock"; do
        [ -f "$c" ] && { binary=$c; break; }
    done
fi
if [ -z "$binary" ] || [ ! -f "$binary" ]; then
    die "no tgknock binary found; pass --binary PATH"
fi
if live; then
    "$binary" --version >/dev/null 2>&1 || die "$binary does not run on this board (wrong architecture? armv7 for 32-bit OS, aarch64 for 64-bit)"
fi
# Files shipped beside this script (tarball) or in the source tree.
pkg="$here"
[ -f "$pkg/systemd/tgknock.service" ] || pkg="$here/packaging"
[ -f "$pkg/systemd/tgknock.service" ] || die "the packaging files (systemd/, cron/, …) are not beside install.sh"

mkdir -p "$root/usr/local/bin" "$ETC" "$STATE"
install -m 0755 "$binary" "$BIN.new" && mv -f "$BIN.new" "$BIN"
say "installed $BIN ($("$BIN" --version 2>/dev/null || echo "not runnable here"))"
# The man pages: man/ in the tarball, packaging/man/ in the source tree.
mkdir -p "$(dirname "$MAN1")" "$(dirname "$MAN5")"
install -m 0644 "$pkg/man/tgknock.1" "$MAN1"
install -m 0644 "$pkg/man/tgknock.conf.5" "$MAN5"
say "installed the man pages tgknock(1) and tgknock.conf(5) under $root/usr/local/share/man"

# The service user: every init system runs the daemon as it, with only CAP_NET_ADMIN and
# CAP_NET_RAW (the unit's AmbientCapabilities, OpenRC's capabilities, setpriv in the
# sysvinit script and the cron line).
owner=tgknock
if live && ! user_exists; then
    if have useradd; then
        useradd --system --user-group --no-create-home --home-dir /var/lib/tgknock --shell /usr/sbin/nologin tgknock
    else
        addgroup -S tgknock 2>/dev/null || true
        adduser -S -D -H -h /var/lib/tgknock -s /sbin/nologin -G tgknock tgknock
    fi
    say "created the system user tgknock"
fi
own() { if live; then chown "$@"; fi; }

chmod 0750 "$ETC"
own "root:$owner" "$ETC"
if [ ! -f "$CONF" ]; then
    install -m 0640 "$pkg/tgknock.conf.example" "$CONF"
    say "wrote $CONF (edit it: TGKNOCK_ALLOWED_USERS)"
fi
chmod 0640 "$CONF"
own "root:$owner" "$CONF"
if [ ! -f "$TOKEN" ]; then
    (umask 077; : > "$TOKEN")
    say "created the empty token file $TOKEN (put the BotFather token in it)"
fi
chmod 0600 "$TOKEN"
own "$owner:$owner" "$TOKEN"
# A state directory an earlier install's daemon ran in as root (before the service user)
# is handed over whole, files included; only when no one but root could write in it, so
# nothing in it can be a link another user planted.
if live && [ "$(stat -c %u "$STATE")" = 0 ]; then
    if [ $((0$(stat -c %a "$STATE") & 022)) = 0 ]; then
        chown -R -h -P "$owner:$owner" "$STATE"
    else
        say "$STATE belongs to root and others may write in it: its files are not handed to $owner"
    fi
fi
chmod 0750 "$STATE"
own "$owner:$owner" "$STATE"

if [ "$init" != systemd ] && live && ! have setpriv; then
    say "warning: setpriv (util-linux; Alpine: apk add setpriv) is missing: the init script runs the daemon"
    say "as the user tgknock through it, and will not start the daemon without it (never as root)"
fi
case "$init" in
systemd)
    # An earlier install without systemd: its daemon and watchdog go, so one supervisor is left.
    rm -f "$CRON"
    if live && [ -x "$INITD" ]; then "$INITD" stop || true; fi
    rm -f "$INITD"
    mkdir -p "$(dirname "$UNIT")" "$(dirname "$TMPFILES")"
    sed 's#^ExecStart=/usr/bin/tgknock#ExecStart=/usr/local/bin/tgknock#' \
        "$pkg/systemd/tgknock.service" > "$UNIT"
    chmod 0644 "$UNIT"
    install -m 0644 "$pkg/tmpfiles.d/tgknock.conf" "$TMPFILES"
    if live; then
        systemd-tmpfiles --create "$TMPFILES" || true
        systemctl daemon-reload
    fi
    say "installed the systemd unit $UNIT"
    ;;
openrc)
    # supervise-daemon restarts the daemon: no cron watchdog beside it.
    rm -f "$CRON" "$UNIT" "$TMPFILES"
    mkdir -p "$(dirname "$INITD")"
    sed 's#/usr/bin/tgknock#/usr/local/bin/tgknock#' "$pkg/openrc/tgknock" > "$INITD"
    chmod 0755 "$INITD"
    if live; then
        rc-update add tgknock boot >/dev/null || true
    fi
    say "installed $INITD (OpenRC, supervise-daemon), in the boot runlevel"
    ;;
sysvinit)
    rm -f "$UNIT" "$TMPFILES"
    mkdir -p "$(dirname "$CRON")" "$(dirname "$INITD")"
    sed 's#^BIN=/usr/bin/tgknock#BIN=/usr/local/bin/tgknock#' "$pkg/sysvinit/tgknock" > "$INITD"
    chmod 0755 "$INITD"
    sed 's#/usr/bin/tgknock#/usr/local/bin/tgknock#' "$pkg/cron/tgknock" > "$CRON"
    chmod 0644 "$CRON"
    if live && have update-rc.d; then
        update-rc.d tgknock defaults >/dev/null
        say "installed $INITD (started at boot before the network) and the cron watchdog $CRON"
    else
        say "installed $INITD and the cron watchdog $CRON; have your init run '$INITD start' at boot, before the network"
    fi
    ;;
esac

live || { say "installed under $root"; exit 0; }

echo
if "$BIN" check --config "$CONF"; then
    case "$init" in
    systemd)
        systemctl enable --now tgknock.service
        say "tgknock is running: systemctl status tgknock; message your bot /open"
        ;;
    openrc)
        rc-service tgknock start
        say "tgknock is running under supervise-daemon; message your bot /open"
        ;;
    sysvinit)
        "$INITD" start
        say "tgknock is running; the cron watchdog keeps it so; message your bot /open"
        ;;
    esac
elif [ ! -s "$TOKEN" ]; then
    # No token yet: the guided first run asks for it, finds the user id, writes both files
    # and checks it all, then names the command that starts the service installed above.
    echo
    say "not started yet: no bot token. The guided first run asks for it, finds your"
    say "Telegram user id, writes $CONF and $TOKEN, checks it all and names the command"
    say "that starts tgknock:"
    echo "    sudo tgknock setup"
else
    echo
    say "not started yet: fix what check reports above (in $CONF), run '$BIN check' again, then"
    case "$init" in
    systemd) echo "    systemctl enable --now tgknock" ;;
    openrc) echo "    rc-service tgknock start" ;;
    sysvinit) echo "    $INITD start      (the cron line starts it within a minute anyway)" ;;
    esac
fi
