//! The interactive debugger: a person at
//! a terminal, driven through a pseudo-terminal, and the same commands in
//! --batch --json.

use std::process::Command;

use serial_test::serial;

use crate::harness::{Interactive, assert_untraced_and_running};
use crate::login::Server;
use crate::testprogs::testprog;

const FDBG: &str = env!("CARGO_BIN_EXE_fdbg");
/// Bound for every expectation on the terminal: a hang fails, never blocks.
const PTY_TIMEOUT_MS: u64 = 20_000;

#[test]
#[serial]
fn a_person_at_a_terminal_continues_interrupts_looks_and_quits() {
    let server = Server::start();
    let pid = server.pid();
    let mut cmd = Command::new(FDBG);
    cmd.args(["attach", &pid.to_string()])
        .env("HOME", std::env::temp_dir())
        .env("TERM", "xterm");
    let mut p =
        rexpect::session::spawn_command(cmd, Some(PTY_TIMEOUT_MS)).expect("spawn fdbg on a pty");
    p.exp_string("(fdbg) ").expect("the prompt appears");
    p.send_line("continue").unwrap();
    // The server runs under fdbg: a login completes.
    server.logins(1);
    p.send_control('c').unwrap();
    p.exp_string("Interrupted")
        .expect("Ctrl-C stops the process");
    p.exp_string("(fdbg) ").expect("and returns to the prompt");
    p.send_line("fds --kind socket").unwrap();
    // (The echo of the typed line contains "socket" and the prompt; the
    // table's header comes only with the answer.)
    p.exp_string("CREATED").expect("fds answers with its table");
    p.exp_string("socket").expect("fds lists sockets");
    p.exp_string("(fdbg) ").unwrap();
    // Tab completes "brea" to "break".
    p.send("brea\t").unwrap();
    p.flush().unwrap();
    p.exp_string("k").expect("Tab completes brea to break");
    p.send_line(" count 1000").unwrap();
    p.exp_string("Breakpoint 1: break count 1000")
        .expect("the completed command ran");
    p.exp_string("(fdbg) ").unwrap();
    p.send_line("quit").unwrap();
    p.exp_eof().expect("fdbg exits on quit");
    assert_untraced_and_running(pid, &"after quit");
    // The server still serves.
    server.logins(1);
}

/// Run fdbg with `args`, returning its stdout's JSON documents.
fn fdbg_json(args: &[&str]) -> (Vec<serde_json::Value>, String, i32) {
    let out = Command::new(FDBG).args(args).output().expect("run fdbg");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let docs = stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {l}\nstderr: {stderr}"))
        })
        .collect();
    (docs, stderr, out.status.code().unwrap_or(-1))
}

fn find<'a>(docs: &'a [serde_json::Value], key: &str) -> Vec<&'a serde_json::Value> {
    docs.iter().filter(|d| d.get(key).is_some()).collect()
}

#[test]
#[serial]
fn break_count_stops_at_the_event_that_crosses_and_bt_repeats_its_stack() {
    // threads leaks one fd at a time from each thread; with one thread the
    // count grows one leak at a time.
    let prog = testprog("leak3");
    let prog = prog.to_str().unwrap();
    // First learn the count at start, then break one above it.
    let (docs, stderr, code) = fdbg_json(&["run", "--batch", "--json", "-e", "fds", "--", prog]);
    assert_eq!(code, 0, "{stderr}");
    let base = find(&docs, "fds")[0]["open_fds"].as_u64().unwrap();
    let n = base + 1; // leak3 opens one file first: the count becomes base+1, then base+2.
    let n_text = n.to_string();
    let (docs, stderr, code) = fdbg_json(&[
        "run", "--batch", "--json", "-b", &n_text, "-e", "continue", "-e", "bt", "--", prog,
    ]);
    assert_eq!(code, 0, "{stderr}");
    let stop = find(&docs, "stop")[0];
    assert_eq!(stop["stop"], "breakpoint", "{docs:?}");
    assert_eq!(stop["breakpoint"], 1);
    let event = &stop["event"];
    assert_eq!(
        event["open_fds"].as_u64().unwrap(),
        n + 1,
        "stops exactly when the count becomes N+1"
    );
    assert!(
        !event["frames"].as_array().unwrap().is_empty(),
        "the creating stack is shown"
    );
    let bt = find(&docs, "event")
        .into_iter()
        .find(|d| d.get("stop").is_none())
        .expect("bt document");
    assert_eq!(bt["event"]["seq"], event["seq"]);
    assert_eq!(
        bt["event"]["frames"], event["frames"],
        "bt prints the same stack again"
    );
}

