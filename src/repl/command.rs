//! The REPL's commands: one table gives each command's names, usage, help,
//! parser and Tab completions, so `help`, the parser and the prompt cannot
//! disagree. `-e`, `-x` and the prompt all go through `parse`, so they
//! behave the same.

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
    /// `duration` is at most [`MAX_DURATION`].
    Continue {
        duration: Option<Duration>,
        /// `--every PERIOD`: a tick per period while running.
        every: Option<Duration>,
    },
    Finish,
    Balance {
        function: Option<String>,
    },
    /// `count` is at least 1.
    Step {
        count: usize,
    },
    Fds {
        kind: Option<FdKind>,
    },
    Leaks {
        since: Option<String>,
        min: usize,
        /// `--older DURATION`: only fds created longer ago than this.
        older: Option<Duration>,
        /// `--closed`: where each site's other fds were closed.
        closed: bool,
        /// `--folded`: `frame;…;frame COUNT` lines for flame graphs.
        folded: bool,
    },
    /// `site` is a number `leaks` gives (from 1).
    Reclaim {
        site: usize,
        older: Option<Duration>,
        force: bool,
        yes: bool,
    },
    Who {
        what: WhoTarget,
    },
    History {
        fd: i32,
    },
    Backtrace,
    Mark {
        name: Option<String>,
    },
    Diff {
        name: Option<String>,
    },
    Break {
        condition: Condition,
    },
    Catch {
        what: Vec<String>,
    },
    InfoBreakpoints,
    Delete {
        id: Option<u32>,
    },
    Enable {
        id: u32,
    },
    Disable {
        id: u32,
    },
    Stats,
    Sockets,
    Threads,
    Detach,
    Quit,
    /// `topic` is a command's full name.
    Help {
        topic: Option<String>,
    },
}

/// What `who` looks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhoTarget {
    /// `socket:[N]` (or `pipe:[N]`, ...): an inode.
    Inode(u64),
    /// A bare number: an fd of the process if it has one so numbered,
    /// else an inode.
    Number(u64),
}

/// The longest `continue DURATION`: a year.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// How much of a word the user typed an error message repeats.
const ECHO_CHARS: usize = 60;

