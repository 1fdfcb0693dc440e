//! The rule set tgknock wants in its chain, computed from state and time, and the parsing
//! of what the kernel shows back. Pure: no processes, no clock.

use crate::addr::{self, Cidr, Family};
use crate::gate::{Gate, PortRange, Proto};
use crate::state::State;

pub const TAG_ESTABLISHED: &str = "tgknock:established";
pub const TAG_ALWAYS_ALLOW: &str = "tgknock:always-allow";
pub const TAG_KNOCK: &str = "tgknock:knock";
pub const TAG_GATE_PREFIX: &str = "tgknock-gate:";

/// Seconds allowed between two knocks of the sequence.
pub const KNOCK_STEP_SECS: u64 = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Return,
    Drop,
}

/// What a `recent` match does with the source address (iptables `-m recent`, or an nft
/// dynamic set with a timeout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecentOp {
    /// Matches if the source is on the list (seen within `seconds`).
    Rcheck,
    /// Puts the source on the list; always matches.
    Set,
    /// Matches if the source is on the list, and takes it off.
    Remove,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recent {
    pub op: RecentOp,
    pub seconds: Option<u64>,
    pub list: String,
}

/// One rule of tgknock's chain, in one family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub family: Family,
    pub established: bool,
    pub src: Option<Cidr>,
    pub proto: Option<Proto>,
    /// Destination port range (needs `proto`).
    pub dport: Option<(u16, u16)>,
    /// Match only TCP connection openings (SYN without ACK): a closed TCP gate drops new
    /// connections and nothing else, so sessions that predate conntrack survive too.
    pub syn: bool,
    pub recent: Vec<Recent>,
    pub tag: String,
    /// `None`: the rule only acts (a knock sequence reset) and evaluation goes on.
    pub target: Option<Target>,
}

impl Rule {
    fn new(family: Family, tag: &str, target: Option<Target>) -> Rule {
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

    pub fn port(&self) -> Option<PortRange> {
        match (self.proto, self.dport) {
            (Some(proto), Some((first, last))) => Some(PortRange { proto, first, last }),
            _ => None,
        }
    }

    fn full_mask(&self) -> &'static str {
        match self.family {
            Family::V4 => "255.255.255.255",
            Family::V6 => "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        }
    }

    /// The iptables arguments after `-A CHAIN`, exactly as `iptables -S` prints them back.
    pub fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = Vec::new();
        let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
        if let Some(src) = &self.src {
            push(&["-s", &src.to_iptables()]);
        }
        if let Some(proto) = self.proto {
            push(&["-p", proto.as_str(), "-m", proto.as_str()]);
            if let Some(p) = self.port() {
                push(&["--dport", &p.dport()]);
            }
            if self.syn {
                push(&["--tcp-flags", "FIN,SYN,RST,ACK", "SYN"]);
            }
        }
        if self.established {
            push(&["-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED"]);
        }
        for r in &self.recent {
            push(&["-m", "recent"]);
            push(&[match r.op {
                RecentOp::Rcheck => "--rcheck",
                RecentOp::Set => "--set",
                RecentOp::Remove => "--remove",
            }]);
            if let Some(s) = r.seconds {
                push(&["--seconds", &s.to_string()]);
            }
            push(&["--name", &r.list, "--mask", self.full_mask(), "--rsource"]);
        }
        push(&["-m", "comment", "--comment", &self.tag]);
        match self.target {
            Some(Target::Return) => push(&["-j", "RETURN"]),
            Some(Target::Drop) => push(&["-j", "DROP"]),
            None => {}
        }
        a
    }

