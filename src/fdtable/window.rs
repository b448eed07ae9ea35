//! The bounded window of recent events: what `history`, `step`, `bt` and
//! breakpoints read, while every other answer comes from the live tables
//! and per-site aggregates.
//!
//! Events are kept as fixed-size records, their argument texts and fd
//! lists in two arenas beside them. Events leave oldest first, so all
//! three only grow at the back and shrink at the front (`Fifo`): an
//! event's text and fds are freed with it, in chunks of 64 KiB that are
//! never copied (a buffer grown by doubling would, for a moment, need its
//! old and its new size). A record is 64 bytes; with its text an event
//! costs about a hundred.

use std::collections::VecDeque;

/// Bytes per chunk of a `Fifo`.
const CHUNK_BYTES: usize = 64 * 1024;

/// A queue of `T` in fixed-size chunks, indexed by absolute position
/// (everything ever pushed counts): pushed at the back, dropped from the
/// front, a chunk freed once nothing in it is live.
struct Fifo<T> {
    chunks: VecDeque<Vec<T>>,
    /// The last chunk freed, kept for the next one needed: a window that
    /// is full frees and needs one at the same pace, and memory the
    /// allocator gave back to the kernel would fault in again.
    spare: Option<Vec<T>>,
    /// The absolute position of `chunks[0][0]`.
    first: u64,
    /// The absolute positions of the first live item and past the last.
    front: u64,
    end: u64,
}

impl<T: Copy> Fifo<T> {
    const PER_CHUNK: usize = if size_of::<T>() == 0 {
        1
    } else {
        CHUNK_BYTES / size_of::<T>()
    };

    fn new() -> Self {
        Fifo {
            chunks: VecDeque::new(),
            spare: None,
            first: 0,
            front: 0,
            end: 0,
        }
    }

    fn len(&self) -> usize {
        (self.end - self.front) as usize
    }

    fn bytes(&self) -> usize {
        (self.chunks.len() + usize::from(self.spare.is_some())) * Self::PER_CHUNK * size_of::<T>()
    }

    fn push(&mut self, items: &[T]) {
        let mut items = items;
        while !items.is_empty() {
            let full = self
                .chunks
                .back()
                .is_none_or(|c| c.len() == Self::PER_CHUNK);
            if full {
                let chunk = self
                    .spare
                    .take()
                    .unwrap_or_else(|| Vec::with_capacity(Self::PER_CHUNK));
                self.chunks.push_back(chunk);
            }
            let Some(chunk) = self.chunks.back_mut() else {
                return;
            };
            let n = items.len().min(Self::PER_CHUNK - chunk.len());
            chunk.extend_from_slice(&items[..n]);
            items = &items[n..];
            self.end += n as u64;
        }
    }

    /// Drop the `n` oldest items.
    fn pop(&mut self, n: usize) {
        self.front = (self.front + n as u64).min(self.end);
        while self.chunks.len() > 1 && self.first + Self::PER_CHUNK as u64 <= self.front {
            if let Some(mut chunk) = self.chunks.pop_front() {
                chunk.clear();
                self.spare = Some(chunk);
            }
            self.first += Self::PER_CHUNK as u64;
        }
        if self.front == self.end
            && self.chunks.len() == 1
            && self.front.is_multiple_of(Self::PER_CHUNK as u64)
        {
            self.chunks.clear();
            self.first = self.front;
        }
    }

    fn get(&self, at: u64) -> Option<&T> {
        if at < self.front || at >= self.end {
            return None;
        }
        let i = (at - self.first) as usize;
        self.chunks
            .get(i / Self::PER_CHUNK)?
            .get(i % Self::PER_CHUNK)
    }

    /// `len` items from `at`, as far as they are live.
    fn range(&self, at: u64, len: usize) -> impl Iterator<Item = T> + '_ {
        (at..at.saturating_add(len as u64)).map_while(|p| self.get(p).copied())
    }
}

use super::{Event, FdKind, Nanos, Pid, Seq};
use crate::stacks::StackId;

/// Events kept when nothing else is asked for.
pub const DEFAULT_KEPT: usize = 1_000_000;

/// One event. Positions in the arenas are absolute (what was ever pushed
/// counts), modulo 2^32: an arena never holds 4 GiB.
#[derive(Clone, Copy)]
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

/// The event of seq `s` is record `s - 1`.
pub struct Window {
    records: Fifo<Record>,
    text: Fifo<u8>,
    fds: Fifo<i32>,
    kept: usize,
    /// Syscall names by the index a record holds.
    names: Vec<&'static str>,
}

impl Window {
    pub fn new(kept: usize) -> Window {
        Window {
            records: Fifo::new(),
            text: Fifo::new(),
            fds: Fifo::new(),
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
        self.records.end
    }

    /// The oldest seq still kept (`last_seq + 1` when none is).
    pub fn first_kept(&self) -> Seq {
        self.records.front + 1
    }

    /// Events pushed and no longer kept.
    pub fn forgotten(&self) -> u64 {
        self.records.front
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// What the kept events occupy, in bytes (records and arenas, by
    /// their capacity).
    pub fn bytes(&self) -> usize {
        self.records.bytes() + self.text.bytes() + self.fds.bytes()
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
        let text_at = self.text.end as u32;
        let fds_at = self.fds.end as u32;
        self.text.push(event.args.as_bytes());
        self.fds.push(event.created);
        self.fds.push(event.closed);
        if let Some(fd) = event.bad_close {
            self.fds.push(&[fd]);
        }
        self.records.push(&[Record {
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
        }]);
        self.last_seq()
    }

    fn pop(&mut self) {
        let Some(&record) = self.records.get(self.records.front) else {
            return;
        };
        let fds = record.created + record.closed + u32::from(record.bad_close);
        self.text.pop(record.text_len as usize);
        self.fds.pop(fds as usize);
        self.records.pop(1);
    }

    /// An absolute position in `fifo` from the low 32 bits a record keeps.
    fn absolute<T: Copy>(fifo: &Fifo<T>, at: u32) -> u64 {
        fifo.front + u64::from(at.wrapping_sub(fifo.front as u32))
    }

    /// The event `seq`, if it is still kept.
    pub fn get(&self, seq: Seq) -> Option<Event> {
        self.view(seq).map(|view| view.event())
    }

    /// A look at the kept event `seq` without copying it out.
    pub fn view(&self, seq: Seq) -> Option<View<'_>> {
        let record = self.records.get(seq.checked_sub(1)?)?;
        Some(View {
            window: self,
            record,
            seq,
        })
    }

    /// The kept events from `seq` on, in order.
    pub fn views_from(&self, seq: Seq) -> impl Iterator<Item = View<'_>> {
        (seq.max(self.first_kept())..=self.last_seq()).filter_map(|seq| self.view(seq))
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
        let fds = &self.window.fds;
        let start = Window::absolute(fds, self.record.fds_at) + u64::from(from);
        fds.range(start, len as usize)
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
        let text = &self.window.text;
        let start = Window::absolute(text, self.record.text_at);
        let bytes: Vec<u8> = text.range(start, self.record.text_len as usize).collect();
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
