//! The saved state (openings and the Telegram offset), its files, and the lock.

use crate::base::ids::{UpdateId, UserId};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use std::fmt;

use crate::base::addr::Cidr;
use crate::base::duration::Length;
use crate::base::error::{Error, Result};
use crate::base::gate::{Gate, GateName};
use crate::os::files::{self, Dir};
use crate::store::config::Limits;
pub(crate) use crate::store::paths::{GUARDED_FILES, Heartbeat, Paths};
use crate::store::paths::{LOCK, PID, STATE};

/// Most openings one gate can have at once (each is a rule per port and family).
pub const MAX_OPENINGS_PER_GATE: usize = 16;
/// Most bans at once (each is a rule in its family).
pub(crate) const MAX_BANS: usize = 5_000;

/// Who opened a gate, for status and logs; saved as `telegram:123` or `console`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Actor {
    /// An allowed Telegram user, by id.
    Telegram(UserId),
    /// Someone at the board's console.
    Console,
    /// Not recorded (a state file from elsewhere).
    Unknown,
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::Telegram(id) => write!(f, "telegram:{id}"),
            Actor::Console => f.write_str("console"),
            Actor::Unknown => Ok(()),
        }
    }
}

impl Serialize for Actor {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Actor {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Actor, D::Error> {
        let text = String::deserialize(d)?;
        Ok(match text.as_str() {
            "console" => Actor::Console,
            _ => match text
                .strip_prefix("telegram:")
                .and_then(|id| id.parse().ok())
            {
                Some(id) => Actor::Telegram(UserId(id)),
                None => Actor::Unknown,
            },
        })
    }
}

/// A gate's opening: to everyone (`from: None`) or one source, until a deadline or closed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Opening {
    #[serde(default)]
    pub(crate) from: Option<Cidr>,
    /// Unix seconds; `None`: until closed.
    #[serde(default)]
    pub(crate) until: Option<u64>,
    #[serde(default = "unknown")]
    pub(crate) by: Actor,
}

fn unknown() -> Actor {
    Actor::Unknown
}

/// Why a chat command may not open a gate for as long as it asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooLong {
    /// What was asked for, in seconds; `None`: without an end.
    pub(crate) asked: Option<u64>,
    /// `TGKNOCK_MAX_OPEN_FOR`.
    pub(crate) max: u64,
}

impl Opening {
    /// The opening the console asks for at `now`: its length resolved against
    /// `TGKNOCK_OPEN_FOR` (`0`: until closed). The console is the way in when chat is
    /// not: `TGKNOCK_MAX_OPEN_FOR` does not apply.
    pub(crate) fn by_console(
        length: Length,
        from: Option<Cidr>,
        now: u64,
        limits: &Limits,
    ) -> Opening {
        let secs = Opening::secs(length, limits);
        Opening {
            from,
            until: secs.map(|s| now + s),
            by: Actor::Console,
        }
    }

    /// The opening Telegram user `user` asks for at `now`, resolved as the console's, and
    /// refused beyond `TGKNOCK_MAX_OPEN_FOR`.
    pub(crate) fn by_chat(
        length: Length,
        from: Option<Cidr>,
        user: UserId,
        now: u64,
        limits: &Limits,
    ) -> std::result::Result<Opening, TooLong> {
        let secs = Opening::secs(length, limits);
        let max = limits.max_open_for;
        if max != 0 && secs.is_none_or(|s| s > max) {
            return Err(TooLong { asked: secs, max });
        }
        Ok(Opening {
            from,
            until: secs.map(|s| now + s),
            by: Actor::Telegram(user),
        })
    }

    /// How long `length` is, in seconds; `None`: until closed.
    fn secs(length: Length, limits: &Limits) -> Option<u64> {
        match length {
            Length::Default => Some(limits.open_for).filter(|s| *s > 0),
            Length::Secs(s) => Some(s),
            Length::UntilClosed => None,
        }
    }
}

/// A source whose packets to the board are dropped (the connections it opened too, never
/// the answers to connections the board opened), to every port, until a deadline or lifted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Ban {
    pub(crate) addr: Cidr,
    /// Unix seconds; `None`: until lifted.
    #[serde(default)]
    pub(crate) until: Option<u64>,
    #[serde(default = "unknown")]
    pub(crate) by: Actor,
}

