//! What to do with a message: authorization, addressing, staleness and limits, decided
//! without doing anything. The daemon carries out the [`Action`].

use crate::base::addr::Cidr;
use crate::base::duration;
use crate::base::duration::Length;
use crate::base::gate::GateName;
use crate::base::totp::{self, Check};
use crate::chat::command::{self, Command, Parsed};
use crate::chat::telegram::{Message, User};
use crate::store::config::Config;
use crate::store::state::{Actor, Ban, Opening, TooLong};

/// How long a ban lasts when `/ban` names no duration.
pub(crate) const BAN_FOR: u64 = 86_400;

/// Now, by both clocks: Telegram's judges a message's age (a board without a real-time
/// clock may be hours off), the board's sets deadlines (the kernel keeps its time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Now {
    pub(crate) telegram: u64,
    pub(crate) board: u64,
}

/// Why a message is left alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ignored {
    /// No sender (a channel post, an anonymous admin).
    NoSender,
    /// A forward quotes someone: it is never a command.
    Forwarded,
    /// Chatter, a command for another bot, an unknown command in a group.
    NotForUs,
}

/// What the daemon does with a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    Ignore(Ignored),
    /// A stranger's message: nothing is done and nothing said; `tried` when it was a
    /// command (counted for the owners' summary) rather than chatter.
    Stranger {
        tried: bool,
    },
    /// Nothing is done; the sender is told why (`text`), and the log says `log`.
    Refuse {
        text: String,
        log: String,
    },
    Help,
    Status,
    Open {
        gate: GateName,
        opening: Opening,
    },
    /// `None`: every gate.
    Close {
        gate: Option<GateName>,
    },
    /// A command that changes something (see [`guarded`]), from chat with the second
    /// factor on but without a code: the bot asks for one, and the user's next code
    /// completes `request`.
    NeedCode {
        request: Command,
    },
    /// A command that changes something (`Open`, `Run`, `Ban`, `Unban`) and its code, to be
    /// checked before it is carried out.
    WithCode {
        action: Box<Action>,
        code: String,
    },
    /// A message that is only a code: it completes the sender's pending request, if any.
    Code(String),
    Ban {
        ban: Ban,
    },
    Unban {
        addr: Cidr,
    },
    /// Run the declared action of this name.
    Run {
        name: String,
    },
    /// List the declared actions.
    Actions,
}

/// Decides what `msg` asks for. `bot` is the bot's username, for `/command@bot`.
pub(crate) fn decide(msg: &Message, cfg: &Config, bot: &str, now: Now) -> Action {
    let Some(from) = &msg.from else {
        return Action::Ignore(Ignored::NoSender);
    };
    if msg.is_forwarded() {
        return Action::Ignore(Ignored::Forwarded);
    }
    let parsed = command::parse_with(
        msg.text.as_deref().unwrap_or(""),
        bot,
        &cfg.gates,
        cfg.totp.is_some(),
    );
    if !cfg.telegram.allowed_users.contains(&from.id) {
        let tried = matches!(parsed, Parsed::Command(_) | Parsed::Invalid(_))
            || (msg.chat.is_private() && matches!(parsed, Parsed::Unknown(_)));
        return Action::Stranger { tried };
    }
    let command = match parsed {
        Parsed::Ignore => return Action::Ignore(Ignored::NotForUs),
        Parsed::Unknown(_) if !msg.chat.is_private() => return Action::Ignore(Ignored::NotForUs),
        Parsed::Unknown(reason) | Parsed::Invalid(reason) => {
            return Action::Refuse {
                text: format!(
                    "{reason}.\n\n{}",
                    command::usage(&cfg.gates, cfg.limits.open_for, cfg.limits.max_open_for)
                ),
                log: format!("{} sent something unparseable: {reason}", from.describe()),
            };
        }
        Parsed::Command(c) => c,
    };
    let max_age = cfg.limits.max_age;
    let age = (now.telegram as i64).saturating_sub(msg.date);
    if age > max_age as i64 {
        return Action::Refuse {
            text: format!(
                "Not executed: this command was sent {} ago, at {}. Commands older than {} (TGKNOCK_MAX_AGE) are ignored, so a delayed message cannot open a port. Send it again.",
                duration::human(age as u64),
                duration::utc_full(msg.date.max(0) as u64),
                duration::human(max_age)
            ),
            log: format!(
                "not executing a command from {} sent {} ago (TGKNOCK_MAX_AGE={})",
                from.describe(),
                duration::human(age as u64),
                duration::to_config(max_age)
            ),
        };
    }
    let (command, code) = match command {
        Command::WithCode { code, command } => (*command, Some(code)),
        c => (c, None),
    };
    let action = carry(command.clone(), from, cfg, now);
    guarded(action, command, code, cfg)
}

