//! The command line: parse, dispatch, map errors to exit codes.

use std::ffi::OsString;
use std::path::PathBuf;

use argh::FromArgs;

use crate::addr::Cidr;
use crate::config::Config;
use crate::daemon;
use crate::duration;
use crate::error::{Error, Result};
use crate::keeper::Keeper;
use crate::logging;
use crate::report;
use crate::state::{self, Heartbeat, Opening, PidLock};
use crate::telegram::{BotApi, Incoming};

#[derive(FromArgs, Debug)]
/// Open and close firewall ports (SSH first) from a Telegram chat.
pub struct Cli {
    /// print the version and target, then exit
    #[argh(switch, short = 'V')]
    version: bool,
    #[argh(subcommand)]
    command: Option<Sub>,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
enum Sub {
    Run(RunCmd),
    Open(OpenCmd),
    Close(CloseCmd),
    Status(StatusCmd),
    Check(CheckCmd),
    Whoami(WhoamiCmd),
    Teardown(TeardownCmd),
    Watchdog(WatchdogCmd),
    Knock(KnockCmd),
}

#[derive(FromArgs, Debug)]
/// the daemon: reconcile the firewall with the saved state, then poll Telegram forever
#[argh(subcommand, name = "run")]
struct RunCmd {
    /// config file (default /etc/tgknock/tgknock.conf)
    #[argh(option)]
    config: Option<PathBuf>,
}

#[derive(FromArgs, Debug)]
/// open a gate from the board's console (the way in when Telegram is unreachable)
#[argh(subcommand, name = "open")]
struct OpenCmd {
    /// the gate (default: the first of TGKNOCK_GATES)
    #[argh(positional)]
    gate: Option<String>,
    /// how long: 90s, 15m, 2h, 1d, 1h30m; 0 = until closed (default TGKNOCK_OPEN_FOR)
    #[argh(option, long = "for")]
    for_: Option<String>,
    /// open only to this IPv4/IPv6 address or CIDR block
    #[argh(option)]
    from: Option<String>,
    /// config file (default /etc/tgknock/tgknock.conf)
    #[argh(option)]
    config: Option<PathBuf>,
}

#[derive(FromArgs, Debug)]
/// close one gate, or all (the default)
#[argh(subcommand, name = "close")]
struct CloseCmd {
    /// a gate, or all
    #[argh(positional)]
    gate: Option<String>,
    /// config file (default /etc/tgknock/tgknock.conf)
    #[argh(option)]
    config: Option<PathBuf>,
}

#[derive(FromArgs, Debug)]
/// every gate: open or closed, for whom, until when; IPv4 and IPv6
#[argh(subcommand, name = "status")]
struct StatusCmd {
    /// print JSON
    #[argh(switch)]
    json: bool,
    /// config file (default /etc/tgknock/tgknock.conf)
    #[argh(option)]
    config: Option<PathBuf>,
}

#[derive(FromArgs, Debug)]
/// validate config, firewall tools, permissions, the token and the clock; print the rules
#[argh(subcommand, name = "check")]
struct CheckCmd {
    /// config file (default /etc/tgknock/tgknock.conf)
    #[argh(option)]
    config: Option<PathBuf>,
}

#[derive(FromArgs, Debug)]
/// print the Telegram user ids of pending messages to the bot, without consuming them
#[argh(subcommand, name = "whoami")]
struct WhoamiCmd {
    /// config file (default /etc/tgknock/tgknock.conf)
    #[argh(option)]
    config: Option<PathBuf>,
}

#[derive(FromArgs, Debug)]
/// remove every rule and chain tgknock installed (IPv4 and IPv6)
#[argh(subcommand, name = "teardown")]
struct TeardownCmd {
    /// config file (default /etc/tgknock/tgknock.conf)
    #[argh(option)]
    config: Option<PathBuf>,
}

#[derive(FromArgs, Debug)]
/// for cron: restart the daemon if it is dead or hung (silent when healthy)
#[argh(subcommand, name = "watchdog")]
struct WatchdogCmd {
    /// config file (default /etc/tgknock/tgknock.conf)
    #[argh(option)]
    config: Option<PathBuf>,
}

#[derive(FromArgs, Debug)]
/// send the TGKNOCK_KNOCK sequence to HOST (TCP connection attempts; no root needed)
#[argh(subcommand, name = "knock")]
struct KnockCmd {
    /// the board: a name or an IPv4/IPv6 address
    #[argh(positional)]
    host: String,
    /// the sequence, e.g. 7101,7102,7103 (default: TGKNOCK_KNOCK of the config)
    #[argh(option)]
    ports: Option<String>,
    /// seconds between knocks (default 0.3)
    #[argh(option, default = "0.3")]
    delay: f64,
    /// config file (default /etc/tgknock/tgknock.conf)
    #[argh(option)]
    config: Option<PathBuf>,
}

/// Runs the command line; returns the exit code.
pub fn main(args: Vec<OsString>) -> i32 {
    let mut strings = Vec::with_capacity(args.len());
    for a in &args {
        match a.to_str() {
            Some(s) => strings.push(s.to_string()),
            None => {
                eprintln!("tgknock: arguments must be valid UTF-8");
                return 2;
            }
        }
    }
    let name = "tgknock";
    let rest: Vec<&str> = strings.iter().skip(1).map(String::as_str).collect();
    let cli = match Cli::from_args(&[name], &rest) {
        Ok(c) => c,
        Err(early) => {
            return match early.status {
                Ok(()) => {
                    println!("{}", early.output);
                    0
                }
                Err(()) => {
                    eprintln!("{}", early.output.trim_end());
                    eprintln!("Run `tgknock --help` for usage.");
                    2
                }
            };
        }
    };
    if cli.version {
        println!("{}", crate::VERSION);
        return 0;
    }
    let Some(command) = cli.command else {
        eprintln!("tgknock: a command is needed. Run `tgknock --help` for usage.");
        return 2;
    };
    logging::init();
    match dispatch(command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tgknock: {}", logging::redact(&e.to_string()));
            e.exit_code()
        }
    }
}

