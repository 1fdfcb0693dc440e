//! The system tier's helper (tests/system.sh), copied into the booted Debian container as a
//! static binary. There the network is loopback only, so Telegram is played by the same fake
//! Bot API the integration tests use (tests/support/api.rs), served on 127.0.0.1, and the test
//! drives it through a small line protocol on a second port.
//!
//! ```text
//! systest api LISTEN CONTROL TOKEN    serve the fake Bot API on LISTEN, its control on CONTROL
//! systest say CONTROL FROM TEXT       queue a private message from user FROM
//! systest count CONTROL CHAT          how many messages the bot sent to CHAT
//! systest wait CONTROL CHAT FROM NEEDLE SECS
//!                                     wait for a message to CHAT, the FROM-th or a later one,
//!                                     containing NEEDLE; print it (exit 1 after SECS without)
//! systest show CONTROL CHAT FROM      print the messages to CHAT from the FROM-th on
//! systest pending CONTROL             updates not yet confirmed by the bot
//! systest keyboard CONTROL CHAT NEEDLE
//!                                     the last message to CHAT containing NEEDLE: its id,
//!                                     then a line per button, TEXT<tab>DATA
//! systest press CONTROL FROM CHAT MESSAGE DATA
//!                                     queue a press by FROM on a button with DATA of the
//!                                     bot's message MESSAGE in CHAT; print the query's id
//! systest requests CONTROL [METHOD]   the requests the bot made, in order: METHOD BODY
//! systest hang CONTROL METHOD SECS    from now on, hold every METHOD request SECS, then
//!                                     close it without an answer (Telegram hanging)
//! systest probe ADDR PORT SECS        TCP connect: prints open, refused or dropped
//! systest watch-tcp PORT STOP ADDR...  a TCP connect to every ADDR every 10 ms (10 ms to
//!                                     answer, one thread per address) until the file STOP
//!                                     exists: prints each sample that got through (open or
//!                                     refused), then the count of samples and of those
//! systest watch-rules BACKEND PORT STOP
//!                                     the rules every 10 ms (`iptables -S` and `ip6tables -S`,
//!                                     or `nft list table inet tgknock`) until STOP exists:
//!                                     prints each sample where PORT is not closed to
//!                                     strangers in both families (an opening from one
//!                                     address is fine), every change of the state
//!                                     (`state rules=closed|open|absent daemon=yes|no`, the
//!                                     daemon being a `tgknock run` process), then the count
//!                                     of samples, of those, and of distinct rule sets seen
//! ```

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[allow(dead_code)]
#[path = "../tests/support/api.rs"]
mod api;

/// The fake's default token; `systest api` replaces it with the one it is given.
pub const TOKEN: &str = "7000000001:AAF-SystemTierSecretSystemTier_x9";
pub const BOT: &str = "tgknock_test_bot";

pub fn now() -> i64 {
    tgknock::os::clock::now() as i64
}

