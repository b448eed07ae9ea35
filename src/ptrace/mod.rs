//! The only place that calls ptrace(2) and waitpid(2).
//!
//! Thin, typed wrappers: every request turns "the thread is gone" (ESRCH)
//! into `TraceError::Gone`, because a thread may vanish between any two
//! calls; wait statuses are decoded here by hand (real-time signals and
//! ptrace event bits do not fit a fixed signal enum), into the stop kinds of
//! ptrace(2). Nothing here knows about fds.

use std::io;

use thiserror::Error;

/// A thread id (the kernel's task id).
pub type Tid = i32;

#[derive(Debug, Error)]
pub enum TraceError {
    /// The thread exited or was reaped before the request reached it.
    #[error("thread is gone")]
    Gone,
    #[error("{op}: {source}")]
    Os {
        op: &'static str,
        #[source]
        source: io::Error,
    },
}

pub type Result<T> = std::result::Result<T, TraceError>;

fn check(op: &'static str, ret: libc::c_long) -> Result<libc::c_long> {
    if ret == -1 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ESRCH) {
            return Err(TraceError::Gone);
        }
        return Err(TraceError::Os { op, source: err });
    }
    Ok(ret)
}

fn request(
    op: &'static str,
    req: libc::c_uint,
    tid: Tid,
    addr: usize,
    data: usize,
) -> Result<libc::c_long> {
    // SAFETY: the requests issued through this helper take scalar addr/data
    // (no pointers), so the kernel reads or writes none of our memory.
    let ret = unsafe { libc::ptrace(req, tid, addr, data) };
    check(op, ret)
}

pub const EVENT_FORK: u32 = libc::PTRACE_EVENT_FORK as u32;
pub const EVENT_VFORK: u32 = libc::PTRACE_EVENT_VFORK as u32;
pub const EVENT_CLONE: u32 = libc::PTRACE_EVENT_CLONE as u32;
pub const EVENT_EXEC: u32 = libc::PTRACE_EVENT_EXEC as u32;
pub const EVENT_EXIT: u32 = libc::PTRACE_EVENT_EXIT as u32;
pub const EVENT_SECCOMP: u32 = libc::PTRACE_EVENT_SECCOMP as u32;
pub const EVENT_STOP: u32 = 128;

/// Options set at attach. `follow` adds fork/vfork tracing.
pub fn options(follow_children: bool, seccomp: bool, exit_kill: bool) -> libc::c_int {
    let mut opts = libc::PTRACE_O_TRACESYSGOOD
        | libc::PTRACE_O_TRACECLONE
        | libc::PTRACE_O_TRACEEXEC
        | libc::PTRACE_O_TRACEEXIT;
    if follow_children {
        opts |= libc::PTRACE_O_TRACEFORK | libc::PTRACE_O_TRACEVFORK;
    }
    if seccomp {
        opts |= libc::PTRACE_O_TRACESECCOMP;
    }
    if exit_kill {
        opts |= libc::PTRACE_O_EXITKILL;
    }
    opts
}

/// Attach without stopping the thread (PTRACE_SEIZE).
pub fn seize(tid: Tid, options: libc::c_int) -> Result<()> {
    request("PTRACE_SEIZE", libc::PTRACE_SEIZE, tid, 0, options as usize).map(drop)
}

/// Ask a seized thread to stop; it reports a PTRACE_EVENT_STOP.
pub fn interrupt(tid: Tid) -> Result<()> {
    request("PTRACE_INTERRUPT", libc::PTRACE_INTERRUPT, tid, 0, 0).map(drop)
}

/// How a stopped thread is let go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resume {
    /// Run to the next syscall entry or exit (PTRACE_SYSCALL).
    Syscall,
    /// Run until a seccomp, event or signal stop (PTRACE_CONT).
    Cont,
    /// Stay in a group-stop but report when it ends (PTRACE_LISTEN).
    Listen,
}

/// Resume a stopped thread, delivering `signal` (0 for none).
pub fn resume(tid: Tid, how: Resume, signal: i32) -> Result<()> {
    let (op, req) = match how {
        Resume::Syscall => ("PTRACE_SYSCALL", libc::PTRACE_SYSCALL),
        Resume::Cont => ("PTRACE_CONT", libc::PTRACE_CONT),
        Resume::Listen => ("PTRACE_LISTEN", libc::PTRACE_LISTEN),
    };
    request(op, req, tid, 0, signal as usize).map(drop)
}

