//! Attach observing (the kernel's samples, no stop at fd events) against
//! attach stopping at every fd event (`--events sigtrap`): the same reports
//! on the same programs, every fd syscall the kernel counted recorded, and
//! `break count N` still stopping the process at the event that makes N+1.

use std::collections::BTreeSet;
use std::process::Command;

use serde_json::Value;
use serial_test::serial;

use crate::harness::{
    self, Interactive, Shape, TEST_LIMIT, Watchdog, assert_untraced_and_running, num,
};
use crate::login::Server;
use crate::testprogs::{ChildGuard, open_fds, testprog};

/// A report with what differs from run to run taken out: pids, addresses,
/// event numbers, inode and port numbers in targets, timings.
fn normalized(doc: &Value) -> Value {
    match doc {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| {
                    !matches!(
                        k.as_str(),
                        "pid"
                            | "address"
                            | "seq"
                            | "first_seq"
                            | "last_seq"
                            | "since"
                            | "tid"
                            | "oldest_age_s"
                            | "newest_age_s"
                            | "per_min"
                    )
                })
                .map(|(k, v)| {
                    let v = match (k.as_str(), v) {
                        ("notes", Value::Array(notes)) => Value::Array(
                            notes
                                .iter()
                                .map(|n| Value::String(without_digits(n.as_str().unwrap_or(""))))
                                .collect(),
                        ),
                        (
                            "target" | "local" | "remote" | "origin" | "args" | "notes",
                            Value::String(s),
                        ) => Value::String(without_digits(s)),
                        _ => normalized(v),
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(normalized).collect()),
        other => other.clone(),
    }
}

/// Where two documents first differ: a path and the two values.
fn first_difference(a: &Value, b: &Value, path: &str) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().find_map(|k| match (x.get(k), y.get(k)) {
                (Some(u), Some(v)) => first_difference(u, v, &format!("{path}.{k}")),
                (u, v) => Some(format!("{path}.{k}: {u:?} vs {v:?}")),
            })
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (u, v))| first_difference(u, v, &format!("{path}[{i}]"))),
        _ if a == b => None,
        _ => Some(format!("{path}: {a} vs {b}")),
    }
}

