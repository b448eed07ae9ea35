//! Socket resolution (`fdbg::net`) and `fdbg inspect` on real processes:
//! every family classified by fd, both cases of the verdict (TCP-state
//! pile-up, sockets invisible to netstat) named, a server in
//! its own network namespace resolved from that namespace, and the
//! inspected process never traced or stopped.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use fdbg::net::{self, SocketTable, UNCONNECTED};
use serde_json::Value;
use serial_test::serial;

use crate::harness::{Interactive, Shape, TEST_LIMIT, Watchdog, num_set};
use crate::login::Server;
use crate::testprogs::{ChildGuard, Expect, all, open_fds, run, testprog};

const FDBG: &str = env!("CARGO_BIN_EXE_fdbg");

/// `fdbg inspect PID --json`, which must succeed.
fn inspect_json(pid: i32) -> Value {
    let finished = run(Command::new(FDBG).args(["inspect", &pid.to_string(), "--json"]));
    finished.assert_success();
    serde_json::from_str(finished.stdout.trim())
        .unwrap_or_else(|e| panic!("inspect printed no JSON ({e}):\n{finished}"))
}

/// The inspect report's socket of fd `fd`.
fn inspected_fd(report: &Value, fd: i32) -> &Value {
    report["socket_fds"]
        .as_array()
        .expect("socket_fds")
        .iter()
        .find(|s| s["fd"] == fd)
        .unwrap_or_else(|| panic!("fd {fd} not in inspect's sockets: {report}"))
}

/// The `socket:[...]` entries of /proc/PID/fd.
fn socket_fds(pid: i32) -> BTreeMap<i32, u64> {
    open_fds(pid)
        .into_iter()
        .filter_map(|(fd, target)| Some((fd, net::socket_inode(&target)?)))
        .collect()
}

/// Watches /proc/PID/status while alive: any tracer or stop is recorded.
struct NeverTraced {
    done: Arc<AtomicBool>,
    watcher: Option<thread::JoinHandle<Vec<String>>>,
}

impl NeverTraced {
    fn watch(pid: i32) -> NeverTraced {
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        let watcher = thread::spawn(move || {
            let mut seen = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                if let Some(status) = fdbg::procfs::status(pid)
                    && (status.tracer_pid != 0 || matches!(status.state, 't' | 'T'))
                {
                    seen.push(format!("{status:?}"));
                }
                thread::sleep(Duration::from_micros(200));
            }
            seen
        });
        NeverTraced {
            done,
            watcher: Some(watcher),
        }
    }

    /// Stops watching; panics if the process was ever traced or stopped.
    fn check(mut self) {
        self.done.store(true, Ordering::Relaxed);
        let seen = self.watcher.take().unwrap().join().unwrap();
        assert!(
            seen.is_empty(),
            "the process was traced or stopped: {seen:?}"
        );
    }
}

/// Checks every `EXPECT sock` line against `net` and against `inspect`.
fn assert_classified(pid: i32, lines: &[Expect]) {
    let socks = all(lines, "sock");
    assert!(
        socks.len() >= 12,
        "socket_zoo printed too few sockets: {lines:?}"
    );
    let table = SocketTable::read(pid).expect("reading the socket tables");
    let inodes = socket_fds(pid);
    let report = inspect_json(pid);
    for line in &socks {
        let fd = line.fd();
        let inode = *inodes
            .get(&fd)
            .unwrap_or_else(|| panic!("fd {fd} is no socket: {}", line.line));
        let info = table.resolve(pid, fd, inode);
        let context = format!("{}\ngot {info:?}", line.line);
        assert_eq!(info.inode, inode, "{context}");
        assert_eq!(info.proto.as_str(), line.field("proto"), "{context}");
        assert_eq!(info.state, line.field("state"), "{context}");
        assert_eq!(
            info.netstat_visible,
            line.field("visible") == "1",
            "{context}"
        );
        if let Some(sock_type) = info.sock_type {
            assert_eq!(sock_type.as_str(), line.field("type"), "{context}");
        }
        let shown = |s: &Option<String>| s.clone().unwrap_or_else(|| "-".into());
        assert_eq!(shown(&info.local), line.field("local"), "{context}");
        assert_eq!(shown(&info.remote), line.field("remote"), "{context}");
        assert_eq!(
            info.state == UNCONNECTED,
            table.lookup(inode).is_none(),
            "{context}"
        );

        let inspected = inspected_fd(&report, fd);
        assert_eq!(
            inspected["proto"],
            line.field("proto"),
            "inspect: {context}"
        );
        assert_eq!(
            inspected["state"],
            line.field("state"),
            "inspect: {context}"
        );
        assert_eq!(
            inspected["netstat_visible"],
            line.field("visible") == "1",
            "inspect: {context}"
        );
    }
    let invisible = socks.iter().filter(|l| l.field("visible") == "0").count();
    assert_eq!(report["netstat_invisible"], invisible, "{report}");
    assert_eq!(report["sockets"], inodes.len(), "{report}");
}

