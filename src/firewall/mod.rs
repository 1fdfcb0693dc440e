//! tgknock's rules in the kernel: the backend-neutral rules ([`rules`]) and the two
//! backends that put them in place, each in its own file — iptables/ip6tables
//! ([`iptables`]: `iptables-restore --noflush`, one transaction per family) and nftables
//! ([`nft`]: `nft -f -`, one transaction for both families). Tools are run here, never
//! through a shell, with a cleared environment.

#[cfg(test)]
mod golden;
pub(crate) mod iptables;
pub(crate) mod keeper;
pub(crate) mod nft;
pub(crate) mod rules;

use std::borrow::Cow;
use std::fmt;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::base::addr::Family;
use crate::base::error::{Error, Result};
use crate::store::config::{Config, FirewallKind};
use crate::store::state::State;
use iptables::{Iptables, Tool};
use nft::Nft;
use rules::{Listing, Policy, Rule};

/// What a backend does; [`Firewall`] holds one of the closed set in [`Backend`].
pub(crate) trait Tables {
    fn kind(&self) -> Kind;
    /// Where the rules live, for messages: `chain TGKNOCK`, `table inet tgknock`.
    fn place(&self) -> String;
    /// The families it manages, in order.
    fn families(&self) -> Vec<Family>;
    /// Every managed family's listing (or why it could not be read).
    fn observe(&self) -> Vec<(Family, Result<Listing, String>)>;
    /// Puts `rules_of` (one entry per family, in order) in place atomically and checks
    /// the result; on a failure nothing is left half done. `now` is when the rules are
    /// written (nft's set elements count their timeouts from it).
    fn apply(
        &self,
        policy: &Policy,
        rules_of: &[(Family, Vec<Rule>)],
        now: u64,
    ) -> Result<Vec<(Family, Listing)>>;
    /// Removes everything tgknock installed; says what it did.
    fn teardown(&self) -> Result<Vec<String>>;
    /// `check`'s view of the tools: (ok, line) each.
    fn check_tools(&self) -> Vec<(bool, String)>;
    /// What `apply` would send now, for `check`.
    fn preview(&self, policy: &Policy, rules_of: &[(Family, Vec<Rule>)], now: u64) -> String;
    /// What differs between a listing and the rules it should hold, in a few words.
    fn describe_drift(&self, listing: &Listing, want: &[Rule]) -> String;
    /// From now on, remembers how the tool prints back what this process writes, and
    /// compares what is read with it (the daemon, which keeps the rules).
    fn keep_reference(&self) {}
    /// Whether the last read found rules another tgknock process wrote, which this one
    /// cannot compare yet (see [`Firewall::unverified`]).
    fn unverified(&self) -> bool {
        false
    }
    /// Whether the kernel can bound rules by a deadline (`Err`: why not). A probe that
    /// cannot tell (the tool is missing, no permission) says yes: applying tells the rest.
    fn probe_deadlines(&self) -> Result<(), String>;
}

/// The reason a probe of the kernel's deadlines failed, when the failure says the kernel
/// lacks the feature (rather than, say, the tool being missing).
pub(crate) fn lacks_deadlines(e: Error) -> Result<(), String> {
    match e {
        Error::Firewall {
            status: Some(_),
            stderr,
            ..
        } if stderr.contains("time") || stderr.contains("not supported") => {
            Err(stderr.trim().to_string())
        }
        _ => Ok(()),
    }
}

/// The backends tgknock has.
#[derive(Debug, Clone)]
pub(crate) enum Backend {
    Iptables(Iptables),
    Nft(Nft),
}

/// Which kind of backend, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Iptables,
    Nftables,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Iptables => "iptables",
            Kind::Nftables => "nftables",
        })
    }
}

/// tgknock's rules in the kernel: the policy they follow and the backend that sets them.
///
/// Whether the kernel keeps deadlines is asked once per process, and only when it matters:
/// the daemon and `check` ask at start ([`Firewall::probe`]); a console change puts its
/// rules in place with deadlines and asks only when that fails ([`Firewall::apply`]), so
/// `tgknock open` does not pay a probe (an `nft -c` is 10–15 ms) on a kernel that has them.
#[derive(Debug, Clone)]
pub(crate) struct Firewall {
    backend: Backend,
    /// The policy the configuration asks for; [`Firewall::policy`] is the one in force.
    pub(crate) policy: Policy,
    /// What is known of the kernel's deadlines (`Err`: why it cannot keep them): nothing
    /// until a probe, or a change whose rules carry deadlines, tells.
    deadlines: OnceLock<Result<(), String>>,
}

