//! The code objects mapped into a process, as the unwinder and the
//! symbolizer need them.
//!
//! Exists so that the unwinder can turn an address in the process (AVMA)
//! into "this object, at this bias, with this unwind data", and so that
//! both find an object's file the same way. It reads `/proc/PID/maps` for
//! the executable mappings, opens each object through
//! `/proc/PID/map_files` (deleted files, other mount namespaces) or
//! `/proc/PID/root/PATH` if that is still the mapped inode
//! (`open_mapped_file`), copies out the sections that hold call-frame
//! information, and computes the bias from the ELF program headers. The
//! `[vdso]` is read from the process's memory with `process_vm_readv`.
//!
//! It must not call ptrace (the tracer owns it) and must not trust what it
//! reads: an unreadable or corrupt object is a `None`, never a panic.

use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use object::read::elf::{ElfFile64, ProgramHeader};
use object::{Endianness, Object, ObjectSection, ReadCache, ReadRef};

/// Section bytes shared between every module built from one object.
pub type SectionBytes = Arc<[u8]>;

/// Identifies one object file independently of where it is mapped.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ObjectKey {
    /// A file, by the device and inode shown in `/proc/PID/maps`.
    File { dev: String, inode: u64 },
    /// The kernel's virtual DSO of this process.
    Vdso,
}

/// One executable mapping from `/proc/PID/maps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodeMapping {
    /// The addresses it covers in the process (AVMAs).
    pub avma: Range<u64>,
    /// The file offset mapped at `avma.start`.
    pub file_offset: u64,
    pub key: ObjectKey,
    /// The path as the process sees it, without a " (deleted)" suffix;
    /// `[vdso]` for the vDSO.
    pub path: String,
    pub deleted: bool,
}

/// Parses the executable, object-backed lines of a `/proc/PID/maps` text.
/// Lines that do not parse are skipped.
/// A mapping of a file that the process cannot write: its bytes are the
/// file's (string literals, tables), readable after the process changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileMapping {
    pub avma: Range<u64>,
    pub file_offset: u64,
    pub path: String,
}

/// The read-only file mappings of a /proc/PID/maps text.
pub fn parse_readonly_file_maps(text: &str) -> Vec<FileMapping> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.splitn(6, ' ');
            let (range, perms, offset) = (fields.next()?, fields.next()?, fields.next()?);
            let path = fields.nth(2).unwrap_or("").trim_start();
            if perms.as_bytes().get(1) == Some(&b'w') || !path.starts_with('/') {
                return None;
            }
            let (start, end) = range.split_once('-')?;
            Some(FileMapping {
                avma: u64::from_str_radix(start, 16).ok()?..u64::from_str_radix(end, 16).ok()?,
                file_offset: u64::from_str_radix(offset, 16).ok()?,
                path: path.to_string(),
            })
        })
        .collect()
}

/// Read `len` bytes at `addr` from the file a mapping of `maps` covers.
pub fn read_mapped_file(maps: &[FileMapping], addr: u64, len: usize) -> Option<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let map = maps.iter().find(|m| m.avma.contains(&addr))?;
    let len = len.min(usize::try_from(map.avma.end - addr).ok()?);
    let file = std::fs::File::open(&map.path).ok()?;
    let mut buf = vec![0u8; len];
    let n = file
        .read_at(&mut buf, map.file_offset + (addr - map.avma.start))
        .ok()?;
    buf.truncate(n);
    Some(buf)
}

pub fn parse_maps(text: &str) -> Vec<CodeMapping> {
    text.lines().filter_map(parse_maps_line).collect()
}