fn without_digits(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            // 0x… addresses: every hex digit.
            let hex = c == '0' && chars.peek() == Some(&'x');
            if hex {
                chars.next();
                while chars.peek().is_some_and(|d| d.is_ascii_hexdigit()) {
                    chars.next();
                }
            }
            if !out.ends_with('#') {
                out.push('#');
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The reports of `program --wait ARGS` attached with `--events EVENTS`,
/// run to its end: leaks, fds, the diff since attach, sockets, the history
/// of every fd still open, and stats (returned apart: it differs).
struct Reports {
    compared: Vec<Value>,
    stats: Value,
    session: String,
}

fn reports_of(program: &str, args: &[&str], events: &str) -> Reports {
    let mut started = ChildGuard::spawn(Command::new(testprog(program)).arg("--wait").args(args));
    let pid = started.pid();
    let mut output = started.output();
    output.wait_for("ready");
    let mut fdbg = Interactive::attach(pid, events);
    fdbg.send("mark attach");
    started.send_line();
    fdbg.send("continue");
    fdbg.wait_line("the exit", |l| l.contains("exited"));
    let mut compared = Vec::new();
    fdbg.send("leaks --json");
    compared.push(fdbg.wait_doc(Shape::Leaks));
    fdbg.send("fds --json");
    let fds = fdbg.wait_doc(Shape::Fds);
    compared.push(fds.clone());
    fdbg.send("diff attach --json");
    compared.push(
        fdbg.wait_line("the diff", |l| l.contains("\"opened_and_closed\""))
            .parse_json(),
    );
    fdbg.send("sockets --json");
    compared.push(
        fdbg.wait_line("the sockets", |l| l.contains("\"invisible_sites\""))
            .parse_json(),
    );
    for fd in fds["fds"].as_array().expect("fds") {
        fdbg.send(&format!("history {} --json", fd["fd"]));
        compared.push(fdbg.wait_doc(Shape::History));
    }
    fdbg.send("stats --json");
    let stats = fdbg.wait_doc(Shape::Stats);
    fdbg.send("quit");
    assert!(fdbg.wait_exit().success(), "{fdbg}");
    Reports {
        compared,
        stats,
        session: fdbg.to_string(),
    }
}

trait ParseJson {
    fn parse_json(&self) -> Value;
}

impl ParseJson for String {
    fn parse_json(&self) -> Value {
        serde_json::from_str(self).unwrap_or_else(|e| panic!("{e}: {self}"))
    }
}

/// Each program's reports, observed and stopped; and observing made no
/// stop for an fd event and recorded everything the kernel counted.
fn same_reports(program: &str, args: &[&str]) {
    let stopped = reports_of(program, args, "sigtrap");
    let observed = reports_of(program, args, "perf");
    assert_eq!(
        stopped.stats["mechanism"], "perf-sigtrap",
        "{}",
        stopped.session
    );
    assert_eq!(
        observed.stats["mechanism"], "perf-observe",
        "{}",
        observed.session
    );
    for (a, b) in stopped.compared.iter().zip(&observed.compared) {
        let difference = first_difference(&normalized(a), &normalized(b), "");
        assert!(
            difference.is_none(),
            "{program}: a report differs with and without stops: {}\nwith stops:\n{}\nobserving:\n{}",
            difference.unwrap_or_default(),
            stopped.session,
            observed.session
        );
    }
    assert_eq!(stopped.compared.len(), observed.compared.len());
    let stats = &observed.stats;
    let figures = &stats["observed"];
    assert_eq!(
        num(figures, "recorded"),
        num(figures, "counted"),
        "coverage\n{}",
        observed.session
    );
    assert_eq!(num(figures, "lost"), 0, "{}", observed.session);
    assert_eq!(num(stats, "missed"), 0, "{}", observed.session);
    assert_eq!(num(stats, "adopted"), 0, "{}", observed.session);
    assert_eq!(num(stats, "dropped"), 0, "{}", observed.session);
    assert_eq!(
        num(stats, "total_events"),
        num(&stopped.stats, "total_events"),
        "{}",
        observed.session
    );
    // Stops only for what is not an fd event: the attach's interrupt, the
    // threads' creation and exits, the exec, the exit's last look.
    assert!(
        num(stats, "stops") < num(&stopped.stats, "stops"),
        "{}",
        observed.session
    );
}

#[test]
#[serial]
fn leak3_reports_the_same_observed_and_stopped() {
    let _watchdog = Watchdog::new("observe_leak3", TEST_LIMIT);
    same_reports("leak3", &[]);
}

#[test]
#[serial]
fn fd_zoo_reports_the_same_observed_and_stopped() {
    let _watchdog = Watchdog::new("observe_fd_zoo", TEST_LIMIT);
    same_reports("fd_zoo", &[]);
}

#[test]
#[serial]
fn threads_report_the_same_observed_and_stopped() {
    let _watchdog = Watchdog::new("observe_threads", TEST_LIMIT);
    // One thread: the order of events is the program's, the same each run.
    same_reports("threads", &["1", "2000", "3"]);
}

/// The login server's logins, observed: its leaks and sockets reports, and
/// the process never stopped for an fd event; sampled by the BPF program
/// at the fd syscalls' own exit tracepoints (fdbg runs as root in the
/// tests that observe, and mounts tracefs where it is not).
#[test]
#[serial]
fn login_server_leaks_observed_without_a_stop_per_login() {
    let _watchdog = Watchdog::new("observe_login", TEST_LIMIT);
    let stats = observe_logins(None);
    let sampler = stats["observed"]["sampler"].as_str().unwrap_or_default();
    assert!(
        sampler.starts_with("a BPF program at the fd syscalls' exit tracepoints"),
        "{stats}"
    );
}

/// The same with the BPF program at the raw tracepoint sys_exit, its
/// fallback where the syscalls' tracepoints are missing.
#[test]
#[serial]
fn login_server_leaks_observed_by_the_bpf_program_at_sys_exit() {
    let _watchdog = Watchdog::new("observe_login_sys_exit", TEST_LIMIT);
    let stats = observe_logins(Some("sys_exit"));
    let sampler = stats["observed"]["sampler"].as_str().unwrap_or_default();
    assert!(
        sampler.starts_with("a BPF program at sys_exit (not at the fd syscalls' own tracepoints: sys_exit was asked for)"),
        "{stats}"
    );
}

/// Logins after a stop: their stacks repeat the first logins' (one
/// accept, socket and close site each, at the same depth), which the stop
/// drained and walked; the kernel finds their return addresses again and
/// copies no stack, and the leaks are still exact, at statsd_init.
#[test]
#[serial]
fn repeated_stacks_are_found_again_by_the_kernel_without_a_copy() {
    let _watchdog = Watchdog::new("observe_found_again", TEST_LIMIT);
    const LOGINS: usize = 10;
    let mut server = Server::start();
    let pid = server.pid();
    let mut fdbg = Interactive::attach(pid, "perf");
    for _ in 0..2 {
        fdbg.send("continue");
        server.logins(LOGINS);
        fdbg.signal(libc::SIGINT);
        fdbg.wait_prefix("Interrupted");
    }
    fdbg.send("leaks --json");
    let leaks = fdbg.wait_doc(Shape::Leaks);
    fdbg.send("stats --json");
    let stats = fdbg.wait_doc(Shape::Stats);
    fdbg.send("quit");
    assert!(fdbg.wait_exit().success(), "{fdbg}");
    let leaked: BTreeSet<i64> = (0..2 * LOGINS)
        .map(|_| server.output.wait_for("leak").fd() as i64)
        .collect();
    assert_leaks_at_statsd_init(&leaks, &leaked, &fdbg);
    // Every event of the second round: 3 per login.
    let again = num(&stats["observed"], "walks_found_again");
    assert!(again >= 3 * LOGINS as i64, "{stats}");
    assert_eq!(num(&stats, "total_events"), 6 * LOGINS as i64, "{stats}");
    assert_untraced_and_running(pid, &fdbg);
}

/// The biggest leak site is the login server's statsd_init and holds
/// exactly the fds the server said it leaked.
fn assert_leaks_at_statsd_init(leaks: &Value, leaked: &BTreeSet<i64>, fdbg: &Interactive) {
    let site = &leaks["sites"][0];
    assert_eq!(site["frames"][0]["function"], "statsd_init", "{fdbg}");
    let fds: BTreeSet<i64> = site["fds"]
        .as_array()
        .expect("fds")
        .iter()
        .filter_map(Value::as_i64)
        .collect();
    assert_eq!(&fds, leaked, "{fdbg}");
}

/// The same with perf tracepoint events per thread, the BPF program's
/// fallback (and the sampler under `--follow-forks`).
#[test]
#[serial]
fn login_server_leaks_observed_by_perf_events() {
    let _watchdog = Watchdog::new("observe_login_perf", TEST_LIMIT);
    let stats = observe_logins(Some("perf"));
    let sampler = stats["observed"]["sampler"].as_str().unwrap_or_default();
    assert!(sampler.starts_with("perf tracepoint events"), "{stats}");
}

/// 30 logins observed (`FDBG_OBSERVE` set to `observe`, if any): the leaks
/// exact, no stop but the attach's and Ctrl-C's, every fd syscall the
/// kernel counted recorded; `stats --json`.
fn observe_logins(observe: Option<&str>) -> Value {
    const LOGINS: usize = 30;
    let mut server = Server::start();
    let pid = server.pid();
    let mut command = harness::fdbg();
    command.args(["attach", &pid.to_string(), "--events", "perf"]);
    if let Some(observe) = observe {
        command.env("FDBG_OBSERVE", observe);
    }
    let mut fdbg = Interactive::spawn(command);
    fdbg.wait_attached();
    fdbg.send("continue");
    server.logins(LOGINS);
    fdbg.signal(libc::SIGINT);
    let stop = fdbg.wait_prefix("Interrupted");
    assert!(stop.contains("perf-observe"), "{fdbg}");
    fdbg.send("leaks --json");
    let leaks = fdbg.wait_doc(Shape::Leaks);
    fdbg.send("stats --json");
    let stats = fdbg.wait_doc(Shape::Stats);
    fdbg.send("quit");
    assert!(fdbg.wait_exit().success(), "{fdbg}");

    let leaked: BTreeSet<i64> = (0..LOGINS)
        .map(|_| server.output.wait_for("leak").fd() as i64)
        .collect();
    assert_eq!(leaked.len(), LOGINS);
    assert_eq!(num(&leaks, "total"), LOGINS as i64, "{fdbg}");
    assert_leaks_at_statsd_init(&leaks, &leaked, &fdbg);
    // accept, socket, close per login: 90 fd events and no stop for any.
    assert_eq!(num(&stats, "total_events"), 3 * LOGINS as i64, "{stats}");
    assert!(num(&stats, "stops") <= 2, "{fdbg}");
    // Every fd syscall the kernel counted was recorded (the accept the
    // attach interrupted, restarted, is one more than the events).
    let figures = &stats["observed"];
    assert_eq!(num(figures, "recorded"), num(figures, "counted"), "{stats}");
    assert_untraced_and_running(pid, &fdbg);
    stats
}

/// A thread per session, observed: its threads come and go without a
/// ptrace stop, the leaks are exact, and a breakpoint set afterwards
/// stops in a thread created after attach.
#[test]
#[serial]
fn a_thread_per_session_costs_no_stop_and_its_threads_stop_when_asked() {
    let _watchdog = Watchdog::new("observe_threads_per_session", TEST_LIMIT);
    const LOGINS: usize = 25;
    let mut server = Server::start_threaded();
    let pid = server.pid();
    let tasks = || -> BTreeSet<i64> {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|dir| {
                dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    let at_attach = tasks();
    let mut fdbg = Interactive::attach(pid, "perf");
    fdbg.send("continue");
    server.logins(LOGINS);
    fdbg.signal(libc::SIGINT);
    fdbg.wait_prefix("Interrupted");
    fdbg.send("stats --json");
    let stats = fdbg.wait_doc(Shape::Stats);
    fdbg.send("leaks --json");
    let leaks = fdbg.wait_doc(Shape::Leaks);
    let leaked: BTreeSet<i64> = (0..LOGINS)
        .map(|_| server.output.wait_for("leak").fd() as i64)
        .collect();
    assert_eq!(num(&leaks, "total"), LOGINS as i64, "{fdbg}");
    assert_leaks_at_statsd_init(&leaks, &leaked, &fdbg);
    // accept, socket, close per login; the attach's stop and Ctrl-C's,
    // none for the 25 threads.
    assert_eq!(num(&stats, "total_events"), 3 * LOGINS as i64, "{stats}");
    assert!(num(&stats, "stops") <= 4, "{stats}");

    fdbg.send("break func on_login");
    fdbg.wait_prefix("Breakpoint 1");
    fdbg.send("continue --json");
    let client = server.logins_in_background(1);
    let stop = fdbg.wait_doc(Shape::Stop);
    assert_eq!(stop["stop"], "breakpoint", "{fdbg}");
    let tid = num(&stop["function"], "tid");
    assert!(
        !at_attach.contains(&tid),
        "thread {tid} was there at attach
{fdbg}"
    );
    assert_eq!(
        stop["function"]["frames"][0]["function"], "on_login",
        "{fdbg}"
    );
    fdbg.send("quit");
    assert!(fdbg.wait_exit().success(), "{fdbg}");
    crate::login::finished_logins(client, 1);
    assert_untraced_and_running(pid, &fdbg);
}

/// `break count N` observes while the count is far from N, then stops at
/// every event: the process is stopped with exactly N+1 fds open.
#[test]
#[serial]
fn break_count_while_observing_stops_the_process_at_n_plus_1() {
    let _watchdog = Watchdog::new("observe_break_count", TEST_LIMIT);
    const LOGINS: usize = 800;
    let server = Server::start();
    let pid = server.pid();
    let base = open_fds(pid).len();
    // Beyond the margin fdbg keeps at first (256 fds): it observes first.
    let n = base + 600;
    let mut fdbg = Interactive::attach(pid, "perf");
    fdbg.send(&format!("break count {n}"));
    fdbg.send("continue --json");
    let client = server.logins_in_background(LOGINS);
    let stop = fdbg.wait_doc(Shape::Stop);
    assert_eq!(stop["stop"], "breakpoint", "{fdbg}");
    assert_eq!(num(&stop["event"], "open_fds"), n as i64 + 1, "{fdbg}");
    // Stopped there: the kernel's table has exactly N+1 fds.
    assert_eq!(open_fds(pid).len(), n + 1, "{fdbg}");
    assert_eq!(stop["events_from"], "perf-sigtrap", "{fdbg}");
    fdbg.send("stats --json");
    let stats = fdbg.wait_doc(Shape::Stats);
    assert!(
        num(&stats["observed"], "recorded") > 0,
        "some events were observed before the stops\n{fdbg}"
    );
    fdbg.send("delete");
    fdbg.send("continue");
    crate::login::finished_logins(client, LOGINS);
    fdbg.signal(libc::SIGINT);
    fdbg.wait_prefix("Interrupted");
    fdbg.send("quit");
    assert!(fdbg.wait_exit().success(), "{fdbg}");
    assert_untraced_and_running(pid, &fdbg);
}

/// `break fd N` while observing: the kernel stops only the syscalls that
/// can create or close N, so the logins before run without a stop, and
/// the process stops at the one that creates N, with the next number not
/// yet open.
#[test]
#[serial]
fn break_fd_while_observing_stops_at_the_event_on_n_and_nowhere_before() {
    let _watchdog = Watchdog::new("observe_break_fd", TEST_LIMIT);
    const LOGIN: usize = 40;
    let server = Server::start();
    let pid = server.pid();
    let mut fdbg = Interactive::attach(pid, "perf");
    // Each login's accept takes the lowest free number and closes it; its
    // statsd socket leaks at the next free one.
    let open = open_fds(pid);
    let free: Vec<i32> = (0..)
        .filter(|fd| !open.contains_key(fd))
        .take(LOGIN + 2)
        .collect();
    let target = free[LOGIN];
    fdbg.send(&format!("break fd {target}"));
    fdbg.wait_prefix(&format!("Breakpoint 1: break fd {target}"));
    fdbg.send("continue --json");
    let client = server.logins_in_background(LOGIN + 5);
    let stop = fdbg.wait_doc(Shape::Stop);
    let open_at_stop = open_fds(pid);
    let state_at_stop = crate::harness::state(pid);
    fdbg.send("stats --json");
    let stats = fdbg.wait_doc(Shape::Stats);
    fdbg.send("delete");
    fdbg.send("continue");
    crate::login::finished_logins(client, LOGIN + 5);
    fdbg.signal(libc::SIGINT);
    fdbg.wait_prefix("Interrupted");
    fdbg.send("quit");
    assert!(fdbg.wait_exit().success(), "{fdbg}");

    assert_eq!(stop["stop"], "breakpoint", "{fdbg}");
    assert_eq!(stop["event"]["syscall"], "socket", "{fdbg}");
    assert_eq!(stop["event"]["fds"], serde_json::json!([target]), "{fdbg}");
    assert_eq!(stop["events_from"], "perf-observe", "{fdbg}");
    // Stopped right there: N open, the next free number not yet.
    assert_eq!(state_at_stop, Some('t'), "{fdbg}");
    assert!(open_at_stop.contains_key(&target), "{fdbg}");
    assert!(!open_at_stop.contains_key(&free[LOGIN + 1]), "{fdbg}");
    // accept, socket, close for each login before; accept and socket of
    // this one; and no stop for any of them but this.
    assert_eq!(
        num(&stats, "total_events"),
        3 * (LOGIN as i64 - 1) + 2,
        "{stats}"
    );
    assert!(num(&stats, "stops") <= 3, "{fdbg}");
    assert_eq!(num(&stats, "missed"), 0, "{stats}");
    assert_untraced_and_running(pid, &fdbg);
}
