//! Configuration: one `KEY=VALUE` file plus the environment, which wins.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::addr::Cidr;
use crate::duration;
use crate::error::{Error, Result};
use crate::gate::{self, Gate};

pub const DEFAULT_PATH: &str = "/etc/tgknock/tgknock.conf";

/// Every key of the contract, with its default (`None`: no default).
pub const KEYS: &[(&str, Option<&str>)] = &[
    ("TGKNOCK_TOKEN", None),
    ("TGKNOCK_TOKEN_FILE", None),
    ("TGKNOCK_ALLOWED_USERS", None),
    ("TGKNOCK_GATES", Some("ssh=22/tcp")),
    ("TGKNOCK_OPEN_FOR", Some("15m")),
    ("TGKNOCK_MAX_OPEN_FOR", Some("1d")),
    ("TGKNOCK_ALWAYS_ALLOW", Some("")),
    ("TGKNOCK_MAX_AGE", Some("60s")),
    ("TGKNOCK_NOTIFY_DENIED", Some("on")),
    ("TGKNOCK_API_URL", Some("https://api.telegram.org")),
    ("TGKNOCK_PROXY", None),
    ("TGKNOCK_CA_FILE", None),
    ("TGKNOCK_POLL_TIMEOUT", Some("50s")),
    ("TGKNOCK_IPTABLES", Some("/usr/sbin/iptables")),
    ("TGKNOCK_IP6TABLES", Some("/usr/sbin/ip6tables")),
    ("TGKNOCK_CHAIN", Some("TGKNOCK")),
    ("TGKNOCK_STATE_DIR", Some("/var/lib/tgknock")),
    ("TGKNOCK_LOG_FILE", None),
    ("TGKNOCK_FIREWALL", Some("auto")),
    ("TGKNOCK_NFT", Some("/usr/sbin/nft")),
    ("TGKNOCK_KNOCK", Some("")),
    ("TGKNOCK_KNOCK_OPEN_FOR", Some("30s")),
    ("TGKNOCK_KNOCK_GATE", None),
];

/// What each key of [`KEYS`] means, one line each (the design's table), for the manual page
/// `tgknock.conf(5)`; a test (tests/manpages.rs) fails when a key has no line here.
pub const KEY_DOCS: &[(&str, &str)] = &[
    ("TGKNOCK_TOKEN", "the bot token; prefer TGKNOCK_TOKEN_FILE"),
    (
        "TGKNOCK_TOKEN_FILE",
        "a file holding the token; a warning if it is group or world readable",
    ),
    (
        "TGKNOCK_ALLOWED_USERS",
        "comma-separated numeric Telegram user ids allowed to command; required by run and check",
    ),
    (
        "TGKNOCK_GATES",
        "named port sets, e.g. ssh=22/tcp web=80/tcp,443/tcp mosh=60000:61000/udp; the first is the default gate",
    ),
    (
        "TGKNOCK_OPEN_FOR",
        "how long an opening lasts when the command names no duration; 0 = until closed",
    ),
    (
        "TGKNOCK_MAX_OPEN_FOR",
        "the longest opening a chat command may ask for; a longer request is refused, naming the limit; 0 = no limit",
    ),
    (
        "TGKNOCK_ALWAYS_ALLOW",
        "comma-separated addresses or CIDR blocks (IPv4 or IPv6) never blocked, e.g. the LAN, so a mistake cannot lock the owner out at home",
    ),
    (
        "TGKNOCK_MAX_AGE",
        "commands older than this (by the message's date) are not executed; the sender is told why",
    ),
    (
        "TGKNOCK_NOTIFY_DENIED",
        "on or off: tell the allowed users that strangers tried commands, in one summary at most every 10 minutes",
    ),
    (
        "TGKNOCK_API_URL",
        "the Bot API base URL (a self-hosted telegram-bot-api server, or a test server)",
    ),
    (
        "TGKNOCK_PROXY",
        "an http://, socks5:// or socks5h:// proxy for Telegram; unset: ALL_PROXY or HTTPS_PROXY; empty: none",
    ),
    (
        "TGKNOCK_CA_FILE",
        "a PEM file of root certificates to trust instead of the built-in Mozilla roots",
    ),
    ("TGKNOCK_POLL_TIMEOUT", "the long-poll timeout (1s to 10m)"),
    (
        "TGKNOCK_IPTABLES",
        "the IPv4 tool; iptables-restore is looked up beside it",
    ),
    (
        "TGKNOCK_IP6TABLES",
        "the IPv6 tool; off to leave IPv6 alone (then status and check say IPv6 is not managed)",
    ),
    (
        "TGKNOCK_CHAIN",
        "the name of the chain tgknock owns (iptables backend)",
    ),
    (
        "TGKNOCK_STATE_DIR",
        "where the state, pid, heartbeat and lock files live",
    ),
    (
        "TGKNOCK_LOG_FILE",
        "where watchdog sends the output of a daemon it starts; unset: tgknock.log in TGKNOCK_STATE_DIR",
    ),
    (
        "TGKNOCK_FIREWALL",
        "iptables, nft, or auto (iptables if its tool exists, else nft)",
    ),
    (
        "TGKNOCK_NFT",
        "the nftables tool; tgknock owns the table inet tgknock",
    ),
    (
        "TGKNOCK_KNOCK",
        "a port sequence, e.g. 7311,2918,9440: kernel rules open the knock gate to a source that knocks it, with no daemon needed",
    ),
    (
        "TGKNOCK_KNOCK_OPEN_FOR",
        "how long a knock opens the gate to the knocker",
    ),
    (
        "TGKNOCK_KNOCK_GATE",
        "the gate a knock opens; unset: the first gate",
    ),
];

