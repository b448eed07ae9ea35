//! x86_64: registers and the seccomp audit arch.
//!
//! Defines layouts and numbers only; reading a thread's registers is
//! `ptrace`'s job, and the tracer composes the two.

/// AUDIT_ARCH_X86_64, as the kernel puts it in `seccomp_data.arch`.
pub const AUDIT_ARCH: u32 = 0xC000_003E;

/// Syscall numbers at or above this bit are the x32 ABI, not ours.
pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// The registers a stack walk starts from: instruction, stack and frame
/// pointer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StackRegs {
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
}

impl StackRegs {
    /// The walk's starting registers out of a thread's general-purpose
    /// registers (as PTRACE_GETREGS fills them).
    pub fn from_user_regs(regs: &libc::user_regs_struct) -> StackRegs {
        StackRegs {
            ip: regs.rip,
            sp: regs.rsp,
            bp: regs.rbp,
        }
    }
}
