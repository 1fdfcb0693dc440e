//! tgknock's rules in the kernel: the backend-neutral rules ([`rules`]), the protocol that
//! puts them in place and verifies them ([`protocol`], written once) and the backends it
//! drives, each in its own folder — iptables/ip6tables ([`iptables`]: `iptables-restore
//! --noflush`, one transaction per family) and nftables ([`nft`]: `nft -f -`, one
//! transaction for both families). A backend only reads, renders and writes
//! ([`backend::Backend`]); a new one is a folder (or file) of its own and a line in
//! [`backends`]. Tools are run by [`tool::run`], never through a shell.
//!
//! Inside: `rules` and `tool` below the backends, `backend` and `protocol` above them,
//! this file and `keeper` on top.

pub(crate) mod backend;
#[cfg(test)]
mod golden;
pub(crate) mod iptables;
pub(crate) mod keeper;
pub(crate) mod nft;
pub(crate) mod protocol;
pub(crate) mod rules;
pub(crate) mod tool;
pub(crate) mod watch;

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

use crate::base::addr::Family;
use crate::base::error::{Error, Result};
use crate::store::config::{Config, FirewallKind, FirewallSettings};
use crate::store::state::State;
use backend::Backend;
use backend::Want;
use protocol::Protocol;
use rules::{Listing, Policy, Rule};

/// The backends tgknock has, in the order `TGKNOCK_FIREWALL=auto` tries them: a new
/// backend is one line here.
fn backends() -> Vec<Entry> {
    vec![entry::<iptables::Iptables>(), entry::<nft::Nft>()]
}

/// A backend as [`Firewall::from_config`] chooses it.
struct Entry {
    kind: FirewallKind,
    present: fn(&FirewallSettings) -> bool,
    make: fn(&FirewallSettings) -> Arc<dyn Protocol>,
}

fn entry<B: Backend>() -> Entry {
    Entry {
        kind: B::KIND,
        present: B::present,
        make: |f| Arc::new(B::new(f)),
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
    backend: Arc<dyn Protocol>,
    /// `TGKNOCK_FIREWALL=auto` took another backend than the first, whose tool is missing.
    fallback: bool,
    /// The policy the configuration asks for; [`Firewall::policy`] is the one in force.
    pub(crate) policy: Policy,
    /// What is known of the kernel's deadlines (`Err`: why it cannot keep them): nothing
    /// until a probe, or a change whose rules carry deadlines, tells.
    deadlines: OnceLock<Result<(), String>>,
}

impl Firewall {
    /// The backend `TGKNOCK_FIREWALL` asks for (`auto`: the first of [`backends`] whose
    /// tool exists — iptables, else nft —, else the first, whose absence `check` reports).
    pub(crate) fn from_config(cfg: &Config) -> Firewall {
        let f = &cfg.firewall;
        let all = backends();
        let chosen = match f.kind {
            FirewallKind::Auto => all.iter().position(|e| (e.present)(f)).unwrap_or(0),
            kind => all.iter().position(|e| e.kind == kind).unwrap_or(0),
        };
        Firewall {
            backend: (all[chosen].make)(f),
            fallback: f.kind == FirewallKind::Auto && chosen > 0,
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

    fn tables(&self) -> &dyn Protocol {
        self.backend.as_ref()
    }

    /// The backend's name, for messages: `iptables`, `nftables`.
    pub(crate) fn kind(&self) -> &'static str {
        self.tables().name()
    }

    /// Whether `TGKNOCK_FIREWALL=auto` took a backend other than the first (iptables),
    /// whose tool is missing.
    pub(crate) fn fell_back(&self) -> bool {
        self.fallback
    }

    /// The match that bounds a rule by a deadline, for messages: `-m time`, `meta time`.
    pub(crate) fn deadline_match(&self) -> &'static str {
        self.tables().deadline_match()
    }

    /// How the kernel reaches the rules, for the status: `, reached from INPUT`, or
    /// nothing to say.
    pub(crate) fn reached(&self) -> &'static str {
        self.tables().reached()
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
        match self.tables().apply(Want {
            policy: &policy,
            rules_of: &want,
            now,
        }) {
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
                self.tables().apply(Want {
                    policy: &policy,
                    rules_of: &self.desired_all(&policy, state, now),
                    now,
                })
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

    /// What the backend keeps in the kernel, for [`watch::Watcher`].
    pub(crate) fn watched(&self) -> watch::Watched {
        self.tables().watched()
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
        self.tables().preview(Want {
            policy: &policy,
            rules_of: &self.desired_all(&policy, state, now),
            now,
        })
    }
}

/// The warning when the kernel cannot keep deadlines, `why`: the daemon's log and `check`
/// say it alike.
pub(crate) fn no_deadlines(why: &str) -> String {
    format!(
        "the kernel cannot keep deadlines ({why}): openings close and bans lift by tgknock's own expiry only, so not while it is stopped"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn firewall(kind: &str, iptables: &str, nft: &str) -> Firewall {
        let env: Vec<(String, String)> = [
            ("TGKNOCK_FIREWALL", kind),
            ("TGKNOCK_IPTABLES", iptables),
            ("TGKNOCK_NFT", nft),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        Firewall::from_config(&Config::from_sources(None, &env).expect("a valid configuration"))
    }

    #[test]
    fn the_backend_is_the_one_asked_for_or_the_first_whose_tool_is_there() {
        let (missing, there) = ("/nonexistent/iptables", "/bin/sh");
        let chosen = |kind, ipt, nft| {
            let fw = firewall(kind, ipt, nft);
            (fw.kind(), fw.fell_back())
        };
        assert_eq!(chosen("auto", there, there), ("iptables", false));
        assert_eq!(chosen("auto", missing, there), ("nftables", true));
        assert_eq!(
            chosen("auto", missing, "/nonexistent/nft"),
            ("iptables", false)
        );
        assert_eq!(chosen("nft", there, there), ("nftables", false));
        assert_eq!(chosen("iptables", missing, there), ("iptables", false));
        let nft = firewall("nft", missing, there);
        assert_eq!(
            (nft.place().as_str(), nft.deadline_match(), nft.reached()),
            ("table inet tgknock", "meta time", "")
        );
        let ipt = firewall("iptables", missing, there);
        assert_eq!(
            (ipt.place().as_str(), ipt.deadline_match(), ipt.reached()),
            ("chain TGKNOCK", "-m time", ", reached from INPUT")
        );
    }
}
