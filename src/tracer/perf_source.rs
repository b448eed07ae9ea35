//! The perf SIGTRAP event source of an attach: arming it (tracepoint,
//! filter, one event per thread, SIGTRAP ignored by the process for the
//! session), taking its stops, re-arming after an exec, and disarming it so
//! that the process is as it was.
//!
//! Why SIGTRAP is ignored during the session: a SIGTRAP the kernel has
//! already queued when fdbg dies is delivered to a process no longer traced,
//! and SIGTRAP's default action kills it. Ignored, it is dropped. A traced
//! thread still reports an ignored signal to its tracer, so fdbg sees every
//! one. A process with a SIGTRAP handler of its own keeps it: fdbg uses
//! PTRACE_SYSCALL there.

use std::collections::{BTreeMap, BTreeSet};

use super::{Mechanism, Notice, ThreadState, Tracer, TracerError};
use crate::fdtable::{Pid, Seq};
use crate::perf::{self, PerfError, SyscallTrap};
use crate::procfs::{self, Disposition};
use crate::ptrace::{self, ProcessMemory, Stop, Tid};
use crate::syscalls::{self, SyscallEntry};

/// `si_perf_data` of fdbg's SIGTRAPs: tells them from the process's own.
pub const SIG_DATA: u64 = 0x6664_6267_0000_0001;

const SIG_DFL: u64 = 0;
const SIG_IGN: u64 = 1;
const SIGTRAP_BIT: u64 = 1 << (libc::SIGTRAP - 1);

/// How long threads that all block SIGTRAP run alone, when stops are
/// needed, waiting for one to unblock it.
const UNBLOCK_WAIT: std::time::Duration = std::time::Duration::from_millis(200);

/// What `arm_perf` arms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Traps {
    /// A SIGTRAP after every fd syscall: the fd events' source.
    FdEvents,
    /// No event: only SIGTRAP ignored by the processes, for function
    /// breakpoints while the fd events are observed.
    None,
}

/// The armed perf events and what the session changed in the processes;
/// after the detach, what the events counted (`stats` still shows it).
pub(super) struct PerfSource {
    tracepoint: u64,
    filter: String,
    follow_forks: bool,
    /// Whether the fd syscalls' SIGTRAP events are armed (and re-armed
    /// after an exec).
    fd_events: bool,
    /// One event per thread that existed at attach, and one per exec'd
    /// program, by process; threads (and, following forks, children)
    /// created later inherit them.
    traps: Vec<(Pid, SyscallTrap)>,
    /// The counts of events closed already.
    retired: u64,
    /// fdbg's SIGTRAPs taken (restarted syscalls included): what the
    /// kernel's count is compared with.
    pub(super) traps_seen: u64,
    /// Processes whose SIGTRAP fdbg set to ignored, to restore at detach.
    ignoring: BTreeSet<Pid>,
}

impl PerfSource {
    /// Close the events of the processes `which` accepts, keeping their
    /// counts.
    fn retire(&mut self, which: impl Fn(Pid) -> bool) {
        let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.traps)
            .into_iter()
            .partition(|&(pid, _)| which(pid));
        self.retired += gone.iter().map(|(_, trap)| trap.count()).sum::<u64>();
        self.traps = kept;
    }

    /// The kernel's count of fd syscalls in every traced process.
    pub(super) fn kernel_count(&self) -> u64 {
        self.retired + self.traps.iter().map(|(_, t)| t.count()).sum::<u64>()
    }
}

/// Why an attach takes its events with PTRACE_SYSCALL.
#[derive(Debug)]
pub enum Fallback {
    Perf(PerfError),
    /// The process handles SIGTRAP itself.
    OwnHandler(Pid),
    /// Running a syscall in the process failed.
    Inject(Box<TracerError>),
    /// A thread blocks SIGTRAP.
    Blocked(Tid),
    /// The process runs 32-bit code.
    NotX86_64(Pid),
}

