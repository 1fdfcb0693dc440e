//! Where tgknock keeps its files — the state directory, the runtime directory of the
//! heartbeat and the sockets — and the heartbeat, the daemon's sign of life.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::base::error::Result;
use crate::os::files::{self, Dir};

/// Where tgknock keeps its files: the state directory (`TGKNOCK_STATE_DIR`), and the
/// runtime directory for the heartbeat — systemd's `RuntimeDirectory=` (`/run/tgknock`, on
/// tmpfs, so an idle daemon writes nothing to the SD card), else the state directory.
#[derive(Debug, Clone)]
pub(crate) struct Paths {
    pub(crate) dir: PathBuf,
    pub(crate) runtime: PathBuf,
}

pub(crate) const STATE: &str = "state.json";
pub(crate) const LOCK: &str = "lock";
pub(crate) const PID: &str = "tgknock.pid";
const HEARTBEAT: &str = "heartbeat";
const APPROVE: &str = "approve.sock";
/// Files of the state directory written only under the state lock (`state.json`) or by
/// the daemon holding the pid lock (`tgknock.pid`, the heartbeat): whoever holds both
/// knows that a temporary of theirs nobody holds is a crash's, however young.
pub(crate) const GUARDED_FILES: &[&str] = &[STATE, PID, HEARTBEAT];
/// Where the systemd unit's `RuntimeDirectory=` lives; console commands, which do not run
/// under the unit, look for the daemon's heartbeat there too.
const SYSTEMD_RUNTIME: &str = "/run/tgknock";

impl Paths {
    pub(crate) fn new(dir: &Path) -> Paths {
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
    pub(crate) fn state_dir(&self) -> Result<Dir> {
        Dir::open(&self.dir)
    }

    pub(crate) fn pid(&self) -> PathBuf {
        self.dir.join(PID)
    }

    /// The daemon's wake-up socket: console commands poke it after changing the state.
    pub(crate) fn wake(&self) -> PathBuf {
        self.dir.join("wake.sock")
    }

    /// The daemon's socket for `approve-login`, in the runtime directory.
    pub(crate) fn approve(&self) -> PathBuf {
        self.runtime.join(APPROVE)
    }

    /// Where `approve-login` (run by pam_exec, without the unit's `RUNTIME_DIRECTORY`)
    /// finds that socket: beside the newest heartbeat of this state directory's daemon,
    /// else in the state directory.
    pub(crate) fn approve_found(&self) -> PathBuf {
        Heartbeat::newest(self)
            .map(|(_, d)| d.join(APPROVE))
            .unwrap_or_else(|| self.dir.join(APPROVE))
    }
}

/// The daemon's sign of life, written after every poll (success or failure): the watchdog
/// and `status` read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Heartbeat {
    /// Unix seconds of the last poll.
    pub(crate) at: u64,
    pub(crate) pid: u32,
    /// The state directory of the daemon, so a reader never takes another instance's.
    pub(crate) state_dir: PathBuf,
    /// The board's clock minus Telegram's, in seconds, as last measured.
    #[serde(default)]
    pub(crate) skew: Option<i64>,
}

impl Heartbeat {
    /// Replaces the heartbeat file by rename (never truncated in place, so never read
    /// half-written), in the runtime directory.
    pub(crate) fn write(&self, paths: &Paths) -> Result<()> {
        let dir = Dir::open(&paths.runtime)?;
        let mut text = serde_json::to_string(self).expect("heartbeat serializes");
        text.push('\n');
        dir.replace(HEARTBEAT, text.as_bytes(), false)
    }

    /// The newest heartbeat of the daemon of this state directory, wherever it runs from.
    pub(crate) fn read(paths: &Paths) -> Option<Heartbeat> {
        Heartbeat::newest(paths).map(|(h, _)| h)
    }

    /// The newest heartbeat of this state directory's daemon, and the directory it is in:
    /// the runtime directory, systemd's, or the state directory.
    fn newest(paths: &Paths) -> Option<(Heartbeat, PathBuf)> {
        let mut places = vec![paths.runtime.clone(), PathBuf::from(SYSTEMD_RUNTIME)];
        places.push(paths.dir.clone());
        places.dedup();
        places
            .into_iter()
            .filter_map(|d| {
                let t = files::read_existing(&d.join(HEARTBEAT)).ok()?;
                let h = serde_json::from_str::<Heartbeat>(&t).ok()?;
                (h.state_dir == paths.dir).then_some((h, d))
            })
            .max_by_key(|(h, _)| h.at)
    }
}
