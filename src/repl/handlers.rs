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
use crate::tracer::{Halt, Mode, Tracer};

mod jit;
mod reclaim;

/// What the front end should do after a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    Prompt,
    /// The session is over (quit); exit with this status.
    Exit(i32),
}

/// The call a `finish` waits for: its thread, the stack pointer at its
/// entry stop, the last event before it, and the function's name.
struct Finishing {
    tid: Pid,
    sp: u64,
    mark: Snapshot,
    function: String,
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
    /// Stacks whose JIT frames make them one site.
    jit: jit::JitSites,
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
            jit: jit::JitSites::default(),
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
        let mut reports = match command {
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
        reports.extend(self.jit_hints());
        Ok((reports, Next::Prompt))
    }

    pub fn add_breakpoint(&mut self, condition: Condition) -> Result<Report, String> {
        let bp = self.breakpoints.add(condition.clone());
        let (id, describe, is_catch) = (bp.id, bp.describe(), bp.is_catch());
        if let Condition::Func { pattern } = &condition {
            let line = crate::symbolize::functions::source_line(pattern);
            let sites = match (
                self.tracer.add_function_breakpoint(id, pattern, false),
                line,
            ) {
                // A function: perhaps in a library loaded later.
                (Ok(sites), None) if sites.is_empty() => {
                    return match self.tracer.add_pending_breakpoint(id, pattern) {
                        Ok(()) => Ok(Report::message(format!(
                            "Breakpoint {id}: {describe} (pending: no function named so is loaded now; fdbg looks again at every library the process loads)"
                        ))),
                        Err(why) => {
                            let _ = self.breakpoints.delete(Some(id));
                            Err(format!(
                                "no function named '{}' in the program or the libraries it has loaded, and {why}",
                                crate::escape::escape(pattern)
                            ))
                        }
                    };
                }
                (Ok(sites), Some((file, line))) if sites.is_empty() => Err(format!(
                    "no code for line {line} of a file named '{}' in the DWARF of the program or the libraries it has loaded now",
                    crate::escape::escape(file)
                )),
                (other, _) => other,
            };
            let sites = match sites {
                Ok(sites) => sites,
                Err(why) => {
                    let _ = self.breakpoints.delete(Some(id));
                    self.tracer.remove_function_breakpoint(Some(id));
                    return Err(why);
                }
            };
            let pid = self.tracer.main_pid;
            let locations: Vec<crate::symbolize::Frame> = sites
                .iter()
                .map(|site| self.location(pid, site.address))
                .collect();
            let shown: Vec<String> = locations
                .iter()
                .map(crate::repl::render::frame_text)
                .collect();
            if let Some(bp) = self.breakpoints.get_mut(id) {
                bp.locations = locations;
            }
            return Ok(Report::message(format!(
                "Breakpoint {id}: {describe}: {}",
                shown.join("; ")
            )));
        }
        let what = if is_catch { "Catchpoint" } else { "Breakpoint" };
        Ok(Report::message(format!("{what} {id}: {describe}")))
    }

    /// `balance NAME`: measure every call of NAME from now on.
    fn start_balance(&mut self, name: &str) -> Result<Report, String> {
        if self.balances.iter().any(|b| b.function == name) {
            return Err(format!(
                "'{}' is measured already",
                crate::escape::escape(name)
            ));
        }
        let id = crate::tracer::BALANCE_BREAKPOINTS + self.balances.len() as u32;
        let sites = self.tracer.add_function_breakpoint(id, name, false)?;
        if sites.is_empty() {
            self.tracer.remove_function_breakpoint(Some(id));
            return Err(format!(
                "no function named '{}' in the program or the libraries it has loaded now",
                crate::escape::escape(name)
            ));
        }
        self.balances
            .push(crate::repl::balance::Balance::new(id, name));
        Ok(Report::message(format!(
            "measuring every call of {} from now on ({} function{}; 2 stops per call)",
            crate::escape::escape(name),
            sites.len(),
            if sites.len() == 1 { "" } else { "s" }
        )))
    }

    fn balance_report(&mut self) -> Report {
        self.check_model();
        let pid = self.tracer.main_pid;
        let sockets = self.sockets_of(pid);
        let mut entries = Vec::new();
        for i in 0..self.balances.len() {
            let balance = &self.balances[i];
            let open: Vec<fdtable::OpenFd> = self
                .tracer
                .model
                .open_fds(pid)
                .into_iter()
                .filter(|o| {
                    matches!(o.origin, fdtable::Origin::Created(seq) if balance.creations.contains(&seq))
                })
                .cloned()
                .collect();
            let still_open = open.len() as u64;
            let sites = self.tracer.model.sites(pid, open.iter(), "before attach");
            let (function, calls, opened, closed) = (
                balance.function.clone(),
                balance.calls,
                balance.opened,
                balance.closed,
            );
            let sites = self.site_reports(pid, &sites, &sockets);
            entries.push(BalanceEntry {
                function,
                calls,
                opened,
                closed,
                still_open,
                per_call: if calls == 0 {
                    0.0
                } else {
                    (still_open as f64 - closed as f64) / calls as f64
                },
                sites,
            });
        }
        Report::Balance(BalanceReport { balance: entries })
    }

