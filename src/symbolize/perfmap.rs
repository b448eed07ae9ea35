//! Names of JIT code from perf maps: `/tmp/perf-PID.map`, which a runtime
//! writes as it compiles (Node.js with `--perf-basic-prof`, a JVM on
//! `jcmd PID Compiler.perfmap`, Python 3.12+ with `-X perf`), one
//! `START SIZE NAME` line (hex, `0x` optional) per piece of code.
//!
//! Exists so that an address in anonymous executable memory, where no
//! object file says anything, is named after the function the runtime put
//! there: V8's `JS:~statsdInit /srv/server.js:8:20` is the function
//! `statsdInit`, file `/srv/server.js`, line 8 (the line where the
//! function begins: a perf map names functions, not the lines inside
//! them). The tier marker (`~` interpreted, `^` baseline, `+` Maglev,
//! `*` optimized) is dropped, so a function is named alike at every tier.
//!
//! Read at report time only, never per event: a map is read on the first
//! address it must name, and again from where it ended when it has grown
//! (runtimes append). Code moves and addresses are reused, so a later line
//! replaces the earlier ones it overlaps. A map that shrank was rewritten
//! and is read from its start. Lines that do not parse, or longer than
//! `MAX_LINE`, are skipped; nothing in a map can make this panic.
//!
//! In a container the map is in the process's own `/tmp`, under its pid
//! in its namespace: `/proc/PID/root/tmp/perf-NSPID.map`.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::rc::Rc;

use crate::vocab::Pid;

/// The longest line read; longer ones are skipped.
const MAX_LINE: usize = 8192;

/// What a perf map says about one piece of code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JitName {
    pub function: String,
    pub file: Option<String>,
    pub line: Option<u32>,
}

/// One process's perf map as read so far.
pub struct PerfMap {
    /// Where fdbg reads it.
    source: PathBuf,
    /// The path as the process sees it, shown as the frames' module.
    shown: String,
    /// How far the map was read: the end of its last complete line.
    read_to: u64,
    /// Code by start address: end address and name, no two overlapping.
    code: BTreeMap<u64, (u64, Rc<str>)>,
    /// Each distinct name once (code recompiled gets the same name).
    names: HashSet<Rc<str>>,
}

impl PerfMap {
    /// The perf map of `pid`, if there is one (nothing is read yet).
    pub fn find(pid: Pid) -> Option<PerfMap> {
        let in_namespace = crate::procfs::pid_in_namespace(pid).unwrap_or(pid);
        let shown = format!("/tmp/perf-{in_namespace}.map");
        let candidates = [
            crate::procfs::process_dir(pid)
                .join("root")
                .join(&shown[1..]),
            PathBuf::from(format!("/tmp/perf-{pid}.map")),
        ];
        let source = candidates.into_iter().find(|path| path.is_file())?;
        Some(PerfMap {
            source,
            shown,
            read_to: 0,
            code: BTreeMap::new(),
            names: HashSet::new(),
        })
    }

    /// The map's path as the process sees it.
    pub fn path(&self) -> &str {
        &self.shown
    }

    /// Reads what was added to the map since the last read; all of it again
    /// if it shrank. Errors leave what was read.
    pub fn refresh(&mut self) {
        let Ok(mut file) = File::open(&self.source) else {
            return;
        };
        let Ok(len) = file.metadata().map(|m| m.len()) else {
            return;
        };
        if len < self.read_to {
            self.code.clear();
            self.names.clear();
            self.read_to = 0;
        }
        if len == self.read_to || file.seek(SeekFrom::Start(self.read_to)).is_err() {
            return;
        }
        self.read_to += self.read_lines(BufReader::new(file));
    }

    /// Adds the complete lines of `reader`; returns the bytes they took.
    fn read_lines(&mut self, mut reader: impl BufRead) -> u64 {
        let mut consumed = 0u64;
        let mut line = Vec::new();
        loop {
            line.clear();
            let Ok(n) = (&mut reader)
                .take(MAX_LINE as u64 + 1)
                .read_until(b'\n', &mut line)
            else {
                return consumed;
            };
            if n == 0 {
                return consumed;
            }
            if line.last() != Some(&b'\n') {
                if n <= MAX_LINE {
                    // The runtime is still writing this line.
                    return consumed;
                }
                // Too long: skip to its end.
                let Ok(rest) = skip_line(&mut reader) else {
                    return consumed;
                };
                consumed += (n + rest) as u64;
                continue;
            }
            consumed += n as u64;
            if let Some((start, size, name)) = parse_line(&line) {
                self.insert(start, size, name);
            }
        }
    }