/// A line the REPL cannot run. Each message is one line that names the
/// cause and the fix; words the user typed are shown escaped and cut to
/// [`ECHO_CHARS`] characters.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplError {
    #[error("unknown command '{}'; did you mean '{near}'? (try 'help')", echo(.word))]
    Typo { word: String, near: &'static str },
    #[error("unknown command '{}' (try 'help')", echo(.word))]
    UnknownCommand { word: String },
    #[error("ambiguous command '{}': {}", echo(.word), .matches.join(", "))]
    Ambiguous {
        word: String,
        matches: Vec<&'static str>,
    },
    #[error("missing {what}; usage: {usage}")]
    Missing {
        what: &'static str,
        usage: &'static str,
    },
    #[error("{flag} needs a value; usage: {usage}")]
    NeedsValue {
        flag: &'static str,
        usage: &'static str,
    },
    #[error("unexpected '{}'; usage: {usage}", echo(.word))]
    Unexpected { word: String, usage: &'static str },
    #[error("bad duration '{}': use e.g. 500ms, 10s, 2m", echo(.word))]
    BadDuration { word: String },
    #[error("duration '{}' is too long: at most 365 days (8760h)", echo(.word))]
    DurationTooLong { word: String },
    #[error("period '{}' is too short: at least 100ms", echo(.word))]
    PeriodTooShort { word: String },
    /// `what` is "a count", "an fd number", ...
    #[error("expected {what}, got '{}'", echo(.word))]
    Expected { what: &'static str, word: String },
    #[error("step needs N ≥ 1; usage: step [N]")]
    ZeroSteps,
    #[error("unknown kind '{}'; kinds: {}", echo(.word), kind_names())]
    UnknownKind { word: String },
    #[error("catch what? usage: {usage}")]
    CatchWhat { usage: &'static str },
    #[error(
        "cannot catch '{}': name an fd kind (socket, pipe, file, ...) or an fd syscall (close, accept4, ...)",
        echo(.word)
    )]
    CannotCatch { word: String },
    #[error("info {}: only 'info breakpoints' is known", echo(.word))]
    UnknownInfo { word: String },
    #[error("cannot break on '{}'; usage: {usage}", echo(.word))]
    CannotBreakOn { word: String, usage: &'static str },
    #[error("empty PATTERN: name a function (or part of one) or FILE:LINE; usage: {usage}")]
    EmptyPattern { usage: &'static str },
    #[error("--json needs a command, e.g. 'fds --json' (try 'help')")]
    JsonAlone,
    /// A line from stdin that is not text.
    #[error("line is not valid UTF-8; it was not run")]
    NotUtf8,
}

/// `word` as an error message shows it: control characters escaped, cut
/// to [`ECHO_CHARS`] characters with an ellipsis.
pub fn echo(word: &str) -> String {
    let word = crate::repl::render::escape(word);
    match word.char_indices().nth(ECHO_CHARS) {
        Some((cut, _)) => format!("{}…", &word[..cut]),
        None => word.into_owned(),
    }
}

fn kind_names() -> String {
    let all: Vec<&str> = FdKind::ALL.iter().map(|k| k.as_str()).collect();
    all.join(", ")
}

/// What Tab offers for a word.
#[derive(Clone, Copy, Debug)]
pub enum Words {
    /// Nothing: the word is free text or a number.
    Free,
    /// A flag that takes no value (`--yes`): what follows it is the next
    /// word of the command.
    Switch,
    Fixed(&'static [&'static str]),
    /// fd kinds.
    Kinds,
    /// fd kinds and the traced syscalls' names.
    KindsAndSyscalls,
    /// Command names.
    Commands,
}

impl Words {
    pub fn candidates(self) -> Vec<String> {
        match self {
            Words::Free | Words::Switch => Vec::new(),
            Words::Fixed(words) => words.iter().map(|w| w.to_string()).collect(),
            Words::Kinds => FdKind::ALL.iter().map(|k| k.as_str().into()).collect(),
            Words::KindsAndSyscalls => Words::Kinds
                .candidates()
                .into_iter()
                .chain(
                    crate::syscalls::traced_syscalls()
                        .iter()
                        .filter_map(|&nr| crate::syscalls::syscall_name(nr))
                        .map(str::to_string),
                )
                .collect(),
            Words::Commands => COMMANDS.iter().map(|c| c.name.to_string()).collect(),
        }
    }
}

/// A command's positional words, for Tab.
#[derive(Clone, Copy, Debug)]
pub enum Operands {
    /// None, or free text: Tab offers the flags.
    Free,
    /// The first word after the name is one of these.
    First(Words),
    /// Every word after the name is one of these.
    Every(Words),
}

/// One row of the command table: everything about one command.
pub struct Spec {
    pub name: &'static str,
    /// Short forms accepted besides unique prefixes of `name`.
    pub aliases: &'static [&'static str],
    pub usage: &'static str,
    pub help: &'static str,
    /// The words after the name (without `--json`) → the command.
    pub parse: fn(&mut Args<'_>) -> Result<Command, ReplError>,
    pub operands: Operands,
    /// The flags besides `--json` (each is in `usage`), with what Tab
    /// offers for their values.
    pub flags: &'static [(&'static str, Words)],
}

