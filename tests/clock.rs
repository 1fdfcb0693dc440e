//! Steps of the board's wall clock (NTP at boot on a board without a real-time clock, or a
//! clock set back) and its skew to Telegram's, against the fake Bot API and the recording
//! fake iptables. The host's clock is never touched: a debug build of the daemon adds the
//! offset in the file `_TGKNOCK_TEST_CLOCK_FILE` names to its wall clock (a test hook that
//! release builds do not have, so tests/cross.sh skips `clock::step_`), and with real
//! firewalls in network namespaces (as root; `SKIPPED` otherwise).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::netns::{Fw, Rig, all};
use crate::support::netns::{Reach, SSH, V4, V6, WEB, run_ok};
use crate::support::{Env, OWNER, wait_for};

/// An environment whose daemon's wall clock is the host's moved by the offset in a file.
fn shifted() -> (Env, PathBuf) {
    let mut env = Env::new();
    let file = env.dir.join("clock-offset");
    std::fs::write(&file, "0\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    env.set("_TGKNOCK_TEST_CLOCK_FILE", &file.display().to_string());
    (env, file)
}

/// Steps the daemon's wall clock to `secs` from the host's (written by rename).
fn set_offset(file: &Path, secs: i64) {
    let tmp = file.with_extension("new");
    std::fs::write(&tmp, format!("{secs}\n")).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::rename(&tmp, file).unwrap();
}

/// What `iptables -F; iptables -X` leaves of the fake kernel's IPv4 filter table.
fn flush_v4(env: &Env) {
    let v4 = env.dir.join("fw/v4");
    std::fs::write(v4.join("INPUT"), "").unwrap();
    let _ = std::fs::remove_file(v4.join("TGKNOCK"));
}

fn ssh_until(env: &Env) -> Option<u64> {
    env.openings()
        .get("ssh")?
        .as_array()?
        .first()?
        .get("until")?
        .as_u64()
}

#[test]
fn step_forward_past_a_deadline_closes_at_once_and_drift_is_still_repaired() {
    let (env, file) = shifted();
    let d = env.start();
    env.api.say(OWNER, "/open ssh 1h");
    let r = env.api.wait_reply(OWNER, "ssh (22/tcp) open", 20);
    assert!(r.contains("to everyone"), "{r}");
    assert!(!env.drops(4, "ssh"));
    // NTP steps the clock two hours forward: the opening's deadline is an hour behind.
    set_offset(&file, 2 * 3600);
    wait_for(20, "the opening passed by the step to close", || {
        (env.openings().is_empty() && env.drops(4, "ssh") && env.drops(6, "ssh")).then_some(())
    });
    d.wait_log("closed ssh: its opening ran out", 20);
    // And drift repair goes on: a flush is put back and the owner told.
    flush_v4(&env);
    let told = env
        .api
        .wait_reply(OWNER, "another program changed the firewall rules", 20);
    assert!(told.contains("IPv4: the chain TGKNOCK is gone"), "{told}");
    wait_for(20, "the rules back", || {
        (env.drops(4, "ssh") && env.rules(4).contains("-A INPUT -j TGKNOCK")).then_some(())
    });
}

#[test]
fn step_forward_with_a_ban_due_keeps_repairing_drift() {
    // A day's ban and an opening, then the clock steps past both (the boot of an RTC-less
    // board): both end at once, and a flush afterwards is repaired.
    let (env, file) = shifted();
    let d = env.start();
    let out = env.run(&["ban", "198.51.100.7", "--for", "1d"]);
    assert!(out.status.success(), "{out:?}");
    env.api.say(OWNER, "/open ssh 30m");
    env.api.wait_reply(OWNER, "ssh (22/tcp) open", 20);
    set_offset(&file, 2 * 86_400);
    wait_for(20, "the ban and the opening to end", || {
        let st = env.state();
        let bans = st["bans"].as_array().map_or(0, Vec::len);
        (bans == 0 && env.openings().is_empty() && !env.rules(4).contains("198.51.100.7"))
            .then_some(())
    });
    d.wait_log("lifted the ban of 198.51.100.7", 20);
    flush_v4(&env);
    env.api
        .wait_reply(OWNER, "another program changed the firewall rules", 20);
    wait_for(20, "the rules back", || env.drops(4, "ssh").then_some(()));
}

#[test]
fn step_back_moves_every_deadline_back_by_the_step() {
    let (env, file) = shifted();
    let d = env.start();
    env.api.say(OWNER, "/open ssh 10m");
    env.api.wait_reply(OWNER, "ssh (22/tcp) open", 20);
    let until = ssh_until(&env).expect("a deadline");
    assert!(env.rules(4).contains(&datestop(until)), "{}", env.rules(4));
    // The clock is set an hour back: the opening would last 1 h 10 min. Its deadline
    // moves back by the step, in the state and in the kernel's rule.
    set_offset(&file, -3600);
    let moved = wait_for(20, "the deadline to move back", || {
        ssh_until(&env).filter(|u| *u != until)
    });
    assert!(
        (until - 3600..=until - 3599).contains(&moved),
        "{until} became {moved}"
    );
    wait_for(20, "the kernel's deadline to move", || {
        env.rules(4).contains(&datestop(moved)).then_some(())
    });
    d.wait_log("the system clock was set back", 20);
}

/// The `-m time --datestop` of a Unix time, as tgknock writes it.
fn datestop(t: u64) -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "-d", &format!("@{}", t - 1), "+%Y-%m-%dT%H:%M:%S"])
        .output()
        .unwrap();
    format!("--datestop {}", String::from_utf8_lossy(&out.stdout).trim())
}

