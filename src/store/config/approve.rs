//! The settings of `approve-login` (`TGKNOCK_APPROVE_TIMEOUT`, `TGKNOCK_APPROVE_EXEMPT`,
//! `TGKNOCK_APPROVE_USERS`), and who needs no approval.

use std::net::IpAddr;

use super::keys::{self, Key};
use crate::base::addr::Cidr;
use crate::base::duration;
use crate::base::error::{Error, Result};

/// The longest `TGKNOCK_APPROVE_TIMEOUT`, in seconds (sshd's `LoginGraceTime` is 120 s by
/// default; a longer wait only holds sshd's slot).
pub(crate) const MAX_TIMEOUT: u64 = 600;

/// The most login names in `TGKNOCK_APPROVE_USERS`, and the most sources in
/// `TGKNOCK_APPROVE_EXEMPT`.
const MAX_ITEMS: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Approve {
    /// Seconds.
    pub(crate) timeout: u64,
    /// Sources whose logins need no approval.
    pub(crate) exempt: Vec<Cidr>,
    /// Login names whose logins need approval; `None`: every user's.
    pub(crate) users: Option<Vec<String>>,
}

impl Default for Approve {
    fn default() -> Approve {
        Approve {
            timeout: 60,
            exempt: Vec::new(),
            users: None,
        }
    }
}

