//! The front end: starts the tracer on its own thread, feeds it commands
//! (the demo's logins first, then -e/-x, then the prompt), and prints what
//! comes back.
//!
//! Threads: the main thread reads commands and prints; the tracer thread
//! owns ptrace and the model (`handlers::Session`); a signal thread turns
//! SIGINT/SIGTERM/SIGHUP to fdbg into an interrupt or a clean shutdown.
//! All three signals and SIGCHLD are blocked in every thread: SIGCHLD is
//! read by the tracer from a signalfd, the others by the signal thread.

pub mod balance;
pub mod breakpoints;
pub mod command;
mod demo_script;
pub mod handlers;
pub mod prompt;
pub mod render;
pub mod report;

use std::io::Write;
use std::sync::Arc;
use std::sync::mpsc;

use nix::sys::signal::{SigSet, Signal};

use crate::cli::{Config, Target};
use crate::demo;
use crate::tracer::{TraceOptions, Tracer, WAKE_INTERRUPT, Waker};
use command::{Command, Invocation};
use handlers::{Next, Progress, Session};
use report::{Note, Report};

enum Request {
    Command(Command),
    /// fdbg got this signal: end the session (detach or kill) and exit.
    Shutdown(i32),
}

/// The tracer thread's answers to one command: reports made while it
/// runs (`Progress`, the ticks of `continue --every`), then its end, with
/// the notes made meanwhile (a debuginfod server down).
enum Reply {
    Progress(Box<Report>),
    /// Notes to say at once, before the command's end.
    Notes(Vec<String>),
    Done(Result<(Vec<Report>, Next), String>, Vec<String>),
}

fn blocked_signals() -> SigSet {
    let mut set = SigSet::empty();
    for sig in [
        Signal::SIGCHLD,
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
    ] {
        set.add(sig);
    }
    set
}

/// Run one fdbg session; returns the exit status.
pub fn run(config: Config) -> anyhow::Result<i32> {
    // Before any thread exists, so that every thread inherits the mask.
    blocked_signals().thread_block()?;
    let waker = Arc::new(Waker::new()?);
    let demo_server = match config.target {
        Target::Demo { .. } => Some(demo::start_server()?),
        _ => None,
    };
    let (request_tx, request_rx) = mpsc::channel::<Request>();
    let (reply_tx, reply_rx) = mpsc::channel::<Reply>();
    let (started_tx, started_rx) = mpsc::channel::<Result<(String, Vec<String>), String>>();

    let target = match (&config.target, &demo_server) {
        (Target::Demo { .. }, Some(server)) => Target::Attach(server.pid()),
        (t, _) => t.clone(),
    };
    let options = TraceOptions {
        follow_forks: config.follow_forks,
        own_process_group: !config.batch,
        events: config.events,
        keep_events: config.keep_events,
    };
    let tracer_waker = waker.clone();
    let tracer_thread = std::thread::Builder::new()
        .name("tracer".into())
        .spawn(move || {
            let started = match &target {
                Target::Attach(pid) => Tracer::attach(*pid, &options, tracer_waker),
                Target::Run(argv) => Tracer::launch(argv, &options, tracer_waker),
                Target::Demo { .. } => unreachable!("the demo attaches to its server"),
            };
            let mut tracer = match started {
                Ok(t) => t,
                Err(e) => {
                    let _ = started_tx.send(Err(e.to_string()));
                    return;
                }
            };
            let warnings: Vec<String> = tracer
                .take_notices()
                .into_iter()
                .map(|notice| render::note(&Note::Tracer(notice)))
                .collect();
            let _ = started_tx.send(Ok((banner(&tracer), warnings)));
            serve(Session::new(tracer), request_rx, reply_tx);
        })?;

    let signal_waker = waker.clone();
    let signal_tx = request_tx.clone();
    let interactive = !config.batch;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let set = {
                let mut s = SigSet::empty();
                for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
                    s.add(sig);
                }
                s
            };
            while let Ok(sig) = set.wait() {
                if sig == Signal::SIGINT && interactive {
                    signal_waker.wake(WAKE_INTERRUPT);
                } else {
                    signal_waker.wake(sig as i32);
                    let _ = signal_tx.send(Request::Shutdown(sig as i32));
                }
            }
        })?;

    let (banner, warnings) = match started_rx.recv() {
        Ok(Ok(started)) => started,
        Ok(Err(e)) => {
            let _ = tracer_thread.join();
            anyhow::bail!(e)
        }
        Err(_) => anyhow::bail!("the tracer thread ended before it started"),
    };
    if !config.json {
        // A closed output shows at the first report.
        let _ = say(&banner);
    }
    for warning in warnings {
        eprintln!("fdbg: {warning}");
    }
    let mut front = FrontEnd {
        requests: request_tx,
        replies: reply_rx,
        json: config.json,
        failed: false,
    };

    let mut status = None;
    if let (Target::Demo { logins }, Some(server)) = (&config.target, &demo_server) {
        status = demo_script::logins(
            &mut front,
            server,
            *logins,
            &waker,
            !config.commands.is_empty(),
        );
        if status.is_none() && config.commands.is_empty() {
            status = demo_script::first_look(&mut front);
        }
    }
    if status.is_none() {
        for line in &config.commands {
            if let Some(code) = front.line(line) {
                status = Some(code);
                break;
            }
        }
    }
    let status = match status {
        Some(code) => code,
        None if config.batch => front.send(Command::Quit).unwrap_or(0),
        None => front.prompt(),
    };
    drop(front);
    let _ = tracer_thread.join();
    drop(demo_server);
    Ok(status)
}

