//! Letting the process run: `continue` (with the ticks of `--every`),
//! `step`, `finish`, and the ends of a session, `detach` and `quit`. Part of
//! `Session`: data only.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::fdtable::{self, FdKind, LeakSite, Origin, Pid, ProcessEnd, Seq, Snapshot};
use crate::net;
use crate::repl::report::*;
use crate::stacks::StackId;
use crate::tracer::{Halt, Mode, ProbeOwner};

use super::Progress;

use super::Session;

/// The call a `finish` waits for: its thread, the stack pointer at its
/// entry stop, the last event before it, and the function's name.
pub(super) struct Finishing {
    tid: Pid,
    sp: u64,
    mark: Snapshot,
    function: String,
}

impl Session {
    /// `continue [DURATION] [--every PERIOD]`: run until a breakpoint, an
    /// interrupt, the end of the process or of the duration.
    pub(super) fn continue_running(
        &mut self,
        duration: Option<Duration>,
        every: Option<Duration>,
    ) -> Result<Vec<Report>, String> {
        let deadline = duration.map(|d| Instant::now().checked_add(d).ok_or("duration too long"));
        self.resume(deadline.transpose()?, None, every)
    }

    /// `detach`: let the process go; what was recorded stays for queries.
    pub(super) fn detach(&mut self) -> Result<Report, String> {
        if self.tracer.mechanism() == crate::tracer::Mechanism::Seccomp {
            return Err(
                "detach is refused here: the program's seccomp filter would make every fd \
                        syscall fail with ENOSYS once no tracer is attached; use quit to end it \
                        (a program started with perf events, the default where the kernel allows \
                        them, can be detached)"
                    .into(),
            );
        }
        if self.tracer.ends.detached {
            return Err("already detached".into());
        }
        self.check_model();
        self.keep_socket_targets();
        self.tracer.detach();
        self.stopped_at = None;
        Ok(Report::message(format!(
            "detached from process {}; the recorded data stays for queries",
            self.tracer.target.main_pid
        )))
    }

    /// `quit`: end the session (detach under attach, kill under run), and
    /// the status fdbg exits with. Under run, fdbg's status is the
    /// program's, as a tracer's usually is (0 if fdbg ended it).
    pub(super) fn quit(&mut self) -> i32 {
        let status = match (self.tracer.target.mode, self.tracer.ends.main_end) {
            (Mode::Run, Some(ProcessEnd::Exited(code))) => code,
            (Mode::Run, Some(ProcessEnd::Killed(sig))) => 128 + sig,
            _ => 0,
        };
        self.tracer.finish();
        status
    }

    /// `finish`: run until the function of the current stop returns, and
    /// say what the call left: its return value and its fd delta.
    pub(super) fn finish(&mut self) -> Result<Vec<Report>, String> {
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
            .find(|b| b.owner == ProbeOwner::User(id))
            .map(|b| b.pattern.clone())
            .unwrap_or_default();
        let sp = self
            .tracer
            .stack_pointer(tid)
            .ok_or("finish: the thread is gone")?;
        self.tracer.add_return_breakpoint(tid)?;
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
        let pid = self.tracer.target.main_pid;
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

    pub(super) fn resume(
        &mut self,
        deadline: Option<Instant>,
        steps: Option<usize>,
        every: Option<Duration>,
    ) -> Result<Vec<Report>, String> {
        let main = self.tracer.target.main_pid;
        if self.tracer.ends.detached {
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
        if let Some(notice) = self.tracer.set_need(need) {
            self.notes.push(Note::Tracer(notice));
        }
        self.say_now();
        let follow = self.tracer.target.follow_forks;
        // The events `step` shows (only while stepping: a `continue` of a
        // day keeps none).
        let mut seen: Vec<Seq> = Vec::new();
        let mut hit: Option<(u32, bool)> = None;
        let breakpoints = &mut self.breakpoints;
        let started = Instant::now();
        let cpu_started = crate::procfs::own_cpu_seconds();
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
                        progress(Progress::Report(Box::new(Report::Tick(
                            ticker.tick(model, symbolizer),
                        ))));
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
                && h.owner == ProbeOwner::Finish
                && !(h.tid == f.tid && self.tracer.stack_pointer(h.tid).is_some_and(|sp| sp > f.sp))
            {
                continue;
            }
            // `balance`: account the call, and go on.
            if let Halt::Function(h) = &halt
                && let Some(balance) = self
                    .balances
                    .iter_mut()
                    .find(|b| ProbeOwner::Balance(b.id) == h.owner)
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
                        && let Err(why) = self.tracer.add_address_breakpoint(
                            ProbeOwner::Balance(balance.id),
                            h.tid,
                            address,
                        )
                    {
                        let why = why.to_string();
                        let notices = self.tracer.take_notices();
                        self.notes.extend(notices.into_iter().map(Note::Tracer));
                        self.notes.push(Note::ReturnsNotCaught { address, why });
                    }
                }
                continue;
            }
            break halt;
        };
        self.progress = progress;
        self.running += started.elapsed();
        if let (Some(from), Some(to)) = (cpu_started, crate::procfs::own_cpu_seconds()) {
            let from = from.max(self.tracer.costs.cpu_observing_from.unwrap_or(0.0));
            self.running_cpu += (to - from).max(0.0);
        }
        if let Some(finishing) = self.finishing.take() {
            self.tracer
                .remove_function_breakpoint(Some(ProbeOwner::Finish));
            if let Halt::Function(h) = halt
                && h.owner == ProbeOwner::Finish
            {
                return Ok(vec![self.finished(finishing, h.tid)]);
            }
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
            events_from: self.tracer.mechanism(),
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
                let id = match hit.owner {
                    ProbeOwner::User(id) => Some(id),
                    _ => None,
                };
                stop.breakpoint = id;
                if let Some(bp) = id.and_then(|id| self.breakpoints.get_mut(id)) {
                    bp.hits += 1;
                }
                let frames = self.tracer.thread_frames(hit.tid);
                stop.function = Some(FunctionStopReport {
                    tid: hit.tid,
                    frames: frames.clone(),
                });
                self.stopped_in = Some((hit.tid, frames));
                self.stopped_in_break = id;
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
