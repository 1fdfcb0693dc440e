//! Noticing other programs changing the firewall, at no cost while nothing changes:
//! nftables' own notifications ([`NftEvents`], which iptables-nft's changes raise too), and
//! for the legacy ip_tables / ip6_tables, which announce nothing, a cheap fingerprint of
//! the `filter` tables ([`XtablesProbe`]). The system calls are in [`crate::os::sys`]; here
//! only what they read is parsed, every length checked before use.

use std::hash::Hasher;
use std::io;
use std::time::{Duration, Instant};

use crate::os::sys;

/// A change the kernel announced on nftables' notification group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NftEvent {
    /// A change to an object: what, added or deleted, the nfproto family byte, the table
    /// and, for a chain, rule, set or element, the chain's or set's name.
    Object {
        what: NftObject,
        deleted: bool,
        family: u8,
        table: String,
        name: Option<String>,
    },
    /// The end of one transaction (`NFT_MSG_NEWGEN`): the generation, and the pid and
    /// process name that committed it, and the netlink port of the socket it committed
    /// through. The pid is the kernel's (the initial PID namespace's), so a process in a
    /// container never sees it as its child's pid; the port is the one the kernel gave the
    /// socket, which is the process's own pid as the process itself sees it (when free).
    Generation {
        id: u32,
        pid: Option<u32>,
        port: u32,
        process: Option<String>,
    },
    /// Notifications were lost (the socket's buffer overflowed, or one could not be read
    /// whole): read the rules again.
    Overflow,
}

impl NftEvent {
    /// An [`NftEvent::Object`], as a test expects one.
    pub fn object(
        what: NftObject,
        deleted: bool,
        family: u8,
        table: &str,
        name: Option<&str>,
    ) -> NftEvent {
        NftEvent::Object {
            what,
            deleted,
            family,
            table: table.into(),
            name: name.map(String::from),
        }
    }
}

/// How nf_tables' account of who committed a transaction names a process this process
/// ran: by the pid ([`NftEvent::Generation`]'s `pid`, the kernel's), which is the pid this
/// process saw only in the initial PID namespace; in a container (a PID namespace of its
/// own: systemd-nspawn, LXC, docker) by the netlink port of the committing socket, which
/// the kernel binds to the pid the process has in its own namespace when that port is
/// free. One of the two, never either: a port is chosen by the process (any number not
/// taken), and a container's small pids are other processes' kernel pids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Committer {
    Pid,
    Port,
}

/// The inode of the initial PID namespace (`PROC_PID_INIT_INO`, fixed since Linux 3.8).
const INITIAL_PID_NAMESPACE: &str = "pid:[4026531836]";

impl Committer {
    /// For this process: `/proc/self/ns/pid` names its PID namespace. Without /proc, the
    /// pid (where a board runs tgknock outside any container).
    pub fn of_this_process() -> Committer {
        match std::fs::read_link("/proc/self/ns/pid") {
            Ok(ns) if ns.as_os_str() != INITIAL_PID_NAMESPACE => Committer::Port,
            _ => Committer::Pid,
        }
    }

    /// The pid, as this process sees pids, of the process that committed a
    /// [`NftEvent::Generation`] with `pid` through `port`.
    pub fn names(self, pid: Option<u32>, port: u32) -> Option<u32> {
        match self {
            Committer::Pid => pid,
            Committer::Port => Some(port).filter(|p| *p != 0),
        }
    }
}

/// What kind of nftables object an [`NftEvent::Object`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NftObject {
    Table,
    Chain,
    Rule,
    Set,
    Element,
    /// A stateful object, a flowtable, or a message of a newer kernel.
    Other,
}

/// `NFNLGRP_NFTABLES`.
const NFNLGRP_NFTABLES: u32 = 7;
/// The socket's receive buffer: a `flush ruleset` of a few thousand rules fits.
const RCVBUF: usize = 1 << 20;
/// One datagram: the kernel packs notifications into skbs of about a page.
const DATAGRAM_MAX: usize = 65_536;
/// The most datagrams one [`NftEvents::wait`] reads; the rest wait for the next call.
const BURST_MAX: usize = 1_024;
const ENOBUFS: i32 = 105;

/// A `NETLINK_NETFILTER` socket subscribed to `NFNLGRP_NFTABLES`: every committed
/// nftables transaction (nft's, iptables-nft's, tgknock's own) queues its notifications
/// on it, and nothing is read or woken while nothing changes.
pub struct NftEvents {
    sock: sys::NetlinkEvents,
    buf: Vec<u8>,
}

impl NftEvents {
    /// Subscribes; an error if the kernel (no nf_tables) or the permission
    /// (`CAP_NET_ADMIN`) does not allow it.
    pub fn subscribe() -> io::Result<NftEvents> {
        Ok(NftEvents {
            sock: sys::NetlinkEvents::subscribe(sys::NETLINK_NETFILTER, NFNLGRP_NFTABLES, RCVBUF)?,
            buf: vec![0; DATAGRAM_MAX],
        })
    }

