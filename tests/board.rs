//! The board's real life, against the fake Bot API and the recording fake iptables: root at
//! the console before the service user's daemon, links planted in the state directory, a
//! clock hours off, another program flushing the rules, an idle daemon that must not write
//! to the SD card, forwarded messages, and what child processes see.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::json;

use crate::support::env::{Daemon, stderr, stdout};
use crate::support::netns::{is_root, skip};
use crate::support::{Env, OWNER, SECRET, now, wait_for};

/// The service user of these tests (`nobody`/`nogroup`).
const NOBODY: u32 = 65534;
const STRANGER: i64 = 222_222_222;

/// `cmd` run as uid/gid 65534 through setpriv, with the same environment.
fn as_nobody(cmd: Command) -> Command {
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid",
        &NOBODY.to_string(),
        "--regid",
        &NOBODY.to_string(),
        "--clear-groups",
        "--",
    ])
    .arg(cmd.get_program())
    .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c.stdin(Stdio::null());
    c
}

/// `cmd` run by root under `umask 027`, as an admin's shell may have it.
fn with_umask(cmd: Command) -> Command {
    let mut c = Command::new("sh");
    c.args(["-c", "umask 027; exec \"$@\"", "sh"])
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c.stdin(Stdio::null());
    c
}

fn spawn_as(env: &Env, cmd: Command, name: &str) -> Daemon {
    let log = env.dir.join(format!("{name}.log"));
    let f = std::fs::File::create(&log).unwrap();
    let mut cmd = cmd;
    let child = cmd
        .stdout(f.try_clone().unwrap())
        .stderr(f)
        .spawn()
        .expect("spawn");
    Daemon {
        child: Some(child),
        log,
    }
}

fn output(cmd: &mut Command) -> (i32, String, String) {
    let o = cmd.output().expect("run tgknock");
    let (out, err) = (stdout(&o), stderr(&o));
    crate::support::env::assert_no_secret(&out);
    crate::support::env::assert_no_secret(&err);
    (o.status.code().unwrap_or(-1), out, err)
}

/// Every entry of a directory with its owner and mode.
fn owners(dir: &Path) -> Vec<(String, u32, u32, u32)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| {
            let m = e.path().symlink_metadata().unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                m.uid(),
                m.gid(),
                m.mode() & 0o7777,
            )
        })
        .collect();
    v.sort();
    v
}

