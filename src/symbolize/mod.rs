//! Turning a stack's raw addresses into frames that name function, file,
//! line and module, as every report shows them.
//!
//! Lazy and cached: nothing is read until `frames` is called (something is
//! shown or a `break site` must match). Each object file is parsed once,
//! keyed by (dev, inode) and shared by build-id; each (object, address) is
//! looked up once. Addresses are placed in the object mapped at them, from
//! `/proc/PID/maps`, and objects are opened through `/proc/PID/map_files`
//! (deleted files, containers) or `/proc/PID/root/PATH`. At a process's exit
//! (`remember`) its mappings are kept and every object not parsed yet is
//! opened, so its stacks still symbolize once `/proc/PID` is gone.
//!
//! Names come from, in order: the object's DWARF or a separate debug file's
//! (`/usr/lib/debug/.build-id/`, `.gnu_debuglink`), then `.symtab`/`.dynsym`
//! (function + offset), then nothing (`module+0xoffset`). An object
//! without DWARF on disk gets its debug file from the debuginfod servers of
//! `DEBUGINFOD_URLS` (`debuginfod.rs`), but only for a report
//! (`report_frames`): never while the process waits at a stop (`frames`,
//! for `break site` and the ticks of `continue --every`), where the object
//! keeps its symbol-table names until a report asks. What the client had
//! to say (a server down, a bad download) waits in `take_notes` for the
//! front end.
//! An address in no object (JIT code) is named from the process's perf map
//! (`perfmap`: Node.js, a JVM, Python 3.12+), its frame flagged `jit`;
//! where there is none, the process is noted for `take_unnamed_jit`, a
//! fact the front end words as a hint.
//!
//! frames[0] is the user's code: the leading frames inside a runtime
//! (libc's syscall wrapper and whatever libc, ld.so, libstdc++, Rust's
//! std, Go's runtime or Node's libuv, V8 and own JavaScript ran before the
//! syscall; one table, `RUNTIMES`) are moved after the others, in their own
//! order, flagged `wrapper: true`; the text shows them after a marker.
//! Stacks that differ only inside JIT code share a `jit_site_key`, by which
//! the front end makes them one site.
//! Bad input — a corrupt ELF, truncated DWARF — gives fewer names, never a
//! panic.

pub mod debuginfod;
pub mod functions;
pub(crate) mod object;
pub mod perfmap;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

use serde::Serialize;

pub use self::object::{DebugSearch, Located, ObjectSymbols};
use self::perfmap::PerfMap;
use crate::modules::{self, CodeMapping, ObjectKey, read_code_mappings};
use crate::stacks::Stack;
use crate::vocab::Pid;

/// One frame of a shown stack, as text and JSON show it. One address gives one frame per
/// inline level, innermost first; all but the last of them are `inlined`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Frame {
    /// The code address in the process, hex (for return addresses, the
    /// return address itself; it is looked up at `address - 1`).
    pub address: String,
    /// The object's path as the process maps it.
    pub module: Option<String>,
    /// Demangled (C++ and Rust).
    pub function: Option<String>,
    /// When the name came from the symbol table rather than DWARF: the
    /// address's offset into that symbol (`open64+0x1b`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function_offset: Option<u64>,
    pub file: Option<String>,
    pub line: Option<u32>,
    pub inlined: bool,
    /// Inside the library call that made the syscall (libc's wrapper and
    /// what it called): moved after the user's frames, so that frames[0]
    /// is the user's code. In stack order among themselves.
    pub wrapper: bool,
    /// JIT code named by the process's perf map (`module` is the map).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub jit: bool,
    /// Offset into the module's file, for `module+0xoffset`.
    #[serde(skip)]
    pub offset: Option<u64>,
}

/// A parsed object, or the fact that it could not be read or parsed.
type Parsed = Option<Rc<ObjectSymbols>>;