#[test]
#[serial]
fn mark_one_login_diff_shows_exactly_the_leak() {
    let server = Server::start();
    let pid = server.pid();
    // Interactive (commands on stdin) so that the login happens between
    // `mark` and `diff` while the server runs.
    let mut fdbg = Interactive::start(["attach", &pid.to_string()]);
    fdbg.wait_attached();
    fdbg.send("mark before");
    fdbg.wait_prefix("mark before");
    fdbg.send("continue");
    // The client's line comes only after the server closed the connection.
    server.logins(1);
    fdbg.signal(libc::SIGINT); // Ctrl-C: back to the prompt
    fdbg.wait_prefix("Interrupted");
    fdbg.send("diff before --json");
    let diff: serde_json::Value = {
        let line = fdbg.wait_line("the diff document", |l| l.contains("\"still_open\""));
        serde_json::from_str(&line).unwrap()
    };
    fdbg.close_stdin();
    assert!(fdbg.wait_exit().success(), "{fdbg}");
    let sites = diff["still_open"].as_array().unwrap();
    assert_eq!(sites.len(), 1, "{diff}");
    assert_eq!(sites[0]["count"], 1, "{diff}");
    assert_eq!(sites[0]["syscall"], "socket", "{diff}");
    assert_eq!(sites[0]["frames"][0]["function"], "statsd_init", "{diff}");
    // The accepted socket was opened and closed.
    assert_eq!(diff["opened_and_closed"], 1, "{diff}");
    assert!(
        diff["closed_from_before"].as_array().unwrap().is_empty(),
        "{diff}"
    );
    assert_untraced_and_running(pid, &fdbg);
}

#[test]
#[serial]
fn step_prints_the_next_three_events_and_stops() {
    let prog = testprog("leak3");
    let (docs, stderr, code) = fdbg_json(&[
        "run",
        "--batch",
        "--json",
        "-e",
        "step 3",
        "--",
        prog.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let events: Vec<_> = docs.iter().filter(|d| d.get("seq").is_some()).collect();
    let stop = find(&docs, "stop")[0];
    assert_eq!(stop["stop"], "step");
    assert_eq!(
        events.len(),
        2,
        "two event lines, then the stop with the third: {docs:?}"
    );
    let seqs: Vec<u64> = events
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .chain(std::iter::once(stop["event"]["seq"].as_u64().unwrap()))
        .collect();
    assert_eq!(seqs, vec![1, 2, 3]);
}

#[test]
#[serial]
fn every_command_answers_json_in_batch_and_typos_name_the_closest_command() {
    let prog = testprog("leak3");
    let commands = [
        "break fd 3",
        "catch eventfd",
        "info breakpoints",
        "continue",
        "bt",
        "history 3",
        "mark m",
        "disable 1",
        "enable 1",
        "delete 1",
        "continue",
        "diff m",
        "fds",
        "leaks",
        "leaks --since m --min 1",
        "stats",
        "threads",
        "help",
        "help leaks",
    ];
    let mut args: Vec<&str> = vec!["run", "--batch", "--json"];
    for c in &commands {
        args.push("-e");
        args.push(c);
    }
    args.push("--");
    args.push(prog.to_str().unwrap());
    let (docs, stderr, code) = fdbg_json(&args);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.is_empty(), "no command failed: {stderr}");
    assert!(
        docs.len() >= commands.len(),
        "one document per command at least: {docs:?}"
    );

    let out = Command::new(FDBG)
        .args([
            "run",
            "--batch",
            "-e",
            "leeks",
            "--",
            prog.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("did you mean 'leaks'"), "{stderr}");
    assert_eq!(
        out.status.code(),
        Some(1),
        "a failed command fails the batch"
    );
}

/// Names chosen by the process never reach the terminal raw. A
/// program opens (and leaks) a file whose name holds an escape sequence
/// and a newline: text output shows them escaped, JSON carries them intact.
#[test]
#[serial]
fn control_characters_from_the_process_are_escaped() {
    let dir = std::env::temp_dir().join(format!("fdbg-escape-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let hostile = dir.join("x\u{1b}[2Jy\nz");
    let path = hostile.to_str().unwrap();
    let script = r#"exec 7>"$1""#;
    let session = [
        "-e",
        "continue",
        "-e",
        "fds --kind file",
        "--",
        "/bin/sh",
        "-c",
        script,
        "sh",
        path,
    ];
    let out = Command::new(FDBG)
        .args(["run", "--batch"])
        .args(session)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "a raw ESC reached the terminal: {text:?}"
    );
    assert!(
        text.contains("x\\x1b[2Jy\\nz"),
        "the name is shown escaped: {text}"
    );
    let json_args: Vec<&str> = ["run", "--batch", "--json"]
        .into_iter()
        .chain(session)
        .collect();
    let (docs, stderr, code) = fdbg_json(&json_args);
    assert_eq!(code, 0, "{stderr}");
    let fds = find(&docs, "fds")[0];
    let fd7 = fds["fds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["fd"] == 7)
        .expect("fd 7");
    assert_eq!(fd7["target"], path, "JSON carries the name itself");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `help` is fdbg's own text: one command per line, no escaped newlines.
#[test]
#[serial]
fn help_lists_one_command_per_line() {
    let out = Command::new(FDBG)
        .args([
            "run",
            "--batch",
            "-e",
            "help",
            "-e",
            "help break",
            "--",
            "/bin/true",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("\\n"), "no literal \\n: {text}");
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("leaks [--since MARK]")),
        "{text}"
    );
    assert!(text.lines().any(|l| l.trim() == "Also: b, br"), "{text}");
}