pub const COMMANDS: &[Spec] = &[
    Spec {
        name: "continue",
        aliases: &["c", "cont"],
        usage: "continue [DURATION] [--every PERIOD]",
        help: "Resume all threads until a breakpoint, the process exits, Ctrl-C, or DURATION (500ms, 10s, 2m) passes. With --every, a line per PERIOD meanwhile: elapsed time, open fds, the change since the last line, the sites growing fastest.",
        parse: |args| {
            let every = args.flag("--every", parse_period)?;
            Ok(Command::Continue {
                duration: args.optional(parse_duration)?,
                every,
            })
        },
        operands: Operands::Free,
        flags: &[("--every", Words::Free)],
    },
    Spec {
        name: "step",
        aliases: &["s"],
        usage: "step [N]",
        help: "Resume until the next N fd events (default 1); print each with its stack.",
        parse: |args| match args.optional(parse_count)? {
            Some(0) => Err(ReplError::ZeroSteps),
            count => Ok(Command::Step {
                count: count.unwrap_or(1),
            }),
        },
        operands: Operands::Free,
        flags: &[],
    },
    Spec {
        name: "finish",
        aliases: &["fin"],
        usage: "finish",
        help: "At a function breakpoint's stop: run until that call returns, and show its return value and its fd delta (fds it created that are still open, with their sites; fds it closed that were open before; how many it opened and closed).",
        parse: |_| Ok(Command::Finish),
        operands: Operands::Free,
        flags: &[],
    },
    Spec {
        name: "balance",
        aliases: &[],
        usage: "balance [NAME]",
        help: "With NAME: from now on, measure every call of function NAME (entry to its own return, by thread), without stopping at the prompt; each call costs two stops. Alone: per function, the calls, the fds they created and left open (with their sites), the fds from before they closed, and the net fds per call.",
        parse: |args| {
            let words = args.rest();
            let name = unquote(&words.join(" ")).trim().to_string();
            Ok(Command::Balance {
                function: (!name.is_empty()).then_some(name),
            })
        },
        operands: Operands::Free,
        flags: &[],
    },
    Spec {
        name: "break",
        aliases: &["b", "br"],
        usage: "break fd N | break count N | break site PATTERN | break [func] NAME",
        help: "Stop when fd number N is created or closed; when the open-fd count becomes greater than N; when an fd is created by a stack with a frame matching PATTERN (a function-name substring, or FILE:LINE); or when a thread enters function NAME (C, C++ with or without arguments, a Rust path or its last parts), in the program and its loaded libraries. At a function stop, 'step' still walks fd events.",
        parse: |args| {
            Ok(Command::Break {
                condition: parse_break(args)?,
            })
        },
        operands: Operands::First(Words::Fixed(&["fd", "count", "site", "func"])),
        flags: &[],
    },
    Spec {
        name: "catch",
        aliases: &[],
        usage: "catch KIND|SYSCALL...",
        help: "Stop on every event of these fd kinds (socket, pipe, file, ...) or syscall names (close, accept4, ...).",
        parse: |args| {
            let what: Vec<String> = args.rest().iter().map(|w| w.to_string()).collect();
            if what.is_empty() {
                return Err(ReplError::CatchWhat { usage: args.usage });
            }
            if let Some(bad) = what.iter().find(|w| !valid_catch(w)) {
                return Err(ReplError::CannotCatch { word: bad.clone() });
            }
            Ok(Command::Catch { what })
        },
        operands: Operands::Every(Words::KindsAndSyscalls),
        flags: &[],
    },
    Spec {
        name: "info",
        aliases: &["i"],
        usage: "info breakpoints",
        help: "List breakpoints and catchpoints with their hit counts.",
        parse: |args| {
            let what = args.required("what", |s| Ok(s.to_string()))?;
            if !"breakpoints".starts_with(what.as_str()) {
                return Err(ReplError::UnknownInfo { word: what });
            }
            Ok(Command::InfoBreakpoints)
        },
        operands: Operands::First(Words::Fixed(&["breakpoints"])),
        flags: &[],
    },
    Spec {
        name: "delete",
        aliases: &["d"],
        usage: "delete [ID]",
        help: "Delete breakpoint ID, or all of them.",
        parse: |args| {
            Ok(Command::Delete {
                id: args.optional(parse_id)?,
            })
        },
        operands: Operands::Free,
        flags: &[],
    },
    Spec {
        name: "disable",
        aliases: &[],
        usage: "disable ID",
        help: "Keep breakpoint ID but do not stop at it.",
        parse: |args| {
            Ok(Command::Disable {
                id: args.required("ID", parse_id)?,
            })
        },
        operands: Operands::Free,
        flags: &[],
    },
    Spec {
        name: "enable",
        aliases: &[],
        usage: "enable ID",
        help: "Stop at breakpoint ID again.",
        parse: |args| {
            Ok(Command::Enable {
                id: args.required("ID", parse_id)?,
            })
        },
        operands: Operands::Free,
        flags: &[],
    },
    Spec {
        name: "fds",
        aliases: &[],
        usage: "fds [--kind KIND] [--json]",
        help: "Open fds now: number, kind, target, and the event and stack that created it (or `before attach`).",
        parse: |args| {
            Ok(Command::Fds {
                kind: args.flag("--kind", parse_kind)?,
            })
        },
        operands: Operands::Free,
        flags: &[("--kind", Words::Kinds)],
    },
    Spec {
        name: "leaks",
        aliases: &[],
        usage: "leaks [--since MARK] [--min N] [--older DURATION] [--closed] [--folded] [--json]",
        help: "Fds created since attach (or since MARK) and still open, grouped by creating stack, biggest group first. Each site is numbered and shows its age range and rate; --older keeps only fds created more than DURATION ago. --closed adds, per site, where its other fds were closed (closing stacks with counts). --folded prints one `frame;...;frame COUNT` line per site, outermost frame first, for flame-graph tools (inferno-flamegraph, flamegraph.pl).",
        parse: |args| {
            let since = args.flag("--since", |s| Ok(s.to_string()))?;
            let min = args.flag("--min", parse_count)?.unwrap_or(1);
            let older = args.flag("--older", parse_duration)?;
            let closed = args.switch("--closed");
            let folded = args.switch("--folded");
            Ok(Command::Leaks {
                since,
                min,
                older,
                closed,
                folded,
            })
        },
        operands: Operands::Free,
        flags: &[
            ("--since", Words::Free),
            ("--min", Words::Free),
            ("--older", Words::Free),
            ("--closed", Words::Switch),
            ("--folded", Words::Switch),
        ],
    },
    Spec {
        name: "reclaim",
        aliases: &[],
        usage: "reclaim SITE [--older DURATION] [--force] [--yes] [--json]",
        help: "Close the leaked fds of leaks' site SITE inside the process, by a close() fdbg runs in one of its stopped threads (its registers and stack put back; should fdbg die meanwhile, the thread puts itself back). Without --yes, lists what it would close and why each is safe. By default only sockets never bound or connected (netstat cannot see them: nothing talks through them), checked again right before closing; connected sockets, files and pipes need --force. --older closes only fds created more than DURATION ago. Each close is recorded as an event closed by fdbg.",
        parse: |args| {
            let older = args.flag("--older", parse_duration)?;
            let force = args.switch("--force");
            let yes = args.switch("--yes");
            let site = args.required("SITE", parse_count)?;
            if site == 0 {
                return Err(ReplError::Expected {
                    what: "a site number from 1 (as leaks shows them)",
                    word: "0".into(),
                });
            }
            Ok(Command::Reclaim {
                site,
                older,
                force,
                yes,
            })
        },
        operands: Operands::Free,
        flags: &[
            ("--older", Words::Free),
            ("--force", Words::Switch),
            ("--yes", Words::Switch),
        ],
    },
    Spec {
        name: "who",
        aliases: &[],
        usage: "who socket:[INODE] | INODE | FD [--json]",
        help: "Which traced process and fd hold this inode (as `ls -l /proc/PID/fd` shows it, e.g. socket:[123456]), or fd FD of the process: its kind and target, the event and stack that created it, and the history of its number.",
        parse: |args| {
            Ok(Command::Who {
                what: args.required("socket:[INODE], INODE or FD", parse_who)?,
            })
        },
        operands: Operands::Free,
        flags: &[],
    },
    Spec {
        name: "history",
        aliases: &["hist"],
        usage: "history FD [--json]",
        help: "Every event on fd number FD since attach, with stacks.",
        parse: |args| {
            Ok(Command::History {
                fd: args.required("FD", parse_fd)?,
            })
        },
        operands: Operands::Free,
        flags: &[],
    },
    Spec {
        name: "bt",
        aliases: &["where", "backtrace"],
        usage: "bt [--json]",
        help: "The stack of the event the process is stopped at.",
        parse: |_| Ok(Command::Backtrace),
        operands: Operands::Free,
        flags: &[],
    },
    Spec {
        name: "mark",
        aliases: &[],
        usage: "mark [NAME]",
        help: "Remember this moment (default name: the next number).",
        parse: |args| {
            Ok(Command::Mark {
                name: args.optional(|s| Ok(s.to_string()))?,
            })
        },
        operands: Operands::Free,
        flags: &[],
    },
    Spec {
        name: "diff",
        aliases: &[],
        usage: "diff [NAME] [--json]",
        help: "Since the mark (default: the latest): fds opened and still open (by site), how many opened and closed, and fds from before it that were closed.",
        parse: |args| {
            Ok(Command::Diff {
                name: args.optional(|s| Ok(s.to_string()))?,
            })
        },
        operands: Operands::Free,
        flags: &[],
    },
    Spec {
        name: "stats",
        aliases: &[],
        usage: "stats [--json]",
        help: "Events by syscall and kind, open count, bad closes, ptrace stops, events/s.",
        parse: |_| Ok(Command::Stats),
        operands: Operands::Free,
        flags: &[],
    },
    Spec {
        name: "sockets",
        aliases: &["sock"],
        usage: "sockets [--json]",
        help: "The process's sockets: protocol, addresses, TCP state, counts by state, and the sockets netstat cannot see (never bound or connected), grouped by creating site.",
        parse: |_| Ok(Command::Sockets),
        operands: Operands::Free,
        flags: &[],
    },
    Spec {
        name: "threads",
        aliases: &[],
        usage: "threads [--json]",
        help: "Threads and their states.",
        parse: |_| Ok(Command::Threads),
        operands: Operands::Free,
        flags: &[],
    },
    Spec {
        name: "detach",
        aliases: &[],
        usage: "detach",
        help: "Let the process go, untraced; keep the recorded data for queries.",
        parse: |_| Ok(Command::Detach),
        operands: Operands::Free,
        flags: &[],
    },
    Spec {
        name: "quit",
        aliases: &["q", "exit"],
        usage: "quit",
        help: "Detach (attach) or kill (run), and exit.",
        parse: |_| Ok(Command::Quit),
        operands: Operands::Free,
        flags: &[],
    },
    Spec {
        name: "help",
        aliases: &["h", "?"],
        usage: "help [COMMAND]",
        help: "List the commands, or explain one.",
        parse: |args| {
            Ok(Command::Help {
                topic: args.optional(|s| lookup(s).map(|spec| spec.name.to_string()))?,
            })
        },
        operands: Operands::First(Words::Commands),
        flags: &[],
    },
];

