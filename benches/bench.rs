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
//!   idle long polls, with `TGKNOCK_POLL_TIMEOUT=50s`;
//! - (`drift_rows`) changes to the state directory while idle, with and without
//!   `RUNTIME_DIRECTORY`; per backend (iptables-legacy, iptables-nft, nft: the real tools
//!   in a namespace, as root), the time from a foreign flush (`iptables -F; -X` in both
//!   families, or `nft flush ruleset`) at four points of a 50 s poll to the rules back,
//!   and an idle daemon's wake-ups and CPU (its children's included) per hour.
//!   `BENCH_ONLY=drift` measures only these.
//! - a button press: from queueing it to the edit of its message with the verified state
//!   (fake iptables, and as root real iptables-legacy in a namespace);
//! - `tgknock setup` with piped answers and the hello sent as soon as it asks (setup never
//!   takes a message that was waiting): its time from start to exit (the second's look
//!   for other senders included), and its own figure without `check` or waiting;
//! - resident memory of the daemon while an action runs;
//! - (`defense_rows`) one change with 1,000 bans in place — `tgknock open`, `close`,
//!   `ban` and `unban`, each timed as a whole process — with the real iptables-legacy,
//!   iptables-nft and nft in a namespace (as root), for tgknock and a baseline that is one
//!   binary; a SYN burst against a rate limit. `BENCH_ONLY=defense` measures only these
//!   (`BENCH_ONLY=flood`: only the flood with the API a round trip away, three times).
//!
//! MB is 1,000,000 bytes. Memory is read from /proc/PID/status (VmRSS, VmHWM).
//!
//! `BASELINE="<command line>"` runs the same measurements against another build or
//! command (the words are run in place of the binary, `run` appended: `/old/tgknock`, or
//! `qemu-arm /old/tgknock`) and prints ratios. `BENCH_BIN` measures another binary than
//! target/x86_64-unknown-linux-musl/release/tgknock (which is built when missing).

use std::collections::{BTreeMap, BTreeSet};
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
    tgknock::os::clock::now() as i64
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
        self.spawn_with(s, poll_timeout, &[])
    }

    /// Starts `run` with `extra` settings in its environment too.
    fn spawn_with(
        &self,
        s: &Subject,
        poll_timeout: &str,
        extra: &[(&str, &str)],
    ) -> std::io::Result<Proc> {
        let mut c = self.command(s, &["run"]);
        c.env("TGKNOCK_TOKEN", TOKEN)
            .env("TGKNOCK_ALLOWED_USERS", OWNER.to_string())
            .env("TGKNOCK_POLL_TIMEOUT", poll_timeout);
        for (k, v) in extra {
            c.env(k, v);
        }
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path = self.dir.join(format!("daemon-{n}.log"));
        let log = std::fs::File::create(&path)?;
        c.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        let child = match &self.netns {
            None => c.spawn()?,
            // A child is forked into the namespace of the thread that spawns it.
            Some(ns) => ns::run(ns, move || c.spawn())??,
        };
        Ok(Proc { child, log: path })
    }

    /// [`Scratch::spawn`] with more environment (`RUNTIME_DIRECTORY`, other keys).
    fn spawn_env(
        &self,
        s: &Subject,
        poll_timeout: &str,
        extra: &[(&str, String)],
    ) -> std::io::Result<Proc> {
        let pairs: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.spawn_with(s, poll_timeout, &pairs)
    }

    /// `args` of the subject, with the scratch directory's API, state and firewall.
    fn command(&self, s: &Subject, args: &[&str]) -> Command {
        let mut c = Command::new(&s.argv[0]);
        c.args(&s.argv[1..]).args(args);
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
        c.env("TGKNOCK_API_URL", self.api.url())
            .env("TGKNOCK_STATE_DIR", d.join("state"))
            .env("TGKNOCK_IPTABLES", v4)
            .env("TGKNOCK_IP6TABLES", v6)
            .env_remove("RUST_LOG");
        c
    }

    /// Waits for the next `getUpdates` after `before` of them; when it was received.
    fn wait_poll(&self, before: usize, limit: Duration) -> Option<Instant> {
        poll_until(limit, Duration::from_millis(1), || {
            self.api.requests("getUpdates").get(before).map(|r| r.at)
        })
    }

    /// Whether `gate` is open to everyone in both families of the fake firewall: no rule
    /// of it, or a RETURN for every source (bounded by the kernel's deadline).
    fn open_in_both(&self, gate: &str) -> bool {
        ["v4", "v6"].iter().all(|f| {
            std::fs::read_to_string(self.dir.join("fw").join(f).join("TGKNOCK")).is_ok_and(|t| {
                let tag = format!("tgknock-gate:{gate} ");
                let mine: Vec<&str> = t.lines().filter(|l| l.contains(&tag)).collect();
                mine.is_empty()
                    || mine
                        .iter()
                        .any(|l| l.ends_with("-j RETURN") && !l.contains(" -s "))
            })
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
    /// The daemon's requests between the first message queued and the rules in place:
    /// `getUpdates`, and the others by method.
    polls: usize,
    others: Vec<String>,
}

/// A TCP relay on 127.0.0.1 in front of `target` that holds every answer back by `rtt`:
/// the fake Bot API as far away as Telegram is from a board (one request per connection,
/// as the fake answers with `Connection: close`).
fn slow_relay(target: std::net::SocketAddr, rtt: Duration) -> std::net::SocketAddr {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the relay");
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let Ok(mut up) = std::net::TcpStream::connect(target) else {
                    return;
                };
                let (Ok(mut down_r), Ok(mut up_w)) = (conn.try_clone(), up.try_clone()) else {
                    return;
                };
                // The request goes up at once; the answer comes back a round trip later.
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut down_r, &mut up_w);
                });
                let mut answer = Vec::new();
                let mut buf = [0u8; 16 * 1024];
                let mut first = None;
                loop {
                    match up.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            first.get_or_insert_with(Instant::now);
                            answer.extend_from_slice(&buf[..n]);
                        }
                    }
                }
                std::thread::sleep(rtt);
                let mut conn = conn;
                let _ = conn.write_all(&answer);
            });
        }
    });
    addr
}

/// 5,000 strangers' `/open`, then the owner's, queued at a daemon in its long poll.
fn flood(s: &Subject) -> Result<Flood, String> {
    flood_over(s, None)
}

/// [`flood`] with every answer of the API `rtt` away.
fn flood_over(s: &Subject, rtt: Option<Duration>) -> Result<Flood, String> {
    let scratch = Scratch::new();
    let p = match rtt {
        None => scratch.spawn(s, "50s"),
        Some(rtt) => {
            let target: std::net::SocketAddr = scratch
                .api
                .url()
                .trim_start_matches("http://")
                .parse()
                .map_err(|e| format!("the fake's address: {e}"))?;
            let url = format!("http://{}", slow_relay(target, rtt));
            scratch.spawn_with(s, "50s", &[("TGKNOCK_API_URL", url.as_str())])
        }
    }
    .map_err(|e| format!("spawn: {e}"))?;
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
    let during = |m: &str| {
        scratch
            .api
            .requests(m)
            .iter()
            .filter(|r| r.at > t0 && r.at - t0 < rules)
            .count()
    };
    let polls = during("getUpdates");
    let others = [
        "sendMessage",
        "getMe",
        "setMyCommands",
        "answerCallbackQuery",
        "deleteWebhook",
    ]
    .into_iter()
    .filter_map(|m| Some(format!("{} {m}", Some(during(m)).filter(|n| *n > 0)?)))
    .collect();
    Ok(Flood {
        hwm,
        rules,
        reply,
        queued,
        polls,
        others,
    })
}

