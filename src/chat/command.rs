//! Chat commands: parsing what an allowed user typed into something the daemon can do.

use crate::base::addr::Cidr;
use crate::base::duration;
use crate::base::duration::Length;
use crate::base::gate::{Gate, GateName};
use crate::store::actions::{MAX_ACTION_NAME, valid_action_name};

/// A command an allowed user can give.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Open {
        gate: GateName,
        length: Length,
        from: Option<Cidr>,
    },
    /// `None`: every gate.
    Close {
        gate: Option<GateName>,
    },
    Status,
    Help,
    /// `/ban ADDR [DURATION]`: drop every packet from ADDR, the connections it opened too, never the answers to the board's own
    /// (`Default`: a day).
    Ban {
        addr: Cidr,
        length: Length,
    },
    /// `/unban ADDR`.
    Unban {
        addr: Cidr,
    },
    /// A command that changes something with its second-factor code, TOTP on:
    /// `/open web 2h 492039`, `/run backup 492039`, `/ban 203.0.113.7 1d 492039`,
    /// `/unban 203.0.113.7 492039`.
    WithCode {
        code: String,
        command: Guarded,
    },
    /// A message that is only a code (TOTP on): it completes the command the bot asked a
    /// code for.
    Code(String),
    /// `/run NAME`: a pre-declared action (`TGKNOCK_ACTION_<NAME>`), by its lowercase name;
    /// `None`: list the actions.
    Run {
        name: Option<String>,
    },
}

/// A command that changes something, which the second factor guards: `/open`, `/ban`,
/// `/unban` and `/run NAME` (closing only ever closes, and needs no code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Guarded {
    Open {
        gate: GateName,
        length: Length,
        from: Option<Cidr>,
    },
    Ban {
        addr: Cidr,
        length: Length,
    },
    Unban {
        addr: Cidr,
    },
    Run {
        name: String,
    },
}

impl From<Guarded> for Command {
    fn from(g: Guarded) -> Command {
        match g {
            Guarded::Open { gate, length, from } => Command::Open { gate, length, from },
            Guarded::Ban { addr, length } => Command::Ban { addr, length },
            Guarded::Unban { addr } => Command::Unban { addr },
            Guarded::Run { name } => Command::Run { name: Some(name) },
        }
    }
}

/// What a message turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Command(Command),
    /// A `/command@otherbot`, or chatter: not ours to answer.
    Ignore,
    /// Looks like it was meant for us but cannot be understood; the reason is shown with
    /// the usage.
    Invalid(String),
    /// A `/command` we do not know, unaddressed (ignored in groups, usage in private).
    Unknown(String),
}

/// Longest message considered; Telegram's own limit is 4096 characters.
const MAX_TEXT: usize = 4096;

/// Parses a message's text. `bot` is the bot's username (without `@`).
pub fn parse(text: &str, bot: &str, gates: &[Gate]) -> Parsed {
    parse_with(text, bot, gates, false)
}

/// Parses a message's text; with `totp` (`TGKNOCK_TOTP_SECRET_FILE` set), a bare 6-digit
/// word of `/open` or `/ban` is its code, never minutes; the last word of `/run NAME CODE`
/// and `/unban ADDR CODE` is the code when it is 6 digits (never the name or the address);
/// and a message that is only a code is one.
pub fn parse_with(text: &str, bot: &str, gates: &[Gate], totp: bool) -> Parsed {
    if text.len() > MAX_TEXT * 4 {
        return Parsed::Invalid("the message is too long".into());
    }
    let mut words = text.split_whitespace();
    let Some(first) = words.next() else {
        return Parsed::Ignore;
    };
    let Some(command) = first.strip_prefix('/') else {
        if totp {
            return parse_code(text).unwrap_or_else(|| parse_plain(text, gates));
        }
        return parse_plain(text, gates);
    };
    let (name, target) = match command.split_once('@') {
        Some((n, t)) => (n, Some(t)),
        None => (command, None),
    };
    if let Some(t) = target
        && !t.eq_ignore_ascii_case(bot)
    {
        return Parsed::Ignore;
    }
    let args: Vec<&str> = words.collect();
    match name.to_ascii_lowercase().as_str() {
        "open" => parse_open(&args, gates, totp),
        "close" => parse_close(&args, gates),
        "ban" => parse_ban(&args, totp),
        "unban" => parse_unban(&args, totp),
        "status" if args.is_empty() => Parsed::Command(Command::Status),
        "help" | "start" => Parsed::Command(Command::Help),
        "run" => parse_run(&args, totp),
        "status" => Parsed::Invalid("/status takes no arguments".into()),
        _ if target.is_some() => Parsed::Invalid(format!("unknown command /{}", clip(name))),
        _ => Parsed::Unknown(format!("unknown command /{}", clip(name))),
    }
}