    /// Records code at `[start, start + size)`, replacing what it overlaps.
    fn insert(&mut self, start: u64, size: u64, name: &str) {
        let Some(end) = start.checked_add(size).filter(|&end| end > start) else {
            return;
        };
        let overlapped: Vec<u64> = self
            .code
            .range(..end)
            .rev()
            .take_while(|(_, (other_end, _))| *other_end > start)
            .map(|(&other_start, _)| other_start)
            .collect();
        for other in overlapped {
            self.code.remove(&other);
        }
        let name = match self.names.get(name) {
            Some(known) => known.clone(),
            None => {
                let name: Rc<str> = Rc::from(name);
                self.names.insert(name.clone());
                name
            }
        };
        self.code.insert(start, (end, name));
    }

    /// What the map says is at `address`.
    pub fn lookup(&self, address: u64) -> Option<JitName> {
        let (_, (end, name)) = self.code.range(..=address).next_back()?;
        (address < *end).then(|| parse_name(name))
    }
}

/// Consumes up to and including the next newline; the bytes it took.
fn skip_line(reader: &mut impl BufRead) -> std::io::Result<usize> {
    let mut skipped = 0;
    loop {
        let buffer = reader.fill_buf()?;
        if buffer.is_empty() {
            return Ok(skipped);
        }
        match buffer.iter().position(|&b| b == b'\n') {
            Some(at) => {
                reader.consume(at + 1);
                return Ok(skipped + at + 1);
            }
            None => {
                let n = buffer.len();
                reader.consume(n);
                skipped += n;
            }
        }
    }
}

/// `START SIZE NAME`, both numbers hex with an optional `0x`.
fn parse_line(line: &[u8]) -> Option<(u64, u64, &str)> {
    let line = std::str::from_utf8(line)
        .ok()?
        .trim_end_matches(['\n', '\r']);
    let mut fields = line.splitn(3, ' ');
    let hex = |text: &str| {
        let digits = text.strip_prefix("0x").unwrap_or(text);
        u64::from_str_radix(digits, 16).ok()
    };
    let start = hex(fields.next()?)?;
    let size = hex(fields.next()?)?;
    let name = fields.next()?.trim();
    (!name.is_empty()).then_some((start, size, name))
}

/// V8's kinds of code that are JavaScript functions (`JS:` since V8 10;
/// `LazyCompile:`, `Function:`, `Script:` before), with `Eval:` (a
/// script's top level).
const V8_FUNCTIONS: &[&str] = &["JS:", "LazyCompile:", "Function:", "Script:", "Eval:"];

/// V8's tier markers, as its `CodeKindToMarker` writes them.
const V8_TIERS: &[char] = &['~', '^', '+', '*'];

/// A perf map's name as function, file and line. V8's JavaScript
/// functions (`JS:*name script:line:column`) and Python's
/// (`py::qualname:/path/file.py`) are taken apart; other names (a JVM's
/// `void Foo.bar(int)`, V8's `Builtin:CallFunction`) are the function.
pub fn parse_name(name: &str) -> JitName {
    if let Some(rest) = V8_FUNCTIONS.iter().find_map(|kind| name.strip_prefix(kind)) {
        let rest = rest.strip_prefix(V8_TIERS).unwrap_or(rest);
        // The script follows the name after a space; both may contain
        // spaces (a getter `get size`, a path): the script is what starts
        // like one, else the last word.
        let at = ["/", "file:", "node:"]
            .iter()
            .filter_map(|start| rest.find(&format!(" {start}")))
            .min()
            .or_else(|| rest.rfind(' '));
        let (function, location) = match at {
            Some(at) => (&rest[..at], &rest[at + 1..]),
            // No name: an anonymous function.
            None => ("", rest),
        };
        if let Some((file, line)) = script_position(location) {
            let function = if function.is_empty() {
                "<anonymous>"
            } else {
                function
            };
            return JitName {
                function: function.to_string(),
                file: Some(file.strip_prefix("file://").unwrap_or(file).to_string()),
                line: Some(line),
            };
        }
    }
    if let Some((function, file)) = name
        .strip_prefix("py::")
        .and_then(|rest| rest.split_once(':'))
    {
        return JitName {
            function: function.to_string(),
            file: (!file.is_empty()).then(|| file.to_string()),
            line: None,
        };
    }
    JitName {
        function: name.to_string(),
        file: None,
        line: None,
    }
}

