//! Functions by name in a process's loaded objects, for breakpoints: each
//! object's symbol tables (`.symtab`, else `.dynsym`) read with `object`,
//! names demangled (C++ with cpp_demangle, Rust with rustc-demangle), and a
//! match turned into what a uprobe needs (the file and the offset in it)
//! and what a user wants to see (the address in the process).
//!
//! A name matches a pattern when it is the pattern, or, demangled, is the
//! pattern with its arguments left off (`Widget::open(int)` for
//! `Widget::open`), or ends with `::pattern` (a Rust path or a C++ method
//! named without its namespaces).

use std::collections::BTreeSet;
use std::path::PathBuf;

use object::{Object, ObjectSymbol, SymbolKind};

use crate::modules::{self, CodeMapping};

/// One function a pattern matched, as loaded in the process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionSite {
    /// Its demangled name.
    pub name: String,
    /// The object's path as the process sees it, and a path fdbg can open
    /// it by (for the kernel's uprobe: `/proc/PID/map_files/...` is not
    /// accepted there, so the process's root-relative path).
    pub module: String,
    pub probe_path: PathBuf,
    /// The offset of its first instruction in the file.
    pub file_offset: u64,
    /// Its address in the process.
    pub address: u64,
}

/// The demangled form of a symbol name (the name itself when it is not
/// mangled); Rust names without their hash.
pub fn demangle(name: &str) -> String {
    if let Ok(rust) = rustc_demangle::try_demangle(name) {
        return format!("{rust:#}");
    }
    if name.starts_with("_Z")
        && let Ok(symbol) = cpp_demangle::Symbol::new(name)
        && let Ok(text) = symbol.demangle()
    {
        return text;
    }
    name.to_string()
}

/// Whether demangled `name` is what `pattern` asks for.
pub fn matches(name: &str, pattern: &str) -> bool {
    let without_args = match name.find('(') {
        Some(open) => &name[..open],
        None => name,
    };
    name == pattern
        || without_args == pattern
        || without_args
            .strip_suffix(pattern)
            .is_some_and(|head| head.ends_with("::"))
}

/// `FILE:LINE` as a source line: a file name (with a dot or a slash) and a
/// line number.
pub fn source_line(pattern: &str) -> Option<(&str, u64)> {
    let (file, line) = pattern.rsplit_once(':')?;
    let line = line.parse().ok()?;
    (file.contains('.') || file.contains('/')).then_some((file, line))
}

/// Every function matching `pattern` (or, for `FILE:LINE`, the first
/// address of that line in each function that has it) in the objects
/// process `pid` has mapped executable now, each once.
pub fn find(pid: i32, pattern: &str) -> Vec<FunctionSite> {
    let mappings = modules::read_code_mappings(pid);
    let mut seen_files = BTreeSet::new();
    let mut found = Vec::new();
    for mapping in &mappings {
        if mapping.path.starts_with('[') || !seen_files.insert(mapping.path.clone()) {
            continue;
        }
        let of_file: Vec<&CodeMapping> =
            mappings.iter().filter(|m| m.path == mapping.path).collect();
        found.extend(find_in(pid, &of_file, pattern));
    }
    found
}

/// The path the kernel can open object `path` of process `pid` by: through
/// the process's root (`/proc/PID/map_files/...` is not accepted for a
/// uprobe).
fn probe_path(pid: i32, path: &str) -> PathBuf {
    PathBuf::from(format!(
        "{}{}",
        crate::procfs::process_dir(pid).join("root").display(),
        path
    ))
}

/// The code at `address` in process `pid`, as a probe site (no name).
pub fn site_at(pid: i32, address: u64) -> Option<FunctionSite> {
    let mapping = modules::read_code_mappings(pid)
        .into_iter()
        .find(|m| m.avma.contains(&address) && !m.path.starts_with('['))?;
    Some(FunctionSite {
        name: format!("{:#x}", address),
        probe_path: probe_path(pid, &mapping.path),
        module: mapping.path.clone(),
        file_offset: mapping.file_offset + (address - mapping.avma.start),
        address,
    })
}

fn find_in(pid: i32, mappings: &[&CodeMapping], pattern: &str) -> Vec<FunctionSite> {
    let Some(file) = modules::open_mapped_file(pid, mappings[0]) else {
        return Vec::new();
    };
    let data = object::ReadCache::new(file);
    let Ok(elf) = object::read::elf::ElfFile64::<object::Endianness, _>::parse(&data) else {
        return Vec::new();
    };
    let loads = modules::load_segments(&elf);
    let probe_path = probe_path(pid, &mappings[0].path);
    let site_of = |name: String, file_offset: u64| {
        let mapping = mappings.iter().find(|m| {
            m.file_offset <= file_offset && file_offset - m.file_offset < m.avma.end - m.avma.start
        })?;
        Some(FunctionSite {
            name,
            module: mapping.path.clone(),
            probe_path: probe_path.clone(),
            file_offset,
            address: mapping.avma.start + (file_offset - mapping.file_offset),
        })
    };
    if let Some((file, line)) = source_line(pattern) {
        return super::object::line_addresses(&elf, file, line)
            .into_iter()
            .filter_map(|svma| {
                let offset = modules::file_offset_of(&loads, svma)?;
                site_of(pattern.to_string(), offset)
            })
            .collect();
    }
    let symbols: Vec<_> = if elf.symbols().next().is_some() {
        elf.symbols().collect()
    } else {
        elf.dynamic_symbols().collect()
    };
    let mut offsets = BTreeSet::new();
    let mut found = Vec::new();
    for symbol in symbols {
        if symbol.kind() != SymbolKind::Text || !symbol.is_definition() {
            continue;
        }
        let Ok(raw) = symbol.name() else { continue };
        let name = demangle(raw);
        if !matches(&name, pattern) {
            continue;
        }
        let Some(file_offset) = modules::file_offset_of(&loads, symbol.address()) else {
            continue;
        };
        if !offsets.insert(file_offset) {
            continue;
        }
        found.extend(site_of(name, file_offset));
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_whole_without_arguments_or_by_their_last_components() {
        assert!(matches("on_login", "on_login"));
        assert!(!matches("on_login_again", "on_login"));
        assert!(matches("Widget::open_config(int)", "Widget::open_config"));
        assert!(matches("Widget::open_config(int)", "open_config"));
        assert!(matches("fdbg::demo::on_login", "on_login"));
        assert!(matches("fdbg::demo::on_login", "demo::on_login"));
        assert!(!matches("fdbg::demo::on_login", "mo::on_login"));
        assert_eq!(
            demangle("_ZN6Widget11open_configEi"),
            "Widget::open_config(int)"
        );
        assert_eq!(demangle("on_login"), "on_login");
    }
}