/// From a press on a button to the edit of its message with the verified state.
struct Presses {
    /// Press to edit: median, max.
    edit: (Duration, Duration),
    /// Press to its answer (`answerCallbackQuery` received): median.
    answer: Duration,
    n: usize,
}

const PRESSES: usize = 20;

/// The round trip to the API of the far-away flood.
const RTT: Duration = Duration::from_millis(50);

/// `PRESSES` presses, Open and Close of ssh in turn, on the keyboard of a `/status`, each
/// queued at a daemon in its long poll; timed from queueing to the fake API receiving the
/// edit (which comes after the firewall was changed and read back).
fn presses(s: &Subject, fw: Fw) -> Result<Presses, String> {
    let scratch = Scratch::with(fw)?;
    let _p = scratch.spawn(s, "50s").map_err(|e| format!("spawn: {e}"))?;
    scratch
        .wait_poll(0, Duration::from_secs(20))
        .ok_or("no getUpdates in 20 s")?;
    scratch.api.say(OWNER, "/status");
    poll_until(Duration::from_secs(20), Duration::from_millis(5), || {
        (!scratch.api.sent_to(OWNER).is_empty()).then_some(())
    })
    .ok_or("no reply to /status")?;
    let (panel, keyboard) = scratch.api.keyboard_of(OWNER, "ssh (22/tcp)");
    if keyboard.is_empty() {
        return Err("no buttons (a build without them)".into());
    }
    let mut edits = Vec::new();
    let mut answers = Vec::new();
    for i in 0..PRESSES {
        let data = if i % 2 == 0 {
            "/open ssh"
        } else {
            "/close ssh"
        };
        let before = scratch.api.edits().len();
        let answered = scratch.api.requests("answerCallbackQuery").len();
        std::thread::sleep(Duration::from_millis(100));
        let t0 = Instant::now();
        scratch.api.press(OWNER, OWNER, panel, data);
        let at = poll_until(Duration::from_secs(20), Duration::from_millis(1), || {
            (scratch.api.edits().len() > before).then(|| t0.elapsed())
        })
        .ok_or_else(|| format!("press {i} ({data}) was not followed by an edit in 20 s"))?;
        edits.push(at);
        if let Some(r) = scratch.api.requests("answerCallbackQuery").get(answered) {
            answers.push(r.at.saturating_duration_since(t0));
        }
    }
    Ok(Presses {
        edit: (
            median(edits.clone()).unwrap_or_default(),
            edits.iter().max().copied().unwrap_or_default(),
        ),
        answer: median(answers).unwrap_or_default(),
        n: edits.len(),
    })
}

/// `tgknock setup` with piped answers and the owner's hello sent as soon as it asks (its
/// first `getUpdates`): its time, from start to exit (the `check` it runs and the second
/// it looks for other senders included).
struct SetupRuns {
    total: Duration,
    max: Duration,
    /// Setup's own figure (its debug log), waiting excluded, `check` not included.
    own: Option<Duration>,
}

fn setup_runs(s: &Subject) -> Result<SetupRuns, String> {
    let mut totals = Vec::new();
    let mut owns = Vec::new();
    for _ in 0..START_RUNS {
        let scratch = Scratch::new();
        let config = scratch.dir.join("etc/tgknock.conf");
        let mut c = scratch.command(s, &["setup", "--config", config.to_str().unwrap()]);
        c.env("RUST_LOG", "tgknock=debug")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let t0 = Instant::now();
        let mut child = c.spawn().map_err(|e| format!("spawn: {e}"))?;
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().unwrap();
            let _ = stdin.write_all(format!("{TOKEN}\n\n\n\n").as_bytes());
        }
        let asked = Instant::now() + Duration::from_secs(30);
        while scratch.api.requests("getUpdates").is_empty() && Instant::now() < asked {
            std::thread::sleep(Duration::from_millis(2));
        }
        scratch.api.say(OWNER, "hello");
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        let took = t0.elapsed();
        if !out.status.success() {
            return Err(format!(
                "setup exited with {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .last()
                    .unwrap_or("")
            ));
        }
        totals.push(took);
        let log = String::from_utf8_lossy(&out.stderr);
        if let Some(rest) = log.split("setup took ").nth(1)
            && let Some(ms) = rest.split(' ').next().and_then(|n| n.parse::<u64>().ok())
        {
            owns.push(Duration::from_millis(ms));
        }
    }
    Ok(SetupRuns {
        max: totals.iter().max().copied().unwrap_or_default(),
        total: median(totals).unwrap_or_default(),
        own: median(owns),
    })
}

/// Resident memory of the daemon while an action (`/bin/sleep`) runs.
struct ActionMemory {
    idle: u64,
    running: u64,
    hwm: u64,
    threads: usize,
}

fn action_memory(s: &Subject) -> Result<ActionMemory, String> {
    let scratch = Scratch::new();
    let p = scratch
        .spawn_with(s, "50s", &[("TGKNOCK_ACTION_SLEEP", "/bin/sleep 8")])
        .map_err(|e| format!("spawn: {e}"))?;
    scratch
        .wait_poll(0, Duration::from_secs(20))
        .ok_or("no getUpdates in 20 s")?;
    std::thread::sleep(Duration::from_millis(500));
    let pid = p.pid();
    let idle = status_bytes(pid, "VmRSS").ok_or("no VmRSS")?;
    let before = threads(pid);
    scratch.api.say(OWNER, "/run sleep");
    // The run has a thread of its own besides the poll and the expiry.
    poll_until(Duration::from_secs(10), Duration::from_millis(10), || {
        (threads(pid) > before).then_some(())
    })
    .ok_or("the action did not start (a build without actions?)")?;
    let mut running = 0;
    let mut most_threads = 0;
    for _ in 0..20 {
        running = running.max(status_bytes(pid, "VmRSS").unwrap_or(0));
        most_threads = most_threads.max(threads(pid));
        std::thread::sleep(Duration::from_millis(200));
    }
    let hwm = status_bytes(pid, "VmHWM").ok_or("no VmHWM")?;
    Ok(ActionMemory {
        idle,
        running,
        hwm,
        threads: most_threads,
    })
}

// ---------------------------------------------------------------------------------------
// The state directory while idle, and drift repair

/// Size, inode, mtime and ctime (ns) of every entry of `dir`, and of `dir` itself (".").
fn footprint(dir: &Path) -> BTreeMap<String, (u64, u64, i128, i128)> {
    use std::os::unix::fs::MetadataExt;
    let stamp = |m: &std::fs::Metadata| {
        (
            m.len(),
            m.ino(),
            i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
        )
    };
    let mut out = BTreeMap::new();
    if let Ok(m) = std::fs::metadata(dir) {
        out.insert(".".to_string(), stamp(&m));
    }
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if let Ok(m) = e.path().symlink_metadata() {
            out.insert(e.file_name().to_string_lossy().into_owned(), stamp(&m));
        }
    }
    out
}

/// Changes seen in the state directory over an idle window.
struct Writes {
    /// Samples (50 ms apart) at which anything had changed since the one before.
    changes: usize,
    /// The entries that changed (`.`: the directory itself).
    names: BTreeSet<String>,
    /// Polls that returned during the window.
    polls: usize,
    window: Duration,
    /// Changes of the heartbeat in `RUNTIME_DIRECTORY`, when set.
    beats: Option<usize>,
}

impl Writes {
    fn per_hour(&self) -> f64 {
        self.changes as f64 * 3600.0 / self.window.as_secs_f64()
    }
}

