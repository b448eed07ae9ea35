//! `fdbg demo`: its --json output is NDJSON only, its client logs in before
//! the user's -e commands run, and its server never outlives fdbg nor
//! ignores SIGTERM.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::os::unix::process::ExitStatusExt;

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use serial_test::serial;

use crate::harness::{
    Interactive, Shape, TEST_LIMIT, Watchdog, fdbg, fdbg_batch, num, poll_until, state,
    status_field,
};
use crate::testprogs::ChildGuard;

/// A process that is not our child, SIGKILLed by its pid when dropped
/// unless it is gone (or a zombie) by then.
struct PidGuard(i32);

impl PidGuard {
    fn exited(&self) -> bool {
        matches!(state(self.0), None | Some('Z' | 'X'))
    }
}

impl Drop for PidGuard {
    fn drop(&mut self) {
        if !self.exited() {
            // SAFETY: kill(2) touches no memory.
            unsafe { libc::kill(self.0, libc::SIGKILL) };
        }
    }
}

/// The pid in fdbg's banner line "Attached to process PID (...".
fn banner_pid(banner: &str) -> i32 {
    banner
        .strip_prefix("Attached to process ")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no pid in banner {banner:?}"))
}

#[test]
#[serial]
fn demo_json_prints_only_json_documents() {
    let _watchdog = Watchdog::new("demo json", TEST_LIMIT);
    let finished = fdbg_batch(["demo", "--batch", "--json", "--logins", "3"]);
    finished.assert_success();
    for line in finished.stdout.lines() {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok(),
            "not a JSON document on stdout: {line:?}\n{finished}"
        );
    }
    let shapes: Vec<Option<Shape>> = finished.docs.iter().map(Shape::of).collect();
    assert_eq!(
        shapes,
        [Some(Shape::Stop), Some(Shape::Leaks), Some(Shape::Fds)],
        "{finished}"
    );
    let leaks = finished.first(Shape::Leaks);
    assert_eq!(num(leaks, "total"), 3, "{finished}");
    // The narration went to stderr.
    assert!(
        finished.stderr.contains("The demo login server (pid"),
        "{finished}"
    );
}

#[test]
#[serial]
fn demo_logins_happen_before_the_users_commands() {
    let _watchdog = Watchdog::new("demo logins", TEST_LIMIT);
    let finished = fdbg_batch(["demo", "--batch", "--json", "--logins", "2", "-e", "leaks"]);
    finished.assert_success();
    let leaks = finished.first(Shape::Leaks);
    assert_eq!(num(leaks, "total"), 2, "{finished}");
    let site = &leaks["sites"][0];
    assert_eq!(num(site, "count"), 2, "{finished}");
    assert_eq!(site["kind"], "socket", "{finished}");
    assert_eq!(
        site["frames"][0]["function"], "fdbg::demo::statsd_init",
        "{finished}"
    );
    // Only the one command asked for: no scripted first look after it.
    assert_eq!(finished.all(Shape::Leaks).len(), 1, "{finished}");
    assert!(finished.all(Shape::Fds).is_empty(), "{finished}");

    let text = fdbg_batch(["demo", "--batch", "--logins", "2", "-e", "leaks"]);
    text.assert_success();
    assert!(
        text.stdout.lines().any(|l| l.starts_with("process ")
            && l.contains(": 2 fds created since attach still open, from 1 site")),
        "{text}"
    );
}

#[test]
#[serial]
fn demo_server_dies_with_a_killed_fdbg_and_has_no_signal_blocked() {
    let _watchdog = Watchdog::new("demo orphan", TEST_LIMIT);
    let mut session = Interactive::start(["demo", "--logins", "1"]);
    let server = PidGuard(banner_pid(&session.wait_attached()));
    // The first look is done (its last report is printed): fdbg waits at
    // its prompt. (The harness strips the echo's "(fdbg) " prompt.)
    session.wait_prefix("fds --kind socket");
    session.wait_line("the fds report", |l| l.ends_with(" open fds"));
    assert_eq!(
        status_field(server.0, "SigBlk").as_deref(),
        Some("0000000000000000"),
        "the demo server runs with signals blocked\n{session}"
    );
    session.signal(libc::SIGKILL);
    let status = session.wait_exit();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{session}");
    poll_until(
        &format!("the orphaned demo server {} to exit", server.0),
        || server.exited(),
        || format!("server state {:?}\n{session}", state(server.0)),
    );
}

#[test]
#[serial]
fn demo_server_started_with_sigterm_blocked_obeys_sigterm() {
    let _watchdog = Watchdog::new("demo sigterm", TEST_LIMIT);
    let mut command = fdbg();
    command.arg("__demo-server");
    // SAFETY: the closure runs in the child between fork and exec and calls
    // only sigprocmask(2), which is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            // As fdbg hands its mask to the server it spawns.
            let mut blocked = SigSet::empty();
            for sig in [Signal::SIGHUP, Signal::SIGINT, Signal::SIGTERM] {
                blocked.add(sig);
            }
            nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&blocked), None)
                .map_err(std::io::Error::from)
        });
    }
    let mut server = ChildGuard::spawn(&mut command);
    let mut line = String::new();
    BufReader::new(server.0.stdout.take().expect("stdout piped"))
        .read_line(&mut line)
        .expect("reading the demo server's first line");
    assert!(line.starts_with("listening on port "), "{line:?}");
    // SAFETY: kill(2) touches no memory; the pid is our child, not reaped.
    unsafe { libc::kill(server.pid(), libc::SIGTERM) };
    let status = server.wait_exit();
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status}");
}
