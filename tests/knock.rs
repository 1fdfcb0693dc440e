//! Tier 3: the port-knock fallback (`TGKNOCK_KNOCK`), with real packets between network
//! namespaces, for each backend (iptables-legacy, iptables-nft, nft), all at once.
//!
//! The world is netns.rs's `Rig` on 10.205.N.0/24 and fd00:205:N::/64: a board with echo
//! servers on 22 (ssh, the knock gate), 80 (web) and 8080, and one or two clients. The
//! knocks are sent by the real `tgknock knock` run inside a client namespace, or by hand
//! (plain `TcpStream::connect_timeout`, as `nc -z` or a port scanner would). Whether a gate
//! is open is judged by a TCP connection and its echo; a dropped SYN is a timeout.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::netns::{Fw, Rig, all};
use crate::support::netns::{Fam, Reach, SSH, V4, V6, WEB, in_netns, in_ns, roundtrip, run_ok};

/// The second octet of this file's addresses.
const SUBNET: u8 = 205;
const SEQUENCE: &str = "7101,7102,7103";
const ARMED: &str = "knock fallback armed (IPv4, IPv6)";

/// A rig whose firewall has the knock fallback, on the default knock gate (ssh).
fn rig(n: u8, fw: Fw, clients: usize, open_for: Option<&str>) -> Option<Rig> {
    let mut rig = Rig::new(SUBNET, n, fw, clients)?;
    rig.env.set("TGKNOCK_KNOCK", SEQUENCE);
    if let Some(d) = open_for {
        rig.env.set("TGKNOCK_KNOCK_OPEN_FOR", d);
    }
    Some(rig)
}

/// The board's address, as the knock client takes it.
fn board(rig: &Rig, fam: Fam) -> String {
    rig.net.board_addr(fam, 1).ip().to_string()
}

/// Runs the real client in client `k`'s namespace: `tgknock knock BOARD EXTRA…`, with no
/// configuration at all (the laptop's case).
fn knock(rig: &Rig, k: usize, fam: Fam, extra: &[&str]) {
    let mut cmd = crate::support::env::command();
    cmd.arg("knock").arg(board(rig, fam)).args(extra);
    finish_knock(rig, k, &cmd);
}

