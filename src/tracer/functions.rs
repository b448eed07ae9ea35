//! Function breakpoints: a uprobe (defined in tracefs, see
//! `perf::uprobe`) at each function a name matches, and on it one perf
//! SIGTRAP event per thread, inherited by the threads created later. A hit
//! is a SIGTRAP stop whose `si_perf_data` names the breakpoint; fdbg takes
//! it as it takes its fd-syscall SIGTRAPs (ignored by the process for the
//! session, so that one in flight when fdbg dies is harmless). The kernel
//! owns the breakpoint instruction: closing the events (or fdbg's death)
//! restores the code.

use std::collections::BTreeSet;

use super::perf_source::{Fallback, Traps};
use super::{Mechanism, Notice, Tracer, TracerError};
use crate::fdtable::Pid;
use crate::perf::uprobe::Uprobe;
use crate::perf::{self, SyscallTrap};
use crate::ptrace::Tid;
use crate::symbolize::functions::{self, FunctionSite};

/// Whose a probe is: what its hit means, and what becomes of it at an
/// exec or a `delete`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProbeOwner {
    /// The user's function breakpoint of this id: pending in the new
    /// program after an exec, removed by `delete`.
    User(u32),
    /// `finish`'s return probe.
    Finish,
    /// The dynamic linker's `_dl_debug_state`, which it calls around every
    /// dlopen and dlclose (as gdb uses it): pending breakpoints are looked
    /// for again there.
    Loader,
    /// The probes of `balance`'s function of this number.
    Balance(u32),
}

/// The owners' codes in `si_perf_data` (20 bits): user ids below
/// `BALANCE_CODES`, balance numbers from it, then the loader and finish.
const BALANCE_CODES: u32 = 0xe_0000;
const LOADER_CODE: u32 = 0xf_fffe;
const FINISH_CODE: u32 = 0xf_ffff;

impl ProbeOwner {
    fn code(self) -> u32 {
        match self {
            ProbeOwner::User(id) => id,
            ProbeOwner::Balance(n) => BALANCE_CODES + n,
            ProbeOwner::Loader => LOADER_CODE,
            ProbeOwner::Finish => FINISH_CODE,
        }
    }

    fn from_code(code: u32) -> ProbeOwner {
        match code {
            FINISH_CODE => ProbeOwner::Finish,
            LOADER_CODE => ProbeOwner::Loader,
            n if n >= BALANCE_CODES => ProbeOwner::Balance(n - BALANCE_CODES),
            id => ProbeOwner::User(id),
        }
    }

    /// A user's breakpoint, whose probes `delete` without a number removes.
    fn is_user(self) -> bool {
        matches!(self, ProbeOwner::User(_))
    }
}

/// `si_perf_data` of a function breakpoint's SIGTRAP: this base, the
/// owner's code shifted by 8, and 1 for a return probe.
const SIG_DATA_BASE: u64 = 0x6664_6267_1000_0000;
const SIG_DATA_MASK: u64 = 0xffff_ffff_f000_0000;

/// Where a probe fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Probe {
    /// At a function's first instruction.
    Entry,
    /// At its return (a uretprobe, which puts a trampoline in place of the
    /// return address while the call runs).
    Return,
    /// At a return address, reported as a return.
    ReturnAddress,
}

/// One resolved function of a breakpoint, armed.
pub struct ArmedFunction {
    pub site: FunctionSite,
    /// Kept open: closing them disarms the probe.
    _traps: Vec<SyscallTrap>,
    /// Dropped after the traps: the kernel refuses to remove a probe in use.
    _probe: Uprobe,
}

/// A function breakpoint (or a `finish` return probe) and what it armed.
pub struct FunctionBreak {
    pub owner: ProbeOwner,
    pub pattern: String,
    pub ret: bool,
    pub armed: Vec<ArmedFunction>,
}

/// The function breakpoints of a session and what they armed.
#[derive(Default)]
pub(super) struct Probes {
    /// Armed, with their uprobes.
    pub(super) breaks: Vec<FunctionBreak>,
    /// Uprobe definitions made so far (their names are numbered).
    pub(super) names: u32,
    /// A function breakpoint hit by the stop just handled.
    pub(super) hit: Option<FunctionHit>,
    /// Hits seen while everything was being stopped: their threads are
    /// stopped there, and the next `resume_until` reports them first.
    pub(super) queued: std::collections::VecDeque<FunctionHit>,
    /// The user's function breakpoints not found yet: (id, pattern).
    pub(super) pending: Vec<(u32, String)>,
}

