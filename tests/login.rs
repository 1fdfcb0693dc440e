//! `tgknock notify-login`: the notice on `open_session`, silence otherwise, exit 0 whatever
//! happens (no `PAM_TYPE`, a broken config, a Telegram that hangs), and the same through a
//! real PAM stack (`pamtester` and `pam_exec`, as root).

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::env::{assert_no_secret, stderr};
use crate::support::netns::{is_root, skip};
use crate::support::{Env, OWNER, SECRET, TOKEN, wait_for};

const SECOND: i64 = 333_333_333;

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

fn notify(env: &Env, pam: &[(&str, &str)]) -> std::process::Output {
    let mut c = env.command(&["notify-login"]);
    c.env("RUST_LOG", "info");
    for (k, v) in pam {
        c.env(k, v);
    }
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A hang guard, not a speed test: the contract's 5 s is far below it.
    wait_for(30, "notify-login to finish", || child.try_wait().unwrap());
    let out = child.wait_with_output().unwrap();
    assert_no_secret(&String::from_utf8_lossy(&out.stdout));
    assert_no_secret(&String::from_utf8_lossy(&out.stderr));
    out
}

const SSH_LOGIN: &[(&str, &str)] = &[
    ("PAM_TYPE", "open_session"),
    ("PAM_USER", "ada"),
    ("PAM_RHOST", "203.0.113.7"),
    ("PAM_SERVICE", "sshd"),
    ("PAM_TTY", "ssh"),
];

#[test]
fn each_allowed_user_hears_of_a_login() {
    let mut env = Env::new();
    env.set("TGKNOCK_ALLOWED_USERS", &format!("{OWNER},{SECOND}"));
    let out = notify(&env, SSH_LOGIN);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let want = format!("login: ada from 203.0.113.7 (sshd) on {} at ", hostname());
    for user in [OWNER, SECOND] {
        let got = env.api.sent_to(user);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0].starts_with(&want) && got[0].ends_with(" UTC"),
            "{got:?}"
        );
    }
    // Other PAM calls say nothing.
    for kind in ["close_session", "auth", "account"] {
        let mut pam = SSH_LOGIN.to_vec();
        pam[0] = ("PAM_TYPE", kind);
        let out = notify(&env, &pam);
        assert_eq!(out.status.code(), Some(0));
        assert_eq!(stderr(&out), "");
    }
    assert_eq!(env.api.sent().len(), 2);
}

#[test]
fn no_pam_call_a_broken_config_or_a_hung_telegram_never_fail_a_login() {
    let mut env = Env::new();
    let out = notify(&env, &[]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("PAM_TYPE is not set"),
        "{}",
        stderr(&out)
    );

    env.set("TGKNOCK_OPEN_FOR", "15");
    let out = notify(&env, SSH_LOGIN);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("TGKNOCK_OPEN_FOR") && stderr(&out).contains("login notice not sent"),
        "{}",
        stderr(&out)
    );
    env.unset("TGKNOCK_OPEN_FOR");
    env.unset("TGKNOCK_ALLOWED_USERS");
    let out = notify(&env, SSH_LOGIN);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("TGKNOCK_ALLOWED_USERS"),
        "{}",
        stderr(&out)
    );
    assert!(env.api.sent().is_empty());

    // Telegram takes the request and never answers: the login goes on long before.
    env.set("TGKNOCK_ALLOWED_USERS", &OWNER.to_string());
    env.api.hang("sendMessage", Duration::from_secs(90));
    let t = std::time::Instant::now();
    let out = notify(&env, SSH_LOGIN);
    assert_eq!(out.status.code(), Some(0));
    let err = stderr(&out);
    assert!(
        err.contains("login notice not sent to 111111111: request timed out")
            || err.contains("did not answer within 4.5 s"),
        "{err}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(60),
        "it waited for the hang"
    );
    assert_eq!(env.api.requests("sendMessage").len(), 1);
}

/// A PAM service of the test's own in /etc/pam.d (pamtester reads nothing else), removed
/// when dropped.
struct Service(std::path::PathBuf);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn a_real_pam_stack_runs_it_and_logs_in_whatever_it_says() {
    if !is_root() {
        return skip("the PAM test writes a service file in /etc/pam.d: it needs root");
    }
    if Command::new("pamtester").arg("--version").output().is_err() {
        return skip("pamtester is not installed (apt-get install pamtester)");
    }
    let env = Env::new();
    let bin = std::env::var("TGKNOCK_TEST_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_tgknock").to_string());
    // pam_exec runs a path, not a name looked up in PATH.
    let runner: Vec<String> = std::env::var("TGKNOCK_TEST_RUNNER")
        .unwrap_or_default()
        .split_whitespace()
        .map(|w| {
            if w.contains('/') {
                return w.to_string();
            }
            std::env::var("PATH")
                .unwrap_or_default()
                .split(':')
                .map(|d| std::path::Path::new(d).join(w))
                .find(|p| p.is_file())
                .map_or(w.to_string(), |p| p.display().to_string())
        })
        .collect();
    let runner = runner.join(" ");
    // pam_exec gives its program PAM's environment only: the settings go in a file.
    let config = env.path("pam.conf");
    let mut text = String::new();
    for (k, v) in &env.vars {
        if k.starts_with("TGKNOCK_") && !v.is_empty() {
            text.push_str(&format!("{k}={v}\n"));
        }
    }
    std::fs::write(&config, text).unwrap();
    let log = env.path("pam.log");
    let pid = std::process::id();
    let run = |name: &str, config: &str| {
        let service = format!("tgknock-test-{pid}-{name}");
        let path = std::path::Path::new("/etc/pam.d").join(&service);
        // `required`, stricter than the README's `optional`: a failure would fail the login.
        std::fs::write(
            &path,
            format!(
                "auth required pam_permit.so\naccount required pam_permit.so\nsession required pam_exec.so quiet log={} {runner} {bin} notify-login --config {config}\n",
                log.display()
            ),
        )
        .unwrap();
        let _gone = Service(path);
        let out = Command::new("pamtester")
            .args(["-I", "rhost=198.51.100.23", "-I", "tty=pts/7"])
            .args([service.as_str(), "ada", "open_session", "close_session"])
            .output()
            .unwrap();
        (service, out)
    };

    let (service, out) = run("ok", config.to_str().unwrap());
    let said = String::from_utf8_lossy(&out.stdout).into_owned() + &stderr(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("successfully opened a session"), "{said}");
    let got = env.api.sent_to(OWNER);
    assert_eq!(got.len(), 1, "one notice, for the opening only: {got:?}");
    let want = format!(
        "login: ada from 198.51.100.23 ({service}) on {} at ",
        hostname()
    );
    assert!(got[0].starts_with(&want), "{got:?}");

    let (_, out) = run("broken", "/nonexistent/tgknock.conf");
    let said = String::from_utf8_lossy(&out.stdout).into_owned() + &stderr(&out);
    assert!(
        out.status.success(),
        "a broken config failed the login: {said}"
    );
    assert!(said.contains("successfully opened a session"), "{said}");
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        logged.contains("cannot read config file /nonexistent/tgknock.conf"),
        "{logged}"
    );
    assert!(!logged.contains(SECRET) && !logged.contains(TOKEN));
    assert_eq!(env.api.sent().len(), 1);
}
