//! Socket inode → endpoint: protocol, local and remote address, state, and
//! whether `netstat`/`ss` can see it — always in the **process's own network
//! namespace** (`/proc/PID/net/*`, never fdbg's `/proc/net/*`).
//!
//! A socket fd shows as `socket:[INODE]` in `/proc/PID/fd`. The kernel lists
//! a socket in `/proc/PID/net/{tcp,tcp6,udp,udp6,raw,raw6,unix,netlink,packet}`
//! only once it is in one of the protocol's lookup tables: TCP once it listens
//! or connects, UDP and raw once bound or connected (raw: at creation),
//! netlink once bound (explicitly, or implicitly by its first send), unix and
//! packet at creation. A socket in none of them is **UNCONNECTED**: netstat
//! and ss cannot show it — the sockets that make a process hold far more
//! sockets than netstat lists (`inspect`'s case 2). For those,
//! [`unconnected`] asks the socket itself (family, type, protocol, bound
//! name) through a copy of the fd taken with pidfd_getfd, which needs ptrace
//! permission but attaches nothing and stops nothing.
//!
//! State names: TCP states as netstat prints them (`LISTEN`, `ESTABLISHED`,
//! `CLOSE_WAIT`, `TIME_WAIT`, …); `UNCONN` (ss's word) for a socket that is
//! listed but not connected (a bound UDP socket, a netlink socket, an unbound
//! unix datagram socket); `UNCONNECTED` for a socket that is in no table.
//!
//! Readers: tcp, tcp6, udp, udp6 through the `procfs` crate
//! (`Process::tcp()` etc. read the process's netns files); raw and raw6 have
//! the udp layout and go through the crate's udp parser. unix, netlink and
//! packet are parsed here by hand: the crate has no netlink or packet reader,
//! and its unix reader splits the path at whitespace and fails the whole
//! table on a name that is not UTF-8 — names the process chose, so one odd
//! socket name would hide every socket. Those names stay untrusted here: they
//! are returned raw and escaped by whoever prints them (`repl::render`). The
//! kernel prints a unix path's bytes unescaped, so a path containing a
//! newline can make a line that looks like another socket; only `sock_diag`
//! netlink queries would avoid that.
//!
//! No ptrace, no stop, no change to the process.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs;
use std::io;
use std::net::SocketAddr;

use procfs::net::{TcpNetEntry, TcpState, UdpNetEntries, UdpNetEntry, UdpState};
use procfs::process::Process;
use serde::Serialize;

/// The state of a socket found in no table: invisible to netstat and ss.
pub const UNCONNECTED: &str = "UNCONNECTED";
/// The state of a listed socket that is not connected (ss's `UNCONN`).
pub const UNCONN: &str = "UNCONN";

/// The protocol family of a socket, as users name it (and JSON carries).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Tcp6,
    Udp,
    Udp6,
    Unix,
    Netlink,
    Packet,
    Raw,
    Raw6,
    Other,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Tcp6 => "tcp6",
            Proto::Udp => "udp",
            Proto::Udp6 => "udp6",
            Proto::Unix => "unix",
            Proto::Netlink => "netlink",
            Proto::Packet => "packet",
            Proto::Raw => "raw",
            Proto::Raw6 => "raw6",
            Proto::Other => "other",
        }
    }

    /// TCP over IPv4 or IPv6.
    pub fn is_tcp(self) -> bool {
        matches!(self, Proto::Tcp | Proto::Tcp6)
    }

    fn is_inet(self) -> bool {
        matches!(
            self,
            Proto::Tcp | Proto::Tcp6 | Proto::Udp | Proto::Udp6 | Proto::Raw | Proto::Raw6
        )
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The socket type (SOCK_STREAM, …), where it is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SockType {
    Stream,
    Dgram,
    Seqpacket,
    Raw,
    Rdm,
}

impl SockType {
    fn from_raw(raw: i32) -> Option<SockType> {
        match raw {
            libc::SOCK_STREAM => Some(SockType::Stream),
            libc::SOCK_DGRAM => Some(SockType::Dgram),
            libc::SOCK_SEQPACKET => Some(SockType::Seqpacket),
            libc::SOCK_RAW => Some(SockType::Raw),
            libc::SOCK_RDM => Some(SockType::Rdm),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SockType::Stream => "stream",
            SockType::Dgram => "dgram",
            SockType::Seqpacket => "seqpacket",
            SockType::Raw => "raw",
            SockType::Rdm => "rdm",
        }
    }
}

/// What one socket is. `local`/`remote` are display strings: `127.0.0.1:4000`,
/// `[::1]:4000`, a unix path (`@name` for abstract), `route:1234` (netlink
/// family:port id), `0x0003:2` (packet ethertype:ifindex). `remote` is None
/// when not connected. Names come from the process: escape them to print.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SocketInfo {
    pub inode: u64,
    pub proto: Proto,
    pub sock_type: Option<SockType>,
    pub local: Option<String>,
    pub remote: Option<String>,
    /// `LISTEN`, `ESTABLISHED`, `CLOSE_WAIT`, … , [`UNCONN`], [`UNCONNECTED`].
    pub state: String,
    /// Listed in a /proc/net table, so netstat/ss can show it.
    pub netstat_visible: bool,
}

