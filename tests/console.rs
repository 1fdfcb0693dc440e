//! The console commands of the real binary, against the recording fake iptables and the
//! fake Bot API.

use std::os::unix::fs::PermissionsExt;
use std::process::{Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::env::{stderr, stdout};
use crate::support::{Env, OWNER, TOKEN, wait_for};

const STRANGER: i64 = 222_222_222;
const LOCK_MESSAGE: &str =
    "Another app is currently holding the xtables lock. Perhaps you want to use the -w option?";

fn code(o: &Output) -> i32 {
    o.status.code().expect("exited, not killed")
}

/// Runs a command and checks its exit code; returns stdout.
fn ok(env: &Env, args: &[&str]) -> String {
    let o = env.run(args);
    assert_eq!(
        code(&o),
        0,
        "{args:?}\nstdout:\n{}\nstderr:\n{}",
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// Runs a command that must fail with `want`; returns stderr (the message).
fn fails(env: &Env, args: &[&str], want: i32) -> String {
    let o = env.run(args);
    assert_eq!(
        code(&o),
        want,
        "{args:?}\nstdout:\n{}\nstderr:\n{}",
        stdout(&o),
        stderr(&o)
    );
    stderr(&o)
}

fn status_json(env: &Env) -> Value {
    let out = ok(env, &["status", "--json"]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("status --json: {e}\n{out}"))
}

/// The last lines of stderr that are not log lines (the error message).
fn message(err: &str) -> String {
    err.lines()
        .filter(|l| l.starts_with("tgknock:"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn version_help_and_unknown_commands() {
    let env = Env::new();
    let v = ok(&env, &["--version"]);
    let v = v.trim();
    let prefix = format!("tgknock {} (", env!("CARGO_PKG_VERSION"));
    assert!(v.starts_with(&prefix) && v.ends_with(')'), "{v}");
    let target = &v[prefix.len()..v.len() - 1];
    assert!(
        target.split('-').count() >= 3 && !target.contains(' '),
        "a target triple: {target}"
    );
    assert_eq!(v.lines().count(), 1);

    let h = ok(&env, &["--help"]);
    for sub in [
        "run", "open", "close", "status", "check", "whoami", "teardown",
    ] {
        assert!(
            h.lines().any(|l| l.trim_start().starts_with(sub)),
            "{sub} in --help:\n{h}"
        );
    }
    let h = ok(&env, &["open", "--help"]);
    assert!(
        h.contains("--for") && h.contains("--from") && h.contains("--config"),
        "{h}"
    );

    let e = fails(&env, &["frobnicate"], 2);
    assert!(e.contains("frobnicate"), "{e}");
    fails(&env, &["open", "--bogus"], 2);
    fails(&env, &[], 2);
    assert!(env.calls().is_empty(), "usage errors touch no firewall");
}

#[test]
fn open_close_status_and_teardown() {
    let mut env = Env::new();
    env.set("TGKNOCK_GATES", "ssh=22/tcp web=80/tcp,443/tcp");
    // Nothing is installed yet: status says so, and fails.
    let o = env.run(&["status"]);
    assert_eq!(code(&o), 1, "{}", stdout(&o));
    assert!(stdout(&o).contains("NOT installed"), "{}", stdout(&o));

    let out = ok(&env, &["open"]);
    assert!(
        out.starts_with("ssh (22/tcp) open to everyone until"),
        "{out}"
    );
    assert!(out.lines().next().unwrap().ends_with("15 min"), "{out}");
    assert!(out.contains("no daemon is running"), "{out}");
    assert!(
        !env.drops(4, "ssh") && !env.drops(6, "ssh"),
        "{}",
        env.rules(4)
    );
    assert!(env.drops(4, "web") && env.drops(6, "web"));

    let out = ok(
        &env,
        &["open", "web", "--for", "1h30m", "--from", "198.51.100.0/24"],
    );
    assert!(
        out.starts_with("web (80/tcp,443/tcp) open to 198.51.100.0/24 (IPv4 only)"),
        "{out}"
    );
    let v4 = env.rules(4);
    for port in [80, 443] {
        let want = format!(
            "-A TGKNOCK -s 198.51.100.0/24 -p tcp -m tcp --dport {port} -m time --datestop "
        );
        assert!(
            v4.lines().any(|l| l.starts_with(&want)
                && l.ends_with(" -m comment --comment tgknock-gate:web -j RETURN")),
            "{want}\n{v4}"
        );
    }
    assert!(!env.rules(6).contains("198.51.100"), "{}", env.rules(6));
    assert!(env.drops(4, "web") && env.drops(6, "web"));

    let text = ok(&env, &["status"]);
    assert!(
        text.contains("ssh (22/tcp) open to everyone until"),
        "{text}"
    );
    assert!(
        text.contains("web (80/tcp,443/tcp) open to 198.51.100.0/24"),
        "{text}"
    );
    assert!(text.contains("IPv4: iptables chain TGKNOCK with"), "{text}");
    assert!(text.contains("IPv6: iptables chain TGKNOCK with"), "{text}");
    assert!(text.contains("daemon: not running"), "{text}");

    let j = status_json(&env);
    assert_eq!(j["chain"], "TGKNOCK");
    assert_eq!(j["ipv6_managed"], true);
    assert!(j["daemon_pid"].is_null(), "{j}");
    let now = crate::support::now();
    assert!(j["checked_at"].as_i64().unwrap().abs_diff(now) <= 60, "{j}");
    let gates = j["gates"].as_array().unwrap();
    assert_eq!(gates.len(), 2);
    let ssh = &gates[0];
    assert_eq!(ssh["name"], "ssh");
    assert_eq!(ssh["ports"], "22/tcp");
    assert_eq!(ssh["state"], "open");
    assert_eq!(ssh["openings"][0]["by"], "console");
    assert!(ssh["openings"][0]["from"].is_null());
    let until = ssh["openings"][0]["until"].as_i64().unwrap();
    assert!((840..=900).contains(&(until - now)), "{j}");
    assert_eq!(ssh["families"]["ipv4"]["state"], "open");
    assert_eq!(ssh["families"]["ipv6"]["state"], "open");
    let web = &gates[1];
    assert_eq!(web["state"], "open");
    assert_eq!(web["openings"][0]["from"], "198.51.100.0/24");
    assert_eq!(web["families"]["ipv4"]["from"][0], "198.51.100.0/24");
    assert_eq!(web["families"]["ipv6"]["state"], "closed");

    let out = ok(&env, &["close", "web"]);
    assert_eq!(out.trim(), "web (80/tcp,443/tcp) closed");
    assert!(!env.rules(4).contains("198.51.100"));
    assert!(!env.drops(4, "ssh"), "ssh stays open");
    let out = ok(&env, &["close"]);
    assert!(out.contains("ssh (22/tcp) closed") && out.contains("web (80/tcp,443/tcp) closed"));
    assert!(env.drops(4, "ssh") && env.drops(6, "ssh"));
    let j = status_json(&env);
    for g in j["gates"].as_array().unwrap() {
        assert_eq!(g["state"], "closed", "{j}");
        assert!(g["openings"].as_array().unwrap().is_empty());
    }
    ok(&env, &["close", "all"]);

    let out = ok(&env, &["teardown"]);
    assert!(out.contains("IPv4: removed 1 jump(s)"), "{out}");
    assert!(out.contains("IPv6: removed 1 jump(s)"), "{out}");
    for fam in [4, 6] {
        let r = env.rules(fam);
        assert!(!r.contains("TGKNOCK"), "v{fam} after teardown:\n{r}");
        assert!(!env.path(&format!("fw/v{fam}/TGKNOCK")).exists());
    }
    let out = ok(&env, &["teardown"]);
    assert!(out.contains("nothing installed"), "{out}");
}

#[test]
fn bad_console_arguments_exit_2() {
    let env = Env::new();
    let e = fails(&env, &["open", "nope"], 2);
    assert!(
        message(&e).contains("nope") && message(&e).contains("ssh"),
        "{e}"
    );
    let e = fails(&env, &["open", "--for", "15"], 2);
    assert!(
        message(&e).contains("--for") && message(&e).contains("unit"),
        "{e}"
    );
    let e = fails(&env, &["open", "--from", "256.1.1.1"], 2);
    assert!(message(&e).contains("256.1.1.1"), "{e}");
    fails(&env, &["open", "--from", "0.0.0.0/0"], 2);
    fails(&env, &["open", "--for", "1h", "--for", "2h"], 2);
    fails(&env, &["close", "nope"], 2);
    // The knock client checks a sequence as the config does: 2 to 8 distinct ports.
    for (ports, why) in [
        ("7101,7102,7102", "appears twice"),
        ("7101", "2 to 8"),
        ("1,2,3,4,5,6,7,8,9", "2 to 8"),
        ("7101,x", "not a port"),
    ] {
        let e = message(&fails(&env, &["knock", "127.0.0.1", "--ports", ports], 2));
        assert!(e.contains("--ports") && e.contains(why), "{ports}: {e}");
    }
    assert!(env.calls().is_empty(), "no firewall call:\n{}", env.calls());
    assert!(env.openings().is_empty());
}

#[test]
fn configuration_errors_exit_2_and_name_the_key() {
    let mut env = Env::new();
    env.set("TGKNOCK_FOO", "1");
    let e = message(&fails(&env, &["status"], 2));
    assert!(
        e.contains("TGKNOCK_FOO") && e.contains("environment"),
        "{e}"
    );
    env.unset("TGKNOCK_FOO");

    env.set("TGKNOCK_ALLOWED_USER", "1");
    let e = message(&fails(&env, &["status"], 2));
    assert!(e.contains("did you mean TGKNOCK_ALLOWED_USERS"), "{e}");
    env.unset("TGKNOCK_ALLOWED_USER");

    let conf = env.path("tgknock.conf");
    std::fs::write(
        &conf,
        "# test config\nTGKNOCK_OPEN_FOR=10m\nTGKNOCK_FOO=bar\n",
    )
    .unwrap();
    let conf = conf.display().to_string();
    let e = message(&fails(&env, &["status", "--config", &conf], 2));
    assert!(e.contains("TGKNOCK_FOO") && e.contains("line 3"), "{e}");
    assert!(e.contains(&conf), "{e}");

    std::fs::write(&conf, "TGKNOCK_OPEN_FOR=15\n").unwrap();
    let e = message(&fails(&env, &["open", "--config", &conf], 2));
    assert!(
        e.contains("TGKNOCK_OPEN_FOR") && e.contains("line 1"),
        "{e}"
    );

    let missing = env.path("nowhere.conf").display().to_string();
    let e = message(&fails(&env, &["status", "--config", &missing], 2));
    assert!(e.contains(&missing), "{e}");

    env.set("TGKNOCK_MAX_AGE", "soon");
    let e = message(&fails(&env, &["check"], 2));
    assert!(e.contains("TGKNOCK_MAX_AGE"), "{e}");
    assert!(env.calls().is_empty(), "{}", env.calls());

    // The environment wins over the file.
    env.unset("TGKNOCK_MAX_AGE");
    std::fs::write(&conf, "TGKNOCK_OPEN_FOR=nonsense\n").unwrap();
    env.set("TGKNOCK_OPEN_FOR", "20m");
    let out = ok(&env, &["open", "--config", &conf]);
    assert!(out.lines().next().unwrap().ends_with("20 min"), "{out}");
}

#[test]
fn check_passes_against_the_fakes() {
    let env = Env::new();
    let out = ok(&env, &["check"]);
    assert!(out.contains("all checks passed"), "{out}");
    assert!(out.contains("@tgknock_test_bot"), "{out}");
    assert!(out.contains("rules for IPv4"), "{out}");
    assert!(out.contains("rules for IPv6"), "{out}");
    assert!(
        out.contains("-A TGKNOCK -p tcp -m tcp --dport 22 --tcp-flags FIN,SYN,RST,ACK SYN -m comment --comment tgknock-gate:ssh -j DROP"),
        "{out}"
    );
    assert!(!out.contains("[FAIL]"), "{out}");
    // check changes nothing.
    assert_eq!(env.restores(), 0, "{}", env.calls());
    assert!(env.rules(4).is_empty());
}

#[test]
fn a_rejected_token_exits_3() {
    let env = Env::new();
    env.api
        .set_token("7000000001:AAF-SomeOtherSecretSomeOtherSecret_1");
    let o = env.run(&["check"]);
    assert_eq!(code(&o), 3, "{}\n{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("[FAIL]"), "{}", stdout(&o));
    assert!(message(&stderr(&o)).contains("rejected"), "{}", stderr(&o));

    let o = env.run(&["whoami"]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));

    let mut d = env.spawn();
    let status = d.wait_exit(30);
    assert_eq!(status.code(), Some(3), "{}", d.output());
    assert!(
        d.output().contains("rejected the bot token"),
        "{}",
        d.output()
    );
    d.check_secret();
    assert!(env.api.requests("getUpdates").is_empty());
}

#[test]
fn whoami_lists_senders_without_consuming_messages() {
    let env = Env::new();
    env.api.say(OWNER, "hello");
    env.api.say(STRANGER, "/start");
    for _ in 0..2 {
        let out = ok(&env, &["whoami"]);
        assert!(out.contains("bot: @tgknock_test_bot"), "{out}");
        let owner = out
            .lines()
            .find(|l| l.contains(&format!("user id {OWNER}")))
            .unwrap_or_else(|| panic!("{out}"));
        assert!(owner.contains("allowed: yes"), "{owner}");
        let stranger = out
            .lines()
            .find(|l| l.contains(&format!("user id {STRANGER}")))
            .unwrap_or_else(|| panic!("{out}"));
        assert!(stranger.contains("allowed: no"), "{stranger}");
        assert_eq!(env.api.pending(), 2, "whoami consumed messages");
    }
    let polls = env.api.requests("getUpdates");
    assert_eq!(polls.len(), 2);
    for p in polls {
        assert!(p.body.get("offset").is_none(), "{}", p.body);
    }
    // The daemon still gets them: it answers the owner's later command.
    let _d = env.start();
    env.api.say(OWNER, "/status");
    env.api.wait_reply(OWNER, "ssh (22/tcp) closed", 20);
}

#[test]
fn a_token_file_others_can_read_gives_a_warning() {
    let mut env = Env::new();
    let file = env.path("token");
    std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    env.unset("TGKNOCK_TOKEN");
    env.set("TGKNOCK_TOKEN_FILE", &file.display().to_string());
    let out = ok(&env, &["check"]);
    let warn = out
        .lines()
        .find(|l| l.contains("chmod 600"))
        .unwrap_or_else(|| panic!("no warning:\n{out}"));
    assert!(warn.contains(&file.display().to_string()), "{warn}");
    assert!(
        out.contains("@tgknock_test_bot"),
        "the token from the file works"
    );

    let d = env.start();
    d.wait_log("chmod 600", 10);
    drop(d);

    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = ok(&env, &["check"]);
    assert!(!out.contains("chmod"), "{out}");
}

#[test]
fn ipv6_off_leaves_ip6tables_alone() {
    let mut env = Env::new();
    env.set("TGKNOCK_IP6TABLES", "off");
    ok(&env, &["open", "--for", "5m"]);
    assert!(!env.drops(4, "ssh") && env.rules(4).contains("-j TGKNOCK"));
    let text = ok(&env, &["status"]);
    assert!(text.contains("IPv6: not managed"), "{text}");
    let j = status_json(&env);
    assert_eq!(j["ipv6_managed"], false);
    assert_eq!(j["gates"][0]["families"]["ipv6"]["state"], "unmanaged");
    let out = ok(&env, &["check"]);
    assert!(out.contains("IPv6: not managed"), "{out}");
    assert!(!out.contains("rules for IPv6"), "{out}");
    ok(&env, &["close"]);
    ok(&env, &["teardown"]);
    let calls = env.calls();
    assert!(!calls.is_empty());
    assert!(!calls.contains("ip6tables"), "{calls}");
    assert!(env.rules(6).is_empty());
}

#[test]
fn a_firewall_failure_rolls_back_and_exits_1() {
    let env = Env::new();
    ok(&env, &["close"]);
    assert!(env.drops(4, "ssh") && env.drops(6, "ssh"));
    let v4 = env.rules(4);
    env.fail("ip6tables-restore", 4, LOCK_MESSAGE, false);
    let e = fails(&env, &["open"], 1);
    let m = message(&e);
    assert!(m.contains(LOCK_MESSAGE), "{e}");
    assert!(m.contains("ip6tables-restore"), "{m}");
    assert!(env.drops(4, "ssh"), "v4 rolled back:\n{}", env.rules(4));
    assert_eq!(env.rules(4), v4, "v4 as before");
    assert!(env.drops(6, "ssh"));
    assert!(env.openings().is_empty(), "{}", env.state());
    assert!(
        env.calls().contains("iptables-restore -w"),
        "v4 was changed and put back:\n{}",
        env.calls()
    );
    env.heal("ip6tables-restore");
    let out = ok(&env, &["open"]);
    assert!(out.starts_with("ssh (22/tcp) open to everyone"), "{out}");
    assert!(!env.drops(4, "ssh") && !env.drops(6, "ssh"));
}

#[test]
fn a_change_in_place_that_fails_is_made_again_by_refilling_the_chain() {
    let env = Env::new();
    ok(&env, &["close"]);
    // A small change is made in place (deleting and inserting by position); when the
    // chain changed under it (`iptables -F` at that moment) that fails, and the chain is
    // then declared afresh and refilled.
    env.fail(
        "iptables-restore",
        1,
        "iptables-restore: line 2 failed: index of insertion too big",
        true,
    );
    let before = env.restores();
    let out = ok(&env, &["open", "ssh", "--for", "1h"]);
    assert!(out.starts_with("ssh (22/tcp) open to everyone"), "{out}");
    assert!(!env.drops(4, "ssh") && !env.drops(6, "ssh"));
    let calls = env.calls();
    let restores: Vec<&str> = calls
        .lines()
        .filter(|l| l.starts_with("iptables-restore") || l.starts_with("ip6tables-restore"))
        .skip(before)
        .collect();
    assert_eq!(
        restores.len(),
        3,
        "in place (failed), refilled, IPv6:\n{calls}"
    );
}

#[test]
fn a_second_daemon_refuses_to_start() {
    let env = Env::new();
    let d = env.start();
    let e = fails(&env, &["run"], 1);
    assert!(message(&e).contains("another tgknock daemon"), "{e}");
    assert!(message(&e).contains(&d.pid().to_string()), "{e}");
    // The first one is unharmed.
    env.api.say(OWNER, "/status");
    env.api.wait_reply(OWNER, "ssh (22/tcp) closed", 20);
    let j = status_json(&env);
    assert_eq!(j["daemon_pid"].as_u64(), Some(u64::from(d.pid())));
}

#[test]
fn a_console_opening_is_closed_by_the_running_daemon() {
    let env = Env::new();
    let _d = env.start();
    let out = ok(&env, &["open", "--for", "2s"]);
    // What the console verified after the change; the daemon was told of the deadline.
    assert!(out.starts_with("ssh (22/tcp) open to everyone"), "{out}");
    assert!(!out.contains("no daemon"), "{out}");
    wait_for(10, "the daemon to close the console's opening", || {
        (env.drops(4, "ssh") && env.drops(6, "ssh")).then_some(())
    });
    wait_for(5, "the state to lose the opening", || {
        env.openings().is_empty().then_some(())
    });
}

/// A board whose token file is empty (just installed, or the token removed): the commands
/// that do not talk to Telegram still work — `teardown` above all, which removing the
/// package runs — while `run` and `check` refuse, naming the file.
#[test]
fn an_empty_token_file_stops_only_what_talks_to_telegram() {
    let mut env = Env::new();
    let token = env.path("token");
    std::fs::write(&token, "").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    env.unset("TGKNOCK_TOKEN")
        .set("TGKNOCK_TOKEN_FILE", &token.display().to_string());
    ok(&env, &["close"]);
    ok(&env, &["open", "--for", "5m"]);
    ok(&env, &["status"]);
    let out = ok(&env, &["teardown"]);
    assert!(out.contains("removed"), "{out}");
    for cmd in ["run", "whoami"] {
        let e = message(&fails(&env, &[cmd], 2));
        assert!(
            e.contains("TGKNOCK_TOKEN_FILE") && e.contains("does not hold a bot token"),
            "{cmd}: {e}"
        );
    }
    let o = env.run(&["check"]);
    assert_eq!(code(&o), 1, "{}", stdout(&o));
    assert!(stdout(&o).contains("[FAIL]") && stdout(&o).contains("TGKNOCK_TOKEN_FILE"));
}

/// Whether a process waits for the state lock now (`/proc/locks` shows a blocked lock,
/// `->`, on the lock file's inode).
fn waits_for_lock(env: &Env) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(ino) = std::fs::metadata(env.state_dir().join("lock")).map(|m| m.ino()) else {
        return false;
    };
    let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
    locks.lines().any(|l| {
        l.contains("->")
            && l.split_whitespace()
                .any(|w| w.rsplit(':').next() == Some(&ino.to_string()))
    })
}

/// `status` racing the daemon's reconcile at a start reads the state and the kernel as
/// one moment (under the state lock): it never compares the state from before the
/// reconcile with the rules from after it, and exits 1 only for a real mismatch, saying
/// what it is. The fake holds status's IPv4 listing while an opening runs out and a
/// daemon starts, whose reconcile closes it.
#[test]
fn status_racing_the_daemons_reconcile_sees_one_moment() {
    let env = Env::new();
    ok(&env, &["open", "ssh", "--for", "2s"]);
    env.hold("iptables");
    let status = env
        .command(&["status"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(20, "status's IPv4 listing held", || {
        env.held("iptables").then_some(())
    });
    // The opening runs out while status reads; a daemon starts.
    std::thread::sleep(Duration::from_secs(3));
    let d = env.spawn();
    wait_for(
        30,
        "the daemon's reconcile, or the daemon waiting for the lock",
        || (d.output().contains("firewall reconciled") || waits_for_lock(&env)).then_some(()),
    );
    env.release("iptables");
    let out = status.wait_with_output().unwrap();
    let (so, se) = (stdout(&out), stderr(&out));
    assert_eq!(code(&out), 0, "stdout:\n{so}\nstderr:\n{se}");
    assert!(!so.contains("MISMATCH"), "{so}");
    d.wait_log("firewall reconciled", 30);
    assert!(
        env.drops(4, "ssh") && env.drops(6, "ssh"),
        "{}",
        env.rules(4)
    );
    // A real mismatch (the rules flushed while the daemon waits for its next look) is
    // an exit 1 that says what it is.
    drop(d);
    std::fs::write(env.path("fw/v4/TGKNOCK"), "").unwrap();
    let o = env.run(&["status"]);
    assert_eq!(code(&o), 1, "{}", stdout(&o));
    assert!(stdout(&o).contains("MISMATCH"), "{}", stdout(&o));
    assert!(
        stderr(&o).contains("tgknock: status: the rules in the kernel are not what the saved state asks for: ssh: IPv4 shows"),
        "{}",
        stderr(&o)
    );
}
