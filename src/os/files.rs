//! The files tgknock keeps in its directories, made so that whoever runs a command — the
//! service user, or root at the console — leaves nothing the other cannot use, and so that
//! nothing planted there is ever followed: every file is opened with `O_NOFOLLOW`, new
//! files are created under unique names with `O_EXCL` and renamed into place, and each file
//! is handed to the directory's owner with an explicit mode. Nothing there that is not a
//! plain file with one name is used: every open is `O_NONBLOCK` (a FIFO cannot hang it),
//! then the opened file is checked (`fstat`) before anything is read, written or handed
//! over — a FIFO, a device or a hard link planted there (to a file of root's, say) is
//! refused by name, never chowned, written or read as root.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::base::error::{Error, Result, Unsafe};

/// `O_NOFOLLOW` of Linux, whose value differs between architectures (std has no constant).
#[cfg(any(
    target_arch = "arm",
    target_arch = "aarch64",
    target_arch = "powerpc64"
))]
pub(crate) const O_NOFOLLOW: i32 = 0o100000;
#[cfg(not(any(
    target_arch = "arm",
    target_arch = "aarch64",
    target_arch = "powerpc64"
)))]
pub(crate) const O_NOFOLLOW: i32 = 0o400000;

/// `O_NONBLOCK` (the same on every Linux architecture tgknock is built for): opening a
/// FIFO never waits for its other end.
pub(crate) const O_NONBLOCK: i32 = 0o4000;

/// What every open of a file of tgknock's directories adds: never through a link, never
/// waiting on a FIFO.
const SAFE_OPEN: i32 = O_NOFOLLOW | O_NONBLOCK;

/// Mode of every file tgknock creates: the owner writes, its group (root's console, the
/// package's admins) reads.
pub(crate) const FILE_MODE: u32 = 0o640;

/// A directory tgknock writes into, with the owner its files are given to.
#[derive(Debug, Clone)]
pub(crate) struct Dir {
    pub(crate) path: PathBuf,
    uid: u32,
    gid: u32,
}

