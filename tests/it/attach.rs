//! `fdbg attach` to the leaky login server: the leak found during
//! `continue`, `fds` equal to /proc, and the server left running untraced
//! after every way fdbg can end (quit, EOF, SIGINT/SIGTERM/SIGHUP); and the
//! one-line errors of attach and run.

use std::collections::BTreeSet;
use std::process::Command;
use std::thread;

use serial_test::serial;

use crate::harness::{
    Interactive, Shape, TEST_LIMIT, Watchdog, assert_untraced_and_running, fd_numbers, fdbg_batch,
    num, num_set, poll_until, tracer_pid, tracer_process,
};
use crate::login::Server;
use crate::testprogs::{ChildGuard, Expect, open_fds, run, testprog};

#[test]
#[serial]
fn attach_login_server_finds_n_leaks_in_one_site_and_leaves_it_running() {
    let _watchdog = Watchdog::new("attach_login_server", TEST_LIMIT);
    let mut server = Server::start();
    let pid = server.pid();
    let logins = 5;

    let mut fdbg = Interactive::start(["attach", &pid.to_string()]);
    fdbg.wait_attached();
    // The server is stopped: the client's connections wait in the backlog
    // and are served during `continue`, whose 5 s is a bound, not a sleep.
    let port = server.port.clone();
    let client = thread::spawn(move || {
        run(Command::new(testprog("login_client")).args([&port, &logins.to_string()]))
    });
    fdbg.send("continue 5s");
    let stop = fdbg.wait_line("the stop after continue 5s", |l| {
        l.contains("Time is up") || l.contains("exited") || l.contains("stopped")
    });
    fdbg.send("leaks --json");
    let leaks = fdbg.wait_doc(Shape::Leaks);
    fdbg.send("fds --json");
    let fds = fdbg.wait_doc(Shape::Fds);
    fdbg.send("quit");
    let status = fdbg.wait_exit();
    assert!(status.success(), "{fdbg}");
    let client = client.join().expect("client thread");
    client.assert_success();
    assert!(
        stop.contains("Time is up"),
        "continue 5s should end by its bound\n{fdbg}"
    );

    let leak_lines: Vec<Expect> = (0..logins)
        .map(|_| server.output.wait_for("leak"))
        .collect();
    let expected: BTreeSet<i32> = leak_lines.iter().map(Expect::fd).collect();
    assert_eq!(num(&leaks, "total"), logins as i64, "{fdbg}");
    let sites = leaks["sites"].as_array().expect("sites");
    assert_eq!(sites.len(), 1, "one site\n{fdbg}");
    assert_eq!(sites[0]["syscall"], "socket", "{fdbg}");
    assert_eq!(num(&sites[0], "count"), logins as i64, "{fdbg}");
    assert_eq!(num_set(&sites[0]["fds"]), expected, "{fdbg}");

    // fdbg has ended: the server runs on, untraced, idle in accept.
    assert_untraced_and_running(pid, &fdbg);
    let proc_fds: BTreeSet<i32> = open_fds(pid).into_keys().collect();
    assert_eq!(fd_numbers(&fds), proc_fds, "fds vs /proc/{pid}/fd\n{fdbg}");
    server.logins(1);
}

#[test]
#[serial]
fn attach_batch_continue_leaks_fds_then_detaches() {
    let _watchdog = Watchdog::new("attach_batch", TEST_LIMIT);
    let server = Server::start();
    let pid = server.pid();
    server.logins(2);
    let out = fdbg_batch([
        "attach",
        &pid.to_string(),
        "--batch",
        "--json",
        "-e",
        "continue 100ms",
        "-e",
        "leaks",
        "-e",
        "fds",
    ]);
    out.assert_success();
    assert_eq!(out.first(Shape::Stop)["stop"], "timeout", "{out}");
    // Everything was there before attach: no leak since attach.
    assert_eq!(num(out.first(Shape::Leaks), "total"), 0, "{out}");
    let fds = out.first(Shape::Fds);
    assert!(
        fds["fds"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["origin"] == "before attach"),
        "{out}"
    );
    assert_untraced_and_running(pid, &out);
    assert_eq!(
        fd_numbers(fds),
        open_fds(pid).into_keys().collect::<BTreeSet<_>>(),
        "{out}"
    );
    server.logins(1);
}

/// Exactly one stderr line, starting "fdbg: " and containing `cause`.
fn assert_one_error_line(stderr: &str, cause: &str, context: &dyn std::fmt::Display) {
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one error line\n{context}");
    assert!(
        lines[0].starts_with("fdbg: ") && lines[0].contains(cause),
        "error should name {cause:?}\n{context}"
    );
}

