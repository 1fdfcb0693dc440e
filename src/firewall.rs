//! The shell around the rules: runs `iptables`/`ip6tables` (never through a shell),
//! applies a rule set atomically with `iptables-restore --noflush`, reads it back, and
//! removes it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::addr::Family;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::rules::{self, JumpFix, Listing, Rule};

/// Seconds to wait for the xtables lock before giving up (exit 4 from the tool).
const LOCK_WAIT: &str = "10";

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

/// tgknock's chain in the filter table of each managed family.
#[derive(Debug, Clone)]
pub struct Firewall {
    pub tools: Vec<Tool>,
    pub chain: String,
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
        .env("LC_ALL", "C")
        .spawn()
        .map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::NotFound {
                " (install iptables, or set TGKNOCK_IPTABLES / TGKNOCK_IP6TABLES)"
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

impl Firewall {
    pub fn from_config(cfg: &Config) -> Firewall {
        let mut tools = vec![Tool::new(Family::V4, &cfg.iptables)];
        if let Some(p) = &cfg.ip6tables {
            tools.push(Tool::new(Family::V6, p));
        }
        Firewall {
            tools,
            chain: cfg.chain.clone(),
        }
    }

    pub fn manages(&self, family: Family) -> bool {
        self.tools.iter().any(|t| t.family == family)
    }

    /// Reads the filter table of one family.
    pub fn list(&self, tool: &Tool) -> Result<Listing> {
        let text = run(&tool.program, &["-w", LOCK_WAIT, "-S"], None)?;
        Ok(rules::parse_listing(&self.chain, &text))
    }

    fn restore(&self, tool: &Tool, input: &str) -> Result<()> {
        run(&tool.restore, &["-w", LOCK_WAIT, "--noflush"], Some(input)).map(|_| ())
    }

    /// Replaces the chain's rules in every family, each in one transaction, and checks
    /// the result. On a failure in a later family, the earlier ones are put back as they
    /// were, so the families never disagree and the caller can keep its old state.
    pub fn apply(&self, desired: &dyn Fn(Family) -> Vec<Rule>) -> Result<Vec<(Family, Listing)>> {
        let mut done: Vec<(&Tool, Listing)> = Vec::new();
        let mut after = Vec::new();
        for tool in &self.tools {
            match self.apply_one(tool, &desired(tool.family)) {
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
        let before = self.list(tool)?;
        if before.matches(rules) {
            log::debug!("{}: rules already in place", tool.family.name());
            return Ok((before.clone(), before));
        }
        let input = rules::restore_input(&self.chain, rules, JumpFix::from_listing(&before));
        self.restore(tool, &input)?;
        let now = self.list(tool)?;
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
        match self.restore(tool, &input) {
            Ok(()) => log::warn!("{}: rolled back to the previous rules", tool.family.name()),
            Err(e) => log::error!(
                "{}: could not roll back ({e}); the next change or restart rebuilds the rules",
                tool.family.name()
            ),
        }
    }

    /// Every family's listing (or the error reading it).
    pub fn observe(&self) -> Vec<(Family, Result<Listing>)> {
        self.tools
            .iter()
            .map(|t| (t.family, self.list(t)))
            .collect()
    }

    /// Removes the jump(s) and the chain in every family; says what it did.
    pub fn teardown(&self) -> Result<Vec<String>> {
        let mut report = Vec::new();
        let mut first_error = None;
        for tool in &self.tools {
            let result =
                self.list(tool)
                    .and_then(|l| match rules::teardown_input(&self.chain, &l) {
                        None => Ok(format!(
                            "{}: nothing installed (no chain {})",
                            tool.family.name(),
                            self.chain
                        )),
                        Some(input) => {
                            self.restore(tool, &input)?;
                            Ok(format!(
                                "{}: removed {} jump(s) from INPUT and the chain {} ({} rules)",
                                tool.family.name(),
                                l.jumps,
                                self.chain,
                                l.lines.len()
                            ))
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

    /// The tool's own version line (`iptables v1.8.9 (nf_tables)`), for `check`.
    pub fn version(&self, tool: &Tool) -> Result<String> {
        run(&tool.program, &["--version"], None).map(|s| s.trim().to_string())
    }

    /// The restore input that `apply` would send, for `check`.
    pub fn preview(&self, tool: &Tool, rules: &[Rule]) -> String {
        let fix = self
            .list(tool)
            .map(|l| JumpFix::from_listing(&l))
            .unwrap_or(JumpFix {
                delete: 0,
                insert: true,
            });
        rules::restore_input(&self.chain, rules, fix)
    }
}
