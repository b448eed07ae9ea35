//! One object file's names: its DWARF (or a separate debug file's) and its
//! symbol table, parsed once and kept, answering "what is at this SVMA".
//!
//! Reads only what it needs through `object::ReadCache` (debug sections,
//! symbols, program headers), so a large binary is not copied whole. Trusts
//! nothing it reads: a corrupt ELF is `None`, corrupt or truncated DWARF
//! falls back to the symbol table, and that to nothing — never a panic.

use std::borrow::Cow;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::modules::{LoadSegment, load_segments, svma_of};
use gimli::{EndianArcSlice, RunTimeEndian};
use object::read::elf::ElfFile64;
use object::{Endianness, Object, ObjectSection, ObjectSymbol, ReadCache, ReadRef, SymbolKind};

type Reader = EndianArcSlice<RunTimeEndian>;

/// Where distributions install separate debug files.
pub const DEBUG_DIR: &str = "/usr/lib/debug";

/// What one address is, at one inline level.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Located {
    /// Demangled.
    pub function: Option<String>,
    /// Set when the name came from the symbol table: the address's offset
    /// from the symbol's start.
    pub function_offset: Option<u64>,
    /// Absolute when the DWARF gives a compilation directory.
    pub file: Option<String>,
    pub line: Option<u32>,
    /// An inlined call: the next level (outer) is where it was inlined.
    pub inlined: bool,
}

#[derive(Clone, Debug)]
struct Symbol {
    address: u64,
    size: u64,
    name: String,
}

/// The parsed names of one object file.
pub struct ObjectSymbols {
    loads: Vec<LoadSegment>,
    pub build_id: Option<Vec<u8>>,
    dwarf: Option<addr2line::Context<Reader>>,
    /// Function symbols sorted by address.
    symbols: Vec<Symbol>,
    /// The separate debug file that supplied DWARF or symbols, if one did.
    pub debug_file: Option<PathBuf>,
}

impl std::fmt::Debug for ObjectSymbols {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectSymbols")
            .field("build_id", &self.build_id.as_deref().map(hex))
            .field("dwarf", &self.dwarf.is_some())
            .field("symbols", &self.symbols.len())
            .field("debug_file", &self.debug_file)
            .finish()
    }
}

/// How to find separate debug files for one object.
pub struct DebugSearch<'a> {
    /// The object's path as the process sees it (its directory is searched
    /// for `.gnu_debuglink` names).
    pub object_path: &'a str,
    /// `/proc/PID/root` while the process is alive; searched before `/`,
    /// so that processes in containers find their own debug files.
    pub root: Option<PathBuf>,
    /// The global debug directory: [`DEBUG_DIR`] (another one in tests).
    pub debug_dir: PathBuf,
    /// A supplementary (dwz) file fetched from debuginfod, taken when the
    /// one a debug file names is not on disk and its build-id matches.
    pub alt_file: Option<PathBuf>,
}

impl DebugSearch<'_> {
    /// `path` (absolute) under the process's root, then on the host.
    fn rooted(&self, path: &Path) -> Vec<PathBuf> {
        let relative = path.strip_prefix("/").unwrap_or(path);
        let mut out: Vec<PathBuf> = self.root.iter().map(|r| r.join(relative)).collect();
        out.push(path.to_path_buf());
        out
    }

    fn build_id_candidates(&self, build_id: &[u8]) -> Vec<PathBuf> {
        if build_id.len() < 2 {
            return Vec::new();
        }
        let hex = hex(build_id);
        let path = self
            .debug_dir
            .join(".build-id")
            .join(&hex[..2])
            .join(format!("{}.debug", &hex[2..]));
        self.rooted(&path)
    }

    /// gdb's order: the object's directory, its `.debug/`, and the same
    /// directory under `/usr/lib/debug`.
    fn debuglink_candidates(&self, name: &str) -> Vec<PathBuf> {
        if name.is_empty() || name.contains('/') {
            return Vec::new();
        }
        let dir = Path::new(self.object_path)
            .parent()
            .unwrap_or(Path::new("/"));
        let under_debug = self.debug_dir.join(dir.strip_prefix("/").unwrap_or(dir));
        [
            dir.join(name),
            dir.join(".debug").join(name),
            under_debug.join(name),
        ]
        .iter()
        .flat_map(|p| self.rooted(p))
        .collect()
    }
}

