//! `tgknock notify-login`: the notice on `open_session`, silence otherwise, exit 0 whatever
//! happens (no `PAM_TYPE`, a broken config, a Telegram that hangs), and the same through a
//! real PAM stack (`pamtester` and `pam_exec`, as root). Its environment is the logging-in
//! user's (pam_env reads `~/.pam_environment`): it takes no setting from there, and a
//! config file others could write is refused.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::env::{assert_no_secret, coverage_env, stderr};
use crate::support::netns::{is_root, skip};
use crate::support::{Env, FakeApi, OWNER, SECRET, TOKEN, wait_for};

const SECOND: i64 = 333_333_333;

pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

/// The test's settings as pam_exec's program finds them: in a config file (mode 0600),
/// never in its environment.
pub(crate) fn config_file(env: &Env) -> PathBuf {
    let config = env.path("notify.conf");
    let mut text = String::new();
    for (k, v) in &env.vars {
        if k.starts_with("TGKNOCK_") && !v.is_empty() {
            text.push_str(&format!("{k}={v}\n"));
        }
    }
    let _ = std::fs::remove_file(&config);
    std::fs::create_dir_all(&env.dir).unwrap();
    // Run as root, notify-login trusts a directory only its owner can write (whatever the
    // umask of the test run).
    std::fs::set_permissions(&env.dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(&config, text).unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    config
}

/// `notify-login --config FILE` with only `pam` (and whatever else the caller adds) in its
/// environment, as pam_exec runs it.
fn notify_with(config: &Path, pam: &[(&str, &str)]) -> std::process::Output {
    let mut c = crate::support::env::command();
    c.args(["notify-login", "--config", config.to_str().unwrap()]);
    c.env("RUST_LOG", "info");
    for (k, v) in pam {
        c.env(k, v);
    }
    // A runaway read (`/dev/zero` as the token file) must not take the machine's memory.
    if std::env::var("TGKNOCK_TEST_RUNNER")
        .unwrap_or_default()
        .is_empty()
    {
        let mut wrapped = Command::new("sh");
        wrapped
            .arg("-c")
            .arg("ulimit -v 1048576; exec \"$0\" \"$@\"")
            .arg(c.get_program())
            .args(c.get_args());
        for (k, v) in c.get_envs() {
            match v {
                Some(v) => wrapped.env(k, v),
                None => wrapped.env_remove(k),
            };
        }
        c = wrapped;
    }
    let mut child = c
        .stdin(Stdio::null())
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

fn notify(env: &Env, pam: &[(&str, &str)]) -> std::process::Output {
    notify_with(&config_file(env), pam)
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
    let mut runner = runner.join(" ");
    // Under `make coverage`, the profile's path too: PAM's environment has nothing else.
    if let Some(profile) = coverage_env() {
        runner = format!("/usr/bin/env {profile} {runner}");
    }
    // pam_exec gives its program PAM's environment only: the settings go in a file.
    let config = env.path("pam.conf");
    let mut text = String::new();
    for (k, v) in &env.vars {
        if k.starts_with("TGKNOCK_") && !v.is_empty() {
            text.push_str(&format!("{k}={v}\n"));
        }
    }
    std::fs::set_permissions(&env.dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(&config, text).unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    let log = env.path("pam.log");
    let pid = std::process::id();
    // What the logging-in user can put in the PAM environment (pam_env reads it from
    // ~/.pam_environment on stock Debian): pam_exec hands it over before the real items.
    let planted = env.path("planted.env");
    std::fs::write(
        &planted,
        "PAM_TYPE=close_session\nPAM_RHOST=203.0.113.66\nPAM_USER=nobody-real\nRUST_MIN_STACK=999999999999999\n",
    )
    .unwrap();
    let run = |name: &str, config: &str| {
        let service = format!("tgknock-test-{pid}-{name}");
        let path = std::path::Path::new("/etc/pam.d").join(&service);
        let user_env = if name == "planted" {
            format!(
                "session required pam_env.so readenv=1 envfile={}\n",
                planted.display()
            )
        } else {
            String::new()
        };
        // `required`, stricter than the README's `optional`: a failure would fail the login.
        std::fs::write(
            &path,
            format!(
                "auth required pam_permit.so\naccount required pam_permit.so\n{user_env}session required pam_exec.so quiet log={} {runner} {bin} notify-login --config {config}\n",
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

    // Found by review: the user's own PAM_TYPE came first in the environment and silenced
    // the notice; a PAM_RHOST of theirs was shown instead of the real one; RUST_MIN_STACK
    // made the first thread abort the process (no notice, and not exit 0).
    let (service, out) = run("planted", config.to_str().unwrap());
    let said = String::from_utf8_lossy(&out.stdout).into_owned() + &stderr(&out);
    assert!(out.status.success(), "{said}");
    let got = env.api.sent_to(OWNER);
    assert_eq!(
        got.len(),
        2,
        "the user's PAM_TYPE=close_session silenced the notice: {got:?}\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let want = format!(
        "login: ada from 198.51.100.23 ({service}) on {} at ",
        hostname()
    );
    assert!(
        got[1].starts_with(&want),
        "the user's items were shown: {got:?}"
    );
}

/// A listener of the attacker's: records every byte anyone sends it, answers nothing.
struct Sink {
    port: u16,
    got: Arc<Mutex<Vec<u8>>>,
}

impl Sink {
    fn start() -> Sink {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(mut conn) = conn else { continue };
                let g = g.clone();
                std::thread::spawn(move || {
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = conn.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        g.lock().unwrap().extend_from_slice(&buf[..n]);
                    }
                    let _ = conn.write_all(b"");
                });
            }
        });
        Sink { port, got }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.got.lock().unwrap()).into_owned()
    }
}

/// The exploit of issue 15: a local user's `~/.pam_environment` sets what pam_exec hands
/// to notify-login. Each hostile variable alone; the token never reaches the attacker,
/// and the notice goes where the config file says, to whom it says.
#[test]
fn the_logging_in_users_environment_changes_nothing() {
    let env = Env::new();
    let config = config_file(&env);
    let sink = Sink::start();
    // A second fake Bot API, the attacker's: it would answer like Telegram.
    let fake = FakeApi::start();
    let ca = env.path("evil-ca.pem");
    std::fs::write(&ca, "not a certificate\n").unwrap();
    let ca = ca.display().to_string();
    let hostile: Vec<(&str, String)> = vec![
        ("TGKNOCK_API_URL", sink.url()),
        ("TGKNOCK_API_URL", fake.url()),
        ("HTTPS_PROXY", sink.url()),
        ("https_proxy", sink.url()),
        ("ALL_PROXY", sink.url()),
        ("TGKNOCK_PROXY", sink.url()),
        ("TGKNOCK_CA_FILE", ca.clone()),
        ("TGKNOCK_ALLOWED_USERS", "666666666".into()),
        ("TGKNOCK_TOKEN_FILE", "/dev/zero".into()),
        (
            "TGKNOCK_TOKEN",
            "7000000002:AAF-OtherSecretOtherSecretOther_x9".into(),
        ),
        ("TGKNOCK_NO_SUCH_KEY", "1".into()),
        ("RUST_LOG", "trace".into()),
    ];
    let mut notices = 0;
    for (key, value) in &hostile {
        let mut pam: Vec<(&str, &str)> = SSH_LOGIN.to_vec();
        pam.push((key, value.as_str()));
        let out = notify_with(&config, &pam);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(0), "{key}={value}: {err}");
        let stolen = sink.text();
        assert!(
            !stolen.contains(SECRET) && stolen.is_empty(),
            "{key}={value}: the attacker's listener got: {}",
            stolen.replace(SECRET, "<THE TOKEN'S SECRET>")
        );
        assert!(fake.requests("sendMessage").is_empty(), "{key}={value}");
        assert!(env.api.sent_to(666_666_666).is_empty(), "{key}={value}");
        notices += 1;
        assert_eq!(
            env.api.sent_to(OWNER).len(),
            notices,
            "{key}={value}: the notice did not reach the allowed user by the configured API: {err}"
        );
        assert!(fake.requests("getMe").is_empty(), "{key}={value}");
    }
}

