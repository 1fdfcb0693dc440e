//! The one way state and rules change: under the lock, load the saved state, change it,
//! apply the rules it implies, read them back, save. Shared by the daemon and the console.

use std::os::unix::net::UnixDatagram;
use std::sync::Mutex;

use crate::base::addr::Family;
use crate::base::error::Result;
use crate::firewall::Firewall;
use crate::firewall::rules::Listing;
use crate::store::config::Config;
use crate::store::state::{Paths, State, StateLock};

/// Where the daemon is in Telegram's updates, saved with the state a command produced
/// (atomically: one file): the offset to ask from next, and the date of the newest
/// message carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mark {
    pub(crate) offset: crate::base::ids::UpdateId,
    pub(crate) newest: Option<i64>,
}

impl Mark {
    pub(crate) fn write(self, st: &mut State) {
        st.offset = Some(self.offset);
        st.newest_carried = st.newest_carried.max(self.newest);
    }
}

/// What a change left behind: the saved state and what the kernel shows.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    pub(crate) state: State,
    pub(crate) listings: Vec<(Family, Result<Listing, String>)>,
    pub(crate) now: u64,
    /// Whether the kernel keeps deadlines (the rules carry them).
    pub(crate) deadlines: bool,
}

pub(crate) struct Keeper {
    pub(crate) cfg: Config,
    pub(crate) fw: Firewall,
    pub(crate) paths: Paths,
    /// Serialises changes between the daemon's threads; the file lock does it between
    /// processes.
    guard: Mutex<()>,
}

impl Keeper {
    /// A keeper for one command or the daemon. Whether the kernel keeps deadlines is not
    /// asked here: a change asks when it must ([`Firewall::apply`]); the daemon and
    /// `check`, which say it, call [`Firewall::probe`].
    pub(crate) fn new(cfg: Config) -> Keeper {
        Keeper {
            fw: Firewall::from_config(&cfg),
            paths: Paths::new(&cfg.files.state_dir),
            cfg,
            guard: Mutex::new(()),
        }
    }

    /// Runs `f` on the saved state, closes what has expired by `now`, applies the rules,
    /// and saves. If `f` refuses, or the firewall fails, nothing is saved and the rules are
    /// as before.
    pub(crate) fn change<R>(
        &self,
        now: u64,
        f: impl FnOnce(&mut State) -> Result<R>,
    ) -> Result<(R, Outcome)> {
        let _g = self.guard.lock().unwrap_or_else(|e| e.into_inner());
        let lock = StateLock::acquire(&self.paths)?;
        self.change_locked(&lock, now, f)
    }

    /// [`Keeper::change`] under the state lock the caller holds: the daemon's start keeps
    /// it from the removal of leftovers to the end of its reconcile, so a console command
    /// waits for the whole of it.
    pub(crate) fn change_locked<R>(
        &self,
        lock: &StateLock,
        now: u64,
        f: impl FnOnce(&mut State) -> Result<R>,
    ) -> Result<(R, Outcome)> {
        let old = lock.load()?;
        let mut st = old.clone();
        let r = f(&mut st)?;
        let (st, listings) = self.settle(lock, &old, st, now)?;
        Ok((
            r,
            Outcome {
                state: st,
                listings: listings.into_iter().map(|(f, l)| (f, Ok(l))).collect(),
                now,
                deadlines: self.fw.deadlines(),
            },
        ))
    }

    /// Under the lock: closes in `st` what has expired by `now`, applies its rules and
    /// saves it when it differs from `old`, which is on disk. On a failure the rules are
    /// `old`'s and nothing is saved.
    fn settle(
        &self,
        lock: &StateLock,
        old: &State,
        mut st: State,
        now: u64,
    ) -> Result<(State, Vec<(Family, Listing)>)> {
        let expired = st.expire(now);
        let lifted = st.expire_bans(now);
        for gate in st.retain_gates(&self.cfg.gates) {
            log::warn!(
                "dropping the saved opening of gate '{gate}', which the config no longer has"
            );
        }
        let listings = self.fw.apply(&st, now)?;
        if st != *old
            && let Err(e) = lock.save(&st)
        {
            // Keep the rules true to the file that is still on disk.
            if let Err(e2) = self.fw.apply(old, now) {
                log::error!("could not put the rules back after a failed save: {e2}");
            }
            return Err(e);
        }
        for (gate, o) in &expired {
            log::info!(
                "closed {gate}{}: its opening ran out",
                o.from.map(|f| format!(" to {f}")).unwrap_or_default()
            );
        }
        for b in &lifted {
            log::info!("lifted the ban of {}: it ran out", b.addr);
        }
        Ok((st, listings))
    }