#[derive(Default)]
pub struct Symbolizer {
    /// Executable mappings by (process, address-space generation): a
    /// process's generation goes up at each exec (see `Stack::generation`);
    /// the mappings of earlier generations are kept for their stacks.
    maps: HashMap<(Pid, u32), Vec<CodeMapping>>,
    /// The current generation of each process.
    generation: HashMap<Pid, u32>,
    /// Objects opened at a process's exit and not parsed yet.
    kept_open: HashMap<ObjectKey, (File, String)>,
    objects: HashMap<ObjectKey, Parsed>,
    by_build_id: HashMap<Vec<u8>, Rc<ObjectSymbols>>,
    /// (object, SVMA looked up) → what is there. Objects are told apart by
    /// their `Arc` address, stable while `objects` holds them.
    lookups: HashMap<(usize, u64), Arc<[Located]>>,
    objects_parsed: usize,
    addresses_looked_up: usize,
    /// The debuginfod client, when `DEBUGINFOD_URLS` names servers.
    debuginfod: Option<debuginfod::Client>,
    /// Build-ids whose debug file debuginfod was asked for.
    fetched: HashSet<Vec<u8>>,
    /// Each process's perf map, once looked for (`None`: none found yet).
    perf_maps: HashMap<Pid, Option<PerfMap>>,
    /// Processes whose shown stacks run code that no perf map names, not
    /// yet taken by `take_unnamed_jit`.
    unnamed_jit: BTreeMap<Pid, UnnamedJit>,
    /// Processes `take_unnamed_jit` gave already (said once a session).
    unnamed_jit_told: HashSet<Pid>,
}

impl Symbolizer {
    /// A symbolizer with the debuginfod servers of the environment, if any.
    pub fn new() -> Symbolizer {
        Symbolizer {
            debuginfod: debuginfod::Settings::from_env().map(debuginfod::Client::new),
            ..Symbolizer::default()
        }
    }

    /// Replaces the debuginfod client (`None`: no debuginfod).
    pub fn set_debuginfod(&mut self, client: Option<debuginfod::Client>) {
        self.debuginfod = client;
    }

    pub fn debuginfod(&self) -> Option<&debuginfod::Client> {
        self.debuginfod.as_ref()
    }

    /// What the user should hear of since the last call (a debuginfod
    /// server down, a bad download), one line each.
    pub fn take_notes(&mut self) -> Vec<String> {
        self.debuginfod
            .as_mut()
            .map(debuginfod::Client::take_notes)
            .unwrap_or_default()
    }

    /// Objects parsed so far (each once, whatever the number of processes
    /// or stacks using it).
    pub fn objects_parsed(&self) -> usize {
        self.objects_parsed
    }

    /// Distinct (object, address) pairs looked up so far.
    pub fn addresses_looked_up(&self) -> usize {
        self.addresses_looked_up
    }

    /// Called at `pid`'s exit, while /proc/PID still exists: keeps its
    /// mappings and opens every object not parsed yet, so its stacks can be
    /// symbolized after it is gone. Opening is cheap; parsing stays lazy.
    pub fn remember(&mut self, pid: Pid) {
        let maps = read_code_mappings(pid);
        if maps.is_empty() {
            return;
        }
        for mapping in &maps {
            if self.objects.contains_key(&mapping.key) || self.kept_open.contains_key(&mapping.key)
            {
                continue;
            }
            if let Some(file) = modules::open_mapped_file(pid, mapping) {
                self.kept_open
                    .insert(mapping.key.clone(), (file, mapping.path.clone()));
            }
        }
        self.note_mappings(pid, &maps);
        // Read while /proc/PID/root still leads to it.
        let known = self.perf_maps.entry(pid).or_insert(None);
        if known.is_none() {
            *known = PerfMap::find(pid);
        }
        if let Some(map) = known {
            map.refresh();
        }
    }

    /// Keep these mappings (of the current generation of `pid`) for later:
    /// the tracer passes what the unwinder read at a stop, so a library
    /// unloaded later (dlclose) still names its frames.
    pub fn note_mappings(&mut self, pid: Pid, mappings: &[CodeMapping]) {
        let generation = self.generation.get(&pid).copied().unwrap_or(0);
        let known = self.maps.entry((pid, generation)).or_default();
        for mapping in mappings {
            if !known.contains(mapping) {
                known.push(mapping.clone());
            }
        }
    }

    /// `pid` exec'ed: a new address space begins; the old one's mappings
    /// stay for the stacks recorded in it.
    pub fn exec(&mut self, pid: Pid) {
        *self.generation.entry(pid).or_default() += 1;
        self.perf_maps.remove(&pid);
    }

