//! The rule set tgknock wants in its chain, computed from state and time, and the parsing
//! of what the kernel shows back. Pure: no processes, no clock.

use crate::addr::{self, Cidr, Family};
use crate::gate::{Gate, PortRange, Proto};
use crate::state::State;

pub const TAG_ESTABLISHED: &str = "tgknock:established";
pub const TAG_ALWAYS_ALLOW: &str = "tgknock:always-allow";
pub const TAG_GATE_PREFIX: &str = "tgknock-gate:";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Return,
    Drop,
}

/// One rule of tgknock's chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub established: bool,
    /// Match only TCP connection openings (SYN without ACK): a closed TCP gate drops new
    /// connections and nothing else, so sessions that predate conntrack survive too.
    pub syn: bool,
    pub src: Option<Cidr>,
    pub port: Option<PortRange>,
    pub tag: String,
    pub target: Target,
}

impl Rule {
    /// The iptables arguments after `-A CHAIN`, in the order `iptables -S` prints them.
    pub fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = Vec::new();
        if let Some(src) = &self.src {
            a.extend(["-s".into(), src.to_iptables()]);
        }
        if let Some(p) = &self.port {
            let proto = p.proto.as_str();
            a.extend([
                "-p".into(),
                proto.into(),
                "-m".into(),
                proto.into(),
                "--dport".into(),
                p.dport(),
            ]);
            if self.syn {
                a.extend(["--tcp-flags".into(), "FIN,SYN,RST,ACK".into(), "SYN".into()]);
            }
        }
        if self.established {
            a.extend([
                "-m".into(),
                "conntrack".into(),
                "--ctstate".into(),
                "RELATED,ESTABLISHED".into(),
            ]);
        }
        a.extend([
            "-m".into(),
            "comment".into(),
            "--comment".into(),
            self.tag.clone(),
            "-j".into(),
            match self.target {
                Target::Return => "RETURN".into(),
                Target::Drop => "DROP".into(),
            },
        ]);
        a
    }

    /// The gate this rule belongs to, if any.
    pub fn gate(&self) -> Option<&str> {
        self.tag.strip_prefix(TAG_GATE_PREFIX)
    }
}

fn gate_tag(gate: &Gate) -> String {
    format!("{TAG_GATE_PREFIX}{}", gate.name)
}

/// What one gate looks like in one family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateView {
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
pub fn expected_view(gate: &Gate, state: &State, now: u64, family: Family) -> GateView {
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

/// The chain's rules for `family`: established first, the always-allowed sources, then per
/// gate the openings' sources (RETURN) before the gate's DROP; an open-to-all gate has none.
pub fn desired(
    gates: &[Gate],
    always_allow: &[Cidr],
    state: &State,
    now: u64,
    family: Family,
) -> Vec<Rule> {
    let mut rules = vec![Rule {
        established: true,
        syn: false,
        src: None,
        port: None,
        tag: TAG_ESTABLISHED.into(),
        target: Target::Return,
    }];
    for c in always_allow.iter().filter(|c| c.family() == family) {
        rules.push(Rule {
            established: false,
            syn: false,
            src: Some(*c),
            port: None,
            tag: TAG_ALWAYS_ALLOW.into(),
            target: Target::Return,
        });
    }
    for gate in gates {
        let sources = match expected_view(gate, state, now, family) {
            GateView::OpenToAll => continue,
            GateView::OpenFrom(s) => s,
            _ => Vec::new(),
        };
        for src in sources {
            for p in &gate.ports {
                rules.push(Rule {
                    established: false,
                    syn: false,
                    src: Some(src),
                    port: Some(*p),
                    tag: gate_tag(gate),
                    target: Target::Return,
                });
            }
        }
        for p in &gate.ports {
            rules.push(Rule {
                established: false,
                syn: p.proto == Proto::Tcp,
                src: None,
                port: Some(*p),
                tag: gate_tag(gate),
                target: Target::Drop,
            });
        }
    }
    rules
}

/// How the jump from INPUT must be repaired in the same transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JumpFix {
    /// Existing `-A INPUT -j CHAIN` rules to delete.
    pub delete: usize,
    /// Insert one jump at the top.
    pub insert: bool,
}

