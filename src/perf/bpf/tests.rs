//! The BPF sampler against the real kernel: this test process is the
//! target; a thread created after the program is attached makes a known
//! sequence of fd syscalls, and its records must be exactly those, in
//! order, with the results it saw, its registers and a stack copy; a child
//! process, not a target, leaves no record. Skipped, saying why, where BPF
//! is refused.

use std::io;
use std::process::Command;

use super::*;

fn errno_or(ret: i64) -> i64 {
    if ret < 0 {
        -(io::Error::last_os_error().raw_os_error().unwrap() as i64)
    } else {
        ret
    }
}

/// The tests' whole copy: longer than the short one that goes with a
/// remembered walk.
const STACK_BYTES: u32 = 2048;

fn config_at(at_sys_exit: bool) -> BpfConfig {
    BpfConfig {
        syscalls: vec![
            (libc::SYS_openat as u64, "openat"),
            (libc::SYS_close as u64, "close"),
            (libc::SYS_dup as u64, "dup"),
        ],
        at_sys_exit,
        whole_copy: Vec::new(),
        stack_bytes: STACK_BYTES,
        ring_bytes: 1 << 20,
        wakeup_bytes: 1 << 18,
    }
}

fn open_or_skip() -> Option<BpfSampler> {
    open_at_or_skip(false)
}

/// The sampler, at the syscalls' own tracepoints (which tracefs, where
/// it can be mounted, always has) or at sys_exit.
fn open_at_or_skip(at_sys_exit: bool) -> Option<BpfSampler> {
    match BpfSampler::open(&config_at(at_sys_exit)) {
        Ok(s) => {
            if at_sys_exit {
                assert!(matches!(s.hook(), Hook::SysExit { .. }), "{}", s.hook());
            } else if crate::perf::tracefs().is_ok() {
                assert_eq!(s.hook(), &Hook::SyscallTracepoints, "{}", s.hook());
            }
            Some(s)
        }
        Err(BpfError::Refused(e)) => {
            eprintln!("skipped: BPF refused here ({e})");
            None
        }
        Err(e) => panic!("BPF sampler: {e}"),
    }
}

/// The sampler with this test process as its target, and its pid.
fn sampling_this_process() -> Option<(BpfSampler, i32)> {
    let mut sampler = open_or_skip()?;
    let me = std::process::id() as i32;
    sampler.add_target(me).unwrap();
    Some((sampler, me))
}

#[test]
fn a_new_thread_of_a_target_is_recorded_exactly_on_every_cpu() {
    for at_sys_exit in [false, true] {
        let Some(sampler) = open_at_or_skip(at_sys_exit) else {
            return;
        };
        new_thread_recorded_exactly(sampler);
    }
}

/// A thread created after the sampler is attached makes a known sequence
/// of fd syscalls on each CPU in turn: its records are exactly those, with
/// its registers (openat's path pointer, the result in ax) and a copy of
/// its stack.
fn new_thread_recorded_exactly(mut sampler: BpfSampler) {
    sampler.add_target(std::process::id() as i32).unwrap();
    let me = std::process::id() as i32;
    let path = c"/dev/null";
    // Asked here: the answer reads cgroup files.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut got = Vec::new();
    let mut others = Vec::new();
    let want = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let tid = nix::unistd::gettid().as_raw();
                // Words in this frame that stay as they are: the copies
                // must hold them where they lie.
                let marker: [u64; 4] = std::hint::black_box([0x6664_6267_0000_0000, 1, 2, 3]);
                let marker_at = std::hint::black_box(&marker) as *const [u64; 4] as u64;
                let mut want = Vec::new();
                for cpu in 0..cpus {
                    let mut set = nix::sched::CpuSet::new();
                    set.set(cpu).unwrap();
                    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).unwrap();
                    // SAFETY: plain fd syscalls on fds this thread owns (or
                    // none: EBADF).
                    unsafe {
                        let fd = errno_or(libc::open(path.as_ptr(), libc::O_RDONLY) as i64);
                        want.push((libc::SYS_openat, fd, cpu));
                        let copy = errno_or(libc::dup(fd as i32) as i64);
                        want.push((libc::SYS_dup, copy, cpu));
                        let closed = errno_or(libc::close(copy as i32) as i64);
                        want.push((libc::SYS_close, closed, cpu));
                        let closed = errno_or(libc::close(fd as i32) as i64);
                        want.push((libc::SYS_close, closed, cpu));
                        want.push((libc::SYS_close, errno_or(libc::close(-1) as i64), cpu));
                        libc::getppid();
                    }
                }
                // Another process: not a target.
                let child = Command::new("cat").arg("/dev/null").status().unwrap();
                assert!(child.success());
                sampler.drain(|s| {
                    let SyscallRecord::Exit { nr, ret } = s.syscall else {
                        panic!("an exit record")
                    };
                    if s.tid == tid {
                        let regs = s.regs.expect("registers");
                        assert_eq!(s.pid, me);
                        assert_eq!(regs.ax as i64, ret, "ax holds the result");
                        if nr == libc::SYS_openat {
                            assert_eq!(regs.si, path.as_ptr() as u64, "openat's path");
                        }
                        assert_eq!(s.stack.len(), STACK_BYTES as usize, "a whole copy");
                        let off = marker_at.checked_sub(regs.sp).expect("marker above sp") as usize;
                        let words: Vec<u64> = s.stack[off..off + 32]
                            .chunks_exact(8)
                            .map(|w| u64::from_ne_bytes(w.try_into().unwrap()))
                            .collect();
                        assert_eq!(words, marker, "the copy at sp+{off}");
                        got.push((nr, ret, s.cpu as usize));
                    } else if s.pid != me {
                        others.push(s.pid);
                    }
                });
                want
            })
            .join()
            .unwrap()
    });
    assert_eq!(got, want, "{}", sampler.hook());
    assert!(others.is_empty(), "records of other processes: {others:?}");
    let (hits, lost) = sampler.counts();
    assert!(hits >= want.len() as u64, "hits {hits}");
    assert_eq!(lost, 0);
}