impl std::fmt::Display for Fallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fallback::Perf(e) => write!(f, "{e}"),
            Fallback::OwnHandler(pid) => write!(
                f,
                "process {pid} has its own SIGTRAP handler, which fdbg leaves alone"
            ),
            Fallback::Inject(why) => write!(f, "cannot make the process ignore SIGTRAP: {why}"),
            Fallback::Blocked(tid) => write!(
                f,
                "thread {tid} blocks SIGTRAP, so it would not report its fd events (perf takes over when a thread unblocks it)"
            ),
            Fallback::NotX86_64(pid) => {
                write!(
                    f,
                    "process {pid} runs 32-bit code, whose syscalls are numbered otherwise"
                )
            }
        }
    }
}

impl std::error::Error for Fallback {}

/// The ftrace filter on `raw_syscalls:sys_exit` that keeps the fd
/// syscalls (execve is none: its effect comes from the exec stop), for the
/// SIGTRAP events and the observing samples alike.
pub(super) fn fd_syscalls_filter() -> String {
    perf::syscall_filter(syscalls::traced_syscalls())
}

/// The tracepoint at the exit of every syscall and `fd_syscalls_filter`.
pub(super) fn syscall_tracepoint() -> Result<(u64, String), PerfError> {
    perf::permitted()?;
    perf::sigtrap_supported()?;
    let tracefs = perf::tracefs()?;
    let tracepoint = perf::tracepoint_id(&tracefs, "raw_syscalls", "sys_exit")?;
    Ok((tracepoint, fd_syscalls_filter()))
}

/// Whether stopped thread `tid` blocks SIGTRAP.
pub(super) fn blocks_sigtrap(tid: Tid) -> bool {
    ptrace::signal_mask(tid).is_ok_and(|m| m & SIGTRAP_BIT != 0)
}

impl Tracer {
    /// Arm perf at attach; where only the threads' masks stand in the way,
    /// take the events with PTRACE_SYSCALL until a thread unblocks SIGTRAP.
    pub(super) fn arm_perf_at_attach(&mut self, forced: bool) -> Result<(), Fallback> {
        let armed = self.arm_perf(true, forced, Traps::FdEvents);
        self.source.waits_for_unblock = matches!(armed, Err(Fallback::Blocked(_)));
        // An unblock seen before (by a thread stopped meanwhile) is
        // history: the next one counts.
        self.source.unblocked = false;
        armed
    }

    /// Arm perf now, every thread stopped, for function breakpoints (which
    /// have no PTRACE_SYSCALL fallback). Where every thread of a process
    /// blocks SIGTRAP, most often for the moment glibc blocks all signals
    /// while it creates a thread or ends one, those threads run alone
    /// through PTRACE_SYSCALL, the others staying stopped, until one
    /// unblocks it (then perf is armed) or `UNBLOCK_WAIT` passes (then the
    /// events come through PTRACE_SYSCALL until a thread unblocks it). The
    /// fd events of that run are recorded; no fd breakpoint is checked on
    /// them (glibc makes none in that moment).
    pub(super) fn arm_perf_now(&mut self) -> Result<(), Fallback> {
        let blocking: Vec<Tid> = match self.arm_perf_at_attach(false) {
            Err(Fallback::Blocked(_)) => self
                .threads_blocking_sigtrap()
                .into_values()
                .flatten()
                .collect(),
            armed => return armed,
        };
        self.source.mechanism = Mechanism::PtraceSyscall;
        for &tid in &blocking {
            self.resume_thread(tid);
        }
        let deadline = std::time::Instant::now() + UNBLOCK_WAIT;
        let unblocked = loop {
            match self.next_status(Some(deadline)) {
                super::Waited::Status(tid, stop) => {
                    self.handle(tid, stop);
                    if std::mem::take(&mut self.source.unblocked) {
                        break Some(tid);
                    }
                    if blocking.contains(&tid) {
                        self.resume_thread(tid);
                    }
                }
                super::Waited::Woken(super::WAKE_INTERRUPT) => {
                    self.interrupt_seen = true;
                    break None;
                }
                super::Waited::Woken(sig) => {
                    self.wake.waker.wake(sig);
                    break None;
                }
                super::Waited::NoTracees => {
                    self.threads.clear();
                    break None;
                }
                super::Waited::Timeout | super::Waited::Samples => break None,
            }
        };
        if let Some(tid) = unblocked {
            self.settle_for_syscall(tid);
        }
        self.stop_all();
        self.arm_perf_taking_over()
    }

