//! Asking the model: open fds, events, leaks, history and diff.

use std::collections::{BTreeMap, HashMap, VecDeque};

use super::{Counters, Event, FdKind, LeakSite, Model, OpenFd, Origin, Pid, Process, Seq};
use crate::stacks::StackId;

/// What changed in one process since a moment (`diff`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diff {
    /// Fds created after the moment and open now, grouped like `leaks`.
    pub still_open: Vec<LeakSite>,
    /// Fds created after the moment that are no longer open.
    pub opened_and_closed: usize,
    /// Fds that were open at the moment and were closed after it, sorted.
    pub closed_from_before: Vec<i32>,
}

/// The syscall name `leaks` gives fds adopted from /proc.
pub const UNTRACKED: &str = "untracked";

/// The syscall name a site of fds open at attach is given (`sites`).
pub const BEFORE_ATTACH: &str = "before attach";

/// The syscall name a site of fds a started program inherited is given.
pub const INHERITED: &str = "inherited";

impl Model {
    pub fn process(&self, pid: Pid) -> Option<&Process> {
        self.processes.get(&pid).map(|state| &state.info)
    }

    /// Every process ever tracked (ended ones too), by pid.
    pub fn processes(&self) -> impl Iterator<Item = &Process> {
        self.processes.values().map(|state| &state.info)
    }

    /// The fds the model believes open (at exit, for an ended process), by fd.
    pub fn open_fds(&self, pid: Pid) -> Vec<&OpenFd> {
        self.processes
            .get(&pid)
            .map(|state| state.table.values().collect())
            .unwrap_or_default()
    }

    pub fn open_fd(&self, pid: Pid, fd: i32) -> Option<&OpenFd> {
        self.processes.get(&pid)?.table.get(&fd)
    }

    pub fn open_count(&self, pid: Pid) -> usize {
        self.processes
            .get(&pid)
            .map_or(0, |state| state.table.len())
    }

    pub fn event(&self, seq: Seq) -> Option<&Event> {
        let index = usize::try_from(seq.checked_sub(1)?).ok()?;
        self.events.get(index)
    }

    /// All events of all processes, in seq order.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// The seq of the latest event; 0 before any.
    pub fn last_seq(&self) -> Seq {
        self.events.len() as Seq
    }

    /// Counters over all processes (each `Process` has its own).
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Fds of `pid` still open that came into being after event `since`
    /// (see `Origin::is_after`), grouped as `sites` groups them; groups of
    /// at least `min` fds.
    pub fn leaks(&self, pid: Pid, since: Seq, min: usize) -> Vec<LeakSite> {
        let after = self
            .open_fds(pid)
            .into_iter()
            .filter(|open| open.origin.is_after(since));
        // No fd open before tracing is after anything: the name is unused.
        let sites = self.sites(after, BEFORE_ATTACH);
        sites.into_iter().filter(|site| site.count >= min).collect()
    }

