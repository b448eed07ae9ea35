//! Function breakpoints (kernel uprobes): `break func`, `finish` and its fd
//! delta on the login server; threads still created while one is armed;
//! and a process that survives SIGKILLs of fdbg with breakpoints armed and
//! hit, with its code as in its file afterwards.

use std::process::Command;

use serde_json::Value;
use serial_test::serial;

use crate::harness::{
    Interactive, Shape, TEST_LIMIT, Watchdog, assert_untraced_and_running, fdbg_batch, num,
    poll_until, sigtrap_bit,
};
use crate::login::{Server, finished_logins};
use crate::testprogs::{ChildGuard, source_dir, testprog};

/// The line of `needle` in testprogs/FILE.
fn line_of(file: &str, needle: &str) -> u64 {
    let text = std::fs::read_to_string(source_dir().join(file)).expect("a test program's source");
    text.lines()
        .position(|l| l.contains(needle))
        .map(|i| i as u64 + 1)
        .unwrap_or_else(|| panic!("{needle:?} not in {file}"))
}

/// No uprobe definition of fdbg process `fdbg_pid` is left in tracefs.
fn no_probes_left(fdbg_pid: i32) -> bool {
    let text = std::fs::read_to_string("/sys/kernel/tracing/uprobe_events").unwrap_or_default();
    !text.contains(&format!("fdbg_{fdbg_pid}/"))
}

/// Every executable file mapping of `pid` holds the bytes of its file: no
/// breakpoint instruction left behind.
fn code_as_in_its_files(pid: i32) -> Result<(), String> {
    use std::io::{Read, Seek, SeekFrom};
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).map_err(|e| e.to_string())?;
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem")).map_err(|e| e.to_string())?;
    for line in maps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 6 || !fields[1].contains('x') || !fields[5].starts_with('/') {
            continue;
        }
        let (start, end) = fields[0].split_once('-').expect("a range");
        let start = u64::from_str_radix(start, 16).expect("hex");
        let end = u64::from_str_radix(end, 16).expect("hex");
        let offset = u64::from_str_radix(fields[2], 16).expect("hex");
        let mut in_memory = vec![0u8; (end - start) as usize];
        mem.seek(SeekFrom::Start(start))
            .map_err(|e| e.to_string())?;
        mem.read_exact(&mut in_memory).map_err(|e| e.to_string())?;
        let mut file = std::fs::File::open(fields[5]).map_err(|e| e.to_string())?;
        let mut in_file = vec![0u8; in_memory.len()];
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| e.to_string())?;
        let n = file.read(&mut in_file).map_err(|e| e.to_string())?;
        if in_memory[..n] != in_file[..n] {
            let at = (0..n).find(|&i| in_memory[i] != in_file[i]).unwrap_or(0);
            return Err(format!(
                "{} differs from its file at {:#x}",
                fields[5],
                start + at as u64
            ));
        }
    }
    Ok(())
}

fn finish_doc(fdbg: &mut Interactive) -> Value {
    let line = fdbg.wait_line("the finish document", |l| l.starts_with("{\"finish\""));
    serde_json::from_str(&line).expect("JSON")
}

#[test]
#[serial]
fn finish_at_on_login_shows_the_one_socket_the_call_left_open() {
    for program in ["login_server", "login_server_o2"] {
        finish_at_on_login(program);
    }
}

