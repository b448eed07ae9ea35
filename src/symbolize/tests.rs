//! The symbolizer against this test process itself (its own binary and
//! libc), and against files that are not what they claim to be.

use std::hint::black_box;

use std::path::PathBuf;

use super::*;

fn own_pid() -> Pid {
    std::process::id() as Pid
}

#[inline(never)]
fn marker_function() -> u64 {
    black_box(marker_function as *const () as u64)
}

fn no_search() -> DebugSearch<'static> {
    DebugSearch {
        object_path: "/nonexistent/object",
        root: None,
        debug_dir: PathBuf::from("/nonexistent/debug"),
        alt_file: None,
    }
}

/// libc's mapping in this process.
fn libc_mapping() -> CodeMapping {
    let open = libc::open as *const () as u64;
    read_code_mappings(own_pid())
        .into_iter()
        .find(|m| m.avma.contains(&open))
        .expect("libc is mapped")
}

#[test]
fn without_debug_files_libc_is_named_from_dynsym() {
    let mapping = libc_mapping();
    let bytes = std::fs::read(&mapping.path).unwrap();
    let libc = ObjectSymbols::parse(&bytes[..], &no_search()).expect("libc parses");
    assert!(!libc.has_dwarf() && libc.debug_file.is_none(), "{libc:?}");
    let open = libc::open as *const () as u64;
    let svma = libc
        .svma(open + 3 - mapping.avma.start + mapping.file_offset)
        .unwrap();
    let found = libc.lookup(svma);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].function.as_deref().unwrap().contains("open"),
        "{found:?}"
    );
    assert_eq!(found[0].function_offset, Some(3));
    assert_eq!(found[0].file, None);
}

#[test]
fn libc6_dbg_is_found_by_build_id() {
    let mapping = libc_mapping();
    let search = DebugSearch {
        debug_dir: PathBuf::from(object::DEBUG_DIR),
        ..no_search()
    };
    let bytes = std::fs::read(&mapping.path).unwrap();
    let libc = ObjectSymbols::parse(&bytes[..], &search).unwrap();
    let Some(debug_file) = &libc.debug_file else {
        eprintln!("skipped: no debug file for libc (apt-get install libc6-dbg)");
        return;
    };
    assert!(
        debug_file.starts_with("/usr/lib/debug/.build-id/"),
        "{debug_file:?}"
    );
    assert!(libc.has_dwarf());
}

#[test]
fn own_function_is_named_with_its_file() {
    let mut symbolizer = Symbolizer::new();
    let address = marker_function();
    let stack = Stack {
        addresses: vec![address],
        truncated: None,
        generation: 0,
    };
    let frames = symbolizer.frames(own_pid(), &stack);
    let last = frames.last().expect("one frame at least");
    let function = last.function.as_deref().unwrap_or_default();
    assert!(function.contains("marker_function"), "{frames:#?}");
    assert!(
        function.contains("symbolize::tests"),
        "demangled Rust path: {frames:#?}"
    );
    let file = last.file.as_deref().unwrap_or_default();
    assert!(
        file.starts_with('/') && file.ends_with("symbolize/tests.rs"),
        "{frames:#?}"
    );
    assert!(last.line.is_some());
    assert_eq!(
        last.module.as_deref(),
        std::fs::read_link("/proc/self/exe")
            .ok()
            .as_deref()
            .and_then(|p| p.to_str())
    );
}

#[test]
fn libc_wrapper_frames_move_after_the_user_frames() {
    let mut symbolizer = Symbolizer::new();
    // IP inside libc's open64, then a "return address" into this binary.
    let open = libc::open as *const () as u64;
    let stack = Stack {
        addresses: vec![open + 4, marker_function() + 8],
        truncated: None,
        generation: 0,
    };
    let frames = symbolizer.frames(own_pid(), &stack);
    assert!(!frames[0].wrapper, "{frames:#?}");
    assert!(
        frames[0]
            .function
            .as_deref()
            .unwrap_or("")
            .contains("marker_function")
    );
    let libc = frames.last().unwrap();
    assert!(libc.wrapper, "{frames:#?}");
    assert!(libc.module.as_deref().unwrap_or("").contains("libc.so"));
    // Named from DWARF (libc6-dbg) or from .dynsym.
    assert!(
        libc.function.as_deref().unwrap_or("").contains("open"),
        "{frames:#?}"
    );
}

