//! The debugger's commands on real processes, with their text and JSON
//! output: `break fd` and `history` across reuse of an fd
//! number, `break site` by function and by FILE:LINE, `catch`, `detach`
//! under attach and under run, `threads`, the empty line repeating `step`,
//! and Ctrl-C at the prompt.
//!
//! Every answer is checked exactly against what the programs say they did
//! (their EXPECT lines) and against /proc. The tracee is stopped or idle
//! whenever a test looks; waits are for lines, never for time.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::process::Command;
use std::thread::JoinHandle;

use serde_json::Value;
use serial_test::serial;

use crate::harness::{
    Interactive, Shape, TEST_LIMIT, Watchdog, assert_untraced_and_running, fd_numbers, num,
    num_set, tracer_process,
};
use crate::login::{Server, finished_logins};
use crate::testprogs::{ChildGuard, Expect, Finished, all, expect_lines, open_fds, testprog};

/// A login server with fdbg attached to it (stopped, at the prompt), and
/// the server's pid.
fn attached_server() -> (Server, i32, Interactive) {
    let server = Server::start();
    let pid = server.pid();
    let fdbg = server.attach();
    (server, pid, fdbg)
}

/// `fdbg run -- ARGS` up to its banner, and the pid of the program it
/// started.
fn run_started(args: &[&OsStr]) -> (Interactive, i32) {
    run_started_with(&[], args)
}

/// `run_started` with options before the `--`.
fn run_started_with(options: &[&str], args: &[&OsStr]) -> (Interactive, i32) {
    let mut argv: Vec<&OsStr> = vec!["run".as_ref()];
    argv.extend(options.iter().map(|o| OsStr::new(*o)));
    argv.push("--".as_ref());
    argv.extend_from_slice(args);
    let mut fdbg = Interactive::start(argv);
    let banner = fdbg.wait_prefix("Started process ");
    let pid: i32 = banner["Started process ".len()..]
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("a pid in the banner {banner:?}"));
    (fdbg, pid)
}

/// Sends a command that answers with a line starting with `answer`
/// (`Breakpoint 1: ...`, `deleted 1 breakpoint`, `detached from ...`).
fn command(fdbg: &mut Interactive, line: &str, answer: &str) {
    fdbg.send(line);
    fdbg.wait_prefix(answer);
}

/// Sends a `--json` command and returns its document, of `shape`.
fn ask(fdbg: &mut Interactive, line: &str, shape: Shape) -> Value {
    fdbg.send(line);
    fdbg.wait_doc(shape)
}

/// `continue --json` while a client logs in once: the stop that ends the
/// continue, and the client (it finishes once fdbg lets the server run).
fn continue_through_login(
    fdbg: &mut Interactive,
    server: &Server,
) -> (Value, JoinHandle<Finished>) {
    fdbg.send("continue --json");
    let login = server.logins_in_background(1);
    (fdbg.wait_doc(Shape::Stop), login)
}

/// Ctrl-C while the process runs: fdbg stops it and says so.
fn interrupt(fdbg: &mut Interactive) {
    fdbg.signal(libc::SIGINT);
    assert_eq!(fdbg.wait_doc(Shape::Stop)["stop"], "interrupt", "{fdbg}");
}

/// `quit`: fdbg exits with success.
fn quit(fdbg: &mut Interactive) {
    fdbg.send("quit");
    assert!(fdbg.wait_exit().success(), "{fdbg}");
}

/// `quit` under attach: fdbg exits with success and leaves `pid` untraced
/// and running.
fn quit_leaving_running(fdbg: &mut Interactive, pid: i32) {
    quit(fdbg);
    assert_untraced_and_running(pid, fdbg);
}

/// The lowest fd number not open in `pid`: the one its next accept gets.
fn lowest_free_fd(pid: i32) -> i32 {
    let open = open_fds(pid);
    (0..).find(|fd| !open.contains_key(fd)).unwrap()
}

/// The next JSON document on fdbg's stdout for which `wanted` holds.
fn wait_json(fdbg: &mut Interactive, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
    let line = fdbg.wait_line(what, |l| {
        serde_json::from_str::<Value>(l).is_ok_and(|d| wanted(&d))
    });
    serde_json::from_str(&line).unwrap()
}

