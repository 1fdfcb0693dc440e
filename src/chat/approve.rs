//! `approve-login`'s words: the request `tgknock approve-login` sends the daemon over its
//! socket and the daemon's answer (a tiny versioned line protocol whose input is
//! untrusted), the question the allowed users get with its Allow and Deny buttons, the
//! outcome the question is edited to, and the login notice's Ban and Close buttons.
//!
//! The request is one line, at most [`MAX_LINE`] bytes with its newline:
//! `tgknock-approve 1 user=ada rhost=203.0.113.7 service=sshd tty=ssh` — `user` required,
//! the others optional, each once, values percent-encoded (`%20`), no other key. The answer
//! is one line: `allow REASON` or `deny REASON`. Anything else is a refusal.

use serde_json::{Value, json};

use crate::base::duration;
use crate::chat::telegram::User;

/// The request's first word and version.
pub(crate) const MAGIC: &str = "tgknock-approve";
pub(crate) const VERSION: &str = "1";
/// The longest request or answer line, newline included.
pub(crate) const MAX_LINE: usize = 512;
/// The longest value of a field, decoded (PAM items as shown are at most 64 characters).
const MAX_VALUE: usize = 256;
/// The callback data of the question's buttons starts with this (never `/`: a press on it is
/// no chat command).
const PRESS: &str = "approve ";

/// What `approve-login` asks about: the PAM items of the login.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Request {
    pub(crate) user: String,
    pub(crate) rhost: Option<String>,
    pub(crate) service: Option<String>,
    pub(crate) tty: Option<String>,
}

fn encode(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b".-_:@/[]".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn decode(v: &str) -> Result<String, String> {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("a bad %-escape")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    let s = String::from_utf8(out).map_err(|_| "a value that is not UTF-8")?;
    if s.is_empty() || s.len() > MAX_VALUE {
        return Err("an empty or overlong value".into());
    }
    if s.chars().any(|c| !crate::base::text::shown(c)) {
        return Err("a control or invisible character in a value".into());
    }
    Ok(s)
}

impl Request {
    /// The request as sent, newline included.
    pub(crate) fn line(&self) -> String {
        let mut l = format!("{MAGIC} {VERSION} user={}", encode(&self.user));
        for (k, v) in [
            ("rhost", &self.rhost),
            ("service", &self.service),
            ("tty", &self.tty),
        ] {
            if let Some(v) = v {
                l.push_str(&format!(" {k}={}", encode(v)));
            }
        }
        l.push('\n');
        l
    }

    /// Parses a request line as read (its newline included); why not, when it is none.
    pub(crate) fn parse(line: &[u8]) -> Result<Request, String> {
        if line.len() > MAX_LINE {
            return Err(format!("longer than {MAX_LINE} bytes"));
        }
        let line = line
            .strip_suffix(b"\n")
            .ok_or("no newline at the end of the request")?;
        let line = std::str::from_utf8(line).map_err(|_| "not UTF-8")?;
        let mut words = line.split(' ');
        if words.next() != Some(MAGIC) {
            return Err(format!("not a {MAGIC} request"));
        }
        match words.next() {
            Some(VERSION) => {}
            Some(v) => {
                return Err(format!(
                    "version {} is not spoken here (only {VERSION})",
                    crate::base::text::short(v)
                ));
            }
            None => return Err("no version".into()),
        }
        let mut user = None;
        let mut r = Request::default();
        for w in words {
            let (k, v) = w.split_once('=').ok_or("a field without '='")?;
            let slot = match k {
                "user" => &mut user,
                "rhost" => &mut r.rhost,
                "service" => &mut r.service,
                "tty" => &mut r.tty,
                _ => return Err("an unknown field".into()),
            };
            if slot.is_some() {
                return Err(format!("the field {k} twice"));
            }
            *slot = Some(decode(v)?);
        }
        r.user = user.ok_or("no user")?;
        Ok(r)
    }

    /// "allow login: USER from RHOST (SERVICE) on HOST?"
    pub(crate) fn question(&self, host: &str) -> String {
        format!("allow {}?", self.subject(host))
    }

    /// "login: USER from RHOST (SERVICE) on HOST"
    fn subject(&self, host: &str) -> String {
        let from = match (&self.rhost, &self.tty) {
            (Some(r), _) => r.clone(),
            (None, Some(t)) => t.clone(),
            (None, None) => "this board".into(),
        };
        format!(
            "login: {} from {from} ({}) on {host}",
            self.user,
            self.service.as_deref().unwrap_or("?")
        )
    }

    /// What the question becomes once decided.
    pub(crate) fn outcome(&self, host: &str, outcome: &Outcome, now: u64) -> String {
        let how = match outcome {
            Outcome::Allowed { by, at } => {
                format!("allowed by {by} at {}", duration::utc_short(*at, now))
            }
            Outcome::Denied { by } => format!("denied by {by}"),
            Outcome::Expired => "expired: refused, no answer in time".into(),
            Outcome::Abandoned => "abandoned: the login went away before an answer".into(),
        };
        format!("{}: {how}", self.subject(host))
    }
}

/// How a question ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    Allowed {
        by: String,
        at: u64,
    },
    Denied {
        by: String,
    },
    Expired,
    /// The login gave up (sshd's grace time, the client gone) before a press.
    Abandoned,
}

