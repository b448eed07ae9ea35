//! Where observed samples come from: the BPF program at sys_exit, which
//! chooses the traced processes by tgid in the kernel (threads come and go
//! at no cost), or, where BPF is refused or forks are followed, perf
//! tracepoint events per thread, inherited by the threads (and with
//! `--follow-forks` the processes) they create. Both give the same samples;
//! the observer does not tell them apart.
//!
//! `FDBG_OBSERVE=perf` chooses the perf events (to compare the two, and
//! for the tests of each).

use std::collections::BTreeSet;
use std::os::fd::BorrowedFd;

use crate::fdtable::Pid;
use crate::perf::bpf::{BpfConfig, BpfError, BpfSampler};
use crate::perf::{PerfError, Sample, SyscallSampler};

/// The samples' source of an observing session.
pub(super) enum Samplers<T> {
    Bpf {
        sampler: BpfSampler,
        /// The processes sampled while enabled.
        targets: BTreeSet<Pid>,
        enabled: bool,
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

impl<T> Samplers<T> {
    /// The BPF program sampling `pids`, enabled.
    pub(super) fn bpf(config: &BpfConfig, pids: &BTreeSet<Pid>) -> Result<Samplers<T>, NoBpf> {
        let sampler = BpfSampler::open(config).map_err(NoBpf::Refused)?;
        for &pid in pids {
            sampler
                .add_target(pid)
                .map_err(|e| NoBpf::Refused(BpfError::Map(e)))?;
        }
        Ok(Samplers::Bpf {
            sampler,
            targets: pids.clone(),
            enabled: true,
        })
    }

    /// Which of the two, for `stats`.
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Samplers::Bpf { .. } => "a BPF program at sys_exit, by process",
            Samplers::Perf(_) => "perf tracepoint events, per thread",
        }
    }

    pub(super) fn set_enabled(&mut self, on: bool) -> Result<(), PerfError> {
        match self {
            Samplers::Perf(sampler) => sampler.set_enabled(on),
            Samplers::Bpf {
                sampler,
                targets,
                enabled,
            } => {
                for &pid in targets.iter() {
                    let done = if on {
                        sampler.add_target(pid)
                    } else {
                        sampler.remove_target(pid)
                    };
                    done.map_err(PerfError::Ring)?;
                }
                *enabled = on;
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

    /// The digests of the samples taken so far, in order (for the perf
    /// events, up to what another CPU's ring may still hold older).
    pub(super) fn drain(&mut self, digest: &mut impl FnMut(&Sample<'_>) -> Option<T>) -> Vec<T> {
        match self {
            Samplers::Perf(sampler) => sampler.drain(digest),
            Samplers::Bpf { sampler, .. } => {
                let mut out = Vec::new();
                sampler.drain(|sample| out.extend(digest(sample)));
                out
            }
        }
    }

    /// Every sample's digest, for when no sampled thread can be inside a
    /// syscall.
    pub(super) fn drain_all(
        &mut self,
        digest: &mut impl FnMut(&Sample<'_>) -> Option<T>,
    ) -> Vec<T> {
        match self {
            Samplers::Perf(sampler) => sampler.drain_all(digest),
            Samplers::Bpf { .. } => self.drain(digest),
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