    /// Waits at most `timeout` for notifications and returns those that arrived: after
    /// the first datagram, what is already queued is read too, without waiting, so a
    /// transaction comes whole. Empty on a timeout. When notifications were lost (the
    /// buffer overflowed: `ENOBUFS`), only [`NftEvent::Overflow`], the queue emptied.
    pub fn wait(&mut self, timeout: Duration) -> io::Result<Vec<NftEvent>> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            // All false on a timeout or a signal: the deadline tells them apart.
            if sys::wait_readable(&[self.sock.fd()], left)?[0] {
                let events = self.drain()?;
                if !events.is_empty() {
                    return Ok(events);
                }
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(Vec::new());
            }
        }
    }

    /// Reads every queued datagram (at most [`BURST_MAX`]) without waiting.
    fn drain(&mut self) -> io::Result<Vec<NftEvent>> {
        let mut events = Vec::new();
        let mut lost = false;
        for _ in 0..BURST_MAX {
            match self.sock.recv(&mut self.buf) {
                Ok(None) => break,
                // Only the kernel's notifications are believed.
                Ok(Some(d)) if d.sender != 0 => {}
                Ok(Some(d)) => match self.buf.get(..d.len) {
                    Some(b) => lost |= parse_datagram(b, &mut events).is_err(),
                    None => lost = true,
                },
                Err(e) if e.raw_os_error() == Some(ENOBUFS) => lost = true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if lost {
            return Ok(vec![NftEvent::Overflow]);
        }
        Ok(events)
    }
}

/// A datagram whose lengths do not hold together.
#[derive(Debug, PartialEq, Eq)]
struct Malformed;

const NLMSG_HDRLEN: usize = 16;
/// `struct nfgenmsg`: family, version, resource id.
const NFGENMSG_LEN: usize = 4;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWGEN: u16 = 15;
const NFT_MSG_TRACE: u16 = 17;
/// The attribute type's flag bits (`NLA_F_NESTED`, `NLA_F_NET_BYTEORDER`).
const NLA_TYPE_MASK: u16 = 0x3fff;
/// The attribute every object message names its table with (`NFTA_*_TABLE`).
const ATTR_TABLE: u16 = 1;
const NFTA_GEN_ID: u16 = 1;
const NFTA_GEN_PROC_PID: u16 = 2;
const NFTA_GEN_PROC_NAME: u16 = 3;

fn align4(n: usize) -> usize {
    n.div_ceil(4) * 4
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(
        b.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

/// Parses one datagram of notifications (one or more netlink messages) into `out`;
/// messages of other subsystems are passed over.
fn parse_datagram(mut b: &[u8], out: &mut Vec<NftEvent>) -> Result<(), Malformed> {
    if b.is_empty() {
        return Err(Malformed);
    }
    while !b.is_empty() {
        let len = u32_at(b, 0).ok_or(Malformed)? as usize;
        let kind = u16_at(b, 4).ok_or(Malformed)?;
        if len < NLMSG_HDRLEN || len > b.len() {
            return Err(Malformed);
        }
        if kind >> 8 == NFNL_SUBSYS_NFTABLES
            && let Some(event) = parse_message(
                kind & 0xff,
                u32_at(b, 12).ok_or(Malformed)?,
                &b[NLMSG_HDRLEN..len],
            )?
        {
            out.push(event);
        }
        b = &b[align4(len).min(b.len())..];
    }
    Ok(())
}

/// What a message type of nf_tables announces: the object, whether it went, and the
/// attribute naming its chain or set (0: none). `None` for a request's type (GET…) and
/// traces, which are never notifications of a change.
fn object_of(msg: u16) -> Option<(NftObject, bool, u16)> {
    use NftObject::*;
    Some(match msg {
        0 => (Table, false, 0),
        2 | 26 => (Table, true, 0),
        3 => (Chain, false, 3),
        5 | 27 => (Chain, true, 3),
        6 => (Rule, false, 2),
        8 | 28 => (Rule, true, 2),
        9 => (Set, false, 2),
        11 | 29 => (Set, true, 2),
        12 => (Element, false, 2),
        14 | 30 => (Element, true, 2),
        // Objects and flowtables (NEWOBJ, NEWFLOWTABLE; DELOBJ, DELFLOWTABLE, DESTROY…).
        18 | 22 => (Other, false, 2),
        20 | 24 | 31 | 32 => (Other, true, 2),
        1 | 4 | 7 | 10 | 13 | 16 | NFT_MSG_TRACE | 19 | 21 | 23 | 25 | 33 => return None,
        // A kernel newer than this code: something changed.
        _ => (Other, false, 0),
    })
}

/// One nf_tables message's body (nfgenmsg, then attributes) as an event; `port` is its
/// header's `nlmsg_pid`.
fn parse_message(msg: u16, port: u32, body: &[u8]) -> Result<Option<NftEvent>, Malformed> {
    if body.len() < NFGENMSG_LEN {
        return Err(Malformed);
    }
    let family = body[0];
    let attrs = Attrs::parse(&body[NFGENMSG_LEN..])?;
    if msg == NFT_MSG_NEWGEN {
        return Ok(Some(NftEvent::Generation {
            id: attrs.be32(NFTA_GEN_ID).unwrap_or(0),
            pid: attrs.be32(NFTA_GEN_PROC_PID),
            port,
            process: attrs.string(NFTA_GEN_PROC_NAME),
        }));
    }
    let Some((what, deleted, name)) = object_of(msg) else {
        return Ok(None);
    };
    Ok(Some(NftEvent::Object {
        what,
        deleted,
        family,
        table: attrs.string(ATTR_TABLE).unwrap_or_default(),
        name: (name != 0).then(|| attrs.string(name)).flatten(),
    }))
}

/// The top-level attributes 1 to 3 of a message, the only ones read.
struct Attrs<'a>([Option<&'a [u8]>; 4]);

impl<'a> Attrs<'a> {
    fn parse(mut a: &'a [u8]) -> Result<Attrs<'a>, Malformed> {
        let mut found = [None; 4];
        while !a.is_empty() {
            let len = u16_at(a, 0).ok_or(Malformed)? as usize;
            let kind = u16_at(a, 2).ok_or(Malformed)? & NLA_TYPE_MASK;
            if len < 4 || len > a.len() {
                return Err(Malformed);
            }
            if let Some(slot) = found.get_mut(kind as usize) {
                *slot = Some(&a[4..len]);
            }
            a = &a[align4(len).min(a.len())..];
        }
        Ok(Attrs(found))
    }

    fn get(&self, kind: u16) -> Option<&'a [u8]> {
        self.0.get(kind as usize).copied().flatten()
    }

    /// A NUL-terminated string attribute (what follows the first NUL is not read).
    fn string(&self, kind: u16) -> Option<String> {
        let d = self.get(kind)?;
        let end = d.iter().position(|&c| c == 0).unwrap_or(d.len());
        Some(String::from_utf8_lossy(&d[..end]).into_owned())
    }

    /// A big-endian 32-bit attribute; `None` when missing or of another size.
    fn be32(&self, kind: u16) -> Option<u32> {
        Some(u32::from_be_bytes(self.get(kind)?.try_into().ok()?))
    }
}

/// `IPT_SO_GET_INFO` and `IPT_SO_GET_ENTRIES` (the same numbers for ip6_tables).
const SO_GET_INFO: i32 = 64;
const SO_GET_ENTRIES: i32 = 65;
/// `XT_TABLE_MAXNAMELEN`: the table's name at the start of both requests.
const TABLE_NAME_LEN: usize = 32;
const TABLE: &[u8] = b"filter";
/// `struct ipt_getinfo`: the name, valid_hooks, hook_entry[5], underflow[5], num_entries,
/// size (every field after the name a 32-bit integer).
const GETINFO_LEN: usize = TABLE_NAME_LEN + 4 * 13;
/// Where `size` is in `struct ipt_getinfo`.
const GETINFO_SIZE_AT: usize = GETINFO_LEN - 4;
/// A table larger than this is not read (a hundred thousand rules is about 20 MB).
const TABLE_MAX: usize = 64 << 20;
/// How often the table may change between `GET_INFO` and `GET_ENTRIES` (`EAGAIN`).
const ATTEMPTS: usize = 5;
/// `struct xt_entry_target`'s user header: size (u16), name (29 bytes), revision.
const TARGET_HDR: usize = 32;
const ENOENT: i32 = 2;
const EAGAIN: i32 = 11;
const ENOPROTOOPT: i32 = 92;

/// Where a 64-bit field lands after `at` bytes: the C ABI aligns `u64` as Rust does
/// (8 bytes on x86_64, ARM and aarch64).
const fn align_u64(at: usize) -> usize {
    at.div_ceil(std::mem::align_of::<u64>()) * std::mem::align_of::<u64>()
}

/// `struct ipt_get_entries`' header: the name and `size`, then entries aligned for their
/// 64-bit counters.
const ENTRIES_AT: usize = align_u64(TABLE_NAME_LEN + 4);

/// The layout of one family's `struct ipt_entry` / `ip6t_entry`: the `ipt_ip` /
/// `ip6t_ip6` match (84 / 136 bytes), then nfcache (u32), target_offset and next_offset
/// (u16), comefrom (u32) and the counters (two u64).
#[derive(Debug, Clone, Copy)]
struct Layout {
    v6: bool,
    ip_len: usize,
}

impl Layout {
    fn of(v6: bool) -> Layout {
        Layout {
            v6,
            ip_len: if v6 { 136 } else { 84 },
        }
    }
    fn target_offset_at(self) -> usize {
        self.ip_len + 4
    }
    fn next_offset_at(self) -> usize {
        self.ip_len + 6
    }
    fn comefrom_at(self) -> usize {
        self.ip_len + 8
    }
    /// The end of the counters: the size of the entry's fixed part.
    fn counters_end(self) -> usize {
        align_u64(self.comefrom_at() + 4) + 16
    }
}

/// A table's blob whose lengths do not hold together.
fn bad_table(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("xtables: {why}"))
}