    /// Processes found, since the last call, to run code that no perf map
    /// names, and why; each process once.
    pub fn take_unnamed_jit(&mut self) -> Vec<(Pid, UnnamedJit)> {
        let taken: Vec<(Pid, UnnamedJit)> = std::mem::take(&mut self.unnamed_jit)
            .into_iter()
            .filter(|(pid, _)| self.unnamed_jit_told.insert(*pid))
            .collect();
        taken
    }

    /// Notes, for `take_unnamed_jit`, whether `frames` of `pid` run
    /// JavaScript that V8's interpreter hides from the walk.
    fn note_interpreter(&mut self, pid: Pid, frames: &[Frame]) {
        let interpreted = || {
            frames
                .iter()
                .any(|f| f.function.as_deref() == Some(V8_INTERPRETER))
        };
        if self.unnamed_jit.contains_key(&pid)
            || self.unnamed_jit_told.contains(&pid)
            || !interpreted()
        {
            return;
        }
        let known = self.perf_maps.entry(pid).or_insert(None);
        if known.is_none() {
            *known = PerfMap::find(pid);
        }
        let gap = match known {
            None => UnnamedJit::NoPerfMap,
            // Functions of node's snapshot run in the interpreter itself
            // even with the flag: only a stack the map names nothing of
            // lacks it.
            Some(_) if !frames.iter().any(|f| f.jit) => UnnamedJit::InterpreterFrames,
            Some(_) => return,
        };
        self.unnamed_jit.insert(pid, gap);
    }

    /// The frame of JIT code at `probe`, from the perf map of `pid`. The
    /// map is looked for and read again at most once a stack (`refreshed`),
    /// when it does not name `probe`.
    fn jit_frame(&mut self, pid: Pid, probe: u64, refreshed: &mut bool) -> Option<Frame> {
        let known = self.perf_maps.entry(pid).or_insert(None);
        let named = match known.as_ref().and_then(|map| map.lookup(probe)) {
            Some(named) => Some(named),
            None if !*refreshed => {
                *refreshed = true;
                if known.is_none() {
                    *known = PerfMap::find(pid);
                }
                known.as_mut().and_then(|map| {
                    map.refresh();
                    map.lookup(probe)
                })
            }
            None => None,
        };
        let module = known.as_ref().map(|map| map.path().to_string());
        let Some(named) = named else {
            let known = self.unnamed_jit.contains_key(&pid) || self.unnamed_jit_told.contains(&pid);
            if module.is_none() && !known && in_anonymous_code(pid, probe) {
                self.unnamed_jit.insert(pid, UnnamedJit::NoPerfMap);
            }
            return None;
        };
        Some(Frame {
            module,
            function: Some(named.function),
            file: named.file,
            line: named.line,
            jit: true,
            ..Frame::default()
        })
    }

    /// The current address-space generation of `pid`.
    pub fn generation(&self, pid: Pid) -> u32 {
        self.generation.get(&pid).copied().unwrap_or(0)
    }

    fn mapping(&mut self, pid: Pid, generation: u32, address: u64) -> Option<CodeMapping> {
        let find =
            |maps: &Vec<CodeMapping>| maps.iter().find(|m| m.avma.contains(&address)).cloned();
        if let Some(found) = self.maps.get(&(pid, generation)).and_then(find) {
            return Some(found);
        }
        // Only the live address space can be read again.
        if generation != self.generation(pid) {
            return None;
        }
        let maps = read_code_mappings(pid);
        self.note_mappings(pid, &maps);
        self.maps.get(&(pid, generation)).and_then(find)
    }

    /// The parsed object behind `mapping`, parsing it on first use.
    fn object(&mut self, pid: Pid, mapping: &CodeMapping) -> Parsed {
        if let Some(parsed) = self.objects.get(&mapping.key) {
            return parsed.clone();
        }
        let parsed = self.parse_object(pid, mapping);
        self.objects.insert(mapping.key.clone(), parsed.clone());
        parsed
    }

