//! `fdbg run --batch --json` on the testprogs: what fdbg reports agrees with
//! what each program says it did (its EXPECT lines), and with the kernel.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use serial_test::serial;

use crate::harness::{
    FdbgOutput, Interactive, Shape, TEST_LIMIT, Watchdog, docs_of, fd_numbers, fdbg_batch, num,
    num_set, status_field,
};
use crate::testprogs::{Expect, all, one, testprog};

/// `fdbg run --batch --json -e CMD... -- PROGRAM ARGS`.
fn run_json(commands: &[&str], program: &str, args: &[&str]) -> FdbgOutput {
    run_with(&["--json"], commands, program, args)
}

fn run_with(options: &[&str], commands: &[&str], program: &str, args: &[&str]) -> FdbgOutput {
    let path = testprog(program);
    let mut argv: Vec<String> = vec!["run".into(), "--batch".into()];
    argv.extend(options.iter().map(|s| s.to_string()));
    for command in commands {
        argv.push("-e".into());
        argv.push(command.to_string());
    }
    argv.push("--".into());
    argv.push(path.to_string_lossy().into_owned());
    argv.extend(args.iter().map(|s| s.to_string()));
    fdbg_batch(argv)
}

/// The one Leaks document about process `pid`.
fn leaks_of(out: &FdbgOutput, pid: i64) -> &Value {
    out.all(Shape::Leaks)
        .into_iter()
        .find(|d| num(d, "pid") == pid)
        .unwrap_or_else(|| panic!("no leaks report for pid {pid}\n{out}"))
}

/// The pid the program printed in its `start` line.
fn started_pid(lines: &[Expect], out: &FdbgOutput) -> i64 {
    assert!(!all(lines, "start").is_empty(), "no EXPECT start\n{out}");
    one(lines, "start").num("pid")
}

/// The stop document says the program exited with status 0.
fn assert_exited_0(out: &FdbgOutput) {
    let stop = out.first(Shape::Stop);
    assert_eq!(stop["stop"], "exited", "{out}");
    assert_eq!(stop["exit_code"], 0, "{out}");
}

#[test]
#[serial]
fn run_leak3_reports_three_sites_and_one_bad_close() {
    let _watchdog = Watchdog::new("run_leak3", TEST_LIMIT);
    let out = run_json(&["continue", "leaks", "stats"], "leak3", &[]);
    out.assert_success();
    assert_exited_0(&out);
    let lines = out.expect_lines();
    let pid = started_pid(&lines, &out);

    let leaks = leaks_of(&out, pid);
    assert_eq!(num(leaks, "total"), 3, "{out}");
    let sites = leaks["sites"].as_array().expect("sites");
    assert_eq!(sites.len(), 3, "three sites\n{out}");
    // Each EXPECT leak line is one site of its own: same syscall, same fd.
    let expected: BTreeMap<String, BTreeSet<i32>> = all(&lines, "leak")
        .iter()
        .map(|l| (l.field("syscall").to_string(), BTreeSet::from([l.fd()])))
        .collect();
    let reported: BTreeMap<String, BTreeSet<i32>> = sites
        .iter()
        .map(|site| {
            assert_eq!(num(site, "count"), 1, "{site}");
            (
                site["syscall"].as_str().expect("syscall").to_string(),
                num_set(&site["fds"]),
            )
        })
        .collect();
    assert_eq!(
        expected.keys().collect::<Vec<_>>(),
        ["eventfd2", "openat", "socket"],
        "leak3's own lines"
    );
    assert_eq!(reported, expected, "{out}");

    // So the fds leak3 opened and closed again (a unix socket, the config
    // file it wrote, the double-closed /dev/null) are in no site: each would
    // be a site of its own, or raise a count above 1.
    assert_eq!(
        all(&lines, "open").len(),
        3,
        "leak3 opens and closes three fds"
    );
    let stats = out.first(Shape::Stats);
    assert_eq!(num(stats, "bad_closes"), 1, "{out}");
    assert_eq!(
        (num(stats, "adopted"), num(stats, "dropped")),
        (0, 0),
        "{out}"
    );
}

