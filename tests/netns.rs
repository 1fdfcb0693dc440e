//! Tier 3: the real binary against real firewalls (iptables-legacy, iptables-nft, and
//! nftables through `nft`) inside network namespaces, judged by real TCP connections.
//!
//! Each scenario gets its own namespaces (support/netns.rs): a board with a bridge `br0`
//! holding 10.203.N.1/24 and fd00:203:N::1/64, and one or two client namespaces holding
//! 10.203.N.2 (::2) and 10.203.N.3 (::3). The board runs TCP echo servers on 22 and 80
//! (the gates) and 8080 (not a gate: proves the network works), and the fake Bot API on
//! its own 127.0.0.1. A dropped SYN shows as a connect timeout.
//!
//! Every scenario runs for the three backends at once (iptables-legacy, iptables-nft and
//! `TGKNOCK_FIREWALL=nft`, in separate namespaces N, N+100 and N+200), so the file costs
//! about its slowest scenario twice over. Without root or `ip netns`, the tests print
//! `SKIPPED: …` and pass, except under `CI=true`, where no tier may skip.
//!
//! The `Rig` and the backend list are shared with knock.rs.

use std::io::Write;
use std::net::{Ipv4Addr, Ipv6Addr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::support::netns::{
    Backend, Fam, Net, OTHER, Reach, SSH, V4, V6, WEB, env_in, in_netns, is_root, roundtrip,
    run_ok, skip, wrapped,
};
use crate::support::{Daemon, Env, OWNER};

/// The kernel primitives that notice other programs' changes (`os::nfwatch`).
mod watch;

/// The second octet of this file's addresses: 10.203.N.0/24, fd00:203:N::/64.
const SUBNET: u8 = 203;
pub const GATES: &str = "ssh=22/tcp web=80/tcp";
/// The nftables tool the `nft` backend runs.
pub const NFT: &str = "/usr/sbin/nft";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A firewall backend of tgknock, as a test runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fw {
    /// `TGKNOCK_FIREWALL=iptables` with the legacy or the nft flavour of iptables.
    Ipt(Backend),
    /// `TGKNOCK_FIREWALL=nft`: the table `inet tgknock`.
    Nft,
}

impl Fw {
    pub const ALL: [Fw; 3] = [Fw::Ipt(Backend::Legacy), Fw::Ipt(Backend::Nft), Fw::Nft];

    pub fn name(self) -> &'static str {
        match self {
            Fw::Ipt(Backend::Legacy) => "iptables-legacy",
            Fw::Ipt(Backend::Nft) => "iptables-nft",
            Fw::Nft => "nft",
        }
    }

    /// The tools this backend needs that are not installed.
    fn missing(self) -> Vec<String> {
        match self {
            Fw::Ipt(b) => b.missing_tools(),
            Fw::Nft if std::path::Path::new(NFT).exists() => Vec::new(),
            Fw::Nft => vec![NFT.to_string()],
        }
    }

    /// The settings that select this backend. With nft, the iptables paths stay the
    /// environment's recording fakes: a call to them would show in `Env::calls`.
    fn configure(self, env: &mut Env) {
        match self {
            Fw::Ipt(b) => {
                env.set("TGKNOCK_FIREWALL", "iptables")
                    .set("TGKNOCK_IPTABLES", &b.tool(V4))
                    .set("TGKNOCK_IP6TABLES", &b.tool(V6));
            }
            Fw::Nft => {
                env.set("TGKNOCK_FIREWALL", "nft").set("TGKNOCK_NFT", NFT);
            }
        }
    }
}

/// Runs a scenario for every backend at once, each in its own namespaces (`n`, `n + 100`,
/// `n + 200`), and fails if any failed.
pub fn all(n: u8, scenario: fn(Fw, u8)) {
    assert!(n < 56, "scenario number {n} leaves no room for n + 200");
    std::thread::scope(|s| {
        let runs: Vec<_> = Fw::ALL
            .into_iter()
            .zip([n, n + 100, n + 200])
            .map(|(fw, n)| {
                let h = std::thread::Builder::new()
                    .name(format!(
                        "{}-{}",
                        std::thread::current().name().unwrap_or("netns"),
                        fw.name()
                    ))
                    .spawn_scoped(s, move || scenario(fw, n))
                    .unwrap();
                (fw, h)
            })
            .collect();
        let failed: Vec<&str> = runs
            .into_iter()
            .filter_map(|(fw, h)| h.join().is_err().then_some(fw.name()))
            .collect();
        assert!(failed.is_empty(), "failed with backend(s): {failed:?}");
    });
}