/// Polls `f` every 50 ms until it gives `Some`; panics after `secs` (a hang guard).
#[allow(dead_code)]
pub fn wait_for<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > end {
            panic!("timed out after {secs} s waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match a.as_slice() {
        ["api", listen, control, token] => serve(listen, control, token),
        ["say", control, from, text] => ask(control, &format!("say {from} {text}")).map(|_| ()),
        ["count", control, chat] => ask(control, &format!("count {chat}")).map(|n| println!("{n}")),
        ["pending", control] => ask(control, "pending").map(|n| println!("{n}")),
        ["wait", control, chat, from, needle, secs] => wait(control, chat, from, needle, secs),
        ["show", control, chat, from] => messages(control, chat, from.parse().unwrap_or(0))
            .map(|m| m.iter().for_each(|t| println!("{t}"))),
        ["keyboard", control, chat, needle] => keyboard(control, chat, needle),
        ["press", control, from, chat, message, data] => {
            ask(control, &format!("press {from} {chat} {message} {data}"))
                .map(|q| println!("{}", q.as_str().unwrap_or_default()))
        }
        ["requests", control] => requests(control, None),
        ["requests", control, method] => requests(control, Some(method)),
        ["hang", control, method, secs] => {
            ask(control, &format!("hang {method} {secs}")).map(|_| ())
        }
        ["probe", addr, port, secs] => probe(addr, port, secs),
        ["watch-tcp", port, stop, addrs @ ..] if !addrs.is_empty() => watch_tcp(port, stop, addrs),
        ["watch-rules", backend, port, stop] => watch_rules(backend, port, stop),
        _ => Err("usage: see the head of examples/systest.rs".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("systest: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(listen: &str, control: &str, token: &str) -> Result<(), String> {
    let api =
        api::FakeApi::serve(TcpListener::bind(listen).map_err(|e| format!("bind {listen}: {e}"))?);
    api.set_token(token);
    // Update ids keep growing across reboots of the container, as Telegram's do: a daemon
    // that saved its offset before the reboot must see the new fake's updates.
    api.set_next_id(now() * 1000);
    let ctl = TcpListener::bind(control).map_err(|e| format!("bind {control}: {e}"))?;
    eprintln!("fake Bot API on {}, control on {control}", api.url());
    for conn in ctl.incoming() {
        let Ok(conn) = conn else { continue };
        let api = api.clone();
        std::thread::spawn(move || {
            let _ = answer(&api, conn);
        });
    }
    Ok(())
}

/// One control request: a line in, one JSON value out (`null`: not understood).
fn answer(api: &api::FakeApi, conn: TcpStream) -> std::io::Result<()> {
    let mut line = String::new();
    BufReader::new(conn.try_clone()?).read_line(&mut line)?;
    let line = line.trim_end_matches('\n');
    let reply = control(api, line).unwrap_or(serde_json::Value::Null);
    let mut conn = conn;
    writeln!(conn, "{reply}")
}

/// The methods the fake Bot API answers (tests/support/api.rs).
const METHODS: &[&str] = &[
    "getMe",
    "getUpdates",
    "sendMessage",
    "editMessageText",
    "answerCallbackQuery",
    "setMyCommands",
    "deleteWebhook",
    "getWebhookInfo",
];

fn control(api: &api::FakeApi, line: &str) -> Option<serde_json::Value> {
    use serde_json::json;
    let (command, rest) = line.split_once(' ').unwrap_or((line, ""));
    let number = |w: Option<&str>| w?.parse::<i64>().ok();
    Some(match command {
        "say" => {
            let (from, text) = rest.split_once(' ')?;
            json!(api.say(from.parse().ok()?, text))
        }
        "count" => json!(api.sent_to(rest.parse().ok()?).len()),
        "sent" => json!(api.sent_to(rest.parse().ok()?)),
        "pending" => json!(api.pending()),
        "press" => {
            let mut w = rest.splitn(4, ' ');
            let (from, chat, message) = (number(w.next())?, number(w.next())?, number(w.next())?);
            json!(api.press(from, chat, message, w.next()?))
        }
        "requests" => {
            // Every method the fake answers, merged in the order they came.
            let mut all: Vec<api::Request> = METHODS.iter().flat_map(|m| api.requests(m)).collect();
            all.sort_by_key(|r| r.at);
            json!(
                all.into_iter()
                    .map(|r| json!([r.method, r.body]))
                    .collect::<Vec<_>>()
            )
        }
        "hang" => {
            let (method, secs) = rest.split_once(' ')?;
            api.hang(method, Duration::from_secs(secs.parse().ok()?));
            json!(true)
        }
        _ => return None,
    })
}

fn ask(control: &str, line: &str) -> Result<serde_json::Value, String> {
    let mut conn = TcpStream::connect(control).map_err(|e| format!("connect {control}: {e}"))?;
    conn.set_read_timeout(Some(Duration::from_secs(10))).ok();
    writeln!(conn, "{line}").map_err(|e| e.to_string())?;
    let mut out = String::new();
    BufReader::new(conn)
        .read_line(&mut out)
        .map_err(|e| e.to_string())?;
    match serde_json::from_str(&out) {
        Ok(serde_json::Value::Null) | Err(_) => {
            Err(format!("the fake did not understand {line:?}"))
        }
        Ok(v) => Ok(v),
    }
}

fn messages(control: &str, chat: &str, from: usize) -> Result<Vec<String>, String> {
    let all: Vec<String> = serde_json::from_value(ask(control, &format!("sent {chat}"))?)
        .map_err(|e| e.to_string())?;
    Ok(all.into_iter().skip(from).collect())
}

/// `requests`: a line per request the bot made, `METHOD BODY`, optionally of one method.
fn requests(control: &str, method: Option<&str>) -> Result<(), String> {
    let all: Vec<(String, serde_json::Value)> =
        serde_json::from_value(ask(control, "requests")?).map_err(|e| e.to_string())?;
    for (m, body) in all {
        if method.is_none_or(|want| want == m) {
            println!("{m} {body}");
        }
    }
    Ok(())
}

/// `keyboard`: the last message sent to CHAT containing NEEDLE (the nth `sendMessage` gets
/// message id n, as the fake numbers them), its id and its buttons.
fn keyboard(control: &str, chat: &str, needle: &str) -> Result<(), String> {
    let chat: i64 = chat.parse().map_err(|_| "CHAT must be a number")?;
    let all: Vec<(String, serde_json::Value)> =
        serde_json::from_value(ask(control, "requests")?).map_err(|e| e.to_string())?;
    let mut found = None;
    for (id, (_, body)) in all.iter().filter(|(m, _)| m == "sendMessage").enumerate() {
        if body["chat_id"].as_i64() == Some(chat)
            && body["text"].as_str().is_some_and(|t| t.contains(needle))
        {
            found = Some((id + 1, api::rows(&body["reply_markup"])));
        }
    }
    let (id, rows) = found.ok_or_else(|| format!("no message to {chat} contains {needle:?}"))?;
    println!("{id}");
    for (text, data) in rows.into_iter().flatten() {
        println!("{text}\t{data}");
    }
    Ok(())
}

fn wait(control: &str, chat: &str, from: &str, needle: &str, secs: &str) -> Result<(), String> {
    let from: usize = from.parse().map_err(|_| "FROM must be a number")?;
    let secs: u64 = secs.parse().map_err(|_| "SECS must be a number")?;
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        let new = messages(control, chat, from)?;
        if let Some(m) = new.iter().find(|m| m.contains(needle)) {
            println!("{m}");
            return Ok(());
        }
        if Instant::now() > end {
            return Err(format!(
                "no message to {chat} containing {needle:?} within {secs} s; sent since: {new:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn probe(addr: &str, port: &str, secs: &str) -> Result<(), String> {
    let ip: std::net::IpAddr = addr
        .parse()
        .map_err(|_| format!("not an address: {addr}"))?;
    let port: u16 = port.parse().map_err(|_| format!("not a port: {port}"))?;
    let secs: u64 = secs.parse().map_err(|_| "SECS must be a number")?;
    let what =
        match TcpStream::connect_timeout(&SocketAddr::new(ip, port), Duration::from_secs(secs)) {
            Ok(_) => "open",
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => "refused",
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => "dropped",
            Err(e) => return Err(format!("connect {ip} port {port}: {e}")),
        };
    println!("{what}");
    Ok(())
}

/// Milliseconds since the Unix epoch, for the samplers' lines.
fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

const TICK: Duration = Duration::from_millis(10);

fn watch_tcp(port: &str, stop: &str, addrs: &[&str]) -> Result<(), String> {
    let port: u16 = port.parse().map_err(|_| format!("not a port: {port}"))?;
    let mut targets = Vec::new();
    for a in addrs {
        let ip: std::net::IpAddr = a.parse().map_err(|_| format!("not an address: {a}"))?;
        targets.push(SocketAddr::new(ip, port));
    }
    let stop = std::path::PathBuf::from(stop);
    let threads: Vec<_> = targets
        .into_iter()
        .map(|to| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let (mut samples, mut through, mut errors) = (0u64, 0u64, 0u64);
                let mut next = Instant::now();
                let (mut last, mut longest) = (Instant::now(), Duration::ZERO);
                while !stop.exists() {
                    samples += 1;
                    let now = Instant::now();
                    longest = longest.max(now - last);
                    last = now;
                    match TcpStream::connect_timeout(&to, TICK) {
                        Ok(_) => {
                            through += 1;
                            println!("{} {to}: open", now_ms());
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                            through += 1;
                            println!("{} {to}: refused", now_ms());
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                        Err(e) => {
                            errors += 1;
                            println!("{} {to}: error {e}", now_ms());
                        }
                    }
                    next += TICK;
                    let now = Instant::now();
                    if next > now {
                        std::thread::sleep(next - now);
                    } else {
                        next = now;
                    }
                }
                (to, samples, through, errors, longest)
            })
        })
        .collect();
    for t in threads {
        let (to, samples, through, errors, longest) =
            t.join().map_err(|_| "a sampler thread panicked")?;
        println!(
            "{to}: samples {samples} through {through} errors {errors} longest-gap-ms {}",
            longest.as_millis()
        );
    }
    Ok(())
}

/// Whether the rules listed keep `port` closed to strangers in both families: tgknock's
/// jump first in INPUT, a drop of the port's SYNs, and no return for the port that is not
/// bound to one source address.
fn rules_closed(backend: &str, port: u16, listings: &[String]) -> bool {
    let dport = format!("--dport {port} ");
    match backend {
        "nft" => {
            let l = &listings[0];
            let dport = format!("tcp dport {port} ");
            let drop = |fam: &str| {
                l.lines().any(|r| {
                    r.contains(&dport)
                        && r.contains(" drop")
                        && r.contains(&format!("nfproto {fam}"))
                })
            };
            drop("ipv4")
                && drop("ipv6")
                && !l
                    .lines()
                    .any(|r| r.contains(&dport) && r.contains(" return") && !r.contains("saddr"))
        }
        _ => listings.iter().all(|l| {
            l.lines().find(|r| r.starts_with("-A INPUT ")) == Some("-A INPUT -j TGKNOCK")
                && l.lines().any(|r| {
                    r.starts_with("-A TGKNOCK ") && r.contains(&dport) && r.ends_with("-j DROP")
                })
                && !l.lines().any(|r| {
                    r.starts_with("-A TGKNOCK ")
                        && r.contains(&dport)
                        && r.ends_with("-j RETURN")
                        && !r.contains(" -s ")
                })
        }),
    }
}

fn watch_rules(backend: &str, port: &str, stop: &str) -> Result<(), String> {
    let port: u16 = port.parse().map_err(|_| format!("not a port: {port}"))?;
    let commands: &[&[&str]] = match backend {
        "iptables" => &[&["iptables", "-w", "-S"], &["ip6tables", "-w", "-S"]],
        "nft" => &[&["nft", "list", "table", "inet", "tgknock"]],
        _ => return Err(format!("no such backend: {backend} (iptables or nft)")),
    };
    let stop = std::path::Path::new(stop);
    let (mut samples, mut open) = (0u64, 0u64);
    let mut seen = std::collections::BTreeSet::new();
    let mut next = Instant::now();
    let mut longest = Duration::ZERO;
    let mut last = Instant::now();
    let mut state = String::new();
    while !stop.exists() {
        let mut listings = Vec::new();
        for c in commands {
            let out = std::process::Command::new(c[0])
                .args(&c[1..])
                .output()
                .map_err(|e| format!("{}: {e}", c[0]))?;
            listings.push(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        samples += 1;
        let now = Instant::now();
        longest = longest.max(now - last);
        last = now;
        let absent = match backend {
            "nft" => listings[0].trim().is_empty(),
            _ => listings
                .iter()
                .all(|l| !l.lines().any(|r| r == "-N TGKNOCK")),
        };
        let rules = if absent {
            "absent"
        } else if rules_closed(backend, port, &listings) {
            "closed"
        } else {
            "open"
        };
        let daemon = if daemon_runs() { "yes" } else { "no" };
        let now_state = format!("rules={rules} daemon={daemon}");
        if now_state != state {
            println!("{} state {now_state}", now_ms());
            state = now_state;
        }
        if rules != "closed" {
            open += 1;
            println!("{} not closed:\n{}", now_ms(), listings.join("----\n"));
        }
        // A set element's timeout and expiry tick (its comment holds its deadline).
        seen.insert(
            listings
                .join("----\n")
                .lines()
                .map(|l| {
                    let mut skip = false;
                    let words: Vec<&str> = l
                        .split(' ')
                        .filter(|w| {
                            let keep = !skip;
                            skip = *w == "timeout" || *w == "expires";
                            keep && !skip
                        })
                        .collect();
                    words.join(" ")
                })
                .collect::<Vec<_>>()
                .join("\n"),
        );
        next += TICK;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            next = now;
        }
    }
    println!(
        "rules: samples {samples} not-closed {open} distinct {} longest-gap-ms {}",
        seen.len(),
        longest.as_millis()
    );
    Ok(())
}

/// Whether a `tgknock run` process is alive (the daemon, not a console command).
fn daemon_runs() -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.flatten().any(|e| {
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let mut args = cmdline.split(|b| *b == 0);
        let bin = args.next().unwrap_or_default();
        bin.ends_with(b"tgknock") && args.next() == Some(b"run".as_slice())
    })
}