    fn parse_object(&mut self, pid: Pid, mapping: &CodeMapping) -> Parsed {
        if mapping.key == ObjectKey::Vdso {
            // Not a file; syscalls that make fds do not go through it.
            return None;
        }
        let (file, path) = match self.kept_open.remove(&mapping.key) {
            Some(kept) => kept,
            None => (
                modules::open_mapped_file(pid, mapping)?,
                mapping.path.clone(),
            ),
        };
        let root = crate::procfs::process_dir(pid).join("root");
        let search = DebugSearch {
            object_path: &path,
            root: root.exists().then_some(root),
            debug_dir: PathBuf::from(object::DEBUG_DIR),
            alt_file: None,
        };
        // A copy of an object already parsed (another inode, same build):
        // share it.
        if let Some(same) = object::build_id(&file).and_then(|id| self.by_build_id.get(&id)) {
            return Some(same.clone());
        }
        let parsed = ObjectSymbols::load(file, &search)?;
        self.objects_parsed += 1;
        let parsed = Rc::new(parsed);
        if let Some(id) = &parsed.build_id {
            self.by_build_id.insert(id.clone(), parsed.clone());
        }
        Some(parsed)
    }

    /// What is at `probe` (an AVMA to look up) in `mapping`'s object.
    fn locate(&mut self, pid: Pid, mapping: &CodeMapping, probe: u64) -> Arc<[Located]> {
        let Some(object) = self.object(pid, mapping) else {
            return Arc::from([]);
        };
        let file_offset = probe - mapping.avma.start + mapping.file_offset;
        let Some(svma) = object.svma(file_offset) else {
            return Arc::from([]);
        };
        let key = (Rc::as_ptr(&object) as usize, svma);
        if let Some(found) = self.lookups.get(&key) {
            return found.clone();
        }
        self.addresses_looked_up += 1;
        let found: Arc<[Located]> = object.lookup(svma).into();
        self.lookups.insert(key, found.clone());
        found
    }

    /// As `frames`, for a report: objects of the stack without DWARF on
    /// disk are first given the debug file debuginfod has for them. May
    /// wait for the network: never at a stop.
    pub fn report_frames(&mut self, pid: Pid, stack: &Stack) -> Vec<Frame> {
        if self.debuginfod.is_some() {
            for (depth, &address) in stack.addresses.iter().enumerate() {
                let probe = if depth == 0 {
                    address
                } else {
                    address.saturating_sub(1)
                };
                if let Some(mapping) = self.mapping(pid, stack.generation, probe) {
                    self.fetch_debug_file(pid, &mapping);
                }
            }
        }
        self.frames(pid, stack)
    }

    /// Asks debuginfod, once per build-id, for the debug file of
    /// `mapping`'s object when it has no DWARF, and puts the object with
    /// that file's names in place of the one without.
    fn fetch_debug_file(&mut self, pid: Pid, mapping: &CodeMapping) {
        let Some(object) = self.object(pid, mapping) else {
            return;
        };
        let Some(build_id) = object.build_id.clone() else {
            return;
        };
        if object.has_dwarf() || !self.fetched.insert(build_id.clone()) {
            return;
        }
        let Some(client) = self.debuginfod.as_mut() else {
            return;
        };
        let Some(path) = client.debuginfo(&build_id) else {
            return;
        };
        let root = crate::procfs::process_dir(pid).join("root");
        let mut search = DebugSearch {
            object_path: &mapping.path,
            root: root.exists().then_some(root),
            debug_dir: PathBuf::from(object::DEBUG_DIR),
            alt_file: None,
        };
        if let Some(sup) = object::missing_sup_file(&path, &search) {
            search.alt_file = client.debuginfo(&sup);
        }
        let Some(named) = object.with_debug_file(&path, &search) else {
            return;
        };
        let named = Rc::new(named);
        for parsed in self.objects.values_mut() {
            if parsed.as_ref().is_some_and(|p| Rc::ptr_eq(p, &object)) {
                *parsed = Some(named.clone());
            }
        }
        self.by_build_id.insert(build_id, named);
        // The old object's lookups go with it (its address may be reused).
        let old = Rc::as_ptr(&object) as usize;
        self.lookups.retain(|(at, _), _| *at != old);
    }