/// An idle daemon (50 s long polls, the fake API holding each): how often its state
/// directory changes, with `RUNTIME_DIRECTORY` set as systemd sets it, or without.
fn idle_writes(s: &Subject, window: Duration, runtime_dir: bool) -> Result<Writes, String> {
    use std::os::unix::fs::PermissionsExt;
    let scratch = Scratch::new();
    let run = scratch.dir.join("run");
    std::fs::create_dir_all(&run).map_err(|e| e.to_string())?;
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o750))
        .map_err(|e| e.to_string())?;
    let extra = if runtime_dir {
        vec![("RUNTIME_DIRECTORY", run.display().to_string())]
    } else {
        Vec::new()
    };
    let mut p = scratch
        .spawn_env(s, "50s", &extra)
        .map_err(|e| format!("spawn: {e}"))?;
    scratch
        .wait_poll(0, Duration::from_secs(20))
        .ok_or("no getUpdates in 20 s")?;
    // Settled: the pid file, the state and the first heartbeat are written at start.
    std::thread::sleep(Duration::from_secs(2));
    let state = scratch.dir.join("state");
    let polls0 = scratch.api.requests("getUpdates").len();
    let mut last = footprint(&state);
    let beat = || footprint(&run).get("heartbeat").copied();
    let mut last_beat = beat();
    let (mut changes, mut names, mut beats) = (0, BTreeSet::new(), 0);
    let t0 = Instant::now();
    while t0.elapsed() < window {
        std::thread::sleep(Duration::from_millis(50));
        let b = beat();
        if b != last_beat {
            beats += 1;
            last_beat = b;
        }
        let now = footprint(&state);
        if now != last {
            changes += 1;
            for k in now.keys().chain(last.keys()) {
                if now.get(k) != last.get(k) {
                    names.insert(k.clone());
                }
            }
            last = now;
        }
    }
    if !p.alive() {
        return Err("the daemon died".into());
    }
    Ok(Writes {
        changes,
        names,
        polls: scratch.api.requests("getUpdates").len() - polls0,
        window: t0.elapsed(),
        beats: runtime_dir.then_some(beats),
    })
}

/// `n thing` or `n things`.
fn count(n: usize, thing: &str) -> String {
    format!("{n} {thing}{}", if n == 1 { "" } else { "s" })
}

/// Runs `program args` inside the network namespace `ns`; its standard output.
fn in_ns(ns: &str, program: &str, args: &[&str]) -> Result<String, String> {
    let mut c = Command::new(program);
    c.args(args).stdin(Stdio::null()).stderr(Stdio::null());
    let out = ns::run(ns, move || c.output())
        .and_then(|o| o)
        .map_err(|e| format!("{program}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{program} {}: {}", args.join(" "), out.status));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The tools of a backend are there (Debian: iptables, nftables).
fn tools_present(kind: Defense) -> Result<(), String> {
    let missing: Vec<&str> = kind
        .listing()
        .iter()
        .map(|(t, _)| *t)
        .filter(|t| !Path::new(t).exists())
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("missing {missing:?}"))
    }
}

/// One look at `kind`'s rules with its real tools: `iptables -S` of both families, or
/// `nft list table inet tgknock` (what the daemon lists when it compares after a poll).
fn look(kind: Defense) -> Vec<(&'static str, Vec<&'static str>)> {
    match kind {
        Defense::Nft => kind.listing(),
        _ => kind
            .listing()
            .into_iter()
            .map(|(t, _)| (t, vec!["-w", "-S"]))
            .collect(),
    }
}

/// A foreign flush of `kind`'s rules, as ufw, iptables-persistent or a reload of nftables
/// do: `iptables -F; iptables -X` in both families, or `nft flush ruleset`. How many
/// `-X` were refused: the daemon had put its chain back (referenced from INPUT again)
/// between the `-F` and the `-X`.
fn foreign_flush(ns: &str, kind: Defense) -> Result<usize, String> {
    if let Defense::Nft = kind {
        in_ns(ns, "/usr/sbin/nft", &["flush", "ruleset"])?;
        return Ok(0);
    }
    let mut refused = 0;
    for (tool, _) in kind.listing() {
        in_ns(ns, tool, &["-w", "-F"])?;
        if in_ns(ns, tool, &["-w", "-X"]).is_err() {
            refused += 1;
        }
    }
    Ok(refused)
}

/// Whether the kernel holds tgknock's rules: `iptables -S` of both families shows the
/// jump from INPUT and the chain's rules, or `nft list table inet tgknock` the input
/// chain with rules of both families.
fn chain_back(ns: &str, kind: Defense) -> bool {
    look(kind).into_iter().all(|(tool, args)| {
        in_ns(ns, tool, &args).is_ok_and(|l| match kind {
            Defense::Nft => l.split_once("chain input {").is_some_and(|(_, c)| {
                c.contains("comment \"4 tgknock") && c.contains("comment \"6 tgknock")
            }),
            _ => l.lines().any(|x| x == "-A INPUT -j TGKNOCK") && l.contains("-A TGKNOCK "),
        })
    })
}

/// The long poll of the drift rows (the fake API holds each this long), and the budget of
/// a repair.
const DRIFT_POLL: Duration = Duration::from_secs(50);
const REPAIR_BUDGET: Duration = Duration::from_secs(1);
/// Where in a poll the flushes fall, from the fake API receiving its `getUpdates`.
const FLUSHES: [(&str, f64); 4] = [
    ("0.1 s", 0.1 / 50.0),
    ("1/6", 1.0 / 6.0),
    ("1/2", 0.5),
    ("5/6", 5.0 / 6.0),
];
/// Between the starts of two flush runs, so that their 5 ms sampling rarely overlaps.
const FLUSH_STAGGER: Duration = Duration::from_millis(700);

/// How the daemon says it keeps an eye on the rules (its `drift:` line at info), short. A
/// watch of nf_tables first says it also compares after every poll, until the kernel tells
/// of tgknock's own first change; then that it notices through the notifications: the
/// latter, when the log has it.
fn drift_mode(p: &Proc) -> String {
    let text = std::fs::read_to_string(&p.log).unwrap_or_default();
    let noticed = |l: &str| {
        let (_, how) = l.split_once("noticed through ")?;
        Some(format!("noticed through {how}"))
    };
    let compared = |l: &str| {
        let (_, why) = l.split_once("compared with the kernel after every poll")?;
        Some(format!("compared after every poll{why}"))
    };
    let said = text
        .lines()
        .find_map(noticed)
        .or_else(|| text.lines().find_map(compared));
    let Some(short) = said else {
        return "no `drift:` line in its log: compared after every poll".into();
    };
    let short = short.trim_end_matches('.');
    if short.chars().count() > 80 {
        format!("{}…", short.chars().take(79).collect::<String>())
    } else {
        short.to_string()
    }
}

/// The median; of an even number, the mean of the two in the middle.
fn mid(mut v: Vec<Duration>) -> Duration {
    v.sort();
    match v.len() {
        0 => Duration::ZERO,
        n if n % 2 == 0 => (v[n / 2 - 1] + v[n / 2]) / 2,
        n => v[n / 2],
    }
}

