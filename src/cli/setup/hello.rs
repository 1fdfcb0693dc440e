//! Waiting for the owner's first message to the bot: who wrote after setup asked, by
//! Telegram's clock, each sender once.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use super::answers::{clean, looks_like_token};
use crate::base::error::ApiError;
use crate::base::error::{Error, Result};
use crate::chat::telegram::{BotApi, Incoming, User};

/// A hello: who sent it, its update id, its text as shown.
pub(super) type Hello = (User, crate::base::ids::UpdateId, String);

/// Waits up to `wait` seconds for messages to the bot sent at `asked_at` or later (by
/// Telegram's clock: the ones waiting before setup asked are never proposed), showing
/// the time (in polls of a second); each sender once, in the order they wrote, with the
/// update id and text (shortened) of their first message. Empty when none came in time.
pub(super) fn wait_for_hello(api: &BotApi, wait: u64, asked_at: i64) -> Result<Vec<Hello>> {
    let start = Instant::now();
    let end = start + Duration::from_secs(wait);
    let mut clock = Clock {
        terminal: std::io::stdout().is_terminal(),
        shown: None,
    };
    let mut last_error: Option<String> = None;
    let mut first_seen: Option<Vec<Hello>> = None;
    let found: Vec<Hello> = loop {
        clock.show(start.elapsed().as_secs(), wait);
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break first_seen.take().unwrap_or_default();
        }
        // Once someone wrote, one more look a second later: whoever wrote at the same
        // moment is asked about too, rather than the first one taken.
        let poll = if first_seen.is_some() { 0 } else { 1 };
        match api.get_updates(None, poll, 100) {
            Ok(answer) => {
                let (any, hellos) = hellos_in(answer.raw_result()?, asked_at)?;
                match (first_seen.take(), hellos.is_empty()) {
                    (Some(_), false) => break hellos,
                    // Gone meanwhile (another reader confirmed them): the first look's.
                    (Some(first), true) => break first,
                    (None, false) => {
                        first_seen = Some(hellos);
                        std::thread::sleep(left.min(Duration::from_secs(1)));
                    }
                    // Messages that were waiting come back at once on every poll (setup
                    // confirms nothing while it waits): not a busy loop.
                    (None, true) if any => std::thread::sleep(left.min(Duration::from_secs(1))),
                    (None, true) => {}
                }
            }
            Err(ApiError::Http { status: 409, .. }) => {
                return Err(Error::Usage {
                    argument: None,
                    problem: "another program reads this bot's messages (409 Conflict): stop tgknock first (systemctl stop tgknock), or remove the bot's webhook, then run setup again".into(),
                });
            }
            Err(e) if e.is_token_rejected() => return Err(Error::TokenRejected(e)),
            Err(e) => {
                let text = e.to_string();
                if last_error.as_deref() != Some(text.as_str()) {
                    println!("\n  Telegram: {text}; trying again");
                    last_error = Some(text);
                }
                std::thread::sleep(left.min(Duration::from_secs(2)));
            }
        }
    };
    clock.clear();
    Ok(found)
}

/// The time waited so far, shown in place on a terminal, every 30 s otherwise.
struct Clock {
    terminal: bool,
    /// The second last shown.
    shown: Option<u64>,
}

impl Clock {
    fn show(&mut self, secs: u64, wait: u64) {
        if self.shown == Some(secs) || secs == 0 {
            return;
        }
        self.shown = Some(secs);
        let line = format!(
            "  waiting for your message… {}:{:02} of {}:{:02}",
            secs / 60,
            secs % 60,
            wait / 60,
            wait % 60
        );
        if self.terminal {
            print!("\r{line}");
            let _ = std::io::stdout().flush();
        } else if secs.is_multiple_of(30) {
            println!("{line}");
        }
    }

    /// Clears the line shown in place.
    fn clear(&self) {
        if self.terminal && self.shown.is_some() {
            print!("\r{}\r", " ".repeat(50));
            let _ = std::io::stdout().flush();
        }
    }
}

/// The hellos of one answer of `getUpdates`: messages sent at `asked_at` or later, by
/// people (not bots), each sender once; and whether the answer held any update at all.
fn hellos_in(raw: &serde_json::value::RawValue, asked_at: i64) -> Result<(bool, Vec<Hello>)> {
    let items = crate::chat::telegram::decode_updates(raw).map_err(ApiError::Malformed)?;
    let any = !items.is_empty();
    let mut hellos: Vec<Hello> = Vec::new();
    for item in items {
        let Incoming::Update(u) = item else { continue };
        let Some(m) = u.message.or(u.edited_message) else {
            continue;
        };
        if m.date < asked_at {
            continue;
        }
        let Some(from) = m.from.filter(|f| !f.is_bot) else {
            continue;
        };
        if hellos.iter().any(|(u, _, _)| u.id == from.id) {
            continue;
        }
        let text = m.text.as_deref().unwrap_or("(no text)");
        let text = if looks_like_token(text) {
            "(a message that looks like a bot token: not shown)".to_string()
        } else {
            clean(text)
        };
        hellos.push((from, u.update_id, text));
    }
    Ok((any, hellos))
}

/// Who sent a message: the name, then the @username when there is one.
pub(super) fn who(user: &User) -> String {
    let name = match &user.last_name {
        Some(l) => format!("{} {l}", user.first_name),
        None => user.first_name.clone(),
    };
    match &user.username {
        Some(u) => format!("{} (@{})", clean(&name), clean(u)),
        None => clean(&name),
    }
}