    /// The frames of `stack`: the user's code first (see the module doc).
    /// Never waits for the network (see `report_frames`).
    pub fn frames(&mut self, pid: Pid, stack: &Stack) -> Vec<Frame> {
        let mut frames = Vec::with_capacity(stack.addresses.len());
        let mut perf_map_read = false;
        for (depth, &address) in stack.addresses.iter().enumerate() {
            // A return address points after the call: look up the call.
            let probe = if depth == 0 {
                address
            } else {
                address.saturating_sub(1)
            };
            let mapping = self.mapping(pid, stack.generation, probe);
            if mapping.is_none()
                && stack.generation == self.generation(pid)
                && let Some(jit) = self.jit_frame(pid, probe, &mut perf_map_read)
            {
                frames.push(Frame {
                    address: format!("{address:#x}"),
                    ..jit
                });
                continue;
            }
            let base = Frame {
                address: format!("{address:#x}"),
                module: mapping.as_ref().map(|m| m.path.clone()),
                offset: mapping
                    .as_ref()
                    .map(|m| address - m.avma.start + m.file_offset),
                ..Frame::default()
            };
            let located = match &mapping {
                Some(mapping) => self.locate(pid, mapping, probe),
                None => Arc::from([]),
            };
            if located.is_empty() {
                frames.push(base);
                continue;
            }
            for level in located.iter() {
                frames.push(Frame {
                    function: level.function.clone(),
                    function_offset: level.function_offset,
                    file: level.file.clone(),
                    line: level.line,
                    inlined: level.inlined,
                    ..base.clone()
                });
            }
        }
        self.note_interpreter(pid, &frames);
        user_code_first(frames)
    }
}

/// Why a process's stacks run code that no perf map names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnnamedJit {
    /// JIT code or V8's interpreter, and no perf map.
    NoPerfMap,
    /// A perf map, but a stack of JavaScript run by V8's interpreter and
    /// nothing the map names: the frames are the interpreter's own (V8's
    /// `--interpreted-frames-native-stack` gives each function its copy
    /// of it, in the map).
    InterpreterFrames,
}

/// V8's interpreter: a frame of it is a JavaScript function's, unnamed.
const V8_INTERPRETER: &str = "Builtins_InterpreterEntryTrampoline";

/// Whether `address` is in anonymous executable memory of `pid` (JIT code).
fn in_anonymous_code(pid: Pid, address: u64) -> bool {
    modules::read_executable_maps(pid)
        .1
        .iter()
        .any(|code| code.contains(&address))
}

/// What a stack with JIT frames is grouped by, so that stacks that differ
/// only inside the JIT tier (a function's interpreted, baseline and
/// optimized code, and the runtime's frames between) make one site: its
/// frames outside the `RUNTIMES`, a JIT frame by function, file and line,
/// any other by address. `None` for a stack without JIT frames, whose
/// addresses are its identity.
pub fn jit_site_key(frames: &[Frame]) -> Option<String> {
    if !frames.iter().any(|frame| frame.jit) {
        return None;
    }
    let key: Vec<String> = frames
        .iter()
        .filter(|frame| !frame.wrapper && !is_runtime(frame))
        .map(|frame| match frame {
            Frame {
                jit: true,
                function,
                file,
                line,
                ..
            } => format!("{function:?} {file:?} {line:?}"),
            other => other.address.clone(),
        })
        .collect();
    Some(key.join("\n"))
}

