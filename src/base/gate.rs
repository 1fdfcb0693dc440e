//! Gates: named sets of ports (`ssh=22/tcp`, `web=80/tcp,443/tcp`, `mosh=60000:61000/udp`).

use std::fmt;

/// A transport protocol iptables can match a destination port with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// One port or an inclusive range of ports of one protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    pub proto: Proto,
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    /// The `--dport` argument: `22` or `60000:61000`.
    pub fn dport(&self) -> String {
        if self.first == self.last {
            self.first.to_string()
        } else {
            format!("{}:{}", self.first, self.last)
        }
    }

    fn parse(s: &str) -> Result<PortRange, String> {
        let (ports, proto) = s
            .split_once('/')
            .ok_or_else(|| format!("'{s}' needs a protocol, e.g. {s}/tcp"))?;
        let proto = match proto {
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            _ => return Err(format!("'{s}': the protocol must be tcp or udp")),
        };
        let port = |p: &str| -> Result<u16, String> {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("'{s}': '{p}' is not a port number"));
            }
            match p.parse::<u16>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(format!("'{s}': ports go from 1 to 65535")),
            }
        };
        let (first, last) = match ports.split_once(':') {
            Some((a, b)) => (port(a)?, port(b)?),
            None => {
                let p = port(ports)?;
                (p, p)
            }
        };
        if first > last {
            return Err(format!("'{s}': the range must go from low to high"));
        }
        Ok(PortRange { proto, first, last })
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.dport(), self.proto.as_str())
    }
}

/// A gate's name: a short lowercase word (see [`valid_name`]). It keys the openings of the
/// saved state, where it is read back as it was written.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct GateName(String);

impl GateName {
    /// The name, if it is a valid one.
    pub fn new(name: &str) -> Option<GateName> {
        valid_name(name).then(|| GateName(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for GateName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::borrow::Borrow<str> for GateName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for GateName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for GateName {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// A named set of ports opened and closed together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gate {
    pub name: GateName,
    pub ports: Vec<PortRange>,
}

impl Gate {
    /// `22/tcp` or `80/tcp,443/tcp`.
    pub fn ports_text(&self) -> String {
        self.ports
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Gate names start with a letter so they never read as a duration or an address,
/// and are short, lowercase words so they are safe in an iptables comment.
pub fn valid_name(name: &str) -> bool {
    let mut b = name.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_lowercase())
        && name.len() <= 24
        && b.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-')
        && name != "all"
}

/// Parses the `TGKNOCK_GATES` value: space-separated `name=ports`, the first the default.
pub fn parse_gates(text: &str) -> Result<Vec<Gate>, String> {
    let mut gates: Vec<Gate> = Vec::new();
    for item in text.split_whitespace() {
        let (name, ports) = item
            .split_once('=')
            .ok_or_else(|| format!("'{item}' is not of the form name=port/proto"))?;
        let Some(name) = GateName::new(name) else {
            return Err(format!(
                "'{name}' is not a valid gate name (a lowercase letter, then letters, digits, '-' or '_'; at most 24; not 'all')"
            ));
        };
        if gates.iter().any(|g| g.name == name) {
            return Err(format!("gate '{name}' is defined twice"));
        }
        let mut list = Vec::new();
        for p in ports.split(',') {
            let range = PortRange::parse(p)?;
            if !list.contains(&range) {
                list.push(range);
            }
        }
        if list.len() > 16 {
            return Err(format!("gate '{name}' has more than 16 port sets"));
        }
        gates.push(Gate { name, ports: list });
    }
    if gates.is_empty() {
        return Err("no gate defined".into());
    }
    if gates.len() > 32 {
        return Err("more than 32 gates".into());
    }
    Ok(gates)
}

/// The port-knock fallback: knocking `ports` in order opens `gate` to the knocker for
/// `open_for` seconds, entirely in kernel rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Knock {
    pub(crate) ports: Vec<u16>,
    pub(crate) open_for: u64,
    pub(crate) gate: GateName,
}

impl Knock {
    /// `7311,2918,9440`
    pub(crate) fn ports_text(&self) -> String {
        self.ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A knock sequence as `TGKNOCK_KNOCK` and `knock --ports` write it: 2 to 8 distinct
    /// TCP ports, comma-separated.
    pub(crate) fn parse_ports(text: &str) -> Result<Vec<u16>, String> {
        let mut ports: Vec<u16> = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let port = part
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("'{part}' is not a port (1-65535)"))?;
            if ports.contains(&port) {
                return Err(format!("port {port} appears twice"));
            }
            ports.push(port);
        }
        if !(2..=8).contains(&ports.len()) {
            return Err("a sequence is 2 to 8 ports".into());
        }
        Ok(ports)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_contract_example() {
        let g = parse_gates("ssh=22/tcp web=80/tcp,443/tcp mosh=60000:61000/udp").unwrap();
        assert_eq!(g.len(), 3);
        assert_eq!(g[0].name, "ssh");
        assert_eq!(g[0].ports_text(), "22/tcp");
        assert_eq!(g[1].ports_text(), "80/tcp,443/tcp");
        assert_eq!(g[2].ports[0].dport(), "60000:61000");
        assert_eq!(g[2].ports[0].proto, Proto::Udp);
    }

    #[test]
    fn rejects_bad_gates() {
        for bad in [
            "",
            "ssh",
            "ssh=22",
            "ssh=22/icmp",
            "ssh=0/tcp",
            "ssh=65536/tcp",
            "ssh=2-3/tcp",
            "ssh=30:20/tcp",
            "SSH=22/tcp",
            "1ssh=22/tcp",
            "all=22/tcp",
            "s;h=22/tcp",
            "ssh=22/tcp ssh=23/tcp",
            "ssh=/tcp",
            "ssh=22/tcp,",
            "ssh=-1/tcp",
            "ssh=+22/tcp",
        ] {
            assert!(parse_gates(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn names() {
        assert!(valid_name("ssh"));
        assert!(valid_name("web-2_x"));
        assert!(!valid_name("all"));
        assert!(!valid_name("15m"));
        assert!(!valid_name("a:b"));
        assert!(!valid_name(""));
    }
}