fn load(path: &Option<PathBuf>) -> Result<Config> {
    let cfg = Config::load(path.as_deref())?;
    if let Some(t) = &cfg.token {
        logging::add_secret(t.expose());
    }
    Ok(cfg)
}

fn dispatch(command: Sub) -> Result<i32> {
    match command {
        Sub::Run(c) => {
            let cfg = load(&c.config)?;
            daemon::run(cfg)?;
            Ok(0)
        }
        Sub::Open(c) => open(c),
        Sub::Close(c) => close(c),
        Sub::Status(c) => status(c),
        Sub::Check(c) => check(c),
        Sub::Whoami(c) => whoami(c),
        Sub::Teardown(c) => teardown(c),
        Sub::Knock(c) => knock(c),
        Sub::Watchdog(c) => {
            let cfg = load(&c.config)?;
            crate::watchdog::run(&cfg, c.config.as_deref())
        }
    }
}

fn gate_arg(cfg: &Config, name: Option<&str>) -> Result<String> {
    match name {
        None => Ok(cfg.default_gate().name.clone()),
        Some(n) => cfg.gate(n).map(|g| g.name.clone()).ok_or_else(|| {
            Error::Usage(format!(
                "there is no gate '{n}' (gates: {})",
                cfg.gates
                    .iter()
                    .map(|g| g.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        }),
    }
}

fn open(c: OpenCmd) -> Result<i32> {
    let cfg = load(&c.config)?;
    let gate = gate_arg(&cfg, c.gate.as_deref())?;
    let secs = match &c.for_ {
        None => cfg.open_for,
        Some(s) => duration::parse(s, None).map_err(|e| Error::Usage(format!("--for: {e}")))?,
    };
    let from = c
        .from
        .as_deref()
        .map(|s| s.parse::<Cidr>())
        .transpose()
        .map_err(|e| Error::Usage(format!("--from: {e}")))?;
    let now = crate::now();
    let keeper = Keeper::new(cfg);
    let opening = Opening {
        from,
        until: (secs > 0).then_some(now + secs),
        by: "console".into(),
    };
    let (_, out) = keeper.change(now, |st| st.open(&gate, opening).map_err(Error::Runtime))?;
    let g = keeper.cfg.gate(&gate).expect("gate exists");
    println!("{}", report::gate_line(g, &out));
    if !keeper.wake_daemon() && secs > 0 {
        println!(
            "note: no daemon is running, so nothing closes {gate} at its deadline; `tgknock run` (or the watchdog) closes it when it starts"
        );
    }
    Ok(if report::all_verified(&keeper.cfg, &out) {
        0
    } else {
        1
    })
}

fn close(c: CloseCmd) -> Result<i32> {
    let cfg = load(&c.config)?;
    let gate = match c.gate.as_deref() {
        None | Some("all") => None,
        Some(n) => Some(gate_arg(&cfg, Some(n))?),
    };
    let keeper = Keeper::new(cfg);
    let (_, out) = keeper.change(crate::now(), |st| {
        st.close(gate.as_deref());
        Ok(())
    })?;
    keeper.wake_daemon();
    for g in &keeper.cfg.gates {
        if gate.as_ref().is_none_or(|n| *n == g.name) {
            println!("{}", report::gate_line(g, &out));
        }
    }
    Ok(if report::all_verified(&keeper.cfg, &out) {
        0
    } else {
        1
    })
}

fn daemon_line(keeper: &Keeper) -> (Option<u32>, String) {
    let pid = PidLock::holder(&keeper.paths);
    let beat = Heartbeat::read(&keeper.paths).map(|h| h.at);
    let text = match (pid, beat) {
        (Some(p), Some(b)) => format!(
            "daemon: running (pid {p}), last poll {} ago",
            duration::human(crate::now().saturating_sub(b))
        ),
        (Some(p), None) => format!("daemon: running (pid {p}), no poll yet"),
        (None, _) => "daemon: not running".into(),
    };
    (pid, text)
}

fn status(c: StatusCmd) -> Result<i32> {
    let cfg = load(&c.config)?;
    let keeper = Keeper::new(cfg);
    let out = keeper.snapshot(crate::now())?;
    let (pid, line) = daemon_line(&keeper);
    let skew = Heartbeat::read(&keeper.paths).and_then(|h| h.skew);
    if c.json {
        let mut v = report::status_json(&keeper.cfg, &keeper.fw, &out, pid);
        v["clock_skew"] = skew.into();
        println!("{}", serde_json::to_string_pretty(&v).expect("json"));
    } else {
        println!("{}", report::status_text(&keeper.cfg, &keeper.fw, &out));
        println!("{line}");
        match skew {
            Some(s) => println!(
                "clock: {} (as the daemon last measured)",
                duration::skew_text(s)
            ),
            None => println!("clock: not compared with Telegram's yet (the daemon measures it)"),
        }
    }
    let readable = out.listings.iter().all(|(_, l)| l.is_ok());
    Ok(if readable && report::all_verified(&keeper.cfg, &out) {
        0
    } else {
        1
    })
}

fn teardown(c: TeardownCmd) -> Result<i32> {
    let cfg = load(&c.config)?;
    let keeper = Keeper::new(cfg);
    let _lock = state::StateLock::acquire(&keeper.paths)?;
    for line in keeper.fw.teardown()? {
        println!("{line}");
    }
    if let Some(pid) = PidLock::holder(&keeper.paths) {
        println!(
            "note: the daemon (pid {pid}) is still running and reinstalls the rules at its next change; stop it first to keep them off"
        );
    }
    Ok(0)
}

fn whoami(c: WhoamiCmd) -> Result<i32> {
    let cfg = load(&c.config)?;
    let token = cfg.require_token()?.clone();
    let api = BotApi::new(&cfg, &token)?;
    let (me, _) = api.get_me().map_err(|e| {
        if e.is_token_rejected() {
            Error::TokenRejected(e.to_string())
        } else {
            Error::Telegram(format!("getMe: {e}"))
        }
    })?;
    println!(
        "bot: @{} (id {})",
        me.username.as_deref().unwrap_or("?"),
        me.id
    );
    // No offset: Telegram confirms nothing, so the daemon still gets these messages.
    let answer = api.get_updates(None, 0, 100).map_err(|e| match e {
        crate::telegram::ApiError::Http { status: 409, .. } => Error::Telegram(
            "409 Conflict: the daemon (or another program) is polling, or a webhook is set; stop the daemon and run whoami again".into(),
        ),
        e => Error::Telegram(format!("getUpdates: {e}")),
    })?;
    let raw = answer
        .raw_result()
        .map_err(|e| Error::Telegram(e.to_string()))?;
    let items = crate::telegram::decode_updates(raw).map_err(Error::Telegram)?;
    let mut seen = 0;
    for item in items {
        let Incoming::Update(u) = item else { continue };
        let Some(m) = u.message.or(u.edited_message) else {
            continue;
        };
        let Some(from) = m.from else { continue };
        seen += 1;
        let text: String = m
            .text
            .unwrap_or_default()
            .chars()
            .filter(|c| !c.is_control())
            .take(40)
            .collect();
        println!(
            "user id {}  {}  chat {} ({})  {:?}  allowed: {}",
            from.id,
            from.describe(),
            m.chat.id,
            m.chat.kind,
            text,
            if cfg.allowed_users.contains(&from.id) {
                "yes"
            } else {
                "no"
            }
        );
    }
    if seen == 0 {
        println!(
            "no pending messages: send any message to @{} in Telegram, then run `tgknock whoami` again",
            me.username.as_deref().unwrap_or("your bot")
        );
    } else {
        println!("put the ids to allow in TGKNOCK_ALLOWED_USERS (comma-separated)");
    }
    Ok(0)
}

/// One line of `check`'s report.
fn mark(ok: bool, text: &str) -> bool {
    println!("[{}] {text}", if ok { " ok " } else { "FAIL" });
    ok
}

/// A line for a check that is a `Result`: the text when it holds, the error when not.
fn mark_result(r: Result<()>, text: &str) -> bool {
    match r {
        Ok(()) => mark(true, text),
        Err(e) => mark(false, &e.to_string()),
    }
}

fn check(c: CheckCmd) -> Result<i32> {
    let cfg = match load(&c.config) {
        Ok(cfg) => cfg,
        Err(e) => {
            mark(
                false,
                &format!("config: {}", logging::redact(&e.to_string())),
            );
            return Err(e);
        }
    };
    let mut ok = true;
    ok &= mark(true, &format!("config read from {}", cfg.origin));
    for w in &cfg.warnings {
        println!("[warn] {w}");
    }
    let token = cfg.require_bot();
    ok &= mark(
        token.is_ok(),
        &match &token {
            Ok(_) => format!(
                "token set; allowed users: {}",
                cfg.allowed_users
                    .iter()
                    .map(|u| u.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Err(e) => e.to_string(),
        },
    );
    println!(
        "       gates: {}",
        cfg.gates
            .iter()
            .map(|g| format!("{}={}", g.name, g.ports_text()))
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "       default opening {}, longest {}, commands older than {} refused",
        if cfg.open_for == 0 {
            "until closed".into()
        } else {
            duration::human(cfg.open_for)
        },
        if cfg.max_open_for == 0 {
            "unlimited".into()
        } else {
            duration::human(cfg.max_open_for)
        },
        duration::human(cfg.max_age)
    );

    // State directory.
    let paths = state::Paths::new(&cfg.state_dir);
    ok &= mark_result(
        paths.state_dir().and_then(|d| d.probe_writable()),
        &format!("state directory {} is writable", cfg.state_dir.display()),
    );

    // Firewall tools.
    let keeper = Keeper::new(cfg.clone());
    println!(
        "       firewall: {} ({}), TGKNOCK_FIREWALL={}",
        keeper.fw.kind(),
        keeper.fw.place(),
        match cfg.firewall {
            crate::config::FirewallKind::Iptables => "iptables",
            crate::config::FirewallKind::Nft => "nft",
            crate::config::FirewallKind::Auto => "auto",
        }
    );
    for (good, line) in keeper.fw.check_tools() {
        ok &= mark(good, &line);
    }
    if let Some(k) = &keeper.fw.policy.knock {
        println!(
            "       knock fallback: {} opens {} to the knocker for {}",
            k.ports_text(),
            k.gate,
            duration::human(k.open_for)
        );
    }
    if cfg.ip6tables.is_none() {
        println!("[ -- ] IPv6: not managed (TGKNOCK_IP6TABLES=off)");
    }

    // Clock and token.
    let now = crate::now();
    ok &= mark(
        !crate::clock_before_build(),
        &format!("system clock: {}", duration::utc_full(now)),
    );
    let mut rejected = None;
    if let Ok(token) = token {
        match BotApi::new(&cfg, token).and_then(|api| {
            api.get_me().map_err(|e| {
                if e.is_token_rejected() {
                    Error::TokenRejected(e.to_string())
                } else {
                    Error::Telegram(e.to_string())
                }
            })
        }) {
            Ok((me, server)) => {
                mark(
                    true,
                    &format!(
                        "Telegram: the token belongs to @{} (id {})",
                        me.username.as_deref().unwrap_or("?"),
                        me.id
                    ),
                );
                match server {
                    // Commands are judged by Telegram's clock, so a skew is no failure;
                    // but replies show the board's time, and TLS needs a sane clock.
                    Some(s) => {
                        let skew = now as i64 - s as i64;
                        let line = format!("clock: {}", duration::skew_text(skew));
                        if skew.unsigned_abs() > (cfg.max_age / 2).max(10) {
                            println!("[warn] {line}; set it (NTP): times in replies use it");
                        } else {
                            mark(true, &line);
                        }
                    }
                    None => println!(
                        "[warn] clock: Telegram's answer had no Date header to compare with"
                    ),
                }
            }
            Err(e) => {
                ok &= mark(false, &e.to_string());
                if let Error::TokenRejected(_) = e {
                    rejected = Some(e);
                }
            }
        }
    }

    // The rules it would install now.
    if let Ok(st) = keeper.load_state() {
        print!("{}", keeper.fw.preview(&st, now));
    }
    if let Some(e) = rejected {
        return Err(e);
    }
    if ok {
        println!("\nall checks passed");
        Ok(0)
    } else {
        println!("\nsome checks failed");
        Ok(1)
    }
}

fn knock(c: KnockCmd) -> Result<i32> {
    let ports: Vec<u16> = match &c.ports {
        Some(list) => list
            .split(',')
            .map(|p| {
                p.trim()
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| Error::Usage(format!("--ports: '{p}' is not a port (1-65535)")))
            })
            .collect::<Result<_>>()?,
        None => {
            let cfg = Config::load(c.config.as_deref())?;
            if cfg.knock.is_empty() {
                return Err(Error::Usage(
                    "no sequence: give --ports 7101,7102,7103 or set TGKNOCK_KNOCK".into(),
                ));
            }
            cfg.knock
        }
    };
    if !(0.0..=10.0).contains(&c.delay) {
        return Err(Error::Usage(
            "--delay must be between 0 and 10 seconds".into(),
        ));
    }
    let addrs: Vec<std::net::SocketAddr> = {
        use std::net::ToSocketAddrs;
        (c.host.as_str(), 1)
            .to_socket_addrs()
            .map_err(|e| Error::Usage(format!("cannot resolve {}: {e}", c.host)))?
            .collect()
    };
    let addr = addrs
        .first()
        .ok_or_else(|| Error::Usage(format!("{} has no address", c.host)))?
        .ip();
    for (i, port) in ports.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(std::time::Duration::from_secs_f64(c.delay));
        }
        // One SYN is the knock; the board drops it, so a short timeout is the norm.
        let target = std::net::SocketAddr::new(addr, *port);
        let _ =
            std::net::TcpStream::connect_timeout(&target, std::time::Duration::from_millis(200));
        println!("knocked {target}");
    }
    println!("sequence sent to {addr}; connect within the knock's open time");
    Ok(0)
}
