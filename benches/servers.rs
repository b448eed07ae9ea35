//! `cargo bench --bench servers`: what tracing costs real servers.
//!
//! - nginx, one worker process, serving a small static file to wrk
//!   (`wrk -t2 -c16`), with keep-alive connections and with
//!   `Connection: close`. nginx opens and closes the file for every request
//!   (2 fd events), and with `close` it also accepts and closes the
//!   connection (2 more).
//! - memcached (`-t 2`), `set`/`get` over kept-alive connections from
//!   client threads in this bench: requests make no fd syscall at all.
//!
//! - testprogs/login_server --threads, a thread per login (3 fd events
//!   each), 5,000 sequential logins per run on a server started for it.
//!
//! Where bpftrace is installed, a row with it counting user stacks at the
//! fd syscalls (`@[ustack] = count()`, what the eBPF leak tools do): the
//! peers' price. fdbg's rows also say its own CPU per event.
//!
//! Each is measured untraced, under `fdbg attach PID` (observing: the
//! kernel's samples, no stop), under `fdbg attach --events sigtrap PID`
//! (one stop per fd event), under `fdbg attach --events ptrace PID`, and
//! under `strace -f -p PID`: requests
//! per second and the ratio to untraced; for fdbg also its stats (fd events
//! against the kernel's count, missed ones, stops per request) and a check
//! that its `fds` equals /proc/PID/fd afterwards.
//!
//! fdbg runs as `attach PID --batch -e 'continue Ns' -e 'stats --json' -e
//! 'fds --json'`; the load starts only once fdbg has printed its banner
//! (attached, events armed) and the server has left its ptrace-stop (the
//! `continue` has run), and `N` outlasts the load by a margin.
//!
//! Skipped, with the reason printed, when nginx and wrk (or memcached) are
//! not installed. Every process started here is killed by its PID and
//! reaped; the servers run from a temporary directory removed at the end.
//!
//! Knobs (environment): `FDBG_BENCH_SECS` (default 5): how long each load
//! runs; `FDBG_BENCH_CLIENTS` (default 4): memcached client threads;
//! `FDBG_BENCH_ROUNDS` (default 3): runs per mode, the modes taking turns;
//! each row is the median run; `FDBG_BENCH_ONLY` (nginx, memcached or
//! sessions); `FDBG_BENCH_PEERS_ONLY=1`: untraced, observing and bpftrace
//! only;
//! `FDBG_BENCH_SOAK=MINUTES`: instead, one long run observing nginx under
//! keep-alive load, fdbg's resident set printed every minute.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{
    Stats, env_number, fdbg_binary, kill_and_reap, machine_line, parse_fds, parse_stats, proc_fds,
    program_path, signal_and_reap, strace_installed, wait_running, wait_traced_by,
};

/// How long a server may take to start answering.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How much longer fdbg's `continue` lasts than the load.
const CONTINUE_MARGIN: u64 = 1;

fn main() {
    let mut knobs = Knobs {
        secs: env_number("FDBG_BENCH_SECS", 5).max(1),
        clients: env_number("FDBG_BENCH_CLIENTS", 4).max(1) as usize,
        rounds: env_number("FDBG_BENCH_ROUNDS", 3).max(1) as usize,
        strace: false,
    };
    let fdbg = fdbg_binary();
    let started = Instant::now();
    println!("machine: {}", machine_line());
    knobs.strace = strace_installed();
    if !knobs.strace {
        println!("strace not installed: its rows are skipped");
    }
    let tmp = TempDir::new();

    let soak = env_number("FDBG_BENCH_SOAK", 0);
    if soak > 0 {
        match (program_path("nginx"), program_path("wrk")) {
            (Some(nginx), Some(wrk)) => nginx_soak(&fdbg, &nginx, &wrk, &tmp.0, soak),
            _ => println!(
                "nginx soak skipped: nginx or wrk not installed (apt-get install nginx wrk)"
            ),
        }
        return;
    }
    let only = std::env::var("FDBG_BENCH_ONLY").unwrap_or_default();
    let (want_nginx, want_memcached) = (
        only.is_empty() || only == "nginx",
        only.is_empty() || only == "memcached",
    );
    match (program_path("nginx"), program_path("wrk")) {
        _ if !want_nginx => println!("nginx bench skipped: FDBG_BENCH_ONLY={only}"),
        (Some(nginx), Some(wrk)) => nginx_bench(&fdbg, &nginx, &wrk, &tmp.0, &knobs),
        (nginx, _) => println!(
            "nginx bench skipped: {} not installed (apt-get install nginx wrk)",
            if nginx.is_none() { "nginx" } else { "wrk" }
        ),
    }
    if only.is_empty() || only == "sessions" {
        sessions_bench(&fdbg, &knobs);
    }
    match program_path("memcached") {
        _ if !want_memcached => println!("memcached bench skipped: FDBG_BENCH_ONLY={only}"),
        Some(memcached) => memcached_bench(&fdbg, &memcached, &knobs),
        None => {
            println!("memcached bench skipped: memcached not installed (apt-get install memcached)")
        }
    }
    println!("bench time: {:.1} s", started.elapsed().as_secs_f64());
}

