//! attach with perf events as the event source (`--events perf`): one stop
//! per fd event and none for other syscalls; the exact model under thread
//! churn; SIGTRAP ignored only during the session; a process with its own
//! SIGTRAP handler left alone (PTRACE_SYSCALL there); a process that
//! survives every SIGKILL of fdbg; and the one-line fallback where perf is
//! refused.

use std::collections::BTreeSet;
use std::process::Command;

use serial_test::serial;

use crate::harness::{
    Interactive, Shape, TEST_LIMIT, Watchdog, assert_untraced_and_running, fd_numbers, fdbg_batch,
    num, num_set, poll_until, sigtrap_bit, state, status_field, tracer_pid,
};
use crate::testprogs::{ChildGuard, Expect, testprog};

/// `threads` of `pid` not in a ptrace- or job-control stop, untraced.
fn every_thread_runs_untraced(pid: i32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.filter_map(|t| t.ok()).all(|task| {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        let field = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string()))
                .unwrap_or_default()
        };
        field("TracerPid:") == "0" && !field("State:").starts_with(['t', 'T'])
    })
}

/// A `--wait` test program attached with perf events, run to its end.
struct RunToItsEnd {
    fdbg: Interactive,
    output: crate::testprogs::OutputStream,
    leaks: serde_json::Value,
    stats: serde_json::Value,
}

/// Start `program ARGS` (with `--wait`), attach with `--events EVENTS`, let
/// it go, continue to its exit, and take `leaks` and `stats`.
fn attach_and_run_to_its_end(program: &str, args: &[&str], events: &str) -> RunToItsEnd {
    let mut started = ChildGuard::spawn(Command::new(testprog(program)).arg("--wait").args(args));
    let pid = started.pid();
    let mut output = started.output();
    output.wait_for("ready");
    let mut fdbg = Interactive::attach(pid, events);
    started.send_line();
    fdbg.send("continue");
    fdbg.wait_line("the exit", |l| l.contains("exited"));
    fdbg.send("leaks --json");
    let leaks = fdbg.wait_doc(Shape::Leaks);
    fdbg.send("stats --json");
    let stats = fdbg.wait_doc(Shape::Stats);
    fdbg.send("quit");
    assert!(fdbg.wait_exit().success(), "{fdbg}");
    RunToItsEnd {
        fdbg,
        output,
        leaks,
        stats,
    }
}

/// Start `program` (no arguments), wait for its start line, and attach
/// fdbg to it with `--events EVENTS`.
fn attach_to_new(
    program: &str,
    events: &str,
) -> (ChildGuard, crate::testprogs::OutputStream, Interactive) {
    let mut started = ChildGuard::spawn(&mut Command::new(testprog(program)));
    let mut output = started.output();
    output.wait_for("start");
    let mut fdbg = Interactive::start(["attach", &started.pid().to_string(), "--events", events]);
    fdbg.wait_attached();
    (started, output, fdbg)
}

/// Interrupt a `continue`, take `leaks` and `stats`, and quit.
fn interrupt_report_and_quit(fdbg: &mut Interactive) -> (serde_json::Value, serde_json::Value) {
    fdbg.signal(libc::SIGINT);
    fdbg.wait_line("the interrupt", |l| l.contains("nterrupt"));
    fdbg.send("leaks --json");
    let leaks = fdbg.wait_doc(Shape::Leaks);
    fdbg.send("stats --json");
    let stats = fdbg.wait_doc(Shape::Stats);
    fdbg.send("quit");
    assert!(fdbg.wait_exit().success(), "{fdbg}");
    (leaks, stats)
}

#[test]
#[serial]
fn perf_attach_stops_once_per_fd_event_and_never_for_other_syscalls() {
    let _watchdog = Watchdog::new("perf_nonfd_loop", TEST_LIMIT);
    let RunToItsEnd {
        fdbg,
        mut output,
        stats,
        ..
    } = attach_and_run_to_its_end("nonfd_loop", &["100000"], "sigtrap");
    let done = output.wait_for("done");
    assert_eq!(done.num("syscalls"), 100_000);

    assert_eq!(stats["mechanism"], "perf-sigtrap", "{fdbg}");
    // The program's open and close, and nothing of the 100,000 getppid.
    assert_eq!(num(&stats, "total_events"), 2, "{fdbg}");
    assert_eq!(num(&stats, "syscalls_seen"), 2, "{fdbg}");
    assert_eq!(num(&stats, "kernel_fd_syscalls"), 2, "{fdbg}");
    assert_eq!(num(&stats, "missed"), 0, "{fdbg}");
    // One stop per fd event; the others: the interrupt that stopped it at
    // attach and the exit's last look.
    assert!(
        num(&stats, "stops") <= 2 + 2,
        "more than one stop per fd event\n{fdbg}"
    );
}

