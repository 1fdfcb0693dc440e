//! `tgknock approve-login`, for `pam_exec` in sshd's account phase (`account required
//! pam_exec.so quiet /usr/bin/tgknock approve-login`): asks the running daemon, over its
//! socket, to ask the allowed users whether this login may go on, and waits for the
//! answer. Exit 0 only on an allowed user's Allow, or at once for a login that needs no
//! approval (`TGKNOCK_APPROVE_EXEMPT`, `TGKNOCK_APPROVE_USERS`); exit 1 on anything else —
//! Deny, no answer in time, no daemon, no Telegram, a broken config: it fails closed.
//!
//! Like `notify-login`, it takes no setting from its environment (the logging-in user's):
//! only the PAM items, read the way `notify-login` reads them, then the environment is
//! cleared; the rest comes from the config file, loaded as `notify-login` loads it.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::chat::approve::{Answer, MAX_LINE, Request};
use crate::cli::login::{Pam, item};
use crate::store::config::Config;
use crate::store::state::Paths;

/// How much longer than `TGKNOCK_APPROVE_TIMEOUT` the client waits for the daemon's answer
/// (the daemon's own timeout decides; this only ends a wait on a daemon that hangs).
const MARGIN: Duration = Duration::from_secs(30);

/// `tgknock approve-login`: 0 to let the login go on, 1 to refuse it.
pub(crate) fn run(config: Option<&Path>) -> i32 {
    // The environment is the logging-in user's: its PAM items are read, then nothing of it
    // is left for what follows to read.
    let pam = Pam::from_env();
    crate::os::sys::clear_environment();
    match decide(&pam, config) {
        Ok(why) => {
            log::info!("login allowed: {why}");
            0
        }
        Err(why) => {
            eprintln!(
                "tgknock approve-login: login refused: {}",
                crate::os::logging::redact(&why)
            );
            1
        }
    }
}

/// The request for this PAM call, or why there is none to make.
pub(crate) fn request(pam: &Pam) -> Result<Option<Request>, String> {
    let Some(kind) = &pam.kind else {
        return Err("PAM_TYPE is not set, so this is not a call from pam_exec (the PAM line is: account required pam_exec.so quiet /usr/bin/tgknock approve-login)".into());
    };
    // Closing a session or changing a password is no login to approve.
    if matches!(kind.as_str(), "close_session" | "password") {
        return Ok(None);
    }
    let user = item(&pam.user, "");
    if user.is_empty() {
        return Err("PAM_USER is not set".into());
    }
    let opt = |v: &Option<String>| Some(item(v, "")).filter(|s| !s.is_empty());
    Ok(Some(Request {
        user,
        rhost: opt(&pam.rhost),
        service: opt(&pam.service),
        tty: opt(&pam.tty),
    }))
}

fn decide(pam: &Pam, config: Option<&Path>) -> Result<String, String> {
    let Some(req) = request(pam)? else {
        return Ok(format!(
            "PAM_TYPE={} needs no approval",
            pam.kind.as_deref().unwrap_or("")
        ));
    };
    // The environment is the logging-in user's: only the config file is trusted.
    let cfg = Config::load_trusted(config).map_err(|e| e.to_string())?;
    if let Some(why) = cfg.approve.exempt(&req.user, req.rhost.as_deref()) {
        return Ok(why);
    }
    let paths = Paths::new(&cfg.files.state_dir);
    let socket = paths.approve_found();
    let wait = Duration::from_secs(cfg.approve.timeout) + MARGIN;
    match ask(&socket, &req, wait)? {
        Answer::Allow(why) => Ok(why),
        Answer::Deny(why) => Err(why),
    }
}

/// Sends `req` to the daemon at `socket` and reads its answer within `wait`.
pub(crate) fn ask(socket: &Path, req: &Request, wait: Duration) -> Result<Answer, String> {
    let mut conn = UnixStream::connect(socket).map_err(|e| {
        format!(
            "the daemon cannot be reached at {} ({e}); is tgknock running?",
            socket.display()
        )
    })?;
    trusted_server(socket, &conn)?;
    let wrote = conn
        .set_write_timeout(Some(Duration::from_secs(5)))
        .and_then(|()| conn.write_all(req.line().as_bytes()));
    if let Err(e) = wrote {
        // The daemon may have refused the connection before reading it, and said why.
        return match read_answer(&mut conn, Duration::from_secs(2)) {
            Ok(Answer::Deny(why)) if !why.is_empty() => Ok(Answer::Deny(why)),
            _ => Err(format!("the daemon did not take the request: {e}")),
        };
    }
    read_answer(&mut conn, wait)
}

