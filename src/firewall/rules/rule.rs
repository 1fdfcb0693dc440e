//! A rule as tgknock means it, whatever the backend: its matches, its tag, its target; the
//! knock lists, the rate limits, and the tags that say which part of the policy a rule is.

use crate::base::addr::{Cidr, Family};
use crate::base::gate::{Gate, GateName, PortRange, Proto};
use crate::base::rate::Rate;

pub(crate) const TAG_ESTABLISHED: &str = "tgknock:established";
/// The rule that lets through the answers to connections the board itself opened.
pub(crate) const TAG_REPLIES: &str = "tgknock:replies";
pub(crate) const TAG_ALWAYS_ALLOW: &str = "tgknock:always-allow";
pub(crate) const TAG_KNOCK: &str = "tgknock:knock";
pub(crate) const TAG_BAN: &str = "tgknock:ban";
pub(super) const TAG_GATE_PREFIX: &str = "tgknock-gate:";
/// A gate's per-source rate limit: its own tag, so the gate's view ignores it.
pub(crate) const TAG_LIMIT_PREFIX: &str = "tgknock-limit:";

/// Seconds allowed between two knocks of the sequence.
pub(crate) const KNOCK_STEP_SECS: u64 = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    Return,
    Drop,
}

/// A knock list (an iptables `recent` list, or an nft dynamic set) of one family: the
/// sources at a step of the sequence, or those the knock opened the gate to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum List {
    /// Sources that knocked the first `n` ports.
    Step(usize, Family),
    Open(Family),
}

impl List {
    pub(crate) fn family(self) -> Family {
        match self {
            List::Step(_, f) | List::Open(f) => f,
        }
    }

    /// `k1_v4`, `open_v6`: the list's own name (a backend may prefix it).
    pub(crate) fn name(self) -> String {
        match self {
            List::Step(n, f) => format!("k{n}_{}", f.short()),
            List::Open(f) => format!("open_{}", f.short()),
        }
    }

    /// Reads back a name made by [`List::name`].
    pub(crate) fn parse(name: &str) -> Option<List> {
        let (what, fam) = name.rsplit_once('_')?;
        let family = match fam {
            "v4" => Family::V4,
            "v6" => Family::V6,
            _ => return None,
        };
        match what {
            "open" => Some(List::Open(family)),
            _ => {
                let n: usize = what.strip_prefix('k')?.parse().ok()?;
                (n > 0 && what == format!("k{n}")).then_some(List::Step(n, family))
            }
        }
    }
}

/// What a knock-list match does with the source address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecentOp {
    /// Matches if the source is on the list (seen within `seconds`).
    Rcheck,
    /// Puts the source on the list; always matches.
    Set,
    /// Matches if the source is on the list, and takes it off.
    Remove,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Recent {
    pub(crate) op: RecentOp,
    pub(crate) seconds: Option<u64>,
    pub(crate) list: List,
}

/// How many sources a gate's rate limit remembers, per family: the size of the kernel's
/// table of sources (hashlimit's `--hashlimit-htable-max`, the nft meter's `size`). At
/// about 120 bytes an entry (xt_hashlimit's slab object on 64-bit; nft's elements take
/// about 190) a full table costs 8-12 MB, which a 512 MB board can spare under a flood.
/// A flood of spoofed sources never makes the full table drop anyone: the nft meter
/// stops adding sources (the limit lapses for new ones while it is full), and the
/// iptables backend never lets the table fill (see `iptables::limit::Guard`).
pub(crate) const METER_ENTRIES: u32 = 65_536;

/// An IPv6 source is its /64: one host holds a whole /64 and can rotate through it.
pub(crate) const V6_SOURCE_PREFIX: u8 = 64;

