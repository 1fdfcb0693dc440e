//! Configuration: one `KEY=VALUE` file plus the environment, which wins.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::base::addr::Cidr;
use crate::base::duration;
use crate::base::error::{Error, Result};
use crate::base::gate::Knock;
use crate::base::gate::{self, Gate, GateName, Proto};
use crate::base::rate::Rate;
use crate::base::text::short;
use crate::base::totp::Secret;
use crate::store::actions::{self, Actions};

pub(crate) const DEFAULT_PATH: &str = "/etc/tgknock/tgknock.conf";

/// Every key of the contract, with its default (`None`: no default).
/// A key of the configuration: its name, its default (`None`: none), how the documentation
/// shows the default when it is more than the value (`""`: the value itself), and what it
/// means. [`KEYS`] is the one list the unknown-key check, the README's table and the
/// manual page `tgknock.conf(5)` are written from.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    pub name: &'static str,
    pub default: Option<&'static str>,
    pub shown: &'static str,
    pub meaning: &'static str,
}

impl Key {
    /// A family of keys (`TGKNOCK_ACTION_<NAME>`): the prefix its members share.
    pub fn family_prefix(&self) -> Option<&'static str> {
        self.name.strip_suffix("<NAME>")
    }

    /// The default as the documentation shows it: `` `15m` ``, `empty`, `—`, or the text
    /// given.
    pub fn shown_default(&self) -> String {
        match (self.shown, self.default) {
            ("", None) => "—".into(),
            ("", Some("")) => "empty".into(),
            ("", Some(d)) => format!("`{d}`"),
            (shown, _) => shown.into(),
        }
    }
}

/// Every key of the contract, in the order of the design's table.
pub const KEYS: &[Key] = &[
    Key {
        name: "TGKNOCK_TOKEN",
        default: None,
        shown: "",
        meaning: "bot token; prefer `TGKNOCK_TOKEN_FILE`",
    },
    Key {
        name: "TGKNOCK_TOKEN_FILE",
        default: None,
        shown: "",
        meaning: "file holding the token; a warning if group/world readable",
    },
    Key {
        name: "TGKNOCK_ALLOWED_USERS",
        default: None,
        shown: "— (required by `run` and `check`)",
        meaning: "comma-separated numeric Telegram user ids allowed to command",
    },
    Key {
        name: "TGKNOCK_GATES",
        default: Some("ssh=22/tcp"),
        shown: "",
        meaning: "named port sets: `ssh=22/tcp web=80/tcp,443/tcp mosh=60000:61000/udp`; the first is the default gate",
    },
    Key {
        name: "TGKNOCK_OPEN_FOR",
        default: Some("15m"),
        shown: "",
        meaning: "how long an opening lasts when the command names no duration; `0` = until closed (then `TGKNOCK_MAX_OPEN_FOR` must be `0`)",
    },
    Key {
        name: "TGKNOCK_MAX_OPEN_FOR",
        default: Some("1d"),
        shown: "",
        meaning: "the longest opening a chat command may ask for; `0` = no limit",
    },
    Key {
        name: "TGKNOCK_ALWAYS_ALLOW",
        default: Some(""),
        shown: "",
        meaning: "comma-separated addresses/CIDRs (v4 or v6) never blocked, e.g. the LAN",
    },
    Key {
        name: "TGKNOCK_MAX_AGE",
        default: Some("60s"),
        shown: "",
        meaning: "commands older than this are not executed; the sender is told why",
    },
    Key {
        name: "TGKNOCK_NOTIFY_DENIED",
        default: Some("on"),
        shown: "",
        meaning: "tell the allowed users that strangers tried commands (at most one summary every 10 minutes)",
    },
    Key {
        name: "TGKNOCK_API_URL",
        default: Some("https://api.telegram.org"),
        shown: "",
        meaning: "Bot API base URL (a self-hosted `telegram-bot-api` server, or a test server)",
    },
    Key {
        name: "TGKNOCK_PROXY",
        default: None,
        shown: "from `ALL_PROXY`/`HTTPS_PROXY`",
        meaning: "`http://`, `socks5://` or `socks5h://` proxy for Telegram; empty = none",
    },
    Key {
        name: "TGKNOCK_CA_FILE",
        default: None,
        shown: "built-in Mozilla roots",
        meaning: "PEM file of root certificates to trust instead of the built-in ones",
    },
    Key {
        name: "TGKNOCK_POLL_TIMEOUT",
        default: Some("50s"),
        shown: "",
        meaning: "long-poll timeout (1s–10m; polls last at most a minute, so the rules are checked at least every minute)",
    },
    Key {
        name: "TGKNOCK_IPTABLES",
        default: Some("/usr/sbin/iptables"),
        shown: "",
        meaning: "the IPv4 tool; `iptables-restore` is looked up beside it (`…/iptables-legacy` → `…/iptables-legacy-restore`)",
    },
    Key {
        name: "TGKNOCK_IP6TABLES",
        default: Some("/usr/sbin/ip6tables"),
        shown: "",
        meaning: "the IPv6 tool; `off` to leave IPv6 alone (with the nft backend too: then its table holds IPv4 rules only)",
    },
    Key {
        name: "TGKNOCK_CHAIN",
        default: Some("TGKNOCK"),
        shown: "",
        meaning: "name of the chain tgknock owns",
    },
    Key {
        name: "TGKNOCK_STATE_DIR",
        default: Some("/var/lib/tgknock"),
        shown: "",
        meaning: "state, pid, heartbeat, lock",
    },
    Key {
        name: "TGKNOCK_LOG_FILE",
        default: None,
        shown: "`$TGKNOCK_STATE_DIR/tgknock.log`",
        meaning: "where `watchdog` sends the output of a daemon it starts",
    },
    Key {
        name: "TGKNOCK_FIREWALL",
        default: Some("auto"),
        shown: "",
        meaning: "`iptables`, `nft`, or `auto` (iptables if `TGKNOCK_IPTABLES` exists, else nft)",
    },
    Key {
        name: "TGKNOCK_NFT",
        default: Some("/usr/sbin/nft"),
        shown: "",
        meaning: "the nftables tool; tgknock owns the table `inet tgknock` (with iptables-nft, the daemon also reads its chain with it)",
    },
    Key {
        name: "TGKNOCK_KNOCK",
        default: Some(""),
        shown: "",
        meaning: "a port sequence, e.g. `7311,2918,9440` (2 to 8 TCP ports, none of a gate's; not adjacent and ascending): kernel rules open the knock gate to a source that knocks it, with no daemon needed",
    },
    Key {
        name: "TGKNOCK_KNOCK_OPEN_FOR",
        default: Some("30s"),
        shown: "",
        meaning: "how long a knock opens the gate to the knocker",
    },
    Key {
        name: "TGKNOCK_KNOCK_GATE",
        default: None,
        shown: "the first gate",
        meaning: "the gate a knock opens",
    },
    Key {
        name: "TGKNOCK_TOTP_SECRET_FILE",
        default: None,
        shown: "empty",
        meaning: "a file holding a base32 TOTP secret (at least 128 bits; `tgknock totp-setup` writes one): when set, every chat command that changes something (`/open`, an Open button, `enable ssh`, `/run`, `/ban`, `/unban`) needs a current code; each code is accepted once, also across a restart; 5 wrong codes within an hour lock that user out of those commands for an hour. A missing, malformed or short file is a configuration error naming it (exit 2)",
    },
    Key {
        name: "TGKNOCK_RATE_LIMIT",
        default: Some(""),
        shown: "",
        meaning: "per gate, new connections per source: `ssh=6/min web=60/min` (units `s`/`sec`, `m`/`min`, `h`/`hour`, `d`/`day`; counts 1–10000). A source beyond it is dropped until its rate falls; the first N pass at once (the burst is the count). A source is an IPv4 address or an IPv6 /64 (one host holds a whole /64). `TGKNOCK_ALWAYS_ALLOW` is exempt. A flood of spoofed sources never turns it into a lockout: when more new sources come than the kernel's table of 65,536 can keep, the limit lapses for some of them, and no one under the limit is dropped",
    },
    Key {
        name: "TGKNOCK_ACTION_<NAME>",
        default: None,
        shown: "—",
        meaning: "a pre-declared action for `/run NAME`: an absolute program path and its arguments, split on spaces (double quotes group), run without a shell as the daemon's user (a family of keys, one per action, at most 32)",
    },
    Key {
        name: "TGKNOCK_ACTION_TIMEOUT",
        default: Some("30s"),
        shown: "",
        meaning: "an action still running then is killed (its whole process group) and reported as timed out",
    },
    Key {
        name: "TGKNOCK_APPROVE_TIMEOUT",
        default: Some("60s"),
        shown: "",
        meaning: "how long `approve-login` waits for an allowed user to press Allow or Deny before it refuses the login (1s–10m; keep it below sshd's `LoginGraceTime`)",
    },
    Key {
        name: "TGKNOCK_APPROVE_EXEMPT",
        default: None,
        shown: "`$TGKNOCK_ALWAYS_ALLOW`",
        meaning: "comma-separated addresses/CIDRs whose logins `approve-login` lets through at once, without asking (the LAN, so a dead bot cannot lock the owner out at home); `none` for no exemption",
    },
    Key {
        name: "TGKNOCK_APPROVE_USERS",
        default: None,
        shown: "every user",
        meaning: "comma-separated login names whose logins `approve-login` asks about; the logins of other users pass at once",
    },
];

