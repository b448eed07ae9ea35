//! A copy of another process's fd, without stopping or tracing it:
//! pidfd_open(2) + pidfd_getfd(2) (Linux 5.6+).
//!
//! The kernel checks the same permission as for attaching with ptrace
//! (PTRACE_MODE_ATTACH_REALCREDS), but nothing is attached: the process
//! keeps running and its TracerPid stays 0. The copy shares the open file
//! description with the process's fd, so anything done to it (other than
//! reading its options and names) would be seen by the process: callers
//! only query it and drop it.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

/// A pidfd for `pid`.
fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes two scalars and touches none of our memory.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: on success the return value is a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as i32) })
}

/// A duplicate, in fdbg, of fd `fd` of process `pid`.
pub fn copy_fd(pid: i32, fd: i32) -> io::Result<OwnedFd> {
    let pidfd = pidfd_open(pid)?;
    // SAFETY: pidfd_getfd takes an fd we own (alive for the call) and two
    // scalars, and touches none of our memory.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_pidfd_getfd,
            std::os::fd::AsRawFd::as_raw_fd(&pidfd),
            fd,
            0,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: on success the return value is a new fd (close-on-exec) that
    // nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as i32) })
}