#[test]
#[serial]
fn socket_zoo_every_family_is_classified_by_fd() {
    let mut zoo = ChildGuard::spawn(&mut Command::new(testprog("socket_zoo")));
    let mut output = zoo.output();
    output.wait_for("hold");
    let lines = output.expect_lines();
    let protos: Vec<&str> = all(&lines, "sock")
        .iter()
        .map(|l| l.field("proto"))
        .collect();
    for proto in ["tcp", "tcp6", "udp", "udp6", "unix", "netlink"] {
        assert!(
            protos.contains(&proto),
            "socket_zoo made no {proto} socket: {lines:?}"
        );
    }
    assert_classified(zoo.pid(), &lines);

    // The scenario's leaked socket, as `fds` will show it.
    let never = all(&lines, "sock")
        .into_iter()
        .find(|l| l.field("proto") == "udp" && l.field("state") == UNCONNECTED)
        .expect("a never-bound udp socket");
    let inode = socket_fds(zoo.pid())[&never.fd()];
    let info = net::unconnected(zoo.pid(), never.fd(), inode);
    assert_eq!(net::target_text(&info), "udp 0.0.0.0:0 unconnected");
    // A stale inode (the fd number reused) is not misread as that socket.
    assert_eq!(
        net::unconnected(zoo.pid(), never.fd(), inode + 1_000_000).proto,
        net::Proto::Other
    );

    zoo.send_line();
    assert!(zoo.wait_exit().success());
}

#[test]
#[serial]
fn inspect_names_invisible_sockets_of_the_leaky_login_server() {
    const LOGINS: usize = 12;
    let mut server = ChildGuard::spawn(&mut Command::new(testprog("login_server")));
    let mut output = server.output();
    let listen = output.wait_for("listen");
    let port = listen.field("port").to_string();
    run(Command::new(testprog("login_client")).args([&port, &LOGINS.to_string()])).assert_success();
    let leaks: Vec<Expect> = (0..LOGINS).map(|_| output.wait_for("leak")).collect();

    let watch = NeverTraced::watch(server.pid());
    let report = inspect_json(server.pid());
    let text = run(Command::new(FDBG).args(["inspect", &server.pid().to_string()]));
    watch.check();
    text.assert_success();

    let sockets = socket_fds(server.pid());
    assert_eq!(report["sockets"], sockets.len(), "{report}");
    assert_eq!(report["by_kind"]["socket"], sockets.len(), "{report}");
    assert_eq!(report["open_fds"], open_fds(server.pid()).len(), "{report}");
    let invisible = report["netstat_invisible"].as_u64().unwrap() as usize;
    assert!(invisible >= LOGINS, "{report}");
    assert_eq!(report["by_state"][UNCONNECTED], invisible, "{report}");
    assert_eq!(report["case"], "invisible_sockets", "{report}");
    let verdict = report["verdict"].as_str().unwrap();
    assert!(verdict.contains("invisible to netstat"), "{verdict}");
    assert!(text.stdout.contains(verdict), "{text}");

    for leak in &leaks {
        let socket = inspected_fd(&report, leak.fd());
        assert_eq!(socket["proto"], "udp", "{socket}");
        assert_eq!(socket["state"], UNCONNECTED, "{socket}");
        assert_eq!(socket["netstat_visible"], false, "{socket}");
    }
    let listener = inspected_fd(&report, listen.fd());
    assert_eq!(listener["state"], "LISTEN", "{listener}");
    assert_eq!(listener["local"], format!("127.0.0.1:{port}"), "{listener}");

    let after = fdbg::procfs::status(server.pid()).expect("server still runs");
    assert_eq!(after.tracer_pid, 0);
}

#[test]
#[serial]
fn inspect_counts_close_wait_and_names_the_pileup() {
    const CONNECTIONS: usize = 12;
    let mut server = ChildGuard::spawn(&mut Command::new(testprog("closewait_server")));
    let mut output = server.output();
    let port = output.wait_for("listen").field("port").to_string();
    run(Command::new(testprog("closewait_client")).args([&port, &CONNECTIONS.to_string()]))
        .assert_success();
    // One per accepted connection (the listener's came before `listen`).
    for _ in 0..CONNECTIONS {
        output.wait_for("leak");
    }

    let watch = NeverTraced::watch(server.pid());
    let report = inspect_json(server.pid());
    watch.check();
    assert_eq!(report["close_wait"], CONNECTIONS, "{report}");
    assert_eq!(report["by_state"]["CLOSE_WAIT"], CONNECTIONS, "{report}");
    assert_eq!(
        report["local_ports"],
        serde_json::json!([port.parse::<u16>().unwrap()])
    );
    assert_eq!(report["case"], "tcp_state_pileup", "{report}");
    let verdict = report["verdict"].as_str().unwrap();
    assert!(
        verdict.contains("case 1") && verdict.contains("CLOSE_WAIT"),
        "{verdict}"
    );
}

