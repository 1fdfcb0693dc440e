//! `make bench` (`cargo bench --bench bench`): the contract's budgets (DESIGN.md,
//! "Budgets") measured on the release x86_64 musl build, against the in-test fake Bot API
//! (tests/support/api.rs, on 127.0.0.1) and the recording fake iptables
//! (tests/support/fake_iptables.sh). It prints a table with PASS/OVER per budget and
//! always exits 0: it measures, it does not fail anything.
//!
//! - binary size of every release target (cross/build.sh), stripped, against its budget;
//! - idle resident memory during long polls (the largest VmRSS sampled each second);
//! - peak resident memory (VmHWM) while 5,000 queued stranger messages are drained;
//! - from queueing those 5,000 messages and an owner's `/open` behind them, to the
//!   rules being in place in both families (the fake iptables' files) and to the reply;
//! - from spawn to the fake API receiving the first `getUpdates` (median of 5, with no
//!   saved state and an empty firewall, and again with the rules already in place): with
//!   the fake iptables, and (as root) with the real iptables-legacy in a network
//!   namespace of the bench's own (`tgkbench<pid>-N`, loopback only, deleted after);
//! - CPU time (utime+stime from /proc/PID/stat, and schedstat's finer on-CPU time) and
//!   wake-ups (context switches of all threads) over `BENCH_IDLE_SECONDS` (default 60) of
//!   idle long polls, with `TGKNOCK_POLL_TIMEOUT=50s`.
//!
//! MB is 1,000,000 bytes. Memory is read from /proc/PID/status (VmRSS, VmHWM).
//!
//! `BASELINE="<command line>"` runs the same measurements against another build or
//! command (the words are run in place of the binary, `run` appended: `/old/tgknock`, or
//! `qemu-arm /old/tgknock`) and prints ratios. `BENCH_BIN` measures another binary than
//! target/x86_64-unknown-linux-musl/release/tgknock (which is built when missing).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

#[allow(dead_code)]
#[path = "../tests/support/api.rs"]
mod api;
#[path = "../tests/support/fake_fw.rs"]
mod fake_fw;

use api::FakeApi;

/// The token and bot name the fake API expects (the same as the tests').
pub const TOKEN: &str = "7000000001:AAF-TestSecretTestSecretTestSecret_x9";
pub const BOT: &str = "tgknock_test_bot";
const OWNER: i64 = 111_111_111;
const TARGET: &str = "x86_64-unknown-linux-musl";
const STRANGERS: i64 = 5_000;
const START_RUNS: usize = 5;
/// Budgets and sizes in decimal megabytes (the strict reading of "MB").
const MB: u64 = 1_000_000;

pub fn now() -> i64 {
    tgknock::now() as i64
}

/// What tests/support/api.rs waits with: polls `f` every 10 ms, panics after `secs`.
pub fn wait_for<T>(secs: u64, what: &str, f: impl FnMut() -> Option<T>) -> T {
    poll_until(Duration::from_secs(secs), Duration::from_millis(10), f)
        .unwrap_or_else(|| panic!("timed out after {secs} s waiting for {what}"))
}

/// Polls `f` every `step` until it gives `Some`, or `None` after `limit`.
fn poll_until<T>(limit: Duration, step: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > end {
            return None;
        }
        std::thread::sleep(step);
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Cargo's target directory: `CARGO_TARGET_DIR`, else target/ in the repository.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .filter(|p| !p.as_os_str().is_empty())
        .map(|p| if p.is_relative() { root().join(p) } else { p })
        .unwrap_or_else(|| root().join("target"))
}

// ---------------------------------------------------------------------------------------
// What is measured

/// A program to measure: the words of its command line (`run` is appended).
#[derive(Clone)]
struct Subject {
    name: &'static str,
    argv: Vec<String>,
}

/// The firewall a run uses.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fw {
    /// The recording fake (a shell script), in the bench's own network namespace.
    Fake,
    /// The real iptables-legacy and ip6tables-legacy, in a fresh network namespace.
    Legacy,
}

/// A fresh scratch directory with the fake iptables, and a fake Bot API; with the real
/// firewall, also a network namespace (only loopback) where the API listens and the
/// daemon runs.
struct Scratch {
    dir: PathBuf,
    api: FakeApi,
    fw: Fw,
    netns: Option<String>,
}