fn chown_tree(path: &Path, uid: u32) {
    let status = Command::new("chown")
        .args(["-R", &format!("{uid}:{uid}")])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

/// Whether this machine can run a test that switches users.
fn can_switch_users() -> bool {
    if !is_root() {
        skip("switching to the service user needs root");
        return false;
    }
    if Command::new("setpriv").arg("--help").output().is_err() {
        skip("setpriv (util-linux) is missing");
        return false;
    }
    true
}

/// An environment whose state directory belongs to the service user (0750), and whose
/// scratch directory that user can enter.
fn service_env() -> Env {
    let env = Env::new();
    std::fs::set_permissions(&env.dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let state = env.state_dir();
    std::fs::create_dir_all(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o750)).unwrap();
    std::os::unix::fs::chown(&state, Some(NOBODY), Some(NOBODY)).unwrap();
    env
}

#[test]
fn root_at_the_console_leaves_files_the_service_can_use() {
    if !can_switch_users() {
        return;
    }
    let env = service_env();
    // Root, as the README says, with a restrictive umask: check, open, close, open again,
    // status, teardown and open once more.
    for args in [
        &["check"][..],
        &["open", "--for", "1h"],
        &["close"],
        &["status"],
        &["teardown"],
        &["open", "--for", "6s"],
        &["status", "--json"],
    ] {
        let (code, out, err) = output(&mut with_umask(env.command(args)));
        assert_eq!(code, 0, "{args:?}\n{out}\n{err}");
    }
    let files = owners(&env.state_dir());
    assert!(!files.is_empty());
    for (name, uid, gid, mode) in &files {
        assert_eq!(
            (*uid, *gid, *mode),
            (NOBODY, NOBODY, 0o640),
            "{name} must belong to the directory's owner, mode 0640: {files:?}"
        );
    }
    assert!(
        env.openings().contains_key("ssh"),
        "root's opening is saved"
    );
    // The fake kernel's files are the fake's business: hand them over too.
    chown_tree(&env.dir.join("fw"), NOBODY);
    let d = spawn_as(&env, as_nobody(env.command(&["run"])), "nobody-daemon");
    d.wait_log("logged in as", 30);
    // The service user's daemon closes root's opening at its deadline.
    wait_for(20, "root's opening to be closed by the daemon", || {
        (env.openings().is_empty() && env.drops(4, "ssh") && env.drops(6, "ssh")).then_some(())
    });
    for (name, uid, _, mode) in owners(&env.state_dir()) {
        // The approval socket is the service user's, 0600 (only it and root may ask).
        let want = match name.as_str() {
            "wake.sock" => continue,
            "approve.sock" => 0o600,
            _ => 0o640,
        };
        assert_eq!((uid, mode), (NOBODY, want), "{name}");
    }
}

#[test]
fn planted_links_are_never_followed_and_the_gates_stay_closed() {
    let env = Env::new();
    let state = env.state_dir();
    std::fs::create_dir_all(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o750)).unwrap();
    let precious = env.dir.join("precious");
    std::fs::write(&precious, "root's file\n").unwrap();
    std::fs::set_permissions(&precious, std::fs::Permissions::from_mode(0o600)).unwrap();
    let untouched = |what: &str| {
        assert_eq!(
            std::fs::read_to_string(&precious).unwrap(),
            "root's file\n",
            "{what}"
        );
        let m = std::fs::metadata(&precious).unwrap();
        assert_eq!((m.uid(), m.mode() & 0o7777), (0, 0o600), "{what}");
    };
    for name in ["lock", "state.json", "tgknock.pid"] {
        let link = state.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&precious, &link).unwrap();
        let args: &[&str] = if name == "tgknock.pid" {
            &["run"]
        } else {
            &["open", "--for", "5m"]
        };
        let (code, out, err) = output(&mut env.command(args));
        assert_ne!(code, 0, "{name}: {out}{err}");
        assert!(
            err.contains("symbolic link") && err.contains(name),
            "{name}: the message names the link: {err}"
        );
        untouched(name);
        if name == "state.json" {
            // The daemon, meeting it, closes every gate rather than leave them as they are.
            let (code, _, err) = output(&mut env.command(&["run"]));
            assert_eq!(code, 2, "{err}");
            assert!(err.contains("every gate is closed"), "{err}");
            assert!(
                env.drops(4, "ssh") && env.drops(6, "ssh"),
                "{}",
                env.rules(4)
            );
            untouched("the daemon");
        }
        std::fs::remove_file(&link).unwrap();
    }
}

/// Runs `cmd` to its end, or kills it and fails after 30 s (a hang guard: a FIFO planted
/// in the state directory must not hang a console command).
fn bounded(cmd: &mut Command, what: &str) -> (i32, String, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tgknock");
    let end = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after 30 s (hung on the FIFO?)");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let o = child.wait_with_output().unwrap();
    let (out, err) = (stdout(&o), stderr(&o));
    crate::support::env::assert_no_secret(&out);
    crate::support::env::assert_no_secret(&err);
    (o.status.code().unwrap_or(-1), out, err)
}

/// A planted file of root's, 0600, and a check that it is as it was.
fn precious(env: &Env) -> (std::path::PathBuf, impl Fn(&str)) {
    let precious = env.dir.join("precious");
    std::fs::write(&precious, "root's file\n").unwrap();
    std::fs::set_permissions(&precious, std::fs::Permissions::from_mode(0o600)).unwrap();
    let owner = std::fs::metadata(&precious).unwrap().uid();
    let p = precious.clone();
    let untouched = move |what: &str| {
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "root's file\n",
            "{what}: the planted file's content changed"
        );
        let m = std::fs::metadata(&p).unwrap();
        assert_eq!(
            (m.uid(), m.gid(), m.mode() & 0o7777),
            (owner, owner, 0o600),
            "{what}: the planted file's owner or mode changed"
        );
    };
    (precious, untouched)
}

/// The console commands each planted name is met by, and what each must say.
const PLANTED: [(&str, &[&str]); 4] = [
    ("lock", &["open", "--for", "5m"]),
    ("state.json", &["open", "--for", "5m"]),
    ("tgknock.pid", &["run"]),
    ("tgknock.pid", &["status"]),
];