/// `TGKNOCK_ACTION_<NAME>`: the family of keys, one per pre-declared action.
pub const ACTION_PREFIX: &str = "TGKNOCK_ACTION_";

/// Whether `key` is a key of the contract: one of [`KEYS`], or a member of a family.
fn known_key(key: &str) -> bool {
    KEYS.iter().any(|k| match k.family_prefix() {
        // An empty or odd name is the family's own error, with its reason.
        Some(prefix) => key.starts_with(prefix),
        None => k.name == key,
    })
}

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
    pub(crate) allowed_users: Vec<i64>,
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

/// The whole configuration, in sections.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) telegram: TelegramSettings,
    pub(crate) gates: Vec<Gate>,
    pub(crate) limits: Limits,
    pub(crate) firewall: FirewallSettings,
    pub(crate) knock: Option<Knock>,
    /// Per-source rate limits of gates (`TGKNOCK_RATE_LIMIT`), in the gates' order.
    pub(crate) rate_limits: Vec<(GateName, Rate)>,
    /// The second factor (`TGKNOCK_TOTP_SECRET_FILE`): chat openings need a code.
    pub(crate) totp: Option<Secret>,
    pub(crate) actions: Actions,
    /// `approve-login` (`TGKNOCK_APPROVE_*`).
    pub(crate) approve: crate::store::approve::Approve,
    pub(crate) files: Files,
    /// Where the settings came from, for `check`.
    pub(crate) origin: String,
    /// Problems worth a warning but not an error (e.g. a token file others can read).
    pub(crate) warnings: Vec<String>,
}