impl SocketInfo {
    /// The local port of a TCP, UDP or raw socket (raw: the IP protocol).
    pub fn local_port(&self) -> Option<u16> {
        if !self.proto.is_inet() {
            return None;
        }
        self.local.as_deref()?.rsplit_once(':')?.1.parse().ok()
    }
}

/// One snapshot of a network namespace's socket tables, keyed by inode.
/// Holds every socket of the namespace, not only one process's: TIME_WAIT
/// connections (inode 0, no fd anywhere) are kept in [`SocketTable::tcp`].
#[derive(Clone, Debug, Default)]
pub struct SocketTable {
    by_inode: HashMap<u64, SocketInfo>,
    tcp: Vec<SocketInfo>,
}

impl SocketTable {
    /// Read the tables of `pid`'s network namespace. A table the kernel does
    /// not have (tcp6 without IPv6, packet without af_packet) counts as
    /// empty; a vanished process is `NotFound`.
    pub fn read(pid: i32) -> io::Result<SocketTable> {
        let process =
            Process::new_with_root(crate::procfs::process_dir(pid)).map_err(proc_error)?;
        let mut table = SocketTable::default();
        let tcp = [
            (Proto::Tcp, optional(pid, process.tcp())?),
            (Proto::Tcp6, optional(pid, process.tcp6())?),
        ];
        for (proto, entries) in tcp {
            for entry in entries {
                table.insert(from_tcp(proto, &entry));
            }
        }
        let udp = [
            (Proto::Udp, optional(pid, process.udp())?),
            (Proto::Udp6, optional(pid, process.udp6())?),
            (Proto::Raw, optional(pid, read_raw(&process, "net/raw"))?),
            (Proto::Raw6, optional(pid, read_raw(&process, "net/raw6"))?),
        ];
        for (proto, entries) in udp {
            for entry in entries {
                table.insert(from_udp(proto, &entry));
            }
        }
        type LineParser = fn(&str) -> Option<SocketInfo>;
        let by_hand: [(&str, LineParser); 3] = [
            ("unix", parse_unix_line),
            ("netlink", parse_netlink_line),
            ("packet", parse_packet_line),
        ];
        for (name, parse) in by_hand {
            for info in read_lines(pid, name)?.iter().filter_map(|l| parse(l)) {
                table.insert(info);
            }
        }
        Ok(table)
    }

    fn insert(&mut self, info: SocketInfo) {
        if info.proto.is_tcp() {
            self.tcp.push(info.clone());
        }
        // Inode 0: TIME_WAIT and request sockets, owned by no fd.
        if info.inode != 0 {
            self.by_inode.insert(info.inode, info);
        }
    }

    /// The socket with this inode, if some table lists it.
    pub fn lookup(&self, inode: u64) -> Option<&SocketInfo> {
        self.by_inode.get(&inode)
    }

    /// The socket behind fd `fd` (inode `inode`) of `pid`: from the tables,
    /// or, if it is in none, from the socket itself ([`unconnected`]).
    pub fn resolve(&self, pid: i32, fd: i32, inode: u64) -> SocketInfo {
        match self.lookup(inode) {
            Some(info) => info.clone(),
            None => unconnected(pid, fd, inode),
        }
    }

