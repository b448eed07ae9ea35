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
//! (its mask is restored at the end), so none is taken from the queues; a
//! stop signal, which cannot be blocked, is queued again afterwards
//! (tgkill).

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
    let is_syscall_stop = |stop: &Stop| *stop == Stop::Syscall;
    let result = run_until(tid, Resume::Syscall, is_syscall_stop, &mut deferred)
        .and_then(|()| run_until(tid, Resume::Syscall, is_syscall_stop, &mut deferred))
        .and_then(|()| registers(tid))
        .map(|after| after.rax as i64);
    // Back to where it was, through the kernel's exit path (restarts), to
    // an interrupt stop, where its own mask is given back.
    set_registers(tid, &saved)?;
    super::interrupt(tid)?;
    run_until(
        tid,
        Resume::Cont,
        |stop| {
            matches!(
                stop,
                Stop::Event {
                    event: super::EVENT_STOP,
                    ..
                }
            )
        },
        &mut deferred,
    )?;
    super::set_signal_mask(tid, saved_mask)?;
    for sig in deferred {
        // SAFETY: tgkill(2) reads no memory of ours.
        unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, sig) };
    }
    result
}

/// Resume `tid` the way `how` says until it reports a stop `wanted`
/// accepts. Signals on the way (only the unblockable stop signal can come:
/// every other is blocked) are kept for later; other stops are passed.
fn run_until(
    tid: Tid,
    how: Resume,
    wanted: impl Fn(&Stop) -> bool,
    deferred: &mut Vec<i32>,
) -> Result<()> {
    resume(tid, how, 0)?;
    loop {
        match wait_for(tid, false) {
            Ok(Some((_, stop))) if wanted(&stop) => return Ok(()),
            Ok(Some((_, Stop::Signal(sig)))) => {
                deferred.push(sig);
                resume(tid, how, 0)?;
            }
            Ok(Some((_, stop))) if stop.is_end() => return Err(TraceError::Gone),
            Ok(Some(_)) => resume(tid, how, 0)?,
            _ => return Err(TraceError::Gone),
        }
    }
}
