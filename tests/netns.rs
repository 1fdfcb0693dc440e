//! Tier 3: the real binary against real iptables/ip6tables (legacy and nft) inside network
//! namespaces, judged by real TCP connections.
//!
//! Each scenario gets its own namespaces (names carry the test process's pid): a board
//! with a bridge `br0` holding 10.203.N.1/24 and fd00:203:N::1/64, and one or two client
//! namespaces, each joined to the bridge by a veth pair, holding 10.203.N.2 (::2) and
//! 10.203.N.3 (::3). The test process stays in the root namespace; short-lived helper
//! threads enter a namespace with setns(2) to create sockets there (a socket belongs to
//! the namespace it was created in, whichever thread uses it later). The board runs TCP
//! echo servers on 22 and 80 (the gates) and 8080 (not a gate: proves the network works),
//! and the fake Bot API on its own 127.0.0.1. A dropped SYN shows as a connect timeout.
//!
//! Every scenario runs for both backends at once (iptables-legacy and iptables-nft, in
//! separate namespaces), so the file costs about its slowest scenario twice over.
//! Without root or `ip netns`, the tests print `SKIPPED: …` and pass, except under
//! `CI=true`, where no tier may skip.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::support::{Daemon, Env, FakeApi, OWNER};

/// How long a connection attempt may take before it counts as dropped. On a veth in an
/// idle namespace an accepted SYN is answered in well under a millisecond.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(1500);

const GATES: &str = "ssh=22/tcp web=80/tcp";
const SSH: u16 = 22;
const WEB: u16 = 80;
const OTHER: u16 = 8080;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

#[allow(unsafe_code)]
mod sys {
    use std::os::fd::AsRawFd;

    unsafe extern "C" {
        pub fn setns(fd: i32, nstype: i32) -> i32;
    }

    const CLONE_NEWNET: i32 = 0x4000_0000;

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
fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        sys::enter(&ns).unwrap_or_else(|e| panic!("setns into {ns}: {e}"));
        f()
    })
    .join()
    .unwrap_or_else(|p| std::panic::resume_unwind(p))
}

/// Skips the test (a message on stderr), or fails it under `CI=true`.
fn skip(reason: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("the netns tests cannot run under CI=true: {reason}");
    }
    eprintln!("SKIPPED: {reason}");
}

fn is_root() -> bool {
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
enum Backend {
    Legacy,
    Nft,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Legacy => "legacy",
            Backend::Nft => "nft",
        }
    }

    fn tool(self, fam: Fam) -> String {
        let base = match fam {
            Fam::V4 => "iptables",
            Fam::V6 => "ip6tables",
        };
        format!("/usr/sbin/{base}-{}", self.name())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fam {
    V4,
    V6,
}
use Fam::{V4, V6};

/// Runs a scenario for both backends at once, each in its own namespaces (`n` and
/// `n + 100`), and fails if either failed.
fn both(n: u8, scenario: fn(Backend, u8)) {
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
        let failed: Vec<&str> = runs
            .into_iter()
            .filter_map(|(b, h)| h.join().is_err().then_some(b.name()))
            .collect();
        assert!(failed.is_empty(), "failed with backend(s): {failed:?}");
    });
}

fn run_ok(cmd: &mut Command) -> Result<String, String> {
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

fn ip(args: &[&str]) -> Result<String, String> {
    run_ok(Command::new("ip").args(args))
}

/// `cmd` run inside the namespace `ns` by `ip netns exec` (which execs it in place, so
/// the child's pid is the program's), with the same program, arguments and environment.
fn in_netns(ns: &str, cmd: &Command) -> Command {
    let mut w = Command::new("ip");
    w.args(["netns", "exec", ns])
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => w.env(k, v),
            None => w.env_remove(k),
        };
    }
    w.stdin(Stdio::null());
    w
}

/// The namespaces of one scenario; deleted when dropped, panic or not.
struct Net {
    n: u8,
    board: String,
    clients: Vec<String>,
    stop: Arc<AtomicBool>,
}

