//! The command line: parse, dispatch, map errors to exit codes.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use argh::FromArgs;

use crate::base::addr::Cidr;
use crate::base::duration;
use crate::base::duration::Length;
use crate::base::error::ApiError;
use crate::base::error::{Error, Result};
use crate::base::gate::Knock;
use crate::chat::report;
use crate::chat::telegram::{BotApi, Incoming};
use crate::cli::check;
use crate::cli::daemon;
use crate::firewall::keeper::{Keeper, Outcome};
use crate::os::logging;
use crate::store::config::Config;
use crate::store::state::{self, Actor, Heartbeat, Opening, PidLock};

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
    Ban(BanCmd),
    Unban(UnbanCmd),
    TotpSetup(TotpSetupCmd),
    Setup(SetupCmd),
    NotifyLogin(NotifyLoginCmd),
    ApproveLogin(ApproveLoginCmd),
}

#[derive(FromArgs, Debug)]
/// drop what an address or block sends, to every port, the connections it opened too (never the answers to the board's own), for a while
#[argh(subcommand, name = "ban")]
struct BanCmd {
    /// the IPv4/IPv6 address or CIDR block
    #[argh(positional)]
    addr: String,
    /// how long: 90s, 15m, 2h, 1d; 0 = until lifted (default 1d)
    #[argh(option, long = "for")]
    for_: Option<String>,
    /// config file (default /etc/tgknock/tgknock.conf)
    #[argh(option)]
    config: Option<PathBuf>,
}

#[derive(FromArgs, Debug)]
/// lift the ban of an address or block
#[argh(subcommand, name = "unban")]
struct UnbanCmd {
    /// the address or block, as it was banned
    #[argh(positional)]
    addr: String,
    /// config file (default /etc/tgknock/tgknock.conf)
    #[argh(option)]
    config: Option<PathBuf>,
}

