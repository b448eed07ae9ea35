//! The event loop: ptrace stops → syscall decoding → model events → the
//! caller's stop decision.
//!
//! A `Tracer` owns every traced thread of one session. It attaches
//! (`attach`) or starts a program (`launch`), then alternates between
//! *stopped* (every thread in a ptrace-stop, the model consistent, queries
//! answered) and *running* (`resume_until`). Every way it ends detaches
//! (attach) or kills (run): `Drop` does it too, so a panic or an error path
//! leaves an attached process running, untraced.
//!
//! It is `!Send`: only the thread that attached may call ptrace.

use std::collections::{BTreeMap, BTreeSet};

// A fast hasher for the maps looked up at every event (pids, tids).
use rustc_hash::FxHashMap as HashMap;
use std::marker::PhantomData;
use std::os::fd::AsFd;
use std::time::Instant;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::arch;
use crate::fdtable::{FdKind, Model, Pid, ProcessEnd, Seq};
use crate::net::{self, SocketInfo};
use crate::procfs;
use crate::ptrace::{self, ProcessMemory, Resume, Stop, SyscallStop, Tid};
use crate::stacks::{Stack, StackId};
use crate::symbolize::Symbolizer;
use crate::syscalls::{self, Effect, Flags, SyscallEntry};
use crate::unwind::{Unwinder, copy_stack};

mod error;
mod functions;
mod notice;
mod observe;
mod perf_source;
mod reclaim;
mod samplers;
mod source;
mod start;
mod threads;
mod unfollowed;
mod waker;
mod watch;

pub use error::TracerError;
pub use functions::{FunctionBreak, FunctionHit, ProbeOwner};
pub use notice::Notice;
pub use observe::{Need, ObservedFigures};
pub use perf_source::Fallback;
pub use reclaim::Closed;
pub use source::Mechanism;
use source::Source;
pub use start::StartError;
use threads::{Thread, ThreadState, Threads};
pub use waker::{WAKE_INTERRUPT, Waker};

/// How many bytes of stack are copied at a stop for the unwinder.
const STACK_COPY: usize = 32 * 1024;

/// How long `next_status` polls waitpid before it sleeps.
const WAIT_SPIN: std::time::Duration = std::time::Duration::from_micros(50);

/// How often, at least, an observing session drains its rings (ms).
const OBSERVE_POLL_MS: u8 = 10;

/// Whether the tracee was attached to or started by fdbg.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Attach,
    Run,
}

/// The event source the user asked for (`--events`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EventsChoice {
    /// perf where the kernel allows it, else PTRACE_SYSCALL, saying why.
    #[default]
    Auto,
    /// Perf or an error: observing while nothing needs a stop, a SIGTRAP
    /// per fd event while something does.
    Perf,
    /// A perf SIGTRAP (one stop) at every fd event, observing never.
    Sigtrap,
    Ptrace,
}

/// What `resume_until` calls once per period while the process runs.
pub struct Ticks<'a> {
    pub period: std::time::Duration,
    pub on_tick: &'a mut dyn FnMut(&Model, &mut Symbolizer),
}

/// The time now on the clock events are stamped with (CLOCK_MONOTONIC,
/// as perf samples' times), in nanoseconds.
pub fn monotonic_now() -> crate::fdtable::Nanos {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// Why `resume_until` returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Halt {
    /// The caller's event check asked to stop after this event.
    Event(Seq),
    /// An interrupt was requested (Ctrl-C).
    Interrupt,
    /// fdbg was asked to end (a signal to fdbg).
    Shutdown(i32),
    /// The deadline passed.
    Timeout,
    /// The main process ended.
    Exited(ProcessEnd),
    /// A thread reached a function breakpoint (or returned, for a return
    /// probe); it is stopped there with the others.
    Function(FunctionHit),
}

/// What waiting for the tracees gave.
enum Waited {
    Status(Tid, Stop),
    /// The waker fired: `WAKE_INTERRUPT` or a signal number.
    Woken(i32),
    Timeout,
    NoTracees,
    /// A perf ring has samples to take.
    Samples,
}

/// What tracing has cost the processes: fdbg's stops and the syscalls it
/// looked at.
#[derive(Clone, Debug, Default)]
pub struct Costs {
    /// Every ptrace stop fdbg has handled.
    pub stops: u64,
    /// The same, by process: (ptrace stops, syscall entries seen).
    pub by_pid: HashMap<Pid, (u64, u64)>,
    /// Syscall entries seen (all syscalls under attach, fd syscalls under run).
    pub syscalls: u64,
    /// fdbg's CPU seconds once the first samplers were open (their rings
    /// mapped and zeroed): the fixed cost of observing ends there.
    pub cpu_observing_from: Option<f64>,
}

/// Options common to attach and run.
#[derive(Clone, Debug, Default)]
pub struct TraceOptions {
    pub follow_forks: bool,
    /// `run`: start the program in a process group of its own, so that
    /// Ctrl-C at the prompt reaches fdbg only. Off in --batch, where the
    /// program may read the terminal like any foreground program (in a
    /// background group it would stop with SIGTTIN).
    pub own_process_group: bool,
    pub events: EventsChoice,
    /// How many of the latest events the model keeps (`history`, `step`).
    pub keep_events: usize,
}