/// 10,000 events from 10 distinct stacks: each object parsed once, each
/// distinct address looked up once.
#[test]
fn ten_thousand_events_parse_each_object_once() {
    let mut symbolizer = Symbolizer::new();
    let libc_functions = [
        libc::open as *const () as u64,
        libc::socket as *const () as u64,
        libc::close as *const () as u64,
        libc::pipe as *const () as u64,
        libc::dup as *const () as u64,
    ];
    let own = [
        marker_function as *const () as u64,
        own_function_is_named_with_its_file as *const () as u64,
    ];
    let stacks: Vec<Stack> = (0..10)
        .map(|i| Stack {
            // Distinct IPs (5 libc functions × 2 offsets), shared callers.
            addresses: vec![
                libc_functions[i % 5] + 1 + (i / 5) as u64,
                own[0] + 5,
                own[1] + 9,
            ],
            truncated: None,
            generation: 0,
        })
        .collect();
    let mut distinct: std::collections::HashSet<u64> = std::collections::HashSet::new();
    for stack in &stacks {
        for (depth, a) in stack.addresses.iter().enumerate() {
            distinct.insert(if depth == 0 { *a } else { a - 1 });
        }
    }
    for event in 0..10_000 {
        let frames = symbolizer.frames(own_pid(), &stacks[event % 10]);
        assert!(frames.len() >= 3);
    }
    assert_eq!(symbolizer.objects_parsed(), 2, "this binary and libc");
    assert_eq!(symbolizer.addresses_looked_up(), distinct.len());
    assert_eq!(distinct.len(), 12);
}

#[test]
fn corrupt_and_truncated_objects_degrade_without_panicking() {
    // Not ELF, a bare header, a truncated real object.
    assert!(ObjectSymbols::parse(&b"\x7fELF garbage"[..], &no_search()).is_none());
    assert!(ObjectSymbols::parse(&[0u8; 0][..], &no_search()).is_none());
    let own = std::fs::read("/proc/self/exe").unwrap();
    for len in [64, 200, 4096, own.len() / 3, own.len() / 2, own.len() - 1] {
        if let Some(parsed) = ObjectSymbols::parse(&own[..len], &no_search()) {
            let _ = parsed.lookup(marker_function());
        }
    }
    // Real headers and sections, DWARF overwritten with garbage.
    let mut scrambled = own.clone();
    let range = debug_info_range(&own).expect("test binary has .debug_info");
    let mut x = 0x1234_5678u32;
    for byte in &mut scrambled[range] {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *byte = x as u8;
    }
    let parsed = ObjectSymbols::parse(&scrambled[..], &no_search()).expect("headers intact");
    let found = parsed.lookup(marker_function_svma(&own));
    // The symbol table still names it, or at worst nothing does.
    if let Some(outer) = found.last()
        && outer.function_offset.is_some()
    {
        assert!(
            outer
                .function
                .as_deref()
                .unwrap()
                .contains("marker_function")
        );
    }
}

fn debug_info_range(elf: &[u8]) -> Option<std::ops::Range<usize>> {
    use ::object::{Object, ObjectSection};
    let file = ::object::File::parse(elf).ok()?;
    let (offset, size) = file.section_by_name(".debug_info")?.file_range()?;
    Some(offset as usize..(offset + size) as usize)
}

/// `marker_function`'s address in the file (SVMA), through its mapping.
fn marker_function_svma(own: &[u8]) -> u64 {
    let avma = marker_function();
    let mapping = read_code_mappings(own_pid())
        .into_iter()
        .find(|m| m.avma.contains(&avma))
        .unwrap();
    let parsed = ObjectSymbols::parse(own, &no_search()).unwrap();
    parsed
        .svma(avma - mapping.avma.start + mapping.file_offset)
        .unwrap()
}

#[test]
fn a_frame_without_an_object_keeps_its_address() {
    let mut symbolizer = Symbolizer::new();
    let stack = Stack {
        addresses: vec![0x10, 0xdead_0000_0000],
        truncated: None,
        generation: 0,
    };
    let frames = symbolizer.frames(own_pid(), &stack);
    assert_eq!(frames.len(), 2);
    assert!(
        frames
            .iter()
            .all(|f| f.function.is_none() && f.module.is_none())
    );
    assert_eq!(frames[0].address, "0x10");
}

