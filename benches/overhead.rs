//! `cargo bench --bench overhead`: what tracing costs a syscall-heavy program.
//!
//! Runs `testprogs/bench.c` (per iteration: 8 syscalls that touch no fd
//! table entry and one open+close, i.e. 2 fd events) untraced, under
//! `fdbg run`, under `fdbg attach` (observing: no stop at fd events),
//! `--events sigtrap` (one stop each) and `--events ptrace`, and
//! under strace when it is installed,
//! each RUNS times (the modes take turns, round after round), and prints the
//! median wall time and the spread, the slowdown against
//! untraced, and fdbg's ptrace stops per fd event and per other syscall
//! (from its `stats` report; stops do not depend on the machine, seconds do),
//! and under perf the kernel's own count of fd syscalls and how many fdbg
//! missed.
//!
//! The fdbg binary: Cargo builds the package's binaries before its benches
//! (same profile, so `target/release/fdbg`) and passes the path as
//! `CARGO_BIN_EXE_fdbg`; `FDBG_BIN` overrides it.
//!
//! Knobs (environment): `FDBG_BENCH_ITER` (default 4000: a ptrace stop costs
//! tens of microseconds on small VMs, and the slowest modes must fit the
//! one-minute budget), `FDBG_BENCH_RUNS` (default 5), `FDBG_BENCH_SOCKET`
//! (set: the fdchurn loop, a UDP socket and its close and 10 other
//! syscalls per iteration), `FDBG_BENCH_MODES`
//! (a comma-separated list of name parts: only those modes, and untraced).
//!
//! Every process started here is waited for; on a failure the bench panics
//! after killing what it started.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use common::{
    Stats, build_testprog, env_number, fdbg_binary, kill_and_reap, machine_line, parse_stats,
    strace_installed, wait_running,
};

const DEFAULT_ITER: u64 = 4000;

/// bench's arguments: ITER, and `--socket` for the fdchurn loop.
struct Workload {
    iter: u64,
    socket: bool,
}

impl Workload {
    fn args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if self.socket {
            args.push("--socket".to_string());
        }
        args.push(self.iter.to_string());
        args
    }
}
const DEFAULT_RUNS: usize = 5;

fn main() {
    // `cargo bench` passes `--bench`; the harness takes no other arguments.
    let iter = env_number("FDBG_BENCH_ITER", DEFAULT_ITER);
    let socket = std::env::var_os("FDBG_BENCH_SOCKET").is_some();
    let work = Workload { iter, socket };
    let runs = env_number("FDBG_BENCH_RUNS", DEFAULT_RUNS as u64).max(1) as usize;
    let fdbg = fdbg_binary();
    let bench = build_testprog("bench.c", "bench-overhead", &["-O2"]);
    let started = Instant::now();

    println!("machine: {}", machine_line());
    println!(
        "workload: bench {} ({} fd events, {} other syscalls); median of {runs} runs, modes taking turns",
        work.args().join(" "),
        2 * iter,
        if socket { 10 } else { 8 } * iter
    );

    // The modes take turns, round after round, so that a burst of other
    // load on the machine lands on every mode alike rather than on one.
    let mut modes: Vec<Mode> = vec![
        Mode::new("untraced", || run_plain(&mut Command::new(&bench), &work)),
        Mode::new("fdbg run (seccomp)", || {
            let mut cmd = Command::new(&fdbg);
            cmd.args([
                "run", "--events", "ptrace", "--batch", "--json", "-e", "continue", "-e", "stats",
                "--",
            ])
            .arg(&bench);
            run_plain(&mut cmd, &work)
        }),
        Mode::new("fdbg run --events perf", || {
            let mut cmd = Command::new(&fdbg);
            cmd.args([
                "run", "--events", "perf", "--batch", "--json", "-e", "continue", "-e", "stats",
                "--",
            ])
            .arg(&bench);
            run_plain(&mut cmd, &work)
        }),
        Mode::new("fdbg attach (observing)", || {
            run_attached(&fdbg, &bench, &work, "perf")
        }),
        Mode::new("fdbg attach --events sigtrap", || {
            run_attached(&fdbg, &bench, &work, "sigtrap")
        }),
        Mode::new("fdbg attach --events ptrace", || {
            run_attached(&fdbg, &bench, &work, "ptrace")
        }),
    ];
    if strace_installed() {
        modes.push(Mode::new("strace -f --seccomp-bpf (fd syscalls)", || {
            let mut cmd = Command::new("strace");
            cmd.args([
                "-f",
                "--seccomp-bpf",
                "-e",
                "trace=open,openat,socket,close",
            ])
            .args(["-o", "/dev/null"])
            .arg(&bench);
            run_plain(&mut cmd, &work)
        }));
        modes.push(Mode::new("strace -f (all syscalls)", || {
            let mut cmd = Command::new("strace");
            cmd.args(["-f", "-o", "/dev/null"]).arg(&bench);
            run_plain(&mut cmd, &work)
        }));
    } else {
        println!("strace not installed: its rows are skipped");
    }
    // FDBG_BENCH_MODES=untraced,observing: only the modes whose names
    // contain one of these (the first, untraced, always).
    if let Ok(wanted) = std::env::var("FDBG_BENCH_MODES") {
        let wanted: Vec<&str> = wanted.split(',').map(str::trim).collect();
        let mut index = 0;
        modes.retain(|mode| {
            index += 1;
            index == 1 || wanted.iter().any(|w| mode.name.contains(w))
        });
    }
    for _ in 0..runs {
        for mode in &mut modes {
            let sample = (mode.run)();
            mode.samples.push(sample);
        }
    }

    let mut rows: Vec<Row> = modes.into_iter().map(Row::from_mode).collect();
    let base = rows[0].seconds;
    for row in &mut rows {
        row.ratio = row.seconds / base;
    }
    print_table(&rows);
    println!("bench time: {:.1} s", started.elapsed().as_secs_f64());
}

