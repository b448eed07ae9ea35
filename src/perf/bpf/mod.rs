//! fd syscalls observed by a BPF program, as records in one BPF ring
//! buffer: the same samples as [`super::ring`]'s (thread, time, result,
//! user registers, a copy of the top of the user stack), but chosen by
//! process (tgid) in the kernel, so that threads come and go at no cost: a
//! perf tracepoint event is per thread, and the kernel clones it for every
//! thread created (measured: pthread_create + join 37 → 65 µs with the
//! perf sampler attached).
//!
//! Where the program runs: at the exit tracepoint of each fd syscall
//! (`syscalls:sys_exit_openat`, ...), one perf event each for the whole
//! machine, so that other syscalls pass the kernel's check of a bit and no
//! program; or, where those tracepoints are missing, at the raw tracepoint
//! `sys_exit`, which every syscall passes and where the program looks the
//! syscall up in the `syscalls` map. Either way, for a thread whose tgid
//! is a target's (found in its slot of an array, or in the `targets` hash
//! where two targets share a slot), the program counts the hit, puts the
//! record together in a per-CPU scratch and writes it to the ring (a
//! record with the whole stack copy is reserved in the ring and filled
//! there); a full ring counts a loss instead. The counts
//! (per CPU) are what coverage is checked against, as the perf events'
//! counts are for the perf sampler.
//!
//! Why written by hand: the few dozen instructions are built with
//! [`asm`] and loaded with bpf(2) directly ([`sys`]), because the crates
//! that load BPF (aya, libbpf-rs) take ELF objects made by a BPF compiler,
//! which building fdbg would then need.
//!
//! Nothing stays in the kernel: the program, its maps and its attachments
//! are fds; closing them (or fdbg's end, however it ends) removes them.

pub mod asm;
pub mod ringbuf;
pub mod sys;

#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

use asm::{Alu, Asm, Cond, R0, R1, R2, R3, R4, R6, R7, R8, R9, R10, Reg, Size};
use ringbuf::RingBuf;
use sys::Map;

use super::format::SyscallRecord;
use super::record::{Sample, UserRegs};

/// Kernel helpers the program calls (include/uapi/linux/bpf.h).
const MAP_LOOKUP_ELEM: i32 = 1;
const KTIME_GET_NS: i32 = 5;
const GET_SMP_PROCESSOR_ID: i32 = 8;
const GET_CURRENT_PID_TGID: i32 = 14;
const GET_CURRENT_TASK_BTF: i32 = 158;
const TASK_PT_REGS: i32 = 175;
const PROBE_READ_USER: i32 = 112;
const PROBE_READ_KERNEL: i32 = 113;
const JIFFIES64: i32 = 118;
const RINGBUF_OUTPUT: i32 = 130;
const RINGBUF_RESERVE: i32 = 131;
const RINGBUF_SUBMIT: i32 = 132;
const RINGBUF_QUERY: i32 = 134;

/// bpf_ringbuf_query: bytes not yet consumed.
const RB_AVAIL_DATA: i32 = 0;
/// The ring's header before each record (its length and flags).
const RECORD_HEADER: i32 = 8;
/// bpf_ringbuf_submit flags.
const RB_NO_WAKEUP: i32 = 1;
const RB_FORCE_WAKEUP: i32 = 2;

/// Syscall numbers the `syscalls` map has room for.
const SYSCALLS_MAX: u32 = 512;
/// Processes the `targets` map has room for.
const TARGETS_MAX: u32 = 4096;
/// The `target_slots` array: a target's tgid in slot `tgid % SLOTS` (an
/// array lookup the kernel inlines, cheaper than the hash at every fd
/// syscall of every process), `COLLIDED` where two targets share one (no
/// tgid is that high: pid_max is at most 2^22).
const TARGET_SLOTS: u32 = 4096;
const COLLIDED: u32 = i32::MAX as u32;

/// The record the program writes, in u64 words: syscall number, result,
/// tgid << 32 | tid, CLOCK_MONOTONIC ns (within a tick), CPU, bytes of
/// stack copied, the memo id whose walk the stack held again (0: none),
/// then the thread's `struct pt_regs`, then the stack copy.
const REC_NR: i16 = 0;
const REC_RET: i16 = 8;
const REC_PID_TGID: i16 = 16;
const REC_TIME: i16 = 24;
const REC_CPU: i16 = 32;
const REC_COPIED: i16 = 40;
const REC_MEMO: i16 = 48;
const REC_REGS: i16 = 56;
/// x86_64 `struct pt_regs`: 21 words.
const PT_REGS: i16 = 21 * 8;
const REC_STACK: i16 = REC_REGS + PT_REGS;
/// Offsets in `struct pt_regs` (arch/x86/include/asm/ptrace.h).
const PT_BP: i16 = 4 * 8;
const PT_R10: i16 = 7 * 8;
const PT_DX: i16 = 12 * 8;
const PT_SI: i16 = 13 * 8;
const PT_DI: i16 = 14 * 8;
const PT_ORIG_AX: i16 = 15 * 8;
const PT_IP: i16 = 16 * 8;
const PT_SP: i16 = 19 * 8;