/// Observing (nothing armed), the process does not stop for an fd event:
/// the kernel's samples give the same events.
#[test]
#[serial]
fn observing_attach_stops_for_no_fd_event() {
    let _watchdog = Watchdog::new("observe_nonfd_loop", TEST_LIMIT);
    let RunToItsEnd {
        fdbg,
        mut output,
        stats,
        leaks,
    } = attach_and_run_to_its_end("nonfd_loop", &["100000"], "perf");
    let done = output.wait_for("done");
    assert_eq!(done.num("syscalls"), 100_000);

    assert_eq!(stats["mechanism"], "perf-observe", "{fdbg}");
    assert_eq!(num(&stats, "total_events"), 2, "{fdbg}");
    assert_eq!(num(&stats, "kernel_fd_syscalls"), 2, "{fdbg}");
    assert_eq!(num(&stats, "missed"), 0, "{fdbg}");
    assert_eq!(num(&leaks, "total"), 0, "{fdbg}");
    // The interrupt that stopped it at attach and the exit's last look:
    // none for its fd events.
    assert!(num(&stats, "stops") <= 2, "a stop for an fd event\n{fdbg}");
}

#[test]
#[serial]
fn perf_attach_keeps_the_exact_model_while_threads_reuse_numbers() {
    for (events, mechanism) in [("sigtrap", "perf-sigtrap"), ("perf", "perf-observe")] {
        threads_model_is_exact(events, mechanism);
    }
}

fn threads_model_is_exact(events: &str, mechanism: &str) {
    let _watchdog = Watchdog::new("perf_threads", TEST_LIMIT);
    let RunToItsEnd {
        fdbg,
        mut output,
        leaks,
        stats,
    } = attach_and_run_to_its_end("threads", &["4", "1000", "2"], events);
    let leaked: Vec<Expect> = (0..8).map(|_| output.wait_for("leak")).collect();
    output.wait_for("done");

    assert_eq!(stats["mechanism"], mechanism, "{fdbg}");
    // Coverage: every fd syscall the kernel counted is an event.
    assert_eq!(
        num(&stats, "kernel_fd_syscalls"),
        num(&stats, "total_events"),
        "{fdbg}"
    );
    assert_eq!(num(&stats, "adopted"), 0, "{fdbg}");
    assert_eq!(num(&stats, "dropped"), 0, "{fdbg}");
    assert_eq!(num(&stats, "missed"), 0, "{fdbg}");
    assert_eq!(num(&stats, "bad_closes"), 0, "{fdbg}");
    // 4 threads × 1000 iterations × (open, socket, 2 closes), and the leaks.
    assert_eq!(num(&stats, "total_events"), 4 * 1000 * 4 + 8, "{fdbg}");
    let fds: BTreeSet<i32> = leaks["sites"]
        .as_array()
        .expect("sites")
        .iter()
        .flat_map(|site| num_set(&site["fds"]))
        .collect();
    assert_eq!(fds, leaked.iter().map(Expect::fd).collect(), "{fdbg}");
    assert_eq!(num(&leaks, "total"), 8, "{fdbg}");
}