fn finish_at_on_login(program: &str) {
    let _watchdog = Watchdog::new("finish_on_login", TEST_LIMIT);
    let mut server = Server::start_program(program);
    let pid = server.pid();
    let mut fdbg = Interactive::attach(pid, "perf");
    assert!(!sigtrap_bit(pid, "SigIgn"), "{fdbg}");
    fdbg.send("break on_login");
    let set = fdbg.wait_prefix("Breakpoint 1: break func on_login");
    assert!(
        set.contains("on_login at") && set.contains("login.c:"),
        "{fdbg}"
    );
    // A SIGTRAP of a probe in flight when fdbg dies must be harmless.
    assert!(sigtrap_bit(pid, "SigIgn"), "ignored while armed\n{fdbg}");
    fdbg.send("continue");
    let client = server.logins_in_background(1);
    let stop = fdbg.wait_prefix("Breakpoint 1, thread");
    assert!(stop.contains("in on_login at"), "{fdbg}");
    fdbg.send("finish --json");
    let finish = finish_doc(&mut fdbg);
    let leak = server.output.wait_for("leak");
    let body = &finish["finish"];
    assert_eq!(body["function"], "on_login", "{fdbg}");
    let sites = body["still_open"].as_array().expect("still_open");
    assert_eq!(sites.len(), 1, "one site\n{fdbg}");
    assert_eq!(sites[0]["count"], 1, "{fdbg}");
    assert_eq!(sites[0]["syscall"], "socket", "{fdbg}");
    assert_eq!(sites[0]["fds"], serde_json::json!([leak.fd()]), "{fdbg}");
    let top = &sites[0]["frames"][0];
    assert_eq!(top["function"], "statsd_init", "{fdbg}");
    assert!(
        top["file"]
            .as_str()
            .is_some_and(|f| f.ends_with("statsd.c")),
        "{fdbg}"
    );
    assert_eq!(top["line"], line_of("statsd.c", "socket(AF_INET"), "{fdbg}");
    assert_eq!(body["closed"], serde_json::json!([]), "{fdbg}");
    assert_eq!(body["opened_and_closed"], 0, "{fdbg}");
    // Back in the caller.
    fdbg.send("bt --json");
    let bt = fdbg.wait_line("the stack", |l| l.starts_with("{\"tid\""));
    let bt: Value = serde_json::from_str(&bt).expect("JSON");
    assert_eq!(bt["frames"][0]["function"], "serve", "{fdbg}");
    // The fd events of the call were observed, not stopped at.
    fdbg.send("stats --json");
    let stats = fdbg.wait_doc(Shape::Stats);
    assert_eq!(stats["mechanism"], "perf-observe", "{fdbg}");
    fdbg.send("delete");
    fdbg.send("continue");
    finished_logins(client, 1);
    fdbg.signal(libc::SIGINT);
    fdbg.wait_prefix("Interrupted");
    // No probe left: SIGTRAP's default action is back, still attached.
    assert!(!sigtrap_bit(pid, "SigIgn"), "restored\n{fdbg}");
    fdbg.send("quit");
    let fdbg_pid = fdbg.pid();
    assert!(fdbg.wait_exit().success(), "{fdbg}");
    assert_untraced_and_running(pid, &fdbg);
    assert!(no_probes_left(fdbg_pid), "uprobe definitions left\n{fdbg}");
    code_as_in_its_files(pid).unwrap_or_else(|e| panic!("{e}\n{fdbg}"));
}

/// A uprobe event inherited by new threads must not break their creation
/// (a PMU uprobe re-reads fdbg's memory in each new thread: EFAULT).
#[test]
#[serial]
fn threads_are_still_created_while_a_function_breakpoint_is_armed() {
    let _watchdog = Watchdog::new("break_func_threads", TEST_LIMIT);
    let mut churn = ChildGuard::spawn(Command::new(testprog("thread_churn")).arg("4"));
    let pid = churn.pid();
    let mut output = churn.output();
    output.wait_for("start");
    let mut fdbg = Interactive::attach(pid, "perf");
    fdbg.send("break func worker");
    fdbg.wait_prefix("Breakpoint 1: break func worker");
    for _ in 0..5 {
        fdbg.send("continue");
        fdbg.wait_line("a stop in worker", |l| {
            l.starts_with("Breakpoint 1, thread") && l.contains("in worker at")
        });
    }
    // Armed all along: the rounds go on (a failed pthread_create ends the
    // program), and the threads made during them hit it too.
    fdbg.send("continue 300ms");
    fdbg.wait_line("a stop", |l| l.starts_with("Breakpoint 1, thread"));
    fdbg.send("delete");
    fdbg.send("continue 300ms");
    fdbg.wait_prefix("Time is up");
    fdbg.send("quit");
    assert!(fdbg.wait_exit().success(), "{fdbg}");
    output.wait_for("round");
    assert_untraced_and_running(pid, &fdbg);
    code_as_in_its_files(pid).unwrap_or_else(|e| panic!("{e}\n{fdbg}"));
}

/// glibc blocks every signal for a moment while it creates a thread and as
/// a thread ends, and SIGTRAPs cannot reach a thread then. A breakpoint set
/// while every thread is in that moment (a single worker at a time makes it
/// most of the process's life) is armed once the moment passes.
#[test]
#[serial]
fn a_breakpoint_set_while_every_thread_blocks_sigtrap_for_a_moment_is_armed() {
    let _watchdog = Watchdog::new("break_func_blocked", TEST_LIMIT);
    let mut churn = ChildGuard::spawn(Command::new(testprog("thread_churn")).arg("1"));
    let pid = churn.pid();
    // Kept: the program writes a line every 100 rounds.
    let mut output = churn.output();
    output.wait_for("start");
    for attempt in 0..10 {
        let out = fdbg_batch([
            "attach",
            &pid.to_string(),
            "--events",
            "perf",
            "--batch",
            "-e",
            "break func worker",
            "-e",
            "continue",
            "-e",
            "stats --json",
        ]);
        out.assert_success();
        assert!(
            out.stdout
                .lines()
                .any(|l| l.starts_with("Breakpoint 1, thread") && l.contains("in worker at")),
            "attach {attempt}: a stop in worker\n{out}"
        );
        // The fd events are observed again once the breakpoint is armed.
        assert_eq!(
            out.first(Shape::Stats)["mechanism"],
            "perf-observe",
            "attach {attempt}\n{out}"
        );
        assert!(
            !out.stderr.contains("PTRACE_SYSCALL"),
            "attach {attempt}: no fallback\n{out}"
        );
        assert_untraced_and_running(pid, &out);
    }
    output.wait_for("round");
}

