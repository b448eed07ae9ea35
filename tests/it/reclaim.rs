//! `reclaim`, `who`, the two stacks of a double close, `leaks --closed`
//! and `leaks --folded`, on real processes: the login hub (login_hub.c, a
//! poll() server that keeps connections while others log in, leaking a
//! UDP socket per login in statsd_init) and leak3's double close. Every
//! answer is checked exactly against the EXPECT lines and /proc; every
//! process started is killed by its PID, and left untraced and running.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use serial_test::serial;

use crate::harness::{
    Interactive, Shape, TEST_LIMIT, Watchdog, assert_untraced_and_running, num_set, poll_until,
};
use crate::testprogs::{ChildGuard, OutputStream, all, open_fds, run, testprog};

/// A login_hub on an ephemeral port, its EXPECT lines read.
struct Hub {
    guard: ChildGuard,
    output: OutputStream,
    port: String,
}

impl Hub {
    fn start() -> Hub {
        let mut guard = ChildGuard::spawn(Command::new(testprog("login_hub")).arg("0"));
        let mut output = guard.output();
        let port = output.wait_for("listen").num("port").to_string();
        Hub {
            guard,
            output,
            port,
        }
    }

    fn pid(&self) -> i32 {
        self.guard.pid()
    }

    /// `login_client PORT n` to its end: n logins served.
    fn logins(&self, n: usize) {
        let client = run(Command::new(testprog("login_client")).args([&self.port, &n.to_string()]));
        client.assert_success();
        assert_eq!(all(&client.lines, "login").len(), n, "{client}");
    }

