//! Commands → report data. A `Session` owns the tracer and what the user
//! named (marks), runs on the tracer's thread, and returns reports for the
//! front end to render (the ticks of `continue --every` through its
//! progress callback); it prints nothing: what the user should know
//! besides the reports goes up as `Note`s.
//!
//! `execute` only dispatches: each command has its handler, by concern, in
//! `handlers/queries.rs` (what the model holds), `handlers/breakpoints.rs`
//! (what stops the process or is measured), `handlers/running.rs` (letting
//! it run, and ending the session) and `handlers/reclaim.rs`. This file
//! keeps what every report shows alike: frames, events, sites, origins and
//! socket endpoints, each read or symbolized once per command.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use crate::net::{self, SocketInfo};

use crate::fdtable::{self, Event, FdKind, LeakSite, Nanos, Origin, Pid, Seq, Snapshot};
use crate::repl::breakpoints::{Breakpoints, Condition};
use crate::repl::command::{self, Command};
use crate::repl::report::*;
use crate::stacks::StackId;
use crate::tracer::{Mode, Tracer};

mod breakpoints;
mod jit;
mod queries;
mod reclaim;
mod running;

use running::Finishing;

/// What a command gives while it runs, before its reports.
pub enum Progress {
    /// A report made meanwhile (a tick of `continue --every`).
    Report(Box<Report>),
    /// Notes to say now, before the process runs on.
    Notes(Vec<Note>),
}

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
    progress: Option<Box<dyn FnMut(Progress)>>,
    /// Notes of the current command, for `take_notes`.
    notes: Vec<Note>,
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
    /// fdbg's CPU seconds spent while the process ran (for the CPU per
    /// event), the samplers' opening left out.
    running_cpu: f64,
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
    /// Stacks whose JIT frames make them one site.
    jit: jit::JitSites,
}

impl Session {
    pub fn new(tracer: Tracer) -> Session {
        Session {
            tracer,
            marks: Vec::new(),
            progress: None,
            notes: Vec::new(),
            stopped_at: None,
            stopped_in: None,
            stopped_in_break: None,
            finishing: None,
            balances: Vec::new(),
            running: Duration::ZERO,
            running_cpu: 0.0,
            shutdown: None,
            breakpoints: Breakpoints::default(),
            socket_cache: HashMap::new(),
            listed: HashMap::new(),
            jit: jit::JitSites::default(),
            frames_cache: HashMap::new(),
            sockets_at_detach: HashMap::new(),
        }
    }

    /// Reports made while a command runs (the ticks of `continue
    /// --every`) go to `progress` as they are made.
    pub fn set_progress(&mut self, progress: Box<dyn FnMut(Progress)>) {
        self.progress = Some(progress);
    }

    /// Run one command. `Err` is a one-line message for the user.
    pub fn execute(&mut self, command: &Command) -> Result<(Vec<Report>, Next), String> {
        self.socket_cache.clear();
        self.listed.clear();
        self.frames_cache.clear();
        let mut reports = match command {
            Command::Continue { duration, every } => self.continue_running(*duration, *every)?,
            Command::Step { count } => self.resume(None, Some(*count), None)?,
            Command::Finish => self.finish()?,
            Command::Balance {
                function: Some(name),
            } => vec![self.start_balance(name)?],
            Command::Balance { function: None } => vec![self.balance_report()],
            Command::Fds { kind } => self.fds(*kind),
            Command::Leaks {
                since,
                min,
                older,
                closed,
                folded,
            } => self.leaks(since.as_deref(), *min, *older, *closed, *folded)?,
            Command::Reclaim {
                site,
                older,
                force,
                yes,
            } => vec![self.reclaim(*site, *older, *force, *yes)?],
            Command::Who { what } => vec![self.who(*what)],
            Command::History { fd } => self.history(*fd),
            Command::Backtrace => vec![self.backtrace()?],
            Command::Mark { name } => vec![self.mark(name.as_deref())],
            Command::Diff { name } => self.diff(name.as_deref())?,
            Command::Break { condition } => vec![self.add_breakpoint(condition.clone())?],
            Command::Catch { what } => {
                vec![self.add_breakpoint(Condition::Catch { what: what.clone() })?]
            }
            Command::InfoBreakpoints => vec![self.info_breakpoints()],
            Command::Delete { id } => vec![self.delete(*id)?],
            Command::Enable { id } => vec![self.enable(*id)?],
            Command::Disable { id } => vec![self.disable(*id)?],
            Command::Stats => self.stats(),
            Command::Sockets => self.sockets(),
            Command::Threads => vec![self.threads()],
            Command::Detach => vec![self.detach()?],
            Command::Quit => return Ok((Vec::new(), Next::Exit(self.quit()))),
            Command::Help { topic } => vec![Report::message(
                command::help(topic.as_deref()).map_err(|e| e.to_string())?,
            )],
        };
        reports.extend(self.jit_hints());
        Ok((reports, Next::Prompt))
    }

