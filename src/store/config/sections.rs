//! The sections of the configuration, each validated from the layers: Telegram, gates,
//! limits, firewall, knock, rate limits, the second factor, actions and files.

use std::fmt;
use std::path::PathBuf;

use super::keys;
use super::layers::{Layers, TokenFile};
use crate::base::addr::Cidr;
use crate::base::duration;
use crate::base::error::{Error, Result};
use crate::base::gate::{self, Gate, GateName, Knock, Proto};
use crate::base::rate::Rate;
use crate::base::text::short;
use crate::base::totp::Secret;
use crate::store::actions::{self, Actions};

/// The bot token. Its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Token(String);

impl Token {
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    /// `123456:ABC-def…`: digits, a colon, then letters, digits, `-` and `_`.
    pub(crate) fn parse(text: &str) -> Option<Token> {
        let (id, secret) = text.split_once(':')?;
        let ok = !id.is_empty()
            && id.len() <= 20
            && id.bytes().all(|b| b.is_ascii_digit())
            && (20..=128).contains(&secret.len())
            && secret
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        ok.then(|| Token(text.to_string()))
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// The proxy Telegram requests go through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Proxy {
    pub(crate) url: String,
    /// The key or variable it came from, for messages.
    pub(crate) source: &'static str,
}

/// Which firewall tool family manages the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FirewallKind {
    Iptables,
    Nft,
    Auto,
}

impl fmt::Display for FirewallKind {
    /// As `TGKNOCK_FIREWALL` spells it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FirewallKind::Iptables => "iptables",
            FirewallKind::Nft => "nft",
            FirewallKind::Auto => "auto",
        })
    }
}

/// Talking to Telegram, and who may command.
#[derive(Debug, Clone)]
pub(crate) struct TelegramSettings {
    pub(crate) token: Option<Token>,
    /// Why the configured token cannot be used (the commands that need it say this).
    pub(crate) token_problem: Option<String>,
    pub(crate) allowed_users: Vec<crate::base::ids::UserId>,
    pub(crate) notify_denied: bool,
    pub(crate) api_url: String,
    pub(crate) proxy: Option<Proxy>,
    pub(crate) ca_file: Option<PathBuf>,
    /// Seconds.
    pub(crate) poll_timeout: u64,
}

/// How long openings last and how old a command may be, in seconds (`0`: no limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    pub(crate) open_for: u64,
    pub(crate) max_open_for: u64,
    pub(crate) max_age: u64,
}

/// The firewall backend and what it needs besides the gates.
#[derive(Debug, Clone)]
pub(crate) struct FirewallSettings {
    pub(crate) kind: FirewallKind,
    pub(crate) iptables: PathBuf,
    /// `None`: IPv6 is left alone.
    pub(crate) ip6tables: Option<PathBuf>,
    pub(crate) nft: PathBuf,
    pub(crate) chain: String,
    pub(crate) always_allow: Vec<Cidr>,
}

/// Where tgknock keeps its files.
#[derive(Debug, Clone)]
pub(crate) struct Files {
    pub(crate) state_dir: PathBuf,
    pub(crate) log_file: PathBuf,
}

const NOT_A_TOKEN: &str = "expected digits, ':', then the secret BotFather gave";

/// Talking to Telegram, and who may command.
pub(super) fn telegram(
    l: &Layers,
    token_file: Option<TokenFile>,
    warnings: &mut Vec<String>,
) -> Result<TelegramSettings> {
    // A token that cannot be used is remembered rather than refused here: only the
    // commands that talk to Telegram need it, and `teardown` or `close` must work on a
    // board whose token file is empty.
    let (token, token_problem) = match token(l, token_file, warnings) {
        Ok(t) => (t, None),
        Err(e) => {
            warnings.push(format!("{e}; commands that talk to Telegram will fail"));
            (None, Some(e.to_string()))
        }
    };
    let poll_timeout = l.duration(keys::POLL_TIMEOUT)?;
    if !(1..=600).contains(&poll_timeout) {
        return Err(l.bad(keys::POLL_TIMEOUT, "must be between 1s and 10m"));
    }
    Ok(TelegramSettings {
        token,
        token_problem,
        allowed_users: allowed_users(l)?,
        notify_denied: notify_denied(l)?,
        api_url: api_url(l)?,
        proxy: proxy(l)?,
        ca_file: l.nonempty(keys::CA_FILE).map(PathBuf::from),
        poll_timeout,
    })
}

