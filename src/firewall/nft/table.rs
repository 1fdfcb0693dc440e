//! `nft list table inet tgknock` read back: the input chain's rules and the ban sets'
//! elements as backend-neutral listings, compared with what this process wrote.

use std::collections::HashMap;

use super::key::{HOOK, TABLE, ban_set, ban_set_key, digit, from_key};
use crate::base::addr::{self, Family};
use crate::firewall::rules::{List, Listing, Reach, Rule, Target};
use crate::firewall::tool::rule_text;

/// What this process wrote to the table, as nft printed it back: each rule's text by its
/// comment (its key), and each set's declaration. nft prints a rule otherwise than it is
/// written (it leaves out a `meta nfproto` another match implies, writes a deadline as a
/// date, a flag test in its own syntax, and so on from one version to the next): the
/// reference is its own print, never a guess of it. A rule whose text differs from the
/// reference under the same comment is not tgknock's: another program changed it.
#[derive(Debug, Default)]
pub(crate) struct Reference {
    /// Whether the table is compared with it (the daemon, which keeps the rules; a
    /// console command writes and reads once, with nothing to compare with).
    pub(crate) keep: bool,
    pub(super) rules: HashMap<String, String>,
    pub(super) sets: HashMap<String, String>,
    /// The last table read held rules or sets this process has not written (another
    /// tgknock process wrote them, a console command): the next check writes them again
    /// (the same rules, no news to anyone), and so knows them.
    pub(super) unknown: bool,
}

/// The comment of a rule's line, if it has one.
pub(super) fn comment_of(t: &str) -> Option<&str> {
    let at = t.rfind("comment \"")?;
    Some(t[at + 9..].trim_end_matches('"'))
}

/// Whether a set of this name is one tgknock declares (a ban set, a knock list, a rate
/// meter).
pub(super) fn own_set(name: &str) -> bool {
    name == ban_set(Family::V4)
        || name == ban_set(Family::V6)
        || List::parse(name).is_some()
        || (name.starts_with("lim_") && (name.ends_with("_v4") || name.ends_with("_v6")))
}

/// The sets and chains of a table as `nft list table` prints them: each one's kind, name
/// and declaration (its lines, the elements of a set left out: they come and go with
/// traffic and timeouts, and a ban set's are read on their own).
pub(super) fn objects(text: &str) -> Vec<(&str, &str, String)> {
    let mut out = Vec::new();
    let mut lines = text.lines().map(str::trim);
    while let Some(t) = lines.next() {
        let Some(head) = t.strip_suffix(" {") else {
            continue;
        };
        let (kind, name) = match head.split_once(' ') {
            Some((
                k @ ("set" | "map" | "chain" | "flowtable" | "ct" | "counter" | "quota" | "limit"
                | "secmark" | "synproxy"),
                n,
            )) => (k, n),
            _ => continue,
        };
        let mut decl: Vec<&str> = Vec::new();
        let mut in_elements = false;
        for l in lines.by_ref() {
            if in_elements {
                if l.ends_with('}') && l.matches('"').count().is_multiple_of(2) {
                    in_elements = false;
                }
                continue;
            }
            if l == "}" {
                break;
            }
            if let Some(rest) = l.strip_prefix("elements = {") {
                in_elements = !(rest.ends_with('}') && rest.matches('"').count().is_multiple_of(2));
                continue;
            }
            if kind == "chain" {
                // A chain's rules are compared one by one; its declaration is its hook.
                if l.starts_with("type ") {
                    decl.push(l);
                }
                continue;
            }
            if !l.is_empty() {
                decl.push(l);
            }
        }
        out.push((kind, name, decl.join("; ")));
    }
    out
}

/// Reads back a ban set's element as [`super::render::element`] writes it; `None` when tgknock did not
/// write it (its comment is not the ban of its source, or only one of them has a deadline).
pub(super) fn parse_element(e: &str, family: Family) -> Option<Rule> {
    let (head, comment) = e.split_once(" comment \"")?;
    let r = from_key(comment.strip_suffix('"')?)?;
    let mut words = head.split(' ').filter(|w| !w.is_empty());
    let src = addr::parse_listed(words.next()?)?;
    let mut timeout = false;
    while let Some(w) = words.next() {
        match w {
            "timeout" => timeout = words.next().is_some(),
            "expires" => {
                words.next()?;
            }
            _ => return None,
        }
    }
    let ban = r.is_ban()
        && r.family == family
        && src.family() == family
        && r.src == Some(src)
        && r.target == Some(Target::Drop)
        && r.until.is_some() == timeout;
    // Nothing else: the rule a ban is, as `Rule::ban` makes it.
    let plain = !r.established
        && !r.reply
        && r.proto.is_none()
        && r.dport.is_none()
        && !r.syn
        && r.recent.is_empty()
        && r.limit.is_none();
    (ban && plain).then_some(r)
}

