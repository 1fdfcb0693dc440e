//! IPv4/IPv6 addresses and CIDR blocks, as chat users and config files write them.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// The two address families tgknock keeps in step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub const BOTH: [Family; 2] = [Family::V4, Family::V6];

    /// `v4` / `v6`, for names made of it (knock lists, JSON keys).
    pub fn short(self) -> &'static str {
        match self {
            Family::V4 => "v4",
            Family::V6 => "v6",
        }
    }
}

impl fmt::Display for Family {
    /// `IPv4` / `IPv6`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// An address block; host bits are always zero (`10.1.2.3/8` is stored as `10.0.0.0/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn family(&self) -> Family {
        match self.addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    fn max_prefix(addr: &IpAddr) -> u8 {
        match addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        }
    }

    /// A block from an address and prefix, masking host bits.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Cidr> {
        if prefix > Self::max_prefix(&addr) {
            return None;
        }
        let addr = match addr {
            IpAddr::V4(a) => {
                let mask = if prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - prefix)
                };
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) => {
                let mask = if prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - prefix)
                };
                IpAddr::V6((u128::from(a) & mask).into())
            }
        };
        Some(Cidr { addr, prefix })
    }

    /// An address or block to ban, `text`: never every address (`…/0`), which would cut
    /// everyone off; the refusal names it as `shown`.
    pub(crate) fn bannable(text: &str, shown: &str) -> Result<Cidr, String> {
        if text.ends_with("/0") {
            return Err(format!(
                "{shown} is every address: a ban of it would cut everyone off, you too"
            ));
        }
        text.parse()
    }

    /// The iptables form: always with a prefix (`1.2.3.4/32`), as `iptables -S` prints it.
    pub fn to_iptables(&self) -> String {
        format!("{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = String;

    /// Accepts `1.2.3.4`, `1.2.3.4/32`, `2001:db8::1`, `2001:db8::/32`. Rejects zones,
    /// brackets, out-of-range prefixes and `/0` (an opening to everyone is `/open` without
    /// an address; `/0` would silently leave the other family closed).
    fn from_str(s: &str) -> Result<Cidr, String> {
        let bad = || format!("'{s}' is not an IPv4/IPv6 address or CIDR block");
        if s.is_empty() || s.len() > 50 {
            return Err(bad());
        }
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let mut addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let mut prefix = prefix.map(str::to_string);
        // An IPv4-mapped IPv6 address (::ffff:1.2.3.4) means the IPv4 host: match it as
        // IPv4, where its packets are.
        if let IpAddr::V6(v6) = addr
            && let Some(v4) = v6.to_ipv4_mapped()
        {
            addr = IpAddr::V4(v4);
            if let Some(p) = &prefix {
                match p.parse::<u8>() {
                    Ok(n) if (96..=128).contains(&n) && p.bytes().all(|b| b.is_ascii_digit()) => {
                        prefix = Some((n - 96).to_string());
                    }
                    _ => {
                        return Err(format!(
                            "'{s}': an IPv4-mapped block needs a prefix of 96 to 128"
                        ));
                    }
                }
            }
        }
        let prefix = prefix.as_deref();
        let max = Self::max_prefix(&addr);
        let prefix = match prefix {
            None => max,
            Some(p) => {
                if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                let p: u8 = p.parse().map_err(|_| bad())?;
                if p > max {
                    return Err(format!("'{s}': the prefix length must be at most {max}"));
                }
                p
            }
        };
        if prefix == 0 {
            return Err(format!(
                "'{s}' covers every address; to open to everyone leave the address out"
            ));
        }
        Cidr::new(addr, prefix).ok_or_else(bad)
    }
}

impl fmt::Display for Cidr {
    /// `1.2.3.4` for a single address, `10.0.0.0/8` for a block.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix == Self::max_prefix(&self.addr) {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

impl serde::Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Cidr, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Parses a block as `iptables -S` prints it (`-s 0.0.0.0/0` included, unlike user input).
pub fn parse_listed(s: &str) -> Option<Cidr> {
    let (a, p) = s.split_once('/').unwrap_or((s, ""));
    let addr: IpAddr = a.parse().ok()?;
    let prefix = if p.is_empty() {
        Cidr::max_prefix(&addr)
    } else {
        p.parse().ok()?
    };
    Cidr::new(addr, prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_addresses_and_blocks() {
        assert_eq!(c("1.2.3.4").to_string(), "1.2.3.4");
        assert_eq!(c("1.2.3.4/32").to_string(), "1.2.3.4");
        assert_eq!(c("10.1.2.3/8").to_string(), "10.0.0.0/8");
        assert_eq!(c("2001:db8::1").to_string(), "2001:db8::1");
        assert_eq!(c("2001:db8::1/64").to_string(), "2001:db8::/64");
        assert_eq!(c("2001:DB8::1").to_string(), "2001:db8::1");
        assert_eq!(c("1.2.3.4").to_iptables(), "1.2.3.4/32");
        assert_eq!(c("::ffff:1.2.3.4"), c("1.2.3.4"));
        assert_eq!(c("::ffff:10.0.0.0/104"), c("10.0.0.0/8"));
        assert!("::ffff:10.0.0.0/64".parse::<Cidr>().is_err());
        assert_eq!(c("1.2.3.4").family(), Family::V4);
        assert_eq!(c("::1").family(), Family::V6);
    }

    #[test]
    fn rejects_bad_addresses() {
        for bad in [
            "",
            "256.1.1.1",
            "1.2.3.4/33",
            "1.2.3",
            "1.2.3.4.5",
            "::/0",
            "0.0.0.0/0",
            "2001:db8::/129",
            "fe80::1%eth0",
            "[::1]",
            "1.2.3.4/",
            "1.2.3.4/-1",
            "1.2.3.4/+8",
            "1.2.3.4/08x",
            "localhost",
            "-j ACCEPT",
            "1.2.3.4;rm",
            "01.2.3.4",
            " 1.2.3.4",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn listed_forms() {
        assert_eq!(parse_listed("1.2.3.4/32"), Some(c("1.2.3.4")));
        assert_eq!(parse_listed("2001:db8::5/128"), Some(c("2001:db8::5")));
        assert_eq!(parse_listed("1.2.3.4"), Some(c("1.2.3.4")));
        assert_eq!(parse_listed("zz"), None);
    }

    #[test]
    fn serde_round_trip() {
        let j = serde_json::to_string(&c("10.0.0.0/8")).unwrap();
        assert_eq!(j, "\"10.0.0.0/8\"");
        assert_eq!(serde_json::from_str::<Cidr>(&j).unwrap(), c("10.0.0.0/8"));
        assert!(serde_json::from_str::<Cidr>("\"nope\"").is_err());
    }

    #[test]
    fn every_address_is_never_bannable() {
        for all in ["0.0.0.0/0", "::/0", "10.0.0.0/0"] {
            let e = Cidr::bannable(all, "it").unwrap_err();
            assert_eq!(
                e,
                "it is every address: a ban of it would cut everyone off, you too"
            );
        }
        assert_eq!(
            Cidr::bannable("10.0.0.0/8", "it").unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert!(Cidr::bannable("nonsense", "it").is_err());
    }
}
