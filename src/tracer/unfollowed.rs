//! Threads that come and go while fdbg only observes, without a ptrace
//! stop. Following a new thread costs three stops (its creator's clone
//! event, its own first stop, its exit), which halved the throughput of a
//! server that makes a thread per session; observing needs none of them,
//! since the samplers follow new threads by themselves (the BPF program
//! chooses by process, perf events are inherited).
//!
//! So while the event source is the samplers alone (no SIGTRAP of fdbg's
//! can reach a thread: no function breakpoint, no `break fd` watch), the
//! traced threads are resumed without PTRACE_O_TRACECLONE, and the threads
//! they create run untraced. Whenever every thread must stop (a
//! breakpoint's stop, Ctrl-C, the end of a `continue`, detach), the
//! threads that exist then are seized and stopped like at attach, and
//! resumed with clones followed again where something needs them.
//! With --follow-forks clones stay followed (a thread fdbg does not trace
//! would fork children it never sees), and fork events always stop.

use super::{Mechanism, Mode, ThreadState, Tracer};
use crate::fdtable::Pid;
use crate::procfs;
use crate::ptrace;

impl Tracer {
    /// Whether threads created from now on may run untraced: nothing but
    /// the samplers needs them.
    fn may_leave_clones(&self) -> bool {
        self.target.mode == Mode::Attach
            && !self.target.follow_forks
            && self.source.mechanism == Mechanism::PerfObserve
            && self.probes.breaks.is_empty()
            && self.source.watching.watch.is_none()
    }

    /// Before the threads are resumed: set each stopped thread's clone
    /// following to what the event source needs now.
    pub(super) fn follow_clones_as_needed(&mut self) {
        let follow = !self.may_leave_clones();
        let attach_options = ptrace::options(true, false, false);
        let options = if follow {
            attach_options
        } else {
            attach_options & !libc::PTRACE_O_TRACECLONE
        };
        for (&tid, thread) in self.threads.iter_mut() {
            if thread.state == ThreadState::Stopped
                && thread.follows_clones != follow
                && ptrace::set_options(tid, options).is_ok()
            {
                thread.follows_clones = follow;
            }
        }
    }

    /// Whether some traced thread ran without following its clones: its
    /// process may have threads fdbg does not trace.
    pub(super) fn may_have_unfollowed(&self) -> bool {
        self.threads.values().any(|t| !t.follows_clones)
    }

    /// Seize the threads of the traced processes that fdbg does not trace
    /// (created while their creators did not follow clones), as attach
    /// does, and ask each to stop; they are waited for like the others.
    /// Returns whether there were any.
    pub(super) fn adopt_unfollowed(&mut self) -> bool {
        let pids: std::collections::BTreeSet<Pid> = self
            .threads
            .values()
            .filter(|t| !t.detach_at_stop)
            .map(|t| t.pid)
            .collect();
        let known: std::collections::BTreeSet<_> = self.threads.keys().copied().collect();
        for pid in pids {
            // An error (the process gone meanwhile) leaves the threads
            // seized so far, which are stopped like the rest.
            if let Some(status) = procfs::status(pid) {
                let _ = self.seize_process(pid, ptrace::options(true, false, false), &status);
            }
        }
        let adopted: Vec<_> = self
            .threads
            .keys()
            .copied()
            .filter(|tid| !known.contains(tid))
            .collect();
        for &tid in &adopted {
            let _ = ptrace::interrupt(tid);
        }
        !adopted.is_empty()
    }
}
