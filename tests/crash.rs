//! Crash suite: `kill -9` at random moments while the daemon opens, closes and expires
//! openings, with real iptables/ip6tables (legacy and nft flavours, in parallel) inside a
//! network namespace of its own; then, with no daemon running, the state file and the
//! kernel are judged, and again after a restart.
//!
//! Each backend gets a board namespace `tgk<pid>-206-<n>-crash` (n = 1 for legacy, 101
//! for nft) with only its loopback up: the fake Bot API listens on the namespace's
//! 127.0.0.1 and the daemon runs inside it. Openings `from` an address use
//! 10.206.N.0/24 and fd00:206:N::/64; no traffic but the API's is needed.
//!
//! One iteration: queue a random mix of `/open` (1–3 s, so expiries happen; some for an
//! hour), `/open` for an address, and `/close`, each from its own chat (so replies count
//! per update); `kill -9` after a random delay, sometimes aimed at the next deadline (the
//! expiry thread's change) and sometimes at the start of a restarted daemon (its
//! reconcile). Then, once no process is left in the namespace (an orphaned
//! `iptables-restore` finishes or fails first):
//!
//! - `state.json` parses (never half written) and no `state.json.corrupt` appears; the
//!   saved offset never goes back;
//! - each family's INPUT holds exactly one jump to the chain, first;
//! - the chain holds only tgknock's rules, each gate complete (a DROP per port or none);
//! - no update got two replies (a command answered before the kill is not carried out
//!   again).
//!
//! After a restart (its reconcile done: "logged in as" is logged), holding the state lock
//! so neither the expiry thread nor a command changes anything meanwhile:
//!
//! - every saved opening ends after the restart began (an opening past its deadline was
//!   closed at once), and the chain of each family is exactly what the saved openings ask
//!   (closed gate: a DROP and no source RETURN; open from addresses: a RETURN per source
//!   and port before the DROP; open to all: nothing), so IPv4 and IPv6 agree;
//! - once the expiry thread has had its chance (waited for, not timed), no saved opening
//!   is past its deadline.
//!
//! At the end every queued update is confirmed, none has two replies, and at most one
//! reply per kill is missing (the command in flight, carried out and saved, then killed
//! before it answered).
//!
//! The plan comes from a seeded PRNG: the seed is printed, and `TGKNOCK_CRASH_SEED`
//! replays it (timing still varies). `TGKNOCK_CRASH_ITERATIONS` sets the iterations per
//! backend (default 30, so 60 in all); a time budget of about 80 s per backend stops
//! early, saying so. Without root, `ip netns` or the tools: `SKIPPED: …`, except under
//! `CI=true`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::OpenOptions;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::support::netns::{
    Backend, Fam, V4, V6, both_failed, env_in, in_netns, is_root, run_ok, skip,
};
use crate::support::{Daemon, Env, OWNER, wait_for};

/// The second octet of this file's addresses: 10.206.N.0/24, fd00:206:N::/64.
const SUBNET: u8 = 206;
const CHAIN: &str = "TGKNOCK";
const GATES: &str = "ssh=22/tcp web=80/tcp,443/tcp mosh=60000:61000/udp";
/// The gates and their ports as `iptables -S` prints `--dport`.
const PORTS: [(&str, &[&str]); 3] = [
    ("ssh", &["22"]),
    ("web", &["80", "443"]),
    ("mosh", &["60000:61000"]),
];
const DEFAULT_ITERATIONS: usize = 30;
/// Past this, a backend stops starting iterations (the suite stays near 90 s).
const TIME_BUDGET: Duration = Duration::from_secs(80);

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// The run's seed: `TGKNOCK_CRASH_SEED` (decimal or 0x-hex), else from the clock.
fn seed() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    *SEED.get_or_init(|| {
        let s = match std::env::var("TGKNOCK_CRASH_SEED") {
            Ok(v) => {
                let v = v.trim();
                match v.strip_prefix("0x") {
                    Some(h) => u64::from_str_radix(h, 16),
                    None => v.parse(),
                }
                .unwrap_or_else(|e| panic!("TGKNOCK_CRASH_SEED={v:?}: {e}"))
            }
            Err(_) => {
                let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
                t.as_nanos() as u64 ^ (u64::from(std::process::id()) << 32)
            }
        };
        eprintln!("crash: seed {s:#x} (TGKNOCK_CRASH_SEED={s:#x} replays the plan)");
        s
    })
}

