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