#[test]
#[serial]
fn attach_to_a_pid_that_does_not_exist_fails_with_one_line() {
    let _watchdog = Watchdog::new("attach_no_such_pid", TEST_LIMIT);
    // A reaped child's pid: it existed, it is gone.
    let mut child = Command::new("true").spawn().expect("starting true");
    let gone = child.id();
    child.wait().expect("reaping true");
    let out = fdbg_batch(["attach", &gone.to_string(), "--batch", "-e", "fds"]);
    assert_eq!(out.status.code(), Some(1), "{out}");
    assert_one_error_line(&out.stderr, "no such process", &out);
}

#[test]
#[serial]
fn attach_to_a_traced_process_names_the_other_tracer() {
    let _watchdog = Watchdog::new("attach_already_traced", TEST_LIMIT);
    let server = Server::start();
    let pid = server.pid();
    let mut first = Interactive::start(["attach", &pid.to_string()]);
    first.wait_attached();
    assert_eq!(tracer_process(pid), Some(first.pid()), "{first}");

    let out = fdbg_batch(["attach", &pid.to_string(), "--batch", "-e", "fds"]);
    assert_eq!(out.status.code(), Some(1), "{out}");
    assert_one_error_line(&out.stderr, "already traced", &out);
    // It names the tracing process (not its tracing thread).
    assert!(
        out.stderr.contains(&format!(
            "already traced by process {} (fdbg?)",
            first.pid()
        )),
        "the error names the tracer {}\n{out}",
        first.pid()
    );

    first.close_stdin();
    assert!(first.wait_exit().success(), "{first}");
    assert_untraced_and_running(pid, &first);
    server.logins(1);
}

/// Another user's process: one line saying why and what to do.
#[test]
#[serial]
fn attach_without_permission_says_why() {
    let _watchdog = Watchdog::new("attach_permission", TEST_LIMIT);
    if nix::unistd::geteuid().as_raw() != 0 {
        eprintln!("skipped: needs root to run fdbg as another user");
        return;
    }
    let server = Server::start();
    let pid = server.pid();
    let fdbg = env!("CARGO_BIN_EXE_fdbg");
    let out = Command::new("runuser")
        .args([
            "-u",
            "nobody",
            "--",
            fdbg,
            "attach",
            &pid.to_string(),
            "--batch",
        ])
        .output()
        .expect("runuser (util-linux)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_one_error_line(
        &stderr,
        "permission denied (it belongs to uid 0; run fdbg as that user or with CAP_SYS_PTRACE)",
        &stderr,
    );
    assert_eq!(tracer_pid(pid), Some(0));
    server.logins(1);
}

#[test]
#[serial]
fn run_of_a_missing_program_fails_with_one_line() {
    let _watchdog = Watchdog::new("run_missing", TEST_LIMIT);
    let out = fdbg_batch([
        "run",
        "--batch",
        "-e",
        "continue",
        "--",
        "/nonexistent/fdbg-test",
    ]);
    assert_eq!(out.status.code(), Some(1), "{out}");
    assert_one_error_line(&out.stderr, "/nonexistent/fdbg-test", &out);
    assert!(
        out.stderr.contains("no such file"),
        "names the cause\n{out}"
    );
}

#[test]
fn bad_arguments_exit_2() {
    for args in [
        &["attach", "notanumber"][..],
        &["frobnicate"],
        &["attach"],
        &["run"],
        &["run", "--no-such-option", "--", "true"],
    ] {
        let out = fdbg_batch(args);
        assert_eq!(out.status.code(), Some(2), "{out}");
        assert!(!out.stderr.is_empty(), "a usage error says why\n{out}");
    }
}

/// fdbg attached (interactive unless `batch`) to a running server, in
/// `continue`, with a login served under trace.
fn attached_and_running(server: &Server, batch: bool) -> Interactive {
    let pid = server.pid();
    let mut args = vec!["attach".to_string(), pid.to_string()];
    if batch {
        args.extend(["--batch".into(), "-e".into(), "continue".into()]);
    }
    let mut fdbg = Interactive::start(args);
    fdbg.wait_attached();
    if !batch {
        fdbg.send("continue");
    }
    // Served only once the tracee runs; TracerPid says it runs under fdbg.
    server.logins(1);
    assert_eq!(tracer_process(pid), Some(fdbg.pid()), "{fdbg}");
    fdbg
}

fn signal_detaches(sig: i32, batch: bool) {
    let server = Server::start();
    let pid = server.pid();
    let mut fdbg = attached_and_running(&server, batch);
    fdbg.signal(sig);
    let status = fdbg.wait_exit();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        None,
        "fdbg died of the signal instead of handling it\n{fdbg}"
    );
    assert_eq!(status.code(), Some(128 + sig), "{fdbg}");
    assert_untraced_and_running(pid, &fdbg);
    server.logins(1);
}

