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

mod answers;
mod board;
mod config_text;
mod hello;

use std::fs;
use std::io::{IsTerminal, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::base::addr::Cidr;
use crate::base::duration;
use crate::base::error::{Error, Result};
use crate::base::gate;
use crate::chat::telegram::BotApi;
use crate::store::config::{self, Config, TelegramSettings, Token, keys};
use answers::{Answers, clean, merge_users, parse_users, yes_no};
use board::{detect_lan, ownership, replace, service_owner, start_command, writable};
use config_text::{telegram_settings, updated_config, value_of};
use hello::{Hello, wait_for_hello, who};

/// How long setup waits for the owner's first message by default.
pub(crate) const WAIT: u64 = 300;

/// The keys setup writes; every other line of an existing config is kept.
const TOKEN_FILE: &str = keys::TOKEN_FILE.name;
const USERS: &str = keys::ALLOWED_USERS.name;
const GATES: &str = keys::GATES.name;
const ALWAYS_ALLOW: &str = keys::ALWAYS_ALLOW.name;

/// `tgknock setup`: returns the exit code (`check`'s), or the error that decides it.
pub(crate) fn run(path: Option<PathBuf>, wait: Option<String>) -> Result<i32> {
    let path = path.unwrap_or_else(|| PathBuf::from(config::DEFAULT_PATH));
    let wait = wait_arg(wait)?;
    let started = Instant::now();
    let place = Place::find(path)?;
    let settings = telegram_settings(&place.path, place.existing.as_deref())?;
    let answers = Answers {
        terminal: std::io::stdin().is_terminal(),
    };
    place.introduce();

    let (token, api, asked_at) = ask_token(&answers, &settings)?;
    let typing = started.elapsed();
    let senders = wait_for_hello(&api, wait, asked_at)?;
    let waited = started.elapsed() - typing;
    let proposed = propose(&senders, wait, &place.path);
    let users = ask_users(&answers, place.existing.as_deref(), &senders, proposed)?;
    let gates = ask_gates(&answers, place.existing.as_deref())?;
    let always_allow = ask_lan(&answers)?;

    let mut keys: Vec<(&str, String)> = vec![
        (TOKEN_FILE, place.token_path.display().to_string()),
        (USERS, users),
        (GATES, gates),
    ];
    if let Some(a) = always_allow {
        keys.push((ALWAYS_ALLOW, a));
    }
    let text = updated_config(place.existing.as_deref(), &keys);
    place.write(&token, &text)?;
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
    check_and_say(&place.path)
}

/// `--wait`: how long to wait for the owner's first message, 1s to 1h.
fn wait_arg(wait: Option<String>) -> Result<u64> {
    match wait {
        None => Ok(WAIT),
        Some(w) => match duration::parse(&w, None) {
            Ok(s) if (1..=3600).contains(&s) => Ok(s),
            Ok(_) => Err(Error::usage("--wait", "must be between 1s and 1h")),
            Err(e) => Err(Error::usage("--wait", e)),
        },
    }
}

/// Where setup writes: the config, its text as it is, its directory and the token file.
struct Place {
    path: PathBuf,
    existing: Option<String>,
    dir: PathBuf,
    token_path: PathBuf,
}

impl Place {
    /// The config at `path` and the token file it names (else `token` beside it); fails
    /// before the first question when they could not be written at the end.
    fn find(path: PathBuf) -> Result<Place> {
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
        Ok(Place {
            path,
            existing,
            dir,
            token_path,
        })
    }

    /// What setup is about to do.
    fn introduce(&self) {
        println!(
            "tgknock setup: writes {} and the token file {}.",
            self.path.display(),
            self.token_path.display()
        );
        if self.existing.is_some() {
            println!(
                "  (the file exists: setup replaces its token, gates and LAN lines, keeps the users it allows unless told to replace them, and keeps the rest)"
            );
        }
        println!(
            "Nothing is written until the last question; Ctrl-C leaves everything as it was.\n"
        );
    }

    /// Writes the token file and the config `text`, Ctrl-C held off meanwhile.
    fn write(&self, token: &Token, text: &str) -> Result<()> {
        let owner = service_owner();
        {
            let _held = crate::os::sys::NoInterrupt::new();
            let dir = &self.dir;
            if !dir.exists() {
                fs::DirBuilder::new()
                    .recursive(true)
                    .create(dir)
                    .map_err(|e| Error::file(dir, "create the directory", e))?;
                let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o750));
                if let Some((_, gid)) = owner {
                    let _ = std::os::unix::fs::chown(dir, Some(0), Some(gid));
                }
            }
            // The token: the service user's (who reads it), nobody else's.
            let token_owner = ownership(&self.token_path).or(owner);
            replace(
                &self.token_path,
                format!("{}\n", token.expose()).as_bytes(),
                0o600,
                token_owner,
            )?;
            // The config: its owner's (root's), readable by the service user's group.
            let config_owner = ownership(&self.path).or(owner.map(|(_, gid)| (0, gid)));
            replace(&self.path, text.as_bytes(), 0o640, config_owner)?;
        }
        println!(
            "\nWrote {} (mode 0640) and {} (mode 0600{}).",
            self.path.display(),
            self.token_path.display(),
            ownership(&self.token_path)
                .map(|(uid, _)| format!(", owner uid {uid}"))
                .unwrap_or_default()
        );
        Ok(())
    }
}

