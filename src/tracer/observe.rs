//! The observing event source of an attach: while nothing needs the
//! process stopped at an fd event (no breakpoint, catchpoint or step), the
//! kernel writes every fd syscall into perf ring buffers and the process
//! never stops for one. Each sample carries the thread, the time, the user
//! registers (arguments, result, IP, SP) and a copy of the top of the user
//! stack; they become the same model events as stops give, unwound from
//! the copy.
//!
//! One sampled tracepoint: the exit of every fd syscall, with a copy of the
//! top of the stack. A sampled raw syscall tracepoint costs the process at
//! every syscall, fd or not (measured: ~70 ns a syscall for the exit, as
//! much again for the entry), so the entry of close is not sampled: a
//! close frees its number during the syscall, and another thread's
//! creation of that number can be sampled before the close returns; the
//! model lets the creation displace the holder and the late close close
//! it, as under perf SIGTRAPs.
//!
//! Pointer arguments (openat's path, pipe2's array, accept's address) are
//! read from the stack copy where they lie in it, else from the process's
//! memory when the sample is decoded: after the call, so a buffer reused
//! since can give a wrong path (the fd's /proc link is the truth, and
//! `fds` shows it); after an exec, a string in a read-only file mapping
//! (a literal) comes from the file.
//!
//! Nothing is lost without a word: the kernel's count of each tracepoint's
//! hits is compared with the samples decoded (`stats` shows the coverage),
//! PERF_RECORD_LOST and throttling are counted, and a process whose
//! samples were lost is reconciled against /proc at the next report.

use std::collections::BTreeSet;

use crate::fdtable::{Pid, Seq};
use crate::perf::bpf::{BpfConfig, MemoStart};
use crate::perf::{
    self, PerfError, Sample, SamplerConfig, SyscallRecord, SyscallSampler, TracepointSpec,
};
use crate::ptrace::{ProcessMemory, Tid};
use crate::syscalls::{self, SyscallEntry};
use crate::vocab::TraceeMemory;

use super::samplers::{self, KernelMemos, NoBpf, Samplers};
use super::{Mechanism, Notice, Tracer, TracerError};

/// The user stack bytes a sample copies (creations, closes and bad closes
/// alike): what walking the threads' stacks needed at attach, plus
/// `HANDLER_ROOM`, rounded up to a power of two, at least
/// `STACK_SAMPLE_MIN` and at most `STACK_SAMPLE_MAX`. A walk that needs
/// words above the copy reads them from the process (see
/// `Unwinder::unwind_beyond`), where a return address may have changed
/// since the call: the copy then grows to what the walk needed at the next
/// chance, which costs a stop of every thread.
const STACK_SAMPLE_MIN: u32 = 1024;
const STACK_SAMPLE_MAX: u32 = 32 * 1024;

/// How much deeper than at attach the fd syscalls are expected: a server
/// is attached while it waits (accept, epoll_wait), and opens and closes
/// fds in the handlers that wait calls, a few frames deeper. The login
/// server waits at 456 bytes and creates its sockets at 984; nginx waits
/// at about 1.5 KiB and opens files at about 3 KiB.
const HANDLER_ROOM: usize = 1024;

/// The copy for walks that need `needed` bytes, with room for a frame more.
fn copy_size(needed: usize) -> u32 {
    let bytes = u32::try_from(needed + 256).unwrap_or(u32::MAX);
    bytes
        .checked_next_power_of_two()
        .unwrap_or(STACK_SAMPLE_MAX)
        .clamp(STACK_SAMPLE_MIN, STACK_SAMPLE_MAX)
}

/// The memory of all rings together (they are per CPU): 128 MiB, at most
/// 64 MiB and at least 4 MiB per CPU. A burst of fd syscalls from several
/// threads writes faster than one tracer decodes (the threads test: 16,000
/// events, 54 MB with their stack copies, in ~40 ms, on two CPUs shared with
/// the four threads); the rings hold it until decoded. Halved while
/// the kernel refuses the lock (`perf_event_mlock_kb` without
/// CAP_IPC_LOCK).
const RINGS_BYTES: usize = 128 << 20;

/// The BPF program's one ring, shared by the CPUs.
const BPF_RING_BYTES: usize = 64 << 20;
const RING_PAGES_LOG2_MAX: u32 = 14;
const RING_PAGES_LOG2_MIN: u32 = 4;

