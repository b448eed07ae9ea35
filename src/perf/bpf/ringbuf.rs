//! The consumer side of a BPF ring buffer (BPF_MAP_TYPE_RINGBUF): one ring
//! for all CPUs, records in the order they were reserved, read in place.
//!
//! Layout (kernel/bpf/ringbuf.c): a consumer page fdbg writes (its
//! position), then a producer page the kernel writes (its position) and the
//! data area, mapped twice in a row so that a record that wraps is
//! contiguous. Each record has an 8-byte header: its length, with a busy bit
//! while the producer fills it and a discard bit for one it dropped.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

const BUSY: u32 = 1 << 31;
const DISCARD: u32 = 1 << 30;
const HEADER: usize = 8;

pub struct RingBuf {
    consumer: *mut u8,
    producer: *mut u8,
    data: *const u8,
    size: usize,
    page: usize,
}

// SAFETY: the mappings belong to the RingBuf alone; the kernel's side is
// reached only through atomics.
unsafe impl Send for RingBuf {}

impl RingBuf {
    /// Map ring `fd` of `size` data bytes (a power of two pages).
    pub fn map(fd: BorrowedFd<'_>, size: usize) -> io::Result<RingBuf> {
        let page = crate::perf::ring::page_size();
        // SAFETY: the consumer page of a ringbuf map: one shared RW page at
        // offset 0, as the kernel lays it out.
        let consumer = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if consumer == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the producer page and the data area twice, read-only, at
        // offset one page: the kernel's layout for a ringbuf map.
        let producer = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                page + 2 * size,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                page as libc::off_t,
            )
        };
        if producer == libc::MAP_FAILED {
            let err = io::Error::last_os_error();
            // SAFETY: the consumer page mapped above, unused elsewhere.
            unsafe { libc::munmap(consumer, page) };
            return Err(err);
        }
        let producer = producer.cast::<u8>();
        Ok(RingBuf {
            consumer: consumer.cast(),
            producer,
            // SAFETY: the data area starts one page into the mapping.
            data: unsafe { producer.add(page) },
            size,
            page,
        })
    }

    fn positions(&self) -> (&AtomicU64, &AtomicU64) {
        // SAFETY: both positions are aligned u64s at the start of their
        // pages, which live as long as `self`; the kernel writes the
        // producer's and reads the consumer's.
        unsafe {
            (
                AtomicU64::from_ptr(self.consumer.cast()),
                AtomicU64::from_ptr(self.producer.cast()),
            )
        }
    }

    /// Bytes written and not yet consumed.
    pub fn pending(&self) -> u64 {
        let (consumer, producer) = self.positions();
        producer
            .load(Ordering::Acquire)
            .saturating_sub(consumer.load(Ordering::Relaxed))
    }

    /// Hand each complete record to `each`, in order, up to the first
    /// still being written; the space is given back to the kernel as the
    /// records are consumed, an eighth of the ring at a time (the
    /// consumer's position shares a cache line the program reads at every
    /// record: written at each, it would move between the CPUs at each).
    /// Returns how many.
    pub fn consume(&mut self, mut each: impl FnMut(&[u8])) -> usize {
        let (consumer, producer) = self.positions();
        let mut pos = consumer.load(Ordering::Relaxed);
        let mut given_back = pos;
        let end = producer.load(Ordering::Acquire);
        let mask = self.size as u64 - 1;
        let step = (self.size / 8) as u64;
        let mut count = 0;
        while pos < end {
            let at = (pos & mask) as usize;
            // SAFETY: `at` is within the data area, and the header is
            // aligned; the kernel publishes the length last, with release.
            let len = unsafe { AtomicU32::from_ptr(self.data.add(at) as *mut u32) }
                .load(Ordering::Acquire);
            if len & BUSY != 0 {
                break;
            }
            let body = (len & !(BUSY | DISCARD)) as usize;
            let next = pos + ((HEADER + body + 7) & !7) as u64;
            if len & DISCARD == 0 {
                count += 1;
                // SAFETY: the record lies within the double mapping (at most
                // `size` bytes from `at`), complete (not busy).
                let record =
                    unsafe { std::slice::from_raw_parts(self.data.add(at + HEADER), body) };
                each(record);
            }
            pos = next;
            if pos - given_back >= step {
                consumer.store(pos, Ordering::Release);
                given_back = pos;
            }
        }
        if pos != given_back {
            consumer.store(pos, Ordering::Release);
        }
        count
    }
}

impl Drop for RingBuf {
    fn drop(&mut self) {
        // SAFETY: the two mappings made in `map`, of those lengths.
        unsafe {
            libc::munmap(self.consumer.cast(), self.page);
            libc::munmap(self.producer.cast(), self.page + 2 * self.size);
        }
    }
}
