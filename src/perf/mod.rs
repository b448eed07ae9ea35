//! perf events as the source of fd events while attached: a kernel
//! tracepoint at the exit of the fd syscalls, with `sigtrap`, so that the
//! thread that made one gets a synchronous SIGTRAP (`si_code` TRAP_PERF) on
//! its way back to user space, which ptrace reports as a signal-delivery
//! stop. Syscalls outside the filter cost the process nothing.
//!
//! The kernel owns every event: closing its fd removes it from the process,
//! and `remove_on_exec` (which `sigtrap` requires) drops it at an exec, after
//! which the tracer arms the new program. Nothing here stays in the process.
//!
//! The bindings are perf-event-open-sys's; the tracepoint ids come from
//! tracefs, mounted here when it is absent and fdbg may mount it.
//!
//! [`ring`] is the other way to take fd events: samples in ring buffers,
//! decoded later, with no stop at all.

pub mod bpf;
pub mod format;
pub mod record;
pub mod ring;
pub mod uprobe;

#[cfg(test)]
mod tests;

pub use format::SyscallRecord;
pub use record::{Sample, UserRegs};
pub use ring::{Coverage, RingStats, SamplerConfig, SyscallSampler, TracepointSpec};

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use perf_event_open_sys as sys;
use thiserror::Error;

/// `si_code` of a SIGTRAP sent by a perf event.
pub const TRAP_PERF: i32 = 6;

/// Why perf events cannot be the event source here.
#[derive(Debug, Error)]
pub enum PerfError {
    #[error(
        "perf events are refused (kernel.perf_event_paranoid is {paranoid}); run fdbg as root or with CAP_PERFMON, or `sysctl kernel.perf_event_paranoid=1`"
    )]
    Refused { paranoid: String },
    #[error(
        "no tracefs to read syscall tracepoint ids from (mount it: `mount -t tracefs nodev /sys/kernel/tracing`, as root)"
    )]
    NoTracefs,
    #[error(
        "this kernel's perf SIGTRAP is unsafe for a process that ignores or blocks it (needs Linux 5.18 or later)"
    )]
    NoSigtrap,
    #[error("perf_event_open on thread {tid}: {source}")]
    Open {
        tid: i32,
        #[source]
        source: io::Error,
    },
    #[error("cannot set the tracepoint filter: {0}")]
    Filter(io::Error),
    #[error(
        "raw tracepoint samples are refused (kernel.perf_event_paranoid is {paranoid}); run fdbg as root or with CAP_PERFMON, or `sysctl kernel.perf_event_paranoid=-1`"
    )]
    RawRefused { paranoid: String },
    #[error(
        "tracepoint {0} is not a raw syscall tracepoint (no `id` with `ret` or `args` in its format)"
    )]
    Format(String),
    #[error("cannot set up a perf ring buffer: {0}")]
    Ring(#[source] io::Error),
    #[error("cannot define a uprobe in tracefs (root only): {0}")]
    Uprobe(#[source] io::Error),
}

fn paranoid() -> String {
    fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

/// A tracepoint event that counts (and samples) every hit: the fields
/// every event fdbg opens shares.
fn tracepoint_attr(id: u64) -> sys::bindings::perf_event_attr {
    let mut attr = sys::bindings::perf_event_attr {
        type_: sys::bindings::PERF_TYPE_TRACEPOINT,
        size: std::mem::size_of::<sys::bindings::perf_event_attr>() as u32,
        config: id,
        ..Default::default()
    };
    attr.__bindgen_anon_1.sample_period = 1;
    attr
}

/// Open a perf event on thread `tid`, on `cpu` (-1: any), close-on-exec;
/// the caller names what a refusal means for it.
fn open_event(mut attr: sys::bindings::perf_event_attr, tid: i32, cpu: i32) -> io::Result<OwnedFd> {
    // SAFETY: `attr` is a fully initialised perf_event_attr of the size it
    // declares; the kernel only reads it. No group.
    let fd = unsafe {
        sys::perf_event_open(
            &mut attr,
            tid,
            cpu,
            -1,
            sys::bindings::PERF_FLAG_FD_CLOEXEC as _,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: perf_event_open returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether perf_event_open failed for want of privilege.
fn refused(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EACCES | libc::EPERM))
}

/// Set the ftrace filter of tracepoint event `fd`.
fn set_filter(fd: &OwnedFd, filter: &str) -> Result<(), PerfError> {
    let filter = std::ffi::CString::new(filter).map_err(|_| {
        PerfError::Filter(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a filter has no NUL",
        ))
    })?;
    // SAFETY: the fd is a perf event; the filter is a NUL-terminated string
    // the kernel copies.
    if unsafe { sys::ioctls::SET_FILTER(fd.as_raw_fd(), filter.as_ptr() as *mut _) } != 0 {
        return Err(PerfError::Filter(io::Error::last_os_error()));
    }
    Ok(())
}

/// Whether this process may open kernel tracepoint events: root,
/// CAP_PERFMON or CAP_SYS_ADMIN, or `perf_event_paranoid` at 1 or below.
/// Asked first, so that an unprivileged user hears the reason that
/// matters, not that tracefs is unreadable.
pub fn permitted() -> Result<(), PerfError> {
    if privileged(1) {
        return Ok(());
    }
    Err(PerfError::Refused {
        paranoid: paranoid(),
    })
}

/// Whether this process may sample tracepoints with their raw data
/// (PERF_SAMPLE_RAW, which [`SyscallSampler`] needs): root, CAP_PERFMON or
/// CAP_SYS_ADMIN, or `perf_event_paranoid` at -1. The raw syscall
/// tracepoints are not among those the kernel lets anyone sample raw.
pub fn raw_samples_permitted() -> Result<(), PerfError> {
    if privileged(-1) {
        return Ok(());
    }
    Err(PerfError::RawRefused {
        paranoid: paranoid(),
    })
}

/// Root, CAP_PERFMON or CAP_SYS_ADMIN, or `perf_event_paranoid` at
/// `paranoid` or below.
fn privileged(paranoid_at_most: i32) -> bool {
    if nix::unistd::geteuid().is_root()
        || paranoid()
            .parse::<i32>()
            .is_ok_and(|p| p <= paranoid_at_most)
    {
        return true;
    }
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    let effective = fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
            u64::from_str_radix(hex.trim(), 16).ok()
        })
        .unwrap_or(0);
    effective & (1 << CAP_PERFMON | 1 << CAP_SYS_ADMIN) != 0
}