impl ObjectSymbols {
    /// Parses the object open in `file`. `None` if it is not a 64-bit ELF
    /// with loadable segments; everything past that is best effort.
    pub fn load(file: File, search: &DebugSearch) -> Option<ObjectSymbols> {
        let cache = ReadCache::new(file);
        Self::parse(&cache, search)
    }

    /// As `load`, from any readable data (bytes in tests, the vDSO).
    pub fn parse<'data, R: ReadRef<'data>>(data: R, search: &DebugSearch) -> Option<ObjectSymbols> {
        let elf = ElfFile64::<Endianness, R>::parse(data).ok()?;
        let loads = load_segments(&elf);
        if loads.is_empty() {
            return None;
        }
        let build_id = elf.build_id().ok().flatten().map(<[u8]>::to_vec);
        let mut parsed = ObjectSymbols {
            loads,
            dwarf: load_dwarf(&elf, search),
            symbols: function_symbols(&elf),
            debug_file: None,
            build_id,
        };
        if (parsed.dwarf.is_none() || parsed.symbols.is_empty())
            && let Some((path, file)) = find_debug_file(&elf, parsed.build_id.as_deref(), search)
        {
            parsed.adopt(path, file, search);
        }
        Some(parsed)
    }

    /// These names with a separate debug file's (fetched from debuginfod):
    /// its DWARF, and its symbol table if larger. `None` if it gives no
    /// DWARF.
    pub fn with_debug_file(&self, path: &Path, search: &DebugSearch) -> Option<ObjectSymbols> {
        let mut parsed = ObjectSymbols {
            loads: self.loads.clone(),
            build_id: self.build_id.clone(),
            dwarf: None,
            symbols: self.symbols.clone(),
            debug_file: None,
        };
        parsed.adopt(path.to_path_buf(), File::open(path).ok()?, search);
        parsed.dwarf.is_some().then_some(parsed)
    }

    /// Takes what the debug file open in `file` adds: its DWARF where the
    /// object has none, its symbol table when larger.
    fn adopt(&mut self, path: PathBuf, file: File, search: &DebugSearch) {
        let cache = ReadCache::new(file);
        let Ok(debug) = ElfFile64::<Endianness, _>::parse(&cache) else {
            return;
        };
        let debug_search = DebugSearch {
            object_path: path.to_str().unwrap_or(search.object_path),
            root: search.root.clone(),
            debug_dir: search.debug_dir.clone(),
            alt_file: search.alt_file.clone(),
        };
        if self.dwarf.is_none() {
            self.dwarf = load_dwarf(&debug, &debug_search);
        }
        // A debug file's .symtab is the full one: prefer it.
        let debug_symbols = function_symbols(&debug);
        if debug_symbols.len() > self.symbols.len() {
            self.symbols = debug_symbols;
        }
        self.debug_file = Some(path);
    }

    pub fn has_dwarf(&self) -> bool {
        self.dwarf.is_some()
    }

    /// The SVMA of the byte at `file_offset` in the file, through the
    /// `PT_LOAD` that maps it.
    pub fn svma(&self, file_offset: u64) -> Option<u64> {
        svma_of(&self.loads, file_offset)
    }

    /// What is at `svma`, innermost inline level first; the last entry is
    /// the function the code belongs to. Empty when nothing is known.
    pub fn lookup(&self, svma: u64) -> Vec<Located> {
        let mut out = self.dwarf_frames(svma);
        let outermost_named = out.last().is_some_and(|l| l.function.is_some());
        if !outermost_named && let Some((symbol, offset)) = self.symbol_at(svma) {
            let name = addr2line::demangle_auto(Cow::from(symbol.name.as_str()), None);
            let named = Located {
                function: Some(name.into_owned()),
                function_offset: Some(offset),
                ..Located::default()
            };
            match out.last_mut() {
                // DWARF knew the line but not the function (assembly).
                Some(last) => {
                    last.function = named.function;
                    last.function_offset = named.function_offset;
                }
                None => out.push(named),
            }
        }
        out
    }

