//! x86_64: registers and the seccomp audit arch.

use crate::ptrace::{self, Tid};

/// AUDIT_ARCH_X86_64, as the kernel puts it in `seccomp_data.arch`.
pub const AUDIT_ARCH: u32 = 0xC000_003E;

/// Syscall numbers at or above this bit are the x32 ABI, not ours.
pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// The registers a stack walk starts from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StackRegs {
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
}

/// Read the walk's starting registers from a stopped thread.
pub fn stack_regs(tid: Tid) -> ptrace::Result<StackRegs> {
    let regs = ptrace::registers(tid)?;
    Ok(StackRegs {
        ip: regs.rip,
        sp: regs.rsp,
        bp: regs.rbp,
    })
}
