//! The few POSIX calls std does not offer: signalling a process (the watchdog kills a hung
//! daemon) and starting a new session (the daemon it starts leaves cron's); a process group
//! of its own for an action (so a timeout kills everything it started), without the
//! daemon's capabilities; a terminal that does not echo the token `setup` asks for; a
//! timer on the wall clock that a step of the clock interrupts (the expiry thread); and a
//! `NETLINK_ROUTE` socket, to ask the kernel for the board's addresses where `/proc/net` is
//! hidden (the systemd unit's `ProcSubset=pid`); a `NETLINK_NETFILTER` socket subscribed to
//! nftables' notifications and a raw IP socket that reads the legacy xtables (other programs
//! changing the rules). All are plain libc functions std already links; declaring them here
//! avoids a `libc` dependency.
#![allow(unsafe_code)]

use std::ffi::c_ulong;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

unsafe extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
    fn setsid() -> i32;
    fn setpgid(pid: i32, pgid: i32) -> i32;
    fn prctl(option: i32, arg2: c_ulong, arg3: c_ulong, arg4: c_ulong, arg5: c_ulong) -> i32;
    fn tcgetattr(fd: i32, termios: *mut u8) -> i32;
    fn tcsetattr(fd: i32, when: i32, termios: *const u8) -> i32;
    #[link_name = "signal"]
    fn set_handler(sig: i32, handler: usize) -> usize;
    fn write(fd: i32, buf: *const u8, count: usize) -> isize;
    fn _exit(status: i32) -> !;
    fn geteuid() -> u32;
    fn getsockopt(fd: i32, level: i32, name: i32, value: *mut u8, len: *mut u32) -> i32;
    fn setsockopt(fd: i32, level: i32, name: i32, value: *const u8, len: u32) -> i32;
    fn socket(domain: i32, ty: i32, protocol: i32) -> i32;
    fn bind(fd: i32, addr: *const SockaddrNl, len: u32) -> i32;
    #[link_name = "connect"]
    fn connect_nl(fd: i32, addr: *const SockaddrNl, len: u32) -> i32;
    fn recvfrom(
        fd: i32,
        buf: *mut u8,
        len: usize,
        flags: i32,
        addr: *mut SockaddrNl,
        addr_len: *mut u32,
    ) -> isize;
    fn poll(fds: *mut PollFd, nfds: c_ulong, timeout: i32) -> i32;
    fn timerfd_create(clockid: i32, flags: i32) -> i32;
    // 32-bit targets: the call with a 64-bit time_t (musl >= 1.2, glibc >= 2.34); the plain
    // name there is the old ABI, whose time_t ends in 2038.
    #[cfg_attr(target_pointer_width = "32", link_name = "__timerfd_settime64")]
    fn timerfd_settime(fd: i32, flags: i32, new: *const ITimerSpec, old: *mut ITimerSpec) -> i32;
}

/// `struct pollfd`: the same layout on every Linux target.
#[repr(C)]
struct PollFd {
    fd: i32,
    events: i16,
    revents: i16,
}

const AF_NETLINK: i32 = 16;
const SOCK_RAW: i32 = 3;
const SOCK_CLOEXEC: i32 = 0o2_000_000;
const NETLINK_ROUTE: i32 = 0;
const POLLIN: i16 = 1;

/// A `NETLINK_ROUTE` socket talking to the kernel: requests are written to it, answers
/// read from it, each within a timeout.
pub(crate) struct RouteSocket {
    file: std::fs::File,
}

impl RouteSocket {
    pub(crate) fn open() -> std::io::Result<RouteSocket> {
        Ok(RouteSocket {
            file: std::fs::File::from(open_socket(AF_NETLINK, 0, NETLINK_ROUTE)?),
        })
    }

    /// Sends one request to the kernel (an unbound netlink socket's peer).
    pub(crate) fn send(&mut self, request: &[u8]) -> std::io::Result<()> {
        let n = self.file.write(request)?;
        if n != request.len() {
            return Err(std::io::Error::other(format!(
                "the kernel took {n} of {} bytes",
                request.len()
            )));
        }
        Ok(())
    }

