//! The daemon needs no root: run as uid/gid 65534 with only CAP_NET_ADMIN and CAP_NET_RAW
//! (ambient, and nothing else in its bounding set, as the systemd unit does), against
//! real iptables/ip6tables in a board network namespace, on the nft and the legacy
//! backend, it opens and closes SSH by chat, judged by a client namespace's TCP
//! connections (namespaces from support/netns.rs, on 10.204.N.0/24 and fd00:204:N::/64).
//!
//! iptables-legacy takes /run/xtables.lock, which an unprivileged user cannot create; the
//! packaging ships `f /run/xtables.lock 0640 root tgknock -` (tmpfiles.d). Each daemon here
//! runs in the fresh mount namespace `ip netns exec` gives it, with a tmpfs of its own on
//! /run (root-owned, 0755, so the user cannot create files there either), where the test
//! makes that file or leaves it out; the host's /run is never touched. The fake Bot API
//! lives in this process, bound to the board's loopback.
//!
//! The packaging's sysvinit script is run the same way (as root, in the board, with a /run
//! of its own): the daemon its watchdog starts must be the service user with only those two
//! capabilities, never root.
//!
//! Without root or `ip netns`, the tests print `SKIPPED: …` and pass, except under
//! `CI=true`.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::support::netns::{
    Backend, Net, OTHER, SSH, V4, V6, both, env_in, is_root, run_ok, skip,
};
use crate::support::{Daemon, Env, OWNER};

/// The second octet of this file's addresses.
const SUBNET: u8 = 204;
/// The unprivileged user and group (`nobody`/`nogroup`).
const NOBODY: u32 = 65534;
/// CAP_NET_ADMIN (12) and CAP_NET_RAW (13), as /proc/PID/status shows capability sets.
const NET_CAPS: u64 = (1 << 12) | (1 << 13);

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Whether the daemon's private /run gets the file the packaging's tmpfiles.d entry makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum XtablesLock {
    Provided,
    Missing,
}

/// One board. Fields drop in order: the daemon first, the namespaces last.
struct Board {
    daemon: Option<Daemon>,
    env: Env,
    net: Net,
    backend: Backend,
}

impl Board {
    /// `None` (after saying why) when this machine cannot run the test.
    fn new(n: u8, backend: Backend, clients: usize) -> Option<Board> {
        if !is_root() {
            skip("the non-root tests need root to set up namespaces and drop privileges");
            return None;
        }
        let missing = backend.missing_tools();
        if !missing.is_empty() {
            skip(&format!("missing firewall tools: {missing:?}"));
            return None;
        }
        if let Err(e) = run_ok(Command::new("setpriv").arg("--help")) {
            skip(&format!("setpriv (util-linux) is needed: {e}"));
            return None;
        }
        let net = match Net::new(SUBNET, n, clients) {
            Ok(net) => net,
            Err(e) => {
                skip(&format!("cannot set up network namespaces: {e}"));
                return None;
            }
        };
        let mut env = env_in(&net.board);
        env.set("TGKNOCK_GATES", "ssh=22/tcp")
            .set("TGKNOCK_IPTABLES", &backend.tool(V4))
            .set("TGKNOCK_IP6TABLES", &backend.tool(V6))
            .set("RUST_LOG", "debug,ureq=info,ureq_proto=info");
        let state = env.state_dir();
        std::fs::create_dir_all(&state).unwrap();
        std::os::unix::fs::chown(&state, Some(NOBODY), Some(NOBODY)).unwrap();
        Some(Board {
            daemon: None,
            env,
            net,
            backend,
        })
    }