#[test]
#[serial]
fn run_nonfd_loop_makes_no_stop_per_non_fd_syscall() {
    let _watchdog = Watchdog::new("run_nonfd_loop", TEST_LIMIT);
    let out = run_json(&["continue", "stats"], "nonfd_loop", &["100000"]);
    out.assert_success();
    assert_exited_0(&out);
    let lines = out.expect_lines();
    let done = one(&lines, "done");
    assert_eq!(done.num("syscalls"), 100_000, "{out}");

    let stats = out.first(Shape::Stats);
    let events: i64 = stats["events"]
        .as_object()
        .expect("events")
        .values()
        .map(|n| n.as_i64().unwrap())
        .sum();
    // Only fd syscalls stop: the loader's opens (many failing ones when
    // LD_LIBRARY_PATH is long, as under cargo), execve and the program's
    // one open+close; none of the 100,000 getppid calls.
    assert_eq!(
        num(stats, "syscalls_seen"),
        num(stats, "total_events"),
        "a syscall that is no fd event was seen\n{out}"
    );
    assert_eq!(num(stats, "syscalls_seen"), events, "{out}");
    assert!(
        num(stats, "stops") <= 2 * events + 10,
        "more than two stops per fd event\n{out}"
    );
    assert!(
        num(stats, "stops") < 1000,
        "stops: the getppid calls caused stops\n{out}"
    );
}

/// One fact about an fd that both an EXPECT line and an fdbg event can state.
type Fact = (&'static str, String, i32);

fn expect_facts(lines: &[Expect]) -> Vec<(Fact, String)> {
    lines
        .iter()
        .filter_map(|l| {
            let what: &'static str = match l.what.as_str() {
                "open" | "leak" => "created",
                "close" => "closed",
                "implicit_close" => "implicitly closed",
                "badclose" => "bad close",
                _ => return None,
            };
            Some((
                (what, l.field("syscall").to_string(), l.fd()),
                l.line.clone(),
            ))
        })
        .collect()
}

fn event_facts(events: &[&Value]) -> BTreeMap<Fact, usize> {
    let mut facts = BTreeMap::new();
    for event in events {
        let syscall = event["syscall"].as_str().expect("syscall").to_string();
        for fd in num_set(&event["fds"]) {
            *facts.entry(("created", syscall.clone(), fd)).or_default() += 1;
        }
        let closed_as = if syscall.starts_with("dup") {
            "implicitly closed"
        } else {
            "closed"
        };
        for fd in num_set(&event["closed"]) {
            *facts.entry((closed_as, syscall.clone(), fd)).or_default() += 1;
        }
        if event["bad_close"] == true {
            let fd = event["args"]
                .as_str()
                .and_then(|a| a.trim().parse().ok())
                .unwrap_or(-1);
            *facts.entry(("bad close", syscall.clone(), fd)).or_default() += 1;
        }
    }
    facts
}

#[test]
#[serial]
fn run_fd_zoo_every_expect_line_is_an_fdbg_event_and_fds_at_exit_match() {
    let _watchdog = Watchdog::new("run_fd_zoo", TEST_LIMIT);
    // `step` with a count larger than the program's events prints every
    // event, then the stop at exit.
    let out = run_json(&["step 100000", "fds", "stats"], "fd_zoo", &[]);
    out.assert_success();
    let lines = out.expect_lines();
    let pid = started_pid(&lines, &out);
    let stop = out.first(Shape::Stop);
    assert_eq!(stop["stop"], "exited", "{out}");

    let events: Vec<&Value> = out
        .all(Shape::Event)
        .into_iter()
        .filter(|e| num(e, "pid") == pid)
        .collect();
    let mut facts = event_facts(&events);
    let mut wrong = Vec::new();
    for (fact, line) in expect_facts(&lines) {
        match facts.get_mut(&fact) {
            Some(n) if *n > 0 => *n -= 1,
            _ => wrong.push(format!(
                "{line}\n    fdbg has no event: {} {} fd {}",
                fact.1, fact.0, fact.2
            )),
        }
    }
    assert!(
        wrong.is_empty(),
        "fdbg's events miss what fd_zoo did:\n{}\n{out}",
        wrong.join("\n")
    );

    // The exec sweep closed exactly the close-on-exec fds (setfd lines included).
    let exec = events
        .iter()
        .find(|e| e["syscall"] == "execve")
        .unwrap_or_else(|| panic!("no execve event\n{out}"));
    assert_eq!(
        num_set(&exec["closed"]),
        one(&lines, "cloexec").list("fds"),
        "execve closed other fds than the close-on-exec ones\n{out}"
    );

    let fds = out
        .all(Shape::Fds)
        .into_iter()
        .find(|d| num(d, "pid") == pid)
        .unwrap_or_else(|| panic!("no fds report\n{out}"));
    assert_eq!(fds["exited"], true, "{out}");
    assert_eq!(
        fd_numbers(fds),
        one(&lines, "after_exec").list("open"),
        "fds at exit differ from fd_zoo's own list\n{out}"
    );
    let stats = out.first(Shape::Stats);
    assert_eq!(num(stats, "bad_closes"), 1, "{out}");
    assert_eq!(
        (num(stats, "adopted"), num(stats, "dropped")),
        (0, 0),
        "the model needed /proc to correct it\n{out}"
    );
}