    /// A code address of process `pid` as a frame (function, file:line).
    fn location(&mut self, pid: Pid, address: u64) -> crate::symbolize::Frame {
        let stack = crate::stacks::Stack {
            addresses: vec![address],
            truncated: None,
            generation: self.tracer.addresses.symbolizer.generation(pid),
        };
        self.tracer
            .addresses
            .symbolizer
            .report_frames(pid, &stack)
            .into_iter()
            .next()
            .unwrap_or_default()
    }

    /// What the last command has to say besides its reports: the
    /// tracer's notices and the session's, in order, then the
    /// symbolizer's (a debuginfod server down).
    pub fn take_notes(&mut self) -> Vec<Note> {
        self.keep_notices();
        let mut notes = std::mem::take(&mut self.notes);
        notes.extend(
            self.tracer
                .addresses
                .symbolizer
                .take_notes()
                .into_iter()
                .map(Note::Symbolizer),
        );
        notes
    }

    /// The tracer's notices so far, in order with the session's own.
    fn keep_notices(&mut self) {
        let notices = self.tracer.take_notices();
        self.notes.extend(notices.into_iter().map(Note::Tracer));
    }

    /// Notes to say at once (before the process runs on), through
    /// `progress`; with none, they wait for the command's end.
    fn say_now(&mut self) {
        self.keep_notices();
        if let Some(progress) = self.progress.as_mut()
            && !self.notes.is_empty()
        {
            progress(Progress::Notes(std::mem::take(&mut self.notes)));
        }
    }

    /// The signal that asked fdbg to end during the last command, if any.
    pub fn shutdown_requested(&self) -> Option<i32> {
        self.shutdown
    }

    /// What ending the session did to the process, for the last words.
    pub fn ending(&self) -> String {
        let pid = self.tracer.target.main_pid;
        match self.tracer.target.mode {
            Mode::Attach => format!("detached from process {pid}, which runs on"),
            Mode::Run => format!("killed process {pid}, which fdbg had started"),
        }
    }

    /// "attach" or "start": what `leaks` counts from by default.
    fn start_label(&self) -> &'static str {
        match self.tracer.target.mode {
            Mode::Attach => "attach",
            Mode::Run => "start",
        }
    }

    fn find_mark(&self, name: &str) -> Result<&Snapshot, String> {
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
        let main = self.tracer.target.main_pid;
        let mut pids = vec![main];
        if self.tracer.target.follow_forks {
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

    /// One report per process reported, the model checked first.
    fn each_process(&mut self, mut report: impl FnMut(&mut Session, Pid) -> Report) -> Vec<Report> {
        self.check_model();
        self.report_pids()
            .into_iter()
            .map(|pid| report(self, pid))
            .collect()
    }

    /// Check the model against /proc before reporting (while traced), and
    /// group the sites that differ only inside JIT code.
    fn check_model(&mut self) {
        if !self.tracer.ends.detached {
            self.listed = self.tracer.reconcile();
        }
        for pid in self.report_pids() {
            self.group_jit_sites(pid);
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
            Frames::from(self.tracer.addresses.symbolizer.report_frames(pid, stack)),
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
        if let Some(at_exit) = self.tracer.ends.exit_sockets.get(&pid) {
            return at_exit.clone();
        }
        if let Some(at_detach) = self.sockets_at_detach.get(&pid) {
            return at_detach.clone();
        }
        if self.tracer.ends.detached || self.exited(pid) {
            return BTreeMap::new();
        }
        match self.listed.get(&pid) {
            Some(fds) => net::socket_infos(pid, fds),
            None => net::socket_infos(pid, &crate::procfs::list_fds(pid, None).unwrap_or_default()),
        }
    }

    /// What the reports call fds open when tracing began.
    fn initial_origin(&self) -> FdOrigin {
        match self.tracer.target.mode {
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
        match self.tracer.target.mode {
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
