//! The shell around the rules: runs the firewall tools (never through a shell), applies a
//! rule set atomically, reads it back, and removes it. Two backends: iptables/ip6tables
//! (`iptables-restore --noflush`, one transaction per family) and nftables (`nft -f -`, one
//! transaction for both families in the table `inet tgknock`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::addr::Family;
use crate::config::{Config, FirewallKind};
use crate::error::{Error, Result};
use crate::rules::{self, JumpFix, Listing, Policy, Rule};
use crate::state::State;

/// Seconds to wait for the xtables lock before giving up (exit 4 from the tool).
const LOCK_WAIT: &str = "10";
/// The nftables table tgknock owns.
pub const NFT_TABLE: &str = "tgknock";

/// One family's tools: `iptables` and the `iptables-restore` beside it.
#[derive(Debug, Clone)]
pub struct Tool {
    pub family: Family,
    pub program: PathBuf,
    pub restore: PathBuf,
}

impl Tool {
    pub fn new(family: Family, program: &Path) -> Tool {
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
pub enum Backend {
    Iptables { tools: Vec<Tool> },
    Nft { nft: PathBuf, families: Vec<Family> },
}

/// tgknock's rules in the kernel: the policy they follow and the tools that set them.
#[derive(Debug, Clone)]
pub struct Firewall {
    pub backend: Backend,
    /// The iptables chain (`TGKNOCK_CHAIN`).
    pub chain: String,
    pub policy: Policy,
}

/// The result of running a tool: its stdout, or an error carrying its stderr.
fn run(program: &Path, args: &[&str], stdin: Option<&str>) -> Result<String> {
    let fail = |status: Option<i32>, stderr: String| Error::Firewall {
        program: program.display().to_string(),
        arguments: args.iter().map(|a| a.to_string()).collect(),
        status,
        stderr,
    };
    log::debug!("running {} {}", program.display(), args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A cleared environment: the tool never sees the token (TGKNOCK_TOKEN may come
        // from the environment), nor anything else of ours.
        .env_clear()
        .env("LC_ALL", "C")
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .spawn()
        .map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::NotFound {
                " (install iptables or nftables, or set TGKNOCK_IPTABLES / TGKNOCK_IP6TABLES / TGKNOCK_NFT)"
            } else {
                ""
            };
            fail(None, format!("cannot run it: {e}{hint}"))
        })?;
    if let Some(input) = stdin {
        log::trace!("{} input:\n{input}", program.display());
        let mut pipe = child.stdin.take().expect("stdin is piped");
        // A tool that exits early closes the pipe; its exit status tells why.
        let _ = pipe.write_all(input.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| fail(None, format!("cannot wait for it: {e}")))?;
    if !out.status.success() {
        return Err(fail(
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The nft statement text of one rule (its key is its comment).
pub fn nft_rule(r: &Rule) -> String {
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
    let mut tested: Vec<&str> = Vec::new();
    for rc in &r.recent {
        match rc.op {
            rules::RecentOp::Rcheck => {
                p.push(format!("{saddr} @{}", rc.list));
                tested.push(&rc.list);
            }
            rules::RecentOp::Set => p.push(format!("update @{} {{ {saddr} }}", rc.list)),
            rules::RecentOp::Remove => {
                if !tested.contains(&rc.list.as_str()) {
                    p.push(format!("{saddr} @{}", rc.list));
                }
                p.push(format!("delete @{} {{ {saddr} }}", rc.list));
            }
        }
    }
    match r.target {
        Some(rules::Target::Return) => p.push("return".into()),
        Some(rules::Target::Drop) => p.push("drop".into()),
        None => {}
    }
    p.push(format!("comment \"{}\"", r.key()));
    p.join(" ")
}

/// The `nft -f -` script that replaces the table's rules in one transaction. The dynamic
/// sets of the knock fallback are declared (kept if present), so a change of the rules
/// does not forget a knock in progress.
pub fn nft_script(policy: &Policy, rules_of: &[(Family, Vec<Rule>)], fresh: bool) -> String {
    let t = NFT_TABLE;
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
                    policy.list(&format!("k{i}"), *fam),
                    rules::KNOCK_STEP_SECS
                ));
            }
            s.push_str(&format!(
                "add set inet {t} {} {{ type {ty}; flags dynamic,timeout; timeout {}s; }}\n",
                policy.list("open", *fam),
                k.open_for
            ));
        }
    }
    s.push_str(&format!("flush chain inet {t} input\n"));
    for (_, rules) in rules_of {
        for r in rules {
            s.push_str(&format!("add rule inet {t} input {}\n", nft_rule(r)));
        }
    }
    s
}

impl Firewall {
    /// The backend `TGKNOCK_FIREWALL` asks for (`auto`: iptables if its tool exists, else
    /// nft when its tool exists, else iptables, whose absence `check` reports).
    pub fn from_config(cfg: &Config) -> Firewall {
        let use_nft = match cfg.firewall {
            FirewallKind::Iptables => false,
            FirewallKind::Nft => true,
            FirewallKind::Auto => !cfg.iptables.exists() && cfg.nft.exists(),
        };
        let knock = (!cfg.knock.is_empty()).then(|| rules::Knock {
            ports: cfg.knock.clone(),
            open_for: cfg.knock_open_for,
            gate: cfg.knock_gate.clone(),
        });
        let mut families = vec![Family::V4];
        if cfg.ip6tables.is_some() {
            families.push(Family::V6);
        }
        let (backend, list_prefix) = if use_nft {
            (
                Backend::Nft {
                    nft: cfg.nft.clone(),
                    families,
                },
                String::new(),
            )
        } else {
            let mut tools = vec![Tool::new(Family::V4, &cfg.iptables)];
            if let Some(p) = &cfg.ip6tables {
                tools.push(Tool::new(Family::V6, p));
            }
            (Backend::Iptables { tools }, format!("{}_", cfg.chain))
        };
        Firewall {
            backend,
            chain: cfg.chain.clone(),
            policy: Policy {
                gates: cfg.gates.clone(),
                always_allow: cfg.always_allow.clone(),
                knock,
                list_prefix,
            },
        }
    }

    /// `iptables` or `nftables`, for messages.
    pub fn kind(&self) -> &'static str {
        match &self.backend {
            Backend::Iptables { .. } => "iptables",
            Backend::Nft { .. } => "nftables",
        }
    }

    /// Where the rules live, for messages: `chain TGKNOCK` or `table inet tgknock`.
    pub fn place(&self) -> String {
        match &self.backend {
            Backend::Iptables { .. } => format!("chain {}", self.chain),
            Backend::Nft { .. } => format!("table inet {NFT_TABLE}"),
        }
    }

    pub fn desired(&self, state: &State, now: u64, family: Family) -> Vec<Rule> {
        rules::desired(&self.policy, state, now, family)
    }

    /// Reads the filter table of one iptables family.
    fn list_iptables(&self, tool: &Tool) -> Result<Listing> {
        let text = run(&tool.program, &["-w", LOCK_WAIT, "-S"], None)?;
        Ok(rules::parse_listing(&self.chain, &text, tool.family))
    }

    /// Reads tgknock's nft table (missing: an empty listing).
    fn list_nft(&self, nft: &Path) -> Result<String> {
        match run(nft, &["list", "table", "inet", NFT_TABLE], None) {
            Ok(text) => Ok(text),
            Err(Error::Firewall { stderr, .. }) if stderr.contains("No such file or directory") => {
                Ok(String::new())
            }
            Err(e) => Err(e),
        }
    }

    /// Every managed family's listing (or why it could not be read).
    pub fn observe(&self) -> Vec<(Family, Result<Listing, String>)> {
        match &self.backend {
            Backend::Iptables { tools } => tools
                .iter()
                .map(|t| (t.family, self.list_iptables(t).map_err(|e| e.to_string())))
                .collect(),
            Backend::Nft { nft, families } => {
                let text = self.list_nft(nft).map_err(|e| e.to_string());
                families
                    .iter()
                    .map(|f| (*f, text.clone().map(|t| rules::parse_nft_listing(&t, *f))))
                    .collect()
            }
        }
    }

    /// What differs between the kernel and the rules `state` asks for at `now`, one line per
    /// difference (families with the same difference share a line); empty when all is in
    /// place. An unreadable family is an error.
    pub fn drift(&self, state: &State, now: u64) -> Result<Vec<String>> {
        let mut found: Vec<(Vec<&'static str>, String)> = Vec::new();
        for (family, listing) in self.observe() {
            let listing = listing.map_err(Error::Runtime)?;
            let want = self.desired(state, now, family);
            if listing.matches(&want) {
                continue;
            }
            let what = self.describe_drift(&listing, &want);
            match found.iter_mut().find(|(_, w)| *w == what) {
                Some((families, _)) => families.push(family.name()),
                None => found.push((vec![family.name()], what)),
            }
        }
        Ok(found
            .into_iter()
            .map(|(families, what)| format!("{}: {what}", families.join(" and ")))
            .collect())
    }

    fn describe_drift(&self, l: &Listing, want: &[Rule]) -> String {
        let changed = || {
            format!(
                "its rules were changed ({} rules where {} belong)",
                l.rules.len(),
                want.len()
            )
        };
        match &self.backend {
            Backend::Iptables { .. } => {
                let chain = &self.chain;
                if !l.chain_exists {
                    format!("the chain {chain} is gone")
                } else if l.jumps == 0 {
                    format!("the jump from INPUT to the chain {chain} is gone")
                } else if l.jumps > 1 {
                    format!("INPUT jumps to the chain {chain} {} times", l.jumps)
                } else if !l.jump_first {
                    format!("the jump to the chain {chain} is no longer the first rule of INPUT")
                } else {
                    format!("the chain {chain}: {}", changed())
                }
            }
            Backend::Nft { .. } => {
                if !l.chain_exists {
                    format!("the table inet {NFT_TABLE} (or its input chain) is gone")
                } else {
                    format!("the table inet {NFT_TABLE}: {}", changed())
                }
            }
        }
    }

    /// Puts in place the rules `state` asks for at `now`, atomically per transaction, and
    /// checks the result. On a failure nothing is left half done: with iptables an earlier
    /// family is put back; with nft both families are one transaction.
    pub fn apply(&self, state: &State, now: u64) -> Result<Vec<(Family, Listing)>> {
        match &self.backend {
            Backend::Iptables { tools } => self.apply_iptables(tools, state, now),
            Backend::Nft { nft, families } => self.apply_nft(nft, families, state, now),
        }
    }

    fn apply_iptables(
        &self,
        tools: &[Tool],
        state: &State,
        now: u64,
    ) -> Result<Vec<(Family, Listing)>> {
        let mut done: Vec<(&Tool, Listing)> = Vec::new();
        let mut after = Vec::new();
        for tool in tools {
            match self.apply_one(tool, &self.desired(state, now, tool.family)) {
                Ok((before, now)) => {
                    done.push((tool, before));
                    after.push((tool.family, now));
                }
                Err(e) => {
                    for (t, before) in done.iter().rev() {
                        self.roll_back(t, before);
                    }
                    return Err(e);
                }
            }
        }
        Ok(after)
    }

    fn apply_one(&self, tool: &Tool, rules: &[Rule]) -> Result<(Listing, Listing)> {
        let before = self.list_iptables(tool)?;
        if before.matches(rules) {
            log::debug!("{}: rules already in place", tool.family.name());
            return Ok((before.clone(), before));
        }
        let input = rules::restore_input(&self.chain, rules, JumpFix::from_listing(&before));
        run(&tool.restore, &["-w", LOCK_WAIT, "--noflush"], Some(&input))?;
        let now = self.list_iptables(tool)?;
        if !now.matches(rules) {
            self.roll_back(tool, &before);
            return Err(Error::Verify(format!(
                "{} chain {} does not hold the rules just written (it shows: {})",
                tool.family.name(),
                self.chain,
                if now.lines.is_empty() {
                    "nothing".to_string()
                } else {
                    now.lines.join("; ")
                }
            )));
        }
        log::info!(
            "{}: chain {} now has {} rules",
            tool.family.name(),
            self.chain,
            now.lines.len()
        );
        Ok((before, now))
    }

    /// Best effort: put a family's chain back as it was listed.
    fn roll_back(&self, tool: &Tool, before: &Listing) {
        let input = if before.chain_exists {
            rules::restore_lines(&self.chain, &before.lines)
        } else {
            // There was no chain: an empty one, unreached, is as good as none.
            format!("*filter\n:{} - [0:0]\nCOMMIT\n", self.chain)
        };
        match run(&tool.restore, &["-w", LOCK_WAIT, "--noflush"], Some(&input)) {
            Ok(_) => log::warn!("{}: rolled back to the previous rules", tool.family.name()),
            Err(e) => log::error!(
                "{}: could not roll back ({e}); the next change or restart rebuilds the rules",
                tool.family.name()
            ),
        }
    }

    fn apply_nft(
        &self,
        nft: &Path,
        families: &[Family],
        state: &State,
        now: u64,
    ) -> Result<Vec<(Family, Listing)>> {
        let rules_of: Vec<(Family, Vec<Rule>)> = families
            .iter()
            .map(|f| (*f, self.desired(state, now, *f)))
            .collect();
        let listed = |text: &str| -> Vec<(Family, Listing)> {
            families
                .iter()
                .map(|f| (*f, rules::parse_nft_listing(text, *f)))
                .collect()
        };
        // Every family's rules include its established rule, so a family missing from the
        // table, or a rule tgknock did not write, fails the comparison.
        let all_match =
            |l: &[(Family, Listing)]| l.iter().zip(&rules_of).all(|((_, l), (_, r))| l.matches(r));
        let before = self.list_nft(nft)?;
        if all_match(&listed(&before)) {
            log::debug!("nftables: rules already in place");
            return Ok(listed(&before));
        }
        let script = nft_script(&self.policy, &rules_of, false);
        if let Err(e) = run(nft, &["-f", "-"], Some(&script)) {
            // A set declared differently before (another knock timeout) cannot be
            // redeclared: start the table afresh, still in one transaction.
            log::debug!("nft transaction failed ({e}); retrying with a fresh table");
            run(
                nft,
                &["-f", "-"],
                Some(&nft_script(&self.policy, &rules_of, true)),
            )?;
        }
        let text = self.list_nft(nft)?;
        let after = listed(&text);
        if !all_match(&after) {
            return Err(Error::Verify(format!(
                "table inet {NFT_TABLE} does not hold the rules just written (it shows: {})",
                text.lines().map(str::trim).collect::<Vec<_>>().join("; ")
            )));
        }
        log::info!(
            "nftables: table inet {NFT_TABLE} now has {} rules",
            after.iter().map(|(_, l)| l.rules.len()).sum::<usize>()
        );
        Ok(after)
    }

    /// Removes the jump(s) and the chain in every family (or the nft table); says what it
    /// did.
    pub fn teardown(&self) -> Result<Vec<String>> {
        let tools = match &self.backend {
            Backend::Nft { nft, .. } => {
                let text = self.list_nft(nft)?;
                if text.trim().is_empty() {
                    return Ok(vec![format!(
                        "nftables: nothing installed (no table inet {NFT_TABLE})"
                    )]);
                }
                run(nft, &["delete", "table", "inet", NFT_TABLE], None)?;
                return Ok(vec![format!("nftables: removed table inet {NFT_TABLE}")]);
            }
            Backend::Iptables { tools } => tools,
        };
        let mut report = Vec::new();
        let mut first_error = None;
        for tool in tools {
            let result = self.list_iptables(tool).and_then(|l| {
                match rules::teardown_input(&self.chain, &l) {
                    None => Ok(format!(
                        "{}: nothing installed (no chain {})",
                        tool.family.name(),
                        self.chain
                    )),
                    Some(input) => {
                        run(&tool.restore, &["-w", LOCK_WAIT, "--noflush"], Some(&input))?;
                        Ok(format!(
                            "{}: removed {} jump(s) from INPUT and the chain {} ({} rules)",
                            tool.family.name(),
                            l.jumps,
                            self.chain,
                            l.lines.len()
                        ))
                    }
                }
            });
            match result {
                Ok(line) => report.push(line),
                Err(e) => {
                    report.push(format!("{}: {e}", tool.family.name()));
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => {
                for line in &report {
                    log::info!("{line}");
                }
                Err(e)
            }
            None => Ok(report),
        }
    }

    /// `check`'s view of the tools: (ok, line) per tool.
    pub fn check_tools(&self) -> Vec<(bool, String)> {
        let mut out = Vec::new();
        match &self.backend {
            Backend::Iptables { tools } => {
                for tool in tools {
                    let fam = tool.family.name();
                    out.push(match run(&tool.program, &["--version"], None) {
                        Ok(v) => (
                            true,
                            format!("{fam}: {} ({})", tool.program.display(), v.trim()),
                        ),
                        Err(e) => (false, format!("{fam}: {e}")),
                    });
                    out.push((
                        tool.restore.exists(),
                        format!("{fam}: {} exists", tool.restore.display()),
                    ));
                    out.push(match self.list_iptables(tool) {
                        Ok(l) => (
                            true,
                            format!(
                                "{fam}: can read the filter table (chain {} {})",
                                self.chain,
                                if l.installed() { "installed" } else { "not installed yet" }
                            ),
                        ),
                        Err(e) => (
                            false,
                            format!("{fam}: cannot read the filter table, are you root / CAP_NET_ADMIN? {e}"),
                        ),
                    });
                }
            }
            Backend::Nft { nft, .. } => {
                out.push(match run(nft, &["--version"], None) {
                    Ok(v) => (true, format!("nftables: {} ({})", nft.display(), v.trim())),
                    Err(e) => (false, format!("nftables: {e}")),
                });
                out.push(match run(nft, &["list", "tables"], None) {
                    Ok(t) => (
                        true,
                        format!(
                            "nftables: can read the ruleset (table inet {NFT_TABLE} {})",
                            if t.contains(&format!("table inet {NFT_TABLE}")) {
                                "installed"
                            } else {
                                "not installed yet"
                            }
                        ),
                    ),
                    Err(e) => (
                        false,
                        format!(
                            "nftables: cannot read the ruleset, are you root / CAP_NET_ADMIN? {e}"
                        ),
                    ),
                });
            }
        }
        out
    }

    /// What `apply` would send now, for `check`.
    pub fn preview(&self, state: &State, now: u64) -> String {
        match &self.backend {
            Backend::Iptables { tools } => {
                let mut s = String::new();
                for tool in tools {
                    let fix = self
                        .list_iptables(tool)
                        .map(|l| JumpFix::from_listing(&l))
                        .unwrap_or(JumpFix {
                            delete: 0,
                            insert: true,
                        });
                    s.push_str(&format!(
                        "\nrules for {} ({} -w {LOCK_WAIT} --noflush):\n",
                        tool.family.name(),
                        tool.restore.display()
                    ));
                    s.push_str(&rules::restore_input(
                        &self.chain,
                        &self.desired(state, now, tool.family),
                        fix,
                    ));
                }
                s
            }
            Backend::Nft { nft, families } => {
                let rules_of: Vec<(Family, Vec<Rule>)> = families
                    .iter()
                    .map(|f| (*f, self.desired(state, now, *f)))
                    .collect();
                format!(
                    "\nrules ({} -f -):\n{}",
                    nft.display(),
                    nft_script(&self.policy, &rules_of, false)
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::parse_gates;

    #[test]
    fn nft_rules_read_like_nft() {
        let policy = Policy {
            gates: parse_gates("ssh=22/tcp mosh=60000:61000/udp").unwrap(),
            always_allow: vec!["10.0.0.0/8".parse().unwrap()],
            knock: Some(rules::Knock {
                ports: vec![7101, 7102],
                open_for: 30,
                gate: "ssh".into(),
            }),
            list_prefix: String::new(),
        };
        let v4 = rules::desired(&policy, &State::default(), 0, Family::V4);
        let text: Vec<String> = v4.iter().map(nft_rule).collect();
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
        let script = nft_script(&policy, &[(Family::V4, v4.clone())], false);
        assert!(script.contains(
            "add set inet tgknock k1_v4 { type ipv4_addr; flags dynamic,timeout; timeout 5s; }"
        ));
        assert!(script.contains(
            "add set inet tgknock open_v4 { type ipv4_addr; flags dynamic,timeout; timeout 30s; }"
        ));
        assert!(script.contains("flush chain inet tgknock input\n"));
        // A listing of what nft prints back parses to the same rules.
        let listing: String = format!(
            "table inet tgknock {{\n\tchain input {{\n\t\ttype filter hook input priority filter - 10; policy accept;\n{}\t}}\n}}\n",
            text.iter()
                .map(|t| format!("\t\t{t}\n"))
                .collect::<String>()
        );
        let l = rules::parse_nft_listing(&listing, Family::V4);
        assert!(l.installed() && l.matches(&v4));
        assert!(
            rules::parse_nft_listing(&listing, Family::V6)
                .rules
                .is_empty()
        );
    }
}
