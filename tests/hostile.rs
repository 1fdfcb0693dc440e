//! Hostile chat input, generated. (a) The parser over tens of thousands of messages —
//! unicode tricks (RTL, zero-width, lookalikes, emoji), control characters and NULs,
//! 4096-character texts, shell metacharacters, iptables words, bad addresses and
//! durations, every gate name misspelt, other bots' commands, mixed case — judged against
//! an independent oracle of the contract's grammar. (b) The real daemon fed ~2,000 such
//! messages from the owner and from strangers, in private and in a group, judged by what
//! it replied, what it saved, and what reached the (fake) iptables.
//!
//! The inputs come from a seeded PRNG. The seed is printed at the start and with every
//! failure; `TGKNOCK_SEED=N cargo test --test integration hostile` replays a run.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};

use serde_json::{Value, json};
use tgknock::base::duration::Length;
use tgknock::base::gate::{Gate, parse_gates};
use tgknock::chat::command::{self, Command, Parsed};

use crate::support::env::assert_no_secret;
use crate::support::{BOT, Env, OWNER, SECRET, TOKEN, now, wait_for};

/// The longest opening anything may ask for (`duration::MAX_SECS`): 366 days.
const YEAR: u64 = 366 * 86_400;
const GATES: &str = "ssh=22/tcp web=80/tcp,443/tcp mosh=60000:61000/udp";

// ---------------------------------------------------------------------------------------
// A small deterministic PRNG (splitmix64) and the seed.

pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    pub fn word(&mut self, items: &[&'static str]) -> &'static str {
        items[self.below(items.len())]
    }
}

/// `TGKNOCK_SEED`, or one from the clock (so each run tries new inputs).
fn seed(what: &str) -> u64 {
    let seed = match std::env::var("TGKNOCK_SEED") {
        Ok(s) => s.trim().parse().expect("TGKNOCK_SEED must be a number"),
        Err(_) => {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap();
            (t.as_nanos() as u64) ^ (u64::from(std::process::id()) << 32)
        }
    };
    eprintln!("{what}: seed {seed} (replay with TGKNOCK_SEED={seed})");
    seed
}

/// Prints the seed again when the test fails, after the failure's own message.
struct SeedNote(&'static str, u64);

impl Drop for SeedNote {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "{} failed with seed {}: replay with TGKNOCK_SEED={}",
                self.0, self.1, self.1
            );
        }
    }
}

/// A message for a failure report: escaped, and cut if long.
fn show(text: &str) -> String {
    let n = text.chars().count();
    if n <= 200 {
        format!("{text:?}")
    } else {
        let head: String = text.chars().take(200).collect();
        format!("{head:?}… ({n} chars, {} bytes)", text.len())
    }
}

// ---------------------------------------------------------------------------------------
// The generator.

/// Separators the parser must read as whitespace.
const SEPARATORS: &[&str] = &[
    " ", " ", " ", "  ", "\t", "\n", "\r\n", "\u{a0}", "\u{3000}", "\u{2028}", "\u{85}",
    "\u{2003}", "\u{c}",
];
/// Invisible, bidi and control characters, none of them whitespace.
const INVISIBLE: &[&str] = &[
    "\u{200b}",
    "\u{200c}",
    "\u{200d}",
    "\u{2060}",
    "\u{feff}",
    "\u{200e}",
    "\u{200f}",
    "\u{202e}",
    "\u{202d}",
    "\u{2066}",
    "\u{2069}",
    "\u{180e}",
    "\u{0}",
    "\u{1}",
    "\u{7}",
    "\u{1b}",
    "\u{1b}[2J",
    "\u{7f}",
    "\u{9b}",
    "\u{ad}",
    "\u{34f}",
];
/// Lookalikes of command and gate names, and characters that change under case mapping.
const LOOKALIKES: &[&str] = &[
    "ѕѕһ",
    "ｓｓｈ",
    "ＯＰＥＮ",
    "ореn",
    "ѡеb",
    "\u{212a}",
    "ſsh",
    "İ",
    "ß",
    "／open",
    "∕open",
    "⁄close",
    "SSH\u{301}",
    "s\u{0}sh",
    "e\u{301}",
    "ｅｎａｂｌｅ ｓｓｈ",
    "ᴇɴᴀʙʟᴇ",
    "٥m",
    "5٥m",
    "١.٢.٣.٤",
];
const EMOJI: &[&str] = &[
    "🔥",
    "👨‍👩‍👧",
    "🏳️‍🌈",
    "🇺🇦",
    "😀",
    "🤖",
    "1️⃣",
    "\u{1F600}\u{FE0F}",
];
/// Words that would do harm if they reached a shell or iptables' arguments. The daemon
/// test looks for the distinctive ones (`4444`, `pwned`, `reboot`, `ACCEPT`…) in every
/// call of the fake iptables.
const SHELL: &[&str] = &[
    ";touch /tmp/tgk-pwned",
    ";touch",
    "|",
    "||",
    "&",
    "&&",
    "$(reboot)",
    "`reboot`",
    "'",
    "\"",
    "\\",
    "$IFS",
    "${PATH}",
    ">/etc/passwd",
    "<",
    "*",
    "?",
    "~",
    "!",
    "#",
    "%s%n",
    "\\n-A INPUT -j ACCEPT",
    "%0a",
    "ssh;touch",
    "ssh|reboot",
    "ssh&&reboot",
];
const IPTABLES: &[&str] = &[
    "--dport",
    "4444",
    "--dport 4444",
    "-j",
    "ACCEPT",
    "-j ACCEPT",
    "-A",
    "INPUT",
    "-A INPUT",
    "-A INPUT -p tcp --dport 4444 -j ACCEPT",
    "-F",
    "-X",
    "-I",
    "-D",
    "-P",
    "-s",
    "--comment",
    "*filter",
    "COMMIT",
    "-m",
    "conntrack",
    "--ctstate",
    "--dport=4444",
];
const ADDRESSES: &[&str] = &[
    "0.0.0.0/0",
    "::/0",
    "256.1.1.1",
    "1.2.3.4/33",
    "::ffff:1.2.3.4",
    "1.2.3.4",
    "203.0.113.7",
    "10.0.0.0/8",
    "10.1.2.3/8",
    "2001:db8::1",
    "2001:DB8::/32",
    "fe80::1%eth0",
    "[::1]",
    "1.2.3.4/0",
    "1.2.3.4/032",
    "1.2.3.4/0032",
    "01.2.3.4",
    "1.2.3",
    "1.2.3.4.5",
    "::",
    "::1",
    "0.0.0.0",
    "255.255.255.255/32",
    "1.2.3.4/-1",
    "1.2.3.4/+8",
    "1.2.3.4;touch",
    "1.2.3.4/24;id",
    "2001:db8::/129",
    "1.2.3.4/",
    "::ffff:0.0.0.0/96",
    "0.0.0.0/1",
    "128.0.0.0/1",
    "::/1",
    "1:2:3:4:5:6:7:8",
    "1:2:3:4:5:6:7:8:9",
    "0000:0000:0000:0000:0000:ffff:255.255.255.255/128",
    "1.2.3.4/32/32",
    "1.2.3.4:22",
    "[2001:db8::1]:22",
    "0x7f.0.0.1",
    "127.1",
    "1.2.3.4\u{0}",
];
const DURATIONS: &[&str] = &[
    "0",
    "00",
    "-5",
    "99999999999999999999",
    "18446744073709551615",
    "18446744073709551616s",
    "1h1h",
    "15m",
    "15M",
    "90s",
    "2h",
    "1d",
    "366d",
    "367d",
    "400d",
    "1h30m",
    "30m1h",
    "5",
    "45",
    "527040",
    "527041",
    "0m",
    "1.5h",
    "+5m",
    "5mm",
    "1d0h0m1s",
    "1D2H3M4S",
    "5x",
    "m",
    "0000000000000000000000001d",
    "1w",
    "1y",
    "1_000s",
    "31622400s",
    "31622401s",
    "8784h",
    "8785h",
];
/// Durations and addresses that are valid, for commands that should work.
const GOOD_DURATIONS: &[&str] = &[
    "15m", "90s", "2h", "1d", "1h30m", "45", "30", "1d2h3m4s", "2D", "120m", "0", "3h", "40m",
];
const GOOD_ADDRESSES: &[&str] = &[
    "1.2.3.4",
    "203.0.113.7",
    "10.1.2.3/8",
    "2001:db8::1",
    "2001:DB8::/32",
    "::ffff:1.2.3.4",
    "192.168.0.0/16",
    "fd00::/8",
    "1.2.3.4/32",
    "198.51.100.0/24",
];
const NAMES: &[&str] = &[
    "open", "close", "status", "help", "start", "run", "OPEN", "Open", "oPeN", "CLOSE", "Status",
    "opem", "opne", "ope", "openn", "closee", "clos", "stop", "enable", "", "@", "open@", "start@",
];

