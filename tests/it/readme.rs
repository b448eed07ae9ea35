//! The README's examples stay true: its `leaks` output of the demo has the
//! frames `fdbg demo --batch` prints now, its JSON example has the keys of
//! the real documents, its command table lists every command of the REPL's
//! table, and its usage block every option of `fdbg SUB --help` and no
//! other.

use std::collections::BTreeSet;
use std::path::Path;

use fdbg::repl::command::COMMANDS;
use serde_json::Value;
use serial_test::serial;

use crate::harness::{TEST_LIMIT, Watchdog, fdbg, fdbg_batch, run_to_end};
use crate::testprogs::testprog;

fn readme() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The lines of the first ``` block after the line containing `after`.
fn block_after(text: &str, after: &str) -> Vec<String> {
    let start = text
        .find(after)
        .unwrap_or_else(|| panic!("README has no {after:?}"));
    let mut lines = text[start..].lines().skip_while(|l| !l.starts_with("```"));
    lines.next();
    lines
        .take_while(|l| !l.starts_with("```"))
        .map(str::to_string)
        .collect()
}

/// A frame line of a text report, comparable across builds and checkouts:
/// the directory before `src/` dropped (the README shows /work/main, the
/// test runs elsewhere), and `[inlined]` dropped (the debug build the tests
/// run inlines less than the release build the README shows).
fn frame(line: &str) -> Option<String> {
    let line = line.trim();
    if !line.starts_with('#') {
        return None;
    }
    let line = line.replace(" [inlined]", "");
    Some(match (line.find(" at "), line.find("src/")) {
        (Some(at), Some(src)) if src > at => format!("{} at {}", &line[..at], &line[src..]),
        _ => line,
    })
}

/// Every number as `N` and every length of time (`20ms`, `4.2s`,
/// `3m12s`) as `T`: pids, counts, fd numbers and ages vary.
fn shape(line: &str) -> String {
    let chars: Vec<char> = line.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        if !chars[i].is_ascii_digit() {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        let mut timed = false;
        loop {
            while i < chars.len()
                && (chars[i].is_ascii_digit()
                    || (chars[i] == '.' && chars.get(i + 1).is_some_and(|c| c.is_ascii_digit())))
            {
                i += 1;
            }
            let unit = ["ms", "s", "m", "h", "d"]
                .iter()
                .find(|u| chars[i..].starts_with(&u.chars().collect::<Vec<_>>()))
                .filter(|u| {
                    // A unit ends the word, or another number follows (3m12s).
                    chars
                        .get(i + u.len())
                        .is_none_or(|c| !c.is_ascii_alphabetic())
                });
            match unit {
                Some(u) => {
                    timed = true;
                    i += u.len();
                    if !chars.get(i).is_some_and(|c| c.is_ascii_digit()) {
                        break;
                    }
                }
                None => break,
            }
        }
        out.push(if timed { 'T' } else { 'N' });
    }
    out
}

#[test]
#[serial]
fn readme_demo_leaks_example_matches_the_demo() {
    let _watchdog = Watchdog::new("readme demo", TEST_LIMIT);
    let shown = block_after(&readme(), "What `leaks` says on the demo server");
    let finished = fdbg_batch(["demo", "--batch"]);
    finished.assert_success();
    let real: Vec<&str> = finished
        .stdout
        .lines()
        .skip_while(|l| *l != "(fdbg) leaks")
        .skip(1)
        .take_while(|l| !l.starts_with("(fdbg)"))
        .collect();
    // The heading lines, numbers aside.
    let headings = |lines: &[&str]| -> Vec<String> {
        lines
            .iter()
            .filter(|l| l.starts_with("process ") || l.contains(" from socket, events "))
            .map(|l| shape(l))
            .collect()
    };
    let shown_refs: Vec<&str> = shown.iter().map(String::as_str).collect();
    assert_eq!(
        headings(&shown_refs),
        headings(&real),
        "README's demo leaks headings differ from the demo's\n{finished}"
    );
    // The frames the README shows (it ends at "..."), as printed now.
    let shown_frames: Vec<String> = shown.iter().filter_map(|l| frame(l)).collect();
    let real_frames: Vec<String> = real
        .iter()
        .filter_map(|l| frame(l))
        .take(shown_frames.len())
        .collect();
    assert!(!shown_frames.is_empty(), "no frames in README's example");
    assert_eq!(
        shown_frames, real_frames,
        "README's demo leaks frames are stale (update README.md)\n{finished}"
    );
}

/// The top-level keys of each JSON document.
fn key_sets<'a>(docs: impl Iterator<Item = &'a Value>) -> Vec<BTreeSet<String>> {
    docs.map(|doc| {
        doc.as_object()
            .unwrap_or_else(|| panic!("not an object: {doc}"))
            .keys()
            .cloned()
            .collect()
    })
    .collect()
}

#[test]
#[serial]
fn readme_json_example_has_the_real_keys() {
    let _watchdog = Watchdog::new("readme json", TEST_LIMIT);
    let text = readme();
    let intro = "fdbg run --batch --json -e continue -e stats -- bench 1000";
    assert!(
        text.contains(intro),
        "README's JSON example changed command"
    );
    let shown: Vec<Value> = block_after(&text, intro)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("README JSON {l:?}: {e}")))
        .collect();
    let mut command = fdbg();
    command
        .args([
            "run", "--batch", "--json", "-e", "continue", "-e", "stats", "--",
        ])
        .arg(testprog("bench"))
        .arg("1000");
    let finished = run_to_end(&mut command);
    finished.assert_success();
    assert_eq!(
        key_sets(shown.iter()),
        key_sets(finished.docs.iter()),
        "README's JSON example has other keys than the real output (update README.md)\n{finished}"
    );
}

