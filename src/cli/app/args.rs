//! The command line's words: the commands and their options, as `--help` shows them;
//! and the configuration their `--config` names.

use std::path::PathBuf;

use argh::FromArgs;

use crate::base::error::Result;
use crate::os::logging;
use crate::store::config::Config;

/// The configuration `--config` names (or the default one), its token kept out of every
/// line tgknock prints or logs.
pub(super) fn load(path: &Option<PathBuf>) -> Result<Config> {
    let cfg = Config::load(path.as_deref())?;
    if let Some(t) = &cfg.telegram.token {
        logging::add_secret(t.expose());
    }
    Ok(cfg)
}

#[derive(FromArgs, Debug)]
/// Open and close firewall ports (SSH first) from a Telegram chat.
pub struct Cli {
    /// print the version and target, then exit
    #[argh(switch, short = 'V')]
    pub(super) version: bool,
    #[argh(subcommand)]
    pub(super) command: Option<Sub>,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub(super) enum Sub {
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
pub(super) struct BanCmd {
    /// the IPv4/IPv6 address or CIDR block
    #[argh(positional)]
    pub(super) addr: String,
    /// how long: 90s, 15m, 2h, 1d; 0 = until lifted (default 1d)
    #[argh(option, long = "for")]
    pub(super) for_: Option<String>,
    /// config file (default /etc/tgknock/tgknock.conf)
    #[argh(option)]
    pub(super) config: Option<PathBuf>,
}

#[derive(FromArgs, Debug)]
/// lift the ban of an address or block
#[argh(subcommand, name = "unban")]
pub(super) struct UnbanCmd {
    /// the address or block, as it was banned
    #[argh(positional)]
    pub(super) addr: String,
    /// config file (default /etc/tgknock/tgknock.conf)
    #[argh(option)]
    pub(super) config: Option<PathBuf>,
}

#[derive(FromArgs, Debug)]
/// write a new TOTP secret file (0600) and show it as an otpauth:// URI and a QR code
#[argh(subcommand, name = "totp-setup")]
pub(super) struct TotpSetupCmd {
    /// where to write it (default: TGKNOCK_TOTP_SECRET_FILE of the config)
    #[argh(option)]
    pub(super) file: Option<PathBuf>,
    /// replace an existing secret (the authenticator's current entry stops working)
    #[argh(switch)]
    pub(super) force: bool,
    /// config file (default /etc/tgknock/tgknock.conf)
    #[argh(option)]
    pub(super) config: Option<PathBuf>,
}

#[derive(FromArgs, Debug)]
/// the daemon: reconcile the firewall with the saved state, then poll Telegram forever
#[argh(subcommand, name = "run")]
pub(super) struct RunCmd {
    /// config file (default /etc/tgknock/tgknock.conf)
    #[argh(option)]
    pub(super) config: Option<PathBuf>,
}

#[derive(FromArgs, Debug)]
/// open a gate from the board's console (the way in when Telegram is unreachable)
#[argh(subcommand, name = "open")]
pub(super) struct OpenCmd {
    /// the gate (default: the first of TGKNOCK_GATES)
    #[argh(positional)]
    pub(super) gate: Option<String>,
    /// how long: 90s, 15m, 2h, 1d, 1h30m; 0 = until closed (default TGKNOCK_OPEN_FOR)
    #[argh(option, long = "for")]
    pub(super) for_: Option<String>,
    /// open only to this IPv4/IPv6 address or CIDR block
    #[argh(option)]
    pub(super) from: Option<String>,
    /// config file (default /etc/tgknock/tgknock.conf)
    #[argh(option)]
    pub(super) config: Option<PathBuf>,
}

#[derive(FromArgs, Debug)]
/// close one gate, or all (the default)
#[argh(subcommand, name = "close")]
pub(super) struct CloseCmd {
    /// a gate, or all
    #[argh(positional)]
    pub(super) gate: Option<String>,
    /// config file (default /etc/tgknock/tgknock.conf)
    #[argh(option)]
    pub(super) config: Option<PathBuf>,
}

#[derive(FromArgs, Debug)]
/// every gate: open or closed, for whom, until when; IPv4 and IPv6
#[argh(subcommand, name = "status")]
pub(super) struct StatusCmd {
    /// print JSON
    #[argh(switch)]
    pub(super) json: bool,
    /// config file (default /etc/tgknock/tgknock.conf)
    #[argh(option)]
    pub(super) config: Option<PathBuf>,
}

#[derive(FromArgs, Debug)]
/// validate config, firewall tools, permissions, the token and the clock; print the rules
#[argh(subcommand, name = "check")]
pub(super) struct CheckCmd {
    /// config file (default /etc/tgknock/tgknock.conf)
    #[argh(option)]
    pub(super) config: Option<PathBuf>,
}

#[derive(FromArgs, Debug)]
/// print the Telegram user ids of pending messages to the bot, without consuming them
#[argh(subcommand, name = "whoami")]
pub(super) struct WhoamiCmd {
    /// config file (default /etc/tgknock/tgknock.conf)
    #[argh(option)]
    pub(super) config: Option<PathBuf>,
}

#[derive(FromArgs, Debug)]
/// remove every rule and chain tgknock installed (IPv4 and IPv6)
#[argh(subcommand, name = "teardown")]
pub(super) struct TeardownCmd {
    /// config file (default /etc/tgknock/tgknock.conf)
    #[argh(option)]
    pub(super) config: Option<PathBuf>,
}

#[derive(FromArgs, Debug)]
/// for cron: restart the daemon if it is dead or hung (silent when healthy)
#[argh(subcommand, name = "watchdog")]
pub(super) struct WatchdogCmd {
    /// config file (default /etc/tgknock/tgknock.conf)
    #[argh(option)]
    pub(super) config: Option<PathBuf>,
}

#[derive(FromArgs, Debug)]
/// send the TGKNOCK_KNOCK sequence to HOST (TCP connection attempts; no root needed)
#[argh(subcommand, name = "knock")]
pub(super) struct KnockCmd {
    /// the board: a name or an IPv4/IPv6 address
    #[argh(positional)]
    pub(super) host: String,
    /// the sequence, e.g. 7101,7102,7103 (default: TGKNOCK_KNOCK of the config)
    #[argh(option)]
    pub(super) ports: Option<String>,
    /// seconds between knocks (default 0.3)
    #[argh(option, default = "300", from_str_fn(decimal_millis))]
    pub(super) delay: u64,
    /// config file (default /etc/tgknock/tgknock.conf)
    #[argh(option)]
    pub(super) config: Option<PathBuf>,
}

#[derive(FromArgs, Debug)]
/// guided first run: token, your user id, gates, LAN; writes the config and a 0600 token file
#[argh(subcommand, name = "setup")]
pub(super) struct SetupCmd {
    /// how long to wait for your first message to the bot (default 5m)
    #[argh(option)]
    pub(super) wait: Option<String>,
    /// config file to write (default /etc/tgknock/tgknock.conf); the token goes next to it
    #[argh(option)]
    pub(super) config: Option<PathBuf>,
}

#[derive(FromArgs, Debug)]
/// for pam_exec: tell the allowed users about a login (always exits 0, within 5 s)
#[argh(subcommand, name = "notify-login")]
pub(super) struct NotifyLoginCmd {
    /// config file (default /etc/tgknock/tgknock.conf)
    #[argh(option)]
    pub(super) config: Option<PathBuf>,
}

#[derive(FromArgs, Debug)]
/// for pam_exec (account phase): ask the allowed users to approve a login (exit 0 on Allow, 1 otherwise)
#[argh(subcommand, name = "approve-login")]
pub(super) struct ApproveLoginCmd {
    /// config file (default /etc/tgknock/tgknock.conf)
    #[argh(option)]
    pub(super) config: Option<PathBuf>,
}

/// `--delay`: decimal seconds, kept as milliseconds.
fn decimal_millis(text: &str) -> std::result::Result<u64, String> {
    crate::base::duration::parse_decimal_millis(text)
}
