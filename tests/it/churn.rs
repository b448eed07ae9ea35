//! Attach to a process whose threads come and go all the time: every
//! `continue DURATION` returns, the counts add up exactly, and the process
//! runs on untraced after each detach.

use serial_test::serial;

use crate::harness::{
    FdbgOutput, Shape, TEST_LIMIT, Watchdog, assert_untraced_and_running, fdbg_batch, num,
};
use crate::testprogs::{ChildGuard, testprog};

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
