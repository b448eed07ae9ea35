//! Stack unwinding of a stopped thread from a snapshot: its registers and a
//! bounded copy of its stack, taken at the stop.
//!
//! Exists so that every fd creation gets the raw return addresses of the
//! creating thread, through DWARF call-frame information (`.eh_frame`,
//! `.debug_frame`), so it works for code built without frame pointers.
//! The CFI interpretation is framehop's: it is fast enough to run at every
//! stop, caches rules per address, handles prologues, epilogues and the
//! end-of-stack markers, and is tested against real compilers' output,
//! which a hand-written CFI evaluator would have to earn again.
//!
//! Code in no object file, in anonymous executable memory (JIT code: V8's,
//! a JVM's), has no CFI: framehop walks it by frame pointer, which those
//! runtimes keep. Naming it is the symbolizer's, from perf maps, when shown.
//!
//! What this layer owns is the process side: which objects are mapped where
//! (`modules`), parsing each object once, adding objects that appear later
//! (dlopen), and saying why a walk stopped early. It never calls ptrace (the
//! tracer owns ptrace and hands over registers and stack bytes); reading
//! `/proc` and `process_vm_readv` are its only contact with the process.
//! Bad input — garbage registers, a corrupt object, a vanished process —
//! gives a shorter stack with a reason, never a panic.

use std::collections::HashMap;
use std::sync::Arc;

use framehop::x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64};
use framehop::{
    Error as WalkError, ExplicitModuleSectionInfo, FrameAddress, Module, Unwinder as _,
};

use crate::arch::StackRegs;
use crate::modules::{self, CodeMapping, ObjectKey, ParsedObject, SectionBytes};
use crate::stacks::{Stack, StackId};

/// The most frames one walk returns.
pub const MAX_FRAMES: usize = 128;

/// How many framehop rule caches a process has. One is direct-mapped
/// (509 slots by address modulo 509): two frames of one stack whose
/// addresses share a slot evict each other at every walk, and every walk
/// then parses their CFI again (nginx's 17-frame stacks missed twice per
/// walk, half of fdbg's CPU). Several, with fdbg choosing for each
/// address the one whose slot it holds or that has the slot free, make
/// an 8-way set-associative cache of framehop's.
const RULE_CACHES: usize = 8;

/// framehop's slot count (`rule_cache.rs`: the slot is the lookup address
/// modulo this).
const RULE_SLOTS: usize = 509;

/// Which address holds each slot of each rule cache (0: none yet).
struct SlotOwners(Box<[[u64; RULE_SLOTS]; RULE_CACHES]>);

impl SlotOwners {
    fn new() -> SlotOwners {
        SlotOwners(Box::new([[0; RULE_SLOTS]; RULE_CACHES]))
    }

    /// The cache to look `address` up in: the one whose slot holds it,
    /// else one whose slot is free (claimed), else one chosen by a hash
    /// of the address (which takes the slot over).
    fn cache_for(&mut self, address: u64) -> usize {
        let slot = (address % RULE_SLOTS as u64) as usize;
        let owners = &mut self.0;
        if let Some(i) = (0..RULE_CACHES).find(|&i| owners[i][slot] == address) {
            return i;
        }
        let i = (0..RULE_CACHES)
            .find(|&i| owners[i][slot] == 0)
            .unwrap_or((address.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 61) as usize % RULE_CACHES);
        owners[i][slot] = address;
        i
    }
}

/// What is known about one executable mapping of the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MappingState {
    /// Seen in the maps, object not looked at yet.
    Pending,
    /// A framehop module covers it.
    Added,
    /// Its object could not be read or parsed: no unwind info here.
    Unusable,
}

struct KnownMapping {
    mapping: CodeMapping,
    state: MappingState,
}