/// When a ring wakes fdbg: at `WAKEUP_BYTES`, or a quarter of a smaller
/// ring, long before it is full; below that, the drains every
/// `OBSERVE_POLL_MS` take the samples. Each wakeup costs fdbg a context
/// switch and the server's CPU an interrupt: on nginx under keep-alive
/// load (~60,000 fd events/s, 4 KiB stack copies), fdbg's CPU per event
/// was 3.1 µs waking at 256 KiB, 2.1 at 2 MiB, 2.1 at 8 MiB (medians of 3,
/// 2-CPU VM).
const WAKEUP_BYTES: u32 = 2 << 20;

fn wakeup_bytes(data_pages_log2: u32) -> u32 {
    let ring = 4096u64 << data_pages_log2;
    WAKEUP_BYTES.min((ring / 4) as u32)
}

/// The tracepoints, in the order of `tracepoints()`.
const EXITS: usize = 0;

fn tracepoints(stack_bytes: u32) -> Vec<TracepointSpec> {
    vec![TracepointSpec {
        group: "raw_syscalls".into(),
        name: "sys_exit".into(),
        filter: super::perf_source::fd_syscalls_filter(),
        stack_bytes,
    }]
}

/// The samplers of a session and what they have given.
pub(super) struct Observer {
    /// None once closed (detach); `closed_coverage` keeps the figures of
    /// the samplers closed so far.
    sampler: Option<Samplers<Digested>>,
    /// What takes the samples, and why not the BPF program when not.
    sampled_by: String,
    /// Walks remembered in the kernel (the BPF sampler only).
    memos: KernelMemos,
    closed_coverage: (u64, u64),
    closed_lost: u64,
    follow_forks: bool,
    /// The stack bytes each exit tracepoint copies now.
    stack_bytes: u32,
    /// The most stack bytes a walk over a sample's copy needed.
    wanted: usize,
    pub(super) enabled: bool,
    /// Ring fds that hung up (their thread is gone): not polled again.
    hung: Vec<bool>,
    /// The most fd events one drain gave: how far the count can move
    /// between two looks (`break count` arms stops four times that, plus
    /// 256, ahead).
    pub(super) largest_batch: usize,
    /// Samples lost (PERF_RECORD_LOST) or missing from the kernel's count
    /// at the last reconcile.
    pub(super) lost_reconciled: u64,
}

impl Observer {
    /// Open samplers on every thread of the session (stopped), enabled.
    /// `depth`: the most stack bytes a walk of a thread's stack needed at
    /// attach.
    pub(super) fn open(
        tids: Vec<Tid>,
        pids: &BTreeSet<Pid>,
        follow_forks: bool,
        depth: usize,
    ) -> Result<Observer, PerfError> {
        perf::raw_samples_permitted()?;
        raise_fd_limit();
        let stack_bytes = copy_size(depth + HANDLER_ROOM);
        let (sampler, no_bpf) = open_sampler(tids, pids, follow_forks, stack_bytes)?;
        let rings = sampler.poll_fds().len();
        Ok(Observer {
            sampled_by: sampled_by(&sampler, no_bpf.as_ref()),
            memos: sampler.memos(),
            sampler: Some(sampler),
            closed_coverage: (0, 0),
            closed_lost: 0,
            follow_forks,
            stack_bytes,
            wanted: 0,
            enabled: true,
            hung: vec![false; rings],
            largest_batch: 0,
            lost_reconciled: 0,
        })
    }

    pub(super) fn figures(&self) -> ObservedFigures {
        let (counted, recorded) = self.coverage();
        ObservedFigures {
            counted,
            recorded,
            coverage: if counted == 0 {
                1.0
            } else {
                recorded as f64 / counted as f64
            },
            lost: self.missing(),
            stack_bytes: self.stack_bytes,
            sampler: self.sampled_by.clone(),
            walks_found_again: self.memos.found_again,
        }
    }

    /// Samples lost: what the kernel said it dropped or throttled, or, when
    /// more, what its count has beyond the samples decoded (a LOST record
    /// comes only with the next sample that fits).
    fn missing(&self) -> u64 {
        let (counted, recorded) = self.coverage();
        self.lost().max(counted.saturating_sub(recorded))
    }

    /// Whether the copies fell short and can grow.
    pub(super) fn wants_more_stack(&self) -> bool {
        copy_size(self.wanted) > self.stack_bytes
    }