/// A scenario's world. Fields drop in order: the daemon first, the namespaces last.
pub struct Rig {
    pub daemon: Option<Daemon>,
    pub env: Env,
    pub net: Net,
    pub fw: Fw,
    /// The daemon runs in a PID namespace of its own, with its /proc, as in a container
    /// (systemd-nspawn, LXC, docker): the pids it sees are not the kernel's. The
    /// daemon's child is then `unshare` (killing it kills the daemon; signalling it
    /// does not reach the daemon).
    pub own_pids: bool,
}

impl Rig {
    /// The namespaces (10.`subnet`.`n`.0/24), echo servers and fake Bot API for one
    /// scenario, and the settings for the real binary with the real firewall `fw`; `None`
    /// when this machine cannot run it.
    pub fn new(subnet: u8, n: u8, fw: Fw, clients: usize) -> Option<Rig> {
        if !is_root() {
            skip("the netns tests need root");
            return None;
        }
        let missing = fw.missing();
        if !missing.is_empty() {
            skip(&format!("missing firewall tools: {missing:?}"));
            return None;
        }
        let net = match Net::new(subnet, n, clients) {
            Ok(net) => net,
            Err(e) => {
                skip(&format!("cannot set up network namespaces: {e}"));
                return None;
            }
        };
        let mut env = env_in(&net.board);
        env.set("TGKNOCK_GATES", GATES)
            .set("RUST_LOG", "debug,ureq=info,ureq_proto=info");
        fw.configure(&mut env);
        Some(Rig {
            daemon: None,
            env,
            net,
            fw,
            own_pids: false,
        })
    }