/// A message that is only a code, or that tries to be one: `492039` is a code; `492 039`
/// or `49203a` are refused with the reason (they are no chatter to ignore).
fn parse_code(text: &str) -> Option<Parsed> {
    let t = text.trim();
    if crate::base::totp::is_code(t) {
        return Some(Parsed::Command(Command::Code(t.to_string())));
    }
    looks_like_code(t).then(|| Parsed::Invalid(not_a_code(t)))
}

/// Six digits written with spaces, dashes or a letter among them.
fn looks_like_code(t: &str) -> bool {
    let digits = t.bytes().filter(u8::is_ascii_digit).count();
    let spaced = digits == 6
        && t.bytes()
            .all(|b| b.is_ascii_digit() || b == b' ' || b == b'-');
    let lettered =
        (5..=8).contains(&t.len()) && digits >= 4 && t.bytes().all(|b| b.is_ascii_alphanumeric());
    spaced || lettered
}

fn not_a_code(t: &str) -> String {
    format!(
        "'{}' is not a code: a code is the 6 digits your authenticator shows, without spaces or letters",
        clip(t)
    )
}

/// An address to ban: one address or block, never every address.
fn ban_addr(arg: &str) -> Result<Cidr, String> {
    Cidr::bannable(arg, &format!("'{}'", clip(arg)))
}

/// A code split by a space reads as two numbers: with the second factor on, say what is
/// wrong instead.
fn split_code(args: &[&str], totp: bool) -> Option<Parsed> {
    let digits: Vec<&str> = args
        .iter()
        .copied()
        .filter(|a| !a.is_empty() && a.bytes().all(|b| b.is_ascii_digit()))
        .collect();
    (totp && digits.len() >= 2 && digits.iter().map(|d| d.len()).sum::<usize>() == 6)
        .then(|| Parsed::Invalid(not_a_code(&digits.join(" "))))
}

/// `command` with its code, if there is one.
fn with_code(command: Guarded, code: Option<String>) -> Parsed {
    Parsed::Command(match code {
        Some(code) => Command::WithCode { code, command },
        None => command.into(),
    })
}

/// `/unban ADDR`, and with the second factor on `/unban ADDR CODE`.
fn parse_unban(args: &[&str], totp: bool) -> Parsed {
    if let Some(p) = split_code(args, totp) {
        return p;
    }
    let (addr, code) = match args {
        [a] => (a, None),
        [a, c] if totp && crate::base::totp::is_code(c) => (a, Some(c.to_string())),
        [_, c] if totp && looks_like_code(c) => return Parsed::Invalid(not_a_code(c)),
        _ if totp => {
            return Parsed::Invalid("/unban takes one address, then the code".into());
        }
        _ => return Parsed::Invalid("/unban takes one address".into()),
    };
    match ban_addr(addr) {
        Ok(addr) => with_code(Guarded::Unban { addr }, code),
        Err(e) => Parsed::Invalid(e),
    }
}

/// `/ban ADDR [DURATION]` in either order; with the second factor on, a 6-digit word
/// anywhere is the code (an address has dots or colons; a duration is never 6 bare digits
/// then).
fn parse_ban(args: &[&str], totp: bool) -> Parsed {
    let mut addr = None;
    let mut length = None;
    let mut code: Option<String> = None;
    if let Some(p) = split_code(args, totp) {
        return p;
    }
    if args.is_empty() || args.len() > 2 + usize::from(totp) {
        return Parsed::Invalid(if totp {
            "/ban takes an address and, optionally, a duration, and the code".into()
        } else {
            "/ban takes an address and, optionally, a duration".into()
        });
    }
    for arg in args {
        if totp && crate::base::totp::is_code(arg) {
            if code.replace(arg.to_string()).is_some() {
                return Parsed::Invalid("more than one code given".into());
            }
        } else if arg.contains(['.', ':']) {
            match ban_addr(arg) {
                Ok(c) if addr.is_none() => addr = Some(c),
                Ok(_) => return Parsed::Invalid("more than one address given".into()),
                Err(e) => return Parsed::Invalid(e),
            }
        } else if length.is_none() {
            length = Some(match duration::parse(arg, Some(60)) {
                Ok(0) => Length::UntilClosed,
                Ok(s) => Length::Secs(s),
                Err(_) if totp && looks_like_code(arg) => {
                    return Parsed::Invalid(not_a_code(arg));
                }
                Err(e) => return Parsed::Invalid(e),
            });
        } else {
            return Parsed::Invalid("more than one duration given".into());
        }
    }
    match addr {
        Some(addr) => with_code(
            Guarded::Ban {
                addr,
                length: length.unwrap_or(Length::Default),
            },
            code,
        ),
        None => Parsed::Invalid("/ban needs an address".into()),
    }
}

