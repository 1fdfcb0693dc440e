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
//! systest probe ADDR PORT SECS        TCP connect: prints open, refused or dropped
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
    tgknock::now() as i64
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
        ["probe", addr, port, secs] => probe(addr, port, secs),
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

/// One control request: a line in, one JSON value out.
fn answer(api: &api::FakeApi, conn: TcpStream) -> std::io::Result<()> {
    let mut line = String::new();
    BufReader::new(conn.try_clone()?).read_line(&mut line)?;
    let line = line.trim_end_matches('\n');
    let mut words = line.splitn(3, ' ');
    let reply = match (words.next(), words.next(), words.next()) {
        (Some("say"), Some(from), Some(text)) => match from.parse() {
            Ok(from) => serde_json::json!(api.say(from, text)),
            Err(_) => serde_json::json!(null),
        },
        (Some("count"), Some(chat), None) => {
            serde_json::json!(api.sent_to(chat.parse().unwrap_or(0)).len())
        }
        (Some("sent"), Some(chat), None) => {
            serde_json::json!(api.sent_to(chat.parse().unwrap_or(0)))
        }
        (Some("pending"), None, None) => serde_json::json!(api.pending()),
        _ => serde_json::json!(null),
    };
    let mut conn = conn;
    writeln!(conn, "{reply}")
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
