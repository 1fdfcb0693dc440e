//! systemd's notify protocol, spoken by hand: `READY=1` once the firewall is reconciled,
//! `WATCHDOG=1` at every poll, and the poll kept under half of `WATCHDOG_USEC`.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use crate::support::{Env, wait_for};

#[test]
fn ready_and_watchdog_reach_notify_socket() {
    let mut env = Env::new();
    let path = env.path("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    env.set("NOTIFY_SOCKET", &path.display().to_string());
    // WatchdogSec=4: the poll must stay under 2 s, so the configured 50 s becomes 1 s.
    env.set("WATCHDOG_USEC", "4000000");
    env.set("TGKNOCK_POLL_TIMEOUT", "50s");
    let d = env.spawn();
    let mut got: Vec<String> = Vec::new();
    let mut buf = [0u8; 256];
    wait_for(30, "READY=1 and three WATCHDOG=1", || {
        if let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        let ready = got.iter().position(|m| m == "READY=1");
        let pings = got.iter().filter(|m| *m == "WATCHDOG=1").count();
        (ready.is_some() && pings >= 3).then_some(())
    });
    let ready = got.iter().position(|m| m == "READY=1").unwrap();
    assert!(
        got[ready + 1..].iter().any(|m| m == "WATCHDOG=1"),
        "pings go on after READY=1: {got:?}"
    );
    d.wait_log("not under half of systemd's WatchdogSec", 10);
    let polls = env.api.requests("getUpdates");
    assert!(!polls.is_empty());
    for p in &polls {
        assert_eq!(p.body["timeout"].as_u64(), Some(1), "{}", p.body);
    }
}

#[test]
fn no_notify_socket_no_messages_and_full_poll() {
    let mut env = Env::new();
    env.set("TGKNOCK_POLL_TIMEOUT", "2s");
    let d = env.spawn();
    d.wait_log("logged in as", 20);
    wait_for(20, "a getUpdates", || {
        (!env.api.requests("getUpdates").is_empty()).then_some(())
    });
    assert_eq!(
        env.api.requests("getUpdates")[0].body["timeout"].as_u64(),
        Some(2)
    );
    assert!(!d.output().contains("WatchdogSec"));
}