/// One way of running bench, and its samples so far.
struct Mode<'a> {
    name: &'static str,
    run: Box<dyn FnMut() -> Sample + 'a>,
    samples: Vec<Sample>,
}

impl<'a> Mode<'a> {
    fn new(name: &'static str, run: impl FnMut() -> Sample + 'a) -> Mode<'a> {
        Mode {
            name,
            run: Box::new(run),
            samples: Vec::new(),
        }
    }
}

/// One measured run: wall seconds, what bench said it did, fdbg's stats.
struct Sample {
    seconds: f64,
    counts: Counts,
    stats: Option<Stats>,
}

/// From bench's `EXPECT done iter=N fd_events=2N other_syscalls=8N` line.
#[derive(Clone, Copy)]
struct Counts {
    fd_events: u64,
    other_syscalls: u64,
}

struct Row {
    mode: &'static str,
    /// The median run's seconds, and the fastest and slowest run's.
    seconds: f64,
    min: f64,
    max: f64,
    ratio: f64,
    counts: Counts,
    stats: Option<Stats>,
}

impl Row {
    /// The median sample (by time) stands for the mode.
    fn from_mode(mode: Mode) -> Row {
        let mut samples = mode.samples;
        samples.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
        let min = samples[0].seconds;
        let max = samples[samples.len() - 1].seconds;
        let median = samples.swap_remove(samples.len() / 2);
        Row {
            mode: mode.name,
            seconds: median.seconds,
            min,
            max,
            ratio: 1.0,
            counts: median.counts,
            stats: median.stats,
        }
    }
}

