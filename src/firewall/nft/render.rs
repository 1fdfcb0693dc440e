//! Rendering tgknock's rules as nft statements and the `nft -f -` script of a change.

use super::key::{HOOK, TABLE, ban_set, ban_set_key, key};
use super::table::Table;
use super::verify::Touched;
use crate::base::addr::{Cidr, Family};
use crate::base::rate::Per;
use crate::firewall::rules::{
    KNOCK_STEP_SECS, Limit, List, METER_ENTRIES, Policy, RecentOp, Rule, TAG_LIMIT_PREFIX, Target,
    V6_SOURCE_PREFIX, limit_tag,
};

/// A ban set's element this close to its deadline (or past it) may be gone from the
/// kernel by the time a change is sent: the set is then rewritten whole, never edited.
pub(super) const EXPIRING_SECS: u64 = 2;

/// The nft type of a family's addresses.
pub(super) fn addr_type(family: Family) -> &'static str {
    match family {
        Family::V4 => "ipv4_addr",
        Family::V6 => "ipv6_addr",
    }
}

/// The rule that drops the sources in a family's ban set.
pub(super) fn ban_set_statement(family: Family) -> String {
    let (nfproto, saddr) = match family {
        Family::V4 => ("meta nfproto ipv4", "ip saddr"),
        Family::V6 => ("meta nfproto ipv6", "ip6 saddr"),
    };
    format!(
        "{nfproto} {saddr} @{} drop comment \"{}\"",
        ban_set(family),
        ban_set_key(family)
    )
}

/// A time as nft reads it: `1d2h3m4s` (nft refuses a bare count of seconds of nine digits
/// or more, about three years).
pub(super) fn nft_time(secs: u64) -> String {
    let parts = [
        (secs / 86_400, "d"),
        (secs / 3_600 % 24, "h"),
        (secs / 60 % 60, "m"),
        (secs % 60, "s"),
    ];
    let t: String = parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect();
    if t.is_empty() { "0s".into() } else { t }
}

/// A ban as an element of its family's set: the source; when the ban has a deadline, the
/// timeout that ends it there in the kernel, counted from `now` (when it is written); and
/// its key as its comment, so it is read back exactly.
pub(crate) fn element(r: &Rule, now: u64) -> String {
    let src = r.src.map(|c| c.to_iptables()).unwrap_or_default();
    let timeout = match r.until {
        Some(u) => format!(" timeout {}", nft_time(u.saturating_sub(now).max(1))),
        None => String::new(),
    };
    format!("{src}{timeout} comment \"{}\"", key(r))
}

/// The dynamic set that keeps the per-source limits of a gate (by its limit tag).
pub(super) fn limit_set(tag: &str, family: Family) -> String {
    let gate = tag.strip_prefix(TAG_LIMIT_PREFIX).unwrap_or(tag);
    format!("lim_{gate}_{}", family.short())
}

pub(super) fn per_word(per: Per) -> &'static str {
    match per {
        Per::Second => "second",
        Per::Minute => "minute",
        Per::Hour => "hour",
        Per::Day => "day",
    }
}

/// The mask that keeps an IPv6 address's first [`V6_SOURCE_PREFIX`] bits, as nft prints
/// it: `ffff:ffff:ffff:ffff::`.
pub(super) fn v6_prefix_mask() -> std::net::Ipv6Addr {
    std::net::Ipv6Addr::from(u128::MAX << (128 - u32::from(V6_SOURCE_PREFIX)))
}

/// The nft statement text of one rule (its key is its comment).
pub(crate) fn statement(r: &Rule) -> String {
    let (nfproto, saddr) = match r.family {
        Family::V4 => ("meta nfproto ipv4", "ip saddr"),
        Family::V6 => ("meta nfproto ipv6", "ip6 saddr"),
    };
    let mut p: Vec<String> = vec![nfproto.into()];
    if r.reply {
        p.push("ct direction reply".into());
    }
    if r.established {
        p.push("ct state established,related".into());
    }
    if let Some(src) = &r.src {
        p.push(format!("{saddr} {}", src.to_iptables()));
    }
    match (r.proto, r.port()) {
        (_, Some(port)) => p.push(if port.first == port.last {
            format!("{} dport {}", port.proto.as_str(), port.first)
        } else {
            format!("{} dport {}-{}", port.proto.as_str(), port.first, port.last)
        }),
        (Some(proto), None) => p.push(format!("meta l4proto {}", proto.as_str())),
        _ => {}
    }
    if r.syn {
        p.push("tcp flags & (fin | syn | rst | ack) == syn".into());
    }
    let mut tested: Vec<List> = Vec::new();
    for rc in &r.recent {
        let set = rc.list.name();
        match rc.op {
            RecentOp::Rcheck => {
                p.push(format!("{saddr} @{set}"));
                tested.push(rc.list);
            }
            RecentOp::Set => p.push(format!("update @{set} {{ {saddr} }}")),
            RecentOp::Remove => {
                if !tested.contains(&rc.list) {
                    p.push(format!("{saddr} @{set}"));
                }
                p.push(format!("delete @{set} {{ {saddr} }}"));
            }
        }
    }
    if let Some(l) = &r.limit {
        // The meter's key: the address, or an IPv6 source's /64.
        let source = match r.family {
            Family::V4 => saddr.to_string(),
            Family::V6 => format!("{saddr} & {}", v6_prefix_mask()),
        };
        p.push(format!(
            "update @{} {{ {source} limit rate over {}/{} burst {} packets }}",
            limit_set(&r.tag, r.family),
            l.rate.count,
            per_word(l.rate.per),
            l.burst
        ));
    }
    if let Some(u) = r.until {
        p.push(format!("meta time < {u}"));
    }
    match r.target {
        Some(Target::Return) => p.push("return".into()),
        Some(Target::Drop) => p.push("drop".into()),
        None => {}
    }
    p.push(format!("comment \"{}\"", key(r)));
    p.join(" ")
}

