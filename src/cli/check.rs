//! `tgknock check`: a list of small named checks, each giving verdict lines; then the
//! rules tgknock would install. Exit 1 when any check fails, 3 when Telegram rejects the
//! token, 2 when the configuration cannot be read.

use std::fmt;

use crate::base::duration;
use crate::base::error::{Error, Result};
use crate::chat::telegram::BotApi;
use crate::cli::daemon::clock_is_off;
use crate::firewall::keeper::Keeper;
use crate::os::logging;
use crate::store::config::Config;
use crate::store::state::Paths;

/// How a line of the report reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mark {
    Ok,
    Fail,
    /// Worth knowing, not a failure.
    Warn,
    /// A part deliberately not in use.
    Off,
    /// A detail of the line above.
    Note,
}

/// One verdict line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Line {
    mark: Mark,
    text: String,
}

impl Line {
    fn ok(text: impl Into<String>) -> Line {
        Line {
            mark: Mark::Ok,
            text: text.into(),
        }
    }

    fn fail(text: impl Into<String>) -> Line {
        Line {
            mark: Mark::Fail,
            text: text.into(),
        }
    }

    fn of(good: bool, text: impl Into<String>) -> Line {
        if good {
            Line::ok(text)
        } else {
            Line::fail(text)
        }
    }

    fn warn(text: impl Into<String>) -> Line {
        Line {
            mark: Mark::Warn,
            text: text.into(),
        }
    }

    fn note(text: impl Into<String>) -> Line {
        Line {
            mark: Mark::Note,
            text: text.into(),
        }
    }

    /// A check that is a `Result`: `text` when it holds, the error when not.
    fn result(r: Result<()>, text: impl Into<String>) -> Line {
        match r {
            Ok(()) => Line::ok(text),
            Err(e) => Line::fail(e.to_string()),
        }
    }
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mark = match self.mark {
            Mark::Ok => "[ ok ]",
            Mark::Fail => "[FAIL]",
            Mark::Warn => "[warn]",
            Mark::Off => "[ -- ]",
            Mark::Note => "      ",
        };
        write!(f, "{mark} {}", self.text)
    }
}

/// What the checks share.
struct Ctx {
    keeper: Keeper,
    now: u64,
    /// Telegram rejected the token: `check` exits 3.
    rejected: Option<Error>,
}

impl Ctx {
    fn cfg(&self) -> &Config {
        &self.keeper.cfg
    }
}

type Check = fn(&mut Ctx) -> Vec<Line>;

/// The checks, in the order they are reported.
const CHECKS: &[(&str, Check)] = &[
    ("config", config),
    ("token", token),
    ("limits", limits),
    ("state directory", state_dir),
    ("firewall", firewall),
    ("knock", knock),
    ("actions", actions),
    ("IPv6", ipv6),
    ("system clock", system_clock),
    ("Telegram", telegram),
];

fn config(c: &mut Ctx) -> Vec<Line> {
    let mut lines = vec![Line::ok(format!("config read from {}", c.cfg().origin))];
    lines.extend(c.cfg().warnings.iter().map(Line::warn));
    lines
}

fn token(c: &mut Ctx) -> Vec<Line> {
    let cfg = c.cfg();
    vec![match cfg.require_bot() {
        Ok(_) => Line::ok(format!(
            "token set; allowed users: {}",
            cfg.telegram
                .allowed_users
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )),
        Err(e) => Line::fail(e.to_string()),
    }]
}

fn limits(c: &mut Ctx) -> Vec<Line> {
    let cfg = c.cfg();
    let l = &cfg.limits;
    vec![
        Line::note(format!(
            "gates: {}",
            cfg.gates
                .iter()
                .map(|g| format!("{}={}", g.name, g.ports_text()))
                .collect::<Vec<_>>()
                .join(" ")
        )),
        Line::note(format!(
            "default opening {}, longest {}, commands older than {} refused",
            if l.open_for == 0 {
                "until closed".into()
            } else {
                duration::human(l.open_for)
            },
            if l.max_open_for == 0 {
                "unlimited".into()
            } else {
                duration::human(l.max_open_for)
            },
            duration::human(l.max_age)
        )),
    ]
}

