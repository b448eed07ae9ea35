//! The test programs, run untraced: what their EXPECT lines claim holds
//! against the kernel (/proc/PID/fd, /proc/net/tcp, exit statuses). Tests of
//! fdbg compare its reports with these same lines, so the lines must be true.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use serial_test::serial;

use crate::testprogs::{
    ChildGuard, Expect, TIMEOUT, all, one, open_fds, run, source_line, testprog,
};

/// Every line naming a site points at a source line that makes that syscall
/// ("eventfd2" is made by `eventfd(`, "close" by `CLOSE(`; case does not matter).
fn assert_sites_match_source(lines: &[Expect]) {
    for line in lines.iter().filter(|l| l.get("site").is_some()) {
        let syscall = line
            .field("syscall")
            .trim_end_matches(|c: char| c.is_ascii_digit());
        let source = source_line(line.field("site")).to_lowercase();
        assert!(
            source.contains(syscall),
            "`{}` points at `{source}`, which does not call {syscall}",
            line.line
        );
    }
}

/// Replays open/leak and close/implicit_close lines over `start`.
fn replay(start: &BTreeSet<i32>, lines: &[Expect]) -> BTreeSet<i32> {
    let mut open = start.clone();
    for line in lines {
        match line.what.as_str() {
            "open" | "leak" => assert!(open.insert(line.fd()), "fd already open: {}", line.line),
            "close" | "implicit_close" => {
                assert!(open.remove(&line.fd()), "fd not open: {}", line.line)
            }
            _ => {}
        }
    }
    open
}

#[test]
#[serial]
fn leak3_leaves_exactly_its_three_leaks_open() {
    let mut child = ChildGuard::spawn(Command::new(testprog("leak3")).args(["--wait", "--hold"]));
    let mut output = child.output();
    let ready = output.wait_for("ready");
    assert_eq!(ready.num("pid"), child.pid() as i64);
    let inherited: BTreeSet<i32> = open_fds(child.pid()).into_keys().collect();
    child.send_line();
    output.wait_for("hold");

    let lines = output.expect_lines();
    assert_sites_match_source(&lines);
    let leaks = all(&lines, "leak");
    let functions: BTreeSet<&str> = leaks.iter().map(|l| l.field("fn")).collect();
    let syscalls: BTreeSet<&str> = leaks.iter().map(|l| l.field("syscall")).collect();
    assert_eq!(
        functions,
        BTreeSet::from(["open_config", "connect_metrics", "make_notifier"])
    );
    assert_eq!(syscalls, BTreeSet::from(["openat", "socket", "eventfd2"]));
    assert_eq!(one(&lines, "badclose").field("fn"), "close_twice");
    assert_eq!(one(&lines, "done").num("leaks"), 3);

    let now_open: BTreeSet<i32> = open_fds(child.pid()).into_keys().collect();
    let leaked: BTreeSet<i32> = leaks.iter().map(|l| l.fd()).collect();
    assert_eq!(now_open, inherited.union(&leaked).copied().collect());
    assert_eq!(replay(&inherited, &lines), now_open);

    child.send_line();
    assert!(child.wait_exit().success());
}