/// Reads `KEY=VALUE` lines: `#` comments, blank lines, optional matching quotes.
/// An error gives the line number and the problem.
#[allow(clippy::type_complexity)]
pub fn parse_file(
    text: &str,
) -> std::result::Result<Vec<(usize, String, String)>, (usize, String)> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| (n, format!("expected KEY=VALUE, found '{}'", short(line))))?;
        let key = key.trim_end();
        let valid_key = key
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid_key {
            return Err((n, format!("'{}' is not a valid key", short(key))));
        }
        let value = value.trim_start();
        let value = match value.as_bytes().first() {
            Some(q @ (b'"' | b'\'')) => {
                if value.len() >= 2 && value.as_bytes()[value.len() - 1] == *q {
                    value[1..value.len() - 1].to_string()
                } else {
                    return Err((n, format!("{key}: unmatched quote")));
                }
            }
            _ => value.to_string(),
        };
        out.push((n, key.to_string(), value));
    }
    Ok(out)
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
        .filter(|k| k.family_prefix().is_none())
        .map(|k| (distance(key, k.name), k.name))
        .min()
        .filter(|(d, _)| *d <= 3)
        .map(|(_, k)| k)
}

/// The settings as given: the file's, then the environment's on top, each with where it
/// was set; defaults come from [`KEYS`].
struct Layers<'a> {
    values: BTreeMap<String, (String, String)>,
    env: &'a [(String, String)],
    origin: String,
}