#[test]
#[serial]
fn run_threads_reports_exactly_t_times_l_leaks() {
    let _watchdog = Watchdog::new("run_threads", TEST_LIMIT);
    let (threads, leaks_per_thread) = (4, 2);
    let out = run_json(
        &["continue", "leaks", "stats"],
        "threads",
        &["4", "200", "2"],
    );
    out.assert_success();
    assert_exited_0(&out);
    let lines = out.expect_lines();
    let pid = started_pid(&lines, &out);
    let leaks = leaks_of(&out, pid);
    assert_eq!(
        num(leaks, "total"),
        threads * leaks_per_thread,
        "false or missed leaks\n{out}"
    );
    let reported: BTreeSet<i32> = leaks["sites"]
        .as_array()
        .expect("sites")
        .iter()
        .flat_map(|site| num_set(&site["fds"]))
        .collect();
    let expected: BTreeSet<i32> = all(&lines, "leak").iter().map(|l| l.fd()).collect();
    assert_eq!(reported, expected, "{out}");
    let stats = out.first(Shape::Stats);
    assert_eq!(num(stats, "bad_closes"), 0, "{out}");
}

/// Threads close and reopen the same fd numbers concurrently: the kernel
/// frees an fd during close, before that thread's syscall-exit stop, so
/// another thread's open can return the number first. The model must not
/// need /proc to set that right.
#[test]
#[serial]
fn run_threads_model_needs_no_proc_correction() {
    let _watchdog = Watchdog::new("run_threads_model", TEST_LIMIT);
    let out = run_json(
        &["continue", "leaks", "stats"],
        "threads",
        &["4", "1000", "2"],
    );
    out.assert_success();
    let lines = out.expect_lines();
    let leaks = leaks_of(&out, started_pid(&lines, &out));
    // Every leak keeps its creating syscall (not "untracked", adopted from /proc).
    let syscalls: BTreeSet<&str> = leaks["sites"]
        .as_array()
        .expect("sites")
        .iter()
        .map(|s| s["syscall"].as_str().unwrap())
        .collect();
    assert_eq!(syscalls, BTreeSet::from(["openat", "socket"]), "{out}");
    let stats = out.first(Shape::Stats);
    assert_eq!(
        (num(stats, "adopted"), num(stats, "dropped")),
        (0, 0),
        "the model needed /proc to correct it\n{out}"
    );
}

/// forks run under fdbg as it runs untraced.
fn assert_forks_behaved(out: &FdbgOutput) -> Vec<Expect> {
    out.assert_success();
    let lines = out.expect_lines();
    let children = all(&lines, "child");
    let kinds: Vec<&str> = children.iter().map(|c| c.field("kind")).collect();
    assert_eq!(kinds, ["fork", "vfork"], "{out}");
    assert!(
        children.iter().all(|c| c.field("status") == "0"),
        "a child failed under fdbg\n{out}"
    );
    let echoed: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.ends_with("-echo"))
        .collect();
    assert_eq!(echoed, ["child-echo", "vfork-echo"], "{out}");
    assert_eq!(one(&lines, "done").num("leaks"), 1, "{out}");
    lines
}

