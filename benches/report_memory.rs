//! `cargo bench --bench report_memory`: what fdbg's memory peaks at when a
//! report lists tens of thousands of fds.
//!
//! Runs `fdbg run --batch --follow-forks -e continue [-e REPORT] --
//! many_fds N` (testprogs/many_fds.c: N fds leaked from one call site, spread
//! over as few processes as the RLIMIT_NOFILE hard limit allows) once with no
//! report (the cost of the model alone) and once per report — `fds` and
//! `leaks`, as text and as JSON — and prints fdbg's peak resident set size
//! (`ru_maxrss` from wait4: fdbg's own peak; the traced program, which fdbg
//! reaps, is a few hundred kilobytes) and how many bytes the report printed.
//!
//! The fdbg binary: `CARGO_BIN_EXE_fdbg` (Cargo builds it in the bench's
//! profile first), or `FDBG_BIN`. Knob: `FDBG_BENCH_FDS` (default 50000).
//!
//! Every process started here is waited for.

mod common;

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus, Stdio};

use common::{build_testprog, env_number, fdbg_binary};

const DEFAULT_FDS: u64 = 50_000;

fn main() {
    let fds = env_number("FDBG_BENCH_FDS", DEFAULT_FDS);
    let fdbg = fdbg_binary();
    let program = build_testprog("many_fds.c", "bench-many-fds", &["-g", "-O0"]);
    println!(
        "workload: many_fds {fds} (one call site; RLIMIT_NOFILE hard limit {})",
        nofile_hard_limit()
    );
    println!(
        "{:<22} {:>14} {:>14}",
        "report", "peak RSS (MB)", "output (MB)"
    );
    let cases: [(&str, &[&str]); 5] = [
        ("none (continue only)", &[]),
        ("fds", &["-e", "fds"]),
        ("fds --json", &["--json", "-e", "fds"]),
        ("leaks", &["-e", "leaks"]),
        ("leaks --json", &["--json", "-e", "leaks"]),
    ];
    for (name, report) in cases {
        let mut cmd = Command::new(&fdbg);
        cmd.args(["run", "--batch", "--follow-forks", "-e", "continue"])
            .args(report)
            .arg("--")
            .arg(&program)
            .arg(fds.to_string());
        let run = measure(&mut cmd, &format!("EXPECT done total={fds} "));
        assert!(run.found, "{cmd:?}: many_fds did not finish\n{}", run.tail);
        println!(
            "{name:<22} {:>14.1} {:>14.1}",
            run.max_rss_kb as f64 / 1024.0,
            run.output_bytes as f64 / 1e6
        );
    }
}

struct Run {
    max_rss_kb: i64,
    /// Bytes fdbg printed (the program's EXPECT lines included).
    output_bytes: usize,
    /// The output's last bytes, for failure messages.
    tail: String,
    /// The output had `wanted`.
    found: bool,
}

/// Runs `cmd` to its end; its peak RSS from wait4. Its stdout is read in
/// small chunks and not kept: the bench's own memory must stay small, as a
/// child's `ru_maxrss` counts what it shared with its parent before exec.
// The child is reaped by wait4 (std's wait gives no rusage), not by `Child`.
#[allow(clippy::zombie_processes)]
fn measure(cmd: &mut Command, wanted: &str) -> Run {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut chunk = vec![0u8; 64 * 1024];
    let mut window: Vec<u8> = Vec::new();
    let mut output_bytes = 0;
    let mut found = false;
    loop {
        let n = stdout.read(&mut chunk).expect("read stdout");
        if n == 0 {
            break;
        }
        output_bytes += n;
        // The last 4 KiB and this chunk: `wanted` may span two chunks.
        window.extend_from_slice(&chunk[..n]);
        found = found || String::from_utf8_lossy(&window).contains(wanted);
        let keep = window.len().saturating_sub(4096);
        window.drain(..keep);
    }
    let tail = String::from_utf8_lossy(&window).into_owned();
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: all-zero bytes are a valid `rusage` (plain integers).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our child, not yet waited for (std's `Child` is
    // never waited on here); both pointers are to live locals.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid, "wait4: {}", std::io::Error::last_os_error());
    let status = ExitStatus::from_raw(status);
    assert!(status.success(), "{cmd:?} failed: {status}\n{tail}");
    Run {
        max_rss_kb: usage.ru_maxrss,
        output_bytes,
        tail,
        found,
    }
}

fn nofile_hard_limit() -> String {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| {
            let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
            Some(line.split_whitespace().nth(4)?.to_string())
        })
        .unwrap_or_else(|| "?".into())
}
