//! fdbg: a debugger for file-descriptor leaks in live Linux processes.
//!
//! It attaches with ptrace, stops on the syscalls that create and destroy
//! fds, records the creating call stack of every fd, keeps a model of each
//! process's fd table, and answers "which code opened the fds that are still
//! open". It is not a general debugger: what it changes in a tracee is
//! what it says it does — the SIGTRAP disposition while it takes SIGTRAP
//! stops (an injected rt_sigaction, restored at detach), scratch bytes for
//! its injected syscalls (written back), and the fds `reclaim` closes —
//! and it leaves every attached process running when it ends.
//!
//! Module map, from the front end down; a module names only modules below
//! its layer (checked by the `layers` test; see ARCHITECTURE.md):
//! - `cli`: the command line → a validated `Config`
//! - `repl`: the front end: commands from -e/-x and the prompt, reports as
//!   text or JSON
//! - `demo`: `fdbg demo`, a built-in leaky login server under fdbg
//! - `inspect`: `fdbg inspect`, one-shot socket triage from /proc, no ptrace
//! - `tracer`: the event loop: attach or launch, stops → decoded events →
//!   the model, stack capture, detach
//! - `fdtable`: the fd lifetime model, one table per process (pure)
//! - `unwind`: stack snapshot → return addresses, through DWARF CFI
//! - `symbolize`: addresses → function, file, line, module, when shown
//! - `syscalls`: the fd syscall table and its decoders: syscall → effects
//!   on the fd table (pure)
//! - `stacks`: interned stacks (pure)
//! - `modules`: a process's mapped objects, their bias and unwind sections
//! - `net`: socket inode → endpoint, in the process's network namespace
//! - `ptrace`: the only caller of ptrace(2) and waitpid(2); the seccomp
//!   filter, `run`'s child, pidfds
//! - `perf`: perf events on the syscall tracepoints: a SIGTRAP after each
//!   fd syscall, the kernel's count of them; samples in perf rings, or
//!   from a BPF program at sys_exit in a BPF ring
//! - `procfs`: /proc readers: fds, threads, status
//! - `arch`: x86_64 register layouts and the seccomp audit arch
//! - `vocab`: words every layer shares: `FdKind`, `Pid`, `ProcFd`,
//!   `TraceeMemory`
//! - `escape`: escaping process-supplied text for the terminal

pub mod arch;
pub mod cli;
pub mod demo;
pub mod escape;
pub mod fdtable;
pub mod inspect;
pub mod modules;
pub mod net;
pub mod perf;
pub mod procfs;
pub mod ptrace;
pub mod repl;
pub mod stacks;
pub mod symbolize;
pub mod syscalls;
pub mod tracer;
pub mod unwind;
pub mod vocab;

#[cfg(test)]
mod layers;
