//! The table of keys: every key of the contract as a typed constant, which the parsers
//! must name (a key missing from the table does not compile), and [`KEYS`], the one list
//! the unknown-key check, the README's table and the manual page are written from.

/// A key of the configuration: its name, its default (`None`: none), how the documentation
/// shows the default when it is more than the value (`""`: the value itself), and what it
/// means. [`KEYS`] is the one list the unknown-key check, the README's table and the
/// manual page `tgknock.conf(5)` are written from.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    pub name: &'static str,
    pub(crate) default: Option<&'static str>,
    pub(crate) shown: &'static str,
    pub meaning: &'static str,
}

impl Key {
    /// A family of keys (`TGKNOCK_ACTION_<NAME>`): the prefix its members share.
    pub(crate) fn family_prefix(&self) -> Option<&'static str> {
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
    TOKEN,
    TOKEN_FILE,
    ALLOWED_USERS,
    GATES,
    OPEN_FOR,
    MAX_OPEN_FOR,
    ALWAYS_ALLOW,
    MAX_AGE,
    NOTIFY_DENIED,
    API_URL,
    PROXY,
    CA_FILE,
    POLL_TIMEOUT,
    IPTABLES,
    IP6TABLES,
    CHAIN,
    STATE_DIR,
    LOG_FILE,
    FIREWALL,
    NFT,
    KNOCK,
    KNOCK_OPEN_FOR,
    KNOCK_GATE,
    TOTP_SECRET_FILE,
    RATE_LIMIT,
    ACTION,
    ACTION_TIMEOUT,
    APPROVE_TIMEOUT,
    APPROVE_EXEMPT,
    APPROVE_USERS,
];

pub(crate) const TOKEN: Key = Key {
    name: "TGKNOCK_TOKEN",
    default: None,
    shown: "",
    meaning: "bot token; prefer `TGKNOCK_TOKEN_FILE`",
};
pub(crate) const TOKEN_FILE: Key = Key {
    name: "TGKNOCK_TOKEN_FILE",
    default: None,
    shown: "",
    meaning: "file holding the token; a warning if group/world readable",
};
pub(crate) const ALLOWED_USERS: Key = Key {
    name: "TGKNOCK_ALLOWED_USERS",
    default: None,
    shown: "— (required by `run` and `check`)",
    meaning: "comma-separated numeric Telegram user ids allowed to command",
};
pub(crate) const GATES: Key = Key {
    name: "TGKNOCK_GATES",
    default: Some("ssh=22/tcp"),
    shown: "",
    meaning: "named port sets: `ssh=22/tcp web=80/tcp,443/tcp mosh=60000:61000/udp`; the first is the default gate",
};
pub(crate) const OPEN_FOR: Key = Key {
    name: "TGKNOCK_OPEN_FOR",
    default: Some("15m"),
    shown: "",
    meaning: "how long an opening lasts when the command names no duration; `0` = until closed (then `TGKNOCK_MAX_OPEN_FOR` must be `0`)",
};
pub(crate) const MAX_OPEN_FOR: Key = Key {
    name: "TGKNOCK_MAX_OPEN_FOR",
    default: Some("1d"),
    shown: "",
    meaning: "the longest opening a chat command may ask for; `0` = no limit",
};
pub(crate) const ALWAYS_ALLOW: Key = Key {
    name: "TGKNOCK_ALWAYS_ALLOW",
    default: Some(""),
    shown: "",
    meaning: "comma-separated addresses/CIDRs (v4 or v6) never blocked, e.g. the LAN",
};
pub(crate) const MAX_AGE: Key = Key {
    name: "TGKNOCK_MAX_AGE",
    default: Some("60s"),
    shown: "",
    meaning: "commands older than this are not executed; the sender is told why",
};
pub(crate) const NOTIFY_DENIED: Key = Key {
    name: "TGKNOCK_NOTIFY_DENIED",
    default: Some("on"),
    shown: "",
    meaning: "tell the allowed users that strangers tried commands (at most one summary every 10 minutes)",
};
pub(crate) const API_URL: Key = Key {
    name: "TGKNOCK_API_URL",
    default: Some("https://api.telegram.org"),
    shown: "",
    meaning: "Bot API base URL (a self-hosted `telegram-bot-api` server, or a test server)",
};
pub(crate) const PROXY: Key = Key {
    name: "TGKNOCK_PROXY",
    default: None,
    shown: "from `ALL_PROXY`/`HTTPS_PROXY`",
    meaning: "`http://`, `socks5://` or `socks5h://` proxy for Telegram; empty = none",
};
pub(crate) const CA_FILE: Key = Key {
    name: "TGKNOCK_CA_FILE",
    default: None,
    shown: "built-in Mozilla roots",
    meaning: "PEM file of root certificates to trust instead of the built-in ones",
};
pub(crate) const POLL_TIMEOUT: Key = Key {
    name: "TGKNOCK_POLL_TIMEOUT",
    default: Some("50s"),
    shown: "",
    meaning: "long-poll timeout (1s–10m; polls last at most a minute, so the rules are checked at least every minute)",
};
pub(crate) const IPTABLES: Key = Key {
    name: "TGKNOCK_IPTABLES",
    default: Some("/usr/sbin/iptables"),
    shown: "",
    meaning: "the IPv4 tool; `iptables-restore` is looked up beside it (`…/iptables-legacy` → `…/iptables-legacy-restore`)",
};
pub(crate) const IP6TABLES: Key = Key {
    name: "TGKNOCK_IP6TABLES",
    default: Some("/usr/sbin/ip6tables"),
    shown: "",
    meaning: "the IPv6 tool; `off` to leave IPv6 alone (with the nft backend too: then its table holds IPv4 rules only)",
};
pub(crate) const CHAIN: Key = Key {
    name: "TGKNOCK_CHAIN",
    default: Some("TGKNOCK"),
    shown: "",
    meaning: "name of the chain tgknock owns",
};
pub(crate) const STATE_DIR: Key = Key {
    name: "TGKNOCK_STATE_DIR",
    default: Some("/var/lib/tgknock"),
    shown: "",
    meaning: "state, pid, heartbeat, lock",
};
pub(crate) const LOG_FILE: Key = Key {
    name: "TGKNOCK_LOG_FILE",
    default: None,
    shown: "`$TGKNOCK_STATE_DIR/tgknock.log`",
    meaning: "where `watchdog` sends the output of a daemon it starts",
};
pub(crate) const FIREWALL: Key = Key {
    name: "TGKNOCK_FIREWALL",
    default: Some("auto"),
    shown: "",
    meaning: "`iptables`, `nft`, or `auto` (iptables if `TGKNOCK_IPTABLES` exists, else nft)",
};
pub(crate) const NFT: Key = Key {
    name: "TGKNOCK_NFT",
    default: Some("/usr/sbin/nft"),
    shown: "",
    meaning: "the nftables tool; tgknock owns the table `inet tgknock` (with iptables-nft, the daemon also reads its chain with it)",
};
pub(crate) const KNOCK: Key = Key {
    name: "TGKNOCK_KNOCK",
    default: Some(""),
    shown: "",
    meaning: "a port sequence, e.g. `7311,2918,9440` (2 to 8 TCP ports, none of a gate's; not adjacent and ascending): kernel rules open the knock gate to a source that knocks it, with no daemon needed",
};
pub(crate) const KNOCK_OPEN_FOR: Key = Key {
    name: "TGKNOCK_KNOCK_OPEN_FOR",
    default: Some("30s"),
    shown: "",
    meaning: "how long a knock opens the gate to the knocker",
};
pub(crate) const KNOCK_GATE: Key = Key {
    name: "TGKNOCK_KNOCK_GATE",
    default: None,
    shown: "the first gate",
    meaning: "the gate a knock opens",
};
pub(crate) const TOTP_SECRET_FILE: Key = Key {
    name: "TGKNOCK_TOTP_SECRET_FILE",
    default: None,
    shown: "empty",
    meaning: "a file holding a base32 TOTP secret (at least 128 bits; `tgknock totp-setup` writes one): when set, every chat command that changes something (`/open`, an Open button, `enable ssh`, `/run`, `/ban`, `/unban`) needs a current code; each code is accepted once, also across a restart; 5 wrong codes within an hour lock that user out of those commands for an hour. A missing, malformed or short file is a configuration error naming it (exit 2)",
};
pub(crate) const RATE_LIMIT: Key = Key {
    name: "TGKNOCK_RATE_LIMIT",
    default: Some(""),
    shown: "",
    meaning: "per gate, new connections per source: `ssh=6/min web=60/min` (units `s`/`sec`, `m`/`min`, `h`/`hour`, `d`/`day`; counts 1–10000). A source beyond it is dropped until its rate falls; the first N pass at once (the burst is the count). A source is an IPv4 address or an IPv6 /64 (one host holds a whole /64). `TGKNOCK_ALWAYS_ALLOW` is exempt. A flood of spoofed sources never turns it into a lockout: when more new sources come than the kernel's table of 65,536 can keep, the limit lapses for some of them, and no one under the limit is dropped",
};
pub(crate) const ACTION: Key = Key {
    name: "TGKNOCK_ACTION_<NAME>",
    default: None,
    shown: "—",
    meaning: "a pre-declared action for `/run NAME`: an absolute program path and its arguments, split on spaces (double quotes group), run without a shell as the daemon's user (a family of keys, one per action, at most 32)",
};
pub(crate) const ACTION_TIMEOUT: Key = Key {
    name: "TGKNOCK_ACTION_TIMEOUT",
    default: Some("30s"),
    shown: "",
    meaning: "an action still running then is killed (its whole process group) and reported as timed out",
};