pub struct Tracer {
    /// What is traced, and how it started.
    pub target: Target,
    /// Where fd events come from, and every event source's state.
    source: Source,
    pub model: Model,
    /// What tracing has cost the processes.
    pub costs: Costs,
    /// How the main process and the session ended.
    pub ends: Ends,
    /// What turns code addresses into stacks and names.
    pub addresses: Addresses,
    /// What the user should know, since the front end last took them
    /// (how the session started, what happened while it ran).
    notices: Vec<Notice>,
    /// Function breakpoints, armed and pending, and their hits.
    probes: functions::Probes,
    /// Ctrl-C came while everything was being stopped.
    interrupt_seen: bool,
    threads: Threads,
    /// What wakes the tracer while the process runs.
    wake: Wake,
    _not_send: PhantomData<*const ()>,
}

/// What is traced, and how it started.
pub struct Target {
    pub mode: Mode,
    pub main_pid: Pid,
    pub follow_forks: bool,
}

/// How the main process and the session ended.
pub struct Ends {
    /// The main process ended; how.
    pub main_end: Option<ProcessEnd>,
    /// fdbg let go of the process (detach); the model stays for queries.
    pub detached: bool,
    /// The sockets of each process that ended, by fd, as they were at its
    /// exit (the socket tables are gone with it).
    pub exit_sockets: HashMap<Pid, BTreeMap<i32, SocketInfo>>,
}

/// What turns code addresses into stacks (at a stop) and names (when
/// shown).
pub struct Addresses {
    /// Names code addresses when they are shown; remembers a process's
    /// mappings at its exit.
    pub symbolizer: Symbolizer,
    /// Each process's unwinder.
    unwinders: HashMap<Pid, Unwinder>,
}

/// What wakes the tracer while the process runs: SIGCHLD (a tracee changed
/// state) and the other threads' `Waker`.
struct Wake {
    sigchld: SignalFd,
    waker: std::sync::Arc<Waker>,
}

fn sigchld_fd() -> nix::Result<SignalFd> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    set.thread_block()?;
    SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
}

impl Tracer {
    fn new(
        mode: Mode,
        main_pid: Pid,
        opts: &TraceOptions,
        waker: std::sync::Arc<Waker>,
    ) -> Result<Tracer, StartError> {
        let sigchld =
            sigchld_fd().map_err(|e| StartError::Setup(format!("signalfd for SIGCHLD: {e}")))?;
        Ok(Tracer {
            target: Target {
                mode,
                main_pid,
                follow_forks: opts.follow_forks,
            },
            source: Source::new(mode),
            model: {
                let mut model = Model::keeping(opts.keep_events);
                model.set_clock(monotonic_now());
                model
            },
            costs: Costs::default(),
            ends: Ends {
                main_end: None,
                detached: false,
                exit_sockets: HashMap::default(),
            },
            addresses: Addresses {
                symbolizer: Symbolizer::new(),
                unwinders: HashMap::default(),
            },
            notices: Vec::new(),
            probes: functions::Probes::default(),
            interrupt_seen: false,
            threads: Threads::default(),
            wake: Wake { sigchld, waker },
            _not_send: PhantomData,
        })
    }

    /// Where fd events come from now.
    pub fn mechanism(&self) -> Mechanism {
        self.source.mechanism
    }

    /// What the user should know since the last call.
    pub fn take_notices(&mut self) -> Vec<Notice> {
        std::mem::take(&mut self.notices)
    }

    /// The waker the front end uses to interrupt `resume_until`.
    pub fn waker(&self) -> std::sync::Arc<Waker> {
        self.wake.waker.clone()
    }

    /// Every traced thread, as (tid, its process), sorted.
    pub fn threads(&self) -> Vec<(Tid, Pid)> {
        let mut out: Vec<(Tid, Pid)> = self.threads.iter().map(|(&tid, t)| (tid, t.pid)).collect();
        out.sort_unstable();
        out
    }

    /// True while some process is still traced.
    pub fn is_live(&self) -> bool {
        !self.threads.is_empty()
    }

    /// A new command that resumes: forget a Ctrl-C given at the prompt.
    pub fn begin_command(&mut self) {
        self.wake.waker.clear_interrupt();
        self.interrupt_seen = false;
    }

    /// Resume every thread and handle stops until `on_event` asks to stop,
    /// the deadline passes, the waker fires, or the main process ends.
    /// Returns with every remaining thread stopped.
    /// `ticks`: a period and what to call once per period while the
    /// process runs, with the model as complete as it can be without a
    /// stop (observed samples drained, the newest few milliseconds may
    /// wait for the next drain).
    pub fn resume_until(
        &mut self,
        deadline: Option<Instant>,
        on_event: &mut dyn FnMut(&Model, &mut Symbolizer, Seq) -> bool,
        ticks: Option<Ticks<'_>>,
    ) -> Halt {
        if self.threads.is_empty() {
            return Halt::Exited(self.ends.main_end.unwrap_or(ProcessEnd::Exited(0)));
        }
        // Ctrl-C while stopping (between two `resume_until` of one
        // command) ends the command; a hit seen then is reported now,
        // nothing resumed.
        if std::mem::take(&mut self.interrupt_seen) {
            return Halt::Interrupt;
        }
        while let Some(hit) = self.probes.queued.pop_front() {
            if self.probes.breaks.iter().any(|b| b.owner == hit.owner) {
                return Halt::Function(hit);
            }
        }
        // A watch stop seen while stopping: its events first.
        if std::mem::take(&mut self.source.watching.hit)
            && let Some(seq) = self.check_unchecked(on_event)
        {
            return Halt::Event(seq);
        }
        self.source.watching.unchecked.clear();
        self.resume_all();
        let halt = self.pump(deadline, on_event, ticks);
        self.stop_all();
        halt
    }