/// The document `bt --json` prints: `{"event": event}`.
fn wait_backtrace(fdbg: &mut Interactive) -> Value {
    wait_json(fdbg, "the bt document", |d| {
        d.get("event").is_some() && d.get("stop").is_none()
    })
}

/// `(file basename, line)` of an EXPECT line's `site=statsd.c:17`.
fn site(expect: &Expect) -> (String, i64) {
    let (file, line) = expect
        .field("site")
        .split_once(':')
        .unwrap_or_else(|| panic!("site is FILE:LINE in `{}`", expect.line));
    (
        file.to_string(),
        line.parse().expect("site line is a number"),
    )
}

/// Asserts that the innermost user frame of `event` is where `expect`
/// says the program made the call: its function, file and line.
fn assert_frame_is_site(event: &Value, expect: &Expect, context: &dyn std::fmt::Display) {
    let frame = &event["frames"][0];
    let (file, line) = site(expect);
    assert_eq!(
        frame["function"],
        expect.field("fn"),
        "frames[0] is the caller of `{}`\n{event}\n{context}",
        expect.line
    );
    assert!(
        frame["file"]
            .as_str()
            .is_some_and(|f| f.ends_with(&format!("/{file}"))),
        "frames[0].file is {file} for `{}`\n{event}\n{context}",
        expect.line
    );
    assert_eq!(
        frame["line"], line,
        "frames[0].line for `{}`\n{event}\n{context}",
        expect.line
    );
}

/// `break fd K` where K is the number the next accept gets: it stops at
/// that accept, then at the close of K; `history K` then lists every event
/// on K since attach — three logins reuse the number, so three accepts and
/// three closes — each with the stack of its call site.
#[test]
#[serial]
fn break_fd_stops_at_creation_then_close_and_history_follows_the_number_across_reuse() {
    let _watchdog = Watchdog::new("break_fd_and_history", TEST_LIMIT);
    let (mut server, pid, mut fdbg) = attached_server();
    let k = lowest_free_fd(pid);

    command(
        &mut fdbg,
        &format!("break fd {k}"),
        &format!("Breakpoint 1: break fd {k}"),
    );
    let (created, first_login) = continue_through_login(&mut fdbg, &server);
    let closed = ask(&mut fdbg, "continue --json", Shape::Stop);

    command(&mut fdbg, "delete 1", "deleted 1 breakpoint");
    fdbg.send("continue --json");
    finished_logins(first_login, 1);
    server.logins(2);
    // The server has printed everything about the three logins before it
    // is interrupted (it prints each close after making it).
    for _ in 0..3 {
        server.output.wait_for("close");
    }
    interrupt(&mut fdbg);
    let history = ask(&mut fdbg, &format!("history {k} --json"), Shape::History);
    quit_leaving_running(&mut fdbg, pid);

    assert_eq!(created["stop"], "breakpoint", "{fdbg}");
    assert_eq!(created["breakpoint"], 1, "{fdbg}");
    assert_eq!(created["event"]["syscall"], "accept", "{fdbg}");
    assert_eq!(
        num_set(&created["event"]["fds"]),
        BTreeSet::from([k]),
        "{fdbg}"
    );
    assert_eq!(closed["stop"], "breakpoint", "{fdbg}");
    assert_eq!(closed["breakpoint"], 1, "{fdbg}");
    assert_eq!(closed["event"]["syscall"], "close", "{fdbg}");
    assert_eq!(
        num_set(&closed["event"]["closed"]),
        BTreeSet::from([k]),
        "{fdbg}"
    );

    // What the server says happened to number K since attach, in order.
    let lines = server.lines_since_attach();
    let on_k: Vec<&Expect> = lines
        .iter()
        .filter(|e| matches!(e.what.as_str(), "open" | "leak" | "close") && e.fd() == k)
        .collect();
    assert_eq!(
        on_k.iter().filter(|e| e.what == "open").count(),
        3,
        "each login's accept gets {k} again: {on_k:#?}"
    );
    let events = history["events"].as_array().expect("history events");
    assert_eq!(num(&history, "fd"), k as i64, "{history}");
    assert_eq!(
        events.len(),
        on_k.len(),
        "one history event per EXPECT line on fd {k}: {on_k:#?}\n{fdbg}"
    );
    for (event, expect) in events.iter().zip(&on_k) {
        match expect.what.as_str() {
            "close" => {
                assert_eq!(event["syscall"], "close", "`{}`\n{event}", expect.line);
                assert_eq!(num_set(&event["closed"]), BTreeSet::from([k]), "{event}");
            }
            _ => {
                assert_eq!(event["syscall"], expect.field("syscall"), "{event}");
                assert_eq!(num_set(&event["fds"]), BTreeSet::from([k]), "{event}");
            }
        }
        assert_frame_is_site(event, expect, &fdbg);
    }
    let seqs: Vec<i64> = events.iter().map(|e| num(e, "seq")).collect();
    assert!(seqs.is_sorted(), "history is in order: {seqs:?}");
    // The two stops were the first two events on K.
    assert_eq!(seqs[0], num(&created["event"], "seq"), "{fdbg}");
    assert_eq!(seqs[1], num(&closed["event"], "seq"), "{fdbg}");
}

