//! The second factor (`TGKNOCK_TOTP_SECRET_FILE`), all in one place: asking for a code,
//! the requests waiting for theirs, checking a code against the ledger in the state file
//! (each code once, lockouts after wrong ones), and what the users hear. `decide` only
//! says that a change needs a code ([`Action::NeedCode`], [`Action::WithCode`],
//! [`Action::Code`]).
//!
//! [`Action::NeedCode`]: crate::chat::decide::Action::NeedCode
//! [`Action::WithCode`]: crate::chat::decide::Action::WithCode
//! [`Action::Code`]: crate::chat::decide::Action::Code

use crate::base::ids::UserId;
use std::collections::HashMap;

use super::Daemon;
use super::ask::{Ask, Via};
use crate::base::duration;
use crate::base::totp::{self, Check};
use crate::chat::command::Guarded;
use crate::chat::decide::{self, Change};
use crate::store::config::Config;

/// The commands a lockout refuses, and those it leaves.
const GUARDED: &str = "/open, Open buttons, /run, /ban and /unban";
const FREE: &str = "/close, /status and /help";

/// What `/help` adds when the second factor is on.
pub(super) const HELP: &str = "\n\nA second factor is on: /open, /run, /ban and /unban need the 6-digit code of your authenticator, last in the command (/open ssh 30m 492039, /run backup 492039, /ban 203.0.113.7 1d 492039), or sent when asked. Closing, /status and /help need none.";

/// The second factor's guard, and the requests waiting for their code.
pub(super) struct SecondFactor {
    /// `None`: the second factor is off.
    guard: Option<totp::Guard>,
    /// Requests waiting for their code, by user id: the request and when it was asked
    /// (board time). The used codes and wrong-code counts are in the state file.
    pending: HashMap<UserId, (Guarded, u64)>,
}

impl SecondFactor {
    pub(super) fn new(cfg: &Config) -> SecondFactor {
        let guard = cfg.totp.clone().map(totp::Guard::new);
        if guard.is_some() {
            log::info!(
                "second factor on: chat commands that change something (/open, /run, /ban, /unban) need a TOTP code"
            );
        }
        SecondFactor {
            guard,
            pending: HashMap::new(),
        }
    }
}

impl Daemon {
    /// A change without its code: the sender is asked for one (unless locked out, or the
    /// change is refused anyway), and the request waits for it.
    pub(super) fn ask_code(&mut self, ask: &Ask, request: Guarded) {
        // Codes are judged by Telegram's clock, like the phone that shows them (a board
        // without a real-time clock may be far off).
        let locked = match self.keeper.load_state() {
            Ok(st) => totp::locked_until(&st.totp_wrong, ask.from.id, ask.now.telegram),
            Err(e) => {
                log::error!("cannot read the state for the second factor: {e}");
                self.reply(ask.chat, &format!("Not done: {e}"));
                return;
            }
        };
        if let Some(until) = locked {
            let (text, _) = refusal(
                Check::Locked { until },
                &ask.from.describe(),
                ask.now.telegram,
            )
            .unwrap_or_default();
            self.reply(ask.chat, &text);
            return;
        }
        if let Guarded::Ban { addr, .. } = &request
            && self.refuse_ban(ask, addr)
        {
            return;
        }
        let what = what(&request);
        self.codes
            .pending
            .insert(ask.from.id, (request, ask.now.board));
        log::info!(
            "{} asked to {what}; waiting for the code",
            ask.from.describe()
        );
        self.reply(
            ask.chat,
            &format!(
                "A code is needed to {what}: send the 6 digits your authenticator shows, within {}.",
                duration::human(totp::ASK_SECS)
            ),
        );
    }

    /// A message that is only a code: it completes the sender's waiting request, as of
    /// now (an opening's deadline counts from now). A wrong code leaves the request
    /// waiting (until it is too late); a right one, or a late one, ends it.
    pub(super) fn take_code(&mut self, ask: &Ask, code: String) {
        let Some((request, asked_at)) = self.codes.pending.get(&ask.from.id).cloned() else {
            self.reply(
                ask.chat,
                "Nothing is waiting for a code: send the command first, or the code with it (/open ssh 492039, /run backup 492039).",
            );
            return;
        };
        if ask.now.board > asked_at + totp::ASK_SECS {
            self.codes.pending.remove(&ask.from.id);
            log::info!("{} sent a code too late", ask.from.describe());
            self.reply(
                ask.chat,
                &format!(
                    "That code came more than {} after the bot asked for it: nothing done. Send the command again.",
                    duration::human(totp::ASK_SECS)
                ),
            );
            return;
        }
        match decide::change(request, &ask.from, self.cfg(), ask.now) {
            Ok(change) => self.check_code(ask, change, code),
            Err(r) => {
                log::info!("{}", r.log);
                self.reply(ask.chat, &r.text);
            }
        }
    }