    fn pump(
        &mut self,
        deadline: Option<Instant>,
        on_event: &mut dyn FnMut(&Model, &mut Symbolizer, Seq) -> bool,
        mut ticks: Option<Ticks<'_>>,
    ) -> Halt {
        let mut next_tick = ticks.as_ref().map(|t| Instant::now() + t.period);
        loop {
            // A Ctrl-C that came while a handler stopped every thread for
            // its own reasons (longer stack copies, a watch's check, perf
            // taking over, a `break count` within reach) ends the command
            // now, not at the next one.
            if std::mem::take(&mut self.interrupt_seen) {
                return Halt::Interrupt;
            }
            let wake = match (deadline, next_tick) {
                (Some(d), Some(t)) => Some(d.min(t)),
                (d, t) => d.or(t),
            };
            match self.next_status(wake) {
                Waited::Status(tid, stop) => {
                    let main_was_live = self.ends.main_end.is_none();
                    if let Some(seq) = self.handle(tid, stop)
                        && on_event(&self.model, &mut self.addresses.symbolizer, seq)
                    {
                        return Halt::Event(seq);
                    }
                    if let Some(hit) = self.probes.hit.take() {
                        if hit.owner != ProbeOwner::Loader {
                            return Halt::Function(hit);
                        }
                        self.resolve_pending();
                    }
                    if std::mem::take(&mut self.source.watching.hit) {
                        // Every thread stopped: every sample is in.
                        self.stop_all();
                        if let Some(seq) = self.check_unchecked(on_event) {
                            return Halt::Event(seq);
                        }
                        self.resume_all();
                    } else if self.source.unblocked {
                        self.take_over_with_perf(tid);
                    } else {
                        self.resume_thread(tid);
                    }
                    if main_was_live && let Some(end) = self.ends.main_end {
                        return Halt::Exited(end);
                    }
                }
                Waited::Samples => {
                    if let Some(halt) = self.take_observed(on_event) {
                        return halt;
                    }
                }
                Waited::Woken(WAKE_INTERRUPT) => return Halt::Interrupt,
                Waited::Woken(sig) => return Halt::Shutdown(sig),
                Waited::Timeout => {
                    let ended = deadline.is_some_and(|d| Instant::now() >= d);
                    // The end of a `continue N --every P` is a tick too
                    // when most of a period has passed since the last.
                    let tick_due = next_tick
                        .zip(ticks.as_ref())
                        .is_some_and(|(next, t)| Instant::now() + t.period / 2 >= next || !ended);
                    if tick_due {
                        // The samples so far first.
                        if !self.observer_fds().is_empty()
                            && let Some(halt) = self.take_observed(on_event)
                        {
                            return halt;
                        }
                        if let (Some(t), Some(next)) = (ticks.as_mut(), next_tick.as_mut()) {
                            (t.on_tick)(&self.model, &mut self.addresses.symbolizer);
                            *next = (*next + t.period).max(Instant::now());
                        }
                    }
                    if ended {
                        return Halt::Timeout;
                    }
                }
                Waited::NoTracees => {
                    self.threads.clear();
                    self.take_samples(true);
                    return Halt::Exited(self.ends.main_end.unwrap_or(ProcessEnd::Exited(0)));
                }
            }
        }
    }

    /// Observed samples are waiting (or a tick wants them): decode them
    /// into events, check each, and stop everything where a walk needs
    /// longer stack copies or a `break count` is within reach.
    fn take_observed(
        &mut self,
        on_event: &mut dyn FnMut(&Model, &mut Symbolizer, Seq) -> bool,
    ) -> Option<Halt> {
        let recorded = self.take_samples(false);
        let recorded = self.hold_unchecked(recorded);
        let hit = recorded
            .into_iter()
            .find(|&seq| on_event(&self.model, &mut self.addresses.symbolizer, seq));
        if let Some(seq) = hit {
            self.observed_hit(seq);
            return Some(Halt::Event(seq));
        }
        let grow = self
            .source
            .observer
            .as_ref()
            .is_some_and(|o| o.wants_more_stack());
        let near = !self.observe_suffices();
        if grow || near {
            // The samples the stop drains are events like any.
            let drained = self.stop_all_taking_samples();
            let hit = drained
                .into_iter()
                .find(|&seq| on_event(&self.model, &mut self.addresses.symbolizer, seq));
            if let Some(seq) = hit {
                self.observed_hit(seq);
                return Some(Halt::Event(seq));
            }
            if grow {
                self.grow_stack_copies();
            }
            if near {
                // A `break count` within reach: stop at every event.
                let need = self.source.need;
                if let Some(notice) = self.set_need(need) {
                    self.notices.push(notice);
                }
            }
            self.resume_all();
        }
        None
    }

