//! Asking the model: open fds, events, leaks, history and diff.

use std::collections::{BTreeMap, HashMap};

use super::{
    BadClose, Closer, Counters, Event, FdKind, LeakSite, Model, Nanos, OpenFd, Origin, Pid,
    Process, Seq, SiteTotals,
};
use crate::stacks::StackId;

/// A moment `diff` compares with: the seq and time of the latest event,
/// and per live process what it had open and how many fds it had created.
/// Bounded by the open fds, however long ago it was taken.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub seq: Seq,
    pub time: Nanos,
    processes: BTreeMap<Pid, MarkedProcess>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct MarkedProcess {
    created: u64,
    open: Vec<(i32, Origin)>,
}

/// `history`: the kept events on one fd number, and how many events
/// (of any fd) were recorded before the oldest kept one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    pub events: Vec<Event>,
    pub forgotten: u64,
}

/// What the model holds (`stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Memory {
    pub events_kept: u64,
    pub events_forgotten: u64,
    /// The window's records and arenas, in bytes.
    pub window_bytes: u64,
    pub keeps_at_most: u64,
    pub stacks: u64,
    pub sites: u64,
}

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

    /// The event `seq`, if the window still keeps it.
    pub fn event(&self, seq: Seq) -> Option<Event> {
        self.window.get(seq)
    }

    /// The kept events from `seq` on (all processes), in order.
    pub fn events_from(&self, seq: Seq) -> impl Iterator<Item = Event> + '_ {
        self.window.views_from(seq).map(|view| view.event())
    }

    /// The seq of the latest event; 0 before any.
    pub fn last_seq(&self) -> Seq {
        self.window.last_seq()
    }

    /// The oldest event still kept (`last_seq() + 1` when none is).
    pub fn first_kept(&self) -> Seq {
        self.window.first_kept()
    }

    /// Events recorded and no longer kept.
    pub fn events_forgotten(&self) -> u64 {
        self.window.forgotten()
    }

    /// What the model holds, for `stats`.
    pub fn memory(&self) -> Memory {
        Memory {
            events_kept: self.window.len() as u64,
            events_forgotten: self.window.forgotten(),
            window_bytes: self.window.bytes() as u64,
            keeps_at_most: self.window.kept_at_most() as u64,
            stacks: self.stacks.len() as u64,
            sites: self
                .processes
                .values()
                .map(|p| p.sites.values().filter(|s| s.totals.created > 0).count() as u64)
                .sum(),
        }
    }

    /// Counters over all processes (each `Process` has its own).
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The open-fd count of `pid` over its session: (time, largest count
    /// in the bucket starting then), oldest first, at most a few hundred.
    pub fn open_over_time(&self, pid: Pid) -> Vec<(Nanos, u32)> {
        self.processes
            .get(&pid)
            .map(|state| state.series.points().collect())
            .unwrap_or_default()
    }

    /// When tracking of `pid` began.
    pub fn tracked_since(&self, pid: Pid) -> Option<Nanos> {
        Some(self.processes.get(&pid)?.series.start())
    }

    /// The latest bad closes of `pid`, oldest first (every one is counted
    /// in its counters; `BAD_CLOSES_KEPT` are kept).
    /// Each with the close that freed its number before it.
    pub fn bad_closes(&self, pid: Pid) -> Vec<BadClose> {
        self.processes
            .get(&pid)
            .map(|state| state.bad_closes.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Who closed the fds of the site (`stack`, `syscall`) of `pid` (with
    /// the stacks of its site, see `same_site`), and how many each, most
    /// first.
    pub fn closers(
        &self,
        pid: Pid,
        stack: Option<StackId>,
        syscall: &'static str,
    ) -> Vec<(Closer, u64)> {
        let mut closers: Vec<(Closer, u64)> = Vec::new();
        if let Some(state) = self.processes.get(&pid) {
            let site = state.groups.site_of(stack);
            let stacks =
                std::iter::once(site).chain(state.groups.members(site).iter().map(|&s| Some(s)));
            for stack in stacks {
                let Some(known) = state.sites.get(&(stack, syscall)) else {
                    continue;
                };
                for &(closer, count) in &known.closers {
                    match closers.iter_mut().find(|(c, _)| *c == closer) {
                        Some((_, total)) => *total += count,
                        None => closers.push((closer, count)),
                    }
                }
            }
        }
        closers.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        closers
    }

    /// Every site of `pid` with its totals, whether it has fds open or not.
    pub fn site_totals(&self, pid: Pid) -> Vec<(Option<StackId>, &'static str, SiteTotals)> {
        let mut sites: Vec<_> = self
            .processes
            .get(&pid)
            .map(|state| {
                state
                    .sites
                    .iter()
                    .filter(|(_, site)| site.totals.created > 0)
                    .map(|(&(stack, syscall), site)| (stack, syscall, site.totals))
                    .collect()
            })
            .unwrap_or_default();
        sites.sort_by_key(|&(stack, syscall, totals)| (totals.first, stack, syscall));
        sites
    }

    /// A moment to compare with later (`diff`): what each live process
    /// has open, and how many fds it had created.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            seq: self.last_seq(),
            time: self.clock,
            processes: self
                .processes
                .iter()
                .filter(|(_, state)| state.info.end.is_none())
                .map(|(&pid, state)| {
                    let mut open: Vec<(i32, Origin)> = state
                        .table
                        .values()
                        .map(|open| (open.fd, open.origin))
                        .collect();
                    // A close under way at the moment: it was still open.
                    open.extend(state.closing.values().map(|c| (c.fd, c.origin)));
                    (
                        pid,
                        MarkedProcess {
                            created: state.created,
                            open,
                        },
                    )
                })
                .collect(),
        }
    }

    /// Fds of `pid` still open that came into being after event `since`
    /// (see `Origin::is_after`), grouped as `sites` groups them; groups of
    /// at least `min` fds.
    pub fn leaks(&self, pid: Pid, since: Seq, min: usize) -> Vec<LeakSite> {
        self.leaks_created_before(pid, since, Nanos::MAX, min)
    }

    /// `leaks`, of the fds created before the time `before` only.
    pub fn leaks_created_before(
        &self,
        pid: Pid,
        since: Seq,
        before: Nanos,
        min: usize,
    ) -> Vec<LeakSite> {
        let after = self
            .open_fds(pid)
            .into_iter()
            .filter(|open| open.origin.is_after(since) && open.created_at < before);
        // No fd open before tracing is after anything: the name is unused.
        let sites = self.sites(pid, after, BEFORE_ATTACH);
        sites.into_iter().filter(|site| site.count >= min).collect()
    }

    /// From now on, the fds of `pid` created by `stack` are of the site of
    /// `as_stack` (the same code, as the caller, who can name stacks,
    /// found): the site keeps the first stack's id, and counts the totals
    /// and closers of all.
    pub fn same_site(&mut self, pid: Pid, stack: StackId, as_stack: StackId) {
        if let Some(state) = self.processes.get_mut(&pid) {
            state.groups.join(stack, as_stack);
        }
    }

    /// `fds` grouped by (creating site, syscall), biggest group first, then
    /// oldest first. Fds adopted from /proc group under syscall
    /// "untracked"; fds open when tracing began under `initial` ("before
    /// attach", or "inherited" for a program fdbg started), with seq 0.
    /// Each site's fds keep the order of `fds`.
    pub fn sites<'a>(
        &self,
        pid: Pid,
        fds: impl IntoIterator<Item = &'a OpenFd>,
        initial: &'static str,
    ) -> Vec<LeakSite> {
        let mut groups: HashMap<(Option<StackId>, &'static str), LeakSite> = HashMap::new();
        let state = self.processes.get(&pid);
        let site_of = |stack: Option<StackId>| match state {
            Some(state) => state.groups.site_of(stack),
            None => stack,
        };
        // A site's totals are those of all its stacks.
        let totals = |site: Option<StackId>, syscall: &'static str| {
            let Some(state) = state else {
                return SiteTotals::default();
            };
            let members = state.groups.members(site).iter().map(|&s| Some(s));
            std::iter::once(site)
                .chain(members)
                .filter_map(|stack| Some(state.sites.get(&(stack, syscall))?.totals))
                .fold(SiteTotals::default(), SiteTotals::merged)
        };
        for open in fds {
            let (syscall, seq) = match open.origin {
                Origin::Created(seq) => (open.syscall, seq),
                Origin::Untracked(seq) => (UNTRACKED, seq),
                Origin::BeforeAttach => (initial, 0),
            };
            let stack = site_of(open.stack);
            let site = groups.entry((stack, syscall)).or_insert_with(|| LeakSite {
                count: 0,
                syscall,
                kind: open.kind,
                fds: Vec::new(),
                first_seq: seq,
                last_seq: seq,
                oldest: open.created_at,
                newest: open.created_at,
                stack,
                totals: totals(stack, syscall),
            });
            site.count += 1;
            site.fds.push(open.fd);
            if seq < site.first_seq {
                site.first_seq = seq;
                site.kind = open.kind;
            }
            site.last_seq = site.last_seq.max(seq);
            site.oldest = site.oldest.min(open.created_at);
            site.newest = site.newest.max(open.created_at);
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

    /// The kept events of `pid` that created, closed, bad-closed or
    /// annotated fd number `fd`, in order (fd numbers are reused: all of
    /// them), and how many older events of any fd are no longer kept.
    pub fn history(&self, pid: Pid, fd: i32) -> History {
        let start = self
            .processes
            .get(&pid)
            .map_or(Seq::MAX, |state| state.info.start_seq + 1);
        let events = self
            .window
            .views_from(start)
            .filter(|view| view.pid() == pid && view.touches(fd))
            .map(|view| view.event())
            .collect();
        // Only what came after tracking began counts as lost.
        let forgotten = self
            .window
            .first_kept()
            .saturating_sub(start.min(self.window.first_kept()));
        History { events, forgotten }
    }

    /// What changed in `pid` since `mark`; see `Diff`. Exact however old
    /// the mark: it compares the tables, not the events between.
    pub fn diff(&self, pid: Pid, mark: &Snapshot) -> Diff {
        let Some(state) = self.processes.get(&pid) else {
            return Diff::default();
        };
        let since = mark.seq;
        // A process that appeared after the mark: what it started with
        // from before the mark (a fork's copy of its parent's table).
        let (created_before, open_at_mark): (u64, Vec<(i32, Origin)>) =
            match mark.processes.get(&pid) {
                Some(marked) => (marked.created, marked.open.clone()),
                None => (
                    0,
                    state
                        .initial
                        .iter()
                        .copied()
                        .filter(|(_, origin)| !origin.is_after(since))
                        .collect(),
                ),
            };
        let created_since_open = state
            .table
            .values()
            .filter(|open| matches!(open.origin, Origin::Created(seq) if seq > since))
            .count() as u64;
        let opened_and_closed = state
            .created
            .saturating_sub(created_before)
            .saturating_sub(created_since_open) as usize;
        let mut closed_from_before: Vec<i32> = open_at_mark
            .into_iter()
            .filter(|&(fd, origin)| {
                state
                    .table
                    .get(&fd)
                    .is_none_or(|open| open.origin != origin)
            })
            .map(|(fd, _)| fd)
            .collect();
        closed_from_before.sort_unstable();
        closed_from_before.dedup();
        Diff {
            still_open: self.leaks(pid, since, 1),
            opened_and_closed,
            closed_from_before,
        }
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
