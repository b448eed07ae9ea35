//! The C test programs in `testprogs/`: built with gcc once per test run, run
//! with a timeout, and their `EXPECT` lines parsed (format: `testprogs/expect.h`).
//!
//! Knows nothing about fdbg. Every process started here is killed and reaped
//! by the test that started it, also when the test fails.

#![allow(dead_code)] // each test module uses its own part of this

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

/// How long any test program may take to print a line or to finish.
pub const TIMEOUT: Duration = Duration::from_secs(20);

struct Program {
    name: &'static str,
    sources: &'static [&'static str],
    flags: &'static [&'static str],
    build: Build,
}

/// How a program is built (all into the same directory, in list order).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Build {
    /// gcc, `COMMON_FLAGS` and the program's flags.
    C,
    /// As `C`, then stripped of its symbol table and debug info.
    StrippedC,
    /// g++ with the program's flags.
    Cxx,
    /// g++ linked with the shared library `lib<NAME>.so` built before it,
    /// found at run time through an `$ORIGIN` rpath.
    CxxWith(&'static str),
    /// rustc -g: a single-file Rust program.
    Rust,
    /// As `Cxx` or `CxxWith`, then split: its DWARF into
    /// `split_debug_dir()/NAME.debug` (`objcopy --only-keep-debug`, no
    /// debuglink), the program stripped of debug info, its symbol table
    /// kept (`strip --strip-debug`).
    Split(&'static Build),
}

const COMMON_FLAGS: &[&str] = &["-Wall", "-Werror", "-pthread"];
const DEBUG: &[&str] = &["-g", "-O0"];
const LOGIN_SERVER: &[&str] = &["login_server.c", "login.c", "statsd.c"];

const PROGRAMS: &[Program] = &[
    Program {
        name: "leak3",
        sources: &["leak3.c"],
        flags: DEBUG,
        build: Build::C,
    },
    Program {
        name: "login_server",
        sources: LOGIN_SERVER,
        flags: DEBUG,
        build: Build::C,
    },
    Program {
        name: "login_server_o2",
        sources: LOGIN_SERVER,
        flags: &["-g", "-O2", "-fomit-frame-pointer"],
        build: Build::C,
    },
    Program {
        name: "login_hub",
        sources: &["login_hub.c", "login.c", "statsd.c"],
        flags: DEBUG,
        build: Build::C,
    },
    Program {
        name: "login_client",
        sources: &["login_client.c"],
        flags: DEBUG,
        build: Build::C,
    },
    Program {
        name: "fd_zoo",
        sources: &["fd_zoo.c"],
        flags: DEBUG,
        build: Build::C,
    },
    Program {
        name: "threads",
        sources: &["threads.c"],
        flags: DEBUG,
        build: Build::C,
    },
    Program {
        name: "forks",
        sources: &["forks.c"],
        flags: DEBUG,
        build: Build::C,
    },
    Program {
        name: "nonfd_loop",
        sources: &["nonfd_loop.c"],
        flags: DEBUG,
        build: Build::C,
    },
    Program {
        name: "bench",
        sources: &["bench.c"],
        flags: DEBUG,
        build: Build::C,
    },
    Program {
        name: "closewait_server",
        sources: &["closewait_server.c"],
        flags: DEBUG,
        build: Build::C,
    },
    Program {
        name: "closewait_client",
        sources: &["closewait_client.c"],
        flags: DEBUG,
        build: Build::C,
    },
    // Function breakpoints in a library loaded later (tests/it/functions.rs).
    Program {
        name: "libplugin.so",
        sources: &["plugin.c"],
        flags: &["-g", "-O2", "-fPIC", "-shared"],
        build: Build::C,
    },
    Program {
        name: "dlopen_plugin",
        sources: &["dlopen_plugin.c"],
        flags: DEBUG,
        build: Build::C,
    },
    // Symbolization (tests/it/symbols.rs).
    Program {
        name: "libsymlib.so",
        sources: &["symlib.cpp"],
        flags: &["-g", "-O2", "-fomit-frame-pointer", "-fPIC", "-shared"],
        build: Build::Cxx,
    },
    Program {
        name: "sym_cxx",
        sources: &["sym_cxx.cpp"],
        flags: &["-g", "-O2", "-fomit-frame-pointer"],
        build: Build::CxxWith("symlib"),
    },
    Program {
        name: "sym_c",
        sources: &["sym_c.c"],
        flags: DEBUG,
        build: Build::C,
    },
    Program {
        name: "sym_c_stripped",
        sources: &["sym_c.c"],
        flags: DEBUG,
        build: Build::StrippedC,
    },
    Program {
        name: "sym_rust",
        sources: &["sym_rust.rs"],
        flags: &["-g"],
        build: Build::Rust,
    },
    // Debug info only on a debuginfod server (tests/it/debuginfod.rs).
    Program {
        name: "libdbgilib.so",
        sources: &["dbgi_lib.cpp"],
        flags: &["-g", "-O0", "-fPIC", "-shared"],
        build: Build::Split(&Build::Cxx),
    },
    Program {
        name: "dbgi_server",
        sources: &["dbgi_server.cpp"],
        flags: &["-g", "-O0"],
        build: Build::Split(&Build::CxxWith("dbgilib")),
    },
    Program {
        name: "socket_zoo",
        sources: &["socket_zoo.c"],
        flags: DEBUG,
        build: Build::C,
    },
    Program {
        name: "thread_exec",
        sources: &["thread_exec.c"],
        flags: DEBUG,
        build: Build::C,
    },
    Program {
        name: "leader_exit",
        sources: &["leader_exit.c"],
        flags: DEBUG,
        build: Build::C,
    },
    Program {
        name: "slow_leak",
        sources: &["slow_leak.c"],
        flags: DEBUG,
        build: Build::C,
    },
    Program {
        name: "thread_churn",
        sources: &["thread_churn.c"],
        flags: DEBUG,
        build: Build::C,
    },
    Program {
        name: "prefork",
        sources: &["prefork.c"],
        flags: DEBUG,
        build: Build::C,
    },
    Program {
        name: "own_sigtrap",
        sources: &["own_sigtrap.c"],
        flags: DEBUG,
        build: Build::C,
    },
    Program {
        name: "reexec",
        sources: &["reexec.c"],
        flags: DEBUG,
        build: Build::C,
    },
    Program {
        name: "blocks_signals",
        sources: &["blocks_signals.c"],
        flags: DEBUG,
        build: Build::C,
    },
    Program {
        name: "idle_threads",
        sources: &["idle_threads.c"],
        flags: DEBUG,
        build: Build::C,
    },
    // Reports over tens of thousands of fds (tests/it/run_reports.rs).
    Program {
        name: "many_fds",
        sources: &["many_fds.c"],
        flags: DEBUG,
        build: Build::C,
    },
    // Socket annotations (tests/it/annotations.rs).
    Program {
        name: "connector",
        sources: &["connector.c"],
        flags: DEBUG,
        build: Build::C,
    },
];

/// Path of the built test program `name`; builds all of them on first use.
pub fn testprog(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let out_dir = match BUILT.get_or_init(build_all) {
        Ok(dir) => dir,
        Err(message) => panic!("{message}"),
    };
    assert!(
        PROGRAMS.iter().any(|p| p.name == name),
        "no test program named {name:?}"
    );
    out_dir.join(name)
}

/// Where the debug files of the `Build::Split` programs are (and nothing
/// else): a directory for a debuginfod server to serve.
pub fn split_debug_dir() -> PathBuf {
    testprog("dbgi_server")
        .parent()
        .expect("in a directory")
        .join("debuginfod")
}

/// The C sources, for tests that look at the line an `EXPECT ... site=` names.
pub fn source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testprogs")
}