    /// A change with its code: the code is checked (and its fate saved) before anything
    /// is done; the change is carried out only if the code is accepted.
    pub(super) fn check_code(&mut self, ask: &Ask, change: Change, code: String) {
        let Some(guard) = self.codes.guard.clone() else {
            log::error!("a code came while the second factor is off: ignored");
            return;
        };
        if let Change::Ban { ban } = &change
            && self.refuse_ban(ask, &ban.addr)
        {
            return;
        }
        // The code's fate is saved before anything is done: a restart neither takes a
        // used code again nor forgets a wrong one. A wrong code is all there is to its
        // update, so the offset moves with it.
        let user = ask.from.id;
        let checked = self.record_past(
            ask.update,
            |st| {
                let ledger = totp::Ledger {
                    used: &mut st.totp_used,
                    wrong: &mut st.totp_wrong,
                };
                guard.check(ledger, user, &code, ask.now.telegram)
            },
            |check| !matches!(check, Check::Accepted(_)),
        );
        let check = match checked {
            Ok(c) => c,
            Err(e) => {
                log::error!(
                    "not carrying out a command from {}: cannot record its code: {e}",
                    ask.from.describe()
                );
                self.reply(ask.chat, &format!("Not done: {e}"));
                return;
            }
        };
        if let Some((text, owners)) = refusal(check, &ask.from.describe(), ask.now.telegram) {
            log::warn!(
                "{} sent a code that was not accepted: {check:?}",
                ask.from.describe()
            );
            self.reply(ask.chat, &text);
            if let Some(owners) = owners {
                super::tell_owners(&*self.api, self.cfg(), &owners);
            }
            return;
        }
        self.codes.pending.remove(&user);
        // Carried out as typed: a code never comes by a press.
        let typed = Ask {
            via: Via::Message,
            ..ask.clone()
        };
        self.carry_change(&typed, change);
    }
}

/// What a code-guarded command is, for the bot's question ("A code is needed to …").
fn what(request: &Guarded) -> String {
    match request {
        Guarded::Open { gate, .. } => format!("open {gate}"),
        Guarded::Run { name } => format!("run {name}"),
        Guarded::Ban { addr, .. } => format!("ban {addr}"),
        Guarded::Unban { addr } => format!("unban {addr}"),
    }
}