    /// `fds` grouped by (creating stack, syscall), biggest group first, then
    /// oldest first. Fds adopted from /proc group under syscall
    /// "untracked"; fds open when tracing began under `initial` ("before
    /// attach", or "inherited" for a program fdbg started), with seq 0.
    /// Each site's fds keep the order of `fds`.
    pub fn sites<'a>(
        &self,
        fds: impl IntoIterator<Item = &'a OpenFd>,
        initial: &'static str,
    ) -> Vec<LeakSite> {
        let mut groups: HashMap<(Option<StackId>, &'static str), LeakSite> = HashMap::new();
        for open in fds {
            let (syscall, seq) = match open.origin {
                Origin::Created(seq) => (self.event(seq).map_or(UNTRACKED, |e| e.syscall), seq),
                Origin::Untracked(seq) => (UNTRACKED, seq),
                Origin::BeforeAttach => (initial, 0),
            };
            let site = groups
                .entry((open.stack, syscall))
                .or_insert_with(|| LeakSite {
                    count: 0,
                    syscall,
                    kind: open.kind,
                    fds: Vec::new(),
                    first_seq: seq,
                    last_seq: seq,
                    stack: open.stack,
                });
            site.count += 1;
            site.fds.push(open.fd);
            if seq < site.first_seq {
                site.first_seq = seq;
                site.kind = open.kind;
            }
            site.last_seq = site.last_seq.max(seq);
        }
        let mut sites: Vec<LeakSite> = groups.into_values().collect();
        sites.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then(a.first_seq.cmp(&b.first_seq))
                .then(a.stack.cmp(&b.stack))
                .then(a.syscall.cmp(b.syscall))
        });
        sites
    }

    /// Every event of `pid` that created, closed or bad-closed fd number
    /// `fd`, in order (fd numbers are reused: this is all of them).
    pub fn history(&self, pid: Pid, fd: i32) -> Vec<&Event> {
        self.events_of(pid).filter(|e| e.touches(fd)).collect()
    }

    /// What changed in `pid` since event `since`; see `Diff`.
    pub fn diff(&self, pid: Pid, since: Seq) -> Diff {
        let Some(state) = self.processes.get(&pid) else {
            return Diff::default();
        };
        let mut opened_and_closed = 0;
        for event in self.events_of(pid).filter(|e| e.seq > since) {
            for fd in event.created.iter() {
                let open_now = state
                    .table
                    .get(fd)
                    .is_some_and(|open| open.origin == Origin::Created(event.seq));
                if !open_now {
                    opened_and_closed += 1;
                }
            }
        }
        Diff {
            still_open: self.leaks(pid, since, 1),
            opened_and_closed,
            closed_from_before: self.closed_from_before(pid, since),
        }
    }

    /// Replays `pid`'s history from its initial table to find the fds that
    /// were open at `since` and closed after it.
    ///
    /// A number may be open twice in the replay: close frees it at entry, so
    /// another thread's creation can be recorded before the close's own
    /// event. Each number keeps its holders oldest first, and a close takes
    /// the oldest, the one that was being closed.
    fn closed_from_before(&self, pid: Pid, since: Seq) -> Vec<i32> {
        let Some(state) = self.processes.get(&pid) else {
            return Vec::new();
        };
        let mut open: BTreeMap<i32, VecDeque<Origin>> = state
            .initial
            .iter()
            .map(|&(fd, origin)| (fd, VecDeque::from([origin])))
            .collect();
        let close = |open: &mut BTreeMap<i32, VecDeque<Origin>>, fd: i32| {
            let holders = open.get_mut(&fd)?;
            let oldest = holders.pop_front();
            if holders.is_empty() {
                open.remove(&fd);
            }
            oldest
        };
        let mut reconciled = state.reconciled.iter().peekable();
        let mut closed_from_before = Vec::new();
        for event in self.events_of(pid) {
            while let Some(&&(seq, fd, adopted)) = reconciled.peek() {
                if seq >= event.seq {
                    break;
                }
                match adopted {
                    Some(origin) => {
                        open.insert(fd, VecDeque::from([origin]));
                    }
                    None => {
                        open.remove(&fd);
                    }
                }
                reconciled.next();
            }
            for &fd in event.closed.iter() {
                // A close of an fd the model never saw open: it existed
                // before anything the model knows of.
                let origin = close(&mut open, fd).unwrap_or(Origin::BeforeAttach);
                if event.seq > since && !origin.is_after(since) {
                    closed_from_before.push(fd);
                }
            }
            if let Some(fd) = event.bad_close {
                close(&mut open, fd);
            }
            for &fd in event.created.iter() {
                open.entry(fd)
                    .or_default()
                    .push_back(Origin::Created(event.seq));
            }
        }
        closed_from_before.sort_unstable();
        closed_from_before
    }

    /// The events of `pid` since tracking of it began.
    fn events_of(&self, pid: Pid) -> impl Iterator<Item = &Event> {
        let start = self
            .processes
            .get(&pid)
            .map_or(usize::MAX, |state| state.info.start_seq as usize);
        self.events
            .get(start..)
            .unwrap_or_default()
            .iter()
            .filter(move |e| e.pid == pid)
    }

    /// The kind of each open fd of `pid`, counted (for `stats` and `inspect`).
    pub fn open_by_kind(&self, pid: Pid) -> BTreeMap<FdKind, usize> {
        let mut by_kind = BTreeMap::new();
        for open in self.open_fds(pid) {
            *by_kind.entry(open.kind).or_default() += 1;
        }
        by_kind
    }
}
