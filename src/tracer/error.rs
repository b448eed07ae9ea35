//! Why the tracer could not do what a command asked of it: arming a
//! function breakpoint, watching an fd, running a syscall inside the
//! process. Each is one line, said by the front end as it is.

use thiserror::Error;

use super::Mechanism;
use super::perf_source::Fallback;
use crate::fdtable::Pid;
use crate::perf::PerfError;
use crate::ptrace::{Tid, TraceError};

#[derive(Debug, Error)]
pub enum TracerError {
    #[error("the stack has no caller to return to")]
    NoCaller,
    #[error("the thread is gone")]
    ThreadGone,
    #[error("the caller's code is in no file fdbg can probe")]
    CallerNotProbeable,
    #[error("function breakpoints need perf events: run the program with --events sigtrap")]
    SeccompHasNoTraps,
    #[error("function breakpoints need perf SIGTRAPs: {0}")]
    NoTraps(Fallback),
    #[error(
        "function breakpoints need perf SIGTRAPs: fd events through PTRACE_SYSCALL, 2 stops per syscall: {0}"
    )]
    TrapsFellBack(Fallback),
    #[error(
        "function breakpoints need perf SIGTRAPs, and fd events come from {} here (attach without --events ptrace, as root)",
        .0.as_str()
    )]
    TrapsNotArmed(Mechanism),
    #[error("{name} is where '{pattern}' stops already; delete that first")]
    AddressTaken { name: String, pattern: String },
    #[error("{name}: {source}")]
    Uprobe {
        name: String,
        #[source]
        source: PerfError,
    },
    #[error("no dynamic linker (_dl_debug_state) in the process: it cannot load libraries later")]
    NoDynamicLinker,
    #[error(transparent)]
    Perf(#[from] PerfError),
    #[error(transparent)]
    Fallback(#[from] Fallback),
    #[error(transparent)]
    Trace(#[from] TraceError),
    #[error("no thread of it is in a stop where a syscall can run")]
    NoInjectionThread,
    #[error("no syscall instruction in its vDSO")]
    NoVdsoSyscall,
    #[error("cannot read its stack")]
    StackUnreadable,
    #[error("writing its stack: {0}")]
    StackUnwritable(std::io::Error),
    #[error("rt_sigaction returned {0}")]
    Sigaction(i64),
    #[error("process {0} is not traced any more")]
    NotTraced(Pid),
    #[error("cannot run close() in thread {tid}: {source}")]
    CloseNotRun {
        tid: Tid,
        #[source]
        source: TraceError,
    },
    #[error("no `syscall; ret` in its vDSO")]
    NoSyscallRet,
    #[error("no rt_sigreturn restorer (libc's) in its code")]
    NoSigreturn,
}

/// The front end's commands fail with one line of text.
impl From<TracerError> for String {
    fn from(e: TracerError) -> String {
        e.to_string()
    }
}
