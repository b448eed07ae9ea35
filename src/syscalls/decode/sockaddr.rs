//! Socket addresses read from the tracee (bind, connect, accept): parsed from
//! the raw `struct sockaddr` bytes into something a person reads,
//! `127.0.0.1:8125`, `[::1]:53`, `/run/x.sock`, `@abstract`, `unnamed`.
//!
//! The bytes are untrusted: any length is accepted, short structures are
//! shown as what they are, and unix socket names are escaped.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::TraceeMemory;
use super::args;

/// Most bytes of a sockaddr read: `sizeof(struct sockaddr_storage)`.
pub const SOCKADDR_MAX: usize = 128;

/// A parsed socket address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SockAddr {
    /// AF_UNSPEC: for connect, dissolves a datagram socket's association.
    Unspec,
    Inet {
        addr: Ipv4Addr,
        port: u16,
    },
    Inet6 {
        addr: Ipv6Addr,
        port: u16,
        scope: u32,
    },
    /// A unix socket path, escaped.
    UnixPath(String),
    /// A unix socket in the abstract namespace (name without the leading
    /// NUL), escaped.
    UnixAbstract(String),
    /// A unix socket address with no name (autobind, or an unbound peer).
    UnixUnnamed,
    Netlink {
        pid: u32,
        groups: u32,
    },
    /// Too short to hold its family's fields, or a family not parsed.
    Other {
        family: u16,
    },
}

impl SockAddr {
    /// Parse the first `bytes.len()` bytes of a sockaddr (the length the
    /// caller passed or the kernel returned). `None` when even the family
    /// does not fit.
    pub fn parse(bytes: &[u8]) -> Option<SockAddr> {
        let family = u16::from_ne_bytes(bytes.get(..2)?.try_into().ok()?);
        let be16 = |at: usize| Some(u16::from_be_bytes(bytes.get(at..at + 2)?.try_into().ok()?));
        let ne32 = |at: usize| Some(u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?));
        let other = SockAddr::Other { family };
        let parsed = match i32::from(family) {
            libc::AF_UNSPEC => Some(SockAddr::Unspec),
            libc::AF_INET => (|| {
                let octets: [u8; 4] = bytes.get(4..8)?.try_into().ok()?;
                Some(SockAddr::Inet {
                    addr: Ipv4Addr::from(octets),
                    port: be16(2)?,
                })
            })(),
            libc::AF_INET6 => (|| {
                let octets: [u8; 16] = bytes.get(8..24)?.try_into().ok()?;
                Some(SockAddr::Inet6 {
                    addr: Ipv6Addr::from(octets),
                    port: be16(2)?,
                    // sin6_scope_id is optional (RFC 2133's 24-byte form)
                    scope: ne32(24).unwrap_or(0),
                })
            })(),
            libc::AF_UNIX => Some(unix(&bytes[2..])),
            libc::AF_NETLINK => (|| {
                Some(SockAddr::Netlink {
                    pid: ne32(4)?,
                    groups: ne32(8)?,
                })
            })(),
            _ => None,
        };
        Some(parsed.unwrap_or(other))
    }

    /// The address family's number.
    pub fn family(&self) -> u16 {
        let family = match self {
            SockAddr::Unspec => libc::AF_UNSPEC,
            SockAddr::Inet { .. } => libc::AF_INET,
            SockAddr::Inet6 { .. } => libc::AF_INET6,
            SockAddr::UnixPath(_) | SockAddr::UnixAbstract(_) | SockAddr::UnixUnnamed => {
                libc::AF_UNIX
            }
            SockAddr::Netlink { .. } => libc::AF_NETLINK,
            SockAddr::Other { family } => return *family,
        };
        family as u16
    }

    /// As a syscall argument: `{AF_INET, 127.0.0.1:8125}`, `{AF_UNIX,
    /// "/run/x.sock"}`, `{AF_PACKET}` for a family shown by name only.
    pub fn args_text(&self) -> String {
        let family = args::constant(self.family().into(), args::AF_NAMES);
        match self {
            SockAddr::Unspec | SockAddr::Other { .. } => format!("{{{family}}}"),
            SockAddr::UnixPath(path) => format!("{{{family}, \"{path}\"}}"),
            SockAddr::UnixAbstract(name) => format!("{{{family}, @\"{name}\"}}"),
            _ => format!("{{{family}, {self}}}"),
        }
    }
}

/// The readable address, as notes show it.
impl fmt::Display for SockAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SockAddr::Unspec => f.write_str("AF_UNSPEC"),
            SockAddr::Inet { addr, port } => write!(f, "{addr}:{port}"),
            SockAddr::Inet6 { addr, port, scope } if *scope != 0 => {
                write!(f, "[{addr}%{scope}]:{port}")
            }
            SockAddr::Inet6 { addr, port, .. } => write!(f, "[{addr}]:{port}"),
            SockAddr::UnixPath(path) => f.write_str(path),
            SockAddr::UnixAbstract(name) => write!(f, "@{name}"),
            SockAddr::UnixUnnamed => f.write_str("unnamed"),
            SockAddr::Netlink { pid, groups } => write!(f, "netlink pid {pid} groups {groups:#x}"),
            SockAddr::Other { family } => write!(f, "family {family}"),
        }
    }
}

/// `sun_path` (the bytes after the family): empty is unnamed, a leading NUL
/// is the abstract namespace (the name is every byte up to the length, NULs
/// included), otherwise a path up to its NUL.
fn unix(path: &[u8]) -> SockAddr {
    match path {
        [] => SockAddr::UnixUnnamed,
        [0, name @ ..] => SockAddr::UnixAbstract(args::escape(name)),
        _ => {
            let end = path.iter().position(|&b| b == 0).unwrap_or(path.len());
            if end == 0 {
                SockAddr::UnixUnnamed
            } else {
                SockAddr::UnixPath(args::escape(&path[..end]))
            }
        }
    }
}

/// The sockaddr of `len` bytes at `addr`, capped at `SOCKADDR_MAX`. `None`
/// when it cannot be read.
pub fn read(mem: &dyn TraceeMemory, addr: u64, len: u64) -> Option<SockAddr> {
    if addr == 0 {
        return None;
    }
    let len = usize::try_from(len).ok()?.min(SOCKADDR_MAX);
    SockAddr::parse(&mem.read_bytes(addr, len)?)
}

/// A `socklen_t` written by the kernel (accept's address length).
pub fn read_len(mem: &dyn TraceeMemory, addr: u64) -> Option<u32> {
    if addr == 0 {
        return None;
    }
    let bytes = mem.read_bytes(addr, 4)?;
    Some(u32::from_ne_bytes(bytes.get(..4)?.try_into().ok()?))
}