    /// Arm perf where PTRACE_SYSCALL took the events (every thread stopped).
    fn arm_perf_taking_over(&mut self) -> Result<(), Fallback> {
        let armed = self.arm_perf_at_attach(false);
        if armed.is_ok() {
            // Syscalls stopped at their entry return through perf.
            for thread in self.threads.values_mut() {
                thread.entry = None;
                thread.masking = false;
            }
        }
        armed
    }

    /// The processes whose every thread blocks SIGTRAP, with their threads.
    fn threads_blocking_sigtrap(&self) -> BTreeMap<Pid, Vec<Tid>> {
        let mut by_pid: BTreeMap<Pid, Vec<Tid>> = BTreeMap::new();
        let mut unblocked = BTreeSet::new();
        for (tid, pid) in self.threads() {
            if blocks_sigtrap(tid) {
                by_pid.entry(pid).or_default().push(tid);
            } else {
                unblocked.insert(pid);
            }
        }
        by_pid.retain(|pid, _| !unblocked.contains(pid));
        by_pid
    }

    /// Thread `tid`, stopped at the exit of an rt_sigprocmask, unblocked
    /// SIGTRAP: stop everything, arm perf and resume. The thread goes to
    /// an interrupt stop first, where the arming can run its syscalls.
    pub(super) fn take_over_with_perf(&mut self, tid: Tid) {
        self.settle_for_syscall(tid);
        self.stop_all();
        // Still blocked: it waits for the next unblock; refused otherwise:
        // PTRACE_SYSCALL for the session.
        let _ = self.arm_perf_taking_over();
        self.resume_all();
    }

    /// Make perf SIGTRAPs the event source of this (stopped) session, or,
    /// with `Traps::None`, only make it ready for function breakpoints'
    /// SIGTRAPs. `protect`: have each process ignore SIGTRAP for the
    /// session (attach; a process fdbg started dies with fdbg anyway).
    pub(super) fn arm_perf(
        &mut self,
        protect: bool,
        forced: bool,
        traps: Traps,
    ) -> Result<(), Fallback> {
        // What the kernel allows first: it holds for the whole session,
        // where a thread's mask can change at its next syscall.
        let (tracepoint, filter) = syscall_tracepoint().map_err(Fallback::Perf)?;
        let pids: BTreeSet<Pid> = self.threads.values().map(|t| t.pid).collect();
        // A process whose every thread blocks SIGTRAP (signals taken with
        // sigwait or a signalfd) would report its events late or never,
        // and could take fdbg's SIGTRAPs as its own. One thread blocking
        // for a moment (glibc does while it creates a thread) only delays
        // that thread's events; `stats` counts what is missed.
        for (tid, pid) in self.threads() {
            // 32-bit code numbers its syscalls otherwise.
            if ptrace::registers(tid).is_ok_and(|r| r.cs != 0x33) {
                return Err(Fallback::NotX86_64(pid));
            }
        }
        let blocked = self.threads_blocking_sigtrap();
        for blocking in blocked.into_values().map(|tids| tids[0]) {
            if !forced {
                return Err(Fallback::Blocked(blocking));
            }
            self.notices.push(Notice::BlocksSigtrap(blocking));
        }
        let mut to_ignore = Vec::new();
        for &pid in pids.iter().filter(|_| protect) {
            match procfs::disposition(pid, libc::SIGTRAP) {
                Some(Disposition::Caught) => return Err(Fallback::OwnHandler(pid)),
                Some(Disposition::Default) => to_ignore.push(pid),
                _ => {}
            }
        }
        // Armed again (after observing): the counts go on.
        let (retired, traps_seen) = self
            .source
            .traps
            .as_ref()
            .map_or((0, 0), |p| (p.kernel_count(), p.traps_seen));
        let mut source = PerfSource {
            tracepoint,
            filter,
            follow_forks: self.target.follow_forks,
            fd_events: traps == Traps::FdEvents,
            traps: Vec::new(),
            retired,
            traps_seen,
            ignoring: BTreeSet::new(),
        };
        let threads: Vec<(Tid, Pid)> = if source.fd_events {
            self.threads()
        } else {
            Vec::new()
        };
        for (tid, pid) in threads {
            let trap = SyscallTrap::open(
                tid,
                source.tracepoint,
                &source.filter,
                source.follow_forks,
                SIG_DATA,
            )
            .map_err(Fallback::Perf)?;
            source.traps.push((pid, trap));
        }
        for pid in to_ignore {
            if let Err(why) = self.set_sigtrap(pid, SIG_IGN) {
                // Undo what was done: nothing of the session stays.
                for &done in &source.ignoring {
                    let _ = self.set_sigtrap(done, SIG_DFL);
                }
                return Err(Fallback::Inject(Box::new(why)));
            }
            source.ignoring.insert(pid);
        }
        // What the session set to ignored before stays to restore.
        if let Some(old) = self.source.traps.as_mut() {
            source.ignoring.append(&mut old.ignoring);
        }
        if source.fd_events {
            self.source.mechanism = Mechanism::PerfSigtrap;
        }
        self.source.traps = Some(source);
        Ok(())
    }

