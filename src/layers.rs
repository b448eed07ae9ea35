//! The module layering, checked against the source text so that it cannot
//! regress: data flows one way, front end → tracer → decode, model, stacks,
//! unwinding and symbols → ptrace and /proc → the leaf vocabulary. A module
//! may name (`crate::x`) only modules of a lower layer, or its own top-level
//! module; the pure layers name only the few modules they are built on, do
//! no I/O and forbid unsafe code.
//!
//! The compiler cannot see a layering, only cycles it allows; this test reads
//! every file under `src/` and fails with the file, line and forbidden path.

use std::fs;
use std::path::{Path, PathBuf};

/// Top-level modules by layer, lowest first. A module in layer N may name
/// modules of layers below N; within a layer, modules do not name each
/// other, except in the front end (its commands share one session).
const LAYERS: &[&[&str]] = &[
    // Leaves: shared words, escaping, machine layouts. Import nothing of fdbg's.
    &["vocab", "escape", "arch"],
    // The only callers of ptrace(2), waitpid(2) and perf_event_open(2); the
    // /proc readers.
    &["ptrace", "perf", "procfs"],
    // Pure decoding and interning; objects mapped in a process; sockets.
    &["syscalls", "stacks", "modules", "net"],
    // The fd model over decoded syscalls; unwinding and symbols over modules.
    &["fdtable", "unwind", "symbolize"],
    // The event loop.
    &["tracer"],
    // Front ends.
    &["repl", "demo", "inspect", "cli", "main"],
];

/// The layer in which modules may name each other.
const FRONT_END: usize = LAYERS.len() - 1;

/// Pure code: (file or directory under src/, the `crate::` paths it may
/// name). Each also carries `#![forbid(unsafe_code)]` in its root file.
const PURE: &[(&str, &[&str])] = &[
    ("vocab.rs", &[]),
    ("escape.rs", &[]),
    ("stacks.rs", &[]),
    ("syscalls", &["syscalls", "vocab"]),
    ("fdtable", &["fdtable", "vocab", "stacks", "syscalls"]),
    (
        "repl/render.rs",
        &["escape", "vocab", "repl::report", "symbolize::Frame"],
    ),
];

/// What pure code must not use: files, processes, the tracer's machinery.
const IO_PATHS: &[&str] = &["std::fs", "std::process", "File::", "libc::syscall"];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
    files
}

/// The code of a line, without a `//` comment (whole-line or trailing).
fn code(line: &str) -> &str {
    match line.find("//") {
        Some(at) => &line[..at],
        None => line,
    }
}

fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// The paths a line names through `crate::`: `crate::fdtable::FdKind` gives
/// `fdtable::FdKind`; `crate::{a, b::c}` gives `a` and `b::c`.
fn crate_paths(line: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let mut rest = code(line);
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let item = item.trim();
                if !item.is_empty() {
                    paths.push(item.to_string());
                }
            }
            rest = &group[end..];
        } else {
            let end = rest.find(|c| !is_path_char(c)).unwrap_or(rest.len());
            paths.push(rest[..end].trim_end_matches(':').to_string());
            rest = &rest[end..];
        }
    }
    paths
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// The top-level module a file under src/ belongs to: `fdtable` for
/// `src/fdtable/model.rs`, `stacks` for `src/stacks.rs`.
fn top_module(relative: &Path) -> String {
    let first = relative.components().next().unwrap();
    let first = first.as_os_str().to_str().unwrap();
    first.strip_suffix(".rs").unwrap_or(first).to_string()
}

fn relative(path: &Path) -> PathBuf {
    path.strip_prefix(src()).unwrap().to_path_buf()
}

#[test]
fn every_module_has_a_layer() {
    for file in rust_files(&src()) {
        let module = top_module(&relative(&file));
        assert!(
            module == "lib" || module == "layers" || layer_of(&module).is_some(),
            "src/{} is in no layer: add `{module}` to LAYERS in src/layers.rs",
            relative(&file).display()
        );
    }
}

