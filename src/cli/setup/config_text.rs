//! The config text setup writes: the value of a key in the text there is, and the text
//! with setup's keys set and every other line kept; the Telegram settings it already has.

use std::path::Path;

use crate::base::duration;
use crate::base::error::Result;
use crate::store::config::{self, Config, TelegramSettings, keys};

/// The Telegram settings (API URL, proxy, CA file) of the existing config and the
/// environment, without their token, which setup is here to replace.
pub(super) fn telegram_settings(path: &Path, existing: Option<&str>) -> Result<TelegramSettings> {
    let env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k != keys::TOKEN.name && k != keys::TOKEN_FILE.name)
        .collect();
    let without_token = existing.map(|t| {
        t.lines()
            .filter(|l| {
                let l = l.trim_start();
                !l.starts_with("TGKNOCK_TOKEN=") && !l.starts_with("TGKNOCK_keys::TOKEN_FILE.name=")
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
    match Config::from_sources(without_token.as_deref().map(|t| (path, t)), &env) {
        Ok(c) => Ok(c.telegram),
        Err(e) if existing.is_some() => {
            println!(
                "note: the existing config has a problem ({e}); setup keeps its other lines, and check will tell"
            );
            Ok(Config::from_sources(None, &env)?.telegram)
        }
        Err(e) => Err(e),
    }
}

/// The value of an active `KEY=VALUE` line of a config text, unquoted.
pub(super) fn value_of(text: &str, key: &str) -> Option<String> {
    config::parse_file(
        &text
            .lines()
            .filter(|l| l.trim_start().starts_with(&format!("{key}=")))
            .collect::<Vec<_>>()
            .join("\n"),
    )
    .ok()?
    .into_iter()
    .rev()
    .find(|(_, k, _)| k == key)
    .map(|(_, _, v)| v)
}

/// The config text with `keys` set: each key's line replaced in place (later duplicates
/// dropped), missing ones appended; a `TGKNOCK_TOKEN` line removed (the token is in its
/// file now); every other line kept as it was.
pub(super) fn updated_config(existing: Option<&str>, keys: &[(&str, String)]) -> String {
    let line = |k: &str, v: &str| {
        if v.is_empty() || v.contains(' ') {
            format!("{k}=\"{v}\"")
        } else {
            format!("{k}={v}")
        }
    };
    let key_of = |l: &str| -> Option<String> {
        let l = l.trim_start();
        let (k, _) = l.split_once('=')?;
        Some(k.trim_end().to_string())
    };
    let mut placed: Vec<&str> = Vec::new();
    let mut out: Vec<String> = Vec::new();
    let existing = existing.unwrap_or(
        "# tgknock's configuration (KEY=VALUE; see README.md). Every key can also come from the\n# environment, which wins over this file.\n",
    );
    for l in existing.lines() {
        match key_of(l) {
            Some(k) if k == keys::TOKEN.name => {}
            Some(k) => match keys.iter().find(|(key, _)| *key == k) {
                Some((key, _)) if placed.contains(key) => {}
                Some((key, value)) => {
                    placed.push(key);
                    out.push(line(key, value));
                }
                None => out.push(l.to_string()),
            },
            None => out.push(l.to_string()),
        }
    }
    let missing: Vec<&(&str, String)> = keys.iter().filter(|(k, _)| !placed.contains(k)).collect();
    if !missing.is_empty() {
        if out.last().is_some_and(|l| !l.trim().is_empty()) {
            out.push(String::new());
        }
        out.push(format!(
            "# written by tgknock setup on {}",
            duration::utc_full(crate::os::clock::now())
        ));
        out.extend(missing.iter().map(|(k, v)| line(k, v)));
    }
    let mut text = out.join("\n");
    text.push('\n');
    text
}
