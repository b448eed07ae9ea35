//! Report data → what the user reads: text for people, one JSON document
//! per report for scripts. No I/O of its own: returns strings, or writes to
//! the writer it is given row by row (`write`), so that a report of 50,000
//! fds is never held whole as text.
//!
//! Everything that came from the traced process (paths, socket names,
//! thread names, argument strings) is escaped in text, so the process
//! cannot write control sequences to the user's terminal.

#![forbid(unsafe_code)]

use std::borrow::Cow;
use std::fmt::Write;
use std::io;

pub use crate::escape::escape;
use crate::repl::report::*;
use crate::symbolize::Frame;

/// One JSON document (one line).
pub fn json(report: &Report) -> String {
    serde_json::to_string(&json_form(report))
        .unwrap_or_else(|e| format!("{{\"error\":\"cannot encode report: {e}\"}}"))
}

/// The report JSON writes: a new breakpoint is the message that is its
/// text (`{"message":"Breakpoint 1: break fd 5"}`).
fn json_form(report: &Report) -> Cow<'_, Report> {
    match report {
        Report::BreakpointSet(set) => Cow::Owned(Report::message(breakpoint_set_message(set))),
        other => Cow::Borrowed(other),
    }
}

/// A note as one line (said after `fdbg: `, and in JSON's `"notes"`).
pub fn note(note: &Note) -> String {
    match note {
        Note::Tracer(notice) => notice_text(notice),
        Note::ReturnsNotCaught { address, why } => {
            format!("balance: cannot catch returns to {address:#x}: {why}")
        }
        Note::Symbolizer(text) => text.clone(),
    }
}

fn notice_text(notice: &Notice) -> String {
    const PTRACE_SYSCALL: &str = "fd events through PTRACE_SYSCALL, 2 stops per syscall";
    match notice {
        Notice::FellBack(why) => format!("{PTRACE_SYSCALL}: {why}"),
        Notice::NotObserving(why) => format!(
            "the process stops once per fd event (perf SIGTRAP); observing without stops needs ring buffers: {why}"
        ),
        Notice::ChildNotTraced(e) => format!("child {e}"),
        Notice::BlocksSigtrap(tid) => format!(
            "thread {tid} blocks SIGTRAP: its fd events come late or are missed (stats counts them)"
        ),
        Notice::NotRearmed { pid, why } => {
            format!("process {pid} exec'd and its fd events cannot be armed again: {why}")
        }
        Notice::NotRewatched { fd, why } => {
            format!("fd {fd} cannot be watched after the exec: {why}")
        }
        Notice::ChildSigtrapKept { child, why } => {
            format!("child process {child}: cannot restore SIGTRAP's default action: {why}")
        }
        Notice::SigtrapKept { pid, why } => {
            format!("process {pid}: cannot restore SIGTRAP's default action: {why}")
        }
        Notice::ObservedLate { seq, later } => format!(
            "event #{seq} was observed, not stopped at (it came within less than the margin fdbg keeps): the process stopped {later} fd event{} later",
            if *later == 1 { "" } else { "s" }
        ),
        Notice::WatchRefused { fd, why } => format!(
            "break fd {fd} takes a stop at every fd event, not only at those on {fd}: {why}"
        ),
        Notice::CopiesNotGrown(why) => format!("cannot sample longer stack copies: {why}"),
        Notice::SamplesLost(n) => format!(
            "{n} fd syscalls were lost in full perf rings; the model was checked against /proc (stats shows what it corrected)"
        ),
        Notice::BreakpointGone { id, pattern, why } => {
            format!("breakpoint {id} ({pattern}) is gone with the exec: {why}")
        }
        Notice::BreakpointsPending => {
            "the process exec'd: function breakpoints are pending in the new program".into()
        }
        Notice::BreakpointResolved { id, pattern, sites } => {
            let names: Vec<String> = sites
                .iter()
                .map(|(name, module)| format!("{name} in {module}"))
                .collect();
            format!(
                "breakpoint {id} ({pattern}) resolved in a library just loaded: {}",
                names.join("; ")
            )
        }
        Notice::BreakpointFailed { id, pattern, why } => {
            format!("breakpoint {id} ({pattern}): {why}")
        }
    }
}

/// Write `report` to `out` as `json` or `text` gives it, and a newline,
/// row by row: the big reports (`fds`, `leaks`, `sockets`, JSON) are never
/// built whole. Errors are the writer's (EPIPE when the reader is gone).
pub fn write(out: &mut dyn io::Write, report: &Report, as_json: bool) -> io::Result<()> {
    write_noted(out, report, as_json, &[])
}

/// A report's JSON with the notes of its command (`"notes": [...]`, only
/// when there are some).
#[derive(serde::Serialize)]
struct Noted<'a> {
    #[serde(flatten)]
    report: &'a Report,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    notes: &'a [String],
}

/// As `write`, the JSON carrying `notes` (text shows notes elsewhere).
pub fn write_noted(
    out: &mut dyn io::Write,
    report: &Report,
    as_json: bool,
    notes: &[String],
) -> io::Result<()> {
    if as_json {
        serde_json::to_writer(
            &mut *out,
            &Noted {
                report: &json_form(report),
                notes,
            },
        )?;
        return out.write_all(b"\n");
    }
    // The streamed reports end with their newline.
    match report {
        Report::Fds(fds) => write_fds(out, fds),
        Report::Leaks(leaks) => write_leaks(out, leaks),
        Report::Sockets(sockets) => write_sockets(out, sockets),
        other => {
            out.write_all(text(other).as_bytes())?;
            out.write_all(b"\n")
        }
    }
}

/// `n` and a noun, the noun plural unless `n` is 1: `1 socket`, `2 sockets`.
pub fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// The text of one of the reports `write` streams, without the newline.
fn streamed_text(
    report: &Report,
    write_report: impl FnOnce(&mut Vec<u8>) -> io::Result<()>,
) -> String {
    let mut out = Vec::new();
    if let Err(e) = write_report(&mut out) {
        // Writing to a Vec cannot fail.
        return format!("cannot render report: {e} ({report:?})");
    }
    let mut text = String::from_utf8_lossy(&out).into_owned();
    text.truncate(text.trim_end().len());
    text
}

