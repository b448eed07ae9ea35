//! Commands → report data. A `Session` owns the tracer and what the user
//! named (marks), runs on the tracer's thread, and returns reports for the
//! front end to render (the ticks of `continue --every` through its
//! progress callback); it writes only the tracer's notices, on stderr.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::net::{self, SocketInfo};

use crate::fdtable::{
    self, Event, FdKind, LeakSite, Nanos, Origin, Pid, ProcessEnd, Seq, Snapshot,
};
use crate::repl::breakpoints::{Breakpoints, Condition};
use crate::repl::command::{self, Command};
use crate::repl::report::*;
use crate::stacks::StackId;
use crate::tracer::{Mode, Tracer};

mod breakpoints;
mod queries;
mod reclaim;
mod running;

use running::Finishing;

/// What the front end should do after a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    Prompt,
    /// The session is over (quit); exit with this status.
    Exit(i32),
}

pub struct Session {
    pub tracer: Tracer,
    /// Each mark and the moment it keeps (bounded by the fds open then).
    marks: Vec<(String, Snapshot)>,
    /// Where reports made while a command runs go (`continue --every`).
    progress: Option<Box<dyn FnMut(Report)>>,
    /// The event the process is stopped at, if it stopped at one.
    stopped_at: Option<Seq>,
    /// The thread and its stack, when the last stop is a function
    /// breakpoint's.
    stopped_in: Option<(Pid, Vec<crate::symbolize::Frame>)>,
    /// The function breakpoint of the last stop, when it is one.
    stopped_in_break: Option<u32>,
    /// A `finish` under way.
    finishing: Option<Finishing>,
    /// Functions `balance` measures.
    balances: Vec<crate::repl::balance::Balance>,
    /// Time spent running (for events/s).
    running: Duration,
    /// A signal asked fdbg to end while the process ran.
    shutdown: Option<i32>,
    pub breakpoints: Breakpoints,
    /// Socket endpoints read during the current command.
    socket_cache: HashMap<Pid, BTreeMap<i32, SocketInfo>>,
    /// Stacks shown during the current command, symbolized once and shared
    /// by every entry they created (a leak site's stack is every one of its
    /// fds' stack).
    frames_cache: HashMap<(Pid, StackId), (Frames, Option<String>)>,
    /// The sockets of each process as they were at `detach`: the last
    /// resolved look, answered from after it.
    sockets_at_detach: HashMap<Pid, BTreeMap<i32, SocketInfo>>,
    /// What /proc listed for the model check of the current command.
    listed: HashMap<Pid, Vec<crate::fdtable::ProcFd>>,
}

impl Session {
    pub fn new(tracer: Tracer) -> Session {
        Session {
            tracer,
            marks: Vec::new(),
            progress: None,
            stopped_at: None,
            stopped_in: None,
            stopped_in_break: None,
            finishing: None,
            balances: Vec::new(),
            running: Duration::ZERO,
            shutdown: None,
            breakpoints: Breakpoints::default(),
            socket_cache: HashMap::new(),
            listed: HashMap::new(),
            frames_cache: HashMap::new(),
            sockets_at_detach: HashMap::new(),
        }
    }

    /// Reports made while a command runs (the ticks of `continue
    /// --every`) go to `progress` as they are made.
    pub fn set_progress(&mut self, progress: Box<dyn FnMut(Report)>) {
        self.progress = Some(progress);
    }