fn parse_maps_line(line: &str) -> Option<CodeMapping> {
    // start-end perms offset dev inode [path]; the path may contain spaces.
    let mut fields = line.splitn(6, ' ');
    let range = fields.next()?;
    let perms = fields.next()?;
    let offset = fields.next()?;
    let dev = fields.next()?;
    let inode = fields.next()?;
    let path = fields.next().unwrap_or("").trim_start();
    if perms.as_bytes().get(2) != Some(&b'x') {
        return None;
    }
    let (start, end) = range.split_once('-')?;
    let start = u64::from_str_radix(start, 16).ok()?;
    let end = u64::from_str_radix(end, 16).ok()?;
    if start >= end {
        return None;
    }
    let file_offset = u64::from_str_radix(offset, 16).ok()?;
    let inode: u64 = inode.parse().ok()?;
    let (key, path, deleted) = if path == "[vdso]" {
        (ObjectKey::Vdso, path.to_string(), false)
    } else if inode != 0 && path.starts_with('/') {
        let (path, deleted) = match path.strip_suffix(" (deleted)") {
            Some(p) => (p, true),
            None => (path, false),
        };
        let key = ObjectKey::File {
            dev: dev.to_string(),
            inode,
        };
        (key, path.to_string(), deleted)
    } else {
        // Anonymous executable memory (JIT code) or other pseudo-files.
        return None;
    };
    Some(CodeMapping {
        avma: start..end,
        file_offset,
        key,
        path,
        deleted,
    })
}

/// Reads the executable mappings of `pid`; empty if the process is gone.
pub fn read_code_mappings(pid: i32) -> Vec<CodeMapping> {
    read_executable_maps(pid).0
}

/// Reads the executable mappings of `pid` and its anonymous executable
/// memory (see `parse_anonymous_code`); empty if the process is gone.
pub fn read_executable_maps(pid: i32) -> (Vec<CodeMapping>, Vec<Range<u64>>) {
    std::fs::read_to_string(crate::procfs::process_dir(pid).join("maps"))
        .map(|text| (parse_maps(&text), parse_anonymous_code(&text)))
        .unwrap_or_default()
}

/// The anonymous executable mappings of a /proc/PID/maps text, in its
/// order: code a runtime compiled (JIT), which no object file describes.
/// Named anonymous memory (`[anon:NAME]`) counts; the kernel's
/// `[vsyscall]` and other pseudo-files do not.
pub fn parse_anonymous_code(text: &str) -> Vec<Range<u64>> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.splitn(6, ' ');
            let (range, perms) = (fields.next()?, fields.next()?);
            let inode = fields.nth(2)?;
            let path = fields.next().unwrap_or("").trim_start();
            let anonymous = path.is_empty() || path.starts_with("[anon:");
            if perms.as_bytes().get(2) != Some(&b'x') || inode != "0" || !anonymous {
                return None;
            }
            let (start, end) = range.split_once('-')?;
            let start = u64::from_str_radix(start, 16).ok()?;
            let end = u64::from_str_radix(end, 16).ok()?;
            (start < end).then_some(start..end)
        })
        .collect()
}

/// A `PT_LOAD` program header, reduced to how file offsets map to SVMAs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadSegment {
    vaddr: u64,
    offset: u64,
    filesz: u64,
    executable: bool,
}

impl LoadSegment {
    /// The SVMA of the byte at `file_offset`, which may lie below the
    /// segment's `p_offset` in the same page (a mapping starts page-aligned).
    fn svma(&self, file_offset: u64) -> u64 {
        self.vaddr
            .wrapping_sub(self.offset)
            .wrapping_add(file_offset)
    }
}

/// The `PT_LOAD` segments of an ELF file; empty for an object that has none.
pub fn load_segments<'data, R: ReadRef<'data>>(
    elf: &ElfFile64<'data, Endianness, R>,
) -> Vec<LoadSegment> {
    let endian = elf.endian();
    elf.elf_program_headers()
        .iter()
        .filter(|ph| ph.p_type(endian) == object::elf::PT_LOAD)
        .map(|ph| LoadSegment {
            vaddr: ph.p_vaddr(endian),
            offset: ph.p_offset(endian),
            filesz: ph.p_filesz(endian),
            executable: ph.p_flags(endian).0 & object::elf::PF_X.0 != 0,
        })
        .collect()
}