impl Ban {
    /// Why `addr` may not be banned, if it may not: it would cut off an always-allowed
    /// source (`TGKNOCK_ALWAYS_ALLOW`) or the board itself (`own`: its addresses, or why
    /// they could not be read: then every ban is refused, since any could be a lockout).
    pub(crate) fn refusal(
        addr: &Cidr,
        always_allow: &[Cidr],
        own: std::result::Result<&[IpAddr], &str>,
    ) -> Option<String> {
        if let Some(a) = always_allow.iter().find(|a| overlaps(a, addr)) {
            return Some(format!(
                "{addr} is in TGKNOCK_ALWAYS_ALLOW ({a}), which is never blocked"
            ));
        }
        let own = match own {
            Ok(own) => own,
            Err(why) => {
                return Some(format!(
                    "the board's own addresses could not be read ({why}), so a ban of {addr} \
                     could cut the board off"
                ));
            }
        };
        own.iter().find(|ip| contains(addr, **ip)).map(|ip| {
            format!("{addr} holds the board's own address {ip}; the board would cut itself off")
        })
    }
}

/// Whether `block` holds `ip`.
fn contains(block: &Cidr, ip: IpAddr) -> bool {
    Cidr::new(ip, block.prefix()).is_some_and(|c| c == *block)
}

/// Whether two blocks share an address: the shorter prefix holds the other's start.
fn overlaps(a: &Cidr, b: &Cidr) -> bool {
    let (wide, narrow) = if a.prefix() <= b.prefix() {
        (a, b)
    } else {
        (b, a)
    };
    contains(wide, narrow.addr())
}

/// What survives a restart.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct State {
    #[serde(default = "one")]
    pub(crate) version: u32,
    /// The next Telegram `update_id` to ask for: every update below it was handled.
    #[serde(default)]
    pub(crate) offset: Option<UpdateId>,
    /// The date (Telegram's clock, Unix seconds) of the newest message carried out, saved
    /// with the offset. After a week without updates Telegram numbers afresh, below the
    /// offset: an update below it that is newer than this is the new numbering, one at or
    /// before it a repeat. Absent in files written before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) newest_carried: Option<i64>,
    #[serde(default)]
    pub(crate) openings: BTreeMap<GateName, Vec<Opening>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) bans: Vec<Ban>,
    /// The TOTP time steps whose codes were accepted and could still be valid: a code is
    /// accepted once, also across a restart.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) totp_used: Vec<u64>,
    /// Wrong TOTP codes per allowed user within the last hour, and lockouts: a restart
    /// forgets none. (A file written before them loads as none.)
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) totp_wrong: Vec<crate::base::totp::WrongCodes>,
}

fn one() -> u32 {
    1
}

impl State {
    /// Adds or renews an opening; one per source, so a renewal replaces the deadline.
    pub(crate) fn open(&mut self, gate: &GateName, opening: Opening) -> Result<()> {
        let list = self.openings.entry(gate.clone()).or_default();
        list.retain(|o| o.from != opening.from);
        if list.len() >= MAX_OPENINGS_PER_GATE {
            return Err(Error::TooManyOpenings {
                gate: gate.clone(),
                max: MAX_OPENINGS_PER_GATE,
            });
        }
        list.push(opening);
        list.sort_by_key(|o| o.from);
        Ok(())
    }

    /// Closes one gate or all; returns the names of gates that had openings.
    pub(crate) fn close(&mut self, gate: Option<&GateName>) -> Vec<GateName> {
        match gate {
            Some(g) => self
                .openings
                .remove(g)
                .filter(|l| !l.is_empty())
                .map(|_| vec![g.clone()])
                .unwrap_or_default(),
            None => std::mem::take(&mut self.openings)
                .into_iter()
                .filter(|(_, l)| !l.is_empty())
                .map(|(g, _)| g)
                .collect(),
        }
    }