    /// Replace the sampler by one whose short copies are twice as long;
    /// every thread (`tids`) is stopped and the old sampler drained.
    fn grow(&mut self, tids: Vec<Tid>, pids: &BTreeSet<Pid>) -> Result<(), PerfError> {
        let stack_bytes = self.stack_bytes.max(copy_size(self.wanted));
        let (sampler, no_bpf) = open_sampler(tids, pids, self.follow_forks, stack_bytes)?;
        self.sampled_by = sampled_by(&sampler, no_bpf.as_ref());
        self.memos = sampler.memos();
        self.closed_lost = self.lost();
        self.closed_coverage = self.coverage();
        self.hung = vec![false; sampler.poll_fds().len()];
        // The old one is closed only now: no moment without events.
        self.sampler = Some(sampler);
        self.stack_bytes = stack_bytes;
        Ok(())
    }
}

/// What `stats` says takes the samples.
fn sampled_by(sampler: &Samplers<Digested>, no_bpf: Option<&NoBpf>) -> String {
    match no_bpf {
        None => sampler.kind().to_string(),
        Some(why) => format!("{} (not BPF: {why})", sampler.kind()),
    }
}

/// Samplers on the processes `pids` (the BPF program), or on their
/// threads `tids` and the threads they create (perf events), with the
/// stack copies `stack_bytes`; and why not the BPF program.
fn open_sampler(
    tids: Vec<Tid>,
    pids: &BTreeSet<Pid>,
    follow_forks: bool,
    stack_bytes: u32,
) -> Result<(Samplers<Digested>, Option<NoBpf>), PerfError> {
    let no_bpf = if follow_forks {
        NoBpf::FollowForks
    } else if samplers::perf_asked() {
        NoBpf::Asked
    } else {
        let config = BpfConfig {
            syscalls: syscalls::traced_syscalls()
                .iter()
                .filter_map(|&nr| Some((nr, syscalls::syscall_name(nr)?)))
                .collect(),
            at_sys_exit: samplers::sys_exit_asked(),
            whole_copy: syscalls::syscalls_with(syscalls::Flags::POINTS_FURTHER)
                .map(|(nr, _)| nr)
                .collect(),
            stack_bytes,
            ring_bytes: BPF_RING_BYTES,
            wakeup_bytes: WAKEUP_BYTES,
        };
        match Samplers::bpf(&config, pids) {
            Ok(sampler) => return Ok((sampler, None)),
            Err(why) => why,
        }
    };
    open_perf_sampler(tids, follow_forks, stack_bytes).map(|s| (Samplers::Perf(s), Some(no_bpf)))
}

/// perf events on `tids` (and the threads they create).
fn open_perf_sampler(
    tids: Vec<Tid>,
    follow_forks: bool,
    stack_bytes: u32,
) -> Result<SyscallSampler<Digested>, PerfError> {
    let tracefs = perf::tracefs()?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_cpu_pages = (RINGS_BYTES / 4096 / cpus).max(1);
    let mut config = SamplerConfig {
        tids,
        inherit_processes: follow_forks,
        data_pages_log2: per_cpu_pages.ilog2().clamp(10, RING_PAGES_LOG2_MAX),
        wakeup_bytes: None,
    };
    loop {
        config.wakeup_bytes = Some(wakeup_bytes(config.data_pages_log2));
        match SyscallSampler::open(&tracefs, &config, &tracepoints(stack_bytes)) {
            Err(PerfError::Ring(e))
                if e.raw_os_error() == Some(libc::EPERM)
                    && config.data_pages_log2 > RING_PAGES_LOG2_MIN =>
            {
                config.data_pages_log2 -= 1;
            }
            other => return other,
        }
    }
}

impl Observer {
    /// The fd syscalls the kernel counted (every exit tracepoint) and the
    /// samples of them decoded.
    pub(super) fn coverage(&self) -> (u64, u64) {
        let Some(sampler) = self.sampler.as_ref() else {
            return self.closed_coverage;
        };
        let (kernel, sampled) = sampler.coverage();
        (
            self.closed_coverage.0 + kernel,
            self.closed_coverage.1 + sampled,
        )
    }

    /// Samples the kernel said it dropped or throttled.
    pub(super) fn lost(&self) -> u64 {
        self.closed_lost + self.sampler.as_ref().map_or(0, Samplers::lost)
    }