/// The bot token. Its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `123456:ABC-def…`: digits, a colon, then letters, digits, `-` and `_`.
    pub fn parse(text: &str) -> Option<Token> {
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
pub struct Proxy {
    pub url: String,
    /// The key or variable it came from, for messages.
    pub source: String,
}

/// Which firewall tool family manages the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirewallKind {
    Iptables,
    Nft,
    Auto,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub token: Option<Token>,
    pub token_file: Option<PathBuf>,
    pub allowed_users: Vec<i64>,
    pub gates: Vec<Gate>,
    pub open_for: u64,
    pub max_open_for: u64,
    pub always_allow: Vec<Cidr>,
    pub max_age: u64,
    pub notify_denied: bool,
    pub api_url: String,
    pub proxy: Option<Proxy>,
    pub ca_file: Option<PathBuf>,
    pub poll_timeout: u64,
    pub iptables: PathBuf,
    pub ip6tables: Option<PathBuf>,
    pub chain: String,
    pub state_dir: PathBuf,
    pub log_file: PathBuf,
    pub firewall: FirewallKind,
    pub nft: PathBuf,
    pub knock: Vec<u16>,
    pub knock_open_for: u64,
    pub knock_gate: String,
    /// Where the settings came from, for `check`.
    pub origin: String,
    /// Problems worth a warning but not an error (e.g. a token file others can read).
    pub warnings: Vec<String>,
}

/// Reads `KEY=VALUE` lines: `#` comments, blank lines, optional matching quotes.
pub fn parse_file(text: &str) -> std::result::Result<Vec<(usize, String, String)>, String> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| format!("line {n}: expected KEY=VALUE, found '{}'", short(line)))?;
        let key = key.trim_end();
        let valid_key = key
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid_key {
            return Err(format!("line {n}: '{}' is not a valid key", short(key)));
        }
        let value = value.trim_start();
        let value = match value.as_bytes().first() {
            Some(q @ (b'"' | b'\'')) => {
                if value.len() >= 2 && value.as_bytes()[value.len() - 1] == *q {
                    value[1..value.len() - 1].to_string()
                } else {
                    return Err(format!("line {n}: {key}: unmatched quote"));
                }
            }
            _ => value.to_string(),
        };
        out.push((n, key.to_string(), value));
    }
    Ok(out)
}

fn short(s: &str) -> String {
    let mut t: String = s.chars().take(40).collect();
    if t.len() < s.len() {
        t.push('…');
    }
    t
}

/// The known key nearest to a misspelt one, for "did you mean".
fn nearest_key(key: &str) -> Option<&'static str> {
    fn distance(a: &str, b: &str) -> usize {
        let b: Vec<char> = b.chars().collect();
        let mut prev: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut cur = vec![i + 1];
            for (j, cb) in b.iter().enumerate() {
                let sub = prev[j] + usize::from(ca != *cb);
                cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
            }
            prev = cur;
        }
        prev[b.len()]
    }
    KEYS.iter()
        .map(|(k, _)| (distance(key, k), *k))
        .min()
        .filter(|(d, _)| *d <= 3)
        .map(|(_, k)| k)
}

