//! Running one syscall inside a stopped tracee, as a debugger's inferior
//! call does, and leaving the thread exactly as it was: used to make the
//! process ignore SIGTRAP for the session and to give it its disposition
//! back at detach.
//!
//! The thread's registers are saved, pointed at a `syscall` instruction
//! the caller found in the process (the vDSO has them), the syscall is run
//! between its syscall-enter and syscall-exit stops, and the registers are
//! restored. A syscall the thread was in the middle of is restarted by the
//! kernel itself: the thread is interrupted once more after the restore,
//! so that its way back to user space passes the kernel's restart code with
//! the original registers. Every signal is blocked in the thread meanwhile
//! (its mask is restored after), so none is taken from the queues; a stop
//! signal that comes anyway is queued again afterwards (tgkill).

use super::{Result, Resume, Stop, Tid, TraceError, registers, resume, set_registers, wait_for};

/// Run syscall `nr` with `args` in stopped thread `tid` of process `pid`,
/// through the `syscall` instruction at `insn`; returns its result (a
/// negative errno on failure). The thread ends stopped as it was.
pub fn syscall(pid: i32, tid: Tid, insn: u64, nr: u64, args: [u64; 6]) -> Result<i64> {
    let saved = registers(tid)?;
    let saved_mask = super::signal_mask(tid)?;
    super::set_signal_mask(tid, u64::MAX)?;
    let mut call = saved;
    call.rip = insn;
    call.rax = nr;
    // Not in a syscall: no restart of the interrupted one on the way out.
    call.orig_rax = u64::MAX;
    call.rdi = args[0];
    call.rsi = args[1];
    call.rdx = args[2];
    call.r10 = args[3];
    call.r8 = args[4];
    call.r9 = args[5];
    set_registers(tid, &call)?;
    let mut deferred = Vec::new();
    let ran = run_to_syscall_stop(tid, &mut deferred)
        .and_then(|()| run_to_syscall_stop(tid, &mut deferred))
        .and_then(|()| registers(tid));
    let result = match ran {
        Ok(after) => Ok(after.rax as i64),
        Err(e) => Err(e),
    };
    // Back to where it was, through the kernel's exit path (restarts).
    set_registers(tid, &saved)?;
    super::set_signal_mask(tid, saved_mask)?;
    super::interrupt(tid)?;
    resume(tid, Resume::Cont, 0)?;
    loop {
        match wait_for(tid, false) {
            Ok(Some((
                _,
                Stop::Event {
                    event: super::EVENT_STOP,
                    ..
                },
            ))) => break,
            Ok(Some((_, Stop::Signal(sig)))) => {
                deferred.push(sig);
                resume(tid, Resume::Cont, 0)?;
            }
            Ok(Some((_, stop))) if stop.is_end() => return Err(TraceError::Gone),
            Ok(Some(_)) => resume(tid, Resume::Cont, 0)?,
            _ => return Err(TraceError::Gone),
        }
    }
    for sig in deferred {
        // SAFETY: tgkill(2) reads no memory of ours.
        unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, sig) };
    }
    result
}

/// Resume `tid` with PTRACE_SYSCALL until its next syscall stop. Signals
/// on the way are kept for later; other stops are passed.
fn run_to_syscall_stop(tid: Tid, deferred: &mut Vec<i32>) -> Result<()> {
    resume(tid, Resume::Syscall, 0)?;
    loop {
        match wait_for(tid, false) {
            Ok(Some((_, Stop::Syscall))) => return Ok(()),
            Ok(Some((_, Stop::Signal(sig)))) => {
                deferred.push(sig);
                resume(tid, Resume::Syscall, 0)?;
            }
            Ok(Some((_, stop))) if stop.is_end() => return Err(TraceError::Gone),
            Ok(Some(_)) => resume(tid, Resume::Syscall, 0)?,
            _ => return Err(TraceError::Gone),
        }
    }
}