#[test]
#[serial]
fn sigterm_and_sighup_to_interactive_fdbg_detach_and_the_server_runs_on() {
    let _watchdog = Watchdog::new("signals_interactive", TEST_LIMIT);
    for sig in [libc::SIGTERM, libc::SIGHUP] {
        signal_detaches(sig, false);
    }
}

#[test]
#[serial]
fn sigint_sigterm_sighup_to_batch_fdbg_detach_and_the_server_runs_on() {
    let _watchdog = Watchdog::new("signals_batch", TEST_LIMIT);
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        signal_detaches(sig, true);
    }
}

/// Interactive SIGINT is Ctrl-C: back to the prompt with the process
/// stopped; EOF then detaches.
#[test]
#[serial]
fn sigint_to_interactive_fdbg_interrupts_then_eof_detaches() {
    let _watchdog = Watchdog::new("sigint_interactive", TEST_LIMIT);
    let server = Server::start();
    let pid = server.pid();
    let mut fdbg = attached_and_running(&server, false);
    fdbg.signal(libc::SIGINT);
    fdbg.wait_line("the interrupt", |l| l.starts_with("Interrupted"));
    fdbg.send("threads --json");
    let threads = fdbg.wait_doc(Shape::Threads);
    assert_eq!(
        threads["threads"][0]["state"], "t",
        "stopped by fdbg\n{fdbg}"
    );
    fdbg.close_stdin();
    assert!(fdbg.wait_exit().success(), "{fdbg}");
    assert_untraced_and_running(pid, &fdbg);
    server.logins(1);
}

/// Kills a pid that is not our child (a tracee fdbg started) if the test
/// fails before fdbg killed it.
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if matches!(crate::harness::state(self.0), Some(s) if s != 'Z' && s != 'X') {
            // SAFETY: kill(2) touches no memory.
            unsafe { libc::kill(self.0, libc::SIGKILL) };
        }
    }
}

/// Under `run` every way of ending kills the started program.
#[test]
#[serial]
fn signals_to_fdbg_run_kill_the_started_program() {
    let _watchdog = Watchdog::new("signals_run", TEST_LIMIT);
    for (sig, batch) in [
        (libc::SIGINT, true),
        (libc::SIGTERM, true),
        (libc::SIGHUP, true),
        (libc::SIGTERM, false),
        (libc::SIGHUP, false),
    ] {
        let server = testprog("login_server");
        let mut args = vec!["run".to_string()];
        if batch {
            args.extend(["--batch".into(), "-e".into(), "continue".into()]);
        }
        args.extend([
            "--".into(),
            server.to_string_lossy().into_owned(),
            "0".into(),
        ]);
        let mut fdbg = Interactive::start(args);
        if !batch {
            fdbg.wait_prefix("Started process");
            fdbg.send("continue");
        }
        // The program shares fdbg's stdout.
        let start = fdbg.wait_prefix("EXPECT start");
        let pid: i32 = start
            .trim_start_matches("EXPECT start pid=")
            .parse()
            .unwrap();
        let _orphan = KillOnDrop(pid);
        let listen = fdbg.wait_prefix("EXPECT listen");
        let port = listen
            .split_whitespace()
            .find_map(|w| w.strip_prefix("port="))
            .unwrap()
            .to_string();
        run(Command::new(testprog("login_client")).args([&port, "1"])).assert_success();
        assert_eq!(tracer_process(pid), Some(fdbg.pid()), "{fdbg}");

        fdbg.signal(sig);
        let status = fdbg.wait_exit();
        assert_eq!(status.code(), Some(128 + sig), "signal {sig}\n{fdbg}");
        // Killed: gone, or a zombie until its new parent reaps it.
        poll_until(
            &format!("pid {pid} to be killed after signal {sig}"),
            || matches!(crate::harness::state(pid), None | Some('Z') | Some('X')),
            || fdbg.to_string(),
        );
        let refused = run(Command::new(testprog("login_client")).args([&port, "1"]));
        assert!(
            !refused.status.success(),
            "the server still serves\n{refused}"
        );
    }
}