#[test]
fn go_runtime_and_standard_library_frames_are_runtime_frames() {
    let go = |function: &str, file: &str| Frame {
        function: Some(function.into()),
        file: Some(file.into()),
        module: Some("/srv/leaky".into()),
        ..Frame::default()
    };
    let frames = vec![
        go(
            "runtime/internal/syscall.Syscall6",
            "/usr/lib/go-1.19/src/runtime/internal/syscall/asm_linux_amd64.s",
        ),
        go(
            "syscall.Socket",
            "/usr/lib/go-1.19/src/syscall/syscall_unix.go",
        ),
        go(
            "internal/poll.(*FD).Init",
            "/usr/lib/go-1.19/src/internal/poll/fd_unix.go",
        ),
        go("net.ListenUDP", "/usr/local/go/src/net/udpsock.go"),
        go("main.newMetrics", "/srv/leaky/main.go"),
        go(
            "github.com/acme/stats.Dial",
            "/root/go/pkg/mod/github.com/acme/stats/dial.go",
        ),
        go("main.main", "/srv/leaky/main.go"),
        go("runtime.main", "/usr/lib/go-1.19/src/runtime/proc.go"),
    ];
    let shown = user_code_first(frames);
    assert_eq!(shown[0].function.as_deref(), Some("main.newMetrics"));
    assert!(!shown[0].wrapper);
    let flagged: Vec<&str> = shown
        .iter()
        .filter(|f| f.wrapper)
        .filter_map(|f| f.function.as_deref())
        .collect();
    assert_eq!(
        flagged,
        [
            "runtime/internal/syscall.Syscall6",
            "syscall.Socket",
            "internal/poll.(*FD).Init",
            "net.ListenUDP"
        ]
    );
    // GCC's split-off parts of a C function are the user's.
    let cold = Frame {
        function: Some("open_config.cold".into()),
        file: Some("/srv/leak3.c".into()),
        ..Frame::default()
    };
    assert!(!is_runtime(&cold));
    // Names that are not Go's standard library.
    for name in [
        "main.f",
        "github.com/x/y.F",
        "std::fs::File::open",
        "open_config",
        "ns::f(int)",
    ] {
        assert!(!is_go_std(name), "{name}");
    }
    for name in ["os.OpenFile", "net/http.(*Server).Serve", "crypto/tls.Dial"] {
        assert!(is_go_std(name), "{name}");
    }
}

/// A Node.js stack as its perf map and the node binary name it: libuv
/// built into node, node's and V8's C++, V8's builtins, Node's own
/// JavaScript (`node:net`), then the user's functions.
fn node_stack(tier_address: &str) -> Vec<Frame> {
    let native = |function: &str, file: Option<&str>| Frame {
        function: Some(function.into()),
        file: file.map(str::to_string),
        module: Some("/usr/bin/node".into()),
        ..Frame::default()
    };
    let js = |address: &str, function: &str, file: &str, line: u32| Frame {
        address: address.into(),
        function: Some(function.into()),
        file: Some(file.into()),
        line: Some(line),
        module: Some("/tmp/perf-7.map".into()),
        jit: true,
        ..Frame::default()
    };
    vec![
        Frame {
            function: Some("__GI_socket".into()),
            module: Some("/usr/lib/x86_64-linux-gnu/libc.so.6".into()),
            ..Frame::default()
        },
        native("uv__socket", Some("/build/out/../deps/uv/src/unix/core.c")),
        native("new_socket", Some("/build/out/../deps/uv/src/unix/tcp.c")),
        native(
            "void node::TCPWrap::Bind<sockaddr_in6>(v8::FunctionCallbackInfo<v8::Value> const&)",
            None,
        ),
        native("v8::internal::Builtin_HandleApiCall(int)", None),
        native("Builtins_CEntry_Return1_ArgvOnStack_BuiltinExit", None),
        js("0x7f0000001000", "createServerHandle", "node:net", 1798),
        js("0x7f0000002000", "Server.listen", "node:net", 2006),
        js(tier_address, "statsdInit", "/srv/server.js", 31),
        native("Builtins_InterpreterEntryTrampoline", None),
        js("0x7f0000004000", "onLogin", "/srv/server.js", 38),
        js("0x7f0000005000", "emit", "node:events", 471),
        native("node::Start(int, char**)", None),
        native("_start", None),
    ]
}

#[test]
fn node_frames_put_the_users_javascript_first() {
    let shown = user_code_first(node_stack("0x7f0000003000"));
    assert_eq!(shown[0].function.as_deref(), Some("statsdInit"));
    assert_eq!(shown[0].line, Some(31));
    assert!(!shown[0].wrapper);
    let flagged = shown.iter().filter(|f| f.wrapper).count();
    assert_eq!(flagged, 8, "{shown:#?}");
    for name in [
        "Builtin:CallFunction",
        "BytecodeHandler:Ldar",
        "Stub:CEntry",
    ] {
        let frame = Frame {
            function: Some(name.into()),
            jit: true,
            ..Frame::default()
        };
        assert!(is_runtime(&frame), "{name}");
    }
}

#[test]
fn stacks_that_differ_inside_jit_code_have_one_key() {
    let interpreted = user_code_first(node_stack("0x7f0000003000"));
    let mut optimized = node_stack("0x7f0000009000");
    // Optimized code calls without the interpreter's trampoline.
    optimized.retain(|f| f.function.as_deref() != Some("Builtins_InterpreterEntryTrampoline"));
    let optimized = user_code_first(optimized);
    let key = jit_site_key(&interpreted);
    assert!(key.is_some());
    assert_eq!(jit_site_key(&optimized), key);
    // Another function, or another line, is another site.
    let mut other = node_stack("0x7f0000003000");
    other[8].line = Some(32);
    assert_ne!(jit_site_key(&user_code_first(other)), key);
    // Without JIT frames a stack's addresses are its identity.
    let c: Vec<Frame> = interpreted.into_iter().filter(|f| !f.jit).collect();
    assert_eq!(jit_site_key(&c), None);
}