impl Net {
    fn new(n: u8, clients: usize) -> Result<Net, String> {
        let pid = std::process::id();
        let net = Net {
            n,
            board: format!("tgk{pid}-{n}-b"),
            clients: (1..=clients)
                .map(|k| format!("tgk{pid}-{n}-c{k}"))
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
        ip(&["-n", b, "addr", "add", &format!("{v4}/24"), "dev", "br0"])?;
        ip(&[
            "-n",
            b,
            "addr",
            "add",
            &format!("{v6}/64"),
            "dev",
            "br0",
            "nodad",
        ])?;
        ip(&["-n", b, "link", "set", "br0", "up"])?;
        for (k, c) in net.clients.iter().enumerate() {
            let port = format!("vb{k}");
            let (v4, v6) = net.addrs(k + 1);
            ip(&[
                "-n", b, "link", "add", &port, "type", "veth", "peer", "name", "vc", "netns", c,
            ])?;
            ip(&["-n", b, "link", "set", &port, "master", "br0"])?;
            ip(&["-n", b, "link", "set", &port, "up"])?;
            ip(&["-n", c, "link", "set", "lo", "up"])?;
            ip(&["-n", c, "addr", "add", &format!("{v4}/24"), "dev", "vc"])?;
            ip(&[
                "-n",
                c,
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                "vc",
                "nodad",
            ])?;
            ip(&["-n", c, "link", "set", "vc", "up"])?;
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
    fn addrs(&self, k: usize) -> (Ipv4Addr, Ipv6Addr) {
        let n = self.n;
        let h = 1 + k as u8;
        (
            Ipv4Addr::new(10, 203, n, h),
            Ipv6Addr::new(0xfd00, 0x203, n.into(), 0, 0, 0, 0, h.into()),
        )
    }

    fn board_addr(&self, fam: Fam, port: u16) -> SocketAddr {
        let (v4, v6) = self.addrs(0);
        let ip = match fam {
            V4 => IpAddr::V4(v4),
            V6 => IpAddr::V6(v6),
        };
        SocketAddr::new(ip, port)
    }

    /// TCP echo servers on the board, on every address of both families.
    fn serve_echo(&self, ports: &[u16]) -> Result<(), String> {
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
    fn connect(&self, k: usize, port: u16, fam: Fam) -> std::io::Result<TcpStream> {
        let to = self.board_addr(fam, port);
        in_ns(&self.clients[k], move || {
            TcpStream::connect_timeout(&to, CONNECT_TIMEOUT)
        })
    }

    fn reach(&self, k: usize, port: u16, fam: Fam) -> Reach {
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
    fn expect(&self, what: &str, checks: &[(usize, u16, Fam, bool)]) {
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
    fn listing(&self, b: Backend, fam: Fam) -> String {
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
enum Reach {
    /// Connected, and the echo came back.
    Open,
    /// The connection attempt timed out: the SYN was dropped.
    Dropped,
    /// Anything else (refused, reset…): neither verdict.
    Other(String),
}

fn echo_loop(mut s: TcpStream) {
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
fn roundtrip(s: &mut TcpStream, msg: &[u8]) -> std::io::Result<()> {
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

/// A scenario's world. Fields drop in order: the daemon first, the namespaces last.
struct Rig {
    daemon: Option<Daemon>,
    env: Env,
    net: Net,
    backend: Backend,
}

impl Rig {
    /// The namespaces, echo servers and fake Bot API for one scenario, and the settings
    /// for the real binary with real iptables; `None` when this machine cannot run it.
    fn new(n: u8, backend: Backend, clients: usize) -> Option<Rig> {
        if !is_root() {
            skip("the netns tests need root");
            return None;
        }
        let missing: Vec<String> = [V4, V6]
            .iter()
            .flat_map(|&f| [backend.tool(f), format!("{}-restore", backend.tool(f))])
            .filter(|t| !std::path::Path::new(t).exists())
            .collect();
        if !missing.is_empty() {
            skip(&format!("missing firewall tools: {missing:?}"));
            return None;
        }
        let net = match Net::new(n, clients) {
            Ok(net) => net,
            Err(e) => {
                skip(&format!("cannot set up network namespaces: {e}"));
                return None;
            }
        };
        let listener = in_ns(&net.board, || TcpListener::bind("127.0.0.1:0"))
            .expect("bind the fake Bot API in the board");
        let mut env = Env::with_api(FakeApi::serve(listener));
        env.set("TGKNOCK_GATES", GATES)
            .set("TGKNOCK_IPTABLES", &backend.tool(V4))
            .set("TGKNOCK_IP6TABLES", &backend.tool(V6))
            .set("RUST_LOG", "debug,ureq=info,ureq_proto=info");
        Some(Rig {
            daemon: None,
            env,
            net,
            backend,
        })
    }

    /// Starts `tgknock run` in the board and waits until it polls Telegram.
    fn start(&mut self) {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let log = self.env.dir.join(format!("netns-daemon-{n}.log"));
        let f = std::fs::File::create(&log).unwrap();
        let child = in_netns(&self.net.board, &self.env.command(&["run"]))
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .expect("spawn tgknock run in the board");
        let d = Daemon {
            child: Some(child),
            log,
        };
        d.wait_log("logged in as", 30);
        self.daemon = Some(d);
    }

    fn daemon(&mut self) -> &mut Daemon {
        self.daemon.as_mut().expect("the daemon is running")
    }

    /// Sends a chat message from the owner and returns the bot's reply to it.
    fn say(&self, text: &str) -> String {
        let api = &self.env.api;
        let before = api.sent_to(OWNER).len();
        api.say(OWNER, text);
        api.wait_nth_reply(OWNER, before + 1, 20)
    }

    /// Runs a console command of the binary in the board.
    fn console(&self, args: &[&str]) -> std::process::Output {
        in_netns(&self.net.board, &self.env.command(args))
            .output()
            .expect("run tgknock in the board")
    }

    fn listing(&self, fam: Fam) -> String {
        self.net.listing(self.backend, fam)
    }

    /// Runs an iptables/ip6tables command in the board.
    fn ipt(&self, fam: Fam, args: &[&str]) {
        run_ok(
            Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &self.net.board,
                    &self.backend.tool(fam),
                    "-w",
                ])
                .args(args),
        )
        .unwrap();
    }

    fn client_v4(&self, k: usize) -> Ipv4Addr {
        self.net.addrs(k + 1).0
    }

    fn client_v6(&self, k: usize) -> Ipv6Addr {
        self.net.addrs(k + 1).1
    }
}

fn jumps(listing: &str) -> usize {
    listing
        .lines()
        .filter(|l| l.trim() == "-A INPUT -j TGKNOCK")
        .count()
}

// ---------------------------------------------------------------------------------------
// Scenarios

fn closed_at_start_scenario(b: Backend, n: u8) {
    let Some(mut rig) = Rig::new(n, b, 1) else {
        return;
    };
    rig.start();
    rig.net.expect(
        "with no saved state every gate is closed, the rest of the board reachable",
        &[
            (0, SSH, V4, false),
            (0, SSH, V6, false),
            (0, WEB, V4, false),
            (0, WEB, V6, false),
            (0, OTHER, V4, true),
            (0, OTHER, V6, true),
        ],
    );
    for fam in [V4, V6] {
        let l = rig.listing(fam);
        assert_eq!(jumps(&l), 1, "{fam:?}:\n{l}");
        let first = l.lines().find(|l| l.starts_with("-A INPUT")).unwrap_or("");
        assert_eq!(first, "-A INPUT -j TGKNOCK", "{fam:?}:\n{l}");
    }
}

#[test]
fn closed_at_start() {
    both(1, closed_at_start_scenario);
}

fn open_scenario(b: Backend, n: u8) {
    let Some(mut rig) = Rig::new(n, b, 1) else {
        return;
    };
    rig.start();
    let reply = rig.say("/open");
    assert!(reply.contains("ssh (22/tcp) open to everyone"), "{reply}");
    rig.net.expect(
        "/open opens the first gate in both families, and only it",
        &[
            (0, SSH, V4, true),
            (0, SSH, V6, true),
            (0, WEB, V4, false),
            (0, WEB, V6, false),
        ],
    );
}

#[test]
fn open_lets_in_v4_and_v6() {
    both(2, open_scenario);
}

fn held_connection_scenario(b: Backend, n: u8) {
    let Some(mut rig) = Rig::new(n, b, 1) else {
        return;
    };
    rig.start();
    let reply = rig.say("/open ssh");
    assert!(reply.contains("open to everyone"), "{reply}");
    let mut held: Vec<TcpStream> = [V4, V6]
        .into_iter()
        .map(|fam| {
            let mut s = rig
                .net
                .connect(0, SSH, fam)
                .unwrap_or_else(|e| panic!("connect over {fam:?} while open: {e}"));
            roundtrip(&mut s, b"before close").unwrap();
            s
        })
        .collect();
    let reply = rig.say("/close ssh");
    assert!(reply.contains("ssh (22/tcp) closed"), "{reply}");
    for (s, fam) in held.iter_mut().zip([V4, V6]) {
        roundtrip(s, b"after close, same session")
            .unwrap_or_else(|e| panic!("the {fam:?} session was cut by /close: {e}"));
    }
    rig.net.expect(
        "after /close, new connections are dropped",
        &[(0, SSH, V4, false), (0, SSH, V6, false)],
    );
    for (s, fam) in held.iter_mut().zip([V4, V6]) {
        roundtrip(s, b"still alive")
            .unwrap_or_else(|e| panic!("the {fam:?} session died later: {e}"));
    }
}

#[test]
fn held_connection_survives_close() {
    both(3, held_connection_scenario);
}

fn open_from_scenario(b: Backend, n: u8) {
    let Some(mut rig) = Rig::new(n, b, 2) else {
        return;
    };
    rig.start();
    let me = rig.client_v4(0);
    let reply = rig.say(&format!("/open ssh {me}"));
    assert!(reply.contains(&format!("open to {me}")), "{reply}");
    rig.net.expect(
        "an opening from one IPv4 address lets only it in",
        &[
            (0, SSH, V4, true),
            (1, SSH, V4, false),
            (0, SSH, V6, false),
            (1, SSH, V6, false),
            (0, WEB, V4, false),
        ],
    );
    // The same for an IPv6 address, alongside the IPv4 one.
    let me6 = rig.client_v6(1);
    let reply = rig.say(&format!("/open ssh {me6}"));
    assert!(reply.contains(&me6.to_string()), "{reply}");
    rig.net.expect(
        "an opening from one IPv6 address lets only it in",
        &[
            (0, SSH, V4, true),
            (1, SSH, V4, false),
            (0, SSH, V6, false),
            (1, SSH, V6, true),
        ],
    );
}

#[test]
fn open_from_one_address() {
    both(4, open_from_scenario);
}

fn expiry_scenario(b: Backend, n: u8) {
    let Some(mut rig) = Rig::new(n, b, 1) else {
        return;
    };
    rig.start();
    let reply = rig.say("/open 3s");
    assert!(reply.contains("open to everyone"), "{reply}");
    let opened = Instant::now();
    assert_eq!(
        rig.net.reach(0, SSH, V4),
        Reach::Open,
        "right after /open 3s"
    );
    loop {
        match rig.net.reach(0, SSH, V4) {
            Reach::Dropped => break,
            Reach::Open if opened.elapsed() < Duration::from_secs(8) => {
                std::thread::sleep(Duration::from_millis(200));
            }
            r => panic!(
                "3 s opening, {:.1} s after the reply: {r:?}",
                opened.elapsed().as_secs_f64()
            ),
        }
    }
    rig.net
        .expect("after expiry, IPv6 is closed too", &[(0, SSH, V6, false)]);
    let status = rig.say("/status");
    assert!(status.contains("ssh (22/tcp) closed"), "{status}");
}

#[test]
fn opening_expires() {
    both(5, expiry_scenario);
}

fn restart_scenario(b: Backend, n: u8) {
    let Some(mut rig) = Rig::new(n, b, 1) else {
        return;
    };
    rig.start();
    let reply = rig.say("/open 1h");
    assert!(reply.contains("ssh (22/tcp) open to everyone"), "{reply}");
    let reply = rig.say("/open web 3s");
    assert!(reply.contains("web (80/tcp) open to everyone"), "{reply}");
    let web_opened = Instant::now();
    rig.daemon().kill9();
    // Deadlines are whole seconds: 4 s after the reply, web's has passed.
    std::thread::sleep(Duration::from_secs(4).saturating_sub(web_opened.elapsed()));
    rig.net.expect(
        "with the daemon dead, the kernel still holds the last rules",
        &[(0, WEB, V4, true)],
    );
    rig.start();
    rig.net.expect(
        "the restarted daemon keeps ssh open and closes the expired web opening",
        &[
            (0, SSH, V4, true),
            (0, SSH, V6, true),
            (0, WEB, V4, false),
            (0, WEB, V6, false),
        ],
    );
    for fam in [V4, V6] {
        let l = rig.listing(fam);
        assert_eq!(jumps(&l), 1, "{fam:?} after the restart:\n{l}");
    }
    let status = rig.say("/status");
    assert!(status.contains("ssh (22/tcp) open"), "{status}");
    assert!(status.contains("web (80/tcp) closed"), "{status}");
    assert!(!status.contains("MISMATCH"), "{status}");
}

#[test]
fn restart_after_kill9_rebuilds() {
    both(6, restart_scenario);
}

fn teardown_scenario(b: Backend, n: u8) {
    let Some(mut rig) = Rig::new(n, b, 1) else {
        return;
    };
    for fam in [V4, V6] {
        rig.ipt(
            fam,
            &[
                "-A", "INPUT", "-p", "tcp", "--dport", "9999", "-j", "ACCEPT",
            ],
        );
    }
    let before = [rig.listing(V4), rig.listing(V6)];
    assert!(before[0].contains("--dport 9999"), "{}", before[0]);
    rig.start();
    for fam in [V4, V6] {
        let l = rig.listing(fam);
        let input: Vec<&str> = l.lines().filter(|l| l.starts_with("-A INPUT")).collect();
        assert_eq!(
            input,
            [
                "-A INPUT -j TGKNOCK",
                "-A INPUT -p tcp -m tcp --dport 9999 -j ACCEPT"
            ],
            "{fam:?}: the jump goes on top and the foreign rule stays:\n{l}"
        );
    }
    let reply = rig.say("/open web");
    assert!(reply.contains("web (80/tcp) open"), "{reply}");
    rig.net.expect(
        "the daemon runs",
        &[(0, WEB, V4, true), (0, SSH, V4, false), (0, SSH, V6, false)],
    );
    rig.daemon().kill9();
    let out = rig.console(&["teardown"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "teardown: {out:?}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("IPv4: removed 1 jump(s)"), "{stdout}");
    assert!(stdout.contains("IPv6: removed 1 jump(s)"), "{stdout}");
    let after = [rig.listing(V4), rig.listing(V6)];
    assert_eq!(after[0], before[0], "IPv4 after teardown");
    assert_eq!(after[1], before[1], "IPv6 after teardown");
    rig.net.expect(
        "after teardown nothing is dropped",
        &[
            (0, SSH, V4, true),
            (0, SSH, V6, true),
            (0, WEB, V4, true),
            (0, WEB, V6, true),
        ],
    );
    // A second teardown finds nothing and is no error.
    let out = rig.console(&["teardown"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "second teardown: {out:?}");
    assert!(stdout.contains("IPv4: nothing installed"), "{stdout}");
    assert_eq!(rig.listing(V4), before[0]);
}

#[test]
fn teardown_restores_firewall() {
    both(7, teardown_scenario);
}

fn always_allow_scenario(b: Backend, n: u8) {
    let Some(mut rig) = Rig::new(n, b, 2) else {
        return;
    };
    let allow = format!("{},{}/128", rig.client_v4(0), rig.client_v6(0));
    rig.env.set("TGKNOCK_ALWAYS_ALLOW", &allow);
    rig.start();
    rig.net.expect(
        "always-allowed sources pass closed gates; others do not",
        &[
            (0, SSH, V4, true),
            (0, SSH, V6, true),
            (0, WEB, V4, true),
            (1, SSH, V4, false),
            (1, SSH, V6, false),
        ],
    );
    let status = rig.say("/status");
    assert!(status.contains("ssh (22/tcp) closed"), "{status}");
}

#[test]
fn always_allow_passes_closed_gate() {
    both(8, always_allow_scenario);
}