/// Per-process unwinder: knows the process's mapped objects and their
/// unwind tables. Objects are parsed when a walk first meets an address in
/// them, once per (device, inode), and kept until `reset`.
pub struct Unwinder {
    pid: i32,
    framehop: UnwinderX86_64<SectionBytes>,
    /// framehop's rule caches, each chosen by a hash of the code address
    /// (see `cache_for`).
    caches: Vec<CacheX86_64>,
    owners: SlotOwners,
    /// Executable mappings by start address, from the last maps read.
    mappings: Vec<KnownMapping>,
    /// Parsed objects; `None` records a failure so it is not retried.
    objects: HashMap<ObjectKey, Option<Arc<ParsedObject>>>,
    objects_parsed: usize,
    /// How many times /proc/PID/maps was read (each read may bring mappings
    /// the symbolizer should keep).
    maps_reads: u64,
    /// Code pages found in no executable mapping at the last maps read.
    unmapped_pages: std::collections::HashSet<u64>,
    /// Anonymous executable memory (JIT code) at the last maps read.
    anonymous_code: Vec<std::ops::Range<u64>>,
    /// The mapping the last lookup found.
    last_mapping: std::cell::Cell<usize>,
    /// Walks remembered by where they started (see `Memo`).
    memos: rustc_hash::FxHashMap<(u64, u64, usize), Memo>,
    /// The stack words the current walk read, reused from walk to walk.
    reads: Vec<(u64, Option<u64>)>,
    /// Walks answered from a memo.
    repeats: u64,
    /// The memo of the last walk.
    last_walk: Option<(u64, u64, usize)>,
}

/// A walk remembered: from its start (ip, sp and the copy's length), the
/// stack words it depends on, and what it gave. framehop's steps depend on
/// the registers, the objects' unwind rules and the words it reads; so a
/// walk from the same start, over the same objects, that finds the same
/// words there gives the same stack, and checking the words (one a frame)
/// costs much less than walking. An event loop makes its fd syscalls from
/// the same few places at the same depth: most samples of a server are
/// such repeats. Forgotten whenever the set of objects changes.
///
/// Which words: a walk whose every frame was unwound from the stack
/// pointer (CFI's usual rules) depends on the return addresses it read,
/// one a frame, and not on rbp nor on the registers it restored, which in
/// code built without frame pointers hold whatever the caller kept there
/// (nginx: a request's pool, other at every request). A walk that may have
/// used rbp (a frame-pointer step, framehop's fallback) or ended early
/// depends on every word it read and on rbp at the start.
struct Memo {
    reads: Box<[(u64, Option<u64>)]>,
    bp: Option<u64>,
    stack: Stack,
    needed: usize,
    /// The caller's id for `stack` in an address-space generation
    /// (`remember_interned`), so that a repeat costs it no lookup.
    interned: Option<(u32, StackId)>,
}

/// What a walk depended on: the stack words (address, value) and rbp at
/// its start, when it used it.
pub struct WalkProof {
    pub words: Vec<(u64, u64)>,
    pub bp: Option<u64>,
}

/// A walk's outcome: the stack (remembered by the unwinder), how many bytes
/// above sp it read, and the id the caller gave this stack before, if the
/// walk is a repeat of one it was told about.
pub struct Walk<'a> {
    pub stack: &'a Stack,
    pub needed: usize,
    pub interned: Option<(u32, StackId)>,
}

/// Walks remembered per process at most; past that, all are forgotten (a
/// thread per connection starts every walk at another sp).
const MEMOS_MAX: usize = 1024;

/// What covers a code address.
enum Lookup {
    Covered,
    NoUnwindInfo,
    /// Anonymous executable memory: code a runtime compiled, walked by
    /// frame pointer (V8's and the JVM's JIT frames keep the chain).
    Jit,
}

impl Unwinder {
    pub fn new(pid: i32) -> Unwinder {
        Unwinder {
            pid,
            framehop: UnwinderX86_64::new(),
            caches: (0..RULE_CACHES).map(|_| CacheX86_64::new()).collect(),
            owners: SlotOwners::new(),
            mappings: Vec::new(),
            objects: HashMap::new(),
            objects_parsed: 0,
            maps_reads: 0,
            unmapped_pages: std::collections::HashSet::new(),
            anonymous_code: Vec::new(),
            last_mapping: std::cell::Cell::new(0),
            memos: rustc_hash::FxHashMap::default(),
            reads: Vec::new(),
            repeats: 0,
            last_walk: None,
        }
    }

