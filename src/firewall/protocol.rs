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

/// One transaction: read, write, verify, write once more, fail. Returns what was read
/// before it (to put back should a later transaction fail) and after.
fn apply_one<B: Backend>(b: &B, tx: &[Family], want: Want<'_>) -> Result<(B::Read, B::Read)> {
    let label = b.label(tx);
    let before = b.read(tx)?;
    if all_match(&b.listings(&before), want) && !b.unsure(&before) {
        log::debug!("{label}: rules already in place");
        return Ok((before.clone(), before));
    }
    let mut after = match b.write(tx, want, Write::Change(&before))? {
        Some(sent) => Some(b.read_written(tx, &sent)?),
        None => None,
    };
    if !after
        .as_ref()
        .is_some_and(|a| all_match(&b.listings(a), want))
    {
        // Another program changed the rules while this change was made (`iptables -F`,
        // `nft flush ruleset` at that moment, or the tool of a daemon killed mid-change
        // finishing late): once more, refilled against them as they are now.
        log::info!(
            "{label}: the {} changed while it was being changed; writing it again",
            b.unit()
        );
        let again = b.read(tx)?;
        let sent = b.write(tx, want, Write::Again(&again))?;
        after = match sent {
            Some(sent) => Some(b.read_written(tx, &sent)?),
            None => None,
        };
    }
    let after = match after {
        Some(a) if all_match(&b.listings(&a), want) => a,
        Some(a) => return Err(unverified(b, tx, &before, &a)),
        None => {
            let a = b.read(tx)?;
            return Err(unverified(b, tx, &before, &a));
        }
    };
    let rules: usize = b.listings(&after).iter().map(|(_, l)| l.lines.len()).sum();
    log::info!("{label}: {} now has {rules} rules", b.place());
    Ok((before, after))
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
                    after.extend(self.listings(&now));
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
}