impl Config {
    /// Loads the config: `path` (or the default path, which may be missing), then the
    /// environment on top.
    pub fn load(path: Option<&Path>) -> Result<Config> {
        let env: Vec<(String, String)> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        let (file_path, required) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_PATH), false),
        };
        let text = match std::fs::read_to_string(&file_path) {
            Ok(t) => Some(t),
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(Error::Config(format!(
                    "cannot read config file {}: {e}",
                    file_path.display()
                )));
            }
        };
        let file = text.as_deref().map(|t| (file_path.as_path(), t));
        Config::from_sources(file, &env)
    }

    /// Builds the config from a file's text and environment pairs; pure but for reading
    /// `TGKNOCK_TOKEN_FILE` and `TGKNOCK_CA_FILE`'s metadata.
    pub fn from_sources(file: Option<(&Path, &str)>, env: &[(String, String)]) -> Result<Config> {
        let mut values: BTreeMap<String, (String, String)> = BTreeMap::new();
        let mut origin = Vec::new();
        if let Some((path, text)) = file {
            let where_ = path.display().to_string();
            let pairs = parse_file(text).map_err(|e| Error::Config(format!("{where_}: {e}")))?;
            for (line, key, value) in pairs {
                if !key.starts_with("TGKNOCK_") {
                    continue;
                }
                if !KEYS.iter().any(|(k, _)| *k == key) {
                    return Err(unknown_key(&key, &format!("{where_} line {line}")));
                }
                values.insert(key, (value, format!("{where_} line {line}")));
            }
            origin.push(where_);
        }
        let mut from_env = false;
        for (key, value) in env {
            if !key.starts_with("TGKNOCK_") {
                continue;
            }
            if !KEYS.iter().any(|(k, _)| k == key) {
                return Err(unknown_key(key, "the environment"));
            }
            values.insert(key.clone(), (value.clone(), "the environment".into()));
            from_env = true;
        }
        if from_env {
            origin.push("the environment".into());
        }
        let get = |key: &str| -> Option<String> {
            values.get(key).map(|(v, _)| v.clone()).or_else(|| {
                KEYS.iter()
                    .find(|(k, _)| *k == key)
                    .and_then(|(_, d)| d.map(String::from))
            })
        };
        let bad = |key: &str, msg: String| -> Error {
            let place = values
                .get(key)
                .map(|(_, w)| format!(" (from {w})"))
                .unwrap_or_default();
            Error::Config(format!("{key}{place}: {msg}"))
        };
        let dur = |key: &str| -> Result<u64> {
            duration::parse(&get(key).unwrap_or_default(), None).map_err(|e| bad(key, e))
        };
        let abs_path = |key: &str| -> Result<PathBuf> {
            let v = get(key).unwrap_or_default();
            if !v.starts_with('/') {
                return Err(bad(key, format!("'{v}' must be an absolute path")));
            }
            Ok(PathBuf::from(v))
        };
        let mut warnings = Vec::new();

        // The token: from the key or from a file, never both.
        let token_text = get("TGKNOCK_TOKEN").filter(|t| !t.is_empty());
        let token_file = get("TGKNOCK_TOKEN_FILE")
            .filter(|t| !t.is_empty())
            .map(PathBuf::from);
        let token = match (token_text, &token_file) {
            (Some(_), Some(_)) => {
                return Err(Error::Config(
                    "TGKNOCK_TOKEN and TGKNOCK_TOKEN_FILE are both set; keep only one (prefer the file)"
                        .into(),
                ));
            }
            (Some(t), None) => Some(Token::parse(t.trim()).ok_or_else(|| {
                bad(
                    "TGKNOCK_TOKEN",
                    "not a bot token (expected digits, ':', then the secret BotFather gave)".into(),
                )
            })?),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    bad(
                        "TGKNOCK_TOKEN_FILE",
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                if let Some(w) = token_file_warning(path) {
                    warnings.push(w);
                }
                Some(Token::parse(text.trim()).ok_or_else(|| {
                    bad(
                        "TGKNOCK_TOKEN_FILE",
                        format!(
                            "{} does not hold a bot token (expected digits, ':', then the secret BotFather gave)",
                            path.display()
                        ),
                    )
                })?)
            }
            (None, None) => None,
        };

        let mut allowed_users = Vec::new();
        for part in get("TGKNOCK_ALLOWED_USERS")
            .unwrap_or_default()
            .split([',', ' '])
            .filter(|p| !p.is_empty())
        {
            let id: i64 = part.parse().ok().filter(|id| *id > 0).ok_or_else(|| {
                bad(
                    "TGKNOCK_ALLOWED_USERS",
                    format!(
                        "'{part}' is not a numeric Telegram user id (`tgknock whoami` shows ids)"
                    ),
                )
            })?;
            if !allowed_users.contains(&id) {
                allowed_users.push(id);
            }
        }

        let gates = gate::parse_gates(&get("TGKNOCK_GATES").unwrap_or_default())
            .map_err(|e| bad("TGKNOCK_GATES", e))?;
        let open_for = dur("TGKNOCK_OPEN_FOR")?;
        let max_open_for = dur("TGKNOCK_MAX_OPEN_FOR")?;
        if max_open_for != 0 && (open_for == 0 || open_for > max_open_for) {
            return Err(Error::Config(format!(
                "TGKNOCK_OPEN_FOR={} is longer than TGKNOCK_MAX_OPEN_FOR={}{}",
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
            )));
        }

        let mut always_allow = Vec::new();
        for part in get("TGKNOCK_ALWAYS_ALLOW")
            .unwrap_or_default()
            .split([',', ' '])
            .filter(|p| !p.is_empty())
        {
            let c: Cidr = part.parse().map_err(|e| bad("TGKNOCK_ALWAYS_ALLOW", e))?;
            if !always_allow.contains(&c) {
                always_allow.push(c);
            }
        }
        if always_allow.len() > 64 {
            return Err(bad("TGKNOCK_ALWAYS_ALLOW", "more than 64 entries".into()));
        }

        let max_age = dur("TGKNOCK_MAX_AGE")?;
        if max_age == 0 {
            return Err(bad("TGKNOCK_MAX_AGE", "must be more than 0".into()));
        }
        let notify_denied = match get("TGKNOCK_NOTIFY_DENIED").unwrap_or_default().as_str() {
            "on" | "yes" | "true" | "1" => true,
            "off" | "no" | "false" | "0" => false,
            other => {
                return Err(bad(
                    "TGKNOCK_NOTIFY_DENIED",
                    format!("'{other}' must be on or off"),
                ));
            }
        };

        let api_url = get("TGKNOCK_API_URL").unwrap_or_default();
        let api_ok = (api_url.starts_with("https://") || api_url.starts_with("http://"))
            && !api_url.contains(|c: char| c.is_whitespace() || c == '?' || c == '#')
            && api_url.len() < 512;
        if !api_ok {
            return Err(bad(
                "TGKNOCK_API_URL",
                format!("'{}' must be an http:// or https:// URL", short(&api_url)),
            ));
        }
        let api_url = api_url.trim_end_matches('/').to_string();

        let proxy = match values.get("TGKNOCK_PROXY") {
            Some((v, _)) if v.is_empty() => None,
            Some((v, _)) => Some(Proxy {
                url: v.clone(),
                source: "TGKNOCK_PROXY".into(),
            }),
            None => ["ALL_PROXY", "all_proxy", "HTTPS_PROXY", "https_proxy"]
                .iter()
                .find_map(|var| {
                    env.iter()
                        .find(|(k, v)| k == var && !v.is_empty())
                        .map(|(_, v)| Proxy {
                            url: v.clone(),
                            source: (*var).to_string(),
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
                return Err(Error::Config(format!(
                    "{}: the proxy must be an http://, socks5:// or socks5h:// URL",
                    p.source
                )));
            }
        }

        let ca_file = get("TGKNOCK_CA_FILE")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        let poll_timeout = dur("TGKNOCK_POLL_TIMEOUT")?;
        if !(1..=600).contains(&poll_timeout) {
            return Err(bad(
                "TGKNOCK_POLL_TIMEOUT",
                "must be between 1s and 10m".into(),
            ));
        }

        let iptables = abs_path("TGKNOCK_IPTABLES")?;
        let ip6tables = match get("TGKNOCK_IP6TABLES").as_deref() {
            Some("off") => None,
            _ => Some(abs_path("TGKNOCK_IP6TABLES")?),
        };
        let chain = get("TGKNOCK_CHAIN").unwrap_or_default();
        let builtin = [
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
        let chain_ok = !chain.is_empty()
            && chain.len() <= 28
            && chain
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            && !chain.starts_with('-')
            && !builtin.contains(&chain.to_ascii_uppercase().as_str());
        if !chain_ok {
            return Err(bad(
                "TGKNOCK_CHAIN",
                format!(
                    "'{}' is not a usable chain name (letters, digits, '-', '_'; at most 28; not a built-in)",
                    short(&chain)
                ),
            ));
        }
        let state_dir = abs_path("TGKNOCK_STATE_DIR")?;
        let log_file = match get("TGKNOCK_LOG_FILE").filter(|v| !v.is_empty()) {
            Some(_) => abs_path("TGKNOCK_LOG_FILE")?,
            None => state_dir.join("tgknock.log"),
        };
        let firewall = match get("TGKNOCK_FIREWALL").unwrap_or_default().as_str() {
            "iptables" => FirewallKind::Iptables,
            "nft" => FirewallKind::Nft,
            "auto" => FirewallKind::Auto,
            other => {
                return Err(bad(
                    "TGKNOCK_FIREWALL",
                    format!("'{other}' must be iptables, nft or auto"),
                ));
            }
        };
        let nft = abs_path("TGKNOCK_NFT")?;
        let mut knock = Vec::new();
        for part in get("TGKNOCK_KNOCK")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            let port =
                part.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
                    bad("TGKNOCK_KNOCK", format!("'{part}' is not a port (1-65535)"))
                })?;
            knock.push(port);
        }
        if !knock.is_empty() {
            if !(2..=8).contains(&knock.len()) {
                return Err(bad("TGKNOCK_KNOCK", "a sequence is 2 to 8 ports".into()));
            }
            for (i, p) in knock.iter().enumerate() {
                if knock[..i].contains(p) {
                    return Err(bad("TGKNOCK_KNOCK", format!("port {p} appears twice")));
                }
                let used = gates.iter().find(|g| {
                    g.ports.iter().any(|r| {
                        r.proto == crate::gate::Proto::Tcp && (r.first..=r.last).contains(p)
                    })
                });
                if let Some(g) = used {
                    return Err(bad(
                        "TGKNOCK_KNOCK",
                        format!("port {p} belongs to gate {}", g.name),
                    ));
                }
            }
        }
        if knock.len() >= 2 && knock.windows(2).all(|w| w[1] > w[0] && w[1] - w[0] <= 10) {
            warnings.push(format!(
                "TGKNOCK_KNOCK={}: ascending ports close together are what an in-order port scan sends; prefer a scattered order",
                knock.iter().map(u16::to_string).collect::<Vec<_>>().join(",")
            ));
        }
        let knock_open_for = dur("TGKNOCK_KNOCK_OPEN_FOR")?;
        if knock_open_for == 0 {
            return Err(bad("TGKNOCK_KNOCK_OPEN_FOR", "must be more than 0".into()));
        }
        let knock_gate = get("TGKNOCK_KNOCK_GATE")
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| gates[0].name.clone());
        if !gates.iter().any(|g| g.name == knock_gate) {
            return Err(bad(
                "TGKNOCK_KNOCK_GATE",
                format!("there is no gate '{}'", short(&knock_gate)),
            ));
        }

        Ok(Config {
            token,
            token_file,
            allowed_users,
            gates,
            open_for,
            max_open_for,
            always_allow,
            max_age,
            notify_denied,
            api_url,
            proxy,
            ca_file,
            poll_timeout,
            iptables,
            ip6tables,
            chain,
            state_dir,
            log_file,
            firewall,
            nft,
            knock,
            knock_open_for,
            knock_gate,
            origin: if origin.is_empty() {
                "defaults only".into()
            } else {
                origin.join(" + ")
            },
            warnings,
        })
    }

    /// What `run`, `check` and `whoami` need on top of a valid file: a token.
    pub fn require_token(&self) -> Result<&Token> {
        self.token.as_ref().ok_or_else(|| {
            Error::Config(
                "no bot token: set TGKNOCK_TOKEN_FILE (or TGKNOCK_TOKEN) to the token BotFather gave"
                    .into(),
            )
        })
    }

    /// What `run` and `check` need: a token and at least one allowed user.
    pub fn require_bot(&self) -> Result<&Token> {
        let token = self.require_token()?;
        if self.allowed_users.is_empty() {
            return Err(Error::Config(
                "TGKNOCK_ALLOWED_USERS is empty: add your numeric Telegram user id (`tgknock whoami` shows it)"
                    .into(),
            ));
        }
        Ok(token)
    }

    pub fn gate(&self, name: &str) -> Option<&Gate> {
        self.gates.iter().find(|g| g.name == name)
    }

    pub fn default_gate(&self) -> &Gate {
        &self.gates[0]
    }
}