/// `word` with its ASCII letters' case flipped at random (sometimes).
fn case_mix(rng: &mut Rng, word: &str) -> String {
    match rng.below(4) {
        0 => word.to_ascii_uppercase(),
        1 => word
            .chars()
            .map(|c| {
                if rng.one_in(2) {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect(),
        _ => word.to_string(),
    }
}

fn separator(rng: &mut Rng) -> &'static str {
    if rng.one_in(3) {
        rng.word(SEPARATORS)
    } else {
        " "
    }
}

/// How a command is addressed: not at all, to us in some case, or to someone else.
fn addressing(rng: &mut Rng, bot: &str) -> String {
    match rng.below(14) {
        0..=6 => String::new(),
        7 => format!("@{bot}"),
        8 => format!("@{}", bot.to_ascii_lowercase()),
        9 => format!("@{}", bot.to_ascii_uppercase()),
        10 => "@otherbot".into(),
        11 => format!("@{bot}x"),
        12 => format!("@{}", &bot[..bot.len() - 1]),
        _ => rng
            .pick(&[
                "@",
                "@@",
                &format!("@{bot}@{bot}"),
                "@other_bot",
                "@\u{200b}",
            ])
            .to_string(),
    }
}

fn random_v4(rng: &mut Rng) -> String {
    let mut s = format!(
        "{}.{}.{}.{}",
        rng.below(256),
        rng.below(256),
        rng.below(256),
        rng.below(256)
    );
    if rng.one_in(2) {
        s.push_str(&format!("/{}", rng.below(40)));
    }
    s
}

fn random_v6(rng: &mut Rng) -> String {
    let groups: Vec<String> = (0..8)
        .map(|_| format!("{:x}", rng.next_u64() as u16))
        .collect();
    let mut s = if rng.one_in(2) {
        format!("{}::{}", groups[0], groups[7])
    } else {
        groups.join(":")
    };
    if rng.one_in(2) {
        s.push_str(&format!("/{}", rng.below(140)));
    }
    s
}

/// A command built the way the contract describes, in a random form.
fn well_formed(rng: &mut Rng, gates: &[Gate], bot: &str) -> String {
    let name = *rng.pick(&[
        "open", "open", "open", "close", "close", "status", "help", "start", "run",
    ]);
    let mut words = vec![format!("/{}{}", case_mix(rng, name), addressing(rng, bot))];
    let gate = |rng: &mut Rng| {
        let g = rng.pick(gates).name.as_str();
        case_mix(rng, g)
    };
    match name {
        "open" => {
            let mut args = Vec::new();
            if rng.one_in(2) {
                args.push(gate(rng));
            }
            if rng.one_in(2) {
                args.push(rng.word(GOOD_DURATIONS).to_string());
            }
            if rng.one_in(2) {
                args.push(match rng.below(3) {
                    0 => random_v4(rng),
                    1 => random_v6(rng),
                    _ => rng.word(GOOD_ADDRESSES).to_string(),
                });
            }
            while !args.is_empty() {
                let i = rng.below(args.len());
                words.push(args.swap_remove(i));
            }
        }
        "close" => match rng.below(3) {
            0 => {}
            1 => words.push(case_mix(rng, "all")),
            _ => words.push(gate(rng)),
        },
        "help" | "start" if rng.one_in(3) => words.push(soup_word(rng, gates)),
        "run" => match rng.below(3) {
            0 => {}
            1 => {
                let name = rng
                    .word(&["backup", "Restart_Nginx", "x", "a1_2"])
                    .to_string();
                words.push(case_mix(rng, &name));
            }
            _ => words.push(soup_word(rng, gates)),
        },
        _ => {}
    }
    join(rng, &words)
}

fn join(rng: &mut Rng, words: &[String]) -> String {
    let mut s = String::new();
    if rng.one_in(10) {
        s.push_str(separator(rng));
    }
    for (i, w) in words.iter().enumerate() {
        if i > 0 {
            s.push_str(separator(rng));
        }
        s.push_str(w);
    }
    if rng.one_in(10) {
        s.push_str(separator(rng));
    }
    s
}

/// One hostile word.
fn soup_word(rng: &mut Rng, gates: &[Gate]) -> String {
    match rng.below(12) {
        0 => rng.word(SHELL).to_string(),
        1 => rng.word(IPTABLES).to_string(),
        2 | 3 => rng.word(ADDRESSES).to_string(),
        4 | 5 => rng.word(DURATIONS).to_string(),
        6 => {
            let g = rng.pick(gates).name.to_string();
            let m = misspellings(&g);
            rng.pick(&m).clone()
        }
        7 => {
            let g = rng.pick(gates).name.to_string();
            case_mix(rng, &g)
        }
        8 => rng.word(LOOKALIKES).to_string(),
        9 => rng.word(EMOJI).to_string(),
        10 => (0..1 + rng.below(12)).map(|_| random_char(rng)).collect(),
        _ => match rng.below(3) {
            0 => random_v4(rng),
            1 => random_v6(rng),
            _ => case_mix(rng, "all"),
        },
    }
}

/// `/name` and hostile words.
fn soup(rng: &mut Rng, gates: &[Gate], bot: &str) -> String {
    let name = rng.word(NAMES);
    let mut words = vec![format!("/{}{}", case_mix(rng, name), addressing(rng, bot))];
    for _ in 0..rng.below(6) {
        words.push(soup_word(rng, gates));
    }
    join(rng, &words)
}

fn random_char(rng: &mut Rng) -> char {
    loop {
        let cp = match rng.below(12) {
            0..=3 => 0x20 + rng.below(0x5f) as u32,
            4 => rng.below(0x20) as u32,
            5 => 0x80 + rng.below(0x180) as u32,
            6 => 0x300 + rng.below(0x70) as u32,
            7 => 0x590 + rng.below(0x170) as u32,
            8 => 0x2000 + rng.below(0x70) as u32,
            9 => 0xFE00 + rng.below(0x200) as u32,
            10 => 0x1F300 + rng.below(0x800) as u32,
            _ => rng.below(0x11_0000) as u32,
        };
        if let Some(c) = char::from_u32(cp) {
            return c;
        }
    }
}

fn random_text(rng: &mut Rng, chars: usize) -> String {
    let mut s = String::new();
    if rng.one_in(2) {
        s.push('/');
    }
    while s.chars().count() < chars {
        match rng.below(6) {
            0 => s.push_str(rng.word(INVISIBLE)),
            1 => s.push_str(rng.word(EMOJI)),
            2 => s.push_str(separator(rng)),
            _ => s.push(random_char(rng)),
        }
    }
    s
}

/// A few edits to `text`: characters inserted, deleted, replaced, case flipped.
fn mutate(rng: &mut Rng, text: &str) -> String {
    let mut c: Vec<char> = text.chars().collect();
    for _ in 0..1 + rng.below(3) {
        let at = rng.below(c.len() + 1);
        let new = match rng.below(4) {
            0 => random_char(rng),
            1 => *rng.pick(&[' ', '/', '@', '.', ':', '-', '0', '5', 'm', 's', 'h', 'd']),
            2 => rng.word(INVISIBLE).chars().next().unwrap(),
            _ => rng.word(LOOKALIKES).chars().next().unwrap(),
        };
        match rng.below(4) {
            0 => c.insert(at, new),
            1 if at < c.len() => {
                c.remove(at);
            }
            2 if at < c.len() => c[at] = new,
            _ if at < c.len() => {
                let x = c[at];
                c[at] = if x.is_ascii_lowercase() {
                    x.to_ascii_uppercase()
                } else {
                    x.to_ascii_lowercase()
                };
            }
            _ => c.push(new),
        }
    }
    c.into_iter().collect()
}

/// Plain text around the first version's `enable ssh` / `disable ssh`.
fn plain(rng: &mut Rng) -> String {
    let core = *rng.pick(&[
        "enable ssh",
        "disable ssh",
        "Enable SSH",
        "DISABLE ssh",
        "enable\u{200b}ssh",
        "enable-ssh",
        "enable_ssh",
        "enablessh",
        "enable sshd",
        "enable ssh, disable ssh",
        "re-enable ssh",
        "enable ѕsh",
        "ｅｎａｂｌｅ ｓｓｈ",
        "enable\nssh",
        "enable\u{0}ssh",
        "enable ssh ssh",
        "disable  \t ssh",
        "enable web",
        "enable",
        "ssh enable",
        "/enable ssh",
        "enable ssh;touch /tmp/tgk-pwned",
        "İenable ssh",
        "enableſsh",
    ]);
    let before = *rng.pick(&["", "please ", "hey bot, ", "🔥 ", "\u{202e}", "ok: ", "x"]);
    let after = *rng.pick(&["", " now", " please", "!", " 🔥", "\u{200b}", " -j ACCEPT"]);
    format!("{before}{core}{after}")
}

/// Texts at and around the sizes that matter: Telegram's 4096 characters, and the
/// parser's 16 KiB cut.
fn long(rng: &mut Rng, gates: &[Gate], bot: &str) -> String {
    match rng.below(7) {
        0 => random_text(rng, 4096),
        1 => format!("/open {}", "1".repeat(4090)),
        2 => format!("/open {}", "1.".repeat(2045)),
        3 => {
            let cmd = well_formed(rng, gates, bot);
            let pad = 16_384usize.saturating_sub(cmd.len()) + rng.below(3);
            // Padding after the command: up to 16384 bytes in all it is still read.
            format!("{cmd}{}", " ".repeat(pad.saturating_sub(1)))
        }
        4 => {
            let s: String = (0..4096)
                .map(|_| *rng.pick(&['🔥', 'a', ' ', '/']))
                .collect();
            s
        }
        5 => format!("please {} enable ssh", "x ".repeat(2040)),
        _ => {
            let mut s = soup(rng, gates, bot);
            while s.chars().count() < 4096 {
                s.push(' ');
                s.push_str(&soup_word(rng, gates));
            }
            s
        }
    }
}

/// Every spelling of `name` one edit away (deletion, insertion, substitution,
/// transposition), over letters, digits, punctuation and a few lookalikes.
fn misspellings(name: &str) -> Vec<String> {
    let alphabet: Vec<char> =
        "abcdefghijklmnopqrstuvwxyz0123456789-_.:/@ABCDEFGHIJKLMNOPQRSTUVWXYZ"
            .chars()
            .chain(['ѕ', 'һ', 'ｓ', '\u{200b}', '\u{0}', 'é', 'ß', 'K', 'ſ'])
            .collect();
    let c: Vec<char> = name.chars().collect();
    let mut out = BTreeSet::new();
    for i in 0..c.len() {
        let mut d = c.clone();
        d.remove(i);
        out.insert(d.iter().collect::<String>());
        if i + 1 < c.len() {
            let mut t = c.clone();
            t.swap(i, i + 1);
            out.insert(t.iter().collect());
        }
    }
    for &a in &alphabet {
        for i in 0..=c.len() {
            let mut s = c.clone();
            s.insert(i, a);
            out.insert(s.iter().collect::<String>());
            if i < c.len() {
                let mut s = c.clone();
                s[i] = a;
                out.insert(s.iter().collect());
            }
        }
    }
    out.remove(name);
    out.into_iter().collect()
}

/// One generated message.
fn message(rng: &mut Rng, gates: &[Gate], bot: &str) -> String {
    match rng.below(20) {
        0..=4 => well_formed(rng, gates, bot),
        5..=8 => {
            let w = well_formed(rng, gates, bot);
            mutate(rng, &w)
        }
        9..=12 => soup(rng, gates, bot),
        13 | 14 => {
            let n = 1 + rng.below(120);
            random_text(rng, n)
        }
        15 => long(rng, gates, bot),
        16 | 17 => plain(rng),
        _ => {
            let g = rng.pick(gates).name.to_string();
            let m = misspellings(&g);
            let bad = rng.pick(&m).clone();
            let form = *rng.pick(&[
                "/open {}",
                "/close {}",
                "/open 5m {} 1.2.3.4",
                "/open {} ssh",
            ]);
            form.replace("{}", &bad)
        }
    }
}

// ---------------------------------------------------------------------------------------
// The oracle: the contract's grammar, written again from DESIGN.md without the parser.

/// What a message must come out as.
#[derive(Debug, PartialEq, Eq)]
enum Want {
    /// This command, and nothing else.
    Cmd(Expect),
    /// Addressed to another bot: ignored.
    OtherBot,
    /// Not a command (usage, an unknown command, or chatter).
    No,
}

/// A command in a form independent of the crate's types (addresses as masked IP + prefix).
#[derive(Debug, PartialEq, Eq)]
enum Expect {
    Open {
        gate: String,
        length: Length,
        from: Option<(IpAddr, u8)>,
    },
    Close(Option<String>),
    Status,
    Help,
    /// Commands the generator never writes (`/ban`, codes): never what the grammar wants.
    Other(String),
    Run(Option<String>),
}

fn expect_of(c: &Command) -> Expect {
    match c {
        Command::Open { gate, length, from } => Expect::Open {
            gate: gate.to_string(),
            length: *length,
            from: from.map(|c| (c.addr(), c.prefix())),
        },
        Command::Close { gate } => Expect::Close(gate.as_ref().map(|g| g.to_string())),
        Command::Status => Expect::Status,
        Command::Help => Expect::Help,
        Command::Run { name } => Expect::Run(name.clone()),
        other => Expect::Other(format!("{other:?}")),
    }
}

fn oracle(text: &str, bot: &str, gates: &[Gate]) -> Want {
    // Telegram sends at most 4096 characters, each at most 4 bytes.
    if text.len() > 4 * 4096 {
        return Want::No;
    }
    let words: Vec<&str> = text
        .split(char::is_whitespace)
        .filter(|w| !w.is_empty())
        .collect();
    let Some(first) = words.first() else {
        return Want::No;
    };
    let Some(slashed) = first.strip_prefix('/') else {
        return plain_oracle(text, gates);
    };
    let (name, to) = match slashed.find('@') {
        Some(at) => (&slashed[..at], Some(&slashed[at + 1..])),
        None => (slashed, None),
    };
    if to.is_some_and(|t| !t.eq_ignore_ascii_case(bot)) {
        return Want::OtherBot;
    }
    let args = &words[1..];
    let gate_named = |w: &str| {
        gates
            .iter()
            .find(|g| g.name.as_str().eq_ignore_ascii_case(w))
            .map(|g| g.name.to_string())
    };
    let is = |n: &str| name.eq_ignore_ascii_case(n);
    let cmd = if is("open") {
        open_oracle(args, gates)
    } else if is("close") {
        match args {
            [] => Some(Expect::Close(None)),
            [a] if a.eq_ignore_ascii_case("all") => Some(Expect::Close(None)),
            [a] => gate_named(a).map(|g| Expect::Close(Some(g))),
            _ => None,
        }
    } else if is("status") {
        args.is_empty().then_some(Expect::Status)
    } else if is("help") || is("start") {
        Some(Expect::Help)
    } else if is("run") {
        match args {
            [] => Some(Expect::Run(None)),
            [a] if (1..=32).contains(&a.len())
                && a.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') =>
            {
                Some(Expect::Run(Some(a.to_ascii_lowercase())))
            }
            _ => None,
        }
    } else {
        None
    };
    cmd.map_or(Want::No, Want::Cmd)
}

fn open_oracle(args: &[&str], gates: &[Gate]) -> Option<Expect> {
    if args.len() > 3 {
        return None;
    }
    let (mut gate, mut secs, mut from) = (None, None, None);
    for a in args {
        // Arguments with control characters or over 64 bytes are refused outright.
        if a.len() > 64 || a.chars().any(char::is_control) {
            return None;
        }
        if let Some(g) = gates
            .iter()
            .find(|g| g.name.as_str().eq_ignore_ascii_case(a))
        {
            if gate.replace(g.name.to_string()).is_some() {
                return None;
            }
        } else if let Some(s) = duration_oracle(a) {
            if secs.replace(s).is_some() {
                return None;
            }
        } else if let Some(c) = cidr_oracle(a) {
            if from.replace(c).is_some() {
                return None;
            }
        } else {
            return None;
        }
    }
    Some(Expect::Open {
        gate: gate.unwrap_or_else(|| gates[0].name.to_string()),
        length: match secs {
            None => Length::Default,
            Some(0) => Length::UntilClosed,
            Some(s) => Length::Secs(s),
        },
        from,
    })
}

/// Decimal digits as a number, saturating far above a year of seconds.
fn digits(s: &str) -> u128 {
    s.bytes().fold(0u128, |n, b| {
        n.saturating_mul(10)
            .saturating_add(u128::from(b - b'0'))
            .min(u128::MAX / 2)
    })
}

/// Chat durations: `0`, a bare number of minutes, or `[Nd][Nh][Nm][Ns]` (at least one, in
/// that order, any case); at most 366 days.
fn duration_oracle(a: &str) -> Option<u64> {
    let b = a.as_bytes();
    if b.is_empty() || !b[0].is_ascii_digit() {
        return None;
    }
    let max = u128::from(YEAR);
    if b.iter().all(u8::is_ascii_digit) {
        let s = digits(a).saturating_mul(60);
        return (s <= max).then_some(s as u64);
    }
    let units = [(b'd', 86_400u128), (b'h', 3_600), (b'm', 60), (b's', 1)];
    let (mut rest, mut next_unit, mut total) = (b, 0usize, 0u128);
    while !rest.is_empty() {
        let n = rest.iter().take_while(|c| c.is_ascii_digit()).count();
        let unit = rest.get(n)?.to_ascii_lowercase();
        if n == 0 {
            return None;
        }
        let k = next_unit + units[next_unit..].iter().position(|(u, _)| *u == unit)?;
        let number = digits(std::str::from_utf8(&rest[..n]).ok()?);
        total = total.saturating_add(number.saturating_mul(units[k].1));
        next_unit = k + 1;
        rest = &rest[n + 1..];
    }
    (total <= max).then_some(total as u64)
}

/// An IPv4/IPv6 address, or a block with a prefix of 1 to 3 digits that is not `/0`;
/// host bits are cleared.
fn cidr_oracle(a: &str) -> Option<(IpAddr, u8)> {
    let (ip, prefix) = match a.find('/') {
        Some(at) => (&a[..at], Some(&a[at + 1..])),
        None => (a, None),
    };
    let mut ip: IpAddr = ip.parse().ok()?;
    let mut bits: u32 = if ip.is_ipv4() { 32 } else { 128 };
    let mut p = match prefix {
        None => bits,
        Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => {
            p.parse().ok()?
        }
        Some(_) => return None,
    };
    // An IPv4-mapped IPv6 address stands for the IPv4 host (prefix 96..=128 -> 0..=32).
    if let IpAddr::V6(v) = ip
        && let Some(v4) = v.to_ipv4_mapped()
    {
        if !(96..=128).contains(&p) {
            return None;
        }
        ip = IpAddr::V4(v4);
        bits = 32;
        p -= 96;
    }
    if p == 0 || p > bits {
        return None;
    }
    let masked = match ip {
        IpAddr::V4(v) => IpAddr::from((u32::from(v) >> (32 - p) << (32 - p)).to_be_bytes()),
        IpAddr::V6(v) => {
            let x = u128::from(v);
            let x = if p == 128 {
                x
            } else {
                x >> (128 - p) << (128 - p)
            };
            IpAddr::from(x.to_be_bytes())
        }
    };
    Some((masked, p as u8))
}

/// Plain text: the whole message is `enable ssh` (or `disable ssh`) in any ASCII case,
/// words separated by whitespace, with only whitespace and punctuation around it.
fn plain_oracle(text: &str, gates: &[Gate]) -> Want {
    if !gates.iter().any(|g| g.name == "ssh") {
        return Want::No;
    }
    let around =
        |c: &char| c.is_whitespace() || c.is_ascii_punctuation() || "¡¿…«»“”‘’„‚–—".contains(*c);
    let chars: Vec<char> = text.chars().collect();
    let (Some(first), Some(last)) = (
        chars.iter().position(|c| !around(c)),
        chars.iter().rposition(|c| !around(c)),
    ) else {
        return Want::No;
    };
    let mut words: Vec<String> = Vec::new();
    let mut word = String::new();
    for c in &chars[first..=last] {
        if c.is_whitespace() {
            if !word.is_empty() {
                words.push(std::mem::take(&mut word));
            }
        } else {
            word.push(c.to_ascii_lowercase());
        }
    }
    words.push(word);
    match words
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["enable", "ssh"] => Want::Cmd(Expect::Open {
            gate: "ssh".into(),
            length: Length::Default,
            from: None,
        }),
        ["disable", "ssh"] => Want::Cmd(Expect::Close(Some("ssh".into()))),
        _ => Want::No,
    }
}

/// The command written out again in its plainest form.
fn render(c: &Command) -> String {
    match c {
        Command::Open { gate, length, from } => {
            let mut s = format!("/open {gate}");
            match length {
                Length::Default => {}
                Length::Secs(n) => s.push_str(&format!(" {n}s")),
                Length::UntilClosed => s.push_str(" 0"),
            }
            if let Some(f) = from {
                s.push_str(&format!(" {f}"));
            }
            s
        }
        Command::Close { gate: None } => "/close all".into(),
        Command::Close { gate: Some(g) } => format!("/close {g}"),
        Command::Status => "/status".into(),
        Command::Help => "/help".into(),
        Command::Ban { addr, .. } => format!("/ban {addr}"),
        Command::Unban { addr } => format!("/unban {addr}"),
        Command::WithCode { code, command } => {
            format!("{} {code}", render(&command.clone().into()))
        }
        Command::Code(code) => code.clone(),
        Command::Run { name: None } => "/run".into(),
        Command::Run { name: Some(n) } => format!("/run {n}"),
    }
}

#[derive(Default, Debug)]
struct Tally {
    messages: usize,
    open: usize,
    open_from: usize,
    close: usize,
    status: usize,
    help: usize,
    run: usize,
    invalid: usize,
    unknown: usize,
    ignore: usize,
    other_bot: usize,
    long: usize,
}

/// Parses one message and holds the result to the oracle and the contract's invariants.
fn check(text: &str, bot: &str, gates: &[Gate], seed: u64, t: &mut Tally) {
    let fail = |why: String| -> ! {
        panic!(
            "seed {seed}: {why}\n  message: {}\n  bot: {bot}, gates: {}",
            show(text),
            gates
                .iter()
                .map(|g| g.name.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        )
    };
    let got = match catch_unwind(AssertUnwindSafe(|| command::parse(text, bot, gates))) {
        Ok(p) => p,
        Err(_) => fail("command::parse panicked".into()),
    };
    t.messages += 1;
    if text.chars().count() >= 4096 {
        t.long += 1;
    }
    let want = oracle(text, bot, gates);
    match &got {
        Parsed::Command(c) => {
            if let Command::Open { gate, length, from } = c {
                t.open += 1;
                if !gates.iter().any(|g| &g.name == gate) {
                    fail(format!("opened {gate:?}, which is not a configured gate"));
                }
                if let Length::Secs(s) = length
                    && (*s == 0 || *s > YEAR)
                {
                    fail(format!("opening of {s} s: outside 1 s..366 d"));
                }
                if let Some(f) = from {
                    t.open_from += 1;
                    let max = if f.addr().is_ipv4() { 32 } else { 128 };
                    if f.prefix() == 0 || f.prefix() > max {
                        fail(format!("opening to {f}: prefix {}", f.prefix()));
                    }
                    let again: Result<tgknock::base::addr::Cidr, _> = f.to_string().parse();
                    if again.as_ref() != Ok(f) {
                        fail(format!("address {f} does not parse back: {again:?}"));
                    }
                }
            }
            match c {
                Command::Close { .. } => t.close += 1,
                Command::Status => t.status += 1,
                Command::Help => t.help += 1,
                Command::Run { .. } => t.run += 1,
                _ => {}
            }
            if want != Want::Cmd(expect_of(c)) {
                fail(format!("parsed as {c:?}; the grammar says {want:?}"));
            }
            let plain = render(c);
            let back = command::parse(&plain, bot, gates);
            if back != got {
                fail(format!("{c:?} written as {plain:?} parses as {back:?}"));
            }
        }
        other => {
            match other {
                Parsed::Invalid(reason) | Parsed::Unknown(reason) => {
                    if matches!(other, Parsed::Invalid(_)) {
                        t.invalid += 1;
                    } else {
                        t.unknown += 1;
                    }
                    if reason.trim().is_empty() {
                        fail(format!("{other:?} without a reason"));
                    }
                }
                _ => t.ignore += 1,
            }
            match want {
                Want::Cmd(e) => fail(format!(
                    "a well-formed command ({e:?}) came out as {other:?}"
                )),
                Want::OtherBot => {
                    t.other_bot += 1;
                    if *other != Parsed::Ignore {
                        fail(format!("addressed to another bot, yet {other:?}"));
                    }
                }
                Want::No => {}
            }
        }
    }
}

/// Gate sets to parse against: the contract's example, gates named like duration units,
/// a single gate; and two bot names.
fn gate_sets() -> Vec<(Vec<Gate>, &'static str)> {
    vec![
        (parse_gates(GATES).unwrap(), "KnockBot"),
        (
            parse_gates("web=80/tcp s=2222/tcp h=1/udp d-1=5/tcp x_9=9/udp m=7/tcp").unwrap(),
            BOT,
        ),
        (parse_gates("ssh=22/tcp").unwrap(), "k"),
    ]
}

#[test]
fn parser_holds_on_generated_messages() {
    let seed = seed("parser_holds_on_generated_messages");
    let _note = SeedNote("parser_holds_on_generated_messages", seed);
    let sets = gate_sets();
    let mut rng = Rng::new(seed);
    let mut t = Tally::default();
    for i in 0..24_000 {
        let (gates, bot) = &sets[i % sets.len()];
        let text = message(&mut rng, gates, bot);
        check(&text, bot, gates, seed, &mut t);
    }
    let generated = t.messages;
    // Every one-edit misspelling of every gate name, in four command forms.
    for (gates, bot) in &sets {
        for g in gates {
            for m in misspellings(g.name.as_str()) {
                for form in [
                    "/open {}",
                    "/close {}",
                    "/open 5m {} 1.2.3.4",
                    "/OPEN@{b} 2h {}",
                ] {
                    let text = form.replace("{b}", bot).replace("{}", &m);
                    check(&text, bot, gates, seed, &mut t);
                }
            }
        }
    }
    // The size limits, exactly.
    let (gates, bot) = &sets[0];
    for extra in 0..3 {
        let text = format!("/open{}web", " ".repeat(16_384 - 8 - 1 + extra));
        check(&text, bot, gates, seed, &mut t);
    }
    eprintln!(
        "parser: {} messages ({generated} generated, {} at 4096+ chars): {} open ({} to an address), {} close, {} status, {} help, {} invalid, {} unknown, {} ignored ({} for another bot)",
        t.messages,
        t.long,
        t.open,
        t.open_from,
        t.close,
        t.status,
        t.help,
        t.invalid,
        t.unknown,
        t.ignore,
        t.other_bot
    );
    assert!(t.messages >= 20_000, "only {} messages", t.messages);
    // The generator must reach every outcome, or the checks above prove little.
    for (what, n) in [
        ("open", t.open),
        ("open to an address", t.open_from),
        ("close", t.close),
        ("status", t.status),
        ("help", t.help),
        ("run", t.run),
        ("invalid", t.invalid),
        ("unknown", t.unknown),
        ("another bot's", t.other_bot),
        ("long", t.long),
    ] {
        assert!(n >= 100, "seed {seed}: only {n} {what} messages: {t:?}");
    }
}

// ---------------------------------------------------------------------------------------
// The whole daemon.

const GROUP: i64 = -1_001_234_567_890;
/// Strangers: a pool of ids, one of them named with the bot token.
const STRANGERS: std::ops::Range<i64> = 222_000_000..222_000_040;
const TOKEN_NAMED: i64 = 222_000_007;

/// Words that must never reach the firewall tools, from the generator's hostile lists.
const MARKERS: &[&str] = &[
    "4444", "pwned", "reboot", "ACCEPT", "touch", "passwd", "IFS", "PATH", "$(", "`", ";", "|",
    "&", "\\", "'", "\"", "%", "~", "!", "?", "\u{0}",
];

/// The daemon's side of what one owner message should do.
#[derive(Default, Debug)]
struct Model {
    /// gate -> sources (None: everyone) of its openings.
    openings: BTreeMap<String, BTreeSet<Option<String>>>,
    /// Commands that changed the set of openings (each may rewrite each family once).
    changes: usize,
    refused: usize,
    stale: usize,
    not_done: usize,
    /// Sources as iptables prints them, of every opening that was carried out or tried.
    sources: BTreeSet<String>,
}

impl Model {
    fn execute(&mut self, c: &Command, max_open_for: u64) {
        let before = self.openings.clone();
        match c {
            Command::Open { gate, length, from } => {
                let secs = match length {
                    Length::Default => Some(3600),
                    Length::Secs(s) => Some(*s),
                    Length::UntilClosed => None,
                };
                if secs.is_none_or(|s| s > max_open_for) {
                    self.refused += 1;
                    return;
                }
                if let Some(f) = from {
                    self.sources.insert(f.to_iptables());
                }
                let key = from.map(|f| f.to_string());
                let list = self.openings.entry(gate.to_string()).or_default();
                if !list.contains(&key)
                    && list.len() >= tgknock::store::state::MAX_OPENINGS_PER_GATE
                {
                    self.not_done += 1;
                } else {
                    list.insert(key);
                }
            }
            Command::Close { gate: Some(g) } => {
                self.openings.remove(g.as_str());
            }
            Command::Close { gate: None } => self.openings.clear(),
            _ => {}
        }
        self.openings.retain(|_, l| !l.is_empty());
        if self.openings != before {
            self.changes += 1;
        }
    }
}

fn message_json(from: Value, chat: i64, text: &str, date: i64) -> Value {
    let kind = if chat < 0 { "supergroup" } else { "private" };
    json!({"message": {
        "message_id": 1,
        "from": from,
        "chat": {"id": chat, "type": kind},
        "date": date,
        "text": text,
    }})
}

fn user(id: i64) -> Value {
    if id == TOKEN_NAMED {
        json!({"id": id, "is_bot": false, "first_name": TOKEN, "username": SECRET})
    } else {
        json!({"id": id, "is_bot": false, "first_name": format!("Mallory {id}\u{202e}\u{0}"), "username": format!("m{id}")})
    }
}

/// A message that carries the token (a paste gone wrong, or bait to echo it).
fn token_text(rng: &mut Rng) -> String {
    match rng.below(5) {
        0 => format!("/open {TOKEN}"),
        1 => format!("/close {SECRET}"),
        2 => format!("/open x{SECRET}"),
        3 => format!("/open 5m {SECRET}.1"),
        _ => format!("/frobnicate {TOKEN} enable ssh"),
    }
}

#[test]
fn daemon_takes_two_thousand_hostile_messages() {
    const N: usize = 2_000;
    let seed = seed("daemon_takes_two_thousand_hostile_messages");
    let _note = SeedNote("daemon_takes_two_thousand_hostile_messages", seed);
    let mut rng = Rng::new(seed);
    let mut env = Env::new();
    env.set("TGKNOCK_GATES", GATES);
    // Long enough that no generated message goes stale while queued, nor any opening runs
    // out during the test: then every change is a command's.
    env.set("TGKNOCK_MAX_AGE", "1h");
    env.set("TGKNOCK_OPEN_FOR", "1h");
    env.set("RUST_LOG", "debug");
    let gates = parse_gates(GATES).unwrap();
    let max_open_for = 86_400;
    let mut d = env.start();
    let restores_at_start = env.restores();
    let baseline = env.calls();

    let mut model = Model::default();
    let (mut want_private, mut want_group, mut stranger_tries) = (0usize, 0usize, 0usize);
    let mut last_id = 0;
    let mut last_answered = 0;
    let mut odd = 0;
    let t0 = now();
    // Midway, more openings of one gate than it may hold: the last are refused.
    let burst = N / 2..N / 2 + 18;
    for i in 0..N {
        let in_burst = burst.contains(&i);
        // Now and then an update that must do nothing: an edit, a button, no sender, no text.
        if !in_burst && rng.one_in(60) && i + 1 < N {
            odd += 1;
            let m = message_json(user(OWNER), OWNER, "/open", t0);
            let u = match rng.below(4) {
                0 => json!({"edited_message": m["message"]}),
                1 => json!({"callback_query": {"id": "1", "from": user(OWNER), "data": "/open"}}),
                2 => {
                    let mut m = m;
                    m["message"].as_object_mut().unwrap().remove("from");
                    m
                }
                _ => {
                    let mut m = m;
                    m["message"].as_object_mut().unwrap().remove("text");
                    m
                }
            };
            env.api.push_update(u);
            continue;
        }
        let owner = in_burst || rng.one_in(4);
        let from = if owner {
            OWNER
        } else {
            STRANGERS.start + rng.below((STRANGERS.end - STRANGERS.start) as usize) as i64
        };
        let chat = if rng.below(5) < 3 { from } else { GROUP };
        let stale = !in_burst && rng.one_in(10);
        let date = if stale {
            t0 - 2 * 86_400
        } else if rng.one_in(20) {
            t0 + 20
        } else {
            t0
        };
        let text = if in_burst {
            let k = i - burst.start;
            format!("/open mosh 2h 198.18.7.{k}").replace(' ', separator(&mut rng))
        } else {
            loop {
                let text = match rng.below(10) {
                    0..=3 => well_formed(&mut rng, &gates, BOT),
                    4 => token_text(&mut rng),
                    _ => message(&mut rng, &gates, BOT),
                };
                // No short openings: an expiry during the test would be a change no command made.
                let parsed = command::parse(&text, BOT, &gates);
                let short = matches!(
                    parsed,
                    Parsed::Command(Command::Open { length: Length::Secs(s), .. }) if s < 1800
                );
                if !(owner && short) {
                    break text;
                }
            }
        };
        let parsed = command::parse(&text, BOT, &gates);
        let private = chat > 0;
        let mut answered = false;
        if owner {
            let replies = match &parsed {
                Parsed::Ignore => 0,
                Parsed::Unknown(_) => usize::from(private),
                Parsed::Invalid(_) => 1,
                Parsed::Command(c) => {
                    if stale {
                        model.stale += 1;
                    } else {
                        model.execute(c, max_open_for);
                    }
                    1
                }
            };
            answered = replies > 0;
            if private {
                want_private += replies;
            } else {
                want_group += replies;
            }
        } else if matches!(parsed, Parsed::Command(_) | Parsed::Invalid(_))
            || (private && matches!(parsed, Parsed::Unknown(_)))
        {
            stranger_tries += 1;
        }
        last_id = env
            .api
            .push_update(message_json(user(from), chat, &text, date));
        if answered {
            last_answered = last_id;
        }
    }

    wait_for(300, "the daemon to take every update", || {
        let last = env.api.requests("getUpdates").pop()?;
        let offset = last.body["offset"].as_i64().unwrap_or(0);
        (env.api.pending() == 0 && offset > last_id).then_some(())
    });
    assert!(
        d.try_exit().is_none(),
        "seed {seed}: the daemon exited:\n{}",
        d.output()
    );
    // The saved offset is past every update that was carried out (answered); the ones
    // after it that were ignored need not be saved (the polls confirmed them).
    let saved = env.state()["offset"].as_i64().unwrap_or(0);
    assert!(
        saved > last_answered && saved <= last_id + 1,
        "seed {seed}: saved offset {saved}, last answered update {last_answered}, last {last_id}"
    );

    // The strangers' summary is sent once a poll finds the queue empty (so that a flood
    // costs no round trip for it): one poll more.
    if stranger_tries > 0 {
        wait_for(30, "the strangers' summary", || {
            env.api
                .sent_to(OWNER)
                .iter()
                .any(|t| t.contains("(not in TGKNOCK_ALLOWED_USERS)"))
                .then_some(())
        });
    }
    // Replies: strangers none; the owner one per command or unparseable message, in the
    // chat it came from, and one summary of the strangers.
    let sent = env.api.sent();
    for (chat, text) in &sent {
        assert!(
            *chat == OWNER || *chat == GROUP,
            "seed {seed}: a message to {chat}, a stranger: {}",
            show(text)
        );
        assert_no_secret(text);
    }
    for s in STRANGERS {
        assert!(
            env.api.sent_to(s).is_empty(),
            "seed {seed}: a reply to stranger {s}"
        );
    }
    let private: Vec<String> = env.api.sent_to(OWNER);
    let summaries = private
        .iter()
        .filter(|t| t.contains("(not in TGKNOCK_ALLOWED_USERS)"))
        .count();
    assert_eq!(
        summaries,
        usize::from(stranger_tries > 0),
        "seed {seed}: summaries of strangers"
    );
    assert_eq!(
        private.len() - summaries,
        want_private,
        "seed {seed}: replies to the owner in private"
    );
    assert_eq!(
        env.api.sent_to(GROUP).len(),
        want_group,
        "seed {seed}: replies in the group"
    );
    let count = |prefix: &str| sent.iter().filter(|(_, t)| t.starts_with(prefix)).count();
    assert_eq!(count("Refused:"), model.refused, "seed {seed}: refusals");
    assert_eq!(
        count("Not executed:"),
        model.stale,
        "seed {seed}: stale commands"
    );
    assert_eq!(
        count("Not done:"),
        model.not_done,
        "seed {seed}: failed openings"
    );
    assert!(
        model.not_done >= 2,
        "seed {seed}: the burst overfilled no gate"
    );

    // What was saved is what the owner's commands asked for.
    let saved: BTreeMap<String, BTreeSet<Option<String>>> = env
        .openings()
        .into_iter()
        .map(|(g, list)| {
            let froms = list
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o["from"].as_str().map(String::from))
                .collect();
            (g, froms)
        })
        .collect();
    assert_eq!(saved, model.openings, "seed {seed}: saved openings");

    // Rules were rewritten only for those commands: at most once per family each.
    let restores = env.restores() - restores_at_start;
    assert!(
        restores <= 2 * model.changes,
        "seed {seed}: {restores} restores for {} changes",
        model.changes
    );
    assert!(
        model.changes == 0 || restores > 0,
        "seed {seed}: {} changes and no restore",
        model.changes
    );

    // Nothing from a message reached the tools but validated addresses and gate names.
    let calls = env.calls();
    assert_no_secret(&calls);
    let tags: BTreeSet<String> = gates
        .iter()
        .map(|g| format!("tgknock-gate:{}", g.name))
        .chain(words_after(&baseline, "--comment"))
        .collect();
    let ports: BTreeSet<String> = gates
        .iter()
        .flat_map(|g| g.ports.iter().map(|p| p.dport()))
        .collect();
    for line in calls.lines() {
        assert!(
            line.bytes().all(|b| b.is_ascii_graphic() || b == b' '),
            "seed {seed}: a call with odd characters: {line:?}"
        );
        for m in MARKERS {
            assert!(
                !line.contains(m),
                "seed {seed}: {m:?} reached a firewall tool: {line}"
            );
        }
    }
    let sources = words_after(&calls, "-s");
    let with_source = model.openings.values().flatten().any(Option::is_some);
    assert!(
        !with_source || !sources.is_empty(),
        "seed {seed}: openings from addresses, but no -s in any call:\n{calls}"
    );
    for s in &sources {
        assert!(
            model.sources.contains(s),
            "seed {seed}: source {s} in a rule, but in no valid command of the owner"
        );
    }
    for c in words_after(&calls, "--comment") {
        assert!(tags.contains(&c), "seed {seed}: comment {c} in a rule");
    }
    for p in words_after(&calls, "--dport") {
        assert!(ports.contains(&p), "seed {seed}: port {p} in a rule");
    }
    d.check_secret();
    eprintln!(
        "daemon: {N} updates ({odd} odd), {} replies to the owner, {} in the group, {stranger_tries} stranger attempts; {} changes, {restores} restores, {} refused, {} stale, {} not done; {} calls checked ({} sources); openings now {:?}",
        private.len(),
        want_group,
        model.changes,
        model.refused,
        model.stale,
        model.not_done,
        calls.lines().count(),
        sources.len(),
        model.openings
    );
}

/// Every word that follows `flag` in `text`.
fn words_after(text: &str, flag: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        for pair in w.windows(2) {
            if pair[0] == flag {
                out.push(pair[1].to_string());
            }
        }
    }
    out
}