/// The daemon's answer to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    Allow(String),
    Deny(String),
}

impl Answer {
    pub(crate) fn line(&self) -> String {
        let (word, why) = match self {
            Answer::Allow(w) => ("allow", w),
            Answer::Deny(w) => ("deny", w),
        };
        let why: String = why
            .chars()
            .filter(|c| crate::base::text::shown(*c))
            .take(200)
            .collect();
        format!("{word} {why}\n")
    }

    /// The answer in `line` as read; anything but a whole `allow` line is a refusal.
    pub(crate) fn parse(line: &[u8]) -> Answer {
        let text = String::from_utf8_lossy(line);
        let Some(text) = text.strip_suffix('\n').filter(|_| line.len() <= MAX_LINE) else {
            return Answer::Deny("no answer from the daemon".into());
        };
        match text.split_once(' ').unwrap_or((text, "")) {
            ("allow", why) => Answer::Allow(why.into()),
            ("deny", why) => Answer::Deny(why.into()),
            _ => Answer::Deny("an answer that is not one".into()),
        }
    }
}

/// The presser's name as the outcome shows it.
pub(crate) fn name(u: &User) -> String {
    let n = match &u.last_name {
        Some(l) => format!("{} {l}", u.first_name),
        None => u.first_name.clone(),
    };
    let n: String = n
        .chars()
        .filter(|c| crate::base::text::shown(*c))
        .take(64)
        .collect();
    if n.trim().is_empty() {
        u.id.to_string()
    } else {
        n
    }
}

/// The question's Allow and Deny buttons, for the question `id`.
pub(crate) fn keyboard(id: &str) -> Value {
    json!({"inline_keyboard": [[
        {"text": "Allow", "callback_data": format!("{PRESS}{id} allow")},
        {"text": "Deny", "callback_data": format!("{PRESS}{id} deny")},
    ]]})
}

/// A press on a question's button: (question id, allow). `None` for any other data.
pub(crate) fn press(data: Option<&str>) -> Option<(String, bool)> {
    let rest = data?.strip_prefix(PRESS)?;
    let (id, verb) = rest.split_once(' ')?;
    if id.is_empty() || id.len() > 32 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    match verb {
        "allow" => Some((id.to_string(), true)),
        "deny" => Some((id.to_string(), false)),
        _ => None,
    }
}

/// Whether a press's data is one of the question's buttons (well-formed or not).
pub(crate) fn is_question_press(data: Option<&str>) -> bool {
    data.is_some_and(|d| d.starts_with(PRESS))
}

