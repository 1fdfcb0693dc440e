//! The few POSIX calls std does not offer: signalling a process (the watchdog kills a hung
//! daemon) and starting a new session (the daemon it starts leaves cron's); a process group
//! of its own for an action (so a timeout kills everything it started), without the
//! daemon's capabilities. All are plain libc functions std already links; declaring them
//! here avoids a `libc` dependency.
#![allow(unsafe_code)]

use std::ffi::c_ulong;

unsafe extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
    fn setsid() -> i32;
    fn setpgid(pid: i32, pgid: i32) -> i32;
    fn prctl(option: i32, arg2: c_ulong, arg3: c_ulong, arg4: c_ulong, arg5: c_ulong) -> i32;
}

pub(crate) const SIGKILL: i32 = 9;
/// `prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)`.
const PR_CAP_AMBIENT: i32 = 47;
const PR_CAP_AMBIENT_CLEAR_ALL: c_ulong = 4;

/// Sends `sig` to `pid`; false if there is no such process (or no permission).
pub(crate) fn signal(pid: u32, sig: i32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    unsafe { kill(pid, sig) == 0 }
}

/// Sends SIGKILL to every process of the group `pgid`; false when the group is empty.
pub(crate) fn kill_group(pgid: u32) -> bool {
    let Ok(pgid) = i32::try_from(pgid) else {
        return false;
    };
    // A pgid of 0 or 1 would name our own group, or every process.
    if pgid <= 1 {
        return false;
    }
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    unsafe { kill(-pgid, SIGKILL) == 0 }
}

/// Makes `cmd` start in a session of its own, detached from the caller's terminal.
pub(crate) fn detach(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setsid(2) is async-signal-safe, the only kind of call allowed between
    // fork and exec; it allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            setsid();
            Ok(())
        });
    }
}

/// Makes `cmd` lead a process group of its own (its pid is the group's id), and drops the
/// ambient capabilities the daemon runs with (`CAP_NET_ADMIN` under the systemd unit): what
/// it runs gets the daemon's user, not its firewall rights.
pub(crate) fn own_group(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setpgid(2) and prctl(2) are system calls that allocate nothing, allowed
    // between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if setpgid(0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Fails only on kernels before 4.3, which have no ambient capabilities to drop.
            prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
            Ok(())
        });
    }
}
