//! Rate limits in iptables: a gate's hashlimit table (its name, sizes and expiry) and
//! the `-m limit` guard that keeps the table from filling.

use crate::base::addr::Family;
use crate::firewall::rules::{Limit, METER_ENTRIES, Rule, TAG_LIMIT_PREFIX, V6_SOURCE_PREFIX};

/// Buckets of a gate's hashlimit table (`--hashlimit-htable-size`): eight sources a
/// bucket when the table is full (64 KB of bucket heads, allocated with the rule).
pub(super) const HTABLE_BUCKETS: u32 = 8_192;

/// xt_limit's unit: a rate is kept as the time between two packets, in 1/10,000 s.
pub(super) const XT_LIMIT_SCALE: u64 = 10_000;

/// The most packets the guard lets through at once (`--limit-burst`, at most 10,000).
pub(super) const GUARD_BURST: u32 = 10_000;

/// A full hashlimit table drops every packet of a source it cannot add (xt_hashlimit
/// "hotdrops" when its table is at `--hashlimit-htable-max`, whatever the rule's target
/// and order): a flood of spoofed sources would lock everyone out. So a gate's hashlimit
/// sees at most as many new sources as its table holds: a `-m limit` guard before it in
/// the same rule lets `GUARD_BURST` packets through at once, then one every `avg`
/// (1/10,000 s), so that over an entry's lifetime (its expiry, plus up to a second until
/// the table's collector runs) no more than 15/16 of [`METER_ENTRIES`] get in. A packet
/// the guard holds back skips the per-source check and goes on to the gate: under a
/// flood beyond the guard's rate the limit lapses for part of the packets, it never
/// drops one.
///
/// A gate's rules (one per port entry, `limit.shares` of them) share its table: each
/// rule's guard gets an equal part of the table's budget (its burst and its rate divided
/// by `shares`), so that together they never let more sources in than one guard would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Guard {
    pub(crate) avg: u64,
    pub(crate) burst: u32,
}

impl Guard {
    pub(crate) fn of(limit: &Limit) -> Guard {
        // The slowest rate xt_limit writes: one a day.
        const SLOWEST: u64 = XT_LIMIT_SCALE * 86_400;
        let shares = u64::from(limit.shares.max(1));
        let burst = (GUARD_BURST / limit.shares.max(1)).max(1);
        let window = limit.refill_secs().saturating_add(2);
        let room = u64::from(METER_ENTRIES - GUARD_BURST) * 15 / 16;
        let start = XT_LIMIT_SCALE
            .saturating_mul(window)
            .saturating_mul(shares)
            .div_ceil(room)
            .clamp(1, SLOWEST);
        // The rate as iptables prints it back must stand for the same interval: the
        // next one that does (a few steps for any rate tgknock writes; a limit read
        // back with an absurd burst gets the slowest).
        let avg = (start..start.saturating_add(10_000).min(SLOWEST))
            .find(|a| limit_rate_avg(&limit_rate_text(*a)) == Some(*a))
            .unwrap_or(SLOWEST);
        Guard { avg, burst }
    }

    /// How many rules share the table of a guard read back (`--limit`, `--limit-burst`)
    /// on a rule limited by `limit`: the `shares` whose guard it is, if any.
    pub(super) fn shares_of(limit: &Limit, avg: u64, burst: u32) -> Option<u32> {
        if burst == 0 || burst > GUARD_BURST {
            return None;
        }
        // The shares whose burst (GUARD_BURST / shares, at least 1) is `burst`.
        let lo = GUARD_BURST / (burst + 1) + 1;
        let hi = GUARD_BURST / burst;
        (lo..=hi).find(|k| {
            Guard::of(&Limit {
                shares: *k,
                ..*limit
            }) == Guard { avg, burst }
        })
    }

    /// The guard's packets a second.
    #[cfg(test)]
    pub(crate) fn per_sec(&self) -> f64 {
        XT_LIMIT_SCALE as f64 / self.avg as f64
    }
}

/// xt_limit's units, the longest first, in 1/10,000 s.
pub(super) const LIMIT_UNITS: [(&str, u64); 4] = [
    ("day", XT_LIMIT_SCALE * 86_400),
    ("hour", XT_LIMIT_SCALE * 3_600),
    ("min", XT_LIMIT_SCALE * 60),
    ("sec", XT_LIMIT_SCALE),
];

/// A `-m limit` rate as iptables prints it (libxt_limit's `print_rate`, which
/// iptables-nft's translation shares): `833/sec`.
pub(super) fn limit_rate_text(avg: u64) -> String {
    let mut i = 1;
    while i < LIMIT_UNITS.len() {
        let mult = LIMIT_UNITS[i].1;
        if avg > mult || mult / avg < mult % avg {
            break;
        }
        i += 1;
    }
    let (name, mult) = LIMIT_UNITS[i - 1];
    format!("{}/{name}", mult / avg)
}

