//! Noticing at once that another program changed tgknock's rules, at no cost while nothing
//! changes: nf_tables (nft, and iptables-nft underneath) tells its listeners of every
//! change, and legacy xtables, which tells nobody, is fingerprinted once a second with
//! one `getsockopt` per family (no process). A backend says what it keeps
//! ([`Watched`]); [`Watcher`] waits for a change that touches it. A tool this process
//! cannot see into (another network namespace, a wrapper, the tests' fake) is not
//! watched: the daemon then looks at the rules after every poll, as it always did.

use std::time::{Duration, Instant};

use crate::os::nfwatch::{Committer, NftEvent, NftEvents, NftObject, XtablesProbe};

/// What a backend keeps in the kernel, as a watcher recognises it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Watched {
    /// nf_tables objects: changes to these tables (nfproto family byte, name) and, when
    /// `chains` is given, only to those chains of them (a whole table or set deleted
    /// always counts).
    Nftables {
        tables: Vec<(u8, String)>,
        chains: Option<Vec<String>>,
    },
    /// Legacy xtables: the `filter` tables of these families, which must hold `chain`.
    Xtables { v4: bool, v6: bool, chain: String },
    /// Nothing this process can watch: why.
    Nothing(String),
}

/// The nfproto family bytes of nftables' netlink messages.
pub(crate) const NFPROTO_INET: u8 = 1;
pub(crate) const NFPROTO_IPV4: u8 = 2;
pub(crate) const NFPROTO_IPV6: u8 = 10;

/// Waits for changes that touch what a backend keeps.
pub(crate) struct Watcher {
    source: Source,
    /// The kernel this process watches is the one its tools write to: legacy xtables
    /// hold tgknock's chain; nf_tables has sent a transaction of tgknock's own tools.
    /// Until then the daemon also looks after every poll (a wrapper into another
    /// network namespace is never trusted).
    confirmed: bool,
}

enum Source {
    Nft {
        events: NftEvents,
        /// How a commit names the tools this process ran.
        by: Committer,
        tables: Vec<(u8, String)>,
        chains: Option<Vec<String>>,
        /// The transaction being read touched what tgknock keeps.
        touched: bool,
    },
    /// Legacy xtables, before the chain is in place.
    XtablesLater { v4: bool, v6: bool, chain: String },
    Xtables {
        probe: XtablesProbe,
        last: u64,
        next: Instant,
    },
}

/// Legacy xtables are fingerprinted at most this often.
const PROBE_EVERY: Duration = Duration::from_secs(1);

impl Watcher {
    /// Starts watching what `watched` names, before the rules are put in place (nf_tables
    /// then hears tgknock's own first change, which confirms the watch); [`Watcher::ready`]
    /// finishes it after. `Err` says why it cannot be (the daemon then looks after every
    /// poll).
    pub(crate) fn subscribe(watched: Watched) -> Result<Watcher, String> {
        let source = match watched {
            Watched::Nftables { tables, chains } => Source::Nft {
                events: NftEvents::subscribe()
                    .map_err(|e| format!("cannot listen to nf_tables' notifications: {e}"))?,
                by: Committer::of_this_process(),
                tables,
                chains,
                touched: false,
            },
            Watched::Xtables { v4, v6, chain } => Source::XtablesLater { v4, v6, chain },
            Watched::Nothing(why) => return Err(why),
        };
        Ok(Watcher {
            source,
            confirmed: false,
        })
    }

    /// [`Watcher::subscribe`] and [`Watcher::ready`] at once.
    pub(crate) fn start(watched: Watched) -> Result<Watcher, String> {
        let mut w = Watcher::subscribe(watched)?;
        w.ready()?;
        Ok(w)
    }

    /// Finishes the start once tgknock's rules are in place: legacy xtables must hold its
    /// chain (else the iptables in use writes somewhere else), and are fingerprinted.
    pub(crate) fn ready(&mut self) -> Result<(), String> {
        let Source::XtablesLater { v4, v6, chain } = &self.source else {
            return Ok(());
        };
        let unreadable = |e: std::io::Error| format!("cannot read the kernel's xtables: {e}");
        let mut probe = XtablesProbe::open(*v4, *v6).map_err(unreadable)?;
        if !probe.has_chain(chain).map_err(unreadable)? {
            return Err(format!(
                "the kernel's legacy filter table has no chain {chain}, so iptables writes elsewhere"
            ));
        }
        let last = probe.fingerprint().map_err(unreadable)?;
        self.source = Source::Xtables {
            probe,
            last,
            next: Instant::now() + PROBE_EVERY,
        };
        self.confirmed = true;
        Ok(())
    }

