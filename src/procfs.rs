//! Readers of /proc: a process's fds (kind, target, close-on-exec), its
//! threads, and the status fields fdbg checks (tgid, tracer, state).
//!
//! Status fields come from the `procfs` crate. The fd listing is read here
//! directly because the model needs the raw symlink text (`socket:[123]`,
//! `/path (deleted)`, non-UTF-8 names) and the close-on-exec bit from
//! fdinfo, which the crate's parsed target type does not keep.

use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::vocab::{FdKind, Pid, ProcFd};

/// The fds of `pid` as /proc shows them now, sorted by number. Use
/// `task` to read the table of one thread (`/proc/PID/task/TID/fd`), which
/// stays readable while that thread is exiting even if the leader is gone.
///
/// Without `task`, a leader that has exited while other threads run on
/// (a zombie: its fd directory is empty) is read through a live thread.
pub fn list_fds(pid: Pid, task: Option<i32>) -> io::Result<Vec<ProcFd>> {
    let task = task.or_else(|| live_thread_if_leader_gone(pid));
    let base = match task {
        Some(tid) => PathBuf::from(format!("/proc/{pid}/task/{tid}")),
        None => PathBuf::from(format!("/proc/{pid}")),
    };
    let mut fds = Vec::new();
    for entry in fs::read_dir(base.join("fd"))? {
        let entry = match entry {
            Ok(e) => e,
            Err(_) => continue,
        };
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        // An fd may close between readdir and readlink: skip it.
        let Ok(link) = fs::read_link(entry.path()) else {
            continue;
        };
        let target = String::from_utf8_lossy(link.as_os_str().as_bytes()).into_owned();
        let is_dir = target.starts_with('/')
            && fs::metadata(entry.path())
                .map(|m| m.is_dir())
                .unwrap_or(false);
        let kind = FdKind::from_link(&target, is_dir);
        let cloexec = fd_flags(&base, fd)
            .map(|f| f & libc::O_CLOEXEC as u64 != 0)
            .unwrap_or(false);
        fds.push(ProcFd {
            fd,
            kind,
            target,
            cloexec,
        });
    }
    fds.sort_by_key(|f| f.fd);
    Ok(fds)
}

/// The /proc directory to read a process's per-process files from
/// (`maps`, `root`, `net/`, `fd`): `/proc/PID`, or the directory of a live
/// thread when the leader has exited while others run on (a zombie leader
/// has no address space, fd table or namespaces left to show).
pub fn process_dir(pid: Pid) -> PathBuf {
    match live_thread_if_leader_gone(pid) {
        Some(tid) => PathBuf::from(format!("/proc/{pid}/task/{tid}")),
        None => PathBuf::from(format!("/proc/{pid}")),
    }
}

/// A thread of `pid` still running when its leader is a zombie.
fn live_thread_if_leader_gone(pid: Pid) -> Option<i32> {
    if thread_state(pid, pid) != Some('Z') {
        return None;
    }
    threads(pid)
        .ok()?
        .into_iter()
        .find(|&tid| !matches!(thread_state(pid, tid), Some('Z' | 'X') | None))
}

/// The open flags of one fd, from the `flags:` line of fdinfo (octal).
fn fd_flags(base: &Path, fd: i32) -> Option<u64> {
    let text = fs::read_to_string(base.join("fdinfo").join(fd.to_string())).ok()?;
    let line = text.lines().find_map(|l| l.strip_prefix("flags:"))?;
    u64::from_str_radix(line.trim(), 8).ok()
}

/// The symlink target of one fd, if it is still open.
/// Read through the thread `tid` (any thread of the process): a leader that
/// has exited shows no fds.
pub fn fd_target(tid: i32, fd: i32) -> Option<String> {
    let link = fs::read_link(format!("/proc/{tid}/fd/{fd}")).ok()?;
    Some(String::from_utf8_lossy(link.as_os_str().as_bytes()).into_owned())
}

/// The thread ids of `pid`.
pub fn threads(pid: Pid) -> io::Result<Vec<i32>> {
    let mut tids: Vec<i32> = fs::read_dir(format!("/proc/{pid}/task"))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    tids.sort_unstable();
    Ok(tids)
}

/// The child processes of `pid` (of any of its threads), sorted.
pub fn children(pid: Pid) -> Vec<Pid> {
    let mut children: Vec<Pid> = threads(pid)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|tid| fs::read_to_string(format!("/proc/{pid}/task/{tid}/children")).ok())
        .flat_map(|text| {
            text.split_whitespace()
                .filter_map(|c| c.parse().ok())
                .collect::<Vec<Pid>>()
        })
        .collect();
    children.sort_unstable();
    children.dedup();
    children
}

/// What a process does with a signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    Default,
    Ignored,
    /// The process has a handler for it.
    Caught,
}