    /// Compares the kernel with the saved state and, when another program removed or
    /// changed tgknock's rules (`iptables -F`, `nft flush ruleset`, a firewall reload), puts
    /// them back. Returns what it found; `None` when the rules were in place.
    ///
    /// A deadline that is due (the expiry is about to close it, or the wall clock was just
    /// stepped past it) never pauses the repair: the kernel may show the rules as written
    /// before it, or with the kernel's own deadline already ended, and anything else is
    /// drift; either way what expired is closed, the rest put back, and the state saved,
    /// in one go under the lock.
    pub(crate) fn repair(&self, now: u64) -> Result<Option<String>> {
        let _g = self.guard.lock().unwrap_or_else(|e| e.into_inner());
        let lock = StateLock::acquire(&self.paths)?;
        let st = lock.load()?;
        let Some(first) = st.next_deadline().filter(|d| *d <= now) else {
            let found = self.fw.drift(&st, now)?;
            if found.is_empty() {
                if self.fw.unverified() {
                    // Rules another tgknock process wrote (a console command): written
                    // again by this one, the same rules, so that from now on they are
                    // compared whole. Nobody is told: no other program changed them.
                    log::debug!("writing the rules once more, to know them whole");
                    self.fw.apply(&st, now)?;
                }
                return Ok(None);
            }
            self.fw.apply(&st, now)?;
            return Ok(Some(found.join("; ")));
        };
        // As written (every deadline was ahead then), then with each due one ended.
        let mut times = vec![first.saturating_sub(1)];
        let mut due: Vec<u64> = st
            .openings
            .values()
            .flatten()
            .filter_map(|o| o.until)
            .chain(st.bans.iter().filter_map(|b| b.until))
            .filter(|u| *u <= now)
            .collect();
        due.sort_unstable();
        due.dedup();
        times.extend(due);
        let found = self.fw.drift_at(&st, &times)?;
        self.settle(&lock, &st, st.clone(), now)?;
        Ok((!found.is_empty()).then(|| found.join("; ")))
    }

    /// Records where the daemon is in Telegram's updates (`mark`), without touching the
    /// rules. The offset may go down: Telegram numbers afresh after a quiet week.
    pub(crate) fn save_offset(&self, mark: Mark) -> Result<()> {
        let _g = self.guard.lock().unwrap_or_else(|e| e.into_inner());
        let lock = StateLock::acquire(&self.paths)?;
        let mut st = lock.load()?;
        let old = st.clone();
        mark.write(&mut st);
        if st == old {
            return Ok(());
        }
        lock.save(&st)
    }

    /// Changes what the state records without touching the rules (the second factor's used
    /// codes and wrong-code counts), saved before it returns.
    pub(crate) fn record<R>(&self, f: impl FnOnce(&mut State) -> R) -> Result<R> {
        let _g = self.guard.lock().unwrap_or_else(|e| e.into_inner());
        let lock = StateLock::acquire(&self.paths)?;
        let old = lock.load()?;
        let mut st = old.clone();
        let r = f(&mut st);
        if st != old {
            lock.save(&st)?;
        }
        Ok(r)
    }

    /// The saved state and what the kernel shows now, changing nothing. Both are read
    /// under the state lock, as one moment: a change in flight (the daemon's reconcile at
    /// a start, a deadline, a console command) is waited for, never seen half done, and
    /// the state from before it is never compared with the rules from after it.
    pub(crate) fn snapshot(&self, now: u64) -> Result<Outcome> {
        let _g = self.guard.lock().unwrap_or_else(|e| e.into_inner());
        let lock = StateLock::acquire(&self.paths)?;
        // Judged at the moment the lock was had, not when it was asked for: a deadline
        // that passed while this waited for the daemon's reconcile is past.
        let now = now.max(crate::os::clock::now());
        let st = lock.load()?;
        let listings = self.fw.observe();
        self.fw.settle(&listings);
        drop(lock);
        Ok(Outcome {
            state: st,
            listings,
            now,
            deadlines: self.fw.deadlines(),
        })
    }

    /// The saved state only (no firewall calls), for deadlines.
    pub(crate) fn load_state(&self) -> Result<State> {
        let _g = self.guard.lock().unwrap_or_else(|e| e.into_inner());
        StateLock::acquire(&self.paths)?.load()
    }

    /// Why `addr` may not be banned, if it may not: an always-allowed source, the board's
    /// own address or LAN (or its addresses could not be read), or a family tgknock does not
    /// manage.
    pub(crate) fn ban_refusal(&self, addr: &crate::base::addr::Cidr) -> Option<String> {
        if !self.fw.families().contains(&addr.family()) {
            return Some(format!(
                "{addr} is {}, which tgknock does not manage (TGKNOCK_IP6TABLES=off)",
                addr.family()
            ));
        }
        let own = crate::os::netlink::local_addresses();
        crate::store::state::Ban::refusal(
            addr,
            &self.cfg.firewall.always_allow,
            own.as_deref().map_err(String::as_str),
        )
    }