impl<'a> Layers<'a> {
    fn new(file: Option<(&Path, &str)>, env: &'a [(String, String)]) -> Result<Layers<'a>> {
        let mut values: BTreeMap<String, (String, String)> = BTreeMap::new();
        let mut origin = Vec::new();
        if let Some((path, text)) = file {
            let where_ = path.display().to_string();
            let pairs = parse_file(text).map_err(|(line, problem)| Error::ConfigSyntax {
                path: path.to_path_buf(),
                line,
                problem,
            })?;
            for (line, key, value) in pairs {
                if !key.starts_with("TGKNOCK_") {
                    continue;
                }
                if !known_key(&key) {
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
            if !known_key(key) {
                return Err(unknown_key(key, "the environment"));
            }
            values.insert(key.clone(), (value.clone(), "the environment".into()));
            from_env = true;
        }
        if from_env {
            origin.push("the environment".into());
        }
        Ok(Layers {
            values,
            env,
            origin: if origin.is_empty() {
                "defaults only".into()
            } else {
                origin.join(" + ")
            },
        })
    }

    /// The value of `key`, or its default.
    fn get(&self, key: &str) -> String {
        self.values
            .get(key)
            .map(|(v, _)| v.clone())
            .or_else(|| {
                KEYS.iter()
                    .find(|k| k.name == key)
                    .and_then(|k| k.default.map(String::from))
            })
            .unwrap_or_default()
    }

    /// The value of `key` when it is set and not empty.
    fn nonempty(&self, key: &str) -> Option<String> {
        Some(self.get(key)).filter(|v| !v.is_empty())
    }

    /// An error about `key`, saying where it was set.
    fn bad(&self, key: &'static str, problem: impl Into<String>) -> Error {
        Error::Config {
            key,
            place: self.values.get(key).map(|(_, w)| w.clone()),
            problem: problem.into(),
        }
    }

    fn duration(&self, key: &'static str) -> Result<u64> {
        duration::parse(&self.get(key), None).map_err(|e| self.bad(key, e))
    }

    fn abs_path(&self, key: &'static str) -> Result<PathBuf> {
        let v = self.get(key);
        if !v.starts_with('/') {
            return Err(self.bad(key, format!("'{v}' must be an absolute path")));
        }
        Ok(PathBuf::from(v))
    }

    /// The items of a list key, separated by commas or spaces.
    fn items(&self, key: &str) -> Vec<String> {
        self.get(key)
            .split([',', ' '])
            .filter(|p| !p.is_empty())
            .map(String::from)
            .collect()
    }
}

/// The largest config or token file read (a file that never ends, `/dev/zero`, is not
/// read to the end).
const MAX_FILE: u64 = 1 << 20;

/// The text of a config file that settings are taken from as root, from a user's
/// environment that is not trusted: never through a FIFO (opened without blocking), a
/// plain file, and with `root`, root's and writable by no one else, in a directory of
/// root's that no one else can write to unless it is sticky.
fn read_trusted(path: &Path, root: bool) -> Result<String> {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let unsafe_ = |path: &Path, problem| Error::Unsafe {
        path: path.to_path_buf(),
        problem,
    };
    let not_read = |source| Error::ConfigFile {
        path: path.to_path_buf(),
        source,
    };
    // The file itself, whatever links lead to it: its own directory is the one checked.
    let real = std::fs::canonicalize(path).map_err(not_read)?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(crate::os::files::O_NOFOLLOW | crate::os::files::O_NONBLOCK)
        .open(&real)
        .map_err(not_read)?;
    let meta = file.metadata().map_err(not_read)?;
    if !meta.is_file() {
        return Err(unsafe_(path, crate::base::error::Unsafe::NotAFile));
    }
    if root {
        use crate::base::error::Unsafe;
        let mode = meta.mode() & 0o7777;
        if meta.uid() != 0 {
            return Err(unsafe_(path, Unsafe::NotRoots(meta.uid())));
        }
        if mode & 0o002 != 0 {
            return Err(unsafe_(path, Unsafe::FileWritableByEveryone(mode)));
        }
        if mode & 0o020 != 0 {
            return Err(unsafe_(path, Unsafe::FileWritableByGroup(mode)));
        }
        let dir = real.parent().unwrap_or(Path::new("/"));
        let d = std::fs::metadata(dir).map_err(not_read)?;
        let dmode = d.mode() & 0o7777;
        if d.uid() != 0 {
            return Err(unsafe_(dir, Unsafe::NotRoots(d.uid())));
        }
        if dmode & 0o1000 == 0 {
            if dmode & 0o002 != 0 {
                return Err(unsafe_(dir, Unsafe::WritableByEveryone(dmode)));
            }
            if dmode & 0o020 != 0 {
                return Err(unsafe_(dir, Unsafe::WritableByGroup(dmode)));
            }
        }
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(not_read)?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(not_read(std::io::Error::other("larger than 1 MiB")));
    }
    String::from_utf8(bytes).map_err(|_| not_read(std::io::Error::other("not UTF-8 text")))
}

/// The token file as the loader found it.
#[derive(Debug)]
pub(crate) struct TokenFile {
    pub(crate) path: PathBuf,
    pub(crate) text: std::io::Result<String>,
    /// Its permission bits, when they could be read.
    pub(crate) mode: Option<u32>,
}

impl TokenFile {
    pub(crate) fn read(path: &Path) -> TokenFile {
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;
        use std::os::unix::fs::PermissionsExt;
        // A plain file of a sensible size: never a FIFO that blocks, nor `/dev/zero`.
        let text = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(crate::os::files::O_NONBLOCK)
            .open(path)
            .and_then(|f| {
                if !f.metadata()?.is_file() {
                    return Err(std::io::Error::other("not a regular file"));
                }
                let mut bytes = Vec::new();
                f.take(MAX_FILE + 1).read_to_end(&mut bytes)?;
                if bytes.len() as u64 > MAX_FILE {
                    return Err(std::io::Error::other("larger than 1 MiB"));
                }
                String::from_utf8(bytes).map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text")
                })
            });
        TokenFile {
            path: path.to_path_buf(),
            text,
            mode: std::fs::metadata(path)
                .ok()
                .map(|m| m.permissions().mode() & 0o7777),
        }
    }
}

const NOT_A_TOKEN: &str = "expected digits, ':', then the secret BotFather gave";

fn telegram(
    l: &Layers,
    token_file: Option<TokenFile>,
    warnings: &mut Vec<String>,
) -> Result<TelegramSettings> {
    // The token: from the key or from a file, never both. A token that cannot be used is
    // remembered rather than refused here: only the commands that talk to Telegram need
    // it, and `teardown` or `close` must work on a board whose token file is empty.
    let token: Result<Option<Token>> = match (l.nonempty("TGKNOCK_TOKEN"), token_file) {
        (Some(_), Some(_)) => Err(Error::config(
            "TGKNOCK_TOKEN_FILE",
            "TGKNOCK_TOKEN and TGKNOCK_TOKEN_FILE are both set; keep only one (prefer the file)",
        )),
        (Some(t), None) => Token::parse(t.trim())
            .map(Some)
            .ok_or_else(|| l.bad("TGKNOCK_TOKEN", format!("not a bot token ({NOT_A_TOKEN})"))),
        (None, Some(file)) => {
            let path = file.path.display().to_string();
            if let Some(mode) = file.mode.filter(|m| m & 0o077 != 0) {
                warnings.push(format!(
                    "token file {path} is readable by group or others (mode {mode:04o}); run: chmod 600 {path}"
                ));
            }
            match file.text {
                Err(e) => Err(l.bad("TGKNOCK_TOKEN_FILE", format!("cannot read {path}: {e}"))),
                Ok(text) => Token::parse(text.trim()).map(Some).ok_or_else(|| {
                    l.bad(
                        "TGKNOCK_TOKEN_FILE",
                        format!("{path} does not hold a bot token ({NOT_A_TOKEN})"),
                    )
                }),
            }
        }
        (None, None) => Ok(None),
    };
    let (token, token_problem) = match token {
        Ok(t) => (t, None),
        Err(e) => {
            warnings.push(format!("{e}; commands that talk to Telegram will fail"));
            (None, Some(e.to_string()))
        }
    };

    let mut allowed_users = Vec::new();
    for part in l.items("TGKNOCK_ALLOWED_USERS") {
        let id: i64 = part.parse().ok().filter(|id| *id > 0).ok_or_else(|| {
            l.bad(
                "TGKNOCK_ALLOWED_USERS",
                format!("'{part}' is not a numeric Telegram user id (`tgknock whoami` shows ids)"),
            )
        })?;
        if !allowed_users.contains(&id) {
            allowed_users.push(id);
        }
    }

    let notify_denied = match l.get("TGKNOCK_NOTIFY_DENIED").as_str() {
        "on" | "yes" | "true" | "1" => true,
        "off" | "no" | "false" | "0" => false,
        other => {
            return Err(l.bad(
                "TGKNOCK_NOTIFY_DENIED",
                format!("'{other}' must be on or off"),
            ));
        }
    };

    let api_url = l.get("TGKNOCK_API_URL");
    let api_ok = (api_url.starts_with("https://") || api_url.starts_with("http://"))
        && !api_url.contains(|c: char| c.is_whitespace() || c == '?' || c == '#')
        && api_url.len() < 512;
    if !api_ok {
        return Err(l.bad(
            "TGKNOCK_API_URL",
            format!("'{}' must be an http:// or https:// URL", short(&api_url)),
        ));
    }
    let api_url = api_url.trim_end_matches('/').to_string();

    let proxy = match l.values.get("TGKNOCK_PROXY") {
        Some((v, _)) if v.is_empty() => None,
        Some((v, _)) => Some(Proxy {
            url: v.clone(),
            source: "TGKNOCK_PROXY",
        }),
        None => ["ALL_PROXY", "all_proxy", "HTTPS_PROXY", "https_proxy"]
            .iter()
            .find_map(|var| {
                l.env
                    .iter()
                    .find(|(k, v)| k == var && !v.is_empty())
                    .map(|(_, v)| Proxy {
                        url: v.clone(),
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

    let poll_timeout = l.duration("TGKNOCK_POLL_TIMEOUT")?;
    if !(1..=600).contains(&poll_timeout) {
        return Err(l.bad("TGKNOCK_POLL_TIMEOUT", "must be between 1s and 10m"));
    }
    Ok(TelegramSettings {
        token,
        token_problem,
        allowed_users,
        notify_denied,
        api_url,
        proxy,
        ca_file: l.nonempty("TGKNOCK_CA_FILE").map(PathBuf::from),
        poll_timeout,
    })
}

fn gates(l: &Layers) -> Result<Vec<Gate>> {
    gate::parse_gates(&l.get("TGKNOCK_GATES")).map_err(|e| l.bad("TGKNOCK_GATES", e))
}

fn limits(l: &Layers) -> Result<Limits> {
    let open_for = l.duration("TGKNOCK_OPEN_FOR")?;
    let max_open_for = l.duration("TGKNOCK_MAX_OPEN_FOR")?;
    if max_open_for != 0 && (open_for == 0 || open_for > max_open_for) {
        return Err(l.bad(
            "TGKNOCK_OPEN_FOR",
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
    let max_age = l.duration("TGKNOCK_MAX_AGE")?;
    if max_age == 0 {
        return Err(l.bad("TGKNOCK_MAX_AGE", "must be more than 0"));
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

fn firewall(l: &Layers) -> Result<FirewallSettings> {
    let mut always_allow = Vec::new();
    for part in l.items("TGKNOCK_ALWAYS_ALLOW") {
        let c: Cidr = part.parse().map_err(|e| l.bad("TGKNOCK_ALWAYS_ALLOW", e))?;
        if !always_allow.contains(&c) {
            always_allow.push(c);
        }
    }
    if always_allow.len() > 64 {
        return Err(l.bad("TGKNOCK_ALWAYS_ALLOW", "more than 64 entries"));
    }
    let iptables = l.abs_path("TGKNOCK_IPTABLES")?;
    let ip6tables = match l.get("TGKNOCK_IP6TABLES").as_str() {
        "off" => None,
        _ => Some(l.abs_path("TGKNOCK_IP6TABLES")?),
    };
    let chain = l.get("TGKNOCK_CHAIN");
    let chain_ok = !chain.is_empty()
        && chain.len() <= 28
        && chain
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        && !chain.starts_with('-')
        && !BUILTIN_CHAINS.contains(&chain.to_ascii_uppercase().as_str());
    if !chain_ok {
        return Err(l.bad(
            "TGKNOCK_CHAIN",
            format!(
                "'{}' is not a usable chain name (letters, digits, '-', '_'; at most 28; not a built-in)",
                short(&chain)
            ),
        ));
    }
    let kind = match l.get("TGKNOCK_FIREWALL").as_str() {
        "iptables" => FirewallKind::Iptables,
        "nft" => FirewallKind::Nft,
        "auto" => FirewallKind::Auto,
        other => {
            return Err(l.bad(
                "TGKNOCK_FIREWALL",
                format!("'{other}' must be iptables, nft or auto"),
            ));
        }
    };
    Ok(FirewallSettings {
        kind,
        iptables,
        ip6tables,
        nft: l.abs_path("TGKNOCK_NFT")?,
        chain,
        always_allow,
    })
}

/// The knock fallback, when `TGKNOCK_KNOCK` names a sequence.
fn knock(l: &Layers, gates: &[Gate], warnings: &mut Vec<String>) -> Result<Option<Knock>> {
    let open_for = l.duration("TGKNOCK_KNOCK_OPEN_FOR")?;
    if open_for == 0 {
        return Err(l.bad("TGKNOCK_KNOCK_OPEN_FOR", "must be more than 0"));
    }
    let gate = match l.nonempty("TGKNOCK_KNOCK_GATE") {
        None => gates[0].name.clone(),
        Some(name) => gates
            .iter()
            .find(|g| g.name == name.as_str())
            .map(|g| g.name.clone())
            .ok_or_else(|| {
                l.bad(
                    "TGKNOCK_KNOCK_GATE",
                    format!("there is no gate '{}'", short(&name)),
                )
            })?,
    };
    let text = l.get("TGKNOCK_KNOCK");
    if text.split(',').all(|p| p.trim().is_empty()) {
        return Ok(None);
    }
    let ports = Knock::parse_ports(&text).map_err(|e| l.bad("TGKNOCK_KNOCK", e))?;
    for p in &ports {
        let used = gates.iter().find(|g| {
            g.ports
                .iter()
                .any(|r| r.proto == Proto::Tcp && (r.first..=r.last).contains(p))
        });
        if let Some(g) = used {
            return Err(l.bad(
                "TGKNOCK_KNOCK",
                format!("port {p} belongs to gate {}", g.name),
            ));
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
fn rate_limits(l: &Layers, gates: &[Gate]) -> Result<Vec<(GateName, Rate)>> {
    let key = "TGKNOCK_RATE_LIMIT";
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
fn totp(l: &Layers, file: Option<TokenFile>, warnings: &mut Vec<String>) -> Result<Option<Secret>> {
    let key = "TGKNOCK_TOTP_SECRET_FILE";
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
fn actions(l: &Layers) -> Result<Actions> {
    let timeout = l.duration("TGKNOCK_ACTION_TIMEOUT")?;
    if !(1..=86_400).contains(&timeout) {
        return Err(l.bad("TGKNOCK_ACTION_TIMEOUT", "must be between 1s and 1d"));
    }
    let mut list: Vec<actions::Declared> = Vec::new();
    for (key, (value, _)) in &l.values {
        let Some(name) = key.strip_prefix(ACTION_PREFIX) else {
            continue;
        };
        if key == "TGKNOCK_ACTION_TIMEOUT" {
            continue;
        }
        // A configuration error ends the process: the key's few bytes are never freed.
        let key: &'static str = Box::leak(key.clone().into_boxed_str());
        if !crate::store::actions::valid_action_name(name) {
            return Err(l.bad(
                key,
                format!(
                    "the action name after {ACTION_PREFIX} must be letters, digits and _, at most {}",
                    crate::store::actions::MAX_ACTION_NAME
                ),
            ));
        }
        let name = name.to_ascii_lowercase();
        if list.iter().any(|a| a.name == name) {
            return Err(l.bad(
                key,
                format!("another key already declares the action {name}"),
            ));
        }
        let argv = actions::split_words(value).map_err(|e| l.bad(key, e))?;
        // In the order of their names (the keys' order differs in case only).
        let at = list.partition_point(|a| a.name < name);
        list.insert(at, actions::Declared { name, argv });
    }
    if list.len() > actions::MAX_ACTIONS {
        return Err(Error::config(
            "TGKNOCK_ACTION_<NAME>",
            format!("more than {} actions", actions::MAX_ACTIONS),
        ));
    }
    Ok(Actions { list, timeout })
}

fn files(l: &Layers) -> Result<Files> {
    let state_dir = l.abs_path("TGKNOCK_STATE_DIR")?;
    let log_file = match l.nonempty("TGKNOCK_LOG_FILE") {
        Some(_) => l.abs_path("TGKNOCK_LOG_FILE")?,
        None => state_dir.join("tgknock.log"),
    };
    Ok(Files {
        state_dir,
        log_file,
    })
}

impl Config {
    /// Loads the config: `path` (or the default path, which may be missing), then the
    /// environment on top; reads the token file it names.
    pub(crate) fn load(path: Option<&Path>) -> Result<Config> {
        let (env, file_path, text) = Config::sources(path)?;
        let file = text.as_deref().map(|t| (file_path.as_path(), t));
        Config::from_sources(file, &env)
    }

    /// The loader of the commands `pam_exec` runs as root (`notify-login`, and
    /// `approve-login` after it): their environment is the logging-in user's to set
    /// (`pam_env` reads `~/.pam_environment`), so **no setting comes from it** — no
    /// `TGKNOCK_*` key, no `ALL_PROXY`/`HTTPS_PROXY` — only the config file, `path` or the
    /// default one (which may be missing: then the defaults, and no token). Run as root,
    /// that file must be a plain file owned by root and writable by no one else, in a
    /// directory of root's that no one else can write to (or sticky, as `/tmp`): another
    /// is refused, naming it and why.
    pub(crate) fn load_trusted(path: Option<&Path>) -> Result<Config> {
        let (file_path, required) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_PATH), false),
        };
        let text = match read_trusted(&file_path, crate::os::sys::is_root()) {
            Ok(t) => Some(t),
            Err(Error::ConfigFile { source, .. })
                if !required && source.kind() == std::io::ErrorKind::NotFound =>
            {
                None
            }
            Err(e) => return Err(e),
        };
        let file = text.as_deref().map(|t| (file_path.as_path(), t));
        Config::from_sources(file, &[])
    }

    /// One setting as the file and the environment give it, without validating the rest
    /// (`totp-setup` runs before the secret file it names exists).
    pub(crate) fn setting(path: Option<&Path>, key: &str) -> Result<Option<String>> {
        let (env, file_path, text) = Config::sources(path)?;
        let file = text.as_deref().map(|t| (file_path.as_path(), t));
        Ok(Layers::new(file, &env)?.nonempty(key))
    }

    /// The environment, the config file's path and its text (`None`: the default path,
    /// missing).
    #[allow(clippy::type_complexity)]
    fn sources(path: Option<&Path>) -> Result<(Vec<(String, String)>, PathBuf, Option<String>)> {
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
            Err(source) => {
                return Err(Error::ConfigFile {
                    path: file_path,
                    source,
                });
            }
        };
        Ok((env, file_path, text))
    }

    /// The config from a file's text and environment pairs, reading the token file they
    /// name (the loader's only file besides the config itself).
    pub(crate) fn from_sources(
        file: Option<(&Path, &str)>,
        env: &[(String, String)],
    ) -> Result<Config> {
        let layers = Layers::new(file, env)?;
        let token_file = layers
            .nonempty("TGKNOCK_TOKEN_FILE")
            .map(|p| TokenFile::read(Path::new(&p)));
        let totp_file = layers
            .nonempty("TGKNOCK_TOTP_SECRET_FILE")
            .map(|p| TokenFile::read(Path::new(&p)));
        Config::build(&layers, token_file, totp_file)
    }

    /// Validates the settings, section by section. Pure: the files are read already.
    fn build(
        layers: &Layers,
        token_file: Option<TokenFile>,
        totp_file: Option<TokenFile>,
    ) -> Result<Config> {
        let mut warnings = Vec::new();
        let telegram = telegram(layers, token_file, &mut warnings)?;
        let gates = gates(layers)?;
        let limits = limits(layers)?;
        let firewall = firewall(layers)?;
        let files = files(layers)?;
        let knock = knock(layers, &gates, &mut warnings)?;
        let rate_limits = rate_limits(layers, &gates)?;
        let totp = totp(layers, totp_file, &mut warnings)?;
        let actions = actions(layers)?;
        let approve = crate::store::approve::Approve::parse(
            &|k| layers.nonempty(k),
            &|k, why| layers.bad(k, why),
            &firewall.always_allow,
        )?;
        Ok(Config {
            approve,
            rate_limits,
            totp,
            telegram,
            gates,
            limits,
            firewall,
            knock,
            actions,
            files,
            origin: layers.origin.clone(),
            warnings,
        })
    }

    /// What `run`, `check` and `whoami` need on top of a valid file: a token.
    pub(crate) fn require_token(&self) -> Result<&Token> {
        if let Some(problem) = &self.telegram.token_problem {
            return Err(Error::Usage {
                argument: None,
                problem: problem.clone(),
            });
        }
        self.telegram.token.as_ref().ok_or_else(|| {
            Error::config(
                "TGKNOCK_TOKEN_FILE",
                "no bot token: set TGKNOCK_TOKEN_FILE (or TGKNOCK_TOKEN) to the token BotFather gave",
            )
        })
    }

    /// What `run` and `check` need: a token and at least one allowed user.
    pub(crate) fn require_bot(&self) -> Result<&Token> {
        let token = self.require_token()?;
        if self.telegram.allowed_users.is_empty() {
            return Err(Error::config(
                "TGKNOCK_ALLOWED_USERS",
                "no user is allowed: add your numeric Telegram user id (`tgknock whoami` shows it)",
            ));
        }
        Ok(token)
    }

    pub(crate) fn gate(&self, name: &str) -> Option<&Gate> {
        self.gates.iter().find(|g| g.name == name)
    }

    pub(crate) fn default_gate(&self) -> &Gate {
        &self.gates[0]
    }

    /// A gate named on the command line (`None`: the default gate).
    pub(crate) fn gate_arg(&self, name: Option<&str>) -> Result<GateName> {
        match name {
            None => Ok(self.default_gate().name.clone()),
            Some(n) => self.gate(n).map(|g| g.name.clone()).ok_or_else(|| {
                Error::usage(
                    "GATE",
                    format!("there is no gate '{n}' (gates: {})", self.gate_names()),
                )
            }),
        }
    }

    /// `ssh, web`.
    pub(crate) fn gate_names(&self) -> String {
        self.gates
            .iter()
            .map(|g| g.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn unknown_key(key: &str, place: &str) -> Error {
    Error::UnknownKey {
        key: key.to_string(),
        place: place.to_string(),
        nearest: nearest_key(key),
    }
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
        assert_eq!(c.limits.open_for, 900);
        assert_eq!(c.limits.max_open_for, 86_400);
        assert_eq!(c.limits.max_age, 60);
        assert_eq!(c.telegram.poll_timeout, 50);
        assert!(c.telegram.notify_denied);
        assert_eq!(c.telegram.api_url, "https://api.telegram.org");
        assert_eq!(c.firewall.iptables, PathBuf::from("/usr/sbin/iptables"));
        assert_eq!(
            c.firewall.ip6tables,
            Some(PathBuf::from("/usr/sbin/ip6tables"))
        );
        assert_eq!(c.firewall.chain, "TGKNOCK");
        assert_eq!(c.files.state_dir, PathBuf::from("/var/lib/tgknock"));
        assert_eq!(
            c.files.log_file,
            PathBuf::from("/var/lib/tgknock/tgknock.log")
        );
        assert_eq!(c.knock, None);
        assert!(c.telegram.token.is_none());
        assert!(c.require_bot().is_err());
    }

    #[test]
    fn file_format() {
        let c = from_file(&format!(
            "# comment\n\n  TGKNOCK_TOKEN=\"{TOKEN}\"\nTGKNOCK_ALLOWED_USERS='111, 222'\nTGKNOCK_GATES=ssh=22/tcp web=80/tcp,443/tcp\nOTHER=ignored\nTGKNOCK_IP6TABLES=off\n"
        ))
        .unwrap();
        assert_eq!(c.telegram.token.as_ref().unwrap().expose(), TOKEN);
        assert_eq!(c.telegram.allowed_users, vec![111, 222]);
        assert_eq!(c.gates.len(), 2);
        assert_eq!(c.firewall.ip6tables, None);
        assert!(c.require_bot().is_ok());
    }

    #[test]
    fn environment_wins() {
        let c = Config::from_sources(
            Some((Path::new("/x"), "TGKNOCK_OPEN_FOR=5m\n")),
            &env(&[("TGKNOCK_OPEN_FOR", "7m"), ("HOME", "/root")]),
        )
        .unwrap();
        assert_eq!(c.limits.open_for, 420);
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
            ("TGKNOCK_OPEN_FOR=2d", "TGKNOCK_MAX_OPEN_FOR=1d"),
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
            ("TGKNOCK_TOKEN=\"x", "unmatched quote"),
            ("just words", "line 1"),
        ] {
            let e = from_file(text).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{text}");
            assert!(e.to_string().contains(key), "{text}: {e}");
            assert!(!e.to_string().contains(TOKEN));
        }
    }

    /// A token that cannot be used fails only the commands that need one (the others
    /// still run: `teardown` on a board with an empty token file), naming the key.
    #[test]
    fn an_unusable_token_fails_only_what_needs_it() {
        for (text, key) in [
            ("TGKNOCK_TOKEN=nope", "TGKNOCK_TOKEN"),
            (
                "TGKNOCK_TOKEN_FILE=/nonexistent/token",
                "TGKNOCK_TOKEN_FILE",
            ),
        ] {
            let c = from_file(text).unwrap();
            assert!(c.warnings[0].contains(key), "{text}: {:?}", c.warnings);
            let e = c.require_token().unwrap_err();
            assert_eq!(e.exit_code(), 2, "{text}");
            assert!(e.to_string().contains(key), "{text}: {e}");
        }
    }

    #[test]
    fn token_never_in_debug() {
        let c = from_file(&format!("TGKNOCK_TOKEN={TOKEN}")).unwrap();
        assert!(!format!("{c:?}").contains("AAHdq"));
        let bad = from_file("TGKNOCK_TOKEN=123:short")
            .unwrap()
            .require_token()
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
        assert_eq!(c.telegram.token.unwrap().expose(), TOKEN);
        assert!(c.warnings[0].contains("chmod 600"), "{:?}", c.warnings);
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(from_file(&text).unwrap().warnings.is_empty());
        let both = format!("{text}\nTGKNOCK_TOKEN={TOKEN}");
        let e = from_file(&both).unwrap().require_token().unwrap_err();
        assert!(e.to_string().contains("both set"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn proxy_from_env() {
        let c = Config::from_sources(None, &env(&[("HTTPS_PROXY", "socks5h://127.0.0.1:1080")]))
            .unwrap();
        assert_eq!(c.telegram.proxy.unwrap().source, "HTTPS_PROXY");
        let c = Config::from_sources(
            None,
            &env(&[("HTTPS_PROXY", "socks5h://h:1"), ("TGKNOCK_PROXY", "")]),
        )
        .unwrap();
        assert!(c.telegram.proxy.is_none());
    }

    #[test]
    fn actions_are_a_family_of_keys() {
        let c = from_file(
            "TGKNOCK_ACTION_RESTART_NGINX=\"/usr/bin/systemctl restart nginx\"\nTGKNOCK_ACTION_backup='/usr/local/bin/backup \"my files\"'\nTGKNOCK_ACTION_TIMEOUT=2m\n",
        )
        .unwrap();
        assert_eq!(c.actions.timeout, 120);
        let names: Vec<&str> = c.actions.list.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["backup", "restart_nginx"]);
        assert_eq!(
            c.actions.find("backup").unwrap().argv,
            ["/usr/local/bin/backup", "my files"]
        );
        assert_eq!(
            c.actions.find("restart_nginx").unwrap().argv,
            ["/usr/bin/systemctl", "restart", "nginx"]
        );
        let c = Config::from_sources(None, &env(&[("TGKNOCK_ACTION_X", "/bin/true")])).unwrap();
        assert_eq!(c.actions.find("x").unwrap().argv, ["/bin/true"]);
        assert_eq!(c.actions.timeout, 30);
        for (text, key, why) in [
            (
                "TGKNOCK_ACTION_X=true",
                "TGKNOCK_ACTION_X (from /etc/t.conf line 1)",
                "absolute path",
            ),
            ("TGKNOCK_ACTION_X=", "TGKNOCK_ACTION_X", "is empty"),
            (
                "TGKNOCK_ACTION_=/bin/true",
                "TGKNOCK_ACTION_",
                "letters, digits and _",
            ),
            (
                "TGKNOCK_ACTION_A=/bin/true\nTGKNOCK_ACTION_a=/bin/false",
                "TGKNOCK_ACTION_a",
                "already declares",
            ),
            (
                "TGKNOCK_ACTION_TIMEOUT=0",
                "TGKNOCK_ACTION_TIMEOUT",
                "between 1s and 1d",
            ),
            ("TGKNOCK_ACTION_TIMEOUT=5", "TGKNOCK_ACTION_TIMEOUT", ""),
            (
                "TGKNOCK_ACTION_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=/bin/true",
                "TGKNOCK_ACTION_AAAA",
                "at most 32",
            ),
        ] {
            let e = from_file(text).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{text}");
            let m = e.to_string();
            assert!(m.contains(key) && m.contains(why), "{text}: {m}");
        }
        let e = Config::from_sources(None, &env(&[("TGKNOCK_ACTION_a-b", "/bin/true")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("TGKNOCK_ACTION_a-b"), "{e}");
        let many: String = (0..33)
            .map(|i| format!("TGKNOCK_ACTION_A{i}=/bin/true\n"))
            .collect();
        assert!(
            from_file(&many)
                .unwrap_err()
                .to_string()
                .contains("more than 32 actions")
        );
        // Near misses of the family's prefix are still typos.
        let e = from_file("TGKNOCK_ACTON_X=/bin/true")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown key TGKNOCK_ACTON_X"), "{e}");
    }

    #[test]
    fn knock_and_firewall_keys() {
        let c = from_file("TGKNOCK_FIREWALL=nft\nTGKNOCK_KNOCK=7101, 7102,7103").unwrap();
        assert_eq!(c.firewall.kind, FirewallKind::Nft);
        let k = c.knock.unwrap();
        assert_eq!(k.ports, vec![7101, 7102, 7103]);
        assert_eq!(k.open_for, 30);
        assert_eq!(k.gate, "ssh");
        let c = from_file("TGKNOCK_KNOCK=7311,2918").unwrap();
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        let c = from_file("TGKNOCK_KNOCK=7101,7102").unwrap();
        assert!(
            c.warnings[0].contains("in-order port scan"),
            "{:?}",
            c.warnings
        );
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
