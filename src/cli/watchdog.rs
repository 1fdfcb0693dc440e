//! `tgknock watchdog`, for cron: if the daemon is dead or its heartbeat is stale, kill what
//! is left and start `tgknock run` again, detached. Silent when all is well.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::base::error::{Error, Result};
use crate::os::files::Dir;
use crate::os::sys;
use crate::store::config::Config;
use crate::store::state::{Heartbeat, Paths, PidLock};

/// A heartbeat older than this means a hung daemon: three polls, plus room for the
/// request deadline of one poll (its timeout plus 15 s) and a slow start.
pub(crate) fn stale_after(cfg: &Config) -> u64 {
    3 * cfg.telegram.poll_timeout + 20
}

/// What the watchdog found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Health {
    Healthy { pid: u32, age: u64 },
    NotRunning,
    Hung { pid: u32, age: Option<u64> },
}

pub(crate) fn health(cfg: &Config, paths: &Paths, now: u64) -> Health {
    let Some(pid) = PidLock::holder(paths) else {
        return Health::NotRunning;
    };
    let beat = Heartbeat::read(paths).map(|h| h.at);
    match beat {
        Some(b) if now.saturating_sub(b) <= stale_after(cfg) => Health::Healthy {
            pid,
            age: now.saturating_sub(b),
        },
        _ => Health::Hung {
            pid,
            age: beat.map(|b| now.saturating_sub(b)),
        },
    }
}

/// Runs the watchdog; returns the exit code.
pub(crate) fn run(cfg: &Config, config_path: Option<&Path>) -> Result<i32> {
    let paths = Paths::new(&cfg.files.state_dir);
    let dir = paths.state_dir()?;
    // One watchdog at a time: a second waits, then finds the daemon the first started.
    let lock = dir.open_lock("watchdog.lock")?;
    lock.lock()
        .map_err(|e| Error::file(dir.join("watchdog.lock"), "lock", e))?;

    match health(cfg, &paths, crate::os::clock::now()) {
        Health::Healthy { .. } => return Ok(0),
        Health::NotRunning => println!("tgknock watchdog: the daemon is not running"),
        Health::Hung { pid, age } => {
            println!(
                "tgknock watchdog: the daemon (pid {pid}) is hung: {}; killing it",
                match age {
                    Some(a) => format!("last heartbeat {a} s ago (limit {} s)", stale_after(cfg)),
                    None => "no heartbeat".into(),
                }
            );
            sys::signal(pid, sys::SIGKILL);
            let end = Instant::now() + Duration::from_secs(10);
            while PidLock::holder(&paths).is_some() && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(50));
            }
            if PidLock::holder(&paths).is_some() {
                return Err(Error::Unkillable { pid });
            }
        }
    }
    start(cfg, &paths, &dir, config_path)
}

fn start(cfg: &Config, paths: &Paths, dir: &Dir, config_path: Option<&Path>) -> Result<i32> {
    let exe = std::env::current_exe().map_err(|e| Error::file("/proc/self/exe", "read", e))?;
    let exe = strip_deleted(exe);
    // Root's cron runs this: the log is opened without following a link, and belongs to
    // the state directory's owner.
    let log_file = &cfg.files.log_file;
    let log = dir.open_rw_path(log_file, true)?;
    let mut cmd = Command::new(&exe);
    cmd.arg("run");
    if let Some(p) = config_path {
        cmd.arg("--config").arg(p);
    }
    cmd.stdin(Stdio::null())
        .stdout(
            log.try_clone()
                .map_err(|e| Error::file(log_file, "open", e))?,
        )
        .stderr(log);
    sys::detach(&mut cmd);
    let mut child = cmd.spawn().map_err(|source| Error::Spawn {
        what: format!("{} run", exe.display()),
        source,
    })?;
    // Wait until it is healthy (holds the pid lock and has touched its heartbeat, so the
    // next watchdog cannot take it for hung) or exits (it could not start).
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(Error::DaemonExited {
                program: exe,
                status,
                log: log_file.clone(),
            });
        }
        if matches!(health(cfg, paths, crate::os::clock::now()), Health::Healthy { pid, .. } if pid == child.id())
        {
            println!(
                "tgknock watchdog: started `{} run` (pid {}), output to {}",
                exe.display(),
                child.id(),
                log_file.display()
            );
            return Ok(0);
        }
        if Instant::now() > end {
            println!(
                "tgknock watchdog: started `{} run` (pid {}), but it has not taken its lock or written its heartbeat yet; output to {}",
                exe.display(),
                child.id(),
                log_file.display()
            );
            return Ok(0);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// After an upgrade replaced the binary, /proc/self/exe reads "… (deleted)".
fn strip_deleted(p: PathBuf) -> PathBuf {
    match p.to_str().and_then(|s| s.strip_suffix(" (deleted)")) {
        Some(s) => PathBuf::from(s),
        None => p,
    }
}
