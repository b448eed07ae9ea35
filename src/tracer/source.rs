//! Where fd events come from: the `Mechanism` in use and the state of
//! every event source of the session, in one `Source`.
//!
//! One struct rather than an enum with each source's state in its
//! variant: the sources' state outlives a switch between them. The
//! samplers stay open, disabled, while perf SIGTRAPs or PTRACE_SYSCALL
//! take the events (their coverage stays for `stats`, and `set_need`
//! enables them again), and the perf SIGTRAP events are armed while
//! observing too, for function breakpoints and a `break fd` watch
//! (`watching`). So
//! `mechanism` says which source gives the fd events now, and `traps` and
//! `observer` hold what each source has open, whichever is in use.
//!
//! A new event source: a `Mechanism` variant here (its name in
//! `as_str`, how a stopped thread resumes under it in `resume`), its
//! state a field of `Source`, its arming and disarming in a file of its
//! own (as `perf_source.rs`, `observe.rs`).

use rustc_hash::FxHashMap as HashMap;

use crate::fdtable::Pid;
use crate::ptrace::{Resume, Tid};

use super::Mode;
use super::observe::{Need, Observer};
use super::perf_source::PerfSource;
use super::watch::Watching;

/// Where fd events come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    /// A perf event's synchronous SIGTRAP after each fd syscall (attach).
    PerfSigtrap,
    /// Syscall-enter and syscall-exit stops of every syscall (attach).
    PtraceSyscall,
    /// A seccomp filter that stops only the fd syscalls (run).
    Seccomp,
    /// Perf samples of the fd syscalls in ring buffers, no stop (attach,
    /// while nothing needs one).
    PerfObserve,
}

impl Mechanism {
    pub fn as_str(self) -> &'static str {
        match self {
            Mechanism::PerfSigtrap => "perf-sigtrap",
            Mechanism::PtraceSyscall => "ptrace-syscall",
            Mechanism::Seccomp => "seccomp",
            Mechanism::PerfObserve => "perf-observe",
        }
    }

    /// How a stopped thread (not in a group-stop) resumes under this
    /// source; `in_syscall`: it stopped at a syscall's entry.
    pub(super) fn resume(self, in_syscall: bool) -> Resume {
        match self {
            Mechanism::PerfSigtrap | Mechanism::PerfObserve => Resume::Cont,
            Mechanism::PtraceSyscall => Resume::Syscall,
            // To the syscall's exit, where its result is.
            Mechanism::Seccomp if in_syscall => Resume::Syscall,
            Mechanism::Seccomp => Resume::Cont,
        }
    }
}

/// The event sources of a session and which one gives the fd events.
pub(super) struct Source {
    /// The source the fd events come from now.
    pub(super) mechanism: Mechanism,
    /// The perf SIGTRAP events (fd events, function breakpoints, a
    /// `break fd` watch), once armed.
    pub(super) traps: Option<PerfSource>,
    /// Perf SIGTRAPs were refused only because every thread blocked
    /// SIGTRAP (glibc does for a moment in pthread_create and at a
    /// thread's exit): the first rt_sigprocmask that unblocks it hands the
    /// session over to perf.
    pub(super) waits_for_unblock: bool,
    pub(super) unblocked: bool,
    /// The samplers, once opened (attach); kept, disabled, while another
    /// source gives the events.
    pub(super) observer: Option<Observer>,
    /// Observing: each thread's stack (sp, bytes) at the last stop, for
    /// walks that need more than a sample's copy after the memory changed.
    pub(super) stack_snapshots: HashMap<Tid, (u64, Vec<u8>)>,
    /// The process whose samples are being walked at its exec stop: its
    /// memory is the new program's.
    pub(super) exec_pending: Option<Pid>,
    /// Observing: each process's read-only file mappings at the last look.
    pub(super) file_maps: HashMap<Pid, Vec<crate::modules::FileMapping>>,
    /// `break fd N` while observing: perf SIGTRAP events filtered on N.
    pub(super) watching: Watching,
    /// What the current `continue` needs (`set_need`).
    pub(super) need: Need,
    /// The last recorded event's text and effects buffers, for the next
    /// decode: the steady state allocates none.
    pub(super) spare: crate::syscalls::Spare,
}

impl Source {
    /// Before any event source is chosen: PTRACE_SYSCALL under attach,
    /// seccomp under run.
    pub(super) fn new(mode: Mode) -> Source {
        Source {
            mechanism: match mode {
                Mode::Attach => Mechanism::PtraceSyscall,
                Mode::Run => Mechanism::Seccomp,
            },
            traps: None,
            waits_for_unblock: false,
            unblocked: false,
            observer: None,
            stack_snapshots: HashMap::default(),
            exec_pending: None,
            spare: crate::syscalls::Spare::default(),
            file_maps: HashMap::default(),
            watching: Watching::default(),
            need: Need::Stops,
        }
    }
}