fn iterations() -> usize {
    std::env::var("TGKNOCK_CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_ITERATIONS)
}

/// splitmix64: small, seedable, good enough to pick moments and commands.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

fn unix_now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap()
}

// ---------------------------------------------------------------------------------------
// The namespace

/// A namespace with only loopback up; deleted when dropped, panic or not.
struct Board {
    name: String,
}

impl Board {
    fn new(n: u8) -> Result<Board, String> {
        let board = Board {
            name: format!("tgk{}-{SUBNET}-{n}-crash", std::process::id()),
        };
        run_ok(Command::new("ip").args(["netns", "add", &board.name]))?;
        run_ok(Command::new("ip").args(["-n", &board.name, "link", "set", "lo", "up"]))?;
        Ok(board)
    }

    /// Processes whose network namespace is this one (after a kill: orphaned tools).
    fn processes(&self) -> Vec<u32> {
        let Ok(ns) = std::fs::metadata(format!("/run/netns/{}", self.name)) else {
            return Vec::new();
        };
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        dir.flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                std::fs::metadata(format!("/proc/{pid}/ns/net"))
                    .is_ok_and(|m| m.ino() == ns.ino() && m.dev() == ns.dev())
            })
            .collect()
    }
}

impl Drop for Board {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

// ---------------------------------------------------------------------------------------
// What the state and the kernel say

/// `addr[/prefix]` as `addr/prefix` with the address canonical, and its family.
fn norm(s: &str) -> Option<(Fam, String)> {
    let (a, p) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let addr: IpAddr = a.parse().ok()?;
    let (fam, max) = match addr {
        IpAddr::V4(_) => (V4, 32),
        IpAddr::V6(_) => (V6, 128),
    };
    let prefix: u8 = match p {
        Some(p) => p.parse().ok()?,
        None => max,
    };
    Some((fam, format!("{addr}/{prefix}")))
}

/// What one gate looks like in one family.
#[derive(Debug, Clone, PartialEq, Eq)]
enum View {
    Closed,
    OpenToAll,
    From(BTreeSet<String>),
}

#[derive(Debug, Clone)]
struct Opening {
    from: Option<String>,
    until: Option<u64>,
}

#[derive(Debug, Clone, Default)]
struct Saved {
    offset: Option<i64>,
    openings: BTreeMap<String, Vec<Opening>>,
}

impl Saved {
    /// Parses `state.json`'s text (`None`: no file, the empty state).
    fn parse(text: Option<&str>) -> Result<Saved, String> {
        let Some(text) = text else {
            return Ok(Saved::default());
        };
        let v: Value = serde_json::from_str(text)
            .map_err(|e| format!("state.json does not parse ({e}):\n{text}"))?;
        let mut s = Saved {
            offset: v["offset"].as_i64(),
            ..Saved::default()
        };
        let Some(map) = v["openings"].as_object() else {
            return Err(format!("state.json has no openings object:\n{text}"));
        };
        for (gate, list) in map {
            let list = list
                .as_array()
                .ok_or_else(|| format!("openings of {gate} are not a list:\n{text}"))?;
            let parsed = list
                .iter()
                .map(|o| Opening {
                    from: o["from"].as_str().map(String::from),
                    until: o["until"].as_u64(),
                })
                .collect();
            s.openings.insert(gate.clone(), parsed);
        }
        Ok(s)
    }

    /// What the saved openings ask of `gate` in `fam`, every one counted live.
    fn view(&self, gate: &str, fam: Fam) -> View {
        let list = self.openings.get(gate).map(Vec::as_slice).unwrap_or(&[]);
        if list.iter().any(|o| o.from.is_none()) {
            return View::OpenToAll;
        }
        let from: BTreeSet<String> = list
            .iter()
            .filter_map(|o| norm(o.from.as_deref()?))
            .filter(|(f, _)| *f == fam)
            .map(|(_, c)| c)
            .collect();
        if from.is_empty() {
            View::Closed
        } else {
            View::From(from)
        }
    }

