//! A Node.js server leaking a socket per login from a JavaScript function
//! (testprogs/node_login/server.js), attached as a running server is:
//! with `--perf-basic-prof --interpreted-frames-native-stack`, the JIT
//! frames are named from node's perf map and walked by frame pointer, so
//! every leak is one site whose frames[0] is the JS function at its line,
//! past libuv, V8 and Node's own JavaScript (flagged as inside the library
//! call); without the flags, the frames stay bare addresses and fdbg says
//! once how to get names. Skipped, saying so, where `node` is absent (CI
//! installs nodejs).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use serial_test::serial;

use crate::harness::{
    Interactive, Shape, TEST_LIMIT, Watchdog, assert_untraced_and_running, num, required_program,
};
use crate::testprogs::{ChildGuard, Expect, OutputStream, run, testprog};

/// The flags that make node write a perf map with every JS function.
const PERF_FLAGS: [&str; 2] = ["--perf-basic-prof", "--interpreted-frames-native-stack"];

/// node running server.js, and the perf map it may write; killed (by pid)
/// and its map removed when dropped.
struct NodeServer {
    child: Option<ChildGuard>,
    perf_map: PathBuf,
    output: OutputStream,
    port: String,
}

impl NodeServer {
    fn start(node: &Path, flags: &[&str]) -> NodeServer {
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testprogs/node_login/server.js");
        let mut child = ChildGuard::spawn(Command::new(node).args(flags).arg(&script));
        let perf_map = PathBuf::from(format!("/tmp/perf-{}.map", child.pid()));
        let mut output = child.output();
        let port = output.wait_for("listen").field("port").to_string();
        NodeServer {
            child: Some(child),
            perf_map,
            output,
            port,
        }
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().pid()
    }
}

impl Drop for NodeServer {
    fn drop(&mut self) {
        drop(self.child.take());
        let _ = std::fs::remove_file(&self.perf_map);
    }
}

/// Attaches to the server (events as $FDBG_EVENTS says), lets `logins`
/// happen, and returns fdbg (still attached, interrupted), the `leaks`
/// document and the EXPECT lines of the leaks.
fn leaks_after_logins(server: &mut NodeServer, logins: usize) -> (Interactive, Value, Vec<Expect>) {
    let mut fdbg = Interactive::start(["attach", &server.pid().to_string()]);
    fdbg.wait_attached();
    fdbg.send("continue");
    let client =
        run(Command::new(testprog("login_client")).args([&server.port, &logins.to_string()]));
    client.assert_success();
    // Each login's leak, and its connection closed by the server (a
    // moment after the client is gone).
    let mut leaked = Vec::new();
    let mut closed = 0;
    while leaked.len() < logins || closed < logins {
        let line = server.output.wait_for_any(&["leak", "closed"]);
        if line.what == "leak" {
            leaked.push(line);
        } else {
            closed += 1;
        }
    }
    fdbg.signal(libc::SIGINT);
    fdbg.wait_prefix("Interrupted");
    fdbg.send("leaks --json");
    let leaks = fdbg.wait_doc(Shape::Leaks);
    (fdbg, leaks, leaked)
}

fn fds_of(site: &Value) -> BTreeSet<i64> {
    site["fds"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_i64)
        .collect()
}

/// `file:line` of a frame, with the file's name only.
fn place(frame: &Value) -> String {
    let file = frame["file"].as_str().unwrap_or("?");
    format!("{}:{}", file.rsplit('/').next().unwrap(), frame["line"])
}