/// A fresh daemon on `kind`'s real tools in a namespace of its own, 50 s polls held by
/// the fake API: after its first poll began and its rules are in place.
fn daemon_on(s: &Subject, kind: Defense) -> Result<(Scratch, String, Proc), String> {
    tools_present(kind)?;
    let scratch = Scratch::with(Fw::Legacy)?;
    let ns = scratch.netns.clone().expect("a namespace");
    let p = scratch
        .spawn_with(s, &format!("{}s", DRIFT_POLL.as_secs()), &kind.env())
        .map_err(|e| format!("spawn: {e}"))?;
    scratch
        .wait_poll(0, Duration::from_secs(20))
        .ok_or("no getUpdates in 20 s")?;
    poll_until(Duration::from_secs(10), Duration::from_millis(20), || {
        chain_back(&ns, kind).then_some(())
    })
    .ok_or("the rules were not in place after the start")?;
    Ok((scratch, ns, p))
}

/// One foreign flush and its repair.
struct Repair {
    /// From the flush's first command to the rules back (both families).
    latency: Duration,
    /// The flush's own commands.
    flush: Duration,
    /// From the end of the poll that was running at the flush to the rules back.
    after_poll: Option<Duration>,
    /// `-X` refused: the chain was back between the `-F` and the `-X`.
    refused: usize,
    mode: String,
}

/// A fresh daemon (`daemon_on`): its rules are flushed `phase` (a fraction of the poll)
/// after its second poll began, then listed until they are back: every 5 ms for 2 s
/// (the budget's range) and from half a second before the poll's end, every 100 ms in
/// between. A fresh daemon each time: three repairs in ten minutes make it hold back.
fn repair_once(s: &Subject, kind: Defense, phase: f64) -> Result<Repair, String> {
    let (scratch, ns, mut p) = daemon_on(s, kind)?;
    // The next poll to begin: one of the steady state, nothing of the start left.
    let k = scratch.api.requests("getUpdates").len();
    let began = scratch
        .wait_poll(k, DRIFT_POLL + Duration::from_secs(10))
        .ok_or("no next poll")?;
    let poll_end = began + DRIFT_POLL;
    let at = began + DRIFT_POLL.mul_f64(phase);
    std::thread::sleep(at.saturating_duration_since(Instant::now()));
    let t = Instant::now();
    let refused = foreign_flush(&ns, kind)?;
    let flush = t.elapsed();
    let limit = t + DRIFT_POLL * 2 + Duration::from_secs(10);
    while !chain_back(&ns, kind) {
        if Instant::now() > limit {
            return Err(format!(
                "the rules were not back {} s after the flush",
                t.elapsed().as_secs()
            ));
        }
        let fine = t.elapsed() < Duration::from_secs(2)
            || Instant::now() + Duration::from_millis(500) >= poll_end;
        std::thread::sleep(Duration::from_millis(if fine { 5 } else { 100 }));
    }
    let back = Instant::now();
    if !p.alive() {
        return Err("the daemon died".into());
    }
    Ok(Repair {
        latency: back - t,
        flush,
        after_poll: back.checked_duration_since(poll_end),
        refused,
        mode: drift_mode(&p),
    })
}

/// A cgroup of the bench's own holding one daemon: the CPU time of the daemon and of the
/// children it ran, in µs or ns (cgroup v2 `cpu.stat`'s usage_usec, or v1
/// `cpuacct.usage`) where /proc's cutime and cstime come in 10 ms ticks.
struct CpuGroup {
    dir: PathBuf,
    v2: bool,
}

impl CpuGroup {
    /// A new group with `pid` (and its threads) in it; None without root or cgroups.
    fn new(pid: u32) -> Option<CpuGroup> {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("tgkbench{}-{n}", std::process::id());
        let bases = [
            ("/sys/fs/cgroup", true),
            ("/sys/fs/cgroup/unified", true),
            ("/sys/fs/cgroup/cpuacct", false),
        ];
        for (base, v2) in bases {
            let base = Path::new(base);
            let mark = if v2 {
                "cgroup.controllers"
            } else {
                "cpuacct.usage"
            };
            if !base.join(mark).exists() || std::fs::create_dir(base.join(&name)).is_err() {
                continue;
            }
            let g = CpuGroup {
                dir: base.join(&name),
                v2,
            };
            if std::fs::write(g.dir.join("cgroup.procs"), pid.to_string()).is_ok()
                && g.usage().is_some()
            {
                return Some(g);
            }
        }
        None
    }

    fn usage(&self) -> Option<Duration> {
        if self.v2 {
            let text = std::fs::read_to_string(self.dir.join("cpu.stat")).ok()?;
            let us = text.lines().find_map(|l| l.strip_prefix("usage_usec "))?;
            Some(Duration::from_micros(us.trim().parse().ok()?))
        } else {
            let text = std::fs::read_to_string(self.dir.join("cpuacct.usage")).ok()?;
            Some(Duration::from_nanos(text.trim().parse().ok()?))
        }
    }
}

