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

/// Every run of digits as `N`: pids, counts and fd numbers vary.
fn shape(line: &str) -> String {
    let mut out = String::new();
    for c in line.chars() {
        if c.is_ascii_digit() {
            if !out.ends_with('N') {
                out.push('N');
            }
        } else {
            out.push(c);
        }
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