/// The return addresses a memo holds at most: a walk that read more is
/// not remembered in the kernel.
pub const MEMO_WORDS: usize = 24;
/// Memos in the kernel at most.
const MEMOS_MAX: u32 = 4096;
/// A memo: its id (u32), how many words (u32), the bytes from sp to the
/// end of its last word (u32), 4 bytes of padding, then per word its
/// offset from sp (u32, then 4 bytes of padding) and its value (u64).
const MEMO_HEADER: i16 = 16;
const MEMO_VALUE: u32 = MEMO_HEADER as u32 + 16 * MEMO_WORDS as u32;
/// The stack bytes a memo may span: the stack copy of the per-CPU
/// scratch they are read into (a power of two).
const SCRATCH_STACK: u32 = 8192;
/// After the record in the scratch: the tick (jiffies) of this CPU's
/// latest record, and the time read at its first.
const SCRATCH_TICK: i16 = REC_STACK + SCRATCH_STACK as i16;
const SCRATCH_TICK_NS: i16 = SCRATCH_TICK + 8;
/// Its key: tgid (u32), whether rbp is part of it (u32), ip, sp, rbp (or
/// 0).
const MEMO_KEY_SIZE: u32 = 32;

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
    /// The syscalls sampled: x86_64 numbers below 512, and names (the
    /// exit tracepoint of `openat` is `syscalls:sys_exit_openat`).
    pub syscalls: Vec<(u64, &'static str)>,
    /// Run at `sys_exit` even where the syscalls' own tracepoints could
    /// be used.
    pub at_sys_exit: bool,
    /// Syscalls whose arguments point further than the memory near them
    /// (recvmsg's header to its fds' buffer): with an argument in the
    /// stack, the whole copy, never the short one.
    pub whole_copy: Vec<u64>,
    /// Bytes of the user stack each record copies: a multiple of 8, at
    /// most 32 KiB. Where the stack is shorter, the longest of the halves
    /// that can be read is copied.
    pub stack_bytes: u32,
    /// The ring's size: a power of two pages.
    pub ring_bytes: usize,
    /// The program wakes fdbg once when the bytes waiting in the ring pass
    /// this many (again only after a drain).
    pub wakeup_bytes: u32,
}

/// The program's maps.
struct Maps {
    /// tgid → 0: the processes sampled.
    targets: Map,
    /// slot → tgid: the processes sampled, where they are alone in their
    /// slot.
    target_slots: Map,
    /// syscall number → 1: the syscalls sampled.
    syscalls: Map,
    /// Per CPU: hits, losses.
    counts: Map,
    /// (tgid, ip, sp) → a memo (`MEMO_VALUE`).
    memos: Map,
    /// Per CPU, one value: a record put together, with room for the
    /// stack a memo spans.
    scratch: Map,
    ring: Map,
}