#[test]
#[serial]
fn fd_zoo_covers_every_fd_syscall_and_exec_closes_the_cloexec_ones() {
    let finished = run(&mut Command::new(testprog("fd_zoo")));
    finished.assert_success();
    let lines = &finished.lines;
    assert_sites_match_source(lines);

    let before_exec = lines
        .iter()
        .position(|l| l.what == "before_exec")
        .expect("before_exec");
    let inherited = one(lines, "inherited").list("open");
    let in_order = &lines[lines.iter().position(|l| l.what == "inherited").unwrap()..before_exec];
    let before = lines[before_exec].list("open");
    assert_eq!(replay(&inherited, in_order), before, "{finished}");

    let cloexec = one(lines, "cloexec").list("fds");
    let after = one(lines, "after_exec").list("open");
    assert_eq!(
        after,
        before.difference(&cloexec).copied().collect(),
        "{finished}"
    );

    let covered: BTreeSet<&str> = lines
        .iter()
        .filter(|l| matches!(l.what.as_str(), "open" | "skip"))
        .map(|l| l.field("syscall"))
        .collect();
    for syscall in [
        "socket",
        "socketpair",
        "accept",
        "accept4",
        "open",
        "openat",
        "openat2",
        "creat",
        "open_by_handle_at",
        "pipe",
        "pipe2",
        "dup",
        "dup2",
        "dup3",
        "fcntl",
        "eventfd",
        "eventfd2",
        "epoll_create",
        "epoll_create1",
        "timerfd_create",
        "signalfd",
        "signalfd4",
        "inotify_init",
        "inotify_init1",
        "fanotify_init",
        "memfd_create",
        "pidfd_open",
        "pidfd_getfd",
        "userfaultfd",
        "perf_event_open",
        "io_uring_setup",
        "recvmsg",
        "recvmmsg",
    ] {
        assert!(
            covered.contains(syscall),
            "fd_zoo never made {syscall}\n{finished}"
        );
    }
    let closed_by: BTreeSet<&str> = all(lines, "close")
        .iter()
        .map(|l| l.field("syscall"))
        .collect();
    assert_eq!(closed_by, BTreeSet::from(["close", "close_range"]));
    assert_eq!(one(lines, "badclose").field("syscall"), "close");
    assert_eq!(one(lines, "implicit_close").field("syscall"), "dup2");
}

fn login_server_leaks_one_socket_per_login(program: &str) {
    let mut server = ChildGuard::spawn(Command::new(testprog(program)).arg("0"));
    let mut output = server.output();
    let port = output.wait_for("listen").num("port").to_string();

    let logins = 5;
    let client = run(Command::new(testprog("login_client")).args([&port, &logins.to_string()]));
    client.assert_success();
    assert_eq!(all(&client.lines, "login").len(), logins);

    let leaks: Vec<Expect> = (0..logins).map(|_| output.wait_for("leak")).collect();
    let fds: BTreeSet<i32> = leaks.iter().map(Expect::fd).collect();
    assert_eq!(fds.len(), logins, "leaked fds are never reused");
    for leak in &leaks {
        assert_eq!(leak.field("fn"), "statsd_init");
        assert_eq!(leak.field("syscall"), "socket");
        assert!(source_line(leak.field("site")).contains("socket(AF_INET, SOCK_DGRAM, 0)"));
    }
    assert_sites_match_source(&output.expect_lines());
    let sockets = open_fds(server.pid())
        .into_values()
        .filter(|t| t.starts_with("socket:"))
        .count();
    assert_eq!(sockets, 1 + logins, "the listener and the leaks");

    let quit = run(Command::new(testprog("login_client")).args([&port, "0", "--quit"]));
    quit.assert_success();
    assert!(server.wait_exit().success());
}

#[test]
#[serial]
fn login_server_leaks_one_socket_per_login_o0() {
    login_server_leaks_one_socket_per_login("login_server");
}

#[test]
#[serial]
fn login_server_leaks_one_socket_per_login_o2() {
    login_server_leaks_one_socket_per_login("login_server_o2");
}

#[test]
#[serial]
fn login_server_with_statsd_configured_leaks_nothing() {
    let mut command = Command::new(testprog("login_server"));
    command.env("STATSD_HOST", "127.0.0.1");
    let mut server = ChildGuard::spawn(&mut command);
    let mut output = server.output();
    let port = output.wait_for("listen").num("port").to_string();
    run(Command::new(testprog("login_client")).args([&port, "3", "--quit"])).assert_success();
    output.wait_for("done");
    assert!(server.wait_exit().success());

    let lines = output.expect_lines();
    assert!(all(&lines, "leak").is_empty(), "{:#?}", lines);
    let statsd_closes = all(&lines, "close")
        .iter()
        .filter(|l| l.field("fn") == "statsd_close")
        .count();
    assert_eq!(statsd_closes, 3);
}