#[test]
fn a_removed_target_is_no_longer_recorded() {
    let Some((mut sampler, me)) = sampling_this_process() else {
        return;
    };
    sampler.remove_target(me).unwrap();
    assert!(!recorded(&mut sampler));
}

/// Whether a close(-1) of a new thread of this process is recorded.
fn recorded(sampler: &mut BpfSampler) -> bool {
    let tid = std::thread::spawn(|| {
        // SAFETY: EBADF, nothing closed.
        unsafe { libc::close(-1) };
        nix::unistd::gettid().as_raw()
    })
    .join()
    .unwrap();
    let mut seen = 0;
    sampler.drain(|s| seen += usize::from(s.tid == tid));
    seen == 1
}

#[test]
fn targets_that_share_a_slot_are_told_apart_by_the_hash() {
    let Some((mut sampler, me)) = sampling_this_process() else {
        return;
    };
    // A tgid in this process's slot (no process needs to have it).
    let other = me + TARGET_SLOTS as i32;
    assert!(recorded(&mut sampler), "alone in its slot");
    sampler.add_target(other).unwrap();
    assert!(recorded(&mut sampler), "sharing its slot");
    sampler.remove_target(other).unwrap();
    assert!(recorded(&mut sampler), "alone again");
    sampler.add_target(other).unwrap();
    sampler.remove_target(me).unwrap();
    assert!(
        !recorded(&mut sampler),
        "removed, another target in its slot"
    );
    sampler.remove_target(other).unwrap();
    sampler.add_target(me).unwrap();
    sampler.remove_target(me).unwrap();
    assert!(!recorded(&mut sampler), "removed, alone in its slot");
}

/// close(-1) from one place: the same ip and sp each time.
#[inline(never)]
fn close_here() {
    // SAFETY: EBADF, nothing closed.
    unsafe { libc::close(-1) };
}

#[test]
fn the_ring_wakes_fdbg_once_when_it_fills_past_the_threshold_not_at_every_record() {
    let Some((mut sampler, _)) = sampling_this_process() else {
        return;
    };
    // Whole copies (no memo): 2,048 bytes of stack and the header each, so
    // the threshold is passed after ~115 of them and the ring holds ~450.
    let record = 8 + REC_STACK as usize + STACK_BYTES as usize;
    let config = config_at(false);
    let records = (config.ring_bytes - (64 << 10)) / record;
    let mut events = [EpollEvent::empty()];
    let mut woken_after = Vec::new();
    for i in 0..records {
        close_here();
        // The wakeup is an interrupt the program raised on this CPU: taken
        // before close returned.
        if sampler.woken.wait(&mut events, EpollTimeout::ZERO).unwrap() > 0 {
            woken_after.push(i + 1);
        }
    }
    let mut mine = 0;
    let tid = nix::unistd::gettid().as_raw();
    sampler.drain(|s| mine += usize::from(s.tid == tid));
    assert_eq!(mine, records);
    let crossing = config.wakeup_bytes as usize / record;
    match woken_after.as_slice() {
        [at] => assert!(
            (crossing.saturating_sub(2)..=crossing + 1).contains(at),
            "woken after {at} records, the threshold is passed at ~{crossing}"
        ),
        other => panic!(
            "one wakeup expected, when the bytes waiting passed {}; woken after records {other:?}",
            config.wakeup_bytes
        ),
    }
}

