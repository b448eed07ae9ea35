//! Report data → what the user reads: text for people, one JSON document
//! per report for scripts. No I/O: returns strings.
//!
//! Everything that came from the traced process (paths, socket names,
//! thread names, argument strings) is escaped in text, so the process
//! cannot write control sequences to the user's terminal.

#![forbid(unsafe_code)]

use std::borrow::Cow;
use std::fmt::Write;

pub use crate::escape::escape;
use crate::repl::report::*;
use crate::symbolize::Frame;

/// One JSON document (one line).
pub fn json(report: &Report) -> String {
    serde_json::to_string(report)
        .unwrap_or_else(|e| format!("{{\"error\":\"cannot encode report: {e}\"}}"))
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
        Report::Fds(fds) => fds_text(fds),
        Report::Leaks(leaks) => leaks_text(leaks),
        Report::Diff(diff) => diff_text(diff),
        Report::Stats(stats) => stats_text(stats),
        Report::History(history) => history_text(history),
        Report::Threads(threads) => threads_text(threads),
        Report::Backtrace(bt) => frames_text(&bt.event.frames, bt.event.stack_truncated.as_deref()),
        Report::Breakpoints(b) => breakpoints_text(b),
        Report::Sockets(s) => sockets_text(s),
        Report::Message(m) => escape_keeping_lines(&m.message),
    }
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
    match stop.stop {
        "exited" => match (stop.exit_code, stop.signal) {
            (Some(code), _) => format!("Process {} exited with code {code}.", stop.pid),
            (_, Some(sig)) => format!("Process {} was killed by signal {sig}.", stop.pid),
            _ => format!("Process {} exited.", stop.pid),
        },
        "interrupt" => "Interrupted; all threads stopped.".into(),
        "timeout" => "Time is up; all threads stopped.".into(),
        kind => {
            let head = match (kind, stop.breakpoint) {
                ("breakpoint", Some(id)) => format!("Breakpoint {id}, "),
                ("catch", Some(id)) => format!("Catchpoint {id}, "),
                _ => String::new(),
            };
            match &stop.event {
                Some(event) => format!("{head}{}", event_text(event)),
                None => format!("{head}stopped"),
            }
        }
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

fn fds_text(report: &FdsReport) -> String {
    let mut out = String::new();
    let when = if report.exited { " at exit" } else { "" };
    let _ = writeln!(
        out,
        "process {}: {} open fds{when}",
        report.pid, report.open_fds
    );
    let _ = writeln!(out, "{:>6}  {:<9} {:<40} CREATED", "FD", "KIND", "TARGET");
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
            None => fd.origin.to_string(),
        };
        let _ = writeln!(
            out,
            "{:>6}  {:<9} {:<40} {}",
            fd.fd,
            fd.kind.as_str(),
            target,
            created
        );
    }
    out.trim_end().to_string()
}

fn site_text(out: &mut String, site: &SiteReport) {
    let plural = if site.count == 1 { "" } else { "s" };
    let target = site
        .target
        .as_deref()
        .map(|t| format!(", {}", escape(t)))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "{} fd{plural} ({}{target}) from {}, events #{}..#{}: fds {}",
        site.count,
        site.kind.as_str(),
        site.syscall,
        site.first_seq,
        site.last_seq,
        fd_list(&site.fds)
    );
    let _ = writeln!(out, "{}", site_frames_text(&site.frames));
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
        more.push(format!(
            "{hidden} outer frame{}",
            if hidden == 1 { "" } else { "s" }
        ));
    }
    if inside > 0 {
        more.push(format!("{inside} inside the library call"));
    }
    if !more.is_empty() {
        let _ = writeln!(out, "    (+{}; --json shows every frame)", more.join(", "));
    }
    out.trim_end_matches('\n').to_string()
}

fn leaks_text(report: &LeaksReport) -> String {
    let mut out = String::new();
    let since = if report.since == "attach" || report.since == "start" {
        format!("since {}", report.since)
    } else {
        format!("since {}", escape(&report.since))
    };
    let at = if report.exited { " at exit" } else { "" };
    if report.total == 0 {
        let _ = write!(
            out,
            "process {}: no fds created {since} are still open{at} ({} open fds)",
            report.pid, report.open_fds
        );
        return out;
    }
    let sites = report.sites.len();
    let _ = writeln!(
        out,
        "process {}: {} fds created {since} still open{at}, from {sites} site{} ({} open fds)\n",
        report.pid,
        report.total,
        if sites == 1 { "" } else { "s" },
        report.open_fds
    );
    for site in &report.sites {
        site_text(&mut out, site);
        out.push('\n');
    }
    out.trim_end().to_string()
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
    let _ = writeln!(out, "process {}: {} open fds", s.pid, s.open_fds);
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
    for event in &s.bad_close_events {
        let _ = writeln!(out, "{}", event_text(event));
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
    let _ = write!(
        out,
        "model checks against /proc: {} adopted (untracked), {} dropped",
        s.adopted, s.dropped
    );
    out
}

fn history_text(h: &HistoryReport) -> String {
    if h.events.is_empty() {
        return format!("process {}: no events on fd {} since attach", h.pid, h.fd);
    }
    let mut out = format!(
        "process {}: {} events on fd {}\n",
        h.pid,
        h.events.len(),
        h.fd
    );
    for event in &h.events {
        let _ = writeln!(out, "{}", event_text(event));
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

fn sockets_text(report: &SocketsReport) -> String {
    let mut out = String::new();
    let at = if report.exited { " at exit" } else { "" };
    if report.sockets.is_empty() {
        return format!("process {}: no sockets{at}", report.pid);
    }
    let states: Vec<String> = report
        .by_state
        .iter()
        .map(|(s, n)| format!("{s} {n}"))
        .collect();
    let _ = writeln!(
        out,
        "process {}: {} sockets{at}: {} visible to netstat, {} invisible (never bound or connected)",
        report.pid,
        report.sockets.len(),
        report.netstat_visible,
        report.netstat_invisible
    );
    if !states.is_empty() {
        let _ = writeln!(out, "by state: {}", states.join(", "));
    }
    let _ = writeln!(
        out,
        "{:>6}  {:<7} {:<24} {:<24} {:<12} CREATED",
        "FD", "PROTO", "LOCAL", "REMOTE", "STATE"
    );
    for s in &report.sockets {
        let created = match s.seq {
            Some(seq) => format!("#{seq} {}", first_frame(&s.frames)),
            None => "before attach".into(),
        };
        let _ = writeln!(
            out,
            "{:>6}  {:<7} {:<24} {:<24} {:<12} {}",
            s.fd,
            s.proto,
            escape(s.local.as_deref().unwrap_or("-")),
            escape(s.remote.as_deref().unwrap_or("-")),
            s.state,
            created
        );
    }
    if !report.invisible_sites.is_empty() {
        let _ = writeln!(out, "\nsockets netstat cannot see, by creating site:\n");
        for site in &report.invisible_sites {
            site_text(&mut out, site);
            out.push('\n');
        }
    }
    out.trim_end().to_string()
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
    }
    out.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
