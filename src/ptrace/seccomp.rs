//! The seccomp-bpf filter that `run` installs before exec: the fd syscalls
//! stop in the tracer (SECCOMP_RET_TRACE), everything else runs untouched
//! (SECCOMP_RET_ALLOW), so unrelated syscalls cost no ptrace stop.
//!
//! The program is built by hand: it is a couple of dozen classic-BPF
//! instructions over a fixed table, smaller than any builder crate's
//! vocabulary. fcntl stops only for the commands that change the fd table.
//! Which syscalls and commands those are is the syscall table's business:
//! the caller passes them in, so this layer does not import the decoder.

use crate::arch::{AUDIT_ARCH, X32_SYSCALL_BIT};

const BPF_LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const BPF_JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const BPF_JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const BPF_RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const SECCOMP_RET_TRACE: u32 = 0x7ff0_0000;

/// Offsets in `struct seccomp_data`.
const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;
const OFFSET_ARG1_LOW: u32 = 16 + 8;

/// A jump target, resolved once the program's length is known.
#[derive(Clone, Copy)]
enum Target {
    Next,
    Allow,
    Trace,
}

struct Insn {
    code: u16,
    jt: Target,
    jf: Target,
    k: u32,
}

/// The filter program: stop (SECCOMP_RET_TRACE) on every syscall in
/// `traced` other than `by_command.0`, and on that one when its second
/// argument (fcntl's command) is one of `by_command.1`; allow everything
/// else, and every syscall of another ABI (x32, a foreign audit arch).
pub fn filter(traced: &[u64], by_command: (u64, &[u64])) -> Vec<libc::sock_filter> {
    let (fcntl, fcntl_cmds) = by_command;
    let mut prog = vec![
        Insn {
            code: BPF_LD_W_ABS,
            jt: Target::Next,
            jf: Target::Next,
            k: OFFSET_ARCH,
        },
        Insn {
            code: BPF_JEQ_K,
            jt: Target::Next,
            jf: Target::Allow,
            k: AUDIT_ARCH,
        },
        Insn {
            code: BPF_LD_W_ABS,
            jt: Target::Next,
            jf: Target::Next,
            k: OFFSET_NR,
        },
        Insn {
            code: BPF_JGE_K,
            jt: Target::Allow,
            jf: Target::Next,
            k: X32_SYSCALL_BIT,
        },
    ];
    for &nr in traced.iter().filter(|&&nr| nr != fcntl) {
        prog.push(Insn {
            code: BPF_JEQ_K,
            jt: Target::Trace,
            jf: Target::Next,
            k: nr as u32,
        });
    }
    prog.push(Insn {
        code: BPF_JEQ_K,
        jt: Target::Next,
        jf: Target::Allow,
        k: fcntl as u32,
    });
    prog.push(Insn {
        code: BPF_LD_W_ABS,
        jt: Target::Next,
        jf: Target::Next,
        k: OFFSET_ARG1_LOW,
    });
    for &cmd in fcntl_cmds {
        prog.push(Insn {
            code: BPF_JEQ_K,
            jt: Target::Trace,
            jf: Target::Next,
            k: cmd as u32,
        });
    }
    let allow = prog.len();
    let trace = allow + 1;
    let offset = |at: usize, target: Target| -> u8 {
        let to = match target {
            Target::Next => at + 1,
            Target::Allow => allow,
            Target::Trace => trace,
        };
        (to - at - 1) as u8
    };
    let mut out: Vec<libc::sock_filter> = prog
        .iter()
        .enumerate()
        .map(|(at, insn)| libc::sock_filter {
            code: insn.code,
            jt: offset(at, insn.jt),
            jf: offset(at, insn.jf),
            k: insn.k,
        })
        .collect();
    out.push(libc::sock_filter {
        code: BPF_RET_K,
        jt: 0,
        jf: 0,
        k: SECCOMP_RET_ALLOW,
    });
    out.push(libc::sock_filter {
        code: BPF_RET_K,
        jt: 0,
        jf: 0,
        k: SECCOMP_RET_TRACE,
    });
    assert!(
        out.len() < 256,
        "jump offsets of the seccomp filter must fit in 8 bits"
    );
    out
}

/// Install `prog` on the calling thread. Meant for the child between fork
/// and exec: it only makes syscalls (async-signal-safe).
pub fn install(prog: &[libc::sock_filter]) -> std::io::Result<()> {
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    let set_filter = || {
        // SAFETY: `fprog` points at `prog`, alive for the whole call; the
        // kernel copies the program.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                &fprog as *const libc::sock_fprog,
            )
        };
        if ret == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    if set_filter().is_ok() {
        return Ok(());
    }
    // Without CAP_SYS_ADMIN the kernel wants no_new_privs first.
    // SAFETY: prctl with scalar arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    set_filter()
}
