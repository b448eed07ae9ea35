//! The data every command answers with: plain values, serialisable to the
//! JSON documents `--json` prints (one per report, field names stable for
//! scripts) and rendered to text by `render`. Built by
//! `handlers`, on the tracer's thread; shown by the front end.

pub use crate::tracer::{Mechanism, Notice};
use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use crate::fdtable::{FdKind, Pid, Seq};
use crate::symbolize::Frame;

/// A symbolized stack, shared: every report entry from one creating stack
/// holds the same frames (50,000 fds from one site, one list of frames).
pub type Frames = Arc<[Frame]>;

#[derive(Clone, Debug, Serialize)]
pub struct EventReport {
    pub seq: Seq,
    pub pid: Pid,
    pub tid: Pid,
    pub syscall: &'static str,
    pub args: String,
    pub kind: FdKind,
    pub result: i64,
    /// Fds the event created.
    pub fds: Vec<i32>,
    /// Fds the event closed.
    pub closed: Vec<i32>,
    pub bad_close: bool,
    pub open_fds: u32,
    /// What the created fd is now (`udp 0.0.0.0:0 unconnected`, a path),
    /// while it is still the fd this event created.
    pub target: Option<String>,
    pub frames: Frames,
    /// Why the stack ends early, when it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stack_truncated: Option<String>,
    /// `history` of a bad close: the close that freed the number before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closed_before: Option<FirstCloseReport>,
}

/// Why `continue` or `step` came back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StopKind {
    /// A breakpoint matched an event.
    Breakpoint,
    /// A catchpoint matched an event.
    Catch,
    /// `step` saw its events.
    Step,
    /// Ctrl-C, or a signal that ends the session.
    Interrupt,
    /// `continue DURATION` ran out.
    Timeout,
    /// The process is gone.
    Exited,
}

/// Where an open fd came from, as reports name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FdOrigin {
    /// Open when fdbg attached.
    #[serde(rename = "before attach")]
    BeforeAttach,
    /// Open when the program fdbg started began: passed by fdbg's parent
    /// (stdin, stdout, stderr and whatever else it left open).
    Inherited,
    /// Created by a recorded event (its `seq`).
    Created,
    /// Found in /proc but never seen created (e.g. made through io_uring).
    Untracked,
}

