//! The fd lifetime model: one fd table per process, fed decoded events,
//! answering `fds`, `leaks`, `diff` and `history`.
//!
//! It exists so that every question about fds (which are open, who created
//! them, what happened to fd 7) is answered from one place with one set of
//! rules (a failed syscall creates nothing, a close failing with EBADF is a
//! bad close, EINTR still closes, execve closes the close-on-exec fds, exit
//! closes nothing), and can be tested without a process. The tracer feeds it
//! (`record`, `exec`, `fork`, `exited`, `reconcile` with what /proc said) and
//! the REPL asks it.
//!
//! It must not do I/O, call ptrace, print, or symbolize: it holds stack ids,
//! never names, and it trusts the `Effect`s it is given (the syscall layer
//! decides what a syscall did).
//!
//! Memory follows what is open, not what happened: the live tables, a
//! total per creating site, interned stacks, the open-fd count over time
//! at a bounded resolution, and a bounded window of the latest events
//! (`window`). Every answer but `history` and the event lines comes from
//! the first four and is exact however long the session; `diff` compares
//! with a `Snapshot` taken at the mark. Time is the caller's (`set_clock`,
//! CLOCK_MONOTONIC nanoseconds): the model reads no clock.

#![forbid(unsafe_code)]

mod groups;
mod model;
mod queries;
mod series;
mod table;
#[cfg(test)]
mod tests;
mod window;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::stacks::{StackId, StackTable};

pub use crate::vocab::{FdKind, Pid, ProcFd};
pub use model::BAD_CLOSES_KEPT;
pub use queries::{BEFORE_ATTACH, Diff, History, INHERITED, Memory, Snapshot, UNTRACKED};
pub use window::DEFAULT_KEPT;

/// Event sequence number, from 1, in the order fdbg saw the events.
pub type Seq = u64;

/// A moment: CLOCK_MONOTONIC, in nanoseconds.
pub type Nanos = u64;

/// Where an open fd came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Open when tracing began (read from /proc): at attach, or, for a
    /// program fdbg started, inherited from fdbg's parent. Reports name it
    /// by the session's mode.
    BeforeAttach,
    /// Created by the event with this sequence number.
    Created(Seq),
    /// Found in /proc but not in the model (e.g. made through io_uring);
    /// adopted when the model was checked after event `Seq`.
    Untracked(Seq),
}

impl Origin {
    /// Whether an fd of this origin came into being after event `since`.
    ///
    /// An fd adopted as `Untracked(s)` appeared somewhere after event `s`, so
    /// it counts as after `since` when `s >= since`: for `since` 0 (attach)
    /// it was not there when /proc was read at attach; for a mark taken after
    /// the same event its order against the mark is unknown, and showing it
    /// is better than hiding it.
    pub fn is_after(self, since: Seq) -> bool {
        match self {
            Origin::BeforeAttach => false,
            Origin::Created(seq) => seq > since,
            Origin::Untracked(seq) => seq >= since,
        }
    }
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
    /// The creating syscall (for Created; empty otherwise).
    pub syscall: &'static str,
    /// The creating thread (for Created; 0 otherwise).
    pub tid: Pid,
    /// When it was created, or adopted, or when tracing began.
    pub created_at: Nanos,
    /// What is known of the fd beyond its target, oldest first: where a
    /// socket was bound, connected or accepted from (`Effect::Annotate`).
    /// The latest note of each verb (first word) is kept, so a socket that
    /// reconnects shows where it is connected now; at most `NOTES_MAX`.
    pub notes: Vec<String>,
}

/// Most notes kept on one open fd.
pub const NOTES_MAX: usize = 4;

impl OpenFd {
    /// Add a note, replacing an older one of the same verb (`connect ...`
    /// replaces `connect ... failed: ...`), dropping the oldest past
    /// `NOTES_MAX`.
    pub fn annotate(&mut self, note: String) {
        fn verb(note: &str) -> &str {
            note.split(' ').next().unwrap_or_default()
        }
        let new_verb = verb(&note);
        self.notes.retain(|old| verb(old) != new_verb);
        if self.notes.len() >= NOTES_MAX {
            self.notes.remove(0);
        }
        self.notes.push(note);
    }
}

