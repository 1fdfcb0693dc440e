//! How the verified state of the gates is told: chat replies, `status`, `status --json`.

use serde_json::json;

use crate::addr::{Cidr, Family};
use crate::config::Config;
use crate::duration;
use crate::firewall::Firewall;
use crate::gate::Gate;
use crate::keeper::Outcome;
use crate::rules::{self, GateView};
use crate::state::{Opening, State};

/// What one gate is, after comparing the kernel with the saved state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
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
        GateView::OpenFrom(s) => format!(
            "open to {}",
            s.iter().map(Cidr::to_string).collect::<Vec<_>>().join(", ")
        ),
        GateView::Inconsistent(m) => format!("inconsistent ({m})"),
        GateView::NotInstalled => "not installed (no chain or no jump from INPUT)".into(),
    }
}

/// Each managed family's view of `gate` (or why it could not be read).
pub fn views(gate: &Gate, out: &Outcome) -> Vec<(Family, Result<GateView, String>)> {
    out.listings
        .iter()
        .map(|(fam, l)| (*fam, l.as_ref().map(|l| l.view(gate)).map_err(Clone::clone)))
        .collect()
}

/// Compares the kernel with what the saved state asks for at `out.now`.
pub fn verdict(gate: &Gate, out: &Outcome) -> Verdict {
    let mut problems = Vec::new();
    for (fam, view) in views(gate, out) {
        let expected = rules::expected_view(gate, &out.state, out.now, fam);
        match view {
            Ok(v) if v == expected => {}
            Ok(v) => problems.push(format!(
                "{} shows {}, expected {}",
                fam.name(),
                view_text(&v),
                view_text(&expected)
            )),
            Err(e) => problems.push(format!("{} cannot be read: {e}", fam.name())),
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

fn live_openings(state: &State, gate: &str, now: u64) -> Vec<Opening> {
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
pub fn gate_line(gate: &Gate, out: &Outcome) -> String {
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
                    format!("to {who} {}", until_text(o.until, out.now))
                })
                .collect();
            format!("{head} open {}", parts.join("; then "))
        }
        Verdict::Mismatch(m) => format!("{head} MISMATCH: {m}"),
    }
}

/// The whole status, as `tgknock status` and `/status` show it.
pub fn status_text(cfg: &Config, fw: &Firewall, out: &Outcome) -> String {
    let mut lines: Vec<String> = cfg.gates.iter().map(|g| gate_line(g, out)).collect();
    for (fam, l) in &out.listings {
        lines.push(match l {
            Ok(l) if l.installed() => format!(
                "{}: {} {} with {} rules{}",
                fam.name(),
                fw.kind(),
                fw.place(),
                l.lines.len(),
                if fw.kind() == "iptables" {
                    ", reached from INPUT"
                } else {
                    ""
                }
            ),
            Ok(_) => format!(
                "{}: {} {} is NOT installed",
                fam.name(),
                fw.kind(),
                fw.place()
            ),
            Err(e) => format!("{}: cannot read the firewall: {e}", fam.name()),
        });
    }
    if let Some(k) = &fw.policy.knock {
        let armed: Vec<&str> = out
            .listings
            .iter()
            .filter(|(_, l)| l.as_ref().is_ok_and(|l| l.knock_armed()))
            .map(|(f, _)| f.name())
            .collect();
        lines.push(format!(
            "knock fallback {}: {} opens {} to the knocker for {}",
            if armed.is_empty() {
                "NOT armed".to_string()
            } else {
                format!("armed ({})", armed.join(", "))
            },
            k.ports_text(),
            k.gate,
            duration::human(k.open_for)
        ));
    }
    if cfg.ip6tables.is_none() {
        lines.push("IPv6: not managed (TGKNOCK_IP6TABLES=off)".into());
    }
    if !cfg.always_allow.is_empty() {
        lines.push(format!(
            "always allowed: {}",
            cfg.always_allow
                .iter()
                .map(Cidr::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    lines.join("\n")
}

/// Whether every gate is as the state says in every family.
pub fn all_verified(cfg: &Config, out: &Outcome) -> bool {
    cfg.gates
        .iter()
        .all(|g| !matches!(verdict(g, out), Verdict::Mismatch(_)))
}

fn view_json(v: &Result<GateView, String>) -> serde_json::Value {
    match v {
        Ok(GateView::Closed) => json!({"state": "closed"}),
        Ok(GateView::OpenToAll) => json!({"state": "open", "from": null}),
        Ok(GateView::OpenFrom(s)) => json!({"state": "open", "from": s}),
        Ok(GateView::Inconsistent(m)) => json!({"state": "inconsistent", "detail": m}),
        Ok(GateView::NotInstalled) => json!({"state": "not-installed"}),
        Err(e) => json!({"state": "error", "detail": e}),
    }
}

/// `tgknock status --json`.
pub fn status_json(
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
                families.insert(
                    match fam {
                        Family::V4 => "ipv4".into(),
                        Family::V6 => "ipv6".into(),
                    },
                    view_json(&v),
                );
            }
            if cfg.ip6tables.is_none() {
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
                })).collect::<Vec<_>>(),
                "families": families,
            })
        })
        .collect();
    json!({
        "firewall": fw.kind(),
        "knock": fw.policy.knock.as_ref().map(|k| json!({
            "ports": k.ports,
            "gate": k.gate,
            "open_for": k.open_for,
            "armed": out.listings.iter().filter(|(_, l)| l.as_ref().is_ok_and(|l| l.knock_armed())).map(|(f, _)| f.name()).collect::<Vec<_>>(),
        })),
        "checked_at": out.now,
        "checked_at_utc": duration::utc_full(out.now),
        "chain": cfg.chain,
        "ipv6_managed": cfg.ip6tables.is_some(),
        "always_allow": cfg.always_allow,
        "daemon_pid": daemon_pid,
        "gates": gates,
    })
}