/// The interval a `-m limit` rate stands for (libxt_limit's `parse_rate`).
pub(super) fn limit_rate_avg(text: &str) -> Option<u64> {
    let (n, unit) = text.split_once('/')?;
    let n: u64 = n.parse().ok().filter(|n| *n > 0)?;
    let (_, mult) = LIMIT_UNITS.iter().find(|(name, _)| *name == unit)?;
    Some(mult / n).filter(|a| *a > 0)
}

/// A source's prefix length in a gate's hashlimit (`--hashlimit-srcmask`).
pub(super) fn srcmask(family: Family) -> u8 {
    match family {
        Family::V4 => 32,
        Family::V6 => V6_SOURCE_PREFIX,
    }
}

/// How long an idle source stays in a gate's hashlimit table, in ms: until its burst has
/// filled up again (iptables' default is one unit of the rate as written, one second for
/// `1/sec` with a burst of 60, which would hand a source a fresh burst every second).
pub(super) fn expire_ms(limit: &Limit) -> u64 {
    limit.refill_secs() * 1_000
}

/// A gate's hashlimit table (global to the network namespace, at most 15 characters):
/// `tgk-ssh-3f0a`, or `tgk-` and a hash alone when the gate's name is too long or the
/// chain is not the default one (two instances never share a table). The hash covers
/// everything the kernel keeps with the table rather than the rule (rate, burst, sizes,
/// expiry, mask): xt_hashlimit reuses a table of the same name as it is, so a changed
/// limit gets a table of its own name or it would not take effect until a reboot.
pub(crate) fn hashlimit_name(chain: &str, tag: &str, limit: &Limit, family: Family) -> String {
    let gate = tag.strip_prefix(TAG_LIMIT_PREFIX).unwrap_or(tag);
    let config = format!(
        "{}:{}:{HTABLE_BUCKETS}:{METER_ENTRIES}:{}:{}",
        limit.rate,
        limit.burst,
        expire_ms(limit),
        srcmask(family)
    );
    // FNV-1a: a stable short name, no cryptography needed.
    let mut h: u32 = 0x811c_9dc5;
    for b in chain
        .bytes()
        .chain([b':'])
        .chain(gate.bytes())
        .chain([b':'])
        .chain(config.bytes())
    {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    let plain = format!("tgk-{gate}-{:04x}", (h >> 16) ^ (h & 0xffff));
    if chain == "TGKNOCK" && plain.len() <= 15 {
        return plain;
    }
    format!("tgk-{h:08x}")
}

/// The words of a rate limit after the rule's other matches: the guard, then the
/// hashlimit with its table's sizes, expiry and source mask, as `iptables -S` prints
/// them (an expiry equal to iptables' default and a full mask are left out).
pub(super) fn limit_args(chain: &str, rule: &Rule, l: &Limit) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "-m".into(),
        "limit".into(),
        "--limit".into(),
        limit_rate_text(Guard::of(l).avg),
        "--limit-burst".into(),
        Guard::of(l).burst.to_string(),
        "-m".into(),
        "hashlimit".into(),
        "--hashlimit-above".into(),
        l.rate.to_string(),
        "--hashlimit-burst".into(),
        l.burst.to_string(),
        "--hashlimit-mode".into(),
        "srcip".into(),
        "--hashlimit-name".into(),
        hashlimit_name(chain, &rule.tag, l, rule.family),
        "--hashlimit-htable-size".into(),
        HTABLE_BUCKETS.to_string(),
        "--hashlimit-htable-max".into(),
        METER_ENTRIES.to_string(),
    ];
    if expire_ms(l) != l.rate.per.secs() * 1_000 {
        a.extend(["--hashlimit-htable-expire".into(), expire_ms(l).to_string()]);
    }
    if rule.family == Family::V6 {
        a.extend(["--hashlimit-srcmask".into(), V6_SOURCE_PREFIX.to_string()]);
    }
    a
}

/// The table settings and guard of a rate limit as read back, checked against
/// [`limit_args`]: the same guard, sizes and mask, and an expiry that is the one written
/// (or iptables' default, when that is it).
#[derive(Debug, Default)]
pub(super) struct Tuning {
    pub(super) guard: bool,
    pub(super) limit: Option<String>,
    pub(super) limit_burst: Option<u32>,
    pub(super) buckets: Option<u32>,
    pub(super) max: Option<u32>,
    pub(super) expire: Option<u64>,
    pub(super) srcmask: Option<u8>,
}

impl Tuning {
    /// The rule's table settings are tgknock's, and its guard is that of a table shared
    /// by `Some(shares)` rules.
    pub(super) fn fits(&self, l: &Limit, family: Family) -> Option<u32> {
        let shares = Guard::shares_of(
            l,
            self.limit.as_deref().and_then(limit_rate_avg)?,
            self.limit_burst?,
        )?;
        (self.guard
            && self.buckets == Some(HTABLE_BUCKETS)
            && self.max == Some(METER_ENTRIES)
            && self.expire.unwrap_or(l.rate.per.secs() * 1_000) == expire_ms(l)
            && self.srcmask.unwrap_or(match family {
                Family::V4 => 32,
                Family::V6 => 128,
            }) == srcmask(family))
        .then_some(shares)
    }
}