    /// Starts `tgknock run` in the board as uid/gid 65534 with only the two capabilities.
    fn spawn(&mut self, lock: XtablesLock) -> &mut Daemon {
        let k = COUNTER.fetch_add(1, Ordering::SeqCst);
        let log = self.env.dir.join(format!("nonroot-daemon-{k}.log"));
        let f = std::fs::File::create(&log).unwrap();
        let make_lock = match lock {
            XtablesLock::Provided => {
                format!("install -m 0640 -o 0 -g {NOBODY} /dev/null /run/xtables.lock && ")
            }
            XtablesLock::Missing => String::new(),
        };
        let script = format!(
            "mount -t tmpfs -o mode=0755 tgknock-run /run && {make_lock}\
             exec setpriv --reuid {NOBODY} --regid {NOBODY} --clear-groups \
             --inh-caps -all,+net_admin,+net_raw --ambient-caps +net_admin,+net_raw \
             --bounding-set -all,+net_admin,+net_raw --no-new-privs \"$@\""
        );
        let inner = self.env.command(&["run"]);
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &self.net.board,
            "sh",
            "-c",
            &script,
            "tgknock",
        ])
        .arg(inner.get_program())
        .args(inner.get_args())
        .stdin(std::process::Stdio::null())
        .stdout(f.try_clone().unwrap())
        .stderr(f);
        for (k, v) in inner.get_envs() {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        // `ip netns exec`, sh and setpriv each exec the next: the child's pid is the daemon's.
        let child = cmd.spawn().expect("spawn tgknock run in the board");
        self.daemon.insert(Daemon {
            child: Some(child),
            log,
        })
    }

    fn daemon(&mut self) -> &mut Daemon {
        self.daemon.as_mut().expect("the daemon was started")
    }

    /// Sends a chat message from the owner and returns the bot's reply to it.
    fn say(&self, text: &str) -> String {
        let api = &self.env.api;
        let before = api.sent_to(OWNER).len();
        api.say(OWNER, text);
        api.wait_nth_reply(OWNER, before + 1, 30)
    }

    fn listing(&self) -> String {
        [V4, V6]
            .map(|fam| self.net.listing(self.backend, fam))
            .join("")
    }
}

/// A capability set of /proc/PID/status (`CapEff`, `CapAmb`…).
fn caps(status: &str, set: &str) -> u64 {
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{set}:")))
        .unwrap_or_else(|| panic!("no {set} in:\n{status}"));
    u64::from_str_radix(hex.trim(), 16).unwrap()
}

/// The ids of a `Uid:` or `Gid:` line: real, effective, saved, filesystem.
fn ids(status: &str, what: &str) -> Vec<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{what}:")))
        .unwrap_or_else(|| panic!("no {what} in:\n{status}"))
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect()
}

fn open_close_scenario(b: Backend, n: u8) {
    let Some(mut board) = Board::new(n, b, 1) else {
        return;
    };
    // The nft backend takes no lock file: it runs with an empty /run. Legacy needs the
    // packaging's file (`legacy_without_lock_file_fails` shows why).
    let lock = match b {
        Backend::Legacy => XtablesLock::Provided,
        Backend::Nft => XtablesLock::Missing,
    };
    board.spawn(lock).wait_log("logged in as", 60);
    let pid = board.daemon().pid();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert_eq!(ids(&status, "Uid"), [NOBODY; 4], "{status}");
    assert_eq!(ids(&status, "Gid"), [NOBODY; 4], "{status}");
    let groups = status.lines().find(|l| l.starts_with("Groups:")).unwrap();
    assert_eq!(groups.trim(), "Groups:", "no supplementary groups");
    for set in ["CapPrm", "CapEff", "CapAmb", "CapBnd"] {
        assert_eq!(
            caps(&status, set),
            NET_CAPS,
            "{set}: only CAP_NET_ADMIN and CAP_NET_RAW\n{status}"
        );
    }
    board.net.expect(
        "at start the gate is closed, the rest of the board reachable",
        &[
            (0, SSH, V4, false),
            (0, SSH, V6, false),
            (0, OTHER, V4, true),
            (0, OTHER, V6, true),
        ],
    );
    let reply = board.say("/open");
    assert!(reply.contains("ssh (22/tcp) open to everyone"), "{reply}");
    board.net.expect(
        "an unprivileged daemon's /open lets SSH in",
        &[(0, SSH, V4, true), (0, SSH, V6, true)],
    );
    let listing = board.listing();
    assert_eq!(
        listing.matches("-A INPUT -j TGKNOCK").count(),
        2,
        "one jump per family:\n{listing}"
    );
    let reply = board.say("/close");
    assert!(reply.contains("ssh (22/tcp) closed"), "{reply}");
    board.net.expect(
        "/close closes it again",
        &[(0, SSH, V4, false), (0, SSH, V6, false)],
    );
    let d = board.daemon();
    assert!(d.try_exit().is_none(), "the daemon still runs");
    let out = d.output();
    assert!(!out.contains("panicked"), "{out}");
    assert!(!out.contains("Permission denied"), "{out}");
    d.check_secret();
}

#[test]
fn unprivileged_daemon_opens_and_closes() {
    both(1, open_close_scenario);
}

#[test]
fn legacy_without_lock_file_fails() {
    let Some(mut board) = Board::new(2, Backend::Legacy, 0) else {
        return;
    };
    let d = board.spawn(XtablesLock::Missing);
    let status = d.wait_exit(60);
    let out = d.output();
    assert_eq!(
        status.code(),
        Some(1),
        "without /run/xtables.lock the legacy backend cannot work; the daemon exits 1:\n{out}"
    );
    assert!(
        out.contains("iptables-legacy"),
        "the error names the tool:\n{out}"
    );
    assert!(
        out.contains("/run/xtables.lock"),
        "the tool's own error (the lock file) is passed on:\n{out}"
    );
    assert!(!out.contains("panicked"), "{out}");
    let listing = board.listing();
    assert!(
        !listing.contains("TGKNOCK"),
        "nothing was installed:\n{listing}"
    );
}