/// Whether the process listening at `socket` may decide logins: root, or the owner of the
/// directory that holds the socket when nobody else could have made that directory (its
/// parent is root's and writable by root only, and it is writable by its owner only). A
/// state directory set by mistake under `/tmp` is someone's to plant a socket in that
/// answers "allow": that answer is never believed.
fn trusted_server(socket: &Path, conn: &UnixStream) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let uid = crate::os::sys::peer_uid(conn)
        .map_err(|e| format!("the daemon's credentials cannot be read: {e}"))?;
    if uid == 0 {
        return Ok(());
    }
    let untrusted = || {
        format!(
            "the process at {} (user {uid}) is not tgknock's daemon: refusing its answer",
            socket.display()
        )
    };
    let dir = socket.parent().ok_or_else(untrusted)?;
    let parent = dir.parent().ok_or_else(untrusted)?;
    let (d, p) = match (std::fs::metadata(dir), std::fs::metadata(parent)) {
        (Ok(d), Ok(p)) => (d, p),
        _ => return Err(untrusted()),
    };
    let sound = d.uid() == uid && d.mode() & 0o022 == 0 && p.uid() == 0 && p.mode() & 0o022 == 0;
    if sound { Ok(()) } else { Err(untrusted()) }
}

/// Reads the daemon's answer line within `wait`.
fn read_answer(conn: &mut UnixStream, wait: Duration) -> Result<Answer, String> {
    let until = Instant::now() + wait;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 256];
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("the daemon did not answer in time".into());
        }
        let _ = conn.set_read_timeout(Some(left));
        match conn.read(&mut chunk) {
            // The daemon ended (a restart) without answering: a refusal, not a hang.
            Ok(0) => return Ok(Answer::parse(&buf)),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("no answer from the daemon: {e}")),
        }
        if buf.contains(&b'\n') || buf.len() > MAX_LINE {
            return Ok(Answer::parse(&buf));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pam(kind: &str) -> Pam {
        Pam {
            kind: Some(kind.into()),
            user: Some("ada".into()),
            rhost: Some("203.0.113.7".into()),
            service: Some("sshd".into()),
            tty: None,
        }
    }

    #[test]
    fn the_request_is_the_pam_items_as_shown() {
        let r = request(&pam("account")).unwrap().unwrap();
        assert_eq!(r.user, "ada");
        assert_eq!(r.rhost.as_deref(), Some("203.0.113.7"));
        assert_eq!(r.tty, None);
        assert_eq!(request(&pam("close_session")), Ok(None));
        assert!(request(&Pam::default()).unwrap_err().contains("PAM_TYPE"));
        let nobody = Pam {
            user: None,
            ..pam("account")
        };
        assert!(request(&nobody).unwrap_err().contains("PAM_USER"));
        let sneaky = Pam {
            rhost: Some("evil\u{202e}\n".into()),
            ..pam("account")
        };
        assert_eq!(
            request(&sneaky).unwrap().unwrap().rhost.as_deref(),
            Some("evil")
        );
    }

    #[test]
    fn a_daemon_that_closes_without_answering_is_a_refusal() {
        let dir = std::env::temp_dir().join(format!("tgknock-approve-unit-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("approve.sock");
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let t = std::thread::spawn(move || {
            let (mut c, _) = listener.accept().unwrap();
            let mut b = [0u8; 64];
            let _ = c.read(&mut b);
            // Ends without a word, as a daemon that stops does.
        });
        let req = request(&pam("account")).unwrap().unwrap();
        let a = ask(&path, &req, Duration::from_secs(30)).unwrap();
        assert!(matches!(a, Answer::Deny(_)), "{a:?}");
        t.join().unwrap();
        let _ = std::fs::remove_file(&path);
        let e = ask(&path, &req, Duration::from_secs(30)).unwrap_err();
        assert!(e.contains("cannot be reached"), "{e}");
        let _ = std::fs::remove_dir(&dir);
    }
}