/// The token: from the key or from a file, never both.
fn token(
    l: &Layers,
    token_file: Option<TokenFile>,
    warnings: &mut Vec<String>,
) -> Result<Option<Token>> {
    match (l.nonempty(keys::TOKEN), token_file) {
        (Some(_), Some(_)) => Err(Error::config(
            keys::TOKEN_FILE.name,
            "TGKNOCK_TOKEN and TGKNOCK_TOKEN_FILE are both set; keep only one (prefer the file)",
        )),
        (Some(t), None) => Token::parse(t.trim())
            .map(Some)
            .ok_or_else(|| l.bad(keys::TOKEN, format!("not a bot token ({NOT_A_TOKEN})"))),
        (None, Some(file)) => {
            let path = file.path.display().to_string();
            if let Some(mode) = file.mode.filter(|m| m & 0o077 != 0) {
                warnings.push(format!(
                    "token file {path} is readable by group or others (mode {mode:04o}); run: chmod 600 {path}"
                ));
            }
            match file.text {
                Err(e) => Err(l.bad(keys::TOKEN_FILE, format!("cannot read {path}: {e}"))),
                Ok(text) => Token::parse(text.trim()).map(Some).ok_or_else(|| {
                    l.bad(
                        keys::TOKEN_FILE,
                        format!("{path} does not hold a bot token ({NOT_A_TOKEN})"),
                    )
                }),
            }
        }
        (None, None) => Ok(None),
    }
}

fn allowed_users(l: &Layers) -> Result<Vec<crate::base::ids::UserId>> {
    let mut allowed_users = Vec::new();
    for part in l.items(keys::ALLOWED_USERS) {
        let id: i64 = part.parse().ok().filter(|id| *id > 0).ok_or_else(|| {
            l.bad(
                keys::ALLOWED_USERS,
                format!("'{part}' is not a numeric Telegram user id (`tgknock whoami` shows ids)"),
            )
        })?;
        let id = crate::base::ids::UserId(id);
        if !allowed_users.contains(&id) {
            allowed_users.push(id);
        }
    }
    Ok(allowed_users)
}

fn notify_denied(l: &Layers) -> Result<bool> {
    match l.get(keys::NOTIFY_DENIED).as_str() {
        "on" | "yes" | "true" | "1" => Ok(true),
        "off" | "no" | "false" | "0" => Ok(false),
        other => Err(l.bad(keys::NOTIFY_DENIED, format!("'{other}' must be on or off"))),
    }
}

fn api_url(l: &Layers) -> Result<String> {
    let api_url = l.get(keys::API_URL);
    let api_ok = (api_url.starts_with("https://") || api_url.starts_with("http://"))
        && !api_url.contains(|c: char| c.is_whitespace() || c == '?' || c == '#')
        && api_url.len() < 512;
    if !api_ok {
        return Err(l.bad(
            keys::API_URL,
            format!("'{}' must be an http:// or https:// URL", short(&api_url)),
        ));
    }
    Ok(api_url.trim_end_matches('/').to_string())
}

/// `TGKNOCK_PROXY`, else the first of the usual variables of the environment.
fn proxy(l: &Layers) -> Result<Option<Proxy>> {
    let proxy = match l.given(keys::PROXY) {
        Some("") => None,
        Some(v) => Some(Proxy {
            url: v.to_string(),
            source: keys::PROXY.name,
        }),
        None => ["ALL_PROXY", "all_proxy", "HTTPS_PROXY", "https_proxy"]
            .iter()
            .find_map(|var| {
                l.env_var(var).map(|v| Proxy {
                    url: v.to_string(),
                    source: var,
                })
            }),
    };
    if let Some(p) = &proxy {
        let ok = ["http://", "socks5://", "socks5h://"]
            .iter()
            .any(|s| p.url.starts_with(s))
            && p.url.len() < 512
            && !p.url.contains(char::is_whitespace);
        if !ok {
            return Err(Error::config(
                p.source,
                "the proxy must be an http://, socks5:// or socks5h:// URL",
            ));
        }
    }
    Ok(proxy)
}

pub(super) fn gates(l: &Layers) -> Result<Vec<Gate>> {
    gate::parse_gates(&l.get(keys::GATES)).map_err(|e| l.bad(keys::GATES, e))
}

