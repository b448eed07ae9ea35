//! The records of a perf ring buffer, decoded from bytes already copied out
//! of it: no pointers, no kernel, so every layout rule is unit-tested.
//!
//! A sampler's events all use PERF_SAMPLE_IDENTIFIER | TID | TIME | RAW |
//! REGS_USER, some with STACK_USER too, so a sample is laid out as
//! `u64 id; u32 pid, tid; u64 time; u32 raw_size; u8 raw[raw_size]` (padded
//! to 8 bytes), `u64 abi; u64 regs[n]` (no regs when abi is 0), and, for the
//! events that copy the stack, `u64 size; u8 data[size]; u64 dyn_size` (no
//! dyn_size when size is 0). The id comes first so that the event, and with
//! it whether a stack follows, is known before the rest is read.

use std::ops::Range;

use super::format::SyscallRecord;
use crate::arch::StackRegs;

pub const RECORD_LOST: u32 = 2;
pub const RECORD_THROTTLE: u32 = 5;
pub const RECORD_UNTHROTTLE: u32 = 6;
pub const RECORD_SAMPLE: u32 = 9;
pub const RECORD_LOST_SAMPLES: u32 = 13;

/// The length of `struct perf_event_header`.
pub const HEADER_LEN: usize = 8;

/// The bits of `sample_regs_user` (arch/x86/include/uapi/asm/perf_regs.h):
/// AX BX CX DX SI DI BP SP IP (0–8) and R8–R15 (16–23). The kernel writes
/// the registers in bit order.
pub const REGS_MASK: u64 = 0x1ff | 0xff << 16;
const REG_COUNT: usize = REGS_MASK.count_ones() as usize;

/// A thread's user registers at the sample, as saved at syscall entry
/// (`ax` holds the result at sys_exit; `orig_ax` is not among perf's
/// registers: the syscall number comes from the raw data).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UserRegs {
    pub ax: u64,
    pub bx: u64,
    pub cx: u64,
    pub dx: u64,
    pub si: u64,
    pub di: u64,
    pub bp: u64,
    pub sp: u64,
    pub ip: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
}

impl UserRegs {
    fn from_words(w: [u64; REG_COUNT]) -> UserRegs {
        UserRegs {
            ax: w[0],
            bx: w[1],
            cx: w[2],
            dx: w[3],
            si: w[4],
            di: w[5],
            bp: w[6],
            sp: w[7],
            ip: w[8],
            r8: w[9],
            r9: w[10],
            r10: w[11],
            r11: w[12],
            r12: w[13],
            r13: w[14],
            r14: w[15],
            r15: w[16],
        }
    }

    /// Where a stack walk over the sample's stack copy starts.
    pub fn stack_regs(&self) -> StackRegs {
        StackRegs {
            ip: self.ip,
            sp: self.sp,
            bp: self.bp,
        }
    }
}

/// One hit of a tracepoint in a watched thread, as its ring holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample<'a> {
    /// Index of the tracepoint in the list the sampler was opened with.
    pub tracepoint: usize,
    /// The CPU whose ring buffer held it.
    pub cpu: u32,
    pub pid: i32,
    pub tid: i32,
    /// CLOCK_MONOTONIC nanoseconds, taken when the tracepoint fired.
    pub time: u64,
    pub syscall: SyscallRecord,
    /// None when the kernel had no user registers (abi 0).
    pub regs: Option<UserRegs>,
    /// The bytes copied from the user stack, starting at `regs.sp`: only
    /// those the kernel could copy (dyn_size); empty for tracepoints that
    /// do not copy it. In the ring itself, where the record does not wrap
    /// around its end.
    pub stack: &'a [u8],
    /// For a sample without a stack copy: the walk the kernel found again
    /// (the BPF sampler's memo id; see `BpfSampler::add_memo`).
    pub memo: Option<u32>,
}

/// A sample's fields before its raw data is decoded.
#[derive(Debug, PartialEq, Eq)]
pub struct RawSample<'a> {
    pub id: u64,
    pub pid: i32,
    pub tid: i32,
    pub time: u64,
    pub raw: &'a [u8],
    pub regs: Option<UserRegs>,
    pub stack: &'a [u8],
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let bytes = self.bytes.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(bytes)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_ne_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_ne_bytes(self.take(8)?.try_into().ok()?))
    }

    fn align8(&mut self) {
        self.at = self.at.next_multiple_of(8);
    }
}

