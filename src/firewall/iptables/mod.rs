//! The iptables backend: one chain per family (`TGKNOCK_CHAIN`) behind one jump at the top
//! of `INPUT`, changed with one `iptables-restore --noflush` transaction per family and read
//! back with `iptables -S`. Knock lists are `recent` lists named after the chain (they are
//! global to the network namespace).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

mod chain;
mod limit;
mod parse;
mod render;

pub(crate) use chain::Chain;
pub(crate) use parse::{parse_listing, parse_nft_chain};
/// For the daemon's tests, which write a deadline as iptables lists it.
#[cfg_attr(not(test), allow(unused_imports))]
pub(crate) use render::datestop;
#[cfg(test)]
pub(crate) use render::restore_change;
pub(crate) use render::{
    Edit, JumpFix, args, restore_edit, restore_input, restore_lines, teardown_input,
};

use crate::base::addr::Family;
use crate::base::error::{Error, Result};
use crate::firewall::backend::{Backend, Want, Write};
use crate::firewall::rules::{Listing, Rule};
use crate::firewall::tool::{commit, lacks_deadlines, run};
use crate::firewall::watch::{NFPROTO_IPV4, NFPROTO_IPV6, Watched};
use crate::store::config::{FirewallKind, FirewallSettings};

/// Seconds to wait for the xtables lock before giving up (exit 4 from the tool).
const LOCK_WAIT: &str = "10";

/// One family's tools: `iptables` and the `iptables-restore` beside it.
#[derive(Debug, Clone)]
pub(crate) struct Tool {
    pub(crate) family: Family,
    pub(crate) program: PathBuf,
    pub(crate) restore: PathBuf,
}