    /// Read the maps and parse every executable object now, not when a walk
    /// first needs it: a stack sampled before an exec (or an unmap) and
    /// walked after it still finds the objects it ran in.
    pub fn preload(&mut self) {
        self.reread_maps();
        for index in 0..self.mappings.len() {
            if self.mappings[index].state == MappingState::Pending {
                self.mappings[index].state = if self.add_module(index) {
                    MappingState::Added
                } else {
                    MappingState::Unusable
                };
            }
        }
    }

    /// How many times the process's maps were read so far.
    pub fn maps_reads(&self) -> u64 {
        self.maps_reads
    }

    /// The executable mappings from the last maps read.
    pub fn mappings(&self) -> Vec<CodeMapping> {
        self.mappings.iter().map(|m| m.mapping.clone()).collect()
    }

    /// Walk the stack of a thread stopped at a syscall. `stack` is a copy of
    /// the thread's stack memory starting at address `regs.sp`. Returns the
    /// code addresses innermost first — the instruction pointer, then raw
    /// return addresses (the symbolizer looks them up at `addr - 1`) — and,
    /// if the walk ended before the outermost frame, why.
    pub fn unwind(&mut self, regs: &StackRegs, stack: &[u8]) -> Stack {
        self.unwind_beyond(regs, stack, &|_| None).0
    }

    /// As `unwind`, and where the walk needs stack words above the copy,
    /// ask `beyond` for them (the thread's memory now, or as it was at an
    /// earlier stop): a copy taken at a syscall the thread has since
    /// returned from is exact, and its outer frames (the callers that are
    /// still running) usually still are; a return address into one of them
    /// may not be. Also says how many bytes above `regs.sp` the walk read:
    /// the copy a walk of this stack needs.
    pub fn unwind_beyond(
        &mut self,
        regs: &StackRegs,
        stack: &[u8],
        beyond_copy: &dyn Fn(u64) -> Option<u64>,
    ) -> (Stack, usize) {
        let walk = self.walk(regs, stack, beyond_copy);
        (walk.stack.clone(), walk.needed)
    }

    /// What the last walk depended on, when every word it read was in
    /// the copy and it reached the stack's end: the (address, value) pairs
    /// that, found again at the same ip and sp (and rbp, when it is the
    /// second value: the walk used it), give the same stack.
    pub fn last_walk_proof(&self, copy_len: usize) -> Option<WalkProof> {
        let start = self.last_walk?;
        let memo = self.memos.get(&start)?;
        if memo.stack.truncated.is_some() {
            return None;
        }
        let (_, sp, _) = start;
        memo.reads
            .iter()
            .map(|&(addr, value)| {
                let inside = addr.checked_sub(sp)? + 8 <= copy_len as u64;
                inside.then_some((addr, value?))
            })
            .collect::<Option<Vec<_>>>()
            .map(|words| WalkProof { words, bp: memo.bp })
    }

    /// The id the caller keeps for the last walk's stack, in address-space
    /// generation `generation`: a repeat of the walk says it
    /// (`Walk::interned`).
    pub fn remember_interned(&mut self, generation: u32, id: StackId) {
        if let Some(memo) = self.last_walk.and_then(|start| self.memos.get_mut(&start)) {
            memo.interned = Some((generation, id));
        }
    }

