//! What tgknock calls things in nftables: its table, the input chain's hook, the ban sets,
//! and each rule's key (its comment), which is how a rule is recognised when read back.

use crate::base::addr::{self, Family};
use crate::base::gate::Proto;
use crate::base::rate::Rate;
use crate::firewall::rules::{
    Limit, List, Recent, RecentOp, Rule, TAG_BAN, Target, V6_SOURCE_PREFIX,
};

/// The nftables table tgknock owns.
pub(crate) const TABLE: &str = "tgknock";

/// The input chain's hook, as it is declared and as `nft list` prints it back.
pub(super) const HOOK: &str = "type filter hook input priority filter - 10; policy accept;";

pub(super) fn digit(family: Family) -> &'static str {
    match family {
        Family::V4 => "4",
        Family::V6 => "6",
    }
}

/// The set that holds a family's bans.
pub(crate) fn ban_set(family: Family) -> String {
    format!("ban_{}", family.short())
}

/// The comment of the rule that matches a family's ban set. It is no rule's key: it stands
/// for the set's elements, in the place the bans have in the chain.
pub(super) fn ban_set_key(family: Family) -> String {
    format!("{} {TAG_BAN} @{} drop", digit(family), ban_set(family))
}

/// A canonical one-line description of a rule: equal rules have equal keys. It is the
/// rule's comment (at most 128 bytes), how a rule is recognised when read back.
pub(crate) fn key(r: &Rule) -> String {
    let mut k = format!("{} {}", digit(r.family), r.tag);
    if r.established {
        k.push_str(" ct=established");
    }
    if r.reply {
        k.push_str(" ct=reply");
    }
    if let Some(src) = &r.src {
        k.push_str(&format!(" src={}", src.to_iptables()));
    }
    match (r.proto, r.port()) {
        (_, Some(p)) => k.push_str(&format!(" {}={}", p.proto.as_str(), p.dport())),
        (Some(proto), None) => k.push_str(&format!(" {}", proto.as_str())),
        _ => {}
    }
    if r.syn {
        k.push_str(" syn");
    }
    for rc in &r.recent {
        let op = match rc.op {
            RecentOp::Rcheck => "rcheck",
            RecentOp::Set => "set",
            RecentOp::Remove => "remove",
        };
        match rc.seconds {
            Some(s) => k.push_str(&format!(" {op}:{}:{s}", rc.list.name())),
            None => k.push_str(&format!(" {op}:{}", rc.list.name())),
        }
    }
    if let Some(l) = &r.limit {
        k.push_str(&format!(" limit={}:{}", l.rate, l.burst));
        if r.family == Family::V6 {
            k.push_str(&format!(" by=/{V6_SOURCE_PREFIX}"));
        }
    }
    if let Some(u) = r.until {
        k.push_str(&format!(" until={u}"));
    }
    match r.target {
        Some(Target::Return) => k.push_str(" return"),
        Some(Target::Drop) => k.push_str(" drop"),
        None => {}
    }
    k
}

/// Reads a rule back from its key.
pub(crate) fn from_key(key: &str) -> Option<Rule> {
    // Split at ASCII white space (space, tab, line feed, form feed, carriage return; not
    // vertical tab), by bytes: a ban set's 1,000 elements are 1,000 keys. tgknock writes a
    // key's words with single spaces; a comment split elsewhere is another program's, and
    // whichever way it reads, its rule stays listed (see `Table::listing`).
    let mut words = key.split_ascii_whitespace();
    let family = match words.next()? {
        "4" => Family::V4,
        "6" => Family::V6,
        _ => return None,
    };
    let mut r = Rule::new(family, words.next()?, None);
    // An IPv6 rate limit counts a /64 as one source (a limit of an older key did not).
    let mut by_prefix = false;
    for w in words {
        match w {
            "ct=established" => r.established = true,
            "ct=reply" if r.established => r.reply = true,
            "syn" => r.syn = true,
            "return" => r.target = Some(Target::Return),
            "drop" => r.target = Some(Target::Drop),
            "tcp" => r.proto = Some(Proto::Tcp),
            "udp" => r.proto = Some(Proto::Udp),
            _ => {
                let at = w.bytes().position(|b| b == b'=' || b == b':')?;
                let (name, value) = (&w[..at], &w[at + 1..]);
                match name {
                    "src" => r.src = Some(addr::parse_listed(value)?),
                    "until" => r.until = Some(value.parse().ok()?),
                    "by" if family == Family::V6 && value == format!("/{V6_SOURCE_PREFIX}") => {
                        by_prefix = true
                    }
                    "limit" => {
                        let (rate, burst) = value.rsplit_once(':')?;
                        r.limit = Some(Limit {
                            rate: Rate::parse(rate).ok()?,
                            burst: burst.parse().ok()?,
                            shares: 1,
                        });
                    }
                    "tcp" | "udp" => {
                        r.proto = Some(if name == "tcp" {
                            Proto::Tcp
                        } else {
                            Proto::Udp
                        });
                        let (a, b) = value.split_once(':').unwrap_or((value, value));
                        r.dport = Some((a.parse().ok()?, b.parse().ok()?));
                    }
                    "rcheck" | "set" | "remove" => {
                        let (list, seconds) = match value.split_once(':') {
                            Some((l, s)) => (l, Some(s.parse().ok()?)),
                            None => (value, None),
                        };
                        r.recent.push(Recent {
                            op: match name {
                                "rcheck" => RecentOp::Rcheck,
                                "set" => RecentOp::Set,
                                _ => RecentOp::Remove,
                            },
                            seconds,
                            list: List::parse(list)?,
                        });
                    }
                    _ => return None,
                }
            }
        }
    }
    if by_prefix != (r.family == Family::V6 && r.limit.is_some()) {
        return None;
    }
    Some(r)
}
