//! The nftables backend: the table `inet tgknock` with one input base chain holding the
//! rules of both families, changed in one `nft -f -` transaction and read back with `nft
//! list table`. Each rule carries its canonical key as its comment, which is how it is
//! recognised; knock lists are dynamic sets with a timeout.
//!
//! Bans are not rules here: a family's bans are the elements of one interval set
//! (`ban_v4`, `ban_v6`), each with the kernel's timeout of its deadline and its key as its
//! comment, matched by one rule where the bans stand in the chain. Rendering collapses the
//! backend-neutral ban rules into those elements, and parsing expands them back, so the
//! views of a listing are the same as with one rule per ban. A change rewrites a set's
//! elements only when the bans differ from the ones listed before it: with 1,000 bans in
//! place, an `/open` sends a few lines. It is verified by reading back what it touched
//! (the chain, the elements added or deleted: [`verify`]), not the 1,000 elements again.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

mod key;
mod render;
mod table;
mod verify;

pub(crate) use key::TABLE;
pub(crate) use render::{script, statement};
pub(crate) use table::{Reference, Table};

use crate::base::addr::Family;
use crate::base::error::{Error, Result};
use crate::firewall::backend::{Backend, Want, Write};
use crate::firewall::rules::{Listing, Rule};
use crate::firewall::tool::{commit, lacks_deadlines, run};
use crate::firewall::watch::{NFPROTO_INET, Watched};
use crate::store::config::{FirewallKind, FirewallSettings};
use table::objects;
use verify::Sent;

#[derive(Debug, Clone)]
pub(crate) struct Nft {
    pub(crate) program: PathBuf,
    pub(crate) families: Vec<Family>,
    /// How nft printed back what this process wrote, to compare the table with whole.
    pub(crate) reference: Arc<Mutex<Reference>>,
}

impl Nft {
    /// Reads tgknock's table (missing: an empty listing), compared with what this process
    /// wrote.
    fn list(&self) -> Result<Table> {
        let mut t = self.list_raw()?;
        self.compare(&mut t);
        Ok(t)
    }

    /// Reads tgknock's table as it is.
    fn list_raw(&self) -> Result<Table> {
        match run(&self.program, &["list", "table", "inet", TABLE], None) {
            Ok(text) => Ok(Table::read(text)),
            Err(Error::Firewall { stderr, .. }) if stderr.contains("No such file or directory") => {
                Ok(Table::default())
            }
            Err(e) => Err(e),
        }
    }

    fn reference(&self) -> std::sync::MutexGuard<'_, Reference> {
        self.reference.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn compare(&self, t: &mut Table) {
        let mut r = self.reference();
        r.unknown = t.compare(&r);
    }

    /// Remembers how nft printed what the `scripts` sent wrote: the chain's rules when one
    /// of them wrote the chain, the sets they declared.
    fn learn(&self, t: &Table, scripts: &[String]) {
        let mut r = self.reference();
        if !r.keep || scripts.is_empty() {
            return;
        }
        let chain_written = scripts
            .iter()
            .any(|s| s.contains(&format!("\nflush chain inet {TABLE} input\n")));
        if chain_written {
            r.rules = t
                .rule_texts()
                .into_iter()
                .map(|(c, text)| (c.to_string(), text))
                .collect();
        }
        let declared = declared(scripts);
        let sets = objects(&t.text);
        if !t.narrow {
            r.sets
                .retain(|n, _| sets.iter().any(|(k, name, _)| *k == "set" && name == n));
        }
        for (kind, name, decl) in sets {
            if kind == "set" && declared.contains(&name) {
                r.sets.insert(name.to_string(), decl);
            }
        }
    }

    /// Whether what the `scripts` wrote can be read back alone: unless the daemon has yet
    /// to learn how nft prints a set they declare (a listing of the whole table shows it).
    fn known(&self, scripts: &[String]) -> bool {
        let r = self.reference();
        !r.keep || declared(scripts).iter().all(|n| r.sets.contains_key(*n))
    }

    /// Sends the script of `want` against `before` (`None`: the table afresh), adding it
    /// to `sent` with what it touched.
    fn send(&self, want: Want<'_>, before: Option<&Table>, sent: &mut Sent) -> Result<()> {
        let (s, touched) = render::render(want.policy, want.rules_of, want.now, before);
        commit(&self.program, &["-f", "-"], Some(&s))?;
        sent.scripts.push(s);
        sent.touched = Some(touched).filter(|t| !t.whole);
        Ok(())
    }

    /// The change from the table as read: against it, or, when it holds a chain or set of
    /// another program's (or a set declared otherwise), the table afresh (still in one
    /// transaction).
    fn change(&self, want: Want<'_>, before: &Table) -> Result<Sent> {
        let mut sent = Sent::default();
        let first = if before.strange.is_empty() {
            self.send(want, Some(before), &mut sent)
        } else {
            self.send(want, None, &mut sent)
        };
        if let Err(e) = first {
            // The table changed under the change (a ban's element the kernel let go at
            // its timeout cannot be deleted): once more against the table as it is now,
            // which keeps the knock lists and the rate meters.
            log::debug!("nft transaction failed ({e}); retrying against the table read again");
            let again = self.list()?;
            if let Err(e) = self.send(want, Some(&again), &mut sent) {
                // A set declared differently before (another knock timeout, a ban set
                // with or without timeouts) cannot be redeclared: start the table afresh,
                // still in one transaction.
                log::debug!("nft transaction failed ({e}); retrying with a fresh table");
                self.send(want, None, &mut sent)?;
            }
            // Not made against the table read before it: read back whole.
            sent.touched = None;
        }
        Ok(sent)
    }
}