    /// Every TCP connection of the namespace (tcp and tcp6), with or without
    /// an fd: TIME_WAIT ones have inode 0.
    pub fn tcp(&self) -> &[SocketInfo] {
        &self.tcp
    }
}

/// The endpoints of the sockets among `fds` (as /proc listed them), read
/// from `pid`'s own network namespace.
pub fn socket_infos(pid: i32, fds: &[crate::vocab::ProcFd]) -> BTreeMap<i32, SocketInfo> {
    let Ok(table) = SocketTable::read(pid) else {
        return BTreeMap::new();
    };
    fds.iter()
        .filter_map(|f| Some((f.fd, table.resolve(pid, f.fd, socket_inode(&f.target)?))))
        .collect()
}

/// The inode of an fd link target `socket:[123]`.
pub fn socket_inode(target: &str) -> Option<u64> {
    target
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// For a socket found in no table: its family, type and bound name, asked of
/// the socket itself through a copy of fd `fd` of `pid` (pidfd_getfd, closed
/// at once). Falls back to proto `other` when the copy cannot be taken (no
/// ptrace permission, kernel before 5.6, fd closed) or is no longer the socket
/// with `inode` (fd number reused).
pub fn unconnected(pid: i32, fd: i32, inode: u64) -> SocketInfo {
    let mut info = SocketInfo {
        inode,
        proto: Proto::Other,
        sock_type: None,
        local: None,
        remote: None,
        state: UNCONNECTED.to_string(),
        netstat_visible: false,
    };
    let Ok(copy) = crate::ptrace::pidfd::copy_fd(pid, fd) else {
        return info;
    };
    let same = nix::sys::stat::fstat(&copy).is_ok_and(|st| st.st_ino == inode);
    if !same {
        return info;
    }
    let socket = socket2::Socket::from(copy);
    let domain = socket.domain().map(libc::c_int::from).unwrap_or(-1);
    let raw_type = socket.r#type().map(libc::c_int::from).unwrap_or(-1);
    let protocol = socket
        .protocol()
        .ok()
        .flatten()
        .map(libc::c_int::from)
        .unwrap_or(0);
    info.sock_type = SockType::from_raw(raw_type);
    info.proto = classify(domain, info.sock_type, protocol);
    if let Ok(addr) = socket.local_addr() {
        info.local = match addr.as_socket() {
            Some(inet) => Some(inet.to_string()),
            None => addr
                .as_pathname()
                .map(|p| p.to_string_lossy().into_owned())
                .or_else(|| {
                    let name = addr.as_abstract_namespace()?;
                    Some(format!("@{}", String::from_utf8_lossy(name)))
                }),
        };
    }
    info
}

/// The proto of a socket from its SO_DOMAIN, SO_TYPE and SO_PROTOCOL.
fn classify(domain: i32, sock_type: Option<SockType>, protocol: i32) -> Proto {
    let v6 = match domain {
        libc::AF_INET => false,
        libc::AF_INET6 => true,
        libc::AF_UNIX => return Proto::Unix,
        libc::AF_NETLINK => return Proto::Netlink,
        libc::AF_PACKET => return Proto::Packet,
        _ => return Proto::Other,
    };
    match (sock_type, protocol) {
        (Some(SockType::Stream), 0 | libc::IPPROTO_TCP) => [Proto::Tcp, Proto::Tcp6][v6 as usize],
        (Some(SockType::Dgram), 0 | libc::IPPROTO_UDP) => [Proto::Udp, Proto::Udp6][v6 as usize],
        (Some(SockType::Raw), _) => [Proto::Raw, Proto::Raw6][v6 as usize],
        _ => Proto::Other,
    }
}

/// One line for `fds` targets and event lines:
/// `udp 0.0.0.0:0 unconnected`, `tcp 127.0.0.1:4000 → 127.0.0.1:53422 ESTABLISHED`,
/// `unix /run/x.sock LISTEN`, `unix dgram (unnamed) UNCONN`. Not escaped.
pub fn target_text(info: &SocketInfo) -> String {
    let mut parts: Vec<String> = vec![info.proto.as_str().to_string()];
    if info.proto == Proto::Unix {
        if let Some(t) = info.sock_type.filter(|t| *t != SockType::Stream) {
            parts.push(t.as_str().to_string());
        }
        parts.push(info.local.clone().unwrap_or_else(|| "(unnamed)".into()));
    } else if let Some(local) = &info.local {
        parts.push(local.clone());
    }
    if let Some(remote) = &info.remote {
        parts.push(format!("→ {remote}"));
    }
    parts.push(if info.state == UNCONNECTED {
        "unconnected".to_string()
    } else {
        info.state.clone()
    });
    parts.join(" ")
}

/// netstat's name for a TCP state.
pub fn tcp_state_name(state: &TcpState) -> &'static str {
    match state {
        TcpState::Established => "ESTABLISHED",
        TcpState::SynSent => "SYN_SENT",
        TcpState::SynRecv => "SYN_RECV",
        TcpState::FinWait1 => "FIN_WAIT1",
        TcpState::FinWait2 => "FIN_WAIT2",
        TcpState::TimeWait => "TIME_WAIT",
        TcpState::Close => "CLOSE",
        TcpState::CloseWait => "CLOSE_WAIT",
        TcpState::LastAck => "LAST_ACK",
        TcpState::Listen => "LISTEN",
        TcpState::Closing => "CLOSING",
        TcpState::NewSynRecv => "NEW_SYN_RECV",
    }
}