/// The BPF program attached at sys_exit, its maps and its ring.
pub struct BpfSampler {
    maps: Maps,
    ring: RingBuf,
    /// Edge-triggered on the ring: readable once the program woke fdbg
    /// (a poll of the ring itself is readable while any record waits).
    woken: Epoll,
    _program: OwnedFd,
    /// The program's attachments: dropping them detaches it.
    _links: Vec<OwnedFd>,
    /// Where the program runs.
    hook: Hook,
    /// The processes sampled, as the maps hold them.
    targets: BTreeSet<u32>,
    cpus: usize,
    /// Records decoded (one too short for its layout is not: coverage
    /// shows it missing).
    pub decoded: u64,
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
        let target_slots = Map::create(sys::MAP_TYPE_ARRAY, "fdbg_slots", 4, 4, TARGET_SLOTS)
            .map_err(BpfError::Map)?;
        let syscalls = Map::create(sys::MAP_TYPE_ARRAY, "fdbg_syscalls", 4, 4, SYSCALLS_MAX)
            .map_err(BpfError::Map)?;
        for &(nr, _) in &config.syscalls {
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
        let memos = Map::create(
            sys::MAP_TYPE_HASH,
            "fdbg_memos",
            MEMO_KEY_SIZE,
            MEMO_VALUE,
            MEMOS_MAX,
        )
        .map_err(BpfError::Map)?;
        let scratch = Map::create(
            sys::MAP_TYPE_PERCPU_ARRAY,
            "fdbg_scratch",
            4,
            SCRATCH_TICK_NS as u32 + 8,
            1,
        )
        .map_err(BpfError::Map)?;
        let maps = Maps {
            targets,
            target_slots,
            syscalls,
            counts,
            memos,
            scratch,
            ring: ring_map,
        };
        let ring = RingBuf::map(maps.ring.owned_fd().as_fd(), config.ring_bytes)
            .map_err(BpfError::Ring)?;
        let woken =
            Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(|e| BpfError::Ring(e.into()))?;
        woken
            .add(
                maps.ring.owned_fd(),
                EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLET, 0),
            )
            .map_err(|e| BpfError::Ring(e.into()))?;
        let at_tracepoints = match config.at_sys_exit {
            true => Err("sys_exit was asked for".to_string()),
            false => at_syscall_tracepoints(config, &maps),
        };
        let (program, links, hook) = match at_tracepoints {
            Ok((program, links)) => (program, links, Hook::SyscallTracepoints),
            Err(why) => {
                let (program, link) = at_sys_exit(config, &maps)?;
                (program, vec![link], Hook::SysExit { why })
            }
        };
        Ok(BpfSampler {
            maps,
            ring,
            woken,
            _program: program,
            _links: links,
            hook,
            targets: BTreeSet::new(),
            cpus: sys::possible_cpus(),
            decoded: 0,
        })
    }

    /// Where the program runs.
    pub fn hook(&self) -> &Hook {
        &self.hook
    }

    /// Sample process `tgid` (all its threads, present and future).
    pub fn add_target(&mut self, tgid: i32) -> io::Result<()> {
        self.maps
            .targets
            .update(&(tgid as u32).to_ne_bytes(), &0u32.to_ne_bytes())?;
        self.targets.insert(tgid as u32);
        self.set_slot(tgid as u32)
    }

    /// Stop sampling process `tgid`.
    pub fn remove_target(&mut self, tgid: i32) -> io::Result<()> {
        match self.maps.targets.delete(&(tgid as u32).to_ne_bytes()) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            other => other?,
        }
        self.targets.remove(&(tgid as u32));
        self.set_slot(tgid as u32)
    }

    /// The slot of `tgid` as the targets make it: empty, the one target
    /// there, or `COLLIDED` (the program then asks the hash).
    fn set_slot(&self, tgid: u32) -> io::Result<()> {
        let slot = tgid % TARGET_SLOTS;
        let mut there = self.targets.iter().filter(|&&t| t % TARGET_SLOTS == slot);
        let value = match (there.next(), there.next()) {
            (None, _) => 0,
            (Some(&only), None) => only,
            (Some(_), Some(_)) => COLLIDED,
        };
        self.maps
            .target_slots
            .update(&slot.to_ne_bytes(), &value.to_ne_bytes())
    }

    /// Remember in the kernel that a walk of process `tgid` from `start`
    /// depended only on `words` (address, value): a sample that finds
    /// them again carries `id` instead of a stack copy. False when the
    /// walk read too many words or the map is full.
    pub fn add_memo(&self, tgid: i32, start: &MemoStart, id: u32, words: &[(u64, u64)]) -> bool {
        let sp = start.sp;
        if words.len() > MEMO_WORDS {
            return false;
        }
        let mut value = vec![0u8; MEMO_VALUE as usize];
        value[0..4].copy_from_slice(&id.to_ne_bytes());
        value[4..8].copy_from_slice(&(words.len() as u32).to_ne_bytes());
        let mut span = 0u32;
        for (i, &(addr, word)) in words.iter().enumerate() {
            let Some(off) = addr
                .checked_sub(sp)
                .and_then(|o| u32::try_from(o).ok())
                .filter(|&o| o % 8 == 0 && o + 8 <= SCRATCH_STACK)
            else {
                return false;
            };
            span = span.max(off + 8);
            let at = MEMO_HEADER as usize + 16 * i;
            value[at..at + 4].copy_from_slice(&off.to_ne_bytes());
            value[at + 8..at + 16].copy_from_slice(&word.to_ne_bytes());
        }
        value[8..12].copy_from_slice(&span.to_ne_bytes());
        self.maps
            .memos
            .update(&memo_key(tgid, start), &value)
            .is_ok()
    }

    /// Forget a memo (its process's code changed).
    pub fn remove_memo(&self, tgid: i32, start: &MemoStart) {
        let _ = self.maps.memos.delete(&memo_key(tgid, start));
    }

    /// The kernel's counts over all CPUs: fd syscalls of the targets, and
    /// records lost for want of room.
    pub fn counts(&self) -> (u64, u64) {
        let sum = |key: u32| {
            let mut values = vec![0u8; 8 * self.cpus];
            if self
                .maps
                .counts
                .lookup(&key.to_ne_bytes(), &mut values)
                .is_err()
            {
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
        let mut decoded = 0;
        let n = self.ring.consume(|record| {
            if let Some(sample) = decode(record) {
                decoded += 1;
                each(&sample);
            }
        });
        self.decoded += decoded;
        n
    }
}

/// Where the sampler's program runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hook {
    /// At each fd syscall's exit tracepoint.
    SyscallTracepoints,
    /// At the raw tracepoint `sys_exit`, and why not at the syscalls'
    /// own.
    SysExit { why: String },
}

