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
    set_registers(tid, &call_registers(&saved, insn, nr, args))?;
    let mut deferred = Vec::new();
    let result = run_until(
        tid,
        Resume::Syscall,
        is_syscall_stop,
        &mut deferred,
        PerfTraps::Keep,
    )
    .and_then(|()| {
        run_until(
            tid,
            Resume::Syscall,
            is_syscall_stop,
            &mut deferred,
            PerfTraps::Keep,
        )
    })
    .and_then(|()| registers(tid))
    .map(|after| after.rax as i64);
    // Back to where it was, through the kernel's exit path (restarts), to
    // an interrupt stop, where its own mask is given back.
    set_registers(tid, &saved)?;
    super::interrupt(tid)?;
    run_until(
        tid,
        Resume::Cont,
        is_interrupt_stop,
        &mut deferred,
        PerfTraps::Keep,
    )?;
    super::set_signal_mask(tid, saved_mask)?;
    queue_again(pid, tid, deferred);
    result
}

/// What an injection does with a SIGTRAP that fdbg's own perf events send
/// for the syscalls it injects (they may be fd syscalls too).
#[derive(Clone, Copy, PartialEq, Eq)]
enum PerfTraps {
    Keep,
    Drop,
}

/// Resume `tid` the way `how` says until it reports a stop `wanted`
/// accepts. Signals on the way (only the unblockable stop signal can come:
/// every other is blocked) are kept for later, but fdbg's own perf
/// SIGTRAPs where `traps` drops them; other stops are passed.
fn run_until(
    tid: Tid,
    how: Resume,
    wanted: impl Fn(&Stop) -> bool,
    deferred: &mut Vec<i32>,
    traps: PerfTraps,
) -> Result<()> {
    resume(tid, how, 0)?;
    loop {
        match wait_for(tid, false) {
            Ok(Some((_, stop))) if wanted(&stop) => return Ok(()),
            Ok(Some((_, Stop::Signal(sig)))) => {
                let perf = traps == PerfTraps::Drop
                    && sig == libc::SIGTRAP
                    && super::signal_info(tid).is_ok_and(|info| info.code == TRAP_PERF);
                if !perf {
                    deferred.push(sig);
                }
                resume(tid, how, 0)?;
            }
            Ok(Some((_, stop))) if stop.is_end() => return Err(TraceError::Gone),
            Ok(Some(_)) => resume(tid, how, 0)?,
            _ => return Err(TraceError::Gone),
        }
    }
}

/// Code in the process that [`syscalls_returning`] runs through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gadgets {
    /// A `syscall` instruction followed only by register clears and a
    /// `ret` (the vDSO's fallback paths have one).
    pub syscall_ret: u64,
    /// `mov $15, %rax; syscall`: rt_sigreturn (libc's signal restorer).
    pub sigreturn: u64,
}

/// Where in `code` a `syscall` is followed by nothing but `xor r32, r32`
/// instructions and a `ret`.
pub fn find_syscall_ret(code: &[u8]) -> Option<usize> {
    (0..code.len().saturating_sub(2)).find(|&at| {
        if code[at..].len() < 3 || code[at] != 0x0f || code[at + 1] != 0x05 {
            return false;
        }
        let mut i = at + 2;
        loop {
            match code.get(i..) {
                Some([0xc3, ..]) => return true,
                // xor r32, r32 (same register), with or without REX.R/B.
                Some([0x31, modrm, ..]) if is_self_xor(*modrm) => i += 2,
                Some([0x45 | 0x48 | 0x4d, 0x31, modrm, ..]) if is_self_xor(*modrm) => i += 3,
                _ => return false,
            }
        }
    })
}

fn is_self_xor(modrm: u8) -> bool {
    modrm >= 0xc0 && (modrm >> 3) & 7 == modrm & 7
}

/// Where in `code` libc's signal restorer is: `mov $15, %rax; syscall`.
pub fn find_sigreturn(code: &[u8]) -> Option<usize> {
    const RESTORER: [u8; 9] = [0x48, 0xc7, 0xc0, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05];
    code.windows(RESTORER.len()).position(|w| w == RESTORER)
}