/// The SVMA of the byte at `file_offset`, through the segment whose file
/// range holds it (a code address always lies inside its segment).
pub fn svma_of(loads: &[LoadSegment], file_offset: u64) -> Option<u64> {
    loads
        .iter()
        .find(|l| l.offset <= file_offset && file_offset < l.offset.saturating_add(l.filesz))
        .map(|l| l.svma(file_offset))
}

/// The file offset of the byte at `svma`, through the segment whose
/// address range holds it.
pub fn file_offset_of(loads: &[LoadSegment], svma: u64) -> Option<u64> {
    loads
        .iter()
        .find(|l| l.vaddr <= svma && svma < l.vaddr.saturating_add(l.filesz))
        .map(|l| svma - l.vaddr + l.offset)
}

/// What one object contributes to unwinding, copied out of the file so the
/// file can be closed. Addresses are SVMAs (as stated in the object).
#[derive(Debug, Default)]
pub struct ParsedObject {
    loads: Vec<LoadSegment>,
    pub text_svma: Option<Range<u64>>,
    pub got_svma: Option<Range<u64>>,
    pub eh_frame_svma: Option<Range<u64>>,
    pub eh_frame: Option<SectionBytes>,
    pub eh_frame_hdr_svma: Option<Range<u64>>,
    pub eh_frame_hdr: Option<SectionBytes>,
    pub debug_frame: Option<SectionBytes>,
}

impl ParsedObject {
    /// The bias (AVMA − SVMA) of this object given one of its mappings: the
    /// SVMA at the mapping's start is found through the `PT_LOAD` whose file
    /// range contains the mapping's offset, so PIE and non-PIE objects and
    /// mappings of any segment give the same answer. `None` if no segment
    /// matches (the mapping is not of this object).
    pub fn bias(&self, avma_start: u64, file_offset: u64) -> Option<u64> {
        let contains = |seg: &&LoadSegment| {
            let page_start = seg.offset & !0xfff;
            page_start <= file_offset && file_offset < seg.offset.saturating_add(seg.filesz.max(1))
        };
        let seg = self
            .loads
            .iter()
            .filter(|s| s.executable)
            .find(contains)
            .or_else(|| self.loads.iter().find(contains))?;
        // Exact even when the mapping starts below `p_offset` in the same page.
        Some(avma_start.wrapping_sub(seg.svma(file_offset)))
    }

    pub fn has_unwind_info(&self) -> bool {
        self.eh_frame.is_some() || self.debug_frame.is_some()
    }
}

/// Parses an ELF object. `None` for anything that is not a 64-bit ELF with
/// at least one loadable segment.
pub fn parse_object<'data, R: ReadRef<'data>>(data: R) -> Option<ParsedObject> {
    let elf = ElfFile64::<Endianness, R>::parse(data).ok()?;
    let loads = load_segments(&elf);
    if loads.is_empty() {
        return None;
    }
    let svma = |name: &str| {
        let section = elf.section_by_name(name)?;
        let start = section.address();
        Some(start..start.checked_add(section.size())?)
    };
    let bytes = |name: &str| -> Option<SectionBytes> {
        let section = elf.section_by_name(name)?;
        let data = section.uncompressed_data().ok()?;
        (!data.is_empty()).then(|| Arc::from(&*data))
    };
    let eh_frame = bytes(".eh_frame");
    // framehop only looks at .debug_frame when .eh_frame is absent.
    let debug_frame = if eh_frame.is_none() {
        bytes(".debug_frame")
    } else {
        None
    };
    Some(ParsedObject {
        loads,
        text_svma: svma(".text"),
        got_svma: svma(".got"),
        eh_frame_svma: svma(".eh_frame"),
        eh_frame,
        eh_frame_hdr_svma: svma(".eh_frame_hdr"),
        eh_frame_hdr: bytes(".eh_frame_hdr"),
        debug_frame,
    })
}