/// The names of the sets the `scripts` declare.
fn declared(scripts: &[String]) -> Vec<&str> {
    scripts
        .iter()
        .flat_map(|s| s.lines())
        .filter_map(|l| l.strip_prefix(&format!("add set inet {TABLE} ")))
        .filter_map(|l| l.split(' ').next())
        .collect()
}

impl Backend for Nft {
    type Read = Table;
    type Sent = Sent;
    const KIND: FirewallKind = FirewallKind::Nft;

    /// The families iptables would manage: IPv6 too unless `TGKNOCK_IP6TABLES` is off.
    fn new(f: &FirewallSettings) -> Nft {
        let mut families = vec![Family::V4];
        if f.ip6tables.is_some() {
            families.push(Family::V6);
        }
        Nft {
            program: f.nft.clone(),
            families,
            reference: Default::default(),
        }
    }

    fn present(f: &FirewallSettings) -> bool {
        f.nft.exists()
    }

    fn name(&self) -> &'static str {
        "nftables"
    }

    fn place(&self) -> String {
        format!("table inet {TABLE}")
    }

    fn unit(&self) -> &'static str {
        "table"
    }

    fn label(&self, _tx: &[Family]) -> String {
        "nftables".to_string()
    }

    /// Both families in one transaction.
    fn transactions(&self) -> Vec<Vec<Family>> {
        vec![self.families.clone()]
    }

    fn watched(&self) -> Watched {
        Watched::Nftables {
            tables: vec![(NFPROTO_INET, TABLE.to_string())],
            chains: None,
        }
    }

    fn read(&self, _tx: &[Family]) -> Result<Table> {
        self.list()
    }

    fn listings(&self, table: &Table) -> Vec<(Family, Listing)> {
        self.families
            .iter()
            .map(|f| (*f, table.listing(*f)))
            .collect()
    }

    fn unsure(&self, table: &Table) -> bool {
        table.suspect
    }

    fn write(&self, _tx: &[Family], want: Want<'_>, how: Write<'_, Table>) -> Result<Option<Sent>> {
        match how {
            Write::Change(before) => self.change(want, before).map(Some),
            Write::Again(table) => {
                let mut sent = Sent::default();
                self.send(want, Some(table), &mut sent)?;
                Ok(Some(sent))
            }
        }
    }

    /// Reads back what the last script touched, or else the whole table.
    fn read_written(&self, _tx: &[Family], base: &Table, sent: &Sent) -> Result<Table> {
        let touched = match &sent.touched {
            Some(t) if self.known(&sent.scripts) => verify::read_touched(&self.program, t, base)?,
            _ => None,
        };
        let mut t = match touched {
            Some(t) => t,
            None => self.list_raw()?,
        };
        self.learn(&t, &sent.scripts);
        self.compare(&mut t);
        Ok(t)
    }

    fn shows(&self, _tx: &[Family], table: &Table) -> (String, String) {
        let shows = table.text.lines().map(str::trim).collect::<Vec<_>>();
        (format!("table inet {TABLE}"), shows.join("; "))
    }

    fn remove(&self, _tx: &[Family], table: &Table) -> Result<String> {
        if table.text.trim().is_empty() {
            return Ok(format!(
                "nftables: nothing installed (no table inet {TABLE})"
            ));
        }
        commit(&self.program, &["delete", "table", "inet", TABLE], None)?;
        Ok(format!("nftables: removed table inet {TABLE}"))
    }

    fn show(&self, r: &Rule) -> String {
        statement(r)
    }

    /// The whole script, as to a table without tgknock's rules (a change sends less: what
    /// differs from the table it finds).
    fn preview(&self, want: Want<'_>) -> String {
        format!(
            "\nrules ({} -f -):\n{}",
            self.program.display(),
            script(
                want.policy,
                want.rules_of,
                want.now,
                Some(&Table::default())
            )
        )
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

    fn probe_deadlines(&self) -> Result<(), String> {
        // Checked by the kernel, never committed (`-c`).
        let probe = "add table inet tgknock_probe\n\
             add chain inet tgknock_probe c\n\
             add rule inet tgknock_probe c meta time < 2000000000 return\n";
        match run(&self.program, &["-c", "-f", "-"], Some(probe)) {
            Ok(_) => Ok(()),
            Err(e) => lacks_deadlines(e),
        }
    }

    fn deadline_match(&self) -> &'static str {
        "meta time"
    }

    /// nft's base chain hooks input itself.
    fn reached(&self) -> &'static str {
        ""
    }

    fn keep_reference(&self) {
        self.reference().keep = true;
    }

    fn unverified(&self) -> bool {
        self.reference().unknown
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::key::*;
    use super::render::*;
    use super::table::*;
    use super::*;
    use crate::base::rate::Rate;
    use crate::firewall::rules::Policy;
    use crate::firewall::tool::rule_text;

    /// Parses `nft list table inet tgknock`: the rules of `family`, as [`Table::listing`].
    pub(crate) fn parse_listing(table_text: &str, family: Family) -> Listing {
        Table::read(table_text.to_string()).listing(family)
    }

    fn drift(b: &dyn crate::firewall::protocol::Protocol, l: &Listing, want: &[Rule]) -> String {
        b.describe_drift(l, want)
    }

    /// The table as `nft list table inet tgknock` prints `rules_of` written at `written`:
    /// hosts without their prefix length, the `meta nfproto` a source match implies left
    /// out, a timeout with the time left of it.
    pub(crate) fn listed(rules_of: &[(Family, Vec<Rule>)], written: u64) -> String {
        let host = |t: &str| match t.split_once(" comment \"") {
            Some((head, comment)) => format!(
                "{} comment \"{comment}",
                head.replace("/32 ", " ").replace("/128 ", " ")
            ),
            None => t.to_string(),
        };
        let mut t = String::from("table inet tgknock {\n");
        for (fam, rules) in rules_of {
            let bans: Vec<String> = rules
                .iter()
                .filter(|r| r.is_ban())
                .map(|r| {
                    let e = host(&element(r, written));
                    match e.split_once(" timeout ") {
                        Some((a, rest)) => {
                            let (time, comment) = rest.split_once(' ').unwrap();
                            format!("{a} timeout {time} expires {time} {comment}")
                        }
                        None => e,
                    }
                })
                .collect();
            if bans.is_empty() {
                continue;
            }
            t.push_str(&format!(
                "\tset {} {{\n\t\ttype {}\n\t\tflags interval,timeout\n\t\telements = {{ {} }}\n\t}}\n\n",
                ban_set(*fam),
                addr_type(*fam),
                bans.join(",\n\t\t\t     ")
            ));
        }
        t.push_str(
            "\tchain input {\n\t\ttype filter hook input priority filter - 10; policy accept;\n",
        );
        for (fam, rules) in rules_of {
            let mut set_matched = false;
            for r in rules {
                let text = if r.is_ban() {
                    if std::mem::replace(&mut set_matched, true) {
                        continue;
                    }
                    ban_set_statement(*fam)
                } else {
                    statement(r)
                };
                let text = host(&text);
                let text = text
                    .strip_prefix("meta nfproto ipv4 ")
                    .filter(|t| t.starts_with("ip saddr"))
                    .or_else(|| {
                        text.strip_prefix("meta nfproto ipv6 ")
                            .filter(|t| t.starts_with("ip6 saddr"))
                    })
                    .unwrap_or(&text);
                t.push_str(&format!("\t\t{text}\n"));
            }
        }
        t.push_str("\t}\n}\n");
        t
    }
    use crate::base::gate::GateName;
    use crate::firewall::rules::desired;
    use crate::firewall::rules::tests::{knock, policy, state};
    use crate::store::state::State;

    #[test]
    fn nft_rules_read_like_nft() {
        let mut p = policy(&["10.0.0.0/8"], None);
        p.gates = crate::base::gate::parse_gates("ssh=22/tcp mosh=60000:61000/udp").unwrap();
        p.knock = Some(crate::base::gate::Knock {
            ports: vec![7101, 7102],
            open_for: 30,
            gate: GateName::new("ssh").unwrap(),
        });
        let v4 = desired(&p, &State::default(), 0, Family::V4);
        let text: Vec<String> = v4.iter().map(statement).collect();
        assert_eq!(
            text[0],
            "meta nfproto ipv4 ip saddr 10.0.0.0/8 return comment \"4 tgknock:always-allow src=10.0.0.0/8 return\""
        );
        assert_eq!(
            text[1],
            "meta nfproto ipv4 ct direction reply ct state established,related return comment \"4 tgknock:replies ct=established ct=reply return\""
        );
        assert_eq!(
            text[2],
            "meta nfproto ipv4 ct state established,related return comment \"4 tgknock:established ct=established return\""
        );
        assert!(
            text[3].starts_with("meta nfproto ipv4 tcp dport 22 ip saddr @open_v4 return"),
            "{}",
            text[3]
        );
        assert!(
            text[4].starts_with("meta nfproto ipv4 tcp dport 7102 tcp flags & (fin | syn | rst | ack) == syn ip saddr @k1_v4 update @open_v4 { ip saddr } delete @k1_v4 { ip saddr } drop"),
            "{}",
            text[4]
        );
        assert!(text[5].starts_with("meta nfproto ipv4 meta l4proto tcp tcp flags & (fin | syn | rst | ack) == syn ip saddr @k1_v4 delete @k1_v4 { ip saddr } comment"), "{}", text[5]);
        assert!(
            text.last()
                .unwrap()
                .starts_with("meta nfproto ipv4 udp dport 60000-61000 drop")
        );
        let s = script(&p, &[(Family::V4, v4.clone())], 0, Some(&Table::default()));
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
        let ban = v4.iter().find(|r| r.is_ban()).unwrap();
        assert_eq!(
            element(ban, 1_800_000_000 - 3_661),
            "198.51.100.9/32 timeout 1h1m2s comment \"4 tgknock:ban src=198.51.100.9/32 until=1800000001 drop\""
        );
        assert!(text.contains(&"meta nfproto ipv4 tcp dport 22 tcp flags & (fin | syn | rst | ack) == syn update @lim_ssh_v4 { ip saddr limit rate over 6/minute burst 6 packets } drop comment \"4 tgknock-limit:ssh tcp=22 syn limit=6/min:6 drop\"".to_string()), "{text:#?}");
        // An IPv6 source is its /64, and the key says so: the key of an older tgknock's
        // rule (without it) is not this rule, so the rule is written anew.
        let v6 = desired(&p, &s, 0, Family::V6);
        let limit6 = v6.iter().find(|r| r.limit.is_some()).unwrap();
        assert_eq!(
            statement(limit6),
            "meta nfproto ipv6 tcp dport 22 tcp flags & (fin | syn | rst | ack) == syn update @lim_ssh_v6 { ip6 saddr & ffff:ffff:ffff:ffff:: limit rate over 6/minute burst 6 packets } drop comment \"6 tgknock-limit:ssh tcp=22 syn limit=6/min:6 by=/64 drop\""
        );
        for old in [
            "6 tgknock-limit:ssh tcp=22 syn limit=6/min:6 drop",
            "4 tgknock-limit:ssh tcp=22 syn limit=6/min:6 by=/64 drop",
            "6 tgknock-limit:ssh tcp=22 syn limit=6/min:6 by=/48 drop",
            "6 tgknock-gate:ssh tcp=22 syn by=/64 drop",
        ] {
            assert_eq!(from_key(old), None, "{old}");
        }
        let script = script(
            &p,
            &[(Family::V4, v4), (Family::V6, v6)],
            0,
            Some(&Table::default()),
        );
        for set in ["lim_web_v4 { type ipv4_addr", "lim_web_v6 { type ipv6_addr"] {
            assert!(script.contains(&format!("add set inet tgknock {set}; size 65536; flags dynamic,timeout; timeout 3600s; }}")), "{script}");
        }
        assert_eq!(from_key("4 tgknock:x bogus"), None);
        assert_eq!(from_key(""), None);
    }

    const NOW: u64 = 1_800_000_000;

    /// Each managed family's desired rules for `s` at `now`.
    fn all(p: &Policy, s: &State, now: u64) -> Vec<(Family, Vec<Rule>)> {
        Family::BOTH
            .into_iter()
            .map(|f| (f, desired(p, s, now, f)))
            .collect()
    }

    fn ban(s: &mut State, addr: &str, until: Option<u64>) {
        s.ban(crate::store::state::Ban {
            addr: addr.parse().unwrap(),
            until,
            by: crate::store::state::Actor::Console,
        })
        .unwrap();
    }

    #[test]
    fn bans_are_the_elements_of_one_set_per_family() {
        use crate::firewall::rules::{expected_bans, expected_view};
        let mut p = policy(&["10.0.0.0/8"], None);
        let mut s = crate::firewall::iptables::tests::with_defenses(
            state(&[("ssh", None, Some(NOW + 900))]),
            &mut p,
        );
        ban(&mut s, "203.0.113.0/24", Some(NOW + 86_400 + 3_661));
        let rules_of = all(&p, &s, NOW);
        let text = script(&p, &rules_of, NOW, Some(&Table::default()));
        assert!(
            text.contains(
                "add set inet tgknock ban_v4 { type ipv4_addr; flags interval,timeout; }\n\
                 add set inet tgknock ban_v6 { type ipv6_addr; flags interval,timeout; }\n\
                 flush chain inet tgknock input\n\
                 add element inet tgknock ban_v4 {\n\
                 \t198.51.100.9/32 timeout 1s comment \"4 tgknock:ban src=198.51.100.9/32 until=1800000001 drop\",\n\
                 \t203.0.113.0/24 timeout 1d1h1m1s comment \"4 tgknock:ban src=203.0.113.0/24 until=1800090061 drop\"\n\
                 }\n\
                 add element inet tgknock ban_v6 {\n\
                 \t2001:db8:bad::/48 comment \"6 tgknock:ban src=2001:db8:bad::/48 drop\"\n\
                 }\n"
            ),
            "{text}"
        );
        // One rule per family matches the set, where the bans stand: after the
        // always-allowed rules and the replies to the board's own connections, before the
        // established rule (a ban cuts established connections too) and the rate limits.
        let added: Vec<&str> = text.lines().filter(|l| l.starts_with("add rule")).collect();
        assert!(
            added[0].contains("ip saddr 10.0.0.0/8 return"),
            "{added:#?}"
        );
        assert!(added[1].contains("tgknock:replies"), "{added:#?}");
        assert!(
            added[2].ends_with(
                "meta nfproto ipv4 ip saddr @ban_v4 drop comment \"4 tgknock:ban @ban_v4 drop\""
            ),
            "{added:#?}"
        );
        assert!(added[3].contains("tgknock:established"), "{added:#?}");
        assert!(added[4].contains("tgknock-limit:ssh"), "{added:#?}");
        assert_eq!(text.matches("@ban_v4 drop comment").count(), 1);
        assert_eq!(text.matches("@ban_v6 drop comment").count(), 1);
        assert!(
            !text.contains("meta time < 1800000001"),
            "a ban is no rule of its own"
        );
        // What nft lists back expands to one ban rule per element, in the chain's order.
        let listing = listed(&rules_of, NOW);
        for (fam, rules) in &rules_of {
            let l = parse_listing(&listing, *fam);
            assert!(l.matches(rules), "{fam}: {:#?}\n{listing}", l.rules);
            assert_eq!(l.bans(), expected_bans(&s, NOW, *fam, true));
            for g in &p.gates {
                assert_eq!(
                    l.view(g),
                    expected_view(g, &s, NOW, *fam, true),
                    "{}",
                    g.name
                );
            }
        }
        assert_eq!(parse_listing(&listing, Family::V4).bans().len(), 2);
        // A change that leaves the bans alone leaves the elements alone: their
        // timeouts run on from when they were written.
        let closed = all(
            &p,
            &State {
                openings: Default::default(),
                ..s.clone()
            },
            NOW,
        );
        let again = script(&p, &closed, NOW, Some(&Table::read(listing.clone())));
        assert!(
            !again.lines().any(|l| l.contains("element")
                || l.starts_with("flush set")
                || l.starts_with('\t')
                || l == "}"),
            "{again}"
        );
        // Nor is the base chain declared again (its hook would be registered anew),
        // unless it is hooked otherwise than tgknock declares it.
        assert!(!again.contains("add chain"), "{again}");
        let dropping = listing.replace("policy accept;", "policy drop;");
        let repaired = script(&p, &closed, NOW, Some(&Table::read(dropping)));
        assert!(repaired.contains(&format!("add chain inet tgknock input {{ {HOOK} }}\n")));
        // One ban more: that family's set is rewritten whole (flushed in the same
        // transaction), the other one is not touched.
        let mut more = s.clone();
        ban(&mut more, "192.0.2.7", None);
        let changed = script(
            &p,
            &all(&p, &more, NOW + 30),
            NOW + 30,
            Some(&Table::read(listing.clone())),
        );
        assert!(
            !changed.contains("198.51.100.9"),
            "a ban past its deadline is not written"
        );
        assert!(
            changed.contains("flush set inet tgknock ban_v4\nadd element inet tgknock ban_v4 {\n\t192.0.2.7/32 comment"),
            "{changed}"
        );
        assert!(
            changed.contains("203.0.113.0/24 timeout 1d1h0m31s")
                || changed.contains("203.0.113.0/24 timeout 1d1h31s"),
            "{changed}"
        );
        assert!(!changed.contains("ban_v6 {\n\t"), "{changed}");
        // With no ban near its deadline, a ban and an unban are edits of the set alone:
        // one element added or deleted, the chain and the other elements left as they
        // are.
        let mut fresh = s.clone();
        fresh.bans.retain(|b| b.until.is_none_or(|u| u > NOW + 60));
        let fresh_listing = listed(&all(&p, &fresh, NOW), NOW);
        let mut one_more = fresh.clone();
        ban(&mut one_more, "192.0.2.7", None);
        let added = script(
            &p,
            &all(&p, &one_more, NOW + 1),
            NOW + 1,
            Some(&Table::read(fresh_listing.clone())),
        );
        // What follows the declarations (kept if present) of the sets.
        let after_sets = |script: &str| -> String {
            let decl = "add set inet tgknock ban_v6 { type ipv6_addr; flags interval,timeout; }\n";
            assert!(
                script.starts_with("add table inet tgknock\nadd set "),
                "{script}"
            );
            script.split_once(decl).expect(script).1.to_string()
        };
        assert_eq!(
            after_sets(&added),
            "add element inet tgknock ban_v4 {\n\t192.0.2.7/32 comment \"4 tgknock:ban src=192.0.2.7/32 drop\"\n}\n"
        );
        let lifted = script(
            &p,
            &all(&p, &fresh, NOW + 1),
            NOW + 1,
            Some(&Table::read(listed(&all(&p, &one_more, NOW), NOW))),
        );
        assert_eq!(
            after_sets(&lifted),
            "delete element inet tgknock ban_v4 { 192.0.2.7/32 }\n"
        );
        // A renewal (a new deadline for the same source) deletes and adds it again, in
        // both families at once; the elements around it stay.
        let mut renewed = fresh.clone();
        ban(&mut renewed, "192.0.2.8", Some(NOW + 600));
        ban(&mut renewed, "2001:db8:1::/48", Some(NOW + 600));
        let before = listed(&all(&p, &renewed, NOW), NOW);
        ban(&mut renewed, "192.0.2.8", Some(NOW + 7200));
        ban(&mut renewed, "2001:db8:1::/48", None);
        let edited = after_sets(&script(
            &p,
            &all(&p, &renewed, NOW + 5),
            NOW + 5,
            Some(&Table::read(before.clone())),
        ));
        assert_eq!(
            edited,
            format!(
                "delete element inet tgknock ban_v4 {{ 192.0.2.8/32 }}\n\
                 add element inet tgknock ban_v4 {{\n\t192.0.2.8/32 timeout 1h59m55s comment \"4 tgknock:ban src=192.0.2.8/32 until={} drop\"\n}}\n\
                 delete element inet tgknock ban_v6 {{ 2001:db8:1::/48 }}\n\
                 add element inet tgknock ban_v6 {{\n\t2001:db8:1::/48 comment \"6 tgknock:ban src=2001:db8:1::/48 drop\"\n}}\n",
                NOW + 7200
            )
        );
        // An element at its deadline may be gone from the kernel when the change arrives:
        // then its set is rewritten whole, never edited.
        let mut ending = renewed.clone();
        ban(&mut ending, "192.0.2.9", Some(NOW + 10));
        let before = Table::read(listed(&all(&p, &ending, NOW), NOW));
        let mut one_more = ending.clone();
        ban(&mut one_more, "192.0.2.10", None);
        let at = |now: u64| script(&p, &all(&p, &one_more, now), now, Some(&before));
        assert!(at(NOW + 7).contains("add element inet tgknock ban_v4 {\n\t192.0.2.10/32 comment"));
        assert!(!at(NOW + 7).contains("flush set"));
        assert!(
            at(NOW + 8).contains("flush set inet tgknock ban_v4\n"),
            "{}",
            at(NOW + 8)
        );
        assert!(
            !at(NOW + 8).contains("flush set inet tgknock ban_v6"),
            "{}",
            at(NOW + 8)
        );
        // No bans left: the sets go, after the flush that removed the rules using them.
        let none = all(&p, &State::default(), NOW);
        let gone = script(&p, &none, NOW, Some(&Table::read(listing.clone())));
        assert!(
            gone.contains(
                "flush chain inet tgknock input\ndelete set inet tgknock ban_v4\ndelete set inet tgknock ban_v6\n"
            ),
            "{gone}"
        );
        assert!(!gone.contains("add set inet tgknock ban_"), "{gone}");
        assert!(!script(&p, &none, NOW, Some(&Table::default())).contains("ban_"));
        // A kernel without timeouts: elements without them, a set without the flag.
        p.deadlines = false;
        let plain = script(&p, &all(&p, &s, NOW), NOW, Some(&Table::default()));
        assert!(plain.contains("add set inet tgknock ban_v4 { type ipv4_addr; flags interval; }"));
        assert!(
            plain.contains("\t203.0.113.0/24 comment \"4 tgknock:ban src=203.0.113.0/24 drop\"\n")
        );
        assert!(
            !plain.contains("timeout 1") && !plain.contains("until="),
            "{plain}"
        );
    }

    #[test]
    fn ban_elements_read_back_only_what_tgknock_wrote() {
        let p = policy(&[], None);
        let mut s = State::default();
        ban(&mut s, "198.51.100.9", Some(NOW + 60));
        ban(&mut s, "203.0.113.0/24", None);
        let rules_of = all(&p, &s, NOW);
        let v4 = &rules_of[0].1;
        let good = listed(&rules_of, NOW);
        assert!(good.contains(
            "elements = { 198.51.100.9 timeout 1m expires 1m comment \"4 tgknock:ban src=198.51.100.9/32 until=1800000060 drop\",\n\t\t\t     203.0.113.0/24 comment"
        ), "{good}");
        assert!(parse_listing(&good, Family::V4).matches(v4));
        for (what, from, to) in [
            (
                "another source than its comment",
                "\t\t\t     203.0.113.0/24 comment",
                "\t\t\t     203.0.114.0/24 comment",
            ),
            (
                "a deadline in the comment, no timeout",
                "198.51.100.9 timeout 1m expires 1m comment",
                "198.51.100.9 comment",
            ),
            (
                "a timeout without a deadline",
                "203.0.113.0/24 comment",
                "203.0.113.0/24 timeout 1h comment",
            ),
            (
                "no comment",
                " comment \"4 tgknock:ban src=203.0.113.0/24 drop\"",
                "",
            ),
            (
                "a counter",
                "198.51.100.9 timeout",
                "198.51.100.9 counter packets 0 bytes 0 timeout",
            ),
            (
                "a key of another family",
                "4 tgknock:ban src=198.51.100.9/32",
                "6 tgknock:ban src=198.51.100.9/32",
            ),
        ] {
            let bad = good.replace(from, to);
            assert_ne!(bad, good, "{what}");
            let l = parse_listing(&bad, Family::V4);
            assert_eq!(l.rules.len(), v4.len(), "{what}");
            assert!(l.rules.contains(&None), "{what}: {:?}", l.rules);
            assert!(!l.matches(v4), "{what}");
            assert!(
                matches!(
                    l.view(&p.gates[0]),
                    crate::firewall::rules::GateView::Inconsistent(_)
                ),
                "{what}"
            );
            // What was listed is not what belongs: the set is rewritten.
            let again = script(&p, &rules_of, NOW, Some(&Table::read(bad.clone())));
            assert!(
                again.contains("flush set inet tgknock ban_v4\nadd element"),
                "{what}"
            );
        }
        // A comment may hold commas and braces in its quotes.
        let odd = good.replace(
            " }\n\t}",
            ",\n\t\t\t     192.0.2.1 comment \"{a, b}\" }\n\t}",
        );
        let l = parse_listing(&odd, Family::V4);
        assert_eq!(l.rules.len(), v4.len() + 1, "{:?}", l.lines);
        // Expanded where the set's rule is (after the replies to the board's own
        // connections, before the established rule), the foreign element first.
        assert_eq!(l.rules[0].as_ref(), Some(&v4[0]));
        assert_eq!(v4[0].tag, crate::firewall::rules::TAG_REPLIES);
        assert_eq!(l.rules[1], None);
        assert_eq!(l.lines[1], "@ban_v4 192.0.2.1 comment \"{a, b}\"");
        assert_eq!(
            l.rules[2..4],
            v4[1..3].iter().cloned().map(Some).collect::<Vec<_>>()[..]
        );
        // The set's elements count only where the rule that matches it is.
        let unmatched = good.replace(
            "ip saddr @ban_v4 drop comment \"4 tgknock:ban @ban_v4 drop\"",
            "",
        );
        assert!(parse_listing(&unmatched, Family::V4).bans().is_empty());
        assert!(
            parse_listing(&good, Family::V6)
                .rules
                .iter()
                .all(|r| r.as_ref().is_some_and(|r| r.family == Family::V6))
        );
    }

    #[test]
    fn bans_written_one_rule_each_still_read_as_bans() {
        // A table an earlier tgknock wrote: one rule per ban. It holds the same bans, so
        // nothing is reported as drift; the next change moves them into the set.
        let p = policy(&[], None);
        let mut s = State::default();
        ban(&mut s, "198.51.100.9", Some(NOW + 60));
        let v4 = desired(&p, &s, NOW, Family::V4);
        let old = format!(
            "table inet tgknock {{\n\tchain input {{\n\t\ttype filter hook input priority filter - 10; policy accept;\n{}\t}}\n}}\n",
            v4.iter()
                .map(|r| format!("\t\t{}\n", statement(r)))
                .collect::<String>()
        );
        assert!(old.contains("ip saddr 198.51.100.9/32 meta time < 1800000060 drop"));
        assert!(parse_listing(&old, Family::V4).matches(&v4));
        let next = script(
            &p,
            &[(Family::V4, v4)],
            NOW,
            Some(&Table::read(old.clone())),
        );
        assert!(
            next.contains(
                "add element inet tgknock ban_v4 {\n\t198.51.100.9/32 timeout 1m comment"
            ),
            "{next}"
        );
        assert!(!next.contains("flush set"), "{next}");
    }

    #[test]
    fn times_read_like_nft() {
        for (secs, text) in [
            (0, "0s"),
            (1, "1s"),
            (59, "59s"),
            (60, "1m"),
            (3_600, "1h"),
            (86_400, "1d"),
            (90_061, "1d1h1m1s"),
            (366 * 86_400 + 1, "366d1s"),
            (400_000_000, "4629d15h6m40s"),
        ] {
            assert_eq!(nft_time(secs), text);
        }
    }

    /// `nft list table inet tgknock` as nft 1.0.6 printed what [`recorded`] asks for,
    /// written by tgknock's own script, after a knock's first step and a rate meter's
    /// first entry.
    const RECORDED: &str = include_str!("../../../tests/data/nft-1.0.6-table.txt");

    /// The policy and rules of [`RECORDED`].
    fn recorded() -> (Policy, Vec<(Family, Vec<Rule>)>) {
        let mut p = policy(&["10.0.0.0/8"], Some(knock()));
        p.gates = crate::base::gate::parse_gates("ssh=22/tcp web=80/tcp").unwrap();
        p.limits = vec![(GateName::new("ssh").unwrap(), Rate::parse("6/min").unwrap())];
        let mut s = state(&[("web", None, Some(NOW + 3_600))]);
        ban(&mut s, "198.51.100.9", Some(NOW + 3_600));
        let rules_of = all(&p, &s, NOW);
        (p, rules_of)
    }

    fn backend() -> Nft {
        Nft {
            program: "/nonexistent/nft".into(),
            families: Family::BOTH.to_vec(),
            reference: Default::default(),
        }
    }

    #[test]
    fn a_rule_without_tgknocks_comment_is_another_programs() {
        use crate::firewall::rules::GateView;
        let (p, rules_of) = recorded();
        let t = Table::read(RECORDED.to_string());
        for (f, r) in &rules_of {
            assert!(t.listing(*f).matches(r), "{f:?}");
        }
        let foreign = RECORDED.replace(
            "policy accept;\n",
            "policy accept;\n\t\ttcp dport 22 accept\n",
        );
        let t = Table::read(foreign);
        for (f, r) in &rules_of {
            let l = t.listing(*f);
            assert!(!l.matches(r), "{f:?}");
            assert!(
                matches!(l.view(&p.gates[0]), GateView::Inconsistent(_)),
                "{f:?}: {:?}",
                l.view(&p.gates[0])
            );
            let d = drift(&backend(), &l, r);
            assert_eq!(
                d,
                "the table inet tgknock: a rule tgknock did not write: `tcp dport 22 accept`"
            );
        }
        assert!(script(&p, &rules_of, NOW, Some(&t)).contains("flush chain inet tgknock input\n"));
        // A foreign rule whose comment reads as a key of tgknock's with other white space
        // after its family (a tab, a leading space, two spaces) is seen in its family, or in
        // both, never in neither: no comment hides a rule.
        for comment in [
            "4\tsneak",
            " 4 sneak",
            "4  sneak",
            "6\tsneak",
            "4\u{0b}sneak",
        ] {
            let sneaky = RECORDED.replace(
                "policy accept;\n",
                &format!("policy accept;\n\t\ttcp dport 22 accept comment \"{comment}\"\n"),
            );
            let t = Table::read(sneaky);
            let seen: Vec<bool> = rules_of
                .iter()
                .map(|(f, r)| !t.listing(*f).matches(r))
                .collect();
            assert!(seen.contains(&true), "{comment:?}: hidden in both families");
        }
        // Hooked otherwise: not tgknock's chain as it wrote it.
        let hooked = RECORDED.replace("policy accept;", "policy drop;");
        let l = Table::read(hooked).listing(Family::V4);
        assert!(l.installed() && !l.matches(&rules_of[0].1));
        // A chain of another program's in the table.
        let chain = RECORDED.replacen(
            "\tchain input {",
            "\tchain sneak {\n\t\ttype filter hook input priority filter - 20; policy accept;\n\t\ttcp dport 22 accept\n\t}\n\n\tchain input {",
            1,
        );
        let t = Table::read(chain);
        assert_eq!(t.strange.len(), 1, "{:?}", t.strange);
        assert!(!t.listing(Family::V6).matches(&rules_of[1].1));
        assert!(!script(&p, &rules_of, NOW, Some(&t)).is_empty());
        // The table put to sleep (`nft add table inet tgknock '{ flags dormant; }'`): every
        // rule listed, none enforced. Drift, and the change writes the table afresh.
        let asleep = RECORDED.replacen(
            "table inet tgknock {\n",
            "table inet tgknock {\n\tflags dormant\n\n",
            1,
        );
        assert_ne!(asleep, RECORDED);
        let t = Table::read(asleep);
        assert_eq!(t.strange, ["table flags dormant"]);
        for (k, f) in Family::BOTH.into_iter().enumerate() {
            assert!(!t.listing(f).matches(&rules_of[k].1), "{f:?}");
        }
        assert!(
            Table::read(RECORDED.to_string()).strange.is_empty(),
            "a set's flags are not the table's"
        );
    }

    #[test]
    fn rules_are_compared_without_handles_or_counters() {
        assert_eq!(
            rule_text(
                "\t\tip saddr 10.0.0.0/8 counter packets 12 bytes 3456 return comment \"4 x\" # handle 7"
            ),
            "ip saddr 10.0.0.0/8 return comment \"4 x\""
        );
        assert_eq!(rule_text("tcp dport 22 accept"), "tcp dport 22 accept");
    }

    #[test]
    fn the_daemon_compares_each_rule_with_nfts_own_print() {
        let (p, rules_of) = recorded();
        let nft = backend();
        let check = |text: &str| {
            let mut t = Table::read(text.to_string());
            nft.compare(&mut t);
            t
        };
        // A console command keeps no reference: it compares by the comments only.
        assert!(!check(RECORDED).suspect && !nft.unverified());
        nft.keep_reference();
        // The daemon has written nothing yet: the rules are written once more, silently.
        let t = check(RECORDED);
        assert!(t.suspect && nft.unverified() && t.changed.is_empty());
        for (f, r) in &rules_of {
            assert!(t.listing(*f).matches(r));
        }
        assert!(script(&p, &rules_of, NOW, Some(&t)).contains("flush chain"));
        nft.learn(
            &Table::read(RECORDED.to_string()),
            &[script(&p, &rules_of, NOW, None)],
        );
        let t = check(RECORDED);
        assert!(!t.suspect && !nft.unverified());
        // Traffic: the knock lists and the rate meters fill up and empty, the bans' and
        // the lists' timeouts count down, counters move. None of it is a change.
        let moved = RECORDED
            .replace("expires 2s268ms", "expires 1s2ms")
            .replace(
                "elements = { fd00:: expires 59s976ms }",
                "elements = { fd00:: expires 3s,\n\t\t\t     fd00:0:0:7:: expires 59s }",
            )
            .replace("expires 59m57s256ms", "expires 59m12s")
            .replace(
                "ip saddr 10.0.0.0/8 return",
                "ip saddr 10.0.0.0/8 counter packets 3 bytes 180 return",
            )
            .replace(
                "\t\ttimeout 30s\n\t}",
                "\t\ttimeout 30s\n\t\telements = { 10.1.1.1 expires 29s }\n\t}",
            );
        assert_ne!(moved, RECORDED);
        let t = check(&moved);
        assert!(
            !t.suspect && !nft.unverified(),
            "{:?} {:?}",
            t.changed,
            t.strange
        );
        for (f, r) in &rules_of {
            assert!(t.listing(*f).matches(r));
        }
        // A rule rewritten under tgknock's own comment.
        let changed = RECORDED.replace(
            "meta nfproto ipv4 tcp dport 22 tcp flags syn / fin,syn,rst,ack drop comment",
            "meta nfproto ipv4 tcp dport 22 accept comment",
        );
        let t = check(&changed);
        assert!(t.suspect && t.changed == ["4 tgknock-gate:ssh tcp=22 syn drop"]);
        let l = t.listing(Family::V4);
        assert!(!l.matches(&rules_of[0].1));
        let d = drift(&nft, &l, &rules_of[0].1);
        assert!(
            d.contains(
                "a rule tgknock did not write: `meta nfproto ipv4 tcp dport 22 accept comment"
            ),
            "{d}"
        );
        assert!(t.listing(Family::V6).matches(&rules_of[1].1));
        assert!(script(&p, &rules_of, NOW, Some(&t)).contains("flush chain"));
        // A knock list declared otherwise (a day instead of 30 seconds).
        let t = check(&RECORDED.replacen("timeout 30s", "timeout 1d", 1));
        assert_eq!(t.strange.len(), 1, "{:?}", t.strange);
        assert!(!t.listing(Family::V4).matches(&rules_of[0].1));
        // A rule the daemon did not write (a console `open`): not a change, but written
        // again at the next check to be known.
        let console = RECORDED
            .replace("until=1800003600 return", "until=1800007200 return")
            .replace("2027-01-15 09:00:00", "2027-01-15 10:00:00");
        let t = check(&console);
        assert!(t.suspect && nft.unverified() && t.changed.is_empty());
    }
}