#[derive(FromArgs, Debug)]
/// write a new TOTP secret file (0600) and show it as an otpauth:// URI and a QR code
#[argh(subcommand, name = "totp-setup")]
struct TotpSetupCmd {
    /// where to write it (default: TGKNOCK_TOTP_SECRET_FILE of the config)
    #[argh(option)]
    file: Option<PathBuf>,
    /// replace an existing secret (the authenticator's current entry stops working)
    #[argh(switch)]
    force: bool,
    /// config file (default /etc/tgknock/tgknock.conf)
    #[argh(option)]
    config: Option<PathBuf>,
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

#[derive(FromArgs, Debug)]
/// guided first run: token, your user id, gates, LAN; writes the config and a 0600 token file
#[argh(subcommand, name = "setup")]
struct SetupCmd {
    /// how long to wait for your first message to the bot (default 5m)
    #[argh(option)]
    wait: Option<String>,
    /// config file to write (default /etc/tgknock/tgknock.conf); the token goes next to it
    #[argh(option)]
    config: Option<PathBuf>,
}

#[derive(FromArgs, Debug)]
/// for pam_exec: tell the allowed users about a login (always exits 0, within 5 s)
#[argh(subcommand, name = "notify-login")]
struct NotifyLoginCmd {
    /// config file (default /etc/tgknock/tgknock.conf)
    #[argh(option)]
    config: Option<PathBuf>,
}

#[derive(FromArgs, Debug)]
/// for pam_exec (account phase): ask the allowed users to approve a login (exit 0 on Allow, 1 otherwise)
#[argh(subcommand, name = "approve-login")]
struct ApproveLoginCmd {
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
    match &command {
        Sub::NotifyLogin(_) | Sub::ApproveLogin(_) => logging::init_fixed(),
        _ => logging::init(),
    }
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
    if let Some(t) = &cfg.telegram.token {
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
        Sub::Check(c) => check::run(load(&c.config)),
        Sub::Whoami(c) => whoami(c),
        Sub::Teardown(c) => teardown(c),
        Sub::Knock(c) => knock(c),
        Sub::Ban(c) => ban(c),
        Sub::Unban(c) => unban(c),
        Sub::TotpSetup(c) => totp_setup(c),
        Sub::Watchdog(c) => {
            let cfg = load(&c.config)?;
            crate::cli::watchdog::run(&cfg, c.config.as_deref())
        }
        Sub::Setup(c) => crate::cli::setup::run(c.config, c.wait),
        Sub::NotifyLogin(c) => Ok(crate::cli::login::run(c.config.as_deref())),
        Sub::ApproveLogin(c) => Ok(crate::cli::approve::run(c.config.as_deref())),
    }
}

/// 0 when every gate is as the state says in every family, else 1.
fn verified(keeper: &Keeper, out: &Outcome) -> i32 {
    if report::all_verified(&keeper.cfg, out) {
        0
    } else {
        1
    }
}

fn open(c: OpenCmd) -> Result<i32> {
    let cfg = load(&c.config)?;
    let gate = cfg.gate_arg(c.gate.as_deref())?;
    let length = match &c.for_ {
        None => Length::Default,
        Some(s) => match duration::parse(s, None).map_err(|e| Error::usage("--for", e))? {
            0 => Length::UntilClosed,
            secs => Length::Secs(secs),
        },
    };
    let from = c
        .from
        .as_deref()
        .map(|s| s.parse::<Cidr>())
        .transpose()
        .map_err(|e| Error::usage("--from", e))?;
    let now = crate::os::clock::now();
    // The console is the way in when chat is not: TGKNOCK_MAX_OPEN_FOR does not apply.
    let opening = match Opening::for_request(length, from, Actor::Console, now, &cfg.limits, false)
    {
        Ok(o) => o,
        Err(_) => unreachable!("an opening from the console has no limit"),
    };
    let bounded = opening.until.is_some();
    let keeper = Keeper::new(cfg);
    let (_, out) = keeper.change(now, |st| st.open(&gate, opening))?;
    let g = keeper.cfg.gate(gate.as_str()).expect("gate exists");
    println!("{}", report::gate_line(g, &out));
    if !keeper.wake_daemon() && bounded {
        if out.deadlines {
            println!(
                "note: no daemon is running; the kernel closes {gate} at its deadline, and `tgknock run` (or the watchdog) brings the saved state up to date when it starts"
            );
        } else {
            println!(
                "note: no daemon is running, and the kernel cannot keep deadlines, so nothing closes {gate} at its deadline; `tgknock run` (or the watchdog) closes it when it starts"
            );
        }
    }
    Ok(verified(&keeper, &out))
}

fn close(c: CloseCmd) -> Result<i32> {
    let cfg = load(&c.config)?;
    let gate = match c.gate.as_deref() {
        None | Some("all") => None,
        Some(n) => Some(cfg.gate_arg(Some(n))?),
    };
    let keeper = Keeper::new(cfg);
    let (_, out) = keeper.change(crate::os::clock::now(), |st| {
        st.close(gate.as_ref());
        Ok(())
    })?;
    keeper.wake_daemon();
    for g in &keeper.cfg.gates {
        if gate.as_ref().is_none_or(|n| *n == g.name) {
            println!("{}", report::gate_line(g, &out));
        }
    }
    Ok(verified(&keeper, &out))
}

/// An address for `ban`/`unban`: one address or block, never every address.
fn ban_addr(text: &str) -> Result<Cidr> {
    if text.ends_with("/0") {
        return Err(Error::usage(
            "ADDR",
            format!("{text} is every address: a ban of it would cut everyone off, you too"),
        ));
    }
    text.parse::<Cidr>().map_err(|e| Error::usage("ADDR", e))
}

fn ban(c: BanCmd) -> Result<i32> {
    let cfg = load(&c.config)?;
    let addr = ban_addr(&c.addr)?;
    let now = crate::os::clock::now();
    let until = match &c.for_ {
        None => Some(now + crate::chat::decide::BAN_FOR),
        Some(s) => match duration::parse(s, None).map_err(|e| Error::usage("--for", e))? {
            0 => None,
            secs => Some(now + secs),
        },
    };
    let keeper = Keeper::new(cfg);
    if let Some(why) = keeper.ban_refusal(&addr) {
        return Err(Error::usage("ADDR", format!("refused: {why}")));
    }
    let ban = state::Ban {
        addr,
        until,
        by: Actor::Console,
    };
    let (_, out) = keeper.change(now, |st| st.ban(ban))?;
    keeper.wake_daemon();
    println!("{}", report::ban_line(&addr, &out));
    Ok(verified(&keeper, &out))
}

fn unban(c: UnbanCmd) -> Result<i32> {
    let cfg = load(&c.config)?;
    let addr = ban_addr(&c.addr)?;
    let keeper = Keeper::new(cfg);
    let (was, out) = keeper.change(crate::os::clock::now(), |st| Ok(st.unban(&addr)))?;
    keeper.wake_daemon();
    if !was {
        println!("note: {addr} was not banned");
    }
    println!("{}", report::ban_line(&addr, &out));
    Ok(verified(&keeper, &out))
}

fn totp_setup(c: TotpSetupCmd) -> Result<i32> {
    let key = "TGKNOCK_TOTP_SECRET_FILE";
    let path = match c.file {
        Some(p) => p,
        None => Config::setting(c.config.as_deref(), key)?
            .map(PathBuf::from)
            .ok_or_else(|| {
                Error::usage(
                    "--file",
                    format!("where? give --file PATH, or set {key} in the config"),
                )
            })?,
    };
    if !path.is_absolute() {
        return Err(Error::usage("--file", "must be an absolute path"));
    }
    if std::fs::symlink_metadata(&path).is_ok() && !c.force {
        return Err(Error::usage(
            "--file",
            format!(
                "{} exists; --force replaces it (the authenticator's current entry then stops working)",
                path.display()
            ),
        ));
    }
    let secret = crate::base::totp::Secret::generate().map_err(|e| Error::Usage {
        argument: None,
        problem: e,
    })?;
    let owner = Config::setting(c.config.as_deref(), "TGKNOCK_STATE_DIR")
        .ok()
        .flatten()
        .unwrap_or_else(|| "/var/lib/tgknock".into());
    let owner = crate::os::files::write_secret(
        &path,
        &format!("{}\n", secret.base32()),
        Path::new(&owner),
    )?;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let uri = secret.uri(host.trim());
    println!(
        "wrote a new TOTP secret to {} (mode 0600{owner})\n",
        path.display()
    );
    println!(
        "Scan this QR code with your authenticator app (or enter the secret {} by hand):\n",
        secret.base32()
    );
    print!(
        "{}",
        crate::cli::qr::terminal(&uri, std::io::IsTerminal::is_terminal(&std::io::stdout()))
    );
    println!("\n{uri}\n");
    println!(
        "Then set {key}={} in the config (if it is not yet) and restart tgknock: openings from chat will need a code.",
        path.display()
    );
    Ok(0)
}

fn daemon_line(keeper: &Keeper) -> (Option<u32>, String) {
    let pid = PidLock::holder(&keeper.paths);
    let beat = Heartbeat::read(&keeper.paths).map(|h| h.at);
    let text = match (pid, beat) {
        (Some(p), Some(b)) => format!(
            "daemon: running (pid {p}), last poll {} ago",
            duration::human(crate::os::clock::now().saturating_sub(b))
        ),
        (Some(p), None) => format!("daemon: running (pid {p}), no poll yet"),
        (None, _) => "daemon: not running".into(),
    };
    (pid, text)
}

fn status(c: StatusCmd) -> Result<i32> {
    let cfg = load(&c.config)?;
    let keeper = Keeper::new(cfg);
    let out = keeper.snapshot(crate::os::clock::now())?;
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
    // Every exit 1 says why, also under --json (on stderr, so stdout stays JSON).
    let problems = report::problems(&keeper.cfg, &out);
    if problems.is_empty() {
        return Ok(0);
    }
    eprintln!(
        "tgknock: status: the rules in the kernel are not what the saved state asks for: {}",
        problems.join("; ")
    );
    Ok(1)
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
    let api = BotApi::new(&cfg.telegram, &token)?;
    let (me, _) = api.get_me()?;
    println!(
        "bot: @{} (id {})",
        me.username.as_deref().unwrap_or("?"),
        me.id
    );
    // No offset: Telegram confirms nothing, so the daemon still gets these messages.
    let answer = api.get_updates(None, 0, 100).map_err(|e| match e {
        ApiError::Http { status: 409, .. } => Error::Telegram(ApiError::Http {
            status: 409,
            description: "Conflict: the daemon (or another program) is polling, or a webhook is set; stop the daemon and run whoami again".into(),
            retry_after: None,
        }),
        e => Error::from(e),
    })?;
    let raw = answer.raw_result()?;
    let items = crate::chat::telegram::decode_updates(raw).map_err(ApiError::Malformed)?;
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
            if cfg.telegram.allowed_users.contains(&from.id) {
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

fn knock(c: KnockCmd) -> Result<i32> {
    let ports: Vec<u16> = match &c.ports {
        Some(list) => Knock::parse_ports(list).map_err(|e| Error::usage("--ports", e))?,
        None => match Config::load(c.config.as_deref())?.knock {
            Some(k) => k.ports,
            None => {
                return Err(Error::Usage {
                    argument: None,
                    problem: "no sequence: give --ports 7101,7102,7103 or set TGKNOCK_KNOCK".into(),
                });
            }
        },
    };
    if !(0.0..=10.0).contains(&c.delay) {
        return Err(Error::usage("--delay", "must be between 0 and 10 seconds"));
    }
    let addrs: Vec<std::net::SocketAddr> = {
        use std::net::ToSocketAddrs;
        (c.host.as_str(), 1)
            .to_socket_addrs()
            .map_err(|e| Error::usage("HOST", format!("cannot resolve {}: {e}", c.host)))?
            .collect()
    };
    let addr = addrs
        .first()
        .ok_or_else(|| Error::usage("HOST", format!("{} has no address", c.host)))?
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
