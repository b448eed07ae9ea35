//! Symbolized stacks from the real fdbg binary: each leak's
//! frames[0] is the user's code, named with file and line, checked against
//! the `EXPECT leak ... site=FILE:LINE fn=NAME` lines the programs print.

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use serial_test::serial;

use crate::testprogs::{ChildGuard, Expect, all, one, run, source_line, testprog};

/// `fdbg run --batch --json -e continue -e leaks -- PROGRAM ARGS`.
fn fdbg_leaks(program: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fdbg"));
    command
        .args([
            "run", "--batch", "--json", "-e", "continue", "-e", "leaks", "--",
        ])
        .arg(program)
        .args(args);
    command
}

/// The `leaks` document among fdbg's stdout lines (the program's own lines
/// are mixed in: they share stdout).
fn leaks_report(stdout: &str) -> Value {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v.get("sites").is_some())
        .unwrap_or_else(|| panic!("no leaks report in:\n{stdout}"))
}

/// The frames of the leak site holding `leak`'s fd.
fn site_frames(report: &Value, leak: &Expect) -> Vec<Value> {
    let fd = leak.num("fd");
    let site = report["sites"]
        .as_array()
        .expect("sites")
        .iter()
        .find(|s| s["fds"].as_array().unwrap().iter().any(|f| f == fd))
        .unwrap_or_else(|| panic!("no site with fd {fd} for `{}` in {report:#}", leak.line));
    site["frames"].as_array().expect("frames").clone()
}

fn text<'a>(frame: &'a Value, key: &str) -> &'a str {
    frame[key].as_str().unwrap_or("")
}

/// frames[0] names the function `fn=`, in a file ending with the site's
/// file name, at the site's line.
fn assert_first_frame_is_site(frames: &[Value], leak: &Expect) {
    let frame = &frames[0];
    let (file, line) = leak.field("site").split_once(':').unwrap();
    assert!(
        text(frame, "function").contains(leak.field("fn")),
        "frames[0] should be {} for `{}`: {frames:#?}",
        leak.field("fn"),
        leak.line
    );
    assert!(
        text(frame, "file").starts_with('/') && text(frame, "file").ends_with(&format!("/{file}")),
        "frames[0] should be in {file} (absolute): {frame:#}"
    );
    assert_eq!(
        frame["line"].as_i64(),
        Some(line.parse().unwrap()),
        "{frame:#}"
    );
    assert_eq!(frame["wrapper"], false);
}

#[test]
#[serial]
fn cxx_shared_library_leak_names_the_function_line_and_inlined_caller() {
    let program = testprog("sym_cxx");
    let finished = run(&mut fdbg_leaks(&program, &[]));
    finished.assert_success();
    let leak = one(&finished.lines, "leak");
    assert!(source_line(leak.field("site")).contains("socket("));
    let frames = site_frames(&leaks_report(&finished.stdout), leak);
    assert_first_frame_is_site(&frames, leak);
    assert!(
        text(&frames[0], "function").contains("metrics::"),
        "demangled C++"
    );
    assert!(text(&frames[0], "module").ends_with("/libsymlib.so"));
    // The inlined helper at the library call, then its caller.
    let call = one(&finished.lines, "call");
    let (file, line) = call.field("site").split_once(':').unwrap();
    let helper = frames
        .iter()
        .position(|f| text(f, "function").contains("connect_metrics"))
        .unwrap_or_else(|| panic!("no connect_metrics frame: {frames:#?}"));
    assert!(helper > 0);
    assert_eq!(frames[helper]["inlined"], true, "{frames:#?}");
    assert!(text(&frames[helper], "file").ends_with(file));
    assert_eq!(frames[helper]["line"].as_i64(), Some(line.parse().unwrap()));
    let caller = &frames[helper + 1];
    assert!(text(caller, "function").contains("on_login"), "{frames:#?}");
    assert_eq!(caller["inlined"], false);
    assert_eq!(text(caller, "module"), program.to_str().unwrap());
}

#[test]
#[serial]
fn fopen_leak_starts_at_the_caller_of_fopen() {
    let finished = run(&mut fdbg_leaks(&testprog("sym_c"), &[]));
    finished.assert_success();
    let report = leaks_report(&finished.stdout);
    for leak in all(&finished.lines, "leak") {
        let frames = site_frames(&report, leak);
        assert_first_frame_is_site(&frames, leak);
        // libc's own frames are kept after the user's, flagged, and named
        // (from libc6-dbg's DWARF, or .dynsym without it).
        let wrapper: Vec<&Value> = frames.iter().filter(|f| f["wrapper"] == true).collect();
        assert!(!wrapper.is_empty(), "{frames:#?}");
        for frame in &wrapper {
            assert!(text(frame, "module").contains("libc.so"), "{frame:#}");
        }
        assert!(
            !text(wrapper[0], "function").is_empty(),
            "the syscall wrapper has a name: {frames:#?}"
        );
    }
    let fopen = all(&finished.lines, "leak")
        .into_iter()
        .find(|l| source_line(l.field("site")).contains("fopen("))
        .expect("an fopen leak");
    let frames = site_frames(&report, fopen);
    assert!(
        frames.iter().filter(|f| f["wrapper"] == true).count() >= 2,
        "fopen's internals are kept: {frames:#?}"
    );
}

