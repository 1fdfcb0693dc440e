//! Network namespaces for the tests that run the real binary against real iptables: a
//! board namespace with a bridge, client namespaces joined to it by veth pairs, TCP echo
//! servers on the board, and helpers to run code (a thread) or a program inside one.
//!
//! Each scenario gets its own namespaces (names carry the test process's pid): a board
//! with a bridge `br0` holding 10.S.N.1/24 and fd00:S:N::1/64, and client namespaces, each
//! joined to the bridge by a veth pair, holding 10.S.N.2 (::2), 10.S.N.3 (::3)… S is the
//! test file's subnet (netns.rs 203, nonroot.rs 204). The test process stays in the root
//! namespace; short-lived helper threads enter a namespace with setns(2) to create sockets
//! there (a socket belongs to the namespace it was created in, whichever thread uses it
//! later). A dropped SYN shows as a connect timeout.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::{Env, FakeApi};

/// How long a connection attempt may take before it counts as dropped. On a veth in an
/// idle namespace an accepted SYN is answered in well under a millisecond.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(1500);

/// The ports the board's echo servers listen on: two gates' and one that is no gate.
pub const SSH: u16 = 22;
pub const WEB: u16 = 80;
pub const OTHER: u16 = 8080;

#[allow(unsafe_code)]
mod sys {
    use std::os::fd::AsRawFd;

    use std::os::fd::{FromRawFd, OwnedFd};

    unsafe extern "C" {
        pub fn setns(fd: i32, nstype: i32) -> i32;
        fn socket(domain: i32, ty: i32, protocol: i32) -> i32;
        fn sendto(
            fd: i32,
            buf: *const u8,
            len: usize,
            flags: i32,
            addr: *const SockaddrIn,
            addrlen: u32,
        ) -> isize;
    }

    const CLONE_NEWNET: i32 = 0x4000_0000;
    const AF_INET: i32 = 2;
    const SOCK_RAW: i32 = 3;
    /// A raw socket that sends whole IPv4 packets, header included (IP_HDRINCL implied).
    const IPPROTO_RAW: i32 = 255;

    #[repr(C)]
    pub struct SockaddrIn {
        family: u16,
        port: u16,
        addr: [u8; 4],
        zero: [u8; 8],
    }