#[test]
#[serial]
fn a_node_leak_is_named_at_the_js_function_through_the_perf_map() {
    let _watchdog = Watchdog::new("node_runtime", TEST_LIMIT);
    let Some(node) = required_program("node", "nodejs") else {
        return;
    };
    // Enough logins for V8 to compile the functions again, optimized.
    const LOGINS: usize = 30;
    let mut server = NodeServer::start(&node, &PERF_FLAGS);
    let pid = server.pid();
    let (mut fdbg, leaks, leaked) = leaks_after_logins(&mut server, LOGINS);
    fdbg.send("quit");
    assert!(fdbg.wait_exit().success(), "{fdbg}");

    assert_eq!(num(&leaks, "total"), LOGINS as i64, "{fdbg}");
    let sites = leaks["sites"].as_array().unwrap();
    assert_eq!(sites.len(), 1, "one site, at every JIT tier: {leaks}");
    let site = &sites[0];
    let fds: BTreeSet<i64> = leaked.iter().map(|l| l.fd() as i64).collect();
    assert_eq!(fds_of(site), fds, "{site}");
    let frames = site["frames"].as_array().unwrap();
    let first = &frames[0];
    assert_eq!(first["function"], leaked[0].field("fn"), "{site}");
    assert_eq!(place(first), leaked[0].field("site"), "{site}");
    assert_eq!(first["wrapper"], false, "{site}");
    assert_eq!(first["jit"], true, "{site}");
    assert_eq!(first["module"], format!("/tmp/perf-{pid}.map"), "{site}");
    let script = first["file"].as_str().unwrap();
    assert!(
        script.ends_with("/testprogs/node_login/server.js"),
        "{site}"
    );
    // Its caller, also JavaScript of the script, is walked through.
    let caller = &frames[1];
    assert_eq!(
        (caller["function"].as_str(), caller["file"].as_str()),
        (Some("onLogin"), Some(script)),
        "{site}"
    );
    // libc, libuv, V8 and Node's JavaScript are inside the library call.
    let flagged: Vec<&str> = frames
        .iter()
        .filter(|f| f["wrapper"] == true)
        .filter_map(|f| f["function"].as_str())
        .collect();
    for expected in ["uv__socket", "Server.listen"] {
        assert!(flagged.contains(&expected), "{expected}: {flagged:?}");
    }
    assert!(!fdbg.seen.iter().any(|l| l.contains("hint:")), "{fdbg}");
    assert_untraced_and_running(pid, &fdbg);
}

#[test]
#[serial]
fn without_a_perf_map_node_frames_stay_addresses_and_fdbg_says_how() {
    let _watchdog = Watchdog::new("node_runtime", TEST_LIMIT);
    let Some(node) = required_program("node", "nodejs") else {
        return;
    };
    const LOGINS: usize = 3;
    let mut server = NodeServer::start(&node, &[]);
    let pid = server.pid();
    let (mut fdbg, leaks, leaked) = leaks_after_logins(&mut server, LOGINS);
    let hint = fdbg.wait_line("the perf map hint", |l| l.contains("hint:"));
    // Said once a session, not at every report.
    fdbg.send("leaks --json");
    fdbg.wait_doc(Shape::Leaks);
    fdbg.send("quit");
    assert!(fdbg.wait_exit().success(), "{fdbg}");

    assert!(
        hint.contains(&format!("process {pid} "))
            && hint.contains("node --perf-basic-prof --interpreted-frames-native-stack"),
        "{hint}"
    );
    let hints = fdbg.seen.iter().filter(|l| l.contains("hint:")).count();
    assert_eq!(hints, 1, "{fdbg}");
    assert_eq!(num(&leaks, "total"), LOGINS as i64, "{fdbg}");
    let sites = leaks["sites"].as_array().unwrap();
    let fds: BTreeSet<i64> = leaked.iter().map(|l| l.fd() as i64).collect();
    let site_fds: BTreeSet<i64> = sites.iter().flat_map(fds_of).collect();
    assert_eq!(site_fds, fds, "{leaks}");
    for site in sites {
        // The answer is what it was: V8's interpreter, or bare JIT
        // addresses, where the JavaScript functions are.
        let frames = site["frames"].as_array().unwrap();
        assert!(
            frames
                .iter()
                .all(|f| f["function"] != "statsdInit" && f.get("jit").is_none()),
            "{site}"
        );
    }
    assert!(!Path::new(&format!("/tmp/perf-{pid}.map")).exists());
    assert_untraced_and_running(pid, &fdbg);
}
