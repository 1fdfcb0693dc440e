//! Reading `iptables -S` (and `nft list chain`, for iptables-nft) back into rules.

use std::borrow::Cow;

use super::chain::Chain;
use super::limit::{Tuning, hashlimit_name};
use super::render::{full_mask, match_names};
use crate::base::addr::{self, Family};
use crate::base::gate::Proto;
use crate::base::rate::Rate;
use crate::firewall::rules::{List, RecentOp, Rule, Target};
use crate::firewall::tool::rule_text;

/// The rules of a chain as `nft list chain` prints them (counters and handles left out).
pub(crate) fn parse_nft_chain(text: &str) -> Vec<String> {
    let mut inside = false;
    let mut out = Vec::new();
    for line in text.lines() {
        let t = line.trim();
        if !inside {
            inside = t.starts_with("chain ") && t.ends_with('{');
            continue;
        }
        if t == "}" {
            break;
        }
        if t.is_empty() || t.starts_with("type ") || t.starts_with('#') {
            continue;
        }
        out.push(rule_text(t));
    }
    out
}

/// Reads back a `--datestop` value as the deadline it stands for.
pub(super) fn parse_datestop(v: &str) -> Option<u64> {
    // As iptables prints it (`2026-12-03T09:14:10`): its digits read in place, for a
    // chain of 1,000 bans is 1,000 of them.
    let b = v.as_bytes();
    if b.len() == 19
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
    {
        let n = |at: usize, len: usize| {
            b[at..at + len].iter().try_fold(0u32, |n, &c| {
                c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
            })
        };
        let (y, mo, dd) = (n(0, 4)?, n(5, 2)?, n(8, 2)?);
        let (h, mi, sec) = (n(11, 2)?, n(14, 2)?, n(17, 2)?);
        return crate::base::duration::from_civil(i64::from(y), mo, dd, h, mi, sec).map(|u| u + 1);
    }
    let (date, time) = v.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|x| x.parse::<u32>().ok());
    let mut t = time.splitn(3, ':').map(|x| x.parse::<u32>().ok());
    let (y, mo, dd) = (d.next()??, d.next()??, d.next()??);
    let (h, mi, sec) = (t.next()??, t.next()??, t.next()??);
    crate::base::duration::from_civil(i64::from(y), mo, dd, h, mi, sec).map(|u| u + 1)
}

/// Splits an `iptables -S` line into words, honouring double quotes. Most lines (a
/// comment quoted as one word) are split at their spaces, without copying a word; a chain
/// of 1,000 bans is 1,000 lines.
#[cfg(test)]
pub(super) fn words(line: &str) -> Vec<Cow<'_, str>> {
    let mut out = Vec::new();
    words_into(line, &mut out);
    out
}

/// Whether a line splits at its spaces alone: ASCII, no backslash or other white space,
/// and an even number of quotes in each of its space-separated words (one pass over its
/// bytes: this is the cost of reading a chain of 1,000 bans).
fn plain(line: &str) -> bool {
    let mut odd = false;
    for &b in line.as_bytes() {
        match b {
            b' ' if odd => return false,
            b' ' => {}
            b'"' => odd = !odd,
            b'\\' | b'\t' | b'\r' | b'\n' | 0x0b | 0x0c | 0x80.. => return false,
            _ => {}
        }
    }
    !odd
}

/// [`words`] into `out` (emptied first), which a caller reading many lines reuses.
pub(super) fn words_into<'a>(line: &'a str, out: &mut Vec<Cow<'a, str>>) {
    out.clear();
    if plain(line) {
        out.extend(line.split(' ').filter(|w| !w.is_empty()).map(|w| {
            if w.as_bytes().contains(&b'"') {
                Cow::Owned(w.replace('"', ""))
            } else {
                Cow::Borrowed(w)
            }
        }));
        return;
    }
    words_quoted(line, out);
}