/// A per-source limit in the kernel: sources above `rate` (canonical) are matched once
/// their `burst` is spent. The burst is the configured count, so `6/min` lets six
/// connections through at once, then one every ten seconds. A source is an IPv4 address
/// or an IPv6 /64 ([`V6_SOURCE_PREFIX`]).
///
/// `shares` is how many rules of the family share the limit's table (one per port entry
/// of the gate): the iptables guard splits its budget over them (see `iptables::limit::Guard`).
/// It is no part of the limit itself and is left out of comparisons (nft keeps no guard).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limit {
    pub(crate) rate: Rate,
    pub(crate) burst: u32,
    pub(crate) shares: u32,
}

impl PartialEq for Limit {
    fn eq(&self, other: &Limit) -> bool {
        self.rate == other.rate && self.burst == other.burst
    }
}

impl Eq for Limit {}

impl Limit {
    pub(crate) fn of(rate: Rate) -> Limit {
        Limit {
            rate: rate.canonical(),
            burst: rate.count,
            shares: 1,
        }
    }

    /// How long a spent burst takes to fill up again: how long the kernel must remember
    /// an idle source (hashlimit's `--hashlimit-htable-expire`, the nft set's timeout);
    /// forgetting it sooner would hand it a fresh burst.
    pub(crate) fn refill_secs(&self) -> u64 {
        (u64::from(self.burst) * self.rate.per.secs()).div_ceil(u64::from(self.rate.count))
    }
}

/// One rule of tgknock's chain, in one family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rule {
    pub(crate) family: Family,
    pub(crate) established: bool,
    /// With `established`: only packets in the reply direction of their connection, the
    /// answers to a connection opened from this side (iptables `--ctdir REPLY`, nft
    /// `ct direction reply`).
    pub(crate) reply: bool,
    pub(crate) src: Option<Cidr>,
    pub(crate) proto: Option<Proto>,
    /// Destination port range (needs `proto`).
    pub(crate) dport: Option<(u16, u16)>,
    /// Match only TCP connection openings (SYN without ACK): a closed TCP gate drops new
    /// connections and nothing else, so sessions that predate conntrack survive too.
    pub(crate) syn: bool,
    pub(crate) recent: Vec<Recent>,
    /// A per-source rate limit the rule matches above (hashlimit, an nft meter).
    pub(crate) limit: Option<Limit>,
    /// The kernel's own deadline: the rule matches only before this Unix second
    /// (iptables `-m time --datestop`, nft `meta time <`).
    pub(crate) until: Option<u64>,
    pub(crate) tag: String,
    /// `None`: the rule only acts (a knock sequence reset) and evaluation goes on.
    pub(crate) target: Option<Target>,
}

impl Rule {
    pub(crate) fn new(family: Family, tag: &str, target: Option<Target>) -> Rule {
        Rule {
            family,
            established: false,
            reply: false,
            src: None,
            proto: None,
            dport: None,
            syn: false,
            recent: Vec::new(),
            limit: None,
            until: None,
            tag: tag.to_string(),
            target,
        }
    }

    /// The ban of `addr` (in its family), bounded by the kernel's deadline `until`.
    pub(crate) fn ban(addr: Cidr, until: Option<u64>) -> Rule {
        let mut r = Rule::new(addr.family(), TAG_BAN, Some(Target::Drop));
        r.src = Some(addr);
        r.until = until;
        r
    }

    /// Whether this is a ban (as [`Rule::ban`] makes them).
    pub(crate) fn is_ban(&self) -> bool {
        self.tag == TAG_BAN
    }

    pub(super) fn on(mut self, p: &PortRange) -> Rule {
        self.proto = Some(p.proto);
        self.dport = Some((p.first, p.last));
        self
    }

    pub(crate) fn port(&self) -> Option<PortRange> {
        match (self.proto, self.dport) {
            (Some(proto), Some((first, last))) => Some(PortRange { proto, first, last }),
            _ => None,
        }
    }
}

pub(super) fn gate_tag(gate: &Gate) -> String {
    format!("{TAG_GATE_PREFIX}{}", gate.name)
}

pub(crate) fn limit_tag(gate: &GateName) -> String {
    format!("{TAG_LIMIT_PREFIX}{gate}")
}