    fn set_enabled(&mut self, enabled: bool) -> bool {
        let done = self
            .sampler
            .as_mut()
            .is_some_and(|s| s.set_enabled(enabled).is_ok());
        if done {
            self.enabled = enabled;
        }
        done
    }
}

/// Each thread has its events on each CPU: allow fdbg as many fds as the
/// hard limit does.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// A sample's view of the process's memory: the stack copy where the
/// range lies in it, else the memory as it is now (unless the process
/// exec'd since), else the file behind a read-only mapping as it was at
/// the last look (string literals).
struct SampledMemory<'a> {
    pid: Pid,
    sp: u64,
    stack: &'a [u8],
    live: Option<ProcessMemory>,
    files: &'a [crate::modules::FileMapping],
    /// The process's pages read for this batch of samples.
    pages: &'a std::cell::RefCell<LivePages>,
}

/// Pages of live memory read once per batch of samples: the samples of a
/// batch are all decoded after the fact, within microseconds of each
/// other, so reading a page again for each of them (nginx: the same
/// buffer holds the path of every request's openat) would give the same
/// bytes at the price of a syscall each.
#[derive(Default)]
struct LivePages {
    pages: rustc_hash::FxHashMap<(Pid, u64), Option<Box<[u8]>>>,
}

/// Pages kept per batch at most; past that, reads go to the process.
const LIVE_PAGES_MAX: usize = 256;
const PAGE: u64 = 4096;

impl LivePages {
    /// The whole page at `page` of process `pid`, read once per batch;
    /// None where it is not readable whole (the end of a mapping) or the
    /// batch holds `LIVE_PAGES_MAX` pages already.
    fn page(&mut self, memory: &ProcessMemory, pid: Pid, page: u64) -> Option<&[u8]> {
        if self.pages.len() >= LIVE_PAGES_MAX && !self.pages.contains_key(&(pid, page)) {
            return None;
        }
        self.pages
            .entry((pid, page))
            .or_insert_with(|| {
                memory
                    .read(page, PAGE as usize)
                    .filter(|b| b.len() == PAGE as usize)
                    .map(Vec::into_boxed_slice)
            })
            .as_deref()
    }

    /// `len` bytes at `addr` of the process `memory` reads, as far as
    /// they are readable.
    fn read(&mut self, memory: &ProcessMemory, pid: Pid, addr: u64, len: usize) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(len);
        let mut at = addr;
        while out.len() < len {
            let page = at / PAGE * PAGE;
            let Some(bytes) = self.page(memory, pid, page) else {
                // From the process, as asked.
                out.extend_from_slice(&memory.read(at, len - out.len()).unwrap_or_default());
                break;
            };
            let from = (at - page) as usize;
            let n = (len - out.len()).min(PAGE as usize - from);
            out.extend_from_slice(&bytes[from..from + n]);
            at += n as u64;
        }
        (!out.is_empty()).then_some(out)
    }

    /// The NUL-terminated string at `addr` (at most `max` bytes, without
    /// its NUL), read through the pages; None where nothing is readable.
    fn read_cstr(
        &mut self,
        memory: &ProcessMemory,
        pid: Pid,
        addr: u64,
        max: usize,
    ) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(64);
        let mut at = addr;
        while out.len() < max {
            let page = at / PAGE * PAGE;
            let Some(bytes) = self.page(memory, pid, page) else {
                // The process's own reader, for the rest.
                return match memory.read_cstr(at, max - out.len()) {
                    Some(rest) => {
                        out.extend_from_slice(&rest);
                        Some(out)
                    }
                    None if out.is_empty() => None,
                    None => Some(out),
                };
            };
            let chunk = &bytes[(at - page) as usize..];
            if let Some(nul) = chunk.iter().position(|&b| b == 0) {
                out.extend_from_slice(&chunk[..nul]);
                out.truncate(max);
                return Some(out);
            }
            out.extend_from_slice(chunk);
            at = page + PAGE;
        }
        out.truncate(max);
        Some(out)
    }
}

impl SampledMemory<'_> {
    fn live_read(&self, addr: u64, len: usize) -> Option<Vec<u8>> {
        let memory = self.live.as_ref()?;
        self.pages.borrow_mut().read(memory, self.pid, addr, len)
    }

    fn beyond_copy(&self, addr: u64, len: usize) -> Option<Vec<u8>> {
        self.live_read(addr, len)
            .or_else(|| crate::modules::read_mapped_file(self.files, addr, len))
    }
}