fn unknown_key(key: &str, place: &str) -> Error {
    let hint = nearest_key(key)
        .map(|k| format!("; did you mean {k}?"))
        .unwrap_or_default();
    Error::Config(format!("unknown key {key} in {place}{hint}"))
}

/// A warning when the token file can be read by group or others.
pub fn token_file_warning(path: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o077 != 0).then(|| {
        format!(
            "token file {} is readable by group or others (mode {:04o}); run: chmod 600 {}",
            path.display(),
            mode & 0o7777,
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw";

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn from_file(text: &str) -> Result<Config> {
        Config::from_sources(Some((Path::new("/etc/t.conf"), text)), &[])
    }

    #[test]
    fn defaults() {
        let c = Config::from_sources(None, &[]).unwrap();
        assert_eq!(c.gates.len(), 1);
        assert_eq!(c.gates[0].name, "ssh");
        assert_eq!(c.open_for, 900);
        assert_eq!(c.max_open_for, 86_400);
        assert_eq!(c.max_age, 60);
        assert_eq!(c.poll_timeout, 50);
        assert!(c.notify_denied);
        assert_eq!(c.api_url, "https://api.telegram.org");
        assert_eq!(c.iptables, PathBuf::from("/usr/sbin/iptables"));
        assert_eq!(c.ip6tables, Some(PathBuf::from("/usr/sbin/ip6tables")));
        assert_eq!(c.chain, "TGKNOCK");
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/tgknock"));
        assert_eq!(c.log_file, PathBuf::from("/var/lib/tgknock/tgknock.log"));
        assert_eq!(c.knock_gate, "ssh");
        assert!(c.token.is_none());
        assert!(c.require_bot().is_err());
    }

    #[test]
    fn file_format() {
        let c = from_file(&format!(
            "# comment\n\n  TGKNOCK_TOKEN=\"{TOKEN}\"\nTGKNOCK_ALLOWED_USERS='111, 222'\nTGKNOCK_GATES=ssh=22/tcp web=80/tcp,443/tcp\nOTHER=ignored\nTGKNOCK_IP6TABLES=off\n"
        ))
        .unwrap();
        assert_eq!(c.token.as_ref().unwrap().expose(), TOKEN);
        assert_eq!(c.allowed_users, vec![111, 222]);
        assert_eq!(c.gates.len(), 2);
        assert_eq!(c.ip6tables, None);
        assert!(c.require_bot().is_ok());
    }

    #[test]
    fn environment_wins() {
        let c = Config::from_sources(
            Some((Path::new("/x"), "TGKNOCK_OPEN_FOR=5m\n")),
            &env(&[("TGKNOCK_OPEN_FOR", "7m"), ("HOME", "/root")]),
        )
        .unwrap();
        assert_eq!(c.open_for, 420);
        assert_eq!(c.origin, "/x + the environment");
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = from_file("TGKNOCK_TOKN=x\n").unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let m = e.to_string();
        assert!(
            m.contains("TGKNOCK_TOKN") && m.contains("line 1") && m.contains("TGKNOCK_TOKEN"),
            "{m}"
        );
        let e = Config::from_sources(None, &env(&[("TGKNOCK_GATE", "x")])).unwrap_err();
        assert!(
            e.to_string().contains("TGKNOCK_GATE in the environment"),
            "{e}"
        );
    }

    #[test]
    fn errors_name_the_key() {
        for (text, key) in [
            ("TGKNOCK_OPEN_FOR=15", "TGKNOCK_OPEN_FOR"),
            ("TGKNOCK_OPEN_FOR=2d", "TGKNOCK_MAX_OPEN_FOR"),
            ("TGKNOCK_OPEN_FOR=0", "TGKNOCK_MAX_OPEN_FOR=0"),
            ("TGKNOCK_ALLOWED_USERS=@me", "TGKNOCK_ALLOWED_USERS"),
            ("TGKNOCK_ALLOWED_USERS=-5", "TGKNOCK_ALLOWED_USERS"),
            ("TGKNOCK_GATES=ssh", "TGKNOCK_GATES"),
            ("TGKNOCK_ALWAYS_ALLOW=10.0.0.0/33", "TGKNOCK_ALWAYS_ALLOW"),
            ("TGKNOCK_MAX_AGE=0", "TGKNOCK_MAX_AGE"),
            ("TGKNOCK_NOTIFY_DENIED=maybe", "TGKNOCK_NOTIFY_DENIED"),
            ("TGKNOCK_API_URL=ftp://x", "TGKNOCK_API_URL"),
            ("TGKNOCK_PROXY=gopher://x", "TGKNOCK_PROXY"),
            ("TGKNOCK_POLL_TIMEOUT=0", "TGKNOCK_POLL_TIMEOUT"),
            ("TGKNOCK_IPTABLES=iptables", "TGKNOCK_IPTABLES"),
            ("TGKNOCK_CHAIN=INPUT", "TGKNOCK_CHAIN"),
            ("TGKNOCK_CHAIN=a b", "TGKNOCK_CHAIN"),
            ("TGKNOCK_STATE_DIR=var", "TGKNOCK_STATE_DIR"),
            ("TGKNOCK_FIREWALL=pf", "TGKNOCK_FIREWALL"),
            ("TGKNOCK_KNOCK=1,x", "TGKNOCK_KNOCK"),
            ("TGKNOCK_KNOCK=0,5", "TGKNOCK_KNOCK"),
            ("TGKNOCK_KNOCK_GATE=web", "TGKNOCK_KNOCK_GATE"),
            ("TGKNOCK_TOKEN=nope", "TGKNOCK_TOKEN"),
            (
                "TGKNOCK_TOKEN_FILE=/nonexistent/token",
                "TGKNOCK_TOKEN_FILE",
            ),
            ("TGKNOCK_TOKEN=\"x", "unmatched quote"),
            ("just words", "line 1"),
        ] {
            let e = from_file(text).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{text}");
            assert!(e.to_string().contains(key), "{text}: {e}");
            assert!(!e.to_string().contains(TOKEN));
        }
    }

    #[test]
    fn token_never_in_debug() {
        let c = from_file(&format!("TGKNOCK_TOKEN={TOKEN}")).unwrap();
        assert!(!format!("{c:?}").contains("AAHdq"));
        let bad = from_file("TGKNOCK_TOKEN=123:short")
            .unwrap_err()
            .to_string();
        assert!(!bad.contains("123:short"), "{bad}");
    }

    #[test]
    fn token_file_and_its_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("tgk-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("token");
        std::fs::write(&f, format!("{TOKEN}\n")).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let text = format!("TGKNOCK_TOKEN_FILE={}", f.display());
        let c = from_file(&text).unwrap();
        assert_eq!(c.token.unwrap().expose(), TOKEN);
        assert!(c.warnings[0].contains("chmod 600"), "{:?}", c.warnings);
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(from_file(&text).unwrap().warnings.is_empty());
        let both = format!("{text}\nTGKNOCK_TOKEN={TOKEN}");
        assert!(
            from_file(&both)
                .unwrap_err()
                .to_string()
                .contains("both set")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn proxy_from_env() {
        let c = Config::from_sources(None, &env(&[("HTTPS_PROXY", "socks5h://127.0.0.1:1080")]))
            .unwrap();
        assert_eq!(c.proxy.unwrap().source, "HTTPS_PROXY");
        let c = Config::from_sources(
            None,
            &env(&[("HTTPS_PROXY", "socks5h://h:1"), ("TGKNOCK_PROXY", "")]),
        )
        .unwrap();
        assert!(c.proxy.is_none());
    }

    #[test]
    fn knock_and_firewall_keys() {
        let c = from_file("TGKNOCK_FIREWALL=nft\nTGKNOCK_KNOCK=7101, 7102,7103").unwrap();
        assert_eq!(c.firewall, FirewallKind::Nft);
        assert_eq!(c.knock, vec![7101, 7102, 7103]);
        assert_eq!(c.knock_open_for, 30);
        for (bad, why) in [
            ("TGKNOCK_KNOCK=7101", "2 to 8"),
            ("TGKNOCK_KNOCK=7101,7101", "twice"),
            ("TGKNOCK_KNOCK=7101,22", "gate ssh"),
            ("TGKNOCK_KNOCK=1,2,3,4,5,6,7,8,9", "2 to 8"),
            (
                "TGKNOCK_KNOCK=7101,7102\nTGKNOCK_KNOCK_OPEN_FOR=0",
                "more than 0",
            ),
        ] {
            let e = from_file(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
