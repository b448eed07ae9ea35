//! The reports of what the model holds: `fds`, `leaks`, `history`, `bt`,
//! `mark`, `diff`, `stats`, `sockets` and `threads`. Part of `Session`: data
//! only.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use crate::fdtable::{self, Event, FdKind, LeakSite, Nanos, Origin, Pid};
use crate::repl::report::*;
use crate::stacks::StackId;

use super::{LeaksFilter, Session};

impl Session {
    /// `fds [--kind K]`: the fds open now, of each process reported.
    pub(super) fn fds(&mut self, kind: Option<FdKind>) -> Vec<Report> {
        self.each_process(|session, pid| Report::Fds(session.fds_report(pid, kind)))
    }

    /// `leaks`: the sites of the fds still open, since a mark or the start.
    pub(super) fn leaks(
        &mut self,
        since: Option<&str>,
        min: usize,
        older: Option<Duration>,
        closed: bool,
        folded: bool,
    ) -> Result<Vec<Report>, String> {
        self.check_model();
        let (since_seq, label) = match since {
            Some(name) => (self.find_mark(name)?.seq, format!("mark {name}")),
            None => (0, self.start_label().to_string()),
        };
        let filter = LeaksFilter {
            since: since_seq,
            min,
            older,
        };
        Ok(self
            .report_pids()
            .into_iter()
            .map(|pid| {
                if folded {
                    Report::Folded(self.folded(pid, &filter))
                } else {
                    Report::Leaks(self.leaks_report(pid, &filter, &label, closed))
                }
            })
            .collect())
    }

    /// `history FD`: the kept events of fd number `fd`, bad closes beside
    /// the close that freed their number.
    pub(super) fn history(&mut self, fd: i32) -> Vec<Report> {
        self.report_pids()
            .into_iter()
            .map(|pid| {
                let history = self.tracer.model.history(pid, fd);
                let events = history
                    .events
                    .iter()
                    .enumerate()
                    .map(|(i, e)| {
                        let mut report = self.event_report(e);
                        if e.bad_close.is_some() {
                            report.closed_before = self.closed_before(e, &history.events[..i]);
                        }
                        report
                    })
                    .collect();
                Report::History(HistoryReport {
                    pid,
                    fd,
                    events,
                    events_forgotten: history.forgotten,
                })
            })
            .collect()
    }

    /// `bt`: the stack of the function or the fd event stopped at.
    pub(super) fn backtrace(&mut self) -> Result<Report, String> {
        if let Some((tid, frames)) = &self.stopped_in {
            return Ok(Report::Function(FunctionStopReport {
                tid: *tid,
                frames: frames.clone(),
            }));
        }
        let seq = self
            .stopped_at
            .ok_or("no stack: the process is not stopped at an fd event or a function")?;
        let event = self.tracer.model.event(seq).ok_or_else(|| {
            format!(
                "event #{seq} is no longer kept (fdbg keeps the latest {} events; --keep-events N keeps more)",
                self.tracer.model.memory().keeps_at_most
            )
        })?;
        Ok(Report::Backtrace(BacktraceReport {
            event: self.event_report(&event),
        }))
    }

    /// `mark [NAME]`: remember what is open now (a new mark of a name
    /// replaces the old).
    pub(super) fn mark(&mut self, name: Option<&str>) -> Report {
        let name = name
            .map(str::to_string)
            .unwrap_or_else(|| (self.marks.len() + 1).to_string());
        let mark = self.tracer.model.snapshot();
        let seq = mark.seq;
        self.marks.retain(|(n, _)| *n != name);
        self.marks.push((name.clone(), mark));
        Report::message(format!("mark {name} at event #{seq}"))
    }

    /// `diff [NAME]`: what changed since a mark (the latest by default).
    pub(super) fn diff(&mut self, name: Option<&str>) -> Result<Vec<Report>, String> {
        self.check_model();
        let name = match name {
            Some(n) => n.to_string(),
            None => self
                .marks
                .last()
                .map(|(n, _)| n.clone())
                .ok_or("no mark yet: use 'mark [NAME]' first")?,
        };
        let mark = self.find_mark(&name)?.clone();
        Ok(self
            .report_pids()
            .into_iter()
            .map(|pid| {
                let diff = self.tracer.model.diff(pid, &mark);
                let sockets = self.sockets_of(pid);
                let still_open = self.site_reports(pid, &diff.still_open, &sockets);
                Report::Diff(DiffReport {
                    pid,
                    since: name.clone(),
                    still_open,
                    opened_and_closed: diff.opened_and_closed,
                    closed_from_before: diff.closed_from_before,
                })
            })
            .collect())
    }

    /// `stats`: counts, costs and the open-fd series of each process.
    pub(super) fn stats(&mut self) -> Vec<Report> {
        self.each_process(|session, pid| Report::Stats(session.stats_report(pid)))
    }

    /// `sockets`: each socket's endpoints and state, and the sites of the
    /// ones netstat cannot see.
    pub(super) fn sockets(&mut self) -> Vec<Report> {
        self.each_process(|session, pid| Report::Sockets(session.sockets_report(pid)))
    }

    /// For a bad close: the close that freed its number before it, as the
    /// model kept it, else the latest close of that number in `earlier`.
    fn closed_before(&mut self, bad: &Event, earlier: &[Event]) -> Option<FirstCloseReport> {
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

    fn sockets_report(&mut self, pid: Pid) -> SocketsReport {
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

    fn fds_report(&mut self, pid: Pid, kind: Option<FdKind>) -> FdsReport {
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

    fn leaks_report(
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
    fn folded(&mut self, pid: Pid, filter: &LeaksFilter) -> FoldedReport {
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

    fn stats_report(&mut self, pid: Pid) -> StatsReport {
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
        let per_event = |cpu: f64| match all_events {
            0 => 0.0,
            n => cpu * 1e6 / n as f64,
        };
        let memory = MemoryFigures {
            rss_bytes: crate::procfs::own_rss_bytes().unwrap_or(0),
            pss_bytes: crate::procfs::own_pss_bytes().unwrap_or(0),
            cpu_s,
            cpu_us_per_event: per_event(cpu_s),
            cpu_us_per_event_running: per_event(self.running_cpu),
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
            .costs
            .by_pid
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
            stops_all_processes: self.tracer.costs.stops,
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
            mechanism: self.tracer.mechanism(),
            kernel_fd_syscalls: self.tracer.kernel_fd_syscalls(),
            missed: self.tracer.missed(),
            observed: self.tracer.observed().map(Into::into),
            memory,
            open_fds_over_time,
        }
    }

    /// `threads`: every traced thread, its name and state.
    pub(super) fn threads(&self) -> Report {
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
        Report::Threads(ThreadsReport { threads })
    }
}