impl SampledMemory<'_> {
    fn in_copy(&self, addr: u64, len: usize) -> Option<&[u8]> {
        let start = usize::try_from(addr.checked_sub(self.sp)?).ok()?;
        self.stack.get(start..start.checked_add(len)?)
    }
}

impl TraceeMemory for SampledMemory<'_> {
    fn read_bytes(&self, addr: u64, len: usize) -> Option<Vec<u8>> {
        match self.in_copy(addr, len) {
            Some(bytes) => Some(bytes.to_vec()),
            None => self.beyond_copy(addr, len).filter(|b| b.len() == len),
        }
    }

    fn read_cstr(&self, addr: u64, max: usize) -> Option<Vec<u8>> {
        if let Some(start) = addr
            .checked_sub(self.sp)
            .and_then(|o| usize::try_from(o).ok())
            .filter(|&o| o < self.stack.len())
        {
            let rest = &self.stack[start..];
            if let Some(nul) = rest.iter().take(max + 1).position(|&b| b == 0) {
                return Some(rest[..nul].to_vec());
            }
        }
        if let Some(live) = &self.live
            && let Some(text) = self.pages.borrow_mut().read_cstr(live, self.pid, addr, max)
        {
            return Some(text);
        }
        let bytes = crate::modules::read_mapped_file(self.files, addr, max + 1)?;
        let nul = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        Some(bytes[..nul.min(max)].to_vec())
    }
}

/// A batch of samples being taken: each digested, then recorded.
struct Taking<'a> {
    tracer: &'a mut Tracer,
    pages: std::cell::RefCell<LivePages>,
    recorded: Vec<Seq>,
}

impl samplers::Taker<Digested> for Taking<'_> {
    fn digest(&mut self, sample: &Sample<'_>) -> Option<Digested> {
        self.tracer.digest_sample(sample, &self.pages)
    }

    fn apply(&mut self, d: Digested) {
        let seq = self
            .tracer
            .record_decoded(d.pid, d.tid, d.decoded, d.stack, d.time);
        self.recorded.push(seq);
    }
}

/// A sample made ready for the model: what the ring held is given back
/// to the kernel, this waits for its turn in time order.
pub(super) struct Digested {
    pid: Pid,
    tid: Tid,
    decoded: syscalls::Decoded,
    stack: Option<crate::stacks::StackId>,
    time: u64,
}

/// What observing has given, for `stats`.
#[derive(Clone, Debug)]
pub struct ObservedFigures {
    /// Fd syscalls the kernel counted while observing.
    pub counted: u64,
    /// Samples of them decoded.
    pub recorded: u64,
    /// recorded / counted (1 when nothing was counted).
    pub coverage: f64,
    /// Samples the kernel dropped because a ring was full, or throttled.
    pub lost: u64,
    /// The stack bytes each sample copies now.
    pub stack_bytes: u32,
    /// What takes the samples, and why not the BPF program when not.
    pub sampler: String,
    /// Samples whose stack the kernel found to be a remembered walk's, so
    /// that they carried no copy.
    pub walks_found_again: u64,
}

/// What the front end needs of the next `continue`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Nothing stops at an fd event: observe.
    Observe,
    /// A breakpoint, catchpoint or step stops at fd events.
    Stops,
    /// Only `break count N` (the smallest N): observe until a process's
    /// open-fd count comes within reach of N, then stop at every event.
    StopsNear(u32),
    /// Only `break fd N`: observe, and stop where the kernel sees a
    /// syscall that can create or close N.
    WatchFd(i32),
}

