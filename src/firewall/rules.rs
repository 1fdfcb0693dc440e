//! The rules tgknock wants, whatever the backend: computed from the policy, the state and
//! the time, and the views of a listing read back from the kernel. Pure: no processes, no
//! clock. Each backend renders a [`Rule`] and parses it back in its own file, and names the
//! knock lists its own way ([`List`]).

use crate::addr::{Cidr, Family};
use crate::gate::{Gate, GateName, PortRange, Proto};
use crate::state::State;

pub(crate) const TAG_ESTABLISHED: &str = "tgknock:established";
pub(crate) const TAG_ALWAYS_ALLOW: &str = "tgknock:always-allow";
pub(crate) const TAG_KNOCK: &str = "tgknock:knock";
const TAG_GATE_PREFIX: &str = "tgknock-gate:";

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

/// One rule of tgknock's chain, in one family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rule {
    pub(crate) family: Family,
    pub(crate) established: bool,
    pub(crate) src: Option<Cidr>,
    pub(crate) proto: Option<Proto>,
    /// Destination port range (needs `proto`).
    pub(crate) dport: Option<(u16, u16)>,
    /// Match only TCP connection openings (SYN without ACK): a closed TCP gate drops new
    /// connections and nothing else, so sessions that predate conntrack survive too.
    pub(crate) syn: bool,
    pub(crate) recent: Vec<Recent>,
    pub(crate) tag: String,
    /// `None`: the rule only acts (a knock sequence reset) and evaluation goes on.
    pub(crate) target: Option<Target>,
}

impl Rule {
    pub(crate) fn new(family: Family, tag: &str, target: Option<Target>) -> Rule {
        Rule {
            family,
            established: false,
            src: None,
            proto: None,
            dport: None,
            syn: false,
            recent: Vec::new(),
            tag: tag.to_string(),
            target,
        }
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

/// The port-knock fallback: knocking `ports` in order opens `gate` to the knocker for
/// `open_for` seconds, entirely in kernel rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Knock {
    pub(crate) ports: Vec<u16>,
    pub(crate) open_for: u64,
    pub(crate) gate: GateName,
}

impl Knock {
    /// `7311,2918,9440`
    pub(crate) fn ports_text(&self) -> String {
        self.ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A knock sequence as `TGKNOCK_KNOCK` and `knock --ports` write it: 2 to 8 distinct
    /// TCP ports, comma-separated.
    pub(crate) fn parse_ports(text: &str) -> Result<Vec<u16>, String> {
        let mut ports: Vec<u16> = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let port = part
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("'{part}' is not a port (1-65535)"))?;
            if ports.contains(&port) {
                return Err(format!("port {port} appears twice"));
            }
            ports.push(port);
        }
        if !(2..=8).contains(&ports.len()) {
            return Err("a sequence is 2 to 8 ports".into());
        }
        Ok(ports)
    }
}

/// Everything besides the state that decides the rules.
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    pub(crate) gates: Vec<Gate>,
    pub(crate) always_allow: Vec<Cidr>,
    pub(crate) knock: Option<Knock>,
}

/// What one gate looks like in one family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum GateView {
    Closed,
    OpenToAll,
    /// Open to these sources only (sorted).
    OpenFrom(Vec<Cidr>),
    /// The chain holds something tgknock would not have written.
    Inconsistent(String),
    /// The chain or its jump is missing: nothing is enforced.
    NotInstalled,
}

/// The view the saved state asks for in `family` at `now` (expired openings count as closed).
pub(crate) fn expected_view(gate: &Gate, state: &State, now: u64, family: Family) -> GateView {
    let live: Vec<_> = state
        .openings_of(&gate.name)
        .iter()
        .filter(|o| o.until.is_none_or(|u| u > now))
        .collect();
    if live.iter().any(|o| o.from.is_none()) {
        return GateView::OpenToAll;
    }
    let mut from: Vec<Cidr> = live
        .iter()
        .filter_map(|o| o.from)
        .filter(|c| c.family() == family)
        .collect();
    from.sort();
    from.dedup();
    if from.is_empty() {
        GateView::Closed
    } else {
        GateView::OpenFrom(from)
    }
}

