//! `break fd N` while observing: the kernel stops only the fd syscalls
//! that can create or close number N, and fdbg checks the observed events
//! at those stops.
//!
//! Three SIGTRAP events per thread (inherited by the threads it creates),
//! each filtered in the kernel: the exit of an fd syscall that returned N
//! (or of one that returns its fds in memory: pipe, pipe2, socketpair,
//! recvmsg, recvmmsg), the entry of `close(N)` and the entry of a
//! `close_range` that covers N (a SIGTRAP raised at an entry is delivered
//! on the way back to user space, after the call); which syscalls those
//! are, the syscall table's flags say. At such a stop the thread's sample
//! is in the ring: every thread is stopped, the rings drained, and the
//! events since the last check are given to the breakpoints in order. The
//! events in between are observed and checked only there: none of them can
//! be N's.

use super::Tracer;
use crate::fdtable::Seq;
use crate::perf::{self, PerfError, SyscallTrap};
use crate::ptrace::Tid;
use crate::syscalls::{self, Flags};

/// `si_perf_data` of the watch events' SIGTRAPs.
pub(super) const WATCH_DATA: u64 = 0x6664_6267_0000_0002;

/// The armed watch on one fd number.
pub(super) struct FdWatch {
    pub fd: i32,
    /// (tracepoint id, filter): what each thread's events are.
    events: Vec<(u64, String)>,
    /// Kept open: closing them disarms.
    traps: Vec<SyscallTrap>,
}

/// `break fd N` while observing: the kernel's stops for N, and the
/// observed events they are to check.
#[derive(Default)]
pub(super) struct Watching {
    pub(super) watch: Option<FdWatch>,
    /// Observed events no watch stop has checked yet.
    pub(super) unchecked: Vec<Seq>,
    /// A watch stop was seen: the events since the last check are due.
    pub(super) hit: bool,
}

/// The tracepoints and filters that stop the syscalls that can create or
/// close `fd`: the exit of one that returned it or returns its fds in
/// memory, the entry of one that closes it (the tracepoint's fields are
/// the syscall's parameters: close's `fd`, close_range's `fd` and
/// `max_fd`).
fn watch_events(fd: i32) -> Result<Vec<(u64, String)>, PerfError> {
    let tracefs = perf::tracefs()?;
    let exit = perf::tracepoint_id(&tracefs, "raw_syscalls", "sys_exit")?;
    let returning: Vec<u64> = syscalls::traced_syscalls().to_vec();
    let in_memory: Vec<u64> = syscalls::syscalls_with(Flags::FDS_IN_MEMORY)
        .map(|(nr, _)| nr)
        .collect();
    let mut events = vec![(
        exit,
        format!(
            "(ret == {fd} && ({})) || {}",
            perf::syscall_filter(&returning),
            perf::syscall_filter(&in_memory)
        ),
    )];
    let closing = [
        (Flags::CLOSES_FD, format!("fd == {fd}")),
        (Flags::CLOSES_RANGE, format!("fd <= {fd} && max_fd >= {fd}")),
    ];
    for (flags, filter) in closing {
        for (_, name) in syscalls::syscalls_with(flags) {
            let entry = perf::tracepoint_id(&tracefs, "syscalls", &format!("sys_enter_{name}"))?;
            events.push((entry, filter.clone()));
        }
    }
    Ok(events)
}

impl Tracer {
    /// Watch fd number `fd` in every thread (every thread stopped), or
    /// nothing with `None`. Errors say why the kernel refused.
    pub(super) fn set_watch(&mut self, fd: Option<i32>) -> Result<(), PerfError> {
        if self.source.watching.watch.as_ref().map(|w| w.fd) == fd {
            return Ok(());
        }
        self.source.watching.watch = None;
        self.source.watching.unchecked.clear();
        let Some(fd) = fd else {
            return Ok(());
        };
        let events = watch_events(fd)?;
        let mut watch = FdWatch {
            fd,
            events,
            traps: Vec::new(),
        };
        for (tid, _) in self.threads() {
            self.open_watch_traps(&mut watch, tid)?;
        }
        self.source.watching.watch = Some(watch);
        Ok(())
    }

    fn open_watch_traps(&self, watch: &mut FdWatch, tid: Tid) -> Result<(), PerfError> {
        for (id, filter) in &watch.events {
            match SyscallTrap::open(tid, *id, filter, self.target.follow_forks, WATCH_DATA) {
                Ok(trap) => watch.traps.push(trap),
                // A thread that ended meanwhile needs none.
                Err(PerfError::Open { source, .. })
                    if source.raw_os_error() == Some(libc::ESRCH) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// An exec removed the program's events: watch in the new one.
    pub(super) fn rewatch_after_exec(&mut self, tid: Tid) {
        let Some(mut watch) = self.source.watching.watch.take() else {
            return;
        };
        if let Err(e) = self.open_watch_traps(&mut watch, tid) {
            self.notices.push(super::Notice::NotRewatched {
                fd: watch.fd,
                why: e,
            });
        }
        self.source.watching.watch = Some(watch);
    }

    /// Give the events no watch stop has checked to `on_event`, in
    /// order, up to the first it stops at; those after it wait for the
    /// next check (the next `continue` begins with it).
    pub(super) fn check_unchecked(
        &mut self,
        on_event: &mut dyn FnMut(
            &crate::fdtable::Model,
            &mut crate::symbolize::Symbolizer,
            Seq,
        ) -> bool,
    ) -> Option<Seq> {
        let mut events = std::mem::take(&mut self.source.watching.unchecked).into_iter();
        let hit = events.find(|&seq| on_event(&self.model, &mut self.addresses.symbolizer, seq));
        self.source.watching.unchecked = events.collect();
        self.source.watching.hit = hit.is_some() && !self.source.watching.unchecked.is_empty();
        hit
    }

    /// Observed events a watch stop has not checked yet (none without a
    /// watch: the caller checks them as they come).
    pub(super) fn hold_unchecked(&mut self, recorded: Vec<Seq>) -> Vec<Seq> {
        if self.source.watching.watch.is_some() {
            self.source.watching.unchecked.extend(recorded);
            Vec::new()
        } else {
            recorded
        }
    }
}
