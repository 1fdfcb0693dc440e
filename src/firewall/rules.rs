//! The rules tgknock wants, whatever the backend: computed from the policy, the state and
//! the time, and the views of a listing read back from the kernel. Pure: no processes, no
//! clock. Each backend renders a [`Rule`] and parses it back in its own file, and names the
//! knock lists its own way ([`List`]).

use crate::base::addr::{Cidr, Family};
use crate::base::gate::{Gate, GateName, Knock, PortRange, Proto};
use crate::base::rate::Rate;
use crate::store::state::State;

pub(crate) const TAG_ESTABLISHED: &str = "tgknock:established";
/// The rule that lets through the answers to connections the board itself opened.
pub(crate) const TAG_REPLIES: &str = "tgknock:replies";
pub(crate) const TAG_ALWAYS_ALLOW: &str = "tgknock:always-allow";
pub(crate) const TAG_KNOCK: &str = "tgknock:knock";
pub(crate) const TAG_BAN: &str = "tgknock:ban";
const TAG_GATE_PREFIX: &str = "tgknock-gate:";
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
/// iptables backend never lets the table fill (see `iptables::Guard`).
pub(crate) const METER_ENTRIES: u32 = 65_536;

/// An IPv6 source is its /64: one host holds a whole /64 and can rotate through it.
pub(crate) const V6_SOURCE_PREFIX: u8 = 64;

/// A per-source limit in the kernel: sources above `rate` (canonical) are matched once
/// their `burst` is spent. The burst is the configured count, so `6/min` lets six
/// connections through at once, then one every ten seconds. A source is an IPv4 address
/// or an IPv6 /64 ([`V6_SOURCE_PREFIX`]).
///
/// `shares` is how many rules of the family share the limit's table (one per port entry
/// of the gate): the iptables guard splits its budget over them (see `iptables::Guard`).
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

    fn on(mut self, p: &PortRange) -> Rule {
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

fn gate_tag(gate: &Gate) -> String {
    format!("{TAG_GATE_PREFIX}{}", gate.name)
}

pub(crate) fn limit_tag(gate: &GateName) -> String {
    format!("{TAG_LIMIT_PREFIX}{gate}")
}

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

/// One way through a gate as the kernel holds it: from a source (`None`: everyone),
/// until the kernel's deadline (`None`: none in the kernel).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Pass {
    pub(crate) from: Option<Cidr>,
    pub(crate) until: Option<u64>,
}

/// What one gate looks like in one family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum GateView {
    Closed,
    /// No rule at all: open to everyone, with no deadline in the kernel.
    OpenToAll,
    /// Open through these passes only (sorted), before the gate's DROP.
    Open(Vec<Pass>),
    /// The chain holds something tgknock would not have written.
    Inconsistent(String),
    /// The chain or its jump is missing: nothing is enforced.
    NotInstalled,
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
fn knock_rules(policy: &Policy, k: &Knock, family: Family) -> Vec<Rule> {
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

/// How the kernel reaches tgknock's rules in one family, as a backend reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) enum Reach {
    /// Nothing of tgknock's is there.
    #[default]
    Gone,
    /// tgknock's rules are not all there, or the kernel does not reach them: what is
    /// wrong, in a few words (a drift message).
    Unreached(String),
    /// Reached, but otherwise than tgknock writes it (twice, not first, hooked
    /// otherwise): how, in a few words.
    Otherwise(String),
    /// Reached as tgknock writes it.
    AsWritten,
}

/// What a backend reads back of tgknock's rules in one family.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Listing {
    /// How the kernel reaches the rules.
    pub(crate) reach: Reach,
    /// The rules as the tool printed them.
    pub(crate) lines: Vec<String>,
    /// Those lines parsed (`None`: a rule tgknock does not recognise).
    pub(crate) rules: Vec<Option<Rule>>,
}

impl Listing {
    /// Whether the rules are in place and reached (however).
    pub(crate) fn installed(&self) -> bool {
        matches!(self.reach, Reach::Otherwise(_) | Reach::AsWritten)
    }

    /// Whether the rules are exactly `rules`, reached as tgknock writes it.
    pub(crate) fn matches(&self, rules: &[Rule]) -> bool {
        self.reach == Reach::AsWritten
            && self.rules.len() == rules.len()
            && self
                .rules
                .iter()
                .zip(rules)
                .all(|(a, b)| a.as_ref() == Some(b))
    }

    /// The listed rules tgknock did not write (or that were changed since), as listed.
    pub(crate) fn foreign(&self) -> Vec<&str> {
        self.lines
            .iter()
            .zip(&self.rules)
            .filter(|(_, r)| r.is_none())
            .map(|(l, _)| l.as_str())
            .collect()
    }