    fn dwarf_frames(&self, svma: u64) -> Vec<Located> {
        let Some(context) = &self.dwarf else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let Ok(mut frames) = context.find_frames(svma).skip_all_loads() else {
            return out;
        };
        // A bounded walk: corrupt DWARF cannot make this loop forever.
        while let Ok(Some(frame)) = frames.next() {
            let function = frame
                .function
                .as_ref()
                .and_then(|f| f.demangle().ok())
                .map(Cow::into_owned);
            let (file, line) = match &frame.location {
                Some(location) => (location.file.map(str::to_string), location.line),
                None => (None, None),
            };
            out.push(Located {
                function,
                function_offset: None,
                file,
                line,
                inlined: true,
            });
            if out.len() >= 64 {
                break;
            }
        }
        if let Some(last) = out.last_mut() {
            last.inlined = false;
        }
        out
    }

    /// The function symbol containing `svma` and the offset into it. A
    /// symbol with a size only covers that size; one without (assembly)
    /// covers up to the next symbol.
    fn symbol_at(&self, svma: u64) -> Option<(&Symbol, u64)> {
        let index = self.symbols.partition_point(|s| s.address <= svma);
        let symbol = self.symbols[..index]
            .iter()
            .rev()
            .take(8) // aliases and nested sizes at the same spot
            .find(|s| s.size == 0 || svma < s.address.saturating_add(s.size))?;
        Some((symbol, svma - symbol.address))
    }
}

/// The build-id of the ELF object open in `file`, read without parsing more.
pub fn build_id(file: &File) -> Option<Vec<u8>> {
    let cache = ReadCache::new(file.try_clone().ok()?);
    let elf = ElfFile64::<Endianness, _>::parse(&cache).ok()?;
    elf.build_id().ok().flatten().map(<[u8]>::to_vec)
}

/// The defined function symbols of `elf`: `.symtab`, or `.dynsym` when the
/// object is stripped.
fn function_symbols<'data, R: ReadRef<'data>>(
    elf: &ElfFile64<'data, Endianness, R>,
) -> Vec<Symbol> {
    let collect = |symbols: &mut dyn Iterator<
        Item = object::read::elf::ElfSymbol64<'data, '_, Endianness, R>,
    >| {
        symbols
            .filter(|s| s.kind() == SymbolKind::Text && s.is_definition() && s.address() != 0)
            .filter_map(|s| {
                let name = s.name().ok()?;
                (!name.is_empty()).then(|| Symbol {
                    address: s.address(),
                    size: s.size(),
                    name: name.to_string(),
                })
            })
            .collect::<Vec<_>>()
    };
    let mut symbols = collect(&mut elf.symbols());
    if symbols.is_empty() {
        symbols = collect(&mut elf.dynamic_symbols());
    }
    // Sized symbols first among equals, so `symbol_at` prefers them.
    symbols.sort_by(|a, b| a.address.cmp(&b.address).then(a.size.cmp(&b.size)));
    symbols
}

/// The object's own DWARF, with a dwz supplementary file if it names one.
/// `None` without `.debug_info` or when it does not parse.
fn load_dwarf<'data, R: ReadRef<'data>>(
    elf: &ElfFile64<'data, Endianness, R>,
    search: &DebugSearch,
) -> Option<addr2line::Context<Reader>> {
    let info = elf.section_by_name(".debug_info")?;
    if info.size() == 0 {
        return None;
    }
    let mut dwarf = dwarf_sections(elf)?;
    if let Ok(Some((path, build_id))) = elf.gnu_debugaltlink()
        && let Some(sup) = find_sup_file(path, build_id, search)
    {
        let cache = ReadCache::new(sup);
        if let Ok(sup_elf) = ElfFile64::<Endianness, _>::parse(&cache)
            && let Some(sup_dwarf) = dwarf_sections(&sup_elf)
        {
            dwarf.set_sup(sup_dwarf);
        }
    }
    addr2line::Context::from_dwarf(dwarf).ok()
}