#[test]
#[serial]
fn run_forks_children_behave_as_untraced_and_the_parent_leak_is_reported() {
    let _watchdog = Watchdog::new("run_forks", TEST_LIMIT);
    let text = run_with(&[], &["continue"], "forks", &[]);
    assert_forks_behaved(&text);

    let out = run_json(&["continue", "leaks"], "forks", &[]);
    let lines = assert_forks_behaved(&out);
    assert_exited_0(&out);
    let parent = started_pid(&lines, &out);
    let leaks = leaks_of(&out, parent);
    assert_eq!(num(leaks, "total"), 1, "{out}");
    let site = &leaks["sites"][0];
    assert_eq!(site["syscall"], "openat", "{out}");
    assert_eq!(
        num_set(&site["fds"]),
        BTreeSet::from([one(&lines, "leak").fd()]),
        "{out}"
    );
    assert_eq!(
        out.all(Shape::Leaks).len(),
        1,
        "without --follow-forks only the started process is reported\n{out}"
    );
}

#[test]
#[serial]
fn run_forks_with_follow_forks_reports_the_children_as_processes() {
    let _watchdog = Watchdog::new("run_forks_follow", TEST_LIMIT);
    let out = run_with(
        &["--json", "--follow-forks"],
        &["continue", "leaks", "fds"],
        "forks",
        &[],
    );
    let lines = assert_forks_behaved(&out);
    let parent = started_pid(&lines, &out);
    let mut expected: BTreeSet<i64> = all(&lines, "child").iter().map(|c| c.num("pid")).collect();
    expected.insert(parent);
    for shape in [Shape::Leaks, Shape::Fds] {
        let pids: BTreeSet<i64> = out.all(shape).iter().map(|d| num(d, "pid")).collect();
        assert_eq!(pids, expected, "{shape:?} reports per process\n{out}");
    }
    assert_eq!(num(leaks_of(&out, parent), "total"), 1, "{out}");
    // The forked child closed its inherited copies and its own file, then
    // exec'd echo: fds 3 and 4 are not open in it at exit.
    let fork_child = all(&lines, "child")[0].num("pid");
    let child_fds = out
        .all(Shape::Fds)
        .into_iter()
        .find(|d| num(d, "pid") == fork_child)
        .unwrap();
    let open = fd_numbers(child_fds);
    assert!(
        !open.contains(&3) && !open.contains(&4),
        "the fork child closed its copies of 3 and 4\n{out}"
    );
}

/// Regression (exec by a thread other than the main one hung the process
/// and fdbg): the exec'ing thread takes over the process id, the others
/// vanish; the run goes to its end, the exec closes the close-on-exec fd
/// and keeps the other.
#[test]
#[serial]
fn run_exec_from_a_non_main_thread_runs_to_the_end() {
    let _watchdog = Watchdog::new("thread_exec", TEST_LIMIT);
    let out = run_json(&["continue", "fds", "stats"], "thread_exec", &[]);
    out.assert_success();
    assert_exited_0(&out);
    let lines = out.expect_lines();
    let kept = one(&lines, "leak").fd();
    let closed = one(&lines, "open").fd();
    let fds = fd_numbers(out.first(Shape::Fds));
    assert!(
        fds.contains(&kept),
        "the fd without O_CLOEXEC survives the exec\n{out}"
    );
    assert!(
        !fds.contains(&closed),
        "the O_CLOEXEC fd is closed by the exec\n{out}"
    );
    assert_eq!(
        num(&out.first(Shape::Stats)["events"], "execve"),
        1,
        "{out}"
    );
}