/// With the second factor on, an action that changes something needs a code: with one,
/// it is checked first; without, the bot asks for it. Closing changes something too, but
/// only ever towards closed, so it needs none; refusals, `/status`, `/help` and the list
/// of actions change nothing.
fn guarded(action: Action, request: Command, code: Option<String>, cfg: &Config) -> Action {
    let changes = match &action {
        Action::Open { .. } | Action::Run { .. } | Action::Ban { .. } | Action::Unban { .. } => {
            true
        }
        Action::Ignore(_)
        | Action::Stranger { .. }
        | Action::Refuse { .. }
        | Action::Help
        | Action::Status
        | Action::Close { .. }
        | Action::NeedCode { .. }
        | Action::WithCode { .. }
        | Action::Code(_)
        | Action::Actions => false,
    };
    if !changes || cfg.totp.is_none() {
        return action;
    }
    match code {
        None => Action::NeedCode { request },
        Some(code) => Action::WithCode {
            action: Box::new(action),
            code,
        },
    }
}

/// What an allowed user's command asks for, before the second factor.
fn carry(command: Command, from: &User, cfg: &Config, now: Now) -> Action {
    match command {
        Command::Help => Action::Help,
        Command::Status => Action::Status,
        Command::Close { gate } => Action::Close { gate },
        Command::Ban { addr, length } => Action::Ban {
            ban: Ban {
                addr,
                until: match length {
                    Length::Default => Some(now.board + BAN_FOR),
                    Length::Secs(s) => Some(now.board + s),
                    Length::UntilClosed => None,
                },
                by: Actor::Telegram(from.id),
            },
        },
        Command::Unban { addr } => Action::Unban { addr },
        Command::Run { name: None } => Action::Actions,
        Command::Run { name: Some(name) } => match cfg.actions.find(&name) {
            Some(_) => Action::Run { name },
            None => Action::Refuse {
                text: if cfg.actions.list.is_empty() {
                    format!(
                        "There is no action '{name}': none is declared (TGKNOCK_ACTION_<NAME>)."
                    )
                } else {
                    format!(
                        "There is no action '{name}'. Actions: {}.",
                        cfg.actions.names()
                    )
                },
                log: format!(
                    "{} asked to run the unknown action '{name}'",
                    from.describe()
                ),
            },
        },
        Command::Code(code) => Action::Code(code),
        // Taken apart by `decide`; a code inside a code is nothing.
        Command::WithCode { .. } => Action::Ignore(Ignored::NotForUs),
        Command::Open {
            gate,
            length,
            from: source,
        } => open_action(gate, length, source, from, cfg, now),
    }
}

/// An opening from chat: refused beyond `TGKNOCK_MAX_OPEN_FOR`.
fn open_action(
    gate: GateName,
    length: Length,
    source: Option<Cidr>,
    from: &User,
    cfg: &Config,
    now: Now,
) -> Action {
    let opening = match Opening::for_request(
        length,
        source,
        Actor::Telegram(from.id),
        now.board,
        &cfg.limits,
        true,
    ) {
        Ok(o) => o,
        Err(TooLong { asked, max }) => {
            let asked = asked.map_or("without an end".to_string(), |s| {
                format!("for {}", duration::human(s))
            });
            return Action::Refuse {
                text: format!(
                    "Refused: {gate} cannot be opened {asked}; the limit is {} (TGKNOCK_MAX_OPEN_FOR).",
                    duration::human(max)
                ),
                log: format!(
                    "{} asked to open {gate} {asked}, beyond TGKNOCK_MAX_OPEN_FOR",
                    from.describe()
                ),
            };
        }
    };
    Action::Open { gate, opening }
}