/// [`words_into`] of any line, character by character: quotes group, a backslash inside
/// them escapes the next character, any white space separates.
fn words_quoted<'a>(line: &'a str, out: &mut Vec<Cow<'a, str>>) {
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            '\\' if quoted => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            c if c.is_whitespace() && !quoted => {
                if any || !cur.is_empty() {
                    out.push(Cow::Owned(std::mem::take(&mut cur)));
                    any = false;
                }
            }
            c => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        out.push(Cow::Owned(cur));
    }
}

/// Parses the output of `iptables -S` (the whole filter table) of `family`.
pub(crate) fn parse_listing(chain: &str, text: &str, family: Family) -> Chain {
    let mut l = Chain::new(family);
    // One rule per line at most: sized once (a chain of 1,000 bans grows no vector).
    let at_most = text.lines().count();
    l.lines.reserve(at_most);
    l.rules.reserve(at_most);
    let mut first_input = true;
    let mut w = Vec::new();
    for line in text.lines() {
        words_into(line, &mut w);
        match w.as_slice() {
            [n, c] if n == "-N" && c == chain => l.exists = true,
            [a, input, rest @ ..] if a == "-A" && input == "INPUT" => {
                let is_jump = rest.len() == 2 && rest[0] == "-j" && rest[1] == chain;
                if is_jump {
                    l.jumps += 1;
                    if first_input {
                        l.jump_first = true;
                    }
                }
                first_input = false;
            }
            [a, c, rest @ ..] if a == "-A" && c == chain => {
                l.lines.push(line.trim_end().to_string());
                l.rules.push(parse_rule(chain, rest, family));
            }
            _ => {}
        }
    }
    // A limit's guard is sized for the rules that share its table: one whose guard was
    // written for another count (a gate that had another number of ports) is not as
    // tgknock writes it now, or the guards together could let the table fill.
    let count = |tag: &str| {
        l.rules
            .iter()
            .flatten()
            .filter(|r| r.limit.is_some() && r.tag == tag)
            .count()
    };
    let stale: Vec<bool> = l
        .rules
        .iter()
        .map(|r| {
            r.as_ref()
                .and_then(|r| r.limit.map(|x| (x, &r.tag)))
                .is_some_and(|(x, tag)| usize::try_from(x.shares).ok() != Some(count(tag)))
        })
        .collect();
    for (r, stale) in l.rules.iter_mut().zip(stale) {
        if stale {
            *r = None;
        }
    }
    l.listing.reach = l.reach(chain);
    l
}

/// A rule being read word by word from its `iptables -S` line.
struct Reader<'a> {
    chain: &'a str,
    family: Family,
    r: Rule,
    /// A `-m recent` opens a match whose operation and list come after it.
    pending: Option<(RecentOp, Option<u64>, Option<List>)>,
    /// A hashlimit's table name, checked once the rule's tag is known.
    limit_name: Option<String>,
    /// Its guard and table settings, checked likewise.
    tuning: Tuning,
}