/// The text of the source line `site` ("statsd.c:17") points at.
pub fn source_line(site: &str) -> String {
    let (file, line) = site.split_once(':').expect("site is file:line");
    let line: usize = line.parse().expect("site line is a number");
    let text = fs::read_to_string(source_dir().join(file)).expect("site names a testprogs file");
    text.lines().nth(line - 1).unwrap_or_default().to_string()
}

fn build_all() -> Result<PathBuf, String> {
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("testprogs");
    fs::create_dir_all(&out_dir).map_err(|e| format!("creating {}: {e}", out_dir.display()))?;
    // Flags live in this file: a change to it rebuilds too.
    let newest_input = fs::read_dir(source_dir())
        .map_err(|e| format!("reading testprogs/: {e}"))?
        .filter_map(|entry| entry.ok()?.metadata().ok()?.modified().ok())
        .chain(modified(Path::new(file!())))
        .max()
        .unwrap_or(SystemTime::UNIX_EPOCH);
    for program in PROGRAMS {
        let output = out_dir.join(program.name);
        if modified(&output).is_none_or(|built| built < newest_input) {
            build(program, &output)?;
        }
    }
    Ok(out_dir)
}

fn modified(path: &Path) -> Option<SystemTime> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    fs::metadata(path).ok()?.modified().ok()
}