/// A login name as `TGKNOCK_APPROVE_USERS` takes it: what useradd accepts (letters, digits,
/// `.`, `_`, `-`, a trailing `$`), at most 32 bytes.
pub(crate) fn valid_login_name(name: &str) -> bool {
    let body = name.strip_suffix('$').unwrap_or(name);
    !body.is_empty()
        && name.len() <= 32
        && !body.starts_with('-')
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl Approve {
    /// From the settings: `get` gives a key's value when set and not empty, `bad` the error
    /// that names a key; `always_allow` is `TGKNOCK_ALWAYS_ALLOW`, the default exemption.
    pub(crate) fn parse(
        get: &dyn Fn(Key) -> Option<String>,
        bad: &dyn Fn(Key, String) -> Error,
        always_allow: &[Cidr],
    ) -> Result<Approve> {
        use keys::{APPROVE_EXEMPT as EXEMPT, APPROVE_TIMEOUT as TIMEOUT, APPROVE_USERS as USERS};
        let timeout = match get(TIMEOUT) {
            Some(v) => duration::parse(&v, None).map_err(|e| bad(TIMEOUT, e))?,
            None => 60,
        };
        if !(1..=MAX_TIMEOUT).contains(&timeout) {
            return Err(bad(TIMEOUT, "must be between 1s and 10m".into()));
        }
        let items = |v: &str| -> Vec<String> {
            v.split([',', ' '])
                .filter(|p| !p.is_empty())
                .map(String::from)
                .collect()
        };
        let exempt = match get(EXEMPT) {
            None => always_allow.to_vec(),
            Some(v) if v.trim() == "none" => Vec::new(),
            Some(v) => {
                let mut list: Vec<Cidr> = Vec::new();
                for part in items(&v) {
                    let c: Cidr = part.parse().map_err(|e| bad(EXEMPT, e))?;
                    if !list.contains(&c) {
                        list.push(c);
                    }
                }
                if list.len() > MAX_ITEMS {
                    return Err(bad(EXEMPT, format!("more than {MAX_ITEMS} entries")));
                }
                list
            }
        };
        let users = match get(USERS) {
            None => None,
            Some(v) => {
                let mut list: Vec<String> = Vec::new();
                for name in items(&v) {
                    if !valid_login_name(&name) {
                        return Err(bad(
                            USERS,
                            format!(
                                "'{}' is not a login name (letters, digits, '.', '_', '-'; at most 32)",
                                crate::base::text::short(&name)
                            ),
                        ));
                    }
                    if !list.contains(&name) {
                        list.push(name);
                    }
                }
                if list.len() > MAX_ITEMS {
                    return Err(bad(USERS, format!("more than {MAX_ITEMS} names")));
                }
                // A list that names nobody would let every login through unasked.
                if list.is_empty() {
                    return Err(bad(
                        USERS,
                        "names nobody, which would ask about no login: leave it unset to ask about every user's".into(),
                    ));
                }
                Some(list)
            }
        };
        Ok(Approve {
            timeout,
            exempt,
            users,
        })
    }

    /// Why a login of `user` from `rhost` passes without asking, or `None` when it needs an
    /// allowed user's press. A remote host that is a name (sshd's `UseDNS yes`), or none, is
    /// never exempt: only an address is matched.
    pub(crate) fn exempt(&self, user: &str, rhost: Option<&str>) -> Option<String> {
        if let Some(users) = &self.users
            && !users.iter().any(|u| u == user)
        {
            return Some(format!("{user} is not in TGKNOCK_APPROVE_USERS"));
        }
        let addr: IpAddr = rhost?.parse().ok()?;
        // An IPv4-mapped IPv6 address is its IPv4 host.
        let addr = match addr {
            IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(v6)),
            a => a,
        };
        self.exempt
            .iter()
            .find(|c| Cidr::new(addr, c.prefix()).as_ref() == Some(*c))
            .map(|c| format!("{addr} is in TGKNOCK_APPROVE_EXEMPT ({})", c.to_iptables()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)], always: &[&str]) -> std::result::Result<Approve, String> {
        let get = |k: Key| {
            pairs
                .iter()
                .find(|(key, _)| *key == k.name)
                .map(|(_, v)| v.to_string())
                .filter(|v| !v.is_empty())
        };
        let bad = |k: Key, why: String| Error::config(k.name, why);
        let always: Vec<Cidr> = always.iter().map(|s| s.parse().unwrap()).collect();
        Approve::parse(&get, &bad, &always).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_ask_for_every_user_and_exempt_the_always_allowed() {
        let a = parse(&[], &["192.168.1.0/24"]).unwrap();
        assert_eq!(a.timeout, 60);
        assert_eq!(a.users, None);
        assert!(a.exempt("root", Some("192.168.1.7")).is_some());
        assert!(a.exempt("root", Some("::ffff:192.168.1.7")).is_some());
        assert_eq!(a.exempt("root", Some("203.0.113.7")), None);
        assert_eq!(a.exempt("root", None), None);
        assert_eq!(a.exempt("root", Some("lan.example")), None);
        let none = parse(&[("TGKNOCK_APPROVE_EXEMPT", "none")], &["192.168.1.0/24"]).unwrap();
        assert_eq!(none.exempt("root", Some("192.168.1.7")), None);
    }

    #[test]
    fn users_and_exempt_sources_are_chosen() {
        let a = parse(
            &[
                ("TGKNOCK_APPROVE_USERS", "root,ada"),
                ("TGKNOCK_APPROVE_EXEMPT", "10.0.0.0/8 2001:db8::/32"),
                ("TGKNOCK_APPROVE_TIMEOUT", "2m"),
            ],
            &["192.168.1.0/24"],
        )
        .unwrap();
        assert_eq!(a.timeout, 120);
        assert!(
            a.exempt("bob", Some("203.0.113.7"))
                .unwrap()
                .contains("bob is not in")
        );
        assert_eq!(a.exempt("ada", Some("203.0.113.7")), None);
        assert_eq!(a.exempt("ada", Some("192.168.1.7")), None);
        assert!(a.exempt("ada", Some("10.1.2.3")).is_some());
        assert!(a.exempt("ada", Some("2001:db8::5")).is_some());
    }

    #[test]
    fn bad_values_name_their_key() {
        for (k, v) in [
            ("TGKNOCK_APPROVE_TIMEOUT", "0"),
            ("TGKNOCK_APPROVE_TIMEOUT", "11m"),
            ("TGKNOCK_APPROVE_TIMEOUT", "60"),
            ("TGKNOCK_APPROVE_EXEMPT", "10.0.0.0/33"),
            ("TGKNOCK_APPROVE_USERS", "ro ot;rm"),
            ("TGKNOCK_APPROVE_USERS", "-root"),
            ("TGKNOCK_APPROVE_USERS", ","),
            ("TGKNOCK_APPROVE_USERS", " , "),
        ] {
            let e = parse(&[(k, v)], &[]).unwrap_err();
            assert!(e.contains(k), "{k}={v}: {e}");
        }
    }
}