/// What to say when a code was not accepted: the reply to the sender, and what every
/// allowed user is told (when the sender has just been locked out). `now` is Telegram's
/// clock, as the lockout's.
fn refusal(check: Check, who: &str, now: u64) -> Option<(String, Option<String>)> {
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

#[cfg(test)]
mod tests {
    use super::super::testing::{TestDaemon, ask};
    use super::*;
    use crate::base::ids::{UpdateId, UserId};
    use crate::chat::decide::{Action, Now, decide};
    use crate::chat::telegram::ChatKind;
    use crate::testkit::{FakeBot, OWNER, Sent, TOTP_SECRET, config_with_totp, msg};

    const NOW: Now = Now {
        telegram: 1_000_000,
        board: 2_000_000,
    };

    /// What each change asks a code for, and that the code sent when asked completes it.
    #[test]
    fn each_change_says_what_it_asks_a_code_for() {
        let c = config_with_totp(
            "what",
            &[("TGKNOCK_ACTION_BACKUP", "/usr/local/bin/backup")],
        );
        let owner = msg(OWNER, ChatKind::Private, "", 0).from.unwrap();
        for (text, want) in [
            ("/run backup", "run backup"),
            ("/ban 203.0.113.7 1d", "ban 203.0.113.7"),
            ("/unban 203.0.113.7", "unban 203.0.113.7"),
            ("/open", "open ssh"),
            ("enable ssh", "open ssh"),
        ] {
            let m = msg(OWNER, ChatKind::Private, text, NOW.telegram as i64);
            let got = decide(&m, &c, "bot", NOW);
            let Action::NeedCode { request } = got else {
                panic!("{text}: {got:?}")
            };
            assert_eq!(what(&request), want, "{text}");
            assert!(decide::change(request, &owner, &c, NOW).is_ok(), "{text}");
        }
    }

    #[test]
    fn refusals_say_why_and_a_lockout_is_told_to_the_owners() {
        let now = NOW.board;
        let text = |c: Check| refusal(c, "7 (x)", now).map(|(t, o)| (t, o.is_some()));
        assert_eq!(text(Check::Accepted(1)), None);
        let (t, told) = text(Check::LockedNow { until: now + 3600 }).unwrap();
        assert!(
            told && t.contains(
                "5 wrong codes within 1 h: code-guarded commands from you are refused until"
            ) && t.contains("UTC (in 1 h)")
                && t.contains("/close, /status and /help still work"),
            "{t}"
        );
        let (t, told) = text(Check::Locked { until: now + 1500 }).unwrap();
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

    fn totp_daemon(bot: &FakeBot, tag: &str) -> TestDaemon {
        let dir = std::env::temp_dir().join(format!("tgk-2fa-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("totp");
        std::fs::write(&file, TOTP_SECRET).unwrap();
        let t = TestDaemon::new(bot, &[("TGKNOCK_TOTP_SECRET_FILE", file.to_str().unwrap())]);
        std::fs::remove_dir_all(&dir).unwrap();
        t
    }

    fn last_text(bot: &FakeBot) -> String {
        match bot.sent().last() {
            Some(Sent::Message { text, .. }) => text.clone(),
            other => panic!("{other:?}"),
        }
    }

    fn ssh_request() -> Guarded {
        Guarded::Open {
            gate: crate::base::gate::GateName::new("ssh").unwrap(),
            length: crate::base::duration::Length::Default,
            from: None,
        }
    }

    #[test]
    fn a_code_completes_the_waiting_request_in_time_and_only_then() {
        let bot = FakeBot::new();
        let mut t = totp_daemon(&bot, "wait");
        t.d.take_code(&ask(1, OWNER), "123456".into());
        assert!(last_text(&bot).starts_with("Nothing is waiting for a code"));
        let a = ask(2, OWNER);
        t.d.ask_code(&a, ssh_request());
        assert!(
            last_text(&bot).starts_with("A code is needed to open ssh: send the 6 digits"),
            "{}",
            last_text(&bot)
        );
        // A wrong code: refused, the request still waits, the offset moves past it.
        let wrong = ask(3, OWNER);
        t.d.take_code(&wrong, "000000".into());
        assert!(
            last_text(&bot).starts_with("Wrong code: nothing done. 4 more"),
            "{}",
            last_text(&bot)
        );
        assert!(t.d.codes.pending.contains_key(&UserId(OWNER)));
        assert_eq!(t.d.keeper.load_state().unwrap().offset, Some(UpdateId(4)));
        assert!(!t.scratch.ssh_passes());
        // Too late: nothing done, nothing waits any more.
        let mut late = ask(4, OWNER);
        late.now.board += totp::ASK_SECS + 1;
        t.d.take_code(&late, "000000".into());
        assert!(last_text(&bot).contains("more than 2 min after the bot asked"));
        assert!(t.d.codes.pending.is_empty());
    }

    #[test]
    fn a_right_code_carries_the_change_out_once() {
        let bot = FakeBot::new();
        let mut t = totp_daemon(&bot, "right");
        let secret = t.d.cfg().totp.clone().unwrap();
        let a = ask(9, OWNER);
        let code = format!("{:06}", secret.code(a.now.telegram / totp::STEP));
        let change = decide::change(ssh_request(), &a.from, t.d.cfg(), a.now).unwrap();
        t.d.check_code(&a, change.clone(), code.clone());
        assert!(t.scratch.ssh_passes(), "{}", t.scratch.rules());
        assert_eq!(t.d.keeper.load_state().unwrap().offset, Some(UpdateId(10)));
        let b = ask(10, OWNER);
        t.d.check_code(&b, change, code);
        assert!(
            last_text(&bot).starts_with("That code was used already"),
            "{}",
            last_text(&bot)
        );
    }
}