impl Reader<'_> {
    /// Closes the `-m recent` match being read, if any.
    fn close(&mut self) -> Option<()> {
        if let Some((op, seconds, list)) = self.pending.take() {
            self.r.recent.push(crate::firewall::rules::Recent {
                op,
                seconds,
                list: list?,
            });
        }
        Some(())
    }

    /// A knock list by its name, prefixed with the chain.
    fn list(&self, name: &str) -> Option<List> {
        List::parse(name.strip_prefix(self.chain)?.strip_prefix('_')?)
            .filter(|l| l.family() == self.family)
    }

    /// Reads the word `w` (and the one after it, `next`, or two): how many words it took
    /// beyond `w`; `None` when the rule is not tgknock's.
    fn word(&mut self, w: &str, next: Option<&str>, after: Option<&str>) -> Option<usize> {
        let r = &mut self.r;
        match (w, next) {
            ("-s", Some(v)) => r.src = Some(addr::parse_listed(v)?),
            ("-p", Some(v)) => {
                r.proto = Some(match v {
                    "tcp" => Proto::Tcp,
                    "udp" => Proto::Udp,
                    _ => return None,
                })
            }
            ("--dport", Some(v)) => {
                let (a, b) = v.split_once(':').unwrap_or((v, v));
                r.dport = Some((a.parse::<u16>().ok()?, b.parse::<u16>().ok()?));
            }
            ("--tcp-flags", Some("FIN,SYN,RST,ACK")) if after == Some("SYN") => {
                r.syn = true;
                return Some(2);
            }
            ("--ctstate", Some(v)) => {
                let mut s: Vec<&str> = v.split(',').collect();
                s.sort();
                if s != ["ESTABLISHED", "RELATED"] {
                    return None;
                }
                r.established = true;
            }
            ("--ctdir", Some("REPLY")) if r.established => r.reply = true,
            ("--comment", Some(v)) => r.tag = v.to_string(),
            ("-j", Some(v)) => {
                r.target = Some(match v {
                    "RETURN" => Target::Return,
                    "DROP" => Target::Drop,
                    _ => return None,
                })
            }
            ("-m", Some("tcp" | "udp" | "conntrack" | "comment" | "time")) => self.close()?,
            ("--datestop", Some(v)) => r.until = Some(parse_datestop(v)?),
            _ => return self.limit_word(w, next),
        }
        Some(1)
    }

    /// Reads a word of a `recent`, `hashlimit` or `limit` match, as [`Reader::word`].
    fn limit_word(&mut self, w: &str, next: Option<&str>) -> Option<usize> {
        let full_mask = full_mask(self.family);
        match (w, next) {
            ("-m", Some("recent")) => {
                self.close()?;
                self.pending = Some((RecentOp::Set, None, None));
            }
            (op @ ("--set" | "--rcheck" | "--remove"), _) => {
                self.pending.as_mut()?.0 = match op {
                    "--set" => RecentOp::Set,
                    "--rcheck" => RecentOp::Rcheck,
                    _ => RecentOp::Remove,
                };
                return Some(0);
            }
            ("--seconds", Some(v)) => self.pending.as_mut()?.1 = Some(v.parse().ok()?),
            ("--name", Some(v)) => {
                let list = self.list(v)?;
                self.pending.as_mut()?.2 = Some(list);
            }
            ("--mask", Some(v)) if v == full_mask => {}
            ("--rsource", _) => return Some(0),
            ("-m", Some("hashlimit")) => {
                self.close()?;
                // hashlimit's default burst, which `-S` leaves out.
                self.r.limit = Some(crate::firewall::rules::Limit {
                    rate: Rate {
                        count: 0,
                        per: crate::base::rate::Per::Second,
                    },
                    burst: 5,
                    shares: 1,
                });
            }
            ("--hashlimit-above", Some(v)) => self.r.limit.as_mut()?.rate = Rate::parse(v).ok()?,
            ("--hashlimit-burst", Some(v)) => self.r.limit.as_mut()?.burst = v.parse().ok()?,
            ("--hashlimit-mode", Some("srcip")) => {}
            ("--hashlimit-name", Some(v)) => self.limit_name = Some(v.to_string()),
            ("-m", Some("limit")) => {
                self.close()?;
                self.tuning.guard = true;
            }
            _ => return self.tuning_word(w, next),
        }
        Some(1)
    }

    /// Reads a word of a rate limit's guard or table settings, as [`Reader::word`].
    fn tuning_word(&mut self, w: &str, next: Option<&str>) -> Option<usize> {
        let t = &mut self.tuning;
        match (w, next?) {
            ("--limit", v) => t.limit = Some(v.to_string()),
            ("--limit-burst", v) => t.limit_burst = Some(v.parse().ok()?),
            ("--hashlimit-htable-size", v) => t.buckets = Some(v.parse().ok()?),
            ("--hashlimit-htable-max", v) => t.max = Some(v.parse().ok()?),
            ("--hashlimit-htable-expire", v) => t.expire = Some(v.parse().ok()?),
            ("--hashlimit-srcmask", v) => t.srcmask = Some(v.parse().ok()?),
            _ => return None,
        }
        Some(1)
    }

    /// The rule read, when it is whole and tgknock's.
    fn finish(mut self) -> Option<Rule> {
        self.close()?;
        let (chain, family) = (self.chain, self.family);
        let mut r = self.r;
        if r.dport.is_some() && r.proto.is_none() {
            return None;
        }
        if let Some(l) = &mut r.limit {
            if l.rate.count == 0 || self.limit_name? != hashlimit_name(chain, &r.tag, l, family) {
                return None;
            }
            l.shares = self.tuning.fits(l, family)?;
        }
        if r.limit.is_none() && (self.tuning.guard || self.tuning.limit.is_some()) {
            return None;
        }
        Some(r)
    }
}