fn state_dir(c: &mut Ctx) -> Vec<Line> {
    let dir = &c.cfg().files.state_dir;
    vec![Line::result(
        Paths::new(dir).state_dir().and_then(|d| d.probe_writable()),
        format!("state directory {} is writable", dir.display()),
    )]
}

fn firewall(c: &mut Ctx) -> Vec<Line> {
    let fw = &c.keeper.fw;
    let mut lines = vec![Line::note(format!(
        "firewall: {} ({}), TGKNOCK_FIREWALL={}",
        fw.kind(),
        fw.place(),
        c.cfg().firewall.kind
    ))];
    lines.extend(
        fw.check_tools()
            .into_iter()
            .map(|(good, text)| Line::of(good, text)),
    );
    fw.probe();
    lines.push(match fw.deadline_problem() {
        None => Line::ok(format!(
            "deadlines: the kernel keeps them too ({})",
            fw.deadline_match()
        )),
        Some(why) => Line::warn(format!(
            "{} (load xt_time, or use a kernel with nft's meta time)",
            crate::firewall::no_deadlines(why)
        )),
    });
    let cfg = c.cfg();
    if !cfg.rate_limits.is_empty() {
        lines.push(Line::note(format!(
            "rate limits per source: {}",
            cfg.rate_limits
                .iter()
                .map(|(g, r)| format!("{g}={}/{}", r.count, r.per.word()))
                .collect::<Vec<_>>()
                .join(" ")
        )));
    }
    if cfg.totp.is_some() {
        lines.push(Line::note(
            "second factor: openings from chat need a TOTP code (TGKNOCK_TOTP_SECRET_FILE)",
        ));
    }
    lines
}

fn knock(c: &mut Ctx) -> Vec<Line> {
    c.cfg()
        .knock
        .iter()
        .map(|k| {
            Line::note(format!(
                "knock fallback: {} opens {} to the knocker for {}",
                k.ports_text(),
                k.gate,
                duration::human(k.open_for)
            ))
        })
        .collect()
}

/// Each declared action's program: a missing one is worth a warning, not a failure (the
/// gates do not depend on it).
fn actions(c: &mut Ctx) -> Vec<Line> {
    use std::os::unix::fs::PermissionsExt;
    let actions = &c.cfg().actions;
    actions
        .list
        .iter()
        .map(|a| {
            let program = &a.argv[0];
            match std::fs::metadata(program) {
                Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Line::ok(format!(
                    "action {}: {} (at most {})",
                    a.name,
                    a.command_line(),
                    duration::human(actions.timeout)
                )),
                Ok(_) => Line::warn(format!(
                    "action {}: {program} is not an executable file",
                    a.name
                )),
                Err(e) => Line::warn(format!("action {}: {program}: {e}", a.name)),
            }
        })
        .collect()
}

fn ipv6(c: &mut Ctx) -> Vec<Line> {
    if c.cfg().firewall.ip6tables.is_some() {
        return Vec::new();
    }
    vec![Line {
        mark: Mark::Off,
        text: "IPv6: not managed (TGKNOCK_IP6TABLES=off)".into(),
    }]
}

fn system_clock(c: &mut Ctx) -> Vec<Line> {
    vec![Line::of(
        !crate::os::clock::clock_before_build(),
        format!("system clock: {}", duration::utc_full(c.now)),
    )]
}

/// `getMe` with the token, and the board's clock against Telegram's.
fn telegram(c: &mut Ctx) -> Vec<Line> {
    let Ok(token) = c.cfg().require_bot() else {
        return Vec::new();
    };
    let answer =
        BotApi::new(&c.cfg().telegram, token).and_then(|api| api.get_me().map_err(Error::from));
    let (me, server) = match answer {
        Ok(a) => a,
        Err(e) => {
            let line = Line::fail(e.to_string());
            if let Error::TokenRejected(_) = e {
                c.rejected = Some(e);
            }
            return vec![line];
        }
    };
    let mut lines = vec![Line::ok(format!(
        "Telegram: the token belongs to @{} (id {})",
        me.username.as_deref().unwrap_or("?"),
        me.id
    ))];
    // Commands are judged by Telegram's clock, so a skew is no failure; but replies
    // show the board's time, and TLS needs a sane clock.
    lines.push(match server {
        Some(s) => {
            let skew = c.now as i64 - s as i64;
            let text = format!("clock: {}", duration::skew_text(skew));
            if clock_is_off(skew, c.cfg().limits.max_age) {
                Line::warn(format!("{text}; set it (NTP): times in replies use it"))
            } else {
                Line::ok(text)
            }
        }
        None => Line::warn("clock: Telegram's answer had no Date header to compare with"),
    });
    lines
}