    /// Set SIGTRAP's handler in stopped process `pid` to `handler`
    /// (SIG_IGN or SIG_DFL) by running rt_sigaction in one of its threads.
    fn set_sigtrap(&mut self, pid: Pid, handler: u64) -> Result<(), TracerError> {
        let tid = self.injection_thread(pid)?;
        self.set_sigtrap_in(pid, tid, handler)
    }

    /// A stopped thread of `pid` where a syscall can be run: one in an
    /// interrupt stop (or at one of fdbg's SIGTRAPs), with no signal of
    /// its own to deliver; else one brought there.
    pub(super) fn injection_thread(&mut self, pid: Pid) -> Result<Tid, TracerError> {
        let ready = |t: &super::Thread| {
            t.signal == 0
                && matches!(
                    t.last_stop,
                    Some(Stop::Event {
                        event: ptrace::EVENT_STOP,
                        ..
                    }) | Some(Stop::Signal(libc::SIGTRAP))
                )
        };
        let stopped: Vec<Tid> = {
            let mut tids: Vec<Tid> = self
                .threads
                .iter()
                .filter(|(_, t)| t.pid == pid && t.state == ThreadState::Stopped && !t.exiting)
                .map(|(&tid, _)| tid)
                .collect();
            tids.sort_unstable();
            tids
        };
        stopped
            .iter()
            .copied()
            .find(|tid| self.threads.get(tid).is_some_and(ready))
            .or_else(|| {
                stopped
                    .iter()
                    .copied()
                    .find(|&tid| self.settle_for_syscall(tid))
            })
            .ok_or(TracerError::NoInjectionThread)
    }

    fn set_sigtrap_in(&mut self, pid: Pid, tid: Tid, handler: u64) -> Result<(), TracerError> {
        // Through the thread: a leader that exited has no maps.
        let insn = procfs::vdso_syscall_instruction(tid).ok_or(TracerError::NoVdsoSyscall)?;
        let regs = ptrace::registers(tid)?;
        // struct sigaction as the kernel takes it: handler, flags,
        // restorer, mask; just below the red zone, where a signal frame
        // would go, and put back after.
        let at = (regs.rsp - 128 - 32) & !15;
        let mut act = Vec::with_capacity(32);
        for word in [handler, 0, 0, 0] {
            act.extend_from_slice(&word.to_ne_bytes());
        }
        let memory = ProcessMemory { pid: tid };
        let before = memory
            .read(at, act.len())
            .filter(|b| b.len() == act.len())
            .ok_or(TracerError::StackUnreadable)?;
        memory
            .write(at, &act)
            .map_err(TracerError::StackUnwritable)?;
        let args = [libc::SIGTRAP as u64, at, 0, 8, 0, 0];
        let result = ptrace::inject::syscall(pid, tid, insn, libc::SYS_rt_sigaction as u64, args);
        let _ = memory.write(at, &before);
        let result = result?;
        if let Some(t) = self.threads.get_mut(&tid) {
            t.last_stop = Some(Stop::Event {
                event: ptrace::EVENT_STOP,
                signal: libc::SIGTRAP,
            });
        }
        if result != 0 {
            return Err(TracerError::Sigaction(result));
        }
        Ok(())
    }

