//! Feeding the model: processes appearing, syscalls, execve, exit, and the
//! check against /proc.

use std::collections::{BTreeMap, VecDeque};

use rustc_hash::FxHashMap as HashMap;

use super::groups::SiteGroups;

use super::series::Series;
use super::table::FdTable;
use super::window::{NewEvent, Window};
use super::{
    BadClose, CLOSED_BY_FDBG, CLOSED_UNSEEN, Closer, Counters, DEFAULT_KEPT, FdKind, LastClose,
    Model, Nanos, OpenFd, Origin, Pid, ProcFd, Process, ProcessEnd, Reconciled, Seq, SiteTotals,
};
use crate::stacks::{StackId, StackTable};
use crate::syscalls::{Decoded, Effect};

/// One process's fd table, its sites' totals, and what `diff` needs of a
/// process that appeared after a mark.
pub(super) struct ProcessState {
    pub(super) info: Process,
    pub(super) table: FdTable,
    /// The origins of the fds the table started with (at attach, start or fork).
    pub(super) initial: Vec<(i32, Origin)>,
    /// Fds a thread is closing (its close() has entered but not returned),
    /// by tid: already out of the table, because the kernel frees the
    /// number at once and another thread may get it before this close
    /// returns.
    pub(super) closing: HashMap<Pid, OpenFd>,
    /// Fds whose number a creation got before the close that freed it was
    /// seen: where events arrive only after their syscall returned (perf
    /// SIGTRAPs), two threads' stops come in the order fdbg waits for
    /// them, not the kernel's. Each number keeps its displaced holders
    /// oldest first; a close of that number by a thread that did not
    /// create the newcomer closes the oldest (every displaced holder was
    /// closed already in the kernel; only the attribution may be off); a
    /// report, made with every event in, drops what is left.
    pub(super) displaced: BTreeMap<i32, VecDeque<OpenFd>>,
    /// Each creating site's totals and closers.
    pub(super) sites: HashMap<SiteKey, Site>,
    /// Stacks counted as one site (`Model::same_site`).
    pub(super) groups: SiteGroups,
    /// Fds created by this process's events, ever.
    pub(super) created: u64,
    pub(super) series: Series,
    /// The latest bad closes, oldest first, at most `BAD_CLOSES_KEPT`.
    pub(super) bad_closes: VecDeque<BadClose>,
    /// Each fd number's latest successful close (bounded by the numbers
    /// the process used), so that a bad close names the close that freed
    /// its number however long ago that was.
    pub(super) last_close: HashMap<i32, LastClose>,
}

/// What the model keeps of one creating site.
#[derive(Clone, Debug, Default)]
pub(super) struct Site {
    pub(super) totals: SiteTotals,
    /// Who closed its fds and how many (bounded by the interned stacks).
    pub(super) closers: Vec<(Closer, u64)>,
}