/// With Debian's libc6-dbg, libc frames carry file:line from the debug file.
#[test]
#[serial]
fn libc_frames_have_lines_with_libc6_dbg() {
    let libc = Path::new("/lib/x86_64-linux-gnu/libc.so.6");
    let has_dbg = Path::new("/usr/lib/debug/.build-id").is_dir()
        && Command::new("dpkg")
            .args(["-s", "libc6-dbg"])
            .output()
            .is_ok_and(|o| o.status.success());
    if !libc.exists() || !has_dbg {
        eprintln!("skipped: libc6-dbg is not installed (apt-get install libc6-dbg)");
        return;
    }
    let finished = run(&mut fdbg_leaks(&testprog("sym_c"), &[]));
    finished.assert_success();
    let report = leaks_report(&finished.stdout);
    for leak in all(&finished.lines, "leak") {
        let frames = site_frames(&report, leak);
        let wrapper = frames.iter().find(|f| f["wrapper"] == true).unwrap();
        assert!(wrapper["line"].as_i64().is_some(), "{wrapper:#}");
        assert!(!text(wrapper, "file").is_empty(), "{wrapper:#}");
    }
}

#[test]
#[serial]
fn stripped_binary_gives_module_offsets() {
    let program = testprog("sym_c_stripped");
    let finished = run(&mut fdbg_leaks(&program, &[]));
    finished.assert_success();
    let report = leaks_report(&finished.stdout);
    let leaks = all(&finished.lines, "leak");
    assert_eq!(leaks.len(), 2);
    for leak in leaks {
        let frames = site_frames(&report, leak);
        let first = &frames[0];
        assert_eq!(
            text(first, "module"),
            program.to_str().unwrap(),
            "{frames:#?}"
        );
        assert!(
            first["function"].is_null() && first["file"].is_null(),
            "{first:#}"
        );
        assert_eq!(first["wrapper"], false);
    }
    // The text shows them as module+0xoffset.
    let text_run = run(Command::new(env!("CARGO_BIN_EXE_fdbg"))
        .args(["run", "--batch", "-e", "continue", "-e", "leaks", "--"])
        .arg(&program));
    text_run.assert_success();
    assert!(
        text_run.stdout.contains("#0 sym_c_stripped+0x"),
        "{}",
        text_run.stdout
    );
}

#[test]
#[serial]
fn binary_deleted_after_start_still_symbolizes() {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("deleted-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("sym_c");
    std::fs::copy(testprog("sym_c"), &copy).unwrap();
    let mut fdbg = ChildGuard::spawn(&mut fdbg_leaks(&copy, &["--wait"]));
    let mut output = fdbg.output();
    output.wait_for("ready");
    std::fs::remove_file(&copy).unwrap();
    std::fs::remove_dir(&dir).unwrap();
    fdbg.send_line();
    let lines = output.rest();
    assert!(fdbg.wait_exit().success(), "{}", lines.join("\n"));
    let stdout = lines.join("\n");
    let report = leaks_report(&stdout);
    let expects = crate::testprogs::expect_lines(&stdout);
    let leaks = all(&expects, "leak");
    assert_eq!(leaks.len(), 2);
    for leak in leaks {
        assert_first_frame_is_site(&site_frames(&report, leak), leak);
    }
}

#[test]
#[serial]
fn rust_frames_show_demangled_paths() {
    let finished = run(&mut fdbg_leaks(&testprog("sym_rust"), &[]));
    finished.assert_success();
    let report = leaks_report(&finished.stdout);
    let leaks = all(&finished.lines, "leak");
    assert_eq!(leaks.len(), 2);
    for leak in leaks {
        let frames = site_frames(&report, leak);
        assert_first_frame_is_site(&frames, leak);
        let function = text(&frames[0], "function");
        assert!(
            function.starts_with("sym_rust::") && function.ends_with(leak.field("fn")),
            "a demangled Rust path, without hash: {function}"
        );
        // std's frames between the caller and libc are kept, after it.
        assert!(
            frames
                .iter()
                .any(|f| f["wrapper"] == true && text(f, "function").starts_with("std::")),
            "{frames:#?}"
        );
    }
}

#[test]
#[serial]
fn login_server_o2_leak_names_statsd_init_and_its_socket_line() {
    let mut fdbg = ChildGuard::spawn(&mut fdbg_leaks(&testprog("login_server_o2"), &["0"]));
    let mut output = fdbg.output();
    let port = output.wait_for("listen").num("port").to_string();
    let logins = run(Command::new(testprog("login_client")).args([&port, "3"]));
    logins.assert_success();
    let quit = run(Command::new(testprog("login_client")).args([&port, "0", "--quit"]));
    quit.assert_success();
    let lines = output.rest();
    assert!(fdbg.wait_exit().success(), "{}", lines.join("\n"));
    let stdout = lines.join("\n");
    let report = leaks_report(&stdout);
    let expects = crate::testprogs::expect_lines(&stdout);
    let leaks = all(&expects, "leak");
    assert_eq!(leaks.len(), 3);
    for leak in leaks {
        assert_eq!(leak.field("fn"), "statsd_init");
        let frames = site_frames(&report, leak);
        assert_first_frame_is_site(&frames, leak);
        assert!(
            frames.iter().any(|f| text(f, "function") == "on_login"),
            "{frames:#?}"
        );
    }
}