/// The pieces of `line` between its commas, commas in quotes left alone.
pub(super) fn split_elements(line: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut from) = (0, 0);
    while let Some(c) = line[from..].find(',') {
        let at = from + c;
        if line[start..at].matches('"').count().is_multiple_of(2) {
            out.push(&line[start..at]);
            start = at + 1;
        }
        from = at + 1;
    }
    out.push(&line[start..]);
    out
}

/// A ban set's elements as listed: each one's text and the ban it holds (`None`: an
/// element tgknock did not write).
pub(super) type Elements = Vec<(String, Option<Rule>)>;

/// A family's ban set as `nft list table` prints it: each element's text and the ban it
/// holds (`None`: an element tgknock did not write), in the order of the bans; `None`
/// when there is no such set. nft prints the elements between `elements = {` and `}`,
/// breaking lines between elements, never inside one; read line by line, as a listing of
/// 1,000 bans is 100 kB. The elements of every block of the set are read (`nft get
/// element` prints one per command).
pub(super) fn read_ban_set(text: &str, family: Family) -> Option<Elements> {
    let head = format!("set {} {{", ban_set(family));
    let mut lines = text.lines();
    let mut out = None;
    while lines.any(|l| l.trim() == head) {
        let out = out.get_or_insert_with(Vec::new);
        let mut inside = false;
        for line in lines.by_ref() {
            let mut t = line.trim();
            if !inside {
                match t.strip_prefix("elements = {") {
                    Some(rest) => {
                        inside = true;
                        t = rest;
                    }
                    None if t == "}" => break,
                    None => continue,
                }
            }
            let closed = t.ends_with('}') && t.matches('"').count().is_multiple_of(2);
            if closed {
                t = &t[..t.len() - 1];
            }
            for e in split_elements(t) {
                let e = e.trim();
                if !e.is_empty() {
                    out.push((e.to_string(), parse_element(e, family)));
                }
            }
            if closed {
                break;
            }
        }
    }
    let mut out = out?;
    sort_elements(&mut out);
    Some(out)
}

/// Puts a set's elements in the order of the bans (by source, then deadline).
pub(super) fn sort_elements(e: &mut Elements) {
    e.sort_by_key(|(_, r)| r.as_ref().map(|r| (r.src, r.until)));
}

/// `nft list table inet tgknock` as read, its ban sets parsed once: the views of each
/// family and the next change's script are made from it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Table {
    pub(super) text: String,
    /// The input chain is there, hooked as tgknock declares it.
    pub(super) hooked: bool,
    /// The ban set of each family that has one: its elements, as [`read_ban_set`] reads
    /// them.
    pub(super) bans: Vec<(Family, Elements)>,
    /// What the table holds that tgknock does not (a chain of another program's, a set
    /// declared otherwise than tgknock did), as it would be said: the table is written
    /// afresh.
    pub(super) strange: Vec<String>,
    /// The comments of rules whose text differs from what this process wrote under them.
    pub(super) changed: Vec<String>,
    /// Rules or sets this process has not written, or changed ones: the chain is written
    /// whole, never kept.
    pub(super) suspect: bool,
    /// Read back after a change, only what it touched (see [`super::verify`]): the text
    /// holds the input chain and the elements touched, not every set.
    pub(super) narrow: bool,
}

impl Table {
    pub(crate) fn read(text: String) -> Table {
        let bans = Family::BOTH
            .into_iter()
            .filter_map(|f| Some((f, read_ban_set(&text, f)?)))
            .collect();
        let hooked = text.lines().any(|l| l.trim() == HOOK);
        // Another chain in tgknock's table (another program's sets and named objects
        // change nothing unless a rule uses them, and the rules are compared).
        let mut strange: Vec<String> = objects(&text)
            .into_iter()
            .filter(|(kind, name, _)| *kind == "chain" && *name != "input")
            .map(|(kind, name, decl)| format!("{kind} {name} {{ {decl} }}"))
            .collect();
        // `flags dormant` on the table (one tab in, where a set's flags are two): every
        // rule stays listed and none is enforced. The table written afresh wakes it.
        if let Some(flags) = text.lines().find(|l| l.starts_with("\tflags ")) {
            strange.push(format!("table {}", flags.trim()));
        }
        Table {
            text,
            hooked,
            bans,
            strange,
            changed: Vec::new(),
            suspect: false,
            narrow: false,
        }
    }

    /// The rules of the input chain that carry a comment: (comment, text as compared).
    pub(super) fn rule_texts(&self) -> Vec<(&str, String)> {
        let mut lines = self.text.lines().map(str::trim);
        if lines.find(|t| *t == "chain input {").is_none() {
            return Vec::new();
        }
        lines
            .take_while(|t| *t != "}")
            .filter_map(|t| Some((comment_of(t)?, rule_text(t))))
            .collect()
    }