    fn deadlines(&self) -> impl Iterator<Item = (&str, u64)> {
        self.openings
            .iter()
            .flat_map(|(g, l)| l.iter().filter_map(move |o| Some((g.as_str(), o.until?))))
    }
}

/// The words of an `iptables -S` line, quotes removed (tgknock's comments have no spaces).
fn words(line: &str) -> Vec<String> {
    line.split_whitespace()
        .map(|w| w.trim_matches('"').to_string())
        .collect()
}

fn after(words: &[String], flag: &str) -> Option<String> {
    let i = words.iter().position(|w| w == flag)?;
    words.get(i + 1).cloned()
}

/// One family's listing judged: the jumps in INPUT, and each gate's view of the chain.
#[derive(Debug)]
struct Kernel {
    jumps: usize,
    jump_first: bool,
    views: Vec<View>,
}

/// The source of a RETURN without `-s`: an opening to everyone, bounded by `-m time`.
const EVERYONE: &str = "everyone";

fn read_kernel(listing: &str) -> Result<Kernel, String> {
    let jump = format!("-A INPUT -j {CHAIN}");
    let input: Vec<&str> = listing
        .lines()
        .filter(|l| l.starts_with("-A INPUT "))
        .collect();
    let mut established = 0;
    // gate -> (ports with a DROP, (source, port) with a RETURN)
    type Seen = (BTreeSet<String>, BTreeSet<(String, String)>);
    let mut seen: HashMap<&str, Seen> = HashMap::new();
    let prefix = format!("-A {CHAIN} ");
    for (i, line) in listing
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .enumerate()
    {
        let w = words(line);
        let target = after(&w, "-j").unwrap_or_default();
        if w.iter().any(|x| x == "--ctstate") {
            if i != 0 || target != "RETURN" || established > 0 {
                return Err(format!("misplaced established rule: {line}"));
            }
            established += 1;
            continue;
        }
        let comment = after(&w, "--comment").unwrap_or_default();
        let Some(gate) = comment.strip_prefix("tgknock-gate:") else {
            return Err(format!("a rule tgknock would not write: {line}"));
        };
        let Some((name, ports)) = PORTS.iter().find(|(g, _)| *g == gate) else {
            return Err(format!("a rule of an unknown gate: {line}"));
        };
        let port = after(&w, "--dport").unwrap_or_default();
        if !ports.contains(&port.as_str()) {
            return Err(format!(
                "a rule on a port gate {gate} does not have: {line}"
            ));
        }
        let entry = seen.entry(name).or_default();
        match (target.as_str(), after(&w, "-s")) {
            ("DROP", None) => {
                entry.0.insert(port);
            }
            ("RETURN", src) => {
                if !entry.0.is_empty() {
                    return Err(format!("a source RETURN after the gate's DROP: {line}"));
                }
                let src = match src {
                    Some(src) => norm(&src).ok_or_else(|| format!("bad source in {line}"))?.1,
                    // An opening to everyone whose deadline the kernel keeps.
                    None if w.iter().any(|x| x == "--datestop") => EVERYONE.to_string(),
                    None => return Err(format!("unexpected rule: {line}")),
                };
                entry.1.insert((src, port));
            }
            _ => return Err(format!("unexpected rule: {line}")),
        }
    }
    if established != 1 {
        return Err("no established rule at the top of the chain".into());
    }
    let mut views = Vec::new();
    for (gate, ports) in PORTS {
        let (drops, returns) = seen.remove(gate).unwrap_or_default();
        let srcs: BTreeSet<String> = returns.iter().map(|(s, _)| s.clone()).collect();
        let view = if drops.is_empty() && returns.is_empty() {
            View::OpenToAll
        } else if drops.len() == ports.len()
            && returns.len() == srcs.len() * ports.len()
            && drops.iter().all(|p| ports.contains(&p.as_str()))
        {
            if srcs.is_empty() {
                View::Closed
            } else if srcs.contains(EVERYONE) {
                View::OpenToAll
            } else {
                View::From(srcs)
            }
        } else {
            return Err(format!(
                "gate {gate} is half there: DROP on {drops:?}, RETURN for {returns:?}"
            ));
        };
        views.push(view);
    }
    Ok(Kernel {
        jumps: input.iter().filter(|l| **l == jump).count(),
        jump_first: input.first() == Some(&jump.as_str()),
        views,
    })
}

/// The state file and both families' rules, read together.
struct Snapshot {
    state_text: Option<String>,
    saved: Saved,
    v4: String,
    v6: String,
    kernel: [Kernel; 2],
    /// Unix seconds when the reading began.
    at: u64,
}

impl Snapshot {
    fn describe(&self) -> String {
        format!(
            "state.json:\n{}\nIPv4:\n{}IPv6:\n{}",
            self.state_text.as_deref().unwrap_or("(none)"),
            self.v4,
            self.v6
        )
    }