mod ns {
    use std::os::fd::AsRawFd;

    #[allow(unsafe_code)]
    mod sys {
        unsafe extern "C" {
            pub fn setns(fd: i32, nstype: i32) -> i32;
        }
    }

    /// Runs `f` on a fresh thread inside the network namespace `ns` (a socket, or a child
    /// process, made there belongs to it).
    pub fn run<T: Send + 'static>(
        ns: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::io::Result<T> {
        let file = std::fs::File::open(format!("/run/netns/{ns}"))?;
        std::thread::spawn(move || {
            // SAFETY: setns gets a descriptor that `file` keeps open for the call; it
            // moves only this thread.
            #[allow(unsafe_code)]
            let r = unsafe { sys::setns(file.as_raw_fd(), 0x4000_0000) };
            if r != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(f())
        })
        .join()
        .map_err(|_| std::io::Error::other("the namespace thread panicked"))?
    }
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

impl Scratch {
    fn new() -> Scratch {
        Scratch::with(Fw::Fake).expect("a scratch directory")
    }

    fn with(fw: Fw) -> Result<Scratch, String> {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("tgknock-bench-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        fake_fw::install(&dir);
        if fw == Fw::Fake {
            return Ok(Scratch {
                dir,
                api: FakeApi::start(),
                fw,
                netns: None,
            });
        }
        let name = format!("tgkbench{}-{n}", std::process::id());
        let ip = |args: &[&str]| -> Result<(), String> {
            let ok = Command::new("ip")
                .args(args)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            ok.then_some(())
                .ok_or(format!("ip {} failed", args.join(" ")))
        };
        ip(&["netns", "add", &name])?;
        // From here the namespace goes with the scratch, whatever happens.
        let mut scratch = Scratch {
            dir,
            api: FakeApi::start(),
            fw,
            netns: Some(name.clone()),
        };
        ip(&["-n", &name, "link", "set", "lo", "up"])?;
        let listener = ns::run(&name, || std::net::TcpListener::bind("127.0.0.1:0"))
            .and_then(|l| l)
            .map_err(|e| format!("bind in the namespace: {e}"))?;
        scratch.api = FakeApi::serve(listener);
        Ok(scratch)
    }

    /// Starts `run`, its output to a log file in the scratch directory.
    fn spawn(&self, s: &Subject, poll_timeout: &str) -> std::io::Result<Proc> {
        let mut c = Command::new(&s.argv[0]);
        c.args(&s.argv[1..]).arg("run");
        for (k, _) in std::env::vars() {
            if k.starts_with("TGKNOCK_") || k.ends_with("_PROXY") || k.ends_with("_proxy") {
                c.env_remove(k);
            }
        }
        let d = &self.dir;
        let (v4, v6) = match self.fw {
            Fw::Fake => (d.join("bin/iptables"), d.join("bin/ip6tables")),
            Fw::Legacy => (
                PathBuf::from("/usr/sbin/iptables-legacy"),
                PathBuf::from("/usr/sbin/ip6tables-legacy"),
            ),
        };
        // Only keys every version knows (an unknown TGKNOCK_* key is an error): with the
        // iptables tool present, `auto` picks iptables; proxies were removed above.
        c.env("TGKNOCK_TOKEN", TOKEN)
            .env("TGKNOCK_ALLOWED_USERS", OWNER.to_string())
            .env("TGKNOCK_API_URL", self.api.url())
            .env("TGKNOCK_POLL_TIMEOUT", poll_timeout)
            .env("TGKNOCK_STATE_DIR", d.join("state"))
            .env("TGKNOCK_IPTABLES", v4)
            .env("TGKNOCK_IP6TABLES", v6)
            .env_remove("RUST_LOG");
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path = d.join(format!("daemon-{n}.log"));
        let log = std::fs::File::create(&path)?;
        c.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        let child = match &self.netns {
            None => c.spawn()?,
            // A child is forked into the namespace of the thread that spawns it.
            Some(ns) => ns::run(ns, move || c.spawn())??,
        };
        Ok(Proc { child, log: path })
    }

    /// Waits for the next `getUpdates` after `before` of them; when it was received.
    fn wait_poll(&self, before: usize, limit: Duration) -> Option<Instant> {
        poll_until(limit, Duration::from_millis(1), || {
            self.api.requests("getUpdates").get(before).map(|r| r.at)
        })
    }

    /// Whether `gate` has no DROP rule left in both families of the fake firewall.
    fn open_in_both(&self, gate: &str) -> bool {
        ["v4", "v6"].iter().all(|f| {
            std::fs::read_to_string(self.dir.join("fw").join(f).join("TGKNOCK"))
                .is_ok_and(|t| !t.contains(&format!("tgknock-gate:{gate} ")))
        })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(ns) = &self.netns {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A running daemon; killed when dropped.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The daemon's own "firewall reconciled in N ms", once logged.
    fn reconcile(&self) -> Option<Duration> {
        let text = std::fs::read_to_string(&self.log).ok()?;
        let rest = &text[text.find("firewall reconciled in ")? + 23..];
        let n: u64 = rest.split_whitespace().next()?.parse().ok()?;
        Some(Duration::from_millis(n))
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `kB` line of /proc/PID/status, in bytes.
fn status_bytes(pid: u32, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kb: u64 = line[key.len()..]
        .trim_start_matches(':')
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// utime + stime (and those of waited-for children) of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14-17 of stat(5), counted from field 3 (state) here.
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
    Some(t(11)? + t(12)? + t(13)? + t(14)?)
}

/// Context switches of all the process's threads: (voluntary, involuntary).
fn switches(pid: u32) -> Option<(u64, u64)> {
    let mut total = (0, 0);
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let Ok(text) = std::fs::read_to_string(t.path().join("status")) else {
            continue;
        };
        for l in text.lines() {
            let num = |l: &str| l.split_whitespace().nth(1)?.parse::<u64>().ok();
            if l.starts_with("voluntary_ctxt_switches") {
                total.0 += num(l).unwrap_or(0);
            } else if l.starts_with("nonvoluntary_ctxt_switches") {
                total.1 += num(l).unwrap_or(0);
            }
        }
    }
    Some(total)
}

/// Time on a CPU of all the process's threads (schedstat, in ns: finer than ticks).
fn on_cpu(pid: u32) -> Option<Duration> {
    let mut ns = 0u64;
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let text = std::fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
        ns += text
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Some(Duration::from_nanos(ns))
}

fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn clock_ticks() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100)
}

fn median(mut v: Vec<Duration>) -> Option<Duration> {
    v.sort();
    v.get(v.len() / 2).copied()
}

/// Spawn to first `getUpdates`, `START_RUNS` times, cold and warm: the median and the
/// maximum, and the median of the daemon's own reconcile time (the firewall tools).
type Starts = [(Duration, Duration, Option<Duration>); 2];

fn start_latency(s: &Subject, fw: Fw) -> Result<Starts, String> {
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    for _ in 0..START_RUNS {
        let scratch = Scratch::with(fw)?;
        // Cold: no saved state, an empty firewall. Warm: the same again, rules in place.
        for out in [&mut cold, &mut warm] {
            let before = scratch.api.requests("getUpdates").len();
            let t = Instant::now();
            let mut p = scratch.spawn(s, "50s").map_err(|e| format!("spawn: {e}"))?;
            let at = scratch
                .wait_poll(before, Duration::from_secs(20))
                .ok_or_else(|| format!("no getUpdates in 20 s (alive: {})", p.alive()))?;
            let reconcile = poll_until(Duration::from_secs(2), Duration::from_millis(5), || {
                p.reconcile()
            });
            out.push((at.saturating_duration_since(t), reconcile));
        }
    }
    let stats = |v: Vec<(Duration, Option<Duration>)>| {
        let max = v.iter().map(|x| x.0).max().unwrap_or_default();
        let reconcile: Option<Vec<Duration>> = v.iter().map(|x| x.1).collect();
        (
            median(v.iter().map(|x| x.0).collect()).unwrap_or_default(),
            max,
            reconcile.and_then(median),
        )
    };
    Ok([stats(cold), stats(warm)])
}

struct Idle {
    rss_max: u64,
    cpu: Duration,
    on_cpu: Option<Duration>,
    voluntary: u64,
    involuntary: u64,
    polls: usize,
    threads: usize,
    window: Duration,
}

/// Idle long polls: RSS sampled each second, CPU and context switches over the window.
fn idle(s: &Subject, window: Duration) -> Result<Idle, String> {
    let scratch = Scratch::new();
    let mut p = scratch.spawn(s, "50s").map_err(|e| format!("spawn: {e}"))?;
    scratch
        .wait_poll(0, Duration::from_secs(20))
        .ok_or("no getUpdates in 20 s")?;
    std::thread::sleep(Duration::from_secs(1));
    let pid = p.pid();
    let (cpu0, sw0) = (
        cpu_ticks(pid).ok_or("no /proc stat")?,
        switches(pid).unwrap(),
    );
    let sched0 = on_cpu(pid);
    let polls0 = scratch.api.requests("getUpdates").len();
    let t0 = Instant::now();
    let mut rss_max = 0;
    while t0.elapsed() < window {
        std::thread::sleep(Duration::from_secs(1).min(window.saturating_sub(t0.elapsed())));
        rss_max = rss_max.max(status_bytes(pid, "VmRSS").unwrap_or(0));
    }
    let (cpu1, sw1) = (
        cpu_ticks(pid).ok_or("the daemon died")?,
        switches(pid).unwrap(),
    );
    let sched1 = on_cpu(pid);
    let window = t0.elapsed();
    if !p.alive() {
        return Err("the daemon died".into());
    }
    Ok(Idle {
        rss_max,
        cpu: Duration::from_millis((cpu1 - cpu0) * 1000 / clock_ticks()),
        on_cpu: sched0.zip(sched1).map(|(a, b)| b.saturating_sub(a)),
        voluntary: sw1.0 - sw0.0,
        involuntary: sw1.1 - sw0.1,
        // The poll that was waiting when the window began counts too.
        polls: scratch.api.requests("getUpdates").len() - polls0 + 1,
        threads: threads(pid),
        window,
    })
}

struct Flood {
    hwm: u64,
    rules: Duration,
    reply: Option<Duration>,
    queued: Duration,
}

/// 5,000 strangers' `/open`, then the owner's, queued at a daemon in its long poll.
fn flood(s: &Subject) -> Result<Flood, String> {
    let scratch = Scratch::new();
    let p = scratch.spawn(s, "50s").map_err(|e| format!("spawn: {e}"))?;
    scratch
        .wait_poll(0, Duration::from_secs(20))
        .ok_or("no getUpdates in 20 s")?;
    std::thread::sleep(Duration::from_millis(300));
    let date = now();
    let t0 = Instant::now();
    for i in 0..STRANGERS {
        let who = 900_000_000 + i;
        scratch.api.push_update(json!({
            "message": {
                "message_id": 10 + i,
                "from": {"id": who, "is_bot": false, "first_name": format!("bot{i}"), "username": format!("scan{i}")},
                "chat": {"id": who, "type": "private"},
                "date": date,
                "text": "/open ssh 1d",
            }
        }));
    }
    scratch.api.say(OWNER, "/open ssh 15m");
    let queued = t0.elapsed();
    let rules = poll_until(Duration::from_secs(30), Duration::from_millis(1), || {
        scratch.open_in_both("ssh").then(|| t0.elapsed())
    })
    .ok_or("the owner's /open was not in place after 30 s")?;
    let reply = poll_until(Duration::from_secs(10), Duration::from_millis(1), || {
        scratch
            .api
            .sent_to(OWNER)
            .iter()
            .any(|t| t.contains("ssh (22/tcp) open"))
            .then(|| t0.elapsed())
    });
    let hwm = status_bytes(p.pid(), "VmHWM").ok_or("no VmHWM")?;
    Ok(Flood {
        hwm,
        rules,
        reply,
        queued,
    })
}

// ---------------------------------------------------------------------------------------
// Binaries

/// Whether an ELF file has a `.symtab` section (None: not ELF, or unreadable).
fn has_symtab(path: &Path) -> Option<bool> {
    let mut b = Vec::new();
    std::fs::File::open(path).ok()?.read_to_end(&mut b).ok()?;
    if b.get(..4)? != b"\x7fELF" {
        return None;
    }
    let is64 = *b.get(4)? == 2;
    let le = *b.get(5)? == 1;
    let rd = |off: usize, n: usize| -> Option<u64> {
        let s = b.get(off..off + n)?;
        let mut v = 0u64;
        for i in 0..n {
            let byte = if le { s[n - 1 - i] } else { s[i] };
            v = (v << 8) | u64::from(byte);
        }
        Some(v)
    };
    let (shoff, shentsize, shnum, shstrndx) = if is64 {
        (rd(0x28, 8)?, rd(0x3a, 2)?, rd(0x3c, 2)?, rd(0x3e, 2)?)
    } else {
        (rd(0x20, 4)?, rd(0x2e, 2)?, rd(0x30, 2)?, rd(0x32, 2)?)
    };
    let section = |i: u64| -> Option<(u64, u64)> {
        let at = (shoff + i * shentsize) as usize;
        let name = rd(at, 4)?;
        let offset = if is64 {
            rd(at + 0x18, 8)?
        } else {
            rd(at + 0x10, 4)?
        };
        Some((name, offset))
    };
    let (_, strtab) = section(shstrndx)?;
    for i in 0..shnum {
        let (name, _) = section(i)?;
        let start = (strtab + name) as usize;
        let end = start + b.get(start..)?.iter().position(|&c| c == 0)?;
        if &b[start..end] == b".symtab" {
            return Some(true);
        }
    }
    Some(false)
}

/// The release x86_64 musl binary, built when missing.
fn tgknock_binary() -> PathBuf {
    if let Ok(p) = std::env::var("BENCH_BIN")
        && !p.is_empty()
    {
        return PathBuf::from(p);
    }
    let bin = target_dir().join(TARGET).join("release/tgknock");
    if !bin.exists() {
        eprintln!("bench: building {}", bin.display());
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let ok = Command::new("sh")
            .args(["cross/build.sh", TARGET])
            .env("CARGO", cargo)
            .stdout(Stdio::null())
            .current_dir(root())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("bench: cross/build.sh {TARGET} failed (make build says why)");
        }
    }
    bin
}

// ---------------------------------------------------------------------------------------
// The table

struct Row {
    what: String,
    budget: String,
    /// Measured values (tgknock, baseline) as numbers, for ratios; and as text.
    values: Vec<Option<f64>>,
    texts: Vec<String>,
    /// `Some(ok)` when the row has a budget.
    verdicts: Vec<Option<bool>>,
}

fn mb(b: u64) -> String {
    format!("{:.2} MB", b as f64 / MB as f64)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let tgknock = tgknock_binary();
    let mut subjects = vec![Subject {
        name: "tgknock",
        argv: vec![tgknock.display().to_string()],
    }];
    let baseline = std::env::var("BASELINE").unwrap_or_default();
    if !baseline.trim().is_empty() {
        subjects.push(Subject {
            name: "baseline",
            argv: baseline.split_whitespace().map(String::from).collect(),
        });
    }
    let idle_secs: u64 = std::env::var("BENCH_IDLE_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    eprintln!(
        "bench: {} (idle window {idle_secs} s{})",
        tgknock.display(),
        if subjects.len() > 1 {
            format!("; baseline: {baseline}")
        } else {
            String::new()
        }
    );

    let mut rows: Vec<Row> = Vec::new();
    let n = subjects.len();
    let row = |what: &str, budget: &str| Row {
        what: what.into(),
        budget: budget.into(),
        values: vec![None; n],
        texts: vec!["—".into(); n],
        verdicts: vec![None; n],
    };

    // Sizes: every release target (cross/build.sh; `make bench` builds them all), against
    // the contract's budget; the baseline's file if it names one.
    for (t, budget) in [
        (TARGET, 3 * MB / 2),
        ("aarch64-unknown-linux-musl", 3 * MB / 2),
        ("armv7-unknown-linux-musleabihf", 13 * MB / 10),
        ("arm-unknown-linux-musleabihf", 13 * MB / 10),
    ] {
        let p = target_dir().join(t).join("release/tgknock");
        let limit = format!("≤ {} MB stripped", budget as f64 / MB as f64);
        let Ok(meta) = std::fs::metadata(&p) else {
            let mut r = row(&format!("binary size, {t}"), &limit);
            r.texts[0] = format!("not built (cross/build.sh {t})");
            r.verdicts[0] = Some(false);
            rows.push(r);
            continue;
        };
        let mut r = row(&format!("binary size, {t}"), &limit);
        let stripped = has_symtab(&p).map(|s| !s);
        r.values[0] = Some(meta.len() as f64);
        let built = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| {
                let full = tgknock::duration::utc_full(d.as_secs());
                format!(", built {}", &full[..16])
            })
            .unwrap_or_default();
        r.texts[0] = format!(
            "{} ({} bytes{}{built})",
            mb(meta.len()),
            meta.len(),
            match stripped {
                Some(true) => ", stripped",
                Some(false) => ", NOT stripped",
                None => "",
            }
        );
        r.verdicts[0] = Some(meta.len() <= budget && stripped != Some(false));
        if n > 1
            && let Some(f) = subjects[1]
                .argv
                .iter()
                .rev()
                .find(|w| Path::new(w).is_file())
            && t == TARGET
        {
            let len = std::fs::metadata(f).map(|m| m.len()).unwrap_or(0);
            r.values[1] = Some(len as f64);
            r.texts[1] = format!("{} ({len} bytes)", mb(len));
        }
        rows.push(r);
    }

