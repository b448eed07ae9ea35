//! `fdbg inspect PID`: the triage operators do by hand for a process whose
//! sockets pile up (compare `/proc/PID/fd` with netstat, count TCP states),
//! in one command, from /proc only.
//!
//! Counts the process's open fds by kind and its sockets by state, splits
//! the sockets into those netstat/ss can see and those in no /proc/net table
//! (never bound or connected), counts TIME_WAIT and CLOSE_WAIT connections on
//! the process's own ports, and says in one sentence which case this looks
//! like: connections piling up in a TCP state (case 1: the sockets are real
//! connections), sockets invisible to netstat (case 2: far more sockets than
//! netstat shows, never bound or connected), or healthy.
//!
//! It never attaches and never stops the process. The one thing it asks of
//! the process's sockets beyond /proc is the family of an invisible socket,
//! through a pidfd_getfd copy (`net::unconnected`), which needs ptrace
//! permission but no tracer.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::fs;
use std::io;

use serde::Serialize;
use thiserror::Error;

use crate::escape::escape;
use crate::net::{self, Proto, SocketInfo, SocketTable};
use crate::procfs;
use crate::vocab::FdKind;

/// At least this many invisible sockets, and more than half of all sockets,
/// make case 2. A healthy process may hold one or two briefly (a socket made
/// only for an ioctl); a leak grows with every request.
pub const INVISIBLE_MIN: usize = 10;
/// CLOSE_WAIT is always the process's own doing (it has not closed what its
/// peer closed); this many make case 1.
pub const CLOSE_WAIT_MIN: usize = 10;
/// TIME_WAIT is normal after every active close; thousands make case 1.
pub const TIME_WAIT_MIN: usize = 1000;

#[derive(Debug, Error)]
pub enum InspectError {
    #[error("cannot inspect {pid}: no such process")]
    NoSuchProcess { pid: i32 },
    #[error("cannot inspect {tid}: it is a thread of process {pid}; inspect {pid}")]
    NotAProcess { tid: i32, pid: i32 },
    #[error(
        "cannot inspect {pid}: permission denied (need CAP_SYS_PTRACE or the same user to read /proc/{pid}/fd)"
    )]
    Permission { pid: i32 },
    #[error("cannot inspect {pid}: {source}")]
    Read {
        pid: i32,
        #[source]
        source: io::Error,
    },
}

/// Which case the process looks like: the verdict names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Case {
    /// Case 1: connections piling up in a TCP state.
    TcpStatePileup,
    /// Case 2: sockets invisible to netstat, never bound or connected.
    InvisibleSockets,
    Healthy,
}

/// One socket fd of the process.
#[derive(Clone, Debug, Serialize)]
pub struct FdSocket {
    pub fd: i32,
    #[serde(flatten)]
    pub socket: SocketInfo,
}

/// What `inspect` found: the fields of its JSON document (pid, open_fds,
/// by_kind, by_state, netstat_visible, netstat_invisible, verdict), plus the
/// counts the verdict rests on.
#[derive(Clone, Debug, Serialize)]
pub struct Inspection {
    pub pid: i32,
    /// The process's name (`comm`), as the process set it: escape to print.
    pub name: String,
    pub open_fds: usize,
    pub by_kind: BTreeMap<&'static str, usize>,
    pub sockets: usize,
    pub by_state: BTreeMap<String, usize>,
    pub by_proto: BTreeMap<&'static str, usize>,
    pub netstat_visible: usize,
    pub netstat_invisible: usize,
    /// Ports the process listens on (TCP) or is bound to (UDP).
    pub local_ports: Vec<u16>,
    /// TCP connections in TIME_WAIT whose local port is one of `local_ports`
    /// (they have no fd: the kernel keeps them after the close).
    pub time_wait: usize,
    /// TCP connections in CLOSE_WAIT on `local_ports` or held by the process.
    pub close_wait: usize,
    pub case: Case,
    pub verdict: String,
    /// Every socket fd, by fd number.
    pub socket_fds: Vec<FdSocket>,
}