pub(super) fn limits(l: &Layers) -> Result<Limits> {
    let open_for = l.duration(keys::OPEN_FOR)?;
    let max_open_for = l.duration(keys::MAX_OPEN_FOR)?;
    if max_open_for != 0 && (open_for == 0 || open_for > max_open_for) {
        return Err(l.bad(
            keys::OPEN_FOR,
            format!(
                "{} is longer than TGKNOCK_MAX_OPEN_FOR={}{}",
                if open_for == 0 {
                    "0 (until closed)".to_string()
                } else {
                    duration::to_config(open_for)
                },
                duration::to_config(max_open_for),
                if open_for == 0 {
                    "; set TGKNOCK_MAX_OPEN_FOR=0 to allow openings without an end"
                } else {
                    ""
                }
            ),
        ));
    }
    let max_age = l.duration(keys::MAX_AGE)?;
    if max_age == 0 {
        return Err(l.bad(keys::MAX_AGE, "must be more than 0"));
    }
    Ok(Limits {
        open_for,
        max_open_for,
        max_age,
    })
}

/// Chain names iptables has for itself.
const BUILTIN_CHAINS: [&str; 11] = [
    "INPUT",
    "OUTPUT",
    "FORWARD",
    "PREROUTING",
    "POSTROUTING",
    "ACCEPT",
    "DROP",
    "RETURN",
    "REJECT",
    "QUEUE",
    "LOG",
];

pub(super) fn firewall(l: &Layers) -> Result<FirewallSettings> {
    let mut always_allow = Vec::new();
    for part in l.items(keys::ALWAYS_ALLOW) {
        let c: Cidr = part.parse().map_err(|e| l.bad(keys::ALWAYS_ALLOW, e))?;
        if !always_allow.contains(&c) {
            always_allow.push(c);
        }
    }
    if always_allow.len() > 64 {
        return Err(l.bad(keys::ALWAYS_ALLOW, "more than 64 entries"));
    }
    let iptables = l.abs_path(keys::IPTABLES)?;
    let ip6tables = match l.get(keys::IP6TABLES).as_str() {
        "off" => None,
        _ => Some(l.abs_path(keys::IP6TABLES)?),
    };
    let chain = l.get(keys::CHAIN);
    let chain_ok = !chain.is_empty()
        && chain.len() <= 28
        && chain
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        && !chain.starts_with('-')
        && !BUILTIN_CHAINS.contains(&chain.to_ascii_uppercase().as_str());
    if !chain_ok {
        return Err(l.bad(
            keys::CHAIN,
            format!(
                "'{}' is not a usable chain name (letters, digits, '-', '_'; at most 28; not a built-in)",
                short(&chain)
            ),
        ));
    }
    let kind = match l.get(keys::FIREWALL).as_str() {
        "iptables" => FirewallKind::Iptables,
        "nft" => FirewallKind::Nft,
        "auto" => FirewallKind::Auto,
        other => {
            return Err(l.bad(
                keys::FIREWALL,
                format!("'{other}' must be iptables, nft or auto"),
            ));
        }
    };
    Ok(FirewallSettings {
        kind,
        iptables,
        ip6tables,
        nft: l.abs_path(keys::NFT)?,
        chain,
        always_allow,
    })
}

/// The knock fallback, when `TGKNOCK_KNOCK` names a sequence.
pub(super) fn knock(
    l: &Layers,
    gates: &[Gate],
    warnings: &mut Vec<String>,
) -> Result<Option<Knock>> {
    let open_for = l.duration(keys::KNOCK_OPEN_FOR)?;
    if open_for == 0 {
        return Err(l.bad(keys::KNOCK_OPEN_FOR, "must be more than 0"));
    }
    let gate = match l.nonempty(keys::KNOCK_GATE) {
        None => gates[0].name.clone(),
        Some(name) => gates
            .iter()
            .find(|g| g.name == name.as_str())
            .map(|g| g.name.clone())
            .ok_or_else(|| {
                l.bad(
                    keys::KNOCK_GATE,
                    format!("there is no gate '{}'", short(&name)),
                )
            })?,
    };
    let text = l.get(keys::KNOCK);
    if text.split(',').all(|p| p.trim().is_empty()) {
        return Ok(None);
    }
    let ports = Knock::parse_ports(&text).map_err(|e| l.bad(keys::KNOCK, e))?;
    for p in &ports {
        let used = gates.iter().find(|g| {
            g.ports
                .iter()
                .any(|r| r.proto == Proto::Tcp && (r.first..=r.last).contains(p))
        });
        if let Some(g) = used {
            return Err(l.bad(keys::KNOCK, format!("port {p} belongs to gate {}", g.name)));
        }
    }
    let k = Knock {
        ports,
        open_for,
        gate,
    };
    if k.ports.windows(2).all(|w| w[1] > w[0] && w[1] - w[0] <= 10) {
        warnings.push(format!(
            "TGKNOCK_KNOCK={}: ascending ports close together are what an in-order port scan sends; prefer a scattered order",
            k.ports_text()
        ));
    }
    Ok(Some(k))
}