/// A process whose leader has left (pthread_exit) while a worker runs on:
/// its /proc/PID/fd is empty and the leader's death is reported only at
/// the end, yet attach, continue, fds and quit all work, from the worker's
/// view of the process.
#[test]
#[serial]
fn attach_to_a_process_whose_leader_has_exited() {
    let _watchdog = Watchdog::new("leader_exit", TEST_LIMIT);
    let mut program = ChildGuard::spawn(&mut Command::new(testprog("leader_exit")));
    let mut output = program.output();
    let pid = output.wait_for("leader_gone").num("pid") as i32;
    let leader_state = || crate::harness::status_field(pid, "State").unwrap_or_default();
    poll_until(
        "the leader to be a zombie",
        || leader_state().starts_with('Z'),
        leader_state,
    );
    let worker = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .find(|&t| t != pid)
        .expect("the worker thread");

    let mut fdbg = Interactive::start(["attach", &pid.to_string()]);
    let banner = fdbg.wait_attached();
    assert!(
        banner.contains("1 thread"),
        "only the worker is traced\n{fdbg}"
    );
    fdbg.send("continue 300ms");
    fdbg.wait_prefix("Time is up");
    fdbg.send("fds --json");
    let fds = fdbg.wait_doc(Shape::Fds);
    fdbg.send("stats --json");
    let stats = fdbg.wait_doc(Shape::Stats);
    let worker_fds: BTreeSet<i32> = std::fs::read_dir(format!("/proc/{pid}/task/{worker}/fd"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    // Detach and leave fdbg at its prompt: the process must still be able
    // to end and be reaped by its parent (the zombie leader was ours).
    fdbg.send("detach");
    fdbg.wait_prefix("detached from process");

    let tracer = crate::harness::status_field(worker, "TracerPid");
    assert_eq!(tracer.as_deref(), Some("0"), "the worker runs on untraced");
    program.send_line();
    output.wait_for("done");
    assert!(
        program.wait_exit().success(),
        "the parent reaps the process while fdbg still runs"
    );
    fdbg.close_stdin();
    assert!(fdbg.wait_exit().success(), "{fdbg}");

    assert_eq!(
        fd_numbers(&fds),
        worker_fds,
        "fds vs /proc/{pid}/task/{worker}/fd\n{fdbg}"
    );
    assert!(
        num(&stats["events"], "openat") > 0,
        "the worker's opens were seen\n{fdbg}"
    );
    assert_eq!(num(&stats, "dropped"), 0, "{fdbg}");
}

/// The leader leaves (pthread_exit) while traced: its exit stop comes, its
/// death not until the worker is gone. `detach` lets both go, and the
/// parent can reap the process while fdbg still runs.
#[test]
#[serial]
fn the_leader_leaving_while_traced_is_let_go_at_detach() {
    let _watchdog = Watchdog::new("leader_leaves_traced", TEST_LIMIT);
    let mut program = ChildGuard::spawn(Command::new(testprog("leader_exit")).arg("--linger"));
    let mut output = program.output();
    let pid = output.wait_for("worker").num("pid") as i32;
    let mut fdbg = Interactive::start(["attach", &pid.to_string()]);
    fdbg.wait_attached();
    fdbg.send("continue");
    program.send_line(); // the leader leaves
    output.wait_for("leader_gone");
    let leader_state = || crate::harness::status_field(pid, "State").unwrap_or_default();
    poll_until(
        "the leader to be a zombie",
        || leader_state().starts_with('Z'),
        leader_state,
    );
    fdbg.signal(libc::SIGINT);
    fdbg.wait_prefix("Interrupted");
    fdbg.send("detach");
    fdbg.wait_prefix("detached from process");
    program.send_line(); // the worker ends
    output.wait_for("done");
    assert!(
        program.wait_exit().success(),
        "the parent reaps the process while fdbg still runs\n{fdbg}"
    );
    fdbg.close_stdin();
    assert!(fdbg.wait_exit().success(), "{fdbg}");
}

/// fdbg's output piped into a reader that is gone (as after `| head -1`):
/// no panic; fdbg detaches and exits with 141, as a SIGPIPE death would.
#[test]
#[serial]
fn a_closed_output_ends_fdbg_quietly_and_detaches() {
    let _watchdog = Watchdog::new("closed_output", TEST_LIMIT);
    let server = Server::start();
    let pid = server.pid();
    let mut fdbg = crate::harness::fdbg()
        .args([
            "attach",
            &pid.to_string(),
            "--batch",
            "-e",
            "fds",
            "-e",
            "fds",
            "-e",
            "stats",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The reader goes away before fdbg has printed a report.
    drop(fdbg.stdout.take());
    let status = crate::harness::wait_timeout(&mut fdbg, TEST_LIMIT).expect("fdbg exits");
    let mut stderr = String::new();
    std::io::Read::read_to_string(fdbg.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(status.code(), Some(141), "{stderr}");
    assert_eq!(tracer_pid(pid), Some(0));
    server.logins(1);
}