impl std::fmt::Display for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Hook::SyscallTracepoints => write!(f, "at the fd syscalls' exit tracepoints"),
            Hook::SysExit { why } => {
                write!(
                    f,
                    "at sys_exit (not at the fd syscalls' own tracepoints: {why})"
                )
            }
        }
    }
}

fn load(entry: Entry, code: &[u8]) -> Result<OwnedFd, BpfError> {
    let prog_type = match entry {
        Entry::SysExit => sys::PROG_TYPE_RAW_TRACEPOINT,
        Entry::Tracepoint => sys::PROG_TYPE_TRACEPOINT,
    };
    sys::load_program(prog_type, "fdbg_fd_exit", code).map_err(|e| match e.error.raw_os_error() {
        Some(libc::EPERM) => BpfError::Refused(e.error),
        _ => BpfError::Load(e),
    })
}

/// The program at `sys_exit`, and its attachment.
fn at_sys_exit(config: &BpfConfig, maps: &Maps) -> Result<(OwnedFd, OwnedFd), BpfError> {
    let program = load(
        Entry::SysExit,
        &self::program(config, maps, Entry::SysExit)?,
    )?;
    let link = sys::attach_raw_tracepoint(c"sys_exit", &program).map_err(BpfError::Attach)?;
    Ok((program, link))
}

/// The program at each fd syscall's exit tracepoint (a perf event on CPU 0
/// runs it on every CPU: the kernel keeps a tracepoint's programs per
/// tracepoint, not per event), and its attachments; or why not.
fn at_syscall_tracepoints(
    config: &BpfConfig,
    maps: &Maps,
) -> Result<(OwnedFd, Vec<OwnedFd>), String> {
    let tracefs = super::tracefs().map_err(|e| e.to_string())?;
    let code = program(config, maps, Entry::Tracepoint).map_err(|e| e.to_string())?;
    let program = load(Entry::Tracepoint, &code).map_err(|e| e.to_string())?;
    let mut links = Vec::new();
    for &(_, name) in &config.syscalls {
        let tracepoint = format!("sys_exit_{name}");
        let id = super::tracepoint_id(&tracefs, "syscalls", &tracepoint)
            .map_err(|_| format!("no tracepoint syscalls:{tracepoint}"))?;
        let event = super::open_event(super::tracepoint_attr(id), -1, 0)
            .map_err(|e| format!("cannot open syscalls:{tracepoint}: {e}"))?;
        // SAFETY: `event` is a perf tracepoint event and `program` a
        // loaded tracepoint program; the kernel takes a reference to it.
        let set = unsafe {
            perf_event_open_sys::ioctls::SET_BPF(event.as_raw_fd(), program.as_raw_fd() as u32)
        };
        if set != 0 {
            return Err(format!(
                "cannot attach to syscalls:{tracepoint}: {}",
                io::Error::last_os_error()
            ));
        }
        links.push(event);
    }
    Ok((program, links))
}

fn memo_key(tgid: i32, start: &MemoStart) -> [u8; MEMO_KEY_SIZE as usize] {
    let mut key = [0u8; MEMO_KEY_SIZE as usize];
    key[0..4].copy_from_slice(&(tgid as u32).to_ne_bytes());
    key[4..8].copy_from_slice(&u32::from(start.bp.is_some()).to_ne_bytes());
    key[8..16].copy_from_slice(&start.ip.to_ne_bytes());
    key[16..24].copy_from_slice(&start.sp.to_ne_bytes());
    key[24..32].copy_from_slice(&start.bp.unwrap_or(0).to_ne_bytes());
    key
}

