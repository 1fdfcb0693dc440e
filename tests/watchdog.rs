//! `tgknock watchdog`, the cron job: silent when the daemon is healthy; otherwise it kills
//! what is left and starts `tgknock run` detached (a session of its own, output to
//! `TGKNOCK_LOG_FILE`), and says what it did. Fake Bot API, recording fake iptables.
//!
//! The daemons a watchdog starts are nobody's children here: every test holds a `Reaper`
//! that kill -9s, panic or not, each `tgknock run` whose environment names the test's
//! state directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::support::env::{assert_no_secret, stderr, stdout};
use crate::support::{Env, OWNER, now, wait_for};

/// Kills every daemon of one state directory when dropped.
struct Reaper {
    state_dir: PathBuf,
}

impl Drop for Reaper {
    fn drop(&mut self) {
        for pid in daemons(&self.state_dir) {
            signal(pid, "KILL");
        }
        let end = std::time::Instant::now() + Duration::from_secs(10);
        while !daemons(&self.state_dir).is_empty() && std::time::Instant::now() < end {
            std::thread::sleep(Duration::from_millis(50));
        }
        let left = daemons(&self.state_dir);
        if !left.is_empty() && !std::thread::panicking() {
            panic!("daemons survived kill -9: {left:?}");
        }
    }
}

/// One test's world. Fields drop in order: the daemons die before the directory goes.
struct Rig {
    _reaper: Reaper,
    env: Env,
}

impl Rig {
    /// `None` (after printing why) where the watchdog cannot re-execute its own binary.
    fn new() -> Option<Rig> {
        if std::env::var("TGKNOCK_TEST_RUNNER").is_ok_and(|r| !r.trim().is_empty()) {
            let qemu = std::fs::read_dir("/proc/sys/fs/binfmt_misc")
                .map(|d| {
                    d.flatten()
                        .any(|e| e.file_name().to_string_lossy().starts_with("qemu-"))
                })
                .unwrap_or(false);
            if !qemu {
                crate::support::netns::skip("watchdog re-exec under qemu needs binfmt_misc");
                return None;
            }
        }
        let mut env = Env::new();
        let log = env.path("watchdog-daemon.log");
        env.set("TGKNOCK_LOG_FILE", &log.display().to_string())
            .set("TGKNOCK_POLL_TIMEOUT", "1s")
            .set("RUST_LOG", "debug,ureq=info,ureq_proto=info");
        Some(Rig {
            _reaper: Reaper {
                state_dir: env.state_dir(),
            },
            env,
        })
    }

    fn watchdog(&self) -> Output {
        let out = self.env.run(&["watchdog"]);
        assert!(
            out.status.success(),
            "watchdog: {}\nstdout:\n{}stderr:\n{}\ndaemon log:\n{}",
            out.status,
            stdout(&out),
            stderr(&out),
            self.log()
        );
        out
    }

    /// Runs the watchdog, which must find the daemon healthy: exit 0, no output at all.
    fn watchdog_silent(&self) {
        let out = self.watchdog();
        assert_eq!(
            (stdout(&out).as_str(), stderr(&out).as_str()),
            ("", ""),
            "a healthy daemon: the watchdog says nothing"
        );
    }

    /// Runs the watchdog, which must start a daemon; checks it and returns its pid.
    fn watchdog_starts(&self) -> (u32, String) {
        let out = self.watchdog();
        let text = stdout(&out);
        let pid = started_pid(&text).unwrap_or_else(|| panic!("no `started` line:\n{text}"));
        assert!(
            text.contains(&self.log_file().display().to_string()),
            "names the log file:\n{text}"
        );
        self.check_daemon(pid);
        (pid, text)
    }

