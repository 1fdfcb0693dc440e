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
//!   `RUNTIME_DIRECTORY`; the time from a foreign `iptables -F; iptables -X` to the rules
//!   back, with 50 s and 1 s polls (real iptables-legacy, as root); the CPU of one look at
//!   the rules.
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

const IPTABLES: [&str; 2] = ["/usr/sbin/iptables-legacy", "/usr/sbin/ip6tables-legacy"];

/// `iptables -F; iptables -X` in both families, as ufw or iptables-persistent do.
fn foreign_flush(ns: &str) -> Result<(), String> {
    for tool in IPTABLES {
        in_ns(ns, tool, &["-w", "-F"])?;
        in_ns(ns, tool, &["-w", "-X"])?;
    }
    Ok(())
}

/// Whether a family's `iptables -S` shows tgknock's chain reached from INPUT.
fn chain_back(ns: &str, tool: &str) -> bool {
    in_ns(ns, tool, &["-w", "-S"])
        .is_ok_and(|l| l.lines().any(|x| x == "-A INPUT -j TGKNOCK") && l.contains("-A TGKNOCK "))
}

/// One foreign flush and its repair.
struct Repair {
    /// From the flush to both families' chains back.
    latency: Duration,
    /// From the end of the poll that was running at the flush to the chains back.
    after_poll: Option<Duration>,
}

/// A fresh daemon on real iptables-legacy in a namespace of its own, polling every
/// `poll`: the rules are flushed `phase` (a fraction of the poll) after a poll began,
/// and `iptables -S` is read until both families show the chain again — every 100 ms, and
/// every 5 ms from half a second before the poll's end (and throughout with short polls).
/// A fresh daemon each time: three repairs in ten minutes make the daemon hold back.
fn repair_once(s: &Subject, poll: Duration, phase: f64) -> Result<Repair, String> {
    let scratch = Scratch::with(Fw::Legacy)?;
    let ns = scratch.netns.clone().expect("a namespace");
    let mut p = scratch
        .spawn(s, &format!("{}s", poll.as_secs()))
        .map_err(|e| format!("spawn: {e}"))?;
    scratch
        .wait_poll(0, Duration::from_secs(20))
        .ok_or("no getUpdates in 20 s")?;
    poll_until(Duration::from_secs(10), Duration::from_millis(20), || {
        IPTABLES.iter().all(|t| chain_back(&ns, t)).then_some(())
    })
    .ok_or("the rules were not in place after the start")?;
    // The next poll to begin (the fake holds each for `poll`).
    let k = scratch.api.requests("getUpdates").len();
    let began = scratch
        .wait_poll(k, poll + Duration::from_secs(10))
        .ok_or("no next poll")?;
    let poll_end = began + poll;
    std::thread::sleep((began + poll.mul_f64(phase)).saturating_duration_since(Instant::now()));
    foreign_flush(&ns)?;
    let t = Instant::now();
    let limit = Instant::now() + poll * 2 + Duration::from_secs(10);
    for tool in IPTABLES {
        while !chain_back(&ns, tool) {
            if Instant::now() > limit {
                return Err(format!(
                    "{tool}: the chain was not back {} s after the flush",
                    t.elapsed().as_secs()
                ));
            }
            let near_end = Instant::now() + Duration::from_millis(500) >= poll_end;
            let step = if near_end || poll <= Duration::from_secs(2) {
                5
            } else {
                100
            };
            std::thread::sleep(Duration::from_millis(step));
        }
    }
    let back = Instant::now();
    if !p.alive() {
        return Err("the daemon died".into());
    }
    Ok(Repair {
        latency: back - t,
        after_poll: back.checked_duration_since(poll_end),
    })
}

/// CPU of a daemon polling every second (one look at the rules after each poll).
struct PollCpu {
    polls: usize,
    /// utime + stime of the daemon, and cutime + cstime of its children (the iptables
    /// listings it waited for), from /proc/PID/stat in clock ticks.
    own: Duration,
    children: Duration,
    /// schedstat's on-CPU time of the daemon's threads (ns precision).
    on_cpu: Option<Duration>,
}