/// Find a command by name, alias or unique prefix.
pub fn lookup(word: &str) -> Result<&'static Spec, ReplError> {
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
            Some(near) => ReplError::Typo {
                word: word.into(),
                near,
            },
            None => ReplError::UnknownCommand { word: word.into() },
        }),
        many => Err(ReplError::Ambiguous {
            word: word.into(),
            matches: many.iter().map(|s| s.name).collect(),
        }),
    }
}

/// The command name nearest to `word` by edit distance, if it is near
/// enough to be a typo (at most a third of the word's letters differ).
fn closest(word: &str) -> Option<&'static str> {
    // The distance is at least the difference in length: past this no
    // name is near, and a huge word would cost time for nothing.
    if word.len() > 4 * COMMANDS.iter().map(|s| s.name.len()).max().unwrap_or(0) {
        return None;
    }
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

/// Parse one line. `Ok(None)` for a blank line or a comment. `--json` may
/// stand anywhere in the line, also first.
pub fn parse(line: &str) -> Result<Option<Invocation>, ReplError> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let mut words: Vec<&str> = line.split_whitespace().collect();
    let json = words.contains(&"--json");
    words.retain(|w| *w != "--json");
    let Some((&name, rest)) = words.split_first() else {
        return Err(ReplError::JsonAlone);
    };
    let spec = lookup(name)?;
    let mut args = Args {
        words: rest.to_vec(),
        usage: spec.usage,
    };
    let command = (spec.parse)(&mut args)?;
    args.finish()?;
    Ok(Some(Invocation { command, json }))
}

