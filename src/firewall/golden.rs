//! Golden test of the rendered rules: the `iptables-restore` inputs and `nft -f` scripts
//! tgknock writes for a set of configurations and states, compared byte for byte with
//! `tests/golden/rules.txt`. A change of the rules is a change of that file, made on
//! purpose: `TGKNOCK_BLESS=1 cargo test --lib golden` rewrites it.

use std::fmt::Write;

use crate::base::addr::Family;
use crate::base::gate::GateName;
use crate::firewall::iptables::{self, JumpFix};
use crate::firewall::{Firewall, nft};
use crate::store::config::Config;
use crate::store::state::{Actor, Ban, Opening, State};

const NOW: u64 = 1_800_000_000;

fn config(pairs: &[(&str, &str)]) -> Config {
    let env: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::from_sources(None, &env).expect("a valid test configuration")
}

type Pairs = &'static [(&'static str, &'static str)];

fn configs() -> Vec<(&'static str, Pairs)> {
    vec![
        ("defaults", &[]),
        (
            "three gates, always-allow, knock, own chain",
            &[
                (
                    "TGKNOCK_GATES",
                    "ssh=22/tcp web=80/tcp,443/tcp mosh=60000:61000/udp",
                ),
                ("TGKNOCK_ALWAYS_ALLOW", "192.168.1.0/24,fd00::/8,10.1.2.3"),
                ("TGKNOCK_KNOCK", "7311,2918,9440"),
                ("TGKNOCK_KNOCK_OPEN_FOR", "45s"),
                ("TGKNOCK_KNOCK_GATE", "web"),
                ("TGKNOCK_CHAIN", "FW-tgk_1"),
            ],
        ),
        (
            "IPv6 off",
            &[
                ("TGKNOCK_GATES", "ssh=2222/tcp dns=53/udp"),
                ("TGKNOCK_IP6TABLES", "off"),
                ("TGKNOCK_KNOCK", "1000,2000"),
            ],
        ),
        (
            "rate limits",
            &[
                ("TGKNOCK_GATES", "ssh=22/tcp web=80/tcp,443/tcp dns=53/udp"),
                ("TGKNOCK_RATE_LIMIT", "ssh=6/min web=60/min dns=100/hour"),
                ("TGKNOCK_ALWAYS_ALLOW", "192.168.1.0/24"),
            ],
        ),
    ]
}

/// The configuration `pairs` with the backend `kind` (iptables or nft).
fn with_backend(pairs: Pairs, kind: &str) -> Config {
    let mut all = pairs.to_vec();
    all.push(("TGKNOCK_FIREWALL", kind));
    config(&all)
}

fn opening(from: Option<&str>, until: Option<u64>) -> Opening {
    Opening {
        from: from.map(|f| f.parse().unwrap()),
        until,
        by: Actor::Console,
    }
}

fn states() -> Vec<(&'static str, State)> {
    let mut several = State::default();
    for (gate, from, until) in [
        ("ssh", None, Some(NOW + 900)),
        ("web", Some("203.0.113.7"), Some(NOW + 60)),
        ("web", Some("2001:db8::/64"), None),
        ("web", Some("198.51.100.0/24"), Some(NOW + 7200)),
        ("mosh", Some("2001:db8:1::5"), Some(NOW + 30)),
        ("dns", None, None),
    ] {
        several
            .open(&GateName::new(gate).unwrap(), opening(from, until))
            .unwrap();
    }
    let mut expired = State::default();
    let ssh = GateName::new("ssh").unwrap();
    expired.open(&ssh, opening(None, Some(NOW - 1))).unwrap();
    expired
        .open(&ssh, opening(Some("203.0.113.9"), Some(NOW)))
        .unwrap();
    let mut banned = State::default();
    banned.open(&ssh, opening(None, Some(NOW + 600))).unwrap();
    for (addr, until) in [
        ("203.0.113.66", Some(NOW + 86_400)),
        ("198.51.100.0/24", None),
        ("2001:db8:bad::/48", Some(NOW + 3_600)),
        ("203.0.113.99", Some(NOW)),
    ] {
        banned
            .ban(Ban {
                addr: addr.parse().unwrap(),
                until,
                by: Actor::Console,
            })
            .unwrap();
    }
    vec![
        ("nothing open", State::default()),
        ("several openings", several),
        ("openings past their deadline", expired),
        ("bans, one past its deadline", banned),
    ]
}

/// The `iptables-restore` inputs of `state`, one per family (the second with a jump to
/// repair).
fn render_restore(
    out: &mut String,
    ipt: &Firewall,
    chain: &str,
    families: &[Family],
    state: &State,
) {
    for (family, fix) in families.iter().zip([
        JumpFix {
            delete: 0,
            insert: true,
        },
        JumpFix {
            delete: 2,
            insert: true,
        },
    ]) {
        let _ = writeln!(out, "---- iptables-restore input, {family}");
        out.push_str(&iptables::restore_input(
            chain,
            &ipt.desired(state, NOW, *family),
            fix,
        ));
    }
}

