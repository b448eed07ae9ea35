//! The REPL's commands: one table gives their names, abbreviations, usage
//! and help; one parser turns a line into a `Command`. `-e`, `-x` and the
//! prompt all go through `parse`, so they behave the same.

use std::time::Duration;

use crate::fdtable::FdKind;
use crate::repl::breakpoints::{Condition, valid_catch};

/// A parsed command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invocation {
    pub command: Command,
    /// `--json` was given: print this report as one JSON document.
    pub json: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Continue { duration: Option<Duration> },
    Step { count: usize },
    Fds { kind: Option<FdKind> },
    Leaks { since: Option<String>, min: usize },
    History { fd: i32 },
    Backtrace,
    Mark { name: Option<String> },
    Diff { name: Option<String> },
    Break { condition: Condition },
    Catch { what: Vec<String> },
    InfoBreakpoints,
    Delete { id: Option<u32> },
    Enable { id: u32 },
    Disable { id: u32 },
    Stats,
    Sockets,
    Threads,
    Detach,
    Quit,
    Help { topic: Option<String> },
}

/// One row of the command table.
pub struct Spec {
    pub name: &'static str,
    /// Short forms accepted besides unique prefixes of `name`.
    pub aliases: &'static [&'static str],
    pub usage: &'static str,
    pub help: &'static str,
}

pub const COMMANDS: &[Spec] = &[
    Spec {
        name: "continue",
        aliases: &["c", "cont"],
        usage: "continue [DURATION]",
        help: "Resume all threads until a breakpoint, the process exits, Ctrl-C, or DURATION (500ms, 10s, 2m) passes.",
    },
    Spec {
        name: "step",
        aliases: &["s"],
        usage: "step [N]",
        help: "Resume until the next N fd events (default 1); print each with its stack.",
    },
    Spec {
        name: "break",
        aliases: &["b", "br"],
        usage: "break fd N | break count N | break site PATTERN",
        help: "Stop when fd number N is created or closed; when the open-fd count becomes greater than N; or when an fd is created by a stack with a frame matching PATTERN (a function-name substring, or FILE:LINE).",
    },
    Spec {
        name: "catch",
        aliases: &[],
        usage: "catch KIND|SYSCALL...",
        help: "Stop on every event of these fd kinds (socket, pipe, file, ...) or syscall names (close, accept4, ...).",
    },
    Spec {
        name: "info",
        aliases: &["i"],
        usage: "info breakpoints",
        help: "List breakpoints and catchpoints with their hit counts.",
    },
    Spec {
        name: "delete",
        aliases: &["d"],
        usage: "delete [ID]",
        help: "Delete breakpoint ID, or all of them.",
    },
    Spec {
        name: "disable",
        aliases: &[],
        usage: "disable ID",
        help: "Keep breakpoint ID but do not stop at it.",
    },
    Spec {
        name: "enable",
        aliases: &[],
        usage: "enable ID",
        help: "Stop at breakpoint ID again.",
    },
    Spec {
        name: "fds",
        aliases: &[],
        usage: "fds [--kind KIND] [--json]",
        help: "Open fds now: number, kind, target, and the event and stack that created it (or `before attach`).",
    },
    Spec {
        name: "leaks",
        aliases: &[],
        usage: "leaks [--since MARK] [--min N] [--json]",
        help: "Fds created since attach (or since MARK) and still open, grouped by creating stack, biggest group first.",
    },
    Spec {
        name: "history",
        aliases: &["hist"],
        usage: "history FD [--json]",
        help: "Every event on fd number FD since attach, with stacks.",
    },
    Spec {
        name: "bt",
        aliases: &["where", "backtrace"],
        usage: "bt [--json]",
        help: "The stack of the event the process is stopped at.",
    },
    Spec {
        name: "mark",
        aliases: &[],
        usage: "mark [NAME]",
        help: "Remember this moment (default name: the next number).",
    },
    Spec {
        name: "diff",
        aliases: &[],
        usage: "diff [NAME] [--json]",
        help: "Since the mark (default: the latest): fds opened and still open (by site), how many opened and closed, and fds from before it that were closed.",
    },
    Spec {
        name: "stats",
        aliases: &[],
        usage: "stats [--json]",
        help: "Events by syscall and kind, open count, bad closes, ptrace stops, events/s.",
    },
    Spec {
        name: "sockets",
        aliases: &["sock"],
        usage: "sockets [--json]",
        help: "The process's sockets: protocol, addresses, TCP state, counts by state, and the sockets netstat cannot see (never bound or connected), grouped by creating site.",
    },
    Spec {
        name: "threads",
        aliases: &[],
        usage: "threads [--json]",
        help: "Threads and their states.",
    },
    Spec {
        name: "detach",
        aliases: &[],
        usage: "detach",
        help: "Let the process go, untraced; keep the recorded data for queries.",
    },
    Spec {
        name: "quit",
        aliases: &["q", "exit"],
        usage: "quit",
        help: "Detach (attach) or kill (run), and exit.",
    },
    Spec {
        name: "help",
        aliases: &["h", "?"],
        usage: "help [COMMAND]",
        help: "List the commands, or explain one.",
    },
];