/// Opens the file behind `mapping` of process `pid`:
/// `/proc/PID/map_files/START-END` first (the mapped file itself, even if
/// deleted or in another mount namespace; needs privileges), else
/// `/proc/PID/root/PATH`, else `PATH` as fdbg sees it. The last two are
/// tried only if the file was not deleted, and used only if they are still
/// the mapped file (same device and inode as `/proc/PID/maps` says): a
/// library replaced on disk since it was mapped is another object. `None`
/// for the vDSO, which is no file.
pub fn open_mapped_file(pid: i32, mapping: &CodeMapping) -> Option<File> {
    let ObjectKey::File { dev, inode } = &mapping.key else {
        return None;
    };
    let map_file = format!(
        "/proc/{pid}/map_files/{:x}-{:x}",
        mapping.avma.start, mapping.avma.end
    );
    if let Ok(file) = File::open(map_file) {
        return Some(file);
    }
    if mapping.deleted {
        return None;
    }
    let in_root = format!(
        "{}{}",
        crate::procfs::process_dir(pid).join("root").display(),
        mapping.path
    );
    [in_root, mapping.path.clone()]
        .iter()
        .filter_map(|path| File::open(path).ok())
        .find(|file| {
            file.metadata()
                .is_ok_and(|meta| meta.ino() == *inode && dev_text(meta.dev()) == *dev)
        })
}

/// A device number as `/proc/PID/maps` writes it: `fd:01`.
fn dev_text(dev: u64) -> String {
    let major = ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0xfff);
    let minor = ((dev >> 12) & 0xffff_ff00) | (dev & 0xff);
    format!("{major:02x}:{minor:02x}")
}

/// Opens and parses the object behind `mapping` of process `pid`: the
/// file `open_mapped_file` finds, or the vDSO's image from memory. `None`
/// if it does not open or does not parse.
pub fn load_object(pid: i32, mapping: &CodeMapping) -> Option<ParsedObject> {
    if mapping.key == ObjectKey::Vdso {
        return load_vdso(pid, &mapping.avma);
    }
    let file = open_mapped_file(pid, mapping)?;
    parse_object(&ReadCache::new(file))
}