/// A hard link or a FIFO planted in the state directory under one of tgknock's names is
/// refused by name: the linked file is not read, written, chmodded or handed over, and a
/// FIFO hangs nothing.
#[test]
fn hard_links_and_fifos_planted_in_the_state_directory_are_refused() {
    let env = Env::new();
    let state = env.state_dir();
    std::fs::create_dir_all(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o750)).unwrap();
    let (precious, untouched) = precious(&env);
    for (name, args) in PLANTED {
        let planted = state.join(name);
        let what = format!("a hard link as {name}, {args:?}");
        let _ = std::fs::remove_file(&planted);
        std::fs::hard_link(&precious, &planted).unwrap();
        let (code, out, err) = bounded(&mut env.command(args), &what);
        // `status` tells what it shows without the pid file; the others fail.
        assert!(code != 0 || args[0] == "status", "{what}: {out}{err}");
        assert!(
            err.contains(name) && err.contains("hard link"),
            "{what}: the message names it: {out}{err}"
        );
        untouched(&what);
        std::fs::remove_file(&planted).unwrap();

        let what = format!("a FIFO as {name}, {args:?}");
        let made = Command::new("mkfifo").arg(&planted).status().unwrap();
        assert!(made.success());
        let (code, out, err) = bounded(&mut env.command(args), &what);
        assert!(code != 0 || args[0] == "status", "{what}: {out}{err}");
        assert!(
            err.contains(name) && err.contains("not a regular file"),
            "{what}: the message names it: {out}{err}"
        );
        std::fs::remove_file(&planted).unwrap();
    }
    assert!(env.openings().is_empty());
    // With the plants gone, the same commands work.
    let (code, out, err) = bounded(&mut env.command(&["open", "--for", "5m"]), "open");
    assert_eq!(code, 0, "{out}{err}");
}

/// The service user's state directory, a hard link to a file of root's planted in it:
/// root's console never hands that file to the service user (nor changes its mode).
#[test]
fn root_never_hands_over_a_hard_linked_file() {
    if !is_root() {
        return skip("a file of root's given away is what this test guards: it needs root");
    }
    let env = service_env();
    let state = env.state_dir();
    let (precious, untouched) = precious(&env);
    for (name, args) in PLANTED.iter().chain([("lock", &["close"][..])].iter()) {
        let planted = state.join(name);
        let _ = std::fs::remove_file(&planted);
        std::fs::hard_link(&precious, &planted).unwrap();
        let what = format!("root's {args:?} with a hard link as {name}");
        let (code, out, err) = bounded(&mut with_umask(env.command(args)), &what);
        assert!(code != 0 || args[0] == "status", "{what}: {out}{err}");
        assert!(err.contains("hard link"), "{what}: {out}{err}");
        untouched(&what);
        std::fs::remove_file(&planted).unwrap();
    }
}

