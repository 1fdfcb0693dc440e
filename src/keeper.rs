//! The one way state and rules change: under the lock, load the saved state, change it,
//! apply the rules it implies, read them back, save. Shared by the daemon and the console.

use std::os::unix::net::UnixDatagram;
use std::sync::Mutex;

use crate::addr::Family;
use crate::config::Config;
use crate::error::Result;
use crate::firewall::Firewall;
use crate::firewall::rules::Listing;
use crate::state::{Paths, State, StateLock};

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
        let old = lock.load()?;
        let mut st = old.clone();
        let r = f(&mut st)?;
        let expired = st.expire(now);
        let lifted = st.expire_bans(now);
        for gate in st.retain_gates(&self.cfg.gates) {
            log::warn!(
                "dropping the saved opening of gate '{gate}', which the config no longer has"
            );
        }
        let listings = self.fw.apply(&st, now)?;
        if st != old
            && let Err(e) = lock.save(&st)
        {
            // Keep the rules true to the file that is still on disk.
            {
                if let Err(e2) = self.fw.apply(&old, now) {
                    log::error!("could not put the rules back after a failed save: {e2}");
                }
                return Err(e);
            }
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

    /// Compares the kernel with the saved state and, when another program removed or
    /// changed tgknock's rules (`iptables -F`, `nft flush ruleset`, a firewall reload), puts
    /// them back. Returns what it found; `None` when the rules were in place (or an opening
    /// is due to close, which is the expiry's to do).
    pub(crate) fn repair(&self, now: u64) -> Result<Option<String>> {
        let _g = self.guard.lock().unwrap_or_else(|e| e.into_inner());
        let lock = StateLock::acquire(&self.paths)?;
        let st = lock.load()?;
        if st.next_deadline().is_some_and(|d| d <= now) {
            return Ok(None);
        }
        let found = self.fw.drift(&st, now)?;
        if found.is_empty() {
            return Ok(None);
        }
        self.fw.apply(&st, now)?;
        Ok(Some(found.join("; ")))
    }

    /// Records that every update below `offset` was handled, without touching the rules.
    pub(crate) fn save_offset(&self, offset: i64) -> Result<()> {
        let _g = self.guard.lock().unwrap_or_else(|e| e.into_inner());
        let lock = StateLock::acquire(&self.paths)?;
        let mut st = lock.load()?;
        if st.offset.is_some_and(|o| o >= offset) {
            return Ok(());
        }
        st.offset = Some(offset);
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

    /// The saved state and what the kernel shows now, changing nothing.
    pub(crate) fn snapshot(&self, now: u64) -> Result<Outcome> {
        let st = {
            let _g = self.guard.lock().unwrap_or_else(|e| e.into_inner());
            StateLock::acquire(&self.paths)?.load()?
        };
        let listings = self.fw.observe();
        self.fw.settle(&listings);
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
    pub(crate) fn ban_refusal(&self, addr: &crate::addr::Cidr) -> Option<String> {
        if !self.fw.families().contains(&addr.family()) {
            return Some(format!(
                "{addr} is {}, which tgknock does not manage (TGKNOCK_IP6TABLES=off)",
                addr.family()
            ));
        }
        let own = crate::addr::local_addresses();
        crate::state::Ban::refusal(
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