/// The first version of the tool was driven by `enable ssh` / `disable ssh` in plain text.
/// Only a message that is exactly that (any case, punctuation and spaces around it) is a
/// command: "don't enable ssh" is not.
fn parse_plain(text: &str, gates: &[Gate]) -> Parsed {
    let Some(ssh) = gates
        .iter()
        .find(|g| g.name == "ssh")
        .map(|g| g.name.clone())
    else {
        return Parsed::Ignore;
    };
    let core = text.trim_matches(|c: char| c.is_whitespace() || is_punctuation(c));
    let words: Vec<&str> = core.split_whitespace().collect();
    match words.as_slice() {
        [verb, word] if word.eq_ignore_ascii_case("ssh") && verb.eq_ignore_ascii_case("enable") => {
            Parsed::Command(Command::Open {
                gate: ssh,
                length: Length::Default,
                from: None,
            })
        }
        [verb, word]
            if word.eq_ignore_ascii_case("ssh") && verb.eq_ignore_ascii_case("disable") =>
        {
            Parsed::Command(Command::Close { gate: Some(ssh) })
        }
        _ => Parsed::Ignore,
    }
}

/// Punctuation that may surround a plain-text command (`Enable SSH!`, `"disable ssh".`).
fn is_punctuation(c: char) -> bool {
    c.is_ascii_punctuation() || "¡¿…«»“”‘’„‚–—".contains(c)
}

fn clip(s: &str) -> String {
    let mut out: String = s.chars().filter(|c| !c.is_control()).take(32).collect();
    if s.chars().count() > 32 {
        out.push('…');
    }
    out
}