/// `break site statsd_init` stops at the leak of the next login, at the
/// socket() call statsd.c names; `bt` repeats the stack; `break site
/// statsd.c:LINE` (LINE from the server's own EXPECT line) stops at the
/// same call on the login after.
#[test]
#[serial]
fn break_site_by_function_and_by_file_line_stops_at_the_leak() {
    let _watchdog = Watchdog::new("break_site", TEST_LIMIT);
    let (mut server, pid, mut fdbg) = attached_server();

    command(
        &mut fdbg,
        "break site statsd_init",
        "Breakpoint 1: break site statsd_init",
    );
    let (by_function, login) = continue_through_login(&mut fdbg, &server);
    fdbg.send("bt --json");
    let bt = wait_backtrace(&mut fdbg);
    command(&mut fdbg, "delete 1", "deleted 1 breakpoint");
    fdbg.send("continue --json");
    finished_logins(login, 1);
    let first_leak = server.output.wait_for("leak");
    server.output.wait_for("close");
    interrupt(&mut fdbg);

    let (file, line) = site(&first_leak);
    assert_eq!(file, "statsd.c", "{first_leak:?}");
    command(
        &mut fdbg,
        &format!("break site {file}:{line}"),
        &format!("Breakpoint 2: break site {file}:{line}"),
    );
    let (by_line, login) = continue_through_login(&mut fdbg, &server);
    quit_leaving_running(&mut fdbg, pid);
    finished_logins(login, 1);
    let second_leak = server.output.wait_for("leak");

    for (stop, id, leak) in [(&by_function, 1, &first_leak), (&by_line, 2, &second_leak)] {
        assert_eq!(stop["stop"], "breakpoint", "{fdbg}");
        assert_eq!(stop["breakpoint"], id, "{fdbg}");
        let event = &stop["event"];
        assert_eq!(event["syscall"], "socket", "{fdbg}");
        assert_eq!(
            num_set(&event["fds"]),
            BTreeSet::from([leak.fd()]),
            "{fdbg}"
        );
        assert_eq!(leak.field("fn"), "statsd_init");
        assert_frame_is_site(event, leak, &fdbg);
    }
    assert_eq!(bt["event"]["seq"], by_function["event"]["seq"], "{fdbg}");
    assert_eq!(
        bt["event"]["frames"], by_function["event"]["frames"],
        "bt prints the stop's stack again\n{fdbg}"
    );
}

/// `catch accept` stops at the server's accept with stop "catch".
#[test]
#[serial]
fn catch_accept_stops_at_the_accept() {
    let _watchdog = Watchdog::new("catch_accept", TEST_LIMIT);
    let (mut server, pid, mut fdbg) = attached_server();

    command(&mut fdbg, "catch accept", "Catchpoint 1: catch accept");
    let (stop, login) = continue_through_login(&mut fdbg, &server);
    quit_leaving_running(&mut fdbg, pid);
    finished_logins(login, 1);
    let accepted = server.output.wait_for("open");

    assert_eq!(stop["stop"], "catch", "{fdbg}");
    assert_eq!(stop["breakpoint"], 1, "{fdbg}");
    let event = &stop["event"];
    assert_eq!(accepted.field("syscall"), "accept");
    assert_eq!(event["syscall"], "accept", "{fdbg}");
    assert_eq!(
        num_set(&event["fds"]),
        BTreeSet::from([accepted.fd()]),
        "{fdbg}"
    );
    assert_frame_is_site(event, &accepted, &fdbg);
}

