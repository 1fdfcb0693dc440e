//! Verifying a change by reading back what it touched: the input chain and the ban set
//! elements it added or deleted, in one `nft -f -` of `list chain` and `get element`,
//! instead of the whole table (with 1,000 bans, 100 kB of commented elements). The
//! elements it left alone are those of the table it was made against, read just before.
//!
//! Where nft cannot say it, the whole table is read: a set declared, flushed or deleted, a
//! table written afresh, an element that is a range (nft 1.0.6 prints a range's `get
//! element` without its timeout and comment), more than one element deleted (`nft -f`
//! stops at the first command that fails, and a deleted element's `get` fails), or any
//! answer other than the one expected.

use std::path::Path;

use super::key::{TABLE, ban_set};
use super::render::line;
use super::table::{Elements, Table, sort_elements};
use crate::base::addr::{Cidr, Family};
use crate::base::error::{Error, Result};
use crate::firewall::tool::output;

/// What a script changed besides the input chain (which is always read back).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Touched {
    /// Only a listing of the whole table shows it.
    pub(super) whole: bool,
    /// The sources of the ban set elements it added (a deadline changed: deleted and added).
    pub(super) added: Vec<Cidr>,
    /// The sources of the ban set elements it deleted.
    pub(super) deleted: Vec<Cidr>,
}

/// What a write sent: its scripts, and what the last one touched in the table the
/// protocol read before it (`None`: read the whole table back).
#[derive(Debug, Default)]
pub(crate) struct Sent {
    pub(super) scripts: Vec<String>,
    pub(super) touched: Option<Touched>,
}

fn host(c: &Cidr) -> bool {
    c.prefix()
        == match c.family() {
            Family::V4 => 32,
            Family::V6 => 128,
        }
}

impl Touched {
    /// The `nft -f -` input that reads back what was touched: the input chain, the
    /// elements added, and last the one element deleted (and not added again), whose
    /// `get` must fail. `None` when nft cannot say it.
    pub(super) fn commands(&self) -> Option<(String, Option<Cidr>)> {
        let mut gone = self.deleted.iter().filter(|c| !self.added.contains(c));
        let (last, more) = (gone.next().copied(), gone.next());
        if self.whole || more.is_some() || !self.added.iter().chain(&last).all(host) {
            return None;
        }
        let mut s = String::from("list chain inet ");
        s.push_str(TABLE);
        s.push_str(" input\n");
        for c in self.added.iter().chain(&last) {
            let (set, addr) = (ban_set(c.family()), c.addr().to_string());
            line(
                &mut s,
                &["get element inet ", TABLE, " ", &set, " { ", &addr, " }"],
            );
        }
        Some((s, last))
    }
}

/// Whether `e` is nft's failure of the last of `lines` commands read from stdin (those
/// before it succeeded) because the element it asked for is not there.
pub(super) fn absent(e: &Error, lines: usize) -> bool {
    let Error::Firewall {
        status: Some(_),
        stderr,
        ..
    } = e
    else {
        return false;
    };
    // `/dev/stdin:LINE:COLUMNS: Error: …`: nft stops at the first command that fails.
    let line = stderr
        .split_once(':')
        .and_then(|(_, rest)| rest.split_once(':'))
        .and_then(|(n, _)| n.parse::<usize>().ok());
    line == Some(lines) && stderr.contains("No such file or directory")
}

/// Reads back what `touched` touched in `base`, the table the change was made against,
/// with the program `nft`: the table the change left, its untouched elements taken from
/// `base`. `None`: nft cannot say it, or said something else than expected (the whole
/// table is then read).
pub(super) fn read_touched(nft: &Path, touched: &Touched, base: &Table) -> Result<Option<Table>> {
    let Some((commands, gone)) = touched.commands() else {
        return Ok(None);
    };
    let (text, failed) = output(nft, &["-f", "-"], Some(&commands))?;
    match failed {
        None => {}
        Some(e) if gone.is_some() && absent(&e, commands.lines().count()) => {}
        Some(e) => {
            log::debug!("nft could not read back the change alone ({e}); reading the table");
            return Ok(None);
        }
    }
    Ok(merged(Table::read(text), touched, base))
}

/// The table a change left: the chain and the touched elements as `got` read them, the
/// other elements as `base` holds them. `None` when an element read back is not one
/// tgknock wrote (the whole table says more).
pub(super) fn merged(mut got: Table, t: &Touched, base: &Table) -> Option<Table> {
    let touched = |c: &Cidr| t.added.contains(c) || t.deleted.contains(c);
    let mut bans: Vec<(Family, Elements)> = Vec::new();
    for family in Family::BOTH {
        let kept = base.ban_set(family);
        let read = got.ban_set(family);
        if kept.is_none() && read.is_none() {
            continue;
        }
        let mut set: Elements = Vec::new();
        for (text, rule) in kept.unwrap_or_default() {
            let src = rule.as_ref().and_then(|r| r.src);
            if !src.is_some_and(|c| touched(&c)) {
                set.push((text.clone(), rule.clone()));
            }
        }
        for (text, rule) in read.unwrap_or_default() {
            let src = rule.as_ref()?.src?;
            if touched(&src) {
                set.push((text.clone(), rule.clone()));
            }
        }
        sort_elements(&mut set);
        bans.push((family, set));
    }
    got.bans = bans;
    got.narrow = true;
    Some(got)
}