    /// As `unwind_beyond`, lending the stack (see `Walk`).
    pub fn walk(
        &mut self,
        regs: &StackRegs,
        stack: &[u8],
        beyond_copy: &dyn Fn(u64) -> Option<u64>,
    ) -> Walk<'_> {
        let sp = regs.sp;
        let read_word = |addr: u64| -> Option<u64> {
            let offset = usize::try_from(addr.checked_sub(sp)?).ok()?;
            let end = offset.checked_add(8)?;
            match stack.get(offset..end) {
                Some(bytes) => Some(u64::from_le_bytes(bytes.try_into().ok()?)),
                None if offset >= stack.len() => beyond_copy(addr),
                None => None,
            }
        };
        let start = (regs.ip, regs.sp, stack.len());
        self.last_walk = Some(start);
        let repeat = self.memos.get(&start).is_some_and(|memo| {
            memo.bp.is_none_or(|bp| bp == regs.bp)
                && memo
                    .reads
                    .iter()
                    .all(|&(addr, value)| read_word(addr) == value)
        });
        if repeat {
            self.repeats += 1;
            let memo = &self.memos[&start];
            return Walk {
                stack: &memo.stack,
                needed: memo.needed,
                interned: memo.interned,
            };
        }
        let mut reads = std::mem::take(&mut self.reads);
        reads.clear();
        let mut needed = 0usize;
        let mut framehop_regs = UnwindRegsX86_64::new(regs.ip, regs.sp, regs.bp);
        let mut frame = FrameAddress::from_instruction_pointer(regs.ip);
        // Deep enough for most stacks without growing.
        let mut addresses = Vec::with_capacity(32);
        let mut maps_reread = false;
        // The reads a repeat must find again (indexes into `reads`), while
        // the walk is known not to depend on rbp.
        let mut essential: Vec<usize> = Vec::with_capacity(32);
        let mut uses_bp = false;
        let mut ends_at_null_bp = false;
        // The loop of framehop's `iter_frames`, unrolled so that modules can
        // be added between two frames (the iterator borrows the unwinder).
        let truncated = loop {
            addresses.push(frame.address());
            let lookup = frame.address_for_lookup();
            // In no module, framehop walks by frame pointer.
            let jit = match self.ensure_module(lookup, &mut maps_reread) {
                Lookup::NoUnwindInfo => {
                    break Some(format!("no unwind info for {:#x}", frame.address()));
                }
                Lookup::Covered => false,
                Lookup::Jit => true,
            };
            let old_bp = framehop_regs.bp();
            let first_read = reads.len();
            let mut read_stack = |addr: u64| -> Result<u64, ()> {
                let value = read_word(addr);
                reads.push((addr, value));
                if let Some(end) = addr.checked_sub(sp).and_then(|o| o.checked_add(8)) {
                    needed = needed.max(usize::try_from(end).unwrap_or(usize::MAX));
                }
                value.ok_or(())
            };
            let next = self.framehop.unwind_frame(
                frame,
                &mut framehop_regs,
                &mut self.caches[self.owners.cache_for(lookup)],
                &mut read_stack,
            );
            // A frame-pointer step reads at rbp and rbp + 8 and moves sp to
            // rbp + 16; a step from sp that happens to look so counts too.
            let frame_reads = &reads[first_read..];
            uses_bp |= frame_reads
                .iter()
                .any(|&(addr, _)| addr == old_bp || addr == old_bp.wrapping_add(8));
            // Ended without a read: an end-of-stack rule, or a
            // frame-pointer step at rbp 0 (then the 0 matters: it was
            // the start's rbp or a word read).
            ends_at_null_bp = frame_reads.is_empty() && old_bp == 0;
            let return_address = match next {
                Ok(Some(address)) => address,
                Ok(None) if jit => {
                    break Some(format!(
                        "no frame pointer in JIT code at {:#x}",
                        frame.address()
                    ));
                }
                // The end: the last read is the null return address (or
                // there was none: an end-of-stack rule).
                Ok(None) | Err(WalkError::ReturnAddressIsNull) => {
                    if !frame_reads.is_empty() {
                        essential.push(reads.len() - 1);
                    }
                    break None;
                }
                Err(e) => break Some(walk_error_reason(e, sp, stack.len())),
            };
            // The return address is the frame's last read, just below the
            // caller's sp.
            let new_sp = framehop_regs.sp();
            uses_bp |= new_sp == old_bp.wrapping_add(16)
                || reads.last() != Some(&(new_sp.wrapping_sub(8), Some(return_address)));
            essential.push(reads.len() - 1);
            let Some(caller) = FrameAddress::from_return_address(return_address) else {
                break None;
            };
            if addresses.len() == MAX_FRAMES {
                break Some(format!("depth limit {MAX_FRAMES}"));
            }
            frame = caller;
        };
        let stack = Stack {
            addresses,
            truncated,
            generation: 0,
        };
        if self.memos.len() >= MEMOS_MAX {
            self.memos.clear();
        }
        let (reads_kept, bp) = if uses_bp || stack.truncated.is_some() {
            (reads.as_slice().into(), Some(regs.bp))
        } else {
            if ends_at_null_bp {
                essential.extend((0..reads.len()).filter(|&i| reads[i].1 == Some(0)));
            }
            (
                essential.iter().map(|&i| reads[i]).collect(),
                (ends_at_null_bp && regs.bp == 0).then_some(0),
            )
        };
        self.reads = reads;
        let memo = self
            .memos
            .entry(start)
            .insert_entry(Memo {
                reads: reads_kept,
                bp,
                stack,
                needed,
                interned: None,
            })
            .into_mut();
        Walk {
            stack: &memo.stack,
            needed: memo.needed,
            interned: None,
        }
    }

    /// The process exec'ed: forget all modules and parsed objects (a path
    /// may now hold other contents under the same inode).
    pub fn reset(&mut self) {
        *self = Unwinder::new(self.pid);
    }

    /// How many walks were answered from a remembered one.
    pub fn repeats(&self) -> u64 {
        self.repeats
    }

    /// How many object files were parsed (failed attempts included), for
    /// tests: a second walk through the same objects parses none.
    pub fn objects_parsed(&self) -> usize {
        self.objects_parsed
    }

    /// Makes sure a framehop module covers `avma` if its object has unwind
    /// info, re-reading the maps at most once per walk (`maps_reread`) when
    /// no known mapping covers it.
    fn ensure_module(&mut self, avma: u64, maps_reread: &mut bool) -> Lookup {
        let page = avma / 4096;
        let index = match self.mapping_index(avma) {
            Some(index) => index,
            None if self.in_anonymous_code(avma) => return Lookup::Jit,
            // Known to be in no executable mapping (a garbage frame): not
            // worth reading the maps at every stop.
            None if self.unmapped_pages.contains(&page) => return Lookup::NoUnwindInfo,
            None if !*maps_reread => {
                *maps_reread = true;
                self.reread_maps();
                match self.mapping_index(avma) {
                    Some(index) => index,
                    None if self.in_anonymous_code(avma) => return Lookup::Jit,
                    None => {
                        self.unmapped_pages.insert(page);
                        return Lookup::NoUnwindInfo;
                    }
                }
            }
            None => return Lookup::NoUnwindInfo,
        };
        match self.mappings[index].state {
            MappingState::Added => Lookup::Covered,
            MappingState::Unusable => Lookup::NoUnwindInfo,
            MappingState::Pending => {
                let added = self.add_module(index);
                self.mappings[index].state = if added {
                    MappingState::Added
                } else {
                    MappingState::Unusable
                };
                if added {
                    Lookup::Covered
                } else {
                    Lookup::NoUnwindInfo
                }
            }
        }
    }

    fn in_anonymous_code(&self, avma: u64) -> bool {
        self.anonymous_code.iter().any(|code| code.contains(&avma))
    }

    fn mapping_index(&self, avma: u64) -> Option<usize> {
        // Most frames of a walk are in the mapping of the frame before.
        let last = self.last_mapping.get();
        if self
            .mappings
            .get(last)
            .is_some_and(|m| m.mapping.avma.contains(&avma))
        {
            return Some(last);
        }
        let after = self
            .mappings
            .partition_point(|m| m.mapping.avma.start <= avma);
        let index = after.checked_sub(1)?;
        let found = self.mappings[index].mapping.avma.contains(&avma);
        if found {
            self.last_mapping.set(index);
        }
        found.then_some(index)
    }

    /// Replaces the mapping list with the current maps. Mappings that are
    /// unchanged keep their state; modules of mappings that went away
    /// (dlclose, munmap) are removed from framehop.
    fn reread_maps(&mut self) {
        self.maps_reads += 1;
        self.memos.clear();
        // New mappings may cover pages that were unmapped before.
        self.unmapped_pages.clear();
        let (code, anonymous) = modules::read_executable_maps(self.pid);
        self.anonymous_code = anonymous;
        let mut fresh: Vec<KnownMapping> = code
            .into_iter()
            .map(|mapping| KnownMapping {
                mapping,
                state: MappingState::Pending,
            })
            .collect();
        fresh.sort_by_key(|m| m.mapping.avma.start);
        for old in std::mem::take(&mut self.mappings) {
            match fresh.iter_mut().find(|m| m.mapping == old.mapping) {
                Some(same) => same.state = old.state,
                None if old.state == MappingState::Added => {
                    self.framehop.remove_module(old.mapping.avma.start);
                }
                None => {}
            }
        }
        self.mappings = fresh;
    }

    /// Parses (or finds in the cache) the object of mapping `index` and adds
    /// a framehop module for the mapping. False if there is no usable
    /// unwind info.
    fn add_module(&mut self, index: usize) -> bool {
        let mapping = &self.mappings[index].mapping;
        let pid = self.pid;
        let object = self
            .objects
            .entry(mapping.key.clone())
            .or_insert_with(|| {
                self.objects_parsed += 1;
                modules::load_object(pid, mapping).map(Arc::new)
            })
            .clone();
        let Some(object) = object.filter(|o| o.has_unwind_info()) else {
            return false;
        };
        let Some(bias) = object.bias(mapping.avma.start, mapping.file_offset) else {
            return false;
        };
        let module = Module::new(
            mapping.path.clone(),
            mapping.avma.clone(),
            bias,
            ExplicitModuleSectionInfo {
                // ELF: CFI addresses are SVMAs, relative to 0.
                base_svma: 0,
                text_svma: object.text_svma.clone(),
                got_svma: object.got_svma.clone(),
                eh_frame_svma: object.eh_frame_svma.clone(),
                eh_frame: object.eh_frame.clone(),
                eh_frame_hdr_svma: object.eh_frame_hdr_svma.clone(),
                eh_frame_hdr: object.eh_frame_hdr.clone(),
                debug_frame: object.debug_frame.clone(),
                ..Default::default()
            },
        );
        self.framehop.add_module(module);
        self.memos.clear();
        true
    }
}

fn walk_error_reason(error: WalkError, sp: u64, stack_len: usize) -> String {
    match error {
        WalkError::CouldNotReadStack(addr) => {
            if addr >= sp && addr.wrapping_sub(sp) >= stack_len as u64 {
                "stack copy ended".to_string()
            } else {
                format!("stack address {addr:#x} below the stack pointer")
            }
        }
        WalkError::FramepointerUnwindingMovedBackwards => {
            "frame pointer moved backwards".to_string()
        }
        WalkError::DidNotAdvance => "unwinding did not advance".to_string(),
        WalkError::IntegerOverflow => "address overflow while unwinding".to_string(),
        WalkError::ReturnAddressIsNull => "null return address".to_string(),
    }
}

/// Copies `[sp, sp + max)` of process `pid`, stopping at the end of the
/// readable region (the top of the stack mapping). Empty if nothing is
/// readable or the process is gone.
pub fn copy_stack(pid: i32, sp: u64, max: usize) -> Vec<u8> {
    // process_vm_readv stops at the first unmapped page: the copy is short
    // at the top of the stack, never wrong.
    crate::ptrace::ProcessMemory { pid }
        .read(sp, max)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