/// The chain's rules for `family`: established first, the always-allowed sources, the
/// knock fallback, then per gate the openings' sources (RETURN) before the gate's DROP; an
/// open-to-all gate has none.
pub(crate) fn desired(policy: &Policy, state: &State, now: u64, family: Family) -> Vec<Rule> {
    let mut est = Rule::new(family, TAG_ESTABLISHED, Some(Target::Return));
    est.established = true;
    let mut rules = vec![est];
    for c in policy.always_allow.iter().filter(|c| c.family() == family) {
        let mut r = Rule::new(family, TAG_ALWAYS_ALLOW, Some(Target::Return));
        r.src = Some(*c);
        rules.push(r);
    }
    if let Some(k) = &policy.knock {
        rules.extend(knock_rules(policy, k, family));
    }
    for gate in &policy.gates {
        let sources = match expected_view(gate, state, now, family) {
            GateView::OpenToAll => continue,
            GateView::OpenFrom(s) => s,
            _ => Vec::new(),
        };
        for src in sources {
            for p in &gate.ports {
                let mut r = Rule::new(family, &gate_tag(gate), Some(Target::Return)).on(p);
                r.src = Some(src);
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

/// What a backend reads back of tgknock's rules in one family.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Listing {
    /// The chain (iptables) or the table's input chain (nft) exists.
    pub(crate) chain_exists: bool,
    /// Ways in: `-A INPUT -j CHAIN` rules (iptables), or the input hook (nft: 1).
    pub(crate) jumps: usize,
    /// The first INPUT rule is the jump (always so for nft's hook).
    pub(crate) jump_first: bool,
    /// The rules as the tool printed them.
    pub(crate) lines: Vec<String>,
    /// Those lines parsed (`None`: a rule tgknock does not recognise).
    pub(crate) rules: Vec<Option<Rule>>,
}

impl Listing {
    /// Whether the chain is in place and reached from INPUT.
    pub(crate) fn installed(&self) -> bool {
        self.chain_exists && self.jumps >= 1
    }

    /// Whether the chain's rules are exactly `rules`, with one jump at the top of INPUT.
    pub(crate) fn matches(&self, rules: &[Rule]) -> bool {
        self.jumps == 1
            && self.jump_first
            && self.rules.len() == rules.len()
            && self
                .rules
                .iter()
                .zip(rules)
                .all(|(a, b)| a.as_ref() == Some(b))
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
        let mut sources: Vec<Cidr> = mine
            .iter()
            .filter(|r| r.target == Some(Target::Return))
            .filter_map(|r| r.src)
            .collect();
        sources.sort();
        sources.dedup();
        for s in &sources {
            let ports = mine
                .iter()
                .filter(|r| r.target == Some(Target::Return) && r.src == Some(*s))
                .count();
            if ports != gate.ports.len() {
                return GateView::Inconsistent(format!(
                    "{} is open to {s} on some of its ports only",
                    gate.name
                ));
            }
        }
        if sources.is_empty() {
            GateView::Closed
        } else {
            GateView::OpenFrom(sources)
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::gate::parse_gates;
    use crate::state::{Actor, Opening};

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
    fn expired_openings_are_closed() {
        let s = state(&[("ssh", None, Some(100))]);
        assert_eq!(
            expected_view(&gates()[0], &s, 99, Family::V4),
            GateView::OpenToAll
        );
        assert_eq!(
            expected_view(&gates()[0], &s, 100, Family::V4),
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
            expected_view(web, &s, 50, Family::V4),
            GateView::OpenFrom(vec![cidr("203.0.113.7")])
        );
        assert_eq!(expected_view(web, &s, 50, Family::V6), GateView::Closed);
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