/// Compiles to a temporary name, then renames: a concurrent test process
/// running the previous binary is never disturbed.
fn build(program: &Program, output: &Path) -> Result<(), String> {
    let temporary = output.with_extension(format!("tmp{}", std::process::id()));
    let kind = match program.build {
        Build::Split(kind) => *kind,
        kind => kind,
    };
    let compiler = match kind {
        Build::C | Build::StrippedC => "gcc",
        Build::Cxx | Build::CxxWith(_) => "g++",
        Build::Rust => "rustc",
        Build::Split(_) => unreachable!("a split build names its kind"),
    };
    let mut gcc = Command::new(compiler);
    match kind {
        Build::C | Build::StrippedC => gcc.args(COMMON_FLAGS),
        Build::Cxx | Build::CxxWith(_) => gcc.args(["-Wall", "-Werror"]),
        Build::Rust | Build::Split(_) => &mut gcc,
    };
    gcc.args(program.flags)
        .arg("-o")
        .arg(&temporary)
        .args(program.sources.iter().map(|s| source_dir().join(s)));
    if let Build::CxxWith(library) = kind {
        let dir = output.parent().expect("output in a directory");
        gcc.arg("-L")
            .arg(dir)
            .arg(format!("-l{library}"))
            .arg("-Wl,-rpath,$ORIGIN");
    }
    let result = match gcc.output() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!(
                "testprogs need {compiler}: apt-get install gcc g++ (rustc: rustup)"
            ));
        }
        Err(e) => return Err(format!("running gcc: {e}")),
        Ok(result) => result,
    };
    if !result.status.success() {
        return Err(format!(
            "building test program {} failed:\n$ {gcc:?}\n{}{}",
            program.name,
            String::from_utf8_lossy(&result.stdout),
            String::from_utf8_lossy(&result.stderr)
        ));
    }
    if program.build == Build::StrippedC {
        let strip = Command::new("strip").arg(&temporary).output();
        if !strip.is_ok_and(|s| s.status.success()) {
            return Err(format!(
                "strip {} failed (apt-get install binutils)",
                program.name
            ));
        }
    }
    if let Build::Split(_) = program.build {
        split_debug_info(program.name, &temporary, output)?;
    }
    fs::rename(&temporary, output).map_err(|e| format!("installing {}: {e}", output.display()))
}

/// `binary`'s DWARF into `DIR/debuginfod/NAME.debug` beside `output`, then
/// `binary` stripped of it.
fn split_debug_info(name: &str, binary: &Path, output: &Path) -> Result<(), String> {
    let dir = output.parent().expect("in a directory").join("debuginfod");
    fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let debug = dir.join(format!("{name}.debug"));
    let temporary = debug.with_extension(format!("tmp{}", std::process::id()));
    let steps: [(&str, Vec<&std::ffi::OsStr>); 2] = [
        (
            "objcopy",
            vec![
                "--only-keep-debug".as_ref(),
                binary.as_os_str(),
                temporary.as_os_str(),
            ],
        ),
        ("strip", vec!["--strip-debug".as_ref(), binary.as_os_str()]),
    ];
    for (tool, args) in steps {
        let done = Command::new(tool).args(&args).output();
        if !done.as_ref().is_ok_and(|d| d.status.success()) {
            return Err(format!(
                "{tool} {args:?} failed (apt-get install binutils): {done:?}"
            ));
        }
    }
    fs::rename(&temporary, &debug).map_err(|e| format!("installing {}: {e}", debug.display()))
}