#[test]
#[serial]
fn perf_attach_ignores_sigtrap_only_while_attached() {
    let _watchdog = Watchdog::new("perf_sigtrap_disposition", TEST_LIMIT);
    let mut churn = ChildGuard::spawn(Command::new(testprog("thread_churn")).arg("4"));
    let pid = churn.pid();
    // Kept to the end: its reader keeps the program's stdout open.
    let mut output = churn.output();
    // After its first threads: glibc sets up its own signals (SIGSETXID)
    // at the first pthread_create, which changes SigIgn by itself.
    output.wait_for("round");
    let before = status_field(pid, "SigIgn").expect("SigIgn");
    assert!(!sigtrap_bit(pid, "SigIgn"), "SIGTRAP ignored before attach");

    // Observing changes nothing in the process.
    let mut fdbg = Interactive::attach(pid, "perf");
    assert!(!sigtrap_bit(pid, "SigIgn"), "SIGTRAP ignored\n{fdbg}");
    fdbg.send("quit");
    assert!(fdbg.wait_exit().success(), "{fdbg}");

    let mut fdbg = Interactive::attach(pid, "sigtrap");
    assert!(
        sigtrap_bit(pid, "SigIgn"),
        "SIGTRAP ignored while attached\n{fdbg}"
    );
    fdbg.send("continue 200ms");
    fdbg.wait_line("the stop", |l| l.contains("Time is up"));
    fdbg.send("detach");
    fdbg.wait_line("the detach", |l| l.contains("detached"));
    assert_eq!(
        status_field(pid, "SigIgn").as_deref(),
        Some(before.as_str()),
        "SigIgn after detach\n{fdbg}"
    );
    assert_untraced_and_running(pid, &fdbg);
    fdbg.send("quit");
    assert!(fdbg.wait_exit().success(), "{fdbg}");
}

#[test]
#[serial]
fn a_process_with_its_own_sigtrap_handler_keeps_it_and_is_traced_with_ptrace() {
    let _watchdog = Watchdog::new("own_sigtrap", TEST_LIMIT);
    // The default choice falls back when a breakpoint needs stops, saying
    // why, in one line.
    let (mut program, mut output, mut fdbg) = attach_to_new("own_sigtrap", "auto");
    let pid = program.pid();
    assert!(sigtrap_bit(pid, "SigCgt"));
    program.write_bytes(b"ab");
    fdbg.send("break fd 999");
    fdbg.send("continue");
    let traps: Vec<Expect> = (0..2).map(|_| output.wait_for("trap")).collect();
    let (leaks, stats) = interrupt_report_and_quit(&mut fdbg);

    assert_eq!(
        traps[1].num("n"),
        2,
        "the handler ran for each raise\n{fdbg}"
    );
    assert_eq!(stats["mechanism"], "ptrace-syscall", "{fdbg}");
    assert_eq!(num(&leaks, "total"), 2, "{fdbg}");
    let said: Vec<String> = fdbg
        .stderr()
        .lines()
        .filter(|l| l.contains("SIGTRAP"))
        .map(str::to_string)
        .collect();
    assert_eq!(said.len(), 1, "{fdbg}");
    assert!(
        said[0].starts_with("fdbg: ") && said[0].contains("has its own SIGTRAP handler"),
        "{fdbg}"
    );
    assert!(sigtrap_bit(pid, "SigCgt"), "the handler stays\n{fdbg}");
    assert_untraced_and_running(pid, &fdbg);

    // Forced, perf is refused with the reason.
    let forced = fdbg_batch(["attach", &pid.to_string(), "--events", "sigtrap", "--batch"]);
    assert_eq!(forced.status.code(), Some(1), "{forced}");
    assert!(
        forced.stderr.contains("has its own SIGTRAP handler"),
        "{forced}"
    );
    assert_untraced_and_running(pid, &forced);
}

/// How many times fdbg is SIGKILLed while fd events stream.
const KILLS: usize = 200;

#[test]
#[serial]
fn a_process_survives_every_sigkill_of_fdbg_while_events_stream() {
    let _watchdog = Watchdog::new("perf_sigkill", TEST_LIMIT);
    let mut churn = ChildGuard::spawn(Command::new(testprog("thread_churn")).arg("4"));
    let pid = churn.pid();
    // Kept to the end: its reader keeps the program's stdout open.
    let mut output = churn.output();
    output.wait_for("start");
    // SIGTRAP stops, then observing (which changes nothing in the process:
    // fewer rounds).
    let rounds = (0..KILLS)
        .map(|_| "sigtrap")
        .chain((0..KILLS / 10).map(|_| "perf"));
    for (kill, events) in rounds.enumerate() {
        if let Ok(Some(status)) = churn.0.try_wait() {
            panic!("the process ended ({status}) before kill {kill}");
        }
        let mut fdbg = Interactive::attach(pid, events);
        fdbg.send("continue");
        // Resumed: the threads run (and their fd events stop them) again.
        poll_until(
            "the process to run under fdbg",
            || tracer_pid(pid).is_some_and(|t| t != 0) && state(pid).is_some_and(|s| s != 't'),
            || format!("kill {kill}\n{fdbg}"),
        );
        fdbg.signal(libc::SIGKILL);
        fdbg.wait_exit();
        poll_until(
            "every thread to run on, untraced",
            || every_thread_runs_untraced(pid),
            || format!("kill {kill}: state {:?}\n{fdbg}", state(pid)),
        );
    }
    // Alive, and its threads still make fd events.
    let out = fdbg_batch([
        "attach",
        &pid.to_string(),
        "--batch",
        "--json",
        "-e",
        "continue 200ms",
        "-e",
        "stats",
    ]);
    out.assert_success();
    assert!(num(out.first(Shape::Stats), "total_events") > 0, "{out}");
    assert_untraced_and_running(pid, &out);
}