/// `script:line:column` → (script, line).
fn script_position(location: &str) -> Option<(&str, u32)> {
    let (rest, column) = location.rsplit_once(':')?;
    let (file, line) = rest.rsplit_once(':')?;
    column.parse::<u32>().ok()?;
    let line = line.parse().ok()?;
    (!file.is_empty()).then_some((file, line))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map_of(text: &[u8]) -> PerfMap {
        let mut map = PerfMap {
            source: PathBuf::new(),
            shown: String::new(),
            read_to: 0,
            code: BTreeMap::new(),
            names: HashSet::new(),
        };
        map.read_to = map.read_lines(text);
        map
    }

    #[test]
    fn names_from_each_runtime() {
        let cases = [
            (
                "JS:~statsdInit /srv/app/server.js:8:20",
                ("statsdInit", Some("/srv/app/server.js"), Some(8)),
            ),
            (
                "JS:*statsdInit /srv/app/server.js:8:20",
                ("statsdInit", Some("/srv/app/server.js"), Some(8)),
            ),
            (
                "JS:^listen node:net:1870:36",
                ("listen", Some("node:net"), Some(1870)),
            ),
            (
                "JS:~ node:internal/main/run_main_module:1:1",
                (
                    "<anonymous>",
                    Some("node:internal/main/run_main_module"),
                    Some(1),
                ),
            ),
            (
                "LazyCompile:*get size file:///srv/a b.mjs:3:4",
                ("get size", Some("/srv/a b.mjs"), Some(3)),
            ),
            (
                "Eval:~ /srv/app/server.js:1:1",
                ("<anonymous>", Some("/srv/app/server.js"), Some(1)),
            ),
            (
                "Builtin:CallFunction_ReceiverIsAny",
                ("Builtin:CallFunction_ReceiverIsAny", None, None),
            ),
            (
                "RegExp:\\(?([^\\s(]+):(\\d+)",
                ("RegExp:\\(?([^\\s(]+):(\\d+)", None, None),
            ),
            (
                "py::Server.login:/srv/app/server.py",
                ("Server.login", Some("/srv/app/server.py"), None),
            ),
            (
                "void java.lang.Thread.run()",
                ("void java.lang.Thread.run()", None, None),
            ),
            ("JS:~ weird", ("JS:~ weird", None, None)),
        ];
        for (name, (function, file, line)) in cases {
            let parsed = parse_name(name);
            assert_eq!(
                (
                    parsed.function.as_str(),
                    parsed.file.as_deref(),
                    parsed.line
                ),
                (function, file, line),
                "{name}"
            );
        }
    }

    #[test]
    fn later_code_replaces_what_it_overlaps() {
        let map = map_of(
            b"1000 100 JS:~a /x.js:1:1\n\
              0x2000 0x100 JS:~b /x.js:2:1\n\
              1080 100 JS:*c /x.js:3:1\n",
        );
        assert_eq!(map.lookup(0x1000), None, "a was overwritten");
        assert_eq!(map.lookup(0x10ff).unwrap().function, "c");
        assert_eq!(map.lookup(0x1180), None);
        assert_eq!(map.lookup(0x20ff).unwrap().function, "b");
        assert_eq!(map.lookup(0x2100), None);
        assert_eq!(map.lookup(0xfff), None);
    }

    #[test]
    fn bad_lines_are_skipped_and_a_partial_line_waits() {
        let mut text =
            b"zz 10 bad\n1000\n1000 0 empty\nffffffffffffffff 10 wraps\n1000 10\n".to_vec();
        text.extend(b"2000 10 ");
        text.extend(vec![b'x'; MAX_LINE * 3]);
        text.extend(b"\n3000 10 JS:~ok /x.js:7:1\n\xff\xfe 1 2\n4000 10 JS:~partial");
        let map = map_of(&text);
        assert_eq!(map.code.len(), 1);
        assert_eq!(map.lookup(0x3005).unwrap().line, Some(7));
        let partial = text.len() - b"4000 10 JS:~partial".len();
        assert_eq!(map.read_to, partial as u64);
    }

    #[test]
    fn a_map_that_grows_or_shrinks_is_read_again() {
        let dir = std::env::temp_dir().join(format!("fdbg-perfmap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("perf-1.map");
        std::fs::write(&path, "1000 10 JS:~a /x.js:1:1\n2000 10 JS:~b").unwrap();
        let mut map = PerfMap {
            source: path.clone(),
            shown: "/tmp/perf-1.map".into(),
            read_to: 0,
            code: BTreeMap::new(),
            names: HashSet::new(),
        };
        map.refresh();
        assert_eq!(map.lookup(0x1000).unwrap().function, "a");
        assert_eq!(map.lookup(0x2000), None);
        // The runtime finishes the line and appends.
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(&mut file, b" /x.js:2:1\n3000 10 JS:~c /x.js:3:1\n").unwrap();
        map.refresh();
        assert_eq!(map.lookup(0x2000).unwrap().function, "b");
        assert_eq!(map.lookup(0x3000).unwrap().function, "c");
        // Rewritten shorter: read from the start.
        std::fs::write(&path, "5000 10 JS:~d /x.js:4:1\n").unwrap();
        map.refresh();
        assert_eq!(map.lookup(0x1000), None);
        assert_eq!(map.lookup(0x5000).unwrap().function, "d");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
