//! `cargo bench --bench model_memory`: what a day attached costs the
//! model. Feeds it a synthetic stream shaped like a busy nginx worker —
//! accept4 of a connection, openat of a file, their closes, from a dozen
//! stacks, each with the argument text the decoder gives (every accept4
//! has its own peer port) — and one leaking site: a UDP socket that is
//! never closed, once per 10,000 events. Each size runs in a process of
//! its own (this bench started again with `--one N`), which prints its
//! peak resident set (VmHWM), the nanoseconds per event, and the time
//! `leaks` and `diff` (against a mark taken at the first event) take at
//! the end.
//!
//! Knob: `FDBG_BENCH_EVENTS` (default "10000000,100000000"): the sizes,
//! comma-separated; `FDBG_BENCH_KEEP`: the window (default fdbg's own).

use std::process::Command;
use std::time::Instant;

use fdbg::fdtable::{DEFAULT_KEPT, FdKind, Model};
use fdbg::stacks::Stack;
use fdbg::syscalls::{Decoded, Effect};

/// One leaking creation per this many events.
const LEAK_EVERY: u64 = 10_000;
const PID: i32 = 4242;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--one") {
        let n: u64 = args.get(i + 1).and_then(|n| n.parse().ok()).unwrap_or(0);
        one(n);
        return;
    }
    let sizes = std::env::var("FDBG_BENCH_EVENTS").unwrap_or_else(|_| "10000000,100000000".into());
    let keep = std::env::var("FDBG_BENCH_KEEP")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(DEFAULT_KEPT);
    println!(
        "workload: synthetic nginx-like stream (accept4, openat, close x2 from 12 stacks; one leaking socket per {LEAK_EVERY} events); window {keep} events"
    );
    println!(
        "{:>12} {:>14} {:>10} {:>12} {:>10} {:>10} {:>10}",
        "events", "peak RSS (MB)", "ns/event", "open at end", "leaked", "leaks (ms)", "diff (ms)"
    );
    let me = std::env::current_exe().expect("the bench's own path");
    for size in sizes
        .split(',')
        .filter_map(|s| s.trim().parse::<u64>().ok())
    {
        let out = Command::new(&me)
            .args(["--one", &size.to_string()])
            .env("FDBG_BENCH_KEEP", keep.to_string())
            .output()
            .expect("run one size");
        print!("{}", String::from_utf8_lossy(&out.stdout));
        if !out.status.success() {
            println!(
                "{size}: failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
}

fn decoded(
    name: &'static str,
    result: i64,
    kind: FdKind,
    effects: Vec<Effect>,
    args: String,
) -> Decoded {
    Decoded {
        name,
        args_text: args,
        result,
        kind,
        effects,
    }
}

/// Feed `n` events, then ask what a user would.
fn one(n: u64) {
    let keep = std::env::var("FDBG_BENCH_KEEP")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(DEFAULT_KEPT);
    let mut model = Model::keeping(keep);
    model.add_process(PID, Vec::new());
    let mut stack = |n: u64| {
        Some(model.stacks.intern(Stack {
            addresses: vec![
                0x5555_0000 + n * 0x40,
                0x5555_1000,
                0x5555_2000,
                0x7f00_0000,
            ],
            truncated: None,
            generation: 0,
        }))
    };
    let stacks: Vec<_> = (0..12).map(&mut stack).collect();
    let leak_stack = stack(99);
    let mut mark = None;
    let mut next_fd = 10;
    let mut leaked = 0u64;
    let started = Instant::now();
    let mut i = 0u64;
    while i < n {
        let s = stacks[(i % 12) as usize];
        if i >= (leaked + 1) * LEAK_EVERY {
            let fd = next_fd;
            next_fd += 1;
            leaked += 1;
            let effects = vec![Effect::Open {
                fd,
                kind: FdKind::Socket,
                cloexec: false,
                target: None,
            }];
            model.set_clock(i * 10_000);
            model.record(
                PID,
                PID,
                &mut decoded(
                    "socket",
                    fd.into(),
                    FdKind::Socket,
                    effects,
                    "AF_INET, SOCK_DGRAM, 0".into(),
                ),
                leak_stack,
            );
            i += 1;
            continue;
        }
        // A request: the connection and the file take the two lowest free
        // numbers above the leaked ones, and are closed.
        let (conn, file) = (next_fd, next_fd + 1);
        let port = 1024 + (i % 60_000);
        let steps: [(&'static str, i64, FdKind, Vec<Effect>, String); 4] = [
            (
                "accept4",
                conn.into(),
                FdKind::Socket,
                vec![Effect::Open {
                    fd: conn,
                    kind: FdKind::Socket,
                    cloexec: false,
                    target: None,
                }],
                format!("6, {{AF_INET, 127.0.0.1:{port}}}, [16], SOCK_NONBLOCK"),
            ),
            (
                "openat",
                file.into(),
                FdKind::File,
                vec![Effect::Open {
                    fd: file,
                    kind: FdKind::File,
                    cloexec: true,
                    target: Some("/var/www/html/index.html".into()),
                }],
                "AT_FDCWD, \"/var/www/html/index.html\", O_RDONLY|O_NONBLOCK".into(),
            ),
            (
                "close",
                0,
                FdKind::Other,
                vec![Effect::Close { fd: file }],
                file.to_string(),
            ),
            (
                "close",
                0,
                FdKind::Other,
                vec![Effect::Close { fd: conn }],
                conn.to_string(),
            ),
        ];
        for (name, result, kind, effects, args) in steps {
            if i >= n {
                break;
            }
            model.set_clock(i * 10_000);
            let stack = if effects.iter().any(|e| matches!(e, Effect::Open { .. })) {
                s
            } else {
                None
            };
            model.record(
                PID,
                PID,
                &mut decoded(name, result, kind, effects, args),
                stack,
            );
            if mark.is_none() {
                mark = Some(model.snapshot());
            }
            i += 1;
        }
    }
    let elapsed = started.elapsed();
    let t = Instant::now();
    let leaks = model.leaks(PID, 0, 1);
    let leaks_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let diff = mark.map(|m| model.diff(PID, &m));
    let diff_ms = t.elapsed().as_secs_f64() * 1e3;
    // The stream may end inside a request, its fds still open: the
    // leaking site's count is the one to check.
    let of_leak = |sites: &[fdbg::fdtable::LeakSite]| {
        sites
            .iter()
            .filter(|s| s.stack == leak_stack)
            .map(|s| s.count as u64)
            .sum::<u64>()
    };
    assert_eq!(of_leak(&leaks), leaked, "leaks must be exact");
    assert_eq!(diff.map(|d| of_leak(&d.still_open)), Some(leaked));
    println!(
        "{:>12} {:>14.1} {:>10.0} {:>12} {:>10} {:>10.2} {:>10.2}",
        n,
        peak_rss_bytes() as f64 / 1e6,
        elapsed.as_nanos() as f64 / n.max(1) as f64,
        model.open_count(PID),
        leaked,
        leaks_ms,
        diff_ms
    );
}

/// This process's peak resident set (VmHWM), in bytes.
fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}