/// Where a remembered walk starts: ip and sp, and rbp when the walk
/// depended on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MemoStart {
    pub ip: u64,
    pub sp: u64,
    pub bp: Option<u64>,
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
    let memo = u32::try_from(word(record, REC_MEMO as usize)?).ok()?;
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
        memo: (memo != 0).then_some(memo),
    })
}

/// Where the program runs, and so what its context is.
#[derive(Clone, Copy)]
enum Entry {
    /// The raw tracepoint `sys_exit`, for every syscall: the thread's
    /// `struct pt_regs *` and the result.
    SysExit,
    /// A syscall's exit tracepoint: the trace entry's header (8 bytes),
    /// the syscall number (int), the result (long).
    Tracepoint,
}

/// In a syscall exit tracepoint's context: the number and the result.
const TP_NR: i16 = 8;
const TP_RET: i16 = 16;

/// The program: at a syscall's exit, for a target's fd syscall, one
/// record in the ring: without a stack copy when the `memos` map has a
/// walk from the same ip and sp whose return addresses the stack holds
/// again (with a short one when arguments point into the stack near sp),
/// else with the whole copy.
fn program(config: &BpfConfig, maps: &Maps, entry: Entry) -> Result<Vec<u8>, asm::AsmError> {
    let stack_bytes = (config.stack_bytes.min(32 * 1024) & !7) as i32;
    let mut a = Asm::new();
    a.mov(R6, R1);
    match entry {
        Entry::SysExit => {
            // An fd syscall (pt_regs->orig_ax; an array lookup, cheaper
            // than the targets' hash, and most syscalls are not fd
            // syscalls)?
            a.load(Size::DW, R7, R6, 0);
            read_kernel(&mut a, NR, PT_ORIG_AX);
            a.jump_imm(Cond::Ne, R0, 0, "out");
            a.load(Size::DW, R1, R10, NR);
            a.jump_imm(Cond::Ge, R1, SYSCALLS_MAX as i32, "out");
            a.store(Size::W, R10, KEY, R1);
            lookup(&mut a, &maps.syscalls, KEY, "out");
            a.load(Size::W, R1, R0, 0);
            a.jump_imm(Cond::Eq, R1, 0, "out");
        }
        Entry::Tracepoint => {
            a.load(Size::W, R1, R6, TP_NR);
            a.store(Size::DW, R10, NR, R1);
        }
    }
    // Of a target's thread?
    a.call(GET_CURRENT_PID_TGID);
    a.mov(R9, R0);
    a.mov(R1, R0);
    a.alu_imm(Alu::Rsh, R1, 32);
    a.store(Size::W, R10, KEY, R1);
    a.alu_imm(Alu::And, R1, TARGET_SLOTS as i32 - 1);
    a.store(Size::W, R10, SLOT, R1);
    lookup(&mut a, &maps.target_slots, SLOT, "out");
    a.load(Size::W, R1, R0, 0);
    a.load(Size::W, R2, R10, KEY);
    a.jump_reg(Cond::Eq, R1, R2, "target");
    a.jump_imm(Cond::Ne, R1, COLLIDED as i32, "out");
    lookup(&mut a, &maps.targets, KEY, "out");
    a.label("target")?;
    count(&mut a, &maps.counts, COUNT_HITS, "counted")?;
    // The record is put together in this CPU's scratch, laid out as in
    // the ring: a remembered walk's record is then written to the ring in
    // one copy, with the stack bytes the check read (its arguments').
    a.store_imm(Size::W, R10, KEY, 0);
    lookup(&mut a, &maps.scratch, KEY, "lost");
    a.mov(R8, R0);
    match entry {
        Entry::SysExit => a.load(Size::DW, R1, R6, 8),
        Entry::Tracepoint => {
            // The thread's registers, where the kernel saved them at its
            // entry.
            a.call(GET_CURRENT_TASK_BTF);
            a.mov(R1, R0);
            a.call(TASK_PT_REGS);
            a.mov(R7, R0);
            a.load(Size::DW, R1, R6, TP_RET)
        }
    }
    a.store(Size::DW, R8, REC_RET, R1);
    a.load(Size::DW, R1, R10, NR);
    a.store(Size::DW, R8, REC_NR, R1);
    a.store(Size::DW, R8, REC_PID_TGID, R9);
    a.store_imm(Size::DW, R8, REC_MEMO, 0);
    // The time: CLOCK_MONOTONIC as this CPU read it at its first record
    // of the current tick (a tick is a load; a clock read is most of a
    // remembered walk's record), so within a tick of the call.
    a.call(JIFFIES64);
    a.load(Size::DW, R1, R8, SCRATCH_TICK);
    a.jump_reg(Cond::Eq, R0, R1, "timed");
    a.store(Size::DW, R8, SCRATCH_TICK, R0);
    a.call(KTIME_GET_NS);
    a.store(Size::DW, R8, SCRATCH_TICK_NS, R0);
    a.label("timed")?;
    a.load(Size::DW, R1, R8, SCRATCH_TICK_NS);
    a.store(Size::DW, R8, REC_TIME, R1);
    a.call(GET_SMP_PROCESSOR_ID);
    a.store(Size::DW, R8, REC_CPU, R0);
    // The thread's registers: loaded one by one where the kernel says
    // they are a `struct pt_regs` (the verifier knows the type
    // bpf_task_pt_regs returns), else read as memory.
    match entry {
        Entry::Tracepoint => {
            for word in (0..PT_REGS).step_by(8) {
                a.load(Size::DW, R1, R7, word);
                a.store(Size::DW, R8, REC_REGS + word, R1);
            }
        }
        Entry::SysExit => {
            a.mov(R1, R8);
            a.alu_imm(Alu::Add, R1, i32::from(REC_REGS));
            a.mov_imm(R2, i32::from(PT_REGS));
            a.mov(R3, R7);
            a.call(PROBE_READ_KERNEL);
            a.jump_imm(Cond::Ne, R0, 0, "full");
        }
    }
    // A remembered walk from this ip and sp (key: tgid, 0, ip, sp, 0), or
    // from this ip, sp and rbp (tgid, 1, ip, sp, rbp)?
    a.mov(R1, R9);
    a.alu_imm(Alu::Rsh, R1, 32);
    a.store(Size::W, R10, MEMO_KEY, R1);
    a.store_imm(Size::W, R10, MEMO_KEY + 4, 0);
    a.load(Size::DW, R1, R8, REC_REGS + PT_IP);
    a.store(Size::DW, R10, MEMO_KEY + 8, R1);
    a.load(Size::DW, R1, R8, REC_REGS + PT_SP);
    a.store(Size::DW, R10, MEMO_KEY + 16, R1);
    // An argument that points into the stack the copy would hold (a path,
    // an address, the array pipe2 fills) is read from a copy, as it was at
    // the call, not later from a stack in use again: near sp, a short copy
    // beside a remembered walk; further up, the whole copy.
    let (args_copy, args_near) = args_copy(stack_bytes);
    a.store_imm(Size::W, R10, ARGS_IN_STACK, 0);
    for (off, next) in [
        (PT_DI, "arg_si"),
        (PT_SI, "arg_dx"),
        (PT_DX, "arg_r10"),
        (PT_R10, "args_checked"),
    ] {
        a.load(Size::DW, R1, R8, REC_REGS + off);
        a.load(Size::DW, R2, R8, REC_REGS + PT_SP);
        a.jump_reg(Cond::Lt, R1, R2, next);
        a.mov(R3, R2);
        a.alu_imm(Alu::Add, R3, args_near);
        a.alu_imm(Alu::Add, R2, stack_bytes);
        a.jump_reg(Cond::Ge, R1, R2, next);
        a.jump_reg(Cond::Ge, R1, R3, "full");
        a.store_imm(Size::W, R10, ARGS_IN_STACK, 1);
        a.label(next)?;
    }
    // Arguments that point further (to a buffer often higher in the same
    // frame): the whole copy.
    a.load(Size::W, R1, R10, ARGS_IN_STACK);
    a.jump_imm(Cond::Eq, R1, 0, "args_placed");
    a.load(Size::DW, R1, R10, NR);
    for &nr in &config.whole_copy {
        a.jump_imm(Cond::Eq, R1, nr as i32, "full");
    }
    a.label("args_placed")?;
    a.store_imm(Size::DW, R10, MEMO_KEY + 24, 0);
    lookup(&mut a, &maps.memos, MEMO_KEY, "memo_bp");
    a.goto("memo_found");
    a.label("memo_bp")?;
    a.store_imm(Size::W, R10, MEMO_KEY + 4, 1);
    a.load(Size::DW, R1, R8, REC_REGS + PT_BP);
    a.store(Size::DW, R10, MEMO_KEY + 24, R1);
    lookup(&mut a, &maps.memos, MEMO_KEY, "full");
    a.label("memo_found")?;
    a.mov(R6, R0);
    // The stack from sp to the memo's last word (and over the arguments'
    // short copy, where they point into it), in one read into the
    // record's stack copy (one read costs less than a read per word), then
    // the words compared there.
    a.load(Size::W, R2, R6, 8);
    a.load(Size::W, R1, R10, ARGS_IN_STACK);
    a.jump_imm(Cond::Eq, R1, 0, "span_sized");
    a.jump_imm(Cond::Ge, R2, args_copy, "span_sized");
    a.mov_imm(R2, args_copy);
    a.label("span_sized")?;
    a.jump_imm(Cond::Gt, R2, SCRATCH_STACK as i32, "full");
    a.mov(R1, R8);
    a.alu_imm(Alu::Add, R1, i32::from(REC_STACK));
    a.load(Size::DW, R3, R10, MEMO_KEY + 16);
    a.call(PROBE_READ_USER);
    a.jump_imm(Cond::Ne, R0, 0, "full");
    for i in 0..MEMO_WORDS as i16 {
        a.load(Size::W, R1, R6, 4);
        a.jump_imm(Cond::Le, R1, i32::from(i), "verified");
        a.load(Size::W, R1, R6, MEMO_HEADER + 16 * i);
        // In the scratch, aligned: the verifier's bound (the offsets are).
        a.alu_imm(Alu::And, R1, (SCRATCH_STACK - 8) as i32 & !7);
        a.mov(R2, R8);
        a.alu_reg(Alu::Add, R2, R1);
        a.load(Size::DW, R1, R2, REC_STACK);
        a.load(Size::DW, R2, R6, MEMO_HEADER + 8 + 16 * i);
        a.jump_reg(Cond::Ne, R1, R2, "full");
    }
    a.label("verified")?;
    a.load(Size::W, R1, R6, 0);
    a.store(Size::DW, R8, REC_MEMO, R1);
    a.load(Size::W, R1, R10, ARGS_IN_STACK);
    a.jump_imm(Cond::Ne, R1, 0, "with_args");
    output(&mut a, config, maps, 0, "quiet_short")?;
    a.label("with_args")?;
    output(&mut a, config, maps, args_copy, "quiet_args")?;
    a.label("full")?;
    record(&mut a, config, maps, stack_bytes)?;
    a.label("lost")?;
    count(&mut a, &maps.counts, COUNT_LOST, "lost_counted")?;
    a.label("out")?;
    a.mov_imm(R0, 0);
    a.exit();
    a.finish()
}