/// The tracer thread's loop: one request at a time.
fn serve(mut session: Session, requests: mpsc::Receiver<Request>, replies: mpsc::Sender<Reply>) {
    let progress = replies.clone();
    session.set_progress(Box::new(move |made| {
        let _ = progress.send(match made {
            Progress::Report(report) => Reply::Progress(report),
            Progress::Notes(notes) => Reply::Notes(notes.iter().map(render::note).collect()),
        });
    }));
    while let Ok(request) = requests.recv() {
        match request {
            Request::Command(command) => {
                let reply = session.execute(&command);
                if let Some(sig) = session.shutdown_requested() {
                    shutdown(&mut session, sig);
                }
                let done = matches!(reply, Ok((_, Next::Exit(_))));
                let notes = session.take_notes().iter().map(render::note).collect();
                if replies.send(Reply::Done(reply, notes)).is_err() || done {
                    return;
                }
            }
            Request::Shutdown(sig) => shutdown(&mut session, sig),
        }
    }
    // The front end is gone: end as quit would.
    session.tracer.finish();
    say_notes(&mut session);
}

/// What the session still has to say, on stderr (its end: no command's
/// output to carry it).
fn say_notes(session: &mut Session) {
    for note in session.take_notes() {
        eprintln!("fdbg: {}", render::escape(&render::note(&note)));
    }
}

/// One line of output on stdout. An error (EPIPE: the reader is gone) is
/// returned, never a panic.
pub fn say(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")?;
    out.flush()
}

/// One report on stdout, written as it is rendered (a report of 50,000
/// fds is never held whole as text), with `notes` in its JSON. Errors as
/// for `say`.
fn show(report: &Report, json: bool, notes: &[String]) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    render::write_noted(&mut out, report, json, notes)?;
    out.flush()
}

/// Notes of a command that made no report, as a JSON document.
fn show_notes(notes: &[String]) -> std::io::Result<()> {
    say(&serde_json::json!({ "notes": notes }).to_string())
}

/// fdbg was told to end by a signal: detach (or kill), then exit at once.
fn shutdown(session: &mut Session, sig: i32) -> ! {
    session.tracer.finish();
    let _ = std::io::stdout().flush();
    say_notes(session);
    if sig != libc::SIGINT {
        eprintln!("fdbg: got signal {sig}; {}", session.ending());
    } else {
        eprintln!("fdbg: interrupted; {}", session.ending());
    }
    std::process::exit(128 + sig);
}

fn banner(tracer: &Tracer) -> String {
    let pid = tracer.target.main_pid;
    let name = crate::procfs::status(pid)
        .map(|s| s.name)
        .unwrap_or_else(|| "?".into());
    let threads = tracer.threads().iter().filter(|(_, p)| *p == pid).count();
    let fds = tracer.model.open_count(pid);
    match tracer.target.mode {
        crate::tracer::Mode::Attach => {
            let mut text = format!(
                "Attached to process {pid} ({}): {}, {}.",
                render::escape(&name),
                render::count(threads, "thread"),
                render::count(fds, "open fd")
            );
            let children: std::collections::BTreeSet<_> = tracer
                .threads()
                .into_iter()
                .map(|(_, p)| p)
                .filter(|&p| p != pid)
                .collect();
            if tracer.target.follow_forks {
                if !children.is_empty() {
                    let list: Vec<String> = children.iter().map(|c| c.to_string()).collect();
                    text.push_str(&format!(
                        " Its child process{} {} {} traced too.",
                        if children.len() == 1 { "" } else { "es" },
                        list.join(", "),
                        if children.len() == 1 { "is" } else { "are" }
                    ));
                }
            } else {
                let untraced = crate::procfs::children(pid).len();
                if untraced > 0 {
                    text.push_str(&format!(
                        " Its {untraced} child process{} not traced (--follow-forks traces them).",
                        if untraced == 1 { " is" } else { "es are" }
                    ));
                }
            }
            text.push_str(match tracer.mechanism() {
                crate::tracer::Mechanism::PerfObserve => {
                    " Fd events: perf-observe (no stop while no breakpoint needs one; then one per fd syscall)."
                }
                crate::tracer::Mechanism::PerfSigtrap => {
                    " Fd events: perf-sigtrap (one stop per fd syscall, none for others)."
                }
                _ => " Fd events: ptrace-syscall (two stops per syscall).",
            });
            text.push_str(" It is stopped; 'continue' resumes it.");
            text
        }
        crate::tracer::Mode::Run => {
            format!(
                "Started process {pid} ({}), stopped at its first instruction; 'continue' runs it.",
                render::escape(&name)
            )
        }
    }
}