    /// An IPv4 raw socket of the calling thread's namespace (root only).
    pub fn raw_v4() -> std::io::Result<OwnedFd> {
        // SAFETY: socket(2) takes plain integers and returns a new descriptor or -1.
        let fd = unsafe { socket(AF_INET, SOCK_RAW, IPPROTO_RAW) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is a descriptor socket(2) has just opened, owned by nothing else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// Sends one whole IPv4 packet on a raw socket, to `to`.
    pub fn send_v4(fd: &OwnedFd, packet: &[u8], to: std::net::Ipv4Addr) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        let addr = SockaddrIn {
            family: AF_INET as u16,
            port: 0,
            addr: to.octets(),
            zero: [0; 8],
        };
        // SAFETY: the buffer and the address are valid for their lengths for the call,
        // and `fd` is an open socket.
        let n = unsafe {
            sendto(
                fd.as_raw_fd(),
                packet.as_ptr(),
                packet.len(),
                0,
                &addr,
                std::mem::size_of::<SockaddrIn>() as u32,
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Moves the calling thread (only it) into the network namespace `ns`.
    pub fn enter(ns: &str) -> std::io::Result<()> {
        let f = std::fs::File::open(format!("/run/netns/{ns}"))?;
        // SAFETY: setns takes a valid open descriptor, which `f` keeps open for the call.
        if unsafe { setns(f.as_raw_fd(), CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Runs `f` on a fresh thread inside the network namespace `ns`.
pub fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        sys::enter(&ns).unwrap_or_else(|e| panic!("setns into {ns}: {e}"));
        f()
    })
    .join()
    .unwrap_or_else(|p| std::panic::resume_unwind(p))
}

/// The Internet checksum of `data` (RFC 1071).
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A TCP SYN from `src`:`sport` to `dst`:`dport`, as a whole IPv4 packet (the kernel
/// fills in the header's checksum and id).
pub fn syn_v4(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    let mut tcp = Vec::with_capacity(20);
    tcp.extend(sport.to_be_bytes());
    tcp.extend(dport.to_be_bytes());
    tcp.extend(1u32.to_be_bytes()); // sequence number
    tcp.extend(0u32.to_be_bytes()); // acknowledgement
    tcp.extend([5 << 4, 0x02]); // header length, SYN
    tcp.extend(1024u16.to_be_bytes()); // window
    tcp.extend([0, 0, 0, 0]); // checksum, urgent pointer
    let mut pseudo = Vec::with_capacity(32);
    pseudo.extend(src.octets());
    pseudo.extend(dst.octets());
    pseudo.extend([0, 6]);
    pseudo.extend((tcp.len() as u16).to_be_bytes());
    pseudo.extend(&tcp);
    let sum = checksum(&pseudo);
    tcp[16..18].copy_from_slice(&sum.to_be_bytes());
    let mut ip = vec![0x45, 0];
    ip.extend(((20 + tcp.len()) as u16).to_be_bytes());
    ip.extend([0, 0, 0, 0, 64, 6, 0, 0]);
    ip.extend(src.octets());
    ip.extend(dst.octets());
    ip.extend(tcp);
    ip
}

/// Sends `count` TCP SYNs to `dst`:`dport` from namespace `ns`, each from another
/// spoofed source: the addresses from `first` on. Returns how many were sent.
pub fn spoofed_syns(ns: &str, first: Ipv4Addr, count: u32, dst: Ipv4Addr, dport: u16) -> u32 {
    in_ns(ns, move || {
        let fd = sys::raw_v4().expect("a raw socket (root)");
        let base = u32::from(first);
        let mut sent = 0;
        for i in 0..count {
            let src = Ipv4Addr::from(base + i);
            let packet = syn_v4(src, 40_000 + (i % 20_000) as u16, dst, dport);
            if sys::send_v4(&fd, &packet, dst).is_ok() {
                sent += 1;
            }
            if i % 256 == 255 {
                // Let the board's softirq drain the veth's backlog now and then.
                std::thread::yield_now();
            }
        }
        sent
    })
}

/// Skips the test (a message on stderr), or fails it under `CI=true`.
pub fn skip(reason: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("this test cannot run under CI=true: {reason}");
    }
    eprintln!("SKIPPED: {reason}");
}

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .map(|u| u.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Legacy,
    Nft,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Legacy => "legacy",
            Backend::Nft => "nft",
        }
    }

    pub fn tool(self, fam: Fam) -> String {
        let base = match fam {
            Fam::V4 => "iptables",
            Fam::V6 => "ip6tables",
        };
        format!("/usr/sbin/{base}-{}", self.name())
    }

    /// The iptables/ip6tables tools (and their -restore) of this backend that are missing.
    pub fn missing_tools(self) -> Vec<String> {
        [Fam::V4, Fam::V6]
            .iter()
            .flat_map(|&f| [self.tool(f), format!("{}-restore", self.tool(f))])
            .filter(|t| !std::path::Path::new(t).exists())
            .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fam {
    V4,
    V6,
}
pub use Fam::{V4, V6};

/// Runs a scenario for both backends at once, each in its own namespaces (`n` and
/// `n + 100`), and fails if either failed.
pub fn both(n: u8, scenario: fn(Backend, u8)) {
    let failed = both_failed(n, scenario);
    assert!(failed.is_empty(), "failed with backend(s): {failed:?}");
}

/// Like [`both`], but returns the names of the backends whose scenario failed.
pub fn both_failed(n: u8, scenario: fn(Backend, u8)) -> Vec<&'static str> {
    std::thread::scope(|s| {
        let runs: Vec<_> = [(Backend::Legacy, n), (Backend::Nft, n + 100)]
            .into_iter()
            .map(|(b, n)| {
                let h = std::thread::Builder::new()
                    .name(format!(
                        "{}-{}",
                        std::thread::current().name().unwrap_or("netns"),
                        b.name()
                    ))
                    .spawn_scoped(s, move || scenario(b, n))
                    .unwrap();
                (b, h)
            })
            .collect();
        runs.into_iter()
            .filter_map(|(b, h)| h.join().is_err().then_some(b.name()))
            .collect()
    })
}

/// A test environment whose fake Bot API listens on the loopback of namespace `ns`,
/// where a daemon started with `ip netns exec ns` can reach it.
pub fn env_in(ns: &str) -> Env {
    let listener = in_ns(ns, || TcpListener::bind("127.0.0.1:0"))
        .expect("bind the fake Bot API in the namespace");
    Env::with_api(FakeApi::serve(listener))
}

/// Gives `dev` in namespace `ns` its two addresses (IPv6 without duplicate detection,
/// so it is usable at once) and brings it up.
fn address_up(ns: &str, dev: &str, v4: Ipv4Addr, v6: Ipv6Addr) -> Result<(), String> {
    ip(&["-n", ns, "addr", "add", &format!("{v4}/24"), "dev", dev])?;
    ip(&[
        "-n",
        ns,
        "addr",
        "add",
        &format!("{v6}/64"),
        "dev",
        dev,
        "nodad",
    ])?;
    ip(&["-n", ns, "link", "set", dev, "up"])?;
    Ok(())
}

pub fn run_ok(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn ip(args: &[&str]) -> Result<String, String> {
    run_ok(Command::new("ip").args(args))
}

/// `cmd` run inside the namespace `ns` by `ip netns exec` (which execs it in place, so
/// the child's pid is the program's), with the same program, arguments and environment.
pub fn in_netns(ns: &str, cmd: &Command) -> Command {
    let mut w = wrapped(&["ip", "netns", "exec", ns], cmd);
    w.stdin(Stdio::null());
    w
}

/// `cmd` run by the command line `wrapper` (which runs the words after it), with the
/// environment `cmd` was given.
pub fn wrapped(wrapper: &[&str], cmd: &Command) -> Command {
    let mut w = Command::new(wrapper[0]);
    w.args(&wrapper[1..])
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => w.env(k, v),
            None => w.env_remove(k),
        };
    }
    w
}

/// The namespaces of one scenario; deleted when dropped, panic or not.
pub struct Net {
    /// The second octet of the addresses (10.S.N.0/24, fd00:S:N::/64).
    subnet: u8,
    n: u8,
    pub board: String,
    pub clients: Vec<String>,
    stop: Arc<AtomicBool>,
}

impl Net {
    /// Namespaces `tgk<pid>-<subnet>-<n>-…` on 10.`subnet`.`n`.0/24 and
    /// fd00:`subnet`:`n`::/64 (`subnet` is written in hex digits in IPv6, as decimal in
    /// IPv4: 203 gives 10.203.n.x and fd00:203:n::x).
    pub fn new(subnet: u8, n: u8, clients: usize) -> Result<Net, String> {
        let pid = std::process::id();
        let net = Net {
            subnet,
            n,
            board: format!("tgk{pid}-{subnet}-{n}-b"),
            clients: (1..=clients)
                .map(|k| format!("tgk{pid}-{subnet}-{n}-c{k}"))
                .collect(),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let b = net.board.as_str();
        ip(&["netns", "add", b])?;
        for c in &net.clients {
            ip(&["netns", "add", c])?;
        }
        let (v4, v6) = net.addrs(0);
        ip(&["-n", b, "link", "set", "lo", "up"])?;
        ip(&[
            "-n",
            b,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "forward_delay",
            "0",
        ])?;
        address_up(b, "br0", v4, v6)?;
        for (k, c) in net.clients.iter().enumerate() {
            let port = format!("vb{k}");
            let (v4, v6) = net.addrs(k + 1);
            ip(&[
                "-n", b, "link", "add", &port, "type", "veth", "peer", "name", "vc", "netns", c,
            ])?;
            ip(&["-n", b, "link", "set", &port, "master", "br0"])?;
            ip(&["-n", b, "link", "set", &port, "up"])?;
            ip(&["-n", c, "link", "set", "lo", "up"])?;
            address_up(c, "vc", v4, v6)?;
        }
        net.serve_echo(&[SSH, WEB, OTHER])?;
        // The network works before any test judges a port closed by a timeout.
        for k in 0..net.clients.len() {
            for fam in [V4, V6] {
                let end = Instant::now() + Duration::from_secs(10);
                loop {
                    match net.reach(k, OTHER, fam) {
                        Reach::Open => break,
                        r if Instant::now() > end => {
                            return Err(format!(
                                "client {k} cannot reach the board's port {OTHER} over {fam:?}: {r:?}"
                            ));
                        }
                        _ => std::thread::sleep(Duration::from_millis(100)),
                    }
                }
            }
        }
        Ok(net)
    }

    /// Host `k`'s addresses: 0 is the board, 1.. the clients.
    pub fn addrs(&self, k: usize) -> (Ipv4Addr, Ipv6Addr) {
        let n = self.n;
        let h = 1 + k as u8;
        (
            Ipv4Addr::new(10, self.subnet, n, h),
            Ipv6Addr::new(
                0xfd00,
                hex_digits(self.subnet),
                n.into(),
                0,
                0,
                0,
                0,
                h.into(),
            ),
        )
    }

    pub fn board_addr(&self, fam: Fam, port: u16) -> SocketAddr {
        let (v4, v6) = self.addrs(0);
        let ip = match fam {
            V4 => IpAddr::V4(v4),
            V6 => IpAddr::V6(v6),
        };
        SocketAddr::new(ip, port)
    }

    /// TCP echo servers on the board, on every address of both families.
    pub fn serve_echo(&self, ports: &[u16]) -> Result<(), String> {
        let ports = ports.to_vec();
        let listeners = in_ns(&self.board, move || -> Result<Vec<TcpListener>, String> {
            let mut ls = Vec::new();
            for p in ports {
                ls.push(TcpListener::bind(("::", p)).map_err(|e| format!("bind [::]:{p}: {e}"))?);
                // Where [::] is IPv6-only, IPv4 needs its own socket; else this is in use.
                if let Ok(l) = TcpListener::bind(("0.0.0.0", p)) {
                    ls.push(l);
                }
            }
            Ok(ls)
        })?;
        for l in listeners {
            l.set_nonblocking(true).unwrap();
            let stop = Arc::clone(&self.stop);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match l.accept() {
                        Ok((s, _)) => {
                            std::thread::spawn(move || echo_loop(s));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
            });
        }
        Ok(())
    }

    /// A connection from client `k` to the board's `port`.
    pub fn connect(&self, k: usize, port: u16, fam: Fam) -> std::io::Result<TcpStream> {
        let to = self.board_addr(fam, port);
        in_ns(&self.clients[k], move || {
            TcpStream::connect_timeout(&to, CONNECT_TIMEOUT)
        })
    }

    pub fn reach(&self, k: usize, port: u16, fam: Fam) -> Reach {
        match self.connect(k, port, fam) {
            Ok(mut s) => match roundtrip(&mut s, b"knock") {
                Ok(()) => Reach::Open,
                Err(e) => Reach::Other(format!("connected, but no echo: {e}")),
            },
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
                ) =>
            {
                Reach::Dropped
            }
            Err(e) => Reach::Other(e.to_string()),
        }
    }

    /// Checks several (client, port, family, open?) expectations at once, in parallel.
    pub fn expect(&self, what: &str, checks: &[(usize, u16, Fam, bool)]) {
        let results: Vec<Reach> = std::thread::scope(|s| {
            let hs: Vec<_> = checks
                .iter()
                .map(|&(k, port, fam, _)| s.spawn(move || self.reach(k, port, fam)))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let wrong: Vec<String> = checks
            .iter()
            .zip(&results)
            .filter(|((_, _, _, open), r)| **r != if *open { Reach::Open } else { Reach::Dropped })
            .map(|((k, port, fam, open), r)| {
                let (c4, c6) = self.addrs(k + 1);
                let from = if *fam == V4 {
                    c4.to_string()
                } else {
                    c6.to_string()
                };
                format!(
                    "{from} -> {}: expected {}, got {r:?}",
                    self.board_addr(*fam, *port),
                    if *open { "open" } else { "dropped" }
                )
            })
            .collect();
        assert!(wrong.is_empty(), "{what}:\n{}", wrong.join("\n"));
    }

    /// `iptables -S` (or `ip6tables -S`) in the board.
    pub fn listing(&self, b: Backend, fam: Fam) -> String {
        run_ok(Command::new("ip").args(["netns", "exec", &self.board, &b.tool(fam), "-w", "-S"]))
            .unwrap()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for ns in self.clients.iter().chain([&self.board]) {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// Connected, and the echo came back.
    Open,
    /// The connection attempt timed out: the SYN was dropped.
    Dropped,
    /// Anything else (refused, reset…): neither verdict.
    Other(String),
}

pub fn echo_loop(mut s: TcpStream) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
    let mut buf = [0u8; 1024];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 || s.write_all(&buf[..n]).is_err() {
            break;
        }
    }
}

/// Sends `msg` and reads it back from the echo server.
pub fn roundtrip(s: &mut TcpStream, msg: &[u8]) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    s.write_all(msg)?;
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back)?;
    if back != msg {
        return Err(std::io::Error::other(format!(
            "echo returned {back:?} for {msg:?}"
        )));
    }
    Ok(())
}

/// 203 -> 0x203: the subnet's decimal digits read as hex, so fd00:203:… matches 10.203.….
fn hex_digits(v: u8) -> u16 {
    u16::from_str_radix(&v.to_string(), 16).unwrap()
}
