//! The saved state (openings and the Telegram offset), its files, and the lock.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::addr::Cidr;
use crate::error::{Error, Result};
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

/// The files under `TGKNOCK_STATE_DIR`.
#[derive(Debug, Clone)]
pub struct Paths {
    pub dir: PathBuf,
    pub state: PathBuf,
    pub pid: PathBuf,
    pub heartbeat: PathBuf,
    pub lock: PathBuf,
    /// The daemon's wake-up socket: console commands poke it after changing the state.
    pub wake: PathBuf,
}

impl Paths {
    pub fn new(dir: &Path) -> Paths {
        Paths {
            dir: dir.to_path_buf(),
            state: dir.join("state.json"),
            pid: dir.join("tgknock.pid"),
            heartbeat: dir.join("heartbeat"),
            lock: dir.join("lock"),
            wake: dir.join("wake.sock"),
        }
    }

    /// Creates the state directory (mode 0700) when missing.
    pub fn ensure_dir(&self) -> Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        if !self.dir.is_dir() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.dir)
                .map_err(|e| Error::file(&self.dir, "create the state directory", e))?;
        }
        Ok(())
    }
}

/// Reads the state; a missing file is the empty state (every gate closed). A file that
/// cannot be parsed is moved aside and replaced by the empty state: closed is the safe
/// default, and the reason is logged.
pub fn load(path: &Path) -> Result<State> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::default()),
        Err(e) => return Err(Error::file(path, "read", e)),
    };
    match serde_json::from_str::<State>(&text) {
        Ok(s) => Ok(s),
        Err(e) => {
            let aside = path.with_extension("json.corrupt");
            log::error!(
                "{} is not valid state ({e}); moved to {} and starting with every gate closed",
                path.display(),
                aside.display()
            );
            fs::rename(path, &aside).map_err(|e| Error::file(path, "move aside", e))?;
            Ok(State::default())
        }
    }
}

/// Writes the state by write-to-temporary, fsync, rename, fsync-directory: a crash leaves
/// either the old file or the new one, never half of one.
pub fn save(path: &Path, state: &State) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    let mut text = serde_json::to_string_pretty(state).expect("state serializes");
    text.push('\n');
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        Ok(())
    };
    write().map_err(|e| Error::file(&tmp, "write", e))?;
    fs::rename(&tmp, path).map_err(|e| Error::file(path, "replace", e))?;
    if let Some(dir) = path.parent()
        && let Ok(d) = File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

/// An exclusive advisory lock on `lock`, held while the state and the rules change.
pub struct StateLock {
    _file: File,
}

impl StateLock {
    pub fn acquire(paths: &Paths) -> Result<StateLock> {
        paths.ensure_dir()?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&paths.lock)
            .map_err(|e| Error::file(&paths.lock, "open", e))?;
        file.lock()
            .map_err(|e| Error::file(&paths.lock, "lock", e))?;
        Ok(StateLock { _file: file })
    }
}

/// The daemon's own lock on the pid file, held for its whole life: a second `run` fails.
pub struct PidLock {
    _file: File,
}

impl PidLock {
    /// Takes the pid-file lock and writes our pid, or says who holds it.
    pub fn acquire(paths: &Paths) -> Result<PidLock> {
        paths.ensure_dir()?;
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&paths.pid)
            .map_err(|e| Error::file(&paths.pid, "open", e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let other = fs::read_to_string(&paths.pid).unwrap_or_default();
                return Err(Error::Runtime(format!(
                    "another tgknock daemon is running (pid {}); stop it first",
                    other.trim()
                )));
            }
            Err(fs::TryLockError::Error(e)) => return Err(Error::file(&paths.pid, "lock", e)),
        }
        file.set_len(0)
            .and_then(|_| writeln!(file, "{}", std::process::id()))
            .and_then(|_| file.sync_all())
            .map_err(|e| Error::file(&paths.pid, "write", e))?;
        Ok(PidLock { _file: file })
    }

    /// Whether a daemon holds the pid lock now, and its pid.
    pub fn holder(paths: &Paths) -> Option<u32> {
        let file = File::open(&paths.pid).ok()?;
        match file.try_lock_shared() {
            Ok(()) => None,
            Err(_) => fs::read_to_string(&paths.pid).ok()?.trim().parse().ok(),
        }
    }
}

/// Records that the daemon is alive: the watchdog reads the time.
pub fn touch_heartbeat(paths: &Paths, now: u64) {
    if let Err(e) = fs::write(&paths.heartbeat, format!("{now}\n")) {
        log::warn!("cannot write {}: {e}", paths.heartbeat.display());
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
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.json");
        assert_eq!(load(&path).unwrap(), State::default());
        let mut s = State {
            offset: Some(42),
            ..State::default()
        };
        s.open("ssh", op(Some("2001:db8::/64"), Some(5))).unwrap();
        save(&path, &s).unwrap();
        assert_eq!(load(&path).unwrap(), s);
        assert!(!path.with_extension("json.tmp").exists());
        fs::write(&path, "{ half a fi").unwrap();
        assert_eq!(load(&path).unwrap(), State::default());
        assert!(path.with_extension("json.corrupt").exists());
        fs::remove_dir_all(&dir).unwrap();
    }
}