/// Run as root, notify-login reads only a config file that is root's and that no one else
/// can write (nor the directory it is in): another one is refused, saying why, and the
/// login goes on.
#[test]
fn a_config_file_others_could_write_is_refused() {
    if !is_root() {
        return skip("the config file's owner is checked when notify-login runs as root");
    }
    let env = Env::new();
    let config = config_file(&env);
    for (mode, why) in [
        (0o620, "writable by its group"),
        (0o606, "writable by everyone"),
    ] {
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(mode)).unwrap();
        let out = notify_with(&config, SSH_LOGIN);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(0), "{err}");
        assert!(
            err.contains(&config.display().to_string()) && err.contains(why),
            "{mode:o}: {err}"
        );
        assert!(err.contains("login notice not sent"), "{err}");
    }
    assert!(env.api.sent().is_empty());
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = notify_with(&config, SSH_LOGIN);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(env.api.sent_to(OWNER).len(), 1, "{}", stderr(&out));
}

/// A config file (or its directory) owned by another user than root is refused.
#[test]
fn a_config_file_not_roots_is_refused() {
    if !is_root() {
        return skip("the config file's owner is checked when notify-login runs as root");
    }
    let env = Env::new();
    let config = config_file(&env);
    std::os::unix::fs::chown(&config, Some(65534), None).unwrap();
    let out = notify_with(&config, SSH_LOGIN);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains(&config.display().to_string()) && err.contains("not owned by root"),
        "{err}"
    );
    std::os::unix::fs::chown(&config, Some(0), None).unwrap();
    let dir = config.parent().unwrap();
    std::os::unix::fs::chown(dir, Some(65534), None).unwrap();
    let out = notify_with(&config, SSH_LOGIN);
    let err = stderr(&out);
    std::os::unix::fs::chown(dir, Some(0), None).unwrap();
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains(&dir.display().to_string()) && err.contains("not owned by root"),
        "{err}"
    );
    assert!(env.api.sent().is_empty());
}