/// Detach a stopped thread, delivering `signal` (0 for none).
pub fn detach(tid: Tid, signal: i32) -> Result<()> {
    request(
        "PTRACE_DETACH",
        libc::PTRACE_DETACH,
        tid,
        0,
        signal as usize,
    )
    .map(drop)
}

/// PTRACE_GETEVENTMSG: the new tid of a clone/fork event, the former tid of
/// an exec event, the exit status of an exit event.
pub fn event_message(tid: Tid) -> Result<u64> {
    let mut msg: libc::c_ulong = 0;
    // SAFETY: `msg` is a valid c_ulong the kernel writes the message into.
    let ret = unsafe {
        libc::ptrace(
            libc::PTRACE_GETEVENTMSG,
            tid,
            0,
            &mut msg as *mut libc::c_ulong,
        )
    };
    check("PTRACE_GETEVENTMSG", ret)?;
    Ok(msg as u64)
}

/// True when the stop of `tid` is a signal-delivery-stop (PTRACE_GETSIGINFO
/// succeeds), false for a group-stop (it fails with EINVAL).
pub fn has_siginfo(tid: Tid) -> Result<bool> {
    let mut info = std::mem::MaybeUninit::<libc::siginfo_t>::uninit();
    // SAFETY: `info` has room for a siginfo_t, which the kernel fills.
    let ret = unsafe { libc::ptrace(libc::PTRACE_GETSIGINFO, tid, 0, info.as_mut_ptr()) };
    match check("PTRACE_GETSIGINFO", ret) {
        Ok(_) => Ok(true),
        Err(TraceError::Os { source, .. }) if source.raw_os_error() == Some(libc::EINVAL) => {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// What PTRACE_GET_SYSCALL_INFO says about a syscall stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyscallStop {
    /// Syscall-enter-stop (PTRACE_SYSCALL) or a seccomp stop: number and arguments.
    Entry { nr: u64, args: [u64; 6] },
    /// Syscall-exit-stop: the return value (negative errno on failure).
    Exit { result: i64 },
    /// Not a syscall stop.
    None,
}

/// The kernel's `struct ptrace_syscall_info`, with the union laid out as
/// raw words (entry and seccomp: nr, args[6]; exit: rval, is_error).
#[repr(C)]
#[derive(Default)]
struct RawSyscallInfo {
    op: u8,
    reserved: u8,
    flags: u16,
    arch: u32,
    instruction_pointer: u64,
    stack_pointer: u64,
    words: [u64; 8],
}

const SYSCALL_INFO_ENTRY: u8 = 1;
const SYSCALL_INFO_EXIT: u8 = 2;
const SYSCALL_INFO_SECCOMP: u8 = 3;

pub fn syscall_info(tid: Tid) -> Result<SyscallStop> {
    let mut raw = RawSyscallInfo::default();
    let size = std::mem::size_of::<RawSyscallInfo>();
    // SAFETY: the kernel writes at most `size` bytes into `raw`, which is a
    // plain-old-data struct of exactly that size.
    let ret = unsafe {
        libc::ptrace(
            libc::PTRACE_GET_SYSCALL_INFO,
            tid,
            size,
            &mut raw as *mut RawSyscallInfo,
        )
    };
    check("PTRACE_GET_SYSCALL_INFO", ret)?;
    let w = raw.words;
    Ok(match raw.op {
        SYSCALL_INFO_ENTRY | SYSCALL_INFO_SECCOMP => SyscallStop::Entry {
            nr: w[0],
            args: [w[1], w[2], w[3], w[4], w[5], w[6]],
        },
        SYSCALL_INFO_EXIT => SyscallStop::Exit {
            result: w[0] as i64,
        },
        _ => SyscallStop::None,
    })
}

/// General-purpose registers of a stopped thread (PTRACE_GETREGS).
pub fn registers(tid: Tid) -> Result<libc::user_regs_struct> {
    let mut regs = std::mem::MaybeUninit::<libc::user_regs_struct>::uninit();
    // SAFETY: `regs` has room for a user_regs_struct, which the kernel fills
    // completely on success.
    let ret = unsafe { libc::ptrace(libc::PTRACE_GETREGS, tid, 0, regs.as_mut_ptr()) };
    check("PTRACE_GETREGS", ret)?;
    // SAFETY: initialised by the successful request above.
    Ok(unsafe { regs.assume_init() })
}

/// A decoded wait status, named as in ptrace(2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Syscall-enter or syscall-exit stop (SIGTRAP|0x80 with TRACESYSGOOD).
    Syscall,
    /// A ptrace event stop: PTRACE_EVENT_* and the stop signal.
    Event { event: u32, signal: i32 },
    /// Signal-delivery-stop, or a group-stop of a thread attached without
    /// SEIZE (told apart with `has_siginfo`).
    Signal(i32),
    /// The thread exited with this code (the process, for a leader).
    Exited(i32),
    /// The thread was killed by this signal.
    Killed(i32),
}

impl Stop {
    pub fn decode(status: i32) -> Stop {
        let low = status & 0x7f;
        if low == 0 {
            return Stop::Exited((status >> 8) & 0xff);
        }
        if (status & 0xff) != 0x7f {
            return Stop::Killed(low);
        }
        let signal = (status >> 8) & 0xff;
        let event = ((status >> 16) & 0xffff) as u32;
        if event != 0 {
            Stop::Event { event, signal }
        } else if signal == (libc::SIGTRAP | 0x80) {
            Stop::Syscall
        } else {
            Stop::Signal(signal)
        }
    }

    pub fn is_end(&self) -> bool {
        matches!(self, Stop::Exited(_) | Stop::Killed(_))
    }
}

/// Wait for any traced thread (`waitpid(-1, __WALL)`). `None` with `nohang`
/// when no thread has a status ready; `Err` with ECHILD when nothing is left
/// to wait for.
pub fn wait_any(nohang: bool) -> io::Result<Option<(Tid, Stop)>> {
    wait_for(-1, nohang)
}

/// Wait for one thread.
pub fn wait_for(tid: Tid, nohang: bool) -> io::Result<Option<(Tid, Stop)>> {
    let mut status = 0;
    let flags = libc::__WALL | if nohang { libc::WNOHANG } else { 0 };
    loop {
        // SAFETY: `status` is a valid int for the kernel to write.
        let pid = unsafe { libc::waitpid(tid, &mut status, flags) };
        if pid == -1 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(err);
        }
        if pid == 0 {
            return Ok(None);
        }
        return Ok(Some((pid, Stop::decode(status))));
    }
}