impl Tracer {
    /// Observe with ring buffers where the kernel allows it (attach).
    pub(super) fn open_observer(&mut self) -> Result<(), PerfError> {
        let tids: Vec<Tid> = self.threads.keys().copied().collect();
        let pids: BTreeSet<Pid> = self.threads.values().map(|t| t.pid).collect();
        for &pid in &pids {
            self.preload_unwinder(pid, true);
        }
        self.snapshot_stacks();
        // How deep the stacks are now: what a copy must hold.
        let mut depth = 0;
        for &tid in &tids {
            let (Some(pid), Some((sp, bytes)), Ok(regs)) = (
                self.threads.get(&tid).map(|t| t.pid),
                self.source.stack_snapshots.get(&tid),
                crate::ptrace::registers(tid),
            ) else {
                continue;
            };
            let regs = crate::arch::StackRegs::from_user_regs(&regs);
            if let Some(unwinder) = self.addresses.unwinders.get_mut(&pid) {
                debug_assert_eq!(regs.sp, *sp);
                depth = depth.max(unwinder.unwind_beyond(&regs, bytes, &|_| None).1);
            }
        }
        let observer = Observer::open(tids, &pids, self.target.follow_forks, depth)?;
        self.source.observer = Some(observer);
        self.source.mechanism = Mechanism::PerfObserve;
        if self.costs.cpu_observing_from.is_none() {
            self.costs.cpu_observing_from = crate::procfs::own_cpu_seconds();
        }
        Ok(())
    }

    /// Observing, with every thread stopped: keep each one's stack.
    pub(super) fn snapshot_stacks(&mut self) {
        let tids: Vec<Tid> = self.threads.keys().copied().collect();
        self.source
            .stack_snapshots
            .retain(|tid, _| tids.contains(tid));
        for tid in tids {
            let Ok(regs) = crate::ptrace::registers(tid) else {
                continue;
            };
            let bytes = crate::unwind::copy_stack(tid, regs.rsp, super::STACK_COPY);
            self.source.stack_snapshots.insert(tid, (regs.rsp, bytes));
        }
    }

    /// Observing, samples are walked after the fact, possibly after the
    /// process exec'd: know its objects before that (see
    /// `Unwinder::preload`).
    pub(super) fn preload_unwinder(&mut self, pid: Pid, observing: bool) {
        if !observing {
            return;
        }
        let unwinder = self
            .addresses
            .unwinders
            .entry(pid)
            .or_insert_with(|| crate::unwind::Unwinder::new(pid));
        unwinder.preload();
        self.addresses
            .symbolizer
            .note_mappings(pid, &unwinder.mappings());
        let maps = std::fs::read_to_string(crate::procfs::process_dir(pid).join("maps"));
        self.source.file_maps.insert(
            pid,
            maps.map(|text| crate::modules::parse_readonly_file_maps(&text))
                .unwrap_or_default(),
        );
    }

    /// Choose the event source for what the next `continue` needs; every
    /// thread is stopped. Returns what the user should know when the
    /// source changed for a reason worth saying.
    ///
    /// Function breakpoints stop by themselves: with them, fd events are
    /// still observed when nothing else needs a stop (the samples before a
    /// breakpoint's stop are taken at that stop), and take a stop each
    /// when something does (`break count` near its count included, which
    /// checks each event as it comes).
    pub fn set_need(&mut self, need: Need) -> Option<Notice> {
        self.source.need = need;
        if self.source.observer.is_none() || self.ends.detached {
            return None;
        }
        if self
            .source
            .observer
            .as_ref()
            .is_some_and(|o| o.wants_more_stack())
        {
            self.grow_stack_copies();
        }
        let functions = !self.probes.breaks.is_empty();
        // A watch's stops are SIGTRAPs: the process ignores it, as for
        // function breakpoints.
        let said = match need {
            Need::WatchFd(fd) => self.prepare_watch(fd).err().map(|why| {
                let _ = self.set_watch(None);
                self.source.need = Need::Stops;
                Notice::WatchRefused { fd, why }
            }),
            _ => {
                let _ = self.set_watch(None);
                None
            }
        };
        let need = self.source.need;
        let watching = self.source.watching.watch.is_some();
        let observe = self.observe_suffices()
            && (!functions || matches!(need, Need::Observe | Need::WatchFd(_)));
        let observing = self.source.mechanism == Mechanism::PerfObserve;
        if observe && !observing {
            // Every thread is stopped: no event falls between the two.
            if self
                .source
                .observer
                .as_mut()
                .is_some_and(|o| o.set_enabled(true))
            {
                if functions || watching {
                    // Armed uprobes and watches send SIGTRAPs: it stays
                    // ignored.
                    self.disarm_fd_events();
                } else {
                    self.disarm_perf();
                }
                self.source.mechanism = Mechanism::PerfObserve;
            }
            said
        } else if observe && !functions && !watching && self.source.traps.is_some() {
            // The last function breakpoint is gone: SIGTRAP's action back.
            self.disarm_perf();
            None
        } else if !observe && observing {
            self.stop_observing();
            match self.arm_perf_at_attach(false) {
                Ok(()) => said,
                Err(why) => {
                    self.source.mechanism = Mechanism::PtraceSyscall;
                    Some(Notice::FellBack(why))
                }
            }
        } else {
            said
        }
    }