    /// Tells a running daemon to re-read the deadlines; false when none listens. Only a
    /// socket bound there is poked: a link planted in its place (to another program's
    /// socket) is not followed.
    pub(crate) fn wake_daemon(&self) -> bool {
        use std::os::unix::fs::FileTypeExt;
        let wake = self.paths.wake();
        match std::fs::symlink_metadata(&wake) {
            Ok(m) if m.file_type().is_socket() => {}
            Ok(_) => {
                log::warn!(
                    "{} is not a socket (planted there?): the daemon is not woken; remove it",
                    wake.display()
                );
                return false;
            }
            Err(_) => return false,
        }
        UnixDatagram::unbound()
            .and_then(|s| s.send_to(b"wake", &wake))
            .is_ok()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::base::gate::GateName;
    use crate::store::state::{Actor, Opening};
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicUsize, Ordering};

    pub(crate) const NOW: u64 = 1_800_000_000;

    /// A scratch directory with the recording fake iptables of the integration tests
    /// (`tests/support/fake_iptables.sh`) and a state directory; removed when dropped.
    pub(crate) struct Scratch {
        pub(crate) dir: PathBuf,
    }

    impl Scratch {
        pub(crate) fn new() -> Scratch {
            static N: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "tgknock-keeper-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ));
            let _ = std::fs::remove_dir_all(&dir);
            crate::fake_fw::install(&dir);
            Scratch { dir }
        }

        pub(crate) fn keeper(&self) -> Keeper {
            self.keeper_with(&[])
        }

        /// A keeper on the scratch directory whose configuration also has `extra`.
        pub(crate) fn keeper_with(&self, extra: &[(&str, &str)]) -> Keeper {
            let bin = |n: &str| self.dir.join("bin").join(n).display().to_string();
            let mut env: Vec<(String, String)> = [
                ("TGKNOCK_IPTABLES", bin("iptables")),
                ("TGKNOCK_IP6TABLES", bin("ip6tables")),
                ("TGKNOCK_NFT", bin("no-nft")),
                (
                    "TGKNOCK_STATE_DIR",
                    self.dir.join("state").display().to_string(),
                ),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
            env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
            let cfg = Config::from_sources(None, &env).expect("a valid test configuration");
            let k = Keeper::new(cfg);
            k.paths.state_dir().expect("the state directory");
            k
        }

        /// The fake kernel's IPv4 rules: INPUT, then tgknock's chain.
        pub(crate) fn rules(&self) -> String {
            let d = self.dir.join("fw/v4");
            let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
            format!("{}{}", read(&d.join("INPUT")), read(&d.join("TGKNOCK")))
        }

        /// Whether a RETURN of the ssh gate lets someone through.
        pub(crate) fn ssh_passes(&self) -> bool {
            self.rules()
                .lines()
                .any(|l| l.contains("tgknock-gate:ssh") && l.ends_with("-j RETURN"))
        }

        /// What `iptables -F; iptables -X` leaves of the fake's IPv4 filter table.
        pub(crate) fn flush(&self) {
            let v4 = self.dir.join("fw/v4");
            std::fs::write(v4.join("INPUT"), "").unwrap();
            let _ = std::fs::remove_file(v4.join("TGKNOCK"));
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            if !std::thread::panicking() {
                let _ = std::fs::remove_dir_all(&self.dir);
            }
        }
    }

    pub(crate) fn ssh() -> GateName {
        GateName::new("ssh").unwrap()
    }

    pub(crate) fn open_until(k: &Keeper, now: u64, until: u64) {
        k.change(now, |st| {
            st.open(
                &ssh(),
                Opening {
                    from: None,
                    until: Some(until),
                    by: Actor::Console,
                },
            )
        })
        .expect("open");
    }

    #[test]
    fn repair_with_a_due_deadline_closes_it_and_puts_the_rules_back() {
        let s = Scratch::new();
        let k = s.keeper();
        open_until(&k, NOW, NOW + 60);
        assert_eq!(k.repair(NOW + 1).unwrap(), None, "nothing changed");
        assert!(s.ssh_passes(), "{}", s.rules());
        // The wall clock stepped past the deadline (NTP at boot), then another program
        // flushed the rules before the expiry thread closed the opening.
        s.flush();
        let found = k.repair(NOW + 3600).unwrap();
        assert!(
            found
                .as_deref()
                .is_some_and(|f| f.contains("the chain TGKNOCK is gone")),
            "{found:?}"
        );
        let rules = s.rules();
        assert!(rules.contains("-A INPUT -j TGKNOCK"), "{rules}");
        assert!(
            rules.contains("tgknock-gate:ssh") && rules.contains("-j DROP"),
            "{rules}"
        );
        assert!(!s.ssh_passes(), "{rules}");
        assert!(
            k.load_state().unwrap().openings.is_empty(),
            "expired and saved"
        );
        // Then the kernel matches: nothing more to repair.
        assert_eq!(k.repair(NOW + 3601).unwrap(), None);
    }

    #[test]
    fn repair_with_a_due_deadline_and_no_drift_expires_without_a_report() {
        let s = Scratch::new();
        let k = s.keeper();
        open_until(&k, NOW, NOW + 60);
        assert_eq!(k.repair(NOW + 3600).unwrap(), None, "an expiry is no drift");
        assert!(k.load_state().unwrap().openings.is_empty());
        assert!(!s.ssh_passes(), "{}", s.rules());
    }
}