/// Calls `f(entry, target)` for every entry of a table's blob (`target` is the target's
/// header and data, `TARGET_HDR` bytes at least).
fn walk(blob: &[u8], l: Layout, mut f: impl FnMut(&[u8], &[u8])) -> io::Result<()> {
    let mut off = 0;
    while off < blob.len() {
        let rest = &blob[off..];
        let (Some(target), Some(next)) = (
            u16_at(rest, l.target_offset_at()),
            u16_at(rest, l.next_offset_at()),
        ) else {
            return Err(bad_table("an entry cut short"));
        };
        let (target, next) = (target as usize, next as usize);
        if next < l.counters_end() || next > rest.len() {
            return Err(bad_table("an entry's length out of bounds"));
        }
        if target < l.counters_end() || target + TARGET_HDR > next {
            return Err(bad_table("a target out of its entry"));
        }
        let size = u16_at(rest, target).unwrap_or(0) as usize;
        if size < TARGET_HDR || target + size > next {
            return Err(bad_table("a target's length out of bounds"));
        }
        f(&rest[..next], &rest[target..target + size]);
        off += next;
    }
    Ok(())
}

/// A NUL-terminated name in a fixed field.
fn c_name(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|&c| c == 0).unwrap_or(field.len());
    &field[..end]
}