    /// Run one command. `Err` is a one-line message for the user.
    pub fn execute(&mut self, command: &Command) -> Result<(Vec<Report>, Next), String> {
        self.socket_cache.clear();
        self.listed.clear();
        self.frames_cache.clear();
        let reports = match command {
            Command::Continue { duration, every } => {
                let deadline =
                    duration.map(|d| Instant::now().checked_add(d).ok_or("duration too long"));
                self.resume(deadline.transpose()?, None, *every)?
            }
            Command::Step { count } => self.resume(None, Some(*count), None)?,
            Command::Finish => self.finish()?,
            Command::Balance {
                function: Some(name),
            } => vec![self.start_balance(name)?],
            Command::Balance { function: None } => vec![self.balance_report()],
            Command::Fds { kind } => {
                self.check_model();
                self.report_pids()
                    .into_iter()
                    .map(|pid| Report::Fds(self.fds(pid, *kind)))
                    .collect()
            }
            Command::Leaks {
                since,
                min,
                older,
                closed,
                folded,
            } => {
                self.check_model();
                let (since_seq, label) = match since {
                    Some(name) => (self.mark(name)?.seq, format!("mark {name}")),
                    None => (0, self.start_label().to_string()),
                };
                let filter = LeaksFilter {
                    since: since_seq,
                    min: *min,
                    older: *older,
                };
                self.report_pids()
                    .into_iter()
                    .map(|pid| {
                        if *folded {
                            Report::Folded(self.folded(pid, &filter))
                        } else {
                            Report::Leaks(self.leaks(pid, &filter, &label, *closed))
                        }
                    })
                    .collect()
            }
            Command::Reclaim {
                site,
                older,
                force,
                yes,
            } => vec![self.reclaim(*site, *older, *force, *yes)?],
            Command::Who { what } => vec![self.who(*what)],
            Command::History { fd } => self
                .report_pids()
                .into_iter()
                .map(|pid| {
                    let history = self.tracer.model.history(pid, *fd);
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
                        fd: *fd,
                        events,
                        events_forgotten: history.forgotten,
                    })
                })
                .collect(),
            Command::Backtrace => match &self.stopped_in {
                Some((tid, frames)) => vec![Report::Function(FunctionStopReport {
                    tid: *tid,
                    frames: frames.clone(),
                })],
                None => {
                    let seq = self.stopped_at.ok_or(
                        "no stack: the process is not stopped at an fd event or a function",
                    )?;
                    let event = self.tracer.model.event(seq).ok_or_else(|| {
                        format!(
                            "event #{seq} is no longer kept (fdbg keeps the latest {} events; --keep-events N keeps more)",
                            self.tracer.model.memory().keeps_at_most
                        )
                    })?;
                    vec![Report::Backtrace(BacktraceReport {
                        event: self.event_report(&event),
                    })]
                }
            },
            Command::Mark { name } => {
                let name = name
                    .clone()
                    .unwrap_or_else(|| (self.marks.len() + 1).to_string());
                let mark = self.tracer.model.snapshot();
                let seq = mark.seq;
                self.marks.retain(|(n, _)| *n != name);
                self.marks.push((name.clone(), mark));
                vec![Report::message(format!("mark {name} at event #{seq}"))]
            }
            Command::Diff { name } => {
                self.check_model();
                let name = match name {
                    Some(n) => n.clone(),
                    None => self
                        .marks
                        .last()
                        .map(|(n, _)| n.clone())
                        .ok_or("no mark yet: use 'mark [NAME]' first")?,
                };
                let mark = self.mark(&name)?.clone();
                self.report_pids()
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
                    .collect()
            }
            Command::Break { condition } => vec![self.add_breakpoint(condition.clone())?],
            Command::Catch { what } => {
                vec![self.add_breakpoint(Condition::Catch { what: what.clone() })?]
            }
            Command::InfoBreakpoints => {
                // Where each function breakpoint is armed now (a pending
                // one may have resolved in a library loaded since).
                let pid = self.tracer.main_pid;
                let armed: Vec<(u32, u64)> = self
                    .tracer
                    .function_breakpoints()
                    .iter()
                    .flat_map(|b| b.armed.iter().map(move |a| (b.id, a.site.address)))
                    .collect();
                let mut breakpoints = self.breakpoints.list().to_vec();
                for bp in &mut breakpoints {
                    if matches!(bp.condition, Condition::Func { .. }) {
                        bp.locations = armed
                            .iter()
                            .filter(|(id, _)| *id == bp.id)
                            .map(|&(_, address)| self.location(pid, address))
                            .collect();
                    }
                }
                vec![Report::Breakpoints(BreakpointsReport { breakpoints })]
            }
            Command::Delete { id } => {
                let n = self.breakpoints.delete(*id)?;
                self.tracer.remove_function_breakpoint(*id);
                vec![Report::message(format!(
                    "deleted {n} breakpoint{}",
                    if n == 1 { "" } else { "s" }
                ))]
            }
            Command::Enable { id } => {
                self.breakpoints.set_enabled(*id, true)?;
                let func = self
                    .breakpoints
                    .list()
                    .iter()
                    .find_map(|b| match &b.condition {
                        Condition::Func { pattern } if b.id == *id => Some(pattern.clone()),
                        _ => None,
                    });
                if let Some(pattern) = func
                    && !self
                        .tracer
                        .function_breakpoints()
                        .iter()
                        .any(|f| f.id == *id)
                {
                    let sites = self.tracer.add_function_breakpoint(*id, &pattern, false)?;
                    if sites.is_empty()
                        && crate::symbolize::functions::source_line(&pattern).is_none()
                    {
                        // Still in no loaded object: pending again.
                        self.tracer.add_pending_breakpoint(*id, &pattern)?;
                    }
                }
                vec![Report::message(format!("breakpoint {id} enabled"))]
            }
            Command::Disable { id } => {
                self.breakpoints.set_enabled(*id, false)?;
                self.tracer.remove_function_breakpoint(Some(*id));
                vec![Report::message(format!("breakpoint {id} disabled"))]
            }
            Command::Stats => {
                self.check_model();
                self.report_pids()
                    .into_iter()
                    .map(|pid| Report::Stats(self.stats(pid)))
                    .collect()
            }
            Command::Sockets => {
                self.check_model();
                self.report_pids()
                    .into_iter()
                    .map(|pid| Report::Sockets(self.sockets(pid)))
                    .collect()
            }
            Command::Threads => vec![Report::Threads(self.threads())],
            Command::Detach => {
                if self.tracer.mechanism == crate::tracer::Mechanism::Seccomp {
                    return Err("detach is refused here: the program's seccomp filter would make every fd \
                                syscall fail with ENOSYS once no tracer is attached; use quit to end it \
                                (a program started with perf events, the default where the kernel allows \
                                them, can be detached)"
                        .into());
                }
                if self.tracer.detached {
                    return Err("already detached".into());
                }
                self.check_model();
                self.keep_socket_targets();
                self.tracer.detach();
                self.stopped_at = None;
                vec![Report::message(format!(
                    "detached from process {}; the recorded data stays for queries",
                    self.tracer.main_pid
                ))]
            }
            Command::Quit => {
                // Under run, fdbg's status is the program's, as a tracer's
                // usually is (0 if fdbg ended it).
                let status = match (self.tracer.mode, self.tracer.main_end) {
                    (Mode::Run, Some(ProcessEnd::Exited(code))) => code,
                    (Mode::Run, Some(ProcessEnd::Killed(sig))) => 128 + sig,
                    _ => 0,
                };
                self.tracer.finish();
                return Ok((Vec::new(), Next::Exit(status)));
            }
            Command::Help { topic } => vec![Report::message(
                command::help(topic.as_deref()).map_err(|e| e.to_string())?,
            )],
        };
        Ok((reports, Next::Prompt))
    }

    /// A code address of process `pid` as a frame (function, file:line).
    fn location(&mut self, pid: Pid, address: u64) -> crate::symbolize::Frame {
        let stack = crate::stacks::Stack {
            addresses: vec![address],
            truncated: None,
            generation: self.tracer.symbolizer.generation(pid),
        };
        self.tracer
            .symbolizer
            .frames(pid, &stack)
            .into_iter()
            .next()
            .unwrap_or_default()
    }

    /// The signal that asked fdbg to end during the last command, if any.
    pub fn shutdown_requested(&self) -> Option<i32> {
        self.shutdown
    }

    /// What ending the session did to the process, for the last words.
    pub fn ending(&self) -> String {
        let pid = self.tracer.main_pid;
        match self.tracer.mode {
            Mode::Attach => format!("detached from process {pid}, which runs on"),
            Mode::Run => format!("killed process {pid}, which fdbg had started"),
        }
    }

    /// "attach" or "start": what `leaks` counts from by default.
    fn start_label(&self) -> &'static str {
        match self.tracer.mode {
            Mode::Attach => "attach",
            Mode::Run => "start",
        }
    }

    fn mark(&self, name: &str) -> Result<&Snapshot, String> {
        self.marks
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, mark)| mark)
            .ok_or_else(|| format!("no mark named '{name}'; use 'mark {name}' first"))
    }

    /// The processes reports cover: the main one, and with --follow-forks
    /// every process traced.
    fn report_pids(&self) -> Vec<Pid> {
        let main = self.tracer.main_pid;
        let mut pids = vec![main];
        if self.tracer.follow_forks {
            pids.extend(
                self.tracer
                    .model
                    .processes()
                    .map(|p| p.pid)
                    .filter(|&p| p != main),
            );
        }
        pids
    }

    /// Check the model against /proc before reporting (while traced).
    fn check_model(&mut self) {
        if !self.tracer.detached {
            self.listed = self.tracer.reconcile();
        }
    }

    /// The frames of a recorded stack, and why it ends early if it does.
    pub fn frames(&mut self, pid: Pid, stack: Option<StackId>) -> (Frames, Option<String>) {
        let Some(id) = stack else {
            return (Frames::from([]), None);
        };
        if let Some(shown) = self.frames_cache.get(&(pid, id)) {
            return shown.clone();
        }
        let stack = self.tracer.model.stacks.get(id);
        let shown = (
            Frames::from(self.tracer.symbolizer.frames(pid, stack)),
            stack.truncated.clone(),
        );
        self.frames_cache.insert((pid, id), shown.clone());
        shown
    }

    fn event_report(&mut self, event: &Event) -> EventReport {
        let (frames, truncated) = self.frames(event.pid, event.stack);
        // What the created fd is now, if it is still the one this event made.
        let target = event.created.first().and_then(|&fd| {
            let open = self.tracer.model.open_fd(event.pid, fd)?.clone();
            if open.origin != Origin::Created(event.seq) {
                return None;
            }
            if open.kind == FdKind::Socket {
                let sockets = self.cached_sockets(event.pid);
                if let Some(info) = sockets.get(&fd) {
                    return Some(net::target_text(info));
                }
            }
            open.target.clone()
        });
        EventReport {
            target,
            seq: event.seq,
            pid: event.pid,
            tid: event.tid,
            syscall: event.syscall,
            args: event.args.to_string(),
            kind: event.kind,
            result: event.result,
            fds: event.created.to_vec(),
            closed: event.closed.to_vec(),
            bad_close: event.bad_close.is_some(),
            open_fds: event.open_fds,
            frames,
            stack_truncated: truncated,
            closed_before: None,
        }
    }

    /// `sockets_of`, read at most once per command.
    fn cached_sockets(&mut self, pid: Pid) -> &BTreeMap<i32, SocketInfo> {
        if !self.socket_cache.contains_key(&pid) {
            let sockets = self.sockets_of(pid);
            self.socket_cache.insert(pid, sockets);
        }
        &self.socket_cache[&pid]
    }

    /// The endpoints of the sockets of `pid` now, or as they were at its
    /// exit or at the detach (the model no longer follows the process).
    fn sockets_of(&self, pid: Pid) -> BTreeMap<i32, SocketInfo> {
        if let Some(at_exit) = self.tracer.exit_sockets.get(&pid) {
            return at_exit.clone();
        }
        if let Some(at_detach) = self.sockets_at_detach.get(&pid) {
            return at_detach.clone();
        }
        if self.tracer.detached || self.exited(pid) {
            return BTreeMap::new();
        }
        match self.listed.get(&pid) {
            Some(fds) => net::socket_infos(pid, fds),
            None => net::socket_infos(pid, &crate::procfs::list_fds(pid, None).unwrap_or_default()),
        }
    }

    /// What the reports call fds open when tracing began.
    fn initial_origin(&self) -> FdOrigin {
        match self.tracer.mode {
            Mode::Attach => FdOrigin::BeforeAttach,
            Mode::Run => FdOrigin::Inherited,
        }
    }

    /// An fd's origin as reports name it, and its creating event.
    fn origin(&self, origin: Origin) -> (FdOrigin, Option<Seq>) {
        match origin {
            Origin::BeforeAttach => (self.initial_origin(), None),
            Origin::Created(seq) => (FdOrigin::Created, Some(seq)),
            Origin::Untracked(_) => (FdOrigin::Untracked, None),
        }
    }

    /// What fd `fd` of `pid` is: a socket's endpoints, else the model's target.
    fn target_of(&self, pid: Pid, fd: i32, sockets: &BTreeMap<i32, SocketInfo>) -> Option<String> {
        sockets
            .get(&fd)
            .map(net::target_text)
            .or_else(|| self.tracer.model.open_fd(pid, fd)?.target.clone())
    }

    /// Sites as reports show them, numbered from 1 in the order given,
    /// with their ages and rates as of now.
    fn site_reports(
        &mut self,
        pid: Pid,
        sites: &[LeakSite],
        sockets: &BTreeMap<i32, SocketInfo>,
    ) -> Vec<SiteReport> {
        let now = self.now();
        sites
            .iter()
            .enumerate()
            .map(|(i, site)| {
                let (frames, _) = self.frames(pid, site.stack);
                let target = site
                    .fds
                    .first()
                    .and_then(|&fd| self.target_of(pid, fd, sockets));
                let age = |t: Nanos| now.saturating_sub(t) as f64 / 1e9;
                SiteReport {
                    site: i + 1,
                    count: site.count,
                    target,
                    syscall: site.syscall,
                    kind: site.kind,
                    fds: site.fds.clone(),
                    first_seq: site.first_seq,
                    last_seq: site.last_seq,
                    oldest_age_s: age(site.oldest),
                    newest_age_s: age(site.newest),
                    per_min: per_minute(site.count, age(site.oldest) - age(site.newest)),
                    created: site.totals.created,
                    closed: site.totals.closed,
                    frames,
                    closed_by: None,
                }
            })
            .collect()
    }

    /// The time now, on the clock the model's events carry; never before
    /// the latest event.
    fn now(&self) -> Nanos {
        crate::tracer::monotonic_now().max(self.tracer.model.clock())
    }

    /// The time `duration` before now.
    pub(super) fn ago(&self, duration: Duration) -> Nanos {
        self.now()
            .saturating_sub(u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX))
    }

    /// The "syscall" of a site of fds open when tracing began.
    fn initial_site_name(&self) -> &'static str {
        match self.tracer.mode {
            Mode::Attach => fdtable::BEFORE_ATTACH,
            Mode::Run => fdtable::INHERITED,
        }
    }

    fn exited(&self, pid: Pid) -> bool {
        self.tracer
            .model
            .process(pid)
            .is_some_and(|p| p.end.is_some())
    }
}

/// What `leaks` keeps: fds that came after event `since`, created longer
/// ago than `older`, in sites of at least `min`.
struct LeaksFilter {
    since: Seq,
    min: usize,
    older: Option<Duration>,
}
