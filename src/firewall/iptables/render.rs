//! Rendering tgknock's rules as iptables arguments and `iptables-restore` inputs.

use super::chain::Chain;
use super::limit::limit_args;
use crate::base::addr::Family;
use crate::firewall::rules::{List, RecentOp, Rule, Target};

pub(super) fn full_mask(family: Family) -> &'static str {
    match family {
        Family::V4 => "255.255.255.255",
        Family::V6 => "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    }
}

/// A knock list's name: prefixed with the chain, as `recent` lists are global.
pub(super) fn list_name(chain: &str, list: List) -> String {
    format!("{chain}_{}", list.name())
}

/// `--datestop` of a deadline: the last second the rule matches, in UTC (xt_time's
/// default), so it stops matching at `until`.
pub(crate) fn datestop(until: u64) -> String {
    let (y, mo, d, h, mi, s) = crate::base::duration::civil(until.saturating_sub(1));
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}")
}

/// The iptables arguments of a rule after `-A CHAIN`, exactly as `iptables -S` prints
/// them back.
pub(crate) fn args(chain: &str, rule: &Rule) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
    if let Some(src) = &rule.src {
        push(&["-s", &src.to_iptables()]);
    }
    if let Some(proto) = rule.proto {
        push(&["-p", proto.as_str(), "-m", proto.as_str()]);
        if let Some(p) = rule.port() {
            push(&["--dport", &p.dport()]);
        }
        if rule.syn {
            push(&["--tcp-flags", "FIN,SYN,RST,ACK", "SYN"]);
        }
    }
    if rule.established {
        push(&["-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED"]);
        if rule.reply {
            push(&["--ctdir", "REPLY"]);
        }
    }
    for r in &rule.recent {
        push(&["-m", "recent"]);
        push(&[match r.op {
            RecentOp::Rcheck => "--rcheck",
            RecentOp::Set => "--set",
            RecentOp::Remove => "--remove",
        }]);
        if let Some(s) = r.seconds {
            push(&["--seconds", &s.to_string()]);
        }
        push(&[
            "--name",
            &list_name(chain, r.list),
            "--mask",
            full_mask(rule.family),
            "--rsource",
        ]);
    }
    if let Some(l) = &rule.limit {
        let words = limit_args(chain, rule, l);
        push(&words.iter().map(String::as_str).collect::<Vec<_>>());
    }
    if let Some(u) = rule.until {
        push(&["-m", "time", "--datestop", &datestop(u)]);
    }
    push(&["-m", "comment", "--comment", &rule.tag]);
    match rule.target {
        Some(Target::Return) => push(&["-j", "RETURN"]),
        Some(Target::Drop) => push(&["-j", "DROP"]),
        None => {}
    }
    a
}

/// The matches (`-m NAME`) of a rule's [`args`], in order, without rendering its words
/// (reading 1,000 bans back compares each rule's matches).
pub(super) fn match_names(rule: &Rule) -> Vec<&'static str> {
    let mut m = Vec::new();
    if let Some(proto) = rule.proto {
        m.push(proto.as_str());
    }
    if rule.established {
        m.push("conntrack");
    }
    m.extend(rule.recent.iter().map(|_| "recent"));
    if rule.limit.is_some() {
        m.extend(["limit", "hashlimit"]);
    }
    if rule.until.is_some() {
        m.push("time");
    }
    m.push("comment");
    m
}

/// How the jump from INPUT must be repaired in the same transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct JumpFix {
    /// Existing `-A INPUT -j CHAIN` rules to delete.
    pub(crate) delete: usize,
    /// Insert one jump at the top.
    pub(crate) insert: bool,
}

impl JumpFix {
    /// Nothing to do when there is exactly one jump and it is the first rule of INPUT.
    pub(crate) fn from_listing(listing: &Chain) -> JumpFix {
        if listing.jumps == 1 && listing.jump_first {
            JumpFix {
                delete: 0,
                insert: false,
            }
        } else {
            JumpFix {
                delete: listing.jumps,
                insert: true,
            }
        }
    }
}

