//! The console commands that change or show the firewall: `open`, `close`, `ban`,
//! `unban`, `status` and `teardown`, each one transaction of the keeper.

use crate::base::addr::Cidr;
use crate::base::duration;
use crate::base::duration::Length;
use crate::base::error::{Error, Result};
use crate::chat::report;
use crate::firewall::keeper::{Keeper, Outcome};
use crate::store::state::{self, Actor, Heartbeat, Opening, PidLock};

use super::args::{BanCmd, CloseCmd, OpenCmd, StatusCmd, TeardownCmd, UnbanCmd, load};

/// 0 when every gate is as the state says in every family, else 1.
pub(super) fn verified(keeper: &Keeper, out: &Outcome) -> i32 {
    if report::all_verified(&keeper.cfg, out) {
        0
    } else {
        1
    }
}

pub(super) fn open(c: OpenCmd) -> Result<i32> {
    let cfg = load(&c.config)?;
    let gate = cfg.gate_arg(c.gate.as_deref())?;
    let length = match &c.for_ {
        None => Length::Default,
        Some(s) => match duration::parse(s, None).map_err(|e| Error::usage("--for", e))? {
            0 => Length::UntilClosed,
            secs => Length::Secs(secs),
        },
    };
    let from = c
        .from
        .as_deref()
        .map(|s| s.parse::<Cidr>())
        .transpose()
        .map_err(|e| Error::usage("--from", e))?;
    let now = crate::os::clock::now();
    // The console is the way in when chat is not: TGKNOCK_MAX_OPEN_FOR does not apply.
    let opening = Opening::by_console(length, from, now, &cfg.limits);
    let bounded = opening.until.is_some();
    let keeper = Keeper::new(cfg);
    let (_, out) = keeper.change(now, |st| st.open(&gate, opening))?;
    let g = keeper.cfg.gate(gate.as_str()).expect("gate exists");
    println!("{}", report::gate_line(g, &out));
    if !keeper.wake_daemon() && bounded {
        if out.deadlines {
            println!(
                "note: no daemon is running; the kernel closes {gate} at its deadline, and `tgknock run` (or the watchdog) brings the saved state up to date when it starts"
            );
        } else {
            println!(
                "note: no daemon is running, and the kernel cannot keep deadlines, so nothing closes {gate} at its deadline; `tgknock run` (or the watchdog) closes it when it starts"
            );
        }
    }
    Ok(verified(&keeper, &out))
}

pub(super) fn close(c: CloseCmd) -> Result<i32> {
    let cfg = load(&c.config)?;
    let gate = match c.gate.as_deref() {
        None | Some("all") => None,
        Some(n) => Some(cfg.gate_arg(Some(n))?),
    };
    let keeper = Keeper::new(cfg);
    let (_, out) = keeper.change(crate::os::clock::now(), |st| {
        st.close(gate.as_ref());
        Ok(())
    })?;
    keeper.wake_daemon();
    for g in &keeper.cfg.gates {
        if gate.as_ref().is_none_or(|n| *n == g.name) {
            println!("{}", report::gate_line(g, &out));
        }
    }
    Ok(verified(&keeper, &out))
}

/// An address for `ban`/`unban`: one address or block, never every address.
pub(super) fn ban_addr(text: &str) -> Result<Cidr> {
    Cidr::bannable(text, text).map_err(|e| Error::usage("ADDR", e))
}

pub(super) fn ban(c: BanCmd) -> Result<i32> {
    let cfg = load(&c.config)?;
    let addr = ban_addr(&c.addr)?;
    let now = crate::os::clock::now();
    let until = match &c.for_ {
        None => Some(now + crate::chat::decide::BAN_FOR),
        Some(s) => match duration::parse(s, None).map_err(|e| Error::usage("--for", e))? {
            0 => None,
            secs => Some(now + secs),
        },
    };
    let keeper = Keeper::new(cfg);
    if let Some(why) = keeper.ban_refusal(&addr) {
        return Err(Error::usage("ADDR", format!("refused: {why}")));
    }
    let ban = state::Ban {
        addr,
        until,
        by: Actor::Console,
    };
    let (_, out) = keeper.change(now, |st| st.ban(ban))?;
    keeper.wake_daemon();
    println!("{}", report::ban_line(&addr, &out));
    Ok(verified(&keeper, &out))
}

pub(super) fn unban(c: UnbanCmd) -> Result<i32> {
    let cfg = load(&c.config)?;
    let addr = ban_addr(&c.addr)?;
    let keeper = Keeper::new(cfg);
    let (was, out) = keeper.change(crate::os::clock::now(), |st| Ok(st.unban(&addr)))?;
    keeper.wake_daemon();
    if !was {
        println!("note: {addr} was not banned");
    }
    println!("{}", report::ban_line(&addr, &out));
    Ok(verified(&keeper, &out))
}

pub(super) fn daemon_line(keeper: &Keeper) -> (Option<u32>, String) {
    let pid = PidLock::holder(&keeper.paths);
    let beat = Heartbeat::read(&keeper.paths).map(|h| h.at);
    let text = match (pid, beat) {
        (Some(p), Some(b)) => format!(
            "daemon: running (pid {p}), last poll {} ago",
            duration::human(crate::os::clock::now().saturating_sub(b))
        ),
        (Some(p), None) => format!("daemon: running (pid {p}), no poll yet"),
        (None, _) => "daemon: not running".into(),
    };
    (pid, text)
}

pub(super) fn status(c: StatusCmd) -> Result<i32> {
    let cfg = load(&c.config)?;
    let keeper = Keeper::new(cfg);
    let out = keeper.snapshot(crate::os::clock::now())?;
    let (pid, line) = daemon_line(&keeper);
    let skew = Heartbeat::read(&keeper.paths).and_then(|h| h.skew);
    if c.json {
        let mut v = report::status_json(&keeper.cfg, &keeper.fw, &out, pid);
        v["clock_skew"] = skew.into();
        println!("{}", serde_json::to_string_pretty(&v).expect("json"));
    } else {
        println!("{}", report::status_text(&keeper.cfg, &keeper.fw, &out));
        println!("{line}");
        match skew {
            Some(s) => println!(
                "clock: {} (as the daemon last measured)",
                duration::skew_text(s)
            ),
            None => println!("clock: not compared with Telegram's yet (the daemon measures it)"),
        }
    }
    // Every exit 1 says why, also under --json (on stderr, so stdout stays JSON).
    let problems = report::problems(&keeper.cfg, &out);
    if problems.is_empty() {
        return Ok(0);
    }
    eprintln!(
        "tgknock: status: the rules in the kernel are not what the saved state asks for: {}",
        problems.join("; ")
    );
    Ok(1)
}

pub(super) fn teardown(c: TeardownCmd) -> Result<i32> {
    let cfg = load(&c.config)?;
    let keeper = Keeper::new(cfg);
    let _lock = state::StateLock::acquire(&keeper.paths)?;
    for line in keeper.fw.teardown()? {
        println!("{line}");
    }
    if let Some(pid) = PidLock::holder(&keeper.paths) {
        println!(
            "note: the daemon (pid {pid}) is still running and reinstalls the rules at its next change; stop it first to keep them off"
        );
    }
    Ok(0)
}