#[test]
fn readme_command_table_lists_every_command() {
    let text = readme();
    let table = &text[text.find("### Commands").expect("README has ### Commands")..];
    let mut listed = BTreeSet::new();
    for row in table.lines().skip_while(|l| !l.starts_with("| `")) {
        if !row.starts_with('|') {
            break;
        }
        let first = row[1..].split(" | ").next().unwrap_or_default();
        for (i, quoted) in first.split('`').enumerate() {
            if i % 2 == 1
                && let Some(word) = quoted.split_whitespace().next()
            {
                listed.insert(word.to_string());
            }
        }
    }
    for spec in COMMANDS {
        assert!(
            listed.contains(spec.name),
            "README's command table lacks `{}` (listed: {listed:?})",
            spec.name
        );
    }
    for word in &listed {
        assert!(
            COMMANDS
                .iter()
                .any(|s| s.name == word || s.aliases.contains(&word.as_str())),
            "README's command table lists `{word}`, which is no command"
        );
    }
}

/// The options (`--long`, `-s`) in a text.
fn options(text: &str) -> BTreeSet<String> {
    text.split(|c: char| c.is_whitespace() || "[],=<>()`".contains(c))
        .filter(|w| {
            let long = w.len() > 2 && w.starts_with("--");
            let short = w.len() == 2 && w.starts_with('-') && w != &"--";
            (long || short)
                && w.chars()
                    .skip_while(|c| *c == '-')
                    .all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn readme_usage_block_matches_help() {
    let usage = block_after(&readme(), "## Usage").join("\n");
    let subcommands: BTreeSet<String> = usage
        .lines()
        .filter_map(|l| l.strip_prefix("fdbg "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .collect();
    assert!(
        !subcommands.is_empty(),
        "no `fdbg SUB` lines in README's usage"
    );
    let help = |args: &[&str]| {
        let output = fdbg().args(args).output().expect("running fdbg --help");
        assert!(output.status.success(), "fdbg {args:?} failed");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let top = help(&["--help"]);
    let mut known = BTreeSet::new();
    for sub in &subcommands {
        assert!(
            top.lines()
                .any(|l| l.split_whitespace().next() == Some(sub)),
            "README's usage shows `fdbg {sub}`, which `fdbg --help` does not list"
        );
        known.extend(options(&help(&[sub, "--help"])));
    }
    known.retain(|o| !matches!(o.as_str(), "-h" | "--help"));
    let shown = options(&usage);
    let missing: Vec<_> = known.difference(&shown).collect();
    let unknown: Vec<_> = shown.difference(&known).collect();
    assert!(
        missing.is_empty(),
        "README's usage lacks options that --help lists: {missing:?}"
    );
    assert!(
        unknown.is_empty(),
        "README's usage shows options no --help lists: {unknown:?}"
    );
}

#[test]
fn shapes_hide_numbers_and_lengths_of_time() {
    assert_eq!(
        shape(
            "site 1: 5 fds from socket, events #3..#23, 20ms..1.5s old, 3m12s, 12.0/min: fds 6, 7"
        ),
        "site N: N fds from socket, events #N..#N, T..T old, T, N/min: fds N, N"
    );
}

#[test]
#[serial]
fn readme_long_session_example_matches_a_real_one() {
    let _watchdog = Watchdog::new("readme long session", TEST_LIMIT);
    let shown = block_after(&readme(), "half a minute of it");
    let mut program = crate::testprogs::ChildGuard::spawn(
        std::process::Command::new(testprog("slow_leak")).arg("250"),
    );
    let pid = program.pid();
    program.output().wait_for("leak");
    let finished = fdbg_batch([
        "attach",
        &pid.to_string(),
        "--batch",
        "-e",
        "continue 2s --every 1s",
        "-e",
        "leaks --older 1s",
        "-e",
        "stats",
    ]);
    finished.assert_success();
    // Each kind of line the example shows, as far as it does not depend
    // on how long the session was: the tick lines, the heading and site
    // line of `leaks` up to its fd list, the start of the sparkline line,
    // and the memory line.
    let kinds = |lines: &mut dyn Iterator<Item = &str>| -> Vec<String> {
        let mut seen: Vec<String> = Vec::new();
        for line in lines {
            let line = line.trim_end();
            let kept = if line.starts_with('[')
                || line.starts_with("    +")
                || (line.starts_with("process ") && line.contains(" ago still open"))
            {
                line.to_string()
            } else if line.starts_with("site ") {
                line[..line.find(": fds").unwrap_or(line.len())].to_string()
            } else if line.starts_with("open fds over") {
                line[..line.find(':').unwrap_or(line.len())].to_string()
            } else if line.starts_with("fdbg's memory") {
                line.to_string()
            } else {
                continue;
            };
            // The checkout's directory varies: from `testprogs/` on.
            let kept = match (kept.find(" at /"), kept.find("testprogs/")) {
                (Some(at), Some(dir)) if dir > at => {
                    format!("{} at {}", &kept[..at], &kept[dir..])
                }
                _ => kept,
            };
            let kept = shape(&kept);
            if !seen.contains(&kept) {
                seen.push(kept);
            }
        }
        seen
    };
    let real = kinds(&mut finished.stdout.lines());
    let shown = kinds(&mut shown.iter().map(String::as_str));
    assert_eq!(
        shown, real,
        "README's long-session example is stale\n{finished}"
    );
}