#[cfg(test)]
mod tests {
    use super::super::render::render;
    use super::super::tests::listed;
    use super::*;
    use crate::firewall::rules::tests::{cidr, policy, state};
    use crate::firewall::rules::{Policy, Rule, desired};
    use crate::store::state::{Actor, Ban, State};

    const NOW: u64 = 1_800_000_000;

    fn banned(addrs: &[&str]) -> State {
        let mut s = state(&[("ssh", None, Some(NOW + 900))]);
        for a in addrs {
            let until = Some(NOW + 3_600);
            s.ban(Ban {
                addr: cidr(a),
                until,
                by: Actor::Console,
            })
            .unwrap();
        }
        s
    }

    fn all(p: &Policy, s: &State) -> Vec<(Family, Vec<Rule>)> {
        Family::BOTH
            .into_iter()
            .map(|f| (f, desired(p, s, NOW, f)))
            .collect()
    }

    /// The table as listed with the bans of `s`.
    fn table(p: &Policy, s: &State) -> Table {
        Table::read(listed(&all(p, s), NOW))
    }

    /// What a change from `from` to `to` touched, and the table it was made against.
    fn change(p: &Policy, from: &State, to: &State) -> (Touched, Table) {
        let before = table(p, from);
        let (_, touched) = render(p, &all(p, to), NOW, Some(&before));
        (touched, before)
    }

    /// `list chain inet tgknock input` as nft prints the rules of `s`.
    fn chain(p: &Policy, s: &State) -> String {
        let whole = listed(&all(p, s), NOW);
        let at = whole.find("\tchain input {").unwrap();
        format!("table inet tgknock {{\n{}", &whole[at..])
    }

    /// `get element inet tgknock ban_v4 { … }` as nft 1.0.6 prints it.
    fn got(elements: &str) -> String {
        format!(
            "table inet tgknock {{\n\tset ban_v4 {{\n\t\ttype ipv4_addr\n\t\tflags interval,timeout\n\t\telements = {{ {elements} }}\n\t}}\n}}\n"
        )
    }

    fn matches(t: &Table, p: &Policy, s: &State) -> bool {
        all(p, s).iter().all(|(f, r)| t.listing(*f).matches(r))
    }

    const STDIN_2_ABSENT: &str = "/dev/stdin:2:1-49: Error: Could not process rule: No such file or directory\nget element inet tgknock ban_v4 { 198.51.100.2 }\n^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n";

    fn failed(stderr: &str) -> Error {
        Error::Firewall {
            program: "nft".into(),
            arguments: vec!["-f".into(), "-".into()],
            status: Some(1),
            stderr: stderr.into(),
        }
    }

    #[test]
    fn a_ban_is_verified_by_its_element_alone() {
        let p = policy(&[], None);
        let (from, to) = (
            banned(&["198.51.100.1", "198.51.100.2", "2001:db8::1"]),
            banned(&["198.51.100.1", "198.51.100.2", "2001:db8::1", "192.0.2.78"]),
        );
        let (touched, base) = change(&p, &from, &to);
        assert_eq!(
            touched,
            Touched {
                whole: false,
                added: vec![cidr("192.0.2.78")],
                deleted: vec![],
            }
        );
        let (commands, gone) = touched.commands().unwrap();
        assert_eq!(
            commands,
            "list chain inet tgknock input\nget element inet tgknock ban_v4 { 192.0.2.78 }\n"
        );
        assert_eq!(gone, None);
        let element = "192.0.2.78 timeout 1h expires 59m59s980ms comment \"4 tgknock:ban src=192.0.2.78/32 until=1800003600 drop\"";
        let reply = format!("{}{}", chain(&p, &to), got(element));
        let t = merged(Table::read(reply), &touched, &base).unwrap();
        assert!(t.narrow && t.hooked);
        // The elements left alone are the ones read before, in both families.
        assert!(matches(&t, &p, &to));
        assert!(!matches(&t, &p, &from));
        // The element missing (another program deleted it meanwhile): not verified.
        let t = merged(Table::read(chain(&p, &to)), &touched, &base).unwrap();
        assert!(!matches(&t, &p, &to));
        // Written with another deadline: not the ban.
        let other = element.replace("until=1800003600", "until=1800007200");
        let t = merged(
            Table::read(format!("{}{}", chain(&p, &to), got(&other))),
            &touched,
            &base,
        );
        assert!(!matches(&t.unwrap(), &p, &to));
        // An element tgknock did not write, its comment with commas and braces in its
        // quotes, beside the one asked for: the whole table is read.
        let odd = format!("{element}, 192.0.2.79 comment \"it's {{odd}}, yes }}\"");
        let read = Table::read(format!("{}{}", chain(&p, &to), got(&odd)));
        assert_eq!(read.ban_set(Family::V4).map(<[_]>::len), Some(2));
        assert_eq!(
            read.ban_set(Family::V4).unwrap()[0],
            ("192.0.2.79 comment \"it's {odd}, yes }\"".to_string(), None)
        );
        assert!(merged(read, &touched, &base).is_none());
    }