/// One family's socket, its layout, the kernel's list of its tables in this network
/// namespace (`/proc/thread-self/net/ip_tables_names`, kept open: it stays this
/// namespace's) when ip_tables was loaded when the probe opened, and the buffer its table
/// is read into (kept: refilled in place while the table keeps its size).
struct Family {
    sock: sys::RawIpSocket,
    layout: Layout,
    names: Option<std::fs::File>,
    buf: Vec<u8>,
}

impl Family {
    fn open(v6: bool) -> io::Result<Family> {
        let sock = sys::RawIpSocket::open(v6)?;
        let list = if v6 {
            "ip6_tables_names"
        } else {
            "ip_tables_names"
        };
        Ok(Family {
            sock,
            layout: Layout::of(v6),
            names: std::fs::File::open(format!("/proc/thread-self/net/{list}")).ok(),
            buf: Vec::new(),
        })
    }

    /// Reads the `filter` table into its buffer, as [`read_table`]. Asking the kernel for a
    /// table it does not hold would make it (an empty one, loading `iptable_filter`), which
    /// iptables-nft then warns about: a table the list does not name is absent unasked.
    fn read(&mut self) -> io::Result<Option<[u8; 52]>> {
        if let Some(mut f) = self.names.as_ref() {
            use std::io::{Read, Seek};
            let mut list = Vec::new();
            if f.seek(io::SeekFrom::Start(0)).is_ok()
                && f.take(4096).read_to_end(&mut list).is_ok()
                && !list.split(|&c| c == b'\n').any(|name| name == TABLE)
            {
                return Ok(None);
            }
        }
        read_table(&self.sock, &mut self.buf)
    }

    /// The entries [`Family::read`] read.
    fn entries(&self) -> &[u8] {
        self.buf.get(ENTRIES_AT..).unwrap_or_default()
    }
}

/// The legacy `filter` tables of IPv4 and IPv6 (ip_tables, ip6_tables), read whole through
/// `getsockopt` as iptables-legacy does: they announce no change, so they are compared.
pub struct XtablesProbe {
    families: Vec<Family>,
}

impl XtablesProbe {
    /// A raw socket per family asked for (`CAP_NET_RAW`; reading needs `CAP_NET_ADMIN`).
    pub fn open(v4: bool, v6: bool) -> io::Result<XtablesProbe> {
        let mut families = Vec::new();
        for (want, is_v6) in [(v4, false), (v6, true)] {
            if want {
                families.push(Family::open(is_v6)?);
            }
        }
        Ok(XtablesProbe { families })
    }

    /// A fingerprint of the `filter` table of each family: its shape (`GET_INFO`) and its
    /// entries without their packet and byte counters (and `comefrom`), so traffic changes
    /// nothing but any edit does. A family whose table is not there (ip_tables not loaded)
    /// counts as "absent". Comparable within one process only.
    ///
    /// A table the kernel's list (`/proc/thread-self/net/ip_tables_names`) does not name is
    /// not asked for: asking would make it. Where that list cannot be read, asking for an
    /// absent table makes an empty one, as `iptables-legacy -L` would.
    pub fn fingerprint(&mut self) -> io::Result<u64> {
        let mut h = Fold::new();
        for fam in &mut self.families {
            h.write_u8(u8::from(fam.layout.v6));
            let Some(info) = fam.read()? else {
                h.write(b"absent");
                continue;
            };
            h.write(&info);
            hash_entries(&mut h, fam.entries(), fam.layout)?;
        }
        Ok(h.finish())
    }

