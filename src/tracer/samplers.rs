//! Where observed samples come from: the BPF program at the fd syscalls'
//! exit tracepoints (or, where they are missing, at sys_exit), which
//! chooses the traced processes by tgid in the kernel (threads come and go
//! at no cost), or, where BPF is refused or forks are followed, perf
//! tracepoint events per thread, inherited by the threads (and with
//! `--follow-forks` the processes) they create. Both give the same samples;
//! the observer does not tell them apart.
//!
//! `FDBG_OBSERVE=perf` chooses the perf events, `FDBG_OBSERVE=sys_exit`
//! the BPF program at sys_exit (to compare them, and for the tests of
//! each).

use std::collections::BTreeSet;
use std::os::fd::BorrowedFd;

use rustc_hash::FxHashMap;

use crate::fdtable::Pid;
use crate::perf::bpf::{BpfConfig, BpfError, BpfSampler, MEMO_WORDS, MemoStart};
use crate::perf::{PerfError, Sample, SyscallSampler};
use crate::stacks::StackId;

/// What becomes of samples: each digested where it lies in its ring, and
/// the digests applied in the order their syscalls ended. The BPF ring
/// holds them in that order, so each is applied at once, while it is
/// still in the cache; the perf events' per-CPU rings are merged by time
/// first.
pub(super) trait Taker<T> {
    fn digest(&mut self, sample: &Sample<'_>) -> Option<T>;
    fn apply(&mut self, digested: T);
}

/// The samples' source of an observing session.
pub(super) enum Samplers<T> {
    Bpf {
        sampler: BpfSampler,
        /// The processes sampled while enabled.
        targets: BTreeSet<Pid>,
    },
    Perf(SyscallSampler<T>),
}

/// Why the BPF program does not observe, said once in `stats`.
#[derive(Debug)]
pub enum NoBpf {
    /// Forks are followed: a new process's tgid is not known to the
    /// program before its first syscall.
    FollowForks,
    /// `FDBG_OBSERVE=perf`.
    Asked,
    Refused(BpfError),
}

impl std::fmt::Display for NoBpf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoBpf::FollowForks => write!(f, "forks are followed (perf events follow them)"),
            NoBpf::Asked => write!(f, "FDBG_OBSERVE=perf"),
            NoBpf::Refused(e) => write!(f, "{e}"),
        }
    }
}

/// Whether `FDBG_OBSERVE=perf` asks for the perf events.
pub(super) fn perf_asked() -> bool {
    std::env::var("FDBG_OBSERVE").is_ok_and(|v| v == "perf")
}

/// Whether `FDBG_OBSERVE=sys_exit` asks for the BPF program at sys_exit
/// rather than at the syscalls' own tracepoints.
pub(super) fn sys_exit_asked() -> bool {
    std::env::var("FDBG_OBSERVE").is_ok_and(|v| v == "sys_exit")
}

impl<T> Samplers<T> {
    /// The BPF program sampling `pids`, enabled.
    pub(super) fn bpf(config: &BpfConfig, pids: &BTreeSet<Pid>) -> Result<Samplers<T>, NoBpf> {
        let mut sampler = BpfSampler::open(config).map_err(NoBpf::Refused)?;
        for &pid in pids {
            sampler
                .add_target(pid)
                .map_err(|e| NoBpf::Refused(BpfError::Map(e)))?;
        }
        Ok(Samplers::Bpf {
            sampler,
            targets: pids.clone(),
        })
    }

    /// Which of the two, for `stats`.
    pub(super) fn kind(&self) -> String {
        match self {
            Samplers::Bpf { sampler, .. } => {
                format!("a BPF program {}, by process", sampler.hook())
            }
            Samplers::Perf(_) => "perf tracepoint events, per thread".to_string(),
        }
    }

    pub(super) fn set_enabled(&mut self, on: bool) -> Result<(), PerfError> {
        match self {
            Samplers::Perf(sampler) => sampler.set_enabled(on),
            Samplers::Bpf { sampler, targets } => {
                for &pid in targets.iter() {
                    let done = if on {
                        sampler.add_target(pid)
                    } else {
                        sampler.remove_target(pid)
                    };
                    done.map_err(PerfError::Ring)?;
                }
                Ok(())
            }
        }
    }