#[test]
fn a_state_directory_others_can_write_is_refused() {
    let env = Env::new();
    let state = env.state_dir();
    std::fs::create_dir_all(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
    let (code, _, err) = output(&mut env.command(&["open"]));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&state.display().to_string()) && err.contains("writable by everyone"),
        "{err}"
    );
    assert!(env.openings().is_empty());
    let (code, _, err) = output(&mut env.command(&["run"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("every gate is closed"), "{err}");
    assert!(env.drops(4, "ssh") && env.drops(6, "ssh"));
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    let (code, out, err) = output(&mut env.command(&["open", "--for", "5m"]));
    assert_eq!(code, 0, "{out}{err}");
}

/// A message dated `ago` seconds before Telegram's now, from the owner.
fn say_dated(env: &Env, text: &str, ago: i64) {
    env.api
        .push_message_at(OWNER, OWNER, "private", text, env.api.now() - ago);
}

fn clock_scenario(offset: i64, skew_text: &str) {
    let env = Env::new();
    env.api.set_clock_offset(offset);
    let _d = env.start();
    // Fresh by Telegram's clock: carried out, however far the board's clock is off.
    say_dated(&env, "/open ssh 10m", 2);
    // (A board's clock ahead of Telegram's is told to the owner too, first.)
    let r = env.api.wait_reply(OWNER, "ssh (22/tcp) open", 20);
    assert!(r.starts_with("ssh (22/tcp) open to everyone"), "{r}");
    // Stale by Telegram's clock: refused with the reason, whatever the board says.
    say_dated(&env, "/close", 30 * 60);
    let r = env.api.wait_reply(OWNER, "Not executed", 20);
    // 30 min, or 30 min 1 s when a second ticks over between the two clocks' reads.
    assert!(
        r.starts_with("Not executed: this command was sent 30 min"),
        "{r}"
    );
    assert!(
        env.openings().contains_key("ssh"),
        "the stale /close did nothing"
    );
    let out = env.run(&["status"]);
    assert!(stdout(&out).contains(skew_text), "{}", stdout(&out));
    let out = env.run(&["check"]);
    assert!(stdout(&out).contains(skew_text), "{}", stdout(&out));
}

#[test]
fn a_board_clock_hours_behind_still_refuses_stale_commands() {
    // Telegram's clock is 3 h ahead: the board's is 3 h behind (no RTC, no NTP yet).
    clock_scenario(3 * 3600, "3 h behind Telegram's clock");
}

#[test]
fn a_board_clock_a_day_ahead_still_runs_fresh_commands() {
    clock_scenario(-26 * 3600, "1 d 2 h ahead of Telegram's clock");
}

/// What `iptables -F; iptables -X` leaves of the fake kernel's IPv4 filter table.
fn flush_v4(env: &Env) {
    let v4 = env.dir.join("fw/v4");
    std::fs::write(v4.join("INPUT"), "").unwrap();
    let _ = std::fs::remove_file(v4.join("TGKNOCK"));
}

#[test]
fn rules_another_program_removed_are_put_back_and_the_owner_told_once() {
    let env = Env::new();
    let d = env.start();
    assert!(env.drops(4, "ssh"));
    // Each flush waits for the previous repair to be done (written and read back), as the
    // fake's files are no kernel: a flush in the middle of its transaction would tear it.
    let repaired = |n: usize| {
        wait_for(20, &format!("repair #{n}"), || {
            (d.output().matches("; put them back").count() >= n).then_some(())
        })
    };
    flush_v4(&env);
    let told = env
        .api
        .wait_reply(OWNER, "another program changed the firewall rules", 20);
    assert!(
        told.contains("IPv4: the chain TGKNOCK is gone") && told.contains("put them back"),
        "{told}"
    );
    repaired(1);
    assert!(env.drops(4, "ssh") && env.rules(4).contains("-A INPUT -j TGKNOCK"));
    // Again: put back, but the owner is not told twice.
    flush_v4(&env);
    repaired(2);
    // A third time within ten minutes: another program keeps at it. tgknock says so and
    // stops fighting it for a while.
    flush_v4(&env);
    repaired(3);
    let looped = env.api.wait_reply(OWNER, "keeps changing", 20);
    assert!(looped.contains("at most every 1 min"), "{looped}");
    assert!(env.drops(4, "ssh"), "the third flush is repaired too");
    let sent = env.api.sent_to(OWNER);
    assert_eq!(
        sent.iter()
            .filter(|t| t.contains("another program changed the firewall rules"))
            .count(),
        1,
        "{sent:?}"
    );
    flush_v4(&env);
    let polls = env.api.requests("getUpdates").len();
    wait_for(30, "three more polls", || {
        (env.api.requests("getUpdates").len() >= polls + 3).then_some(())
    });
    assert!(
        !env.drops(4, "ssh"),
        "held back: no repair within the minute"
    );
}

/// Name, size, inode, mtime and ctime of every entry, and the directory's own times.
fn footprint(dir: &Path) -> Vec<(String, u64, u64, i64, i64, i64, i64)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| {
            let m = e.path().symlink_metadata().unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                m.len(),
                m.ino(),
                m.mtime(),
                m.mtime_nsec(),
                m.ctime(),
                m.ctime_nsec(),
            )
        })
        .collect();
    let m = std::fs::metadata(dir).unwrap();
    v.push((
        ".".into(),
        0,
        m.ino(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
    ));
    v.sort();
    v
}