    /// Whether the `filter` table of every family the probe was opened for holds a user
    /// chain named `chain`: its head is an entry whose target is `ERROR` with the chain's
    /// name as its data. False when a table is absent.
    pub fn has_chain(&mut self, chain: &str) -> io::Result<bool> {
        for k in 0..self.families.len() {
            if !self.family_has_chain(k, chain)? {
                return Ok(false);
            }
        }
        Ok(!self.families.is_empty())
    }

    /// Like [`XtablesProbe::has_chain`], for one family (false if it was not opened).
    pub fn has_chain_in(&mut self, v6: bool, chain: &str) -> io::Result<bool> {
        match self.families.iter().position(|f| f.layout.v6 == v6) {
            Some(k) => self.family_has_chain(k, chain),
            None => Ok(false),
        }
    }

    fn family_has_chain(&mut self, k: usize, chain: &str) -> io::Result<bool> {
        let fam = &mut self.families[k];
        if fam.read()?.is_none() {
            return Ok(false);
        }
        holds_chain(fam.entries(), fam.layout, chain)
    }
}

/// A fast 64-bit hash of what is written to it, eight bytes a step (a multiply and an
/// xor-shift), and the length of each write: each step is a bijection of the state, so a
/// change of one word always changes the result. For noticing edits, not against an
/// adversary (who would need root, and could do worse).
struct Fold(u64);

impl Fold {
    fn new() -> Fold {
        // Not zero, which a word of zeros would leave as it is.
        Fold(0x243f_6a88_85a3_08d3)
    }

    fn step(&mut self, word: u64) {
        let x = (self.0 ^ word).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 = x ^ (x >> 32);
    }
}