/// Reap exiting tracees on a thread of their own, after a detach: each
/// wait may last until the rest of its process is gone (a zombie leader).
/// The one wait outside the tracer's loop: these threads are no longer
/// part of any session, and a wait from any thread of the tracer's process
/// reaps them.
pub fn reap_in_background(tids: Vec<Tid>) {
    if tids.is_empty() {
        return;
    }
    let _ = std::thread::Builder::new()
        .name("reaper".into())
        .spawn(move || {
            for tid in tids {
                let _ = wait_for(tid, false);
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_statuses_decode_as_ptrace_names_them() {
        assert_eq!(Stop::decode(0), Stop::Exited(0));
        assert_eq!(Stop::decode(3 << 8), Stop::Exited(3));
        assert_eq!(Stop::decode(9), Stop::Killed(9));
        assert_eq!(Stop::decode(0x857f), Stop::Syscall);
        assert_eq!(
            Stop::decode((libc::SIGSTOP << 8) | 0x7f),
            Stop::Signal(libc::SIGSTOP)
        );
        // A real-time signal decodes too.
        assert_eq!(Stop::decode((40 << 8) | 0x7f), Stop::Signal(40));
        assert_eq!(
            Stop::decode((EVENT_STOP as i32) << 16 | (libc::SIGTRAP << 8) | 0x7f),
            Stop::Event {
                event: EVENT_STOP,
                signal: libc::SIGTRAP
            }
        );
        assert_eq!(
            Stop::decode((EVENT_EXEC as i32) << 16 | (libc::SIGTRAP << 8) | 0x7f),
            Stop::Event {
                event: EVENT_EXEC,
                signal: libc::SIGTRAP
            }
        );
    }
}

pub mod pidfd;
pub mod seccomp;
pub mod spawn;

/// The tracee's memory, read with process_vm_readv (no ptrace stop needed,
/// no word-at-a-time peeks).
pub struct ProcessMemory {
    pub pid: i32,
}

impl ProcessMemory {
    /// Read up to `len` bytes at `addr`; fewer when the range crosses into
    /// unmapped memory.
    pub fn read(&self, addr: u64, len: usize) -> Option<Vec<u8>> {
        use nix::sys::uio::{RemoteIoVec, process_vm_readv};
        let mut buf = vec![0u8; len];
        let remote = [RemoteIoVec {
            base: addr as usize,
            len,
        }];
        let n = process_vm_readv(
            nix::unistd::Pid::from_raw(self.pid),
            &mut [io::IoSliceMut::new(&mut buf)],
            &remote,
        )
        .ok()?;
        buf.truncate(n);
        Some(buf)
    }
}

impl ProcessMemory {
    /// Write `bytes` at `addr` (all or an error).
    pub fn write(&self, addr: u64, bytes: &[u8]) -> io::Result<()> {
        use nix::sys::uio::{RemoteIoVec, process_vm_writev};
        let remote = [RemoteIoVec {
            base: addr as usize,
            len: bytes.len(),
        }];
        let n = process_vm_writev(
            nix::unistd::Pid::from_raw(self.pid),
            &[io::IoSlice::new(bytes)],
            &remote,
        )?;
        if n != bytes.len() {
            return Err(io::Error::other("short write to the tracee's memory"));
        }
        Ok(())
    }
}

impl crate::vocab::TraceeMemory for ProcessMemory {
    fn read_bytes(&self, addr: u64, len: usize) -> Option<Vec<u8>> {
        self.read(addr, len).filter(|b| b.len() == len)
    }

    fn read_cstr(&self, addr: u64, max: usize) -> Option<Vec<u8>> {
        // Read page by page so a string at the end of a mapping still reads.
        let mut out = Vec::new();
        let mut at = addr;
        while out.len() < max {
            let to_page_end = 4096 - (at as usize % 4096);
            let chunk = self.read(at, to_page_end.min(max - out.len() + 1))?;
            if chunk.is_empty() {
                return if out.is_empty() { None } else { Some(out) };
            }
            if let Some(nul) = chunk.iter().position(|&b| b == 0) {
                out.extend_from_slice(&chunk[..nul]);
                return Some(out);
            }
            out.extend_from_slice(&chunk);
            at += chunk.len() as u64;
        }
        out.truncate(max);
        Some(out)
    }
}

pub mod inject;

/// The fields of a signal's siginfo that fdbg reads: its number, its
/// `si_code`, and the `si_perf_data` a perf event's SIGTRAP carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignalInfo {
    pub signo: i32,
    pub code: i32,
    pub perf_data: u64,
}

/// The kernel's siginfo (128 bytes) as far as fdbg reads it: the common
/// header, then `_sigfault`'s address and its `_perf` member.
#[repr(C)]
struct RawSigInfo {
    signo: i32,
    errno: i32,
    code: i32,
    pad: i32,
    addr: u64,
    perf_data: u64,
    perf_type: u32,
    perf_flags: u32,
    rest: [u8; 88],
}

impl RawSigInfo {
    fn zeroed() -> RawSigInfo {
        RawSigInfo {
            signo: 0,
            errno: 0,
            code: 0,
            pad: 0,
            addr: 0,
            perf_data: 0,
            perf_type: 0,
            perf_flags: 0,
            rest: [0; 88],
        }
    }

    fn info(&self) -> SignalInfo {
        SignalInfo {
            signo: self.signo,
            code: self.code,
            perf_data: self.perf_data,
        }
    }
}

/// The siginfo of the signal a thread is stopped for (signal-delivery-stop).
pub fn signal_info(tid: Tid) -> Result<SignalInfo> {
    let mut raw = RawSigInfo::zeroed();
    // SAFETY: `raw` is 128 bytes, the size of the kernel's siginfo, which
    // PTRACE_GETSIGINFO writes in full.
    let ret = unsafe { libc::ptrace(libc::PTRACE_GETSIGINFO, tid, 0, &mut raw as *mut RawSigInfo) };
    check("PTRACE_GETSIGINFO", ret)?;
    Ok(raw.info())
}

/// The signals queued for this thread alone (not its process), oldest
/// first, at most 8: PTRACE_PEEKSIGINFO on the private queue.
pub fn pending_signals(tid: Tid) -> Result<Vec<SignalInfo>> {
    #[repr(C)]
    struct PeekArgs {
        off: u64,
        flags: u32,
        nr: i32,
    }
    const MAX: usize = 8;
    let args = PeekArgs {
        off: 0,
        flags: 0,
        nr: MAX as i32,
    };
    let mut raw: Vec<RawSigInfo> = (0..MAX).map(|_| RawSigInfo::zeroed()).collect();
    // SAFETY: `args` is the kernel's ptrace_peeksiginfo_args; `raw` has
    // room for `nr` siginfos, which is all the kernel writes.
    let ret = unsafe {
        libc::ptrace(
            libc::PTRACE_PEEKSIGINFO,
            tid,
            &args as *const PeekArgs,
            raw.as_mut_ptr(),
        )
    };
    let n = check("PTRACE_PEEKSIGINFO", ret)? as usize;
    Ok(raw[..n.min(MAX)].iter().map(RawSigInfo::info).collect())
}

/// The blocked-signal mask of a stopped thread (PTRACE_GETSIGMASK).
pub fn signal_mask(tid: Tid) -> Result<u64> {
    let mut mask: u64 = 0;
    // SAFETY: the kernel writes 8 bytes (the size passed as addr) into `mask`.
    let ret = unsafe {
        libc::ptrace(
            libc::PTRACE_GETSIGMASK,
            tid,
            std::mem::size_of::<u64>(),
            &mut mask as *mut u64,
        )
    };
    check("PTRACE_GETSIGMASK", ret)?;
    Ok(mask)
}

/// Set the blocked-signal mask of a stopped thread (PTRACE_SETSIGMASK;
/// the kernel never blocks SIGKILL and SIGSTOP).
pub fn set_signal_mask(tid: Tid, mask: u64) -> Result<()> {
    // SAFETY: the kernel reads 8 bytes (the size passed as addr) from `mask`.
    let ret = unsafe {
        libc::ptrace(
            libc::PTRACE_SETSIGMASK,
            tid,
            std::mem::size_of::<u64>(),
            &mask as *const u64,
        )
    };
    check("PTRACE_SETSIGMASK", ret).map(drop)
}

/// Set the general-purpose registers of a stopped thread (PTRACE_SETREGS).
pub fn set_registers(tid: Tid, regs: &libc::user_regs_struct) -> Result<()> {
    // SAFETY: `regs` is a complete user_regs_struct the kernel only reads.
    let ret = unsafe {
        libc::ptrace(
            libc::PTRACE_SETREGS,
            tid,
            0,
            regs as *const libc::user_regs_struct,
        )
    };
    check("PTRACE_SETREGS", ret).map(drop)
}

/// Change a stopped tracee's ptrace options (PTRACE_SETOPTIONS).
pub fn set_options(tid: Tid, options: libc::c_int) -> Result<()> {
    request(
        "PTRACE_SETOPTIONS",
        libc::PTRACE_SETOPTIONS,
        tid,
        0,
        options as usize,
    )
    .map(drop)
}

/// The FPU and vector state of a stopped thread in the XSAVE layout
/// (PTRACE_GETREGSET NT_X86_XSTATE), or FXSAVE's where XSAVE is not there.
pub fn fpu_state(tid: Tid) -> Result<Vec<u8>> {
    const NT_X86_XSTATE: usize = 0x202;
    let mut buf = vec![0u8; 64 * 1024];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: the kernel writes at most iov_len bytes into `buf`, which
    // outlives the call, and sets iov_len to what it wrote.
    let ret = unsafe {
        libc::ptrace(
            libc::PTRACE_GETREGSET,
            tid,
            NT_X86_XSTATE,
            &mut iov as *mut libc::iovec,
        )
    };
    if check("PTRACE_GETREGSET", ret).is_ok() {
        buf.truncate(iov.iov_len);
        return Ok(buf);
    }
    let mut fx = vec![0u8; 512];
    // SAFETY: user_fpregs_struct is 512 bytes, the size of `fx`.
    let ret = unsafe { libc::ptrace(libc::PTRACE_GETFPREGS, tid, 0, fx.as_mut_ptr()) };
    check("PTRACE_GETFPREGS", ret)?;
    Ok(fx)
}
