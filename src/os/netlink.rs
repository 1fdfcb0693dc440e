//! The board's own addresses, asked of the kernel over netlink (`RTM_GETADDR`).

use std::net::IpAddr;

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
    let mut sock = crate::os::sys::RouteSocket::open().map_err(|e| fail("socket", e))?;
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
}