/// The words after the command name, consumed by the table's parsers.
pub struct Args<'a> {
    words: Vec<&'a str>,
    /// The command's usage line, for error messages.
    pub usage: &'static str,
}

impl<'a> Args<'a> {
    fn optional<T>(
        &mut self,
        parse: impl Fn(&str) -> Result<T, ReplError>,
    ) -> Result<Option<T>, ReplError> {
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
        what: &'static str,
        parse: impl Fn(&str) -> Result<T, ReplError>,
    ) -> Result<T, ReplError> {
        self.optional(parse)?.ok_or(ReplError::Missing {
            what,
            usage: self.usage,
        })
    }

    fn flag<T>(
        &mut self,
        name: &'static str,
        parse: impl Fn(&str) -> Result<T, ReplError>,
    ) -> Result<Option<T>, ReplError> {
        let Some(pos) = self.words.iter().position(|w| *w == name) else {
            return Ok(None);
        };
        let value = self.words.get(pos + 1).ok_or(ReplError::NeedsValue {
            flag: name,
            usage: self.usage,
        })?;
        let value = parse(value)?;
        self.words.drain(pos..pos + 2);
        Ok(Some(value))
    }

    /// Whether the flag `name` (one that takes no value) is there.
    fn switch(&mut self, name: &'static str) -> bool {
        let before = self.words.len();
        self.words.retain(|w| *w != name);
        self.words.len() != before
    }