/// `None` for the unspecified address with port 0 (not connected).
fn peer(addr: &SocketAddr) -> Option<String> {
    (!(addr.ip().is_unspecified() && addr.port() == 0)).then(|| addr.to_string())
}

fn from_tcp(proto: Proto, entry: &TcpNetEntry) -> SocketInfo {
    SocketInfo {
        inode: entry.inode,
        proto,
        sock_type: Some(SockType::Stream),
        local: Some(entry.local_address.to_string()),
        remote: peer(&entry.remote_address),
        state: tcp_state_name(&entry.state).to_string(),
        netstat_visible: true,
    }
}

fn from_udp(proto: Proto, entry: &UdpNetEntry) -> SocketInfo {
    let raw = matches!(proto, Proto::Raw | Proto::Raw6);
    SocketInfo {
        inode: entry.inode,
        proto,
        sock_type: Some(if raw { SockType::Raw } else { SockType::Dgram }),
        local: Some(entry.local_address.to_string()),
        remote: peer(&entry.remote_address),
        state: match entry.state {
            UdpState::Established => "ESTABLISHED",
            UdpState::Close => UNCONN,
        }
        .to_string(),
        netstat_visible: true,
    }
}

/// raw and raw6 have udp's columns (the local "port" is the IP protocol).
fn read_raw(process: &Process, path: &str) -> procfs::ProcResult<Vec<UdpNetEntry>> {
    process
        .read_si::<_, UdpNetEntries>(path)
        .map(|UdpNetEntries(entries)| entries)
}

fn proc_error(e: procfs::ProcError) -> io::Error {
    match e {
        procfs::ProcError::NotFound(_) => io::Error::from(io::ErrorKind::NotFound),
        procfs::ProcError::PermissionDenied(_) => io::Error::from(io::ErrorKind::PermissionDenied),
        procfs::ProcError::Io(e, _) => e,
        other => io::Error::other(other.to_string()),
    }
}

/// A table that may be missing from this kernel: missing while the process
/// still exists means empty.
fn optional<T>(pid: i32, read: procfs::ProcResult<Vec<T>>) -> io::Result<Vec<T>> {
    match read {
        Ok(entries) => Ok(entries),
        Err(procfs::ProcError::NotFound(_)) if process_exists(pid) => Ok(Vec::new()),
        Err(e) => Err(proc_error(e)),
    }
}

fn process_exists(pid: i32) -> bool {
    fs::metadata(format!("/proc/{pid}")).is_ok()
}