#[test]
#[serial]
fn threads_leak_exactly_l_fds_each() {
    let finished = run(Command::new(testprog("threads")).args(["4", "200", "2"]));
    finished.assert_success();
    let leaks = all(&finished.lines, "leak");
    assert_eq!(one(&finished.lines, "done").num("leaks"), 8);
    assert_eq!(leaks.len(), 8);
    assert_eq!(
        leaks.iter().map(|l| l.fd()).collect::<BTreeSet<_>>().len(),
        8
    );
    let mut per_thread: BTreeMap<&str, usize> = BTreeMap::new();
    for leak in &leaks {
        *per_thread.entry(leak.field("tid")).or_default() += 1;
    }
    assert_eq!(per_thread.into_values().collect::<Vec<_>>(), vec![2; 4]);
    assert_sites_match_source(&finished.lines);
}

#[test]
#[serial]
fn forks_children_exit_0_and_the_parent_leaks_one() {
    let finished = run(&mut Command::new(testprog("forks")));
    finished.assert_success();
    let lines = &finished.lines;
    let parent = one(lines, "start").field("pid");
    let children = all(lines, "child");
    let kinds: Vec<&str> = children.iter().map(|c| c.field("kind")).collect();
    assert_eq!(kinds, ["fork", "vfork"]);
    assert!(
        children.iter().all(|c| c.field("status") == "0"),
        "{finished}"
    );
    assert!(
        finished.stdout.contains("\nchild-echo\n") && finished.stdout.contains("\nvfork-echo\n")
    );
    assert_eq!(one(lines, "leak").field("pid"), parent);
    let child_pid = children[0].field("pid");
    let child_closes = all(lines, "close")
        .iter()
        .filter(|l| l.field("pid") == child_pid)
        .count();
    assert_eq!(child_closes, 3, "two inherited copies and its own file");
    assert_sites_match_source(lines);
}

#[test]
#[serial]
fn nonfd_loop_counts() {
    let finished = run(Command::new(testprog("nonfd_loop")).arg("1000"));
    finished.assert_success();
    let done = one(&finished.lines, "done");
    assert_eq!((done.num("syscalls"), done.num("fd_events")), (1000, 2));
}

#[test]
#[serial]
fn bench_counts() {
    let finished = run(Command::new(testprog("bench")).arg("1000"));
    finished.assert_success();
    let done = one(&finished.lines, "done");
    assert_eq!(
        (
            done.num("iter"),
            done.num("fd_events"),
            done.num("other_syscalls")
        ),
        (1000, 2000, 8000)
    );
}

/// Sockets of /proc/net/tcp in CLOSE_WAIT (state 08) with this local port.
fn close_wait_count(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    table
        .lines()
        .skip(1)
        .filter(|row| {
            let columns: Vec<&str> = row.split_whitespace().collect();
            columns[1].ends_with(&format!(":{port:04X}")) && columns[3] == "08"
        })
        .count()
}

#[test]
#[serial]
fn closewait_server_keeps_closed_connections_in_close_wait() {
    let mut server = ChildGuard::spawn(&mut Command::new(testprog("closewait_server")));
    let mut output = server.output();
    let port = output.wait_for("listen").num("port");
    run(Command::new(testprog("closewait_client")).args([&port.to_string(), "3"])).assert_success();
    for _ in 0..3 {
        assert_eq!(output.wait_for("leak").field("syscall"), "accept");
    }
    let deadline = Instant::now() + TIMEOUT;
    while close_wait_count(port as u16) < 3 {
        assert!(
            Instant::now() < deadline,
            "no 3 CLOSE_WAIT sockets on port {port}"
        );
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(close_wait_count(port as u16), 3);
}
