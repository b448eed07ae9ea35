//! A real multi-threaded server from Debian, memcached -t 4: attached while
//! a client opens and closes 60 connections, fdbg finds no leak and its
//! `fds` equals /proc/PID/fd. Needs `apt-get install memcached` (.ci/run);
//! skipped without it, except under CI=true.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::Command;

use serial_test::serial;

use crate::harness::{
    Interactive, Shape, TEST_LIMIT, Watchdog, assert_untraced_and_running, fd_numbers, num,
    poll_until, required_program, tracer_process,
};
use crate::testprogs::{ChildGuard, open_fds};

const MEMCACHED: &str = "/usr/bin/memcached";

/// One connection: `version`, its answer, close.
fn version(port: u16) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(crate::testprogs::TIMEOUT))?;
    stream.write_all(b"version\r\n")?;
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer)?;
    Ok(answer)
}

/// Memcached's fds that hold a TCP connection (a socket in
/// /proc/PID/net/tcp in any state but LISTEN).
fn connections(pid: i32) -> usize {
    let tcp = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap_or_default();
    let connected: BTreeSet<String> = tcp
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 9 && f[3] != "0A").then(|| format!("socket:[{}]", f[9]))
        })
        .collect();
    open_fds(pid)
        .values()
        .filter(|t| connected.contains(*t))
        .count()
}

fn sockets(pid: i32) -> usize {
    open_fds(pid)
        .values()
        .filter(|t| t.starts_with("socket:"))
        .count()
}

#[test]
#[serial]
fn attach_memcached_60_connections_no_false_leaks_and_fds_equal_proc() {
    let _watchdog = Watchdog::new("memcached", TEST_LIMIT);
    let Some(memcached) = required_program(MEMCACHED, "memcached") else {
        return;
    };
    let port = crate::harness::free_port();
    let mut command = Command::new(memcached);
    command.args([
        "-u",
        "root",
        "-l",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-t",
        "4",
        "-U",
        "0",
    ]);
    let server = ChildGuard::spawn(&mut command);
    let pid = server.pid();
    poll_until(
        &format!("memcached to answer on port {port}"),
        || version(port).is_ok_and(|a| a.starts_with("VERSION")),
        || format!("memcached pid {pid}"),
    );
    // Its own idle sockets (listeners, notify pipes are not sockets),
    // counted once it has closed its end of the readiness probe.
    poll_until(
        "memcached to close the readiness probe",
        || connections(pid) == 0,
        || format!("memcached pid {pid}: {} connections", connections(pid)),
    );
    let baseline = sockets(pid);

    let mut fdbg = Interactive::start(["attach", &pid.to_string()]);
    let banner = fdbg.wait_attached();
    assert!(
        banner.contains("threads"),
        "memcached -t 4 is multi-threaded\n{fdbg}"
    );
    fdbg.send("continue");
    for k in 0..60 {
        let answer = version(port).unwrap_or_else(|e| panic!("connection {k}: {e}\n{fdbg}"));
        assert!(
            answer.starts_with("VERSION"),
            "connection {k}: {answer:?}\n{fdbg}"
        );
    }
    assert_eq!(tracer_process(pid), Some(fdbg.pid()), "{fdbg}");
    // memcached closes its ends asynchronously, on its worker threads.
    poll_until(
        "memcached to close its ends of the 60 connections",
        || connections(pid) == 0 && sockets(pid) == baseline,
        || format!("{} sockets, baseline {baseline}\n{fdbg}", sockets(pid)),
    );
    fdbg.signal(libc::SIGINT); // Ctrl-C: every thread stops, back to the prompt
    fdbg.wait_line("the interrupt", |l| l.starts_with("Interrupted"));
    fdbg.send("leaks --json");
    let leaks = fdbg.wait_doc(Shape::Leaks);
    fdbg.send("fds --json");
    let fds = fdbg.wait_doc(Shape::Fds);
    fdbg.send("stats --json");
    let stats = fdbg.wait_doc(Shape::Stats);
    // Stopped at the prompt: /proc cannot change under us.
    let proc_fds: BTreeSet<i32> = open_fds(pid).into_keys().collect();
    fdbg.close_stdin();
    assert!(fdbg.wait_exit().success(), "{fdbg}");

    assert_eq!(num(&leaks, "total"), 0, "false leaks\n{fdbg}");
    assert_eq!(fd_numbers(&fds), proc_fds, "fds vs /proc/{pid}/fd\n{fdbg}");
    assert!(
        stats["events"]["accept4"].as_i64().unwrap_or(0)
            + stats["events"]["accept"].as_i64().unwrap_or(0)
            >= 60,
        "fdbg saw the 60 accepts\n{fdbg}"
    );
    assert_untraced_and_running(pid, &fdbg);
    assert!(
        version(port).is_ok_and(|a| a.starts_with("VERSION")),
        "{fdbg}"
    );
}