impl Tool {
    pub(crate) fn new(family: Family, program: &Path) -> Tool {
        let name = program
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Tool {
            family,
            program: program.to_path_buf(),
            restore: program.with_file_name(format!("{name}-restore")),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Iptables {
    pub(crate) chain: String,
    pub(crate) tools: Vec<Tool>,
    /// nftables' own tool, which prints an iptables-nft chain as the kernel holds it.
    pub(crate) nft: PathBuf,
    pub(crate) reference: Arc<Mutex<Reference>>,
}

/// iptables over nf_tables (iptables-nft) translates its rules to nftables and back, and
/// its `-S` is a translation: a rule of two port matches (`-m tcp --dport 9 -m tcp --dport
/// 22`, which never matches) is listed as one (`--dport 22`). The daemon (which keeps the
/// rules) therefore also reads the chain with `nft` and remembers, for each rule it wrote,
/// how `nft` printed it: a rule `-S` lists as tgknock's whose `nft` print differs is
/// another program's. Legacy xtables' `-S` prints the kernel's rules as they are.
#[derive(Debug, Default)]
pub(crate) struct Reference {
    /// The daemon keeps one (see [`Backend::keep_reference`]).
    keep: bool,
    /// The nft tool, when the iptables tools are iptables-nft and it is there.
    nft: Option<PathBuf>,
    /// What `iptables --version` said when the daemon began keeping the rules.
    version: Option<String>,
    /// Per family, each `-S` line tgknock wrote and `nft`'s print of the same rule.
    rules: HashMap<(Family, String), String>,
    /// The families whose last read found rules this process has not written, and where
    /// they are.
    unknown: Vec<(Family, Vec<usize>)>,
}

impl Iptables {
    /// The tool of a transaction's family.
    fn tool(&self, tx: &[Family]) -> Result<&Tool> {
        self.tools
            .iter()
            .find(|t| tx.contains(&t.family))
            .ok_or_else(|| Error::Unreadable {
                place: format!("chain {}", self.chain),
                problem: format!("no iptables tool for {tx:?}"),
            })
    }

    /// Reads the filter table of one family, compared with what this process wrote.
    fn list(&self, tool: &Tool) -> Result<Chain> {
        let mut l = self.list_raw(tool)?;
        let printed = self.nft_print(tool);
        self.compare(tool.family, &mut l, printed.as_deref());
        l.unknown = self.unknown(tool.family);
        Ok(l)
    }

    /// Reads the filter table of one family as it is.
    fn list_raw(&self, tool: &Tool) -> Result<Chain> {
        let text = run(&tool.program, &["-w", LOCK_WAIT, "-S"], None)?;
        Ok(parse_listing(&self.chain, &text, tool.family))
    }

    fn reference(&self) -> std::sync::MutexGuard<'_, Reference> {
        self.reference.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The chain as `nft` prints it, when the daemon compares with it; `None` otherwise,
    /// or when it cannot be read (the comparison is then `-S`'s only).
    fn nft_print(&self, tool: &Tool) -> Option<Vec<String>> {
        let nft = self.reference().nft.clone()?;
        let table = match tool.family {
            Family::V4 => "ip",
            Family::V6 => "ip6",
        };
        match run(&nft, &["list", "chain", table, "filter", &self.chain], None) {
            Ok(text) => Some(parse_nft_chain(&text)),
            Err(e) => {
                log::debug!("{}: cannot read the chain with nft: {e}", tool.family);
                None
            }
        }
    }

    /// Compares a listing with what this process wrote: a rule whose `nft` print differs
    /// from the one it had when written is not tgknock's.
    fn compare(&self, family: Family, l: &mut Listing, printed: Option<&[String]>) {
        let mut r = self.reference();
        r.unknown.retain(|(f, _)| *f != family);
        let Some(printed) = printed.filter(|_| r.keep) else {
            return;
        };
        let mut unknown: Option<Vec<usize>> = None;
        if printed.len() != l.lines.len() {
            // Read while another tgknock process changed the chain: all written again.
            unknown = Some((0..l.lines.len()).collect());
        } else {
            for (i, shown) in printed.iter().enumerate() {
                match r.rules.get(&(family, l.lines[i].clone())) {
                    Some(t) if t == shown => {}
                    Some(_) => {
                        l.lines[i] = format!("{} (nft: {shown})", l.lines[i]);
                        l.rules[i] = None;
                    }
                    None => unknown.get_or_insert_with(Vec::new).push(i),
                }
            }
        }
        if let Some(at) = unknown {
            r.unknown.push((family, at));
        }
    }

    /// Where the last read of `family` found rules this process cannot compare yet.
    fn unknown(&self, family: Family) -> Option<Vec<usize>> {
        let r = self.reference();
        r.unknown
            .iter()
            .find(|(f, _)| *f == family)
            .map(|(_, at)| at.clone())
    }

    /// Remembers how `nft` prints the rules of `l` at `written` (positions), which this
    /// process has just written.
    fn learn(
        &self,
        family: Family,
        l: &Listing,
        printed: Option<&[String]>,
        written: std::ops::Range<usize>,
    ) {
        let Some(printed) = printed.filter(|p| p.len() == l.lines.len()) else {
            return;
        };
        let mut r = self.reference();
        if !r.keep {
            return;
        }
        r.rules
            .retain(|(f, line), _| *f != family || l.lines.contains(line));
        for i in written {
            r.rules
                .insert((family, l.lines[i].clone()), printed[i].clone());
        }
    }

    fn restore(&self, tool: &Tool, input: &str) -> Result<String> {
        commit(&tool.restore, &["-w", LOCK_WAIT, "--noflush"], Some(input))
    }

    /// The change from `before` to `rules`, made in place when it is small: the positions
    /// written, or `None` when an edit in place failed (the chain changed since it was
    /// listed) and refilling it puts that right.
    fn change(&self, tool: &Tool, before: &Chain, rules: &[Rule]) -> Result<Option<Range>> {
        // Rules this process cannot compare whole yet are written again (deleted and
        // inserted in place, or the chain refilled), as if they differed.
        // (Copied only then: with 1,000 bans, a chain is 1,000 rules.)
        let mut target = std::borrow::Cow::Borrowed(before);
        for i in before.unknown.iter().flatten() {
            if let Some(r) = target.to_mut().rules.get_mut(*i) {
                *r = None;
            }
        }
        let edit = Edit::between(&target, rules);
        let change = restore_edit(&self.chain, edit, rules, JumpFix::from_listing(before));
        match self.restore(tool, &change) {
            Ok(_) => Ok(Some(
                edit.map_or(0..rules.len(), |e| e.keep..e.keep + e.insert),
            )),
            // Edits by position fail when another program changed the chain since it was
            // listed (`iptables -F` at that moment): a line of the input failed (exit 1),
            // and the refill puts it right. Anything else (the xtables lock, no
            // permission: exit 4) is told as it is.
            Err(
                e @ Error::Firewall {
                    status: Some(1), ..
                },
            ) if edit.is_some() => {
                log::debug!("{}: the change in place failed ({e})", tool.family);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

/// The positions of the rules a write put in the chain.
type Range = std::ops::Range<usize>;

impl Backend for Iptables {
    type Read = Chain;
    type Sent = Range;
    const KIND: FirewallKind = FirewallKind::Iptables;

    fn new(f: &FirewallSettings) -> Iptables {
        let mut tools = vec![Tool::new(Family::V4, &f.iptables)];
        if let Some(p) = &f.ip6tables {
            tools.push(Tool::new(Family::V6, p));
        }
        Iptables {
            chain: f.chain.clone(),
            tools,
            nft: f.nft.clone(),
            reference: Default::default(),
        }
    }

    fn present(f: &FirewallSettings) -> bool {
        f.iptables.exists()
    }

    fn name(&self) -> &'static str {
        "iptables"
    }

    fn place(&self) -> String {
        format!("chain {}", self.chain)
    }

    fn unit(&self) -> &'static str {
        "chain"
    }

    fn label(&self, tx: &[Family]) -> String {
        let names: Vec<String> = tx.iter().map(Family::to_string).collect();
        names.join(" and ")
    }

    /// One transaction per family.
    fn transactions(&self) -> Vec<Vec<Family>> {
        self.tools.iter().map(|t| vec![t.family]).collect()
    }

    fn read(&self, tx: &[Family]) -> Result<Chain> {
        self.list(self.tool(tx)?)
    }

    fn listings(&self, read: &Chain) -> Vec<(Family, Listing)> {
        vec![(read.family, read.listing.clone())]
    }

    fn unsure(&self, read: &Chain) -> bool {
        read.unknown.is_some()
    }

    fn write(&self, tx: &[Family], want: Want<'_>, how: Write<'_, Chain>) -> Result<Option<Range>> {
        let tool = self.tool(tx)?;
        let rules = want.rules_of.first().map_or(&[][..], |(_, r)| r);
        match how {
            Write::Change(before) => self.change(tool, before, rules),
            Write::Again(again) => {
                let fix = JumpFix::from_listing(again);
                self.restore(tool, &restore_input(&self.chain, rules, fix))?;
                Ok(Some(0..rules.len()))
            }
        }
    }

    /// Reads the chain just written, remembering how nft prints the rules written.
    fn read_written(&self, tx: &[Family], _base: &Chain, written: &Range) -> Result<Chain> {
        let tool = self.tool(tx)?;
        let mut l = self.list_raw(tool)?;
        let printed = self.nft_print(tool);
        self.learn(tool.family, &l, printed.as_deref(), written.clone());
        self.compare(tool.family, &mut l, printed.as_deref());
        l.unknown = self.unknown(tool.family);
        Ok(l)
    }

    /// Puts a family's chain back as it was listed.
    fn roll_back(&self, tx: &[Family], before: &Chain) {
        let Ok(tool) = self.tool(tx) else {
            return;
        };
        let input = if before.exists {
            restore_lines(&self.chain, &before.lines)
        } else {
            // There was no chain: an empty one, unreached, is as good as none.
            format!("*filter\n:{} - [0:0]\nCOMMIT\n", self.chain)
        };
        match self.restore(tool, &input) {
            Ok(_) => log::warn!("{}: rolled back to the previous rules", tool.family),
            Err(e) => log::error!(
                "{}: could not roll back ({e}); the next change or restart rebuilds the rules",
                tool.family
            ),
        }
    }

    fn shows(&self, tx: &[Family], now: &Chain) -> (String, String) {
        let shows = if now.lines.is_empty() {
            "nothing".to_string()
        } else {
            now.lines.join("; ")
        };
        (format!("{} chain {}", self.label(tx), self.chain), shows)
    }

    fn remove(&self, tx: &[Family], l: &Chain) -> Result<String> {
        let tool = self.tool(tx)?;
        match teardown_input(&self.chain, l) {
            None => Ok(format!(
                "{}: nothing installed (no chain {})",
                tool.family, self.chain
            )),
            Some(input) => {
                self.restore(tool, &input)?;
                Ok(format!(
                    "{}: removed {} jump(s) from INPUT and the chain {} ({} rules)",
                    tool.family,
                    l.jumps,
                    self.chain,
                    l.lines.len()
                ))
            }
        }
    }

    fn show(&self, r: &Rule) -> String {
        format!("-A {} {}", self.chain, args(&self.chain, r).join(" "))
    }

    fn preview(&self, want: Want<'_>) -> String {
        let mut s = String::new();
        for (tool, (_, rules)) in self.tools.iter().zip(want.rules_of) {
            let fix = self
                .list(tool)
                .map(|l| JumpFix::from_listing(&l))
                .unwrap_or(JumpFix {
                    delete: 0,
                    insert: true,
                });
            s.push_str(&format!(
                "\nrules for {} ({} -w {LOCK_WAIT} --noflush):\n",
                tool.family,
                tool.restore.display()
            ));
            s.push_str(&restore_input(&self.chain, rules, fix));
        }
        s
    }

    fn check_tools(&self) -> Vec<(bool, String)> {
        self.tools.iter().flat_map(|t| self.check_tool(t)).collect()
    }

    fn probe_deadlines(&self) -> Result<(), String> {
        let Some(tool) = self.tools.first() else {
            return Ok(());
        };
        // `-C` loads the match to look for the rule: "Bad rule" when it could, an error
        // naming the match when the kernel has no xt_time.
        let args = [
            "-w",
            LOCK_WAIT,
            "-C",
            "INPUT",
            "-m",
            "time",
            "--datestop",
            "2037-12-31T00:00:00",
            "-j",
            "RETURN",
        ];
        match run(&tool.program, &args, None) {
            Ok(_) => Ok(()),
            Err(Error::Firewall {
                status: Some(1), ..
            }) => Ok(()),
            Err(e) => lacks_deadlines(e),
        }
    }

    fn deadline_match(&self) -> &'static str {
        "-m time"
    }

    /// An iptables chain is reached by a jump.
    fn reached(&self) -> &'static str {
        ", reached from INPUT"
    }

    fn keep_reference(&self) {
        let version = self
            .tools
            .first()
            .and_then(|t| run(&t.program, &["--version"], None).ok());
        let printer = version
            .as_ref()
            .filter(|v| v.contains("nf_tables") && self.nft.exists())
            .map(|_| self.nft.clone());
        if let Some(p) = &printer {
            log::debug!(
                "iptables over nf_tables: the chain is also read with {}",
                p.display()
            );
        }
        let mut r = self.reference();
        r.keep = true;
        r.nft = printer;
        r.version = version;
    }

    fn unverified(&self) -> bool {
        !self.reference().unknown.is_empty()
    }

    /// iptables-nft's rules are nf_tables objects of the `filter` tables; legacy
    /// iptables' are xtables, which tell nobody of changes.
    fn watched(&self) -> Watched {
        let Some(tool) = self.tools.first() else {
            return Watched::Nothing("no family is managed".into());
        };
        let version = self.reference().version.clone();
        let version = match version {
            Some(v) => v,
            None => match run(&tool.program, &["--version"], None) {
                Ok(v) => v,
                Err(e) => return Watched::Nothing(e.to_string()),
            },
        };
        let nf_tables = if version.contains("nf_tables") {
            true
        } else if version.contains("legacy") {
            false
        } else {
            return Watched::Nothing(format!(
                "{} is neither legacy nor nf_tables: {}",
                tool.program.display(),
                version.trim()
            ));
        };
        // A mix (iptables-legacy with ip6tables-nft) is watched by neither.
        for other in &self.tools[1..] {
            let v = run(&other.program, &["--version"], None).unwrap_or_default();
            if v.contains("nf_tables") != nf_tables {
                return Watched::Nothing(format!(
                    "{} and {} are not of one kind",
                    tool.program.display(),
                    other.program.display()
                ));
            }
        }
        let has = |f| self.tools.iter().any(|t| t.family == f);
        if nf_tables {
            Watched::Nftables {
                tables: self
                    .tools
                    .iter()
                    .map(|t| match t.family {
                        Family::V4 => (NFPROTO_IPV4, "filter".to_string()),
                        Family::V6 => (NFPROTO_IPV6, "filter".to_string()),
                    })
                    .collect(),
                chains: Some(vec!["INPUT".into(), self.chain.clone()]),
            }
        } else {
            Watched::Xtables {
                v4: has(Family::V4),
                v6: has(Family::V6),
                chain: self.chain.clone(),
            }
        }
    }
}

impl Iptables {
    /// `check`'s view of one family's tools.
    fn check_tool(&self, tool: &Tool) -> Vec<(bool, String)> {
        let fam = tool.family;
        vec![
            match run(&tool.program, &["--version"], None) {
                Ok(v) => (
                    true,
                    format!("{fam}: {} ({})", tool.program.display(), v.trim()),
                ),
                Err(e) => (false, format!("{fam}: {e}")),
            },
            (
                tool.restore.exists(),
                format!("{fam}: {} exists", tool.restore.display()),
            ),
            match self.list(tool) {
                Ok(l) => (
                    true,
                    format!(
                        "{fam}: can read the filter table (chain {} {})",
                        self.chain,
                        if l.installed() {
                            "installed"
                        } else {
                            "not installed yet"
                        }
                    ),
                ),
                Err(e) => (
                    false,
                    format!(
                        "{fam}: cannot read the filter table, are you root / CAP_NET_ADMIN? {e}"
                    ),
                ),
            },
        ]
    }
}
#[cfg(test)]
pub(crate) mod tests {
    use super::limit::*;
    use super::parse::*;
    use super::render::*;
    use super::*;
    use crate::base::rate::Rate;
    use crate::firewall::rules::{Limit, METER_ENTRIES};

    fn drift(b: &dyn crate::firewall::protocol::Protocol, l: &Listing, want: &[Rule]) -> String {
        b.describe_drift(l, want)
    }
    use crate::firewall::rules::Policy;
    use crate::firewall::rules::desired;
    use crate::firewall::rules::tests::{cidr, knock, policy, state};
    use crate::store::state::State;

    fn render(rules: &[Rule]) -> Vec<String> {
        rules.iter().map(|r| args("TGKNOCK", r).join(" ")).collect()
    }

    /// A listing as `iptables -S` would print the rules (comments quoted, as it does).
    fn listed(rules: &[Rule]) -> String {
        let mut t = String::from("-P INPUT ACCEPT\n-N TGKNOCK\n-A INPUT -j TGKNOCK\n");
        for r in rules {
            let line = format!("-A TGKNOCK {}", args("TGKNOCK", r).join(" "));
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
                "-s 192.168.0.0/16 -m comment --comment tgknock:always-allow -j RETURN",
                "-m conntrack --ctstate RELATED,ESTABLISHED --ctdir REPLY -m comment --comment tgknock:replies -j RETURN",
                "-m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment tgknock:established -j RETURN",
                "-p tcp -m tcp --dport 22 --tcp-flags FIN,SYN,RST,ACK SYN -m comment --comment tgknock-gate:ssh -j DROP",
                "-p tcp -m tcp --dport 80 --tcp-flags FIN,SYN,RST,ACK SYN -m comment --comment tgknock-gate:web -j DROP",
                "-p tcp -m tcp --dport 443 --tcp-flags FIN,SYN,RST,ACK SYN -m comment --comment tgknock-gate:web -j DROP",
                "-p udp -m udp --dport 60000:61000 -m comment --comment tgknock-gate:mosh -j DROP",
            ]
        );
        let v6 = desired(&p, &State::default(), 0, Family::V6);
        assert_eq!(
            v6.len(),
            6,
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
        let mut p = policy(&[], None);
        let bounded = render(&desired(&p, &s, 50, Family::V4));
        assert_eq!(
            bounded[2..4],
            [
                "-p tcp -m tcp --dport 22 -m time --datestop 1970-01-01T00:01:39 -m comment --comment tgknock-gate:ssh -j RETURN",
                "-p tcp -m tcp --dport 22 --tcp-flags FIN,SYN,RST,ACK SYN -m comment --comment tgknock-gate:ssh -j DROP",
            ],
            "open to everyone until a deadline the kernel keeps: a bounded RETURN before the DROP"
        );
        p.deadlines = false;
        let v4 = render(&desired(&p, &s, 50, Family::V4));
        assert!(
            !v4.iter().any(|l| l.contains("tgknock-gate:ssh")),
            "ssh open, no deadline in the kernel: no rules"
        );
        assert!(v4.contains(&"-s 203.0.113.7/32 -p tcp -m tcp --dport 80 -m comment --comment tgknock-gate:web -j RETURN".to_string()));
        assert!(v4.contains(&"-s 203.0.113.7/32 -p tcp -m tcp --dport 443 -m comment --comment tgknock-gate:web -j RETURN".to_string()));
        let v6 = render(&desired(&p, &s, 50, Family::V6));
        assert!(v6.contains(&"-s 2001:db8::/64 -p tcp -m tcp --dport 80 -m comment --comment tgknock-gate:web -j RETURN".to_string()));
        assert!(!v6.iter().any(|l| l.contains("203.0.113.7")));
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
             -A TGKNOCK -m conntrack --ctstate RELATED,ESTABLISHED --ctdir REPLY -m comment --comment tgknock:replies -j RETURN\n\
             -A TGKNOCK -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment tgknock:established -j RETURN\n\
             -A TGKNOCK -p tcp -m tcp --dport 22 --tcp-flags FIN,SYN,RST,ACK SYN -m comment --comment tgknock-gate:ssh -j DROP\n\
             -D INPUT -j TGKNOCK\n-D INPUT -j TGKNOCK\n-I INPUT 1 -j TGKNOCK\nCOMMIT\n"
        );
    }

    const LISTING: &str = "-P INPUT ACCEPT\n-P FORWARD ACCEPT\n-P OUTPUT ACCEPT\n-N TGKNOCK\n-N f2b-sshd\n\
        -A INPUT -j TGKNOCK\n-A INPUT -p tcp -m multiport --dports 22 -j f2b-sshd\n\
        -A TGKNOCK -s 10.0.0.0/8 -m comment --comment \"tgknock:always-allow\" -j RETURN\n\
        -A TGKNOCK -m conntrack --ctstate RELATED,ESTABLISHED --ctdir REPLY -m comment --comment \"tgknock:replies\" -j RETURN\n\
        -A TGKNOCK -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment \"tgknock:established\" -j RETURN\n\
        -A TGKNOCK -s 203.0.113.7/32 -p tcp -m tcp --dport 22 -m comment --comment \"tgknock-gate:ssh\" -j RETURN\n\
        -A TGKNOCK -p tcp -m tcp --dport 22 --tcp-flags FIN,SYN,RST,ACK SYN -m comment --comment \"tgknock-gate:ssh\" -j DROP\n\
        -A f2b-sshd -j RETURN\n";

    #[test]
    fn parses_a_listing() {
        let l = parse_listing("TGKNOCK", LISTING, Family::V4);
        assert!(l.exists && l.installed());
        assert_eq!((l.jumps, l.jump_first), (1, true));
        assert_eq!(l.lines.len(), 5);
        let mut p = policy(&["10.0.0.0/8"], None);
        p.gates.truncate(1);
        p.deadlines = false;
        assert_eq!(
            l.view(&p.gates[0]),
            crate::firewall::rules::GateView::Open(vec![crate::firewall::rules::Pass {
                from: Some(cidr("203.0.113.7")),
                until: None
            }])
        );
        let s = state(&[("ssh", Some("203.0.113.7"), Some(10))]);
        assert!(l.matches(&desired(&p, &s, 5, Family::V4)));
        assert!(!l.matches(&desired(&p, &s, 10, Family::V4)));
        // With the kernel's deadline, the same opening carries `-m time`.
        p.deadlines = true;
        assert!(!l.matches(&desired(&p, &s, 5, Family::V4)));
        let timed = LISTING.replace(
            "--dport 22 -m comment",
            "--dport 22 -m time --datestop 1970-01-01T00:00:09 -m comment",
        );
        let l = parse_listing("TGKNOCK", &timed, Family::V4);
        assert!(l.matches(&desired(&p, &s, 5, Family::V4)), "{:?}", l.rules);
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
        use crate::firewall::rules::GateView;
        let g = &crate::firewall::rules::tests::gates()[1];
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
        assert_eq!(teardown_input("TGKNOCK", &Chain::new(Family::V4)), None);
    }

    #[test]
    fn knock_rules_check_the_last_step_first() {
        let p = policy(&[], Some(knock()));
        let r = render(&desired(&p, &State::default(), 0, Family::V4));
        let m = "--mask 255.255.255.255 --rsource";
        assert_eq!(
            r[2..8],
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
        assert!(v6[2].contains(
            "--name TGKNOCK_open_v6 --mask ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff --rsource"
        ));
    }

    #[test]
    fn a_rules_matches_are_named_without_rendering_it() {
        let s = state(&[
            ("web", Some("203.0.113.0/24"), Some(100)),
            ("mosh", Some("2001:db8::5"), None),
            ("ssh", None, None),
        ]);
        let mut p = policy(&["10.0.0.0/8", "fd00::/8"], Some(knock()));
        let s = with_defenses(s, &mut p);
        for fam in Family::BOTH {
            let rules = desired(&p, &s, 0, fam);
            assert!(rules.iter().any(|r| r.limit.is_some() && r.until.is_none()));
            assert!(rules.iter().any(|r| !r.recent.is_empty()));
            for r in rules {
                let rendered = args("TGKNOCK", &r);
                assert_eq!(
                    match_names(&r),
                    matches_of(rendered.iter().map(String::as_str)),
                    "{rendered:?}"
                );
            }
        }
    }

    /// Bans (with and without a deadline) and rate limits on top of `s`.
    pub(crate) fn with_defenses(mut s: State, p: &mut Policy) -> State {
        use crate::base::gate::GateName;
        use crate::base::rate::Rate;
        for (addr, until) in [
            ("198.51.100.9", Some(1_800_000_001)),
            ("2001:db8:bad::/48", None),
        ] {
            s.ban(crate::store::state::Ban {
                addr: cidr(addr),
                until,
                by: crate::store::state::Actor::Console,
            })
            .unwrap();
        }
        p.limits = vec![
            (
                crate::base::gate::GateName::new("ssh").unwrap(),
                Rate::parse("6/min").unwrap(),
            ),
            (
                GateName::new("web").unwrap(),
                Rate::parse("120/hour").unwrap(),
            ),
            (
                GateName::new("mosh").unwrap(),
                Rate::parse("60/min").unwrap(),
            ),
        ];
        s
    }

    #[test]
    fn limits_and_deadlines_read_like_iptables() {
        let mut p = policy(&[], None);
        let s = with_defenses(state(&[("ssh", None, Some(1_800_000_900))]), &mut p);
        let r = render(&desired(&p, &s, 1_800_000_000, Family::V4));
        assert_eq!(
            r[1],
            "-s 198.51.100.9/32 -m time --datestop 2027-01-15T08:00:00 -m comment --comment tgknock:ban -j DROP"
        );
        let ssh = Limit::of(Rate::parse("6/min").unwrap());
        let ssh_name = hashlimit_name("TGKNOCK", "tgknock-limit:ssh", &ssh, Family::V4);
        assert_eq!(
            r[3],
            format!(
                "-p tcp -m tcp --dport 22 --tcp-flags FIN,SYN,RST,ACK SYN -m limit --limit 833/sec --limit-burst 10000 -m hashlimit --hashlimit-above 6/min --hashlimit-burst 6 --hashlimit-mode srcip --hashlimit-name {ssh_name} --hashlimit-htable-size 8192 --hashlimit-htable-max 65536 -m comment --comment tgknock-limit:ssh -j DROP"
            )
        );
        // 60/min is written 1/sec with a burst of 60: a source is kept a minute, not
        // iptables' default of a second.
        let mosh = Limit::of(Rate::parse("60/min").unwrap());
        assert!(r.contains(&format!("-p udp -m udp --dport 60000:61000 -m limit --limit 833/sec --limit-burst 10000 -m hashlimit --hashlimit-above 1/sec --hashlimit-burst 60 --hashlimit-mode srcip --hashlimit-name {} --hashlimit-htable-size 8192 --hashlimit-htable-max 65536 --hashlimit-htable-expire 60000 -m comment --comment tgknock-limit:mosh -j DROP", hashlimit_name("TGKNOCK", "tgknock-limit:mosh", &mosh, Family::V4))), "{r:#?}");
        assert!(r.contains(&"-p tcp -m tcp --dport 22 -m time --datestop 2027-01-15T08:14:59 -m comment --comment tgknock-gate:ssh -j RETURN".to_string()), "{r:#?}");
        // IPv6: a source is its /64.
        let v6 = render(&desired(&p, &s, 1_800_000_000, Family::V6));
        assert!(
            v6.iter().any(|l| l.contains("--dport 22 ")
                && l.contains("--hashlimit-htable-max 65536 --hashlimit-srcmask 64 -m comment")),
            "{v6:#?}"
        );
        assert_eq!(datestop(1_800_000_000), "2027-01-15T07:59:59");
        assert_eq!(parse_datestop("2027-01-15T07:59:59"), Some(1_800_000_000));
        assert!(
            ssh_name.starts_with("tgk-ssh-") && ssh_name.len() == 12,
            "{ssh_name}"
        );
        // A table of its own per chain, per setting the kernel keeps with the table, and
        // per family (the mask).
        for other in [
            hashlimit_name("OTHER", "tgknock-limit:ssh", &ssh, Family::V4),
            hashlimit_name("TGKNOCK", "tgknock-limit:ssh", &mosh, Family::V4),
            hashlimit_name("TGKNOCK", "tgknock-limit:ssh", &ssh, Family::V6),
            hashlimit_name(
                "TGKNOCK",
                "tgknock-limit:ssh",
                &Limit::of(Rate::parse("7/min").unwrap()),
                Family::V4,
            ),
        ] {
            assert!(other != ssh_name && other.len() <= 15, "{other}");
        }
        let long = hashlimit_name(
            "TGKNOCK",
            "tgknock-limit:a-very-long-gate",
            &ssh,
            Family::V4,
        );
        assert!(
            long.len() <= 15
                && long
                    != hashlimit_name("OTHER", "tgknock-limit:a-very-long-gate", &ssh, Family::V4)
        );
        // hashlimit's default burst (5) is left out of `-S`; it still parses as 5.
        let five_limit = Limit::of(Rate::parse("5/min").unwrap());
        let five_name = hashlimit_name("TGKNOCK", "tgknock-limit:ssh", &five_limit, Family::V4);
        let five = format!(
            "-N TGKNOCK\n-A INPUT -j TGKNOCK\n-A TGKNOCK -p tcp -m tcp --dport 22 --tcp-flags FIN,SYN,RST,ACK SYN -m limit --limit 833/sec --limit-burst 10000 -m hashlimit --hashlimit-above 5/min --hashlimit-mode srcip --hashlimit-name {five_name} --hashlimit-htable-size 8192 --hashlimit-htable-max 65536 -m comment --comment \"tgknock-limit:ssh\" -j DROP\n"
        );
        let l = parse_listing("TGKNOCK", &five, Family::V4);
        let limit = l.rules[0].as_ref().unwrap().limit.unwrap();
        assert_eq!((limit.rate.to_string(), limit.burst), ("5/min".into(), 5));
        // Another table's name is not tgknock's, nor a table without its size, guard or
        // expiry, nor one of an older tgknock (its name and no table settings).
        for changed in [
            five.replace(&five_name, "f2b"),
            five.replace(" --hashlimit-htable-max 65536", ""),
            five.replace(" --hashlimit-htable-max 65536", " --hashlimit-htable-max 1024"),
            five.replace("-m limit --limit 833/sec --limit-burst 10000 ", ""),
            five.replace("--limit 833/sec", "--limit 1000/sec"),
            five.replace(" -m comment", " --hashlimit-htable-expire 1000 -m comment"),
            five.replace(" -m comment", " --hashlimit-srcmask 24 -m comment"),
            "-N TGKNOCK\n-A INPUT -j TGKNOCK\n-A TGKNOCK -p tcp -m tcp --dport 22 --tcp-flags FIN,SYN,RST,ACK SYN -m hashlimit --hashlimit-above 6/min --hashlimit-burst 6 --hashlimit-mode srcip --hashlimit-name tgk-ssh -m comment --comment \"tgknock-limit:ssh\" -j DROP\n".to_string(),
        ] {
            let other = parse_listing("TGKNOCK", &changed, Family::V4);
            assert_eq!(other.rules[0], None, "{changed}");
        }
        // An expiry written out that equals iptables' default reads the same.
        let explicit = five.replace(" -m comment", " --hashlimit-htable-expire 60000 -m comment");
        assert!(parse_listing("TGKNOCK", &explicit, Family::V4).rules[0].is_some());
    }

    /// However fast a flood of new sources, the guard lets fewer into a gate's hashlimit
    /// within an entry's lifetime (its expiry and a second until the collector runs)
    /// than the table holds, so it never fills; and its rate reads back as written.
    #[test]
    fn the_guard_never_lets_a_table_fill() {
        let mut seen = Vec::new();
        for text in [
            "1/s",
            "5/s",
            "10000/s",
            "6/min",
            "60/min",
            "10000/min",
            "1/hour",
            "2/h",
            "120/hour",
            "1/day",
            "100/day",
            "10000/day",
        ] {
            // A gate's rules (one per port entry) share its table: together their
            // guards never let more sources in than the table holds.
            for shares in 1..=8u32 {
                let l = Limit {
                    shares,
                    ..Limit::of(Rate::parse(text).unwrap())
                };
                let g = Guard::of(&l);
                let rate = limit_rate_text(g.avg);
                assert_eq!(limit_rate_avg(&rate), Some(g.avg), "{text}: {rate}");
                assert_eq!(Guard::shares_of(&l, g.avg, g.burst), Some(shares), "{text}");
                let lifetime = (l.refill_secs() + 1) as f64;
                // xt_limit counts in whole credits a jiffy (its `user2credits`), which
                // makes a fast rate faster by up to a quarter, depending on the HZ.
                for hz in [100u64, 250, 300, 1000] {
                    let cpj = 1u64 << (u64::from(u32::MAX) / (hz * 86_400)).ilog2();
                    let cost = g.avg * hz * cpj / XT_LIMIT_SCALE;
                    let per_sec = (hz * cpj) as f64 / cost as f64;
                    assert!(per_sec >= g.per_sec() * 0.99, "{text} at HZ {hz}");
                    let most = f64::from(shares) * (f64::from(g.burst) + per_sec * lifetime);
                    assert!(
                        most < f64::from(METER_ENTRIES),
                        "{text} x{shares}: {rate} at HZ {hz} lets {most} sources in within {lifetime} s"
                    );
                }
                if shares == 1 {
                    seen.push(format!("{text} {rate}"));
                }
            }
        }
        assert_eq!(
            seen[..6],
            [
                "1/s 10000/sec",
                "5/s 10000/sec",
                "10000/s 10000/sec",
                "6/min 833/sec",
                "60/min 833/sec",
                "10000/min 833/sec"
            ]
        );
        // A limit read back with an absurd burst gets the slowest guard, at once.
        let absurd = Limit {
            rate: Rate::parse("1/day").unwrap(),
            burst: u32::MAX,
            shares: 1,
        };
        assert_eq!(limit_rate_text(Guard::of(&absurd).avg), "1/day");
        let odd = Limit {
            rate: Rate::parse("1/day").unwrap(),
            burst: 7,
            shares: 1,
        };
        let g = Guard::of(&odd);
        assert_eq!(limit_rate_avg(&limit_rate_text(g.avg)), Some(g.avg));
        assert_eq!(limit_rate_text(20_000), "30/min");
        assert_eq!(limit_rate_avg("30/min"), Some(20_000));
        assert_eq!(limit_rate_avg("0/sec"), None);
        assert_eq!(limit_rate_avg("5/fortnight"), None);
    }

    /// A gate's rules share its table and split one guard's budget: read back, each is
    /// tgknock's; a guard written for another number of rules (the gate had fewer
    /// ports) is not, so the chain is written again.
    #[test]
    fn the_rules_of_a_table_share_its_guard() {
        let mut p = policy(&[], None);
        p.limits = vec![
            (
                crate::base::gate::GateName::new("ssh").unwrap(),
                Rate::parse("6/min").unwrap(),
            ),
            (
                crate::base::gate::GateName::new("web").unwrap(),
                Rate::parse("6/min").unwrap(),
            ),
        ];
        let rules = desired(&p, &State::default(), 0, Family::V4);
        let text = listed(&rules);
        assert!(
            text.contains("--limit 833/sec --limit-burst 10000"),
            "{text}"
        );
        assert_eq!(
            text.matches("--limit 416/sec --limit-burst 5000").count(),
            2,
            "{text}"
        );
        let l = parse_listing("TGKNOCK", &text, Family::V4);
        assert!(l.foreign().is_empty() && l.matches(&rules), "{:?}", l.rules);
        let stale = text.replacen(
            "--dport 443 --tcp-flags FIN,SYN,RST,ACK SYN -m limit --limit 416/sec --limit-burst 5000",
            "--dport 443 --tcp-flags FIN,SYN,RST,ACK SYN -m limit --limit 833/sec --limit-burst 10000",
            1,
        );
        assert_ne!(stale, text);
        let l = parse_listing("TGKNOCK", &stale, Family::V4);
        assert_eq!(l.foreign().len(), 1, "{:?}", l.foreign());
        assert!(l.foreign()[0].contains("--dport 443"), "{:?}", l.foreign());
        assert!(!l.matches(&rules));
        // A guard no count of rules writes is not tgknock's either.
        let odd = text.replacen("--limit-burst 5000", "--limit-burst 4000", 1);
        assert_eq!(
            parse_listing("TGKNOCK", &odd, Family::V4).foreign().len(),
            2
        );
    }

    #[test]
    fn a_small_change_is_made_in_place() {
        let mut p = policy(&["192.168.0.0/16"], None);
        p.gates.truncate(1);
        let mut s = State::default();
        for i in 0..1_000 {
            s.ban(crate::store::state::Ban {
                addr: cidr(&format!("198.18.{}.{}", i / 250, i % 250 + 1)),
                until: Some(1_800_003_600),
                by: crate::store::state::Actor::Console,
            })
            .unwrap();
        }
        let now = 1_800_000_000;
        let closed = desired(&p, &s, now, Family::V4);
        let chain = |rules: &[Rule]| parse_listing("TGKNOCK", &listed(rules), Family::V4);
        let in_place = |from: &[Rule], to: &[Rule]| {
            let l = chain(from);
            let input = restore_change("TGKNOCK", &l, to, JumpFix::from_listing(&l));
            // What the fake iptables-restore would make of it.
            let mut lines: Vec<String> = l.lines.clone();
            for line in input.lines() {
                let w: Vec<&str> = line.splitn(4, ' ').collect();
                match w[..] {
                    ["-D", "TGKNOCK", n] => {
                        lines.remove(n.parse::<usize>().unwrap() - 1);
                    }
                    ["-I", "TGKNOCK", n, rule] => {
                        lines.insert(
                            n.parse::<usize>().unwrap() - 1,
                            format!("-A TGKNOCK {rule}"),
                        );
                    }
                    _ => assert!(["*filter", "COMMIT"].contains(&line), "{line}"),
                }
            }
            let after = parse_listing(
                "TGKNOCK",
                &format!("-N TGKNOCK\n-A INPUT -j TGKNOCK\n{}\n", lines.join("\n")),
                Family::V4,
            );
            assert!(after.matches(to), "{input}");
            input
        };
        // /open: one RETURN before the gate's DROP.
        let mut opened = s.clone();
        opened
            .open(
                &crate::base::gate::GateName::new("ssh").unwrap(),
                crate::store::state::Opening {
                    from: None,
                    until: Some(now + 3_600),
                    by: crate::store::state::Actor::Console,
                },
            )
            .unwrap();
        let open = desired(&p, &opened, now, Family::V4);
        let input = in_place(&closed, &open);
        assert_eq!(
            input,
            "*filter\n-I TGKNOCK 1004 -p tcp -m tcp --dport 22 -m time --datestop 2027-01-15T08:59:59 -m comment --comment tgknock-gate:ssh -j RETURN\nCOMMIT\n"
        );
        // /close: that rule deleted, by its position.
        assert_eq!(
            in_place(&open, &closed),
            "*filter\n-D TGKNOCK 1004\nCOMMIT\n"
        );
        // /ban and /unban: one rule among the bans, in their order.
        let mut banned = s.clone();
        banned
            .ban(crate::store::state::Ban {
                addr: cidr("198.18.1.251/32"),
                until: None,
                by: crate::store::state::Actor::Console,
            })
            .unwrap();
        let ban = desired(&p, &banned, now, Family::V4);
        let input = in_place(&closed, &ban);
        assert!(
            input.starts_with("*filter\n-I TGKNOCK 503 -s 198.18.1.251/32 -m comment"),
            "{input}"
        );
        assert_eq!(input.lines().count(), 3);
        assert_eq!(in_place(&ban, &closed), "*filter\n-D TGKNOCK 503\nCOMMIT\n");
        // A rule another program put among them goes, and only it.
        let mut foreign = listed(&closed);
        foreign = foreign.replacen(
            "-A TGKNOCK -s 198.18.0.9/32",
            "-A TGKNOCK -p icmp -j ACCEPT\n-A TGKNOCK -s 198.18.0.9/32",
            1,
        );
        let l = parse_listing("TGKNOCK", &foreign, Family::V4);
        assert_eq!(
            restore_change("TGKNOCK", &l, &closed, JumpFix::from_listing(&l)),
            "*filter\n-D TGKNOCK 11\nCOMMIT\n"
        );
        // Many changes, a missing chain, a small chain rewritten: the chain is refilled.
        let expired = desired(&p, &s, 1_800_003_600, Family::V4);
        let l = chain(&closed);
        assert_eq!(Edit::between(&l, &expired), None);
        assert!(
            restore_change("TGKNOCK", &l, &expired, JumpFix::from_listing(&l))
                .starts_with("*filter\n:TGKNOCK - [0:0]\n")
        );
        assert_eq!(Edit::between(&Chain::new(Family::V4), &closed), None);
        let few = desired(&p, &State::default(), now, Family::V4);
        assert_eq!(Edit::between(&chain(&few[..1]), &few), None);
        // A missing jump is repaired in the same transaction as the edit.
        let unhooked = parse_listing(
            "TGKNOCK",
            &listed(&closed).replace("-A INPUT -j TGKNOCK\n", ""),
            Family::V4,
        );
        assert_eq!(
            restore_change(
                "TGKNOCK",
                &unhooked,
                &open,
                JumpFix::from_listing(&unhooked)
            )
            .lines()
            .skip(2)
            .collect::<Vec<_>>(),
            ["-I INPUT 1 -j TGKNOCK", "COMMIT"]
        );
    }

    #[test]
    fn every_rendered_rule_parses_back() {
        let s = state(&[
            ("web", Some("203.0.113.0/24"), Some(100)),
            ("mosh", Some("2001:db8::5"), None),
            ("ssh", None, Some(50)),
        ]);
        let mut p = policy(&["10.0.0.0/8", "fd00::/8"], Some(knock()));
        let s = with_defenses(s, &mut p);
        for fam in Family::BOTH {
            let rules = desired(&p, &s, 0, fam);
            let l = parse_listing("TGKNOCK", &listed(&rules), fam);
            assert!(l.matches(&rules), "{fam:?}: {:?}", l.rules);
            assert!(l.knock_armed());
            for g in &p.gates {
                assert_eq!(
                    l.view(g),
                    crate::firewall::rules::expected_view(g, &s, 0, fam, true),
                    "{} {fam:?}",
                    g.name
                );
                let rate = p.limits.iter().find(|(n, _)| *n == g.name).unwrap().1;
                assert_eq!(l.limit(g), Some(crate::firewall::rules::Limit::of(rate)));
            }
            assert_eq!(
                l.bans(),
                crate::firewall::rules::expected_bans(&s, 0, fam, true)
            );
            assert_eq!(l.bans().len(), 1);
        }
        // A list of another chain, or of the other family, is not tgknock's.
        let other = listed(&desired(&p, &s, 0, Family::V4)).replace("TGKNOCK_open", "OTHER_open");
        let l = parse_listing("TGKNOCK", &other, Family::V4);
        assert!(l.rules.iter().any(Option::is_none));
    }

    #[test]
    fn a_rule_is_tgknocks_only_as_tgknock_renders_it() {
        let mut p = policy(&[], Some(knock()));
        p.gates.truncate(1);
        let rules = desired(&p, &State::default(), 0, Family::V4);
        let text = listed(&rules);
        let chain = || Iptables {
            chain: "TGKNOCK".into(),
            tools: Vec::new(),
            nft: "/nonexistent/nft".into(),
            reference: Default::default(),
        };
        assert!(parse_listing("TGKNOCK", &text, Family::V4).matches(&rules));
        let drop = "-A TGKNOCK -p tcp -m tcp --dport 22 --tcp-flags FIN,SYN,RST,ACK SYN -m comment --comment \"tgknock-gate:ssh\" -j DROP";
        assert!(text.contains(drop), "{text}");
        // Replaced under the same comment by a DROP that never matches (both ports must
        // match): it reads as port 22, and is not tgknock's.
        let never = "-A TGKNOCK -p tcp -m tcp --dport 9 -m tcp --dport 22 --tcp-flags FIN,SYN,RST,ACK SYN -m comment --comment \"tgknock-gate:ssh\" -j DROP";
        let l = parse_listing("TGKNOCK", &text.replace(drop, never), Family::V4);
        assert!(!l.matches(&rules));
        assert_eq!(l.foreign(), [never]);
        assert!(matches!(
            l.view(&p.gates[0]),
            crate::firewall::rules::GateView::Inconsistent(_)
        ));
        assert_eq!(
            drift(&chain(), &l, &rules),
            format!("the chain TGKNOCK: a rule tgknock did not write: `{never}`")
        );
        // A knock step whose list is set before its port is checked (every SYN would
        // step): the same words in another order.
        let step = "-A TGKNOCK -p tcp -m tcp --dport 7101 --tcp-flags FIN,SYN,RST,ACK SYN -m recent --set --name TGKNOCK_k1_v4 --mask 255.255.255.255 --rsource -m comment --comment \"tgknock:knock\" -j DROP";
        assert!(text.contains(step), "{text}");
        let moved = "-A TGKNOCK -p tcp -m recent --set --name TGKNOCK_k1_v4 --mask 255.255.255.255 --rsource -m tcp --dport 7101 --tcp-flags FIN,SYN,RST,ACK SYN -m comment --comment \"tgknock:knock\" -j DROP";
        let l = parse_listing("TGKNOCK", &text.replace(step, moved), Family::V4);
        assert_eq!(l.foreign(), [moved]);
        // As the issue has it: a RETURN where the DROP was, under the same comment.
        let ret = "-A TGKNOCK -p tcp -m tcp --dport 22 -m comment --comment \"tgknock-gate:ssh\" -j RETURN";
        let l = parse_listing("TGKNOCK", &text.replace(drop, ret), Family::V4);
        assert!(l.foreign().is_empty() && !l.matches(&rules));
        let d = drift(&chain(), &l, &rules);
        assert!(
            d.starts_with(&format!("the chain TGKNOCK: rule {} is `{ret}` where `-A TGKNOCK -p tcp -m tcp --dport 22 --tcp-flags", rules.len())),
            "{d}"
        );
        // A rule added without a comment; one gone.
        let extra = "-A TGKNOCK -p tcp -m tcp --dport 22 -j ACCEPT";
        let l = parse_listing(
            "TGKNOCK",
            &text.replacen("-A TGKNOCK ", &format!("{extra}\n-A TGKNOCK "), 1),
            Family::V4,
        );
        assert_eq!(
            drift(&chain(), &l, &rules),
            format!("the chain TGKNOCK: a rule tgknock did not write: `{extra}`")
        );
        let l = parse_listing(
            "TGKNOCK",
            &text.replace(&format!("{drop}\n"), ""),
            Family::V4,
        );
        assert!(drift(&chain(), &l, &rules).contains("is missing"));
    }

    /// `nft list chain ip filter TGKNOCK` as nft 1.0.6 printed a chain iptables-nft
    /// wrote (counters and all).
    const NFT_PRINT: &str = "table ip filter {
\tchain TGKNOCK {
\t\tct direction reply ct state related,established  counter packets 5 bytes 300 return
\t\tct state related,established  counter packets 7 bytes 420 return
\t\ttcp flags syn / fin,syn,rst,ack tcp dport 7101 xt match recent  counter packets 0 bytes 0 drop
\t\ttcp dport 22 meta time \"1970-01-01 00:00:00\"-\"2027-01-15 08:14:59\"  counter packets 0 bytes 0 return
\t\ttcp flags syn / fin,syn,rst,ack tcp dport 22  counter packets 3 bytes 180 drop
\t}
}
# Warning: table ip filter is managed by iptables-nft, do not touch!
";

    #[test]
    fn iptables_nft_rules_are_compared_with_nfts_print() {
        let printed = parse_nft_chain(NFT_PRINT);
        assert_eq!(
            printed,
            [
                "ct direction reply ct state related,established return",
                "ct state related,established return",
                "tcp flags syn / fin,syn,rst,ack tcp dport 7101 xt match recent drop",
                "tcp dport 22 meta time \"1970-01-01 00:00:00\"-\"2027-01-15 08:14:59\" return",
                "tcp flags syn / fin,syn,rst,ack tcp dport 22 drop",
            ]
        );
        let mut p = policy(&[], None);
        p.gates.truncate(1);
        let rules = desired(&p, &State::default(), 0, Family::V4);
        let text = listed(&rules);
        let ipt = Iptables {
            chain: "TGKNOCK".into(),
            tools: Vec::new(),
            nft: "/nonexistent/nft".into(),
            reference: Default::default(),
        };
        let two = vec![printed[0].clone(), printed[1].clone(), printed[4].clone()];
        let read = |shown: &[String]| {
            let mut l = parse_listing("TGKNOCK", &text, Family::V4);
            ipt.compare(Family::V4, &mut l, Some(shown));
            l
        };
        // A console command compares with `-S` only.
        assert!(read(&two).matches(&rules) && !ipt.unverified());
        ipt.reference().keep = true;
        // The daemon has not written these: written again, silently, to be known.
        assert!(read(&two).matches(&rules) && ipt.unverified());
        assert_eq!(ipt.unknown(Family::V4), Some(vec![0, 1, 2]));
        let l = parse_listing("TGKNOCK", &text, Family::V4);
        // Only the first written (an edit in place): the other one only is written again.
        ipt.learn(Family::V4, &l, Some(&two), 0..1);
        assert!(read(&two).matches(&rules) && ipt.unverified());
        assert_eq!(ipt.unknown(Family::V4), Some(vec![1, 2]));
        ipt.learn(Family::V4, &l, Some(&two), 1..3);
        // Counters moved: the same.
        let moved: Vec<String> =
            parse_nft_chain(&NFT_PRINT.replace("packets 3 bytes 180", "packets 9 bytes 540"));
        let same = vec![moved[0].clone(), moved[1].clone(), moved[4].clone()];
        assert!(read(&same).matches(&rules) && !ipt.unverified());
        // The DROP, listed by `-S` as tgknock's, is two port matches in the kernel.
        let never = vec![
            printed[0].clone(),
            printed[1].clone(),
            "tcp dport 9 tcp flags syn / fin,syn,rst,ack tcp dport 22 drop".to_string(),
        ];
        let l = read(&never);
        assert!(!l.matches(&rules) && !ipt.unverified());
        assert_eq!(l.foreign().len(), 1);
        assert!(
            drift(&ipt, &l, &rules)
                .ends_with("(nft: tcp dport 9 tcp flags syn / fin,syn,rst,ack tcp dport 22 drop)`"),
            "{}",
            drift(&ipt, &l, &rules)
        );
        // nft and -S list different numbers of rules (read while the chain changed).
        assert!(read(&two[..2]).matches(&rules) && ipt.unverified());
    }
}
