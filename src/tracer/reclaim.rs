//! Closing fds inside a stopped traced process (`reclaim`): close() run in
//! one of its threads through `ptrace::inject::syscalls_returning`, whose
//! every step leaves the thread able to find its way back by itself, so
//! that fdbg dying mid-way leaves the process running and consistent.
//! Each close that succeeded is recorded as an event closed by fdbg.
//!
//! It decides nothing about which fds may be closed: the caller does.

use super::{Mechanism, Tracer, TracerError, monotonic_now};
use crate::fdtable::Pid;
use crate::procfs;
use crate::ptrace::{self, Stop, TraceError, inject};

/// What closing gave: each fd tried with close()'s result (0, or a
/// negative errno), in order; and why it stopped before the end (after
/// `results.len()` of the fds asked for), if it did.
#[derive(Debug, Default)]
pub struct Closed {
    pub results: Vec<(i32, i64)>,
    pub stopped_early: Option<TraceError>,
}

impl Tracer {
    /// Close `fds` in stopped process `pid`, one close() each in one of its
    /// threads; the thread is left as it was. Every fd closed is recorded
    /// in the model (`Model::reclaimed`). `Err` when nothing could be tried.
    pub fn close_in_process(&mut self, pid: Pid, fds: &[i32]) -> Result<Closed, TracerError> {
        if self.ends.detached || self.model.process(pid).is_none_or(|p| p.end.is_some()) {
            return Err(TracerError::NotTraced(pid));
        }
        if fds.is_empty() {
            return Ok(Closed::default());
        }
        let tid = self.injection_thread(pid)?;
        let gadgets = gadgets(tid)?;
        let calls: Vec<(u64, [u64; 6])> = fds
            .iter()
            .map(|&fd| (libc::SYS_close as u64, [fd as u64, 0, 0, 0, 0, 0]))
            .collect();
        // fdbg's own closes are no events of the process.
        let paused = self.pause_observing(true);
        let ran = inject::syscalls_returning(pid, tid, gadgets, &calls);
        if paused {
            self.pause_observing(false);
        }
        let ran = ran.map_err(|source| TracerError::CloseNotRun { tid, source })?;
        if let Some(thread) = self.threads.get_mut(&tid) {
            thread.last_stop = Some(Stop::Event {
                event: ptrace::EVENT_STOP,
                signal: 0,
            });
        }
        if self.source.mechanism == Mechanism::PerfSigtrap
            && let Some(source) = self.source.traps.as_mut()
        {
            // The kernel counted them among the process's fd syscalls.
            source.traps_seen += ran.results.len() as u64;
        }
        self.model.set_clock(monotonic_now());
        let mut closed = Closed::default();
        for (&fd, &result) in fds.iter().zip(&ran.results) {
            if result == 0 || result == -(libc::EINTR as i64) {
                self.model.reclaimed(pid, tid, fd);
            }
            closed.results.push((fd, result));
        }
        closed.stopped_early = ran.stopped_by;
        Ok(closed)
    }
}

/// The vDSO's `syscall … ret` and libc's rt_sigreturn restorer in the
/// process of thread `tid` (read through the thread: a leader that exited
/// has no maps).
fn gadgets(tid: Pid) -> Result<inject::Gadgets, TracerError> {
    let find = |code: Vec<(u64, Vec<u8>)>, find: fn(&[u8]) -> Option<usize>| {
        code.iter()
            .find_map(|(start, bytes)| find(bytes).map(|at| start + at as u64))
    };
    let syscall_ret = find(
        procfs::code_of(tid, |path| path == "[vdso]"),
        inject::find_syscall_ret,
    )
    .ok_or(TracerError::NoSyscallRet)?;
    let is_libc = |path: &str| {
        let name = path.rsplit('/').next().unwrap_or(path);
        name.starts_with("libc.so") || name.starts_with("libc-") || name.starts_with("ld-musl")
    };
    let sigreturn = find(procfs::code_of(tid, is_libc), inject::find_sigreturn)
        .or_else(|| find(procfs::code_of(tid, |_| true), inject::find_sigreturn))
        .ok_or(TracerError::NoSigreturn)?;
    Ok(inject::Gadgets {
        syscall_ret,
        sigreturn,
    })
}