/// The sample in `body` (a PERF_RECORD_SAMPLE without its header).
/// `has_stack(id)`: whether the event with this sample id copies the user
/// stack, None for an id not of this sampler. None for a short record.
pub fn parse_sample(body: &[u8], has_stack: impl Fn(u64) -> Option<bool>) -> Option<RawSample<'_>> {
    let mut c = Cursor { bytes: body, at: 0 };
    let id = c.u64()?;
    let with_stack = has_stack(id)?;
    let pid = c.u32()? as i32;
    let tid = c.u32()? as i32;
    let time = c.u64()?;
    let raw_size = c.u32()? as usize;
    let raw = c.take(raw_size)?;
    c.align8();
    let abi = c.u64()?;
    let regs = if abi == 0 {
        None
    } else {
        let mut words = [0u64; REG_COUNT];
        for word in &mut words {
            *word = c.u64()?;
        }
        Some(UserRegs::from_words(words))
    };
    let stack = if with_stack {
        let size = c.u64()? as usize;
        let data = c.take(size)?;
        if size == 0 {
            &[][..]
        } else {
            let dyn_size = (c.u64()? as usize).min(size);
            &data[..dyn_size]
        }
    } else {
        &[][..]
    };
    Some(RawSample {
        id,
        pid,
        tid,
        time,
        raw,
        regs,
        stack,
    })
}

/// The samples PERF_RECORD_LOST (`u64 id; u64 lost`) or
/// PERF_RECORD_LOST_SAMPLES (`u64 lost`) says were dropped.
pub fn lost_count(kind: u32, body: &[u8]) -> Option<u64> {
    let mut c = Cursor { bytes: body, at: 0 };
    if kind == RECORD_LOST {
        c.u64()?;
    }
    c.u64()
}

/// The byte ranges of the data area (of `size` bytes, a power of two) that
/// hold `len` bytes starting at the free-running position `pos`: one range,
/// or two when the record wraps around the end of the area.
pub fn wrapped(size: usize, pos: u64, len: usize) -> (Range<usize>, Range<usize>) {
    let start = (pos & (size as u64 - 1)) as usize;
    let first = len.min(size - start);
    (start..start + first, 0..len - first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_bytes(id: u64, raw: &[u8], stack: Option<(&[u8], u64)>) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend(id.to_ne_bytes());
        b.extend(7u32.to_ne_bytes());
        b.extend(8u32.to_ne_bytes());
        b.extend(1234u64.to_ne_bytes());
        b.extend((raw.len() as u32).to_ne_bytes());
        b.extend(raw);
        while b.len() % 8 != 0 {
            b.push(0);
        }
        b.extend(2u64.to_ne_bytes());
        for reg in 0..REG_COUNT as u64 {
            b.extend((100 + reg).to_ne_bytes());
        }
        if let Some((data, dyn_size)) = stack {
            b.extend((data.len() as u64).to_ne_bytes());
            b.extend(data);
            if !data.is_empty() {
                b.extend(dyn_size.to_ne_bytes());
            }
        }
        b
    }

    #[test]
    fn a_sample_with_a_stack_keeps_only_the_bytes_copied() {
        let raw = [1u8; 28];
        let stack = [9u8; 16];
        let bytes = sample_bytes(5, &raw, Some((&stack, 12)));
        let s = parse_sample(&bytes, |id| (id == 5).then_some(true)).unwrap();
        assert_eq!((s.id, s.pid, s.tid, s.time), (5, 7, 8, 1234));
        assert_eq!(s.raw, &raw[..]);
        let regs = s.regs.unwrap();
        assert_eq!((regs.ax, regs.ip, regs.r8, regs.r15), (100, 108, 109, 116));
        assert_eq!(s.stack, &stack[..12]);
    }

    #[test]
    fn a_sample_without_a_stack_ends_after_its_registers() {
        let bytes = sample_bytes(6, &[2u8; 28], None);
        let s = parse_sample(&bytes, |_| Some(false)).unwrap();
        assert!(s.stack.is_empty());
        assert!(parse_sample(&bytes, |_| Some(true)).is_none(), "short");
        assert!(parse_sample(&bytes, |_| None).is_none(), "unknown id");
    }

    #[test]
    fn lost_records_give_their_count() {
        let body: Vec<u8> = [3u64, 41].iter().flat_map(|w| w.to_ne_bytes()).collect();
        assert_eq!(lost_count(RECORD_LOST, &body), Some(41));
        assert_eq!(lost_count(RECORD_LOST_SAMPLES, &body), Some(3));
    }

    #[test]
    fn a_record_across_the_end_is_read_in_two_ranges() {
        assert_eq!(wrapped(4096, 4096 * 3 + 8, 16), (8..24, 0..0));
        assert_eq!(wrapped(4096, 4096 * 3 + 4088, 24), (4088..4096, 0..16));
        assert_eq!(wrapped(4096, 4096, 8), (0..8, 0..0));
    }
}