impl Hasher for Fold {
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            self.step(u64::from_le_bytes(w.try_into().unwrap_or_default()));
        }
        let mut last = [0u8; 8];
        let rest = words.remainder();
        last[..rest.len()].copy_from_slice(rest);
        self.step(u64::from_le_bytes(last));
        self.step(bytes.len() as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Feeds a table's entries to `h`, without their counters and `comefrom`.
fn hash_entries(h: &mut impl Hasher, blob: &[u8], l: Layout) -> io::Result<()> {
    walk(blob, l, |entry, _| {
        h.write(&entry[..l.comefrom_at()]);
        h.write(&entry[l.counters_end()..]);
    })
}

/// Whether a table's entries hold the head of the user chain `chain`: an `ERROR` target
/// whose data is the chain's name.
fn holds_chain(blob: &[u8], l: Layout, chain: &str) -> io::Result<bool> {
    let mut found = false;
    walk(blob, l, |_, target| {
        found |= c_name(&target[2..TARGET_HDR - 1]) == b"ERROR"
            && c_name(&target[TARGET_HDR..]) == chain.as_bytes();
    })?;
    Ok(found)
}

/// Reads the `filter` table of `sock`'s family into `buf` (its entries from
/// [`ENTRIES_AT`]); returns what `GET_INFO` said after the name, or `None` when the
/// table is absent.
fn read_table(sock: &sys::RawIpSocket, buf: &mut Vec<u8>) -> io::Result<Option<[u8; 52]>> {
    let absent = |e: &io::Error| matches!(e.raw_os_error(), Some(ENOENT | ENOPROTOOPT));
    for _ in 0..ATTEMPTS {
        let mut info = [0u8; GETINFO_LEN];
        info[..TABLE.len()].copy_from_slice(TABLE);
        match sock.get(SO_GET_INFO, &mut info) {
            Err(e) if absent(&e) => return Ok(None),
            Err(e) => return Err(e),
            Ok(n) if n != GETINFO_LEN => return Err(bad_table("a short answer to GET_INFO")),
            Ok(_) => {}
        }
        let size = u32_at(&info, GETINFO_SIZE_AT).unwrap_or(0) as usize;
        if size > TABLE_MAX {
            return Err(bad_table(&format!("a table of {size} bytes")));
        }
        // The kernel fills the entries: what the buffer held is not cleared.
        buf.resize(ENTRIES_AT + size, 0);
        buf[..TABLE_NAME_LEN].fill(0);
        buf[..TABLE.len()].copy_from_slice(TABLE);
        buf[TABLE_NAME_LEN..TABLE_NAME_LEN + 4].copy_from_slice(&(size as u32).to_ne_bytes());
        match sock.get(SO_GET_ENTRIES, buf) {
            // The table changed since GET_INFO: ask again.
            Err(e) if e.raw_os_error() == Some(EAGAIN) => continue,
            Err(e) if absent(&e) => return Ok(None),
            Err(e) => return Err(e),
            Ok(n) if n != buf.len() => return Err(bad_table("a short answer to GET_ENTRIES")),
            Ok(_) => {}
        }
        let mut shape = [0u8; 52];
        shape.copy_from_slice(&info[TABLE_NAME_LEN..]);
        return Ok(Some(shape));
    }
    Err(bad_table("the table kept changing while it was read"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The notifications a subscribed socket read in a fresh network namespace (x86_64,
    /// Linux 6.18) while `nft add table inet t`, `nft add chain inet t c`, `nft flush
    /// ruleset` and `iptables-nft -A INPUT -p tcp --dport 22 -j DROP` ran: one datagram a
    /// line, each transaction's objects, then its generation.
    const RECORDED: [&str; 8] = [
        concat!(
            "38000000000a000001000000bd4a000001000002060001007400000008000300000000000c00040000000000",
            "000000010800020000000000",
        ),
        "2c0000000f0a000001000000bd4a00000000000208000100000000020800020000004abd080003006e667400",
        concat!(
            "38000000030a000401000000be4a000001000003060001007400000006000300630000000c00020000000000",
            "000000010800060000000000",
        ),
        "2c0000000f0a000001000000be4a00000000000308000100000000030800020000004abe080003006e667400",
        concat!(
            "30000000050a000001000000bf4a000001000004060001007400000006000300630000000c00020000000000",
            "0000000130000000020a000001000000bf4a000001000004060001007400000008000300000000000c000400",
            "0000000000000001",
        ),
        "2c0000000f0a000001000000bf4a00000000000408000100000000040800020000004abf080003006e667400",
        concat!(
            "3c000000000a000402000000c04a0000020000050b00010066696c746572000008000300000000010c000400",
            "0000000000000002080002000000000070000000030a000403000000c04a0000020000050b00010066696c74",
            "657200000a000300494e5055540000000c000200000000000000000114000400080001000000000108000200",
            "0000000008000500000000010b00070066696c746572000008000a0000000001080006000000000148010000",
            "060a000c04000000c04a0000020000050b00010066696c74657200000a000200494e5055540000000c000300",
            "00000000000000021001040024000100090001006d6574610000000014000200080002000000001008000100",
            "000000012c00010008000100636d700020000200080001000000000108000200000000000c00030005000100",
            "06000000340001000c0001007061796c6f616400240002000800010000000001080002000000000208000300",
            "0000000208000400000000022c00010008000100636d70002000020008000100000000010800020000000000",
            "0c00030006000100001600002c0001000c000100636f756e746572001c0002000c0001000000000000000000",
            "0c0002000000000000000000300001000e000100696d6d6564696174650000001c0002000800010000000000",
            "100002000c0002000800010000000000",
        ),
        concat!(
            "380000000f0a000002000000c04a00000000000508000100000000050800020000004ac01100030069707461",
            "626c65732d6e667400000000",
        ),
    ];

    fn unhex(h: &str) -> Vec<u8> {
        (0..h.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
            .collect()
    }

    fn object(
        what: NftObject,
        deleted: bool,
        family: u8,
        table: &str,
        name: Option<&str>,
    ) -> NftEvent {
        NftEvent::object(what, deleted, family, table, name)
    }

    /// Recorded outside any container: the socket's port is the pid.
    fn generation(id: u32, pid: u32, process: &str) -> NftEvent {
        NftEvent::Generation {
            id,
            pid: Some(pid),
            port: pid,
            process: Some(process.into()),
        }
    }

    fn parse(b: &[u8]) -> Result<Vec<NftEvent>, Malformed> {
        let mut out = Vec::new();
        parse_datagram(b, &mut out).map(|()| out)
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn recorded_notifications() {
        use NftObject::*;
        let events: Vec<Vec<NftEvent>> =
            RECORDED.iter().map(|h| parse(&unhex(h)).unwrap()).collect();
        assert_eq!(
            events,
            vec![
                vec![object(Table, false, 1, "t", None)],
                vec![generation(2, 19133, "nft")],
                vec![object(Chain, false, 1, "t", Some("c"))],
                vec![generation(3, 19134, "nft")],
                vec![
                    object(Chain, true, 1, "t", Some("c")),
                    object(Table, true, 1, "t", None),
                ],
                vec![generation(4, 19135, "nft")],
                vec![
                    object(Table, false, 2, "filter", None),
                    object(Chain, false, 2, "filter", Some("INPUT")),
                    object(Rule, false, 2, "filter", Some("INPUT")),
                ],
                vec![generation(5, 19136, "iptables-nft")],
            ]
        );
    }

    /// Where the netlink messages of a datagram end.
    fn boundaries(b: &[u8]) -> Vec<usize> {
        let mut at = 0;
        let mut ends = vec![];
        while at < b.len() {
            at += align4(u32_at(b, at).unwrap() as usize);
            ends.push(at);
        }
        ends
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn a_datagram_cut_anywhere_is_malformed() {
        for h in RECORDED {
            let whole = unhex(h);
            let ends = boundaries(&whole);
            for cut in 0..whole.len() {
                let r = parse(&whole[..cut]);
                if ends.contains(&cut) {
                    assert!(r.is_ok(), "cut at a message's end {cut}");
                } else {
                    assert_eq!(r, Err(Malformed), "cut at {cut} of {h}");
                }
            }
        }
    }

    /// A netlink message of nf_tables of type `msg` with `attrs`.
    fn message(msg: u16, family: u8, attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut body = vec![family, 0, 0, 1];
        for (kind, data) in attrs {
            body.extend(((4 + data.len()) as u16).to_ne_bytes());
            body.extend(kind.to_ne_bytes());
            body.extend(*data);
            body.resize(align4(body.len()), 0);
        }
        let mut m = ((NLMSG_HDRLEN + body.len()) as u32).to_ne_bytes().to_vec();
        m.extend(((NFNL_SUBSYS_NFTABLES << 8) | msg).to_ne_bytes());
        m.extend([0; 10]);
        m.extend(body);
        m
    }

    #[test]
    fn hand_made_messages() {
        use NftObject::*;
        // DESTROY… (a newer kernel) is a deletion; the nested flag is masked off.
        let m = message(28, 10, &[(1 | 0x8000, b"tg\0"), (2, b"in\0")]);
        assert_eq!(
            parse(&m),
            Ok(vec![object(Rule, true, 10, "tg", Some("in"))])
        );
        let m = message(30, 1, &[(1, b"tg\0"), (2, b"banned\0"), (3, &[0; 8])]);
        assert_eq!(
            parse(&m),
            Ok(vec![object(Element, true, 1, "tg", Some("banned"))])
        );
        // Objects and flowtables are Other; an unknown type too, without a name.
        let m = message(22, 1, &[(1, b"tg\0"), (2, b"ft\0")]);
        assert_eq!(
            parse(&m),
            Ok(vec![object(Other, false, 1, "tg", Some("ft"))])
        );
        let m = message(40, 1, &[(1, b"tg\0"), (2, b"x\0")]);
        assert_eq!(parse(&m), Ok(vec![object(Other, false, 1, "tg", None)]));
        // Requests' types and traces are no change.
        assert_eq!(parse(&message(7, 1, &[])), Ok(vec![]));
        assert_eq!(parse(&message(17, 1, &[])), Ok(vec![]));
        // Missing attributes: an empty table, no pid; a pid of the wrong size is none.
        assert_eq!(
            parse(&message(0, 2, &[])),
            Ok(vec![object(Table, false, 2, "", None)])
        );
        let m = message(15, 0, &[(1, &7u32.to_be_bytes()), (2, &[1, 2])]);
        assert_eq!(
            parse(&m),
            Ok(vec![NftEvent::Generation {
                id: 7,
                pid: None,
                port: 0,
                process: None
            }])
        );
        // A name not NUL-terminated, and one not UTF-8.
        let m = message(9, 2, &[(1, b"t"), (2, b"s\xff\0junk")]);
        assert_eq!(
            parse(&m),
            Ok(vec![object(Set, false, 2, "t", Some("s\u{fffd}"))])
        );
        // Another subsystem's message is passed over, the rest read.
        let mut other = message(0, 2, &[(1, b"x\0")]);
        other[5] = 1;
        other.extend(message(3, 2, &[(1, b"t\0"), (3, b"c\0")]));
        assert_eq!(
            parse(&other),
            Ok(vec![object(Chain, false, 2, "t", Some("c"))])
        );
    }

    #[test]
    fn malformed_messages() {
        assert_eq!(parse(&[]), Err(Malformed));
        // A body shorter than nfgenmsg.
        let mut m = message(0, 2, &[]);
        m.truncate(NLMSG_HDRLEN + 2);
        m[..4].copy_from_slice(&((NLMSG_HDRLEN + 2) as u32).to_ne_bytes());
        assert_eq!(parse(&m), Err(Malformed));
        // A message length under the header, or past the datagram.
        let mut m = message(0, 2, &[(1, b"t\0")]);
        for len in [0u32, 15, m.len() as u32 + 1, u32::MAX] {
            m[..4].copy_from_slice(&len.to_ne_bytes());
            assert_eq!(parse(&m), Err(Malformed), "length {len}");
        }
        // An attribute length under its header, or past its message.
        let at = NLMSG_HDRLEN + NFGENMSG_LEN;
        for len in [0u16, 3, 9, 0xffff] {
            let mut m = message(0, 2, &[(1, b"t\0")]);
            m[at..at + 2].copy_from_slice(&len.to_ne_bytes());
            assert_eq!(parse(&m), Err(Malformed), "attribute length {len}");
        }
    }

    #[test]
    fn noise_never_panics() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let base = unhex(RECORDED[6]);
        for _ in 0..20_000 {
            let mut b = base.clone();
            for _ in 0..(next() % 4 + 1) {
                let i = (next() as usize) % b.len();
                b[i] = next() as u8;
            }
            b.truncate((next() as usize) % (b.len() + 1));
            let _ = parse(&b);
            let _ = walk(&b, Layout::of(next() % 2 == 0), |_, _| {});
        }
    }

    /// One entry of a legacy table: `proto` in its ip part, a target of `name` with `data`.
    fn entry(l: Layout, proto: u8, name: &str, data: &[u8], counters: u64) -> Vec<u8> {
        let mut e = vec![0u8; l.counters_end()];
        e[l.ip_len - 4] = proto;
        let counters_at = l.counters_end() - 16;
        e[counters_at..counters_at + 8].copy_from_slice(&counters.to_ne_bytes());
        e[counters_at + 8..].copy_from_slice(&(counters * 60).to_ne_bytes());
        e[l.comefrom_at()..l.comefrom_at() + 4].copy_from_slice(&(counters as u32).to_ne_bytes());
        let target_at = e.len();
        let mut t = vec![0u8; TARGET_HDR];
        t[2..2 + name.len()].copy_from_slice(name.as_bytes());
        t.extend(data);
        t.resize(align_u64(t.len()), 0);
        let size = t.len() as u16;
        t[..2].copy_from_slice(&size.to_ne_bytes());
        e.extend(t);
        let next = e.len() as u16;
        e[l.target_offset_at()..l.target_offset_at() + 2]
            .copy_from_slice(&(target_at as u16).to_ne_bytes());
        e[l.next_offset_at()..l.next_offset_at() + 2].copy_from_slice(&next.to_ne_bytes());
        e
    }

    /// A table: a rule of `proto` (counted `counters` times), the head of chain TGKNOCK,
    /// and the end.
    fn table(l: Layout, proto: u8, counters: u64) -> Vec<u8> {
        let mut b = entry(l, proto, "", &(-2i32).to_ne_bytes(), counters);
        b.extend(entry(l, 0, "ERROR", b"TGKNOCK\0", 0));
        b.extend(entry(l, 0, "ERROR", b"ERROR\0", 0));
        b
    }

    fn hash(b: &[u8], l: Layout) -> io::Result<u64> {
        let mut h = Fold::new();
        hash_entries(&mut h, b, l).map(|()| h.finish())
    }

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn xtables_layouts() {
        // sizeof(struct ipt_entry), sizeof(struct ip6t_entry), sizeof(struct ipt_get_entries).
        assert_eq!(Layout::of(false).counters_end(), 112);
        assert_eq!(Layout::of(true).counters_end(), 168);
        assert_eq!(ENTRIES_AT, 40);
    }

    #[test]
    fn xtables_chains_and_fingerprints() {
        for v6 in [false, true] {
            let l = Layout::of(v6);
            let t = table(l, 6, 0);
            assert!(holds_chain(&t, l, "TGKNOCK").unwrap());
            for other in ["TGK", "TGKNOCK2", "", "INPUT"] {
                assert!(!holds_chain(&t, l, other).unwrap(), "{other}");
            }
            // Counters (and comefrom) are not part of it; the rules are.
            assert_eq!(hash(&t, l).unwrap(), hash(&table(l, 6, 12_345), l).unwrap());
            assert_ne!(hash(&t, l).unwrap(), hash(&table(l, 17, 0), l).unwrap());
        }
    }

    #[test]
    fn fold_sees_every_single_change() {
        let of = |parts: &[&[u8]]| {
            let mut h = Fold::new();
            parts.iter().for_each(|p| h.write(p));
            h.finish()
        };
        let base: Vec<u8> = (0..61).collect();
        let mut seen = std::collections::HashSet::new();
        assert!(seen.insert(of(&[&base])));
        for i in 0..base.len() {
            for bit in 0..8 {
                let mut b = base.clone();
                b[i] ^= 1 << bit;
                assert!(seen.insert(of(&[&b])), "byte {i} bit {bit}");
            }
        }
        // Where a write ends counts; zeros are not nothing.
        assert_ne!(of(&[&base[..8], &base[8..]]), of(&[&base]));
        assert_ne!(of(&[&[0u8; 3]]), of(&[&[0u8; 4]]));
        assert_ne!(of(&[&[]]), of(&[]));
    }

    #[test]
    fn xtables_malformed_tables() {
        let l = Layout::of(false);
        let t = table(l, 6, 0);
        let first = u16_at(&t, l.next_offset_at()).unwrap() as usize;
        let mut ends = vec![];
        walk(&t, l, |e, _| ends.push(ends.last().unwrap_or(&0) + e.len())).unwrap();
        // Cut inside any entry.
        for cut in 1..t.len() {
            let r = holds_chain(&t[..cut], l, "TGKNOCK");
            assert_eq!(r.is_ok(), ends.contains(&cut), "cut at {cut}");
        }
        let with = |at: usize, v: u16| {
            let mut b = t.clone();
            b[at..at + 2].copy_from_slice(&v.to_ne_bytes());
            holds_chain(&b, l, "TGKNOCK")
        };
        // A next_offset of 0 (no endless walk), short of the fixed part, or past the end.
        for v in [0, 8, 111, 0xffff] {
            assert!(with(l.next_offset_at(), v).is_err(), "next_offset {v}");
        }
        // A target inside the fixed part, or running past its entry.
        for v in [0, 100, first as u16] {
            assert!(with(l.target_offset_at(), v).is_err(), "target_offset {v}");
        }
        let target_at = u16_at(&t, l.target_offset_at()).unwrap() as usize;
        for v in [0, 31, 0x1000] {
            assert!(with(target_at, v).is_err(), "target_size {v}");
        }
    }
}
