//! `env_logger` with a formatter that removes the bot token from every line, whoever
//! logged it (ureq's own debug and trace lines print request URLs, which hold it).

use std::io::Write;
use std::sync::RwLock;

use crate::base::duration;

static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Registers a secret: from now on it is replaced by `<redacted>` in logs and errors.
/// For a bot token, the part after the colon is the secret (the bot id is public).
pub(crate) fn add_secret(token: &str) {
    let secret = token.split_once(':').map(|(_, s)| s).unwrap_or(token);
    if secret.len() < 8 {
        return;
    }
    let mut list = SECRETS.write().unwrap_or_else(|e| e.into_inner());
    if !list.iter().any(|s| s == secret) {
        list.push(secret.to_string());
    }
}

/// `text` with every registered secret replaced, and any cut-short copy of one (a text
/// clipped for a message) from its first 12 characters to the end of the word.
pub(crate) fn redact(text: &str) -> String {
    let list = SECRETS.read().unwrap_or_else(|e| e.into_inner());
    let mut out = text.to_string();
    for s in list.iter() {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), "<redacted>");
        }
        let head = &s[..s.len().min(12)];
        while let Some(at) = out.find(head) {
            let end = out[at..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
                .map_or(out.len(), |n| at + n);
            out.replace_range(at..end, "<redacted>");
        }
    }
    out
}

/// Logs to standard error; `RUST_LOG` filters (default `info`).
pub(crate) fn init() {
    let env = env_logger::Env::default().default_filter_or("info");
    start(env_logger::Builder::from_env(env));
}

/// Logs to standard error at `info`, whatever the environment says: for the commands run
/// from PAM, whose environment is the logging-in user's (`RUST_LOG=trace` there would turn
/// on the HTTP client's own lines).
pub(crate) fn init_fixed() {
    let mut b = env_logger::Builder::new();
    b.parse_filters("info");
    start(b);
}

fn start(mut builder: env_logger::Builder) {
    let _ = builder
        .format(|buf, record| {
            // ureq-proto's trace level hex-dumps requests 16 bytes a line, which splits the
            // token in the URL where `redact` cannot find it: never print those lines.
            if record.level() == log::Level::Trace && record.target().starts_with("ureq_proto") {
                return Ok(());
            }
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let (y, mo, d, h, mi, s) = duration::civil(now);
            let message = redact(&record.args().to_string());
            writeln!(
                buf,
                "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z {:<5} {}: {message}",
                record.level(),
                record.target()
            )
        })
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_the_secret_part() {
        add_secret("42:SECRETsecretSECRETsecret_-");
        assert_eq!(
            redact("GET https://api.telegram.org/bot42:SECRETsecretSECRETsecret_-/getMe"),
            "GET https://api.telegram.org/bot42:<redacted>/getMe"
        );
        assert_eq!(
            redact("bot42%3ASECRETsecretSECRETsecret_-"),
            "bot42%3A<redacted>"
        );
        assert_eq!(redact("nothing here"), "nothing here");
        assert_eq!(
            redact("'SECRETsecretSECRETsec…' is not a gate"),
            "'<redacted>…' is not a gate"
        );
    }
}