#[test]
fn no_module_names_a_higher_layer() {
    let mut wrong = Vec::new();
    for file in rust_files(&src()) {
        let rel = relative(&file);
        let module = top_module(&rel);
        let Some(own) = layer_of(&module) else {
            continue;
        };
        let text = fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            for path in crate_paths(line) {
                let target = path.split("::").next().unwrap_or("").to_string();
                if target == module || target == "self" {
                    continue;
                }
                let allowed = match layer_of(&target) {
                    Some(layer) => layer < own || (layer == own && own == FRONT_END),
                    None => false,
                };
                if !allowed {
                    wrong.push(format!("src/{}:{}: crate::{path}", rel.display(), n + 1));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layering (see LAYERS in src/layers.rs):\n{}",
        wrong.join("\n")
    );
}

#[test]
fn pure_layers_name_only_their_base_do_no_io_and_forbid_unsafe() {
    let mut wrong = Vec::new();
    for &(place, allowed) in PURE {
        let path = src().join(place);
        let (root, files) = if path.is_dir() {
            (path.join("mod.rs"), rust_files(&path))
        } else {
            (path.clone(), vec![path.clone()])
        };
        let root_text = fs::read_to_string(&root).unwrap();
        if !root_text.contains("#![forbid(unsafe_code)]") {
            wrong.push(format!(
                "src/{}: no #![forbid(unsafe_code)]",
                relative(&root).display()
            ));
        }
        for file in files {
            let text = fs::read_to_string(&file).unwrap();
            for (n, line) in text.lines().enumerate() {
                let at = || format!("src/{}:{}", relative(&file).display(), n + 1);
                for path in crate_paths(line) {
                    let ok = allowed
                        .iter()
                        .any(|base| path == *base || path.starts_with(&format!("{base}::")));
                    if !ok {
                        wrong.push(format!("{}: crate::{path}", at()));
                    }
                }
                for io in IO_PATHS {
                    if code(line).contains(io) {
                        wrong.push(format!("{}: {io}", at()));
                    }
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "pure code reaching out (see PURE in src/layers.rs):\n{}",
        wrong.join("\n")
    );
}

/// `unsafe` lives only in `ptrace/`, `perf/` and `arch/` (test fixtures in
/// `tests.rs` files may use it too, with the same SAFETY comments).
#[test]
fn unsafe_code_only_in_ptrace_and_arch() {
    let mut wrong = Vec::new();
    for file in rust_files(&src()) {
        let rel = relative(&file);
        let module = top_module(&rel);
        if matches!(module.as_str(), "ptrace" | "perf" | "arch" | "layers")
            || rel.file_name().is_some_and(|name| name == "tests.rs")
        {
            continue;
        }
        let text = fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = code(line).replace("forbid(unsafe_code)", "");
            if code.contains("unsafe ") || code.contains("unsafe{") {
                wrong.push(format!("src/{}:{}", rel.display(), n + 1));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "unsafe outside ptrace/, perf/ and arch/:\n{}",
        wrong.join("\n")
    );
}

/// Only the front ends (`repl/`, `main.rs`, and `inspect` and the demo's
/// server, whose output is their own command's) write to stdout or
/// stderr; the layers below return facts (the tracer's `Notice`s, errors)
/// for the front end to say. Test files (`tests.rs`) may print what they
/// skipped.
#[test]
fn only_the_front_end_prints() {
    let mut wrong = Vec::new();
    for file in rust_files(&src()) {
        let rel = relative(&file);
        let module = top_module(&rel);
        let front_end = layer_of(&module).is_none_or(|layer| layer == FRONT_END);
        if front_end || rel.file_name().is_some_and(|name| name == "tests.rs") {
            continue;
        }
        let text = fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = code(line);
            for print in ["println!", "eprintln!", "print!", "eprint!", "dbg!"] {
                let named = code.match_indices(print).any(|(at, _)| {
                    !code[..at]
                        .chars()
                        .next_back()
                        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                });
                if named {
                    wrong.push(format!("src/{}:{}: {print}", rel.display(), n + 1));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "printing below the front end (return a Notice or an error instead):\n{}",
        wrong.join("\n")
    );
}

#[test]
fn crate_paths_are_read_from_use_lines_and_expressions() {
    assert_eq!(
        crate_paths("use crate::fdtable::FdKind;"),
        ["fdtable::FdKind"]
    );
    assert_eq!(
        crate_paths("use crate::{vocab::Pid, stacks};"),
        ["vocab::Pid", "stacks"]
    );
    assert_eq!(
        crate_paths("    let m = crate::procfs::status(pid); // crate::tracer"),
        ["procfs::status"]
    );
    assert!(crate_paths("//! see crate::repl").is_empty());
}
