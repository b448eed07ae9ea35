//! `cargo bench --bench functions`: what measuring a function costs the
//! process. The login server (testprogs, -O2) serves `login_client PORT N`
//! (N logins, one connection each; `on_login` runs once per login and
//! leaks one UDP socket); the client's wall time per login is measured
//! untraced, under `fdbg attach` observing, and under `fdbg attach` with
//! `balance on_login`, which stops the server at every entry and return of
//! on_login (a SIGTRAP each) and observes its fd syscalls; and, for
//! comparison, with a `break fd` the kernel filters (no stop here) and with
//! a `break site`, which stops at every fd event. For fdbg, the table gives
//! its ptrace stops per login and the calls `balance` counted.
//!
//! Knobs: `FDBG_BENCH_LOGINS` (default 10000), `FDBG_BENCH_RUNS` (3, the
//! modes taking turns; a row is the median run). Every process started
//! here is ended by its PID.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use common::{
    build_testprog_from, env_number, fdbg_binary, kill_and_reap, machine_line, parse_stats,
    wait_running,
};

struct Run {
    micros_per_login: f64,
    stops: Option<u64>,
    calls: Option<u64>,
}

fn main() {
    let logins = env_number("FDBG_BENCH_LOGINS", 10_000);
    let runs = env_number("FDBG_BENCH_RUNS", 3).max(1) as usize;
    let fdbg = fdbg_binary();
    let server = build_testprog_from(
        &["login_server.c", "login.c", "statsd.c"],
        "login_server-bench",
        &["-g", "-O2"],
    );
    let client = build_testprog_from(&["login_client.c"], "login_client-bench", &["-O2"]);
    println!("machine: {}", machine_line());
    println!("workload: login_client PORT {logins}; median of {runs} runs, modes taking turns");
    let modes: [(&str, Option<&[&str]>); 5] = [
        ("untraced", None),
        ("fdbg attach (observing)", Some(&[])),
        (
            "fdbg attach, balance on_login",
            Some(&["-e", "balance on_login"]),
        ),
        // A number the server never reaches: the kernel stops nothing.
        (
            "fdbg attach, break fd 50000",
            Some(&["-e", "break fd 50000"]),
        ),
        // A site no stack has: a stop at every fd event, checked there.
        (
            "fdbg attach, break site",
            Some(&["-e", "break site no_function_has_this_name"]),
        ),
    ];
    let mut results: Vec<Vec<Run>> = modes.iter().map(|_| Vec::new()).collect();
    for _ in 0..runs {
        for (i, (_, commands)) in modes.iter().enumerate() {
            results[i].push(run(&fdbg, &server, &client, logins, *commands));
        }
    }
    println!();
    println!(
        "| {:<30} | {:>10} | {:>11} | {:>10} | {:>6} |",
        "mode", "µs/login", "vs untraced", "stops/login", "calls"
    );
    println!(
        "|{:-<32}|{:->11}:|{:->12}:|{:->11}:|{:->7}:|",
        "", "", "", "", ""
    );
    let mut base = 0.0;
    for ((name, _), mut runs) in modes.iter().zip(results) {
        runs.sort_by(|a, b| a.micros_per_login.total_cmp(&b.micros_per_login));
        let median = runs.swap_remove(runs.len() / 2);
        if base == 0.0 {
            base = median.micros_per_login;
        }
        println!(
            "| {:<30} | {:>10.1} | {:>10.2}x | {:>10} | {:>6} |",
            name,
            median.micros_per_login,
            median.micros_per_login / base,
            median
                .stops
                .map_or("-".into(), |s| format!("{:.2}", s as f64 / logins as f64)),
            median.calls.map_or("-".into(), |c| c.to_string())
        );
    }
}

/// One run: a fresh server, fdbg attached with `commands` (or none), the
/// client's logins timed, fdbg interrupted for its reports.
fn run(fdbg: &Path, server: &Path, client: &Path, logins: u64, commands: Option<&[&str]>) -> Run {
    let mut server = Command::new(server)
        .arg("0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the login server");
    let mut lines = BufReader::new(server.stdout.take().expect("piped"));
    let port = loop {
        let mut line = String::new();
        if lines.read_line(&mut line).unwrap_or(0) == 0 {
            kill_and_reap(&mut server);
            panic!("the login server did not say its port");
        }
        if let Some(port) = line.split("port=").nth(1) {
            break port.split_whitespace().next().unwrap_or("").to_string();
        }
    };
    // Its leak lines, read away (a full pipe would stop it).
    let drain = std::thread::spawn(move || std::io::copy(&mut lines, &mut std::io::sink()));
    let pid = server.id();
    let tracer: Option<(Child, std::thread::JoinHandle<String>)> = commands.map(|commands| {
        // Interactive: Ctrl-C (SIGINT) ends the `continue`, and the reports
        // and `quit` follow on stdin.
        let mut child = Command::new(fdbg)
            .args(["attach", &pid.to_string()])
            .args(commands)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start fdbg");
        let _ = writeln!(child.stdin.as_mut().expect("piped"), "continue");
        let mut banner = String::new();
        let mut out = BufReader::new(child.stdout.take().expect("piped"));
        let _ = out.read_line(&mut banner);
        if commands.is_empty() {
            assert!(banner.starts_with("Attached"), "fdbg said {banner:?}");
        } else {
            let mut set = String::new();
            let _ = out.read_line(&mut set);
        }
        child.stdout = None;
        // The rest of its output: read at the end through a thread.
        let reader = std::thread::spawn(move || {
            let mut rest = String::new();
            let _ = out.read_to_string(&mut rest);
            rest
        });
        (child, reader)
    });
    assert!(wait_running(pid), "the server did not run");
    let started = Instant::now();
    let status = Command::new(client)
        .args([&port, &logins.to_string()])
        .stdout(Stdio::null())
        .status()
        .expect("run the client");
    let elapsed = started.elapsed();
    assert!(status.success(), "the client failed");
    let (mut stops, mut calls) = (None, None);
    if let Some((mut child, reader)) = tracer {
        // SAFETY: kill(2) on the PID of fdbg, this bench's child, not
        // reaped yet.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        if let Some(mut stdin) = child.stdin.take() {
            let _ = writeln!(stdin, "balance --json\nstats --json\nquit");
        }
        let out = reader.join().unwrap_or_default();
        let _ = child.wait();
        stops = parse_stats(&out).map(|s| s.stops);
        calls = out
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find_map(|d| d["balance"][0]["calls"].as_u64());
    }
    kill_and_reap(&mut server);
    let _ = drain.join();
    Run {
        micros_per_login: elapsed.as_secs_f64() * 1e6 / logins as f64,
        stops,
        calls,
    }
}