#[test]
fn a_memo_found_again_replaces_the_stack_copy_and_a_changed_word_brings_it_back() {
    let Some((mut sampler, me)) = sampling_this_process() else {
        return;
    };
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let tid = nix::unistd::gettid().as_raw();
                // Read before the samples: reading it opens a file.
                let code = code_ranges();
                sampler.drain(|_| {});
                let take = |sampler: &mut BpfSampler| {
                    close_here();
                    let mut mine = Vec::new();
                    sampler.drain(|s| {
                        if s.tid == tid {
                            let regs = s.regs.unwrap();
                            mine.push((regs.ip, regs.sp, s.stack.to_vec(), s.memo));
                        }
                    });
                    assert_eq!(mine.len(), 1, "one close");
                    mine.pop().unwrap()
                };
                let (ip, sp, first, _) = take(&mut sampler);
                let (ip2, sp2, second, memo) = take(&mut sampler);
                assert_eq!((ip2, sp2, memo), (ip, sp, None));
                let (_, _, third, _) = take(&mut sampler);
                let words = return_addresses([&first, &second, &third], sp, &code, 5);
                assert!(words.len() >= 2, "{words:x?}");
                let start = MemoStart { ip, sp, bp: None };
                assert!(sampler.add_memo(me, &start, 7, &words));
                let (_, _, stack, memo) = take(&mut sampler);
                assert_eq!((memo, stack.len()), (Some(7), 0));
                let mut changed = words.clone();
                changed[1].1 ^= 1;
                assert!(sampler.add_memo(me, &start, 8, &changed));
                let (_, _, stack, memo) = take(&mut sampler);
                assert_eq!((memo, stack.len()), (None, STACK_BYTES as usize));
                sampler.remove_memo(me, &start);
            })
            .join()
            .unwrap()
    });
}

/// openat of a path in this frame, then its close, from one place: the
/// openat's registers and stack copy, and its memo.
#[inline(never)]
fn open_from_the_stack(
    sampler: &mut BpfSampler,
    tid: i32,
) -> (u64, u64, u64, Vec<u8>, Option<u32>) {
    let path = std::hint::black_box(*b"/dev/null\0");
    // SAFETY: a NUL-terminated path; the fd is closed at once.
    unsafe {
        libc::close(libc::openat(
            libc::AT_FDCWD,
            path.as_ptr().cast(),
            libc::O_RDONLY,
        ))
    };
    let mut mine = Vec::new();
    sampler.drain(|s| {
        if s.tid == tid
            && matches!(s.syscall, SyscallRecord::Exit { nr, .. } if nr == libc::SYS_openat)
        {
            let regs = s.regs.unwrap();
            mine.push((regs.ip, regs.sp, regs.si, s.stack.to_vec(), s.memo));
        }
    });
    assert_eq!(mine.len(), 1, "one openat");
    mine.pop().unwrap()
}

#[test]
fn a_remembered_walk_with_a_path_in_the_stack_comes_with_a_short_copy_that_holds_it() {
    let Some((mut sampler, me)) = sampling_this_process() else {
        return;
    };
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let tid = nix::unistd::gettid().as_raw();
                // Read before the samples: reading it opens a file.
                let code = code_ranges();
                sampler.drain(|_| {});
                let (ip, sp, path, first, memo) = open_from_the_stack(&mut sampler, tid);
                assert_eq!((memo, first.len()), (None, STACK_BYTES as usize));
                let (short_bytes, near) = args_copy(STACK_BYTES as i32);
                let at = (path - sp) as usize;
                assert!(at < near as usize, "the path is near sp: sp+{at}");
                assert_eq!(&first[at..at + 10], b"/dev/null\0");
                let (_, _, _, second, _) = open_from_the_stack(&mut sampler, tid);
                let (_, _, _, third, _) = open_from_the_stack(&mut sampler, tid);
                // The words nearest sp (the return addresses into this
                // function): further up, a word of the test harness can
                // look like code and change.
                let words = return_addresses([&first, &second, &third], sp, &code, 2);
                assert!(words.len() >= 2, "{words:x?}");
                let start = MemoStart { ip, sp, bp: None };
                assert!(sampler.add_memo(me, &start, 9, &words));
                let (ip3, sp3, path3, short, memo) = open_from_the_stack(&mut sampler, tid);
                assert_eq!((ip3, sp3, path3, memo), (ip, sp, path, Some(9)));
                assert_eq!(short.len(), short_bytes as usize, "the short copy");
                assert_eq!(&short[at..at + 10], b"/dev/null\0");
                sampler.remove_memo(me, &start);
            })
            .join()
            .unwrap()
    });
}

/// The first `n` words that three stack copies taken at `sp` agree on
/// and that point into `code`, with their addresses: return addresses, as
/// a walk would read them.
fn return_addresses(
    copies: [&[u8]; 3],
    sp: u64,
    code: &[std::ops::Range<u64>],
    n: usize,
) -> Vec<(u64, u64)> {
    let [first, second, third] = copies;
    (0..first.len() / 8)
        .filter(|i| {
            let word = i * 8..i * 8 + 8;
            first[word.clone()] == second[word.clone()] && first[word.clone()] == third[word]
        })
        .map(|i| {
            let value = u64::from_ne_bytes(first[i * 8..i * 8 + 8].try_into().unwrap());
            (sp + 8 * i as u64, value)
        })
        .filter(|&(_, value)| code.iter().any(|r| r.contains(&value)))
        .take(n)
        .collect()
}

/// The executable mappings of this process.
fn code_ranges() -> Vec<std::ops::Range<u64>> {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|l| l.split_whitespace().nth(1).is_some_and(|p| p.contains('x')))
        .filter_map(|l| {
            let (lo, hi) = l.split_whitespace().next()?.split_once('-')?;
            Some(u64::from_str_radix(lo, 16).ok()?..u64::from_str_radix(hi, 16).ok()?)
        })
        .collect()
}
