//! The firewall protocol, written once for every [`Backend`]: a change reads the rules
//! back, writes what differs, reads again to verify, writes once more when another program
//! changed them meanwhile, and fails (putting back what it found) when they still differ.
//! A change of several transactions (iptables: one per family) puts back the ones made
//! when a later one fails.

use std::fmt;

use super::backend::{Backend, Want, Write};
use super::rules::{Listing, Reach, Rule};
use crate::base::addr::Family;
use crate::base::error::{Error, Result};

/// A backend with the protocol around it: what a [`super::Firewall`] holds.
pub(crate) trait Protocol: fmt::Debug + Send + Sync {
    fn name(&self) -> &'static str;
    fn place(&self) -> String;
    /// The families it manages, in order.
    fn families(&self) -> Vec<Family>;
    /// Every managed family's listing (or why it could not be read).
    fn observe(&self) -> Vec<(Family, Result<Listing, String>)>;
    /// Puts `want` in place, transaction by transaction, and verifies it; on a failure
    /// nothing is left half done.
    fn apply(&self, want: Want<'_>) -> Result<Vec<(Family, Listing)>>;
    /// Removes everything tgknock installed; says what it did.
    fn teardown(&self) -> Result<Vec<String>>;
    /// What differs between a listing and the rules it should hold, in a few words.
    fn describe_drift(&self, listing: &Listing, want: &[Rule]) -> String;
    fn preview(&self, want: Want<'_>) -> String;
    fn check_tools(&self) -> Vec<(bool, String)>;
    fn probe_deadlines(&self) -> Result<(), String>;
    fn deadline_match(&self) -> &'static str;
    fn reached(&self) -> &'static str;
    fn keep_reference(&self);
    fn unverified(&self) -> bool;
    fn watched(&self) -> super::watch::Watched;
}

/// The transactions of `b` with the part of `want` each one writes (`want` holds one
/// entry per family of the backend, in order).
fn parts<'a, B: Backend>(b: &B, want: Want<'a>) -> Vec<(Vec<Family>, Want<'a>)> {
    let mut at = 0;
    b.transactions()
        .into_iter()
        .map(|tx| {
            let end = (at + tx.len()).min(want.rules_of.len());
            let rules_of = &want.rules_of[at.min(end)..end];
            at = end;
            (tx, Want { rules_of, ..want })
        })
        .collect()
}

/// Whether the listings of a read hold exactly the rules of `want`. Every family's rules
/// include its established rule, so a family missing, or a rule tgknock did not write,
/// fails the comparison.
fn all_match(listings: &[(Family, Listing)], want: Want<'_>) -> bool {
    listings.len() == want.rules_of.len()
        && listings
            .iter()
            .zip(want.rules_of)
            .all(|((_, l), (_, r))| l.matches(r))
}

/// What a read shows, family by family.
type Listings = Vec<(Family, Listing)>;

/// One transaction: read, write, verify, write once more, fail. Returns what was read
/// before it (to put back should a later transaction fail) and the listings after it (each
/// read's listings are made once: with 1,000 bans, one is 1,000 rules).
fn apply_one<B: Backend>(b: &B, tx: &[Family], want: Want<'_>) -> Result<(B::Read, Listings)> {
    let label = b.label(tx);
    let before = b.read(tx)?;
    let listed = b.listings(&before);
    if all_match(&listed, want) && !b.unsure(&before) {
        log::debug!("{label}: rules already in place");
        return Ok((before, listed));
    }
    // A write, then the read after it with its listings (made once).
    let write = |how: Write<'_, B::Read>, base: &B::Read| -> Result<Option<(B::Read, Listings)>> {
        Ok(match b.write(tx, want, how)? {
            Some(sent) => {
                let a = b.read_written(tx, base, &sent)?;
                let l = b.listings(&a);
                Some((a, l))
            }
            None => None,
        })
    };
    let mut after = write(Write::Change(&before), &before)?;
    if !after.as_ref().is_some_and(|(_, l)| all_match(l, want)) {
        // Another program changed the rules while this change was made (`iptables -F`,
        // `nft flush ruleset` at that moment, or the tool of a daemon killed mid-change
        // finishing late): once more, refilled against them as they are now.
        log::info!(
            "{label}: the {} changed while it was being changed; writing it again",
            b.unit()
        );
        let again = b.read(tx)?;
        after = write(Write::Again(&again), &again)?;
    }
    let listed = match after {
        Some((_, l)) if all_match(&l, want) => l,
        Some((a, _)) => return Err(unverified(b, tx, &before, &a)),
        None => {
            let a = b.read(tx)?;
            return Err(unverified(b, tx, &before, &a));
        }
    };
    let rules: usize = listed.iter().map(|(_, l)| l.lines.len()).sum();
    log::info!("{label}: {} now has {rules} rules", b.place());
    Ok((before, listed))
}

