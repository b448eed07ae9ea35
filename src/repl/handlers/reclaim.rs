//! `reclaim` and `who`: closing a site's leaked fds in the process, and
//! naming the fd that holds an inode. Part of `Session`: data only.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{LeaksFilter, Session};
use crate::fdtable::{FdKind, Origin, Pid};
use crate::net::{self, SocketInfo};
use crate::repl::command::WhoTarget;
use crate::repl::report::*;

/// Why fdbg may close a socket nobody can be using.
const SAFE: &str =
    "a socket never bound or connected: netstat cannot see it, nothing talks through it";

impl Session {
    /// `reclaim SITE`: the site's fds (of the main process, numbered as
    /// `leaks` numbers them), each judged from the socket tables read now;
    /// closed with `yes`, else only listed.
    pub(super) fn reclaim(
        &mut self,
        site: usize,
        older: Option<Duration>,
        force: bool,
        yes: bool,
    ) -> Result<Report, String> {
        let pid = self.tracer.target.main_pid;
        if self.tracer.ends.detached || self.exited(pid) {
            return Err("reclaim needs the process traced and alive".into());
        }
        self.check_model();
        let filter = LeaksFilter {
            since: 0,
            min: 1,
            older: None,
        };
        let sites = self.leak_sites(pid, &filter);
        let Some(chosen) = sites.get(site - 1).cloned() else {
            return Err(format!(
                "no site {site}: leaks shows {} (see 'leaks')",
                crate::repl::render::count(sites.len(), "site")
            ));
        };
        let before = older.map(|older| self.ago(older));
        // Read now, right before closing: never from an earlier look.
        let listed = crate::procfs::list_fds(pid, None).unwrap_or_default();
        let sockets = net::socket_infos(pid, &listed);
        let present: BTreeMap<i32, &crate::fdtable::ProcFd> =
            listed.iter().map(|f| (f.fd, f)).collect();
        let mut to_close = Vec::new();
        let mut skipped = Vec::new();
        for &fd in &chosen.fds {
            let Some(open) = self.tracer.model.open_fd(pid, fd).cloned() else {
                skipped.push(FdWhy {
                    fd,
                    why: "already closed".into(),
                });
                continue;
            };
            if let Some(before) = before
                && open.created_at >= before
            {
                continue;
            }
            if !present.contains_key(&fd) {
                skipped.push(FdWhy {
                    fd,
                    why: "already closed".into(),
                });
                continue;
            }
            match in_use_because(&open, sockets.get(&fd)) {
                None => to_close.push(FdWhy {
                    fd,
                    why: SAFE.into(),
                }),
                Some(why) if force => to_close.push(FdWhy {
                    fd,
                    why: format!("forced: {why}"),
                }),
                Some(why) => skipped.push(FdWhy {
                    fd,
                    why: format!("{why} (needs --force)"),
                }),
            }
        }
        let (frames, _) = self.frames(pid, chosen.stack);
        let mut body = ReclaimBody {
            pid,
            site,
            frames,
            closed: to_close.iter().map(|c| c.fd).collect(),
            why_closed: to_close,
            skipped,
            dry_run: !yes,
            forced: force,
            open_fds_before: listed.len(),
            open_fds_after: None,
            stopped_early: None,
        };
        if yes && !body.closed.is_empty() {
            let fds = std::mem::take(&mut body.closed);
            let closed = self.tracer.close_in_process(pid, &fds)?;
            let mut why_closed = Vec::new();
            let mut reasons: BTreeMap<i32, String> = std::mem::take(&mut body.why_closed)
                .into_iter()
                .map(|c| (c.fd, c.why))
                .collect();
            for &(fd, result) in &closed.results {
                let why = reasons.remove(&fd).unwrap_or_default();
                if result == 0 || result == -(libc::EINTR as i64) {
                    body.closed.push(fd);
                    why_closed.push(FdWhy { fd, why });
                } else {
                    let errno = nix::errno::Errno::from_raw(-result as i32);
                    let why = if errno == nix::errno::Errno::EBADF {
                        "already closed".to_string()
                    } else {
                        format!("close failed: {}", errno.desc())
                    };
                    body.skipped.push(FdWhy { fd, why });
                }
            }
            // Those it did not get to stay open.
            for (fd, _) in reasons {
                body.skipped.push(FdWhy {
                    fd,
                    why: "not tried: closing stopped early".into(),
                });
            }
            body.why_closed = why_closed;
            body.stopped_early = closed.stopped_early.map(|e| {
                format!(
                    "stopped after {} of {}: {e}",
                    closed.results.len(),
                    fds.len()
                )
            });
            body.open_fds_after = crate::procfs::list_fds(pid, None).ok().map(|l| l.len());
        } else if yes {
            body.open_fds_after = Some(listed.len());
        }
        Ok(Report::Reclaim(ReclaimReport { reclaim: body }))
    }

