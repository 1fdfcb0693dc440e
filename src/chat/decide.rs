//! What to do with a message: authorization, addressing, staleness and limits, decided
//! without doing anything. The daemon carries out the [`Action`]; the second factor (asking
//! for a code, checking it) is the daemon's `second_factor`, which only needs to know here
//! that a command asks for one.

use crate::base::addr::Cidr;
use crate::base::duration;
use crate::base::duration::Length;
use crate::base::gate::GateName;
use crate::chat::command::{self, Command, Guarded, Parsed};
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

/// Nothing is done; the sender is told why (`text`), and the log says `log`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) text: String,
    pub(crate) log: String,
}

/// A change an allowed user asks for, as of now: what the second factor guards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    Open {
        gate: GateName,
        opening: Opening,
    },
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
    /// `None`: every gate.
    Close {
        gate: Option<GateName>,
    },
    /// List the declared actions.
    Actions,
    /// A change, carried out at once: the second factor is off.
    Change(Change),
    /// A change from chat with the second factor on but without a code: the bot asks for
    /// one, and the user's next code completes `request` (as of then).
    NeedCode {
        request: Guarded,
    },
    /// A change and its code, to be checked before it is carried out.
    WithCode {
        change: Change,
        code: String,
    },
    /// A message that is only a code: it completes the sender's pending request, if any.
    Code(String),
}

impl From<Refusal> for Action {
    fn from(r: Refusal) -> Action {
        Action::Refuse {
            text: r.text,
            log: r.log,
        }
    }
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
    if let Some(stale) = stale(msg, from, cfg, now) {
        return stale.into();
    }
    carry(command, from, cfg, now)
}

/// Why a command sent at the message's date is too old to carry out, if it is: older than
/// `TGKNOCK_MAX_AGE` by Telegram's clock.
fn stale(msg: &Message, from: &User, cfg: &Config, now: Now) -> Option<Refusal> {
    let max_age = cfg.limits.max_age;
    let age = (now.telegram as i64).saturating_sub(msg.date);
    (age > max_age as i64).then(|| Refusal {
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
    })
}

/// What an allowed user's command asks for.
fn carry(command: Command, from: &User, cfg: &Config, now: Now) -> Action {
    let (request, code) = match command {
        Command::Help => return Action::Help,
        Command::Status => return Action::Status,
        Command::Close { gate } => return Action::Close { gate },
        Command::Run { name: None } => return Action::Actions,
        Command::Code(code) => return Action::Code(code),
        Command::WithCode { code, command } => (command, Some(code)),
        Command::Open { gate, length, from } => (Guarded::Open { gate, length, from }, None),
        Command::Ban { addr, length } => (Guarded::Ban { addr, length }, None),
        Command::Unban { addr } => (Guarded::Unban { addr }, None),
        Command::Run { name: Some(name) } => (Guarded::Run { name }, None),
    };
    guarded(request, code, from, cfg, now)
}

/// With the second factor on, a change needs a code: with one, it is checked first;
/// without, the bot asks for it. Closing changes something too, but only ever towards
/// closed, so it needs none; refusals, `/status`, `/help` and the list of actions change
/// nothing. Limits are judged first: a refused change never asks for a code.
fn guarded(request: Guarded, code: Option<String>, from: &User, cfg: &Config, now: Now) -> Action {
    let change = match change(request.clone(), from, cfg, now) {
        Ok(c) => c,
        Err(r) => return r.into(),
    };
    match (cfg.totp.is_some(), code) {
        (false, _) => Action::Change(change),
        (true, None) => Action::NeedCode { request },
        (true, Some(code)) => Action::WithCode { change, code },
    }
}