    /// SIGTRAP ignored by the processes, then the watch on `fd`.
    fn prepare_watch(&mut self, fd: i32) -> Result<(), TracerError> {
        if self.source.traps.is_none() {
            self.arm_perf(true, false, super::perf_source::Traps::None)?;
        }
        Ok(self.set_watch(Some(fd))?)
    }

    /// Whether the need can be met without stops now.
    pub(super) fn observe_suffices(&self) -> bool {
        match self.source.need {
            Need::Observe | Need::WatchFd(_) => true,
            Need::Stops => false,
            Need::StopsNear(n) => {
                // Samples are decoded up to two drains late: room for
                // twice that, and for a first burst.
                let margin = self
                    .source
                    .observer
                    .as_ref()
                    .map_or(0, |o| 4 * o.largest_batch + 256);
                let highest = self
                    .model
                    .processes()
                    .map(|p| self.model.open_count(p.pid))
                    .max()
                    .unwrap_or(0);
                highest + margin < n as usize
            }
        }
    }

    /// Pause the samplers while fdbg itself runs fd syscalls in the
    /// stopped process (`reclaim`), or resume them; whether they were on.
    pub(super) fn pause_observing(&mut self, paused: bool) -> bool {
        self.source
            .observer
            .as_mut()
            .is_some_and(|o| (o.enabled == paused) && o.set_enabled(!paused))
    }

    /// Disable the samplers, with every thread stopped and their samples
    /// taken.
    fn stop_observing(&mut self) {
        if let Some(observer) = self.source.observer.as_mut() {
            observer.set_enabled(false);
        }
    }

    /// Poll fds of the rings to wait on (none when not observing).
    pub(super) fn observer_fds(&self) -> Vec<(usize, std::os::fd::BorrowedFd<'_>)> {
        match self.source.observer.as_ref() {
            Some(Observer {
                sampler: Some(sampler),
                enabled: true,
                hung,
                ..
            }) => sampler
                .poll_fds()
                .into_iter()
                .enumerate()
                .filter(|(i, _)| !hung[*i])
                .collect(),
            _ => Vec::new(),
        }
    }

    pub(super) fn observer_hung(&mut self, ring: usize) {
        if let Some(slot) = self
            .source
            .observer
            .as_mut()
            .and_then(|o| o.hung.get_mut(ring))
        {
            *slot = true;
        }
    }

    /// Decode the samples in the rings into events. `all`: every thread is
    /// stopped (or gone), so none can be missing yet; else the newest wait
    /// for the next drain. Returns the events recorded, in order.
    pub(super) fn take_samples(&mut self, all: bool) -> Vec<Seq> {
        let Some(mut sampler) = self.source.observer.as_mut().and_then(|o| o.sampler.take()) else {
            return Vec::new();
        };
        let mut taking = Taking {
            tracer: self,
            // Live memory, read once for the whole batch.
            pages: std::cell::RefCell::new(LivePages::default()),
            recorded: Vec::new(),
        };
        if all {
            sampler.drain_all(&mut taking);
        } else {
            sampler.drain(&mut taking);
        }
        let recorded = taking.recorded;
        if let Some(observer) = self.source.observer.as_mut() {
            sampler.send_memos(&mut observer.memos);
            observer.sampler = Some(sampler);
            observer.largest_batch = observer.largest_batch.max(recorded.len());
        }
        recorded
    }