/// Look at `pid` now.
pub fn inspect(pid: i32) -> Result<Inspection, InspectError> {
    let status = procfs::status(pid).ok_or(InspectError::NoSuchProcess { pid })?;
    if status.tgid != pid {
        return Err(InspectError::NotAProcess {
            tid: pid,
            pid: status.tgid,
        });
    }
    let read_error = |source: io::Error| match source.kind() {
        io::ErrorKind::NotFound => InspectError::NoSuchProcess { pid },
        io::ErrorKind::PermissionDenied => InspectError::Permission { pid },
        _ => InspectError::Read { pid, source },
    };
    let table = SocketTable::read(pid).map_err(read_error)?;
    let fds = procfs::list_fds(pid, None).map_err(read_error)?;
    // list_fds skips links it cannot read (an fd closing meanwhile); links
    // unreadable for want of permission would make a silently empty report.
    if let Some(Err(e)) = fs::read_dir(format!("/proc/{pid}/fd"))
        .map_err(read_error)?
        .filter_map(Result::ok)
        .map(|entry| fs::read_link(entry.path()))
        .find(|link| link.is_err())
        && e.kind() == io::ErrorKind::PermissionDenied
    {
        return Err(InspectError::Permission { pid });
    }

    let mut by_kind = BTreeMap::new();
    let mut socket_fds = Vec::new();
    for fd in &fds {
        *by_kind.entry(fd.kind.as_str()).or_insert(0) += 1;
        if fd.kind == FdKind::Socket
            && let Some(inode) = net::socket_inode(&fd.target)
        {
            socket_fds.push(FdSocket {
                fd: fd.fd,
                socket: table.resolve(pid, fd.fd, inode),
            });
        }
    }
    Ok(summarize(
        pid,
        status.name,
        fds.len(),
        by_kind,
        socket_fds,
        &table,
    ))
}

/// The counts and the verdict, from what was read (no I/O).
fn summarize(
    pid: i32,
    name: String,
    open_fds: usize,
    by_kind: BTreeMap<&'static str, usize>,
    socket_fds: Vec<FdSocket>,
    table: &SocketTable,
) -> Inspection {
    let mut by_state = BTreeMap::new();
    let mut by_proto = BTreeMap::new();
    let mut local_ports = BTreeSet::new();
    let mut close_wait_inodes = BTreeSet::new();
    for s in socket_fds.iter().map(|f| &f.socket) {
        *by_state.entry(s.state.clone()).or_insert(0) += 1;
        *by_proto.entry(s.proto.as_str()).or_insert(0) += 1;
        let listening = s.proto.is_tcp() && s.state == "LISTEN";
        let bound_udp = matches!(s.proto, Proto::Udp | Proto::Udp6) && s.netstat_visible;
        if let Some(port) = s.local_port().filter(|p| *p != 0)
            && (listening || bound_udp)
        {
            local_ports.insert(port);
        }
        if s.state == "CLOSE_WAIT" {
            close_wait_inodes.insert(s.inode);
        }
    }
    let mut time_wait = 0;
    // CLOSE_WAIT connections are deduplicated by inode (the process's own
    // are found twice); one without an inode is counted as it is.
    let mut close_wait_without_inode = 0;
    for conn in table.tcp() {
        if !conn.local_port().is_some_and(|p| local_ports.contains(&p)) {
            continue;
        }
        match conn.state.as_str() {
            "TIME_WAIT" => time_wait += 1,
            "CLOSE_WAIT" if conn.inode == 0 => close_wait_without_inode += 1,
            "CLOSE_WAIT" => {
                close_wait_inodes.insert(conn.inode);
            }
            _ => {}
        }
    }
    let sockets = socket_fds.len();
    let netstat_visible = socket_fds
        .iter()
        .filter(|f| f.socket.netstat_visible)
        .count();
    let local_ports: Vec<u16> = local_ports.into_iter().collect();
    let counts = Counts {
        pid,
        sockets,
        invisible: sockets - netstat_visible,
        invisible_udp: socket_fds
            .iter()
            .filter(|f| {
                !f.socket.netstat_visible && matches!(f.socket.proto, Proto::Udp | Proto::Udp6)
            })
            .count(),
        time_wait,
        close_wait: close_wait_inodes.len() + close_wait_without_inode,
        ports: &local_ports,
    };
    let (case, verdict) = verdict(&counts);
    Inspection {
        pid,
        name,
        open_fds,
        by_kind,
        sockets,
        by_state,
        by_proto,
        netstat_visible,
        netstat_invisible: counts.invisible,
        time_wait,
        close_wait: counts.close_wait,
        local_ports,
        case,
        verdict,
        socket_fds,
    }
}