impl Dir {
    /// Opens the directory, creating it (mode 0700) when missing. A directory that anyone
    /// but its owner can write to is refused: another user could swap its files.
    pub(crate) fn open(path: &Path) -> Result<Dir> {
        use std::os::unix::fs::DirBuilderExt;
        let meta = match fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(path)
                    .map_err(|e| Error::file(path, "create the directory", e))?;
                fs::metadata(path).map_err(|e| Error::file(path, "read", e))?
            }
            Err(e) => return Err(Error::file(path, "read", e)),
        };
        let unsafe_ = |problem| Error::Unsafe {
            path: path.to_path_buf(),
            problem,
        };
        if !meta.is_dir() {
            return Err(unsafe_(Unsafe::NotADirectory));
        }
        let mode = meta.mode() & 0o7777;
        if mode & 0o002 != 0 {
            return Err(unsafe_(Unsafe::WritableByEveryone(mode)));
        }
        if mode & 0o020 != 0 {
            return Err(unsafe_(Unsafe::WritableByGroup(mode)));
        }
        Ok(Dir {
            path: path.to_path_buf(),
            uid: meta.uid(),
            gid: meta.gid(),
        })
    }

    pub(crate) fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// The text of `name`, or `None` when it does not exist. A link is refused.
    pub(crate) fn read(&self, name: &str) -> Result<Option<String>> {
        let path = self.join(name);
        let mut f = match OpenOptions::new()
            .read(true)
            .custom_flags(SAFE_OPEN)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(refused(&path, "read", e)),
        };
        plain(&f, &path)?;
        let mut text = String::new();
        f.read_to_string(&mut text)
            .map_err(|e| Error::file(&path, "read", e))?;
        Ok(Some(text))
    }

    /// Opens `name` to take a lock on it, creating it when missing. Read access is enough
    /// for a lock, so a lock file left by an older version (root's, 0644) still works.
    pub(crate) fn open_lock(&self, name: &str) -> Result<File> {
        let mut opts = OpenOptions::new();
        opts.read(true).custom_flags(SAFE_OPEN);
        self.open_or_create(&self.join(name), &opts)
    }

    /// Opens `name` for reading and writing (appending with `append`), creating it when
    /// missing, never through a link, owned by the directory's owner.
    pub(crate) fn open_rw(&self, name: &str, append: bool) -> Result<File> {
        let path = self.join(name);
        self.open_rw_path(&path, append)
    }

    /// [`Dir::open_rw`] for a path that may lie outside the directory (a log file), still
    /// given to the directory's owner.
    pub(crate) fn open_rw_path(&self, path: &Path, append: bool) -> Result<File> {
        let mut opts = OpenOptions::new();
        opts.read(true).custom_flags(SAFE_OPEN);
        if append {
            opts.append(true);
        } else {
            opts.write(true);
        }
        self.open_or_create(path, &opts)
    }

    /// Opens `path` with `opts` (which never follow a link), creating it when missing: the
    /// new file is made under a unique temporary name, given to the directory's owner with
    /// [`FILE_MODE`], and only then linked into place — so the name never stands for a file
    /// the owner cannot use, even when this process dies halfway (root killed between
    /// creating and handing over would otherwise leave root's file behind).
    fn open_or_create(&self, path: &Path, opts: &OpenOptions) -> Result<File> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = path.with_file_name(temporary_name(&name));
        loop {
            match opts.open(path) {
                Ok(f) => {
                    self.adopt(&f, path)?;
                    return Ok(f);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(refused(path, "open", e)),
            }
            // Locked until linked into place and its temporary name removed; unlocked
            // before the file is opened under its name (a lock file's lock is another's).
            let held = self
                .create_new(&tmp)
                .map_err(|e| refused(&tmp, "create", e))?;
            let linked = fs::hard_link(&tmp, path);
            let _ = fs::remove_file(&tmp);
            drop(held);
            match linked {
                // Linked, or another process was first: open what is there now.
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(refused(path, "create", e)),
            }
        }
    }

    /// Replaces `name` with a new file holding `bytes`, given to the directory's owner
    /// with [`FILE_MODE`] (see [`replace`]). With `durable`, the data and the rename are
    /// synced (a power cut keeps one); without, neither is (the heartbeat).
    pub(crate) fn replace(&self, name: &str, bytes: &[u8], durable: bool) -> Result<()> {
        let owner = Owner::Given(self.uid, self.gid);
        write_replacing(&self.join(name), bytes, FILE_MODE, owner, durable).map(|_| ())
    }

    /// Whether this process can write here (see [`probe_writable`]).
    pub(crate) fn probe_writable(&self) -> Result<()> {
        probe_writable(&self.path)
    }

    /// Removes temporary files a crash left behind (their names say they are tgknock's).
    /// Whether the writer is alive is never judged by its pid in `/proc`: under the unit's
    /// `ProtectProc=invisible` the service user does not see root's console commands
    /// there. A temporary is a live writer's when it was written at `before` or later (the
    /// daemon's start: whatever was made since is no crash's of before) or while its
    /// writer holds its lock (every writer does, from the moment it made it until it is
    /// renamed or linked into place); only an older one that nobody holds is removed.
    ///
    /// The temporaries of `guarded` names are written only under locks the caller holds
    /// (the daemon at its start holds the state lock and the pid lock): no live writer of
    /// one can exist, so their age says nothing and only their lock counts. A console
    /// command killed after the daemon started, holding the state lock the daemon then
    /// waited for, leaves a young `state.json` temporary that is a crash's all the same.
    pub(crate) fn remove_temporaries(&self, before: std::time::SystemTime, guarded: &[&str]) {
        let Ok(entries) = fs::read_dir(&self.path) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if !(name.starts_with(".tgknock-") && name.ends_with(".tmp")) {
                continue;
            }
            let path = e.path();
            let Ok(f) = OpenOptions::new()
                .read(true)
                .custom_flags(SAFE_OPEN)
                .open(&path)
            else {
                continue;
            };
            let is_guarded = guarded
                .iter()
                .any(|g| name.starts_with(&format!(".tgknock-{g}.")));
            let young = !is_guarded
                && f.metadata()
                    .and_then(|m| m.modified())
                    .map(|t| t >= before)
                    .unwrap_or(true);
            if young {
                continue;
            }
            // A writer holding it is alive, whatever /proc shows (or hides).
            if f.try_lock().is_ok() {
                log::debug!("removing {}, left by a crash", path.display());
                let _ = fs::remove_file(&path);
            }
        }
    }

    /// A new file that did not exist (not even as a link), mode [`FILE_MODE`], owned by
    /// the directory's owner, locked by its writer (see [`create_locked`]).
    fn create_new(&self, path: &Path) -> io::Result<File> {
        let f = create_locked(path, FILE_MODE)?;
        self.give(&f)?;
        Ok(f)
    }

    /// Checks that an opened file is a plain file with one name, and gives it to the
    /// directory's owner with [`FILE_MODE`] when it is not theirs yet (root's console left
    /// it).
    fn adopt(&self, f: &File, path: &Path) -> Result<()> {
        let meta = plain(f, path)?;
        if (meta.uid(), meta.gid()) != (self.uid, self.gid)
            && let Err(e) = self.give(f)
        {
            // Only root can give a file away; an unprivileged user can still use a lock
            // file that root left, and is told of anything else by the next open.
            log::debug!(
                "cannot hand {} to its directory's owner: {e}",
                path.display()
            );
        }
        if meta.mode() & 0o7777 != FILE_MODE && meta.uid() == self.uid {
            let _ = f.set_permissions(fs::Permissions::from_mode(FILE_MODE));
        }
        Ok(())
    }

    fn give(&self, f: &File) -> io::Result<()> {
        let meta = f.metadata()?;
        if (meta.uid(), meta.gid()) == (self.uid, self.gid) {
            return Ok(());
        }
        std::os::unix::fs::fchown(f, Some(self.uid), Some(self.gid))
    }
}