/// `TGKNOCK_RATE_LIMIT`: `ssh=6/min web=60/min`, each a gate at most once.
pub(super) fn rate_limits(l: &Layers, gates: &[Gate]) -> Result<Vec<(GateName, Rate)>> {
    let key = keys::RATE_LIMIT;
    let mut out: Vec<(GateName, Rate)> = Vec::new();
    for item in l.items(key) {
        let (name, rate) = item.split_once('=').ok_or_else(|| {
            l.bad(
                key,
                format!("'{}' is not of the form gate=6/min", short(&item)),
            )
        })?;
        let gate = gates
            .iter()
            .find(|g| g.name == name)
            .ok_or_else(|| l.bad(key, format!("there is no gate '{}'", short(name))))?;
        let rate = Rate::parse(rate).map_err(|e| l.bad(key, e))?;
        if out.iter().any(|(g, _)| *g == gate.name) {
            return Err(l.bad(key, format!("{} is named twice", gate.name)));
        }
        out.push((gate.name.clone(), rate));
    }
    out.sort_by_key(|(g, _)| gates.iter().position(|x| &x.name == g));
    Ok(out)
}

/// The TOTP secret file as the loader found it: a base32 secret of at least 128 bits.
pub(super) fn totp(
    l: &Layers,
    file: Option<TokenFile>,
    warnings: &mut Vec<String>,
) -> Result<Option<Secret>> {
    let key = keys::TOTP_SECRET_FILE;
    let Some(file) = file else { return Ok(None) };
    let path = file.path.display().to_string();
    let text = file.text.map_err(|e| {
        l.bad(
            key,
            format!("cannot read {path}: {e} (`tgknock totp-setup` writes one)"),
        )
    })?;
    if let Some(mode) = file.mode.filter(|m| m & 0o077 != 0) {
        warnings.push(format!(
            "TOTP secret file {path} is readable by group or others (mode {mode:04o}); run: chmod 600 {path}"
        ));
    }
    Secret::parse(&text)
        .map(Some)
        .map_err(|e| l.bad(key, format!("{path}: {e}")))
}

/// The pre-declared actions, `TGKNOCK_ACTION_<NAME>`, and how long one may run.
pub(super) fn actions(l: &Layers) -> Result<Actions> {
    let timeout = l.duration(keys::ACTION_TIMEOUT)?;
    if !(1..=86_400).contains(&timeout) {
        return Err(l.bad(keys::ACTION_TIMEOUT, "must be between 1s and 1d"));
    }
    let mut list: Vec<actions::Declared> = Vec::new();
    for (key, value) in l.family(keys::ACTION_PREFIX) {
        let Some(name) = key.strip_prefix(keys::ACTION_PREFIX) else {
            continue;
        };
        if key == keys::ACTION_TIMEOUT.name {
            continue;
        }
        // A configuration error ends the process: the key's few bytes are never freed.
        let key: &'static str = Box::leak(key.to_string().into_boxed_str());
        if !crate::store::actions::valid_action_name(name) {
            return Err(l.bad_named(
                key,
                format!(
                    "the action name after {} must be letters, digits and _, at most {}",
                    keys::ACTION_PREFIX,
                    crate::store::actions::MAX_ACTION_NAME
                ),
            ));
        }
        let name = name.to_ascii_lowercase();
        if list.iter().any(|a| a.name == name) {
            return Err(l.bad_named(
                key,
                format!("another key already declares the action {name}"),
            ));
        }
        let argv = actions::split_words(value).map_err(|e| l.bad_named(key, e))?;
        // In the order of their names (the keys' order differs in case only).
        let at = list.partition_point(|a| a.name < name);
        list.insert(at, actions::Declared { name, argv });
    }
    if list.len() > actions::MAX_ACTIONS {
        return Err(Error::config(
            keys::ACTION.name,
            format!("more than {} actions", actions::MAX_ACTIONS),
        ));
    }
    Ok(Actions { list, timeout })
}

pub(super) fn files(l: &Layers) -> Result<Files> {
    let state_dir = l.abs_path(keys::STATE_DIR)?;
    let log_file = match l.nonempty(keys::LOG_FILE) {
        Some(_) => l.abs_path(keys::LOG_FILE)?,
        None => state_dir.join("tgknock.log"),
    };
    Ok(Files {
        state_dir,
        log_file,
    })
}
