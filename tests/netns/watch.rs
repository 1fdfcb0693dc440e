//! The kernel primitives that notice other programs changing the firewall
//! (`tgknock::os::nfwatch`), against the real kernel in a namespace of their own:
//! nftables' notifications name what changed and who committed it, and the legacy tables'
//! fingerprint moves with every edit and never with traffic.

use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use tgknock::os::nfwatch::{NftEvent, NftEvents, NftObject, XtablesProbe};

use crate::support::netns::{in_netns, in_ns, ip, is_root, run_ok, skip};

/// A network namespace of its own (loopback up), deleted when dropped.
struct Ns(String);

impl Ns {
    /// The namespace, or `None` (skipped) when this machine cannot make one or lacks
    /// one of `tools`.
    fn new(tag: &str, tools: &[&str]) -> Option<Ns> {
        if !is_root() {
            skip("the nfwatch tests need root");
            return None;
        }
        let missing: Vec<&&str> = tools
            .iter()
            .filter(|t| !std::path::Path::new(&format!("/usr/sbin/{t}")).exists())
            .collect();
        if !missing.is_empty() {
            skip(&format!("missing firewall tools: {missing:?}"));
            return None;
        }
        let ns = Ns(format!("tgk{}-watch-{tag}", std::process::id()));
        let made = ip(&["netns", "add", &ns.0])
            .and_then(|_| ip(&["-n", &ns.0, "link", "set", "lo", "up"]));
        if let Err(e) = made {
            skip(&format!("cannot set up a network namespace: {e}"));
            return None;
        }
        Some(ns)
    }

    /// Runs `args` in the namespace; its pid.
    fn run(&self, args: &[&str]) -> u32 {
        let mut c = Command::new(format!("/usr/sbin/{}", args[0]));
        c.args(&args[1..]);
        let mut child = in_netns(&self.0, &c).spawn().expect("spawn");
        let pid = child.id();
        let status = child.wait().unwrap();
        assert!(status.success(), "{args:?} failed: {status}");
        pid
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.0]);
    }
}

/// Every event until a `Generation` committed by `pid` (at most 20 s).
fn until_generation_of(events: &mut NftEvents, pid: u32) -> Vec<NftEvent> {
    let end = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    while Instant::now() < end {
        let got = events.wait(Duration::from_secs(1)).expect("wait");
        let done = got
            .iter()
            .any(|e| matches!(e, NftEvent::Generation { pid: Some(p), .. } if *p == pid));
        seen.extend(got);
        if done {
            return seen;
        }
    }
    panic!("no generation committed by pid {pid}; saw {seen:?}");
}

fn object(what: NftObject, deleted: bool, family: u8, table: &str, name: Option<&str>) -> NftEvent {
    NftEvent::object(what, deleted, family, table, name)
}

const NFPROTO_INET: u8 = 1;
const NFPROTO_IPV4: u8 = 2;