/// A thread stopped at a function breakpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FunctionHit {
    pub owner: ProbeOwner,
    pub ret: bool,
    pub tid: Tid,
}

impl Tracer {
    /// Arm a function breakpoint of `owner` on every function `pattern`
    /// names in the traced processes (every thread stopped). An empty
    /// list means nothing matched (yet).
    pub fn add_function_breakpoint(
        &mut self,
        owner: ProbeOwner,
        pattern: &str,
        ret: bool,
    ) -> Result<Vec<FunctionSite>, TracerError> {
        let pids: BTreeSet<Pid> = self.threads.values().map(|t| t.pid).collect();
        let mut sites: Vec<FunctionSite> = Vec::new();
        for &pid in &pids {
            for site in functions::find(pid, pattern) {
                if !sites
                    .iter()
                    .any(|s| s.probe_path == site.probe_path && s.file_offset == site.file_offset)
                {
                    sites.push(site);
                }
            }
        }
        if !sites.is_empty() {
            let probe = if ret { Probe::Return } else { Probe::Entry };
            self.arm_sites(owner, pattern, probe, &sites)?;
        }
        Ok(sites)
    }

    /// `finish`'s breakpoint: the return address of the frame thread `tid`
    /// is stopped in (where the call returns to, in its caller). A
    /// uretprobe would not do: it catches only calls entered after it is
    /// armed.
    pub fn add_return_breakpoint(&mut self, tid: Tid) -> Result<u64, TracerError> {
        let address = self.return_address(tid).ok_or(TracerError::NoCaller)?;
        self.add_address_breakpoint(ProbeOwner::Finish, tid, address)?;
        Ok(address)
    }

    /// Where the function stopped thread `tid` is in returns to (frame
    /// #1 of its stack).
    pub fn return_address(&mut self, tid: Tid) -> Option<u64> {
        let pid = self.threads.get(&tid)?.pid;
        let id = self.capture_stack(tid, pid, None)?;
        self.model.stacks.get(id).addresses.get(1).copied()
    }

    /// A breakpoint at code address `address` of thread `tid`'s process,
    /// reported as a return (`FunctionHit::ret`): the instruction after a
    /// call is reached only by the call's return. Unlike a uretprobe, it
    /// leaves the return addresses on the stack as they are, so stacks
    /// walked meanwhile are whole.
    pub fn add_address_breakpoint(
        &mut self,
        owner: ProbeOwner,
        tid: Tid,
        address: u64,
    ) -> Result<(), TracerError> {
        let pid = self
            .threads
            .get(&tid)
            .map(|t| t.pid)
            .ok_or(TracerError::ThreadGone)?;
        let site = functions::site_at(pid, address).ok_or(TracerError::CallerNotProbeable)?;
        self.arm_sites(owner, "the caller", Probe::ReturnAddress, &[site])
    }