impl Drop for CpuGroup {
    fn drop(&mut self) {
        // Whatever is still in it goes back to the parent, then the group goes.
        let parent = self.dir.parent().map(|p| p.join("cgroup.procs"));
        for _ in 0..20 {
            let procs = std::fs::read_to_string(self.dir.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines() {
                if let Some(parent) = &parent {
                    let _ = std::fs::write(parent, pid);
                }
            }
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// An idle daemon on one backend: its wake-ups and CPU over the window.
struct IdleFw {
    window: Duration,
    polls: usize,
    voluntary: u64,
    involuntary: u64,
    threads: usize,
    /// schedstat's on-CPU time of the daemon's threads.
    own: Duration,
    /// Its children's (the tools it ran): the cgroup's total less the threads' own, or
    /// cutime + cstime in clock ticks (`precise` false).
    children: Duration,
    precise: bool,
    /// CPU of one look at the rules by the tools alone (with the rules in place).
    look: Result<Duration, String>,
    mode: String,
}

/// A daemon on `kind`'s real tools (`daemon_on`), left alone from 2 s after its first
/// poll began for `window` rounded to whole polls (at least one), so that the window
/// holds as many returns of a poll as it holds polls: context switches of all its
/// threads (/proc/PID/task/*/status), their on-CPU time (schedstat), and the CPU of the
/// children it ran.
fn idle_on(s: &Subject, kind: Defense, window: Duration) -> Result<IdleFw, String> {
    let polls = (window.as_secs_f64() / DRIFT_POLL.as_secs_f64())
        .round()
        .max(1.0);
    let window = DRIFT_POLL * polls as u32;
    let (scratch, ns, mut p) = daemon_on(s, kind)?;
    let pid = p.pid();
    let group = CpuGroup::new(pid);
    let first = scratch
        .wait_poll(0, Duration::ZERO)
        .ok_or("no first poll")?;
    std::thread::sleep((first + Duration::from_secs(2)).saturating_duration_since(Instant::now()));
    let read = || {
        let g = group.as_ref().and_then(CpuGroup::usage);
        (switches(pid), on_cpu(pid), stat_ticks(pid), g)
    };
    let (Some(sw0), Some(cpu0), Some(t0), g0) = read() else {
        return Err("no /proc of the daemon".into());
    };
    let polls0 = scratch.api.requests("getUpdates").len();
    let start = Instant::now();
    std::thread::sleep(window);
    let (Some(sw1), Some(cpu1), Some(t1), g1) = read() else {
        return Err("the daemon died".into());
    };
    let window = start.elapsed();
    let polls = scratch.api.requests("getUpdates").len() - polls0;
    if !p.alive() {
        return Err("the daemon died".into());
    }
    let own = cpu1.saturating_sub(cpu0);
    let (children, precise) = match g0.zip(g1) {
        Some((a, b)) => (b.saturating_sub(a).saturating_sub(own), true),
        None => {
            let ticks = (t1[2] + t1[3]).saturating_sub(t0[2] + t0[3]);
            (Duration::from_millis(ticks * 1000 / clock_ticks()), false)
        }
    };
    Ok(IdleFw {
        window,
        polls,
        voluntary: sw1.0 - sw0.0,
        involuntary: sw1.1 - sw0.1,
        threads: threads(pid),
        own,
        children,
        precise,
        look: look_alone(&ns, kind, 100),
        mode: drift_mode(&p),
    })
}

/// What one look at the rules costs the tools alone: `look(kind)` run `n` times by a
/// shell in the namespace, which then execs `sleep` so its children's CPU (cutime +
/// cstime, kept across exec) can be read. CPU per look.
fn look_alone(ns: &str, kind: Defense, n: usize) -> Result<Duration, String> {
    let one: Vec<String> = look(kind)
        .iter()
        .map(|(t, a)| format!("{t} {}", a.join(" ")))
        .collect();
    let script = format!(
        "i=0; while [ $i -lt {n} ]; do {}; i=$((i+1)); done >/dev/null 2>&1; exec sleep 30",
        one.join("; ")
    );
    let mut c = Command::new("sh");
    c.args(["-c", &script]).stdin(Stdio::null());
    let mut child = ns::run(ns, move || c.spawn())
        .and_then(|c| c)
        .map_err(|e| format!("sh: {e}"))?;
    let pid = child.id();
    let done = poll_until(Duration::from_secs(60), Duration::from_millis(1), || {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        (comm.trim() == "sleep").then_some(())
    });
    let ticks = stat_ticks(pid);
    let _ = child.kill();
    let _ = child.wait();
    done.ok_or("the listings did not finish in 60 s")?;
    let t = ticks.ok_or("no /proc stat")?;
    Ok(Duration::from_millis((t[2] + t[3]) * 1000 / clock_ticks()) / n as u32)
}

/// utime, stime, cutime, cstime of a process, in clock ticks.
fn stat_ticks(pid: u32) -> Option<[u64; 4]> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(4)
        .filter_map(|v| v.parse().ok())
        .collect();
    f.try_into().ok()
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// A latency in ms under a second, in s above.
fn took(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        ms(d)
    } else {
        secs(d)
    }
}

fn blank_row(what: &str, budget: &str, columns: usize) -> Row {
    Row {
        what: what.into(),
        budget: budget.into(),
        values: vec![None; columns],
        texts: vec!["—".into(); columns],
        verdicts: vec![None; columns],
    }
}

type Joined<T> = Result<T, String>;

fn joined<T>(h: std::thread::ScopedJoinHandle<'_, Joined<T>>) -> Joined<T> {
    h.join().unwrap_or_else(|_| Err("panicked".into()))
}

/// The rows of this section, measured for the first subject only (a baseline may predate
/// drift repair and `RUNTIME_DIRECTORY`): idle writes to the state directory; per
/// backend, the time from a foreign flush to the rules back at four points of a 50 s
/// poll, and an idle daemon's wake-ups and CPU. All at once (17 daemons, 15 namespaces):
/// 8 s of stagger + the first poll (50 s) + 5/6 of the second + the repair, about 100 s
/// (108 s while a flush waits for the poll's end), or the idle window if longer.
fn drift_rows(s: &Subject, idle: Duration, columns: usize) -> Vec<Row> {
    eprintln!(
        "bench: idle writes ({} s); per backend, flushes at {} of a 50 s poll, idle wake-ups and CPU …",
        idle.as_secs(),
        FLUSHES.map(|f| f.0).join(", "),
    );
    type Flushes = Vec<Joined<Repair>>;
    let (writes, flushes, idles): ([Joined<Writes>; 2], Vec<Flushes>, Vec<Joined<IdleFw>>) =
        std::thread::scope(|sc| {
            let w = [true, false].map(|rt| sc.spawn(move || idle_writes(s, idle, rt)));
            let idles: Vec<_> = Defense::ALL
                .iter()
                .map(|&k| sc.spawn(move || idle_on(s, k, idle)))
                .collect();
            let flushes: Vec<Vec<_>> = Defense::ALL
                .iter()
                .enumerate()
                .map(|(i, &k)| {
                    (FLUSHES.iter().enumerate())
                        .map(|(j, &(_, phase))| {
                            let delay = FLUSH_STAGGER * (i * FLUSHES.len() + j) as u32;
                            sc.spawn(move || {
                                std::thread::sleep(delay);
                                repair_once(s, k, phase)
                            })
                        })
                        .collect()
                })
                .collect();
            (
                w.map(joined),
                (flushes.into_iter())
                    .map(|v| v.into_iter().map(joined).collect())
                    .collect(),
                idles.into_iter().map(joined).collect(),
            )
        });
    let mut rows = writes_rows(&writes, columns);
    for (i, &kind) in Defense::ALL.iter().enumerate() {
        rows.push(flush_row(kind, &flushes[i], columns));
        rows.extend(idle_fw_rows(kind, &idles[i], columns));
    }
    rows
}

/// The idle writes to the state directory, with `RUNTIME_DIRECTORY` and without.
fn writes_rows(writes: &[Joined<Writes>; 2], columns: usize) -> Vec<Row> {
    let mut r = blank_row(
        "writes to the state directory while idle, RUNTIME_DIRECTORY set",
        "none",
        columns,
    );
    let mut r2 = blank_row(
        "… without RUNTIME_DIRECTORY (heartbeat in the state directory)",
        "",
        columns,
    );
    for (row, w) in [(&mut r, &writes[0]), (&mut r2, &writes[1])] {
        let w = match w {
            Ok(w) => w,
            Err(e) => {
                row.texts[0] = format!("error: {e}");
                continue;
            }
        };
        row.values[0] = Some(w.per_hour());
        let mut text = format!(
            "{:.0} per hour ({} in {:.0} s, {} returned",
            w.per_hour(),
            count(w.changes, "change"),
            w.window.as_secs_f64(),
            count(w.polls, "poll"),
        );
        if !w.names.is_empty() {
            let names: Vec<&str> = w.names.iter().map(String::as_str).collect();
            text.push_str(&format!(": {}", names.join(", ")));
        }
        text.push(')');
        if w.polls > 0 && w.changes > 0 {
            text.push_str(&format!(
                "; {:.1} per poll, {:.0} per hour at 50 s polls",
                w.changes as f64 / w.polls as f64,
                w.changes as f64 / w.polls as f64 * 72.0
            ));
        }
        if let Some(b) = w.beats {
            text.push_str(&format!(
                "; heartbeat in RUNTIME_DIRECTORY rewritten {}",
                count(b, "time")
            ));
        }
        row.texts[0] = text;
    }
    r.verdicts[0] = writes[0].as_ref().ok().map(|w| w.changes == 0);
    vec![r, r2]
}

/// One backend's flushes: the median and the worst against the budget, each flush's.
fn flush_row(kind: Defense, runs: &[Joined<Repair>], columns: usize) -> Row {
    let points: Vec<&str> = FLUSHES.iter().map(|f| f.0).collect();
    let mut r = blank_row(
        &format!(
            "foreign flush to rules back, {}, {} s polls (median of {}: at {} of a poll)",
            kind.name(),
            DRIFT_POLL.as_secs(),
            FLUSHES.len(),
            points.join(", ")
        ),
        "≤ 1 s",
        columns,
    );
    let ok: Vec<&Repair> = runs.iter().filter_map(|r| r.as_ref().ok()).collect();
    let errors: Vec<&String> = runs.iter().filter_map(|r| r.as_ref().err()).collect();
    let Some(first) = ok.first() else {
        r.texts[0] = format!("not measured: {}", errors.first().map_or("?", |e| e));
        return r;
    };
    let med = mid(ok.iter().map(|r| r.latency).collect());
    let max = ok.iter().map(|r| r.latency).max().unwrap_or_default();
    let each: Vec<String> = (FLUSHES.iter().zip(runs))
        .map(|((at, _), run)| match run {
            Ok(x) => format!("{at}: {}", took(x.latency)),
            Err(_) => format!("{at}: failed"),
        })
        .collect();
    let within = ok.iter().filter(|r| r.after_poll.is_none()).count();
    let flush = mid(ok.iter().map(|r| r.flush).collect());
    let refused: usize = ok.iter().map(|r| r.refused).sum();
    let mut text = format!(
        "{} (max {}; {}; {within} of {} back before that poll's end; the flush itself {}",
        took(med),
        took(max),
        each.join(", "),
        ok.len(),
        ms(flush),
    );
    if refused > 0 {
        text.push_str(&format!(", {refused} `-X` refused as the chain was back"));
    }
    text.push_str(&format!("; {})", first.mode));
    if let Some(e) = errors.first() {
        text.push_str(&format!("; {} failed: {e}", count(errors.len(), "run")));
    }
    r.texts[0] = text;
    r.values[0] = Some(med.as_secs_f64() * 1000.0);
    r.verdicts[0] = (errors.is_empty() || max > REPAIR_BUDGET).then_some(max <= REPAIR_BUDGET);
    r
}

/// One backend's idle daemon: wake-ups and CPU, scaled to an hour.
fn idle_fw_rows(kind: Defense, res: &Joined<IdleFw>, columns: usize) -> Vec<Row> {
    let name = kind.name();
    let mut wake = blank_row(
        &format!(
            "wake-ups per idle hour, {name}, {} s polls (context switches, all threads)",
            DRIFT_POLL.as_secs()
        ),
        "",
        columns,
    );
    let mut cpu = blank_row(
        &format!(
            "CPU per idle hour, {name}, {} s polls",
            DRIFT_POLL.as_secs()
        ),
        "",
        columns,
    );
    let d = match res {
        Ok(d) => d,
        Err(e) => {
            wake.texts[0] = format!("not measured: {e}");
            cpu.texts[0] = format!("not measured: {e}");
            return vec![wake, cpu];
        }
    };
    let hour = 3600.0 / d.window.as_secs_f64();
    let wakes = (d.voluntary + d.involuntary) as f64 * hour;
    wake.values[0] = Some(wakes);
    wake.texts[0] = format!(
        "{wakes:.0} ({} voluntary, {} involuntary in {:.0} s; {} threads; {} returned; {})",
        d.voluntary,
        d.involuntary,
        d.window.as_secs_f64(),
        d.threads,
        count(d.polls, "poll"),
        d.mode
    );
    let per_hour = |x: Duration| x.as_secs_f64() * 1000.0 * hour;
    let total = per_hour(d.own + d.children);
    cpu.values[0] = Some(total);
    cpu.texts[0] = format!(
        "{total:.0} ms ({:.0} ms the daemon's threads, {:.0} ms the tools it ran{}); one look at the rules by the tools alone: {}",
        per_hour(d.own),
        per_hour(d.children),
        if d.precise {
            ""
        } else {
            ", from cutime + cstime in 10 ms ticks"
        },
        match &d.look {
            Ok(l) => format!("{:.2} ms", l.as_secs_f64() * 1000.0),
            Err(e) => format!("not measured ({e})"),
        }
    );
    vec![wake, cpu]
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

    // `BENCH_ONLY=defense`: only the rows of 1,000 bans and the burst, per backend.
    if std::env::var("BENCH_ONLY").is_ok_and(|v| v == "defense") {
        eprintln!("bench: 1,000 bans and a SYN burst against a rate limit, per backend …");
        for kind in Defense::ALL {
            rows.extend(defense_rows(&subjects, kind, &row));
        }
        print_table(&subjects, &rows);
        return;
    }

    // `BENCH_ONLY=drift`: only the drift rows (idle writes; per backend, flushes and idle).
    if std::env::var("BENCH_ONLY").is_ok_and(|v| v == "drift") {
        rows.extend(drift_rows(&subjects[0], Duration::from_secs(idle_secs), n));
        print_table(&subjects, &rows);
        return;
    }

    // `BENCH_ONLY=flood`: only the flood with the API a round trip away, three times.
    if std::env::var("BENCH_ONLY").is_ok_and(|v| v == "flood") {
        for _ in 0..3 {
            match flood_over(&subjects[0], Some(RTT)) {
                Ok(f) => eprintln!(
                    "bench: flood, API {} ms away: rules in place after {} ({} getUpdates, {:?})",
                    RTT.as_millis(),
                    ms(f.rules),
                    f.polls,
                    f.others
                ),
                Err(e) => eprintln!("bench: flood: {e}"),
            }
        }
        return;
    }

    // Sizes: every release target (cross/build.sh; `make bench` builds them all), against
    // the contract's budget; the baseline's file if it names one.
    for (t, budget) in [
        (TARGET, 16 * MB / 10),
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
                let full = tgknock::base::duration::utc_full(d.as_secs());
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
    eprintln!(
        "bench: the same flood with a {} ms round trip to the API …",
        RTT.as_millis()
    );
    let far_floods: Vec<_> = subjects.iter().map(|s| flood_over(s, Some(RTT))).collect();
    eprintln!("bench: button presses, setup, an action …");
    let press_runs: Vec<(Fw, Vec<Result<Presses, String>>)> = [Fw::Fake, Fw::Legacy]
        .into_iter()
        .map(|fw| (fw, subjects.iter().map(|s| presses(s, fw)).collect()))
        .collect();
    let setups: Vec<_> = subjects.iter().map(setup_runs).collect();
    let action_mems: Vec<_> = subjects.iter().map(action_memory).collect();

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

    // With the API a round trip away, the floor is one round trip per batch of 100
    // updates (the owner's command is in the last batch): the contract allows 1.2 times it.
    let batches = (STRANGERS as u64 + 1).div_ceil(100);
    let floor = RTT * batches as u32;
    let mut r_far = row(
        &format!(
            "owner's /open behind {STRANGERS} strangers, API {} ms away: rules in place",
            RTT.as_millis()
        ),
        &format!("≤ 1.2 × {batches} round trips = {}", ms(floor * 6 / 5)),
    );
    for (i, res) in far_floods.iter().enumerate() {
        match res {
            Ok(f) => {
                r_far.values[i] = Some(f.rules.as_secs_f64() * 1000.0);
                r_far.texts[i] = format!(
                    "{} ({:.2} × the floor of {}; {} getUpdates{} before the rules)",
                    ms(f.rules),
                    f.rules.as_secs_f64() / floor.as_secs_f64(),
                    ms(floor),
                    f.polls,
                    f.others
                        .iter()
                        .map(|o| format!(", {o}"))
                        .collect::<String>()
                );
                r_far.verdicts[i] = Some(f.rules <= floor * 6 / 5);
            }
            Err(e) => r_far.texts[i] = format!("error: {e}"),
        }
    }

    rows.extend([r_rss, r_hwm, r_open, r_reply, r_far]);
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
    rows.extend(drift_rows(&subjects[0], Duration::from_secs(idle_secs), n));
    eprintln!("bench: 1,000 bans and a SYN burst against a rate limit, per backend …");
    for kind in Defense::ALL {
        rows.extend(defense_rows(&subjects, kind, &row));
    }
    rows.extend(press_rows(&press_runs, &row));
    rows.extend(setup_rows(&setups, &row));
    rows.extend(action_rows(&action_mems, &row));
    print_table(&subjects, &rows);
}

/// A firewall backend for the defense measurements (real tools, in a namespace).
#[derive(Clone, Copy)]
enum Defense {
    Legacy,
    IptNft,
    Nft,
}

impl Defense {
    const ALL: [Defense; 3] = [Defense::Legacy, Defense::IptNft, Defense::Nft];

    fn name(self) -> &'static str {
        match self {
            Defense::Legacy => "iptables-legacy",
            Defense::IptNft => "iptables-nft",
            Defense::Nft => "nft",
        }
    }

    fn env(self) -> Vec<(&'static str, &'static str)> {
        match self {
            Defense::Legacy => vec![
                ("TGKNOCK_FIREWALL", "iptables"),
                ("TGKNOCK_IPTABLES", "/usr/sbin/iptables-legacy"),
                ("TGKNOCK_IP6TABLES", "/usr/sbin/ip6tables-legacy"),
            ],
            Defense::IptNft => vec![
                ("TGKNOCK_FIREWALL", "iptables"),
                ("TGKNOCK_IPTABLES", "/usr/sbin/iptables-nft"),
                ("TGKNOCK_IP6TABLES", "/usr/sbin/ip6tables-nft"),
            ],
            Defense::Nft => vec![
                ("TGKNOCK_FIREWALL", "nft"),
                ("TGKNOCK_NFT", "/usr/sbin/nft"),
            ],
        }
    }

    /// The listing of everything tgknock holds, as the backend's tool prints it.
    fn listing(self) -> Vec<(&'static str, Vec<&'static str>)> {
        match self {
            Defense::Legacy => vec![
                ("/usr/sbin/iptables-legacy", vec!["-S"]),
                ("/usr/sbin/ip6tables-legacy", vec!["-S"]),
            ],
            Defense::IptNft => vec![
                ("/usr/sbin/iptables-nft", vec!["-S"]),
                ("/usr/sbin/ip6tables-nft", vec!["-S"]),
            ],
            Defense::Nft => vec![("/usr/sbin/nft", vec!["list", "table", "inet", "tgknock"])],
        }
    }
}

const BANS: usize = 1_000;
const CHANGES: usize = 5;
const BURST: usize = 200;

/// One console command of the binary in the namespace, with `env`; its duration.
fn console_in(
    ns: &str,
    bin: &Path,
    dir: &Path,
    env: &[(&str, &str)],
    args: &[&str],
) -> Result<Duration, String> {
    let mut c = Command::new(bin);
    c.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("TGKNOCK_") {
            c.env_remove(k);
        }
    }
    c.env("TGKNOCK_STATE_DIR", dir.join("state"))
        .env("TGKNOCK_GATES", "ssh=22/tcp")
        .env("TGKNOCK_RATE_LIMIT", "ssh=6/min")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    let what = args.join(" ");
    ns::run(ns, move || {
        let t = Instant::now();
        let out = c.output().map_err(|e| e.to_string())?;
        let took = t.elapsed();
        if out.status.success() {
            Ok(took)
        } else {
            Err(format!(
                "tgknock {what}: {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    })
    .map_err(|e| e.to_string())?
}

/// What one subject's changes with 1,000 bans in place took: per change (open, close,
/// ban, unban) its times; the rules and set elements the kernel then held.
struct Changes {
    times: Vec<(&'static str, Vec<Duration>)>,
    rules: usize,
    elements: usize,
    /// iptables: the median time of the tools alone for what one close must run at
    /// least (see [`tools_floor`]).
    floor: Option<Duration>,
}

impl Changes {
    /// The slowest change's median.
    fn worst(&self) -> Duration {
        self.times
            .iter()
            .filter_map(|(_, t)| median(t.clone()))
            .max()
            .unwrap_or_default()
    }

    fn text(&self) -> String {
        let medians: Vec<String> = self
            .times
            .iter()
            .map(|(what, t)| format!("{what} {}", ms(median(t.clone()).unwrap_or_default())))
            .collect();
        let max = self.times.iter().flat_map(|(_, t)| t).max().copied();
        let held = if self.elements > 0 {
            format!(
                "{} rules and {} ban set elements",
                self.rules, self.elements
            )
        } else {
            format!("{} rules", self.rules)
        };
        let floor = self.floor.map_or(String::new(), |f| {
            format!(
                "; the tools alone for one close, no tgknock: {} (median of {CHANGES}: \
                 restore deleting one rule and -S, in each family)",
                ms(f)
            )
        });
        format!(
            "{} (max {}; the whole `tgknock` process; {held} in both families{floor})",
            medians.join(", "),
            ms(max.unwrap_or_default())
        )
    }
}

/// What one close costs the iptables tools alone, with the rules of `changes` in place:
/// per family `iptables-restore --noflush` deleting one rule of the chain (a rule put
/// there first, untimed), then `iptables -S`, as tgknock runs them at the least (the
/// change, then the read that verifies it), with nothing of tgknock's around them. The
/// median of `CHANGES` rounds; `None` for nft.
fn tools_floor(ns: &str, kind: Defense) -> Result<Option<Duration>, String> {
    use std::io::Write;
    if matches!(kind, Defense::Nft) {
        return Ok(None);
    }
    let tools: Vec<String> = kind
        .listing()
        .into_iter()
        .map(|(t, _)| t.to_string())
        .collect();
    let restore = |tool: &str, input: &str| -> Result<(), String> {
        let mut c = Command::new(format!("{tool}-restore"))
            .args(["-w", "10", "--noflush"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("{tool}-restore: {e}"))?;
        c.stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .map_err(|e| e.to_string())?;
        let out = c.wait_with_output().map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "{tool}-restore: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(())
    };
    let mut times = Vec::new();
    for _ in 0..CHANGES {
        let tools = tools.clone();
        let took = ns::run(ns, move || -> Result<Duration, String> {
            for tool in &tools {
                restore(
                    tool,
                    "*filter\n-I TGKNOCK 2 -p tcp -m tcp --dport 9 -j RETURN\nCOMMIT\n",
                )?;
            }
            let t = Instant::now();
            for tool in &tools {
                restore(tool, "*filter\n-D TGKNOCK 2\nCOMMIT\n")?;
                let out = Command::new(tool)
                    .args(["-w", "10", "-S"])
                    .output()
                    .map_err(|e| format!("{tool}: {e}"))?;
                if !out.status.success() {
                    return Err(format!("{tool} -S: {}", out.status));
                }
            }
            Ok(t.elapsed())
        })
        .map_err(|e| e.to_string())??;
        times.push(took);
    }
    Ok(median(times))
}

/// `CHANGES` rounds of `tgknock close`, `open`, `ban`, `unban` with `BANS` bans in place,
/// by the binary `bin` with the real tools of `kind` in a namespace of its own.
fn changes(bin: &Path, kind: Defense) -> Result<(Changes, Scratch), String> {
    tools_present(kind)?;
    let scratch = Scratch::with(Fw::Legacy)?;
    let ns = scratch.netns.clone().unwrap();
    let env = kind.env();
    // 1,000 bans in the saved state (198.18.0.0/15, the benchmarking block), put in
    // place by one change.
    std::fs::create_dir_all(scratch.dir.join("state")).map_err(|e| e.to_string())?;
    let until = tgknock::os::clock::now() + 3_600;
    let bans: Vec<_> = (0..BANS)
        .map(|i| json!({"addr": format!("198.18.{}.{}", i / 250, i % 250 + 1), "until": until, "by": "console"}))
        .collect();
    let state = json!({"version": 1, "openings": {}, "bans": bans});
    std::fs::write(scratch.dir.join("state/state.json"), state.to_string())
        .map_err(|e| e.to_string())?;
    let run = |args: &[&str]| console_in(&ns, bin, &scratch.dir, &env, args);
    run(&["open", "ssh", "--for", "1h"])?;
    let mut times: Vec<(&'static str, Vec<Duration>)> = ["open", "close", "ban", "unban"]
        .into_iter()
        .map(|w| (w, Vec::new()))
        .collect();
    for i in 0..CHANGES {
        let addr = format!("198.19.0.{}", i + 1);
        times[1].1.push(run(&["close", "ssh"])?);
        times[0].1.push(run(&["open", "ssh", "--for", "1h"])?);
        times[2].1.push(run(&["ban", &addr, "--for", "1h"])?);
        times[3].1.push(run(&["unban", &addr])?);
    }
    let (mut rules, mut elements) = (0, 0);
    for (tool, args) in kind.listing() {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let out = ns::run(&ns, move || Command::new(tool).args(&args).output())
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        rules += text.lines().filter(|l| l.starts_with("-A TGKNOCK")).count();
        // nft: the input chain's rules, and the ban sets' elements.
        let chain = text.split_once("chain input {").map_or("", |(_, c)| c);
        rules += chain.lines().filter(|l| l.contains("comment \"")).count();
        elements += text.matches(" tgknock:ban src=").count();
    }
    let floor = tools_floor(&ns, kind)?;
    Ok((
        Changes {
            times,
            rules,
            elements,
            floor,
        },
        scratch,
    ))
}

/// The time of one change with 1,000 bans in place (each of open, close, ban, unban), for
/// each subject that is one binary; the share of a bounded SYN burst from one source the
/// kernel drops at `ssh=6/min` (loopback of the namespace, the gate open), for tgknock.
fn defense_rows(subjects: &[Subject], kind: Defense, row: &dyn Fn(&str, &str) -> Row) -> Vec<Row> {
    let name = kind.name();
    let mut r_change = row(
        &format!(
            "one change with {BANS} bans in place, {name} (median of {CHANGES} of each change)"
        ),
        "≤ 50 ms",
    );
    let mut r_burst = row(
        &format!("SYN burst of {BURST} from one source at ssh=6/min, {name}"),
        "",
    );
    let mut scratch = None;
    for (i, s) in subjects.iter().enumerate() {
        let [bin] = s.argv.as_slice() else {
            r_change.texts[i] = "not measured: not one binary".into();
            continue;
        };
        match changes(Path::new(bin), kind) {
            Ok((c, sc)) => {
                let worst = c.worst();
                r_change.values[i] = Some(worst.as_secs_f64() * 1000.0);
                r_change.texts[i] = c.text();
                r_change.verdicts[i] = Some(worst <= Duration::from_millis(50));
                if i == 0 {
                    scratch = Some(sc);
                }
            }
            Err(e) => r_change.texts[i] = format!("not measured: {e}"),
        }
    }
    let result = (|| -> Result<(), String> {
        let scratch = scratch.ok_or("no namespace with the rules in place")?;
        let ns = scratch.netns.clone().unwrap();
        // The burst: BURST connection attempts at once from 127.0.0.1 to an echo listener.
        let listener = ns::run(&ns, || std::net::TcpListener::bind("127.0.0.1:22"))
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s2 = stop.clone();
        let acceptor = std::thread::spawn(move || {
            while !s2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(1)),
                }
            }
        });
        let started = Instant::now();
        let passed: usize = ns::run(&ns, || {
            let to: std::net::SocketAddr = "127.0.0.1:22".parse().unwrap();
            let hs: Vec<_> = (0..BURST)
                .map(|_| {
                    std::thread::spawn(move || {
                        std::net::TcpStream::connect_timeout(&to, Duration::from_millis(800))
                            .is_ok()
                    })
                })
                .collect();
            hs.into_iter()
                .map(|h| h.join().unwrap_or(false))
                .filter(|ok| *ok)
                .count()
        })
        .map_err(|e| e.to_string())?;
        let took = started.elapsed();
        stop.store(true, Ordering::Relaxed);
        let _ = acceptor.join();
        let dropped = BURST - passed;
        r_burst.values[0] = Some(dropped as f64 / BURST as f64 * 100.0);
        r_burst.texts[0] = format!(
            "{passed} connected, {dropped} dropped ({:.1} %), in {} (connect timeout 800 ms)",
            dropped as f64 / BURST as f64 * 100.0,
            ms(took)
        );
        Ok(())
    })();
    if let Err(e) = result {
        r_burst.texts[0] = format!("not measured: {e}");
    }
    vec![r_change, r_burst]
}

fn press_rows(
    runs: &[(Fw, Vec<Result<Presses, String>>)],
    row: &dyn Fn(&str, &str) -> Row,
) -> Vec<Row> {
    let mut out = Vec::new();
    for (fw, results) in runs {
        let tool = match fw {
            Fw::Fake => "fake iptables (sh)",
            Fw::Legacy => "real iptables-legacy in a netns",
        };
        let mut r = row(
            &format!("button press to its verified edit, {tool} (median of {PRESSES})"),
            "",
        );
        for (i, res) in results.iter().enumerate() {
            match res {
                Ok(p) => {
                    r.values[i] = Some(p.edit.0.as_secs_f64() * 1000.0);
                    r.texts[i] = format!(
                        "{} (max {}; answered after {}; {} presses)",
                        ms(p.edit.0),
                        ms(p.edit.1),
                        ms(p.answer),
                        p.n
                    );
                }
                Err(e) => r.texts[i] = format!("not measured: {e}"),
            }
        }
        out.push(r);
    }
    out
}

fn setup_rows(runs: &[Result<SetupRuns, String>], row: &dyn Fn(&str, &str) -> Row) -> Vec<Row> {
    let mut total = row(
        &format!("setup, piped answers, hello once asked: start to exit (median of {START_RUNS})"),
        "token to bot < 2 min",
    );
    let mut own = row("… of it setup's own work, check excluded", "");
    for (i, res) in runs.iter().enumerate() {
        match res {
            Ok(s) => {
                total.values[i] = Some(s.total.as_secs_f64() * 1000.0);
                total.texts[i] = format!("{} (max {}; check included)", ms(s.total), ms(s.max));
                // Two minutes for the whole: setup's share must leave them to the typing.
                total.verdicts[i] = Some(s.max < Duration::from_secs(10));
                if let Some(o) = s.own {
                    own.values[i] = Some(o.as_secs_f64() * 1000.0);
                    own.texts[i] = ms(o);
                }
            }
            Err(e) => {
                total.texts[i] = format!("not measured: {e}");
            }
        }
    }
    vec![total, own]
}

fn action_rows(runs: &[Result<ActionMemory, String>], row: &dyn Fn(&str, &str) -> Row) -> Vec<Row> {
    // The contract sets no budget for it: the row says what the run adds to the idle daemon.
    let mut r = row("resident memory while an action runs (max VmRSS)", "");
    for (i, res) in runs.iter().enumerate() {
        match res {
            Ok(m) => {
                r.values[i] = Some(m.running as f64);
                r.texts[i] = format!(
                    "{} (+{:.0} kB over the idle {} before it; VmHWM {}; {} threads)",
                    mb(m.running),
                    m.running.saturating_sub(m.idle) as f64 / 1000.0,
                    mb(m.idle),
                    mb(m.hwm),
                    m.threads
                );
            }
            Err(e) => r.texts[i] = format!("not measured: {e}"),
        }
    }
    vec![r]
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