/// Who a replaced file belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    /// Its writer (the process that replaces it).
    Writer,
    /// `uid:gid`; a file that cannot be given to them is not written.
    Given(u32, u32),
    /// `uid:gid` when this process may give it away (root), else its writer.
    IfPossible(u32, u32),
}

/// Replaces `path` with a new file holding `bytes`: written under a unique temporary name
/// beside it (`O_EXCL`, never through a link, locked by its writer until renamed, so the
/// state directory's cleanup of a crash's temporaries spares it), with `mode` whatever the
/// umask and given to `owner`, synced, renamed over the old file, and the rename synced:
/// a reader sees the old file or the new one, never half of one, and a power cut keeps
/// one. Returns whether the file was given to another owner than its writer.
pub(crate) fn replace(path: &Path, bytes: &[u8], mode: u32, owner: Owner) -> Result<bool> {
    write_replacing(path, bytes, mode, owner, true)
}

/// [`replace`], synced only when `durable`.
fn write_replacing(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    owner: Owner,
    durable: bool,
) -> Result<bool> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(temporary_name(&name));
    let mut given = false;
    let written = (|| -> io::Result<File> {
        // Locked (by `create_locked`) until written, synced and renamed.
        let mut f = create_locked(&tmp, mode)?;
        given = hand_over(&f, owner)?;
        f.write_all(bytes)?;
        if durable {
            f.sync_all()?;
        }
        Ok(f)
    })();
    let held = match written {
        Ok(f) => f,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(Error::file(path, "write", e));
        }
    };
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(Error::file(path, "replace", e));
    }
    drop(held);
    if durable && let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(given)
}

/// A new file that did not exist (not even as a link) with `mode` whatever the umask,
/// locked by its writer: until it is linked or renamed into place (or dropped), the
/// daemon's cleanup of a crash's temporaries sees it is a live writer's.
fn create_locked(path: &Path, mode: u32) -> io::Result<File> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(O_NOFOLLOW)
        .open(path)?;
    if let Err(e) = f.try_lock() {
        log::debug!("cannot lock {}: {e}", path.display());
    }
    // The umask may have taken bits away: set the mode explicitly.
    f.set_permissions(fs::Permissions::from_mode(mode))?;
    Ok(f)
}

