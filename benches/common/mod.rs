//! What the benches share: finding the fdbg binary, building a C program of
//! testprogs/, describing the machine,
//! reading fdbg's `stats --json`, and waiting (by polling /proc: a bench may
//! poll, fdbg itself may not) until a traced process runs again.

#![allow(dead_code)]

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long fdbg or strace may take to attach before a bench gives up.
pub const ATTACH_TIMEOUT: Duration = Duration::from_secs(10);

/// From fdbg's `stats` JSON document.
#[derive(Clone, Debug)]
pub struct Stats {
    pub stops: u64,
    pub syscalls_seen: u64,
    pub total_events: u64,
    /// "perf-observe", "perf-sigtrap", "ptrace-syscall" or "seccomp".
    pub mechanism: String,
    /// The kernel's count of fd syscalls (perf only).
    pub kernel_fd_syscalls: Option<u64>,
    pub missed: u64,
    /// fdbg's own CPU per event recorded, in µs (`memory.cpu_us_per_event`).
    pub cpu_us_per_event: Option<f64>,
}

impl Stats {
    /// The stops one fd syscall costs by itself under this mechanism:
    /// observing none, perf SIGTRAP one, seccomp and PTRACE_SYSCALL two
    /// (entry or seccomp stop, and exit).
    pub fn stops_per_fd_syscall(&self) -> u64 {
        match self.mechanism.as_str() {
            "perf-observe" => 0,
            "perf-sigtrap" => 1,
            _ => 2,
        }
    }
}

/// The `stats` document among fdbg's output lines (other reports, and the
/// program's own output under `run`, share stdout).
pub fn parse_stats(out: &str) -> Option<Stats> {
    json_lines(out)
        .find(|doc| doc.get("stops").is_some() && doc.get("mechanism").is_some())
        .map(|doc| {
            let number = |key: &str| doc.get(key).and_then(Value::as_u64).unwrap_or(0);
            Stats {
                stops: number("stops"),
                syscalls_seen: number("syscalls_seen"),
                total_events: number("total_events"),
                mechanism: doc
                    .get("mechanism")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_string(),
                kernel_fd_syscalls: doc.get("kernel_fd_syscalls").and_then(Value::as_u64),
                missed: number("missed"),
                cpu_us_per_event: doc
                    .get("memory")
                    .and_then(|m| m.get("cpu_us_per_event"))
                    .and_then(Value::as_f64),
            }
        })
}

/// The fd numbers of fdbg's `fds --json` document.
pub fn parse_fds(out: &str) -> Option<Vec<i32>> {
    json_lines(out)
        .find(|doc| doc.get("fds").is_some())
        .and_then(|doc| {
            doc["fds"]
                .as_array()?
                .iter()
                .map(|f| f.get("fd").and_then(Value::as_i64).map(|n| n as i32))
                .collect()
        })
        .map(|mut v: Vec<i32>| {
            v.sort_unstable();
            v
        })
}

fn json_lines(out: &str) -> impl Iterator<Item = Value> + '_ {
    out.lines()
        .filter(|l| l.starts_with('{'))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
}

/// The open fd numbers of `pid`, sorted, from /proc.
pub fn proc_fds(pid: u32) -> Vec<i32> {
    let mut fds: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    fds.sort_unstable();
    fds
}

/// The state letter of every thread of `pid` (/proc/PID/task/TID/stat).
fn thread_states(pid: u32) -> Vec<char> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let path = e.ok()?.path().join("stat");
        let stat = std::fs::read_to_string(path).ok()?;
        // The state follows the parenthesized command name.
        stat.rsplit_once(')')?.1.trim_start().chars().next()
    })
    .collect()
}

/// Waits until no thread of `pid` is in a ptrace-stop ('t'): the tracer
/// has resumed it. Call it once the tracer has said it is attached (its
/// banner), so that the stop has happened already.
pub fn wait_running(pid: u32) -> bool {
    let deadline = Instant::now() + ATTACH_TIMEOUT;
    while Instant::now() < deadline {
        let states = thread_states(pid);
        if !states.is_empty() && !states.contains(&'t') {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    false
}

/// The TracerPid of `pid` (0: not traced).
pub fn tracer_pid(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("TracerPid:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Polls until `pid`'s tracer is `tracer` (or a thread of it) — or, with
/// `None`, until `pid` is not traced at all.
pub fn wait_traced_by(pid: u32, tracer: Option<u32>) -> bool {
    let deadline = Instant::now() + ATTACH_TIMEOUT;
    while Instant::now() < deadline {
        let by = tracer_pid(pid);
        let done = match tracer {
            None => by == 0,
            Some(t) => by != 0 && Path::new(&format!("/proc/{t}/task/{by}")).exists(),
        };
        if done {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

pub fn kill_and_reap(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Sends `sig` to the process started as `child` (by its PID) and reaps it.
pub fn signal_and_reap(child: &mut Child, sig: i32) {
    // SAFETY: kill(2) on the PID of a child this process started and has
    // not reaped yet, so the PID cannot have been reused.
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
    let _ = child.wait();
}

/// The fdbg binary a bench measures: `FDBG_BIN`, else the one Cargo built
/// for the bench (same profile, passed as `CARGO_BIN_EXE_fdbg`).
pub fn fdbg_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("FDBG_BIN") {
        return PathBuf::from(path);
    }
    let path = PathBuf::from(env!("CARGO_BIN_EXE_fdbg"));
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --release` or set FDBG_BIN",
        path.display()
    );
    path
}

/// Compile `testprogs/SOURCE` with gcc and `flags` into the target
/// directory as `out`; the path of the program.
pub fn build_testprog(source: &str, out: &str, flags: &[&str]) -> PathBuf {
    build_testprog_from(&[source], out, flags)
}

/// As `build_testprog`, from several sources.
pub fn build_testprog_from(sources: &[&str], out: &str, flags: &[&str]) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testprogs");
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(out);
    let status = Command::new("gcc")
        .args(flags)
        .args(["-Wall", "-Werror", "-o"])
        .arg(&out)
        .args(sources.iter().map(|s| dir.join(s)))
        .status()
        .unwrap_or_else(|e| panic!("cannot run gcc (needed to build {sources:?}): {e}"));
    assert!(status.success(), "gcc failed on {sources:?}");
    out
}

/// The full path of an installed program (PATH, then /usr/sbin, /sbin).
pub fn program_path(program: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.push("/usr/sbin".into());
    dirs.push("/sbin".into());
    dirs.into_iter()
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

pub fn strace_installed() -> bool {
    Command::new("strace")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub fn machine_line() -> String {
    // Usable CPUs honour the affinity mask (`taskset -c 0 cargo bench ...`).
    let usable = std::thread::available_parallelism().map_or(0, |n| n.get());
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let model = File::open("/proc/cpuinfo")
        .ok()
        .and_then(|f| {
            BufReader::new(f)
                .lines()
                .map_while(Result::ok)
                .find_map(|l| {
                    Some(
                        l.strip_prefix("model name")?
                            .split_once(':')?
                            .1
                            .trim()
                            .to_string(),
                    )
                })
        })
        .unwrap_or_else(|| "unknown cpu".into());
    // Other work on the machine moves the seconds (not the stop counts).
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    format!(
        "CPUs online {}, usable by this run {usable}; Linux {}; {model}; load average {}",
        online.trim(),
        kernel.trim(),
        load.join(" ")
    )
}

pub fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}