    /// A canonical one-line description: equal rules have equal keys. It is how a rule is
    /// recognised when read back, and the nft backend's rule comment (at most 128 bytes).
    pub fn key(&self) -> String {
        let mut k = format!(
            "{} {}",
            match self.family {
                Family::V4 => "4",
                Family::V6 => "6",
            },
            self.tag
        );
        if self.established {
            k.push_str(" ct=established");
        }
        if let Some(src) = &self.src {
            k.push_str(&format!(" src={}", src.to_iptables()));
        }
        match (self.proto, self.port()) {
            (_, Some(p)) => k.push_str(&format!(" {}={}", p.proto.as_str(), p.dport())),
            (Some(proto), None) => k.push_str(&format!(" {}", proto.as_str())),
            _ => {}
        }
        if self.syn {
            k.push_str(" syn");
        }
        for r in &self.recent {
            let op = match r.op {
                RecentOp::Rcheck => "rcheck",
                RecentOp::Set => "set",
                RecentOp::Remove => "remove",
            };
            match r.seconds {
                Some(s) => k.push_str(&format!(" {op}:{}:{s}", r.list)),
                None => k.push_str(&format!(" {op}:{}", r.list)),
            }
        }
        match self.target {
            Some(Target::Return) => k.push_str(" return"),
            Some(Target::Drop) => k.push_str(" drop"),
            None => {}
        }
        k
    }

    /// Reads a rule back from its key (the nft backend's comments).
    pub fn from_key(key: &str) -> Option<Rule> {
        let mut words = key.split_whitespace();
        let family = match words.next()? {
            "4" => Family::V4,
            "6" => Family::V6,
            _ => return None,
        };
        let mut r = Rule::new(family, words.next()?, None);
        for w in words {
            match w {
                "ct=established" => r.established = true,
                "syn" => r.syn = true,
                "return" => r.target = Some(Target::Return),
                "drop" => r.target = Some(Target::Drop),
                "tcp" => r.proto = Some(Proto::Tcp),
                "udp" => r.proto = Some(Proto::Udp),
                _ => {
                    let (name, value) = w.split_once(['=', ':'])?;
                    match name {
                        "src" => r.src = Some(addr::parse_listed(value)?),
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
                                list: list.to_string(),
                            });
                        }
                        _ => return None,
                    }
                }
            }
        }
        Some(r)
    }
}

fn gate_tag(gate: &Gate) -> String {
    format!("{TAG_GATE_PREFIX}{}", gate.name)
}

/// The port-knock fallback: knocking `ports` in order opens `gate` to the knocker for
/// `open_for` seconds, entirely in kernel rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Knock {
    pub ports: Vec<u16>,
    pub open_for: u64,
    pub gate: String,
}

