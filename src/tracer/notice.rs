//! What the tracer has to tell the user besides a command's answer: how
//! the session started (a slower event source and why, a child not
//! traced), what happened while the process ran (a stop that came late, a
//! breakpoint that resolved, samples lost), what could not be undone. Facts
//! only; the front end says them (`repl/render.rs`).

use super::StartError;
use super::TracerError;
use super::perf_source::Fallback;
use crate::fdtable::{Pid, Seq};
use crate::perf::PerfError;
use crate::ptrace::Tid;

#[derive(Debug)]
pub enum Notice {
    /// The fd events come through PTRACE_SYSCALL (two stops per syscall).
    FellBack(Fallback),
    /// Attach: perf SIGTRAPs, one stop per fd event, because the kernel
    /// refused the ring buffers.
    NotObserving(PerfError),
    /// --follow-forks: a child that exists could not be traced.
    ChildNotTraced(StartError),
    /// Perf armed though this thread blocks SIGTRAP (--events perf or
    /// sigtrap).
    BlocksSigtrap(Tid),
    /// The process exec'd and its fd events could not be armed again.
    NotRearmed { pid: Pid, why: PerfError },
    /// The process exec'd and `break fd` could not watch in the new program.
    NotRewatched { fd: i32, why: PerfError },
    /// A child let go keeps the session's ignored SIGTRAP.
    ChildSigtrapKept { child: Tid, why: TracerError },
    /// A process keeps the session's ignored SIGTRAP after the detach.
    SigtrapKept { pid: Pid, why: TracerError },
    /// The event a stop was asked for was observed, not stopped at: the
    /// process stopped `later` fd events after it.
    ObservedLate { seq: Seq, later: u64 },
    /// `break fd` stops at every fd event: the kernel refused the watch.
    WatchRefused { fd: i32, why: TracerError },
    /// The samples' stack copies could not grow.
    CopiesNotGrown(PerfError),
    /// Samples lost in full rings; the model was reconciled with /proc.
    SamplesLost(u64),
    /// An exec: the user's function breakpoint could not be kept pending.
    BreakpointGone {
        id: u32,
        pattern: String,
        why: TracerError,
    },
    /// An exec: the function breakpoints are pending in the new program.
    BreakpointsPending,
    /// A pending breakpoint was armed in a library just loaded, at these
    /// (function, object).
    BreakpointResolved {
        id: u32,
        pattern: String,
        sites: Vec<(String, String)>,
    },
    /// A pending breakpoint matched in a library just loaded and could not
    /// be armed; it stays pending.
    BreakpointFailed {
        id: u32,
        pattern: String,
        why: TracerError,
    },
}