#[test]
#[serial]
fn where_perf_is_refused_attach_falls_back_and_says_why_in_one_line() {
    let _watchdog = Watchdog::new("perf_refused", TEST_LIMIT);
    let paranoid = std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
        .unwrap_or_default()
        .trim()
        .to_string();
    if paranoid != "2" {
        eprintln!("skipped: kernel.perf_event_paranoid is {paranoid}, not 2");
        return;
    }
    // Both as `nobody`: a user without CAP_PERFMON, tracing its own process.
    let as_nobody = |program: &std::path::Path| {
        let mut command = Command::new("setpriv");
        command
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(program);
        command
    };
    let mut program = ChildGuard::spawn(as_nobody(&testprog("thread_churn")).arg("2"));
    let pid = program.pid();
    let mut output = program.output();
    output.wait_for("start");
    let mut fdbg = as_nobody(&crate::harness::fdbg_path());
    fdbg.args([
        "attach",
        &pid.to_string(),
        "--events",
        "auto",
        "--batch",
        "--json",
        "-e",
        "continue 100ms",
        "-e",
        "stats",
        "-e",
        "fds",
    ]);
    let out = crate::harness::run_to_end(&mut fdbg);
    out.assert_success();
    let said: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(said.len(), 1, "{out}");
    assert!(
        said[0].starts_with("fdbg: ")
            && said[0].contains("perf_event_paranoid is 2")
            && said[0].contains("CAP_PERFMON"),
        "{out}"
    );
    let stats = out.first(Shape::Stats);
    assert_eq!(stats["mechanism"], "ptrace-syscall", "{out}");
    assert!(num(stats, "total_events") > 0, "{out}");
    assert!(!fd_numbers(out.first(Shape::Fds)).is_empty(), "{out}");
    assert_untraced_and_running(pid, &out);
}

/// An exec removes the program's perf events (the kernel's
/// `remove_on_exec`): fdbg arms the new program, whose fd events are seen
/// as before. A child forked meanwhile, not followed, does not inherit the
/// session's ignored SIGTRAP.
#[test]
#[serial]
fn perf_attach_follows_an_exec_and_leaves_children_sigtrap_alone() {
    let _watchdog = Watchdog::new("perf_exec", TEST_LIMIT);
    let (mut program, mut output, mut fdbg) = attach_to_new("reexec", "sigtrap");
    let pid = program.pid();
    program.write_bytes(b"oeof");
    fdbg.send("continue");
    let first = output.wait_for("leak");
    output.wait_for("start");
    let second = output.wait_for("leak");
    let child = output.wait_for("child");
    let (leaks, stats) = interrupt_report_and_quit(&mut fdbg);

    assert_eq!(stats["mechanism"], "perf-sigtrap", "{fdbg}");
    let leaked: BTreeSet<i32> = leaks["sites"]
        .as_array()
        .expect("sites")
        .iter()
        .flat_map(|site| num_set(&site["fds"]))
        .collect();
    assert_eq!(leaked, BTreeSet::from([first.fd(), second.fd()]), "{fdbg}");
    assert_eq!(num(&stats, "missed"), 0, "{fdbg}");
    assert_eq!(child.num("sigtrap_ignored"), 0, "{fdbg}");
    assert!(!sigtrap_bit(pid, "SigIgn"), "restored at detach\n{fdbg}");
    assert_untraced_and_running(pid, &fdbg);
}

