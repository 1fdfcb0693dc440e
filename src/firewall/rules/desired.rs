//! The rules tgknock wants at a time: computed from the policy and the state.

use super::listing::{GateView, Pass};
use super::rule::*;
use crate::base::addr::{Cidr, Family};
use crate::base::gate::{Gate, GateName, Knock, Proto};
use crate::base::rate::Rate;
use crate::store::state::State;

/// Everything besides the state that decides the rules.
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    pub(crate) gates: Vec<Gate>,
    pub(crate) always_allow: Vec<Cidr>,
    pub(crate) knock: Option<Knock>,
    /// Per-source rate limits of gates (`TGKNOCK_RATE_LIMIT`).
    pub(crate) limits: Vec<(GateName, Rate)>,
    /// Whether the kernel keeps deadlines itself (`-m time`, nft `meta time`); without,
    /// only the daemon's expiry closes openings and lifts bans.
    pub(crate) deadlines: bool,
}

/// The view the saved state asks for in `family` at `now` (expired openings count as
/// closed), with `deadlines` when the kernel keeps them: then an opening to everyone
/// that ends is a pass with its deadline, not the absence of rules.
pub(crate) fn expected_view(
    gate: &Gate,
    state: &State,
    now: u64,
    family: Family,
    deadlines: bool,
) -> GateView {
    let live: Vec<_> = state
        .openings_of(&gate.name)
        .iter()
        .filter(|o| o.until.is_none_or(|u| u > now))
        .collect();
    if live
        .iter()
        .any(|o| o.from.is_none() && (o.until.is_none() || !deadlines))
    {
        return GateView::OpenToAll;
    }
    let mut passes: Vec<Pass> = live
        .iter()
        .filter(|o| o.from.is_none_or(|c| c.family() == family))
        .map(|o| Pass {
            from: o.from,
            until: o.until.filter(|_| deadlines),
        })
        .collect();
    passes.sort();
    passes.dedup();
    if passes.is_empty() {
        GateView::Closed
    } else {
        GateView::Open(passes)
    }
}

/// The bans the saved state asks for in `family` at `now`: (source, kernel deadline).
pub(crate) fn expected_bans(
    state: &State,
    now: u64,
    family: Family,
    deadlines: bool,
) -> Vec<(Cidr, Option<u64>)> {
    let mut bans: Vec<(Cidr, Option<u64>)> = state
        .bans
        .iter()
        .filter(|b| b.addr.family() == family && b.until.is_none_or(|u| u > now))
        .map(|b| (b.addr, b.until.filter(|_| deadlines)))
        .collect();
    bans.sort();
    bans
}

/// The chain's rules for `family`: the always-allowed sources first, then the replies to
/// connections the board itself opened (its long poll to Telegram, its DNS queries: a ban
/// of Telegram's, the resolver's or the gateway's address must not make the bot deaf to
/// the `/unban` that would lift it), then the bans (before the established rule: a ban
/// drops every packet of its source, the connections it opened too, as fail2ban does; an
/// always-allowed source is never cut), established,
/// the gates' rate limits, the knock fallback, then per gate its passes (RETURN, bounded by
/// the kernel's deadline when it keeps them) before the gate's DROP; a gate open to
/// everyone without a deadline has none.
pub(crate) fn desired(policy: &Policy, state: &State, now: u64, family: Family) -> Vec<Rule> {
    let mut rules = Vec::new();
    for c in policy.always_allow.iter().filter(|c| c.family() == family) {
        let mut r = Rule::new(family, TAG_ALWAYS_ALLOW, Some(Target::Return));
        r.src = Some(*c);
        rules.push(r);
    }
    let mut replies = Rule::new(family, TAG_REPLIES, Some(Target::Return));
    replies.established = true;
    replies.reply = true;
    rules.push(replies);
    for (addr, until) in expected_bans(state, now, family, policy.deadlines) {
        rules.push(Rule::ban(addr, until));
    }
    let mut est = Rule::new(family, TAG_ESTABLISHED, Some(Target::Return));
    est.established = true;
    rules.push(est);
    for (name, rate) in &policy.limits {
        let Some(gate) = policy.gates.iter().find(|g| &g.name == name) else {
            continue;
        };
        for p in &gate.ports {
            let mut r = Rule::new(family, &limit_tag(name), Some(Target::Drop)).on(p);
            r.syn = p.proto == Proto::Tcp;
            r.limit = Some(Limit {
                shares: u32::try_from(gate.ports.len()).unwrap_or(u32::MAX),
                ..Limit::of(*rate)
            });
            rules.push(r);
        }
    }
    if let Some(k) = &policy.knock {
        rules.extend(knock_rules(policy, k, family));
    }
    for gate in &policy.gates {
        let passes = match expected_view(gate, state, now, family, policy.deadlines) {
            GateView::OpenToAll => continue,
            GateView::Open(p) => p,
            _ => Vec::new(),
        };
        for pass in passes {
            for p in &gate.ports {
                let mut r = Rule::new(family, &gate_tag(gate), Some(Target::Return)).on(p);
                r.src = pass.from;
                r.until = pass.until;
                rules.push(r);
            }
        }
        for p in &gate.ports {
            let mut r = Rule::new(family, &gate_tag(gate), Some(Target::Drop)).on(p);
            r.syn = p.proto == Proto::Tcp;
            rules.push(r);
        }
    }
    rules
}

/// The knock sequence as rules. The last step is checked first: a SYN to port n from a
/// source on list n-1 (seen within a few seconds) moves it to list n and is dropped; any
/// other SYN from a source on list n-1 takes it off (a wrong port resets the sequence).
/// A source on the `open` list passes the knock gate for `open_for`.
pub(super) fn knock_rules(policy: &Policy, k: &Knock, family: Family) -> Vec<Rule> {
    let mut rules = Vec::new();
    let open = List::Open(family);
    if let Some(gate) = policy.gates.iter().find(|g| g.name == k.gate) {
        for p in &gate.ports {
            let mut r = Rule::new(family, TAG_KNOCK, Some(Target::Return)).on(p);
            r.recent.push(Recent {
                op: RecentOp::Rcheck,
                seconds: Some(k.open_for),
                list: open,
            });
            rules.push(r);
        }
    }
    let n = k.ports.len();
    for step in (1..=n).rev() {
        let port = k.ports[step - 1];
        let next = if step == n {
            open
        } else {
            List::Step(step, family)
        };
        let mut advance = Rule::new(family, TAG_KNOCK, Some(Target::Drop));
        advance.proto = Some(Proto::Tcp);
        advance.dport = Some((port, port));
        advance.syn = true;
        if step == 1 {
            advance.recent.push(Recent {
                op: RecentOp::Set,
                seconds: None,
                list: next,
            });
            rules.push(advance);
        } else {
            let prev = List::Step(step - 1, family);
            advance.recent = vec![
                Recent {
                    op: RecentOp::Rcheck,
                    seconds: Some(KNOCK_STEP_SECS),
                    list: prev,
                },
                Recent {
                    op: RecentOp::Set,
                    seconds: None,
                    list: next,
                },
                Recent {
                    op: RecentOp::Remove,
                    seconds: None,
                    list: prev,
                },
            ];
            rules.push(advance);
            let mut reset = Rule::new(family, TAG_KNOCK, None);
            reset.proto = Some(Proto::Tcp);
            reset.syn = true;
            reset.recent.push(Recent {
                op: RecentOp::Remove,
                seconds: None,
                list: prev,
            });
            rules.push(reset);
        }
    }
    rules
}
