//! `tgknock notify-login`, for `pam_exec` (`session optional pam_exec.so quiet
//! /usr/bin/tgknock notify-login`): on `PAM_TYPE=open_session` it tells each allowed user
//! "login: USER from RHOST (SERVICE) on HOST at HH:MM UTC".
//!
//! A login must never fail or wait because of tgknock: it exits 0 whatever happens — a
//! broken config, Telegram down or hanging — within [`BUDGET`], and says on standard error
//! why it sent nothing.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::base::duration;
use crate::chat::telegram::BotApi;
use crate::store::config::Config;

/// The whole run, sends included; a watchdog thread ends the process at this point.
const BUDGET: Duration = Duration::from_millis(4500);

/// What `pam_exec` tells its program, in the environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Pam {
    pub(crate) kind: Option<String>,
    pub(crate) user: Option<String>,
    pub(crate) rhost: Option<String>,
    pub(crate) service: Option<String>,
    pub(crate) tty: Option<String>,
}

impl Pam {
    /// The PAM items among `vars`, in the order of the process's environment. pam_exec
    /// hands over the PAM environment (the logging-in user's own `~/.pam_environment`
    /// through pam_env) and then appends the real items, `PAM_TYPE` last: where a name
    /// comes twice, the last is pam_exec's and the earlier one the user's, so the last
    /// wins (a `PAM_TYPE=close_session` of the user's never silences a notice).
    fn from_vars(vars: impl IntoIterator<Item = (std::ffi::OsString, std::ffi::OsString)>) -> Pam {
        let mut pam = Pam::default();
        for (k, v) in vars {
            let Some(v) = v.into_string().ok().filter(|v| !v.is_empty()) else {
                continue;
            };
            let slot = match k.to_str() {
                Some("PAM_TYPE") => &mut pam.kind,
                Some("PAM_USER") => &mut pam.user,
                Some("PAM_RHOST") => &mut pam.rhost,
                Some("PAM_SERVICE") => &mut pam.service,
                Some("PAM_TTY") => &mut pam.tty,
                _ => continue,
            };
            *slot = Some(v);
        }
        pam
    }

    pub(crate) fn from_env() -> Pam {
        Pam::from_vars(std::env::vars_os())
    }
}

/// A PAM item as shown: a remote host name comes from reverse DNS, so anything; no
/// control, bidirectional or zero-width characters, at most 64 characters.
pub(crate) fn item(v: &Option<String>, missing: &str) -> String {
    match v {
        Some(v) => v
            .chars()
            .filter(|c| crate::base::text::shown(*c))
            .take(64)
            .collect(),
        None => missing.to_string(),
    }
}

/// The notice for this PAM call: `Ok(None)` when it is not a session opening; an error
/// when this is no PAM call at all.
pub(crate) fn notice(pam: &Pam, host: &str, now: u64) -> Result<Option<String>, String> {
    let Some(kind) = &pam.kind else {
        return Err(
            "PAM_TYPE is not set, so this is not a call from pam_exec; nothing sent (the PAM line is: session optional pam_exec.so quiet /usr/bin/tgknock notify-login)"
                .into(),
        );
    };
    if kind != "open_session" {
        return Ok(None);
    }
    let from = match (&pam.rhost, &pam.tty) {
        (Some(_), _) => item(&pam.rhost, ""),
        (None, Some(_)) => item(&pam.tty, ""),
        (None, None) => "this board".into(),
    };
    Ok(Some(format!(
        "login: {} from {from} ({}) on {host} at {}",
        item(&pam.user, "?"),
        item(&pam.service, "?"),
        duration::utc_short(now, now)
    )))
}

/// The board's name.
pub(crate) fn hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| {
            std::fs::read_to_string(p)
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        })
        .map(|h| item(&Some(h), ""))
        .unwrap_or_else(|| "this board".into())
}

/// `tgknock notify-login`: always 0.
pub(crate) fn run(config: Option<&Path>) -> i32 {
    let start = Instant::now();
    // The environment is the logging-in user's: its PAM items are read, then nothing of it
    // is left for what follows (the standard library's threads, the tools) to read.
    let pam = Pam::from_env();
    crate::os::sys::clear_environment();
    // Whatever happens below, the login goes on within the budget.
    let _ = std::thread::Builder::new()
        .name("deadline".into())
        .spawn(move || {
            std::thread::sleep(BUDGET.saturating_sub(start.elapsed()));
            eprintln!(
                "tgknock notify-login: Telegram did not answer within {} s; going on without the notice",
                crate::base::duration::tenths(BUDGET)
            );
            std::process::exit(0);
        });
    if let Err(why) = send(&pam, config, start) {
        eprintln!("tgknock notify-login: {}", crate::os::logging::redact(&why));
    }
    0
}

