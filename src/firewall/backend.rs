//! What a backend is: the parts that know one tool (read tgknock's rules back, render a
//! change, write it). The protocol around them — read back, write, verify, write once
//! more, fail — is written once, in [`super::protocol`], for every backend.

use std::fmt;

use super::rules::{Listing, Policy, Rule};
use super::watch::Watched;
use crate::base::addr::Family;
use crate::base::error::Result;
use crate::store::config::{FirewallKind, FirewallSettings};

/// The rules a write puts in place: what the policy asks of each family at `now`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Want<'a> {
    pub(crate) policy: &'a Policy,
    /// One entry per family the transaction writes, in order.
    pub(crate) rules_of: &'a [(Family, Vec<Rule>)],
    /// When the rules are written (nft's set elements count their timeouts from it).
    pub(crate) now: u64,
}

/// Which write of the protocol this is.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Write<'a, R> {
    /// The change from what was read (as small as the backend can make it).
    Change(&'a R),
    /// Once more, after the change did not take: refilled against what was read again.
    Again(&'a R),
}

/// One tool's backend. A backend reads, renders and writes; [`super::protocol`] decides
/// when. A transaction is the families one write changes together (iptables: one per
/// family; nft: both at once).
pub(crate) trait Backend: fmt::Debug + Send + Sync + 'static {
    /// What one read of a transaction holds: its families' listings and what the next
    /// change is rendered against.
    type Read: Clone;
    /// What a write sent, for the read after it (which remembers what this process wrote).
    type Sent;
    /// The `TGKNOCK_FIREWALL` value that names it.
    const KIND: FirewallKind;
    /// The backend the configuration describes.
    fn new(f: &FirewallSettings) -> Self;
    /// Whether its tool is there (`TGKNOCK_FIREWALL=auto` takes the first that is).
    fn present(f: &FirewallSettings) -> bool;

    /// Its name, for messages: `iptables`, `nftables`.
    fn name(&self) -> &'static str;
    /// Where the rules live, for messages: `chain TGKNOCK`, `table inet tgknock`.
    fn place(&self) -> String;
    /// What [`Backend::place`] is, for messages: `chain`, `table`.
    fn unit(&self) -> &'static str;
    /// How a transaction is named in the log: `v4`'s family, or the backend.
    fn label(&self, tx: &[Family]) -> String;
    /// The transactions a change is made in, in order.
    fn transactions(&self) -> Vec<Vec<Family>>;

    /// Reads a transaction's families, compared with what this process wrote.
    fn read(&self, tx: &[Family]) -> Result<Self::Read>;
    /// The listings of a read, one per family of its transaction.
    fn listings(&self, read: &Self::Read) -> Vec<(Family, Listing)>;
    /// Whether a read holds rules this process cannot compare whole yet: written again
    /// even when they match.
    fn unsure(&self, read: &Self::Read) -> bool;
    /// Writes `want`; `Ok(None)`: the change did not take, in a way writing once more
    /// puts right.
    fn write(
        &self,
        tx: &[Family],
        want: Want<'_>,
        how: Write<'_, Self::Read>,
    ) -> Result<Option<Self::Sent>>;
    /// Reads a transaction just written against `base` (the read the write was made
    /// against: a backend may read back only what the write touched), remembering how the
    /// tool prints what was sent.
    fn read_written(
        &self,
        tx: &[Family],
        base: &Self::Read,
        sent: &Self::Sent,
    ) -> Result<Self::Read>;
    /// Best effort, after a change that could not be verified: put back what was read
    /// before it.
    fn roll_back(&self, _tx: &[Family], _before: &Self::Read) {}
    /// Where a failed verification looked, and what it found there.
    fn shows(&self, tx: &[Family], read: &Self::Read) -> (String, String);
    /// Removes what a read found of tgknock's; says what it did.
    fn remove(&self, tx: &[Family], read: &Self::Read) -> Result<String>;

    /// A rule as the tool shows it, for a drift message.
    fn show(&self, rule: &Rule) -> String;
    /// What `apply` would send now, for `check`.
    fn preview(&self, want: Want<'_>) -> String;
    /// `check`'s view of the tools: (ok, line) each.
    fn check_tools(&self) -> Vec<(bool, String)>;
    /// Whether the kernel can bound rules by a deadline (`Err`: why not). A probe that
    /// cannot tell (the tool is missing, no permission) says yes: applying tells the rest.
    fn probe_deadlines(&self) -> Result<(), String>;
    /// The match that bounds a rule by a deadline, for messages: `-m time`.
    fn deadline_match(&self) -> &'static str;
    /// How the kernel reaches the rules, for the status (`, reached from INPUT`), or
    /// nothing to say.
    fn reached(&self) -> &'static str;
    /// From now on, remembers how the tool prints back what this process writes, and
    /// compares what is read with it (the daemon, which keeps the rules).
    fn keep_reference(&self) {}
    /// Whether the last read found rules another tgknock process wrote, which this one
    /// cannot compare yet.
    fn unverified(&self) -> bool {
        false
    }
    /// What it keeps in the kernel, as [`super::watch::Watcher`] recognises a change to it.
    fn watched(&self) -> Watched;
}
