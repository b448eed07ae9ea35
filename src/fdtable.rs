//! The fd lifetime model: one fd table per process, fed decoded events,
//! answering `fds`, `leaks`, `diff` and `history`.
//!
//! Pure: no I/O, no ptrace. The tracer feeds it (`record`, `exec`, `fork`,
//! `exited`, `reconcile` with what /proc said) and the REPL asks it. Semantics
//! are SPEC §4.
//! (SKELETON: signatures fixed; bodies to be written.)

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::stacks::{StackId, StackTable};
use crate::syscalls::{Decoded, Effect};

/// A process id (thread-group id): the key of an fd table.
pub type Pid = i32;
/// Event sequence number, from 1, in the order fdbg saw the events.
pub type Seq = u64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FdKind {
    Socket,
    File,
    Dir,
    Pipe,
    Eventfd,
    Epoll,
    Timerfd,
    Signalfd,
    Inotify,
    Fanotify,
    Memfd,
    Pidfd,
    IoUring,
    Perf,
    Other,
}

/// An fd as /proc/PID/fd and /proc/PID/fdinfo show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcFd {
    pub fd: i32,
    pub kind: FdKind,
    /// The symlink target: a path, `socket:[1234]`, `anon_inode:[eventfd]`...
    pub target: String,
    pub cloexec: bool,
}

/// Where an open fd came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Open when fdbg attached (read from /proc).
    BeforeAttach,
    /// Created by the event with this sequence number.
    Created(Seq),
    /// Found in /proc but not in the model (e.g. made through io_uring);
    /// adopted when the model was checked after event `Seq`.
    Untracked(Seq),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenFd {
    pub fd: i32,
    pub kind: FdKind,
    pub target: Option<String>,
    pub cloexec: bool,
    pub origin: Origin,
    /// The creating stack (for Created, and inherited by dup'ed fds from
    /// the dup call's own stack).
    pub stack: Option<StackId>,
}

/// How a traced process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ProcessEnd {
    Exited(i32),
    Killed(i32),
}

/// One recorded fd event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub seq: Seq,
    pub pid: Pid,
    pub tid: Pid,
    pub syscall: &'static str,
    pub result: i64,
    pub kind: FdKind,
    /// Fds this event created.
    pub created: Box<[i32]>,
    /// Fds this event closed (close, close_range, the implicit close of
    /// dup2 onto an open fd, the close-on-exec sweep of execve).
    pub closed: Box<[i32]>,
    /// Set for a close that failed with EBADF.
    pub bad_close: Option<i32>,
    pub stack: Option<StackId>,
    /// The process's open-fd count after this event.
    pub open_fds: u32,
    args: u32,
}

pub struct Process {
    pub pid: Pid,
    pub end: Option<ProcessEnd>,
}

/// One group of `leaks`: fds still open that share a creating stack and syscall.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeakSite {
    pub count: usize,
    pub syscall: &'static str,
    pub kind: FdKind,
    pub fds: Vec<i32>,
    pub first_seq: Seq,
    pub last_seq: Seq,
    pub stack: Option<StackId>,
}

/// What `reconcile` changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    pub adopted: Vec<i32>,
    pub dropped: Vec<i32>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub events_by_syscall: BTreeMap<&'static str, u64>,
    pub events_by_kind: BTreeMap<FdKind, u64>,
    pub bad_closes: u64,
    pub adopted: u64,
    pub dropped: u64,
}

pub struct Model {
    pub stacks: StackTable,
}
