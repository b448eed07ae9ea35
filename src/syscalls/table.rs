//! The fd syscalls of SPEC §4 (SKELETON).

/// Every syscall number whose completion can change the fd table.
pub fn traced_syscalls() -> &'static [u64] {
    &[]
}

/// fcntl commands that change the fd table (F_DUPFD, F_DUPFD_CLOEXEC, F_SETFD).
pub const FCNTL_TRACED_CMDS: &[u64] = &[0, 1030, 2];

pub fn is_fd_syscall(nr: u64) -> bool {
    traced_syscalls().contains(&nr)
}

pub fn syscall_name(_nr: u64) -> Option<&'static str> {
    None
}