    /// Bring stopped thread `tid` from another stop (inside fork, exec,
    /// clone; at a signal to deliver) to an interrupt stop, where a syscall
    /// can be run: interrupt it and let it go on; the stops on the way are
    /// handled as any (events recorded, signals delivered). False if it
    /// ended or never got there.
    fn settle_for_syscall(&mut self, tid: Tid) -> bool {
        if ptrace::interrupt(tid).is_err() {
            return false;
        }
        for _ in 0..16 {
            let signal = self
                .threads
                .get_mut(&tid)
                .map_or(0, |t| std::mem::take(&mut t.signal));
            if ptrace::resume(tid, ptrace::Resume::Cont, signal).is_err() {
                return false;
            }
            let Ok(Some((_, stop))) = ptrace::wait_for(tid, false) else {
                return false;
            };
            self.handle(tid, stop);
            match stop {
                Stop::Event {
                    event: ptrace::EVENT_STOP,
                    ..
                } => return self.threads.get(&tid).is_some_and(|t| t.signal == 0),
                _ if stop.is_end() => return false,
                _ => {}
            }
        }
        false
    }

    /// A perf SIGTRAP stop carrying `perf_data`: an fd syscall's (it just
    /// returned; its number, arguments and result are in the registers),
    /// or `None` for another's.
    pub(super) fn perf_stop(&mut self, tid: Tid, perf_data: u64) -> Option<Option<Seq>> {
        let source = self.source.traps.as_mut()?;
        if perf_data != SIG_DATA {
            return None;
        }
        let Ok(regs) = ptrace::registers(tid) else {
            return Some(None);
        };
        // A SIGTRAP held back (blocked) and delivered later stops at
        // another syscall: not an event fdbg can name, so it counts as missed.
        if !syscalls::is_fd_syscall(regs.orig_rax) {
            return Some(None);
        }
        source.traps_seen += 1;
        self.costs.syscalls += 1;
        let pid = self.threads.get(&tid)?.pid;
        self.costs.by_pid.entry(pid).or_default().1 += 1;
        let result = regs.rax as i64;
        if syscalls::is_restart(result) {
            return Some(None);
        }
        let entry = SyscallEntry {
            nr: regs.orig_rax,
            args: [regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9],
        };
        let stack_regs = crate::arch::StackRegs::from_user_regs(&regs);
        Some(self.complete(tid, &entry, result, Some(stack_regs)))
    }

    /// A thread stopped by an interrupt may have one of fdbg's SIGTRAPs
    /// queued (its fd syscall returned just before): let it report it, so
    /// that a stopped process's model has every event the kernel made.
    pub(super) fn take_queued_trap(&mut self, tid: Tid) {
        let fd_events = self.source.traps.as_ref().is_some_and(|p| p.fd_events);
        if !fd_events && self.source.watching.watch.is_none() {
            return;
        }
        let Some(thread) = self.threads.get(&tid) else {
            return;
        };
        let interrupted = matches!(
            thread.last_stop,
            Some(Stop::Event {
                event: ptrace::EVENT_STOP,
                ..
            })
        );
        if thread.state != ThreadState::Stopped || !interrupted || thread.group_stopped {
            return;
        }
        // A thread that blocks SIGTRAP would not stop for it: leave it (the
        // trap is discarded at detach).
        if blocks_sigtrap(tid) {
            return;
        }
        let pending = ptrace::pending_signals(tid).unwrap_or_default();
        let queued = |data: u64| {
            pending.iter().any(|s| {
                s.signo == libc::SIGTRAP && s.code == perf::TRAP_PERF && s.perf_data == data
            })
        };
        // A watch stop queued: its event is among those the stop drains.
        if self.source.watching.watch.is_some() && queued(super::watch::WATCH_DATA) {
            self.source.watching.hit = true;
        }
        if fd_events && queued(SIG_DATA) {
            self.resume_thread(tid);
        }
    }