/// What the verdict rests on.
struct Counts<'a> {
    pid: i32,
    sockets: usize,
    invisible: usize,
    invisible_udp: usize,
    time_wait: usize,
    close_wait: usize,
    ports: &'a [u16],
}

fn ports_text(ports: &[u16]) -> String {
    match ports {
        [] => "no listening port".to_string(),
        [one] => format!("port {one}"),
        many => {
            let list: Vec<String> = many.iter().map(u16::to_string).collect();
            format!("ports {}", list.join(","))
        }
    }
}

/// One sentence naming the case (1: a TCP-state pile-up, 2: sockets
/// invisible to netstat, or healthy) and what to do next.
fn verdict(c: &Counts) -> (Case, String) {
    let invisible_case = c.invisible >= INVISIBLE_MIN && c.invisible * 2 > c.sockets;
    let pile = if c.close_wait >= CLOSE_WAIT_MIN {
        Some(format!(
            "{} connections in CLOSE_WAIT (the process's {}): the peers closed and the process never closed its end",
            c.close_wait,
            ports_text(c.ports)
        ))
    } else if c.time_wait >= TIME_WAIT_MIN {
        Some(format!(
            "{} connections in TIME_WAIT on {}: connections are opened and closed again at a high rate (clients reconnecting?)",
            c.time_wait,
            ports_text(c.ports)
        ))
    } else {
        None
    };
    let invisible_text = || {
        let udp = if c.invisible_udp > 0 {
            format!(" ({} of them udp)", c.invisible_udp)
        } else {
            String::new()
        };
        format!(
            "case 2, sockets invisible to netstat: {} of {} socket{}{udp} {} never bound or connected, a likely leak of never-connected sockets; `fdbg attach {}` shows the code that creates them",
            c.invisible,
            c.sockets,
            if c.sockets == 1 { "" } else { "s" },
            if c.invisible == 1 { "was" } else { "were" },
            c.pid
        )
    };
    match (invisible_case, pile) {
        (true, Some(pile)) => (
            Case::InvisibleSockets,
            format!(
                "{}; also case 1, connections piling up in a TCP state: {pile}",
                invisible_text()
            ),
        ),
        (true, None) => (Case::InvisibleSockets, invisible_text()),
        (false, Some(pile)) => (
            Case::TcpStatePileup,
            format!("case 1, connections piling up in a TCP state: {pile}"),
        ),
        (false, None) => {
            let mut text = format!(
                "healthy: {} socket{}, {} visible to netstat, no TCP state piling up",
                c.sockets,
                if c.sockets == 1 { "" } else { "s" },
                c.sockets - c.invisible
            );
            if c.invisible > 0 {
                let _ = write!(
                    text,
                    " ({} never bound or connected: inspect again to see whether that grows)",
                    c.invisible
                );
            }
            (Case::Healthy, text)
        }
    }
}

fn counts_line(counts: impl IntoIterator<Item = (impl AsRef<str>, usize)>) -> String {
    let parts: Vec<String> = counts
        .into_iter()
        .map(|(k, n)| format!("{} {n}", k.as_ref()))
        .collect();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}

/// Sorted biggest first, so the pile-up is the first thing read.
fn biggest_first<K: Clone>(map: &BTreeMap<K, usize>) -> Vec<(K, usize)> {
    let mut v: Vec<(K, usize)> = map.iter().map(|(k, n)| (k.clone(), *n)).collect();
    v.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    v
}