/// The vDSO is not a file: copy its image out of the process.
fn load_vdso(pid: i32, avma: &Range<u64>) -> Option<ParsedObject> {
    let len = usize::try_from(avma.end - avma.start).ok()?;
    if len > 1 << 20 {
        return None;
    }
    let image = crate::ptrace::ProcessMemory { pid }.read(avma.start, len)?;
    parse_object(&image[..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_maps_lines() {
        let text = "\
55d0c6a00000-55d0c6a02000 r--p 00000000 fd:01 1234 /usr/bin/cat
55d0c6a02000-55d0c6a07000 r-xp 00002000 fd:01 1234 /usr/bin/cat
7f0000000000-7f0000001000 rwxp 00000000 00:00 0 
7f0000001000-7f0000002000 r-xp 00001000 08:02 99 /tmp/with space/lib.so (deleted)
7ffd1a3f0000-7ffd1a3f2000 r-xp 00000000 00:00 0                          [vdso]
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
garbage line
";
        let maps = parse_maps(text);
        assert_eq!(maps.len(), 3, "{maps:#?}");
        assert_eq!(maps[0].avma, 0x55d0c6a02000..0x55d0c6a07000);
        assert_eq!(maps[0].file_offset, 0x2000);
        assert_eq!(
            maps[0].key,
            ObjectKey::File {
                dev: "fd:01".into(),
                inode: 1234
            }
        );
        assert_eq!(maps[1].path, "/tmp/with space/lib.so");
        assert!(maps[1].deleted);
        assert_eq!(maps[2].key, ObjectKey::Vdso);
        let named = "7f0000003000-7f0000004000 r-xp 00000000 00:00 0  [anon:jit]\n";
        assert_eq!(
            parse_anonymous_code(&format!("{text}{named}")),
            vec![
                0x7f00_0000_0000..0x7f00_0000_1000,
                0x7f00_0000_3000..0x7f00_0000_4000
            ]
        );
    }

    fn object_with(loads: Vec<LoadSegment>) -> ParsedObject {
        ParsedObject {
            loads,
            ..Default::default()
        }
    }

    #[test]
    fn bias_for_pie_and_non_pie() {
        // PIE: text segment at vaddr 0x2040 / offset 0x2040, mapped from
        // file offset 0x2000 at 0x5555_5555_6000.
        let pie = object_with(vec![
            LoadSegment {
                vaddr: 0,
                offset: 0,
                filesz: 0x1000,
                executable: false,
            },
            LoadSegment {
                vaddr: 0x2040,
                offset: 0x2040,
                filesz: 0x5000,
                executable: true,
            },
        ]);
        assert_eq!(pie.bias(0x5555_5555_6000, 0x2000), Some(0x5555_5555_4000));
        // Non-PIE: vaddr 0x401000 at offset 0x1000, mapped where stated.
        let exe = object_with(vec![LoadSegment {
            vaddr: 0x401000,
            offset: 0x1000,
            filesz: 0x3000,
            executable: true,
        }]);
        assert_eq!(exe.bias(0x401000, 0x1000), Some(0));
        // A mapping of a file offset no segment holds is not this object.
        assert_eq!(exe.bias(0x401000, 0x9000), None);
    }

    #[test]
    fn own_executable_and_vdso_parse() {
        let pid = std::process::id() as i32;
        let maps = read_code_mappings(pid);
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let own = maps
            .iter()
            .find(|m| m.path == exe.to_str().unwrap())
            .expect("own executable mapping");
        let parsed = load_object(pid, own).expect("own executable parses");
        assert!(parsed.eh_frame.is_some() && parsed.eh_frame_hdr.is_some());
        let bias = parsed.bias(own.avma.start, own.file_offset).unwrap();
        // This function's address, minus the bias, lies in the stated .text.
        let here = own_executable_and_vdso_parse as *const () as u64;
        assert!(parsed.text_svma.unwrap().contains(&(here - bias)));
        if let Some(vdso) = maps.iter().find(|m| m.key == ObjectKey::Vdso) {
            let parsed = load_object(pid, vdso).expect("vdso parses");
            assert!(parsed.has_unwind_info());
        }
    }

    #[test]
    fn device_numbers_print_like_proc_maps() {
        // makedev(0xfd, 1) and makedev(259, 2)
        assert_eq!(dev_text(0xfd01), "fd:01");
        assert_eq!(dev_text((259 & 0xfff) << 8 | 2), "103:02");
    }

    /// A path that names another file than the mapped one (a library
    /// replaced on disk, another file at the same path in the process's
    /// root) is not opened: the unwinder would read the wrong unwind
    /// tables, the symbolizer the wrong names.
    #[test]
    fn a_file_at_the_path_with_another_inode_is_not_the_mapped_one() {
        let pid = std::process::id() as i32;
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let meta = std::fs::metadata(&exe).unwrap();
        // Addresses no mapping has, so map_files cannot answer and the
        // path is what is tried.
        let mapping = |inode: u64| CodeMapping {
            avma: 0x1000..0x2000,
            file_offset: 0,
            key: ObjectKey::File {
                dev: dev_text(meta.dev()),
                inode,
            },
            path: exe.to_str().unwrap().to_string(),
            deleted: false,
        };
        let same = open_mapped_file(pid, &mapping(meta.ino())).expect("the mapped file opens");
        assert_eq!(same.metadata().unwrap().ino(), meta.ino());
        assert!(open_mapped_file(pid, &mapping(meta.ino() + 1)).is_none());
        assert!(load_object(pid, &mapping(meta.ino() + 1)).is_none());
        let deleted = CodeMapping {
            deleted: true,
            ..mapping(meta.ino())
        };
        assert!(open_mapped_file(pid, &deleted).is_none());
    }

    #[test]
    fn garbage_is_not_an_object() {
        assert!(parse_object(&b"\x7fELF garbage"[..]).is_none());
        assert!(parse_object(&[0u8; 0][..]).is_none());
        let mut truncated = std::fs::read("/proc/self/exe").unwrap();
        truncated.truncate(200);
        assert!(parse_object(&truncated[..]).is_none());
    }
}
