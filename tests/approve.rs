//! `tgknock approve-login` against a running daemon and the fake Bot API: the question to
//! each allowed user with Allow and Deny buttons, exit 0 only on an allowed user's Allow,
//! exit 1 on Deny, on no answer in time, with no daemon, with no Telegram, and when the
//! daemon goes away while a login waits; a stranger's press and a late press change
//! nothing; exempt sources and users not asked about pass at once; several logins at once
//! each get their own question. Its input on the socket is untrusted. And the login
//! notice's Ban and Close buttons.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use crate::login::{config_file, hostname};
use crate::support::env::{assert_no_secret, command};
use crate::support::{Env, OWNER, wait_for};

const STRANGER: i64 = 999_999_999;

fn pam(user: &str, rhost: &str) -> Vec<(String, String)> {
    [
        ("PAM_TYPE", "account"),
        ("PAM_USER", user),
        ("PAM_RHOST", rhost),
        ("PAM_SERVICE", "sshd"),
        ("PAM_TTY", "ssh"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// `approve-login --config FILE` as pam_exec runs it: only the PAM items in its environment.
fn approve(config: &Path, pam: &[(String, String)]) -> Child {
    let mut c = command();
    c.args(["approve-login", "--config", config.to_str().unwrap()]);
    for (k, v) in pam {
        c.env(k, v);
    }
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for the end of an `approve-login`: its exit code and standard error.
fn finish(child: Child, secs: u64) -> (i32, String) {
    let mut child = child;
    wait_for(secs, "approve-login to finish", || {
        child.try_wait().unwrap()
    });
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_no_secret(&err);
    assert_no_secret(&String::from_utf8_lossy(&out.stdout));
    (out.status.code().unwrap_or(-1), err)
}

/// The `n`th (from 1) question to `chat` about `user`: its message id and its buttons'
/// (Allow, Deny) data.
fn question(env: &Env, chat: i64, user: &str, n: usize) -> (i64, String, String) {
    let needle = format!("allow login: {user} from ");
    wait_for(30, &format!("question {n} to {chat} about {user}"), || {
        let mut seen = 0;
        let mut sent = 0;
        for r in env.api.requests("sendMessage") {
            sent += 1;
            if r.body["chat_id"].as_i64() == Some(chat)
                && r.body["text"]
                    .as_str()
                    .is_some_and(|t| t.starts_with(&needle))
            {
                seen += 1;
                if seen == n {
                    let rows = crate::support::api::rows(&r.body["reply_markup"]);
                    assert_eq!(rows[0][0].0, "Allow");
                    assert_eq!(rows[0][1].0, "Deny");
                    return Some((sent, rows[0][0].1.clone(), rows[0][1].1.clone()));
                }
            }
        }
        None
    })
}

/// Waits for the answer to the press `query`; the text it showed the presser.
fn answered(env: &Env, query: &str) -> String {
    wait_for(30, &format!("an answer to press {query}"), || {
        env.api
            .answers()
            .into_iter()
            .find(|(q, _)| q == query)
            .map(|(_, t)| t.unwrap_or_default())
    })
}

/// Whether any copy of a question was edited to a text containing `needle`.
fn edited(env: &Env, needle: &str) -> bool {
    env.api.edits().iter().any(|(_, _, t)| t.contains(needle))
}

fn setup() -> (Env, PathBuf) {
    let mut env = Env::new();
    env.set("TGKNOCK_APPROVE_TIMEOUT", "60s");
    let config = config_file(&env);
    (env, config)
}

#[test]
fn an_allowed_users_allow_lets_the_login_in_and_the_question_says_so() {
    let (env, config) = setup();
    let _d = env.start();
    let child = approve(&config, &pam("ada", "203.0.113.7"));
    let (id, allow, _) = question(&env, OWNER, "ada", 1);
    let text = env.api.sent_to(OWNER).pop().unwrap();
    assert_eq!(
        text,
        format!(
            "allow login: ada from 203.0.113.7 (sshd) on {}?",
            hostname()
        )
    );
    env.api.press(OWNER, OWNER, id, &allow);
    let (code, err) = finish(child, 30);
    assert_eq!(code, 0, "{err}");
    let (m, t) = env.api.wait_edit(OWNER, "allowed by user111111111 at ", 20);
    assert_eq!(m, id);
    assert!(
        t.starts_with("login: ada from 203.0.113.7 (sshd) on "),
        "{t}"
    );
}

#[test]
fn deny_refuses_and_a_strangers_press_decides_nothing() {
    let (env, config) = setup();
    let _d = env.start();
    let child = approve(&config, &pam("ada", "203.0.113.7"));
    let (id, allow, deny) = question(&env, OWNER, "ada", 1);
    let q = env.api.press(STRANGER, OWNER, id, &allow);
    // The stranger's press is read (the poll after it) and changes nothing.
    wait_for(30, "the poll past the stranger's press", || {
        (env.api.pending() == 0).then_some(())
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    let mut child = child;
    assert!(
        child.try_wait().unwrap().is_none(),
        "a stranger's press decided"
    );
    assert!(env.api.answers().iter().all(|(a, _)| *a != q));
    env.api.press(OWNER, OWNER, id, &deny);
    let (code, err) = finish(child, 30);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("denied by user111111111"), "{err}");
    env.api.wait_edit(OWNER, ": denied by user111111111", 20);
    assert!(!edited(&env, "allowed"));
}

#[test]
fn a_press_after_the_outcome_changes_nothing() {
    let (env, config) = setup();
    let _d = env.start();
    let child = approve(&config, &pam("ada", "203.0.113.7"));
    let (id, allow, deny) = question(&env, OWNER, "ada", 1);
    env.api.press(OWNER, OWNER, id, &allow);
    assert_eq!(finish(child, 30).0, 0);
    env.api.wait_edit(OWNER, "allowed by", 20);
    let late = env.api.press(OWNER, OWNER, id, &deny);
    assert!(answered(&env, &late).contains("no longer waits"));
    assert!(!edited(&env, "denied"));
}

#[test]
fn no_answer_in_time_is_a_refusal_and_the_question_expires() {
    let (mut env, _) = setup();
    env.set("TGKNOCK_APPROVE_TIMEOUT", "2s");
    let config = config_file(&env);
    let _d = env.start();
    let child = approve(&config, &pam("ada", "203.0.113.7"));
    let (id, allow, _) = question(&env, OWNER, "ada", 1);
    let (code, err) = finish(child, 60);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("TGKNOCK_APPROVE_TIMEOUT"), "{err}");
    let (m, _) = env.api.wait_edit(OWNER, ": expired", 20);
    assert_eq!(m, id);
    // A press after that: answered, nothing decided.
    let late = env.api.press(OWNER, OWNER, id, &allow);
    assert!(answered(&env, &late).contains("no longer waits"));
    assert!(!edited(&env, "allowed"));
}

#[test]
fn no_daemon_no_telegram_no_login() {
    let (env, config) = setup();
    let (code, err) = finish(approve(&config, &pam("ada", "203.0.113.7")), 30);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot be reached"), "{err}");
    // The daemon runs, Telegram does not take the question.
    let _d = env.start();
    env.api
        .hang("sendMessage", std::time::Duration::from_secs(2));
    let (code, err) = finish(approve(&config, &pam("ada", "203.0.113.7")), 60);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("Telegram cannot be reached"), "{err}");
}

#[test]
fn a_daemon_that_goes_away_while_a_login_waits_refuses_it() {
    let (env, config) = setup();
    let mut d = env.start();
    let child = approve(&config, &pam("ada", "203.0.113.7"));
    question(&env, OWNER, "ada", 1);
    d.kill9();
    // TGKNOCK_APPROVE_TIMEOUT is 60 s: the end comes from the closed socket, not the clock.
    let start = std::time::Instant::now();
    let (code, err) = finish(child, 45);
    assert_eq!(code, 1, "{err}");
    assert!(start.elapsed() < std::time::Duration::from_secs(45));
    // The daemon again: a press on the old question decides nothing, and is answered.
    let _d = env.start();
    let (id, allow, _) = question(&env, OWNER, "ada", 1);
    let q = env.api.press(OWNER, OWNER, id, &allow);
    assert!(answered(&env, &q).contains("no longer waits"));
}

#[test]
fn exempt_sources_and_users_not_asked_about_pass_at_once() {
    let (mut env, _) = setup();
    env.set("TGKNOCK_ALWAYS_ALLOW", "192.168.7.0/24");
    env.set("TGKNOCK_APPROVE_USERS", "root,ada");
    let config = config_file(&env);
    // No daemon at all: these need none.
    let (code, err) = finish(approve(&config, &pam("ada", "192.168.7.9")), 30);
    assert_eq!(code, 0, "{err}");
    let (code, err) = finish(approve(&config, &pam("bob", "203.0.113.7")), 30);
    assert_eq!(code, 0, "{err}");
    assert!(env.api.requests("sendMessage").is_empty());
    // The user's own environment sets nothing: not an exemption, not a user list.
    let mut sneaky = pam("ada", "203.0.113.7");
    sneaky.insert(
        0,
        (
            "TGKNOCK_APPROVE_EXEMPT".into(),
            "0.0.0.0/1,128.0.0.0/1".into(),
        ),
    );
    sneaky.insert(0, ("TGKNOCK_APPROVE_USERS".into(), "nobody".into()));
    sneaky.insert(0, ("PAM_RHOST".into(), "192.168.7.9".into()));
    let (code, err) = finish(approve(&config, &sneaky), 30);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot be reached"), "{err}");
}

#[test]
fn two_logins_at_once_each_get_their_own_question() {
    let (env, config) = setup();
    let _d = env.start();
    let a = approve(&config, &pam("ada", "203.0.113.7"));
    let b = approve(&config, &pam("bob", "198.51.100.9"));
    let (ida, allow_a, _) = question(&env, OWNER, "ada", 1);
    let (idb, _, deny_b) = question(&env, OWNER, "bob", 1);
    assert_ne!(ida, idb);
    env.api.press(OWNER, OWNER, idb, &deny_b);
    env.api.press(OWNER, OWNER, ida, &allow_a);
    assert_eq!(finish(a, 30).0, 0);
    assert_eq!(finish(b, 30).0, 1);
    env.api
        .wait_edit(OWNER, "login: ada from 203.0.113.7 (sshd) on", 20);
    let edits = env.api.edits();
    assert!(
        edits
            .iter()
            .any(|(_, m, t)| *m == ida && t.contains("allowed by"))
    );
    assert!(
        edits
            .iter()
            .any(|(_, m, t)| *m == idb && t.contains("denied by"))
    );
}

#[test]
fn the_approval_socket_is_private_and_takes_no_nonsense() {
    use std::os::unix::fs::PermissionsExt;
    let (env, config) = setup();
    let _d = env.start();
    let sock = env.state_dir().join("approve.sock");
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let ask = |line: &[u8]| {
        let mut c = UnixStream::connect(&sock).unwrap();
        c.set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .unwrap();
        let _ = c.write_all(line);
        let mut s = String::new();
        let _ = c.read_to_string(&mut s);
        s
    };
    for bad in [
        &b"tgknock-approve 2 user=ada\n"[..],
        b"tgknock-approve 1 user=ada\0\n",
        b"tgknock-approve 1 user=ada decision=allow\n",
        &[b'x'; 4096],
    ] {
        let got = ask(bad);
        assert!(got.starts_with("deny bad request"), "{got:?}");
    }
    // Many idle connections: cut off in time, and a login after them is asked about.
    let idle: Vec<UnixStream> = (0..40)
        .filter_map(|_| UnixStream::connect(&sock).ok())
        .collect();
    std::thread::sleep(std::time::Duration::from_secs(6));
    drop(idle);
    let child = approve(&config, &pam("ada", "203.0.113.7"));
    let (id, allow, _) = question(&env, OWNER, "ada", 1);
    env.api.press(OWNER, OWNER, id, &allow);
    assert_eq!(finish(child, 30).0, 0);
    assert!(env.api.requests("sendMessage").len() == 1);
}

#[test]
fn the_login_notice_bans_its_source_and_closes_its_gate_with_a_press() {
    let (env, config) = setup();
    let _d = env.start();
    let mut c = command();
    c.args(["notify-login", "--config", config.to_str().unwrap()]);
    for (k, v) in [
        ("PAM_TYPE", "open_session"),
        ("PAM_USER", "ada"),
        ("PAM_RHOST", "203.0.113.7"),
        ("PAM_SERVICE", "sshd"),
    ] {
        c.env(k, v);
    }
    assert!(c.status().unwrap().success());
    let (id, rows) = env.api.keyboard_of(OWNER, "login: ada from 203.0.113.7");
    assert_eq!(
        rows,
        vec![vec![
            (
                "Ban 203.0.113.7 for a day".to_string(),
                "/ban 203.0.113.7 1d".to_string()
            ),
            ("Close ssh".to_string(), "/close ssh".to_string()),
        ]]
    );
    // A stranger's press bans nothing; the owner's does, as the typed command would.
    env.api.press(STRANGER, OWNER, id, "/ban 203.0.113.7 1d");
    env.api.press(OWNER, OWNER, id, "/ban 203.0.113.7 1d");
    wait_for(30, "the ban in the state", || {
        let st = env.state();
        st["bans"]
            .as_array()
            .filter(|b| b.len() == 1)
            .map(|b| b[0].clone())
    });
    env.api.say(OWNER, "/open ssh");
    wait_for(30, "ssh open", || {
        env.openings().contains_key("ssh").then_some(())
    });
    env.api.press(OWNER, OWNER, id, "/close ssh");
    wait_for(30, "ssh closed", || {
        (!env.openings().contains_key("ssh")).then_some(())
    });
}

#[test]
fn the_notices_ban_button_needs_the_second_factor_as_the_command_does() {
    let env = crate::second_factor::totp_env();
    let config = config_file(&env);
    let d = env.start();
    d.wait_log("second factor on", 10);
    let mut c = command();
    c.args(["notify-login", "--config", config.to_str().unwrap()]);
    c.env("PAM_TYPE", "open_session")
        .env("PAM_USER", "ada")
        .env("PAM_RHOST", "203.0.113.7")
        .env("PAM_SERVICE", "sshd");
    assert!(c.status().unwrap().success());
    let (id, rows) = env.api.keyboard_of(OWNER, "login: ada from 203.0.113.7");
    assert_eq!(rows[0][0].1, "/ban 203.0.113.7 1d");
    env.api.press(OWNER, OWNER, id, "/ban 203.0.113.7 1d");
    env.api
        .wait_reply(OWNER, "A code is needed to ban 203.0.113.7", 30);
    assert!(env.state()["bans"].as_array().is_none_or(|b| b.is_empty()));
    env.api.say(
        OWNER,
        &crate::second_factor::code_at(crate::second_factor::step()),
    );
    wait_for(30, "the ban after the code", || {
        env.state()["bans"]
            .as_array()
            .filter(|b| b.len() == 1)
            .cloned()
    });
}

/// Needs the host's root (another user through setpriv): skipped in tests/cross.sh.
#[test]
fn another_user_is_refused_by_its_credentials_even_through_an_open_socket() {
    use std::os::unix::fs::PermissionsExt;
    if !crate::support::netns::is_root() {
        crate::support::netns::skip("switching to another user needs root");
        return;
    }
    if std::process::Command::new("setpriv")
        .arg("--help")
        .output()
        .is_err()
    {
        crate::support::netns::skip("setpriv (util-linux) is missing");
        return;
    }
    let (env, config) = setup();
    let _d = env.start();
    let sock = env.state_dir().join("approve.sock");
    // Past the file permissions, which would stop it first: only SO_PEERCRED is left.
    for (p, mode) in [(&sock, 0o666), (&env.state_dir(), 0o755), (&config, 0o644)] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let bin = std::env::var("TGKNOCK_TEST_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_tgknock").to_string());
    let mut c = std::process::Command::new("setpriv");
    c.args([
        "--reuid",
        "65534",
        "--regid",
        "65534",
        "--clear-groups",
        "--",
    ])
    .arg(bin)
    .args(["approve-login", "--config", config.to_str().unwrap()]);
    c.env_clear();
    for (k, v) in pam("ada", "203.0.113.7") {
        c.env(k, v);
    }
    let out = c.stdin(Stdio::null()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("user 65534 may not ask"), "{err}");
    assert!(env.api.requests("sendMessage").is_empty());
}

/// Review: the client believed whatever answered at the socket path. With the state
/// directory set by mistake where anyone may make directories (under /tmp), another user
/// made it first, planted a heartbeat-less socket that answers "allow", and root's
/// approve-login let the login in. Now an answer counts only from root, or from the owner
/// of a directory nobody else could have made. Needs the host's root (a server run as
/// nobody): skipped in tests/cross.sh.
#[test]
fn a_socket_planted_by_another_user_is_never_believed() {
    use std::os::unix::fs::{PermissionsExt, chown};
    use std::os::unix::process::CommandExt;
    if !crate::support::netns::is_root() {
        crate::support::netns::skip("a server run as another user needs root");
        return;
    }
    let python = Path::new("/usr/bin/python3");
    if !python.exists() {
        crate::support::netns::skip("/usr/bin/python3 is missing (tests/setup.sh installs it)");
        return;
    }
    let mut env = Env::new();
    // A world-writable, sticky directory, as /tmp is; in it, the "state directory" that
    // user nobody made.
    let open = env.dir.join("tmp");
    std::fs::create_dir_all(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let state = open.join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    chown(&state, Some(65534), Some(65534)).unwrap();
    env.set("TGKNOCK_STATE_DIR", state.to_str().unwrap());
    let config = config_file(&env);
    let sock = state.join("approve.sock");
    let server = "import socket,sys\n\
        s=socket.socket(socket.AF_UNIX)\n\
        s.bind(sys.argv[1]); s.listen(4)\n\
        while True:\n\
        \x20   c,_=s.accept(); c.recv(600); c.sendall(b'allow planted\\n'); c.close()\n";
    let mut fake = std::process::Command::new(python)
        .args(["-c", server, sock.to_str().unwrap()])
        .uid(65534)
        .gid(65534)
        .env_clear()
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(10, "the planted socket", || sock.exists().then_some(()));
    let (code, err) = finish(approve(&config, &pam("root", "203.0.113.7")), 60);
    let _ = fake.kill();
    let _ = fake.wait();
    assert_eq!(
        code, 1,
        "a planted socket's 'allow' let the login in: {err}"
    );
    assert!(err.contains("is not tgknock's daemon"), "{err}");
}