/// What [`syscalls_returning`] did: the results of the calls that ran, in
/// order (a negative errno on failure), and what stopped it early.
#[derive(Debug)]
pub struct Ran {
    pub results: Vec<i64>,
    pub stopped_by: Option<TraceError>,
}

const ERESTARTSYS: i64 = -512;
const ERESTARTNOINTR: i64 = -513;
const ERESTARTNOHAND: i64 = -514;
const ERESTART_RESTARTBLOCK: i64 = -516;
const NR_RESTART_SYSCALL: u64 = 219;
const UC_FP_XSTATE: u64 = 1;
const UC_SIGCONTEXT_SS: u64 = 2;
const UC_STRICT_RESTORE_SS: u64 = 4;
const FP_XSTATE_MAGIC1: u32 = 0x4650_5853;
const FP_XSTATE_MAGIC2: u32 = 0x4650_5845;
/// The signal frame's parts before the FPU state: the return address the
/// gadget's `ret` takes, the ucontext (304 bytes) and a siginfo (128).
const FPSTATE_AT: usize = 512;

/// The registers a thread stopped at `regs` goes on with: where the
/// kernel would restart the syscall it was in, the restart made (the
/// syscall number back in rax, rip on the `syscall` instruction again).
/// A restart through restart_syscall comes back as EINTR (rt_sigreturn
/// cancels its restart block), as if a signal handler had run.
pub fn continuing(regs: &libc::user_regs_struct) -> libc::user_regs_struct {
    let mut next = *regs;
    if (regs.orig_rax as i64) >= 0 {
        match regs.rax as i64 {
            ERESTARTSYS | ERESTARTNOINTR | ERESTARTNOHAND => {
                next.rax = regs.orig_rax;
                next.rip = regs.rip.wrapping_sub(2);
            }
            ERESTART_RESTARTBLOCK => {
                next.rax = NR_RESTART_SYSCALL;
                next.rip = regs.rip.wrapping_sub(2);
            }
            _ => {}
        }
    }
    next.orig_rax = u64::MAX;
    next
}