/// Gives an opened file to `owner`; whether it changed hands.
fn hand_over(f: &File, owner: Owner) -> io::Result<bool> {
    let (Owner::Given(uid, gid) | Owner::IfPossible(uid, gid)) = owner else {
        return Ok(false);
    };
    let meta = f.metadata()?;
    if (meta.uid(), meta.gid()) == (uid, gid) {
        return Ok(false);
    }
    match std::os::unix::fs::fchown(f, Some(uid), Some(gid)) {
        Ok(()) => Ok(true),
        Err(e) if owner == Owner::Given(uid, gid) => Err(e),
        Err(e) => {
            log::debug!("cannot hand a new file to {uid}:{gid}: {e}");
            Ok(false)
        }
    }
}

/// Fails when `dir` takes no new file: creates a probe file under a unique name (never
/// through a link) and removes it.
pub(crate) fn probe_writable(dir: &Path) -> Result<()> {
    let tmp = dir.join(temporary_name("check"));
    let f = create_locked(&tmp, FILE_MODE).map_err(|e| Error::file(&tmp, "create", e));
    let _ = fs::remove_file(&tmp);
    f.map(|_| ())
}

/// Writes a secret file (`totp-setup`): mode 0600, replaced as [`replace`] does. Given to
/// the owner of `service_dir` (the state directory: the service's user) when this process
/// can (root), so the daemon can read it; says to whom, for the message.
pub(crate) fn write_secret(path: &Path, text: &str, service_dir: &Path) -> Result<String> {
    let owner = match fs::metadata(service_dir) {
        Ok(m) => Owner::IfPossible(m.uid(), m.gid()),
        Err(_) => Owner::Writer,
    };
    Ok(if replace(path, text.as_bytes(), 0o600, owner)? {
        format!(", owned by the owner of {}", service_dir.display())
    } else {
        String::new()
    })
}

/// Opens an existing file read-only, never through a link, nor a FIFO or a hard link (for
/// readers that must not create anything: the pid file and the heartbeat).
pub(crate) fn open_existing(path: &Path) -> io::Result<File> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(SAFE_OPEN)
        .open(path)?;
    plain(&f, path).map_err(|e| io::Error::other(e.to_string()))?;
    Ok(f)
}