/// How many times fdbg is SIGKILLed with function breakpoints armed.
const KILLS: usize = 20;

#[test]
#[serial]
fn sigkill_of_fdbg_with_function_breakpoints_hit_leaves_the_process_intact() {
    let _watchdog = Watchdog::new("break_func_sigkill", TEST_LIMIT);
    let server = Server::start();
    let pid = server.pid();
    for kill in 0..KILLS {
        let mut fdbg = Interactive::attach(pid, "perf");
        fdbg.send("break on_login");
        fdbg.wait_prefix("Breakpoint 1: break func on_login");
        fdbg.send("continue");
        let client = server.logins_in_background(2);
        // Half the time killed at the stop, half while running on.
        fdbg.wait_prefix("Breakpoint 1, thread");
        if kill % 2 == 1 {
            fdbg.send("continue");
        }
        fdbg.signal(libc::SIGKILL);
        fdbg.wait_exit();
        finished_logins(client, 2);
        poll_until(
            "the server to run on, untraced",
            || crate::harness::tracer_pid(pid) == Some(0),
            || format!("kill {kill}\n{fdbg}"),
        );
        assert_untraced_and_running(pid, &fdbg);
        code_as_in_its_files(pid).unwrap_or_else(|e| panic!("kill {kill}: {e}\n{fdbg}"));
    }
    // It still serves.
    server.logins(3);
}

#[test]
#[serial]
fn function_breakpoints_that_cannot_be_set_say_why_in_one_line() {
    let _watchdog = Watchdog::new("break_func_errors", TEST_LIMIT);
    let server = Server::start();
    let pid = server.pid().to_string();
    let unknown = crate::harness::fdbg_batch([
        "attach",
        &pid,
        "--events",
        "perf",
        "--batch",
        "-e",
        "break no_such_function",
    ]);
    // Perhaps in a library loaded later: pending, said so.
    unknown.assert_success();
    assert!(
        unknown.stdout.contains(
            "Breakpoint 1: break func no_such_function (pending: no function named so is loaded now"
        ),
        "{unknown}"
    );
    let no_line = crate::harness::fdbg_batch([
        "attach",
        &pid,
        "--events",
        "perf",
        "--batch",
        "-e",
        "break statsd.c:9999",
    ]);
    assert_eq!(no_line.status.code(), Some(1), "{no_line}");
    assert_eq!(
        no_line.stderr.trim(),
        "fdbg: no code for line 9999 of a file named 'statsd.c' in the DWARF of the program or the libraries it has loaded now",
        "{no_line}"
    );
    let ptrace = crate::harness::fdbg_batch([
        "attach",
        &pid,
        "--events",
        "ptrace",
        "--batch",
        "-e",
        "break on_login",
    ]);
    assert_eq!(ptrace.status.code(), Some(1), "{ptrace}");
    assert!(
        ptrace
            .stderr
            .trim()
            .starts_with("fdbg: function breakpoints need perf SIGTRAPs")
            && ptrace.stderr.lines().count() == 1,
        "{ptrace}"
    );
    assert_untraced_and_running(server.pid(), &ptrace);
}