/// The `nft -f -` script that replaces the table's rules in one transaction, written at
/// `now`. `before` is the table as listed before the change (empty: there is none);
/// `None` starts the table afresh. The dynamic sets of the knock fallback are declared
/// (kept if present), so a change of the rules does not forget a knock in progress. A ban
/// set's elements are rewritten only when they differ from the bans `before` holds, so
/// the timeouts of bans already in place run on.
pub(crate) fn script(
    policy: &Policy,
    rules_of: &[(Family, Vec<Rule>)],
    now: u64,
    before: Option<&Table>,
) -> String {
    render(policy, rules_of, now, before).0
}

/// [`script`], and what it changes besides the input chain (to read back only that).
pub(super) fn render(
    policy: &Policy,
    rules_of: &[(Family, Vec<Rule>)],
    now: u64,
    before: Option<&Table>,
) -> (String, Touched) {
    let t = TABLE;
    let mut s = format!("add table inet {t}\n");
    let mut touched = Touched {
        whole: !before.is_some_and(|b| b.hooked && !b.narrow),
        ..Touched::default()
    };
    if before.is_none() {
        s.push_str(&format!("delete table inet {t}\nadd table inet {t}\n"));
    }
    // Declaring the base chain again is the dearest line of a script (the kernel
    // registers its hook anew, some 10 ms): only when it is missing or hooked otherwise.
    if !before.is_some_and(|b| b.hooked) {
        s.push_str(&format!("add chain inet {t} input {{ {HOOK} }}\n"));
    }
    declare_sets(&mut s, policy, rules_of);
    let chain = chain_statements(rules_of);
    let keep_chain = before.is_some_and(|b| holds_chain(b, &chain));
    if !keep_chain {
        s.push_str(&format!("flush chain inet {t} input\n"));
    }
    for (fam, rules) in rules_of {
        ban_elements(&mut s, *fam, rules, before, now, &mut touched);
    }
    if !keep_chain {
        for text in &chain {
            line(&mut s, &["add rule inet ", t, " input ", text]);
        }
    }
    (s, touched)
}

/// The sets a script declares (kept if present): the knock fallback's dynamic sets, so a
/// change of the rules does not forget a knock in progress; the rate limits' meters; the
/// ban sets of the families that have bans.
fn declare_sets(s: &mut String, policy: &Policy, rules_of: &[(Family, Vec<Rule>)]) {
    let t = TABLE;
    if let Some(k) = &policy.knock {
        for (fam, _) in rules_of {
            let ty = addr_type(*fam);
            for i in 1..k.ports.len() {
                s.push_str(&format!(
                    "add set inet {t} {} {{ type {ty}; flags dynamic,timeout; timeout {}s; }}\n",
                    List::Step(i, *fam).name(),
                    KNOCK_STEP_SECS
                ));
            }
            s.push_str(&format!(
                "add set inet {t} {} {{ type {ty}; flags dynamic,timeout; timeout {}s; }}\n",
                List::Open(*fam).name(),
                k.open_for
            ));
        }
    }
    // A rate limit's meter holds METER_ENTRIES sources; when it is full, a source it
    // cannot add is not matched (the limit lapses for new sources until some time out),
    // never dropped.
    for (name, rate) in &policy.limits {
        let tag = limit_tag(name);
        for (fam, _) in rules_of {
            s.push_str(&format!(
                "add set inet {t} {} {{ type {}; size {METER_ENTRIES}; flags dynamic,timeout; timeout {}s; }}\n",
                limit_set(&tag, *fam),
                addr_type(*fam),
                Limit::of(*rate).refill_secs()
            ));
        }
    }
    for (fam, rules) in rules_of {
        if rules.iter().any(Rule::is_ban) {
            s.push_str(&format!(
                "add set inet {t} {} {{ type {}; flags interval{}; }}\n",
                ban_set(*fam),
                addr_type(*fam),
                if policy.deadlines { ",timeout" } else { "" }
            ));
        }
    }
}