    /// Whether changes come as they happen (nf_tables), so a burst is worth waiting out;
    /// a fingerprint a second apart has waited already.
    pub(crate) fn notifies(&self) -> bool {
        matches!(self.source, Source::Nft { .. })
    }

    /// Whether the kernel watched is known to be the one tgknock's tools write to.
    pub(crate) fn confirmed(&self) -> bool {
        self.confirmed
    }

    /// How it watches, for the log.
    pub(crate) fn how(&self) -> &'static str {
        match self.source {
            Source::Nft { .. } => "nf_tables' notifications of changes",
            Source::Xtables { .. } | Source::XtablesLater { .. } => {
                "a fingerprint of the kernel's xtables every second"
            }
        }
    }

    /// Waits at most `timeout` (legacy xtables: until the next second's fingerprint, if
    /// sooner); whether something tgknock keeps may have changed meanwhile. `Err`: the
    /// watch broke and cannot go on.
    pub(crate) fn wait(&mut self, timeout: Duration) -> std::io::Result<bool> {
        match &mut self.source {
            Source::Nft {
                events,
                by,
                tables,
                chains,
                touched,
            } => {
                let got = events.wait(timeout)?;
                let (news, ours) = settle(&got, *by, tables, chains.as_deref(), touched);
                self.confirmed |= ours;
                Ok(news)
            }
            Source::XtablesLater { .. } => {
                std::thread::sleep(timeout);
                Ok(false)
            }
            Source::Xtables { probe, last, next } => {
                let now = Instant::now();
                let due = (*next).max(now);
                std::thread::sleep((due - now).min(timeout));
                if Instant::now() < *next {
                    return Ok(false);
                }
                *next = Instant::now() + PROBE_EVERY;
                let print = probe.fingerprint()?;
                let changed = print != *last;
                *last = print;
                Ok(changed)
            }
        }
    }
}

/// Reads a burst of nf_tables notifications: whether a transaction that touched what
/// tgknock keeps was committed by another process than tgknock's own tools, and whether
/// one of tgknock's own was among them. `touched` carries a transaction over from one
/// burst to the next.
fn settle(
    got: &[NftEvent],
    by: Committer,
    tables: &[(u8, String)],
    chains: Option<&[String]>,
    touched: &mut bool,
) -> (bool, bool) {
    let (mut news, mut own_seen) = (false, false);
    for e in got {
        match e {
            NftEvent::Overflow => news = true,
            NftEvent::Object {
                what,
                deleted,
                family,
                table,
                name,
            } => {
                if ours(
                    *what,
                    *deleted,
                    *family,
                    table,
                    name.as_deref(),
                    tables,
                    chains,
                ) {
                    *touched = true;
                }
            }
            NftEvent::Generation {
                pid, port, process, ..
            } => {
                let own = by
                    .names(*pid, *port)
                    .is_some_and(|p| super::tool::ran(p, process.as_deref()));
                own_seen |= own;
                if std::mem::take(touched) && !own {
                    news = true;
                }
            }
        }
    }
    (news, own_seen)
}