/// The short copy that goes with a remembered walk when arguments point
/// into the stack, and how far above sp they may point for it: the
/// arguments' memory (a sockaddr, an fd pair, a path) fits in the rest.
fn args_copy(stack_bytes: i32) -> (i32, i32) {
    let copy = stack_bytes.min(1024);
    (copy, (copy - 256).max(0))
}

/// The record put together in the scratch (r8), with `stack_bytes` of
/// its stack copy (0: none), written to the ring in one copy; then on to
/// `out`, or with the ring full to `lost`.
fn output(
    a: &mut Asm,
    config: &BpfConfig,
    maps: &Maps,
    stack_bytes: i32,
    quiet: &'static str,
) -> Result<(), asm::AsmError> {
    a.mov_imm(R1, stack_bytes);
    a.store(Size::DW, R8, REC_COPIED, R1);
    let size = i32::from(REC_STACK) + stack_bytes;
    // The bytes waiting do not count this record yet.
    wake_flags(a, config, maps, size, false, R4, quiet)?;
    a.load_map(R1, maps.ring.fd());
    a.mov(R2, R8);
    a.mov_imm(R3, size);
    a.call(RINGBUF_OUTPUT);
    a.jump_imm(Cond::Ne, R0, 0, "lost");
    a.goto("out");
    Ok(())
}