fn send(pam: &Pam, config: Option<&Path>, start: Instant) -> Result<(), String> {
    let Some(text) = notice(pam, &hostname(), crate::os::clock::now())? else {
        return Ok(());
    };
    // The environment is the logging-in user's: only the config file is trusted.
    let cfg = Config::load_trusted(config).map_err(|e| format!("{e}; login notice not sent"))?;
    let token = cfg
        .require_bot()
        .map_err(|e| format!("{e}; login notice not sent"))?;
    crate::os::logging::add_secret(token.expose());
    let api = BotApi::new(&cfg.telegram, token).map_err(|e| e.to_string())?;
    let keyboard = notice_keyboard(&cfg, pam);
    let mut failed = Vec::new();
    for &user in &cfg.telegram.allowed_users {
        let left = BUDGET
            .saturating_sub(start.elapsed())
            .saturating_sub(Duration::from_millis(300));
        if let Err(e) = api.send_message_within(user.chat(), &text, keyboard.as_ref(), left) {
            failed.push(format!("to {user}: {e}"));
        }
    }
    if failed.is_empty() {
        log::debug!("login notice sent: {text}");
        Ok(())
    } else {
        Err(format!("login notice not sent {}", failed.join("; ")))
    }
}

/// The notice's buttons: ban its remote address for a day, close the gate it came through
/// (for sshd the gate that holds 22/tcp, else the first gate). A press is the command
/// `/ban ADDR 1d` or `/close GATE` from the presser, with the command's authorization and
/// second factor.
fn notice_keyboard(cfg: &Config, pam: &Pam) -> Option<serde_json::Value> {
    let ssh = cfg.gates.iter().find(|g| {
        g.ports
            .iter()
            .any(|p| p.proto.as_str() == "tcp" && p.first <= 22 && 22 <= p.last)
    });
    let gate = match pam.service.as_deref() {
        Some("sshd") => ssh.or(cfg.gates.first()),
        _ => cfg.gates.first(),
    };
    let rhost = pam.rhost.as_deref().map(str::trim);
    crate::chat::approve::notice_keyboard(rhost, gate.map(|g| g.name.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn pam(kind: Option<&str>) -> Pam {
        Pam {
            kind: kind.map(String::from),
            user: Some("ada".into()),
            rhost: Some("203.0.113.7".into()),
            service: Some("sshd".into()),
            tty: Some("ssh".into()),
        }
    }

    #[test]
    fn a_session_opening_is_told() {
        assert_eq!(
            notice(&pam(Some("open_session")), "pi", NOW)
                .unwrap()
                .unwrap(),
            format!(
                "login: ada from 203.0.113.7 (sshd) on pi at {}",
                duration::utc_short(NOW, NOW)
            )
        );
        let local = Pam {
            rhost: None,
            tty: Some("tty1".into()),
            service: Some("login".into()),
            ..pam(Some("open_session"))
        };
        assert!(
            notice(&local, "pi", NOW)
                .unwrap()
                .unwrap()
                .starts_with("login: ada from tty1 (login) on pi at ")
        );
        let sneaky = Pam {
            rhost: Some("evil\u{202e}moc.example\n\u{7}".into()),
            ..pam(Some("open_session"))
        };
        let n = notice(&sneaky, "pi", NOW).unwrap().unwrap();
        assert!(
            n.starts_with("login: ada from evilmoc.example (sshd)"),
            "{n}"
        );
    }

    #[test]
    fn other_pam_calls_say_nothing_and_no_pam_call_is_an_error() {
        for kind in ["close_session", "auth", "account", "password"] {
            assert_eq!(notice(&pam(Some(kind)), "pi", NOW), Ok(None), "{kind}");
        }
        let e = notice(&pam(None), "pi", NOW).unwrap_err();
        assert!(e.starts_with("PAM_TYPE is not set"), "{e}");
    }
}
