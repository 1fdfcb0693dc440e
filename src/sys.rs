//! The few POSIX calls std does not offer: signalling a process (the watchdog kills a hung
//! daemon) and starting a new session (the daemon it starts leaves cron's). Both are plain
//! libc functions std already links; declaring them here avoids a `libc` dependency.
#![allow(unsafe_code)]

unsafe extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
    fn setsid() -> i32;
}

pub(crate) const SIGKILL: i32 = 9;

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