/// `detach` under attach lets the server go (untraced, serving) while
/// `fds` and `leaks` keep answering from what was recorded up to the
/// detach: a login after it is not in them.
#[test]
#[serial]
fn detach_under_attach_lets_the_process_go_and_keeps_the_recorded_data() {
    let _watchdog = Watchdog::new("detach_attach", TEST_LIMIT);
    let (mut server, pid, mut fdbg) = attached_server();

    fdbg.send("continue --json");
    server.logins(1);
    let traced_leak = server.output.wait_for("leak");
    server.output.wait_for("close");
    interrupt(&mut fdbg);
    command(&mut fdbg, "detach", &format!("detached from process {pid}"));
    assert_untraced_and_running(pid, &fdbg);
    let at_detach: BTreeSet<i32> = open_fds(pid).into_keys().collect();

    // Untraced, it serves; its new leak is not fdbg's to know.
    server.logins(1);
    let untraced_leak = server.output.wait_for("leak");
    server.output.wait_for("close");
    assert!(open_fds(pid).contains_key(&untraced_leak.fd()));

    let fds = ask(&mut fdbg, "fds --json", Shape::Fds);
    let leaks = ask(&mut fdbg, "leaks --json", Shape::Leaks);
    quit_leaving_running(&mut fdbg, pid);
    server.logins(1);

    assert_eq!(fd_numbers(&fds), at_detach, "fds as at the detach\n{fdbg}");
    assert_eq!(num(&leaks, "total"), 1, "{fdbg}");
    let sites = leaks["sites"].as_array().expect("sites");
    assert_eq!(sites.len(), 1, "{fdbg}");
    assert_eq!(
        num_set(&sites[0]["fds"]),
        BTreeSet::from([traced_leak.fd()]),
        "{fdbg}"
    );
    assert_eq!(sites[0]["frames"][0]["function"], "statsd_init", "{fdbg}");
    assert!(
        !fdbg.stderr().contains("fdbg:"),
        "no command failed\n{fdbg}"
    );
}

/// A program started with perf events carries no seccomp filter: it can be
/// detached, and runs on untraced to its normal end.
#[test]
#[serial]
fn run_with_perf_events_can_detach_and_the_program_finishes_untraced() {
    let _watchdog = Watchdog::new("detach_run_perf", TEST_LIMIT);
    let churn = testprog("thread_churn");
    let (mut fdbg, pid) = run_started_with(
        &["--events", "perf"],
        &[churn.as_os_str(), "2".as_ref(), "300".as_ref()],
    );
    let stats = ask(&mut fdbg, "stats --json", Shape::Stats);
    assert_eq!(stats["mechanism"], "perf-sigtrap", "{fdbg}");
    command(&mut fdbg, "detach", "detached from");
    assert_eq!(
        crate::harness::tracer_pid(pid),
        Some(0),
        "untraced after detach\n{fdbg}"
    );
    fdbg.wait_line("the program's own end", |l| {
        l.starts_with("EXPECT done rounds=300")
    });
    quit(&mut fdbg);
}

/// `detach` under run is refused with one line saying why, and the
/// program stays traced: fdbg still records its leaks to the end.
#[test]
#[serial]
fn detach_under_run_is_refused_and_tracing_goes_on() {
    let _watchdog = Watchdog::new("detach_run", TEST_LIMIT);
    let leak3 = testprog("leak3");
    // With the seccomp filter (run's fallback where perf is refused).
    let (mut fdbg, pid) = run_started_with(&["--events", "ptrace"], &[leak3.as_os_str()]);

    fdbg.send("detach");
    // The refusal goes to stderr, read on its own pipe: wait for it.
    ask(&mut fdbg, "stats --json", Shape::Stats);
    crate::harness::poll_until(
        "the refusal on stderr",
        || fdbg.stderr().contains('\n'),
        || fdbg.to_string(),
    );
    let stderr = fdbg.stderr();
    let refusal: Vec<&str> = stderr.lines().collect();
    assert_eq!(refusal.len(), 1, "one line\n{fdbg}");
    assert!(
        refusal[0].starts_with("fdbg: ") && refusal[0].contains("detach is refused"),
        "{fdbg}"
    );
    assert_eq!(
        tracer_process(pid),
        Some(fdbg.pid()),
        "still traced\n{fdbg}"
    );

    let stop = ask(&mut fdbg, "continue --json", Shape::Stop);
    let leaks = ask(&mut fdbg, "leaks --json", Shape::Leaks);
    quit(&mut fdbg);

    assert_eq!(stop["stop"], "exited", "{fdbg}");
    assert_eq!(stop["exit_code"], 0, "{fdbg}");
    // leak3 shares fdbg's stdout: its EXPECT lines are among fdbg's.
    let printed = expect_lines(&fdbg.seen.join("\n"));
    let leaked: BTreeSet<i32> = all(&printed, "leak").iter().map(|e| e.fd()).collect();
    assert_eq!(leaked.len(), 3, "{fdbg}");
    let recorded: BTreeSet<i32> = leaks["sites"]
        .as_array()
        .expect("sites")
        .iter()
        .flat_map(|s| num_set(&s["fds"]))
        .collect();
    assert_eq!(
        recorded, leaked,
        "fdbg recorded leak3's leaks after the refused detach\n{fdbg}"
    );
    assert_eq!(num(&leaks, "total"), 3, "{fdbg}");
}

