//! The answers setup reads, a line each from standard input, and how they are checked:
//! user ids, yes or no, and never a token pasted at the wrong question.

use std::io::{BufRead, Write};

use crate::base::error::{Error, Result};
use crate::store::config::Token;

/// Answers, one line each, from standard input.
pub(super) struct Answers {
    pub(super) terminal: bool,
}

impl Answers {
    /// One line; `None` at the end of input.
    fn line(&self, hidden: bool) -> Result<Option<String>> {
        let _no_echo = (hidden && self.terminal).then(crate::os::sys::NoEcho::new);
        let mut line = String::new();
        let n = std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| Error::file("standard input", "read", e))?;
        if hidden && self.terminal {
            println!();
        }
        Ok((n > 0).then(|| line.trim().to_string()))
    }

    /// Asks `question` until `check` takes the answer (and gives it as it is to be
    /// written); Enter (or the end of input) takes `default`. Without a default, the end
    /// of input is an error naming `what`.
    pub(super) fn ask(
        &self,
        question: &str,
        default: Option<&str>,
        hidden: bool,
        what: &str,
        check: &dyn Fn(&str) -> std::result::Result<String, String>,
    ) -> Result<String> {
        loop {
            match default {
                // A question that shows its choices (`[Y/n]`) shows its default already.
                Some(d) if !d.is_empty() && !question.ends_with(']') => {
                    print!("{question} [{d}]: ")
                }
                _ => print!("{question}: "),
            }
            let _ = std::io::stdout().flush();
            let answer = match (self.line(hidden)?, default) {
                (Some(a), Some(d)) if a.is_empty() => d.to_string(),
                (Some(a), _) => a,
                (None, Some(d)) => {
                    println!();
                    d.to_string()
                }
                (None, None) => {
                    println!();
                    return Err(Error::Usage {
                        argument: None,
                        problem: format!("standard input ended before {what} was given"),
                    });
                }
            };
            // The token belongs to its own (hidden) question only: pasted at another one,
            // it is never shown back, in an error or anywhere.
            if !hidden && looks_like_token(&answer) {
                for word in token_words(&answer) {
                    crate::os::logging::add_secret(word);
                }
                println!(
                    "  That looks like a bot token, not {what}: it is not shown, used or written anywhere. Try again."
                );
                continue;
            }
            match check(&answer) {
                Ok(v) => return Ok(v),
                Err(why) => println!("  {why}. Try again."),
            }
        }
    }
}

/// The words of `text` shaped like a bot token (`123456:ABC…`).
pub(super) fn token_words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == ':' || c == '-' || c == '_'))
        .filter(|w| Token::parse(w).is_some())
}

/// Whether `text` holds something shaped like a bot token.
pub(super) fn looks_like_token(text: &str) -> bool {
    token_words(text).next().is_some()
}

/// `kept` then the ids of `ids` (`1,2`) not among them, comma-separated.
pub(super) fn merge_users(kept: &[i64], ids: &str) -> String {
    let mut all: Vec<i64> = kept.to_vec();
    for id in ids.split(',').filter_map(|i| i.trim().parse().ok()) {
        if !all.contains(&id) {
            all.push(id);
        }
    }
    all.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
}

/// A name or message as shown on screen: no control, bidirectional or zero-width
/// characters, at most 40 characters.
pub(super) fn clean(s: &str) -> String {
    s.chars()
        .filter(|c| crate::base::text::shown(*c))
        .take(40)
        .collect()
}

/// `111, 222` → `111,222`; the reason when an item is not a user id.
pub(super) fn parse_users(a: &str) -> std::result::Result<String, String> {
    let mut ids: Vec<i64> = Vec::new();
    for part in a.split([',', ' ']).filter(|p| !p.is_empty()) {
        let id = part
            .parse::<i64>()
            .ok()
            .filter(|id| *id > 0)
            .ok_or_else(|| {
                format!(
                    "'{}' is not a numeric Telegram user id",
                    crate::base::text::short(&clean(part))
                )
            })?;
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    if ids.is_empty() {
        return Err("at least one user id is needed".into());
    }
    Ok(ids.iter().map(i64::to_string).collect::<Vec<_>>().join(","))
}

/// `y` or `n`.
pub(super) fn yes_no(a: &str) -> std::result::Result<String, String> {
    match a.to_ascii_lowercase().as_str() {
        "y" | "yes" => Ok("y".into()),
        "n" | "no" => Ok("n".into()),
        _ => Err("Answer y or n".into()),
    }
}