/// An rt_sigreturn frame that puts back `regs`, `mask` and the FPU state
/// `fpu` (the XSAVE layout of NT_X86_XSTATE, or FXSAVE's), for a frame
/// at `at` (64-byte aligned). The alternate signal stack is left as it is
/// (its field is one the kernel refuses, and rt_sigreturn ignores that).
pub fn signal_frame(
    at: u64,
    ret_to: u64,
    regs: &libc::user_regs_struct,
    mask: u64,
    fpu: &[u8],
) -> Vec<u8> {
    let mut frame = vec![0u8; FPSTATE_AT];
    let put = |frame: &mut Vec<u8>, offset: usize, word: u64| {
        frame[offset..offset + 8].copy_from_slice(&word.to_ne_bytes());
    };
    let xsave = fpu.len() > 512 && u32_at(fpu, 464) == Some(FP_XSTATE_MAGIC1);
    put(&mut frame, 0, ret_to);
    // struct ucontext from 8: flags, link, stack_t, sigcontext, mask.
    let flags = UC_SIGCONTEXT_SS | UC_STRICT_RESTORE_SS | if xsave { UC_FP_XSTATE } else { 0 };
    put(&mut frame, 8, flags);
    put(&mut frame, 24, 3); // ss_flags: none the kernel accepts
    let r = regs;
    let words = [
        r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14, r.r15, r.rdi, r.rsi, r.rbp, r.rbx, r.rdx,
        r.rax, r.rcx, r.rsp, r.rip, r.eflags,
    ];
    let mcontext = 48;
    for (i, word) in words.iter().enumerate() {
        put(&mut frame, mcontext + 8 * i, *word);
    }
    let segments =
        (r.cs & 0xffff) | (r.gs & 0xffff) << 16 | (r.fs & 0xffff) << 32 | (r.ss & 0xffff) << 48;
    put(&mut frame, mcontext + 144, segments);
    let fpstate = if fpu.is_empty() {
        0
    } else {
        at + FPSTATE_AT as u64
    };
    put(&mut frame, mcontext + 184, fpstate);
    put(&mut frame, 8 + 296, mask);
    frame.extend_from_slice(fpu);
    if xsave {
        // The XSAVE area ends with a second magic, where its size says.
        let size = u32_at(fpu, 464 + 16).unwrap_or(0) as usize;
        let end = FPSTATE_AT + size;
        if frame.len() < end + 4 {
            frame.resize(end + 4, 0);
        }
        frame[end..end + 4].copy_from_slice(&FP_XSTATE_MAGIC2.to_ne_bytes());
    }
    frame.resize(frame.len().next_multiple_of(64), 0);
    frame
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// Run syscalls `calls` (number, arguments) one after the other in
/// stopped thread `tid` of `pid`, each of which puts the thread back by
/// itself: the thread is pointed at `gadgets.syscall_ret` with its stack
/// pointer on a signal frame of its own state (registers, signal mask,
/// FPU state) written below its red zone, so that after the syscall the
/// gadget's `ret` enters rt_sigreturn, and the kernel restores every
/// register at once. Should fdbg die at any point, the kernel lets the
/// thread go and it runs that same path back to where it was: never
/// into code with registers that are not its own. The thread ends in an
/// interrupt stop, about to go on where it was (a syscall it was in is
/// restarted); the memory under the frame is put back.
pub fn syscalls_returning(
    pid: i32,
    tid: Tid,
    gadgets: Gadgets,
    calls: &[(u64, [u64; 6])],
) -> Result<Ran> {
    let saved = registers(tid)?;
    let mask = super::signal_mask(tid)?;
    let fpu = super::fpu_state(tid)?;
    let next = continuing(&saved);
    let size = signal_frame(0, 0, &next, mask, &fpu).len() as u64;
    let at = (saved.rsp - 128 - size) & !63;
    let frame = signal_frame(at, gadgets.sigreturn, &next, mask, &fpu);
    let memory = super::ProcessMemory { pid: tid };
    let before = memory
        .read(at, frame.len())
        .filter(|b| b.len() == frame.len())
        .ok_or_else(|| TraceError::Os {
            op: "reading the stack",
            source: std::io::Error::other("stack memory not readable"),
        })?;
    memory.write(at, &frame).map_err(|source| TraceError::Os {
        op: "writing the stack",
        source,
    })?;
    let mut deferred = Vec::new();
    let mut ran = Ran {
        results: Vec::new(),
        stopped_by: None,
    };
    for &(nr, args) in calls {
        match one_returning(tid, gadgets, &next, at, nr, args, &mut deferred) {
            Ok(result) => ran.results.push(result),
            Err(e) => {
                ran.stopped_by = Some(e);
                break;
            }
        }
    }
    if ran.stopped_by.is_none() {
        // To an interrupt stop like the other threads': the thread has not
        // run one instruction of its own since.
        let settled = super::interrupt(tid).and_then(|()| {
            run_until(
                tid,
                Resume::Cont,
                is_interrupt_stop,
                &mut deferred,
                PerfTraps::Drop,
            )
        });
        if let Err(e) = settled {
            ran.stopped_by = Some(e);
        }
        let _ = memory.write(at, &before);
    }
    queue_again(pid, tid, deferred);
    Ok(ran)
}

/// One call of [`syscalls_returning`]: the thread at a stop with
/// registers `next` (its own, or back from the previous call's
/// rt_sigreturn); it ends at the syscall-exit stop of rt_sigreturn.
fn one_returning(
    tid: Tid,
    gadgets: Gadgets,
    next: &libc::user_regs_struct,
    frame: u64,
    nr: u64,
    args: [u64; 6],
    deferred: &mut Vec<i32>,
) -> Result<i64> {
    let mut call = call_registers(next, gadgets.syscall_ret, nr, args);
    call.rsp = frame;
    set_registers(tid, &call)?;
    // Registers first: from here on the thread finds its way back alone,
    // and rt_sigreturn gives it its own mask again.
    super::set_signal_mask(tid, u64::MAX)?;
    let mut next_syscall_stop = || {
        run_until(
            tid,
            Resume::Syscall,
            is_syscall_stop,
            deferred,
            PerfTraps::Drop,
        )
    };
    // The call's entry and exit, then rt_sigreturn's.
    next_syscall_stop()?;
    next_syscall_stop()?;
    let result = registers(tid)?.rax as i64;
    next_syscall_stop()?;
    next_syscall_stop()?;
    Ok(result)
}

/// si_code of a perf event's SIGTRAP.
const TRAP_PERF: i32 = 6;

/// `from` pointed at the `syscall` instruction at `rip`, for syscall `nr`
/// with `args`, and in no syscall (no restart of the one it was in).
fn call_registers(
    from: &libc::user_regs_struct,
    rip: u64,
    nr: u64,
    args: [u64; 6],
) -> libc::user_regs_struct {
    let mut call = *from;
    call.rip = rip;
    call.rax = nr;
    call.orig_rax = u64::MAX;
    call.rdi = args[0];
    call.rsi = args[1];
    call.rdx = args[2];
    call.r10 = args[3];
    call.r8 = args[4];
    call.r9 = args[5];
    call
}

/// Deliver again the stop signals an injection kept back.
fn queue_again(pid: i32, tid: Tid, signals: Vec<i32>) {
    for sig in signals {
        // SAFETY: tgkill(2) reads no memory of ours.
        unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, sig) };
    }
}