/// Runs every check on the configuration `load` gave, prints the report and the rules;
/// returns the exit code (or the error that decides it).
pub(crate) fn run(load: Result<Config>) -> Result<i32> {
    let cfg = match load {
        Ok(cfg) => cfg,
        Err(e) => {
            println!(
                "{}",
                Line::fail(format!("config: {}", logging::redact(&e.to_string())))
            );
            return Err(e);
        }
    };
    let mut ctx = Ctx {
        keeper: Keeper::new(cfg),
        now: crate::os::clock::now(),
        rejected: None,
    };
    let mut failed = Vec::new();
    for (name, check) in CHECKS {
        for line in check(&mut ctx) {
            if line.mark == Mark::Fail && !failed.contains(name) {
                failed.push(*name);
            }
            println!("{line}");
        }
    }
    if let Ok(st) = ctx.keeper.load_state() {
        print!("{}", ctx.keeper.fw.preview(&st, ctx.now));
    }
    if let Some(e) = ctx.rejected {
        return Err(e);
    }
    if failed.is_empty() {
        println!("\nall checks passed");
        Ok(0)
    } else {
        println!("\nsome checks failed: {}", failed.join(", "));
        Ok(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(env: &[(&str, &str)]) -> Ctx {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Ctx {
            keeper: Keeper::new(Config::from_sources(None, &env).unwrap()),
            now: 1_800_000_000,
            rejected: None,
        }
    }

    #[test]
    fn lines_read_as_before() {
        assert_eq!(Line::ok("x").to_string(), "[ ok ] x");
        assert_eq!(Line::fail("x").to_string(), "[FAIL] x");
        assert_eq!(Line::warn("x").to_string(), "[warn] x");
        assert_eq!(Line::note("x").to_string(), "       x");
    }

    #[test]
    fn small_checks_give_their_verdicts() {
        let mut c = ctx(&[("TGKNOCK_IP6TABLES", "off"), ("TGKNOCK_KNOCK", "7311,2918")]);
        let t = token(&mut c);
        assert_eq!(t[0].mark, Mark::Fail);
        assert!(t[0].text.contains("no bot token"), "{:?}", t);
        assert_eq!(ipv6(&mut c)[0].mark, Mark::Off);
        assert!(knock(&mut c)[0].text.contains("7311,2918 opens ssh"));
        let l = limits(&mut c);
        assert_eq!(
            l[1].text,
            "default opening 15 min, longest 1 d, commands older than 1 min refused"
        );
        assert!(telegram(&mut c).is_empty(), "no token: no call to Telegram");
        let mut c = ctx(&[(
            "TGKNOCK_TOKEN",
            "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw",
        )]);
        assert!(token(&mut c)[0].text.contains("TGKNOCK_ALLOWED_USERS"));
        assert!(ipv6(&mut c).is_empty());
    }

    #[test]
    fn actions_are_checked_for_a_program() {
        let mut c = ctx(&[
            ("TGKNOCK_ACTION_OK", "/bin/sh -c \"exit 0\""),
            ("TGKNOCK_ACTION_GONE", "/nonexistent/tool"),
            ("TGKNOCK_ACTION_DIR", "/tmp"),
        ]);
        let l = actions(&mut c);
        assert_eq!(l.len(), 3);
        assert_eq!(l[0].mark, Mark::Warn);
        assert!(
            l[0].text.starts_with("action dir: /tmp is not"),
            "{:?}",
            l[0]
        );
        assert_eq!(l[1].mark, Mark::Warn);
        assert!(
            l[1].text.starts_with("action gone: /nonexistent/tool: "),
            "{:?}",
            l[1]
        );
        assert_eq!(
            l[2],
            Line::ok("action ok: /bin/sh -c \"exit 0\" (at most 30 s)")
        );
    }
}
