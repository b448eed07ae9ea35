//! Syscall samples in perf ring buffers: fd events observed without
//! stopping the process. The kernel writes each hit of a raw syscall
//! tracepoint in a watched thread as a sample (thread, time, user
//! registers, and optionally a copy of the user stack) into a buffer fdbg
//! maps, and fdbg decodes the samples later, at its own pace.
//!
//! What it must not do: stop, signal or otherwise touch the watched
//! process. There is no `sigtrap` here; the only cost to the process is the
//! kernel writing a sample at a filtered syscall (measured: a close(2)
//! costs about 0.35 µs more with a sample, 1.9 µs more with an 8 KiB stack
//! copy). When a ring is full the kernel drops samples and says how many
//! with PERF_RECORD_LOST; the kernel's own count of hits (read(2) on each
//! event, [`SyscallSampler::coverage`]) tells whether anything is missing.
//! The kernel writes the PERF_RECORD_LOST of a full ring only with the next
//! record that fits, so a loss not yet followed by another sample shows
//! only in the coverage (per ring: a record on another CPU's ring does not
//! carry it). A tracepoint with `sample_period` 1 is not
//! throttled by `kernel.perf_event_max_sample_rate` (the kernel asks to
//! throttle only from a second overflow in one hit); THROTTLE records are
//! counted all the same.
//!
//! Shape: events are opened per online CPU (`pid = tid, cpu = c`), because
//! an inherited event (new threads, and with `inherit_processes` new
//! processes, get a child event writing into the parent's buffer) can be
//! mmap'ed only when bound to a CPU. Each CPU has one ring (the first
//! event's mmap) and its other events are redirected into it with
//! PERF_EVENT_IOC_SET_OUTPUT. A sample's IDENTIFIER (PERF_EVENT_IOC_ID of
//! the parent event, also for inherited ones) names its tracepoint.
//!
//! Order: timestamps are CLOCK_MONOTONIC (`use_clockid`), comparable across
//! CPUs. One CPU's ring is in write order. Each sample is digested where
//! it lies in its ring (the caller's function: decode, unwind the stack
//! copy in place), so that only what the digest keeps is held, not the
//! copy. [`SyscallSampler::drain`] merges the digests of the rings by time
//! and holds back what is newer than the newest sample of the previous
//! drain, because a sample read from one CPU's ring may have an older one
//! still unseen on another ring (the thread migrated while fdbg was
//! between the two rings): a thread's sample is committed before the
//! thread returns to user space, so anything older than what a drain saw
//! is visible by the next drain. A sample that still arrives older than
//! one already returned is counted as `late`.
//! [`SyscallSampler::drain_all`] returns everything, for when no watched
//! thread can be inside a syscall (all stopped, or gone).

use rustc_hash::FxHashMap as HashMap;
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use perf_event_open_sys as sys;

use super::format::{SyscallLayout, parse_fields};
use super::record::{self, RawSample, Sample};
use super::{PerfError, tracepoint_id};

/// A tracepoint to sample: `group:name` (a raw syscall tracepoint), the
/// ftrace filter that chooses its hits, and how many bytes of the user
/// stack each sample copies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TracepointSpec {
    pub group: String,
    pub name: String,
    pub filter: String,
    /// 0: no copy; else a multiple of 8, at most 65528 minus the rest of
    /// the sample.
    pub stack_bytes: u32,
}

/// How a sampler is opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SamplerConfig {
    /// The threads watched; the threads they create later are watched too.
    pub tids: Vec<i32>,
    /// Child processes it creates later are watched too.
    pub inherit_processes: bool,
    /// Each CPU's ring has 2^n data pages.
    pub data_pages_log2: u32,
    /// poll(2) reports a ring readable once this many bytes are in it;
    /// None: a quarter of the ring.
    pub wakeup_bytes: Option<u32>,
}