    /// All the words left.
    fn rest(&mut self) -> Vec<&'a str> {
        std::mem::take(&mut self.words)
    }

    fn finish(self) -> Result<(), ReplError> {
        match self.words.first() {
            None => Ok(()),
            Some(extra) => Err(ReplError::Unexpected {
                word: extra.to_string(),
                usage: self.usage,
            }),
        }
    }
}

/// `500ms`, `10s`, `2m`, `1h`; a bare number is seconds. At most
/// [`MAX_DURATION`].
/// A tick period: a duration of at least 100 ms (a tick reads the model
/// and may symbolize; more often would cost the process).
fn parse_period(s: &str) -> Result<Duration, ReplError> {
    let period = parse_duration(s)?;
    if period < MIN_PERIOD {
        return Err(ReplError::PeriodTooShort {
            word: s.to_string(),
        });
    }
    Ok(period)
}

/// The shortest `--every PERIOD`.
pub const MIN_PERIOD: Duration = Duration::from_millis(100);

pub fn parse_duration(s: &str) -> Result<Duration, ReplError> {
    let bad = || ReplError::BadDuration { word: s.into() };
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
    if seconds > MAX_DURATION.as_secs_f64() {
        return Err(ReplError::DurationTooLong { word: s.into() });
    }
    Ok(Duration::from_secs_f64(seconds))
}

fn parse_break(args: &mut Args<'_>) -> Result<Condition, ReplError> {
    let usage = args.usage;
    let what = args.required("what to break on", |s| Ok(s.to_string()))?;
    match what.as_str() {
        "fd" => Ok(Condition::Fd {
            fd: args.required("N", parse_fd)?,
        }),
        "count" => Ok(Condition::Count {
            count: args.required("N", |s| {
                s.parse::<u32>().map_err(|_| ReplError::Expected {
                    what: "a count",
                    word: s.into(),
                })
            })?,
        }),
        "site" => {
            let words = args.rest();
            if words.is_empty() {
                return Err(ReplError::Missing {
                    what: "PATTERN",
                    usage,
                });
            }
            let pattern = unquote(&words.join(" ")).trim().to_string();
            if pattern.is_empty() {
                return Err(ReplError::EmptyPattern { usage });
            }
            Ok(Condition::Site { pattern })
        }
        "func" => {
            let words = args.rest();
            let pattern = unquote(&words.join(" ")).trim().to_string();
            if pattern.is_empty() {
                return Err(ReplError::Missing {
                    what: "NAME",
                    usage,
                });
            }
            Ok(Condition::Func { pattern })
        }
        // `break NAME`: a function, as in gdb.
        other if !other.is_empty() && !other.starts_with('-') => Ok(Condition::Func {
            pattern: unquote(other).to_string(),
        }),
        other => Err(ReplError::CannotBreakOn {
            word: other.into(),
            usage,
        }),
    }
}

/// `s` without one pair of matching quotes around it ('…' or "…").
fn unquote(s: &str) -> &str {
    for quote in ['\'', '"'] {
        if let Some(inner) = s
            .strip_prefix(quote)
            .and_then(|rest| rest.strip_suffix(quote))
        {
            return inner;
        }
    }
    s
}

fn parse_id(s: &str) -> Result<u32, ReplError> {
    s.parse().map_err(|_| ReplError::Expected {
        what: "a breakpoint number",
        word: s.into(),
    })
}

fn parse_count(s: &str) -> Result<usize, ReplError> {
    s.parse().map_err(|_| ReplError::Expected {
        what: "a count",
        word: s.into(),
    })
}