/// The `iptables-restore --noflush` input that replaces the chain's rules and fixes the
/// jump in one transaction (declaring the chain flushes it, atomically with the refill).
pub(crate) fn restore_input(chain: &str, rules: &[Rule], fix: JumpFix) -> String {
    let mut s = format!("*filter\n:{chain} - [0:0]\n");
    for r in rules {
        s.push_str(&format!("-A {chain} {}\n", args(chain, r).join(" ")));
    }
    for _ in 0..fix.delete {
        s.push_str(&format!("-D INPUT -j {chain}\n"));
    }
    if fix.insert {
        s.push_str(&format!("-I INPUT 1 -j {chain}\n"));
    }
    s.push_str("COMMIT\n");
    s
}

/// The rules that differ between a chain as listed and the rules it should hold: those
/// after the `keep` rules both begin with, `delete` listed ones (ending where both end the
/// same) give way to `insert` of the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Edit {
    pub(crate) keep: usize,
    pub(crate) delete: usize,
    pub(crate) insert: usize,
}

impl Edit {
    /// The edit from `before` to `rules`, when it touches few enough rules to be worth
    /// making in place (`None`: declare the chain afresh and refill it). A bounded change
    /// (an `/open`, a `/ban`) among 1,000 bans is then one or two rules, not 1,000.
    pub(crate) fn between(before: &Chain, rules: &[Rule]) -> Option<Edit> {
        if !before.exists {
            return None;
        }
        let same = |a: &Option<Rule>, b: &Rule| a.as_ref() == Some(b);
        let old = &before.rules;
        let keep = old
            .iter()
            .zip(rules)
            .take_while(|(a, b)| same(a, b))
            .count();
        let tail = old[keep..]
            .iter()
            .rev()
            .zip(rules[keep..].iter().rev())
            .take_while(|(a, b)| same(a, b))
            .count();
        let edit = Edit {
            keep,
            delete: old.len() - keep - tail,
            insert: rules.len() - keep - tail,
        };
        (2 * (edit.delete + edit.insert) < rules.len()).then_some(edit)
    }
}

/// [`restore_edit`] of the edit from a chain as listed (`before`) to `rules`.
#[cfg(test)]
pub(crate) fn restore_change(chain: &str, before: &Chain, rules: &[Rule], fix: JumpFix) -> String {
    restore_edit(chain, Edit::between(before, rules), rules, fix)
}

/// The `iptables-restore --noflush` input that changes a chain as listed into `rules` and
/// fixes the jump, in one transaction: deleting and inserting the few rules of `edit` (the
/// [`Edit::between`] them, found once per change), by position, or else (`None`)
/// replacing them all ([`restore_input`]).
pub(crate) fn restore_edit(
    chain: &str,
    edit: Option<Edit>,
    rules: &[Rule],
    fix: JumpFix,
) -> String {
    let Some(e) = edit else {
        return restore_input(chain, rules, fix);
    };
    let mut s = String::from("*filter\n");
    for _ in 0..e.delete {
        s.push_str(&format!("-D {chain} {}\n", e.keep + 1));
    }
    for (i, r) in rules[e.keep..e.keep + e.insert].iter().enumerate() {
        s.push_str(&format!(
            "-I {chain} {} {}\n",
            e.keep + 1 + i,
            args(chain, r).join(" ")
        ));
    }
    for _ in 0..fix.delete {
        s.push_str(&format!("-D INPUT -j {chain}\n"));
    }
    if fix.insert {
        s.push_str(&format!("-I INPUT 1 -j {chain}\n"));
    }
    s.push_str("COMMIT\n");
    s
}

/// The restore input that puts back rule lines exactly as `iptables -S` listed them.
pub(crate) fn restore_lines(chain: &str, lines: &[String]) -> String {
    let mut s = format!("*filter\n:{chain} - [0:0]\n");
    for l in lines {
        s.push_str(l);
        s.push('\n');
    }
    s.push_str("COMMIT\n");
    s
}

/// The restore input that removes the jumps and the chain.
pub(crate) fn teardown_input(chain: &str, listing: &Chain) -> Option<String> {
    if listing.jumps == 0 && !listing.exists {
        return None;
    }
    let mut s = String::from("*filter\n");
    for _ in 0..listing.jumps {
        s.push_str(&format!("-D INPUT -j {chain}\n"));
    }
    if listing.exists {
        s.push_str(&format!("-F {chain}\n-X {chain}\n"));
    }
    s.push_str("COMMIT\n");
    Some(s)
}