    /// Removes openings whose deadline is at or before `now`; returns them.
    pub(crate) fn expire(&mut self, now: u64) -> Vec<(GateName, Opening)> {
        let mut gone = Vec::new();
        for (gate, list) in self.openings.iter_mut() {
            list.retain(|o| {
                let keep = o.until.is_none_or(|u| u > now);
                if !keep {
                    gone.push((gate.clone(), o.clone()));
                }
                keep
            });
        }
        self.openings.retain(|_, l| !l.is_empty());
        gone
    }

    /// Adds or renews a ban (one per block: a new one replaces its deadline). A ban that
    /// overlaps another one (a host inside a banned block, or a block holding a banned
    /// host or block) is refused, naming the other: nft keeps bans as the elements of an
    /// interval set, where blocks cannot overlap, and one rule for both backends keeps
    /// `status` and the kernel telling the same story.
    pub(crate) fn ban(&mut self, ban: Ban) -> Result<()> {
        if let Some(other) = self
            .bans
            .iter()
            .find(|b| b.addr != ban.addr && overlaps(&b.addr, &ban.addr))
        {
            return Err(Error::BanOverlaps {
                addr: ban.addr,
                other: other.addr,
                until: other.until,
            });
        }
        self.bans.retain(|b| b.addr != ban.addr);
        if self.bans.len() >= MAX_BANS {
            return Err(Error::TooManyBans { max: MAX_BANS });
        }
        self.bans.push(ban);
        self.bans.sort_by_key(|b| b.addr);
        Ok(())
    }

    /// Lifts the ban of `addr`; false when there was none.
    pub(crate) fn unban(&mut self, addr: &Cidr) -> bool {
        let before = self.bans.len();
        self.bans.retain(|b| b.addr != *addr);
        self.bans.len() != before
    }

    /// Removes bans whose deadline is at or before `now`; returns them.
    pub(crate) fn expire_bans(&mut self, now: u64) -> Vec<Ban> {
        let (gone, kept) = std::mem::take(&mut self.bans)
            .into_iter()
            .partition(|b| b.until.is_some_and(|u| u <= now));
        self.bans = kept;
        gone
    }

    /// Drops openings of gates the config no longer has.
    pub(crate) fn retain_gates(&mut self, gates: &[Gate]) -> Vec<GateName> {
        let unknown: Vec<GateName> = self
            .openings
            .keys()
            .filter(|k| !gates.iter().any(|g| &g.name == *k))
            .cloned()
            .collect();
        for k in &unknown {
            self.openings.remove(k);
        }
        unknown
    }

    /// Moves by `secs` (back when negative) the deadlines that are as `planned` had them:
    /// after the wall clock was set back by as much, so that openings and bans last what
    /// was asked. Deadlines set since (by the clock as it is now) stay. Returns how many
    /// moved.
    pub(crate) fn move_deadlines(&mut self, secs: i64, planned: &State) -> usize {
        let mut moved = 0;
        for (gate, list) in self.openings.iter_mut() {
            let before = planned.openings_of(gate);
            for o in list.iter_mut() {
                if let Some(u) = o.until
                    && before
                        .iter()
                        .any(|p| p.from == o.from && p.until == Some(u))
                {
                    o.until = Some(u.saturating_add_signed(secs));
                    moved += 1;
                }
            }
        }
        for b in self.bans.iter_mut() {
            if let Some(u) = b.until
                && planned
                    .bans
                    .iter()
                    .any(|p| p.addr == b.addr && p.until == Some(u))
            {
                b.until = Some(u.saturating_add_signed(secs));
                moved += 1;
            }
        }
        moved
    }

    /// The earliest deadline of any opening or ban.
    pub(crate) fn next_deadline(&self) -> Option<u64> {
        self.openings
            .values()
            .flatten()
            .filter_map(|o| o.until)
            .chain(self.bans.iter().filter_map(|b| b.until))
            .min()
    }

    pub(crate) fn openings_of(&self, gate: &GateName) -> &[Opening] {
        self.openings.get(gate).map(Vec::as_slice).unwrap_or(&[])
    }
}

