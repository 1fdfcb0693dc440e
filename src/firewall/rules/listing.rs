//! What a backend reads back of tgknock's rules in one family, in backend-neutral terms,
//! and the views of it (gates, bans, limits, drift) the status and the keeper show.

use super::rule::{Limit, Rule, TAG_BAN, TAG_KNOCK, Target, gate_tag, limit_tag};
use crate::base::addr::Cidr;
use crate::base::gate::{Gate, PortRange};

/// One way through a gate as the kernel holds it: from a source (`None`: everyone),
/// until the kernel's deadline (`None`: none in the kernel).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Pass {
    pub(crate) from: Option<Cidr>,
    pub(crate) until: Option<u64>,
}

/// What one gate looks like in one family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum GateView {
    Closed,
    /// No rule at all: open to everyone, with no deadline in the kernel.
    OpenToAll,
    /// Open through these passes only (sorted), before the gate's DROP.
    Open(Vec<Pass>),
    /// The chain holds something tgknock would not have written.
    Inconsistent(String),
    /// The chain or its jump is missing: nothing is enforced.
    NotInstalled,
}

/// How the kernel reaches tgknock's rules in one family, as a backend reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) enum Reach {
    /// Nothing of tgknock's is there.
    #[default]
    Gone,
    /// tgknock's rules are not all there, or the kernel does not reach them: what is
    /// wrong, in a few words (a drift message).
    Unreached(String),
    /// Reached, but otherwise than tgknock writes it (twice, not first, hooked
    /// otherwise): how, in a few words.
    Otherwise(String),
    /// Reached as tgknock writes it.
    AsWritten,
}

/// What a backend reads back of tgknock's rules in one family.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Listing {
    /// How the kernel reaches the rules.
    pub(crate) reach: Reach,
    /// The rules as the tool printed them.
    pub(crate) lines: Vec<String>,
    /// Those lines parsed (`None`: a rule tgknock does not recognise).
    pub(crate) rules: Vec<Option<Rule>>,
}

impl Listing {
    /// Whether the rules are in place and reached (however).
    pub(crate) fn installed(&self) -> bool {
        matches!(self.reach, Reach::Otherwise(_) | Reach::AsWritten)
    }

    /// Whether the rules are exactly `rules`, reached as tgknock writes it.
    pub(crate) fn matches(&self, rules: &[Rule]) -> bool {
        self.reach == Reach::AsWritten
            && self.rules.len() == rules.len()
            && self
                .rules
                .iter()
                .zip(rules)
                .all(|(a, b)| a.as_ref() == Some(b))
    }

    /// The listed rules tgknock did not write (or that were changed since), as listed.
    pub(crate) fn foreign(&self) -> Vec<&str> {
        self.lines
            .iter()
            .zip(&self.rules)
            .filter(|(_, r)| r.is_none())
            .map(|(l, _)| l.as_str())
            .collect()
    }

    /// In a few words, how the rules listed differ from `want` (shown by `show`): the rules
    /// tgknock did not write, named, or else the first rule out of place.
    pub(crate) fn differences(&self, want: &[Rule], show: impl Fn(&Rule) -> String) -> String {
        let foreign = self.foreign();
        if let Some(first) = foreign.first() {
            let shown: Vec<String> = foreign.iter().take(3).map(|l| format!("`{l}`")).collect();
            let more = match foreign.len() {
                1..=3 => String::new(),
                n => format!(" and {} more", n - 3),
            };
            return if foreign.len() == 1 {
                format!("a rule tgknock did not write: `{first}`")
            } else {
                format!(
                    "{} rules tgknock did not write: {}{more}",
                    foreign.len(),
                    shown.join(", ")
                )
            };
        }
        let at = self
            .rules
            .iter()
            .zip(want)
            .position(|(a, b)| a.as_ref() != Some(b))
            .unwrap_or(self.rules.len().min(want.len()));
        let counts = format!("{} rules where {} belong", self.rules.len(), want.len());
        match (self.lines.get(at), want.get(at)) {
            (Some(line), Some(w)) => format!(
                "rule {} is `{line}` where `{}` belongs ({counts})",
                at + 1,
                show(w)
            ),
            (Some(line), None) => format!("an extra rule `{line}` ({counts})"),
            (None, Some(w)) => format!("`{}` is missing ({counts})", show(w)),
            (None, None) => format!("its rules were changed ({counts})"),
        }
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
        let mut passes: Vec<Pass> = mine
            .iter()
            .filter(|r| r.target == Some(Target::Return))
            .map(|r| Pass {
                from: r.src,
                until: r.until,
            })
            .collect();
        passes.sort();
        passes.dedup();
        for pass in &passes {
            let ports = mine
                .iter()
                .filter(|r| {
                    r.target == Some(Target::Return) && r.src == pass.from && r.until == pass.until
                })
                .count();
            if ports != gate.ports.len() {
                return GateView::Inconsistent(format!(
                    "{} is open to {} on some of its ports only",
                    gate.name,
                    pass.from.map_or("everyone".to_string(), |c| c.to_string())
                ));
            }
        }
        if passes.is_empty() {
            GateView::Closed
        } else {
            GateView::Open(passes)
        }
    }

    /// The bans the kernel holds: (source, kernel deadline), sorted.
    pub(crate) fn bans(&self) -> Vec<(Cidr, Option<u64>)> {
        let mut bans: Vec<(Cidr, Option<u64>)> = self
            .rules
            .iter()
            .flatten()
            .filter(|r| r.tag == TAG_BAN && r.target == Some(Target::Drop))
            .filter_map(|r| Some((r.src?, r.until)))
            .collect();
        bans.sort();
        bans
    }

    /// The rate limit the kernel holds for `gate`, when every port of it has one.
    pub(crate) fn limit(&self, gate: &Gate) -> Option<Limit> {
        let tag = limit_tag(&gate.name);
        let limits: Vec<(PortRange, Limit)> = self
            .rules
            .iter()
            .flatten()
            .filter(|r| r.tag == tag)
            .filter_map(|r| Some((r.port()?, r.limit?)))
            .collect();
        let first = limits.first()?.1;
        let whole = gate
            .ports
            .iter()
            .all(|p| limits.iter().any(|(q, l)| q == p && *l == first));
        whole.then_some(first)
    }
}
