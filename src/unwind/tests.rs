//! Walks of this test process's own threads: real objects, real CFI.

use std::arch::asm;
use std::hint::black_box;

use super::*;
use crate::modules::read_code_mappings;

fn own_pid() -> i32 {
    std::process::id() as i32
}

/// The registers of the calling function at the point of the call, as a
/// tracer would see them at a stop there. Must be inlined into its caller.
macro_rules! current_regs {
    () => {{
        let (ip, sp, bp): (u64, u64, u64);
        // SAFETY: only copies rip, rsp and rbp into registers; reads and
        // writes no memory and leaves the stack and flags alone.
        unsafe {
            asm!(
                "lea {ip}, [rip]",
                "mov {sp}, rsp",
                "mov {bp}, rbp",
                ip = out(reg) ip,
                sp = out(reg) sp,
                bp = out(reg) bp,
                options(nomem, nostack, preserves_flags),
            )
        };
        StackRegs { ip, sp, bp }
    }};
}

struct Walks {
    regs: StackRegs,
    first: Stack,
    parsed_after_first: usize,
    second: Stack,
    parsed_after_second: usize,
    unwinder: Unwinder,
    stack: Vec<u8>,
}

#[inline(never)]
fn a() -> Walks {
    let walks = b(black_box(1));
    black_box(walks)
}

#[inline(never)]
fn b(x: u64) -> Walks {
    let walks = c(black_box(x + 1));
    black_box(walks)
}

#[inline(never)]
fn c(x: u64) -> Walks {
    let regs = current_regs!();
    black_box(x);
    let stack = copy_stack(own_pid(), regs.sp, 1 << 20);
    let mut unwinder = Unwinder::new(own_pid());
    let first = unwinder.unwind(&regs, &stack);
    let parsed_after_first = unwinder.objects_parsed();
    let second = unwinder.unwind(&regs, &stack);
    let parsed_after_second = unwinder.objects_parsed();
    Walks {
        regs,
        first,
        parsed_after_first,
        second,
        parsed_after_second,
        unwinder,
        stack,
    }
}

fn walk_on_new_thread() -> Walks {
    std::thread::spawn(a).join().unwrap()
}

/// True if `addr` is a return address inside function `f` (assumed to be
/// shorter than 4 KiB).
fn returns_into(addr: u64, f: u64) -> bool {
    addr > f && addr <= f + 0x1000
}

#[test]
fn walks_through_callers_to_the_thread_start() {
    let walks = walk_on_new_thread();
    let frames = &walks.first.addresses;
    assert!(frames.len() >= 4, "{:#x?}", walks.first);
    assert_eq!(frames[0], walks.regs.ip);
    let c_start = c as fn(u64) -> Walks as usize as u64;
    let b_start = b as fn(u64) -> Walks as usize as u64;
    let a_start = a as fn() -> Walks as usize as u64;
    assert!(frames[0] > c_start && frames[0] < c_start + 0x1000);
    assert!(returns_into(frames[1], b_start), "{:#x?}", walks.first);
    assert!(returns_into(frames[2], a_start), "{:#x?}", walks.first);
    // The whole thread stack was copied, so the walk reaches its start.
    assert_eq!(walks.first.truncated, None, "{:#x?}", walks.first);
    assert_eq!(walks.second, walks.first);
}

#[test]
fn each_object_is_parsed_once() {
    let mut walks = walk_on_new_thread();
    let maps = read_code_mappings(own_pid());
    let mut objects: Vec<_> = walks
        .first
        .addresses
        .iter()
        .map(|&addr| {
            let addr = addr.saturating_sub(1);
            let mapping = maps.iter().find(|m| m.avma.contains(&addr)).unwrap();
            mapping.key.clone()
        })
        .collect();
    objects.sort_by_key(|k| format!("{k:?}"));
    objects.dedup();
    assert!(objects.len() >= 2, "test binary and libc: {objects:?}");
    assert_eq!(walks.parsed_after_first, objects.len());
    assert_eq!(walks.parsed_after_second, walks.parsed_after_first);
    // After an exec everything is parsed again.
    walks.unwinder.reset();
    assert_eq!(walks.unwinder.objects_parsed(), 0);
    let again = walks.unwinder.unwind(&walks.regs, &walks.stack);
    assert_eq!(again, walks.first);
    assert_eq!(walks.unwinder.objects_parsed(), objects.len());
}

