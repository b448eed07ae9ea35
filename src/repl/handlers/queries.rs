//! The reports of what the model holds: `fds`, `leaks`, `history`, `bt`,
//! `mark`, `diff`, `stats`, `sockets` and `threads`. Part of `Session`: data
//! only.

use std::collections::{BTreeMap, HashMap};

use crate::fdtable::{self, Event, FdKind, LeakSite, Nanos, Origin, Pid};
use crate::repl::report::*;
use crate::stacks::StackId;

use super::{LeaksFilter, Session};

impl Session {
    /// For a bad close: the close that freed its number before it, as the
    /// model kept it, else the latest close of that number in `earlier`.
    pub(super) fn closed_before(
        &mut self,
        bad: &Event,
        earlier: &[Event],
    ) -> Option<FirstCloseReport> {
        let fd = bad.bad_close?;
        let kept = self
            .tracer
            .model
            .bad_closes(bad.pid)
            .into_iter()
            .find(|b| b.event.seq == bad.seq)
            .and_then(|b| b.first_close);
        let (seq, stack, syscall) = match kept {
            Some(first) => (first.seq, first.stack, first.syscall),
            None => {
                let close = earlier.iter().rev().find(|e| e.closed.contains(&fd))?;
                (close.seq, close.stack, close.syscall)
            }
        };
        Some(FirstCloseReport {
            seq,
            syscall,
            frames: self.frames(bad.pid, stack).0,
        })
    }

    /// A bad close beside the close that freed its number.
    pub(super) fn bad_close_report(&mut self, bad: &fdtable::BadClose) -> BadCloseReport {
        let first_close = bad.first_close.map(|first| FirstCloseReport {
            seq: first.seq,
            syscall: first.syscall,
            frames: self.frames(bad.event.pid, first.stack).0,
        });
        BadCloseReport {
            event: self.event_report(&bad.event),
            fd: bad.event.bad_close.unwrap_or(-1),
            first_close,
        }
    }

    pub(super) fn sockets(&mut self, pid: Pid) -> SocketsReport {
        let infos = self.sockets_of(pid);
        let mut sockets = Vec::new();
        let mut by_state: BTreeMap<String, usize> = BTreeMap::new();
        // Sockets netstat cannot see, as the model has them, for grouping.
        let mut invisible: Vec<fdtable::OpenFd> = Vec::new();
        for (&fd, info) in &infos {
            let open = self.tracer.model.open_fd(pid, fd).cloned();
            let (origin, seq) = match open.as_ref() {
                Some(open) => self.origin(open.origin),
                None => (self.initial_origin(), None),
            };
            let stack = open.as_ref().and_then(|o| o.stack);
            *by_state.entry(info.state.clone()).or_default() += 1;
            if !info.netstat_visible {
                invisible.push(open.unwrap_or(fdtable::OpenFd {
                    fd,
                    kind: FdKind::Socket,
                    target: None,
                    cloexec: false,
                    origin: Origin::BeforeAttach,
                    stack: None,
                    syscall: "",
                    tid: 0,
                    created_at: self.tracer.model.tracked_since(pid).unwrap_or_default(),
                    notes: Vec::new(),
                }));
            }
            let (frames, _) = self.frames(pid, stack);
            sockets.push(SocketEntry {
                fd,
                proto: info.proto.as_str(),
                sock_type: info.sock_type.map(|t| t.as_str()),
                local: info.local.clone(),
                remote: info.remote.clone(),
                state: info.state.clone(),
                netstat_visible: info.netstat_visible,
                seq,
                origin,
                frames,
            });
        }
        let sites = self
            .tracer
            .model
            .sites(pid, &invisible, self.initial_site_name());
        let invisible_sites = self.site_reports(pid, &sites, &infos);
        let netstat_visible = sockets.iter().filter(|s| s.netstat_visible).count();
        SocketsReport {
            pid,
            exited: self.exited(pid),
            netstat_invisible: sockets.len() - netstat_visible,
            netstat_visible,
            sockets,
            by_state,
            invisible_sites,
        }
    }

    pub(super) fn fds(&mut self, pid: Pid, kind: Option<FdKind>) -> FdsReport {
        let wanted = |f: &&fdtable::OpenFd| kind.is_none_or(|k| f.kind == k);
        // Symbolize each creating stack once; every entry shares its frames.
        let stacks: std::collections::BTreeSet<StackId> = self
            .tracer
            .model
            .open_fds(pid)
            .into_iter()
            .filter(wanted)
            .filter_map(|f| f.stack)
            .collect();
        let mut frames: HashMap<StackId, Frames> = HashMap::new();
        for id in stacks {
            frames.insert(id, self.frames(pid, Some(id)).0);
        }
        let sockets = self.sockets_of(pid);
        let open = self.tracer.model.open_fds(pid);
        let open_fds = open.len();
        let fds = open
            .into_iter()
            .filter(wanted)
            .map(|f| {
                let (origin, seq) = self.origin(f.origin);
                FdEntry {
                    fd: f.fd,
                    kind: f.kind,
                    target: self.target_of(pid, f.fd, &sockets),
                    seq,
                    origin,
                    cloexec: f.cloexec,
                    notes: f.notes.clone(),
                    frames: f
                        .stack
                        .and_then(|id| frames.get(&id).cloned())
                        .unwrap_or_else(|| Frames::from([])),
                }
            })
            .collect();
        FdsReport {
            pid,
            exited: self.exited(pid),
            open_fds,
            fds,
        }
    }