/// The code `code` from `from` for the request the bot asked a code for at `asked_at`
/// (board time): the request as of now (an opening's deadline counts from now), with the
/// code to check, if the code came within [`totp::ASK_SECS`].
pub(crate) fn complete(
    request: &Command,
    asked_at: u64,
    code: String,
    from: &User,
    cfg: &Config,
    now: Now,
) -> Action {
    if now.board > asked_at + totp::ASK_SECS {
        return Action::Refuse {
            text: format!(
                "That code came more than {} after the bot asked for it: nothing done. Send the command again.",
                duration::human(totp::ASK_SECS)
            ),
            log: format!("{} sent a code too late", from.describe()),
        };
    }
    let action = carry(request.clone(), from, cfg, now);
    guarded(action, request.clone(), Some(code), cfg)
}

/// What a code-guarded command is, for the bot's question ("A code is needed to …").
pub(crate) fn what(request: &Command) -> String {
    match request {
        Command::Open { gate, .. } => format!("open {gate}"),
        Command::Run { name: Some(name) } => format!("run {name}"),
        Command::Ban { addr, .. } => format!("ban {addr}"),
        Command::Unban { addr } => format!("unban {addr}"),
        _ => "do that".into(),
    }
}

/// What to say when a code was not accepted: the reply to the sender, and what every
/// allowed user is told (when the sender has just been locked out). `now` is Telegram's
/// clock, as the lockout's.
pub(crate) fn code_refusal(check: Check, who: &str, now: u64) -> Option<(String, Option<String>)> {
    let hour = duration::human(totp::LOCKOUT);
    let until = |u: u64| {
        format!(
            "{} (in {})",
            duration::utc_short(u, now),
            duration::human(u.saturating_sub(now))
        )
    };
    Some(match check {
        Check::Accepted(_) => return None,
        Check::Wrong { replayed, left } => (
            format!(
                "{}: nothing done. {left} more wrong code{} within {} and code-guarded commands from you are refused for {hour}.",
                if replayed {
                    "That code was used already (each is accepted once; a new one comes every 30 s)"
                } else {
                    "Wrong code"
                },
                if left == 1 { "" } else { "s" },
                duration::human(totp::WRONG_WINDOW)
            ),
            None,
        ),
        Check::LockedNow { until: u } => (
            format!(
                "Wrong code: nothing done. That was {} wrong codes within {}: code-guarded commands from you are refused until {}: {GUARDED}. {FREE} still work.",
                totp::WRONG_MAX,
                duration::human(totp::WRONG_WINDOW),
                until(u)
            ),
            Some(format!(
                "{who} sent {} wrong codes within {}: code-guarded commands from them ({GUARDED}) are refused until {}. If that was not them, their Telegram account may be in other hands.",
                totp::WRONG_MAX,
                duration::human(totp::WRONG_WINDOW),
                until(u)
            )),
        ),
        Check::Locked { until: u } => (
            format!(
                "Refused: too many wrong codes; code-guarded commands from you are refused until {}: {GUARDED}. {FREE} still work.",
                until(u)
            ),
            None,
        ),
    })
}

