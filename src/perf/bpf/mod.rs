//! fd syscalls observed by a BPF program at every syscall exit, as records
//! in one BPF ring buffer: the same samples as [`super::ring`]'s (thread,
//! time, result, user registers, a copy of the top of the user stack), but
//! chosen by process (tgid) in the kernel, so that threads come and go at no
//! cost: a perf tracepoint event is per thread, and the kernel clones it for
//! every thread created (measured: pthread_create + join 37 → 65 µs with
//! the perf sampler attached).
//!
//! The program (`program`) runs at the raw tracepoint `sys_exit` for every
//! thread of the machine; for one whose tgid is in the `targets` map and a
//! syscall in the `syscalls` map, it counts the hit, reserves a record,
//! fills it and submits it; a full ring counts a loss instead. The counts
//! (per CPU) are what coverage is checked against, as the perf events'
//! counts are for the perf sampler.
//!
//! Why written by hand: the few dozen instructions are built with
//! [`asm`] and loaded with bpf(2) directly ([`sys`]), because the crates
//! that load BPF (aya, libbpf-rs) take ELF objects made by a BPF compiler,
//! which building fdbg would then need.
//!
//! Nothing stays in the kernel: the program, its maps and its attachment
//! are fds; closing them (or fdbg's end, however it ends) removes them.

pub mod asm;
pub mod ringbuf;
pub mod sys;

#[cfg(test)]
mod tests;

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

use asm::{Alu, Asm, Cond, R0, R1, R2, R3, R6, R7, R8, R9, R10, Size};
use ringbuf::RingBuf;
use sys::Map;

use super::format::SyscallRecord;
use super::record::{Sample, UserRegs};

/// Kernel helpers the program calls (include/uapi/linux/bpf.h).
const MAP_LOOKUP_ELEM: i32 = 1;
const KTIME_GET_NS: i32 = 5;
const GET_SMP_PROCESSOR_ID: i32 = 8;
const GET_CURRENT_PID_TGID: i32 = 14;
const PROBE_READ_USER: i32 = 112;
const PROBE_READ_KERNEL: i32 = 113;
const RINGBUF_RESERVE: i32 = 131;
const RINGBUF_SUBMIT: i32 = 132;
const RINGBUF_QUERY: i32 = 134;

/// bpf_ringbuf_query: bytes not yet consumed.
const RB_AVAIL_DATA: i32 = 0;
/// bpf_ringbuf_submit flags.
const RB_NO_WAKEUP: i32 = 1;
const RB_FORCE_WAKEUP: i32 = 2;

/// Syscall numbers the `syscalls` map has room for.
const SYSCALLS_MAX: u32 = 512;
/// Processes the `targets` map has room for.
const TARGETS_MAX: u32 = 4096;

/// The record the program writes, in u64 words: syscall number, result,
/// tgid << 32 | tid, CLOCK_MONOTONIC ns, CPU, bytes of stack copied, then
/// the thread's `struct pt_regs`, then the stack copy.
const REC_NR: i16 = 0;
const REC_RET: i16 = 8;
const REC_PID_TGID: i16 = 16;
const REC_TIME: i16 = 24;
const REC_CPU: i16 = 32;
const REC_COPIED: i16 = 40;
const REC_REGS: i16 = 48;
/// x86_64 `struct pt_regs`: 21 words.
const PT_REGS: i16 = 21 * 8;
const REC_STACK: i16 = REC_REGS + PT_REGS;
/// Offsets in `struct pt_regs` (arch/x86/include/asm/ptrace.h).
const PT_ORIG_AX: i16 = 15 * 8;
const PT_SP: i16 = 19 * 8;

/// Counts, per CPU: the targets' fd syscalls, and the records the ring had
/// no room for.
const COUNT_HITS: u32 = 0;
const COUNT_LOST: u32 = 1;

/// Why the BPF sampler cannot be the event source here.
#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    #[error("BPF is refused ({0}); run fdbg as root or with CAP_BPF and CAP_PERFMON")]
    Refused(io::Error),
    #[error("cannot create a BPF map: {0}")]
    Map(io::Error),
    #[error("the kernel refused fdbg's BPF program: {0}")]
    Load(sys::LoadError),
    #[error("cannot attach the BPF program to sys_exit: {0}")]
    Attach(io::Error),
    #[error("cannot map the BPF ring buffer: {0}")]
    Ring(io::Error),
    #[error(transparent)]
    Asm(#[from] asm::AsmError),
}