/// One `EXPECT <what> key=value ...` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expect {
    pub what: String,
    pub fields: BTreeMap<String, String>,
    /// The whole line, for failure messages.
    pub line: String,
}

impl Expect {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(String::as_str)
    }

    /// A field that must be there.
    pub fn field(&self, key: &str) -> &str {
        self.get(key)
            .unwrap_or_else(|| panic!("no {key}= in `{}`", self.line))
    }

    /// A numeric field that must be there.
    pub fn num(&self, key: &str) -> i64 {
        let value = self.field(key);
        value
            .parse()
            .unwrap_or_else(|_| panic!("{key}={value} is not a number in `{}`", self.line))
    }

    pub fn fd(&self) -> i32 {
        self.num("fd") as i32
    }

    /// A comma-separated list of numbers, e.g. `open=0,1,2`.
    pub fn list(&self, key: &str) -> BTreeSet<i32> {
        let value = self.field(key);
        value
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse()
                    .unwrap_or_else(|_| panic!("bad list {key}={value}"))
            })
            .collect()
    }
}

/// The `EXPECT` lines of a program's output, in order; other lines are skipped.
pub fn expect_lines(stdout: &str) -> Vec<Expect> {
    stdout.lines().filter_map(parse_expect).collect()
}

fn parse_expect(line: &str) -> Option<Expect> {
    let mut words = line.strip_prefix("EXPECT ")?.split_whitespace();
    let what = words.next()?.to_string();
    let fields = words
        .map(|word| match word.split_once('=') {
            Some((key, value)) => (key.to_string(), value.to_string()),
            None => (word.to_string(), String::new()),
        })
        .collect();
    Some(Expect {
        what,
        fields,
        line: line.to_string(),
    })
}

/// The lines with this `what`.
pub fn all<'a>(lines: &'a [Expect], what: &str) -> Vec<&'a Expect> {
    lines.iter().filter(|e| e.what == what).collect()
}

/// The one line with this `what`.
pub fn one<'a>(lines: &'a [Expect], what: &str) -> &'a Expect {
    match all(lines, what).as_slice() {
        [only] => only,
        found => panic!("expected one `EXPECT {what}` line, found {}", found.len()),
    }
}

/// A program that ran to its end.
#[derive(Debug)]
pub struct Finished {
    pub command: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub lines: Vec<Expect>,
}

impl Finished {
    /// Panics, showing the command and its output, unless it exited 0.
    pub fn assert_success(&self) -> &Self {
        assert!(self.status.success(), "{self}");
        self
    }
}

impl std::fmt::Display for Finished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "$ {}\n{}\n--- stdout:\n{}--- stderr:\n{}",
            self.command, self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `command` to its end (stdin empty), killing it after [`TIMEOUT`].