    /// Define a uprobe at each site and open a SIGTRAP event on it in every
    /// thread of the processes that map its object.
    fn arm_sites(
        &mut self,
        owner: ProbeOwner,
        pattern: &str,
        probe: Probe,
        sites: &[FunctionSite],
    ) -> Result<(), TracerError> {
        let uretprobe = probe == Probe::Return;
        let ret = probe != Probe::Entry;
        if self.target.mode != super::Mode::Attach && self.source.mechanism == Mechanism::Seccomp {
            return Err(TracerError::SeccompHasNoTraps);
        }
        // Their SIGTRAPs need what the fd events' need: the process
        // ignoring SIGTRAP for the session, so that one in flight when fdbg
        // dies is harmless. Observing, the fd events stay observed.
        if self.source.mechanism == Mechanism::PerfObserve && self.source.traps.is_none() {
            match self.arm_perf(true, false, Traps::None) {
                Ok(()) => {}
                // A thread's SIGTRAP would wait for its unblock: with
                // SIGTRAPs for the fd events, fdbg waits for it too.
                Err(Fallback::Blocked(_)) => {
                    if let Some(Notice::FellBack(why)) = self.set_need(super::Need::Stops)
                        && !self.source.waits_for_unblock
                    {
                        return Err(TracerError::TrapsFellBack(why));
                    }
                }
                Err(why) => return Err(TracerError::NoTraps(why)),
            }
        }
        // Every thread of a process blocks SIGTRAP: wait for one to
        // unblock it (most often a moment), or say why not.
        if self.source.mechanism == Mechanism::PtraceSyscall
            && self.source.waits_for_unblock
            && let Err(why) = self.arm_perf_now()
        {
            return Err(TracerError::TrapsFellBack(why));
        }
        let ready = matches!(
            self.source.mechanism,
            Mechanism::PerfSigtrap | Mechanism::PerfObserve
        ) && self.source.traps.is_some();
        if !ready {
            return Err(TracerError::TrapsNotArmed(self.source.mechanism));
        }
        // Two events on one address send a thread two SIGTRAPs at one hit,
        // and the second is lost while the first is pending: one probe an
        // address.
        for site in sites {
            if let Some(other) = self.probes.breaks.iter().find(|b| {
                b.armed.iter().any(|a| {
                    a.site.probe_path == site.probe_path && a.site.file_offset == site.file_offset
                })
            }) {
                return Err(TracerError::AddressTaken {
                    name: site.name.clone(),
                    pattern: other.pattern.clone(),
                });
            }
        }
        let tracefs = perf::tracefs()?;
        perf::uprobe::remove_stale(&tracefs);
        let pids: BTreeSet<Pid> = self.threads.values().map(|t| t.pid).collect();
        let mut armed = Vec::new();
        for (n, site) in sites.iter().enumerate() {
            self.probes.names += 1;
            let name = format!("{}{}_{n}", if ret { 'r' } else { 'b' }, self.probes.names);
            let probe = Uprobe::define(
                &tracefs,
                &name,
                &site.probe_path,
                site.file_offset,
                uretprobe,
            )
            .map_err(|source| TracerError::Uprobe {
                name: site.name.clone(),
                source,
            })?;
            let sig_data = SIG_DATA_BASE | u64::from(owner.code()) << 8 | u64::from(ret);
            let mut traps = Vec::new();
            // One event per thread of the processes the object is loaded
            // in; the threads they create later inherit it.
            let loaded: BTreeSet<Pid> = pids
                .iter()
                .copied()
                .filter(|&pid| {
                    crate::modules::read_code_mappings(pid)
                        .iter()
                        .any(|m| m.path == site.module)
                })
                .collect();
            for (tid, pid) in self.threads() {
                if !loaded.contains(&pid) {
                    continue;
                }
                match SyscallTrap::open(tid, probe.id, "", self.target.follow_forks, sig_data) {
                    Ok(trap) => traps.push(trap),
                    // A thread that ended meanwhile needs none.
                    Err(perf::PerfError::Open { source, .. })
                        if source.raw_os_error() == Some(libc::ESRCH) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            armed.push(ArmedFunction {
                site: site.clone(),
                _traps: traps,
                _probe: probe,
            });
        }
        self.probes.breaks.push(FunctionBreak {
            owner,
            pattern: pattern.to_string(),
            ret,
            armed,
        });
        Ok(())
    }

    /// Keep the user's breakpoint `id` on `pattern` pending: it is looked
    /// for again in every library the process loads from now on.
    pub fn add_pending_breakpoint(&mut self, id: u32, pattern: &str) -> Result<(), TracerError> {
        if !self
            .probes
            .breaks
            .iter()
            .any(|b| b.owner == ProbeOwner::Loader)
        {
            let sites =
                self.add_function_breakpoint(ProbeOwner::Loader, "_dl_debug_state", false)?;
            if sites.is_empty() {
                return Err(TracerError::NoDynamicLinker);
            }
        }
        self.probes.pending.push((id, pattern.to_string()));
        Ok(())
    }

    /// An exec removed every event (`remove_on_exec`): the user's function
    /// breakpoints become pending in the new program (armed as it loads
    /// what has them); `finish` and `balance` probes end.
    pub(super) fn functions_after_exec(&mut self) {
        if self.probes.breaks.is_empty() && self.probes.pending.is_empty() {
            return;
        }
        let mut user: Vec<(u32, String)> = self
            .probes
            .breaks
            .iter()
            .filter_map(|b| match b.owner {
                ProbeOwner::User(id) => Some((id, b.pattern.clone())),
                _ => None,
            })
            .collect();
        user.append(&mut self.probes.pending);
        user.sort();
        user.dedup();
        self.probes.breaks.clear();
        for (id, pattern) in user {
            if let Err(why) = self.add_pending_breakpoint(id, &pattern) {
                self.notices
                    .push(Notice::BreakpointGone { id, pattern, why });
            }
        }
        self.notices.push(Notice::BreakpointsPending);
    }

    /// The dynamic linker changed the loaded objects: arm the pending
    /// breakpoints that resolve now.
    pub(super) fn resolve_pending(&mut self) {
        for (id, pattern) in std::mem::take(&mut self.probes.pending) {
            match self.add_function_breakpoint(ProbeOwner::User(id), &pattern, false) {
                Ok(sites) if !sites.is_empty() => {
                    self.notices.push(Notice::BreakpointResolved {
                        id,
                        pattern,
                        sites: sites.into_iter().map(|s| (s.name, s.module)).collect(),
                    });
                }
                Ok(_) => self.probes.pending.push((id, pattern)),
                Err(why) => {
                    self.notices.push(Notice::BreakpointFailed {
                        id,
                        pattern: pattern.clone(),
                        why,
                    });
                    self.probes.pending.push((id, pattern));
                }
            }
        }
    }

    /// The pending breakpoints: (id, pattern).
    pub fn pending_breakpoints(&self) -> &[(u32, String)] {
        &self.probes.pending
    }

    /// Remove the probes of `owner` (every user breakpoint's with `None`,
    /// not `balance`'s): their events close, the kernel restores the code,
    /// the definitions go.
    pub fn remove_function_breakpoint(&mut self, owner: Option<ProbeOwner>) {
        let removed = |b: ProbeOwner| match owner {
            Some(owner) => b == owner,
            None => b.is_user(),
        };
        self.probes.breaks.retain(|b| !removed(b.owner));
        self.probes
            .pending
            .retain(|&(b, _)| !removed(ProbeOwner::User(b)));
        if self.probes.pending.is_empty() {
            self.probes.breaks.retain(|b| b.owner != ProbeOwner::Loader);
        }
    }

    /// The stack of stopped thread `tid`, symbolized for a report (the
    /// process waits at the prompt), innermost first.
    pub fn thread_frames(&mut self, tid: Tid) -> Vec<crate::symbolize::Frame> {
        let Some(pid) = self.threads.get(&tid).map(|t| t.pid) else {
            return Vec::new();
        };
        match self.capture_stack(tid, pid, None) {
            Some(id) => {
                let stack = self.model.stacks.get(id).clone();
                self.addresses.symbolizer.report_frames(pid, &stack)
            }
            None => Vec::new(),
        }
    }

    /// The stack pointer of stopped thread `tid`.
    pub fn stack_pointer(&self, tid: Tid) -> Option<u64> {
        crate::ptrace::registers(tid).ok().map(|r| r.rsp)
    }

    /// What stopped thread `tid` has in its return-value register (at a
    /// return probe's stop: what the function returned).
    pub fn return_value(&self, tid: Tid) -> i64 {
        crate::ptrace::registers(tid).map_or(0, |r| r.rax as i64)
    }

    pub fn function_breakpoints(&self) -> &[FunctionBreak] {
        &self.probes.breaks
    }

    /// Whether the SIGTRAP stop of `tid` is a function breakpoint's; the
    /// hit, which the caller reports (the signal is not delivered).
    pub(super) fn function_trap(&mut self, tid: Tid, perf_data: u64) -> Option<FunctionHit> {
        if perf_data & SIG_DATA_MASK != SIG_DATA_BASE {
            return None;
        }
        let owner = ProbeOwner::from_code(((perf_data & !SIG_DATA_MASK) >> 8) as u32);
        let ret = perf_data & 1 == 1;
        Some(FunctionHit { owner, ret, tid })
    }
}