#[test]
fn step_hook_refuses_a_file_others_may_write() {
    // The test hook moves the clock only by a file of the daemon's own user that no one
    // else may write.
    let (env, file) = shifted();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o622)).unwrap();
    std::fs::write(&file, "7200\n").unwrap();
    let d = env.start();
    env.api.say(OWNER, "/open ssh 1h");
    env.api.wait_reply(OWNER, "ssh (22/tcp) open", 20);
    d.wait_log("_TGKNOCK_TEST_CLOCK_FILE: ignoring", 20);
    let until = ssh_until(&env).expect("a deadline");
    let now = crate::support::now() as u64;
    assert!(until <= now + 3600 + 5, "{until} is not an hour from {now}");
}

#[test]
fn a_board_clock_ahead_of_telegrams_is_told_to_the_owners_once() {
    let env = Env::new();
    // Telegram's clock an hour behind: the board's is an hour ahead. Set back later (NTP)
    // while tgknock is not running, an opening would last an hour longer.
    env.api.set_clock_offset(-3600);
    let d = env.start();
    let told = env.api.wait_reply(OWNER, "ahead of Telegram's", 20);
    assert!(told.contains("1 h"), "{told}");
    env.api.say(OWNER, "/open ssh 10m");
    env.api.wait_reply(OWNER, "ssh (22/tcp) open", 20);
    env.api.say(OWNER, "/status");
    env.api.wait_reply(OWNER, "ssh (22/tcp) open", 20);
    wait_for(20, "two replies after the warning", || {
        (env.api.sent_to(OWNER).len() >= 3).then_some(())
    });
    let warnings = env
        .api
        .sent_to(OWNER)
        .iter()
        .filter(|t| t.contains("ahead of Telegram's"))
        .count();
    assert_eq!(warnings, 1, "{:?}", env.api.sent_to(OWNER));
    d.check_secret();
}

/// The second octet of the addresses of this file's network namespaces.
const SUBNET: u8 = 209;

/// With real firewalls (the three backends, in network namespaces, judged by TCP): the
/// kernel's own deadline of an opening is by the real clock (iptables' `--datestop`) or
/// relative (nft's timeouts), so after the daemon's clock steps past it, only the daemon
/// closes it; then a flush is put back, and the gate stays closed.
fn step_scenario(fw: Fw, n: u8) {
    let Some(mut rig) = Rig::new(SUBNET, n, fw, 1) else {
        return;
    };
    let file = rig.env.dir.join("clock-offset");
    set_offset(&file, 0);
    rig.env
        .set("_TGKNOCK_TEST_CLOCK_FILE", &file.display().to_string());
    rig.start();
    let reply = rig.say("/open web 1h");
    assert!(reply.contains("web (80/tcp) open to everyone"), "{reply}");
    rig.net
        .expect("opened", &[(0, WEB, V4, true), (0, WEB, V6, true)]);
    set_offset(&file, 2 * 3600);
    wait_for(60, "the opening passed by the step to close", || {
        (rig.net.reach(0, WEB, V4) == Reach::Dropped).then_some(())
    });
    rig.net.expect(
        "after the step",
        &[
            (0, WEB, V4, false),
            (0, WEB, V6, false),
            (0, SSH, V4, false),
        ],
    );
    match fw {
        Fw::Nft => rig.nft_script("flush ruleset\n"),
        Fw::Ipt(b) => {
            for fam in [V4, V6] {
                for op in ["-F", "-X"] {
                    run_ok(Command::new("ip").args([
                        "netns",
                        "exec",
                        &rig.net.board,
                        &b.tool(fam),
                        "-w",
                        op,
                    ]))
                    .unwrap();
                }
            }
        }
    }
    rig.env
        .api
        .wait_reply(OWNER, "another program changed the firewall rules", 30);
    rig.daemon().wait_log("; put them back", 30);
    rig.assert_installed_once("after the flush");
    rig.net.expect(
        "after the repair",
        &[
            (0, WEB, V4, false),
            (0, WEB, V6, false),
            (0, SSH, V4, false),
            (0, SSH, V6, false),
        ],
    );
}

#[test]
fn step_forward_on_real_firewalls_closes_at_once_and_repairs() {
    all(1, step_scenario);
}