/// The metadata of an opened file that is a plain file with one name; else the refusal,
/// naming it. A second name that lasts a moment only (another tgknock process linking a
/// new file into place, then removing its temporary name) is waited out.
fn plain(f: &File, path: &Path) -> Result<fs::Metadata> {
    let mut tries = 0;
    loop {
        let meta = f.metadata().map_err(|e| Error::file(path, "read", e))?;
        if !meta.is_file() {
            return Err(Error::Unsafe {
                path: path.to_path_buf(),
                problem: Unsafe::NotAFile,
            });
        }
        if meta.nlink() <= 1 {
            return Ok(meta);
        }
        tries += 1;
        if tries > 5 {
            return Err(Error::Unsafe {
                path: path.to_path_buf(),
                problem: Unsafe::HardLinked(meta.nlink()),
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// The text of an existing file, never read through a link.
pub(crate) fn read_existing(path: &Path) -> io::Result<String> {
    let mut text = String::new();
    open_existing(path)?.read_to_string(&mut text)?;
    Ok(text)
}

/// A unique name in the directory for a temporary file of `name`.
fn temporary_name(name: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        ".tgknock-{name}.{}.{}.{nanos}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// The error of a failed open, saying plainly when the path is a link (`ELOOP`).
fn refused(path: &Path, action: &'static str, e: io::Error) -> Error {
    const ELOOP: i32 = 40;
    if e.raw_os_error() == Some(ELOOP) {
        return Error::Unsafe {
            path: path.to_path_buf(),
            problem: Unsafe::Link,
        };
    }
    Error::file(path, action, e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tgk-files-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn creates_the_directory_and_refuses_one_others_can_write() {
        let p = scratch("dir");
        let d = Dir::open(&p).unwrap();
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o700);
        d.replace("state.json", b"{}", true).unwrap();
        assert_eq!(d.read("state.json").unwrap().as_deref(), Some("{}"));
        assert_eq!(d.read("missing").unwrap(), None);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o777)).unwrap();
        let e = Dir::open(&p).unwrap_err().to_string();
        assert!(
            e.contains("writable by everyone") && e.contains("chmod go-w"),
            "{e}"
        );
        fs::set_permissions(&p, fs::Permissions::from_mode(0o770)).unwrap();
        let e = Dir::open(&p).unwrap_err().to_string();
        assert!(e.contains("writable by its group"), "{e}");
        fs::remove_dir_all(&p).unwrap();
    }

    #[test]
    fn links_are_never_followed() {
        let p = scratch("links");
        let d = Dir::open(&p).unwrap();
        let target = p.join("target");
        fs::write(&target, "precious").unwrap();
        for name in ["lock", "state.json", "tgknock.pid"] {
            std::os::unix::fs::symlink(&target, p.join(name)).unwrap();
        }
        let e = d.open_lock("lock").unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        assert!(
            d.read("state.json")
                .unwrap_err()
                .to_string()
                .contains("symbolic link")
        );
        assert!(d.open_rw("tgknock.pid", false).is_err());
        // Replacing renames over the link: the target is untouched.
        d.replace("state.json", b"new", true).unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), "precious");
        assert!(
            !fs::symlink_metadata(p.join("state.json"))
                .unwrap()
                .is_symlink()
        );
        fs::remove_dir_all(&p).unwrap();
    }

    /// `ProtectProc=invisible` (and `ProcSubset=pid`) hide root's processes from the
    /// service user: the daemon must never judge a temporary by its writer's pid in
    /// `/proc`. A fresh temporary stays, whoever wrote it; an old one whose writer holds
    /// its lock (a root console command stalled mid-write) stays; an old, unlocked one is
    /// a crash's and goes.
    #[test]
    fn a_live_writers_temporary_is_never_removed_whatever_proc_shows() {
        let p = scratch("live");
        let d = Dir::open(&p).unwrap();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
        // A pid no /proc shows (as an invisible one looks to the service user).
        let fresh = p.join(".tgknock-state.json.999999999.1.2.tmp");
        fs::write(&fresh, "being written by root's console").unwrap();
        let stalled = p.join(".tgknock-state.json.999999999.3.4.tmp");
        fs::write(&stalled, "root's console, stopped mid-write").unwrap();
        let held = OpenOptions::new().read(true).open(&stalled).unwrap();
        held.set_modified(old).unwrap();
        held.lock().unwrap();
        let crashed = p.join(".tgknock-lock.999999999.5.6.tmp");
        fs::write(&crashed, "left by a crash").unwrap();
        File::options()
            .write(true)
            .open(&crashed)
            .unwrap()
            .set_modified(old)
            .unwrap();
        // The daemon started a minute ago: `fresh` was written since.
        let started = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        d.remove_temporaries(started, &[]);
        assert!(fresh.exists(), "a fresh temporary was removed");
        assert!(
            stalled.exists(),
            "a temporary whose writer holds it was removed"
        );
        assert!(!crashed.exists(), "a crash's old temporary was kept");
        drop(held);
        d.remove_temporaries(started, &[]);
        assert!(!stalled.exists(), "an old temporary nobody holds was kept");
        assert!(fresh.exists(), "a fresh temporary was removed");
        fs::remove_dir_all(&p).unwrap();
    }

    /// Found by the crash suite: root's console killed after a daemon started, while the
    /// daemon waited for the state lock it held, left a `state.json` temporary younger than
    /// the start; the start kept it as a live writer's and it stayed for good. Names
    /// written only under locks the caller holds go whatever their age, unless held.
    #[test]
    fn a_young_temporary_of_a_name_the_caller_guards_is_a_crashs() {
        let p = scratch("guarded");
        let d = Dir::open(&p).unwrap();
        let started = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        let killed = p.join(".tgknock-state.json.999999999.1.2.tmp");
        fs::write(&killed, "root's console, killed mid-write").unwrap();
        let held = p.join(".tgknock-state.json.999999999.3.4.tmp");
        fs::write(&held, "a writer holding it").unwrap();
        let holder = OpenOptions::new().read(true).open(&held).unwrap();
        holder.lock().unwrap();
        let making = p.join(".tgknock-lock.999999999.5.6.tmp");
        fs::write(&making, "a console making the lock file").unwrap();
        d.remove_temporaries(started, &["state.json", "tgknock.pid"]);
        assert!(
            !killed.exists(),
            "a killed writer's young temporary was kept"
        );
        assert!(
            held.exists(),
            "a temporary whose writer holds it was removed"
        );
        assert!(
            making.exists(),
            "a young temporary of an unguarded name was removed"
        );
        drop(holder);
        fs::remove_dir_all(&p).unwrap();
    }

    #[test]
    fn files_get_an_explicit_mode_whatever_the_umask() {
        let p = scratch("mode");
        let d = Dir::open(&p).unwrap();
        d.replace("state.json", b"x", false).unwrap();
        let _ = d.open_lock("lock").unwrap();
        let _ = d.open_rw("tgknock.pid", false).unwrap();
        for name in ["state.json", "lock", "tgknock.pid"] {
            let m = fs::metadata(p.join(name)).unwrap().mode() & 0o7777;
            assert_eq!(m, FILE_MODE, "{name}");
        }
        d.probe_writable().unwrap();
        // A crash's temporary (old, nobody holds it) goes; a live writer's (fresh) stays.
        let crashed = p.join(".tgknock-state.json.999999999.2.3.tmp");
        fs::write(&crashed, "left by a crash").unwrap();
        File::options()
            .write(true)
            .open(&crashed)
            .unwrap()
            .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(3600))
            .unwrap();
        fs::write(p.join(".tgknock-lock.1.2.3.tmp"), "being made").unwrap();
        d.remove_temporaries(
            std::time::SystemTime::now() - std::time::Duration::from_secs(60),
            &[],
        );
        assert!(p.join(".tgknock-lock.1.2.3.tmp").exists());
        fs::remove_file(p.join(".tgknock-lock.1.2.3.tmp")).unwrap();
        let names: Vec<String> = fs::read_dir(&p)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
        fs::remove_dir_all(&p).unwrap();
    }

    /// The one atomic write (state, heartbeat, setup's files, the TOTP secret): the mode
    /// asked whatever the umask, a link at the name replaced rather than followed, the
    /// owner kept when it is the writer, nothing left behind when it fails, and the error
    /// naming the file.
    #[test]
    fn replace_writes_a_new_file_with_its_mode_and_leaves_nothing_behind() {
        let p = scratch("replace");
        fs::create_dir_all(&p).unwrap();
        let target = p.join("target");
        fs::write(&target, "precious").unwrap();
        let path = p.join("token");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        for (mode, text) in [(0o600, "first"), (0o640, "second")] {
            let given = replace(&path, text.as_bytes(), mode, Owner::Writer).unwrap();
            assert!(!given);
            let m = fs::symlink_metadata(&path).unwrap();
            assert!(m.is_file());
            assert_eq!(m.mode() & 0o7777, mode);
            assert_eq!(fs::read_to_string(&path).unwrap(), text);
        }
        assert_eq!(fs::read_to_string(&target).unwrap(), "precious");
        // Its own owner: nothing to hand over.
        let me = fs::metadata(&path).unwrap();
        let own = Owner::Given(me.uid(), me.gid());
        assert!(!replace(&path, b"third", 0o600, own).unwrap());
        let e = replace(&p.join("missing/token"), b"x", 0o600, Owner::Writer)
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing/token") && e.contains("write"), "{e}");
        let names: Vec<String> = fs::read_dir(&p)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
        assert!(probe_writable(&p).is_ok());
        assert!(probe_writable(&p.join("missing")).is_err());
        fs::remove_dir_all(&p).unwrap();
    }
}