    /// A connection that stays open, checked with PING.
    fn connect(&self) -> Live {
        let stream = TcpStream::connect(format!("127.0.0.1:{}", self.port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut live = Live {
            reader: BufReader::new(stream.try_clone().unwrap()),
            stream,
        };
        live.ping();
        live
    }

    /// The next `n` fds statsd_init leaked, from its EXPECT lines.
    fn leaked(&mut self, n: usize) -> BTreeSet<i32> {
        (0..n).map(|_| self.output.wait_for("leak").fd()).collect()
    }
}

struct Live {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Live {
    fn ping(&mut self) {
        self.stream.write_all(b"PING\n").expect("PING");
        let mut reply = String::new();
        self.reader.read_line(&mut reply).expect("PONG");
        assert_eq!(reply, "PONG\n");
    }
}

/// The next JSON document with a top-level `key`.
fn wait_key(fdbg: &mut Interactive, key: &str) -> Value {
    let line = fdbg.wait_line(&format!("a {key} document"), |l| {
        serde_json::from_str::<Value>(l)
            .ok()
            .is_some_and(|d| d.get(key).is_some())
    });
    serde_json::from_str(&line).unwrap()
}

fn ask(fdbg: &mut Interactive, line: &str, key: &str) -> Value {
    fdbg.send(line);
    wait_key(fdbg, key)
}

/// Interrupts a `continue` and waits for its stop.
fn interrupt(fdbg: &mut Interactive) {
    fdbg.signal(libc::SIGINT);
    assert_eq!(fdbg.wait_doc(Shape::Stop)["stop"], "interrupt", "{fdbg}");
}

fn proc_count(pid: i32) -> usize {
    open_fds(pid).len()
}

#[test]
#[serial]
fn reclaim_closes_the_leaked_sockets_and_the_server_serves_on() {
    let _watchdog = Watchdog::new("reclaim_closes_the_leaked_sockets", TEST_LIMIT);
    let mut hub = Hub::start();
    let pid = hub.pid();
    let mut fdbg = Interactive::start(["attach", &pid.to_string()]);
    fdbg.wait_attached();
    fdbg.send("continue --json");
    // Five clients stay connected; thirty log in and leak.
    let mut live: Vec<Live> = (0..5).map(|_| hub.connect()).collect();
    hub.logins(30);
    let leaked = hub.leaked(30);
    interrupt(&mut fdbg);
    let lines = hub.output.expect_lines();
    // The live connections' fds: the first five accepted.
    let accepted: BTreeSet<i32> = all(&lines, "open")
        .iter()
        .filter(|e| e.field("syscall") == "accept")
        .take(5)
        .map(|e| e.fd())
        .collect();

    let leaks = ask(&mut fdbg, "leaks --json", "sites");
    let sites = leaks["sites"].as_array().unwrap();
    assert_eq!(sites[0]["site"], 1, "{leaks}");
    assert_eq!(num_set(&sites[0]["fds"]), leaked, "{leaks}");
    let accept_site = sites
        .iter()
        .find(|s| s["syscall"] == "accept")
        .unwrap_or_else(|| panic!("no site of the live connections: {leaks}"));
    assert_eq!(num_set(&accept_site["fds"]), accepted, "{leaks}");

    // A dry run lists the thirty and closes nothing.
    let before = proc_count(pid);
    let dry = ask(&mut fdbg, "reclaim 1 --json", "reclaim");
    let dry = &dry["reclaim"];
    assert_eq!(dry["dry_run"], true, "{dry}");
    assert_eq!(num_set(&dry["closed"]), leaked, "{dry}");
    assert_eq!(dry["skipped"].as_array().unwrap().len(), 0, "{dry}");
    assert_eq!(proc_count(pid), before);

    // The connected sockets' site: nothing closed without --force, and why.
    let site = accept_site["site"].as_i64().unwrap();
    let refused = ask(
        &mut fdbg,
        &format!("reclaim {site} --yes --json"),
        "reclaim",
    );
    let refused = &refused["reclaim"];
    assert_eq!(refused["closed"].as_array().unwrap().len(), 0, "{refused}");
    let skipped = refused["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 5, "{refused}");
    for entry in skipped {
        let why = entry["why"].as_str().unwrap();
        assert!(
            why.starts_with("connected to 127.0.0.1:") && why.ends_with("(needs --force)"),
            "{refused}"
        );
    }
    assert_eq!(proc_count(pid), before);

    // The thirty closed: /proc has exactly thirty fewer, and no other fd
    // of the process changed.
    let fds_before = open_fds(pid);
    let done = ask(&mut fdbg, "reclaim 1 --yes --json", "reclaim");
    let done = &done["reclaim"];
    assert_eq!(done["dry_run"], false, "{done}");
    assert_eq!(num_set(&done["closed"]), leaked, "{done}");
    let fds_after = open_fds(pid);
    assert_eq!(fds_after.len(), fds_before.len() - 30, "{done}");
    for (fd, target) in &fds_before {
        if !leaked.contains(fd) {
            assert_eq!(fds_after.get(fd), Some(target), "fd {fd} changed");
        }
    }
    assert_eq!(done["open_fds_after"], fds_after.len(), "{done}");
    // fdbg's closes are events of their own, closed by fdbg.
    let history = ask(
        &mut fdbg,
        &format!("history {} --json", leaked.first().unwrap()),
        "events",
    );
    let last = history["events"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["syscall"], "close", "{history}");
    assert!(
        last["args"].as_str().unwrap().contains("closed by fdbg"),
        "{history}"
    );

    // The server goes on: the live connections answer, 100 more logins,
    // and leaks shows the new leaks only.
    fdbg.send("continue --json");
    for connection in &mut live {
        connection.ping();
    }
    hub.logins(100);
    let new_leaks = hub.leaked(100);
    interrupt(&mut fdbg);
    let leaks = ask(&mut fdbg, "leaks --json", "sites");
    let statsd = &leaks["sites"][0];
    assert_eq!(statsd["count"], 100, "{leaks}");
    assert_eq!(num_set(&statsd["fds"]), new_leaks, "{leaks}");
    let closed = ask(&mut fdbg, "leaks --closed --json", "sites");
    let closed_by = closed["sites"][0]["closed_by"].as_array().unwrap();
    assert!(
        closed_by
            .iter()
            .any(|c| c["syscall"] == "fdbg" && c["count"] == 30),
        "{closed}"
    );
    fdbg.send("quit");
    assert!(fdbg.wait_exit().success(), "{fdbg}");
    assert_untraced_and_running(pid, &fdbg);
    for connection in &mut live {
        connection.ping();
    }
}

/// fdbg SIGKILLed while it closes 2,000 fds: the kernel lets the process
/// go wherever the injected close was, and the thread finds its way back
/// by itself. It runs on untraced, has closed some k ≤ 2,000 of them and
/// no other fd, and serves its connections and new logins.
#[test]
#[serial]
fn a_sigkill_of_fdbg_during_a_reclaim_leaves_the_process_serving() {
    const LEAKS: usize = 2000;
    let _watchdog = Watchdog::new("a_sigkill_of_fdbg_during_a_reclaim", TEST_LIMIT);
    let mut hub = Hub::start();
    let pid = hub.pid();
    let mut live = hub.connect();
    let mut fdbg = Interactive::start(["attach", &pid.to_string()]);
    fdbg.wait_attached();
    fdbg.send("continue --json");
    hub.logins(LEAKS);
    let leaked = hub.leaked(LEAKS);
    interrupt(&mut fdbg);
    let before = open_fds(pid);
    fdbg.send("reclaim 1 --yes");
    // As soon as the first fds are gone, mid-way.
    poll_until(
        "the reclaim to begin",
        || open_fds(pid).len() < before.len(),
        || format!("{fdbg}"),
    );
    fdbg.signal(libc::SIGKILL);
    let _ = fdbg.wait_exit();
    poll_until(
        "the kernel to let the process go",
        || crate::harness::tracer_pid(pid) == Some(0),
        || format!("{fdbg}"),
    );
    assert_untraced_and_running(pid, &fdbg);
    let after = open_fds(pid);
    let closed = before.len() - after.len();
    eprintln!("fdbg was killed after {closed} of {LEAKS} closes");
    assert!((1..=LEAKS).contains(&closed), "{closed} closed");
    for (fd, target) in &before {
        match after.get(fd) {
            Some(now) => assert_eq!(now, target, "fd {fd} changed"),
            None => assert!(leaked.contains(fd), "fd {fd}, not a leak, was closed"),
        }
    }
    // It goes on: its connection answers, new logins are served.
    live.ping();
    hub.logins(10);
    assert_eq!(hub.leaked(10).len(), 10);
    assert_untraced_and_running(pid, &"after the logins");
}

/// The `line` of a frame and its function.
fn place(frame: &Value) -> (String, i64) {
    (
        frame["function"].as_str().unwrap_or("?").to_string(),
        frame["line"].as_i64().unwrap_or(0),
    )
}

/// The function and line an EXPECT line's `site` and `fn` name.
fn site_of(line: &crate::testprogs::Expect) -> (String, i64) {
    let site = line.field("site");
    let number = site.rsplit(':').next().unwrap().parse().unwrap();
    (line.field("fn").to_string(), number)
}

/// `who socket:[N]` for an inode from /proc/PID/fd names the fd and its
/// creating statsd_init line; a bare inode and the fd number say the
/// same; an inode nobody traced holds gets one line. `leaks --closed`
/// shows where the connections were closed, `leaks --folded` one line per
/// site in the flame-graph format.
#[test]
#[serial]
fn who_closed_and_folded_answer_from_the_hub() {
    let _watchdog = Watchdog::new("who_closed_and_folded", TEST_LIMIT);
    let mut hub = Hub::start();
    let pid = hub.pid();
    let mut fdbg = Interactive::start(["attach", &pid.to_string()]);
    fdbg.wait_attached();
    fdbg.send("continue --json");
    let _live = hub.connect();
    hub.logins(3);
    let leaks: Vec<_> = (0..3).map(|_| hub.output.wait_for("leak")).collect();
    let closes = loop {
        let seen = hub.output.expect_lines();
        let closes: Vec<_> = seen.into_iter().filter(|e| e.what == "close").collect();
        if closes.len() >= 3 {
            break closes;
        }
        hub.output.wait_for("close");
    };
    interrupt(&mut fdbg);

    let fd = leaks[1].fd();
    let link = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).unwrap();
    let link = link.to_string_lossy().into_owned();
    let inode: u64 = link
        .strip_prefix("socket:[")
        .and_then(|r| r.strip_suffix(']'))
        .unwrap()
        .parse()
        .unwrap();
    for asked in [link.clone(), inode.to_string(), fd.to_string()] {
        let who = ask(&mut fdbg, &format!("who {asked} --json"), "who");
        let who = &who["who"];
        assert_eq!(
            (who["pid"].as_i64(), who["fd"].as_i64()),
            (Some(pid.into()), Some(fd.into())),
            "{who}"
        );
        assert_eq!(who["inode"], inode, "{who}");
        assert_eq!(who["kind"], "socket", "{who}");
        assert_eq!(who["target"], "udp 0.0.0.0:0 unconnected", "{who}");
        assert!(who["seq"].as_u64().is_some(), "{who}");
        assert_eq!(place(&who["frames"][0]), site_of(&leaks[1]), "{who}");
        let history = who["history"].as_array().unwrap();
        assert_eq!(history.last().unwrap()["seq"], who["seq"], "{who}");
    }
    fdbg.send("who socket:[1]");
    fdbg.wait_prefix("socket:[1]: no traced process holds it");
    fdbg.send(&format!("who {link}"));
    fdbg.wait_prefix(&format!(
        "inode {inode}: fd {fd} of process {pid} (socket, udp 0.0.0.0:0 unconnected)"
    ));

    // The accepted connections of the logins were closed in serve(), on
    // one path; the live one is still open.
    let closed = ask(&mut fdbg, "leaks --closed --json", "sites");
    let accept = closed["sites"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["syscall"] == "accept")
        .unwrap_or_else(|| panic!("{closed}"))
        .clone();
    let closed_by = accept["closed_by"].as_array().unwrap();
    assert_eq!(closed_by.len(), 1, "{accept}");
    assert_eq!(closed_by[0]["count"], 3, "{accept}");
    assert_eq!(closed_by[0]["syscall"], "close", "{accept}");
    assert_eq!(
        place(&closed_by[0]["frames"][0]),
        site_of(&closes[0]),
        "{accept}"
    );
    let statsd = &closed["sites"][0];
    assert_eq!(statsd["closed_by"].as_array().unwrap().len(), 0, "{statsd}");

    // Folded: `frame;…;frame COUNT`, outermost first, one line per site.
    fdbg.send("leaks --folded");
    let line = fdbg.wait_line("a folded line", |l| l.ends_with(" 3"));
    let (stack, count) = line.rsplit_once(' ').unwrap();
    assert_eq!(count, "3", "{line}");
    let frames: Vec<&str> = stack.split(';').collect();
    assert!(
        frames.iter().all(|f| !f.is_empty() && !f.contains('\n')),
        "{line}"
    );
    assert_eq!(
        frames[frames.len() - 2..],
        ["statsd_init", "socket"],
        "{line}"
    );
    let at = |name: &str| {
        frames
            .iter()
            .position(|f| *f == name)
            .unwrap_or_else(|| panic!("{line}"))
    };
    assert!(
        at("main") < at("on_login") && at("on_login") < at("statsd_init"),
        "{line}"
    );
    let folded = ask(&mut fdbg, "leaks --folded --json", "folded");
    let lines = folded["folded"].as_array().unwrap();
    assert_eq!(lines[0], line.as_str(), "{folded}");
    assert_eq!(
        lines.len(),
        2,
        "the statsd site and the live connection's: {folded}"
    );

    fdbg.send("quit");
    assert!(fdbg.wait_exit().success(), "{fdbg}");
    assert_untraced_and_running(pid, &fdbg);
}

/// leak3's close_twice closes an fd, then closes it again: the bad close
/// shows its own stack and the first close's, each at its own line.
#[test]
#[serial]
fn a_double_close_shows_both_stacks() {
    let _watchdog = Watchdog::new("a_double_close_shows_both_stacks", TEST_LIMIT);
    let path = testprog("leak3");
    let out = crate::harness::fdbg_batch([
        "run",
        "--batch",
        "-e",
        "continue",
        "-e",
        "stats --json",
        "-e",
        "stats",
        "--",
        path.to_str().unwrap(),
    ]);
    out.assert_success();
    let lines = out.expect_lines();
    let bad = crate::testprogs::one(&lines, "badclose");
    let first = all(&lines, "close")
        .into_iter()
        .find(|c| c.fd() == bad.fd() && c.field("fn") == "close_twice")
        .expect("close_twice's first close");
    let stats = out.first(Shape::Stats);
    let events = stats["bad_close_events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{out}");
    let event = &events[0];
    assert_eq!(event["fd"], bad.fd(), "{out}");
    assert_eq!(place(&event["frames"][0]), site_of(bad), "{out}");
    let first_close = &event["first_close"];
    assert!(
        first_close["seq"].as_u64().unwrap() < event["seq"].as_u64().unwrap(),
        "{out}"
    );
    assert_eq!(place(&first_close["frames"][0]), site_of(first), "{out}");
    let text = format!(
        "fd {} was closed before by #{} close:",
        bad.fd(),
        first_close["seq"]
    );
    assert!(out.stdout.contains(&text), "no {text:?} in\n{out}");
}
