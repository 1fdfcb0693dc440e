//! How the verified state of the gates is told: chat replies, `status`, `status --json`.

use serde_json::json;

use crate::base::addr::{Cidr, Family};
use crate::base::duration;
use crate::base::gate::{Gate, GateName};
use crate::firewall::Firewall;
use crate::firewall::keeper::Outcome;
use crate::firewall::rules::{self, GateView, Limit, Pass};
use crate::store::config::Config;
use crate::store::state::{Opening, State};

/// What one gate is, after comparing the kernel with the saved state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    Closed,
    /// Open (to everyone when `from` is `None` on an opening); the live openings.
    Open(Vec<Opening>),
    /// The kernel and the saved state disagree, or a family cannot be read.
    Mismatch(String),
}

fn view_text(v: &GateView) -> String {
    match v {
        GateView::Closed => "closed".into(),
        GateView::OpenToAll => "open to everyone".into(),
        GateView::Open(p) => format!(
            "open to {}",
            p.iter().map(pass_text).collect::<Vec<_>>().join(", ")
        ),
        GateView::Inconsistent(m) => format!("inconsistent ({m})"),
        GateView::NotInstalled => "not installed (no chain or no jump from INPUT)".into(),
    }
}

fn pass_text(p: &Pass) -> String {
    let who = p.from.map_or("everyone".to_string(), |c| c.to_string());
    match p.until {
        Some(u) => format!("{who} until {}", duration::utc_full(u)),
        None => who,
    }
}

/// Each managed family's view of `gate` (or why it could not be read).
pub(crate) fn views(gate: &Gate, out: &Outcome) -> Vec<(Family, Result<GateView, String>)> {
    out.listings
        .iter()
        .map(|(fam, l)| (*fam, l.as_ref().map(|l| l.view(gate)).map_err(Clone::clone)))
        .collect()
}

/// Compares the kernel with what the saved state asks for at `out.now`.
pub(crate) fn verdict(gate: &Gate, out: &Outcome) -> Verdict {
    let mut problems = Vec::new();
    for (fam, view) in views(gate, out) {
        let expected = rules::expected_view(gate, &out.state, out.now, fam, out.deadlines);
        match view {
            Ok(v) if v == expected => {}
            Ok(v) => problems.push(format!(
                "{fam} shows {}, expected {}",
                view_text(&v),
                view_text(&expected)
            )),
            Err(e) => problems.push(format!("{fam} cannot be read: {e}")),
        }
    }
    if !problems.is_empty() {
        return Verdict::Mismatch(problems.join("; "));
    }
    let live = live_openings(&out.state, &gate.name, out.now);
    if live.is_empty() {
        Verdict::Closed
    } else {
        Verdict::Open(live)
    }
}

fn live_openings(state: &State, gate: &GateName, now: u64) -> Vec<Opening> {
    let mut live: Vec<Opening> = state
        .openings_of(gate)
        .iter()
        .filter(|o| o.until.is_none_or(|u| u > now))
        .cloned()
        .collect();
    // An opening to everyone makes the per-source ones moot while it lasts.
    if let Some(all) = live.iter().find(|o| o.from.is_none()).cloned() {
        live.retain(|o| {
            o.from.is_none() || o.until.is_none_or(|u| all.until.is_some_and(|a| u > a))
        });
    }
    live
}

fn until_text(until: Option<u64>, now: u64) -> String {
    match until {
        None => "until closed".into(),
        Some(u) => format!(
            "until {}, {}",
            duration::utc_short(u, now),
            duration::human(u.saturating_sub(now))
        ),
    }
}

/// `ssh (22/tcp) open to everyone until 14:35 UTC, 15 min`.
pub(crate) fn gate_line(gate: &Gate, out: &Outcome) -> String {
    gate_text(gate, out, false)
}

/// The gate's line; with `mark`, each opening the kernel itself closes at its deadline
/// says so (`status`).
fn gate_text(gate: &Gate, out: &Outcome, mark: bool) -> String {
    let head = format!("{} ({})", gate.name, gate.ports_text());
    match verdict(gate, out) {
        Verdict::Closed => format!("{head} closed"),
        Verdict::Open(openings) => {
            let parts: Vec<String> = openings
                .iter()
                .map(|o| {
                    let who = match &o.from {
                        None => "everyone".to_string(),
                        Some(c) => {
                            let only = if c.family() == Family::V4 {
                                "IPv4"
                            } else {
                                "IPv6"
                            };
                            format!("{c} ({only} only)")
                        }
                    };
                    let kernel = if mark && out.deadlines && o.until.is_some() {
                        ", kernel-enforced"
                    } else {
                        ""
                    };
                    format!("to {who} {}{kernel}", until_text(o.until, out.now))
                })
                .collect();
            format!("{head} open {}", parts.join("; then "))
        }
        Verdict::Mismatch(m) => format!("{head} MISMATCH: {m}"),
    }
}