    /// The saved openings' views, per family, against the kernel's.
    fn mismatches(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (k, fam) in [V4, V6].into_iter().enumerate() {
            for (g, (gate, _)) in PORTS.iter().enumerate() {
                let want = self.saved.view(gate, fam);
                let got = &self.kernel[k].views[g];
                if *got != want {
                    out.push(format!(
                        "{fam:?} {gate}: kernel {got:?}, saved state {want:?}"
                    ));
                }
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------------------
// The rig

/// One backend's world. Fields drop in order: the daemon first, the namespace last.
struct Rig {
    daemon: Option<Daemon>,
    env: Env,
    board: Board,
    backend: Backend,
    n: u8,
    rng: Rng,
    /// The chat of each queued update: replies are counted per chat.
    chats: Vec<(i64, i64, String)>,
    kills: usize,
    last_offset: Option<i64>,
    stats: BTreeMap<&'static str, usize>,
    context: String,
}

impl Rig {
    fn new(n: u8, backend: Backend) -> Option<Rig> {
        if !is_root() {
            skip("the crash suite needs root (network namespaces, real iptables)");
            return None;
        }
        let missing = backend.missing_tools();
        if !missing.is_empty() {
            skip(&format!("missing firewall tools: {missing:?}"));
            return None;
        }
        let board = match Board::new(n) {
            Ok(b) => b,
            Err(e) => {
                skip(&format!("cannot set up a network namespace: {e}"));
                return None;
            }
        };
        let name = board.name.clone();
        let mut env = env_in(&name);
        env.set("TGKNOCK_GATES", GATES)
            .set("TGKNOCK_FIREWALL", "iptables")
            .set("TGKNOCK_IPTABLES", &backend.tool(V4))
            .set("TGKNOCK_IP6TABLES", &backend.tool(V6))
            .set("TGKNOCK_NOTIFY_DENIED", "off")
            .set("RUST_LOG", "debug,ureq=info,ureq_proto=info");
        let seed = seed() ^ u64::from(n).wrapping_mul(0x2545_f491_4f6c_dd1d);
        Some(Rig {
            daemon: None,
            env,
            board,
            backend,
            n,
            rng: Rng(seed),
            chats: Vec::new(),
            kills: 0,
            last_offset: None,
            stats: BTreeMap::new(),
            context: String::new(),
        })
    }

    /// Starts `tgknock run` in the namespace, without waiting.
    fn spawn(&mut self) {
        let k = COUNTER.fetch_add(1, Ordering::SeqCst);
        let log = self.env.dir.join(format!("crash-daemon-{k}.log"));
        let f = std::fs::File::create(&log).unwrap();
        let child = in_netns(&self.board.name, &self.env.command(&["run"]))
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .expect("spawn tgknock run in the namespace");
        self.daemon = Some(Daemon {
            child: Some(child),
            log,
        });
    }

    /// Starts the daemon and waits for its reconcile and login; returns when it began.
    fn start(&mut self) -> u64 {
        let began = unix_now().as_secs();
        self.spawn();
        self.daemon.as_ref().unwrap().wait_log("logged in as", 30);
        began
    }

    fn kill(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            d.kill9();
            self.kills += 1;
        }
    }

    fn count(&mut self, what: &'static str) {
        *self.stats.entry(what).or_default() += 1;
    }

    fn listing(&self, fam: Fam) -> String {
        run_ok(Command::new("ip").args([
            "netns",
            "exec",
            &self.board.name,
            &self.backend.tool(fam),
            "-w",
            "-S",
        ]))
        .unwrap_or_else(|e| panic!("{} {e}", self.context))
    }

    fn state_path(&self, name: &str) -> std::path::PathBuf {
        self.env.state_dir().join(name)
    }

    /// Reads the state and both families' rules, holding the state lock (the daemon
    /// changes neither meanwhile).
    fn snapshot(&self) -> Snapshot {
        std::fs::create_dir_all(self.env.state_dir()).unwrap();
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.state_path("lock"))
            .unwrap();
        wait_for(30, "the state lock", || lock.try_lock().ok());
        let at = unix_now().as_secs();
        let state_text = std::fs::read_to_string(self.state_path("state.json")).ok();
        let v4 = self.listing(V4);
        let v6 = self.listing(V6);
        drop(lock);
        let saved =
            Saved::parse(state_text.as_deref()).unwrap_or_else(|e| panic!("{} {e}", self.context));
        let kernel = [&v4, &v6]
            .map(|l| read_kernel(l).unwrap_or_else(|e| panic!("{} {e}\n{l}", self.context)));
        Snapshot {
            state_text,
            saved,
            v4,
            v6,
            kernel,
            at,
        }
    }

    /// Queues a command from the owner in a chat of its own.
    fn push(&mut self, text: String) {
        let chat = -1_000_000_000 - self.chats.len() as i64;
        let id = self
            .env
            .api
            .push_message_at(OWNER, chat, "group", &text, crate::support::now());
        self.chats.push((id, chat, text));
    }

    fn random_command(&mut self) -> String {
        let n = self.n;
        let gate = *self.rng.pick(&["", "ssh", "web", "mosh"]);
        let secs = 1 + self.rng.below(3);
        let addrs = [
            format!("10.{SUBNET}.{n}.2"),
            format!("10.{SUBNET}.{n}.3"),
            format!("10.{SUBNET}.{n}.64/28"),
            format!("fd00:{SUBNET}:{n}::2"),
            format!("fd00:{SUBNET}:{n}:1::/64"),
        ];
        match self.rng.below(12) {
            0..=3 => format!("/open {gate} {secs}s"),
            4..=6 => {
                let addr = self.rng.pick(&addrs).clone();
                format!("/open {gate} {secs}s {addr}")
            }
            7 => {
                let addr = self.rng.pick(&addrs).clone();
                format!("/open {addr} {gate} 1h")
            }
            8 => format!("/open {gate} 1h"),
            _ => format!("/close {gate}"),
        }
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
    }

    /// Checks that no update was answered twice.
    fn check_replies(&self) -> usize {
        let mut per_chat: HashMap<i64, Vec<String>> = HashMap::new();
        for (chat, text) in self.env.api.sent() {
            per_chat.entry(chat).or_default().push(text);
        }
        let mut unanswered = 0;
        for (id, chat, text) in &self.chats {
            let replies = per_chat.get(chat).map(Vec::as_slice).unwrap_or(&[]);
            assert!(
                replies.len() <= 1,
                "{} update {id} ({text:?}) was carried out again after a restart: {} replies: {replies:#?}",
                self.context,
                replies.len()
            );
            if let Some(r) = replies.first() {
                assert!(
                    !r.starts_with("Not done"),
                    "{} update {id} ({text:?}) failed: {r}",
                    self.context
                );
            } else {
                unanswered += 1;
            }
        }
        unanswered
    }

    /// With no daemon: what the kill left behind.
    fn after_kill(&mut self) {
        wait_for(20, "the killed daemon's tools to finish", || {
            self.board.processes().is_empty().then_some(())
        });
        let snap = self.snapshot();
        self.common_checks(&snap, "after the kill");
        if snap.mismatches().is_empty() {
            self.count("kernel at rest after the kill");
        } else {
            // Killed between the rules and the save (or between IPv4 and IPv6): the
            // restart rebuilds from the file.
            self.count("kernel mid-change after the kill");
        }
        self.check_replies();
    }

    /// Checks for any moment: the file, the jumps, the offset.
    fn common_checks(&mut self, snap: &Snapshot, when: &str) {
        let ctx = &self.context;
        assert!(
            !self.state_path("state.json.corrupt").exists(),
            "{ctx} {when}: the daemon found a corrupt state.json"
        );
        for (k, fam) in [V4, V6].into_iter().enumerate() {
            let kern = &snap.kernel[k];
            assert!(
                kern.jumps == 1 && kern.jump_first,
                "{ctx} {when}: {fam:?} INPUT must hold exactly one jump to {CHAIN}, first:\n{}",
                snap.describe()
            );
        }
        assert!(
            snap.saved.offset >= self.last_offset,
            "{ctx} {when}: the saved offset went back from {:?}:\n{}",
            self.last_offset,
            snap.describe()
        );
        self.last_offset = snap.saved.offset;
        let temporaries = std::fs::read_dir(self.state_path(""))
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
                    .count()
            })
            .unwrap_or(0);
        if temporaries > 0 {
            self.count("a temporary file left by a kill");
        }
    }

