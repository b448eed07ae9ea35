//! A Go server leaking a socket per login (testprogs/go_login): the leak
//! is named at the user's line, with Go's runtime and standard library
//! frames (`runtime/internal/syscall.Syscall6`, `syscall.`, `net.`) flagged
//! as inside the library call, as libc's are for C. Built with the Go
//! toolchain when the test runs; skipped, saying so, where `go` is absent
//! (CI installs golang-go).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use serial_test::serial;

use crate::harness::{
    Interactive, Shape, TEST_LIMIT, Watchdog, assert_untraced_and_running, num, required_program,
};
use crate::testprogs::{ChildGuard, run, testprog};

/// `go build` of testprogs/go_login into the target directory.
fn build_go_login(go: &std::path::Path) -> PathBuf {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let out = tmp.join("go_login");
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testprogs/go_login/main.go");
    let built = Command::new(go)
        .args(["build", "-o"])
        .arg(&out)
        .arg(&source)
        .env("GOCACHE", tmp.join("gocache"))
        .env("GOPATH", tmp.join("gopath"))
        .env("GOPROXY", "off")
        .env("GOFLAGS", "-buildvcs=false")
        .output()
        .expect("run go build");
    assert!(
        built.status.success(),
        "go build failed:\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
    out
}

#[test]
#[serial]
fn a_go_leak_is_named_at_the_users_line_past_the_go_runtime() {
    let _watchdog = Watchdog::new("go_runtime", TEST_LIMIT);
    let Some(go) = required_program("go", "golang-go") else {
        return;
    };
    const LOGINS: usize = 5;
    let program = build_go_login(&go);
    let mut server = ChildGuard::spawn(&mut Command::new(&program));
    let pid = server.pid();
    let mut output = server.output();
    let port = output.wait_for("listen").num("port").to_string();
    let mut fdbg = Interactive::attach(pid, "perf");
    fdbg.send("continue");
    let client = run(Command::new(testprog("login_client")).args([&port, &LOGINS.to_string()]));
    client.assert_success();
    fdbg.signal(libc::SIGINT);
    fdbg.wait_prefix("Interrupted");
    fdbg.send("leaks --json");
    let leaks = fdbg.wait_doc(Shape::Leaks);
    fdbg.send("quit");
    assert!(fdbg.wait_exit().success(), "{fdbg}");

    let leaked: Vec<_> = (0..LOGINS).map(|_| output.wait_for("leak")).collect();
    let fds: BTreeSet<i64> = leaked.iter().map(|l| l.fd() as i64).collect();
    assert_eq!(num(&leaks, "total"), LOGINS as i64, "{fdbg}");
    let sites = leaks["sites"].as_array().unwrap();
    assert_eq!(sites.len(), 1, "one site: {leaks}");
    let site = &sites[0];
    let site_fds: BTreeSet<i64> = site["fds"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f.as_i64())
        .collect();
    assert_eq!(site_fds, fds, "{site}");
    let frames = site["frames"].as_array().unwrap();
    let first = &frames[0];
    assert_eq!(first["function"], leaked[0].get("fn").unwrap(), "{site}");
    assert_eq!(first["wrapper"], false, "{site}");
    let line = format!(
        "{}:{}",
        first["file"].as_str().unwrap().rsplit('/').next().unwrap(),
        first["line"]
    );
    assert_eq!(line, leaked[0].get("site").unwrap(), "{site}");
    // The runtime's frames are kept, flagged.
    let flagged: Vec<&str> = frames
        .iter()
        .filter(|f| f["wrapper"] == true)
        .filter_map(|f| f["function"].as_str())
        .collect();
    assert!(
        flagged.contains(&"runtime/internal/syscall.Syscall6")
            && flagged.contains(&"net.ListenUDP"),
        "{flagged:?}"
    );
    assert_untraced_and_running(pid, &fdbg);
}