/// Find a command by name, alias or unique prefix.
pub fn lookup(word: &str) -> Result<&'static Spec, String> {
    if let Some(spec) = COMMANDS
        .iter()
        .find(|s| s.name == word || s.aliases.contains(&word))
    {
        return Ok(spec);
    }
    let matches: Vec<&Spec> = COMMANDS
        .iter()
        .filter(|s| s.name.starts_with(word))
        .collect();
    match matches.as_slice() {
        [one] => Ok(one),
        [] => Err(match closest(word) {
            Some(near) => format!("unknown command '{word}'; did you mean '{near}'? (try 'help')"),
            None => format!("unknown command '{word}' (try 'help')"),
        }),
        many => Err(format!(
            "ambiguous command '{word}': {}",
            many.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// The command name nearest to `word` by edit distance, if it is near
/// enough to be a typo (at most a third of the word's letters differ).
fn closest(word: &str) -> Option<&'static str> {
    COMMANDS
        .iter()
        .map(|s| (s.name, edit_distance(word, s.name)))
        .min_by_key(|&(_, d)| d)
        .filter(|&(_, d)| d * 3 <= word.chars().count().max(3))
        .map(|(name, _)| name)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// Parse one line. `Ok(None)` for a blank line or a comment.
pub fn parse(line: &str) -> Result<Option<Invocation>, String> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let mut words: Vec<&str> = line.split_whitespace().collect();
    let json = words.contains(&"--json");
    words.retain(|w| *w != "--json");
    let spec = lookup(words[0])?;
    let mut args = Args {
        words: words[1..].to_vec(),
        usage: spec.usage,
    };
    let command = match spec.name {
        "continue" => Command::Continue {
            duration: args.optional(parse_duration)?,
        },
        "step" => Command::Step {
            count: args.optional(parse_count)?.unwrap_or(1),
        },
        "fds" => Command::Fds {
            kind: args.flag("--kind", parse_kind)?,
        },
        "leaks" => {
            let since = args.flag("--since", |s| Ok(s.to_string()))?;
            let min = args.flag("--min", parse_count)?.unwrap_or(1);
            Command::Leaks { since, min }
        }
        "history" => Command::History {
            fd: args.required("FD", parse_fd)?,
        },
        "bt" => Command::Backtrace,
        "mark" => Command::Mark {
            name: args.optional(|s| Ok(s.to_string()))?,
        },
        "diff" => Command::Diff {
            name: args.optional(|s| Ok(s.to_string()))?,
        },
        "break" => Command::Break {
            condition: parse_break(&mut args)?,
        },
        "catch" => {
            let what: Vec<String> = std::mem::take(&mut args.words)
                .iter()
                .map(|w| w.to_string())
                .collect();
            if what.is_empty() {
                return Err(format!("catch what? usage: {}", spec.usage));
            }
            if let Some(bad) = what.iter().find(|w| !valid_catch(w)) {
                return Err(format!(
                    "cannot catch '{bad}': name an fd kind (socket, pipe, file, ...) or an fd syscall (close, accept4, ...)"
                ));
            }
            Command::Catch { what }
        }
        "info" => {
            let what = args.required("what", |s| Ok(s.to_string()))?;
            if !"breakpoints".starts_with(what.as_str()) {
                return Err(format!("info {what}: only 'info breakpoints' is known"));
            }
            Command::InfoBreakpoints
        }
        "delete" => Command::Delete {
            id: args.optional(parse_id)?,
        },
        "enable" => Command::Enable {
            id: args.required("ID", parse_id)?,
        },
        "disable" => Command::Disable {
            id: args.required("ID", parse_id)?,
        },
        "stats" => Command::Stats,
        "sockets" => Command::Sockets,
        "threads" => Command::Threads,
        "detach" => Command::Detach,
        "quit" => Command::Quit,
        "help" => Command::Help {
            topic: args.optional(|s| Ok(s.to_string()))?,
        },
        other => unreachable!("command table row without a parser: {other}"),
    };
    args.finish()?;
    Ok(Some(Invocation { command, json }))
}

/// The words after the command name, consumed by the parsers above.
struct Args<'a> {
    words: Vec<&'a str>,
    usage: &'static str,
}

impl<'a> Args<'a> {
    fn optional<T>(
        &mut self,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, String> {
        let Some(pos) = self.words.iter().position(|w| !w.starts_with("--")) else {
            return Ok(None);
        };
        // A positional after a flag's value belongs to the flag: only the
        // first word may be the positional argument.
        if pos != 0 {
            return Ok(None);
        }
        let value = parse(self.words[0])?;
        self.words.remove(0);
        Ok(Some(value))
    }

    fn required<T>(
        &mut self,
        what: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, String> {
        self.optional(parse)?
            .ok_or_else(|| format!("missing {what}; usage: {}", self.usage))
    }

    fn flag<T>(
        &mut self,
        name: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, String> {
        let Some(pos) = self.words.iter().position(|w| *w == name) else {
            return Ok(None);
        };
        let value = self
            .words
            .get(pos + 1)
            .ok_or_else(|| format!("{name} needs a value; usage: {}", self.usage))?;
        let value = parse(value)?;
        self.words.drain(pos..pos + 2);
        Ok(Some(value))
    }

    fn finish(self) -> Result<(), String> {
        match self.words.first() {
            None => Ok(()),
            Some(extra) => Err(format!("unexpected '{extra}'; usage: {}", self.usage)),
        }
    }
}

/// `500ms`, `10s`, `2m`, `1h`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("bad duration '{s}': use e.g. 500ms, 10s, 2m");
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: f64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(bad()),
    };
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(seconds))
}

fn parse_break(args: &mut Args<'_>) -> Result<Condition, String> {
    let usage = args.usage;
    let what = args.required("what to break on", |s| Ok(s.to_string()))?;
    match what.as_str() {
        "fd" => Ok(Condition::Fd {
            fd: args.required("N", parse_fd)?,
        }),
        "count" => Ok(Condition::Count {
            count: args.required("N", |s| {
                s.parse::<u32>()
                    .map_err(|_| format!("expected a count, got '{s}'"))
            })?,
        }),
        "site" => {
            let pattern = std::mem::take(&mut args.words).join(" ");
            if pattern.is_empty() {
                return Err(format!("missing PATTERN; usage: {usage}"));
            }
            Ok(Condition::Site { pattern })
        }
        other => Err(format!("cannot break on '{other}'; usage: {usage}")),
    }
}

fn parse_id(s: &str) -> Result<u32, String> {
    s.parse()
        .map_err(|_| format!("expected a breakpoint number, got '{s}'"))
}

fn parse_count(s: &str) -> Result<usize, String> {
    s.parse()
        .map_err(|_| format!("expected a count, got '{s}'"))
}

fn parse_fd(s: &str) -> Result<i32, String> {
    s.parse::<i32>()
        .ok()
        .filter(|&fd| fd >= 0)
        .ok_or_else(|| format!("expected an fd number, got '{s}'"))
}

fn parse_kind(s: &str) -> Result<FdKind, String> {
    FdKind::parse(s).ok_or_else(|| {
        let all: Vec<&str> = FdKind::ALL.iter().map(|k| k.as_str()).collect();
        format!("unknown kind '{s}'; kinds: {}", all.join(", "))
    })
}

/// The text of `help` or `help CMD`.
pub fn help(topic: Option<&str>) -> Result<String, String> {
    match topic {
        Some(word) => {
            let spec = lookup(word)?;
            let mut text = format!("{}\n  {}", spec.usage, spec.help);
            if !spec.aliases.is_empty() {
                text.push_str(&format!("\n  Also: {}", spec.aliases.join(", ")));
            }
            Ok(text)
        }
        None => {
            let width = COMMANDS.iter().map(|s| s.usage.len()).max().unwrap_or(0);
            let mut text =
                String::from("Commands (unique prefixes work; every report takes --json):\n");
            for spec in COMMANDS {
                let first = spec
                    .help
                    .split(". ")
                    .next()
                    .unwrap_or(spec.help)
                    .trim_end_matches('.');
                text.push_str(&format!("  {:width$}  {}\n", spec.usage, first));
            }
            Ok(text.trim_end().to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(line: &str) -> Command {
        parse(line).unwrap().unwrap().command
    }

    #[test]
    fn abbreviations_and_arguments_parse() {
        assert_eq!(cmd("c"), Command::Continue { duration: None });
        assert_eq!(
            cmd("continue 5s"),
            Command::Continue {
                duration: Some(Duration::from_secs(5))
            }
        );
        assert_eq!(
            cmd("cont 500ms"),
            Command::Continue {
                duration: Some(Duration::from_millis(500))
            }
        );
        assert_eq!(cmd("s 3"), Command::Step { count: 3 });
        assert_eq!(
            cmd("le --min 2 --since m1"),
            Command::Leaks {
                since: Some("m1".into()),
                min: 2
            }
        );
        assert_eq!(
            cmd("fds --kind socket"),
            Command::Fds {
                kind: Some(FdKind::Socket)
            }
        );
        assert_eq!(cmd("where"), Command::Backtrace);
        assert_eq!(cmd("q"), Command::Quit);
        assert_eq!(
            cmd("b count 40000"),
            Command::Break {
                condition: Condition::Count { count: 40000 }
            }
        );
        assert_eq!(
            cmd("break site statsd.c:86"),
            Command::Break {
                condition: Condition::Site {
                    pattern: "statsd.c:86".into()
                }
            }
        );
        assert_eq!(
            cmd("catch socket close"),
            Command::Catch {
                what: vec!["socket".into(), "close".into()]
            }
        );
        assert_eq!(cmd("i b"), Command::InfoBreakpoints);
        assert_eq!(cmd("d"), Command::Delete { id: None });
        assert_eq!(cmd("disable 2"), Command::Disable { id: 2 });
        assert!(parse("stats --json").unwrap().unwrap().json);
        assert_eq!(parse("  # a comment").unwrap(), None);
    }

    #[test]
    fn mistakes_get_one_line_that_names_the_fix() {
        assert_eq!(
            parse("leeks").unwrap_err(),
            "unknown command 'leeks'; did you mean 'leaks'? (try 'help')"
        );
        assert!(
            parse("de")
                .unwrap_err()
                .starts_with("ambiguous command 'de'")
        );
        assert!(
            parse("catch sock")
                .unwrap_err()
                .starts_with("cannot catch 'sock'")
        );
        assert!(
            parse("continue soon")
                .unwrap_err()
                .starts_with("bad duration")
        );
        assert!(parse("history").unwrap_err().starts_with("missing FD"));
        assert!(
            parse("fds --kind sock")
                .unwrap_err()
                .starts_with("unknown kind 'sock'")
        );
        assert!(
            parse("stats now")
                .unwrap_err()
                .starts_with("unexpected 'now'")
        );
    }

    #[test]
    fn every_command_has_help() {
        for spec in COMMANDS {
            assert!(help(Some(spec.name)).unwrap().contains(spec.usage));
        }
    }
}