pub(crate) const APPROVE_TIMEOUT: Key = Key {
    name: "TGKNOCK_APPROVE_TIMEOUT",
    default: Some("60s"),
    shown: "",
    meaning: "how long `approve-login` waits for an allowed user to press Allow or Deny before it refuses the login (1s–10m; keep it below sshd's `LoginGraceTime`)",
};

pub(crate) const APPROVE_EXEMPT: Key = Key {
    name: "TGKNOCK_APPROVE_EXEMPT",
    default: None,
    shown: "`$TGKNOCK_ALWAYS_ALLOW`",
    meaning: "comma-separated addresses/CIDRs whose logins `approve-login` lets through at once, without asking (the LAN, so a dead bot cannot lock the owner out at home); `none` for no exemption",
};

pub(crate) const APPROVE_USERS: Key = Key {
    name: "TGKNOCK_APPROVE_USERS",
    default: None,
    shown: "every user",
    meaning: "comma-separated login names whose logins `approve-login` asks about; the logins of other users pass at once",
};

/// `TGKNOCK_ACTION_<NAME>`: the family of keys, one per pre-declared action.
pub(crate) const ACTION_PREFIX: &str = "TGKNOCK_ACTION_";

/// Whether `key` is a key of the contract: one of [`KEYS`], or a member of a family.
pub(super) fn known_key(key: &str) -> bool {
    KEYS.iter().any(|k| match k.family_prefix() {
        // An empty or odd name is the family's own error, with its reason.
        Some(prefix) => key.starts_with(prefix),
        None => k.name == key,
    })
}
/// The known key nearest to a misspelt one, for "did you mean".
pub(super) fn nearest_key(key: &str) -> Option<&'static str> {
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