    /// Reads one datagram into `buf`, waiting at most `timeout_ms`.
    pub(crate) fn recv(&mut self, buf: &mut [u8], timeout_ms: i32) -> std::io::Result<usize> {
        let mut p = PollFd {
            fd: self.file.as_raw_fd(),
            events: POLLIN,
            revents: 0,
        };
        loop {
            // SAFETY: `p` is one valid pollfd that lives across the call.
            let r = unsafe { poll(&mut p, 1, timeout_ms) };
            if r > 0 {
                break;
            }
            if r == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the kernel did not answer",
                ));
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        self.file.read(buf)
    }
}

/// `struct sockaddr_nl`: the same layout on every Linux target.
#[repr(C)]
#[derive(Default)]
struct SockaddrNl {
    family: u16,
    pad: u16,
    pid: u32,
    groups: u32,
}

pub(crate) const NETLINK_NETFILTER: i32 = 12;
const SOL_NETLINK: i32 = 270;
const NETLINK_ADD_MEMBERSHIP: i32 = 1;
const SO_RCVBUF: i32 = 8;
/// Like `SO_RCVBUF` but past `net.core.rmem_max`, for a process with `CAP_NET_ADMIN`.
const SO_RCVBUFFORCE: i32 = 33;
/// `O_NONBLOCK`, the same on x86, ARM and aarch64.
const SOCK_NONBLOCK: i32 = 0o4_000;
const MSG_TRUNC: i32 = 0x20;
const EAGAIN: i32 = 11;