/// The login notice's buttons: ban `rhost` for a day (when it is an address), and close
/// `gate`. A press on one is that command, typed by the presser.
pub(crate) fn notice_keyboard(rhost: Option<&str>, gate: Option<&str>) -> Option<Value> {
    let mut row = Vec::new();
    if let Some(addr) = rhost.and_then(|r| r.parse::<std::net::IpAddr>().ok()) {
        row.push(json!({"text": format!("Ban {addr} for a day"), "callback_data": format!("/ban {addr} 1d")}));
    }
    if let Some(g) = gate {
        row.push(json!({"text": format!("Close {g}"), "callback_data": format!("/close {g}")}));
    }
    (!row.is_empty()).then(|| json!({"inline_keyboard": [row]}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> Request {
        Request {
            user: "ada".into(),
            rhost: Some("203.0.113.7".into()),
            service: Some("sshd".into()),
            tty: Some("ssh".into()),
        }
    }

    #[test]
    fn a_request_goes_there_and_back() {
        let r = req();
        assert_eq!(
            r.line(),
            "tgknock-approve 1 user=ada rhost=203.0.113.7 service=sshd tty=ssh\n"
        );
        assert_eq!(Request::parse(r.line().as_bytes()), Ok(r));
        let odd = Request {
            user: "a b%c=d ü".into(),
            rhost: Some("2001:db8::1".into()),
            service: None,
            tty: None,
        };
        assert_eq!(Request::parse(odd.line().as_bytes()), Ok(odd));
    }

    #[test]
    fn hostile_requests_are_refused_with_a_reason() {
        let long = format!("tgknock-approve 1 user={}\n", "a".repeat(600));
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (long.into_bytes(), "longer than"),
            (b"tgknock-approve 1 user=ada".to_vec(), "no newline"),
            (b"tgknock-approve 2 user=ada\n".to_vec(), "version 2"),
            (b"tgknock-approve user=ada\n".to_vec(), "version"),
            (b"tgknock-approve\n".to_vec(), "no version"),
            (b"GET / HTTP/1.1\n".to_vec(), "not a tgknock-approve"),
            (b"tgknock-approve 1 user=ada\0\n".to_vec(), "control"),
            (b"tgknock-approve 1 user=a%00da\n".to_vec(), "control"),
            (b"tgknock-approve 1 user=a%0Ada\n".to_vec(), "control"),
            (b"tgknock-approve 1 user=a%E2%80%AEda\n".to_vec(), "control"),
            (b"tgknock-approve 1 user=ada%\n".to_vec(), "%-escape"),
            (b"tgknock-approve 1 user=ada%ZZ\n".to_vec(), "%-escape"),
            (b"tgknock-approve 1 user=%FF\n".to_vec(), "UTF-8"),
            (b"tgknock-approve 1 user=\n".to_vec(), "empty"),
            (b"tgknock-approve 1 user=ada user=root\n".to_vec(), "twice"),
            (
                b"tgknock-approve 1 user=ada decision=allow\n".to_vec(),
                "unknown",
            ),
            (b"tgknock-approve 1 rhost=1.2.3.4\n".to_vec(), "no user"),
            (b"tgknock-approve 1 user ada\n".to_vec(), "without '='"),
            (b"tgknock-approve 1  user=ada\n".to_vec(), "without '='"),
            (b"\xff\xfe\n".to_vec(), "UTF-8"),
            (b"\n".to_vec(), "not a tgknock-approve"),
            (vec![0u8; 100], "no newline"),
        ];
        for (line, want) in cases {
            let e = Request::parse(&line).unwrap_err();
            assert!(
                e.contains(want),
                "{:?}: {e}",
                String::from_utf8_lossy(&line)
            );
        }
    }

    #[test]
    fn only_a_whole_allow_line_allows() {
        assert_eq!(
            Answer::parse(b"allow pressed\n"),
            Answer::Allow("pressed".into())
        );
        assert_eq!(
            Answer::parse(Answer::Allow("x".into()).line().as_bytes()),
            Answer::Allow("x".into())
        );
        for bad in [
            &b"allow"[..],
            b"allow pressed",
            b"allowed\n",
            b"ALLOW\n",
            b"",
            b"deny no\n",
            b"\n",
        ] {
            assert!(matches!(Answer::parse(bad), Answer::Deny(_)), "{bad:?}");
        }
        let big = [b"allow ".to_vec(), vec![b'a'; 600], b"\n".to_vec()].concat();
        assert!(matches!(Answer::parse(&big), Answer::Deny(_)));
        assert_eq!(Answer::Deny("a\nb".into()).line(), "deny ab\n");
    }

    #[test]
    fn the_question_its_buttons_and_its_outcomes() {
        let r = req();
        assert_eq!(
            r.question("pi"),
            "allow login: ada from 203.0.113.7 (sshd) on pi?"
        );
        const NOW: u64 = 1_800_000_000;
        let out = r.outcome(
            "pi",
            &Outcome::Allowed {
                by: "Ada".into(),
                at: NOW,
            },
            NOW,
        );
        assert_eq!(
            out,
            format!(
                "login: ada from 203.0.113.7 (sshd) on pi: allowed by Ada at {}",
                duration::utc_short(NOW, NOW)
            )
        );
        assert!(
            r.outcome("pi", &Outcome::Denied { by: "Ada".into() }, NOW)
                .ends_with(": denied by Ada")
        );
        assert!(
            r.outcome("pi", &Outcome::Expired, NOW)
                .contains(": expired")
        );
        let k = keyboard("abc123");
        let allow = k["inline_keyboard"][0][0]["callback_data"]
            .as_str()
            .unwrap();
        let deny = k["inline_keyboard"][0][1]["callback_data"]
            .as_str()
            .unwrap();
        assert_eq!(press(Some(allow)), Some(("abc123".into(), true)));
        assert_eq!(press(Some(deny)), Some(("abc123".into(), false)));
        for bad in [
            None,
            Some("/open ssh"),
            Some("approve abc123"),
            Some("approve abc123 yes"),
            Some("approve ab-c allow"),
            Some("approve  allow"),
        ] {
            assert_eq!(press(bad), None, "{bad:?}");
        }
        assert!(is_question_press(Some("approve x")));
        assert!(!is_question_press(Some("/ban 1.2.3.4")));
    }

    #[test]
    fn the_notice_buttons_ban_an_address_and_close_the_gate() {
        let k = notice_keyboard(Some("2001:db8::7"), Some("ssh")).unwrap();
        let row = &k["inline_keyboard"][0];
        assert_eq!(row[0]["callback_data"], "/ban 2001:db8::7 1d");
        assert_eq!(row[1]["callback_data"], "/close ssh");
        let long = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        let k = notice_keyboard(Some(long), None).unwrap();
        assert!(
            k["inline_keyboard"][0][0]["callback_data"]
                .as_str()
                .unwrap()
                .len()
                <= 64
        );
        // A host name (UseDNS) cannot be banned from here; no gate, no address: no keyboard.
        let k = notice_keyboard(Some("evil.example"), Some("ssh")).unwrap();
        assert_eq!(k["inline_keyboard"][0].as_array().unwrap().len(), 1);
        assert_eq!(notice_keyboard(None, None), None);
    }
}