/// Runs `cmd ITER` from start to exit; stdout is parsed for the counts
/// (bench's line) and, when fdbg is the command, the stats document.
fn run_plain(cmd: &mut Command, work: &Workload) -> Sample {
    cmd.args(work.args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("piped stdout")
        .read_to_string(&mut out)
        .expect("read stdout");
    let status = child.wait().expect("wait");
    let seconds = start.elapsed().as_secs_f64();
    assert!(status.success(), "{cmd:?} failed: {status}\n{out}");
    Sample {
        seconds,
        counts: parse_counts(&out).unwrap_or_else(|| panic!("{cmd:?}: no done line\n{out}")),
        stats: parse_stats(&out),
    }
}

/// `bench --wait ITER`, attached by `fdbg attach --events EVENTS` while
/// blocked on stdin; timed from the line that releases it to its exit.
fn run_attached(fdbg: &Path, bench: &Path, work: &Workload, events: &str) -> Sample {
    let mut target = Command::new(bench)
        .arg("--wait")
        .args(work.args())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start bench --wait");
    let mut target_out = BufReader::new(target.stdout.take().expect("piped stdout"));
    let mut ready = String::new();
    target_out.read_line(&mut ready).expect("read ready line");
    assert!(ready.starts_with("EXPECT ready"), "bench said {ready:?}");
    let pid = target.id();

    let mut tracer = Command::new(fdbg)
        .args(["attach", &pid.to_string(), "--events", events, "--batch"])
        .args(["-e", "continue", "-e", "stats --json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start fdbg attach");
    let mut tracer_out = BufReader::new(tracer.stdout.take().expect("piped stdout"));
    // The banner comes once fdbg has attached and set up its event source;
    // `continue` runs next, and bench leaves its ptrace-stop.
    let mut banner = String::new();
    let _ = tracer_out.read_line(&mut banner);
    if !banner.starts_with("Attached to process") || !wait_running(pid) {
        kill_and_reap(&mut target);
        kill_and_reap(&mut tracer);
        panic!("fdbg attach --events {events} {pid} did not attach and continue: {banner:?}");
    }

    let mut stdin = target.stdin.take().expect("piped stdin");
    let start = Instant::now();
    stdin.write_all(b"\n").expect("release bench");
    let status = target.wait().expect("wait bench");
    let seconds = start.elapsed().as_secs_f64();
    drop(stdin);

    let mut out = String::new();
    target_out
        .read_to_string(&mut out)
        .expect("read bench stdout");
    let mut report = String::new();
    tracer_out
        .read_to_string(&mut report)
        .expect("read fdbg stdout");
    let tracer_status = tracer.wait().expect("wait fdbg");
    assert!(
        status.success(),
        "bench under attach failed: {status}\n{out}"
    );
    assert!(
        tracer_status.success(),
        "fdbg attach failed: {tracer_status}\n{report}"
    );
    Sample {
        seconds,
        counts: parse_counts(&out).unwrap_or_else(|| panic!("bench: no done line\n{out}")),
        stats: parse_stats(&report),
    }
}

fn parse_counts(out: &str) -> Option<Counts> {
    let line = out.lines().find(|l| l.starts_with("EXPECT done "))?;
    let field = |key: &str| -> Option<u64> {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))?
            .parse()
            .ok()
    };
    Some(Counts {
        fd_events: field("fd_events")?,
        other_syscalls: field("other_syscalls")?,
    })
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "| {:<38} | {:>8} | {:>13} | {:>11} | {:>12} | {:>16} | {:>19} |",
        "mode",
        "median s",
        "min–max s",
        "vs untraced",
        "ptrace stops",
        "stops / fd event",
        "stops / other sysc."
    );
    println!(
        "|{:-<40}|{:->9}:|{:->14}:|{:->12}:|{:->13}:|{:->17}:|{:->20}:|",
        "", "", "", "", "", "", ""
    );
    for row in rows {
        let ratio = format!("{:.1}x", row.ratio);
        let spread = format!("{:.3}–{:.3}", row.min, row.max);
        let (stops, per_fd, per_other) = match &row.stats {
            Some(s) => {
                // fdbg's event count includes the loader's and bench's own setup opens.
                let fd_events = s.total_events.max(1);
                let per_fd = s.stops as f64 / fd_events as f64;
                // What the fd syscalls cost by themselves is the mechanism's
                // own count each; the rest is charged to the other syscalls.
                let other = (s.stops as f64 - (s.stops_per_fd_syscall() * fd_events) as f64)
                    .max(0.0)
                    / row.counts.other_syscalls.max(1) as f64;
                (
                    s.stops.to_string(),
                    format!("{per_fd:.2}"),
                    format!("{other:.2}"),
                )
            }
            None => ("-".into(), "-".into(), "-".into()),
        };
        println!(
            "| {:<38} | {:>8.3} | {:>13} | {:>11} | {:>12} | {:>16} | {:>19} |",
            row.mode, row.seconds, spread, ratio, stops, per_fd, per_other
        );
    }
    for row in rows {
        if let Some(s) = &row.stats {
            let kernel = match s.kernel_fd_syscalls {
                Some(n) => format!("; the kernel counted {n} fd syscalls, {} missed", s.missed),
                None => String::new(),
            };
            println!(
                "{}: events from {}, {} syscalls decoded, {} fd events (bench made {} in its loop){kernel}",
                row.mode, s.mechanism, s.syscalls_seen, s.total_events, row.counts.fd_events
            );
        }
    }
}