    // Idle: all subjects at once, so a baseline costs no second minute.
    eprintln!("bench: idle long polls for {idle_secs} s …");
    let idles: Vec<Result<Idle, String>> = std::thread::scope(|sc| {
        let hs: Vec<_> = subjects
            .iter()
            .map(|s| sc.spawn(move || idle(s, Duration::from_secs(idle_secs))))
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("panicked".into())))
            .collect()
    });

    eprintln!("bench: start latency …");
    let starts: Vec<(Fw, Vec<Result<Starts, String>>)> = [Fw::Fake, Fw::Legacy]
        .into_iter()
        .map(|fw| (fw, subjects.iter().map(|s| start_latency(s, fw)).collect()))
        .collect();
    eprintln!("bench: flood of {STRANGERS} strangers …");
    let floods: Vec<_> = subjects.iter().map(flood).collect();

    let mut r_rss = row("resident memory, idle long poll (max VmRSS)", "≤ 2 MB");
    let mut r_cpu = row(
        &format!("CPU while idle, {idle_secs} s of 50 s long polls"),
        "one wake-up per poll",
    );
    let mut r_wake = row("wake-ups while idle (context switches, all threads)", "");
    for (i, res) in idles.iter().enumerate() {
        match res {
            Ok(d) => {
                r_rss.values[i] = Some(d.rss_max as f64);
                r_rss.texts[i] = mb(d.rss_max);
                r_rss.verdicts[i] = Some(d.rss_max <= 2 * MB);
                let precise = d.on_cpu.unwrap_or(d.cpu);
                r_cpu.values[i] = Some(precise.as_secs_f64() * 1000.0);
                r_cpu.texts[i] = format!(
                    "{} ms utime+stime ({} on CPU), {} polls in {:.0} s",
                    d.cpu.as_millis(),
                    d.on_cpu
                        .map(|c| format!("{:.2} ms", c.as_secs_f64() * 1000.0))
                        .unwrap_or_else(|| "?".into()),
                    d.polls,
                    d.window.as_secs_f64()
                );
                let wakes = d.voluntary + d.involuntary;
                r_wake.values[i] = Some(wakes as f64);
                r_wake.texts[i] = format!(
                    "{wakes} ({:.1} per poll; {} voluntary, {} threads)",
                    wakes as f64 / d.polls as f64,
                    d.voluntary,
                    d.threads
                );
                // Nothing besides the polls: no periodic wake-up, i.e. fewer wake-ups than
                // seconds, and no more polls than the timeout allows.
                let max_polls = d.window.as_secs() / 50 + 2;
                r_cpu.verdicts[i] =
                    Some(wakes < d.window.as_secs().max(1) && d.polls as u64 <= max_polls);
            }
            Err(e) => {
                r_rss.texts[i] = format!("error: {e}");
                r_cpu.texts[i] = format!("error: {e}");
            }
        }
    }

    let mut r_hwm = row(
        &format!("resident memory draining {STRANGERS} stranger messages (VmHWM)"),
        "≤ 5 MB",
    );
    let mut r_open = row(
        &format!("owner's /open behind {STRANGERS} strangers: rules in place"),
        "≤ 1 s",
    );
    let mut r_reply = row("… and its reply sent", "");
    for (i, res) in floods.iter().enumerate() {
        match res {
            Ok(f) => {
                r_hwm.values[i] = Some(f.hwm as f64);
                r_hwm.texts[i] = mb(f.hwm);
                r_hwm.verdicts[i] = Some(f.hwm <= 5 * MB);
                r_open.values[i] = Some(f.rules.as_secs_f64() * 1000.0);
                r_open.texts[i] = format!("{} (queueing took {})", ms(f.rules), ms(f.queued));
                r_open.verdicts[i] = Some(f.rules <= Duration::from_secs(1));
                if let Some(d) = f.reply {
                    r_reply.values[i] = Some(d.as_secs_f64() * 1000.0);
                    r_reply.texts[i] = ms(d);
                } else {
                    r_reply.texts[i] = "no reply in 10 s".into();
                }
            }
            Err(e) => {
                r_hwm.texts[i] = format!("error: {e}");
                r_open.texts[i] = format!("error: {e}");
            }
        }
    }

    rows.extend([r_rss, r_hwm, r_open, r_reply]);
    for (fw, results) in starts {
        let tool = match fw {
            Fw::Fake => "fake iptables (sh)",
            Fw::Legacy => "real iptables-legacy in a netns",
        };
        let mut r_cold = row(
            &format!("start to first getUpdates, {tool}, empty (median of {START_RUNS})"),
            "≤ 50 ms",
        );
        let mut r_warm = row(
            &format!("start to first getUpdates, {tool}, rules in place"),
            "≤ 50 ms",
        );
        for (i, res) in results.iter().enumerate() {
            match res {
                Ok([cold, warm]) => {
                    for (r, (med, max, rec)) in [(&mut r_cold, cold), (&mut r_warm, warm)] {
                        r.values[i] = Some(med.as_secs_f64() * 1000.0);
                        r.texts[i] = format!(
                            "{} (max {}{})",
                            ms(*med),
                            ms(*max),
                            rec.map(|d| format!("; reconcile {} of it", ms(d)))
                                .unwrap_or_default()
                        );
                        r.verdicts[i] = Some(*med <= Duration::from_millis(50));
                    }
                }
                Err(e) => {
                    r_cold.texts[i] = format!("not measured: {e}");
                    r_warm.texts[i] = format!("not measured: {e}");
                }
            }
        }
        rows.extend([r_cold, r_warm]);
    }
    rows.extend([r_cpu, r_wake]);
    print_table(&subjects, &rows);
}