    /// The fds that poll(2) reports readable when samples wait.
    pub(super) fn poll_fds(&self) -> Vec<BorrowedFd<'_>> {
        match self {
            Samplers::Perf(sampler) => sampler.poll_fds(),
            Samplers::Bpf { sampler, .. } => vec![sampler.poll_fd()],
        }
    }

    /// Digest the samples taken so far, and apply the digests in order
    /// (for the perf events, up to what another CPU's ring may still hold
    /// older).
    pub(super) fn drain(&mut self, taker: &mut impl Taker<T>) {
        match self {
            Samplers::Perf(sampler) => {
                for digested in sampler.drain(&mut |sample| taker.digest(sample)) {
                    taker.apply(digested);
                }
            }
            Samplers::Bpf { sampler, .. } => {
                sampler.drain(|sample| {
                    if let Some(digested) = taker.digest(sample) {
                        taker.apply(digested);
                    }
                });
            }
        }
    }

    /// `drain`, every sample, for when no sampled thread can be inside a
    /// syscall.
    pub(super) fn drain_all(&mut self, taker: &mut impl Taker<T>) {
        match self {
            Samplers::Perf(sampler) => {
                for digested in sampler.drain_all(&mut |sample| taker.digest(sample)) {
                    taker.apply(digested);
                }
            }
            Samplers::Bpf { .. } => self.drain(taker),
        }
    }

    /// The kernel's count of fd syscalls and the samples decoded.
    pub(super) fn coverage(&self) -> (u64, u64) {
        match self {
            Samplers::Perf(sampler) => sampler
                .coverage()
                .iter()
                .fold((0, 0), |(k, s), c| (k + c.kernel, s + c.sampled)),
            Samplers::Bpf { sampler, .. } => (sampler.counts().0, sampler.decoded),
        }
    }

    /// Hand the memos made (and forgotten) since the last call to the
    /// kernel; the perf events have none.
    pub(super) fn send_memos(&mut self, memos: &mut KernelMemos) {
        let Samplers::Bpf { sampler, .. } = self else {
            memos.waiting.clear();
            return;
        };
        for (pid, start) in memos.forgotten.drain(..) {
            sampler.remove_memo(pid, &start);
        }
        for WaitingMemo { key, id, words } in memos.waiting.drain(..) {
            let (pid, start) = key;
            sampler.add_memo(pid, &start, id, &words);
        }
    }

    /// No memo yet, for this sampler (whose kernel map is empty).
    pub(super) fn memos(&self) -> KernelMemos {
        KernelMemos {
            taken: matches!(self, Samplers::Bpf { .. }),
            stacks: Vec::new(),
            known: FxHashMap::default(),
            waiting: Vec::new(),
            forgotten: Vec::new(),
            maps_reads: FxHashMap::default(),
            found_again: 0,
        }
    }

    /// Samples the kernel dropped (no room) or throttled.
    pub(super) fn lost(&self) -> u64 {
        match self {
            Samplers::Perf(sampler) => {
                let stats = sampler.stats();
                stats.lost + stats.throttles
            }
            Samplers::Bpf { sampler, .. } => sampler.counts().1,
        }
    }
}

/// Walks remembered in the kernel (the BPF program's `memos` map): a
/// sample whose stack holds the same return addresses at the same ip and
/// sp carries the memo's id instead of a stack copy, and its stack is the
/// one interned when the memo was made. Made while a drain decodes (the
/// sampler is busy then), handed to the sampler after it.
pub(super) struct KernelMemos {
    /// Whether the sampler takes memos (the perf events do not).
    taken: bool,
    /// By id - 1: the process, the address-space generation and the stack;
    /// None once forgotten (the process's code changed).
    stacks: Vec<Option<(Pid, u32, StackId)>>,
    /// The memos made, by (pid, ip, sp), with their ids.
    known: FxHashMap<MemoKey, u32>,
    /// Made and not yet in the kernel: key, id, the words.
    waiting: Vec<WaitingMemo>,
    /// Forgotten and still in the kernel.
    forgotten: Vec<MemoKey>,
    /// Each process's maps reads when its memos were made: a new read
    /// may mean other code at the same addresses.
    maps_reads: FxHashMap<Pid, u64>,
    /// Samples that carried a memo's id, and got its stack.
    pub(super) found_again: u64,
}

/// Where a walk started: the process, ip and sp (and rbp).
type MemoKey = (Pid, MemoStart);

/// A memo made and not yet in the kernel: where, its id, its words.
struct WaitingMemo {
    key: MemoKey,
    id: u32,
    words: Vec<(u64, u64)>,
}

/// Memos made at most (the kernel map's size).
const KERNEL_MEMOS_MAX: usize = 4096;

impl KernelMemos {
    /// The stack memo `id` stands for, if it is still of generation
    /// `generation` of process `pid`.
    pub(super) fn stack(&mut self, id: u32, pid: Pid, generation: u32) -> Option<StackId> {
        let (p, g, stack) = (*self.stacks.get(id.checked_sub(1)? as usize)?)?;
        let found = p == pid && g == generation;
        self.found_again += u64::from(found);
        found.then_some(stack)
    }

    /// Remember the walk just made (of `stack`, depending on `words`
    /// alone) unless it is known; `maps_reads`: the unwinder's count now.
    pub(super) fn make(
        &mut self,
        key: MemoKey,
        words: Vec<(u64, u64)>,
        stack: StackId,
        generation: u32,
        maps_reads: u64,
    ) {
        let pid = key.0;
        if self
            .maps_reads
            .insert(pid, maps_reads)
            .is_some_and(|r| r != maps_reads)
        {
            self.forget(pid);
        }
        if self.known.contains_key(&key)
            || self.stacks.len() >= KERNEL_MEMOS_MAX
            || words.len() > MEMO_WORDS
        {
            return;
        }
        self.stacks.push(Some((pid, generation, stack)));
        let id = self.stacks.len() as u32;
        self.known.insert(key, id);
        self.waiting.push(WaitingMemo { key, id, words });
    }

    /// Whether a walk of `pid` from `ip` and `sp` should be remembered:
    /// the sampler takes memos and none from there is known, whether or
    /// not it used `bp`.
    pub(super) fn wants(&self, pid: Pid, ip: u64, sp: u64, bp: u64) -> bool {
        self.taken
            && [None, Some(bp)]
                .into_iter()
                .all(|bp| !self.known.contains_key(&(pid, MemoStart { ip, sp, bp })))
    }

    /// Forget every memo of `pid`.
    pub(super) fn forget(&mut self, pid: Pid) {
        let keys: Vec<MemoKey> = self.known.keys().filter(|k| k.0 == pid).copied().collect();
        for key in keys {
            if let Some(id) = self.known.remove(&key) {
                self.stacks[id as usize - 1] = None;
            }
            self.forgotten.push(key);
        }
        self.waiting.retain(|w| w.key.0 != pid);
    }
}