/// What the drains have seen so far, over all rings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RingStats {
    /// Samples decoded (returned or held back).
    pub samples: u64,
    /// Bytes of records consumed.
    pub bytes: u64,
    /// Samples the kernel dropped for want of space (PERF_RECORD_LOST).
    pub lost: u64,
    /// Times the kernel throttled an event (PERF_RECORD_THROTTLE); samples
    /// are dropped, uncounted, until the matching unthrottle.
    pub throttles: u64,
    pub unthrottles: u64,
    /// Samples returned after a newer one had been returned.
    pub late: u64,
    /// Samples too short for their layout, or of an unknown sample id.
    pub malformed: u64,
    /// Records of other types.
    pub other: u64,
}

/// One tracepoint's hits as the kernel counted them and as decoded here.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Coverage {
    pub kernel: u64,
    pub sampled: u64,
}

struct Tracepoint {
    layout: SyscallLayout,
    copy_stack: bool,
}

struct Event {
    tracepoint: usize,
    fd: OwnedFd,
}

/// One CPU's mmap'ed ring: the control page, then `data_size` bytes.
struct Ring {
    cpu: u32,
    /// Index in `events` of the event whose mmap this is.
    event: usize,
    base: *mut u8,
    map_len: usize,
    data: *const u8,
    data_size: usize,
}

impl Ring {
    fn map(fd: &OwnedFd, cpu: u32, event: usize, pages: usize) -> Result<Ring, PerfError> {
        let page = page_size();
        let map_len = page * (1 + pages);
        // SAFETY: a shared read-write mapping of a perf event fd of the size
        // perf_event_mmap(2) requires (1 + 2^n pages); the kernel checks it.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(PerfError::Ring(io::Error::last_os_error()));
        }
        let base = base.cast::<u8>();
        let control = base.cast::<sys::bindings::perf_event_mmap_page>();
        // SAFETY: the first page is the kernel's perf_event_mmap_page;
        // data_offset and data_size are set at mmap and never change.
        let (offset, size) = unsafe {
            (
                std::ptr::addr_of!((*control).data_offset).read_volatile() as usize,
                std::ptr::addr_of!((*control).data_size).read_volatile() as usize,
            )
        };
        let (offset, size) = if size == 0 {
            (page, page * pages) // kernels before 4.1 leave them 0
        } else {
            (offset, size)
        };
        Ok(Ring {
            cpu,
            event,
            base,
            map_len,
            // SAFETY: `offset` is within the mapping (the kernel's layout).
            data: unsafe { base.add(offset) },
            data_size: size,
        })
    }

    fn head_and_tail(&self) -> (&AtomicU64, &AtomicU64) {
        let control = self.base.cast::<sys::bindings::perf_event_mmap_page>();
        // SAFETY: data_head and data_tail are aligned u64s in the control
        // page, which lives as long as `self`; the kernel writes data_head
        // and reads data_tail, so both are accessed atomically only.
        unsafe {
            (
                AtomicU64::from_ptr(std::ptr::addr_of_mut!((*control).data_head)),
                AtomicU64::from_ptr(std::ptr::addr_of_mut!((*control).data_tail)),
            )
        }
    }

    /// Copy `len` bytes at free-running position `pos` into `out`.
    /// The `len` bytes at `pos`, in place, where they do not wrap around
    /// the end of the data area.
    fn view(&self, pos: u64, len: usize) -> Option<&[u8]> {
        let (first, second) = record::wrapped(self.data_size, pos, len);
        if !second.is_empty() {
            return None;
        }
        // SAFETY: the range is within the data area, between data_tail and
        // data_head, which the kernel does not write until data_tail passes
        // it; the slice is dropped before data_tail is moved (the caller
        // reads it and stores the tail after).
        Some(unsafe { std::slice::from_raw_parts(self.data.add(first.start), first.len()) })
    }

    fn copy(&self, pos: u64, len: usize, out: &mut Vec<u8>) {
        let (first, second) = record::wrapped(self.data_size, pos, len);
        out.clear();
        out.reserve(len);
        for range in [first, second] {
            // SAFETY: the range is within the data area, between data_tail
            // and data_head, which the kernel does not write until data_tail
            // passes it; `out` has room for `len` bytes.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    self.data.add(range.start),
                    out.as_mut_ptr().add(out.len()),
                    range.len(),
                );
                out.set_len(out.len() + range.len());
            }
        }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: `base`/`map_len` are this ring's own mapping, unmapped once.
        unsafe {
            libc::munmap(self.base.cast(), self.map_len);
        }
    }
}

