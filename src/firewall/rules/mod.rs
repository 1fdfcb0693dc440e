//! The rules tgknock wants, whatever the backend: computed from the policy, the state and
//! the time, and the views of a listing read back from the kernel. Pure: no processes, no
//! clock. Each backend renders a [`Rule`] and parses it back in its own file, and names the
//! knock lists its own way ([`List`]).
//!
//! Inside: [`rule`] (a rule and its parts) below [`listing`] (what is read back, and
//! its views) below [`mod@desired`] (what the policy and the state ask for).

mod desired;
mod listing;
mod rule;

pub(crate) use desired::*;
pub(crate) use listing::*;
pub(crate) use rule::*;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::base::addr::{Cidr, Family};
    use crate::base::gate::parse_gates;
    use crate::base::gate::{Gate, GateName, Knock};
    use crate::store::state::State;
    use crate::store::state::{Actor, Opening};

    pub(crate) fn gates() -> Vec<Gate> {
        parse_gates("ssh=22/tcp web=80/tcp,443/tcp mosh=60000:61000/udp").unwrap()
    }

    pub(crate) fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    pub(crate) fn policy(always: &[&str], knock: Option<Knock>) -> Policy {
        Policy {
            gates: gates(),
            always_allow: always.iter().map(|c| cidr(c)).collect(),
            knock,
            limits: Vec::new(),
            deadlines: true,
        }
    }

    pub(crate) fn knock() -> Knock {
        Knock {
            ports: vec![7101, 7102, 7103],
            open_for: 30,
            gate: GateName::new("ssh").unwrap(),
        }
    }

    pub(crate) fn state(openings: &[(&str, Option<&str>, Option<u64>)]) -> State {
        let mut s = State::default();
        for (g, from, until) in openings {
            s.open(
                &GateName::new(g).unwrap(),
                Opening {
                    from: from.map(cidr),
                    until: *until,
                    by: Actor::Console,
                },
            )
            .unwrap();
        }
        s
    }

    #[test]
    fn a_ban_comes_before_the_established_rule_and_after_the_replies_and_the_always_allowed() {
        // A ban drops every packet of its source, its established connections too; an
        // always-allowed source returns before any ban could match it, and so do the
        // answers to the board's own connections (its long poll, its DNS).
        let p = policy(&["10.0.0.0/8", "fd00::/8"], None);
        let mut s = state(&[]);
        for (addr, until) in [("198.51.100.9", Some(500)), ("2001:db8::/48", None)] {
            s.ban(crate::store::state::Ban {
                addr: cidr(addr),
                until,
                by: Actor::Console,
            })
            .unwrap();
        }
        for fam in Family::BOTH {
            let rules = desired(&p, &s, 100, fam);
            let at = |what: &dyn Fn(&Rule) -> bool| rules.iter().position(what).unwrap();
            let allow = at(&|r| r.tag == TAG_ALWAYS_ALLOW);
            let ban = at(&|r| r.is_ban());
            let replies = at(&|r| r.established && r.reply);
            let est = at(&|r| r.established && !r.reply);
            assert!(
                allow < replies && replies < ban && ban < est,
                "{fam}: {rules:#?}"
            );
            assert_eq!(rules[replies].tag, TAG_REPLIES);
            assert_eq!(rules[replies].target, Some(Target::Return));
            assert!(rules[replies].src.is_none() && rules[replies].port().is_none());
            assert_eq!(rules[ban].src.map(|c| c.family()), Some(fam));
            assert!(!rules[ban].syn && rules[ban].port().is_none());
        }
    }

    #[test]
    fn expired_openings_are_closed() {
        let s = state(&[("ssh", None, Some(100))]);
        assert_eq!(
            expected_view(&gates()[0], &s, 99, Family::V4, false),
            GateView::OpenToAll
        );
        assert_eq!(
            expected_view(&gates()[0], &s, 99, Family::V4, true),
            GateView::Open(vec![Pass {
                from: None,
                until: Some(100)
            }])
        );
        assert_eq!(
            expected_view(&gates()[0], &s, 100, Family::V4, true),
            GateView::Closed
        );
        let r = desired(&policy(&[], None), &s, 100, Family::V4);
        assert!(
            r.iter()
                .any(|r| r.tag == "tgknock-gate:ssh" && r.target == Some(Target::Drop))
        );
    }

    #[test]
    fn open_to_one_source_keeps_the_other_family_closed() {
        let s = state(&[("web", Some("203.0.113.7"), Some(100))]);
        let web = &gates()[1];
        assert_eq!(
            expected_view(web, &s, 50, Family::V4, true),
            GateView::Open(vec![Pass {
                from: Some(cidr("203.0.113.7")),
                until: Some(100)
            }])
        );
        assert_eq!(
            expected_view(web, &s, 50, Family::V4, false),
            GateView::Open(vec![Pass {
                from: Some(cidr("203.0.113.7")),
                until: None
            }])
        );
        assert_eq!(
            expected_view(web, &s, 50, Family::V6, true),
            GateView::Closed
        );
        let v4 = desired(&policy(&[], None), &s, 50, Family::V4);
        let ret = v4
            .iter()
            .position(|r| r.target == Some(Target::Return) && r.tag == "tgknock-gate:web")
            .unwrap();
        let drop = v4
            .iter()
            .position(|r| r.target == Some(Target::Drop) && r.tag == "tgknock-gate:web")
            .unwrap();
        assert!(ret < drop, "sources come before the DROP");
    }

    #[test]
    fn list_names_round_trip() {
        for l in [
            List::Step(1, Family::V4),
            List::Step(7, Family::V6),
            List::Open(Family::V4),
        ] {
            assert_eq!(List::parse(&l.name()), Some(l), "{}", l.name());
        }
        for bad in ["k0_v4", "k_v4", "open_v5", "k01_v4", "kx_v6", "open", ""] {
            assert_eq!(List::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn knock_sequences_parse_once_for_config_and_console() {
        assert_eq!(
            Knock::parse_ports("7101, 7102,7103"),
            Ok(vec![7101, 7102, 7103])
        );
        for (bad, why) in [
            ("7101", "2 to 8"),
            ("7101,7101", "twice"),
            ("1,2,3,4,5,6,7,8,9", "2 to 8"),
            ("0,5", "not a port"),
            ("1,x", "not a port"),
        ] {
            let e = Knock::parse_ports(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