    /// The next wait status of any tracee; blocks (in poll, on the SIGCHLD
    /// signalfd and the waker) until there is one, the waker fires, or the
    /// deadline passes. The waker and the deadline are checked first, so
    /// that a stream of stops cannot hold off Ctrl-C or a `continue N`;
    /// a status left unread stays queued in the kernel.
    ///
    /// Before sleeping it spins for up to `WAIT_SPIN` on waitpid(WNOHANG),
    /// yielding the CPU between tries (a tracee that shares the CPU runs):
    /// most stops come within microseconds of the resume (the tracee's
    /// next fd syscall), and a sleeping tracer costs each one a wakeup.
    /// Measured with `cargo bench --bench overhead` (bench 4000, 2-CPU VM
    /// under other load, median of 7 interleaved runs), seconds without →
    /// with a 50 µs spin, on two CPUs | pinned to one (`taskset -c 0`):
    /// attach perf 0.122 → 0.094 | 0.158 → 0.088; run 0.158 → 0.106 |
    /// 0.130 → 0.098; attach --events ptrace 0.549 → 0.557 (bimodal: its
    /// fastest runs 0.49 → 0.29) | 0.902 → 0.632. Spins of 20 and 100 µs
    /// did no better than 50. Pinning the tracer thread to the CPU the
    /// stopped tracee last ran on (/proc/TID/stat field 39) made every
    /// mode slower (attach perf 0.14 → 0.26 s re-pinned at each stop,
    /// 0.17 s at every 64th), so the tracer is not pinned.
    fn next_status(&mut self, deadline: Option<Instant>) -> Waited {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Waited::Timeout;
        }
        if self.wake.waker.requested() {
            match self.wake.waker.take() {
                0 => {}
                request => return Waited::Woken(request),
            }
        }
        // Observing, no thread stops for an fd event: nothing to spin for.
        let spin = if self.source.mechanism == Mechanism::PerfObserve {
            std::time::Duration::ZERO
        } else {
            WAIT_SPIN
        };
        let spin_until = Instant::now() + spin;
        loop {
            match ptrace::wait_any(true) {
                Ok(Some((tid, stop))) => return Waited::Status(tid, stop),
                Ok(None) => {}
                // ECHILD: nothing left to trace.
                Err(_) => return Waited::NoTracees,
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Waited::Timeout;
            }
            if now < spin_until {
                let _ = nix::sched::sched_yield();
                continue;
            }
            let timeout = match deadline {
                Some(d) => PollTimeout::try_from(d.saturating_duration_since(now))
                    .unwrap_or(PollTimeout::MAX)
                    .max(PollTimeout::from(1u8)),
                None => PollTimeout::NONE,
            };
            let rings = self.observer_fds();
            // Observing, the rings are drained at least this often, so
            // that pointer arguments read from memory are read soon after
            // the call (and a ring whose own thread is gone still drains).
            let timeout = if rings.is_empty() {
                timeout
            } else if timeout == PollTimeout::NONE {
                PollTimeout::from(OBSERVE_POLL_MS)
            } else {
                timeout.min(PollTimeout::from(OBSERVE_POLL_MS))
            };
            let mut fds = vec![
                PollFd::new(self.wake.sigchld.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.wake.waker.fd.as_fd(), PollFlags::POLLIN),
            ];
            fds.extend(
                rings
                    .iter()
                    .map(|(_, fd)| PollFd::new(fd.as_fd(), PollFlags::POLLIN)),
            );
            let polled = poll(&mut fds, timeout);
            let woken = fds[1]
                .revents()
                .is_some_and(|r| r.contains(PollFlags::POLLIN));
            let mut samples = !rings.is_empty() && polled == Ok(0);
            let mut hung = Vec::new();
            for (&(ring, _), fd) in rings.iter().zip(&fds[2..]) {
                let revents = fd.revents().unwrap_or(PollFlags::empty());
                samples |= revents.contains(PollFlags::POLLIN);
                if revents.contains(PollFlags::POLLHUP) {
                    hung.push(ring);
                }
            }
            drop(fds);
            drop(rings);
            for ring in hung {
                self.observer_hung(ring);
            }
            while let Ok(Some(_)) = self.wake.sigchld.read_signal() {}
            if woken {
                match self.wake.waker.take() {
                    0 => {}
                    request => return Waited::Woken(request),
                }
            }
            if samples {
                return Waited::Samples;
            }
        }
    }

    /// A stop asked for at an event that was observed, not stopped at: the
    /// process ran on; say how far.
    fn observed_hit(&mut self, seq: Seq) {
        self.stop_all();
        let later = self.model.last_seq().saturating_sub(seq);
        self.notices.push(Notice::ObservedLate { seq, later });
    }

    /// Bring every thread into a ptrace-stop (PTRACE_INTERRUPT), handling
    /// the stops that arrive meanwhile without resuming their threads.
    ///
    /// A thread resumed after its PTRACE_EVENT_EXIT reports nothing more but
    /// its death, which for a group leader waits until the other threads are
    /// gone: such threads are not waited for. A shutdown asked for meanwhile
    /// ends the wait (and stays asked for).
    pub fn stop_all(&mut self) {
        self.stop_all_taking_samples();
    }

    /// `stop_all`, returning the events its last drain of the perf rings
    /// recorded.
    fn stop_all_taking_samples(&mut self) -> Vec<Seq> {
        let waits_for = |t: &Thread| t.state != ThreadState::Stopped && !t.exiting;
        let running: Vec<Tid> = self
            .threads
            .iter()
            .filter(|(_, t)| waits_for(t))
            .map(|(&tid, _)| tid)
            .collect();
        for tid in running {
            // A thread that is gone reports its exit below.
            let _ = ptrace::interrupt(tid);
        }
        // Threads created while clones were not followed are stopped too,
        // once the ones that could create more are (until none is new).
        let mut adopting = self.may_have_unfollowed();
        loop {
            self.wait_until_stopped();
            if !(adopting && self.adopt_unfollowed()) {
                break;
            }
            adopting = true;
        }
        // Every thread is stopped: every sample of theirs is in the rings.
        let drained = self.take_samples(true);
        let drained = self.hold_unchecked(drained);
        if self.observer_lost_more() {
            self.reconcile();
        }
        if self.source.observer.is_some() {
            self.snapshot_stacks();
        }
        drained
    }

    /// Handle stops until every thread fdbg traces is stopped (or
    /// exiting), or a shutdown is asked for.
    fn wait_until_stopped(&mut self) {
        let waits_for = |t: &Thread| t.state != ThreadState::Stopped && !t.exiting;
        while self.threads.values().any(waits_for) {
            match self.next_status(None) {
                Waited::Status(tid, stop) => {
                    self.handle(tid, stop);
                    if let Some(hit) = self.probes.hit.take() {
                        if hit.owner == ProbeOwner::Loader {
                            self.resolve_pending();
                        } else {
                            self.probes.queued.push_back(hit);
                        }
                    }
                    self.complete_close_in_flight(tid);
                    self.take_queued_trap(tid);
                }
                Waited::Woken(WAKE_INTERRUPT) => self.interrupt_seen = true,
                Waited::Timeout | Waited::Samples => {}
                Waited::Woken(sig) => {
                    self.wake.waker.wake(sig);
                    break;
                }
                Waited::NoTracees => {
                    self.threads.clear();
                    break;
                }
            }
        }
    }

    /// A thread that stopped at the entry of close: the model has taken
    /// the fd out already, the kernel not yet. Let the close run to its
    /// exit, so that every stop leaves the model equal to the kernel's
    /// table. (A close that would block returns at once: the pending
    /// interrupt breaks its wait, and the fd is closed all the same.)
    fn complete_close_in_flight(&mut self, tid: Tid) {
        let in_close = self.threads.get(&tid).is_some_and(|t| {
            t.state == ThreadState::Stopped
                && t.entry
                    .is_some_and(|e| syscalls::flags(e.nr).contains(Flags::CLOSES_FD))
        });
        if in_close {
            self.resume_thread(tid);
        }
    }

    /// Resume every stopped thread.
    fn resume_all(&mut self) {
        // A Ctrl-C seen while stopping them: they stay stopped, and the
        // running command ends there (`pump` returns at once).
        if self.interrupt_seen {
            return;
        }
        self.follow_clones_as_needed();
        let tids: Vec<Tid> = self.threads.keys().copied().collect();
        for tid in tids {
            self.resume_thread(tid);
        }
    }

    /// Resume one stopped thread the way the mode and its state need.
    fn resume_thread(&mut self, tid: Tid) {
        let Some(thread) = self.threads.get_mut(&tid) else {
            return;
        };
        if thread.state != ThreadState::Stopped {
            return;
        }
        if thread.detach_at_stop {
            // A child process fdbg does not follow: let it go untraced,
            // without the session's ignored SIGTRAP.
            let (signal, announced) = (thread.signal, thread.announced);
            self.restore_child_sigtrap(tid);
            if !announced {
                self.threads.ended_unannounced.insert(tid);
            }
            self.threads.remove(&tid);
            let _ = ptrace::detach(tid, signal);
            return;
        }
        let (how, state) = if thread.group_stopped {
            (Resume::Listen, ThreadState::Running)
        } else {
            let how = self.source.mechanism.resume(thread.entry.is_some());
            (how, ThreadState::Running)
        };
        let signal = if how == Resume::Listen {
            0
        } else {
            std::mem::take(&mut thread.signal)
        };
        thread.state = state;
        // A thread that vanished will report its exit to waitpid.
        let _ = ptrace::resume(tid, how, signal);
    }

    /// Handle one wait status: update the model and the thread's state.
    /// The thread is left in its ptrace-stop (the caller resumes it or not).
    /// Returns the seq of an fd event it recorded.
    fn handle(&mut self, tid: Tid, stop: Stop) -> Option<Seq> {
        if stop.is_end() {
            self.thread_ended(
                tid,
                match stop {
                    Stop::Killed(sig) => ProcessEnd::Killed(sig),
                    Stop::Exited(code) => ProcessEnd::Exited(code),
                    _ => unreachable!(),
                },
            );
            return None;
        }
        self.costs.stops += 1;
        if !self.threads.contains_key(&tid) {
            // A new thread or child whose creator's event has not been seen
            // yet (ptrace does not order them). A child process starts
            // from its parent's table, as when the event comes first.
            let status = procfs::status(tid);
            let pid = status.as_ref().map_or(tid, |s| s.tgid);
            let parent = status
                .map(|s| s.ppid)
                .filter(|&ppid| pid == tid && self.model.is_tracked(ppid));
            self.add_thread(tid, pid, parent);
            if let Some(t) = self.threads.get_mut(&tid) {
                t.announced = false;
            }
        }
        if let Some(t) = self.threads.get_mut(&tid) {
            t.state = ThreadState::Stopped;
            t.last_stop = Some(stop);
            self.costs.by_pid.entry(t.pid).or_default().0 += 1;
        }
        if self.source.mechanism == Mechanism::PerfObserve
            && let Stop::Event { event, .. } = stop
            && event != ptrace::EVENT_STOP
        {
            // Fork, clone, exec and exit act on the fd table as it is:
            // the samples before them first. An exec or an exit leaves no
            // other thread of the process running.
            let last_of_process = event == ptrace::EVENT_EXIT
                && self.threads.get(&tid).is_some_and(|t| {
                    let pid = t.pid;
                    self.threads
                        .iter()
                        .all(|(&other, o)| other == tid || o.pid != pid || o.exiting)
                });
            let all = event == ptrace::EVENT_EXEC || last_of_process;
            if event == ptrace::EVENT_EXEC {
                // At its exec stop the thread's id is its process's.
                self.source.exec_pending = Some(tid);
            }
            self.take_samples(all);
            self.source.exec_pending = None;
        }
        match stop {
            Stop::Syscall
            | Stop::Event {
                event: ptrace::EVENT_SECCOMP,
                ..
            } => return self.syscall_stop(tid),
            Stop::Event {
                event: ptrace::EVENT_STOP,
                signal,
            } => {
                // With SEIZE, a group-stop reports its stop signal; an
                // interrupt or a new thread's first stop reports SIGTRAP.
                if let Some(t) = self.threads.get_mut(&tid) {
                    t.group_stopped = is_stop_signal(signal);
                }
            }
            Stop::Event {
                event: ptrace::EVENT_CLONE | ptrace::EVENT_FORK | ptrace::EVENT_VFORK,
                ..
            } => {
                if let Ok(child) = ptrace::event_message(tid) {
                    let child = child as Tid;
                    let parent_pid = self.threads[&tid].pid;
                    if let Some(known) = self.threads.get_mut(&child) {
                        known.announced = true;
                    } else if !self.threads.ended_unannounced.remove(&child) {
                        let child_pid = procfs::status(child).map(|s| s.tgid).unwrap_or(child);
                        self.add_thread(child, child_pid, Some(parent_pid));
                    }
                }
            }
            Stop::Event {
                event: ptrace::EVENT_EXEC,
                ..
            } => return self.exec_stop(tid),
            Stop::Event {
                event: ptrace::EVENT_EXIT,
                ..
            } => self.exit_stop(tid),
            Stop::Event { .. } => {}
            Stop::Signal(sig) => {
                // A perf SIGTRAP: an fd syscall's or a function
                // breakpoint's (fdbg's, never delivered), or the process's.
                if sig == libc::SIGTRAP
                    && let Ok(info) = ptrace::signal_info(tid)
                    && info.code == crate::perf::TRAP_PERF
                {
                    if let Some(event) = self.perf_stop(tid, info.perf_data) {
                        return event;
                    }
                    if info.perf_data == watch::WATCH_DATA {
                        self.source.watching.hit = true;
                        return None;
                    }
                    if let Some(hit) = self.function_trap(tid, info.perf_data) {
                        // One of a breakpoint deleted since it was queued
                        // is dropped.
                        if self.probes.breaks.iter().any(|b| b.owner == hit.owner) {
                            self.probes.hit = Some(hit);
                        }
                        return None;
                    }
                }
                if let Some(t) = self.threads.get_mut(&tid) {
                    t.signal = sig;
                }
            }
            Stop::Exited(_) | Stop::Killed(_) => unreachable!("handled above"),
        }
        None
    }

    fn add_thread(&mut self, tid: Tid, pid: Pid, parent: Option<Pid>) {
        let known_pid = self.threads.values().any(|t| t.pid == pid) || self.model.is_tracked(pid);
        self.model.set_clock(monotonic_now());
        let mut thread = Thread::new(pid, ThreadState::Running);
        if !known_pid {
            if self.target.mode == Mode::Attach && !self.target.follow_forks {
                // clone() without CLONE_THREAD is auto-attached even without
                // fork tracing: such a child is let go at its first stop.
                thread.detach_at_stop = true;
            } else if let Some(parent) = parent {
                // A new child process starts with a copy of its parent's table.
                self.model.fork(parent, pid);
                self.perf_forked(parent, pid);
                self.preload_unwinder(pid, self.source.observer.is_some());
            } else {
                let fds = procfs::list_fds(pid, None).unwrap_or_default();
                self.model.add_process(pid, fds);
            }
        }
        // New threads start in a stop that is reported to waitpid.
        self.threads.insert(tid, thread);
    }

    fn syscall_stop(&mut self, tid: Tid) -> Option<Seq> {
        match ptrace::syscall_info(tid) {
            Ok(SyscallStop::Entry { nr, args }) => {
                self.costs.syscalls += 1;
                let thread = self.threads.get_mut(&tid)?;
                self.costs.by_pid.entry(thread.pid).or_default().1 += 1;
                thread.masking =
                    self.source.waits_for_unblock && nr == libc::SYS_rt_sigprocmask as u64;
                if syscalls::is_fd_syscall(nr) {
                    thread.entry = Some(SyscallEntry { nr, args });
                    if syscalls::flags(nr).contains(Flags::CLOSES_FD) {
                        let pid = thread.pid;
                        self.model.closing(pid, tid, args[0] as i32);
                    }
                }
                None
            }
            Ok(SyscallStop::Exit { result }) => {
                let thread = self.threads.get_mut(&tid)?;
                if std::mem::take(&mut thread.masking) && self.source.waits_for_unblock {
                    self.source.unblocked = !perf_source::blocks_sigtrap(tid);
                }
                let entry = self.threads.get_mut(&tid)?.entry.take()?;
                if syscalls::is_restart(result) {
                    return None;
                }
                self.complete(tid, &entry, result, None)
            }
            _ => None,
        }
    }

    /// A completed fd syscall: decode, capture the stack, record. `regs`:
    /// the thread's registers where the stop already read them.
    fn complete(
        &mut self,
        tid: Tid,
        entry: &SyscallEntry,
        result: i64,
        regs: Option<arch::StackRegs>,
    ) -> Option<Seq> {
        let pid = self.threads.get(&tid)?.pid;
        let memory = ProcessMemory { pid: tid };
        let decoded = syscalls::decode(entry, result, &memory)?;
        let stack = if decoded.effects.is_empty() {
            None
        } else {
            self.capture_stack(tid, pid, regs)
        };
        Some(self.record_decoded(pid, tid, decoded, stack, monotonic_now()))
    }

    /// Record a decoded fd syscall of thread `tid` in process `pid` that
    /// returned at `time`.
    fn record_decoded(
        &mut self,
        pid: Pid,
        tid: Tid,
        mut decoded: syscalls::Decoded,
        stack: Option<StackId>,
        time: crate::fdtable::Nanos,
    ) -> Seq {
        // Kinds the syscall cannot tell (received fds, pidfd_getfd): ask /proc.
        for effect in &mut decoded.effects {
            if let Effect::Open {
                fd, kind, target, ..
            } = effect
                && *kind == FdKind::Other
                && let Some(link) = procfs::fd_target(tid, *fd)
            {
                *kind = FdKind::from_link(&link, false);
                *target = Some(link);
            }
        }
        self.model.set_clock(time);
        let seq = self.model.record(pid, tid, &mut decoded, stack);
        self.source.spare.keep(decoded);
        seq
    }

    fn capture_stack(
        &mut self,
        tid: Tid,
        pid: Pid,
        regs: Option<arch::StackRegs>,
    ) -> Option<StackId> {
        let regs = match regs {
            Some(regs) => regs,
            None => arch::StackRegs::from_user_regs(&ptrace::registers(tid).ok()?),
        };
        let bytes = copy_stack(tid, regs.sp, STACK_COPY);
        Some(self.stack_from_copy(pid, tid, &regs, &bytes).0)
    }

    /// Unwind a copy of thread `tid`'s stack taken at `regs.sp`; words
    /// above the copy are read from the thread now.
    /// Also says how many bytes above sp the walk needed.
    fn stack_from_copy(
        &mut self,
        pid: Pid,
        tid: Tid,
        regs: &arch::StackRegs,
        bytes: &[u8],
    ) -> (StackId, usize) {
        let unwinder = self
            .addresses
            .unwinders
            .entry(pid)
            .or_insert_with(|| Unwinder::new(pid));
        let reads = unwinder.maps_reads();
        // Above the copy: the thread's memory now, unless the process
        // exec'd since (then, and when it cannot be read, the stack as it
        // was at the last stop, whose outer frames are likely the same).
        let snapshot = self.source.stack_snapshots.get(&tid);
        let exec_since = self.source.exec_pending == Some(pid);
        let word_at = |bytes: &[u8], start: u64, addr: u64| -> Option<u64> {
            let offset = usize::try_from(addr.checked_sub(start)?).ok()?;
            Some(u64::from_le_bytes(
                bytes.get(offset..offset.checked_add(8)?)?.try_into().ok()?,
            ))
        };
        let beyond_copy = |addr: u64| -> Option<u64> {
            let from_snapshot = || snapshot.and_then(|(sp, bytes)| word_at(bytes, *sp, addr));
            if exec_since {
                return from_snapshot();
            }
            ProcessMemory { pid: tid }
                .read(addr, 8)
                .and_then(|b| word_at(&b, addr, addr))
                .or_else(from_snapshot)
        };
        let generation = self.addresses.symbolizer.generation(pid);
        let walk = unwinder.walk(regs, bytes, &beyond_copy);
        let needed = walk.needed;
        let id = match walk.interned {
            Some((interned_in, id)) if interned_in == generation => id,
            _ => {
                let stack = Stack {
                    generation,
                    ..walk.stack.clone()
                };
                let id = self.model.stacks.intern(stack);
                unwinder.remember_interned(generation, id);
                id
            }
        };
        if unwinder.maps_reads() != reads {
            // New mappings: keep them for symbolizing later, even if the
            // object is unmapped (dlclose) by then.
            self.addresses
                .symbolizer
                .note_mappings(pid, &unwinder.mappings());
        }
        (id, needed)
    }

    fn exec_stop(&mut self, tid: Tid) -> Option<Seq> {
        // A non-leader that execs takes over the leader's tid.
        if let Ok(former) = ptrace::event_message(tid) {
            let former = former as Tid;
            if former != tid
                && let Some(old) = self.threads.remove(&former)
            {
                self.threads.insert(tid, old);
            }
        }
        let pid = self.threads.get(&tid)?.pid;
        // Every other thread of the process is gone.
        self.threads.retain(|&t, th| th.pid != pid || t == tid);
        if let Some(t) = self.threads.get_mut(&tid) {
            // The record may be the exec'ing thread's own, taken over from
            // its former tid: it is in this exec stop now.
            t.state = ThreadState::Stopped;
            t.entry = None;
            t.exiting = false;
            t.group_stopped = false;
        }
        if let Some(u) = self.addresses.unwinders.get_mut(&pid) {
            u.reset();
        }
        self.addresses.symbolizer.exec(pid);
        self.rearm_after_exec(pid, tid);
        self.rewatch_after_exec(tid);
        self.preload_unwinder(pid, self.source.observer.is_some());
        self.functions_after_exec();
        self.model.set_clock(monotonic_now());
        Some(self.model.exec(pid, tid))
    }

    /// PTRACE_EVENT_EXIT: when the last thread of a process is leaving, its
    /// fd table still exists: take the last look.
    fn exit_stop(&mut self, tid: Tid) {
        let Some(pid) = self.threads.get(&tid).map(|t| t.pid) else {
            return;
        };
        if let Some(t) = self.threads.get_mut(&tid) {
            t.exiting = true;
        }
        let last = self
            .threads
            .values()
            .filter(|t| t.pid == pid)
            .all(|t| t.exiting);
        if last {
            self.addresses.symbolizer.remember(pid);
            if let Ok(fds) = procfs::list_fds(pid, Some(tid)) {
                self.model.reconcile(pid, &fds);
                let sockets = net::socket_infos(pid, &fds);
                for (&fd, info) in &sockets {
                    self.model
                        .set_target(pid, fd, FdKind::Socket, net::target_text(info));
                }
                self.ends.exit_sockets.insert(pid, sockets);
            }
        }
    }

    fn thread_ended(&mut self, tid: Tid, end: ProcessEnd) {
        self.source.stack_snapshots.remove(&tid);
        let Some(thread) = self.threads.remove(&tid) else {
            return;
        };
        if !thread.announced {
            self.threads.ended_unannounced.insert(tid);
        }
        if tid == thread.pid {
            // The leader's status comes last: the process is gone.
            self.threads.retain(|_, t| t.pid != thread.pid);
            self.addresses.unwinders.remove(&thread.pid);
            self.perf_process_ended(thread.pid);
            self.model.exited(thread.pid, end);
            if thread.pid == self.target.main_pid {
                self.ends.main_end = Some(end);
            }
        }
    }

    /// Check the model against /proc for every live traced process.
    /// Returns what /proc listed, by process, for the caller to reuse.
    pub fn reconcile(&mut self) -> std::collections::HashMap<Pid, Vec<crate::fdtable::ProcFd>> {
        let pids: BTreeSet<Pid> = self.threads.values().map(|t| t.pid).collect();
        let mut listed = std::collections::HashMap::new();
        for pid in pids {
            if let Ok(fds) = procfs::list_fds(pid, None) {
                self.model.reconcile(pid, &fds);
                listed.insert(pid, fds);
            }
        }
        listed
    }

    /// The kernel's count of fd syscalls in the traced processes, where
    /// perf events are the source (else `None`).
    pub fn kernel_fd_syscalls(&self) -> Option<u64> {
        let traps = self
            .source
            .traps
            .as_ref()
            .map(|source| source.kernel_count());
        let samples = self.source.observer.as_ref().map(|o| o.coverage().0);
        match (traps, samples) {
            (None, None) => None,
            (t, s) => Some(t.unwrap_or(0) + s.unwrap_or(0)),
        }
    }

    /// The fd syscalls the kernel counted while observing, and the samples
    /// of them fdbg decoded.
    pub fn observed(&self) -> Option<ObservedFigures> {
        self.source.observer.as_ref().map(|o| o.figures())
    }

    /// Fd syscalls the kernel counted that fdbg never saw (0 where the
    /// kernel does not count).
    pub fn missed(&self) -> u64 {
        let traps = self.source.traps.as_ref().map_or(0, |source| {
            source.kernel_count().saturating_sub(source.traps_seen)
        });
        let samples = self.source.observer.as_ref().map_or(0, |o| {
            let (kernel, sampled) = o.coverage();
            kernel.saturating_sub(sampled)
        });
        traps + samples
    }

    /// Let every thread go, untraced and running (attach), delivering any
    /// signal it was stopped for. The model stays for queries.
    pub fn detach(&mut self) {
        // Function breakpoints go first (the kernel restores the code):
        // none may send a SIGTRAP once the default action is back.
        self.probes.breaks.clear();
        self.probes.pending.clear();
        self.probes.queued.clear();
        if self.threads.is_empty() {
            self.ends.detached = true;
            return;
        }
        self.stop_all();
        // Children not followed, caught at their first stop: let go below,
        // without the session's ignored SIGTRAP.
        let unfollowed: Vec<Tid> = self
            .threads
            .iter()
            .filter(|(_, t)| t.detach_at_stop)
            .map(|(&tid, _)| tid)
            .collect();
        for child in unfollowed {
            self.restore_child_sigtrap(child);
        }
        let _ = self.set_watch(None);
        self.disarm_perf();
        self.close_observer();
        // stop_all may have seen new threads; they are stopped too. Threads
        // on their way out (resumed after PTRACE_EVENT_EXIT) cannot be
        // detached: they stay ours until reaped, and their process's parent
        // cannot reap it before that, so they are reaped in the background.
        let mut exiting = Vec::new();
        for (tid, thread) in self.threads.drain() {
            if ptrace::detach(tid, thread.signal).is_err() && thread.exiting {
                exiting.push(tid);
            }
        }
        ptrace::reap_in_background(exiting);
        self.ends.detached = true;
    }

    /// Kill every process fdbg started (run), by PID, and reap them.
    pub fn kill(&mut self) {
        self.probes.breaks.clear();
        self.probes.pending.clear();
        let pids: BTreeSet<Pid> = self.threads.values().map(|t| t.pid).collect();
        for pid in pids {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
        }
        while !self.threads.is_empty() {
            match ptrace::wait_any(false) {
                Ok(Some((tid, stop))) => {
                    if stop.is_end() {
                        self.handle(tid, stop);
                    } else {
                        // A stop on the way out: let it go to its death.
                        let _ = ptrace::resume(tid, Resume::Cont, 0);
                    }
                }
                _ => break,
            }
        }
        self.threads.clear();
    }

    /// End tracing as the mode wants: detach an attached process, kill a
    /// started one.
    pub fn finish(&mut self) {
        match self.target.mode {
            Mode::Attach => self.detach(),
            Mode::Run => self.kill(),
        }
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        self.finish();
    }
}

fn is_stop_signal(sig: i32) -> bool {
    matches!(
        sig,
        libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU
    )
}