    /// `who`: the fd holding the inode, or fd `n` of the main process.
    pub(super) fn who(&mut self, what: WhoTarget) -> Report {
        let main = self.tracer.target.main_pid;
        let found = match what {
            WhoTarget::Number(n) => {
                let as_fd = i32::try_from(n)
                    .ok()
                    .filter(|&fd| self.tracer.model.open_fd(main, fd).is_some());
                match as_fd {
                    Some(fd) => Some((main, fd)),
                    None => self.holder_of(n),
                }
            }
            WhoTarget::Inode(inode) => self.holder_of(inode),
        };
        let Some((pid, fd)) = found else {
            let name = match what {
                WhoTarget::Inode(inode) => format!("socket:[{inode}]"),
                WhoTarget::Number(n) => format!("{n}"),
            };
            return Report::message(format!(
                "{name}: no traced process holds it (no open fd with that number or inode)"
            ));
        };
        let open = self.tracer.model.open_fd(pid, fd).cloned();
        let sockets = self.sockets_of(pid);
        let inode = self
            .listed
            .get(&pid)
            .and_then(|fds| fds.iter().find(|f| f.fd == fd))
            .and_then(|f| inode_of(&f.target))
            .or_else(|| sockets.get(&fd).map(|s| s.inode))
            .or(match what {
                WhoTarget::Inode(inode) => Some(inode),
                WhoTarget::Number(_) => None,
            });
        let (origin, seq) = match open.as_ref() {
            Some(open) => self.origin(open.origin),
            None => (self.initial_origin(), None),
        };
        let (frames, _) = self.frames(pid, open.as_ref().and_then(|o| o.stack));
        let history = self.tracer.model.history(pid, fd);
        let events = history
            .events
            .iter()
            .map(|e| self.event_report(e))
            .collect();
        Report::Who(WhoReport {
            who: WhoBody {
                pid,
                fd,
                inode,
                kind: open.as_ref().map_or(FdKind::Other, |o| o.kind),
                target: self.target_of(pid, fd, &sockets),
                seq,
                origin,
                notes: open.map(|o| o.notes).unwrap_or_default(),
                frames,
                history: events,
                events_forgotten: history.forgotten,
            },
        })
    }

    /// The traced live process and fd whose /proc link names `inode`
    /// (`socket:[N]`, `pipe:[N]`, ...), else whose file has that inode.
    fn holder_of(&mut self, inode: u64) -> Option<(Pid, i32)> {
        self.check_model();
        let mut pids: Vec<Pid> = self.listed.keys().copied().collect();
        pids.sort_unstable();
        let by_link = pids.iter().find_map(|&pid| {
            self.listed[&pid]
                .iter()
                .find(|f| inode_of(&f.target) == Some(inode))
                .map(|f| (pid, f.fd))
        });
        by_link.or_else(|| {
            use std::os::unix::fs::MetadataExt;
            pids.iter().find_map(|&pid| {
                self.listed[&pid]
                    .iter()
                    .filter(|f| f.target.starts_with('/'))
                    .find(|f| {
                        std::fs::metadata(format!("/proc/{pid}/fd/{}", f.fd))
                            .is_ok_and(|m| m.ino() == inode)
                    })
                    .map(|f| (pid, f.fd))
            })
        })
    }
}

/// The inode in a /proc link such as `socket:[123]`.
fn inode_of(target: &str) -> Option<u64> {
    let (_, rest) = target.split_once(":[")?;
    rest.strip_suffix(']')?.parse().ok()
}

/// Why fdbg cannot prove that the program is done with `open`, or `None`
/// when it can: a socket in no socket table (never bound or connected),
/// with no bind, connect, listen or accept seen on it.
fn in_use_because(open: &crate::fdtable::OpenFd, socket: Option<&SocketInfo>) -> Option<String> {
    if open.kind != FdKind::Socket {
        let what = match open.kind {
            FdKind::File => "a file",
            FdKind::Dir => "a directory",
            FdKind::Pipe => "a pipe",
            other => return Some(format!("an {} fd, not a socket", other.as_str())),
        };
        let target = open
            .target
            .as_deref()
            .map(|t| format!(" ({t})"))
            .unwrap_or_default();
        return Some(format!("{what}{target}"));
    }
    let Some(info) = socket else {
        return Some("a socket fdbg cannot look up".into());
    };
    if info.netstat_visible {
        return Some(match (&info.remote, &info.local) {
            (Some(remote), _) => format!("connected to {remote}"),
            (None, Some(local)) if info.state == "LISTEN" => format!("listening on {local}"),
            (None, Some(local)) => format!("bound to {local}"),
            (None, None) => format!("in the socket tables ({})", net::target_text(info)),
        });
    }
    if let Some(note) = open.notes.iter().find(|n| {
        ["bind", "connect", "listen", "accept"]
            .iter()
            .any(|verb| n.starts_with(verb))
    }) {
        return Some(format!("seen used: {note}"));
    }
    if let Origin::BeforeAttach | Origin::Untracked(_) = open.origin {
        return Some("open before fdbg looked: its use is unknown".into());
    }
    None
}