/// A creating site: the stack and the syscall.
pub(super) type SiteKey = (Option<StackId>, &'static str);

/// Bad closes kept per process with their events (every one is counted).
pub const BAD_CLOSES_KEPT: usize = 10;

impl ProcessState {
    fn new(pid: Pid, start_seq: Seq, now: Nanos, table: FdTable, parent: Option<Pid>) -> Self {
        let initial = table.values().map(|open| (open.fd, open.origin)).collect();
        let mut series = Series::new(now);
        series.note(now, table.len() as u32);
        ProcessState {
            info: Process {
                pid,
                end: None,
                parent,
                start_seq,
                counters: Counters::default(),
            },
            table,
            initial,
            closing: HashMap::default(),
            displaced: BTreeMap::new(),
            sites: HashMap::default(),
            groups: SiteGroups::default(),
            created: 0,
            series,
            bad_closes: VecDeque::new(),
            last_close: HashMap::default(),
        }
    }
}

/// An fd of a site left the model's view (closed, or dropped): count it.
fn gone(sites: &mut HashMap<SiteKey, Site>, open: &OpenFd) {
    if let Origin::Created(_) = open.origin
        && let Some(site) = sites.get_mut(&(open.stack, open.syscall))
    {
        site.totals.closed += 1;
    }
}

/// An fd of a site was closed by `closer`: count it in the site's closers.
fn closed_by(sites: &mut HashMap<SiteKey, Site>, open: &OpenFd, closer: Closer) {
    if let Origin::Created(_) = open.origin {
        let counts = &mut sites.entry((open.stack, open.syscall)).or_default().closers;
        match counts.iter_mut().find(|(c, _)| *c == closer) {
            Some((_, n)) => *n += 1,
            None => counts.push((closer, 1)),
        }
    }
}

const UNSEEN: Closer = Closer {
    stack: None,
    syscall: CLOSED_UNSEEN,
};

impl Default for Model {
    fn default() -> Self {
        Model::new()
    }
}

impl Model {
    pub fn new() -> Model {
        Model::keeping(DEFAULT_KEPT)
    }

    /// A model whose window keeps the latest `kept` events.
    pub fn keeping(kept: usize) -> Model {
        Model {
            stacks: StackTable::new(),
            processes: BTreeMap::new(),
            window: Window::new(kept),
            counters: Counters::default(),
            clock: 0,
            scratch: (Vec::new(), Vec::new()),
        }
    }

    /// Keep the latest `kept` events (at least one) from now on.
    pub fn keep_events(&mut self, kept: usize) {
        self.window.set_kept(kept);
    }

    /// Events recorded from now on happened at `now` (CLOCK_MONOTONIC
    /// nanoseconds). The clock never goes back: an earlier time keeps the
    /// later one.
    pub fn set_clock(&mut self, now: Nanos) {
        self.clock = self.clock.max(now);
    }

    /// The time of the latest event or `set_clock`.
    pub fn clock(&self) -> Nanos {
        self.clock
    }

    /// Start tracking a process with the fds /proc showed at attach (or the
    /// fds a started program began with), all `Origin::BeforeAttach`.
    /// Adding a pid that is already known starts it over.
    pub fn add_process(&mut self, pid: Pid, fds: Vec<ProcFd>) {
        let now = self.clock;
        let table = fds
            .into_iter()
            .map(|proc_fd| {
                let open = OpenFd {
                    fd: proc_fd.fd,
                    kind: proc_fd.kind,
                    target: Some(proc_fd.target),
                    cloexec: proc_fd.cloexec,
                    origin: Origin::BeforeAttach,
                    stack: None,
                    syscall: "",
                    tid: 0,
                    created_at: now,
                    notes: Vec::new(),
                };
                (open.fd, open)
            })
            .collect();
        let state = ProcessState::new(pid, self.last_seq(), now, table, None);
        self.processes.insert(pid, state);
    }

    /// fork/vfork/clone without CLONE_FILES: the child starts with a copy of
    /// the parent's table (same origins and stacks); empty if the parent is
    /// unknown. The tracer should call this before recording the child's
    /// events; if it did not, the fds the child already has win over the
    /// parent's copies. A child pid that had exited is a new process.
    pub fn fork(&mut self, parent: Pid, child: Pid) {
        let inherited = self
            .processes
            .get(&parent)
            .map(|state| state.table.clone())
            .unwrap_or_default();
        match self.processes.get_mut(&child) {
            Some(state) if state.info.end.is_none() => {
                for (fd, open) in inherited {
                    if !state.table.contains_key(&fd) {
                        state.initial.push((fd, open.origin));
                        state.table.insert(fd, open);
                    }
                }
                state.info.parent = Some(parent);
            }
            _ => {
                let state =
                    ProcessState::new(child, self.last_seq(), self.clock, inherited, Some(parent));
                self.processes.insert(child, state);
            }
        }
    }

    /// Known and not yet ended.
    pub fn is_tracked(&self, pid: Pid) -> bool {
        self.processes
            .get(&pid)
            .is_some_and(|state| state.info.end.is_none())
    }

    /// Thread `tid` entered close(fd): take fd out of the table now. The
    /// kernel releases the number before close returns, so another thread
    /// may be given it first; the close's own event (`record`) then closes
    /// the fd this thread was closing, not the new one.
    pub fn closing(&mut self, pid: Pid, tid: Pid, fd: i32) {
        let Some(state) = self.processes.get_mut(&pid) else {
            return;
        };
        if state.info.end.is_some() {
            return;
        }
        match state.table.remove(&fd) {
            Some(open) => {
                gone(&mut state.sites, &open);
                state.closing.insert(tid, open);
            }
            None => {
                state.closing.remove(&tid);
            }
        }
    }

    /// Apply one completed fd syscall of thread `tid` of process `pid` and
    /// record it as an event (also when it failed, so history and stats see
    /// it), at the clock's time. Returns the event's seq.
    ///
    /// When `decoded.kind` is Other but the syscall created fds (dup of a
    /// socket), the event takes the kind of the first fd it created.
    ///
    /// The new fds' targets and notes are taken out of `decoded`; the
    /// rest is left for the caller to reuse.
    pub fn record(
        &mut self,
        pid: Pid,
        tid: Pid,
        decoded: &mut Decoded,
        stack: Option<StackId>,
    ) -> Seq {
        let name = decoded.name;
        self.record_by(pid, tid, decoded, stack, name)
    }

    /// Fd `fd` of `pid` was closed by fdbg itself, in thread `tid`
    /// (`reclaim`): recorded as a close with no stack, its arguments
    /// saying who closed it, and counted in its site's closers as fdbg's.
    pub fn reclaimed(&mut self, pid: Pid, tid: Pid, fd: i32) -> Seq {
        let kind = self
            .open_fd(pid, fd)
            .map_or(FdKind::Other, |open| open.kind);
        let mut decoded = Decoded {
            name: "close",
            args_text: format!("{fd} (closed by fdbg)"),
            result: 0,
            kind,
            effects: vec![Effect::Close { fd }],
        };
        self.record_by(pid, tid, &mut decoded, None, CLOSED_BY_FDBG)
    }

    /// `record`, the fds it closes counted as closed by `closer` (the
    /// syscall's name, or `CLOSED_BY_FDBG`). The new fds' targets are
    /// taken out of `decoded`.
    fn record_by(
        &mut self,
        pid: Pid,
        tid: Pid,
        decoded: &mut Decoded,
        stack: Option<StackId>,
        closer: &'static str,
    ) -> Seq {
        let closer = Closer {
            stack,
            syscall: closer,
        };
        let seq = self.last_seq() + 1;
        let start_seq = self.last_seq();
        let now = self.clock;
        let state = self
            .processes
            .entry(pid)
            .or_insert_with(|| ProcessState::new(pid, start_seq, now, FdTable::default(), None));
        let pending_close = state.closing.remove(&tid);
        let table = &mut state.table;
        let displaced = &mut state.displaced;
        let sites = &mut state.sites;
        let created_by = |open: &OpenFd| match open.origin {
            Origin::Created(_) => Some(open.tid),
            _ => None,
        };
        let (mut created, mut closed) = std::mem::take(&mut self.scratch);
        created.clear();
        closed.clear();
        let mut bad_close = None;
        let mut annotated = None;
        let mut dropped = 0;
        let new_fd = |fd: i32, kind: FdKind, target: Option<String>, cloexec: bool, notes| OpenFd {
            fd,
            kind,
            target,
            cloexec,
            origin: Origin::Created(seq),
            stack,
            syscall: decoded.name,
            tid,
            created_at: now,
            notes,
        };
        for effect in &mut decoded.effects {
            match *effect {
                Effect::Open {
                    fd,
                    kind,
                    cloexec,
                    ref mut target,
                } => {
                    if let Some(holder) = table.remove(&fd) {
                        displaced.entry(fd).or_default().push_back(holder);
                    }
                    table.insert(fd, new_fd(fd, kind, target.take(), cloexec, Vec::new()));
                    created.push(fd);
                }
                Effect::Dup { from, to, cloexec } => {
                    if from == to {
                        continue;
                    }
                    // A duplicate refers to the same socket: same notes.
                    let (kind, target, notes) = table
                        .get(&from)
                        .map(|source| (source.kind, source.target.clone(), source.notes.clone()))
                        .unwrap_or((FdKind::Other, None, Vec::new()));
                    if let Some(old) = table.remove(&to) {
                        gone(sites, &old);
                        closed_by(sites, &old, closer);
                        closed.push(to);
                    }
                    table.insert(to, new_fd(to, kind, target, cloexec, notes));
                    created.push(to);
                }
                Effect::Close { fd } => {
                    // Taken out at entry (`closing`), or now. Listed even
                    // when the model did not know the fd: the process did
                    // close it.
                    let taken_at_entry = pending_close.as_ref().is_some_and(|p| p.fd == fd);
                    let closes_displaced = !taken_at_entry
                        && displaced.contains_key(&fd)
                        && table
                            .get(&fd)
                            .is_none_or(|newcomer| created_by(newcomer) != Some(tid));
                    if closes_displaced {
                        if let Some(holders) = displaced.get_mut(&fd) {
                            if let Some(holder) = holders.pop_front() {
                                gone(sites, &holder);
                                closed_by(sites, &holder, closer);
                            }
                            if holders.is_empty() {
                                displaced.remove(&fd);
                            }
                        }
                    } else if taken_at_entry {
                        // Counted closed at the entry; its closer is known now.
                        if let Some(open) = &pending_close {
                            closed_by(sites, open, closer);
                        }
                    } else if let Some(old) = table.remove(&fd) {
                        gone(sites, &old);
                        closed_by(sites, &old, closer);
                    }
                    closed.push(fd);
                }
                Effect::BadClose { fd } => {
                    // The kernel says fd was not open: a model that thinks
                    // otherwise was wrong.
                    let taken = pending_close.as_ref().is_some_and(|p| p.fd == fd);
                    let held = table.remove(&fd);
                    if let Some(old) = &held {
                        gone(sites, old);
                        closed_by(sites, old, UNSEEN);
                    }
                    if taken || held.is_some() {
                        dropped += 1;
                    }
                    bad_close = Some(fd);
                }
                Effect::CloseRange { first, last } => {
                    let in_range: Vec<i32> = table
                        .fds_from(i32::try_from(first).unwrap_or(i32::MAX))
                        .take_while(|&fd| in_u32_range(fd, first, last))
                        .collect();
                    for fd in in_range {
                        if let Some(old) = table.remove(&fd) {
                            gone(sites, &old);
                            closed_by(sites, &old, closer);
                        }
                        closed.push(fd);
                    }
                }
                Effect::CloexecRange { first, last } => {
                    for open in table.values_mut() {
                        if in_u32_range(open.fd, first, last) {
                            open.cloexec = true;
                        }
                    }
                }
                Effect::SetCloexec { fd, cloexec } => {
                    if let Some(open) = table.get_mut(&fd) {
                        open.cloexec = cloexec;
                    }
                }
                Effect::Annotate { fd, ref mut note } => {
                    // Neither a creation nor a close: the note goes on the
                    // open fd, the event remembers which fd it was about
                    // (its arguments carry the address for `history`).
                    if let Some(open) = table.get_mut(&fd) {
                        open.annotate(std::mem::take(note));
                    }
                    if fd >= 0 {
                        annotated = Some(fd);
                    }
                }
            }
        }
        if !created.is_empty() {
            let totals = &mut sites.entry((stack, decoded.name)).or_default().totals;
            if totals.created == 0 {
                totals.first = now;
            }
            totals.created += created.len() as u64;
            totals.last = now;
            state.created += created.len() as u64;
        }
        // An event that creates nothing of its own kind takes the kind of
        // the first fd it created, or else of the fd it annotated.
        let kind = match (decoded.kind, created.first().copied(), annotated) {
            (FdKind::Other, Some(fd), _) | (FdKind::Other, None, Some(fd)) => {
                table.get(&fd).map_or(FdKind::Other, |open| open.kind)
            }
            (kind, _, _) => kind,
        };
        let open_fds = table.len() as u32;
        state.series.note(now, open_fds);
        let created_any = !created.is_empty();
        let is_bad_close = bad_close.is_some();
        let name = decoded.name;
        let bump = |counters: &mut Counters| {
            *counters.events_by_syscall.entry(name).or_default() += 1;
            if created_any {
                *counters.events_by_kind.entry(kind).or_default() += 1;
            }
            counters.bad_closes += u64::from(is_bad_close);
            counters.dropped += dropped;
        };
        bump(&mut state.info.counters);
        bump(&mut self.counters);
        let seq = self.window.push(NewEvent {
            time: now,
            pid,
            tid,
            syscall: decoded.name,
            result: decoded.result,
            kind,
            created: &created,
            closed: &closed,
            bad_close,
            stack,
            open_fds,
            args: &decoded.args_text,
            annotated,
        });
        if let Some(fd) = bad_close
            && let Some(event) = self.window.get(seq)
        {
            let first_close = state.last_close.get(&fd).copied();
            let bad_closes = &mut state.bad_closes;
            if bad_closes.len() >= BAD_CLOSES_KEPT {
                bad_closes.pop_front();
            }
            bad_closes.push_back(BadClose { event, first_close });
        }
        for &fd in &closed {
            let last = LastClose {
                seq,
                stack,
                syscall: closer.syscall,
            };
            state.last_close.insert(fd, last);
        }
        self.scratch = (created, closed);
        seq
    }

    /// A successful execve: every close-on-exec fd is closed, recorded as an
    /// event "execve" of kind Other with no stack.
    pub fn exec(&mut self, pid: Pid, tid: Pid) -> Seq {
        let decoded = Decoded {
            name: "execve",
            args_text: String::new(),
            result: 0,
            kind: FdKind::Other,
            effects: Vec::new(),
        };
        // Closes in flight in the threads the exec ended did close their
        // fds; a holder still displaced lost its close with them.
        if let Some(state) = self.processes.get_mut(&pid) {
            state.closing.clear();
            let stale = drop_displaced(state);
            state.info.counters.dropped += stale;
            self.counters.dropped += stale;
        }
        // Sweep first so that `record` sees the closes as its own.
        let closing: Vec<i32> = self
            .processes
            .get(&pid)
            .map(|state| {
                state
                    .table
                    .values()
                    .filter(|open| open.cloexec)
                    .map(|open| open.fd)
                    .collect()
            })
            .unwrap_or_default();
        let mut decoded = Decoded {
            effects: closing.into_iter().map(|fd| Effect::Close { fd }).collect(),
            ..decoded
        };
        self.record(pid, tid, &mut decoded, None)
    }

    /// The process ended. Nothing is closed: its fds stay listed as open at
    /// exit. Unknown pids are ignored.
    pub fn exited(&mut self, pid: Pid, end: ProcessEnd) {
        if let Some(state) = self.processes.get_mut(&pid) {
            state.info.end = Some(end);
            // A close still in flight at the end did close its fd.
            state.closing.clear();
            state.series.note(self.clock, state.table.len() as u32);
        }
    }

    /// Check the model against what /proc/PID/fd shows now: adopt what the
    /// process has and the model lacks (`Origin::Untracked(last_seq)`), drop
    /// what the model has and the process lacks, and fill in what the model
    /// did not know of fds present in both (kind when Other, or File when
    /// /proc says Dir; the target always: the kernel's name is absolute). An ended or unknown process is
    /// not reconciled.
    pub fn reconcile(&mut self, pid: Pid, actual: &[ProcFd]) -> Reconciled {
        let last_seq = self.last_seq();
        let now = self.clock;
        let Some(state) = self.processes.get_mut(&pid) else {
            return Reconciled::default();
        };
        if state.info.end.is_some() {
            return Reconciled::default();
        }
        let actual_by_fd: BTreeMap<i32, &ProcFd> =
            actual.iter().map(|proc_fd| (proc_fd.fd, proc_fd)).collect();
        let mut changes = Reconciled::default();
        let sites = &mut state.sites;
        state.table.retain(|fd, open| {
            let present = actual_by_fd.contains_key(fd);
            if !present {
                changes.dropped.push(*fd);
                gone(sites, open);
                closed_by(sites, open, UNSEEN);
            }
            present
        });
        for (&fd, proc_fd) in &actual_by_fd {
            match state.table.get_mut(&fd) {
                Some(open) => {
                    let refine = open.kind == FdKind::Other
                        || (open.kind == FdKind::File && proc_fd.kind == FdKind::Dir);
                    if refine {
                        open.kind = proc_fd.kind;
                    }
                    // The kernel's name is the better one: absolute where
                    // the call named a relative path.
                    open.target = Some(proc_fd.target.clone());
                }
                // A thread stopped at the entry of close(fd): the kernel
                // closes it when the thread goes on, the model already did.
                None if state.closing.values().any(|closing| closing.fd == fd) => {}
                None => {
                    let open = OpenFd {
                        fd,
                        kind: proc_fd.kind,
                        target: Some(proc_fd.target.clone()),
                        cloexec: proc_fd.cloexec,
                        origin: Origin::Untracked(last_seq),
                        stack: None,
                        syscall: "",
                        tid: 0,
                        created_at: now,
                        notes: Vec::new(),
                    };
                    state.table.insert(fd, open);
                    changes.adopted.push(fd);
                }
            }
        }
        // Every event is in when the model is checked: a holder still
        // displaced lost its close (not seen: io_uring, a missed event).
        let stale = drop_displaced(state);
        let adopted = changes.adopted.len() as u64;
        let dropped = changes.dropped.len() as u64 + stale;
        for counters in [&mut state.info.counters, &mut self.counters] {
            counters.adopted += adopted;
            counters.dropped += dropped;
        }
        if adopted + dropped > 0 {
            state.series.note(now, state.table.len() as u32);
        }
        changes
    }

    /// Set what an open fd refers to (targets refined from /proc). Does
    /// nothing if the fd is not open in the model.
    pub fn set_target(&mut self, pid: Pid, fd: i32, kind: FdKind, target: String) {
        let open = self
            .processes
            .get_mut(&pid)
            .and_then(|state| state.table.get_mut(&fd));
        if let Some(open) = open {
            open.kind = kind;
            open.target = Some(target);
        }
    }
}

/// Forget the displaced holders of `state` (their closes were lost);
/// returns how many there were.
fn drop_displaced(state: &mut ProcessState) -> u64 {
    let mut stale = 0;
    for holder in std::mem::take(&mut state.displaced).into_values().flatten() {
        gone(&mut state.sites, &holder);
        closed_by(&mut state.sites, &holder, UNSEEN);
        stale += 1;
    }
    stale
}

/// Whether `fd` is in close_range's inclusive `first..=last`.
fn in_u32_range(fd: i32, first: u32, last: u32) -> bool {
    let fd = i64::from(fd);
    fd >= i64::from(first) && fd <= i64::from(last)
}