    /// `finish`: run until the function of the current stop returns, and
    /// say what the call left: its return value and its fd delta.
    fn finish(&mut self) -> Result<Vec<Report>, String> {
        let (Some((tid, frames)), Some(id)) = (self.stopped_in.clone(), self.stopped_in_break)
        else {
            return Err(
                "finish: the process is not stopped in a function; stop in one with 'break func NAME' and 'continue'".into(),
            );
        };
        let pattern = self
            .tracer
            .function_breakpoints()
            .iter()
            .find(|b| b.id == id)
            .map(|b| b.pattern.clone())
            .unwrap_or_default();
        let sp = self
            .tracer
            .stack_pointer(tid)
            .ok_or("finish: the thread is gone")?;
        self.tracer
            .add_return_breakpoint(crate::tracer::FINISH_BREAKPOINT, tid)?;
        self.finishing = Some(Finishing {
            tid,
            sp,
            mark: self.tracer.model.snapshot(),
            function: frames
                .first()
                .and_then(|f| f.function.clone())
                .unwrap_or_else(|| pattern.clone()),
        });
        self.resume(None, None, None)
    }

    /// The report of a `finish` whose call returned in thread `tid`.
    fn finished(&mut self, finishing: Finishing, tid: Pid) -> Report {
        self.check_model();
        let pid = self.tracer.main_pid;
        let return_value = self.tracer.return_value(tid);
        let diff = self.tracer.model.diff(pid, &finishing.mark);
        let sockets = self.sockets_of(pid);
        let still_open = self.site_reports(pid, &diff.still_open, &sockets);
        let frames = self.tracer.thread_frames(tid);
        self.stopped_in = Some((tid, frames));
        self.stopped_in_break = None;
        Report::Finish(FinishReport {
            finish: FinishBody {
                function: finishing.function,
                tid,
                return_value,
                still_open,
                closed: diff.closed_from_before,
                opened_and_closed: diff.opened_and_closed,
            },
        })
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

    /// Check the model against /proc before reporting (while traced), and
    /// group the sites that differ only inside JIT code.
    fn check_model(&mut self) {
        if !self.tracer.detached {
            self.listed = self.tracer.reconcile();
        }
        for pid in self.report_pids() {
            self.group_jit_sites(pid);
        }
    }

    fn resume(
        &mut self,
        deadline: Option<Instant>,
        steps: Option<usize>,
        every: Option<Duration>,
    ) -> Result<Vec<Report>, String> {
        let main = self.tracer.main_pid;
        if self.tracer.detached {
            return Err("the process is detached; nothing to resume".into());
        }
        if !self.tracer.is_live() {
            return Err(format!(
                "process {main} is not running any more; its records stay for queries"
            ));
        }
        // `finish` stops at its return probe: the fd events on the way
        // need no stop of their own.
        let need = if steps.is_some() {
            crate::tracer::Need::Stops
        } else {
            self.breakpoints.need()
        };
        // A Ctrl-C from here on ends this command.
        self.tracer.begin_command();
        if let Some(line) = self.tracer.set_need(need) {
            eprintln!("fdbg: {line}");
        }
        let follow = self.tracer.follow_forks;
        // The events `step` shows (only while stepping: a `continue` of a
        // day keeps none).
        let mut seen: Vec<Seq> = Vec::new();
        let mut hit: Option<(u32, bool)> = None;
        let breakpoints = &mut self.breakpoints;
        let started = Instant::now();
        let mut on_event =
            |model: &fdtable::Model, symbolizer: &mut crate::symbolize::Symbolizer, seq: Seq| {
                if steps.is_none() && breakpoints.is_empty() {
                    return false;
                }
                let Some(event) = model.event(seq) else {
                    return false;
                };
                if event.pid != main && !follow {
                    return false;
                }
                if steps.is_some() {
                    seen.push(seq);
                }
                if let Some(bp) = breakpoints.check(model, symbolizer, &event) {
                    hit = Some((bp.id, bp.is_catch()));
                    return true;
                }
                steps.is_some_and(|n| seen.len() >= n)
            };
        let mut ticker = every.map(|_| Ticker::new(main, self.tracer.model.open_count(main)));
        let mut progress = self.progress.take();
        let halt = loop {
            let mut on_tick =
                |model: &fdtable::Model, symbolizer: &mut crate::symbolize::Symbolizer| {
                    if let (Some(ticker), Some(progress)) = (ticker.as_mut(), progress.as_mut()) {
                        progress(Report::Tick(ticker.tick(model, symbolizer)));
                    }
                };
            let ticks = every.map(|period| crate::tracer::Ticks {
                period,
                on_tick: &mut on_tick,
            });
            let halt = self.tracer.resume_until(deadline, &mut on_event, ticks);
            // `finish`: only the return of the call it started from (its
            // thread, a stack pointer above the call's) ends it.
            if let (Halt::Function(h), Some(f)) = (&halt, &self.finishing)
                && h.id == crate::tracer::FINISH_BREAKPOINT
                && !(h.tid == f.tid && self.tracer.stack_pointer(h.tid).is_some_and(|sp| sp > f.sp))
            {
                continue;
            }
            // `balance`: account the call, and go on.
            if let Halt::Function(h) = &halt
                && let Some(balance) = self.balances.iter_mut().find(|b| b.id == h.id)
            {
                if h.ret {
                    let model = &self.tracer.model;
                    balance.returned(h.tid, |since| model.events_from(since + 1).collect());
                    balance.forget_closed(|| {
                        model
                            .open_fds(main)
                            .into_iter()
                            .filter_map(|open| match open.origin {
                                Origin::Created(seq) => Some(seq),
                                _ => None,
                            })
                            .collect()
                    });
                } else {
                    balance.entered(h.tid, self.tracer.model.last_seq());
                    // Its return: a breakpoint at the return address, once
                    // per call site.
                    if let Some(address) = self.tracer.return_address(h.tid)
                        && balance.return_sites.insert(address)
                        && let Err(why) = self
                            .tracer
                            .add_address_breakpoint(balance.id, h.tid, address)
                    {
                        self.tracer.notices.push(format!(
                            "balance: cannot catch returns to {address:#x}: {why}"
                        ));
                    }
                }
                continue;
            }
            break halt;
        };
        self.progress = progress;
        self.running += started.elapsed();
        if let Some(finishing) = self.finishing.take() {
            self.tracer
                .remove_function_breakpoint(Some(crate::tracer::FINISH_BREAKPOINT));
            if let Halt::Function(h) = halt
                && h.id == crate::tracer::FINISH_BREAKPOINT
            {
                return Ok(vec![self.finished(finishing, h.tid)]);
            }
        }
        for line in self.tracer.notices.drain(..) {
            eprintln!("fdbg: {line}");
        }
        self.stopped_at = None;
        self.stopped_in = None;
        let mut reports = Vec::new();
        if steps.is_some() {
            // Every step but the last is an event line; the last is the stop.
            let shown = seen
                .len()
                .saturating_sub(usize::from(matches!(halt, Halt::Event(_))));
            for &seq in &seen[..shown] {
                if let Some(event) = self.tracer.model.event(seq) {
                    reports.push(Report::Event(self.event_report(&event)));
                }
            }
        }
        let mut stop = StopReport {
            stop: StopKind::Interrupt,
            breakpoint: None,
            event: None,
            exit_code: None,
            signal: None,
            pid: main,
            events_from: self.tracer.mechanism,
            function: None,
        };
        match halt {
            Halt::Event(seq) => {
                stop.stop = match hit {
                    Some((id, catch)) => {
                        stop.breakpoint = Some(id);
                        if catch {
                            StopKind::Catch
                        } else {
                            StopKind::Breakpoint
                        }
                    }
                    None => StopKind::Step,
                };
                self.stopped_at = Some(seq);
                stop.event = self.tracer.model.event(seq).map(|e| self.event_report(&e));
            }
            Halt::Function(hit) => {
                stop.stop = StopKind::Breakpoint;
                stop.breakpoint = Some(hit.id);
                if let Some(bp) = self.breakpoints.get_mut(hit.id) {
                    bp.hits += 1;
                }
                let frames = self.tracer.thread_frames(hit.tid);
                stop.function = Some(FunctionStopReport {
                    tid: hit.tid,
                    frames: frames.clone(),
                });
                self.stopped_in = Some((hit.tid, frames));
                self.stopped_in_break = Some(hit.id);
            }
            Halt::Interrupt => stop.stop = StopKind::Interrupt,
            Halt::Timeout => stop.stop = StopKind::Timeout,
            Halt::Shutdown(sig) => {
                stop.stop = StopKind::Interrupt;
                self.shutdown = Some(sig);
            }
            Halt::Exited(end) => {
                stop.stop = StopKind::Exited;
                match end {
                    crate::fdtable::ProcessEnd::Exited(code) => stop.exit_code = Some(code),
                    crate::fdtable::ProcessEnd::Killed(sig) => stop.signal = Some(sig),
                }
            }
        }
        reports.push(Report::Stop(stop));
        Ok(reports)
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
    fn bad_close_report(&mut self, bad: &fdtable::BadClose) -> BadCloseReport {
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
            Some(fds) => crate::tracer::socket_infos(pid, fds),
            None => crate::tracer::socket_infos(
                pid,
                &crate::procfs::list_fds(pid, None).unwrap_or_default(),
            ),
        }
    }

    /// Before a detach: resolve the sockets of every live process one last
    /// time, and keep the text as each fd's target in the model (and the
    /// endpoints for `sockets`), so that reports after the detach describe
    /// them as before it (`udp 0.0.0.0:0 unconnected`, not `socket:[…]`).
    fn keep_socket_targets(&mut self) {
        let live: Vec<Pid> = self
            .tracer
            .model
            .processes()
            .filter(|p| p.end.is_none())
            .map(|p| p.pid)
            .collect();
        for pid in live {
            let sockets = self.sockets_of(pid);
            for (&fd, info) in &sockets {
                self.tracer
                    .model
                    .set_target(pid, fd, FdKind::Socket, net::target_text(info));
            }
            self.sockets_at_detach.insert(pid, sockets);
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

    fn sockets(&mut self, pid: Pid) -> SocketsReport {
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

    fn fds(&mut self, pid: Pid, kind: Option<FdKind>) -> FdsReport {
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

    fn leaks(
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
    fn leak_sites(&mut self, pid: Pid, filter: &LeaksFilter) -> Vec<LeakSite> {
        let before = filter.older.map_or(Nanos::MAX, |older| self.ago(older));
        self.tracer
            .model
            .leaks_created_before(pid, filter.since, before, filter.min)
    }

    fn stats(&mut self, pid: Pid) -> StatsReport {
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

    fn threads(&self) -> ThreadsReport {
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

/// What `leaks` keeps: fds that came after event `since`, created longer
/// ago than `older`, in sites of at least `min`.
struct LeaksFilter {
    since: Seq,
    min: usize,
    older: Option<Duration>,
}

/// `continue --every`: what the last tick saw, to say what changed.
struct Ticker {
    pid: Pid,
    started: Instant,
    last: Instant,
    last_open: usize,
    /// Each site's open fds at the last tick.
    last_sites: HashMap<(Option<StackId>, &'static str), usize>,
    /// The symbolized stacks of the sites shown, once each.
    frames: HashMap<StackId, Frames>,
}

/// Sites a tick names at most.
const TICK_SITES: usize = 3;

impl Ticker {
    fn new(pid: Pid, open: usize) -> Ticker {
        let now = Instant::now();
        Ticker {
            pid,
            started: now,
            last: now,
            last_open: open,
            last_sites: HashMap::new(),
            frames: HashMap::new(),
        }
    }

    fn tick(
        &mut self,
        model: &fdtable::Model,
        symbolizer: &mut crate::symbolize::Symbolizer,
    ) -> TickReport {
        let now = Instant::now();
        let tick_s = now.duration_since(self.last).as_secs_f64();
        let open = model.open_count(self.pid);
        let sites = model.leaks(self.pid, 0, 1);
        let mut grown: Vec<(i64, &LeakSite)> = sites
            .iter()
            .map(|site| {
                let before = self
                    .last_sites
                    .get(&(site.stack, site.syscall))
                    .copied()
                    .unwrap_or(0);
                (site.count as i64 - before as i64, site)
            })
            .filter(|(delta, _)| *delta > 0)
            .collect();
        grown.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.first_seq.cmp(&b.1.first_seq)));
        let mut shown = Vec::new();
        for &(delta, site) in grown.iter().take(TICK_SITES) {
            let frames = match site.stack {
                Some(id) => self
                    .frames
                    .entry(id)
                    .or_insert_with(|| {
                        Frames::from(symbolizer.frames(self.pid, model.stacks.get(id)))
                    })
                    .clone(),
                None => Frames::from([]),
            };
            shown.push(TickSite {
                count: site.count,
                delta,
                per_min: if tick_s > 0.0 {
                    delta as f64 * 60.0 / tick_s
                } else {
                    0.0
                },
                frames,
            });
        }
        self.last_sites = sites
            .iter()
            .map(|site| ((site.stack, site.syscall), site.count))
            .collect();
        let delta = open as i64 - self.last_open as i64;
        self.last_open = open;
        self.last = now;
        TickReport {
            tick: TickBody {
                pid: self.pid,
                elapsed_s: now.duration_since(self.started).as_secs_f64(),
                open_fds: open,
                delta,
                sites: shown,
            },
        }
    }
}