/// How the sampler is built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BpfConfig {
    /// The syscalls sampled (x86_64 numbers below 512).
    pub syscalls: Vec<u64>,
    /// Bytes of the user stack each record copies: a multiple of 8, at
    /// most 32 KiB. Where the stack is shorter, the longest of the halves
    /// that can be read is copied.
    pub stack_bytes: u32,
    /// The ring's size: a power of two pages.
    pub ring_bytes: usize,
    /// The program wakes fdbg once this many bytes wait in the ring.
    pub wakeup_bytes: u32,
}

/// The BPF program attached at sys_exit, its maps and its ring.
pub struct BpfSampler {
    targets: Map,
    counts: Map,
    ring: RingBuf,
    /// The ring's map.
    _ring_map: Map,
    /// Edge-triggered on the ring: readable once the program woke fdbg
    /// (a poll of the ring itself is readable while any record waits).
    woken: Epoll,
    _syscalls: Map,
    _program: OwnedFd,
    /// Attached while open; dropping it detaches the program.
    _link: OwnedFd,
    cpus: usize,
    /// Records decoded.
    pub decoded: u64,
    /// Records too short for their layout.
    pub malformed: u64,
}

impl BpfSampler {
    /// Load and attach the program, watching no process yet.
    pub fn open(config: &BpfConfig) -> Result<BpfSampler, BpfError> {
        let refused = |e: io::Error| match e.raw_os_error() {
            Some(libc::EPERM | libc::EACCES) => BpfError::Refused(e),
            _ => BpfError::Map(e),
        };
        let targets =
            Map::create(sys::MAP_TYPE_HASH, "fdbg_targets", 4, 4, TARGETS_MAX).map_err(refused)?;
        let syscalls = Map::create(sys::MAP_TYPE_ARRAY, "fdbg_syscalls", 4, 4, SYSCALLS_MAX)
            .map_err(BpfError::Map)?;
        for &nr in &config.syscalls {
            if nr < u64::from(SYSCALLS_MAX) {
                syscalls
                    .update(&(nr as u32).to_ne_bytes(), &1u32.to_ne_bytes())
                    .map_err(BpfError::Map)?;
            }
        }
        let counts = Map::create(sys::MAP_TYPE_PERCPU_ARRAY, "fdbg_counts", 4, 8, 2)
            .map_err(BpfError::Map)?;
        let ring_map = Map::create(
            sys::MAP_TYPE_RINGBUF,
            "fdbg_ring",
            0,
            0,
            config.ring_bytes as u32,
        )
        .map_err(BpfError::Map)?;
        let code = program(config, &targets, &syscalls, &counts, &ring_map)?;
        let prog = sys::load_program(sys::PROG_TYPE_RAW_TRACEPOINT, "fdbg_fd_exit", &code)
            .map_err(|e| match e.error.raw_os_error() {
                Some(libc::EPERM) => BpfError::Refused(e.error),
                _ => BpfError::Load(e),
            })?;
        let ring =
            RingBuf::map(ring_map.owned_fd().as_fd(), config.ring_bytes).map_err(BpfError::Ring)?;
        let woken =
            Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(|e| BpfError::Ring(e.into()))?;
        woken
            .add(
                ring_map.owned_fd(),
                EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLET, 0),
            )
            .map_err(|e| BpfError::Ring(e.into()))?;
        let link = sys::attach_raw_tracepoint(c"sys_exit", &prog).map_err(BpfError::Attach)?;
        Ok(BpfSampler {
            targets,
            counts,
            ring,
            _ring_map: ring_map,
            woken,
            _syscalls: syscalls,
            _program: prog,
            _link: link,
            cpus: sys::possible_cpus(),
            decoded: 0,
            malformed: 0,
        })
    }

    /// Sample process `tgid` (all its threads, present and future).
    pub fn add_target(&self, tgid: i32) -> io::Result<()> {
        self.targets
            .update(&(tgid as u32).to_ne_bytes(), &0u32.to_ne_bytes())
    }

    /// Stop sampling process `tgid`.
    pub fn remove_target(&self, tgid: i32) -> io::Result<()> {
        match self.targets.delete(&(tgid as u32).to_ne_bytes()) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            other => other,
        }
    }

    /// The kernel's counts over all CPUs: fd syscalls of the targets, and
    /// records lost for want of room.
    pub fn counts(&self) -> (u64, u64) {
        let sum = |key: u32| {
            let mut values = vec![0u8; 8 * self.cpus];
            if self.counts.lookup(&key.to_ne_bytes(), &mut values).is_err() {
                return 0;
            }
            values
                .chunks_exact(8)
                .map(|c| u64::from_ne_bytes(c.try_into().expect("8 bytes")))
                .sum()
        };
        (sum(COUNT_HITS), sum(COUNT_LOST))
    }

    /// The fd poll(2) reports readable when the program woke fdbg (once
    /// `wakeup_bytes` wait), until the next drain.
    pub fn poll_fd(&self) -> BorrowedFd<'_> {
        self.woken.0.as_fd()
    }

    /// Bytes waiting in the ring.
    pub fn pending(&self) -> u64 {
        self.ring.pending()
    }

    /// Hand every complete record to `each` as a sample (tracepoint 0, the
    /// exit), in the order the kernel wrote them.
    pub fn drain(&mut self, mut each: impl FnMut(&Sample<'_>)) -> usize {
        let mut events = [EpollEvent::empty()];
        let _ = self.woken.wait(&mut events, EpollTimeout::ZERO);
        let (mut decoded, mut malformed) = (0, 0);
        let n = self.ring.consume(|record| {
            match decode(record) {
                Some(sample) => {
                    decoded += 1;
                    each(&sample);
                }
                None => malformed += 1,
            }
            true
        });
        self.decoded += decoded;
        self.malformed += malformed;
        n
    }
}

