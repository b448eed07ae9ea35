//! What a person may type, paste or pipe into fdbg: every bad line gets one
//! line on stderr and the session goes on; lines that arrive together run
//! one by one; the target is left untraced at the end.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::thread;

use serial_test::serial;

use crate::harness::{FdbgOutput, assert_untraced_and_running, fdbg, fdbg_batch, wait_timeout};
use crate::testprogs::{ChildGuard, TIMEOUT};

/// Bound for every expectation on the terminal: a hang fails, never blocks.
const PTY_TIMEOUT_MS: u64 = 20_000;

/// A process to attach to, killed by its pid when dropped.
fn sleeper() -> ChildGuard {
    ChildGuard::spawn(Command::new("/bin/sleep").arg("1000"))
}

/// `fdbg ARGS` with `input` piped to its stdin (then EOF), run to its end.
fn fdbg_with_stdin(args: &[&str], input: Vec<u8>) -> FdbgOutput {
    let mut command = fdbg();
    command.args(args);
    let shown = format!("{command:?} < {} bytes", input.len());
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {shown}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    // fdbg may stop reading early: a failed write is its business.
    let writer = thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let read_all = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let stdout = read_all(Box::new(child.stdout.take().unwrap()));
    let stderr = read_all(Box::new(child.stderr.take().unwrap()));
    let Some(status) = wait_timeout(&mut child, TIMEOUT) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{shown} did not finish within {TIMEOUT:?}");
    };
    writer.join().unwrap();
    let stdout = stdout.join().unwrap();
    FdbgOutput {
        command: shown,
        status,
        docs: crate::harness::json_docs(&stdout),
        stdout,
        stderr: stderr.join().unwrap(),
    }
}

/// Inputs that used to panic fdbg (or its tracer thread) each get a
/// one-line error; the commands after them still run.
#[test]
#[serial]
fn bad_arguments_get_one_line_each_and_the_batch_goes_on() {
    let bad = [
        // Overflowed Duration::from_secs_f64.
        "continue 99999999999999999999s",
        // Overflowed Instant + Duration on the tracer thread.
        "continue 10000000000000000000s",
        // Indexed the first word of an empty list.
        "--json",
        // Ran as `step 1`.
        "step 0",
        // Set a breakpoint on the literal text ''.
        "break site ''",
        "break site \"\"",
    ];
    let mut args = vec!["run", "--batch"];
    for line in &bad {
        args.extend(["-e", line]);
    }
    // `--json` first in a line, as `fds --json` works.
    args.extend(["-e", "--json fds", "-e", "info breakpoints", "-e", "stats"]);
    args.extend(["--", "/bin/sleep", "5"]);
    let out = fdbg_batch(&args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "failed commands fail the batch\n{out}"
    );
    let errors: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(
        errors,
        [
            "fdbg: duration '99999999999999999999s' is too long: at most 365 days (8760h)",
            "fdbg: duration '10000000000000000000s' is too long: at most 365 days (8760h)",
            "fdbg: --json needs a command, e.g. 'fds --json' (try 'help')",
            "fdbg: step needs N ≥ 1; usage: step [N]",
            "fdbg: empty PATTERN: name a function (or part of one) or FILE:LINE; usage: break fd N | break count N | break site PATTERN | break [func] NAME",
            "fdbg: empty PATTERN: name a function (or part of one) or FILE:LINE; usage: break fd N | break count N | break site PATTERN | break [func] NAME",
        ],
        "{out}"
    );
    assert!(
        out.docs.iter().any(|d| d.get("fds").is_some()),
        "`--json fds` printed the fds document\n{out}"
    );
    assert!(
        out.stdout.contains("No breakpoints"),
        "no breakpoint was set\n{out}"
    );
    assert!(out.stdout.contains("ptrace stops"), "stats ran\n{out}");
}

/// `break site 'statsd.c:17'` is `break site statsd.c:17`.
#[test]
#[serial]
fn quotes_around_a_site_pattern_are_not_part_of_it() {
    let out = fdbg_batch([
        "run",
        "--batch",
        "-e",
        "break site 'statsd.c:17'",
        "-e",
        "break site \"on login\"",
        "-e",
        "info breakpoints",
        "--",
        "/bin/sleep",
        "5",
    ]);
    out.assert_success();
    assert!(
        out.stdout
            .contains("Breakpoint 1: break site statsd.c:17\n"),
        "{out}"
    );
    assert!(
        out.stdout.contains("Breakpoint 2: break site on login\n"),
        "{out}"
    );
}

/// A line on stdin that is not UTF-8, or is a megabyte long, is refused
/// with one short line; the next command runs and EOF detaches.
#[test]
#[serial]
fn a_line_that_is_not_text_or_is_huge_is_refused_alone() {
    let target = sleeper();
    let pid = target.pid();
    let mut input = b"stats\n\xff\xfe leaks\n".to_vec();
    input.extend(std::iter::repeat_n(b'x', 1 << 20));
    input.extend(b"\nthreads\n");
    let out = fdbg_with_stdin(&["attach", &pid.to_string()], input);
    assert!(out.status.success(), "{out}");
    let errors: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(
        errors,
        [
            "fdbg: line is not valid UTF-8; it was not run".to_string(),
            format!("fdbg: unknown command '{}…' (try 'help')", "x".repeat(60)),
        ],
        "{out}"
    );
    assert!(out.stdout.contains("ptrace stops"), "stats ran\n{out}");
    assert!(
        out.stdout.contains(&format!("{pid:>8} {pid:>8}  ")),
        "threads ran after the bad lines\n{out}"
    );
    assert_untraced_and_running(pid, &out);
}

/// Lines that reach the terminal in one read — typed ahead, or pasted
/// with or without bracketed paste — each run, in order.
#[test]
#[serial]
fn lines_pasted_at_the_prompt_all_run() {
    let target = sleeper();
    let pid = target.pid();
    let home = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("paste_home");
    std::fs::create_dir_all(&home).expect("a HOME for the history file");
    let mut command = fdbg();
    command
        .args(["attach", &pid.to_string()])
        .env("HOME", &home)
        .env("TERM", "xterm");
    let mut p = rexpect::session::spawn_command(command, Some(PTY_TIMEOUT_MS))
        .expect("spawn fdbg on a pty");
    p.exp_string("(fdbg) ").expect("the prompt appears");
    // A bracketed paste of two lines, then Enter.
    p.send("\u{1b}[200~mark pasted\nstats\n\u{1b}[201~\r")
        .unwrap();
    p.flush().unwrap();
    // Only the answers have these texts (the echo shows the typed lines).
    p.exp_string("mark pasted at event #")
        .expect("the first pasted line ran");
    p.exp_string("ptrace stops")
        .expect("the second pasted line ran");
    p.exp_string("(fdbg) ").unwrap();
    // Two lines in one write, no paste brackets.
    p.send("threads\nquit\n").unwrap();
    p.flush().unwrap();
    p.exp_string("STATE  NAME").expect("threads ran");
    p.exp_eof().expect("quit, the second line, ended fdbg");
    assert_untraced_and_running(pid, &"fdbg on a pty");
}