/// Raw syscall tracepoints sampled in one thread (and the threads it
/// creates) into one ring buffer per CPU. Dropping it closes every event,
/// which removes them, inherited ones included, from the process. `T` is
/// what the caller's digest keeps of a sample.
pub struct SyscallSampler<T> {
    tracepoints: Vec<Tracepoint>,
    events: Vec<Event>,
    rings: Vec<Ring>,
    /// Sample id → tracepoint index.
    ids: HashMap<u64, usize>,
    /// Digests not returned yet, with their sample's time.
    pending: Vec<(u64, T)>,
    /// The newest sample time of the previous drain.
    horizon: u64,
    /// The newest sample time returned.
    returned: u64,
    sampled: Vec<u64>,
    stats: RingStats,
    scratch: Vec<u8>,
}

/// While reading a ring, its tail is given back to the kernel every this
/// many records: digesting takes time, and the kernel may write into what
/// is already read meanwhile.
const TAIL_EVERY: usize = 64;

/// What a record read changes in its sampler.
struct Kept<'s, T> {
    stats: &'s mut RingStats,
    sampled: &'s mut [u64],
    pending: &'s mut Vec<(u64, T)>,
}

/// What decoding a sample needs of its sampler.
struct Decoder<'s> {
    ids: &'s HashMap<u64, usize>,
    tracepoints: &'s [Tracepoint],
}

impl Decoder<'_> {
    fn decode<'a>(&self, cpu: u32, body: &'a [u8]) -> Option<Sample<'a>> {
        let lookup = |id| {
            let index = *self.ids.get(&id)?;
            Some(self.tracepoints[index].copy_stack)
        };
        let RawSample {
            id,
            pid,
            tid,
            time,
            raw,
            regs,
            stack,
        } = record::parse_sample(body, lookup)?;
        let tracepoint = *self.ids.get(&id)?;
        let syscall = self.tracepoints[tracepoint].layout.decode(raw)?;
        Some(Sample {
            tracepoint,
            cpu,
            pid,
            tid,
            time,
            syscall,
            regs,
            stack,
            memo: None,
        })
    }
}

// SAFETY: the rings' pointers are to mappings the sampler owns; nothing
// else refers to them, so the sampler may move to another thread.
unsafe impl<T: Send> Send for SyscallSampler<T> {}