    #[test]
    fn an_unban_is_verified_by_its_elements_absence() {
        let p = policy(&[], None);
        let (from, to) = (
            banned(&["198.51.100.1", "198.51.100.2", "198.51.100.3"]),
            banned(&["198.51.100.1", "198.51.100.3"]),
        );
        let (touched, base) = change(&p, &from, &to);
        assert_eq!(touched.deleted, [cidr("198.51.100.2")]);
        assert!(touched.added.is_empty() && !touched.whole);
        let (commands, gone) = touched.commands().unwrap();
        assert_eq!(
            commands,
            "list chain inet tgknock input\nget element inet tgknock ban_v4 { 198.51.100.2 }\n"
        );
        assert_eq!(gone, Some(cidr("198.51.100.2")));
        // nft printed the chain, then failed at the last command: the element is gone.
        assert!(absent(&failed(STDIN_2_ABSENT), commands.lines().count()));
        let t = merged(Table::read(chain(&p, &to)), &touched, &base).unwrap();
        assert!(matches(&t, &p, &to));
        // Still there (the delete did not take): not verified.
        let still = "198.51.100.2 timeout 1h expires 59m58s comment \"4 tgknock:ban src=198.51.100.2/32 until=1800003600 drop\"";
        let t = merged(
            Table::read(format!("{}{}", chain(&p, &to), got(still))),
            &touched,
            &base,
        );
        assert!(!matches(&t.unwrap(), &p, &to));
        // Any other failure is no answer: the table is gone (the chain's listing failed),
        // or nft failed otherwise.
        for other in [
            STDIN_2_ABSENT.replace("stdin:2:", "stdin:1:"),
            STDIN_2_ABSENT.replace("No such file or directory", "Operation not permitted"),
            "Error: syntax error\n".to_string(),
        ] {
            assert!(!absent(&failed(&other), 2), "{other}");
        }
        let cannot_run = Error::Firewall {
            program: "nft".into(),
            arguments: vec![],
            status: None,
            stderr: "cannot run it".into(),
        };
        assert!(!absent(&cannot_run, 2));
    }

    #[test]
    fn what_nft_cannot_say_alone_is_read_whole() {
        let p = policy(&[], None);
        let none = banned(&[]);
        let one = banned(&["198.51.100.1"]);
        let two = banned(&["198.51.100.1", "198.51.100.2"]);
        let three = banned(&["198.51.100.1", "198.51.100.2", "198.51.100.3"]);
        // The first ban declares the set; the last one deletes it.
        assert!(change(&p, &none, &one).0.whole);
        assert!(change(&p, &one, &none).0.whole);
        assert_eq!(change(&p, &one, &none).0.commands(), None);
        // Two elements deleted: the first `get` that fails ends nft's reading.
        let (touched, _) = change(&p, &three, &one);
        assert_eq!(touched.deleted.len(), 2);
        assert_eq!(touched.commands(), None);
        // A range: nft prints its `get element` without its timeout and its comment.
        let range = banned(&["198.51.100.1", "203.0.113.0/24"]);
        assert_eq!(change(&p, &one, &range).0.commands(), None);
        // A deadline changed: deleted and added again, read back as added.
        let mut longer = two.clone();
        longer.bans[1].until = Some(NOW + 7_200);
        let (touched, _) = change(&p, &two, &longer);
        assert_eq!(touched.deleted, touched.added);
        let (commands, gone) = touched.commands().unwrap();
        assert!(commands.ends_with("get element inet tgknock ban_v4 { 198.51.100.2 }\n"));
        assert_eq!(gone, None);
        // A gate closed: the chain alone.
        let mut closed = two.clone();
        closed.close(None);
        let (touched, _) = change(&p, &two, &closed);
        assert_eq!(touched, Touched::default());
        assert_eq!(
            touched.commands().unwrap().0,
            "list chain inet tgknock input\n"
        );
        // Against no table, or a table written afresh.
        let (_, touched) = render(&p, &all(&p, &two), NOW, None);
        assert!(touched.whole);
        let (_, touched) = render(&p, &all(&p, &two), NOW, Some(&Table::default()));
        assert!(touched.whole);
    }
}