    /// `pid` is a daemon the watchdog started: it holds the pid lock, it is the pid file's
    /// pid, it leads a session of its own, its heartbeat is fresh, and it answers chat.
    fn check_daemon(&self, pid: u32) {
        assert_eq!(
            self.holder(),
            Some(pid),
            "the new daemon holds the pid lock"
        );
        assert_eq!(
            session(pid),
            Some(pid),
            "the daemon leads a session of its own"
        );
        assert_ne!(session(std::process::id()), Some(pid));
        // `stale_after` for 1 s polls is 3 * 1 + 20 = 23 s.
        wait_for(30, "a fresh heartbeat", || {
            self.heartbeat_age().filter(|a| *a <= 23)
        });
        let n = self.env.api.sent_to(OWNER).len();
        self.env.api.say(OWNER, "/status");
        let reply = self.env.api.wait_nth_reply(OWNER, n + 1, 30);
        assert!(reply.contains("ssh (22/tcp)"), "{reply}");
        // A read-only command is confirmed by the next poll, not saved: a daemon stopped
        // before that poll is given `/status` again after a restart (DESIGN: only what was
        // carried out is never carried out again), and its second answer would be counted
        // as the reply to the next command. Wait for the poll that confirms it.
        wait_for(30, "the daemon to confirm /status by its next poll", || {
            (self.env.api.pending() == 0).then_some(())
        });
        assert_eq!(daemons(&self.env.state_dir()), [pid], "one daemon runs");
        self.wait_log("logged in as");
    }

    fn log_file(&self) -> PathBuf {
        self.env.path("watchdog-daemon.log")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_file()).unwrap_or_default()
    }

    /// Waits for the daemons' log to hold `needle`; the log never holds the token.
    fn wait_log(&self, needle: &str) {
        wait_for(30, &format!("{needle:?} in the daemon log"), || {
            self.log().contains(needle).then_some(())
        });
        assert_no_secret(&self.log());
    }

    fn pid_file(&self) -> PathBuf {
        self.env.state_dir().join("tgknock.pid")
    }

    /// The pid in the pid file, if a process holds its lock.
    fn holder(&self) -> Option<u32> {
        let f = std::fs::File::open(self.pid_file()).ok()?;
        match f.try_lock_shared() {
            Ok(()) => None,
            Err(_) => std::fs::read_to_string(self.pid_file())
                .ok()?
                .trim()
                .parse()
                .ok(),
        }
    }

    fn heartbeat_age(&self) -> Option<u64> {
        let text = std::fs::read_to_string(self.env.state_dir().join("heartbeat")).ok()?;
        let beat: serde_json::Value = serde_json::from_str(&text).ok()?;
        Some((now() as u64).saturating_sub(beat["at"].as_u64()?))
    }

    /// Sends `/open` as the owner and checks the reply and the fake kernel's rules.
    fn open(&self) {
        let n = self.env.api.sent_to(OWNER).len();
        self.env.api.say(OWNER, "/open");
        let reply = self.env.api.wait_nth_reply(OWNER, n + 1, 30);
        assert!(
            reply.contains("ssh (22/tcp) open to everyone"),
            "{reply}\ndaemon log:\n{}",
            self.log()
        );
        assert!(!self.env.drops(4, "ssh") && !self.env.drops(6, "ssh"));
    }
}

/// The pid of "started `… run` (pid N)" in the watchdog's output.
fn started_pid(text: &str) -> Option<u32> {
    let line = text.lines().find(|l| l.contains("started `"))?;
    let rest = &line[line.find("(pid ")? + 5..];
    rest[..rest.find(')')?].parse().ok()
}

/// `kill -SIG pid`.
fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// Fields of /proc/PID/stat after the command name: state, ppid, pgrp, session…
fn stat(pid: u32) -> Option<Vec<String>> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &s[s.rfind(')')? + 1..];
    Some(after.split_whitespace().map(String::from).collect())
}

fn session(pid: u32) -> Option<u32> {
    stat(pid)?.get(3)?.parse().ok()
}

/// Whether `pid` is gone (or a zombie no one has reaped yet).
fn dead(pid: u32) -> bool {
    stat(pid).is_none_or(|f| f[0] == "Z" || f[0] == "X")
}

/// The live `tgknock run` processes whose environment names `state_dir`.
fn daemons(state_dir: &Path) -> Vec<u32> {
    let needle = format!("TGKNOCK_STATE_DIR={}", state_dir.display());
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            environ.split(|b| *b == 0).any(|v| v == needle.as_bytes())
                && cmdline.split(|b| *b == 0).any(|a| a == b"run")
                && !dead(pid)
        })
        .collect();
    // A daemon's child between fork and exec (a firewall tool about to start) still shows
    // the daemon's environment and command line; under qemu-user that moment is long
    // enough to be seen. It is not a second daemon.
    let candidates = pids.clone();
    pids.retain(|pid| !parent(*pid).is_some_and(|p| candidates.contains(&p)));
    pids.sort_unstable();
    pids
}

fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name, which is in parentheses and may hold spaces: state, ppid.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[test]
fn healthy_daemon_is_left_alone() {
    let Some(rig) = Rig::new() else { return };
    let mut d = rig.env.start();
    wait_for(30, "a heartbeat", || rig.heartbeat_age());
    rig.watchdog_silent();
    assert!(d.try_exit().is_none(), "the watchdog left the daemon alone");
    assert_eq!(rig.holder(), Some(d.pid()));
    assert_eq!(daemons(&rig.env.state_dir()), [d.pid()]);
    assert!(
        !rig.log_file().exists(),
        "no daemon was started, so no log file"
    );
    rig.watchdog_silent();
}

#[test]
fn no_daemon_starts_one_detached() {
    let Some(rig) = Rig::new() else { return };
    let (pid, text) = rig.watchdog_starts();
    assert!(text.contains("not running"), "{text}");
    assert!(
        std::fs::read_to_string(rig.pid_file())
            .unwrap()
            .trim()
            .parse::<u32>()
            == Ok(pid),
        "the pid file holds the new daemon's pid"
    );
    rig.open();
    // Now it is healthy: the next cron run is silent and changes nothing.
    rig.watchdog_silent();
    assert_eq!(daemons(&rig.env.state_dir()), [pid]);
    rig.wait_log("open to everyone");
}

#[test]
fn killed_daemon_is_restarted() {
    let Some(rig) = Rig::new() else { return };
    let (first, _) = rig.watchdog_starts();
    rig.open();
    signal(first, "KILL");
    wait_for(10, "the killed daemon to die", || dead(first).then_some(()));
    wait_for(10, "the pid lock to be free", || {
        rig.holder().is_none().then_some(())
    });
    let (second, text) = rig.watchdog_starts();
    assert!(text.contains("not running"), "{text}");
    assert_ne!(first, second);
    // The restarted daemon rebuilt the firewall from the saved state: ssh is still open.
    let n = rig.env.api.sent_to(OWNER).len();
    rig.env.api.say(OWNER, "/status");
    let status = rig.env.api.wait_nth_reply(OWNER, n + 1, 30);
    assert!(status.contains("ssh (22/tcp) open"), "{status}");
    assert!(!rig.env.drops(4, "ssh"), "{}", rig.env.rules(4));
    rig.watchdog_silent();
}

#[test]
fn hung_daemon_is_killed_and_restarted() {
    let Some(rig) = Rig::new() else { return };
    let (first, _) = rig.watchdog_starts();
    signal(first, "STOP");
    // Stopped, but its heartbeat is still fresh: not yet judged hung.
    rig.watchdog_silent();
    assert!(!dead(first));
    // With 1 s polls the heartbeat is stale after 3 * 1 + 20 = 23 s.
    wait_for(60, "the stopped daemon's heartbeat to go stale", || {
        rig.heartbeat_age().filter(|a| *a > 23)
    });
    let (second, text) = rig.watchdog_starts();
    assert!(
        text.contains(&format!("(pid {first}) is hung")),
        "says it found the daemon hung:\n{text}"
    );
    assert!(dead(first), "the hung daemon was killed");
    assert_ne!(first, second);
    rig.open();
    rig.watchdog_silent();
}

#[test]
fn concurrent_watchdogs_start_one_daemon() {
    let Some(rig) = Rig::new() else { return };
    let barrier = std::sync::Barrier::new(4);
    let outs: Vec<Output> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let mut cmd = rig.env.command(&["watchdog"]);
                    barrier.wait();
                    cmd.output().expect("run tgknock watchdog")
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut started = Vec::new();
    for out in &outs {
        let (o, e) = (stdout(out), stderr(out));
        assert_no_secret(&o);
        assert_no_secret(&e);
        assert!(out.status.success(), "{}\n{o}{e}", out.status);
        match started_pid(&o) {
            Some(pid) => started.push(pid),
            None => assert_eq!((o.as_str(), e.as_str()), ("", ""), "the others are silent"),
        }
    }
    assert_eq!(
        started.len(),
        1,
        "exactly one watchdog starts a daemon; their outputs:\n{}",
        outs.iter()
            .map(|o| format!("{}{}", stdout(o), stderr(o)))
            .collect::<Vec<_>>()
            .join("---\n")
    );
    rig.check_daemon(started[0]);
    rig.open();
}