/// The human report: one screen.
pub fn text(i: &Inspection) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "process {} ({}): {} open fds",
        i.pid,
        escape(&i.name),
        i.open_fds
    );
    let _ = writeln!(
        out,
        "  by kind:    {}",
        counts_line(biggest_first(&i.by_kind))
    );
    let _ = writeln!(
        out,
        "  sockets:    {}: {} visible to netstat, {} invisible (never bound or connected)",
        i.sockets, i.netstat_visible, i.netstat_invisible
    );
    let _ = writeln!(
        out,
        "  by state:   {}",
        counts_line(biggest_first(&i.by_state))
    );
    let _ = writeln!(
        out,
        "  by proto:   {}",
        counts_line(biggest_first(&i.by_proto))
    );
    let _ = writeln!(
        out,
        "  ports:      {}: TIME_WAIT {}, CLOSE_WAIT {}",
        ports_text(&i.local_ports),
        i.time_wait,
        i.close_wait
    );
    let _ = write!(out, "verdict: {}", i.verdict);
    out
}

/// The JSON document of `inspect --json` (with the extra counts), one line.
pub fn json(i: &Inspection) -> String {
    serde_json::to_string(i)
        .unwrap_or_else(|e| format!("{{\"error\":\"cannot encode report: {e}\"}}"))
}

/// `fdbg inspect PID [--json]`: print the report; exit status 0.
pub fn run(pid: i32, as_json: bool) -> anyhow::Result<i32> {
    let inspection = inspect(pid)?;
    println!(
        "{}",
        if as_json {
            json(&inspection)
        } else {
            text(&inspection)
        }
    );
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(
        sockets: usize,
        invisible: usize,
        time_wait: usize,
        close_wait: usize,
    ) -> Counts<'static> {
        Counts {
            pid: 42,
            sockets,
            invisible,
            invisible_udp: invisible,
            time_wait,
            close_wait,
            ports: &[4000],
        }
    }

    #[test]
    fn scenario_30000_invisible_of_30060_is_case_2() {
        let (case, text) = verdict(&counts(30060, 30000, 0, 0));
        assert_eq!(case, Case::InvisibleSockets);
        assert!(
            text.starts_with("case 2, sockets invisible to netstat: 30000 of 30060"),
            "{text}"
        );
        assert!(text.contains("fdbg attach 42"), "{text}");
        assert!(!text.contains("case 1"), "{text}");
    }

    #[test]
    fn close_wait_pileup_is_case_1() {
        let (case, text) = verdict(&counts(13, 0, 0, 12));
        assert_eq!(case, Case::TcpStatePileup);
        assert!(
            text.contains("case 1")
                && text.contains("12 connections in CLOSE_WAIT (the process's port 4000)"),
            "{text}"
        );
    }

    #[test]
    fn time_wait_needs_thousands() {
        assert_eq!(verdict(&counts(3, 0, 500, 0)).0, Case::Healthy);
        let (case, text) = verdict(&counts(3, 0, 5000, 0));
        assert_eq!(case, Case::TcpStatePileup);
        assert!(text.contains("5000 connections in TIME_WAIT"), "{text}");
    }

    #[test]
    fn both_cases_are_named_in_one_sentence() {
        let (case, text) = verdict(&counts(100, 80, 0, 15));
        assert_eq!(case, Case::InvisibleSockets);
        assert!(
            text.contains("case 2") && text.contains("also case 1"),
            "{text}"
        );
        assert!(!text.contains(". "), "one sentence: {text}");
    }

    #[test]
    fn a_few_invisible_sockets_are_healthy_but_mentioned() {
        let (case, text) = verdict(&counts(5, 2, 0, 0));
        assert_eq!(case, Case::Healthy);
        assert!(text.contains("2 never bound or connected"), "{text}");
        // Many invisible but a minority of a big server's sockets: not case 2.
        assert_eq!(verdict(&counts(1000, 20, 0, 0)).0, Case::Healthy);
    }
}