#[test]
#[serial]
fn balance_on_login_counts_every_call_and_the_socket_each_leaves() {
    let _watchdog = Watchdog::new("balance_on_login", TEST_LIMIT);
    const LOGINS: usize = 50;
    let mut server = Server::start_program("login_server_o2");
    let pid = server.pid();
    let mut fdbg = Interactive::attach(pid, "perf");
    fdbg.send("balance on_login");
    fdbg.wait_prefix("measuring every call of on_login");
    fdbg.send("continue");
    server.logins(LOGINS);
    fdbg.signal(libc::SIGINT);
    fdbg.wait_prefix("Interrupted");
    fdbg.send("balance --json");
    let line = fdbg.wait_line("the balance document", |l| l.starts_with("{\"balance\""));
    let doc: Value = serde_json::from_str(&line).expect("JSON");
    // Two stops a call (its entry and its return; the server has one
    // thread), and the fd events observed: accept, socket, close a login.
    fdbg.send("stats --json");
    let stats = fdbg.wait_doc(Shape::Stats);
    assert_eq!(stats["mechanism"], "perf-observe", "{fdbg}");
    assert_eq!(num(&stats, "total_events"), 3 * LOGINS as i64, "{stats}");
    let stops = num(&stats, "stops");
    assert!(
        (2 * LOGINS as i64..=2 * LOGINS as i64 + 8).contains(&stops),
        "{stops} stops for {LOGINS} calls\n{fdbg}"
    );
    assert_eq!(num(&stats, "missed"), 0, "{stats}");
    let leaked: std::collections::BTreeSet<i64> = (0..LOGINS)
        .map(|_| i64::from(server.output.wait_for("leak").fd()))
        .collect();
    let entry = &doc["balance"][0];
    assert_eq!(entry["function"], "on_login", "{fdbg}");
    assert_eq!(entry["calls"], LOGINS as u64, "{fdbg}");
    assert_eq!(entry["opened"], LOGINS as u64, "{fdbg}");
    assert_eq!(entry["still_open"], LOGINS as u64, "{fdbg}");
    assert_eq!(entry["closed"], 0, "{fdbg}");
    assert_eq!(entry["per_call"], 1.0, "{fdbg}");
    let sites = entry["sites"].as_array().expect("sites");
    assert_eq!(sites.len(), 1, "{fdbg}");
    let fds: std::collections::BTreeSet<i64> = sites[0]["fds"]
        .as_array()
        .expect("fds")
        .iter()
        .filter_map(Value::as_i64)
        .collect();
    assert_eq!(fds, leaked, "{fdbg}");
    assert_eq!(sites[0]["frames"][0]["function"], "statsd_init", "{fdbg}");
    assert_eq!(
        sites[0]["frames"][0]["line"],
        line_of("statsd.c", "socket(AF_INET"),
        "{fdbg}"
    );
    // The whole stack, not cut at a return trampoline.
    assert_eq!(sites[0]["frames"][2]["function"], "serve", "{fdbg}");
    fdbg.send("quit");
    assert!(fdbg.wait_exit().success(), "{fdbg}");
    assert_untraced_and_running(pid, &fdbg);
    code_as_in_its_files(pid).unwrap_or_else(|e| panic!("{e}\n{fdbg}"));
}

/// A C++ method of a shared library, by its demangled name without
/// arguments; `finish` gives the socket it leaks.
#[test]
#[serial]
fn a_cxx_library_method_by_its_demangled_name() {
    let _watchdog = Watchdog::new("break_func_cxx", TEST_LIMIT);
    let mut program = ChildGuard::spawn(Command::new(testprog("sym_cxx")).arg("--wait"));
    let pid = program.pid();
    let mut output = program.output();
    output.wait_for("ready");
    let mut fdbg = Interactive::attach(pid, "perf");
    fdbg.send("break metrics::open_statsd_socket");
    let set = fdbg.wait_prefix("Breakpoint 1: break func metrics::open_statsd_socket");
    assert!(
        set.contains("metrics::open_statsd_socket(int)") && set.contains("libsymlib.so"),
        "{fdbg}"
    );
    fdbg.send("continue");
    program.send_line();
    fdbg.wait_prefix("Breakpoint 1, thread");
    fdbg.send("finish --json");
    let finish = finish_doc(&mut fdbg);
    let leak = output.wait_for("leak");
    let site = &finish["finish"]["still_open"][0];
    assert_eq!(site["fds"], serde_json::json!([leak.fd()]), "{fdbg}");
    assert!(
        site["frames"][0]["module"]
            .as_str()
            .is_some_and(|m| m.ends_with("/libsymlib.so")),
        "{fdbg}"
    );
    fdbg.send("delete");
    fdbg.send("continue");
    fdbg.wait_line("the exit", |l| l.contains("exited"));
    fdbg.send("quit");
    assert!(fdbg.wait_exit().success(), "{fdbg}");
}

