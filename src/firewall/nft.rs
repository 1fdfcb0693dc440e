//! The nftables backend: the table `inet tgknock` with one input base chain holding the
//! rules of both families, changed in one `nft -f -` transaction and read back with `nft
//! list table`. Each rule carries its canonical key as its comment, which is how it is
//! recognised; knock lists are dynamic sets with a timeout.

use std::path::PathBuf;

use super::rules::{
    KNOCK_STEP_SECS, Limit, List, Listing, Per, Policy, Rate, Recent, RecentOp, Rule,
    TAG_LIMIT_PREFIX, Target, limit_tag,
};
use super::{Kind, Tables, run};
use crate::addr::{self, Family};
use crate::error::{Error, Result};
use crate::gate::Proto;

/// The nftables table tgknock owns.
pub(crate) const TABLE: &str = "tgknock";

#[derive(Debug, Clone)]
pub(crate) struct Nft {
    pub(crate) program: PathBuf,
    pub(crate) families: Vec<Family>,
}

fn digit(family: Family) -> &'static str {
    match family {
        Family::V4 => "4",
        Family::V6 => "6",
    }
}

/// A canonical one-line description of a rule: equal rules have equal keys. It is the
/// rule's comment (at most 128 bytes), how a rule is recognised when read back.
pub(crate) fn key(r: &Rule) -> String {
    let mut k = format!("{} {}", digit(r.family), r.tag);
    if r.established {
        k.push_str(" ct=established");
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

/// The dynamic set that keeps the per-source limits of a gate (by its limit tag).
fn limit_set(tag: &str, family: Family) -> String {
    let gate = tag.strip_prefix(TAG_LIMIT_PREFIX).unwrap_or(tag);
    format!("lim_{gate}_{}", family.short())
}

fn per_word(per: Per) -> &'static str {
    match per {
        Per::Second => "second",
        Per::Minute => "minute",
        Per::Hour => "hour",
        Per::Day => "day",
    }
}

/// Reads a rule back from its key.
pub(crate) fn from_key(key: &str) -> Option<Rule> {
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
                    "until" => r.until = Some(value.parse().ok()?),
                    "limit" => {
                        let (rate, burst) = value.rsplit_once(':')?;
                        r.limit = Some(Limit {
                            rate: Rate::parse(rate).ok()?,
                            burst: burst.parse().ok()?,
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
    Some(r)
}

/// The nft statement text of one rule (its key is its comment).
pub(crate) fn statement(r: &Rule) -> String {
    let (nfproto, saddr) = match r.family {
        Family::V4 => ("meta nfproto ipv4", "ip saddr"),
        Family::V6 => ("meta nfproto ipv6", "ip6 saddr"),
    };
    let mut p: Vec<String> = vec![nfproto.into()];
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
        p.push(format!(
            "update @{} {{ {saddr} limit rate over {}/{} burst {} packets }}",
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

/// The `nft -f -` script that replaces the table's rules in one transaction. The dynamic
/// sets of the knock fallback are declared (kept if present), so a change of the rules
/// does not forget a knock in progress.
pub(crate) fn script(policy: &Policy, rules_of: &[(Family, Vec<Rule>)], fresh: bool) -> String {
    let t = TABLE;
    let mut s = format!("add table inet {t}\n");
    if fresh {
        s.push_str(&format!("delete table inet {t}\nadd table inet {t}\n"));
    }
    s.push_str(&format!(
        "add chain inet {t} input {{ type filter hook input priority filter - 10; policy accept; }}\n"
    ));
    if let Some(k) = &policy.knock {
        for (fam, _) in rules_of {
            let ty = match fam {
                Family::V4 => "ipv4_addr",
                Family::V6 => "ipv6_addr",
            };
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
    for (name, rate) in &policy.limits {
        let tag = limit_tag(name);
        for (fam, _) in rules_of {
            let ty = match fam {
                Family::V4 => "ipv4_addr",
                Family::V6 => "ipv6_addr",
            };
            s.push_str(&format!(
                "add set inet {t} {} {{ type {ty}; flags dynamic,timeout; timeout {}s; }}\n",
                limit_set(&tag, *fam),
                Limit::of(*rate).refill_secs()
            ));
        }
    }
    s.push_str(&format!("flush chain inet {t} input\n"));
    for (_, rules) in rules_of {
        for r in rules {
            s.push_str(&format!("add rule inet {t} input {}\n", statement(r)));
        }
    }
    s
}

/// Parses `nft list table inet tgknock`: the rules of `family`, in order, recognised by
/// their comments.
pub(crate) fn parse_listing(table_text: &str, family: Family) -> Listing {
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
        let rule = from_key(comment);
        let mine = comment.split_whitespace().next() == Some(digit(family));
        if mine || rule.is_none() {
            l.lines.push(t.to_string());
            l.rules.push(rule);
        }
    }
    l
}

impl Nft {
    /// Reads tgknock's table (missing: an empty listing).
    fn list(&self) -> Result<String> {
        match run(&self.program, &["list", "table", "inet", TABLE], None) {
            Ok(text) => Ok(text),
            Err(Error::Firewall { stderr, .. }) if stderr.contains("No such file or directory") => {
                Ok(String::new())
            }
            Err(e) => Err(e),
        }
    }

    fn listed(&self, text: &str) -> Vec<(Family, Listing)> {
        self.families
            .iter()
            .map(|f| (*f, parse_listing(text, *f)))
            .collect()
    }
}

impl Tables for Nft {
    fn kind(&self) -> Kind {
        Kind::Nftables
    }

    fn place(&self) -> String {
        format!("table inet {TABLE}")
    }

    fn families(&self) -> Vec<Family> {
        self.families.clone()
    }

    fn observe(&self) -> Vec<(Family, Result<Listing, String>)> {
        let text = self.list().map_err(|e| e.to_string());
        self.families
            .iter()
            .map(|f| (*f, text.clone().map(|t| parse_listing(&t, *f))))
            .collect()
    }

    /// Both families in one transaction.
    fn apply(
        &self,
        policy: &Policy,
        rules_of: &[(Family, Vec<Rule>)],
    ) -> Result<Vec<(Family, Listing)>> {
        // Every family's rules include its established rule, so a family missing from the
        // table, or a rule tgknock did not write, fails the comparison.
        let all_match =
            |l: &[(Family, Listing)]| l.iter().zip(rules_of).all(|((_, l), (_, r))| l.matches(r));
        let before = self.list()?;
        if all_match(&self.listed(&before)) {
            log::debug!("nftables: rules already in place");
            return Ok(self.listed(&before));
        }
        if let Err(e) = run(
            &self.program,
            &["-f", "-"],
            Some(&script(policy, rules_of, false)),
        ) {
            // A set declared differently before (another knock timeout) cannot be
            // redeclared: start the table afresh, still in one transaction.
            log::debug!("nft transaction failed ({e}); retrying with a fresh table");
            run(
                &self.program,
                &["-f", "-"],
                Some(&script(policy, rules_of, true)),
            )?;
        }
        let text = self.list()?;
        let after = self.listed(&text);
        if !all_match(&after) {
            return Err(Error::Verify {
                place: format!("table inet {TABLE}"),
                shows: text.lines().map(str::trim).collect::<Vec<_>>().join("; "),
            });
        }
        log::info!(
            "nftables: table inet {TABLE} now has {} rules",
            after.iter().map(|(_, l)| l.rules.len()).sum::<usize>()
        );
        Ok(after)
    }

    fn teardown(&self) -> Result<Vec<String>> {
        let text = self.list()?;
        if text.trim().is_empty() {
            return Ok(vec![format!(
                "nftables: nothing installed (no table inet {TABLE})"
            )]);
        }
        run(&self.program, &["delete", "table", "inet", TABLE], None)?;
        Ok(vec![format!("nftables: removed table inet {TABLE}")])
    }

    fn check_tools(&self) -> Vec<(bool, String)> {
        vec![
            match run(&self.program, &["--version"], None) {
                Ok(v) => (
                    true,
                    format!("nftables: {} ({})", self.program.display(), v.trim()),
                ),
                Err(e) => (false, format!("nftables: {e}")),
            },
            match run(&self.program, &["list", "tables"], None) {
                Ok(t) => (
                    true,
                    format!(
                        "nftables: can read the ruleset (table inet {TABLE} {})",
                        if t.contains(&format!("table inet {TABLE}")) {
                            "installed"
                        } else {
                            "not installed yet"
                        }
                    ),
                ),
                Err(e) => (
                    false,
                    format!("nftables: cannot read the ruleset, are you root / CAP_NET_ADMIN? {e}"),
                ),
            },
        ]
    }

    fn preview(&self, policy: &Policy, rules_of: &[(Family, Vec<Rule>)]) -> String {
        format!(
            "\nrules ({} -f -):\n{}",
            self.program.display(),
            script(policy, rules_of, false)
        )
    }

    fn probe_deadlines(&self) -> Result<(), String> {
        // Checked by the kernel, never committed (`-c`).
        let probe = "add table inet tgknock_probe\n\
             add chain inet tgknock_probe c\n\
             add rule inet tgknock_probe c meta time < 2000000000 return\n";
        match run(&self.program, &["-c", "-f", "-"], Some(probe)) {
            Ok(_) => Ok(()),
            Err(e) => super::lacks_deadlines(e),
        }
    }

    fn describe_drift(&self, l: &Listing, want: &[Rule]) -> String {
        if !l.chain_exists {
            format!("the table inet {TABLE} (or its input chain) is gone")
        } else {
            format!(
                "the table inet {TABLE}: its rules were changed ({} rules where {} belong)",
                l.rules.len(),
                want.len()
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::rules::desired;
    use crate::firewall::rules::tests::{knock, policy, state};
    use crate::gate::GateName;
    use crate::state::State;

    #[test]
    fn nft_rules_read_like_nft() {
        let mut p = policy(&["10.0.0.0/8"], None);
        p.gates = crate::gate::parse_gates("ssh=22/tcp mosh=60000:61000/udp").unwrap();
        p.knock = Some(crate::firewall::rules::Knock {
            ports: vec![7101, 7102],
            open_for: 30,
            gate: GateName::new("ssh").unwrap(),
        });
        let v4 = desired(&p, &State::default(), 0, Family::V4);
        let text: Vec<String> = v4.iter().map(statement).collect();
        assert_eq!(
            text[0],
            "meta nfproto ipv4 ct state established,related return comment \"4 tgknock:established ct=established return\""
        );
        assert_eq!(
            text[1],
            "meta nfproto ipv4 ip saddr 10.0.0.0/8 return comment \"4 tgknock:always-allow src=10.0.0.0/8 return\""
        );
        assert!(
            text[2].starts_with("meta nfproto ipv4 tcp dport 22 ip saddr @open_v4 return"),
            "{}",
            text[2]
        );
        assert!(
            text[3].starts_with("meta nfproto ipv4 tcp dport 7102 tcp flags & (fin | syn | rst | ack) == syn ip saddr @k1_v4 update @open_v4 { ip saddr } delete @k1_v4 { ip saddr } drop"),
            "{}",
            text[3]
        );
        assert!(text[4].starts_with("meta nfproto ipv4 meta l4proto tcp tcp flags & (fin | syn | rst | ack) == syn ip saddr @k1_v4 delete @k1_v4 { ip saddr } comment"), "{}", text[4]);
        assert!(
            text.last()
                .unwrap()
                .starts_with("meta nfproto ipv4 udp dport 60000-61000 drop")
        );
        let s = script(&p, &[(Family::V4, v4.clone())], false);
        assert!(s.contains(
            "add set inet tgknock k1_v4 { type ipv4_addr; flags dynamic,timeout; timeout 5s; }"
        ));
        assert!(s.contains(
            "add set inet tgknock open_v4 { type ipv4_addr; flags dynamic,timeout; timeout 30s; }"
        ));
        assert!(s.contains("flush chain inet tgknock input\n"));
        // A listing of what nft prints back parses to the same rules.
        let listing: String = format!(
            "table inet tgknock {{\n\tchain input {{\n\t\ttype filter hook input priority filter - 10; policy accept;\n{}\t}}\n}}\n",
            text.iter()
                .map(|t| format!("\t\t{t}\n"))
                .collect::<String>()
        );
        let l = parse_listing(&listing, Family::V4);
        assert!(l.installed() && l.matches(&v4));
        assert!(parse_listing(&listing, Family::V6).rules.is_empty());
    }

    #[test]
    fn keys_round_trip() {
        let s = state(&[
            ("web", Some("203.0.113.0/24"), Some(100)),
            ("mosh", Some("2001:db8::5"), None),
        ]);
        let mut p = policy(&["10.0.0.0/8", "fd00::/8"], Some(knock()));
        let s = crate::firewall::iptables::tests::with_defenses(s, &mut p);
        for fam in Family::BOTH {
            for r in desired(&p, &s, 0, fam) {
                assert!(key(&r).len() <= 128, "{}", key(&r));
                assert_eq!(from_key(&key(&r)).as_ref(), Some(&r), "{}", key(&r));
            }
        }
        let v4 = desired(&p, &s, 0, Family::V4);
        let text: Vec<String> = v4.iter().map(statement).collect();
        assert!(text.contains(&"meta nfproto ipv4 ip saddr 198.51.100.9/32 meta time < 1800000001 drop comment \"4 tgknock:ban src=198.51.100.9/32 until=1800000001 drop\"".to_string()), "{text:#?}");
        assert!(text.contains(&"meta nfproto ipv4 tcp dport 22 tcp flags & (fin | syn | rst | ack) == syn update @lim_ssh_v4 { ip saddr limit rate over 6/minute burst 6 packets } drop comment \"4 tgknock-limit:ssh tcp=22 syn limit=6/min:6 drop\"".to_string()), "{text:#?}");
        let script = script(&p, &[(Family::V4, v4)], false);
        assert!(script.contains("add set inet tgknock lim_web_v4 { type ipv4_addr; flags dynamic,timeout; timeout 3600s; }"), "{script}");
        assert_eq!(from_key("4 tgknock:x bogus"), None);
        assert_eq!(from_key(""), None);
    }
}