/// A thread that blocks SIGTRAP would never report fdbg's SIGTRAPs (and
/// would take them through sigwait): attach uses PTRACE_SYSCALL for it and
/// says why.
#[test]
#[serial]
fn a_process_that_blocks_sigtrap_is_traced_with_ptrace() {
    let _watchdog = Watchdog::new("blocks_sigtrap", TEST_LIMIT);
    let (mut program, mut output, mut fdbg) = attach_to_new("blocks_signals", "auto");
    let pid = program.pid();
    program.write_bytes(b"o");
    fdbg.send("break fd 999");
    fdbg.send("continue");
    let leak = output.wait_for("leak");
    let (leaks, stats) = interrupt_report_and_quit(&mut fdbg);
    assert_eq!(stats["mechanism"], "ptrace-syscall", "{fdbg}");
    assert_eq!(
        num_set(&leaks["sites"][0]["fds"]),
        BTreeSet::from([leak.fd()]),
        "{fdbg}"
    );
    assert!(
        fdbg.stderr().contains("blocks SIGTRAP"),
        "the reason is said\n{fdbg}"
    );
    assert_untraced_and_running(pid, &fdbg);
}

/// glibc blocks every signal for a moment while it creates a thread and
/// while a thread exits: a process caught there by the attach is traced
/// with PTRACE_SYSCALL only until the mask comes back, then with perf. A
/// single worker at a time makes that moment most of the process's life.
#[test]
#[serial]
fn a_thread_that_blocks_sigtrap_for_a_moment_gets_perf_when_it_unblocks() {
    let _watchdog = Watchdog::new("blocks_for_a_moment", TEST_LIMIT);
    let mut churn = ChildGuard::spawn(Command::new(testprog("thread_churn")).arg("1"));
    let pid = churn.pid();
    // Kept: the program writes a line every 100 rounds.
    let mut output = churn.output();
    output.wait_for("start");
    for attempt in 0..15 {
        let out = fdbg_batch([
            "attach",
            &pid.to_string(),
            "--events",
            "auto",
            "--batch",
            "--json",
            "-e",
            // A catchpoint needs a stop at every fd event (and this one
            // never stops).
            "catch memfd_create",
            "-e",
            "continue 100ms",
            "-e",
            "stats",
        ]);
        out.assert_success();
        let stats = out.first(Shape::Stats);
        assert_eq!(
            stats["mechanism"], "perf-sigtrap",
            "attach {attempt}\n{out}"
        );
        let count = |syscall: &str| stats["events"][syscall].as_i64().unwrap_or(0);
        assert!(count("socket") > 0, "attach {attempt}\n{out}");
        // Each worker: socket, pipe2, three closes; a worker caught between
        // two of them by the attach or the detach accounts for the rest.
        assert!(
            (count("close") - 3 * count("socket")).abs() <= 6,
            "attach {attempt}\n{out}"
        );
        assert_eq!(num(stats, "adopted"), 0, "attach {attempt}\n{out}");
        assert_eq!(num(stats, "dropped"), 0, "attach {attempt}\n{out}");
        assert_untraced_and_running(pid, &out);
    }
}

/// A job-control stop during the session can catch a thread between its fd
/// syscall and the SIGTRAP that reports it; detach must discard that trap,
/// or SIGCONT would deliver it with its default (fatal) action.
#[test]
#[serial]
fn a_process_stopped_by_sigstop_while_attached_survives_detach_and_sigcont() {
    let _watchdog = Watchdog::new("perf_sigstop", TEST_LIMIT);
    let mut churn = ChildGuard::spawn(Command::new(testprog("thread_churn")).arg("4"));
    let pid = churn.pid();
    let mut output = churn.output();
    output.wait_for("start");
    for cycle in 0..10 {
        let mut fdbg = Interactive::attach(pid, "sigtrap");
        fdbg.send("continue");
        poll_until(
            "the process to run under fdbg",
            || state(pid).is_some_and(|s| s != 't'),
            || fdbg.to_string(),
        );
        // SAFETY: kill(2) reads no memory; the process is this test's.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        fdbg.signal(libc::SIGINT);
        fdbg.wait_line("the interrupt", |l| l.contains("nterrupt"));
        fdbg.send("detach");
        fdbg.wait_line("the detach", |l| l.contains("detached"));
        fdbg.send("quit");
        assert!(fdbg.wait_exit().success(), "{fdbg}");
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGCONT) };
        poll_until(
            "every thread to run on, untraced",
            || every_thread_runs_untraced(pid),
            || format!("cycle {cycle}: state {:?}\n{fdbg}", state(pid)),
        );
        if let Ok(Some(status)) = churn.0.try_wait() {
            panic!("cycle {cycle}: the process ended ({status})\n{fdbg}");
        }
    }
}