#[test]
#[serial]
fn inspect_of_no_such_process_is_one_line_and_exit_1() {
    // Past pid_max (at most 2^22): never a process.
    let finished = run(Command::new(FDBG).args(["inspect", "99999999"]));
    assert_eq!(finished.status.code(), Some(1), "{finished}");
    assert_eq!(
        finished.stderr,
        "fdbg: cannot inspect 99999999: no such process\n"
    );
    assert!(finished.stdout.is_empty(), "{finished}");
}

/// A network namespace for one test, deleted when dropped.
struct NetNs(String);

impl NetNs {
    fn add() -> Option<NetNs> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: `ip netns add` needs root");
            return None;
        }
        crate::harness::required_program("ip", "iproute2")?;
        let name = format!("fdbgtest-{}", std::process::id());
        run(Command::new("ip").args(["netns", "add", &name])).assert_success();
        let ns = NetNs(name);
        run(Command::new("ip").args(["netns", "exec", &ns.0, "ip", "link", "set", "lo", "up"]))
            .assert_success();
        Some(ns)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
#[serial]
fn a_server_in_its_own_netns_resolves_from_that_namespace() {
    let Some(ns) = NetNs::add() else { return };
    let mut zoo = ChildGuard::spawn(
        Command::new("ip")
            .args(["netns", "exec", &ns.0])
            .arg(testprog("socket_zoo")),
    );
    let mut output = zoo.output();
    output.wait_for("hold");
    let pid = zoo.pid(); // `ip netns exec` execs the program itself
    let ns_of = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
    assert_ne!(
        ns_of(&pid.to_string()),
        ns_of("self"),
        "not in its own namespace"
    );

    let lines = output.expect_lines();
    assert_classified(pid, &lines);

    // Its listener is in its namespace's table, not in fdbg's.
    let listener = all(&lines, "sock")
        .into_iter()
        .find(|l| l.field("proto") == "tcp" && l.field("state") == "LISTEN")
        .expect("a tcp listener");
    let inode = socket_fds(pid)[&listener.fd()];
    let theirs = SocketTable::read(pid).unwrap();
    let ours = SocketTable::read(std::process::id() as i32).unwrap();
    assert_eq!(
        theirs
            .lookup(inode)
            .and_then(|s| s.local.clone())
            .as_deref(),
        Some(listener.field("local"))
    );
    assert!(ours.lookup(inode).is_none());
    let port = listener.field("local").rsplit_once(':').unwrap().1;
    assert!(
        !ours.tcp().iter().any(|s| s.state == "LISTEN"
            && s.local_port().map(|p| p.to_string()).as_deref() == Some(port)),
        "something listens on {port} in the root namespace too: the test proves nothing"
    );

    zoo.send_line();
    assert!(zoo.wait_exit().success());
}