    /// In a few words, how the rules listed differ from `want` (shown by `show`): the rules
    /// tgknock did not write, named, or else the first rule out of place.
    pub(crate) fn differences(&self, want: &[Rule], show: impl Fn(&Rule) -> String) -> String {
        let foreign = self.foreign();
        if let Some(first) = foreign.first() {
            let shown: Vec<String> = foreign.iter().take(3).map(|l| format!("`{l}`")).collect();
            let more = match foreign.len() {
                1..=3 => String::new(),
                n => format!(" and {} more", n - 3),
            };
            return if foreign.len() == 1 {
                format!("a rule tgknock did not write: `{first}`")
            } else {
                format!(
                    "{} rules tgknock did not write: {}{more}",
                    foreign.len(),
                    shown.join(", ")
                )
            };
        }
        let at = self
            .rules
            .iter()
            .zip(want)
            .position(|(a, b)| a.as_ref() != Some(b))
            .unwrap_or(self.rules.len().min(want.len()));
        let counts = format!("{} rules where {} belong", self.rules.len(), want.len());
        match (self.lines.get(at), want.get(at)) {
            (Some(line), Some(w)) => format!(
                "rule {} is `{line}` where `{}` belongs ({counts})",
                at + 1,
                show(w)
            ),
            (Some(line), None) => format!("an extra rule `{line}` ({counts})"),
            (None, Some(w)) => format!("`{}` is missing ({counts})", show(w)),
            (None, None) => format!("its rules were changed ({counts})"),
        }
    }

    /// Whether the knock fallback's rules are in the chain.
    pub(crate) fn knock_armed(&self) -> bool {
        self.installed() && self.rules.iter().flatten().any(|r| r.tag == TAG_KNOCK)
    }

    /// What the kernel enforces for `gate`, read from the rules.
    pub(crate) fn view(&self, gate: &Gate) -> GateView {
        if !self.installed() {
            return GateView::NotInstalled;
        }
        if self.rules.iter().any(Option::is_none) {
            return GateView::Inconsistent(format!(
                "the chain holds rules tgknock did not write: {}",
                self.lines.join("; ")
            ));
        }
        let tag = gate_tag(gate);
        let mine: Vec<&Rule> = self
            .rules
            .iter()
            .flatten()
            .filter(|r| r.tag == tag)
            .collect();
        let drops: Vec<PortRange> = mine
            .iter()
            .filter(|r| r.target == Some(Target::Drop) && r.src.is_none())
            .filter_map(|r| r.port())
            .collect();
        if mine.is_empty() {
            return GateView::OpenToAll;
        }
        if drops.len() != gate.ports.len() || !gate.ports.iter().all(|p| drops.contains(p)) {
            return GateView::Inconsistent(format!(
                "{} has DROP rules for {} of its {} port sets",
                gate.name,
                drops.len(),
                gate.ports.len()
            ));
        }
        let mut passes: Vec<Pass> = mine
            .iter()
            .filter(|r| r.target == Some(Target::Return))
            .map(|r| Pass {
                from: r.src,
                until: r.until,
            })
            .collect();
        passes.sort();
        passes.dedup();
        for pass in &passes {
            let ports = mine
                .iter()
                .filter(|r| {
                    r.target == Some(Target::Return) && r.src == pass.from && r.until == pass.until
                })
                .count();
            if ports != gate.ports.len() {
                return GateView::Inconsistent(format!(
                    "{} is open to {} on some of its ports only",
                    gate.name,
                    pass.from.map_or("everyone".to_string(), |c| c.to_string())
                ));
            }
        }
        if passes.is_empty() {
            GateView::Closed
        } else {
            GateView::Open(passes)
        }
    }

    /// The bans the kernel holds: (source, kernel deadline), sorted.
    pub(crate) fn bans(&self) -> Vec<(Cidr, Option<u64>)> {
        let mut bans: Vec<(Cidr, Option<u64>)> = self
            .rules
            .iter()
            .flatten()
            .filter(|r| r.tag == TAG_BAN && r.target == Some(Target::Drop))
            .filter_map(|r| Some((r.src?, r.until)))
            .collect();
        bans.sort();
        bans
    }