fn word(record: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(record.get(at..at + 8)?.try_into().ok()?))
}

/// A record as a sample; None when it is shorter than its layout.
fn decode(record: &[u8]) -> Option<Sample<'_>> {
    let nr = word(record, REC_NR as usize)? as i64;
    let ret = word(record, REC_RET as usize)? as i64;
    let pid_tgid = word(record, REC_PID_TGID as usize)?;
    let time = word(record, REC_TIME as usize)?;
    let cpu = word(record, REC_CPU as usize)? as u32;
    let copied = usize::try_from(word(record, REC_COPIED as usize)?).ok()?;
    let pt = |i: usize| word(record, REC_REGS as usize + 8 * i);
    let regs = UserRegs {
        r15: pt(0)?,
        r14: pt(1)?,
        r13: pt(2)?,
        r12: pt(3)?,
        bp: pt(4)?,
        bx: pt(5)?,
        r11: pt(6)?,
        r10: pt(7)?,
        r9: pt(8)?,
        r8: pt(9)?,
        ax: pt(10)?,
        cx: pt(11)?,
        dx: pt(12)?,
        si: pt(13)?,
        di: pt(14)?,
        ip: pt(16)?,
        sp: pt(19)?,
    };
    let start = REC_STACK as usize;
    let stack = record.get(start..start.checked_add(copied)?)?;
    Some(Sample {
        tracepoint: 0,
        cpu,
        pid: (pid_tgid >> 32) as i32,
        tid: pid_tgid as u32 as i32,
        time,
        syscall: SyscallRecord::Exit { nr, ret },
        regs: Some(regs),
        stack,
    })
}