/// A change that could not be verified: put back, and said.
fn unverified<B: Backend>(b: &B, tx: &[Family], before: &B::Read, after: &B::Read) -> Error {
    b.roll_back(tx, before);
    let (place, shows) = b.shows(tx, after);
    Error::Verify { place, shows }
}

impl<B: Backend> Protocol for B {
    fn name(&self) -> &'static str {
        Backend::name(self)
    }

    fn place(&self) -> String {
        Backend::place(self)
    }

    fn families(&self) -> Vec<Family> {
        self.transactions().into_iter().flatten().collect()
    }

    fn observe(&self) -> Vec<(Family, Result<Listing, String>)> {
        let mut out = Vec::new();
        for tx in self.transactions() {
            match self.read(&tx) {
                Ok(read) => out.extend(self.listings(&read).into_iter().map(|(f, l)| (f, Ok(l)))),
                Err(e) => out.extend(tx.iter().map(|f| (*f, Err(e.to_string())))),
            }
        }
        out
    }

    fn apply(&self, want: Want<'_>) -> Result<Vec<(Family, Listing)>> {
        let mut done: Vec<(Vec<Family>, B::Read)> = Vec::new();
        let mut after = Vec::new();
        for (tx, part) in parts(self, want) {
            match apply_one(self, &tx, part) {
                Ok((before, now)) => {
                    after.extend(now);
                    done.push((tx, before));
                }
                Err(e) => {
                    for (tx, before) in done.iter().rev() {
                        self.roll_back(tx, before);
                    }
                    return Err(e);
                }
            }
        }
        Ok(after)
    }

    fn teardown(&self) -> Result<Vec<String>> {
        let mut report = Vec::new();
        let mut first_error = None;
        for tx in self.transactions() {
            match self.read(&tx).and_then(|read| self.remove(&tx, &read)) {
                Ok(line) => report.push(line),
                Err(e) => {
                    report.push(format!("{}: {e}", self.label(&tx)));
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

    fn describe_drift(&self, l: &Listing, want: &[Rule]) -> String {
        match &l.reach {
            Reach::Gone => format!("the {} is gone", Backend::place(self)),
            Reach::Unreached(why) | Reach::Otherwise(why) => why.clone(),
            Reach::AsWritten => format!(
                "the {}: {}",
                Backend::place(self),
                l.differences(want, |r| self.show(r))
            ),
        }
    }

    fn preview(&self, want: Want<'_>) -> String {
        Backend::preview(self, want)
    }

    fn check_tools(&self) -> Vec<(bool, String)> {
        Backend::check_tools(self)
    }

    fn probe_deadlines(&self) -> Result<(), String> {
        Backend::probe_deadlines(self)
    }

    fn deadline_match(&self) -> &'static str {
        Backend::deadline_match(self)
    }

    fn reached(&self) -> &'static str {
        Backend::reached(self)
    }

    fn keep_reference(&self) {
        Backend::keep_reference(self)
    }

    fn unverified(&self) -> bool {
        Backend::unverified(self)
    }

    fn watched(&self) -> super::watch::Watched {
        Backend::watched(self)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::firewall::rules::Target;
    use crate::firewall::rules::tests::policy;
    use crate::store::config::{FirewallKind, FirewallSettings};

    /// A backend over a kernel in memory, one transaction per family, that says what it
    /// did; `undo` writes of a family are undone right after (another program at work).
    #[derive(Debug, Default)]
    struct Fake {
        kernel: Mutex<Vec<(Family, Vec<Rule>)>>,
        undo: Mutex<Vec<(Family, usize)>>,
        /// The change in place does not take (as an edit by position after `iptables -F`).
        refuse_change: bool,
        log: Mutex<Vec<String>>,
    }

    impl Fake {
        fn note(&self, what: &str, tx: &[Family]) {
            self.log.lock().unwrap().push(format!("{what} {}", tx[0]));
        }

        fn rules(&self, family: Family) -> Vec<Rule> {
            let k = self.kernel.lock().unwrap();
            k.iter()
                .find(|(f, _)| *f == family)
                .map(|(_, r)| r.clone())
                .unwrap_or_default()
        }

        fn set(&self, family: Family, rules: Vec<Rule>) {
            let mut k = self.kernel.lock().unwrap();
            k.retain(|(f, _)| *f != family);
            k.push((family, rules));
        }

        fn log(&self) -> Vec<String> {
            self.log.lock().unwrap().clone()
        }
    }

    impl Backend for Fake {
        type Read = (Family, Vec<Rule>);
        type Sent = ();
        const KIND: FirewallKind = FirewallKind::Iptables;
        fn watched(&self) -> crate::firewall::watch::Watched {
            crate::firewall::watch::Watched::Nothing("a fake".into())
        }

        fn new(_: &FirewallSettings) -> Fake {
            Fake::default()
        }
        fn present(_: &FirewallSettings) -> bool {
            true
        }
        fn name(&self) -> &'static str {
            "fake"
        }
        fn place(&self) -> String {
            "chain FAKE".into()
        }
        fn unit(&self) -> &'static str {
            "chain"
        }
        fn label(&self, tx: &[Family]) -> String {
            tx[0].to_string()
        }
        fn transactions(&self) -> Vec<Vec<Family>> {
            vec![vec![Family::V4], vec![Family::V6]]
        }
        fn read(&self, tx: &[Family]) -> Result<Self::Read> {
            self.note("read", tx);
            Ok((tx[0], self.rules(tx[0])))
        }
        fn listings(&self, (family, rules): &Self::Read) -> Vec<(Family, Listing)> {
            let listing = Listing {
                reach: Reach::AsWritten,
                lines: rules.iter().map(|r| r.tag.clone()).collect(),
                rules: rules.iter().cloned().map(Some).collect(),
            };
            vec![(*family, listing)]
        }
        fn unsure(&self, _: &Self::Read) -> bool {
            false
        }
        fn write(
            &self,
            tx: &[Family],
            want: Want<'_>,
            how: Write<'_, Self::Read>,
        ) -> Result<Option<()>> {
            let change = matches!(how, Write::Change(_));
            self.note(if change { "change" } else { "again" }, tx);
            if change && self.refuse_change {
                return Ok(None);
            }
            self.set(tx[0], want.rules_of[0].1.clone());
            let mut undo = self.undo.lock().unwrap();
            if let Some((_, n)) = undo.iter_mut().find(|(f, n)| *f == tx[0] && *n > 0) {
                *n -= 1;
                drop(undo);
                self.set(tx[0], Vec::new());
            }
            Ok(Some(()))
        }
        fn read_written(&self, tx: &[Family], _: &Self::Read, _: &()) -> Result<Self::Read> {
            self.read(tx)
        }
        fn roll_back(&self, tx: &[Family], (family, rules): &Self::Read) {
            self.note("roll back", tx);
            self.set(*family, rules.clone());
        }
        fn shows(&self, tx: &[Family], (_, rules): &Self::Read) -> (String, String) {
            (
                format!("{} chain FAKE", tx[0]),
                format!("{} rules", rules.len()),
            )
        }
        fn remove(&self, tx: &[Family], _: &Self::Read) -> Result<String> {
            self.note("remove", tx);
            self.set(tx[0], Vec::new());
            Ok(format!("{}: removed", tx[0]))
        }
        fn show(&self, r: &Rule) -> String {
            r.tag.clone()
        }
        fn preview(&self, _: Want<'_>) -> String {
            String::new()
        }
        fn check_tools(&self) -> Vec<(bool, String)> {
            Vec::new()
        }
        fn probe_deadlines(&self) -> Result<(), String> {
            Ok(())
        }
        fn deadline_match(&self) -> &'static str {
            "-m fake"
        }
        fn reached(&self) -> &'static str {
            ""
        }
    }

    fn want_of() -> Vec<(Family, Vec<Rule>)> {
        Family::BOTH
            .into_iter()
            .map(|f| (f, vec![Rule::new(f, "wanted", Some(Target::Drop))]))
            .collect()
    }

    fn apply(b: &Fake) -> Result<Vec<(Family, Listing)>> {
        let p = policy(&[], None);
        let rules_of = want_of();
        Protocol::apply(
            b,
            Want {
                policy: &p,
                rules_of: &rules_of,
                now: 0,
            },
        )
    }

    #[test]
    fn rules_in_place_are_read_and_left_alone() {
        let b = Fake::default();
        for (f, r) in want_of() {
            b.set(f, r);
        }
        let after = apply(&b).unwrap();
        assert_eq!(after.len(), 2);
        assert_eq!(b.log(), ["read IPv4", "read IPv6"]);
    }

    #[test]
    fn a_change_is_written_and_verified_per_transaction() {
        let b = Fake::default();
        let after = apply(&b).unwrap();
        assert!(
            after
                .iter()
                .zip(want_of())
                .all(|((_, l), (_, r))| l.matches(&r))
        );
        assert_eq!(
            b.log(),
            [
                "read IPv4",
                "change IPv4",
                "read IPv4",
                "read IPv6",
                "change IPv6",
                "read IPv6"
            ]
        );
    }

    #[test]
    fn a_change_undone_meanwhile_is_written_once_more() {
        let b = Fake::default();
        b.undo.lock().unwrap().push((Family::V6, 1));
        apply(&b).unwrap();
        assert_eq!(
            b.log()[3..],
            [
                "read IPv6",
                "change IPv6",
                "read IPv6",
                "read IPv6",
                "again IPv6",
                "read IPv6"
            ]
        );
        assert_eq!(b.rules(Family::V6), want_of()[1].1);
    }

    #[test]
    fn a_change_that_did_not_take_is_written_afresh() {
        let b = Fake {
            refuse_change: true,
            ..Fake::default()
        };
        apply(&b).unwrap();
        assert_eq!(
            b.log()[..4],
            ["read IPv4", "change IPv4", "read IPv4", "again IPv4"]
        );
    }

    #[test]
    fn a_change_that_does_not_hold_is_put_back_in_every_transaction() {
        let b = Fake::default();
        let old = vec![Rule::new(Family::V4, "old", Some(Target::Drop))];
        b.set(Family::V4, old.clone());
        b.undo.lock().unwrap().push((Family::V6, 2));
        let e = apply(&b).unwrap_err();
        let Error::Verify { place, shows } = e else {
            panic!("{e:?}");
        };
        assert_eq!(
            (place.as_str(), shows.as_str()),
            ("IPv6 chain FAKE", "0 rules")
        );
        let log = b.log();
        assert_eq!(log[log.len() - 2..], ["roll back IPv6", "roll back IPv4"]);
        // The family changed first is as it was.
        assert_eq!(b.rules(Family::V4), old);
    }

    #[test]
    fn drift_and_teardown_are_the_protocols() {
        let b = Fake::default();
        let want = &want_of()[0].1;
        let gone = Listing::default();
        assert_eq!(b.describe_drift(&gone, want), "the chain FAKE is gone");
        let otherwise = Listing {
            reach: Reach::Otherwise("hooked otherwise".into()),
            ..Listing::default()
        };
        assert_eq!(b.describe_drift(&otherwise, want), "hooked otherwise");
        let empty = Listing {
            reach: Reach::AsWritten,
            ..Listing::default()
        };
        assert!(
            b.describe_drift(&empty, want)
                .starts_with("the chain FAKE: `wanted` is missing"),
            "{}",
            b.describe_drift(&empty, want)
        );
        assert_eq!(
            Protocol::teardown(&b).unwrap(),
            ["IPv4: removed", "IPv6: removed"]
        );
        assert_eq!(Protocol::families(&b), Family::BOTH);
    }
}