/// Whether this kernel sends perf SIGTRAPs as fdbg needs them: from Linux
/// 5.18 a SIGTRAP that the process ignores or blocks stays ignored or
/// blocked; before, the kernel forced it (reset to the default action,
/// unblocked), which would undo the session's protection.
pub fn sigtrap_supported() -> Result<(), PerfError> {
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse::<u32>().ok());
    let version = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    if version >= (5, 18) {
        Ok(())
    } else {
        Err(PerfError::NoSigtrap)
    }
}

/// The tracefs mount: found, or mounted at /sys/kernel/tracing when fdbg
/// may mount (root).
pub fn tracefs() -> Result<PathBuf, PerfError> {
    let candidates = [
        Path::new("/sys/kernel/tracing"),
        Path::new("/sys/kernel/debug/tracing"),
    ];
    for root in candidates {
        if root.join("events").is_dir() {
            return Ok(root.to_path_buf());
        }
    }
    let root = candidates[0];
    let mounted = nix::mount::mount(
        Some("nodev"),
        root,
        Some("tracefs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    );
    if mounted.is_ok() && root.join("events").is_dir() {
        return Ok(root.to_path_buf());
    }
    Err(PerfError::NoTracefs)
}

/// The id of tracepoint `group:name` (e.g. `raw_syscalls:sys_exit`).
pub fn tracepoint_id(tracefs: &Path, group: &str, name: &str) -> Result<u64, PerfError> {
    let path = tracefs.join("events").join(group).join(name).join("id");
    fs::read_to_string(&path)
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .ok_or(PerfError::NoTracefs)
}

/// An ftrace filter on `raw_syscalls:sys_exit` that passes these syscalls.
pub fn syscall_filter(numbers: &[u64]) -> String {
    let mut numbers = numbers.to_vec();
    numbers.sort_unstable();
    numbers.dedup();
    filter_tree(&numbers)
}

/// The kernel evaluates the filter at every syscall of a watched thread,
/// most of which it rejects: a tree of comparisons rejects a number in
/// about 2·log2(n) of them where a flat `id == a || id == b …` takes n
/// (measured: 45 fd syscalls in one flat chain cost every other syscall
/// ~0.18 µs).
fn filter_tree(sorted: &[u64]) -> String {
    const LEAF: usize = 4;
    match sorted {
        [] => "id == -1".to_string(),
        _ if sorted.len() <= LEAF => sorted
            .iter()
            .map(|nr| format!("id == {nr}"))
            .collect::<Vec<_>>()
            .join(" || "),
        _ => {
            let (low, high) = sorted.split_at(sorted.len() / 2);
            format!(
                "(id < {} && ({})) || (id >= {} && ({}))",
                high[0],
                filter_tree(low),
                high[0],
                filter_tree(high)
            )
        }
    }
}

/// Whether a SIGTRAP event on tracepoint `id` with `filter` can be opened
/// here: one is opened on the calling thread, disabled (it never fires),
/// and closed.
pub fn probe(id: u64, filter: &str) -> Result<(), PerfError> {
    let tid = nix::unistd::gettid().as_raw();
    SyscallTrap::create(tid, id, filter, false, 0).map(drop)
}

/// A tracepoint event on one thread (and, inherited, on the threads it
/// creates) that sends it a SIGTRAP carrying `sig_data` at every hit.
pub struct SyscallTrap {
    fd: OwnedFd,
}

impl SyscallTrap {
    /// Arm tracepoint `id`, filtered by `filter`, on thread `tid`.
    /// `inherit_processes`: child processes inherit it too (fork
    /// following); threads always do.
    pub fn open(
        tid: i32,
        id: u64,
        filter: &str,
        inherit_processes: bool,
        sig_data: u64,
    ) -> Result<SyscallTrap, PerfError> {
        let trap = SyscallTrap::create(tid, id, filter, inherit_processes, sig_data)?;
        // SAFETY: the fd is a perf event; ENABLE takes no pointer.
        if unsafe { sys::ioctls::ENABLE(trap.fd.as_raw_fd(), 0) } != 0 {
            return Err(PerfError::Open {
                tid,
                source: io::Error::last_os_error(),
            });
        }
        Ok(trap)
    }

    /// The event, filtered, still disabled.
    fn create(
        tid: i32,
        id: u64,
        filter: &str,
        inherit_processes: bool,
        sig_data: u64,
    ) -> Result<SyscallTrap, PerfError> {
        let mut attr = tracepoint_attr(id);
        attr.set_disabled(1);
        attr.set_inherit(1);
        attr.set_inherit_thread(u64::from(!inherit_processes));
        attr.set_remove_on_exec(1);
        attr.set_sigtrap(1);
        attr.sig_data = sig_data;
        let fd = open_event(attr, tid, -1).map_err(|err| match err.raw_os_error() {
            _ if refused(&err) => PerfError::Refused {
                paranoid: paranoid(),
            },
            // sigtrap/remove_on_exec unknown: an older kernel (E2BIG for a
            // larger attr, EINVAL for the new bits).
            Some(libc::EINVAL | libc::E2BIG) => PerfError::NoSigtrap,
            _ => PerfError::Open { tid, source: err },
        })?;
        if !filter.is_empty() {
            set_filter(&fd, filter)?;
        }
        Ok(SyscallTrap { fd })
    }

    /// How many times the tracepoint fired in the thread and in every
    /// thread (or process) that inherited the event: the kernel's own count
    /// of the fd syscalls made.
    pub fn count(&self) -> u64 {
        let mut value = [0u8; 8];
        match nix::unistd::read(&self.fd, &mut value) {
            Ok(8) => u64::from_ne_bytes(value),
            _ => 0,
        }
    }
}