/// The change `request` from `from` asks for at `now` (deadlines count from now), or why
/// it is refused: an opening beyond `TGKNOCK_MAX_OPEN_FOR`, an action not declared.
pub(crate) fn change(
    request: Guarded,
    from: &User,
    cfg: &Config,
    now: Now,
) -> Result<Change, Refusal> {
    Ok(match request {
        Guarded::Ban { addr, length } => Change::Ban {
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
        Guarded::Unban { addr } => Change::Unban { addr },
        Guarded::Run { name } => match cfg.actions.find(&name) {
            Some(_) => Change::Run { name },
            None => return Err(unknown_action(&name, from, cfg)),
        },
        Guarded::Open {
            gate,
            length,
            from: source,
        } => open(gate, length, source, from, cfg, now)?,
    })
}

fn unknown_action(name: &str, from: &User, cfg: &Config) -> Refusal {
    Refusal {
        text: if cfg.actions.list.is_empty() {
            format!("There is no action '{name}': none is declared (TGKNOCK_ACTION_<NAME>).")
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
    }
}

/// An opening from chat: refused beyond `TGKNOCK_MAX_OPEN_FOR`.
fn open(
    gate: GateName,
    length: Length,
    source: Option<Cidr>,
    from: &User,
    cfg: &Config,
    now: Now,
) -> Result<Change, Refusal> {
    match Opening::by_chat(length, source, from.id, now.board, &cfg.limits) {
        Ok(opening) => Ok(Change::Open { gate, opening }),
        Err(TooLong { asked, max }) => {
            let asked = asked.map_or("without an end".to_string(), |s| {
                format!("for {}", duration::human(s))
            });
            Err(Refusal {
                text: format!(
                    "Refused: {gate} cannot be opened {asked}; the limit is {} (TGKNOCK_MAX_OPEN_FOR).",
                    duration::human(max)
                ),
                log: format!(
                    "{} asked to open {gate} {asked}, beyond TGKNOCK_MAX_OPEN_FOR",
                    from.describe()
                ),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::ids::{ChatId, UserId};
    use crate::chat::telegram::{Chat, ChatKind, User};

    const NOW: Now = Now {
        telegram: 1_000_000,
        board: 2_000_000,
    };

    use crate::testkit::{OWNER, config as cfg, config_with_totp as cfg_with_totp, msg};

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
        let Action::Change(Change::Open { gate, opening }) = got else {
            panic!("{got:?}")
        };
        assert_eq!(gate, ssh());
        assert_eq!(opening.until, Some(NOW.board + 1800));
        assert_eq!(opening.by, Actor::Telegram(UserId(OWNER)));
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
        assert!(matches!(
            d(OWNER, "/open@bot"),
            Action::Change(Change::Open { .. })
        ));
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
                id: ChatId(-5),
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
        assert!(
            matches!(at(60), Action::Change(Change::Open { .. })),
            "at the limit"
        );
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
        assert!(matches!(at(-5), Action::Change(Change::Open { .. })));
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
        let Action::Change(Change::Open { opening, .. }) = got else {
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
        let Action::WithCode {
            change: Change::Open { gate, opening },
            code,
        } = got
        else {
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
        // The request, once its code comes, is as of then (the second factor checks the
        // code, and that it came in time).
        let owner = msg(OWNER, ChatKind::Private, "", 0).from.unwrap();
        let later = Now {
            telegram: NOW.telegram + 100,
            board: NOW.board + 100,
        };
        let got = change(request, &owner, &c, later);
        let Ok(Change::Open { opening, .. }) = got else {
            panic!("{got:?}")
        };
        assert_eq!(opening.until, Some(later.board + 1800));
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
        // (What each asks, and its completion by the code: the second factor's tests.)
        for text in [
            "/run backup",
            "/ban 203.0.113.7 1d",
            "/unban 203.0.113.7",
            "/open",
            "enable ssh",
        ] {
            assert!(
                matches!(d(text), Action::NeedCode { .. }),
                "{text}: {:?}",
                d(text)
            );
        }
        let got = d("/run backup 492039");
        let Action::WithCode { change, code } = got else {
            panic!("{got:?}")
        };
        assert_eq!(
            (change, code.as_str()),
            (
                Change::Run {
                    name: "backup".into()
                },
                "492039"
            )
        );
        let got = d("/ban 203.0.113.7 1d 492039");
        let Action::WithCode {
            change: Change::Ban { ban },
            ..
        } = got
        else {
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
        let Action::Change(Change::Ban { ban }) = got else {
            panic!("{got:?}")
        };
        assert_eq!(ban.until, Some(NOW.board + BAN_FOR));
        assert_eq!(ban.by, Actor::Telegram(UserId(OWNER)));
        let got = d(OWNER, "/ban 2h 2001:db8::/64");
        let Action::Change(Change::Ban { ban }) = got else {
            panic!("{got:?}")
        };
        assert_eq!(ban.until, Some(NOW.board + 7200));
        let got = d(OWNER, "/ban 10.0.0.1 0");
        let Action::Change(Change::Ban { ban }) = got else {
            panic!("{got:?}")
        };
        assert_eq!(ban.until, None);
        assert!(matches!(
            d(OWNER, "/unban 10.0.0.1"),
            Action::Change(Change::Unban { .. })
        ));
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
            Action::Change(Change::Run {
                name: "backup".into()
            })
        );
        assert_eq!(
            run(OWNER, "/run RESTART_NGINX"),
            Action::Change(Change::Run {
                name: "restart_nginx".into()
            })
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
            id: UserId(333),
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
