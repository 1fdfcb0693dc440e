//! What setup learns of the board and does to its files: the service user, the owner of
//! a file, the one atomic write, whether the directory takes files, how the service is
//! started here, and the private networks the board is on.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::base::addr::Cidr;
use crate::base::error::{Error, Result};
use crate::os::files;
use crate::store::config::{self, Config};

/// The `tgknock` system user's uid and gid, when it exists and setup runs as root: the
/// service reads the token as that user.
pub(super) fn service_owner() -> Option<(u32, u32)> {
    if !running_as_root() {
        return None;
    }
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd_entry(&passwd, "tgknock")
}

pub(super) fn passwd_entry(passwd: &str, name: &str) -> Option<(u32, u32)> {
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 4 && f[0] == name).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
    })
}

pub(super) fn running_as_root() -> bool {
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

pub(super) fn ownership(path: &Path) -> Option<(u32, u32)> {
    fs::symlink_metadata(path)
        .ok()
        .filter(|m| m.is_file())
        .map(|m| (m.uid(), m.gid()))
}

/// Replaces `path` with `bytes` (see [`files::replace`]): `mode` and, as root, `owner`.
pub(super) fn replace(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> Result<()> {
    let owner = match owner.filter(|_| running_as_root()) {
        Some((uid, gid)) => files::Owner::Given(uid, gid),
        None => files::Owner::Writer,
    };
    files::replace(path, bytes, mode, owner).map(|_| ())
}

/// Fails before the first question when the files could not be written at the end: the
/// directory (or the nearest one that exists) takes no new file.
pub(super) fn writable(dir: &Path) -> Result<()> {
    let mut at = dir;
    while !at.exists() {
        match at.parent() {
            Some(p) if !p.as_os_str().is_empty() => at = p,
            _ => break,
        }
    }
    match files::probe_writable(at) {
        Err(Error::File { source: e, .. }) => Err(Error::Usage {
            argument: None,
            problem: format!(
                "cannot write in {} ({e}): run setup as root (sudo tgknock setup), or give --config a path you can write",
                at.display()
            ),
        }),
        other => other,
    }
}

/// The command that starts the service this board has.
pub(super) fn start_command(path: &Path) -> String {
    let default = path == Path::new(config::DEFAULT_PATH);
    let exists = |p: &str| Path::new(p).exists();
    let running = Config::load(Some(path))
        .ok()
        .and_then(|c| {
            crate::store::state::PidLock::holder(&crate::store::state::Paths::new(
                &c.files.state_dir,
            ))
        })
        .is_some();
    let unit = [
        "/etc/systemd/system/tgknock.service",
        "/lib/systemd/system/tgknock.service",
        "/usr/lib/systemd/system/tgknock.service",
    ]
    .iter()
    .any(|p| exists(p));
    if default && exists("/run/systemd/system") && unit {
        return if running {
            "systemctl restart tgknock".into()
        } else {
            "systemctl enable --now tgknock".into()
        };
    }
    if default && exists("/etc/init.d/tgknock") {
        let verb = if running { "restart" } else { "start" };
        return if exists("/sbin/openrc-run") {
            format!("rc-service tgknock {verb}")
        } else {
            format!("/etc/init.d/tgknock {verb}")
        };
    }
    format!(
        "tgknock run --config {}   (in the background; the README shows the service files)",
        path.display()
    )
}

/// The private networks this board is on, from its on-link routes: what
/// `TGKNOCK_ALWAYS_ALLOW` should exempt so a mistake cannot lock the owner out at home.
pub(super) fn detect_lan() -> Vec<Cidr> {
    let v4 = fs::read_to_string("/proc/net/route").unwrap_or_default();
    let v6 = fs::read_to_string("/proc/net/ipv6_route").unwrap_or_default();
    lan_from_routes(&v4, &v6)
}

/// Interfaces whose networks are not the LAN: loopback, containers, VMs, bridges of them.
pub(super) fn virtual_interface(name: &str) -> bool {
    name == "lo"
        || [
            "docker", "br-", "veth", "virbr", "vnet", "cni", "flannel", "kube", "lxc", "podman",
        ]
        .iter()
        .any(|p| name.starts_with(p))
}

/// The on-link routes of `/proc/net/route` and `/proc/net/ipv6_route` that are private
/// networks (RFC 1918 for IPv4, unique local fc00::/7 for IPv6) of real interfaces, in
/// the order of the routes, IPv4 first.
pub(super) fn lan_from_routes(v4: &str, v6: &str) -> Vec<Cidr> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    const RTF_UP: u32 = 0x1;
    const RTF_GATEWAY: u32 = 0x2;
    let mut out: Vec<Cidr> = Vec::new();
    for l in v4.lines().skip(1) {
        let f: Vec<&str> = l.split_whitespace().collect();
        let [iface, dest, gw, flags, _, _, _, mask, ..] = f[..] else {
            continue;
        };
        let hex = |s: &str| u32::from_str_radix(s, 16).ok();
        let (Some(dest), Some(gw), Some(flags), Some(mask)) =
            (hex(dest), hex(gw), hex(flags), hex(mask))
        else {
            continue;
        };
        if virtual_interface(iface) || flags & RTF_UP == 0 || flags & RTF_GATEWAY != 0 || gw != 0 {
            continue;
        }
        // The kernel prints the address as it lies in memory: network order.
        let addr = Ipv4Addr::from(dest.to_ne_bytes());
        let prefix = mask.count_ones() as u8;
        if prefix < 8 || !addr.is_private() {
            continue;
        }
        if let Some(c) = Cidr::new(IpAddr::V4(addr), prefix)
            && !out.contains(&c)
        {
            out.push(c);
        }
    }
    for l in v6.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        let [dest, plen, _, _, next_hop, _, _, _, flags, iface] = f[..] else {
            continue;
        };
        let (Ok(dest), Ok(plen), Ok(hop), Ok(flags)) = (
            u128::from_str_radix(dest, 16),
            u8::from_str_radix(plen, 16),
            u128::from_str_radix(next_hop, 16),
            u32::from_str_radix(flags, 16),
        ) else {
            continue;
        };
        let addr = Ipv6Addr::from(dest);
        let unique_local = addr.segments()[0] & 0xfe00 == 0xfc00;
        if virtual_interface(iface)
            || flags & RTF_UP == 0
            || hop != 0
            || !(8..=127).contains(&plen)
            || !unique_local
        {
            continue;
        }
        if let Some(c) = Cidr::new(IpAddr::V6(addr), plen)
            && !out.contains(&c)
        {
            out.push(c);
        }
    }
    out
}
