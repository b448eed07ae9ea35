//! Debug info from a debuginfod server: a stripped C++ server and its
//! stripped library (`testprogs/dbgi_server.cpp`, `dbgi_lib.cpp`, their
//! DWARF split off into `split_debug_dir()`), named with file and line
//! through elfutils' own `debuginfod -F` serving those debug files on
//! 127.0.0.1; and with the servers down, the same leaks named from the
//! symbol tables, each down server asked once.
//!
//! Skipped without `debuginfod` (apt-get install debuginfod), except under
//! CI=true. Every process started here is killed by its pid when the test
//! ends.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use serde_json::Value;
use serial_test::serial;

use crate::harness::{
    FdbgOutput, Interactive, Shape, fdbg, free_port, poll_until, required_program, run_to_end,
};
use crate::testprogs::{ChildGuard, Expect, all, split_debug_dir, testprog};

/// A fresh directory under the test target's tmp dir.
fn fresh_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("debuginfod-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The build-id of an ELF file, as hex.
fn build_id(path: &Path) -> String {
    use object::Object;
    let data = std::fs::read(path).unwrap();
    let file = object::File::parse(&*data).unwrap();
    let id = file.build_id().unwrap().expect("a build-id");
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// The objects whose DWARF only the server has.
fn split_objects() -> Vec<PathBuf> {
    let server = testprog("dbgi_server");
    let library = server.with_file_name("libdbgilib.so");
    vec![server, library]
}

/// elfutils' debuginfod over the split debug files, on 127.0.0.1.
struct Server {
    /// Killed (by its pid) and reaped when dropped.
    _process: ChildGuard,
    url: String,
}

impl Server {
    /// Started and answering for every split object; `None` (skipped)
    /// without debuginfod.
    fn start(dir: &Path) -> Option<Server> {
        let program = required_program("debuginfod", "debuginfod")?;
        let debug_dir = split_debug_dir();
        let log = dir.join("debuginfod.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let port = free_port();
        let process = ChildGuard(
            Command::new(program)
                .args(["-F", "-p", &port.to_string(), "-d"])
                .arg(dir.join("debuginfod.sqlite"))
                .arg(&debug_dir)
                .stdin(Stdio::null())
                .stdout(log_file.try_clone().unwrap())
                .stderr(log_file)
                .spawn()
                .expect("starting debuginfod"),
        );
        let url = format!("http://127.0.0.1:{port}");
        let mut server = Server {
            _process: process,
            url,
        };
        // Ready once it serves every debug file (its first scan is done).
        for object in split_objects() {
            let wanted = format!("{}/buildid/{}/debuginfo", server.url, build_id(&object));
            poll_until(
                &format!("debuginfod to serve {wanted}"),
                || {
                    assert!(
                        server._process.0.try_wait().unwrap().is_none(),
                        "debuginfod ended: {}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                    ureq::get(&wanted)
                        .call()
                        .is_ok_and(|r| r.status().as_u16() == 200)
                },
                || std::fs::read_to_string(&log).unwrap_or_default(),
            );
        }
        server.url.push('/');
        Some(server)
    }
}

/// A server that accepts connections and never answers, counting them.
struct Hanging {
    url: String,
    port: u16,
    connections: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    held: Arc<Mutex<Vec<TcpStream>>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Hanging {
    fn start() -> Hanging {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let held = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (connections, stop, held) = (connections.clone(), stop.clone(), held.clone());
            thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    if let Ok(stream) = stream {
                        connections.fetch_add(1, Ordering::SeqCst);
                        held.lock().unwrap().push(stream);
                    }
                }
            })
        };
        Hanging {
            url: format!("http://127.0.0.1:{port}"),
            port,
            connections,
            stop,
            held,
            thread: Some(thread),
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for Hanging {
    fn drop(&mut self) {
        // Wake its accept with a connection of our own, then let it end.
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.held.lock().unwrap().clear();
    }
}

/// `fdbg ARGS`, with these debuginfod variables and no others of the
/// environment's.
fn fdbg_with(args: &[&str], vars: &[(&str, &str)]) -> Command {
    let mut command = fdbg();
    command.args(args);
    for var in [
        "DEBUGINFOD_URLS",
        "DEBUGINFOD_CACHE_PATH",
        "DEBUGINFOD_TIMEOUT",
        "DEBUGINFOD_MAXTIME",
        "DEBUGINFOD_MAXSIZE",
    ] {
        command.env_remove(var);
    }
    command.envs(vars.iter().copied());
    command
}

/// `fdbg run --batch --json -e continue -e leaks -- dbgi_server 3`, with
/// these debuginfod variables.
fn leaks_with(vars: &[(&str, &str)]) -> FdbgOutput {
    let program = testprog("dbgi_server");
    let args = [
        "run", "--batch", "--json", "-e", "continue", "-e", "leaks", "--",
    ];
    let mut command = fdbg_with(&args, vars);
    command.arg(program).arg("3");
    let output = run_to_end(&mut command);
    output.assert_success();
    output
}

/// The leaks site holding `leak`'s fd, and the site's frames.
fn site_of<'a>(output: &'a FdbgOutput, leak: &Expect) -> (&'a Value, &'a [Value]) {
    let fd = leak.num("fd");
    let report = output.first(Shape::Leaks);
    let site = report["sites"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["fds"].as_array().unwrap().iter().any(|f| f == fd))
        .unwrap_or_else(|| panic!("no site with fd {fd} for `{}`\n{output}", leak.line));
    (site, site["frames"].as_array().unwrap())
}

fn text<'a>(frame: &'a Value, key: &str) -> &'a str {
    frame[key].as_str().unwrap_or("")
}

/// `frame` is `function`, in a file ending with `/FILE`, at `LINE` of
/// `site` (`FILE:LINE`).
fn assert_named_with_line(frame: &Value, function: &str, site: &str, output: &FdbgOutput) {
    let (file, line) = site.split_once(':').unwrap();
    assert!(
        text(frame, "function").contains(function),
        "{function}: {frame:#}\n{output}"
    );
    assert!(
        text(frame, "file").starts_with('/') && text(frame, "file").ends_with(&format!("/{file}")),
        "in {file}: {frame:#}\n{output}"
    );
    assert_eq!(
        frame["line"].as_i64(),
        Some(line.parse().unwrap()),
        "{frame:#}\n{output}"
    );
}

/// The leaks: 3 logins, each an eventfd of the server and a socket of the
/// library, at two sites.
fn assert_leak_counts(output: &FdbgOutput) -> Vec<Expect> {
    let lines = output.expect_lines();
    let leaks: Vec<Expect> = all(&lines, "leak").into_iter().cloned().collect();
    assert_eq!(leaks.len(), 6, "{output}");
    let report = output.first(Shape::Leaks);
    let sites = report["sites"].as_array().unwrap();
    assert_eq!(sites.len(), 2, "{report:#}");
    for site in sites {
        assert_eq!(site["count"], 3, "{site:#}");
    }
    leaks
}

/// The notes fdbg wrote on stderr about debuginfod.
fn debuginfod_notes(output: &FdbgOutput) -> Vec<&str> {
    output
        .stderr
        .lines()
        .filter(|l| l.starts_with("fdbg: debuginfod:"))
        .collect()
}

#[test]
#[serial]
fn stripped_server_and_library_named_from_debuginfod() {
    let dir = fresh_dir("up");
    let Some(server) = Server::start(&dir) else {
        return;
    };
    let cache = dir.join("cache");
    let cache_arg = cache.to_str().unwrap();
    let output = leaks_with(&[
        ("DEBUGINFOD_URLS", &server.url),
        ("DEBUGINFOD_CACHE_PATH", cache_arg),
    ]);
    let leaks = assert_leak_counts(&output);
    let program = testprog("dbgi_server");
    let call = all(&output.expect_lines(), "call")[0].clone();
    for leak in &leaks {
        let (_, frames) = site_of(&output, leak);
        assert_named_with_line(&frames[0], leak.field("fn"), leak.field("site"), &output);
        assert_eq!(frames[0]["wrapper"], false);
        if leak.field("syscall") == "socket" {
            // The library's frame, then the server's call into it.
            assert!(text(&frames[0], "module").ends_with("/libdbgilib.so"));
            assert!(text(&frames[0], "function").contains("audit::open_channel"));
            assert_named_with_line(
                &frames[1],
                "gateway::Server::login",
                call.field("site"),
                &output,
            );
            assert_eq!(text(&frames[1], "module"), program.to_str().unwrap());
        } else {
            assert!(text(&frames[0], "function").contains("gateway::Server::login"));
            assert_eq!(text(&frames[0], "module"), program.to_str().unwrap());
        }
    }
    assert!(debuginfod_notes(&output).is_empty(), "{output}");
    assert!(output.first(Shape::Leaks).get("notes").is_none());
    // Cached as elfutils' client caches: CACHE/BUILDID/debuginfo, the
    // debug file itself.
    for object in split_objects() {
        let name = object.file_name().unwrap().to_str().unwrap();
        let cached = cache.join(build_id(&object)).join("debuginfo");
        let served = split_debug_dir().join(format!("{name}.debug"));
        assert_eq!(
            std::fs::read(&cached).unwrap_or_default(),
            std::fs::read(&served).unwrap(),
            "{} should be cached",
            cached.display()
        );
    }
    // With the server gone, the cache alone names them, with no note.
    drop(server);
    let refused = format!("http://127.0.0.1:{}", free_port());
    let again = leaks_with(&[
        ("DEBUGINFOD_URLS", &refused),
        ("DEBUGINFOD_CACHE_PATH", cache_arg),
    ]);
    for leak in assert_leak_counts(&again) {
        let (_, frames) = site_of(&again, &leak);
        assert_named_with_line(&frames[0], leak.field("fn"), leak.field("site"), &again);
    }
    // Without DEBUGINFOD_URLS nothing changes: not even the cache is read.
    let unset = leaks_with(&[("DEBUGINFOD_CACHE_PATH", cache_arg)]);
    assert_symtab_names(&unset);
    assert!(debuginfod_notes(&unset).is_empty(), "{unset}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Asserts that the leaks are named from the symbol tables: function with
/// an offset, no file or line.
fn assert_symtab_names(output: &FdbgOutput) {
    for leak in assert_leak_counts(output) {
        let (_, frames) = site_of(output, &leak);
        let first = &frames[0];
        assert!(
            text(first, "function").contains(leak.field("fn")),
            "{first:#}\n{output}"
        );
        assert!(first["function_offset"].is_u64(), "{first:#}");
        assert!(
            first["file"].is_null() && first["line"].is_null(),
            "{first:#}"
        );
        assert_eq!(first["wrapper"], false);
    }
}

#[test]
#[serial]
fn with_the_server_down_leaks_are_named_from_the_symbol_tables() {
    let dir = fresh_dir("down");
    let refused = format!("http://127.0.0.1:{}", free_port());
    let output = leaks_with(&[
        ("DEBUGINFOD_URLS", &refused),
        ("DEBUGINFOD_CACHE_PATH", dir.join("cache").to_str().unwrap()),
    ]);
    assert_symtab_names(&output);
    // One line, naming the server; in the JSON, a field of the report.
    let notes = debuginfod_notes(&output);
    assert_eq!(notes.len(), 1, "{output}");
    assert!(notes[0].contains(&refused), "{output}");
    let json_notes = output.first(Shape::Leaks)["notes"].as_array().cloned();
    assert_eq!(json_notes.map(|n| n.len()), Some(1), "{output}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
#[serial]
fn a_server_that_never_answers_is_asked_once_per_session() {
    let dir = fresh_dir("hang");
    let hanging = Hanging::start();
    let refused = format!("http://127.0.0.1:{}", free_port());
    let urls = format!("{} {refused}", hanging.url);
    let output = leaks_with(&[
        ("DEBUGINFOD_URLS", &urls),
        ("DEBUGINFOD_CACHE_PATH", dir.join("cache").to_str().unwrap()),
        ("DEBUGINFOD_TIMEOUT", "1"),
    ]);
    assert_symtab_names(&output);
    // Two objects at least (the server and its library) wanted debug
    // info, but each server was tried once: the timeout is paid once per
    // session, not once per object.
    assert_eq!(hanging.connections(), 1, "{output}");
    let notes = debuginfod_notes(&output);
    assert_eq!(notes.len(), 2, "{output}");
    assert!(
        notes[0].contains(&hanging.url) && notes[1].contains(&refused),
        "{output}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
#[serial]
fn frames_shown_while_the_process_runs_never_ask_debuginfod() {
    let dir = fresh_dir("running");
    let hanging = Hanging::start();
    let program = testprog("dbgi_server");
    let mut command = fdbg_with(
        &[
            "run",
            "--batch",
            "--json",
            "-e",
            "continue --every 100ms",
            "--",
        ],
        &[
            ("DEBUGINFOD_URLS", hanging.url.as_str()),
            ("DEBUGINFOD_CACHE_PATH", dir.join("cache").to_str().unwrap()),
        ],
    );
    command.arg(&program).args(["3", "--hold"]);
    let mut fdbg = Interactive::spawn(command);
    // A tick naming the sites the logins grew, while the program holds.
    let tick = fdbg.wait_line("a tick with sites", |line| {
        line.starts_with("{\"tick\"") && !line.contains("\"sites\":[]")
    });
    let tick: Value = serde_json::from_str(&tick).unwrap();
    let sites = tick["tick"]["sites"].as_array().unwrap();
    for site in sites {
        let first = &site["frames"][0];
        assert!(
            text(first, "function").contains("login")
                || text(first, "function").contains("open_channel"),
            "{tick:#}"
        );
        assert!(
            first["line"].is_null(),
            "named from the symbol table: {tick:#}"
        );
    }
    // Let the program end: the session ends with it, no report shown.
    fdbg.send("");
    assert!(fdbg.wait_exit().success(), "{fdbg}");
    assert_eq!(hanging.connections(), 0, "{fdbg}");
    let _ = std::fs::remove_dir_all(&dir);
}
