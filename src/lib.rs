//! fdbg: a debugger for file-descriptor leaks in live Linux processes.
//!
//! It attaches with ptrace, stops on the syscalls that create and destroy
//! fds, records the creating call stack of every fd, keeps a model of each
//! process's fd table, and answers "which code opened the fds that are still
//! open". It is not a general debugger: it never changes the tracee's memory
//! or registers, and it leaves every attached process running when it ends.
//!
//! Module map (see ARCHITECTURE.md):
//! - `syscalls`: syscall → effect on the fd table (pure)
//! - `fdtable`: the fd lifetime model (pure)
//! - `stacks`: interned stacks (pure)
//! - `modules`: a process's mapped objects and their unwind sections
//! - `unwind`: stack snapshot → return addresses, through DWARF CFI
//! - `net`: socket inode → endpoint, in the process's network namespace
//! - `inspect`: `fdbg inspect`, SCENARIO.md's triage from /proc, no ptrace

pub mod arch;
pub mod cli;
pub mod demo;
pub mod escape;
pub mod fdtable;
pub mod inspect;
pub mod modules;
pub mod net;
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