#[test]
fn an_idle_daemon_writes_nothing_to_the_state_directory() {
    let mut env = Env::new();
    let run = env.dir.join("run");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o750)).unwrap();
    env.set("RUNTIME_DIRECTORY", &run.display().to_string())
        .set("TGKNOCK_POLL_TIMEOUT", "1s");
    let d = env.start();
    // Settled: the first polls done, the offset saved if there was one.
    let polls = env.api.requests("getUpdates").len();
    wait_for(20, "two polls", || {
        (env.api.requests("getUpdates").len() >= polls + 2).then_some(())
    });
    let before = footprint(&env.state_dir());
    let polls = env.api.requests("getUpdates").len();
    wait_for(30, "three more polls", || {
        (env.api.requests("getUpdates").len() >= polls + 4).then_some(())
    });
    assert_eq!(
        footprint(&env.state_dir()),
        before,
        "the state directory changed while the daemon was idle"
    );
    assert!(!env.state_dir().join("heartbeat").exists());
    let beat: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("heartbeat")).unwrap()).unwrap();
    assert_eq!(beat["pid"].as_u64(), Some(u64::from(d.pid())));
    assert!(beat["at"].as_i64().unwrap() >= now() - 5, "{beat}");
    let out = stdout(&env.run(&["status"]));
    assert!(
        out.contains(&format!("daemon: running (pid {})", d.pid())) && out.contains("last poll"),
        "{out}"
    );
}

#[test]
fn a_flood_of_strangers_writes_nothing_to_the_state_directory() {
    let mut env = Env::new();
    let run = env.dir.join("run");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o750)).unwrap();
    env.set("RUNTIME_DIRECTORY", &run.display().to_string())
        .set("TGKNOCK_POLL_TIMEOUT", "1s");
    let _d = env.start();
    // The owner's /status first: the offset past it is saved.
    env.api.say(OWNER, "/status");
    env.api.wait_reply(OWNER, "ssh", 20);
    let polls = env.api.requests("getUpdates").len();
    wait_for(20, "two polls", || {
        (env.api.requests("getUpdates").len() >= polls + 2).then_some(())
    });
    let before = footprint(&env.state_dir());
    let saved = env.state()["offset"].as_i64().unwrap();
    let mut last = 0;
    for i in 0..450 {
        last = env.api.push_update(json!({"message": {
            "message_id": 1000 + i,
            "from": {"id": STRANGER + i, "is_bot": false, "first_name": "scan"},
            "chat": {"id": STRANGER + i, "type": "private"},
            "date": now(),
            "text": "/open ssh 1d",
        }}));
    }
    wait_for(30, "the flood read and confirmed", || {
        let poll = env.api.requests("getUpdates").pop()?;
        (env.api.pending() == 0 && poll.body["offset"].as_i64()? > last).then_some(())
    });
    assert_eq!(
        footprint(&env.state_dir()),
        before,
        "450 strangers' commands changed the state directory"
    );
    assert_eq!(env.state()["offset"].as_i64(), Some(saved));
    // The owners hear of them once the queue is empty; the next command saves the
    // offset past them all.
    env.api
        .wait_reply(OWNER, "Ignored 450 commands from 450 strangers", 20);
    let id = env.api.say(OWNER, "/status");
    wait_for(20, "the offset past the owner's /status saved", || {
        (env.state()["offset"].as_i64()? == id + 1).then_some(())
    });
}

#[test]
fn forwarded_messages_are_never_commands() {
    let env = Env::new();
    let _d = env.start();
    let restores = env.restores();
    for forward in [
        json!({"forward_origin": {"type": "user", "date": now(), "sender_user": {"id": OWNER, "is_bot": false, "first_name": "me"}}}),
        json!({"forward_date": now(), "forward_from": {"id": OWNER, "is_bot": false, "first_name": "me"}}),
    ] {
        let mut message = json!({
            "message_id": 77,
            "from": {"id": OWNER, "is_bot": false, "first_name": "me"},
            "chat": {"id": OWNER, "type": "private"},
            "date": now(),
            "text": "/open ssh 1h",
        });
        for (k, v) in forward.as_object().unwrap() {
            message[k] = v.clone();
        }
        env.api.push_update(json!({ "message": message }));
    }
    env.api.say(OWNER, "/status");
    let r = env.api.wait_nth_reply(OWNER, 1, 20);
    assert!(r.starts_with("ssh (22/tcp) closed"), "{r}");
    assert_eq!(env.restores(), restores);
    assert!(env.openings().is_empty());
}