fn print_table(subjects: &[Subject], rows: &[Row]) {
    let verdict = |v: Option<bool>| match v {
        Some(true) => "PASS",
        Some(false) => "OVER",
        None => "",
    };
    let mut head = vec!["what".to_string(), "budget".into()];
    for s in subjects {
        head.push(s.name.to_string());
    }
    if subjects.len() > 1 {
        head.push("ratio".into());
    }
    head.push("verdict".into());
    let mut lines = vec![head];
    for r in rows {
        let mut l = vec![r.what.clone(), r.budget.clone()];
        for (i, t) in r.texts.iter().enumerate() {
            let mark = if i > 0 && r.verdicts[i].is_some() {
                format!(" [{}]", verdict(r.verdicts[i]))
            } else {
                String::new()
            };
            l.push(format!("{t}{mark}"));
        }
        if subjects.len() > 1 {
            l.push(match (r.values[0], r.values[1]) {
                (Some(a), Some(b)) if b > 0.0 => format!("×{:.2}", a / b),
                _ => String::new(),
            });
        }
        l.push(verdict(r.verdicts[0]).to_string());
        lines.push(l);
    }
    let widths: Vec<usize> = (0..lines[0].len())
        .map(|c| {
            lines
                .iter()
                .map(|l| l[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let fmt = |l: &[String]| {
        let cells: Vec<String> = l
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c}{}", " ".repeat(w - c.chars().count())))
            .collect();
        format!("| {} |", cells.join(" | "))
    };
    println!();
    println!("{}", fmt(&lines[0]));
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(w + 2)).collect();
    println!("|{}|", rule.join("|"));
    for l in &lines[1..] {
        println!("{}", fmt(l));
    }
    println!();
    if subjects.len() > 1 {
        println!("ratio: tgknock / baseline (below 1: tgknock uses less).");
    }
    println!(
        "Fake Bot API on 127.0.0.1 (tests/support/api.rs), recording fake iptables (tests/support/fake_iptables.sh, a shell script: each firewall call costs a few ms of sh)."
    );
}
