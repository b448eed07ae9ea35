//! The command line (`attach`, `run`, `inspect`, `demo` and their options):
//! clap parses it; `Config` is what the rest
//! of fdbg needs, validated.

use std::path::PathBuf;

use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "fdbg",
    version,
    about = "A debugger for file-descriptor leaks in live Linux processes"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Sub,
}

#[derive(Subcommand, Debug)]
pub enum Sub {
    /// Attach to every thread of a running process
    Attach {
        /// The process id
        pid: i32,
        #[command(flatten)]
        session: SessionArgs,
    },
    /// Start a program under fdbg
    Run {
        #[command(flatten)]
        session: SessionArgs,
        /// The program and its arguments (after --)
        #[arg(last = true, required = true, value_name = "PROGRAM")]
        argv: Vec<String>,
    },
    /// A built-in leaky login server and a client, attached, for a first look
    Demo {
        #[command(flatten)]
        session: SessionArgs,
        /// How many logins the demo client makes
        #[arg(long, default_value_t = 5)]
        logins: u32,
    },
    /// One-shot triage from /proc, no ptrace: fds by kind, sockets by state
    Inspect {
        /// The process id
        pid: i32,
        /// Print the report as one JSON document
        #[arg(long)]
        json: bool,
    },
    /// The demo's login server (started by `fdbg demo`)
    #[command(name = "__demo-server", hide = true)]
    DemoServer,
}

#[derive(Args, Debug, Clone, Default)]
pub struct SessionArgs {
    /// Run a REPL command; repeatable, in order, before the prompt
    // The value may start with a dash: `-e '--json fds'` is a command.
    #[arg(
        short = 'e',
        long = "eval",
        value_name = "CMD",
        allow_hyphen_values = true
    )]
    pub eval: Vec<String>,
    /// Run REPL commands from FILE (one per line, # comments)
    #[arg(short = 'x', long = "script", value_name = "FILE")]
    pub script: Vec<PathBuf>,
    /// Run the -e/-x commands, then detach (attach) or kill (run) and exit
    #[arg(long)]
    pub batch: bool,
    /// Print every report as one JSON document per line
    #[arg(long)]
    pub json: bool,
    /// Also trace child processes (each with its own fd table)
    #[arg(long)]
    pub follow_forks: bool,
    /// Same as `break count N`: stop when the open-fd count exceeds N
    #[arg(short = 'b', long = "break-count", value_name = "N")]
    pub break_count: Option<u32>,
    /// Where fd events come from: perf (attach: samples in the kernel's ring
    /// buffers, no stop, while no breakpoint needs one, else a SIGTRAP
    /// after each fd syscall only), sigtrap (that SIGTRAP always) or ptrace
    /// (attach: PTRACE_SYSCALL, 2 stops per syscall, like strace attached;
    /// run: a seccomp filter, 2 stops per fd event, run's default)
    #[arg(long, value_enum, value_name = "MECH", env = "FDBG_EVENTS")]
    pub events: Option<EventsArg>,
    /// How many of the latest fd events to keep for history, step and bt
    /// (about 100 bytes each; every other report is exact without them)
    #[arg(long, value_name = "N", default_value_t = crate::fdtable::DEFAULT_KEPT,
          value_parser = at_least_one)]
    pub keep_events: usize,
}

/// A count of at least 1.
fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventsArg {
    /// attach: perf where the kernel allows it, else ptrace, saying why;
    /// run: the seccomp filter
    Auto,
    Perf,
    Sigtrap,
    Ptrace,
}

/// What to trace.
#[derive(Clone, Debug)]
pub enum Target {
    Attach(i32),
    Run(Vec<String>),
    Demo { logins: u32 },
}

/// A validated invocation.
#[derive(Clone, Debug)]
pub struct Config {
    pub target: Target,
    /// The -e and -x commands, in command-line order, scripts expanded.
    pub commands: Vec<String>,
    pub batch: bool,
    pub json: bool,
    pub follow_forks: bool,
    pub events: crate::tracer::EventsChoice,
    pub keep_events: usize,
}

pub enum Parsed {
    Session(Config),
    Inspect { pid: i32, json: bool },
    DemoServer,
}

/// Parse the process's arguments. Usage errors exit 2 (clap's convention).
pub fn parse() -> anyhow::Result<Parsed> {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let sub_matches = matches.subcommand().map(|(_, m)| m);
    let (target, session) = match cli.command {
        Sub::Attach { pid, session } => (Target::Attach(pid), session),
        Sub::Run { session, argv } => (Target::Run(argv), session),
        Sub::Demo { session, logins } => (Target::Demo { logins }, session),
        Sub::DemoServer => return Ok(Parsed::DemoServer),
        Sub::Inspect { pid, json } => return Ok(Parsed::Inspect { pid, json }),
    };
    let mut commands = ordered_commands(sub_matches, &session)?;
    if let Some(n) = session.break_count {
        commands.insert(0, format!("break count {n}"));
    }
    Ok(Parsed::Session(Config {
        target,
        commands,
        batch: session.batch,
        json: session.json,
        follow_forks: session.follow_forks,
        events: match session.events {
            None | Some(EventsArg::Auto) => crate::tracer::EventsChoice::Auto,
            Some(EventsArg::Perf) => crate::tracer::EventsChoice::Perf,
            Some(EventsArg::Sigtrap) => crate::tracer::EventsChoice::Sigtrap,
            Some(EventsArg::Ptrace) => crate::tracer::EventsChoice::Ptrace,
        },
        keep_events: session.keep_events,
    }))
}

/// Interleave -e and -x in the order given; a script's lines are its
/// commands (blank lines and # comments are skipped later by the parser).
fn ordered_commands(
    matches: Option<&ArgMatches>,
    session: &SessionArgs,
) -> anyhow::Result<Vec<String>> {
    let mut ordered: Vec<(usize, Vec<String>)> = Vec::new();
    if let Some(m) = matches {
        if let Some(indices) = m.indices_of("eval") {
            for (i, cmd) in indices.zip(&session.eval) {
                ordered.push((i, vec![cmd.clone()]));
            }
        }
        if let Some(indices) = m.indices_of("script") {
            for (i, file) in indices.zip(&session.script) {
                let text = std::fs::read_to_string(file)
                    .map_err(|e| anyhow::anyhow!("cannot read script {}: {e}", file.display()))?;
                ordered.push((i, text.lines().map(str::to_string).collect()));
            }
        }
    }
    ordered.sort_by_key(|(i, _)| *i);
    Ok(ordered.into_iter().flat_map(|(_, cmds)| cmds).collect())
}