impl JumpFix {
    /// Nothing to do when there is exactly one jump and it is the first rule of INPUT.
    pub fn from_listing(listing: &Listing) -> JumpFix {
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
pub fn restore_input(chain: &str, rules: &[Rule], fix: JumpFix) -> String {
    let mut s = format!("*filter\n:{chain} - [0:0]\n");
    for r in rules {
        s.push_str(&format!("-A {chain} {}\n", r.args().join(" ")));
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
pub fn restore_lines(chain: &str, lines: &[String]) -> String {
    let mut s = format!("*filter\n:{chain} - [0:0]\n");
    for l in lines {
        s.push_str(l);
        s.push('\n');
    }
    s.push_str("COMMIT\n");
    s
}

/// The restore input that removes the jumps and the chain.
pub fn teardown_input(chain: &str, listing: &Listing) -> Option<String> {
    if listing.jumps == 0 && !listing.chain_exists {
        return None;
    }
    let mut s = String::from("*filter\n");
    for _ in 0..listing.jumps {
        s.push_str(&format!("-D INPUT -j {chain}\n"));
    }
    if listing.chain_exists {
        s.push_str(&format!("-F {chain}\n-X {chain}\n"));
    }
    s.push_str("COMMIT\n");
    Some(s)
}

/// What `iptables -S` shows of tgknock's chain and jump.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    pub chain_exists: bool,
    /// `-A INPUT -j CHAIN` rules.
    pub jumps: usize,
    /// The first INPUT rule is the jump.
    pub jump_first: bool,
    /// The chain's `-A CHAIN …` lines, verbatim.
    pub lines: Vec<String>,
    /// Those lines parsed (`None`: a rule tgknock does not recognise).
    pub rules: Vec<Option<Rule>>,
}

/// Splits an `iptables -S` line into words, honouring double quotes.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            '\\' if quoted => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            c if c.is_whitespace() && !quoted => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Parses the output of `iptables -S` (the whole filter table).
pub fn parse_listing(chain: &str, text: &str) -> Listing {
    let mut l = Listing::default();
    let mut first_input = true;
    for line in text.lines() {
        let w = words(line);
        match w.as_slice() {
            [n, c] if n == "-N" && c == chain => l.chain_exists = true,
            [a, input, rest @ ..] if a == "-A" && input == "INPUT" => {
                let is_jump = rest.len() == 2 && rest[0] == "-j" && rest[1] == chain;
                if is_jump {
                    l.jumps += 1;
                    if first_input {
                        l.jump_first = true;
                    }
                }
                first_input = false;
            }
            [a, c, rest @ ..] if a == "-A" && c == chain => {
                l.lines.push(line.trim_end().to_string());
                l.rules.push(parse_rule(rest));
            }
            _ => {}
        }
    }
    l
}

fn parse_rule(w: &[String]) -> Option<Rule> {
    let mut r = Rule {
        established: false,
        syn: false,
        src: None,
        port: None,
        tag: String::new(),
        target: Target::Return,
    };
    let mut proto = None;
    let mut dport = None;
    let mut target = None;
    let mut i = 0;
    while i < w.len() {
        let next = w.get(i + 1).map(String::as_str);
        match (w[i].as_str(), next) {
            ("-s", Some(v)) => {
                r.src = Some(addr::parse_listed(v)?);
                i += 1;
            }
            ("-p", Some(v)) => {
                proto = Some(match v {
                    "tcp" => Proto::Tcp,
                    "udp" => Proto::Udp,
                    _ => return None,
                });
                i += 1;
            }
            ("--dport", Some(v)) => {
                let (a, b) = v.split_once(':').unwrap_or((v, v));
                dport = Some((a.parse::<u16>().ok()?, b.parse::<u16>().ok()?));
                i += 1;
            }
            ("--tcp-flags", Some("FIN,SYN,RST,ACK"))
                if w.get(i + 2).is_some_and(|v| v == "SYN") =>
            {
                r.syn = true;
                i += 2;
            }
            ("--ctstate", Some(v)) => {
                let mut s: Vec<&str> = v.split(',').collect();
                s.sort();
                if s != ["ESTABLISHED", "RELATED"] {
                    return None;
                }
                r.established = true;
                i += 1;
            }
            ("--comment", Some(v)) => {
                r.tag = v.to_string();
                i += 1;
            }
            ("-j", Some(v)) => {
                target = Some(match v {
                    "RETURN" => Target::Return,
                    "DROP" => Target::Drop,
                    _ => return None,
                });
                i += 1;
            }
            ("-m", Some("tcp" | "udp" | "conntrack" | "comment")) => i += 1,
            _ => return None,
        }
        i += 1;
    }
    r.target = target?;
    r.port = match (proto, dport) {
        (Some(proto), Some((first, last))) => Some(PortRange { proto, first, last }),
        (None, None) => None,
        _ => return None,
    };
    Some(r)
}

impl Listing {
    /// Whether the chain is in place and reached from INPUT.
    pub fn installed(&self) -> bool {
        self.chain_exists && self.jumps >= 1
    }

    /// Whether the chain's rules are exactly `rules`, with one jump at the top of INPUT.
    pub fn matches(&self, rules: &[Rule]) -> bool {
        self.jumps == 1
            && self.jump_first
            && self.rules.len() == rules.len()
            && self
                .rules
                .iter()
                .zip(rules)
                .all(|(a, b)| a.as_ref() == Some(b))
    }

    /// What the kernel enforces for `gate`, read from the rules.
    pub fn view(&self, gate: &Gate) -> GateView {
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
        let drops: Vec<&PortRange> = mine
            .iter()
            .filter(|r| r.target == Target::Drop && r.src.is_none())
            .filter_map(|r| r.port.as_ref())
            .collect();
        if mine.is_empty() {
            return GateView::OpenToAll;
        }
        if drops.len() != gate.ports.len() || !gate.ports.iter().all(|p| drops.contains(&p)) {
            return GateView::Inconsistent(format!(
                "{} has DROP rules for {} of its {} port sets",
                gate.name,
                drops.len(),
                gate.ports.len()
            ));
        }
        let mut sources: Vec<Cidr> = mine
            .iter()
            .filter(|r| r.target == Target::Return)
            .filter_map(|r| r.src)
            .collect();
        sources.sort();
        sources.dedup();
        for s in &sources {
            let ports = mine
                .iter()
                .filter(|r| r.target == Target::Return && r.src == Some(*s))
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
mod tests {
    use super::*;
    use crate::gate::parse_gates;
    use crate::state::Opening;

    fn gates() -> Vec<Gate> {
        parse_gates("ssh=22/tcp web=80/tcp,443/tcp mosh=60000:61000/udp").unwrap()
    }

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    fn state(openings: &[(&str, Option<&str>, Option<u64>)]) -> State {
        let mut s = State::default();
        for (g, from, until) in openings {
            s.open(
                g,
                Opening {
                    from: from.map(cidr),
                    until: *until,
                    by: "t".into(),
                },
            )
            .unwrap();
        }
        s
    }

    fn render(rules: &[Rule]) -> Vec<String> {
        rules.iter().map(|r| r.args().join(" ")).collect()
    }

    #[test]
    fn all_closed_by_default() {
        let r = desired(
            &gates(),
            &[cidr("192.168.0.0/16")],
            &State::default(),
            0,
            Family::V4,
        );
        assert_eq!(
            render(&r),
            vec![
                "-m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment tgknock:established -j RETURN",
                "-s 192.168.0.0/16 -m comment --comment tgknock:always-allow -j RETURN",
                "-p tcp -m tcp --dport 22 --tcp-flags FIN,SYN,RST,ACK SYN -m comment --comment tgknock-gate:ssh -j DROP",
                "-p tcp -m tcp --dport 80 --tcp-flags FIN,SYN,RST,ACK SYN -m comment --comment tgknock-gate:web -j DROP",
                "-p tcp -m tcp --dport 443 --tcp-flags FIN,SYN,RST,ACK SYN -m comment --comment tgknock-gate:web -j DROP",
                "-p udp -m udp --dport 60000:61000 -m comment --comment tgknock-gate:mosh -j DROP",
            ]
        );
        let v6 = desired(
            &gates(),
            &[cidr("192.168.0.0/16")],
            &State::default(),
            0,
            Family::V6,
        );
        assert_eq!(
            v6.len(),
            5,
            "the v4 always-allow block is not in the v6 chain"
        );
    }

    #[test]
    fn open_to_all_and_from_one_source() {
        let s = state(&[
            ("ssh", None, Some(100)),
            ("web", Some("203.0.113.7"), Some(100)),
            ("web", Some("2001:db8::/64"), None),
        ]);
        let v4 = render(&desired(&gates(), &[], &s, 50, Family::V4));
        assert!(
            !v4.iter().any(|l| l.contains("tgknock-gate:ssh")),
            "ssh open: no rules"
        );
        assert!(v4.contains(&"-s 203.0.113.7/32 -p tcp -m tcp --dport 80 -m comment --comment tgknock-gate:web -j RETURN".to_string()));
        assert!(v4.contains(&"-s 203.0.113.7/32 -p tcp -m tcp --dport 443 -m comment --comment tgknock-gate:web -j RETURN".to_string()));
        let v6 = render(&desired(&gates(), &[], &s, 50, Family::V6));
        assert!(v6.contains(&"-s 2001:db8::/64 -p tcp -m tcp --dport 80 -m comment --comment tgknock-gate:web -j RETURN".to_string()));
        assert!(!v6.iter().any(|l| l.contains("203.0.113.7")));
        // Sources come before the DROP.
        let ret = v4
            .iter()
            .position(|l| l.contains("RETURN") && l.contains("web"))
            .unwrap();
        let drop = v4
            .iter()
            .position(|l| l.contains("DROP") && l.contains("web"))
            .unwrap();
        assert!(ret < drop);
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
        let r = render(&desired(&gates(), &[], &s, 100, Family::V4));
        assert!(r.iter().any(|l| l.contains("tgknock-gate:ssh -j DROP")));
    }

    #[test]
    fn restore_input_replaces_chain_and_fixes_jump() {
        let r = desired(&gates()[..1], &[], &State::default(), 0, Family::V4);
        let text = restore_input(
            "TGKNOCK",
            &r,
            JumpFix {
                delete: 2,
                insert: true,
            },
        );
        assert_eq!(
            text,
            "*filter\n:TGKNOCK - [0:0]\n\
             -A TGKNOCK -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment tgknock:established -j RETURN\n\
             -A TGKNOCK -p tcp -m tcp --dport 22 --tcp-flags FIN,SYN,RST,ACK SYN -m comment --comment tgknock-gate:ssh -j DROP\n\
             -D INPUT -j TGKNOCK\n-D INPUT -j TGKNOCK\n-I INPUT 1 -j TGKNOCK\nCOMMIT\n"
        );
    }

    const LISTING: &str = "-P INPUT ACCEPT\n-P FORWARD ACCEPT\n-P OUTPUT ACCEPT\n-N TGKNOCK\n-N f2b-sshd\n\
        -A INPUT -j TGKNOCK\n-A INPUT -p tcp -m multiport --dports 22 -j f2b-sshd\n\
        -A TGKNOCK -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment tgknock:established -j RETURN\n\
        -A TGKNOCK -s 10.0.0.0/8 -m comment --comment tgknock:always-allow -j RETURN\n\
        -A TGKNOCK -s 203.0.113.7/32 -p tcp -m tcp --dport 22 -m comment --comment \"tgknock-gate:ssh\" -j RETURN\n\
        -A TGKNOCK -p tcp -m tcp --dport 22 --tcp-flags FIN,SYN,RST,ACK SYN -m comment --comment tgknock-gate:ssh -j DROP\n\
        -A f2b-sshd -j RETURN\n";

    #[test]
    fn parses_a_listing() {
        let l = parse_listing("TGKNOCK", LISTING);
        assert!(l.chain_exists && l.installed());
        assert_eq!((l.jumps, l.jump_first), (1, true));
        assert_eq!(l.lines.len(), 4);
        let g = &gates()[..1];
        assert_eq!(l.view(&g[0]), GateView::OpenFrom(vec![cidr("203.0.113.7")]));
        let s = state(&[("ssh", Some("203.0.113.7"), Some(10))]);
        assert!(l.matches(&desired(g, &[cidr("10.0.0.0/8")], &s, 5, Family::V4)));
        assert!(!l.matches(&desired(g, &[cidr("10.0.0.0/8")], &s, 10, Family::V4)));
        assert_eq!(
            JumpFix::from_listing(&l),
            JumpFix {
                delete: 0,
                insert: false
            }
        );
    }

    #[test]
    fn views_of_broken_chains() {
        let g = &gates()[1];
        let missing = parse_listing("TGKNOCK", "-N TGKNOCK\n");
        assert_eq!(missing.view(g), GateView::NotInstalled);
        let half = parse_listing(
            "TGKNOCK",
            "-N TGKNOCK\n-A INPUT -j TGKNOCK\n-A TGKNOCK -p tcp -m tcp --dport 80 -m comment --comment tgknock-gate:web -j DROP\n",
        );
        assert!(matches!(half.view(g), GateView::Inconsistent(_)));
        let foreign = parse_listing(
            "TGKNOCK",
            "-N TGKNOCK\n-A INPUT -j TGKNOCK\n-A TGKNOCK -p icmp -j ACCEPT\n",
        );
        assert!(matches!(foreign.view(g), GateView::Inconsistent(_)));
        let second = parse_listing(
            "TGKNOCK",
            "-N TGKNOCK\n-A INPUT -p tcp -j ACCEPT\n-A INPUT -j TGKNOCK\n-A INPUT -j TGKNOCK\n",
        );
        assert_eq!(
            JumpFix::from_listing(&second),
            JumpFix {
                delete: 2,
                insert: true
            }
        );
        assert_eq!(
            teardown_input("TGKNOCK", &second).unwrap(),
            "*filter\n-D INPUT -j TGKNOCK\n-D INPUT -j TGKNOCK\n-F TGKNOCK\n-X TGKNOCK\nCOMMIT\n"
        );
        assert_eq!(teardown_input("TGKNOCK", &Listing::default()), None);
    }

    #[test]
    fn every_rendered_rule_parses_back() {
        let s = state(&[
            ("web", Some("203.0.113.0/24"), Some(100)),
            ("mosh", Some("2001:db8::5"), None),
        ]);
        for fam in [Family::V4, Family::V6] {
            let rules = desired(
                &gates(),
                &[cidr("10.0.0.0/8"), cidr("fd00::/8")],
                &s,
                0,
                fam,
            );
            let text = format!(
                "-N TGKNOCK\n-A INPUT -j TGKNOCK\n{}",
                restore_input(
                    "TGKNOCK",
                    &rules,
                    JumpFix {
                        delete: 0,
                        insert: false
                    }
                )
                .lines()
                .filter(|l| l.starts_with("-A"))
                .map(|l| format!("{l}\n"))
                .collect::<String>()
            );
            let l = parse_listing("TGKNOCK", &text);
            assert!(l.matches(&rules), "{fam:?}");
            for g in gates() {
                assert_eq!(
                    l.view(&g),
                    expected_view(&g, &s, 0, fam),
                    "{} {fam:?}",
                    g.name
                );
            }
        }
    }
}
