//! The saved state (openings and the Telegram offset), its files, and the lock.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::addr::Cidr;
use crate::error::{Error, Result};
use crate::files::{self, Dir};
use crate::gate::Gate;

/// Most openings one gate can have at once (each is a rule per port and family).
pub const MAX_OPENINGS_PER_GATE: usize = 16;

/// A gate's opening: to everyone (`from: None`) or one source, until a deadline or closed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Opening {
    #[serde(default)]
    pub from: Option<Cidr>,
    /// Unix seconds; `None`: until closed.
    #[serde(default)]
    pub until: Option<u64>,
    /// Who opened it (`telegram:123`, `console`), for status and logs.
    #[serde(default)]
    pub by: String,
}

/// What survives a restart.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    #[serde(default = "one")]
    pub version: u32,
    /// The next Telegram `update_id` to ask for: every update below it was handled.
    #[serde(default)]
    pub offset: Option<i64>,
    #[serde(default)]
    pub openings: BTreeMap<String, Vec<Opening>>,
}

fn one() -> u32 {
    1
}

impl State {
    /// Adds or renews an opening; one per source, so a renewal replaces the deadline.
    pub fn open(&mut self, gate: &str, opening: Opening) -> Result<(), String> {
        let list = self.openings.entry(gate.to_string()).or_default();
        list.retain(|o| o.from != opening.from);
        if list.len() >= MAX_OPENINGS_PER_GATE {
            return Err(format!(
                "{gate} already has {MAX_OPENINGS_PER_GATE} openings; close it first"
            ));
        }
        list.push(opening);
        list.sort_by_key(|o| o.from);
        Ok(())
    }

    /// Closes one gate or all; returns the names of gates that had openings.
    pub fn close(&mut self, gate: Option<&str>) -> Vec<String> {
        match gate {
            Some(g) => self
                .openings
                .remove(g)
                .filter(|l| !l.is_empty())
                .map(|_| vec![g.to_string()])
                .unwrap_or_default(),
            None => std::mem::take(&mut self.openings)
                .into_iter()
                .filter(|(_, l)| !l.is_empty())
                .map(|(g, _)| g)
                .collect(),
        }
    }