pub(super) fn parse_rule(chain: &str, w: &[Cow<'_, str>], family: Family) -> Option<Rule> {
    let mut reader = Reader {
        chain,
        family,
        r: Rule::new(family, "", None),
        pending: None,
        limit_name: None,
        tuning: Tuning::default(),
    };
    let mut i = 0;
    while i < w.len() {
        let at = |k: usize| w.get(i + k).map(|v| v.as_ref());
        i += reader.word(&w[i], at(1), at(2))? + 1;
    }
    let r = reader.finish()?;
    // The rule as a whole: each word was read above, and its matches are tgknock's own,
    // in its order. A match repeated (`-m tcp --dport 9 -m tcp --dport 22`, which reads
    // as port 22 but never matches) or moved (`-m recent --set` before the port: every
    // SYN would step) is not tgknock's. (Words are compared through what they mean, not
    // as text: the tool prints some defaults, or leaves them out, as it likes.)
    (matches_of(w.iter().map(|x| x.as_ref())) == match_names(&r)).then_some(r)
}

/// The matches (`-m NAME`) of a rule's words, in order.
pub(super) fn matches_of<'a>(words: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut after_m = false;
    for w in words {
        if after_m {
            out.push(w);
        }
        after_m = w == "-m";
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The split at spaces of a plain line is the split of the quote-aware reader.
    #[test]
    fn plain_lines_split_as_the_quoted_reader_splits_them() {
        let plain_lines = [
            "-A TGKNOCK -s 198.18.0.1/32 -m time --datestop 2026-12-03T09:14:10 -m comment --comment \"tgknock:ban\" -j DROP",
            "-A  TGKNOCK   -j RETURN ",
            "-A TGKNOCK -m comment --comment \"\" -j DROP",
            "-A TGKNOCK -m comment --comment a\"\"b -j DROP",
            "",
        ];
        for line in plain_lines {
            assert!(plain(line), "{line}");
            let (mut fast, mut slow) = (Vec::new(), Vec::new());
            words_into(line, &mut fast);
            words_quoted(line, &mut slow);
            assert_eq!(fast, slow, "{line}");
        }
        let quoted = [
            (
                "-m comment --comment \"tgknock gate\" -j DROP",
                "tgknock gate",
            ),
            ("-m comment --comment \"a\\\"b\" -j DROP", "a\"b"),
            ("-m comment --comment\t\"x\" -j DROP", "x"),
            ("-m comment --comment \"é\" -j DROP", "é"),
        ];
        for (line, comment) in quoted {
            assert!(!plain(line), "{line}");
            let w = words(line);
            assert_eq!(w[3], comment, "{line}: {w:?}");
            assert_eq!(w[4..], ["-j", "DROP"], "{line}: {w:?}");
        }
    }

    /// A deadline as iptables prints it and in any other form it reads the same.
    #[test]
    fn datestop_in_place_reads_as_the_general_reader() {
        assert_eq!(parse_datestop("2027-01-15T07:59:59"), Some(1_800_000_000));
        assert_eq!(parse_datestop("2027-1-15T7:59:59"), Some(1_800_000_000));
        for bad in [
            "2027-01-15T07:59:5x",
            "2027-13-15T07:59:59",
            "2027-01-15 07:59:59",
            "+027-01-15T07:59:59",
        ] {
            assert_eq!(parse_datestop(bad), None, "{bad}");
        }
    }
}
