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

/// The board's own addresses, loopback included, as `ip addr` shows them: asked of the
/// kernel over netlink (`RTM_GETADDR` on a `NETLINK_ROUTE` socket), which works where
/// `/proc/net` is hidden (the systemd unit's `ProcSubset=pid`) and needs no privilege.
/// An error says why they could not be read; the caller must then assume the worst.
pub fn local_addresses() -> Result<Vec<IpAddr>, String> {
    let mut last = String::new();
    // A dump the kernel marks interrupted (an address changed meanwhile) is asked again.
    for seq in 1..=3 {
        match dump_addresses(seq) {
            Ok(Dump {
                addrs,
                interrupted: false,
            }) => {
                let mut out: Vec<IpAddr> = vec![
                    IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
                    IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
                ];
                out.extend(addrs);
                out.sort();
                out.dedup();
                return Ok(out);
            }
            Ok(_) => last = "the kernel's list of addresses changed while it was read".into(),
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// How long the kernel may take to answer one read of the dump.
const NETLINK_TIMEOUT_MS: i32 = 2_000;
/// A dump the kernel sends in more datagrams than this is not believed.
const MAX_DATAGRAMS: usize = 4_096;

fn dump_addresses(seq: u32) -> Result<Dump, String> {
    let fail = |what: &str, e: std::io::Error| format!("netlink ({what}): {e}");
    let mut sock = crate::sys::RouteSocket::open().map_err(|e| fail("socket", e))?;
    sock.send(&addr_request(seq))
        .map_err(|e| fail("RTM_GETADDR", e))?;
    let mut buf = vec![0u8; 65_536];
    let mut dump = Dump::default();
    for _ in 0..MAX_DATAGRAMS {
        let n = sock
            .recv(&mut buf, NETLINK_TIMEOUT_MS)
            .map_err(|e| fail("reading the answer", e))?;
        if parse_addr_datagram(&buf[..n], seq, &mut dump)? {
            return Ok(dump);
        }
    }
    Err(format!(
        "netlink: the list of addresses did not end after {MAX_DATAGRAMS} datagrams"
    ))
}

/// What a dump of addresses gave so far.
#[derive(Debug, Default, PartialEq, Eq)]
struct Dump {
    addrs: Vec<IpAddr>,
    /// The kernel flagged the dump inconsistent (`NLM_F_DUMP_INTR`): ask again.
    interrupted: bool,
}

const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWADDR: u16 = 20;
const RTM_GETADDR: u16 = 22;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP_INTR: u16 = 0x10;
const NLM_F_DUMP: u16 = 0x300;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
/// `struct ifaddrmsg`: family, prefix length, flags, scope, interface index.
const IFADDRMSG_LEN: usize = 8;

/// The `RTM_GETADDR` dump request for every address of both families.
fn addr_request(seq: u32) -> Vec<u8> {
    let len = (NLMSG_HDRLEN + IFADDRMSG_LEN) as u32;
    let mut m = Vec::with_capacity(len as usize);
    m.extend_from_slice(&len.to_ne_bytes());
    m.extend_from_slice(&RTM_GETADDR.to_ne_bytes());
    m.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    // ifaddrmsg: AF_UNSPEC, the rest zero.
    m.extend_from_slice(&[0u8; IFADDRMSG_LEN]);
    m
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Netlink's 4-byte alignment.
fn align4(n: usize) -> usize {
    n.div_ceil(4) * 4
}

/// Reads one datagram of the answer to [`addr_request`] `seq` into `dump`; true once the
/// dump is done. Anything malformed, an error from the kernel, or an answer to another
/// request is an error: the caller then knows nothing of the board's addresses.
fn parse_addr_datagram(mut b: &[u8], seq: u32, dump: &mut Dump) -> Result<bool, String> {
    let bad = |why: &str| format!("netlink: a malformed answer ({why})");
    if b.is_empty() {
        return Err(bad("an empty datagram"));
    }
    while !b.is_empty() {
        if b.len() < NLMSG_HDRLEN {
            return Err(bad("a message shorter than its header"));
        }
        let len = u32_at(b, 0) as usize;
        let kind = u16_at(b, 4);
        let flags = u16_at(b, 6);
        if len < NLMSG_HDRLEN || len > b.len() {
            return Err(bad("a message length out of bounds"));
        }
        if u32_at(b, 8) != seq {
            return Err(bad("an answer to another request"));
        }
        if flags & NLM_F_DUMP_INTR != 0 {
            dump.interrupted = true;
        }
        let body = &b[NLMSG_HDRLEN..len];
        match kind {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                let code = (body.len() >= 4).then(|| u32_at(body, 0) as i32);
                return Err(match code {
                    Some(c) if c < 0 => format!(
                        "netlink: the kernel refused RTM_GETADDR: {}",
                        std::io::Error::from_raw_os_error(-c)
                    ),
                    _ => bad("an error message without an error"),
                });
            }
            RTM_NEWADDR => {
                if let Some(ip) = parse_newaddr(body).map_err(|w| bad(&w))? {
                    dump.addrs.push(ip);
                }
            }
            _ => {}
        }
        b = &b[align4(len).min(b.len())..];
    }
    Ok(false)
}

/// The address of one `RTM_NEWADDR` message: `IFA_LOCAL` (the board's end of a
/// point-to-point link), else `IFA_ADDRESS`; `None` for another family.
fn parse_newaddr(body: &[u8]) -> Result<Option<IpAddr>, String> {
    if body.len() < IFADDRMSG_LEN {
        return Err("an address message shorter than ifaddrmsg".into());
    }
    let family = body[0];
    let size = match family {
        AF_INET => 4,
        AF_INET6 => 16,
        _ => return Ok(None),
    };
    let (mut local, mut address) = (None, None);
    let mut a = &body[IFADDRMSG_LEN..];
    while !a.is_empty() {
        if a.len() < 4 {
            return Err("an attribute shorter than its header".into());
        }
        let len = u16_at(a, 0) as usize;
        let kind = u16_at(a, 2) & 0x3fff;
        if len < 4 || len > a.len() {
            return Err("an attribute length out of bounds".into());
        }
        let data = &a[4..len];
        if kind == IFA_LOCAL || kind == IFA_ADDRESS {
            if data.len() != size {
                return Err(format!(
                    "an address of {} bytes in family {family}",
                    data.len()
                ));
            }
            let ip = match size {
                4 => IpAddr::V4(std::net::Ipv4Addr::new(data[0], data[1], data[2], data[3])),
                _ => {
                    let mut o = [0u8; 16];
                    o.copy_from_slice(data);
                    IpAddr::V6(o.into())
                }
            };
            if kind == IFA_LOCAL {
                local = Some(ip);
            } else {
                address = Some(ip);
            }
        }
        a = &a[align4(len).min(a.len())..];
    }
    Ok(local.or(address))
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

    /// The kernel's answer to `addr_request(7)` in a network namespace with lo up and a
    /// veth holding 192.168.7.9/24, 10.9.9.1 peer 10.9.9.2/32 and 2001:db8:7::9/64
    /// (recorded on x86_64, Linux 6.18): two datagrams, the addresses and NLMSG_DONE.
    const RECORDED: [&str; 2] = [
        "4c0000001400020007000000f97e0000020880fe01000000080001007f000001080002007f000001070003006c6f0000080008008000000014000600ffffffffffffffff74a5000074a500004c0000001400020007000000f97e0000021880000300000008000100c0a8070908000200c0a807090700030064300000080008008000000014000600ffffffffffffffff76a5000076a500004c0000001400020007000000f97e00000220800003000000080001000a090902080002000a0909010700030064300000080008008000000014000600ffffffffffffffff76a5000076a50000500000001400020007000000f97e00000a8080fe01000000140001000000000000000000000000000000000114000600ffffffffffffffff74a5000074a50000080008008000000005000b0001000000480000001400020007000000f97e00000a408200030000001400010020010db800070000000000000000000914000600ffffffffffffffff77a5000077a500000800080082000000",
        "140000000300020007000000f97e000000000000",
    ];

    fn unhex(h: &str) -> Vec<u8> {
        (0..h.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
            .collect()
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn netlink_request_and_recorded_answer() {
        assert_eq!(
            addr_request(7),
            unhex("180000001600010307000000000000000000000000000000")
        );
        let mut dump = Dump::default();
        let first = unhex(RECORDED[0]);
        assert_eq!(parse_addr_datagram(&first, 7, &mut dump), Ok(false));
        // The board's end of the point-to-point link (IFA_LOCAL), not its peer.
        assert_eq!(
            dump.addrs,
            ips(&[
                "127.0.0.1",
                "192.168.7.9",
                "10.9.9.1",
                "::1",
                "2001:db8:7::9"
            ])
        );
        assert!(!dump.interrupted);
        assert_eq!(
            parse_addr_datagram(&unhex(RECORDED[1]), 7, &mut dump),
            Ok(true)
        );
        assert_eq!(dump.addrs.len(), 5);
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn netlink_answers_that_are_not_believed() {
        let first = unhex(RECORDED[0]);
        let err = |b: &[u8], seq: u32| parse_addr_datagram(b, seq, &mut Dump::default());
        // Another request's answer.
        assert!(err(&first, 8).unwrap_err().contains("another request"));
        // Cut anywhere inside a message (the first is 76 bytes long).
        for cut in [1, 15, 16, 40, 75, 77, 200, first.len() - 1] {
            assert!(err(&first[..cut], 7).is_err(), "cut at {cut}");
        }
        assert!(err(&[], 7).is_err());
        // An attribute running past its message.
        let mut long_attr = first.clone();
        long_attr[24] = 0x40;
        assert!(err(&long_attr, 7).unwrap_err().contains("attribute"));
        // An IPv4 address of 3 bytes.
        let mut short_ip = first.clone();
        short_ip[24] = 7;
        assert!(err(&short_ip, 7).is_err());
        // The kernel's error: -EPERM, with the request it answers.
        let mut e = unhex("240000000200000007000000f97e0000ffffffff");
        e.extend_from_slice(&addr_request(7)[..16]);
        let why = err(&e, 7).unwrap_err();
        assert!(
            why.contains("refused RTM_GETADDR") && why.contains("not permitted"),
            "{why}"
        );
        // A dump the kernel flags as interrupted is asked again.
        let mut intr = first.clone();
        intr[6] |= 0x10;
        let mut dump = Dump::default();
        assert_eq!(parse_addr_datagram(&intr, 7, &mut dump), Ok(false));
        assert!(dump.interrupted);
    }

    #[test]
    fn local_addresses_from_netlink() {
        let mine = local_addresses().expect("netlink answers");
        assert!(mine.contains(&"127.0.0.1".parse().unwrap()));
        assert!(mine.contains(&"::1".parse().unwrap()));
    }

    #[test]
    fn serde_round_trip() {
        let j = serde_json::to_string(&c("10.0.0.0/8")).unwrap();
        assert_eq!(j, "\"10.0.0.0/8\"");
        assert_eq!(serde_json::from_str::<Cidr>(&j).unwrap(), c("10.0.0.0/8"));
        assert!(serde_json::from_str::<Cidr>("\"nope\"").is_err());
    }
}