/// After N logins, `sockets`
/// lists N never-bound UDP sockets invisible to netstat, in one site whose
/// frames[0] is statsd_init, and the listener as LISTEN on its address.
#[test]
#[serial]
fn sockets_command_groups_the_invisible_login_leaks_at_statsd_init() {
    const N: usize = 4;
    let mut server = ChildGuard::spawn(Command::new(testprog("login_server")).arg("0"));
    let mut output = server.output();
    let listen = output.wait_for("listen");
    let port = listen.num("port");
    let pid = server.pid();
    let mut fdbg = crate::harness::Interactive::start(["attach", &pid.to_string()]);
    fdbg.wait_attached();
    fdbg.send("continue");
    // The client exits only when the server has served (and closed) all N.
    run(Command::new(testprog("login_client")).args([port.to_string(), N.to_string()]))
        .assert_success();
    fdbg.signal(libc::SIGINT); // Ctrl-C: back to the prompt
    fdbg.wait_prefix("Interrupted");
    fdbg.send("sockets --json");
    let report = {
        let line = fdbg.wait_line("the sockets document", |l| {
            l.contains("\"invisible_sites\"")
        });
        serde_json::from_str::<Value>(&line).unwrap()
    };
    fdbg.close_stdin();
    assert!(fdbg.wait_exit().success(), "{fdbg}");
    let leaked: Vec<i32> = (0..N).map(|_| output.wait_for("leak").fd()).collect();
    let sockets = report["sockets"].as_array().unwrap();
    for fd in &leaked {
        let s = sockets
            .iter()
            .find(|s| s["fd"] == *fd)
            .unwrap_or_else(|| panic!("fd {fd} in {report}"));
        assert_eq!(s["proto"], "udp", "{s}");
        assert_eq!(s["state"], UNCONNECTED, "{s}");
        assert_eq!(s["netstat_visible"], false, "{s}");
    }
    let listener = sockets
        .iter()
        .find(|s| s["fd"] == listen.fd())
        .expect("the listener");
    assert_eq!(listener["state"], "LISTEN");
    assert_eq!(listener["local"], format!("127.0.0.1:{port}"));
    assert_eq!(listener["netstat_visible"], true);
    let sites = report["invisible_sites"].as_array().unwrap();
    assert_eq!(sites.len(), 1, "{report}");
    assert_eq!(sites[0]["count"], N);
    assert_eq!(sites[0]["frames"][0]["function"], "statsd_init");
    let mut site_fds: Vec<i32> = sites[0]["fds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap() as i32)
        .collect();
    site_fds.sort();
    assert_eq!(site_fds, leaked);
    assert_eq!(report["by_state"][UNCONNECTED], N);
}

/// The `sockets` document among fdbg's next lines.
fn wait_sockets_doc(fdbg: &mut Interactive) -> Value {
    let line = fdbg.wait_line("sockets document", |l| {
        serde_json::from_str::<Value>(l).is_ok_and(|d| d.get("invisible_sites").is_some())
    });
    serde_json::from_str(&line).unwrap()
}

/// `detach` keeps what the sockets were last resolved to: after it, `leaks`,
/// `fds` and `sockets` describe the leaked UDP socket of a login as before
/// it (`udp 0.0.0.0:0 unconnected`), not as `socket:[INODE]`.
#[test]
#[serial]
fn after_detach_sockets_keep_their_resolved_description() {
    let _watchdog = Watchdog::new("detach_socket_targets", TEST_LIMIT);
    let mut server = Server::start();
    let pid = server.pid();
    let mut fdbg = server.attach();
    fdbg.send("continue --json");
    server.logins(1);
    let leak = server.output.wait_for("leak");
    server.output.wait_for("close");
    fdbg.signal(libc::SIGINT);
    assert_eq!(fdbg.wait_doc(Shape::Stop)["stop"], "interrupt", "{fdbg}");

    let reports = |fdbg: &mut Interactive| {
        fdbg.send("leaks --json");
        let leaks = fdbg.wait_doc(Shape::Leaks);
        fdbg.send("fds --json");
        let fds = fdbg.wait_doc(Shape::Fds);
        fdbg.send("sockets --json");
        let sockets = wait_sockets_doc(fdbg);
        let site = leaks["sites"][0].clone();
        let entry = fds["fds"]
            .as_array()
            .expect("fds")
            .iter()
            .find(|e| e["fd"] == leak.fd())
            .cloned()
            .unwrap_or_else(|| panic!("fd {} not in fds: {fds}", leak.fd()));
        (site, entry, sockets)
    };
    let (site, entry, sockets) = reports(&mut fdbg);
    fdbg.send("detach");
    fdbg.wait_prefix(&format!("detached from process {pid}"));
    let (site_after, entry_after, sockets_after) = reports(&mut fdbg);
    fdbg.send("quit");
    assert!(fdbg.wait_exit().success(), "{fdbg}");
    server.logins(1);

    let target = site["target"].as_str().expect("site target").to_string();
    assert!(
        !target.starts_with("socket:["),
        "resolved while traced: {target}\n{fdbg}"
    );
    assert_eq!(num_set(&site["fds"]), BTreeSet::from([leak.fd()]), "{fdbg}");
    assert_eq!(site_after["target"], target, "leaks after detach\n{fdbg}");
    assert_eq!(entry["target"], target, "{fdbg}");
    assert_eq!(entry_after["target"], target, "fds after detach\n{fdbg}");
    assert_eq!(sockets_after["sockets"], sockets["sockets"], "{fdbg}");
    assert_eq!(
        without_ages(&sockets_after["invisible_sites"]),
        without_ages(&sockets["invisible_sites"]),
        "{fdbg}"
    );
    assert!(
        !fdbg.stderr().contains("fdbg:"),
        "no command failed\n{fdbg}"
    );
}

/// Sites without what changes as time passes (their ages and rates).
fn without_ages(sites: &serde_json::Value) -> serde_json::Value {
    let mut sites = sites.clone();
    for site in sites.as_array_mut().into_iter().flatten() {
        if let Some(site) = site.as_object_mut() {
            for key in ["oldest_age_s", "newest_age_s", "per_min"] {
                site.remove(key);
            }
        }
    }
    sites
}