/// Under `run --batch`, fdbg's exit status is the program's; a resume after
/// the program ended is an error (the records still answer).
#[test]
#[serial]
fn run_exits_with_the_programs_status() {
    let _watchdog = Watchdog::new("run_status", TEST_LIMIT);
    let out = fdbg_batch([
        "run", "--batch", "-e", "continue", "--", "/bin/sh", "-c", "exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3), "{out}");
    let out = fdbg_batch([
        "run",
        "--batch",
        "-e",
        "continue",
        "-e",
        "continue",
        "-e",
        "fds",
        "--",
        "/bin/true",
    ]);
    assert_eq!(out.status.code(), Some(1), "{out}");
    assert!(out.stderr.contains("is not running any more"), "{out}");
    assert!(out.stdout.contains("open fds at exit"), "{out}");
}

/// fdbg's peak resident memory (VmHWM), in kB.
fn peak_kb(pid: i32) -> i64 {
    let field = status_field(pid, "VmHWM").expect("VmHWM of fdbg");
    field
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("VmHWM {field:?}: {e}"))
}

/// `fds` over 15,000 fds from one call site, as text and as JSON, costs
/// fdbg little memory beyond what `leaks` (which symbolizes the same stack)
/// did: the entries share one list of frames and are written out row by
/// row. Built whole with a copy of the frames per fd, the two reports took
/// about 2.6 kB per fd.
#[test]
#[serial]
fn fds_over_many_fds_from_one_site_cost_little_memory() {
    const FDS: usize = 15_000;
    /// Bytes of peak memory one listed fd may add.
    const PER_FD: i64 = 400;
    let _watchdog = Watchdog::new("fds_memory", TEST_LIMIT);
    let program = testprog("many_fds");
    let mut fdbg = Interactive::start([
        "run".as_ref(),
        "--follow-forks".as_ref(),
        "--".as_ref(),
        program.as_os_str(),
        FDS.to_string().as_ref(),
    ]);
    fdbg.wait_prefix("Started process");
    fdbg.send("continue --json");
    assert_eq!(fdbg.wait_doc(Shape::Stop)["stop"], "exited", "{fdbg}");
    fdbg.send("leaks --json");
    let mut leaked = 0;
    while leaked < FDS as i64 {
        leaked += num(&fdbg.wait_doc(Shape::Leaks), "total");
    }
    assert_eq!(leaked, FDS as i64, "{fdbg}");
    let after_leaks = peak_kb(fdbg.pid());

    fdbg.send("fds");
    fdbg.send("fds --json");
    fdbg.send("mark reported");
    fdbg.wait_prefix("mark reported at event");
    let after_fds = peak_kb(fdbg.pid());
    let fds_docs = fdbg.docs();
    let listed: usize = docs_of(&fds_docs, Shape::Fds)
        .iter()
        .map(|doc| fd_numbers(doc).len())
        .sum();
    fdbg.send("quit");
    let status = fdbg.wait_exit();
    assert!(status.success(), "fdbg: {status:?}\n{}", fdbg.stderr());
    assert!(listed >= FDS, "fds listed {listed} fds");
    let grown = (after_fds - after_leaks) * 1024;
    assert!(
        grown < FDS as i64 * PER_FD,
        "fds over {FDS} fds raised fdbg's peak memory by {grown} bytes ({} per fd): \
         from {after_leaks} kB to {after_fds} kB",
        grown / FDS as i64
    );
}

/// Under run, the fds the program began with (stdin, stdout, stderr) were
/// inherited, not open "before attach": in JSON and in text.
#[test]
#[serial]
fn run_calls_the_fds_a_program_began_with_inherited() {
    let _watchdog = Watchdog::new("run_inherited", TEST_LIMIT);
    let out = run_json(&["fds", "continue"], "leak3", &[]);
    out.assert_success();
    let fds = out.first(Shape::Fds);
    let entries = fds["fds"].as_array().expect("fds");
    for fd in 0..3 {
        let entry = entries
            .iter()
            .find(|e| e["fd"] == fd)
            .unwrap_or_else(|| panic!("no fd {fd}\n{out}"));
        assert_eq!(entry["origin"], "inherited", "{out}");
        assert_eq!(entry["seq"], Value::Null, "{out}");
    }
    assert!(
        entries.iter().all(|e| e["origin"] == "inherited"),
        "nothing was created before the first instruction\n{out}"
    );

    let text = run_with(&[], &["fds"], "leak3", &[]);
    text.assert_success();
    let rows: Vec<&str> = text
        .stdout
        .lines()
        .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
        .collect();
    assert!(rows.len() >= 3, "{text}");
    for row in rows {
        assert!(row.ends_with(" inherited"), "{row:?}\n{text}");
    }
}