/// How a traced process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ProcessEnd {
    Exited(i32),
    Killed(i32),
}

/// One recorded fd event, as the window gives it out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub seq: Seq,
    pub time: Nanos,
    pub pid: Pid,
    pub tid: Pid,
    pub syscall: &'static str,
    pub result: i64,
    pub kind: FdKind,
    /// Fds this event created.
    pub created: Vec<i32>,
    /// Fds this event closed (close, close_range, the implicit close of
    /// dup2 onto an open fd, the close-on-exec sweep of execve).
    pub closed: Vec<i32>,
    /// Set for a close that failed with EBADF.
    pub bad_close: Option<i32>,
    pub stack: Option<StackId>,
    /// The process's open-fd count after this event.
    pub open_fds: u32,
    /// The arguments as the syscall layer printed them.
    pub args: Box<str>,
    /// The fd an annotation of this event is about (bind, connect, listen,
    /// accept's peer); the note itself is in the arguments and on the fd.
    pub annotated: Option<i32>,
}

impl Event {
    /// Whether this event created, closed or bad-closed fd number `fd`.
    pub fn creates_or_closes(&self, fd: i32) -> bool {
        self.created.contains(&fd) || self.closed.contains(&fd) || self.bad_close == Some(fd)
    }
}

/// A traced process as the model knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Process {
    pub pid: Pid,
    /// Set once the process is gone; its fds stay listed as open at exit.
    pub end: Option<ProcessEnd>,
    /// The process it was forked from, when fdbg saw the fork.
    pub parent: Option<Pid>,
    /// `last_seq` when tracking began: this process's events all come after.
    pub start_seq: Seq,
    /// This process's own counters (the model's are over all processes).
    pub counters: Counters,
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
    /// When the oldest and the newest of these fds were created.
    pub oldest: Nanos,
    pub newest: Nanos,
    pub stack: Option<StackId>,
    /// What the site did over the whole session, these fds and others.
    pub totals: SiteTotals,
}

/// One creating site's totals in one process (a site: creating stack and
/// syscall), kept for the whole session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SiteTotals {
    /// Fds the site created.
    pub created: u64,
    /// Of those, fds gone since: closed, or dropped by a check with /proc.
    pub closed: u64,
    pub first: Nanos,
    pub last: Nanos,
}

/// Who closed some of a site's fds: the closing stack and syscall
/// (`close`, `close_range`, `dup2`, `execve`), or fdbg itself
/// (`CLOSED_BY_FDBG`), or nobody seen (`CLOSED_UNSEEN`: the fd was gone
/// from /proc, or the kernel said it was not open).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Closer {
    pub stack: Option<StackId>,
    pub syscall: &'static str,
}

/// The closer of the fds fdbg closed in the process (`reclaim`).
pub const CLOSED_BY_FDBG: &str = "fdbg";

/// The closer of fds that went without a close fdbg saw.
pub const CLOSED_UNSEEN: &str = "unseen";

/// A close that failed with EBADF, and the close that freed that number
/// before it (none when the number was never closed since tracking began).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadClose {
    pub event: Event,
    pub first_close: Option<LastClose>,
}

/// The latest successful close of one fd number in one process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LastClose {
    pub seq: Seq,
    pub stack: Option<StackId>,
    /// Its closer's syscall (`close`, ..., or `CLOSED_BY_FDBG`).
    pub syscall: &'static str,
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

/// Every traced process's fd table and site totals, the latest events,
/// and the stacks they name.
///
/// Invariants: seqs are given out from 1 without gaps; an fd in a table
/// with `Origin::Created(s)` was created by event `s` of that process (or
/// of an ancestor it was forked from); per site, created − closed fds are
/// in the table, closing or displaced.
pub struct Model {
    pub stacks: StackTable,
    processes: BTreeMap<Pid, model::ProcessState>,
    window: window::Window,
    counters: Counters,
    /// The time the next events are stamped with.
    clock: Nanos,
    /// Reused for each event's created and closed fds.
    scratch: (Vec<i32>, Vec<i32>),
}
