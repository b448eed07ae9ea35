//! The traced threads: each one's state as fdbg knows it (stopped or
//! running, the syscall it is in, the signal it is to get), and the threads
//! that ended before their creator's clone event was seen.

use std::collections::BTreeSet;

// A fast hasher for the table looked up at every event.
use rustc_hash::FxHashMap as HashMap;

use crate::fdtable::Pid;
use crate::ptrace::{Stop, Tid};
use crate::syscalls::SyscallEntry;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ThreadState {
    /// Running (or blocked in the kernel) as far as fdbg knows; or, with
    /// `group_stopped`, resumed with PTRACE_LISTEN: stopped for the process
    /// (job control), not for fdbg.
    Running,
    /// In a ptrace-stop, waiting for fdbg to resume it.
    Stopped,
}

pub(super) struct Thread {
    pub(super) pid: Pid,
    pub(super) state: ThreadState,
    /// An fd syscall seen at entry, waiting for its exit.
    pub(super) entry: Option<SyscallEntry>,
    /// The signal to deliver when the thread is resumed.
    pub(super) signal: i32,
    /// PTRACE_EVENT_EXIT seen: the thread is on its way out.
    pub(super) exiting: bool,
    /// In a group-stop (job control): resumed with PTRACE_LISTEN so that
    /// it stays stopped for the process.
    pub(super) group_stopped: bool,
    /// A child process auto-attached through clone that fdbg does not
    /// follow: detached at its first stop.
    pub(super) detach_at_stop: bool,
    /// Known from its creator's clone/fork event, or from the attach. False
    /// for a thread first seen through its own stop: ptrace does not order
    /// a new thread's stops after its creator's event.
    pub(super) announced: bool,
    /// The stop it is in (or was last in).
    pub(super) last_stop: Option<Stop>,
    /// In an rt_sigprocmask that may unblock SIGTRAP, while perf waits
    /// for that.
    pub(super) masking: bool,
    /// Its clones are followed (PTRACE_O_TRACECLONE): see `unfollowed`.
    pub(super) follows_clones: bool,
}

impl Thread {
    pub(super) fn new(pid: Pid, state: ThreadState) -> Thread {
        Thread {
            pid,
            state,
            entry: None,
            signal: 0,
            exiting: false,
            group_stopped: false,
            detach_at_stop: false,
            announced: true,
            last_stop: None,
            masking: false,
            follows_clones: true,
        }
    }
}

/// Every traced thread by tid (the table derefs to its map).
#[derive(Default)]
pub(super) struct Threads {
    table: HashMap<Tid, Thread>,
    /// Threads that ended, or children that were let go, before their
    /// creator's clone event was seen: the event, when it comes, must not
    /// bring them back as running threads (a wait for their stop would
    /// never end).
    pub(super) ended_unannounced: BTreeSet<Tid>,
}

impl std::ops::Deref for Threads {
    type Target = HashMap<Tid, Thread>;
    fn deref(&self) -> &Self::Target {
        &self.table
    }
}

impl std::ops::DerefMut for Threads {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.table
    }
}