/// Sets an integer socket option.
fn set_int_option(fd: &OwnedFd, level: i32, name: i32, value: i32) -> std::io::Result<()> {
    let bytes = value.to_ne_bytes();
    // SAFETY: the value is 4 readable bytes for the whole call, and the length says so;
    // the descriptor is borrowed from a live socket.
    let r = unsafe { setsockopt(fd.as_raw_fd(), level, name, bytes.as_ptr(), 4) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A raw socket of `domain` opened with `SOCK_CLOEXEC` (and `extra` type flags).
fn open_socket(domain: i32, extra: i32, protocol: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: socket(2) takes plain integers and touches no memory of ours.
    let fd = unsafe { socket(domain, SOCK_RAW | SOCK_CLOEXEC | extra, protocol) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a descriptor socket(2) has just opened, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// One datagram [`NetlinkEvents::recv`] read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Datagram {
    /// Its whole length, which is more than the buffer when it was cut.
    pub(crate) len: usize,
    /// The sender's port id: 0 is the kernel.
    pub(crate) sender: u32,
}

/// A non-blocking netlink socket subscribed to one multicast group: the kernel's
/// notifications queue on it until read.
pub(crate) struct NetlinkEvents {
    fd: OwnedFd,
}

impl NetlinkEvents {
    /// Subscribes to `group` of `protocol`, with a receive buffer of `rcvbuf` bytes if the
    /// kernel allows (else what `net.core.rmem_max` allows).
    pub(crate) fn subscribe(
        protocol: i32,
        group: u32,
        rcvbuf: usize,
    ) -> std::io::Result<NetlinkEvents> {
        let fd = open_socket(AF_NETLINK, SOCK_NONBLOCK, protocol)?;
        let addr = SockaddrNl {
            family: AF_NETLINK as u16,
            ..SockaddrNl::default()
        };
        // SAFETY: `addr` is a valid sockaddr_nl for the whole call and the length is its
        // size; the descriptor was just opened.
        let r = unsafe {
            bind(
                fd.as_raw_fd(),
                &addr,
                std::mem::size_of::<SockaddrNl>() as u32,
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // Connected to the kernel (port 0): the kernel refuses any other sender's datagram
        // (ECONNREFUSED to it), so a local user cannot wake the watcher or fill the buffer
        // the kernel's notifications need. Multicast from the kernel still arrives.
        // SAFETY: as for `bind` above: `addr` (port 0, no groups: the kernel) is a valid
        // sockaddr_nl for the whole call and the length is its size.
        let r = unsafe {
            connect_nl(
                fd.as_raw_fd(),
                &addr,
                std::mem::size_of::<SockaddrNl>() as u32,
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let size = i32::try_from(rcvbuf).unwrap_or(i32::MAX);
        if set_int_option(&fd, SOL_SOCKET, SO_RCVBUFFORCE, size).is_err() {
            // Without CAP_NET_ADMIN: as much as rmem_max allows. Too small a buffer shows
            // as an overflow later, not as an error now.
            let _ = set_int_option(&fd, SOL_SOCKET, SO_RCVBUF, size);
        }
        let group = i32::try_from(group).map_err(std::io::Error::other)?;
        set_int_option(&fd, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, group)?;
        Ok(NetlinkEvents { fd })
    }

    /// Reads one queued datagram into `buf` without waiting: `None` when nothing is queued.
    pub(crate) fn recv(&self, buf: &mut [u8]) -> std::io::Result<Option<Datagram>> {
        let mut from = SockaddrNl::default();
        let mut from_len = std::mem::size_of::<SockaddrNl>() as u32;
        // SAFETY: `buf` is writable for its length, `from` and `from_len` are writable for
        // the whole call and `from_len` is the size of `from`; with MSG_TRUNC the kernel
        // still writes at most `buf.len()` bytes (it only reports the whole length).
        let n = unsafe {
            recvfrom(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr(),
                buf.len(),
                MSG_TRUNC,
                &mut from,
                &mut from_len,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(EAGAIN) {
                return Ok(None);
            }
            return Err(e);
        }
        Ok(Some(Datagram {
            len: n as usize,
            sender: from.pid,
        }))
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

const AF_INET: i32 = 2;
const AF_INET6: i32 = 10;
const IPPROTO_RAW: i32 = 255;
const SOL_IP: i32 = 0;
const SOL_IPV6: i32 = 41;

/// A raw IPv4 or IPv6 socket, sent nothing: the handle through which ip_tables and
/// ip6_tables answer their `getsockopt` requests (`CAP_NET_RAW` to open, `CAP_NET_ADMIN`
/// to ask).
pub(crate) struct RawIpSocket {
    fd: OwnedFd,
    level: i32,
}

impl RawIpSocket {
    pub(crate) fn open(v6: bool) -> std::io::Result<RawIpSocket> {
        let (domain, level) = if v6 {
            (AF_INET6, SOL_IPV6)
        } else {
            (AF_INET, SOL_IP)
        };
        Ok(RawIpSocket {
            fd: open_socket(domain, 0, IPPROTO_RAW)?,
            level,
        })
    }

    /// `getsockopt` at the socket's IP level with `buf` as the value both ways (the
    /// request in, the answer out); returns the length the kernel gives back.
    pub(crate) fn get(&self, name: i32, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut len = u32::try_from(buf.len()).map_err(std::io::Error::other)?;
        // SAFETY: `buf` is readable and writable for `len` bytes and `len` is writable for
        // the whole call; the kernel writes at most `len` bytes; the descriptor is ours.
        let r = unsafe {
            getsockopt(
                self.fd.as_raw_fd(),
                self.level,
                name,
                buf.as_mut_ptr(),
                &mut len,
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(len as usize)
    }
}

pub(crate) const SIGKILL: i32 = 9;
const SIGINT: i32 = 2;
const SIG_DFL: usize = 0;
const SIG_IGN: usize = 1;
/// `prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)`.
const PR_CAP_AMBIENT: i32 = 47;
const PR_CAP_AMBIENT_CLEAR_ALL: c_ulong = 4;

/// Takes every variable out of this process's environment. For `notify-login`, whose
/// environment is the logging-in user's (`RUST_MIN_STACK` there would make the first thread
/// spawned abort the process, which must exit 0 whatever happens). Call it before any
/// thread exists.
pub(crate) fn clear_environment() {
    let keys: Vec<std::ffi::OsString> = std::env::vars_os().map(|(k, _)| k).collect();
    for k in keys {
        // SAFETY: called by `notify-login` before it spawns any thread (and nothing before
        // it in this process does), so no other thread can read the environment meanwhile.
        unsafe { std::env::remove_var(&k) };
    }
}

/// Whether this process runs as root (its effective user id is 0).
pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid(2) takes nothing, cannot fail and touches no memory of ours.
    unsafe { geteuid() == 0 }
}

/// `struct ucred`, what `SO_PEERCRED` gives: the same layout on every Linux target.
#[repr(C)]
#[derive(Default)]
struct UCred {
    pid: i32,
    uid: u32,
    gid: u32,
}

const SOL_SOCKET: i32 = 1;
/// 17 on x86, ARM and aarch64 (the targets tgknock is built for).
const SO_PEERCRED: i32 = 17;

/// The user id of the process at the other end of a Unix stream socket, as the kernel
/// recorded it when it connected (`SO_PEERCRED`): not something the peer can claim.
pub(crate) fn peer_uid(sock: &std::os::unix::net::UnixStream) -> std::io::Result<u32> {
    let mut cred = UCred::default();
    let mut len = std::mem::size_of::<UCred>() as u32;
    // SAFETY: `cred` and `len` are valid for writes for the whole call, and `len` is the
    // size of `cred`, so the kernel writes within it; the descriptor is borrowed from a
    // live socket.
    let r = unsafe {
        getsockopt(
            sock.as_raw_fd(),
            SOL_SOCKET,
            SO_PEERCRED,
            (&mut cred as *mut UCred).cast::<u8>(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if len as usize != std::mem::size_of::<UCred>() {
        return Err(std::io::Error::other("SO_PEERCRED gave a short answer"));
    }
    Ok(cred.uid)
}

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

/// `struct termios`, as an opaque buffer larger than any libc's (60 bytes on Linux).
type Termios = [u8; 256];
/// `c_lflag` is the fourth `tcflag_t` (a 32-bit integer on every Linux target).
const LFLAG_AT: usize = 12;
const ECHO: u32 = 0o10;
const TCSANOW: i32 = 0;

fn set_echo(fd: i32, on: bool) -> bool {
    let mut t: Termios = [0; 256];
    // SAFETY: the buffer is larger than the libc's termios, which tcgetattr fills.
    if unsafe { tcgetattr(fd, t.as_mut_ptr()) } != 0 {
        return false;
    }
    let mut word = [0u8; 4];
    word.copy_from_slice(&t[LFLAG_AT..LFLAG_AT + 4]);
    let mut lflag = u32::from_ne_bytes(word);
    if on {
        lflag |= ECHO;
    } else {
        lflag &= !ECHO;
    }
    t[LFLAG_AT..LFLAG_AT + 4].copy_from_slice(&lflag.to_ne_bytes());
    // SAFETY: the buffer holds what tcgetattr gave, with one flag changed.
    unsafe { tcsetattr(fd, TCSANOW, t.as_ptr()) == 0 }
}

/// Ctrl-C while the terminal does not echo: echo back on, a new line, exit 130.
extern "C" fn interrupted(_sig: i32) {
    set_echo(0, true);
    // SAFETY: write(2) and _exit(2) are async-signal-safe; the buffer is static.
    unsafe {
        write(2, b"\n".as_ptr(), 1);
        _exit(130);
    }
}

/// Standard input's terminal without echo until dropped (or until Ctrl-C, which puts the
/// echo back before the process ends).
pub(crate) struct NoEcho {
    active: bool,
}

impl NoEcho {
    /// Turns the echo of standard input's terminal off; does nothing when it is no terminal.
    pub(crate) fn new() -> NoEcho {
        // SAFETY: `interrupted` only calls async-signal-safe functions.
        unsafe {
            set_handler(SIGINT, interrupted as extern "C" fn(i32) as usize);
        }
        let active = set_echo(0, false);
        if !active {
            // SAFETY: puts back the default action.
            unsafe {
                set_handler(SIGINT, SIG_DFL);
            }
        }
        NoEcho { active }
    }
}

impl Drop for NoEcho {
    fn drop(&mut self) {
        if self.active {
            set_echo(0, true);
            // SAFETY: puts back the default action.
            unsafe {
                set_handler(SIGINT, SIG_DFL);
            }
        }
    }
}

/// Ctrl-C does nothing until dropped: for the moment files are being written.
pub(crate) struct NoInterrupt;

impl NoInterrupt {
    pub(crate) fn new() -> NoInterrupt {
        // SAFETY: SIG_IGN is a valid disposition.
        unsafe {
            set_handler(SIGINT, SIG_IGN);
        }
        NoInterrupt
    }
}

impl Drop for NoInterrupt {
    fn drop(&mut self) {
        // SAFETY: puts back the default action.
        unsafe {
            set_handler(SIGINT, SIG_DFL);
        }
    }
}

/// `struct timespec` with a 64-bit `time_t`. On 32-bit little-endian targets the libc's
/// is `{ int64 tv_sec; long tv_nsec; int pad; }`: the same bytes as two 64-bit fields
/// while `tv_nsec` (under 10⁹) is not negative.
#[repr(C)]
#[derive(Clone, Copy)]
struct Timespec {
    sec: i64,
    nsec: i64,
}

#[repr(C)]
struct ITimerSpec {
    interval: Timespec,
    value: Timespec,
}

const CLOCK_REALTIME: i32 = 0;
/// `O_CLOEXEC` and `O_NONBLOCK`, the same on x86, ARM and aarch64.
const TFD_CLOEXEC: i32 = 0o2_000_000;
const TFD_NONBLOCK: i32 = 0o4_000;
const TFD_TIMER_ABSTIME: i32 = 1;
const TFD_TIMER_CANCEL_ON_SET: i32 = 2;
const ECANCELED: i32 = 125;
const EINTR: i32 = 4;

// Not on a big-endian target: the layout above would put tv_nsec in the padding.
#[cfg(target_endian = "big")]
compile_error!("sys::Timespec assumes a little-endian target");

/// A timer on the wall clock (`CLOCK_REALTIME`) that fires at an absolute time and is
/// cancelled when the clock is set (`TFD_TIMER_CANCEL_ON_SET`): the expiry thread sleeps
/// to the next deadline and wakes at once when NTP steps the clock.
pub(crate) struct WallTimer {
    file: File,
}

/// What a [`WallTimer`] that polled readable says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimerNews {
    Fired,
    /// The wall clock was set (stepped) while it was armed.
    ClockSet,
    Nothing,
}

impl WallTimer {
    pub(crate) fn new() -> std::io::Result<WallTimer> {
        // SAFETY: timerfd_create(2) takes two integers and returns a new descriptor, or -1.
        let fd = unsafe { timerfd_create(CLOCK_REALTIME, TFD_CLOEXEC | TFD_NONBLOCK) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is a descriptor just opened, owned by nothing else.
        let file = unsafe { File::from_raw_fd(fd) };
        Ok(WallTimer { file })
    }

    /// Fires when the wall clock reaches `at` (since the Unix epoch; at once when it is
    /// past), or earlier with [`TimerNews::ClockSet`] when the clock is set.
    pub(crate) fn arm(&self, at: Duration) -> std::io::Result<()> {
        let secs = i64::try_from(at.as_secs()).unwrap_or(i64::MAX / 2);
        let spec = ITimerSpec {
            interval: Timespec { sec: 0, nsec: 0 },
            // A zero value would disarm it: the epoch's first nanosecond is as good.
            value: Timespec {
                sec: secs,
                nsec: i64::from(at.subsec_nanos()).max(i64::from(secs == 0)),
            },
        };
        // SAFETY: `spec` lives across the call and has the kernel's layout (above); no
        // old value is asked for.
        let r = unsafe {
            timerfd_settime(
                self.file.as_raw_fd(),
                TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET,
                &spec,
                std::ptr::null_mut(),
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Reads what happened (a non-blocking read).
    pub(crate) fn news(&self) -> TimerNews {
        let mut buf = [0u8; 8];
        match (&self.file).read(&mut buf) {
            Ok(8) => TimerNews::Fired,
            Err(e) if e.raw_os_error() == Some(ECANCELED) => TimerNews::ClockSet,
            _ => TimerNews::Nothing,
        }
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

/// Waits until one of `fds` can be read, or `timeout` passes (forever when `None`);
/// returns which can be read (none on a timeout or a signal).
pub(crate) fn wait_readable(
    fds: &[RawFd],
    timeout: Option<Duration>,
) -> std::io::Result<Vec<bool>> {
    let mut polled: Vec<PollFd> = fds
        .iter()
        .map(|&fd| PollFd {
            fd,
            events: POLLIN,
            revents: 0,
        })
        .collect();
    let ms = match timeout {
        // Rounded up: a wait of 0.4 ms is not a busy loop.
        Some(t) => i32::try_from(t.as_micros().div_ceil(1000)).unwrap_or(i32::MAX),
        None => -1,
    };
    // SAFETY: the array lives across the call and its length is the count passed.
    let r = unsafe { poll(polled.as_mut_ptr(), polled.len() as c_ulong, ms) };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(EINTR) {
            return Ok(vec![false; fds.len()]);
        }
        return Err(e);
    }
    Ok(polled.iter().map(|p| p.revents != 0).collect())
}

/// The process's effective user id (the approval socket lets only it and root ask).
pub(crate) fn euid() -> u32 {
    // SAFETY: geteuid(2) takes nothing and cannot fail.
    unsafe { geteuid() }
}