    /// Starts `tgknock run` in the board and waits until it polls Telegram.
    pub fn start(&mut self) {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let log = self.env.dir.join(format!("netns-daemon-{n}.log"));
        let f = std::fs::File::create(&log).unwrap();
        let mut run = self.env.command(&["run"]);
        if self.own_pids {
            // unshare forks the daemon as pid 1 of a new namespace and waits for it; the
            // daemon is killed when unshare is (Daemon's drop kills unshare).
            let unshare = [
                "unshare",
                "--pid",
                "--fork",
                "--mount-proc",
                "--kill-child",
                "--",
            ];
            run = wrapped(&unshare, &run);
        }
        let child = in_netns(&self.net.board, &run)
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

    pub fn daemon(&mut self) -> &mut Daemon {
        self.daemon.as_mut().expect("the daemon is running")
    }

    /// Sends a chat message from the owner and returns the bot's reply to it.
    pub fn say(&self, text: &str) -> String {
        let api = &self.env.api;
        let before = api.sent_to(OWNER).len();
        api.say(OWNER, text);
        api.wait_nth_reply(OWNER, before + 1, 20)
    }

    /// Runs a console command of the binary in the board.
    pub fn console(&self, args: &[&str]) -> std::process::Output {
        in_netns(&self.net.board, &self.env.command(args))
            .output()
            .expect("run tgknock in the board")
    }

    /// Runs a console command that must succeed; returns its standard output.
    pub fn console_ok(&self, args: &[&str]) -> String {
        let out = self.console(args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "tgknock {args:?} ({}): {}\n{stdout}\n{}",
            self.fw.name(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// `iptables -S` / `ip6tables -S` in the board (iptables backends only).
    pub fn listing(&self, fam: Fam) -> String {
        match self.fw {
            Fw::Ipt(b) => self.net.listing(b, fam),
            Fw::Nft => panic!("no iptables listing for the nft backend"),
        }
    }

    /// `nft list ruleset` in the board.
    pub fn nft_ruleset(&self) -> String {
        run_ok(Command::new("ip").args(["netns", "exec", &self.net.board, NFT, "list", "ruleset"]))
            .unwrap()
    }

    /// Everything the board's firewall holds, as the backend's own tool lists it:
    /// `iptables -S` and `ip6tables -S`, or `nft list ruleset`.
    pub fn ruleset(&self) -> String {
        match self.fw {
            Fw::Ipt(_) => format!("{}{}", self.listing(V4), self.listing(V6)),
            Fw::Nft => self.nft_ruleset(),
        }
    }

    /// Checks tgknock's rules are installed once and reached first: one jump at the top
    /// of INPUT in both families, or one `inet tgknock` table with one input hook.
    pub fn assert_installed_once(&self, when: &str) {
        match self.fw {
            Fw::Ipt(_) => {
                for fam in [V4, V6] {
                    let l = self.listing(fam);
                    assert_eq!(jumps(&l), 1, "{fam:?} {when}:\n{l}");
                    let first = l.lines().find(|l| l.starts_with("-A INPUT")).unwrap_or("");
                    assert_eq!(first, "-A INPUT -j TGKNOCK", "{fam:?} {when}:\n{l}");
                }
            }
            Fw::Nft => {
                let r = self.nft_ruleset();
                let count = |needle: &str| r.matches(needle).count();
                assert_eq!(count("table inet tgknock {"), 1, "{when}:\n{r}");
                assert_eq!(count("type filter hook input"), 1, "{when}:\n{r}");
                for fam in ["4", "6"] {
                    assert!(
                        r.contains(&format!("comment \"{fam} tgknock:established")),
                        "IPv{fam} {when}:\n{r}"
                    );
                }
            }
        }
    }

    /// Adds a rule of the owner's own, accepting TCP 9999, in both families.
    fn add_foreign_rule(&self) {
        match self.fw {
            Fw::Ipt(_) => {
                for fam in [V4, V6] {
                    self.ipt(
                        fam,
                        &[
                            "-A", "INPUT", "-p", "tcp", "--dport", "9999", "-j", "ACCEPT",
                        ],
                    );
                }
            }
            Fw::Nft => self.nft_script(
                "add table inet owner\n\
                 add chain inet owner input { type filter hook input priority filter; policy accept; }\n\
                 add rule inet owner input tcp dport 9999 accept\n",
            ),
        }
    }

    /// Runs an iptables/ip6tables command in the board.
    fn ipt(&self, fam: Fam, args: &[&str]) {
        let Fw::Ipt(b) = self.fw else {
            panic!("iptables command with the nft backend")
        };
        run_ok(
            Command::new("ip")
                .args(["netns", "exec", &self.net.board, &b.tool(fam), "-w"])
                .args(args),
        )
        .unwrap();
    }

    /// Runs `nft -f -` with `script` in the board.
    pub fn nft_script(&self, script: &str) {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.net.board, NFT, "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run nft");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "nft -f - failed: {}\n{script}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn client_v4(&self, k: usize) -> Ipv4Addr {
        self.net.addrs(k + 1).0
    }

    pub fn client_v6(&self, k: usize) -> Ipv6Addr {
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

fn closed_at_start_scenario(b: Fw, n: u8) {
    let Some(mut rig) = Rig::new(SUBNET, n, b, 1) else {
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
    rig.assert_installed_once("at start");
    if b == Fw::Nft {
        assert_eq!(
            rig.env.calls(),
            "",
            "the nft backend ran an iptables tool (the recording fakes)"
        );
    }
}

#[test]
fn closed_at_start() {
    all(1, closed_at_start_scenario);
}
fn open_scenario(b: Fw, n: u8) {
    let Some(mut rig) = Rig::new(SUBNET, n, b, 1) else {
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
    all(2, open_scenario);
}

fn held_connection_scenario(b: Fw, n: u8) {
    let Some(mut rig) = Rig::new(SUBNET, n, b, 1) else {
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
    all(3, held_connection_scenario);
}

fn open_from_scenario(b: Fw, n: u8) {
    let Some(mut rig) = Rig::new(SUBNET, n, b, 2) else {
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
    all(4, open_from_scenario);
}

fn expiry_scenario(b: Fw, n: u8) {
    let Some(mut rig) = Rig::new(SUBNET, n, b, 1) else {
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
    all(5, expiry_scenario);
}

fn restart_scenario(b: Fw, n: u8) {
    let Some(mut rig) = Rig::new(SUBNET, n, b, 1) else {
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
        "with the daemon dead, the kernel still holds ssh's opening and closed web's at its deadline",
        &[(0, SSH, V4, true), (0, WEB, V4, false)],
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
    rig.assert_installed_once("after the restart");
    let status = rig.say("/status");
    assert!(status.contains("ssh (22/tcp) open"), "{status}");
    assert!(status.contains("web (80/tcp) closed"), "{status}");
    assert!(!status.contains("MISMATCH"), "{status}");
}

#[test]
fn restart_after_kill9_rebuilds() {
    all(6, restart_scenario);
}

fn teardown_scenario(b: Fw, n: u8) {
    let Some(mut rig) = Rig::new(SUBNET, n, b, 1) else {
        return;
    };
    rig.add_foreign_rule();
    let before = rig.ruleset();
    assert!(before.contains("9999"), "{before}");
    rig.start();
    match b {
        Fw::Ipt(_) => {
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
        }
        Fw::Nft => {
            let r = rig.nft_ruleset();
            assert!(
                r.contains("table inet tgknock {") && r.contains("tcp dport 9999 accept"),
                "tgknock's table is added and the owner's stays:\n{r}"
            );
        }
    }
    let reply = rig.say("/open web");
    assert!(reply.contains("web (80/tcp) open"), "{reply}");
    rig.net.expect(
        "the daemon runs",
        &[(0, WEB, V4, true), (0, SSH, V4, false), (0, SSH, V6, false)],
    );
    rig.daemon().kill9();
    let stdout = rig.console_ok(&["teardown"]);
    match b {
        Fw::Ipt(_) => {
            assert!(stdout.contains("IPv4: removed 1 jump(s)"), "{stdout}");
            assert!(stdout.contains("IPv6: removed 1 jump(s)"), "{stdout}");
        }
        Fw::Nft => assert!(
            stdout.contains("nftables: removed table inet tgknock"),
            "{stdout}"
        ),
    }
    assert_eq!(rig.ruleset(), before, "the firewall after teardown");
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
    let stdout = rig.console_ok(&["teardown"]);
    let nothing = match b {
        Fw::Ipt(_) => "IPv4: nothing installed",
        Fw::Nft => "nftables: nothing installed",
    };
    assert!(stdout.contains(nothing), "{stdout}");
    assert_eq!(rig.ruleset(), before);
}

#[test]
fn teardown_restores_firewall() {
    all(7, teardown_scenario);
}

fn always_allow_scenario(b: Fw, n: u8) {
    let Some(mut rig) = Rig::new(SUBNET, n, b, 2) else {
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
    all(8, always_allow_scenario);
}

/// With no iptables tool at all, `auto` picks nftables (IPv6 is managed in the same table,
/// since TGKNOCK_IP6TABLES is not `off`), and /open works.
#[test]
fn auto_picks_nft_without_iptables() {
    let Some(mut rig) = Rig::new(SUBNET, 10, Fw::Nft, 1) else {
        return;
    };
    rig.env
        .set("TGKNOCK_FIREWALL", "auto")
        .set("TGKNOCK_IPTABLES", "/nonexistent/iptables")
        .set("TGKNOCK_IP6TABLES", "/nonexistent/ip6tables");
    rig.start();
    let status = rig.console_ok(&["status"]);
    assert!(
        status.contains("IPv4: nftables table inet tgknock")
            && status.contains("IPv6: nftables table inet tgknock"),
        "{status}"
    );
    rig.assert_installed_once("with auto and no iptables");
    rig.net.expect(
        "closed at start",
        &[(0, SSH, V4, false), (0, SSH, V6, false)],
    );
    let reply = rig.say("/open");
    assert!(reply.contains("ssh (22/tcp) open to everyone"), "{reply}");
    rig.net.expect(
        "/open opens ssh over nftables in both families",
        &[
            (0, SSH, V4, true),
            (0, SSH, V6, true),
            (0, WEB, V4, false),
            (0, WEB, V6, false),
        ],
    );
    let status = rig.say("/status");
    assert!(status.contains("nftables"), "{status}");
    assert!(!status.contains("MISMATCH"), "{status}");
}

/// What another program does to the rules: `iptables -F; iptables -X` in both families
/// (ufw, iptables-persistent, a plain `iptables-restore`), or `nft flush ruleset` (the
/// first line of Debian's /etc/nftables.conf, which `systemctl reload nftables` runs).
fn foreign_flush(rig: &Rig, nft: bool) {
    if nft {
        rig.nft_script("flush ruleset\n");
        return;
    }
    for fam in [V4, V6] {
        rig.ipt(fam, &["-F"]);
        rig.ipt(fam, &["-X"]);
    }
}

fn drift_scenario(b: Fw, n: u8) {
    let Some(mut rig) = Rig::new(SUBNET, n, b, 1) else {
        return;
    };
    rig.start();
    let reply = rig.say("/open web 1h");
    assert!(reply.contains("web (80/tcp) open to everyone"), "{reply}");
    let mut held: Vec<TcpStream> = [V4, V6]
        .into_iter()
        .map(|fam| {
            let mut s = rig.net.connect(0, WEB, fam).unwrap();
            roundtrip(&mut s, b"before the flush").unwrap();
            s
        })
        .collect();
    let flushes: &[bool] = match b {
        Fw::Ipt(Backend::Legacy) => &[false],
        // iptables-nft keeps its rules in nftables: both kinds of flush remove them.
        Fw::Ipt(Backend::Nft) => &[false, true],
        Fw::Nft => &[true],
    };
    for (k, nft) in flushes.iter().enumerate() {
        let what = if *nft {
            "nft flush ruleset"
        } else {
            "iptables -F; iptables -X"
        };
        let repairs = |rig: &mut Rig| rig.daemon().output().matches("; put them back").count();
        let before = repairs(&mut rig);
        foreign_flush(&rig, *nft);
        if k == 0 {
            let told =
                rig.env
                    .api
                    .wait_reply(OWNER, "another program changed the firewall rules", 30);
            assert!(told.contains("put them back"), "{told}");
            assert!(
                told.contains("ssh (22/tcp) closed") && told.contains("web (80/tcp) open"),
                "the message shows the gates as they are now: {told}"
            );
        }
        let end = Instant::now() + Duration::from_secs(30);
        while repairs(&mut rig) == before {
            assert!(
                Instant::now() < end,
                "no repair after {what}:\n{}",
                rig.daemon().output()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        // The watcher may repair in the middle of a script (after `iptables -F`, before
        // `ip6tables -F`), then once more: wait for the repairs to settle.
        let mut seen = repairs(&mut rig);
        loop {
            std::thread::sleep(Duration::from_millis(1500));
            let now = repairs(&mut rig);
            if now == seen {
                break;
            }
            seen = now;
        }
        rig.assert_installed_once(&format!("after {what}"));
        rig.net.expect(
            &format!("after {what} the rules are back"),
            &[
                (0, SSH, V4, false),
                (0, SSH, V6, false),
                (0, WEB, V4, true),
                (0, WEB, V6, true),
            ],
        );
        for (s, fam) in held.iter_mut().zip([V4, V6]) {
            roundtrip(s, b"after the repair")
                .unwrap_or_else(|e| panic!("{fam:?}: the repair cut a session: {e}"));
        }
    }
    let status = rig.say("/status");
    assert!(!status.contains("MISMATCH"), "{status}");
}

#[test]
fn rules_flushed_by_another_program_are_put_back() {
    all(11, drift_scenario);
}

/// With the default 50 s long poll, a flush a few seconds into a poll is repaired while
/// that poll still runs: the kernel told the daemon (nf_tables' notifications; legacy
/// xtables' fingerprint, taken every second), it did not wait for the poll to end.
fn flush_mid_poll_scenario(b: Fw, n: u8) {
    flush_mid_poll(b, n, false);
}

fn flush_mid_poll(b: Fw, n: u8, own_pids: bool) {
    let Some(mut rig) = Rig::new(SUBNET, n, b, 1) else {
        return;
    };
    rig.own_pids = own_pids;
    rig.env.set("TGKNOCK_POLL_TIMEOUT", "50s");
    rig.start();
    rig.daemon().wait_log(
        "drift: other programs' changes to the rules are noticed through",
        10,
    );
    let api = rig.env.api.clone();
    let long_polls = || {
        api.requests("getUpdates")
            .iter()
            .filter(|r| r.body["timeout"].as_u64() == Some(50))
            .count()
    };
    crate::support::wait_for(30, "a 50 s long poll", || (long_polls() > 0).then_some(()));
    std::thread::sleep(Duration::from_secs(3));
    let polls = api.requests("getUpdates").len();
    let nft = b == Fw::Nft;
    foreign_flush(&rig, nft);
    let flushed = Instant::now();
    let end = flushed + Duration::from_secs(40);
    loop {
        let log = rig.daemon().output();
        if log.contains("; put them back") {
            break;
        }
        assert!(
            Instant::now() < end,
            "no repair 40 s after the flush:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = flushed.elapsed();
    assert_eq!(
        api.requests("getUpdates").len(),
        polls,
        "{}: repaired after {took:?}, but only once the poll had ended:\n{}",
        b.name(),
        rig.daemon().output()
    );
    eprintln!("{}: a flush mid-poll was repaired after {took:?}", b.name());
    rig.assert_installed_once("after the flush mid-poll");
    rig.net.expect(
        "after the flush mid-poll the rules are back",
        &[
            (0, SSH, V4, false),
            (0, SSH, V6, false),
            (0, OTHER, V4, true),
        ],
    );
    if nft {
        // A table put to sleep (`flags dormant`) keeps every rule and enforces none: the
        // look must see it as drift, and the repair wake the table.
        rig.nft_script("add table inet tgknock { flags dormant; }\n");
        wait_repairs(&mut rig, 2, "the table made dormant");
        let rules = rig.ruleset();
        assert!(!rules.contains("dormant"), "still dormant:\n{rules}");
        rig.net.expect(
            "after the dormant table was woken",
            &[(0, SSH, V4, false), (0, SSH, V6, false)],
        );
    }
}

#[test]
fn a_flush_mid_poll_is_repaired_without_waiting_for_the_poll() {
    all(12, flush_mid_poll_scenario);
}

/// In a container (its own PID namespace) nf_tables names the committing process by the
/// kernel's pid, which the daemon never sees: it must still know its own tools' changes
/// (they confirm the watch), or it falls back to looking after every poll and a flush
/// stays until the poll ends. (It did: the booted-Debian tier, under systemd-nspawn.)
fn flush_mid_poll_in_a_container_scenario(b: Fw, n: u8) {
    flush_mid_poll(b, n, true);
}

#[test]
fn in_a_container_a_flush_mid_poll_is_repaired_without_waiting_for_the_poll() {
    all(14, flush_mid_poll_in_a_container_scenario);
}

/// An idle daemon runs no firewall tool between polls: nf_tables tells it of a change,
/// and on legacy xtables a fingerprint a second apart that has not moved is no reason to
/// look. (It once was: an idle legacy daemon ran `iptables -S` in both families every
/// second, 3,600 looks an hour.)
fn idle_scenario(b: Fw, n: u8) {
    let Some(mut rig) = Rig::new(SUBNET, n, b, 1) else {
        return;
    };
    rig.env.set("TGKNOCK_POLL_TIMEOUT", "50s");
    // Each tool behind a wrapper that notes the call and execs it (same pid, same name).
    let calls = rig.env.dir.join("tool-calls");
    let wrap = |real: &str| -> String {
        let name = Path::new(real).file_name().unwrap().to_str().unwrap();
        let path = rig.env.dir.join(name);
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\necho \"{name} $*\" >> '{}'\nexec {real} \"$@\"\n",
                calls.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path.display().to_string()
    };
    match b {
        Fw::Ipt(k) => {
            let (v4, v6) = (k.tool(V4), k.tool(V6));
            wrap(&format!("{v4}-restore"));
            wrap(&format!("{v6}-restore"));
            let (v4, v6) = (wrap(&v4), wrap(&v6));
            rig.env
                .set("TGKNOCK_IPTABLES", &v4)
                .set("TGKNOCK_IP6TABLES", &v6);
        }
        Fw::Nft => {
            let nft = wrap(NFT);
            rig.env.set("TGKNOCK_NFT", &nft);
        }
    }
    rig.start();
    rig.daemon().wait_log(
        "drift: other programs' changes to the rules are noticed through",
        10,
    );
    let read = || std::fs::read_to_string(&calls).unwrap_or_default();
    // The look at start, then quiet.
    std::thread::sleep(Duration::from_secs(2));
    let before = read();
    assert!(
        !before.is_empty(),
        "{}: the wrappers were not used",
        b.name()
    );
    std::thread::sleep(Duration::from_secs(6));
    let after = read();
    assert_eq!(
        after.len(),
        before.len(),
        "{}: an idle daemon ran firewall tools between polls:\n{}",
        b.name(),
        &after[before.len().min(after.len())..]
    );
}

#[test]
fn an_idle_daemon_runs_no_firewall_tool_between_polls() {
    all(13, idle_scenario);
}

// ---------------------------------------------------------------------------------------
// Drift inside tgknock's own chain or table (issue 15, point 4): what tgknock owns is
// compared whole, every rule with its contents and order, not only its comment.

/// `kill -SIG pid`.
fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// Waits until the daemon has logged `count` repairs in all.
fn wait_repairs(rig: &mut Rig, count: usize, what: &str) {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let log = rig.daemon().output();
        if log.matches("; put them back").count() >= count {
            return;
        }
        assert!(
            Instant::now() < end,
            "{}: no repair after {what}:\n{log}\n{}",
            rig.fw.name(),
            rig.ruleset()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The handle of the rule of the nft table whose comment is `comment`.
fn nft_handle(rig: &Rig, comment: &str) -> String {
    let listing = run_ok(Command::new("ip").args([
        "netns",
        "exec",
        &rig.net.board,
        NFT,
        "-a",
        "list",
        "chain",
        "inet",
        "tgknock",
        "input",
    ]))
    .unwrap();
    let line = listing
        .lines()
        .find(|l| l.contains(&format!("comment \"{comment}\"")))
        .unwrap_or_else(|| panic!("no rule with the comment {comment}:\n{listing}"));
    line.rsplit("# handle ").next().unwrap().trim().to_string()
}

/// With iptables-nft, the daemon also reads its chain with nft (whose print is the
/// kernel's rules, where iptables-nft's `-S` is a translation).
fn with_nft_printer(rig: &mut Rig) {
    if rig.fw == Fw::Ipt(Backend::Nft) {
        rig.env.set("TGKNOCK_NFT", NFT);
    }
}

fn foreign_rule_scenario(b: Fw, n: u8) {
    let Some(mut rig) = Rig::new(SUBNET, n, b, 1) else {
        return;
    };
    with_nft_printer(&mut rig);
    rig.start();
    rig.net.expect(
        "closed at start",
        &[(0, SSH, V4, false), (0, SSH, V6, false)],
    );
    // A rule without a comment put into the owned chain or table, while the daemon is
    // stopped (so that `status` sees it before any repair).
    let pid = rig.daemon().pid();
    signal(pid, "STOP");
    match b {
        Fw::Nft => rig.nft_script("insert rule inet tgknock input tcp dport 22 accept\n"),
        Fw::Ipt(_) => {
            for fam in [V4, V6] {
                rig.ipt(
                    fam,
                    &[
                        "-I", "TGKNOCK", "1", "-p", "tcp", "--dport", "22", "-j", "ACCEPT",
                    ],
                );
            }
        }
    }
    rig.net.expect(
        "the foreign rule opens 22",
        &[(0, SSH, V4, true), (0, SSH, V6, true)],
    );
    let out = rig.console(&["status"]);
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(
        status.contains("ssh (22/tcp) MISMATCH") && !status.contains("ssh (22/tcp) closed"),
        "{}: status must not say closed while a foreign rule opens the port:\n{status}",
        b.name()
    );
    signal(pid, "CONT");
    let told = rig
        .env
        .api
        .wait_reply(OWNER, "another program changed the firewall rules", 30);
    assert!(
        told.contains("put them back") && told.contains("dport 22"),
        "{}: the owner is told what was found: {told}",
        b.name()
    );
    wait_repairs(&mut rig, 1, "a rule without a comment");
    rig.net.expect(
        "the foreign rule is gone",
        &[(0, SSH, V4, false), (0, SSH, V6, false)],
    );
    let rules = rig.ruleset();
    assert!(
        !rules.contains("dport 22 accept") && !rules.contains("-j ACCEPT"),
        "{}:\n{rules}",
        b.name()
    );
    rig.assert_installed_once("after the repair of a foreign rule");
    // A rule of tgknock's replaced with the same comment and other contents.
    match b {
        Fw::Nft => {
            for (fam, nfproto) in [("4", "ipv4"), ("6", "ipv6")] {
                let key = format!("{fam} tgknock-gate:ssh tcp=22 syn drop");
                let handle = nft_handle(&rig, &key);
                rig.nft_script(&format!(
                    "replace rule inet tgknock input handle {handle} meta nfproto {nfproto} tcp dport 22 accept comment \"{key}\"\n"
                ));
            }
        }
        Fw::Ipt(_) => {
            // As the issue has it (a RETURN where the DROP was), and a DROP that can never
            // match (two port matches), which reads back like tgknock's own (iptables-nft
            // even lists it as one port match: the daemon reads the chain with nft too).
            rig.ipt(
                V4,
                &[
                    "-R",
                    "TGKNOCK",
                    "2",
                    "-p",
                    "tcp",
                    "--dport",
                    "22",
                    "-m",
                    "comment",
                    "--comment",
                    "tgknock-gate:ssh",
                    "-j",
                    "RETURN",
                ],
            );
            rig.ipt(
                V6,
                &[
                    "-R",
                    "TGKNOCK",
                    "2",
                    "-p",
                    "tcp",
                    "-m",
                    "tcp",
                    "--dport",
                    "9",
                    "-m",
                    "tcp",
                    "--dport",
                    "22",
                    "--tcp-flags",
                    "FIN,SYN,RST,ACK",
                    "SYN",
                    "-m",
                    "comment",
                    "--comment",
                    "tgknock-gate:ssh",
                    "-j",
                    "DROP",
                ],
            );
        }
    }
    wait_repairs(&mut rig, 2, "a rule replaced under the same comment");
    rig.net.expect(
        "the replaced rule is put back",
        &[(0, SSH, V4, false), (0, SSH, V6, false)],
    );
    let rules = rig.ruleset();
    assert!(
        !rules.contains("dport 22 accept") && !rules.contains("--dport 9"),
        "{}:\n{rules}",
        b.name()
    );
    let status = rig.say("/status");
    assert!(!status.contains("MISMATCH"), "{status}");
}

#[test]
fn a_foreign_rule_inside_the_owned_chain_or_table_is_put_back() {
    all(20, foreign_rule_scenario);
}

/// How many times the daemon has read the rules (`iptables -S`, `nft list table`).
fn reads(rig: &mut Rig) -> usize {
    let log = rig.daemon().output();
    log.lines()
        .filter(|l| l.contains(" -S") || l.contains("list table inet tgknock"))
        .filter(|l| l.contains("running "))
        .count()
}

fn no_false_drift_scenario(b: Fw, n: u8) {
    let Some(mut rig) = Rig::new(SUBNET, n, b, 2) else {
        return;
    };
    rig.env
        .set("TGKNOCK_RATE_LIMIT", "ssh=6/min web=100/min")
        .set("TGKNOCK_KNOCK", "7101,7102,7103");
    with_nft_printer(&mut rig);
    rig.start();
    let r = rig.say("/open web 1h");
    assert!(r.contains("web (80/tcp) open to everyone"), "{r}");
    let r = rig.say("/ban 198.51.100.7 1h");
    assert!(r.starts_with("banned 198.51.100.7"), "{r}");
    let r = rig.say("/ban 2001:db8:bad::/48");
    assert!(r.starts_with("banned 2001:db8:bad::/48"), "{r}");
    // Changes at the console: rules the daemon did not write are no drift either.
    let from = rig.client_v4(0).to_string();
    rig.console_ok(&["open", "ssh", "--for", "2h", "--from", &from]);
    rig.console_ok(&["ban", "198.51.100.8", "--for", "1h"]);
    // Traffic: counters move, the rate meters and the knock lists fill up.
    let start = reads(&mut rig);
    let end = Instant::now() + Duration::from_secs(60);
    let mut rounds = 0;
    while reads(&mut rig) < start + 6 || rounds < 3 {
        assert!(Instant::now() < end, "the daemon does not check the rules");
        for fam in [V4, V6] {
            let mut s = rig.net.connect(0, WEB, fam).unwrap();
            roundtrip(&mut s, b"counters").unwrap();
            let _ = rig.net.reach(1, SSH, fam);
            let _ = rig.net.reach(1, 7101, fam);
        }
        poke(&rig);
        rounds += 1;
        std::thread::sleep(Duration::from_millis(500));
    }
    let log = rig.daemon().output();
    assert!(
        !log.contains("put them back") && !log.contains("another program"),
        "{}: drift reported with nothing changed:\n{log}",
        b.name()
    );
    if matches!(b, Fw::Nft | Fw::Ipt(Backend::Nft)) {
        assert!(
            log.contains("writing the rules once more, to know them whole"),
            "the daemon writes the console's rules once more, to compare them from then on:\n{log}"
        );
    }
    assert!(
        !rig.env
            .api
            .sent_to(OWNER)
            .iter()
            .any(|m| m.contains("another program")),
        "{}",
        b.name()
    );
    let status = rig.say("/status");
    assert!(!status.contains("MISMATCH"), "{status}");
}

/// A change that leaves tgknock's rules as they were but that the daemon's watcher hears
/// of, so that it looks at them while the counters, lists and meters move (a daemon that
/// hears of changes from the kernel does not look after every poll): a rule of the
/// owner's at the end of INPUT, added or removed, or a chain added to and deleted from
/// tgknock's own table in one transaction.
fn poke(rig: &Rig) {
    match rig.fw {
        Fw::Ipt(_) => {
            // Added in one round, removed in the next: legacy xtables are fingerprinted
            // once a second, and a rule added and removed in between changes nothing.
            for fam in [V4, V6] {
                let rule = ["INPUT", "-p", "tcp", "--dport", "9998", "-j", "ACCEPT"];
                let there = rig.listing(fam).contains("--dport 9998");
                rig.ipt(
                    fam,
                    &[&[if there { "-D" } else { "-A" }], &rule[..]].concat(),
                );
            }
        }
        Fw::Nft => rig.nft_script("add chain inet tgknock poke\ndelete chain inet tgknock poke\n"),
    }
}

#[test]
fn no_drift_is_seen_while_counters_lists_and_meters_move() {
    all(21, no_false_drift_scenario);
}