/// Kills a process the test started indirectly (a daemon the init script's watchdog
/// detached), by its pid, when dropped.
struct KillOnDrop(Option<u32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
}

/// The packaging's sysvinit script, run as root in the board the way init runs it: its
/// `start` goes through `tgknock watchdog` (as the cron line does), which starts the real
/// daemon. The daemon must run as the service user (here nobody) with only CAP_NET_ADMIN
/// and CAP_NET_RAW, never as root, and work: open by chat, refuse to ban the board's own
/// address (read over netlink, unprivileged), and stop with the script's `stop`.
fn sysvinit_scenario(b: Backend, n: u8) {
    let Some(board) = Board::new(n, b, 1) else {
        return;
    };
    let dir = &board.env.dir;
    let state = board.env.state_dir();
    let conf = dir.join("sysvinit.conf");
    std::fs::write(&conf, format!("TGKNOCK_STATE_DIR={}\n", state.display())).unwrap();
    let inner = board.env.command(&[]);
    let bin = inner.get_program().to_str().unwrap().to_string();
    let script = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/packaging/sysvinit/tgknock"
    ))
    .unwrap();
    let mut set = 0;
    let script: String = script
        .lines()
        .map(|l| {
            let to = match l.split_once('=').map(|(k, _)| k) {
                Some("BIN") => format!("BIN={bin}"),
                Some("CONF") => format!("CONF={}", conf.display()),
                Some("SERVICE_USER") => "SERVICE_USER=nobody".into(),
                Some("SERVICE_GROUP") => format!("SERVICE_GROUP={NOBODY}"),
                _ => return format!("{l}\n"),
            };
            set += 1;
            format!("{to}\n")
        })
        .collect();
    assert_eq!(
        set, 4,
        "the script sets BIN, CONF, SERVICE_USER, SERVICE_GROUP:\n{script}"
    );
    let initd = dir.join("sysvinit-tgknock");
    std::fs::write(&initd, script).unwrap();
    // Root's init, in the board, with a /run of its own where the script makes the lock.
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &board.net.board, "sh", "-c"])
        .arg("mount -t tmpfs -o mode=0755 tgknock-run /run && sh \"$0\" start")
        .arg(&initd)
        .stdin(std::process::Stdio::null());
    for (k, v) in inner.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let out = cmd.output().unwrap();
    let pid: Option<u32> = std::fs::read_to_string(state.join("tgknock.pid"))
        .ok()
        .and_then(|p| p.trim().parse().ok());
    let _guard = KillOnDrop(pid);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "sysvinit start ({}): {text}",
        b.name()
    );
    let pid = pid.unwrap_or_else(|| panic!("no pid file after sysvinit start: {text}"));
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert_eq!(
        ids(&status, "Uid"),
        [NOBODY; 4],
        "{}: the daemon the sysvinit script starts runs as the service user\n{status}",
        b.name()
    );
    for set in ["CapPrm", "CapEff", "CapAmb", "CapBnd"] {
        assert_eq!(
            caps(&status, set),
            NET_CAPS,
            "{set}: only CAP_NET_ADMIN and CAP_NET_RAW\n{status}"
        );
    }
    let reply = board.say("/open");
    assert!(reply.contains("ssh (22/tcp) open to everyone"), "{reply}");
    board.net.expect(
        "the daemon the sysvinit script started opens SSH",
        &[(0, SSH, V4, true), (0, SSH, V6, true)],
    );
    let own = board.net.board_addr(V4, SSH).ip();
    let reply = board.say(&format!("/ban {own}"));
    assert!(
        reply.contains("the board's own address"),
        "{}: an unprivileged daemon reads the board's addresses: {reply}",
        b.name()
    );
    let mut stop = Command::new("ip");
    stop.args(["netns", "exec", &board.net.board, "sh"])
        .arg(&initd)
        .arg("stop");
    let out = stop.output().unwrap();
    assert!(
        out.status.success(),
        "sysvinit stop: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    crate::support::wait_for(20, "the daemon to stop", || {
        (!std::path::Path::new(&format!("/proc/{pid}")).exists()).then_some(())
    });
}

#[test]
fn sysvinit_script_runs_the_daemon_as_the_service_user() {
    both(3, sysvinit_scenario);
}