/// Asks for the token and checks it with `getMe`; then asks the owner to write to the
/// bot. The token, the client, and Telegram's clock when setup asked.
fn ask_token(answers: &Answers, settings: &TelegramSettings) -> Result<(Token, BotApi, i64)> {
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
    let api = BotApi::new(settings, &token)?;
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
    Ok((token, api, asked_at as i64))
}

/// Says who wrote; the sender's id when exactly one did.
fn propose(senders: &[Hello], wait: u64, path: &Path) -> Option<String> {
    match senders {
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
    }
}

/// Asks for the allowed users: the ones the config allows already are kept, unless the
/// answer says to replace them.
fn ask_users(
    answers: &Answers,
    existing: Option<&str>,
    senders: &[Hello],
    proposed: Option<String>,
) -> Result<String> {
    let kept: Vec<i64> = existing
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
    answers.ask(&question, default.as_deref(), false, what, &|a| match a
        .trim()
        .strip_prefix("replace")
    {
        Some(ids) => parse_users(ids),
        None => parse_users(a).map(|ids| merge_users(&kept, &ids)),
    })
}

/// Asks for the gates, proposing the config's (when valid) or `ssh=22/tcp`.
fn ask_gates(answers: &Answers, existing: Option<&str>) -> Result<String> {
    let current_gates = existing
        .and_then(|t| value_of(t, GATES))
        .filter(|g| gate::parse_gates(g).is_ok());
    answers.ask(
        "Gates, as name=port/proto (e.g. ssh=22/tcp web=80/tcp,443/tcp)",
        Some(current_gates.as_deref().unwrap_or("ssh=22/tcp")),
        false,
        "the gates",
        &|a| {
            let a = a.split_whitespace().collect::<Vec<_>>().join(" ");
            gate::parse_gates(&a).map(|_| a)
        },
    )
}

/// Asks whether to exempt the private networks this board is on (`None`: left as is).
fn ask_lan(answers: &Answers) -> Result<Option<String>> {
    let lan = detect_lan();
    if lan.is_empty() {
        println!(
            "No private network found on this board's interfaces: {ALWAYS_ALLOW} is left as it is."
        );
        return Ok(None);
    }
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
    Ok((yes == "y").then_some(list))
}

/// Runs `check` on the config written, then says the one command left.
fn check_and_say(path: &Path) -> Result<i32> {
    println!(
        "\nChecking it all: tgknock check --config {}",
        path.display()
    );
    let code = crate::cli::check::run(Config::load(Some(path)))?;
    println!();
    if code == 0 {
        println!(
            "One command left, to start the service:\n  {}",
            start_command(path)
        );
    } else {
        println!(
            "Fix what check reports (edit {}), run `tgknock check --config {}` again, then:\n  {}",
            path.display(),
            path.display(),
            start_command(path)
        );
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::answers::looks_like_token;
    use super::board::{lan_from_routes, passwd_entry};
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