impl<T> SyscallSampler<T> {
    /// Open, map and enable the events: samples start with the next hit.
    /// Ask [`super::raw_samples_permitted`] first for the reason that
    /// matters to an unprivileged user.
    pub fn open(
        tracefs: &Path,
        config: &SamplerConfig,
        tracepoints: &[TracepointSpec],
    ) -> Result<SyscallSampler<T>, PerfError> {
        let mut ids_and_layouts = Vec::new();
        for spec in tracepoints {
            let id = tracepoint_id(tracefs, &spec.group, &spec.name)?;
            let path = tracefs
                .join("events")
                .join(&spec.group)
                .join(&spec.name)
                .join("format");
            let text = fs::read_to_string(&path).map_err(|_| PerfError::NoTracefs)?;
            let layout = SyscallLayout::from_fields(&parse_fields(&text))
                .ok_or_else(|| PerfError::Format(format!("{}:{}", spec.group, spec.name)))?;
            ids_and_layouts.push((id, layout));
        }
        let pages = 1usize << config.data_pages_log2;
        let data_size = page_size() * pages;
        let wakeup = config.wakeup_bytes.unwrap_or((data_size / 4) as u32);
        let mut sampler = SyscallSampler {
            tracepoints: Vec::new(),
            events: Vec::new(),
            rings: Vec::new(),
            ids: HashMap::default(),
            pending: Vec::new(),
            horizon: 0,
            returned: 0,
            sampled: vec![0; tracepoints.len()],
            stats: RingStats::default(),
            scratch: Vec::new(),
        };
        let mut opens = Vec::new();
        for cpu in online_cpus()? {
            for &tid in &config.tids {
                opens.extend((0..tracepoints.len()).map(|index| (cpu, tid, index)));
            }
        }
        for (cpu, tid, index) in opens {
            let (spec, (id, _)) = (&tracepoints[index], &ids_and_layouts[index]);
            {
                let attr = sample_attr(*id, spec.stack_bytes, config, wakeup);
                let fd = super::open_event(attr, tid, cpu as i32).map_err(|err| {
                    if super::refused(&err) {
                        PerfError::RawRefused {
                            paranoid: super::paranoid(),
                        }
                    } else {
                        PerfError::Open { tid, source: err }
                    }
                })?;
                super::set_filter(&fd, &spec.filter)?;
                let mut sample_id = 0u64;
                // SAFETY: the fd is a perf event; ID writes one u64 to the
                // pointer, which is valid for the call.
                if unsafe { sys::ioctls::ID(fd.as_raw_fd(), &mut sample_id) } != 0 {
                    return Err(PerfError::Ring(io::Error::last_os_error()));
                }
                sampler.ids.insert(sample_id, index);
                match sampler.rings.iter().find(|r| r.cpu == cpu) {
                    Some(ring) => {
                        let target = sampler.events[ring.event].fd.as_raw_fd();
                        // SAFETY: both fds are perf events on the same CPU;
                        // SET_OUTPUT takes the target fd as an integer.
                        if unsafe { sys::ioctls::SET_OUTPUT(fd.as_raw_fd(), target) } != 0 {
                            return Err(PerfError::Ring(io::Error::last_os_error()));
                        }
                    }
                    None => {
                        let ring = Ring::map(&fd, cpu, sampler.events.len(), pages)?;
                        sampler.rings.push(ring);
                    }
                }
                sampler.events.push(Event {
                    tracepoint: index,
                    fd,
                });
            }
        }
        for (spec, (_, layout)) in tracepoints.iter().zip(ids_and_layouts) {
            sampler.tracepoints.push(Tracepoint {
                layout,
                copy_stack: spec.stack_bytes > 0,
            });
        }
        sampler.set_enabled(true)?;
        Ok(sampler)
    }

    /// Start or stop sampling, in the watched threads and every thread
    /// that inherited the events.
    pub fn set_enabled(&self, enabled: bool) -> Result<(), PerfError> {
        for event in &self.events {
            let fd = event.fd.as_raw_fd();
            // SAFETY: the fd is a perf event; ENABLE and DISABLE take no
            // pointer.
            let done = unsafe {
                if enabled {
                    sys::ioctls::ENABLE(fd, 0)
                } else {
                    sys::ioctls::DISABLE(fd, 0)
                }
            };
            if done != 0 {
                return Err(PerfError::Ring(io::Error::last_os_error()));
            }
        }
        Ok(())
    }

