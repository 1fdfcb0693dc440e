//! systemd's notify protocol, spoken by hand over `$NOTIFY_SOCKET` (no libsystemd):
//! `READY=1` once the firewall is reconciled, `WATCHDOG=1` at every heartbeat.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Sends one notification; silently nothing when not run by systemd.
pub(crate) fn send(message: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let result = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|addr| sock.send_to_addr(message.as_bytes(), &addr))
    } else {
        sock.send_to(message.as_bytes(), &path)
    };
    if let Err(e) = result {
        log::debug!("sd_notify {message:?}: {e}");
    }
}

/// The watchdog interval systemd asks for (`WATCHDOG_USEC`), if it is meant for us.
pub(crate) fn watchdog_interval() -> Option<Duration> {
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}