/// The bans the saved state holds at `out.now`, in the order of the state.
fn live_bans(out: &Outcome) -> Vec<&crate::store::state::Ban> {
    out.state
        .bans
        .iter()
        .filter(|b| b.until.is_none_or(|u| u > out.now))
        .collect()
}

/// Where the kernel's bans differ from the saved state's, family by family.
pub(crate) fn bans_mismatch(out: &Outcome) -> Option<String> {
    let mut problems = Vec::new();
    for (fam, l) in &out.listings {
        let want = rules::expected_bans(&out.state, out.now, *fam, out.deadlines);
        match l {
            Ok(l) if l.installed() && l.bans() == want => {}
            Ok(l) if l.installed() => problems.push(format!(
                "{fam} holds {} bans where {} belong",
                l.bans().len(),
                want.len()
            )),
            Ok(_) => problems.push(format!("{fam}: the rules are not installed")),
            Err(e) => problems.push(format!("{fam} cannot be read: {e}")),
        }
    }
    (!problems.is_empty()).then(|| problems.join("; "))
}

fn ban_text(b: &crate::store::state::Ban, now: u64) -> String {
    let only = match b.addr.family() {
        Family::V4 => "IPv4",
        Family::V6 => "IPv6",
    };
    let until = match b.until {
        None => "until lifted".to_string(),
        u => until_text(u, now),
    };
    format!("{} ({only} only) {until}", b.addr)
}

/// The reply to `/ban` and `tgknock ban`: what the kernel shows of `addr` now.
pub(crate) fn ban_line(addr: &Cidr, out: &Outcome) -> String {
    let fam = addr.family();
    let want = rules::expected_bans(&out.state, out.now, fam, out.deadlines);
    let kernel = out
        .listings
        .iter()
        .find(|(f, _)| *f == fam)
        .map(|(_, l)| l.as_ref().map(|l| l.bans()));
    let entry = want.iter().find(|(a, _)| a == addr).copied();
    let shown = match kernel {
        None => return format!("{addr}: {fam} is not managed (TGKNOCK_IP6TABLES=off)"),
        Some(Err(e)) => return format!("{addr}: MISMATCH: {fam} cannot be read: {e}"),
        Some(Ok(k)) => k.iter().find(|(a, _)| a == addr).copied(),
    };
    match (entry, shown) {
        (Some(e), Some(s)) if e == s => {
            let ban = out.state.bans.iter().find(|b| b.addr == *addr);
            match ban {
                Some(b) => format!("banned {}", ban_text(b, out.now)),
                None => format!("{addr} banned"),
            }
        }
        (None, None) => format!("{addr} not banned"),
        (e, s) => format!(
            "{addr} MISMATCH: {fam} shows {}, expected {}",
            if s.is_some() { "a ban" } else { "no ban" },
            if e.is_some() { "a ban" } else { "none" }
        ),
    }
}

/// Whether the kernel holds `gate`'s rate limit in every family (`None`: it has none).
fn limit_verified(gate: &Gate, limit: Limit, out: &Outcome) -> bool {
    out.listings
        .iter()
        .all(|(_, l)| l.as_ref().is_ok_and(|l| l.limit(gate) == Some(limit)))
}