impl Firewall {
    /// The backend `TGKNOCK_FIREWALL` asks for (`auto`: iptables if its tool exists, else
    /// nft when its tool exists, else iptables, whose absence `check` reports).
    pub(crate) fn from_config(cfg: &Config) -> Firewall {
        let f = &cfg.firewall;
        let use_nft = match f.kind {
            FirewallKind::Iptables => false,
            FirewallKind::Nft => true,
            FirewallKind::Auto => !f.iptables.exists() && f.nft.exists(),
        };
        let backend = if use_nft {
            let mut families = vec![Family::V4];
            if f.ip6tables.is_some() {
                families.push(Family::V6);
            }
            Backend::Nft(Nft {
                program: f.nft.clone(),
                families,
                reference: Default::default(),
            })
        } else {
            let mut tools = vec![Tool::new(Family::V4, &f.iptables)];
            if let Some(p) = &f.ip6tables {
                tools.push(Tool::new(Family::V6, p));
            }
            Backend::Iptables(Iptables {
                chain: f.chain.clone(),
                tools,
                nft: f.nft.clone(),
                reference: Default::default(),
            })
        };
        Firewall {
            backend,
            policy: Policy {
                gates: cfg.gates.clone(),
                always_allow: f.always_allow.clone(),
                knock: cfg.knock.clone(),
                limits: cfg.rate_limits.clone(),
                deadlines: true,
            },
            deadlines: OnceLock::new(),
        }
    }

    /// Asks the kernel whether it keeps deadlines (`xt_time`, nft's `meta time`), unless
    /// that is known already; without, rules carry none and only the daemon's expiry
    /// closes openings.
    pub(crate) fn probe(&self) {
        if self.deadlines.get().is_none() {
            let _ = self.deadlines.set(self.tables().probe_deadlines());
        }
    }

    /// Whether the rules carry deadlines: unless the kernel is known to lack them (or the
    /// policy turns them off).
    pub(crate) fn deadlines(&self) -> bool {
        self.policy.deadlines && self.deadline_problem().is_none()
    }

    /// Why the kernel cannot keep deadlines, when that is known ([`no_deadlines`] says
    /// what follows).
    pub(crate) fn deadline_problem(&self) -> Option<&str> {
        match self.deadlines.get() {
            Some(Err(why)) => Some(why),
            _ => None,
        }
    }

    /// Settles what a report on `listings` says of deadlines: a rule in the kernel that
    /// carries one shows the kernel keeps them; otherwise the probe asks.
    pub(crate) fn settle(&self, listings: &[(Family, Result<Listing, String>)]) {
        if self.deadlines.get().is_some() {
            return;
        }
        let seen = listings
            .iter()
            .filter_map(|(_, l)| l.as_ref().ok())
            .flat_map(|l| l.rules.iter().flatten())
            .any(|r| r.until.is_some());
        if seen {
            let _ = self.deadlines.set(Ok(()));
        } else {
            self.probe();
        }
    }

