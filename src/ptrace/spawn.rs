//! Starting a program for `run`: fork, put the child in its own process
//! group (interactive sessions), stop it so the tracer can seize it, install the seccomp filter,
//! exec. Between fork and exec the child only makes raw syscalls.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork, pipe2};

use super::seccomp;

/// A child stopped by SIGSTOP before exec, and the pipe on which it reports
/// an exec failure (errno, 4 bytes; closed by a successful exec).
pub struct Spawned {
    pub pid: i32,
    pub exec_errors: OwnedFd,
}

/// Fork a child that stops itself, then (once resumed) installs `filter`
/// and execs `path` with `argv`. Returns once the child is stopped. With
/// `own_group` the child gets a process group of its own, so that Ctrl-C at
/// the terminal reaches fdbg only.
pub fn spawn_stopped(
    path: &CString,
    argv: &[CString],
    filter: &[libc::sock_filter],
    own_group: bool,
) -> io::Result<Spawned> {
    let (read_end, write_end) = pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    // SAFETY: the child runs only async-signal-safe code: raw syscalls on
    // memory prepared before the fork (argv_ptrs, filter), then exec or _exit.
    match unsafe { fork() }? {
        ForkResult::Child => {
            if own_group {
                let _ = nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0));
            }
            let _ = nix::sys::signal::sigprocmask(
                SigmaskHow::SIG_SETMASK,
                Some(&SigSet::empty()),
                None,
            );
            let _ = kill(nix::unistd::getpid(), Signal::SIGSTOP);
            // No filter: fd events come from perf events armed at the exec.
            let installed = if filter.is_empty() {
                Ok(())
            } else {
                seccomp::install(filter)
            };
            let errno = match installed {
                Ok(()) => {
                    // SAFETY: path and argv are NUL-terminated C strings and
                    // argv_ptrs ends with a null pointer; environ is the process's.
                    unsafe {
                        libc::execv(path.as_ptr(), argv_ptrs.as_ptr());
                    }
                    io::Error::last_os_error()
                        .raw_os_error()
                        .unwrap_or(libc::ENOEXEC)
                }
                Err(e) => -e.raw_os_error().unwrap_or(libc::EINVAL),
            };
            let bytes = errno.to_ne_bytes();
            // SAFETY: writing 4 bytes from a local array, then leaving
            // without running any of the parent's destructors.
            unsafe {
                libc::write(write_end.as_raw_fd(), bytes.as_ptr().cast(), 4);
                libc::_exit(127);
            }
        }
        ForkResult::Parent { child } => {
            drop(write_end);
            loop {
                match waitpid(child, Some(WaitPidFlag::WUNTRACED | WaitPidFlag::__WALL)) {
                    Ok(WaitStatus::Stopped(_, _)) => break,
                    Ok(WaitStatus::Exited(..)) | Ok(WaitStatus::Signaled(..)) => {
                        return Err(io::Error::other(
                            "the new process died before it could be traced",
                        ));
                    }
                    Ok(_) => continue,
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(Spawned {
                pid: child.as_raw(),
                exec_errors: read_end,
            })
        }
    }
}

/// Why the child could not exec, if it said so on the error pipe.
pub fn exec_error(spawned: &Spawned) -> Option<String> {
    let mut buf = [0u8; 4];
    let n = nix::unistd::read(&spawned.exec_errors, &mut buf).ok()?;
    if n != 4 {
        return None;
    }
    let errno = i32::from_ne_bytes(buf);
    if errno < 0 {
        return Some(format!(
            "cannot install the seccomp filter: {}",
            io::Error::from_raw_os_error(-errno)
        ));
    }
    Some(
        io::Error::from_raw_os_error(errno)
            .to_string()
            .to_lowercase(),
    )
}

/// Kill a child fdbg started and reap it.
pub fn kill_and_reap(pid: i32) {
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::__WALL));
}