/// The chain's rules as they should be: the statements in order, a family's bans standing
/// as the one rule matching its set.
fn chain_statements(rules_of: &[(Family, Vec<Rule>)]) -> Vec<String> {
    rules_of
        .iter()
        .flat_map(|(fam, rules)| {
            let mut set_matched = false;
            rules.iter().filter_map(move |r| {
                if !r.is_ban() {
                    Some(statement(r))
                } else if std::mem::replace(&mut set_matched, true) {
                    None
                } else {
                    Some(ban_set_statement(*fam))
                }
            })
        })
        .collect()
}

/// Whether the table holds exactly the `chain` statements (by their comments, which are
/// their keys), hooked as declared and with nothing of another program's: the chain is
/// then left alone, and a ban or an unban among 1,000 changes one element, not the chain
/// (flushing it costs the kernel a commit of every rule).
fn holds_chain(b: &Table, chain: &[String]) -> bool {
    b.hooked
        && !b.suspect
        && b.chain_comments().is_some_and(|listed| {
            listed.len() == chain.len()
                && listed
                    .iter()
                    .zip(chain)
                    .all(|(l, c)| l.is_some_and(|l| c.ends_with(&format!("comment \"{l}\""))))
        })
}

/// The lines that make a family's ban set hold its `rules`' bans: its elements are
/// rewritten only when they differ from the bans `before` holds, so the timeouts of bans
/// already in place run on.
fn ban_elements(
    s: &mut String,
    fam: Family,
    rules: &[Rule],
    before: Option<&Table>,
    now: u64,
    touched: &mut Touched,
) {
    let t = TABLE;
    let set = ban_set(fam);
    let bans: Vec<Rule> = rules.iter().filter(|r| r.is_ban()).cloned().collect();
    let listed = before.and_then(|b| b.ban_set(fam));
    if bans.is_empty() {
        // The rule that matched it went with the flush.
        if listed.is_some() {
            line(s, &["delete set inet ", t, " ", &set]);
            touched.whole = true;
        }
        return;
    }
    let mut add: Vec<&Rule> = bans.iter().collect();
    match listed {
        Some(l) if l.iter().map(|(_, r)| r.as_ref()).eq(bans.iter().map(Some)) => return,
        // Every element is one tgknock wrote, and none is at the end of its timeout
        // (deleting an element the kernel has just let go fails the transaction):
        // delete the bans that went (or whose deadline changed), add the ones that
        // came; the others keep their timeouts.
        Some(l)
            if l.iter().all(|(_, r)| {
                r.as_ref()
                    .is_some_and(|r| r.until.is_none_or(|u| u > now + EXPIRING_SECS))
            }) =>
        {
            // A ban is its source and deadline (the rest is the same for every ban, and an
            // element is read back as a ban only when it is). The bans and the elements
            // are both in that order (see `desired` and `read_ban_set`): each is found by
            // halving, without making the 2,000 keys of 1,000 bans.
            let id = |r: &Rule| Some((r.src, r.until));
            let gone: Vec<Cidr> = l
                .iter()
                .filter_map(|(_, r)| r.as_ref())
                .filter(|r| bans.binary_search_by_key(&id(r), id).is_err())
                .filter_map(|r| r.src)
                .collect();
            if !gone.is_empty() {
                let texts: Vec<String> = gone.iter().map(Cidr::to_iptables).collect();
                let texts = texts.join(", ");
                line(
                    s,
                    &["delete element inet ", t, " ", &set, " { ", &texts, " }"],
                );
            }
            touched.deleted.extend(gone);
            add.retain(|r| {
                l.binary_search_by_key(&id(r), |(_, e)| e.as_ref().and_then(id))
                    .is_err()
            });
        }
        Some(_) => {
            line(s, &["flush set inet ", t, " ", &set]);
            touched.whole = true;
        }
        // The set is new.
        None => touched.whole = true,
    }
    if add.is_empty() {
        return;
    }
    touched.added.extend(add.iter().filter_map(|r| r.src));
    line(s, &["add element inet ", t, " ", &set, " {"]);
    for (i, r) in add.iter().enumerate() {
        let sep = if i + 1 < add.len() { "," } else { "" };
        s.push_str(&format!("\t{}{sep}\n", element(r, now)));
    }
    s.push_str("}\n");
}

/// Adds the line of `words` to `s` (pushed one by one: the x86_64 build has no bytes to
/// spare for the tables of a `format!`).
pub(super) fn line(s: &mut String, words: &[&str]) {
    for w in words {
        s.push_str(w);
    }
    s.push('\n');
}