impl FdOrigin {
    /// The text reports show (the serde name).
    pub fn as_str(self) -> &'static str {
        match self {
            FdOrigin::BeforeAttach => "before attach",
            FdOrigin::Inherited => "inherited",
            FdOrigin::Created => "created",
            FdOrigin::Untracked => "untracked",
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct StopReport {
    pub stop: StopKind,
    pub breakpoint: Option<u32>,
    pub event: Option<EventReport>,
    pub exit_code: Option<i32>,
    /// The signal that killed the process, when it was killed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    pub pid: Pid,
    /// Where fd events came from when it stopped.
    #[serde(serialize_with = "mechanism_name")]
    pub events_from: crate::tracer::Mechanism,
    /// At a function breakpoint: the thread and its stack.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function: Option<FunctionStopReport>,
}

/// A thread stopped in a function: its stack, innermost first.
#[derive(Clone, Debug, Serialize)]
pub struct FunctionStopReport {
    pub tid: Pid,
    pub frames: Vec<Frame>,
}

#[derive(Clone, Debug, Serialize)]
pub struct FdEntry {
    pub fd: i32,
    pub kind: FdKind,
    pub target: Option<String>,
    /// The creating event; null for fds open before attach, inherited or
    /// untracked.
    pub seq: Option<Seq>,
    pub origin: FdOrigin,
    pub cloexec: bool,
    /// Where a socket was bound, connected or accepted from, oldest first:
    /// `["bind 0.0.0.0:8125", "listen backlog 128"]`.
    pub notes: Vec<String>,
    pub frames: Frames,
}

#[derive(Clone, Debug, Serialize)]
pub struct FdsReport {
    pub pid: Pid,
    /// True once the process is gone: the fds listed were open at its exit.
    pub exited: bool,
    pub open_fds: usize,
    pub fds: Vec<FdEntry>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SiteReport {
    /// Its number in the report, from 1.
    pub site: usize,
    pub count: usize,
    /// What the site's first fd is now (`udp 0.0.0.0:0 unconnected`, a path).
    pub target: Option<String>,
    pub syscall: &'static str,
    pub kind: FdKind,
    pub fds: Vec<i32>,
    pub first_seq: Seq,
    pub last_seq: Seq,
    /// How long ago the oldest and the newest of these fds were created.
    pub oldest_age_s: f64,
    pub newest_age_s: f64,
    /// These fds per minute over the time between the oldest and the
    /// newest (see `per_minute`).
    pub per_min: f64,
    /// What the site did over the session: fds created, and of those
    /// closed (these fds and others).
    pub created: u64,
    pub closed: u64,
    pub frames: Frames,
    /// `leaks --closed`: where the site's other fds were closed, most first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closed_by: Option<Vec<CloserReport>>,
}

/// One closing site of a creating site's fds (`leaks --closed`).
#[derive(Clone, Debug, Serialize)]
pub struct CloserReport {
    pub count: u64,
    /// `close`, `close_range`, `dup2`, `execve`; `fdbg` for `reclaim`'s;
    /// `unseen` for fds that went without a close fdbg saw.
    pub syscall: &'static str,
    pub frames: Frames,
}

/// `leaks --folded`: one `frame;…;frame COUNT` line per site, outermost
/// frame first, as flame-graph tools read them.
#[derive(Clone, Debug, Serialize)]
pub struct FoldedReport {
    pub pid: Pid,
    pub folded: Vec<String>,
}

/// `reclaim`: what it closed (or, in a dry run, would close) and what it
/// left open, each with why.
#[derive(Clone, Debug, Serialize)]
pub struct ReclaimReport {
    pub reclaim: ReclaimBody,
}

#[derive(Clone, Debug, Serialize)]
pub struct ReclaimBody {
    pub pid: Pid,
    pub site: usize,
    /// The site's creating stack.
    pub frames: Frames,
    /// Closed, or in a dry run the fds it would close.
    pub closed: Vec<i32>,
    /// Why each of `closed` is (or was) closed.
    pub why_closed: Vec<FdWhy>,
    pub skipped: Vec<FdWhy>,
    pub dry_run: bool,
    pub forced: bool,
    /// The process's fds in /proc before and after (null in a dry run).
    pub open_fds_before: usize,
    pub open_fds_after: Option<usize>,
    /// Why closing stopped before the end, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_early: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct FdWhy {
    pub fd: i32,
    pub why: String,
}

/// `who`: the fd that holds an inode (or an fd number), where it came
/// from and what its number went through.
#[derive(Clone, Debug, Serialize)]
pub struct WhoReport {
    pub who: WhoBody,
}

#[derive(Clone, Debug, Serialize)]
pub struct WhoBody {
    pub pid: Pid,
    pub fd: i32,
    pub inode: Option<u64>,
    pub kind: FdKind,
    pub target: Option<String>,
    /// The creating event; null for fds open before attach, inherited or
    /// untracked.
    pub seq: Option<Seq>,
    pub origin: FdOrigin,
    pub notes: Vec<String>,
    /// The creating stack.
    pub frames: Frames,
    /// The kept events on its number, oldest first.
    pub history: Vec<EventReport>,
    pub events_forgotten: u64,
}

/// A site's rate: `count` fds created over `span_s` seconds, per minute.
/// n fds from a steady source span n − 1 intervals; a single fd, or fds
/// created at one instant, give their count over the minute.
pub fn per_minute(count: usize, span_s: f64) -> f64 {
    if count >= 2 && span_s > 0.0 {
        (count - 1) as f64 * 60.0 / span_s.max(1e-3)
    } else {
        count as f64
    }
}

/// One line of `continue --every`, printed while the process runs.
#[derive(Clone, Debug, Serialize)]
pub struct TickReport {
    pub tick: TickBody,
}

#[derive(Clone, Debug, Serialize)]
pub struct TickBody {
    pub pid: Pid,
    /// Since the `continue` began.
    pub elapsed_s: f64,
    pub open_fds: usize,
    /// Since the previous tick (or the `continue`'s start).
    pub delta: i64,
    /// The sites that gained most fds still open during the tick.
    pub sites: Vec<TickSite>,
}

#[derive(Clone, Debug, Serialize)]
pub struct TickSite {
    /// Fds of the site open now.
    pub count: usize,
    /// Gained during the tick.
    pub delta: i64,
    /// Gained per minute during the tick.
    pub per_min: f64,
    pub frames: Frames,
}

#[derive(Clone, Debug, Serialize)]
pub struct LeaksReport {
    pub pid: Pid,
    pub exited: bool,
    /// "attach", "start" (under run), or "mark NAME".
    pub since: String,
    /// `--older`: only fds created longer ago than this.
    pub older_than_s: Option<f64>,
    pub open_fds: usize,
    pub total: usize,
    pub sites: Vec<SiteReport>,
}

#[derive(Clone, Debug, Serialize)]
pub struct DiffReport {
    pub pid: Pid,
    pub since: String,
    pub still_open: Vec<SiteReport>,
    pub opened_and_closed: usize,
    pub closed_from_before: Vec<i32>,
}

#[derive(Clone, Debug, Serialize)]
pub struct StatsReport {
    pub pid: Pid,
    pub open_fds: usize,
    /// Events by syscall name.
    pub events: BTreeMap<&'static str, u64>,
    /// Events that created fds, by kind.
    pub by_kind: BTreeMap<&'static str, u64>,
    pub bad_closes: u64,
    /// ptrace stops of this process's threads.
    pub stops: u64,
    /// Syscall entries fdbg saw in this process: every syscall under
    /// attach, only fd syscalls under run (the others cause no stop).
    pub syscalls_seen: u64,
    /// ptrace stops of every process of the session.
    pub stops_all_processes: u64,
    /// Fds found in /proc but not in the model, adopted as untracked.
    pub adopted: u64,
    /// Fds in the model that /proc did not have, dropped.
    pub dropped: u64,
    pub total_events: u64,
    /// The latest bad closes (EBADF), with their stacks and the close
    /// that freed the number before.
    pub bad_close_events: Vec<BadCloseReport>,
    pub events_per_sec: f64,
    pub stops_per_event: f64,
    /// Where the events come from.
    #[serde(serialize_with = "mechanism_name")]
    pub mechanism: crate::tracer::Mechanism,
    /// The kernel's own count of fd syscalls, where it counts them (perf):
    /// the whole session's, every traced process included.
    pub kernel_fd_syscalls: Option<u64>,
    /// Fd syscalls the kernel counted that fdbg did not see.
    pub missed: u64,
    /// While observing without stops: what the kernel counted and what its
    /// samples gave (null where fdbg never observed).
    pub observed: Option<Observed>,
    pub memory: MemoryFigures,
    /// (seconds since tracking began, open fds): the largest count of each
    /// stretch of time, at most a few hundred points, the last one now.
    pub open_fds_over_time: Vec<(f64, u32)>,
}

/// A close that failed with EBADF: its event, its fd, and the close that
/// really closed that number before it (null: never closed since attach).
#[derive(Clone, Debug, Serialize)]
pub struct BadCloseReport {
    #[serde(flatten)]
    pub event: EventReport,
    pub fd: i32,
    pub first_close: Option<FirstCloseReport>,
}

#[derive(Clone, Debug, Serialize)]
pub struct FirstCloseReport {
    pub seq: Seq,
    /// `close`, `close_range`, `dup2`, `execve`, or `fdbg` (`reclaim`).
    pub syscall: &'static str,
    pub frames: Frames,
}

/// What fdbg holds (`stats`).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct MemoryFigures {
    /// fdbg's resident set, from /proc/self/statm.
    pub rss_bytes: u64,
    /// Its proportional set, from /proc/self/smaps_rollup: each page
    /// counted once (the BPF ring, mapped twice, counts twice in the
    /// resident set).
    pub pss_bytes: u64,
    /// fdbg's own CPU time so far (user and system), and per event
    /// recorded (of every process).
    pub cpu_s: f64,
    pub cpu_us_per_event: f64,
    /// fdbg's CPU while the process ran (the samplers' opening left out)
    /// per event: what each event costs, on a session still short too,
    /// without the attach's and the commands' CPU.
    pub cpu_us_per_event_running: f64,
    pub events_kept: u64,
    pub events_forgotten: u64,
    /// The most events kept (`--keep-events`).
    pub events_kept_at_most: u64,
    pub stacks: u64,
    pub sites: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct HistoryReport {
    pub pid: Pid,
    pub fd: i32,
    pub events: Vec<EventReport>,
    /// Events of the process (on any fd) before the oldest one kept:
    /// the history may have begun earlier.
    pub events_forgotten: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ThreadEntry {
    pub tid: Pid,
    pub pid: Pid,
    pub name: String,
    /// The /proc state letter (R, S, D, T, t, Z).
    pub state: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct ThreadsReport {
    pub threads: Vec<ThreadEntry>,
}

#[derive(Clone, Debug, Serialize)]
pub struct BacktraceReport {
    pub event: EventReport,
}

#[derive(Clone, Debug, Serialize)]
pub struct SocketEntry {
    pub fd: i32,
    /// tcp, tcp6, udp, udp6, unix, netlink, packet, raw, raw6, other
    pub proto: &'static str,
    /// stream, dgram, ... when known
    pub sock_type: Option<&'static str>,
    pub local: Option<String>,
    pub remote: Option<String>,
    /// LISTEN, ESTABLISHED, CLOSE_WAIT, ..., UNCONN (listed, not connected),
    /// UNCONNECTED (in no table: never bound or connected).
    pub state: String,
    pub netstat_visible: bool,
    /// The creating event; null for sockets open before attach, inherited
    /// or untracked.
    pub seq: Option<Seq>,
    pub origin: FdOrigin,
    pub frames: Frames,
}

#[derive(Clone, Debug, Serialize)]
pub struct SocketsReport {
    pub pid: Pid,
    pub exited: bool,
    pub sockets: Vec<SocketEntry>,
    pub by_state: BTreeMap<String, usize>,
    pub netstat_visible: usize,
    pub netstat_invisible: usize,
    /// Sockets netstat cannot see, grouped by creating stack.
    pub invisible_sites: Vec<SiteReport>,
}

#[derive(Clone, Debug, Serialize)]
pub struct BreakpointsReport {
    pub breakpoints: Vec<crate::repl::breakpoints::Breakpoint>,
}

/// `break` or `catch`: the breakpoint made, with where a function
/// breakpoint is armed (no location: pending).
#[derive(Clone, Debug, Serialize)]
pub struct BreakpointSetReport {
    pub breakpoint: crate::repl::breakpoints::Breakpoint,
}

#[derive(Clone, Debug, Serialize)]
pub struct MessageReport {
    pub message: String,
}

/// One answer of one command; a command may give several (one per process,
/// or an event line per step).
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum Report {
    Stop(StopReport),
    Event(EventReport),
    Fds(FdsReport),
    Leaks(LeaksReport),
    Diff(DiffReport),
    Stats(StatsReport),
    History(HistoryReport),
    Threads(ThreadsReport),
    Backtrace(BacktraceReport),
    Breakpoints(BreakpointsReport),
    /// Written in JSON as the message its text is.
    BreakpointSet(BreakpointSetReport),
    Sockets(SocketsReport),
    Message(MessageReport),
    /// `bt` at a function stop.
    Function(FunctionStopReport),
    Finish(FinishReport),
    Balance(BalanceReport),
    Tick(TickReport),
    Folded(FoldedReport),
    Reclaim(ReclaimReport),
    Who(WhoReport),
}

/// `balance`: what the calls of each measured function left.
#[derive(Clone, Debug, Serialize)]
pub struct BalanceReport {
    pub balance: Vec<BalanceEntry>,
}

#[derive(Clone, Debug, Serialize)]
pub struct BalanceEntry {
    pub function: String,
    pub calls: u64,
    pub opened: u64,
    /// Fds from before a call closed during it.
    pub closed: u64,
    /// Fds created during calls and open now.
    pub still_open: u64,
    /// (still open − closed) / calls.
    pub per_call: f64,
    pub sites: Vec<SiteReport>,
}

/// What one call left (`finish`).
#[derive(Clone, Debug, Serialize)]
pub struct FinishReport {
    pub finish: FinishBody,
}

#[derive(Clone, Debug, Serialize)]
pub struct FinishBody {
    pub function: String,
    pub tid: Pid,
    pub return_value: i64,
    /// Fds created during the call and still open, by site.
    pub still_open: Vec<SiteReport>,
    /// Fds closed during the call that were open before it.
    pub closed: Vec<i32>,
    pub opened_and_closed: usize,
}

impl Report {
    pub fn message(text: impl Into<String>) -> Report {
        Report::Message(MessageReport {
            message: text.into(),
        })
    }
}

/// A mechanism as JSON shows it: its name (`perf-observe`, `seccomp`, …).
fn mechanism_name<S: serde::Serializer>(
    mechanism: &Mechanism,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(mechanism.as_str())
}

/// What observing has given (`stats`).
#[derive(Clone, Debug, Serialize)]
pub struct Observed {
    /// Fd syscalls the kernel counted while observing.
    pub counted: u64,
    /// Samples of them decoded.
    pub recorded: u64,
    /// recorded / counted (1 when nothing was counted).
    pub coverage: f64,
    /// Samples the kernel dropped because a ring was full, or throttled.
    pub lost: u64,
    /// The stack bytes each sample copies now.
    pub stack_bytes: u32,
    /// What takes the samples (a BPF program at sys_exit, or perf events
    /// per thread and why).
    pub sampler: String,
    /// Samples that carried no stack copy: the kernel found a remembered
    /// walk's return addresses on the stack again.
    pub walks_found_again: u64,
}

impl From<crate::tracer::ObservedFigures> for Observed {
    fn from(o: crate::tracer::ObservedFigures) -> Observed {
        Observed {
            counted: o.counted,
            recorded: o.recorded,
            coverage: o.coverage,
            lost: o.lost,
            stack_bytes: o.stack_bytes,
            sampler: o.sampler,
            walks_found_again: o.walks_found_again,
        }
    }
}

/// What the user should know about a command besides its reports: the
/// tracer's notices, the front end's own, the symbolizer's notes. Said on
/// stderr, one line each, and under --json in the command's `"notes"`.
#[derive(Debug)]
pub enum Note {
    Tracer(Notice),
    /// `balance` could not put a breakpoint at a call's return address.
    ReturnsNotCaught {
        address: u64,
        why: String,
    },
    /// The symbolizer's (a debuginfod server down, a bad download).
    Symbolizer(String),
}