/// The nft scripts of `state`: to a table without tgknock's rules, afresh, and (with bans)
/// to tables that hold them already.
fn render_nft(out: &mut String, nftables: &Firewall, families: &[Family], state: &State) {
    let rules_of: Vec<_> = families
        .iter()
        .map(|f| (*f, nftables.desired(state, NOW, *f)))
        .collect();
    let _ = writeln!(out, "---- nft -f script");
    out.push_str(&nft::script(
        &nftables.policy,
        &rules_of,
        NOW,
        Some(&nft::Table::default()),
    ));
    let _ = writeln!(out, "---- nft -f script, fresh table");
    out.push_str(&nft::script(&nftables.policy, &rules_of, NOW, None));
    if rules_of.iter().flat_map(|(_, r)| r).any(|r| r.is_ban()) {
        // The same bans listed already (a minute ago): their elements stay.
        let listed = nft::Table::read(nft::tests::listed(&rules_of, NOW - 60));
        let _ = writeln!(out, "---- nft -f script, the bans in place already");
        out.push_str(&nft::script(
            &nftables.policy,
            &rules_of,
            NOW,
            Some(&listed),
        ));
        // The same bans, the chain holding only them (as before an `/open`): the
        // chain is refilled, the elements stay.
        let bans_only: Vec<_> = rules_of
            .iter()
            .map(|(f, r)| (*f, r.iter().filter(|r| r.is_ban()).cloned().collect()))
            .collect();
        let listed = nft::Table::read(nft::tests::listed(&bans_only, NOW - 60));
        let _ = writeln!(
            out,
            "---- nft -f script, the bans in place, the chain otherwise"
        );
        out.push_str(&nft::script(
            &nftables.policy,
            &rules_of,
            NOW,
            Some(&listed),
        ));
    }
}

/// Each backend rendered by a firewall of that backend, as the daemon would have it.
fn render_all() -> String {
    let mut out = String::new();
    for (cname, pairs) in configs() {
        let mut ipt = Firewall::from_config(&with_backend(pairs, "iptables"));
        let mut nftables = Firewall::from_config(&with_backend(pairs, "nft"));
        let cfg = with_backend(pairs, "iptables");
        let chain = cfg.firewall.chain.clone();
        let families: Vec<Family> = if cfg.firewall.ip6tables.is_some() {
            vec![Family::V4, Family::V6]
        } else {
            vec![Family::V4]
        };
        let mut runs: Vec<(String, State, bool)> = states()
            .into_iter()
            .map(|(n, s)| (n.to_string(), s, true))
            .collect();
        // A kernel without xt_time / `meta time`: no deadlines in the rules.
        for (n, s) in states().into_iter().skip(1) {
            runs.push((format!("{n}, kernel without deadlines"), s, false));
        }
        let mut before: Option<(String, Vec<crate::firewall::rules::Rule>)> = None;
        for (sname, state, deadlines) in runs {
            ipt.policy.deadlines = deadlines;
            nftables.policy.deadlines = deadlines;
            let _ = writeln!(out, "==== config: {cname} / state: {sname}");
            render_restore(&mut out, &ipt, &chain, &families, &state);
            // The same change made in place, from the chain of the state before.
            let v4 = ipt.desired(&state, NOW, Family::V4);
            if let Some((prev, rules)) = before.replace((sname.clone(), v4.clone())) {
                let listing = iptables::Chain {
                    exists: true,
                    jumps: 1,
                    jump_first: true,
                    listing: crate::firewall::rules::Listing {
                        reach: crate::firewall::rules::Reach::AsWritten,
                        lines: Vec::new(),
                        rules: rules.into_iter().map(Some).collect(),
                    },
                    ..iptables::Chain::new(Family::V4)
                };
                let _ = writeln!(
                    out,
                    "---- iptables-restore input, IPv4, from the chain of \"{prev}\""
                );
                out.push_str(&iptables::restore_change(
                    &chain,
                    &listing,
                    &v4,
                    JumpFix::from_listing(&listing),
                ));
            }
            render_nft(&mut out, &nftables, &families, &state);
        }
        let listing = iptables::parse_listing(
            &chain,
            &format!(
                "-N {chain}\n-A INPUT -j {chain}\n-A INPUT -p icmp -j ACCEPT\n-A INPUT -j {chain}\n-A {chain} -j RETURN\n"
            ),
            Family::V4,
        );
        let _ = writeln!(out, "==== config: {cname} / teardown and rollback");
        out.push_str(&iptables::teardown_input(&chain, &listing).unwrap_or_default());
        out.push_str(&iptables::restore_lines(&chain, &listing.lines));
    }
    out
}

#[test]
fn rendered_rules_are_the_golden_ones() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/rules.txt");
    let now = render_all();
    if std::env::var("TGKNOCK_BLESS").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(std::path::Path::new(path).parent().unwrap()).unwrap();
        std::fs::write(path, &now).unwrap();
    }
    let golden = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{path}: {e} (TGKNOCK_BLESS=1 writes it)"));
    if golden != now {
        let (line, (a, b)) = golden
            .lines()
            .zip(now.lines())
            .enumerate()
            .find(|(_, (a, b))| a != b)
            .unwrap_or((
                golden.lines().count().min(now.lines().count()),
                ("<end>", "<end>"),
            ));
        panic!(
            "the rendered rules differ from {path} at line {}:\n  golden: {a}\n  now:    {b}\n(TGKNOCK_BLESS=1 rewrites the file if the change is meant)",
            line + 1
        );
    }
}