/// Reserve one record with a stack copy of `stack_bytes`, fill it from
/// the scratch (r8) and the stack, and submit it; then on to `out`, or
/// with the ring full to `lost`.
fn record(
    a: &mut Asm,
    config: &BpfConfig,
    maps: &Maps,
    stack_bytes: i32,
) -> Result<(), asm::AsmError> {
    let record_bytes = i32::from(REC_STACK) + stack_bytes;
    a.load_map(R1, maps.ring.fd());
    a.mov_imm(R2, record_bytes);
    a.mov_imm(R3, 0);
    a.call(RINGBUF_RESERVE);
    a.jump_imm(Cond::Eq, R0, 0, "lost");
    a.mov(R6, R0);
    for word in (0..REC_STACK).step_by(8) {
        a.load(Size::DW, R1, R8, word);
        a.store(Size::DW, R6, word, R1);
    }
    // The stack from sp: the whole copy, or where the stack ends sooner,
    // the longest half that reads.
    let mut size = stack_bytes;
    while size >= 64 {
        a.load(Size::DW, R3, R6, REC_REGS + PT_SP);
        a.mov(R1, R6);
        a.alu_imm(Alu::Add, R1, i32::from(REC_STACK));
        a.mov_imm(R2, size);
        a.call(PROBE_READ_USER);
        a.mov_imm(R1, size);
        a.jump_imm(Cond::Eq, R0, 0, "copied");
        size /= 2;
    }
    a.mov_imm(R1, 0);
    a.label("copied")?;
    a.store(Size::DW, R6, REC_COPIED, R1);
    wake_flags(a, config, maps, record_bytes, true, R2, "quiet")?;
    a.mov(R1, R6);
    a.call(RINGBUF_SUBMIT);
    a.goto("out");
    Ok(())
}