#[test]
fn nftables_notifications_say_what_changed_and_who() {
    let Some(ns) = Ns::new("nft", &["nft", "iptables-nft"]) else {
        return;
    };
    let mut events = in_ns(&ns.0, NftEvents::subscribe).expect("subscribe (root)");
    // Nothing yet: a wait times out empty.
    assert_eq!(events.wait(Duration::from_millis(50)).unwrap(), vec![]);

    let pid = ns.run(&["nft", "add", "table", "inet", "t"]);
    let seen = until_generation_of(&mut events, pid);
    assert!(
        seen.contains(&object(NftObject::Table, false, NFPROTO_INET, "t", None)),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|e| matches!(e, NftEvent::Generation { process: Some(p), .. } if p == "nft")),
        "{seen:?}"
    );

    let pid = ns.run(&["nft", "add", "chain", "inet", "t", "c"]);
    let seen = until_generation_of(&mut events, pid);
    assert!(
        seen.contains(&object(
            NftObject::Chain,
            false,
            NFPROTO_INET,
            "t",
            Some("c")
        )),
        "{seen:?}"
    );

    let pid = ns.run(&["nft", "flush", "ruleset"]);
    let seen = until_generation_of(&mut events, pid);
    assert!(
        seen.contains(&object(
            NftObject::Chain,
            true,
            NFPROTO_INET,
            "t",
            Some("c")
        )),
        "{seen:?}"
    );
    assert!(
        seen.contains(&object(NftObject::Table, true, NFPROTO_INET, "t", None)),
        "{seen:?}"
    );

    let pid = ns.run(&[
        "iptables-nft",
        "-A",
        "INPUT",
        "-p",
        "tcp",
        "--dport",
        "22",
        "-j",
        "DROP",
    ]);
    let seen = until_generation_of(&mut events, pid);
    assert!(
        seen.contains(&object(
            NftObject::Rule,
            false,
            NFPROTO_IPV4,
            "filter",
            Some("INPUT")
        )),
        "{seen:?}"
    );

    // A transaction too large for the socket's buffer, unread: lost, and said so once;
    // the socket goes on.
    let mut big = String::from("add table inet big\nadd chain inet big c\n");
    for k in 0..20_000 {
        big.push_str(&format!(
            "add rule inet big c tcp dport {} accept\n",
            1 + k % 60_000
        ));
    }
    let file =
        std::env::temp_dir().join(format!("tgknock-test-nfwatch-{}.nft", std::process::id()));
    std::fs::write(&file, big).unwrap();
    ns.run(&["nft", "-f", file.to_str().unwrap()]);
    std::fs::remove_file(&file).unwrap();
    assert_eq!(
        events.wait(Duration::from_secs(5)).unwrap(),
        vec![NftEvent::Overflow]
    );
    let pid = ns.run(&["nft", "add", "table", "inet", "after"]);
    let seen = until_generation_of(&mut events, pid);
    assert!(
        seen.contains(&object(
            NftObject::Table,
            false,
            NFPROTO_INET,
            "after",
            None
        )),
        "{seen:?}"
    );

    // Idle: a wait of 1 s costs one wake-up (the timeout), read from the thread's counters.
    let switches = || thread_counter("voluntary_ctxt_switches");
    let (before, t0) = (switches(), Instant::now());
    for _ in 0..3 {
        assert_eq!(events.wait(Duration::from_secs(1)).unwrap(), vec![]);
    }
    eprintln!(
        "nfwatch: 3 idle waits of 1 s: {} voluntary context switches in {:?}",
        switches() - before,
        t0.elapsed()
    );
}