#[test]
fn strangers_names_lose_invisible_and_reordering_characters() {
    let env = Env::new();
    let _d = env.start();
    env.api.push_update(json!({"message": {
        "message_id": 5,
        "from": {"id": STRANGER, "is_bot": false, "first_name": "\u{202e}lived\u{200b}\u{2066}"},
        "chat": {"id": STRANGER, "type": "private"},
        "date": now(),
        "text": "/open",
    }}));
    let summary = env.api.wait_reply(OWNER, "stranger", 20);
    assert!(
        summary.contains(&format!("{STRANGER} (lived)")),
        "{summary:?}"
    );
    for c in ['\u{202e}', '\u{200b}', '\u{2066}'] {
        assert!(!summary.contains(c), "{summary:?}");
    }
}

#[test]
fn firewall_tools_get_a_cleared_environment() {
    // The token comes from the environment here (TGKNOCK_TOKEN): the tools must not see it.
    let env = Env::new();
    let _d = env.start();
    env.api.say(OWNER, "/open");
    env.api.wait_nth_reply(OWNER, 1, 20);
    for tool in ["iptables", "iptables-restore", "ip6tables-restore"] {
        let seen = std::fs::read_to_string(env.dir.join(format!("fw/env-{tool}")))
            .unwrap_or_else(|e| panic!("{tool} recorded no environment: {e}"));
        assert!(
            !seen.contains(SECRET) && !seen.contains("TGKNOCK_") && !seen.contains("RUST_LOG"),
            "{tool} saw:\n{seen}"
        );
        assert!(seen.contains("LC_ALL=C"), "{seen}");
    }
}

#[test]
fn a_probe_of_the_pid_lock_never_stops_a_starting_daemon() {
    let env = Env::new();
    // A watchdog or `tgknock status` holds a shared lock on the pid file for an instant to
    // see whether a daemon runs; here it holds it for a good while.
    let state = env.state_dir();
    std::fs::create_dir_all(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    let pid_file = std::fs::File::create(state.join("tgknock.pid")).unwrap();
    pid_file.try_lock_shared().unwrap();
    let d = env.spawn();
    std::thread::sleep(std::time::Duration::from_millis(400));
    drop(pid_file);
    d.wait_log("logged in as", 30);
    let again = output(&mut env.command(&["run"]));
    assert_eq!(again.0, 1, "a second daemon still refuses");
    assert!(
        again.2.contains(&format!(
            "another tgknock daemon is running (pid {})",
            d.pid()
        )),
        "{}",
        again.2
    );
}

/// Under the unit's `ProtectProc=invisible`, root's console commands are not in the
/// service user's `/proc`: a starting daemon must not take a temporary file for a crash's
/// because its writer's pid is not there. The test plays the invisible writer (a pid no
/// `/proc` shows, in the name) holding its temporary, as every writer does; a crash's
/// temporary (nobody holds it) still goes.
#[test]
fn a_start_spares_the_temporary_of_a_writer_it_cannot_see() {
    let env = Env::new();
    let dir = env.state_dir();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let live = dir.join(".tgknock-tgknock.log.999999999.0.123456789.tmp");
    std::fs::write(&live, "").unwrap();
    let held = std::fs::File::open(&live).unwrap();
    held.lock().unwrap();
    let crashed = dir.join(".tgknock-state.json.999999998.0.123456789.tmp");
    std::fs::write(&crashed, "{\"version\": 1}\n").unwrap();
    let d = env.start();
    assert!(
        live.exists(),
        "the starting daemon removed the temporary of a live writer it cannot see in /proc:\n{}",
        d.output()
    );
    assert!(
        !crashed.exists(),
        "a crash's temporary was left:\n{}",
        d.output()
    );
    drop(held);
}

/// A link planted as the wake socket (to another program's socket) is not followed: the
/// console's poke reaches no one but a daemon's own socket.
#[test]
fn a_link_planted_as_the_wake_socket_is_not_followed() {
    let env = Env::new();
    let dir = env.state_dir();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let other = env.dir.join("other.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&other).unwrap();
    sock.set_nonblocking(true).unwrap();
    std::os::unix::fs::symlink(&other, dir.join("wake.sock")).unwrap();
    let (code, out, err) = output(&mut env.command(&["open", "--for", "5m"]));
    assert_eq!(code, 0, "{out}{err}");
    let mut buf = [0u8; 64];
    assert!(
        sock.recv(&mut buf).is_err(),
        "the console sent its wake-up through the planted link"
    );
    assert!(err.contains("wake.sock is not a socket"), "{err}");
}
