//! The bounded window of recent events: what `history`, `step`, `bt` and
//! breakpoints read, while every other answer comes from the live tables
//! and per-site aggregates.
//!
//! Events are kept as fixed-size records in a ring, their argument texts
//! and fd lists in two arenas beside it. Events leave oldest first, so
//! the arenas only ever grow at the back and shrink at the front: an
//! event's text and fds are freed with it, and in the steady state
//! recording an event allocates nothing. A record is 64 bytes; with its
//! text an event costs about a hundred.

use std::collections::VecDeque;

use super::{Event, FdKind, Nanos, Pid, Seq};
use crate::stacks::StackId;

/// Events kept when nothing else is asked for.
pub const DEFAULT_KEPT: usize = 1_000_000;

/// One event in the ring. Positions in the arenas are absolute counts of
/// what was ever pushed, modulo 2^32 (an arena never holds 4 GiB).
struct Record {
    time: Nanos,
    result: i64,
    pid: Pid,
    tid: Pid,
    /// `StackId`, or `NO_STACK`.
    stack: u32,
    open_fds: u32,
    /// -1 for none.
    annotated: i32,
    text_at: u32,
    fds_at: u32,
    text_len: u32,
    created: u32,
    closed: u32,
    syscall: u8,
    kind: FdKind,
    /// One more fd follows the closed ones: the fd of a bad close.
    bad_close: bool,
}

const NO_STACK: u32 = u32::MAX;

/// What `Window::push` stores of one event.
pub struct NewEvent<'a> {
    pub time: Nanos,
    pub pid: Pid,
    pub tid: Pid,
    pub syscall: &'static str,
    pub result: i64,
    pub kind: FdKind,
    pub created: &'a [i32],
    pub closed: &'a [i32],
    pub bad_close: Option<i32>,
    pub stack: Option<StackId>,
    pub open_fds: u32,
    pub args: &'a str,
    pub annotated: Option<i32>,
}

pub struct Window {
    records: VecDeque<Record>,
    text: VecDeque<u8>,
    fds: VecDeque<i32>,
    /// Absolute positions of the arenas' fronts.
    text_base: u32,
    fds_base: u32,
    /// The seq of `records[0]` (of the next event, when empty).
    first_seq: Seq,
    kept: usize,
    /// Syscall names by the index a record holds.
    names: Vec<&'static str>,
}

impl Window {
    pub fn new(kept: usize) -> Window {
        Window {
            records: VecDeque::new(),
            text: VecDeque::new(),
            fds: VecDeque::new(),
            text_base: 0,
            fds_base: 0,
            first_seq: 1,
            kept: kept.max(1),
            names: Vec::new(),
        }
    }

    /// Keep at most `kept` events (at least one) from now on.
    pub fn set_kept(&mut self, kept: usize) {
        self.kept = kept.max(1);
        while self.records.len() > self.kept {
            self.pop();
        }
    }

    pub fn kept_at_most(&self) -> usize {
        self.kept
    }

    /// The seq of the latest event ever pushed; 0 before any.
    pub fn last_seq(&self) -> Seq {
        self.first_seq + self.records.len() as Seq - 1
    }

    /// The oldest seq still kept (`last_seq + 1` when none is).
    pub fn first_kept(&self) -> Seq {
        self.first_seq
    }