fn finish_knock(rig: &Rig, k: usize, cmd: &std::process::Command) {
    let out = in_netns(&rig.net.clients[k], cmd)
        .output()
        .expect("run tgknock knock");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("sequence sent to"),
        "{}: tgknock knock: {}\n{stdout}\n{}",
        rig.fw.name(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A sequence by hand from client `k`: one connection attempt per port, as `nc -z -w1` or
/// a port scanner does it.
fn knock_by_hand(rig: &Rig, k: usize, fam: Fam, ports: &[u16]) {
    let to: Vec<SocketAddr> = ports.iter().map(|&p| rig.net.board_addr(fam, p)).collect();
    in_ns(&rig.net.clients[k], move || {
        for a in to {
            let _ = TcpStream::connect_timeout(&a, Duration::from_millis(300));
            std::thread::sleep(Duration::from_millis(100));
        }
    });
}

/// `tgknock status` in the board.
fn status(rig: &Rig) -> String {
    let out = rig.console(&["status"]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// ---------------------------------------------------------------------------------------
// Scenarios

/// The right sequence opens the knock gate to the knocking address only, in the family it
/// knocked in; a second client stays out until it knocks (over IPv6 here); a rule change
/// by the daemon forgets no knock.
fn opens_for_knocker_scenario(fw: Fw, n: u8) {
    let Some(mut rig) = rig(n, fw, 2, None) else {
        return;
    };
    rig.start();
    let s = status(&rig);
    assert!(s.contains(ARMED), "{}: {s}", fw.name());
    rig.net.expect(
        "closed before any knock",
        &[
            (0, SSH, V4, false),
            (1, SSH, V4, false),
            (0, SSH, V6, false),
        ],
    );
    knock(&rig, 0, V4, &["--ports", SEQUENCE]);
    rig.net.expect(
        "a knock over IPv4 opens ssh to that address only",
        &[
            (0, SSH, V4, true),
            (1, SSH, V4, false),
            (0, SSH, V6, false),
            (1, SSH, V6, false),
            (0, WEB, V4, false),
        ],
    );
    // The second client knocks over IPv6, with the sequence from its configuration.
    let mut cmd = rig.env.command(&["knock", &board(&rig, V6)]);
    cmd.env_remove("RUST_LOG");
    finish_knock(&rig, 1, &cmd);
    rig.net.expect(
        "a knock over IPv6 opens ssh to that address only",
        &[
            (1, SSH, V6, true),
            (1, SSH, V4, false),
            (0, SSH, V6, false),
            (0, SSH, V4, true),
        ],
    );
    // The daemon rewrites the rules; the knocks in the kernel's lists stay.
    let reply = rig.say("/open web");
    assert!(reply.contains("web (80/tcp) open to everyone"), "{reply}");
    rig.net.expect(
        "after a rule change the knocked openings remain, and only they",
        &[
            (0, SSH, V4, true),
            (1, SSH, V6, true),
            (1, SSH, V4, false),
            (0, SSH, V6, false),
            (1, WEB, V4, true),
        ],
    );
    let reply = rig.say("/status");
    assert!(reply.contains("ssh (22/tcp) closed"), "{reply}");
    assert!(!reply.contains("MISMATCH"), "{reply}");
    assert!(reply.contains(ARMED), "{reply}");
}

#[test]
fn knock_opens_gate_for_the_knocker_only() {
    all(1, opens_for_knocker_scenario);
}

/// A wrong order, or the ports in order with another port between them (a scan), opens
/// nothing; the right sequence afterwards, sent by hand, does.
fn wrong_sequence_scenario(fw: Fw, n: u8) {
    let Some(mut rig) = rig(n, fw, 1, None) else {
        return;
    };
    rig.start();
    knock(&rig, 0, V4, &["--ports", "7102,7101,7103"]);
    rig.net
        .expect("a wrong order does not open", &[(0, SSH, V4, false)]);
    knock_by_hand(&rig, 0, V6, &[7101, 7102, 7104, 7103]);
    rig.net.expect(
        "the sequence with a port between its steps does not open",
        &[(0, SSH, V6, false)],
    );
    // By hand: the client refuses a sequence with a repeated port.
    knock_by_hand(&rig, 0, V4, &[7101, 7102, 7102, 7103]);
    rig.net.expect(
        "a repeated step is a port between steps too",
        &[(0, SSH, V4, false)],
    );
    knock_by_hand(&rig, 0, V6, &[7101, 7102, 7103]);
    knock_by_hand(&rig, 0, V4, &[7101, 7102, 7103]);
    rig.net.expect(
        "the right sequence by hand (nc-style) opens",
        &[(0, SSH, V4, true), (0, SSH, V6, true)],
    );
}

#[test]
fn knock_wrong_sequences_do_not_open() {
    all(2, wrong_sequence_scenario);
}

/// Steps further apart than the step window (5 s) open nothing. No daemon here: the rules
/// come from `tgknock close` at the console.
fn too_slow_scenario(fw: Fw, n: u8) {
    let Some(rig) = rig(n, fw, 1, None) else {
        return;
    };
    rig.console_ok(&["close"]);
    knock(&rig, 0, V4, &["--ports", SEQUENCE, "--delay", "6"]);
    rig.net.expect(
        "a knock with 6 s between steps does not open",
        &[(0, SSH, V4, false)],
    );
    knock(&rig, 0, V4, &["--ports", SEQUENCE]);
    rig.net
        .expect("a brisk knock afterwards opens", &[(0, SSH, V4, true)]);
}

#[test]
fn knock_too_slow_does_not_open() {
    all(3, too_slow_scenario);
}

/// The opening lasts TGKNOCK_KNOCK_OPEN_FOR (3 s): then new connections are dropped again,
/// while one made in time goes on; a new knock opens again.
fn expiry_scenario(fw: Fw, n: u8) {
    let Some(mut rig) = rig(n, fw, 1, Some("3s")) else {
        return;
    };
    rig.start();
    knock(&rig, 0, V4, &["--ports", SEQUENCE]);
    let knocked = Instant::now();
    let mut held = rig
        .net
        .connect(0, SSH, V4)
        .unwrap_or_else(|e| panic!("{}: connect right after the knock: {e}", fw.name()));
    roundtrip(&mut held, b"in time").unwrap();
    loop {
        match rig.net.reach(0, SSH, V4) {
            Reach::Dropped => break,
            // A hang guard, not a speed test: 3 s of opening, generously.
            Reach::Open if knocked.elapsed() < Duration::from_secs(15) => {
                std::thread::sleep(Duration::from_millis(250));
            }
            r => panic!(
                "{}: a 3 s knock opening, {:.1} s after the knock: {r:?}",
                fw.name(),
                knocked.elapsed().as_secs_f64()
            ),
        }
    }
    roundtrip(&mut held, b"after the opening ended")
        .unwrap_or_else(|e| panic!("{}: the session made in time was cut: {e}", fw.name()));
    knock(&rig, 0, V4, &["--ports", SEQUENCE]);
    rig.net
        .expect("a new knock opens again", &[(0, SSH, V4, true)]);
}

#[test]
fn knock_opening_expires() {
    all(4, expiry_scenario);
}

/// The fallback is the kernel's: with the daemon killed (-9) it still works.
fn daemon_killed_scenario(fw: Fw, n: u8) {
    let Some(mut rig) = rig(n, fw, 2, None) else {
        return;
    };
    rig.start();
    rig.daemon().kill9();
    let s = status(&rig);
    assert!(
        s.contains(ARMED) && s.contains("daemon: not running"),
        "{}: {s}",
        fw.name()
    );
    knock(&rig, 0, V6, &["--ports", SEQUENCE]);
    rig.net.expect(
        "with the daemon dead, a knock opens ssh to the knocker",
        &[(0, SSH, V6, true), (1, SSH, V6, false), (0, SSH, V4, false)],
    );
}

#[test]
fn knock_works_with_daemon_killed() {
    all(5, daemon_killed_scenario);
}

/// With no daemon ever started, `tgknock close` installs the rules, knocks work, and
/// `tgknock teardown` removes everything, knock rules and lists included.
fn no_daemon_teardown_scenario(fw: Fw, n: u8) {
    let Some(rig) = rig(n, fw, 2, None) else {
        return;
    };
    let out = rig.console_ok(&["close"]);
    assert!(out.contains("ssh (22/tcp) closed"), "{out}");
    let s = status(&rig);
    assert!(
        s.contains(ARMED) && s.contains("daemon: not running"),
        "{}: {s}",
        fw.name()
    );
    knock(&rig, 0, V4, &["--ports", SEQUENCE]);
    rig.net.expect(
        "without a daemon, a knock opens ssh to the knocker",
        &[(0, SSH, V4, true), (1, SSH, V4, false), (1, SSH, V6, false)],
    );
    let out = rig.console_ok(&["teardown"]);
    assert!(
        out.contains("removed") && !out.contains("nothing installed"),
        "{out}"
    );
    let rules = rig.ruleset();
    assert!(
        !rules.to_lowercase().contains("tgknock") && !rules.contains("recent"),
        "{}: rules remain after teardown:\n{rules}",
        fw.name()
    );
    // Whatever the backend, nft's view of the kernel holds nothing of tgknock either.
    let nft = rig.nft_ruleset();
    assert!(
        !nft.to_lowercase().contains("tgknock") && !nft.contains('@'),
        "{}: nft list ruleset after teardown:\n{nft}",
        fw.name()
    );
    if fw == Fw::Nft {
        assert_eq!(nft.trim(), "", "nft list ruleset after teardown");
    } else {
        // The kernel frees a `recent` list with the last rule that names it.
        let lists = run_ok(std::process::Command::new("ip").args([
            "netns",
            "exec",
            &rig.net.board,
            "sh",
            "-c",
            "ls /proc/net/xt_recent 2>/dev/null || true",
        ]))
        .unwrap();
        assert_eq!(lists.trim(), "", "{}: recent lists remain", fw.name());
    }
    rig.net.expect(
        "after teardown nothing is installed: ssh is reachable without knocking",
        &[(1, SSH, V4, true), (1, SSH, V6, true), (0, WEB, V6, true)],
    );
    let s = status(&rig);
    assert!(s.contains("knock fallback NOT armed"), "{}: {s}", fw.name());
}

#[test]
fn knock_without_daemon_and_teardown() {
    all(6, no_daemon_teardown_scenario);
}