    /// The policy in force: without deadlines when the kernel cannot keep them.
    pub(crate) fn policy(&self) -> Cow<'_, Policy> {
        if self.deadlines() == self.policy.deadlines {
            Cow::Borrowed(&self.policy)
        } else {
            let mut p = self.policy.clone();
            p.deadlines = false;
            Cow::Owned(p)
        }
    }

    fn tables(&self) -> &dyn Tables {
        match &self.backend {
            Backend::Iptables(b) => b,
            Backend::Nft(b) => b,
        }
    }

    pub(crate) fn kind(&self) -> Kind {
        self.tables().kind()
    }

    /// Where the rules live, for messages: `chain TGKNOCK` or `table inet tgknock`.
    pub(crate) fn place(&self) -> String {
        self.tables().place()
    }

    /// The families it manages, in order.
    pub(crate) fn families(&self) -> Vec<Family> {
        self.tables().families()
    }

    pub(crate) fn desired(&self, state: &State, now: u64, family: Family) -> Vec<Rule> {
        rules::desired(&self.policy(), state, now, family)
    }

    fn desired_all(&self, policy: &Policy, state: &State, now: u64) -> Vec<(Family, Vec<Rule>)> {
        self.tables()
            .families()
            .into_iter()
            .map(|f| (f, rules::desired(policy, state, now, f)))
            .collect()
    }

    /// Every managed family's listing (or why it could not be read).
    pub(crate) fn observe(&self) -> Vec<(Family, Result<Listing, String>)> {
        self.tables().observe()
    }

    /// Puts in place the rules `state` asks for at `now`, atomically per transaction, and
    /// checks the result. On a failure nothing is left half done.
    ///
    /// When nobody has asked the kernel yet whether it keeps deadlines, rules that carry
    /// some are tried as they are: their success says it does. Their failure has the probe
    /// ask; a kernel without deadlines then gets the rules without them (and the process
    /// says so once), any other failure is returned as it was.
    pub(crate) fn apply(&self, state: &State, now: u64) -> Result<Vec<(Family, Listing)>> {
        let policy = self.policy();
        let want = self.desired_all(&policy, state, now);
        let bounded = want.iter().flat_map(|(_, r)| r).any(|r| r.until.is_some());
        match self.tables().apply(&policy, &want, now) {
            Ok(listings) => {
                if bounded {
                    let _ = self.deadlines.set(Ok(()));
                }
                Ok(listings)
            }
            Err(e) if bounded && self.deadlines.get().is_none() => {
                self.probe();
                let Some(why) = self.deadline_problem() else {
                    return Err(e);
                };
                log::warn!("{}", no_deadlines(why));
                let policy = self.policy();
                self.tables()
                    .apply(&policy, &self.desired_all(&policy, state, now), now)
            }
            Err(e) => Err(e),
        }
    }

    /// What differs between the kernel and the rules `state` asks for at `now`, one line per
    /// difference (families with the same difference share a line); empty when all is in
    /// place. An unreadable family is an error.
    pub(crate) fn drift(&self, state: &State, now: u64) -> Result<Vec<String>> {
        self.drift_at(state, &[now])
    }

    /// As [`Firewall::drift`], where the kernel may show the rules `state` asks for at any
    /// of `times` (the first is what a difference is described against): while deadlines
    /// are due, the rules as written before them, or with some of them already ended.
    pub(crate) fn drift_at(&self, state: &State, times: &[u64]) -> Result<Vec<String>> {
        let mut found: Vec<(Vec<Family>, String)> = Vec::new();
        for (family, listing) in self.observe() {
            let listing = listing.map_err(|problem| Error::Unreadable {
                place: format!("the {family} {}", self.place()),
                problem,
            })?;
            let mut wants = times.iter().map(|t| self.desired(state, *t, family));
            let Some(want) = wants.next() else {
                continue;
            };
            if listing.matches(&want) || wants.any(|w| listing.matches(&w)) {
                continue;
            }
            let what = self.tables().describe_drift(&listing, &want);
            match found.iter_mut().find(|(_, w)| *w == what) {
                Some((families, _)) => families.push(family),
                None => found.push((vec![family], what)),
            }
        }
        Ok(found
            .into_iter()
            .map(|(families, what)| {
                let names: Vec<String> = families.iter().map(Family::to_string).collect();
                format!("{}: {what}", names.join(" and "))
            })
            .collect())
    }

    /// From now on, compares what is read with the tool's own print of what this process
    /// wrote, not only with what the rules say they are (the daemon: see `nft::Reference`).
    pub(crate) fn keep_reference(&self) {
        self.tables().keep_reference();
    }

    /// Whether the last [`Firewall::drift`] found rules that another tgknock process wrote
    /// (a console command) and this one cannot compare whole yet: writing them once more
    /// (the same rules) makes them known.
    pub(crate) fn unverified(&self) -> bool {
        self.tables().unverified()
    }

    /// Removes the jump(s) and the chain in every family (or the nft table); says what it
    /// did.
    pub(crate) fn teardown(&self) -> Result<Vec<String>> {
        self.tables().teardown()
    }

    /// `check`'s view of the tools: (ok, line) per check.
    pub(crate) fn check_tools(&self) -> Vec<(bool, String)> {
        self.tables().check_tools()
    }

    /// What `apply` would send now, for `check`.
    pub(crate) fn preview(&self, state: &State, now: u64) -> String {
        let policy = self.policy();
        self.tables()
            .preview(&policy, &self.desired_all(&policy, state, now), now)
    }
}

/// The warning when the kernel cannot keep deadlines, `why`: the daemon's log and `check`
/// say it alike.
pub(crate) fn no_deadlines(why: &str) -> String {
    format!(
        "the kernel cannot keep deadlines ({why}): openings close and bans lift by tgknock's own expiry only, so not while it is stopped"
    )
}

/// The result of running a tool: its stdout, or an error carrying its stderr.
pub(crate) fn run(program: &Path, args: &[&str], stdin: Option<&str>) -> Result<String> {
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
