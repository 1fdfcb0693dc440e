//! `tgknock setup`: the guided first run, from BotFather's token to a working bot. It asks
//! for the token (not echoed on a terminal) and checks it with `getMe`, waits for the owner's
//! first message to the bot and proposes its sender — only a message sent after it asked, by
//! Telegram's clock (the `Date` of `getMe`'s answer against the message's date), never one
//! that was waiting; two senders are asked about, never guessed; users the config allows
//! already are kept unless the answer says `replace` — asks for the gates and whether to
//! exempt the LAN, then writes the config and a 0600 token file next to it, runs `check`,
//! and says the one command left. Standard input may be piped: a line per answer, an empty
//! one (or the end of input) takes the proposed default. A token pasted at any other prompt
//! is refused without being shown.
//!
//! Nothing is written before the last answer, and Ctrl-C is held off while the two files
//! are replaced (each by rename), so an interrupted setup leaves everything as it was.
//!
//! The updates it reads: like `whoami`, it reads without confirming while it waits; once
//! the files are written it confirms the updates up to the hello it proposed (and nothing
//! after it), so the daemon does not start by answering a greeting it cannot understand.

use std::fs::{self, OpenOptions};
use std::io::{BufRead, IsTerminal, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::base::addr::Cidr;
use crate::base::duration;
use crate::base::error::ApiError;
use crate::base::error::{Error, Result};
use crate::base::gate;
use crate::chat::telegram::{BotApi, Incoming, User};
use crate::store::config::{self, Config, TelegramSettings, Token};

/// How long setup waits for the owner's first message by default.
pub(crate) const WAIT: u64 = 300;

/// The keys setup writes; every other line of an existing config is kept.
const TOKEN_FILE: &str = "TGKNOCK_TOKEN_FILE";
const USERS: &str = "TGKNOCK_ALLOWED_USERS";
const GATES: &str = "TGKNOCK_GATES";
const ALWAYS_ALLOW: &str = "TGKNOCK_ALWAYS_ALLOW";

/// Answers, one line each, from standard input.
struct Answers {
    terminal: bool,
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
    fn ask(
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

/// `tgknock setup`: returns the exit code (`check`'s), or the error that decides it.
pub(crate) fn run(path: Option<PathBuf>, wait: Option<String>) -> Result<i32> {
    let path = path.unwrap_or_else(|| PathBuf::from(config::DEFAULT_PATH));
    let wait = match wait {
        None => WAIT,
        Some(w) => match duration::parse(&w, None) {
            Ok(s) if (1..=3600).contains(&s) => s,
            Ok(_) => return Err(Error::usage("--wait", "must be between 1s and 1h")),
            Err(e) => return Err(Error::usage("--wait", e)),
        },
    };
    let started = Instant::now();
    let existing = match fs::read_to_string(&path) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => return Err(Error::ConfigFile { path, source }),
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let token_path = existing
        .as_deref()
        .and_then(|t| value_of(t, TOKEN_FILE))
        .filter(|v| v.starts_with('/'))
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.join("token"));
    writable(&dir)?;
    let settings = telegram_settings(&path, existing.as_deref())?;
    let answers = Answers {
        terminal: std::io::stdin().is_terminal(),
    };

    println!(
        "tgknock setup: writes {} and the token file {}.",
        path.display(),
        token_path.display()
    );
    if existing.is_some() {
        println!(
            "  (the file exists: setup replaces its token, gates and LAN lines, keeps the users it allows unless told to replace them, and keeps the rest)"
        );
    }
    println!("Nothing is written until the last question; Ctrl-C leaves everything as it was.\n");

    let token = answers.ask(
        if answers.terminal {
            "Bot token from @BotFather (not shown as you type or paste)"
        } else {
            "Bot token from @BotFather"
        },
        None,
        true,
        "the bot token",
        &|a| {
            Token::parse(a).map(|_| a.to_string()).ok_or_else(|| {
                "That is not a bot token: BotFather's look like 123456789:AAH… (digits, ':', then at least 20 letters, digits, - or _)".to_string()
            })
        },
    )?;
    let token = Token::parse(&token).ok_or_else(|| Error::usage("token", "not a bot token"))?;
    crate::os::logging::add_secret(token.expose());
    let api = BotApi::new(&settings, &token)?;
    print!("Asking Telegram about it… ");
    let _ = std::io::stdout().flush();
    let (me, server_time) = api.get_me().inspect_err(|_| println!())?;
    // Telegram's clock when setup asks: a message dated before it was already waiting
    // (a stranger's `/start` of an hour ago), and is never proposed.
    let asked_at = server_time.unwrap_or_else(crate::os::clock::now);
    let bot = me.username.clone().unwrap_or_default();
    println!("it is @{bot} ({}).\n", clean(&me.first_name));

    println!(
        "Now send any message to @{bot} in Telegram (https://t.me/{bot}) from the account that will command this board."
    );
    let typing = started.elapsed();
    let senders = wait_for_hello(&api, wait, asked_at as i64)?;
    let waited = started.elapsed() - typing;
    let proposed = match &senders[..] {
        [(user, _, text)] => {
            println!("Got \"{text}\" from {}: user id {}.", who(user), user.id);
            Some(user.id.to_string())
        }
        [] => {
            println!(
                "No message came in {}. Type the id instead (`tgknock whoami --config {}` shows the ids of people who wrote to the bot).",
                duration::human(wait),
                path.display()
            );
            None
        }
        several => {
            println!(
                "{} people wrote to the bot since setup asked; which of them is you?",
                several.len()
            );
            for (user, _, text) in several {
                println!("  \"{text}\" from {}, user id {}", who(user), user.id);
            }
            None
        }
    };
    // Users the config allows already are kept, unless the answer says to replace them.
    let kept: Vec<i64> = existing
        .as_deref()
        .and_then(|t| value_of(t, USERS))
        .and_then(|v| parse_users(&v).ok())
        .map(|v| v.split(',').filter_map(|id| id.parse().ok()).collect())
        .unwrap_or_default();
    let kept_text = kept
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    if !kept.is_empty() {
        println!(
            "The config allows {kept_text} already: kept, with the id(s) you give added (answer `replace ID,…` to allow only those)."
        );
    }
    let default = match (&proposed, kept.is_empty()) {
        (Some(p), _) => Some(merge_users(&kept, p)),
        // Several senders: setup does not guess, even to keep the users already there.
        (None, _) if senders.len() > 1 => None,
        (None, false) => Some(kept_text.clone()),
        (None, true) => None,
    };
    let what = if senders.len() > 1 {
        "a user id (several people wrote to the bot, and setup does not guess which is you)"
    } else {
        "a user id"
    };
    let question = if kept.is_empty() {
        "Telegram user id(s) allowed to command the bot, comma-separated".to_string()
    } else {
        format!(
            "Telegram user id(s) allowed to command the bot, comma-separated (already allowed: {kept_text})"
        )
    };
    let users = answers.ask(&question, default.as_deref(), false, what, &|a| match a
        .trim()
        .strip_prefix("replace")
    {
        Some(ids) => parse_users(ids),
        None => parse_users(a).map(|ids| merge_users(&kept, &ids)),
    })?;
    let current_gates = existing
        .as_deref()
        .and_then(|t| value_of(t, GATES))
        .filter(|g| gate::parse_gates(g).is_ok());
    let gates = answers.ask(
        "Gates, as name=port/proto (e.g. ssh=22/tcp web=80/tcp,443/tcp)",
        Some(current_gates.as_deref().unwrap_or("ssh=22/tcp")),
        false,
        "the gates",
        &|a| {
            let a = a.split_whitespace().collect::<Vec<_>>().join(" ");
            gate::parse_gates(&a).map(|_| a)
        },
    )?;
    let lan = detect_lan();
    let always_allow = if lan.is_empty() {
        println!(
            "No private network found on this board's interfaces: {ALWAYS_ALLOW} is left as it is."
        );
        None
    } else {
        let list = lan
            .iter()
            .map(Cidr::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let yes = answers.ask(
            &format!(
                "This board is on {list}. Never block it ({ALWAYS_ALLOW}), so a mistake cannot lock you out at home? [Y/n]"
            ),
            Some("y"),
            false,
            "yes or no",
            &yes_no,
        )?;
        (yes == "y").then_some(list)
    };

    let mut keys: Vec<(&str, String)> = vec![
        (TOKEN_FILE, token_path.display().to_string()),
        (USERS, users),
        (GATES, gates),
    ];
    if let Some(a) = always_allow {
        keys.push((ALWAYS_ALLOW, a));
    }
    let text = updated_config(existing.as_deref(), &keys);
    let owner = service_owner();
    {
        let _held = crate::os::sys::NoInterrupt::new();
        if !dir.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .create(&dir)
                .map_err(|e| Error::file(&dir, "create the directory", e))?;
            let _ = fs::set_permissions(&dir, fs::Permissions::from_mode(0o750));
            if let Some((_, gid)) = owner {
                let _ = std::os::unix::fs::chown(&dir, Some(0), Some(gid));
            }
        }
        // The token: the service user's (who reads it), nobody else's.
        let token_owner = ownership(&token_path).or(owner);
        replace(
            &token_path,
            format!("{}\n", token.expose()).as_bytes(),
            0o600,
            token_owner,
        )?;
        // The config: its owner's (root's), readable by the service user's group.
        let config_owner = ownership(&path).or(owner.map(|(_, gid)| (0, gid)));
        replace(&path, text.as_bytes(), 0o640, config_owner)?;
    }
    println!(
        "\nWrote {} (mode 0640) and {} (mode 0600{}).",
        path.display(),
        token_path.display(),
        ownership(&token_path)
            .map(|(uid, _)| format!(", owner uid {uid}"))
            .unwrap_or_default()
    );
    if let Some(id) = senders.iter().map(|(_, id, _)| *id).max() {
        // Confirms the hellos and what came before them, nothing after.
        if let Err(e) = api.get_updates(Some(id.next()), 0, 1) {
            log::debug!("could not confirm the hello message: {e}");
        }
    }
    let own = started.elapsed().saturating_sub(waited);
    log::debug!(
        "setup took {} ms besides the {} ms of waiting for a message",
        own.as_millis(),
        waited.as_millis()
    );

    println!(
        "\nChecking it all: tgknock check --config {}",
        path.display()
    );
    let code = crate::cli::check::run(Config::load(Some(&path)))?;
    println!();
    if code == 0 {
        println!(
            "One command left, to start the service:\n  {}",
            start_command(&path)
        );
    } else {
        println!(
            "Fix what check reports (edit {}), run `tgknock check --config {}` again, then:\n  {}",
            path.display(),
            path.display(),
            start_command(&path)
        );
    }
    Ok(code)
}

/// The Telegram settings (API URL, proxy, CA file) of the existing config and the
/// environment, without their token, which setup is here to replace.
fn telegram_settings(path: &Path, existing: Option<&str>) -> Result<TelegramSettings> {
    let env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k != "TGKNOCK_TOKEN" && k != TOKEN_FILE)
        .collect();
    let without_token = existing.map(|t| {
        t.lines()
            .filter(|l| {
                let l = l.trim_start();
                !l.starts_with("TGKNOCK_TOKEN=") && !l.starts_with("TGKNOCK_TOKEN_FILE=")
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

/// A hello: who sent it, its update id, its text as shown.
type Hello = (User, crate::base::ids::UpdateId, String);

/// Waits up to `wait` seconds for messages to the bot sent at `asked_at` or later (by
/// Telegram's clock: the ones waiting before setup asked are never proposed), showing
/// the time (in polls of a second); each sender once, in the order they wrote, with the
/// update id and text (shortened) of their first message. Empty when none came in time.
fn wait_for_hello(api: &BotApi, wait: u64, asked_at: i64) -> Result<Vec<Hello>> {
    let start = Instant::now();
    let end = start + Duration::from_secs(wait);
    let terminal = std::io::stdout().is_terminal();
    let mut last_error: Option<String> = None;
    let mut shown = None;
    let mut first_seen: Option<Vec<Hello>> = None;
    let found: Vec<Hello> = loop {
        let secs = start.elapsed().as_secs();
        if shown != Some(secs) && secs > 0 {
            shown = Some(secs);
            let line = format!(
                "  waiting for your message… {}:{:02} of {}:{:02}",
                secs / 60,
                secs % 60,
                wait / 60,
                wait % 60
            );
            if terminal {
                print!("\r{line}");
                let _ = std::io::stdout().flush();
            } else if secs.is_multiple_of(30) {
                println!("{line}");
            }
        }
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break first_seen.take().unwrap_or_default();
        }
        // Once someone wrote, one more look a second later: whoever wrote at the same
        // moment is asked about too, rather than the first one taken.
        let poll = if first_seen.is_some() { 0 } else { 1 };
        match api.get_updates(None, poll, 100) {
            Ok(answer) => {
                let raw = answer.raw_result()?;
                let items =
                    crate::chat::telegram::decode_updates(raw).map_err(ApiError::Malformed)?;
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
                match (first_seen.take(), hellos.is_empty()) {
                    (Some(_), false) => break hellos,
                    // Gone meanwhile (another reader confirmed them): the first look's.
                    (Some(first), true) => break first,
                    (None, false) => {
                        first_seen = Some(hellos);
                        std::thread::sleep(left.min(Duration::from_secs(1)));
                    }
                    (None, true) => {
                        // Messages that were waiting come back at once on every poll
                        // (setup confirms nothing while it waits): not a busy loop.
                        if any {
                            std::thread::sleep(left.min(Duration::from_secs(1)));
                        }
                    }
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
    if terminal && shown.is_some() {
        print!("\r{}\r", " ".repeat(50));
        let _ = std::io::stdout().flush();
    }
    Ok(found)
}

/// Who sent a message: the name, then the @username when there is one.
fn who(user: &User) -> String {
    let name = match &user.last_name {
        Some(l) => format!("{} {l}", user.first_name),
        None => user.first_name.clone(),
    };
    match &user.username {
        Some(u) => format!("{} (@{})", clean(&name), clean(u)),
        None => clean(&name),
    }
}

/// The words of `text` shaped like a bot token (`123456:ABC…`).
fn token_words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == ':' || c == '-' || c == '_'))
        .filter(|w| Token::parse(w).is_some())
}

/// Whether `text` holds something shaped like a bot token.
fn looks_like_token(text: &str) -> bool {
    token_words(text).next().is_some()
}

/// `kept` then the ids of `ids` (`1,2`) not among them, comma-separated.
fn merge_users(kept: &[i64], ids: &str) -> String {
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
fn clean(s: &str) -> String {
    s.chars()
        .filter(|c| crate::base::text::shown(*c))
        .take(40)
        .collect()
}

/// `111, 222` → `111,222`; the reason when an item is not a user id.
fn parse_users(a: &str) -> std::result::Result<String, String> {
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
fn yes_no(a: &str) -> std::result::Result<String, String> {
    match a.to_ascii_lowercase().as_str() {
        "y" | "yes" => Ok("y".into()),
        "n" | "no" => Ok("n".into()),
        _ => Err("Answer y or n".into()),
    }
}

/// The value of an active `KEY=VALUE` line of a config text, unquoted.
fn value_of(text: &str, key: &str) -> Option<String> {
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
fn updated_config(existing: Option<&str>, keys: &[(&str, String)]) -> String {
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
            Some(k) if k == "TGKNOCK_TOKEN" => {}
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

/// The `tgknock` system user's uid and gid, when it exists and setup runs as root: the
/// service reads the token as that user.
fn service_owner() -> Option<(u32, u32)> {
    if !running_as_root() {
        return None;
    }
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd_entry(&passwd, "tgknock")
}

fn passwd_entry(passwd: &str, name: &str) -> Option<(u32, u32)> {
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 4 && f[0] == name).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
    })
}

fn running_as_root() -> bool {
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn ownership(path: &Path) -> Option<(u32, u32)> {
    fs::symlink_metadata(path)
        .ok()
        .filter(|m| m.is_file())
        .map(|m| (m.uid(), m.gid()))
}

/// Replaces `path` with `bytes`: a new file (never through a link) with `mode` and, as
/// root, `owner`, synced, then renamed over the old one.
fn replace(path: &Path, bytes: &[u8], mode: u32, owner: Option<(u32, u32)>) -> Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.setup.{}.tmp", std::process::id()));
    let written = (|| -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(crate::os::files::O_NOFOLLOW)
            .open(&tmp)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        if let Some((uid, gid)) = owner
            && running_as_root()
        {
            std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
        }
        f.write_all(bytes)?;
        f.sync_all()
    })();
    if let Err(e) = written.and_then(|()| fs::rename(&tmp, path)) {
        let _ = fs::remove_file(&tmp);
        return Err(Error::file(path, "write", e));
    }
    Ok(())
}

/// Fails before the first question when the files could not be written at the end: the
/// directory (or the nearest one that exists) takes no new file.
fn writable(dir: &Path) -> Result<()> {
    let mut at = dir;
    while !at.exists() {
        match at.parent() {
            Some(p) if !p.as_os_str().is_empty() => at = p,
            _ => break,
        }
    }
    let probe = at.join(format!(".tgknock-setup.{}.probe", std::process::id()));
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(crate::os::files::O_NOFOLLOW)
        .open(&probe)
    {
        Ok(_) => {
            let _ = fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => Err(Error::Usage {
            argument: None,
            problem: format!(
                "cannot write in {} ({e}): run setup as root (sudo tgknock setup), or give --config a path you can write",
                at.display()
            ),
        }),
    }
}

/// The command that starts the service this board has.
fn start_command(path: &Path) -> String {
    let default = path == Path::new(config::DEFAULT_PATH);
    let exists = |p: &str| Path::new(p).exists();
    let running = Config::load(Some(path))
        .ok()
        .and_then(|c| {
            crate::store::state::PidLock::holder(&crate::store::state::Paths::new(
                &c.files.state_dir,
            ))
        })
        .is_some();
    let unit = [
        "/etc/systemd/system/tgknock.service",
        "/lib/systemd/system/tgknock.service",
        "/usr/lib/systemd/system/tgknock.service",
    ]
    .iter()
    .any(|p| exists(p));
    if default && exists("/run/systemd/system") && unit {
        return if running {
            "systemctl restart tgknock".into()
        } else {
            "systemctl enable --now tgknock".into()
        };
    }
    if default && exists("/etc/init.d/tgknock") {
        let verb = if running { "restart" } else { "start" };
        return if exists("/sbin/openrc-run") {
            format!("rc-service tgknock {verb}")
        } else {
            format!("/etc/init.d/tgknock {verb}")
        };
    }
    format!(
        "tgknock run --config {}   (in the background; the README shows the service files)",
        path.display()
    )
}

/// The private networks this board is on, from its on-link routes: what
/// `TGKNOCK_ALWAYS_ALLOW` should exempt so a mistake cannot lock the owner out at home.
fn detect_lan() -> Vec<Cidr> {
    let v4 = fs::read_to_string("/proc/net/route").unwrap_or_default();
    let v6 = fs::read_to_string("/proc/net/ipv6_route").unwrap_or_default();
    lan_from_routes(&v4, &v6)
}

/// Interfaces whose networks are not the LAN: loopback, containers, VMs, bridges of them.
fn virtual_interface(name: &str) -> bool {
    name == "lo"
        || [
            "docker", "br-", "veth", "virbr", "vnet", "cni", "flannel", "kube", "lxc", "podman",
        ]
        .iter()
        .any(|p| name.starts_with(p))
}

/// The on-link routes of `/proc/net/route` and `/proc/net/ipv6_route` that are private
/// networks (RFC 1918 for IPv4, unique local fc00::/7 for IPv6) of real interfaces, in
/// the order of the routes, IPv4 first.
pub(crate) fn lan_from_routes(v4: &str, v6: &str) -> Vec<Cidr> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    const RTF_UP: u32 = 0x1;
    const RTF_GATEWAY: u32 = 0x2;
    let mut out: Vec<Cidr> = Vec::new();
    for l in v4.lines().skip(1) {
        let f: Vec<&str> = l.split_whitespace().collect();
        let [iface, dest, gw, flags, _, _, _, mask, ..] = f[..] else {
            continue;
        };
        let hex = |s: &str| u32::from_str_radix(s, 16).ok();
        let (Some(dest), Some(gw), Some(flags), Some(mask)) =
            (hex(dest), hex(gw), hex(flags), hex(mask))
        else {
            continue;
        };
        if virtual_interface(iface) || flags & RTF_UP == 0 || flags & RTF_GATEWAY != 0 || gw != 0 {
            continue;
        }
        // The kernel prints the address as it lies in memory: network order.
        let addr = Ipv4Addr::from(dest.to_ne_bytes());
        let prefix = mask.count_ones() as u8;
        if prefix < 8 || !addr.is_private() {
            continue;
        }
        if let Some(c) = Cidr::new(IpAddr::V4(addr), prefix)
            && !out.contains(&c)
        {
            out.push(c);
        }
    }
    for l in v6.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        let [dest, plen, _, _, next_hop, _, _, _, flags, iface] = f[..] else {
            continue;
        };
        let (Ok(dest), Ok(plen), Ok(hop), Ok(flags)) = (
            u128::from_str_radix(dest, 16),
            u8::from_str_radix(plen, 16),
            u128::from_str_radix(next_hop, 16),
            u32::from_str_radix(flags, 16),
        ) else {
            continue;
        };
        let addr = Ipv6Addr::from(dest);
        let unique_local = addr.segments()[0] & 0xfe00 == 0xfc00;
        if virtual_interface(iface)
            || flags & RTF_UP == 0
            || hop != 0
            || !(8..=127).contains(&plen)
            || !unique_local
        {
            continue;
        }
        if let Some(c) = Cidr::new(IpAddr::V6(addr), plen)
            && !out.contains(&c)
        {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lan_is_the_private_on_link_networks_of_real_interfaces() {
        let v4 = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
eth0\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
eth0\t0001A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n\
wlan0\t0000000A\t00000000\t0001\t0\t0\t600\t00FFFFFF\t0\t0\t0\n\
docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n\
eth1\t007100CB\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
eth0\t0002A8C0\t0101A8C0\t0003\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        let v6 = "fe800000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0\n\
fd123456000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0\n\
20010db8000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0\n\
fd123456000000000000000000000002 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000002 00000000 80200001     eth0\n\
ff000000000000000000000000000000 08 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000004 00000000 00000001     eth0\n\
00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003     eth0\n";
        let got: Vec<String> = lan_from_routes(v4, v6)
            .iter()
            .map(Cidr::to_string)
            .collect();
        assert_eq!(got, ["192.168.1.0/24", "10.0.0.0/24", "fd12:3456::/64"]);
        assert!(lan_from_routes("", "").is_empty());
        assert!(lan_from_routes("garbage\nx y z\n", "1 2 3\n").is_empty());
    }

    #[test]
    fn answers_are_checked() {
        assert_eq!(parse_users("123456789").unwrap(), "123456789");
        assert_eq!(parse_users(" 1, 2 2,3 ").unwrap(), "1,2,3");
        for bad in ["", "@ada", "-5", "0", "12x", "99999999999999999999"] {
            assert!(parse_users(bad).is_err(), "{bad}");
        }
        assert!(
            parse_users("abc")
                .unwrap_err()
                .contains("'abc' is not a numeric Telegram user id")
        );
        assert_eq!(yes_no("Y").unwrap(), "y");
        assert_eq!(yes_no("no").unwrap(), "n");
        assert!(yes_no("maybe").is_err());
    }

    #[test]
    fn the_config_keeps_what_setup_does_not_set() {
        let old = "# mine\nTGKNOCK_TOKEN_FILE=/etc/tgknock/token\nTGKNOCK_ALLOWED_USERS=\nTGKNOCK_GATES=\"ssh=22/tcp\"\n#TGKNOCK_ALWAYS_ALLOW=192.168.1.0/24\nTGKNOCK_OPEN_FOR=5m\nTGKNOCK_TOKEN=1:x\nTGKNOCK_GATES=web=80/tcp\n";
        let keys = vec![
            (TOKEN_FILE, "/etc/tgknock/token".to_string()),
            (USERS, "42".to_string()),
            (GATES, "ssh=22/tcp web=80/tcp".to_string()),
            (ALWAYS_ALLOW, "192.168.1.0/24".to_string()),
        ];
        let new = updated_config(Some(old), &keys);
        let lines: Vec<&str> = new.lines().collect();
        assert_eq!(
            &lines[..6],
            [
                "# mine",
                "TGKNOCK_TOKEN_FILE=/etc/tgknock/token",
                "TGKNOCK_ALLOWED_USERS=42",
                "TGKNOCK_GATES=\"ssh=22/tcp web=80/tcp\"",
                "#TGKNOCK_ALWAYS_ALLOW=192.168.1.0/24",
                "TGKNOCK_OPEN_FOR=5m",
            ]
        );
        assert!(lines[7].starts_with("# written by tgknock setup on "));
        assert_eq!(lines[8], "TGKNOCK_ALWAYS_ALLOW=192.168.1.0/24");
        assert_eq!(lines.len(), 9, "{new}");
        // What it writes reads back.
        let parsed = config::parse_file(&new).unwrap();
        assert!(
            parsed
                .iter()
                .any(|(_, k, v)| k == GATES && v == "ssh=22/tcp web=80/tcp")
        );
        assert_eq!(
            value_of(&new, GATES).as_deref(),
            Some("ssh=22/tcp web=80/tcp")
        );
        let fresh = updated_config(None, &keys);
        assert!(fresh.starts_with("# tgknock's configuration"), "{fresh}");
        assert!(config::parse_file(&fresh).unwrap().len() == 4);
    }

    #[test]
    fn tokens_are_seen_in_answers_and_users_are_merged() {
        let token = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw";
        for text in [
            token,
            &format!(" {token} "),
            &format!("'{token}',"),
            &format!("id {token}"),
        ] {
            assert!(looks_like_token(text), "{text}");
        }
        for text in ["123456789", "42, 43", "ssh=22/tcp", "1:short", "replace 42"] {
            assert!(!looks_like_token(text), "{text}");
        }
        assert_eq!(merge_users(&[42, 43], "43,44"), "42,43,44");
        assert_eq!(merge_users(&[], "44"), "44");
    }

    #[test]
    fn the_service_user_is_found_in_passwd() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\ntgknock:x:998:997::/var/lib/tgknock:/usr/sbin/nologin\n";
        assert_eq!(passwd_entry(passwd, "tgknock"), Some((998, 997)));
        assert_eq!(passwd_entry(passwd, "nobody"), None);
        assert_eq!(passwd_entry("tgknock:x:a:b\n", "tgknock"), None);
    }
}