/// The tids of `pid` by /proc/PID/task.
fn proc_tids(pid: i32) -> BTreeSet<i32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("reading /proc/PID/task")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// The state letter of task `tid` of `pid` (R, S, t, ...).
fn task_state(pid: i32, tid: i32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status"))
        .expect("reading the task's status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("State:"))
        .and_then(|v| v.split_whitespace().next())
        .expect("a State: line")
        .to_string()
}

/// The (tid, pid) pairs of a `threads --json` document.
fn listed_threads(doc: &Value) -> Vec<(i32, i32)> {
    doc["threads"]
        .as_array()
        .unwrap_or_else(|| panic!("no threads array in {doc}"))
        .iter()
        .map(|t| (num(t, "tid") as i32, num(t, "pid") as i32))
        .collect()
}

/// `threads` after attaching to a program with parked threads lists
/// exactly the tasks /proc has, all stopped.
#[test]
#[serial]
fn threads_under_attach_lists_every_task_of_the_process() {
    let _watchdog = Watchdog::new("threads_attach", TEST_LIMIT);
    let mut program = ChildGuard::spawn(Command::new(testprog("idle_threads")).arg("3"));
    let mut output = program.output();
    let ready = output.wait_for("ready");
    let pid = program.pid();
    let mut fdbg = Interactive::start(["attach", &pid.to_string()]);
    let banner = fdbg.wait_attached();
    let threads = ask(&mut fdbg, "threads --json", Shape::Threads);
    let tasks = proc_tids(pid);
    let states: Vec<(i32, String)> = tasks.iter().map(|&t| (t, task_state(pid, t))).collect();
    quit_leaving_running(&mut fdbg, pid);
    program.send_line();
    assert!(program.wait_exit().success());

    let listed = listed_threads(&threads);
    assert_eq!(tasks.len() as i64, ready.num("threads"), "/proc/{pid}/task");
    assert_eq!(
        listed.iter().map(|&(tid, _)| tid).collect::<BTreeSet<_>>(),
        tasks,
        "{threads}\n{fdbg}"
    );
    assert_eq!(listed.len(), tasks.len(), "each once: {threads}");
    assert!(listed.iter().all(|&(_, p)| p == pid), "{threads}");
    assert!(
        banner.contains(&format!("{} threads", tasks.len())),
        "{banner}"
    );
    // Stopped by fdbg: /proc says `t` (tracing stop), and so does `threads`.
    for (tid, state) in &states {
        assert_eq!(state, "t", "/proc/{pid}/task/{tid} while attached");
        let entry = threads["threads"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["tid"] == *tid)
            .unwrap();
        assert_eq!(entry["state"], state.as_str(), "{threads}");
    }
}

/// Under run, threads the program creates are followed: stopped at the
/// event that comes after they all started, `threads` lists them all.
#[test]
#[serial]
fn threads_under_run_lists_the_threads_the_program_created() {
    let _watchdog = Watchdog::new("threads_run", TEST_LIMIT);
    let program = testprog("idle_threads");
    let (mut fdbg, pid) = run_started(&[program.as_os_str(), "3".as_ref()]);
    command(&mut fdbg, "catch eventfd", "Catchpoint 1: catch eventfd");
    let stop = ask(&mut fdbg, "continue --json", Shape::Stop);
    let threads = ask(&mut fdbg, "threads --json", Shape::Threads);
    let tasks = proc_tids(pid);
    // quit kills what fdbg started (before it would read our stdin).
    quit(&mut fdbg);

    assert_eq!(stop["stop"], "catch", "{fdbg}");
    assert_eq!(stop["event"]["syscall"], "eventfd2", "{fdbg}");
    assert_eq!(
        tasks.len(),
        4,
        "3 parked threads and main: /proc/{pid}/task"
    );
    let listed = listed_threads(&threads);
    assert_eq!(
        listed.iter().map(|&(tid, _)| tid).collect::<BTreeSet<_>>(),
        tasks,
        "{threads}\n{fdbg}"
    );
    assert_eq!(listed.len(), tasks.len(), "each once: {threads}");
}

/// An empty line repeats `step`: each one stops at the next event (seq + 1
/// in a single-threaded server), and the three events are the login's
/// accept, leak and close, as the server printed them.
#[test]
#[serial]
fn an_empty_line_repeats_step() {
    let _watchdog = Watchdog::new("empty_line_repeats_step", TEST_LIMIT);
    let (mut server, pid, mut fdbg) = attached_server();

    fdbg.send("step --json");
    let login = server.logins_in_background(1);
    let mut stops = vec![fdbg.wait_doc(Shape::Stop)];
    for _ in 0..2 {
        stops.push(ask(&mut fdbg, "", Shape::Stop));
    }
    quit_leaving_running(&mut fdbg, pid);
    finished_logins(login, 1);
    let accepted = server.output.wait_for("open");
    let leaked = server.output.wait_for("leak");
    let closed = server.output.wait_for("close");

    assert!(stops.iter().all(|s| s["stop"] == "step"), "{fdbg}");
    let seqs: Vec<i64> = stops.iter().map(|s| num(&s["event"], "seq")).collect();
    assert_eq!(seqs, vec![seqs[0], seqs[0] + 1, seqs[0] + 2], "{fdbg}");
    let events: Vec<&Value> = stops.iter().map(|s| &s["event"]).collect();
    assert_eq!(events[0]["syscall"], "accept", "{fdbg}");
    assert_eq!(num_set(&events[0]["fds"]), BTreeSet::from([accepted.fd()]));
    assert_eq!(events[1]["syscall"], "socket", "{fdbg}");
    assert_eq!(num_set(&events[1]["fds"]), BTreeSet::from([leaked.fd()]));
    assert_eq!(events[2]["syscall"], "close", "{fdbg}");
    assert_eq!(num_set(&events[2]["closed"]), BTreeSet::from([closed.fd()]));
}

/// At a terminal, Ctrl-C at the prompt throws away the line being typed:
/// "garbage", Ctrl-C, then "stats" runs stats, not "garbagestats".
#[test]
#[serial]
fn ctrl_c_at_the_prompt_clears_the_line() {
    let _watchdog = Watchdog::new("ctrl_c_clears_line", TEST_LIMIT);
    let server = Server::start();
    let pid = server.pid();
    let home = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("ctrl_c_home");
    std::fs::create_dir_all(&home).expect("a HOME for the history file");
    let mut command = Command::new(env!("CARGO_BIN_EXE_fdbg"));
    command
        .args(["attach", &pid.to_string()])
        .env("HOME", &home)
        .env("TERM", "xterm");
    let mut p = rexpect::session::spawn_command(command, Some(20_000)).expect("fdbg on a pty");
    p.exp_string("(fdbg) ").expect("the prompt appears");
    p.send("garbage").unwrap();
    p.flush().unwrap();
    p.exp_string("garbage").expect("the typed text is echoed");
    p.send_control('c').unwrap();
    // Keys typed before the next readline starts may be read together with
    // the Ctrl-C and dropped with it (type-ahead, not what is tested here):
    // wait for the new readline, which turns bracketed paste on again.
    p.exp_string("\u{1b}[?2004h")
        .expect("Ctrl-C gives a new prompt");
    p.send_line("stats").unwrap();
    // Only the answer has this text (the echo of "stats" does not).
    let before = p
        .exp_string("ptrace stops")
        .expect("stats answers after Ctrl-C");
    assert!(
        !before.contains("unknown command"),
        "the cleared line was not run: {before:?}"
    );
    p.exp_string("(fdbg) ").unwrap();
    p.send_line("quit").unwrap();
    p.exp_eof().expect("fdbg exits on quit");
    assert_untraced_and_running(pid, &"fdbg on a pty");
    server.logins(1);
}
