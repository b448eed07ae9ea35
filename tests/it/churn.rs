//! Attach to processes whose threads and children exist and change:
//! threads that come and go all the time (every `continue DURATION`
//! returns, the counts add up exactly, the process runs on untraced after
//! each detach), and the workers a pre-forking server made before attach.

use serial_test::serial;

use std::collections::{BTreeMap, BTreeSet};

use crate::harness::{
    FdbgOutput, Interactive, Shape, TEST_LIMIT, Watchdog, assert_untraced_and_running, fd_numbers,
    fdbg_batch, num, num_set,
};
use crate::testprogs::{ChildGuard, open_fds, testprog};

/// How many attach-continue-detach cycles one run makes: each is a fresh
/// chance for a thread's exit to be seen before its creator's clone event.
const CYCLES: usize = 25;

fn counted(stats: &serde_json::Value, syscall: &str) -> i64 {
    stats["events"]
        .get(syscall)
        .and_then(|n| n.as_i64())
        .unwrap_or(0)
}

fn diff_doc(out: &FdbgOutput) -> &serde_json::Value {
    out.docs
        .iter()
        .find(|d| d.get("opened_and_closed").is_some())
        .unwrap_or_else(|| panic!("no diff document\n{out}"))
}

#[test]
#[serial]
fn attach_to_a_thread_churn_returns_every_time_with_exact_counts() {
    let _watchdog = Watchdog::new("thread_churn", TEST_LIMIT);
    let mut churn =
        ChildGuard::spawn(std::process::Command::new(testprog("thread_churn")).arg("8"));
    let pid = churn.pid();
    let mut output = churn.output();
    output.wait_for("start");
    for cycle in 0..CYCLES {
        // fdbg_batch fails the test if fdbg does not end within its limit.
        let out = fdbg_batch([
            "attach",
            &pid.to_string(),
            "--batch",
            "--json",
            "-e",
            "mark",
            "-e",
            "continue 200ms",
            "-e",
            "stats",
            "-e",
            "diff",
        ]);
        out.assert_success();
        assert_eq!(
            out.first(Shape::Stop)["stop"],
            "timeout",
            "cycle {cycle}\n{out}"
        );
        let stats = out.first(Shape::Stats);
        let (sockets, pipes, closes) = (
            counted(stats, "socket"),
            counted(stats, "pipe2"),
            counted(stats, "close"),
        );
        assert!(
            sockets > 0,
            "the threads ran while attached (cycle {cycle})\n{out}"
        );
        assert_eq!(
            num(stats, "adopted"),
            0,
            "model == /proc (cycle {cycle})\n{out}"
        );
        assert_eq!(
            num(stats, "dropped"),
            0,
            "model == /proc (cycle {cycle})\n{out}"
        );
        assert_eq!(num(stats, "bad_closes"), 0, "cycle {cycle}\n{out}");
        // Every close closed an fd made while attached, or one that was
        // open at attach; every fd made while attached is closed or open.
        let diff = diff_doc(&out);
        let still_open: i64 = diff["still_open"]
            .as_array()
            .expect("still_open")
            .iter()
            .map(|site| num(site, "count"))
            .sum();
        let closed_from_before = diff["closed_from_before"].as_array().expect("list").len() as i64;
        assert_eq!(
            closes,
            2 * pipes + sockets - still_open + closed_from_before,
            "close = 2·pipe2 + socket − still open + closed from before (cycle {cycle})\n{out}"
        );
        assert_eq!(
            num(diff, "opened_and_closed"),
            2 * pipes + sockets - still_open,
            "cycle {cycle}\n{out}"
        );
        assert_untraced_and_running(pid, &out);
    }
    // The main thread still joins its workers: a new round completes.
    output.wait_for("round");
}

/// A pre-forking server attached with --follow-forks: the workers that
/// existed before attach are traced too, each with its own table; without
/// the option the banner says they are not traced.
#[test]
#[serial]
fn attach_follow_forks_traces_the_children_that_exist_already() {
    let _watchdog = Watchdog::new("prefork", TEST_LIMIT);
    let mut server = ChildGuard::spawn(std::process::Command::new(testprog("prefork")).arg("2"));
    let pid = server.pid();
    let mut output = server.output();
    let workers: BTreeSet<i32> = (0..2)
        .map(|_| output.wait_for("child").num("pid") as i32)
        .collect();
    output.wait_for("workers");

    let plain = fdbg_batch(["attach", &pid.to_string(), "--batch", "-e", "threads"]);
    plain.assert_success();
    assert!(
        plain
            .stdout
            .contains("Its 2 child processes are not traced (--follow-forks traces them)"),
        "{plain}"
    );

    let mut fdbg = Interactive::start(["attach", &pid.to_string(), "--follow-forks"]);
    let banner = fdbg.wait_attached();
    let listed: Vec<String> = workers.iter().map(|w| w.to_string()).collect();
    assert!(
        banner.contains(&format!(
            "child processes {} are traced too",
            listed.join(", ")
        )),
        "{fdbg}"
    );
    // One byte per worker: each leaks one fd while traced.
    server.write_bytes(b"ab");
    fdbg.send("continue");
    let leaked: BTreeMap<i32, i32> = (0..2)
        .map(|_| {
            let line = output.wait_for("leak");
            (line.num("pid") as i32, line.fd())
        })
        .collect();
    assert_eq!(leaked.keys().copied().collect::<BTreeSet<_>>(), workers);
    fdbg.signal(libc::SIGINT);
    fdbg.wait_line("the stop after the interrupt", |l| l.contains("nterrupt"));
    fdbg.send("leaks --json");
    let leaks: Vec<serde_json::Value> = (0..3).map(|_| fdbg.wait_doc(Shape::Leaks)).collect();
    fdbg.send("fds --json");
    let fds: Vec<serde_json::Value> = (0..3).map(|_| fdbg.wait_doc(Shape::Fds)).collect();
    for worker in &workers {
        let of = |docs: &[serde_json::Value]| {
            docs.iter()
                .find(|d| num(d, "pid") == *worker as i64)
                .cloned()
                .unwrap_or_else(|| panic!("no report for worker {worker}\n{fdbg}"))
        };
        let leaks = of(&leaks);
        assert_eq!(num(&leaks, "total"), 1, "worker {worker}\n{fdbg}");
        assert_eq!(
            num_set(&leaks["sites"][0]["fds"]),
            BTreeSet::from([leaked[worker]]),
            "worker {worker}\n{fdbg}"
        );
        assert_eq!(
            fd_numbers(&of(&fds)),
            open_fds(*worker).into_keys().collect::<BTreeSet<_>>(),
            "fds of worker {worker} vs /proc\n{fdbg}"
        );
    }
    fdbg.send("quit");
    assert!(fdbg.wait_exit().success(), "{fdbg}");
    assert_untraced_and_running(pid, &fdbg);
    for worker in &workers {
        assert_untraced_and_running(*worker, &fdbg);
    }
    // The workers first, by pid: their parent reaps them and then ends.
    for worker in &workers {
        // SAFETY: kill(2) reads no memory; the workers are this test's.
        unsafe { libc::kill(*worker, libc::SIGKILL) };
    }
    assert!(server.wait_exit().success());
}