#[test]
fn a_repeated_walk_is_remembered_and_a_changed_word_walked_again() {
    let mut walks = walk_on_new_thread();
    assert_eq!(walks.second, walks.first);
    assert_eq!(walks.unwinder.repeats(), 1, "the second walk was a repeat");
    // The caller's return address in the copy now points into a(): the
    // walk from the same registers must follow it, as a fresh one does.
    let sp = walks.regs.sp;
    let slot = walks
        .stack
        .chunks_exact(8)
        .position(|w| u64::from_le_bytes(w.try_into().unwrap()) == walks.first.addresses[1])
        .expect("the return address into b() is in the copy");
    let mut changed = walks.stack.clone();
    changed[slot * 8..slot * 8 + 8].copy_from_slice(&walks.first.addresses[2].to_le_bytes());
    let again = walks.unwinder.unwind(&walks.regs, &changed);
    let fresh = Unwinder::new(own_pid()).unwind(&walks.regs, &changed);
    assert_eq!(again, fresh);
    assert_ne!(again, walks.first, "sp {sp:#x}: the changed word was read");
    assert_eq!(walks.unwinder.repeats(), 1, "not answered from the memo");
}

#[test]
fn short_stack_copy_is_a_partial_stack() {
    let walks = walk_on_new_thread();
    let mut unwinder = Unwinder::new(own_pid());
    let stack = unwinder.unwind(&walks.regs, &[]);
    assert_eq!(stack.addresses, vec![walks.regs.ip]);
    assert_eq!(stack.truncated.as_deref(), Some("stack copy ended"));
}

#[test]
fn garbage_registers_give_a_reason_not_a_panic() {
    let mut unwinder = Unwinder::new(own_pid());
    let regs = StackRegs {
        ip: 0x1234,
        sp: 0,
        bp: 0,
    };
    let stack = unwinder.unwind(&regs, &[0xff; 64]);
    assert_eq!(stack.addresses, vec![0x1234]);
    assert_eq!(
        stack.truncated.as_deref(),
        Some("no unwind info for 0x1234")
    );

    // A real code address over random stack contents.
    let ip = c as fn(u64) -> Walks as usize as u64 + 8;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..500 {
        let sp = next() & !7;
        let bytes: Vec<u8> = (0..512).map(|_| next() as u8).collect();
        let regs = StackRegs { ip, sp, bp: next() };
        let stack = unwinder.unwind(&regs, &bytes);
        assert!(!stack.addresses.is_empty() && stack.addresses.len() <= MAX_FRAMES);
    }
}

/// Maps `path` readable and executable, as a loader would map code.
fn map_executable(path: &std::path::Path, len: usize) -> Option<u64> {
    let file = std::fs::File::open(path).unwrap();
    use std::os::fd::AsRawFd;
    // SAFETY: a new private read+exec mapping of a file at an address the
    // kernel picks; it aliases no Rust object and nothing executes it.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_EXEC,
            libc::MAP_PRIVATE,
            file.as_raw_fd(),
            0,
        )
    };
    (addr != libc::MAP_FAILED).then_some(addr as u64)
}