fn dwarf_sections<'data, R: ReadRef<'data>>(
    elf: &ElfFile64<'data, Endianness, R>,
) -> Option<gimli::Dwarf<Reader>> {
    let endian = if elf.is_little_endian() {
        RunTimeEndian::Little
    } else {
        RunTimeEndian::Big
    };
    gimli::Dwarf::load(|id| -> Result<Reader, ()> {
        let data = elf
            .section_by_name(id.name())
            .and_then(|s| s.uncompressed_data().ok())
            .unwrap_or(Cow::Borrowed(&[]));
        Ok(EndianArcSlice::new(Arc::from(&*data), endian))
    })
    .ok()
}

/// The first address (SVMA) of source line `line` of a file whose path is
/// `file` or ends with `/file`, in each line-table sequence of the
/// object's own DWARF that has it: the line in each function (inlined
/// copies included), not every instruction of it.
pub fn line_addresses<'data, R: ReadRef<'data>>(
    elf: &ElfFile64<'data, Endianness, R>,
    file: &str,
    line: u64,
) -> Vec<u64> {
    let Some(dwarf) = dwarf_sections(elf) else {
        return Vec::new();
    };
    let path_matches = |path: &str| path == file || path.ends_with(&format!("/{file}"));
    let mut found = Vec::new();
    let mut units = dwarf.units();
    while let Ok(Some(header)) = units.next() {
        let Ok(unit) = dwarf.unit(header) else {
            continue;
        };
        let Some(program) = unit.line_program.clone() else {
            continue;
        };
        let mut rows = program.rows();
        let mut first_in_sequence: Option<u64> = None;
        while let Ok(Some((header, row))) = rows.next_row() {
            if row.end_sequence() {
                found.extend(first_in_sequence.take());
                continue;
            }
            if !row.is_stmt() || row.line().map(|l| l.get()) != Some(line) {
                continue;
            }
            let Some(entry) = row.file(header) else {
                continue;
            };
            let text = |value: gimli::AttributeValue<Reader>| {
                use gimli::Reader as _;
                dwarf
                    .attr_string(&unit, value)
                    .ok()
                    .and_then(|s| s.to_string_lossy().ok().map(|c| c.into_owned()))
                    .unwrap_or_default()
            };
            let name = text(entry.path_name());
            let directory = entry.directory(header).map(text).unwrap_or_default();
            let full = format!("{directory}/{name}");
            if path_matches(&name) || path_matches(&full) {
                let address = row.address();
                first_in_sequence = Some(first_in_sequence.map_or(address, |a| a.min(address)));
            }
        }
    }
    found.sort_unstable();
    found.dedup();
    found
}

/// A separate debug file for `elf`: by build-id, then by `.gnu_debuglink`.
/// A candidate is taken only if its build-id matches, or (without build-ids)
/// its CRC matches the debuglink's.
fn find_debug_file<'data, R: ReadRef<'data>>(
    elf: &ElfFile64<'data, Endianness, R>,
    build_id: Option<&[u8]>,
    search: &DebugSearch,
) -> Option<(PathBuf, File)> {
    if let Some(id) = build_id {
        for path in search.build_id_candidates(id) {
            if let Some(file) = open_matching(&path, Some(id), None) {
                return Some((path, file));
            }
        }
    }
    let (name, crc) = elf.gnu_debuglink().ok().flatten()?;
    let name = std::str::from_utf8(name).ok()?;
    for path in search.debuglink_candidates(name) {
        if path == Path::new(search.object_path) {
            continue;
        }
        if let Some(file) = open_matching(&path, build_id, Some(crc)) {
            return Some((path, file));
        }
    }
    None
}