/// The commands a lockout refuses, and those it leaves.
const GUARDED: &str = "/open, Open buttons, /run, /ban and /unban";
const FREE: &str = "/close, /status and /help";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::telegram::{Chat, ChatKind, User};

    const OWNER: i64 = 111;
    const NOW: Now = Now {
        telegram: 1_000_000,
        board: 2_000_000,
    };

    /// [`cfg`] with the second factor on: RFC 6238's secret in a file of its own (`tag`
    /// keeps the tests' files apart), read when the config is made.
    fn cfg_with_totp(tag: &str, extra: &[(&str, &str)]) -> Config {
        let dir = std::env::temp_dir().join(format!("tgk-decide-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("totp");
        std::fs::write(&file, "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\n").unwrap();
        let mut keys = vec![("TGKNOCK_TOTP_SECRET_FILE", file.to_str().unwrap())];
        keys.extend_from_slice(extra);
        let c = cfg(&keys);
        std::fs::remove_dir_all(&dir).unwrap();
        c
    }

    fn cfg(extra: &[(&str, &str)]) -> Config {
        let mut env: Vec<(String, String)> = vec![
            ("TGKNOCK_ALLOWED_USERS".into(), OWNER.to_string()),
            ("TGKNOCK_GATES".into(), "ssh=22/tcp web=80/tcp".into()),
            ("TGKNOCK_MAX_OPEN_FOR".into(), "2h".into()),
        ];
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Config::from_sources(None, &env).unwrap()
    }

    fn msg(from: i64, kind: ChatKind, text: &str, date: i64) -> Message {
        serde_json::from_value(serde_json::json!({
            "message_id": 1,
            "from": {"id": from, "is_bot": false, "first_name": "x"},
            "chat": {"id": from, "type": kind.to_string()},
            "date": date,
            "text": text,
        }))
        .unwrap()
    }

    fn d(from: i64, text: &str) -> Action {
        decide(
            &msg(from, ChatKind::Private, text, NOW.telegram as i64),
            &cfg(&[]),
            "bot",
            NOW,
        )
    }

    fn ssh() -> GateName {
        GateName::new("ssh").unwrap()
    }

    #[test]
    fn the_owner_opens_with_deadlines_by_the_boards_clock() {
        let got = d(OWNER, "/open 30m");
        let Action::Open { gate, opening } = got else {
            panic!("{got:?}")
        };
        assert_eq!(gate, ssh());
        assert_eq!(opening.until, Some(NOW.board + 1800));
        assert_eq!(opening.by, Actor::Telegram(OWNER));
        assert_eq!(d(OWNER, "/close"), Action::Close { gate: None });
        assert_eq!(d(OWNER, "/status"), Action::Status);
        assert_eq!(d(OWNER, "/start"), Action::Help);
    }

    #[test]
    fn strangers_are_counted_only_when_they_try() {
        assert_eq!(d(222, "/open"), Action::Stranger { tried: true });
        assert_eq!(d(222, "/frobnicate"), Action::Stranger { tried: true });
        assert_eq!(d(222, "hello"), Action::Stranger { tried: false });
        let group = msg(222, ChatKind::Group, "/frobnicate", NOW.telegram as i64);
        assert_eq!(
            decide(&group, &cfg(&[]), "bot", NOW),
            Action::Stranger { tried: false }
        );
    }

    #[test]
    fn addressing_forwards_and_chatter() {
        assert_eq!(
            d(OWNER, "/open@otherbot"),
            Action::Ignore(Ignored::NotForUs)
        );
        assert!(matches!(d(OWNER, "/open@bot"), Action::Open { .. }));
        assert_eq!(d(OWNER, "nice weather"), Action::Ignore(Ignored::NotForUs));
        let mut fwd = msg(OWNER, ChatKind::Private, "/open", NOW.telegram as i64);
        fwd.forward_origin = Some(crate::chat::telegram::Present);
        assert_eq!(
            decide(&fwd, &cfg(&[]), "bot", NOW),
            Action::Ignore(Ignored::Forwarded)
        );
        let mut anonymous = fwd.clone();
        anonymous.forward_origin = None;
        anonymous.from = None;
        assert_eq!(
            decide(&anonymous, &cfg(&[]), "bot", NOW),
            Action::Ignore(Ignored::NoSender)
        );
        let group = Message {
            chat: Chat {
                id: -5,
                kind: ChatKind::Supergroup,
            },
            ..msg(OWNER, ChatKind::Private, "/frobnicate", NOW.telegram as i64)
        };
        assert_eq!(
            decide(&group, &cfg(&[]), "bot", NOW),
            Action::Ignore(Ignored::NotForUs)
        );
    }

    #[test]
    fn staleness_is_judged_by_telegrams_clock() {
        let at = |age: i64| {
            decide(
                &msg(OWNER, ChatKind::Private, "/open", NOW.telegram as i64 - age),
                &cfg(&[]),
                "bot",
                NOW,
            )
        };
        assert!(matches!(at(60), Action::Open { .. }), "at the limit");
        let got = at(61);
        let Action::Refuse { text, log } = got else {
            panic!("{got:?}")
        };
        assert!(
            text.starts_with("Not executed: this command was sent 1 min 1 s ago"),
            "{text}"
        );
        assert!(log.contains("TGKNOCK_MAX_AGE=1m"), "{log}");
        // The board's clock (NOW.board is far ahead) plays no part.
        assert!(matches!(at(-5), Action::Open { .. }));
    }

    #[test]
    fn limits_and_bad_commands_are_refused_with_the_reason() {
        let got = d(OWNER, "/open 3h");
        let Action::Refuse { text, .. } = got else {
            panic!("{got:?}")
        };
        assert_eq!(
            text,
            "Refused: ssh cannot be opened for 3 h; the limit is 2 h (TGKNOCK_MAX_OPEN_FOR)."
        );
        let got = d(OWNER, "/open 0");
        let Action::Refuse { text, .. } = got else {
            panic!("{got:?}")
        };
        assert!(text.contains("without an end"), "{text}");
        let got = d(OWNER, "/open sssh");
        let Action::Refuse { text, .. } = got else {
            panic!("{got:?}")
        };
        assert!(
            text.starts_with("'sssh' is not a gate") && text.contains("/open [GATE]"),
            "{text}"
        );
        let unlimited = cfg(&[("TGKNOCK_MAX_OPEN_FOR", "0")]);
        let m = msg(OWNER, ChatKind::Private, "/open 0", NOW.telegram as i64);
        let got = decide(&m, &unlimited, "bot", NOW);
        let Action::Open { opening, .. } = got else {
            panic!("{got:?}")
        };
        assert_eq!(opening.until, None);
    }

    #[test]
    fn with_the_second_factor_an_opening_needs_a_code() {
        let c = cfg_with_totp("open", &[]);
        let d = |text: &str| {
            decide(
                &msg(OWNER, ChatKind::Private, text, NOW.telegram as i64),
                &c,
                "bot",
                NOW,
            )
        };
        let Action::NeedCode { request } = d("/open web 30m") else {
            panic!("{:?}", d("/open web 30m"))
        };
        let got = d("/open web 30m 012345");
        let Action::WithCode { action, code } = got else {
            panic!("{got:?}")
        };
        let got = *action;
        let Action::Open { gate, opening } = got else {
            panic!("{got:?}")
        };
        assert_eq!((gate.as_str(), code.as_str()), ("web", "012345"));
        assert_eq!(opening.until, Some(NOW.board + 1800));
        assert_eq!(d("654321"), Action::Code("654321".into()));
        assert!(
            matches!(d("/open 3h 012345"), Action::Refuse { .. }),
            "limits first"
        );
        assert!(matches!(d("654 321"), Action::Refuse { .. }));
        assert_eq!(
            d("/close"),
            Action::Close { gate: None },
            "closing needs none"
        );
        // The code completes the request as of its own time, within two minutes.
        let owner = msg(OWNER, ChatKind::Private, "", 0).from.unwrap();
        let later = Now {
            telegram: NOW.telegram + 100,
            board: NOW.board + 100,
        };
        let got = complete(&request, NOW.board, "111111".into(), &owner, &c, later);
        let Action::WithCode { action, code } = got else {
            panic!("{got:?}")
        };
        let got = *action;
        let Action::Open { opening, .. } = got else {
            panic!("{got:?}")
        };
        assert_eq!(
            (opening.until, code.as_str()),
            (Some(later.board + 1800), "111111")
        );
        let late = Now {
            telegram: NOW.telegram + 121,
            board: NOW.board + 121,
        };
        let got = complete(&request, NOW.board, "111111".into(), &owner, &c, late);
        let Action::Refuse { text, .. } = got else {
            panic!("{got:?}")
        };
        assert!(text.contains("more than 2 min"), "{text}");
        // Without the second factor, six digits are minutes (and too many of them).
        assert!(matches!(d_plain("/open 012345"), Action::Refuse { .. }));
        assert_eq!(d_plain("654321"), Action::Ignore(Ignored::NotForUs));
    }

    /// Issue 15, point 6: every chat command that changes something needs the code, not
    /// only an opening; closing, /status, /help and the list of actions need none, and
    /// refusals come before the code.
    #[test]
    fn with_the_second_factor_run_ban_and_unban_need_a_code() {
        let c = cfg_with_totp("run", &[("TGKNOCK_ACTION_BACKUP", "/usr/local/bin/backup")]);
        let d = |text: &str| {
            decide(
                &msg(OWNER, ChatKind::Private, text, NOW.telegram as i64),
                &c,
                "bot",
                NOW,
            )
        };
        for (text, want) in [
            ("/run backup", "run backup"),
            ("/ban 203.0.113.7 1d", "ban 203.0.113.7"),
            ("/unban 203.0.113.7", "unban 203.0.113.7"),
            ("/open", "open ssh"),
            ("enable ssh", "open ssh"),
        ] {
            let Action::NeedCode { request } = d(text) else {
                panic!("{text}: {:?}", d(text))
            };
            assert_eq!(what(&request), want, "{text}");
            // The code sent when asked completes it.
            let owner = msg(OWNER, ChatKind::Private, "", 0).from.unwrap();
            assert!(
                matches!(
                    complete(&request, NOW.board, "111111".into(), &owner, &c, NOW),
                    Action::WithCode { .. }
                ),
                "{text}"
            );
        }
        let got = d("/run backup 492039");
        let Action::WithCode { action, code } = got else {
            panic!("{got:?}")
        };
        assert_eq!(
            (*action, code.as_str()),
            (
                Action::Run {
                    name: "backup".into()
                },
                "492039"
            )
        );
        let got = d("/ban 203.0.113.7 1d 492039");
        let Action::WithCode { action, .. } = got else {
            panic!("{got:?}")
        };
        let got = *action;
        let Action::Ban { ban } = got else {
            panic!("{got:?}")
        };
        assert_eq!(ban.until, Some(NOW.board + 86_400));
        assert!(matches!(
            d("/unban 203.0.113.7 492039"),
            Action::WithCode { .. }
        ));
        assert!(matches!(d("/run nope 492039"), Action::Refuse { .. }));
        assert_eq!(d("/run"), Action::Actions);
        assert_eq!(
            d("/close web"),
            Action::Close {
                gate: Some(GateName::new("web").unwrap())
            }
        );
        assert_eq!(d("disable ssh"), Action::Close { gate: Some(ssh()) });
        assert_eq!(d("/status"), Action::Status);
        assert_eq!(d("/help"), Action::Help);
        // Strangers never reach the code.
        let stranger = msg(
            222,
            ChatKind::Private,
            "/run backup 492039",
            NOW.telegram as i64,
        );
        assert_eq!(
            decide(&stranger, &c, "bot", NOW),
            Action::Stranger { tried: true }
        );
    }

    fn d_plain(text: &str) -> Action {
        d(OWNER, text)
    }

    #[test]
    fn bans_last_a_day_unless_told() {
        let got = d(OWNER, "/ban 203.0.113.9");
        let Action::Ban { ban } = got else {
            panic!("{got:?}")
        };
        assert_eq!(ban.until, Some(NOW.board + BAN_FOR));
        assert_eq!(ban.by, Actor::Telegram(OWNER));
        let got = d(OWNER, "/ban 2h 2001:db8::/64");
        let Action::Ban { ban } = got else {
            panic!("{got:?}")
        };
        assert_eq!(ban.until, Some(NOW.board + 7200));
        let got = d(OWNER, "/ban 10.0.0.1 0");
        let Action::Ban { ban } = got else {
            panic!("{got:?}")
        };
        assert_eq!(ban.until, None);
        assert!(matches!(d(OWNER, "/unban 10.0.0.1"), Action::Unban { .. }));
        for bad in [
            "/ban 0.0.0.0/0",
            "/ban ::/0",
            "/ban",
            "/ban 1.2.3.4 5.6.7.8",
            "/unban",
        ] {
            assert!(matches!(d(OWNER, bad), Action::Refuse { .. }), "{bad}");
        }
        assert_eq!(d(222, "/ban 10.0.0.1"), Action::Stranger { tried: true });
        let text = |c: Check| code_refusal(c, "7 (x)", NOW.board).map(|(t, o)| (t, o.is_some()));
        assert_eq!(text(Check::Accepted(1)), None);
        let (t, told) = text(Check::LockedNow {
            until: NOW.board + 3600,
        })
        .unwrap();
        assert!(
            told && t.contains(
                "5 wrong codes within 1 h: code-guarded commands from you are refused until"
            ) && t.contains("UTC (in 1 h)")
                && t.contains("/close, /status and /help still work"),
            "{t}"
        );
        let (t, told) = text(Check::Locked {
            until: NOW.board + 1500,
        })
        .unwrap();
        assert!(
            !told && t.starts_with("Refused: too many wrong codes") && t.contains("(in 25 min)"),
            "{t}"
        );
        let (t, told) = text(Check::Wrong {
            replayed: false,
            left: 1,
        })
        .unwrap();
        assert!(!told && t.contains("1 more wrong code within"), "{t}");
    }

    #[test]
    fn run_names_a_declared_action() {
        let c = cfg(&[
            ("TGKNOCK_ACTION_BACKUP", "/usr/local/bin/backup --quick"),
            (
                "TGKNOCK_ACTION_Restart_Nginx",
                "/usr/bin/systemctl restart nginx",
            ),
        ]);
        let run = |from: i64, text: &str| {
            decide(
                &msg(from, ChatKind::Private, text, NOW.telegram as i64),
                &c,
                "bot",
                NOW,
            )
        };
        assert_eq!(
            run(OWNER, "/run backup"),
            Action::Run {
                name: "backup".into()
            }
        );
        assert_eq!(
            run(OWNER, "/run RESTART_NGINX"),
            Action::Run {
                name: "restart_nginx".into()
            }
        );
        assert_eq!(run(OWNER, "/run"), Action::Actions);
        assert_eq!(run(222, "/run backup"), Action::Stranger { tried: true });
        let got = run(OWNER, "/run nope");
        let Action::Refuse { text, .. } = got else {
            panic!("{got:?}")
        };
        assert_eq!(
            text,
            "There is no action 'nope'. Actions: backup, restart_nginx."
        );
        let got = run(OWNER, "/run no;pe");
        let Action::Refuse { text, .. } = got else {
            panic!("{got:?}")
        };
        assert!(text.starts_with("'no;pe' is not an action name"), "{text}");
        let got = d(OWNER, "/run backup");
        let Action::Refuse { text, .. } = got else {
            panic!("{got:?}")
        };
        assert!(text.contains("none is declared"), "{text}");
    }

    #[test]
    fn a_sender_needs_a_user_not_a_name() {
        let other = User {
            id: 333,
            is_bot: false,
            first_name: "Owner".into(),
            last_name: None,
            username: Some("owner".into()),
        };
        let mut m = msg(OWNER, ChatKind::Private, "/open", NOW.telegram as i64);
        m.from = Some(other);
        assert_eq!(
            decide(&m, &cfg(&[]), "bot", NOW),
            Action::Stranger { tried: true }
        );
    }
}