/// `flags` = the flags that wake fdbg once, by the record of `size` bytes
/// that takes the bytes waiting past `wakeup_bytes`: a wakeup is an
/// interrupt on this CPU (in a VM, an exit to the host), and until fdbg
/// has drained, every later record also finds that many waiting. The
/// bytes waiting count the record once it is `reserved`. A crossing
/// missed (another CPU's record reserved between this one's and the
/// count) waits for fdbg's next timed drain. Clobbers r0–r3.
fn wake_flags(
    a: &mut Asm,
    config: &BpfConfig,
    maps: &Maps,
    size: i32,
    reserved: bool,
    flags: Reg,
    quiet: &'static str,
) -> Result<(), asm::AsmError> {
    let record = RECORD_HEADER + size;
    let wakeup = config.wakeup_bytes as i32;
    let from = if reserved { wakeup } else { wakeup - record };
    a.load_map(R1, maps.ring.fd());
    a.mov_imm(R2, RB_AVAIL_DATA);
    a.call(RINGBUF_QUERY);
    a.mov_imm(flags, RB_NO_WAKEUP);
    a.jump_imm(Cond::Lt, R0, from, quiet);
    a.jump_imm(Cond::Ge, R0, from + record, quiet);
    a.mov_imm(flags, RB_FORCE_WAKEUP);
    a.label(quiet)
}

/// r0 = probe_read_kernel(r10 + slot, 8, r7 + offset): a word of the
/// thread's pt_regs into the frame.
fn read_kernel(a: &mut Asm, slot: i16, offset: i16) {
    a.mov(R1, R10);
    a.alu_imm(Alu::Add, R1, i32::from(slot));
    a.mov_imm(R2, 8);
    a.mov(R3, R7);
    a.alu_imm(Alu::Add, R3, i32::from(offset));
    a.call(PROBE_READ_KERNEL);
}

/// The program's stack frame: a u32 map key, a u32 flag (arguments near
/// sp), the syscall number, the memos' key (`MEMO_KEY_SIZE`).
const KEY: i16 = -4;
/// Whether an argument points into the stack near sp (a u32); first, the
/// target slot's key.
const ARGS_IN_STACK: i16 = -8;
const SLOT: i16 = ARGS_IN_STACK;
const NR: i16 = -16;
const MEMO_KEY: i16 = -48;

/// r0 = map[the key at `key`], or on to `missing` when it has none.
fn lookup(a: &mut Asm, map: &Map, key: i16, missing: &'static str) {
    a.load_map(R1, map.fd());
    a.mov(R2, R10);
    a.alu_imm(Alu::Add, R2, i32::from(key));
    a.call(MAP_LOOKUP_ELEM);
    a.jump_imm(Cond::Eq, R0, 0, missing);
}

/// counts[key] += 1 on this CPU; continues at `done`.
fn count(a: &mut Asm, counts: &Map, key: u32, done: &'static str) -> Result<(), asm::AsmError> {
    a.store_imm(Size::W, R10, KEY, key as i32);
    lookup(a, counts, KEY, done);
    a.load(Size::DW, R1, R0, 0);
    a.alu_imm(Alu::Add, R1, 1);
    a.store(Size::DW, R0, 0, R1);
    a.label(done)
}