    /// The rate limit the kernel holds for `gate`, when every port of it has one.
    pub(crate) fn limit(&self, gate: &Gate) -> Option<Limit> {
        let tag = limit_tag(&gate.name);
        let limits: Vec<(PortRange, Limit)> = self
            .rules
            .iter()
            .flatten()
            .filter(|r| r.tag == tag)
            .filter_map(|r| Some((r.port()?, r.limit?)))
            .collect();
        let first = limits.first()?.1;
        let whole = gate
            .ports
            .iter()
            .all(|p| limits.iter().any(|(q, l)| q == p && *l == first));
        whole.then_some(first)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::base::gate::parse_gates;
    use crate::store::state::{Actor, Opening};

    pub(crate) fn gates() -> Vec<Gate> {
        parse_gates("ssh=22/tcp web=80/tcp,443/tcp mosh=60000:61000/udp").unwrap()
    }

    pub(crate) fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    pub(crate) fn policy(always: &[&str], knock: Option<Knock>) -> Policy {
        Policy {
            gates: gates(),
            always_allow: always.iter().map(|c| cidr(c)).collect(),
            knock,
            limits: Vec::new(),
            deadlines: true,
        }
    }

    pub(crate) fn knock() -> Knock {
        Knock {
            ports: vec![7101, 7102, 7103],
            open_for: 30,
            gate: GateName::new("ssh").unwrap(),
        }
    }

    pub(crate) fn state(openings: &[(&str, Option<&str>, Option<u64>)]) -> State {
        let mut s = State::default();
        for (g, from, until) in openings {
            s.open(
                &GateName::new(g).unwrap(),
                Opening {
                    from: from.map(cidr),
                    until: *until,
                    by: Actor::Console,
                },
            )
            .unwrap();
        }
        s
    }

    #[test]
    fn a_ban_comes_before_the_established_rule_and_after_the_replies_and_the_always_allowed() {
        // A ban drops every packet of its source, its established connections too; an
        // always-allowed source returns before any ban could match it, and so do the
        // answers to the board's own connections (its long poll, its DNS).
        let p = policy(&["10.0.0.0/8", "fd00::/8"], None);
        let mut s = state(&[]);
        for (addr, until) in [("198.51.100.9", Some(500)), ("2001:db8::/48", None)] {
            s.ban(crate::store::state::Ban {
                addr: cidr(addr),
                until,
                by: Actor::Console,
            })
            .unwrap();
        }
        for fam in Family::BOTH {
            let rules = desired(&p, &s, 100, fam);
            let at = |what: &dyn Fn(&Rule) -> bool| rules.iter().position(what).unwrap();
            let allow = at(&|r| r.tag == TAG_ALWAYS_ALLOW);
            let ban = at(&|r| r.is_ban());
            let replies = at(&|r| r.established && r.reply);
            let est = at(&|r| r.established && !r.reply);
            assert!(
                allow < replies && replies < ban && ban < est,
                "{fam}: {rules:#?}"
            );
            assert_eq!(rules[replies].tag, TAG_REPLIES);
            assert_eq!(rules[replies].target, Some(Target::Return));
            assert!(rules[replies].src.is_none() && rules[replies].port().is_none());
            assert_eq!(rules[ban].src.map(|c| c.family()), Some(fam));
            assert!(!rules[ban].syn && rules[ban].port().is_none());
        }
    }

    #[test]
    fn expired_openings_are_closed() {
        let s = state(&[("ssh", None, Some(100))]);
        assert_eq!(
            expected_view(&gates()[0], &s, 99, Family::V4, false),
            GateView::OpenToAll
        );
        assert_eq!(
            expected_view(&gates()[0], &s, 99, Family::V4, true),
            GateView::Open(vec![Pass {
                from: None,
                until: Some(100)
            }])
        );
        assert_eq!(
            expected_view(&gates()[0], &s, 100, Family::V4, true),
            GateView::Closed
        );
        let r = desired(&policy(&[], None), &s, 100, Family::V4);
        assert!(
            r.iter()
                .any(|r| r.tag == "tgknock-gate:ssh" && r.target == Some(Target::Drop))
        );
    }

    #[test]
    fn open_to_one_source_keeps_the_other_family_closed() {
        let s = state(&[("web", Some("203.0.113.7"), Some(100))]);
        let web = &gates()[1];
        assert_eq!(
            expected_view(web, &s, 50, Family::V4, true),
            GateView::Open(vec![Pass {
                from: Some(cidr("203.0.113.7")),
                until: Some(100)
            }])
        );
        assert_eq!(
            expected_view(web, &s, 50, Family::V4, false),
            GateView::Open(vec![Pass {
                from: Some(cidr("203.0.113.7")),
                until: None
            }])
        );
        assert_eq!(
            expected_view(web, &s, 50, Family::V6, true),
            GateView::Closed
        );
        let v4 = desired(&policy(&[], None), &s, 50, Family::V4);
        let ret = v4
            .iter()
            .position(|r| r.target == Some(Target::Return) && r.tag == "tgknock-gate:web")
            .unwrap();
        let drop = v4
            .iter()
            .position(|r| r.target == Some(Target::Drop) && r.tag == "tgknock-gate:web")
            .unwrap();
        assert!(ret < drop, "sources come before the DROP");
    }

    #[test]
    fn list_names_round_trip() {
        for l in [
            List::Step(1, Family::V4),
            List::Step(7, Family::V6),
            List::Open(Family::V4),
        ] {
            assert_eq!(List::parse(&l.name()), Some(l), "{}", l.name());
        }
        for bad in ["k0_v4", "k_v4", "open_v5", "k01_v4", "kx_v6", "open", ""] {
            assert_eq!(List::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn knock_sequences_parse_once_for_config_and_console() {
        assert_eq!(
            Knock::parse_ports("7101, 7102,7103"),
            Ok(vec![7101, 7102, 7103])
        );
        for (bad, why) in [
            ("7101", "2 to 8"),
            ("7101,7101", "twice"),
            ("1,2,3,4,5,6,7,8,9", "2 to 8"),
            ("0,5", "not a port"),
            ("1,x", "not a port"),
        ] {
            let e = Knock::parse_ports(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