/// `break FILE:LINE` stops at that line (the DWARF line table), `bt`
/// names it, and `finish` ends the enclosing function.
#[test]
#[serial]
fn break_at_a_source_line_stops_there_and_finish_ends_its_function() {
    let _watchdog = Watchdog::new("break_line", TEST_LIMIT);
    let line = line_of("statsd.c", "socket(AF_INET");
    let server = Server::start();
    let pid = server.pid();
    let mut fdbg = Interactive::attach(pid, "perf");
    fdbg.send(&format!("break statsd.c:{line}"));
    fdbg.wait_prefix(&format!(
        "Breakpoint 1: break statsd.c:{line}: statsd_init at"
    ));
    fdbg.send("continue");
    let client = server.logins_in_background(1);
    fdbg.wait_prefix("Breakpoint 1, thread");
    fdbg.send("bt --json");
    let bt = fdbg.wait_line("the stack", |l| l.starts_with("{\"tid\""));
    let bt: Value = serde_json::from_str(&bt).expect("JSON");
    assert_eq!(bt["frames"][0]["function"], "statsd_init", "{fdbg}");
    assert_eq!(bt["frames"][0]["line"], line, "{fdbg}");
    assert_eq!(bt["frames"][1]["function"], "on_login", "{fdbg}");
    fdbg.send("finish --json");
    let finish = finish_doc(&mut fdbg);
    assert_eq!(finish["finish"]["function"], "statsd_init", "{fdbg}");
    assert_eq!(finish["finish"]["still_open"][0]["count"], 1, "{fdbg}");
    fdbg.send("delete");
    fdbg.send("continue");
    finished_logins(client, 1);
    fdbg.signal(libc::SIGINT);
    fdbg.wait_prefix("Interrupted");
    fdbg.send("quit");
    assert!(fdbg.wait_exit().success(), "{fdbg}");
    assert_untraced_and_running(pid, &fdbg);
}

/// A breakpoint on a function of a library the process loads later with
/// dlopen: pending until the dynamic linker reports the load, then hit.
#[test]
#[serial]
fn a_pending_breakpoint_is_hit_in_a_library_loaded_later() {
    let _watchdog = Watchdog::new("break_func_dlopen", TEST_LIMIT);
    let mut program = ChildGuard::spawn(&mut Command::new(testprog("dlopen_plugin")));
    let pid = program.pid();
    let mut output = program.output();
    output.wait_for("start");
    let mut fdbg = Interactive::attach(pid, "perf");
    fdbg.send("break plugin_open_log");
    fdbg.wait_prefix("Breakpoint 1: break func plugin_open_log (pending");
    // Disabled and enabled again, still pending.
    fdbg.send("disable 1");
    fdbg.send("enable 1");
    fdbg.wait_prefix("breakpoint 1 enabled");
    fdbg.send("info breakpoints");
    fdbg.wait_line("pending", |l| {
        l.contains("(pending: in no object loaded yet)")
    });
    fdbg.send("continue");
    program.send_line();
    let stop = fdbg.wait_prefix("Breakpoint 1, thread");
    assert!(
        stop.contains("in plugin_open_log at") && stop.contains("libplugin.so"),
        "{fdbg}"
    );
    fdbg.send("info breakpoints");
    fdbg.wait_line("its location now", |l| {
        l.contains("plugin_open_log at") && l.contains("plugin.c:")
    });
    fdbg.send("finish --json");
    let finish = finish_doc(&mut fdbg);
    fdbg.send("quit");
    assert!(fdbg.wait_exit().success(), "{fdbg}");
    // Let go, the program prints what the call returned.
    let leak = output.wait_for("leak");
    assert_eq!(
        finish["finish"]["still_open"][0]["fds"],
        serde_json::json!([leak.fd()]),
        "{fdbg}"
    );
    assert_untraced_and_running(pid, &fdbg);
    code_as_in_its_files(pid).unwrap_or_else(|e| panic!("{e}\n{fdbg}"));
}

/// `detach` with a function breakpoint armed: the breakpoint goes first,
/// so the process's next call is not met by a SIGTRAP with its default
/// (fatal) action back.
#[test]
#[serial]
fn detach_with_a_function_breakpoint_armed_leaves_the_process_unharmed() {
    let _watchdog = Watchdog::new("break_func_detach", TEST_LIMIT);
    let server = Server::start();
    let pid = server.pid();
    let mut fdbg = Interactive::attach(pid, "perf");
    fdbg.send("break on_login");
    fdbg.wait_prefix("Breakpoint 1: break func on_login");
    fdbg.send("detach");
    fdbg.wait_line("the detach", |l| l.contains("detached"));
    // Still at the prompt, the model kept: the server calls on_login.
    server.logins(3);
    assert_untraced_and_running(pid, &fdbg);
    code_as_in_its_files(pid).unwrap_or_else(|e| panic!("{e}\n{fdbg}"));
    fdbg.send("quit");
    let fdbg_pid = fdbg.pid();
    assert!(fdbg.wait_exit().success(), "{fdbg}");
    assert!(no_probes_left(fdbg_pid), "{fdbg}");
}