impl Knock {
    /// `7311,2918,9440`
    pub fn ports_text(&self) -> String {
        self.ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Everything besides the state that decides the rules.
#[derive(Debug, Clone)]
pub struct Policy {
    pub gates: Vec<Gate>,
    pub always_allow: Vec<Cidr>,
    pub knock: Option<Knock>,
    /// Prefix of the knock lists' names (iptables lists are global to the namespace).
    pub list_prefix: String,
}

impl Policy {
    /// The name of knock list `what` (`k1`, `k2`, …, `open`) in `family`.
    pub fn list(&self, what: &str, family: Family) -> String {
        let f = match family {
            Family::V4 => "v4",
            Family::V6 => "v6",
        };
        format!("{}{what}_{f}", self.list_prefix)
    }
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

/// The chain's rules for `family`: established first, the always-allowed sources, the
/// knock fallback, then per gate the openings' sources (RETURN) before the gate's DROP; an
/// open-to-all gate has none.
pub fn desired(policy: &Policy, state: &State, now: u64, family: Family) -> Vec<Rule> {
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
    let open = policy.list("open", family);
    if let Some(gate) = policy.gates.iter().find(|g| g.name == k.gate) {
        for p in &gate.ports {
            let mut r = Rule::new(family, TAG_KNOCK, Some(Target::Return)).on(p);
            r.recent.push(Recent {
                op: RecentOp::Rcheck,
                seconds: Some(k.open_for),
                list: open.clone(),
            });
            rules.push(r);
        }
    }
    let n = k.ports.len();
    for step in (1..=n).rev() {
        let port = k.ports[step - 1];
        let next = if step == n {
            open.clone()
        } else {
            policy.list(&format!("k{step}"), family)
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
            let prev = policy.list(&format!("k{}", step - 1), family);
            advance.recent = vec![
                Recent {
                    op: RecentOp::Rcheck,
                    seconds: Some(KNOCK_STEP_SECS),
                    list: prev.clone(),
                },
                Recent {
                    op: RecentOp::Set,
                    seconds: None,
                    list: next,
                },
                Recent {
                    op: RecentOp::Remove,
                    seconds: None,
                    list: prev.clone(),
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

/// Parses the output of `iptables -S` (the whole filter table) of `family`.
pub fn parse_listing(chain: &str, text: &str, family: Family) -> Listing {
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
                l.rules.push(parse_rule(rest, family));
            }
            _ => {}
        }
    }
    l
}

fn parse_rule(w: &[String], family: Family) -> Option<Rule> {
    let mut r = Rule::new(family, "", None);
    let mut i = 0;
    let full_mask = r.full_mask();
    while i < w.len() {
        let next = w.get(i + 1).map(String::as_str);
        match (w[i].as_str(), next) {
            ("-s", Some(v)) => {
                r.src = Some(addr::parse_listed(v)?);
                i += 1;
            }
            ("-p", Some(v)) => {
                r.proto = Some(match v {
                    "tcp" => Proto::Tcp,
                    "udp" => Proto::Udp,
                    _ => return None,
                });
                i += 1;
            }
            ("--dport", Some(v)) => {
                let (a, b) = v.split_once(':').unwrap_or((v, v));
                r.dport = Some((a.parse::<u16>().ok()?, b.parse::<u16>().ok()?));
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
                r.target = Some(match v {
                    "RETURN" => Target::Return,
                    "DROP" => Target::Drop,
                    _ => return None,
                });
                i += 1;
            }
            ("-m", Some("recent")) => {
                r.recent.push(Recent {
                    op: RecentOp::Set,
                    seconds: None,
                    list: String::new(),
                });
                i += 1;
            }
            (op @ ("--set" | "--rcheck" | "--remove"), _) => {
                let last = r.recent.last_mut()?;
                last.op = match op {
                    "--set" => RecentOp::Set,
                    "--rcheck" => RecentOp::Rcheck,
                    _ => RecentOp::Remove,
                };
            }
            ("--seconds", Some(v)) => {
                r.recent.last_mut()?.seconds = Some(v.parse().ok()?);
                i += 1;
            }
            ("--name", Some(v)) => {
                r.recent.last_mut()?.list = v.to_string();
                i += 1;
            }
            ("--mask", Some(v)) if v == full_mask => i += 1,
            ("--rsource", _) => {}
            ("-m", Some("tcp" | "udp" | "conntrack" | "comment")) => i += 1,
            _ => return None,
        }
        i += 1;
    }
    if r.dport.is_some() && r.proto.is_none() {
        return None;
    }
    Some(r)
}

/// Parses `nft list table inet NAME`: each rule tgknock writes carries its key as its
/// comment; the rules of `family` are returned in order.
pub fn parse_nft_listing(table_text: &str, family: Family) -> Listing {
    let mut l = Listing::default();
    for line in table_text.lines() {
        let t = line.trim();
        if t.starts_with("chain input") {
            l.chain_exists = true;
        }
        if t.starts_with("type filter hook input") {
            l.jumps = 1;
            l.jump_first = true;
        }
        let Some(at) = t.rfind("comment \"") else {
            continue;
        };
        let comment = t[at + 9..].trim_end_matches('"');
        let rule = Rule::from_key(comment);
        let fam = comment.split_whitespace().next();
        let mine = match family {
            Family::V4 => fam == Some("4"),
            Family::V6 => fam == Some("6"),
        };
        if mine || rule.is_none() {
            l.lines.push(t.to_string());
            l.rules.push(rule);
        }
    }
    l
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

    /// Whether the knock fallback's rules are in the chain.
    pub fn knock_armed(&self) -> bool {
        self.installed() && self.rules.iter().flatten().any(|r| r.tag == TAG_KNOCK)
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
mod tests {
    use super::*;
    use crate::gate::parse_gates;
    use crate::state::Opening;

    fn gates() -> Vec<Gate> {
        parse_gates("ssh=22/tcp web=80/tcp,443/tcp mosh=60000:61000/udp").unwrap()
    }

    fn policy(always: &[&str], knock: Option<Knock>) -> Policy {
        Policy {
            gates: gates(),
            always_allow: always.iter().map(|c| cidr(c)).collect(),
            knock,
            list_prefix: "TGKNOCK_".into(),
        }
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

    /// A listing as `iptables -S` would print the rules (comments quoted, as it does).
    fn listed(rules: &[Rule]) -> String {
        let mut t = String::from("-P INPUT ACCEPT\n-N TGKNOCK\n-A INPUT -j TGKNOCK\n");
        for r in rules {
            let line = format!("-A TGKNOCK {}", r.args().join(" "));
            let line = line.replace(
                &format!("--comment {}", r.tag),
                &format!("--comment \"{}\"", r.tag),
            );
            t.push_str(&line);
            t.push('\n');
        }
        t
    }

    #[test]
    fn all_closed_by_default() {
        let p = policy(&["192.168.0.0/16"], None);
        let r = desired(&p, &State::default(), 0, Family::V4);
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
        let v6 = desired(&p, &State::default(), 0, Family::V6);
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
        let p = policy(&[], None);
        let v4 = render(&desired(&p, &s, 50, Family::V4));
        assert!(
            !v4.iter().any(|l| l.contains("tgknock-gate:ssh")),
            "ssh open: no rules"
        );
        assert!(v4.contains(&"-s 203.0.113.7/32 -p tcp -m tcp --dport 80 -m comment --comment tgknock-gate:web -j RETURN".to_string()));
        assert!(v4.contains(&"-s 203.0.113.7/32 -p tcp -m tcp --dport 443 -m comment --comment tgknock-gate:web -j RETURN".to_string()));
        let v6 = render(&desired(&p, &s, 50, Family::V6));
        assert!(v6.contains(&"-s 2001:db8::/64 -p tcp -m tcp --dport 80 -m comment --comment tgknock-gate:web -j RETURN".to_string()));
        assert!(!v6.iter().any(|l| l.contains("203.0.113.7")));
        let ret = v4
            .iter()
            .position(|l| l.contains("RETURN") && l.contains("web"))
            .unwrap();
        let drop = v4
            .iter()
            .position(|l| l.contains("DROP") && l.contains("web"))
            .unwrap();
        assert!(ret < drop, "sources come before the DROP");
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
        let r = render(&desired(&policy(&[], None), &s, 100, Family::V4));
        assert!(r.iter().any(|l| l.contains("tgknock-gate:ssh -j DROP")));
    }

    #[test]
    fn restore_input_replaces_chain_and_fixes_jump() {
        let mut p = policy(&[], None);
        p.gates.truncate(1);
        let r = desired(&p, &State::default(), 0, Family::V4);
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
        -A TGKNOCK -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment \"tgknock:established\" -j RETURN\n\
        -A TGKNOCK -s 10.0.0.0/8 -m comment --comment \"tgknock:always-allow\" -j RETURN\n\
        -A TGKNOCK -s 203.0.113.7/32 -p tcp -m tcp --dport 22 -m comment --comment \"tgknock-gate:ssh\" -j RETURN\n\
        -A TGKNOCK -p tcp -m tcp --dport 22 --tcp-flags FIN,SYN,RST,ACK SYN -m comment --comment \"tgknock-gate:ssh\" -j DROP\n\
        -A f2b-sshd -j RETURN\n";

    #[test]
    fn parses_a_listing() {
        let l = parse_listing("TGKNOCK", LISTING, Family::V4);
        assert!(l.chain_exists && l.installed());
        assert_eq!((l.jumps, l.jump_first), (1, true));
        assert_eq!(l.lines.len(), 4);
        let mut p = policy(&["10.0.0.0/8"], None);
        p.gates.truncate(1);
        assert_eq!(
            l.view(&p.gates[0]),
            GateView::OpenFrom(vec![cidr("203.0.113.7")])
        );
        let s = state(&[("ssh", Some("203.0.113.7"), Some(10))]);
        assert!(l.matches(&desired(&p, &s, 5, Family::V4)));
        assert!(!l.matches(&desired(&p, &s, 10, Family::V4)));
        assert!(!l.knock_armed());
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
        let missing = parse_listing("TGKNOCK", "-N TGKNOCK\n", Family::V4);
        assert_eq!(missing.view(g), GateView::NotInstalled);
        let half = parse_listing(
            "TGKNOCK",
            "-N TGKNOCK\n-A INPUT -j TGKNOCK\n-A TGKNOCK -p tcp -m tcp --dport 80 -m comment --comment tgknock-gate:web -j DROP\n",
            Family::V4,
        );
        assert!(matches!(half.view(g), GateView::Inconsistent(_)));
        let foreign = parse_listing(
            "TGKNOCK",
            "-N TGKNOCK\n-A INPUT -j TGKNOCK\n-A TGKNOCK -p icmp -j ACCEPT\n",
            Family::V4,
        );
        assert!(matches!(foreign.view(g), GateView::Inconsistent(_)));
        let second = parse_listing(
            "TGKNOCK",
            "-N TGKNOCK\n-A INPUT -p tcp -j ACCEPT\n-A INPUT -j TGKNOCK\n-A INPUT -j TGKNOCK\n",
            Family::V4,
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

    fn knock() -> Knock {
        Knock {
            ports: vec![7101, 7102, 7103],
            open_for: 30,
            gate: "ssh".into(),
        }
    }

    #[test]
    fn knock_rules_check_the_last_step_first() {
        let p = policy(&[], Some(knock()));
        let r = render(&desired(&p, &State::default(), 0, Family::V4));
        let m = "--mask 255.255.255.255 --rsource";
        assert_eq!(
            r[1..7],
            [
                format!(
                    "-p tcp -m tcp --dport 22 -m recent --rcheck --seconds 30 --name TGKNOCK_open_v4 {m} -m comment --comment tgknock:knock -j RETURN"
                ),
                format!(
                    "-p tcp -m tcp --dport 7103 --tcp-flags FIN,SYN,RST,ACK SYN -m recent --rcheck --seconds 5 --name TGKNOCK_k2_v4 {m} -m recent --set --name TGKNOCK_open_v4 {m} -m recent --remove --name TGKNOCK_k2_v4 {m} -m comment --comment tgknock:knock -j DROP"
                ),
                format!(
                    "-p tcp -m tcp --tcp-flags FIN,SYN,RST,ACK SYN -m recent --remove --name TGKNOCK_k2_v4 {m} -m comment --comment tgknock:knock"
                ),
                format!(
                    "-p tcp -m tcp --dport 7102 --tcp-flags FIN,SYN,RST,ACK SYN -m recent --rcheck --seconds 5 --name TGKNOCK_k1_v4 {m} -m recent --set --name TGKNOCK_k2_v4 {m} -m recent --remove --name TGKNOCK_k1_v4 {m} -m comment --comment tgknock:knock -j DROP"
                ),
                format!(
                    "-p tcp -m tcp --tcp-flags FIN,SYN,RST,ACK SYN -m recent --remove --name TGKNOCK_k1_v4 {m} -m comment --comment tgknock:knock"
                ),
                format!(
                    "-p tcp -m tcp --dport 7101 --tcp-flags FIN,SYN,RST,ACK SYN -m recent --set --name TGKNOCK_k1_v4 {m} -m comment --comment tgknock:knock -j DROP"
                ),
            ]
        );
        let v6 = render(&desired(&p, &State::default(), 0, Family::V6));
        assert!(v6[1].contains(
            "--name TGKNOCK_open_v6 --mask ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff --rsource"
        ));
    }

    #[test]
    fn every_rendered_rule_parses_back_and_keys_round_trip() {
        let s = state(&[
            ("web", Some("203.0.113.0/24"), Some(100)),
            ("mosh", Some("2001:db8::5"), None),
        ]);
        let p = policy(&["10.0.0.0/8", "fd00::/8"], Some(knock()));
        for fam in [Family::V4, Family::V6] {
            let rules = desired(&p, &s, 0, fam);
            let l = parse_listing("TGKNOCK", &listed(&rules), fam);
            assert!(l.matches(&rules), "{fam:?}: {:?}", l.rules);
            assert!(l.knock_armed());
            for g in &p.gates {
                assert_eq!(
                    l.view(g),
                    expected_view(g, &s, 0, fam),
                    "{} {fam:?}",
                    g.name
                );
            }
            for r in &rules {
                assert!(r.key().len() <= 128, "{}", r.key());
                assert_eq!(Rule::from_key(&r.key()).as_ref(), Some(r), "{}", r.key());
            }
        }
        assert_eq!(Rule::from_key("4 tgknock:x bogus"), None);
        assert_eq!(Rule::from_key(""), None);
    }
}