/// The program: at a syscall's exit (r1: the raw tracepoint's arguments,
/// the thread's `struct pt_regs *` and the result), for a target's fd
/// syscall, one record in the ring.
fn program(
    config: &BpfConfig,
    targets: &Map,
    syscalls: &Map,
    counts: &Map,
    ring: &Map,
) -> Result<Vec<u8>, asm::AsmError> {
    let stack_bytes = (config.stack_bytes.min(32 * 1024) & !7) as i32;
    let record = i32::from(REC_STACK) + stack_bytes;
    let mut a = Asm::new();
    a.mov(R6, R1);
    // A target's thread?
    a.call(GET_CURRENT_PID_TGID);
    a.mov(R9, R0);
    a.mov(R1, R0);
    a.alu_imm(Alu::Rsh, R1, 32);
    a.store(Size::W, R10, KEY, R1);
    lookup(&mut a, targets, "out");
    // Its syscall number: pt_regs->orig_ax.
    a.load(Size::DW, R7, R6, 0);
    a.mov(R1, R10);
    a.alu_imm(Alu::Add, R1, i32::from(NR));
    a.mov_imm(R2, 8);
    a.mov(R3, R7);
    a.alu_imm(Alu::Add, R3, i32::from(PT_ORIG_AX));
    a.call(PROBE_READ_KERNEL);
    a.jump_imm(Cond::Ne, R0, 0, "out");
    a.load(Size::DW, R1, R10, NR);
    a.jump_imm(Cond::Ge, R1, SYSCALLS_MAX as i32, "out");
    a.store(Size::W, R10, KEY, R1);
    lookup(&mut a, syscalls, "out");
    a.load(Size::W, R1, R0, 0);
    a.jump_imm(Cond::Eq, R1, 0, "out");
    // Counted, then recorded.
    count(&mut a, counts, COUNT_HITS, "counted")?;
    a.load_map(R1, ring.fd());
    a.mov_imm(R2, record);
    a.mov_imm(R3, 0);
    a.call(RINGBUF_RESERVE);
    a.jump_imm(Cond::Eq, R0, 0, "lost");
    a.mov(R8, R0);
    a.load(Size::DW, R1, R10, NR);
    a.store(Size::DW, R8, REC_NR, R1);
    a.load(Size::DW, R1, R6, 8);
    a.store(Size::DW, R8, REC_RET, R1);
    a.store(Size::DW, R8, REC_PID_TGID, R9);
    a.call(KTIME_GET_NS);
    a.store(Size::DW, R8, REC_TIME, R0);
    a.call(GET_SMP_PROCESSOR_ID);
    a.store(Size::DW, R8, REC_CPU, R0);
    a.mov(R1, R8);
    a.alu_imm(Alu::Add, R1, i32::from(REC_REGS));
    a.mov_imm(R2, i32::from(PT_REGS));
    a.mov(R3, R7);
    a.call(PROBE_READ_KERNEL);
    // The stack from sp: the whole copy, or where the stack ends sooner,
    // the longest half that reads.
    let mut size = stack_bytes;
    while size >= 64 {
        a.load(Size::DW, R3, R8, REC_REGS + PT_SP);
        a.mov(R1, R8);
        a.alu_imm(Alu::Add, R1, i32::from(REC_STACK));
        a.mov_imm(R2, size);
        a.call(PROBE_READ_USER);
        a.mov_imm(R1, size);
        a.jump_imm(Cond::Eq, R0, 0, "copied");
        size /= 2;
    }
    a.mov_imm(R1, 0);
    a.label("copied")?;
    a.store(Size::DW, R8, REC_COPIED, R1);
    // Wake fdbg only once enough waits: a wakeup per record would cost
    // the thread an interrupt each.
    a.load_map(R1, ring.fd());
    a.mov_imm(R2, RB_AVAIL_DATA);
    a.call(RINGBUF_QUERY);
    a.mov_imm(R2, RB_NO_WAKEUP);
    a.jump_imm(Cond::Lt, R0, config.wakeup_bytes as i32, "quiet");
    a.mov_imm(R2, RB_FORCE_WAKEUP);
    a.label("quiet")?;
    a.mov(R1, R8);
    a.call(RINGBUF_SUBMIT);
    a.goto("out");
    a.label("lost")?;
    count(&mut a, counts, COUNT_LOST, "lost_counted")?;
    a.label("out")?;
    a.mov_imm(R0, 0);
    a.exit();
    a.finish()
}

/// The program's stack frame: a u32 map key at -4, the syscall number at
/// -16.
const KEY: i16 = -4;
const NR: i16 = -16;

/// r0 = map[the key at KEY], or on to `missing` when it has none.
fn lookup(a: &mut Asm, map: &Map, missing: &'static str) {
    a.load_map(R1, map.fd());
    a.mov(R2, R10);
    a.alu_imm(Alu::Add, R2, i32::from(KEY));
    a.call(MAP_LOOKUP_ELEM);
    a.jump_imm(Cond::Eq, R0, 0, missing);
}

/// counts[key] += 1 on this CPU; continues at `done`.
fn count(a: &mut Asm, counts: &Map, key: u32, done: &'static str) -> Result<(), asm::AsmError> {
    a.store_imm(Size::W, R10, KEY, key as i32);
    lookup(a, counts, done);
    a.load(Size::DW, R1, R0, 0);
    a.alu_imm(Alu::Add, R1, 1);
    a.store(Size::DW, R0, 0, R1);
    a.label(done)
}