/// Reads the state; a missing file is the empty state (every gate closed). A file that
/// cannot be parsed is moved aside and replaced by the empty state: closed is the safe
/// default, and the reason is logged. A file that cannot be read (permissions, a link) is an
/// error that names it.
fn load(dir: &Dir) -> Result<State> {
    let Some(text) = dir.read(STATE)? else {
        return Ok(State::default());
    };
    match serde_json::from_str::<State>(&text) {
        Ok(s) => Ok(s),
        Err(e) => {
            let path = dir.join(STATE);
            let aside = dir.join("state.json.corrupt");
            log::error!(
                "{} is not valid state ({e}); moved to {} and starting with every gate closed",
                path.display(),
                aside.display()
            );
            fs::rename(&path, &aside).map_err(|e| Error::file(&path, "move aside", e))?;
            Ok(State::default())
        }
    }
}

/// The exclusive lock on `lock`, held while the state and the rules change. Loading and
/// saving the state go through it, so neither happens without the lock.
pub(crate) struct StateLock {
    dir: Dir,
    _file: File,
}

impl StateLock {
    pub(crate) fn acquire(paths: &Paths) -> Result<StateLock> {
        let dir = paths.state_dir()?;
        let file = dir.open_lock(LOCK)?;
        file.lock()
            .map_err(|e| Error::file(dir.join(LOCK), "lock", e))?;
        Ok(StateLock { dir, _file: file })
    }

    pub(crate) fn load(&self) -> Result<State> {
        load(&self.dir)
    }

    /// Writes the state durably by rename: a crash leaves either the old file or the new
    /// one, never half of one, and the new one belongs to the directory's owner.
    pub(crate) fn save(&self, state: &State) -> Result<()> {
        let mut text = serde_json::to_string_pretty(state).expect("state serializes");
        text.push('\n');
        self.dir.replace(STATE, text.as_bytes(), true)
    }
}

/// The daemon's own lock on the pid file, held for its whole life: a second `run` fails.
pub(crate) struct PidLock {
    _file: File,
}