/// The environment's knobs.
struct Knobs {
    secs: u64,
    clients: usize,
    rounds: usize,
    strace: bool,
}

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let path = std::env::temp_dir().join(format!("fdbg-bench-servers-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        // nginx's worker runs as nobody when started by root: it must read the docs.
        let _ =
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755));
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A port nobody listens on now (the kernel picks it; there is a short
/// window before the server binds it).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

/// Polls until `port` accepts a connection.
fn wait_listening(port: u16, server: &mut Child) -> bool {
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        if let Ok(Some(_)) = server.try_wait() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// A started server, ended (by PID) and reaped on drop: SIGTERM, which
/// nginx's master passes on to its workers and waits for, then SIGKILL for
/// whatever is left of it and of the `workers` it started.
struct Server {
    child: Child,
    workers: Vec<u32>,
}

impl Server {
    fn new(child: Child) -> Server {
        Server {
            child,
            workers: Vec::new(),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the PID of a child not reaped yet.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(10));
        }
        kill_and_reap(&mut self.child);
        for &worker in &self.workers {
            // A worker outliving its master is orphaned; it is still ours
            // if its command line says so.
            let cmdline = std::fs::read(format!("/proc/{worker}/cmdline")).unwrap_or_default();
            if cmdline.starts_with(b"nginx: worker") {
                // SAFETY: kill(2) on a PID checked just above to be our worker.
                unsafe {
                    libc::kill(worker as i32, libc::SIGKILL);
                }
            }
        }
    }
}

/// How the server is traced while the load runs.
#[derive(Clone, Copy, PartialEq)]
enum Tracing {
    Untraced,
    Fdbg(&'static str),
    Strace,
    /// The server untraced while fdbg (perf) is attached to an idle
    /// `sleep`: what perf's syscall tracepoint costs everyone (the kernel
    /// runs it at every syscall exit of every process while it is armed).
    FdbgElsewhere,
    /// bpftrace counting user stacks at the fd syscalls' entries, as the
    /// eBPF leak tools do (`@[ustack] = count()`): the price of the peers.
    Bpftrace,
}

impl Tracing {
    fn name(self) -> &'static str {
        match self {
            Tracing::Untraced => "untraced",
            Tracing::Fdbg("perf") => "fdbg attach (observing)",
            Tracing::Fdbg("sigtrap") => "fdbg attach --events sigtrap",
            Tracing::Fdbg(_) => "fdbg attach --events ptrace",
            Tracing::Strace => "strace -f -p",
            Tracing::FdbgElsewhere => "untraced, fdbg (perf) on sleep",
            Tracing::Bpftrace => "bpftrace @[ustack] (fd syscalls)",
        }
    }
}

/// What a traced load run gave.
struct Outcome {
    rate: f64,
    requests: u64,
    stats: Option<Stats>,
    /// fdbg's `fds` after the load, and /proc's after fdbg let go.
    fds_check: Option<(Vec<i32>, Vec<i32>)>,
    /// fdbg's CPU seconds while the load ran (its attach, and the kernel's
    /// zeroing of its rings, before).
    load_cpu_s: Option<f64>,
}

/// Runs `load` (which returns requests done and requests/s) with `pid`
/// traced as `tracing`; the tracer is attached and the process running
/// before the load starts, and gone (the process untraced) after.
fn traced_run(
    fdbg: &Path,
    pid: u32,
    tracing: Tracing,
    secs: u64,
    load: &mut dyn FnMut() -> (u64, f64),
) -> Outcome {
    match tracing {
        Tracing::Untraced => {
            let (requests, rate) = load();
            Outcome {
                rate,
                requests,
                stats: None,
                fds_check: None,
                load_cpu_s: None,
            }
        }
        Tracing::Fdbg(events) => {
            let mut tracer = Command::new(fdbg)
                .args(["attach", &pid.to_string(), "--events", events, "--batch"])
                .args(["-e", &format!("continue {}s", secs + CONTINUE_MARGIN)])
                .args(["-e", "stats --json", "-e", "fds --json"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .spawn()
                .expect("start fdbg attach");
            let mut out = BufReader::new(tracer.stdout.take().expect("piped stdout"));
            // The banner: attached, events armed; then `continue` resumes
            // the server, which leaves its ptrace-stop.
            let mut banner = String::new();
            let _ = out.read_line(&mut banner);
            if !banner.starts_with("Attached to process") || !wait_running(pid) {
                kill_and_reap(&mut tracer);
                panic!(
                    "fdbg attach --events {events} {pid} did not attach and continue: {banner:?}"
                );
            }
            // Read while the load runs: a load that outlasts the continue
            // meets fdbg printing its report with the process stopped,
            // and a report longer than the pipe holds would wait for a
            // reader that waits for the load.
            let reader = std::thread::spawn(move || {
                let mut report = String::new();
                out.read_to_string(&mut report).map(|_| report)
            });
            let load_start = Instant::now();
            let cpu_before = cpu_seconds(tracer.id());
            let (requests, rate) = load();
            let load_cpu_s = cpu_seconds(tracer.id())
                .zip(cpu_before)
                .map(|(after, before)| after - before);
            let report = reader
                .join()
                .expect("fdbg's stdout reader")
                .expect("read fdbg stdout");
            let status = tracer.wait().expect("wait fdbg");
            assert!(status.success(), "fdbg attach failed: {status}\n{report}");
            assert!(
                report.contains("Time is up") && load_start.elapsed() > Duration::from_secs(secs),
                "fdbg's continue ended before the load did:\n{report}"
            );
            Outcome {
                rate,
                requests,
                stats: parse_stats(&report),
                fds_check: Some((
                    parse_fds(&report).unwrap_or_else(|| panic!("no fds document:\n{report}")),
                    proc_fds(pid),
                )),
                load_cpu_s,
            }
        }
        Tracing::FdbgElsewhere => {
            let mut sleep = Command::new("sleep")
                .arg("1000")
                .stdin(Stdio::null())
                .spawn()
                .expect("start sleep");
            let outcome = traced_run(fdbg, sleep.id(), Tracing::Fdbg("perf"), secs, load);
            kill_and_reap(&mut sleep);
            Outcome {
                stats: None,
                fds_check: None,
                load_cpu_s: None,
                ..outcome
            }
        }
        Tracing::Bpftrace => {
            let script = format!(
                "tracepoint:syscalls:sys_enter_openat, tracepoint:syscalls:sys_enter_close, \
                 tracepoint:syscalls:sys_enter_accept4, tracepoint:syscalls:sys_enter_accept, \
                 tracepoint:syscalls:sys_enter_socket /pid == {pid}/ {{ @[ustack] = count(); }}"
            );
            // bpftrace finds the syscall tracepoints in tracefs, which it
            // does not mount (fdbg does, where it needs them).
            fdbg::perf::tracefs().expect("tracefs, for bpftrace's tracepoints");
            let mut tracer = Command::new("bpftrace")
                .args(["-e", &script])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("start bpftrace");
            let mut out = BufReader::new(tracer.stdout.take().expect("piped stdout"));
            let mut first = String::new();
            let _ = out.read_line(&mut first);
            if !first.starts_with("Attaching") {
                kill_and_reap(&mut tracer);
                panic!("bpftrace did not attach: {first:?}");
            }
            // Its map, printed at the end: the stacks it counted.
            let drain = std::thread::spawn(move || {
                let mut text = String::new();
                let _ = out.read_to_string(&mut text);
                text
            });
            let (requests, rate) = load();
            signal_and_reap(&mut tracer, libc::SIGINT);
            let counts = drain.join().unwrap_or_default();
            let counted: u64 = counts
                .lines()
                .filter_map(|line| line.strip_prefix("]: ")?.trim().parse::<u64>().ok())
                .sum();
            assert!(
                counted > 0,
                "bpftrace counted no fd syscall in {requests} requests: its probes \
                 did not fire\n{counts}"
            );
            Outcome {
                rate,
                requests,
                stats: None,
                fds_check: None,
                load_cpu_s: None,
            }
        }
        Tracing::Strace => {
            let mut tracer = Command::new("strace")
                .args(["-f", "-p", &pid.to_string(), "-o", "/dev/null"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start strace");
            if !wait_traced_by(pid, Some(tracer.id())) || !wait_running(pid) {
                kill_and_reap(&mut tracer);
                panic!("strace did not attach to {pid}");
            }
            let (requests, rate) = load();
            // strace detaches on SIGTERM.
            signal_and_reap(&mut tracer, libc::SIGTERM);
            assert!(
                wait_traced_by(pid, None),
                "{pid} still traced after strace ended"
            );
            Outcome {
                rate,
                requests,
                stats: None,
                fds_check: None,
                load_cpu_s: None,
            }
        }
    }
}

/// The CPU seconds (user and system) process `pid` has used, from
/// /proc/PID/stat; None once it is gone.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf reads a constant of the system.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| ticks as f64 / hz as f64)
}

/// One table row per (load, tracing).
struct Row {
    load: String,
    tracing: Tracing,
    /// The median run, and the slowest and fastest run's requests/s.
    outcome: Outcome,
    min: f64,
    max: f64,
    ratio: f64,
    /// The untraced median requests/s.
    base: f64,
}

fn print_rows(title: &str, rows: &[Row]) {
    println!();
    println!("{title}");
    println!();
    println!(
        "| {:<19} | {:<33} | {:>10} | {:>13} | {:>11} | {:>9} | {:>9} | {:>6} | {:>9} | {:>11} |",
        "load",
        "mode",
        "requests/s",
        "min–max",
        "vs untraced",
        "fd events",
        "kernel",
        "missed",
        "stops/req",
        "µs/stop (+)"
    );
    println!(
        "|{:-<21}|{:-<35}|{:->11}:|{:->14}:|{:->12}:|{:->10}:|{:->10}:|{:->7}:|{:->10}:|{:->12}:|",
        "", "", "", "", "", "", "", "", "", ""
    );
    for row in rows {
        let o = &row.outcome;
        let (events, kernel, missed, per_req, per_stop) = match &o.stats {
            Some(s) => {
                let per_req = s.stops as f64 / o.requests.max(1) as f64;
                // The time a request took beyond untraced, spread over its stops.
                let added = (1.0 / o.rate - 1.0 / row.base) * 1e6;
                let per_stop = if per_req >= 0.1 {
                    format!("{:.1}", added / per_req)
                } else {
                    "-".into()
                };
                (
                    s.total_events.to_string(),
                    s.kernel_fd_syscalls.map_or("-".into(), |n| n.to_string()),
                    s.missed.to_string(),
                    format!("{per_req:.2}"),
                    per_stop,
                )
            }
            None => ("-".into(), "-".into(), "-".into(), "-".into(), "-".into()),
        };
        println!(
            "| {:<19} | {:<33} | {:>10.0} | {:>13} | {:>11} | {:>9} | {:>9} | {:>6} | {:>9} | {:>11} |",
            row.load,
            row.tracing.name(),
            o.rate,
            format!("{:.0}–{:.0}", row.min, row.max),
            format!("{:.2}x", row.ratio),
            events,
            kernel,
            missed,
            per_req,
            per_stop
        );
    }
    for row in rows {
        if let Some((fdbg, proc)) = &row.outcome.fds_check {
            let verdict = if fdbg == proc { "equal" } else { "DIFFER" };
            println!(
                "{} / {}: fdbg's fds and /proc after the load: {verdict} ({} fds){}",
                row.load,
                row.tracing.name(),
                proc.len(),
                if fdbg == proc {
                    String::new()
                } else {
                    format!(": fdbg {fdbg:?}, /proc {proc:?}")
                }
            );
        }
        if let Some(s) = &row.outcome.stats {
            println!(
                "{} / {}: events from {}, {} stops, {} syscalls decoded, {} requests, fdbg's CPU {} µs per event ({} during the load)",
                row.load,
                row.tracing.name(),
                s.mechanism,
                s.stops,
                s.syscalls_seen,
                row.outcome.requests,
                s.cpu_us_per_event
                    .map_or("?".into(), |us| format!("{us:.2}")),
                row.outcome
                    .load_cpu_s
                    .filter(|_| s.syscalls_seen > 0)
                    .map_or("?".into(), |cpu| format!(
                        "{:.2}",
                        cpu * 1e6 / s.syscalls_seen as f64
                    ))
            );
        }
    }
}

/// Runs every mode `rounds` times, the modes taking turns round after
/// round (so that other load on the machine lands on all alike); each
/// mode's row is its median run by requests/s.
fn measure(
    load: &str,
    modes: &[Tracing],
    rounds: usize,
    run: &mut dyn FnMut(Tracing) -> Outcome,
) -> Vec<Row> {
    let mut samples: Vec<Vec<Outcome>> = modes.iter().map(|_| Vec::new()).collect();
    for _ in 0..rounds {
        for (i, &tracing) in modes.iter().enumerate() {
            samples[i].push(run(tracing));
        }
    }
    let mut rows: Vec<Row> = modes
        .iter()
        .zip(samples)
        .map(|(&tracing, mut outcomes)| {
            outcomes.sort_by(|a, b| a.rate.total_cmp(&b.rate));
            let (min, max) = (outcomes[0].rate, outcomes[outcomes.len() - 1].rate);
            let outcome = outcomes.swap_remove(outcomes.len() / 2);
            Row {
                load: load.to_string(),
                tracing,
                outcome,
                min,
                max,
                ratio: 1.0,
                base: 0.0,
            }
        })
        .collect();
    let base = rows[0].outcome.rate;
    for row in &mut rows {
        row.ratio = row.outcome.rate / base;
        row.base = base;
    }
    rows
}

fn modes(strace: bool) -> Vec<Tracing> {
    let mut modes = vec![Tracing::Untraced, Tracing::Fdbg("perf")];
    if program_path("bpftrace").is_some() {
        modes.push(Tracing::Bpftrace);
    }
    if std::env::var_os("FDBG_BENCH_PEERS_ONLY").is_some() {
        return modes;
    }
    modes.extend([Tracing::Fdbg("sigtrap"), Tracing::Fdbg("ptrace")]);
    if strace {
        modes.push(Tracing::Strace);
    }
    modes
}

fn nginx_bench(fdbg: &Path, nginx: &Path, wrk: &Path, tmp: &Path, knobs: &Knobs) {
    let &Knobs {
        secs,
        rounds,
        strace,
        ..
    } = knobs;
    let Some((master, worker, port)) = start_nginx(nginx, tmp) else {
        return;
    };
    println!();
    println!(
        "nginx: master {}, worker {worker}, port {port}; wrk -t2 -c16 -d{secs}s per row",
        master.child.id()
    );
    let url = format!("http://127.0.0.1:{port}/index.html");
    let mut rows = Vec::new();
    for (load, close) in [("keepalive", false), ("Connection: close", true)] {
        let mut run = |tracing| {
            let mut load = || wrk_run(wrk, &url, secs, close);
            traced_run(fdbg, worker, tracing, secs, &mut load)
        };
        rows.extend(measure(load, &modes(strace), rounds, &mut run));
    }
    print_rows(
        &format!("nginx (1 worker, static file), wrk -t2 -c16 -d{secs}s, median of {rounds}:"),
        &rows,
    );
}

/// nginx with one worker serving a static file from `tmp`: the server,
/// its worker's PID and the port; None (said why) if it did not start.
fn start_nginx(nginx: &Path, tmp: &Path) -> Option<(Server, u32, u16)> {
    let dir = tmp.join("nginx");
    std::fs::create_dir_all(&dir).expect("create nginx dir");
    let _ = std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755));
    std::fs::write(
        dir.join("index.html"),
        "<html><body>fdbg bench</body></html>\n",
    )
    .expect("write index.html");
    let port = free_port();
    let d = dir.display();
    let conf = format!(
        "daemon off;\nmaster_process on;\nworker_processes 1;\n\
         error_log {d}/error.log;\npid {d}/nginx.pid;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n  access_log off;\n  root {d};\n\
         \x20 client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
         \x20 fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         \x20 server {{ listen 127.0.0.1:{port}; }}\n}}\n"
    );
    std::fs::write(dir.join("nginx.conf"), conf).expect("write nginx.conf");
    let master = Command::new(nginx)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .arg("-p")
        .arg(&dir)
        .arg("-e")
        .arg(dir.join("error.log"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nginx");
    let mut master = Server::new(master);
    if !wait_listening(port, &mut master.child) {
        let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
        println!("nginx bench skipped: nginx did not start on port {port}:\n{log}");
        return None;
    }
    let worker = match children(master.child.id()).as_slice() {
        [w] => *w,
        other => panic!(
            "nginx master {} has workers {other:?}, expected one",
            master.child.id()
        ),
    };
    master.workers.push(worker);
    Some((master, worker, port))
}

/// `FDBG_BENCH_SOAK=MINUTES`: fdbg observing the nginx worker under wrk
/// keep-alive load for that long, `continue --every 1m`; at each tick
/// fdbg's resident set (VmRSS from /proc) is read, and a row printed. At
/// the end, coverage and `fds` against /proc.
fn nginx_soak(fdbg: &Path, nginx: &Path, wrk: &Path, tmp: &Path, minutes: u64) {
    let Some((master, worker, port)) = start_nginx(nginx, tmp) else {
        return;
    };
    let secs = minutes * 60;
    println!(
        "nginx soak: master {}, worker {worker}, port {port}; fdbg attach (observing), continue {secs}s --every 1m; wrk -t2 -c16 -d{secs}s keep-alive",
        master.child.id()
    );
    let mut tracer = Command::new(fdbg)
        .args(["attach", &worker.to_string(), "--batch", "--json"])
        .args([
            "-e",
            &format!("continue {}s --every 1m", secs + CONTINUE_MARGIN),
        ])
        .args(["-e", "stats", "-e", "fds"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start fdbg attach");
    let fdbg_pid = tracer.id();
    let out = BufReader::new(tracer.stdout.take().expect("piped stdout"));
    let url = format!("http://127.0.0.1:{port}/index.html");
    // Attached (traced by fdbg) and resumed by the `continue`.
    if !wait_traced_by(worker, Some(fdbg_pid)) || !wait_running(worker) {
        kill_and_reap(&mut tracer);
        panic!("fdbg did not attach to the nginx worker {worker} and continue");
    }
    let load = {
        let (wrk, url) = (wrk.to_path_buf(), url.clone());
        std::thread::spawn(move || wrk_run(&wrk, &url, secs, false))
    };
    let mut report = String::new();
    println!("{:>8} {:>14} {:>10}", "minute", "fdbg RSS (MB)", "open fds");
    let mut rss = Vec::new();
    for line in out.lines() {
        let Ok(line) = line else { break };
        if let Ok(doc) = serde_json::from_str::<serde_json::Value>(&line)
            && let Some(tick) = doc.get("tick")
        {
            let mb = vm_rss_kb(fdbg_pid) as f64 / 1024.0;
            rss.push(mb);
            println!(
                "{:>8.0} {:>14.1} {:>10}",
                tick["elapsed_s"].as_f64().unwrap_or(0.0) / 60.0,
                mb,
                tick["open_fds"]
            );
            continue;
        }
        report.push_str(&line);
        report.push('\n');
    }
    let status = tracer.wait().expect("wait fdbg");
    let (requests, rate) = load.join().expect("wrk");
    assert!(status.success(), "fdbg failed: {status}\n{report}");
    let stats = parse_stats(&report).expect("a stats document");
    let fds = parse_fds(&report).expect("an fds document");
    println!(
        "{requests} requests ({rate:.0}/s); fd events {} of the kernel's {} ({} missed); fds equal /proc after: {}",
        stats.total_events,
        stats.kernel_fd_syscalls.unwrap_or(0),
        stats.missed,
        fds == proc_fds(worker)
    );
    if let (Some(first), Some(last)) = (rss.first(), rss.last()) {
        println!(
            "RSS at the last tick / at the first: {:.3} ({:.1} MB → {:.1} MB)",
            last / first,
            first,
            last
        );
    }
}

/// A process's resident set in KiB (VmRSS).
fn vm_rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The child processes of `pid`.
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect()
}

/// One wrk run: (requests, requests/s).
fn wrk_run(wrk: &Path, url: &str, secs: u64, close: bool) -> (u64, f64) {
    let mut cmd = Command::new(wrk);
    cmd.args(["-t2", "-c16", &format!("-d{secs}s")]);
    if close {
        cmd.args(["-H", "Connection: close"]);
    }
    let out = cmd.arg(url).stdin(Stdio::null()).output().expect("run wrk");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "wrk failed: {}\n{text}", out.status);
    let rate = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no Requests/sec in wrk's output:\n{text}"));
    let requests = text
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    (requests, rate)
}

fn memcached_bench(fdbg: &Path, memcached: &Path, knobs: &Knobs) {
    let &Knobs {
        secs,
        clients,
        rounds,
        strace,
    } = knobs;
    let port = free_port();
    let server = Command::new(memcached)
        .args([
            "-l",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "0",
            "-t",
            "2",
        ])
        .args(["-u", "nobody"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start memcached");
    let mut server = Server::new(server);
    if !wait_listening(port, &mut server.child) {
        println!("memcached bench skipped: memcached did not start on port {port}");
        return;
    }
    let pid = server.child.id();
    println!();
    println!(
        "memcached -t 2: pid {pid}, port {port}; {clients} clients × 1 kept-alive connection, set+get, {secs} s per row"
    );
    let mut run = |tracing| {
        let mut load = || memcached_load(port, clients, secs);
        traced_run(fdbg, pid, tracing, secs, &mut load)
    };
    let mut modes = modes(strace);
    modes.insert(1, Tracing::FdbgElsewhere);
    let rows = measure("set/get, kept alive", &modes, rounds, &mut run);
    print_rows(
        &format!(
            "memcached -t 2, {clients} client connections (no fd syscall per request), {secs} s, median of {rounds}:"
        ),
        &rows,
    );
}

/// `clients` threads, each with one connection, doing `set` then `get`
/// (two requests) until `secs` pass: (requests, requests/s). The
/// connections are made before the clock starts and closed after it stops.
fn memcached_load(port: u16, clients: usize, secs: u64) -> (u64, f64) {
    let done = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let streams: Vec<TcpStream> = (0..clients)
        .map(|_| {
            let s = TcpStream::connect(("127.0.0.1", port)).expect("connect to memcached");
            s.set_nodelay(true).expect("TCP_NODELAY");
            s.set_read_timeout(Some(Duration::from_secs(30)))
                .expect("read timeout");
            s
        })
        .collect();
    let start = Instant::now();
    let threads: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(i, stream)| {
            let done = done.clone();
            let count = count.clone();
            std::thread::spawn(move || client(i, stream, &done, &count))
        })
        .collect();
    std::thread::sleep(Duration::from_secs(secs));
    done.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("client thread");
    }
    let elapsed = start.elapsed().as_secs_f64();
    let requests = count.load(Ordering::Relaxed);
    (requests, requests as f64 / elapsed)
}

fn client(i: usize, stream: TcpStream, done: &AtomicBool, count: &AtomicU64) {
    let value = format!("value-{i:04}");
    let set = format!("set key{i} 0 0 {}\r\n{value}\r\n", value.len());
    let get = format!("get key{i}\r\n");
    let expect_get = format!("VALUE key{i} 0 {}\r\n{value}\r\nEND\r\n", value.len());
    let mut writer = stream.try_clone().expect("clone stream");
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    let mut n = 0;
    while !done.load(Ordering::Relaxed) {
        writer.write_all(set.as_bytes()).expect("send set");
        line.clear();
        reader.read_line(&mut line).expect("read set answer");
        assert_eq!(line, "STORED\r\n", "memcached answered set with {line:?}");
        writer.write_all(get.as_bytes()).expect("send get");
        let mut answer = String::new();
        while !answer.ends_with("END\r\n") {
            if reader.read_line(&mut answer).expect("read get answer") == 0 {
                panic!("memcached closed the connection");
            }
        }
        assert_eq!(answer, expect_get, "memcached answered get with {answer:?}");
        n += 2;
    }
    count.fetch_add(n, Ordering::Relaxed);
}

/// A thread per session: testprogs/login_server --threads, each login a
/// thread of its own (accept, the leaked statsd socket, close: 3 fd
/// events), 5,000 sequential logins by login_client per run, on a server
/// started for the run (the leaks would exhaust a long-lived one's fds).
fn sessions_bench(fdbg: &Path, knobs: &Knobs) {
    let rounds = knobs.rounds;
    let server = common::build_testprog_from(
        &["login_server.c", "login.c", "statsd.c"],
        "bench-login-server",
        &["-g", "-O2", "-pthread"],
    );
    let client = common::build_testprog("login_client.c", "bench-login-client", &["-g", "-O2"]);
    println!();
    println!(
        "login_server --threads, a server per run; login_client, {SESSION_LOGINS} sequential logins per run"
    );
    let mut run = |tracing| {
        let Some((server, port)) = start_login_server(&server) else {
            panic!("login_server did not say its port");
        };
        let mut load = || logins_load(&client, port, SESSION_LOGINS);
        // fdbg's `continue` lasts at least the load: a few seconds.
        let outcome = traced_run(fdbg, server.child.id(), tracing, 4, &mut load);
        drop(server);
        outcome
    };
    let modes = modes(false);
    let rows = measure("thread per session", &modes, rounds, &mut run);
    print_rows(
        &format!(
            "login server, a thread per login (3 fd events each), {SESSION_LOGINS} logins, median of {rounds}:"
        ),
        &rows,
    );
}

/// Logins per run of the sessions bench.
const SESSION_LOGINS: u64 = 5_000;

/// A login_server --threads and its port; its EXPECT lines read away.
fn start_login_server(program: &Path) -> Option<(Server, u16)> {
    let mut child = Command::new(program)
        .args(["--threads", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start login_server");
    let mut out = BufReader::new(child.stdout.take().expect("piped stdout"));
    let server = Server::new(child);
    let mut port = None;
    for _ in 0..4 {
        let mut line = String::new();
        let _ = out.read_line(&mut line);
        if let Some(p) = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("port="))
        {
            port = p.parse::<u16>().ok();
            break;
        }
    }
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    Some((server, port?))
}

/// `logins` sequential logins: (logins, logins/s).
fn logins_load(client: &Path, port: u16, logins: u64) -> (u64, f64) {
    let started = Instant::now();
    let status = Command::new(client)
        .args([&port.to_string(), &logins.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .expect("run login_client");
    assert!(status.success(), "login_client failed: {status}");
    (logins, logins as f64 / started.elapsed().as_secs_f64())
}