    /// Removes openings whose deadline is at or before `now`; returns them.
    pub fn expire(&mut self, now: u64) -> Vec<(String, Opening)> {
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

    /// Drops openings of gates the config no longer has.
    pub fn retain_gates(&mut self, gates: &[Gate]) -> Vec<String> {
        let unknown: Vec<String> = self
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

    /// The earliest deadline of any opening.
    pub fn next_deadline(&self) -> Option<u64> {
        self.openings
            .values()
            .flatten()
            .filter_map(|o| o.until)
            .min()
    }

    pub fn openings_of(&self, gate: &str) -> &[Opening] {
        self.openings.get(gate).map(Vec::as_slice).unwrap_or(&[])
    }
}

/// Where tgknock keeps its files: the state directory (`TGKNOCK_STATE_DIR`), and the
/// runtime directory for the heartbeat — systemd's `RuntimeDirectory=` (`/run/tgknock`, on
/// tmpfs, so an idle daemon writes nothing to the SD card), else the state directory.
#[derive(Debug, Clone)]
pub struct Paths {
    pub dir: PathBuf,
    pub runtime: PathBuf,
}

const STATE: &str = "state.json";
const LOCK: &str = "lock";
const PID: &str = "tgknock.pid";
const HEARTBEAT: &str = "heartbeat";
/// Where the systemd unit's `RuntimeDirectory=` lives; console commands, which do not run
/// under the unit, look for the daemon's heartbeat there too.
const SYSTEMD_RUNTIME: &str = "/run/tgknock";

impl Paths {
    pub fn new(dir: &Path) -> Paths {
        let runtime = std::env::var_os("RUNTIME_DIRECTORY")
            .and_then(|v| {
                // systemd joins several directories with ':'; ours is the first.
                let first = v.to_string_lossy().split(':').next()?.to_string();
                Some(PathBuf::from(first)).filter(|p| p.is_absolute())
            })
            .unwrap_or_else(|| dir.to_path_buf());
        Paths {
            dir: dir.to_path_buf(),
            runtime,
        }
    }

    /// The state directory, created when missing and refused when others can write it.
    pub fn state_dir(&self) -> Result<Dir> {
        Dir::open(&self.dir, "the state directory (TGKNOCK_STATE_DIR)")
    }

    pub fn state(&self) -> PathBuf {
        self.dir.join(STATE)
    }

    pub fn pid(&self) -> PathBuf {
        self.dir.join(PID)
    }

    /// The daemon's wake-up socket: console commands poke it after changing the state.
    pub fn wake(&self) -> PathBuf {
        self.dir.join("wake.sock")
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
pub struct StateLock {
    dir: Dir,
    _file: File,
}

impl StateLock {
    pub fn acquire(paths: &Paths) -> Result<StateLock> {
        let dir = paths.state_dir()?;
        let file = dir.open_lock(LOCK)?;
        file.lock()
            .map_err(|e| Error::file(dir.join(LOCK), "lock", e))?;
        Ok(StateLock { dir, _file: file })
    }

    pub fn load(&self) -> Result<State> {
        load(&self.dir)
    }

    /// Writes the state durably by rename: a crash leaves either the old file or the new
    /// one, never half of one, and the new one belongs to the directory's owner.
    pub fn save(&self, state: &State) -> Result<()> {
        let mut text = serde_json::to_string_pretty(state).expect("state serializes");
        text.push('\n');
        self.dir.replace(STATE, text.as_bytes(), true)
    }
}

/// The daemon's own lock on the pid file, held for its whole life: a second `run` fails.
pub struct PidLock {
    _file: File,
}

impl PidLock {
    /// Takes the pid-file lock and writes our pid, or says who holds it. A watchdog or a
    /// console command may hold a shared lock for an instant to see whether a daemon runs,
    /// so a lock that is busy is tried again for a second before giving up.
    pub fn acquire(paths: &Paths) -> Result<PidLock> {
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
                    return Err(Error::Runtime(match PidLock::holder(paths) {
                        Some(pid) => {
                            format!("another tgknock daemon is running (pid {pid}); stop it first")
                        }
                        None => format!(
                            "another tgknock daemon holds {} ; stop it first",
                            paths.pid().display()
                        ),
                    }));
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
    pub fn holder(paths: &Paths) -> Option<u32> {
        let path = paths.pid();
        let file = files::open_existing(&path).ok()?;
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

/// The daemon's sign of life, written after every poll (success or failure): the watchdog
/// and `status` read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Unix seconds of the last poll.
    pub at: u64,
    pub pid: u32,
    /// The state directory of the daemon, so a reader never takes another instance's.
    pub state_dir: PathBuf,
    /// The board's clock minus Telegram's, in seconds, as last measured.
    #[serde(default)]
    pub skew: Option<i64>,
}

impl Heartbeat {
    /// Replaces the heartbeat file by rename (never truncated in place, so never read
    /// half-written), in the runtime directory.
    pub fn write(&self, paths: &Paths) -> Result<()> {
        let dir = Dir::open(&paths.runtime, "the runtime directory")?;
        let mut text = serde_json::to_string(self).expect("heartbeat serializes");
        text.push('\n');
        dir.replace(HEARTBEAT, text.as_bytes(), false)
    }

    /// The newest heartbeat of the daemon of this state directory, wherever it runs from.
    pub fn read(paths: &Paths) -> Option<Heartbeat> {
        let mut places = vec![paths.runtime.clone(), PathBuf::from(SYSTEMD_RUNTIME)];
        places.push(paths.dir.clone());
        places.dedup();
        places
            .iter()
            .filter_map(|d| files::read_existing(&d.join(HEARTBEAT)).ok())
            .filter_map(|t| serde_json::from_str::<Heartbeat>(&t).ok())
            .filter(|h| h.state_dir == paths.dir)
            .max_by_key(|h| h.at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(from: Option<&str>, until: Option<u64>) -> Opening {
        Opening {
            from: from.map(|f| f.parse().unwrap()),
            until,
            by: "test".into(),
        }
    }

    #[test]
    fn open_renews_per_source() {
        let mut s = State::default();
        s.open("ssh", op(None, Some(100))).unwrap();
        s.open("ssh", op(None, Some(200))).unwrap();
        s.open("ssh", op(Some("1.2.3.4"), Some(150))).unwrap();
        assert_eq!(s.openings_of("ssh").len(), 2);
        assert_eq!(s.next_deadline(), Some(150));
        for i in 0..14 {
            s.open("ssh", op(Some(&format!("10.0.0.{i}")), None))
                .unwrap();
        }
        assert!(s.open("ssh", op(Some("10.9.9.9"), None)).is_err());
    }

    #[test]
    fn expiry_is_at_the_deadline() {
        let mut s = State::default();
        s.open("ssh", op(None, Some(100))).unwrap();
        s.open("web", op(None, None)).unwrap();
        assert!(s.expire(99).is_empty());
        let gone = s.expire(100);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].0, "ssh");
        assert!(!s.openings.contains_key("ssh"));
        assert_eq!(s.openings_of("web").len(), 1);
        assert_eq!(s.next_deadline(), None);
    }

    #[test]
    fn close_one_or_all() {
        let mut s = State::default();
        s.open("ssh", op(None, Some(100))).unwrap();
        s.open("web", op(None, None)).unwrap();
        assert_eq!(s.close(Some("mosh")), Vec::<String>::new());
        assert_eq!(s.close(Some("ssh")), vec!["ssh".to_string()]);
        assert_eq!(s.close(None), vec!["web".to_string()]);
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
            offset: Some(42),
            ..State::default()
        };
        s.open("ssh", op(Some("2001:db8::/64"), Some(5))).unwrap();
        lock.save(&s).unwrap();
        assert_eq!(lock.load().unwrap(), s);
        let names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
        fs::write(paths.state(), "{ half a fi").unwrap();
        assert_eq!(lock.load().unwrap(), State::default());
        assert!(dir.join("state.json.corrupt").exists());
        fs::remove_dir_all(&dir).unwrap();
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
            state_dir: PathBuf::from("/elsewhere"),
            ..hb
        };
        other.write(&paths).unwrap();
        assert_eq!(Heartbeat::read(&paths).map(|h| h.at), Some(50));
        fs::remove_dir_all(&dir).unwrap();
    }
}