/// The disposition of signal `sig` in process `pid` (SigIgn, SigCgt).
pub fn disposition(pid: Pid, sig: i32) -> Option<Disposition> {
    let status = procfs::process::Process::new(pid).ok()?.status().ok()?;
    let bit = 1u64 << (sig - 1);
    Some(if status.sigcgt & bit != 0 {
        Disposition::Caught
    } else if status.sigign & bit != 0 {
        Disposition::Ignored
    } else {
        Disposition::Default
    })
}

/// The address of a `syscall` instruction (0f 05) in the vDSO of `pid`,
/// for running a syscall inside the process.
pub fn vdso_syscall_instruction(pid: Pid) -> Option<u64> {
    let maps = fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    let line = maps.lines().find(|l| l.ends_with("[vdso]"))?;
    let (start, end) = line.split_whitespace().next()?.split_once('-')?;
    let start = u64::from_str_radix(start, 16).ok()?;
    let end = u64::from_str_radix(end, 16).ok()?;
    let mut code = vec![0u8; (end - start) as usize];
    let file = fs::File::open(format!("/proc/{pid}/mem")).ok()?;
    std::os::unix::fs::FileExt::read_exact_at(&file, &mut code, start).ok()?;
    code.windows(2)
        .position(|w| w == [0x0f, 0x05])
        .map(|at| start + at as u64)
}

/// The executable mappings of `pid` whose path (or `[vdso]`) `wanted`
/// accepts, each as (start address, its bytes), in address order.
pub fn code_of(pid: Pid, wanted: impl Fn(&str) -> bool) -> Vec<(u64, Vec<u8>)> {
    let Ok(maps) = fs::read_to_string(format!("/proc/{pid}/maps")) else {
        return Vec::new();
    };
    let Ok(file) = fs::File::open(format!("/proc/{pid}/mem")) else {
        return Vec::new();
    };
    let mut code = Vec::new();
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        let path = fields.nth(3).unwrap_or("");
        if !perms.contains('x') || !wanted(path) {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16))
        else {
            continue;
        };
        let mut bytes = vec![0u8; (end - start) as usize];
        if std::os::unix::fs::FileExt::read_exact_at(&file, &mut bytes, start).is_ok() {
            code.push((start, bytes));
        }
    }
    code
}

/// The fields of /proc/TID/status that fdbg uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskStatus {
    pub tgid: Pid,
    /// The parent process (of a thread: of its process).
    pub ppid: Pid,
    pub tracer_pid: Pid,
    /// The state letter: R, S, D, T (stopped), t (traced), Z, X.
    pub state: char,
    pub uid: u32,
    pub name: String,
}

pub fn status(tid: i32) -> Option<TaskStatus> {
    let status = procfs::process::Process::new(tid).ok()?.status().ok()?;
    Some(TaskStatus {
        tgid: status.tgid,
        ppid: status.ppid,
        tracer_pid: status.tracerpid,
        state: status.state.chars().next().unwrap_or('?'),
        uid: status.ruid,
        name: status.name,
    })
}

/// The pid of process `pid` in its own pid namespace (the last of
/// `NSpid`): `pid` itself outside containers.
pub fn pid_in_namespace(pid: Pid) -> Option<Pid> {
    let status = procfs::process::Process::new(pid).ok()?.status().ok()?;
    status.nspid?.last().copied()
}

/// The `comm` name of a thread, or "?".
pub fn thread_name(pid: Pid, tid: i32) -> String {
    fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm"))
        .map(|s| s.trim_end().to_string())
        .unwrap_or_else(|_| "?".into())
}

/// The state letter of one thread (see `TaskStatus::state`).
pub fn thread_state(pid: Pid, tid: i32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
    // The name in parentheses may contain anything: the state follows the last ')'.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// fdbg's own resident set size, in bytes (/proc/self/statm).
pub fn own_rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * procfs::page_size())
}

/// fdbg's own proportional set size, in bytes (/proc/self/smaps_rollup):
/// each page once however often fdbg maps it (the BPF ring's data is
/// mapped twice in a row, and counts twice in the resident set), shared
/// pages divided among the processes mapping them.
pub fn own_pss_bytes() -> Option<u64> {
    let rollup = std::fs::read_to_string("/proc/self/smaps_rollup").ok()?;
    let kb: u64 = rollup
        .lines()
        .find_map(|line| line.strip_prefix("Pss:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// The CPU time fdbg has used so far, user and system, in seconds (its
/// own threads together, from /proc/self/stat).
pub fn own_cpu_seconds() -> Option<f64> {
    let stat = procfs::process::Process::myself().ok()?.stat().ok()?;
    let ticks = procfs::ticks_per_second() as f64;
    Some((stat.utime + stat.stime) as f64 / ticks)
}