impl PidLock {
    /// Takes the pid-file lock and writes our pid, or says who holds it. A watchdog or a
    /// console command may hold a shared lock for an instant to see whether a daemon runs,
    /// so a lock that is busy is tried again for a second before giving up.
    pub(crate) fn acquire(paths: &Paths) -> Result<PidLock> {
        let dir = paths.state_dir()?;
        let mut file = dir.open_rw(PID, false)?;
        let end = Instant::now() + Duration::from_secs(1);
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(fs::TryLockError::WouldBlock) if Instant::now() < end => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(fs::TryLockError::WouldBlock) => {
                    return Err(Error::AlreadyRunning {
                        pid: PidLock::holder(paths),
                        pid_file: paths.pid(),
                    });
                }
                Err(fs::TryLockError::Error(e)) => {
                    return Err(Error::file(paths.pid(), "lock", e));
                }
            }
        }
        file.set_len(0)
            .and_then(|_| writeln!(file, "{}", std::process::id()))
            .and_then(|_| file.sync_all())
            .map_err(|e| Error::file(paths.pid(), "write", e))?;
        Ok(PidLock { _file: file })
    }

    /// Whether a daemon holds the pid lock now, and its pid. A daemon that has just taken
    /// the lock writes its pid an instant later: an empty file is read again.
    pub(crate) fn holder(paths: &Paths) -> Option<u32> {
        let path = paths.pid();
        let file = match files::open_existing(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            // A link, a FIFO or a hard link planted as the pid file: not read, and said.
            Err(e) if e.kind() == std::io::ErrorKind::Other => {
                log::warn!("{e}; no daemon is taken to be running");
                return None;
            }
            Err(e) => {
                log::warn!(
                    "cannot read {}: {e}; no daemon is taken to be running",
                    path.display()
                );
                return None;
            }
        };
        if file.try_lock_shared().is_ok() {
            return None;
        }
        let end = Instant::now() + Duration::from_secs(1);
        loop {
            let text = files::read_existing(&path).unwrap_or_default();
            if let Ok(pid) = text.trim().parse() {
                return Some(pid);
            }
            if Instant::now() > end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bans_that_would_cut_off_the_board_or_an_always_allowed_source_are_refused() {
        let c = |s: &str| s.parse::<Cidr>().unwrap();
        let own: Vec<IpAddr> = ["127.0.0.1", "192.168.7.9", "2001:db8:7::9"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let allow = [c("10.1.0.0/16")];
        let why = |a: &str| Ban::refusal(&c(a), &allow, Ok(&own));
        assert!(
            why("192.168.7.9")
                .unwrap()
                .contains("the board's own address 192.168.7.9")
        );
        assert!(
            why("192.168.7.0/24").unwrap().contains("own address"),
            "its LAN"
        );
        assert!(why("2001:db8:7::/64").unwrap().contains("own address"));
        assert!(
            why("10.1.2.3")
                .unwrap()
                .contains("TGKNOCK_ALWAYS_ALLOW (10.1.0.0/16)")
        );
        assert!(why("10.0.0.0/8").unwrap().contains("TGKNOCK_ALWAYS_ALLOW"));
        assert_eq!(why("192.168.7.20"), None, "another host of the LAN");
        assert_eq!(why("203.0.113.9"), None);
        // The board's addresses unknown: every ban is refused, saying why.
        let unknown = Ban::refusal(&c("203.0.113.9"), &allow, Err("netlink (socket): denied"));
        assert!(
            unknown.as_deref().is_some_and(|w| w
                .contains("could not be read (netlink (socket): denied)")
                && w.contains("cut the board off")),
            "{unknown:?}"
        );
        // An always-allowed source is named first, whatever else.
        assert!(
            Ban::refusal(&c("10.1.2.3"), &allow, Err("x"))
                .unwrap()
                .contains("TGKNOCK_ALWAYS_ALLOW")
        );
    }

    fn op(from: Option<&str>, until: Option<u64>) -> Opening {
        Opening {
            from: from.map(|f| f.parse().unwrap()),
            until,
            by: Actor::Console,
        }
    }

    fn g(name: &str) -> GateName {
        GateName::new(name).unwrap()
    }

    #[test]
    fn open_renews_per_source() {
        let mut s = State::default();
        s.open(&g("ssh"), op(None, Some(100))).unwrap();
        s.open(&g("ssh"), op(None, Some(200))).unwrap();
        s.open(&g("ssh"), op(Some("1.2.3.4"), Some(150))).unwrap();
        assert_eq!(s.openings_of(&g("ssh")).len(), 2);
        assert_eq!(s.next_deadline(), Some(150));
        for i in 0..14 {
            s.open(&g("ssh"), op(Some(&format!("10.0.0.{i}")), None))
                .unwrap();
        }
        assert!(s.open(&g("ssh"), op(Some("10.9.9.9"), None)).is_err());
    }

    fn ban(addr: &str, until: Option<u64>) -> Ban {
        Ban {
            addr: addr.parse().unwrap(),
            until,
            by: Actor::Console,
        }
    }

    #[test]
    fn bans_renew_and_never_overlap() {
        let mut s = State::default();
        s.ban(ban("203.0.113.0/24", Some(100))).unwrap();
        s.ban(ban("198.51.100.7", None)).unwrap();
        s.ban(ban("2001:db8::/32", None)).unwrap();
        // A renewal replaces the deadline; a neighbour block is not an overlap.
        s.ban(ban("203.0.113.0/24", Some(200))).unwrap();
        s.ban(ban("203.0.112.0/24", None)).unwrap();
        s.ban(ban("198.51.100.6/32", None)).unwrap();
        assert_eq!(s.bans.len(), 5);
        assert_eq!(
            s.bans
                .iter()
                .find(|b| b.addr.prefix() == 24 && b.until.is_some())
                .unwrap()
                .until,
            Some(200)
        );
        let before = s.clone();
        for (addr, other, words) in [
            (
                "203.0.113.9",
                "203.0.113.0/24",
                "is inside 203.0.113.0/24, which is banned already (until 1970-01-01 00:03:20 UTC)",
            ),
            (
                "203.0.113.128/25",
                "203.0.113.0/24",
                "ban 203.0.113.0/24 again",
            ),
            (
                "198.51.100.0/24",
                "198.51.100.6",
                "holds 198.51.100.6, which is banned on its own (until lifted); bans cannot overlap: unban 198.51.100.6 first",
            ),
            ("128.0.0.0/1", "198.51.100.6", "unban 198.51.100.6 first"),
            (
                "2001:db8:1::/48",
                "2001:db8::/32",
                "is inside 2001:db8::/32",
            ),
        ] {
            let e = s.ban(ban(addr, Some(300))).unwrap_err();
            match &e {
                Error::BanOverlaps { other: o, .. } => assert_eq!(o.to_string(), other, "{addr}"),
                e => panic!("{addr}: {e}"),
            }
            assert!(e.to_string().contains(words), "{addr}: {e}");
            assert_eq!(s, before, "a refused ban changes nothing");
        }
    }

    #[test]
    fn expiry_is_at_the_deadline() {
        let mut s = State::default();
        s.open(&g("ssh"), op(None, Some(100))).unwrap();
        s.open(&g("web"), op(None, None)).unwrap();
        assert!(s.expire(99).is_empty());
        let gone = s.expire(100);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].0, g("ssh"));
        assert!(!s.openings.contains_key("ssh"));
        assert_eq!(s.openings_of(&g("web")).len(), 1);
        assert_eq!(s.next_deadline(), None);
    }

    #[test]
    fn deadlines_move_back_only_as_planned() {
        let mut s = State::default();
        s.open(&g("ssh"), op(None, Some(1000))).unwrap();
        s.open(&g("ssh"), op(Some("192.0.2.1"), None)).unwrap();
        s.ban(ban("198.51.100.9", Some(5000))).unwrap();
        let planned = s.clone();
        // Set since the step: stays.
        s.open(&g("web"), op(None, Some(700))).unwrap();
        assert_eq!(s.move_deadlines(-600, &planned), 2);
        assert_eq!(s.openings_of(&g("ssh"))[0].until, Some(400));
        assert_eq!(s.openings_of(&g("ssh"))[1].until, None);
        assert_eq!(s.openings_of(&g("web"))[0].until, Some(700));
        assert_eq!(s.bans[0].until, Some(4400));
    }

    #[test]
    fn close_one_or_all() {
        let mut s = State::default();
        s.open(&g("ssh"), op(None, Some(100))).unwrap();
        s.open(&g("web"), op(None, None)).unwrap();
        assert_eq!(s.close(Some(&g("mosh"))), Vec::<GateName>::new());
        assert_eq!(s.close(Some(&g("ssh"))), vec![g("ssh")]);
        assert_eq!(s.close(None), vec![g("web")]);
        assert!(s.openings.is_empty());
    }

    #[test]
    fn save_and_load_round_trip() {
        let dir = std::env::temp_dir().join(format!("tgk-state-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let paths = Paths::new(&dir);
        let lock = StateLock::acquire(&paths).unwrap();
        assert_eq!(lock.load().unwrap(), State::default());
        let mut s = State {
            offset: Some(UpdateId(42)),
            ..State::default()
        };
        s.open(&g("ssh"), op(Some("2001:db8::/64"), Some(5)))
            .unwrap();
        lock.save(&s).unwrap();
        assert_eq!(lock.load().unwrap(), s);
        let names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
        fs::write(dir.join("state.json"), "{ half a fi").unwrap();
        assert_eq!(lock.load().unwrap(), State::default());
        assert!(dir.join("state.json.corrupt").exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_state_file_without_the_newest_date_loads() {
        let old: State =
            serde_json::from_str("{\"version\": 1, \"offset\": 900000000, \"openings\": {}}")
                .unwrap();
        assert_eq!(old.offset, Some(UpdateId(900_000_000)));
        assert_eq!(old.newest_carried, None);
        // Written only when known: a file without it stays as an older version wrote it.
        let text = serde_json::to_string(&old).unwrap();
        assert!(!text.contains("newest_carried"), "{text}");
        let new = State {
            newest_carried: Some(1_700_000_000),
            ..old
        };
        let text = serde_json::to_string(&new).unwrap();
        assert_eq!(serde_json::from_str::<State>(&text).unwrap(), new);
    }

    #[test]
    fn requests_resolve_their_length_and_chat_is_limited() {
        let limits = Limits {
            open_for: 900,
            max_open_for: 3600,
            max_age: 60,
        };
        let o = Opening::by_chat(Length::Default, None, UserId(5), 100, &limits);
        assert_eq!(
            o.map(|o| (o.until, o.by)),
            Ok((Some(1000), Actor::Telegram(UserId(5))))
        );
        let o = Opening::by_console(Length::Secs(7200), None, 100, &limits);
        assert_eq!(
            (o.until, o.by),
            (Some(7300), Actor::Console),
            "the console is not limited"
        );
        assert_eq!(
            Opening::by_chat(Length::Secs(7200), None, UserId(5), 100, &limits),
            Err(TooLong {
                asked: Some(7200),
                max: 3600
            })
        );
        assert_eq!(
            Opening::by_chat(Length::UntilClosed, None, UserId(5), 100, &limits),
            Err(TooLong {
                asked: None,
                max: 3600
            })
        );
        let unlimited = Limits {
            open_for: 0,
            max_open_for: 0,
            ..limits
        };
        let o = Opening::by_chat(Length::Default, None, UserId(5), 100, &unlimited);
        assert_eq!(o.map(|o| o.until), Ok(None), "OPEN_FOR=0: until closed");
        let o = Opening::by_console(Length::UntilClosed, None, 100, &limits);
        assert_eq!(o.until, None, "the console may open until closed");
    }

    /// A state file written before the wrong-code counts loads with none; one with them
    /// reads back what was written, and one without any second-factor record writes none.
    #[test]
    fn second_factor_records_load_from_old_and_new_files() {
        let old = r#"{"version": 1, "offset": 7, "openings": {}, "totp_used": [60000000]}"#;
        let s: State = serde_json::from_str(old).unwrap();
        assert_eq!(s.totp_used, vec![60_000_000]);
        assert!(s.totp_wrong.is_empty());
        let s = State {
            totp_wrong: vec![crate::base::totp::WrongCodes {
                user: UserId(111),
                at: vec![1_800_000_000, 1_800_000_600],
                locked_until: None,
            }],
            ..s
        };
        let text = serde_json::to_string(&s).unwrap();
        assert!(
            text.contains(r#""totp_wrong":[{"user":111,"at":[1800000000,1800000600]}]"#),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<State>(&text).unwrap(), s);
        let none = serde_json::to_string(&State::default()).unwrap();
        assert!(!none.contains("totp"), "{none}");
    }

    #[test]
    fn actors_are_saved_as_before() {
        for (a, text) in [
            (Actor::Telegram(UserId(123)), "\"telegram:123\""),
            (Actor::Console, "\"console\""),
        ] {
            assert_eq!(serde_json::to_string(&a).unwrap(), text);
            assert_eq!(serde_json::from_str::<Actor>(text).unwrap(), a);
        }
        assert_eq!(
            serde_json::from_str::<Actor>("\"x\"").unwrap(),
            Actor::Unknown
        );
        let o: Opening = serde_json::from_str("{\"until\": 5}").unwrap();
        assert_eq!(o.by, Actor::Unknown);
    }

    #[test]
    fn heartbeat_round_trip_and_other_instances_ignored() {
        let dir = std::env::temp_dir().join(format!("tgk-beat-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let paths = Paths {
            dir: dir.clone(),
            runtime: dir.join("run"),
        };
        fs::create_dir_all(&paths.runtime).unwrap();
        assert_eq!(Heartbeat::read(&paths), None);
        let hb = Heartbeat {
            at: 100,
            pid: 7,
            state_dir: dir.clone(),
            skew: Some(-3),
        };
        hb.write(&paths).unwrap();
        assert_eq!(Heartbeat::read(&paths), Some(hb.clone()));
        // An older one in the state directory, and another instance's newer one, lose.
        let old = Heartbeat {
            at: 50,
            ..hb.clone()
        };
        Heartbeat::write(
            &old,
            &Paths {
                dir: dir.clone(),
                runtime: dir.clone(),
            },
        )
        .unwrap();
        assert_eq!(Heartbeat::read(&paths).map(|h| h.at), Some(100));
        let other = Heartbeat {
            at: 999,
            state_dir: std::path::PathBuf::from("/elsewhere"),
            ..hb
        };
        other.write(&paths).unwrap();
        assert_eq!(Heartbeat::read(&paths).map(|h| h.at), Some(50));
        fs::remove_dir_all(&dir).unwrap();
    }
}