    /// Events pushed and no longer kept.
    pub fn forgotten(&self) -> u64 {
        self.first_seq - 1
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// What the kept events occupy, in bytes (records and arenas, by
    /// their capacity).
    pub fn bytes(&self) -> usize {
        self.records.capacity() * size_of::<Record>()
            + self.text.capacity()
            + self.fds.capacity() * size_of::<i32>()
    }

    /// Append one event; returns its seq. The oldest leaves when the
    /// window is full.
    pub fn push(&mut self, event: NewEvent<'_>) -> Seq {
        if self.records.len() >= self.kept {
            self.pop();
        }
        let syscall = match self.names.iter().position(|&n| n == event.syscall) {
            Some(i) => i,
            None => {
                self.names.push(event.syscall);
                self.names.len() - 1
            }
        };
        let text_at = self.text_base.wrapping_add(self.text.len() as u32);
        let fds_at = self.fds_base.wrapping_add(self.fds.len() as u32);
        self.text.extend(event.args.as_bytes());
        self.fds.extend(event.created);
        self.fds.extend(event.closed);
        if let Some(fd) = event.bad_close {
            self.fds.push_back(fd);
        }
        self.records.push_back(Record {
            time: event.time,
            result: event.result,
            pid: event.pid,
            tid: event.tid,
            stack: event.stack.map_or(NO_STACK, |s| s.0),
            open_fds: event.open_fds,
            annotated: event.annotated.unwrap_or(-1),
            text_at,
            fds_at,
            text_len: event.args.len() as u32,
            created: event.created.len() as u32,
            closed: event.closed.len() as u32,
            syscall: u8::try_from(syscall).unwrap_or(u8::MAX),
            kind: event.kind,
            bad_close: event.bad_close.is_some(),
        });
        self.last_seq()
    }

    fn pop(&mut self) {
        let Some(record) = self.records.pop_front() else {
            return;
        };
        let fds = record.created + record.closed + u32::from(record.bad_close);
        self.text.drain(..record.text_len as usize);
        self.fds.drain(..fds as usize);
        self.text_base = self.text_base.wrapping_add(record.text_len);
        self.fds_base = self.fds_base.wrapping_add(fds);
        self.first_seq += 1;
    }

    /// The event `seq`, if it is still kept.
    pub fn get(&self, seq: Seq) -> Option<Event> {
        self.view(seq).map(|view| view.event())
    }

    /// A look at the kept event `seq` without copying it out.
    pub fn view(&self, seq: Seq) -> Option<View<'_>> {
        let index = usize::try_from(seq.checked_sub(self.first_seq)?).ok()?;
        let record = self.records.get(index)?;
        Some(View {
            window: self,
            record,
            seq,
        })
    }

    /// The kept events from `seq` on, in order.
    pub fn views_from(&self, seq: Seq) -> impl Iterator<Item = View<'_>> {
        let skip = seq.saturating_sub(self.first_seq) as usize;
        let first = self.first_seq.max(seq);
        self.records
            .range(skip.min(self.records.len())..)
            .enumerate()
            .map(move |(i, record)| View {
                window: self,
                record,
                seq: first + i as Seq,
            })
    }
}

/// One kept event, read in place.
#[derive(Clone, Copy)]
pub struct View<'w> {
    window: &'w Window,
    record: &'w Record,
    pub seq: Seq,
}

impl<'w> View<'w> {
    pub fn pid(&self) -> Pid {
        self.record.pid
    }

    fn fd_range(&self, from: u32, len: u32) -> impl Iterator<Item = i32> + 'w {
        let start = self.record.fds_at.wrapping_sub(self.window.fds_base) as usize + from as usize;
        self.window.fds.range(start..start + len as usize).copied()
    }

    pub fn created(&self) -> impl Iterator<Item = i32> + 'w {
        self.fd_range(0, self.record.created)
    }

    pub fn closed(&self) -> impl Iterator<Item = i32> + 'w {
        self.fd_range(self.record.created, self.record.closed)
    }

    pub fn bad_close(&self) -> Option<i32> {
        if !self.record.bad_close {
            return None;
        }
        self.fd_range(self.record.created + self.record.closed, 1)
            .next()
    }

    pub fn annotated(&self) -> Option<i32> {
        (self.record.annotated >= 0).then_some(self.record.annotated)
    }

    /// Whether this event created, closed, bad-closed or annotated fd
    /// number `fd`: the events `history` lists.
    pub fn touches(&self, fd: i32) -> bool {
        self.created().any(|f| f == fd)
            || self.closed().any(|f| f == fd)
            || self.bad_close() == Some(fd)
            || self.annotated() == Some(fd)
    }

    fn args(&self) -> String {
        let start = self.record.text_at.wrapping_sub(self.window.text_base) as usize;
        let bytes: Vec<u8> = self
            .window
            .text
            .range(start..start + self.record.text_len as usize)
            .copied()
            .collect();
        // Pushed from a `str`, whole.
        String::from_utf8(bytes).unwrap_or_default()
    }

    /// The event copied out.
    pub fn event(&self) -> Event {
        let record = self.record;
        Event {
            seq: self.seq,
            time: record.time,
            pid: record.pid,
            tid: record.tid,
            syscall: self
                .window
                .names
                .get(usize::from(record.syscall))
                .copied()
                .unwrap_or("?"),
            result: record.result,
            kind: record.kind,
            created: self.created().collect(),
            closed: self.closed().collect(),
            bad_close: self.bad_close(),
            stack: (record.stack != NO_STACK).then_some(StackId(record.stack)),
            open_fds: record.open_fds,
            args: self.args().into_boxed_str(),
            annotated: self.annotated(),
        }
    }
}