pub fn run(command: &mut Command) -> Finished {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {command:?}: {e}"));
    let pid = child.id() as i32;
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || tx.send(child.wait_with_output()));
    let output = match rx.recv_timeout(TIMEOUT) {
        Ok(output) => output.expect("waiting for a test program"),
        Err(_) => {
            // Not reaped yet (the thread is still waiting), so the pid is still ours.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("{command:?} did not finish within {TIMEOUT:?}");
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    Finished {
        command: format!("{command:?}"),
        status: output.status,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        lines: expect_lines(&stdout),
        stdout,
    }
}

/// A started program that is killed (SIGKILL, by its pid) and reaped when dropped.
pub struct ChildGuard(pub Child);

impl ChildGuard {
    /// Starts `command` with stdin and stdout piped; stderr is inherited.
    pub fn spawn(command: &mut Command) -> ChildGuard {
        let child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {command:?}: {e}"));
        ChildGuard(child)
    }

    pub fn pid(&self) -> i32 {
        self.0.id() as i32
    }

    /// Its stdout as a stream of lines (can be taken once).
    pub fn output(&mut self) -> OutputStream {
        OutputStream::new(
            self.0
                .stdout
                .take()
                .expect("stdout piped and not taken yet"),
        )
    }

    /// Writes a line on its stdin: lets a `--wait` or `--hold` program go on.
    pub fn send_line(&mut self) {
        let stdin = self.0.stdin.as_mut().expect("stdin piped");
        stdin
            .write_all(b"\n")
            .expect("writing to a test program's stdin");
    }

    /// Closes its stdin (EOF for a program reading it).
    pub fn close_stdin(&mut self) {
        self.0.stdin = None;
    }

    /// Writes raw bytes on its stdin.
    pub fn write_bytes(&mut self, bytes: &[u8]) {
        let stdin = self.0.stdin.as_mut().expect("stdin piped");
        stdin
            .write_all(bytes)
            .and_then(|()| stdin.flush())
            .expect("writing to a test program's stdin");
    }

    /// Waits for it to exit on its own, at most [`TIMEOUT`].
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.0.try_wait().expect("waiting for a test program") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "pid {} did not exit within {TIMEOUT:?}",
                self.pid()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        // try_wait fails if someone else reaped it: then the pid may not be ours any more.
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The next line from `lines` for which `wanted` holds, waiting at most
/// [`TIMEOUT`] in all; every line received is kept in `seen`.
pub fn next_line_where(
    lines: &Receiver<String>,
    seen: &mut Vec<String>,
    wanted: impl Fn(&str) -> bool,
) -> Result<String, mpsc::RecvTimeoutError> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines.recv_timeout(left)?;
        seen.push(line.clone());
        if wanted(&line) {
            return Ok(line);
        }
    }
}

/// A running program's stdout, read by a thread so that waiting can time out.
pub struct OutputStream {
    lines: Receiver<String>,
    /// Every line received so far, EXPECT or not.
    pub seen: Vec<String>,
}

impl OutputStream {
    fn new(stdout: ChildStdout) -> OutputStream {
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        OutputStream {
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// The next `EXPECT <what>` line; panics with everything seen on EOF or timeout.
    pub fn wait_for(&mut self, what: &str) -> Expect {
        self.wait_expect(&format!("`EXPECT {what}` line"), &[what])
    }

    /// The next `EXPECT` line of one of the kinds `whats`.
    pub fn wait_for_any(&mut self, whats: &[&str]) -> Expect {
        self.wait_expect(&format!("`EXPECT` line of {whats:?}"), whats)
    }

    fn wait_expect(&mut self, description: &str, whats: &[&str]) -> Expect {
        let wanted =
            |line: &str| parse_expect(line).is_some_and(|e| whats.contains(&e.what.as_str()));
        match next_line_where(&self.lines, &mut self.seen, wanted) {
            Ok(line) => parse_expect(&line).expect("checked by `wanted`"),
            Err(error) => panic!(
                "no {description} ({error:?}); output so far:\n{}",
                self.seen.join("\n")
            ),
        }
    }

    /// Every line up to EOF (the program exited), at most [`TIMEOUT`].
    pub fn rest(&mut self) -> Vec<String> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => return self.seen.clone(),
                Err(error) => panic!(
                    "no EOF ({error:?}); output so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// The EXPECT lines seen so far.
    pub fn expect_lines(&self) -> Vec<Expect> {
        self.seen
            .iter()
            .filter_map(|line| parse_expect(line))
            .collect()
    }
}

/// The fds open in process `pid`, with what they point to ("socket:[123]", "/dev/null").
pub fn open_fds(pid: i32) -> BTreeMap<i32, String> {
    let dir = format!("/proc/{pid}/fd");
    fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {dir}: {e}"))
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let fd = entry.file_name().to_str()?.parse().ok()?;
            let target = fs::read_link(entry.path()).ok()?;
            Some((fd, target.to_string_lossy().into_owned()))
        })
        .collect()
}