/// Whether a change to an object touches what tgknock keeps.
fn ours(
    what: NftObject,
    deleted: bool,
    family: u8,
    table: &str,
    name: Option<&str>,
    tables: &[(u8, String)],
    chains: Option<&[String]>,
) -> bool {
    if !tables.iter().any(|(f, t)| *f == family && t == table) {
        return false;
    }
    let Some(chains) = chains else {
        return true;
    };
    match what {
        // A table deleted, or changed (`flags dormant` turns every chain of it off).
        NftObject::Table => true,
        // A chain renamed comes as a new chain of the new name (`iptables -E`).
        NftObject::Chain if !deleted => true,
        NftObject::Chain | NftObject::Rule => name.is_none_or(|n| chains.iter().any(|c| c == n)),
        // iptables-nft keeps no sets of tgknock's, and objects and flowtables of the
        // table are no part of its chains.
        NftObject::Set | NftObject::Element | NftObject::Other => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn news(
        got: &[NftEvent],
        tables: &[(u8, String)],
        chains: Option<&[String]>,
        touched: &mut bool,
    ) -> bool {
        settle(got, Committer::Pid, tables, chains, touched).0
    }

    fn obj(what: NftObject, deleted: bool, family: u8, table: &str, name: &str) -> NftEvent {
        NftEvent::Object {
            what,
            deleted,
            family,
            table: table.into(),
            name: (!name.is_empty()).then(|| name.to_string()),
        }
    }

    /// A commit outside any container: the socket's port is the pid.
    fn commit(pid: Option<u32>) -> NftEvent {
        NftEvent::Generation {
            id: 7,
            pid,
            port: pid.unwrap_or(0),
            process: Some("nft".into()),
        }
    }

    fn nft_tables() -> Vec<(u8, String)> {
        vec![(NFPROTO_INET, "tgknock".into())]
    }

    fn filter() -> (Vec<(u8, String)>, Vec<String>) {
        (
            vec![
                (NFPROTO_IPV4, "filter".into()),
                (NFPROTO_IPV6, "filter".into()),
            ],
            vec!["INPUT".into(), "TGKNOCK".into()],
        )
    }

    #[test]
    fn a_flush_of_the_ruleset_is_news() {
        let mut touched = false;
        let burst = [
            obj(NftObject::Table, true, NFPROTO_INET, "tgknock", ""),
            obj(NftObject::Table, true, NFPROTO_IPV4, "filter", ""),
            commit(Some(1)),
        ];
        assert!(news(&burst, &nft_tables(), None, &mut touched));
        let (t, c) = filter();
        assert!(news(&burst, &t, Some(&c), &mut touched));
    }

    #[test]
    fn another_table_or_chain_is_no_news() {
        let mut touched = false;
        let burst = [
            obj(NftObject::Rule, false, NFPROTO_INET, "docker", "input"),
            obj(NftObject::Table, false, NFPROTO_IPV4, "nat", ""),
            commit(Some(1)),
        ];
        assert!(!news(&burst, &nft_tables(), None, &mut touched));
        let (t, c) = filter();
        let burst = [
            obj(
                NftObject::Rule,
                false,
                NFPROTO_IPV4,
                "filter",
                "DOCKER-USER",
            ),
            obj(NftObject::Chain, true, NFPROTO_IPV4, "filter", "FORWARD"),
            // The table of the same name in another family is not the one watched.
            obj(NftObject::Rule, false, NFPROTO_INET, "filter", "INPUT"),
            commit(None),
        ];
        assert!(!news(&burst, &t, Some(&c), &mut touched));
        let burst = [
            obj(NftObject::Rule, true, NFPROTO_IPV6, "filter", "TGKNOCK"),
            commit(None),
        ];
        assert!(news(&burst, &t, Some(&c), &mut touched));
    }

    #[test]
    fn a_dormant_table_or_a_renamed_chain_is_news() {
        let (t, c) = filter();
        let mut touched = false;
        // `nft add table ip filter '{ flags dormant; }'`: the table changed, not deleted.
        let burst = [
            obj(NftObject::Table, false, NFPROTO_IPV4, "filter", ""),
            commit(None),
        ];
        assert!(news(&burst, &t, Some(&c), &mut touched));
        // `iptables -E TGKNOCK X`: a new chain of another name.
        let burst = [
            obj(NftObject::Chain, false, NFPROTO_IPV4, "filter", "X"),
            commit(None),
        ];
        assert!(news(&burst, &t, Some(&c), &mut touched));
    }

    #[test]
    fn a_burst_split_over_two_reads_is_one_transaction() {
        let mut touched = false;
        let first = [obj(
            NftObject::Element,
            true,
            NFPROTO_INET,
            "tgknock",
            "ban_v4",
        )];
        assert!(!news(&first, &nft_tables(), None, &mut touched));
        assert!(touched);
        assert!(news(&[commit(None)], &nft_tables(), None, &mut touched));
        assert!(!touched);
    }

    #[test]
    fn an_overflow_is_news() {
        let mut touched = false;
        assert!(news(
            &[NftEvent::Overflow],
            &nft_tables(),
            None,
            &mut touched
        ));
    }

    #[test]
    fn tgknocks_own_tools_are_no_news() {
        use super::super::tool::{exited_for_test, remember_for_test};
        use std::time::Duration;
        remember_for_test(4242, "/usr/sbin/nft");
        let mut touched = false;
        let burst = [
            obj(NftObject::Rule, false, NFPROTO_INET, "tgknock", "input"),
            commit(Some(4242)),
        ];
        let (news_of_it, ours) = settle(&burst, Committer::Pid, &nft_tables(), None, &mut touched);
        assert!(
            !news_of_it && ours,
            "tgknock's own transaction confirms the watch"
        );
        let burst = [
            obj(NftObject::Rule, false, NFPROTO_INET, "tgknock", "input"),
            commit(Some(4243)),
        ];
        assert!(news(&burst, &nft_tables(), None, &mut touched));
        // Once: the pid may be another process's later.
        let burst = [
            obj(NftObject::Rule, false, NFPROTO_INET, "tgknock", "input"),
            commit(Some(4242)),
        ];
        assert!(news(&burst, &nft_tables(), None, &mut touched));
        // A tool that committed nothing (a check, a read-back) and exited a while ago: its
        // pid, given to another program, is that program's.
        remember_for_test(4244, "/usr/sbin/nft");
        exited_for_test(4244, Duration::from_secs(6));
        let burst = [
            obj(NftObject::Rule, false, NFPROTO_INET, "tgknock", "input"),
            commit(Some(4244)),
        ];
        assert!(news(&burst, &nft_tables(), None, &mut touched));
        // The same pid under another name is another process (the kernel's comm: the
        // file name run, at most 15 bytes).
        remember_for_test(4245, "/usr/sbin/nft");
        let burst = [
            obj(NftObject::Rule, false, NFPROTO_INET, "tgknock", "input"),
            NftEvent::Generation {
                id: 8,
                pid: Some(4245),
                port: 4245,
                process: Some("ufw".into()),
            },
        ];
        assert!(news(&burst, &nft_tables(), None, &mut touched));
        remember_for_test(4246, "/usr/sbin/iptables-nft-restore");
        let burst = [
            obj(NftObject::Table, false, NFPROTO_IPV4, "filter", ""),
            NftEvent::Generation {
                id: 9,
                pid: Some(4246),
                port: 4246,
                process: Some("iptables-nft-re".into()),
            },
        ];
        let (news_of_it, ours) = settle(
            &burst,
            Committer::Pid,
            &filter().0,
            Some(&filter().1),
            &mut touched,
        );
        assert!(
            !news_of_it && ours,
            "comm is the first 15 bytes of the name"
        );
        // In a container the kernel's pid is one tgknock never saw; the socket's port is
        // the pid it saw (the kernel binds a socket to its process's own pid when free).
        // Outside one, a port is no proof: any process may bind its socket to any free
        // port.
        remember_for_test(47, "/usr/sbin/nft");
        let by_port = |id: u32, pid: u32, port: u32, process: &str| {
            [
                obj(NftObject::Rule, false, NFPROTO_INET, "tgknock", "input"),
                NftEvent::Generation {
                    id,
                    pid: Some(pid),
                    port,
                    process: Some(process.into()),
                },
            ]
        };
        let burst = by_port(10, 31_337, 47, "nft");
        assert!(
            news(&burst, &nft_tables(), None, &mut touched),
            "outside a container, a port chosen to be a tool's pid is no proof"
        );
        let (news_of_it, ours) = settle(&burst, Committer::Port, &nft_tables(), None, &mut touched);
        assert!(
            !news_of_it && ours,
            "in a container, the socket's port names tgknock's own tool"
        );
        // Another process whose socket has that port later, or under another name, is not.
        let burst = by_port(11, 31_338, 47, "nft");
        assert!(settle(&burst, Committer::Port, &nft_tables(), None, &mut touched).0);
        remember_for_test(48, "/usr/sbin/nft");
        let burst = by_port(12, 31_339, 48, "docker");
        assert!(settle(&burst, Committer::Port, &nft_tables(), None, &mut touched).0);
        // In a container, a kernel pid equal to one of tgknock's small pids is another
        // process (and leaves tgknock's entry for its own commit).
        let burst = by_port(13, 48, 60_000, "nft");
        assert!(settle(&burst, Committer::Port, &nft_tables(), None, &mut touched).0);
        let burst = by_port(14, 31_340, 48, "nft");
        assert!(!settle(&burst, Committer::Port, &nft_tables(), None, &mut touched).0);
        // Port 0 is the kernel's: never a tool's.
        assert_eq!(Committer::Port.names(Some(5), 0), None);
        assert_eq!(Committer::Pid.names(Some(5), 0), Some(5));
    }
}