    /// With the restarted daemon running: the rules are the saved state's, nothing is
    /// past its deadline.
    fn after_restart(&mut self, began: u64) {
        // The daemon's own reading of the kernel right after its reconcile, before any
        // command or expiry could touch the rules again.
        let log = self.daemon.as_ref().unwrap().output();
        let reconciled = log.split("firewall reconciled").next().unwrap_or("");
        assert!(
            !reconciled.contains("MISMATCH") && !reconciled.contains("not installed"),
            "{} the reconcile at start left the rules unlike the state:\n{log}",
            self.context
        );
        let snap = self.snapshot();
        self.common_checks(&snap, "after the restart");
        let ctx = self.context.clone();
        for (gate, until) in snap.saved.deadlines() {
            assert!(
                until > began,
                "{ctx} after the restart: {gate}'s opening until {until} survived a restart begun at {began}:\n{}",
                snap.describe()
            );
        }
        let wrong = snap.mismatches();
        assert!(
            wrong.is_empty(),
            "{ctx} after the restart the rules are not the saved state's:\n{}\n{}",
            wrong.join("\n"),
            snap.describe()
        );
        // The expiry thread closes what runs out; the wait is a hang guard, not a timing.
        let mut waited = false;
        wait_for(
            20,
            "the expiry thread to close openings past their deadline",
            || {
                let snap = self.snapshot();
                let wrong = snap.mismatches();
                assert!(
                    wrong.is_empty(),
                    "{ctx} the rules are not the saved state's:\n{}\n{}",
                    wrong.join("\n"),
                    snap.describe()
                );
                let overdue = snap.saved.deadlines().any(|(_, u)| u < snap.at);
                waited |= overdue;
                (!overdue).then_some(())
            },
        );
        if waited {
            self.count("waited for an expiry after the restart");
        }
        self.check_replies();
    }