    /// After an exec, the kernel removed the program's events
    /// (`remove_on_exec`): arm the new program.
    pub(super) fn rearm_after_exec(&mut self, pid: Pid, tid: Tid) {
        let Some(source) = self.source.traps.as_mut() else {
            return;
        };
        source.retire(|p| p == pid);
        if !source.fd_events {
            return;
        }
        match SyscallTrap::open(
            tid,
            source.tracepoint,
            &source.filter,
            source.follow_forks,
            SIG_DATA,
        ) {
            Ok(trap) => source.traps.push((pid, trap)),
            Err(why) => self.notices.push(Notice::NotRearmed { pid, why }),
        }
    }

    /// A followed child starts with its parent's events and dispositions.
    pub(super) fn perf_forked(&mut self, parent: Pid, child: Pid) {
        if let Some(source) = self.source.traps.as_mut()
            && source.ignoring.contains(&parent)
        {
            source.ignoring.insert(child);
        }
    }

    /// A child process about to be let go (not followed) inherited the
    /// session's ignored SIGTRAP from its parent: give it the default back.
    pub(super) fn restore_child_sigtrap(&mut self, child: Tid) {
        let Some(source) = self.source.traps.as_ref() else {
            return;
        };
        let from_session = procfs::status(child).is_some_and(|s| source.ignoring.contains(&s.ppid));
        if from_session
            && procfs::disposition(child, libc::SIGTRAP) == Some(Disposition::Ignored)
            && let Err(why) = self.set_sigtrap(child, SIG_DFL)
        {
            self.notices.push(Notice::ChildSigtrapKept { child, why });
        }
    }

    /// A process ended: its events count no more.
    pub(super) fn perf_process_ended(&mut self, pid: Pid) {
        if let Some(source) = self.source.traps.as_mut() {
            source.retire(|p| p == pid);
            source.ignoring.remove(&pid);
        }
    }

    /// Close the fd syscalls' events, keeping SIGTRAP ignored for the
    /// function breakpoints (every thread stopped): the fd events are
    /// observed now.
    pub(super) fn disarm_fd_events(&mut self) {
        if let Some(source) = self.source.traps.as_mut() {
            source.retire(|_| true);
            source.fd_events = false;
        }
    }

    /// Close every event and give each process its SIGTRAP disposition
    /// back; every thread is stopped, with no SIGTRAP of fdbg's queued.
    pub(super) fn disarm_perf(&mut self) {
        let Some(source) = self.source.traps.as_mut() else {
            return;
        };
        source.retire(|_| true);
        for pid in std::mem::take(&mut source.ignoring) {
            let still_ignored =
                procfs::disposition(pid, libc::SIGTRAP) == Some(Disposition::Ignored);
            let traced = self.threads.values().any(|t| t.pid == pid);
            if !(still_ignored && traced) {
                continue;
            }
            // Setting SIG_IGN again discards every SIGTRAP still pending
            // in any thread (a group-stopped one, one that blocks it), which
            // the default action would make fatal; the events are closed,
            // so no new one comes.
            let restored = self
                .set_sigtrap(pid, SIG_IGN)
                .and_then(|()| self.set_sigtrap(pid, SIG_DFL));
            if let Err(why) = restored {
                self.notices.push(Notice::SigtrapKept { pid, why });
            }
        }
    }
}