/// A counter of this thread's `/proc/thread-self/status`.
fn thread_counter(name: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/thread-self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

/// Connects to a closed port of the namespace's loopback `count` times (each refused).
fn knock(ns: &Ns, to: SocketAddr, count: usize) {
    in_ns(&ns.0, move || {
        for _ in 0..count {
            let r = TcpStream::connect_timeout(&to, Duration::from_secs(2));
            assert!(r.is_err(), "{to} is open");
        }
    });
}

/// The packets the first rule of INPUT counted, by `tool -L -v`.
fn first_rule_packets(ns: &Ns, tool: &str) -> u64 {
    let out = run_ok(&mut in_netns(
        &ns.0,
        Command::new(format!("/usr/sbin/{tool}")).args(["-L", "INPUT", "-v", "-n", "-x"]),
    ))
    .unwrap();
    let line = out
        .lines()
        .nth(2)
        .unwrap_or_else(|| panic!("no rule in {out}"));
    line.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn legacy_fingerprint_moves_with_edits_not_with_traffic() {
    let tools = [
        "iptables-legacy",
        "ip6tables-legacy",
        "iptables-legacy-restore",
        "ip6tables-legacy-restore",
    ];
    let Some(ns) = Ns::new("legacy", &tools) else {
        return;
    };
    let mut probe = in_ns(&ns.0, || XtablesProbe::open(true, true)).expect("raw sockets (root)");
    let absent = probe.fingerprint().expect("fingerprint");
    assert!(!probe.has_chain("TGKNOCK").unwrap());
    // Asking for an absent table would have made one: it was not asked for. (No list at
    // all: ip_tables is not loaded, and no table can be.)
    let names = run_ok(&mut in_netns(
        &ns.0,
        Command::new("cat").arg("/proc/net/ip_tables_names"),
    ))
    .unwrap_or_default();
    assert_eq!(names, "", "the probe made a legacy table");

    for (tool, v6, to) in [
        ("iptables-legacy", false, "127.0.0.1:9"),
        ("ip6tables-legacy", true, "[::1]:9"),
    ] {
        let before = probe.fingerprint().unwrap();
        ns.run(&[tool, "-N", "TGKNOCK"]);
        assert!(probe.has_chain_in(v6, "TGKNOCK").unwrap(), "{tool}");
        assert!(!probe.has_chain_in(v6, "TGKNOCK2").unwrap(), "{tool}");
        ns.run(&[
            tool, "-A", "INPUT", "-p", "tcp", "--dport", "9", "-j", "ACCEPT",
        ]);
        let rule = probe.fingerprint().unwrap();
        assert_ne!(rule, before, "{tool}");
        assert_ne!(rule, absent, "{tool}");
        // Traffic through the rule moves its counters, not the fingerprint.
        knock(&ns, to.parse().unwrap(), 5);
        assert!(first_rule_packets(&ns, tool) >= 5, "{tool}");
        assert_eq!(
            probe.fingerprint().unwrap(),
            rule,
            "{tool}: traffic changed it"
        );
        // The same size, another port.
        ns.run(&[
            tool, "-R", "INPUT", "1", "-p", "tcp", "--dport", "10", "-j", "ACCEPT",
        ]);
        assert_ne!(probe.fingerprint().unwrap(), rule, "{tool}: -R went unseen");
    }
    assert!(probe.has_chain("TGKNOCK").unwrap());

    // Its cost with a thousand rules in each family.
    for (tool, src) in [
        ("iptables-legacy-restore", "10.1"),
        ("ip6tables-legacy-restore", "fd00:1:"),
    ] {
        let mut rules = String::from("*filter\n");
        for k in 0..1000 {
            let s = if src.contains(':') {
                format!("{src}:{k:x}")
            } else {
                format!("{src}.{}.{}", k / 256, k % 256)
            };
            rules.push_str(&format!("-A TGKNOCK -s {s} -p tcp --dport 22 -j ACCEPT\n"));
        }
        rules.push_str("COMMIT\n");
        let mut c = in_netns(
            &ns.0,
            Command::new(format!("/usr/sbin/{tool}")).arg("--noflush"),
        );
        c.stdin(std::process::Stdio::piped());
        let mut child = c.spawn().unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(rules.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success(), "{tool}");
    }
    let n = 200;
    let (cpu, t0) = (thread_cpu(), Instant::now());
    for _ in 0..n {
        probe.fingerprint().unwrap();
    }
    let (fingerprint, fingerprint_cpu) = (t0.elapsed() / n, spent(cpu, n));
    // The same reads and walk without the hashing.
    let (cpu, t0) = (thread_cpu(), Instant::now());
    for _ in 0..n {
        assert!(!probe.has_chain_in(false, "NONE").unwrap());
        assert!(!probe.has_chain_in(true, "NONE").unwrap());
    }
    eprintln!(
        "nfwatch: both filter tables with 1,000 rules each: a fingerprint {fingerprint:?} \
         (CPU user+system µs {fingerprint_cpu:?}), reading them only {:?} ({:?})",
        t0.elapsed() / n,
        spent(cpu, n),
    );
}

/// This thread's user and system CPU time so far, in clock ticks (`/proc/thread-self/stat`).
fn thread_cpu() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    let f: Vec<u64> = s[s.rfind(')').unwrap() + 2..]
        .split(' ')
        .skip(11)
        .take(2)
        .map(|v| v.parse().unwrap())
        .collect();
    (f[0], f[1])
}

/// The CPU time a call took since `from`, in µs, user and system (ticks of 10 ms).
fn spent(from: (u64, u64), calls: u32) -> (u64, u64) {
    let now = thread_cpu();
    let per = |t: u64| t * 10_000 / u64::from(calls);
    (per(now.0 - from.0), per(now.1 - from.1))
}