/// `socket:[123]` (any `TYPE:[N]`) or a bare number.
fn parse_who(s: &str) -> Result<WhoTarget, ReplError> {
    let expected = || ReplError::Expected {
        what: "socket:[INODE], an inode or an fd number",
        word: s.to_string(),
    };
    if let Some((_, inode)) = s.split_once(":[") {
        let inode = inode.strip_suffix(']').ok_or_else(expected)?;
        return inode.parse().map(WhoTarget::Inode).map_err(|_| expected());
    }
    s.parse().map(WhoTarget::Number).map_err(|_| expected())
}

fn parse_fd(s: &str) -> Result<i32, ReplError> {
    s.parse::<i32>()
        .ok()
        .filter(|&fd| fd >= 0)
        .ok_or_else(|| ReplError::Expected {
            what: "an fd number",
            word: s.into(),
        })
}

fn parse_kind(s: &str) -> Result<FdKind, ReplError> {
    FdKind::parse(s).ok_or_else(|| ReplError::UnknownKind { word: s.into() })
}

/// The text of `help` or `help CMD`.
pub fn help(topic: Option<&str>) -> Result<String, ReplError> {
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
        assert_eq!(
            cmd("c"),
            Command::Continue {
                duration: None,
                every: None
            }
        );
        assert_eq!(
            cmd("continue 5s"),
            Command::Continue {
                duration: Some(Duration::from_secs(5)),
                every: None
            }
        );
        assert_eq!(
            cmd("cont 500ms"),
            Command::Continue {
                duration: Some(Duration::from_millis(500)),
                every: None
            }
        );
        for line in ["c 30s --every 5s", "c --every 5s 30s"] {
            assert_eq!(
                cmd(line),
                Command::Continue {
                    duration: Some(Duration::from_secs(30)),
                    every: Some(Duration::from_secs(5))
                },
                "{line}"
            );
        }
        assert_eq!(
            parse("c --every 10ms").unwrap_err().to_string(),
            "period '10ms' is too short: at least 100ms"
        );
        assert_eq!(
            cmd("leaks --older 10s"),
            Command::Leaks {
                since: None,
                min: 1,
                older: Some(Duration::from_secs(10)),
                closed: false,
                folded: false,
            }
        );
        assert_eq!(cmd("s 3"), Command::Step { count: 3 });
        assert_eq!(
            cmd("le --min 2 --since m1"),
            Command::Leaks {
                since: Some("m1".into()),
                min: 2,
                older: None,
                closed: false,
                folded: false,
            }
        );
        assert_eq!(
            cmd("leaks --folded --closed"),
            Command::Leaks {
                since: None,
                min: 1,
                older: None,
                closed: true,
                folded: true,
            }
        );
        assert_eq!(
            cmd("reclaim 2 --older 1m --yes"),
            Command::Reclaim {
                site: 2,
                older: Some(Duration::from_secs(60)),
                force: false,
                yes: true,
            }
        );
        assert_eq!(
            cmd("who socket:[4242]"),
            Command::Who {
                what: WhoTarget::Inode(4242)
            }
        );
        assert_eq!(
            cmd("who 7"),
            Command::Who {
                what: WhoTarget::Number(7)
            }
        );
        assert!(parse("who socket:[x]").is_err());
        assert!(parse("reclaim").is_err());
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

    fn err(line: &str) -> String {
        parse(line).unwrap_err().to_string()
    }

    #[test]
    fn mistakes_get_one_line_that_names_the_fix() {
        assert_eq!(
            err("leeks"),
            "unknown command 'leeks'; did you mean 'leaks'? (try 'help')"
        );
        assert!(err("de").starts_with("ambiguous command 'de'"));
        assert!(err("catch sock").starts_with("cannot catch 'sock'"));
        assert!(err("continue soon").starts_with("bad duration"));
        assert!(err("history").starts_with("missing FD"));
        assert!(err("fds --kind sock").starts_with("unknown kind 'sock'"));
        assert!(err("stats now").starts_with("unexpected 'now'"));
        assert_eq!(
            err("help leeks"),
            "unknown command 'leeks'; did you mean 'leaks'? (try 'help')"
        );
    }

    #[test]
    fn durations_are_refused_above_a_year_not_overflowed() {
        for huge in ["99999999999999999999s", "10000000000000000000s", "8761h"] {
            assert_eq!(
                parse_duration(huge),
                Err(ReplError::DurationTooLong { word: huge.into() })
            );
            assert_eq!(
                err(&format!("continue {huge}")),
                format!("duration '{huge}' is too long: at most 365 days (8760h)")
            );
        }
        assert_eq!(parse_duration("8760h"), Ok(MAX_DURATION));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        for bad in [".", "1.2.3", "1e9", "-1s", "5 s", "ms"] {
            assert_eq!(
                parse_duration(bad),
                Err(ReplError::BadDuration { word: bad.into() })
            );
        }
    }

    #[test]
    fn json_may_stand_anywhere_but_not_alone() {
        let first = parse("--json fds").unwrap().unwrap();
        assert!(first.json);
        assert_eq!(first.command, Command::Fds { kind: None });
        assert_eq!(parse("fds --json").unwrap(), Some(first));
        assert_eq!(parse("--json").unwrap_err(), ReplError::JsonAlone);
        assert_eq!(
            parse("  --json  --json ").unwrap_err(),
            ReplError::JsonAlone
        );
    }

    #[test]
    fn step_zero_is_refused() {
        assert_eq!(parse("step 0").unwrap_err(), ReplError::ZeroSteps);
        assert_eq!(err("s 0"), "step needs N ≥ 1; usage: step [N]");
        assert_eq!(cmd("step"), Command::Step { count: 1 });
    }

    #[test]
    fn break_site_patterns_lose_their_quotes_and_may_not_be_empty() {
        let site = |pattern: &str| Command::Break {
            condition: Condition::Site {
                pattern: pattern.into(),
            },
        };
        assert_eq!(cmd("break site 'statsd.c:17'"), site("statsd.c:17"));
        assert_eq!(cmd("break site \"statsd.c:17\""), site("statsd.c:17"));
        assert_eq!(cmd("break site 'on login'"), site("on login"));
        // Unmatched quotes are part of the pattern.
        assert_eq!(cmd("break site 'statsd"), site("'statsd"));
        for empty in ["''", "\"\"", "' '"] {
            assert!(
                err(&format!("break site {empty}")).starts_with("empty PATTERN"),
                "{empty}"
            );
        }
        assert!(err("break site").starts_with("missing PATTERN"));
    }

    #[test]
    fn echoed_words_are_cut_and_escaped() {
        let long = "x".repeat(1_000_000);
        let message = err(&long);
        assert_eq!(
            message,
            format!("unknown command '{}…' (try 'help')", "x".repeat(60))
        );
        let message = err(&format!("stats {long}"));
        assert!(message.starts_with(&format!("unexpected '{}…'", "x".repeat(60))));
        assert!(message.len() < 200, "{message}");
        assert_eq!(echo(&"é".repeat(60)), "é".repeat(60));
        assert_eq!(echo("a\u{1b}[2J"), "a\\x1b[2J");
        assert!(err("catch ab\u{1b}c").starts_with("cannot catch 'ab\\x1b"));
    }

    #[test]
    fn every_command_has_help() {
        for spec in COMMANDS {
            assert!(help(Some(spec.name)).unwrap().contains(spec.usage));
        }
    }

    /// The flags Tab offers are the ones the usage line (and so help)
    /// names, and each parses.
    #[test]
    fn table_flags_match_the_usage_lines() {
        for spec in COMMANDS {
            let in_usage: Vec<&str> = spec
                .usage
                .split(|c: char| c.is_whitespace() || c == '[' || c == ']')
                .filter(|w| w.starts_with("--") && *w != "--json")
                .collect();
            let in_table: Vec<&str> = spec.flags.iter().map(|(f, _)| *f).collect();
            assert_eq!(in_usage, in_table, "{}", spec.name);
            for (flag, values) in spec.flags {
                let value = match (*flag, values) {
                    ("--kind", _) => "file",
                    (_, Words::Switch) => "",
                    _ => "1",
                };
                // A required operand first, where the command has one.
                let line = [
                    format!("{} {flag} {value}", spec.name),
                    format!("{} 1 {flag} {value}", spec.name),
                ]
                .into_iter()
                .find(|line| parse(line).is_ok());
                assert!(line.is_some(), "{} {flag} does not parse", spec.name);
            }
        }
    }
}