    pub(super) fn leaks(
        &mut self,
        pid: Pid,
        filter: &LeaksFilter,
        label: &str,
        with_closers: bool,
    ) -> LeaksReport {
        let sites = self.leak_sites(pid, filter);
        let total = sites.iter().map(|s| s.count).sum();
        let sockets = self.sockets_of(pid);
        let mut reports = self.site_reports(pid, &sites, &sockets);
        if with_closers {
            for (report, site) in reports.iter_mut().zip(&sites) {
                let closers = self.tracer.model.closers(pid, site.stack, site.syscall);
                let closed_by = closers
                    .into_iter()
                    .map(|(closer, count)| CloserReport {
                        count,
                        syscall: closer.syscall,
                        frames: self.frames(pid, closer.stack).0,
                    })
                    .collect();
                report.closed_by = Some(closed_by);
            }
        }
        LeaksReport {
            pid,
            exited: self.exited(pid),
            since: label.to_string(),
            older_than_s: filter.older.map(|d| d.as_secs_f64()),
            open_fds: self.tracer.model.open_count(pid),
            total,
            sites: reports,
        }
    }

    /// `leaks --folded`: each site's user frames, outermost first, joined
    /// by `;`, and its count.
    pub(super) fn folded(&mut self, pid: Pid, filter: &LeaksFilter) -> FoldedReport {
        let sites = self.leak_sites(pid, filter);
        let folded = sites
            .iter()
            .map(|site| {
                let (frames, _) = self.frames(pid, site.stack);
                crate::repl::render::folded_line(&frames, site.syscall, site.count)
            })
            .collect();
        FoldedReport { pid, folded }
    }

    /// The sites `leaks` lists, in its order (their numbers are their
    /// places, from 1).
    pub(super) fn leak_sites(&mut self, pid: Pid, filter: &LeaksFilter) -> Vec<LeakSite> {
        let before = filter.older.map_or(Nanos::MAX, |older| self.ago(older));
        self.tracer
            .model
            .leaks_created_before(pid, filter.since, before, filter.min)
    }

    pub(super) fn stats(&mut self, pid: Pid) -> StatsReport {
        let bad = self.tracer.model.bad_closes(pid);
        let bad_close_events = bad.iter().map(|b| self.bad_close_report(b)).collect();
        let now = self.now();
        let model = &self.tracer.model;
        let start = model.tracked_since(pid).unwrap_or(now);
        let seconds = |t: Nanos| t.saturating_sub(start) as f64 / 1e9;
        let mut open_fds_over_time: Vec<(f64, u32)> = model
            .open_over_time(pid)
            .into_iter()
            .map(|(t, n)| (seconds(t), n))
            .collect();
        open_fds_over_time.push((seconds(now), model.open_count(pid) as u32));
        let held = model.memory();
        let cpu_s = crate::procfs::own_cpu_seconds().unwrap_or(0.0);
        let all_events = model.last_seq();
        let memory = MemoryFigures {
            rss_bytes: crate::procfs::own_rss_bytes().unwrap_or(0),
            cpu_s,
            cpu_us_per_event: if all_events > 0 {
                cpu_s * 1e6 / all_events as f64
            } else {
                0.0
            },
            events_kept: held.events_kept,
            events_forgotten: held.events_forgotten,
            events_kept_at_most: held.keeps_at_most,
            stacks: held.stacks,
            sites: held.sites,
        };
        let counters = model
            .process(pid)
            .map(|p| p.counters.clone())
            .unwrap_or_default();
        let total_events: u64 = counters.events_by_syscall.values().sum();
        let secs = self.running.as_secs_f64();
        let (stops, syscalls_seen) = self
            .tracer
            .cost_by_pid
            .get(&pid)
            .copied()
            .unwrap_or_default();
        StatsReport {
            pid,
            open_fds: model.open_count(pid),
            events: counters.events_by_syscall.clone(),
            by_kind: counters
                .events_by_kind
                .iter()
                .map(|(k, n)| (k.as_str(), *n))
                .collect(),
            bad_closes: counters.bad_closes,
            stops,
            syscalls_seen,
            stops_all_processes: self.tracer.stops,
            adopted: counters.adopted,
            dropped: counters.dropped,
            total_events,
            bad_close_events,
            events_per_sec: if secs > 0.0 {
                total_events as f64 / secs
            } else {
                0.0
            },
            stops_per_event: if total_events > 0 {
                stops as f64 / total_events as f64
            } else {
                0.0
            },
            mechanism: self.tracer.mechanism,
            kernel_fd_syscalls: self.tracer.kernel_fd_syscalls(),
            missed: self.tracer.missed(),
            observed: self.tracer.observed(),
            memory,
            open_fds_over_time,
        }
    }

    pub(super) fn threads(&self) -> ThreadsReport {
        let threads = self
            .tracer
            .threads()
            .into_iter()
            .map(|(tid, pid)| ThreadEntry {
                tid,
                pid,
                name: crate::procfs::thread_name(pid, tid),
                state: crate::procfs::thread_state(pid, tid)
                    .map(String::from)
                    .unwrap_or_else(|| "?".into()),
            })
            .collect();
        ThreadsReport { threads }
    }
}