/// One way a frame shows it belongs to a runtime between the user's code
/// and the kernel.
enum Runtime {
    /// The object's file name starts so.
    Library(&'static str),
    /// The source file's path contains this.
    Source(&'static str),
    /// The function's name starts so.
    Function(&'static str),
    /// The function's name is this.
    Symbol(&'static str),
    /// A Go function of the standard library (`runtime.`, `syscall.`,
    /// `internal/poll.`, `net.`, `os.` …): a Go name whose package path
    /// begins with an element without a dot, other than `main`, in Go
    /// source.
    GoStd,
}

/// The runtimes fdbg steps over to reach the user's frame: glibc (libc,
/// ld.so and friends), musl, libstdc++/libgcc; Rust's standard library
/// (DWARF paths under `/rustc/`) and a Rust dependency's wrapper around
/// the syscall (sources under cargo's registry or git checkouts, as with a
/// socket crate's `Socket::new`); Go's runtime and standard library (by
/// name, and sources under a GOROOT); libuv (a library, or built into
/// `node`), V8 and Node's own C++; in JIT code, Node's own JavaScript
/// (scripts `node:…`) and V8's builtins, stubs and handlers as its perf
/// map names them.
const RUNTIMES: &[Runtime] = &[
    Runtime::Library("libc.so"),
    Runtime::Library("libc-"),
    Runtime::Library("ld-linux"),
    Runtime::Library("ld-musl"),
    Runtime::Library("libpthread"),
    Runtime::Library("librt.so"),
    Runtime::Library("libdl.so"),
    Runtime::Library("libm.so"),
    Runtime::Library("libresolv"),
    Runtime::Library("libstdc++"),
    Runtime::Library("libgcc_s"),
    Runtime::Library("libuv.so"),
    Runtime::Library("libnode.so"),
    Runtime::Source("/rustc/"),
    Runtime::Source("/.cargo/registry/src/"),
    Runtime::Source("/.cargo/git/checkouts/"),
    Runtime::Source("/usr/lib/go/src/"),
    Runtime::Source("/usr/local/go/src/"),
    Runtime::Source("/deps/uv/src/"),
    Runtime::Source("node:"),
    Runtime::Function("uv_"),
    Runtime::Function("uv__"),
    Runtime::Function("v8::"),
    Runtime::Function("node::"),
    Runtime::Function("Builtins_"),
    Runtime::Function("Builtin:"),
    Runtime::Function("BytecodeHandler:"),
    Runtime::Function("Stub:"),
    Runtime::Function("Handler:"),
    Runtime::Function("RegExp:"),
    // The C runtime's entry, linked into every program: a stack that is
    // runtime up to it (Node's interpreted JS) keeps its innermost frame
    // first.
    Runtime::Symbol("_start"),
    Runtime::GoStd,
];

/// Whether a frame belongs to one of the `RUNTIMES`.
fn is_runtime(frame: &Frame) -> bool {
    let module = frame.module.as_deref().unwrap_or("");
    let object = module.rsplit('/').next().unwrap_or(module);
    let file = frame.file.as_deref().unwrap_or("");
    let function = frame.function.as_deref().unwrap_or("");
    RUNTIMES.iter().any(|runtime| match runtime {
        Runtime::Library(prefix) => object.starts_with(prefix),
        Runtime::Source(part) => file.contains(part) || goroot_source(file, part),
        Runtime::Function(prefix) => {
            // Also after a C++ return type (`void node::TCPWrap::Bind<…>`).
            function.starts_with(prefix)
                || function.contains("::")
                    && function
                        .split_once(' ')
                        .is_some_and(|(_, name)| name.starts_with(prefix))
        }
        Runtime::Symbol(name) => function == *name,
        // Only in Go source: GCC's `f.cold` and `f.part.0` are C.
        Runtime::GoStd => (file.ends_with(".go") || file.ends_with(".s")) && is_go_std(function),
    })
}

/// A versioned GOROOT (`/usr/lib/go-1.19/src/`) for the rule `/usr/lib/go/src/`.
fn goroot_source(file: &str, part: &str) -> bool {
    part == "/usr/lib/go/src/"
        && file
            .strip_prefix("/usr/lib/go-")
            .and_then(|rest| rest.split_once('/'))
            .is_some_and(|(_, rest)| rest.starts_with("src/"))
}

/// A Go function name of the standard library: `pkg.Func` or
/// `path/to/pkg.(*T).M` whose first path element has no dot (module paths
/// of other code start with a domain) and is not `main`. C, C++ (`::`)
/// and Rust names are not Go names.
fn is_go_std(function: &str) -> bool {
    if function.contains("::") || function.contains(' ') {
        return false;
    }
    // The package path ends at the first dot after its last slash.
    let after_slash = function.rfind('/').map_or(0, |i| i + 1);
    let Some(dot) = function[after_slash..].find('.') else {
        return false;
    };
    let package = &function[..after_slash + dot];
    let first = package.split('/').next().unwrap_or(package);
    !first.is_empty()
        && first != "main"
        && !first.contains('.')
        && first
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Moves the leading runtime frames after the rest, flagged `wrapper`, so
/// that frames[0] is the user's code. A stack that is runtime all along
/// (ld.so loading a library) is left as it is.
pub fn user_code_first(mut frames: Vec<Frame>) -> Vec<Frame> {
    let leading = frames.iter().take_while(|f| is_runtime(f)).count();
    if leading == 0 || leading == frames.len() {
        return frames;
    }
    let mut wrapper: Vec<Frame> = frames.drain(..leading).collect();
    for frame in &mut wrapper {
        frame.wrapper = true;
    }
    frames.extend(wrapper);
    frames
}