/// The data lines (header skipped) of /proc/PID/net/NAME, bytes decoded
/// lossily: a unix path need not be UTF-8.
fn read_lines(pid: i32, name: &str) -> io::Result<Vec<String>> {
    match fs::read(crate::procfs::process_dir(pid).join("net").join(name)) {
        Ok(bytes) => Ok(bytes
            .split(|b| *b == b'\n')
            .skip(1)
            .filter(|l| !l.is_empty())
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect()),
        Err(e) if e.kind() == io::ErrorKind::NotFound && process_exists(pid) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// The kernel's __SO_ACCEPTCON flag in /proc/net/unix: a listening socket.
const UNIX_ACCEPTCON: u32 = 1 << 16;

/// `Num: RefCount Protocol Flags Type St Inode [Path]`, all hex but the
/// inode; the path is the rest of the line (it may contain spaces).
fn parse_unix_line(line: &str) -> Option<SocketInfo> {
    let (_slot, rest) = line.split_once(": ")?;
    let mut rest = rest.trim_start();
    let mut field = || -> Option<&str> {
        let (word, tail) = rest.split_once(' ').unwrap_or((rest, ""));
        rest = tail.trim_start_matches(' ');
        (!word.is_empty()).then_some(word)
    };
    let _ref_count = field()?;
    let _protocol = field()?;
    let flags = u32::from_str_radix(field()?, 16).ok()?;
    let sock_type = i32::from_str_radix(field()?, 16).ok()?;
    let st = u8::from_str_radix(field()?, 16).ok()?;
    let inode = field()?.parse().ok()?;
    let path = (!rest.is_empty()).then(|| rest.to_string());
    let state = if flags & UNIX_ACCEPTCON != 0 {
        "LISTEN"
    } else {
        match st {
            1 => UNCONN,
            2 => "CONNECTING",
            3 => "ESTABLISHED",
            4 => "DISCONNECTING",
            _ => "UNKNOWN",
        }
    };
    Some(SocketInfo {
        inode,
        proto: Proto::Unix,
        sock_type: SockType::from_raw(sock_type),
        local: path,
        remote: None,
        state: state.to_string(),
        netstat_visible: true,
    })
}

/// Netlink families by number (linux/netlink.h).
fn netlink_family(protocol: u32) -> String {
    let name = match protocol {
        0 => "route",
        2 => "usersock",
        3 => "firewall",
        4 => "sock_diag",
        5 => "nflog",
        6 => "xfrm",
        7 => "selinux",
        8 => "iscsi",
        9 => "audit",
        10 => "fib_lookup",
        11 => "connector",
        12 => "netfilter",
        13 => "ip6_fw",
        14 => "dnrtmsg",
        15 => "kobject_uevent",
        16 => "generic",
        18 => "scsitransport",
        19 => "ecryptfs",
        20 => "rdma",
        21 => "crypto",
        22 => "smc",
        other => return other.to_string(),
    };
    name.to_string()
}

/// `sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode`: Eth is the netlink
/// family, Pid the port id (0 for the kernel's own sockets).
fn parse_netlink_line(line: &str) -> Option<SocketInfo> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let [
        _sk,
        eth,
        port,
        _groups,
        _rmem,
        _wmem,
        _dump,
        _locks,
        _drops,
        inode,
        ..,
    ] = fields.as_slice()
    else {
        return None;
    };
    let family: u32 = eth.parse().ok()?;
    let port: u32 = port.parse().ok()?;
    Some(SocketInfo {
        inode: inode.parse().ok()?,
        proto: Proto::Netlink,
        sock_type: None,
        local: Some(format!("{}:{port}", netlink_family(family))),
        remote: None,
        state: UNCONN.to_string(),
        netstat_visible: true,
    })
}

/// `sk RefCnt Type Proto Iface R Rmem User Inode`: Proto is the ethertype
/// (hex), Iface the interface index (0: all).
fn parse_packet_line(line: &str) -> Option<SocketInfo> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let [
        _sk,
        _refcnt,
        sock_type,
        ethertype,
        iface,
        _running,
        _rmem,
        _user,
        inode,
        ..,
    ] = fields.as_slice()
    else {
        return None;
    };
    let ethertype = u16::from_str_radix(ethertype, 16).ok()?;
    let iface: u32 = iface.parse().ok()?;
    Some(SocketInfo {
        inode: inode.parse().ok()?,
        proto: Proto::Packet,
        sock_type: SockType::from_raw(sock_type.parse().ok()?),
        local: Some(format!("0x{ethertype:04x}:{iface}")),
        remote: None,
        state: UNCONN.to_string(),
        netstat_visible: true,
    })
}

#[cfg(test)]
mod tests;