/// `escape`, line by line: fdbg's own messages (help) span lines.
fn escape_keeping_lines(s: &str) -> String {
    s.split('\n')
        .map(|line| escape(line))
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn text(report: &Report) -> String {
    match report {
        Report::Stop(stop) => stop_text(stop),
        Report::Event(event) => event_text(event),
        Report::Fds(fds) => streamed_text(report, |out| write_fds(out, fds)),
        Report::Leaks(leaks) => streamed_text(report, |out| write_leaks(out, leaks)),
        Report::Diff(diff) => diff_text(diff),
        Report::Stats(stats) => stats_text(stats),
        Report::History(history) => history_text(history),
        Report::Threads(threads) => threads_text(threads),
        Report::Backtrace(bt) => frames_text(&bt.event.frames, bt.event.stack_truncated.as_deref()),
        Report::Breakpoints(b) => breakpoints_text(b),
        Report::BreakpointSet(set) => escape_keeping_lines(&breakpoint_set_message(set)),
        Report::Sockets(s) => streamed_text(report, |out| write_sockets(out, s)),
        Report::Message(m) => escape_keeping_lines(&m.message),
        Report::Function(f) => frames_text(&f.frames, None),
        Report::Finish(f) => finish_text(&f.finish),
        Report::Balance(b) => balance_text(b),
        Report::Tick(t) => tick_text(&t.tick),
        Report::Folded(f) => f.folded.join("\n"),
        Report::Reclaim(r) => reclaim_text(&r.reclaim),
        Report::Who(w) => who_text(&w.who),
    }
}

/// One site as flame-graph tools read it: `outer;…;inner COUNT`, the
/// user's frames outermost first by function name (else `module+0xoff`),
/// and the creating syscall as the leaf. A frame's `;` and control
/// characters would break the line: `;` becomes `:`, the rest is escaped.
pub fn folded_line(frames: &[Frame], syscall: &str, count: usize) -> String {
    let name = |frame: &Frame| {
        let text = match (&frame.function, &frame.module, frame.offset) {
            (Some(function), _, _) => function.clone(),
            (None, Some(module), Some(offset)) => format!("{}+{offset:#x}", file_name(module)),
            _ => frame.address.clone(),
        };
        escape(&text).replace(';', ":")
    };
    let mut parts: Vec<String> = frames
        .iter()
        .filter(|f| !f.wrapper)
        .rev()
        .map(name)
        .collect();
    parts.push(escape(syscall).replace(';', ":"));
    format!("{} {count}", parts.join(";"))
}

/// `reclaim`: what it closed or would close, grouped by why, and what it
/// left, grouped by why.
fn reclaim_text(r: &ReclaimBody) -> String {
    let mut out = format!(
        "site {} ({}), process {}:",
        r.site,
        first_frame(&r.frames),
        r.pid
    );
    let grouped = |list: &[FdWhy]| {
        let mut groups: Vec<(String, Vec<i32>)> = Vec::new();
        for item in list {
            match groups.iter_mut().find(|(why, _)| *why == item.why) {
                Some((_, fds)) => fds.push(item.fd),
                None => groups.push((item.why.clone(), vec![item.fd])),
            }
        }
        groups
    };
    let verb = if r.dry_run { "would close" } else { "closed" };
    if r.why_closed.is_empty() {
        let _ = write!(out, "\n  {verb} nothing");
    }
    for (why, fds) in grouped(&r.why_closed) {
        let _ = write!(
            out,
            "\n  {verb} {} ({}): {}",
            count(fds.len(), "fd"),
            fd_list(&fds),
            escape(&why)
        );
    }
    for (why, fds) in grouped(&r.skipped) {
        let _ = write!(
            out,
            "\n  left open {} ({}): {}",
            count(fds.len(), "fd"),
            fd_list(&fds),
            escape(&why)
        );
    }
    if let Some(why) = &r.stopped_early {
        let _ = write!(out, "\n  {}", escape(why));
    }
    match r.open_fds_after {
        Some(after) if !r.dry_run => {
            let _ = write!(
                out,
                "\n  open fds in /proc: {} before, {after} after",
                r.open_fds_before
            );
        }
        _ if r.dry_run && !r.why_closed.is_empty() => {
            let _ = write!(
                out,
                "\n  nothing closed yet: 'reclaim {}{} --yes' closes them",
                r.site,
                if r.forced { " --force" } else { "" }
            );
        }
        _ => {}
    }
    out
}

/// `who`: the holder, its creation with its stack, its number's history.
fn who_text(w: &WhoBody) -> String {
    let inode = w.inode.map(|i| format!("inode {i}: ")).unwrap_or_default();
    let target = w
        .target
        .as_deref()
        .map(|t| format!(", {}", escape(t)))
        .unwrap_or_default();
    let mut out = format!(
        "{inode}fd {} of process {} ({}{target})",
        w.fd,
        w.pid,
        w.kind.as_str()
    );
    if !w.notes.is_empty() {
        let notes: Vec<Cow<str>> = w.notes.iter().map(|n| escape(n)).collect();
        let _ = write!(out, "\n  seen: {}", notes.join("; "));
    }
    match w.seq {
        Some(seq) => {
            let _ = write!(
                out,
                "\n  created by #{seq}:\n{}",
                frames_text(&w.frames, None)
            );
        }
        None => {
            let _ = write!(out, "\n  created: {}", w.origin.as_str());
        }
    }
    let forgotten = match w.events_forgotten {
        0 => String::new(),
        n => format!(" ({n} older events not kept)"),
    };
    let _ = write!(
        out,
        "\n  history of fd {}: {}{forgotten}",
        w.fd,
        count(w.history.len(), "event")
    );
    for event in &w.history {
        let _ = write!(out, "\n  {}", event_line(event));
    }
    out
}

/// `continue --every`: one line a period, and the sites that grew most
/// under it, each by its first frame.
fn tick_text(t: &TickBody) -> String {
    let mut out = format!(
        "[{}] process {}: {} ({:+})",
        duration_text(t.elapsed_s),
        t.pid,
        count(t.open_fds, "open fd"),
        t.delta
    );
    for site in &t.sites {
        let _ = write!(
            out,
            "\n    {:+} ({}, {} open) {}",
            site.delta,
            rate_text(site.per_min),
            site.count,
            first_frame(&site.frames)
        );
    }
    out
}

/// So many per minute: `2.5/min`, `240/min`.
pub fn rate_text(per_min: f64) -> String {
    if per_min < 10.0 {
        format!("{per_min:.1}/min")
    } else {
        format!("{per_min:.0}/min")
    }
}

/// A length of time as people read it: `850ms`, `4.2s`, `3m12s`, `2h05m`,
/// `3d04h`.
pub fn duration_text(seconds: f64) -> String {
    let s = seconds.max(0.0);
    if s < 1.0 {
        return format!("{:.0}ms", s * 1000.0);
    }
    if s < 60.0 {
        return format!("{s:.1}s");
    }
    let whole = s as u64;
    match whole {
        0..3600 => format!("{}m{:02}s", whole / 60, whole % 60),
        3600..86_400 => format!("{}h{:02}m", whole / 3600, whole % 3600 / 60),
        _ => format!("{}d{:02}h", whole / 86_400, whole % 86_400 / 3600),
    }
}

/// A row of block characters, one per point, scaled from 0 to the
/// largest: the shape of a series at a glance.
pub fn sparkline(values: &[u32]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let max = values.iter().copied().max().unwrap_or(0).max(1);
    values
        .iter()
        .map(|&v| {
            BARS[(v as usize * (BARS.len() - 1))
                .div_ceil(max as usize)
                .min(BARS.len() - 1)]
        })
        .collect()
}

/// Columns the sparkline of `stats` takes at most.
const SPARK_WIDTH: usize = 60;

/// `values` in `width` columns at most: each column the largest of its
/// share of the values.
fn squeeze(values: &[u32], width: usize) -> Vec<u32> {
    if values.len() <= width {
        return values.to_vec();
    }
    (0..width)
        .map(|col| {
            let from = col * values.len() / width;
            let to = ((col + 1) * values.len() / width).max(from + 1);
            values[from..to].iter().copied().max().unwrap_or(0)
        })
        .collect()
}

fn balance_text(report: &BalanceReport) -> String {
    if report.balance.is_empty() {
        return "No function is measured: 'balance NAME' starts.".into();
    }
    let mut out = String::new();
    for entry in &report.balance {
        let _ = writeln!(
            out,
            "{}: {} call{}, {:+.2} fd per call ({} opened, {} still open, {} from before closed)",
            escape(&entry.function),
            entry.calls,
            if entry.calls == 1 { "" } else { "s" },
            entry.per_call,
            entry.opened,
            entry.still_open,
            entry.closed
        );
        for site in &entry.sites {
            site_text(&mut out, site);
        }
        out.push('\n');
    }
    out.trim_end().to_string()
}

/// rax as returned: a 32-bit int's negative value is shown as such too.
fn return_value_text(rax: i64) -> String {
    match u32::try_from(rax) {
        Ok(low) if low >= 0x8000_0000 => format!("{rax} ({} as a 32-bit int)", low as i32),
        _ => rax.to_string(),
    }
}

fn finish_text(f: &FinishBody) -> String {
    let mut out = String::new();
    let still: usize = f.still_open.iter().map(|s| s.count).sum();
    let _ = writeln!(
        out,
        "Run till exit from {} (thread {}): returned {}; the call left {still} fd{} open, closed {} fd{} that were open before{}, opened and closed {}",
        escape(&f.function),
        f.tid,
        return_value_text(f.return_value),
        if still == 1 { "" } else { "s" },
        f.closed.len(),
        if f.closed.len() == 1 { "" } else { "s" },
        if f.closed.is_empty() {
            String::new()
        } else {
            format!(" ({})", fd_list(&f.closed))
        },
        f.opened_and_closed
    );
    for site in &f.still_open {
        out.push('\n');
        site_text(&mut out, site);
    }
    out.trim_end().to_string()
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// `statsd_init at src/statsd.c:86  (libstatsd.so)` or `libc.so.6+0x11a2b3`.
pub fn frame_text(frame: &Frame) -> String {
    let module = frame.module.as_deref().map(file_name);
    let mut out = String::new();
    match (&frame.function, &frame.file) {
        (Some(function), file) => {
            out.push_str(&escape(function));
            if let Some(offset) = frame.function_offset.filter(|&o| o != 0) {
                let _ = write!(out, "+{offset:#x}");
            }
            if frame.inlined {
                out.push_str(" [inlined]");
            }
            if let Some(file) = file {
                let _ = write!(out, " at {}", escape(file));
                if let Some(line) = frame.line {
                    let _ = write!(out, ":{line}");
                }
            }
            if let Some(module) = module {
                let _ = write!(out, "  ({})", escape(module));
            }
        }
        (None, _) => match (module, frame.offset) {
            (Some(module), Some(offset)) => {
                let _ = write!(out, "{}+{offset:#x}", escape(module));
            }
            _ => out.push_str(&frame.address),
        },
    }
    out
}

fn frames_text(frames: &[Frame], truncated: Option<&str>) -> String {
    let mut out = String::new();
    if frames.is_empty() {
        out.push_str("    (no stack recorded)\n");
    }
    for (i, frame) in frames.iter().enumerate() {
        // The library call's own frames come after the user's, so that the
        // first frame shown is the user's code.
        if frame.wrapper && (i == 0 || !frames[i - 1].wrapper) {
            out.push_str("    -- inside the library call, innermost first:\n");
        }
        let _ = writeln!(out, "    #{i} {}", frame_text(frame));
    }
    if let Some(why) = truncated {
        let _ = writeln!(out, "    (stack ends early: {})", escape(why));
    }
    out.trim_end_matches('\n').to_string()
}

/// `#1234 tid 26802 socket(AF_INET, SOCK_DGRAM, 0) = 31873   open fds: 31874`
fn event_line(event: &EventReport) -> String {
    let result = if event.result < 0 {
        let errno = nix::errno::Errno::from_raw(-event.result as i32);
        format!("-1 {errno:?} ({})", errno.desc())
    } else {
        event.result.to_string()
    };
    let mut line = format!(
        "#{} tid {} {}({}) = {}   open fds: {}",
        event.seq,
        event.tid,
        event.syscall,
        escape(&event.args),
        result,
        event.open_fds
    );
    if let Some(target) = &event.target {
        let _ = write!(line, "   ({})", escape(target));
    }
    if event.bad_close {
        line.push_str("   [bad close]");
    }
    if !event.closed.is_empty() && event.syscall != "close" {
        let _ = write!(line, "   closed: {}", fd_list(&event.closed));
    }
    line
}

fn event_text(event: &EventReport) -> String {
    format!(
        "{}\n{}",
        event_line(event),
        frames_text(&event.frames, event.stack_truncated.as_deref())
    )
}

fn stop_text(stop: &StopReport) -> String {
    let head = match (stop.stop, stop.breakpoint) {
        (StopKind::Exited, _) => {
            return match (stop.exit_code, stop.signal) {
                (Some(code), _) => format!("Process {} exited with code {code}.", stop.pid),
                (_, Some(sig)) => format!("Process {} was killed by signal {sig}.", stop.pid),
                _ => format!("Process {} exited.", stop.pid),
            };
        }
        (StopKind::Interrupt, _) => {
            return format!(
                "Interrupted; all threads stopped (fd events: {}).",
                stop.events_from.as_str()
            );
        }
        (StopKind::Timeout, _) => {
            return format!(
                "Time is up; all threads stopped (fd events: {}).",
                stop.events_from.as_str()
            );
        }
        (StopKind::Breakpoint, Some(id)) => format!("Breakpoint {id}, "),
        (StopKind::Catch, Some(id)) => format!("Catchpoint {id}, "),
        (StopKind::Breakpoint | StopKind::Catch | StopKind::Step, _) => String::new(),
    };
    match (&stop.event, &stop.function) {
        (Some(event), _) => format!("{head}{}", event_text(event)),
        (None, Some(function)) => format!(
            "{head}thread {} in {}\n{}",
            function.tid,
            function.frames.first().map(frame_text).unwrap_or_default(),
            frames_text(&function.frames, None)
        ),
        (None, None) => format!("{head}stopped"),
    }
}

fn fd_list(fds: &[i32]) -> String {
    const SHOWN: usize = 12;
    let mut text: Vec<String> = fds.iter().take(SHOWN).map(i32::to_string).collect();
    if fds.len() > SHOWN {
        text.push(format!("… ({} more)", fds.len() - SHOWN));
    }
    text.join(", ")
}

fn first_frame(frames: &[Frame]) -> String {
    frames
        .first()
        .map(frame_text)
        .unwrap_or_else(|| "(no stack)".into())
}

/// `fds` as text, one row at a time, ending with a newline.
fn write_fds(out: &mut dyn io::Write, report: &FdsReport) -> io::Result<()> {
    let when = if report.exited { " at exit" } else { "" };
    writeln!(
        out,
        "process {}: {}{when}",
        report.pid,
        count(report.open_fds, "open fd")
    )?;
    writeln!(out, "{:>6}  {:<9} {:<40} CREATED", "FD", "KIND", "TARGET")?;
    for fd in &report.fds {
        let mut target = fd
            .target
            .as_deref()
            .map(escape)
            .unwrap_or(Cow::Borrowed("?"));
        if !fd.notes.is_empty() {
            let notes: Vec<Cow<str>> = fd.notes.iter().map(|n| escape(n)).collect();
            target = Cow::Owned(format!("{target} ({})", notes.join("; ")));
        }
        let created = match fd.seq {
            Some(seq) => format!("#{seq} {}", first_frame(&fd.frames)),
            None => fd.origin.as_str().to_string(),
        };
        writeln!(
            out,
            "{:>6}  {:<9} {:<40} {}",
            fd.fd,
            fd.kind.as_str(),
            target,
            created
        )?;
    }
    Ok(())
}

fn site_text(out: &mut String, site: &SiteReport) {
    let target = site
        .target
        .as_deref()
        .map(|t| format!(", {}", escape(t)))
        .unwrap_or_default();
    // Fds open before tracing began (seq 0) were made by no recorded
    // event, at no known time.
    let (events, ages) = match (site.first_seq, site.last_seq) {
        (0, 0) => (String::new(), String::new()),
        (first, last) => (
            format!(", events #{first}..#{last}"),
            if site.count == 1 {
                format!(", {} old", duration_text(site.oldest_age_s))
            } else {
                format!(
                    ", {}..{} old, {}",
                    duration_text(site.oldest_age_s),
                    duration_text(site.newest_age_s),
                    rate_text(site.per_min)
                )
            },
        ),
    };
    let closed = if site.closed > 0 {
        format!(" ({} created, {} closed)", site.created, site.closed)
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "site {}: {} ({}{target}) from {}{events}{ages}{closed}: fds {}",
        site.site,
        count(site.count, "fd"),
        site.kind.as_str(),
        site.syscall,
        fd_list(&site.fds)
    );
    let _ = writeln!(out, "{}", site_frames_text(&site.frames));
    if let Some(closers) = &site.closed_by {
        if closers.is_empty() {
            let _ = writeln!(out, "    closed: none of its fds was ever closed");
        }
        for closer in closers {
            let _ = writeln!(out, "    closed {}", closer_text(closer));
        }
    }
}

/// `37 by close in statsd_close at statsd.c:47 ← on_login at login.c:11`.
fn closer_text(closer: &CloserReport) -> String {
    let by = match closer.syscall {
        "fdbg" => return format!("{} by fdbg (reclaim)", closer.count),
        "unseen" => {
            return format!(
                "{} unseen (gone from /proc without a close fdbg saw)",
                closer.count
            );
        }
        syscall => syscall,
    };
    let own: Vec<&Frame> = closer.frames.iter().filter(|f| !f.wrapper).collect();
    let place = match own.as_slice() {
        [] => " (no stack)".to_string(),
        [only] => format!(" in {}", frame_text(only)),
        [inner, outer, ..] => format!(" in {} ← {}", frame_text(inner), frame_text(outer)),
    };
    format!("{} by {by}{place}", closer.count)
}

/// How many of a site's own frames the text of `leaks` shows.
const SITE_FRAMES_SHOWN: usize = 10;

/// A leak site's stack, condensed: the user's frames (at most
/// `SITE_FRAMES_SHOWN`), then how many more there are; `history`, `bt` and
/// `--json` give every frame.
fn site_frames_text(frames: &[Frame]) -> String {
    let own: Vec<&Frame> = frames.iter().filter(|f| !f.wrapper).collect();
    if own.is_empty() {
        return frames_text(frames, None);
    }
    let mut out = String::new();
    for (i, frame) in own.iter().take(SITE_FRAMES_SHOWN).enumerate() {
        let _ = writeln!(out, "    #{i} {}", frame_text(frame));
    }
    let hidden = own.len().saturating_sub(SITE_FRAMES_SHOWN);
    let inside = frames.len() - own.len();
    let mut more = Vec::new();
    if hidden > 0 {
        more.push(count(hidden, "outer frame"));
    }
    if inside > 0 {
        more.push(format!("{inside} inside the library call"));
    }
    if !more.is_empty() {
        let _ = writeln!(out, "    (+{}; --json shows every frame)", more.join(", "));
    }
    out.trim_end_matches('\n').to_string()
}

/// `leaks` as text, one site at a time, ending with a newline.
fn write_leaks(out: &mut dyn io::Write, report: &LeaksReport) -> io::Result<()> {
    let since = if report.since == "attach" || report.since == "start" {
        format!("since {}", report.since)
    } else {
        format!("since {}", escape(&report.since))
    };
    let since = match report.older_than_s {
        Some(older) => format!("{since} more than {} ago", duration_text(older)),
        None => since,
    };
    let at = if report.exited { " at exit" } else { "" };
    let open_fds = count(report.open_fds, "open fd");
    if report.total == 0 {
        return writeln!(
            out,
            "process {}: no fds created {since} are still open{at} ({open_fds})",
            report.pid
        );
    }
    writeln!(
        out,
        "process {}: {} created {since} still open{at}, from {} ({open_fds})",
        report.pid,
        count(report.total, "fd"),
        count(report.sites.len(), "site"),
    )?;
    for site in &report.sites {
        out.write_all(b"\n")?;
        write_site(out, site)?;
    }
    Ok(())
}

/// One site as `site_text` gives it.
fn write_site(out: &mut dyn io::Write, site: &SiteReport) -> io::Result<()> {
    let mut text = String::new();
    site_text(&mut text, site);
    out.write_all(text.as_bytes())
}

fn diff_text(report: &DiffReport) -> String {
    let mut out = String::new();
    let still: usize = report.still_open.iter().map(|s| s.count).sum();
    let _ = writeln!(
        out,
        "process {} since mark {}: {still} opened and still open, {} opened and closed, {} from before closed{}",
        report.pid,
        escape(&report.since),
        report.opened_and_closed,
        report.closed_from_before.len(),
        if report.closed_from_before.is_empty() {
            String::new()
        } else {
            format!(" ({})", fd_list(&report.closed_from_before))
        }
    );
    for site in &report.still_open {
        out.push('\n');
        site_text(&mut out, site);
    }
    out.trim_end().to_string()
}

/// The event source and, where the kernel counts fd syscalls, how many
/// fdbg saw of them.
fn mechanism_text(s: &StatsReport) -> String {
    let name = s.mechanism.as_str();
    match s.kernel_fd_syscalls {
        Some(counted) => format!(
            "{name}; the kernel counted {counted} fd syscalls (all traced processes), {} missed",
            s.missed
        ),
        None => name.to_string(),
    }
}

fn stats_text(s: &StatsReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "process {}: {}", s.pid, count(s.open_fds, "open fd"));
    let events: Vec<String> = s.events.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let _ = writeln!(
        out,
        "events: {} ({})",
        s.total_events,
        if events.is_empty() {
            "none".into()
        } else {
            events.join(", ")
        }
    );
    let kinds: Vec<String> = s.by_kind.iter().map(|(k, v)| format!("{k} {v}")).collect();
    if !kinds.is_empty() {
        let _ = writeln!(out, "created by kind: {}", kinds.join(", "));
    }
    let _ = writeln!(out, "bad closes: {}", s.bad_closes);
    for bad in &s.bad_close_events {
        let _ = writeln!(out, "{}", bad_close_text(bad));
    }
    let _ = writeln!(
        out,
        "ptrace stops: {} ({:.2} per event), syscalls seen: {}, events/s while running: {:.0}",
        s.stops, s.stops_per_event, s.syscalls_seen, s.events_per_sec
    );
    if s.stops_all_processes != s.stops {
        let _ = writeln!(
            out,
            "ptrace stops in all traced processes: {}",
            s.stops_all_processes
        );
    }
    let _ = writeln!(out, "events from: {}", mechanism_text(s));
    if let Some(o) = &s.observed {
        let _ = writeln!(
            out,
            "observed without stops: {} of the {} fd syscalls the kernel counted (coverage {:.2}%), {} lost in full rings; sampled by {}",
            o.recorded,
            o.counted,
            o.coverage * 100.0,
            o.lost,
            o.sampler
        );
        if o.walks_found_again > 0 {
            let _ = writeln!(
                out,
                "stacks found again by the kernel (no stack copy to walk): {} of {} samples",
                o.walks_found_again, o.recorded
            );
        }
    }
    let _ = writeln!(
        out,
        "model checks against /proc: {} adopted (untracked), {} dropped",
        s.adopted, s.dropped
    );
    if let (Some(first), Some(last)) = (s.open_fds_over_time.first(), s.open_fds_over_time.last())
        && s.open_fds_over_time.len() > 1
    {
        let counts: Vec<u32> = s.open_fds_over_time.iter().map(|p| p.1).collect();
        let (low, high) = (
            counts.iter().min().copied().unwrap_or(0),
            counts.iter().max().copied().unwrap_or(0),
        );
        let _ = writeln!(
            out,
            "open fds over {}: {} ({low}..{high})",
            duration_text(last.0 - first.0),
            sparkline(&squeeze(&counts, SPARK_WIDTH))
        );
    }
    let m = &s.memory;
    let _ = write!(
        out,
        "fdbg itself: {:.1} MB resident ({:.1} MB proportional), {:.2} s of CPU ({:.2} µs per event, {:.2} once running); {} events kept (at most {}), {} older not kept; {}, {}",
        m.rss_bytes as f64 / 1e6,
        m.pss_bytes as f64 / 1e6,
        m.cpu_s,
        m.cpu_us_per_event,
        m.cpu_us_per_event_running,
        m.events_kept,
        m.events_kept_at_most,
        m.events_forgotten,
        count(m.stacks as usize, "stack"),
        count(m.sites as usize, "site")
    );
    out
}

/// A bad close's event and stack, then the close that freed the number
/// before it, with its stack.
fn bad_close_text(bad: &BadCloseReport) -> String {
    let mut out = event_text(&bad.event);
    match &bad.first_close {
        Some(first) if first.syscall == "fdbg" => {
            let _ = write!(
                out,
                "\n  fd {} was closed before by fdbg (reclaim), #{}",
                bad.fd, first.seq
            );
        }
        Some(first) => {
            let _ = write!(
                out,
                "\n  fd {} was closed before by #{} {}:\n{}",
                bad.fd,
                first.seq,
                first.syscall,
                frames_text(&first.frames, None)
            );
        }
        None => {
            let _ = write!(
                out,
                "\n  fd {} was never closed since attach: never opened, or open before it and closed unseen",
                bad.fd
            );
        }
    }
    out
}

fn history_text(h: &HistoryReport) -> String {
    // Older events are gone: the history is of the window only.
    let forgotten = match h.events_forgotten {
        0 => String::new(),
        n => format!(" ({n} older events not kept)"),
    };
    if h.events.is_empty() {
        let when = if h.events_forgotten > 0 {
            "in the events kept"
        } else {
            "since attach"
        };
        return format!(
            "process {}: no events on fd {} {when}{forgotten}",
            h.pid, h.fd
        );
    }
    let mut out = format!(
        "process {}: {} on fd {}{forgotten}\n",
        h.pid,
        count(h.events.len(), "event"),
        h.fd
    );
    for event in &h.events {
        let _ = writeln!(out, "{}", event_text(event));
        match &event.closed_before {
            Some(first) => {
                let _ = writeln!(
                    out,
                    "  fd {} was closed before by #{} {}",
                    h.fd,
                    first.seq,
                    first_frame(&first.frames)
                );
            }
            None if event.bad_close => {
                let _ = writeln!(out, "  fd {} was never closed since attach", h.fd);
            }
            None => {}
        }
    }
    out.trim_end().to_string()
}

fn threads_text(t: &ThreadsReport) -> String {
    let mut out = format!("{:>8} {:>8}  STATE  NAME\n", "TID", "PID");
    for th in &t.threads {
        let _ = writeln!(
            out,
            "{:>8} {:>8}  {:<5}  {}",
            th.tid,
            th.pid,
            th.state,
            escape(&th.name)
        );
    }
    out.trim_end().to_string()
}

/// `sockets` as text, one row at a time, ending with a newline.
fn write_sockets(out: &mut dyn io::Write, report: &SocketsReport) -> io::Result<()> {
    let at = if report.exited { " at exit" } else { "" };
    if report.sockets.is_empty() {
        return writeln!(out, "process {}: no sockets{at}", report.pid);
    }
    writeln!(
        out,
        "process {}: {}{at}: {} visible to netstat, {} invisible (never bound or connected)",
        report.pid,
        count(report.sockets.len(), "socket"),
        report.netstat_visible,
        report.netstat_invisible
    )?;
    if !report.by_state.is_empty() {
        let states: Vec<String> = report
            .by_state
            .iter()
            .map(|(s, n)| format!("{s} {n}"))
            .collect();
        writeln!(out, "by state: {}", states.join(", "))?;
    }
    writeln!(
        out,
        "{:>6}  {:<7} {:<24} {:<24} {:<12} CREATED",
        "FD", "PROTO", "LOCAL", "REMOTE", "STATE"
    )?;
    for s in &report.sockets {
        let created = match s.seq {
            Some(seq) => format!("#{seq} {}", first_frame(&s.frames)),
            None => s.origin.as_str().to_string(),
        };
        writeln!(
            out,
            "{:>6}  {:<7} {:<24} {:<24} {:<12} {}",
            s.fd,
            s.proto,
            escape(s.local.as_deref().unwrap_or("-")),
            escape(s.remote.as_deref().unwrap_or("-")),
            s.state,
            created
        )?;
    }
    if !report.invisible_sites.is_empty() {
        writeln!(out, "\nsockets netstat cannot see, by creating site:")?;
        for site in &report.invisible_sites {
            out.write_all(b"\n")?;
            write_site(out, site)?;
        }
    }
    Ok(())
}

/// What `break` and `catch` say, unescaped: the new breakpoint, and where
/// a function breakpoint is armed, or that it is pending.
fn breakpoint_set_message(set: &BreakpointSetReport) -> String {
    let bp = &set.breakpoint;
    let (id, describe) = (bp.id, bp.describe());
    if bp.is_catch() {
        format!("Catchpoint {id}: {describe}")
    } else if !bp.is_function() {
        format!("Breakpoint {id}: {describe}")
    } else if bp.locations.is_empty() {
        format!(
            "Breakpoint {id}: {describe} (pending: no function named so is loaded now; fdbg looks again at every library the process loads)"
        )
    } else {
        let shown: Vec<String> = bp.locations.iter().map(frame_text).collect();
        format!("Breakpoint {id}: {describe}: {}", shown.join("; "))
    }
}

fn breakpoints_text(report: &BreakpointsReport) -> String {
    if report.breakpoints.is_empty() {
        return "No breakpoints or catchpoints.".into();
    }
    let mut out = format!(
        "{:<4} {:<11} {:<4} {:<5} WHAT\n",
        "NUM", "TYPE", "ENB", "HITS"
    );
    for bp in &report.breakpoints {
        let kind = if bp.is_catch() {
            "catchpoint"
        } else {
            "breakpoint"
        };
        let _ = writeln!(
            out,
            "{:<4} {:<11} {:<4} {:<5} {}",
            bp.id,
            kind,
            if bp.enabled { "y" } else { "n" },
            bp.hits,
            escape(&bp.describe())
        );
        for location in &bp.locations {
            let _ = writeln!(
                out,
                "{:<27}{} {}",
                "",
                location.address,
                frame_text(location)
            );
        }
        if bp.is_function() && bp.locations.is_empty() {
            let _ = writeln!(out, "{:<27}(pending: in no object loaded yet)", "");
        }
    }
    out.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    use crate::vocab::FdKind;

    fn one_fd(origin: FdOrigin, seq: Option<u64>) -> FdEntry {
        FdEntry {
            fd: 0,
            kind: FdKind::File,
            target: Some("/dev/pts/0".into()),
            seq,
            origin,
            cloexec: false,
            notes: Vec::new(),
            frames: Frames::from([]),
        }
    }

    fn one_socket(origin: FdOrigin) -> SocketsReport {
        SocketsReport {
            pid: 7,
            exited: false,
            sockets: vec![SocketEntry {
                fd: 3,
                proto: "udp",
                sock_type: Some("dgram"),
                local: None,
                remote: None,
                state: "UNCONNECTED".into(),
                netstat_visible: false,
                seq: None,
                origin,
                frames: Frames::from([]),
            }],
            by_state: BTreeMap::from([("UNCONNECTED".to_string(), 1)]),
            netstat_visible: 0,
            netstat_invisible: 1,
            invisible_sites: vec![SiteReport {
                site: 1,
                count: 1,
                target: Some("udp 0.0.0.0:0 unconnected".into()),
                syscall: "socket",
                kind: FdKind::Socket,
                fds: vec![3],
                first_seq: 4,
                last_seq: 4,
                oldest_age_s: 2.5,
                newest_age_s: 2.5,
                per_min: 1.0,
                created: 1,
                closed: 0,
                frames: Frames::from([]),
                closed_by: None,
            }],
        }
    }

    /// What `write` puts out for `report` as text.
    fn written(report: &Report) -> String {
        let mut out = Vec::new();
        write(&mut out, report, false).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn durations_and_sparklines_read_at_a_glance() {
        assert_eq!(duration_text(0.25), "250ms");
        assert_eq!(duration_text(4.21), "4.2s");
        assert_eq!(duration_text(192.0), "3m12s");
        assert_eq!(duration_text(7500.0), "2h05m");
        assert_eq!(duration_text(273_600.0), "3d04h");
        assert_eq!(sparkline(&[0, 1, 2, 4, 8]), "▁▂▃▅█");
        assert_eq!(sparkline(&[]), "");
        assert_eq!(squeeze(&[1, 5, 2, 2, 9, 0], 3), [5, 2, 9]);
        assert_eq!(squeeze(&[1, 2], 3), [1, 2]);
        assert_eq!(rate_text(2.54), "2.5/min");
        assert_eq!(rate_text(240.2), "240/min");
    }

    #[test]
    fn counts_of_one_are_singular() {
        let sockets = Report::Sockets(one_socket(FdOrigin::Created));
        let sockets_text = text(&sockets);
        assert!(
            sockets_text.starts_with("process 7: 1 socket: 0 visible to netstat, 1 invisible"),
            "{sockets_text}"
        );
        assert!(sockets_text.contains(
            "\nsite 1: 1 fd (socket, udp 0.0.0.0:0 unconnected) from socket, events #4..#4, 2.5s old: fds 3"
        ), "{sockets_text}");
        let fds = Report::Fds(FdsReport {
            pid: 7,
            exited: false,
            open_fds: 1,
            fds: vec![one_fd(FdOrigin::Inherited, None)],
        });
        assert!(
            text(&fds).starts_with("process 7: 1 open fd\n"),
            "{}",
            text(&fds)
        );
        let leaks = Report::Leaks(LeaksReport {
            pid: 7,
            exited: true,
            since: "start".into(),
            older_than_s: None,
            open_fds: 1,
            total: 1,
            sites: one_socket(FdOrigin::Created).invisible_sites,
        });
        assert!(
            text(&leaks).starts_with(
                "process 7: 1 fd created since start still open at exit, from 1 site (1 open fd)\n"
            ),
            "{}",
            text(&leaks)
        );
        let history = Report::History(HistoryReport {
            pid: 7,
            fd: 3,
            events: vec![],
            events_forgotten: 0,
        });
        assert!(text(&history).contains("no events"));
        assert_eq!(count(0, "event"), "0 events");
        assert_eq!(count(1, "event"), "1 event");
        assert_eq!(count(2, "socket"), "2 sockets");
    }

    /// Text streamed row by row is the text, and a newline; JSON is one line.
    #[test]
    fn written_reports_are_their_text_or_json_and_a_newline() {
        let fds = Report::Fds(FdsReport {
            pid: 7,
            exited: false,
            open_fds: 2,
            fds: vec![
                one_fd(FdOrigin::Inherited, None),
                one_fd(FdOrigin::Created, Some(3)),
            ],
        });
        let leaks = Report::Leaks(LeaksReport {
            pid: 7,
            exited: false,
            since: "attach".into(),
            older_than_s: None,
            open_fds: 2,
            total: 2,
            sites: [
                one_socket(FdOrigin::Created).invisible_sites,
                one_socket(FdOrigin::Created).invisible_sites,
            ]
            .concat(),
        });
        let empty = Report::Leaks(LeaksReport {
            pid: 7,
            exited: false,
            since: "attach".into(),
            older_than_s: None,
            open_fds: 2,
            total: 0,
            sites: vec![],
        });
        let sockets = Report::Sockets(one_socket(FdOrigin::BeforeAttach));
        for report in [&fds, &leaks, &empty, &sockets, &Report::message("hello")] {
            let text = written(report);
            assert!(text.ends_with('\n') && !text.ends_with("\n\n"), "{text:?}");
            assert!(!text.trim_end().ends_with(' '), "{text:?}");
            let mut json = Vec::new();
            write(&mut json, report, true).unwrap();
            assert_eq!(String::from_utf8(json).unwrap(), self::json(report) + "\n");
            // A command's notes: one more field, the rest as it was.
            let mut noted = Vec::new();
            let notes = ["debuginfod: a note".to_string()];
            write_noted(&mut noted, report, true, &notes).unwrap();
            let mut expected: serde_json::Value =
                serde_json::from_str(&self::json(report)).unwrap();
            expected["notes"] = serde_json::json!(notes);
            let noted: serde_json::Value = serde_json::from_slice(&noted).unwrap();
            assert_eq!(noted, expected);
        }
        let leaks_text = written(&leaks);
        assert!(
            leaks_text.contains("still open, from 2 sites (2 open fds)\n\nsite 1: 1 fd (socket"),
            "{leaks_text}"
        );
        assert!(
            leaks_text.contains("(no stack recorded)\n\nsite 1: 1 fd (socket"),
            "a blank line between sites: {leaks_text}"
        );
        let sockets_text = written(&sockets);
        let mut before_attach = one_socket(FdOrigin::BeforeAttach);
        before_attach.invisible_sites[0].syscall = "before attach";
        (
            before_attach.invisible_sites[0].first_seq,
            before_attach.invisible_sites[0].last_seq,
        ) = (0, 0);
        let before_attach = written(&Report::Sockets(before_attach));
        assert!(
            before_attach.contains(
                "\nsite 1: 1 fd (socket, udp 0.0.0.0:0 unconnected) from before attach: fds 3\n"
            ),
            "no event range for fds no event made: {before_attach}"
        );
        assert!(
            sockets_text.contains(" UNCONNECTED  before attach\n\nsockets netstat cannot see, by creating site:\n\nsite 1: 1 fd"),
            "{sockets_text}"
        );
        let fds_text = written(&fds);
        assert!(fds_text.contains(" inherited\n"), "{fds_text}");
    }

    /// Stop and origin kinds are enums; their JSON names are the strings
    /// scripts match.
    #[test]
    fn stop_and_origin_kinds_keep_their_json_names() {
        let stops = [
            (StopKind::Breakpoint, "breakpoint"),
            (StopKind::Catch, "catch"),
            (StopKind::Step, "step"),
            (StopKind::Interrupt, "interrupt"),
            (StopKind::Timeout, "timeout"),
            (StopKind::Exited, "exited"),
        ];
        for (kind, name) in stops {
            let stop = Report::Stop(StopReport {
                stop: kind,
                breakpoint: None,
                event: None,
                exit_code: None,
                signal: None,
                pid: 7,
                events_from: crate::repl::report::Mechanism::PerfObserve,
                function: None,
            });
            assert_eq!(
                json(&stop),
                format!(
                    r#"{{"stop":"{name}","breakpoint":null,"event":null,"exit_code":null,"pid":7,"events_from":"perf-observe"}}"#
                )
            );
        }
        let origins = [
            (FdOrigin::BeforeAttach, "before attach"),
            (FdOrigin::Inherited, "inherited"),
            (FdOrigin::Created, "created"),
            (FdOrigin::Untracked, "untracked"),
        ];
        for (origin, name) in origins {
            assert_eq!(origin.as_str(), name);
            let entry = serde_json::to_value(one_fd(origin, None)).unwrap();
            assert_eq!(entry["origin"], name);
            assert_eq!(entry["frames"], serde_json::json!([]));
        }
    }

    #[test]
    fn frames_without_names_show_module_and_offset() {
        let frame = Frame {
            address: "0x7f0000001234".into(),
            module: Some("/usr/lib/libc.so.6".into()),
            function: None,
            file: None,
            line: None,
            offset: Some(0x1234),
            ..Frame::default()
        };
        assert_eq!(frame_text(&frame), "libc.so.6+0x1234");
        let named = Frame {
            function: Some("statsd_init".into()),
            file: Some("src/statsd.c".into()),
            line: Some(86),
            ..frame.clone()
        };
        assert_eq!(
            frame_text(&named),
            "statsd_init at src/statsd.c:86  (libc.so.6)"
        );
        let from_symbols = Frame {
            function: Some("open64".into()),
            function_offset: Some(0x1b),
            ..frame.clone()
        };
        assert_eq!(frame_text(&from_symbols), "open64+0x1b  (libc.so.6)");
    }

    #[test]
    fn library_call_frames_come_after_a_marker() {
        let user = Frame {
            function: Some("open_config".into()),
            ..Frame::default()
        };
        let libc = Frame {
            function: Some("open64".into()),
            wrapper: true,
            ..Frame::default()
        };
        let text = frames_text(&[user, libc], None);
        assert_eq!(
            text,
            "    #0 open_config\n    -- inside the library call, innermost first:\n    #1 open64"
        );
    }

    #[test]
    fn folded_lines_go_outermost_first_and_cannot_be_split_by_a_name() {
        let named = |name: &str, wrapper: bool| Frame {
            function: Some(name.into()),
            wrapper,
            ..Frame::default()
        };
        let unnamed = Frame {
            module: Some("/usr/lib/libx.so".into()),
            offset: Some(0x1f),
            ..Frame::default()
        };
        let frames = [
            named("statsd_init", false),
            named("weird;name\n", false),
            unnamed,
            named("socket", true),
        ];
        assert_eq!(
            folded_line(&frames, "socket", 30),
            "libx.so+0x1f;weird:name\\n;statsd_init;socket 30"
        );
    }
}