#[test]
fn corrupt_object_is_skipped() {
    // Next to the test binary, so the file system allows executable maps.
    let dir = std::env::current_exe().unwrap();
    let path = dir.with_file_name(format!("fdbg-corrupt-elf-{}", std::process::id()));
    let mut bytes = b"\x7fELF\x02\x01\x01".to_vec();
    bytes.resize(8192, 0xa5);
    std::fs::write(&path, &bytes).unwrap();
    let mapped = map_executable(&path, bytes.len());
    std::fs::remove_file(&path).unwrap();
    let start = mapped.expect("mmap of the corrupt file");

    let walks = walk_on_new_thread();
    let mut unwinder = walks.unwinder;
    let parsed = unwinder.objects_parsed();
    // The mapping appeared after the unwinder read the maps.
    let regs = StackRegs {
        ip: start + 0x10,
        sp: walks.regs.sp,
        bp: 0,
    };
    let stack = unwinder.unwind(&regs, &walks.stack);
    assert_eq!(stack.addresses, vec![start + 0x10]);
    assert_eq!(
        stack.truncated,
        Some(format!("no unwind info for {:#x}", start + 0x10))
    );
    assert_eq!(unwinder.objects_parsed(), parsed + 1);
    // Tried once: a second walk does not parse it again.
    unwinder.unwind(&regs, &walks.stack);
    assert_eq!(unwinder.objects_parsed(), parsed + 1);
    // Good objects still unwind.
    assert_eq!(unwinder.unwind(&walks.regs, &walks.stack), walks.first);

    // SAFETY: unmaps exactly the mapping made above, which nothing uses.
    unsafe { libc::munmap(start as *mut libc::c_void, bytes.len()) };
}

#[test]
fn copy_stack_stops_at_the_end_of_the_mapping() {
    let pid = own_pid();
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let line = maps.lines().find(|l| l.ends_with("[stack]")).unwrap();
    let (_, end) = line.split(' ').next().unwrap().split_once('-').unwrap();
    let end = u64::from_str_radix(end, 16).unwrap();
    // 100 bytes below the top: a 64 KiB request gets exactly 100 bytes.
    let copy = copy_stack(pid, end - 100, 64 * 1024);
    assert_eq!(copy.len(), 100);
    // Page-crossing start inside the mapping: 2 pages + 10 bytes.
    let copy = copy_stack(pid, end - 8192 - 10, 1 << 20);
    assert_eq!(copy.len(), 8192 + 10);
    // Unmapped memory and gone processes give nothing.
    assert!(copy_stack(pid, 0x10, 4096).is_empty());
    assert!(copy_stack(i32::MAX, end - 100, 64).is_empty());
    // Contents match.
    let value = black_box([0x5au8; 32]);
    let copy = copy_stack(pid, value.as_ptr() as u64, 32);
    assert_eq!(copy, value);
}

#[test]
fn jit_frames_are_walked_by_frame_pointer() {
    // SAFETY: a new private anonymous read+exec mapping at an address the
    // kernel picks; it aliases no Rust object and nothing executes it.
    let jit = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_EXEC,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(jit, libc::MAP_FAILED);
    let ip = jit as u64 + 0x10;
    let walks = walk_on_new_thread();
    let mut unwinder = walks.unwinder;
    // A JIT function called from c, its frame pointer pushed: below c's
    // stack, the saved frame pointer and the return address into c.
    let sp = walks.regs.sp - 16;
    let mut stack = walks.regs.bp.to_le_bytes().to_vec();
    stack.extend(walks.regs.ip.to_le_bytes());
    stack.extend(&walks.stack);
    let regs = StackRegs { ip, sp, bp: sp };
    let stack_through = unwinder.unwind(&regs, &stack);
    assert_eq!(stack_through.addresses[0], ip);
    assert_eq!(stack_through.addresses[1..], walks.first.addresses[..]);
    assert_eq!(stack_through.truncated, None);
    // Without a frame pointer the walk ends there, saying why.
    let regs = StackRegs { ip, sp, bp: 0 };
    let stack_ended = unwinder.unwind(&regs, &stack);
    assert_eq!(stack_ended.addresses, vec![ip]);
    assert_eq!(
        stack_ended.truncated,
        Some(format!("no frame pointer in JIT code at {ip:#x}"))
    );
    // SAFETY: unmaps exactly the mapping made above, which nothing uses.
    unsafe { libc::munmap(jit, 4096) };
}