/// The main thread's side: sends commands, prints replies.
pub struct FrontEnd {
    requests: mpsc::Sender<Request>,
    replies: mpsc::Receiver<Reply>,
    json: bool,
    /// Some command failed (for --batch's exit status).
    failed: bool,
}

impl FrontEnd {
    /// Parse and run one line. `Some(status)` when the session ended.
    pub fn line(&mut self, line: &str) -> Option<i32> {
        match command::parse(line) {
            Ok(None) => None,
            Ok(Some(Invocation { command, json })) => self.run(command, json || self.json),
            Err(e) => {
                eprintln!("fdbg: {e}");
                self.failed = true;
                None
            }
        }
    }

    /// Send one command and print its reports.
    pub fn run(&mut self, command: Command, json: bool) -> Option<i32> {
        if self.requests.send(Request::Command(command)).is_err() {
            return Some(1);
        }
        // Notes said while it ran, which its JSON carries too.
        let mut early_notes = Vec::new();
        let reply = loop {
            match self.replies.recv() {
                Ok(Reply::Notes(notes)) => {
                    for note in &notes {
                        eprintln!("fdbg: {}", render::escape(note));
                    }
                    early_notes.extend(notes);
                }
                Ok(Reply::Progress(report)) => {
                    if show(&report, json, &[]).is_err() {
                        // Nobody reads: end once the command is done.
                        self.failed = true;
                    }
                }
                Ok(Reply::Done(done, notes)) => break Ok((done, notes)),
                Err(e) => break Err(e),
            }
        };
        // Notes on stderr, as one line each; under --json also in the
        // command's first document (`"notes"`), or one of their own.
        let notes = match &reply {
            Ok((_, notes)) => notes.as_slice(),
            Err(_) => &[],
        };
        for note in notes {
            eprintln!("fdbg: {}", render::escape(note));
        }
        let mut notes_left = if json {
            early_notes
                .into_iter()
                .chain(notes.iter().cloned())
                .collect()
        } else {
            Vec::new()
        };
        match reply.map(|(done, _)| done) {
            Ok(Ok((reports, next))) => {
                for report in &reports {
                    let notes = std::mem::take(&mut notes_left);
                    if show(report, json, &notes).is_err() {
                        return Some(self.output_closed(next));
                    }
                }
                if !notes_left.is_empty() && show_notes(&notes_left).is_err() {
                    return Some(self.output_closed(next));
                }
                match next {
                    Next::Prompt => None,
                    Next::Exit(code) => Some(if self.failed && code == 0 { 1 } else { code }),
                }
            }
            Ok(Err(e)) => {
                eprintln!("fdbg: {e}");
                self.failed = true;
                None
            }
            Err(_) => {
                eprintln!("fdbg: the tracer thread ended unexpectedly");
                Some(1)
            }
        }
    }

    /// Nobody reads fdbg's output any more (a pipe into `head` closed):
    /// end the session as quit would, quietly, with the status a SIGPIPE
    /// death would give.
    fn output_closed(&mut self, next: Next) -> i32 {
        if next == Next::Prompt {
            let _ = self.requests.send(Request::Command(Command::Quit));
            let _ = self.replies.recv();
        }
        128 + libc::SIGPIPE
    }

    /// Text for the human watching (the demo's narration): on stdout, or on
    /// stderr under --json, where stdout carries JSON documents only.
    fn note(&self, text: &str) {
        if self.json {
            eprintln!("{text}");
        } else {
            // A closed output shows at the next report.
            let _ = say(text);
        }
    }

    fn send(&mut self, command: Command) -> Option<i32> {
        let json = self.json;
        self.run(command, json)
    }

    /// Read commands at the prompt until quit or EOF.
    fn prompt(&mut self) -> i32 {
        let mut prompt = prompt::Prompt::new();
        let mut last_resume: Option<String> = None;
        loop {
            let Some(line) = prompt.read() else {
                let _ = say("");
                return self.send(Command::Quit).unwrap_or(0);
            };
            let mut line = line.trim().to_string();
            if line.is_empty() {
                // An empty line repeats step/continue.
                match &last_resume {
                    Some(previous) => line = previous.clone(),
                    None => continue,
                }
            }
            if let Ok(Some(inv)) = command::parse(&line)
                && matches!(inv.command, Command::Continue { .. } | Command::Step { .. })
            {
                last_resume = Some(line.clone());
            }
            self.failed = false;
            if let Some(code) = self.line(&line) {
                return code;
            }
        }
    }
}
