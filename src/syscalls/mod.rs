//! Which syscalls change the fd table, and what a completed one did to it.
//!
//! This layer is pure: it is handed a syscall's number, its six arguments and
//! its return value, plus a way to read the tracee's memory, and answers with
//! the effects on the fd table. It does not know how the stop was reached
//! (PTRACE_SYSCALL, seccomp), so another stop mechanism can feed it as well.

#![forbid(unsafe_code)]

mod decode;
mod table;

pub use decode::{Spare, decode, decode_reusing};
pub use table::{
    Flags, flags, is_fd_syscall, syscall_name, syscalls_with, traced_by_command, traced_syscalls,
};

use crate::vocab::FdKind;
pub use crate::vocab::TraceeMemory;

/// A syscall as seen at entry: number and raw argument registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyscallEntry {
    pub nr: u64,
    pub args: [u64; 6],
}

/// One effect of a completed syscall on the process's fd table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// A new fd. `target` is what is known of it now (a path for open).
    Open {
        fd: i32,
        kind: FdKind,
        cloexec: bool,
        target: Option<String>,
    },
    /// A new fd that refers to what `from` refers to (dup, dup2, dup3,
    /// fcntl F_DUPFD*). If `to` was open it is implicitly closed first;
    /// `from == to` (dup2 onto itself) changes nothing.
    Dup { from: i32, to: i32, cloexec: bool },
    /// The fd is closed (a close that succeeded or returned EINTR).
    Close { fd: i32 },
    /// close() failed with EBADF: a double close or a never-opened fd.
    BadClose { fd: i32 },
    /// close_range(first, last, 0): every open fd in the range is closed.
    CloseRange { first: u32, last: u32 },
    /// close_range with CLOSE_RANGE_CLOEXEC: every open fd in the range is
    /// marked close-on-exec.
    CloexecRange { first: u32, last: u32 },
    /// fcntl(F_SETFD): the close-on-exec flag set or cleared.
    SetCloexec { fd: i32, cloexec: bool },
    /// Something worth remembering about an fd that neither creates nor
    /// closes it: where a socket was bound, connected or accepted from
    /// (`bind 0.0.0.0:8125`, `connect 127.0.0.1:3306 failed: ECONNREFUSED`,
    /// `listen backlog 128`, `accepted from 127.0.0.1:53422`).
    Annotate { fd: i32, note: String },
}

/// What a completed fd syscall did, ready to be recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoded {
    /// The syscall's name: "socket", "openat", ...
    pub name: &'static str,
    /// The arguments as a syscall tracer prints them, without the parentheses:
    /// `AF_INET, SOCK_DGRAM|SOCK_CLOEXEC, 0`, `AT_FDCWD, "/etc/hosts", O_RDONLY`.
    /// Strings from the process are escaped (no raw control characters).
    pub args_text: String,
    /// The raw return value (negative errno on failure).
    pub result: i64,
    /// The kind of the fds this syscall creates (Other when it creates none).
    pub kind: FdKind,
    /// Effects in the order they apply. Empty for a failed syscall, except
    /// the BadClose of a close that failed with EBADF and the Annotate of a
    /// failed bind, connect or listen (a refused connect is worth seeing).
    pub effects: Vec<Effect>,
}

/// True when `result` is one of the kernel's internal codes -512..=-516
/// (ERESTARTSYS, ERESTARTNOINTR, ERESTARTNOHAND, ENOIOCTLCMD,
/// ERESTART_RESTARTBLOCK): the syscall will run again and must be counted
/// once, when it really completes.
pub fn is_restart(result: i64) -> bool {
    (-516..=-512).contains(&result)
}