    /// What a sample is, decoded and its stack unwound where it lies in
    /// the ring; None for what makes no event (an entry, a syscall to be
    /// restarted, one that did nothing to an fd).
    fn digest_sample(
        &mut self,
        sample: &Sample<'_>,
        pages: &std::cell::RefCell<LivePages>,
    ) -> Option<Digested> {
        let (pid, tid) = (sample.pid as Pid, sample.tid as Tid);
        // Only exits are sampled.
        let SyscallRecord::Exit { nr, ret } = sample.syscall else {
            return None;
        };
        self.costs.syscalls += 1;
        self.costs.by_pid.entry(pid).or_default().1 += 1;
        if syscalls::is_restart(ret) {
            return None;
        }
        let regs = sample.regs?;
        let entry = SyscallEntry {
            nr: nr as u64,
            args: [regs.di, regs.si, regs.dx, regs.r10, regs.r8, regs.r9],
        };
        let no_files = Vec::new();
        let memory = SampledMemory {
            pid,
            sp: regs.sp,
            stack: sample.stack,
            live: (self.source.exec_pending != Some(pid)).then_some(ProcessMemory { pid: tid }),
            files: self.source.file_maps.get(&pid).unwrap_or(&no_files),
            pages,
        };
        let decoded = syscalls::decode_reusing(&entry, ret, &memory, &mut self.source.spare)?;
        let stack = if decoded.effects.is_empty() {
            None
        } else if let Some(id) = sample.memo {
            // The kernel found a remembered walk's return addresses again.
            let generation = self.addresses.symbolizer.generation(pid);
            self.source
                .observer
                .as_mut()
                .and_then(|o| o.memos.stack(id, pid, generation))
        } else if sample.stack.is_empty() {
            None
        } else {
            let stack_regs = regs.stack_regs();
            let (stack, needed) = self.stack_from_copy(pid, tid, &stack_regs, sample.stack);
            if let Some(o) = self.source.observer.as_mut() {
                o.wanted = o.wanted.max(needed);
            }
            self.remember_in_kernel(pid, &stack_regs, sample.stack.len(), stack);
            Some(stack)
        };
        debug_assert_eq!(sample.tracepoint, EXITS);
        Some(Digested {
            pid,
            tid,
            decoded,
            stack,
            time: sample.time,
        })
    }

    /// Remember the walk just made from a sample's copy in the kernel, when
    /// the sampler can take it and it depended on return addresses alone.
    fn remember_in_kernel(
        &mut self,
        pid: Pid,
        regs: &crate::arch::StackRegs,
        copy_len: usize,
        stack: crate::stacks::StackId,
    ) {
        let Some(observer) = self.source.observer.as_mut() else {
            return;
        };
        // Asked first: a copy taken though the walk is known (an argument
        // pointed into the stack) costs no proof.
        if !observer.memos.wants(pid, regs.ip, regs.sp, regs.bp) {
            return;
        }
        let Some(unwinder) = self.addresses.unwinders.get(&pid) else {
            return;
        };
        if let Some(crate::unwind::WalkProof { words, bp }) = unwinder.last_walk_proof(copy_len) {
            let key = (
                pid,
                MemoStart {
                    ip: regs.ip,
                    sp: regs.sp,
                    bp,
                },
            );
            let generation = self.addresses.symbolizer.generation(pid);
            observer
                .memos
                .make(key, words, stack, generation, unwinder.maps_reads());
        }
    }

    /// Copies fell short: with every thread stopped (and its samples
    /// taken), sample with longer ones from now on.
    pub(super) fn grow_stack_copies(&mut self) {
        let tids: Vec<Tid> = self.threads.keys().copied().collect();
        let pids: BTreeSet<Pid> = self.threads.values().map(|t| t.pid).collect();
        let grown = self.source.observer.as_mut().map(|o| o.grow(tids, &pids));
        if let Some(Err(why)) = grown {
            // The old sampler goes on; stop asking.
            if let Some(o) = self.source.observer.as_mut() {
                o.wanted = 0;
            }
            self.notices.push(Notice::CopiesNotGrown(why));
        }
    }

    /// Whether samples were lost since the last look: the caller
    /// reconciles the model against /proc.
    pub(super) fn observer_lost_more(&mut self) -> bool {
        let Some(observer) = self.source.observer.as_mut() else {
            return false;
        };
        let missing = observer.missing();
        let more = missing > observer.lost_reconciled;
        if more {
            self.notices
                .push(Notice::SamplesLost(missing - observer.lost_reconciled));
        }
        observer.lost_reconciled = missing;
        more
    }

    /// Close the samplers (detach): the kernel removes every event.
    pub(super) fn close_observer(&mut self) {
        if let Some(observer) = self.source.observer.as_mut() {
            observer.set_enabled(false);
            observer.closed_coverage = observer.coverage();
            observer.closed_lost = observer.lost();
            observer.sampler = None;
        }
    }
}