    /// One fd per CPU ring, readable (POLLIN) once `wakeup_bytes` are in it
    /// and hung up (POLLHUP) when the watched threads are all gone.
    pub fn poll_fds(&self) -> Vec<BorrowedFd<'_>> {
        self.rings
            .iter()
            .map(|ring| self.events[ring.event].fd.as_fd())
            .collect()
    }

    /// The digests of every ring's samples, in time order, up to the
    /// newest sample of the previous drain; newer ones wait for the next
    /// drain (see the module doc). `digest` sees each sample once, in its
    /// ring; a sample it keeps nothing of (None) is counted all the same.
    pub fn drain(&mut self, digest: &mut impl FnMut(&Sample<'_>) -> Option<T>) -> Vec<T> {
        let newest = self.read_rings(digest);
        let released = self.release(self.horizon);
        self.horizon = self.horizon.max(newest);
        released
    }

    /// Every sample's digest, in the rings and held back, in time order:
    /// for when no watched thread can be inside a syscall (all stopped, or
    /// exited).
    pub fn drain_all(&mut self, digest: &mut impl FnMut(&Sample<'_>) -> Option<T>) -> Vec<T> {
        let newest = self.read_rings(digest);
        self.horizon = self.horizon.max(newest);
        self.release(u64::MAX)
    }

    pub fn stats(&self) -> RingStats {
        self.stats
    }

    /// Per tracepoint: the kernel's count of hits (in the thread and every
    /// thread that inherited the events) and the samples decoded. Equal
    /// when nothing was lost or throttled.
    pub fn coverage(&self) -> Vec<Coverage> {
        let mut coverage: Vec<Coverage> = self
            .sampled
            .iter()
            .map(|&sampled| Coverage { kernel: 0, sampled })
            .collect();
        for event in &self.events {
            let mut value = [0u8; 8];
            if let Ok(8) = nix::unistd::read(&event.fd, &mut value) {
                coverage[event.tracepoint].kernel += u64::from_ne_bytes(value);
            }
        }
        coverage
    }

    /// Digest every record of every ring from data_tail to data_head into
    /// `pending`; the newest sample time read.
    fn read_rings(&mut self, digest: &mut impl FnMut(&Sample<'_>) -> Option<T>) -> u64 {
        let mut newest = 0;
        for r in 0..self.rings.len() {
            let ring = &self.rings[r];
            let (head, tail_cell) = ring.head_and_tail();
            let head = head.load(Ordering::Acquire);
            let mut tail = tail_cell.load(Ordering::Relaxed);
            let cpu = ring.cpu;
            let mut scratch = std::mem::take(&mut self.scratch);
            let mut records = 0;
            while tail < head {
                self.rings[r].copy(tail, record::HEADER_LEN, &mut scratch);
                let kind = u32::from_ne_bytes(scratch[0..4].try_into().unwrap());
                let size = u16::from_ne_bytes(scratch[6..8].try_into().unwrap()) as usize;
                if size < record::HEADER_LEN || tail + size as u64 > head {
                    // Not a record boundary: skip what is there.
                    self.stats.malformed += 1;
                    tail = head;
                    break;
                }
                self.stats.bytes += size as u64;
                // In place unless the record wraps around the ring's end.
                let body = match self.rings[r].view(tail, size) {
                    Some(bytes) => bytes,
                    None => {
                        self.rings[r].copy(tail, size, &mut scratch);
                        &scratch[..]
                    }
                };
                let time = Self::record(
                    Kept {
                        stats: &mut self.stats,
                        sampled: &mut self.sampled,
                        pending: &mut self.pending,
                    },
                    &Decoder {
                        ids: &self.ids,
                        tracepoints: &self.tracepoints,
                    },
                    cpu,
                    kind,
                    &body[record::HEADER_LEN..],
                    digest,
                );
                tail += size as u64;
                if let Some(time) = time {
                    newest = newest.max(time);
                }
                records += 1;
                if records % TAIL_EVERY == 0 {
                    self.rings[r]
                        .head_and_tail()
                        .1
                        .store(tail, Ordering::Release);
                }
            }
            self.scratch = scratch;
            self.rings[r]
                .head_and_tail()
                .1
                .store(tail, Ordering::Release);
        }
        newest
    }

    /// Count or digest one record; a sample's time. (Takes the sampler's
    /// parts: the record may be a view into one of its rings.)
    fn record(
        kept: Kept<'_, T>,
        decoder: &Decoder<'_>,
        cpu: u32,
        kind: u32,
        body: &[u8],
        digest: &mut impl FnMut(&Sample<'_>) -> Option<T>,
    ) -> Option<u64> {
        let stats = kept.stats;
        match kind {
            record::RECORD_SAMPLE => {
                let Some(sample) = decoder.decode(cpu, body) else {
                    stats.malformed += 1;
                    return None;
                };
                stats.samples += 1;
                kept.sampled[sample.tracepoint] += 1;
                if let Some(digested) = digest(&sample) {
                    kept.pending.push((sample.time, digested));
                }
                Some(sample.time)
            }
            record::RECORD_LOST | record::RECORD_LOST_SAMPLES => {
                stats.lost += record::lost_count(kind, body).unwrap_or(0);
                None
            }
            record::RECORD_THROTTLE => {
                stats.throttles += 1;
                None
            }
            record::RECORD_UNTHROTTLE => {
                stats.unthrottles += 1;
                None
            }
            _ => {
                stats.other += 1;
                None
            }
        }
    }

    /// The pending digests up to time `upto`, in time order.
    fn release(&mut self, upto: u64) -> Vec<T> {
        // Stable: samples of one time keep their ring order.
        self.pending.sort_by_key(|(time, _)| *time);
        let n = self.pending.partition_point(|(time, _)| *time <= upto);
        let returned = self.returned;
        self.stats.late += self.pending[..n]
            .iter()
            .filter(|(time, _)| *time < returned)
            .count() as u64;
        if let Some((last, _)) = self.pending[..n].last() {
            self.returned = self.returned.max(*last);
        }
        self.pending.drain(..n).map(|(_, kept)| kept).collect()
    }
}

/// A tracepoint event sampling every hit into a ring, disabled.
fn sample_attr(
    id: u64,
    stack_bytes: u32,
    config: &SamplerConfig,
    wakeup_bytes: u32,
) -> sys::bindings::perf_event_attr {
    use sys::bindings as b;
    let mut attr = super::tracepoint_attr(id);
    attr.sample_type = (b::PERF_SAMPLE_IDENTIFIER
        | b::PERF_SAMPLE_TID
        | b::PERF_SAMPLE_TIME
        | b::PERF_SAMPLE_RAW
        | b::PERF_SAMPLE_REGS_USER) as u64;
    attr.sample_regs_user = record::REGS_MASK;
    attr.clockid = libc::CLOCK_MONOTONIC;
    if stack_bytes > 0 {
        attr.sample_type |= b::PERF_SAMPLE_STACK_USER as u64;
        attr.sample_stack_user = stack_bytes;
    }
    attr.__bindgen_anon_2.wakeup_watermark = wakeup_bytes;
    attr.set_watermark(1);
    attr.set_use_clockid(1);
    attr.set_disabled(1);
    attr.set_inherit(1);
    attr.set_inherit_thread(u64::from(!config.inherit_processes));
    attr
}

pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf reads a constant of the system.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 { size as usize } else { 4096 }
}

/// The online CPUs, from /sys/devices/system/cpu/online (`0-3,6`).
fn online_cpus() -> Result<Vec<u32>, PerfError> {
    let text = fs::read_to_string("/sys/devices/system/cpu/online").map_err(PerfError::Ring)?;
    parse_cpu_list(&text).ok_or_else(|| {
        PerfError::Ring(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("cannot read the online CPU list {:?}", text.trim()),
        ))
    })
}

fn parse_cpu_list(text: &str) -> Option<Vec<u32>> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => cpus.extend(a.parse::<u32>().ok()?..=b.parse().ok()?),
            None => cpus.push(part.parse().ok()?),
        }
    }
    Some(cpus)
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn cpu_lists_are_ranges_and_singles() {
        assert_eq!(parse_cpu_list("0-1\n"), Some(vec![0, 1]));
        assert_eq!(parse_cpu_list("0,2-4,7"), Some(vec![0, 2, 3, 4, 7]));
        assert_eq!(parse_cpu_list("x"), None);
    }
}