/// The whole status, as `tgknock status` and `/status` show it.
pub(crate) fn status_text(cfg: &Config, fw: &Firewall, out: &Outcome) -> String {
    let mut lines: Vec<String> = cfg.gates.iter().map(|g| gate_text(g, out, true)).collect();
    bans_lines(out, &mut lines);
    if !cfg.rate_limits.is_empty() {
        lines.push(rate_limits_line(cfg, out));
    }
    lines.push(deadlines_line(fw, out));
    for (fam, l) in &out.listings {
        lines.push(match l {
            Ok(l) if l.installed() => format!(
                "{fam}: {} {} with {} rules{}",
                fw.kind(),
                fw.place(),
                l.lines.len(),
                fw.reached()
            ),
            Ok(_) => format!("{fam}: {} {} is NOT installed", fw.kind(), fw.place()),
            Err(e) => format!("{fam}: cannot read the firewall: {e}"),
        });
    }
    if let Some(k) = &fw.policy.knock {
        lines.push(knock_line(k, out));
    }
    if cfg.firewall.ip6tables.is_none() {
        lines.push("IPv6: not managed (TGKNOCK_IP6TABLES=off)".into());
    }
    if !cfg.firewall.always_allow.is_empty() {
        lines.push(format!(
            "always allowed: {}",
            cfg.firewall
                .always_allow
                .iter()
                .map(Cidr::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    lines.join("\n")
}

/// The bans in force (the first ones, and how many more), after a mismatch if any.
fn bans_lines(out: &Outcome, lines: &mut Vec<String>) {
    let bans = live_bans(out);
    if let Some(m) = bans_mismatch(out) {
        lines.push(format!("bans MISMATCH: {m}"));
    }
    const SHOWN: usize = 20;
    for b in bans.iter().take(SHOWN) {
        lines.push(format!("banned {}", ban_text(b, out.now)));
    }
    if bans.len() > SHOWN {
        lines.push(format!(
            "… and {} more bans (tgknock status --json lists them all)",
            bans.len() - SHOWN
        ));
    }
}

/// The rate limits of the gates, each marked when the kernel lacks it.
fn rate_limits_line(cfg: &Config, out: &Outcome) -> String {
    let parts: Vec<String> = cfg
        .rate_limits
        .iter()
        .filter_map(|(name, rate)| {
            let g = cfg.gate(name.as_str())?;
            let ok = limit_verified(g, Limit::of(*rate), out);
            Some(format!(
                "{name} {}/{}{}",
                rate.count,
                rate.per.word(),
                if ok { "" } else { " (MISSING in the kernel)" }
            ))
        })
        .collect();
    format!(
        "rate limits per source (new connections; always-allowed exempt): {}",
        parts.join(", ")
    )
}

/// Who keeps the deadlines: the kernel too, or tgknock only (and why).
fn deadlines_line(fw: &Firewall, out: &Outcome) -> String {
    match fw.deadline_problem() {
        None if out.deadlines => {
            "deadlines: kept by the kernel too, so openings close and bans lift on time even with tgknock stopped".to_string()
        }
        Some(why) => format!(
            "deadlines: kept by tgknock only, the kernel cannot ({why}); while tgknock is stopped nothing closes"
        ),
        None => "deadlines: kept by tgknock only".to_string(),
    }
}

/// The knock fallback, and in which families its rules are armed.
fn knock_line(k: &crate::base::gate::Knock, out: &Outcome) -> String {
    let armed: Vec<String> = out
        .listings
        .iter()
        .filter(|(_, l)| l.as_ref().is_ok_and(|l| l.knock_armed()))
        .map(|(f, _)| f.to_string())
        .collect();
    format!(
        "knock fallback {}: {} opens {} to the knocker for {}",
        if armed.is_empty() {
            "NOT armed".to_string()
        } else {
            format!("armed ({})", armed.join(", "))
        },
        k.ports_text(),
        k.gate,
        duration::human(k.open_for)
    )
}

/// Whether every gate is as the state says in every family.
pub(crate) fn all_verified(cfg: &Config, out: &Outcome) -> bool {
    problems(cfg, out).is_empty()
}

/// Where the kernel is not what the saved state asks for, each said plainly: a family
/// that cannot be read, else each gate that does not match and the bans. Empty when
/// everything is verified.
pub(crate) fn problems(cfg: &Config, out: &Outcome) -> Vec<String> {
    let unreadable: Vec<String> = out
        .listings
        .iter()
        .filter_map(|(fam, l)| {
            l.as_ref()
                .err()
                .map(|e| format!("{fam} cannot be read: {e}"))
        })
        .collect();
    if !unreadable.is_empty() {
        return unreadable;
    }
    let mut found: Vec<String> = cfg
        .gates
        .iter()
        .filter_map(|g| match verdict(g, out) {
            Verdict::Mismatch(m) => Some(format!("{}: {m}", g.name)),
            _ => None,
        })
        .collect();
    found.extend(bans_mismatch(out).map(|m| format!("bans: {m}")));
    found
}

fn view_json(v: &Result<GateView, String>) -> serde_json::Value {
    match v {
        Ok(GateView::Closed) => json!({"state": "closed"}),
        Ok(GateView::OpenToAll) => json!({"state": "open", "from": null}),
        // `from` as before (null: everyone; else the sources), and each way through with
        // the deadline the kernel keeps.
        Ok(GateView::Open(p)) => json!({
            "state": "open",
            "from": if p.iter().any(|p| p.from.is_none()) {
                serde_json::Value::Null
            } else {
                json!(p.iter().filter_map(|p| p.from).collect::<Vec<_>>())
            },
            "passes": p.iter().map(|p| json!({"from": p.from, "until": p.until})).collect::<Vec<_>>(),
        }),
        Ok(GateView::Inconsistent(m)) => json!({"state": "inconsistent", "detail": m}),
        Ok(GateView::NotInstalled) => json!({"state": "not-installed"}),
        Err(e) => json!({"state": "error", "detail": e}),
    }
}

/// `tgknock status --json`.
pub(crate) fn status_json(
    cfg: &Config,
    fw: &Firewall,
    out: &Outcome,
    daemon_pid: Option<u32>,
) -> serde_json::Value {
    let gates: Vec<serde_json::Value> = cfg
        .gates
        .iter()
        .map(|g| {
            let (state, detail, openings) = match verdict(g, out) {
                Verdict::Closed => ("closed", None, Vec::new()),
                Verdict::Open(o) => ("open", None, o),
                Verdict::Mismatch(m) => (
                    "mismatch",
                    Some(m),
                    live_openings(&out.state, &g.name, out.now),
                ),
            };
            let mut families = serde_json::Map::new();
            for (fam, v) in views(g, out) {
                families.insert(format!("ip{}", fam.short()), view_json(&v));
            }
            if cfg.firewall.ip6tables.is_none() {
                families.insert("ipv6".into(), json!({"state": "unmanaged"}));
            }
            json!({
                "name": g.name,
                "ports": g.ports_text(),
                "state": state,
                "detail": detail,
                "openings": openings.iter().map(|o| json!({
                    "from": o.from,
                    "until": o.until,
                    "until_utc": o.until.map(duration::utc_full),
                    "by": o.by,
                    "kernel_deadline": out.deadlines && o.until.is_some(),
                })).collect::<Vec<_>>(),
                "families": families,
                "rate_limit": cfg.rate_limits.iter().find(|(n, _)| *n == g.name).map(|(_, r)| json!({
                    "rate": format!("{}/{}", r.count, r.per.word()),
                    "in_kernel": limit_verified(g, Limit::of(*r), out),
                })),
            })
        })
        .collect();
    json!({
        "firewall": fw.kind().to_string(),
        "knock": fw.policy.knock.as_ref().map(|k| json!({
            "ports": k.ports,
            "gate": k.gate,
            "open_for": k.open_for,
            "armed": out.listings.iter().filter(|(_, l)| l.as_ref().is_ok_and(|l| l.knock_armed())).map(|(f, _)| f.to_string()).collect::<Vec<_>>(),
        })),
        "checked_at": out.now,
        "checked_at_utc": duration::utc_full(out.now),
        "chain": cfg.firewall.chain,
        "ipv6_managed": cfg.firewall.ip6tables.is_some(),
        "always_allow": cfg.firewall.always_allow,
        "daemon_pid": daemon_pid,
        "gates": gates,
        "kernel_deadlines": out.deadlines,
        "kernel_deadlines_problem": fw.deadline_problem(),
        "bans": live_bans(out).iter().map(|b| json!({
            "addr": b.addr,
            "until": b.until,
            "until_utc": b.until.map(duration::utc_full),
            "by": b.by,
            "kernel_deadline": out.deadlines && b.until.is_some(),
        })).collect::<Vec<_>>(),
        "bans_verified": bans_mismatch(out).is_none(),
        "bans_mismatch": bans_mismatch(out),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::ids::UserId;
    use crate::firewall::rules::Listing;
    use crate::store::state::Actor;
    use crate::testkit::{NOW, outcome};

    fn cfg(extra: &[(&str, &str)]) -> Config {
        let gates = ("TGKNOCK_GATES", "ssh=22/tcp web=80/tcp,443/tcp");
        crate::testkit::config_of(&[&[gates], extra].concat())
    }

    fn opened(gate: &str, from: Option<&str>, until: Option<u64>) -> State {
        let mut s = State::default();
        s.open(
            &GateName::new(gate).unwrap(),
            Opening {
                from: from.map(|f| f.parse().unwrap()),
                until,
                by: Actor::Telegram(UserId(7)),
            },
        )
        .unwrap();
        s
    }

    #[test]
    fn lines_tell_what_the_kernel_shows() {
        let c = cfg(&[]);
        let fw = Firewall::from_config(&c);
        let (ssh, web) = (&c.gates[0], &c.gates[1]);
        let closed = State::default();
        let out = outcome(&fw, &closed, &closed);
        assert_eq!(gate_line(ssh, &out), "ssh (22/tcp) closed");
        let open = opened("ssh", None, Some(NOW + 900));
        let out = outcome(&fw, &open, &open);
        assert_eq!(
            gate_line(ssh, &out),
            format!(
                "ssh (22/tcp) open to everyone until {}, 15 min",
                duration::utc_short(NOW + 900, NOW)
            )
        );
        assert_eq!(gate_line(web, &out), "web (80/tcp,443/tcp) closed");
        let one = opened("web", Some("203.0.113.7"), None);
        let out = outcome(&fw, &one, &one);
        assert_eq!(
            gate_line(web, &out),
            "web (80/tcp,443/tcp) open to 203.0.113.7 (IPv4 only) until closed"
        );
        assert!(all_verified(&c, &out));
    }

    #[test]
    fn a_kernel_that_disagrees_is_a_mismatch_never_an_intention() {
        let c = cfg(&[]);
        let fw = Firewall::from_config(&c);
        let saved = opened("ssh", None, Some(NOW + 900));
        let out = outcome(&fw, &saved, &State::default());
        let line = gate_line(&c.gates[0], &out);
        assert!(
            line.starts_with("ssh (22/tcp) MISMATCH: IPv4 shows closed, expected open to everyone"),
            "{line}"
        );
        assert!(!all_verified(&c, &out));
        let mut unreadable = out.clone();
        unreadable.listings[1].1 = Err("permission denied".into());
        assert!(
            gate_line(&c.gates[0], &unreadable).contains("IPv6 cannot be read: permission denied")
        );
        let mut missing = outcome(&fw, &State::default(), &State::default());
        missing.listings[0].1 = Ok(Listing::default());
        assert!(gate_line(&c.gates[0], &missing).contains("not installed"));
    }

    #[test]
    fn status_names_the_backend_the_knock_and_what_is_exempt() {
        let c = cfg(&[
            ("TGKNOCK_KNOCK", "7311,2918"),
            ("TGKNOCK_ALWAYS_ALLOW", "192.168.1.0/24"),
            ("TGKNOCK_IP6TABLES", "off"),
            ("TGKNOCK_FIREWALL", "iptables"),
        ]);
        let fw = Firewall::from_config(&c);
        let mut out = outcome(&fw, &State::default(), &State::default());
        out.listings.truncate(1);
        let text = status_text(&c, &fw, &out);
        assert!(
            text.contains("IPv4: iptables chain TGKNOCK with ")
                && text.contains(", reached from INPUT"),
            "{text}"
        );
        assert!(
            text.contains(
                "knock fallback armed (IPv4): 7311,2918 opens ssh to the knocker for 30 s"
            ),
            "{text}"
        );
        assert!(
            text.contains("IPv6: not managed (TGKNOCK_IP6TABLES=off)"),
            "{text}"
        );
        assert!(text.contains("always allowed: 192.168.1.0/24"), "{text}");
        let nft = Firewall::from_config(&cfg(&[("TGKNOCK_FIREWALL", "nft")]));
        let out = outcome(&nft, &State::default(), &State::default());
        let text = status_text(&cfg(&[]), &nft, &out);
        assert!(
            text.contains("IPv4: nftables table inet tgknock with 5 rules\n"),
            "{text}"
        );
    }

    #[test]
    fn json_carries_the_same_verdicts() {
        let c = cfg(&[("TGKNOCK_IP6TABLES", "off")]);
        let fw = Firewall::from_config(&c);
        let saved = opened("web", Some("2001:db8::/64"), Some(NOW + 60));
        let mut out = outcome(&fw, &saved, &saved);
        out.listings.truncate(1);
        let v = status_json(&c, &fw, &out, Some(42));
        assert_eq!(v["daemon_pid"], 42);
        assert_eq!(v["firewall"], "iptables");
        let web = &v["gates"][1];
        assert_eq!(web["name"], "web");
        assert_eq!(web["state"], "open");
        assert_eq!(web["openings"][0]["from"], "2001:db8::/64");
        assert_eq!(web["openings"][0]["by"], "telegram:7");
        assert_eq!(web["openings"][0]["until"], NOW + 60);
        assert_eq!(web["families"]["ipv4"]["state"], "closed");
        assert_eq!(web["families"]["ipv6"]["state"], "unmanaged");
    }
}