/// A daemon on real iptables-legacy with 1 s polls over `window`; `ipv6` false sets
/// `TGKNOCK_IP6TABLES=off`, so each look at the rules lists one family instead of two.
fn poll_cpu(s: &Subject, ipv6: bool, window: Duration) -> Result<PollCpu, String> {
    let scratch = Scratch::with(Fw::Legacy)?;
    let extra = if ipv6 {
        Vec::new()
    } else {
        vec![("TGKNOCK_IP6TABLES", "off".to_string())]
    };
    let mut p = scratch
        .spawn_env(s, "1s", &extra)
        .map_err(|e| format!("spawn: {e}"))?;
    scratch
        .wait_poll(0, Duration::from_secs(20))
        .ok_or("no getUpdates in 20 s")?;
    std::thread::sleep(Duration::from_secs(2));
    let pid = p.pid();
    let read = || stat_ticks(pid).zip(Some(on_cpu(pid)));
    let (t0, c0) = read().ok_or("no /proc stat")?;
    let polls0 = scratch.api.requests("getUpdates").len();
    std::thread::sleep(window);
    let (t1, c1) = read().ok_or("the daemon died")?;
    let polls = scratch.api.requests("getUpdates").len() - polls0;
    if !p.alive() {
        return Err("the daemon died".into());
    }
    let ticks = |a: u64, b: u64| Duration::from_millis((b - a) * 1000 / clock_ticks());
    Ok(PollCpu {
        polls,
        own: ticks(t0[0] + t0[1], t1[0] + t1[1]),
        children: ticks(t0[2] + t0[3], t1[2] + t1[3]),
        on_cpu: c0.zip(c1).map(|(a, b)| b.saturating_sub(a)),
    })
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

/// What one look at the rules runs, timed alone: `iptables-legacy -S` and
/// `ip6tables-legacy -S`, `n` times, in a shell that then execs `sleep` so its children's
/// CPU (cutime + cstime, kept across exec) can be read. Per pair: (CPU, wall).
fn listing_alone(n: usize) -> Result<(Duration, Duration), String> {
    let scratch = Scratch::with(Fw::Legacy)?;
    let ns = scratch.netns.clone().expect("a namespace");
    let script = format!(
        "i=0; while [ $i -lt {n} ]; do {} -w -S; {} -w -S; i=$((i+1)); done >/dev/null; exec sleep 30",
        IPTABLES[0], IPTABLES[1]
    );
    let t = Instant::now();
    let mut c = Command::new("sh");
    c.args(["-c", &script]).stdin(Stdio::null());
    let mut child = ns::run(&ns, move || c.spawn())
        .and_then(|c| c)
        .map_err(|e| format!("sh: {e}"))?;
    let pid = child.id();
    let done = poll_until(Duration::from_secs(60), Duration::from_millis(1), || {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        (comm.trim() == "sleep").then(|| t.elapsed())
    });
    let ticks = stat_ticks(pid);
    let _ = child.kill();
    let _ = child.wait();
    let wall = done.ok_or("the listings did not finish in 60 s")?;
    let t = ticks.ok_or("no /proc stat")?;
    let cpu = Duration::from_millis((t[2] + t[3]) * 1000 / clock_ticks());
    Ok((cpu / n as u32, wall / n as u32))
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// The rows of this section: idle writes to the state directory, the time from a foreign
/// flush to repaired rules, and the cost of a look at the rules. Measured for the first
/// subject only (a baseline may predate drift repair and `RUNTIME_DIRECTORY`).
fn drift_rows(s: &Subject, idle: Duration, columns: usize) -> Vec<Row> {
    let row = |what: &str, budget: &str| Row {
        what: what.into(),
        budget: budget.into(),
        values: vec![None; columns],
        texts: vec!["—".into(); columns],
        verdicts: vec![None; columns],
    };
    let poll = Duration::from_secs(50);
    // Flushes spread evenly over a 50 s poll, and one just after a poll began.
    let spread = [1.0 / 6.0, 0.5, 5.0 / 6.0];
    let short = [0.1, 0.3, 0.5, 0.7, 0.9];
    eprintln!(
        "bench: idle writes ({} s) and drift repair (50 s and 1 s polls, real iptables-legacy) …",
        idle.as_secs()
    );
    type Runs = Vec<Result<Repair, String>>;
    let (writes, long, worst, quick): ([Result<Writes, String>; 2], Runs, Runs, Runs) =
        std::thread::scope(|sc| {
            let w = [true, false].map(|rt| sc.spawn(move || idle_writes(s, idle, rt)));
            let long: Vec<_> = spread
                .iter()
                .map(|&ph| sc.spawn(move || repair_once(s, poll, ph)))
                .collect();
            let worst = sc.spawn(move || repair_once(s, poll, 0.002));
            let quick = sc.spawn(move || {
                short
                    .iter()
                    .map(|&ph| repair_once(s, Duration::from_secs(1), ph))
                    .collect::<Vec<_>>()
            });
            let join = |h: std::thread::ScopedJoinHandle<'_, Result<Repair, String>>| {
                h.join().unwrap_or_else(|_| Err("panicked".into()))
            };
            (
                w.map(|h| h.join().unwrap_or_else(|_| Err("panicked".into()))),
                long.into_iter().map(join).collect(),
                vec![join(worst)],
                quick
                    .join()
                    .unwrap_or_else(|_| vec![Err("panicked".into())]),
            )
        });
    eprintln!("bench: CPU of a look at the rules (1 s polls, 40 s, IPv4+IPv6 and IPv4 only) …");
    let cpu_window = Duration::from_secs(40);
    let [both, v4_only] = std::thread::scope(|sc| {
        [true, false]
            .map(|v6| sc.spawn(move || poll_cpu(s, v6, cpu_window)))
            .map(|h| h.join().unwrap_or_else(|_| Err("panicked".into())))
    });
    let alone = listing_alone(100);

    let mut rows = Vec::new();
    let mut r = row(
        "writes to the state directory while idle, RUNTIME_DIRECTORY set",
        "none",
    );
    let mut r2 = row(
        "… without RUNTIME_DIRECTORY (heartbeat in the state directory)",
        "",
    );
    for (row, w) in [(&mut r, &writes[0]), (&mut r2, &writes[1])] {
        match w {
            Ok(w) => {
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
            Err(e) => row.texts[0] = format!("error: {e}"),
        }
    }
    r.verdicts[0] = writes[0].as_ref().ok().map(|w| w.changes == 0);
    rows.extend([r, r2]);

    let describe = |runs: &Runs, poll: Duration| -> (Option<Duration>, String) {
        let ok: Vec<&Repair> = runs.iter().filter_map(|r| r.as_ref().ok()).collect();
        let errors: Vec<&String> = runs.iter().filter_map(|r| r.as_ref().err()).collect();
        if ok.is_empty() {
            return (
                None,
                format!("not measured: {}", errors.first().map_or("?", |e| e)),
            );
        }
        let med = median(ok.iter().map(|r| r.latency).collect()).unwrap_or_default();
        let max = ok.iter().map(|r| r.latency).max().unwrap_or_default();
        let after: Vec<Duration> = ok.iter().filter_map(|r| r.after_poll).collect();
        let text = format!(
            "{} ({:.2} poll; max {}; back {} after the poll returned{})",
            secs(med),
            med.as_secs_f64() / poll.as_secs_f64(),
            secs(max),
            match median(after) {
                Some(d) => ms(d),
                None => "before the poll's end".into(),
            },
            if errors.is_empty() {
                String::new()
            } else {
                format!("; {} runs failed: {}", errors.len(), errors[0])
            }
        );
        (Some(med), text)
    };
    let cases = [
        (
            "foreign flush to rules back, 50 s polls (median of 3 flushes spread over the poll)",
            "≤ one poll",
            &long,
            poll,
        ),
        (
            "… worst case: flush 0.1 s after a 50 s poll began",
            "≤ one poll",
            &worst,
            poll,
        ),
        (
            "… 1 s polls (median of 5)",
            "≤ one poll",
            &quick,
            Duration::from_secs(1),
        ),
    ];
    for (what, budget, runs, poll) in cases {
        let mut r = row(what, budget);
        let (med, text) = describe(runs, poll);
        r.texts[0] = text;
        if let Some(m) = med {
            r.values[0] = Some(m.as_secs_f64() * 1000.0);
            // Within the poll running at the flush: back by that poll's end, plus the
            // look itself (a second at most).
            let max = runs
                .iter()
                .filter_map(|r| r.as_ref().ok())
                .map(|r| r.latency)
                .max()
                .unwrap_or_default();
            r.verdicts[0] = Some(max <= poll + Duration::from_secs(1));
        }
        rows.push(r);
    }

    let mut r = row(
        "CPU per look at the rules (iptables -S, IPv4 + IPv6), 1 s polls",
        "",
    );
    match (&both, &v4_only) {
        (Ok(a), Ok(b)) if a.polls > 0 && b.polls > 0 => {
            let per = |d: Duration, n: usize| d.as_secs_f64() * 1000.0 / n as f64;
            // The listings' own processes: all of the daemon's children.
            let children = per(a.children, a.polls);
            // The daemon's share of a listing (spawn, wait, parse): the difference per
            // poll between listing two families and one, on-CPU time.
            let own = match (a.on_cpu, b.on_cpu) {
                (Some(x), Some(y)) => 2.0 * (per(x, a.polls) - per(y, b.polls)),
                _ => 2.0 * (per(a.own, a.polls) - per(b.own, b.polls)),
            };
            let check = children + own.max(0.0);
            r.values[0] = Some(check);
            r.texts[0] = format!(
                "{check:.2} ms ({children:.2} ms in the two iptables processes, {:.2} ms in the daemon); {} polls in {} s; at 50 s polls: {:.0} ms per hour",
                own.max(0.0),
                a.polls,
                cpu_window.as_secs(),
                check * 72.0
            );
        }
        (a, b) => {
            r.texts[0] = format!(
                "not measured: {}",
                a.as_ref()
                    .err()
                    .or(b.as_ref().err())
                    .map_or("no polls".to_string(), |e| e.clone())
            );
        }
    }
    rows.push(r);
    let mut r = row(
        "… the two listings alone (iptables-legacy -S + ip6tables-legacy -S, 100 times)",
        "",
    );
    match alone {
        Ok((cpu, wall)) => {
            r.values[0] = Some(cpu.as_secs_f64() * 1000.0);
            r.texts[0] = format!("{} CPU, {} wall per pair", ms(cpu), ms(wall));
        }
        Err(e) => r.texts[0] = format!("not measured: {e}"),
    }
    rows.push(r);
    rows
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
        format!(
            "{} (max {}; the whole `tgknock` process; {held} in both families)",
            medians.join(", "),
            ms(max.unwrap_or_default())
        )
    }
}

/// `CHANGES` rounds of `tgknock close`, `open`, `ban`, `unban` with `BANS` bans in place,
/// by the binary `bin` with the real tools of `kind` in a namespace of its own.
fn changes(bin: &Path, kind: Defense) -> Result<(Changes, Scratch), String> {
    let missing: Vec<&str> = kind
        .listing()
        .iter()
        .map(|(t, _)| *t)
        .filter(|t| !Path::new(t).exists())
        .collect();
    if !missing.is_empty() {
        return Err(format!("missing {missing:?}"));
    }
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
    Ok((
        Changes {
            times,
            rules,
            elements,
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