fn gate_names(gates: &[Gate]) -> String {
    gates
        .iter()
        .map(|g| g.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn parse_open(args: &[&str], gates: &[Gate], totp: bool) -> Parsed {
    let mut gate = None;
    let mut length = None;
    let mut from = None;
    let mut code: Option<String> = None;
    if args.len() > 3 + usize::from(totp) {
        return Parsed::Invalid(if totp {
            "/open takes at most a gate, a duration, an address and a code".into()
        } else {
            "/open takes at most a gate, a duration and an address".into()
        });
    }
    if let Some(p) = split_code(args, totp) {
        return p;
    }
    for arg in args {
        if totp && crate::base::totp::is_code(arg) {
            if code.replace(arg.to_string()).is_some() {
                return Parsed::Invalid("more than one code given".into());
            }
            continue;
        }
        if totp && looks_like_code(arg) {
            return Parsed::Invalid(not_a_code(arg));
        }
        if arg.chars().any(char::is_control) || arg.len() > 64 {
            return Parsed::Invalid(format!(
                "'{}' is not a gate, a duration or an address",
                clip(arg)
            ));
        }
        let lower = arg.to_ascii_lowercase();
        if let Some(g) = gates.iter().find(|g| g.name == lower.as_str()) {
            if gate.replace(g.name.clone()).is_some() {
                return Parsed::Invalid("more than one gate named".into());
            }
        } else if lower.starts_with(|c: char| c.is_ascii_digit())
            && !lower.contains(['.', ':', '/'])
        {
            let secs = match duration::parse(&lower, Some(60)) {
                Ok(s) => s,
                Err(e) => return Parsed::Invalid(e),
            };
            let l = if secs == 0 {
                Length::UntilClosed
            } else {
                Length::Secs(secs)
            };
            if length.replace(l).is_some() {
                return Parsed::Invalid("more than one duration given".into());
            }
        } else if arg.contains(['.', ':']) {
            match arg.parse::<Cidr>() {
                Ok(c) => {
                    if from.replace(c).is_some() {
                        return Parsed::Invalid("more than one address given".into());
                    }
                }
                Err(e) => return Parsed::Invalid(e),
            }
        } else {
            return Parsed::Invalid(format!(
                "'{}' is not a gate (gates: {}), a duration (15m, 2h) or an address",
                clip(arg),
                gate_names(gates)
            ));
        }
    }
    let open = Guarded::Open {
        gate: gate.unwrap_or_else(|| gates[0].name.clone()),
        length: length.unwrap_or(Length::Default),
        from,
    };
    with_code(open, code)
}

fn parse_close(args: &[&str], gates: &[Gate]) -> Parsed {
    match args {
        [] => Parsed::Command(Command::Close { gate: None }),
        [one] if one.eq_ignore_ascii_case("all") => Parsed::Command(Command::Close { gate: None }),
        [one] => match gates
            .iter()
            .find(|g| g.name.as_str().eq_ignore_ascii_case(one))
        {
            Some(g) => Parsed::Command(Command::Close {
                gate: Some(g.name.clone()),
            }),
            None => Parsed::Invalid(format!(
                "'{}' is not a gate (gates: {}, or all)",
                clip(one),
                gate_names(gates)
            )),
        },
        _ => Parsed::Invalid("/close takes one gate name, or all".into()),
    }
}

/// `/run`, `/run NAME`, and with the second factor on `/run NAME CODE`: the code is the
/// last word, so an action name is never taken for it, nor a code for a name.
fn parse_run(args: &[&str], totp: bool) -> Parsed {
    if let Some(p) = split_code(args, totp) {
        return p;
    }
    let (name, code) = match args {
        [] => return Parsed::Command(Command::Run { name: None }),
        [c] if totp && crate::base::totp::is_code(c) => {
            return Parsed::Invalid(format!(
                "'{c}' is a code: the action name first, then the code (/run NAME {c}); /run alone lists the actions"
            ));
        }
        [name] => (name, None),
        [name, c] if totp && crate::base::totp::is_code(c) => (name, Some(c.to_string())),
        [_, c] if totp && looks_like_code(c) => return Parsed::Invalid(not_a_code(c)),
        _ if totp => {
            return Parsed::Invalid("/run takes one action name, then the code".into());
        }
        _ => return Parsed::Invalid("/run takes one action name".into()),
    };
    if !valid_action_name(name) {
        return Parsed::Invalid(format!(
            "'{}' is not an action name (letters, digits and _, at most {MAX_ACTION_NAME})",
            clip(name)
        ));
    }
    with_code(
        Guarded::Run {
            name: name.to_ascii_lowercase(),
        },
        code,
    )
}

/// The usage text, with the gates and their ports.
pub fn usage(gates: &[Gate], open_for: u64, max_open_for: u64) -> String {
    let mut s = String::from(
        "/open [GATE] [DURATION] [ADDRESS] - open a gate (any order)\n\
         /close [GATE|all] - close one gate, or all\n\
         /status - what the firewall shows now\n\
         /ban ADDRESS [DURATION] - drop every packet from it, its open connections too (default 1 d)\n\
         /unban ADDRESS - lift a ban\n\
         /run [NAME] - run a pre-declared action, or list them\n\
         /help - this text\n\n",
    );
    s.push_str("Gates:\n");
    for (i, g) in gates.iter().enumerate() {
        s.push_str(&format!(
            "  {} ({}){}\n",
            g.name,
            g.ports_text(),
            if i == 0 { " - the default" } else { "" }
        ));
    }
    s.push_str(&format!(
        "\nDURATION: 90s, 15m, 2h, 1d, 1h30m; a bare number is minutes. Default {}, at most {}.\n\
         ADDRESS: an IPv4/IPv6 address or CIDR block; without it the gate opens to everyone.\n\
         Example: /open ssh 30m 203.0.113.7",
        if open_for == 0 {
            "until closed".to_string()
        } else {
            duration::human(open_for)
        },
        if max_open_for == 0 {
            "no limit".to_string()
        } else {
            duration::human(max_open_for)
        },
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::gate::parse_gates;

    fn gates() -> Vec<Gate> {
        parse_gates("ssh=22/tcp web=80/tcp,443/tcp mosh=60000:61000/udp").unwrap()
    }

    fn p(text: &str) -> Parsed {
        parse(text, "KnockBot", &gates())
    }

    fn g(name: &str) -> GateName {
        GateName::new(name).unwrap()
    }

    fn open(gate: &str, length: Length, from: Option<&str>) -> Parsed {
        Parsed::Command(Command::Open {
            gate: g(gate),
            length,
            from: from.map(|f| f.parse().unwrap()),
        })
    }

    #[test]
    fn open_in_any_order() {
        assert_eq!(p("/open"), open("ssh", Length::Default, None));
        assert_eq!(p("/open web"), open("web", Length::Default, None));
        assert_eq!(p("/open 30"), open("ssh", Length::Secs(1800), None));
        assert_eq!(p("/open 2h web"), open("web", Length::Secs(7200), None));
        assert_eq!(
            p("/open 1.2.3.4 1h30m mosh"),
            open("mosh", Length::Secs(5400), Some("1.2.3.4"))
        );
        assert_eq!(
            p("/open 2001:db8::/64 SSH 90s"),
            open("ssh", Length::Secs(90), Some("2001:db8::/64"))
        );
        assert_eq!(p("/open 0"), open("ssh", Length::UntilClosed, None));
        assert_eq!(p("/OPEN@knockbot"), open("ssh", Length::Default, None));
        assert_eq!(
            p("/open@KnockBot   web\n 5m"),
            open("web", Length::Secs(300), None)
        );
    }

    #[test]
    fn addressed_to_another_bot_is_ignored() {
        assert_eq!(p("/open@OtherBot"), Parsed::Ignore);
        assert_eq!(p("/close@other_bot all"), Parsed::Ignore);
        assert_eq!(p("/status@x"), Parsed::Ignore);
    }

    #[test]
    fn close_status_help() {
        assert_eq!(p("/close"), Parsed::Command(Command::Close { gate: None }));
        assert_eq!(
            p("/close all"),
            Parsed::Command(Command::Close { gate: None })
        );
        assert_eq!(
            p("/close web"),
            Parsed::Command(Command::Close {
                gate: Some(g("web"))
            })
        );
        assert_eq!(p("/status"), Parsed::Command(Command::Status));
        assert_eq!(p("/status@KnockBot"), Parsed::Command(Command::Status));
        assert_eq!(p("/help"), Parsed::Command(Command::Help));
        assert_eq!(p("/start"), Parsed::Command(Command::Help));
    }

    #[test]
    fn run_names_an_action_or_lists_them() {
        assert_eq!(p("/run"), Parsed::Command(Command::Run { name: None }));
        assert_eq!(
            p("/run Restart_NGINX"),
            Parsed::Command(Command::Run {
                name: Some("restart_nginx".into())
            })
        );
        assert_eq!(
            p("/run@KnockBot backup"),
            Parsed::Command(Command::Run {
                name: Some("backup".into())
            })
        );
        for bad in [
            "/run a;b",
            "/run ../x",
            "/run $(reboot)",
            "/run x y",
            "/run nginx-restart",
            "/run héllo",
            "/run a\u{202e}b",
            "/run aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        ] {
            assert!(
                matches!(p(bad), Parsed::Invalid(_)),
                "{bad:?}: {:?}",
                p(bad)
            );
        }
        let got = p("/run a;b");
        let Parsed::Invalid(why) = got else {
            panic!("{got:?}")
        };
        assert!(why.contains("'a;b' is not an action name"), "{why}");
    }

    #[test]
    fn plain_text_form() {
        assert_eq!(p("enable ssh"), open("ssh", Length::Default, None));
        assert_eq!(p("Enable SSH!"), open("ssh", Length::Default, None));
        assert_eq!(
            p("  \"enable   ssh\". "),
            open("ssh", Length::Default, None)
        );
        assert_eq!(
            p("disable ssh"),
            Parsed::Command(Command::Close {
                gate: Some(g("ssh"))
            })
        );
        for not_a_command in [
            "don't enable ssh",
            "please enable ssh",
            "Enable SSH now",
            "enable ssh, disable ssh",
            "enable ssh and disable ssh",
            "hello there",
            "enablessh",
            "enable\u{200b}ssh",
            "\u{202e}enable ssh",
            "enable ѕsh",
            "enable ſsh",
            "🔥 enable ssh",
        ] {
            assert_eq!(p(not_a_command), Parsed::Ignore, "{not_a_command:?}");
        }
        let no_ssh = parse_gates("web=80/tcp").unwrap();
        assert_eq!(parse("enable ssh", "b", &no_ssh), Parsed::Ignore);
    }

    #[test]
    fn bad_commands_get_a_reason() {
        for bad in [
            "/open sssh",
            "/open ssh ssh",
            "/open 5m 10m",
            "/open 1.2.3.4 5.6.7.8",
            "/open 256.1.1.1",
            "/open 1.2.3.4/33",
            "/open 0.0.0.0/0",
            "/open ::/0",
            "/open -5",
            "/open 5x",
            "/open 99999999999999999999",
            "/open 400d",
            "/open ssh 5m 1.2.3.4 extra",
            "/open -j ACCEPT",
            "/open --dport 1",
            "/open ;rm -rf /",
            "/open $(reboot)",
            "/open 5\u{1b}[2Jm",
            "/close nope",
            "/close ssh web",
            "/status now",
            "/frobnicate@KnockBot",
        ] {
            assert!(
                matches!(p(bad), Parsed::Invalid(_)),
                "{bad:?} gave {:?}",
                p(bad)
            );
        }
        assert!(matches!(p("/frobnicate"), Parsed::Unknown(_)));
        assert_eq!(p(""), Parsed::Ignore);
        assert_eq!(p("   "), Parsed::Ignore);
    }

    /// With the second factor on, the code rides in `/run`, `/ban` and `/unban` too, and
    /// never becomes the action name, the address, or minutes.
    #[test]
    fn codes_ride_in_run_ban_and_unban() {
        let t = |text: &str| parse_with(text, "KnockBot", &gates(), true);
        let coded = |code: &str, command: Guarded| {
            Parsed::Command(Command::WithCode {
                code: code.into(),
                command,
            })
        };
        let run = |n: &str| Guarded::Run { name: n.into() };
        assert_eq!(t("/run backup 492039"), coded("492039", run("backup")));
        assert_eq!(t("/run backup"), Parsed::Command(run("backup").into()));
        assert_eq!(t("/run"), Parsed::Command(Command::Run { name: None }));
        // An action whose name is digits is still named first.
        assert_eq!(t("/run 123456 492039"), coded("492039", run("123456")));
        assert_eq!(
            parse("/run 123456", "b", &gates()),
            Parsed::Command(run("123456").into()),
            "without the second factor, six digits are a name"
        );
        let ban = |a: &str, length| Guarded::Ban {
            addr: a.parse().unwrap(),
            length,
        };
        assert_eq!(
            t("/ban 203.0.113.7 1d 492039"),
            coded("492039", ban("203.0.113.7", Length::Secs(86_400)))
        );
        assert_eq!(
            t("/ban 492039 203.0.113.7"),
            coded("492039", ban("203.0.113.7", Length::Default)),
            "a bare 6-digit word is the code, never minutes"
        );
        assert_eq!(
            t("/ban 2001:db8::/64 1440m"),
            Parsed::Command(ban("2001:db8::/64", Length::Secs(86_400)).into())
        );
        assert_eq!(
            t("/unban 203.0.113.7 492039"),
            coded(
                "492039",
                Guarded::Unban {
                    addr: "203.0.113.7".parse().unwrap()
                }
            )
        );
        for (bad, why) in [
            ("/run 492039", "the action name first"),
            ("/run backup 492 039", "is not a code"),
            ("/run backup 49203a", "is not a code"),
            ("/run backup x 492039", "one action name, then the code"),
            ("/run a;b 492039", "not an action name"),
            ("/run 492039 backup", "one action name, then the code"),
            ("/ban 203.0.113.7 492039 123456", "more than one code"),
            ("/ban 203.0.113.7 1d 492 039", "is not a code"),
            ("/ban 203.0.113.7 49203a", "is not a code"),
            ("/ban 0.0.0.0/0 492039", "every address"),
            ("/ban 492039", "needs an address"),
            ("/unban 203.0.113.7 49-2039", "is not a code"),
            ("/unban 492039", "not an IPv4/IPv6 address"),
            ("/unban 203.0.113.7 1d 492039", "one address, then the code"),
        ] {
            let Parsed::Invalid(text) = t(bad) else {
                panic!("{bad:?} gave {:?}", t(bad))
            };
            assert!(text.contains(why), "{bad:?}: {text}");
        }
        // Without the second factor, nothing is a code.
        assert!(matches!(
            parse("/run backup 492039", "b", &gates()),
            Parsed::Invalid(_)
        ));
        assert!(matches!(
            parse("/unban 203.0.113.7 492039", "b", &gates()),
            Parsed::Invalid(_)
        ));
    }

    #[test]
    fn usage_lists_gates() {
        let u = usage(&gates(), 900, 86_400);
        assert!(u.contains("ssh (22/tcp) - the default"));
        assert!(u.contains("web (80/tcp,443/tcp)"));
        assert!(u.contains("Default 15 min, at most 1 d"));
    }
}