    /// Compares the table with what this process wrote (when it keeps a reference); says
    /// whether it holds rules or sets it has not written.
    pub(super) fn compare(&mut self, r: &Reference) -> bool {
        if !r.keep {
            return false;
        }
        let mut unknown = false;
        let mut changed = Vec::new();
        for (comment, text) in self.rule_texts() {
            match r.rules.get(comment) {
                Some(t) if *t == text => {}
                Some(_) => changed.push(comment.to_string()),
                None => unknown = true,
            }
        }
        let mut strange = Vec::new();
        for (kind, name, decl) in objects(&self.text) {
            if kind != "set" || !own_set(name) {
                continue;
            }
            match r.sets.get(name) {
                Some(d) if *d == decl => {}
                Some(_) => strange.push(format!("set {name} declared as {{ {decl} }}")),
                None => unknown = true,
            }
        }
        self.strange.extend(strange);
        self.suspect = unknown || !changed.is_empty() || !self.strange.is_empty();
        self.changed = changed;
        unknown
    }

    /// The comments of the input chain's rules, in order (a rule without one: `None`);
    /// `None` when there is no such chain.
    pub(super) fn chain_comments(&self) -> Option<Vec<Option<&str>>> {
        let mut lines = self.text.lines().map(str::trim);
        lines.find(|t| *t == "chain input {")?;
        Some(
            lines
                .take_while(|t| *t != "}")
                .filter(|t| !t.is_empty() && !t.starts_with("type filter hook input"))
                .map(|t| {
                    t.rfind("comment \"")
                        .map(|at| t[at + 9..].trim_end_matches('"'))
                })
                .collect(),
        )
    }

    /// The elements of a family's ban set; `None` when it has none.
    pub(super) fn ban_set(&self, family: Family) -> Option<&[(String, Option<Rule>)]> {
        self.bans
            .iter()
            .find(|(f, _)| *f == family)
            .map(|(_, e)| e.as_slice())
    }

    /// The rules of `family` in the input chain, in order, recognised by their comments;
    /// the rule matching the family's ban set stands for one ban rule per element of the
    /// set.
    pub(crate) fn listing(&self, family: Family) -> Listing {
        let mut l = Listing::default();
        // The input chain is there; its hook line, and whether it is tgknock's.
        let (mut exists, mut hook) = (false, None);
        let mut in_chain = false;
        let set_keys = Family::BOTH.map(ban_set_key);
        for line in self.text.lines() {
            let t = line.trim();
            if t == "chain input {" {
                exists = true;
                in_chain = true;
                continue;
            }
            if !in_chain {
                continue;
            }
            if t == "}" {
                in_chain = false;
                continue;
            }
            if t.starts_with("type filter hook input") {
                // Hooked otherwise (another priority, a policy of drop): not as written.
                hook = Some(t == HOOK);
                continue;
            }
            if t.is_empty() {
                continue;
            }
            // A rule without a comment is no rule of tgknock's, whichever family it
            // matches: it stands in both families' rules.
            let Some(comment) = comment_of(t) else {
                l.lines.push(rule_text(t));
                l.rules.push(None);
                continue;
            };
            if self.changed.iter().any(|c| c == comment) {
                // tgknock's comment on a rule another program wrote: in the family the
                // comment names (any other comment is in both).
                let other = Family::BOTH
                    .into_iter()
                    .any(|f| f != family && comment.split(' ').next() == Some(digit(f)));
                if !other {
                    l.lines.push(rule_text(t));
                    l.rules.push(None);
                }
                continue;
            }
            if let Some(k) = set_keys.iter().position(|k| comment == k) {
                if Family::BOTH[k] == family {
                    let set = ban_set(family);
                    let elements = self.ban_set(family).unwrap_or_default();
                    l.lines.reserve(elements.len());
                    l.rules.reserve(elements.len());
                    for (text, rule) in elements {
                        // `@SET TEXT`, without the formatting machinery: one per ban.
                        let mut line = String::with_capacity(set.len() + text.len() + 2);
                        line.push('@');
                        line.push_str(&set);
                        line.push(' ');
                        line.push_str(text);
                        l.lines.push(line);
                        l.rules.push(rule.clone());
                    }
                }
                continue;
            }
            // A key names its family; a comment that is no key stands in both. The family
            // is the key's as read, never the comment's first word by another split: a
            // comment read as a key of one family by the one and of neither by the other
            // (`4<TAB>x`) would hide its rule from both.
            let rule = from_key(comment);
            let mine = rule.as_ref().is_none_or(|r| r.family == family);
            if mine {
                l.lines.push(t.to_string());
                l.rules.push(rule);
            }
        }
        l.reach = reach(exists, hook);
        if exists {
            for s in &self.strange {
                l.lines.push(s.clone());
                l.rules.push(None);
            }
        }
        l
    }
}

/// How the kernel reaches the input chain: `exists`, and its hook line (`Some(true)`: as
/// tgknock declares it).
pub(super) fn reach(exists: bool, hook: Option<bool>) -> Reach {
    let otherwise = || format!("the table inet {TABLE}: its input chain is hooked otherwise");
    match (exists, hook) {
        (false, _) => Reach::Unreached(format!(
            "the table inet {TABLE} (or its input chain) is gone"
        )),
        (true, None) => Reach::Unreached(otherwise()),
        (true, Some(false)) => Reach::Otherwise(otherwise()),
        (true, Some(true)) => Reach::AsWritten,
    }
}