    /// The next deadline of the saved state, as a delay from now.
    fn next_deadline(&self) -> Option<Duration> {
        let text = std::fs::read_to_string(self.state_path("state.json")).ok()?;
        let saved = Saved::parse(Some(&text)).ok()?;
        let d = saved.deadlines().map(|(_, u)| u).min()?;
        Duration::from_secs(d).checked_sub(unix_now())
    }

    fn iteration(&mut self, i: usize) {
        let n_cmds = 1 + self.rng.below(5) as usize;
        let mut plan: Vec<(Duration, String)> = (0..n_cmds)
            .map(|_| {
                let at = Duration::from_millis(self.rng.below(1200));
                (at, self.random_command())
            })
            .collect();
        plan.sort_by_key(|(at, _)| *at);
        let (kill_at, mode) = match self.rng.below(100) {
            0..=14 => (Duration::from_millis(self.rng.below(120)), "early"),
            15..=44 => (Duration::from_millis(self.rng.below(1500)), "mid"),
            // The expiry thread wakes 20 ms after a deadline, then changes the rules.
            45..=69 => match self.next_deadline() {
                Some(d) if d < Duration::from_millis(3500) => (
                    d + Duration::from_millis(15 + self.rng.below(70)),
                    "at a deadline",
                ),
                _ => (Duration::from_millis(self.rng.below(2500)), "late"),
            },
            // Right after the fake API records a reply: the offset must be saved by then.
            70..=84 => (Duration::ZERO, "after a reply"),
            _ => (Duration::from_millis(self.rng.below(3000)), "late"),
        };
        let during_start = self.rng.below(100) < 15;
        let start_kill = Duration::from_millis(self.rng.below(150));
        self.context = format!(
            "[{} seed {:#x} iteration {i}: {:?}, kill at {} ms ({mode}){}]",
            self.backend.name(),
            seed(),
            plan.iter().map(|(_, c)| c.as_str()).collect::<Vec<_>>(),
            kill_at.as_millis(),
            if during_start {
                format!(", then {} ms into a start", start_kill.as_millis())
            } else {
                String::new()
            }
        );
        eprintln!("crash: {}", self.context);
        let t0 = Instant::now();
        let mut rest = Vec::new();
        for (at, cmd) in plan {
            if at < kill_at {
                std::thread::sleep((t0 + at).saturating_duration_since(Instant::now()));
                self.push(cmd);
            } else {
                rest.push(cmd);
            }
        }
        if mode == "after a reply" {
            // Every command at once, and the kill the moment the first is answered.
            let before = self.env.api.sent().len();
            for cmd in std::mem::take(&mut rest) {
                self.push(cmd);
            }
            let end = Instant::now() + Duration::from_secs(5);
            while self.env.api.sent().len() == before && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(1));
            }
        } else {
            std::thread::sleep((t0 + kill_at).saturating_duration_since(Instant::now()));
        }
        self.kill();
        self.count(mode);
        // Commands the daemon did not live to see wait for the next one.
        for cmd in rest {
            self.push(cmd);
        }
        self.after_kill();
        if during_start {
            self.spawn();
            std::thread::sleep(start_kill);
            self.kill();
            self.count("during a start");
            self.after_kill();
        }
        let began = self.start();
        self.after_restart(began);
    }

    /// After the last iteration: every update confirmed, answered at most once.
    fn finish(&mut self) {
        self.context = format!("[{} seed {:#x} at the end]", self.backend.name(), seed());
        wait_for(60, "every queued update to be confirmed", || {
            (self.env.api.pending() == 0).then_some(())
        });
        // The last confirmation comes with the poll after the last reply.
        let snap = self.snapshot();
        self.common_checks(&snap, "at the end");
        let unanswered = self.check_replies();
        assert!(
            unanswered <= self.kills,
            "{} {unanswered} updates got no reply, but only {} kills could have lost one",
            self.context,
            self.kills
        );
        self.stats
            .insert("unanswered (killed before the reply)", unanswered);
    }
}

fn crash_scenario(backend: Backend, n: u8) {
    let Some(mut rig) = Rig::new(n, backend) else {
        return;
    };
    let began = Instant::now();
    rig.context = format!("[{} seed {:#x} first start]", backend.name(), seed());
    rig.start();
    let wanted = iterations();
    let mut done = 0;
    while done < wanted {
        if began.elapsed() > TIME_BUDGET {
            eprintln!(
                "crash[{}]: time budget spent after {done} of {wanted} iterations",
                backend.name()
            );
            break;
        }
        rig.iteration(done);
        done += 1;
    }
    rig.finish();
    eprintln!(
        "crash[{}]: {done} iterations, {} kills, {} updates, seed {:#x}, {:.1} s; {}",
        backend.name(),
        rig.kills,
        rig.chats.len(),
        seed(),
        began.elapsed().as_secs_f64(),
        rig.stats
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
}

/// Both iptables flavours at once, each in its own namespace.
#[test]
fn kill9_at_random_moments() {
    seed();
    let failed = both_failed(1, crash_scenario);
    assert!(
        failed.is_empty(),
        "failed with backend(s) {failed:?}, seed {:#x}",
        seed()
    );
}