fn is_syscall_stop(stop: &Stop) -> bool {
    *stop == Stop::Syscall
}

/// The stop PTRACE_INTERRUPT brings.
fn is_interrupt_stop(stop: &Stop) -> bool {
    matches!(
        stop,
        Stop::Event {
            event: super::EVENT_STOP,
            ..
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gadgets_are_found_in_code() {
        // The vDSO's getrandom fallback: syscall; xor edx,edx; xor ecx,ecx;
        // xor r11d,r11d; ret. An earlier syscall followed by leave is no gadget.
        let code = [
            0x0f, 0x05, 0xc9, 0x90, 0x0f, 0x05, 0x31, 0xd2, 0x31, 0xc9, 0x45, 0x31, 0xdb, 0xc3,
        ];
        assert_eq!(find_syscall_ret(&code), Some(4));
        assert_eq!(find_syscall_ret(&[0x0f, 0x05, 0x31, 0xc8, 0xc3]), None);
        let restorer = [0x90, 0x48, 0xc7, 0xc0, 0x0f, 0, 0, 0, 0x0f, 0x05];
        assert_eq!(find_sigreturn(&restorer), Some(1));
    }

    #[test]
    fn a_syscall_to_restart_is_restarted_in_the_frame() {
        // SAFETY: user_regs_struct is plain integers; all zeros is valid.
        let mut regs: libc::user_regs_struct = unsafe { std::mem::zeroed() };
        regs.orig_rax = 232; // epoll_wait
        regs.rax = ERESTARTNOHAND as u64;
        regs.rip = 0x1002;
        let next = continuing(&regs);
        assert_eq!((next.rax, next.rip, next.orig_rax), (232, 0x1000, u64::MAX));
        regs.rax = 3; // it returned
        let next = continuing(&regs);
        assert_eq!((next.rax, next.rip), (3, 0x1002));
    }

    #[test]
    fn the_signal_frame_has_the_registers_where_the_kernel_reads_them() {
        // SAFETY: as above.
        let mut regs: libc::user_regs_struct = unsafe { std::mem::zeroed() };
        regs.rip = 0x4011;
        regs.rsp = 0x7ff0;
        regs.cs = 0x33;
        regs.ss = 0x2b;
        let frame = signal_frame(0x1000, 0xdead, &regs, 0x5, &[0u8; 512]);
        let word = |at: usize| u64::from_ne_bytes(frame[at..at + 8].try_into().unwrap());
        assert_eq!(word(0), 0xdead);
        assert_eq!(word(48 + 8 * 15), 0x7ff0, "rsp");
        assert_eq!(word(48 + 8 * 16), 0x4011, "rip");
        assert_eq!(word(48 + 144), 0x2b << 48 | 0x33, "cs and ss");
        assert_eq!(word(48 + 184), 0x1000 + 512, "fpstate");
        assert_eq!(word(304), 0x5, "mask");
        assert_eq!(frame.len() % 64, 0);
    }
}