/// The dwz file named by `.gnu_debugaltlink`: absolute, or relative to the
/// debug file's directory.
fn find_sup_file(path: &[u8], build_id: &[u8], search: &DebugSearch) -> Option<File> {
    let path = Path::new(std::str::from_utf8(path).ok()?);
    let path = if path.is_absolute() {
        path.to_path_buf()
    } else {
        Path::new(search.object_path)
            .parent()
            .unwrap_or(Path::new("/"))
            .join(path)
    };
    let candidates = match &search.root {
        // `object_path` of a debug file already carries the root.
        Some(root) if !path.starts_with(root) => search.rooted(&path),
        _ => vec![path],
    };
    candidates
        .iter()
        .chain(&search.alt_file)
        .find_map(|p| open_matching(p, Some(build_id), None))
}

/// The build-id of the supplementary (dwz) file that the debug file at
/// `path` names, when that file is not on disk.
pub fn missing_sup_file(path: &Path, search: &DebugSearch) -> Option<Vec<u8>> {
    let cache = ReadCache::new(File::open(path).ok()?);
    let elf = ElfFile64::<Endianness, _>::parse(&cache).ok()?;
    let (sup_path, build_id) = elf.gnu_debugaltlink().ok().flatten()?;
    let search = DebugSearch {
        object_path: path.to_str()?,
        root: search.root.clone(),
        debug_dir: search.debug_dir.clone(),
        alt_file: None,
    };
    find_sup_file(sup_path, build_id, &search)
        .is_none()
        .then(|| build_id.to_vec())
}

/// Opens `path` if it is the debug file wanted: same build-id when both
/// have one, else the same CRC-32 when one is given.
fn open_matching(path: &Path, build_id: Option<&[u8]>, crc: Option<u32>) -> Option<File> {
    let mut file = File::open(path).ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    match (build_id, self::build_id(&file), crc) {
        (Some(ours), Some(theirs), _) => (ours == theirs.as_slice()).then_some(file),
        (_, _, Some(crc)) => (crc32(&mut file)? == crc).then_some(file),
        _ => None,
    }
}

/// The CRC-32 (IEEE, as `.gnu_debuglink` uses) of a whole file.
fn crc32(file: &mut File) -> Option<u32> {
    use std::io::Seek;
    file.rewind().ok()?;
    let mut crc = !0u32;
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buffer).ok()?;
        if n == 0 {
            break;
        }
        for &byte in &buffer[..n] {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
            }
        }
    }
    file.rewind().ok()?;
    Some(!crc)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_reference_value() {
        let path = std::env::temp_dir().join(format!("fdbg-crc-{}", std::process::id()));
        std::fs::write(&path, b"123456789").unwrap();
        let crc = crc32(&mut File::open(&path).unwrap());
        std::fs::remove_file(&path).unwrap();
        assert_eq!(crc, Some(0xCBF4_3926));
    }

    #[test]
    fn debuglink_candidates_follow_gdb_order() {
        let search = DebugSearch {
            object_path: "/usr/lib/x86_64-linux-gnu/libfoo.so.1",
            root: Some(PathBuf::from("/proc/42/root")),
            debug_dir: PathBuf::from(DEBUG_DIR),
            alt_file: None,
        };
        let found = search.debuglink_candidates("libfoo.debug");
        let want = [
            "/proc/42/root/usr/lib/x86_64-linux-gnu/libfoo.debug",
            "/usr/lib/x86_64-linux-gnu/libfoo.debug",
            "/proc/42/root/usr/lib/x86_64-linux-gnu/.debug/libfoo.debug",
            "/usr/lib/x86_64-linux-gnu/.debug/libfoo.debug",
            "/proc/42/root/usr/lib/debug/usr/lib/x86_64-linux-gnu/libfoo.debug",
            "/usr/lib/debug/usr/lib/x86_64-linux-gnu/libfoo.debug",
        ];
        assert_eq!(found, want.map(PathBuf::from));
        assert!(search.debuglink_candidates("../escape").is_empty());
        assert_eq!(
            search.build_id_candidates(&[0x93, 0xac, 0x61])[1],
            PathBuf::from("/usr/lib/debug/.build-id/93/ac61.debug")
        );
    }
}
